//! A peer that stops reading (its receive window falls to zero) and then
//! ends its side of the link, against C tor 0.4.9 and oxit (both io
//! backends), in a network namespace with small TCP buffers so that the
//! relay's answers cannot all fit in the kernel.
//!
//! The client builds 3,000 CREATE_FAST circuits without reading a single
//! answer, then sends FIN. The relay must not keep the socket, and the
//! answers it could not deliver, for ever: C tor and oxit both close an OR
//! connection at EOF at once (connection.c:connection_reached_eof), and
//! drop what was queued for it. The relay's file descriptors come back,
//! and a quiet client is served meanwhile. (oxit used to give such output
//! the 30 s a closing socket may take to flush; and on io_uring a send
//! blocked on the zero window kept the socket open after that.)

use std::time::{Duration, Instant};

use oxit::proto::cell::CreateFast;
use oxit_interop::harness::open_fds;
use oxit_interop::harness::{
    IoBackend, OxitOptions, OxitProcess, TorProcess, TorRole, isolate_thread_network,
    set_thread_net_sysctl,
};
use oxit_interop::rawclient::RawClient;

const STEP: Duration = Duration::from_secs(10);
const CREATES: usize = 3000;
/// How long either relay may take, with slack for a shared machine.
const BOUND: Duration = Duration::from_secs(10);

/// Returns how long the relay took to let go of the connection.
fn zero_window_then_fin(
    addr: std::net::SocketAddr,
    pid: u32,
    who: &str,
    log: &dyn Fn() -> String,
) -> Duration {
    let mut warm = RawClient::connect(addr).expect("warm-up client");
    warm.create_fast(STEP).expect("warm-up circuit");
    drop(warm);
    std::thread::sleep(Duration::from_secs(1));
    let fds0 = open_fds(pid);
    let mut c = RawClient::connect(addr).expect("connect");
    for _ in 0..CREATES {
        let id = c.next_circ_id();
        let (_, x) = oxit::crypto::fast::client_create(&mut rand::rng());
        c.send_msg(id, &CreateFast::new(x))
            .expect("send CREATE_FAST");
    }
    c.shutdown_write().expect("FIN");
    let t = Instant::now();
    let mut quiet_done = false;
    loop {
        if !quiet_done && t.elapsed() > Duration::from_secs(2) {
            let mut q = RawClient::connect(addr).expect("quiet client connects");
            q.create_fast(STEP).expect("quiet client gets a circuit");
            drop(q);
            quiet_done = true;
        }
        if quiet_done && open_fds(pid) <= fds0 {
            break;
        }

        assert!(
            t.elapsed() < BOUND + Duration::from_secs(5),
            "{who}: still {} fds ({fds0} before) {} s after the FIN\n--- log ---\n{}",
            open_fds(pid),
            t.elapsed().as_secs(),
            log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(c);
    let took = t.elapsed();
    eprintln!("{who}: let go {:.1} s after the FIN", took.as_secs_f64());
    took
}

#[test]
fn zero_window_peer_at_close() {
    isolate_thread_network(8192).expect("a network namespace of our own");
    // Small receive windows: the client's zero window comes soon.
    set_thread_net_sysctl("ipv4/tcp_rmem", "4096 4096 8192").expect("tcp_rmem");
    let ctor = TorProcess::start(TorRole::Middle).expect("start C tor");
    let c_took = zero_window_then_fin(ctor.or_addr(), ctor.pid(), "C tor 0.4.9", &|| {
        ctor.info_log()
    });
    drop(ctor);
    for backend in [IoBackend::Uring, IoBackend::Epoll] {
        let oxit = OxitProcess::start(&OxitOptions::new(backend)).expect("start oxit");
        let took = zero_window_then_fin(
            oxit.or_addr(),
            oxit.pid(),
            &format!("oxit {backend:?}"),
            &|| oxit.log(),
        );
        assert!(took <= BOUND, "oxit {backend:?} held the socket {took:?}");
        assert!(
            oxit.stop().expect("stop oxit"),
            "oxit must exit 0 on SIGTERM"
        );
    }
    assert!(c_took <= BOUND, "C tor held the socket {c_took:?}");
}
