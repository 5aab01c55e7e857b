//! The onion queue: create handshakes that do not fit in this turn's
//! handshake budget wait here for a later turn (C tor's cpuworker pool and
//! onion_queue.c, on one core).
//!
//! C tor hands CREATE2 handshakes to worker threads, so a storm of them
//! never delays the cells of other links; oxit runs them on the worker
//! that owns the link. To keep the same promise, a turn spends at most
//! [`OnionParams::turn_budget`] of CPU time on handshakes: the first ones
//! of a turn run at once (so a quiet relay answers in the same turn, as a
//! free cpuworker would), the rest wait in arrival order. The next turn
//! starts with the queue.
//!
//! Admission and culling follow onion_queue.c: fewer than 50 waiting are
//! always admitted; beyond that, a create is refused with DESTROY
//! RESOURCELIMIT when the queue already holds more than `MaxOnionQueueDelay`
//! of work (estimated from the measured cost of recent handshakes), and
//! entries older than `onion_queue_wait_cutoff` are dropped with DESTROY
//! RESOURCELIMIT. Unlike C, CREATE_FAST goes through the same queue (C runs
//! it inline): it is cheap, but 100,000 of them are not.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::ChanId;
use crate::proto::cell::{CELL_BODY_LEN, ChanCmd, CircId};

/// C tor's `ONION_QUEUE_MAX_DELAY_DEFAULT` (ms), the consensus default of
/// `MaxOnionQueueDelay`.
pub const MAX_DELAY_DEFAULT_MS: i32 = 1750;
/// C tor's `ONION_QUEUE_WAIT_CUTOFF_DEFAULT` (s), `onion_queue_wait_cutoff`.
pub const WAIT_CUTOFF_DEFAULT_S: i32 = 5;
/// CPU time a worker spends on create handshakes per turn before the rest
/// wait for the next turn. With a turn's other work this bounds how much
/// a creation storm adds to the latency of every other link on the core.
pub const TURN_BUDGET: Duration = Duration::from_millis(2);
/// Below this many waiting, a create is always admitted (onion_queue.c:
/// have_room_for_onionskin).
const ALWAYS_ROOM: usize = 50;
/// Halve the cost history after this many handshakes, as cpuworker.c does,
/// so the estimate follows the machine's current speed.
const COST_HALVING: u64 = 500_000;
/// Assumed cost of a handshake type never measured (cpuworker.c:
/// estimated_usec_for_onionskins).
const UNMEASURED_COST: Duration = Duration::from_millis(1);

/// The queue's limits (torrc `MaxOnionQueueDelay`, else the consensus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnionParams {
    /// Refuse new creates when the queue holds more work than this.
    pub max_delay: Duration,
    /// Drop creates that waited this long; zero never drops.
    pub wait_cutoff: Duration,
    /// Handshake CPU time per turn (see [`TURN_BUDGET`]).
    pub turn_budget: Duration,
}

impl Default for OnionParams {
    fn default() -> Self {
        OnionParams {
            max_delay: Duration::from_millis(MAX_DELAY_DEFAULT_MS as u64),
            wait_cutoff: Duration::from_secs(WAIT_CUTOFF_DEFAULT_S as u64),
            turn_budget: TURN_BUDGET,
        }
    }
}

impl OnionParams {
    /// The torrc value when set (non-zero), else the consensus parameters
    /// with C's defaults and bounds (onion_queue.c:onion_consensus_has_changed).
    pub fn resolve(torrc_max_delay: Duration, param: &dyn Fn(&str, i32, i32, i32) -> i32) -> Self {
        let max_delay = if torrc_max_delay.is_zero() {
            let ms = param("MaxOnionQueueDelay", MAX_DELAY_DEFAULT_MS, 1, i32::MAX);
            Duration::from_millis(u64::try_from(ms).unwrap_or(1))
        } else {
            torrc_max_delay
        };
        let cutoff = param(
            "onion_queue_wait_cutoff",
            WAIT_CUTOFF_DEFAULT_S,
            0,
            i32::MAX,
        );
        OnionParams {
            max_delay,
            wait_cutoff: Duration::from_secs(u64::try_from(cutoff).unwrap_or(0)),
            turn_budget: TURN_BUDGET,
        }
    }
}

/// The queues C keeps apart; ntor and ntor-v3 share one, as in C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SkinKind {
    Fast = 0,
    Ntor = 1,
}

impl SkinKind {
    pub(crate) fn of(cmd: ChanCmd) -> Self {
        if cmd == ChanCmd::CREATE_FAST {
            SkinKind::Fast
        } else {
            SkinKind::Ntor
        }
    }
}

/// Measured handshake cost of one kind (cpuworker.c's onionskins_usec_internal).
#[derive(Debug, Default, Clone, Copy)]
struct Cost {
    total: Duration,
    n: u64,
}

impl Cost {
    fn note(&mut self, d: Duration) {
        self.total = self.total.saturating_add(d);
        self.n += 1;
        if self.n >= COST_HALVING {
            self.n /= 2;
            self.total /= 2;
        }
    }

