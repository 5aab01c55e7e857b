//! The ControlPort: a read-only subset of C tor's control protocol
//! (torspec control-spec.txt), enough for monitoring tools such as nyx and
//! stem-based exporters to show what the relay does.
//!
//! What it owns: the `ControlPort`/`ControlSocket` listeners, the
//! authentication cookie file, the protocol (sans-IO: [`Session`] is fed
//! one line at a time and returns the reply bytes and what to do next, so
//! the unit tests need no sockets), and the threads that serve it: one per
//! listener, one per connection, and one that samples the traffic counters
//! once a second for `BW` events and `GETINFO bw-event-cache`.
//!
//! What it does not own: the figures it reports (the workers publish their
//! traffic counters, [`crate::runtime::Traffic`]; this thread sums them on
//! request and never touches the per-cell path), signals (`SIGNAL` raises
//! the real process signal, so that there is exactly one behaviour for
//! each, [`super::signals`]), log lines (the logging layer hands them over,
//! [`super::logging::add_controller_sink`]), or the configuration (read
//! as it was given; nothing here changes it).
//!
//! Authentication is C tor's (control_auth.c): PROTOCOLINFO, AUTHCHALLENGE
//! SAFECOOKIE, AUTHENTICATE with the cookie, a `HashedControlPassword`
//! (RFC 2440 S2K) or nothing when neither is configured. Secrets are
//! compared in constant time. An unauthenticated connection may only send
//! PROTOCOLINFO (once), AUTHCHALLENGE, AUTHENTICATE and QUIT; anything
//! else, or a failed AUTHENTICATE, closes it, as in C tor.
//!
//! Refused on purpose (a controller must not change what the relay does
//! beyond what a process signal could): SETCONF, RESETCONF (553), LOADCONF
//! (553), SAVECONF (551), and every other C tor command (510 Unrecognized
//! command), e.g. TAKEOWNERSHIP, MAPADDRESS, EXTENDCIRCUIT, CLOSECIRCUIT,
//! ADD_ONION. `docs/options.md` lists what is supported.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::config::{Config, HASHED_PASSWORD_LEN, Severity};

/// What `GETINFO version` and PROTOCOLINFO say. Controllers (stem) parse
/// it as a C tor version and enable features by it, so it names the C tor
/// release whose protocol oxit follows, with oxit and its version as the
/// status tag: nyx then shows "Tor 0.4.9.0-oxit-0.1.0".
pub const VERSION: &str = concat!("0.4.9.0-oxit-", env!("CARGO_PKG_VERSION"));

/// C tor's cookie length (control_auth.c: AUTHENTICATION_COOKIE_LEN).
pub const COOKIE_LEN: usize = 32;
/// The cookie file's name in the DataDirectory (C tor's).
pub const COOKIE_FILE: &str = "control_auth_cookie";
const SAFECOOKIE_SERVER_KEY: &[u8] = b"Tor safe cookie authentication server-to-controller hash";
const SAFECOOKIE_CLIENT_KEY: &[u8] = b"Tor safe cookie authentication controller-to-server hash";
/// No command oxit accepts is anywhere near this long; C tor allows 1 MiB,
/// but a read-only subset has no use for more than a long GETCONF.
pub const MAX_LINE: usize = 64 * 1024;
/// A `+COMMAND` body (LOADCONF, POSTDESCRIPTOR) is read to its end before
/// it is refused, up to this size.
const MAX_BODY: usize = 1024 * 1024;
/// Samples kept for `GETINFO bw-event-cache` (C: N_BW_EVENTS_TO_CACHE).
const BW_CACHE: usize = 300;
/// Connections served at once; more are closed at accept (C tor has no
/// limit, but a local monitoring port needs few).
const MAX_CONNECTIONS: usize = 64;
/// How often a connection looks for events to send while idle.
const POLL: Duration = Duration::from_millis(100);
/// A controller that reads nothing for this long while we write is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that has not authenticated by then is closed, so that
/// silent connections cannot hold every slot ([`MAX_CONNECTIONS`]) and
/// keep the operator's controller out.
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Log events queued for one controller before lines are dropped.
const LOG_QUEUE: usize = 4096;

/// C tor's event names (control_events.c: control_event_table). SETEVENTS
/// accepts all of them, so controllers that ask for NEWCONSENSUS or CIRC
/// keep working; only [`EMITTED_EVENTS`] are ever sent.
const C_TOR_EVENTS: &[&str] = &[
    "CIRC",
    "CIRC_MINOR",
    "STREAM",
    "ORCONN",
    "BW",
    "DEBUG",
    "INFO",
    "NOTICE",
    "WARN",
    "ERR",
    "NEWDESC",
    "ADDRMAP",
    "DESCCHANGED",
    "NS",
    "STATUS_GENERAL",
    "STATUS_CLIENT",
    "STATUS_SERVER",
    "GUARD",
    "STREAM_BW",
    "CLIENTS_SEEN",
    "NEWCONSENSUS",
    "BUILDTIMEOUT_SET",
    "SIGNAL",
    "CONF_CHANGED",
    "CONN_BW",
    "CELL_STATS",
    "CIRC_BW",
    "TRANSPORT_LAUNCHED",
    "HS_DESC",
    "HS_DESC_CONTENT",
    "NETWORK_LIVENESS",
];

/// The events oxit sends (`GETINFO events/names`).
const EMITTED_EVENTS: &str = "BW DEBUG INFO NOTICE WARN ERR";

/// The GETINFO keys answered, for `GETINFO info/names`.
const INFO_NAMES: &[(&str, &str)] = &[
    ("accounting/enabled", "Is accounting currently enabled?"),
    ("accounting/hibernating", "Are we hibernating or awake?"),
    (
        "accounting/bytes",
        "Number of bytes read/written so far in the accounting interval.",
    ),
    (
        "accounting/bytes-left",
        "Number of bytes left to write/read so far in the accounting interval.",
    ),
    (
        "accounting/interval-start",
        "Time when the accounting period starts.",
    ),
    (
        "accounting/interval-wake",
        "Time to wake up in this accounting period.",
    ),
    (
        "accounting/interval-end",
        "Time when the accounting period ends.",
    ),
    ("address", "IP address of this relay."),
    ("bw-event-cache", "Cached BW events for a short interval."),
    (
        "circuit-status",
        "List of current circuits originating here.",
    ),
    ("config-file", "Current location of the \"torrc\" file."),
    ("config-text", "Return the current configuration."),
    (
        "config/names",
        "List of configuration options, types, and documentation.",
    ),
    (
        "dormant",
        "Is Tor dormant (not building circuits because it's idle)?",
    ),
    (
        "events/names",
        "Events that the controller can ask for with SETEVENTS.",
    ),
    ("exit-policy/full", "The entire exit policy of this relay."),
    ("features/names", "What arguments can USEFEATURE take?"),
    ("fingerprint", "Get the server's fingerprint."),
    (
        "info/names",
        "List of GETINFO options, types, and documentation.",
    ),
    ("net/listeners/*", "Bound addresses by type."),
    (
        "network-liveness",
        "Current opinion on whether the network is live.",
    ),
    ("process/descriptor-limit", "File descriptor limit."),
    (
        "process/pid",
        "Process id belonging to the main tor process.",
    ),
    ("process/uid", "User id running the tor process."),
    (
        "process/user",
        "Username under which the tor process is running.",
    ),
    ("signal/names", "A list of signal names."),
    ("status/version/current", "Status of the current version."),
    ("traffic/read", "Bytes read since the process was started."),
    (
        "traffic/written",
        "Bytes written since the process was started.",
    ),
    ("uptime", "Uptime of the Tor daemon in seconds."),
    ("version", "The current version of Tor."),
];

/// The listener types of `net/listeners/*` (C: control_getinfo.c).
const LISTENER_TYPES: &[&str] = &[
    "or",
    "dir",
    "socks",
    "trans",
    "natd",
    "dns",
    "control",
    "extor",
    "httptunnel",
    "metrics",
];

/// Failures that stop startup (binding, the cookie file).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot listen on ControlPort {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on ControlSocket {path}: {source}")]
    ListenUnix {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the control cookie file {path}: {source}")]
    Cookie {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot hand ControlSocket {path} to User {user}: {reason}")]
    SocketOwner {
        path: PathBuf,
        user: String,
        reason: String,
    },
}

// ---------------------------------------------------------------------------
// Listeners (bound before `User` takes root away, like the ORPort).

/// The bound control listeners, from `main` to [`start`].
pub struct ControlListeners {
    tcp: Vec<TcpListener>,
    unix: Vec<(UnixListener, PathBuf)>,
    config_file: Option<PathBuf>,
    /// The cookie and its file, once [`ControlListeners::write_cookie`]
    /// made them.
    cookie: Option<(Zeroizing<[u8; COOKIE_LEN]>, PathBuf)>,
}

impl std::fmt::Debug for ControlListeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the cookie: it is as good as the operator's permission.
        f.debug_struct("ControlListeners")
            .field("listeners", &self.names())
            .field("config_file", &self.config_file)
            .field("cookie_file", &self.cookie.as_ref().map(|(_, p)| p))
            .finish()
    }
}

