//! A SOCKS5 client (RFC 1928, no authentication), blocking, for talking to
//! C tor's SocksPort: CONNECT to a name or an address, and the answer code
//! Tor gives when it cannot (e.g. 0x02 "not allowed by ruleset" for a port
//! every exit's policy rejects). Every read has a deadline.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Why a SOCKS request failed.
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    #[error("SOCKS I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the SOCKS server refused: reply code {0:#04x}")]
    Refused(u8),
    #[error("malformed SOCKS answer: {0}")]
    Protocol(String),
}

impl SocksError {
    /// The SOCKS5 reply code, when the server answered with one.
    pub fn reply_code(&self) -> Option<u8> {
        match self {
            SocksError::Refused(c) => Some(*c),
            _ => None,
        }
    }
}

/// Where to connect.
#[derive(Clone, Debug)]
pub enum Target<'a> {
    Name(&'a str),
    Addr(IpAddr),
}

/// Open a stream to `target:port` through the SOCKS5 server at `socks`.
pub fn connect(
    socks: SocketAddr,
    target: Target<'_>,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, SocksError> {
    let mut s = TcpStream::connect_timeout(&socks, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&[5, 1, 0])?;
    let mut hello = [0u8; 2];
    s.read_exact(&mut hello)?;
    if hello != [5, 0] {
        return Err(SocksError::Protocol(format!("method reply {hello:?}")));
    }
    let mut req = vec![5, 1, 0];
    match target {
        Target::Name(n) => {
            let len =
                u8::try_from(n.len()).map_err(|_| SocksError::Protocol("name too long".into()))?;
            req.push(3);
            req.push(len);
            req.extend_from_slice(n.as_bytes());
        }
        Target::Addr(IpAddr::V4(a)) => {
            req.push(1);
            req.extend_from_slice(&a.octets());
        }
        Target::Addr(IpAddr::V6(a)) => {
            req.push(4);
            req.extend_from_slice(&a.octets());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    if head[0] != 5 {
        return Err(SocksError::Protocol(format!("reply version {}", head[0])));
    }
    if head[1] != 0 {
        return Err(SocksError::Refused(head[1]));
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l)?;
            usize::from(l[0]) + 2
        }
        t => return Err(SocksError::Protocol(format!("address type {t}"))),
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip)?;
    Ok(s)
}

/// `GET path` over a SOCKS stream; the body, once the server closes.
pub fn http_get(
    socks: SocketAddr,
    target: Target<'_>,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<Vec<u8>, SocksError> {
    let mut s = connect(socks, target, port, timeout)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| SocksError::Protocol("HTTP answer without a header end".into()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(SocksError::Protocol(format!(
            "HTTP answer {:?}",
            head.lines().next()
        )));
    }
    Ok(raw[end + 4..].to_vec())
}
