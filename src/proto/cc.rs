//! Congestion control for the cells an exit sends on a circuit (proposal
//! 324, TOR_VEGAS), as C tor 0.4.9 runs it at an exit
//! (congestion_control_common.c, congestion_control_vegas.c).
//!
//! Sans-IO: the caller says when a DATA cell was queued and when a valid
//! circuit SENDME arrived, with the time in microseconds of a monotonic
//! clock, and whether the circuit's link is blocked; the controller says
//! how many more DATA cells may be in flight. Only DATA cells count.
//!
//! Owns: cwnd, inflight, the RTT and BDP estimates, slow start and the
//! Vegas steady state, and which sent cell a SENDME will acknowledge.
//! Does not own: the SENDME tags themselves (the circuit records the
//! relay crypto's tag when [`Vegas::next_cell_wants_sendme`] says so), the
//! receiving side (a SENDME every `sendme_inc` DATA cells), stream flow
//! control (XON/XOFF), or reading the consensus (the caller builds
//! [`CcParams`]).
//!
//! Integer arithmetic is C's: unsigned 64-bit, multiply before dividing,
//! floor division; parameters are read once per circuit.

use std::collections::VecDeque;

/// Congestion-control parameters for exit circuits, with C tor's defaults
/// (requirements.md §9; congestion_control_common.c and _vegas.c,
/// CC_PATH_EXIT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CcParams {
    /// `cc_sendme_inc`: cells per circuit SENDME (what the exit answers in
    /// the ntor-v3 extension).
    pub sendme_inc: u8,
    /// `cc_cwnd_init`.
    pub cwnd_init: u64,
    /// `cc_cwnd_min`.
    pub cwnd_min: u64,
    /// `cc_cwnd_max`.
    pub cwnd_max: u64,
    /// `cc_cwnd_inc`: the steady-state step.
    pub cwnd_inc: u64,
    /// `cc_cwnd_inc_pct_ss`: slow start's step, in percent of sendme_inc.
    pub cwnd_inc_pct_ss: u64,
    /// `cc_cwnd_inc_rate`: steady-state updates per this many SENDMEs'
    /// worth of cwnd (scaled by sendme_inc).
    pub cwnd_inc_rate: u64,
    /// `cc_vegas_alpha_exit`, `_beta_`, `_gamma_`, `_delta_`: queue
    /// thresholds in cells.
    pub alpha: u64,
    pub beta: u64,
    pub gamma: u64,
    pub delta: u64,
    /// `cc_sscap_exit`: past this cwnd, slow start grows as RFC 3742.
    pub ss_cwnd_cap: u64,
    /// `cc_ss_max`: slow start ends at this cwnd.
    pub ss_cwnd_max: u64,
    /// `cc_cwnd_full_gap`: cwnd counts as full within this many SENDMEs.
    pub full_gap: u64,
    /// `cc_cwnd_full_minpct`: and as not full below this percentage.
    pub full_minpct: u64,
    /// `cc_cwnd_full_per_cwnd`: fullness is forgotten once per cwnd (true)
    /// or once per update (false).
    pub full_per_cwnd: bool,
    /// `cc_ewma_cwnd_pct`, `cc_ewma_max`, `cc_ewma_ss`: the RTT EWMA's N.
    pub ewma_cwnd_pct: u64,
    pub ewma_max: u64,
    pub ewma_ss: u64,
    /// `cc_rtt_reset_pct`: how min RTT is re-estimated at cwnd_min.
    pub rtt_reset_pct: u64,
}

impl Default for CcParams {
    fn default() -> Self {
        // OUTBUF_CELLS = 2 × TLS_RECORD_MAX_CELLS = 62 (congestion_control_vegas.c).
        const OUTBUF_CELLS: u64 = 62;
        Self {
            sendme_inc: 31,
            cwnd_init: 4 * 31,
            cwnd_min: 124,
            cwnd_max: i32::MAX as u64,
            cwnd_inc: 1,
            cwnd_inc_pct_ss: 100,
            cwnd_inc_rate: 31,
            alpha: 3 * OUTBUF_CELLS,
            beta: 4 * OUTBUF_CELLS,
            gamma: 3 * OUTBUF_CELLS,
            delta: 5 * OUTBUF_CELLS,
            ss_cwnd_cap: 600,
            ss_cwnd_max: 5000,
            full_gap: 4,
            full_minpct: 25,
            full_per_cwnd: true,
            ewma_cwnd_pct: 50,
            ewma_max: 10,
            ewma_ss: 2,
            rtt_reset_pct: 100,
        }
    }
}

