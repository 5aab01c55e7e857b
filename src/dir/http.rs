#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! HTTP/1.0 as Tor's directory protocol uses it (dir-spec §1, §6;
//! dirclient.c, dircache.c): one request per connection, the answer runs
//! until the server closes the connection.
//!
//! This module owns the request bytes and the parsing and decoding of a
//! complete answer (status line and headers with `httparse`, bodies
//! compressed with deflate, checked against a size limit so that a small
//! compressed answer cannot become an unbounded one). It does not open
//! connections or wait: the caller sends [`Request::to_bytes`] and hands
//! back everything it read until EOF.

use std::io::Read as _;
use std::net::IpAddr;

/// Headers beyond this many make the answer malformed.
const MAX_HEADERS: usize = 64;

/// What went wrong with an answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("the answer ended inside its headers ({0} bytes received)")]
    Truncated(usize),
    #[error("malformed HTTP answer: {0}")]
    Malformed(String),
    #[error("unsupported Content-Encoding {0:?}")]
    Encoding(String),
    #[error("the body does not decompress: {0}")]
    Decompress(String),
    #[error("the body is over {0} bytes once decompressed")]
    TooLarge(usize),
}

/// A request to a directory server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Path, e.g. `/tor/status-vote/current/consensus-microdesc`.
    pub path: String,
    /// Extra headers, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Request {
    /// A GET that accepts a deflate-compressed answer.
    pub fn get(path: impl Into<String>) -> Request {
        Request {
            method: Method::Get,
            path: path.into(),
            headers: vec![("Accept-Encoding".into(), "deflate, identity".into())],
            body: Vec::new(),
        }
    }

    /// A POST of `body` (descriptor uploads go to `/tor/`).
    pub fn post(path: impl Into<String>, body: Vec<u8>) -> Request {
        Request {
            method: Method::Post,
            path: path.into(),
            headers: Vec::new(),
            body,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The bytes to send. C tor sends `Host:` with the server's address
    /// and `Content-Length` on POSTs (directory_send_command).
    pub fn to_bytes(&self, host: &str) -> Vec<u8> {
        let mut s = format!(
            "{} {} HTTP/1.0\r\nHost: {host}\r\n",
            match self.method {
                Method::Get => "GET",
                Method::Post => "POST",
            },
            self.path
        );
        if self.method == Method::Post {
            s.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// A complete, decoded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The reason phrase: for descriptor uploads this is the authority's
    /// verdict ("Descriptor accepted", or why it was rejected).
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// The body, decompressed.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `X-Your-Address-Is`: the address the server saw us connect from
    /// (dircache.c:write_http_response_header_impl).
    pub fn your_address(&self) -> Option<IpAddr> {
        self.header("X-Your-Address-Is")?.trim().parse().ok()
    }

    /// Parse everything the server sent before closing, decompressing the
    /// body to at most `max_body` bytes.
    pub fn parse(raw: &[u8], max_body: usize) -> Result<Response, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut headers);
        let head_len = match r.parse(raw) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Err(HttpError::Truncated(raw.len())),
            Err(e) => return Err(HttpError::Malformed(e.to_string())),
        };
        let status = r
            .code
            .ok_or_else(|| HttpError::Malformed("no status code".into()))?;
        let reason = r.reason.unwrap_or("").to_owned();
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).trim().to_owned(),
                )
            })
            .collect();
        let mut body = raw.get(head_len..).unwrap_or_default();
        // C tor's dircache closes the connection after the body; some
        // servers send a Content-Length. Honour it when present: bytes
        // missing from a declared length mean a truncated answer.
        if let Some(len) = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        {
            let n: usize = len
                .1
                .parse()
                .map_err(|_| HttpError::Malformed(format!("Content-Length {:?}", len.1)))?;
            body = body.get(..n).ok_or_else(|| {
                HttpError::Malformed(format!(
                    "body is {} bytes, Content-Length says {n}",
                    body.len()
                ))
            })?;
        }
        let encoding = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Content-Encoding"))
            .map(|(_, v)| v.to_ascii_lowercase());
        let body = match encoding.as_deref() {
            None | Some("identity") => {
                if body.len() > max_body {
                    return Err(HttpError::TooLarge(max_body));
                }
                body.to_vec()
            }
            Some("deflate") => inflate(body, max_body)?,
            Some(other) => return Err(HttpError::Encoding(other.to_owned())),
        };
        Ok(Response {
            status,
            reason,
            headers,
            body,
        })
    }
}

/// zlib-wrapped deflate (C tor's "deflate" is zlib format), stopping at
/// `max` bytes of output.
fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::ZlibDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| HttpError::Decompress(e.to_string()))?;
    if out.len() > max {
        return Err(HttpError::TooLarge(max));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn requests() {
        let g = Request::get("/tor/keys/all").to_bytes("127.0.0.1:7000");
        assert_eq!(
            String::from_utf8(g).unwrap(),
            "GET /tor/keys/all HTTP/1.0\r\nHost: 127.0.0.1:7000\r\n\
             Accept-Encoding: deflate, identity\r\n\r\n"
        );
        let p = Request::post("/tor/", b"router x\n".to_vec())
            .header("X-Desc-Gen-Reason", "just started")
            .to_bytes("h");
        assert_eq!(
            String::from_utf8(p).unwrap(),
            "POST /tor/ HTTP/1.0\r\nHost: h\r\nContent-Length: 9\r\n\
             X-Desc-Gen-Reason: just started\r\n\r\nrouter x\n"
        );
    }

    #[test]
    fn answers() {
        let raw =
            b"HTTP/1.0 400 Fingerprint is marked rejected\r\nX-Your-Address-Is: 127.0.0.1\r\n\r\n";
        let r = Response::parse(raw, 100).unwrap();
        assert_eq!(
            (r.status, r.reason.as_str()),
            (400, "Fingerprint is marked rejected")
        );
        assert_eq!(r.your_address(), Some("127.0.0.1".parse().unwrap()));
        assert!(r.body.is_empty());

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&[b'a'; 5000]).unwrap();
        let z = z.finish().unwrap();
        let mut raw = b"HTTP/1.0 200 OK\r\nContent-Encoding: deflate\r\n\r\n".to_vec();
        raw.extend_from_slice(&z);
        assert_eq!(Response::parse(&raw, 5000).unwrap().body, vec![b'a'; 5000]);
        assert_eq!(Response::parse(&raw, 4999), Err(HttpError::TooLarge(4999)));
        // A cut-off compressed body.
        let cut = &raw[..raw.len() - 3];
        assert!(matches!(
            Response::parse(cut, 5000),
            Err(HttpError::Decompress(_))
        ));
    }

    #[test]
    fn bad_answers() {
        assert_eq!(
            Response::parse(b"HTTP/1.0 200 OK\r\nDate: x", 10),
            Err(HttpError::Truncated(24))
        );
        assert!(matches!(
            Response::parse(b"SSH-2.0-OpenSSH\r\n\r\n", 10),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            Response::parse(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nabc", 100),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            Response::parse(
                b"HTTP/1.0 200 OK\r\nContent-Encoding: x-zstd\r\n\r\nabc",
                100
            ),
            Err(HttpError::Encoding(_))
        ));
        assert_eq!(
            Response::parse(b"HTTP/1.0 200 OK\r\n\r\nabc", 2),
            Err(HttpError::TooLarge(2))
        );
    }
}
