//! Fused AES-128-CTR keystream generation and XOR for x86_64: counter
//! blocks are built in registers, encrypted with interleaved AES rounds and
//! XORed straight into the caller's bytes, with no keystream buffer in
//! between (the `aes` crate's path spends as much time moving its batch
//! arrays as in AES rounds, and a 509-byte cell is 32 blocks).
//!
//! Two kernels, chosen at run time by `ctr.rs`:
//! - AES-NI, 8 blocks in flight: AES latency is ~4 cycles and up to two
//!   rounds issue per cycle, so 8 independent blocks keep the units busy.
//! - VAES with 512-bit vectors (AVX-512F/BW): 4 blocks per register, up to
//!   8 registers (32 blocks, one cell) in flight; masked loads/stores handle
//!   the ragged end of a cell without a bounce buffer.
//! - VAES with 256-bit vectors (AVX2), for CPUs with VAES and no AVX-512
//!   (AMD Zen 3, many exit servers): 2 blocks per register, 8 registers in
//!   flight; the ragged end goes through a bounce buffer as with AES-NI.
//!
//! Owns only the block function and the counter arithmetic; the partial
//! block carried between calls is `ctr.rs`'s. Counter: 128-bit big-endian,
//! as C tor's aes.c (OpenSSL EVP_aes_128_ctr) and the `ctr` crate's Ctr128BE.

use core::arch::x86_64::*;

/// Expanded AES-128 encryption key: 11 round keys, as bytes so that the
/// owner can wipe them.
pub(super) type RoundKeys = [[u8; 16]; 11];

/// Whether the AES-NI kernel can run here.
pub(super) fn has_aesni() -> bool {
    is_x86_feature_detected!("aes") && is_x86_feature_detected!("ssse3")
}

/// Whether the VAES-512 kernel can run here.
pub(super) fn has_vaes512() -> bool {
    has_aesni()
        && is_x86_feature_detected!("vaes")
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
}

/// Whether the VAES-256 kernel can run here.
pub(super) fn has_vaes256() -> bool {
    has_aesni() && is_x86_feature_detected!("vaes") && is_x86_feature_detected!("avx2")
}

/// One step of the AES-128 key schedule (FIPS-197 §5.2): `assist` is
/// `aeskeygenassist(prev, rcon)`.
#[inline]
#[target_feature(enable = "aes,ssse3")]
fn expand_step(prev: __m128i, assist: __m128i) -> __m128i {
    let t = _mm_shuffle_epi32::<0xff>(assist);
    let mut k = prev;
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    _mm_xor_si128(k, t)
}

/// The AES-128 key schedule with AESKEYGENASSIST.
#[target_feature(enable = "aes,ssse3")]
pub(super) fn expand_key(key: &[u8; 16]) -> RoundKeys {
    // SAFETY: `key` is 16 readable bytes; loadu has no alignment need.
    let k0 = unsafe { _mm_loadu_si128(key.as_ptr().cast()) };
    let k1 = expand_step(k0, _mm_aeskeygenassist_si128::<0x01>(k0));
    let k2 = expand_step(k1, _mm_aeskeygenassist_si128::<0x02>(k1));
    let k3 = expand_step(k2, _mm_aeskeygenassist_si128::<0x04>(k2));
    let k4 = expand_step(k3, _mm_aeskeygenassist_si128::<0x08>(k3));
    let k5 = expand_step(k4, _mm_aeskeygenassist_si128::<0x10>(k4));
    let k6 = expand_step(k5, _mm_aeskeygenassist_si128::<0x20>(k5));
    let k7 = expand_step(k6, _mm_aeskeygenassist_si128::<0x40>(k6));
    let k8 = expand_step(k7, _mm_aeskeygenassist_si128::<0x80>(k7));
    let k9 = expand_step(k8, _mm_aeskeygenassist_si128::<0x1b>(k8));
    let k10 = expand_step(k9, _mm_aeskeygenassist_si128::<0x36>(k9));
    let mut out = [[0u8; 16]; 11];
    for (o, k) in out
        .iter_mut()
        .zip([k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10])
    {
        // SAFETY: `o` is 16 writable bytes; storeu has no alignment need.
        unsafe { _mm_storeu_si128(o.as_mut_ptr().cast(), k) };
    }
    out
}

/// `_mm_shuffle_epi8` mask reversing a 128-bit lane: turns the counter held
/// as a little-endian u128 (low qword first) into its big-endian block.
#[inline]
#[target_feature(enable = "ssse3")]
fn bswap128() -> __m128i {
    _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
}

