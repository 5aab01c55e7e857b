//! Conflux legs in the circuit table: CONFLUX_LINK / LINKED_ACK / SWITCH
//! at our hop, the sequencing of multiplexed cells across a set's legs,
//! the leg each multiplexed cell we originate leaves on, streams shared by
//! the legs, and what closing a leg does (docs/conflux-exit.md; C tor's
//! conflux.c, conflux_pool.c, relay.c). The sequence numbers, the
//! out-of-order queue and the leg choice are [`crate::proto::conflux`]'s.
//!
//! A set's streams each have a home leg (the circuit whose `streams` map
//! holds them: the one that took the BEGIN), and are found from any leg of
//! the set, as C tor's legs share one stream list. When a leg closes and
//! the set goes on, its streams move to a surviving leg.

use std::time::Instant;

use rand::CryptoRng;

use super::{ChanId, CircIdx, CircuitTable, IncomingCell, Next, PeerKind, StreamKey};
use crate::proto::cell::{CELL_BODY_LEN, CircId, DestroyReason};
use crate::proto::conflux::{Arrival, LegClosed, LinkError, NoLeg, SendLeg};
use crate::proto::relay_msg::{
    ConfluxLink, ConfluxSwitch, RelayBody, RelayCmd, RelayFormat, SendmeDigest, StreamId,
};

impl CircuitTable {
    /// A CONFLUX_* cell at our hop (its stream ID is not looked at, as in
    /// C tor).
    pub(super) fn conflux_cell(
        &mut self,
        idx: CircIdx,
        cmd: RelayCmd,
        data: &[u8],
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let Some(c) = self.circs.get(&idx) else {
            return;
        };
        // What conflux_process_link / _linked_ack / _switch check first:
        // conflux on, congestion control on this circuit, our hop the last.
        let refusal = if !self.cfg.conflux.enabled {
            Some("conflux is disabled")
        } else if !c.windows.uses_cc() {
            Some("the circuit has no congestion control")
        } else if !matches!(c.next, Next::None) {
            Some("we are not the last hop")
        } else {
            None
        };
        let refusal = refusal.or(match cmd {
            RelayCmd::CONFLUX_LINK if c.conflux => Some("the circuit is already linked"),
            // C tor would orphan them (cfx_add_leg's BUG()); refuse instead.
            RelayCmd::CONFLUX_LINK if !c.streams.is_empty() => Some("the circuit has streams"),
            RelayCmd::CONFLUX_LINKED_ACK | RelayCmd::CONFLUX_SWITCH if !c.conflux => {
                Some("the circuit is not linked")
            }
            // Only a client gets LINKED (conflux_process_linked: origin only).
            RelayCmd::CONFLUX_LINKED => Some("LINKED is for clients"),
            // Legs come from middle relays; a client's own channel cannot
            // open exit streams anyway, and only relay channels can carry a
            // leg to another worker.
            RelayCmd::CONFLUX_LINK
                if !matches!(
                    self.chans.get(&c.prev_chan).and_then(|i| i.peer),
                    Some(PeerKind::Relay { .. })
                ) =>
            {
                Some("the previous hop is not a relay")
            }
            _ => None,
        });
        if let Some(why) = refusal {
            tracing::debug!(circ_id = ?c.prev_id, "{cmd} refused: {why}; closing the circuit");
            self.close_protocol(idx);
            return;
        }
        let now_usec = self.usec(now);
        match cmd {
            RelayCmd::CONFLUX_LINK => self.conflux_link(idx, data, now_usec, rng),
            RelayCmd::CONFLUX_LINKED_ACK => {
                self.conflux.linked_ack(idx, now_usec);
            }
            _ => {
                // A short body reads as 0 (conflux_cell_parse_switch).
                let rel = ConfluxSwitch::decode(data).map_or(0, |s| s.seqnum);
                tracing::debug!(seqnum = rel, "conflux switch from the client");
                self.conflux.switch(idx, rel);
            }
        }
    }

