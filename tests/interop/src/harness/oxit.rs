//! An oxit relay guard: the real `oxit` binary, started the way an operator
//! would (`oxit run -f torrc`), on 127.0.0.1.
//!
//! oxit keeps C tor's `DataDirectory` formats, so the relay is described to
//! the client with the same [`HopSpec::from_c_tor_data_dir`] as a C relay.
//! The binary is the workspace's `target/<profile>/oxit`, which
//! `scripts/test.sh` builds before running the tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{
    HarnessError, SIGTERM, free_tcp_port, io_err, kill_child, signal_child, tail, tcp_listening,
    wait_until,
};
use crate::client::{Handshake, HopSpec};

/// A directory authority that does not exist (nothing listens on
/// 127.0.0.1:1): what every torrc of a test that needs no network names,
/// so that nothing ever reaches the live network's authorities.
pub const DUMMY_AUTHORITY: &str = "DirAuthority dummy orport=1 no-v2 \
     v3ident=0000000000000000000000000000000000000000 127.0.0.1:1 \
     0000000000000000000000000000000000000000\n";

/// Which I/O backend the relay runs (its `IOBackend` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoBackend {
    Uring,
    Epoll,
}

impl IoBackend {
    pub const BOTH: [IoBackend; 2] = [IoBackend::Uring, IoBackend::Epoll];

    fn option(self) -> &'static str {
        match self {
            IoBackend::Uring => "uring",
            IoBackend::Epoll => "epoll",
        }
    }
}

/// How the test wants the relay set up.
#[derive(Clone, Debug)]
pub struct OxitOptions {
    pub backend: IoBackend,
    /// The DNS server the exit resolves with (written to its resolv.conf).
    pub dns: Option<SocketAddr>,
    /// A port the exit policy rejects (tests END EXITPOLICY).
    pub rejected_port: Option<u16>,
    /// Log at debug level instead of info (tests that look for
    /// per-circuit decisions in the log).
    pub debug_log: bool,
    /// More torrc lines, appended last.
    pub extra_torrc: String,
}

impl OxitOptions {
    /// An exit on `backend` that resolves with 127.0.0.1, rejects no port,
    /// logs at info and adds nothing to its torrc.
    pub fn new(backend: IoBackend) -> OxitOptions {
        OxitOptions {
            backend,
            dns: None,
            rejected_port: None,
            debug_log: false,
            extra_torrc: String::new(),
        }
    }
}

/// A running oxit relay.
pub struct OxitProcess {
    child: Child,
    dir: tempfile::TempDir,
    or_addr: SocketAddr,
}

/// The `oxit` binary of this workspace (`OXIT_BIN` overrides it, e.g. to
/// benchmark a release build).
pub fn oxit_binary() -> Result<PathBuf, HarnessError> {
    workspace_binary("oxit", "OXIT_BIN")
}

/// The load generator (`load/`, `oxit-load`); `OXIT_LOAD_BIN` overrides it.
pub fn oxit_load_binary() -> Result<PathBuf, HarnessError> {
    workspace_binary("oxit-load", "OXIT_LOAD_BIN")
}

/// A binary of this workspace's target dir, debug build first; the
/// environment variable `env` overrides it.
pub(crate) fn workspace_binary(name: &str, env: &str) -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(HarnessError::NotReady {
        program: name.into(),
        detail: format!(
            "no {name} binary under {}: run scripts/test.sh (or `cargo build --workspace --all-targets`) first",
            target.display()
        ),
    })
}

