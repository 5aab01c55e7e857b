//! A relay's directory schedule, sans-IO: when to fetch the consensus and
//! the authority certificates that check it, when to publish the
//! descriptor and to which authorities, and what to make of every answer.
//!
//! The control thread drives it: it calls the `handle_*` methods with
//! answers and the time, carries out what [`DirClient::poll_action`] asks
//! (HTTP requests, building a descriptor, a reachability self-test) and
//! sleeps until [`DirClient::poll_timeout`]. Time is wall-clock seconds,
//! because consensus validity is.
//!
//! The rules are C tor 0.4.9's for an exit (requirements.md §7.3–§7.6):
//! the microdescriptor consensus is fetched from the authorities' DirPorts
//! at a random time in the first half of the interval after `fresh-until`
//! (networkstatus.c:update_consensus_networkstatus_fetch_time_impl, the
//! "early" schedule of exits with RefuseUnknownExits); failures back off
//! with decorrelated jitter (dlstatus.c); a consensus needs good signatures
//! from a majority of the configured authorities, and one that could get
//! them with missing certificates waits up to 20 minutes while they are
//! fetched. The descriptor goes to every v3 authority when it changes,
//! every 18 hours, and 90 minutes after publication if the consensus still
//! does not list us (router.c:mark_my_descriptor_dirty_if_too_old); never
//! before the ORPort was found reachable, unless `AssumeReachable`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use rand::{CryptoRng, RngExt as _};

use super::authcert::{self, AuthCert};
use super::authority::{DirAuthority, FallbackDir};
use super::consensus::{Consensus, RouterStatus, Verdict};
use super::http::{Request, Response};
use super::time::{UnixTime, format_iso};

/// Republish at least this often (`FORCE_REGENERATE_DESCRIPTOR_INTERVAL`).
pub const REPUBLISH_INTERVAL: u64 = 18 * 3600;
/// Republish this long after publishing if the consensus does not list us
/// (`FAST_RETRY_DESCRIPTOR_INTERVAL`).
const NOT_LISTED_RETRY: u64 = 90 * 60;
/// How long a consensus waits for the certificates that would verify it
/// (`DELAY_WHILE_FETCHING_CERTS`).
const CERT_WAIT: u64 = 20 * 60;
/// Drop certificates this long after they expire.
const CERT_KEEP_EXPIRED: u64 = 2 * 86400;
/// Reachability: keep testing this often, and warn after this long
/// (`TIMEOUT_UNTIL_UNREACHABILITY_COMPLAINT`).
const UNREACHABLE_WARN: u64 = 20 * 60;
/// Longest wait between retries of a failed fetch or upload.
const MAX_BACKOFF: u64 = 3600;
/// Largest consensus accepted (dirclient.c `MAX_DIR_DL_SIZE`).
pub const MAX_DOCUMENT: usize = (1 << 24) - 1;

/// What an HTTP request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Consensus,
    Certs,
    Upload,
}

/// Which directory server a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// A configured authority (an index into [`DirClientConfig::authorities`]).
    Authority(usize),
    /// A fallback directory (an index into [`DirClientConfig::fallbacks`]).
    Fallback(usize),
}

/// How to reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Plain HTTP to a DirPort.
    DirPort(SocketAddr),
    /// BEGIN_DIR on a one-hop circuit to the relay's ORPort (directory
    /// caches without a DirPort, such as every fallback directory).
    Tunnel {
        or_addr: SocketAddr,
        rsa_id: [u8; 20],
    },
}

/// An HTTP request for the driver to make.
#[derive(Clone, Debug)]
pub struct Fetch {
    /// Hand it back with the answer.
    pub id: u64,
    pub purpose: Purpose,
    pub server: Server,
    pub via: Via,
    pub request: Request,
}

/// What the driver must do.
#[derive(Debug)]
pub enum DirAction {
    Fetch(Fetch),
    /// Build and sign the descriptors now and give them to
    /// [`DirClient::upload`] (or [`DirClient::publish_failed`]).
    Publish {
        reason: String,
    },
    /// A new consensus is in force: give the workers what they need of it
    /// and keep `text` as the cached copy.
    NewConsensus {
        consensus: Arc<Consensus>,
        text: Arc<str>,
    },
    /// The certificates changed: keep this as the cached copy.
    StoreCerts(String),
    /// Run a reachability self-test through this relay.
    SelfTest(RouterStatus),
}

