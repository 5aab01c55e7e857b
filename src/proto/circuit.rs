//! The per-worker circuit table: every circuit, and every exit stream, of
//! the channels one worker thread owns (requirements.md §3, §4, §5, §8.1).
//!
//! Sans-IO. The worker feeds it cells from open channels
//! ([`CircuitTable::handle_cells`]), results of DNS lookups, TCP connects
//! and channel launches, bytes read from exit sockets and the clock; the
//! table answers with [`Action`]s from [`CircuitTable::poll_action`]: cells
//! to write, lookups and connects to start, bytes to write to sockets.
//!
//! Owns: circuit creation (CREATE2 ntor / ntor-v3, CREATE_FAST), relay
//! crypto dispatch (recognized → our hop, else forward), RELAY_EARLY limits,
//! DESTROY / TRUNCATE, EXTEND2 towards a next hop and the forwarding that
//! follows, circuit-level SENDME windows (v1 authenticated). Stream state
//! and the exit side of BEGIN / RESOLVE / DATA / END live in
//! [`crate::proto::stream`].
//!
//! Does not own: the link layer (it hands over [`IncomingCell`]s and says
//! who the peer is), cell and relay-message codecs (`proto::cell`,
//! `proto::relay_msg`), the handshakes and tor1 crypto (`crypto`), DNS and
//! the exit policy (`exit`), sockets. Link protocol ≥ 4 (4-byte circuit
//! IDs) is assumed for the circuit-ID rules.

#[cfg(test)]
mod cgo_tests;
mod conflux;
#[cfg(test)]
mod conflux_tests;
mod create;
pub(crate) mod hop;
mod onion;
mod relay;
mod seal;
pub mod types;

#[cfg(test)]
pub(crate) mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rand::CryptoRng;

use crate::crypto::tor1::SendmeTag;
use crate::proto::cell::{CELL_BODY_LEN, ChanCmd, CircId, Create2, Destroy, DestroyReason};
use crate::proto::relay_msg::{RelayBody, RelayCmd, SendmeDigest, StreamId};
use crate::proto::stream::{Stream, StreamState};
use hop::HopCrypto;

pub use conflux::{LegHandoff, SetHomes};
pub use onion::{OnionParams, OnionStats, handshake_heartbeat_line};
pub use types::{
    Action, ChanId, CircuitConfig, ExtendFailure, ExtendKey, IncomingCell, PeerKind, StreamKey,
    errno_to_end_reason,
};

/// Circuit deliver window at creation (`CIRCWINDOW_START`, or.h).
pub const CIRCWINDOW_START: i32 = 1000;
/// Largest circuit package window (`CIRCWINDOW_START_MAX`).
pub const CIRCWINDOW_START_MAX: i32 = 1000;
/// Cells acknowledged by one circuit SENDME (`CIRCWINDOW_INCREMENT`).
pub const CIRCWINDOW_INCREMENT: i32 = 100;
/// RELAY_EARLY cells a circuit may carry forward
/// (`MAX_RELAY_EARLY_CELLS_PER_CIRCUIT`, §4.4).
pub const MAX_RELAY_EARLY: u8 = 8;

/// Internal circuit handle.
pub(crate) type CircIdx = u64;

/// Which side of a circuit a (channel, circuit ID) pair names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Toward the client: cells from here travel forward.
    Prev,
    /// Toward the next hop: cells from here travel backward.
    Next,
}

/// The next hop of a circuit.
#[derive(Debug)]
pub(crate) enum Next {
    /// We are the last hop.
    None,
    /// EXTEND2 accepted, waiting for the worker to find a channel.
    Pending { key: ExtendKey, create: Create2 },
    /// CREATE2 sent, waiting for CREATED2.
    Created { chan: ChanId, id: CircId },
    /// Extended: unrecognized forward cells go here.
    Open { chan: ChanId, id: CircId },
}

/// Circuit-level flow control: the seam between fixed windows (§5.7) and
/// congestion control (§5.8). Packaging asks it how many DATA cells may
/// go and tells it each one that went; SENDMEs in and out go through it.
#[derive(Debug)]
pub(crate) struct CircWindows {
    /// The package window of a fixed-window circuit (unused with `cc`).
    pub package: i32,
    pub deliver: i32,
    /// Tags of the DATA cells a SENDME will acknowledge (every 100th, or
    /// every `sendme_inc`-th in flight with CC), oldest first: the next
    /// SENDME v1 must carry the first (sendme.c:sendme_record_cell_digest_on_circ).
    pub expected_tags: VecDeque<SendmeDigest>,
    /// Tag of the last DATA cell we recognized: what our SENDME carries.
    pub last_data_tag: SendmeDigest,
    /// Congestion control, when the client negotiated it (ntor-v3).
    pub cc: Option<Box<crate::proto::cc::Vegas>>,
}

impl CircWindows {
    /// Fixed windows: `package` from the consensus `circwindow`.
    pub(crate) fn fixed(package: i32) -> Self {
        Self {
            package,
            deliver: CIRCWINDOW_START,
            expected_tags: VecDeque::new(),
            last_data_tag: SendmeDigest::default(),
            cc: None,
        }
    }