#[inline]
#[target_feature(enable = "aes,ssse3")]
fn load_keys128(rk: &RoundKeys) -> [__m128i; 11] {
    // SAFETY: each round key is 16 readable bytes; loadu has no alignment need.
    core::array::from_fn(|i| unsafe { _mm_loadu_si128(rk[i].as_ptr().cast()) })
}

/// Encrypt counter blocks `ctr .. ctr + 8` (wrapping mod 2^128).
#[inline]
#[target_feature(enable = "aes,ssse3")]
fn keystream8(k: &[__m128i; 11], ctr: u128) -> [__m128i; 8] {
    let bswap = bswap128();
    let lo = ctr as u64;
    let hi = (ctr >> 64) as u64;
    let mut b: [__m128i; 8] = if lo <= u64::MAX - 7 {
        // No carry into the high qword within these 8: one 64-bit add each.
        let base = _mm_set_epi64x(hi as i64, lo as i64);
        core::array::from_fn(|i| _mm_add_epi64(base, _mm_set_epi64x(0, i as i64)))
    } else {
        core::array::from_fn(|i| {
            let c = ctr.wrapping_add(i as u128);
            _mm_set_epi64x((c >> 64) as i64, c as i64)
        })
    };
    for x in b.iter_mut() {
        *x = _mm_xor_si128(_mm_shuffle_epi8(*x, bswap), k[0]);
    }
    for rk in &k[1..10] {
        for x in b.iter_mut() {
            *x = _mm_aesenc_si128(*x, *rk);
        }
    }
    for x in b.iter_mut() {
        *x = _mm_aesenclast_si128(*x, k[10]);
    }
    b
}

/// XOR the keystream of blocks `ctr, ctr + 1, ...` into `data`, 8 blocks
/// per round trip. If `data` ends inside a block, that block's whole
/// keystream is written to `tail` (its first `data.len() % 16` bytes are
/// then used; the caller keeps the rest for the next call).
#[target_feature(enable = "aes,ssse3")]
pub(super) fn xor_aesni(rk: &RoundKeys, mut ctr: u128, data: &mut [u8], tail: &mut [u8; 16]) {
    let k = load_keys128(rk);
    let mut chunks = data.chunks_exact_mut(128);
    for chunk in &mut chunks {
        let ks = keystream8(&k, ctr);
        for (i, s) in ks.iter().enumerate() {
            // SAFETY: block i of a 128-byte chunk is bytes 16i..16i+16 of it.
            unsafe {
                let p = chunk.as_mut_ptr().add(16 * i).cast::<__m128i>();
                _mm_storeu_si128(p, _mm_xor_si128(_mm_loadu_si128(p), *s));
            }
        }
        ctr = ctr.wrapping_add(8);
    }
    let rest = chunks.into_remainder();
    if rest.is_empty() {
        return;
    }
    // Under 8 blocks left: 8 blocks in flight cost about what one block's
    // latency chain costs, so run a full batch over a zero-padded copy.
    // The padding comes back as bare keystream: that is the tail block.
    let ks = keystream8(&k, ctr);
    let mut buf = [0u8; 128];
    buf[..rest.len()].copy_from_slice(rest);
    for (i, s) in ks.iter().enumerate() {
        // SAFETY: block i of the 128-byte `buf` is bytes 16i..16i+16.
        unsafe {
            let p = buf.as_mut_ptr().add(16 * i).cast::<__m128i>();
            _mm_storeu_si128(p, _mm_xor_si128(_mm_loadu_si128(p), *s));
        }
    }
    rest.copy_from_slice(&buf[..rest.len()]);
    let full = rest.len() / 16 * 16;
    if full < rest.len()
        && let Some(s) = ks.get(full / 16)
    {
        // SAFETY: `tail` is 16 writable bytes; storeu has no alignment need.
        unsafe { _mm_storeu_si128(tail.as_mut_ptr().cast(), *s) };
    }
}

