//! The ORPort reachability self-test (selftest.c): before it publishes, a
//! relay asks another relay to connect back to it.
//!
//! C tor builds a three-hop testing circuit ending at itself. oxit needs
//! only the last step: it opens a channel to one relay of the consensus *as
//! a client* (a relay refuses to extend back to an identity it knows as the
//! circuit's previous hop), makes a one-hop circuit with CREATE_FAST, and
//! asks for EXTEND2 to its own address, identity and ntor key. The relay
//! then connects to our ORPort from outside and sends CREATE2 there; the
//! worker that answers sees a CREATE on an inbound channel whose NETINFO
//! names our published address, which is C tor's proof of reachability
//! (circuitbuild_relay.c:onionskin_answer). An EXTENDED2 that completes
//! the ntor handshake with our own onion key proves the same thing.
//!
//! Blocking, on a thread of its own, with a deadline on every step. The
//! link handshake is the sans-IO [`Channel`]'s; this file only moves bytes
//! between it, rustls and the socket.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::crypto::tor1::Tor1ClientCircuit;
use crate::crypto::{fast, ntor};
use crate::proto::cell::{
    CELL_BODY_LEN, ChanBody, ChanCmd, CircId, CreateFast, CreatedFast, HandshakeType,
};
use crate::proto::channel::{ChanEvent, Channel, ExpectedPeer, IncomingCell, LinkKeys, TlsSession};
use crate::proto::relay_msg::{
    self, Extend2, Extended2, LinkSpec, RELAY_BODY_LEN, RelayBody, RelayCmd, StreamId,
};

/// Bound on the whole test.
const DEADLINE: Duration = Duration::from_secs(60);
/// RELAY_DROP cells sent over the test circuit once it reaches us: C
/// tor's bandwidth self-test (circuituse.c:router_perform_bandwidth_test
/// sends min(BandwidthRate × 10 / 514, 1000) cells), which gives a new
/// relay an observed bandwidth to publish.
const MAX_TEST_CELLS: u64 = 1000;
/// Bytes of one cell on the wire (`CELL_MAX_NETWORK_SIZE`).
const WIRE_CELL: u64 = 514;

/// Bytes the test moved on its own connection, for the bandwidth history.
#[derive(Clone, Copy, Debug, Default)]
pub struct Moved {
    pub read: u64,
    pub written: u64,
}

