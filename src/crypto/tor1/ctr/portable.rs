//! The portable AES-128-CTR stream: the `aes` crate's backend (which picks
//! AES-NI or VAES at run time itself, or a bitsliced software AES) behind a
//! keystream buffer. Used where the fused x86_64 kernels (`ctr/x86.rs`)
//! cannot run, and as their reference in tests.
//!
//! Both the `ctr` crate and a plain `encrypt_blocks` call hand the AES
//! backend whatever number of blocks the caller has: the `aes` 0.9 backends
//! only run wide when given a whole multiple of their parallel width (64
//! blocks for VAES-512, 30 for VAES-256, 8 for AES-NI) and encrypt every
//! other block alone, one AES latency chain at a time. A 509-byte cell is 32
//! blocks, under the VAES-512 width. So this stream keeps a keystream buffer
//! and refills it with exactly as many whole backend batches as fit in
//! [`KS_BLOCKS`] blocks; cells XOR from it.

use aes::Aes128;
use aes::cipher::{
    Array, BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt, BlockSizeUser,
    KeyInit, ParBlocks, ParBlocksSizeUser, consts::U16, typenum::Unsigned,
};
use zeroize::Zeroize;

/// Keystream buffer size in blocks: one VAES-512 batch; two AES-NI-width
/// batches fit eight times. 1 KiB per direction.
const KS_BLOCKS: usize = 64;
pub(super) const KS_BYTES: usize = KS_BLOCKS * 16;

pub(super) struct PortableStream {
    cipher: Aes128,
    /// Counter of the next block to generate.
    counter: u128,
    /// Generated keystream; bytes `used..len` are not consumed yet.
    ks: [[u8; 16]; KS_BLOCKS],
    /// Bytes of `ks` filled by the last refill.
    len: usize,
    /// Bytes of `ks` already used.
    used: usize,
}

impl Drop for PortableStream {
    fn drop(&mut self) {
        self.ks.as_flattened_mut().zeroize();
    }
}

/// Fill the keystream buffer through the backend the cipher picked at run
/// time, in whole batches of that backend's parallel width.
struct Refill<'a> {
    ks: &'a mut [[u8; 16]; KS_BLOCKS],
    counter: &'a mut u128,
    /// Blocks generated, set by `call`.
    blocks: &'a mut usize,
}

impl BlockSizeUser for Refill<'_> {
    type BlockSize = U16;
}

impl BlockCipherEncClosure for Refill<'_> {
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        let par = <B as ParBlocksSizeUser>::ParBlocksSize::USIZE;
        // Whole batches only; a backend wider than the buffer (none today)
        // gets one full buffer on its one-block path.
        let n = if par == 0 || par > KS_BLOCKS {
            KS_BLOCKS
        } else {
            KS_BLOCKS / par * par
        };
        let mut ctr = *self.counter;
        for b in self.ks.iter_mut().take(n) {
            *b = ctr.to_be_bytes();
            ctr = ctr.wrapping_add(1);
        }
        *self.counter = ctr;
        let blocks = Array::cast_slice_from_core_mut(&mut self.ks[..n]);
        if par == 0 || par > KS_BLOCKS {
            blocks
                .iter_mut()
                .for_each(|b| backend.encrypt_block_inplace(b));
        } else {
            for chunk in blocks.chunks_exact_mut(par) {
                if let Ok(batch) = <&mut ParBlocks<B>>::try_from(chunk) {
                    backend.encrypt_par_blocks_inplace(batch);
                }
            }
        }
        *self.blocks = n;
    }
}

/// `dst ^= ks`, same lengths (callers split them so).
#[inline(always)]
fn xor_into(dst: &mut [u8], ks: &[u8]) {
    for (d, k) in dst.iter_mut().zip(ks) {
        *d ^= k;
    }
}

impl PortableStream {
    /// `counter` is the first block's counter: 0 for tor1.
    pub(super) fn new(key: &[u8; 16], counter: u128) -> Self {
        Self {
            cipher: Aes128::new(key.into()),
            counter,
            ks: [[0; 16]; KS_BLOCKS],
            len: 0,
            used: 0,
        }
    }

    /// A new key; the keystream restarts at block `counter`.
    pub(super) fn rekey(&mut self, key: &[u8; 16], counter: u128) {
        self.cipher = Aes128::new(key.into());
        self.seek(counter);
    }

    /// Continue from block `counter`, dropping any keystream generated
    /// ahead.
    pub(super) fn seek(&mut self, counter: u128) {
        self.counter = counter;
        self.len = 0;
        self.used = 0;
    }

    fn refill(&mut self) {
        let mut blocks = 0;
        self.cipher.encrypt_with_backend(Refill {
            ks: &mut self.ks,
            counter: &mut self.counter,
            blocks: &mut blocks,
        });
        self.len = blocks * 16;
        self.used = 0;
    }

    /// XOR the next `data.len()` keystream bytes into `data`.
    #[inline]
    pub(super) fn apply(&mut self, mut data: &mut [u8]) {
        while !data.is_empty() {
            if self.used >= self.len {
                self.refill();
            }
            let ks = self.ks.as_flattened();
            let avail = ks.get(self.used..self.len.min(KS_BYTES)).unwrap_or(&[]);
            let n = data.len().min(avail.len());
            let (head, rest) = data.split_at_mut(n);
            xor_into(head, &avail[..n]);
            self.used += n;
            data = rest;
        }
    }
}
