//! The option table: which keywords oxit knows, the syntax of each value,
//! and how repeated lines combine (C tor's rules, confmgt/confmgt.c
//! config_assign_line): a scalar option takes its last value; a list option
//! (ORPort, Address, ExitPolicy, Log) accumulates, the first line replacing
//! the default; an empty value resets the option to its default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use super::include::SourcedLine;
use super::{
    AutoBool, Config, ConfigError, ConfigWarning, ErrorKind, FamilyId, IoBackend, LogSpec,
    LogTarget, OrPort, RELAY_REQUIRED_MIN_BANDWIDTH, SafeLogging, Severity, SeverityRange, known,
};
use crate::dir::authority::{DirAuthority, FallbackDir};
use crate::exit::policy::parse_policy_list;

pub(super) fn default_or_port() -> OrPort {
    OrPort {
        addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001)),
        no_advertise: false,
        no_listen: false,
    }
}

pub(super) fn default_log() -> LogSpec {
    LogSpec {
        ranges: vec![SeverityRange {
            domains: Vec::new(),
            min: Severity::Notice,
            max: Severity::Err,
        }],
        target: LogTarget::Stdout,
    }
}

/// The options oxit implements, in their canonical spelling.
pub(super) const OPTIONS: &[&str] = &[
    "ORPort",
    "Address",
    "DataDirectory",
    "Nickname",
    "ContactInfo",
    "ExitRelay",
    "ExitPolicy",
    "ExitPolicyRejectPrivate",
    "ExitPolicyRejectLocalInterfaces",
    "ReducedExitPolicy",
    "IPv6Exit",
    "RefuseUnknownExits",
    "ConfluxEnabled",
    "ExtendAllowPrivateAddresses",
    "ServerDNSResolvConfFile",
    "NumCPUs",
    "Log",
    "ShutdownWaitLength",
    "HeartbeatPeriod",
    "MetricsPort",
    "MetricsPortPolicy",
    "IOBackend",
    "DirAuthority",
    "AlternateDirAuthority",
    "FallbackDir",
    "UseDefaultFallbackDirs",
    "DirAuthorityFallbackRate",
    "PublishServerDescriptor",
    "AssumeReachable",
    "TestingTorNetwork",
    "CountPrivateBandwidth",
    "OutboundBindAddress",
    "OutboundBindAddressOR",
    "OutboundBindAddressExit",
    "AccountingMax",
    "AccountingRule",
    "AccountingStart",
    "BandwidthRate",
    "BandwidthBurst",
    "RelayBandwidthRate",
    "RelayBandwidthBurst",
    "MaxAdvertisedBandwidth",
    "MyFamily",
    "FamilyId",
    "FamilyKeyDirectory",
    "DirPort",
    "User",
    "SafeLogging",
    "ServerDNSRandomizeCase",
    "MaxOnionQueueDelay",
    "MaxMemInQueues",
    "DoSCircuitCreationEnabled",
    "DoSCircuitCreationMinConnections",
    "DoSCircuitCreationRate",
    "DoSCircuitCreationBurst",
    "DoSCircuitCreationDefenseType",
    "DoSCircuitCreationDefenseTimePeriod",
    "DoSConnectionEnabled",
    "DoSConnectionMaxConcurrentCount",
    "DoSConnectionDefenseType",
    "DoSConnectionConnectRate",
    "DoSConnectionConnectBurst",
    "DoSConnectionConnectDefenseTimePeriod",
    "DoSRefuseSingleHopClientRendezvous",
    "DoSStreamCreationEnabled",
    "DoSStreamCreationRate",
    "DoSStreamCreationBurst",
    "DoSStreamCreationDefenseType",
];

/// Every option oxit implements: [`OPTIONS`] and the ControlPort's.
pub(super) fn implemented() -> impl Iterator<Item = &'static str> {
    OPTIONS
        .iter()
        .chain(super::control::OPTIONS.iter())
        .copied()
}

/// Old names C tor still accepts (config.c option_abbrevs_).
const ALIASES: &[(&str, &str)] = &[
    ("DirServer", "DirAuthority"),
    ("BandwidthRateBytes", "BandwidthRate"),
    ("BandwidthBurstBytes", "BandwidthBurst"),
];

/// Apply every line in order to a default configuration, then C tor's
/// cross-option rules (`origin` names the configuration in their errors).
pub(super) fn apply(
    lines: &[SourcedLine],
    origin: &str,
) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
    let (mut cfg, warnings, seen) = apply_lines(lines)?;
    finish(&mut cfg, &seen).map_err(|message| ConfigError::Invalid {
        origin: origin.to_owned(),
        message,
    })?;
    Ok((cfg, warnings))
}

