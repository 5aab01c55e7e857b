//! The relay's life on the control thread: it starts the data plane, then
//! renews keys, keeps the bandwidth history, runs the directory schedule
//! ([`crate::dir::client`]) and hands the workers a new snapshot when keys,
//! addresses or the consensus change. Nothing here touches a cell.
//!
//! Directory requests and the reachability self-test run on short-lived
//! threads of their own and report back on a channel, so a slow authority
//! never holds up key renewal or a shutdown.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use super::Shutdown;
use super::address::AddressFinder;
use super::state::{self, StateFile};
use crate::config::Config;
use crate::control::accounting::Hibernation;
use crate::crypto::cert::Ed25519Keypair;
use crate::crypto::keys::RelayKeys;
use crate::dir::authority::DirServers;
use crate::dir::bwhist::BwHistory;
use crate::dir::client::{
    DirAction, DirClient, DirClientConfig, Fetch, MAX_DOCUMENT, Purpose, Server, Via,
};
use crate::dir::consensus::Consensus;
use crate::dir::descriptor::{Bandwidth, ExtraInfo, PROTOCOLS, ServerDescriptor, canonical_family};
use crate::dir::http::Response;
use crate::dir::time::{UnixTime, unix};
use crate::exit::policy::ExitPolicy;
use crate::proto::circuit::CircuitConfig;
use crate::runtime::relay::{RunError, local_interface_addrs};
use crate::runtime::{DataPlane, Listeners, PlaneEvent, Snapshot};

/// The cached consensus and certificates, in `DataDirectory` (C tor's names).
const CACHED_CONSENSUS: &str = "cached-microdesc-consensus";
const CACHED_CERTS: &str = "cached-certs";
const STATE_SAVE_EVERY: UnixTime = 3600;
/// How often the control loop looks at everything.
const LOOP: Duration = Duration::from_millis(200);
/// Keys are checked for renewal this often.
const RENEW_EVERY: Duration = Duration::from_secs(60);
/// Bandwidth-triggered republication (router.c:check_descriptor_bandwidth_changed).
const BANDWIDTH_CHANGE_FREQ: u64 = 3 * 3600;
const BANDWIDTH_CHANGE_UPTIME: u64 = 24 * 3600;

/// What a helper thread reports.
enum Done {
    Http(
        u64,
        Server,
        SocketAddr,
        Result<Response, String>,
        super::onehop::Moved,
    ),
    SelfTest(SocketAddr, Result<(), String>, super::onehop::Moved),
    /// What an authority's NETINFO says our address is.
    Learned(
        SocketAddr,
        Result<Option<IpAddr>, String>,
        super::onehop::Moved,
    ),
}

/// Reads the configuration again for a reload (SIGHUP): the same files
/// and command line the relay started with. The error is what to log.
pub type Reloader = Box<dyn FnMut() -> Result<(Config, Vec<String>), String> + Send>;

/// Run the relay until `shutdown` is triggered.
pub fn run(
    config: &Config,
    reload: Reloader,
    keys: RelayKeys,
    listeners: Listeners,
    metrics: Option<std::net::TcpListener>,
    control: Option<super::controlport::ControlListeners>,
    shutdown: Arc<Shutdown>,
) -> Result<(), RunError> {
    let now = unix(SystemTime::now());
    let servers = config.dir_servers();
    let interfaces = local_interface_addrs();
    let mut finder = AddressFinder::new(config);
    let family_keys =
        crate::crypto::keys::load_family_keys(&config.family_key_dir(), &config.family_ids)
            .map_err(|e| RunError::Keys(e.to_string()))?;
    let dir = DirClient::new(
        DirClientConfig {
            authorities: servers.authorities.clone(),
            fallbacks: servers.fallbacks.clone(),
            authority_fallback_rate_milli: config.dir_authority_fallback_rate_milli,
            testing: config.testing_tor_network,
            publish: config.publish_server_descriptor,
            assume_reachable: config.assume_reachable,
            own_rsa_id: *keys.rsa_identity().as_bytes(),
        },
        now,
    );
    if let Some(p) = &config.dir_port {
        tracing::info!(
            "DirPort {p}: oxit serves no directory data yet; it does not listen there and \
             publishes DirPort 0, as C tor relays do"
        );
    }
    log_mem_limit(config);
    log_rate_limit(config);
    if servers.is_default() {
        tracing::info!(
            "using the live Tor network's {} directory authorities",
            servers.v3().count()
        );
    } else {
        tracing::info!(
            "using {} configured directory authorities",
            servers.v3().count()
        );
    }
    let published = published_addrs(&mut finder, &interfaces);
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut c = Control {
        config: config.clone(),
        reload,
        control_port: None,
        metrics_policy: Arc::new(std::sync::RwLock::new(crate::metrics::MetricsPolicy(
            config.metrics_port_policy.clone(),
        ))),
        flags: Arc::default(),
        max_mem: Arc::default(),
        signing_expiry: Arc::new(std::sync::atomic::AtomicU64::new(unix(
            keys.signing_cert().expires_at(),
        ))),
        dir,
        servers,
        finder,
        interfaces,
        published,
        family_keys,
        bw: BwHistory::new(now),
        state: StateFile::default(),
        next_state_save: now + STATE_SAVE_EVERY,
        last_traffic: (0, 0),
        last_onion: crate::proto::circuit::OnionStats::default(),
        extra_traffic: (0, 0),
        last_sample: now,
        last_published_observed: None,
        bandwidth_changed_at: 0,
        started: now,
        tx,
        rx,
        selftest_running: false,
        drain_until: None,
        shared_accounting: Default::default(),
        notify: super::notify::Notifier::from_env(),
        accounting: (config.accounting_max > 0).then(|| {
            crate::control::accounting::Accounting::new(
                config.accounting_max,
                config.accounting_rule,
                config.accounting_start,
                now,
            )
        }),
        learning: false,
        next_learn: now,
        last_publish_problem: None,
        client_link: Arc::new(crate::proto::channel::LinkKeys::from_relay_keys(
            &keys,
            Vec::new(),
        )),
        keys,
    };
    c.load_cache(now);
    c.load_state(now);
    if let Ok(mut s) = c.shared_accounting.lock() {
        s.clone_from(&c.accounting);
    }
    let snap = c.snapshot()?;
    let mut plane = DataPlane::start(config, snap, listeners, shutdown.clone())?;
    let control_conns = Arc::new(crate::metrics::ControlConns::default());
    if let Some(l) = metrics {
        start_metrics(
            config,
            c.metrics_policy.clone(),
            l,
            &plane,
            MetricsExtras {
                flags: c.flags.clone(),
                signing_cert_expiry: c.signing_expiry.clone(),
                max_mem_in_queues: c.max_mem.clone(),
                offline_master_key: !c.keys.has_master_secret(),
                control: control_conns.clone(),
            },
        );
    }
    if let Some(l) = control {
        c.control_port = super::controlport::start(
            config,
            l,
            super::controlport::Shared {
                fingerprint: c.keys.rsa_identity().hex_upper(),
                addresses: c.published.clone(),
                exit_policy: c.exit_policy(),
                started: c.started,
                traffic: plane.traffic_shared(),
                accounting: c.shared_accounting.clone(),
                conns: control_conns,
            },
        );
    }
    c.notify.notify(&format!(
        "READY=1\nSTATUS=relaying on {} worker(s)",
        plane.traffic_shared().len()
    ));
    let res = c.run(&mut plane, &shutdown);
    c.notify.notify("STOPPING=1");
    c.save_state(unix(SystemTime::now()));
    shutdown.trigger();
    let joined = plane.join();
    res.and(joined)
}

