//! oxit against real Tor software, on both I/O backends.
//!
//! The client is Arti's tor-proto (0.47), the other relays are Debian's C
//! tor 0.4.9, the servers behind the exit are a local HTTP server and
//! dnsmasq; everything listens on 127.0.0.1 and is started and stopped by
//! the test. No directory authorities: hops are described from their keys.
//! Each scenario builds one small network and checks several things on it,
//! so the suite stays short.

use oxit_interop::client::{self, Handshake};
use oxit_interop::harness::{
    Dnsmasq, HttpServer, IoBackend, OxitOptions, OxitProcess, TorProcess, TorRole, body_for,
    sha256_hex,
};

/// Bound on every network step; generous for a loaded 2-core debug run.
/// A port oxit's exit policy rejects in these tests.
mod common;
use common::{STEP, step};

const REJECTED_PORT: u16 = 9;
/// Relay END reasons (tor-spec §6.3).
const END_EXITPOLICY: u8 = 4;
const END_TORPROTOCOL: u8 = 13;
const END_NOTDIRECTORY: u8 = 14;
/// oxit's debug log lines for an EXTEND2 carried over another worker's
/// channel, and for a channel opened for an EXTEND2.
const SPLICED: &str = "extending over another worker's channel";
const OPENED_FOR_EXTEND: &str = "opening a channel for EXTEND2";
/// Client channels tried until one lands on the other worker: each does
/// with probability 1/2.
const SPLICE_TRIES: usize = 24;

async fn get_checked(
    tunnel: &client::Tunnel,
    http: &HttpServer,
    n: usize,
    oxit: &OxitProcess,
    what: &str,
) {
    let port = http.addr().port();
    let body = step(
        what,
        oxit,
        client::http_get(tunnel, "127.0.0.1", port, &format!("/bytes/{n}")),
    )
    .await;
    assert_eq!(body.len(), n, "{what}: length");
    assert_eq!(
        sha256_hex(&body),
        sha256_hex(&body_for(n)),
        "{what}: sha256"
    );
}

/// client → C tor relay → oxit (exit): ntor and ntor-v3 circuits, a 20 MiB
/// download on each, 20 concurrent streams, RESOLVE through dnsmasq, and
/// END EXITPOLICY for a port the policy rejects.
async fn oxit_as_exit(backend: IoBackend) {
    let dns = Dnsmasq::start().expect("start dnsmasq");
    let http = HttpServer::start().expect("start HTTP server");
    let middle = std::thread::spawn(|| TorProcess::start(TorRole::Middle));
    let oxit = OxitProcess::start(&OxitOptions {
        backend,
        dns: Some(dns.addr()),
        rejected_port: Some(REJECTED_PORT),
        debug_log: false,
        extra_torrc: String::new(),
    })
    .expect("start oxit");
    let middle = middle
        .join()
        .expect("middle thread")
        .expect("start C tor middle");
    let m = middle.hop(Handshake::Ntor).expect("middle hop");

    let ntor = step(
        "build C relay → oxit (ntor)",
        &oxit,
        client::build_circuit(&[m.clone(), oxit.hop(Handshake::Ntor).unwrap()]),
    )
    .await;
    get_checked(&ntor, &http, 20 << 20, &oxit, "20 MiB through oxit (ntor)").await;

    let v3 = step(
        "build C relay → oxit (ntor-v3)",
        &oxit,
        client::build_circuit(&[m, oxit.hop(Handshake::NtorV3).unwrap()]),
    )
    .await;
    get_checked(&v3, &http, 20 << 20, &oxit, "20 MiB through oxit (ntor-v3)").await;

    let port = http.addr().port();
    let sizes: Vec<usize> = (0..20).map(|i| 50_000 + i * 7919).collect();
    let gets = sizes.iter().map(|&n| {
        let t = v3.clone();
        async move {
            (
                n,
                client::http_get(&t, "127.0.0.1", port, &format!("/bytes/{n}")).await,
            )
        }
    });
    let results = tokio::time::timeout(STEP, futures::future::join_all(gets))
        .await
        .expect("20 streams in time");
    for (n, body) in results {
        let body = body.unwrap_or_else(|e| panic!("stream of {n} bytes: {e}\n{}", oxit.log()));
        assert_eq!(
            sha256_hex(&body),
            sha256_hex(&body_for(n)),
            "{n}-byte stream"
        );
    }

    let ips = step("RESOLVE", &oxit, client::resolve(&ntor, Dnsmasq::NAME)).await;
    assert!(
        ips.contains(&Dnsmasq::V4.into()),
        "expected {} among {ips:?}",
        Dnsmasq::V4
    );

    let err = tokio::time::timeout(
        STEP,
        client::http_get(&ntor, "127.0.0.1", REJECTED_PORT, "/"),
    )
    .await
    .expect("an answer to BEGIN")
    .expect_err("a rejected port must be refused");
    assert_eq!(
        err.end_reason(),
        Some(END_EXITPOLICY),
        "END EXITPOLICY expected, got {err}"
    );
    // The circuit is still good after a refused stream.
    get_checked(&ntor, &http, 100_000, &oxit, "GET after a refused stream").await;
    assert!(
        oxit.stop().expect("stop oxit"),
        "oxit must exit 0 on SIGTERM"
    );
}