    /// CONFLUX_LINK on a circuit that may take it: the leg joins its set at
    /// once and LINKED goes back on it (conflux_pool.c:conflux_process_link).
    fn conflux_link(&mut self, idx: CircIdx, data: &[u8], now_usec: u64, rng: &mut impl CryptoRng) {
        let link = match ConfluxLink::decode(data) {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("bad CONFLUX_LINK: {e}; closing the circuit");
                self.close_protocol(idx);
                return;
            }
        };
        if let Some(home) = self.home_elsewhere(&link.nonce) {
            self.hand_off(idx, link, home);
            return;
        }
        self.link_here(idx, link, now_usec, rng);
    }

    /// The leg joins the set in this table.
    fn link_here(
        &mut self,
        idx: CircIdx,
        link: ConfluxLink,
        now_usec: u64,
        rng: &mut impl CryptoRng,
    ) {
        let named = self.conflux.legs_of_nonce(&link.nonce);
        let max_legs = self.cfg.conflux.max_legs;
        match self.conflux.link(idx, &link, max_legs, now_usec) {
            Ok(linked) => {
                if let Some(c) = self.circs.get_mut(&idx) {
                    c.conflux = true;
                    tracing::debug!(
                        circ_id = ?c.prev_id,
                        legs = named.len() + 1,
                        ux = ?link.desired_ux,
                        "conflux leg linked"
                    );
                }
                self.send_back(idx, StreamId::CIRCUIT, &linked, rng);
            }
            Err(e @ LinkError::DataLoss { .. }) => {
                // The set the nonce named is gone: its legs close PROTOCOL,
                // this one INTERNAL (conflux_pool.c:try_finalize_set).
                tracing::debug!("{e}; closing the set");
                for leg in named {
                    self.close_circuit(leg, Some(DestroyReason::PROTOCOL), None);
                }
                self.close_circuit(idx, Some(DestroyReason::INTERNAL), None);
            }
            Err(e) => {
                tracing::debug!("{e}; closing the circuit");
                self.close_protocol(idx);
            }
        }
    }

    /// A multiplexed cell (BEGIN, DATA, END, CONNECTED, RESOLVE(D), XON,
    /// XOFF) arrived on linked leg `idx`: DATA counts for this leg's
    /// window first, then the cell waits for its turn in the set's order
    /// (relay.c:connection_edge_process_relay_cell, conflux.c:
    /// conflux_process_relay_msg).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conflux_arrived(
        &mut self,
        idx: CircIdx,
        cmd: RelayCmd,
        sid: StreamId,
        data: &[u8],
        tag: SendmeDigest,
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        if cmd == RelayCmd::DATA {
            if !self.circuit_data_received(idx, tag, rng) {
                return;
            }
        } else if cmd.needs_stream() && sid.is_circuit() {
            // Dropped before sequencing, as relay.c does: not counted.
            return;
        }
        let max = self.cfg.conflux.max_ooo_bytes;
        match self.conflux.arrived(idx, (cmd, sid, data), max, now) {
            Arrival::Deliver => {
                self.deliver_multiplexed(idx, cmd, sid, data, now, rng);
                // Then what waited for it, processed on this leg as C tor
                // does (conflux_dequeue_relay_msg), until a gap or a close.
                while self.circs.contains_key(&idx) {
                    let Some(q) = self.conflux.pop_ready(idx) else {
                        break;
                    };
                    self.deliver_multiplexed(idx, q.cmd, q.stream, &q.data, now, rng);
                }
            }
            Arrival::Queued => {}
            Arrival::CloseLeg(reason) => {
                tracing::debug!(
                    ?reason,
                    "conflux leg closed: sequence number out of place or queue full"
                );
                self.close_circuit(idx, Some(reason), None);
            }
        }
    }

    fn deliver_multiplexed(
        &mut self,
        idx: CircIdx,
        cmd: RelayCmd,
        sid: StreamId,
        data: &[u8],
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        if sid.is_circuit() {
            return; // DATA, XON or XOFF for the circuit: nothing to do.
        }
        if cmd == RelayCmd::DATA {
            self.stream_data(idx, sid, data, now, rng);
        } else {
            self.stream_cell(idx, cmd, sid, data, now, rng);
        }
    }

    /// Stream `sid` of circuit `idx`, or, on a conflux leg, of its set.
    pub(crate) fn find_stream(&self, idx: CircIdx, sid: StreamId) -> Option<StreamKey> {
        let c = self.circs.get(&idx)?;
        if let Some(k) = c.streams.get(&sid) {
            return Some(*k);
        }
        if !c.conflux {
            return None;
        }
        self.conflux
            .legs_of(idx)
            .filter(|&l| l != idx)
            .find_map(|l| self.circs.get(&l)?.streams.get(&sid).copied())
    }

    /// Whether leg `l` may take a DATA cell now: window open, queue not
    /// full, link not full (conflux.c:circuit_ready_to_send).
    fn leg_has_room(&self, l: CircIdx) -> bool {
        self.circs.get(&l).is_some_and(|c| {
            c.windows.package_room() > 0
                && c.queued < self.cfg.max_queue
                && self.chan_room.get(&c.prev_chan).is_none_or(|r| r.room > 0)
        })
    }

    /// The leg a multiplexed cell of linked circuit `idx` leaves on, after
    /// the SWITCH that announces a change of leg. `None` when no leg may
    /// take a DATA cell, or when the set's numbers went wrong (then the set
    /// is closed, PROTOCOL: conflux.c:conflux_decide_circ_for_send).
    fn conflux_send_leg(
        &mut self,
        idx: CircIdx,
        is_data: bool,
        rng: &mut impl CryptoRng,
    ) -> Option<CircIdx> {
        let mut conflux = std::mem::take(&mut self.conflux);
        let pick = conflux.send_leg(idx, is_data, |l| self.leg_has_room(l));
        let legs: Vec<CircIdx> = match pick {
            Err(NoLeg::Broken) => conflux.legs_of(idx).collect(),
            _ => Vec::new(),
        };
        self.conflux = conflux;
        match pick {
            Ok(SendLeg { leg, switch }) => {
                if let Some(seqnum) = switch {
                    tracing::debug!(
                        seqnum,
                        "conflux switch: the set's next cells leave on another leg"
                    );
                    // Not multiplexed itself: it goes on the new leg as is.
                    self.send_on(leg, StreamId::CIRCUIT, &ConfluxSwitch { seqnum }, rng)?;
                }
                Some(leg)
            }
            Err(NoLeg::Blocked) => None,
            Err(NoLeg::Broken) => {
                tracing::warn!("conflux set's sequence numbers went wrong; closing the set");
                for l in legs {
                    self.close_protocol(l);
                }
                None
            }
        }
    }

    /// Originate a message on circuit `idx`: on `idx` itself, or, when it
    /// is a conflux leg and the command is multiplexed, on the leg conflux
    /// picks, counted in the set's order. `encode` writes the cell body in
    /// the leg's format. Anything but DATA always finds a leg (the current
    /// one when none has room), as in C tor.
    pub(crate) fn originate<R: CryptoRng>(
        &mut self,
        idx: CircIdx,
        cmd: RelayCmd,
        rng: &mut R,
        encode: impl FnOnce(RelayFormat, &mut [u8; CELL_BODY_LEN], &mut R) -> bool,
    ) -> Option<()> {
        let c = self.circs.get(&idx)?;
        let linked = c.conflux && cmd.conflux_multiplexed();
        let leg = if linked {
            self.conflux_send_leg(idx, cmd == RelayCmd::DATA, rng)?
        } else {
            idx
        };
        let format = self.circs.get(&leg)?.crypto.format();
        let mut body = [0u8; CELL_BODY_LEN];
        if !encode(format, &mut body, rng) {
            return None;
        }
        self.push_originated(leg, body)?;
        if linked {
            self.conflux.note_sent(leg, 1);
        }
        Some(())
    }

    /// [`Self::send_back`] on exactly circuit `idx`, whatever the message.
    fn send_on<'m, M: RelayBody<'m>>(
        &mut self,
        idx: CircIdx,
        sid: StreamId,
        msg: &M,
        rng: &mut impl CryptoRng,
    ) -> Option<()> {
        let format = self.circs.get(&idx)?.crypto.format();
        let mut body = [0u8; CELL_BODY_LEN];
        format.encode_msg(sid, msg, rng, &mut body).ok()?;
        self.push_originated(idx, body)
    }

    /// DATA cells of stream `sid` on linked circuit `idx`: leg by leg as
    /// conflux picks them (the lowest-RTT leg with room keeps being picked
    /// until its window or link fills, so each leg takes a run of cells).
    pub(super) fn package_linked(
        &mut self,
        idx: CircIdx,
        sid: StreamId,
        data: &[u8],
        max: usize,
        now: Instant,
        rng: &mut impl CryptoRng,
    ) -> (usize, usize) {
        let (mut made, mut taken) = (0, 0);
        while made < max && taken < data.len() {
            let Some(leg) = self.conflux_send_leg(idx, true, rng) else {
                break;
            };
            let rest = data.get(taken..).unwrap_or(&[]);
            let (m, t) = self.package_on(leg, sid, rest, max - made, now, rng);
            self.conflux.note_sent(leg, m as u64);
            made += m;
            taken += t;
            if m == 0 {
                break;
            }
        }
        (made, taken)
    }

    /// Whether any leg of linked circuit `idx`'s set may take DATA
    /// (conflux_util.c:conflux_can_send). When none may, the legs stopped by
    /// a full link are remembered, to resume the set's streams when it
    /// drains.
    pub(super) fn may_package_linked(&mut self, idx: CircIdx) -> bool {
        let legs: Vec<CircIdx> = self.conflux.legs_of(idx).collect();
        if legs.iter().any(|&l| self.leg_has_room(l)) {
            return true;
        }
        for l in legs {
            if let Some(c) = self.circs.get(&l)
                && let Some(e) = self.chan_room.get_mut(&c.prev_chan)
                && e.room <= 0
            {
                e.waiting.push(l);
            }
        }
        false
    }

    /// Bytes waiting in this table's conflux queues.
    pub fn conflux_queued_bytes(&self) -> usize {
        self.conflux.ooo_bytes
    }

    /// Conflux sets holding cells out of order, for the OOM handler: since
    /// when, how many bytes, and a handle for [`Self::close_conflux_set`].
    pub fn conflux_queues(&self) -> Vec<(Option<Instant>, usize, u64)> {
        self.conflux.queued().collect()
    }

    /// End the conflux set of leg `leg`, every leg RESOURCELIMIT (the OOM
    /// handler; C tor's frees nothing, oxit ends the set whose queue it
    /// picked).
    pub fn close_conflux_set(&mut self, leg: u64) {
        for l in self.conflux.remove_set(leg) {
            let r = Some(DestroyReason::RESOURCELIMIT);
            self.close_circuit(l, r, r);
        }
    }

    /// The streams of `idx`, and of its set's other legs when it is linked.
    pub(crate) fn set_streams(&self, idx: CircIdx) -> Vec<StreamKey> {
        let Some(c) = self.circs.get(&idx) else {
            return Vec::new();
        };
        let mut keys: Vec<StreamKey> = c.streams.values().copied().collect();
        if c.conflux {
            for l in self.conflux.legs_of(idx).filter(|&l| l != idx) {
                if let Some(o) = self.circs.get(&l) {
                    keys.extend(o.streams.values().copied());
                }
            }
        }
        keys
    }

    /// Linked leg `c` (already out of the table) is closing: the set goes
    /// on without it (its streams move to a surviving leg), or ends
    /// (conflux_pool.c:linked_circuit_closed). Returns the legs to close
    /// with FINISHED.
    pub(super) fn conflux_leg_closing(
        &mut self,
        idx: CircIdx,
        c: &mut super::Circuit,
    ) -> Vec<CircIdx> {
        let (inflight, sendme_inc) = c
            .windows
            .cc
            .as_ref()
            .map_or((0, u64::MAX), |v| (v.inflight(), v.sendme_inc()));
        match self.conflux.leg_closed(idx, inflight, sendme_inc) {
            LegClosed::Continue { to } => {
                let moved: Vec<(StreamId, StreamKey)> = c.streams.drain().collect();
                if let Some(t) = self.circs.get_mut(&to) {
                    t.streams.extend(moved.iter().copied());
                }
                for (_, key) in &moved {
                    if let Some(s) = self.streams.get_mut(key) {
                        s.circ = to;
                    }
                }
                if !moved.is_empty() {
                    self.resume_streams(to);
                }
                Vec::new()
            }
            LegClosed::Teardown { close } => {
                tracing::debug!(legs = close.len(), "conflux set ends with its leg");
                close
            }
            LegClosed::Gone | LegClosed::NotInSet => Vec::new(),
        }
    }
}

