//! Conflux at the exit (proposal 329), the sequencing core: the sets of
//! legs a client linked with CONFLUX_LINK, their sequence numbers, the
//! out-of-order queue, the choice of the leg each multiplexed cell leaves
//! on (with the SWITCH that announces a change), and what closing a leg
//! does to its set. Given leg handles and facts (which legs have room,
//! their RTTs); no circuits, streams or sockets.
//!
//! Every rule is C tor 0.4.9's, as docs/conflux-exit.md digests it (its
//! section numbers are cited below); where C tor departs from the proposal
//! this follows C tor.
//!
//! The circuit table's side (which cells are sequenced, streams shared by
//! the legs, closing) is in `proto::circuit::conflux`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::proto::cell::DestroyReason;
use crate::proto::relay_msg::{ConfluxLink, ConfluxLinked, ConfluxUx, RelayCmd, StreamId};

/// A leg: the circuit table's handle of a circuit.
pub(crate) type LegId = u64;

/// Conflux as the consensus (and torrc's `ConfluxEnabled`) sets it
/// (conflux_params.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfluxParams {
    /// `ConfluxEnabled`, else `cfx_enabled`: when off, a LINK closes its
    /// circuit (PROTOCOL), as C tor's conflux_process_link does.
    pub enabled: bool,
    /// `cfx_max_legs_set`.
    pub max_legs: usize,
    /// Bytes a set's out-of-order queue may hold before the leg that
    /// brings one more is closed (RESOURCELIMIT): `cfx_max_oooq_bytes`,
    /// but never more than a fifth of `MaxMemInQueues`, where C tor's
    /// out-of-memory handler would start to count conflux queues (it frees
    /// nothing; oxit bounds them instead).
    pub max_ooo_bytes: usize,
}

impl Default for ConfluxParams {
    fn default() -> Self {
        ConfluxParams {
            enabled: true,
            max_legs: MAX_LEGS_DEFAULT,
            max_ooo_bytes: i32::MAX as usize,
        }
    }
}

impl ConfluxParams {
    /// From torrc's `ConfluxEnabled` (`None`: auto), the consensus and the
    /// `MaxMemInQueues` in force.
    pub fn resolve(
        torrc_enabled: Option<bool>,
        param: &dyn Fn(&str, i32, i32, i32) -> i32,
        max_mem_in_queues: u64,
    ) -> Self {
        let oooq = usize::try_from(param("cfx_max_oooq_bytes", i32::MAX, 0, i32::MAX)).unwrap_or(0);
        let mem_cap = usize::try_from(max_mem_in_queues / 5).unwrap_or(usize::MAX);
        ConfluxParams {
            enabled: torrc_enabled.unwrap_or(param("cfx_enabled", 1, 0, 1) != 0),
            max_legs: usize::try_from(param("cfx_max_legs_set", 8, 3, 255))
                .unwrap_or(MAX_LEGS_DEFAULT),
            max_ooo_bytes: oooq.min(mem_cap),
        }
    }
}

/// `cfx_max_legs_set`: legs a set may have (default 8, 3–255).
pub(crate) const MAX_LEGS_DEFAULT: usize = 8;

/// What the exit answers a LINK with (conflux_pool.c: DEFAULT_EXIT_UX).
const EXIT_UX: ConfluxUx = ConfluxUx::MinLatency;

/// How the exit picks the leg for a multiplexed cell, from the client's
/// desired UX (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendAlg {
    /// The lowest-RTT leg that has room; none if none has.
    LowRtt,
    /// The lowest-RTT leg, if it has room; never another.
    MinRtt,
}

