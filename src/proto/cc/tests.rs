//! Vegas against C tor 0.4.9's own test vectors
//! (src/test/test_congestion_control.c: the clock heuristic, the RTT and
//! EWMA vector, and the four cwnd traces, the last two from real uploads),
//! run the way C runs them: every timestamp queued first, then one SENDME
//! per step with inflight set from the vector.

use super::*;

struct Step {
    sent: u64,
    got: u64,
    blocked: bool,
    inflight: u64,
    ewma: u64,
    min: u64,
    cwnd: u64,
    ss: bool,
    full: bool,
    blocked_chan: bool,
}

fn run(name: &str, steps: &[Step]) -> CcStats {
    let mut v = Vegas::new(&CcParams::default());
    let mut clock = ClockHealth::default();
    let mut stats = CcStats::default();
    v.sent_at = steps.iter().map(|s| s.sent).collect();
    for (i, s) in steps.iter().enumerate() {
        v.inflight = s.inflight;
        let link = LinkState {
            blocked: s.blocked,
            queued_cells: 0,
        };
        v.on_sendme(s.got, link, &mut clock, &mut stats);
        let got = (
            v.ewma_rtt_usec,
            v.min_rtt_usec,
            v.cwnd,
            v.in_slow_start,
            v.cwnd_full,
            v.blocked_chan,
        );
        let want = (s.ewma, s.min, s.cwnd, s.ss, s.full, s.blocked_chan);
        assert_eq!(
            got, want,
            "{name} step {i}: (ewma, min, cwnd, ss, full, blocked)"
        );
        assert_eq!(v.inflight, s.inflight - 31, "{name} step {i}: inflight");
    }
    // Every steady-state update feeds the three signal percentages and
    // the queue and BDP averages once (congestion_control_vegas.c).
    let n = stats.csig_alpha.n;
    for r in [stats.csig_beta, stats.csig_delta, stats.queue, stats.bdp] {
        assert_eq!(r.n, n, "{name}: steady-state averages move together");
    }
    stats
}