    /// Congestion control with `p`.
    pub(crate) fn vegas(p: &crate::proto::cc::CcParams) -> Self {
        Self {
            cc: Some(Box::new(crate::proto::cc::Vegas::new(p))),
            ..Self::fixed(CIRCWINDOW_START_MAX)
        }
    }

    /// DATA cells that may be packaged now.
    pub(crate) fn package_room(&self) -> usize {
        match &self.cc {
            Some(v) => usize::try_from(v.package_window()).unwrap_or(usize::MAX),
            None => usize::try_from(self.package.max(0)).unwrap_or(0),
        }
    }

    /// Count one DATA cell packaged at `now_usec`; true if its tag is one
    /// a SENDME will carry back.
    pub(crate) fn note_packaged(&mut self, now_usec: u64) -> bool {
        match &mut self.cc {
            Some(v) => {
                let keep = v.next_cell_wants_sendme();
                v.note_data_sent(now_usec);
                keep
            }
            None => {
                let keep = seal::keeps_tag(self.package);
                self.package -= 1;
                keep
            }
        }
    }

    /// DATA cells we take per circuit SENDME we send: 100, or the
    /// negotiated `sendme_inc` (sendme.c:sendme_get_inc_count).
    pub(crate) fn deliver_increment(&self) -> i32 {
        match &self.cc {
            Some(v) => i32::try_from(v.sendme_inc()).unwrap_or(CIRCWINDOW_INCREMENT),
            None => CIRCWINDOW_INCREMENT,
        }
    }

    pub(crate) fn uses_cc(&self) -> bool {
        self.cc.is_some()
    }
}

pub(crate) struct Circuit {
    pub prev_chan: ChanId,
    pub prev_id: CircId,
    pub next: Next,
    pub crypto: HopCrypto,
    pub early_left: u8,
    pub windows: CircWindows,
    /// Streams whose home is this circuit (on a conflux leg, the set's
    /// other streams live on its other legs).
    pub streams: HashMap<StreamId, StreamKey>,
    /// A leg of a conflux set (see [`conflux`]): its multiplexed cells are
    /// sequenced across the set.
    pub conflux: bool,
    /// SendCell actions of this circuit not yet taken by the worker.
    pub queued: usize,
    /// DoSStreamCreation's per-circuit bucket, set when the circuit is
    /// made (or_circuit_new → dos_stream_init_circ_tbf).
    pub stream_limiter: crate::proto::dos::TokenBucketCtr,
}

/// Exit streams seen, as C tor's `tor_relay_streams_total` counts them
/// (rephist.c:rep_hist_note_exit_stream). oxit opens no BEGIN_DIR stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExitStreamCounts {
    /// BEGINs that passed the exit policy and went to connect.
    pub begin: u64,
    /// RESOLVEs received.
    pub resolve: u64,
    /// Exit connects that failed for want of a local port
    /// (`tor_relay_load_tcp_exhaustion_total`): EADDRNOTAVAIL, Linux's
    /// answer when the ephemeral range towards a destination is used up,
    /// and EADDRINUSE, C tor's (connection.c counts it on bind).
    pub tcp_exhaustion: u64,
    /// BEGINs refused by the exit policy or the re-entry rule, by the
    /// address family of the destination (IPv4, IPv6): C tor's
    /// `tor_relay_connections_total{type="Exit",state="rejected"}`
    /// (connection_edge.c:connection_exit_connect).
    pub rejected: [u64; 2],
}

/// Events C tor's MetricsPort counts one family each for
/// (relay_metrics.c), as a slot of [`CircuitTable::counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircCounter {
    /// DESTROY cells received, for a known circuit or not
    /// (`tor_relay_destroy_cell_total`; command.c counts them all).
    DestroyReceived,
    /// DROP cells received at our hop (`tor_relay_drop_cell_total`).
    DropReceived,
    /// Circuits closed, or creates refused, for a protocol violation
    /// (`tor_relay_circ_proto_violation_total`; circuitlist.c counts
    /// every mark for close with TORPROTOCOL, and command.c's refused
    /// creates are circuits it marks so).
    ProtoViolation,
    /// Onion-service cells at our hop: ESTABLISH_INTRO,
    /// ESTABLISH_RENDEZVOUS, INTRODUCE1, RENDEZVOUS1. oxit is neither an
    /// introduction nor a rendezvous point (its descriptor offers no
    /// HSIntro or HSRend), so it drops them; the MetricsPort counts each
    /// under the action C tor takes when it cannot serve one.
    EstIntro,
    EstRend,
    Intro1,
    Rend1,
}

impl CircCounter {
    /// Length of [`CircuitTable::counters`].
    pub const SLOTS: usize = 7;

    /// The counter for an onion-service cell, if `cmd` is one.
    pub(crate) fn onion_service(cmd: RelayCmd) -> Option<CircCounter> {
        Some(match cmd {
            RelayCmd::ESTABLISH_INTRO => CircCounter::EstIntro,
            RelayCmd::ESTABLISH_RENDEZVOUS => CircCounter::EstRend,
            RelayCmd::INTRODUCE1 => CircCounter::Intro1,
            RelayCmd::RENDEZVOUS1 => CircCounter::Rend1,
            _ => return None,
        })
    }
}