/// Static settings.
#[derive(Clone, Debug)]
pub struct DirClientConfig {
    /// The configured authorities.
    pub authorities: Vec<DirAuthority>,
    /// Fallback directories: asked for the consensus before our first
    /// publication, as C tor relays do; afterwards the authorities are, as
    /// C tor exits do (they refuse unknown relays, so they keep up to date).
    pub fallbacks: Vec<FallbackDir>,
    /// `DirAuthorityFallbackRate`: an authority's weight against one
    /// fallback's, in thousandths.
    pub authority_fallback_rate_milli: u32,
    pub testing: bool,
    pub publish: bool,
    pub assume_reachable: bool,
    pub own_rsa_id: [u8; 20],
}

/// Retry state of one kind of download (dlstatus.c).
#[derive(Clone, Copy, Debug, Default)]
struct Backoff {
    failures: u32,
    last_delay: u64,
}

impl Backoff {
    /// Decorrelated jitter: uniform in [1, 3 × the last delay), at least
    /// `floor`, at most [`MAX_BACKOFF`].
    fn next<R: CryptoRng>(&mut self, rng: &mut R, floor: u64) -> u64 {
        self.failures = self.failures.saturating_add(1);
        let low = 1;
        let high = (self.last_delay * 3).max(low + 1);
        let d = rng.random_range(low..high).clamp(floor, MAX_BACKOFF);
        self.last_delay = d;
        d
    }

    fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// A consensus waiting for certificates.
struct Pending {
    consensus: Consensus,
    text: Arc<str>,
    since: UnixTime,
}

/// See the module documentation.
pub struct DirClient {
    cfg: DirClientConfig,
    v3idents: Vec<[u8; 20]>,
    certs: Vec<AuthCert>,
    current: Option<Arc<Consensus>>,
    pending: Option<Pending>,
    started: UnixTime,
    next_id: u64,
    actions: VecDeque<DirAction>,
    /// Requests sent and not answered, by id.
    in_flight: Vec<Fetch>,
    next_consensus_fetch: UnixTime,
    consensus_backoff: Backoff,
    next_cert_fetch: UnixTime,
    cert_backoff: Backoff,
    /// Authorities and fallbacks that failed recently, until when.
    down_until: Vec<UnixTime>,
    fallback_down_until: Vec<UnixTime>,
    // Publishing.
    dirty: Option<String>,
    publishing: bool,
    published_at: Option<UnixTime>,
    upload_body: Option<(Arc<Vec<u8>>, String)>,
    /// Per authority: when to retry a failed upload (None: done or none).
    upload_retry: Vec<Option<(UnixTime, Backoff)>>,
    // Reachability.
    reachable: bool,
    next_self_test: UnixTime,
    next_unreachable_warning: UnixTime,
}

impl DirClient {
    pub fn new(cfg: DirClientConfig, now: UnixTime) -> DirClient {
        let n = cfg.authorities.len();
        let v3idents = cfg.authorities.iter().filter_map(|a| a.v3ident).collect();
        DirClient {
            v3idents,
            certs: Vec::new(),
            current: None,
            pending: None,
            started: now,
            next_id: 1,
            actions: VecDeque::new(),
            in_flight: Vec::new(),
            next_consensus_fetch: now,
            consensus_backoff: Backoff::default(),
            next_cert_fetch: now,
            cert_backoff: Backoff::default(),
            down_until: vec![0; n],
            fallback_down_until: vec![0; cfg.fallbacks.len()],
            dirty: Some("oxit just started".into()),
            publishing: false,
            published_at: None,
            upload_body: None,
            upload_retry: vec![None; n],
            reachable: cfg.assume_reachable,
            next_self_test: now,
            next_unreachable_warning: now + UNREACHABLE_WARN,
            cfg,
        }
    }

    /// The consensus in force.
    pub fn consensus(&self) -> Option<&Arc<Consensus>> {
        self.current.as_ref()
    }

    /// Whether the ORPort counts as reachable (self-tested, or assumed).
    pub fn is_reachable(&self) -> bool {
        self.reachable
    }

    /// The check interval: C tor looks every minute, every second in a
    /// test network (mainloop.c:fetch_networkstatus_callback).
    fn tick(&self) -> u64 {
        if self.cfg.testing { 1 } else { 60 }
    }

