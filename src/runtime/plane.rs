//! The data plane as the control plane sees it: starting one worker per
//! core ([`DataPlane::start`]), handing them snapshots (keys, TLS, the
//! circuit layer's configuration and what the consensus says), taking the
//! events they report, reading their traffic counters, and waiting for them
//! to stop.
//!
//! Only these cross threads: `Arc` snapshots, one event per rare
//! occurrence, and one relaxed add per worker turn to the traffic counters.

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender};

use crate::config::Config;
use crate::control::Shutdown;
use crate::crypto::keys::RelayKeys;
use crate::proto::channel::LinkKeys;
use crate::proto::circuit::CircuitConfig;

use super::driver::{self, Backend, Waker};
use super::relay::{RunError, choose_backend, worker_count};
use super::tls;
use super::worker::{Mail, Peer, Worker};

/// What the control thread hands workers when keys, the consensus or the
/// configuration change.
pub struct Snapshot {
    pub link: Arc<LinkKeys>,
    pub server_tls: Arc<rustls::ServerConfig>,
    pub own_tls_sha256: [u8; 32],
    pub circuits: Arc<CircuitConfig>,
}

/// The snapshot workers start with, and get again when keys change:
/// link certificates, the TLS server configuration and `circuits`.
pub fn build_snapshot(
    keys: &RelayKeys,
    addrs: Vec<IpAddr>,
    circuits: Arc<CircuitConfig>,
) -> Result<Snapshot, RunError> {
    let link = Arc::new(LinkKeys::from_relay_keys(keys, addrs));
    let server_tls = tls::server_config(keys.tls()).map_err(|e| RunError::Tls(e.to_string()))?;
    Ok(Snapshot {
        link,
        server_tls,
        own_tls_sha256: *keys.tls().cert_sha256(),
        circuits,
    })
}

/// What workers tell the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaneEvent {
    /// A CREATE arrived on an inbound channel whose peer's NETINFO names
    /// our published address `addr`: the ORPort is reachable from outside
    /// (circuitbuild_relay.c:onionskin_answer → router_orport_found_reachable).
    Reachable(IpAddr),
}

/// Bytes a worker read from and wrote to the network, published once per
/// turn (one relaxed add each, never per cell) for the bandwidth history.
///
/// Each worker's block starts on its own cache-line pair, so that one
/// worker's per-turn stores never share a line with its neighbour's.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Traffic {
    pub read: AtomicU64,
    pub written: AtomicU64,
    /// The worker's DoS counters ([`crate::proto::dos::DosStats::to_array`]),
    /// stored when they change (at most once per turn).
    pub dos: [AtomicU64; 7],
    /// The worker's onion-queue counters
    /// ([`crate::proto::circuit::OnionStats::to_array`]), stored when they
    /// change (at most once per turn).
    pub onion: [AtomicU64; crate::proto::circuit::OnionStats::FIELDS],
    /// Bytes the worker holds in its queues ([`crate::proto::oom::MemUsage`]),
    /// stored a few times a second; every worker reads all of them.
    pub mem: AtomicU64,
    /// Circuits in the worker's table, stored when it changes (at most
    /// once per turn).
    pub circuits: AtomicU64,
    /// The worker's resolver: lookups, cache hits, then the results
    /// by [`crate::exit::dns::DNS_RESULT_NAMES`]; stored when they change.
    pub dns: [AtomicU64; DNS_FIELDS],
    /// Exit streams seen: BEGIN (connected to), RESOLVE; then exit
    /// connects that found no free local port.
    pub streams: [AtomicU64; 3],
    /// Bytes the out-of-memory handler freed: cell and stream queues,
    /// then the DNS cache (added when it runs, which is rare).
    pub oom: [AtomicU64; 2],
    /// The worker's connections ([`ConnCounts::to_array`]): counts stored
    /// when they change, open ones as last surveyed (a few times a
    /// second).
    pub conns: [AtomicU64; ConnCounts::FIELDS],
    /// Cells received and sent on the worker's links, counted per batch
    /// (a link's input, a link's flush); stored when they change.
    pub cells: [AtomicU64; 2],
    /// TLS bytes read and written on the worker's links, all of them
    /// (private addresses too, unlike `read`/`written`); stored when they
    /// change.
    pub tls: [AtomicU64; 2],
    /// Circuits the worker's table closed, by reason
    /// ([`crate::proto::circuit::CircuitTable::close_counts`]).
    pub closed: [AtomicU64; crate::proto::circuit::CLOSE_REASON_SLOTS],
    /// Exit connect latency ([`ConnectHistogram::to_array`]).
    pub connect: [AtomicU64; ConnectHistogram::FIELDS],
    /// Cells through the worker's relay crypto, forward and backward
    /// ([`crate::proto::circuit::CircuitTable::crypto_cells`]).
    pub crypto: [AtomicU64; 2],
    /// The circuit table's event counts
    /// ([`crate::proto::circuit::CircuitTable::counters`]).
    pub circ: [AtomicU64; crate::proto::circuit::CircCounter::SLOTS],
    /// Congestion control's statistics
    /// ([`crate::proto::cc::CcStats::to_array`]), stored when they change.
    /// Inline, like every slot: in the worker's own cache lines.
    pub cc: Slots<{ crate::proto::cc::CcStats::FIELDS }>,
    /// The worker's resolver, per nameserver (the same list, in the same
    /// order, in every worker): queries, then errors by
    /// [`crate::exit::dns::SERVER_ERROR_NAMES`].
    pub nameservers: Box<[(std::net::SocketAddr, [AtomicU64; NAMESERVER_FIELDS])]>,
}