#[rustfmt::skip]
const VECT1: &[Step] = &[
    Step { sent: 100000, got: 200000, blocked: false, inflight: 124, ewma: 100000, min: 100000, cwnd: 155, ss: true, full: false, blocked_chan: false },
    Step { sent: 200000, got: 300000, blocked: false, inflight: 155, ewma: 100000, min: 100000, cwnd: 186, ss: true, full: true, blocked_chan: false },
    Step { sent: 350000, got: 500000, blocked: false, inflight: 186, ewma: 133333, min: 100000, cwnd: 217, ss: true, full: true, blocked_chan: false },
    Step { sent: 500000, got: 550000, blocked: false, inflight: 217, ewma: 77777, min: 77777, cwnd: 248, ss: true, full: true, blocked_chan: false },
    Step { sent: 600000, got: 700000, blocked: false, inflight: 248, ewma: 92592, min: 77777, cwnd: 279, ss: true, full: true, blocked_chan: false },
    Step { sent: 700000, got: 750000, blocked: false, inflight: 279, ewma: 64197, min: 64197, cwnd: 310, ss: true, full: false, blocked_chan: false },
    Step { sent: 750000, got: 875000, blocked: false, inflight: 310, ewma: 104732, min: 64197, cwnd: 341, ss: true, full: true, blocked_chan: false },
    Step { sent: 875000, got: 900000, blocked: false, inflight: 341, ewma: 51577, min: 51577, cwnd: 372, ss: true, full: true, blocked_chan: false },
    Step { sent: 900000, got: 950000, blocked: false, inflight: 279, ewma: 50525, min: 50525, cwnd: 403, ss: true, full: true, blocked_chan: false },
    Step { sent: 950000, got: 1000000, blocked: false, inflight: 279, ewma: 50175, min: 50175, cwnd: 434, ss: true, full: true, blocked_chan: false },
    Step { sent: 1000000, got: 1050000, blocked: false, inflight: 279, ewma: 50058, min: 50058, cwnd: 465, ss: true, full: true, blocked_chan: false },
    Step { sent: 1050000, got: 1100000, blocked: false, inflight: 279, ewma: 50019, min: 50019, cwnd: 496, ss: true, full: true, blocked_chan: false },
    Step { sent: 1100000, got: 1150000, blocked: false, inflight: 279, ewma: 50006, min: 50006, cwnd: 527, ss: true, full: true, blocked_chan: false },
    Step { sent: 1150000, got: 1200000, blocked: false, inflight: 279, ewma: 50002, min: 50002, cwnd: 558, ss: true, full: true, blocked_chan: false },
    Step { sent: 1200000, got: 1250000, blocked: false, inflight: 550, ewma: 50000, min: 50000, cwnd: 589, ss: true, full: true, blocked_chan: false },
    Step { sent: 1250000, got: 1300000, blocked: false, inflight: 550, ewma: 50000, min: 50000, cwnd: 620, ss: true, full: false, blocked_chan: false },
    Step { sent: 1300000, got: 1350000, blocked: false, inflight: 550, ewma: 50000, min: 50000, cwnd: 635, ss: true, full: true, blocked_chan: false },
    Step { sent: 1350000, got: 1400000, blocked: false, inflight: 550, ewma: 50000, min: 50000, cwnd: 650, ss: true, full: true, blocked_chan: false },
    Step { sent: 1400000, got: 1450000, blocked: false, inflight: 150, ewma: 50000, min: 50000, cwnd: 650, ss: true, full: false, blocked_chan: false },
    Step { sent: 1450000, got: 1500000, blocked: false, inflight: 150, ewma: 50000, min: 50000, cwnd: 650, ss: true, full: false, blocked_chan: false },
    Step { sent: 1500000, got: 1550000, blocked: false, inflight: 550, ewma: 50000, min: 50000, cwnd: 664, ss: true, full: true, blocked_chan: false },
    Step { sent: 1500000, got: 1600000, blocked: false, inflight: 550, ewma: 83333, min: 50000, cwnd: 584, ss: false, full: true, blocked_chan: false },
    Step { sent: 1600000, got: 1650000, blocked: false, inflight: 550, ewma: 61111, min: 50000, cwnd: 585, ss: false, full: true, blocked_chan: false },
    Step { sent: 1650000, got: 1700000, blocked: false, inflight: 550, ewma: 53703, min: 50000, cwnd: 586, ss: false, full: true, blocked_chan: false },
    Step { sent: 1700000, got: 1750000, blocked: false, inflight: 100, ewma: 51234, min: 50000, cwnd: 586, ss: false, full: false, blocked_chan: false },
    Step { sent: 1750000, got: 1900000, blocked: false, inflight: 100, ewma: 117078, min: 50000, cwnd: 559, ss: false, full: false, blocked_chan: false },
    Step { sent: 1900000, got: 2000000, blocked: false, inflight: 100, ewma: 105692, min: 50000, cwnd: 558, ss: false, full: false, blocked_chan: false },
    Step { sent: 2000000, got: 2075000, blocked: false, inflight: 500, ewma: 85230, min: 50000, cwnd: 558, ss: false, full: true, blocked_chan: false },
    Step { sent: 2075000, got: 2125000, blocked: true, inflight: 500, ewma: 61743, min: 50000, cwnd: 557, ss: false, full: true, blocked_chan: true },
    Step { sent: 2125000, got: 2150000, blocked: false, inflight: 500, ewma: 37247, min: 37247, cwnd: 558, ss: false, full: true, blocked_chan: false },
    Step { sent: 2150000, got: 2350000, blocked: false, inflight: 500, ewma: 145749, min: 37247, cwnd: 451, ss: false, full: true, blocked_chan: false },
];