impl ControlListeners {
    /// Bind every `ControlPort` and `ControlSocket` of `config`; `None`
    /// when there is none. `config_file` is what `GETINFO config-file`
    /// answers.
    pub fn bind(
        config: &Config,
        config_file: Option<&Path>,
    ) -> Result<Option<ControlListeners>, ControlError> {
        let c = &config.control;
        if !c.enabled() {
            return Ok(None);
        }
        let mut tcp = Vec::new();
        for &addr in &c.ports {
            tcp.push(
                TcpListener::bind(addr).map_err(|source| ControlError::Listen { addr, source })?,
            );
        }
        let mut unix = Vec::new();
        for s in &c.sockets {
            let err = |source| ControlError::ListenUnix {
                path: s.path.clone(),
                source,
            };
            // A socket left by an earlier run would make bind fail; C tor
            // removes it too (connection.c: unlink of a stale AF_UNIX
            // listener). Anything that is not a socket is left alone.
            if let Ok(m) = std::fs::symlink_metadata(&s.path) {
                use std::os::unix::fs::FileTypeExt as _;
                if m.file_type().is_socket() {
                    std::fs::remove_file(&s.path).map_err(err)?;
                }
            }
            let l = UnixListener::bind(&s.path).map_err(err)?;
            let mode = if s.world_writable {
                0o666
            } else if s.group_writable || c.sockets_group_writable {
                0o660
            } else {
                0o600
            };
            std::fs::set_permissions(&s.path, std::fs::Permissions::from_mode(mode))
                .map_err(err)?;
            if let Some(user) = &config.user {
                chown_to(&s.path, user)?;
            }
            unix.push((l, s.path.clone()));
        }
        Ok(Some(ControlListeners {
            tcp,
            unix,
            config_file: config_file.map(|p| std::fs::canonicalize(p).unwrap_or(p.to_path_buf())),
            cookie: None,
        }))
    }

    /// With `CookieAuthentication 1`: make a new cookie and write it
    /// (DataDirectory/control_auth_cookie unless `CookieAuthFile`). Call
    /// it after `User` took effect, so that the file belongs to the user
    /// the relay runs as; a failure stops startup, as in C tor.
    pub fn write_cookie(&mut self, config: &Config) -> Result<(), ControlError> {
        let c = &config.control;
        if !c.cookie_authentication {
            return Ok(());
        }
        let path = c
            .cookie_auth_file
            .clone()
            .unwrap_or_else(|| config.data_directory.join(COOKIE_FILE));
        let cookie = write_cookie(&path, c.cookie_auth_file_group_readable, &mut rand::rng())?;
        let path = std::path::absolute(&path).unwrap_or(path);
        self.cookie = Some((cookie, path));
        Ok(())
    }

    /// The listeners as `GETINFO net/listeners/control` names them.
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        v.extend(
            self.unix
                .iter()
                .map(|(_, p)| format!("unix:{}", p.display())),
        );
        v
    }
}

/// Give a control socket to `User` (C tor does the same, so that the
/// relay user's tools can use it after the switch).
fn chown_to(path: &Path, user: &str) -> Result<(), ControlError> {
    let fail = |reason: String| ControlError::SocketOwner {
        path: path.to_path_buf(),
        user: user.to_owned(),
        reason,
    };
    let ids = crate::os::lookup_user(user).map_err(|e| fail(e.to_string()))?;
    std::os::unix::fs::chown(path, Some(ids.uid), Some(ids.gid)).map_err(|e| fail(e.to_string()))
}

// ---------------------------------------------------------------------------
// What the protocol answers from.

/// How controllers must authenticate.
#[derive(Default)]
pub struct AuthConfig {
    /// The cookie, when `CookieAuthentication 1`.
    pub cookie: Option<Zeroizing<[u8; COOKIE_LEN]>>,
    /// Where it is (PROTOCOLINFO's COOKIEFILE).
    pub cookie_file: Option<PathBuf>,
    /// Decoded `HashedControlPassword` lines.
    pub passwords: Vec<[u8; HASHED_PASSWORD_LEN]>,
}

impl AuthConfig {
    /// C's get_authmethods.
    fn methods(&self) -> &'static str {
        match (self.cookie.is_some(), !self.passwords.is_empty()) {
            (true, true) => "COOKIE,SAFECOOKIE,HASHEDPASSWORD",
            (true, false) => "COOKIE,SAFECOOKIE",
            (false, true) => "HASHEDPASSWORD",
            (false, false) => "NULL",
        }
    }
}

/// Once-a-second traffic samples: the source of BW events and of
/// `GETINFO bw-event-cache`.
#[derive(Default)]
pub struct BwSamples {
    /// (read, written) per second, oldest first, and how many samples
    /// were ever taken: under one lock, so that a reader never sees a
    /// count that does not match the samples.
    samples: Mutex<(VecDeque<(u64, u64)>, u64)>,
}

impl BwSamples {
    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<(u64, u64)>, u64)> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record one second's traffic.
    pub fn push(&self, read: u64, written: u64) {
        let mut g = self.lock();
        let (s, seq) = &mut *g;
        if s.len() == BW_CACHE {
            s.pop_front();
        }
        s.push_back((read, written));
        *seq = seq.wrapping_add(1);
    }

    fn seq(&self) -> u64 {
        self.lock().1
    }

    /// The samples after number `since` (at most the cache), and the
    /// number of the last.
    fn since(&self, since: u64) -> (Vec<(u64, u64)>, u64) {
        let g = self.lock();
        let (s, seq) = &*g;
        let n = usize::try_from(seq.saturating_sub(since))
            .unwrap_or(usize::MAX)
            .min(s.len());
        (s.iter().skip(s.len() - n).copied().collect(), *seq)
    }

    /// C's get_bw_samples: `read,written` pairs, oldest first.
    fn cache_text(&self) -> String {
        let g = self.lock();
        let v: Vec<String> = g.0.iter().map(|(r, w)| format!("{r},{w}")).collect();
        v.join(" ")
    }
}

/// What a reload or a new address changes ([`ControlContext::refresh`]).
#[derive(Debug, Default)]
pub struct LiveConf {
    /// The effective configuration in torrc form (`GETINFO config-text`).
    pub config_text: String,
    /// `GETCONF` answers: canonical option name and value, one entry per
    /// value, in `config_text`'s order.
    pub conf: Vec<(String, String)>,
    /// `GETINFO address`.
    pub address: Option<IpAddr>,
    /// `GETINFO exit-policy/full`: one rule per line.
    pub exit_policy: String,
}

impl LiveConf {
    fn new(
        config: &Config,
        exit_policy: &crate::exit::policy::ExitPolicy,
        addresses: &[IpAddr],
    ) -> LiveConf {
        let (config_text, conf) = conf_from_describe(&config.describe());
        LiveConf {
            config_text,
            conf,
            address: addresses
                .iter()
                .find(|a| a.is_ipv4())
                .or(addresses.first())
                .copied(),
            exit_policy: exit_policy
                .rules()
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// Everything a session answers from: fixed at start, what a reload
/// changes, and the live traffic figures.
pub struct ControlContext {
    pub fingerprint: String,
    pub config_file: Option<PathBuf>,
    /// `net/listeners/or`, `net/listeners/control`, as C tor writes them.
    pub or_listeners: Vec<String>,
    pub control_listeners: Vec<String>,
    live: std::sync::RwLock<LiveConf>,
    pub auth: AuthConfig,
    /// When the relay started (unix seconds).
    pub started: u64,
    /// The relay's traffic totals (read, written), summed on request.
    pub traffic: Box<dyn Fn() -> (u64, u64) + Send + Sync>,
    pub bw: BwSamples,
    /// The accounting state, stored by the control thread each second.
    pub accounting: super::accounting::SharedAccounting,
}

impl ControlContext {
    /// The context for `config` (its effective exit policy `exit_policy`,
    /// our identity `fingerprint`, what we publish `addresses`).
    pub fn new(
        config: &Config,
        exit_policy: &crate::exit::policy::ExitPolicy,
        fingerprint: String,
        addresses: &[IpAddr],
        auth: AuthConfig,
        traffic: Box<dyn Fn() -> (u64, u64) + Send + Sync>,
    ) -> ControlContext {
        ControlContext {
            fingerprint,
            config_file: None,
            live: std::sync::RwLock::new(LiveConf::new(config, exit_policy, addresses)),
            or_listeners: config
                .or_ports
                .iter()
                .filter(|p| !p.no_listen)
                .map(|p| p.addr.to_string())
                .collect(),
            control_listeners: Vec::new(),
            auth,
            started: crate::dir::time::unix(SystemTime::now()),
            traffic,
            bw: BwSamples::default(),
            accounting: Default::default(),
        }
    }

    /// After a reload or an address change: what GETINFO and GETCONF
    /// answer from now on.
    pub fn refresh(
        &self,
        config: &Config,
        exit_policy: &crate::exit::policy::ExitPolicy,
        addresses: &[IpAddr],
    ) {
        let live = LiveConf::new(config, exit_policy, addresses);
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = live;
    }

    fn live(&self) -> std::sync::RwLockReadGuard<'_, LiveConf> {
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// `Config::describe` without its comments is the configuration text;
/// its lines are the GETCONF answers, with C tor's GETCONF value forms:
/// sizes and intervals as plain numbers (stem reads `BandwidthRate` as
/// an integer), not oxit's "N bytes" / "N seconds".
fn conf_from_describe(describe: &str) -> (String, Vec<(String, String)>) {
    let mut text = String::new();
    let mut conf = Vec::new();
    for line in describe.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        text.push_str(line);
        text.push('\n');
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        let v = ["bytes", "seconds", "msec"]
            .iter()
            .find_map(|unit| {
                let n = v.strip_suffix(unit)?.trim_end();
                n.bytes().all(|b| b.is_ascii_digit()).then_some(n)
            })
            .unwrap_or(v);
        conf.push((k.to_owned(), v.to_owned()));
    }
    (text, conf)
}

// ---------------------------------------------------------------------------
// The protocol, sans IO.

/// A C tor signal name a controller may send, and the process signal it
/// raises.
fn signal_for(name: &str) -> Option<Option<libc::c_int>> {
    Some(Some(match name.to_ascii_uppercase().as_str() {
        "RELOAD" | "HUP" => libc::SIGHUP,
        "SHUTDOWN" | "INT" => libc::SIGINT,
        "HALT" | "TERM" => libc::SIGTERM,
        "DUMP" | "USR1" => libc::SIGUSR1,
        "DEBUG" | "USR2" => libc::SIGUSR2,
        // oxit builds no client circuits: nothing to renew, and saying so
        // with an error would break nyx's "new identity" key for nothing.
        "NEWNYM" => return Some(None),
        _ => return None,
    }))
}

const SIGNAL_NAMES: &str = "RELOAD HUP SHUTDOWN INT HALT TERM DUMP USR1 DEBUG USR2 NEWNYM";

/// What a connection subscribed to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    pub bw: bool,
    /// [`super::logging::severity_bit`]s.
    pub log_mask: u8,
}

/// What the IO side does after a line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Bytes to send.
    pub reply: Vec<u8>,
    /// Close the connection after sending.
    pub close: bool,
    /// Raise this signal after sending.
    pub signal: Option<libc::c_int>,
}

impl Output {
    fn line(&mut self, code: u16, sep: char, text: &str) {
        let _ = write!(Fmt(&mut self.reply), "{code:03}{sep}{text}\r\n");
    }