/// `N` counters, for arrays longer than `Default` is derived for.
#[derive(Debug)]
pub struct Slots<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Slots<N> {
    fn default() -> Self {
        Slots(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> std::ops::Deref for Slots<N> {
    type Target = [AtomicU64];
    fn deref(&self) -> &[AtomicU64] {
        &self.0
    }
}

/// Length of [`Traffic::dns`].
pub const DNS_FIELDS: usize = 2 + crate::exit::dns::DNS_RESULT_NAMES.len();

/// Length of each of [`Traffic::nameservers`]' counters.
pub const NAMESERVER_FIELDS: usize = 1 + crate::exit::dns::SERVER_ERROR_NAMES.len();

impl Traffic {
    /// A worker's slots, with one set per nameserver its resolver asks.
    pub fn new(nameservers: &[std::net::SocketAddr]) -> Traffic {
        Traffic {
            nameservers: nameservers
                .iter()
                .map(|a| (*a, std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            ..Traffic::default()
        }
    }
}

/// Index of an address family in [`ConnCounts`]: IPv4 0, IPv6 1.
pub fn family_index(ip: IpAddr) -> usize {
    usize::from(ip.to_canonical().is_ipv6())
}

/// A worker's connections as C tor's `tor_relay_connections{,_total}`
/// count them (rephist.c: rep_hist_note_conn_*), for the two connection
/// types a worker has: "OR" (links, both ways) and "Exit" (exit streams'
/// TCP connections, always initiated). Each `[_; 2]` is by address
/// family ([`family_index`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnCounts {
    /// Links we opened (connect started), and links we accepted.
    pub or_initiated: [u64; 2],
    pub or_received: [u64; 2],
    /// Inbound connections refused before anything else (DoS
    /// defenses, too many unfinished handshakes from one address).
    pub or_rejected: [u64; 2],
    /// Open now, initiated and received (a gauge).
    pub or_open_initiated: [u64; 2],
    pub or_open_received: [u64; 2],
    /// Exit connects started.
    pub exit_initiated: [u64; 2],
    /// Exit streams refused by the exit policy or the re-entry rule.
    pub exit_rejected: [u64; 2],
    /// Exit connections open now, connecting ones included (a gauge).
    pub exit_open: [u64; 2],
    /// This worker's ORPort listeners open now (C tor's "OR listener",
    /// counted as initiated connections; a gauge), and opened so far
    /// (hibernation closes and reopens them).
    pub listeners: [u64; 2],
    pub listeners_created: [u64; 2],
}

impl ConnCounts {
    pub const FIELDS: usize = 20;

    pub fn to_array(&self) -> [u64; Self::FIELDS] {
        let parts = [
            self.or_initiated,
            self.or_received,
            self.or_rejected,
            self.or_open_initiated,
            self.or_open_received,
            self.exit_initiated,
            self.exit_rejected,
            self.exit_open,
            self.listeners,
            self.listeners_created,
        ];
        std::array::from_fn(|i| parts[i / 2][i % 2])
    }

    pub fn from_array(a: [u64; Self::FIELDS]) -> ConnCounts {
        let f = |i: usize| [a[2 * i], a[2 * i + 1]];
        ConnCounts {
            or_initiated: f(0),
            or_received: f(1),
            or_rejected: f(2),
            or_open_initiated: f(3),
            or_open_received: f(4),
            exit_initiated: f(5),
            exit_rejected: f(6),
            exit_open: f(7),
            listeners: f(8),
            listeners_created: f(9),
        }
    }

    pub fn add(&mut self, o: &ConnCounts) {
        let mut a = self.to_array();
        for (x, y) in a.iter_mut().zip(o.to_array()) {
            *x += y;
        }
        *self = ConnCounts::from_array(a);
    }
}

/// Time from an exit connect's start to its connection, as a Prometheus
/// histogram with fixed buckets: plain counts in the worker, one
/// observation per connected stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectHistogram {
    /// Per bucket of [`CONNECT_BUCKETS`] (not cumulative), then the
    /// connects slower than the last bound.
    pub counts: [u64; CONNECT_BUCKETS.len() + 1],
    /// Sum of every observation, in microseconds.
    pub sum_us: u64,
}

/// Upper bounds of the connect-latency buckets, in seconds: from a
/// destination in the same data centre to one across the world on a
/// lossy path (a lost SYN costs a second), up to the stream setup
/// timeout's range.
pub const CONNECT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl ConnectHistogram {
    pub const FIELDS: usize = CONNECT_BUCKETS.len() + 2;

    pub fn observe(&mut self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let i = CONNECT_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(CONNECT_BUCKETS.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn to_array(&self) -> [u64; Self::FIELDS] {
        std::array::from_fn(|i| self.counts.get(i).copied().unwrap_or(self.sum_us))
    }

    pub fn from_array(a: [u64; Self::FIELDS]) -> ConnectHistogram {
        ConnectHistogram {
            counts: std::array::from_fn(|i| a[i]),
            sum_us: a[Self::FIELDS - 1],
        }
    }

    pub fn add(&mut self, o: &ConnectHistogram) {
        for (x, y) in self.counts.iter_mut().zip(o.counts) {
            *x += y;
        }
        self.sum_us = self.sum_us.saturating_add(o.sum_us);
    }
}

/// The running workers, as the control plane sees them.
pub struct DataPlane {
    handles: Vec<std::thread::JoinHandle<Result<(), String>>>,
    feeds: Vec<(Sender<Arc<Snapshot>>, Arc<Waker>)>,
    snap: Arc<Snapshot>,
    events: Receiver<PlaneEvent>,
    traffic: Arc<[Traffic]>,
    limit: Arc<super::ratelimit::RateLimit>,
}

/// The ORPort sockets, one `SO_REUSEPORT` listener per port for each
/// worker, bound before anything else so that a busy port is reported at
/// once and so that `User` can give up root before any peer is heard.
/// The second field: how many of each worker's listeners are IPv4 and
/// IPv6 (for `tor_relay_connections{type="OR listener"}`).
pub struct Listeners(Vec<Vec<OwnedFd>>, [u64; 2]);

impl Listeners {
    pub fn bind(config: &Config) -> Result<Listeners, RunError> {
        let n = worker_count(config.num_cpus);
        let mut per_worker = Vec::with_capacity(n);
        for _ in 0..n {
            let mut fds = Vec::new();
            for p in config.or_ports.iter().filter(|p| !p.no_listen) {
                let fd = driver::reuseport_listener(p.addr).map_err(|source| RunError::Listen {
                    addr: p.addr,
                    source,
                })?;
                fds.push(fd);
            }
            per_worker.push(fds);
        }
        let mut families = [0u64; 2];
        for p in config.or_ports.iter().filter(|p| !p.no_listen) {
            families[family_index(p.addr.ip())] += 1;
        }
        Ok(Listeners(per_worker, families))
    }
}

impl DataPlane {
    /// Bind the listeners and start one worker per core.
    pub fn start(
        config: &Config,
        snap: Snapshot,
        listeners: Listeners,
        shutdown: Arc<Shutdown>,
    ) -> Result<DataPlane, RunError> {
        let backend = choose_backend(config.io_backend)?;
        let n = listeners.0.len();
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let resolver_cfg = super::relay::resolver_config(config)?;
        let client_tls = tls::client_config().map_err(|e| RunError::Tls(e.to_string()))?;
        let snap = Arc::new(snap);
        let mut handles = Vec::new();
        let mut feeds: Vec<(Sender<Arc<Snapshot>>, Arc<Waker>)> = Vec::new();
        let (event_tx, events) = crossbeam_channel::unbounded();
        let traffic: Arc<[Traffic]> = (0..n)
            .map(|_| Traffic::new(&resolver_cfg.nameservers))
            .collect();
        let limit = Arc::new(super::ratelimit::RateLimit::default());
        if let Some((rate, burst)) = config.rate_limit() {
            limit.set(rate, burst, std::time::Instant::now());
        }
        // Every worker can message every other one (splices); all mailboxes
        // exist before the first worker starts.
        let mut inboxes = Vec::new();
        let mut peers = Vec::new();
        for index in 0..n {
            let waker =
                Arc::new(Waker::new().map_err(|source| RunError::Worker { index, source })?);
            let (tx, rx) = crossbeam_channel::unbounded();
            peers.push(Peer { tx, waker });
            inboxes.push(rx);
        }
        let peers: Arc<[Peer]> = peers.into();
        let in_flight: Arc<[AtomicIsize]> = (0..n * n).map(|_| AtomicIsize::new(0)).collect();
        let set_hasher = std::hash::RandomState::new();
        let listener_families = listeners.1;
        let mut listeners = listeners.0.into_iter();
        for (index, inbox) in inboxes.into_iter().enumerate() {
            let listeners = listeners.next().unwrap_or_default();
            let waker = peers[index].waker.clone();
            shutdown.add_waker(waker.clone());
            let (tx, rx) = crossbeam_channel::unbounded();
            feeds.push((tx, waker.clone()));
            let core = if cores.is_empty() {
                None
            } else {
                cores.get(index % cores.len()).copied()
            };
            let sd = shutdown.clone();
            let snap = snap.clone();
            let client_tls = client_tls.clone();
            let resolver_cfg = resolver_cfg.clone();
            let mail = Mail {
                inbox,
                peers: peers.clone(),
                in_flight: in_flight.clone(),
                set_hasher: set_hasher.clone(),
            };
            let out = Outbox {
                events: event_tx.clone(),
                traffic: traffic.clone(),
                limit: limit.clone(),
                listeners: listener_families,
            };
            let h = std::thread::Builder::new()
                .name(format!("oxit-worker-{index}"))
                .spawn(move || -> Result<(), String> {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    // The ring is created on its thread: SINGLE_ISSUER ties
                    // it to the thread that first submits.
                    let mut d = driver::new_driver(backend, waker).map_err(|e| e.to_string())?;
                    for l in listeners {
                        d.listen(l).map_err(|e| e.to_string())?;
                    }
                    let mut w = Worker::new(index, snap, client_tls, resolver_cfg, rx, mail, out);
                    w.run(d.as_mut(), &sd).map_err(|e| e.to_string())
                })
                .map_err(|source| RunError::Worker { index, source })?;
            handles.push(h);
        }
        tracing::info!(
            "relay running: {n} worker(s) on {}",
            match backend {
                Backend::Uring => "io_uring",
                Backend::Epoll => "epoll",
            }
        );
        Ok(DataPlane {
            handles,
            feeds,
            snap,
            events,
            traffic,
            limit,
        })
    }

    fn send(&mut self, s: Snapshot) {
        let s = Arc::new(s);
        for (tx, w) in &self.feeds {
            let _ = tx.send(s.clone());
            w.wake();
        }
        self.snap = s;
    }

    /// New keys or addresses (and with them link certificates, TLS and
    /// onion keys): new handshakes use them, circuits already built keep
    /// theirs.
    pub fn set_keys(
        &mut self,
        keys: &RelayKeys,
        addrs: Vec<IpAddr>,
        circuits: Arc<CircuitConfig>,
    ) -> Result<(), RunError> {
        let s = build_snapshot(keys, addrs, circuits)?;
        self.send(s);
        Ok(())
    }

    /// A new circuit-layer snapshot (a new consensus, new onion keys).
    pub fn set_circuits(&mut self, circuits: Arc<CircuitConfig>) {
        let s = Snapshot {
            link: self.snap.link.clone(),
            server_tls: self.snap.server_tls.clone(),
            own_tls_sha256: self.snap.own_tls_sha256,
            circuits,
        };
        self.send(s);
    }

    /// What the workers reported since the last call.
    pub fn poll_event(&self) -> Option<PlaneEvent> {
        self.events.try_recv().ok()
    }

    /// Total bytes read and written so far, over every worker.
    pub fn traffic(&self) -> (u64, u64) {
        self.traffic.iter().fold((0, 0), |(r, w), t| {
            (
                r + t.read.load(Ordering::Relaxed),
                w + t.written.load(Ordering::Relaxed),
            )
        })
    }

    /// New bandwidth limits (a reload): `None` lifts them.
    pub fn set_rate_limit(&self, limit: Option<(u64, u64)>) {
        let (rate, burst) = limit.unwrap_or((0, 0));
        self.limit.set(rate, burst, std::time::Instant::now());
    }

    /// Every worker's connection counts, summed (the heartbeat's
    /// connection figures).
    pub fn conn_counts(&self) -> ConnCounts {
        let mut total = ConnCounts::default();
        for t in self.traffic.iter() {
            total.add(&ConnCounts::from_array(load_slots(&t.conns)));
        }
        total
    }

    /// Open circuits over every worker, as last published.
    pub fn circuits(&self) -> u64 {
        self.traffic
            .iter()
            .map(|t| t.circuits.load(Ordering::Relaxed))
            .sum()
    }

    /// The workers' published counters, for the MetricsPort.
    pub fn traffic_shared(&self) -> Arc<[Traffic]> {
        self.traffic.clone()
    }

    /// The relay's bandwidth buckets, for the MetricsPort.
    pub fn rate_limit_shared(&self) -> Arc<super::ratelimit::RateLimit> {
        self.limit.clone()
    }

    /// Every worker's DoS counters, summed.
    pub fn dos_stats(&self) -> crate::proto::dos::DosStats {
        let mut total = crate::proto::dos::DosStats::default();
        for t in self.traffic.iter() {
            total.add(&crate::proto::dos::DosStats::from_array(load_slots(&t.dos)));
        }
        total
    }

    /// Every worker's onion-queue counters, summed.
    pub fn onion_stats(&self) -> crate::proto::circuit::OnionStats {
        let mut total = crate::proto::circuit::OnionStats::default();
        for t in self.traffic.iter() {
            total.add(&crate::proto::circuit::OnionStats::from_array(load_slots(
                &t.onion,
            )));
        }
        total
    }

    /// True once some worker has stopped (an error, or the shutdown).
    pub fn any_finished(&self) -> bool {
        self.handles.iter().any(|h| h.is_finished())
    }

    /// Wait for every worker; the first failure, if any.
    pub fn join(self) -> Result<(), RunError> {
        let mut first_err = None;
        for (index, h) in self.handles.into_iter().enumerate() {
            let res = match h.join() {
                Ok(Ok(())) => continue,
                Ok(Err(message)) => RunError::WorkerFailed { index, message },
                Err(_) => RunError::WorkerFailed {
                    index,
                    message: "worker thread panicked".into(),
                },
            };
            first_err.get_or_insert(res);
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// A worker's ways to the control plane.
pub(super) struct Outbox {
    pub(super) events: Sender<PlaneEvent>,
    pub(super) traffic: Arc<[Traffic]>,
    pub(super) limit: Arc<super::ratelimit::RateLimit>,
    /// The worker's ORPort listeners by family (see [`Listeners`]).
    pub(super) listeners: [u64; 2],
}

/// A worker's published slots, read as numbers (past the end: 0).
pub fn load_slots<const N: usize>(slots: &[AtomicU64]) -> [u64; N] {
    std::array::from_fn(|i| slots.get(i).map_or(0, |s| s.load(Ordering::Relaxed)))
}

/// Publish a worker's counters (its own slots; relaxed, as readers only
/// sum them for the heartbeat).
pub(super) fn store_all(slots: &[AtomicU64], values: &[u64]) {
    for (slot, v) in slots.iter().zip(values) {
        slot.store(*v, Ordering::Relaxed);
    }
}

/// [`store_all`] for counters that mostly stay the same from one turn to
/// the next: a slot is written only when its value changed, so that the
/// cache line the metrics thread reads is left alone otherwise.
pub(super) fn store_changed(slots: &[AtomicU64], values: &[u64]) {
    for (slot, v) in slots.iter().zip(values) {
        if slot.load(Ordering::Relaxed) != *v {
            slot.store(*v, Ordering::Relaxed);
        }
    }
}
