//! The per-worker DNS cache: one entry per (name, record type), positive or
//! negative, each with its own expiry. Owns lifetimes and eviction; does
//! not own the TTL clients are told (that is clipped by the resolver with
//! [`super::clip_dns_ttl`]).
//!
//! Lifetimes: a positive entry lives for the real TTL of the answer, never
//! more than [`super::MAX_DNS_ENTRY_AGE`] (§5.10; connection_edge.h). C tor
//! caches for the clipped, fuzzed TTL instead (dns.c:evdns_callback passes
//! clip_dns_fuzzy_ttl to dns_found_answer), which can keep an answer
//! longer than its owner allowed; we honour the real TTL. Negative entries
//! (NXDOMAIN, no data) live briefly: RFC 2308's SOA-derived TTL, capped at
//! [`NEGATIVE_TTL_MAX`]. Transient failures are never cached.
//!
//! Size: at most `capacity` entries. When full, expired entries go first,
//! then the entry closest to expiry (it is worth least).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

/// Longest a negative answer is cached, whatever the SOA says.
pub const NEGATIVE_TTL_MAX: u32 = 60;
/// How long a negative answer without SOA is cached.
pub const NEGATIVE_TTL_DEFAULT: u32 = 30;

/// A cache key: lower-cased name without trailing dot, and record type.
pub type Key = (String, RecordType);

/// What is remembered about a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached {
    Records {
        addrs: Vec<IpAddr>,
        hostname: Option<String>,
    },
    NoData,
    NxDomain,
}

#[derive(Debug)]
struct Entry {
    value: Cached,
    expires: Instant,
    seq: u64,
    /// What this entry costs, counted in [`Cache::bytes`].
    cost: usize,
}

/// Bookkeeping per entry besides its name and value: the two maps' nodes
/// and the entry's fields, roughly.
const ENTRY_OVERHEAD: usize = 128;

fn entry_cost(key: &Key, value: &Cached) -> usize {
    let value = match value {
        Cached::Records { addrs, hostname } => {
            addrs.len() * std::mem::size_of::<IpAddr>() + hostname.as_ref().map_or(0, String::len)
        }
        Cached::NoData | Cached::NxDomain => 0,
    };
    // The key is stored twice (map and expiry index).
    2 * key.0.len() + value + ENTRY_OVERHEAD
}

/// See the module documentation.
#[derive(Debug)]
pub struct Cache {
    map: HashMap<Key, Entry>,
    by_expiry: BTreeMap<(Instant, u64), Key>,
    seq: u64,
    capacity: usize,
    bytes: usize,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            map: HashMap::new(),
            by_expiry: BTreeMap::new(),
            seq: 0,
            capacity,
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Memory the entries take, approximately (for `MaxMemInQueues`).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Evict entries, closest to expiry first, until at most `bytes` remain
    /// (dns.c:dns_cache_handle_oom). Returns the bytes freed.
    pub fn shrink_to(&mut self, bytes: usize) -> usize {
        let before = self.bytes;
        while self.bytes > bytes {
            let Some((_, victim)) = self.by_expiry.pop_first() else {
                break;
            };
            if let Some(e) = self.map.remove(&victim) {
                self.bytes = self.bytes.saturating_sub(e.cost);
            }
        }
        before - self.bytes
    }

    /// The entry for `key` if it has not expired, with its remaining
    /// lifetime in whole seconds.
    pub fn get(&mut self, now: Instant, key: &Key) -> Option<(Cached, u32)> {
        let entry = self.map.get(key)?;
        if entry.expires <= now {
            self.remove(key);
            return None;
        }
        let left = entry.expires.saturating_duration_since(now).as_secs();
        Some((entry.value.clone(), u32::try_from(left).unwrap_or(u32::MAX)))
    }

    /// Remember a positive answer with the smallest TTL it carried.
    pub fn insert_records(&mut self, now: Instant, key: Key, value: Cached, ttl: u32) {
        let life = ttl.min(super::MAX_DNS_ENTRY_AGE);
        self.insert(now, key, value, life);
    }

    /// Remember a negative answer (NXDOMAIN or no data) briefly.
    pub fn insert_negative(&mut self, now: Instant, key: Key, value: Cached, soa_ttl: Option<u32>) {
        let life = soa_ttl
            .unwrap_or(NEGATIVE_TTL_DEFAULT)
            .min(NEGATIVE_TTL_MAX);
        self.insert(now, key, value, life);
    }

