//! The generator: links to the relay under test, circuits over them, the
//! streams of each scenario, and the measured window.
//!
//! Everything runs on one thread over oxit's own epoll driver, so the
//! generator's cost per cell is what matters for it to outrun the relay:
//! - Most circuits are counted, not verified: their backward cells get the
//!   AES layer removed and the relay header read, but no SHA-1 (which is
//!   most of tor1's cost). Every `sample_every`-th circuit is fully
//!   verified (digests, and every byte compared with the source's pattern).
//! - Every byte is counted on every stream: a download must end with
//!   exactly the bytes asked for, an upload with the sink's "DONE".
//! - Circuit SENDMEs are v0, which C tor 0.4.9 and oxit accept without a
//!   consensus (`sendme_accept_min_version` 0), so no digest is needed.
//! - A creation storm reuses prepared onionskins and checks the relay's
//!   answer on the sampled circuits only.
//!
//! The middle scenario makes the generator both ends of a two-hop circuit:
//! the relay under test extends to the generator's own ORPort
//! ([`crate::fake`]), which answers CREATE2 for real and then sends
//! backward cells with no layer of its own, so only the relay's layer is
//! ever encrypted and removed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use oxit::crypto::cgo::CgoClientHop;
use oxit::crypto::ntor::{self, NtorClientState};
use oxit::crypto::ntor_v3::{self, NTOR3_CIRC_VERIFICATION, Ntor3ClientState};
use oxit::crypto::tor1::Tor1ClientLayer;
use oxit::proto::cell::{
    ChanBody, ChanCmd, CircId, Create2, Created2, Destroy, DestroyReason, HandshakeType,
};
use oxit::proto::channel::{ChanEvent, Channel, ExpectedPeer, IncomingCell, LinkKeys, TlsSession};
use oxit::proto::relay_msg::{
    self, Begin, BeginFlags, Extend2, Extended2, LinkSpec, RELAY_BODY_LEN, RELAY_DATA_MAX,
    RELAY_HEADER_LEN, RelayBody, RelayCmd, RelayFormat, RelayHeader, Sendme, SendmeDigest,
    StreamId,
};
use oxit::runtime::driver::{Event, Handler, Ops, Token};
use oxit::runtime::tls::TlsConn;

use crate::dest::{self, DestConn, DestStats, Mode, Request};
use crate::fake::FakeExit;
use crate::stats::{self, Counters, Json};

/// A relay as a hop: where it listens and its keys.
#[derive(Clone, Debug)]
pub struct Hop {
    pub addr: SocketAddr,
    pub rsa_id: [u8; 20],
    pub ed_id: [u8; 32],
    pub ntor_key: [u8; 32],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Downloads through the exit: the source is the generator's.
    BulkDown,
    /// Uploads through the exit to the generator's sink.
    BulkUp,
    /// Many circuits on many links, each downloading in turn.
    Circuits,
    /// Short streams (BEGIN, a ~50 KiB answer, END) at a target rate.
    Web,
    /// CREATE2 at a target rate, each circuit destroyed once created.
    Create,
    /// The relay as a middle: cells forwarded between two links.
    Middle,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::BulkDown => "bulk-down",
            Scenario::BulkUp => "bulk-up",
            Scenario::Circuits => "circuits",
            Scenario::Web => "web",
            Scenario::Create => "create",
            Scenario::Middle => "middle",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Hs {
    Ntor,
    NtorV3,
    /// Alternate ntor and ntor-v3.
    Mixed,
}

/// What the circuits to the relay under test negotiate (one hop: no
/// `--via`, and only the exit scenarios).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Crypto {
    /// tor1 with fixed windows: what the handshake flag says.
    Tor1,
    /// ntor-v3 asking for congestion control: tor1, SENDMEs every
    /// `sendme_inc` cells, no stream windows.
    Tor1Cc,
    /// ntor-v3 asking for congestion control and CGO (what a 0.4.9
    /// client asks an exit advertising Relay=5-6).
    Cgo,
}

impl Crypto {
    /// The ntor-v3 client message.
    fn ntor3_message(self) -> &'static [u8] {
        match self {
            Crypto::Tor1 => NTOR3_NO_EXTENSIONS,
            Crypto::Tor1Cc => &[1, 1, 0],
            Crypto::Cgo => &[2, 1, 0, 3, 2, 2, 6],
        }
    }
}

/// What a run does; the command line fills it.
#[derive(Clone, Debug)]
pub struct Cfg {
    pub scenario: Scenario,
    pub relay: Hop,
    pub via: Option<Hop>,
    pub links: usize,
    pub circuits: usize,
    pub streams: usize,
    pub bytes: u64,
    pub rate: f64,
    pub handshake: Hs,
    pub crypto: Crypto,
    pub sample_every: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub probes: usize,
    pub probe_interval: Duration,
    pub relay_pid: Option<u32>,
    pub source_addrs: Vec<Ipv4Addr>,
    pub names: bool,
    pub dest_port: u16,
}

/// An ntor-v3 client message with no extensions: its count byte, 0 (C tor
/// refuses an empty message).
const NTOR3_NO_EXTENSIONS: &[u8] = &[0];

/// Circuit window (tor-spec §7.3) and the SENDME steps.
const CIRC_WINDOW: i32 = 1000;
const CIRC_SENDME: u32 = 100;
const STREAM_WINDOW: i32 = 500;
const STREAM_SENDME: u32 = 50;
/// Plaintext a link may have queued in the driver before the generator
/// stops producing for it.
const LINK_QUEUE: usize = 256 * 1024;
/// Circuits being created at once during the build.
const BUILD_PENDING: usize = 128;
/// Storm circuits waiting for CREATED2 before new ones are skipped.
const STORM_PENDING: usize = 4096;
/// Prepared onionskins a storm cycles through.
const ONIONSKIN_POOL: usize = 64;

/// Forward cells to the fake exit (middle scenario): byte 0 says what the
/// cell is, bytes 1..3 are non-zero so the relay never takes the cell for
/// itself, the payload starts where relay data would.
pub const FAKE_CREDIT: u8 = 0xF0;
pub const FAKE_PING: u8 = 0xF1;
/// Stream ID of the fake exit's answers to a ping.
pub const FAKE_PONG_STREAM: u16 = 0xFFFF;
/// Stream ID of the fake exit's bulk cells.
pub const FAKE_BULK_STREAM: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Connect,
    Build,
    /// Circuits built, nothing flowing: the relay's idle memory.
    Idle,
    Warm,
    Measure,
    Done,
}

struct Link {
    token: Token,
    tls: TlsConn,
    chan: Option<Channel>,
    plain: Vec<u8>,
    cells: Vec<IncomingCell>,
    circ_ids: HashMap<u32, usize>,
    next_id: u32,
    open: bool,
    dead: bool,
    dirty: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Bulk,
    Probe,
    Storm,
    Web,
}

enum Pending {
    Ntor(NtorClientState),
    Ntor3(Ntor3ClientState),
    /// A pooled onionskin: the answer is not checked.
    Unchecked,
}

