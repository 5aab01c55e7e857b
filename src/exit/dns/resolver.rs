//! The resolver state machine: questions in, datagrams out, datagrams in,
//! results out, with time passed in (quinn-proto's contract: `handle_*`
//! for inputs, `poll_*` for outputs; after any input, drain
//! `poll_transmit`, then read `poll_timeout`, then drain `poll_event`).
//!
//! One DNS question (name, type) is in flight at most once: identical
//! questions from several streams are merged and all get the result, as in
//! C tor (dns.c:dns_resolve_impl puts later streams on the pending list of
//! the resolve already launched).
//!
//! Safety against off-path spoofing: each question gets a random 16-bit
//! transaction id, unique among those in flight; a response is accepted
//! only if it comes from a nameserver address this question was sent to,
//! carries that id, and echoes the question (type, class IN, and the name:
//! with `randomize_case`, C tor's ServerDNSRandomizeCase, the name goes out
//! in random letter case and must come back in exactly that case, which
//! adds a bit per letter to what a spoofer must guess). Anything else is
//! dropped and the question keeps waiting. The driver adds source-port
//! entropy by binding its UDP socket to a kernel-chosen port.
//!
//! Overload: at most `max_in_flight` questions are sent at once; more wait
//! in a queue (up to `max_queued`) and go out as slots free, so a flood of
//! names that never answer delays honest lookups instead of failing them.
//! A stream that ends stops waiting ([`Resolver::cancel`]); a queued
//! question nobody waits for any more is dropped before it is sent.
//!
//! Retries: an attempt that times out, or answers SERVFAIL or another
//! failure code, is retried on the next nameserver (rotating through the
//! list) until `attempts` sends were made. NXDOMAIN and "no data" are
//! final. A truncated answer is final and transient: there is no TCP
//! fallback.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use hickory_proto::op::ResponseCode;

/// Datagrams this long or longer are dropped (see
/// [`Resolver::handle_datagram`]).
pub const MAX_DATAGRAM: usize = 16 * 1024;
use hickory_proto::rr::RecordType;

use super::cache::{Cache, Cached, Key};
use super::message::{Outcome, build_query, parse_response};
use super::{Answer, Query, ResolveError, ResolverConfig, clip_dns_ttl};

/// A query to send: the driver sends `payload` to `dst` from the worker's
/// resolver socket.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// Counters for the metrics module (per worker; plain integers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    pub cache_hits: u64,
    /// Questions asked (each once, however many sends it took): C tor's
    /// `tor_relay_exit_dns_query_total`.
    pub lookups: u64,
    pub queries_sent: u64,
    pub responses_accepted: u64,
    /// Datagrams dropped: unknown id, wrong source, wrong question,
    /// undecodable.
    pub responses_rejected: u64,
    pub timeouts: u64,
    /// How lookups ended, by C tor's `reason` label ([`DNS_RESULT_NAMES`]),
    /// as its `tor_relay_exit_dns_error_total` counts its resolver's
    /// results: one per lookup, after its retries.
    pub results: [u64; DNS_RESULT_NAMES.len()],
}

/// C tor's DNS result names (relay_metrics.c: fill_dns_error_values,
/// libevent's DNS_ERR_* codes), in its order.
pub const DNS_RESULT_NAMES: [&str; 12] = [
    "success",
    "format",
    "serverfailed",
    "notexist",
    "notimpl",
    "refused",
    "truncated",
    "unknown",
    "tor_timeout",
    "shutdown",
    "cancel",
    "nodata",
];

/// One nameserver's counts (`oxit_dns_queries_total{resolver}`,
/// `oxit_dns_errors_total{resolver,reason}`): per attempt, so that a
/// retry that another nameserver answers still shows the one that failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServerStats {
    /// Queries sent to it, retries included.
    pub queries: u64,
    /// Attempts it failed, by [`SERVER_ERROR_NAMES`].
    pub errors: [u64; SERVER_ERROR_NAMES.len()],
}