/// Slots of [`CircuitTable::close_counts`]: one per DESTROY reason code
/// [`DestroyReason::name`] knows (0..=12), then one for any other code.
pub const CLOSE_REASON_SLOTS: usize = 14;

/// Bytes a channel's link may still take this turn, and who waits for it.
#[derive(Debug, Default)]
pub(crate) struct ChanRoom {
    pub room: i64,
    pub waiting: Vec<CircIdx>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ChanInfo {
    pub peer: Option<PeerKind>,
    /// The peer's address, for a channel it opened to us (the DoS
    /// mitigations key on it).
    pub addr: Option<std::net::IpAddr>,
    /// We opened this channel: we pick circuit IDs with the high bit set,
    /// and the peer's CREATEs must have it clear (channel.c:channel_set_circid_type).
    pub initiator: bool,
}

/// See the module documentation.
pub struct CircuitTable {
    pub(crate) cfg: Arc<CircuitConfig>,
    pub(crate) chans: crate::proto::OwnKeyMap<ChanId, ChanInfo>,
    pub(crate) circs: crate::proto::OwnKeyMap<CircIdx, Circuit>,
    pub(crate) ids: HashMap<(ChanId, CircId), (CircIdx, Side)>,
    pub(crate) streams: crate::proto::OwnKeyMap<StreamKey, Stream>,
    pub(crate) extends: crate::proto::OwnKeyMap<ExtendKey, CircIdx>,
    pub(crate) deadlines: BinaryHeap<Reverse<(Instant, StreamKey)>>,
    /// Circuit IDs on our channels that carry another worker's circuit
    /// (see [`crate::proto::splice`]): never handed out here, and counted
    /// as circuits so the channel is not closed as idle.
    pub(crate) reserved: HashSet<(ChanId, CircId)>,
    /// Per channel: room left on its link, and the circuits that stopped
    /// packaging for want of it (see [`CircuitTable::set_chan_room`]).
    pub(crate) chan_room: crate::proto::OwnKeyMap<ChanId, ChanRoom>,
    next_idx: u64,
    pub(crate) next_key: u64,
    actions: VecDeque<(Action, Option<CircIdx>)>,
    tag_scratch: Vec<Option<SendmeTag>>,
    digest_scratch: Vec<Option<SendmeDigest>>,
    /// Per relay cell of the run being handled: decrypted and checked
    /// ahead, by which circuit, and whether it was ours.
    pre: Vec<Option<(CircIdx, Option<SendmeDigest>)>>,
    /// Scratch for checking many circuits' cells at once.
    fwd_batch: crate::crypto::tor1::Tor1Batch,
    /// Originated cells waiting to be sealed (see [`seal`]).
    sealer: seal::Sealer,
    /// The address owners' verdicts, and this worker's refusals.
    pub(crate) dos: crate::proto::dos::Verdicts,
    /// Exit streams seen, for the metrics.
    pub(crate) exit_streams: ExitStreamCounts,
    /// Circuits closed, by the reason they were closed with (see
    /// [`CircuitTable::close_counts`]).
    closed: [u64; CLOSE_REASON_SLOTS],
    /// See [`CircCounter`].
    counters: [u64; CircCounter::SLOTS],
    /// Cells through our relay crypto layer: decrypted from previous
    /// hops (forward), encrypted toward them (backward, relayed or ours).
    crypto_cells: [u64; 2],
    /// Conflux sets whose legs are circuits of this table.
    pub(crate) conflux: crate::proto::conflux::ConfluxSets,
    /// Where sets live when there are several workers.
    homes: Option<conflux::SetHomes>,
    /// Legs handed to another worker in this batch (see [`conflux`]).
    moved: HashMap<(ChanId, CircId), conflux::LegHandoff>,
    /// Creates waiting for a handshake (see [`onion`]).
    pub(crate) onion: onion::OnionQueue,
    /// Measures what handshakes cost, for the onion queue's budget. Not
    /// protocol time (that is always given as `now`); tests replace it.
    pub(crate) clock: fn() -> Instant,
    /// Congestion control's microseconds count from the first `now` seen.
    cc_epoch: Option<Instant>,
    /// Whether RTT samples say the clock is sane (C tor keeps one per
    /// process; one per worker here).
    pub(crate) cc_clock: crate::proto::cc::ClockHealth,
    /// Congestion control's statistics over this table's circuits.
    pub(crate) cc_stats: crate::proto::cc::CcStats,
}

impl CircuitTable {
    pub fn new(cfg: Arc<CircuitConfig>) -> Self {
        CircuitTable {
            chans: Default::default(),
            circs: Default::default(),
            ids: HashMap::new(),
            streams: Default::default(),
            extends: Default::default(),
            deadlines: BinaryHeap::new(),
            reserved: HashSet::new(),
            chan_room: Default::default(),
            next_idx: 1,
            next_key: 1,
            actions: VecDeque::new(),
            tag_scratch: Vec::new(),
            digest_scratch: Vec::new(),
            pre: Vec::new(),
            fwd_batch: Default::default(),
            sealer: seal::Sealer::default(),
            dos: crate::proto::dos::Verdicts::default(),
            conflux: Default::default(),
            exit_streams: ExitStreamCounts::default(),
            closed: [0; CLOSE_REASON_SLOTS],
            counters: [0; CircCounter::SLOTS],
            crypto_cells: [0; 2],
            homes: None,
            moved: HashMap::new(),
            onion: {
                let mut q = onion::OnionQueue::default();
                q.start_turn(cfg.onion.turn_budget);
                q
            },
            clock: Instant::now,
            cc_epoch: None,
            cc_clock: Default::default(),
            cc_stats: Default::default(),
            cfg,
        }
    }