#[rustfmt::skip]
const VECT2: &[Step] = &[
    Step { sent: 100000, got: 200000, blocked: false, inflight: 124, ewma: 100000, min: 100000, cwnd: 155, ss: true, full: false, blocked_chan: false },
    Step { sent: 200000, got: 300000, blocked: false, inflight: 155, ewma: 100000, min: 100000, cwnd: 186, ss: true, full: true, blocked_chan: false },
    Step { sent: 350000, got: 500000, blocked: false, inflight: 186, ewma: 133333, min: 100000, cwnd: 217, ss: true, full: true, blocked_chan: false },
    Step { sent: 500000, got: 550000, blocked: true, inflight: 217, ewma: 77777, min: 77777, cwnd: 403, ss: false, full: true, blocked_chan: true },
    Step { sent: 600000, got: 700000, blocked: false, inflight: 248, ewma: 92592, min: 77777, cwnd: 404, ss: false, full: true, blocked_chan: false },
    Step { sent: 700000, got: 750000, blocked: true, inflight: 404, ewma: 64197, min: 64197, cwnd: 403, ss: false, full: false, blocked_chan: true },
    Step { sent: 750000, got: 875000, blocked: false, inflight: 403, ewma: 104732, min: 64197, cwnd: 404, ss: false, full: true, blocked_chan: false },
];

#[rustfmt::skip]
const VECT3: &[Step] = &[
    Step { sent: 18258527, got: 19002938, blocked: false, inflight: 83, ewma: 744411, min: 744411, cwnd: 155, ss: true, full: false, blocked_chan: false },
    Step { sent: 18258580, got: 19254257, blocked: false, inflight: 52, ewma: 911921, min: 744411, cwnd: 186, ss: true, full: true, blocked_chan: false },
    Step { sent: 20003224, got: 20645298, blocked: false, inflight: 164, ewma: 732023, min: 732023, cwnd: 217, ss: true, full: true, blocked_chan: false },
    Step { sent: 20003367, got: 21021444, blocked: false, inflight: 133, ewma: 922725, min: 732023, cwnd: 248, ss: true, full: true, blocked_chan: false },
    Step { sent: 20003845, got: 21265508, blocked: false, inflight: 102, ewma: 1148683, min: 732023, cwnd: 279, ss: true, full: true, blocked_chan: false },
    Step { sent: 20003975, got: 21429157, blocked: false, inflight: 71, ewma: 1333015, min: 732023, cwnd: 310, ss: true, full: false, blocked_chan: false },
    Step { sent: 20004309, got: 21707677, blocked: false, inflight: 40, ewma: 1579917, min: 732023, cwnd: 310, ss: true, full: false, blocked_chan: false },
];

#[rustfmt::skip]
const VECT4: &[Step] = &[
    Step { sent: 358297091, got: 358854163, blocked: false, inflight: 83, ewma: 557072, min: 557072, cwnd: 155, ss: true, full: false, blocked_chan: false },
    Step { sent: 358297649, got: 359123845, blocked: false, inflight: 52, ewma: 736488, min: 557072, cwnd: 186, ss: true, full: true, blocked_chan: false },
    Step { sent: 359492879, got: 359995330, blocked: false, inflight: 186, ewma: 580463, min: 557072, cwnd: 217, ss: true, full: true, blocked_chan: false },
    Step { sent: 359493043, got: 360489243, blocked: false, inflight: 217, ewma: 857621, min: 557072, cwnd: 248, ss: true, full: true, blocked_chan: false },
    Step { sent: 359493232, got: 360489673, blocked: false, inflight: 248, ewma: 950167, min: 557072, cwnd: 279, ss: true, full: true, blocked_chan: false },
    Step { sent: 359493795, got: 360489971, blocked: false, inflight: 279, ewma: 980839, min: 557072, cwnd: 310, ss: true, full: false, blocked_chan: false },
    Step { sent: 359493918, got: 360490248, blocked: false, inflight: 310, ewma: 991166, min: 557072, cwnd: 341, ss: true, full: true, blocked_chan: false },
    Step { sent: 359494029, got: 360716465, blocked: false, inflight: 341, ewma: 1145346, min: 557072, cwnd: 372, ss: true, full: true, blocked_chan: false },
    Step { sent: 359996888, got: 360948867, blocked: false, inflight: 372, ewma: 1016434, min: 557072, cwnd: 403, ss: true, full: true, blocked_chan: false },
    Step { sent: 359996979, got: 360949330, blocked: false, inflight: 403, ewma: 973712, min: 557072, cwnd: 434, ss: true, full: true, blocked_chan: false },
    Step { sent: 360489528, got: 361113615, blocked: false, inflight: 434, ewma: 740628, min: 557072, cwnd: 465, ss: true, full: true, blocked_chan: false },
    Step { sent: 360489656, got: 361281604, blocked: false, inflight: 465, ewma: 774841, min: 557072, cwnd: 496, ss: true, full: true, blocked_chan: false },
    Step { sent: 360489837, got: 361500461, blocked: false, inflight: 496, ewma: 932029, min: 557072, cwnd: 482, ss: false, full: true, blocked_chan: false },
    Step { sent: 360489963, got: 361500631, blocked: false, inflight: 482, ewma: 984455, min: 557072, cwnd: 482, ss: false, full: true, blocked_chan: false },
    Step { sent: 360490117, got: 361842481, blocked: false, inflight: 482, ewma: 1229727, min: 557072, cwnd: 481, ss: false, full: true, blocked_chan: false },
];

