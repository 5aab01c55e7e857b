//! C tor's denial-of-service mitigations (dos.c), with time passed in:
//! what the torrc and the consensus set ([`DosOptions`], [`DosParams`]),
//! C's counting token bucket ([`TokenBucketCtr`]), the per-circuit stream
//! limiter, and the per-address circuit-creation and connection state
//! ([`AddrTable`]).
//!
//! Every mitigation is off until the consensus or the torrc turns it on,
//! as in C tor. The per-address state spans cores: each address has one
//! owning worker that keeps its counts ([`AddrTable`]); the other workers
//! tell it what they see and learn its verdicts by message (see
//! `runtime::worker`), so nothing here is shared or locked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Instant;

use rand::RngExt;

/// Seconds since the process's first look at this clock, the same base on
/// every worker. C counts marks in wall-clock seconds; a monotonic clock
/// keeps a clock step from lifting or extending them. (Read on connection
/// and CREATE paths only, never per relayed cell.)
pub fn secs(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    // The first reading is 1, so that 0 can mean "never".
    now.saturating_duration_since(epoch).as_secs() + 1
}

/// [`secs`] as C's 32-bit bucket timestamps.
pub fn secs32(now: Instant) -> u32 {
    secs(now) as u32
}

/// C's `token_bucket_ctr_t`: `rate` tokens a second up to `burst`, refilled
/// in whole seconds of a monotonic clock; it starts full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucketCtr {
    rate: u32,
    burst: u32,
    bucket: u32,
    last: u32,
}

impl TokenBucketCtr {
    pub fn new(rate: u32, burst: u32, now_sec: u32) -> TokenBucketCtr {
        let burst = burst.max(1);
        TokenBucketCtr {
            rate: rate.max(1),
            burst,
            bucket: burst,
            last: now_sec,
        }
    }

    /// token_bucket_ctr_refill: whole seconds since the last refill, with
    /// a jump of more than a quarter of the clock's range ignored.
    pub fn refill(&mut self, now_sec: u32) {
        let elapsed = now_sec.wrapping_sub(self.last);
        if elapsed <= u32::MAX / 4 {
            let gap = self.burst - self.bucket.min(self.burst);
            if elapsed > gap / self.rate {
                self.bucket = self.burst;
            } else {
                self.bucket += self.rate * elapsed;
            }
        }
        self.last = now_sec;
    }

    pub fn get(&self) -> u32 {
        self.bucket
    }

    /// Take a token if there is one.
    pub fn take(&mut self) -> bool {
        if self.bucket > 0 {
            self.bucket -= 1;
            true
        } else {
            false
        }
    }
}

/// `DoSCircuitCreationDefenseType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CcDefense {
    None,
    /// Answer CREATE with DESTROY RESOURCELIMIT.
    RefuseCell,
}

/// `DoSConnectionDefenseType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnDefense {
    None,
    /// Close the connection as it is accepted.
    Close,
}

/// `DoSStreamCreationDefenseType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamDefense {
    None,
    /// END MISC for BEGIN, a transient RESOLVED error for RESOLVE.
    RefuseStream,
    /// Close the circuit with RESOURCELIMIT.
    CloseCircuit,
}

/// The DoS options of the torrc, as C keeps them: `None` for `auto` (the
/// consensus decides) and 0 for "not set" (dos_options.inc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DosOptions {
    pub cc_enabled: Option<bool>,
    pub cc_min_connections: u32,
    pub cc_rate: u32,
    pub cc_burst: u32,
    pub cc_defense_type: i32,
    pub cc_defense_time_period: u32,
    pub conn_enabled: Option<bool>,
    pub conn_max_concurrent_count: u32,
    pub conn_defense_type: i32,
    pub conn_connect_rate: u32,
    pub conn_connect_burst: u32,
    pub conn_connect_defense_time_period: u32,
    pub refuse_single_hop_client_rendezvous: Option<bool>,
    pub stream_enabled: Option<bool>,
    pub stream_rate: u32,
    pub stream_burst: u32,
    pub stream_defense_type: i32,
}