fn apply_lines(
    lines: &[SourcedLine],
) -> Result<(Config, Vec<ConfigWarning>, Vec<&'static str>), ConfigError> {
    let mut cfg = Config::default();
    let mut warnings: Vec<ConfigWarning> = Vec::new();
    // List options whose default has already been replaced by a user line.
    let mut replaced: Vec<&'static str> = Vec::new();

    for l in lines {
        let key = l.raw.key.as_str();
        let key = ALIASES
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(key))
            .map_or(key, |(_, name)| *name);
        let at = |kind| ConfigError::at(&l.origin, l.raw.line, kind);
        let Some(name) = implemented().find(|o| o.eq_ignore_ascii_case(key)) else {
            if let Some(name) = known::lookup(key) {
                if !warnings.iter().any(|w| w.option == name) {
                    warnings.push(ConfigWarning {
                        origin: l.origin.clone(),
                        line: l.raw.line,
                        option: name,
                    });
                }
                continue;
            }
            return Err(at(ErrorKind::UnknownOption(key.to_owned())));
        };
        let value = l.raw.value.as_str();
        let bad = |expected: &str| {
            at(ErrorKind::BadValue {
                option: name,
                value: value.to_owned(),
                expected: expected.to_owned(),
            })
        };
        let d = Config::default();
        let reset = value.is_empty();
        // The first user line of a list option replaces its default.
        let first = !replaced.contains(&name);
        if first {
            replaced.push(name);
        }

        match name {
            "ORPort" => {
                if first || reset {
                    cfg.or_ports.clear();
                }
                if reset {
                    cfg.or_ports = d.or_ports;
                } else {
                    cfg.or_ports
                        .push(parse_or_port(value).map_err(|e| bad(&e))?);
                }
            }
            "Address" => {
                if first || reset {
                    cfg.addresses.clear();
                }
                if !reset {
                    let ip: IpAddr = value.parse().map_err(|_| {
                        bad("an IPv4 or IPv6 address (oxit does not resolve host names here)")
                    })?;
                    if cfg.addresses.iter().any(|a| a.is_ipv4() == ip.is_ipv4()) {
                        return Err(bad("at most one Address per address family"));
                    }
                    cfg.addresses.push(ip);
                }
            }
            "DataDirectory" => {
                cfg.data_directory = if reset {
                    d.data_directory
                } else {
                    PathBuf::from(value)
                };
            }
            "Nickname" => {
                cfg.nickname = if reset {
                    d.nickname
                } else if (1..=19).contains(&value.len())
                    && value.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    value.to_owned()
                } else {
                    return Err(bad("1 to 19 characters, each A-Z, a-z or 0-9"));
                };
            }
            "ContactInfo" => cfg.contact_info = (!reset).then(|| value.to_owned()),
            "ExitRelay" => {
                cfg.exit_relay = if reset {
                    d.exit_relay
                } else {
                    autobool(value).ok_or_else(|| bad("0, 1 or auto"))?
                }
            }
            "RefuseUnknownExits" => {
                cfg.refuse_unknown_exits = if reset {
                    d.refuse_unknown_exits
                } else {
                    autobool(value).ok_or_else(|| bad("0, 1 or auto"))?
                }
            }
            "ConfluxEnabled" => {
                cfg.conflux_enabled = if reset {
                    d.conflux_enabled
                } else {
                    autobool(value).ok_or_else(|| bad("0, 1 or auto"))?
                }
            }
            "ExitPolicy" => {
                if reset {
                    cfg.exit_policy = None;
                } else {
                    let rules =
                        parse_policy_list(value).map_err(|e| at(ErrorKind::BadPolicy(e)))?;
                    cfg.exit_policy.get_or_insert_with(Vec::new).extend(rules);
                }
            }
            "ExitPolicyRejectPrivate" => {
                cfg.exit_policy_reject_private =
                    boolean(value, d.exit_policy_reject_private).ok_or_else(|| bad("0 or 1"))?
            }
            "ExitPolicyRejectLocalInterfaces" => {
                cfg.exit_policy_reject_local_interfaces =
                    boolean(value, d.exit_policy_reject_local_interfaces)
                        .ok_or_else(|| bad("0 or 1"))?
            }
            "ReducedExitPolicy" => {
                cfg.reduced_exit_policy =
                    boolean(value, d.reduced_exit_policy).ok_or_else(|| bad("0 or 1"))?
            }
            "IPv6Exit" => {
                cfg.ipv6_exit = boolean(value, d.ipv6_exit).ok_or_else(|| bad("0 or 1"))?
            }
            "ExtendAllowPrivateAddresses" => {
                cfg.extend_allow_private_addresses =
                    boolean(value, d.extend_allow_private_addresses).ok_or_else(|| bad("0 or 1"))?
            }
            "ServerDNSResolvConfFile" => {
                cfg.server_dns_resolv_conf_file = if reset {
                    d.server_dns_resolv_conf_file
                } else {
                    PathBuf::from(value)
                }
            }
            "NumCPUs" => {
                cfg.num_cpus = if reset {
                    d.num_cpus
                } else {
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n <= 1024)
                        .ok_or_else(|| bad("a whole number from 0 (all cores) to 1024"))?
                }
            }
            "Log" => {
                if first || reset {
                    cfg.logs.clear();
                }
                if reset {
                    cfg.logs = d.logs;
                } else {
                    cfg.logs.push(parse_log(value).map_err(|e| bad(&e))?);
                }
            }
            "HeartbeatPeriod" => {
                cfg.heartbeat_period = if reset {
                    d.heartbeat_period
                } else {
                    parse_interval(value).ok_or_else(|| {
                        bad("an interval such as \"6 hours\" (0 turns the heartbeat off)")
                    })?
                }
            }
            "ShutdownWaitLength" => {
                cfg.shutdown_wait_length = if reset {
                    d.shutdown_wait_length
                } else {
                    parse_interval(value).ok_or_else(|| {
                        bad("an interval such as \"30 seconds\", \"2 minutes\" (units: seconds, minutes, hours, days, weeks)")
                    })?
                }
            }
            "MetricsPort" => {
                if reset {
                    cfg.metrics_port = None;
                } else {
                    let addr = parse_metrics_port(value).map_err(|e| bad(&e))?;
                    // C tor uses the first line only (metrics_parse_ports).
                    cfg.metrics_port.get_or_insert(addr);
                }
            }
            "MetricsPortPolicy" => {
                if reset {
                    cfg.metrics_port_policy.clear();
                } else {
                    let rules =
                        parse_policy_list(value).map_err(|e| at(ErrorKind::BadPolicy(e)))?;
                    cfg.metrics_port_policy.extend(rules);
                }
            }
            "IOBackend" => {
                cfg.io_backend = match value.to_ascii_lowercase().as_str() {
                    "" => d.io_backend,
                    "auto" => IoBackend::Auto,
                    "uring" | "io_uring" => IoBackend::Uring,
                    "epoll" => IoBackend::Epoll,
                    _ => return Err(bad("auto, uring or epoll")),
                }
            }
            "DirAuthority" | "AlternateDirAuthority" => {
                let list = if name == "DirAuthority" {
                    &mut cfg.dir_authorities
                } else {
                    &mut cfg.alternate_dir_authorities
                };
                if reset {
                    list.clear();
                } else {
                    list.push(DirAuthority::parse(value).map_err(|e| {
                        bad(&format!(
                            "[nickname] [flags] IPv4:dirport fingerprint with v3ident= ({e})"
                        ))
                    })?);
                }
            }
            "FallbackDir" => {
                if reset {
                    cfg.fallback_dirs.clear();
                } else {
                    cfg.fallback_dirs
                        .push(FallbackDir::parse(value).map_err(|e| {
                            bad(&format!(
                                "address[:dirport] orport=N id=FINGERPRINT [ipv6=[addr]:port] ({e})"
                            ))
                        })?);
                }
            }
            "UseDefaultFallbackDirs" => {
                cfg.use_default_fallback_dirs =
                    boolean(value, d.use_default_fallback_dirs).ok_or_else(|| bad("0 or 1"))?
            }
            "DirAuthorityFallbackRate" => {
                cfg.dir_authority_fallback_rate_milli = if reset {
                    d.dir_authority_fallback_rate_milli
                } else {
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1000.0).contains(r))
                        .map(|r| (r * 1000.0).round() as u32)
                        .ok_or_else(|| bad("a number from 0 to 1000 (e.g. 0.1)"))?
                }
            }
            "PublishServerDescriptor" => {
                cfg.publish_server_descriptor = if reset {
                    d.publish_server_descriptor
                } else {
                    parse_publish(value).map_err(|e| bad(&e))?
                }
            }
            "AssumeReachable" => {
                cfg.assume_reachable =
                    boolean(value, d.assume_reachable).ok_or_else(|| bad("0 or 1"))?
            }
            "TestingTorNetwork" => {
                cfg.testing_tor_network =
                    boolean(value, d.testing_tor_network).ok_or_else(|| bad("0 or 1"))?
            }
            "CountPrivateBandwidth" => {
                cfg.count_private_bandwidth =
                    boolean(value, d.count_private_bandwidth).ok_or_else(|| bad("0 or 1"))?
            }
            "OutboundBindAddress" | "OutboundBindAddressOR" | "OutboundBindAddressExit" => {
                let list = match name {
                    "OutboundBindAddress" => &mut cfg.outbound_bind.any,
                    "OutboundBindAddressOR" => &mut cfg.outbound_bind.or,
                    _ => &mut cfg.outbound_bind.exit,
                };
                if reset {
                    list.clear();
                } else {
                    list.push(
                        value
                            .trim()
                            .trim_start_matches('[')
                            .trim_end_matches(']')
                            .parse()
                            .map_err(|_| bad("an IPv4 or IPv6 address"))?,
                    );
                }
            }
            "AccountingMax" => {
                cfg.accounting_max = if reset {
                    d.accounting_max
                } else {
                    parse_memunit(value)
                        .ok_or_else(|| bad("a size such as \"500 GBytes\" (0: no accounting)"))?
                }
            }
            "AccountingRule" => {
                cfg.accounting_rule = if reset {
                    d.accounting_rule
                } else {
                    crate::control::accounting::AccountingRule::parse(value)
                        .ok_or_else(|| bad("sum, max, in or out"))?
                }
            }
            "AccountingStart" => {
                cfg.accounting_start = if reset {
                    d.accounting_start
                } else {
                    crate::control::accounting::AccountingStart::parse(value)
                        .map_err(|e| bad(&e))?
                }
            }
            "BandwidthRate"
            | "BandwidthBurst"
            | "RelayBandwidthRate"
            | "RelayBandwidthBurst"
            | "MaxAdvertisedBandwidth" => {
                let (field, default) = match name {
                    "BandwidthRate" => (&mut cfg.bandwidth_rate, d.bandwidth_rate),
                    "BandwidthBurst" => (&mut cfg.bandwidth_burst, d.bandwidth_burst),
                    "RelayBandwidthRate" => (&mut cfg.relay_bandwidth_rate, d.relay_bandwidth_rate),
                    "RelayBandwidthBurst" => {
                        (&mut cfg.relay_bandwidth_burst, d.relay_bandwidth_burst)
                    }
                    _ => (
                        &mut cfg.max_advertised_bandwidth,
                        d.max_advertised_bandwidth,
                    ),
                };
                *field = if reset {
                    default
                } else {
                    parse_memunit(value).ok_or_else(|| {
                        bad(
                            "a number of bytes per second with a unit: bytes, KBytes, MBytes, \
                             GBytes, TBytes, or kbits, mbits, gbits, tbits (e.g. \"10 MBytes\")",
                        )
                    })?
                };
            }
            "MyFamily" => {
                if reset {
                    cfg.my_family.clear();
                } else {
                    for m in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                        cfg.my_family
                            .push(normalize_family_member(m).ok_or_else(|| {
                                bad("relays as $FINGERPRINT (40 hex digits) or nicknames, comma-separated")
                            })?);
                    }
                }
            }
            "FamilyId" => {
                if reset {
                    cfg.family_ids.clear();
                } else {
                    cfg.family_ids.push(parse_family_id(value).ok_or_else(|| {
                        bad("a family's Ed25519 key in base64 (as `tor --keygen-family` prints it), or *")
                    })?);
                }
            }
            "FamilyKeyDirectory" => {
                cfg.family_key_directory = (!reset).then(|| PathBuf::from(value));
            }
            "User" => cfg.user = (!reset).then(|| value.to_owned()),
            "MaxOnionQueueDelay" => {
                cfg.max_onion_queue_delay = if reset {
                    d.max_onion_queue_delay
                } else {
                    parse_msec_interval(value).ok_or_else(|| {
                        bad("milliseconds, or an interval such as \"2 seconds\" (0: the consensus decides)")
                    })?
                }
            }
            "MaxMemInQueues" => {
                cfg.max_mem_in_queues = if reset {
                    d.max_mem_in_queues
                } else {
                    parse_memunit(value).ok_or_else(|| {
                        bad("a size such as \"2 GB\" or \"512 MB\" (0: chosen from the machine's memory)")
                    })?
                }
            }
            "ServerDNSRandomizeCase" => {
                cfg.server_dns_randomize_case =
                    boolean(value, d.server_dns_randomize_case).ok_or_else(|| bad("0 or 1"))?
            }
            "SafeLogging" => {
                cfg.safe_logging = if reset {
                    d.safe_logging
                } else {
                    match value.to_ascii_lowercase().as_str() {
                        "0" => SafeLogging::Off,
                        "1" => SafeLogging::On,
                        "relay" => SafeLogging::Relay,
                        _ => return Err(bad("0, 1 or relay")),
                    }
                }
            }
            "DirPort" => {
                cfg.dir_port = if reset {
                    None
                } else {
                    validate_dir_port(value).map_err(|e| bad(&e))?;
                    Some(value.to_owned())
                };
            }
            n if n.starts_with("DoS") => dos_option(&mut cfg.dos, n, value, reset).map_err(bad)?,
            n if super::control::OPTIONS.contains(&n) => {
                super::control::apply(&mut cfg.control, n, value, reset, first)
                    .map_err(|e| bad(&e))?
            }
            // OPTIONS and this match list the same names; a name in one but
            // not the other is a bug caught by the tests.
            _ => return Err(at(ErrorKind::UnknownOption(key.to_owned()))),
        }
    }
    Ok((cfg, warnings, replaced))
}

