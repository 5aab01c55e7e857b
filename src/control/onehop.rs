//! One-hop client circuits the control thread makes, blocking, each on a
//! thread of its own and each with a deadline: the ORPort reachability
//! self-test, directory requests tunnelled to a relay (BEGIN_DIR), and
//! learning our address from an authority's NETINFO.
//!
//! The channel is opened *as a client* (no CERTS/AUTHENTICATE from us): a
//! relay refuses to extend back to an identity it knows as the circuit's
//! previous hop, and a directory request needs no identity. The link
//! handshake is the sans-IO [`Channel`]'s; relay crypto is the client side
//! of tor1; this file moves bytes between them, rustls and the socket.
//!
//! Reachability (selftest.c): C tor builds a three-hop testing circuit
//! ending at itself. oxit needs only the last step: a one-hop circuit
//! (CREATE_FAST) to a relay of the consensus, and EXTEND2 back to its own
//! address, identity and ntor key. The relay then connects to our ORPort
//! from outside and sends CREATE2 there; the worker that answers sees a
//! CREATE on an inbound channel whose NETINFO names our published address,
//! C tor's proof of reachability (circuitbuild_relay.c:onionskin_answer).
//! An EXTENDED2 that completes the ntor handshake with our own onion key
//! proves the same thing. RELAY_DROP cells then go around the loop: C tor's
//! bandwidth self-test, which gives a new relay an observed bandwidth.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::crypto::tor1::Tor1ClientCircuit;
use crate::crypto::{fast, ntor};
use crate::dir::http::{Request, Response};
use crate::proto::cell::{
    CELL_BODY_LEN, ChanBody, ChanCmd, CircId, CreateFast, CreatedFast, HandshakeType,
};
use crate::proto::channel::{ChanEvent, Channel, ExpectedPeer, IncomingCell, LinkKeys, TlsSession};
use crate::proto::relay_msg::{
    self, Extend2, Extended2, LinkSpec, RELAY_BODY_LEN, RELAY_DATA_MAX, RelayBody, RelayCmd,
    Sendme, StreamId,
};

/// Bound on a reachability test.
const TEST_DEADLINE: Duration = Duration::from_secs(60);
/// RELAY_DROP cells of the bandwidth self-test
/// (circuituse.c:router_perform_bandwidth_test: min(BandwidthRate × 10 /
/// 514, 1000) cells).
const MAX_TEST_CELLS: u64 = 1000;
/// Bytes of one cell on the wire (`CELL_MAX_NETWORK_SIZE`).
const WIRE_CELL: u64 = 514;
/// Stream and circuit flow control of the directory stream we read
/// (tor-spec §7.3–7.4): a SENDME every 50 (stream) / 100 (circuit) cells.
const STREAM_SENDME_EVERY: u32 = 50;
const CIRC_SENDME_EVERY: u32 = 100;

/// Bytes a connection moved, for the bandwidth history.
#[derive(Clone, Copy, Debug, Default)]
pub struct Moved {
    pub read: u64,
    pub written: u64,
}

struct Tls<'a>(&'a rustls::ClientConnection);

impl TlsSession for Tls<'_> {
    fn export_keying_material(&self, label: &[u8], context: &[u8]) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        self.0
            .export_keying_material(&mut out, label, Some(context))
            .ok()?;
        Some(out)
    }
}

/// A blocking TLS connection carrying one client channel.
struct ClientChannel {
    sock: TcpStream,
    tls: rustls::ClientConnection,
    chan: Channel,
    deadline: Instant,
    cells: Vec<IncomingCell>,
    buf: Vec<u8>,
    moved: Moved,
    next_circ: u32,
}

/// What arrived on a circuit.
enum CircEvent {
    /// A relay message from hop `hop`, with the tag its SENDME would carry.
    Relay {
        hop: usize,
        cmd: RelayCmd,
        stream: u16,
        data: Vec<u8>,
        tag: [u8; 20],
    },
    Destroy(u8),
}

