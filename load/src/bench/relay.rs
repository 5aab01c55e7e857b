//! The relays under test: oxit on either backend, or C tor, each a fresh
//! process on 127.0.0.1 per run, pinned to the relay's CPU, with the same
//! exit policy and the benchmark's resolver. Data directories are kept for
//! the whole benchmark so that keys are made once per relay kind.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayKind {
    OxitUring,
    OxitEpoll,
    CTor,
    /// Another oxit build (`--baseline-oxit`), for before/after figures
    /// from one run.
    BaselineUring,
    BaselineEpoll,
}

impl RelayKind {
    pub fn label(self) -> &'static str {
        match self {
            RelayKind::OxitUring => "oxit io_uring",
            RelayKind::OxitEpoll => "oxit epoll",
            RelayKind::CTor => "C tor",
            RelayKind::BaselineUring => "baseline io_uring",
            RelayKind::BaselineEpoll => "baseline epoll",
        }
    }

    fn dir_name(self) -> &'static str {
        match self {
            RelayKind::OxitUring => "oxit-uring",
            RelayKind::OxitEpoll => "oxit-epoll",
            RelayKind::CTor => "ctor",
            RelayKind::BaselineUring => "baseline-uring",
            RelayKind::BaselineEpoll => "baseline-epoll",
        }
    }
}

/// Keeps every torrc off the live network: a dummy authority, nothing
/// published (C tor and oxit read the same line).
const DUMMY_AUTHORITY: &str = "DirAuthority dummy orport=1 no-v2 \
    v3ident=0000000000000000000000000000000000000000 127.0.0.1:1 \
    0000000000000000000000000000000000000000\n";

/// What both relays are told the same way: an exit for every port,
/// including 127.0.0.1 where the generator's destinations listen, that
/// accepts streams from a relay it has no consensus for.
fn common_torrc(or: SocketAddr, data: &Path, resolv: &Path, log: &Path) -> String {
    let mut t = String::new();
    t += &format!("ORPort {or}\n");
    t += &format!("DataDirectory {}\n", data.display());
    t += "Nickname oxitbench\n";
    t += DUMMY_AUTHORITY;
    t += "PublishServerDescriptor 0\n";
    t += "ExitRelay 1\n";
    t += "ExitPolicyRejectPrivate 0\n";
    t += "ExitPolicy accept *:*\n";
    t += "RefuseUnknownExits 0\n";
    // The middle scenario extends to the generator on 127.0.0.1.
    t += "ExtendAllowPrivateAddresses 1\n";
    t += &format!("ServerDNSResolvConfFile {}\n", resolv.display());
    t += &format!("Log notice file {}\n", log.display());
    t
}

/// The programs a run may start.
pub struct Bins {
    pub oxit: PathBuf,
    /// `--baseline-oxit`: another oxit build, measured beside this one.
    pub baseline: Option<PathBuf>,
    pub tor: PathBuf,
}

pub struct Relay {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
}

impl Relay {
    pub fn start(
        kind: RelayKind,
        work: &Path,
        bins: &Bins,
        resolv: &Path,
        workers: usize,
        cpu: usize,
    ) -> Result<Relay, String> {
        let dir = work.join(kind.dir_name());
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.join("relay.log");
        let _ = std::fs::remove_file(&log);
        let mut torrc = common_torrc(addr, &data, resolv, &log);
        let mut cmd = match kind {
            RelayKind::OxitUring
            | RelayKind::OxitEpoll
            | RelayKind::BaselineUring
            | RelayKind::BaselineEpoll => {
                let uring = matches!(kind, RelayKind::OxitUring | RelayKind::BaselineUring);
                let backend = if uring { "io_uring" } else { "epoll" };
                torrc += &format!("IOBackend {backend}\nNumCPUs {workers}\n");
                let bin = match kind {
                    RelayKind::BaselineUring | RelayKind::BaselineEpoll => {
                        bins.baseline.as_deref().ok_or("no --baseline-oxit given")?
                    }
                    _ => bins.oxit.as_path(),
                };
                let mut c = Command::new(bin);
                c.arg("run").arg("-f").arg(dir.join("torrc"));
                c
            }
            RelayKind::CTor => {
                torrc += "SocksPort 0\nAssumeReachable 1\n";
                // Parsing the GeoIP files costs seconds per start.
                torrc += "GeoIPFile /nonexistent\nGeoIPv6File /nonexistent\n";
                let mut c = Command::new(&bins.tor);
                c.arg("-f").arg(dir.join("torrc"));
                c
            }
        };
        std::fs::write(dir.join("torrc"), &torrc).map_err(|e| format!("writing the torrc: {e}"))?;
        let pin = workers == 1;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Gone with the benchmark, even if it is killed.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if pin {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", kind.label()))?;
        let mut relay = Relay {
            child,
            addr,
            dir,
            log,
        };
        relay.wait_ready(kind)?;
        Ok(relay)
    }

    fn wait_ready(&mut self, kind: RelayKind) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let data = self.data_dir();
        loop {
            let keys = [
                "fingerprint",
                "fingerprint-ed25519",
                "keys/secret_onion_key_ntor",
            ]
            .iter()
            .all(|f| data.join(f).exists());
            if keys && TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                // Let the relay finish its start-up work before it is measured.
                std::thread::sleep(Duration::from_millis(500));
                return Ok(());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({st}):\n{}",
                    kind.label(),
                    self.log_tail(20)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not ready in 90 s:\n{}",
                    kind.label(),
                    self.log_tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_tail(&self, n: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // SIGTERM: both exit at once (C tor's slow shutdown is SIGINT's).
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
