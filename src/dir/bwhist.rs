//! Bandwidth history as C tor keeps it (bwhist.c): bytes per second in a
//! 10-second sliding window, the largest 10-second sum of each day, and
//! each day's total, for reads and for writes.
//!
//! Two numbers come out of it: the descriptor's observed bandwidth (the
//! smaller of the best read and best write 10-second averages over the
//! last five days, bwhist_bandwidth_assess) and the extra-info
//! `write-history` / `read-history` lines (one total per completed day,
//! rounded down to KiB, capped at `RelayBandwidthRate` × a day). The caller
//! feeds it the relay's traffic, summed over every worker, once a second.
//!
//! Days start when the relay starts, not at midnight (bw_array_new), and an
//! array only moves on when it is given an observation (add_obs).

use super::time::{UnixTime, format_iso, parse_iso};

/// `NUM_SECS_ROLLING_MEASURE`.
const ROLLING: usize = 10;
/// `NUM_SECS_BW_SUM_INTERVAL`.
pub const PERIOD: u64 = 86400;
/// `NUM_TOTALS`: completed days kept.
const TOTALS: usize = 5;

/// One direction's history (bw_array_t).
#[derive(Clone, Debug)]
struct BwArray {
    obs: [u64; ROLLING],
    cur_obs_idx: usize,
    cur_obs_time: UnixTime,
    /// Sum of `obs` except the current slot.
    total_obs: u64,
    max_total: u64,
    total_in_period: u64,
    next_period: UnixTime,
    next_max_idx: usize,
    num_maxes_set: usize,
    maxima: [u64; TOTALS],
    totals: [u64; TOTALS],
}

impl BwArray {
    fn new(start: UnixTime) -> BwArray {
        BwArray {
            obs: [0; ROLLING],
            cur_obs_idx: 0,
            cur_obs_time: start,
            total_obs: 0,
            max_total: 0,
            total_in_period: 0,
            next_period: start + PERIOD,
            next_max_idx: 0,
            num_maxes_set: 0,
            maxima: [0; TOTALS],
            totals: [0; TOTALS],
        }
    }

    fn commit_max(&mut self) {
        self.totals[self.next_max_idx] = self.total_in_period;
        self.maxima[self.next_max_idx] = self.max_total;
        self.next_max_idx = (self.next_max_idx + 1) % TOTALS;
        self.next_period += PERIOD;
        self.num_maxes_set = (self.num_maxes_set + 1).min(TOTALS);
        self.max_total = 0;
        self.total_in_period = 0;
    }

    fn advance(&mut self) {
        let total = self.total_obs.saturating_add(self.obs[self.cur_obs_idx]);
        self.max_total = self.max_total.max(total);
        let next = (self.cur_obs_idx + 1) % ROLLING;
        self.total_obs = total - self.obs[next];
        self.obs[next] = 0;
        self.cur_obs_idx = next;
        self.cur_obs_time += 1;
        if self.cur_obs_time >= self.next_period {
            self.commit_max();
        }
    }

    fn add(&mut self, when: UnixTime, n: u64) {
        if when < self.cur_obs_time {
            return; // the clock went back: C drops it too
        }
        // A long gap (the process stopped, the clock jumped) needs no more
        // than a window's worth of steps to empty the window, and whole
        // periods can be committed at once.
        while when > self.cur_obs_time {
            if when - self.cur_obs_time > ROLLING as u64 + 1
                && self.total_obs == 0
                && self.obs[self.cur_obs_idx] == 0
            {
                let target = when.min(self.next_period);
                self.cur_obs_time = target.max(self.cur_obs_time);
                if self.cur_obs_time >= self.next_period {
                    self.commit_max();
                }
                continue;
            }
            self.advance();
        }
        // Saturating: a state file can hold any number.
        self.obs[self.cur_obs_idx] = self.obs[self.cur_obs_idx].saturating_add(n);
        self.total_in_period = self.total_in_period.saturating_add(n);
    }

    /// find_largest_max: the completed days' maxima, and the current day's
    /// once it has run for `min_observation` seconds.
    fn largest_max(&self, min_observation: u64) -> u64 {
        let period_start = self.next_period - PERIOD;
        let cur = if self.cur_obs_time > period_start + min_observation {
            self.max_total
        } else {
            0
        };
        self.maxima.iter().copied().fold(cur, u64::max)
    }

