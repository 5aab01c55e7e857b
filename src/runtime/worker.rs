//! One worker thread per core: its driver, its listeners, and every
//! connection those lead to — the channels it accepted or opened, their
//! circuits (one `CircuitTable`), the exit streams they carry, and the
//! worker's own DNS resolver with its UDP sockets.
//!
//! The worker is the only place where protocol logic meets sockets: it
//! moves TLS bytes between the driver and rustls, plaintext between rustls
//! and `proto::channel`, cells between channels and the circuit table, and
//! carries out the table's actions (resolve, connect, write, open a
//! channel). Worker state never leaves its thread; only the waker, the
//! shutdown flag, immutable snapshots (keys, configs) and the batches of
//! [`crate::proto::splice`] (circuits extended through another worker's
//! channel) cross threads.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use rand::rngs::ThreadRng;

use crate::control::Shutdown;
use crate::exit::dns::{Resolver, ResolverConfig};
use crate::proto::cell::{CELL_BODY_LEN, ChanCmd, CircId, DestroyReason};
use crate::proto::channel::queue::{CircQueue, WIRE_CELL_LEN};
use crate::proto::channel::{ChanEvent, Channel, ExpectedPeer, IncomingCell, TlsSession};
use crate::proto::circuit::{Action, ChanId, CircuitTable, ExtendFailure, ExtendKey, StreamKey};
use crate::proto::dos::DosMsg;
use crate::proto::splice::{Batch, CROSS_QUEUE_LIMIT, Flow, HostedCell, Splices, WorkerId};

use super::driver::{self, Event, Handler, Ops, Token, Waker};
use super::plane::{Outbox, PlaneEvent, Snapshot};
use super::tls::{HandOver, TlsConn};

/// How long a worker waits when nothing is due: bounds how late it notices
/// a shutdown or a new snapshot if a wakeup is ever lost.
const IDLE_TURN: Duration = Duration::from_millis(500);
/// How often a worker over the bandwidth limit looks at the buckets.
const RATE_RECHECK: Duration = Duration::from_millis(2);
/// Channel timers (keepalive, idle close, handshake timeout) are checked
/// this often rather than every turn.
const CHANNEL_TICK: Duration = Duration::from_millis(250);
/// How long a channel connect for EXTEND2 may take. (Exit streams have
/// the circuit table's `STREAM_SETUP_TIMEOUT` instead.)
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes a link may have waiting for the kernel before its heaviest
/// circuits are closed: 64 full circuit windows' worth of cells.
const LINK_QUEUE_LIMIT: usize = 64 * 1000 * 514;
/// Bytes at which we give up on the link's peer and close the link.
const LINK_HARD_LIMIT: usize = 2 * LINK_QUEUE_LIMIT;
/// Bytes waiting on a link past which its circuits' exit streams stop
/// packaging, and below which they resume (CircuitTable::set_chan_blocked).
/// A few turns' worth at multi-gigabit rates: enough to keep the link busy,
/// little enough that a cell of a quiet circuit is not queued behind a
/// busy one's whole window.
const LINK_BLOCK_HIGH: usize = 512 * 1024;
const LINK_BLOCK_LOW: usize = 256 * 1024;
/// Bounded rounds of action processing per turn, so a burst cannot keep
/// the worker from its sockets and timers.
const ACTION_ROUNDS: usize = 64;
/// Unfinished inbound handshakes one address may have on one worker; more
/// connections from it are closed as they are accepted until some finish
/// or time out (HANDSHAKE_LIMIT). Relays finish theirs in a few round
/// trips; a flood of half-open TLS sessions from one address stops here.
const MAX_HANDSHAKES_PER_ADDR: u32 = 32;
/// How often idle DoS state is swept.
const DOS_PURGE_EVERY: Duration = Duration::from_secs(60);
/// Items from other workers taken in per turn, for the same reason; the
/// rest waits for the next turn (which comes at once).
/// Capacity a drained `held` buffer keeps: a stream that once held a lot
/// gives the rest back.
const HELD_KEEP: usize = 16 * 1024;
/// What a create waiting in the onion queue costs (its cell and entry).
const ONION_ENTRY_BYTES: u64 = CELL_BODY_LEN as u64 + 64;

/// How often a worker gives the memory it freed back to the system: after
/// 100,000 circuits close, their megabytes leave the process within this.
const COLLECT_EVERY: Duration = Duration::from_secs(10);

const MAIL_ITEMS_PER_TURN: usize = 16 * 1024;

/// How to reach one worker.
pub(super) struct Peer {
    pub(super) tx: Sender<Batch>,
    pub(super) waker: Arc<Waker>,
}

/// A worker's mailbox and everyone else's.
pub(super) struct Mail {
    pub(super) inbox: Receiver<Batch>,
    pub(super) peers: Arc<[Peer]>,
    /// Items sent and not yet taken in, per (from, to) pair of workers at
    /// `from * n + to`; touched once per batch, not per cell. The sender
    /// adds after sending, so the count can dip below zero for a moment.
    pub(super) in_flight: Arc<[AtomicIsize]>,
    /// The same in every worker: which worker holds each conflux set.
    pub(super) set_hasher: std::hash::RandomState,
}

impl Mail {
    fn in_flight(&self, from: usize, to: usize) -> Option<&AtomicIsize> {
        self.in_flight.get(from * self.peers.len() + to)
    }
}

/// One link: TLS plus the link-layer state machine on top of it.
struct OrConn {
    tls: TlsConn,
    chan_id: ChanId,
    /// `None` on an outbound link until TLS finishes (the initiator needs
    /// the responder's certificate to start).
    channel: Option<Channel>,
    peer: SocketAddr,
    /// Outbound links: whom we expect, and the extends waiting for it.
    outbound: Option<Outbound>,
    opened: bool,
    /// Relay cells per circuit still waiting in this link's output.
    queue: CircQueue,
    /// The turn in which `queue` last learnt what the link sent.
    synced: u64,
    /// Its bytes count in the bandwidth history (not a private address,
    /// unless CountPrivateBandwidth).
    counted: bool,
    /// Inbound, open, and the peer's NETINFO names our published address:
    /// a CREATE here shows the ORPort is reachable.
    reach_witness: bool,
    /// Counted in its address's concurrent connections (DoS): uncount it
    /// when it closes.
    dos_tracked: bool,
    /// Inbound and its handshake not finished: counted in
    /// [`Worker::handshaking`].
    handshaking: bool,
    /// More than [`LINK_BLOCK_LOW`] bytes were waiting: watched each turn
    /// (`Worker::unblock_links`) until it drains, so that the exit streams
    /// it stopped resume.
    blocked: bool,
}

impl OrConn {
    fn describe(&self) -> String {
        describe_peer(
            self.peer,
            self.channel.as_ref().and_then(Channel::peer),
            self.outbound.as_ref().map(|o| &o.expect),
        )
    }
}

/// An inbound connection from `ip` finished or gave up its handshake.
fn handshake_done(handshaking: &mut HashMap<IpAddr, u32>, ip: IpAddr) {
    if let Some(n) = handshaking.get_mut(&ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            handshaking.remove(&ip);
        }
    }
}

/// A link's peer as a log line names it (connection_describe_peer): a
/// relay by its address and identity, anyone else (a client, or a peer
/// that has not authenticated yet) by an address `SafeLogging` scrubs.
fn describe_peer(
    addr: SocketAddr,
    kind: Option<&crate::proto::channel::PeerKind>,
    expect: Option<&[u8; 20]>,
) -> String {
    use crate::control::logging::Scrub;
    use crate::proto::channel::PeerKind;
    let hex = |id: &[u8; 20]| id.iter().map(|b| format!("{b:02X}")).collect::<String>();
    match (kind, expect) {
        (Some(PeerKind::Relay { rsa_id, .. }), _) | (_, Some(rsa_id)) => {
            format!("{addr} RSA_ID={}", hex(rsa_id))
        }
        _ => Scrub(addr).to_string(),
    }
}

struct Outbound {
    expect: [u8; 20],
    expect_ed: Option<[u8; 32]>,
    waiting: Vec<ExtendKey>,
    deadline: Instant,
}

struct ExitConn {
    key: StreamKey,
    addr: SocketAddr,
    counted: bool,
    /// When the connect started (for `oxit_exit_connect_seconds`).
    started: Instant,
    /// Bytes read from the destination that the circuit could not take yet.
    held: Vec<u8>,
    /// How much of `held` the circuit already took.
    held_off: usize,
    held_eof: Option<Option<std::io::Error>>,
    /// Since when bytes wait to be written to the socket (cleared when the
    /// driver says it drained), and since when `held` is not empty: the
    /// age of the stream's oldest queued data, for the OOM handler.
    out_since: Option<Instant>,
    held_since: Option<Instant>,
}