/// The rules that relate options to each other (config.c:options_validate_cb,
/// relay_config.c:options_validate_relay_bandwidth), and the defaults
/// `TestingTorNetwork` changes where the file did not set them itself
/// (testnet.inc: only those that touch what oxit does).
fn finish(cfg: &mut Config, seen: &[&'static str]) -> Result<(), String> {
    if !cfg.dir_authorities.is_empty() && !cfg.alternate_dir_authorities.is_empty() {
        return Err("DirAuthority and AlternateDirAuthority cannot be used together".into());
    }
    if cfg.testing_tor_network {
        if cfg.dir_authorities.is_empty() {
            return Err(
                "TestingTorNetwork may only be configured with a non-default set of \
                 DirAuthority lines (a test network's own authorities)"
                    .into(),
            );
        }
        let unset = |name: &str| !seen.contains(&name);
        if unset("ExitPolicyRejectPrivate") {
            cfg.exit_policy_reject_private = false;
        }
        if unset("ExtendAllowPrivateAddresses") {
            cfg.extend_allow_private_addresses = true;
        }
        if unset("CountPrivateBandwidth") {
            cfg.count_private_bandwidth = true;
        }
    }
    // config.c:options_validate_cb (MIN_HEARTBEAT_PERIOD): raised, not
    // refused, outside a test network.
    let min_heartbeat = std::time::Duration::from_secs(30 * 60);
    if !cfg.heartbeat_period.is_zero()
        && cfg.heartbeat_period < min_heartbeat
        && !cfg.testing_tor_network
    {
        cfg.heartbeat_period = min_heartbeat;
    }
    // C caps every bandwidth at INT32_MAX (a value of exactly 2 GBytes is
    // taken as INT32_MAX, config_ensure_bandwidth_cap).
    let cap = i32::MAX as u64;
    for (name, v) in [
        ("BandwidthRate", &mut cfg.bandwidth_rate),
        ("BandwidthBurst", &mut cfg.bandwidth_burst),
        ("RelayBandwidthRate", &mut cfg.relay_bandwidth_rate),
        ("RelayBandwidthBurst", &mut cfg.relay_bandwidth_burst),
        ("MaxAdvertisedBandwidth", &mut cfg.max_advertised_bandwidth),
    ] {
        if *v > cap {
            *v -= 1;
        }
        if *v > cap {
            return Err(format!("{name} ({}) must be at most {cap}", *v));
        }
    }
    cfg.outbound_bind.validate()?;
    if cfg.relay_bandwidth_rate > 0 && cfg.relay_bandwidth_burst == 0 {
        cfg.relay_bandwidth_burst = cfg.relay_bandwidth_rate;
    }
    if cfg.relay_bandwidth_burst > 0 && cfg.relay_bandwidth_rate == 0 {
        cfg.relay_bandwidth_rate = cfg.relay_bandwidth_burst;
    }
    let min = RELAY_REQUIRED_MIN_BANDWIDTH;
    if cfg.bandwidth_rate < min {
        return Err(format!(
            "BandwidthRate is set to {} bytes/second. For servers, it must be at least {min}.",
            cfg.bandwidth_rate
        ));
    }
    if cfg.max_advertised_bandwidth < min / 2 {
        return Err(format!(
            "MaxAdvertisedBandwidth is set to {} bytes/second. For servers, it must be at least {}.",
            cfg.max_advertised_bandwidth,
            min / 2
        ));
    }
    if cfg.relay_bandwidth_rate > 0 && cfg.relay_bandwidth_rate < min {
        return Err(format!(
            "RelayBandwidthRate is set to {} bytes/second. For servers, it must be at least {min}.",
            cfg.relay_bandwidth_rate
        ));
    }
    if cfg.relay_bandwidth_rate > cfg.relay_bandwidth_burst {
        return Err("RelayBandwidthBurst must be at least equal to RelayBandwidthRate.".into());
    }
    cfg.bandwidth_rate = cfg.bandwidth_rate.max(cfg.relay_bandwidth_rate);
    cfg.bandwidth_burst = cfg.bandwidth_burst.max(cfg.relay_bandwidth_burst);
    if cfg.bandwidth_rate > cfg.bandwidth_burst {
        return Err("BandwidthBurst must be at least equal to BandwidthRate.".into());
    }
    Ok(())
}

/// `PublishServerDescriptor`: a comma-separated list of `0`, `1`, `v3`
/// (relay_config.c:compute_publishserverdescriptor). `bridge` is refused:
/// oxit is not a bridge.
fn parse_publish(v: &str) -> Result<bool, String> {
    let mut publish = false;
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.to_ascii_lowercase().as_str() {
            "1" | "v3" => publish = true,
            "0" => {}
            "bridge" => return Err("0, 1 or v3 (oxit does not run as a bridge)".into()),
            _ => return Err("0, 1 or v3".into()),
        }
    }
    Ok(publish)
}