impl DosOptions {
    /// The options the torrc set, as torrc lines (for `check-config`).
    pub fn torrc_lines(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut switch = |k, v: Option<bool>| {
            if let Some(v) = v {
                out.push((k, u8::from(v).to_string()));
            }
        };
        switch("DoSCircuitCreationEnabled", self.cc_enabled);
        switch("DoSConnectionEnabled", self.conn_enabled);
        switch(
            "DoSRefuseSingleHopClientRendezvous",
            self.refuse_single_hop_client_rendezvous,
        );
        switch("DoSStreamCreationEnabled", self.stream_enabled);
        let numbers: [(&'static str, i64, &str); 13] = [
            (
                "DoSCircuitCreationMinConnections",
                self.cc_min_connections.into(),
                "",
            ),
            ("DoSCircuitCreationRate", self.cc_rate.into(), ""),
            ("DoSCircuitCreationBurst", self.cc_burst.into(), ""),
            (
                "DoSCircuitCreationDefenseType",
                self.cc_defense_type.into(),
                "",
            ),
            (
                "DoSCircuitCreationDefenseTimePeriod",
                self.cc_defense_time_period.into(),
                " seconds",
            ),
            (
                "DoSConnectionMaxConcurrentCount",
                self.conn_max_concurrent_count.into(),
                "",
            ),
            (
                "DoSConnectionDefenseType",
                self.conn_defense_type.into(),
                "",
            ),
            (
                "DoSConnectionConnectRate",
                self.conn_connect_rate.into(),
                "",
            ),
            (
                "DoSConnectionConnectBurst",
                self.conn_connect_burst.into(),
                "",
            ),
            (
                "DoSConnectionConnectDefenseTimePeriod",
                self.conn_connect_defense_time_period.into(),
                " seconds",
            ),
            ("DoSStreamCreationRate", self.stream_rate.into(), ""),
            ("DoSStreamCreationBurst", self.stream_burst.into(), ""),
            (
                "DoSStreamCreationDefenseType",
                self.stream_defense_type.into(),
                "",
            ),
        ];
        for (k, v, unit) in numbers {
            if v != 0 {
                out.push((k, format!("{v}{unit}")));
            }
        }
        out
    }
}

/// The values in force: the torrc's where it sets one, else the
/// consensus's (C's default and bounds), as dos.c:get_param_* decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DosParams {
    pub cc_enabled: bool,
    pub cc_min_concurrent_conn: u32,
    pub cc_circuit_rate: u32,
    pub cc_circuit_burst: u32,
    pub cc_defense: CcDefense,
    pub cc_defense_time_period: u32,
    pub conn_enabled: bool,
    pub conn_max_concurrent_count: u32,
    pub conn_defense: ConnDefense,
    pub conn_connect_rate: u32,
    pub conn_connect_burst: u32,
    pub conn_connect_defense_time_period: u32,
    pub stream_enabled: bool,
    pub stream_rate: u32,
    pub stream_burst: u32,
    pub stream_defense: StreamDefense,
    /// Consensus `dos_num_circ_max_outq` (no torrc option): a client
    /// address whose circuits were closed this many times for a full
    /// outbound queue is marked as a circuit-creation attacker; 0 turns
    /// this off.
    pub num_circ_max_outq: u32,
}

impl Default for DosParams {
    /// C's defaults without a consensus: everything off.
    fn default() -> DosParams {
        DosParams::resolve(&DosOptions::default(), &|_, d, _, _| d)
    }
}