    fn estimate(&self, count: usize) -> Duration {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        if self.n == 0 {
            return UNMEASURED_COST.saturating_mul(count);
        }
        let each = self.total / u32::try_from(self.n).unwrap_or(u32::MAX);
        each.saturating_mul(count)
    }
}

/// A create waiting for its handshake.
#[derive(Debug)]
pub(crate) struct Waiting {
    seq: u64,
    pub chan: ChanId,
    pub circ_id: CircId,
    pub cmd: ChanCmd,
    pub body: Box<[u8; CELL_BODY_LEN]>,
    pub added: Instant,
}

/// The public-key handshakes C's heartbeat counts (rephist.c's
/// onion_handshakes_{requested,assigned}); TAP is refused before it is
/// counted, in oxit as in C tor 0.4.9 (onion.c:check_create_cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeStat {
    Ntor,
    NtorV3,
}

impl HandshakeStat {
    /// This handshake's counter in a per-kind pair.
    fn of(self, pair: [u64; 2]) -> u64 {
        let [ntor, v3] = pair;
        match self {
            HandshakeStat::Ntor => ntor,
            HandshakeStat::NtorV3 => v3,
        }
    }

    /// Count one more in a per-kind pair.
    pub(crate) fn bump(self, pair: &mut [u64; 2]) {
        let [ntor, v3] = pair;
        let n = match self {
            HandshakeStat::Ntor => ntor,
            HandshakeStat::NtorV3 => v3,
        };
        *n = n.saturating_add(1);
    }
}

/// Counters since start (for the heartbeat and metrics: C's
/// rep_hist_note_circuit_handshake_{requested,assigned,dropped}).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OnionStats {
    /// Handshakes run, per kind (fast, ntor).
    pub processed: [u64; 2],
    /// Creates refused because the queue was full, per kind.
    pub dropped: [u64; 2],
    /// Creates dropped after waiting past the cutoff.
    pub timed_out: u64,
    /// ntor and ntor-v3 creates that passed the checks, from relays only:
    /// C does not count what clients ask for
    /// (command.c:command_process_create_cell).
    pub requested: [u64; 2],
    /// ntor and ntor-v3 handshakes run, from anyone (C counts these when
    /// it hands them to a cpuworker, whoever sent them).
    pub assigned: [u64; 2],
}

impl OnionStats {
    /// Length of [`Self::to_array`].
    pub const FIELDS: usize = 9;

    /// The counters as one array, for a worker to publish through atomics.
    pub fn to_array(&self) -> [u64; Self::FIELDS] {
        let [p0, p1] = self.processed;
        let [d0, d1] = self.dropped;
        let [r0, r1] = self.requested;
        let [a0, a1] = self.assigned;
        [p0, p1, d0, d1, self.timed_out, r0, r1, a0, a1]
    }

    pub fn from_array(a: [u64; Self::FIELDS]) -> OnionStats {
        let [p0, p1, d0, d1, timed_out, r0, r1, a0, a1] = a;
        OnionStats {
            processed: [p0, p1],
            dropped: [d0, d1],
            timed_out,
            requested: [r0, r1],
            assigned: [a0, a1],
        }
    }

    /// Every counter of `self` plus `other`'s (summing the workers).
    pub fn add(&mut self, other: &OnionStats) {
        let mut a = self.to_array();
        for (x, y) in a.iter_mut().zip(other.to_array()) {
            *x = x.saturating_add(y);
        }
        *self = OnionStats::from_array(a);
    }
}