/// Encrypt `N` vectors of 4 counter blocks from `ctr` (wrapping mod 2^128).
#[inline]
#[target_feature(enable = "aes,vaes,avx512f,avx512bw")]
fn keystream512<const N: usize>(k: &[__m512i; 11], ctr: u128) -> [__m512i; N] {
    let bswap = _mm512_broadcast_i32x4(bswap128());
    let lo = ctr as u64;
    let hi = (ctr >> 64) as u64;
    let blocks = 4 * N as u64;
    let mut b: [__m512i; N] = if lo <= u64::MAX - (blocks - 1) {
        // No carry into the high qword: lane j of vector i is ctr + 4i + j.
        // _mm512_set_epi64 lists qwords from the top: (hi, lo) per lane.
        let base = _mm512_add_epi64(
            _mm512_broadcast_i32x4(_mm_set_epi64x(hi as i64, lo as i64)),
            _mm512_set_epi64(0, 3, 0, 2, 0, 1, 0, 0),
        );
        let step = _mm512_set_epi64(0, 4, 0, 4, 0, 4, 0, 4);
        let mut v = base;
        core::array::from_fn(|_| {
            let cur = v;
            v = _mm512_add_epi64(v, step);
            cur
        })
    } else {
        core::array::from_fn(|i| {
            let c = |j: u64| ctr.wrapping_add(u128::from(4 * i as u64 + j));
            let (c0, c1, c2, c3) = (c(0), c(1), c(2), c(3));
            _mm512_set_epi64(
                (c3 >> 64) as i64,
                c3 as i64,
                (c2 >> 64) as i64,
                c2 as i64,
                (c1 >> 64) as i64,
                c1 as i64,
                (c0 >> 64) as i64,
                c0 as i64,
            )
        })
    };
    for x in b.iter_mut() {
        *x = _mm512_xor_si512(_mm512_shuffle_epi8(*x, bswap), k[0]);
    }
    for rk in &k[1..10] {
        for x in b.iter_mut() {
            *x = _mm512_aesenc_epi128(*x, *rk);
        }
    }
    for x in b.iter_mut() {
        *x = _mm512_aesenclast_epi128(*x, k[10]);
    }
    b
}

/// One batch of up to `N` vectors (64 bytes each) over `data`, which is at
/// most `64 * N` bytes; see [`xor_vaes512`] for `tail`.
#[inline]
#[target_feature(enable = "aes,vaes,avx512f,avx512bw")]
fn batch512<const N: usize>(k: &[__m512i; 11], ctr: u128, data: &mut [u8], tail: &mut [u8; 16]) {
    let ks = keystream512::<N>(k, ctr);
    let len = data.len();
    let p = data.as_mut_ptr();
    for (i, s) in ks.iter().enumerate() {
        let start = 64 * i;
        if start >= len {
            break;
        }
        let n = len - start;
        if n >= 64 {
            // SAFETY: bytes start..start+64 are inside `data`.
            unsafe {
                let q = p.add(start).cast::<__m512i>();
                _mm512_storeu_si512(q, _mm512_xor_si512(_mm512_loadu_si512(q), *s));
            }
        } else {
            let m: u64 = (1u64 << n) - 1;
            // SAFETY: the mask covers bytes start..len only, all inside
            // `data`; masked-off bytes are neither read nor written.
            unsafe {
                let q = p.add(start).cast::<i8>();
                let d = _mm512_maskz_loadu_epi8(m, q);
                _mm512_mask_storeu_epi8(q, m, _mm512_xor_si512(d, *s));
            }
        }
    }
    if !len.is_multiple_of(16) {
        let blk = len / 16;
        let mut v = [0u8; 64];
        if let Some(s) = ks.get(blk / 4) {
            // SAFETY: `v` is 64 writable bytes; storeu has no alignment need.
            unsafe { _mm512_storeu_si512(v.as_mut_ptr().cast(), *s) };
        }
        let off = 16 * (blk % 4);
        tail.copy_from_slice(&v[off..off + 16]);
    }
}

/// [`xor_aesni`] with VAES-512: 32 blocks (512 bytes) per round trip, and a
/// last batch as narrow as the remainder allows.
#[target_feature(enable = "aes,vaes,avx512f,avx512bw")]
pub(super) fn xor_vaes512(rk: &RoundKeys, mut ctr: u128, data: &mut [u8], tail: &mut [u8; 16]) {
    let k: [__m512i; 11] = core::array::from_fn(|i| {
        // SAFETY: each round key is 16 readable bytes; loadu has no alignment need.
        _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(rk[i].as_ptr().cast()) })
    });
    let mut chunks = data.chunks_exact_mut(512);
    for chunk in &mut chunks {
        batch512::<8>(&k, ctr, chunk, tail);
        ctr = ctr.wrapping_add(32);
    }
    let rest = chunks.into_remainder();
    match rest.len() {
        0 => {}
        1..=64 => batch512::<1>(&k, ctr, rest, tail),
        65..=128 => batch512::<2>(&k, ctr, rest, tail),
        129..=256 => batch512::<4>(&k, ctr, rest, tail),
        _ => batch512::<8>(&k, ctr, rest, tail),
    }
}

