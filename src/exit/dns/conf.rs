#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! Resolver configuration from resolv.conf text: the file C tor hands to
//! libevent (`ServerDNSResolvConfFile`, default `/etc/resolv.conf`;
//! dns.c:configure_nameservers). The caller reads the file; this module only
//! parses its text, so it stays sans-IO.
//!
//! Understood: `nameserver ADDR` (IPv4 or IPv6, port 53), `options
//! timeout:N attempts:N`, comments (`#` or `;`). `search` and `domain` are
//! ignored with a note: an exit resolves the names clients send, never a
//! name completed with a local search domain. Unknown lines get a note too.
//!
//! Unlike C tor, which falls back to 127.0.0.1 when the file is empty or has
//! no nameserver, a file with no usable nameserver is an error here: a
//! silent fallback hides a broken configuration.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Defaults for the per-attempt timeout and the number of attempts: C
/// tor's consensus defaults `exit_dns_timeout` = 1000 ms and
/// `exit_dns_num_attempts` = 2 (dns.c:get_consensus_param_exit_dns_*),
/// which C applies on top of whatever resolv.conf says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
/// See [`DEFAULT_TIMEOUT`].
pub const DEFAULT_ATTEMPTS: u32 = 2;
/// glibc's caps for `timeout:` (RES_MAXRETRANS) and `attempts:` (RES_MAXRETRY).
const MAX_TIMEOUT_SECS: u64 = 30;
const MAX_ATTEMPTS: u32 = 5;
/// Default number of cache entries per worker.
pub const DEFAULT_CACHE_CAPACITY: usize = 16 * 1024;
/// Default limit of DNS questions in flight per worker (C tor sets
/// libevent's `max-inflight` to 8192 for the whole process).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

/// Default limit of questions waiting for a slot per worker: a flood of
/// names that never answer fills the slots, and honest lookups then wait
/// for one (a slot frees within `timeout` × `attempts`) instead of failing.
/// A waiting question costs about 150 bytes.
pub const DEFAULT_MAX_QUEUED: usize = 65536;

/// How a [`super::Resolver`] talks to its nameservers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Nameservers in file order; retries rotate through them.
    pub nameservers: Vec<SocketAddr>,
    /// How long to wait for an answer to one attempt.
    pub timeout: Duration,
    /// Total sends per question (at least 1).
    pub attempts: u32,
    /// Most cache entries kept (per worker).
    pub cache_capacity: usize,
    /// Most questions in flight at once (per worker); more wait in a
    /// queue.
    pub max_in_flight: usize,
    /// Most questions waiting for a slot (per worker); past this a new
    /// question fails at once as overloaded.
    pub max_queued: usize,
    /// `ServerDNSRandomizeCase` (default 1): send names in random letter
    /// case and accept only answers that echo it exactly (0x20 encoding).
    pub randomize_case: bool,
}

/// Something in the file that was not used, with its line number (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfNote {
    pub line: usize,
    pub message: String,
}

/// A resolver configuration that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("resolver configuration {file}: no usable `nameserver` line")]
    NoNameserver { file: String },
}

impl ResolverConfig {
    /// A configuration with these nameservers and default limits.
    pub fn with_nameservers(nameservers: Vec<SocketAddr>) -> ResolverConfig {
        ResolverConfig {
            nameservers,
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_queued: DEFAULT_MAX_QUEUED,
            randomize_case: true,
        }
    }