impl SendAlg {
    fn for_ux(ux: ConfluxUx) -> Self {
        match ux {
            ConfluxUx::NoOpinion | ConfluxUx::HighThroughput => SendAlg::LowRtt,
            ConfluxUx::MinLatency | ConfluxUx::LowMemLatency | ConfluxUx::LowMemThroughput => {
                SendAlg::MinRtt
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Leg {
    id: LegId,
    /// Absolute sequence number of the last multiplexed cell received on
    /// (or announced by SWITCH for) this leg.
    last_seq_recv: u64,
    last_seq_sent: u64,
    /// 0 until LINKED_ACK (or a SENDME) measures it; `u64::MAX` when the
    /// measurement came out 0 (a stalled clock).
    rtt_usec: u64,
    linked_at_usec: u64,
}

/// A multiplexed cell that arrived ahead of its turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queued {
    pub seq: u64,
    /// The leg it arrived on.
    pub leg: LegId,
    pub cmd: RelayCmd,
    pub stream: StreamId,
    pub data: Vec<u8>,
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.seq.cmp(&other.seq)
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// One linked set.
#[derive(Debug)]
pub(crate) struct ConfluxSet {
    nonce: [u8; 32],
    legs: Vec<Leg>,
    ooo: BinaryHeap<Reverse<Queued>>,
    /// What the queue holds, as C tor counts it (body plus overhead).
    ooo_bytes: usize,
    last_seq_delivered: u64,
    curr_leg: Option<LegId>,
    alg: SendAlg,
    /// Since when the queue has held something (for the OOM handler's
    /// "oldest queued data first").
    queued_since: Option<std::time::Instant>,
}

/// Bytes C tor charges a queued cell beyond its body
/// (sizeof(conflux_msg_t) + sizeof(relay_msg_t), about).
const QUEUED_OVERHEAD: usize = 64;

/// Why a LINK is refused: the circuit (and, for `DataLoss`, the set it
/// named) closes with PROTOCOL (§3.1, §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("CONFLUX_LINK on a circuit already in a set")]
    AlreadyLinked,
    #[error("CONFLUX_LINK would make more than {0} legs")]
    TooManyLegs(usize),
    #[error("CONFLUX_LINK says the client sent {sent} cells, we delivered {delivered}")]
    DataLoss { sent: u64, delivered: u64 },
}

/// What to do with a multiplexed cell that just arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Its turn: process it, then whatever [`ConfluxSets::pop_ready`] gives.
    Deliver,
    /// Early: it was queued.
    Queued,
    /// Close the leg it came on with this reason (§4.2).
    CloseLeg(DestroyReason),
}

/// The leg a multiplexed cell leaves on, and the SWITCH to send on it
/// first when it is not the leg of the previous cell (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendLeg {
    pub leg: LegId,
    pub switch: Option<u32>,
}

/// Why no leg can take a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoLeg {
    /// No leg has room (DATA waits for a SENDME).
    Blocked,
    /// The set's sequence numbers went wrong: close every leg (PROTOCOL).
    Broken,
}

/// What closing a leg does to its set (§7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LegClosed {
    /// The leg was in no set.
    NotInSet,
    /// The set goes on: its streams move to `to`.
    Continue { to: LegId },
    /// The set ends: close these legs with FINISHED.
    Teardown { close: Vec<LegId> },
    /// That was the last leg.
    Gone,
}

/// Every set of this worker, by nonce and by leg.
#[derive(Debug, Default)]
pub(crate) struct ConfluxSets {
    sets: HashMap<[u8; 32], ConfluxSet>,
    by_leg: HashMap<LegId, [u8; 32]>,
    /// What the queues hold in all, for the memory limit.
    pub(crate) ooo_bytes: usize,
}

impl ConfluxSets {
    /// Whether `leg` is in a set.
    #[cfg(test)]
    pub(crate) fn is_linked(&self, leg: LegId) -> bool {
        self.by_leg.contains_key(&leg)
    }

    fn set_of(&mut self, leg: LegId) -> Option<&mut ConfluxSet> {
        let nonce = self.by_leg.get(&leg)?;
        self.sets.get_mut(nonce)
    }

    fn leg_mut(&mut self, leg: LegId) -> Option<&mut Leg> {
        self.set_of(leg)?.legs.iter_mut().find(|l| l.id == leg)
    }

