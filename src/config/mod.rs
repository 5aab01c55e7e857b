//! torrc-compatible configuration: reading files (`%include` included),
//! turning option lines into a typed [`Config`], and describing the result.
//!
//! What this module owns: the torrc syntax ([`lexer`]), file and `%include`
//! handling ([`include`]), the option table and value syntax ([`options`]),
//! and the list of C tor options oxit accepts but ignores ([`known`]). The
//! reference of every option is `docs/options.md`.
//!
//! What it does not own: logging (warnings are *returned* in the parse
//! result; `main` logs them), enumerating interfaces or resolving addresses
//! (the caller passes them to [`Config::build_exit_policy`]), and the exit
//! policy semantics themselves (`crate::exit::policy`).
//!
//! Every error names the file, the line and the problem; any error stops
//! startup.

mod control;
mod include;
mod known;
mod lexer;
mod options;
mod reload;
#[cfg(test)]
mod tests;

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dir::authority::{DirAuthority, DirServers, FallbackDir};
use crate::exit::policy::{ExitPolicy, ExitPolicyOptions, PolicyParseError, PolicyRule};

pub use control::{
    ControlOptions, ControlSocket, HASHED_PASSWORD_LEN, HashedPassword, decode_hashed_password,
};
pub use known::KNOWN_UNIMPLEMENTED;

/// The canonical spelling of `name` if it is a C tor option, whether oxit
/// implements it or accepts it with a warning (the ControlPort's GETCONF
/// tells these apart from unknown keys, as C tor does).
pub fn canonical_option_name(name: &str) -> Option<&'static str> {
    options::implemented()
        .find(|o| o.eq_ignore_ascii_case(name))
        .or_else(|| known::lookup(name))
}

/// `0`, `1` or `auto` (C tor's autobool).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoBool {
    Off,
    On,
    Auto,
}

impl AutoBool {
    /// `Some(bool)` for 0/1, `None` for auto.
    pub fn as_option(self) -> Option<bool> {
        match self {
            AutoBool::Off => Some(false),
            AutoBool::On => Some(true),
            AutoBool::Auto => None,
        }
    }
}

impl fmt::Display for AutoBool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AutoBool::Off => "0",
            AutoBool::On => "1",
            AutoBool::Auto => "auto",
        })
    }
}

/// `SafeLogging 0|1|relay`. oxit is only ever a relay, so `relay` scrubs
/// what `1` scrubs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SafeLogging {
    Off,
    On,
    Relay,
}

impl SafeLogging {
    pub fn scrubs(self) -> bool {
        self != SafeLogging::Off
    }
}

impl fmt::Display for SafeLogging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SafeLogging::Off => "0",
            SafeLogging::On => "1",
            SafeLogging::Relay => "relay",
        })
    }
}

/// `IOBackend`: which data-plane driver to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring if the kernel allows it, else epoll.
    Auto,
    Uring,
    Epoll,
}

impl fmt::Display for IoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoBackend::Auto => "auto",
            IoBackend::Uring => "uring",
            IoBackend::Epoll => "epoll",
        })
    }
}

/// One `ORPort` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrPort {
    /// Where to listen (and, unless `no_advertise`, what to publish).
    pub addr: SocketAddr,
    /// `NoAdvertise`: listen but do not publish.
    pub no_advertise: bool,
    /// `NoListen`: publish but do not listen (a port forwarded to us).
    pub no_listen: bool,
}

impl fmt::Display for OrPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        if self.no_advertise {
            f.write_str(" NoAdvertise")?;
        }
        if self.no_listen {
            f.write_str(" NoListen")?;
        }
        Ok(())
    }
}

/// Log severities, least severe first (C: debug, info, notice, warn, err).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Debug,
    Info,
    Notice,
    Warn,
    Err,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warn => "warn",
            Severity::Err => "err",
        })
    }
}

/// `[domain,...]min[-max]`: messages from `min` up to `max` severity. An
/// empty `domains` means every domain; a domain starting with `~` excludes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeverityRange {
    pub domains: Vec<String>,
    pub min: Severity,
    pub max: Severity,
}

/// Where a `Log` line sends messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
    Syslog,
    File(PathBuf),
}

