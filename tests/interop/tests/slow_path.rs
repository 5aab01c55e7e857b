//! Congestion control where it matters: a path with latency.
//!
//! Every link of the circuit goes through a delay line (latency added in
//! user space: the CI kernels have no `netem`, see
//! `harness::delay`): client → line → C tor middle → line → exit, where
//! the exit is oxit or a C tor exit, each behind its own line. The HTTP
//! server sits behind the exits and tor-proto (Arti's, pinned) is the
//! client. One circuit's download through oxit with congestion control
//! (and CGO, as a 0.4.9 client asks an exit advertising Relay=5-6) must
//! take at most half as long as the same download with fixed windows, and
//! no longer than through the C tor exit on the same path with the same
//! client (within the run-to-run noise of a shared machine).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use oxit_interop::client::{self, Handshake, HopSpec};
use oxit_interop::harness::{
    DelayLine, Dnsmasq, HttpServer, IoBackend, OxitOptions, OxitProcess, TorProcess, TorRole,
    body_for, free_tcp_port, metrics, sha256_hex,
};

/// One-way delay of each link: a circuit's round trip (two links each
/// way) is about 400 ms, so fixed windows (500 cells a stream) hold a
/// download near 0.5 MB/s while congestion control may open its window
/// well past that. Shorter delays do not show it here: the tor-proto
/// client tops out near 9 MB/s on this kind of machine, and bursts that
/// queue at that rate end Vegas's slow start early whatever the exit.
const DELAY_MS: u64 = 100;
/// The download: long enough for slow start (about 2.5 s at this round
/// trip) to be a small part of it.
const BYTES: usize = 8 << 20;
const STEP: Duration = Duration::from_secs(120);
/// Run-to-run noise allowed when comparing two congestion-controlled
/// downloads on the same path.
const NOISE: f64 = 1.15;