    fn insert(&mut self, now: Instant, key: Key, value: Cached, life_secs: u32) {
        self.remove(&key);
        if life_secs == 0 || self.capacity == 0 {
            // TTL 0 means "do not cache" (RFC 1035 §3.2.1).
            return;
        }
        self.purge_expired(now);
        while self.map.len() >= self.capacity {
            let Some((_, victim)) = self.by_expiry.pop_first() else {
                break;
            };
            if let Some(e) = self.map.remove(&victim) {
                self.bytes = self.bytes.saturating_sub(e.cost);
            }
        }
        let expires = now + Duration::from_secs(u64::from(life_secs));
        self.seq += 1;
        let cost = entry_cost(&key, &value);
        self.bytes += cost;
        self.by_expiry.insert((expires, self.seq), key.clone());
        self.map.insert(
            key,
            Entry {
                value,
                expires,
                seq: self.seq,
                cost,
            },
        );
    }

    /// Drop every entry that has expired by `now`.
    pub fn purge_expired(&mut self, now: Instant) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(e) = self.map.remove(&key) {
                self.bytes = self.bytes.saturating_sub(e.cost);
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.map.remove(key) {
            self.bytes = self.bytes.saturating_sub(old.cost);
            self.by_expiry.remove(&(old.expires, old.seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> Key {
        (n.to_string(), RecordType::A)
    }

    fn rec(ip: &str) -> Cached {
        Cached::Records {
            addrs: vec![ip.parse().unwrap()],
            hostname: None,
        }
    }

    #[test]
    fn bytes_are_counted_and_shrink_evicts_soonest_expiry() {
        let t0 = Instant::now();
        let mut c = Cache::new(100);
        c.insert_records(t0, key("late"), rec("192.0.2.1"), 1000);
        c.insert_records(t0, key("soon"), rec("192.0.2.2"), 10);
        let one = c.bytes() / 2;
        assert!(one > ENTRY_OVERHEAD);
        assert_eq!(c.shrink_to(one + 1), one);
        assert_eq!(c.len(), 1);
        assert!(c.get(t0, &key("late")).is_some());
        c.purge_expired(t0 + Duration::from_secs(2000));
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn ttl_and_max_age() {
        let t0 = Instant::now();
        let mut c = Cache::new(10);
        c.insert_records(t0, key("a"), rec("192.0.2.1"), 100);
        c.insert_records(t0, key("b"), rec("192.0.2.2"), 1_000_000);
        c.insert_records(t0, key("zero"), rec("192.0.2.3"), 0);
        assert_eq!(c.get(t0, &key("zero")), None);
        assert_eq!(
            c.get(t0 + Duration::from_secs(40), &key("a")),
            Some((rec("192.0.2.1"), 60))
        );
        assert_eq!(c.get(t0 + Duration::from_secs(100), &key("a")), None);
        let age = Duration::from_secs(u64::from(super::super::MAX_DNS_ENTRY_AGE));
        assert!(
            c.get(t0 + age - Duration::from_secs(1), &key("b"))
                .is_some()
        );
        assert_eq!(c.get(t0 + age, &key("b")), None);
        assert!(c.is_empty());
    }

    #[test]
    fn negative_entries_are_brief() {
        let t0 = Instant::now();
        let mut c = Cache::new(10);
        c.insert_negative(t0, key("n"), Cached::NxDomain, Some(86400));
        c.insert_negative(t0, key("d"), Cached::NoData, None);
        assert_eq!(c.get(t0, &key("n")), Some((Cached::NxDomain, 60)));
        assert_eq!(c.get(t0 + Duration::from_secs(30), &key("d")), None);
        assert_eq!(c.get(t0 + Duration::from_secs(60), &key("n")), None);
    }

    #[test]
    fn bounded_size_evicts_soonest_expiry() {
        let t0 = Instant::now();
        let mut c = Cache::new(3);
        c.insert_records(t0, key("long"), rec("192.0.2.1"), 3000);
        c.insert_records(t0, key("short"), rec("192.0.2.2"), 10);
        c.insert_records(t0, key("mid"), rec("192.0.2.3"), 500);
        c.insert_records(t0, key("new"), rec("192.0.2.4"), 600);
        assert_eq!(c.len(), 3);
        assert!(c.get(t0, &key("short")).is_none());
        assert!(c.get(t0, &key("long")).is_some());
        // Expired entries are purged before anything live is evicted.
        let t1 = t0 + Duration::from_secs(550);
        c.insert_records(t1, key("x"), rec("192.0.2.5"), 10);
        assert_eq!(c.len(), 3);
        assert!(c.get(t1, &key("long")).is_some());
        assert!(c.get(t1, &key("new")).is_some());
        // Re-inserting a key replaces it.
        c.insert_records(t1, key("x"), rec("192.0.2.6"), 10);
        assert_eq!(c.get(t1, &key("x")), Some((rec("192.0.2.6"), 10)));
        assert_eq!(c.len(), 3);
    }
}
