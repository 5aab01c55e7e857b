//! A tiny HTTP/1.0 server on 127.0.0.1 with deterministic bodies.
//!
//! `GET /bytes/<n>` answers 200 with `n` pseudo-random bytes that depend only
//! on `n` ([`body_for`]), so a test computes the expected SHA-256 without
//! sharing state with the server. Anything else answers 404. One thread per
//! connection; the reply ends by closing the connection (HTTP/1.0).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sha2::Digest as _;

use super::HarnessError;
use super::acceptor::Acceptor;

/// Largest body served: bounds memory if a request is garbled.
const MAX_BODY: usize = 256 << 20;

/// The body served for `/bytes/<n>`: splitmix64 output seeded with `n`.
pub fn body_for(n: usize) -> Vec<u8> {
    let mut state = n as u64 ^ 0x6f78_6974_2d69_6f70;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// The running server; stops its accept loop on Drop.
pub struct HttpServer {
    acceptor: Acceptor,
}

impl HttpServer {
    /// Bind 127.0.0.1:0 and serve in a background thread.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST)
    }

    /// Bind `ip:0` (any address of 127.0.0.0/8 works on Linux loopback:
    /// e.g. the address dnsmasq gives the test name).
    pub fn start_on(ip: std::net::Ipv4Addr) -> Result<Self, HarnessError> {
        let acceptor = Acceptor::spawn(ip, "HTTP server", |conn| {
            std::thread::spawn(move || {
                let _ = serve(conn);
            });
        })?;
        Ok(Self { acceptor })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.acceptor.addr()
    }
}

fn serve(conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers up to the blank line.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let size = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.strip_prefix("/bytes/"))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n <= MAX_BODY);
    let mut conn = conn;
    match size {
        Some(n) => {
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
            );
            conn.write_all(head.as_bytes())?;
            conn.write_all(&body_for(n))?;
        }
        None => conn.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")?,
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn bodies_are_deterministic_and_distinct() {
        assert_eq!(body_for(1000), body_for(1000));
        assert_eq!(body_for(13).len(), 13);
        assert_ne!(body_for(64)[..32], body_for(65)[..32]);
        assert_eq!(&body_for(100)[..], &body_for(100)[..]);
    }

    #[test]
    fn serves_bytes_over_tcp() {
        let server = HttpServer::start().unwrap();
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.write_all(b"GET /bytes/5000 HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        let body = crate::client::parse_http_reply("/bytes/5000", reply).unwrap();
        assert_eq!(sha256_hex(&body), sha256_hex(&body_for(5000)));
    }
}
