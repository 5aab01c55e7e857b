//! How many relay cells of each circuit wait in one link's output: the
//! per-circuit queue that C tor caps at `circ_max_cell_queue_size` and
//! kills circuits over (relay.c:append_cell_to_circuit_queue;
//! requirements.md §8.1).
//!
//! oxit has no per-circuit queues: cells go straight into the link's
//! output, which drains in order. So the queue of a circuit is its share
//! of what the link has not yet handed to the kernel. The worker tells
//! this tracker each relay cell it writes ([`CircQueue::push`]) and, once
//! per turn before the first write, how many cells' worth of bytes are
//! still waiting ([`CircQueue::sync`]); the oldest cells are the ones that
//! left. Bookkeeping is per run of consecutive cells of one circuit (the
//! common case when a batch of one circuit is relayed), so a cell costs a
//! compare and an add, with one map update per run.
//!
//! The estimate errs high, never low: TLS record overhead and link-level
//! cells make the bytes waiting stand for more cells than they hold, and
//! those extra cells are the newest counted ones, which at worst are still
//! in the kernel. A circuit under a full flow-control window (1000 cells)
//! stays far from the cap.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::proto::cell::CircId;

/// A relay cell on the wire with 4-byte circuit IDs (link protocol ≥ 4).
pub const WIRE_CELL_LEN: usize = 514;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct CircQueue {
    /// Older runs, oldest first: (circuit, cells, when the run started).
    runs: VecDeque<(CircId, u32, Option<Instant>)>,
    /// Cells per circuit in `runs` (not counting `open`).
    counted: HashMap<CircId, u32>,
    /// The run being appended to: circuit, its cells, and what `counted`
    /// held for the circuit when it started.
    open: Option<(CircId, u32, u32)>,
    /// Cells in `runs` plus `open`.
    total: usize,
    /// When `open` started, and the time given to [`CircQueue::stamp`]
    /// for runs started from now on (the turn's time, not a clock read
    /// per cell).
    open_at: Option<Instant>,
    now: Option<Instant>,
}

// The counts below are bounded: a circuit's by `cap`, the total by the
// cells the link holds, and every subtraction takes at most what was
// counted. The saturating operations are there so that a slip shows as a
// wrong count, not a panic in the worker.
impl CircQueue {
    /// A relay cell of `id` is about to be written to the link: count it
    /// and return how many cells of `id` then wait there, or `None` (and
    /// count nothing) if that would be more than `cap`: the cell must not
    /// be written and the circuit must go.
    pub fn push(&mut self, id: CircId, cap: u32) -> Option<u32> {
        if let Some((oid, n, base)) = &mut self.open
            && *oid == id
        {
            if base.saturating_add(*n) >= cap {
                return None;
            }
            *n = n.saturating_add(1);
            self.total = self.total.saturating_add(1);
            return Some(base.saturating_add(*n));
        }
        let base = self.counted.get(&id).copied().unwrap_or(0);
        if base >= cap {
            return None;
        }
        self.close_run();
        self.open = Some((id, 1, base));
        self.open_at = self.now;
        self.total = self.total.saturating_add(1);
        Some(base.saturating_add(1))
    }

    /// The circuit behind `id` is gone: its cells still wait on the link
    /// (they are encrypted into the stream) but count for nobody, so a new
    /// circuit that gets the same ID starts from zero.
    pub fn forget(&mut self, id: CircId) {
        self.close_run();
        if self.counted.remove(&id).is_some() {
            for (rid, _, _) in self.runs.iter_mut() {
                if *rid == id {
                    *rid = CircId::CHANNEL;
                }
            }
        }
    }

    /// Circuits with more than `n` cells waiting, largest first.
    pub fn heavier_than(&self, n: u32) -> Vec<CircId> {
        let mut v: Vec<(u32, CircId)> = self.counted.iter().map(|(id, c)| (*c, *id)).collect();
        if let Some((id, k, base)) = self.open {
            match v.iter_mut().find(|(_, i)| *i == id) {
                Some(e) => e.0 = base.saturating_add(k),
                None => v.push((base.saturating_add(k), id)),
            }
        }
        v.retain(|(c, id)| *c > n && *id != CircId::CHANNEL);
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.into_iter().map(|(_, id)| id).collect()
    }

    fn close_run(&mut self) {
        if let Some((id, n, _)) = self.open.take() {
            let c = self.counted.entry(id).or_insert(0);
            *c = c.saturating_add(n);
            self.runs.push_back((id, n, self.open_at));
        }
    }

    /// Only `waiting` cells (the newest) are still queued on the link.
    pub fn sync(&mut self, waiting: usize) {
        if waiting >= self.total {
            return;
        }
        self.close_run();
        let mut gone = self.total.saturating_sub(waiting);
        while gone > 0 {
            let Some((id, n, _)) = self.runs.front_mut() else {
                break;
            };
            let k = (*n as usize).min(gone) as u32;
            *n = n.saturating_sub(k);
            gone = gone.saturating_sub(k as usize);
            self.total = self.total.saturating_sub(k as usize);
            let id = *id;
            if *n == 0 {
                self.runs.pop_front();
            }
            if id != CircId::CHANNEL
                && let Some(c) = self.counted.get_mut(&id)
            {
                *c = c.saturating_sub(k);
                if *c == 0 {
                    self.counted.remove(&id);
                }
            }
        }
    }

