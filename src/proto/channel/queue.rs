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

use std::collections::{HashMap, VecDeque};

use crate::proto::cell::CircId;

/// A relay cell on the wire with 4-byte circuit IDs (link protocol ≥ 4).
pub const WIRE_CELL_LEN: usize = 514;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct CircQueue {
    /// Older runs, oldest first: (circuit, cells).
    runs: VecDeque<(CircId, u32)>,
    /// Cells per circuit in `runs` (not counting `open`).
    counted: HashMap<CircId, u32>,
    /// The run being appended to: circuit, its cells, and what `counted`
    /// held for the circuit when it started.
    open: Option<(CircId, u32, u32)>,
    /// Cells in `runs` plus `open`.
    total: usize,
}

impl CircQueue {
    /// A relay cell of `id` was written to the link; returns how many cells
    /// of `id` now wait there.
    pub fn push(&mut self, id: CircId) -> u32 {
        self.total += 1;
        if let Some((oid, n, base)) = &mut self.open
            && *oid == id
        {
            *n += 1;
            return *base + *n;
        }
        self.close_run();
        let base = self.counted.get(&id).copied().unwrap_or(0);
        self.open = Some((id, 1, base));
        base + 1
    }

    fn close_run(&mut self) {
        if let Some((id, n, _)) = self.open.take() {
            *self.counted.entry(id).or_insert(0) += n;
            self.runs.push_back((id, n));
        }
    }

    /// Only `waiting` cells (the newest) are still queued on the link.
    pub fn sync(&mut self, waiting: usize) {
        if waiting >= self.total {
            return;
        }
        self.close_run();
        let mut gone = self.total - waiting;
        while gone > 0 {
            let Some((id, n)) = self.runs.front_mut() else {
                break;
            };
            let k = (*n as usize).min(gone) as u32;
            *n -= k;
            gone -= k as usize;
            self.total -= k as usize;
            let id = *id;
            if *n == 0 {
                self.runs.pop_front();
            }
            if let Some(c) = self.counted.get_mut(&id) {
                *c = c.saturating_sub(k);
                if *c == 0 {
                    self.counted.remove(&id);
                }
            }
        }
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
        self.counted.get(&id).copied().unwrap_or(0) + open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: CircId = CircId::new(0x8000_0001);
    const B: CircId = CircId::new(0x8000_0002);

    #[test]
    fn counts_per_circuit_and_drains_oldest_first() {
        let mut q = CircQueue::default();
        for i in 1..=3 {
            assert_eq!(q.push(A), i);
        }
        assert_eq!(q.push(B), 1);
        assert_eq!(q.push(A), 4);
        assert_eq!((q.of(A), q.of(B), q.total()), (4, 1, 5));
        // Two cells left: both were A's oldest.
        q.sync(3);
        assert_eq!((q.of(A), q.of(B), q.total()), (2, 1, 3));
        // Two more: A's third, then B's.
        q.sync(1);
        assert_eq!((q.of(A), q.of(B), q.total()), (1, 0, 1));
        assert_eq!(q.push(A), 2);
        q.sync(0);
        assert_eq!((q.of(A), q.of(B), q.total()), (0, 0, 0));
        assert!(q.counted.is_empty() && q.runs.is_empty());
    }

    #[test]
    fn more_waiting_than_counted_changes_nothing() {
        // Link-level cells (padding, handshake) are not counted, so the
        // bytes waiting may stand for more cells than were pushed.
        let mut q = CircQueue::default();
        q.push(A);
        q.sync(10);
        assert_eq!(q.of(A), 1);
    }

    #[test]
    fn a_flooding_circuit_is_seen_as_the_link_stalls() {
        let mut q = CircQueue::default();
        let mut last = 0;
        for _ in 0..100 {
            for _ in 0..30 {
                last = q.push(A);
            }
            q.push(B);
            // The link takes one cell per round.
            q.sync(q.total() - 1);
        }
        // 99 cells left, oldest first: three rounds of 31, then six of A's.
        assert_eq!(last, 3000 - 96);
        assert_eq!(q.of(B), 100 - 3);
        assert_eq!(q.of(A) as usize + q.of(B) as usize, q.total());
    }
}
