//! A deliberately low-level Tor client, for sending relays bad input on
//! purpose (tests/bad_input.rs).
//!
//! Owns: one TLS connection (any certificate accepted, as oxit's own
//! outgoing channels do: `oxit::runtime::tls::client_config`), the client
//! side of the link handshake (VERSIONS 4–5, then NETINFO; the relay's CERTS
//! are read but not verified: the tests are about what the relay does with
//! our bytes, not about its identity), raw cells in both directions, and
//! circuits built by hand with CREATE_FAST, CREATE2 (ntor) and EXTEND2
//! (ntor), with tor1 relay crypto. Cells are built and parsed with oxit's
//! own codec (`oxit::proto::cell`, `oxit::proto::relay_msg`); the bytes of a
//! *broken* cell are the caller's, sent through [`RawClient::send_cell`] or
//! [`RawClient::send_raw`].
//!
//! Does not own: anything a well-behaved client needs beyond that — no
//! SENDMEs, no stream windows, no padding negotiation, no certificate
//! checks. Everything is blocking with a deadline on every read, so a test
//! that expects "nothing" waits a bounded time.
//!
//! Circuit IDs: link v4+ gives the initiator the IDs with the high bit set
//! (tor-spec §5.1.1), so [`RawClient::next_circ_id`] hands those out.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxit::crypto::tor1::Tor1ClientCircuit;
use oxit::crypto::{fast, ntor};
use oxit::proto::cell::codec::SliceWriter;
use oxit::proto::cell::{
    self, ChanBody, ChanCmd, CircId, Create2, CreateFast, Created2, CreatedFast, Destroy,
    HandshakeType, Netinfo, Versions,
};
use oxit::proto::relay_msg::{
    self, Extend2, Extended2, LinkSpec, RELAY_BODY_LEN, RELAY_DATA_MAX, RelayBody, RelayCmd,
    StreamId,
};
use rustls::pki_types::ServerName;

use crate::client::HopSpec;

/// Bound on the TLS and link handshakes.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Link protocols we offer: the two C tor 0.4.9 and oxit speak.
pub const OUR_VERSIONS: [u16; 2] = [4, 5];

/// What went wrong, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// The relay closed the connection (EOF, reset, or a TLS close).
    #[error("connection closed by the relay while {0}")]
    Closed(String),
    /// Nothing arrived in time.
    #[error("no answer within {timeout:?} while {what}")]
    Timeout { what: String, timeout: Duration },
    /// A socket call failed otherwise.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// TLS failed.
    #[error("TLS while {what}: {source}")]
    Tls { what: String, source: rustls::Error },
    /// The relay sent something the protocol does not allow here.
    #[error("unexpected answer while {what}: {detail}")]
    Unexpected { what: String, detail: String },
}

/// One cell as received: circuit ID, command, body (509 bytes for a fixed
/// cell, `Length` bytes for a variable one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub circ_id: u32,
    pub cmd: ChanCmd,
    pub body: Vec<u8>,
}

/// A circuit the client built: its ID and one tor1 layer per hop.
pub struct Circ {
    pub id: u32,
    pub crypto: Tor1ClientCircuit,
    /// RELAY_EARLY cells sent so far (a relay allows 8: tor-spec §5.6).
    pub early_sent: usize,
}

impl Circ {
    /// Number of hops.
    pub fn hops(&self) -> usize {
        self.crypto.len()
    }
}

/// What arrived on a circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircEvent {
    /// A relay cell that hop `hop` (0-based) originated.
    Relay {
        hop: usize,
        cmd: RelayCmd,
        stream: u16,
        data: Vec<u8>,
    },
    /// A relay cell no hop recognized (the circuit is broken).
    Unrecognized,
    /// DESTROY with this reason byte.
    Destroy(u8),
}