/// C tor's memory units (confmgt/unitparse.c `memory_units`): a number
/// (a decimal fraction is allowed and truncated) and a case-insensitive
/// unit; no unit means bytes; "bits" units are an eighth of the bytes.
pub(super) fn parse_memunit(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = (&v[..split], v[split..].trim().to_ascii_lowercase());
    let mult: u64 = match unit.as_str() {
        "" | "b" | "byte" | "bytes" => 1,
        "kb" | "kbyte" | "kbytes" | "kilobyte" | "kilobytes" => 1 << 10,
        "kilobits" | "kilobit" | "kbits" | "kbit" => 1 << 7,
        "m" | "mb" | "mbyte" | "mbytes" | "megabyte" | "megabytes" => 1 << 20,
        "megabits" | "megabit" | "mbits" | "mbit" => 1 << 17,
        "gb" | "gbyte" | "gbytes" | "gigabyte" | "gigabytes" => 1 << 30,
        "gigabits" | "gigabit" | "gbits" | "gbit" => 1 << 27,
        "tb" | "tbyte" | "tbytes" | "terabyte" | "terabytes" => 1 << 40,
        "terabits" | "terabit" | "tbits" | "tbit" => 1 << 37,
        _ => return None,
    };
    if num.is_empty() {
        return None;
    }
    if num.contains('.') {
        let f: f64 = num.parse().ok()?;
        let total = f * mult as f64;
        // i64::MAX as f64 rounds up; staying below it keeps the cast exact.
        return (total.is_finite() && total < i64::MAX as f64).then_some(total as u64);
    }
    let n: u64 = num.parse().ok()?;
    n.checked_mul(mult).filter(|t| *t <= i64::MAX as u64)
}