/// What the MetricsPort reads besides the data plane.
struct MetricsExtras {
    flags: Arc<std::sync::atomic::AtomicU32>,
    signing_cert_expiry: Arc<std::sync::atomic::AtomicU64>,
    max_mem_in_queues: Arc<std::sync::atomic::AtomicU64>,
    offline_master_key: bool,
    control: Arc<crate::metrics::ControlConns>,
}

/// Serve the MetricsPort from its own thread: a scrape reads what the
/// workers published and never waits for them.
fn start_metrics(
    config: &Config,
    policy: Arc<std::sync::RwLock<crate::metrics::MetricsPolicy>>,
    listener: std::net::TcpListener,
    plane: &DataPlane,
    extras: MetricsExtras,
) {
    let MetricsExtras {
        flags,
        signing_cert_expiry,
        max_mem_in_queues,
        offline_master_key,
        control,
    } = extras;
    let addr = listener
        .local_addr()
        .map_or_else(|_| "(unknown address)".to_owned(), |a| a.to_string());
    if config.metrics_port_policy.is_empty() {
        tracing::warn!(
            "MetricsPort {addr}: MetricsPortPolicy is not set, so every request is refused \
             (add e.g. \"MetricsPortPolicy accept 127.0.0.1\")"
        );
    }
    let src = crate::metrics::Sources {
        traffic: plane.traffic_shared(),
        flags,
        signing_cert_expiry,
        offline_master_key,
        max_mem_in_queues,
        rate_limit: plane.rate_limit_shared(),
        control,
    };
    let spawned = std::thread::Builder::new()
        .name("oxit-metrics".into())
        .spawn(move || crate::metrics::serve(listener, policy, src));
    match spawned {
        Ok(_) => tracing::info!("MetricsPort listening on {addr}"),
        Err(e) => tracing::warn!("cannot start the MetricsPort thread: {e}"),
    }
}

/// What the token buckets hold the relay to.
fn log_rate_limit(config: &Config) {
    match config.rate_limit() {
        Some((rate, burst)) => tracing::info!(
            "Bandwidth limit: {rate} bytes/s, burst {burst} bytes, read and written, over all \
             workers (BandwidthRate/RelayBandwidthRate)"
        ),
        None => tracing::info!("No bandwidth limit (BandwidthRate and RelayBandwidthRate not set)"),
    }
}

/// C tor's start-up lines about `MaxMemInQueues` (config.c:
/// compute_real_max_mem_in_queues).
fn log_mem_limit(config: &Config) {
    use crate::proto::oom::{MIN_SERVER_BYTES, effective_limit};
    let ram = crate::os::total_ram();
    let limit = effective_limit(config.max_mem_in_queues, ram, config.testing_tor_network);
    if config.max_mem_in_queues == 0 {
        tracing::info!(
            "{}MaxMemInQueues is set to {} MB. You can override this by setting \
             MaxMemInQueues by hand.",
            if ram.is_some() {
                "Based on detected system memory, "
            } else {
                ""
            },
            limit >> 20
        );
    } else if limit != config.max_mem_in_queues {
        tracing::warn!(
            "MaxMemInQueues must be at least {} MB on servers for now. Ideally, have it as \
             large as you can afford.",
            MIN_SERVER_BYTES >> 20
        );
    }
}

fn published_addrs(finder: &mut AddressFinder, interfaces: &[IpAddr]) -> Vec<IpAddr> {
    [false, true]
        .into_iter()
        .filter_map(|v6| finder.find(v6, interfaces).ok().map(|(a, _)| a))
        .collect()
}

