//! Every backend against the `ctr` crate's Ctr128BE (and against each other
//! where Ctr128BE stops: the 2^128 wrap), over many call splits and
//! starting counters that cross the 2^32 and 2^64 counter-word carries.

use super::portable::KS_BYTES;
use super::*;
use aes::Aes128;
use ctr::Ctr128BE;
use ctr::cipher::{KeyIvInit, StreamCipher};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

/// Every backend this CPU runs, the portable one (fast path off) first.
fn backends() -> Vec<Backend> {
    let all = [
        Backend::Portable,
        #[cfg(target_arch = "x86_64")]
        Backend::AesNi,
        #[cfg(target_arch = "x86_64")]
        Backend::Vaes256,
        #[cfg(target_arch = "x86_64")]
        Backend::Vaes512,
    ];
    all.into_iter().filter(|b| b.available()).collect()
}

fn reference(key: &[u8; 16], counter: u128) -> Ctr128BE<Aes128> {
    Ctr128BE::<Aes128>::new(key.into(), &counter.to_be_bytes().into())
}

/// Run `lens` as successive calls on `backend` and on Ctr128BE.
fn check_splits(backend: Backend, key: &[u8; 16], counter: u128, lens: &[usize]) {
    let mut ours = Aes128CtrStream::with_backend(key, counter, backend);
    assert_eq!(ours.backend(), backend);
    let mut theirs = reference(key, counter);
    let mut pos = 0usize;
    for &len in lens {
        let mut a: Vec<u8> = (0..len).map(|i| (i * 7 + pos) as u8).collect();
        let mut b = a.clone();
        ours.apply(&mut a);
        theirs.apply_keystream(&mut b);
        assert_eq!(
            a, b,
            "{backend:?}, counter {counter:#x}, call of {len} at byte {pos}"
        );
        pos += len;
    }
}

/// Lengths that hit every path: empty, inside one block, block edges, a
/// cell, batch edges of each kernel (8 and 32 blocks) and the portable
/// buffer's size.
const EDGE_LENS: &[usize] = &[
    0,
    1,
    15,
    16,
    17,
    509,
    1018,
    2000,
    3,
    509,
    127,
    128,
    129,
    255,
    256,
    257,
    511,
    512,
    513,
    64 * 16 + 5,
    KS_BYTES,
    KS_BYTES * 3 + 1,
    509 * 31,
    13,
    64,
    65,
    63,
];

#[test]
fn matches_ctr_crate_from_zero() {
    for b in backends() {
        check_splits(b, &[7u8; 16], 0, EDGE_LENS);
    }
}

/// Cells of a circuit, one per call, as tor1 uses the stream.
#[test]
fn matches_ctr_crate_cell_by_cell() {
    for b in backends() {
        check_splits(b, &[0x5a; 16], 0, &[509; 40]);
    }
}

/// Carries out of the low 32 bits (where a 32-bit-counter CTR would go
/// wrong) and out of the low 64 bits (where the kernels' one-add counter
/// step must give way), each approached from several distances so that the
/// carry falls at every position within a batch.
#[test]
fn matches_ctr_crate_across_counter_carries() {
    let key: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
    for b in backends() {
        for base in [1u128 << 32, 1u128 << 64, 1u128 << 96, 0xffff_ffffu128 << 64] {
            for back in [1u128, 3, 7, 8, 9, 31, 32, 33, 40] {
                let counter = base - back;
                check_splits(b, &key, counter, &[509, 509, 3, 16, 700, 1, 2048]);
                check_splits(b, &key, counter, &[1, 512, 513, 64]);
            }
        }
    }
}

/// Random lengths (0..1200) over a long stream, fixed seed.
#[test]
fn matches_ctr_crate_random_splits() {
    let mut rng = StdRng::seed_from_u64(0x0a35);
    for b in backends() {
        for round in 0..4 {
            let mut key = [0u8; 16];
            rng.fill_bytes(&mut key);
            let counter = match round {
                0 => 0,
                1 => (1u128 << 64) - 100,
                2 => (1u128 << 32) - 100,
                _ => u128::from(rng.next_u64()),
            };
            let lens: Vec<usize> = (0..60).map(|_| rng.random_range(0..1200)).collect();
            check_splits(b, &key, counter, &lens);
        }
    }
}

/// Across the 2^128 wrap (Ctr128BE stops there; tor1 never gets near it):
/// every backend wraps to counter 0 as the portable one does, and
/// continues with the stream that starts at 0.
#[test]
fn backends_agree_across_counter_wrap() {
    let key = [0xc3u8; 16];
    let start = u128::MAX - 20;
    let lens = [509usize, 1, 100, 509, 2000];
    let total: usize = lens.iter().sum();
    let mut want = vec![0u8; total];
    {
        let mut p = Aes128CtrStream::with_backend(&key, start, Backend::Portable);
        p.apply(&mut want);
        // Block 21 onwards is the stream from counter 0.
        let mut from_zero = vec![0u8; total - 21 * 16];
        reference(&key, 0).apply_keystream(&mut from_zero);
        assert_eq!(want.get(21 * 16..), Some(&from_zero[..]));
    }
    for b in backends() {
        let mut s = Aes128CtrStream::with_backend(&key, start, b);
        let mut got = vec![0u8; total];
        let mut at = 0;
        for len in lens {
            s.apply(&mut got[at..at + len]);
            at += len;
        }
        assert_eq!(got, want, "{b:?}");
    }
}

/// `new` takes the fastest backend this CPU runs.
#[test]
fn new_uses_detected_backend() {
    let s = Aes128CtrStream::new(&[1u8; 16]);
    assert_eq!(s.backend(), Backend::detect());
    assert!(Backend::detect().available());
    eprintln!("detected AES-CTR backend: {:?}", Backend::detect());
}