/// How one attempt at one nameserver can fail: C tor's `reason` names
/// ([`DNS_RESULT_NAMES`]) for the response codes, a truncated answer,
/// and `tor_timeout` for no answer in time: `format` to `tor_timeout`.
pub const SERVER_ERROR_NAMES: &[&str] = DNS_RESULT_NAMES.split_at(1).1.split_at(8).0;

impl ServerStats {
    fn note(&mut self, name: &str) {
        if let Some(i) = SERVER_ERROR_NAMES.iter().position(|n| *n == name)
            && let Some(c) = self.errors.get_mut(i)
        {
            *c += 1;
        }
    }
}

/// The error name of a response code (libevent's DNS_ERR_* as C tor
/// names them).
fn rcode_name(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::FormErr => "format",
        ResponseCode::ServFail => "serverfailed",
        ResponseCode::NXDomain => "notexist",
        ResponseCode::NotImp => "notimpl",
        ResponseCode::Refused => "refused",
        _ => "unknown",
    }
}

impl ResolverStats {
    fn note(&mut self, name: &str) {
        if let Some(i) = DNS_RESULT_NAMES.iter().position(|n| *n == name)
            && let Some(c) = self.results.get_mut(i)
        {
            *c += 1;
        }
    }
}

/// One stream waiting for a question.
#[derive(Clone, Copy, Debug)]
struct Waiter {
    token: u64,
    /// Ask for this type next if the question has no data.
    fallback: Option<RecordType>,
}

/// One question, in flight or queued.
#[derive(Debug)]
struct Lookup {
    key: Key,
    /// Set when the question is launched (queued questions have none).
    txid: Option<u16>,
    /// The name as sent: `key.0` in random letter case with
    /// `randomize_case`.
    wire_name: String,
    waiters: Vec<Waiter>,
    /// Sends made so far.
    attempts: u32,
    /// Index (modulo the list) of the nameserver for the next send.
    server: usize,
    /// Every nameserver this question was sent to: a late answer to an
    /// earlier attempt is as good as any.
    sent_to: Vec<SocketAddr>,
    deadline: Option<Instant>,
    /// The failure code of the last attempt that ended (`None`: timeout).
    last_rcode: Option<ResponseCode>,
}

type Result_ = Result<Answer, ResolveError>;

/// See the module documentation. `R` supplies transaction ids.
#[derive(Debug)]
pub struct Resolver<R> {
    config: ResolverConfig,
    rng: R,
    cache: Cache,
    lookups: HashMap<u64, Lookup>,
    by_key: HashMap<Key, u64>,
    by_txid: HashMap<u16, u64>,
    /// Which question each waiting token is on.
    by_token: HashMap<u64, u64>,
    /// Questions waiting for a slot, oldest first (ids of lookups with no
    /// txid; stale ids are skipped).
    queued: VecDeque<u64>,
    to_send: VecDeque<u64>,
    timers: BTreeSet<(Instant, u64)>,
    events: VecDeque<(u64, Result_)>,
    next_lookup: u64,
    stats: ResolverStats,
    /// Per nameserver, in `config.nameservers` order.
    servers: Vec<ServerStats>,
}

impl<R: rand::CryptoRng> Resolver<R> {
    /// A resolver with an empty cache. `config.nameservers` must not be
    /// empty ([`ResolverConfig::from_resolv_conf`] guarantees it).
    pub fn new(config: ResolverConfig, rng: R) -> Resolver<R> {
        Resolver {
            cache: Cache::new(config.cache_capacity),
            rng,
            lookups: HashMap::new(),
            by_key: HashMap::new(),
            by_txid: HashMap::new(),
            by_token: HashMap::new(),
            queued: VecDeque::new(),
            to_send: VecDeque::new(),
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            next_lookup: 0,
            stats: ResolverStats::default(),
            servers: vec![ServerStats::default(); config.nameservers.len()],
            config,
        }
    }