struct Control {
    /// The running configuration (a reload replaces it).
    config: Config,
    reload: Reloader,
    /// The ControlPort's context, refreshed when the configuration or
    /// our address changes.
    control_port: Option<Arc<super::controlport::ControlContext>>,
    /// `MetricsPortPolicy`, shared with the MetricsPort thread.
    metrics_policy: Arc<std::sync::RwLock<crate::metrics::MetricsPolicy>>,
    /// Our flags in the current consensus, for the MetricsPort.
    flags: Arc<std::sync::atomic::AtomicU32>,
    /// When our Ed25519 signing certificate expires (unix seconds), for
    /// the MetricsPort; stored again whenever the key is renewed.
    signing_expiry: Arc<std::sync::atomic::AtomicU64>,
    /// The effective MaxMemInQueues the workers were last given, for the
    /// MetricsPort.
    max_mem: Arc<std::sync::atomic::AtomicU64>,
    keys: RelayKeys,
    dir: DirClient,
    servers: DirServers,
    finder: AddressFinder,
    interfaces: Vec<IpAddr>,
    /// The addresses we publish (and name in NETINFO).
    published: Vec<IpAddr>,
    family_keys: Vec<Ed25519Keypair>,
    bw: BwHistory,
    /// `DataDirectory/state`: what we keep of it is the bandwidth history.
    state: StateFile,
    next_state_save: UnixTime,
    last_traffic: (u64, u64),
    /// The onion-queue totals at the last heartbeat.
    last_onion: crate::proto::circuit::OnionStats,
    /// Bytes the control thread's own connections moved (directory
    /// requests, the self-test), not yet in the history.
    extra_traffic: (u64, u64),
    last_sample: UnixTime,
    last_published_observed: Option<u64>,
    bandwidth_changed_at: UnixTime,
    started: UnixTime,
    tx: Sender<Done>,
    rx: Receiver<Done>,
    selftest_running: bool,
    /// Draining for a shutdown (SIGINT) until then: refuse new circuits
    /// and streams meanwhile.
    drain_until: Option<Instant>,
    /// systemd's notification socket (a no-op outside systemd).
    notify: super::notify::Notifier,
    /// `AccountingMax` and what was used of it this period.
    accounting: Option<crate::control::accounting::Accounting>,
    /// A copy of it for the ControlPort.
    shared_accounting: crate::control::accounting::SharedAccounting,
    /// An address-learning connection is under way / the next may start.
    learning: bool,
    next_learn: UnixTime,
    last_publish_problem: Option<String>,
    /// Link keys for the client channels of directory tunnels and the
    /// self-test (no addresses: a client's NETINFO names none).
    client_link: Arc<crate::proto::channel::LinkKeys>,
}

impl Control {
    fn data_dir(&self, name: &str) -> PathBuf {
        self.config.data_directory.join(name)
    }