enum CState {
    Creating(Pending),
    Extending(NtorClientState),
    Open,
    Dead,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SState {
    Connecting,
    Open,
    /// Upload: everything sent, waiting for the sink's answer.
    Sent,
}

struct Stream {
    id: u16,
    req: Request,
    state: SState,
    got: u64,
    sent: u64,
    deliver: u32,
    pkg: i32,
    started: Instant,
    ack_ok: Option<bool>,
    ping_at: Option<Instant>,
    /// The exit's XOFF holds the upload until its XON.
    xoff: bool,
}

struct Circ {
    link: usize,
    id: u32,
    state: CState,
    layers: Vec<Tor1ClientLayer>,
    /// The one hop's CGO state, instead of `layers`.
    cgo: Option<Box<CgoClientHop>>,
    /// Congestion control was negotiated: circuit SENDMEs every this many
    /// DATA cells, no stream windows.
    cc_inc: Option<u32>,
    /// Tag of the last cell received (verified tor1, or CGO): what a v1
    /// SENDME echoes.
    last_tag: Option<SendmeDigest>,
    /// The last hop is the fake exit, which has no layer.
    null_last: bool,
    verify: bool,
    role: Role,
    streams: Vec<Stream>,
    next_stream: u16,
    deliver: u32,
    pkg: i32,
    started: Instant,
    seed: u32,
    fake_recv: u64,
    ping_at: Option<Instant>,
    next_ping: Instant,
    sending: bool,
}

impl Stream {
    fn may_upload(&self) -> bool {
        self.req.mode == Mode::Upload && self.state == SState::Open && self.pkg > 0 && !self.xoff
    }
}

impl Circ {
    /// The relay message format of the circuit's last hop.
    fn format(&self) -> RelayFormat {
        if self.cgo.is_some() {
            RelayFormat::V1
        } else {
            RelayFormat::V0
        }
    }
}

enum Kind {
    Link(usize),
    Dest,
    Fake,
}

/// The TLS exporter for the link handshake's AUTHENTICATE.
struct TlsRef<'a>(&'a TlsConn);