    /// Whether circuit `idx` runs congestion control.
    pub(crate) fn circuit_uses_cc(&self, idx: CircIdx) -> bool {
        self.circs.get(&idx).is_some_and(|c| c.windows.uses_cc())
    }

    /// `now` in microseconds of congestion control's clock.
    pub(crate) fn usec(&mut self, now: Instant) -> u64 {
        let epoch = *self.cc_epoch.get_or_insert(now);
        u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX)
    }

    pub fn set_config(&mut self, cfg: Arc<CircuitConfig>) {
        self.cfg = cfg;
    }

    /// A channel we accepted finished its handshake.
    /// The address an accepted channel comes from (after
    /// [`Self::channel_opened`]).
    pub fn set_channel_addr(&mut self, chan: ChanId, addr: std::net::IpAddr) {
        if let Some(c) = self.chans.get_mut(&chan) {
            c.addr = Some(addr);
        }
    }

    /// What the address owners said (see [`crate::proto::dos`]).
    pub fn dos_verdict(&mut self, v: crate::proto::dos::Verdict) {
        self.dos.apply(v);
    }

    /// Close a connection from `addr` as it is accepted? (DoSConnection)
    pub fn dos_refuse_connection(&mut self, addr: std::net::IpAddr, now: Instant) -> bool {
        let secs = crate::proto::dos::secs(now);
        self.dos.refuse_connection(&self.cfg.dos, addr, secs)
    }

    /// Drop the verdicts that no longer refuse anything.
    pub fn dos_purge(&mut self, now: Instant) {
        self.dos.purge(crate::proto::dos::secs(now));
    }

    /// This worker's refusals so far.
    pub fn dos_counters(&self) -> crate::proto::dos::DosStats {
        self.dos.counters
    }

    pub fn channel_opened(&mut self, chan: ChanId, peer: PeerKind) {
        self.chans.insert(
            chan,
            ChanInfo {
                peer: Some(peer),
                addr: None,
                initiator: false,
            },
        );
    }

    /// A channel we opened (for an EXTEND2) finished its handshake. A
    /// channel first named by [`Self::handle_extend_channel`] counts as ours too.
    pub fn channel_opened_outbound(&mut self, chan: ChanId, peer: PeerKind) {
        self.chans.insert(
            chan,
            ChanInfo {
                peer: Some(peer),
                addr: None,
                initiator: true,
            },
        );
    }

    /// The channel is gone: DESTROY(CHANNEL_CLOSED) the other side of each
    /// of its circuits and close their streams.
    /// How many more bytes of cells the link of `chan` should take (the
    /// worker's limit minus what waits in it), and whether it drained
    /// enough for the circuits it stopped to package again. At zero room,
    /// exit streams of circuits whose client is on `chan` package nothing:
    /// their destinations' bytes wait in the kernel, not in the link's
    /// queue. C tor stops reading edges the same way once a circuit's cell
    /// queue passes its high-water mark (relay.c:
    /// circuit_queue_streams_are_blocked, CELL_QUEUE_HIGHWATER_SIZE); oxit
    /// counts the link's bytes instead, and charges each cell as it is
    /// packaged, because in one turn thousands of destinations' reads can
    /// outrun any per-circuit mark. Without it, 5,000 busy circuits queued
    /// whole windows: gigabytes, and seconds in front of every cell.
    pub fn set_chan_room(&mut self, chan: ChanId, room: i64, resume: bool) {
        let e = self.chan_room.entry(chan).or_default();
        e.room = room;
        if !resume || e.waiting.is_empty() {
            return;
        }
        let mut waiting = std::mem::take(&mut e.waiting);
        waiting.sort_unstable();
        waiting.dedup();
        for idx in waiting {
            self.resume_streams(idx);
        }
    }

    /// Whether circuit `idx` may package: its window is open and its
    /// client's link has room. A circuit stopped by a full link is
    /// remembered, to be resumed when the link drains.
    pub(crate) fn may_package(&mut self, idx: CircIdx) -> bool {
        let Some(c) = self.circs.get(&idx) else {
            return false;
        };
        if c.conflux {
            return self.may_package_linked(idx);
        }
        if c.windows.package_room() == 0 {
            return false;
        }
        if let Some(e) = self.chan_room.get_mut(&c.prev_chan)
            && e.room <= 0
        {
            e.waiting.push(idx);
            return false;
        }
        true
    }