    /// The state file's `Ends`, `Interval`, `Values` and `Maxima` for this
    /// array (bwhist_update_bwhist_state_section): each completed day's
    /// total and best 10-second average, then the current day's so far.
    fn state_section(&self) -> [String; 4] {
        let mut vals = Vec::with_capacity(self.num_maxes_set + 1);
        let mut maxima = Vec::with_capacity(self.num_maxes_set + 1);
        let mut i = if self.num_maxes_set <= self.next_max_idx {
            0
        } else {
            self.next_max_idx
        };
        for _ in 0..self.num_maxes_set {
            i %= TOTALS;
            vals.push((self.totals[i] & !0x3ff).to_string());
            maxima.push(((self.maxima[i] / ROLLING as u64) & !0x3ff).to_string());
            i += 1;
        }
        vals.push((self.total_in_period & !0x3ff).to_string());
        maxima.push(((self.max_total / ROLLING as u64) & !0x3ff).to_string());
        [
            format_iso(self.next_period),
            PERIOD.to_string(),
            vals.join(","),
            maxima.join(","),
        ]
    }

    /// Rebuild an array from its state-file section
    /// (bwhist_load_bwhist_state_section): each interval's total is spread
    /// evenly over its seconds, and its best 10 seconds restored. Sections
    /// that ended more than five days ago are ignored, as C does.
    fn from_state(
        ends: Option<&str>,
        interval: Option<&str>,
        values: Option<&str>,
        maxima: Option<&str>,
        now: UnixTime,
    ) -> Result<BwArray, BwStateError> {
        let mut b = BwArray::new(now);
        let (Some(ends), Some(values)) = (ends, values) else {
            return Ok(b);
        };
        let bad = |what: &'static str, v: &str| BwStateError {
            what,
            value: v.to_string(),
        };
        let ends = parse_iso(ends).ok_or_else(|| bad("end time", ends))?;
        // C's default interval, for files written by a client.
        let interval = match interval {
            Some(i) => i
                .parse::<u64>()
                .ok()
                .filter(|&i| i > 0)
                .ok_or_else(|| bad("interval", i))?,
            None => 900,
        };
        let list = |s: &str| -> Result<Vec<u64>, BwStateError> {
            s.split(',')
                .filter(|v| !v.is_empty())
                .map(|v| v.trim().parse::<u64>().map_err(|_| bad("value", v)))
                .collect()
        };
        let values = list(values)?;
        // C writes a day's intervals (86400 s, or 900 s in old versions)
        // covering at most the kept days and the current one; anything
        // longer would only make the replay below run for ever.
        if interval.saturating_mul(values.len() as u64) > PERIOD * (TOTALS as u64 + 1) {
            return Err(bad(
                "span (interval × values)",
                &format!("{interval} × {}", values.len()),
            ));
        }
        let maxima = maxima.map(list).transpose()?;
        let maxima = maxima.filter(|m| m.len() == values.len());
        if values.is_empty() || ends < now.saturating_sub(PERIOD * TOTALS as u64) {
            return Ok(b);
        }
        let Some(mut start) = ends.checked_sub(interval.saturating_mul(values.len() as u64)) else {
            return Ok(b);
        };
        if start > now {
            return Ok(b);
        }
        b.cur_obs_time = start;
        b.next_period = start + PERIOD;
        for (i, &v) in values.iter().enumerate() {
            let best = match &maxima {
                Some(m) => m[i].saturating_mul(ROLLING as u64),
                // No maxima: guess the average rate, to be conservative.
                None => (v / interval).saturating_mul(ROLLING as u64),
            };
            if start < now {
                let len = interval.min(now - start);
                let per_sec = v / len;
                for t in start..start + len {
                    b.add(t, per_sec);
                }
                b.max_total = best;
                start += len;
            }
        }
        b.obs = [0; ROLLING];
        b.total_obs = 0;
        Ok(b)
    }

    /// bwhist_get_one_bandwidth_line.
    fn line(&self, keyword: &str, cap: Option<u64>) -> Option<String> {
        if self.num_maxes_set == 0 {
            return None;
        }
        let mut i = if self.num_maxes_set <= self.next_max_idx {
            0
        } else {
            self.next_max_idx
        };
        let mut vals = Vec::with_capacity(self.num_maxes_set);
        for _ in 0..self.num_maxes_set {
            i %= TOTALS;
            let mut t = self.totals[i] & !0x3ff;
            if let Some(c) = cap {
                t = t.min(c);
            }
            vals.push(t.to_string());
            i += 1;
        }
        Some(format!(
            "{keyword} {} ({PERIOD} s) {}\n",
            format_iso(self.next_period - PERIOD),
            vals.join(",")
        ))
    }
}

/// A bandwidth history in the state file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("bad bandwidth history {what} {value:?} in the state file")]
pub struct BwStateError {
    what: &'static str,
    value: String,
}

/// Reads and writes.
#[derive(Clone, Debug)]
pub struct BwHistory {
    read: BwArray,
    write: BwArray,
}

impl BwHistory {
    pub fn new(start: UnixTime) -> BwHistory {
        BwHistory {
            read: BwArray::new(start),
            write: BwArray::new(start),
        }
    }