impl OxitProcess {
    /// Start oxit and wait (≤ 60 s) until its ORPort accepts and its keys
    /// are on disk.
    pub fn start(opts: &OxitOptions) -> Result<Self, HarnessError> {
        let bin = oxit_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("oxit-interop-relay-")
            .tempdir()
            .map_err(io_err("oxit temp dir"))?;
        let data_dir = dir.path().join("data");
        let or_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let resolv = dir.path().join("resolv.conf");
        let dns = opts.dns.map_or_else(
            || "nameserver 127.0.0.1\n".to_string(),
            |d| format!("nameserver {d}\n"),
        );
        std::fs::write(&resolv, dns).map_err(io_err("write resolv.conf"))?;
        let log = dir.path().join("oxit.log");
        let mut torrc = String::new();
        torrc += &format!("ORPort {or_addr}\n");
        torrc += &format!("DataDirectory {}\n", data_dir.display());
        torrc += "Nickname oxitinterop\n";
        // Isolation: without DirAuthority lines oxit would use the live
        // network's authorities. A dummy one keeps it on 127.0.0.1; these
        // tests describe hops by their keys and need no consensus.
        torrc += DUMMY_AUTHORITY;
        torrc += "PublishServerDescriptor 0\n";
        // The test's HTTP and DNS servers live on 127.0.0.1: a private
        // address every exit refuses by default.
        torrc += "ExitPolicyRejectPrivate 0\n";
        if let Some(p) = opts.rejected_port {
            torrc += &format!("ExitPolicy reject *:{p}\n");
        }
        torrc += "ExitPolicy accept *:*\n";
        // No consensus: every relay is unknown (the C middle in front).
        torrc += "RefuseUnknownExits 0\n";
        // The next hop (a C exit) listens on 127.0.0.1.
        torrc += "ExtendAllowPrivateAddresses 1\n";
        torrc += &format!("ServerDNSResolvConfFile {}\n", resolv.display());
        torrc += &format!("IOBackend {}\n", opts.backend.option());
        torrc += "NumCPUs 2\n";
        let level = if opts.debug_log { "debug" } else { "info" };
        torrc += &format!("Log {level} file {}\n", log.display());
        torrc += &opts.extra_torrc;
        let torrc_path = dir.path().join("torrc");
        std::fs::write(&torrc_path, torrc).map_err(io_err("write oxit torrc"))?;
        let mut child = Command::new(&bin)
            .arg("run")
            .arg("-f")
            .arg(&torrc_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err(format!("spawn {}", bin.display())))?;
        let keys_ready = || {
            [
                "fingerprint",
                "fingerprint-ed25519",
                "keys/secret_onion_key_ntor",
            ]
            .iter()
            .all(|f| data_dir.join(f).exists())
        };
        let ready = wait_until(
            "oxit",
            &mut child,
            Duration::from_secs(60),
            || keys_ready() && tcp_listening(or_addr),
            || tail(&log, 40),
        );
        let mut me = OxitProcess {
            child,
            dir,
            or_addr,
        };
        if let Err(e) = ready {
            kill_child(&mut me.child);
            return Err(e);
        }
        Ok(me)
    }

    /// The DataDirectory (keys and fingerprints).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The relay as a circuit hop.
    pub fn hop(&self, handshake: Handshake) -> Result<HopSpec, HarnessError> {
        Ok(HopSpec::from_c_tor_data_dir(
            &self.dir.path().join("data"),
            self.or_addr,
            handshake,
        )?)
    }

    pub fn or_addr(&self) -> SocketAddr {
        self.or_addr
    }

    /// The relay's process id (benchmarks read its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the relay logs.
    pub fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("oxit.log")
    }

    /// The relay's log so far (for failure messages).
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("oxit.log"), 60)
    }

    /// How many lines of the whole log contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("oxit.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The torrc the relay was started with (a test rewrites it before a
    /// SIGHUP).
    pub fn torrc_path(&self) -> PathBuf {
        self.dir.path().join("torrc")
    }

    /// Send the relay a signal (`libc::SIGHUP`, ...).
    pub fn signal(&self, sig: i32) {
        signal_child(&self.child, sig);
    }

    /// Wait (≤ `timeout`) for the process to exit by itself; its exit
    /// status, or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, HarnessError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().map_err(io_err("wait for oxit"))? {
                return Ok(Some(st));
            }
            if std::time::Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait (≤ `timeout`) until the log has a line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.log_count(needle) == 0 {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Stop with SIGTERM and return whether it exited 0 within the bound.
    pub fn stop(mut self) -> Result<bool, HarnessError> {
        signal_child(&self.child, SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().map_err(io_err("wait for oxit"))? {
                return Ok(st.success());
            }
            if std::time::Instant::now() > deadline {
                kill_child(&mut self.child);
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OxitProcess {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}