    pub fn channel_closed(&mut self, chan: ChanId) {
        self.chan_room.remove(&chan);
        self.chans.remove(&chan);
        self.reserved.retain(|(c, _)| *c != chan);
        self.onion.channel_closed(chan);
        let mut victims: Vec<(CircIdx, Side)> = self
            .ids
            .iter()
            .filter(|((c, _), _)| *c == chan)
            .map(|(_, v)| *v)
            .collect();
        victims.sort_unstable_by_key(|(i, _)| *i);
        for (idx, side) in victims {
            // The dead side gets nothing; the other side learns why.
            let (to_prev, to_next) = match side {
                Side::Prev => (None, Some(DestroyReason::CHANNEL_CLOSED)),
                Side::Next => (Some(DestroyReason::CHANNEL_CLOSED), None),
            };
            self.close_circuit(idx, to_prev, to_next);
        }
    }

    /// The hop on the far side of `(chan, id)` is gone without a DESTROY
    /// from it (the worker holding that channel gave up on it, and told
    /// that hop `reason` itself): close the circuit, telling the other side
    /// `reason`.
    pub fn next_hop_failed(&mut self, chan: ChanId, id: CircId, reason: DestroyReason) {
        let Some(&(idx, side)) = self.ids.get(&(chan, id)) else {
            return;
        };
        self.ids.remove(&(chan, id));
        match side {
            Side::Next => {
                if let Some(c) = self.circs.get_mut(&idx) {
                    c.next = Next::None;
                }
                self.close_circuit(idx, Some(reason), None);
            }
            // A conflux leg whose client is on that channel.
            Side::Prev => self.close_circuit(idx, None, Some(reason)),
        }
    }

    /// Close the circuit that uses ID `id` on `chan` (either side), DESTROY
    /// `reason` both ways: its queue on that link is over the cap
    /// (relay.c:append_cell_to_circuit_queue).
    pub fn close_circuit_at(&mut self, chan: ChanId, id: CircId, reason: DestroyReason) {
        if let Some(&(idx, _)) = self.ids.get(&(chan, id)) {
            self.close_circuit(idx, Some(reason), Some(reason));
        }
    }

    /// Close every circuit with a side on `chan`, DESTROY `reason` both
    /// ways (a channel kept open whose circuits must go). Returns how many.
    pub fn close_circuits_on(&mut self, chan: ChanId, reason: DestroyReason) -> usize {
        let mut victims: Vec<CircIdx> = self
            .ids
            .iter()
            .filter(|((c, _), _)| *c == chan)
            .map(|(_, (i, _))| *i)
            .collect();
        victims.sort_unstable();
        victims.dedup();
        for &idx in &victims {
            self.close_circuit(idx, Some(reason), Some(reason));
        }
        victims.len()
    }

    /// A batch of cells from one channel, in arrival order. Consecutive
    /// RELAY / RELAY_EARLY cells of one circuit go through tor1 as a group.
    pub fn handle_cells(
        &mut self,
        chan: ChanId,
        cells: &mut [IncomingCell],
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let is_relay = |c: &IncomingCell| matches!(c.cmd, ChanCmd::RELAY | ChanCmd::RELAY_EARLY);
        // Relay cells up to the next control cell are decrypted and checked
        // together first, every circuit at once (see `decrypt_ahead`); a
        // control cell can create or end circuits, so it ends the run.
        let mut pre = std::mem::take(&mut self.pre);
        pre.clear();
        let mut pre_from = 0;
        let mut at = 0;
        let mut rest = cells;
        while let Some(first) = rest.first() {
            let (relay, id) = (is_relay(first), first.circ_id);
            if relay && at >= pre_from + pre.len() {
                let run = rest.iter().take_while(|c| is_relay(c)).count();
                if let Some(seg) = rest.get_mut(..run) {
                    self.decrypt_ahead(chan, seg, &mut pre);
                }
                pre_from = at;
            }
            let n = if relay {
                rest.iter()
                    .take_while(|c| is_relay(c) && c.circ_id == id)
                    .count()
            } else {
                1
            };
            let (group, tail) = rest.split_at_mut(n);
            if !self.moved.is_empty() && self.moved.contains_key(&(chan, id)) {
                // A leg handed to another worker earlier in this batch: its
                // cells follow it, decrypted if they already were.
                for (k, cell) in group.iter().enumerate() {
                    let ahead = (at + k).checked_sub(pre_from).and_then(|i| pre.get(i));
                    let left = match ahead {
                        Some(Some((_, tag))) if relay => conflux::Leftover::Plain {
                            early: cell.cmd == ChanCmd::RELAY_EARLY,
                            body: cell.body,
                            tag: *tag,
                        },
                        _ => conflux::Leftover::Raw(cell.clone()),
                    };
                    self.keep_leftover(chan, id, left);
                }
            } else if let [cell] = group
                && !is_relay(cell)
            {
                self.handle_control_cell(chan, cell, now, rng);
            } else {
                let done = pre.get(at - pre_from..at - pre_from + n).unwrap_or(&[]);
                self.handle_relay_group(chan, group, done, now, rng);
            }
            rest = tail;
            at += n;
        }
        self.pre = pre;
    }