    fn end(&mut self, code: u16, text: &str) {
        self.line(code, ' ', text);
    }

    fn close_with(mut self, code: u16, text: &str) -> Output {
        self.end(code, text);
        self.close = true;
        self
    }

    /// A key=value line; a value with line breaks goes as CmdData
    /// (control_proto.c: control_write_reply_line, write_escaped_data).
    fn kv(&mut self, code: u16, key: &str, value: &str) {
        if value.contains(['\r', '\n']) {
            self.line(code, '+', &format!("{key}="));
            for l in value.trim_end_matches('\n').split('\n') {
                let l = l.trim_end_matches('\r');
                if l.starts_with('.') {
                    self.reply.push(b'.');
                }
                self.reply.extend_from_slice(l.as_bytes());
                self.reply.extend_from_slice(b"\r\n");
            }
            self.reply.extend_from_slice(b".\r\n");
        } else {
            self.line(code, '-', &format!("{key}={value}"));
        }
    }
}

/// `write!` into a byte vector.
struct Fmt<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Splits the byte stream into lines (`\n` or `\r\n`), refusing lines
/// longer than [`MAX_LINE`].
#[derive(Default)]
pub struct LineReader {
    buf: Vec<u8>,
}

/// A line longer than [`MAX_LINE`].
#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong;

impl LineReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line, without its line ending.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(i) if i > MAX_LINE => Err(LineTooLong),
            Some(i) => {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_LINE => Err(LineTooLong),
            None => Ok(None),
        }
    }
}

/// One argument of a command line: a bare word, or a quoted string with
/// its escapes decoded.
#[derive(Debug, PartialEq, Eq)]
struct Arg {
    value: Vec<u8>,
    quoted: bool,
}

/// Split `args` at spaces; `"..."` is one argument with C escapes
/// (kvline.c / qstring.c). None for an unterminated quote or bad escape.
fn split_args(args: &str) -> Option<Vec<Arg>> {
    let mut out = Vec::new();
    let b = args.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b' ' || b[i] == b'\t' {
            i += 1;
            continue;
        }
        if b[i] == b'"' {
            let mut v = Vec::new();
            i += 1;
            loop {
                match b.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        let c = *b.get(i + 1)?;
                        i += 2;
                        match c {
                            b'n' => v.push(b'\n'),
                            b'r' => v.push(b'\r'),
                            b't' => v.push(b'\t'),
                            b'\\' | b'"' | b'\'' => v.push(c),
                            b'x' => {
                                let h = std::str::from_utf8(b.get(i..i + 2)?).ok()?;
                                v.push(u8::from_str_radix(h, 16).ok()?);
                                i += 2;
                            }
                            b'0'..=b'7' => {
                                let o = std::str::from_utf8(b.get(i - 1..i + 2)?).ok()?;
                                v.push(u8::from_str_radix(o, 8).ok()?);
                                i += 2;
                            }
                            _ => return None,
                        }
                        continue;
                    }
                    &c => v.push(c),
                }
                i += 1;
            }
            i += 1;
            out.push(Arg {
                value: v,
                quoted: true,
            });
        } else {
            let start = i;
            while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
                i += 1;
            }
            out.push(Arg {
                value: b[start..i].to_vec(),
                quoted: false,
            });
        }
    }
    Some(out)
}

/// C's esc_for_log: a quoted string with C escapes.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.bytes() {
        match c {
            b'\\' | b'"' => {
                out.push('\\');
                out.push(c as char);
            }
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(c as char),
            _ => {
                let _ = write!(out, "\\{c:03o}");
            }
        }
    }
    out.push('"');
    out
}

/// HMAC-SHA256(key, cookie | client nonce | server nonce): the two SAFECOOKIE
/// hashes (control-spec §3.24).
pub fn safecookie_hash(key: &[u8], cookie: &[u8], client: &[u8], server: &[u8]) -> [u8; 32] {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(cookie);
            m.update(client);
            m.update(server);
            m.finalize().into_bytes().into()
        }
        // HMAC takes keys of any length; this arm is unreachable.
        Err(_) => [0; 32],
    }
}

/// The server's and the controller's SAFECOOKIE hashes.
pub fn safecookie_hashes(cookie: &[u8], client: &[u8], server: &[u8]) -> ([u8; 32], [u8; 32]) {
    (
        safecookie_hash(SAFECOOKIE_SERVER_KEY, cookie, client, server),
        safecookie_hash(SAFECOOKIE_CLIENT_KEY, cookie, client, server),
    )
}

/// OpenPGP iterated and salted S2K (RFC 2440 §3.6.1.3) as C tor's
/// secret_to_key_rfc2440: SHA-1 over `salt | secret` repeated until
/// `count` bytes were hashed, count from the specifier's ninth byte.
pub fn s2k_rfc2440(secret: &[u8], specifier: &[u8; 9]) -> [u8; 20] {
    const EXPBIAS: u32 = 6;
    let c = u32::from(specifier[8]);
    let count = ((16 + (c & 15)) as usize) << ((c >> 4) + EXPBIAS);
    let mut tmp = Zeroizing::new(Vec::with_capacity(8 + secret.len()));
    tmp.extend_from_slice(&specifier[..8]);
    tmp.extend_from_slice(secret);
    let mut d = Sha1::new();
    let mut left = count;
    while left > 0 {
        let n = left.min(tmp.len());
        d.update(&tmp[..n]);
        left -= n;
    }
    d.finalize().into()
}

/// Does `secret` match a decoded `HashedControlPassword`?
pub fn password_matches(secret: &[u8], hashed: &[u8; HASHED_PASSWORD_LEN]) -> bool {
    let mut spec = [0u8; 9];
    spec.copy_from_slice(&hashed[..9]);
    bool::from(s2k_rfc2440(secret, &spec).ct_eq(&hashed[9..]))
}