impl DosParams {
    /// `param(name, default, min, max)` reads the consensus (C's
    /// networkstatus_get_param; the default without one).
    pub fn resolve(o: &DosOptions, param: &dyn Fn(&str, i32, i32, i32) -> i32) -> DosParams {
        let on = |opt: Option<bool>, name: &str| opt.unwrap_or_else(|| param(name, 0, 0, 1) != 0);
        let num = |opt: u32, name: &str, default: i32, min: i32| -> u32 {
            if opt != 0 {
                opt
            } else {
                u32::try_from(param(name, default, min, i32::MAX)).unwrap_or(0)
            }
        };
        let typ = |opt: i32, name: &str, default: i32, max: i32| -> i32 {
            if opt != 0 {
                opt
            } else {
                param(name, default, 1, max)
            }
        };
        DosParams {
            cc_enabled: on(o.cc_enabled, "DoSCircuitCreationEnabled"),
            cc_min_concurrent_conn: num(
                o.cc_min_connections,
                "DoSCircuitCreationMinConnections",
                3,
                1,
            ),
            cc_circuit_rate: num(o.cc_rate, "DoSCircuitCreationRate", 3, 1),
            cc_circuit_burst: num(o.cc_burst, "DoSCircuitCreationBurst", 90, 1),
            cc_defense: match typ(o.cc_defense_type, "DoSCircuitCreationDefenseType", 2, 2) {
                2 => CcDefense::RefuseCell,
                _ => CcDefense::None,
            },
            cc_defense_time_period: num(
                o.cc_defense_time_period,
                "DoSCircuitCreationDefenseTimePeriod",
                3600,
                0,
            ),
            conn_enabled: on(o.conn_enabled, "DoSConnectionEnabled"),
            conn_max_concurrent_count: num(
                o.conn_max_concurrent_count,
                "DoSConnectionMaxConcurrentCount",
                100,
                1,
            ),
            conn_defense: match typ(o.conn_defense_type, "DoSConnectionDefenseType", 2, 2) {
                2 => ConnDefense::Close,
                _ => ConnDefense::None,
            },
            conn_connect_rate: num(o.conn_connect_rate, "DoSConnectionConnectRate", 20, 1),
            conn_connect_burst: num(o.conn_connect_burst, "DoSConnectionConnectBurst", 40, 1),
            conn_connect_defense_time_period: num(
                o.conn_connect_defense_time_period,
                "DoSConnectionConnectDefenseTimePeriod",
                86400,
                10,
            ),
            stream_enabled: on(o.stream_enabled, "DoSStreamCreationEnabled"),
            stream_rate: num(o.stream_rate, "DoSStreamCreationRate", 100, 1),
            stream_burst: num(o.stream_burst, "DoSStreamCreationBurst", 300, 1),
            stream_defense: match typ(o.stream_defense_type, "DoSStreamCreationDefenseType", 2, 3) {
                2 => StreamDefense::RefuseStream,
                3 => StreamDefense::CloseCircuit,
                _ => StreamDefense::None,
            },
            num_circ_max_outq: u32::try_from(param("dos_num_circ_max_outq", 3, 0, i32::MAX))
                .unwrap_or(3),
        }
    }

    /// Whether per-address state is kept at all (dos_is_enabled).
    pub fn addr_tracking(&self) -> bool {
        self.cc_enabled || self.conn_enabled
    }
}

/// A mark's end: `now + period + rand[1, period/2)` (cc_mark_client,
/// conn_mark_client). C aborts when period/2 ≤ 1; here the random part is
/// then left out.
fn mark_until(now: u64, period: u32, rng: &mut impl rand::Rng) -> u64 {
    let half = u64::from(period / 2);
    let extra = if half > 1 {
        rng.random_range(1..half)
    } else {
        0
    };
    now + u64::from(period) + extra
}

/// One address's counts (dos_client_stats_t), kept by its owner.
#[derive(Clone, Debug)]
struct AddrStats {
    concurrent: u32,
    connect: TokenBucketCtr,
    conn_marked_until: u64,
    circuit_bucket: u32,
    cc_last_refill: u64,
    cc_marked_until: u64,
    /// Circuits from this address closed for a full outbound queue since
    /// its last mark (num_circ_max_cell_queue_size).
    max_outq: u32,
}

/// What the owner of an address tells every worker about it: whether to
/// refuse its new connections and its CREATEs, until when (wall-clock
/// seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub addr: IpAddr,
    /// Refuse new connections until then (connect-rate mark).
    pub conn_marked_until: u64,
    /// More than `DoSConnectionMaxConcurrentCount` connections are open.
    pub over_concurrent: bool,
    /// Refuse CREATE from client channels until then.
    pub cc_marked_until: u64,
}

impl Verdict {
    fn blocks_nothing(&self) -> bool {
        self.conn_marked_until == 0 && !self.over_concurrent && self.cc_marked_until == 0
    }
}

/// What workers tell each other about addresses: events for an address's
/// owner, and the owner's verdicts for everyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DosMsg {
    ConnOpened(IpAddr),
    ConnClosed(IpAddr),
    Create(IpAddr),
    /// A circuit from this client address was closed for a full queue
    /// toward its next hop.
    MaxOutq(IpAddr),
    Verdict(Verdict),
}

/// The worker that keeps `addr`'s counts, of `workers`. Every worker
/// computes the same answer (FNV-1a over the address bytes).
pub fn owner_of(addr: IpAddr, workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let (v4, v6);
    let bytes: &[u8] = match addr {
        IpAddr::V4(a) => {
            v4 = a.octets();
            &v4
        }
        IpAddr::V6(a) => {
            v6 = a.octets();
            &v6
        }
    };
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
}

