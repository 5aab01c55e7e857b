//! POLYVAL (RFC 8452) for CGO: a key and the hash of whole blocks.
//!
//! CGO hashes 32 blocks per cell for ET's mask and one block per PRF IV,
//! under keys that change with every recognized or originated cell. On
//! x86_64 with VPCLMULQDQ the blocks go eight at a time against
//! precomputed powers H^8..H^1, two per 256-bit register, with one
//! reduction per eight blocks (the polyval crate does four per reduction on
//! 128-bit registers); elsewhere the polyval crate runs.
//!
//! Owns the field arithmetic only; what is hashed is `cgo.rs`'s.

use polyval::Polyval;
use polyval::universal_hash::UniversalHash;
use zeroize::Zeroize;

/// A POLYVAL key, ready to hash.
pub(super) enum PolyvalKey {
    #[cfg(target_arch = "x86_64")]
    Wide(x86::Key),
    Portable(Box<Polyval>),
}

impl PolyvalKey {
    pub(super) fn new(h: &[u8; 16]) -> Self {
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            // SAFETY: the CPU has what the kernel needs (checked above).
            return Self::Wide(unsafe { x86::Key::new(h) });
        }
        Self::Portable(Box::new(Polyval::new(h.into())))
    }

    /// Rekey in place (no allocation on the wide path).
    pub(super) fn set(&mut self, h: &[u8; 16]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a wide key exists only where its kernel runs.
            Self::Wide(k) => *k = unsafe { x86::Key::new(h) },
            Self::Portable(p) => **p = Polyval::new(h.into()),
        }
    }

    /// POLYVAL of `blocks` (a whole number of 16-byte blocks; a partial
    /// last block is the caller's to zero-pad).
    pub(super) fn hash(&mut self, blocks: &[u8]) -> [u8; 16] {
        debug_assert_eq!(blocks.len() % 16, 0);
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a wide key exists only where its kernel runs.
            Self::Wide(k) => unsafe { k.hash(blocks) },
            Self::Portable(p) => {
                p.update_padded(blocks);
                p.finalize_reset().into()
            }
        }
    }
}

/// A POLYVAL key that only ever hashes one block (CGO's PRF IV): no powers
/// to precompute.
pub(super) enum PolyvalOne {
    #[cfg(target_arch = "x86_64")]
    Wide([u8; 16]),
    Portable(Box<Polyval>),
}

impl PolyvalOne {
    pub(super) fn new(h: &[u8; 16]) -> Self {
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            return Self::Wide(*h);
        }
        Self::Portable(Box::new(Polyval::new(h.into())))
    }

    pub(super) fn set(&mut self, h: &[u8; 16]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Wide(k) => *k = *h,
            Self::Portable(p) => **p = Polyval::new(h.into()),
        }
    }

    /// POLYVAL of the one block `x`.
    pub(super) fn hash(&mut self, x: &[u8; 16]) -> [u8; 16] {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a wide key exists only where its kernel runs.
            Self::Wide(h) => unsafe { x86::mul_one(x, h) },
            Self::Portable(p) => {
                p.update(&[(*x).into()]);
                p.finalize_reset().into()
            }
        }
    }
}

impl Drop for PolyvalOne {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if let Self::Wide(h) = self {
            h[..].zeroize();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;
    use zeroize::Zeroize;

    pub(in super::super) fn available() -> bool {
        is_x86_feature_detected!("pclmulqdq")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("vpclmulqdq")
    }

    /// H^8, H^7, ..., H^1 (POLYVAL products): one 32-byte load gives the
    /// powers of two neighbouring blocks of an eight-block group.
    #[derive(Clone)]
    pub(in super::super) struct Key {
        powers: [[u8; 16]; 8],
    }

    impl Drop for Key {
        fn drop(&mut self) {
            self.powers.as_flattened_mut().zeroize();
        }
    }

    /// The 256-bit product `hi:lo` (carry-less, mid folded in) times
    /// x^-128 modulo the POLYVAL polynomial.
    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    unsafe fn reduce(lo: __m128i, mid: __m128i, hi: __m128i) -> __m128i {
        let lo = _mm_xor_si128(lo, _mm_slli_si128(mid, 8));
        let hi = _mm_xor_si128(hi, _mm_srli_si128(mid, 8));
        // x^128 + x^127 + x^126 + x^121 + 1, folded for the Montgomery
        // reduction of the AES-GCM-SIV reference code: 0xc2 << 120 | 1.
        let p = _mm_set_epi64x(0xc200_0000_0000_0000_u64 as i64, 1);
        let t = _mm_clmulepi64_si128(lo, p, 0x10);
        let lo = _mm_xor_si128(_mm_shuffle_epi32(lo, 0x4e), t);
        let t = _mm_clmulepi64_si128(lo, p, 0x10);
        let lo = _mm_xor_si128(_mm_shuffle_epi32(lo, 0x4e), t);
        _mm_xor_si128(hi, lo)
    }

    /// POLYVAL's product of two field elements.
    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    unsafe fn mul(a: __m128i, b: __m128i) -> __m128i {
        let lo = _mm_clmulepi64_si128(a, b, 0x00);
        let hi = _mm_clmulepi64_si128(a, b, 0x11);
        let mid = _mm_xor_si128(
            _mm_clmulepi64_si128(a, b, 0x01),
            _mm_clmulepi64_si128(a, b, 0x10),
        );
        unsafe { reduce(lo, mid, hi) }
    }

    fn load(b: &[u8; 16]) -> __m128i {
        // SAFETY: 16 readable bytes; unaligned load.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }

    fn store(v: __m128i) -> [u8; 16] {
        let mut b = [0u8; 16];
        // SAFETY: 16 writable bytes; unaligned store.
        unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) };
        b
    }