/// A `MyFamily` member: a nickname, or `$` + 40 hex digits optionally
/// followed by `=nick` / `~nick`; bare hex gets its `$`
/// (relay_config.c:normalize_nickname_list).
fn normalize_family_member(m: &str) -> Option<String> {
    let is_nick =
        |s: &str| (1..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let is_hexdigest = |s: &str| {
        let s = s.strip_prefix('$').unwrap_or(s);
        let (hex_part, nick) = match s.find(['=', '~']) {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        hex_part.len() == 40
            && hex_part.bytes().all(|b| b.is_ascii_hexdigit())
            && nick.is_none_or(is_nick)
    };
    if m.starts_with('$') {
        return is_hexdigest(m).then(|| m.to_owned());
    }
    if is_hexdigest(m) && !is_nick(m) {
        return Some(format!("${m}"));
    }
    is_nick(m).then(|| m.to_owned())
}

fn parse_family_id(v: &str) -> Option<FamilyId> {
    use base64::Engine as _;
    let v = v.trim();
    if v == "*" {
        return Some(FamilyId::Any);
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(v).ok()?;
    Some(FamilyId::Key(bytes.try_into().ok()?))
}

/// `DirPort [address:]port|auto [flags]`: checked like an ORPort; oxit does
/// not listen on it.
fn validate_dir_port(v: &str) -> Result<(), String> {
    let mut words = v.split_ascii_whitespace();
    let first = words.next().unwrap_or("");
    if !first.eq_ignore_ascii_case("auto") {
        parse_or_port(v)?;
    }
    Ok(())
}

/// C's boolean type: exactly `0` or `1`; empty means the default.
/// The DoS* options (dos_options.inc): `auto` or 0/1 for the switches, a
/// positive number, an interval, or a defense type, where an empty value
/// or 0 leaves the consensus in charge.
fn dos_option(
    o: &mut crate::proto::dos::DosOptions,
    name: &str,
    value: &str,
    reset: bool,
) -> Result<(), &'static str> {
    let switch = || -> Result<Option<bool>, &'static str> {
        match (reset, autobool(value)) {
            (true, _) | (false, Some(AutoBool::Auto)) => Ok(None),
            (false, Some(b)) => Ok(b.as_option()),
            (false, None) => Err("0, 1 or auto"),
        }
    };
    let count = || -> Result<u32, &'static str> {
        if reset {
            return Ok(0);
        }
        value
            .parse::<u32>()
            .ok()
            .filter(|&n| n <= i32::MAX as u32)
            .ok_or("a whole number (0: the consensus decides)")
    };
    let period = || -> Result<u32, &'static str> {
        if reset {
            return Ok(0);
        }
        parse_interval(value)
            .and_then(|d| u32::try_from(d.as_secs()).ok())
            .filter(|&n| n <= i32::MAX as u32)
            .ok_or("an interval such as \"1 hour\" (0: the consensus decides)")
    };
    let defense = |max: i32| -> Result<i32, &'static str> {
        if reset {
            return Ok(0);
        }
        value
            .parse::<i32>()
            .ok()
            .filter(|n| (0..=max).contains(n))
            .ok_or(if max == 3 {
                "1 (none), 2 (refuse the stream) or 3 (close the circuit)"
            } else {
                "1 (none) or 2 (refuse)"
            })
    };
    match name {
        "DoSCircuitCreationEnabled" => o.cc_enabled = switch()?,
        "DoSCircuitCreationMinConnections" => o.cc_min_connections = count()?,
        "DoSCircuitCreationRate" => o.cc_rate = count()?,
        "DoSCircuitCreationBurst" => o.cc_burst = count()?,
        "DoSCircuitCreationDefenseType" => o.cc_defense_type = defense(2)?,
        "DoSCircuitCreationDefenseTimePeriod" => o.cc_defense_time_period = period()?,
        "DoSConnectionEnabled" => o.conn_enabled = switch()?,
        "DoSConnectionMaxConcurrentCount" => o.conn_max_concurrent_count = count()?,
        "DoSConnectionDefenseType" => o.conn_defense_type = defense(2)?,
        "DoSConnectionConnectRate" => o.conn_connect_rate = count()?,
        "DoSConnectionConnectBurst" => o.conn_connect_burst = count()?,
        "DoSConnectionConnectDefenseTimePeriod" => o.conn_connect_defense_time_period = period()?,
        "DoSRefuseSingleHopClientRendezvous" => o.refuse_single_hop_client_rendezvous = switch()?,
        "DoSStreamCreationEnabled" => o.stream_enabled = switch()?,
        "DoSStreamCreationRate" => o.stream_rate = count()?,
        "DoSStreamCreationBurst" => o.stream_burst = count()?,
        "DoSStreamCreationDefenseType" => o.stream_defense_type = defense(3)?,
        _ => return Err("a DoS option oxit knows"),
    }
    Ok(())
}

