//! What several interop test files share. These helpers panic, as tests
//! do, so they live here and not in the harness library (which denies
//! panics). Not every test file uses every one of them.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use oxit_interop::client;
use oxit_interop::harness::OxitProcess;

/// How long one step of a test may take.
pub const STEP: Duration = Duration::from_secs(90);

/// Await one step of a test against `oxit`: its value, or a panic that
/// shows oxit's log.
pub async fn step<T>(
    what: &str,
    oxit: &OxitProcess,
    f: impl Future<Output = Result<T, client::Error>>,
) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: {e}\n--- oxit log ---\n{}", oxit.log()),
        Err(_) => panic!(
            "{what}: no answer within {STEP:?}\n--- oxit log ---\n{}",
            oxit.log()
        ),
    }
}

/// A new stream on `tunnel` to the HTTP server's `port` is answered with
/// END `reason`.
pub async fn stream_refused(
    what: &str,
    oxit: &OxitProcess,
    tunnel: &client::Tunnel,
    port: u16,
    reason: u8,
) {
    let got = tokio::time::timeout(
        STEP,
        client::http_get(tunnel, "127.0.0.1", port, "/bytes/10"),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: no answer to BEGIN\n{}", oxit.log()));
    let Err(err) = got else {
        panic!("{what}: the stream must be refused\n{}", oxit.log());
    };
    assert_eq!(
        err.end_reason(),
        Some(reason),
        "{what}: END {reason} expected, got {err}\n{}",
        oxit.log()
    );
}

/// A new circuit over `hops` fails (in time).
pub async fn circuit_refused(what: &str, hops: &[client::HopSpec]) {
    let got = tokio::time::timeout(STEP, client::build_circuit(hops))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer to the new circuit"));
    assert!(got.is_err(), "{what}: a new circuit must fail");
}

/// Wait (10 s at most) until oxit's ORPort refuses connections: every
/// worker closes its listener on its next turn.
pub async fn until_orport_closed(what: &str, oxit: &OxitProcess) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&oxit.or_addr(), Duration::from_secs(1)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the ORPort still accepts\n{}",
            oxit.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
