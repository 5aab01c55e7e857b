//! AES-128-CTR with a 128-bit big-endian counter and IV 0, as tor1 uses it
//! (C tor aes.c: `crypto_cipher_new`, counter mode over OpenSSL). One stream
//! per direction of a hop; the keystream continues across calls and cells
//! (a 509-byte cell ends 13 bytes into its 32nd block).
//!
//! The implementation is picked once, at construction, from the CPU:
//! - x86_64 with VAES + AVX-512F/BW: fused 512-bit kernel (`ctr/x86.rs`);
//! - x86_64 with VAES + AVX2 (no AVX-512): fused 256-bit kernel;
//! - x86_64 with AES-NI: fused 8-way AES-NI kernel (`ctr/x86.rs`);
//! - anything else: the `aes` crate behind a keystream buffer
//!   (`ctr/portable.rs`).
//!
//! This module owns the choice and the partial block carried between calls;
//! it does not know about cells.

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

use self::portable::PortableStream;
use zeroize::Zeroize;

/// Which keystream generator a stream uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Backend {
    /// The `aes` crate behind a keystream buffer: any CPU.
    Portable,
    /// Fused AES-NI, 8 blocks in flight.
    #[cfg(target_arch = "x86_64")]
    AesNi,
    /// Fused VAES on 256-bit vectors (no AVX-512 needed).
    #[cfg(target_arch = "x86_64")]
    Vaes256,
    /// Fused VAES on 512-bit vectors.
    #[cfg(target_arch = "x86_64")]
    Vaes512,
}

impl Backend {
    /// The fastest backend this CPU runs. Measured on an AMD EPYC with
    /// VAES and AVX-512 (bench/ctor_cell_ops.sh): VAES-512 < AES-NI <
    /// portable per 509-byte cell.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if x86::has_vaes512() {
                return Self::Vaes512;
            }
            if x86::has_vaes256() {
                return Self::Vaes256;
            }
            if x86::has_aesni() {
                return Self::AesNi;
            }
        }
        Self::Portable
    }

    /// Whether this CPU can run `self`.
    pub(crate) fn available(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::AesNi => x86::has_aesni(),
            #[cfg(target_arch = "x86_64")]
            Self::Vaes256 => x86::has_vaes256(),
            #[cfg(target_arch = "x86_64")]
            Self::Vaes512 => x86::has_vaes512(),
        }
    }
}

pub(crate) struct Aes128CtrStream {
    inner: Inner,
}

#[allow(
    clippy::large_enum_variant,
    reason = "the fused state is the hot one: kept inline, the rare fallback boxed"
)]
enum Inner {
    /// Boxed: its 1 KiB keystream buffer would otherwise size every stream.
    Portable(Box<PortableStream>),
    #[cfg(target_arch = "x86_64")]
    Fused(Fused),
}

/// State of the fused x86_64 kernels.
#[cfg(target_arch = "x86_64")]
struct Fused {
    /// Checked at construction: the CPU has what `kernel` needs. Never
    /// `Backend::Portable`.
    kernel: Backend,
    round_keys: x86::RoundKeys,
    /// Counter of the next block to generate.
    counter: u128,
    /// Keystream of the last generated block; bytes `tail_pos..16` are
    /// not consumed yet (none when `tail_pos == 16`).
    tail: [u8; 16],
    tail_pos: usize,
}

#[cfg(target_arch = "x86_64")]
impl Drop for Fused {
    fn drop(&mut self) {
        self.round_keys.as_flattened_mut().zeroize();
        self.tail.zeroize();
    }
}

#[cfg(target_arch = "x86_64")]
impl Fused {
    /// `None` if the CPU lacks what `kernel` needs.
    fn new(kernel: Backend, key: &[u8; 16], counter: u128) -> Option<Self> {
        if kernel == Backend::Portable || !kernel.available() {
            return None;
        }
        Some(Self {
            kernel,
            // SAFETY: every fused kernel needs AES-NI + SSSE3, checked above.
            round_keys: unsafe { x86::expand_key(key) },
            counter,
            tail: [0; 16],
            tail_pos: 16,
        })
    }