/// Counters for the heartbeat and the metrics (per worker, summed by the
/// control plane).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DosStats {
    pub cc_rejected_cells: u64,
    pub cc_marked_addrs: u64,
    /// Addresses marked for closed-queue circuits (cc_num_marked_addrs_max_queue).
    pub cc_marked_addrs_max_queue: u64,
    pub conn_addr_rejected: u64,
    pub conn_addr_connect_rejected: u64,
    pub stream_rejected: u64,
    /// Circuits closed for a queue over `circ_max_cell_queue_size`
    /// (stats_n_circ_max_cell_reached).
    pub circ_max_cell_killed: u64,
}

impl DosStats {
    pub fn add(&mut self, o: &DosStats) {
        self.cc_rejected_cells += o.cc_rejected_cells;
        self.cc_marked_addrs += o.cc_marked_addrs;
        self.cc_marked_addrs_max_queue += o.cc_marked_addrs_max_queue;
        self.conn_addr_rejected += o.conn_addr_rejected;
        self.conn_addr_connect_rejected += o.conn_addr_connect_rejected;
        self.stream_rejected += o.stream_rejected;
        self.circ_max_cell_killed += o.circ_max_cell_killed;
    }

    /// The fields in a fixed order, for carrying them between threads.
    pub fn to_array(&self) -> [u64; 7] {
        [
            self.cc_rejected_cells,
            self.cc_marked_addrs,
            self.cc_marked_addrs_max_queue,
            self.conn_addr_rejected,
            self.conn_addr_connect_rejected,
            self.stream_rejected,
            self.circ_max_cell_killed,
        ]
    }

    pub fn from_array(a: [u64; 7]) -> DosStats {
        let [
            cc_rejected_cells,
            cc_marked_addrs,
            cc_marked_addrs_max_queue,
            conn_addr_rejected,
            conn_addr_connect_rejected,
            stream_rejected,
            circ_max_cell_killed,
        ] = a;
        DosStats {
            cc_rejected_cells,
            cc_marked_addrs,
            cc_marked_addrs_max_queue,
            conn_addr_rejected,
            conn_addr_connect_rejected,
            stream_rejected,
            circ_max_cell_killed,
        }
    }
}

/// C's DoS heartbeat line (dos.c:dos_log_heartbeat), logged at notice every
/// `HeartbeatPeriod`. oxit is no rendezvous point and no onion service, so
/// it refuses no single-hop client and no INTRODUCE2.
pub fn heartbeat_line(p: &DosParams, s: &DosStats, refuse_single_hop: bool) -> String {
    let mut parts = vec![format!(
        "{} circuits killed with too many cells",
        s.circ_max_cell_killed
    )];
    if p.cc_enabled {
        parts.push(format!(
            "{} circuits rejected, {} marked addresses, {} marked addresses for max queue",
            s.cc_rejected_cells, s.cc_marked_addrs, s.cc_marked_addrs_max_queue
        ));
    } else {
        parts.push("[DoSCircuitCreationEnabled disabled]".into());
    }
    if p.conn_enabled {
        parts.push(format!(
            "{} same address concurrent connections rejected",
            s.conn_addr_rejected
        ));
        parts.push(format!(
            "{} connections rejected",
            s.conn_addr_connect_rejected
        ));
    } else {
        parts.push("[DoSConnectionEnabled disabled]".into());
    }
    if refuse_single_hop {
        parts.push("0 single hop clients refused".into());
    } else {
        parts.push("[DoSRefuseSingleHopClientRendezvous disabled]".into());
    }
    if p.stream_enabled {
        parts.push(format!("{} stream rejected", s.stream_rejected));
    } else {
        parts.push("[DoSStreamCreationEnabled disabled]".into());
    }
    parts.push("0 INTRODUCE2 rejected".into());
    format!(
        "Heartbeat: DoS mitigation since startup: {}.",
        parts.join(", ")
    )
}

/// The addresses a worker owns: their counts, and the verdicts to send to
/// every worker when they change.
#[derive(Debug, Default)]
pub struct AddrTable {
    stats: HashMap<IpAddr, AddrStats>,
    last_sent: HashMap<IpAddr, Verdict>,
    pub counters: DosStats,
}

impl AddrTable {
    fn entry(&mut self, p: &DosParams, addr: IpAddr, mono_sec: u32) -> &mut AddrStats {
        self.stats.entry(addr).or_insert_with(|| AddrStats {
            concurrent: 0,
            connect: TokenBucketCtr::new(p.conn_connect_rate, p.conn_connect_burst, mono_sec),
            conn_marked_until: 0,
            circuit_bucket: 0,
            cc_last_refill: 0,
            cc_marked_until: 0,
            max_outq: 0,
        })
    }