enum Conn {
    Or(Box<OrConn>),
    Exit(ExitConn),
    Dns(SocketAddr),
}

struct TlsRef<'a>(&'a TlsConn);

impl TlsSession for TlsRef<'_> {
    fn export_keying_material(&self, label: &[u8], context: &[u8]) -> Option<[u8; 32]> {
        self.0.export(label, context)
    }
}

pub(super) struct Worker {
    index: usize,
    snap: Arc<Snapshot>,
    client_tls: Arc<rustls::ClientConfig>,
    feed: Receiver<Arc<Snapshot>>,
    rng: ThreadRng,
    circuits: CircuitTable,
    /// The DoS counts of the client addresses this worker owns.
    dos_table: crate::proto::dos::AddrTable,
    /// Inbound connections whose handshake is unfinished, per address.
    handshaking: HashMap<IpAddr, u32>,
    /// Circuits closed for too long a queue (a link's, or toward another
    /// worker).
    queue_kills: u64,
    /// The DoS counters last stored for the control plane.
    dos_published: crate::proto::dos::DosStats,
    onion_published: crate::proto::circuit::OnionStats,
    cc_published: crate::proto::cc::CcStats,
    dns_published: crate::exit::dns::ResolverStats,
    next_dos_purge: Instant,
    next_collect: Instant,
    /// Circuits extended through other workers' channels, both ways.
    splices: Splices,
    mail: Mail,
    hosted_send: Vec<HostedCell>,
    /// Circuits whose queue on a link went over `circ_max_cell_queue_size`
    /// this turn: closed with RESOURCELIMIT.
    over_cap: Vec<(ChanId, CircId)>,
    turn: u64,
    resolver: Resolver<ThreadRng>,
    dns_socks: super::dnssocks::DnsSockets,
    conns: crate::proto::OwnKeyMap<Token, Conn>,
    chans: crate::proto::OwnKeyMap<ChanId, Token>,
    /// Open, authenticated outbound-or-inbound relay channels by RSA id,
    /// for reuse by EXTEND2.
    relay_chans: HashMap<[u8; 20], ChanId>,
    /// Outbound links still handshaking, by RSA id.
    pending_links: HashMap<[u8; 20], Token>,
    streams: crate::proto::OwnKeyMap<StreamKey, Token>,
    next_chan: u32,
    dirty: Vec<Token>,
    /// Links over LINK_BLOCK_LOW, checked each turn until they drain.
    blocked_links: Vec<Token>,
    cells: Vec<IncomingCell>,
    plain: Vec<u8>,
    next_tick: Instant,
    /// The listeners were closed (a draining shutdown, hibernation).
    listeners_closed: bool,
    /// Dormant (accounting): the links were closed.
    dormant: bool,
    /// The relay is over its bandwidth limit: the sockets this worker
    /// stopped reading, to resume once the buckets refill.
    rate_paused: Option<std::collections::HashSet<Token>>,
    out: Outbox,
    /// Bytes read and written this turn (added to `out.traffic` at its end).
    turn_read: u64,
    turn_written: u64,
    /// This worker already reported the ORPort reachable (for the
    /// addresses in the current snapshot).
    reach_reported: bool,
    /// `CountPrivateBandwidth`.
    count_private: bool,
    /// Connections made, refused and open, for the MetricsPort (plain
    /// counts, published by `publish_stats`).
    conn_counts: super::plane::ConnCounts,
    /// Cells received and sent on links, then TLS bytes read and written
    /// on links: added once per link input or flush, never per cell.
    cells_io: [u64; 2],
    tls_io: [u64; 2],
    /// Exit connect latency, one observation per connected stream.
    connect_hist: super::plane::ConnectHistogram,
}

impl Worker {
    pub(super) fn new(
        index: usize,
        snap: Arc<Snapshot>,
        client_tls: Arc<rustls::ClientConfig>,
        resolver_cfg: ResolverConfig,
        feed: Receiver<Arc<Snapshot>>,
        mail: Mail,
        out: Outbox,
    ) -> Self {
        let listeners_created = out.listeners;
        Worker {
            out,
            turn_read: 0,
            turn_written: 0,
            reach_reported: false,
            count_private: snap.circuits.count_private_bandwidth,
            conn_counts: super::plane::ConnCounts {
                listeners_created,
                listeners: listeners_created,
                ..Default::default()
            },
            cells_io: [0; 2],
            tls_io: [0; 2],
            connect_hist: super::plane::ConnectHistogram::default(),
            index,
            circuits: {
                let mut t = CircuitTable::new(snap.circuits.clone());
                t.set_conflux_homes(crate::proto::circuit::SetHomes {
                    me: index,
                    workers: mail.peers.len(),
                    hasher: mail.set_hasher.clone(),
                });
                t
            },
            dos_table: crate::proto::dos::AddrTable::default(),
            handshaking: HashMap::new(),
            queue_kills: 0,
            dos_published: crate::proto::dos::DosStats::default(),
            onion_published: crate::proto::circuit::OnionStats::default(),
            cc_published: crate::proto::cc::CcStats::default(),
            dns_published: Default::default(),
            next_dos_purge: Instant::now() + DOS_PURGE_EVERY,
            next_collect: Instant::now() + COLLECT_EVERY,
            splices: {
                let mut s = Splices::new(WorkerId(index), mail.peers.len());
                s.set_flow_cap(snap.circuits.max_queue);
                s
            },
            mail,
            hosted_send: Vec::new(),
            over_cap: Vec::new(),
            turn: 1,
            snap,
            client_tls,
            feed,
            rng: rand::rng(),
            resolver: Resolver::new(resolver_cfg, rand::rng()),
            dns_socks: Default::default(),
            conns: Default::default(),
            chans: Default::default(),
            relay_chans: HashMap::new(),
            pending_links: HashMap::new(),
            streams: Default::default(),
            next_chan: 1,
            dirty: Vec::new(),
            blocked_links: Vec::new(),
            cells: Vec::with_capacity(64),
            plain: Vec::with_capacity(64 * 1024),
            next_tick: Instant::now(),
            listeners_closed: false,
            dormant: false,
            rate_paused: None,
        }
    }

    pub(super) fn run(&mut self, d: &mut dyn driver::Driver, sd: &Shutdown) -> std::io::Result<()> {
        while !sd.is_triggered() {
            let now = Instant::now();
            let mut due = now + IDLE_TURN;
            for t in [
                self.circuits.poll_timeout(),
                self.resolver.poll_timeout(),
                Some(self.next_tick),
                // Over the bandwidth limit: look at the buckets again soon.
                self.rate_paused.as_ref().map(|_| now + RATE_RECHECK),
            ]
            .into_iter()
            .flatten()
            {
                due = due.min(t);
            }
            d.turn(Some(due.saturating_duration_since(now)), self)?;
            if self.snap.circuits.hibernating != self.listeners_closed {
                // Shutting down or hibernating: no new connections (C:
                // connection_mark_all_noncontrol_listeners); awake again:
                // accept again.
                let c = &mut self.conn_counts;
                if self.snap.circuits.hibernating {
                    d.close_listeners();
                    c.listeners = [0; 2];
                } else {
                    d.reopen_listeners();
                    c.listeners = self.out.listeners;
                    for (n, l) in c.listeners_created.iter_mut().zip(self.out.listeners) {
                        *n += l;
                    }
                }
                self.listeners_closed = self.snap.circuits.hibernating;
            }
            if self.snap.circuits.dormant && !self.dormant {
                // The accounting budget is spent: every link goes, and
                // with them their circuits and streams
                // (hibernate.c:hibernate_go_dormant).
                let ops = d.ops();
                let links: Vec<Token> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| matches!(c, Conn::Or(_)))
                    .map(|(t, _)| *t)
                    .collect();
                for t in links {
                    self.close_conn(t, ops, "hibernating: accounting budget spent");
                }
            }
            self.dormant = self.snap.circuits.dormant;
        }
        // Close every link cleanly: a TLS close_notify after what is queued.
        let ops = d.ops();
        for (t, c) in self.conns.iter_mut() {
            if let Conn::Or(or) = c {
                or.tls.close();
                if let Some(out) = ops.out_buf(*t) {
                    or.tls.write_tls_into(out);
                }
            }
            ops.close(*t, true);
        }
        self.conns.clear();
        let end = Instant::now() + Duration::from_secs(1);
        struct Idle;
        impl Handler for Idle {
            fn on_event(&mut self, _: Event<'_>, _: &mut dyn Ops) {}
            fn end_of_turn(&mut self, _: &mut dyn Ops) {}
        }
        while Instant::now() < end {
            d.turn(Some(Duration::from_millis(50)), &mut Idle)?;
        }
        tracing::debug!(worker = self.index, "worker stopped");
        Ok(())
    }