    /// Load what a previous run kept. Certificates that do not parse are
    /// ignored; a cached consensus is used only if its signatures check out
    /// and it is still reasonably live.
    pub fn load_cached(&mut self, certs: Option<&str>, consensus: Option<&str>, now: UnixTime) {
        if let Some(text) = certs {
            match authcert::parse_all(text) {
                Ok(c) => {
                    self.add_certs(c, now);
                }
                Err(e) => tracing::warn!("ignoring the cached authority certificates: {e}"),
            }
        }
        let Some(text) = consensus else { return };
        match Consensus::parse(text, self.cfg.testing) {
            Ok(c) if !c.is_reasonably_live(now) => tracing::info!(
                "the cached consensus (valid until {}) is too old to use",
                format_iso(c.valid_until)
            ),
            Ok(c) => {
                let check = c.check_signatures(&self.v3idents, &self.certs, now);
                if check.verdict() == Verdict::Accept {
                    tracing::info!(
                        "using the cached consensus valid until {} ({} relays)",
                        format_iso(c.valid_until),
                        c.relays.len()
                    );
                    self.install(c, text.into(), now);
                } else {
                    tracing::warn!("ignoring the cached consensus: {check}");
                }
            }
            Err(e) => tracing::warn!("ignoring the cached consensus: it does not parse: {e}"),
        }
    }

    fn add_certs(&mut self, new: Vec<AuthCert>, now: UnixTime) -> bool {
        let mut changed = false;
        for c in new {
            if !self.v3idents.contains(&c.v3ident) || c.expires + CERT_KEEP_EXPIRED < now {
                continue;
            }
            if self
                .certs
                .iter()
                .any(|o| o.v3ident == c.v3ident && o.signing_key_digest == c.signing_key_digest)
            {
                continue;
            }
            tracing::debug!(
                "adding the certificate of authority {} with signing key {} (expires {})",
                hex::encode_upper(c.v3ident),
                hex::encode_upper(c.signing_key_digest),
                format_iso(c.expires)
            );
            self.certs.push(c);
            changed = true;
        }
        let before = self.certs.len();
        self.certs.retain(|c| c.expires + CERT_KEEP_EXPIRED >= now);
        changed || self.certs.len() != before
    }

    fn certs_text(&self) -> String {
        self.certs.iter().map(|c| c.text.as_str()).collect()
    }

    fn install(&mut self, c: Consensus, text: Arc<str>, now: UnixTime) {
        let c = Arc::new(c);
        self.current = Some(c.clone());
        self.pending = None;
        self.consensus_backoff.reset();
        self.schedule_next_consensus(now);
        tracing::info!(
            "consensus valid from {} until {}: {} relays; next fetch at {}",
            format_iso(c.valid_after),
            format_iso(c.valid_until),
            c.relays.len(),
            format_iso(self.next_consensus_fetch)
        );
        self.actions
            .push_back(DirAction::NewConsensus { consensus: c, text });
    }

    /// When to fetch the next consensus (the "early" schedule).
    fn schedule_next_consensus(&mut self, now: UnixTime) {
        let Some(c) = self.current.clone().filter(|c| c.is_live(now)) else {
            self.next_consensus_fetch = now;
            return;
        };
        let interval = c.fresh_until.saturating_sub(c.valid_after);
        let min_before = 120.min(interval / 16).max(1);
        let mut start = c.fresh_until + min_before;
        let dl_interval = (interval / 2).max(1);
        if start + dl_interval >= c.valid_until {
            start = c.valid_until.saturating_sub(dl_interval + 1);
        }
        let jitter = rand::rng().random_range(0..dl_interval);
        self.next_consensus_fetch = start + jitter;
    }

    fn fetch_in_flight(&self, p: Purpose) -> bool {
        self.in_flight.iter().any(|f| f.purpose == p)
    }

    /// Indices of the v3 authorities: the ones that vote, sign the
    /// consensus and take descriptors.
    fn v3_authorities(&self) -> Vec<usize> {
        self.cfg
            .authorities
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_v3())
            .map(|(i, _)| i)
            .collect()
    }