    /// Parse resolv.conf `text`; `file` names it in errors and notes.
    /// Returns the configuration and notes about what was ignored.
    pub fn from_resolv_conf(
        text: &str,
        file: &str,
    ) -> Result<(ResolverConfig, Vec<ConfNote>), ConfigError> {
        let mut config = ResolverConfig::with_nameservers(Vec::new());
        let mut notes = Vec::new();
        let mut note = |line: usize, message: String| {
            tracing::debug!(file, line, "{message}");
            notes.push(ConfNote { line, message });
        };
        for (line_no, raw) in (1..).zip(text.lines()) {
            let line = raw.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword {
                "nameserver" => match words.next().map(parse_nameserver) {
                    Some(Ok(addr)) => config.nameservers.push(addr),
                    Some(Err(why)) => note(line_no, format!("nameserver ignored: {why}")),
                    None => note(line_no, "nameserver line without address".into()),
                },
                "options" => {
                    for opt in words {
                        if let Some(n) = opt.strip_prefix("timeout:") {
                            match n.parse::<u64>() {
                                Ok(secs) => {
                                    config.timeout =
                                        Duration::from_secs(secs.clamp(1, MAX_TIMEOUT_SECS));
                                }
                                Err(_) => note(line_no, format!("bad option {opt:?} ignored")),
                            }
                        } else if let Some(n) = opt.strip_prefix("attempts:") {
                            match n.parse::<u32>() {
                                Ok(a) => config.attempts = a.clamp(1, MAX_ATTEMPTS),
                                Err(_) => note(line_no, format!("bad option {opt:?} ignored")),
                            }
                        } else if opt == "rotate" {
                            note(
                                line_no,
                                "option rotate: retries always rotate; first tries use the \
                                 first nameserver"
                                    .into(),
                            );
                        } else {
                            note(line_no, format!("option {opt:?} ignored"));
                        }
                    }
                }
                "search" | "domain" => note(
                    line_no,
                    format!(
                        "{keyword} ignored: an exit resolves names exactly as clients send them"
                    ),
                ),
                other => note(line_no, format!("unknown keyword {other:?} ignored")),
            }
        }
        if config.nameservers.is_empty() {
            return Err(ConfigError::NoNameserver { file: file.into() });
        }
        Ok((config, notes))
    }
}

/// A nameserver address: an IP (port 53). A scope (`fe80::1%eth0`) needs an
/// interface index lookup, which this sans-IO parser cannot do; a numeric
/// scope is accepted. Like C tor's resolver (libevent's evdns), an explicit
/// port is accepted too: `127.0.0.1:5353` or `[::1]:5353`, which operators
/// use to point an exit at a local cache on another port.
fn parse_nameserver(word: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = word.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("{word:?}: port 0"));
        }
        return Ok(sa);
    }
    let (ip_text, scope) = match word.split_once('%') {
        Some((ip, scope)) => (ip, Some(scope)),
        None => (word, None),
    };
    let ip: IpAddr = ip_text
        .parse()
        .map_err(|_| format!("{word:?} is not an IP address"))?;
    let mut addr = SocketAddr::new(ip, 53);
    if let (Some(scope), SocketAddr::V6(v6)) = (scope, &mut addr) {
        let id = scope
            .parse::<u32>()
            .map_err(|_| format!("{word:?}: named interface scopes are not supported"))?;
        v6.set_scope_id(id);
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_typical_file() {
        let text = "\
# generated by NetworkManager
search lan example.org
domain lan
nameserver 192.0.2.53
nameserver 2001:db8::53 # trailing comment
; another comment style
nameserver fe80::1%2
options timeout:3 attempts:4 ndots:2
sortlist 130.155.160.0/255.255.240.0
";
        let (c, notes) = ResolverConfig::from_resolv_conf(text, "/etc/resolv.conf").unwrap();
        assert_eq!(
            c.nameservers,
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap(),
                "[fe80::1%2]:53".parse().unwrap(),
            ]
        );
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.attempts, 4);
        let lines: Vec<usize> = notes.iter().map(|n| n.line).collect();
        assert_eq!(lines, vec![2, 3, 8, 9]);
        assert!(notes[0].message.contains("search ignored"));
    }

    #[test]
    fn defaults_and_clamps() {
        let (c, _) = ResolverConfig::from_resolv_conf("nameserver 127.0.0.1\n", "f").unwrap();
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.attempts, DEFAULT_ATTEMPTS);
        let (c, _) = ResolverConfig::from_resolv_conf(
            "nameserver 127.0.0.1\noptions timeout:0 attempts:99\n",
            "f",
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(1));
        assert_eq!(c.attempts, 5);
    }

    #[test]
    fn nameserver_with_port_as_evdns_accepts() {
        let (c, _) = ResolverConfig::from_resolv_conf(
            "nameserver 127.0.0.1:5353\nnameserver [::1]:53000\nnameserver 10.0.0.1:0\n",
            "f",
        )
        .unwrap();
        assert_eq!(
            c.nameservers,
            vec![
                "127.0.0.1:5353".parse().unwrap(),
                "[::1]:53000".parse().unwrap()
            ]
        );
    }

    #[test]
    fn no_usable_nameserver_is_an_error_naming_the_file() {
        for text in [
            "",
            "# nothing\n",
            "nameserver\n",
            "nameserver foo.example\n",
            "nameserver fe80::1%eth0\n",
        ] {
            let err = ResolverConfig::from_resolv_conf(text, "/etc/tor/resolv.conf").unwrap_err();
            assert!(err.to_string().contains("/etc/tor/resolv.conf"), "{err}");
        }
    }
}