impl CcParams {
    /// The parameters a consensus gives (C tor's names, defaults and
    /// bounds; out-of-range values clamp, absent ones default), or `None`
    /// when `cc_alg` is 0: congestion control off, as
    /// congestion_control_enabled() says. `param(name, default, min, max)`
    /// reads one.
    pub fn from_consensus(param: &dyn Fn(&str, i32, i32, i32) -> i32) -> Option<Self> {
        if param("cc_alg", 2, 0, 3) == 0 {
            return None;
        }
        let d = Self::default();
        let p = |name: &str, default: u64, min: i32, max: i32| -> u64 {
            let v = param(name, i32::try_from(default).unwrap_or(i32::MAX), min, max);
            u64::try_from(v).unwrap_or(default)
        };
        Some(Self {
            sendme_inc: u8::try_from(p("cc_sendme_inc", 31, 1, 254)).unwrap_or(d.sendme_inc),
            cwnd_init: p("cc_cwnd_init", d.cwnd_init, 31, 10_000),
            cwnd_min: p("cc_cwnd_min", d.cwnd_min, 31, 1000),
            cwnd_max: p("cc_cwnd_max", d.cwnd_max, 500, i32::MAX),
            cwnd_inc: p("cc_cwnd_inc", d.cwnd_inc, 1, 1000),
            cwnd_inc_pct_ss: p("cc_cwnd_inc_pct_ss", d.cwnd_inc_pct_ss, 1, 500),
            cwnd_inc_rate: p("cc_cwnd_inc_rate", d.cwnd_inc_rate, 1, 250),
            alpha: p("cc_vegas_alpha_exit", d.alpha, 0, 1000),
            beta: p("cc_vegas_beta_exit", d.beta, 0, 1000),
            gamma: p("cc_vegas_gamma_exit", d.gamma, 0, 1000),
            // C stores delta in a uint16_t: a larger value wraps.
            delta: p("cc_vegas_delta_exit", d.delta, 0, i32::MAX) & 0xffff,
            ss_cwnd_cap: p("cc_sscap_exit", d.ss_cwnd_cap, 100, i32::MAX),
            ss_cwnd_max: p("cc_ss_max", d.ss_cwnd_max, 500, i32::MAX),
            full_gap: p("cc_cwnd_full_gap", d.full_gap, 0, i32::from(i16::MAX)),
            full_minpct: p("cc_cwnd_full_minpct", d.full_minpct, 0, 100),
            full_per_cwnd: p("cc_cwnd_full_per_cwnd", 1, 0, 1) != 0,
            ewma_cwnd_pct: p("cc_ewma_cwnd_pct", d.ewma_cwnd_pct, 1, 255),
            // uint8_t in C.
            ewma_max: p("cc_ewma_max", d.ewma_max, 2, i32::MAX) & 0xff,
            ewma_ss: p("cc_ewma_ss", d.ewma_ss, 2, i32::MAX) & 0xff,
            rtt_reset_pct: p("cc_rtt_reset_pct", d.rtt_reset_pct, 0, 100),
        })
    }
}

/// Whether the monotonic clock looks broken, from RTT samples; C tor keeps
/// one per process (`is_monotime_clock_broken`), oxit one per worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockHealth {
    broken: bool,
}

impl ClockHealth {
    pub fn is_reliable(self) -> bool {
        !self.broken
    }
}

/// A running average as C tor keeps its congestion-control statistics
/// (lib/math/stats.h: `stats_update_running_avg`, an N-count EWMA with
/// N = 100), and how many values went into it so that the workers'
/// averages can be merged.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunningAvg {
    pub avg: f64,
    pub n: u64,
}

impl RunningAvg {
    const N: f64 = 100.0;

    /// n_count_ewma_double with N = 100: the first value (or any after an
    /// average of about 0) is taken as it is.
    pub fn update(&mut self, value: u64) {
        let v = value as f64;
        self.avg = if self.avg < 0.000_000_2 {
            v
        } else {
            (2.0 * v + (Self::N - 1.0) * self.avg) / (Self::N + 1.0)
        };
        self.n = self.n.saturating_add(1);
    }
}