    /// Circuits with a side on `chan`, including those of other workers
    /// that ride on it.
    pub fn circuit_count(&self, chan: ChanId) -> usize {
        self.ids
            .keys()
            .chain(self.reserved.iter())
            .chain(self.onion.waiting_ids())
            .filter(|(c, _)| *c == chan)
            .count()
    }

    /// Give back the room of maps that once held many more entries than
    /// they do now (a flood of circuits that closed): a map keeps its
    /// capacity, and a circuit's slot is about a kilobyte.
    pub fn shrink(&mut self) {
        fn shrink<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(m: &mut HashMap<K, V, S>) {
            if m.capacity() > 4 * m.len() + 1024 {
                m.shrink_to(2 * m.len());
            }
        }
        shrink(&mut self.circs);
        shrink(&mut self.ids);
        shrink(&mut self.streams);
        shrink(&mut self.chans);
        shrink(&mut self.extends);
        if self.actions.capacity() > 4 * self.actions.len() + 1024 {
            self.actions.shrink_to(2 * self.actions.len());
        }
    }

    /// The address of the client behind the circuit whose next side is
    /// `(chan, id)`, if its previous hop is a client channel: where a
    /// queue that overflows toward the next hop comes from
    /// (dos_num_circ_max_outq applies to it).
    pub fn exitward_client_addr(&self, chan: ChanId, id: CircId) -> Option<std::net::IpAddr> {
        let &(idx, Side::Next) = self.ids.get(&(chan, id))? else {
            return None;
        };
        let prev = self.circs.get(&idx)?.prev_chan;
        match self.chans.get(&prev)? {
            ChanInfo {
                peer: Some(PeerKind::Client),
                addr: Some(a),
                ..
            } => Some(*a),
            _ => None,
        }
    }

    /// Exit streams seen so far (for the metrics).
    pub fn exit_stream_counts(&self) -> ExitStreamCounts {
        self.exit_streams
    }

    /// Circuits this table closed, by reason: slot `i` counts DESTROY
    /// reason code `i` (0..=12), the last slot any other code. The reason
    /// is the one the circuit was closed with, as C tor marks it
    /// (circuit_mark_for_close): what we sent toward its previous hop, or
    /// toward the next one when the previous hop was already gone. A
    /// circuit a peer destroyed counts as DESTROYED, whatever reason the
    /// peer gave (command.c:command_process_destroy_cell does not keep it
    /// either).
    pub fn close_counts(&self) -> [u64; CLOSE_REASON_SLOTS] {
        self.closed
    }

    /// The [`CircCounter`] events so far, by `CircCounter as usize`.
    pub fn counters(&self) -> [u64; CircCounter::SLOTS] {
        self.counters
    }

    /// Cells through our relay crypto layer so far: forward (decrypted),
    /// backward (encrypted).
    pub fn crypto_cells(&self) -> [u64; 2] {
        self.crypto_cells
    }

    /// Congestion control's statistics so far.
    pub fn cc_stats(&self) -> &crate::proto::cc::CcStats {
        &self.cc_stats
    }

    /// One more `what` (a plain add, once per event, never per cell of
    /// a flow).
    pub(crate) fn count(&mut self, what: CircCounter) {
        if let Some(n) = self.counters.get_mut(what as usize) {
            *n += 1;
        }
    }

    /// Circuits on this worker.
    pub fn circuit_total(&self) -> usize {
        self.circs.len()
    }

    /// Circuits per channel, in one pass over the table (for periodic
    /// timers that look at every channel: linear, not links × circuits).
    pub fn circuit_counts(&self) -> HashMap<ChanId, usize> {
        let mut m = HashMap::new();
        for (c, _) in self
            .ids
            .keys()
            .chain(self.reserved.iter())
            .chain(self.onion.waiting_ids())
        {
            *m.entry(*c).or_insert(0) += 1;
        }
        m
    }

    /// Whether `chan` is an open channel to an authenticated relay: only
    /// those carry other workers' circuits.
    pub fn is_relay_channel(&self, chan: ChanId) -> bool {
        matches!(
            self.chans.get(&chan),
            Some(ChanInfo {
                peer: Some(PeerKind::Relay { .. }),
                ..
            })
        )
    }

    /// Set aside a fresh circuit ID on `chan` for a circuit another worker
    /// owns (same ID rules as our own circuits). `None` when `chan` is not
    /// an open relay channel or no free ID was found.
    pub fn reserve_circ_id(&mut self, chan: ChanId, rng: &mut impl CryptoRng) -> Option<CircId> {
        if !self.is_relay_channel(chan) {
            return None;
        }
        let initiator = self.chans.get(&chan).is_some_and(|c| c.initiator);
        let id = self.pick_circ_id(chan, initiator, rng)?;
        self.reserved.insert((chan, id));
        Some(id)
    }