    /// Ask `query` on behalf of `token`. `Some` is the result now (a cache
    /// hit, positive or negative, or a refusal); `None` means the result
    /// will come from [`Resolver::poll_event`] with the same token.
    pub fn resolve(&mut self, now: Instant, query: Query, token: u64) -> Option<Result_> {
        let first = query.kind.first_type();
        let waiter = Waiter {
            token,
            fallback: query.kind.fallback_type(),
        };
        self.resolve_type(now, query.name, first, waiter)
    }

    fn resolve_type(
        &mut self,
        now: Instant,
        name: String,
        rtype: RecordType,
        waiter: Waiter,
    ) -> Option<Result_> {
        let key = (name, rtype);
        match self.cache.get(now, &key) {
            Some((cached, left)) => {
                self.stats.cache_hits += 1;
                match settle(&key, cached, left, waiter) {
                    Settled::Done(result) => Some(result),
                    Settled::Fallback(next) => {
                        let waiter = Waiter {
                            fallback: None,
                            ..waiter
                        };
                        self.resolve_type(now, key.0, next, waiter)
                    }
                }
            }
            None => self.enqueue(key, waiter).err().map(Err),
        }
    }

    /// Put `waiter` on the question `key`, launching it (or queueing it
    /// when every slot is taken) if it is new.
    fn enqueue(&mut self, key: Key, waiter: Waiter) -> Result<(), ResolveError> {
        if let Some(&id) = self.by_key.get(&key)
            && let Some(lookup) = self.lookups.get_mut(&id)
        {
            lookup.waiters.push(waiter);
            self.by_token.insert(waiter.token, id);
            return Ok(());
        }
        let queued = self.lookups.len().saturating_sub(self.by_txid.len());
        if self.by_txid.len() >= self.config.max_in_flight && queued >= self.config.max_queued {
            return Err(ResolveError::Overloaded {
                name: key.0.clone(),
                limit: self.config.max_in_flight + self.config.max_queued,
            });
        }
        let id = self.next_lookup;
        self.next_lookup += 1;
        self.by_key.insert(key.clone(), id);
        self.by_token.insert(waiter.token, id);
        self.lookups.insert(
            id,
            Lookup {
                wire_name: key.0.clone(),
                key,
                txid: None,
                waiters: vec![waiter],
                attempts: 0,
                server: 0,
                sent_to: Vec::new(),
                deadline: None,
                last_rcode: None,
            },
        );
        self.queued.push_back(id);
        self.launch_queued();
        Ok(())
    }

    /// Launch queued questions while slots are free: each gets a fresh
    /// transaction id unused by any question in flight (with at most
    /// `max_in_flight`, well under 65536, taken, a few tries suffice) and
    /// its name's random case.
    fn launch_queued(&mut self) {
        while self.by_txid.len() < self.config.max_in_flight {
            let Some(id) = self.queued.pop_front() else {
                return;
            };
            let Some(lookup) = self.lookups.get_mut(&id) else {
                continue;
            };
            let Some(txid) = (0..64)
                .map(|_| self.rng.next_u32() as u16)
                .find(|t| !self.by_txid.contains_key(t))
            else {
                self.queued.push_front(id);
                return;
            };
            lookup.txid = Some(txid);
            if self.config.randomize_case {
                lookup.wire_name = randomize_case(&lookup.key.0, &mut self.rng);
            }
            self.by_txid.insert(txid, id);
            self.to_send.push_back(id);
        }
    }

    /// `token`'s stream ended: it no longer waits. A question still queued
    /// that nobody waits for is dropped; one in flight goes on, so that its
    /// answer is cached (as C tor lets a resolve finish).
    /// Memory the cache takes, approximately (for `MaxMemInQueues`).
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Evict cache entries down to `bytes` (the OOM handler). Returns the
    /// bytes freed.
    pub fn shrink_cache(&mut self, bytes: usize) -> usize {
        self.cache.shrink_to(bytes)
    }

