//! `BandwidthRate`/`BandwidthBurst` and `RelayBandwidthRate`/`Burst`: one
//! pair of token buckets (read, write) for the whole relay, shared by
//! every worker, so the configured rate is what the relay moves in total
//! however its channels and streams are spread over the cores.
//!
//! C tor refills its global buckets every `TokenBucketRefillInterval`
//! (100 ms) from its one main loop (connection.c:connection_bucket_refill).
//! Here a worker charges what it read and wrote once per loop turn (one
//! atomic add per bucket per turn, never per cell), and whoever charges or
//! checks first in a new millisecond refills for the time gone by. A bucket
//! may go into debt by one turn's bytes; while either is in debt the
//! workers stop reading (their sockets stay in the kernel's buffers, so
//! TCP slows the peers down), and they resume once both are positive.
//! Writes are not held back directly: a relay only writes what it read,
//! so holding reads holds writes too.
//!
//! What counts is what C tor rate-limits (connection.c:
//! connection_is_rate_limited): connections to public addresses, and
//! private ones too with `CountPrivateBandwidth 1`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// The shared buckets. A rate of 0 means no limit.
#[derive(Debug)]
pub struct RateLimit {
    epoch: Instant,
    /// Bytes per second, and the bucket size.
    rate: AtomicU64,
    burst: AtomicU64,
    read: AtomicI64,
    write: AtomicI64,
    /// Milliseconds since `epoch` of the last refill.
    refilled_ms: AtomicU64,
    /// Times the read and the write bucket ran empty
    /// (`tor_relay_load_global_rate_limit_reached_total`).
    reached: [AtomicU64; 2],
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            epoch: Instant::now(),
            rate: AtomicU64::new(0),
            burst: AtomicU64::new(0),
            read: AtomicI64::new(0),
            write: AtomicI64::new(0),
            refilled_ms: AtomicU64::new(0),
            reached: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl RateLimit {
    /// Set the rate and burst (bytes); `rate == 0` lifts the limit. A
    /// new limit starts with full buckets; a changed one keeps what its
    /// buckets hold, clipped to the new burst (C: token_bucket_rw_adjust).
    pub fn set(&self, rate: u64, burst: u64, now: Instant) {
        let was = self.rate.swap(rate, Ordering::Relaxed);
        let burst = burst.max(rate);
        self.burst.store(burst, Ordering::Relaxed);
        self.refilled_ms.store(self.ms(now), Ordering::Relaxed);
        for b in [&self.read, &self.write] {
            if was == 0 {
                b.store(to_i64(burst), Ordering::Relaxed);
            } else {
                let _ = b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some(t.min(to_i64(burst)))
                });
            }
        }
    }

    /// Whether a limit is configured (a plain load; workers skip the rest
    /// when there is none).
    pub fn is_limited(&self) -> bool {
        self.rate.load(Ordering::Relaxed) != 0
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Add the tokens of the milliseconds since the last refill, once:
    /// the thread that moves `refilled_ms` forward adds them.
    fn refill(&self, now: Instant) {
        let rate = self.rate.load(Ordering::Relaxed);
        let now_ms = self.ms(now);
        let last = self.refilled_ms.load(Ordering::Relaxed);
        if rate == 0 || now_ms <= last {
            return;
        }
        if self
            .refilled_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let add = to_i64(rate.saturating_mul(now_ms - last) / 1000);
        let burst = to_i64(self.burst.load(Ordering::Relaxed));
        for b in [&self.read, &self.write] {
            let _ = b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(add).min(burst))
            });
        }
    }

    /// Charge one turn's counted bytes; whether the relay is now over its
    /// budget (reads should stop).
    pub fn charge(&self, read: u64, written: u64, now: Instant) -> bool {
        if !self.is_limited() {
            return false;
        }
        self.refill(now);
        let mut over = false;
        for (i, (bucket, n)) in [(&self.read, read), (&self.write, written)]
            .into_iter()
            .enumerate()
        {
            let before = bucket.fetch_sub(to_i64(n), Ordering::Relaxed);
            let after = before.saturating_sub(to_i64(n));
            // Counted once per emptying, by the worker whose charge
            // emptied it: no more atomics than the charge itself.
            if before > 0
                && after <= 0
                && let Some(c) = self.reached.get(i)
            {
                c.fetch_add(1, Ordering::Relaxed);
            }
            over |= after <= 0;
        }
        over
    }

    /// How many times the read and the write bucket ran empty. C tor
    /// counts every connection that found a bucket empty
    /// (connection.c:connection_bucket_read_limit), many per emptying;
    /// oxit counts each emptying once.
    pub fn reached(&self) -> [u64; 2] {
        std::array::from_fn(|i| self.reached.get(i).map_or(0, |c| c.load(Ordering::Relaxed)))
    }

    /// Whether the relay is still over its budget, after refilling.
    pub fn over(&self, now: Instant) -> bool {
        if !self.is_limited() {
            return false;
        }
        self.refill(now);
        self.read.load(Ordering::Relaxed) <= 0 || self.write.load(Ordering::Relaxed) <= 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn unlimited_until_set() {
        let l = RateLimit::default();
        assert!(!l.is_limited());
        assert!(!l.over(Instant::now() + Duration::from_secs(1)));
    }

    #[test]
    fn debt_stops_reads_until_refilled() {
        let l = RateLimit::default();
        let t0 = l.epoch;
        l.set(1000, 2000, t0);
        // The burst is there at once.
        assert!(!l.charge(1500, 100, t0));
        assert!(l.charge(600, 0, t0), "2100 read of a 2000 burst");
        assert!(l.over(t0));
        assert_eq!(l.reached(), [1, 0]);
        // 100 ms bring 100 bytes: still 0 → over; 1 ms more → positive.
        assert!(l.over(t0 + Duration::from_millis(100)));
        assert!(!l.over(t0 + Duration::from_millis(101)));
        // A full bucket never holds more than the burst.
        assert!(!l.over(t0 + Duration::from_secs(60)));
        assert_eq!(l.read.load(Ordering::Relaxed), 2000);
    }

    #[test]
    fn an_emptying_counts_once() {
        let l = RateLimit::default();
        let t0 = l.epoch;
        l.set(1000, 1000, t0);
        for _ in 0..3 {
            assert!(l.charge(1000, 0, t0));
        }
        assert_eq!(l.reached(), [1, 0]);
        // Refilled, then emptied again: a second time.
        assert!(!l.over(t0 + Duration::from_secs(4)));
        assert!(l.charge(1000, 0, t0 + Duration::from_secs(4)));
        assert_eq!(l.reached(), [2, 0]);
    }

    #[test]
    fn writes_count_on_their_own_bucket() {
        let l = RateLimit::default();
        let t0 = l.epoch;
        l.set(1000, 1000, t0);
        assert!(!l.charge(10, 900, t0));
        assert!(l.charge(10, 200, t0));
        assert_eq!(l.reached(), [0, 1]);
    }

    #[test]
    fn the_average_is_the_rate() {
        // A reader that takes 700 bytes whenever it may, for 10 s in 1 ms
        // steps, gets rate × time + burst.
        let l = RateLimit::default();
        let t0 = l.epoch;
        l.set(100_000, 100_000, t0);
        let mut got = 0u64;
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            if !l.over(now) {
                l.charge(700, 0, now);
                got += 700;
            }
        }
        let expect = 100_000 * 10 + 100_000;
        assert!(got.abs_diff(expect) < 2_000, "{got} vs {expect}");
    }

    #[test]
    fn lowering_clips_and_zero_lifts() {
        let l = RateLimit::default();
        let t0 = l.epoch;
        l.set(10_000, 50_000, t0);
        l.set(1_000, 1_000, t0);
        assert_eq!(l.read.load(Ordering::Relaxed), 1_000);
        l.set(0, 0, t0);
        assert!(!l.is_limited());
    }
}