    /// `x · h` in POLYVAL's field.
    ///
    /// # Safety
    /// `available()`.
    #[target_feature(enable = "pclmulqdq,sse2")]
    pub(in super::super) unsafe fn mul_one(x: &[u8; 16], h: &[u8; 16]) -> [u8; 16] {
        store(unsafe { mul(load(x), load(h)) })
    }

    impl Key {
        /// # Safety
        /// `available()`.
        #[target_feature(enable = "pclmulqdq,sse2")]
        pub(in super::super) unsafe fn new(h: &[u8; 16]) -> Self {
            // Three multiplications deep rather than seven: a key is made
            // for every cell an exit recognizes or originates.
            let p1 = load(h);
            let (p2, p3, p4, p5, p6, p7, p8);
            unsafe {
                p2 = mul(p1, p1);
                p3 = mul(p2, p1);
                p4 = mul(p2, p2);
                p5 = mul(p4, p1);
                p6 = mul(p4, p2);
                p7 = mul(p4, p3);
                p8 = mul(p4, p4);
            }
            let powers = [p8, p7, p6, p5, p4, p3, p2, p1].map(store);
            Self { powers }
        }

        /// # Safety
        /// `available()`; `blocks.len()` a multiple of 16.
        #[target_feature(enable = "pclmulqdq,avx2,vpclmulqdq")]
        pub(in super::super) unsafe fn hash(&self, blocks: &[u8]) -> [u8; 16] {
            let mut acc = _mm_setzero_si128();
            let mut groups = blocks.chunks_exact(128);
            for g in &mut groups {
                let (mut lo, mut mid, mut hi) = (
                    _mm256_setzero_si256(),
                    _mm256_setzero_si256(),
                    _mm256_setzero_si256(),
                );
                for pair in 0..4 {
                    // SAFETY: `g` is 128 bytes and `powers` 128 bytes:
                    // pair * 32 + 32 <= 128 in both.
                    let (mut x, h) = unsafe {
                        (
                            _mm256_loadu_si256(g.as_ptr().add(pair * 32).cast()),
                            _mm256_loadu_si256(self.powers.as_ptr().add(pair * 2).cast()),
                        )
                    };
                    if pair == 0 {
                        // The running sum joins the group's first block.
                        x = _mm256_xor_si256(x, _mm256_zextsi128_si256(acc));
                    }
                    lo = _mm256_xor_si256(lo, _mm256_clmulepi64_epi128(x, h, 0x00));
                    hi = _mm256_xor_si256(hi, _mm256_clmulepi64_epi128(x, h, 0x11));
                    mid = _mm256_xor_si256(mid, _mm256_clmulepi64_epi128(x, h, 0x01));
                    mid = _mm256_xor_si256(mid, _mm256_clmulepi64_epi128(x, h, 0x10));
                }
                let fold = |v: __m256i| {
                    _mm_xor_si128(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1))
                };
                acc = unsafe { reduce(fold(lo), fold(mid), fold(hi)) };
            }
            let h1 = load(&self.powers[7]);
            for b in groups.remainder().chunks_exact(16) {
                // SAFETY: 16 readable bytes.
                let x = unsafe { _mm_loadu_si128(b.as_ptr().cast()) };
                acc = unsafe { mul(_mm_xor_si128(acc, x), h1) };
            }
            store(acc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wide kernel against the polyval crate, for every length up to
    /// 40 blocks and several keys.
    #[test]
    fn matches_the_polyval_crate() {
        let data: Vec<u8> = (0..640u32).map(|i| (i * 113 + 7) as u8).collect();
        for seed in 0..6u8 {
            let h: [u8; 16] =
                core::array::from_fn(|i| seed.wrapping_mul(37) ^ (i as u8).wrapping_mul(11));
            let mut ours = PolyvalKey::new(&h);
            let mut reference = PolyvalKey::Portable(Box::new(Polyval::new(&h.into())));
            for blocks in 0..=40 {
                let d = &data[..blocks * 16];
                assert_eq!(
                    ours.hash(d),
                    reference.hash(d),
                    "key {seed}, {blocks} blocks"
                );
            }
            // Rekeyed in place, it hashes under the new key.
            let h2 = [seed; 16];
            ours.set(&h2);
            reference.set(&h2);
            assert_eq!(ours.hash(&data[..512]), reference.hash(&data[..512]));
        }
    }

    #[test]
    fn one_block_key_matches() {
        for seed in 0..8u8 {
            let h: [u8; 16] = core::array::from_fn(|i| seed ^ (i as u8).wrapping_mul(29));
            let x: [u8; 16] =
                core::array::from_fn(|i| seed.wrapping_add((i as u8).wrapping_mul(3)));
            let mut one = PolyvalOne::new(&h);
            let mut reference = PolyvalKey::Portable(Box::new(Polyval::new(&h.into())));
            assert_eq!(one.hash(&x), reference.hash(&x));
            one.set(&x);
            reference.set(&x);
            assert_eq!(one.hash(&h), reference.hash(&h));
        }
    }

    #[test]
    fn rfc8452_example() {
        let h = hex::decode("25629347589242761d31f826ba4b757b").unwrap();
        let x = hex::decode("4f4f95668c83dfb6401762bb2d01a262d1a24ddd2721d006bbe45f20d3c9f362")
            .unwrap();
        let mut k = PolyvalKey::new(&h.try_into().unwrap());
        assert_eq!(hex::encode(k.hash(&x)), "f7a3b47b846119fae5b7866cf5e5b77e");
    }
}