    /// The other worker's circuit on `chan` is gone.
    pub fn release_circ_id(&mut self, chan: ChanId, id: CircId) {
        self.reserved.remove(&(chan, id));
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        // Sealed only once the first plaintext cell is next out: the
        // actions before it (a worker resuming streams) often queue more
        // cells, and one seal over all of them runs circuits side by side.
        if self.sealer.next_is(self.sealer.popped) {
            self.seal_pending();
        }
        let (action, circ) = self.actions.pop_front()?;
        self.sealer.popped += 1;
        if let Some(c) = circ.and_then(|i| self.circs.get_mut(&i)) {
            c.queued = c.queued.saturating_sub(1);
        }
        Some(action)
    }

    pub(crate) fn push_action(&mut self, a: Action) {
        self.actions.push_back((a, None));
    }

    /// Queue bytes for an exit socket. When the last queued action is a
    /// write to the same stream, append to it: a stream's DATA cells arrive
    /// together in a batch, and a buffer per cell was an allocation per
    /// relayed cell on the upload path.
    pub(crate) fn push_stream_write(&mut self, key: StreamKey, data: &[u8]) {
        if let Some((
            Action::StreamWrite {
                key: last,
                data: buf,
            },
            None,
        )) = self.actions.back_mut()
            && *last == key
        {
            buf.extend_from_slice(data);
            return;
        }
        self.push_action(Action::StreamWrite {
            key,
            data: data.to_vec(),
        });
    }

    pub(crate) fn alloc_idx(&mut self) -> CircIdx {
        let i = self.next_idx;
        self.next_idx += 1;
        i
    }

    pub(crate) fn alloc_key(&mut self) -> u64 {
        let k = self.next_key;
        self.next_key += 1;
        k
    }

    /// Queue a cell of circuit `idx` (or of no circuit) for the worker,
    /// enforcing `circ_max_cell_queue_size` (relay.c:append_cell_to_circuit_queue
    /// closes with RESOURCELIMIT).
    pub(crate) fn push_cell(
        &mut self,
        idx: Option<CircIdx>,
        chan: ChanId,
        circ_id: CircId,
        cmd: ChanCmd,
        body: [u8; CELL_BODY_LEN],
    ) {
        if let Some(c) = idx.and_then(|i| self.circs.get_mut(&i)) {
            if c.queued >= self.cfg.max_queue {
                if let Some(i) = idx {
                    self.close_circuit(
                        i,
                        Some(DestroyReason::RESOURCELIMIT),
                        Some(DestroyReason::RESOURCELIMIT),
                    );
                }
                return;
            }
            c.queued += 1;
        }
        self.actions.push_back((
            Action::SendCell {
                chan,
                circ_id,
                cmd,
                body,
            },
            idx,
        ));
    }

    /// A DESTROY for a circuit ID that has (or never had) no circuit.
    pub(crate) fn send_destroy(&mut self, chan: ChanId, circ_id: CircId, reason: DestroyReason) {
        let mut body = [0u8; CELL_BODY_LEN];
        body[0] = Destroy::new(reason).reason().get();
        self.push_cell(None, chan, circ_id, ChanCmd::DESTROY, body);
    }

    /// Originate a relay message at our hop toward the client. `None` if
    /// it was not queued (no such circuit, or its queue was full and it
    /// was closed).
    pub(crate) fn send_back<'m, M: RelayBody<'m>>(
        &mut self,
        idx: CircIdx,
        stream_id: StreamId,
        msg: &M,
        rng: &mut impl CryptoRng,
    ) -> Option<()> {
        // Messages we build always fit a cell.
        self.originate(idx, M::CMD, rng, |format, body, rng| {
            format.encode_msg(stream_id, msg, rng, body).is_ok()
        })
    }

    /// Originate DATA cells of stream `sid` from `data` on circuit `idx`,
    /// at most `max` of them and no more than the circuit window, the
    /// circuit's queue and its client link's room allow. Returns the cells
    /// made and the bytes they took (cells carry 498 bytes, or 488 on a
    /// CGO circuit). The hot path of an exit: the circuit and the room are looked
    /// up once per call, not once per cell (those lookups were a tenth of
    /// an exit's CPU), and each cell is encoded, sealed, counted against the
    /// window (keeping the tag a v1 SENDME must echo) and the room, and
    /// queued in place.
    pub(crate) fn package_data(
        &mut self,
        idx: CircIdx,
        sid: StreamId,
        data: &[u8],
        max: usize,
        now: Instant,
        rng: &mut impl CryptoRng,
    ) -> (usize, usize) {
        if self.circs.get(&idx).is_some_and(|c| c.conflux) {
            return self.package_linked(idx, sid, data, max, now, rng);
        }
        self.package_on(idx, sid, data, max, now, rng)
    }