    /// Whether a connection to `ip` counts in the bandwidth history
    /// (connection.c:connection_is_rate_limited).
    fn counts(&self, ip: IpAddr) -> bool {
        self.count_private || !crate::exit::dns::address::is_internal(ip)
    }

    fn new_chan_id(&mut self) -> ChanId {
        // After 2^32 links the counter wraps: skip ids still in use, or two
        // peers would share circuit-table keys.
        loop {
            let id = ChanId(self.next_chan);
            self.next_chan = self.next_chan.wrapping_add(1).max(1);
            if !self.chans.contains_key(&id) && !self.splices.is_virtual(id) {
                return id;
            }
        }
    }

    /// Close a link without flushing what is queued for it.
    fn close_conn_now(&mut self, t: Token, ops: &mut dyn Ops, why: &str) {
        self.close_conn(t, ops, why);
        ops.close(t, false);
    }

    fn close_conn(&mut self, t: Token, ops: &mut dyn Ops, why: &str) {
        let Some(c) = self.conns.remove(&t) else {
            return;
        };
        match c {
            Conn::Or(or) => {
                tracing::debug!("closing link with {}: {why}", or.describe());
                if or.dos_tracked {
                    self.dos_event(DosMsg::ConnClosed(or.peer.ip()));
                }
                if or.handshaking {
                    handshake_done(&mut self.handshaking, or.peer.ip());
                }
                self.chans.remove(&or.chan_id);
                self.relay_chans.retain(|_, c| *c != or.chan_id);
                self.pending_links.retain(|_, tok| *tok != t);
                if let Some(ob) = or.outbound {
                    for k in ob.waiting {
                        self.circuits.handle_extend_channel(
                            k,
                            Err(ExtendFailure::Channel(why.to_string())),
                            &mut self.rng,
                        );
                    }
                }
                self.splices.local_channel_closed(or.chan_id);
                self.circuits.channel_closed(or.chan_id);
                ops.close(t, true);
            }
            Conn::Exit(x) => {
                self.streams.remove(&x.key);
                ops.close(t, true);
            }
            Conn::Dns(_) => {
                self.dns_socks.forget(t);
                ops.close(t, false);
            }
        }
    }

    fn on_or_recv(&mut self, t: Token, data: &[u8], ops: &mut dyn Ops) {
        let now = Instant::now();
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Some(Conn::Or(or)) = self.conns.get_mut(&t) else {
            return;
        };
        if or.counted {
            self.turn_read += data.len() as u64;
        }
        self.tls_io[0] += data.len() as u64;
        self.plain.clear();
        if let Err(e) = or.tls.feed(data, &mut self.plain) {
            let msg = format!("TLS error: {e}");
            // Let rustls send its alert before we go.
            if let Some(out) = ops.out_buf(t) {
                or.tls.write_tls_into(out);
            }
            return self.close_conn(t, ops, &msg);
        }
        self.dirty.push(t);
        if or.channel.is_none() && !or.tls.is_handshaking() {
            // Outbound: TLS is up, now the link handshake as initiator.
            if let Some(ob) = &or.outbound {
                let Some(cert) = or.tls.peer_cert_der() else {
                    return self.close_conn(t, ops, "responder sent no TLS certificate");
                };
                let expect = ExpectedPeer {
                    rsa_id: ob.expect,
                    ed_id: ob.expect_ed,
                };
                or.channel = Some(Channel::new_initiator(
                    self.snap.link.clone(),
                    cert,
                    or.peer.ip(),
                    expect,
                    now,
                    &mut self.rng,
                ));
            }
        }
        let Some(ch) = or.channel.as_mut() else {
            return;
        };
        if self.plain.is_empty() && ch.is_open() {
            return;
        }
        let res = ch.handle_input(
            &self.plain,
            now,
            unix_now,
            &TlsRef(&or.tls),
            &mut self.rng,
            &mut self.cells,
        );
        let chan_id = or.chan_id;
        let mut opened = None;
        let mut closed = None;
        while let Some(ev) = ch.poll_event() {
            match ev {
                ChanEvent::Opened { peer, .. } => opened = Some(peer),
                ChanEvent::Closed(e) => closed = Some(e.to_string()),
            }
        }
        if let Some(peer) = opened {
            or.opened = true;
            if std::mem::take(&mut or.handshaking) {
                handshake_done(&mut self.handshaking, or.peer.ip());
            }
            // C tor's reachability witness (circuitbuild_relay.c:
            // onionskin_answer): an inbound channel, not from a local
            // address unless ExtendAllowPrivateAddresses, whose peer says
            // we have an address we publish, in the family it came from.
            let cfg = &self.snap.circuits;
            or.reach_witness = or.outbound.is_none()
                && (cfg.extend_allow_private
                    || !crate::exit::dns::address::is_internal(or.peer.ip()))
                && ch
                    .peer_netinfo()
                    .and_then(|n| n.other_addr())
                    .is_some_and(|a| {
                        a.is_ipv4() == or.peer.is_ipv4() && self.snap.link.my_addrs().contains(&a)
                    });
            if let crate::proto::channel::PeerKind::Relay { rsa_id, .. } = &peer {
                self.relay_chans.insert(*rsa_id, chan_id);
                self.pending_links.remove(rsa_id);
            }
            tracing::debug!(
                "link open with {}",
                describe_peer(
                    or.peer,
                    Some(&peer),
                    or.outbound.as_ref().map(|o| &o.expect)
                )
            );
            self.splices.local_channel_opened(chan_id, &peer);
            if or.outbound.is_some() {
                self.circuits.channel_opened_outbound(chan_id, peer);
            } else {
                self.circuits.channel_opened(chan_id, peer);
                self.circuits.set_channel_addr(chan_id, or.peer.ip());
            }
            if let Some(ob) = or.outbound.as_mut() {
                for k in std::mem::take(&mut ob.waiting) {
                    self.circuits
                        .handle_extend_channel(k, Ok(chan_id), &mut self.rng);
                }
            }
        }
        if !self.cells.is_empty() {
            // The whole batch of this input at once, hosted cells too.
            self.cells_io[0] += self.cells.len() as u64;
            if or.reach_witness && !self.reach_reported {
                let creates = self.cells.iter().any(|c| {
                    matches!(
                        c.cmd,
                        ChanCmd::CREATE | ChanCmd::CREATE2 | ChanCmd::CREATE_FAST
                    )
                });
                if creates && let Some(addr) = ch.peer_netinfo().and_then(|n| n.other_addr()) {
                    self.reach_reported = true;
                    let _ = self.out.events.send(PlaneEvent::Reachable(addr));
                }
            }
            self.splices
                .take_hosted(chan_id, &mut self.cells, &mut self.circuits);
            self.circuits
                .handle_cells(chan_id, &mut self.cells, now, &mut self.rng);
            self.cells.clear();
            // Before this channel is read again: its legs that went to
            // another worker's set are hosted from now on.
            self.host_moved_legs();
        }
        if let Err(e) = res {
            return self.close_conn(t, ops, &format!("link protocol error: {e}"));
        }
        if let Some(e) = closed {
            self.close_conn(t, ops, &e);
        }
    }

    fn on_exit_recv(&mut self, t: Token, data: &[u8], ops: &mut dyn Ops) {
        let now = Instant::now();
        let Some(Conn::Exit(x)) = self.conns.get_mut(&t) else {
            return;
        };
        if x.counted {
            self.turn_read += data.len() as u64;
        }
        let key = x.key;
        if !x.held.is_empty() {
            crate::copy::extend(&mut x.held, data);
            ops.set_recv(t, false);
            return;
        }
        let took = self
            .circuits
            .handle_stream_data(key, data, now, &mut self.rng);
        if took < data.len() {
            if let Some(Conn::Exit(x)) = self.conns.get_mut(&t) {
                crate::copy::extend(&mut x.held, &data[took..]);
                x.held_since.get_or_insert(now);
            }
            ops.set_recv(t, false);
        }
    }

    /// Charge this turn's bytes to the relay's buckets; stop reading every
    /// link and exit socket while they are in debt, and resume when they
    /// are not (see [`super::ratelimit`]).
    fn rate_limit(&mut self, ops: &mut dyn Ops) {
        let limit = &self.out.limit;
        if !limit.is_limited() && self.rate_paused.is_none() {
            return;
        }
        let now = Instant::now();
        let over = if !limit.is_limited() {
            false
        } else if self.turn_read + self.turn_written > 0 {
            limit.charge(self.turn_read, self.turn_written, now)
        } else {
            self.rate_paused.is_some() && limit.over(now)
        };
        match (over, self.rate_paused.take()) {
            (true, None) => {
                let mut paused = std::collections::HashSet::new();
                for (&t, c) in &self.conns {
                    if matches!(c, Conn::Or(_) | Conn::Exit(_)) {
                        ops.set_recv(t, false);
                        paused.insert(t);
                    }
                }
                self.rate_paused = Some(paused);
            }
            (false, Some(paused)) => {
                for t in paused {
                    match self.conns.get(&t) {
                        Some(Conn::Or(_)) => ops.set_recv(t, true),
                        // Through the held-bytes path: a stream its
                        // circuit paused meanwhile pauses again there.
                        Some(Conn::Exit(_)) => self.drain_held(t, ops),
                        _ => {}
                    }
                }
            }
            (_, keep) => self.rate_paused = keep,
        }
    }

