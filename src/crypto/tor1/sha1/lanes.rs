//! Many SHA-1 compressions at once: a list of chains, each a start state and
//! runs of blocks to absorb one after the other, with the state saved after
//! every run. Chains are independent, so up to four run side by side on
//! SHA-NI (`x86.rs`); without it they run one after the other on the `sha1`
//! crate's compression function. The caller lays its blocks out in `arena`
//! and says which runs make a chain; this module only schedules.

use core::ops::Range;

/// How many chains run side by side: the gain from a fifth lane was nil
/// where it was measured (`x86.rs`).
#[cfg(target_arch = "x86_64")]
const WIDTH: usize = 4;

/// Blocks `arena[start..start + len]`; the state after them goes to
/// `out[save]`.
#[derive(Clone, Copy)]
struct Run {
    start: usize,
    len: usize,
    save: usize,
}

struct Chain {
    h: [u32; 5],
    runs: Range<usize>,
}

/// Reusable scratch: cleared, not freed, between uses.
#[derive(Default)]
pub(crate) struct Lanes {
    /// The blocks every run reads, as bytes: filled by appending, with no
    /// zeroing first (see [`Lanes::push`]).
    arena: Vec<u8>,
    runs: Vec<Run>,
    chains: Vec<Chain>,
    /// The saved states, in the order [`Lanes::run`] handed out their slots.
    pub(crate) out: Vec<[u32; 5]>,
}

impl Lanes {
    pub(crate) fn clear(&mut self) {
        self.arena.clear();
        self.runs.clear();
        self.chains.clear();
        self.out.clear();
    }

    /// Blocks in the arena so far (a partial last block not counted).
    pub(crate) fn blocks(&self) -> usize {
        self.arena.len() / 64
    }

    /// Append bytes to the arena.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.arena.extend_from_slice(bytes);
    }

    /// Zero-fill the arena to a whole number of blocks.
    pub(crate) fn pad_block(&mut self) {
        self.arena.resize(self.arena.len().next_multiple_of(64), 0);
    }

    /// Block `i` of the arena.
    pub(crate) fn block(&self, i: usize) -> Option<&[u8; 64]> {
        self.arena.as_chunks::<64>().0.get(i)
    }

    /// Start a chain from state `h`; the runs added next belong to it.
    pub(crate) fn chain(&mut self, h: [u32; 5]) {
        let at = self.runs.len();
        self.chains.push(Chain { h, runs: at..at });
    }

    /// Append a run of `len` blocks from `arena[start..]` to the last chain;
    /// returns the slot of `out` that will hold the state after it.
    pub(crate) fn run(&mut self, start: usize, len: usize) -> usize {
        let save = self.out.len();
        self.out.push([0; 5]);
        self.runs.push(Run { start, len, save });
        if let Some(c) = self.chains.last_mut() {
            c.runs.end = self.runs.len();
        }
        save
    }

    /// Compress every chain, filling `out`.
    pub(crate) fn execute(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if super::x86::available() {
            if self.chains.iter().all(|c| c.runs.len() == 1) {
                self.execute_singles();
            } else {
                self.execute_lanes();
            }
            return;
        }
        self.execute_serial();
    }

    fn execute_serial(&mut self) {
        for c in &self.chains {
            let mut h = c.h;
            for r in self.runs.get(c.runs.clone()).unwrap_or(&[]) {
                ::sha1::block_api::compress(&mut h, blocks(&self.arena, r.start, r.len));
                if let Some(o) = self.out.get_mut(r.save) {
                    *o = h;
                }
            }
        }
    }

    /// Chains of one short run each (every cell's padding): four at a
    /// time, without the general scheduler's bookkeeping per step, which
    /// cost as much as the block or two each of these has.
    #[cfg(target_arch = "x86_64")]
    fn execute_singles(&mut self) {
        for four in self.chains.chunks(WIDTH) {
            let mut run = [Run {
                start: 0,
                len: 0,
                save: usize::MAX,
            }; WIDTH];
            let mut states = [[0u32; 5]; WIDTH];
            for ((r, st), c) in run.iter_mut().zip(&mut states).zip(four) {
                if let Some(x) = self.runs.get(c.runs.start) {
                    *r = *x;
                }
                *st = c.h;
            }
            let mut done = 0;
            loop {
                // The lanes with blocks left, packed to the front.
                let mut active = [0usize; WIDTH];
                let mut n = 0;
                let mut step = usize::MAX;
                for (j, r) in run.iter().enumerate().take(four.len()) {
                    if r.len > done {
                        active[n] = j;
                        n += 1;
                        step = step.min(r.len - done);
                    }
                }
                if n == 0 {
                    break;
                }
                let mut lane_states = [[0u32; 5]; WIDTH];
                let mut from: [&[[u8; 64]]; WIDTH] = [&[]; WIDTH];
                for (k, &j) in active.iter().take(n).enumerate() {
                    lane_states[k] = states[j];
                    from[k] = blocks(&self.arena, run[j].start + done, step);
                }
                // SAFETY: `execute` checked `x86::available()`.
                unsafe { lanes_of_n(n, &mut lane_states, &from, step) };
                for (k, &j) in active.iter().take(n).enumerate() {
                    states[j] = lane_states[k];
                }
                done += step;
            }
            for (r, st) in run.iter().zip(states).take(four.len()) {
                if let Some(o) = self.out.get_mut(r.save) {
                    *o = st;
                }
            }
        }
    }

    /// Up to [`WIDTH`] chains in flight; each step compresses as many blocks
    /// as every lane's current run still has, then retires finished runs
    /// and refills lanes whose chain ended.
    #[cfg(target_arch = "x86_64")]
    fn execute_lanes(&mut self) {
        #[derive(Clone, Copy)]
        struct Lane {
            h: [u32; 5],
            /// The run in flight (index into `runs`) and the chain's end.
            run: usize,
            end: usize,
            /// Blocks of that run already compressed.
            done: usize,
        }
        let mut lanes: [Option<Lane>; WIDTH] = [None; WIDTH];
        let mut next = 0;
        loop {
            // Fill free lanes, and save every run that is complete
            // (including empty ones) before computing the step.
            for slot in lanes.iter_mut() {
                loop {
                    if slot.is_none() {
                        let Some(c) = self.chains.get(next) else {
                            break;
                        };
                        next += 1;
                        *slot = Some(Lane {
                            h: c.h,
                            run: c.runs.start,
                            end: c.runs.end,
                            done: 0,
                        });
                    }
                    let Some(l) = slot.as_mut() else { break };
                    match self.runs.get(l.run) {
                        Some(r) if l.run < l.end && l.done >= r.len => {
                            if let Some(o) = self.out.get_mut(r.save) {
                                *o = l.h;
                            }
                            l.run += 1;
                            l.done = 0;
                        }
                        Some(_) if l.run < l.end => break,
                        _ => *slot = None,
                    }
                }
            }
            let mut active = [0usize; WIDTH];
            let mut n = 0;
            let mut step = usize::MAX;
            for (i, l) in lanes.iter().enumerate() {
                if let Some(l) = l
                    && let Some(r) = self.runs.get(l.run)
                {
                    active[n] = i;
                    n += 1;
                    step = step.min(r.len - l.done);
                }
            }
            if n == 0 {
                return;
            }
            let mut states = [[0u32; 5]; WIDTH];
            let mut from: [&[[u8; 64]]; WIDTH] = [&[]; WIDTH];
            for (k, &i) in active.iter().take(n).enumerate() {
                if let Some(l) = lanes[i]
                    && let Some(r) = self.runs.get(l.run)
                {
                    states[k] = l.h;
                    from[k] = blocks(&self.arena, r.start + l.done, step);
                }
            }
            // SAFETY: `execute` checked `x86::available()`.
            unsafe { lanes_of_n(n, &mut states, &from, step) };
            for (k, &i) in active.iter().take(n).enumerate() {
                if let Some(l) = lanes[i].as_mut() {
                    l.h = states[k];
                    l.done += step;
                }
            }
        }
    }
}