/// C's heartbeat line for handshakes
/// (rephist.c:rep_hist_log_circuit_handshake_stats), from the totals now
/// and at the last heartbeat: C zeroes its counters after each line, oxit's
/// workers keep totals and the heartbeat takes the difference.
pub fn handshake_heartbeat_line(now: &OnionStats, last: &OnionStats) -> String {
    let d = |a: [u64; 2], b: [u64; 2], i: HandshakeStat| i.of(a).saturating_sub(i.of(b));
    format!(
        "Circuit handshake stats since last time: 0/0 TAP, {}/{} NTor, {}/{} NTor (v3).",
        d(now.assigned, last.assigned, HandshakeStat::Ntor),
        d(now.requested, last.requested, HandshakeStat::Ntor),
        d(now.assigned, last.assigned, HandshakeStat::NtorV3),
        d(now.requested, last.requested, HandshakeStat::NtorV3),
    )
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct OnionQueue {
    queue: VecDeque<Waiting>,
    /// The creates still wanted, by (channel, circuit ID), with the
    /// sequence number of their queue entry. An entry whose circuit was
    /// destroyed, or whose channel closed, stays in `queue` until it
    /// reaches the head and is skipped there: removing it at once would
    /// cost a scan per DESTROY.
    live: HashMap<(ChanId, CircId), (u64, SkinKind)>,
    /// Live creates per kind.
    count: [usize; 2],
    next_seq: u64,
    cost: [Cost; 2],
    /// Handshake time left in this turn.
    budget_left: Duration,
    pub stats: OnionStats,
    /// When "too slow" was last logged (C rate-limits it to once a minute).
    pub last_warned: Option<Instant>,
}

impl OnionQueue {
    pub(crate) fn start_turn(&mut self, budget: Duration) {
        self.budget_left = budget;
    }

    /// Whether a handshake may run at once: nothing waits before it and
    /// the turn has budget left.
    pub(crate) fn can_run_now(&self) -> bool {
        self.live.is_empty() && !self.budget_left.is_zero()
    }

    pub(crate) fn has_budget(&self) -> bool {
        !self.budget_left.is_zero()
    }

    /// Charge a handshake's measured cost to its kind and to the turn.
    pub(crate) fn charge(&mut self, kind: SkinKind, spent: Duration) {
        self.cost[kind as usize].note(spent);
        self.stats.processed[kind as usize] += 1;
        self.budget_left = self.budget_left.saturating_sub(spent);
    }

    pub(crate) fn is_waiting(&self, chan: ChanId, id: CircId) -> bool {
        self.live.contains_key(&(chan, id))
    }

    /// Creates waiting (not counting abandoned entries).
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    /// Room for one more of `kind`? (onion_queue.c:have_room_for_onionskin,
    /// with this core as the only cpuworker.)
    pub(crate) fn has_room(&self, params: &OnionParams) -> bool {
        if self.live.len() < ALWAYS_ROOM {
            return true;
        }
        let work = self.cost[SkinKind::Fast as usize]
            .estimate(self.count[SkinKind::Fast as usize])
            .saturating_add(
                self.cost[SkinKind::Ntor as usize].estimate(self.count[SkinKind::Ntor as usize]),
            );
        work <= params.max_delay
    }

    pub(crate) fn note_dropped(&mut self, kind: SkinKind) {
        self.stats.dropped[kind as usize] += 1;
    }

    pub(crate) fn push(
        &mut self,
        chan: ChanId,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &[u8; CELL_BODY_LEN],
        added: Instant,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let kind = SkinKind::of(cmd);
        if let Some((_, old)) = self.live.insert((chan, circ_id), (seq, kind)) {
            self.uncount(old);
        }
        self.count[kind as usize] += 1;
        self.queue.push_back(Waiting {
            seq,
            chan,
            circ_id,
            cmd,
            body: Box::new(*body),
            added,
        });
    }

    /// Forget the create waiting on (chan, id), if any (DESTROY from the
    /// client, or the circuit closed for a protocol error).
    pub(crate) fn cancel(&mut self, chan: ChanId, id: CircId) -> bool {
        match self.live.remove(&(chan, id)) {
            Some((_, kind)) => {
                self.uncount(kind);
                if self.live.is_empty() {
                    self.queue.clear();
                }
                true
            }
            None => false,
        }
    }

    /// Forget every create waiting on a closed channel.
    pub(crate) fn channel_closed(&mut self, chan: ChanId) {
        let mut gone = [0usize; 2];
        self.live.retain(|(c, _), (_, kind)| {
            let keep = *c != chan;
            if !keep {
                gone[*kind as usize] += 1;
            }
            keep
        });
        for (c, g) in self.count.iter_mut().zip(gone) {
            *c = c.saturating_sub(g);
        }
        if self.live.is_empty() {
            self.queue.clear();
        }
    }

    /// The oldest create still wanted, if it is older than `cutoff` at
    /// `now` (onion_queue.c's cull of elderly requests).
    pub(crate) fn pop_expired(&mut self, now: Instant, cutoff: Duration) -> Option<Waiting> {
        if cutoff.is_zero() {
            return None;
        }
        self.skip_abandoned();
        let head = self.queue.front()?;
        if now.saturating_duration_since(head.added) < cutoff {
            return None;
        }
        self.pop()
    }

    /// The oldest create still wanted.
    pub(crate) fn pop(&mut self) -> Option<Waiting> {
        self.skip_abandoned();
        let w = self.queue.pop_front()?;
        if let Some((_, kind)) = self.live.remove(&(w.chan, w.circ_id)) {
            self.uncount(kind);
        }
        Some(w)
    }

    fn skip_abandoned(&mut self) {
        while let Some(head) = self.queue.front() {
            if self
                .live
                .get(&(head.chan, head.circ_id))
                .is_some_and(|(seq, _)| *seq == head.seq)
            {
                return;
            }
            self.queue.pop_front();
        }
    }

    fn uncount(&mut self, kind: SkinKind) {
        let k = kind as usize;
        self.count[k] = self.count[k].saturating_sub(1);
    }

    /// Circuit IDs held by waiting creates, for per-channel counts.
    pub(crate) fn waiting_ids(&self) -> impl Iterator<Item = &(ChanId, CircId)> {
        self.live.keys()
    }
}