    /// Read from `t` again, unless the relay's buckets are in debt: then
    /// it resumes with the others.
    fn resume_recv(&mut self, t: Token, ops: &mut dyn Ops) {
        match &mut self.rate_paused {
            Some(paused) => {
                paused.insert(t);
            }
            None => ops.set_recv(t, true),
        }
    }

    /// A link or exit socket opened while the buckets are in debt waits
    /// with the others.
    fn hold_if_rate_paused(&mut self, t: Token, ops: &mut dyn Ops) {
        if let Some(paused) = &mut self.rate_paused {
            ops.set_recv(t, false);
            paused.insert(t);
        }
    }

    /// Offer held destination bytes to the circuit again (after ResumeRead).
    fn drain_held(&mut self, t: Token, ops: &mut dyn Ops) {
        let now = Instant::now();
        let Some(Conn::Exit(x)) = self.conns.get_mut(&t) else {
            return;
        };
        let key = x.key;
        if x.held_off < x.held.len() {
            // Offer the rest without copying it: a circuit window often takes
            // only part of what a destination sent while we were paused.
            let took =
                self.circuits
                    .handle_stream_data(key, &x.held[x.held_off..], now, &mut self.rng);
            x.held_off += took;
            if x.held_off < x.held.len() {
                return;
            }
        }
        x.held.clear();
        x.held.shrink_to(HELD_KEEP);
        x.held_off = 0;
        x.held_since = None;
        if let Some(err) = x.held_eof.take() {
            self.circuits
                .handle_stream_eof(key, err, now, &mut self.rng);
            return;
        }
        self.resume_recv(t, ops);
    }