    /// A file of `DataDirectory`, or `None` (with a warning when it exists
    /// but cannot be read).
    fn read_data_file(&self, name: &str) -> Option<String> {
        let p = self.data_dir(name);
        match std::fs::read_to_string(&p) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!("cannot read {}: {e}; ignoring it", p.display());
                None
            }
        }
    }

    /// The bandwidth history of earlier runs (ours or C tor's), so that a
    /// restart neither zeroes the observed bandwidth nor leaves a hole in
    /// the extra-info history.
    fn load_state(&mut self, now: UnixTime) {
        let Some(text) = self.read_data_file(state::FILE) else {
            return;
        };
        self.state = StateFile::parse(&text);
        match BwHistory::from_state(|k| self.state.get(k), now) {
            Ok(bw) => self.bw = bw,
            Err(e) => tracing::warn!("{e}; starting the bandwidth history afresh"),
        }
        if let Some(a) = &mut self.accounting
            && let Some(state) = a.restore(now, |k| self.state.get(k))
        {
            // The snapshot the workers start from carries it: listeners
            // closed before the first connection.
            tracing::info!("Accounting: this period's budget is spent already ({state:?}).");
        }
    }

    /// C tor writes its state file every two hours when it is a relay and
    /// when it stops (statefile.c:or_state_save); oxit every hour.
    fn save_state(&mut self, now: UnixTime) {
        self.next_state_save = now + STATE_SAVE_EVERY;
        for (k, v) in self.bw.state_entries() {
            self.state.set(&k, v);
        }
        for (k, v) in self.accounting.iter().flat_map(|a| a.state_entries()) {
            self.state.set(&k, v);
        }
        let text = self.state.render(now);
        self.store(state::FILE, &text);
    }

    fn load_cache(&mut self, now: UnixTime) {
        let certs = self.read_data_file(CACHED_CERTS);
        let consensus = self.read_data_file(CACHED_CONSENSUS);
        self.dir
            .load_cached(certs.as_deref(), consensus.as_deref(), now);
        // The cached consensus (if used) is applied with the first snapshot.
        while let Some(a) = self.dir.poll_action() {
            if let DirAction::NewConsensus { .. } = a {
                continue;
            }
            tracing::debug!("deferred at startup: {a:?}");
        }
    }

    /// Write `contents` to `DataDirectory/name` through a temporary file,
    /// so a crash never leaves half a file.
    fn store(&self, name: &str, contents: &str) {
        let path = self.data_dir(name);
        let tmp = self.data_dir(&format!("{name}.tmp"));
        let res = std::fs::write(&tmp, contents).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = res {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }

    fn exit_policy(&self) -> ExitPolicy {
        let mut o = self.config.exit_policy_options(&self.interfaces);
        for a in &self.published {
            if !o.published_addresses.contains(a) {
                o.published_addresses.push(*a);
            }
        }
        ExitPolicy::build(&o)
    }

    /// The circuit layer's snapshot: keys, policy, and what the consensus
    /// says (requirements.md §9; C tor's defaults without one).
    fn circuit_config(&self) -> CircuitConfig {
        use crate::crypto::ntor::{NtorKeypair, NtorOnionKeys};
        let cfg = &self.config;
        let ns: Option<&Consensus> = self.dir.consensus().map(|c| &**c);
        let param = |name: &str, default: i32, min: i32, max: i32| {
            ns.map_or(default, |c| c.param(name, default, min, max))
        };
        let known_relays: HashSet<[u8; 20]> = ns
            .map(|c| c.relays.iter().map(|r| r.rsa_id).collect())
            .unwrap_or_default();
        // nodelist.c:node_add_to_address_set: every relay's ORPorts, and the
        // authorities' ORPorts and DirPorts.
        let mut reentry = HashSet::new();
        for r in ns.map(|c| c.relays.as_slice()).unwrap_or_default() {
            if r.or_port != 0 {
                reentry.insert(SocketAddr::new(r.ipv4.into(), r.or_port));
            }
            reentry.extend(r.ipv6);
        }
        for a in &self.servers.authorities {
            reentry.insert(SocketAddr::V4(a.dir_addr));
            if a.or_port != 0 {
                reentry.insert(SocketAddr::new((*a.dir_addr.ip()).into(), a.or_port));
            }
            reentry.extend(a.ipv6);
        }
        let mut own_addrs: Vec<SocketAddr> = cfg.or_ports.iter().map(|p| p.addr).collect();
        for a in &self.published {
            if let Some(p) = cfg
                .or_ports
                .iter()
                .find(|p| p.addr.is_ipv6() == a.is_ipv6())
            {
                own_addrs.push(SocketAddr::new(*a, p.addr.port()));
            }
        }
        let max_mem = crate::proto::oom::effective_limit(
            cfg.max_mem_in_queues,
            crate::os::total_ram(),
            cfg.testing_tor_network,
        );
        self.max_mem
            .store(max_mem, std::sync::atomic::Ordering::Relaxed);
        let u16_param = |n, d, lo, hi| u16::try_from(param(n, d, lo, hi)).unwrap_or(1000);
        CircuitConfig {
            onion_keys: NtorOnionKeys {
                current: NtorKeypair::from_secret_bytes(*self.keys.ntor_key().secret()),
                previous: self
                    .keys
                    .ntor_key_old()
                    .map(|k| NtorKeypair::from_secret_bytes(*k.secret())),
            },
            rsa_id: *self.keys.rsa_identity().as_bytes(),
            ed_id: *self.keys.ed_identity(),
            exit_policy: self.exit_policy(),
            ipv6_exit: cfg.ipv6_exit,
            refuse_unknown_exits: cfg
                .refuse_unknown_exits
                .as_option()
                .unwrap_or(param("refuseunknownexits", 1, 0, 1) != 0),
            known_relays,
            extend_allow_private: cfg.extend_allow_private_addresses,
            own_addrs,
            circwindow: u16_param("circwindow", 1000, 100, 1000),
            cc: crate::proto::cc::CcParams::from_consensus(&param),
            conflux: crate::proto::conflux::ConfluxParams::resolve(
                cfg.conflux_enabled.as_option(),
                &param,
                max_mem,
            ),
            max_queue: usize::try_from(param("circ_max_cell_queue_size", 2500, 50, i32::MAX))
                .unwrap_or(CircuitConfig::DEFAULT_MAX_QUEUE),
            sendme_emit_min_version: u8::try_from(param("sendme_emit_min_version", 1, 0, 255))
                .unwrap_or(1),
            sendme_accept_min_version: u8::try_from(param("sendme_accept_min_version", 0, 0, 255))
                .unwrap_or(0),
            allow_nonearly_extend: param("AllowNonearlyExtend", 0, 0, 1) != 0,
            allow_network_reentry: param("allow-network-reentry", 0, 0, 1) != 0,
            reentry,
            count_private_bandwidth: cfg.count_private_bandwidth,
            dos: crate::proto::dos::DosParams::resolve(&cfg.dos, &param),
            onion: crate::proto::circuit::OnionParams::resolve(cfg.max_onion_queue_delay, &param),
            max_mem_in_queues: max_mem,
            hibernating: self.is_hibernating(),
            dormant: self.acct_state() == Hibernation::Dormant,
            outbound: cfg.outbound_bind.clone(),
        }
    }

    fn snapshot(&self) -> Result<Snapshot, RunError> {
        crate::runtime::build_snapshot(
            &self.keys,
            self.published.clone(),
            Arc::new(self.circuit_config()),
        )
    }

    fn run(&mut self, plane: &mut DataPlane, shutdown: &Shutdown) -> Result<(), RunError> {
        let mut next_renew = Instant::now() + RENEW_EVERY;
        let mut next_heartbeat = Instant::now() + self.config.heartbeat_period;
        let mut next_dir: UnixTime = 0;
        let mut next_watchdog = Instant::now();
        while !shutdown.is_triggered() && !plane.any_finished() {
            let now = unix(SystemTime::now());
            if shutdown.is_draining() && self.drain_until.is_none() {
                let wait = self.config.shutdown_wait_length;
                if wait.is_zero() {
                    tracing::info!(
                        "Interrupt: ShutdownWaitLength is 0; closing channels and exiting."
                    );
                    break;
                }
                tracing::info!(
                    "Interrupt: we have stopped accepting new connections, and will shut down \
                     in {} seconds (sooner once every circuit has closed). Interrupt again to \
                     exit now.",
                    wait.as_secs()
                );
                self.drain_until = Some(Instant::now() + wait);
                plane.set_circuits(Arc::new(self.circuit_config()));
                // systemd's stop timeout must cover the wait (C adds 30 s).
                self.notify.notify(&format!(
                    "STOPPING=1\nEXTEND_TIMEOUT_USEC={}",
                    (wait + Duration::from_secs(30)).as_micros()
                ));
            }
            if let Some(until) = self.drain_until {
                if Instant::now() >= until {
                    tracing::info!("Clean shutdown finished. Exiting.");
                    break;
                }
                // The workers publish their circuit counts every turn;
                // give them one to see the new snapshot.
                if until.saturating_duration_since(Instant::now())
                    < self
                        .config
                        .shutdown_wait_length
                        .saturating_sub(Duration::from_secs(1))
                    && plane.circuits() == 0
                {
                    tracing::info!("Every circuit has closed: clean shutdown finished. Exiting.");
                    break;
                }
            }
            if shutdown.take_stats_request() {
                self.dump_stats(plane, now);
            }
            if let Some(every) = self.notify.watchdog_every()
                && Instant::now() >= next_watchdog
            {
                next_watchdog = Instant::now() + every;
                self.notify.notify("WATCHDOG=1");
            }
            if shutdown.take_reload_request() {
                self.notify.notify(&format!(
                    "RELOADING=1\nMONOTONIC_USEC={}",
                    super::notify::monotonic_usec()
                ));
                self.reload(plane);
                self.notify.notify("READY=1");
                next_heartbeat = Instant::now() + self.config.heartbeat_period;
            }
            let heartbeat = self.config.heartbeat_period;
            if Instant::now() >= next_renew {
                next_renew = Instant::now() + RENEW_EVERY;
                self.renew_keys(plane)?;
            }
            if !heartbeat.is_zero() && Instant::now() >= next_heartbeat {
                next_heartbeat = Instant::now() + heartbeat;
                // C's order (status.c:log_heartbeat): the status line,
                // accounting, handshakes, then DoS.
                let (read, written) = plane.traffic();
                let conns = plane.conn_counts();
                let add = |a: [u64; 2], b: [u64; 2]| [a[0] + b[0], a[1] + b[1]];
                let line = super::status::Heartbeat {
                    uptime_secs: now.saturating_sub(self.started),
                    circuits: plane.circuits(),
                    sent: written,
                    received: read,
                    incoming: conns.or_received,
                    outgoing: add(conns.or_initiated, conns.exit_initiated),
                    hibernating: self.is_hibernating(),
                }
                .line();
                tracing::info!("{line}");
                if let Some(a) = &self.accounting {
                    tracing::info!("{}", a.heartbeat_line(now));
                }
                let onion = plane.onion_stats();
                tracing::info!(
                    "{}",
                    crate::proto::circuit::handshake_heartbeat_line(&onion, &self.last_onion)
                );
                self.last_onion = onion;
                let line = crate::proto::dos::heartbeat_line(
                    &self.circuit_config().dos,
                    &plane.dos_stats(),
                    self.config.dos.refuse_single_hop_client_rendezvous == Some(true),
                );
                tracing::info!("{line}");
            }
            if now > self.last_sample {
                let (r, w) = plane.traffic();
                let (lr, lw) = self.last_traffic;
                let (er, ew) = std::mem::take(&mut self.extra_traffic);
                let (dr, dw) = (r.saturating_sub(lr) + er, w.saturating_sub(lw) + ew);
                self.bw.note(now, dr, dw);
                self.last_traffic = (r, w);
                let change = self.accounting.as_mut().and_then(|a| a.note(now, dr, dw));
                if let Ok(mut s) = self.shared_accounting.lock() {
                    s.clone_from(&self.accounting);
                }
                if let Some(state) = change {
                    self.hibernation_changed(state, plane);
                }
                self.last_sample = now;
                // C looks every minute; in a test network, every second
                // (router.c:check_descriptor_bandwidth_changed).
                if self.config.testing_tor_network || now.is_multiple_of(60) {
                    self.check_bandwidth_change(now);
                }
                if now >= self.next_state_save {
                    self.save_state(now);
                }
            }
            while let Some(ev) = plane.poll_event() {
                match ev {
                    PlaneEvent::Reachable(a) => {
                        let port = self
                            .config
                            .or_ports
                            .iter()
                            .find(|p| p.addr.is_ipv6() == a.is_ipv6())
                            .map_or(0, |p| p.addr.port());
                        self.dir.note_reachable(SocketAddr::new(a, port));
                    }
                }
            }
            while let Ok(done) = self.rx.try_recv() {
                self.on_done(done, plane, now)?;
            }
            if now >= next_dir {
                self.dir.handle_timeout(now, &mut rand::rng());
                next_dir = self.dir.poll_timeout(now);
            }
            let mut acted = false;
            while let Some(a) = self.dir.poll_action() {
                acted = true;
                self.act(a, plane, now)?;
            }
            if acted {
                next_dir = now;
                continue;
            }
            if let Ok(done) = self.rx.recv_timeout(LOOP) {
                self.on_done(done, plane, unix(SystemTime::now()))?;
                next_dir = 0;
            }
        }
        Ok(())
    }

    /// SIGHUP: read the configuration again and apply it; with an error,
    /// keep running on the old one (C tor exits instead). Circuits and
    /// streams stay; new ones follow the new snapshot.
    fn reload(&mut self, plane: &mut DataPlane) {
        let (mut new, warnings) = match (self.reload)() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(
                    "Reloading the configuration failed: {e}. Keeping the configuration oxit \
                     is running with (C tor would exit here)."
                );
                // Logs are reopened all the same: logrotate sent this.
                if let Err(e) = crate::control::logging::reconfigure(&self.config.logs) {
                    tracing::warn!("cannot reopen the logs: {e}");
                }
                return;
            }
        };
        for w in warnings {
            tracing::warn!("{w}");
        }
        for name in new.keep_restart_only(&self.config) {
            tracing::warn!(
                "{name} changed, but oxit cannot apply that while running: restart oxit to \
                 make it take effect. Keeping the old value."
            );
        }
        if let Err(e) = crate::control::logging::reconfigure(&new.logs) {
            tracing::warn!("cannot apply the new Log lines ({e}); keeping the old logs");
            new.logs = self.config.logs.clone();
        }
        crate::control::logging::set_safe_logging(new.safe_logging.scrubs());
        if new == self.config {
            tracing::info!("Configuration unchanged; logs reopened.");
            return;
        }
        let republish = new.descriptor_differs(&self.config);
        if new.family_ids != self.config.family_ids {
            match crate::crypto::keys::load_family_keys(&new.family_key_dir(), &new.family_ids) {
                Ok(k) => self.family_keys = k,
                Err(e) => {
                    tracing::warn!(
                        "cannot load the new family keys ({e}); keeping the old FamilyId set"
                    );
                    new.family_ids = self.config.family_ids.clone();
                }
            }
        }
        if let Ok(mut p) = self.metrics_policy.write() {
            *p = crate::metrics::MetricsPolicy(new.metrics_port_policy.clone());
        }
        if new.rate_limit() != self.config.rate_limit() {
            plane.set_rate_limit(new.rate_limit());
            log_rate_limit(&new);
        }
        let acct = |c: &Config| (c.accounting_max, c.accounting_rule, c.accounting_start);
        let acct_change = if acct(&new) == acct(&self.config) {
            None
        } else {
            let now = unix(SystemTime::now());
            let before = self.acct_state();
            match (&mut self.accounting, new.accounting_max) {
                (_, 0) => {
                    self.accounting = None;
                    (before != Hibernation::Awake).then_some(Hibernation::Awake)
                }
                (Some(a), max) => {
                    a.reconfigure(max, new.accounting_rule, new.accounting_start, now)
                }
                (None, max) => {
                    let mut a = crate::control::accounting::Accounting::new(
                        max,
                        new.accounting_rule,
                        new.accounting_start,
                        now,
                    );
                    let change = a.restore(now, |k| self.state.get(k));
                    self.accounting = Some(a);
                    change
                }
            }
        };
        self.config = new;
        self.refresh_control_port();
        if let Some(state) = acct_change {
            self.hibernation_changed(state, plane);
        }
        plane.set_circuits(Arc::new(self.circuit_config()));
        tracing::info!(
            "Configuration reloaded; new circuits and streams follow it, open ones stay."
        );
        if republish {
            self.dir.mark_dirty("config change");
        }
    }

    /// What the ControlPort answers for the configuration, exit policy
    /// and address: the running ones (the policy the workers enforce,
    /// with our published addresses rejected).
    fn refresh_control_port(&self) {
        if let Some(ctx) = &self.control_port {
            ctx.refresh(&self.config, &self.exit_policy(), &self.published);
        }
    }

    /// C's we_are_hibernating: draining for a shutdown, or accounting.
    fn is_hibernating(&self) -> bool {
        self.drain_until.is_some() || self.acct_state() != Hibernation::Awake
    }

    fn acct_state(&self) -> Hibernation {
        self.accounting
            .as_ref()
            .map_or(Hibernation::Awake, |a| a.state())
    }

    /// The accounting budget moved the relay between awake, soft
    /// hibernation and dormant: tell the workers, log as C tor, and
    /// publish the descriptor's `hibernating` line.
    fn hibernation_changed(&mut self, state: Hibernation, plane: &mut DataPlane) {
        match state {
            Hibernation::Soft => tracing::info!(
                "Bandwidth soft limit reached; commencing hibernation. No new connections \
                 will be accepted"
            ),
            Hibernation::Dormant => {
                tracing::info!("Going dormant. Blowing away remaining connections.")
            }
            Hibernation::Awake => {
                tracing::info!("Hibernation period ended. Resuming normal activity.")
            }
        }
        plane.set_circuits(Arc::new(self.circuit_config()));
        self.dir.mark_dirty("hibernation state changed");
    }

    /// SIGUSR1: a summary of what the relay did, at notice (C tor's
    /// main.c:dumpstats lists every connection; oxit sums per worker).
    fn dump_stats(&self, plane: &DataPlane, now: UnixTime) {
        use std::sync::atomic::Ordering::Relaxed;
        let up = now.saturating_sub(self.started).max(1);
        let (r, w) = plane.traffic();
        tracing::info!("Dumping stats:");
        tracing::info!(
            "oxit has been up for {up} seconds; read {r} and wrote {w} bytes              ({} and {} bytes/s on average)",
            r / up,
            w / up
        );
        let timeouts = 2 + crate::exit::dns::DNS_RESULT_NAMES
            .iter()
            .position(|n| *n == "tor_timeout")
            .unwrap_or(0);
        for (i, t) in plane.traffic_shared().iter().enumerate() {
            let dns = |k: usize| t.dns.get(k).map_or(0, |a| a.load(Relaxed));
            tracing::info!(
                "worker {i}: {} circuits, read {} and wrote {} bytes, {} bytes queued;                  {} exit streams, {} resolves; {} DNS lookups, {} cache hits, {} timeouts",
                t.circuits.load(Relaxed),
                t.read.load(Relaxed),
                t.written.load(Relaxed),
                t.mem.load(Relaxed),
                t.streams.first().map_or(0, |a| a.load(Relaxed)),
                t.streams.get(1).map_or(0, |a| a.load(Relaxed)),
                dns(0),
                dns(1),
                dns(timeouts),
            );
        }
        let o = plane.onion_stats();
        tracing::info!(
            "handshakes since start: {} CREATE_FAST, {} ntor, {} ntor-v3; {} creates dropped \
             with the onion queue full, {} after waiting too long",
            o.processed[0],
            o.assigned[0],
            o.assigned[1],
            o.dropped.iter().sum::<u64>(),
            o.timed_out
        );
        tracing::info!(
            "{}",
            crate::proto::dos::heartbeat_line(
                &self.circuit_config().dos,
                &plane.dos_stats(),
                self.config.dos.refuse_single_hop_client_rendezvous == Some(true),
            )
        );
    }

    fn on_done(
        &mut self,
        done: Done,
        plane: &mut DataPlane,
        now: UnixTime,
    ) -> Result<(), RunError> {
        match done {
            Done::Http(id, server, from, res, moved) => {
                if self.config.count_private_bandwidth
                    || !crate::exit::dns::address::is_internal(from.ip())
                {
                    self.extra_traffic.0 += moved.read;
                    self.extra_traffic.1 += moved.written;
                }
                if let (Ok(r), Server::Authority(_)) = (&res, server) {
                    self.address_suggestion(r, from, plane)?;
                }
                self.dir.handle_response(id, res, now, &mut rand::rng());
            }
            Done::Learned(from, res, moved) => {
                self.learning = false;
                self.extra_traffic.0 += moved.read;
                self.extra_traffic.1 += moved.written;
                match res {
                    Ok(Some(a)) => self.suggested(a, from, plane)?,
                    Ok(None) => {}
                    Err(e) => tracing::debug!("learning our address from {from} failed: {e}"),
                }
            }
            Done::SelfTest(target, res, moved) => {
                self.selftest_running = false;
                // Our own connection's bytes count, as in C tor (its
                // bandwidth self-test is what first gives a relay an
                // observed bandwidth).
                self.extra_traffic.0 += moved.read;
                self.extra_traffic.1 += moved.written;
                match res {
                    // Our own ntor answer came back through another relay:
                    // it reached our ORPort from outside.
                    Ok(()) => self.dir.note_reachable(target),
                    Err(e) => tracing::debug!("reachability self-test circuit failed: {e}"),
                }
            }
        }
        Ok(())
    }

    fn act(&mut self, a: DirAction, plane: &mut DataPlane, now: UnixTime) -> Result<(), RunError> {
        match a {
            DirAction::Fetch(f) => self.spawn_fetch(f),
            DirAction::Publish { reason } => self.publish(&reason, now),
            DirAction::NewConsensus { consensus, text } => {
                self.store(CACHED_CONSENSUS, &text);
                let rotation = consensus.param("onion-key-rotation-days", 28, 1, 90);
                let grace = consensus.param("onion-key-grace-period-days", 7, 1, rotation);
                let days = |d: i32| Duration::from_secs(u64::try_from(d).unwrap_or(1) * 86400);
                self.keys.set_onion_lifetimes(days(rotation), days(grace));
                let me = self.keys.rsa_identity();
                let flags = consensus.relay(me.as_bytes()).map_or(0, |r| r.flags.bits());
                self.flags
                    .store(u32::from(flags), std::sync::atomic::Ordering::Relaxed);
                match consensus.relay(me.as_bytes()) {
                    Some(r) => tracing::info!(
                        "the consensus lists us as {} with flags {}",
                        r.nickname,
                        r.flags
                    ),
                    None => tracing::info!(
                        "new consensus ({} relays); it does not list us yet",
                        consensus.relays.len()
                    ),
                }
                plane.set_circuits(Arc::new(self.circuit_config()));
            }
            DirAction::StoreCerts(text) => self.store(CACHED_CERTS, &text),
            DirAction::SelfTest(via) => self.self_test(via),
        }
        Ok(())
    }

    fn spawn_fetch(&self, f: Fetch) {
        let tx = self.tx.clone();
        let stall = if self.config.testing_tor_network {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(300)
        };
        let max = match f.purpose {
            Purpose::Upload => 1 << 20,
            Purpose::Consensus | Purpose::Certs => MAX_DOCUMENT,
        };
        let link = self.client_link.clone();
        let (id, server) = (f.id, f.server);
        let addr = match f.via {
            Via::DirPort(a) | Via::Tunnel { or_addr: a, .. } => a,
        };
        let spawned = std::thread::Builder::new()
            .name("oxit-dir".into())
            .spawn(move || {
                let (res, moved) = match f.via {
                    Via::DirPort(a) => super::dirconn::exchange(a, &f.request, stall, max),
                    Via::Tunnel { or_addr, rsa_id } => {
                        super::onehop::begin_dir(link, or_addr, rsa_id, &f.request, stall, max)
                    }
                };
                let _ = tx.send(Done::Http(id, server, addr, res, moved));
            });
        if let Err(e) = spawned {
            let _ = self.tx.send(Done::Http(
                id,
                server,
                addr,
                Err(format!("cannot start a thread: {e}")),
                Default::default(),
            ));
        }
    }

    /// `X-Your-Address-Is` from an authority's DirPort: how it sees us.
    fn address_suggestion(
        &mut self,
        r: &Response,
        from: SocketAddr,
        plane: &mut DataPlane,
    ) -> Result<(), RunError> {
        match r.your_address() {
            Some(a) => self.suggested(a, from, plane),
            None => Ok(()),
        }
    }

    /// An authority at `from` says it sees us as `a` (X-Your-Address-Is,
    /// or the other-address of its NETINFO). Only authorities are
    /// believed, never our own address or a private one
    /// (relay_find_addr.c:relay_address_new_suggestion).
    fn suggested(
        &mut self,
        a: IpAddr,
        from: SocketAddr,
        plane: &mut DataPlane,
    ) -> Result<(), RunError> {
        let from_authority = self.servers.authorities.iter().any(|x| {
            let ip = from.ip();
            IpAddr::V4(*x.dir_addr.ip()) == ip || x.ipv6.is_some_and(|v| v.ip() == ip)
        });
        if !from_authority || a == from.ip() || !self.finder.suggest(a) {
            return Ok(());
        }
        tracing::info!("External address seen and suggested by a directory authority: {a}");
        let now_published = published_addrs(&mut self.finder, &self.interfaces);
        if now_published != self.published {
            self.published = now_published;
            self.refresh_control_port();
            self.dir.reset_reachability(unix(SystemTime::now()));
            self.dir.mark_dirty("IP address changed");
            plane.set_keys(
                &self.keys,
                self.published.clone(),
                Arc::new(self.circuit_config()),
            )?;
        }
        Ok(())
    }

    fn renew_keys(&mut self, plane: &mut DataPlane) -> Result<(), RunError> {
        match self.keys.renew(SystemTime::now(), &mut rand::rng()) {
            Ok(o)
                if o.signing
                    || o.auth
                    || o.tls
                    || o.crosscert
                    || o.onion_rotated
                    || o.onion_old_dropped =>
            {
                tracing::info!("renewed keys ({o:?}); handing workers the new snapshot");
                if o.onion_rotated {
                    self.dir.mark_dirty("rotated onion key");
                } else if o.signing {
                    self.dir.mark_dirty("new signing key");
                }
                if o.signing {
                    self.signing_expiry.store(
                        unix(self.keys.signing_cert().expires_at()),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                if let Err(e) = plane.set_keys(
                    &self.keys,
                    self.published.clone(),
                    Arc::new(self.circuit_config()),
                ) {
                    tracing::error!("renewed keys but cannot build the TLS config: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!("key renewal failed: {e}"),
        }
        Ok(())
    }

    /// `TestingMinTimeToReportBandwidth`: a day, 0 in a test network.
    fn min_report_time(&self) -> u64 {
        if self.config.testing_tor_network {
            0
        } else {
            86400
        }
    }

    /// router.c:check_descriptor_bandwidth_changed: during the first day,
    /// republish when the observed bandwidth doubles or halves (at most
    /// every 3 hours, except from zero or in a test network).
    fn check_bandwidth_change(&mut self, now: UnixTime) {
        let Some(prev) = self.last_published_observed else {
            return;
        };
        if now.saturating_sub(self.started) > BANDWIDTH_CHANGE_UPTIME {
            return;
        }
        let cur = self.bw.observed(self.min_report_time());
        let changed = (prev != cur && (prev == 0 || cur == 0)) || cur > prev * 2 || cur < prev / 2;
        if changed
            && (self.bandwidth_changed_at + BANDWIDTH_CHANGE_FREQ < now
                || self.config.testing_tor_network
                || prev == 0)
        {
            self.bandwidth_changed_at = now;
            self.dir.mark_dirty("bandwidth has changed");
        }
    }

    fn publish_problem(&mut self, reason: String, problem: String, now: UnixTime) {
        if self.last_publish_problem.as_deref() != Some(problem.as_str()) {
            tracing::warn!("not publishing a descriptor: {problem}");
            self.last_publish_problem = Some(problem);
        }
        self.dir.publish_failed(reason, now);
    }

    /// No address to publish: ask an authority how it sees us, at most
    /// every 20 minutes (relay_find_addr.c:relay_addr_learn_from_dirauth,
    /// `DUMMY_DOWNLOAD_INTERVAL`).
    fn learn_address(&mut self, now: UnixTime) {
        if self.learning || now < self.next_learn {
            return;
        }
        self.next_learn = now
            + if self.config.testing_tor_network {
                30
            } else {
                20 * 60
            };
        let auths: Vec<_> = self
            .servers
            .v3()
            .filter(|a| a.or_port != 0)
            .map(|a| {
                (
                    SocketAddr::new(IpAddr::V4(*a.dir_addr.ip()), a.or_port),
                    a.rsa_id,
                )
            })
            .collect();
        if auths.is_empty() {
            return;
        }
        let (or_addr, rsa_id) = auths[rand::random_range(0..auths.len())];
        let link = self.client_link.clone();
        let tx = self.tx.clone();
        self.learning = true;
        let spawned = std::thread::Builder::new()
            .name("oxit-learn-addr".into())
            .spawn(move || {
                let (res, moved) = super::onehop::learn_address(link, or_addr, rsa_id);
                let _ = tx.send(Done::Learned(or_addr, res, moved));
            });
        if spawned.is_err() {
            self.learning = false;
        }
    }

    /// Build the server and extra-info descriptors and hand them to the
    /// directory client for upload.
    fn publish(&mut self, reason: &str, now: UnixTime) {
        let cfg = &self.config;
        let v4 = match self.finder.find(false, &self.interfaces) {
            Ok((IpAddr::V4(a), _)) => a,
            Ok(_) => return self.publish_problem(reason.into(), "no IPv4 address".into(), now),
            Err(e) => {
                self.learn_address(now);
                return self.publish_problem(reason.into(), e, now);
            }
        };
        let port = |v6: bool| {
            cfg.or_ports
                .iter()
                .find(|p| !p.no_advertise && p.addr.is_ipv6() == v6)
                .map(|p| p.addr.port())
        };
        let Some(or_port) = port(false) else {
            return self.publish_problem(reason.into(), "no IPv4 ORPort to advertise".into(), now);
        };
        let ipv6 = match (self.finder.find(true, &self.interfaces), port(true)) {
            (Ok((IpAddr::V6(a), _)), Some(p)) => Some(SocketAddrV6::new(a, p, 0, 0)),
            _ => None,
        };
        let observed = self.bw.observed(self.min_report_time());
        let (rate, burst) = cfg.advertised_bandwidth();
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX).min(i32::MAX as u32);
        let history = self.bw.extra_info_lines(cfg.relay_bandwidth_rate);
        let family = canonical_family(
            &cfg.my_family,
            self.keys.rsa_identity().as_bytes(),
            &cfg.nickname,
        );
        let rotation_days = self
            .dir
            .consensus()
            .map_or(28, |c| c.param("onion-key-rotation-days", 28, 1, 90));
        let policy = self.exit_policy();
        let platform = format!("oxit {} on {}", env!("CARGO_PKG_VERSION"), uname());
        let rng = &mut rand::rng();
        let built = ExtraInfo {
            nickname: &cfg.nickname,
            published: now,
            history: &history,
        }
        .sign(&self.keys, rng)
        .and_then(|(ei, digest)| {
            let sd = ServerDescriptor {
                nickname: &cfg.nickname,
                ipv4: v4,
                or_port,
                ipv6,
                platform: &platform,
                protocols: PROTOCOLS,
                published: now,
                uptime: now.saturating_sub(self.started),
                bandwidth: Bandwidth {
                    rate: clamp(rate),
                    burst: clamp(burst),
                    observed: clamp(observed),
                },
                extra_info: Some(digest),
                family: &family,
                family_keys: &self.family_keys,
                hibernating: self.is_hibernating(),
                contact: cfg.contact_info.as_deref(),
                exit_policy: &policy,
                ipv6_exit: cfg.ipv6_exit,
                onion_key_lifetime: Duration::from_secs(
                    u64::try_from(rotation_days).unwrap_or(28) * 86400,
                ),
            }
            .sign(&self.keys, rng)?;
            Ok((sd, ei))
        });
        match built {
            Ok((sd, ei)) => {
                self.last_publish_problem = None;
                self.last_published_observed = Some(observed);
                let mut body = sd.into_bytes();
                body.extend_from_slice(ei.as_bytes());
                tracing::info!(
                    "publishing our descriptor ({reason}): {v4}:{or_port}, bandwidth {rate} {burst} {observed}"
                );
                self.dir.upload(body, reason, now);
            }
            Err(e) => self.publish_problem(reason.into(), e.to_string(), now),
        }
    }

    fn self_test(&mut self, via: crate::dir::consensus::RouterStatus) {
        if self.selftest_running {
            return;
        }
        let Some(IpAddr::V4(target)) = self.published.iter().find(|a| a.is_ipv4()).copied() else {
            return;
        };
        let Some(port) = self
            .config
            .or_ports
            .iter()
            .find(|p| !p.no_advertise && p.addr.is_ipv4())
            .map(|p| p.addr.port())
        else {
            return;
        };
        let job = super::onehop::SelfTestJob {
            link: Arc::new(crate::proto::channel::LinkKeys::from_relay_keys(
                &self.keys,
                Vec::new(),
            )),
            bandwidth_rate: self.config.bandwidth_rate,
            via_addr: SocketAddr::new(via.ipv4.into(), via.or_port),
            via_id: via.rsa_id,
            target: std::net::SocketAddrV4::new(target, port),
            target_rsa_id: *self.keys.rsa_identity().as_bytes(),
            target_ed_id: *self.keys.ed_identity(),
            target_ntor: *self.keys.ntor_key().public(),
        };
        tracing::debug!(
            "testing reachability of {} through {} ({})",
            job.target,
            via.nickname,
            job.via_addr
        );
        self.selftest_running = true;
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("oxit-selftest".into())
            .spawn(move || {
                let (res, moved) = super::onehop::self_test(&job);
                let _ = tx.send(Done::SelfTest(SocketAddr::V4(job.target), res, moved));
            });
        if spawned.is_err() {
            self.selftest_running = false;
        }
    }
}

/// The operating system's name, for the `platform` line ("Linux").
fn uname() -> String {
    // SAFETY: uname fills the struct we own; a zeroed utsname is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "Unknown".into();
    }
    let bytes: Vec<u8> = u
        .sysname
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