    pub fn cancel(&mut self, token: u64) {
        let Some(id) = self.by_token.remove(&token) else {
            return;
        };
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        lookup.waiters.retain(|w| w.token != token);
        if lookup.waiters.is_empty() && lookup.txid.is_none() {
            self.remove_lookup(id);
        }
    }

    /// The next query to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        while let Some(id) = self.to_send.pop_front() {
            let Some(lookup) = self.lookups.get_mut(&id) else {
                continue;
            };
            let servers = &self.config.nameservers;
            let server = lookup.server % servers.len().max(1);
            let Some(&dst) = servers.get(server) else {
                // No nameserver at all: fail now instead of waiting.
                let name = lookup.key.0.clone();
                let attempts = lookup.attempts;
                self.finish(id, Err(ResolveError::Timeout { name, attempts }));
                continue;
            };
            let Some(txid) = lookup.txid else {
                continue;
            };
            let payload = match build_query(txid, &lookup.wire_name, lookup.key.1) {
                Ok(p) => p,
                Err(reason) => {
                    let name = lookup.key.0.clone();
                    self.finish(id, Err(ResolveError::BadName { name, reason }));
                    continue;
                }
            };
            lookup.attempts += 1;
            if !lookup.sent_to.contains(&dst) {
                lookup.sent_to.push(dst);
            }
            let deadline = now + self.config.timeout;
            if let Some(old) = lookup.deadline.replace(deadline) {
                self.timers.remove(&(old, id));
            }
            self.timers.insert((deadline, id));
            self.stats.queries_sent += 1;
            if let Some(s) = self.servers.get_mut(server) {
                s.queries += 1;
            }
            if lookup.attempts == 1 {
                self.stats.lookups += 1;
            }
            return Some(Transmit { dst, payload });
        }
        None
    }

    /// When [`Resolver::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// Expire attempts whose deadline has passed: retry them on the next
    /// nameserver, or fail them. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.remove(&(deadline, id));
            self.stats.timeouts += 1;
            let Some(lookup) = self.lookups.get_mut(&id) else {
                continue;
            };
            lookup.deadline = None;
            // The attempt that timed out went to the nameserver the lookup
            // still points at (a retry moves it on).
            let servers = self.config.nameservers.len().max(1);
            if let Some(s) = self.servers.get_mut(lookup.server % servers) {
                s.note("tor_timeout");
            }
            tracing::debug!(name = %lookup.key.0, attempt = lookup.attempts, "DNS attempt timed out");
            self.retry_or_fail(id, None);
        }
    }

    /// Take a datagram that arrived on the resolver socket from `from`.
    /// Datagrams that do not answer a question in flight are dropped.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if data.len() >= MAX_DATAGRAM {
            // Possibly cut: the io_uring backend's receive buffers hold
            // 16 KiB, and no answer to a query that advertises 1232 bytes
            // may be this long (RFC 6891 §6.2.5). Dropped on both backends,
            // so the lookup retries, then fails as transient.
            self.stats.responses_rejected += 1;
            tracing::debug!(%from, len = data.len(), "oversized DNS response dropped");
            return;
        }
        let Some(txid) = data.first_chunk::<2>().map(|b| u16::from_be_bytes(*b)) else {
            self.stats.responses_rejected += 1;
            return;
        };
        let Some((id, lookup)) = self
            .by_txid
            .get(&txid)
            .and_then(|id| self.lookups.get(id).map(|l| (*id, l)))
        else {
            self.stats.responses_rejected += 1;
            tracing::debug!(%from, txid, "DNS response for no question in flight; dropped");
            return;
        };
        if !lookup.sent_to.contains(&from) {
            self.stats.responses_rejected += 1;
            tracing::debug!(%from, txid, "DNS response from a server not asked; dropped");
            return;
        }
        let outcome = match parse_response(
            data,
            txid,
            &lookup.wire_name,
            lookup.key.1,
            self.config.randomize_case,
        ) {
            Ok(o) => o,
            Err(why) => {
                self.stats.responses_rejected += 1;
                tracing::debug!(%from, txid, %why, "DNS response dropped");
                return;
            }
        };
        self.stats.responses_accepted += 1;
        // Error codes are counted when the lookup gives up (it may retry).
        match &outcome {
            Outcome::Records { .. } => self.stats.note("success"),
            Outcome::NoData { .. } => self.stats.note("nodata"),
            Outcome::NxDomain { .. } => self.stats.note("notexist"),
            Outcome::Truncated => self.stats.note("truncated"),
            Outcome::Rcode(_) => {}
        }
        // Per nameserver, every answer that is not data counts against
        // the one that gave it, retried or not.
        let failed = match &outcome {
            Outcome::NxDomain { .. } => Some("notexist"),
            Outcome::Truncated => Some("truncated"),
            Outcome::Rcode(rcode) => Some(rcode_name(*rcode)),
            Outcome::Records { .. } | Outcome::NoData { .. } => None,
        };
        if let Some(name) = failed
            && let Some(i) = self.config.nameservers.iter().position(|a| *a == from)
            && let Some(s) = self.servers.get_mut(i)
        {
            s.note(name);
        }
        let key = lookup.key.clone();
        let name = key.0.clone();
        match outcome {
            Outcome::Records {
                addrs,
                hostname,
                ttl,
            } => {
                let cached = Cached::Records { addrs, hostname };
                self.cache.insert_records(now, key, cached.clone(), ttl);
                self.finish_cached(now, id, cached, ttl);
            }
            Outcome::NoData { negative_ttl } => {
                self.cache
                    .insert_negative(now, key, Cached::NoData, negative_ttl);
                self.finish_cached(now, id, Cached::NoData, 0);
            }
            Outcome::NxDomain { negative_ttl } => {
                self.cache
                    .insert_negative(now, key, Cached::NxDomain, negative_ttl);
                self.finish_cached(now, id, Cached::NxDomain, 0);
            }
            Outcome::Truncated => self.finish(id, Err(ResolveError::Truncated { name })),
            Outcome::Rcode(rcode) => self.retry_or_fail(id, Some(rcode)),
        }
    }

    /// The next result for a token whose [`Resolver::resolve`] returned
    /// `None`. Tokens of streams that closed meanwhile still come out: the
    /// caller ignores them.
    pub fn poll_event(&mut self) -> Option<(u64, Result_)> {
        self.events.pop_front()
    }

    /// Counters since creation.
    pub fn stats(&self) -> ResolverStats {
        self.stats
    }

    /// Per-nameserver counters since creation, in the order of
    /// [`Resolver::nameservers`].
    pub fn server_stats(&self) -> &[ServerStats] {
        &self.servers
    }

    /// The nameservers asked, in the configuration's order.
    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.config.nameservers
    }

    /// Questions in flight (sent and not yet answered).
    pub fn in_flight(&self) -> usize {
        self.by_txid.len()
    }

    /// Questions waiting for a slot.
    pub fn queued(&self) -> usize {
        self.lookups.len() - self.by_txid.len()
    }

    /// Drop expired cache entries (the cache also drops them lazily).
    pub fn purge_cache(&mut self, now: Instant) {
        self.cache.purge_expired(now);
    }

    /// After a failed attempt (timeout, or `rcode`): send again to the next
    /// nameserver if attempts remain, else fail the question.
    fn retry_or_fail(&mut self, id: u64, rcode: Option<ResponseCode>) {
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        // The final error reflects the last attempt that ended.
        lookup.last_rcode = rcode;
        if let Some(old) = lookup.deadline.take() {
            self.timers.remove(&(old, id));
        }
        if lookup.attempts < self.config.attempts.max(1) {
            lookup.server += 1;
            self.to_send.push_back(id);
            return;
        }
        let name = lookup.key.0.clone();
        let attempts = lookup.attempts;
        self.stats.note(match lookup.last_rcode {
            None => "tor_timeout",
            Some(ResponseCode::FormErr) => "format",
            Some(ResponseCode::ServFail) => "serverfailed",
            Some(ResponseCode::NotImp) => "notimpl",
            Some(ResponseCode::Refused) => "refused",
            Some(_) => "unknown",
        });
        let err = match lookup.last_rcode {
            Some(ResponseCode::ServFail) => ResolveError::ServerFailure { name, attempts },
            Some(rcode) => ResolveError::Rcode {
                name,
                rcode,
                attempts,
            },
            None => ResolveError::Timeout { name, attempts },
        };
        self.finish(id, Err(err));
    }

    /// Finish question `id` with a cacheable outcome: each waiter gets its
    /// answer, or moves on to its fallback type.
    fn finish_cached(&mut self, now: Instant, id: u64, cached: Cached, ttl: u32) {
        let Some(lookup) = self.remove_lookup(id) else {
            return;
        };
        for waiter in lookup.waiters {
            match settle(&lookup.key, cached.clone(), ttl, waiter) {
                Settled::Done(result) => self.events.push_back((waiter.token, result)),
                Settled::Fallback(next) => {
                    let w = Waiter {
                        token: waiter.token,
                        fallback: None,
                    };
                    if let Some(result) = self.resolve_type(now, lookup.key.0.clone(), next, w) {
                        self.events.push_back((waiter.token, result));
                    }
                }
            }
        }
    }

    /// Finish question `id` with the same result for every waiter.
    fn finish(&mut self, id: u64, result: Result_) {
        if let Some(lookup) = self.remove_lookup(id) {
            for waiter in lookup.waiters {
                self.events.push_back((waiter.token, result.clone()));
            }
        }
    }

    /// Forget question `id` (its waiters are the caller's to answer), and
    /// give its slot to the next queued question.
    fn remove_lookup(&mut self, id: u64) -> Option<Lookup> {
        let lookup = self.lookups.remove(&id)?;
        self.by_key.remove(&lookup.key);
        for w in &lookup.waiters {
            self.by_token.remove(&w.token);
        }
        if let Some(deadline) = lookup.deadline {
            self.timers.remove(&(deadline, id));
        }
        if let Some(txid) = lookup.txid {
            self.by_txid.remove(&txid);
            self.launch_queued();
        }
        Some(lookup)
    }
}