    fn open_channel(
        &mut self,
        key: ExtendKey,
        target: &crate::proto::relay_msg::Extend2Target,
        ops: &mut dyn Ops,
    ) {
        let rsa = target.rsa_id;
        if let Some(chan) = self.relay_chans.get(&rsa).copied() {
            self.circuits
                .handle_extend_channel(key, Ok(chan), &mut self.rng);
            return;
        }
        if let Some(t) = self.pending_links.get(&rsa).copied()
            && let Some(Conn::Or(or)) = self.conns.get_mut(&t)
            && let Some(ob) = or.outbound.as_mut()
        {
            ob.waiting.push(key);
            return;
        }
        // Another worker's channel will do: the circuit stays here and its
        // cells cross by message (proto::splice).
        // (An id taken here and not used is simply skipped.)
        let fresh = self.new_chan_id();
        if let Some((vchan, holder)) = self.splices.virtual_chan_to(
            &rsa,
            target.ed25519_id.as_ref(),
            &mut self.circuits,
            || fresh,
        ) {
            tracing::debug!(
                relay = %hex::encode_upper(rsa),
                holder = holder.0,
                "extending over another worker's channel"
            );
            self.circuits
                .handle_extend_channel(key, Ok(vchan), &mut self.rng);
            return;
        }
        let addr = target
            .ipv4
            .map(SocketAddr::V4)
            .or(target.ipv6.map(SocketAddr::V6));
        let Some(addr) = addr else {
            let err = std::io::Error::other("EXTEND2 target has no address");
            self.circuits.handle_extend_channel(
                key,
                Err(ExtendFailure::Launch(err)),
                &mut self.rng,
            );
            return;
        };
        let sni = crate::crypto::x509::random_hostname(&mut self.rng, ".com");
        let tls = match TlsConn::client(&self.client_tls, &sni) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("cannot start TLS to {addr}: {e}");
                let err = std::io::Error::other(e.to_string());
                self.circuits.handle_extend_channel(
                    key,
                    Err(ExtendFailure::Launch(err)),
                    &mut self.rng,
                );
                return;
            }
        };
        let bind = self.snap.circuits.outbound.for_conn(false, &addr);
        match ops.connect(addr, bind) {
            Ok(t) => {
                tracing::debug!(
                    relay = %hex::encode_upper(rsa),
                    %addr,
                    "opening a channel for EXTEND2"
                );
                let chan_id = self.new_chan_id();
                self.chans.insert(chan_id, t);
                self.pending_links.insert(rsa, t);
                // C counts a connect once started (connection_connect).
                self.conn_counts.or_initiated[super::plane::family_index(addr.ip())] += 1;
                self.conns.insert(
                    t,
                    Conn::Or(Box::new(OrConn {
                        tls,
                        chan_id,
                        channel: None,
                        peer: addr,
                        outbound: Some(Outbound {
                            expect: rsa,
                            expect_ed: target.ed25519_id,
                            waiting: vec![key],
                            deadline: Instant::now() + CONNECT_TIMEOUT,
                        }),
                        opened: false,
                        queue: CircQueue::default(),
                        synced: 0,
                        counted: self.counts(addr.ip()),
                        reach_witness: false,
                        dos_tracked: false,
                        handshaking: false,
                        blocked: false,
                    })),
                );
                self.hold_if_rate_paused(t, ops);
            }
            Err(e) => {
                tracing::debug!("extend: connect to {addr} failed: {e}");
                self.circuits.handle_extend_channel(
                    key,
                    Err(ExtendFailure::Launch(e)),
                    &mut self.rng,
                );
            }
        }
    }

    /// The socket the next query to `dst` leaves from (see
    /// [`super::dnssocks`]).
    fn dns_socket(&mut self, dst: SocketAddr, ops: &mut dyn Ops) -> Option<Token> {
        let conns = &mut self.conns;
        self.dns_socks.pick(dst, Instant::now(), &mut self.rng, || {
            // A connected UDP socket on a kernel-chosen port: the kernel
            // drops datagrams from anyone but the nameserver.
            let bind: SocketAddr = if dst.is_ipv4() {
                "0.0.0.0:0".parse().ok()?
            } else {
                "[::]:0".parse().ok()?
            };
            let sock = UdpSocket::bind(bind).and_then(|s| s.connect(dst).map(|_| s));
            match sock.and_then(|s| ops.add_udp(OwnedFd::from(s))) {
                Ok(t) => {
                    conns.insert(t, Conn::Dns(dst));
                    Some(t)
                }
                Err(e) => {
                    tracing::warn!("cannot open a DNS socket to {dst}: {e}");
                    None
                }
            }
        })
    }

    /// Carry out what the circuit table and the resolver asked for, until
    /// neither has more (bounded).
    fn run_actions(&mut self, ops: &mut dyn Ops) {
        let now = Instant::now();
        for _ in 0..ACTION_ROUNDS {
            let mut progressed = false;
            while let Some(a) = self.circuits.poll_action() {
                progressed = true;
                match a {
                    Action::SendCell {
                        chan,
                        circ_id,
                        cmd,
                        body,
                    } => {
                        if !self.send_on_chan(chan, circ_id, cmd, &body, ops) {
                            self.splices.send_forward(chan, circ_id, cmd, body);
                        }
                    }
                    Action::Resolve { key, query } => {
                        if let Some(res) = self.resolver.resolve(now, query, key.0) {
                            self.circuits.handle_resolved(key, res, now, &mut self.rng);
                        }
                    }
                    Action::Connect { key, addr } => match ops
                        .connect(addr, self.snap.circuits.outbound.for_conn(true, &addr))
                    {
                        Ok(t) => {
                            ops.pace_recv(t);
                            self.streams.insert(key, t);
                            let counted = self.counts(addr.ip());
                            self.conn_counts.exit_initiated
                                [super::plane::family_index(addr.ip())] += 1;
                            self.conns.insert(
                                t,
                                Conn::Exit(ExitConn {
                                    key,
                                    addr,
                                    counted,
                                    started: now,
                                    held: Vec::new(),
                                    held_off: 0,
                                    out_since: None,
                                    held_since: None,
                                    held_eof: None,
                                }),
                            );
                            self.hold_if_rate_paused(t, ops);
                        }
                        Err(e) => self
                            .circuits
                            .handle_connected(key, Err(e), now, &mut self.rng),
                    },
                    Action::StreamWrite { key, data } => {
                        if let Some(&t) = self.streams.get(&key)
                            && let Some(out) = ops.out_buf(t)
                        {
                            out.extend_from_slice(&data);
                            if let Some(Conn::Exit(x)) = self.conns.get_mut(&t) {
                                x.out_since.get_or_insert(now);
                                if x.counted {
                                    self.turn_written += data.len() as u64;
                                }
                            }
                            // What the socket held before these bytes:
                            // XOFF is decided on that (flow control).
                            let before = ops.queued(t).saturating_sub(data.len());
                            self.circuits.handle_stream_buffered(
                                key,
                                data.len(),
                                before,
                                now,
                                &mut self.rng,
                            );
                        }
                    }
                    Action::PauseRead { key } => {
                        if let Some(&t) = self.streams.get(&key) {
                            ops.set_recv(t, false);
                        }
                    }
                    Action::ResumeRead { key } => {
                        if let Some(&t) = self.streams.get(&key) {
                            self.drain_held(t, ops);
                        }
                    }
                    Action::CloseStream { key } => {
                        // A stream that ended while its name was looked up
                        // stops waiting for the answer.
                        self.resolver.cancel(key.0);
                        if let Some(t) = self.streams.remove(&key) {
                            self.conns.remove(&t);
                            ops.close(t, true);
                        }
                    }
                    Action::OpenChannel { key, target } => self.open_channel(key, &target, ops),
                    Action::DosCreate { addr } => self.dos_event(DosMsg::Create(addr)),
                }
            }
            for (chan, circ_id) in std::mem::take(&mut self.over_cap) {
                progressed = true;
                self.queue_kills += 1;
                // Its cells already on the link count for nobody now.
                if let Some(&t) = self.chans.get(&chan)
                    && let Some(Conn::Or(or)) = self.conns.get_mut(&t)
                {
                    or.queue.forget(circ_id);
                }
                tracing::debug!(
                    ?chan,
                    %circ_id,
                    "closing a circuit whose queue on the link is over {} cells",
                    self.snap.circuits.max_queue
                );
                if let Some(addr) = self.circuits.exitward_client_addr(chan, circ_id) {
                    self.dos_event(DosMsg::MaxOutq(addr));
                }
                let reason = DestroyReason::RESOURCELIMIT;
                if !self.splices.fail_hosted(
                    chan,
                    circ_id,
                    reason,
                    &mut self.circuits,
                    &mut self.hosted_send,
                ) {
                    self.circuits.close_circuit_at(chan, circ_id, reason);
                }
                self.send_hosted(ops);
            }
            while let Some(tx) = self.resolver.poll_transmit(now) {
                progressed = true;
                if let Some(t) = self.dns_socket(tx.dst, ops)
                    && let Err(e) = ops.send_datagram(t, &tx.payload)
                {
                    tracing::debug!("DNS send to {} failed: {e}", tx.dst);
                }
            }
            while let Some((token, res)) = self.resolver.poll_event() {
                progressed = true;
                self.circuits
                    .handle_resolved(StreamKey(token), res, now, &mut self.rng);
            }
            if !progressed {
                return;
            }
        }
    }

    /// Queue a cell on one of our channels; `false` if `chan` is not ours.
    fn send_on_chan(
        &mut self,
        chan: ChanId,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &[u8; CELL_BODY_LEN],
        ops: &dyn Ops,
    ) -> bool {
        let Some(&t) = self.chans.get(&chan) else {
            return false;
        };
        if let Some(Conn::Or(or)) = self.conns.get_mut(&t)
            && let Some(ch) = or.channel.as_mut()
        {
            if matches!(cmd, ChanCmd::RELAY | ChanCmd::RELAY_EARLY) {
                // What the link still holds from earlier turns; this turn's
                // cells are all still here.
                if or.synced != self.turn {
                    or.synced = self.turn;
                    or.queue.sync(ops.queued(t) / WIRE_CELL_LEN);
                    or.queue.stamp(Instant::now());
                }
                let cap = u32::try_from(self.snap.circuits.max_queue).unwrap_or(u32::MAX);
                if or.queue.push(circ_id, cap).is_none() {
                    // Over circ_max_cell_queue_size: this cell is not sent
                    // and the circuit goes (relay.c:append_cell_to_circuit_queue).
                    if !self.over_cap.contains(&(chan, circ_id)) {
                        self.over_cap.push((chan, circ_id));
                    }
                    return true;
                }
            }
            if let Err(e) = ch.send_cell(circ_id, cmd, body) {
                tracing::debug!("dropping cell for {chan:?}: {e}");
            }
            self.dirty.push(t);
        }
        true
    }

    /// Conflux legs the table handed to the worker that holds their set.
    fn host_moved_legs(&mut self) {
        for leg in self.circuits.take_moved_legs() {
            self.splices.host_moved_leg(
                leg,
                &mut self.circuits,
                &mut self.rng,
                &mut self.hosted_send,
            );
        }
    }

    /// Take in what other workers sent: cells for the circuits we host on
    /// our channels, cells for our spliced circuits, channel announcements.
    fn read_mail(&mut self, ops: &dyn Ops) {
        let now = Instant::now();
        let mut taken = 0;
        while taken < MAIL_ITEMS_PER_TURN {
            let Ok(batch) = self.mail.inbox.try_recv() else {
                break;
            };
            let n = batch.items.len();
            taken += n;
            if let Some(c) = self.mail.in_flight(batch.from.0, self.index) {
                c.fetch_sub(isize::try_from(n).unwrap_or(isize::MAX), Ordering::SeqCst);
            }
            let (chans, next_chan) = (&self.chans, &mut self.next_chan);
            let mut alloc = || loop {
                let id = ChanId(*next_chan);
                *next_chan = next_chan.wrapping_add(1).max(1);
                if !chans.contains_key(&id) {
                    return id;
                }
            };
            self.splices.handle_batch(
                batch,
                &mut self.circuits,
                now,
                &mut self.rng,
                &mut self.hosted_send,
                &mut alloc,
            );
        }
        if taken >= MAIL_ITEMS_PER_TURN
            && let Some(me) = self.mail.peers.get(self.index)
        {
            me.waker.wake();
        }
        for m in self.splices.take_dos() {
            match m {
                DosMsg::Verdict(v) => self.circuits.dos_verdict(v),
                m => self.dos_owned(m),
            }
        }
        self.send_hosted(ops);
    }

    /// Forget DoS state that no longer refuses anything: the addresses we
    /// own (telling the other workers of lapsed verdicts) and the verdicts
    /// we were told.
    fn purge_dos(&mut self, now: Instant) {
        use crate::proto::dos::{secs, secs32};
        let p = &self.snap.circuits.dos;
        for v in self.dos_table.purge(p, secs(now), secs32(now)) {
            self.splices.broadcast_dos(DosMsg::Verdict(v));
        }
        self.circuits.dos_purge(now);
    }

    /// Store this worker's DoS and onion-queue counters for the control
    /// plane's heartbeat when they changed (rarely: two comparisons per
    /// turn otherwise).
    fn publish_stats(&mut self) {
        let mut dos = self.circuits.dos_counters();
        dos.add(&self.dos_table.counters);
        dos.circ_max_cell_killed += self.queue_kills;
        let onion = self.circuits.onion_stats();
        let Some(t) = self.out.traffic.get(self.index) else {
            return;
        };
        if dos != self.dos_published {
            self.dos_published = dos;
            super::plane::store_all(&t.dos, &dos.to_array());
        }
        if onion != self.onion_published {
            self.onion_published = onion;
            super::plane::store_all(&t.onion, &onion.to_array());
        }
        // A plain load and compare per turn; stored only on a change.
        let circs = self.circuits.circuit_total() as u64;
        if t.circuits.load(Ordering::Relaxed) != circs {
            t.circuits.store(circs, Ordering::Relaxed);
        }
        let s = self.circuits.exit_stream_counts();
        super::plane::store_changed(&t.streams, &[s.begin, s.resolve, s.tcp_exhaustion]);
        // The MetricsPort's counts: each slot written only when it
        // changed (a few dozen plain loads per turn, nothing per cell).
        self.conn_counts.exit_rejected = s.rejected;
        use super::plane::store_changed;
        store_changed(&t.conns, &self.conn_counts.to_array());
        store_changed(&t.cells, &self.cells_io);
        store_changed(&t.tls, &self.tls_io);
        store_changed(&t.closed, &self.circuits.close_counts());
        store_changed(&t.connect, &self.connect_hist.to_array());
        store_changed(&t.circ, &self.circuits.counters());
        store_changed(&t.crypto, &self.circuits.crypto_cells());
        let cc = self.circuits.cc_stats();
        if *cc != self.cc_published {
            self.cc_published = *cc;
            super::plane::store_all(&t.cc, &cc.to_array());
        }
        for ((_, slots), s) in t.nameservers.iter().zip(self.resolver.server_stats()) {
            let mut a = [0u64; super::plane::NAMESERVER_FIELDS];
            a[0] = s.queries;
            for (x, e) in a.iter_mut().skip(1).zip(s.errors) {
                *x = e;
            }
            store_changed(slots, &a);
        }
        let dns = self.resolver.stats();
        if dns != self.dns_published {
            self.dns_published = dns;
            let mut a = [0u64; super::plane::DNS_FIELDS];
            a[0] = dns.lookups;
            a[1] = dns.cache_hits;
            for (x, r) in a.iter_mut().skip(2).zip(dns.results) {
                *x = r;
            }
            super::plane::store_all(&t.dns, &a);
        }
    }

    /// Count the open connections (the gauges of
    /// `tor_relay_connections`): one pass over them a few times a second,
    /// rather than bookkeeping at each of the many places one closes.
    fn survey_conns(&mut self) {
        use super::plane::family_index;
        let c = &mut self.conn_counts;
        c.or_open_initiated = [0; 2];
        c.or_open_received = [0; 2];
        c.exit_open = [0; 2];
        for conn in self.conns.values() {
            match conn {
                Conn::Or(or) if or.outbound.is_some() => {
                    c.or_open_initiated[family_index(or.peer.ip())] += 1;
                }
                Conn::Or(or) => c.or_open_received[family_index(or.peer.ip())] += 1,
                Conn::Exit(x) => c.exit_open[family_index(x.addr.ip())] += 1,
                Conn::Dns(_) => {}
            }
        }
    }

    /// Something happened that an address's DoS counts depend on: count it
    /// here if we own the address, else tell its owner.
    fn dos_event(&mut self, m: DosMsg) {
        let addr = match m {
            DosMsg::ConnOpened(a)
            | DosMsg::ConnClosed(a)
            | DosMsg::Create(a)
            | DosMsg::MaxOutq(a) => a,
            DosMsg::Verdict(v) => return self.circuits.dos_verdict(v),
        };
        let owner = crate::proto::dos::owner_of(addr, self.mail.peers.len());
        if owner == self.index {
            self.dos_owned(m);
        } else {
            self.splices.send_dos(WorkerId(owner), m);
        }
    }

    /// An event for an address we own: update its counts, and if its
    /// verdict changed, apply it here and send it to every worker.
    fn dos_owned(&mut self, m: DosMsg) {
        use crate::proto::dos::{secs, secs32};
        let now = Instant::now();
        let p = &self.snap.circuits.dos;
        let t = &mut self.dos_table;
        let v = match m {
            DosMsg::ConnOpened(a) => t.conn_opened(p, a, secs(now), secs32(now), &mut self.rng),
            DosMsg::ConnClosed(a) => t.conn_closed(p, a, secs(now), secs32(now)),
            DosMsg::Create(a) => t.create_cell(p, a, secs(now), &mut self.rng),
            DosMsg::MaxOutq(a) => t.circ_max_outq(p, a, secs(now), &mut self.rng),
            DosMsg::Verdict(v) => Some(v),
        };
        if let Some(v) = v {
            self.circuits.dos_verdict(v);
            self.splices.broadcast_dos(DosMsg::Verdict(v));
        }
    }

    /// A worker that has fallen this far behind on our messages gets no
    /// more of them: cut our splices with it (see proto::splice).
    /// Let the exit streams of blocked links that drained package again.
    fn unblock_links(&mut self, ops: &dyn Ops) {
        if self.blocked_links.is_empty() {
            return;
        }
        let mut still = std::mem::take(&mut self.blocked_links);
        still.retain(|&t| {
            let Some(Conn::Or(or)) = self.conns.get_mut(&t) else {
                return false;
            };
            let queued = ops.queued(t);
            let drained = queued <= LINK_BLOCK_LOW;
            self.circuits.set_chan_room(
                or.chan_id,
                LINK_BLOCK_HIGH as i64 - queued as i64,
                drained,
            );
            or.blocked = !drained;
            !drained
        });
        self.blocked_links = still;
    }

    fn check_backlogs(&mut self, ops: &dyn Ops) {
        for to in 0..self.mail.peers.len() {
            let queued = self
                .mail
                .in_flight(self.index, to)
                .map_or(0, |c| c.load(Ordering::Relaxed).max(0).unsigned_abs());
            if to != self.index {
                self.splices.taken(WorkerId(to), queued);
            }
            if to == self.index || queued <= CROSS_QUEUE_LIMIT {
                continue;
            }
            let cut = self
                .splices
                .cut_off(WorkerId(to), &mut self.circuits, &mut self.hosted_send);
            if cut > 0 {
                tracing::warn!(
                    "worker {to} is {queued} cells behind on worker {}'s messages: \
                     closed {cut} circuit(s) between them (RESOURCELIMIT)",
                    self.index
                );
            }
        }
        // One spliced circuit flooding the other worker loses only itself,
        // as a circuit whose queue on a link is too long.
        for (to, flow) in self.splices.take_over_cap() {
            let reason = DestroyReason::RESOURCELIMIT;
            let closed = match flow {
                Flow::Forward { chan, vcirc } => {
                    if let Some(addr) = self.circuits.exitward_client_addr(chan, vcirc) {
                        self.dos_event(DosMsg::MaxOutq(addr));
                    }
                    self.circuits.close_circuit_at(chan, vcirc, reason);
                    true
                }
                Flow::Backward { chan, circ_id } => self.splices.fail_hosted(
                    chan,
                    circ_id,
                    reason,
                    &mut self.circuits,
                    &mut self.hosted_send,
                ),
            };
            if closed {
                self.queue_kills += 1;
                tracing::info!(
                    "a spliced circuit has over {} cells waiting for worker {}: closing it \
                     (RESOURCELIMIT)",
                    self.snap.circuits.max_queue,
                    to.0
                );
            }
        }
        self.send_hosted(ops);
    }

    fn send_hosted(&mut self, ops: &dyn Ops) {
        let mut hosted = std::mem::take(&mut self.hosted_send);
        for h in hosted.drain(..) {
            self.send_on_chan(h.chan, h.circ_id, h.cmd, &h.body, ops);
        }
        self.hosted_send = hosted;
    }

    /// One message per worker with everything this turn produced for it.
    ///
    /// A worker is woken only when nothing of ours was waiting for it: if
    /// something was, it has not finished its `read_mail` since, and will
    /// take this batch in the same loop (it takes batches until the inbox
    /// is empty and subtracts each one before looking for the next). That
    /// saves a wakeup per batch while a worker is busy.
    fn send_mail(&mut self) {
        for (to, items) in self.splices.take_outboxes() {
            let Some(p) = self.mail.peers.get(to.0) else {
                continue;
            };
            let n = isize::try_from(items.len()).unwrap_or(isize::MAX);
            let batch = Batch {
                from: WorkerId(self.index),
                items,
            };
            // A worker that stopped has dropped its inbox: nothing to tell
            // it any more.
            if p.tx.send(batch).is_err() {
                continue;
            }
            let before = self
                .mail
                .in_flight(self.index, to.0)
                .map_or(0, |c| c.fetch_add(n, Ordering::SeqCst));
            if before <= 0 {
                p.waker.wake();
            }
        }
    }

    /// Move what channels queued into TLS records, and those to the socket.
    fn flush_links(&mut self, ops: &mut dyn Ops) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for t in dirty.drain(..) {
            let Some(Conn::Or(or)) = self.conns.get_mut(&t) else {
                continue;
            };
            self.plain.clear();
            if let Some(ch) = or.channel.as_mut()
                && ch.has_output()
            {
                ch.take_output(&mut self.plain);
                // An open channel writes fixed-size cells only (padding
                // aside): this flush's cells, counted at once.
                if ch.is_open() {
                    self.cells_io[1] += (self.plain.len() / WIRE_CELL_LEN) as u64;
                }
            }
            if let Some(out) = ops.out_buf(t) {
                let before = out.len();
                or.tls.encrypt_into(&self.plain, out);
                let tls = (out.len() - before) as u64;
                self.tls_io[1] += tls;
                if or.counted {
                    self.turn_written += tls;
                }
            } else if !self.plain.is_empty() {
                or.tls.write_plain(&self.plain);
            }
            // Once the link is open, TLS 1.3 records are ours to seal and
            // open (runtime/tls/record.rs): rustls's copies were a fifth
            // of an exit's CPU.
            if or.opened && !or.tls.handed_over() {
                match or.tls.hand_over() {
                    Ok(HandOver::Done) => {
                        tracing::debug!("link with {}: TLS records handed over", or.describe());
                    }
                    Ok(HandOver::NotNow) => {}
                    Err(e) => {
                        let why = format!("TLS handover failed: {e}");
                        self.close_conn_now(t, ops, &why);
                        continue;
                    }
                }
            }
            // Circuit windows bound what well-behaved peers make us queue
            // (a full window is 1000 cells). A link whose peer stops reading
            // while cells keep arriving for it would grow without bound: past
            // LINK_QUEUE_LIMIT its circuits with more than a window's worth
            // waiting are closed (RESOURCELIMIT), as C tor's OOM handler
            // kills the circuits with the most queued; past LINK_HARD_LIMIT
            // the link itself goes (its circuits get DESTROY).
            let queued = ops.queued(t);
            self.circuits.set_chan_room(
                or.chan_id,
                LINK_BLOCK_HIGH as i64 - queued as i64,
                queued <= LINK_BLOCK_LOW,
            );
            if queued > LINK_BLOCK_LOW && !or.blocked {
                or.blocked = true;
                self.blocked_links.push(t);
            }
            if queued > LINK_HARD_LIMIT {
                let why = format!("peer is not reading: over {LINK_HARD_LIMIT} bytes queued");
                self.close_conn_now(t, ops, &why);
            } else if queued > LINK_QUEUE_LIMIT {
                or.queue.sync(queued / WIRE_CELL_LEN);
                let heavy_over =
                    u32::try_from(self.snap.circuits.max_queue / 2).unwrap_or(u32::MAX);
                let heavy = or.queue.heavier_than(heavy_over);
                if !heavy.is_empty() {
                    tracing::info!(
                        "link with {} has {queued} bytes waiting: closing {} circuit(s) \
                         with over {heavy_over} cells queued on it (RESOURCELIMIT)",
                        or.describe(),
                        heavy.len()
                    );
                }
                for id in heavy {
                    or.queue.forget(id);
                    if !self.over_cap.contains(&(or.chan_id, id)) {
                        self.over_cap.push((or.chan_id, id));
                    }
                }
            }
        }
        self.dirty = dirty;
    }

    /// What this worker holds in its queues (see [`crate::proto::oom`]).
    fn mem_usage(&self, ops: &dyn Ops) -> crate::proto::oom::MemUsage {
        let mut u = crate::proto::oom::MemUsage::default();
        for (t, c) in &self.conns {
            match c {
                Conn::Or(_) => u.links += ops.queued(*t) as u64,
                Conn::Exit(x) => {
                    u.streams += (ops.queued(*t) + x.held.len() - x.held_off) as u64;
                }
                Conn::Dns(_) => {}
            }
        }
        u.streams += self.circuits.optimistic_bytes() as u64;
        u.onion = self.circuits.onion_backlog() as u64 * ONION_ENTRY_BYTES;
        u.dns = self.resolver.cache_bytes() as u64;
        u.conflux = self.circuits.conflux_queued_bytes() as u64;
        u
    }

    /// Publish what this worker holds, add up every worker's, and past
    /// `MaxMemInQueues` free this worker's share (relay.c:
    /// cell_queues_check_size → circuitlist.c:circuits_handle_oom).
    fn check_memory(&mut self, ops: &mut dyn Ops) {
        use crate::proto::oom::{Victim, plan};
        #[derive(Clone, Copy)]
        enum Kill {
            Stream(Token),
            /// A stream not connected yet, holding optimistic data.
            Optimistic(StreamKey),
            Circuit(ChanId, CircId),
            /// A conflux set holding cells out of order, by one of its legs.
            ConfluxSet(u64),
        }
        let mine = self.mem_usage(ops);
        let traffic = &self.out.traffic;
        if let Some(t) = traffic.get(self.index) {
            t.mem.store(mine.total(), Ordering::Relaxed);
        }
        let total: u64 = traffic.iter().map(|t| t.mem.load(Ordering::Relaxed)).sum();
        let limit = self.snap.circuits.max_mem_in_queues;
        if mine.total() > 0 {
            tracing::debug!(worker = self.index, ?mine, total, limit, "queued memory");
        }
        if total < limit {
            return;
        }
        let mut victims = Vec::new();
        for (t, c) in &self.conns {
            match c {
                Conn::Exit(x) => {
                    let bytes = (ops.queued(*t) + x.held.len() - x.held_off) as u64;
                    if bytes > 0 {
                        let since = match (x.out_since, x.held_since) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        victims.push(Victim {
                            since,
                            bytes,
                            what: Kill::Stream(*t),
                        });
                    }
                }
                Conn::Or(or) => {
                    for (id, since, cells) in or.queue.oldest_cells() {
                        victims.push(Victim {
                            since,
                            bytes: u64::from(cells) * WIRE_CELL_LEN as u64,
                            what: Kill::Circuit(or.chan_id, id),
                        });
                    }
                }
                Conn::Dns(_) => {}
            }
        }
        for (key, bytes, since) in self.circuits.optimistic_streams() {
            victims.push(Victim {
                since,
                bytes: bytes as u64,
                what: Kill::Optimistic(key),
            });
        }
        for (since, bytes, leg) in self.circuits.conflux_queues() {
            victims.push(Victim {
                since,
                bytes: bytes as u64,
                what: Kill::ConfluxSet(leg),
            });
        }
        let Some(p) = plan(limit, total, &mine, traffic.len(), victims) else {
            return;
        };
        // C's notice, with oxit's parts of the total.
        tracing::info!(
            "We're low on memory (cell queues total alloc: {} buffer total alloc: {}, \
             onion queue: {}, dns cache: {}; all workers: {total} of MaxMemInQueues {limit}). \
             Killing circuits withover-long queues. (This behavior is controlled by \
             MaxMemInQueues.)",
            mine.links,
            mine.streams,
            mine.onion,
            mine.dns
        );
        let mut freed = 0u64;
        if let Some(to) = p.dns_to {
            freed +=
                self.resolver
                    .shrink_cache(usize::try_from(to).unwrap_or(usize::MAX)) as u64;
        }
        let dns_freed = freed;
        let (mut circs, mut streams) = (0u64, 0u64);
        for k in p.kill {
            match k {
                Kill::Stream(t) => {
                    let Some(Conn::Exit(x)) = self.conns.remove(&t) else {
                        continue;
                    };
                    freed += (ops.queued(t) + x.held.len() - x.held_off) as u64;
                    self.streams.remove(&x.key);
                    self.circuits.end_stream_for_memory(x.key, &mut self.rng);
                    // At once: what it held is what we want back.
                    ops.close(t, false);
                    streams += 1;
                }
                Kill::Optimistic(key) => {
                    freed += self.circuits.optimistic_bytes_of(key).unwrap_or(0) as u64;
                    // END RESOURCELIMIT; the lookup or connect is dropped
                    // with the CloseStream that follows.
                    self.circuits.end_stream_for_memory(key, &mut self.rng);
                    streams += 1;
                }
                Kill::Circuit(chan, id) => {
                    if let Some(&t) = self.chans.get(&chan)
                        && let Some(Conn::Or(or)) = self.conns.get_mut(&t)
                    {
                        freed += u64::from(or.queue.of(id)) * WIRE_CELL_LEN as u64;
                        or.queue.forget(id);
                    }
                    self.circuits
                        .close_circuit_at(chan, id, DestroyReason::RESOURCELIMIT);
                    circs += 1;
                }
                Kill::ConfluxSet(leg) => {
                    let before = self.circuits.conflux_queued_bytes();
                    let alive = self.circuits.circuit_total();
                    self.circuits.close_conflux_set(leg);
                    freed += before.saturating_sub(self.circuits.conflux_queued_bytes()) as u64;
                    circs += alive.saturating_sub(self.circuits.circuit_total()) as u64;
                }
            }
        }
        // For tor_relay_load_oom_bytes_total{subsys="cell"|"dns"}.
        if let Some(t) = self.out.traffic.get(self.index) {
            t.oom[0].fetch_add(freed.saturating_sub(dns_freed), Ordering::Relaxed);
            t.oom[1].fetch_add(dns_freed, Ordering::Relaxed);
        }
        tracing::info!(
            "Removed {freed} bytes by killing {circs} circuits; {} circuits remain alive. \
             Also killed 0 non-linked directory connections. Killed {streams} edge connections",
            self.circuits.circuit_total()
        );
    }

    fn tick(&mut self, ops: &mut dyn Ops) {
        let now = Instant::now();
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + CHANNEL_TICK;
        self.check_memory(ops);
        self.survey_conns();
        for t in self.dns_socks.due(now) {
            self.conns.remove(&t);
            ops.close(t, false);
        }
        if now >= self.next_collect {
            self.next_collect = now + COLLECT_EVERY;
            self.circuits.shrink();
            // SAFETY: mi_collect only walks this thread's own heap; with
            // another global allocator it finds nothing to do.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
        if now >= self.next_dos_purge {
            self.next_dos_purge = now + DOS_PURGE_EVERY;
            self.purge_dos(now);
        }
        let mut dead = Vec::new();
        let counts = self.circuits.circuit_counts();
        for (t, c) in self.conns.iter_mut() {
            let Conn::Or(or) = c else { continue };
            if let Some(ob) = &or.outbound
                && !or.opened
                && now > ob.deadline
            {
                dead.push((*t, "outbound link did not open in time".to_string()));
                continue;
            }
            if let Some(ch) = or.channel.as_mut() {
                ch.note_circuits(counts.get(&or.chan_id).copied().unwrap_or(0), now);
                if let Err(e) = ch.handle_timeout(now) {
                    dead.push((*t, e.to_string()));
                    continue;
                }
                if ch.has_output() {
                    self.dirty.push(*t);
                }
            }
        }
        for (t, why) in dead {
            self.close_conn(t, ops, &why);
        }
    }
}