/// One TLS connection to a relay.
pub struct RawClient {
    sock: TcpStream,
    tls: rustls::ClientConnection,
    /// Plaintext received and not yet parsed into cells.
    rx: Vec<u8>,
    /// 4-byte circuit IDs (after VERSIONS negotiated v4+).
    wide: bool,
    /// The negotiated link protocol (0 before VERSIONS).
    pub link_version: u16,
    peer: SocketAddr,
    next_id: u32,
    /// Every plaintext byte sent and received, when recording (for fuzz
    /// seed corpora: `examples/capture_seeds.rs`).
    pub transcript: Option<(Vec<u8>, Vec<u8>)>,
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> RawError + '_ {
    move |source| {
        if is_closed(&source) {
            RawError::Closed(what.to_owned())
        } else {
            RawError::Io {
                what: what.to_owned(),
                source,
            }
        }
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
    )
}

fn unexpected(what: &str, detail: impl Into<String>) -> RawError {
    RawError::Unexpected {
        what: what.to_owned(),
        detail: detail.into(),
    }
}

/// A TCP connection to `addr`, from `from` when given.
pub fn tcp_connect(
    addr: SocketAddr,
    from: Option<IpAddr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect_timeout(&addr, timeout);
    };
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.bind(&SocketAddr::new(from, 0).into())?;
    sock.connect_timeout(&addr.into(), timeout)?;
    Ok(sock.into())
}

impl RawClient {
    /// TCP + TLS to `addr`; no Tor bytes sent yet.
    pub fn connect_tls(addr: SocketAddr) -> Result<Self, RawError> {
        Self::connect_tls_from(addr, None)
    }

    /// [`Self::connect_tls`] from the local address `from` (another
    /// 127.0.0.0/8 address makes another client on loopback).
    pub fn connect_tls_from(addr: SocketAddr, from: Option<IpAddr>) -> Result<Self, RawError> {
        let what = format!("connecting to {addr}");
        let sock = tcp_connect(addr, from, HANDSHAKE_TIMEOUT).map_err(io_err(&what))?;
        sock.set_nodelay(true).map_err(io_err(&what))?;
        let cfg = oxit::runtime::tls::client_config().map_err(|source| RawError::Tls {
            what: what.clone(),
            source,
        })?;
        // C tor ignores SNI; any name will do.
        let name = ServerName::try_from("www.example.com")
            .map_err(|e| unexpected(&what, format!("server name: {e}")))?;
        let tls = rustls::ClientConnection::new(Arc::clone(&cfg), name).map_err(|source| {
            RawError::Tls {
                what: what.clone(),
                source,
            }
        })?;
        let mut me = RawClient {
            sock,
            tls,
            rx: Vec::new(),
            wide: false,
            link_version: 0,
            peer: addr,
            next_id: 0,
            transcript: None,
        };
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        while me.tls.is_handshaking() {
            me.flush(&what)?;
            if !me.tls.is_handshaking() {
                break;
            }
            if !me.read_tls(deadline, &what)? {
                return Err(RawError::Timeout {
                    what,
                    timeout: HANDSHAKE_TIMEOUT,
                });
            }
        }
        me.flush(&what)?;
        Ok(me)
    }

    /// TLS, then the whole link handshake as a client: VERSIONS [4, 5],
    /// read VERSIONS, CERTS, AUTH_CHALLENGE, NETINFO; send NETINFO.
    pub fn connect(addr: SocketAddr) -> Result<Self, RawError> {
        Self::connect_from(addr, None)
    }

    /// [`Self::connect`] from the local address `from`.
    pub fn connect_from(addr: SocketAddr, from: Option<IpAddr>) -> Result<Self, RawError> {
        let mut me = Self::connect_tls_from(addr, from)?;
        me.send_versions(&OUR_VERSIONS)?;
        me.finish_link_handshake()?;
        Ok(me)
    }

    /// Send a VERSIONS cell (2-byte circuit ID, as every first VERSIONS is).
    pub fn send_versions(&mut self, versions: &[u16]) -> Result<(), RawError> {
        let v = Versions::new(versions.to_vec())
            .map_err(|e| unexpected("encoding VERSIONS", e.to_string()))?;
        let mut out = Vec::new();
        cell::encode_msg(CircId::CHANNEL, &v, false, &mut out)
            .map_err(|e| unexpected("encoding VERSIONS", e.to_string()))?;
        self.send_raw(&out)
    }