    /// [`Self::package_data`] on exactly circuit `idx`.
    pub(crate) fn package_on(
        &mut self,
        idx: CircIdx,
        sid: StreamId,
        data: &[u8],
        max: usize,
        now: Instant,
        rng: &mut impl CryptoRng,
    ) -> (usize, usize) {
        let now_usec = self.usec(now);
        let Some(c) = self.circs.get_mut(&idx) else {
            return (0, 0);
        };
        let wire = crate::proto::channel::queue::WIRE_CELL_LEN as i64;
        let room = self.chan_room.get_mut(&c.prev_chan);
        let room_cells = room.as_ref().map_or(usize::MAX, |r| {
            usize::try_from((r.room.max(0) + wire - 1) / wire).unwrap_or(usize::MAX)
        });
        let limit = max
            .min(c.windows.package_room())
            .min(self.cfg.max_queue.saturating_sub(c.queued))
            .min(room_cells);
        let (chan, id) = (c.prev_chan, c.prev_id);
        let format = c.crypto.format();
        let (mut made, mut taken) = (0, 0);
        for chunk in data.chunks(format.data_max()).take(limit) {
            let mut body = [0u8; CELL_BODY_LEN];
            if format
                .encode_data(
                    crate::proto::relay_msg::RelayCmd::DATA,
                    sid,
                    chunk,
                    rng,
                    &mut body,
                )
                .is_err()
            {
                break;
            }
            taken += chunk.len();
            let keep_tag = c.windows.note_packaged(now_usec);
            c.queued += 1;
            let seq = self.sealer.popped + self.actions.len() as u64;
            self.sealer.note_unsealed(seq, idx, keep_tag);
            self.actions.push_back((
                Action::SendCell {
                    chan,
                    circ_id: id,
                    cmd: ChanCmd::RELAY,
                    body,
                },
                Some(idx),
            ));
            made += 1;
        }
        if let Some(r) = room {
            r.room = r.room.saturating_sub(wire.saturating_mul(made as i64));
        }
        if self.sealer.is_full() {
            self.seal_pending();
        }
        (made, taken)
    }

    /// Tear a circuit down: DESTROY toward the sides given a reason, close
    /// its streams, forget its IDs and any pending extend.
    pub(crate) fn close_circuit(
        &mut self,
        idx: CircIdx,
        to_prev: Option<DestroyReason>,
        to_next: Option<DestroyReason>,
    ) {
        // What it originated leaves sealed, before the DESTROY.
        self.seal_pending();
        let Some(mut c) = self.circs.remove(&idx) else {
            return;
        };
        // Once per circuit, a plain add: never on the cell path.
        let why = to_prev.or(to_next).unwrap_or(DestroyReason::NONE);
        let slot = usize::from(why.get()).min(CLOSE_REASON_SLOTS - 1);
        if let Some(n) = self.closed.get_mut(slot) {
            *n += 1;
        }
        if why == DestroyReason::PROTOCOL {
            self.count(CircCounter::ProtoViolation);
        }
        if let Some(v) = &c.windows.cc {
            self.cc_stats.note_closed(v);
        }
        let set_ends = if c.conflux {
            self.conflux_leg_closing(idx, &mut c)
        } else {
            Vec::new()
        };
        self.ids.remove(&(c.prev_chan, c.prev_id));
        if let Some(reason) = to_prev {
            self.send_destroy(c.prev_chan, c.prev_id, reason);
        }
        match c.next {
            Next::Pending { key, .. } => {
                self.extends.remove(&key);
            }
            Next::Created { chan, id } | Next::Open { chan, id } => {
                self.ids.remove(&(chan, id));
                if let Some(reason) = to_next {
                    self.send_destroy(chan, id, reason);
                }
            }
            Next::None => {}
        }
        let mut keys: Vec<StreamKey> = c.streams.values().copied().collect();
        keys.sort_unstable();
        for key in keys {
            if self.streams.remove(&key).is_some() {
                self.push_action(Action::CloseStream { key });
            }
        }
        // conflux_mark_all_for_close(..., END_CIRC_REASON_FINISHED).
        for leg in set_ends {
            let r = Some(DestroyReason::FINISHED);
            self.close_circuit(leg, r, r);
        }
    }

    /// DESTROY a create we will not answer, before it became a circuit;
    /// counted as a violation when it is one (C marks the circuit it
    /// made for the cell: command.c, cpuworker.c).
    pub(crate) fn refuse_create(&mut self, chan: ChanId, circ_id: CircId, reason: DestroyReason) {
        if reason == DestroyReason::PROTOCOL {
            self.count(CircCounter::ProtoViolation);
        }
        self.send_destroy(chan, circ_id, reason);
    }

    /// Close for a protocol violation at our hop: PROTOCOL both ways
    /// (circuit_mark_for_close with END_CIRC_REASON_TORPROTOCOL).
    pub(crate) fn close_protocol(&mut self, idx: CircIdx) {
        self.close_circuit(
            idx,
            Some(DestroyReason::PROTOCOL),
            Some(DestroyReason::PROTOCOL),
        );
    }

    /// Connect / resolve deadlines of streams and half-done work.
    /// Takes an rng because a timed-out stream is answered with an END
    /// cell, whose padding must be random (§4.1).
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl CryptoRng) {
        while let Some(Reverse((when, key))) = self.deadlines.peek().copied() {
            if when > now {
                break;
            }
            self.deadlines.pop();
            self.stream_setup_timeout(key, now, rng);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((t, _))| *t)
    }

    /// Whether stream `key` still is in `state` (for tests and the worker's
    /// sanity checks).
    pub fn stream_state(&self, key: StreamKey) -> Option<StreamState> {
        self.streams.get(&key).map(|s| s.state)
    }
}
