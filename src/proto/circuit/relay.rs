//! RELAY / RELAY_EARLY cells: tor1 over a group of cells, then per cell
//! either our hop (dispatch), the next hop (forward) or the previous hop
//! (backward); circuit-level messages (SENDME, EXTEND2, TRUNCATE, DROP)
//! and the circuit windows (requirements.md §3.7, §4, §5.7, §8.1;
//! command.c:command_process_relay_cell, relay.c, sendme.c,
//! circuitbuild_relay.c).

use std::net::SocketAddr;
use std::time::Instant;

use rand::CryptoRng;

use super::conflux::Leftover;
use super::hop::HopCrypto;
use super::{
    CIRCWINDOW_INCREMENT, CIRCWINDOW_START, CIRCWINDOW_START_MAX, ChanId, ChanInfo, CircCounter,
    CircIdx, CircuitTable, ExtendFailure, ExtendKey, IncomingCell, Next, PeerKind, Side,
};
use crate::crypto::tor1::CellBody;
use crate::exit::dns::address::is_internal;
use crate::proto::cc::LinkState;
use crate::proto::cell::{CELL_BODY_LEN, ChanBody, ChanCmd, CircId, DestroyReason};
use crate::proto::relay_msg::{
    CircuitMsg, Extend2, Extend2Target, RelayCmd, RelayFormat, Sendme, SendmeDigest, StreamId,
    Truncated,
};

/// Why an EXTEND2 is refused beyond [`Extend2::validate`]
/// (circuitbuild_relay.c:circuit_extend_lspec_valid_helper,
/// circuit_extend_addr_port_is_valid). All close the circuit (PROTOCOL).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExtendError {
    #[error("{0}")]
    Invalid(#[from] crate::proto::relay_msg::Extend2Error),
    #[error("EXTEND2 while the circuit already has (or awaits) a next hop")]
    AlreadyExtended,
    #[error("EXTEND2 to ourselves")]
    ToSelf,
    #[error("EXTEND2 back to the previous hop")]
    ToPrevious,
    #[error("EXTEND2 to a zero port or unspecified address: {0}")]
    ZeroAddress(SocketAddr),
    #[error("EXTEND2 to a private address {0} (ExtendAllowPrivateAddresses is off)")]
    Private(SocketAddr),
}