/// What C tor's MetricsPort reports of congestion control
/// (`tor_relay_congestion_control{,_total}`; relay_metrics.c
/// fill_cc_counters_values, fill_cc_gauges_values), for one worker's
/// circuits. C keeps these as process globals; each oxit worker keeps its
/// own and the MetricsPort merges them ([`CcStats::add`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CcStats {
    /// A min RTT raised at cwnd_min (`num_rtt_reset`).
    pub rtt_reset: u64,
    /// RTT samples dropped as clock stalls or jumps (`num_clock_stalls`).
    pub clock_stalls: u64,
    /// Stream XOFF and XON cells sent (`cc_stats_flow_num_x{off,on}_sent`).
    pub xoff_sent: u64,
    pub xon_sent: u64,
    /// Steady-state updates with the queue above delta.
    pub above_delta: u64,
    /// Slow starts ended at `cc_ss_max`.
    pub above_ss_cwnd_max: u64,
    /// Slow starts ended because their step fell below steady state's.
    pub below_ss_inc_floor: u64,
    /// Circuits with congestion control created and closed, and slow
    /// starts ended.
    pub circs_created: u64,
    pub circs_closed: u64,
    pub exited_ss: u64,
    /// At the end of slow start: cwnd, BDP, and the slow-start step.
    pub exit_ss_cwnd: RunningAvg,
    pub exit_ss_bdp: RunningAvg,
    pub exit_ss_inc: RunningAvg,
    /// cwnd of circuits closed after slow start, and in it (those with
    /// enough RTT samples to mean something).
    pub close_cwnd: RunningAvg,
    pub close_ss_cwnd: RunningAvg,
    /// Bytes buffered toward the destination when an XON or XOFF was
    /// decided.
    pub xon_outbuf: RunningAvg,
    pub xoff_outbuf: RunningAvg,
    /// Percent of steady-state (and slow-start) congestion signals that
    /// were a blocked link rather than RTT.
    pub csig_blocked: RunningAvg,
    pub ss_csig_blocked: RunningAvg,
    /// cwnd cut at the gamma (slow start) and delta thresholds.
    pub gamma_drop: RunningAvg,
    pub delta_drop: RunningAvg,
    /// Percent of steady-state updates that grew (alpha), shrank (beta)
    /// or cut (delta) cwnd.
    pub csig_alpha: RunningAvg,
    pub csig_beta: RunningAvg,
    pub csig_delta: RunningAvg,
    /// Queue use in slow start and after, and the BDP after.
    pub ss_queue: RunningAvg,
    pub queue: RunningAvg,
    pub bdp: RunningAvg,
}

impl CcStats {
    /// Counters in [`Self::to_array`].
    pub const COUNTERS: usize = 10;
    /// Averages in [`Self::to_array`], two slots each (bits of the f64,
    /// then the count).
    pub const AVERAGES: usize = 17;
    /// Length of [`Self::to_array`].
    pub const FIELDS: usize = Self::COUNTERS + 2 * Self::AVERAGES;

    fn counters(&mut self) -> [&mut u64; Self::COUNTERS] {
        [
            &mut self.rtt_reset,
            &mut self.clock_stalls,
            &mut self.xoff_sent,
            &mut self.xon_sent,
            &mut self.above_delta,
            &mut self.above_ss_cwnd_max,
            &mut self.below_ss_inc_floor,
            &mut self.circs_created,
            &mut self.circs_closed,
            &mut self.exited_ss,
        ]
    }

    fn averages(&mut self) -> [&mut RunningAvg; Self::AVERAGES] {
        [
            &mut self.exit_ss_cwnd,
            &mut self.exit_ss_bdp,
            &mut self.exit_ss_inc,
            &mut self.close_cwnd,
            &mut self.close_ss_cwnd,
            &mut self.xon_outbuf,
            &mut self.xoff_outbuf,
            &mut self.csig_blocked,
            &mut self.gamma_drop,
            &mut self.delta_drop,
            &mut self.ss_csig_blocked,
            &mut self.csig_alpha,
            &mut self.csig_beta,
            &mut self.csig_delta,
            &mut self.ss_queue,
            &mut self.queue,
            &mut self.bdp,
        ]
    }

