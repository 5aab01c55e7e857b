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

use ::sha1::block_api::compress;

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
