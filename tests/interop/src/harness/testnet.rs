//! A private Tor network on 127.0.0.1: three C tor directory authorities,
//! three C tor relays (guards and directory caches, never exits), an oxit
//! relay that is the network's exit, and a C tor client with a SOCKS port.
//!
//! Nothing here is told about anything outside the network: every torrc
//! names only these authorities (`TestingTorNetwork`, which C tor and oxit
//! both refuse without `DirAuthority` lines), so neither C tor nor oxit
//! ever contacts the live Tor network. Every process is started by this
//! module, watches our PID (`__OwningControllerProcess` for C tor; oxit is
//! killed by PID on Drop) and is killed by PID when [`Testnet`] is dropped.
//!
//! The authorities vote every 10 seconds (`V3AuthVotingInterval`), the C
//! relays publish at once (`AssumeReachable`, as chutney does), and oxit
//! publishes after its own reachability self-test unless told otherwise. The
//! authorities compute every flag themselves, except Guard, which they give
//! the C relays by name (`TestingDirAuthVoteGuard`) so that the client's
//! entry guards are never oxit, the exit it is meant to pick.
//!
//! Used by the end-to-end tests (tests/testnet.rs) and by
//! `scripts/testnet.sh`, the "try it locally" network of the README.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    HarnessError, IoBackend, free_tcp_port, io_err, kill_child, oxit_binary, require_program, tail,
    wait_until,
};

const TOR: &str = "/usr/bin/tor";
const TOR_GENCERT: &str = "/usr/bin/tor-gencert";
/// The authorities vote this often (seconds); 2 s vote and 2 s
/// distribution delays leave 6 s of slack on a loaded machine.
const VOTING_INTERVAL: u32 = 10;

/// How the network is set up.
#[derive(Clone, Debug)]
pub struct TestnetOptions {
    /// oxit's I/O backend.
    pub backend: IoBackend,
    /// The DNS server oxit (and the C exit) resolve with.
    pub dns: Option<SocketAddr>,
    /// A port oxit's exit policy rejects.
    pub rejected_port: Option<u16>,
    /// Also start a C tor exit that allows only this port (oxit rejects
    /// it), so that a client going there must use the C exit.
    pub c_exit_port: Option<u16>,
    /// `AssumeReachable 1` for oxit (skip its self-test).
    pub oxit_assume_reachable: bool,
    /// Use this data directory for oxit (e.g. one a C tor relay made).
    pub oxit_data_dir: Option<PathBuf>,
    /// Extra torrc lines for oxit.
    pub oxit_extra: String,
    /// Log oxit at debug level.
    pub oxit_debug: bool,
    /// Give oxit a happy-family key made by C tor (`tor --keygen-family`)
    /// and a `MyFamily` line naming the first C relay.
    pub oxit_family: bool,
    /// The owning process C tor watches (default: this one).
    pub owner_pid: Option<u32>,
}

impl TestnetOptions {
    pub fn new(backend: IoBackend) -> TestnetOptions {
        TestnetOptions {
            backend,
            dns: None,
            rejected_port: None,
            c_exit_port: None,
            oxit_assume_reachable: false,
            oxit_data_dir: None,
            oxit_extra: String::new(),
            oxit_debug: false,
            oxit_family: false,
            owner_pid: None,
        }
    }
}

/// One C tor process of the network.
pub struct TorNode {
    pub name: String,
    pub dir: PathBuf,
    pub or_addr: SocketAddr,
    pub dir_addr: Option<SocketAddr>,
    /// RSA identity, upper-case hex.
    pub fingerprint: String,
    child: Option<Child>,
}

impl TorNode {
    /// Its notice-level log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("notice.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// The oxit relay of the network.
pub struct OxitNode {
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub or_addr: SocketAddr,
    pub fingerprint: String,
    child: Option<Child>,
}

impl OxitNode {
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("oxit.log")
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log_path(), n)
    }

    /// Lines of its log containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// The running network. Drop kills every process by PID.
pub struct Testnet {
    root: tempfile::TempDir,
    pub authorities: Vec<TorNode>,
    pub relays: Vec<TorNode>,
    /// The C exit, when asked for.
    pub c_exit: Option<TorNode>,
    pub client: TorNode,
    pub oxit: OxitNode,
    /// The `DirAuthority` lines every node uses.
    pub dir_authority_lines: String,
    pub socks: SocketAddr,
    /// When [`Testnet::start`] began.
    pub started: Instant,
    /// oxit's happy-family id, with [`TestnetOptions::oxit_family`].
    pub oxit_family_id: Option<String>,
}