/// Build `hops`, download BYTES, check them; the download's duration.
async fn timed_download(
    what: &str,
    hops: &[HopSpec],
    http: &HttpServer,
    oxit: &OxitProcess,
) -> Duration {
    let t = tokio::time::timeout(STEP, client::build_circuit(hops))
        .await
        .unwrap_or_else(|_| panic!("{what}: circuit not built in time"))
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", oxit.log()));
    let port = http.addr().port();
    let t0 = Instant::now();
    let body = tokio::time::timeout(
        STEP,
        client::http_get(&t, "127.0.0.1", port, &format!("/bytes/{BYTES}")),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: download not done in time"))
    .unwrap_or_else(|e| panic!("{what}: {e}\n{}", oxit.log()));
    let took = t0.elapsed();
    assert_eq!(body.len(), BYTES, "{what}: length");
    assert_eq!(
        sha256_hex(&body),
        sha256_hex(&body_for(BYTES)),
        "{what}: sha256"
    );
    eprintln!(
        "[{DELAY_MS} ms per link] {what}: {:.2} s ({:.2} MB/s)",
        took.as_secs_f64(),
        BYTES as f64 / took.as_secs_f64() / 1e6
    );
    took
}

fn cc_on_a_slow_path(backend: IoBackend) {
    let delay = Duration::from_millis(DELAY_MS);
    let dns = Dnsmasq::start().expect("start dnsmasq");
    let http = HttpServer::start().expect("start HTTP server");
    let middle = TorProcess::start(TorRole::Middle).expect("start C tor middle");
    let cexit = TorProcess::start(TorRole::Exit { dns: dns.addr() }).expect("start C tor exit");
    let metrics_port = free_tcp_port().expect("a free port");
    let oxit = OxitProcess::start(&OxitOptions {
        dns: Some(dns.addr()),
        debug_log: true,
        extra_torrc: metrics::torrc_lines(metrics_port),
        ..OxitOptions::new(backend)
    })
    .expect("start oxit");
    let line = |to| DelayLine::start(to, delay).expect("start a delay line");
    let (to_middle, to_oxit, to_cexit) = (
        line(middle.or_addr()),
        line(oxit.or_addr()),
        line(cexit.or_addr()),
    );
    let mut m = middle.hop(Handshake::Ntor).expect("middle hop");
    m.addr = to_middle.addr();
    let mut oxit_fixed = oxit.hop(Handshake::NtorV3).expect("oxit hop");
    oxit_fixed.addr = to_oxit.addr();
    let oxit_cc = oxit_fixed
        .clone()
        .with_handshake(Handshake::NtorV3Cc)
        .with_protocols(oxit::dir::descriptor::PROTOCOLS);
    let mut c_cc = cexit
        .hop(Handshake::NtorV3Cc)
        .expect("C exit hop")
        .with_protocols(client::C_TOR_PROTOCOLS);
    c_cc.addr = to_cexit.addr();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (fixed, cc, c) = rt.block_on(async {
        let fixed = timed_download(
            "oxit, fixed windows",
            &[m.clone(), oxit_fixed],
            &http,
            &oxit,
        )
        .await;
        // Best of two for the congestion-controlled downloads, which are
        // short enough for a noisy neighbour to matter.
        let mut cc = Duration::MAX;
        let mut c = Duration::MAX;
        for _ in 0..2 {
            let t = timed_download(
                "oxit, CC + CGO",
                &[m.clone(), oxit_cc.clone()],
                &http,
                &oxit,
            )
            .await;
            cc = cc.min(t);
            let t = timed_download(
                "C tor exit, CC + CGO",
                &[m.clone(), c_cc.clone()],
                &http,
                &oxit,
            )
            .await;
            c = c.min(t);
        }
        (fixed, cc, c)
    });
    let cgo = oxit
        .log()
        .lines()
        .filter(|l| l.contains("congestion control negotiated") && l.contains("crypto=CGO"))
        .count();
    let xoffs = oxit.log().matches("XOFF from the client").count();
    for l in oxit
        .log()
        .lines()
        .filter(|l| l.contains("leaves slow start"))
    {
        eprintln!("oxit: {l}");
    }
    assert!(
        cgo >= 2,
        "oxit negotiated CC + CGO on {cgo} circuits:\n{}",
        oxit.log()
    );
    // The MetricsPort's congestion-control families (C tor's names) saw
    // those circuits: created, slow start left with a window.
    let page = metrics::scrape(SocketAddr::from(([127, 0, 0, 1], metrics_port)))
        .expect("scrape the MetricsPort");
    let cc_metric = |kind: &str, state: &str, action: &str| {
        metrics::sample(
            &page,
            &format!("tor_relay_congestion_control{kind}{{state=\"{state}\",action=\"{action}\"}}"),
        )
        .unwrap_or_else(|| panic!("no {state}/{action}:\n{page}"))
    };
    let created = cc_metric("_total", "cc_circuits", "circs_created");
    let exited = cc_metric("_total", "cc_circuits", "circs_exited_ss");
    let ss_cwnd = cc_metric("", "slow_start_exit", "cwnd");
    eprintln!(
        "[{backend:?}] MetricsPort: {created} CC circuits, {exited} slow-start exits at cwnd {ss_cwnd}"
    );
    assert!(created >= cgo as f64, "{page}");
    assert!(exited >= 1.0 && ss_cwnd > 0.0, "{page}");
    eprintln!(
        "[{DELAY_MS} ms per link, {backend:?}] {} MiB: fixed windows {:.2} s, CC {:.2} s ({:.1}x), C tor exit with CC {:.2} s; the client sent oxit {xoffs} XOFF",
        BYTES >> 20,
        fixed.as_secs_f64(),
        cc.as_secs_f64(),
        fixed.as_secs_f64() / cc.as_secs_f64(),
        c.as_secs_f64()
    );
    assert!(
        cc * 2 <= fixed,
        "with CC {cc:?}, without {fixed:?}: less than twice as fast"
    );
    assert!(
        cc.as_secs_f64() <= c.as_secs_f64() * NOISE,
        "through oxit {cc:?}, through the C tor exit {c:?}"
    );
    assert!(
        oxit.stop().expect("stop oxit"),
        "oxit must exit 0 on SIGTERM"
    );
}

#[test]
fn cc_on_a_slow_path_io_uring() {
    cc_on_a_slow_path(IoBackend::Uring);
}

#[test]
fn cc_on_a_slow_path_epoll() {
    cc_on_a_slow_path(IoBackend::Epoll);
}
