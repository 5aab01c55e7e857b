//! A mirror of C tor's `src/test/bench.c` `bench_cell_ops`
//! (perf-anchors.md §1.5): 65,536 iterations over a random 509-byte payload
//! processed in place, timed with CLOCK_PROCESS_CPUTIME_ID, reported as ns
//! per cell and ns per byte of payload. Besides C tor's two middle cases it
//! measures the exit cases C tor's bench leaves out, and batched forms (8 and
//! 31 cells of one circuit per call).
//!
//! The headline figures are printed by a fixed 65,536-iteration pass per
//! case (exactly C tor's method); criterion then measures the same bodies
//! with `iter_custom` on the same clock.
//!
//! C tor reference on a Sapphire Rapids VM: 74 ns per cell middle, ≈385 ns
//! per cell exit (recognized or originated); on an AMD EPYC (VAES), C tor
//! 92 / 465 / 438 ns (middle / exit recognized / exit originate) against
//! oxit's fused VAES-512 CTR 27 / 382 / 355 (bench/ctor_cell_ops.sh).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use oxit::crypto::cgo::{CGO_KEY_MATERIAL_LEN, CgoClientHop, CgoRelayCrypto};
use oxit::crypto::tor1::{
    CELL_BODY_LEN, CellBody, SendmeTag, Tor1Batch, Tor1ClientLayer, Tor1RelayCrypto,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// C tor: `iters = 1<<16`.
const ITERS: u64 = 1 << 16;

fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn keys(rng: &mut StdRng) -> [u8; 72] {
    let mut k = [0u8; 72];
    rng.fill_bytes(&mut k);
    k
}

fn random_cell(rng: &mut StdRng) -> CellBody {
    let mut c = [0u8; CELL_BODY_LEN];
    rng.fill_bytes(&mut c);
    c
}

/// A case: given a number of cells, prepare state outside the clock and
/// return the CPU time spent processing exactly that many cells.
type Case = fn(u64) -> Duration;

/// Middle, toward the client (C tor "Inbound"): AES-CTR only.
fn middle_inbound(n: u64) -> Duration {
    let mut rng = StdRng::seed_from_u64(1);
    let mut relay = Tor1RelayCrypto::new(&keys(&mut rng));
    let mut cell = random_cell(&mut rng);
    let t = cpu_time();
    for _ in 0..n {
        relay.encrypt_backward(black_box(&mut cell));
    }
    cpu_time() - t
}

/// Middle, away from the client (C tor "Outbound"): AES-CTR + recognized
/// check on a pseudo-random payload, so almost never recognized.
fn middle_outbound(n: u64) -> Duration {
    let mut rng = StdRng::seed_from_u64(2);
    let mut relay = Tor1RelayCrypto::new(&keys(&mut rng));
    let mut cell = random_cell(&mut rng);
    let t = cpu_time();
    for _ in 0..n {
        black_box(relay.decrypt_forward(black_box(&mut cell)));
    }
    cpu_time() - t
}

/// Exit receiving a recognized cell: AES-CTR + checkpoint + SHA-1(509) +
/// 4-byte compare. Cells are prepared (untimed) in chunks of at most
/// `ITERS` so long criterion runs do not need gigabytes.
fn exit_recognized(n: u64) -> Duration {
    recognized_batches::<1>(n, 3)
}

/// Recognized cells in `B`-cell calls; chunks of prepared cells bound memory.
fn recognized_batches<const B: usize>(n: u64, seed: u64) -> Duration {
    let mut rng = StdRng::seed_from_u64(seed);
    let k = keys(&mut rng);
    let mut relay = Tor1RelayCrypto::new(&k);
    let mut client = Tor1ClientLayer::new(&k);
    let mut rec = [None; B];
    let mut total = Duration::ZERO;
    let mut left = n.div_ceil(B as u64) * B as u64;
    while left > 0 {
        let m = left.min(ITERS / B as u64 * B as u64);
        left -= m;
        let mut cells: Vec<CellBody> = (0..m)
            .map(|_| {
                let mut c = random_cell(&mut rng);
                client.originate_forward(&mut c);
                c
            })
            .collect();
        let t = cpu_time();
        for chunk in cells.chunks_mut(B) {
            let mut refs: [&mut CellBody; B] = {
                let mut it = chunk.iter_mut();
                std::array::from_fn(|_| it.next().expect("chunk of B cells"))
            };
            relay.decrypt_forward_batch(&mut refs, &mut rec);
            black_box(&rec);
        }
        total += cpu_time() - t;
        debug_assert!(rec.iter().all(Option::is_some));
    }
    assert!(
        rec.iter().all(Option::is_some),
        "prepared cells must be recognized"
    );
    total
}

/// Exit originating a cell: set digest (SHA-1(509)) + AES-CTR.
fn exit_originate(n: u64) -> Duration {
    let mut rng = StdRng::seed_from_u64(4);
    let mut relay = Tor1RelayCrypto::new(&keys(&mut rng));
    let mut cell = random_cell(&mut rng);
    let t = cpu_time();
    for _ in 0..n {
        black_box(relay.originate_backward(black_box(&mut cell)));
    }
    cpu_time() - t
}

/// Run `per_call`-cell batches until `n` cells are processed.
fn batched<const B: usize>(n: u64, kind: u8) -> Duration {
    let mut rng = StdRng::seed_from_u64(5 + u64::from(kind));
    let mut relay = Tor1RelayCrypto::new(&keys(&mut rng));
    let calls = n.div_ceil(B as u64);
    let mut tags = [SendmeTag::default(); B];
    let mut rec = [None; B];
    match kind {
        // Recognized at the exit: cells prepared by the client.
        2 => recognized_batches::<B>(n, 5),
        _ => {
            let mut buf: Vec<CellBody> = (0..B).map(|_| random_cell(&mut rng)).collect();
            let t = cpu_time();
            for _ in 0..calls {
                let mut refs: [&mut CellBody; B] = {
                    let mut it = buf.iter_mut();
                    std::array::from_fn(|_| it.next().expect("B cells"))
                };
                match kind {
                    0 => relay.encrypt_backward_batch(&mut refs),
                    1 => relay.decrypt_forward_batch(&mut refs, &mut rec),
                    _ => relay.originate_backward_batch(&mut refs, &mut tags),
                }
                black_box(&refs);
            }
            cpu_time() - t
        }
    }
}

/// The exit sealing `B` cells on each of `C` circuits per call
/// (`originate_backward_many`): what a worker does with one turn's reads
/// from many streams. Counted per cell.
fn many<const C: usize, const B: usize>(n: u64) -> Duration {
    let mut rng = StdRng::seed_from_u64(40 + C as u64 * 100 + B as u64);
    let mut relays: Vec<Tor1RelayCrypto> = (0..C)
        .map(|_| Tor1RelayCrypto::new(&keys(&mut rng)))
        .collect();
    let mut buf: Vec<CellBody> = (0..C * B).map(|_| random_cell(&mut rng)).collect();
    let groups: Vec<std::ops::Range<usize>> = (0..C).map(|c| c * B..(c + 1) * B).collect();
    let mut tags = vec![SendmeTag::default(); C * B];
    let mut batch = Tor1Batch::default();
    let calls = n.div_ceil((C * B) as u64);
    let t = cpu_time();
    for _ in 0..calls {
        let mut refs: Vec<&mut CellBody> = buf.iter_mut().collect();
        let mut circs: Vec<&mut Tor1RelayCrypto> = relays.iter_mut().collect();
        Tor1RelayCrypto::originate_backward_many(
            &mut batch, &mut circs, &groups, &mut refs, &mut tags,
        );
        black_box(&tags);
    }
    let d = cpu_time() - t;
    // Per cell of the `n` asked for, though the last call may do more.
    d * u32::try_from(n).unwrap_or(u32::MAX) / u32::try_from(calls * (C * B) as u64).unwrap_or(1)
}

/// The exit checking `B` recognized cells on each of `C` circuits per call
/// (`decrypt_forward_many`), cells prepared by each circuit's client in
/// chunks outside the clock. Counted per cell.
fn many_recognized<const C: usize, const B: usize>(n: u64) -> Duration {
    let mut rng = StdRng::seed_from_u64(70 + C as u64 * 100 + B as u64);
    let ks: Vec<[u8; 72]> = (0..C).map(|_| keys(&mut rng)).collect();
    let mut relays: Vec<Tor1RelayCrypto> = ks.iter().map(Tor1RelayCrypto::new).collect();
    let mut clients: Vec<Tor1ClientLayer> = ks.iter().map(Tor1ClientLayer::new).collect();
    let groups: Vec<std::ops::Range<usize>> = (0..C).map(|c| c * B..(c + 1) * B).collect();
    let mut rec = vec![None; C * B];
    let mut batch = Tor1Batch::default();
    let per_call = (C * B) as u64;
    let calls = n.div_ceil(per_call);
    let chunk_calls = (ITERS / per_call).max(1);
    let mut total = Duration::ZERO;
    let mut left = calls;
    while left > 0 {
        let m = left.min(chunk_calls);
        left -= m;
        // Call-major, circuit, then cell: each circuit's cells in order.
        let mut cells: Vec<CellBody> = (0..m * per_call)
            .map(|k| {
                let c = (k % per_call) as usize / B;
                let mut cell = random_cell(&mut rng);
                clients[c].originate_forward(&mut cell);
                cell
            })
            .collect();
        let t = cpu_time();
        for call in cells.chunks_mut(C * B) {
            let mut refs: Vec<&mut CellBody> = call.iter_mut().collect();
            let mut circs: Vec<&mut Tor1RelayCrypto> = relays.iter_mut().collect();
            Tor1RelayCrypto::decrypt_forward_many(
                &mut batch, &mut circs, &groups, &mut refs, &mut rec,
            );
            black_box(&rec);
        }
        total += cpu_time() - t;
    }
    assert!(
        rec.iter().all(Option::is_some),
        "prepared cells must be recognized"
    );
    total * u32::try_from(n).unwrap_or(u32::MAX) / u32::try_from(calls * per_call).unwrap_or(1)
}

fn cgo_keys(rng: &mut StdRng) -> [u8; CGO_KEY_MATERIAL_LEN] {
    let mut k = [0u8; CGO_KEY_MATERIAL_LEN];
    rng.fill_bytes(&mut k);
    k
}

/// CGO at a middle, away from the client (C tor `cell_ops_cgo` "CGO
/// outbound at relay"): UIV+ and the tag check, never recognized.
fn cgo_middle_outbound(n: u64) -> Duration {
    let mut rng = StdRng::seed_from_u64(11);
    let mut relay = CgoRelayCrypto::new(&cgo_keys(&mut rng));
    let mut cell = random_cell(&mut rng);
    let t = cpu_time();
    for _ in 0..n {
        black_box(relay.decrypt_forward(3, black_box(&mut cell)));
    }
    cpu_time() - t
}

/// CGO at a middle, toward the client ("CGO inbound at relay").
fn cgo_middle_inbound(n: u64) -> Duration {
    let mut rng = StdRng::seed_from_u64(12);
    let mut relay = CgoRelayCrypto::new(&cgo_keys(&mut rng));
    let mut cell = random_cell(&mut rng);
    let t = cpu_time();
    for _ in 0..n {
        relay.relay_backward(3, black_box(&mut cell));
    }
    cpu_time() - t
}

/// CGO at the exit, originating ("CGO originate at relay"): UIV+ and the
/// key update after every cell.
fn cgo_exit_originate(n: u64) -> Duration {
    let mut rng = StdRng::seed_from_u64(13);
    let mut relay = CgoRelayCrypto::new(&cgo_keys(&mut rng));
    let mut cell = random_cell(&mut rng);
    let t = cpu_time();
    for _ in 0..n {
        black_box(relay.originate_backward(black_box(&mut cell)));
    }
    cpu_time() - t
}

/// CGO at the exit, receiving a recognized cell (C tor's bench has no such
/// case): cells prepared by the client outside the clock.
fn cgo_exit_recognized(n: u64) -> Duration {
    let mut rng = StdRng::seed_from_u64(14);
    let k = cgo_keys(&mut rng);
    let mut relay = CgoRelayCrypto::new(&k);
    let mut client = CgoClientHop::new(&k);
    let mut total = Duration::ZERO;
    let mut left = n;
    while left > 0 {
        let m = left.min(ITERS);
        left -= m;
        let mut cells: Vec<CellBody> = (0..m)
            .map(|_| {
                let mut c = random_cell(&mut rng);
                client.originate_forward(3, &mut c);
                c
            })
            .collect();
        let t = cpu_time();
        for c in &mut cells {
            assert!(relay.decrypt_forward(3, c).is_some());
        }
        total += cpu_time() - t;
    }
    total
}

fn cases() -> Vec<(&'static str, Case)> {
    vec![
        ("middle inbound (AES only)", middle_inbound),
        ("middle outbound (AES + recognized check)", middle_outbound),
        ("exit outbound recognized (AES + SHA-1)", exit_recognized),
        ("exit inbound originate (SHA-1 + AES)", exit_originate),
        ("batch8 middle inbound", |n| batched::<8>(n, 0)),
        ("batch8 middle outbound", |n| batched::<8>(n, 1)),
        ("batch8 exit recognized", |n| batched::<8>(n, 2)),
        ("batch8 exit originate", |n| batched::<8>(n, 3)),
        ("batch31 middle inbound", |n| batched::<31>(n, 0)),
        ("batch31 middle outbound", |n| batched::<31>(n, 1)),
        ("batch31 exit recognized", |n| batched::<31>(n, 2)),
        ("batch31 exit originate", |n| batched::<31>(n, 3)),
        ("1 circuit x 31 cells exit originate", many::<1, 31>),
        ("8 circuits x 1 cell exit originate", many::<8, 1>),
        ("8 circuits x 8 cells exit originate", many::<8, 8>),
        ("32 circuits x 4 cells exit originate", many::<32, 4>),
        (
            "8 circuits x 8 cells exit recognized",
            many_recognized::<8, 8>,
        ),
        (
            "32 circuits x 4 cells exit recognized",
            many_recognized::<32, 4>,
        ),
        ("CGO middle outbound (forward)", cgo_middle_outbound),
        ("CGO middle inbound (backward)", cgo_middle_inbound),
        ("CGO exit originate", cgo_exit_originate),
        ("CGO exit recognized", cgo_exit_recognized),
    ]
}

/// SHA-1 over 509 bytes alone (running digest, as C tor's 237 ns anchor).
fn sha1_alone() -> Duration {
    use sha1::{Digest, Sha1};
    let mut rng = StdRng::seed_from_u64(9);
    let cell = random_cell(&mut rng);
    let mut h = Sha1::new();
    let t = cpu_time();
    for _ in 0..ITERS {
        h.update(black_box(&cell[..]));
    }
    let d = cpu_time() - t;
    black_box(h.finalize());
    d
}

/// The AES-CTR kernel tor1 picks on this CPU (the order of
/// `crypto/tor1/ctr.rs` `Backend::detect`), for the record of a run.
fn aes_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        let aesni = is_x86_feature_detected!("aes") && is_x86_feature_detected!("ssse3");
        if aesni
            && is_x86_feature_detected!("vaes")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
        {
            return "fused VAES-512";
        }
        if aesni && is_x86_feature_detected!("vaes") && is_x86_feature_detected!("avx2") {
            return "fused VAES-256";
        }
        if aesni {
            return "fused AES-NI";
        }
    }
    if aes::hardware_accelerated() {
        "aes crate (hardware)"
    } else {
        "aes crate (software)"
    }
}