    /// Bytes read and written at second `now`.
    pub fn note(&mut self, now: UnixTime, read: u64, written: u64) {
        // C notes only non-zero amounts, but an array that is never given
        // anything never completes a day; noting zeros keeps both moving.
        self.read.add(now, read);
        self.write.add(now, written);
    }

    /// The observed bandwidth, bytes/s (bwhist_bandwidth_assess).
    /// `min_observation` is `TestingMinTimeToReportBandwidth`: a day, or
    /// 0 in a test network.
    pub fn observed(&self, min_observation: u64) -> u64 {
        let r = self.read.largest_max(min_observation);
        let w = self.write.largest_max(min_observation);
        r.min(w) / ROLLING as u64
    }

    /// The state file's `BWHistory{Read,Write}{Ends,Interval,Values,Maxima}`
    /// lines (bwhist_update_state), as key and value.
    pub fn state_entries(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(8);
        for (dir, a) in [("Read", &self.read), ("Write", &self.write)] {
            for (field, v) in ["Ends", "Interval", "Values", "Maxima"]
                .into_iter()
                .zip(a.state_section())
            {
                out.push((format!("BWHistory{dir}{field}"), v));
            }
        }
        out
    }

    /// The history saved by [`Self::state_entries`] (or by C tor), with
    /// `get` looking a state-file key up (bwhist_load_state). Without
    /// those lines the history starts empty at `now`.
    pub fn from_state<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
        now: UnixTime,
    ) -> Result<BwHistory, BwStateError> {
        let array = |dir: &str| {
            let g = |f: &str| get(&format!("BWHistory{dir}{f}"));
            BwArray::from_state(g("Ends"), g("Interval"), g("Values"), g("Maxima"), now)
        };
        Ok(BwHistory {
            read: array("Read")?,
            write: array("Write")?,
        })
    }

    /// The extra-info history lines, write first
    /// (bwhist_get_bandwidth_lines); empty before the first whole day.
    /// Totals are capped at `RelayBandwidthRate` for a day when it is set.
    pub fn extra_info_lines(&self, relay_bandwidth_rate: u64) -> String {
        let cap = (relay_bandwidth_rate > 0).then(|| relay_bandwidth_rate.saturating_mul(PERIOD));
        [
            self.write.line("write-history", cap),
            self.read.line("read-history", cap),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: UnixTime = 1_700_000_000;

    #[test]
    fn observed_is_the_best_ten_seconds_of_the_slower_direction() {
        let mut h = BwHistory::new(T);
        // 5 s of 1000 B/s reads, 10 s of 500 B/s writes.
        for s in 0..20 {
            let r = if s < 5 { 1000 } else { 0 };
            let w = if s < 10 { 500 } else { 0 };
            h.note(T + s, r, w);
        }
        // Best read window: 5000 B in 10 s; best write window: 5000 B.
        assert_eq!(h.observed(0), 500);
        // A fresh relay reports nothing for its first day by default.
        assert_eq!(h.observed(86400), 0);
        assert_eq!(h.extra_info_lines(0), "");
    }

    #[test]
    fn days_commit_and_lines_match_c_tor() {
        let mut h = BwHistory::new(T);
        // Totals of C tor's test_fill_bandwidth_history: 1000, 1500, 3500,
        // 8000, 6000 bytes written on five days (and read the same).
        for (day, n) in [1000u64, 1500, 3500, 8000, 6000].into_iter().enumerate() {
            h.note(T + day as u64 * PERIOD + 5, n, n);
        }
        h.note(T + 5 * PERIOD + 1, 0, 0);
        let lines = h.extra_info_lines(0);
        let end = format_iso(T + 5 * PERIOD);
        assert_eq!(
            lines,
            format!(
                "write-history {end} (86400 s) 0,1024,3072,7168,5120\n\
                 read-history {end} (86400 s) 0,1024,3072,7168,5120\n"
            )
        );
        // A sixth day pushes out the first.
        h.note(T + 5 * PERIOD + 7, 9500, 9500);
        h.note(T + 6 * PERIOD + 1, 0, 0);
        assert!(
            h.extra_info_lines(0)
                .contains(" 1024,3072,7168,5120,9216\n")
        );
        // RelayBandwidthRate 1 caps each day at 86400 bytes.
        let mut big = BwHistory::new(T);
        big.note(T + 3, 100_000_000, 100_000_000);
        big.note(T + PERIOD + 1, 0, 0);
        assert!(big.extra_info_lines(1).contains(" 86400\n"));
        // The best 10 s of a completed day still counts after the day.
        assert_eq!(big.observed(86400), 10_000_000);
    }

    fn state_of(h: &BwHistory) -> std::collections::HashMap<String, String> {
        h.state_entries().into_iter().collect()
    }

    #[test]
    fn history_survives_a_restart_through_the_state_file() {
        let mut h = BwHistory::new(T);
        // Three whole days and part of a fourth. The file keeps whole KiB
        // and reloads a day as an even rate in whole bytes per second
        // (as C does), so these amounts survive exactly.
        const N: u64 = 86400 * 1024;
        for day in 0..4 {
            h.note(T + day * PERIOD + 5, (day + 1) * N, 2 * (day + 1) * N);
        }
        // The current second counts once the clock moves past it.
        h.note(T + 3 * PERIOD + 30, 0, 0);
        let saved = state_of(&h);
        assert_eq!(saved["BWHistoryReadInterval"], "86400");
        assert_eq!(saved["BWHistoryReadEnds"], format_iso(T + 4 * PERIOD));
        assert_eq!(
            saved["BWHistoryReadValues"],
            format!("{},{},{},{}", N, 2 * N, 3 * N, 4 * N)
        );
        assert_eq!(
            saved["BWHistoryWriteMaxima"],
            format!("{},{},{},{}", N / 5, 2 * N / 5, 3 * N / 5, 4 * N / 5)
        );

        let now = T + 3 * PERIOD + 600;
        let back = BwHistory::from_state(|k| saved.get(k).map(String::as_str), now).unwrap();
        assert_eq!(back.extra_info_lines(0), h.extra_info_lines(0));
        assert_eq!(back.observed(0), h.observed(0));
        assert_eq!(back.observed(PERIOD), h.observed(PERIOD));
        // The fourth day goes on where it was: its total so far is kept.
        let mut back = back;
        back.note(T + 4 * PERIOD + 1, 0, 0);
        assert!(back.extra_info_lines(0).ends_with(&format!(",{}\n", 4 * N)));
    }

    #[test]
    fn state_from_c_tor_old_and_bad() {
        let now = T + 10 * PERIOD;
        // As C tor 0.4.9 writes it; no maxima means the average is used.
        let c: std::collections::HashMap<&str, &str> = [
            ("BWHistoryReadEnds", format_iso(now - 100).leak() as &str),
            ("BWHistoryReadInterval", "86400"),
            ("BWHistoryReadValues", "864000,1728000"),
        ]
        .into();
        let h = BwHistory::from_state(|k| c.get(k).copied(), now).unwrap();
        assert!(
            h.read
                .line("read-history", None)
                .unwrap()
                .ends_with(" 863232\n")
        );
        // 1728000 B over the current day is 20 B/s, 200 B per 10 s; the
        // write side is empty.
        assert_eq!(h.read.largest_max(0), 200);
        assert_eq!(h.observed(0), 0);
        // More than five days old: ignored.
        let old = BwHistory::from_state(|k| c.get(k).copied(), now + 6 * PERIOD).unwrap();
        assert_eq!(old.extra_info_lines(0), "");
        // Garbage is an error that names the field.
        let bad: std::collections::HashMap<&str, &str> = [
            ("BWHistoryWriteEnds", "2026-12-01 00:00:00"),
            ("BWHistoryWriteValues", "12,x"),
        ]
        .into();
        let e = BwHistory::from_state(|k| bad.get(k).copied(), now).unwrap_err();
        assert!(e.to_string().contains("value \"x\""), "{e}");
        // Hostile numbers neither overflow nor make the replay run for
        // ever: a span past six days is refused, huge totals saturate.
        let long: std::collections::HashMap<&str, &str> = [
            ("BWHistoryReadEnds", format_iso(now).leak() as &str),
            ("BWHistoryReadInterval", "1000000000"),
            ("BWHistoryReadValues", "1"),
        ]
        .into();
        let e = BwHistory::from_state(|k| long.get(k).copied(), now).unwrap_err();
        assert!(e.to_string().contains("span"), "{e}");
        let huge: std::collections::HashMap<&str, &str> = [
            ("BWHistoryReadEnds", format_iso(now).leak() as &str),
            ("BWHistoryReadInterval", "1"),
            (
                "BWHistoryReadValues",
                "18446744073709551615,18446744073709551615",
            ),
        ]
        .into();
        let h = BwHistory::from_state(|k| huge.get(k).copied(), now).unwrap();
        assert!(h.read.largest_max(0) > 0);
    }

    #[test]
    fn clock_going_back_is_ignored_and_gaps_are_cheap() {
        let mut h = BwHistory::new(T);
        h.note(T + 100, 10, 10);
        h.note(T + 50, 1_000_000, 1_000_000);
        h.note(T + 101, 0, 0);
        assert_eq!(h.observed(0), 1);
        // A year of silence costs no more than a few steps per day.
        h.note(T + 365 * PERIOD, 0, 0);
        assert_eq!(h.extra_info_lines(0).matches(',').count(), 8);
    }
}