/// Blocks `start..start + len` of `arena`, or as many of them as exist.
fn blocks(arena: &[u8], start: usize, len: usize) -> &[[u8; 64]] {
    let all = arena.as_chunks::<64>().0;
    let end = start.saturating_add(len).min(all.len());
    all.get(start.min(end)..end).unwrap_or(&[])
}

/// The first `n` (1 to [`WIDTH`]) of `states` and `from` through the
/// kernel of that many lanes.
///
/// # Safety
/// As [`super::x86::compress_lanes`].
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn lanes_of_n(
    n: usize,
    states: &mut [[u32; 5]; WIDTH],
    from: &[&[[u8; 64]]; WIDTH],
    blocks: usize,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match n {
            1 => lanes_of::<1>(states, from, blocks),
            2 => lanes_of::<2>(states, from, blocks),
            3 => lanes_of::<3>(states, from, blocks),
            _ => lanes_of::<4>(states, from, blocks),
        }
    }
}

/// The first `N` of `states` and `from` through the `N`-lane kernel.
///
/// # Safety
/// As [`super::x86::compress_lanes`].
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn lanes_of<const N: usize>(
    states: &mut [[u32; 5]; WIDTH],
    from: &[&[[u8; 64]]; WIDTH],
    n: usize,
) {
    let mut s: [[u32; 5]; N] = core::array::from_fn(|k| states[k]);
    let f: [&[[u8; 64]]; N] = core::array::from_fn(|k| from[k]);
    // SAFETY: forwarded from the caller.
    unsafe { super::x86::compress_lanes::<N>(&mut s, f, n) };
    states[..N].copy_from_slice(&s);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chains of uneven runs (empty ones included) give the states the
    /// one-at-a-time path gives, on whichever path this CPU takes.
    #[test]
    fn lanes_match_serial() {
        let mut l = Lanes::default();
        for i in 0..64u32 {
            l.push(&core::array::from_fn::<u8, 64, _>(|j| {
                (i as u8).wrapping_mul(31) ^ j as u8
            }));
        }
        let shapes: &[&[(usize, usize)]] = &[
            &[(0, 8), (8, 0), (8, 9)],
            &[(3, 1)],
            &[(10, 2), (12, 2), (14, 30)],
            &[],
            &[(0, 0)],
            &[(40, 7), (47, 8), (55, 8)],
            &[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)],
        ];
        // Chains of one run each take the fast path.
        let singles: &[&[(usize, usize)]] = &[
            &[(0, 1)],
            &[(1, 2)],
            &[(3, 1)],
            &[(4, 0)],
            &[(5, 2)],
            &[(7, 2)],
            &[(9, 1)],
        ];
        for chains in [singles, shapes] {
            l.chains.clear();
            l.runs.clear();
            l.out.clear();
            for (i, runs) in chains.iter().enumerate() {
                l.chain([i as u32; 5]);
                for &(s, n) in *runs {
                    l.run(s, n);
                }
            }
            l.execute();
            let fast = l.out.clone();
            l.execute_serial();
            assert_eq!(fast, l.out);
        }
        // And the serial path is the sha1 crate's, run by run.
        let mut h = [0u32; 5];
        ::sha1::block_api::compress(&mut h, blocks(&l.arena, 0, 8));
        assert_eq!(l.out[0], h);
        assert_eq!(l.out[1], h);
    }
}
