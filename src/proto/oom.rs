//! `MaxMemInQueues`: what to free when the relay holds too much in its
//! queues (relay.c:cell_queues_check_size, circuitlist.c:circuits_handle_oom).
//!
//! Each worker counts what it holds (cells waiting on its links, bytes
//! waiting to be written to exit sockets or held from them, optimistic
//! data, creates waiting for a handshake, its DNS cache) a few times a
//! second and publishes the sum; each adds up everyone's. When the total
//! reaches the limit, every worker frees its own share of the excess, so
//! that the total falls to 90 % of the limit without a lock or a message:
//! a worker holding a third of the total frees a third of what must go.
//! Within a worker the order is C tor's: the DNS cache first if it holds
//! more than a fifth of the worker's share of the limit (down to a tenth),
//! then circuits and exit streams, those with the oldest queued data
//! first, until enough is recovered.
//!
//! Differences from C, which the plan cannot hide: cells on a link are
//! already encrypted into its TLS stream, so closing their circuit does
//! not take them back; it stops the circuit from adding more, and they
//! drain. They are still counted as recovered, as C counts the cells it
//! frees. An exit stream chosen here is closed at once, and what it held
//! is dropped.

use std::time::Instant;

/// C tor's `FRACTION_OF_DATA_TO_RETAIN_ON_OOM`.
pub const RETAIN_ON_OOM: f64 = 0.90;
/// C's floor for a relay's limit (`MIN_SERVER_MB`).
pub const MIN_SERVER_BYTES: u64 = 64 << 20;
const ONE_GB: u64 = 1 << 30;
/// C's `MAX_DEFAULT_MEMORY_QUEUE_SIZE` on 64-bit machines.
const MAX_DEFAULT: u64 = 8 * ONE_GB;

/// The limit C tor picks when `MaxMemInQueues` is 0 (config.c:
/// compute_real_max_mem_in_queues): 40 % of RAM from 8 GiB up, else 75 %,
/// between 256 MiB and 8 GiB; 8 GiB when RAM is unknown. A configured value
/// under 64 MiB is raised to 64 MiB, unless `testing` (oxit's test networks
/// use small limits to exercise the handler; C has no such exception).
pub fn effective_limit(configured: u64, ram: Option<u64>, testing: bool) -> u64 {
    if configured == 0 {
        let Some(ram) = ram else { return MAX_DEFAULT };
        let avail = if ram >= 8 * ONE_GB {
            ram / 5 * 2
        } else {
            ram / 4 * 3
        };
        return avail.clamp(ONE_GB / 4, MAX_DEFAULT);
    }
    if testing {
        configured
    } else {
        configured.max(MIN_SERVER_BYTES)
    }
}

/// What one worker holds, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemUsage {
    /// Cells and link-level bytes waiting to be written on links.
    pub links: u64,
    /// Bytes waiting to be written to exit sockets, held from them while
    /// circuit windows are closed, and optimistic data of streams not yet
    /// connected.
    pub streams: u64,
    /// Creates waiting for a handshake.
    pub onion: u64,
    /// The DNS cache.
    pub dns: u64,
    /// Conflux cells waiting for their turn (C tor counts them too:
    /// relay.c:cell_queues_check_size).
    pub conflux: u64,
}

impl MemUsage {
    pub fn total(&self) -> u64 {
        self.links + self.streams + self.onion + self.dns + self.conflux
    }
}

/// Something the handler may close to recover memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Victim<K> {
    /// When its oldest queued byte was queued (`None`: unknown, treated
    /// as the oldest).
    pub since: Option<Instant>,
    /// Bytes its closing recovers.
    pub bytes: u64,
    pub what: K,
}

/// What a worker must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<K> {
    /// Shrink the DNS cache to at most this many bytes.
    pub dns_to: Option<u64>,
    /// Close these, in this order (oldest queued data first).
    pub kill: Vec<K>,
    /// Bytes this worker set out to recover, and the ones the plan does.
    pub to_recover: u64,
    pub recovered: u64,
}