    /// The statistics as one array, for a worker to publish through
    /// atomics: the counters, then each average's f64 bits and count.
    pub fn to_array(&self) -> [u64; Self::FIELDS] {
        let mut me = *self;
        let mut a = [0u64; Self::FIELDS];
        for (slot, c) in a.iter_mut().zip(me.counters()) {
            *slot = *c;
        }
        for (pair, r) in a[Self::COUNTERS..].chunks_exact_mut(2).zip(me.averages()) {
            if let [bits, n] = pair {
                *bits = r.avg.to_bits();
                *n = r.n;
            }
        }
        a
    }

    pub fn from_array(a: [u64; Self::FIELDS]) -> CcStats {
        let mut s = CcStats::default();
        for (c, v) in s.counters().into_iter().zip(a.iter()) {
            *c = *v;
        }
        for (r, pair) in s
            .averages()
            .into_iter()
            .zip(a[Self::COUNTERS..].chunks_exact(2))
        {
            if let [bits, n] = pair {
                *r = RunningAvg {
                    avg: f64::from_bits(*bits),
                    n: *n,
                };
            }
        }
        s
    }

    /// Merge another worker's: counters add up, averages are weighted by
    /// how many values each worker put in.
    pub fn add(&mut self, other: &CcStats) {
        let mut other = *other;
        for (c, o) in self.counters().into_iter().zip(other.counters()) {
            *c = c.saturating_add(*o);
        }
        for (r, o) in self.averages().into_iter().zip(other.averages()) {
            let n = r.n.saturating_add(o.n);
            if n > 0 {
                r.avg = (r.avg * r.n as f64 + o.avg * o.n as f64) / n as f64;
            }
            r.n = n;
        }
    }

    /// A circuit with congestion control closed (circuitlist.c:
    /// circuit_about_to_free's statistics).
    pub fn note_closed(&mut self, v: &Vegas) {
        if v.in_slow_start {
            // Only circuits that carried enough to have an RTT range.
            if v.max_rtt_usec != v.min_rtt_usec {
                self.close_ss_cwnd.update(v.cwnd);
            }
        } else {
            self.close_cwnd.update(v.cwnd);
        }
        self.circs_closed += 1;
    }
}

/// A sample this many times the EWMA (or a 5000th of it) is a clock jump,
/// not a real RTT (`DELTA_DISCREPENCY_RATIO_MAX`).
const DELTA_DISCREPANCY_RATIO_MAX: u64 = 5000;

/// TOR_VEGAS for one circuit's sending side.
#[derive(Debug)]
pub struct Vegas {
    p: CcParams,
    sendme_inc: u64,
    cwnd: u64,
    inflight: u64,
    ewma_rtt_usec: u64,
    min_rtt_usec: u64,
    max_rtt_usec: u64,
    bdp: u64,
    next_cc_event: u64,
    next_cwnd_event: u64,
    in_slow_start: bool,
    cwnd_full: bool,
    blocked_chan: bool,
    /// When each cell a SENDME will acknowledge was queued (µs).
    sent_at: VecDeque<u64>,
}

/// What the caller knows about the circuit's link when a SENDME arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    /// The circuit is blocked on its link (too many cells queued on it).
    pub blocked: bool,
    /// Cells queued for the link on this circuit.
    pub queued_cells: u64,
}

impl Vegas {
    /// A circuit's controller; `p` is copied (C reads parameters once per
    /// circuit).
    pub fn new(p: &CcParams) -> Self {
        let mut v = Self {
            p: p.clone(),
            sendme_inc: u64::from(p.sendme_inc.max(1)),
            cwnd: p.cwnd_init,
            inflight: 0,
            ewma_rtt_usec: 0,
            min_rtt_usec: 0,
            max_rtt_usec: 0,
            bdp: 0,
            next_cc_event: 0,
            next_cwnd_event: 0,
            in_slow_start: true,
            cwnd_full: false,
            blocked_chan: false,
            sent_at: VecDeque::new(),
        };
        v.next_cc_event = v.update_rate();
        v
    }