    /// A circuit from a client at `addr` was closed because its queue
    /// toward the next hop was full (dos.c:dos_note_circ_max_outq): after
    /// `dos_num_circ_max_outq` of them the address is marked, as a
    /// circuit-creation attacker is.
    pub fn circ_max_outq(
        &mut self,
        p: &DosParams,
        addr: IpAddr,
        now: u64,
        rng: &mut impl rand::Rng,
    ) -> Option<Verdict> {
        if !p.cc_enabled || p.num_circ_max_outq == 0 {
            return None;
        }
        let s = self.stats.get_mut(&addr)?;
        if s.cc_marked_until >= now {
            return None;
        }
        s.max_outq = s.max_outq.saturating_add(1);
        if s.max_outq < p.num_circ_max_outq {
            return None;
        }
        if s.cc_marked_until == 0 {
            self.counters.cc_marked_addrs_max_queue += 1;
        }
        tracing::debug!(
            "Detected outbound max circuit queue from addr: {}",
            crate::control::logging::Scrub(addr)
        );
        s.cc_marked_until = mark_until(now, p.cc_defense_time_period, rng);
        s.max_outq = 0;
        self.verdict(p, addr, now)
    }

    /// A connection from `addr` was accepted (dos_new_client_conn →
    /// conn_update_on_connect).
    pub fn conn_opened(
        &mut self,
        p: &DosParams,
        addr: IpAddr,
        now: u64,
        mono_sec: u32,
        rng: &mut impl rand::Rng,
    ) -> Option<Verdict> {
        if !p.addr_tracking() {
            return None;
        }
        let s = self.entry(p, addr, mono_sec);
        s.concurrent += 1;
        s.connect.refill(mono_sec);
        s.connect.take();
        if s.connect.get() == 0 && s.conn_marked_until == 0 {
            s.conn_marked_until = mark_until(now, p.conn_connect_defense_time_period, rng);
        }
        self.verdict(p, addr, now)
    }

    /// A connection from `addr` that was counted closed.
    pub fn conn_closed(
        &mut self,
        p: &DosParams,
        addr: IpAddr,
        now: u64,
        mono_sec: u32,
    ) -> Option<Verdict> {
        let s = self.stats.get_mut(&addr)?;
        s.concurrent = s.concurrent.saturating_sub(1);
        s.connect.refill(mono_sec);
        self.verdict(p, addr, now)
    }

    /// A CREATE from a client channel from `addr` (dos_cc_new_create_cell).
    pub fn create_cell(
        &mut self,
        p: &DosParams,
        addr: IpAddr,
        now: u64,
        rng: &mut impl rand::Rng,
    ) -> Option<Verdict> {
        if !p.cc_enabled {
            return None;
        }
        let s = self.stats.get_mut(&addr)?;
        refill_circuit_bucket(s, p, now);
        s.circuit_bucket = s.circuit_bucket.saturating_sub(1);
        if s.circuit_bucket == 0 && s.concurrent >= p.cc_min_concurrent_conn {
            if s.cc_marked_until == 0 {
                self.counters.cc_marked_addrs += 1;
                tracing::debug!(
                    "Detected circuit creation DoS by address: {}",
                    crate::control::logging::Scrub(addr)
                );
            }
            s.cc_marked_until = mark_until(now, p.cc_defense_time_period, rng);
        }
        self.verdict(p, addr, now)
    }

    /// Forget addresses with no connection, a full connect bucket and no
    /// mark in force (their next event starts them afresh as C's first
    /// sight of an address would). Without this, every address ever seen
    /// would stay (C keeps them until its OOM handler runs). Returns the
    /// verdicts that lapsed, for the other workers.
    pub fn purge(&mut self, p: &DosParams, now: u64, mono_sec: u32) -> Vec<Verdict> {
        let mut idle = Vec::new();
        for (addr, s) in &mut self.stats {
            s.connect.refill(mono_sec);
            if s.concurrent == 0
                && s.connect.get() >= p.conn_connect_burst
                && s.conn_marked_until < now
                && s.cc_marked_until < now
            {
                idle.push(*addr);
            }
        }
        let mut lapsed = Vec::new();
        for addr in idle {
            self.stats.remove(&addr);
            if self.last_sent.remove(&addr).is_some() {
                lapsed.push(Verdict {
                    addr,
                    conn_marked_until: 0,
                    over_concurrent: false,
                    cc_marked_until: 0,
                });
            }
        }
        lapsed
    }

