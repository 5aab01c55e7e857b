//! The running SHA-1 of one tor1 direction, built on the `sha1` crate's
//! compression function (SHA-NI when the CPU has it, chosen at run time).
//!
//! tor1 reads the digest after every recognized or originated cell and, on
//! a failed recognized check, rolls it back (C tor: crypto_digest_checkpoint
//! / get_digest / restore in relay_crypto_tor1.c). With `sha1::Sha1` that
//! was a clone to save, a clone to finalize and the digest crate's generic
//! buffering per cell. Here the state is a small `Copy` value: a cell is
//! absorbed into a copy, the digest is read from it with the padding built
//! on the stack, and the copy is committed only if the cell is ours.

mod lanes;
#[cfg(target_arch = "x86_64")]
mod x86;

use self::lanes::Lanes;
use ::sha1::block_api::compress;
use core::ops::Range;

const BLOCK: usize = 64;
const H0: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];

#[derive(Clone, Copy)]
pub(crate) struct RunningSha1 {
    h: [u32; 5],
    /// Bytes not yet compressed: `buf[..buf_len]`.
    buf: [u8; BLOCK],
    buf_len: usize,
    /// Whole blocks compressed so far.
    blocks: u64,
}

impl RunningSha1 {
    pub(crate) fn new() -> Self {
        Self {
            h: H0,
            buf: [0; BLOCK],
            buf_len: 0,
            blocks: 0,
        }
    }

