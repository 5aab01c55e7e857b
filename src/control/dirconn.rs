//! One HTTP/1.0 exchange with a directory server, blocking, on a thread of
//! its own: connect, send the request, read until the server closes.
//!
//! Directory requests are few (a consensus an hour, a descriptor upload a
//! few times a day), so each gets a short-lived thread; none of this runs
//! on a worker. Every step has a deadline (C tor gives up on a stalled
//! directory connection after `TestingDirConnectionMaxStall`, 5 minutes, 30
//! seconds in a test network) and the answer has a size limit.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::onehop::Moved;
use crate::dir::http::{Request, Response};

/// How long to wait for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `Host:` as C tor writes it: the port is left out when it is 80.
fn host(addr: SocketAddr) -> String {
    match (addr.port(), addr) {
        (80, SocketAddr::V4(a)) => a.ip().to_string(),
        (80, SocketAddr::V6(a)) => format!("[{}]", a.ip()),
        _ => addr.to_string(),
    }
}

/// Send `req` to `addr` and return the decoded answer, and the bytes sent
/// and received (for the bandwidth history). `stall` bounds the whole
/// exchange; `max` the answer's size, compressed and not.
pub fn exchange(
    addr: SocketAddr,
    req: &Request,
    stall: Duration,
    max: usize,
) -> (Result<Response, String>, Moved) {
    let mut moved = Moved::default();
    let res = exchange_inner(addr, req, stall, max, &mut moved);
    (res, moved)
}

fn exchange_inner(
    addr: SocketAddr,
    req: &Request,
    stall: Duration,
    max: usize,
    moved: &mut Moved,
) -> Result<Response, String> {
    let deadline = Instant::now() + stall;
    let mut sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT.min(stall))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = sock.set_nodelay(true);
    let bytes = req.to_bytes(&host(addr));
    sock.set_write_timeout(Some(stall))
        .and_then(|()| sock.write_all(&bytes))
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    moved.written += bytes.len() as u64;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{addr} did not finish its answer within {stall:?}"));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| format!("reading from {addr}: {e}"))?;
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                moved.read += n as u64;
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > max {
                    return Err(format!("{addr} sent more than {max} bytes"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading from {addr}: {e}")),
        }
    }
    Response::parse(&raw, max).map_err(|e| format!("answer from {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that sends `answer` to the first connection and closes.
    fn serve(answer: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req);
                let _ = s.write_all(answer);
            }
        });
        addr
    }

    #[test]
    fn answers_and_failures() {
        let a = serve(b"HTTP/1.0 200 OK\r\n\r\nbody");
        let (r, moved) = exchange(a, &Request::get("/x"), Duration::from_secs(5), 100);
        assert_eq!(r.unwrap().body, b"body");
        assert_eq!(moved.read, 23);
        assert!(moved.written > 20);
        let a = serve(b"HTTP/1.0 200 OK\r\nX-Your");
        let e = exchange(a, &Request::get("/x"), Duration::from_secs(5), 100)
            .0
            .unwrap_err();
        assert!(e.contains("ended inside its headers"), "{e}");
        let a = serve(b"HTTP/1.0 200 OK\r\n\r\n0123456789");
        let e = exchange(a, &Request::get("/x"), Duration::from_secs(5), 20)
            .0
            .unwrap_err();
        assert!(e.contains("more than 20 bytes"), "{e}");
        // Nobody listening.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = l.local_addr().unwrap();
        drop(l);
        assert!(
            exchange(closed, &Request::get("/x"), Duration::from_secs(5), 20)
                .0
                .is_err()
        );
        assert_eq!(host("1.2.3.4:80".parse().unwrap()), "1.2.3.4");
        assert_eq!(host("1.2.3.4:9030".parse().unwrap()), "1.2.3.4:9030");
    }
}
