//! C tor's DoS mitigations at oxit, attacked over real sockets on both io
//! backends: the concurrent-connection limit (DoSConnection*) and the
//! circuit-creation limit (DoSCircuitCreation*). oxit runs two workers, so
//! an address's connections land on both and its counts are kept by one
//! of them (proto::dos): the limits hold across cores.
//!
//! Also without any DoS option: the bound on unfinished handshakes per
//! address (200 silent connections from one address), and the onion
//! queue's per-turn handshake budget (a CREATE2 storm beside a quiet link
//! of the same core, whose round trips stay short).
//!
//! Attackers connect from 127.0.0.1, 127.0.0.3 and 127.0.0.4, a quiet
//! client from 127.0.0.2: it must be served throughout.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oxit::crypto::ntor;
use oxit::proto::cell::{ChanCmd, Create2, CreateFast, HandshakeType};
use oxit::proto::relay_msg::RelayCmd;
use oxit_interop::client::Handshake;
use oxit_interop::harness::{IoBackend, OxitOptions, OxitProcess};
use oxit_interop::harness::{open_fds, rss_kib};
use oxit_interop::rawclient::{Circ, CircEvent, RawClient, tcp_connect};

const STEP: Duration = Duration::from_secs(10);
/// Long enough for an address's owner to send its verdict to the other
/// worker (one loop turn each).
const SETTLE: Duration = Duration::from_millis(300);
const MAX_CONNS: usize = 6;
const CC_BURST: usize = 20;
const RESOURCELIMIT: u8 = 5;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A quiet client elsewhere builds a circuit.
fn quiet_client_is_served(relay: SocketAddr, when: &str) {
    let mut c = RawClient::connect_from(relay, Some(ip("127.0.0.2")))
        .unwrap_or_else(|e| panic!("{when}: the quiet client cannot connect: {e}"));
    c.create_fast(STEP)
        .unwrap_or_else(|e| panic!("{when}: the quiet client gets no circuit: {e}"));
}

/// Whether the relay closed `s` without a byte (refused at accept).
fn closed_at_once(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0))
        || matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