    /// After our VERSIONS: read the responder's VERSIONS, CERTS,
    /// AUTH_CHALLENGE and NETINFO, then send our NETINFO.
    pub fn finish_link_handshake(&mut self) -> Result<(), RawError> {
        let what = "reading the relay's VERSIONS";
        let c = self.expect_cell(HANDSHAKE_TIMEOUT, what)?;
        if c.cmd != ChanCmd::VERSIONS {
            return Err(unexpected(what, format!("got {}", c.cmd)));
        }
        let theirs = Versions::decode(&c.body).map_err(|e| unexpected(what, e.to_string()))?;
        let v = theirs.best_shared(&OUR_VERSIONS).ok_or_else(|| {
            unexpected(
                what,
                format!("no common version in {:?}", theirs.versions()),
            )
        })?;
        self.link_version = v;
        self.wide = cell::link_uses_wide_circ_ids(v);
        let mut seen = Vec::new();
        loop {
            let what = "reading CERTS, AUTH_CHALLENGE, NETINFO";
            let c = self.expect_cell(HANDSHAKE_TIMEOUT, what)?;
            match c.cmd {
                ChanCmd::CERTS | ChanCmd::AUTH_CHALLENGE => seen.push(c.cmd),
                ChanCmd::NETINFO => break,
                other => return Err(unexpected(what, format!("got {other}"))),
            }
        }
        if !seen.contains(&ChanCmd::CERTS) {
            return Err(unexpected("link handshake", "NETINFO before CERTS"));
        }
        let ni = Netinfo::new(0, Some(self.peer.ip()), Vec::new())
            .map_err(|e| unexpected("encoding NETINFO", e.to_string()))?;
        self.send_msg(0, &ni)
    }

    /// A fresh circuit ID with the initiator's high bit set.
    pub fn next_circ_id(&mut self) -> u32 {
        self.next_id += 1;
        0x8000_0000 | self.next_id
    }