    /// The time of the current turn: cells pushed from now on were queued
    /// then (for the OOM handler's "oldest queued data first").
    pub fn stamp(&mut self, now: Instant) {
        self.now = Some(now);
    }

    /// Each circuit with cells waiting, with when its oldest waiting cell
    /// was queued and how many wait; oldest first. One pass over the runs:
    /// for the OOM handler, not for every turn.
    pub fn oldest_cells(&self) -> Vec<(CircId, Option<Instant>, u32)> {
        let mut seen = std::collections::HashSet::new();
        let mut v = Vec::new();
        let open = self.open.map(|(id, n, _)| (id, n, self.open_at));
        for &(id, _, at) in self.runs.iter().chain(open.iter()) {
            if id != CircId::CHANNEL && seen.insert(id) {
                v.push((id, at, self.of(id)));
            }
        }
        v
    }

    /// Cells waiting on the link, all circuits together.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Cells of `id` waiting on the link.
    pub fn of(&self, id: CircId) -> u32 {
        let open = match self.open {
            Some((oid, n, _)) if oid == id => n,
            _ => 0,
        };
        self.counted
            .get(&id)
            .copied()
            .unwrap_or(0)
            .saturating_add(open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: CircId = CircId::new(0x8000_0001);
    const B: CircId = CircId::new(0x8000_0002);

    impl CircQueue {
        fn put(&mut self, id: CircId) -> u32 {
            self.push(id, u32::MAX).expect("no cap")
        }
    }

    #[test]
    fn counts_per_circuit_and_drains_oldest_first() {
        let mut q = CircQueue::default();
        for i in 1..=3 {
            assert_eq!(q.put(A), i);
        }
        assert_eq!(q.put(B), 1);
        assert_eq!(q.put(A), 4);
        assert_eq!((q.of(A), q.of(B), q.total()), (4, 1, 5));
        // Two cells left: both were A's oldest.
        q.sync(3);
        assert_eq!((q.of(A), q.of(B), q.total()), (2, 1, 3));
        // Two more: A's third, then B's.
        q.sync(1);
        assert_eq!((q.of(A), q.of(B), q.total()), (1, 0, 1));
        assert_eq!(q.put(A), 2);
        q.sync(0);
        assert_eq!((q.of(A), q.of(B), q.total()), (0, 0, 0));
        assert!(q.counted.is_empty() && q.runs.is_empty());
    }

    #[test]
    fn more_waiting_than_counted_changes_nothing() {
        // Link-level cells (padding, handshake) are not counted, so the
        // bytes waiting may stand for more cells than were pushed.
        let mut q = CircQueue::default();
        q.put(A);
        q.sync(10);
        assert_eq!(q.of(A), 1);
    }

    #[test]
    fn a_flooding_circuit_is_seen_as_the_link_stalls() {
        let mut q = CircQueue::default();
        let mut last = 0;
        for _ in 0..100 {
            for _ in 0..30 {
                last = q.put(A);
            }
            q.put(B);
            // The link takes one cell per round.
            q.sync(q.total() - 1);
        }
        // 99 cells left, oldest first: three rounds of 31, then six of A's.
        assert_eq!(last, 3000 - 96);
        assert_eq!(q.of(B), 100 - 3);
        assert_eq!(q.of(A) as usize + q.of(B) as usize, q.total());
    }

    #[test]
    fn the_cap_refuses_the_cell_that_would_pass_it() {
        let mut q = CircQueue::default();
        for i in 1..=3 {
            assert_eq!(q.push(A, 3), Some(i));
        }
        assert_eq!(q.push(A, 3), None, "a fourth cell of A would pass the cap");
        assert_eq!(q.push(B, 3), Some(1));
        // A new run of A starts from A's count.
        assert_eq!(q.push(A, 3), None);
        assert_eq!((q.of(A), q.total()), (3, 4));
        q.sync(1);
        assert_eq!(q.push(A, 3), Some(1));
    }

    #[test]
    fn forgotten_circuits_count_for_nobody() {
        let mut q = CircQueue::default();
        for _ in 0..5 {
            q.put(A);
        }
        q.put(B);
        q.put(A);
        assert_eq!(q.heavier_than(1), vec![A]);
        assert_eq!(q.heavier_than(0), vec![A, B]);
        q.forget(A);
        assert_eq!((q.of(A), q.of(B), q.total()), (0, 1, 7));
        assert_eq!(q.heavier_than(0), vec![B]);
        // A new circuit with A's ID starts from zero; the old cells still
        // drain first.
        assert_eq!(q.put(A), 1);
        q.sync(2);
        assert_eq!((q.of(A), q.of(B), q.total()), (1, 0, 2));
        q.sync(0);
        assert_eq!((q.of(A), q.total()), (0, 0));
    }
}