    /// DATA cells that may still be sent now
    /// (congestion_control_get_package_window).
    pub fn package_window(&self) -> u64 {
        self.cwnd.saturating_sub(self.inflight)
    }

    pub fn can_send(&self) -> bool {
        self.inflight < self.cwnd
    }

    /// Whether the next DATA cell is one a SENDME will acknowledge, so the
    /// circuit must record its tag (circuit_sent_cell_for_sendme; asked
    /// before [`Self::note_data_sent`]).
    pub fn next_cell_wants_sendme(&self) -> bool {
        self.inflight != 0
            && self
                .inflight
                .wrapping_add(1)
                .is_multiple_of(self.sendme_inc)
    }

    /// A DATA cell was queued at `now_usec` (congestion_control_note_cell_sent).
    pub fn note_data_sent(&mut self, now_usec: u64) {
        if self.next_cell_wants_sendme() {
            self.sent_at.push_back(now_usec);
        }
        self.inflight = self.inflight.wrapping_add(1);
    }

    /// A valid circuit SENDME (its tag already checked) arrived at
    /// `now_usec` (congestion_control_vegas_process_sendme, then the
    /// dispatcher's cwnd_max clamp).
    pub fn on_sendme(
        &mut self,
        now_usec: u64,
        link: LinkState,
        clock: &mut ClockHealth,
        stats: &mut CcStats,
    ) {
        let was_slow = self.in_slow_start;
        self.process_sendme(now_usec, link, clock, stats);
        self.cwnd = self.cwnd.min(self.p.cwnd_max);
        if was_slow && !self.in_slow_start {
            tracing::debug!(
                cwnd = self.cwnd,
                bdp = self.bdp,
                min_rtt_usec = self.min_rtt_usec,
                ewma_rtt_usec = self.ewma_rtt_usec,
                blocked = self.blocked_chan,
                "congestion control leaves slow start"
            );
        }
    }

    fn process_sendme(
        &mut self,
        now_usec: u64,
        link: LinkState,
        clock: &mut ClockHealth,
        stats: &mut CcStats,
    ) {
        self.next_cc_event = self.next_cc_event.saturating_sub(1);
        self.next_cwnd_event = self.next_cwnd_event.saturating_sub(1);
        if !self.update_estimates(now_usec, link, clock, stats) {
            self.inflight = self.inflight.wrapping_sub(self.sendme_inc);
            return;
        }
        let queue_use = self.cwnd.saturating_sub(self.bdp);
        // Fullness is judged on inflight before this SENDME's cells leave it.
        if self
            .inflight
            .wrapping_add(self.p.full_gap.wrapping_mul(self.sendme_inc))
            >= self.cwnd
        {
            self.cwnd_full = true;
        } else if self.inflight.wrapping_mul(100) < self.p.full_minpct.wrapping_mul(self.cwnd) {
            self.cwnd_full = false;
        }
        if self.in_slow_start {
            if queue_use < self.p.gamma && !self.blocked_chan {
                if self.cwnd_full {
                    let inc = self.slow_start_inc();
                    self.cwnd = self.cwnd.wrapping_add(inc);
                    if inc.wrapping_mul(self.sendme_per_cwnd())
                        <= self.p.cwnd_inc.wrapping_mul(self.p.cwnd_inc_rate)
                    {
                        self.exit_slow_start(stats);
                        stats.below_ss_inc_floor += 1;
                        stats.ss_csig_blocked.update(0);
                    }
                }
            } else {
                // A queue (or a blocked link) ends slow start, and may
                // raise cwnd: no cwnd_min clamp here, as in C.
                let old = self.cwnd;
                self.cwnd = self.bdp.wrapping_add(self.p.gamma);
                if self.blocked_chan {
                    stats.ss_csig_blocked.update(100);
                } else {
                    stats.ss_csig_blocked.update(0);
                    stats.gamma_drop.update(old.saturating_sub(self.cwnd));
                }
                self.exit_slow_start(stats);
            }
            if self.cwnd >= self.p.ss_cwnd_max {
                self.cwnd = self.p.ss_cwnd_max;
                self.exit_slow_start(stats);
                stats.above_ss_cwnd_max += 1;
            }
            stats.ss_queue.update(queue_use);
        } else if self.next_cc_event == 0 {
            // Which signal this update acted on, in percent: alpha (grow),
            // beta (shrink), delta (cut); none of them is 0, 0, 0.
            let (alpha, beta, delta) = if queue_use > self.p.delta {
                let old = self.cwnd;
                self.cwnd = self
                    .bdp
                    .wrapping_add(self.p.delta)
                    .wrapping_sub(self.p.cwnd_inc);
                stats.delta_drop.update(old.saturating_sub(self.cwnd));
                stats.above_delta += 1;
                (0, 0, 100)
            } else if queue_use > self.p.beta || self.blocked_chan {
                self.cwnd = self.cwnd.wrapping_sub(self.p.cwnd_inc);
                stats
                    .csig_blocked
                    .update(if self.blocked_chan { 100 } else { 0 });
                (0, 100, 0)
            } else if self.cwnd_full && queue_use < self.p.alpha {
                self.cwnd = self.cwnd.wrapping_add(self.p.cwnd_inc);
                (100, 0, 0)
            } else {
                (0, 0, 0)
            };
            stats.csig_alpha.update(alpha);
            stats.csig_beta.update(beta);
            stats.csig_delta.update(delta);
            self.cwnd = self.cwnd.max(self.p.cwnd_min);
            stats.queue.update(queue_use);
            stats.bdp.update(self.bdp);
        }
        if self.next_cwnd_event == 0 {
            self.next_cwnd_event = self.sendme_per_cwnd();
        }
        if self.next_cc_event == 0 {
            self.next_cc_event = self.update_rate();
        }
        let reset = if self.p.full_per_cwnd {
            self.next_cwnd_event == self.sendme_per_cwnd()
        } else {
            self.next_cc_event == self.update_rate()
        };
        if reset {
            self.cwnd_full = false;
        }
        self.inflight = self.inflight.wrapping_sub(self.sendme_inc);
    }