impl Handler for Worker {
    fn on_event(&mut self, ev: Event<'_>, ops: &mut dyn Ops) {
        match ev {
            Event::Accepted { fd, peer } => {
                let Some(peer) = peer else { return };
                // Before TLS or anything else costs us: a refused socket is
                // closed at once and counts for nothing
                // (connection.c:connection_handle_listener_read).
                let now = Instant::now();
                let family = super::plane::family_index(peer.ip());
                if self.circuits.dos_refuse_connection(peer.ip(), now) {
                    self.conn_counts.or_rejected[family] += 1;
                    drop(fd);
                    return;
                }
                if self.handshaking.get(&peer.ip()).copied().unwrap_or(0) >= MAX_HANDSHAKES_PER_ADDR
                {
                    // Refused at accept as the DoS defense refuses: a
                    // rejected OR connection too.
                    self.conn_counts.or_rejected[family] += 1;
                    tracing::debug!(
                        "refusing a connection from {}: {MAX_HANDSHAKES_PER_ADDR} handshakes \
                         from it are unfinished",
                        crate::control::logging::Scrub(peer.ip())
                    );
                    drop(fd);
                    return;
                }
                let tls = match TlsConn::server(&self.snap.server_tls) {
                    Ok(t) => t,
                    Err(e) => {
                        let peer = crate::control::logging::Scrub(peer);
                        return tracing::warn!("cannot start TLS for {peer}: {e}");
                    }
                };
                let Ok(t) = ops.add_conn(fd) else { return };
                self.conn_counts.or_received[family] += 1;
                // Counted only once the connection exists, so that every
                // count is undone when it closes.
                *self.handshaking.entry(peer.ip()).or_insert(0) += 1;
                let dos_tracked = self.snap.circuits.dos.addr_tracking();
                if dos_tracked {
                    self.dos_event(DosMsg::ConnOpened(peer.ip()));
                }
                let chan_id = self.new_chan_id();
                let channel = Channel::new_responder(
                    self.snap.link.clone(),
                    self.snap.own_tls_sha256,
                    peer.ip(),
                    Instant::now(),
                );
                self.chans.insert(chan_id, t);
                self.conns.insert(
                    t,
                    Conn::Or(Box::new(OrConn {
                        tls,
                        chan_id,
                        channel: Some(channel),
                        peer,
                        outbound: None,
                        opened: false,
                        queue: CircQueue::default(),
                        synced: 0,
                        counted: self.counts(peer.ip()),
                        reach_witness: false,
                        dos_tracked,
                        handshaking: true,
                        blocked: false,
                    })),
                );
                self.hold_if_rate_paused(t, ops);
            }
            Event::Recv(t, data) => match self.conns.get(&t) {
                Some(Conn::Or(_)) => self.on_or_recv(t, data, ops),
                Some(Conn::Exit(_)) => self.on_exit_recv(t, data, ops),
                Some(Conn::Dns(from)) => {
                    let from = *from;
                    self.resolver.handle_datagram(Instant::now(), from, data);
                }
                None => {}
            },
            Event::RecvClosed(t, err) => match self.conns.get_mut(&t) {
                Some(Conn::Exit(x)) => {
                    let key = x.key;
                    if x.held.is_empty() {
                        self.circuits
                            .handle_stream_eof(key, err, Instant::now(), &mut self.rng);
                    } else {
                        x.held_eof = Some(err);
                    }
                }
                // Nobody reads what is still queued for a peer that ended
                // its side: close at once, as C tor does at EOF
                // (connection_reached_eof), rather than wait for a flush
                // that a peer with a zero window never allows.
                Some(Conn::Or(_)) => self.close_conn_now(t, ops, "peer closed the connection"),
                // A connected UDP socket reports an ICMP error (e.g. the
                // nameserver restarting) as a receive error and stops
                // receiving: replace it on the next query.
                Some(Conn::Dns(_)) => self.close_conn(t, ops, "DNS socket error"),
                None => {}
            },
            Event::Connected(t, res) => match self.conns.get_mut(&t) {
                Some(Conn::Exit(x)) => {
                    let key = x.key;
                    let res = res.map(|()| x.addr);
                    let now = Instant::now();
                    if res.is_err() {
                        self.streams.remove(&key);
                        self.conns.remove(&t);
                        ops.close(t, false);
                    } else {
                        self.connect_hist
                            .observe(now.saturating_duration_since(x.started));
                    }
                    self.circuits.handle_connected(key, res, now, &mut self.rng);
                }
                Some(Conn::Or(or)) => match res {
                    Ok(()) => {
                        // Start the TLS handshake (ClientHello).
                        if let Some(out) = ops.out_buf(t) {
                            or.tls.write_tls_into(out);
                        }
                    }
                    Err(e) => self.close_conn(t, ops, &format!("connect failed: {e}")),
                },
                _ => {}
            },
            Event::SendDrained(t) => {
                if let Some(Conn::Exit(x)) = self.conns.get_mut(&t) {
                    x.out_since = None;
                    let key = x.key;
                    self.circuits
                        .handle_stream_drained(key, Instant::now(), &mut self.rng);
                }
            }
            Event::SendFailed(t, e) => match self.conns.get(&t) {
                Some(Conn::Exit(x)) => {
                    let key = x.key;
                    self.circuits
                        .handle_stream_eof(key, Some(e), Instant::now(), &mut self.rng);
                }
                Some(_) => self.close_conn(t, ops, &format!("write failed: {e}")),
                None => {}
            },
            Event::Woken => {
                while let Ok(s) = self.feed.try_recv() {
                    self.circuits.set_config(s.circuits.clone());
                    self.splices.set_flow_cap(s.circuits.max_queue);
                    if s.link.my_addrs() != self.snap.link.my_addrs() {
                        self.reach_reported = false;
                    }
                    self.count_private = s.circuits.count_private_bandwidth;
                    self.snap = s;
                }
            }
        }
    }