impl TlsSession for TlsRef<'_> {
    fn export_keying_material(&self, label: &[u8], context: &[u8]) -> Option<[u8; 32]> {
        self.0.export(label, context)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub struct Gen {
    cfg: Cfg,
    /// One identity per link (or fewer, shared round robin).
    link_keys: Vec<Arc<LinkKeys>>,
    tls_cfg: Arc<rustls::ClientConfig>,
    fake: Option<FakeExit>,
    conns: HashMap<Token, Kind>,
    links: Vec<Link>,
    circs: Vec<Circ>,
    free_circs: Vec<usize>,
    dests: HashMap<Token, DestConn>,
    pub dest_stats: DestStats,
    pub counters: Counters,
    hist_probe: Histogram<u64>,
    hist_stream: Histogram<u64>,
    hist_create: Histogram<u64>,
    phase: Phase,
    phase_at: Instant,
    scratch: Vec<u8>,
    sending: Vec<usize>,
    pending_build: usize,
    built: usize,
    built_probes: usize,
    storm_pending: usize,
    storm_skipped: u64,
    launched: u64,
    launch_t0: Instant,
    rr_link: usize,
    rr_circ: usize,
    web_circs: Vec<usize>,
    probe_circs: Vec<usize>,
    onionskins: Vec<(HandshakeType, Vec<u8>)>,
    stream_seq: u32,
    sampled_seq: u64,
    errors: Vec<String>,
    // Measurement.
    rss_base_kib: u64,
    rss_idle_kib: u64,
    relay_cpu0: (f64, f64),
    gen_cpu0: f64,
    t0: Instant,
    pub result: Option<String>,
}

impl Gen {
    pub fn new(
        cfg: Cfg,
        link_keys: Vec<Arc<LinkKeys>>,
        tls_cfg: Arc<rustls::ClientConfig>,
        fake: Option<FakeExit>,
    ) -> Self {
        let now = Instant::now();
        Gen {
            cfg,
            link_keys,
            tls_cfg,
            fake,
            conns: HashMap::new(),
            links: Vec::new(),
            circs: Vec::new(),
            free_circs: Vec::new(),
            dests: HashMap::new(),
            dest_stats: DestStats::default(),
            counters: Counters::default(),
            hist_probe: stats::histogram(),
            hist_stream: stats::histogram(),
            hist_create: stats::histogram(),
            phase: Phase::Connect,
            phase_at: now,
            scratch: Vec::new(),
            sending: Vec::new(),
            pending_build: 0,
            built: 0,
            built_probes: 0,
            storm_pending: 0,
            storm_skipped: 0,
            launched: 0,
            launch_t0: now,
            rr_link: 0,
            rr_circ: 0,
            web_circs: Vec::new(),
            probe_circs: Vec::new(),
            onionskins: Vec::new(),
            stream_seq: 0,
            sampled_seq: 0,
            errors: Vec::new(),
            rss_base_kib: 0,
            rss_idle_kib: 0,
            relay_cpu0: (0.0, 0.0),
            gen_cpu0: 0.0,
            t0: now,
            result: None,
        }
    }

    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Shortest wait for the driver: rate-driven work and probes need a
    /// fine clock, bulk transfers only completions.
    pub fn turn_timeout(&self) -> Duration {
        Duration::from_millis(1)
    }

    pub fn note_error(&mut self, e: String) {
        push_error(&mut self.errors, e);
    }

    /// Open the links: from several 127.0.0.x source addresses, since a
    /// relay limits unfinished handshakes per address.
    pub fn open_links(&mut self, ops: &mut dyn Ops) -> Result<(), String> {
        let first = self.cfg.via.as_ref().unwrap_or(&self.cfg.relay).addr;
        for i in 0..self.cfg.links {
            let from = self.cfg.source_addrs[i % self.cfg.source_addrs.len()];
            let fd = connect_from(first, IpAddr::V4(from))
                .map_err(|e| format!("connecting to {first} from {from}: {e}"))?;
            let token = ops
                .add_conn(fd)
                .map_err(|e| format!("adding link {i}: {e}"))?;
            let mut tls = TlsConn::client(&self.tls_cfg, "www.oxitload.com")
                .map_err(|e| format!("TLS client: {e}"))?;
            if let Some(out) = ops.out_buf(token) {
                tls.write_tls_into(out);
            }
            self.conns.insert(token, Kind::Link(self.links.len()));
            self.links.push(Link {
                token,
                tls,
                chan: None,
                plain: Vec::new(),
                cells: Vec::new(),
                circ_ids: HashMap::new(),
                next_id: 0,
                open: false,
                dead: false,
                dirty: false,
            });
        }
        Ok(())
    }

    fn first_hop(&self) -> &Hop {
        self.cfg.via.as_ref().unwrap_or(&self.cfg.relay)
    }

    /// The hop after the first one, if the path has two.
    fn second_hop(&self) -> Option<Hop> {
        if self.cfg.scenario == Scenario::Middle {
            return self.fake.as_ref().map(|f| f.hop());
        }
        self.cfg.via.as_ref().map(|_| self.cfg.relay.clone())
    }

    // ----- links -----

    fn on_link_recv(&mut self, li: usize, data: &[u8], now: Instant) {
        let Some(link) = self.links.get_mut(li) else {
            return;
        };
        if link.dead {
            return;
        }
        if let Err(e) = link.tls.feed(data, &mut link.plain) {
            link.dead = true;
            let msg = format!("link {li}: TLS: {e}");
            push_error(&mut self.errors, msg);
            return;
        }
        link.dirty = true;
        if link.chan.is_none() && !link.tls.is_handshaking() {
            let Some(cert) = link.tls.peer_cert_der().map(<[u8]>::to_vec) else {
                link.dead = true;
                return;
            };
            let hop = self.cfg.via.as_ref().unwrap_or(&self.cfg.relay);
            let expect = ExpectedPeer {
                rsa_id: hop.rsa_id,
                ed_id: Some(hop.ed_id),
            };
            let keys = self.link_keys[li % self.link_keys.len()].clone();
            link.chan = Some(Channel::new_initiator(
                keys,
                &cert,
                hop.addr.ip(),
                expect,
                now,
                &mut rand::rng(),
            ));
        }
        let Some(chan) = link.chan.as_mut() else {
            return;
        };
        if !link.plain.is_empty() {
            let res = chan.handle_input(
                &link.plain,
                now,
                unix_now(),
                &TlsRef(&link.tls),
                &mut rand::rng(),
                &mut link.cells,
            );
            link.plain.clear();
            if let Err(e) = res {
                link.dead = true;
                let msg = format!("link {li}: {e}");
                push_error(&mut self.errors, msg);
            }
        }
        while let Some(ev) = chan.poll_event() {
            match ev {
                ChanEvent::Opened { .. } => link.open = true,
                ChanEvent::Closed(e) => {
                    link.dead = true;
                    let msg = format!("link {li} closed: {e}");
                    push_error(&mut self.errors, msg);
                    break;
                }
            }
        }
        let mut cells = std::mem::take(&mut self.links[li].cells);
        for cell in cells.drain(..) {
            self.on_cell(li, cell, now);
        }
        self.links[li].cells = cells;
    }

    fn flush_link(&mut self, li: usize, ops: &mut dyn Ops) {
        let Some(link) = self.links.get_mut(li) else {
            return;
        };
        link.dirty = false;
        self.scratch.clear();
        if let Some(chan) = link.chan.as_mut() {
            chan.take_output(&mut self.scratch);
        }
        match ops.out_buf(link.token) {
            Some(out) => link.tls.encrypt_into(&self.scratch, out),
            None if !self.scratch.is_empty() => link.tls.write_plain(&self.scratch),
            None => {}
        }
        // Records of our own once the link is open, as the relay does. A
        // failed handover leaves the session gone: the next read fails the
        // link, which the run reports.
        if link.chan.as_ref().is_some_and(|c| c.is_open()) && !link.tls.handed_over() {
            let _ = link.tls.hand_over();
        }
    }

    fn send_cell(&mut self, li: usize, id: u32, cmd: ChanCmd, body: &[u8; RELAY_BODY_LEN]) {
        let Some(link) = self.links.get_mut(li) else {
            return;
        };
        if let Some(chan) = link.chan.as_mut()
            && chan.send_cell(CircId::new(id), cmd, body).is_ok()
        {
            link.dirty = true;
        }
    }

    fn send_msg<M: ChanBody>(&mut self, li: usize, id: u32, msg: &M) {
        let mut v = Vec::new();
        if msg.encode_onto(&mut v).is_err() {
            return;
        }
        let mut body = [0u8; RELAY_BODY_LEN];
        let n = v.len().min(RELAY_BODY_LEN);
        body[..n].copy_from_slice(&v[..n]);
        self.send_cell(li, id, M::CMD, &body);
    }

    // ----- circuits -----

    fn alloc_circ(&mut self, c: Circ) -> usize {
        if let Some(i) = self.free_circs.pop() {
            self.circs[i] = c;
            i
        } else {
            self.circs.push(c);
            self.circs.len() - 1
        }
    }

    fn kill_circ(&mut self, ci: usize) {
        let Some(c) = self.circs.get_mut(ci) else {
            return;
        };
        if matches!(c.state, CState::Dead) {
            return;
        }
        c.state = CState::Dead;
        c.streams.clear();
        c.layers.clear();
        let (li, id) = (c.link, c.id);
        if let Some(l) = self.links.get_mut(li) {
            l.circ_ids.remove(&id);
        }
        self.free_circs.push(ci);
    }

    /// The next open link, round robin.
    fn pick_link(&mut self) -> Option<usize> {
        let n = self.links.len();
        for _ in 0..n {
            self.rr_link = (self.rr_link + 1) % n;
            let l = &self.links[self.rr_link];
            if l.open && !l.dead {
                return Some(self.rr_link);
            }
        }
        None
    }

    fn handshake_for(&self, n: u64) -> HandshakeType {
        if self.cfg.crypto != Crypto::Tor1 {
            return HandshakeType::NTOR_V3;
        }
        match self.cfg.handshake {
            Hs::Ntor => HandshakeType::NTOR,
            Hs::NtorV3 => HandshakeType::NTOR_V3,
            Hs::Mixed if n.is_multiple_of(2) => HandshakeType::NTOR,
            Hs::Mixed => HandshakeType::NTOR_V3,
        }
    }

    /// Start a circuit with CREATE2 to the first hop.
    fn start_circ(&mut self, role: Role, now: Instant) -> Option<usize> {
        let li = self.pick_link()?;
        let hop = self.first_hop().clone();
        let n = self.launched;
        self.launched += 1;
        // Probes are always verified; the others one in `sample_every`.
        let verify = role != Role::Probe && self.cfg.sample_every > 0 && {
            self.sampled_seq += 1;
            (self.sampled_seq - 1).is_multiple_of(self.cfg.sample_every as u64)
        };
        let htype = self.handshake_for(n);
        let (pending, hdata) = if role == Role::Storm && !verify {
            let skin = self.onionskin(htype, &hop)?;
            (Pending::Unchecked, skin)
        } else {
            client_create(htype, &hop, self.cfg.crypto.ntor3_message())?
        };
        let create = Create2::new(htype, hdata).ok()?;
        let link = &mut self.links[li];
        link.next_id = link.next_id.wrapping_add(1) & 0x7fff_ffff;
        let id = 0x8000_0000 | link.next_id.max(1);
        let seed = rand::random::<u32>();
        let ci = self.alloc_circ(Circ {
            link: li,
            id,
            state: CState::Creating(pending),
            layers: Vec::new(),
            cgo: None,
            cc_inc: None,
            last_tag: None,
            null_last: false,
            verify: verify || role == Role::Probe,
            role,
            streams: Vec::new(),
            next_stream: 0,
            deliver: 0,
            pkg: CIRC_WINDOW,
            started: now,
            seed,
            fake_recv: 0,
            ping_at: None,
            next_ping: now,
            sending: false,
        });
        self.links[li].circ_ids.insert(id, ci);
        if role == Role::Probe {
            self.probe_circs.push(ci);
        }
        self.send_msg(li, id, &create);
        Some(ci)
    }

    /// A prepared onionskin for a storm (the client's half is not kept:
    /// the answer to it is not checked).
    fn onionskin(&mut self, htype: HandshakeType, hop: &Hop) -> Option<Vec<u8>> {
        if self.onionskins.len() < ONIONSKIN_POOL * 2 {
            for _ in 0..ONIONSKIN_POOL {
                for t in [HandshakeType::NTOR, HandshakeType::NTOR_V3] {
                    let (_, h) = client_create(t, hop, NTOR3_NO_EXTENSIONS)?;
                    self.onionskins.push((t, h));
                }
            }
        }
        let n = self.launched as usize;
        let pick = (0..self.onionskins.len())
            .map(|k| (n + k) % self.onionskins.len())
            .find(|&k| self.onionskins[k].0 == htype)?;
        Some(self.onionskins[pick].1.clone())
    }

    fn on_cell(&mut self, li: usize, cell: IncomingCell, now: Instant) {
        let Some(&ci) = self.links[li].circ_ids.get(&cell.circ_id.get()) else {
            return;
        };
        match cell.cmd {
            ChanCmd::CREATED2 => self.on_created(ci, &cell.body, now),
            ChanCmd::DESTROY => {
                let reason = Destroy::decode(&cell.body)
                    .map(|d| d.reason().get())
                    .unwrap_or(0);
                if self.circs[ci].role != Role::Storm
                    || !matches!(self.circs[ci].state, CState::Dead)
                {
                    self.counters.circuits_failed += 1;
                    if matches!(
                        self.circs[ci].state,
                        CState::Creating(_) | CState::Extending(_)
                    ) {
                        self.build_done(ci, false);
                    }
                    let msg = format!("circuit destroyed by the relay, reason {reason}");
                    self.note_error(msg);
                }
                self.kill_circ(ci);
            }
            ChanCmd::RELAY | ChanCmd::RELAY_EARLY => {
                let mut body = cell.body;
                self.on_relay(ci, &mut body, now);
            }
            _ => {}
        }
    }

    fn build_done(&mut self, ci: usize, ok: bool) {
        let role = self.circs[ci].role;
        if role == Role::Storm {
            self.storm_pending = self.storm_pending.saturating_sub(1);
            return;
        }
        self.pending_build = self.pending_build.saturating_sub(1);
        if ok {
            self.built += 1;
            if role == Role::Probe {
                self.built_probes += 1;
            }
            if role == Role::Web {
                self.web_circs.push(ci);
            }
        }
    }

    fn on_created(&mut self, ci: usize, body: &[u8; RELAY_BODY_LEN], now: Instant) {
        let Ok(reply) = Created2::decode(body) else {
            self.counters.protocol_errors += 1;
            return;
        };
        let c = &mut self.circs[ci];
        let CState::Creating(_) = c.state else {
            self.counters.protocol_errors += 1;
            return;
        };
        let CState::Creating(pending) = std::mem::replace(&mut c.state, CState::Open) else {
            return;
        };
        let mut cgo_keys = None;
        let mut cc_reply = None;
        let keys = match pending {
            Pending::Unchecked => None,
            Pending::Ntor(st) => match ntor::client_finish(st, reply.hdata()) {
                Ok(k) => Some(k),
                Err(e) => {
                    self.counters.protocol_errors += 1;
                    self.note_error(format!("CREATED2 (ntor): {e}"));
                    self.build_done(ci, false);
                    self.kill_circ(ci);
                    return;
                }
            },
            Pending::Ntor3(st) => {
                match ntor_v3::client_finish_all(st, reply.hdata(), NTOR3_CIRC_VERIFICATION) {
                    Ok((msg, k, cgo)) => {
                        cc_reply = Some(msg);
                        cgo_keys = Some(cgo);
                        Some(k)
                    }
                    Err(e) => {
                        self.counters.protocol_errors += 1;
                        self.note_error(format!("CREATED2 (ntor-v3): {e}"));
                        self.build_done(ci, false);
                        self.kill_circ(ci);
                        return;
                    }
                }
            }
        };
        let c = &mut self.circs[ci];
        if c.role == Role::Storm {
            let us = now.duration_since(c.started).as_micros() as u64;
            let _ = self.hist_create.record(us.max(1));
            self.counters.circuits_created += 1;
            let (li, id) = (c.link, c.id);
            self.send_msg(li, id, &Destroy::new(DestroyReason::FINISHED));
            self.build_done(ci, true);
            self.kill_circ(ci);
            return;
        }
        if self.cfg.crypto != Crypto::Tor1 {
            // The reply grants CC with its sendme_inc, or the run is void.
            match cc_reply.as_deref() {
                Some(&[1, 2, 1, inc]) if inc > 0 => c.cc_inc = Some(u32::from(inc)),
                other => {
                    self.counters.protocol_errors += 1;
                    self.note_error(format!(
                        "the relay did not grant congestion control: ntor-v3 reply {other:?}"
                    ));
                    self.build_done(ci, false);
                    self.kill_circ(ci);
                    return;
                }
            }
        }
        match (self.cfg.crypto, keys, cgo_keys) {
            (Crypto::Cgo, _, Some(g)) => c.cgo = Some(Box::new(CgoClientHop::new(&g.0))),
            (_, Some(k), _) => c.layers.push(Tor1ClientLayer::new(&k.tor1)),
            _ => {}
        }
        match self.second_hop() {
            Some(hop) => self.extend(ci, &hop),
            None => self.circ_opened(ci, now),
        }
    }

    fn extend(&mut self, ci: usize, hop: &Hop) {
        let SocketAddr::V4(v4) = hop.addr else {
            self.note_error("only IPv4 hops can be extended to".into());
            return;
        };
        let (st, hdata) = ntor::client_create(&mut rand::rng(), &hop.rsa_id, &hop.ntor_key);
        let ext = Extend2::new(
            vec![
                LinkSpec::Ipv4(v4),
                LinkSpec::LegacyId(hop.rsa_id),
                LinkSpec::Ed25519Id(hop.ed_id),
            ],
            HandshakeType::NTOR,
            hdata.to_vec(),
        );
        let mut body = [0u8; RELAY_BODY_LEN];
        if relay_msg::encode_relay_msg(StreamId::CIRCUIT, &ext, &mut rand::rng(), &mut body)
            .is_err()
        {
            return;
        }
        let c = &mut self.circs[ci];
        c.state = CState::Extending(st);
        let Some(first) = c.layers.first_mut() else {
            return;
        };
        first.originate_forward(&mut body);
        let (li, id) = (c.link, c.id);
        self.send_cell(li, id, ChanCmd::RELAY_EARLY, &body);
    }

    fn circ_opened(&mut self, ci: usize, now: Instant) {
        self.counters.circuits_created += 1;
        self.build_done(ci, true);
        let (role, null_last) = (self.circs[ci].role, self.circs[ci].null_last);
        if role == Role::Probe && !null_last {
            self.open_stream(ci, Mode::Echo, 0, now);
        }
        // Bulk circuits start their streams when the warm-up starts.
        if self.phase >= Phase::Warm && role == Role::Bulk {
            self.start_bulk(ci, now);
        }
    }

    /// Send a relay message to the last hop.
    fn send_relay(&mut self, ci: usize, cmd: RelayCmd, stream: u16, data: &[u8]) {
        let mut body = [0u8; RELAY_BODY_LEN];
        let format = self.circs[ci].format();
        if format
            .encode_data(
                cmd,
                StreamId::new(stream),
                data,
                &mut rand::rng(),
                &mut body,
            )
            .is_err()
        {
            return;
        }
        self.send_body(ci, &mut body);
    }

    /// A circuit SENDME: v1 with the last cell's tag when the circuit
    /// knows it (CC circuits), else v0.
    fn send_circuit_sendme(&mut self, ci: usize) {
        let c = &self.circs[ci];
        let (format, tag) = (c.format(), c.last_tag.filter(|_| c.cc_inc.is_some()));
        let mut body = [0u8; RELAY_BODY_LEN];
        let ok = match tag {
            Some(tag) => format.encode_msg(
                StreamId::CIRCUIT,
                &Sendme::V1 { tag },
                &mut rand::rng(),
                &mut body,
            ),
            None => format.encode_data(
                RelayCmd::SENDME,
                StreamId::CIRCUIT,
                &[],
                &mut rand::rng(),
                &mut body,
            ),
        };
        if ok.is_ok() {
            self.send_body(ci, &mut body);
        }
    }

    /// Originate at the last hop and add the layers of the hops before it.
    fn send_body(&mut self, ci: usize, body: &mut [u8; RELAY_BODY_LEN]) {
        let c = &mut self.circs[ci];
        if let Some(g) = c.cgo.as_mut() {
            g.originate_forward(ChanCmd::RELAY.get(), body);
            let (li, id) = (c.link, c.id);
            self.counters.cells_out += 1;
            self.send_cell(li, id, ChanCmd::RELAY, body);
            return;
        }
        let Some((last, before)) = c.layers.split_last_mut() else {
            return;
        };
        last.originate_forward(body);
        for l in before.iter_mut().rev() {
            l.encrypt_forward(body);
        }
        let (li, id) = (c.link, c.id);
        self.counters.cells_out += 1;
        self.send_cell(li, id, ChanCmd::RELAY, body);
    }

    /// A cell for the fake exit: only the relay's layer is added.
    fn send_fake(&mut self, ci: usize, tag: u8, payload: &[u8]) {
        let mut body = [0u8; RELAY_BODY_LEN];
        body[0] = tag;
        body[1] = 0xFF;
        body[2] = 0xFF;
        let n = payload.len().min(RELAY_DATA_MAX);
        body[RELAY_HEADER_LEN..RELAY_HEADER_LEN + n].copy_from_slice(&payload[..n]);
        let c = &mut self.circs[ci];
        let Some(first) = c.layers.first_mut() else {
            return;
        };
        first.encrypt_forward(&mut body);
        let (li, id) = (c.link, c.id);
        self.counters.cells_out += 1;
        self.send_cell(li, id, ChanCmd::RELAY, &body);
    }

    fn on_relay(&mut self, ci: usize, body: &mut [u8; RELAY_BODY_LEN], now: Instant) {
        self.counters.cells_in += 1;
        let c = &mut self.circs[ci];
        match &c.state {
            CState::Extending(_) => {
                let Some(first) = c.layers.first_mut() else {
                    return;
                };
                if first.decrypt_backward(body).is_none() {
                    self.counters.protocol_errors += 1;
                    return;
                }
                let CState::Extending(st) = std::mem::replace(&mut c.state, CState::Open) else {
                    return;
                };
                let Ok((hdr, data)) = relay_msg::parse_relay_body(body) else {
                    return;
                };
                if hdr.cmd != RelayCmd::EXTENDED2 {
                    self.note_error(format!(
                        "extending: got relay command {} instead of EXTENDED2",
                        hdr.cmd.get()
                    ));
                    self.counters.circuits_failed += 1;
                    self.build_done(ci, false);
                    self.kill_circ(ci);
                    return;
                }
                let keys = Extended2::decode(data)
                    .ok()
                    .and_then(|r| ntor::client_finish(st, r.hdata()).ok());
                let Some(keys) = keys else {
                    self.counters.protocol_errors += 1;
                    self.build_done(ci, false);
                    self.kill_circ(ci);
                    return;
                };
                if self.cfg.scenario == Scenario::Middle {
                    // The fake exit adds no layer of its own.
                    c.null_last = true;
                } else {
                    c.layers.push(Tor1ClientLayer::new(&keys.tor1));
                }
                self.circ_opened(ci, now);
                return;
            }
            CState::Open => {}
            _ => return,
        }
        // The fake exit's bulk cells on an unverified circuit are only
        // counted: nothing else travels on a bulk circuit there, and
        // removing the relay's layer would cost the generator as much AES
        // as the relay spends adding it.
        if c.null_last && !c.verify && c.role == Role::Bulk {
            self.on_fake_bulk_counted(ci);
            return;
        }
        // CGO: verified circuits check the tag; the others trust that the
        // one hop sent every cell (no ET, no POLYVAL over the cell).
        if let Some(g) = c.cgo.as_mut() {
            let tag = if c.verify {
                g.decrypt_backward(ChanCmd::RELAY.get(), body)
            } else {
                Some(g.decrypt_backward_trusted(body))
            };
            let Some(tag) = tag else {
                self.counters.protocol_errors += 1;
                return;
            };
            c.last_tag = Some(tag.into());
            let Ok((cmd, sid, data)) = RelayFormat::V1.parse(body) else {
                self.counters.protocol_errors += 1;
                return;
            };
            self.on_exit_cell(ci, cmd, sid.get(), data, now);
            return;
        }
        // Peel. Verified circuits check every digest; the others only
        // remove AES and trust Recognized.
        if c.verify && !c.null_last {
            let mut from = None;
            for (i, l) in c.layers.iter_mut().enumerate() {
                if let Some(tag) = l.decrypt_backward(body) {
                    c.last_tag = Some(tag.into());
                    from = Some(i);
                    break;
                }
            }
            if from != Some(c.layers.len().saturating_sub(1)) {
                self.counters.protocol_errors += 1;
                return;
            }
        } else {
            for l in c.layers.iter_mut() {
                l.peel_backward_unverified(body);
            }
            if body[1] != 0 || body[2] != 0 {
                self.counters.protocol_errors += 1;
                return;
            }
        }
        let hdr = RelayHeader::unpack(body);
        let len = usize::from(hdr.length).min(RELAY_DATA_MAX);
        let data = &body[RELAY_HEADER_LEN..RELAY_HEADER_LEN + len];
        if c.null_last {
            self.on_fake_cell(ci, hdr, data, now);
        } else {
            self.on_exit_cell(ci, hdr.cmd, hdr.stream_id.get(), data, now);
        }
    }

    /// A bulk cell from the fake exit, counted without decryption: its
    /// length is always a full cell's data.
    fn on_fake_bulk_counted(&mut self, ci: usize) {
        let c = &mut self.circs[ci];
        c.fake_recv += 1;
        self.counters.bytes_down += RELAY_DATA_MAX as u64;
        c.deliver += 1;
        if c.deliver >= CIRC_SENDME {
            c.deliver = 0;
            self.send_fake(ci, FAKE_CREDIT, &credit(CIRC_SENDME, 0));
        }
    }

    fn on_fake_cell(&mut self, ci: usize, hdr: RelayHeader, data: &[u8], now: Instant) {
        let c = &mut self.circs[ci];
        if hdr.stream_id.get() == FAKE_PONG_STREAM {
            if let Some(at) = c.ping_at.take() {
                let _ = self
                    .hist_probe
                    .record((now.duration_since(at).as_micros() as u64).max(1));
            }
            return;
        }
        if c.verify {
            self.counters.bytes_checked += data.len() as u64;
            if !dest::matches_pattern(c.seed, c.fake_recv * RELAY_DATA_MAX as u64, data) {
                self.counters.content_errors += 1;
            }
        }
        c.fake_recv += 1;
        self.counters.bytes_down += data.len() as u64;
        c.deliver += 1;
        if c.deliver >= CIRC_SENDME {
            c.deliver = 0;
            self.send_fake(ci, FAKE_CREDIT, &credit(CIRC_SENDME, 0));
        }
    }

    fn on_exit_cell(&mut self, ci: usize, cmd: RelayCmd, sid: u16, data: &[u8], now: Instant) {
        let c = &mut self.circs[ci];
        match cmd {
            RelayCmd::SENDME if sid == 0 => {
                c.pkg += c.cc_inc.unwrap_or(CIRC_SENDME) as i32;
                self.wake_sending(ci);
            }
            RelayCmd::XOFF | RelayCmd::XON => {
                if let Some(s) = c.streams.iter_mut().find(|s| s.id == sid) {
                    s.xoff = cmd == RelayCmd::XOFF;
                }
                self.wake_sending(ci);
            }
            RelayCmd::SENDME => {
                if let Some(s) = c.streams.iter_mut().find(|s| s.id == sid) {
                    s.pkg += STREAM_SENDME as i32;
                }
                self.wake_sending(ci);
            }
            RelayCmd::CONNECTED => {
                let Some(s) = c.streams.iter_mut().find(|s| s.id == sid) else {
                    return;
                };
                s.state = SState::Open;
                // The request is a DATA cell: it uses both windows.
                s.pkg -= 1;
                let req = s.req;
                c.pkg -= 1;
                self.send_relay(ci, RelayCmd::DATA, sid, &req.encode());
                if req.mode == Mode::Upload {
                    self.wake_sending(ci);
                } else if req.mode == Mode::Echo {
                    self.circs[ci].next_ping = now;
                }
            }
            RelayCmd::DATA => {
                let verify = c.verify;
                let cc = c.cc_inc.is_some();
                c.deliver += 1;
                let circ_sendme = c.deliver >= c.cc_inc.unwrap_or(CIRC_SENDME);
                if circ_sendme {
                    c.deliver = 0;
                }
                let Some(s) = c.streams.iter_mut().find(|s| s.id == sid) else {
                    self.counters.protocol_errors += 1;
                    return;
                };
                s.deliver += 1;
                // Congestion-controlled circuits have no stream windows.
                let stream_sendme = !cc && s.deliver >= STREAM_SENDME;
                if stream_sendme {
                    s.deliver = 0;
                }
                match s.req.mode {
                    Mode::Download => {
                        if verify {
                            self.counters.bytes_checked += data.len() as u64;
                            if !dest::matches_pattern(s.req.seed, s.got, data) {
                                self.counters.content_errors += 1;
                            }
                        }
                        s.got += data.len() as u64;
                        self.counters.bytes_down += data.len() as u64;
                    }
                    Mode::Upload => {
                        s.ack_ok = Some(data.starts_with(dest::ACK_DONE));
                    }
                    Mode::Echo => {
                        if let Some(at) = s.ping_at.take() {
                            let _ = self
                                .hist_probe
                                .record((now.duration_since(at).as_micros() as u64).max(1));
                        }
                    }
                }
                if stream_sendme {
                    self.send_relay(ci, RelayCmd::SENDME, sid, &[]);
                }
                if circ_sendme {
                    self.send_circuit_sendme(ci);
                }
            }
            RelayCmd::END => {
                let Some(pos) = c.streams.iter().position(|s| s.id == sid) else {
                    return;
                };
                let s = c.streams.swap_remove(pos);
                let ok = match s.req.mode {
                    Mode::Download => s.got == s.req.size,
                    Mode::Upload => s.ack_ok == Some(true),
                    Mode::Echo => false,
                };
                let reason = data.first().copied().unwrap_or(0);
                if s.req.mode == Mode::Echo {
                    // Asked again shortly (see the Idle phase).
                    c.next_ping = now + Duration::from_millis(500);
                    if self.phase < Phase::Warm {
                        return;
                    }
                }
                if ok {
                    self.counters.streams_done += 1;
                    let us = now.duration_since(s.started).as_micros() as u64;
                    let _ = self.hist_stream.record(us.max(1));
                } else {
                    self.counters.streams_failed += 1;
                    let msg = format!(
                        "stream ended (reason {reason}) after {} of {} bytes ({:?})",
                        s.got.max(s.sent),
                        s.req.size,
                        s.req.mode
                    );
                    push_error(&mut self.errors, msg);
                }
                let role = c.role;
                if role == Role::Bulk && self.phase >= Phase::Warm && self.phase < Phase::Done {
                    self.start_bulk(ci, now);
                }
            }
            _ => {}
        }
    }

    fn wake_sending(&mut self, ci: usize) {
        let c = &mut self.circs[ci];
        if !c.sending
            && c.streams
                .iter()
                .any(|s| s.req.mode == Mode::Upload && s.state == SState::Open)
        {
            c.sending = true;
            self.sending.push(ci);
        }
    }

    fn open_stream(&mut self, ci: usize, mode: Mode, size: u64, now: Instant) {
        self.stream_seq = self.stream_seq.wrapping_add(1);
        let seq = self.stream_seq;
        let port = self.cfg.dest_port;
        let names = self.cfg.names && mode != Mode::Echo;
        let c = &mut self.circs[ci];
        let pkg = if c.cc_inc.is_some() {
            i32::MAX / 2
        } else {
            STREAM_WINDOW
        };
        c.next_stream = c.next_stream.wrapping_add(1).max(1);
        let sid = c.next_stream;
        let req = Request {
            mode,
            check: c.verify,
            seed: rand::random::<u32>(),
            size,
        };
        c.streams.push(Stream {
            id: sid,
            req,
            state: SState::Connecting,
            got: 0,
            sent: 0,
            deliver: 0,
            pkg,
            started: now,
            ack_ok: None,
            ping_at: None,
            xoff: false,
        });
        let host = if names {
            format!("w{seq}.load.test")
        } else {
            "127.0.0.1".to_owned()
        };
        let Ok(begin) = Begin::new(&host, port, BeginFlags::new(0)) else {
            return;
        };
        let mut body = [0u8; RELAY_BODY_LEN];
        let format = self.circs[ci].format();
        if format
            .encode_msg(StreamId::new(sid), &begin, &mut rand::rng(), &mut body)
            .is_err()
        {
            return;
        }
        self.send_body(ci, &mut body);
    }

    fn start_bulk(&mut self, ci: usize, now: Instant) {
        if self.cfg.scenario == Scenario::Middle {
            let seed = self.circs[ci].seed;
            self.send_fake(ci, FAKE_CREDIT, &credit(CIRC_WINDOW as u32, seed));
            return;
        }
        let mode = if self.cfg.scenario == Scenario::BulkUp {
            Mode::Upload
        } else {
            Mode::Download
        };
        let want = self.cfg.streams.max(1);
        while self.circs[ci].streams.len() < want {
            self.open_stream(ci, mode, self.cfg.bytes, now);
        }
    }

    /// Upload: package DATA cells within the circuit and stream windows
    /// while the link has room.
    fn pump_uploads(&mut self, ops: &mut dyn Ops) {
        let mut keep = Vec::new();
        let list = std::mem::take(&mut self.sending);
        for ci in list {
            let li = self.circs[ci].link;
            let token = self.links[li].token;
            let mut blocked_by_link = false;
            loop {
                if ops.queued(token) >= LINK_QUEUE {
                    blocked_by_link = true;
                    break;
                }
                let c = &mut self.circs[ci];
                if c.pkg <= 0 || !matches!(c.state, CState::Open) {
                    break;
                }
                let max = c.format().data_max() as u64;
                let Some(s) = c.streams.iter_mut().find(|s| s.may_upload()) else {
                    break;
                };
                let n = (s.req.size - s.sent).min(max) as usize;
                let chunk = dest::pattern_at(s.req.seed, s.sent, n);
                let sid = s.id;
                s.sent += chunk.len() as u64;
                s.pkg -= 1;
                if s.sent >= s.req.size {
                    s.state = SState::Sent;
                }
                c.pkg -= 1;
                self.counters.bytes_up += chunk.len() as u64;
                self.send_relay(ci, RelayCmd::DATA, sid, chunk);
                // Flush every few cells so the queue check sees them.
                if self.counters.cells_out.is_multiple_of(32) {
                    self.flush_link(li, ops);
                }
            }
            let c = &mut self.circs[ci];
            let more = matches!(c.state, CState::Open) && c.streams.iter().any(Stream::may_upload);
            // Blocked by the link: try again next turn. Blocked by a window:
            // the SENDME that opens it wakes the circuit.
            if more && blocked_by_link {
                keep.push(ci);
            } else {
                c.sending = false;
            }
        }
        self.sending = keep;
    }

    fn send_probes(&mut self, now: Instant) {
        for i in 0..self.probe_circs.len() {
            let ci = self.probe_circs[i];
            let c = &mut self.circs[ci];
            if c.role != Role::Probe || !matches!(c.state, CState::Open) || c.next_ping > now {
                continue;
            }
            if c.null_last {
                if c.ping_at.is_none() {
                    c.ping_at = Some(now);
                    c.next_ping = now + self.cfg.probe_interval;
                    self.send_fake(ci, FAKE_PING, &[0; 8]);
                }
                continue;
            }
            if c.streams.is_empty() {
                c.next_ping = now + Duration::from_millis(500);
                self.open_stream(ci, Mode::Echo, 0, now);
                continue;
            }
            let Some(s) = c
                .streams
                .iter_mut()
                .find(|s| s.req.mode == Mode::Echo && s.state == SState::Open)
            else {
                continue;
            };
            if s.ping_at.is_some() {
                continue;
            }
            s.ping_at = Some(now);
            let sid = s.id;
            c.next_ping = now + self.cfg.probe_interval;
            self.send_relay(ci, RelayCmd::DATA, sid, b"ping-ping");
        }
    }

    // ----- phases -----

    fn relay_rss(&self) -> u64 {
        self.cfg
            .relay_pid
            .map_or(0, |p| stats::proc_status_kib(p, "VmRSS"))
    }

    fn step(&mut self, now: Instant, ops: &mut dyn Ops) {
        match self.phase {
            Phase::Connect => {
                let open = self.links.iter().filter(|l| l.open).count();
                let dead = self.links.iter().filter(|l| l.dead).count();
                if open + dead == self.links.len() {
                    if open == 0 {
                        self.note_error("no link opened".into());
                        self.finish(now);
                        return;
                    }
                    self.rss_base_kib = self.relay_rss();
                    self.set_phase(Phase::Build, now);
                } else if now.duration_since(self.phase_at) > Duration::from_secs(60) {
                    self.note_error(format!(
                        "only {open} of {} links opened in 60 s",
                        self.links.len()
                    ));
                    self.finish(now);
                }
            }
            Phase::Build => {
                let probes = if self.cfg.probes > 0 {
                    self.cfg.probes
                } else {
                    0
                };
                let bulk = match self.cfg.scenario {
                    Scenario::Create => 0,
                    _ => self.cfg.circuits,
                };
                let target = probes + bulk;
                while self.launched < target as u64 && self.pending_build < BUILD_PENDING {
                    let role = if (self.launched as usize) < probes {
                        Role::Probe
                    } else if self.cfg.scenario == Scenario::Web {
                        Role::Web
                    } else {
                        Role::Bulk
                    };
                    if self.start_circ(role, now).is_none() {
                        break;
                    }
                    self.pending_build += 1;
                }
                if self.launched >= target as u64 && self.pending_build == 0 {
                    if self.built < target {
                        self.note_error(format!("{} of {target} circuits built", self.built));
                    }
                    self.set_phase(Phase::Idle, now);
                } else if now.duration_since(self.phase_at) > Duration::from_secs(300) {
                    self.note_error(format!(
                        "circuit build took over 300 s ({} built)",
                        self.built
                    ));
                    self.finish(now);
                }
            }
            Phase::Idle => {
                // A relay may refuse exit streams for a while after it
                // starts (C tor until it has built its descriptor: END
                // EXITPOLICY): the probes' echo streams must be open first.
                let probes_ready = self.circs.iter().all(|c| {
                    c.role != Role::Probe
                        || c.null_last
                        || !matches!(c.state, CState::Open)
                        || c.streams.iter().any(|s| s.state == SState::Open)
                });
                if !probes_ready && now.duration_since(self.phase_at) > Duration::from_secs(60) {
                    self.note_error("the relay refused exit streams for 60 s".into());
                    self.finish(now);
                    return;
                }
                if probes_ready && now.duration_since(self.phase_at) >= Duration::from_secs(1) {
                    self.rss_idle_kib = self.relay_rss();
                    self.set_phase(Phase::Warm, now);
                    self.launch_t0 = now;
                    self.launched = 0;
                    for ci in 0..self.circs.len() {
                        if self.circs[ci].role == Role::Bulk
                            && matches!(self.circs[ci].state, CState::Open)
                        {
                            self.start_bulk(ci, now);
                        }
                    }
                }
            }
            Phase::Warm => {
                if now.duration_since(self.phase_at) >= self.cfg.warmup {
                    self.set_phase(Phase::Measure, now);
                    self.counters.reset();
                    self.hist_probe.reset();
                    self.hist_stream.reset();
                    self.hist_create.reset();
                    self.storm_skipped = 0;
                    self.relay_cpu0 = self.cfg.relay_pid.map_or((0.0, 0.0), stats::proc_cpu);
                    self.gen_cpu0 = stats::self_cpu();
                    self.t0 = now;
                }
            }
            Phase::Measure => {
                if now.duration_since(self.phase_at) >= self.cfg.duration {
                    self.finish(now);
                }
            }
            Phase::Done => {}
        }
        if matches!(self.phase, Phase::Idle | Phase::Warm | Phase::Measure) {
            self.send_probes(now);
        }
        if matches!(self.phase, Phase::Warm | Phase::Measure) {
            match self.cfg.scenario {
                Scenario::Web => self.launch_web(now),
                Scenario::Create => self.launch_storm(now),
                _ => {}
            }
        }
        let _ = ops;
    }

    /// How many rate-driven starts are due by `now`.
    fn due(&self, now: Instant) -> u64 {
        (now.duration_since(self.launch_t0).as_secs_f64() * self.cfg.rate) as u64
    }

    fn launch_web(&mut self, now: Instant) {
        let due = self.due(now);
        while self.launched < due {
            self.launched += 1;
            if self.web_circs.is_empty() {
                return;
            }
            self.rr_circ = (self.rr_circ + 1) % self.web_circs.len();
            let ci = self.web_circs[self.rr_circ];
            if !matches!(self.circs[ci].state, CState::Open) || self.circs[ci].streams.len() >= 64 {
                self.storm_skipped += 1;
                continue;
            }
            self.open_stream(ci, Mode::Download, self.cfg.bytes, now);
        }
    }

    fn launch_storm(&mut self, now: Instant) {
        let due = self.due(now);
        // `launched` also counts for the sampling; keep the rate in its own
        // count.
        while self.storm_launched() < due {
            if self.storm_pending >= STORM_PENDING {
                self.storm_skipped += due - self.storm_launched();
                self.launched = due + self.cfg.probes as u64;
                return;
            }
            if self.start_circ(Role::Storm, now).is_none() {
                return;
            }
            self.storm_pending += 1;
        }
    }

    fn storm_launched(&self) -> u64 {
        self.launched
    }

    fn set_phase(&mut self, p: Phase, now: Instant) {
        self.phase = p;
        self.phase_at = now;
        eprintln!(
            "oxit-load: {:?} ({} links, {} circuits)",
            p,
            self.links.iter().filter(|l| l.open).count(),
            self.built
        );
    }

    fn finish(&mut self, now: Instant) {
        let wall = now.duration_since(self.t0).as_secs_f64().max(1e-9);
        let measured = self.phase == Phase::Measure;
        let (ru, rs) = self.cfg.relay_pid.map_or((0.0, 0.0), stats::proc_cpu);
        let relay_user = ru - self.relay_cpu0.0;
        let relay_sys = rs - self.relay_cpu0.1;
        let relay_cpu = relay_user + relay_sys;
        let gen_cpu = stats::self_cpu() - self.gen_cpu0;
        let k = &self.counters;
        let bytes = k.bytes_down + k.bytes_up;
        let gib = bytes as f64 / (1u64 << 30) as f64;
        let cells = k.cells_in + k.cells_out;
        let mut j = Json::default();
        j.str("scenario", self.cfg.scenario.name())
            .bool("measured", measured)
            .num("wall_s", wall)
            .int(
                "links",
                self.links.iter().filter(|l| l.open && !l.dead).count() as u64,
            )
            .int("circuits", (self.built - self.built_probes) as u64)
            .int("probe_circuits", self.built_probes as u64)
            .int("streams_per_circuit", self.cfg.streams as u64)
            .int("bytes_per_stream", self.cfg.bytes)
            .num("rate_target", self.cfg.rate)
            .int("bytes_down", k.bytes_down)
            .int("bytes_up", k.bytes_up)
            .int("cells", cells)
            .num("gbit_s", bytes as f64 * 8.0 / wall / 1e9)
            .num("cells_s", cells as f64 / wall)
            .int("streams_done", k.streams_done)
            .num("streams_s", k.streams_done as f64 / wall)
            .int("streams_failed", k.streams_failed)
            .int("circuits_created", k.circuits_created)
            .num("circuits_created_s", k.circuits_created as f64 / wall)
            .int("circuits_failed", k.circuits_failed)
            .int("storm_skipped", self.storm_skipped)
            .int("bytes_checked", k.bytes_checked)
            .int(
                "content_errors",
                k.content_errors + self.dest_stats.sink_mismatches,
            )
            .int("protocol_errors", k.protocol_errors)
            .num("relay_cpu_s", relay_cpu)
            .num("relay_user_s", relay_user)
            .num("relay_sys_s", relay_sys)
            .num("relay_cpu_util", relay_cpu / wall)
            .num("relay_cpu_s_per_gib", per(relay_cpu, gib))
            .num("relay_cpu_s_per_mcell", per(relay_cpu, cells as f64 / 1e6))
            .num(
                "relay_cpu_us_per_stream",
                per(relay_cpu * 1e6, k.streams_done as f64),
            )
            .num(
                "relay_cpu_us_per_circuit",
                per(relay_cpu * 1e6, k.circuits_created as f64),
            )
            .num("gen_cpu_s", gen_cpu)
            .num(
                "gen_cpu_per_relay_cpu",
                if relay_cpu > 0.0 {
                    gen_cpu / relay_cpu
                } else {
                    0.0
                },
            )
            .int("relay_rss_base_kib", self.rss_base_kib)
            .int("relay_rss_idle_kib", self.rss_idle_kib)
            .num(
                "relay_bytes_per_idle_circuit",
                // Below a thousand circuits the difference is noise.
                if self.built >= 1000 && self.rss_idle_kib > 0 {
                    (self.rss_idle_kib as f64 - self.rss_base_kib as f64) * 1024.0
                        / self.built as f64
                } else {
                    0.0
                },
            )
            .int("relay_rss_end_kib", self.relay_rss())
            .int(
                "relay_rss_peak_kib",
                self.cfg
                    .relay_pid
                    .map_or(0, |p| stats::proc_status_kib(p, "VmHWM")),
            )
            .hist("cell_rtt", &self.hist_probe)
            .hist("stream_time", &self.hist_stream)
            .hist("create_time", &self.hist_create)
            .int("dest_accepted", self.dest_stats.accepted)
            .str("errors", &self.errors.join("; "));
        self.result = Some(j.render());
        self.phase = Phase::Done;
    }
}

/// The client's first half of an ntor or ntor-v3 handshake with `hop`;
/// ntor-v3 carries `ntor3_msg`.
fn client_create(htype: HandshakeType, hop: &Hop, ntor3_msg: &[u8]) -> Option<(Pending, Vec<u8>)> {
    if htype == HandshakeType::NTOR_V3 {
        let (st, h) = ntor_v3::client_create(
            &mut rand::rng(),
            &hop.ed_id,
            &hop.ntor_key,
            ntor3_msg,
            NTOR3_CIRC_VERIFICATION,
        )
        .ok()?;
        Some((Pending::Ntor3(st), h))
    } else {
        let (st, h) = ntor::client_create(&mut rand::rng(), &hop.rsa_id, &hop.ntor_key);
        Some((Pending::Ntor(st), h.to_vec()))
    }
}

/// `x / n`, or 0 when nothing was counted.
fn per(x: f64, n: f64) -> f64 {
    if n > 0.0 { x / n } else { 0.0 }
}

/// Keep the first few problems for the report.
fn push_error(errors: &mut Vec<String>, e: String) {
    if errors.len() < 20 {
        errors.push(e);
    }
}

/// A credit cell's payload: cells allowed, and (on the first) the seed.
fn credit(n: u32, seed: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[4..].copy_from_slice(&seed.to_be_bytes());
    b
}

/// A blocking loopback connect from `from` (loopback connects complete at
/// once), handed to the driver afterwards.
fn connect_from(to: SocketAddr, from: IpAddr) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let sa = |a: SocketAddr| -> libc::sockaddr_in {
        let (ip, port) = match a {
            SocketAddr::V4(v) => (v.ip().octets(), v.port()),
            SocketAddr::V6(_) => ([0; 4], 0),
        };
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip),
            },
            sin_zero: [0; 8],
        }
    };
    let local = sa(SocketAddr::new(from, 0));
    let remote = sa(to);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: valid sockaddr_in pointers and their length.
    if unsafe { libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(owned)
}