    /// A v3 authority to ask, avoiding ones that failed recently.
    fn pick_authority<R: CryptoRng>(&self, rng: &mut R, now: UnixTime) -> Option<usize> {
        let candidates = self.v3_authorities();
        let up: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|i| self.down_until.get(*i).is_none_or(|d| *d <= now))
            .collect();
        let from = if up.is_empty() { &candidates } else { &up };
        if from.is_empty() {
            return None;
        }
        from.get(rng.random_range(0..from.len())).copied()
    }

    /// Where to fetch a document from. Before our first publication: a
    /// fallback directory, with each authority weighted
    /// `DirAuthorityFallbackRate` of one (0.1 by default;
    /// node_select.c:router_pick_trusteddirserver_impl); afterwards, an
    /// authority.
    fn pick_server<R: CryptoRng>(&self, rng: &mut R, now: UnixTime) -> Option<Server> {
        let mut up: Vec<usize> = (0..self.cfg.fallbacks.len())
            .filter(|i| self.fallback_down_until.get(*i).is_none_or(|d| *d <= now))
            .collect();
        if up.is_empty() {
            // All failed recently: try them all again (C tor's
            // PDS_RETRY_IF_NO_SERVERS), rather than fall back on the
            // authorities more than their weight says.
            up = (0..self.cfg.fallbacks.len()).collect();
        }
        if self.published_at.is_none() && !up.is_empty() {
            let w = f64::from(self.cfg.authority_fallback_rate_milli) / 1000.0;
            let n_auth = self.v3idents.len() as f64;
            let p_auth = w * n_auth / (up.len() as f64 + w * n_auth);
            if !rng.random_bool(p_auth.clamp(0.0, 1.0)) {
                return Some(Server::Fallback(up[rng.random_range(0..up.len())]));
            }
        }
        self.pick_authority(rng, now).map(Server::Authority)
    }

    /// How logs name a server.
    fn server_name(&self, s: Server) -> String {
        match s {
            Server::Authority(i) => self
                .cfg
                .authorities
                .get(i)
                .map_or_else(String::new, |a| format!("authority {}", a.name())),
            Server::Fallback(i) => self
                .cfg
                .fallbacks
                .get(i)
                .map_or_else(String::new, |f| format!("directory mirror {}", f.or_addr())),
        }
    }

    fn push_fetch(&mut self, purpose: Purpose, server: Server, request: Request) {
        let via = match server {
            Server::Authority(i) => {
                let Some(a) = self.cfg.authorities.get(i) else {
                    return;
                };
                Via::DirPort(match purpose {
                    Purpose::Upload => a.upload_addr(),
                    _ => a.download_addr(),
                })
            }
            Server::Fallback(i) => {
                let Some(f) = self.cfg.fallbacks.get(i) else {
                    return;
                };
                Via::Tunnel {
                    or_addr: f.or_addr(),
                    rsa_id: f.rsa_id,
                }
            }
        };
        let f = Fetch {
            id: self.next_id,
            purpose,
            server,
            via,
            request,
        };
        self.next_id += 1;
        self.in_flight.push(f.clone());
        self.actions.push_back(DirAction::Fetch(f));
    }

    /// `/tor/status-vote/current/consensus-microdesc/<F1>+<F2>...`: the
    /// authorities we trust, by 3-byte v3 identity prefixes, so that a
    /// server never sends one we could not check (dirclient.c:
    /// directory_get_consensus_url). The answer may come compressed.
    fn consensus_request(&self) -> Request {
        let mut fps: Vec<String> = self
            .v3idents
            .iter()
            .map(|id| hex::encode_upper(&id[..3]))
            .collect();
        fps.sort();
        Request::get(format!(
            "/tor/status-vote/current/consensus-microdesc/{}.z",
            fps.join("+")
        ))
    }

    /// Do what is due at `now`.
    pub fn handle_timeout<R: CryptoRng>(&mut self, now: UnixTime, rng: &mut R) {
        // A consensus that waited too long for its certificates is dropped.
        if let Some(p) = &self.pending
            && p.since + CERT_WAIT <= now
        {
            tracing::warn!(
                "giving up on a consensus whose signing certificates could not be fetched in {} minutes",
                CERT_WAIT / 60
            );
            self.pending = None;
            let d = self.consensus_backoff.next(rng, self.tick());
            self.next_consensus_fetch = now + d;
        }
        // Certificates a pending consensus needs.
        if let Some(p) = &self.pending
            && now >= self.next_cert_fetch
            && !self.fetch_in_flight(Purpose::Certs)
        {
            let check = p
                .consensus
                .check_signatures(&self.v3idents, &self.certs, now);
            if !check.missing.is_empty()
                && let Some(server) = self.pick_server(rng, now)
            {
                let list: Vec<String> = check
                    .missing
                    .iter()
                    .map(|(id, sk)| format!("{}-{}", hex::encode_upper(id), hex::encode_upper(sk)))
                    .collect();
                let req = Request::get(format!("/tor/keys/fp-sk/{}", list.join("+")));
                self.push_fetch(Purpose::Certs, server, req);
            }
        }
        // The consensus.
        let live = self.current.as_ref().is_some_and(|c| c.is_live(now));
        if !live
            && self.next_consensus_fetch > now + self.tick()
            && self.consensus_backoff.failures == 0
        {
            self.next_consensus_fetch = now;
        }
        if now >= self.next_consensus_fetch
            && self.pending.is_none()
            && !self.fetch_in_flight(Purpose::Consensus)
            && let Some(server) = self.pick_server(rng, now)
        {
            let req = self.consensus_request();
            self.push_fetch(Purpose::Consensus, server, req);
        }
        self.check_publication(now);
        self.check_reachability(now, rng);
        // Uploads to retry.
        if let Some((body, reason)) = self.upload_body.clone() {
            for i in 0..self.upload_retry.len() {
                if let Some((at, _)) = self.upload_retry[i]
                    && at <= now
                    && !self
                        .in_flight
                        .iter()
                        .any(|f| f.purpose == Purpose::Upload && f.server == Server::Authority(i))
                {
                    self.push_fetch(
                        Purpose::Upload,
                        Server::Authority(i),
                        publish::upload_request(&body, &reason),
                    );
                }
            }
        }
    }

    /// When [`DirClient::handle_timeout`] next has something to do (at
    /// the latest one check interval after `now`).
    pub fn poll_timeout(&self, now: UnixTime) -> UnixTime {
        let mut t = self.next_consensus_fetch.min(now + self.tick());
        if self.pending.is_some() {
            t = t.min(self.next_cert_fetch);
        }
        for (at, _) in self.upload_retry.iter().flatten() {
            t = t.min(*at);
        }
        if !self.reachable && self.cfg.publish {
            t = t.min(self.next_self_test);
        }
        t
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<DirAction> {
        self.actions.pop_front()
    }

    fn take_in_flight(&mut self, id: u64) -> Option<Fetch> {
        let i = self.in_flight.iter().position(|f| f.id == id)?;
        Some(self.in_flight.swap_remove(i))
    }

    /// The answer to request `id`: the parsed response, or why there is
    /// none (connection refused, timeout, malformed HTTP).
    pub fn handle_response<R: CryptoRng>(
        &mut self,
        id: u64,
        answer: Result<Response, String>,
        now: UnixTime,
        rng: &mut R,
    ) {
        let Some(f) = self.take_in_flight(id) else {
            return;
        };
        let name = self.server_name(f.server);
        match (f.purpose, f.server) {
            (Purpose::Consensus, s) => self.on_consensus(&name, s, answer, now, rng),
            (Purpose::Certs, s) => self.on_certs(&name, s, answer, now, rng),
            (Purpose::Upload, Server::Authority(i)) => self.on_upload(&name, i, answer, now, rng),
            (Purpose::Upload, Server::Fallback(_)) => {}
        }
    }

    fn mark_down(&mut self, server: Server, now: UnixTime) {
        let until = now + 10 * self.tick();
        let slot = match server {
            Server::Authority(i) => self.down_until.get_mut(i),
            Server::Fallback(i) => self.fallback_down_until.get_mut(i),
        };
        if let Some(d) = slot {
            *d = until;
        }
    }

    fn consensus_failed<R: CryptoRng>(&mut self, now: UnixTime, rng: &mut R) {
        let d = self.consensus_backoff.next(rng, self.tick());
        self.next_consensus_fetch = now + d;
    }

    /// `server` could not give us a consensus: the next try is later, and
    /// elsewhere (the server stays down past that try, however long the
    /// backoff has grown).
    fn server_failed_consensus<R: CryptoRng>(
        &mut self,
        server: Server,
        now: UnixTime,
        rng: &mut R,
    ) {
        self.consensus_failed(now, rng);
        self.mark_down(server, now);
        let retry = self.next_consensus_fetch + self.tick();
        if let Some(until) = match server {
            Server::Authority(i) => self.down_until.get_mut(i),
            Server::Fallback(i) => self.fallback_down_until.get_mut(i),
        } {
            *until = (*until).max(retry);
        }
    }

    fn on_consensus<R: CryptoRng>(
        &mut self,
        name: &str,
        server: Server,
        answer: Result<Response, String>,
        now: UnixTime,
        rng: &mut R,
    ) {
        let body = match answer {
            Ok(r) if r.status == 200 => r.body,
            Ok(r) => {
                tracing::warn!(
                    "{name} answered {} ({:?}) to our consensus request",
                    r.status,
                    r.reason
                );
                return self.server_failed_consensus(server, now, rng);
            }
            Err(e) => {
                tracing::warn!("fetching the consensus from {name} failed: {e}");
                return self.server_failed_consensus(server, now, rng);
            }
        };
        let Ok(text) = String::from_utf8(body) else {
            tracing::warn!("the consensus from {name} is not UTF-8");
            return self.consensus_failed(now, rng);
        };
        let c = match Consensus::parse(&text, self.cfg.testing) {
            Ok(c) if c.flavor != super::consensus::Flavor::Microdesc => {
                tracing::warn!("{name} sent a consensus of the wrong flavor");
                return self.consensus_failed(now, rng);
            }
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("the consensus from {name} does not parse: {e}");
                return self.consensus_failed(now, rng);
            }
        };
        if let Some(cur) = &self.current
            && c.valid_after <= cur.valid_after
        {
            tracing::debug!(
                "{name} sent a consensus no newer than ours (valid-after {})",
                format_iso(c.valid_after)
            );
            return self.consensus_failed(now, rng);
        }
        let check = c.check_signatures(&self.v3idents, &self.certs, now);
        match check.verdict() {
            Verdict::Accept if !c.is_reasonably_live(now) => {
                tracing::warn!(
                    "{name} sent a consensus valid from {} until {}: not usable at {} \
                     (is our clock right?)",
                    format_iso(c.valid_after),
                    format_iso(c.valid_until),
                    format_iso(now)
                );
                self.consensus_failed(now, rng);
            }
            Verdict::Accept => {
                tracing::debug!("the consensus from {name} checks out");
                self.install(c, text.into(), now);
            }
            Verdict::NeedCerts => {
                tracing::debug!("the consensus from {name} needs authority certificates: {check}");
                self.pending = Some(Pending {
                    consensus: c,
                    text: text.into(),
                    since: now,
                });
                self.next_cert_fetch = now;
                self.cert_backoff.reset();
            }
            Verdict::Reject => {
                tracing::warn!(
                    "rejecting the consensus from {name}: not enough good signatures: {check}"
                );
                self.consensus_failed(now, rng);
            }
        }
    }

    fn on_certs<R: CryptoRng>(
        &mut self,
        name: &str,
        server: Server,
        answer: Result<Response, String>,
        now: UnixTime,
        rng: &mut R,
    ) {
        let parsed = match answer {
            Ok(r) if r.status == 200 => String::from_utf8(r.body)
                .map_err(|_| "not UTF-8".to_owned())
                .and_then(|t| authcert::parse_all(&t).map_err(|e| e.to_string())),
            Ok(r) => Err(format!("answer {} ({:?})", r.status, r.reason)),
            Err(e) => Err(e),
        };
        match parsed {
            Ok(certs) => {
                self.cert_backoff.reset();
                if self.add_certs(certs, now) {
                    self.actions
                        .push_back(DirAction::StoreCerts(self.certs_text()));
                }
                if let Some(p) = self.pending.take() {
                    let check = p
                        .consensus
                        .check_signatures(&self.v3idents, &self.certs, now);
                    match check.verdict() {
                        Verdict::Accept => self.install(p.consensus, p.text, now),
                        Verdict::NeedCerts => {
                            self.next_cert_fetch = now + self.cert_backoff.next(rng, self.tick());
                            self.pending = Some(p);
                        }
                        Verdict::Reject => {
                            tracing::warn!(
                                "rejecting a consensus: not enough good signatures, even with \
                                 the certificates fetched: {check}"
                            );
                            self.consensus_failed(now, rng);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!("fetching authority certificates from {name} failed: {e}");
                self.mark_down(server, now);
                self.next_cert_fetch = now + self.cert_backoff.next(rng, self.tick());
            }
        }
    }
}

mod publish;
#[cfg(test)]
mod tests;