    /// This client's end of the connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.sock.local_addr().ok()
    }

    /// Write plaintext bytes as they are: for cells no codec would build.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), RawError> {
        if let Some((sent, _)) = &mut self.transcript {
            sent.extend_from_slice(bytes);
        }
        self.tls
            .writer()
            .write_all(bytes)
            .map_err(io_err("queueing plaintext"))?;
        self.flush("sending")
    }

    /// Send one cell with any command and body. A fixed cell's body is
    /// zero-padded to 509 bytes; a variable cell's is sent as given.
    pub fn send_cell(&mut self, circ_id: u32, cmd: ChanCmd, body: &[u8]) -> Result<(), RawError> {
        let mut out = Vec::new();
        cell::encode_raw(CircId::new(circ_id), cmd, body, self.wide, &mut out)
            .map_err(|e| unexpected("encoding a cell", e.to_string()))?;
        self.send_raw(&out)
    }

    /// Send a typed channel message.
    pub fn send_msg<M: ChanBody>(&mut self, circ_id: u32, msg: &M) -> Result<(), RawError> {
        let mut out = Vec::new();
        cell::encode_msg(CircId::new(circ_id), msg, self.wide, &mut out)
            .map_err(|e| unexpected("encoding a cell", e.to_string()))?;
        self.send_raw(&out)
    }

    /// The next cell, skipping link padding (PADDING, VPADDING: C tor sends
    /// channel padding to clients). `Ok(None)` when nothing came within
    /// `timeout`; `Err(Closed)` when the relay closed the connection.
    pub fn recv_cell(&mut self, timeout: Duration) -> Result<Option<Cell>, RawError> {
        let deadline = Instant::now() + timeout;
        loop {
            let parsed = cell::decode(&self.rx, self.wide)
                .map_err(|e| unexpected("decoding a cell", e.to_string()))?
                .map(|(c, used)| {
                    (
                        Cell {
                            circ_id: c.circ_id().get(),
                            cmd: c.cmd(),
                            body: c.body().to_vec(),
                        },
                        used,
                    )
                });
            if let Some((c, used)) = parsed {
                self.rx.drain(..used);
                if matches!(c.cmd, ChanCmd::PADDING | ChanCmd::VPADDING) {
                    continue;
                }
                return Ok(Some(c));
            }
            if !self.read_tls(deadline, "waiting for a cell")? {
                return Ok(None);
            }
        }
    }

    fn expect_cell(&mut self, timeout: Duration, what: &str) -> Result<Cell, RawError> {
        self.recv_cell(timeout)?.ok_or_else(|| RawError::Timeout {
            what: what.to_owned(),
            timeout,
        })
    }

    /// Send a FIN: the relay sees the end of our stream, while we can
    /// still read (or, as a zero-window peer, not read).
    pub fn shutdown_write(&mut self) -> Result<(), RawError> {
        self.flush("shutting down")?;
        self.sock
            .shutdown(std::net::Shutdown::Write)
            .map_err(io_err("shutting down"))
    }

    /// Wait up to `timeout` for the relay to close the connection, discarding
    /// cells. True if it closed.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<bool, RawError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_cell(left) {
                Err(RawError::Closed(_)) => return Ok(true),
                Err(e) => return Err(e),
                Ok(None) => return Ok(false),
                Ok(Some(_)) => {}
            }
        }
    }

    /// CREATE_FAST → CREATED_FAST: a one-hop circuit.
    pub fn create_fast(&mut self, timeout: Duration) -> Result<Circ, RawError> {
        let id = self.next_circ_id();
        let (state, x) = fast::client_create(&mut rand::rng());
        self.send_msg(id, &CreateFast::new(x))?;
        let what = "waiting for CREATED_FAST";
        let c = self.expect_circ_cell(id, timeout, what)?;
        if c.cmd != ChanCmd::CREATED_FAST {
            return Err(unexpected(what, describe(&c)));
        }
        let reply = CreatedFast::decode(&c.body).map_err(|e| unexpected(what, e.to_string()))?;
        let mut yk = Vec::with_capacity(40);
        yk.extend_from_slice(reply.y());
        yk.extend_from_slice(reply.kh());
        let keys = fast::client_finish(state, &yk).map_err(|e| unexpected(what, e.to_string()))?;
        let mut crypto = Tor1ClientCircuit::new();
        crypto.push_hop(&keys.tor1);
        Ok(Circ {
            id,
            crypto,
            early_sent: 0,
        })
    }

    /// CREATE2 (ntor) → CREATED2: a one-hop circuit to `hop`.
    pub fn create2_ntor(&mut self, hop: &HopSpec, timeout: Duration) -> Result<Circ, RawError> {
        let id = self.next_circ_id();
        let (state, hdata) = ntor::client_create(&mut rand::rng(), &hop.rsa_id, &hop.ntor_key);
        let create = Create2::new(HandshakeType::NTOR, hdata.to_vec())
            .map_err(|e| unexpected("encoding CREATE2", e.to_string()))?;
        self.send_msg(id, &create)?;
        let what = "waiting for CREATED2";
        let c = self.expect_circ_cell(id, timeout, what)?;
        if c.cmd != ChanCmd::CREATED2 {
            return Err(unexpected(what, describe(&c)));
        }
        let reply = Created2::decode(&c.body).map_err(|e| unexpected(what, e.to_string()))?;
        let keys = ntor::client_finish(state, reply.hdata())
            .map_err(|e| unexpected(what, e.to_string()))?;
        let mut crypto = Tor1ClientCircuit::new();
        crypto.push_hop(&keys.tor1);
        Ok(Circ {
            id,
            crypto,
            early_sent: 0,
        })
    }

    /// EXTEND2 (ntor, in RELAY_EARLY) to `hop` from the last hop of `circ`;
    /// adds a hop on EXTENDED2.
    pub fn extend2_ntor(
        &mut self,
        circ: &mut Circ,
        hop: &HopSpec,
        timeout: Duration,
    ) -> Result<(), RawError> {
        let SocketAddr::V4(v4) = hop.addr else {
            return Err(unexpected("EXTEND2", "only IPv4 hops are supported"));
        };
        let (state, hdata) = ntor::client_create(&mut rand::rng(), &hop.rsa_id, &hop.ntor_key);
        let ext = Extend2::new(
            vec![
                LinkSpec::Ipv4(v4),
                LinkSpec::LegacyId(hop.rsa_id),
                LinkSpec::Ed25519Id(hop.ed_id),
            ],
            HandshakeType::NTOR,
            hdata.to_vec(),
        );
        let data = relay_data(&ext)?;
        let last = circ.hops().saturating_sub(1);
        self.send_relay(circ, last, true, RelayCmd::EXTEND2, 0, &data)?;
        let what = "waiting for EXTENDED2";
        match self.recv_relay(circ, timeout)? {
            Some(CircEvent::Relay {
                hop: from,
                cmd: RelayCmd::EXTENDED2,
                data,
                ..
            }) if from == last => {
                let reply =
                    Extended2::decode(&data).map_err(|e| unexpected(what, e.to_string()))?;
                let keys = ntor::client_finish(state, reply.hdata())
                    .map_err(|e| unexpected(what, e.to_string()))?;
                circ.crypto.push_hop(&keys.tor1);
                Ok(())
            }
            Some(other) => Err(unexpected(what, format!("{other:?}"))),
            None => Err(RawError::Timeout {
                what: what.into(),
                timeout,
            }),
        }
    }

    /// Send a relay message to hop `hop` (0-based) of `circ`, in a
    /// RELAY_EARLY cell if `early`. `data` goes in as is (at most 498 bytes).
    pub fn send_relay(
        &mut self,
        circ: &mut Circ,
        hop: usize,
        early: bool,
        cmd: RelayCmd,
        stream: u16,
        data: &[u8],
    ) -> Result<(), RawError> {
        let body = self.seal_relay(circ, hop, cmd, stream, data)?;
        self.send_sealed(circ, early, &body)
    }

    /// Build and encrypt a relay cell body for hop `hop` without sending it,
    /// so a test can tamper with the ciphertext first.
    pub fn seal_relay(
        &mut self,
        circ: &mut Circ,
        hop: usize,
        cmd: RelayCmd,
        stream: u16,
        data: &[u8],
    ) -> Result<[u8; RELAY_BODY_LEN], RawError> {
        let mut body = [0u8; RELAY_BODY_LEN];
        relay_msg::encode_relay_data(
            cmd,
            StreamId::new(stream),
            data,
            &mut rand::rng(),
            &mut body,
        )
        .map_err(|e| unexpected("encoding a relay cell", e.to_string()))?;
        circ.crypto
            .encrypt_forward(hop, &mut body)
            .ok_or_else(|| unexpected("encrypting a relay cell", format!("no hop {hop}")))?;
        Ok(body)
    }

    /// Send an already encrypted relay cell body on `circ`.
    pub fn send_sealed(
        &mut self,
        circ: &mut Circ,
        early: bool,
        body: &[u8; RELAY_BODY_LEN],
    ) -> Result<(), RawError> {
        let cmd = if early {
            circ.early_sent += 1;
            ChanCmd::RELAY_EARLY
        } else {
            ChanCmd::RELAY
        };
        self.send_cell(circ.id, cmd, body)
    }

    /// The next event on `circ` within `timeout` (cells for other circuits
    /// are dropped). `Ok(None)` on timeout; `Err(Closed)` if the connection
    /// closed.
    pub fn recv_relay(
        &mut self,
        circ: &mut Circ,
        timeout: Duration,
    ) -> Result<Option<CircEvent>, RawError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(c) = self.recv_cell(left)? else {
                return Ok(None);
            };
            if c.circ_id != circ.id {
                continue;
            }
            return Ok(Some(self.circ_event(circ, &c)?));
        }
    }

    fn circ_event(&mut self, circ: &mut Circ, c: &Cell) -> Result<CircEvent, RawError> {
        let what = "reading a cell on a circuit";
        match c.cmd {
            ChanCmd::DESTROY => {
                let d = Destroy::decode(&c.body).map_err(|e| unexpected(what, e.to_string()))?;
                Ok(CircEvent::Destroy(d.reason().get()))
            }
            ChanCmd::RELAY | ChanCmd::RELAY_EARLY => {
                let mut body: [u8; RELAY_BODY_LEN] = c
                    .body
                    .as_slice()
                    .try_into()
                    .map_err(|_| unexpected(what, "relay cell body is not 509 bytes"))?;
                let Some((hop, _tag)) = circ.crypto.decrypt_backward(&mut body) else {
                    return Ok(CircEvent::Unrecognized);
                };
                let (hdr, data) = relay_msg::parse_relay_body(&body)
                    .map_err(|e| unexpected(what, e.to_string()))?;
                Ok(CircEvent::Relay {
                    hop,
                    cmd: hdr.cmd,
                    stream: hdr.stream_id.get(),
                    data: data.to_vec(),
                })
            }
            _ => Err(unexpected(what, describe(c))),
        }
    }

    fn expect_circ_cell(
        &mut self,
        id: u32,
        timeout: Duration,
        what: &str,
    ) -> Result<Cell, RawError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let c = self.expect_cell(left, what)?;
            if c.circ_id == id {
                return Ok(c);
            }
        }
    }

    /// Push queued TLS records to the socket.
    fn flush(&mut self, what: &str) -> Result<(), RawError> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.sock).map_err(io_err(what))?;
        }
        Ok(())
    }

    /// Read TLS records until some plaintext (or handshake progress) arrives
    /// or `deadline` passes. Returns false on timeout.
    fn read_tls(&mut self, deadline: Instant, what: &str) -> Result<bool, RawError> {
        loop {
            // Plaintext already decrypted?
            let mut buf = [0u8; 16 * 1024];
            match self.tls.reader().read(&mut buf) {
                Ok(0) => return Err(RawError::Closed(what.to_owned())),
                Ok(n) => {
                    self.rx.extend_from_slice(buf.get(..n).unwrap_or_default());
                    if let Some((_, got)) = &mut self.transcript {
                        got.extend_from_slice(buf.get(..n).unwrap_or_default());
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_err(what)(e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(io_err(what))?;
            let was_handshaking = self.tls.is_handshaking();
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => return Err(RawError::Closed(what.to_owned())),
                Ok(_) => {
                    self.tls
                        .process_new_packets()
                        .map_err(|source| RawError::Tls {
                            what: what.to_owned(),
                            source,
                        })?;
                    self.flush(what)?;
                    if was_handshaking {
                        // Handshake progress (perhaps its end): let the
                        // caller look.
                        return Ok(true);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(false);
                }
                Err(e) => return Err(io_err(what)(e)),
            }
        }
    }
}

/// The data bytes of a typed relay message.
pub fn relay_data<'a, M: RelayBody<'a>>(msg: &M) -> Result<Vec<u8>, RawError> {
    let mut buf = [0u8; RELAY_DATA_MAX];
    let mut w = SliceWriter::new(&mut buf);
    msg.encode_onto(&mut w)
        .map_err(|e| unexpected("encoding a relay message", e.to_string()))?;
    let n = w.written();
    Ok(buf.get(..n).unwrap_or_default().to_vec())
}

/// A short description of a cell for failure messages.
pub fn describe(c: &Cell) -> String {
    let head: Vec<u8> = c.body.iter().take(8).copied().collect();
    format!(
        "{} on circ {:#x}, body starts {}",
        c.cmd,
        c.circ_id,
        hex::encode(head)
    )
}