impl ClientChannel {
    /// TCP, TLS and the link handshake with the relay `rsa_id` at `addr`.
    /// `moved` counts the bytes even if this fails.
    fn open(
        link: Arc<LinkKeys>,
        addr: SocketAddr,
        rsa_id: [u8; 20],
        deadline: Instant,
        moved: &mut Moved,
    ) -> Result<ClientChannel, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut sock = TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(10)))
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = sock.set_nodelay(true);
        let cfg = crate::runtime::tls::client_config().map_err(|e| e.to_string())?;
        // C tor ignores SNI; a random name, as relays send.
        let sni = crate::crypto::x509::random_hostname(&mut rand::rng(), ".com");
        let name = rustls::pki_types::ServerName::try_from(sni).map_err(|e| e.to_string())?;
        let mut tls = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
        while tls.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("TLS with {addr} did not finish in time"));
            }
            sock.set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let (r, w) = tls
                .complete_io(&mut sock)
                .map_err(|e| format!("TLS with {addr}: {e}"))?;
            moved.read += r as u64;
            moved.written += w as u64;
        }
        let cert = tls
            .peer_certificates()
            .and_then(|v| v.first())
            .map(|d| d.as_ref().to_vec())
            .ok_or("the relay sent no TLS certificate")?;
        let chan = Channel::new_client_initiator(
            link,
            &cert,
            addr.ip(),
            ExpectedPeer {
                rsa_id,
                ed_id: None,
            },
            Instant::now(),
        );
        let mut c = ClientChannel {
            sock,
            tls,
            chan,
            deadline,
            cells: Vec::new(),
            buf: Vec::new(),
            moved: *moved,
            next_circ: 0,
        };
        let res = (|| {
            while !c.chan.is_open() {
                c.turn()?;
            }
            Ok(())
        })();
        *moved = c.moved;
        res.map(|()| c)
    }

    /// What the peer's NETINFO says our address is.
    fn our_address(&self) -> Option<IpAddr> {
        self.chan.peer_netinfo().and_then(|n| n.other_addr())
    }

    fn left(&self) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no answer in time".into());
        }
        Ok(left)
    }

    fn flush(&mut self) -> Result<(), String> {
        while self.tls.wants_write() {
            let n = self
                .tls
                .write_tls(&mut self.sock)
                .map_err(|e| format!("writing: {e}"))?;
            self.moved.written += n as u64;
        }
        Ok(())
    }

    /// Read once from the socket into rustls; false on EOF.
    fn read_some(&mut self) -> Result<bool, String> {
        let left = self.left()?;
        self.sock
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match self.tls.read_tls(&mut self.sock) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.moved.read += n as u64;
                self.tls
                    .process_new_packets()
                    .map_err(|e| format!("TLS: {e}"))?;
                Ok(true)
            }
            Err(e) => Err(format!("reading: {e}")),
        }
    }

    /// Hand what the channel queued to TLS and the socket. rustls takes a
    /// bounded amount of plaintext at a time: flush between the pieces.
    fn send_queued(&mut self) -> Result<(), String> {
        if self.chan.has_output() {
            let mut out = Vec::new();
            self.chan.take_output(&mut out);
            let left = self.left()?;
            self.sock
                .set_write_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let mut off = 0;
            while off < out.len() {
                let n = self
                    .tls
                    .writer()
                    .write(&out[off..])
                    .map_err(|e| format!("TLS write: {e}"))?;
                off += n;
                if n == 0 || self.tls.wants_write() {
                    self.flush()?;
                }
            }
        }
        self.flush()
    }

    /// Send what is queued, wait for input, feed it to the channel.
    fn turn(&mut self) -> Result<(), String> {
        self.send_queued()?;
        if !self.read_some()? {
            return Err("the relay closed the connection".into());
        }
        self.buf.clear();
        match self.tls.reader().read_to_end(&mut self.buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("TLS read: {e}")),
        }
        let unix_now = crate::dir::time::unix(SystemTime::now());
        self.chan
            .handle_input(
                &self.buf,
                Instant::now(),
                unix_now,
                &Tls(&self.tls),
                &mut rand::rng(),
                &mut self.cells,
            )
            .map_err(|e| format!("link protocol: {e}"))?;
        while let Some(ev) = self.chan.poll_event() {
            if let ChanEvent::Closed(e) = ev {
                return Err(format!("channel closed: {e}"));
            }
        }
        Ok(())
    }

    fn send(&mut self, id: CircId, cmd: ChanCmd, body: &[u8]) -> Result<(), String> {
        let mut fixed = [0u8; CELL_BODY_LEN];
        let n = body.len().min(CELL_BODY_LEN);
        fixed[..n].copy_from_slice(&body[..n]);
        self.chan
            .send_cell(id, cmd, &fixed)
            .map_err(|e| e.to_string())
    }

    /// The next cell on circuit `id`.
    fn next_cell(&mut self, id: CircId) -> Result<IncomingCell, String> {
        loop {
            if let Some(i) = self.cells.iter().position(|c| c.circ_id == id) {
                return Ok(self.cells.remove(i));
            }
            self.cells.clear();
            self.turn()?;
        }
    }

    /// A one-hop circuit with CREATE_FAST (the relay's keys are not in the
    /// microdescriptor consensus).
    fn create_fast(&mut self) -> Result<(CircId, Tor1ClientCircuit), String> {
        self.next_circ += 1;
        // The initiator's IDs have the high bit set (tor-spec §5.1.1).
        let id = CircId::new(0x8000_0000 | self.next_circ);
        let (state, x) = fast::client_create(&mut rand::rng());
        let mut body = Vec::new();
        CreateFast::new(x)
            .encode_onto(&mut body)
            .map_err(|e| e.to_string())?;
        self.send(id, ChanCmd::CREATE_FAST, &body)?;
        let cell = self.next_cell(id)?;
        if cell.cmd != ChanCmd::CREATED_FAST {
            return Err(format!("the relay answered CREATE_FAST with {}", cell.cmd));
        }
        let reply = CreatedFast::decode(&cell.body).map_err(|e| e.to_string())?;
        let mut yk = reply.y().to_vec();
        yk.extend_from_slice(reply.kh());
        let keys = fast::client_finish(state, &yk).map_err(|e| e.to_string())?;
        let mut circ = Tor1ClientCircuit::new();
        circ.push_hop(&keys.tor1);
        Ok((id, circ))
    }

    /// Queue a relay cell to hop `hop` (sent at the next turn or flush).
    fn relay<'m, M: RelayBody<'m>>(
        &mut self,
        id: CircId,
        circ: &mut Tor1ClientCircuit,
        hop: usize,
        stream: StreamId,
        msg: &M,
        early: bool,
    ) -> Result<(), String> {
        let mut body = [0u8; RELAY_BODY_LEN];
        relay_msg::encode_relay_msg(stream, msg, &mut rand::rng(), &mut body)
            .map_err(|e| e.to_string())?;
        circ.encrypt_forward(hop, &mut body).ok_or("no such hop")?;
        let cmd = if early {
            ChanCmd::RELAY_EARLY
        } else {
            ChanCmd::RELAY
        };
        self.send(id, cmd, &body)
    }

    fn relay_data(
        &mut self,
        id: CircId,
        circ: &mut Tor1ClientCircuit,
        hop: usize,
        cmd: RelayCmd,
        stream: StreamId,
        data: &[u8],
    ) -> Result<(), String> {
        let mut body = [0u8; RELAY_BODY_LEN];
        relay_msg::encode_relay_data(cmd, stream, data, &mut rand::rng(), &mut body)
            .map_err(|e| e.to_string())?;
        circ.encrypt_forward(hop, &mut body).ok_or("no such hop")?;
        self.send(id, ChanCmd::RELAY, &body)
    }

    fn next_event(
        &mut self,
        id: CircId,
        circ: &mut Tor1ClientCircuit,
    ) -> Result<CircEvent, String> {
        let cell = self.next_cell(id)?;
        match cell.cmd {
            ChanCmd::RELAY | ChanCmd::RELAY_EARLY => {
                let mut b = cell.body;
                let (hop, tag) = circ
                    .decrypt_backward(&mut b)
                    .ok_or("an unrecognized relay cell came back")?;
                let (hdr, data) = relay_msg::parse_relay_body(&b).map_err(|e| e.to_string())?;
                Ok(CircEvent::Relay {
                    hop,
                    cmd: hdr.cmd,
                    stream: hdr.stream_id.get(),
                    data: data.to_vec(),
                    tag: tag.0,
                })
            }
            ChanCmd::DESTROY => Ok(CircEvent::Destroy(cell.body[0])),
            other => Err(format!("unexpected {other} on the circuit")),
        }
    }

    /// DESTROY the circuit and close the connection politely.
    fn close(&mut self, id: CircId) {
        let _ = self.send(id, ChanCmd::DESTROY, &[0]);
        let _ = self.send_queued();
        self.tls.send_close_notify();
        let _ = self.flush();
    }
}