/// One connection's protocol state.
#[derive(Default)]
pub struct Session {
    authenticated: bool,
    sent_protocolinfo: bool,
    /// After AUTHCHALLENGE: the controller's expected response.
    safecookie_client_hash: Option<Zeroizing<[u8; 32]>>,
    events: Events,
    /// A `+COMMAND` whose body is being read: its first line and the body
    /// size so far.
    body: Option<(String, usize)>,
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    pub fn events(&self) -> Events {
        self.events
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Handle one line (without its line ending).
    pub fn on_line<R: rand::CryptoRng + ?Sized>(
        &mut self,
        line: &[u8],
        ctx: &ControlContext,
        rng: &mut R,
    ) -> Output {
        let text = String::from_utf8_lossy(line);
        if let Some((first, size)) = self.body.as_mut() {
            // The body of a multi-line command ends with a lone ".".
            if text != "." {
                *size += line.len() + 2;
                if *size > MAX_BODY {
                    return Output::default().close_with(500, "Line too long.");
                }
                return Output::default();
            }
            let first = std::mem::take(first);
            self.body = None;
            return self.command(&first, ctx, rng);
        }
        if text.starts_with('+') {
            self.body = Some((text.into_owned(), 0));
            return Output::default();
        }
        self.command(&text, ctx, rng)
    }

    fn command<R: rand::CryptoRng + ?Sized>(
        &mut self,
        line: &str,
        ctx: &ControlContext,
        rng: &mut R,
    ) -> Output {
        let line = line.trim_start();
        let (cmd, args) = line
            .split_once([' ', '\t'])
            .map_or((line, ""), |(c, a)| (c, a.trim_start()));
        let cmd = cmd.trim_start_matches('+').to_ascii_uppercase();
        let out = Output::default();
        if cmd == "QUIT" {
            return out.close_with(250, "closing connection");
        }
        if !self.authenticated && !self.valid_initial(&cmd) {
            return out.close_with(514, "Authentication required.");
        }
        match cmd.as_str() {
            "PROTOCOLINFO" => self.protocolinfo(args, ctx),
            "AUTHCHALLENGE" => self.authchallenge(args, ctx, rng),
            "AUTHENTICATE" => self.authenticate(args, ctx),
            "GETINFO" => getinfo(args, ctx),
            "GETCONF" => getconf(args, ctx),
            "SETEVENTS" => self.setevents(args),
            "SIGNAL" => signal(args),
            "USEFEATURE" => usefeature(args),
            "SETCONF" | "RESETCONF" | "LOADCONF" => {
                let mut out = out;
                out.end(
                    553,
                    &format!(
                        "{cmd} refused: oxit's ControlPort is read-only. Edit the torrc and \
                         send SIGNAL RELOAD"
                    ),
                );
                out
            }
            "SAVECONF" => {
                let mut out = out;
                out.end(
                    551,
                    "SAVECONF refused: oxit's ControlPort is read-only and never writes the torrc",
                );
                out
            }
            "" => {
                let mut out = out;
                out.end(510, "Unrecognized command \"\"");
                out
            }
            _ => {
                let mut out = out;
                out.end(510, &format!("Unrecognized command {}", quoted(&cmd)));
                out
            }
        }
    }

    /// control.c:is_valid_initial_command.
    fn valid_initial(&self, cmd: &str) -> bool {
        match cmd {
            "PROTOCOLINFO" => !self.sent_protocolinfo && self.safecookie_client_hash.is_none(),
            "AUTHCHALLENGE" => self.safecookie_client_hash.is_none(),
            "AUTHENTICATE" => true,
            _ => false,
        }
    }

    fn protocolinfo(&mut self, args: &str, ctx: &ControlContext) -> Output {
        self.sent_protocolinfo = true;
        let mut out = Output::default();
        for a in args.split_ascii_whitespace() {
            if a.parse::<u64>().is_err() {
                out.end(513, &format!("No such version {}", quoted(a)));
                // Bad arguments are not tolerated before authentication.
                out.close = !self.authenticated;
                return out;
            }
        }
        out.line(250, '-', "PROTOCOLINFO 1");
        let mut auth = format!("AUTH METHODS={}", ctx.auth.methods());
        if ctx.auth.cookie.is_some()
            && let Some(f) = &ctx.auth.cookie_file
        {
            let _ = write!(auth, " COOKIEFILE={}", quoted(&f.display().to_string()));
        }
        out.line(250, '-', &auth);
        out.line(250, '-', &format!("VERSION Tor={}", quoted(VERSION)));
        out.end(250, "OK");
        out
    }

    fn authchallenge<R: rand::CryptoRng + ?Sized>(
        &mut self,
        args: &str,
        ctx: &ControlContext,
        rng: &mut R,
    ) -> Output {
        let out = Output::default();
        let Some(a) = split_args(args) else {
            return out.close_with(512, "Bad arguments to AUTHCHALLENGE");
        };
        match a.first() {
            Some(m) if m.value.eq_ignore_ascii_case(b"SAFECOOKIE") && !m.quoted => {}
            _ => {
                return out
                    .close_with(513, "AUTHCHALLENGE only supports SAFECOOKIE authentication");
            }
        }
        let Some(cookie) = &ctx.auth.cookie else {
            return out.close_with(515, "Cookie authentication is disabled");
        };
        if a.len() != 2 {
            return out.close_with(512, "Wrong number of arguments for AUTHCHALLENGE");
        }
        let nonce = &a[1];
        let client_nonce = if nonce.quoted {
            nonce.value.clone()
        } else if nonce.value.contains(&b'=') {
            return out.close_with(512, "AUTHCHALLENGE does not accept keyword arguments.");
        } else {
            match hex::decode(&nonce.value) {
                Ok(n) => n,
                Err(_) => return out.close_with(513, "Invalid base16 client nonce"),
            }
        };
        let mut server_nonce = [0u8; 32];
        rng.fill_bytes(&mut server_nonce);
        let (server_hash, client_hash) =
            safecookie_hashes(&cookie[..], &client_nonce, &server_nonce);
        self.safecookie_client_hash = Some(Zeroizing::new(client_hash));
        let mut out = out;
        out.end(
            250,
            &format!(
                "AUTHCHALLENGE SERVERHASH={} SERVERNONCE={}",
                hex::encode_upper(server_hash),
                hex::encode_upper(server_nonce)
            ),
        );
        out
    }

    /// control_auth.c:handle_control_authenticate.
    fn authenticate(&mut self, args: &str, ctx: &ControlContext) -> Output {
        let out = Output::default();
        let Some(a) = split_args(args) else {
            return out.close_with(512, "Bad arguments to AUTHENTICATE");
        };
        let (secret, was_quoted) = match a.as_slice() {
            [] => (Zeroizing::new(Vec::new()), false),
            [one] if one.quoted => (Zeroizing::new(one.value.clone()), true),
            [one] if one.value.contains(&b'=') => {
                return out.close_with(512, "AUTHENTICATE does not accept keyword arguments.");
            }
            [one] => match hex::decode(&one.value) {
                Ok(s) => (Zeroizing::new(s), false),
                Err(_) => {
                    return out.close_with(
                        551,
                        "Invalid hexadecimal encoding.  Maybe you tried a plain text password?  \
                         If so, the standard requires that you put it in double quotes.",
                    );
                }
            },
            _ => return out.close_with(512, "Too many arguments to AUTHENTICATE."),
        };
        match check_secret(
            &secret,
            was_quoted,
            self.safecookie_client_hash.take(),
            &ctx.auth,
        ) {
            Ok(()) => {
                self.authenticated = true;
                tracing::debug!("Authenticated control connection");
                let mut out = out;
                out.end(250, "OK");
                out
            }
            Err(why) => {
                tracing::warn!("Controller authentication failed: {why}");
                out.close_with(515, &format!("Authentication failed: {why}"))
            }
        }
    }

    fn setevents(&mut self, args: &str) -> Output {
        let mut out = Output::default();
        let mut ev = Events::default();
        for a in args.split_ascii_whitespace() {
            let a = a.to_ascii_uppercase();
            // Obsolete, accepted and ignored by C tor.
            if a == "EXTENDED" {
                continue;
            }
            let Some(name) = C_TOR_EVENTS.iter().find(|e| **e == a) else {
                out.end(552, &format!("Unrecognized event {}", quoted(&a)));
                return out;
            };
            match *name {
                "BW" => ev.bw = true,
                "DEBUG" => ev.log_mask |= super::logging::severity_bit(Severity::Debug),
                "INFO" => ev.log_mask |= super::logging::severity_bit(Severity::Info),
                "NOTICE" => ev.log_mask |= super::logging::severity_bit(Severity::Notice),
                "WARN" => ev.log_mask |= super::logging::severity_bit(Severity::Warn),
                "ERR" => ev.log_mask |= super::logging::severity_bit(Severity::Err),
                _ => {}
            }
        }
        self.events = ev;
        out.end(250, "OK");
        out
    }
}

/// The AUTHENTICATE decision (control_auth.c), as the error text C tor
/// sends on failure.
fn check_secret(
    secret: &[u8],
    was_quoted: bool,
    safecookie: Option<Zeroizing<[u8; 32]>>,
    auth: &AuthConfig,
) -> Result<(), &'static str> {
    if let Some(expected) = safecookie {
        if secret.len() != 32 {
            return Err("Wrong length for safe cookie response.");
        }
        if !bool::from(expected[..].ct_eq(secret)) {
            return Err("Safe cookie response did not match expected value.");
        }
        return Ok(());
    }
    let with_password = !auth.passwords.is_empty();
    let Some(cookie) = &auth.cookie else {
        if !with_password {
            // Neither is configured: C tor lets anyone in (the port is
            // loopback-only; start() warns about it).
            return Ok(());
        }
        return check_password(secret, was_quoted, auth);
    };
    if secret.len() == COOKIE_LEN && bool::from(cookie[..].ct_eq(secret)) {
        return Ok(());
    }
    if !with_password {
        return Err(if secret.len() != COOKIE_LEN {
            "Wrong length on authentication cookie."
        } else {
            "Authentication cookie did not match expected value."
        });
    }
    check_password(secret, was_quoted, auth)
        .map_err(|_| "Password did not match HashedControlPassword *or* authentication cookie.")
}

fn check_password(secret: &[u8], was_quoted: bool, auth: &AuthConfig) -> Result<(), &'static str> {
    // Every hash is tried (no early exit on the first match would leak
    // little, but there is no reason to leak anything).
    let ok = auth
        .passwords
        .iter()
        .fold(false, |ok, h| password_matches(secret, h) | ok);
    if ok {
        Ok(())
    } else if was_quoted {
        Err("Password did not match HashedControlPassword value from configuration")
    } else {
        Err(
            "Password did not match HashedControlPassword value from configuration. Maybe you \
             tried a plain text password? If so, the standard requires that you put it in \
             double quotes.",
        )
    }
}

/// One GETINFO key's answer: a value, an unknown key (552) or a failure
/// (551, which ends the whole reply, as in C).
enum Answer {
    Value(String),
    Unknown,
    Failed(String),
}

fn getinfo(args: &str, ctx: &ControlContext) -> Output {
    let mut out = Output::default();
    let mut keys: Vec<&str> = Vec::new();
    for k in args.split_ascii_whitespace() {
        // A key asked twice is answered once: a line of one large key
        // repeated would otherwise build a reply thousands of times its
        // size.
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    if keys.is_empty() {
        out.end(512, "Bad arguments to GETINFO: Need at least 1 argument(s)");
        return out;
    }
    let mut answers = Vec::new();
    let mut unknown = Vec::new();
    for k in keys {
        match info(k, ctx) {
            Answer::Value(v) => answers.push((k, v)),
            Answer::Unknown => unknown.push(k),
            Answer::Failed(why) => {
                out.end(551, &why);
                return out;
            }
        }
    }
    if !unknown.is_empty() {
        for (i, k) in unknown.iter().enumerate() {
            let sep = if i + 1 == unknown.len() { ' ' } else { '-' };
            out.line(552, sep, &format!("Unrecognized key {}", quoted(k)));
        }
        return out;
    }
    for (k, v) in answers {
        out.kv(250, k, &v);
    }
    out.end(250, "OK");
    out
}

fn info(key: &str, ctx: &ControlContext) -> Answer {
    use Answer::{Failed, Unknown, Value};
    let quoted_list = |v: &[String]| {
        v.iter()
            .map(|s| quoted(s))
            .collect::<Vec<String>>()
            .join(" ")
    };
    let v = match key {
        "version" => VERSION.to_owned(),
        "config-file" => ctx
            .config_file
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string()),
        "config-text" => ctx.live().config_text.clone(),
        "fingerprint" => ctx.fingerprint.clone(),
        "address" => match ctx.live().address {
            Some(a) => a.to_string(),
            None => return Failed("Address unknown".into()),
        },
        "uptime" => crate::dir::time::unix(SystemTime::now())
            .saturating_sub(ctx.started)
            .to_string(),
        "process/pid" => std::process::id().to_string(),
        // SAFETY: getuid cannot fail.
        "process/uid" => unsafe { libc::getuid() }.to_string(),
        "process/user" => {
            // SAFETY: geteuid cannot fail.
            let uid = unsafe { libc::geteuid() };
            crate::os::user_name_of(uid).unwrap_or_default()
        }
        "process/descriptor-limit" => {
            crate::os::nofile_limit().map_or_else(|| "-1".to_owned(), |n| n.to_string())
        }
        "traffic/read" => (ctx.traffic)().0.to_string(),
        "traffic/written" => (ctx.traffic)().1.to_string(),
        "bw-event-cache" => ctx.bw.cache_text(),
        // oxit's version is not one the directory authorities recommend
        // or not; C's answer when it cannot tell.
        "status/version/current" => "unknown".to_owned(),
        k if k.starts_with("accounting/") => {
            let shared = ctx.accounting.lock().ok();
            match super::accounting::getinfo(shared.as_ref().and_then(|g| g.as_ref()), k) {
                Some(v) => v,
                None => return Unknown,
            }
        }
        "dormant" => "0".to_owned(),
        "network-liveness" => "up".to_owned(),
        "events/names" => EMITTED_EVENTS.to_owned(),
        "features/names" => "VERBOSE_NAMES EXTENDED_EVENTS".to_owned(),
        "signal/names" => SIGNAL_NAMES.to_owned(),
        "config/names" => config_names(ctx),
        "info/names" => INFO_NAMES
            .iter()
            .map(|(k, d)| format!("{k} -- {d}\n"))
            .collect(),
        "exit-policy/full" => ctx.live().exit_policy.clone(),
        // oxit builds no circuits of its own for clients.
        "circuit-status" => String::new(),
        "net/listeners/or" => quoted_list(&ctx.or_listeners),
        "net/listeners/control" => quoted_list(&ctx.control_listeners),
        k => match k.strip_prefix("net/listeners/") {
            Some(t) if LISTENER_TYPES.contains(&t) => String::new(),
            _ => return Unknown,
        },
    };
    Value(v)
}

