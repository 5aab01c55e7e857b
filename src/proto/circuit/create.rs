#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! Non-relay circuit cells: CREATE / CREATE_FAST / CREATE2 from a previous
//! hop, CREATED2 from a next hop, DESTROY from either
//! (requirements.md §3.1–§3.4, §3.7, §1.8; command.c:command_process_create_cell,
//! command_process_created_cell, command_process_destroy_cell).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::CryptoRng;

use super::hop::{HopCrypto, HopKeys};
use super::onion::{HandshakeStat, OnionStats, SkinKind};
use super::{
    Action, ChanId, ChanInfo, CircCounter, CircWindows, Circuit, CircuitTable, IncomingCell,
    MAX_RELAY_EARLY, Next, PeerKind, Side,
};
use crate::crypto::ntor_v3::{NTOR3_CIRC_VERIFICATION, negotiate};
use crate::crypto::{fast, ntor, ntor_v3};
use crate::proto::cell::{
    CELL_BODY_LEN, ChanBody, ChanCmd, CircId, Create2, Created2, Destroy, DestroyReason,
    HandshakeType,
};
use crate::proto::relay_msg::{Extended2, StreamId};

/// How often the "too slow" warning may be logged (onion_queue.c:
/// WARN_TOO_MANY_CIRC_CREATIONS_INTERVAL).
const ONION_WARN_EVERY: Duration = Duration::from_secs(60);