/// Slow start driven by RTT, the RFC 3742 cap, fullness, the gamma exit,
/// then delta, beta and alpha in the steady state.
#[test]
fn vegas_vector_1() {
    let st = run("vect1", VECT1);
    // Slow start ends once, at the gamma threshold: cwnd 664 → 584, by
    // RTT (not a blocked link).
    assert_eq!(st.exited_ss, 1);
    assert_eq!((st.gamma_drop.n, st.gamma_drop.avg), (1, 80.0));
    assert_eq!((st.ss_csig_blocked.n, st.ss_csig_blocked.avg), (1, 0.0));
    assert_eq!((st.exit_ss_cwnd.n, st.exit_ss_cwnd.avg), (1, 584.0));
    assert_eq!(st.above_ss_cwnd_max + st.below_ss_inc_floor, 0);
}

/// Slow start ended by a blocked link.
#[test]
fn vegas_vector_2() {
    let st = run("vect2", VECT2);
    assert_eq!(st.exited_ss, 1);
    // Ended by the blocked link: 100 % blocked, no gamma cut recorded.
    assert_eq!((st.ss_csig_blocked.n, st.ss_csig_blocked.avg), (1, 100.0));
    assert_eq!(st.gamma_drop.n, 0);
}

/// C's running average, and the workers' statistics merged for the
/// MetricsPort.
#[test]
fn statistics_average_and_merge() {
    let mut r = RunningAvg::default();
    for v in [100, 0, 0] {
        r.update(v);
    }
    // 100, then (2·0 + 99·100)/101, then (2·0 + 99·that)/101.
    let want = 99.0 * (99.0 * 100.0 / 101.0) / 101.0;
    assert!((r.avg - want).abs() < 1e-9, "{}", r.avg);
    // C's quirk: an average of 0 takes the next value as it is.
    let mut z = RunningAvg::default();
    z.update(0);
    z.update(40);
    assert_eq!((z.avg, z.n), (40.0, 2));

    let mut a = CcStats {
        xoff_sent: 3,
        queue: RunningAvg { avg: 10.0, n: 1 },
        ..CcStats::default()
    };
    let b = CcStats {
        xoff_sent: 4,
        queue: RunningAvg { avg: 40.0, n: 3 },
        bdp: RunningAvg { avg: 7.0, n: 2 },
        ..CcStats::default()
    };
    assert_eq!(CcStats::from_array(b.to_array()), b);
    a.add(&b);
    assert_eq!(a.xoff_sent, 7);
    // Weighted by how many values each side averaged.
    assert_eq!((a.queue.avg, a.queue.n), (32.5, 4));
    assert_eq!((a.bdp.avg, a.bdp.n), (7.0, 2));
    assert_eq!(a.exit_ss_cwnd, RunningAvg::default());
}

/// Real upload traces.
#[test]
fn vegas_vectors_3_and_4() {
    run("vect3", VECT3);
    run("vect4", VECT4);
}

