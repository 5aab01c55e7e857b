//! Baseline: the harness proven against C tor alone.
//!
//! client (Arti tor-proto 0.47) → C tor relay → C tor exit → local HTTP server
//! / dnsmasq, all on 127.0.0.1 and started by each test. When oxit can relay,
//! the same checks run with oxit in place of one of the C relays; these tests
//! show that any failure then is oxit's, not the harness'.

use std::time::Duration;

use oxit_interop::client::{self, Handshake};
use oxit_interop::harness::{Dnsmasq, HttpServer, TorProcess, TorRole, body_for, sha256_hex};

/// Bound on every network step; generous for a loaded 2-core debug run.
const STEP: Duration = Duration::from_secs(60);

/// A private two-relay network with its servers. Dropped → all killed.
struct Net {
    http: HttpServer,
    _dns: Dnsmasq,
    middle: TorProcess,
    exit: TorProcess,
}

fn start_net() -> Net {
    let dns = Dnsmasq::start().expect("start dnsmasq");
    let http = HttpServer::start().expect("start HTTP server");
    // Start both relays at once: each spends a second or two generating keys.
    let exit = std::thread::spawn({
        let dns = dns.addr();
        move || TorProcess::start(TorRole::Exit { dns })
    });
    let middle = TorProcess::start(TorRole::Middle).expect("start C tor middle");
    let exit = exit.join().expect("exit thread").expect("start C tor exit");
    Net {
        http,
        _dns: dns,
        middle,
        exit,
    }
}

async fn step<T>(what: &str, f: impl Future<Output = Result<T, client::Error>>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no answer within {STEP:?}"),
    }
}

async fn two_hops(net: &Net, exit_hs: Handshake) -> client::Tunnel {
    let hops = [
        net.middle.hop(Handshake::Ntor).expect("middle hop"),
        net.exit.hop(exit_hs).expect("exit hop"),
    ];
    step(
        &format!("build middle→exit ({exit_hs:?})"),
        client::build_circuit(&hops),
    )
    .await
}

async fn download_20mib(exit_hs: Handshake) {
    let net = start_net();
    let tunnel = two_hops(&net, exit_hs).await;
    let n = 20 << 20;
    let port = net.http.addr().port();
    let body = step(
        "20 MiB GET",
        client::http_get(&tunnel, "127.0.0.1", port, &format!("/bytes/{n}")),
    )
    .await;
    assert_eq!(body.len(), n);
    assert_eq!(sha256_hex(&body), sha256_hex(&body_for(n)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_20mib_exit_ntor() {
    download_20mib(Handshake::Ntor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_20mib_exit_ntor_v3_without_cc() {
    download_20mib(Handshake::NtorV3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_streams_are_byte_exact() {
    let net = start_net();
    let tunnel = two_hops(&net, Handshake::NtorV3).await;
    let port = net.http.addr().port();
    // Distinct sizes, so a stream swapped with another fails the check.
    let sizes: Vec<usize> = (0..20).map(|i| 100_000 + i * 7919).collect();
    let gets = sizes.iter().map(|&n| {
        let tunnel = tunnel.clone();
        async move {
            let body = client::http_get(&tunnel, "127.0.0.1", port, &format!("/bytes/{n}")).await;
            (n, body)
        }
    });
    let results = tokio::time::timeout(STEP, futures::future::join_all(gets))
        .await
        .expect("20 streams within the deadline");
    for (n, body) in results {
        let body = body.unwrap_or_else(|e| panic!("stream for {n} bytes: {e}"));
        assert_eq!(sha256_hex(&body), sha256_hex(&body_for(n)), "{n}-byte body");
    }
}

/// C tor refuses BEGIN on a circuit whose previous hop is a client channel
/// (connection_edge.c:connection_exit_begin_conn), yet the circuit stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_hop_begin_is_refused_with_torprotocol() {
    let net = start_net();
    // The exit: it would accept this BEGIN from a relay.
    let hop = net.exit.hop(Handshake::Ntor).expect("exit hop");
    let tunnel = step("one-hop circuit", client::build_circuit(&[hop])).await;
    let port = net.http.addr().port();
    let err = tokio::time::timeout(
        STEP,
        client::http_get(&tunnel, "127.0.0.1", port, "/bytes/10"),
    )
    .await
    .expect("an answer to BEGIN")
    .expect_err("a first-hop BEGIN must be refused");
    assert_eq!(
        err.end_reason(),
        Some(13),
        "END TORPROTOCOL expected, got {err}"
    );
    // The circuit survives the refusal: BEGIN_DIR still works (C tor
    // relays are directory caches by default).
    let reply = step(
        "BEGIN_DIR after refusal",
        client::begin_dir(&tunnel, "/tor/server/authority"),
    )
    .await;
    assert!(
        reply.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&reply[..reply.len().min(200)])
    );
}

/// The exit resolves through the test's dnsmasq on a non-53 port:
/// `nameserver 127.0.0.1:PORT` in ServerDNSResolvConfFile works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_through_exit_uses_test_dns() {
    let net = start_net();
    let tunnel = two_hops(&net, Handshake::Ntor).await;
    let ips = step("RESOLVE", client::resolve(&tunnel, Dnsmasq::NAME)).await;
    assert!(
        ips.contains(&Dnsmasq::V4.into()),
        "expected {} among {ips:?}",
        Dnsmasq::V4
    );
}

/// The C exit is the one-hop case too: CREATE_FAST works as a first hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_fast_then_extend() {
    let net = start_net();
    let hops = [
        net.middle.hop(Handshake::Fast).expect("middle hop"),
        net.exit.hop(Handshake::NtorV3).expect("exit hop"),
    ];
    let tunnel = step("CREATE_FAST + EXTEND2", client::build_circuit(&hops)).await;
    let port = net.http.addr().port();
    let body = step(
        "GET",
        client::http_get(&tunnel, "127.0.0.1", port, "/bytes/65536"),
    )
    .await;
    assert_eq!(body, body_for(65536));
}