    /// Addresses counted (for tests and metrics).
    pub fn len(&self) -> usize {
        self.stats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }

    /// The verdict for `addr` if it differs from the last one sent.
    /// Expired connect marks are cleared here, as C clears them when it
    /// next checks (dos_conn_addr_get_defense_type).
    fn verdict(&mut self, p: &DosParams, addr: IpAddr, now: u64) -> Option<Verdict> {
        let s = self.stats.get_mut(&addr)?;
        if s.conn_marked_until != 0 && s.conn_marked_until < now {
            s.conn_marked_until = 0;
        }
        let v = Verdict {
            addr,
            conn_marked_until: s.conn_marked_until,
            over_concurrent: s.concurrent > p.conn_max_concurrent_count,
            cc_marked_until: if s.cc_marked_until >= now {
                s.cc_marked_until
            } else {
                0
            },
        };
        if s.concurrent == 0 && v.blocks_nothing() && s.connect.get() >= p.conn_connect_burst {
            // Nothing to remember: forget the address (C keeps it until
            // its geoip cache is cleaned).
            self.stats.remove(&addr);
        }
        let prev = self.last_sent.get(&addr).copied();
        let changed = match prev {
            Some(prev) => prev != v,
            None => !v.blocks_nothing(),
        };
        if !changed {
            return None;
        }
        if v.blocks_nothing() {
            self.last_sent.remove(&addr);
        } else {
            self.last_sent.insert(addr, v);
        }
        Some(v)
    }
}

/// cc_stats_refill_bucket, with C's integer arithmetic on wall-clock
/// seconds.
fn refill_circuit_bucket(s: &mut AddrStats, p: &DosParams, now: u64) {
    if now == s.cc_last_refill {
        return;
    }
    let burst = p.cc_circuit_burst;
    let tokens: u64 = if s.cc_last_refill == 0 || now < s.cc_last_refill {
        u64::from(burst)
    } else {
        let elapsed = now - s.cc_last_refill;
        if elapsed > u64::from(u32::MAX) {
            u64::from(burst)
        } else {
            elapsed * u64::from(p.cc_circuit_rate)
        }
    };
    s.circuit_bucket = if tokens > u64::from(u32::MAX - s.circuit_bucket) {
        burst
    } else {
        (s.circuit_bucket + tokens as u32).min(burst)
    };
    s.cc_last_refill = now;
}

/// What a worker knows of every address's verdict, for its own decisions.
#[derive(Debug, Default)]
pub struct Verdicts {
    map: HashMap<IpAddr, Verdict>,
    pub counters: DosStats,
}

impl Verdicts {
    pub fn apply(&mut self, v: Verdict) {
        if v.blocks_nothing() {
            self.map.remove(&v.addr);
        } else {
            self.map.insert(v.addr, v);
        }
    }

    /// Close a connection from `addr` as it is accepted?
    /// (dos_conn_addr_get_defense_type)
    pub fn refuse_connection(&mut self, p: &DosParams, addr: IpAddr, now: u64) -> bool {
        if !p.conn_enabled {
            return false;
        }
        let Some(v) = self.map.get(&addr) else {
            return false;
        };
        if v.conn_marked_until >= now {
            self.counters.conn_addr_connect_rejected += 1;
        } else if v.over_concurrent {
            self.counters.conn_addr_rejected += 1;
        } else {
            return false;
        }
        p.conn_defense == ConnDefense::Close
    }

    /// Refuse a CREATE from a client channel from `addr`?
    /// (dos_cc_get_defense_type)
    pub fn refuse_create(&mut self, p: &DosParams, addr: IpAddr, now: u64) -> bool {
        if !p.cc_enabled {
            return false;
        }
        match self.map.get(&addr) {
            Some(v) if v.cc_marked_until >= now => {
                self.counters.cc_rejected_cells += 1;
                p.cc_defense == CcDefense::RefuseCell
            }
            _ => false,
        }
    }

    /// Drop verdicts whose marks ended and that refuse nothing else.
    pub fn purge(&mut self, now: u64) {
        self.map.retain(|_, v| {
            v.over_concurrent || v.conn_marked_until >= now || v.cc_marked_until >= now
        });
    }

    /// Addresses with a verdict (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests;