fn node_dir(root: &Path, name: &str) -> Result<PathBuf, HarnessError> {
    let d = root.join(name);
    std::fs::create_dir_all(&d).map_err(io_err(format!("create {}", d.display())))?;
    set_mode_700(&d)?;
    Ok(d)
}

fn set_mode_700(path: &Path) -> Result<(), HarnessError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("chmod 700 {}", path.display())))
}

fn run(cmd: &mut Command, what: &str) -> Result<String, HarnessError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(what.to_owned()))?;
    if !out.status.success() {
        return Err(HarnessError::NotReady {
            program: what.to_owned(),
            detail: format!(
                "{}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `fingerprint` file of a data directory: "nick FP".
fn read_fingerprint(data_dir: &Path) -> Result<String, HarnessError> {
    let f = std::fs::read_to_string(data_dir.join("fingerprint"))
        .map_err(io_err(format!("read {}/fingerprint", data_dir.display())))?;
    f.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| HarnessError::NotReady {
            program: "tor".into(),
            detail: format!("no fingerprint in {}", data_dir.display()),
        })
}

/// Lines every C tor node gets.
fn common_torrc(dir: &Path, nick: &str, auth_lines: &str, owner: u32) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "# written by oxit's test network harness");
    let _ = writeln!(c, "TestingTorNetwork 1");
    let _ = writeln!(c, "DataDirectory {}", dir.display());
    let _ = writeln!(c, "Nickname {nick}");
    c.push_str(auth_lines);
    let _ = writeln!(c, "Log notice file {}", dir.join("notice.log").display());
    let _ = writeln!(c, "Log info file {}", dir.join("info.log").display());
    let _ = writeln!(c, "SafeLogging 0");
    let _ = writeln!(c, "LogTimeGranularity 1");
    let _ = writeln!(c, "ProtocolWarnings 1");
    // Parsing GeoIP costs seconds per start and is of no use here.
    let _ = writeln!(c, "GeoIPFile /nonexistent\nGeoIPv6File /nonexistent");
    let _ = writeln!(c, "PathsNeededToBuildCircuits 0.67");
    let _ = writeln!(c, "__OwningControllerProcess {owner}");
    c
}

/// Start `tor -f torrc`, with an empty defaults file so that nothing from
/// /etc/tor applies.
fn spawn_tor(torrc: &Path) -> Result<Child, HarnessError> {
    std::fs::write(torrc.with_file_name("torrc.defaults"), "")
        .map_err(io_err("write torrc.defaults"))?;
    Command::new(TOR)
        .arg("-f")
        .arg(torrc)
        .arg("--defaults-torrc")
        .arg(torrc.with_file_name("torrc.defaults"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io_err(format!("spawn {TOR} -f {}", torrc.display())))
}

/// resolv.conf naming a DNS server (port included; both evdns and oxit
/// read `nameserver IP:PORT`).
fn resolv_conf(dir: &Path, dns: Option<SocketAddr>) -> Result<PathBuf, HarnessError> {
    let p = dir.join("resolv.conf");
    let line = dns.map_or_else(
        || "nameserver 127.0.0.1\n".to_owned(),
        |d| format!("nameserver {d}\n"),
    );
    std::fs::write(&p, line).map_err(io_err("write resolv.conf"))?;
    Ok(p)
}

impl Testnet {
    /// Start the network and oxit; returns once every process runs (not
    /// once the consensus lists oxit: see [`Testnet::wait_for_oxit`]).
    pub fn start(opts: &TestnetOptions) -> Result<Testnet, HarnessError> {
        require_program(TOR, "tor")?;
        require_program(TOR_GENCERT, "tor")?;
        let started = Instant::now();
        let owner = opts.owner_pid.unwrap_or_else(std::process::id);
        let root = tempfile::Builder::new()
            .prefix("oxit-testnet-")
            .tempdir()
            .map_err(io_err("testnet temp dir"))?;

        // Authorities: v3 keys from tor-gencert, relay keys from tor itself.
        let mut authorities = Vec::new();
        for i in 0..3 {
            let name = format!("auth{i}");
            let dir = node_dir(root.path(), &name)?;
            let keys = dir.join("keys");
            std::fs::create_dir_all(&keys).map_err(io_err("create keys dir"))?;
            let or_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
            let dir_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
            let mut gencert = Command::new(TOR_GENCERT);
            gencert
                .arg("--create-identity-key")
                .args(["-m", "12"])
                .args(["-a", &dir_addr.to_string()])
                .arg("-i")
                .arg(keys.join("authority_identity_key"))
                .arg("-s")
                .arg(keys.join("authority_signing_key"))
                .arg("-c")
                .arg(keys.join("authority_certificate"))
                .arg("--passphrase-fd")
                .arg("0");
            // An empty passphrase on stdin; the identity key stays on disk.
            let out = gencert
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .and_then(|mut ch| {
                    if let Some(mut si) = ch.stdin.take() {
                        use std::io::Write as _;
                        let _ = si.write_all(b"\n");
                    }
                    ch.wait_with_output()
                })
                .map_err(io_err("tor-gencert"))?;
            if !out.status.success() {
                return Err(HarnessError::NotReady {
                    program: "tor-gencert".into(),
                    detail: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            // An empty torrc: everything is on the command line.
            let empty = dir.join("torrc.keys");
            std::fs::write(&empty, "").map_err(io_err("write empty torrc"))?;
            run(
                Command::new(TOR)
                    .arg("--list-fingerprint")
                    .arg("--defaults-torrc")
                    .arg(&empty)
                    .arg("-f")
                    .arg(&empty)
                    .arg("--DataDirectory")
                    .arg(&dir)
                    .arg("--ORPort")
                    .arg(or_addr.to_string())
                    .arg("--Nickname")
                    .arg(&name)
                    .arg("--DirAuthority")
                    .arg(
                        "dummy orport=1 no-v2 v3ident=0000000000000000000000000000000000000000 \
                         127.0.0.1:1 0000000000000000000000000000000000000000",
                    ),
                "tor --list-fingerprint",
            )?;
            authorities.push(TorNode {
                name,
                fingerprint: read_fingerprint(&dir)?,
                dir,
                or_addr,
                dir_addr: Some(dir_addr),
                child: None,
            });
        }
        let mut auth_lines = String::new();
        for a in &authorities {
            let cert = std::fs::read_to_string(a.dir.join("keys/authority_certificate"))
                .map_err(io_err("read authority_certificate"))?;
            let v3 = cert
                .lines()
                .find_map(|l| l.strip_prefix("fingerprint "))
                .unwrap_or_default()
                .trim()
                .to_owned();
            let _ = writeln!(
                auth_lines,
                "DirAuthority {} orport={} no-v2 v3ident={v3} {} {}",
                a.name,
                a.or_addr.port(),
                a.dir_addr.map(|d| d.to_string()).unwrap_or_default(),
                a.fingerprint
            );
        }

        let mut net = Testnet {
            root,
            authorities: Vec::new(),
            relays: Vec::new(),
            c_exit: None,
            client: TorNode {
                name: String::new(),
                dir: PathBuf::new(),
                or_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                dir_addr: None,
                fingerprint: String::new(),
                child: None,
            },
            oxit: OxitNode {
                dir: PathBuf::new(),
                data_dir: PathBuf::new(),
                or_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                fingerprint: String::new(),
                child: None,
            },
            dir_authority_lines: auth_lines.clone(),
            socks: SocketAddr::from(([127, 0, 0, 1], 0)),
            started,
            oxit_family_id: None,
        };
        let relay_names = ["relay0", "relay1", "relay2"];
        for mut a in authorities {
            let mut c = common_torrc(&a.dir, &a.name, &auth_lines, owner);
            let dir_addr = a.dir_addr.unwrap_or(a.or_addr);
            let _ = writeln!(c, "AuthoritativeDirectory 1\nV3AuthoritativeDirectory 1");
            let _ = writeln!(c, "ContactInfo {}@test.test", a.name);
            let _ = writeln!(
                c,
                "ORPort {}\nDirPort {dir_addr}\nAddress 127.0.0.1",
                a.or_addr
            );
            let _ = writeln!(c, "SocksPort 0\nExitPolicy reject *:*");
            for k in ["TestingV3AuthInitialVotingInterval", "V3AuthVotingInterval"] {
                let _ = writeln!(c, "{k} {VOTING_INTERVAL}");
            }
            for k in [
                "TestingV3AuthInitialVoteDelay",
                "TestingV3AuthInitialDistDelay",
                "V3AuthVoteDelay",
                "V3AuthDistDelay",
            ] {
                let _ = writeln!(c, "{k} 2");
            }
            // Consensuses stay valid for two intervals (chutney's setting).
            let _ = writeln!(c, "V3AuthNIntervalsValid 2");
            // Guards: only the C relays, so the client never enters at oxit.
            let _ = writeln!(c, "TestingDirAuthVoteGuard {}", relay_names.join(","));
            let _ = writeln!(c, "TestingDirAuthVoteGuardIsStrict 1");
            // Stable for every running relay, however young: a C client
            // builds conflux legs only to Stable exits, and oxit, started
            // last, would be below the median uptime.
            let _ = writeln!(c, "AuthDirVoteStableGuaranteeMinUptime 0");
            let torrc = a.dir.join("torrc");
            std::fs::write(&torrc, c).map_err(io_err("write authority torrc"))?;
            a.child = Some(spawn_tor(&torrc)?);
            net.authorities.push(a);
        }

        // C relays: guards, middles and directory caches, never exits.
        for name in relay_names {
            let dir = node_dir(net.root.path(), name)?;
            let or_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
            let mut c = common_torrc(&dir, name, &auth_lines, owner);
            let _ = writeln!(c, "ORPort {or_addr}\nAddress 127.0.0.1\nSocksPort 0");
            let _ = writeln!(c, "AssumeReachable 1\nExitRelay 0\nExitPolicy reject *:*");
            let torrc = dir.join("torrc");
            std::fs::write(&torrc, c).map_err(io_err("write relay torrc"))?;
            net.relays.push(TorNode {
                name: name.into(),
                dir,
                or_addr,
                dir_addr: None,
                fingerprint: String::new(),
                child: Some(spawn_tor(&torrc)?),
            });
        }
        if let Some(port) = opts.c_exit_port {
            let name = "cexit";
            let dir = node_dir(net.root.path(), name)?;
            let or_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
            let resolv = resolv_conf(&dir, opts.dns)?;
            let mut c = common_torrc(&dir, name, &auth_lines, owner);
            let _ = writeln!(c, "ORPort {or_addr}\nAddress 127.0.0.1\nSocksPort 0");
            let _ = writeln!(c, "AssumeReachable 1\nExitRelay 1");
            let _ = writeln!(c, "ExitPolicy accept *:{port}\nExitPolicy reject *:*");
            let _ = writeln!(c, "ServerDNSResolvConfFile {}", resolv.display());
            let torrc = dir.join("torrc");
            std::fs::write(&torrc, c).map_err(io_err("write C exit torrc"))?;
            net.c_exit = Some(TorNode {
                name: name.into(),
                dir,
                or_addr,
                dir_addr: None,
                fingerprint: String::new(),
                child: Some(spawn_tor(&torrc)?),
            });
        }

        // Fingerprints are on disk once each relay has started.
        for r in net.relays.iter_mut().chain(net.c_exit.iter_mut()) {
            let dir = r.dir.clone();
            let Some(child) = r.child.as_mut() else {
                continue;
            };
            wait_until(
                &format!("tor ({})", r.name),
                child,
                Duration::from_secs(30),
                || read_fingerprint(&dir).is_ok(),
                || tail(&dir.join("notice.log"), 20),
            )?;
            r.fingerprint = read_fingerprint(&dir)?;
        }
        net.start_oxit(opts, &auth_lines)?;

        // The client.
        let dir = node_dir(net.root.path(), "client")?;
        net.socks = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let mut c = common_torrc(&dir, "client", &auth_lines, owner);
        let _ = writeln!(c, "SocksPort {}", net.socks);
        let torrc = dir.join("torrc");
        std::fs::write(&torrc, c).map_err(io_err("write client torrc"))?;
        net.client = TorNode {
            name: "client".into(),
            dir,
            or_addr: net.socks,
            dir_addr: None,
            fingerprint: String::new(),
            child: Some(spawn_tor(&torrc)?),
        };

        Ok(net)
    }

    fn start_oxit(&mut self, opts: &TestnetOptions, auth_lines: &str) -> Result<(), HarnessError> {
        let bin = oxit_binary()?;
        let dir = node_dir(self.root.path(), "oxit")?;
        let data_dir = opts
            .oxit_data_dir
            .clone()
            .unwrap_or_else(|| dir.join("data"));
        let or_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let resolv = resolv_conf(&dir, opts.dns)?;
        let log = dir.join("oxit.log");
        let mut c = String::new();
        let _ = writeln!(c, "# written by oxit's test network harness");
        let _ = writeln!(c, "TestingTorNetwork 1");
        c.push_str(auth_lines);
        let _ = writeln!(c, "ORPort {or_addr}");
        let _ = writeln!(c, "DataDirectory {}", data_dir.display());
        let _ = writeln!(c, "Nickname oxit");
        let _ = writeln!(c, "ContactInfo oxit@test.test");
        if let Some(p) = opts.rejected_port {
            let _ = writeln!(c, "ExitPolicy reject *:{p}");
        }
        if let Some(p) = opts.c_exit_port {
            let _ = writeln!(c, "ExitPolicy reject *:{p}");
        }
        let _ = writeln!(c, "ExitPolicy accept *:*");
        let _ = writeln!(c, "ServerDNSResolvConfFile {}", resolv.display());
        let _ = writeln!(
            c,
            "IOBackend {}",
            match opts.backend {
                IoBackend::Uring => "uring",
                IoBackend::Epoll => "epoll",
            }
        );
        let _ = writeln!(c, "NumCPUs 2");
        // The C relays are oxit's directory mirrors until it publishes (as
        // fallback directories are on the live network), reached with
        // BEGIN_DIR; never the authorities before that.
        for r in &self.relays {
            let _ = writeln!(
                c,
                "FallbackDir {} orport={} id={}",
                r.or_addr.ip(),
                r.or_addr.port(),
                r.fingerprint
            );
        }
        let _ = writeln!(c, "DirAuthorityFallbackRate 0");
        if opts.oxit_family {
            let fam_dir = dir.join("family");
            std::fs::create_dir_all(&fam_dir).map_err(io_err("family key dir"))?;
            let empty = dir.join("torrc.empty");
            std::fs::write(&empty, "").map_err(io_err("write empty torrc"))?;
            let out = run(
                Command::new(TOR)
                    .arg("--keygen-family")
                    .arg(fam_dir.join("oxitfamily"))
                    .arg("-f")
                    .arg(&empty)
                    .arg("--defaults-torrc")
                    .arg(&empty),
                "tor --keygen-family",
            )?;
            let id = out
                .lines()
                .find_map(|l| l.strip_prefix("FamilyId "))
                .unwrap_or_default()
                .trim()
                .to_owned();
            self.oxit_family_id = Some(id.clone());
            let _ = writeln!(c, "FamilyKeyDirectory {}", fam_dir.display());
            let _ = writeln!(c, "FamilyId {id}");
            if let Some(r) = self.relays.first() {
                let _ = writeln!(c, "MyFamily ${}", r.fingerprint);
            }
        }
        if opts.oxit_assume_reachable {
            let _ = writeln!(c, "AssumeReachable 1");
        }
        let level = if opts.oxit_debug { "debug" } else { "info" };
        let _ = writeln!(c, "Log {level} file {}", log.display());
        c.push_str(&opts.oxit_extra);
        let torrc = dir.join("torrc");
        std::fs::write(&torrc, c).map_err(io_err("write oxit torrc"))?;
        let mut child = Command::new(&bin)
            .arg("run")
            .arg("-f")
            .arg(&torrc)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).map_err(io_err("oxit stderr"))?)
            .spawn()
            .map_err(io_err(format!("spawn {}", bin.display())))?;
        let fp_file = data_dir.join("fingerprint");
        let ready = wait_until(
            "oxit",
            &mut child,
            Duration::from_secs(60),
            || fp_file.exists() && super::tcp_listening(or_addr),
            || tail(&log, 40),
        );
        if let Err(e) = ready {
            kill_child(&mut child);
            return Err(e);
        }
        self.oxit = OxitNode {
            fingerprint: read_fingerprint(&data_dir)?,
            dir,
            data_dir,
            or_addr,
            child: Some(child),
        };
        Ok(())
    }

    /// Every microdescriptor the first authority has made, as text.
    pub fn microdescriptors(&self) -> String {
        let Some(a) = self.authorities.first() else {
            return String::new();
        };
        ["cached-microdescs", "cached-microdescs.new"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(a.dir.join(f)).ok())
            .collect()
    }

    /// The newest microdesc consensus the first authority has (its cached
    /// copy), as text.
    pub fn consensus_text(&self) -> Option<String> {
        let a = self.authorities.first()?;
        std::fs::read_to_string(a.dir.join("cached-microdesc-consensus")).ok()
    }

    /// The consensus entry of the relay with fingerprint `fp` (its `r`
    /// through `w` lines), if the authorities' consensus lists it.
    pub fn consensus_entry(&self, fp: &str) -> Option<String> {
        use base64::Engine as _;
        let text = self.consensus_text()?;
        let id = hex::decode(fp).ok()?;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(id);
        let start = text
            .lines()
            .position(|l| l.starts_with("r ") && l.split(' ').nth(2) == Some(b64.as_str()))?;
        let lines: Vec<&str> = text.lines().skip(start).collect();
        let mut out = String::new();
        for (i, l) in lines.iter().enumerate() {
            if i > 0 && (l.starts_with("r ") || l.starts_with("directory-footer")) {
                break;
            }
            out.push_str(l);
            out.push('\n');
        }
        Some(out)
    }

    /// Wait until the consensus lists oxit with every flag in `flags`;
    /// returns its entry.
    pub fn wait_for_oxit(&self, flags: &[&str], timeout: Duration) -> Result<String, HarnessError> {
        self.wait_for_relay(&self.oxit.fingerprint.clone(), flags, timeout)
    }

    /// Wait until the consensus lists the relay `fp` with `flags`.
    pub fn wait_for_relay(
        &self,
        fp: &str,
        flags: &[&str],
        timeout: Duration,
    ) -> Result<String, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.consensus_entry(fp) {
                let s = e.lines().find(|l| l.starts_with("s ")).unwrap_or_default();
                let have: Vec<&str> = s.split(' ').skip(1).collect();
                if flags.iter().all(|f| have.contains(f)) {
                    return Ok(e);
                }
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    program: "test network".into(),
                    detail: format!(
                        "the consensus does not list {fp} with {flags:?} after {timeout:?}; \
                         entry now: {:?}\n--- oxit log ---\n{}\n--- auth0 ---\n{}",
                        self.consensus_entry(fp),
                        self.oxit.log_tail(60),
                        tail(&self.authorities[0].dir.join("notice.log"), 30)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Wait until the client has bootstrapped.
    pub fn wait_for_client(&self, timeout: Duration) -> Result<(), HarnessError> {
        wait_log(&self.client, "Bootstrapped 100%", timeout)
    }

    /// The directory holding everything (logs, data directories).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Stop the network but keep its directory (logs, data directories)
    /// for a person to read; returns where it is.
    pub fn keep(self) -> PathBuf {
        let Testnet { root, .. } = self;
        root.keep()
    }

    /// Start another C tor client (e.g. with `MiddleNodes` / `ExitNodes`
    /// lines in `extra`); it is stopped with the network.
    pub fn add_client(
        &mut self,
        name: &str,
        extra: &str,
    ) -> Result<(TorNode, SocketAddr), HarnessError> {
        let dir = node_dir(self.root.path(), name)?;
        let socks = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let mut c = common_torrc(&dir, name, &self.dir_authority_lines, std::process::id());
        let _ = writeln!(c, "SocksPort {socks}");
        c.push_str(extra);
        let torrc = dir.join("torrc");
        std::fs::write(&torrc, c).map_err(io_err("write client torrc"))?;
        let node = TorNode {
            name: name.into(),
            dir,
            or_addr: socks,
            dir_addr: None,
            fingerprint: String::new(),
            child: Some(spawn_tor(&torrc)?),
        };
        Ok((node, socks))
    }

    /// Stop oxit with SIGTERM; true if it exited 0 within 10 s.
    pub fn stop_oxit(&mut self) -> bool {
        stop_child(&mut self.oxit.child)
    }
}

impl TorNode {
    /// Stop this tor with SIGTERM (it saves its state file as it goes);
    /// true if it exited 0 within 10 s.
    pub fn stop(&mut self) -> bool {
        stop_child(&mut self.child)
    }
}

fn stop_child(child: &mut Option<Child>) -> bool {
    let Some(mut child) = child.take() else {
        return false;
    };
    super::signal_child(&child, super::SIGTERM);
    // C tor writes its state and caches on the way out, which took over
    // 10 s on a loaded CI machine once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            if !st.success() {
                eprintln!("stopping with SIGTERM: the process ended with {st}");
            }
            return st.success();
        }
        if Instant::now() > deadline {
            eprintln!("stopping with SIGTERM: still running after 30 s; killed");
            kill_child(&mut child);
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until `node`'s notice log contains `needle`.
pub fn wait_log(node: &TorNode, needle: &str, timeout: Duration) -> Result<(), HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        if node.log().contains(needle) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(HarnessError::NotReady {
                program: format!("tor ({})", node.name),
                detail: format!(
                    "no {needle:?} in its log after {timeout:?}:\n{}",
                    tail(&node.dir.join("notice.log"), 30)
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for TorNode {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            kill_child(c);
        }
    }
}

impl Drop for OxitNode {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            kill_child(c);
        }
    }
}