/// C tor's `config/names`: `Name Type` per line (C's type names, which
/// nyx shows and edits by), for the options GETCONF answers with a value.
fn config_names(ctx: &ControlContext) -> String {
    let mut seen: Vec<&str> = Vec::new();
    let mut s = String::new();
    let live = ctx.live();
    for (k, v) in &live.conf {
        if seen.contains(&k.as_str()) {
            continue;
        }
        seen.push(k);
        let _ = writeln!(s, "{k} {}", option_type(k, v));
    }
    s
}

fn option_type(name: &str, value: &str) -> &'static str {
    match name {
        "ORPort"
        | "Address"
        | "ExitPolicy"
        | "Log"
        | "MetricsPort"
        | "MetricsPortPolicy"
        | "DirAuthority"
        | "AlternateDirAuthority"
        | "FallbackDir"
        | "MyFamily"
        | "FamilyId"
        | "DirPort"
        | "ControlPort"
        | "ControlSocket"
        | "HashedControlPassword" => "LineList",
        "BandwidthRate"
        | "BandwidthBurst"
        | "RelayBandwidthRate"
        | "RelayBandwidthBurst"
        | "MaxAdvertisedBandwidth"
        | "MaxMemInQueues" => "DataSize",
        "ShutdownWaitLength" | "HeartbeatPeriod" => "TimeInterval",
        "MaxOnionQueueDelay" => "TimeMsecInterval",
        "DataDirectory" | "ServerDNSResolvConfFile" | "FamilyKeyDirectory" | "CookieAuthFile" => {
            "Filename"
        }
        "DirAuthorityFallbackRate" => "Float",
        _ if value == "auto" => "Autobool",
        _ if value == "0" || value == "1" => "Boolean",
        _ if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => "Integer",
        _ => "String",
    }
}

/// What GETCONF says for an option oxit does not report a value for.
fn conf_override(key: &str) -> Option<&'static str> {
    Some(match key {
        // oxit never calls prctl(PR_SET_DUMPABLE, 0): /proc of the
        // process is readable by its user, which nyx needs for its
        // connection list.
        "DisableDebuggerAttachment" => "0",
        // oxit publishes DirPort 0 and listens on none.
        "DirPort" => "0",
        _ => return None,
    })
}

fn getconf(args: &str, ctx: &ControlContext) -> Output {
    let mut out = Output::default();
    let mut answers: Vec<(String, Option<String>)> = Vec::new();
    let mut unknown = Vec::new();
    for q in args.split_ascii_whitespace() {
        let live = ctx.live();
        let values: Vec<&(String, String)> = live
            .conf
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(q))
            .collect();
        if let Some((k, _)) = values.first() {
            answers.extend(values.iter().map(|(_, v)| (k.clone(), Some(v.clone()))));
            continue;
        }
        match crate::config::canonical_option_name(q) {
            Some(name) => answers.push((name.to_owned(), conf_override(name).map(str::to_owned))),
            None if q.eq_ignore_ascii_case("__OwningControllerProcess") => {
                answers.push(("__OwningControllerProcess".to_owned(), None));
            }
            None => unknown.push(q),
        }
    }
    if !unknown.is_empty() {
        for (i, q) in unknown.iter().enumerate() {
            let sep = if i + 1 == unknown.len() { ' ' } else { '-' };
            out.line(
                552,
                sep,
                &format!("Unrecognized configuration key {}", quoted(q)),
            );
        }
        return out;
    }
    if answers.is_empty() {
        out.end(250, "OK");
        return out;
    }
    let n = answers.len();
    for (i, (k, v)) in answers.into_iter().enumerate() {
        let sep = if i + 1 == n { ' ' } else { '-' };
        match v {
            Some(v) => out.line(250, sep, &format!("{k}={v}")),
            None => out.line(250, sep, &k),
        }
    }
    out
}

fn signal(args: &str) -> Output {
    let mut out = Output::default();
    let mut words = args.split_ascii_whitespace();
    let (Some(name), None) = (words.next(), words.next()) else {
        out.end(512, "Bad arguments to SIGNAL: Need exactly 1 argument");
        return out;
    };
    match signal_for(name) {
        Some(sig) => {
            out.end(250, "OK");
            out.signal = sig;
        }
        None => out.end(552, &format!("Unrecognized signal code {}", quoted(name))),
    }
    out
}

fn usefeature(args: &str) -> Output {
    let mut out = Output::default();
    for a in args.split_ascii_whitespace() {
        if !a.eq_ignore_ascii_case("VERBOSE_NAMES") && !a.eq_ignore_ascii_case("EXTENDED_EVENTS") {
            out.end(552, &format!("Unrecognized feature \"{a}\""));
            return out;
        }
    }
    out.end(250, "OK");
    out
}

/// `650 BW read written`.
pub fn bw_event(read: u64, written: u64) -> Vec<u8> {
    format!("650 BW {read} {written}\r\n").into_bytes()
}

/// `650 NOTICE message` (one line: line breaks become spaces).
pub fn log_event(sev: Severity, msg: &str) -> Vec<u8> {
    let name = match sev {
        Severity::Debug => "DEBUG",
        Severity::Info => "INFO",
        Severity::Notice => "NOTICE",
        Severity::Warn => "WARN",
        Severity::Err => "ERR",
    };
    let msg: String = msg
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    format!("650 {name} {msg}\r\n").into_bytes()
}

// ---------------------------------------------------------------------------
// IO: cookie, threads.

/// Create the cookie file (C tor makes a new cookie at every start), 0600
/// or 0640 with `CookieAuthFileGroupReadable`, written to a temporary file
/// and renamed so that a controller never reads half a cookie.
pub fn write_cookie(
    path: &Path,
    group_readable: bool,
    rng: &mut (impl rand::CryptoRng + ?Sized),
) -> Result<Zeroizing<[u8; COOKIE_LEN]>, ControlError> {
    let err = |source| ControlError::Cookie {
        path: path.to_path_buf(),
        source,
    };
    let mut cookie = Zeroizing::new([0u8; COOKIE_LEN]);
    rng.fill_bytes(&mut cookie[..]);
    let mode = if group_readable { 0o640 } else { 0o600 };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&cookie[..]).map_err(err)?;
    // The mode given at creation is masked by the umask; set it exactly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(cookie)
}

/// What the ControlPort is given by the control thread.
pub struct Shared {
    /// Our RSA identity, and the addresses we publish: what GETINFO
    /// reports.
    pub fingerprint: String,
    pub addresses: Vec<IpAddr>,
    /// The exit policy the workers enforce (`GETINFO exit-policy/full`).
    pub exit_policy: crate::exit::policy::ExitPolicy,
    /// When the relay started (unix seconds).
    pub started: u64,
    /// The workers' published counters.
    pub traffic: Arc<[crate::runtime::Traffic]>,
    pub accounting: super::accounting::SharedAccounting,
    /// The MetricsPort's count of our listeners and connections.
    pub conns: Arc<crate::metrics::ControlConns>,
}

/// Serve the ControlPort from threads of its own: start the
/// once-a-second traffic sampler and accept on every listener. The
/// context is returned so that a reload can refresh it.
pub fn start(
    config: &Config,
    mut listeners: ControlListeners,
    shared: Shared,
) -> Option<Arc<ControlContext>> {
    let Shared {
        fingerprint,
        addresses,
        exit_policy,
        started,
        traffic,
        accounting,
        conns,
    } = shared;
    let c = &config.control;
    let (cookie, cookie_file) = listeners.cookie.take().unzip();
    let auth = AuthConfig {
        passwords: c
            .hashed_control_passwords
            .iter()
            .map(|h| h.decoded)
            .collect(),
        cookie,
        cookie_file,
    };
    if c.cookie_authentication && auth.cookie.is_none() {
        // write_cookie was not called: serving now would let anyone in.
        tracing::error!(
            "ControlPort not opened: CookieAuthentication is set but no cookie was written"
        );
        return None;
    }
    let names = listeners.names();
    if !c.cookie_authentication && auth.passwords.is_empty() {
        tracing::warn!(
            "ControlPort is open, but no authentication method has been configured. This means \
             that any program on your computer can read what your relay does and send it \
             signals. Set CookieAuthentication 1 or HashedControlPassword."
        );
    }
    let sum = move || {
        traffic.iter().fold((0u64, 0u64), |(r, w), t| {
            (
                r.wrapping_add(t.read.load(Ordering::Relaxed)),
                w.wrapping_add(t.written.load(Ordering::Relaxed)),
            )
        })
    };
    let mut ctx = ControlContext::new(
        config,
        &exit_policy,
        fingerprint,
        &addresses,
        auth,
        Box::new(sum),
    );
    ctx.config_file = listeners.config_file.clone();
    ctx.control_listeners = names.clone();
    ctx.started = started;
    ctx.accounting = accounting;
    let ctx = Arc::new(ctx);

    let sampler = ctx.clone();
    spawn("oxit-control-bw", move || sample_traffic(&sampler));
    let active = Arc::new(AtomicUsize::new(0));
    for l in listeners.tcp {
        let (ctx, active, conns) = (ctx.clone(), active.clone(), conns.clone());
        let family = l.local_addr().map(|a| crate::runtime::family_index(a.ip()));
        if let Ok(f) = family
            && let Some(n) = conns.listeners.get(f)
        {
            n.fetch_add(1, Ordering::Relaxed);
        }
        spawn("oxit-control", move || {
            for s in l.incoming() {
                match s {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        let ok = s.set_read_timeout(Some(POLL)).is_ok()
                            && s.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok();
                        let f = s
                            .peer_addr()
                            .map(|a| crate::runtime::family_index(a.ip()))
                            .ok();
                        if ok {
                            accept(s, &ctx, &active, f.map(|f| (f, conns.clone())));
                        }
                    }
                    Err(e) => accept_failed(&e),
                }
            }
        });
    }
    for (l, _) in listeners.unix {
        let (ctx, active) = (ctx.clone(), active.clone());
        spawn("oxit-control", move || {
            for s in l.incoming() {
                match s {
                    Ok(s) => {
                        let ok = s.set_read_timeout(Some(POLL)).is_ok()
                            && s.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok();
                        if ok {
                            accept(s, &ctx, &active, None);
                        }
                    }
                    Err(e) => accept_failed(&e),
                }
            }
        });
    }
    tracing::info!("Opened Control listener on {}", names.join(", "));
    Some(ctx)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        tracing::warn!("cannot start a ControlPort thread: {e}");
    }
}