/// client → oxit → C tor exit: oxit extends with CREATE2 over a channel it
/// opens and authenticates as a relay (else the C exit would refuse BEGIN
/// with TORPROTOCOL); the download through the C exit is byte-exact. Then
/// circuits arriving on oxit's other worker reuse that one channel by
/// message, and carry data byte-exact too.
async fn oxit_extends_to_c_exit(backend: IoBackend) {
    let dns = Dnsmasq::start().expect("start dnsmasq");
    let http = HttpServer::start().expect("start HTTP server");
    let exit = std::thread::spawn({
        let dns = dns.addr();
        move || TorProcess::start(TorRole::Exit { dns })
    });
    let oxit = OxitProcess::start(&OxitOptions {
        backend,
        dns: Some(dns.addr()),
        rejected_port: None,
        debug_log: true,
        extra_torrc: String::new(),
    })
    .expect("start oxit");
    let exit = exit.join().expect("exit thread").expect("start C tor exit");
    let hops = [
        oxit.hop(Handshake::Ntor).unwrap(),
        exit.hop(Handshake::NtorV3).expect("exit hop"),
    ];
    let tunnel = step("build oxit → C exit", &oxit, client::build_circuit(&hops)).await;
    get_checked(
        &tunnel,
        &http,
        20 << 20,
        &oxit,
        "20 MiB through oxit and the C exit",
    )
    .await;

    // More clients, each on its own channel to oxit: the kernel spreads
    // them over oxit's two workers, and a circuit that arrives on the
    // worker without the channel to the C exit is extended over the other
    // worker's channel rather than a second one.
    // oxit as the middle of a circuit whose exit runs congestion control
    // and CGO (tor-proto asks the C exit for both, as a 0.4.9 client
    // does): the middle's tor1 layer over the exit's CGO cells, the
    // exit's SENDMEs and the client's back.
    let cgo_hops = [
        hops[0].clone(),
        hops[1]
            .clone()
            .with_handshake(Handshake::NtorV3Cc)
            .with_protocols(client::C_TOR_PROTOCOLS),
    ];
    let cgo = step(
        "build oxit → C exit (CC + CGO at the exit)",
        &oxit,
        client::build_circuit(&cgo_hops),
    )
    .await;
    get_checked(
        &cgo,
        &http,
        20 << 20,
        &oxit,
        "20 MiB through oxit to a C exit on CC + CGO",
    )
    .await;
    drop(cgo);

    let mut tunnels = vec![tunnel];
    for i in 0..SPLICE_TRIES {
        if oxit.log_count(SPLICED) > 0 {
            break;
        }
        let t = step(
            &format!("build oxit → C exit #{}", i + 2),
            &oxit,
            client::build_circuit(&hops),
        )
        .await;
        get_checked(&t, &http, 64 << 10, &oxit, "64 KiB on another circuit").await;
        tunnels.push(t);
    }
    assert!(
        oxit.log_count(SPLICED) > 0,
        "no circuit was extended over another worker's channel in {} tries\n--- oxit log ---\n{}",
        SPLICE_TRIES + 1,
        oxit.log()
    );
    // The spliced circuit and the first one share the channel; both carry
    // data byte-exact, at once.
    let spliced = tunnels.last().expect("at least one tunnel");
    let first = tunnels.first().expect("at least one tunnel");
    tokio::join!(
        get_checked(
            spliced,
            &http,
            8 << 20,
            &oxit,
            "8 MiB over a spliced circuit"
        ),
        get_checked(
            first,
            &http,
            4 << 20,
            &oxit,
            "4 MiB on the first circuit meanwhile"
        ),
    );
    assert_eq!(
        oxit.log_count(OPENED_FOR_EXTEND),
        1,
        "one channel to the C exit for all circuits\n--- oxit log ---\n{}",
        oxit.log()
    );
    drop(tunnels);
    assert!(
        oxit.stop().expect("stop oxit"),
        "oxit must exit 0 on SIGTERM"
    );
}

/// client → oxit as the only hop: BEGIN is refused with END TORPROTOCOL
/// (oxit would be a one-hop proxy) and the circuit stays usable: BEGIN_DIR
/// is answered (END NOTDIRECTORY: oxit serves no directory yet).
async fn one_hop_begin_refused(backend: IoBackend) {
    let http = HttpServer::start().expect("start HTTP server");
    let oxit = OxitProcess::start(&OxitOptions::new(backend)).expect("start oxit");
    for hs in [Handshake::Ntor, Handshake::Fast] {
        let tunnel = step(
            "one-hop circuit",
            &oxit,
            client::build_circuit(&[oxit.hop(hs).unwrap()]),
        )
        .await;
        let err = tokio::time::timeout(
            STEP,
            client::http_get(&tunnel, "127.0.0.1", http.addr().port(), "/bytes/10"),
        )
        .await
        .expect("an answer to BEGIN")
        .expect_err("a first-hop BEGIN must be refused");
        assert_eq!(
            err.end_reason(),
            Some(END_TORPROTOCOL),
            "{hs:?}: END TORPROTOCOL expected, got {err}"
        );
        let err = tokio::time::timeout(STEP, client::begin_dir_answer(&tunnel))
            .await
            .expect("an answer to BEGIN_DIR")
            .expect_err("oxit serves no directory yet");
        assert_eq!(
            err.end_reason(),
            Some(END_NOTDIRECTORY),
            "{hs:?}: END NOTDIRECTORY expected, got {err}\n--- oxit log ---\n{}",
            oxit.log()
        );
    }
    assert!(
        oxit.stop().expect("stop oxit"),
        "oxit must exit 0 on SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_relay_then_oxit_exit_io_uring() {
    oxit_as_exit(IoBackend::Uring).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_relay_then_oxit_exit_epoll() {
    oxit_as_exit(IoBackend::Epoll).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oxit_then_c_exit_io_uring() {
    oxit_extends_to_c_exit(IoBackend::Uring).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oxit_then_c_exit_epoll() {
    oxit_extends_to_c_exit(IoBackend::Epoll).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hop_begin_refused_io_uring() {
    one_hop_begin_refused(IoBackend::Uring).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hop_begin_refused_epoll() {
    one_hop_begin_refused(IoBackend::Epoll).await;
}
