//! Cells this hop originates toward the client are queued as plaintext and
//! sealed (digest + AES) together just before the worker takes them: one
//! call over every circuit with cells waiting, so that SHA-1, which is a
//! chain within a circuit, runs several circuits side by side
//! (`Tor1RelayCrypto::originate_backward_many`).
//!
//! The order of a circuit's backward crypto must be the order of its cells
//! on the wire. So every cell this hop originates goes through here, and
//! anything that uses a circuit's backward keystream at once (a middle
//! adding its layer, closing the circuit) seals what waits first. Nothing
//! unsealed ever leaves: [`CircuitTable::poll_action`] seals before it
//! hands out the first plaintext cell.

use std::ops::Range;

use super::hop::HopCrypto;
use super::{Action, CIRCWINDOW_INCREMENT, CIRCWINDOW_START, CircIdx, CircuitTable};
use crate::crypto::tor1::{CellBody, SendmeTag, Tor1Batch, Tor1RelayCrypto};
use crate::proto::relay_msg::SendmeDigest;

/// A plaintext cell in the action queue.
#[derive(Clone, Copy)]
pub(crate) struct Unsealed {
    /// Its place in the queue: [`Sealer::popped`] counts what left.
    seq: u64,
    idx: CircIdx,
    /// A DATA cell whose tag a v1 SENDME will have to echo.
    keep_tag: bool,
}

/// Cells queued before a seal is due anyway. Enough to fill the SHA-NI
/// lanes with several circuits; few enough that the cells are still in
/// cache when sealed (a turn with 5,000 busy circuits queued ~5,000 cells,
/// 2.5 MB, and sealing them at once cost more than it saved).
pub(crate) const SEAL_BATCH: usize = 256;

/// What [`CircuitTable`] keeps for sealing.
#[derive(Default)]
pub(crate) struct Sealer {
    unsealed: Vec<Unsealed>,
    /// Actions taken from the front of the queue so far.
    pub(crate) popped: u64,
    batch: Tor1Batch,
    /// (circuit, index into `unsealed`), sorted per seal.
    order: Vec<(CircIdx, usize)>,
    groups: Vec<Range<usize>>,
    /// Per sealed cell, its index in `unsealed`.
    kept: Vec<usize>,
    tags: Vec<SendmeTag>,
}

impl Sealer {
    pub(crate) fn is_empty(&self) -> bool {
        self.unsealed.is_empty()
    }

    /// Whether enough cells wait to seal them now.
    pub(crate) fn is_full(&self) -> bool {
        self.unsealed.len() >= SEAL_BATCH
    }

    /// Whether the oldest plaintext cell is at queue place `seq`.
    pub(crate) fn next_is(&self, seq: u64) -> bool {
        self.unsealed.first().is_some_and(|u| u.seq == seq)
    }

    /// The cell about to be pushed at queue place `seq` is circuit `idx`'s
    /// plaintext.
    pub(crate) fn note_unsealed(&mut self, seq: u64, idx: CircIdx, keep_tag: bool) {
        self.unsealed.push(Unsealed { seq, idx, keep_tag });
    }
}

/// Whether a DATA cell packaged at package window `w` (before it is
/// counted) is one whose digest the client's next SENDME carries
/// (sendme.c:sendme_record_cell_digest_on_circ).
pub(crate) fn keeps_tag(w: i32) -> bool {
    w != CIRCWINDOW_START && (w - 1) % CIRCWINDOW_INCREMENT == 0
}

impl CircuitTable {
    /// Queue plaintext relay cell `body` that circuit `idx` originates
    /// toward its previous hop; it is sealed before the worker takes it.
    /// A circuit whose queue is full is closed instead
    /// ([`CircuitTable::push_cell`]). `None` if the cell was not queued.
    pub(crate) fn push_originated(&mut self, idx: CircIdx, body: CellBody) -> Option<()> {
        let c = self.circs.get(&idx)?;
        let (chan, circ_id) = (c.prev_chan, c.prev_id);
        let seq = self.sealer.popped + self.actions.len() as u64;
        self.push_cell(
            Some(idx),
            chan,
            circ_id,
            crate::proto::cell::ChanCmd::RELAY,
            body,
        );
        // push_cell closes a circuit whose queue is full instead.
        if !self.circs.contains_key(&idx) {
            return None;
        }
        self.sealer.note_unsealed(seq, idx, false);
        if self.sealer.is_full() {
            self.seal_pending();
        }
        Some(())
    }