impl Handler for Gen {
    fn on_event(&mut self, ev: Event<'_>, ops: &mut dyn Ops) {
        let now = Instant::now();
        match ev {
            Event::Accepted { fd, peer } => {
                let local = oxit::runtime::driver::local_addr(&fd);
                let is_fake = self.fake.as_ref().is_some_and(|f| Some(f.addr()) == local);
                let Ok(t) = ops.add_conn(fd) else {
                    return;
                };
                if is_fake {
                    if let Some(f) = self.fake.as_mut() {
                        f.accept(t, peer, now);
                        self.conns.insert(t, Kind::Fake);
                    }
                } else {
                    self.dest_stats.accepted += 1;
                    self.dests.insert(t, DestConn::new());
                    self.conns.insert(t, Kind::Dest);
                }
            }
            Event::Recv(t, data) => match self.conns.get(&t) {
                Some(Kind::Link(li)) => {
                    let li = *li;
                    self.on_link_recv(li, data, now);
                }
                Some(Kind::Dest) => {
                    if let Some(d) = self.dests.get_mut(&t) {
                        d.on_recv(t, data, ops, &mut self.dest_stats);
                    }
                }
                Some(Kind::Fake) => {
                    if let Some(f) = self.fake.as_mut() {
                        f.on_recv(t, data, now, ops);
                    }
                }
                None => {}
            },
            Event::SendDrained(t) => {
                if let Some(d) = self.dests.get_mut(&t) {
                    d.on_drained(t, ops, &mut self.dest_stats);
                }
            }
            Event::RecvClosed(t, _) | Event::SendFailed(t, _) => {
                match self.conns.remove(&t) {
                    Some(Kind::Link(li)) => {
                        self.links[li].dead = true;
                        self.note_error(format!("link {li} closed by the relay"));
                    }
                    Some(Kind::Dest) => {
                        self.dests.remove(&t);
                    }
                    Some(Kind::Fake) => {
                        if let Some(f) = self.fake.as_mut() {
                            f.close(t);
                        }
                    }
                    None => {}
                }
                ops.close(t, false);
            }
            Event::Connected(..) | Event::Woken => {}
        }
    }

    fn end_of_turn(&mut self, ops: &mut dyn Ops) {
        let now = Instant::now();
        self.step(now, ops);
        if !self.sending.is_empty() {
            self.pump_uploads(ops);
        }
        if let Some(f) = self.fake.as_mut() {
            f.pump(ops);
        }
        for li in 0..self.links.len() {
            if self.links[li].dirty {
                self.flush_link(li, ops);
            }
        }
    }
}