/// One `Log` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSpec {
    pub ranges: Vec<SeverityRange>,
    pub target: LogTarget,
}

impl LogSpec {
    /// The least severe level this line ever logs (for a subscriber filter
    /// that does not know domains).
    pub fn min_severity(&self) -> Severity {
        self.ranges
            .iter()
            .map(|r| r.min)
            .min()
            .unwrap_or(Severity::Notice)
    }
}

impl fmt::Display for LogSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.ranges {
            if !r.domains.is_empty() {
                write!(f, "[{}]", r.domains.join(","))?;
            }
            write!(f, "{}", r.min)?;
            if r.max != Severity::Err {
                write!(f, "-{}", r.max)?;
            }
            f.write_str(" ")?;
        }
        match &self.target {
            LogTarget::Stdout => f.write_str("stdout"),
            LogTarget::Stderr => f.write_str("stderr"),
            LogTarget::Syslog => f.write_str("syslog"),
            LogTarget::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

/// The relay's configuration. [`Config::default`] is a working exit relay
/// without any file; see `docs/options.md` for each field's option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `ORPort` (default `127.0.0.1:9001`; C tor has none).
    pub or_ports: Vec<OrPort>,
    /// `Address`: at most one IPv4 and one IPv6 address to publish. Empty:
    /// discover.
    pub addresses: Vec<IpAddr>,
    /// `DataDirectory`.
    pub data_directory: PathBuf,
    /// `Nickname` (default `Unnamed`).
    pub nickname: String,
    /// `ContactInfo`.
    pub contact_info: Option<String>,
    /// `ServerDNSRandomizeCase` (default 1): 0x20 encoding of DNS names.
    pub server_dns_randomize_case: bool,
    /// The `DoS*` options (C tor's DoS mitigations).
    pub dos: crate::proto::dos::DosOptions,
    /// `MaxOnionQueueDelay`; zero leaves it to the consensus (1750 ms).
    pub max_onion_queue_delay: Duration,
    /// `MaxMemInQueues` in bytes; 0 picks one from the machine's memory
    /// as C tor does.
    pub max_mem_in_queues: u64,
    /// `User`: switch to this user once the ports are bound.
    pub user: Option<String>,
    /// `SafeLogging` (default 1): addresses of clients and destinations
    /// are `[scrubbed]` in logs at notice and above.
    pub safe_logging: SafeLogging,
    /// `ExitRelay` (default auto, as C tor: a torrc with no exit option
    /// makes a non-exit; [`Config::builtin`], for a start with no file at
    /// all, says 1).
    pub exit_relay: AutoBool,
    /// `ExitPolicy` lines, in order; `None` when no line was given.
    pub exit_policy: Option<Vec<PolicyRule>>,
    /// `ExitPolicyRejectPrivate` (default 1).
    pub exit_policy_reject_private: bool,
    /// `ExitPolicyRejectLocalInterfaces` (default 0).
    pub exit_policy_reject_local_interfaces: bool,
    /// `ReducedExitPolicy` (default 0).
    pub reduced_exit_policy: bool,
    /// `IPv6Exit` (default 0).
    pub ipv6_exit: bool,
    /// `RefuseUnknownExits` (default auto: follow the consensus parameter
    /// `refuseunknownexits`).
    pub refuse_unknown_exits: AutoBool,
    /// `ConfluxEnabled` (default auto: follow the consensus parameter
    /// `cfx_enabled`): whether clients may link circuits through us.
    pub conflux_enabled: AutoBool,
    /// `ExtendAllowPrivateAddresses` (default 0).
    pub extend_allow_private_addresses: bool,
    /// `ServerDNSResolvConfFile` (default `/etc/resolv.conf`).
    pub server_dns_resolv_conf_file: PathBuf,
    /// `NumCPUs`: worker threads; 0 = one per available core.
    pub num_cpus: u32,
    /// `Log` lines (default: `notice stdout`).
    pub logs: Vec<LogSpec>,
    /// `ShutdownWaitLength` (default 30 s): how long to keep relaying after
    /// a shutdown request before exiting.
    pub shutdown_wait_length: Duration,
    /// `HeartbeatPeriod` (default 6 hours; 0 turns the heartbeat off; at
    /// least 30 minutes unless `TestingTorNetwork`).
    pub heartbeat_period: Duration,
    /// `MetricsPort`: where to serve Prometheus metrics (default: nowhere).
    pub metrics_port: Option<SocketAddr>,
    /// `MetricsPortPolicy` lines, in order (exit-policy syntax, ports
    /// ignored): who may read the metrics. None: nobody.
    pub metrics_port_policy: Vec<PolicyRule>,
    /// `IOBackend` (oxit only; default auto).
    pub io_backend: IoBackend,
    /// `DirAuthority` lines; none means C tor's built-in authorities (the
    /// live Tor network).
    pub dir_authorities: Vec<DirAuthority>,
    /// `AlternateDirAuthority` lines (replace the built-in v3 authorities).
    pub alternate_dir_authorities: Vec<DirAuthority>,
    /// `FallbackDir` lines (replace the built-in fallback directories).
    pub fallback_dirs: Vec<FallbackDir>,
    /// `UseDefaultFallbackDirs` (default 1).
    pub use_default_fallback_dirs: bool,
    /// `DirAuthorityFallbackRate` in thousandths (default 100, i.e. 0.1):
    /// how much each authority weighs against one fallback directory when
    /// picking where to fetch the consensus before our first publication.
    pub dir_authority_fallback_rate_milli: u32,
    /// `PublishServerDescriptor` (default 1: to the v3 authorities).
    pub publish_server_descriptor: bool,
    /// `AssumeReachable` (default 0): publish without the reachability
    /// self-test.
    pub assume_reachable: bool,
    /// `TestingTorNetwork` (default 0): a private test network's defaults
    /// and schedules.
    pub testing_tor_network: bool,
    /// `CountPrivateBandwidth` (default 0; 1 under TestingTorNetwork).
    pub count_private_bandwidth: bool,
    /// `AccountingMax`: bytes per accounting period (0: no accounting).
    pub accounting_max: u64,
    /// `AccountingRule`: what counts against it.
    pub accounting_rule: crate::control::accounting::AccountingRule,
    /// `AccountingStart`: when a period begins.
    pub accounting_start: crate::control::accounting::AccountingStart,
    /// `BandwidthRate`, bytes/s (default 1 GByte), after C tor's
    /// adjustments (raised to `RelayBandwidthRate`).
    pub bandwidth_rate: u64,
    /// `BandwidthBurst` (default 1 GByte).
    pub bandwidth_burst: u64,
    /// `RelayBandwidthRate` (default 0: unset).
    pub relay_bandwidth_rate: u64,
    /// `RelayBandwidthBurst` (default 0: unset).
    pub relay_bandwidth_burst: u64,
    /// `MaxAdvertisedBandwidth` (default 1 GByte).
    pub max_advertised_bandwidth: u64,
    /// `OutboundBindAddress`, `…OR`, `…Exit`.
    pub outbound_bind: crate::proto::circuit::types::OutboundBind,
    /// `MyFamily` members, normalised (`$HEX`, `$HEX=nick`, or a nickname).
    pub my_family: Vec<String>,
    /// `FamilyId` lines: the happy-family keys to load and use.
    pub family_ids: Vec<FamilyId>,
    /// `FamilyKeyDirectory` (default `DataDirectory/keys`).
    pub family_key_directory: Option<PathBuf>,
    /// `DirPort`, as written: accepted, but oxit serves no directory data
    /// and publishes DirPort 0, as C tor 0.4.9 relays do.
    pub dir_port: Option<String>,
    /// `ControlPort`, `ControlSocket` and their authentication options.
    pub control: ControlOptions,
}

