//! Reading a MetricsPort (oxit's or C tor's) from a test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET /metrics` on `addr`: the page's body, or an error when the
/// answer is not a 200.
pub fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let timeout = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200 ") => Ok(body.to_owned()),
        _ => Err(std::io::Error::other(format!(
            "MetricsPort {addr} answered {text:?}"
        ))),
    }
}

/// The value of the sample written as `series` (name and labels exactly
/// as on the page), if there is one.
pub fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The torrc lines for a MetricsPort on 127.0.0.1:`port` that the test
/// (on 127.0.0.1) may read.
pub fn torrc_lines(port: u16) -> String {
    format!("MetricsPort 127.0.0.1:{port}\nMetricsPortPolicy accept 127.0.0.1\n")
}