    /// congestion_control_vegas_exit_slow_start, with its statistics
    /// (taken after the step that ended it, as C does).
    fn exit_slow_start(&mut self, stats: &mut CcStats) {
        self.in_slow_start = false;
        stats.exit_ss_cwnd.update(self.cwnd);
        stats.exit_ss_bdp.update(self.bdp);
        stats.exit_ss_inc.update(self.slow_start_inc());
        stats.exited_ss += 1;
    }

    /// RTT then BDP (congestion_control_update_circuit_estimates); false
    /// when there is nothing to act on.
    fn update_estimates(
        &mut self,
        now_usec: u64,
        link: LinkState,
        clock: &mut ClockHealth,
        stats: &mut CcStats,
    ) -> bool {
        let rtt = self.update_rtt(now_usec, clock, stats);
        self.update_bdp(rtt, link)
    }

    fn update_rtt(&mut self, now_usec: u64, clock: &mut ClockHealth, stats: &mut CcStats) -> u64 {
        // An empty queue would be a SENDME nobody asked for; the circuit
        // rejects those before they get here (C: a BUG() and 0).
        let Some(sent) = self.sent_at.pop_front() else {
            crate::bug::reached("congestion control: a SENDME with no sent cell to time");
            return 0;
        };
        let rtt = now_usec.wrapping_sub(sent);
        if self.stalled_or_jumped(self.ewma_rtt_usec, rtt, clock) {
            stats.clock_stalls += 1;
            return 0;
        }
        let n = self.ewma_count();
        self.ewma_rtt_usec = n_count_ewma(rtt, self.ewma_rtt_usec, n);
        self.max_rtt_usec = self.max_rtt_usec.max(rtt);
        if self.min_rtt_usec == 0 {
            self.min_rtt_usec = self.ewma_rtt_usec;
        } else if self.cwnd == self.p.cwnd_min && !self.in_slow_start {
            // At the floor, let min RTT rise again: the path may have
            // changed (rtt_reset_pct of the larger, the rest of the smaller).
            let (hi, lo) = (
                self.ewma_rtt_usec.max(self.min_rtt_usec),
                self.ewma_rtt_usec.min(self.min_rtt_usec),
            );
            let pct = self.p.rtt_reset_pct.min(100);
            self.min_rtt_usec = pct.wrapping_mul(hi) / 100 + (100 - pct).wrapping_mul(lo) / 100;
            stats.rtt_reset += 1;
        } else if self.ewma_rtt_usec < self.min_rtt_usec {
            self.min_rtt_usec = self.ewma_rtt_usec;
        }
        rtt
    }