/// Why a create cell is refused with DESTROY. Every case is PROTOCOL in
/// 0.4.9 (command.c, onion.c:check_create_cell, cpuworker reply handling).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateError {
    #[error("CREATE (TAP) is not supported")]
    Tap,
    #[error("circuit ID {0} has the wrong high bit for this channel's direction")]
    WrongCircIdType(CircId),
    #[error("malformed CREATE2: {0}")]
    Cell(#[from] crate::proto::cell::CellError),
    #[error("CREATE2 with unsupported handshake type {0}")]
    Htype(HandshakeType),
    #[error("ntor handshake failed: {0}")]
    Ntor(#[from] ntor::NtorError),
    #[error("ntor-v3 handshake failed: {0}")]
    Ntor3(#[from] ntor_v3::Ntor3Error),
    #[error("CREATE_FAST failed: {0}")]
    Fast(#[from] fast::FastError),
}

impl CreateError {
    pub(crate) fn destroy_reason(&self) -> DestroyReason {
        DestroyReason::PROTOCOL
    }
}

impl CircuitTable {
    pub(super) fn handle_control_cell(
        &mut self,
        chan: ChanId,
        cell: &IncomingCell,
        now: std::time::Instant,
        rng: &mut impl CryptoRng,
    ) {
        match cell.cmd {
            ChanCmd::CREATE | ChanCmd::CREATE_FAST | ChanCmd::CREATE2 => {
                self.handle_create(chan, cell, now, rng)
            }
            ChanCmd::CREATED2 | ChanCmd::CREATED_FAST | ChanCmd::CREATED => {
                self.handle_created(chan, cell, rng)
            }
            ChanCmd::DESTROY => {
                self.count(CircCounter::DestroyReceived);
                self.handle_destroy(chan, cell)
            }
            // PADDING and the rest belong to the link layer or are dropped.
            _ => {}
        }
    }

    fn handle_create(
        &mut self,
        chan: ChanId,
        cell: &IncomingCell,
        now: std::time::Instant,
        rng: &mut impl CryptoRng,
    ) {
        // Every create cell from a client counts against its address, even
        // one dropped below (command.c:command_process_create_cell).
        let client_addr = match self.chans.get(&chan) {
            Some(ChanInfo {
                peer: Some(PeerKind::Client),
                addr: Some(a),
                ..
            }) if self.cfg.dos.cc_enabled => Some(*a),
            _ => None,
        };
        if let Some(addr) = client_addr {
            self.push_action(Action::DosCreate { addr });
        }
        // CircID 0, or one in use on this channel: drop silently.
        if cell.circ_id.is_channel()
            || self.ids.contains_key(&(chan, cell.circ_id))
            || self.reserved.contains(&(chan, cell.circ_id))
            || self.onion.is_waiting(chan, cell.circ_id)
        {
            return;
        }
        if self.cfg.hibernating {
            tracing::debug!("Received create cell but we're shutting down. Sending back destroy.");
            self.send_destroy(chan, cell.circ_id, DestroyReason::HIBERNATING);
            return;
        }
        let secs = crate::proto::dos::secs(now);
        if let Some(addr) = client_addr
            && self.dos.refuse_create(&self.cfg.dos, addr, secs)
        {
            self.send_destroy(chan, cell.circ_id, DestroyReason::RESOURCELIMIT);
            return;
        }
        // What can be refused without the handshake is refused before the
        // queue, as command.c parses the cell before the cpuworker sees it.
        if let Err(e) = self.check_create(chan, cell) {
            tracing::debug!(?chan, circ_id = %cell.circ_id, "refusing create: {e}");
            self.refuse_create(chan, cell.circ_id, e.destroy_reason());
            return;
        }
        let from_relay = self
            .chans
            .get(&chan)
            .is_some_and(|c| matches!(c.peer, Some(PeerKind::Relay { .. })));
        if let (true, Some(stat)) = (from_relay, handshake_stat(cell.cmd, &cell.body)) {
            stat.bump(&mut self.onion.stats.requested);
        }
        if self.onion.can_run_now() {
            self.answer_create(chan, cell.circ_id, cell.cmd, &cell.body, now, rng);
            return;
        }
        let kind = SkinKind::of(cell.cmd);
        if !self.onion.has_room(&self.cfg.onion) {
            // onion_queue.c:onion_pending_add; the caller closes with
            // RESOURCELIMIT (command.c).
            self.onion.note_dropped(kind);
            if kind == SkinKind::Ntor
                && self
                    .onion
                    .last_warned
                    .is_none_or(|t| now.saturating_duration_since(t) >= ONION_WARN_EVERY)
            {
                self.onion.last_warned = Some(now);
                tracing::warn!(
                    "Your computer is too slow to handle this many circuit creation \
                     requests! Please consider using the MaxAdvertisedBandwidth config \
                     option or choosing a more restricted exit policy. ({} waiting on \
                     this core)",
                    self.onion.len()
                );
            }
            self.send_destroy(chan, cell.circ_id, DestroyReason::RESOURCELIMIT);
            return;
        }
        self.onion
            .push(chan, cell.circ_id, cell.cmd, &cell.body, now);
        self.cull_onions(now);
    }

    /// Run waiting creates while this turn's handshake budget lasts, then
    /// give the next turn a fresh budget. Returns whether creates still
    /// wait (the worker should come back at once).
    pub fn run_onion_queue(&mut self, now: Instant, rng: &mut impl CryptoRng) -> bool {
        self.cull_onions(now);
        while self.onion.has_budget() {
            let Some(w) = self.onion.pop() else { break };
            self.answer_create(w.chan, w.circ_id, w.cmd, &w.body, now, rng);
        }
        self.onion.start_turn(self.cfg.onion.turn_budget);
        self.onion.len() > 0
    }

    /// Creates waiting for a handshake on this worker.
    pub fn onion_backlog(&self) -> usize {
        self.onion.len()
    }

    /// What the onion queue did since start.
    pub fn onion_stats(&self) -> OnionStats {
        self.onion.stats
    }

    /// Drop the creates that waited past `onion_queue_wait_cutoff`
    /// (onion_queue.c: "Circuit create request is too old; canceling due to
    /// overload.").
    fn cull_onions(&mut self, now: Instant) {
        while let Some(w) = self.onion.pop_expired(now, self.cfg.onion.wait_cutoff) {
            tracing::info!("Circuit create request is too old; canceling due to overload.");
            // A u64 count of creates cannot reach its limit.
            self.onion.stats.timed_out = self.onion.stats.timed_out.saturating_add(1);
            self.send_destroy(w.chan, w.circ_id, DestroyReason::RESOURCELIMIT);
        }
    }

    /// Run one create's handshake, charge its cost, and make the circuit
    /// or refuse it.
    fn answer_create(
        &mut self,
        chan: ChanId,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &[u8; CELL_BODY_LEN],
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let started = (self.clock)();
        let res = self.run_create(cmd, body, rng);
        let spent = (self.clock)().saturating_duration_since(started);
        self.onion.charge(SkinKind::of(cmd), spent);
        if let Some(stat) = handshake_stat(cmd, body) {
            stat.bump(&mut self.onion.stats.assigned);
        }
        match res {
            Ok((reply_cmd, reply, keys, cc)) => {
                if cc {
                    let crypto = match keys {
                        HopKeys::Tor1(_) => "tor1",
                        HopKeys::Cgo(_) => "CGO",
                    };
                    tracing::debug!(?chan, %circ_id, crypto, "congestion control negotiated");
                }
                let secs = crate::proto::dos::secs(now);
                let idx = self.alloc_idx();
                let circ = Circuit {
                    prev_chan: chan,
                    prev_id: circ_id,
                    next: Next::None,
                    crypto: HopCrypto::new(&keys),
                    early_left: MAX_RELAY_EARLY,
                    windows: match (&self.cfg.cc, cc) {
                        (Some(p), true) => {
                            self.cc_stats.circs_created =
                                self.cc_stats.circs_created.saturating_add(1);
                            CircWindows::vegas(p)
                        }
                        _ => CircWindows::fixed(i32::from(self.cfg.circwindow)),
                    },
                    streams: HashMap::new(),
                    conflux: false,
                    queued: 0,
                    stream_limiter: crate::proto::dos::TokenBucketCtr::new(
                        self.cfg.dos.stream_rate,
                        self.cfg.dos.stream_burst,
                        secs as u32,
                    ),
                };
                self.circs.insert(idx, circ);
                self.ids.insert((chan, circ_id), (idx, Side::Prev));
                self.push_cell(Some(idx), chan, circ_id, reply_cmd, reply);
            }
            Err(e) => {
                tracing::debug!(?chan, %circ_id, "refusing create: {e}");
                self.refuse_create(chan, circ_id, e.destroy_reason());
            }
        }
    }

    /// The checks of a create cell that need no handshake: circuit ID
    /// direction, handshake type, CREATE2 framing.
    fn check_create(&self, chan: ChanId, cell: &IncomingCell) -> Result<(), CreateError> {
        // Responder channels (CIRC_ID_TYPE_LOWER) get high-bit IDs from the
        // peer, initiator channels low-bit ones (command.c; §1.8).
        let initiator = self.chans.get(&chan).is_some_and(|c| c.initiator);
        if cell.circ_id.has_high_bit() == initiator {
            return Err(CreateError::WrongCircIdType(cell.circ_id));
        }
        match cell.cmd {
            ChanCmd::CREATE_FAST => Ok(()),
            ChanCmd::CREATE2 => match Create2::decode(&cell.body)?.htype() {
                HandshakeType::NTOR | HandshakeType::NTOR_V3 => Ok(()),
                other => Err(CreateError::Htype(other)),
            },
            _ => Err(CreateError::Tap),
        }
    }

    /// Run one create cell's handshake (checked by [`Self::check_create`]);
    /// returns the reply command and body.
    fn run_create(
        &self,
        cmd: ChanCmd,
        body: &[u8; CELL_BODY_LEN],
        rng: &mut impl CryptoRng,
    ) -> Result<(ChanCmd, [u8; CELL_BODY_LEN], HopKeys, bool), CreateError> {
        let mut out = [0u8; CELL_BODY_LEN];
        match cmd {
            ChanCmd::CREATE_FAST => {
                let (reply, keys) = fast::server_handshake(body, rng)?;
                put(&mut out, &reply);
                Ok((ChanCmd::CREATED_FAST, out, HopKeys::Tor1(keys), false))
            }
            ChanCmd::CREATE2 => {
                let c2 = Create2::decode(body)?;
                let cfg = &self.cfg;
                let (reply, keys, cc) = match c2.htype() {
                    HandshakeType::NTOR => {
                        let o =
                            ntor::server_handshake(c2.hdata(), &cfg.rsa_id, &cfg.onion_keys, rng)?;
                        (o.reply.to_vec(), HopKeys::Tor1(o.keys), false)
                    }
                    HandshakeType::NTOR_V3 => {
                        let offer = cfg.cc.as_ref().map(|p| p.sendme_inc);
                        let (mut cc, mut cgo) = (false, false);
                        let o = ntor_v3::server_handshake(
                            c2.hdata(),
                            &cfg.ed_id,
                            &cfg.onion_keys,
                            NTOR3_CIRC_VERIFICATION,
                            rng,
                            |msg| {
                                let n = negotiate(msg, offer)?;
                                (cc, cgo) = (n.cc, n.cgo);
                                Ok(n.reply)
                            },
                        )?;
                        let keys = if cgo {
                            HopKeys::Cgo(o.cgo)
                        } else {
                            HopKeys::Tor1(o.keys)
                        };
                        (o.reply, keys, cc)
                    }
                    other => return Err(CreateError::Htype(other)),
                };
                let created = Created2::new(reply)?;
                let mut v = Vec::with_capacity(CELL_BODY_LEN);
                created.encode_onto(&mut v)?;
                put(&mut out, &v);
                Ok((ChanCmd::CREATED2, out, keys, cc))
            }
            _ => Err(CreateError::Tap),
        }
    }

    /// CREATED2 from the next hop answers our CREATE2: wrap it as EXTENDED2
    /// toward the client (command_process_created_cell).
    fn handle_created(&mut self, chan: ChanId, cell: &IncomingCell, rng: &mut impl CryptoRng) {
        let Some(&(idx, Side::Next)) = self.ids.get(&(chan, cell.circ_id)) else {
            return;
        };
        let Some(c) = self.circs.get_mut(&idx) else {
            return;
        };
        let Next::Created { chan: nc, id } = c.next else {
            // A second CREATED2: protocol violation by the next hop.
            self.close_protocol(idx);
            return;
        };
        let ext = (cell.cmd == ChanCmd::CREATED2)
            .then(|| Created2::decode(&cell.body).ok())
            .flatten()
            .and_then(|c2| Extended2::from_created2(c2).ok());
        let Some(ext) = ext else {
            self.close_protocol(idx);
            return;
        };
        c.next = Next::Open { chan: nc, id };
        self.send_back(idx, StreamId::CIRCUIT, &ext, rng);
    }

    /// DESTROY from either side: close the circuit and its streams, and
    /// DESTROY the other side with reason DESTROYED, not the one received
    /// (§3.7; tor-spec §5.4).
    fn handle_destroy(&mut self, chan: ChanId, cell: &IncomingCell) {
        // A create still waiting for its handshake is simply forgotten.
        if self.onion.cancel(chan, cell.circ_id) {
            return;
        }
        let Some(&(idx, side)) = self.ids.get(&(chan, cell.circ_id)) else {
            return;
        };
        let reason = Destroy::decode(&cell.body).map(|d| d.reason()).ok();
        tracing::debug!(?chan, circ_id = %cell.circ_id, ?side, ?reason, "DESTROY received");
        // The side that sent DESTROY already forgot the circuit.
        self.ids.remove(&(chan, cell.circ_id));
        if side == Side::Next
            && let Some(c) = self.circs.get_mut(&idx)
        {
            c.next = Next::None;
        }
        let (to_prev, to_next) = match side {
            Side::Prev => (None, Some(DestroyReason::DESTROYED)),
            Side::Next => (Some(DestroyReason::DESTROYED), None),
        };
        if side == Side::Prev
            && let Some(c) = self.circs.get_mut(&idx)
        {
            // Do not answer the prev side: mark its ID as already gone.
            c.prev_id = CircId::CHANNEL;
        }
        self.close_circuit(idx, to_prev, to_next);
    }
}

/// Which of the heartbeat's handshake counters a create belongs to.
fn handshake_stat(cmd: ChanCmd, body: &[u8; CELL_BODY_LEN]) -> Option<HandshakeStat> {
    if cmd != ChanCmd::CREATE2 {
        return None;
    }
    match Create2::decode(body).ok()?.htype() {
        HandshakeType::NTOR => Some(HandshakeStat::Ntor),
        HandshakeType::NTOR_V3 => Some(HandshakeStat::NtorV3),
        _ => None,
    }
}

fn put(out: &mut [u8; CELL_BODY_LEN], data: &[u8]) {
    let n = data.len().min(CELL_BODY_LEN);
    if let (Some(dst), Some(src)) = (out.get_mut(..n), data.get(..n)) {
        dst.copy_from_slice(src);
    }
}