/// One `FamilyId` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyId {
    /// A family's Ed25519 public key.
    Key([u8; 32]),
    /// `*`: use every family key found in the key directory.
    Any,
}

impl fmt::Display for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine as _;
        match self {
            FamilyId::Key(k) => {
                f.write_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(k))
            }
            FamilyId::Any => f.write_str("*"),
        }
    }
}

/// C tor's default `BandwidthRate`, `BandwidthBurst`, `MaxAdvertisedBandwidth`.
pub const DEFAULT_BANDWIDTH: u64 = 1 << 30;
/// The lowest `BandwidthRate` a public relay may run with
/// (`RELAY_REQUIRED_MIN_BANDWIDTH`, or.h).
pub const RELAY_REQUIRED_MIN_BANDWIDTH: u64 = 75 * 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            or_ports: vec![options::default_or_port()],
            addresses: Vec::new(),
            data_directory: default_data_directory(),
            nickname: "Unnamed".to_owned(),
            contact_info: None,
            server_dns_randomize_case: true,
            dos: crate::proto::dos::DosOptions::default(),
            user: None,
            safe_logging: SafeLogging::On,
            max_onion_queue_delay: Duration::ZERO,
            max_mem_in_queues: 0,
            exit_relay: AutoBool::Auto,
            exit_policy: None,
            exit_policy_reject_private: true,
            exit_policy_reject_local_interfaces: false,
            reduced_exit_policy: false,
            ipv6_exit: false,
            refuse_unknown_exits: AutoBool::Auto,
            conflux_enabled: AutoBool::Auto,
            extend_allow_private_addresses: false,
            server_dns_resolv_conf_file: PathBuf::from("/etc/resolv.conf"),
            num_cpus: 0,
            logs: vec![options::default_log()],
            shutdown_wait_length: Duration::from_secs(30),
            heartbeat_period: Duration::from_secs(6 * 3600),
            metrics_port: None,
            metrics_port_policy: Vec::new(),
            io_backend: IoBackend::Auto,
            dir_authorities: Vec::new(),
            alternate_dir_authorities: Vec::new(),
            fallback_dirs: Vec::new(),
            use_default_fallback_dirs: true,
            dir_authority_fallback_rate_milli: 100,
            publish_server_descriptor: true,
            assume_reachable: false,
            testing_tor_network: false,
            count_private_bandwidth: false,
            accounting_max: 0,
            accounting_rule: crate::control::accounting::AccountingRule::Max,
            accounting_start: crate::control::accounting::AccountingStart::default(),
            bandwidth_rate: DEFAULT_BANDWIDTH,
            bandwidth_burst: DEFAULT_BANDWIDTH,
            relay_bandwidth_rate: 0,
            relay_bandwidth_burst: 0,
            max_advertised_bandwidth: DEFAULT_BANDWIDTH,
            my_family: Vec::new(),
            outbound_bind: Default::default(),
            family_ids: Vec::new(),
            family_key_directory: None,
            dir_port: None,
            control: ControlOptions::default(),
        }
    }
}