/// Which worker holds the set a nonce names, when there are several: one
/// keyed hash of the nonce, the same in every worker, so that the legs of
/// a set meet in one circuit table whatever channels they came on, with
/// no state shared between workers.
#[derive(Debug, Clone)]
pub struct SetHomes {
    pub me: usize,
    pub workers: usize,
    /// Shared by all workers (clones of one `RandomState` hash alike).
    pub hasher: std::hash::RandomState,
}

impl SetHomes {
    pub(crate) fn of(&self, nonce: &[u8; 32]) -> usize {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(nonce);
        usize::try_from(h % self.workers.max(1) as u64).unwrap_or(0)
    }
}

/// A cell of a leg that was handed to another worker, met in the rest of
/// the batch that carried its LINK.
#[derive(Debug)]
pub(crate) enum Leftover {
    /// Decrypted here already (with `tag` if it was for our hop).
    Plain {
        early: bool,
        body: [u8; CELL_BODY_LEN],
        tag: Option<SendmeDigest>,
    },
    /// As it came from the channel.
    Raw(IncomingCell),
}

/// A conflux leg on its way to the worker that holds its set: the
/// circuit with its keys and windows, the LINK that moves it, and the
/// cells that came after the LINK in the same batch. The worker that had
/// it keeps only the circuit ID on its channel, and moves cells between
/// that channel and the new owner as for a spliced circuit
/// ([`crate::proto::splice`]).
pub struct LegHandoff {
    pub(crate) circuit: Box<super::Circuit>,
    pub(crate) link: ConfluxLink,
    pub(crate) leftovers: Vec<Leftover>,
    /// The worker that holds the set.
    pub to: usize,
    /// Who is at the other end of the channel (the previous hop).
    pub peer: PeerKind,
}