    /// Seal every queued plaintext cell, all circuits in one batch.
    pub(crate) fn seal_pending(&mut self) {
        if self.sealer.unsealed.is_empty() {
            return;
        }
        self.crypto_cells[1] = self.crypto_cells[1].wrapping_add(self.sealer.unsealed.len() as u64);
        let CircuitTable {
            sealer,
            actions,
            circs,
            ..
        } = self;
        let Sealer {
            unsealed,
            popped,
            batch,
            order,
            groups,
            kept,
            tags,
        } = sealer;

        // The cells, in queue order: `unsealed` was pushed in that order.
        let mut slots: Vec<Option<&mut CellBody>> = Vec::with_capacity(unsealed.len());
        // Scanning from the first of them: the queue can hold thousands of
        // actions already sealed, and a turn can seal many times.
        let mut want = unsealed
            .iter()
            .map(|u| u.seq.wrapping_sub(*popped))
            .peekable();
        let first = want
            .peek()
            .and_then(|&p| usize::try_from(p).ok())
            .unwrap_or(0)
            .min(actions.len());
        for (pos, (a, _)) in (first..).zip(actions.range_mut(first..)) {
            let pos = pos as u64;
            let Some(&next) = want.peek() else { break };
            if pos != next {
                continue;
            }
            want.next();
            slots.push(match a {
                Action::SendCell { body, .. } => Some(body),
                _ => None,
            });
        }

        // Grouped by circuit, each circuit's cells in order.
        order.clear();
        order.extend(unsealed.iter().enumerate().map(|(i, u)| (u.idx, i)));
        order.sort_unstable();
        groups.clear();
        kept.clear();
        let mut cells: Vec<&mut CellBody> = Vec::with_capacity(order.len());
        let mut crypto: Vec<&mut Tor1RelayCrypto> = Vec::new();
        let mut circ_ids: Vec<CircIdx> = Vec::new();
        let mut i = 0;
        while let Some(&(idx, _)) = order.get(i) {
            let start = cells.len();
            let mut end = i;
            while order.get(end).is_some_and(|&(x, _)| x == idx) {
                end += 1;
            }
            let run = order.get(i..end).unwrap_or(&[]);
            i = end;
            let Some(c) = circs.get_mut(&idx) else {
                // Closing seals first, so this is a bug; still, never let
                // a plaintext cell out.
                debug_assert!(false, "unsealed cells of a closed circuit");
                crate::bug::reached("unsealed cells of a closed circuit");
                for &(_, k) in run {
                    if let Some(Some(b)) = slots.get_mut(k) {
                        b.fill(0);
                    }
                }
                continue;
            };
            let c: *mut super::Circuit = c;
            // SAFETY: `idx` differs from every earlier group's (`order` is
            // sorted and each group takes all entries of its circuit), so
            // each pointer is to a different entry, and `circs` is not
            // touched again while these references live (they end with
            // this function, before the loop below uses `circs`).
            let c = unsafe { &mut *c };
            let t = match &mut c.crypto {
                HopCrypto::Tor1(t) => t,
                HopCrypto::Cgo(g) => {
                    // CGO seals here, one cell after the other: each
                    // cell's tweak is the tag of the one before.
                    for &(_, k) in run {
                        if let Some(b) = slots.get_mut(k).and_then(Option::take) {
                            let tag = g.originate_backward(b);
                            if unsealed.get(k).is_some_and(|u| u.keep_tag) {
                                c.windows.expected_tags.push_back(tag.into());
                            }
                        }
                    }
                    continue;
                }
            };
            crypto.push(t);
            circ_ids.push(idx);
            for &(_, k) in run {
                if let Some(b) = slots.get_mut(k).and_then(Option::take) {
                    cells.push(b);
                    kept.push(k);
                }
            }
            groups.push(start..cells.len());
        }
        tags.clear();
        tags.resize(cells.len(), SendmeTag::default());
        Tor1RelayCrypto::originate_backward_many(batch, &mut crypto, groups, &mut cells, tags);
        drop(crypto);
        drop(cells);

        // The tags v1 SENDMEs will echo, in each circuit's order.
        for (g, idx) in groups.iter().zip(&circ_ids) {
            let Some(c) = circs.get_mut(idx) else {
                continue;
            };
            let run = kept.get(g.clone()).unwrap_or(&[]);
            for (&k, t) in run.iter().zip(tags.get(g.clone()).unwrap_or(&[])) {
                if unsealed.get(k).is_some_and(|u| u.keep_tag) {
                    c.windows.expected_tags.push_back(SendmeDigest::from(*t));
                }
            }
        }
        unsealed.clear();
    }
}