/// What to test, and through whom.
pub struct SelfTestJob {
    pub link: Arc<LinkKeys>,
    /// `BandwidthRate`, which bounds the bandwidth self-test.
    pub bandwidth_rate: u64,
    pub via_addr: SocketAddr,
    pub via_id: [u8; 20],
    /// Our published ORPort.
    pub target: SocketAddrV4,
    pub target_rsa_id: [u8; 20],
    pub target_ed_id: [u8; 32],
    pub target_ntor: [u8; 32],
}

/// Run the reachability test; `Ok` once the relay extended the circuit
/// back to us. The bytes the connection moved are returned either way.
pub fn self_test(job: &SelfTestJob) -> (Result<(), String>, Moved) {
    let mut moved = Moved::default();
    let deadline = Instant::now() + TEST_DEADLINE;
    let res = ClientChannel::open(
        job.link.clone(),
        job.via_addr,
        job.via_id,
        deadline,
        &mut moved,
    )
    .and_then(|mut c| {
        let res = test_circuit(job, &mut c);
        moved = c.moved;
        res
    });
    (res, moved)
}

fn test_circuit(job: &SelfTestJob, c: &mut ClientChannel) -> Result<(), String> {
    let (id, mut circ) = c.create_fast()?;
    let (nstate, hdata) =
        ntor::client_create(&mut rand::rng(), &job.target_rsa_id, &job.target_ntor);
    let ext = Extend2::new(
        vec![
            LinkSpec::Ipv4(job.target),
            LinkSpec::LegacyId(job.target_rsa_id),
            LinkSpec::Ed25519Id(job.target_ed_id),
        ],
        HandshakeType::NTOR,
        hdata.to_vec(),
    );
    c.relay(id, &mut circ, 0, StreamId::CIRCUIT, &ext, true)?;
    let result = match c.next_event(id, &mut circ)? {
        CircEvent::Relay {
            cmd: RelayCmd::EXTENDED2,
            data,
            ..
        } => {
            let reply = Extended2::decode(&data).map_err(|e| e.to_string())?;
            let keys = ntor::client_finish(nstate, reply.hdata())
                .map_err(|e| format!("our own ntor reply does not check out: {e}"))?;
            circ.push_hop(&keys.tor1);
            bandwidth_test(job, c, id, &mut circ)
        }
        CircEvent::Relay { cmd, .. } => Err(format!("the relay answered EXTEND2 with {cmd:?}")),
        CircEvent::Destroy(r) => Err(format!(
            "the relay could not extend back to {} (DESTROY reason {r})",
            job.target
        )),
    };
    c.close(id);
    result
}