/// The tests of this file run one at a time: each loads the machine's two
/// cores, and the storm measures latency.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn dos(backend: IoBackend) {
    let _one_at_a_time = serial();
    let oxit = OxitProcess::start(&OxitOptions {
        // A test network allows a heartbeat every second.
        extra_torrc: format!(
            "TestingTorNetwork 1\n\
             HeartbeatPeriod 1 second\n\
             DoSConnectionEnabled 1\n\
             DoSConnectionMaxConcurrentCount {MAX_CONNS}\n\
             DoSConnectionConnectBurst 1000\n\
             DoSCircuitCreationEnabled 1\n\
             DoSCircuitCreationMinConnections 1\n\
             DoSCircuitCreationBurst {CC_BURST}\n\
             DoSCircuitCreationRate 1\n"
        ),
        ..OxitOptions::new(backend)
    })
    .expect("start oxit");
    let relay = oxit.or_addr();
    quiet_client_is_served(relay, "at start");

    // Connections: MAX_CONNS + 1 open ones from one address (C refuses
    // only when more than the maximum exist), then the next is closed as
    // it is accepted, before TLS.
    let mut held: Vec<TcpStream> = (0..=MAX_CONNS)
        .map(|i| {
            tcp_connect(relay, Some(ip("127.0.0.1")), STEP)
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    std::thread::sleep(SETTLE);
    let mut refused = tcp_connect(relay, Some(ip("127.0.0.1")), STEP).expect("TCP connect");
    assert!(
        closed_at_once(&mut refused),
        "connection {} from one address was not refused\n--- oxit log ---\n{}",
        MAX_CONNS + 2,
        oxit.log()
    );
    quiet_client_is_served(relay, "during the connection flood");
    // Two close: the address is below the limit again.
    held.truncate(MAX_CONNS - 1);
    std::thread::sleep(SETTLE);
    let mut again = RawClient::connect_from(relay, Some(ip("127.0.0.1")))
        .expect("below the limit, a connection is served again");
    again.create_fast(STEP).expect("and gets a circuit");
    drop(again);
    drop(held);

    // Circuit creation: a client flooding CREATE_FAST on one link. Its
    // address's bucket (burst CC_BURST, 1/s) runs dry and its owner marks
    // it; later CREATEs get DESTROY RESOURCELIMIT while the link stays up.
    let mut flood =
        RawClient::connect_from(relay, Some(ip("127.0.0.3"))).expect("flooder connects");
    let ids: Vec<u32> = (0..2 * CC_BURST).map(|_| flood.next_circ_id()).collect();
    for &id in &ids {
        let (_, x) = oxit::crypto::fast::client_create(&mut rand::rng());
        flood
            .send_msg(id, &CreateFast::new(x))
            .expect("send CREATE_FAST");
    }
    let mut created = 0;
    for _ in &ids {
        let c = flood
            .recv_cell(STEP)
            .expect("read")
            .expect("an answer to every CREATE_FAST");
        if c.cmd == ChanCmd::CREATED_FAST {
            created += 1;
        }
    }
    // At least the burst less one, as C; the cells of one read are all
    // handled before the owner's verdict comes back, so a burst that
    // arrives at once may all be served.
    assert!(
        created >= CC_BURST - 1,
        "{created} of {} CREATE_FAST served",
        2 * CC_BURST
    );
    std::thread::sleep(SETTLE);
    let started = Instant::now();
    let id = flood.next_circ_id();
    let (_, x) = oxit::crypto::fast::client_create(&mut rand::rng());
    flood
        .send_msg(id, &CreateFast::new(x))
        .expect("send CREATE_FAST");
    let c = flood.recv_cell(STEP).expect("read").expect("an answer");
    assert_eq!(
        (c.circ_id, c.cmd, c.body.first().copied()),
        (id, ChanCmd::DESTROY, Some(RESOURCELIMIT)),
        "a marked address's CREATE gets DESTROY RESOURCELIMIT\n--- oxit log ---\n{}",
        oxit.log()
    );
    assert!(started.elapsed() < STEP);
    quiet_client_is_served(relay, "during the CREATE flood");
    // C's heartbeat line counts what every worker refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    let counted = |log: &str, what: &str| -> u64 {
        log.lines()
            .rev()
            .find(|l| l.contains("Heartbeat: DoS mitigation since startup:"))
            .and_then(|l| {
                let at = l.find(what)?;
                l[..at]
                    .split([' ', ':'])
                    .rev()
                    .find(|w| !w.is_empty())?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    loop {
        let log = oxit.log();
        if counted(&log, " same address concurrent connections rejected") >= 1
            && counted(&log, " circuits rejected") >= 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat counting the refusals\n--- oxit log ---\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // And, before it, C's handshake line.
    let log = oxit.log();
    assert!(
        log.lines().any(|l| l
            .contains("[notice] Circuit handshake stats since last time: 0/0 TAP, ")
            && l.ends_with(" NTor (v3).")),
        "no handshake heartbeat line\n--- oxit log ---\n{log}"
    );
    // And first, C's status line, counting the flood's connections.
    let full = std::fs::read_to_string(oxit.log_path()).unwrap_or_default();
    let status = full
        .lines()
        .rev()
        .find(|l| l.contains("[notice] Heartbeat: Tor's uptime is "))
        .unwrap_or_else(|| panic!("no heartbeat status line\n--- oxit log ---\n{log}"));
    let received: u64 = status
        .split("I've received ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no received count in {status:?}"));
    assert!(received > 0, "{status}");
    assert!(status.contains(" circuits open. I've sent "), "{status}");
    assert!(
        oxit.stop().expect("stop oxit"),
        "oxit must exit 0 on SIGTERM"
    );
}

/// 200 connections from one address that never start TLS: oxit keeps at
/// most 32 unfinished handshakes per address on each of its 2 workers and
/// closes the rest as it accepts them.
fn silent_connections(backend: IoBackend) {
    let _one_at_a_time = serial();
    let oxit = OxitProcess::start(&OxitOptions::new(backend)).expect("start oxit");
    let relay = oxit.or_addr();
    let mut socks: Vec<TcpStream> = (0..200)
        .map(|i| {
            tcp_connect(relay, Some(ip("127.0.0.4")), STEP)
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    std::thread::sleep(SETTLE);
    let mut open = 0;
    for s in &mut socks {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            _ => {}
        }
    }
    assert!(
        (1..=64).contains(&open),
        "{open} of 200 silent connections from one address held open\n--- oxit log ---\n{}",
        oxit.log()
    );
    quiet_client_is_served(relay, "with 200 silent connections from another address");
    drop(socks);
    assert!(
        oxit.stop().expect("stop oxit"),
        "oxit must exit 0 on SIGTERM"
    );
}

/// Round trips of BEGIN_DIR → answer on `circ`, in milliseconds, sorted.
fn round_trips(c: &mut RawClient, circ: &mut Circ, n: u16, first_stream: u16) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n)
        .map(|i| {
            let stream = first_stream + i;
            let t = Instant::now();
            c.send_relay(circ, 0, false, RelayCmd::BEGIN_DIR, stream, &[])
                .expect("send BEGIN_DIR");
            match c.recv_relay(circ, STEP) {
                Ok(Some(CircEvent::Relay { stream: s, .. })) if s == stream => {}
                other => panic!("BEGIN_DIR {stream} answered {other:?}"),
            }
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A CREATE2 (ntor) storm from four links on a one-worker relay, beside a
/// quiet link on that worker: the quiet link's round trips stay within the
/// stated bound, since a turn spends at most 2 ms on handshakes and the
/// rest wait in the onion queue; the storm is still served.
fn create_storm(backend: IoBackend) {
    let _one_at_a_time = serial();
    let oxit = OxitProcess::start(&OxitOptions {
        extra_torrc: "NumCPUs 1\n".into(),
        ..OxitOptions::new(backend)
    })
    .expect("start oxit");
    let relay = oxit.or_addr();
    let hop = oxit.hop(Handshake::Ntor).expect("oxit's keys");
    let mut quiet = RawClient::connect_from(relay, Some(ip("127.0.0.2"))).expect("quiet client");
    let mut circ = quiet.create_fast(STEP).expect("quiet circuit");
    let calm = round_trips(&mut quiet, &mut circ, 50, 1);

    // One CREATE2 body serves every flood cell: the relay does the whole
    // ntor handshake (two X25519 multiplications) for each.
    let (_, hdata) = ntor::client_create(&mut rand::rng(), &hop.rsa_id, &hop.ntor_key);
    let create = Create2::new(HandshakeType::NTOR, hdata.to_vec()).expect("CREATE2");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = ["127.0.0.1", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
        .into_iter()
        .map(|from| {
            let (stop, answered, create) = (stop.clone(), answered.clone(), create.clone());
            std::thread::spawn(move || {
                let mut f = RawClient::connect_from(relay, Some(ip(from))).expect("flooder");
                while !stop.load(Ordering::Relaxed) {
                    // A burst, then its answers (so the flood is not
                    // throttled by our own receive buffer).
                    for _ in 0..STORM_BURST {
                        let id = f.next_circ_id();
                        f.send_msg(id, &create).expect("send CREATE2");
                    }
                    for _ in 0..STORM_BURST {
                        match f.recv_cell(STEP) {
                            Ok(Some(_)) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            other => panic!("flooder {from}: {other:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let stormy = round_trips(&mut quiet, &mut circ, 200, 100);
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().expect("flooder thread");
    }
    let served = answered.load(Ordering::Relaxed);
    let (p50, p99, max) = (pct(&stormy, 0.5), pct(&stormy, 0.99), pct(&stormy, 1.0));
    eprintln!(
        "{backend:?}: quiet link round trip: calm p50 {:.2} ms p99 {:.2} ms; \
         storm p50 {p50:.2} ms p99 {p99:.2} ms max {max:.2} ms; {served} CREATE2 answered",
        pct(&calm, 0.5),
        pct(&calm, 0.99)
    );
    assert!(served >= 4 * STORM_BURST as u64, "the storm was not served");
    assert!(
        p99 < STORM_P99_BOUND_MS,
        "a CREATE2 storm raised the quiet link's p99 round trip to {p99:.1} ms \
         (bound {STORM_P99_BOUND_MS} ms)\n--- oxit log ---\n{}",
        oxit.log()
    );
    assert!(
        oxit.stop().expect("stop oxit"),
        "oxit must exit 0 on SIGTERM"
    );
}

/// CREATE2 cells each flooder sends before reading the answers.
const STORM_BURST: usize = 1500;
/// The bound on the quiet link's p99 round trip during the storm. The
/// relay's own share is small: a turn spends at most 2 ms (and one
/// handshake) on creates, so a request waits at most about two turns.
/// The rest is this shared 2-core machine, where the one worker competes
/// with the four flooders' TLS (measured: p50 ≈ 5 ms, p99 ≈ 15 ms). With
/// no budget, a turn ran every CREATE2 that had arrived: p50 1.2 s, p99
/// 1.7 s in the same test.
const STORM_P99_BOUND_MS: f64 = 50.0;

/// CREATE_FAST cells on one link, answered in batches.
const FAST_FLOOD: usize = 100_000;
const FAST_BATCH: usize = 2_000;

/// 100,000 CREATE_FAST on one link (no DoS option): every one is answered
/// with CREATED_FAST, by C tor as by oxit; a quiet client is served during
/// the flood; once the link closes, the circuits go, the file descriptors
/// come back, and (oxit only) so does the memory, within 64 MiB.
fn create_fast_flood(addr: SocketAddr, pid: u32, who: &str, memory_back: bool) -> String {
    // The baseline of a relay that has served a client and settled.
    quiet_client_is_served(addr, "before the flood");
    std::thread::sleep(Duration::from_secs(1));
    let (rss0, fds0) = (rss_kib(pid), open_fds(pid));
    let started = Instant::now();
    let mut f = RawClient::connect_from(addr, Some(ip("127.0.0.6"))).expect("flooder connects");
    let mut created = 0;
    for batch in 0..FAST_FLOOD / FAST_BATCH {
        for _ in 0..FAST_BATCH {
            let id = f.next_circ_id();
            let (_, x) = oxit::crypto::fast::client_create(&mut rand::rng());
            f.send_msg(id, &CreateFast::new(x))
                .expect("send CREATE_FAST");
        }
        for _ in 0..FAST_BATCH {
            let c = f
                .recv_cell(STEP)
                .expect("read")
                .unwrap_or_else(|| panic!("{who}: no answer in batch {batch}"));
            if c.cmd == ChanCmd::CREATED_FAST {
                created += 1;
            }
        }
        if batch == FAST_FLOOD / FAST_BATCH / 2 {
            quiet_client_is_served(addr, "during 100,000 CREATE_FAST");
        }
    }
    let took = started.elapsed();
    let rss_peak = rss_kib(pid);
    drop(f);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut rss_after = rss_kib(pid);
    while Instant::now() < deadline && (open_fds(pid) > fds0 || rss_after > rss0 + 65536) {
        std::thread::sleep(Duration::from_millis(200));
        rss_after = rss_kib(pid);
    }
    assert_eq!(created, FAST_FLOOD, "{who}: every CREATE_FAST is answered");
    // oxit shrinks its tables and hands freed pages back every 10 s; C
    // tor's allocator keeps them (measured: 230 MiB before and after).
    assert!(
        !memory_back || rss_after <= rss0 + 65536,
        "{who}: RSS {} MiB after the flood, {} MiB before",
        rss_after / 1024,
        rss0 / 1024
    );
    assert!(
        open_fds(pid) <= fds0,
        "{who}: {} file descriptors, {fds0} before",
        open_fds(pid)
    );
    let line = format!(
        "{who}: {created} CREATED_FAST in {:.1} s; RSS {} MiB before, {} MiB with 100,000 circuits, {} MiB after the link closed",
        took.as_secs_f64(),
        rss0 / 1024,
        rss_peak / 1024,
        rss_after / 1024
    );
    eprintln!("{line}");
    line
}

#[test]
fn create_fast_flood_c_tor_and_oxit() {
    let _one_at_a_time = serial();
    let ctor = oxit_interop::harness::TorProcess::start(oxit_interop::harness::TorRole::Middle)
        .expect("start C tor");
    create_fast_flood(ctor.or_addr(), ctor.pid(), "C tor 0.4.9", false);
    drop(ctor);
    for backend in [IoBackend::Uring, IoBackend::Epoll] {
        let oxit = OxitProcess::start(&OxitOptions::new(backend)).expect("start oxit");
        create_fast_flood(
            oxit.or_addr(),
            oxit.pid(),
            &format!("oxit {backend:?}"),
            true,
        );
        assert!(
            oxit.stop().expect("stop oxit"),
            "oxit must exit 0 on SIGTERM"
        );
    }
}

#[test]
fn create_storm_io_uring() {
    create_storm(IoBackend::Uring);
}

#[test]
fn create_storm_epoll() {
    create_storm(IoBackend::Epoll);
}

#[test]
fn silent_connections_io_uring() {
    silent_connections(IoBackend::Uring);
}

#[test]
fn silent_connections_epoll() {
    silent_connections(IoBackend::Epoll);
}

#[test]
fn dos_limits_io_uring() {
    dos(IoBackend::Uring);
}

#[test]
fn dos_limits_epoll() {
    dos(IoBackend::Epoll);
}