pub(super) fn boolean(v: &str, default: bool) -> Option<bool> {
    match v {
        "" => Some(default),
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

fn autobool(v: &str) -> Option<AutoBool> {
    match v.to_ascii_lowercase().as_str() {
        "0" => Some(AutoBool::Off),
        "1" => Some(AutoBool::On),
        "auto" => Some(AutoBool::Auto),
        _ => None,
    }
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&p| p != 0)
}

/// `PORT` (all IPv4 addresses), `IPV4:PORT` or `[IPV6]:PORT`.
fn parse_addr_port(s: &str) -> Result<SocketAddr, String> {
    let expected = "PORT, IPv4:PORT or [IPv6]:PORT with a port from 1 to 65535";
    if let Some(port) = parse_port(s) {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    let sa: SocketAddr = s.parse().map_err(|_| expected.to_owned())?;
    if sa.port() == 0 {
        return Err(expected.to_owned());
    }
    Ok(sa)
}

/// `ORPort [ADDRESS:]PORT [NoAdvertise|NoListen|IPv4Only|IPv6Only]...`.
fn parse_or_port(v: &str) -> Result<OrPort, String> {
    let mut words = v.split_ascii_whitespace();
    let addr = parse_addr_port(words.next().unwrap_or(""))?;
    let mut p = OrPort {
        addr,
        no_advertise: false,
        no_listen: false,
    };
    for flag in words {
        match flag.to_ascii_lowercase().as_str() {
            "noadvertise" => p.no_advertise = true,
            "nolisten" => p.no_listen = true,
            // Only meaningful for a host name or bare port in C; with an
            // explicit address the family is already fixed.
            "ipv4only" if p.addr.is_ipv4() => {}
            "ipv6only" if p.addr.is_ipv6() => {}
            _ => {
                return Err(format!(
                    "an address and port, then the flags NoAdvertise, NoListen, IPv4Only or IPv6Only \
                     (matching the address family); {flag:?} is not one of them"
                ));
            }
        }
    }
    if p.no_advertise && p.no_listen {
        return Err("NoAdvertise and NoListen together (the port would do nothing)".into());
    }
    Ok(p)
}

/// `MetricsPort [ADDRESS:]PORT [prometheus]`; a bare port is on 127.0.0.1,
/// as in C tor (never on every interface).
fn parse_metrics_port(v: &str) -> Result<SocketAddr, String> {
    let mut words = v.split_ascii_whitespace();
    let first = words.next().unwrap_or("");
    let addr = match parse_port(first) {
        Some(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        None => parse_addr_port(first)?,
    };
    match words.next() {
        None => Ok(addr),
        Some(f) if f.eq_ignore_ascii_case("prometheus") && words.next().is_none() => Ok(addr),
        Some(_) => Err("ADDRESS:PORT optionally followed by \"prometheus\"".into()),
    }
}

fn severity(s: &str) -> Option<Severity> {
    match s.to_ascii_lowercase().as_str() {
        "debug" => Some(Severity::Debug),
        "info" => Some(Severity::Info),
        "notice" => Some(Severity::Notice),
        "warn" => Some(Severity::Warn),
        "err" => Some(Severity::Err),
        _ => None,
    }
}

/// C tor's log domains (log.c:domain_list), accepted in `[...]`.
const LOG_DOMAINS: &[&str] = &[
    "general",
    "crypto",
    "net",
    "config",
    "fs",
    "protocol",
    "mm",
    "http",
    "app",
    "control",
    "circ",
    "rend",
    "bug",
    "dir",
    "dirserv",
    "or",
    "edge",
    "acct",
    "hist",
    "handshake",
    "heartbeat",
    "channel",
    "sched",
    "guard",
    "consdiff",
    "dos",
    "process",
    "pt",
    "btrack",
    "mesg",
    "*",
];

/// `Log [DOMAINS]MIN[-MAX] ... (stdout|stderr|syslog|file PATH)`
/// (log.c:parse_log_severity_config, config.c:options_init_logs). With no
/// destination, C logs to stdout.
fn parse_log(v: &str) -> Result<LogSpec, String> {
    let expected = "severity ranges such as \"notice\", \"info-err\" or \"[net]debug\", then stdout, \
                    stderr, syslog or \"file PATH\"";
    let mut rest = v.trim_start();
    let mut ranges = Vec::new();
    loop {
        let word_end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let word = &rest[..word_end];
        let (domains, sev) = match word.strip_prefix('[') {
            Some(inner) => {
                let close = inner
                    .find(']')
                    .ok_or_else(|| format!("unclosed '[' in {word:?}; {expected}"))?;
                let doms: Vec<String> = inner[..close]
                    .split(',')
                    .map(|d| d.trim().to_ascii_lowercase())
                    .collect();
                for d in &doms {
                    if !LOG_DOMAINS.contains(&d.trim_start_matches('~')) {
                        return Err(format!("unknown log domain {d:?}; {expected}"));
                    }
                }
                (doms, &inner[close + 1..])
            }
            None => (Vec::new(), word),
        };
        let (lo, hi) = match sev.split_once('-') {
            Some((lo, "")) => (severity(lo), Some(Severity::Err)),
            Some((lo, hi)) => (severity(lo), severity(hi)),
            None => (severity(sev), Some(Severity::Err)),
        };
        match (lo, hi) {
            (Some(min), Some(max)) => {
                if min > max {
                    return Err(format!("severity range {sev:?} runs backwards; {expected}"));
                }
                ranges.push(SeverityRange { domains, min, max });
                rest = rest[word_end..].trim_start();
            }
            _ if !domains.is_empty() || ranges.is_empty() => {
                return Err(format!("{word:?} is not a severity; {expected}"));
            }
            _ => break,
        }
        if rest.is_empty() {
            break;
        }
    }
    let mut dest = rest.splitn(2, |c: char| c.is_ascii_whitespace());
    let kind = dest.next().unwrap_or("").to_ascii_lowercase();
    let arg = dest.next().map(str::trim).unwrap_or("");
    let target = match (kind.as_str(), arg) {
        ("" | "stdout", "") => LogTarget::Stdout,
        ("stderr", "") => LogTarget::Stderr,
        ("syslog", "") => LogTarget::Syslog,
        ("file", path) if !path.is_empty() => LogTarget::File(PathBuf::from(path)),
        _ => return Err(format!("bad destination {rest:?}; {expected}")),
    };
    Ok(LogSpec { ranges, target })
}

/// C tor's interval syntax (confmgt/unitparse.c, time_units): a whole
/// number and an optional unit; no unit means seconds.
fn parse_interval(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: u64 = v.get(..split)?.parse().ok()?;
    let unit = v.get(split..)?.trim().to_ascii_lowercase();
    let mult = match unit.as_str() {
        "" | "second" | "seconds" | "sec" | "secs" => 1,
        "minute" | "minutes" | "min" | "mins" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86400,
        "week" | "weeks" => 7 * 86400,
        _ => return None,
    };
    // C keeps intervals in an int and refuses larger ones
    // (confmgt/unitparse.c: "Interval ... is too large"); a larger one
    // would also overflow the deadlines made from it.
    n.checked_mul(mult)
        .filter(|&secs| secs <= i32::MAX as u64)
        .map(Duration::from_secs)
}

/// C tor's MSEC_INTERVAL (confmgt/unitparse.c, time_msec_units): a whole
/// number and an optional unit; no unit means milliseconds.
fn parse_msec_interval(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: u64 = v.get(..split)?.parse().ok()?;
    let unit = v.get(split..)?.trim().to_ascii_lowercase();
    match unit.as_str() {
        "" | "msec" | "millisecond" | "milliseconds" => {
            (n <= i32::MAX as u64).then(|| Duration::from_millis(n))
        }
        _ => parse_interval(v),
    }
}

#[cfg(test)]
pub(super) fn option_names() -> Vec<&'static str> {
    implemented().collect()
}

#[cfg(test)]
pub(super) mod value_tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_interval("2 minutes"), Some(Duration::from_secs(120)));
        assert_eq!(parse_interval("1 hour"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_interval("1 fortnight"), None);
        assert_eq!(parse_interval("minutes"), None);
        // C's int limit: past it, an error rather than a deadline that
        // overflows (ShutdownWaitLength, HeartbeatPeriod).
        assert_eq!(
            parse_interval("2147483647"),
            Some(Duration::from_secs(2147483647))
        );
        assert_eq!(parse_interval("2147483648"), None);
        assert_eq!(parse_interval("10000000000000000000 seconds"), None);
        assert_eq!(parse_interval("100000 weeks"), None);
        assert_eq!(parse_msec_interval("2147483648"), None);
        assert_eq!(
            parse_msec_interval("1750"),
            Some(Duration::from_millis(1750))
        );
        assert_eq!(
            parse_msec_interval("250 msec"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_msec_interval("2 seconds"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(parse_msec_interval("2 parsecs"), None);
    }

    #[test]
    fn logs() {
        let l = parse_log("notice stdout").unwrap();
        assert_eq!(
            (l.min_severity(), &l.target),
            (Severity::Notice, &LogTarget::Stdout)
        );
        let l = parse_log("info-warn file /var/log/oxit/info log.txt").unwrap();
        assert_eq!(
            l.target,
            LogTarget::File(PathBuf::from("/var/log/oxit/info log.txt"))
        );
        assert_eq!(
            (l.ranges[0].min, l.ranges[0].max),
            (Severity::Info, Severity::Warn)
        );
        let l = parse_log("[handshake]debug [~net,~mm]info notice stderr").unwrap();
        assert_eq!(l.ranges.len(), 3);
        assert_eq!(l.min_severity(), Severity::Debug);
        assert_eq!(
            l.to_string(),
            "[handshake]debug [~net,~mm]info notice stderr"
        );
        assert_eq!(parse_log("err").unwrap().target, LogTarget::Stdout);
        assert_eq!(parse_log("warn syslog").unwrap().target, LogTarget::Syslog);
        for bad in [
            "loud stdout",
            "err-debug stdout",
            "notice file",
            "notice tty",
            "[nope]info stdout",
            "",
        ] {
            assert!(parse_log(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn or_ports() {
        assert_eq!(
            parse_or_port("9001").unwrap().addr,
            "0.0.0.0:9001".parse().unwrap()
        );
        assert_eq!(
            parse_or_port("[::1]:443").unwrap().addr,
            "[::1]:443".parse().unwrap()
        );
        assert!(parse_or_port("1.2.3.4:443 NoListen").unwrap().no_listen);
        for bad in [
            "0",
            "70000",
            "1.2.3.4",
            "1.2.3.4:0",
            "host:9001",
            "9001 Bogus",
            "9001 IPv6Only",
        ] {
            assert!(parse_or_port(bad).is_err(), "{bad:?}");
        }
    }
}