/// C tor's bandwidth self-test: RELAY_DROP cells through the relay back to
/// us, which our worker reads and drops. Both directions then have traffic
/// to measure.
fn bandwidth_test(
    job: &SelfTestJob,
    c: &mut ClientChannel,
    id: CircId,
    circ: &mut Tor1ClientCircuit,
) -> Result<(), String> {
    let n = (job.bandwidth_rate.saturating_mul(10) / WIRE_CELL).min(MAX_TEST_CELLS);
    let last = circ.len().saturating_sub(1);
    for _ in 0..n {
        c.relay_data(id, circ, last, RelayCmd::DROP, StreamId::CIRCUIT, &[])?;
    }
    c.send_queued()
}

/// Ask the authority at `or_addr` how it sees us: its NETINFO names our
/// address (relay_find_addr.c:relay_addr_learn_from_dirauth, which opens a
/// circuit to an authority for the same reason).
pub fn learn_address(
    link: Arc<LinkKeys>,
    or_addr: SocketAddr,
    rsa_id: [u8; 20],
) -> (Result<Option<IpAddr>, String>, Moved) {
    let mut moved = Moved::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let res = ClientChannel::open(link, or_addr, rsa_id, deadline, &mut moved).map(|mut c| {
        let a = c.our_address();
        c.tls.send_close_notify();
        let _ = c.flush();
        moved = c.moved;
        a
    });
    (res, moved)
}