fn accept_failed(e: &io::Error) {
    tracing::debug!("ControlPort accept failed: {e}");
    // EMFILE and friends: do not spin while the condition lasts.
    std::thread::sleep(POLL);
}

/// One of the [`MAX_CONNECTIONS`] slots, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP control connection as the MetricsPort counts it: accepted and
/// open from `new`, open no more once dropped.
struct OpenConn {
    family: usize,
    conns: Arc<crate::metrics::ControlConns>,
}

impl OpenConn {
    fn new(family: usize, conns: Arc<crate::metrics::ControlConns>) -> OpenConn {
        for counts in [&conns.accepted, &conns.open] {
            if let Some(n) = counts.get(family) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
        OpenConn { family, conns }
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        if let Some(n) = self.conns.open.get(self.family) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Hand a new connection to a thread of its own, unless too many are
/// open. A TCP connection is counted for the MetricsPort under its
/// address family (`counted`).
fn accept<S: Read + Write + Send + 'static>(
    s: S,
    ctx: &Arc<ControlContext>,
    active: &Arc<AtomicUsize>,
    counted: Option<(usize, Arc<crate::metrics::ControlConns>)>,
) {
    if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        active.fetch_sub(1, Ordering::AcqRel);
        tracing::info!("Refused a control connection: {MAX_CONNECTIONS} are open already");
        return;
    }
    let ctx = ctx.clone();
    // Both given back when the closure is dropped: after serving, or at
    // once if the thread cannot be started.
    let slot = Slot(active.clone());
    let open = counted.map(|(family, conns)| OpenConn::new(family, conns));
    let spawned = std::thread::Builder::new()
        .name("oxit-control-conn".into())
        .spawn(move || {
            serve(s, &ctx);
            drop((open, slot));
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a control connection thread: {e}");
    }
}

/// Once a second: the traffic of the last second, for BW events and the
/// cache.
fn sample_traffic(ctx: &ControlContext) {
    let mut last = (ctx.traffic)();
    let mut next = Instant::now() + Duration::from_secs(1);
    loop {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += Duration::from_secs(1);
        // A stalled machine (suspend): start counting again from now.
        if next < Instant::now() {
            next = Instant::now() + Duration::from_secs(1);
        }
        let now = (ctx.traffic)();
        ctx.bw
            .push(now.0.wrapping_sub(last.0), now.1.wrapping_sub(last.1));
        last = now;
    }
}

/// The log subscription a connection holds; dropped with it.
struct LogSubscription {
    id: u64,
    rx: crossbeam_channel::Receiver<(Severity, String)>,
}

impl Drop for LogSubscription {
    fn drop(&mut self) {
        super::logging::remove_controller_sink(self.id);
    }
}

/// One connection, until it closes. The stream has a read timeout of
/// [`POLL`], so that events go out while the controller is silent.
fn serve<S: Read + Write>(mut s: S, ctx: &ControlContext) {
    let mut session = Session::new();
    let mut lines = LineReader::default();
    let mut buf = [0u8; 4096];
    let mut rng = rand::rng();
    let mut log: Option<LogSubscription> = None;
    let mut log_mask = 0u8;
    let mut bw_seen = ctx.bw.seq();
    let mut bw_on = false;
    let opened = Instant::now();
    loop {
        if !session.is_authenticated() && opened.elapsed() > AUTH_TIMEOUT {
            tracing::info!("Closing a control connection that did not authenticate in time");
            return;
        }
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => lines.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
        loop {
            let line = match lines.next_line() {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(LineTooLong) => {
                    let _ = s.write_all(b"500 Line too long.\r\n");
                    return;
                }
            };
            let out = session.on_line(&line, ctx, &mut rng);
            if s.write_all(&out.reply).is_err() {
                return;
            }
            if let Some(sig) = out.signal {
                // SAFETY: kill has no memory preconditions; the signal is
                // one of those the signal thread waits for.
                unsafe { libc::kill(libc::getpid(), sig) };
            }
            if out.close {
                return;
            }
        }
        let ev = session.events();
        if ev.bw && !bw_on {
            bw_seen = ctx.bw.seq();
        }
        bw_on = ev.bw;
        if ev.log_mask != log_mask {
            // Replace the subscription (dropping the old one ends it).
            log = None;
            if ev.log_mask != 0 {
                let (tx, rx) = crossbeam_channel::bounded(LOG_QUEUE);
                let id = super::logging::add_controller_sink(ev.log_mask, tx);
                log = Some(LogSubscription { id, rx });
            }
            log_mask = ev.log_mask;
        }
        let mut pending = Vec::new();
        if bw_on {
            let (new, seq) = ctx.bw.since(bw_seen);
            if seq != bw_seen {
                for (r, w) in new {
                    pending.extend_from_slice(&bw_event(r, w));
                }
                bw_seen = seq;
            }
        }
        if let Some(l) = &log {
            for (sev, msg) in l.rx.try_iter().take(LOG_QUEUE) {
                pending.extend_from_slice(&log_event(sev, &msg));
            }
        }
        if !pending.is_empty() && s.write_all(&pending).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead as _;
    use std::io::BufReader;

    use super::*;
    use rand::SeedableRng;

    /// `tor --hash-password foo` (Debian tor 0.4.9.11).
    const FOO_HASH: &str = "16:E82B59A7C58E2C6F60843E8145598B15B1D8FFA5146F0A062F05EA2A76";
    const COOKIE: [u8; 32] = [7; 32];

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(1)
    }

    fn ctx(cookie: bool, password: bool) -> ControlContext {
        let (mut config, _) = Config::parse_str(
            "Nickname oxittest\nORPort 127.0.0.1:9001\nControlPort 9051\nExitPolicy reject *:80\n\
             BandwidthRate 2 MBytes\nCookieAuthentication 1\n",
            "t",
        )
        .unwrap();
        config.data_directory = PathBuf::from("/var/lib/oxit");
        let auth = AuthConfig {
            cookie: cookie.then(|| Zeroizing::new(COOKIE)),
            cookie_file: cookie.then(|| PathBuf::from("/var/lib/oxit/control_auth_cookie")),
            passwords: if password {
                vec![crate::config::decode_hashed_password(FOO_HASH).unwrap()]
            } else {
                Vec::new()
            },
        };
        let policy = config.build_exit_policy(&[]);
        let mut c = ControlContext::new(
            &config,
            &policy,
            "A".repeat(40),
            &["192.0.2.7".parse().unwrap()],
            auth,
            Box::new(|| (1234, 5678)),
        );
        c.config_file = Some(PathBuf::from("/etc/oxit/torrc"));
        c.control_listeners = vec!["127.0.0.1:9051".into()];
        c
    }

    fn send(s: &mut Session, c: &ControlContext, line: &str) -> (String, Output) {
        let out = s.on_line(line.as_bytes(), c, &mut rng());
        (String::from_utf8(out.reply.clone()).unwrap(), out)
    }

    fn authed(c: &ControlContext) -> Session {
        let mut s = Session::new();
        let (r, _) = send(&mut s, c, &format!("AUTHENTICATE {}", hex::encode(COOKIE)));
        assert_eq!(r, "250 OK\r\n");
        s
    }

    #[test]
    fn protocolinfo_reply() {
        let c = ctx(true, true);
        let mut s = Session::new();
        let (r, out) = send(&mut s, &c, "PROTOCOLINFO 1");
        assert_eq!(
            r,
            format!(
                "250-PROTOCOLINFO 1\r\n\
                 250-AUTH METHODS=COOKIE,SAFECOOKIE,HASHEDPASSWORD \
                 COOKIEFILE=\"/var/lib/oxit/control_auth_cookie\"\r\n\
                 250-VERSION Tor=\"{VERSION}\"\r\n250 OK\r\n"
            )
        );
        assert!(!out.close);
        // Only once before authenticating (C: is_valid_initial_command).
        let (r, out) = send(&mut s, &c, "PROTOCOLINFO");
        assert_eq!(r, "514 Authentication required.\r\n");
        assert!(out.close);

        let c = ctx(false, false);
        let (r, _) = send(&mut Session::new(), &c, "protocolinfo");
        assert!(r.contains("250-AUTH METHODS=NULL\r\n"), "{r}");
        let (r, out) = send(&mut Session::new(), &c, "PROTOCOLINFO x");
        assert_eq!(r, "513 No such version \"x\"\r\n");
        assert!(out.close);
    }

    #[test]
    fn safecookie_vector() {
        // Computed independently with Python:
        //   hmac.new(b"Tor safe cookie authentication server-to-controller hash",
        //            bytes([7]*32) + bytes(range(32)) + bytes([0xff]*32), sha256)
        let client: Vec<u8> = (0..32).collect();
        let server = [0xffu8; 32];
        let (s, c) = safecookie_hashes(&COOKIE, &client, &server);
        assert_eq!(
            hex::encode(s),
            "d3fa70275816125f80eff55179cffdac7c767f2d9750ed8e9e5f3dc1e2ff24e5"
        );
        assert_eq!(
            hex::encode(c),
            "f20ea21aae2a81234b41e54d2d63f728a6383c5f5504c3794dfc7af006dd1d39"
        );
    }

    #[test]
    fn safecookie_exchange() {
        let c = ctx(true, false);
        let mut s = Session::new();
        let client_nonce = [3u8; 32];
        let (r, _) = send(
            &mut s,
            &c,
            &format!("AUTHCHALLENGE SAFECOOKIE {}", hex::encode(client_nonce)),
        );
        let rest = r
            .strip_prefix("250 AUTHCHALLENGE SERVERHASH=")
            .unwrap()
            .trim_end();
        let (server_hash, server_nonce) = rest.split_once(" SERVERNONCE=").unwrap();
        let server_nonce = hex::decode(server_nonce).unwrap();
        let (want_server, client_hash) = safecookie_hashes(&COOKIE, &client_nonce, &server_nonce);
        assert_eq!(server_hash, hex::encode_upper(want_server));
        // A second challenge, or PROTOCOLINFO, is not allowed now.
        let mut s2 = Session::new();
        send(&mut s2, &c, "AUTHCHALLENGE SAFECOOKIE 00");
        assert!(send(&mut s2, &c, "AUTHCHALLENGE SAFECOOKIE 00").1.close);
        // The plain cookie is not accepted once SAFECOOKIE was chosen.
        let mut s3 = Session::new();
        send(&mut s3, &c, "AUTHCHALLENGE SAFECOOKIE 00");
        let (r, out) = send(
            &mut s3,
            &c,
            &format!("AUTHENTICATE {}", hex::encode(COOKIE)),
        );
        assert_eq!(
            r,
            "515 Authentication failed: Safe cookie response did not match expected value.\r\n"
        );
        assert!(out.close);

        let (r, _) = send(
            &mut s,
            &c,
            &format!("AUTHENTICATE {}", hex::encode(client_hash)),
        );
        assert_eq!(r, "250 OK\r\n");
        assert!(s.is_authenticated());
        // Quoted nonce, and refusals.
        let (r, _) = send(&mut Session::new(), &c, "AUTHCHALLENGE SAFECOOKIE \"abc\"");
        assert!(r.starts_with("250 AUTHCHALLENGE SERVERHASH="), "{r}");
        let (r, out) = send(&mut Session::new(), &c, "AUTHCHALLENGE HASHEDPASSWORD 00");
        assert_eq!(
            r,
            "513 AUTHCHALLENGE only supports SAFECOOKIE authentication\r\n"
        );
        assert!(out.close);
        let (r, _) = send(&mut Session::new(), &c, "AUTHCHALLENGE SAFECOOKIE zz");
        assert_eq!(r, "513 Invalid base16 client nonce\r\n");
        let (r, _) = send(
            &mut Session::new(),
            &ctx(false, true),
            "AUTHCHALLENGE SAFECOOKIE 00",
        );
        assert_eq!(r, "515 Cookie authentication is disabled\r\n");
    }

    #[test]
    fn s2k_matches_tor_hash_password() {
        let h = crate::config::decode_hashed_password(FOO_HASH).unwrap();
        assert!(password_matches(b"foo", &h));
        assert!(!password_matches(b"fo", &h));
        assert!(!password_matches(b"foo ", &h));

        let c = ctx(false, true);
        let (r, _) = send(&mut Session::new(), &c, "AUTHENTICATE \"foo\"");
        assert_eq!(r, "250 OK\r\n");
        let (r, _) = send(
            &mut Session::new(),
            &c,
            &format!("AUTHENTICATE {}", hex::encode("foo")),
        );
        assert_eq!(r, "250 OK\r\n");
        let (r, out) = send(&mut Session::new(), &c, "AUTHENTICATE \"bar\"");
        assert_eq!(
            r,
            "515 Authentication failed: Password did not match HashedControlPassword value \
             from configuration\r\n"
        );
        assert!(out.close);
        let (r, out) = send(&mut Session::new(), &c, "AUTHENTICATE foo");
        assert!(r.starts_with("551 Invalid hexadecimal encoding."), "{r}");
        assert!(out.close);
        // Cookie or password.
        let c = ctx(true, true);
        let (r, _) = send(&mut Session::new(), &c, "AUTHENTICATE \"foo\"");
        assert_eq!(r, "250 OK\r\n");
        let (r, _) = send(
            &mut Session::new(),
            &c,
            &format!("AUTHENTICATE {}", hex::encode(COOKIE)),
        );
        assert_eq!(r, "250 OK\r\n");
        let (r, _) = send(&mut Session::new(), &c, "AUTHENTICATE \"nope\"");
        assert_eq!(
            r,
            "515 Authentication failed: Password did not match HashedControlPassword *or* \
             authentication cookie.\r\n"
        );
    }

    #[test]
    fn cookie_and_null_auth() {
        let c = ctx(true, false);
        let (r, out) = send(&mut Session::new(), &c, "AUTHENTICATE 0102");
        assert_eq!(
            r,
            "515 Authentication failed: Wrong length on authentication cookie.\r\n"
        );
        assert!(out.close);
        let (r, _) = send(
            &mut Session::new(),
            &c,
            &format!("AUTHENTICATE {}", "00".repeat(32)),
        );
        assert_eq!(
            r,
            "515 Authentication failed: Authentication cookie did not match expected value.\r\n"
        );
        let (r, _) = send(&mut Session::new(), &c, "AUTHENTICATE");
        assert!(r.starts_with("515 "), "{r}");
        // Neither method configured: anything goes, as in C tor.
        let c = ctx(false, false);
        let (r, _) = send(&mut Session::new(), &c, "AUTHENTICATE");
        assert_eq!(r, "250 OK\r\n");
        let (r, out) = send(&mut Session::new(), &c, "AUTHENTICATE a b");
        assert_eq!(r, "512 Too many arguments to AUTHENTICATE.\r\n");
        assert!(out.close);
    }

    #[test]
    fn unauthenticated_commands_are_rejected() {
        let c = ctx(true, false);
        for cmd in [
            "GETINFO version",
            "SIGNAL HALT",
            "SETEVENTS BW",
            "GETCONF Nickname",
            "FOO",
            "",
        ] {
            let (r, out) = send(&mut Session::new(), &c, cmd);
            assert_eq!(r, "514 Authentication required.\r\n", "{cmd}");
            assert!(out.close && out.signal.is_none(), "{cmd}");
        }
        let (r, out) = send(&mut Session::new(), &c, "QUIT");
        assert_eq!(r, "250 closing connection\r\n");
        assert!(out.close);
    }

    #[test]
    fn getinfo_answers() {
        let c = ctx(true, false);
        let mut s = authed(&c);
        let (r, _) = send(
            &mut s,
            &c,
            "GETINFO version traffic/read traffic/written fingerprint net/listeners/or \
             net/listeners/control net/listeners/dir accounting/enabled config-file address",
        );
        assert_eq!(
            r,
            format!(
                "250-version={VERSION}\r\n250-traffic/read=1234\r\n250-traffic/written=5678\r\n\
                 250-fingerprint={}\r\n250-net/listeners/or=\"127.0.0.1:9001\"\r\n\
                 250-net/listeners/control=\"127.0.0.1:9051\"\r\n250-net/listeners/dir=\r\n\
                 250-accounting/enabled=0\r\n250-config-file=/etc/oxit/torrc\r\n\
                 250-address=192.0.2.7\r\n250 OK\r\n",
                "A".repeat(40)
            )
        );
        let (r, _) = send(&mut s, &c, "GETINFO process/pid");
        assert_eq!(
            r,
            format!("250-process/pid={}\r\n250 OK\r\n", std::process::id())
        );
        // Multi-line values go as data.
        let (r, _) = send(&mut s, &c, "GETINFO exit-policy/full");
        assert!(r.starts_with("250+exit-policy/full=\r\n"), "{r}");
        assert!(r.contains("\r\nreject *4:80\r\n"), "{r}");
        assert!(r.ends_with("\r\n.\r\n250 OK\r\n"), "{r}");
        let (r, _) = send(&mut s, &c, "GETINFO config-text");
        assert!(r.contains("\r\nNickname oxittest\r\n"), "{r}");
        let (r, _) = send(&mut s, &c, "GETINFO config/names");
        assert!(r.contains("\r\nBandwidthRate DataSize\r\n"), "{r}");
        // One unknown key: only the errors, as C.
        let (r, _) = send(&mut s, &c, "GETINFO version ns/id/ABCD desc/id/ABCD");
        assert_eq!(
            r,
            "552-Unrecognized key \"ns/id/ABCD\"\r\n552 Unrecognized key \"desc/id/ABCD\"\r\n"
        );
        let (r, _) = send(&mut s, &c, "GETINFO");
        assert!(r.starts_with("512 "), "{r}");
    }

    /// After a reload (or a new address) GETINFO and GETCONF answer from
    /// the running configuration, not the one oxit started with.
    #[test]
    fn refresh_follows_a_reload() {
        let c = ctx(true, false);
        let mut s = authed(&c);
        let (config, _) = Config::parse_str(
            "Nickname oxittest\nORPort 127.0.0.1:9001\nControlPort 9051\nExitPolicy reject *:443\n\
             BandwidthRate 3 MBytes\nCookieAuthentication 1\n",
            "t",
        )
        .unwrap();
        c.refresh(
            &config,
            &config.build_exit_policy(&[]),
            &["198.51.100.9".parse().unwrap()],
        );
        let (r, _) = send(&mut s, &c, "GETINFO exit-policy/full address");
        assert!(r.contains("\r\nreject *4:443\r\n"), "{r}");
        assert!(!r.contains("*4:80\r\n"), "{r}");
        assert!(r.contains("250-address=198.51.100.9\r\n"), "{r}");
        let (r, _) = send(&mut s, &c, "GETCONF BandwidthRate");
        assert_eq!(r, "250 BandwidthRate=3145728\r\n");
    }

    #[test]
    fn getconf_answers() {
        let c = ctx(true, false);
        let mut s = authed(&c);
        let (r, _) = send(
            &mut s,
            &c,
            "GETCONF Nickname bandwidthrate CookieAuthentication HashedControlPassword \
             DisableDebuggerAttachment DirPort ControlPort ORPort Log",
        );
        assert_eq!(
            r,
            "250-Nickname=oxittest\r\n250-BandwidthRate=2097152\r\n\
             250-CookieAuthentication=1\r\n250-HashedControlPassword\r\n\
             250-DisableDebuggerAttachment=0\r\n250-DirPort=0\r\n\
             250-ControlPort=127.0.0.1:9051\r\n250-ORPort=127.0.0.1:9001\r\n\
             250 Log=notice stdout\r\n"
        );
        let (r, _) = send(&mut s, &c, "GETCONF ExitPolicy");
        assert_eq!(r, "250 ExitPolicy=reject *:80\r\n");
        let (r, _) = send(&mut s, &c, "GETCONF __OwningControllerProcess");
        assert_eq!(r, "250 __OwningControllerProcess\r\n");
        let (r, _) = send(&mut s, &c, "GETCONF Nickname NoSuchOption");
        assert_eq!(r, "552 Unrecognized configuration key \"NoSuchOption\"\r\n");
    }

    #[test]
    fn refused_commands() {
        let c = ctx(true, false);
        let mut s = authed(&c);
        for (cmd, code) in [
            ("SETCONF Nickname=x", "553 "),
            ("RESETCONF ExitPolicy", "553 "),
            ("SAVECONF", "551 "),
            (
                "TAKEOWNERSHIP",
                "510 Unrecognized command \"TAKEOWNERSHIP\"",
            ),
            ("MAPADDRESS 1.2.3.4=example.com", "510 "),
            ("EXTENDCIRCUIT 0", "510 "),
            (
                "SIGNAL CLEARDNSCACHE",
                "552 Unrecognized signal code \"CLEARDNSCACHE\"",
            ),
            ("SETEVENTS BW BOGUS", "552 Unrecognized event \"BOGUS\""),
        ] {
            let (r, out) = send(&mut s, &c, cmd);
            assert!(r.starts_with(code), "{cmd}: {r}");
            assert!(!out.close && out.signal.is_none(), "{cmd}");
        }
        // The failed SETEVENTS changed nothing.
        assert_eq!(s.events(), Events::default());
        // A +LOADCONF body is read to its "." and then refused.
        assert_eq!(send(&mut s, &c, "+LOADCONF").0, "");
        assert_eq!(send(&mut s, &c, "ExitPolicy accept *:*").0, "");
        let (r, _) = send(&mut s, &c, ".");
        assert!(r.starts_with("553 LOADCONF refused"), "{r}");
        // Still usable.
        assert_eq!(
            send(&mut s, &c, "GETINFO dormant").0,
            "250-dormant=0\r\n250 OK\r\n"
        );
    }

    #[test]
    fn signals_and_events() {
        let c = ctx(true, false);
        let mut s = authed(&c);
        for (name, sig) in [
            ("RELOAD", Some(libc::SIGHUP)),
            ("HUP", Some(libc::SIGHUP)),
            ("SHUTDOWN", Some(libc::SIGINT)),
            ("HALT", Some(libc::SIGTERM)),
            ("DUMP", Some(libc::SIGUSR1)),
            ("debug", Some(libc::SIGUSR2)),
            ("NEWNYM", None),
        ] {
            let (r, out) = send(&mut s, &c, &format!("SIGNAL {name}"));
            assert_eq!(r, "250 OK\r\n");
            assert_eq!(out.signal, sig, "{name}");
        }
        let (r, _) = send(&mut s, &c, "SETEVENTS BW notice WARN NEWCONSENSUS");
        assert_eq!(r, "250 OK\r\n");
        let e = s.events();
        assert!(e.bw);
        assert_eq!(
            e.log_mask,
            super::super::logging::severity_bit(Severity::Notice)
                | super::super::logging::severity_bit(Severity::Warn)
        );
        send(&mut s, &c, "SETEVENTS");
        assert_eq!(s.events(), Events::default());
        assert_eq!(bw_event(10, 20), b"650 BW 10 20\r\n");
        assert_eq!(log_event(Severity::Warn, "a\nb"), b"650 WARN a b\r\n");
        c.bw.push(1, 2);
        c.bw.push(3, 4);
        let (r, _) = send(&mut s, &c, "GETINFO bw-event-cache");
        assert_eq!(r, "250-bw-event-cache=1,2 3,4\r\n250 OK\r\n");
        assert_eq!(c.bw.since(1), (vec![(3, 4)], 2));
    }

    #[test]
    fn line_limits() {
        let mut l = LineReader::default();
        l.push(b"GETINFO version\r\nQUIT\npartial");
        assert_eq!(l.next_line(), Ok(Some(b"GETINFO version".to_vec())));
        assert_eq!(l.next_line(), Ok(Some(b"QUIT".to_vec())));
        assert_eq!(l.next_line(), Ok(None));
        l.push(&vec![b'a'; MAX_LINE]);
        assert_eq!(l.next_line(), Err(LineTooLong));
        let mut l = LineReader::default();
        let mut long = vec![b'a'; MAX_LINE + 1];
        long.push(b'\n');
        l.push(&long);
        assert_eq!(l.next_line(), Err(LineTooLong));
        // A body that never ends is cut off too.
        let c = ctx(true, false);
        let mut s = authed(&c);
        send(&mut s, &c, "+LOADCONF");
        let line = "x".repeat(MAX_LINE);
        let mut closed = false;
        for _ in 0..(MAX_BODY / MAX_LINE + 2) {
            let (r, out) = send(&mut s, &c, &line);
            if out.close {
                assert_eq!(r, "500 Line too long.\r\n");
                closed = true;
                break;
            }
        }
        assert!(closed);
    }

    #[test]
    fn garbage_never_panics() {
        let c = ctx(true, true);
        let mut r = rng();
        for seed in 0..2000u64 {
            let mut s = if seed % 2 == 0 {
                Session::new()
            } else {
                authed(&c)
            };
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let words = [
                "AUTHENTICATE",
                "AUTHCHALLENGE",
                "SAFECOOKIE",
                "\"",
                "\\",
                "\\x",
                "\\0",
                "GETINFO",
                "GETCONF",
                "SETEVENTS",
                "SIGNAL",
                "+",
                ".",
                "=",
                "\"a\\",
                "PROTOCOLINFO",
                "\u{ff}",
            ];
            let mut line = String::new();
            for _ in 0..(x % 6) {
                x = x.rotate_left(7) ^ 0x5555;
                line.push_str(words[(x % words.len() as u64) as usize]);
                if x % 3 == 0 {
                    line.push(' ');
                }
            }
            let _ = s.on_line(line.as_bytes(), &c, &mut r);
            let _ = s.on_line(&[0xff, 0xfe, b'"'], &c, &mut r);
        }
    }

    #[test]
    fn args_and_quoting() {
        let a = split_args(r#"  "a b\"c\\\n\x41\101" hex  "#).unwrap();
        assert_eq!(a[0].value, b"a b\"c\\\nAA");
        assert!(a[0].quoted);
        assert_eq!(a[1].value, b"hex");
        assert!(split_args("\"open").is_none());
        assert!(split_args("\"bad\\q\"").is_none());
        assert_eq!(quoted("a\"b\n\u{1}"), "\"a\\\"b\\n\\001\"");
    }

    #[test]
    fn cookie_file() {
        let dir = std::env::temp_dir().join(format!("oxit-cookie-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(COOKIE_FILE);
        let c = write_cookie(&p, false, &mut rng()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), c.to_vec());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_cookie(&p, true, &mut rng()).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn control_socket_listener() {
        let dir = std::env::temp_dir().join(format!("oxit-ctlsock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control");
        let (config, _) = Config::parse_str(
            &format!("ControlSocket {} GroupWritable\n", path.display()),
            "t",
        )
        .unwrap();
        // The second bind finds the first one's socket file and replaces it.
        for _ in 0..2 {
            let l = ControlListeners::bind(&config, None).unwrap().unwrap();
            assert_eq!(l.names(), vec![format!("unix:{}", path.display())]);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o660);
            std::os::unix::net::UnixStream::connect(&path).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn serve_a_connection() {
        use std::os::unix::net::UnixStream;
        let c = Arc::new(ctx(true, false));
        let (ours, theirs) = UnixStream::pair().unwrap();
        theirs.set_read_timeout(Some(POLL)).unwrap();
        let server = {
            let c = c.clone();
            std::thread::spawn(move || serve(theirs, &c))
        };
        ours.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut r = BufReader::new(ours.try_clone().unwrap());
        let mut w = ours;
        let mut line = || {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            l
        };
        w.write_all(format!("AUTHENTICATE {}\r\nSETEVENTS BW\r\n", hex::encode(COOKIE)).as_bytes())
            .unwrap();
        assert_eq!(line(), "250 OK\r\n");
        assert_eq!(line(), "250 OK\r\n");
        // Events start with the first sample after SETEVENTS took effect,
        // which is right after the reply was written.
        std::thread::sleep(Duration::from_millis(300));
        c.bw.push(11, 22);
        assert_eq!(line(), "650 BW 11 22\r\n");
        w.write_all(&vec![b'x'; MAX_LINE + 2]).unwrap();
        assert_eq!(line(), "500 Line too long.\r\n");
        server.join().unwrap();
        assert_eq!(line(), "", "closed");
    }
}
