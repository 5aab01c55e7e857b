//! The relay's lifecycle under an operator's hands, against real peers
//! (client → C tor middle → oxit): a SIGHUP with a changed exit policy
//! applies it to new streams while a download that began before it
//! carries on byte-exact, and a SIGHUP with a broken torrc keeps the
//! running configuration (C tor would exit there).
//!
//! The old download is held open deterministically: the client reads
//! only its first MiB before the reload, so flow control keeps the rest
//! queued at the server until the client reads again.

use std::time::Duration;

use oxit_interop::client::{self, Tunnel};
use oxit_interop::harness::{
    ExitPath, IoBackend, OxitOptions, OxitProcess, TorProcess, TorRole, body_for, sha256_hex,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{STEP, circuit_refused, step, stream_refused, until_orport_closed};

const END_EXITPOLICY: u8 = 4;
const BODY: usize = 24 << 20;
const SIGHUP: i32 = 1;

/// A GET of [`BODY`] bytes read only up to its first MiB (headers
/// included): flow control then holds the rest at the server until the
/// client reads again, so the download stays open across what the test
/// does meanwhile.
async fn start_download(
    tunnel: &Tunnel,
    port: u16,
) -> (tor_proto::client::stream::DataStream, Vec<u8>) {
    let mut s = tokio::time::timeout(STEP, tunnel.begin_stream("127.0.0.1", port, None))
        .await
        .expect("BEGIN in time")
        .expect("BEGIN for the download");
    let req = format!("GET /bytes/{BODY} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send the request");
    s.flush().await.expect("send the request");
    let mut head = vec![0u8; 1 << 20];
    tokio::time::timeout(STEP, s.read_exact(&mut head))
        .await
        .expect("the first MiB in time")
        .expect("the first MiB");
    (s, head)
}

/// Read the rest of a [`start_download`] and check it byte for byte.
async fn finish_download(s: &mut tor_proto::client::stream::DataStream, head: Vec<u8>) {
    let mut reply = head;
    tokio::time::timeout(STEP, s.read_to_end(&mut reply))
        .await
        .expect("the download in time")
        .expect("the download completes");
    let body = client::parse_http_reply("/bytes/", reply).expect("an HTTP reply");
    assert_eq!(body.len(), BODY);
    assert_eq!(sha256_hex(&body), sha256_hex(&body_for(BODY)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_exit_policy_and_survives_a_broken_torrc() {
    let path =
        ExitPath::start(&OxitOptions::new(IoBackend::Uring)).expect("start C tor middle and oxit");
    let port = path.port();
    let hops = path.hops.clone();
    let oxit = path.oxit;
    let tunnel = step("build C relay → oxit", &oxit, client::build_circuit(&hops)).await;

    // A download under way, and the port reachable before the reload.
    let (mut old, head) = start_download(&tunnel, port).await;
    let small = step(
        "GET before the reload",
        &oxit,
        client::http_get(&tunnel, "127.0.0.1", port, "/bytes/1000"),
    )
    .await;
    assert_eq!(small, body_for(1000));

    // The new torrc rejects the HTTP server's port.
    let torrc = std::fs::read_to_string(oxit.torrc_path()).expect("read torrc");
    let rejecting = torrc.replacen(
        "ExitPolicy accept *:*\n",
        &format!("ExitPolicy reject *:{port}\nExitPolicy accept *:*\n"),
        1,
    );
    assert_ne!(rejecting, torrc, "the harness torrc has an accept-all line");
    std::fs::write(oxit.torrc_path(), &rejecting).expect("write torrc");
    oxit.signal(SIGHUP);
    assert!(
        oxit.wait_log("Configuration reloaded", STEP),
        "no reload logged\n{}",
        oxit.log()
    );
    stream_refused(
        "a new stream after the reload",
        &oxit,
        &tunnel,
        port,
        END_EXITPOLICY,
    )
    .await;

    // A broken torrc: oxit says why, keeps running and keeps the policy.
    std::fs::write(
        oxit.torrc_path(),
        format!("{rejecting}ExitPolicy accept *:{port} bogus\nNoSuchOption 1\n"),
    )
    .expect("write broken torrc");
    oxit.signal(SIGHUP);
    assert!(
        oxit.wait_log("Reloading the configuration failed", STEP),
        "no failed reload logged\n{}",
        oxit.log()
    );
    stream_refused(
        "a new stream after a broken reload",
        &oxit,
        &tunnel,
        port,
        END_EXITPOLICY,
    )
    .await;

    // The download that began before both reloads completes byte-exact.
    finish_download(&mut old, head).await;

    // Back to the original torrc: the port is open again on the same
    // circuit.
    std::fs::write(oxit.torrc_path(), &torrc).expect("restore torrc");
    oxit.signal(SIGHUP);
    let deadline = std::time::Instant::now() + STEP;
    while oxit.log_count("Configuration reloaded") < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", oxit.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = step(
        "GET after restoring the policy",
        &oxit,
        client::http_get(&tunnel, "127.0.0.1", port, "/bytes/5000"),
    )
    .await;
    assert_eq!(again, body_for(5000));
    assert!(
        oxit.stop().expect("stop oxit"),
        "oxit must exit 0 on SIGTERM"
    );
}

/// SIGINT with `ShutdownWaitLength`: the ORPort stops accepting, a new
/// circuit gets DESTROY and a new stream END HIBERNATING, the download
/// under way finishes byte-exact, and oxit exits 0 as soon as its last
/// circuit has closed, well before the wait is over. On epoll, so that
/// both drivers' listener shutdown is covered (the reload test runs on
/// io_uring).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_open_circuits_then_exits() {
    const WAIT_SECS: u64 = 60;
    const SIGINT: i32 = 2;
    const END_HIBERNATING: u8 = 9;
    let mut opts = OxitOptions::new(IoBackend::Epoll);
    opts.extra_torrc = format!("ShutdownWaitLength {WAIT_SECS} seconds\n");
    let path = ExitPath::start(&opts).expect("start C tor middle and oxit");
    let port = path.port();
    let hops = path.hops.clone();
    let mut oxit = path.oxit;
    let tunnel = step("build C relay → oxit", &oxit, client::build_circuit(&hops)).await;
    let (mut old, head) = start_download(&tunnel, port).await;

    let began = std::time::Instant::now();
    oxit.signal(SIGINT);
    assert!(
        oxit.wait_log("we have stopped accepting new connections", STEP),
        "no drain logged\n{}",
        oxit.log()
    );
    until_orport_closed("draining", &oxit).await;
    // The middle's channel to oxit is open: a new circuit over it is
    // refused, and so is a new stream on the open circuit.
    circuit_refused("draining", &hops).await;
    stream_refused("draining", &oxit, &tunnel, port, END_HIBERNATING).await;

    finish_download(&mut old, head).await;

    // The last circuit goes: oxit exits 0 without waiting out the rest.
    drop(old);
    drop(tunnel);
    let status = oxit
        .wait_exit(Duration::from_secs(WAIT_SECS / 2))
        .expect("wait for oxit")
        .unwrap_or_else(|| panic!("oxit still draining with no circuits\n{}", oxit.log()));
    assert!(status.success(), "exit status {status}\n{}", oxit.log());
    assert!(began.elapsed() < Duration::from_secs(WAIT_SECS));
    assert_eq!(
        oxit.log_count("Every circuit has closed"),
        1,
        "{}",
        oxit.log()
    );
}

/// `OutboundBindAddressExit` is the source address of exit connections,
/// over `OutboundBindAddress` (C: conn_get_outbound_address): the
/// destination sees 127.0.0.2, and reading the reply through Tor proves
/// the stream was relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_connections_come_from_outbound_bind_address_exit() {
    use std::io::{Read, Write};
    let dest = std::net::TcpListener::bind("127.0.0.1:0").expect("bind destination");
    let port = dest.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = dest.accept().expect("accept the exit's connection");
        s.set_read_timeout(Some(STEP)).unwrap();
        let mut req = [0u8; 1024];
        let _ = s.read(&mut req);
        let reply = format!("from {}", peer.ip());
        let _ = write!(
            s,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        peer
    });
    let middle = std::thread::spawn(|| TorProcess::start(TorRole::Middle));
    let mut opts = OxitOptions::new(IoBackend::Uring);
    opts.extra_torrc = "OutboundBindAddress 127.0.0.3\nOutboundBindAddressExit 127.0.0.2\n".into();
    let oxit = OxitProcess::start(&opts).expect("start oxit");
    let middle = middle
        .join()
        .expect("middle thread")
        .expect("start C tor middle");
    let hops = [
        middle.hop(client::Handshake::Ntor).expect("middle hop"),
        oxit.hop(client::Handshake::NtorV3).unwrap(),
    ];
    let tunnel = step("build C relay → oxit", &oxit, client::build_circuit(&hops)).await;
    let body = step(
        "GET through the exit",
        &oxit,
        client::http_get(&tunnel, "127.0.0.1", port, "/"),
    )
    .await;
    let peer = server.join().expect("destination thread");
    assert_eq!(peer.ip().to_string(), "127.0.0.2");
    assert_eq!(body, b"from 127.0.0.2");
    assert!(
        oxit.stop().expect("stop oxit"),
        "oxit must exit 0 on SIGTERM"
    );
}