/// The worker's part of the OOM handling: `total` is every worker's
/// usage summed, `mine` this worker's, `workers` how many there are.
/// `None` when the total is under the limit.
pub fn plan<K: Copy>(
    limit: u64,
    total: u64,
    mine: &MemUsage,
    workers: usize,
    mut victims: Vec<Victim<K>>,
) -> Option<Plan<K>> {
    if total < limit || total == 0 {
        return None;
    }
    let workers = workers.max(1) as u64;
    let mut recovered = 0;
    let mut dns_to = None;
    // DNS first (cell_queues_check_size): above a fifth of the limit, down
    // to a tenth, each worker for its share of the limit.
    if mine.dns > limit / 5 / workers {
        let to = limit / 10 / workers;
        dns_to = Some(to);
        recovered += mine.dns - to;
    }
    // This worker's share of the excess over 90 % of the limit.
    let target_total = (limit as f64 * RETAIN_ON_OOM) as u64;
    let excess = total.saturating_sub(target_total);
    let share = mine.total() as f64 / total as f64;
    let to_recover = (excess as f64 * share).ceil() as u64;
    // Oldest first; unknown ages before all known ones.
    victims.sort_by_key(|v| v.since);
    let mut kill = Vec::new();
    for v in victims {
        if recovered >= to_recover {
            break;
        }
        recovered += v.bytes;
        kill.push(v.what);
    }
    Some(Plan {
        dns_to,
        kill,
        to_recover,
        recovered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MB: u64 = 1 << 20;

    #[test]
    fn c_default_limits() {
        assert_eq!(effective_limit(0, None, false), 8 * ONE_GB);
        assert_eq!(effective_limit(0, Some(4 * ONE_GB), false), 3 * ONE_GB);
        assert_eq!(
            effective_limit(0, Some(16 * ONE_GB), false),
            16 * ONE_GB / 5 * 2
        );
        assert_eq!(effective_limit(0, Some(64 * ONE_GB), false), 8 * ONE_GB);
        assert_eq!(effective_limit(0, Some(200 * MB), false), ONE_GB / 4);
        assert_eq!(effective_limit(10 * MB, None, false), 64 * MB);
        assert_eq!(effective_limit(10 * MB, None, true), 10 * MB);
        assert_eq!(effective_limit(ONE_GB, None, false), ONE_GB);
    }

    #[test]
    fn under_the_limit_nothing_happens() {
        let mine = MemUsage {
            links: 50 * MB,
            ..MemUsage::default()
        };
        assert_eq!(plan::<u32>(100 * MB, 99 * MB, &mine, 2, vec![]), None);
    }

    #[test]
    fn oldest_first_until_this_workers_share_is_recovered() {
        let t0 = Instant::now();
        let at = |s: u64| Some(t0 + Duration::from_secs(s));
        // Limit 100 MB, total 120 MB: 30 MB must go to reach 90 MB. This
        // worker holds half of the total, so it frees 15 MB.
        let mine = MemUsage {
            streams: 60 * MB,
            ..MemUsage::default()
        };
        let victims = vec![
            Victim {
                since: at(30),
                bytes: 10 * MB,
                what: 'c',
            },
            Victim {
                since: at(10),
                bytes: 10 * MB,
                what: 'a',
            },
            Victim {
                since: at(20),
                bytes: 10 * MB,
                what: 'b',
            },
        ];
        let p = plan(100 * MB, 120 * MB, &mine, 2, victims).unwrap();
        assert_eq!(p.kill, ['a', 'b']);
        assert_eq!((p.to_recover, p.recovered), (15 * MB, 20 * MB));
        assert_eq!(p.dns_to, None);
    }

    #[test]
    fn a_large_dns_cache_goes_first() {
        // Limit 100 MB over one worker: the cache (25 MB) is over a fifth,
        // so it is cut to a tenth (10 MB), which is enough.
        let mine = MemUsage {
            dns: 25 * MB,
            streams: 80 * MB,
            ..MemUsage::default()
        };
        let v = vec![Victim {
            since: None,
            bytes: MB,
            what: 1u8,
        }];
        let p = plan(100 * MB, 105 * MB, &mine, 1, v).unwrap();
        assert_eq!(p.dns_to, Some(10 * MB));
        assert_eq!(p.to_recover, 15 * MB);
        assert!(p.kill.is_empty());
    }
}