    /// Absorb `data`.
    #[inline]
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        if self.buf_len > 0 {
            let take = data.len().min(BLOCK - self.buf_len);
            let (head, rest) = data.split_at(take);
            if let Some(dst) = self.buf.get_mut(self.buf_len..self.buf_len + take) {
                dst.copy_from_slice(head);
            }
            self.buf_len += take;
            data = rest;
            if self.buf_len < BLOCK {
                return;
            }
            compress(&mut self.h, &[self.buf]);
            self.blocks += 1;
            self.buf_len = 0;
        }
        let (whole, tail) = data.as_chunks::<BLOCK>();
        if !whole.is_empty() {
            compress(&mut self.h, whole);
            self.blocks += whole.len() as u64;
        }
        if let Some(dst) = self.buf.get_mut(..tail.len()) {
            dst.copy_from_slice(tail);
        }
        self.buf_len = tail.len();
    }

    /// The SHA-1 of everything absorbed so far; the state is unchanged, so
    /// more data can follow (C tor's crypto_digest_get_digest).
    #[inline]
    pub(crate) fn digest(&self) -> [u8; 20] {
        let mut h = self.h;
        let bit_len = (self.blocks * BLOCK as u64 + self.buf_len as u64).wrapping_mul(8);
        let mut pad = [[0u8; BLOCK]; 2];
        let flat = pad.as_flattened_mut();
        if let Some(dst) = flat.get_mut(..self.buf_len) {
            dst.copy_from_slice(self.buf.get(..self.buf_len).unwrap_or(&[]));
        }
        if let Some(b) = flat.get_mut(self.buf_len) {
            *b = 0x80;
        }
        // One block if the length fits after the 0x80 byte, else two.
        let n = if self.buf_len + 1 + 8 <= BLOCK { 1 } else { 2 };
        if let Some(len) = flat.get_mut(n * BLOCK - 8..n * BLOCK) {
            len.copy_from_slice(&bit_len.to_be_bytes());
        }
        compress(&mut h, pad.get(..n).unwrap_or(&[]));
        let mut out = [0u8; 20];
        for (o, w) in out.chunks_exact_mut(4).zip(h) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// Where one cell's digest comes from in [`absorb_many`]: the state after
/// the cell's whole blocks (`a.out[after]`) and the bytes past them.
struct CellEnd {
    after: usize,
    /// The cell's last partial block: `a.block(block)[..tail]`.
    block: usize,
    tail: usize,
    /// Bytes absorbed by the running digest once this cell is in.
    total: u64,
    /// The cell's index in the batch.
    cell: usize,
}

/// Scratch for [`absorb_many`], kept by its caller so that a batch
/// allocates nothing once the vectors have grown.
#[derive(Default)]
pub(crate) struct Sha1Batch {
    a: Lanes,
    b: Lanes,
    ends: Vec<CellEnd>,
}

/// The running digests of several independent streams at once. Stream `g`
/// starts from `states[g]` and absorbs the 509-byte `cells[groups[g]]` one
/// after another; `digests[i]` gets the digest after cell `i` (what
/// [`RunningSha1::update`] then [`RunningSha1::digest`] would give), and
/// `states[g]` ends having absorbed all of its cells.
///
/// Two passes, each spread over SHA-NI lanes (`lanes.rs`): first every
/// stream's cells, one lane per stream, saving the state at each cell's
/// end; then every cell's final padding block(s), which are independent of
/// each other even within one stream.
pub(crate) fn absorb_many(
    batch: &mut Sha1Batch,
    states: &mut [RunningSha1],
    groups: &[Range<usize>],
    cells: &[&mut [u8; 509]],
    digests: &mut [[u8; 20]],
) {
    let Sha1Batch { a, b, ends } = batch;
    a.clear();
    b.clear();
    ends.clear();
    for (s, g) in states.iter().zip(groups) {
        let Some(group) = cells.get(g.clone()) else {
            continue;
        };
        // This stream's bytes, buffered head first, laid out as blocks.
        let first = a.blocks();
        a.push(s.buf.get(..s.buf_len).unwrap_or(&[]));
        for c in group {
            a.push(&c[..]);
        }
        a.pad_block();
        a.chain(s.h);
        let mut whole = 0;
        for k in 1..=group.len() {
            let end = s.buf_len + k * 509;
            let run = end / BLOCK - whole;
            let after = a.run(first + whole, run);
            whole += run;
            ends.push(CellEnd {
                after,
                block: first + whole,
                tail: end % BLOCK,
                total: s.blocks * BLOCK as u64 + end as u64,
                cell: g.start + k - 1,
            });
        }
    }
    a.execute();

    // Every cell's padding, from the state after its whole blocks.
    for e in ends.iter() {
        let first = b.blocks();
        let n = if e.tail + 1 + 8 <= BLOCK { 1 } else { 2 };
        let mut pad = [0u8; 2 * BLOCK];
        let tail = a.block(e.block).map_or(&[][..], |t| &t[..e.tail]);
        if let Some(dst) = pad.get_mut(..tail.len()) {
            dst.copy_from_slice(tail);
        }
        if let Some(x) = pad.get_mut(e.tail) {
            *x = 0x80;
        }
        if let Some(len) = pad.get_mut(n * BLOCK - 8..n * BLOCK) {
            len.copy_from_slice(&e.total.wrapping_mul(8).to_be_bytes());
        }
        b.push(pad.get(..n * BLOCK).unwrap_or(&[]));
        b.chain(a.out.get(e.after).copied().unwrap_or(H0));
        b.run(first, n);
    }
    b.execute();
    for (e, h) in ends.iter().zip(&b.out) {
        if let Some(d) = digests.get_mut(e.cell) {
            for (o, w) in d.chunks_exact_mut(4).zip(h) {
                o.copy_from_slice(&w.to_be_bytes());
            }
        }
    }

    // Each stream continues from its last cell.
    let mut e = ends.iter();
    for (s, g) in states.iter_mut().zip(groups) {
        let n = cells.get(g.clone()).map_or(0, <[_]>::len);
        let Some(last) = e.by_ref().take(n).last() else {
            continue;
        };
        s.h = a.out.get(last.after).copied().unwrap_or(s.h);
        s.buf = a.block(last.block).copied().unwrap_or([0; BLOCK]);
        s.buf_len = last.tail;
        s.blocks = last.total / BLOCK as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::sha1::{Digest, Sha1};

    /// Same digests as `sha1::Sha1` after every piece of a stream cut at
    /// every offset class, including the 55/56-byte padding boundary.
    #[test]
    fn matches_sha1_crate() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        for cuts in [
            &[0usize, 1, 55, 56, 57, 63, 64, 65][..],
            &[509, 509, 509, 509, 509, 509, 509, 509, 509],
            &[20, 509, 3, 119, 128, 64, 1000],
        ] {
            let mut ours = RunningSha1::new();
            let mut theirs = Sha1::new();
            let mut at = 0;
            for &n in cuts {
                let piece = &data[at..at + n];
                at += n;
                ours.update(piece);
                theirs.update(piece);
                let want: [u8; 20] = theirs.clone().finalize().into();
                assert_eq!(ours.digest(), want, "after {at} bytes");
            }
        }
    }

    /// The batch gives, stream by stream and cell by cell, what one
    /// running digest gives, from every buffered-head length.
    #[test]
    fn absorb_many_matches_one_at_a_time() {
        let mut cells: Vec<[u8; 509]> = (0..40u32)
            .map(|i| core::array::from_fn(|j| (i * 13 + j as u32 * 7) as u8))
            .collect();
        let sizes = [3usize, 1, 0, 8, 2, 1, 5, 20];
        let mut groups = Vec::new();
        let mut at = 0;
        for n in sizes {
            groups.push(at..at + n);
            at += n;
        }
        let cells = &mut cells[..at];
        let starts: Vec<RunningSha1> = (0..sizes.len())
            .map(|g| {
                let mut s = RunningSha1::new();
                // Heads of 0, 7, 14, ... 63 bytes, and some whole blocks.
                s.update(&vec![g as u8; g * 71]);
                s
            })
            .collect();
        let mut want_states = starts.clone();
        let mut want = vec![[0u8; 20]; at];
        for (s, g) in want_states.iter_mut().zip(&groups) {
            for i in g.clone() {
                s.update(&cells[i]);
                want[i] = s.digest();
            }
        }
        let mut batch = Sha1Batch::default();
        for _ in 0..2 {
            let mut states = starts.clone();
            let mut got = vec![[0u8; 20]; at];
            let refs: Vec<&mut [u8; 509]> = cells.iter_mut().collect();
            absorb_many(&mut batch, &mut states, &groups, &refs, &mut got);
            assert_eq!(got, want);
            for (s, w) in states.iter().zip(&want_states) {
                assert_eq!(s.digest(), w.digest());
                assert_eq!((s.buf_len, s.blocks), (w.buf_len, w.blocks));
            }
        }
    }

    /// FIPS 180 "abc" vector.
    #[test]
    fn abc_vector() {
        let mut s = RunningSha1::new();
        s.update(b"abc");
        assert_eq!(
            hex::encode(s.digest()),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