impl std::fmt::Debug for LegHandoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegHandoff")
            .field("chan", &self.circuit.prev_chan)
            .field("circ_id", &self.circuit.prev_id)
            .field("to", &self.to)
            .field("leftovers", &self.leftovers.len())
            .finish_non_exhaustive()
    }
}

impl LegHandoff {
    /// The channel the leg came on, and its circuit ID there.
    pub fn origin(&self) -> (ChanId, CircId) {
        (self.circuit.prev_chan, self.circuit.prev_id)
    }
}

impl CircuitTable {
    /// This table is worker `homes.me` of several: conflux sets whose
    /// nonce hashes elsewhere are handed over.
    pub fn set_conflux_homes(&mut self, homes: SetHomes) {
        self.homes = (homes.workers > 1).then_some(homes);
    }

    /// The worker that must hold the set `nonce` names, when not this one.
    fn home_elsewhere(&self, nonce: &[u8; 32]) -> Option<usize> {
        let h = self.homes.as_ref()?;
        let home = h.of(nonce);
        (home != h.me).then_some(home)
    }

    /// Hand linked-to-be leg `idx` to worker `to`: it leaves the table
    /// (its circuit ID stays reserved on the channel), its originated
    /// cells sealed first; the worker takes it with
    /// [`Self::take_moved_legs`].
    fn hand_off(&mut self, idx: CircIdx, link: ConfluxLink, to: usize) {
        self.seal_pending();
        let Some(c) = self.circs.remove(&idx) else {
            return;
        };
        let key = (c.prev_chan, c.prev_id);
        self.ids.remove(&key);
        self.reserved.insert(key);
        let Some(peer) = self.chans.get(&c.prev_chan).and_then(|i| i.peer) else {
            // Checked by the caller: only relay channels get here.
            self.reserved.remove(&key);
            self.send_destroy(key.0, key.1, DestroyReason::INTERNAL);
            return;
        };
        tracing::debug!(circ_id = ?key.1, to, "conflux leg handed to the worker of its set");
        self.moved.insert(
            key,
            LegHandoff {
                circuit: Box::new(c),
                link,
                leftovers: Vec::new(),
                to,
                peer,
            },
        );
    }

