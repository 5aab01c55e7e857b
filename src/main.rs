//! The `oxit` command line: `run`, `keygen`, `fingerprint`,
//! `check-config` (docs/cli.md).
//!
//! This file owns argument parsing, the order of startup (signals before
//! threads, config before logging before keys before the runtime), what is
//! printed to the operator, and exit codes. It does not parse torrc
//! (`oxit::config`), create keys (`oxit::crypto::keys`) or relay anything
//! (`oxit::runtime`).
//!
//! Exit codes: 0 success, 1 configuration or command line, 2 keys,
//! 3 runtime.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use oxit::config::{Config, ConfigError, ConfigWarning};
use oxit::control::Shutdown;
use oxit::control::logging::{self, LoggingError};
use oxit::control::signals;
use oxit::crypto::keyfile::{self, KeyFileError};
use oxit::crypto::keys::{KeysError, NtorKey, RelayKeys};
use oxit::crypto::rsa::{RsaIdentity, RsaPrivate, TOR_RSA_BITS};
use oxit::runtime::RunError;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXAMPLES: &str = "\
EXAMPLES:
  Start an exit relay with no configuration (keys in the default data
  directory, ORPort 127.0.0.1:9001, C tor's default exit policy):
    oxit run

  Start with a torrc:
    oxit run -f /etc/oxit/torrc

  Check a torrc and print the effective configuration:
    oxit check-config -f /etc/oxit/torrc

  Create keys before the first start, then show the identities:
    oxit keygen --data-dir /var/lib/oxit --nickname MyExit
    oxit fingerprint --data-dir /var/lib/oxit

EXIT STATUS:
  0 success, 1 configuration or usage error, 2 key error, 3 runtime error.
  See docs/cli.md.";

/// A multi-core Tor exit relay.
#[derive(Debug, Parser)]
#[command(name = "oxit", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay (with no -f: the built-in defaults, see docs/options.md).
    Run {
        /// torrc-syntax configuration file.
        #[arg(short = 'f', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Create a complete key set in DIR/keys (or show the existing one
    /// without changing it).
    Keygen {
        /// The data directory (default: the one `oxit run` uses without -f).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Nickname written to DIR/fingerprint.
        #[arg(long, value_name = "N", default_value = "Unnamed")]
        nickname: String,
    },
    /// Print the relay's identities from DIR/keys; never creates anything.
    Fingerprint {
        /// The data directory (default: the one `oxit run` uses without -f).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Parse a configuration file, print warnings and the effective
    /// configuration; exit 1 on the first error.
    CheckConfig {
        /// torrc-syntax configuration file.
        #[arg(short = 'f', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
}

/// Everything that stops a command, grouped by exit code.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Logging(#[from] LoggingError),
    #[error("bad nickname {0:?}: expected 1 to 19 characters, each A-Z, a-z or 0-9")]
    Nickname(String),
    #[error("{0}")]
    Keys(#[from] KeysError),
    #[error("{0}")]
    KeyFile(#[from] KeyFileError),
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
    #[error("{0}")]
    Runtime(#[from] RunError),
    #[error("{0}")]
    Process(#[from] oxit::os::ProcessError),
    #[error("{0}")]
    Control(#[from] oxit::control::controlport::ControlError),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Logging(_) | CliError::Nickname(_) => 1,
            CliError::Keys(_) | CliError::KeyFile(_) => 2,
            CliError::Signals(_)
            | CliError::Runtime(_)
            | CliError::Process(_)
            | CliError::Control(_) => 3,
        }
    }
}

fn main() -> ExitCode {
    oxit::bug::count_panics();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(c) = c_style(&args) {
        let res = match c {
            Ok(c) => c_style_main(c),
            Err(e) => {
                eprintln!("oxit: {e}");
                return ExitCode::from(1);
            }
        };
        return match res {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("oxit: error: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let res = match cli.command {
        Command::Run { config } => run(ConfigSource {
            torrc: config,
            ..ConfigSource::default()
        }),
        Command::Keygen { data_dir, nickname } => keygen(&data_dir_or_default(data_dir), &nickname),
        Command::Fingerprint { data_dir } => fingerprint(&data_dir_or_default(data_dir)),
        Command::CheckConfig { config } => check_config(&config),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxit: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `--version` text: crate version plus what the build is, without git.
fn long_version() -> String {
    format!(
        "{} ({}-{}, {} build, allocator mimalloc, I/O backends io_uring and epoll)",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )
}

fn parse_args() -> Result<Cli, ExitCode> {
    // clap (without its `string` feature) takes 'static strings; the
    // version is built once per process, so leaking it is harmless.
    let version: &'static str = Box::leak(long_version().into_boxed_str());
    let cmd = Cli::command().version(version).long_version(version);
    let parsed = cmd
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    match parsed {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => {
            // --help, --version: clap prints to stdout.
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprint!("oxit: {}", e.render());
            Err(ExitCode::from(1))
        }
    }
}

fn data_dir_or_default(d: Option<PathBuf>) -> PathBuf {
    d.unwrap_or_else(oxit::config::default_data_directory)
}

/// Where the configuration comes from.
#[derive(Clone, Debug, Default)]
struct ConfigSource {
    defaults: Option<PathBuf>,
    torrc: Option<PathBuf>,
    /// `--Option value` pairs, in order.
    overrides: Vec<(String, String)>,
}

impl ConfigSource {
    fn is_empty(&self) -> bool {
        self.defaults.is_none() && self.torrc.is_none() && self.overrides.is_empty()
    }

    /// The configuration; with nothing given, the built-in one.
    fn load(&self) -> Result<(Config, Vec<ConfigWarning>), CliError> {
        if self.is_empty() {
            return Ok((Config::builtin(), Vec::new()));
        }
        Ok(Config::parse_layers(
            self.defaults.as_deref(),
            self.torrc.as_deref(),
            &self.overrides,
        )?)
    }
}

/// C tor's command line (main.c, config.c:config_parse_commandline), for
/// unit files and scripts written for `tor`.
#[derive(Debug)]
struct CStyle {
    source: ConfigSource,
    action: CAction,
}

#[derive(Debug, PartialEq, Eq)]
enum CAction {
    Run,
    VerifyConfig,
    ListFingerprint,
}

/// A command line in C tor's style (`-f FILE`, `--defaults-torrc FILE`,
/// `--verify-config`, `--list-fingerprint`, `--Option value`), or `None`
/// for oxit's own subcommands, `--help` and `--version`.
fn c_style(args: &[String]) -> Option<Result<CStyle, String>> {
    let first = args.first()?;
    if !first.starts_with('-') || ["-h", "--help", "-V", "--version"].contains(&first.as_str()) {
        return None;
    }
    let mut c = CStyle {
        source: ConfigSource::default(),
        action: CAction::Run,
    };
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{what} needs a value"))
        };
        match a.as_str() {
            "-f" | "--torrc-file" => match value(a) {
                Ok(v) => c.source.torrc = Some(PathBuf::from(v)),
                Err(e) => return Some(Err(e)),
            },
            "--defaults-torrc" => match value(a) {
                Ok(v) => c.source.defaults = Some(PathBuf::from(v)),
                Err(e) => return Some(Err(e)),
            },
            "--verify-config" => c.action = CAction::VerifyConfig,
            "--list-fingerprint" => {
                c.action = CAction::ListFingerprint;
                // An optional key type (rsa is C's default).
                if it.peek().is_some_and(|k| k.as_str() == "rsa") {
                    it.next();
                }
            }
            "--hush" | "--quiet" => {}
            opt if opt.starts_with("--") && opt.len() > 2 => {
                let key = opt.trim_start_matches("--").to_owned();
                // A value unless the next argument is another option.
                let v = match it.peek() {
                    Some(n) if !n.starts_with("--") => it.next().cloned().unwrap_or_default(),
                    _ => String::new(),
                };
                c.source.overrides.push((key, v));
            }
            other => {
                return Some(Err(format!(
                    "unexpected argument {other:?} (C tor style: -f FILE, --defaults-torrc FILE, \
                     --verify-config, --list-fingerprint, --Option value; or see oxit --help)"
                )));
            }
        }
    }
    Some(Ok(c))
}

fn c_style_main(c: CStyle) -> Result<(), CliError> {
    match c.action {
        CAction::Run => run(c.source),
        CAction::VerifyConfig => verify_config(&c.source),
        CAction::ListFingerprint => list_fingerprint(&c.source),
    }
}

/// `--verify-config`: the configuration, its log destinations and any
/// keys already there must all be usable (C prints the same line).
fn verify_config(source: &ConfigSource) -> Result<(), CliError> {
    let (config, warnings) = source.load()?;
    for w in &warnings {
        eprintln!("oxit: warning: {w}");
    }
    logging::CtorLogLayer::new(&config.logs)?;
    if config
        .data_directory
        .join("keys")
        .join(SECRET_ID_KEY)
        .exists()
    {
        read_identities(&config.data_directory)?;
    }
    println!("Configuration was valid");
    Ok(())
}

/// The relay's keys, created where missing (C: init_keys).
fn relay_keys(config: &Config) -> Result<RelayKeys, CliError> {
    Ok(RelayKeys::load_or_create(
        &config.data_directory,
        &config.nickname,
        SystemTime::now(),
        &mut rand::rng(),
    )?)
}

/// `--list-fingerprint`: C's `Nickname XXXX XXXX ...` line, creating the
/// keys first if there are none yet, as C tor does.
fn list_fingerprint(source: &ConfigSource) -> Result<(), CliError> {
    let (config, _) = source.load()?;
    let keys = relay_keys(&config)?;
    let hex = keys.rsa_identity().hex_upper();
    let spaced: Vec<&str> = hex
        .as_bytes()
        .chunks(4)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    println!("{} {}", config.nickname, spaced.join(" "));
    Ok(())
}

/// `oxit run`: config, logging, keys, signals, runtime.
fn run(source: ConfigSource) -> Result<(), CliError> {
    let shutdown = Shutdown::new();
    let (config, warnings) = source.load()?;
    let config_path = source.torrc.as_deref();
    logging::set_safe_logging(config.safe_logging.scrubs());
    logging::init(&config.logs)?;
    // Before any thread exists (the runtime's workers, key generation
    // spawns none), so that every thread inherits the blocked mask.
    let _signals = signals::install(shutdown.clone()).map_err(CliError::Signals)?;
    tracing::info!(
        "oxit {} starting ({})",
        env!("CARGO_PKG_VERSION"),
        config_path.map_or_else(
            || "no configuration file: built-in defaults".to_owned(),
            |p| format!("configuration {}", p.display())
        )
    );
    log_warnings(&warnings);
    let again = source.clone();
    let reload: oxit::control::relay::Reloader = Box::new(move || {
        let (config, warnings) = again.load().map_err(|e| e.to_string())?;
        Ok((config, warnings.iter().map(|w| w.to_string()).collect()))
    });
    let res = start(&config, config_path, reload, shutdown);
    if let Err(e) = &res {
        tracing::error!("{e}");
    }
    res
}

fn start(
    config: &Config,
    config_path: Option<&std::path::Path>,
    reload: oxit::control::relay::Reloader,
    shutdown: std::sync::Arc<Shutdown>,
) -> Result<(), CliError> {
    let fds = oxit::os::raise_fd_limit()?;
    if fds.soft != fds.soft_before {
        tracing::info!(
            "Raised the file descriptor limit from {} to {} (the hard limit)",
            fds.soft_before,
            fds.soft
        );
    }
    if fds.is_low() {
        tracing::warn!(
            "The file descriptor limit is {}: an exit relay can need tens of thousands of \
             sockets. Raise the hard limit to at least {} (LimitNOFILE= in the systemd unit, \
             or ulimit -Hn).",
            fds.soft,
            oxit::os::FD_LIMIT_WANTED
        );
    }
    // Ports first, as root if need be; then give root up before a key file
    // is read or a peer is heard (C: options_act_reversible).
    let listeners = oxit::runtime::Listeners::bind(config)?;
    let metrics = match config.metrics_port {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|source| oxit::runtime::RunError::MetricsListen { addr, source })?,
        ),
        None => None,
    };
    let mut control = oxit::control::controlport::ControlListeners::bind(config, config_path)?;
    if let Some(user) = &config.user {
        switch_user(user)?;
    }
    oxit::os::check_private_dir(&config.data_directory)?;
    // As the relay's user, so that its tools can read the cookie.
    if let Some(c) = &mut control {
        c.write_cookie(config)?;
    }
    let keys = relay_keys(config)?;
    let ports: Vec<String> = config.or_ports.iter().map(|p| p.to_string()).collect();
    tracing::info!(
        "Relay {} identity: RSA fingerprint {}, Ed25519 identity {}, ntor onion key {}, ORPort {}",
        config.nickname,
        keys.rsa_identity().hex_upper(),
        STANDARD_NO_PAD.encode(keys.ed_identity()),
        STANDARD.encode(keys.ntor_key().public()),
        ports.join(", ")
    );
    // The same policy the workers apply (ExitPolicyRejectLocalInterfaces
    // needs this host's interface addresses).
    let policy = config.build_exit_policy(&oxit::runtime::relay::local_interface_addrs());
    if policy.is_reject_all() && config.exit_relay == oxit::config::AutoBool::Auto {
        tracing::info!(
            "Exit policy: reject *:* (not an exit): ExitRelay is auto and no ExitPolicy, \
             ReducedExitPolicy or IPv6Exit is set, as in C tor; set ExitPolicy (or ExitRelay 1 \
             for the default policy) to exit"
        );
    } else if policy.is_reject_all() {
        tracing::info!("Exit policy: reject *:* (not an exit)");
    } else {
        tracing::info!("Exit policy: {policy}");
    }
    oxit::control::relay::run(config, reload, keys, listeners, metrics, control, shutdown)?;
    tracing::info!("All channels closed; exiting.");
    Ok(())
}

/// `User`: switch to it, or carry on if we already run as it (C fails
/// then, since setgroups needs root; an operator who starts oxit as the
/// user it names has what they asked for).
fn switch_user(user: &str) -> Result<(), CliError> {
    let ids = oxit::os::lookup_user(user)?;
    // SAFETY: getuid/geteuid cannot fail.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    if uid == ids.uid && euid == ids.uid {
        tracing::info!("Already running as User {user}; no switch needed");
        return Ok(());
    }
    let ids = oxit::os::switch_user(user)?;
    tracing::info!(
        "Switched to User {user} (uid {}, gid {}) after binding the ports",
        ids.uid,
        ids.gid
    );
    Ok(())
}

fn log_warnings(warnings: &[ConfigWarning]) {
    for w in warnings {
        tracing::warn!("{w}");
    }
}

/// `oxit keygen`: complete the key set, or report an existing complete one
/// without writing anything.
fn keygen(data_dir: &Path, nickname: &str) -> Result<(), CliError> {
    if !valid_nickname(nickname) {
        return Err(CliError::Nickname(nickname.to_owned()));
    }
    match read_identities(data_dir) {
        Ok(ids) => {
            println!(
                "Keys already exist in {}; nothing was changed.",
                data_dir.join("keys").display()
            );
            print_identities(&ids);
            return Ok(());
        }
        // Some file is absent: create what is missing (load_or_create never
        // replaces an identity that exists).
        Err(CliError::KeyFile(KeyFileError::Missing(_))) => {}
        Err(e) => return Err(e),
    }
    let keys = RelayKeys::load_or_create(data_dir, nickname, SystemTime::now(), &mut rand::rng())?;
    println!("Keys created in {}.", data_dir.join("keys").display());
    print_identities(&Identities {
        nickname: nickname.to_owned(),
        rsa: keys.rsa_identity(),
        ed25519: *keys.ed_identity(),
        ntor: *keys.ntor_key().public(),
    });
    Ok(())
}

/// `oxit fingerprint`: read-only.
fn fingerprint(data_dir: &Path) -> Result<(), CliError> {
    let ids = read_identities(data_dir)?;
    print_identities(&ids);
    Ok(())
}

/// `oxit check-config`.
fn check_config(path: &Path) -> Result<(), CliError> {
    let (config, warnings) = Config::parse_file(path)?;
    for w in &warnings {
        eprintln!("oxit: warning: {w}");
    }
    print!("{}", config.describe());
    Ok(())
}

fn valid_nickname(n: &str) -> bool {
    (1..=19).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The public identities of a key set.
#[derive(Debug, PartialEq, Eq)]
struct Identities {
    nickname: String,
    rsa: RsaIdentity,
    ed25519: [u8; 32],
    ntor: [u8; 32],
}

fn print_identities(ids: &Identities) {
    println!("{} {}", ids.nickname, ids.rsa.hex_upper());
    println!("ed25519 {}", STANDARD_NO_PAD.encode(ids.ed25519));
    println!("ntor-onion-key {}", STANDARD.encode(ids.ntor));
}

// File names and headers of C tor's keys directory (router.c:init_keys,
// routerkeys.c:load_ed_keys; requirements.md §2.3).
const SECRET_ID_KEY: &str = "secret_id_key";
const MASTER_PUBLIC: &str = "ed25519_master_id_public_key";
const ONION_NTOR: &str = "secret_onion_key_ntor";

/// Read the identities without creating or changing any file: the RSA
/// identity, the Ed25519 master public key and the current ntor key must
/// all exist and parse. The nickname comes from `DATA/fingerprint` when
/// that file exists (C tor writes it), else `Unnamed`.
fn read_identities(data_dir: &Path) -> Result<Identities, CliError> {
    let keys = data_dir.join("keys");

    let rsa_path = keys.join(SECRET_ID_KEY);
    let pem = keyfile::read_file(&rsa_path)?;
    let text = std::str::from_utf8(&pem)
        .map_err(|_| KeyFileError::invalid(&rsa_path, "RSA key PEM is not text"))?;
    let rsa_err = |source| KeysError::RsaFile {
        path: rsa_path.clone(),
        source,
    };
    let rsa = RsaPrivate::from_pkcs1_pem(text).map_err(rsa_err)?;
    rsa.public()
        .check_tor_params(TOR_RSA_BITS)
        .map_err(rsa_err)?;

    let ed = keyfile::read_tagged(&keys.join(MASTER_PUBLIC), "ed25519v1-public", "type0", 32)?;
    let mut ed25519 = [0u8; 32];
    ed25519.copy_from_slice(&ed);

    let ntor_path = keys.join(ONION_NTOR);
    let body = zeroize::Zeroizing::new(keyfile::read_tagged(&ntor_path, "c25519v1", "onion", 64)?);
    let (secret, public) = body.split_at(32);
    let mut s = zeroize::Zeroizing::new([0u8; 32]);
    s.copy_from_slice(secret);
    let ntor = NtorKey::from_secret(&s);
    if public != ntor.public() {
        return Err(
            KeyFileError::invalid(&ntor_path, "public key does not match the secret key").into(),
        );
    }

    let nickname = std::fs::read_to_string(data_dir.join("fingerprint"))
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .filter(|n| valid_nickname(n))
        .unwrap_or_else(|| "Unnamed".to_owned());
    Ok(Identities {
        nickname,
        rsa: rsa.public().identity(),
        ed25519,
        ntor: *ntor.public(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exit_codes() {
        let cfg = Config::parse_str("Bogus 1", "t").unwrap_err();
        assert_eq!(CliError::from(cfg).exit_code(), 1);
        let kf = KeyFileError::Missing(PathBuf::from("x"));
        assert_eq!(CliError::from(kf).exit_code(), 2);
        let rt = RunError::WorkerFailed {
            index: 0,
            message: "x".into(),
        };
        assert_eq!(CliError::from(rt).exit_code(), 3);
    }

    #[test]
    fn nicknames() {
        assert!(valid_nickname("Unnamed"));
        assert!(valid_nickname("a1234567890123456789".get(..19).unwrap()));
        assert!(!valid_nickname(""));
        assert!(!valid_nickname("a12345678901234567890"));
        assert!(!valid_nickname("bad-name"));
    }

    #[test]
    fn read_identities_matches_created_keys_and_creates_nothing() {
        let d = std::env::temp_dir().join(format!("oxit-main-ids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let err = read_identities(&d).unwrap_err();
        assert!(matches!(err, CliError::KeyFile(KeyFileError::Missing(_))));
        assert!(!d.exists(), "reading must not create the data directory");

        let keys =
            RelayKeys::load_or_create(&d, "Nick", SystemTime::now(), &mut rand::rng()).unwrap();
        let ids = read_identities(&d).unwrap();
        assert_eq!(
            ids,
            Identities {
                nickname: "Nick".into(),
                rsa: keys.rsa_identity(),
                ed25519: *keys.ed_identity(),
                ntor: *keys.ntor_key().public(),
            }
        );
        // A truncated ntor key is an error naming the file.
        let ntor = d.join("keys").join(ONION_NTOR);
        let data = std::fs::read(&ntor).unwrap();
        std::fs::write(&ntor, &data[..40]).unwrap();
        let err = read_identities(&d).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains(ONION_NTOR), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