/// `/var/lib/oxit` for root, `$HOME/.oxit` for anyone else (`./.oxit` if
/// HOME is unset). C tor's compiled-in default is a build option
/// (`/var/lib/tor` on Debian, `~/.tor` for users); oxit's is fixed.
pub fn default_data_directory() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    data_directory_for(root, std::env::var_os("HOME").map(PathBuf::from))
}

fn data_directory_for(root: bool, home: Option<PathBuf>) -> PathBuf {
    if root {
        PathBuf::from("/var/lib/oxit")
    } else {
        home.unwrap_or_else(|| PathBuf::from(".")).join(".oxit")
    }
}

/// A fault in the configuration; startup stops.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A problem on a given line of a given file.
    #[error("{origin}:{line}: {kind}")]
    At {
        origin: String,
        line: usize,
        kind: ErrorKind,
    },
    /// Options that do not go together, or a value out of bounds given
    /// the others (C tor's options_validate checks).
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    /// The top-level file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    pub(crate) fn at(origin: &str, line: usize, kind: ErrorKind) -> ConfigError {
        ConfigError::At {
            origin: origin.to_owned(),
            line,
            kind,
        }
    }

    /// The file (or origin name) and line, when the error has one.
    pub fn location(&self) -> Option<(&str, usize)> {
        match self {
            ConfigError::At { origin, line, .. } => Some((origin, *line)),
            ConfigError::Read { .. } | ConfigError::Invalid { .. } => None,
        }
    }
}

/// What was wrong on a line.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    #[error("bad value {value:?} for {option}: expected {expected}")]
    BadValue {
        option: &'static str,
        value: String,
        expected: String,
    },
    #[error("bad ExitPolicy: {0}")]
    BadPolicy(#[from] PolicyParseError),
    #[error("cannot %include {path:?}: {reason}")]
    Include { path: String, reason: String },
    #[error("%include loop: {0}")]
    IncludeLoop(String),
    #[error("more than {0} nested %include levels")]
    IncludeTooDeep(usize),
}