/// `name` with each ASCII letter in a random case (draft-vixie-dnsext-dns0x20).
fn randomize_case(name: &str, rng: &mut impl rand::Rng) -> String {
    let mut bits = 0u32;
    let mut left = 0;
    name.chars()
        .map(|c| {
            if !c.is_ascii_alphabetic() {
                return c;
            }
            if left == 0 {
                bits = rng.next_u32();
                left = 32;
            }
            left -= 1;
            let upper = bits & 1 == 1;
            bits >>= 1;
            if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// What a cached or fresh outcome means for one waiter.
enum Settled {
    Done(Result_),
    /// No data of this type; ask for this one instead.
    Fallback(RecordType),
}

fn settle(key: &Key, cached: Cached, ttl: u32, waiter: Waiter) -> Settled {
    let name = key.0.clone();
    match cached {
        Cached::Records { addrs, hostname } => Settled::Done(Ok(Answer {
            addrs,
            ttl: clip_dns_ttl(ttl),
            hostname,
        })),
        Cached::NxDomain => Settled::Done(Err(ResolveError::NxDomain { name })),
        Cached::NoData => match waiter.fallback {
            Some(next) => Settled::Fallback(next),
            None => Settled::Done(Err(ResolveError::NoData { name, rtype: key.1 })),
        },
    }
}