    /// The legs of `leg`'s set, itself included.
    pub(crate) fn legs_of(&self, leg: LegId) -> impl Iterator<Item = LegId> + '_ {
        self.by_leg
            .get(&leg)
            .and_then(|n| self.sets.get(n))
            .into_iter()
            .flat_map(|s| s.legs.iter().map(|l| l.id))
    }

    /// The legs of the set `nonce` names.
    pub(crate) fn legs_of_nonce(&self, nonce: &[u8; 32]) -> Vec<LegId> {
        self.sets
            .get(nonce)
            .map(|s| s.legs.iter().map(|l| l.id).collect())
            .unwrap_or_default()
    }

    /// Sets whose queues hold something: since when, how many bytes, and
    /// one of their legs (for the OOM handler, which ends the whole set).
    pub(crate) fn queued(
        &self,
    ) -> impl Iterator<Item = (Option<std::time::Instant>, usize, LegId)> + '_ {
        self.sets
            .values()
            .filter(|s| s.ooo_bytes > 0)
            .filter_map(|s| Some((s.queued_since, s.ooo_bytes, s.legs.first()?.id)))
    }

    /// Forget `leg`'s set; returns its legs, for the caller to close.
    pub(crate) fn remove_set(&mut self, leg: LegId) -> Vec<LegId> {
        let Some(nonce) = self.by_leg.get(&leg).copied() else {
            return Vec::new();
        };
        let Some(set) = self.sets.remove(&nonce) else {
            return Vec::new();
        };
        self.ooo_bytes = self.ooo_bytes.saturating_sub(set.ooo_bytes);
        let legs: Vec<LegId> = set.legs.iter().map(|l| l.id).collect();
        for l in &legs {
            self.by_leg.remove(l);
        }
        legs
    }

    /// A LINK on `leg` (the caller checked the circuit: last hop, CC
    /// negotiated): the leg joins the set the nonce names, or starts one,
    /// at once (the exit does not wait for LINKED_ACK, §3.2). Returns the
    /// LINKED to send back on `leg`. On `DataLoss` the set the nonce named
    /// is gone: the caller closes its legs ([`Self::legs_of_nonce`] before
    /// the call) and this one.
    pub(crate) fn link(
        &mut self,
        leg: LegId,
        link: &ConfluxLink,
        max_legs: usize,
        now_usec: u64,
    ) -> Result<ConfluxLinked, LinkError> {
        if self.by_leg.contains_key(&leg) {
            return Err(LinkError::AlreadyLinked);
        }
        let set = self.sets.entry(link.nonce).or_insert_with(|| ConfluxSet {
            nonce: link.nonce,
            legs: Vec::new(),
            ooo: BinaryHeap::new(),
            ooo_bytes: 0,
            last_seq_delivered: 0,
            curr_leg: None,
            alg: SendAlg::LowRtt,
            queued_since: None,
        });
        // LINKED carries the set's state before this leg joins.
        let max_sent = set.legs.iter().map(|l| l.last_seq_sent).max().unwrap_or(0);
        let delivered = set.last_seq_delivered;
        if set.legs.len() + 1 > max_legs {
            return Err(LinkError::TooManyLegs(max_legs));
        }
        if link.last_seqno_sent > delivered {
            let freed = set.ooo_bytes;
            let nonce = set.nonce;
            if let Some(gone) = self.sets.remove(&nonce) {
                for l in gone.legs {
                    self.by_leg.remove(&l.id);
                }
            }
            self.ooo_bytes = self.ooo_bytes.saturating_sub(freed);
            return Err(LinkError::DataLoss {
                sent: link.last_seqno_sent,
                delivered,
            });
        }
        set.legs.push(Leg {
            id: leg,
            last_seq_recv: link.last_seqno_sent,
            last_seq_sent: link.last_seqno_recv,
            rtt_usec: 0,
            linked_at_usec: now_usec,
        });
        // The latest LINK's wish decides how the set sends (§3.2).
        set.alg = SendAlg::for_ux(link.desired_ux);
        self.by_leg.insert(leg, link.nonce);
        Ok(ConfluxLinked(ConfluxLink {
            nonce: link.nonce,
            last_seqno_sent: max_sent,
            last_seqno_recv: delivered,
            desired_ux: EXIT_UX,
        }))
    }

    /// LINKED_ACK on `leg`: its first RTT (§3.3). False if the leg is in
    /// no set (the caller closes it, PROTOCOL).
    pub(crate) fn linked_ack(&mut self, leg: LegId, now_usec: u64) -> bool {
        let Some(l) = self.leg_mut(leg) else {
            return false;
        };
        let rtt = now_usec.saturating_sub(l.linked_at_usec);
        l.rtt_usec = if rtt == 0 { u64::MAX } else { rtt };
        true
    }

    /// The leg's congestion control measured a new RTT (on SENDMEs).
    pub(crate) fn note_rtt(&mut self, leg: LegId, rtt_usec: u64) {
        if rtt_usec == 0 {
            return;
        }
        if let Some(l) = self.leg_mut(leg) {
            l.rtt_usec = rtt_usec;
        }
    }

    /// SWITCH on `leg`: its next cell comes `rel` after its last one
    /// (§4.4; no checks, as C tor). False if the leg is in no set.
    pub(crate) fn switch(&mut self, leg: LegId, rel: u32) -> bool {
        let Some(l) = self.leg_mut(leg) else {
            return false;
        };
        l.last_seq_recv = l.last_seq_recv.wrapping_add(u64::from(rel));
        true
    }

    /// A multiplexed cell arrived on `leg` at `now` (§4.2). `max_queue` is
    /// `cfx_max_oooq_bytes`.
    pub(crate) fn arrived(
        &mut self,
        leg: LegId,
        (cmd, stream, data): (RelayCmd, StreamId, &[u8]),
        max_queue: usize,
        now: std::time::Instant,
    ) -> Arrival {
        let Some(set) = self.set_of(leg) else {
            return Arrival::CloseLeg(DestroyReason::INTERNAL);
        };
        let Some(l) = set.legs.iter_mut().find(|l| l.id == leg) else {
            return Arrival::CloseLeg(DestroyReason::INTERNAL);
        };
        l.last_seq_recv = l.last_seq_recv.wrapping_add(1);
        let seq = l.last_seq_recv;
        if seq == set.last_seq_delivered.wrapping_add(1) {
            set.last_seq_delivered = seq;
            return Arrival::Deliver;
        }
        if seq <= set.last_seq_delivered {
            return Arrival::CloseLeg(DestroyReason::INTERNAL);
        }
        // Checked before the insert, as C tor: one cell may overshoot.
        if set.ooo_bytes >= max_queue {
            return Arrival::CloseLeg(DestroyReason::RESOURCELIMIT);
        }
        let cost = data.len() + QUEUED_OVERHEAD;
        set.ooo_bytes += cost;
        set.queued_since.get_or_insert(now);
        set.ooo.push(Reverse(Queued {
            seq,
            leg,
            cmd,
            stream,
            data: data.to_vec(),
        }));
        self.ooo_bytes += cost;
        Arrival::Queued
    }

    /// The next queued cell of `leg`'s set whose turn has come.
    pub(crate) fn pop_ready(&mut self, leg: LegId) -> Option<Queued> {
        let nonce = *self.by_leg.get(&leg)?;
        let set = self.sets.get_mut(&nonce)?;
        let Reverse(top) = set.ooo.peek()?;
        if top.seq != set.last_seq_delivered.wrapping_add(1) {
            return None;
        }
        let Reverse(q) = set.ooo.pop()?;
        set.last_seq_delivered = q.seq;
        if set.ooo.is_empty() {
            set.queued_since = None;
        }
        let cost = q.data.len() + QUEUED_OVERHEAD;
        set.ooo_bytes = set.ooo_bytes.saturating_sub(cost);
        self.ooo_bytes = self.ooo_bytes.saturating_sub(cost);
        Some(q)
    }

    /// The leg a multiplexed cell of `leg`'s set leaves on (§5.2).
    /// `has_room(l)`: leg `l`'s congestion window has room and its link is
    /// not blocked. A cell other than DATA goes on the current leg when no
    /// leg has room. Call [`Self::note_sent`] once it is queued.
    pub(crate) fn send_leg(
        &mut self,
        leg: LegId,
        is_data: bool,
        has_room: impl Fn(LegId) -> bool,
    ) -> Result<SendLeg, NoLeg> {
        let Some(set) = self.set_of(leg) else {
            return Ok(SendLeg { leg, switch: None });
        };
        // A stalled clock's leg (u64::MAX) is never picked: C tor starts
        // its search below u64::MAX (conflux_decide_circ_lowrtt / _minrtt).
        let measured = |l: &&Leg| l.rtt_usec != 0 && l.rtt_usec != u64::MAX;
        // The first cell: the current leg becomes the lowest non-zero RTT,
        // else the first leg (conflux_pick_first_leg); then the algorithm
        // decides as for any cell.
        if set.curr_leg.is_none() {
            set.curr_leg = set
                .legs
                .iter()
                .filter(|l| l.rtt_usec != 0)
                .min_by_key(|l| l.rtt_usec)
                .or(set.legs.first())
                .map(|l| l.id);
        }
        let Some(curr) = set.curr_leg else {
            return Err(NoLeg::Blocked);
        };
        let pick = match set.alg {
            SendAlg::LowRtt => set
                .legs
                .iter()
                .filter(measured)
                .filter(|l| has_room(l.id))
                .min_by_key(|l| l.rtt_usec)
                .map(|l| l.id),
            SendAlg::MinRtt => set
                .legs
                .iter()
                .filter(measured)
                .min_by_key(|l| l.rtt_usec)
                .map(|l| l.id)
                .filter(|&l| has_room(l)),
        };
        // With no leg to take it, anything but DATA goes on the current
        // leg, so that it stays in order.
        let pick = match pick {
            Some(p) => p,
            None if !is_data => curr,
            None => return Err(NoLeg::Blocked),
        };
        let Some(prev) = Some(curr).filter(|&c| c != pick) else {
            return Ok(SendLeg {
                leg: pick,
                switch: None,
            });
        };
        let sent = |id: LegId| {
            set.legs
                .iter()
                .find(|l| l.id == id)
                .map_or(0, |l| l.last_seq_sent)
        };
        let (prev_sent, new_sent) = (sent(prev), sent(pick));
        let rel = prev_sent
            .checked_sub(new_sent)
            .and_then(|r| u32::try_from(r).ok())
            .filter(|&r| r != u32::MAX)
            .ok_or(NoLeg::Broken)?;
        if let Some(l) = set.legs.iter_mut().find(|l| l.id == pick) {
            l.last_seq_sent = prev_sent;
        }
        set.curr_leg = Some(pick);
        Ok(SendLeg {
            leg: pick,
            switch: Some(rel),
        })
    }

    /// `n` multiplexed cells were queued on `leg`.
    pub(crate) fn note_sent(&mut self, leg: LegId, n: u64) {
        if let Some(l) = self.leg_mut(leg) {
            l.last_seq_sent = l.last_seq_sent.wrapping_add(n);
        }
    }

    /// `leg` is closing, with `inflight` cells of its congestion window
    /// unacknowledged (§7.1): the set goes on without it unless it was the
    /// current send leg, had at least `sendme_inc` cells in flight, or was
    /// strictly ahead of every other leg in either direction.
    pub(crate) fn leg_closed(&mut self, leg: LegId, inflight: u64, sendme_inc: u64) -> LegClosed {
        let Some(nonce) = self.by_leg.remove(&leg) else {
            return LegClosed::NotInSet;
        };
        let Some(set) = self.sets.get_mut(&nonce) else {
            return LegClosed::NotInSet;
        };
        let Some(pos) = set.legs.iter().position(|l| l.id == leg) else {
            return LegClosed::NotInSet;
        };
        let gone = set.legs.remove(pos);
        if set.legs.is_empty() {
            let freed = set.ooo_bytes;
            self.sets.remove(&nonce);
            self.ooo_bytes = self.ooo_bytes.saturating_sub(freed);
            return LegClosed::Gone;
        }
        let max_sent = set.legs.iter().map(|l| l.last_seq_sent).max().unwrap_or(0);
        let max_recv = set.legs.iter().map(|l| l.last_seq_recv).max().unwrap_or(0);
        let teardown = inflight >= sendme_inc
            || max_sent < gone.last_seq_sent
            || max_recv < gone.last_seq_recv
            || set.curr_leg == Some(leg);
        if teardown {
            let close: Vec<LegId> = set.legs.iter().map(|l| l.id).collect();
            let freed = set.ooo_bytes;
            self.sets.remove(&nonce);
            for l in &close {
                self.by_leg.remove(l);
            }
            self.ooo_bytes = self.ooo_bytes.saturating_sub(freed);
            return LegClosed::Teardown { close };
        }
        match set.legs.first() {
            Some(l) => LegClosed::Continue { to: l.id },
            None => LegClosed::Gone,
        }
    }
}

#[cfg(test)]
mod tests;