/// Encrypt 8 vectors of 2 counter blocks from `ctr` (wrapping mod 2^128).
#[inline]
#[target_feature(enable = "aes,vaes,avx2")]
fn keystream256(k: &[__m256i; 11], ctr: u128) -> [__m256i; 8] {
    let bswap = _mm256_broadcastsi128_si256(bswap128());
    let lo = ctr as u64;
    let hi = (ctr >> 64) as u64;
    let mut b: [__m256i; 8] = if lo <= u64::MAX - 15 {
        // No carry into the high qword: lane j of vector i is ctr + 2i + j.
        // _mm256_set_epi64x lists qwords from the top: (hi, lo) per lane.
        let base = _mm256_add_epi64(
            _mm256_broadcastsi128_si256(_mm_set_epi64x(hi as i64, lo as i64)),
            _mm256_set_epi64x(0, 1, 0, 0),
        );
        let step = _mm256_set_epi64x(0, 2, 0, 2);
        let mut v = base;
        core::array::from_fn(|_| {
            let cur = v;
            v = _mm256_add_epi64(v, step);
            cur
        })
    } else {
        core::array::from_fn(|i| {
            let c0 = ctr.wrapping_add(2 * i as u128);
            let c1 = c0.wrapping_add(1);
            _mm256_set_epi64x((c1 >> 64) as i64, c1 as i64, (c0 >> 64) as i64, c0 as i64)
        })
    };
    for x in b.iter_mut() {
        *x = _mm256_xor_si256(_mm256_shuffle_epi8(*x, bswap), k[0]);
    }
    for rk in &k[1..10] {
        for x in b.iter_mut() {
            *x = _mm256_aesenc_epi128(*x, *rk);
        }
    }
    for x in b.iter_mut() {
        *x = _mm256_aesenclast_epi128(*x, k[10]);
    }
    b
}

/// XOR 16 blocks of keystream from `ctr` into the 256-byte `chunk`.
#[inline]
#[target_feature(enable = "aes,vaes,avx2")]
fn xor256(k: &[__m256i; 11], ctr: u128, chunk: &mut [u8; 256]) -> [__m256i; 8] {
    let ks = keystream256(k, ctr);
    for (i, s) in ks.iter().enumerate() {
        // SAFETY: vector i of a 256-byte chunk is bytes 32i..32i+32 of it.
        unsafe {
            let p = chunk.as_mut_ptr().add(32 * i).cast::<__m256i>();
            _mm256_storeu_si256(p, _mm256_xor_si256(_mm256_loadu_si256(p), *s));
        }
    }
    ks
}

/// [`xor_aesni`] with VAES-256: 16 blocks (256 bytes) per round trip.
#[target_feature(enable = "aes,vaes,avx2")]
pub(super) fn xor_vaes256(rk: &RoundKeys, mut ctr: u128, data: &mut [u8], tail: &mut [u8; 16]) {
    let k: [__m256i; 11] = core::array::from_fn(|i| {
        // SAFETY: each round key is 16 readable bytes; loadu has no alignment need.
        _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(rk[i].as_ptr().cast()) })
    });
    let (chunks, rest) = data.as_chunks_mut::<256>();
    for chunk in chunks {
        xor256(&k, ctr, chunk);
        ctr = ctr.wrapping_add(16);
    }
    if rest.is_empty() {
        return;
    }
    if rest.len() <= 128 {
        // Up to 8 blocks: the AES-NI batch has the same latency, half the work.
        xor_aesni(rk, ctr, rest, tail);
        return;
    }
    // A zero-padded copy; the padding comes back as bare keystream, the
    // tail block's among it.
    let mut buf = [0u8; 256];
    buf[..rest.len()].copy_from_slice(rest);
    let full = rest.len() / 16 * 16;
    let mut plain = [0u8; 16];
    plain[..rest.len() - full].copy_from_slice(&rest[full..]);
    xor256(&k, ctr, &mut buf);
    rest.copy_from_slice(&buf[..rest.len()]);
    if full < rest.len() {
        // The last block's keystream: data XOR output, then bare padding.
        tail.copy_from_slice(&buf[full..full + 16]);
        for (t, p) in tail.iter_mut().zip(plain) {
            *t ^= p;
        }
    }
}