/// What to test, and through whom.
pub struct Job {
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

/// A blocking TLS connection carrying one channel.
struct Conn {
    sock: TcpStream,
    tls: rustls::ClientConnection,
    chan: Option<Channel>,
    deadline: Instant,
    cells: Vec<IncomingCell>,
    buf: Vec<u8>,
    moved: Moved,
}

impl Conn {
    fn left(&self) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {DEADLINE:?}"));
        }
        Ok(left)
    }

    /// Write what rustls has queued.
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

    /// Send what the channel queued, then wait for input and feed it to
    /// the channel; returns after each batch of input.
    fn turn(&mut self) -> Result<(), String> {
        let Some(ch) = self.chan.as_mut() else {
            return Err("no channel".into());
        };
        if ch.has_output() {
            let mut out = Vec::new();
            ch.take_output(&mut out);
            self.tls
                .writer()
                .write_all(&out)
                .map_err(|e| format!("TLS write: {e}"))?;
        }
        self.flush()?;
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
        let Some(ch) = self.chan.as_mut() else {
            return Err("no channel".into());
        };
        ch.handle_input(
            &self.buf,
            Instant::now(),
            unix_now,
            &Tls(&self.tls),
            &mut rand::rng(),
            &mut self.cells,
        )
        .map_err(|e| format!("link protocol: {e}"))?;
        while let Some(ev) = ch.poll_event() {
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
            .as_mut()
            .ok_or("no channel")?
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
}

fn encode<M: ChanBody>(m: &M) -> Result<Vec<u8>, String> {
    let mut v = Vec::new();
    m.encode_onto(&mut v).map_err(|e| e.to_string())?;
    Ok(v)
}

/// Run the test; `Ok` once the relay extended the circuit back to us. The
/// bytes the connection moved are returned either way.
pub fn run(job: &Job) -> (Result<(), String>, Moved) {
    let mut moved = Moved::default();
    let res = run_inner(job, &mut moved);
    (res, moved)
}

fn run_inner(job: &Job, moved: &mut Moved) -> Result<(), String> {
    let deadline = Instant::now() + DEADLINE;
    let sock = TcpStream::connect_timeout(&job.via_addr, Duration::from_secs(10))
        .map_err(|e| format!("connecting to {}: {e}", job.via_addr))?;
    let _ = sock.set_nodelay(true);
    let cfg = crate::runtime::tls::client_config().map_err(|e| e.to_string())?;
    let sni = crate::crypto::x509::random_hostname(&mut rand::rng(), ".com");
    let name = rustls::pki_types::ServerName::try_from(sni).map_err(|e| e.to_string())?;
    let tls = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    let mut c = Conn {
        sock,
        tls,
        chan: None,
        deadline,
        cells: Vec::new(),
        buf: Vec::new(),
        moved: Moved::default(),
    };
    let res = test_circuit(job, &mut c);
    *moved = c.moved;
    res
}

fn test_circuit(job: &Job, c: &mut Conn) -> Result<(), String> {
    while c.tls.is_handshaking() {
        c.flush()?;
        if !c.tls.is_handshaking() {
            break;
        }
        if !c.read_some()? {
            return Err("the relay closed the connection during TLS".into());
        }
    }
    c.flush()?;
    let cert = c
        .tls
        .peer_certificates()
        .and_then(|v| v.first())
        .map(|d| d.as_ref().to_vec())
        .ok_or("the relay sent no TLS certificate")?;
    c.chan = Some(Channel::new_client_initiator(
        job.link.clone(),
        &cert,
        job.via_addr.ip(),
        ExpectedPeer {
            rsa_id: job.via_id,
            ed_id: None,
        },
        Instant::now(),
    ));
    while !c.chan.as_ref().is_some_and(Channel::is_open) {
        c.turn()?;
    }

    // One hop with CREATE_FAST: the relay's keys are not in the consensus.
    let id = CircId::new(0x8000_0001);
    let (state, x) = fast::client_create(&mut rand::rng());
    c.send(id, ChanCmd::CREATE_FAST, &encode(&CreateFast::new(x))?)?;
    let cell = c.next_cell(id)?;
    if cell.cmd != ChanCmd::CREATED_FAST {
        return Err(format!("the relay answered CREATE_FAST with {}", cell.cmd));
    }
    let reply = CreatedFast::decode(&cell.body).map_err(|e| e.to_string())?;
    let mut yk = reply.y().to_vec();
    yk.extend_from_slice(reply.kh());
    let keys = fast::client_finish(state, &yk).map_err(|e| e.to_string())?;
    let mut circ = Tor1ClientCircuit::new();
    circ.push_hop(&keys.tor1);

    // EXTEND2 back to ourselves.
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
    let mut body = [0u8; RELAY_BODY_LEN];
    relay_msg::encode_relay_msg(StreamId::CIRCUIT, &ext, &mut rand::rng(), &mut body)
        .map_err(|e| e.to_string())?;
    circ.encrypt_forward(0, &mut body).ok_or("no hop")?;
    c.send(id, ChanCmd::RELAY_EARLY, &body)?;
    let cell = c.next_cell(id)?;
    let result = match cell.cmd {
        ChanCmd::RELAY | ChanCmd::RELAY_EARLY => {
            let mut b = cell.body;
            circ.decrypt_backward(&mut b)
                .ok_or("an unrecognized relay cell came back")?;
            let (hdr, data) = relay_msg::parse_relay_body(&b).map_err(|e| e.to_string())?;
            if hdr.cmd == RelayCmd::EXTENDED2 {
                let reply = Extended2::decode(data).map_err(|e| e.to_string())?;
                let keys = ntor::client_finish(nstate, reply.hdata())
                    .map_err(|e| format!("our own ntor reply does not check out: {e}"))?;
                circ.push_hop(&keys.tor1);
                bandwidth_test(job, c, id, &mut circ)
            } else {
                Err(format!("the relay answered EXTEND2 with {:?}", hdr.cmd))
            }
        }
        ChanCmd::DESTROY => Err(format!(
            "the relay could not extend back to {} (DESTROY reason {})",
            job.target, cell.body[0]
        )),
        other => Err(format!("the relay answered EXTEND2 with {other}")),
    };
    // Done with the circuit either way.
    let _ = c.send(id, ChanCmd::DESTROY, &[0]);
    if let Some(ch) = c.chan.as_mut()
        && ch.has_output()
    {
        let mut out = Vec::new();
        ch.take_output(&mut out);
        let _ = c.tls.writer().write_all(&out);
        c.tls.send_close_notify();
        let _ = c.flush();
    }
    result
}

/// C tor's bandwidth self-test: RELAY_DROP cells through the relay back to
/// us, which our worker reads and drops. Both directions then have traffic
/// to measure.
fn bandwidth_test(
    job: &Job,
    c: &mut Conn,
    id: CircId,
    circ: &mut Tor1ClientCircuit,
) -> Result<(), String> {
    let n = (job.bandwidth_rate.saturating_mul(10) / WIRE_CELL).min(MAX_TEST_CELLS);
    let last = circ.len().saturating_sub(1);
    for _ in 0..n {
        let mut body = [0u8; RELAY_BODY_LEN];
        relay_msg::encode_relay_data(
            RelayCmd::DROP,
            StreamId::CIRCUIT,
            &[],
            &mut rand::rng(),
            &mut body,
        )
        .map_err(|e| e.to_string())?;
        circ.encrypt_forward(last, &mut body).ok_or("no hop")?;
        c.send(id, ChanCmd::RELAY, &body)?;
    }
    if let Some(ch) = c.chan.as_mut()
        && ch.has_output()
    {
        let mut out = Vec::new();
        ch.take_output(&mut out);
        c.tls
            .writer()
            .write_all(&out)
            .map_err(|e| format!("TLS write: {e}"))?;
    }
    c.flush()
}
