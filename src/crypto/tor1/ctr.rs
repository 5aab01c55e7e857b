//! AES-128-CTR with a 128-bit big-endian counter and IV 0, as tor1 uses it
//! (C tor aes.c: `crypto_cipher_new`, counter mode over OpenSSL). Written
//! here rather than taken from the `ctr` crate because that crate makes one
//! block per call at a time for the counter and XOR, which costs more than
//! the AES itself (perf-anchors.md §3.2): here the counters of up to
//! `PAR_BLOCKS` blocks go to the `aes` backend in one call (VAES gets its
//! full width) and the XOR runs on 16-byte words.

use aes::Aes128;
use aes::cipher::{Block, BlockCipherEncrypt, KeyInit};
use zeroize::Zeroize;

/// Blocks per backend call: the VAES-512 backend's parallel width.
const PAR_BLOCKS: usize = 64;

pub(crate) struct Aes128CtrStream {
    cipher: Aes128,
    /// Counter of the next block to generate.
    counter: u128,
    /// Keystream left over from the last partial block.
    leftover: [u8; 16],
    /// Bytes of `leftover` already used (16 = none left).
    used: usize,
}

impl Drop for Aes128CtrStream {
    fn drop(&mut self) {
        self.leftover.zeroize();
    }
}

#[inline]
fn xor16(dst: &mut [u8], ks: &[u8]) {
    let (Ok(d), Ok(k)) = (<&mut [u8; 16]>::try_from(dst), <&[u8; 16]>::try_from(ks)) else {
        return;
    };
    *d = (u128::from_ne_bytes(*d) ^ u128::from_ne_bytes(*k)).to_ne_bytes();
}

impl Aes128CtrStream {
    pub(crate) fn new(key: &[u8; 16]) -> Self {
        Self {
            cipher: Aes128::new(key.into()),
            counter: 0,
            leftover: [0; 16],
            used: 16,
        }
    }

    /// XOR the next `data.len()` keystream bytes into `data`.
    pub(crate) fn apply(&mut self, mut data: &mut [u8]) {
        // Finish the partial block from the previous call.
        let n = data.len().min(16 - self.used);
        let (head, rest) = data.split_at_mut(n);
        for (d, k) in head.iter_mut().zip(&self.leftover[self.used..]) {
            *d ^= k;
        }
        self.used += n;
        data = rest;

        let mut blocks = [Block::<Aes128>::default(); PAR_BLOCKS];
        while data.len() >= 16 {
            let nb = (data.len() / 16).min(PAR_BLOCKS);
            let batch = &mut blocks[..nb];
            for b in batch.iter_mut() {
                *b = self.counter.to_be_bytes().into();
                self.counter = self.counter.wrapping_add(1);
            }
            self.cipher.encrypt_blocks(batch);
            let (full, rest) = data.split_at_mut(nb * 16);
            for (chunk, ks) in full.chunks_exact_mut(16).zip(batch.iter()) {
                xor16(chunk, ks);
            }
            data = rest;
        }
        if !data.is_empty() {
            let mut b: Block<Aes128> = self.counter.to_be_bytes().into();
            self.counter = self.counter.wrapping_add(1);
            self.cipher.encrypt_block(&mut b);
            self.leftover.copy_from_slice(&b);
            for (d, k) in data.iter_mut().zip(&self.leftover) {
                *d ^= k;
            }
            self.used = data.len();
        }
        blocks.iter_mut().for_each(|b| b.fill(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctr::Ctr128BE;
    use ctr::cipher::{KeyIvInit, StreamCipher};

    /// Same keystream as the `ctr` crate's Ctr128BE for any split of calls.
    #[test]
    fn matches_ctr_crate() {
        let key = [7u8; 16];
        let mut ours = Aes128CtrStream::new(&key);
        let mut theirs = Ctr128BE::<Aes128>::new(&key.into(), &[0u8; 16].into());
        for len in [0usize, 1, 15, 16, 17, 509, 1018, 2000, 3, 509, 64 * 16 + 5] {
            let mut a: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut b = a.clone();
            ours.apply(&mut a);
            theirs.apply_keystream(&mut b);
            assert_eq!(a, b, "len {len}");
        }
    }
}