    #[inline]
    fn apply(&mut self, data: &mut [u8]) {
        // First the rest of a block an earlier call started.
        let left = self.tail.get(self.tail_pos..).unwrap_or(&[]);
        let n = left.len().min(data.len());
        let (head, data) = data.split_at_mut(n);
        for (d, k) in head.iter_mut().zip(left) {
            *d ^= k;
        }
        self.tail_pos += n;
        if data.is_empty() {
            return;
        }
        match self.kernel {
            // SAFETY: `Fused::new` checked the CPU runs this kernel.
            Backend::Vaes512 => unsafe {
                x86::xor_vaes512(&self.round_keys, self.counter, data, &mut self.tail)
            },
            // SAFETY: `Fused::new` checked the CPU runs this kernel.
            Backend::Vaes256 => unsafe {
                x86::xor_vaes256(&self.round_keys, self.counter, data, &mut self.tail)
            },
            // SAFETY: `Fused::new` checked the CPU runs this kernel.
            _ => unsafe { x86::xor_aesni(&self.round_keys, self.counter, data, &mut self.tail) },
        }
        let blocks = data.len().div_ceil(16);
        self.counter = self.counter.wrapping_add(blocks as u128);
        self.tail_pos = match data.len() % 16 {
            0 => 16,
            r => r,
        };
    }
}

impl Aes128CtrStream {
    /// The tor1 stream for `key`: IV 0, on the fastest backend here.
    pub(crate) fn new(key: &[u8; 16]) -> Self {
        Self::with_backend(key, 0, Backend::detect())
    }

    /// A stream on `backend` whose first block has counter `counter`
    /// (tests set it high to cross counter-word carries). Falls back to the
    /// portable backend if this CPU cannot run `backend`.
    pub(crate) fn with_backend(key: &[u8; 16], counter: u128, backend: Backend) -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(f) = Fused::new(backend, key, counter) {
            return Self {
                inner: Inner::Fused(f),
            };
        }
        let _ = backend;
        Self {
            inner: Inner::Portable(Box::new(PortableStream::new(key, counter))),
        }
    }

    /// The backend actually in use.
    #[cfg(test)]
    pub(crate) fn backend(&self) -> Backend {
        match &self.inner {
            Inner::Portable(_) => Backend::Portable,
            #[cfg(target_arch = "x86_64")]
            Inner::Fused(f) => f.kernel,
        }
    }

    /// A new key, in place (the old round keys are overwritten), on the
    /// same backend; the keystream restarts at block `counter`.
    pub(crate) fn rekey(&mut self, key: &[u8; 16], counter: u128) {
        match &mut self.inner {
            Inner::Portable(p) => p.rekey(key, counter),
            #[cfg(target_arch = "x86_64")]
            Inner::Fused(f) => {
                // SAFETY: a fused stream exists only where its kernel runs,
                // and every fused kernel needs AES-NI + SSSE3.
                f.round_keys = unsafe { x86::expand_key(key) };
                f.counter = counter;
                f.tail_pos = 16;
            }
        }
    }

    /// Restart the keystream at block `counter` with the same key: CGO's
    /// PRF runs one key from a fresh IV per cell, and a key schedule per
    /// cell would cost more than the 31 blocks it encrypts.
    pub(crate) fn seek(&mut self, counter: u128) {
        match &mut self.inner {
            Inner::Portable(p) => p.seek(counter),
            #[cfg(target_arch = "x86_64")]
            Inner::Fused(f) => {
                f.counter = counter;
                f.tail_pos = 16;
            }
        }
    }

    /// XOR the next `data.len()` keystream bytes into `data`.
    #[inline]
    pub(crate) fn apply(&mut self, data: &mut [u8]) {
        match &mut self.inner {
            Inner::Portable(p) => p.apply(data),
            #[cfg(target_arch = "x86_64")]
            Inner::Fused(f) => f.apply(data),
        }
    }
}