fn report(name: &str, d: Duration, cells: u64) {
    let ns = d.as_nanos() as f64 / cells as f64;
    let line = format!(
        "{name:>44}: {ns:8.2} ns per cell. ({:.3} ns per byte of payload)",
        ns / CELL_BODY_LEN as f64
    );
    println!("{line}");
    eprintln!("{line}");
}

fn cell_ops(c: &mut Criterion) {
    println!(
        "cell_ops: {ITERS} iterations, CLOCK_PROCESS_CPUTIME_ID, AES-CTR kernel here: {}",
        aes_kernel()
    );
    // CELL_OPS_ONLY=text runs the cases whose name holds it (for profiling).
    let only = std::env::var("CELL_OPS_ONLY").unwrap_or_default();
    for (name, case) in cases().into_iter().filter(|(n, _)| n.contains(&only)) {
        // One warm-up pass, then the measured pass, like C tor's loop.
        case(ITERS / 16);
        report(name, case(ITERS), ITERS);
    }
    report("SHA-1 update(509) alone", sha1_alone(), ITERS);

    let mut g = c.benchmark_group("cell_ops");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(2));
    for (name, case) in cases() {
        g.bench_function(name, |b| b.iter_custom(case));
    }
    g.finish();
}

criterion_group!(benches, cell_ops);
criterion_main!(benches);