impl CircuitTable {
    /// Decrypt and check, for every circuit at once, the cells of `seg`
    /// that came from a circuit's previous hop; `pre[i]` says what was done
    /// to `seg[i]`. Cells toward the client and cells of unknown circuits
    /// are left for [`Self::handle_relay_group`].
    pub(super) fn decrypt_ahead(
        &mut self,
        chan: ChanId,
        seg: &mut [IncomingCell],
        pre: &mut Vec<Option<(CircIdx, Option<SendmeDigest>)>>,
    ) {
        pre.clear();
        pre.resize(seg.len(), None);
        let mut order: Vec<(CircIdx, usize)> = seg
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match self.ids.get(&(chan, c.circ_id)) {
                Some(&(idx, Side::Prev)) if self.circs.contains_key(&idx) => Some((idx, i)),
                _ => None,
            })
            .collect();
        if order.is_empty() {
            return;
        }
        order.sort_unstable();
        // CGO's tweak takes the cell's channel command, so it rides along.
        let mut slots: Vec<Option<(ChanCmd, &mut CellBody)>> =
            seg.iter_mut().map(|c| Some((c.cmd, &mut c.body))).collect();
        let mut cells: Vec<&mut CellBody> = Vec::with_capacity(order.len());
        // The tor1 cells' (circuit, index in `seg`), in `cells`' order.
        let mut tor1: Vec<(CircIdx, usize)> = Vec::with_capacity(order.len());
        let mut crypto: Vec<&mut crate::crypto::tor1::Tor1RelayCrypto> = Vec::new();
        let mut groups = Vec::new();
        let mut k = 0;
        while let Some(&(idx, _)) = order.get(k) {
            let run_start = k;
            while order.get(k).is_some_and(|&(x, _)| x == idx) {
                k += 1;
            }
            let run = order.get(run_start..k).unwrap_or(&[]);
            let Some(c) = self.circs.get_mut(&idx) else {
                continue;
            };
            let c: *mut super::Circuit = c;
            // SAFETY: `order` is sorted, so each `idx` is visited once and
            // each pointer is to a different entry; `circs` is not touched
            // while these references live (they end with this call).
            match unsafe { &mut (*c).crypto } {
                HopCrypto::Tor1(t) => {
                    let start = cells.len();
                    for &(_, i) in run {
                        if let Some((_, b)) = slots.get_mut(i).and_then(Option::take) {
                            cells.push(b);
                            tor1.push((idx, i));
                        }
                    }
                    crypto.push(t);
                    groups.push(start..cells.len());
                }
                // CGO now, one cell after the other (a cell's tweak is the
                // tag of the one before); tor1 below, every circuit at once.
                HopCrypto::Cgo(g) => {
                    for &(_, i) in run {
                        let (Some((cmd, b)), Some(p)) =
                            (slots.get_mut(i).and_then(Option::take), pre.get_mut(i))
                        else {
                            continue;
                        };
                        let tag = g.decrypt_forward(cmd.get(), b);
                        *p = Some((idx, tag.map(SendmeDigest::from)));
                    }
                }
            }
        }
        // One add per batch: the MetricsPort's relay crypto volume.
        self.crypto_cells[0] = self.crypto_cells[0].wrapping_add(order.len() as u64);
        let mut rec = std::mem::take(&mut self.tag_scratch);
        rec.clear();
        rec.resize(cells.len(), None);
        crate::crypto::tor1::Tor1RelayCrypto::decrypt_forward_many(
            &mut self.fwd_batch,
            &mut crypto,
            &groups,
            &mut cells,
            &mut rec,
        );
        for (&(idx, i), r) in tor1.iter().zip(&rec) {
            if let Some(p) = pre.get_mut(i) {
                *p = Some((idx, r.map(SendmeDigest::from)));
            }
        }
        self.tag_scratch = rec;
    }

    pub(super) fn handle_relay_group(
        &mut self,
        chan: ChanId,
        group: &mut [IncomingCell],
        pre: &[Option<(CircIdx, Option<SendmeDigest>)>],
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let Some(first) = group.first() else { return };
        let Some(&(idx, side)) = self.ids.get(&(chan, first.circ_id)) else {
            // A relay cell before CREATED: "circuit in create_wait. Closing."
            // (command.c:command_process_relay_cell). Otherwise unknown: drop.
            if self.onion.cancel(chan, first.circ_id) {
                self.refuse_create(chan, first.circ_id, DestroyReason::PROTOCOL);
            }
            return;
        };
        if side == Side::Next && !self.sealer.is_empty() {
            // Cells this hop originated earlier take the keystream first.
            self.seal_pending();
        }
        let Some(c) = self.circs.get_mut(&idx) else {
            return;
        };
        match side {
            Side::Next => {
                // Backward: one more layer, then on to the previous hop.
                if group.iter().any(|g| g.cmd == ChanCmd::RELAY_EARLY) {
                    // Inbound RELAY_EARLY (command_process_relay_cell).
                    self.close_protocol(idx);
                    return;
                }
                c.crypto.relay_backward(group);
                self.crypto_cells[1] = self.crypto_cells[1].wrapping_add(group.len() as u64);
                let (pc, pid) = (c.prev_chan, c.prev_id);
                for g in group.iter() {
                    self.push_cell(Some(idx), pc, pid, ChanCmd::RELAY, g.body);
                    if !self.circs.contains_key(&idx) {
                        return;
                    }
                }
            }
            Side::Prev => {
                let format = c.crypto.format();
                let mut tags = std::mem::take(&mut self.digest_scratch);
                tags.clear();
                let ahead = pre.len() == group.len()
                    && pre.iter().all(|p| p.is_some_and(|(i, _)| i == idx));
                if ahead {
                    tags.extend(pre.iter().map(|p| p.and_then(|(_, t)| t)));
                } else {
                    c.crypto.decrypt_forward(group, &mut tags);
                    self.crypto_cells[0] = self.crypto_cells[0].wrapping_add(group.len() as u64);
                }
                for (k, (g, tag)) in group.iter().zip(tags.iter()).enumerate() {
                    let Some(c) = self.circs.get_mut(&idx) else {
                        // A LINK handed the leg to another worker: the
                        // rest of the run follows it, decrypted.
                        for (g, tag) in group.iter().zip(tags.iter()).skip(k) {
                            let cell = Leftover::Plain {
                                early: g.cmd == ChanCmd::RELAY_EARLY,
                                body: g.body,
                                tag: *tag,
                            };
                            self.keep_leftover(chan, g.circ_id, cell);
                        }
                        break;
                    };
                    // A LINK earlier in the run may have made it a leg.
                    let hop = (format, c.conflux);
                    let early = g.cmd == ChanCmd::RELAY_EARLY;
                    if early {
                        if c.early_left == 0 {
                            self.close_protocol(idx);
                            break;
                        }
                        c.early_left -= 1;
                    }
                    match tag {
                        Some(tag) => {
                            self.handle_recognized(idx, hop, &g.body, *tag, early, now, rng)
                        }
                        None => match c.next {
                            Next::Open { chan: nc, id } => {
                                self.push_cell(Some(idx), nc, id, g.cmd, g.body);
                            }
                            // Not for us and nowhere to go (§3.7; tor-spec §5.5.2.2).
                            _ => self.close_protocol(idx),
                        },
                    }
                }
                self.digest_scratch = tags;
            }
        }
    }

    // `format` (looked up once per run of cells) and whether the circuit
    // is a conflux leg are the caller's.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_recognized(
        &mut self,
        idx: CircIdx,
        (format, linked): (RelayFormat, bool),
        body: &[u8; CELL_BODY_LEN],
        tag: SendmeDigest,
        early: bool,
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let Ok((cmd, stream_id, data)) = format.parse(body) else {
            // A v1 cell with an unknown command is undecodable, as a bad
            // length is in either format (relay.c: "Received undecodable
            // relay cell").
            self.close_protocol(idx);
            return;
        };
        if linked && cmd.conflux_multiplexed() {
            self.conflux_arrived(idx, cmd, stream_id, data, tag, now, rng);
            return;
        }
        if (RelayCmd::CONFLUX_LINK.get()..=RelayCmd::CONFLUX_SWITCH.get()).contains(&cmd.get()) {
            self.conflux_cell(idx, cmd, data, now, rng);
            return;
        }
        if cmd == RelayCmd::DATA {
            // DATA counts for the circuit window even on stream 0 or an
            // unknown stream (relay.c handle_relay_cell_command).
            if !self.circuit_data_received(idx, tag, rng) {
                return;
            }
            if !stream_id.is_circuit() {
                self.stream_data(idx, stream_id, data, now, rng);
            }
            return;
        }
        if !stream_id.is_circuit() {
            self.stream_cell(idx, cmd, stream_id, data, now, rng);
            return;
        }
        if cmd.needs_stream() {
            return; // "Relay command %u with zero stream_id. Dropping."
        }
        match CircuitMsg::decode(cmd, data) {
            Err(e) => {
                tracing::debug!("bad circuit-level relay message: {e}");
                self.close_protocol(idx);
            }
            Ok(Some(CircuitMsg::Drop(_))) => self.count(CircCounter::DropReceived),
            Ok(None) => {
                if let Some(what) = CircCounter::onion_service(cmd) {
                    self.count(what);
                }
            }
            Ok(Some(CircuitMsg::Sendme(s))) => self.circuit_sendme(idx, &s, now),
            Ok(Some(CircuitMsg::Extend(_))) => self.close_protocol(idx),
            Ok(Some(CircuitMsg::Extend2(e))) => {
                if !early && !self.cfg.allow_nonearly_extend {
                    return; // dropped (§4.4)
                }
                if let Err(err) = self.extend(idx, e) {
                    tracing::debug!("refusing EXTEND2: {err}");
                    self.close_protocol(idx);
                }
            }
            Ok(Some(CircuitMsg::Truncate(t))) => {
                if let Some(c) = self.circs.get_mut(&idx) {
                    let next = std::mem::replace(&mut c.next, Next::None);
                    match next {
                        Next::Pending { key, .. } => {
                            self.extends.remove(&key);
                        }
                        Next::Created { chan, id } | Next::Open { chan, id } => {
                            self.ids.remove(&(chan, id));
                            self.send_destroy(chan, id, t.reason());
                        }
                        Next::None => {}
                    }
                }
                let msg = Truncated::new(DestroyReason::REQUESTED);
                self.send_back(idx, StreamId::CIRCUIT, &msg, rng);
            }
        }
    }

    /// A DATA cell for our hop: deliver window, SENDME emission. Returns
    /// false if the circuit was closed.
    pub(super) fn circuit_data_received(
        &mut self,
        idx: CircIdx,
        tag: SendmeDigest,
        rng: &mut impl CryptoRng,
    ) -> bool {
        let Some(c) = self.circs.get_mut(&idx) else {
            return false;
        };
        c.windows.deliver -= 1;
        c.windows.last_data_tag = tag;
        if c.windows.deliver < 0 {
            self.close_protocol(idx);
            return false;
        }
        // sendme.c:sendme_circuit_consider_sending, emitting v1: every
        // 100 DATA cells, or every sendme_inc with congestion control.
        while let Some(c) = self.circs.get_mut(&idx)
            && c.windows.deliver <= CIRCWINDOW_START - c.windows.deliver_increment()
        {
            c.windows.deliver += c.windows.deliver_increment();
            let msg = if self.cfg.sendme_emit_min_version == 1 {
                Sendme::V1 {
                    tag: c.windows.last_data_tag,
                }
            } else {
                Sendme::V0
            };
            self.send_back(idx, StreamId::CIRCUIT, &msg, rng);
        }
        self.circs.contains_key(&idx)
    }

    /// A circuit SENDME (sendme.c:sendme_process_circuit_level,
    /// sendme_is_valid).
    fn circuit_sendme(&mut self, idx: CircIdx, s: &Sendme, now: Instant) {
        let now_usec = self.usec(now);
        let Some(c) = self.circs.get_mut(&idx) else {
            return;
        };
        let expected = c.windows.expected_tags.pop_front();
        let valid = match (expected, s) {
            (None, _) => false,
            (Some(_), Sendme::V0) => self.cfg.sendme_accept_min_version == 0,
            // A tag of the other algorithm's length never matches
            // (sendme.c:cell_v1_is_valid).
            (Some(exp), Sendme::V1 { tag }) if self.cfg.sendme_accept_min_version <= 1 => {
                bool::from(subtle::ConstantTimeEq::ct_eq(
                    exp.as_bytes(),
                    tag.as_bytes(),
                ))
            }
            (Some(_), Sendme::V1 { .. } | Sendme::Unknown { .. }) => false,
        };
        if !valid {
            self.close_protocol(idx);
            return;
        }
        if let Some(v) = c.windows.cc.as_mut() {
            // The link's state feeds the BDP estimate: a circuit stopped by
            // its full link is "blocked on the channel".
            let link = LinkState {
                blocked: self
                    .chan_room
                    .get(&c.prev_chan)
                    .is_some_and(|r| r.room <= 0),
                queued_cells: c.queued as u64,
            };
            v.on_sendme(now_usec, link, &mut self.cc_clock, &mut self.cc_stats);
            if c.conflux {
                // conflux.c:conflux_update_rtt, from the leg's EWMA.
                self.conflux.note_rtt(idx, v.ewma_rtt_usec());
            }
        } else {
            c.windows.package += CIRCWINDOW_INCREMENT;
            if c.windows.package > CIRCWINDOW_START_MAX {
                self.close_protocol(idx);
                return;
            }
        }
        self.resume_streams(idx);
    }

    /// Account for one DATA cell we are about to package: the window must
    /// be open; every 100th cell's tag will be required back
    /// (sendme.c:circuit_sendme_cell_is_next on the package window).
    fn extend(&mut self, idx: CircIdx, e: Extend2) -> Result<(), ExtendError> {
        let target = e.validate()?;
        let c = self.circs.get(&idx).ok_or(ExtendError::AlreadyExtended)?;
        if !matches!(c.next, Next::None) {
            return Err(ExtendError::AlreadyExtended);
        }
        let cfg = &self.cfg;
        if target.rsa_id == cfg.rsa_id || target.ed25519_id == Some(cfg.ed_id) {
            return Err(ExtendError::ToSelf);
        }
        if let Some(ChanInfo {
            peer: Some(PeerKind::Relay { rsa_id, ed_id }),
            ..
        }) = self.chans.get(&c.prev_chan)
            && (*rsa_id == target.rsa_id || target.ed25519_id == Some(*ed_id))
        {
            return Err(ExtendError::ToPrevious);
        }
        for addr in target_addrs(&target) {
            if addr.port() == 0 || addr.ip().is_unspecified() {
                return Err(ExtendError::ZeroAddress(addr));
            }
            if !cfg.extend_allow_private && is_internal(addr.ip()) {
                return Err(ExtendError::Private(addr));
            }
            if cfg.own_addrs.contains(&addr) {
                return Err(ExtendError::ToSelf);
            }
        }
        let create = crate::proto::cell::Create2::new(e.htype(), e.hdata().to_vec())
            .map_err(|_| crate::proto::relay_msg::Extend2Error::NoAddress)?;
        let key = ExtendKey(self.alloc_key());
        if let Some(c) = self.circs.get_mut(&idx) {
            c.next = Next::Pending { key, create };
        }
        self.extends.insert(key, idx);
        self.push_action(super::Action::OpenChannel { key, target });
        Ok(())
    }

    /// The worker has a channel to the EXTEND2 target, or gave up.
    pub fn handle_extend_channel(
        &mut self,
        key: ExtendKey,
        res: Result<ChanId, ExtendFailure>,
        rng: &mut impl CryptoRng,
    ) {
        let Some(idx) = self.extends.remove(&key) else {
            return;
        };
        let chan = match res {
            Ok(chan) => chan,
            Err(f) => {
                tracing::debug!("extend failed: {f}");
                if let Some(c) = self.circs.get_mut(&idx) {
                    c.next = Next::None;
                }
                self.close_circuit(idx, Some(f.destroy_reason()), None);
                return;
            }
        };
        let initiator = self
            .chans
            .entry(chan)
            .or_insert(ChanInfo {
                peer: None,
                addr: None,
                initiator: true,
            })
            .initiator;
        let Some(id) = self.pick_circ_id(chan, initiator, rng) else {
            self.close_circuit(idx, Some(DestroyReason::RESOURCELIMIT), None);
            return;
        };
        let Some(c) = self.circs.get_mut(&idx) else {
            return;
        };
        let Next::Pending { create, .. } =
            std::mem::replace(&mut c.next, Next::Created { chan, id })
        else {
            return;
        };
        let mut v = Vec::with_capacity(CELL_BODY_LEN);
        let mut body = [0u8; CELL_BODY_LEN];
        if create.encode_onto(&mut v).is_err() || v.len() > CELL_BODY_LEN {
            self.close_protocol(idx);
            return;
        }
        if let Some(dst) = body.get_mut(..v.len()) {
            dst.copy_from_slice(&v);
        }
        self.ids.insert((chan, id), (idx, Side::Next));
        self.push_cell(Some(idx), chan, id, ChanCmd::CREATE2, body);
    }

    /// A random unused circuit ID on `chan`: high bit set on channels we
    /// opened, clear on channels we accepted (channel.c:get_unique_circ_id_by_chan).
    pub(super) fn pick_circ_id(
        &self,
        chan: ChanId,
        initiator: bool,
        rng: &mut impl CryptoRng,
    ) -> Option<CircId> {
        for _ in 0..64 {
            let raw = rng.next_u32();
            let v = if initiator {
                raw | 0x8000_0000
            } else {
                raw & 0x7fff_ffff
            };
            let id = CircId::new(v);
            if v != 0 && !self.ids.contains_key(&(chan, id)) && !self.reserved.contains(&(chan, id))
            {
                return Some(id);
            }
        }
        None
    }
}

fn target_addrs(t: &Extend2Target) -> impl Iterator<Item = SocketAddr> {
    let v4 = t.ipv4.map(SocketAddr::V4);
    let v6 = t.ipv6.map(SocketAddr::V6);
    v4.into_iter().chain(v6)
}