#[test]
fn rtt_and_ewma() {
    // (sent, got, cwnd, in slow start) -> (rtt, ewma, min)
    #[rustfmt::skip]
    let rows: [(u64, u64, u64, bool, u64, u64, u64); 9] = [
        (100000, 200000, 124, true, 100000, 100000, 100000),
        (200000, 300000, 124, true, 100000, 100000, 100000),
        (350000, 500000, 124, true, 150000, 133333, 100000),
        (500000, 550000, 124, true, 50000, 77777, 77777),
        (600000, 700000, 124, true, 100000, 92592, 77777),
        (700000, 750000, 124, true, 50000, 64197, 64197),
        (750000, 875000, 124, false, 125000, 104732, 104732),
        (875000, 900000, 124, false, 25000, 51577, 104732),
        (900000, 950000, 200, false, 50000, 50525, 50525),
    ];
    let mut v = Vegas::new(&CcParams::default());
    let mut clock = ClockHealth::default();
    v.sent_at = rows.iter().map(|r| r.0).collect();
    for (i, r) in rows.iter().enumerate() {
        v.cwnd = r.2;
        v.in_slow_start = r.3;
        let rtt = v.update_rtt(r.1, &mut clock, &mut CcStats::default());
        assert_eq!(
            (rtt, v.ewma_rtt_usec, v.min_rtt_usec),
            (r.4, r.5, r.6),
            "row {i}"
        );
    }
}

#[test]
fn clock_heuristic() {
    // (old delta, new delta, in slow start) -> (cached "broken", result)
    #[rustfmt::skip]
    let rows: [(u64, u64, bool, bool, bool); 17] = [
        (0, 1, true, false, false), (0, 0, true, true, true), (1, 1, true, true, false),
        (1, 4999, false, false, false), (4999, 1, false, false, false),
        (5001, 1, false, false, false), (5001, 0, false, true, true),
        (5001, 1, false, true, true), (5001, 1, true, true, false),
        (0, 5001, false, true, false), (1, 5001, true, true, false),
        (1, 1, false, false, false), (5001, 1, false, false, false),
        (1, 5001, false, false, true), (0, 5001, false, false, false),
        (5001, 1, true, false, false), (1, 1, false, false, false),
    ];
    let mut v = Vegas::new(&CcParams::default());
    let mut clock = ClockHealth::default();
    for (i, r) in rows.iter().enumerate() {
        v.in_slow_start = r.2;
        v.ewma_rtt_usec = r.0 * 1000;
        let ret = v.stalled_or_jumped(r.0, r.1, &mut clock);
        assert_eq!((!clock.is_reliable(), ret), (r.3, r.4), "row {i}");
    }
}

/// Which cells a SENDME acknowledges: the 31st in flight, the 62nd...
/// never the first; the window is cwnd minus inflight.
#[test]
fn sendme_pacing_and_window() {
    let mut v = Vegas::new(&CcParams::default());
    let mut marked = Vec::new();
    for n in 1..=124u64 {
        if v.next_cell_wants_sendme() {
            marked.push(n);
        }
        v.note_data_sent(n * 10);
    }
    assert_eq!(marked, [31, 62, 93, 124]);
    assert_eq!(v.sent_at.len(), 4);
    assert!(!v.can_send());
    assert_eq!(v.package_window(), 0);
    let mut clock = ClockHealth::default();
    v.on_sendme(
        100_000,
        LinkState::default(),
        &mut clock,
        &mut CcStats::default(),
    );
    assert_eq!(v.inflight(), 93);
    assert_eq!(v.ewma_rtt_usec(), 100_000 - 310);
    assert!(v.package_window() > 0);
}

#[test]
fn params_from_the_consensus() {
    let none = |_: &str, d: i32, _: i32, _: i32| d;
    assert_eq!(CcParams::from_consensus(&none), Some(CcParams::default()));
    let off = |n: &str, d: i32, _: i32, _: i32| if n == "cc_alg" { 0 } else { d };
    assert_eq!(CcParams::from_consensus(&off), None);
    let inc = |n: &str, d: i32, lo: i32, hi: i32| {
        if n == "cc_sendme_inc" {
            33.clamp(lo, hi)
        } else {
            d
        }
    };
    assert_eq!(CcParams::from_consensus(&inc).unwrap().sendme_inc, 33);
}