/// A directory request tunnelled to the relay at `or_addr` (BEGIN_DIR on a
/// one-hop circuit): how relays and clients reach directory caches that
/// have no DirPort, such as the fallback directories.
pub fn begin_dir(
    link: Arc<LinkKeys>,
    or_addr: SocketAddr,
    rsa_id: [u8; 20],
    req: &Request,
    stall: Duration,
    max: usize,
) -> (Result<Response, String>, Moved) {
    let mut moved = Moved::default();
    let deadline = Instant::now() + stall;
    let res = ClientChannel::open(link, or_addr, rsa_id, deadline, &mut moved).and_then(|mut c| {
        let res = dir_stream(&mut c, or_addr, req, max);
        moved = c.moved;
        res
    });
    (res, moved)
}

fn dir_stream(
    c: &mut ClientChannel,
    or_addr: SocketAddr,
    req: &Request,
    max: usize,
) -> Result<Response, String> {
    let (id, mut circ) = c.create_fast()?;
    let sid = StreamId::new(1);
    c.relay_data(id, &mut circ, 0, RelayCmd::BEGIN_DIR, sid, &[])?;
    match c.next_event(id, &mut circ)? {
        CircEvent::Relay {
            cmd: RelayCmd::CONNECTED,
            ..
        } => {}
        CircEvent::Relay {
            cmd: RelayCmd::END,
            data,
            ..
        } => {
            return Err(format!(
                "the relay refused BEGIN_DIR (END reason {})",
                data.first().copied().unwrap_or(0)
            ));
        }
        CircEvent::Relay { cmd, .. } => return Err(format!("BEGIN_DIR answered with {cmd:?}")),
        CircEvent::Destroy(r) => return Err(format!("circuit destroyed (reason {r})")),
    }
    // The request, in DATA cells.
    let bytes = req.to_bytes(&or_addr.to_string());
    for chunk in bytes.chunks(RELAY_DATA_MAX) {
        c.relay_data(id, &mut circ, 0, RelayCmd::DATA, sid, chunk)?;
    }
    c.send_queued()?;
    // The answer, until END, acknowledging as we go so the relay keeps
    // sending (it stops after 500 unacknowledged cells on the stream and
    // 1000 on the circuit).
    let mut raw = Vec::new();
    let (mut stream_cells, mut circ_cells) = (0u32, 0u32);
    loop {
        match c.next_event(id, &mut circ)? {
            CircEvent::Relay {
                hop: 0,
                cmd: RelayCmd::DATA,
                stream: 1,
                data,
                tag,
            } => {
                raw.extend_from_slice(&data);
                if raw.len() > max {
                    c.close(id);
                    return Err(format!("the answer is over {max} bytes"));
                }
                stream_cells += 1;
                circ_cells += 1;
                if stream_cells == STREAM_SENDME_EVERY {
                    stream_cells = 0;
                    c.relay(id, &mut circ, 0, sid, &Sendme::V0, false)?;
                }
                if circ_cells == CIRC_SENDME_EVERY {
                    circ_cells = 0;
                    c.relay(
                        id,
                        &mut circ,
                        0,
                        StreamId::CIRCUIT,
                        &Sendme::V1 {
                            tag: relay_msg::SendmeDigest::tor1(tag),
                        },
                        false,
                    )?;
                }
                c.send_queued()?;
            }
            CircEvent::Relay {
                cmd: RelayCmd::END, ..
            } => break,
            CircEvent::Relay { .. } => {}
            CircEvent::Destroy(r) => return Err(format!("circuit destroyed (reason {r})")),
        }
    }
    c.close(id);
    Response::parse(&raw, max).map_err(|e| format!("answer from {or_addr}: {e}"))
}