    /// If `(chan, circ_id)` was handed off in this batch, keep `cell`
    /// for its new owner; `false` otherwise.
    pub(super) fn keep_leftover(&mut self, chan: ChanId, circ_id: CircId, cell: Leftover) -> bool {
        match self.moved.get_mut(&(chan, circ_id)) {
            Some(m) => {
                m.leftovers.push(cell);
                true
            }
            None => false,
        }
    }

    /// Legs handed to other workers since the last call. The worker hosts
    /// each on its channel before it reads from that channel again.
    pub fn take_moved_legs(&mut self) -> Vec<LegHandoff> {
        self.moved.drain().map(|(_, m)| m).collect()
    }

    /// A leg another worker handed us ([`Self::take_moved_legs`] there):
    /// it lives here now on `chan`, the virtual channel standing for the
    /// channel it came on, as circuit `vcirc`; its LINK and the cells after
    /// it are processed as if they had arrived here.
    pub fn adopt_leg(
        &mut self,
        chan: ChanId,
        vcirc: CircId,
        h: LegHandoff,
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let LegHandoff {
            mut circuit,
            link,
            leftovers,
            ..
        } = h;
        circuit.prev_chan = chan;
        circuit.prev_id = vcirc;
        circuit.queued = 0;
        let idx = self.alloc_idx();
        self.circs.insert(idx, *circuit);
        self.ids.insert((chan, vcirc), (idx, super::Side::Prev));
        let now_usec = self.usec(now);
        self.link_here(idx, link, now_usec, rng);
        for cell in leftovers {
            let Some(c) = self.circs.get_mut(&idx) else {
                return;
            };
            match cell {
                Leftover::Plain { early, body, tag } => {
                    if early {
                        if c.early_left == 0 {
                            self.close_protocol(idx);
                            return;
                        }
                        c.early_left -= 1;
                    }
                    let hop = (c.crypto.format(), c.conflux);
                    match tag {
                        Some(tag) => self.handle_recognized(idx, hop, &body, tag, early, now, rng),
                        // Not for us, and an exit leg has nowhere to send it.
                        None => self.close_protocol(idx),
                    }
                }
                Leftover::Raw(mut cell) => {
                    cell.circ_id = vcirc;
                    self.handle_cells(chan, std::slice::from_mut(&mut cell), now, rng);
                }
            }
        }
    }
}