    /// time_delta_stalled_or_jumped.
    fn stalled_or_jumped(&self, old: u64, new: u64, clock: &mut ClockHealth) -> bool {
        if new == 0 {
            clock.broken = true;
            return true;
        }
        // No heuristics in slow start or before the first EWMA.
        if self.in_slow_start || self.ewma_rtt_usec == 0 {
            return false;
        }
        if old > new.saturating_mul(DELTA_DISCREPANCY_RATIO_MAX) {
            return clock.broken;
        }
        if new > old.saturating_mul(DELTA_DISCREPANCY_RATIO_MAX) {
            return true;
        }
        clock.broken = false;
        false
    }

    fn update_bdp(&mut self, rtt: u64, link: LinkState) -> bool {
        if self.ewma_rtt_usec == 0 {
            // Every sample so far was a clock stall: no RTT to scale by.
            let mut cw = self.cwnd;
            if link.blocked {
                cw = if link.queued_cells >= cw {
                    self.p.cwnd_min
                } else {
                    (cw - link.queued_cells).max(self.p.cwnd_min)
                };
                self.blocked_chan = true;
            } else {
                self.blocked_chan = false;
            }
            self.bdp = cw;
            return link.blocked;
        }
        self.bdp = self.cwnd.wrapping_mul(self.min_rtt_usec) / self.ewma_rtt_usec;
        // A change of the link's state is acted on at once.
        if link.blocked {
            if !self.blocked_chan {
                self.next_cc_event = 0;
                self.blocked_chan = true;
            }
        } else if self.blocked_chan {
            self.blocked_chan = false;
            self.next_cc_event = 0;
        }
        link.blocked || rtt != 0
    }

    /// rfc3742_ss_inc.
    fn slow_start_inc(&self) -> u64 {
        if self.cwnd <= self.p.ss_cwnd_cap {
            (self.p.cwnd_inc_pct_ss.wrapping_mul(self.sendme_inc) + 50) / 100
        } else {
            (self
                .sendme_inc
                .wrapping_mul(self.p.ss_cwnd_cap)
                .wrapping_add(self.cwnd)
                / self.cwnd.wrapping_mul(2).max(1))
            .max(1)
        }
    }

    /// CWND_UPDATE_RATE: SENDMEs between steady-state updates (0: every one).
    fn update_rate(&self) -> u64 {
        if self.in_slow_start {
            return 1;
        }
        let per = self.p.cwnd_inc_rate.wrapping_mul(self.sendme_inc).max(1);
        self.cwnd.wrapping_add(per / 2) / per
    }

    /// SENDME_PER_CWND.
    fn sendme_per_cwnd(&self) -> u64 {
        self.cwnd.wrapping_add(self.sendme_inc / 2) / self.sendme_inc
    }

    /// n_ewma_count.
    fn ewma_count(&self) -> u64 {
        let n = if self.in_slow_start {
            self.p.ewma_ss
        } else {
            (self.update_rate().wrapping_mul(self.p.ewma_cwnd_pct) / 100).min(self.p.ewma_max)
        };
        n.max(2)
    }

    pub fn cwnd(&self) -> u64 {
        self.cwnd
    }

    pub fn inflight(&self) -> u64 {
        self.inflight
    }

    pub fn in_slow_start(&self) -> bool {
        self.in_slow_start
    }

    pub fn ewma_rtt_usec(&self) -> u64 {
        self.ewma_rtt_usec
    }

    pub fn min_rtt_usec(&self) -> u64 {
        self.min_rtt_usec
    }

    pub fn sendme_inc(&self) -> u64 {
        self.sendme_inc
    }
}

/// n_count_ewma: `(2·curr + (N−1)·prev) / (N+1)`, or `curr` at first
/// (congestion_control_common.h; also the XON drain rate's EWMA).
pub(crate) fn n_count_ewma(curr: u64, prev: u64, n: u64) -> u64 {
    if prev == 0 {
        curr
    } else {
        (curr.wrapping_mul(2) + n.wrapping_sub(1).wrapping_mul(prev)) / n.wrapping_add(1)
    }
}

#[cfg(test)]
mod tests;