/// A C tor option that oxit accepts but does not implement, reported once
/// per option (at its first occurrence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    pub origin: String,
    pub line: usize,
    /// The option's canonical name.
    pub option: &'static str,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} is a C tor option that oxit does not implement; ignoring it",
            self.origin, self.line, self.option
        )
    }
}

impl Config {
    /// What `oxit run` uses with no configuration file: the torrc
    /// defaults, as an exit (C tor's default exit policy), since that is
    /// what an operator starting oxit with nothing else wants to try.
    pub fn builtin() -> Config {
        Config {
            exit_relay: AutoBool::On,
            ..Config::default()
        }
    }

    /// Read and parse a torrc file (and whatever it `%include`s).
    pub fn parse_file(path: impl AsRef<Path>) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Self::parse_with_stack(&text, &path.display().to_string(), vec![canon])
    }

    /// Parse torrc text; `origin_name` is how errors name it (a file name,
    /// `<command line>`...). `%include` still reads files.
    pub fn parse_str(
        text: &str,
        origin_name: &str,
    ) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        Self::parse_with_stack(text, origin_name, Vec::new())
    }

    /// C tor's three layers (config.c:options_init_from_torrc): the
    /// `--defaults-torrc` file, the torrc, then `--Option value` pairs from
    /// the command line. An option set in a later layer replaces every
    /// line of it in the earlier ones (a list option too), unless the
    /// later key starts with `+`, which appends; a key starting with `/`
    /// clears the option.
    pub fn parse_layers(
        defaults: Option<&Path>,
        torrc: Option<&Path>,
        command_line: &[(String, String)],
    ) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let read = |path: &Path| -> Result<Vec<include::SourcedLine>, ConfigError> {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            let mut lines = Vec::new();
            include::expand(
                &text,
                &path.display().to_string(),
                &mut vec![canon],
                &mut lines,
            )?;
            Ok(lines)
        };
        let cli: Vec<include::SourcedLine> = command_line
            .iter()
            .enumerate()
            .map(|(i, (k, v))| include::SourcedLine {
                origin: "<command line>".into(),
                raw: lexer::RawLine {
                    key: k.clone(),
                    value: v.clone(),
                    line: i + 1,
                },
            })
            .collect();
        let mut merged = match defaults {
            Some(p) => read(p)?,
            None => Vec::new(),
        };
        if let Some(p) = torrc {
            layer_over(&mut merged, read(p)?);
        }
        layer_over(&mut merged, cli);
        let origin = torrc.map_or_else(|| "<command line>".into(), |p| p.display().to_string());
        options::apply(&merged, &origin)
    }

    fn parse_with_stack(
        text: &str,
        origin: &str,
        mut stack: Vec<PathBuf>,
    ) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let mut lines = Vec::new();
        include::expand(text, origin, &mut stack, &mut lines)?;
        options::apply(&lines, origin)
    }

    /// The directory authorities and fallback directories in effect.
    pub fn dir_servers(&self) -> DirServers {
        DirServers::combine(
            &self.dir_authorities,
            &self.alternate_dir_authorities,
            &self.fallback_dirs,
            self.use_default_fallback_dirs,
        )
    }

    /// The token buckets' rate and burst in bytes: the lower of
    /// `BandwidthRate`/`Burst` and `RelayBandwidthRate`/`Burst` (every
    /// byte oxit relays is relayed traffic). `None` when neither is set
    /// below C tor's 1 GByte default: C applies that default to its one
    /// core, oxit leaves a multi-core relay unlimited unless asked.
    pub fn rate_limit(&self) -> Option<(u64, u64)> {
        let mut rate = self.bandwidth_rate;
        let mut burst = self.bandwidth_burst;
        if self.relay_bandwidth_rate > 0 {
            rate = rate.min(self.relay_bandwidth_rate);
            burst = burst.min(self.relay_bandwidth_burst.max(self.relay_bandwidth_rate));
        }
        if rate >= DEFAULT_BANDWIDTH && burst >= DEFAULT_BANDWIDTH {
            return None;
        }
        Some((rate, burst.max(rate)))
    }

    /// The descriptor's `bandwidth` rate and burst
    /// (relay_config.c:relay_get_effective_bwrate / _bwburst).
    pub fn advertised_bandwidth(&self) -> (u64, u64) {
        let mut rate = self.bandwidth_rate.min(self.max_advertised_bandwidth);
        if self.relay_bandwidth_rate > 0 {
            rate = rate.min(self.relay_bandwidth_rate);
        }
        let mut burst = self.bandwidth_burst;
        if self.relay_bandwidth_burst > 0 {
            burst = burst.min(self.relay_bandwidth_burst);
        }
        (rate, burst)
    }

    /// The key directory family keys are read from.
    pub fn family_key_dir(&self) -> PathBuf {
        self.family_key_directory
            .clone()
            .unwrap_or_else(|| self.data_directory.join("keys"))
    }

    /// The exit-policy builder's inputs: our options plus the addresses we
    /// publish and listen on, and the interface addresses the caller found.
    pub fn exit_policy_options(&self, interface_addresses: &[IpAddr]) -> ExitPolicyOptions {
        let mut port_addresses: Vec<IpAddr> = self.or_ports.iter().map(|p| p.addr.ip()).collect();
        port_addresses.extend(self.metrics_port.map(|m| m.ip()));
        ExitPolicyOptions {
            exit_relay: self.exit_relay.as_option(),
            user_rules: self.exit_policy.clone(),
            ipv6_exit: self.ipv6_exit,
            reject_private: self.exit_policy_reject_private,
            reject_local_interfaces: self.exit_policy_reject_local_interfaces,
            reduced: self.reduced_exit_policy,
            published_addresses: self.addresses.clone(),
            port_addresses,
            interface_addresses: interface_addresses.to_vec(),
        }
    }

    /// The effective exit policy (see `crate::exit::policy`).
    pub fn build_exit_policy(&self, interface_addresses: &[IpAddr]) -> ExitPolicy {
        ExitPolicy::build(&self.exit_policy_options(interface_addresses))
    }

    /// The whole effective configuration in torrc form, one option per
    /// line, followed by the effective exit policy (built without interface
    /// addresses), for `check-config`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let mut line = |k: &str, v: &dyn fmt::Display| {
            let _ = writeln!(s, "{k} {v}");
        };
        for p in &self.or_ports {
            line("ORPort", p);
        }
        if self.addresses.is_empty() {
            line("# Address", &"(none: discovered at startup)");
        }
        for a in &self.addresses {
            line("Address", a);
        }
        line("DataDirectory", &self.data_directory.display());
        line("Nickname", &self.nickname);
        if let Some(c) = &self.contact_info {
            line("ContactInfo", c);
        }
        if let Some(u) = &self.user {
            line("User", u);
        }
        for (k, v) in self.dos.torrc_lines() {
            line(k, &v);
        }
        line("SafeLogging", &self.safe_logging);
        if !self.max_onion_queue_delay.is_zero() {
            line(
                "MaxOnionQueueDelay",
                &format!("{} msec", self.max_onion_queue_delay.as_millis()),
            );
        }
        if self.max_mem_in_queues != 0 {
            line(
                "MaxMemInQueues",
                &format!("{} bytes", self.max_mem_in_queues),
            );
        }
        line("ExitRelay", &self.exit_relay);
        for r in self.exit_policy.iter().flatten() {
            line("ExitPolicy", r);
        }
        line(
            "ExitPolicyRejectPrivate",
            &u8::from(self.exit_policy_reject_private),
        );
        line(
            "ExitPolicyRejectLocalInterfaces",
            &u8::from(self.exit_policy_reject_local_interfaces),
        );
        line("ReducedExitPolicy", &u8::from(self.reduced_exit_policy));
        line("IPv6Exit", &u8::from(self.ipv6_exit));
        line("RefuseUnknownExits", &self.refuse_unknown_exits);
        line("ConfluxEnabled", &self.conflux_enabled);
        line(
            "ExtendAllowPrivateAddresses",
            &u8::from(self.extend_allow_private_addresses),
        );
        line(
            "ServerDNSResolvConfFile",
            &self.server_dns_resolv_conf_file.display(),
        );
        line(
            "ServerDNSRandomizeCase",
            &u8::from(self.server_dns_randomize_case),
        );
        line("NumCPUs", &self.num_cpus);
        for l in &self.logs {
            line("Log", l);
        }
        line(
            "ShutdownWaitLength",
            &format_args!("{} seconds", self.shutdown_wait_length.as_secs()),
        );
        line(
            "HeartbeatPeriod",
            &format_args!("{} seconds", self.heartbeat_period.as_secs()),
        );
        if let Some(m) = &self.metrics_port {
            line("MetricsPort", m);
        }
        for r in &self.metrics_port_policy {
            line("MetricsPortPolicy", r);
        }
        self.control.describe(&mut line);
        line("IOBackend", &self.io_backend);
        for a in &self.dir_authorities {
            line("DirAuthority", a);
        }
        for a in &self.alternate_dir_authorities {
            line("AlternateDirAuthority", a);
        }
        for f in &self.fallback_dirs {
            line("FallbackDir", f);
        }
        line(
            "UseDefaultFallbackDirs",
            &u8::from(self.use_default_fallback_dirs),
        );
        line(
            "DirAuthorityFallbackRate",
            &format_args!(
                "{}.{:03}",
                self.dir_authority_fallback_rate_milli / 1000,
                self.dir_authority_fallback_rate_milli % 1000
            ),
        );
        line(
            "PublishServerDescriptor",
            &u8::from(self.publish_server_descriptor),
        );
        line("AssumeReachable", &u8::from(self.assume_reachable));
        line("TestingTorNetwork", &u8::from(self.testing_tor_network));
        line(
            "CountPrivateBandwidth",
            &u8::from(self.count_private_bandwidth),
        );
        line(
            "BandwidthRate",
            &format_args!("{} bytes", self.bandwidth_rate),
        );
        line(
            "BandwidthBurst",
            &format_args!("{} bytes", self.bandwidth_burst),
        );
        line(
            "RelayBandwidthRate",
            &format_args!("{} bytes", self.relay_bandwidth_rate),
        );
        line(
            "RelayBandwidthBurst",
            &format_args!("{} bytes", self.relay_bandwidth_burst),
        );
        line(
            "MaxAdvertisedBandwidth",
            &format_args!("{} bytes", self.max_advertised_bandwidth),
        );
        if !self.my_family.is_empty() {
            line("MyFamily", &self.my_family.join(","));
        }
        for f in &self.family_ids {
            line("FamilyId", f);
        }
        if let Some(d) = &self.family_key_directory {
            line("FamilyKeyDirectory", &d.display());
        }
        if let Some(p) = &self.dir_port {
            line("DirPort", p);
        }
        // Without DirAuthority lines: the built-in lists, as comments so
        // that the output still reads back as the same configuration.
        if self.dir_authorities.is_empty() && self.alternate_dir_authorities.is_empty() {
            let servers = self.dir_servers();
            let _ = writeln!(
                s,
                "# built in: {} directory authorities (the live Tor network), {} fallback directories",
                servers.authorities.len(),
                servers.fallbacks.len()
            );
            for a in &servers.authorities {
                let _ = writeln!(s, "# DirAuthority {a}");
            }
        }
        let policy = self.build_exit_policy(&[]);
        let _ = writeln!(s, "# effective exit policy: {policy}");
        s
    }
}

/// Put `upper`'s lines over `lower`'s (see [`Config::parse_layers`]).
fn layer_over(lower: &mut Vec<include::SourcedLine>, upper: Vec<include::SourcedLine>) {
    let plain = |k: &str| k.trim_start_matches(['+', '/']).to_ascii_lowercase();
    let replaced: Vec<String> = upper
        .iter()
        .filter(|l| !l.raw.key.starts_with('+'))
        .map(|l| plain(&l.raw.key))
        .collect();
    lower.retain(|l| !replaced.contains(&plain(&l.raw.key)));
    for mut l in upper {
        if l.raw.key.starts_with('/') {
            continue;
        }
        l.raw.key = l.raw.key.trim_start_matches('+').to_owned();
        lower.push(l);
    }
}