    fn end_of_turn(&mut self, ops: &mut dyn Ops) {
        let now = Instant::now();
        self.resolver.handle_timeout(now);
        self.circuits.handle_timeout(now, &mut self.rng);
        let onions_wait = self.circuits.run_onion_queue(now, &mut self.rng);
        self.turn += 1;
        self.read_mail(ops);
        self.check_backlogs(ops);
        self.unblock_links(ops);
        self.tick(ops);
        self.run_actions(ops);
        self.flush_links(ops);
        self.send_mail();
        self.publish_stats();
        self.rate_limit(ops);
        if self.turn_read + self.turn_written > 0
            && let Some(t) = self.out.traffic.get(self.index)
        {
            t.read.fetch_add(self.turn_read, Ordering::Relaxed);
            t.written.fetch_add(self.turn_written, Ordering::Relaxed);
            self.turn_read = 0;
            self.turn_written = 0;
        }
        // Circuits found over a link's limits in flush_links are closed at
        // the start of the next turn: make it come at once.
        // So are creates left over from this turn's handshake budget.
        if (!self.over_cap.is_empty() || onions_wait)
            && let Some(me) = self.mail.peers.get(self.index)
        {
            me.waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::channel::PeerKind;

    #[test]
    fn only_relays_are_named_in_logs() {
        // SafeLogging 1, the default (this process never turns it off).
        let a: SocketAddr = "198.51.100.7:443".parse().unwrap();
        let relay = PeerKind::Relay {
            rsa_id: [0xAB; 20],
            ed_id: [0; 32],
        };
        assert_eq!(
            describe_peer(a, Some(&PeerKind::Client), None),
            "[scrubbed]"
        );
        assert_eq!(describe_peer(a, None, None), "[scrubbed]");
        let named = format!("198.51.100.7:443 RSA_ID={}", "AB".repeat(20));
        assert_eq!(describe_peer(a, Some(&relay), None), named);
        // An outbound link to the relay an EXTEND2 named, before it opens.
        assert_eq!(describe_peer(a, None, Some(&[0xAB; 20])), named);
    }
}
