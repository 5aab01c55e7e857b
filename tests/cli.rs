//! End-to-end tests of the `oxit` binary: arguments, exit codes, messages,
//! key handling and a real start/stop on 127.0.0.1.
//!
//! Every child process is waited for with a deadline and reaped on every
//! path (the `Child` guard kills and waits on drop).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn oxit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oxit"))
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("oxit-cli-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child that is killed and reaped however the test ends.
struct Child(Option<std::process::Child>);

impl Child {
    fn spawn(mut cmd: Command) -> Child {
        let c = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Child(Some(c))
    }

    fn inner(&mut self) -> &mut std::process::Child {
        self.0.as_mut().unwrap()
    }

    /// Wait at most `limit` for the exit status.
    fn wait_for(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.inner().try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "oxit did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Read a pipe to its end on a thread.
fn drain(r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(r).read_to_string(&mut s);
        s
    })
}

#[derive(Debug)]
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run to completion within 60 s (key generation in a debug build is the
/// slow part).
fn run_bounded(cmd: Command) -> Out {
    let mut c = Child::spawn(cmd);
    let out = drain(c.inner().stdout.take().unwrap());
    let err = drain(c.inner().stderr.take().unwrap());
    let status = c.wait_for(Duration::from_secs(60));
    Out {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn oxit_with(args: &[&str]) -> Out {
    let mut c = oxit();
    c.args(args);
    run_bounded(c)
}

fn assert_no_panic(o: &Out) {
    for s in [&o.stdout, &o.stderr] {
        assert!(!s.contains("panicked"), "panic text in output: {s}");
        assert!(!s.contains("RUST_BACKTRACE"), "panic text in output: {s}");
    }
}

fn files_in(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return v;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(files_in(&p));
        } else {
            let data = fs::read(&p).unwrap();
            v.push((p, data));
        }
    }
    v.sort();
    v
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn help_and_version() {
    let o = oxit_with(&["--help"]);
    assert!(o.status.success());
    for word in [
        "run",
        "keygen",
        "fingerprint",
        "check-config",
        "EXAMPLES",
        "oxit run -f",
    ] {
        assert!(
            o.stdout.contains(word),
            "--help lacks {word:?}: {}",
            o.stdout
        );
    }
    let o = oxit_with(&["run", "--help"]);
    assert!(o.status.success());
    assert!(o.stdout.contains("-f, --config <FILE>"), "{}", o.stdout);

    let o = oxit_with(&["--version"]);
    assert!(o.status.success());
    assert!(
        o.stdout
            .starts_with(&format!("oxit {} (", env!("CARGO_PKG_VERSION"))),
        "{}",
        o.stdout
    );

    let o = oxit_with(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stderr.starts_with("oxit: error:"), "{}", o.stderr);
}

/// The three identity lines `keygen` and `fingerprint` print.
fn identity_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.ends_with('.'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn keygen_then_fingerprint_agree() {
    let d = TempDir::new("keygen");
    let data = d.path().join("data");
    let o = oxit_with(&["keygen", "--data-dir", s(&data), "--nickname", "CliTest"]);
    assert!(o.status.success(), "{}", o.stderr);
    assert!(o.stdout.starts_with("Keys created in "), "{}", o.stdout);
    let ids = identity_lines(&o.stdout);
    assert_eq!(ids.len(), 3, "{}", o.stdout);
    let (nick, fp) = ids[0].split_once(' ').unwrap();
    assert_eq!(nick, "CliTest");
    assert_eq!(fp.len(), 40);
    assert!(
        fp.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    );
    assert!(ids[1].starts_with("ed25519 ") && ids[1].len() == "ed25519 ".len() + 43);
    assert!(ids[2].starts_with("ntor-onion-key ") && ids[2].ends_with('='));
    // The fingerprint file C tor writes agrees.
    assert_eq!(
        fs::read_to_string(data.join("fingerprint")).unwrap(),
        format!("{}\n", ids[0])
    );

    let before = files_in(&data);
    let o = oxit_with(&["fingerprint", "--data-dir", s(&data)]);
    assert!(o.status.success(), "{}", o.stderr);
    assert_eq!(identity_lines(&o.stdout), ids);

    // A second keygen reports the same set and writes nothing.
    let o = oxit_with(&["keygen", "--data-dir", s(&data), "--nickname", "Other"]);
    assert!(o.status.success(), "{}", o.stderr);
    assert!(o.stdout.contains("nothing was changed"), "{}", o.stdout);
    assert_eq!(identity_lines(&o.stdout), ids);
    assert_eq!(files_in(&data), before);

    let o = oxit_with(&["keygen", "--data-dir", s(&data), "--nickname", "bad-name"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stderr.contains("bad nickname"), "{}", o.stderr);
}

#[test]
fn fingerprint_never_creates_keys() {
    let d = TempDir::new("fp-empty");
    let o = oxit_with(&["fingerprint", "--data-dir", s(d.path())]);
    assert_eq!(o.status.code(), Some(2), "{}", o.stderr);
    assert!(o.stderr.starts_with("oxit: error:"), "{}", o.stderr);
    assert!(o.stderr.contains("secret_id_key"), "{}", o.stderr);
    assert_no_panic(&o);
    assert!(files_in(d.path()).is_empty());
    assert!(fs::read_dir(d.path()).unwrap().next().is_none());

    let missing = d.path().join("nowhere");
    let o = oxit_with(&["fingerprint", "--data-dir", s(&missing)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!missing.exists());
}

/// Isolation: a torrc without DirAuthority lines makes oxit use the live
/// network's authorities. Every torrc these tests write names a dummy one
/// (nothing listens on 127.0.0.1:1) and publishes nothing, at the end so
/// that line numbers in expected errors stay as written.
const ISOLATION: &str = "\nDirAuthority dummy orport=1 no-v2 \
    v3ident=0000000000000000000000000000000000000000 127.0.0.1:1 \
    0000000000000000000000000000000000000000\nPublishServerDescriptor 0\n";

fn write_torrc(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("torrc");
    fs::write(&p, format!("{body}{ISOLATION}")).unwrap();
    p
}

#[test]
fn check_config_reports_file_and_line() {
    let d = TempDir::new("check");
    let good = write_torrc(
        d.path(),
        "# comment\nORPort 127.0.0.1:19999\nNickname Good\nAvoidDiskWrites 1\n",
    );
    let o = oxit_with(&["check-config", "-f", s(&good)]);
    assert!(o.status.success(), "{}", o.stderr);
    assert!(
        o.stdout.contains("ORPort 127.0.0.1:19999\n"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("Nickname Good\n"), "{}", o.stdout);
    assert!(
        o.stdout.contains("# effective exit policy:"),
        "{}",
        o.stdout
    );
    // A known C tor option oxit ignores: one warning naming file and line.
    let warn = format!("{}:4: AvoidDiskWrites", good.display());
    assert_eq!(o.stderr.matches(&warn).count(), 1, "{}", o.stderr);

    for (body, line, what) in [
        ("Nickname A\nNoSuchOption 1\n", 2, "unknown option"),
        (
            "Nickname A\n\nNumCPUs lots\n",
            3,
            "bad value \"lots\" for NumCPUs",
        ),
        (
            "%include /nonexistent/oxit-test.conf\n",
            1,
            "cannot %include",
        ),
    ] {
        let bad = write_torrc(d.path(), body);
        let o = oxit_with(&["check-config", "-f", s(&bad)]);
        assert_eq!(o.status.code(), Some(1), "{body:?}: {}", o.stderr);
        let at = format!("oxit: error: {}:{line}: ", bad.display());
        assert!(o.stderr.starts_with(&at), "{body:?}: {}", o.stderr);
        assert!(o.stderr.contains(what), "{body:?}: {}", o.stderr);
        assert_no_panic(&o);
    }

    let o = oxit_with(&["check-config", "-f", s(&d.path().join("absent"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stderr.contains("absent"), "{}", o.stderr);
}

#[test]
fn run_with_bad_config_fails_cleanly() {
    let d = TempDir::new("run-bad");
    let data = d.path().join("data");
    let bad = write_torrc(
        d.path(),
        &format!(
            "DataDirectory {}\nORPort 127.0.0.1:notaport\n",
            data.display()
        ),
    );
    let o = oxit_with(&["run", "-f", s(&bad)]);
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!("{}:2:", bad.display())),
        "{}",
        o.stderr
    );
    assert_no_panic(&o);
    assert!(!data.exists(), "no keys may be created for a bad config");

    // An unopenable log file is a configuration error too.
    let bad = write_torrc(
        d.path(),
        &format!(
            "DataDirectory {}\nLog notice file {}/no/such/dir/log\n",
            data.display(),
            d.path().display()
        ),
    );
    let o = oxit_with(&["run", "-f", s(&bad)]);
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    assert!(o.stderr.contains("cannot open log file"), "{}", o.stderr);
    assert_no_panic(&o);
}

#[test]
fn corrupt_key_file_stops_startup() {
    let d = TempDir::new("corrupt");
    let data = d.path().join("data");
    let o = oxit_with(&["keygen", "--data-dir", s(&data)]);
    assert!(o.status.success(), "{}", o.stderr);
    let torrc = write_torrc(
        d.path(),
        &format!(
            "DataDirectory {}\nORPort 127.0.0.1:1\nLog notice stdout\n",
            data.display()
        ),
    );
    for file in [
        "secret_id_key",
        "ed25519_master_id_public_key",
        "secret_onion_key_ntor",
    ] {
        let path = data.join("keys").join(file);
        let orig = fs::read(&path).unwrap();
        // Truncated to half: garbage for every format.
        let cut = orig[..orig.len() / 2].to_vec();
        fs::write(&path, &cut).unwrap();
        let o = oxit_with(&["run", "-f", s(&torrc)]);
        assert_eq!(o.status.code(), Some(2), "{file}: {}", o.stderr);
        assert!(o.stderr.starts_with("oxit: error:"), "{}", o.stderr);
        assert!(o.stderr.contains(s(&path)), "{file}: {}", o.stderr);
        assert_no_panic(&o);
        // Not silently regenerated.
        assert_eq!(fs::read(&path).unwrap(), cut, "{file} was rewritten");
        let o = oxit_with(&["fingerprint", "--data-dir", s(&data)]);
        assert_eq!(o.status.code(), Some(2), "{file}: {}", o.stderr);
        assert!(o.stderr.contains(s(&path)), "{file}: {}", o.stderr);
        fs::write(&path, &orig).unwrap();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `oxit run`, with its log (stdout) read line by line as it comes.
struct Relay {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: Option<std::thread::JoinHandle<String>>,
    log: Vec<String>,
}

impl Relay {
    fn start(cmd: Command) -> Relay {
        let mut child = Child::spawn(cmd);
        let stderr = drain(child.inner().stderr.take().unwrap());
        let stdout = child.inner().stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Relay {
            child,
            lines: rx,
            reader: Some(reader),
            stderr: Some(stderr),
            log: Vec::new(),
        }
    }

    fn pid(&mut self) -> u32 {
        self.child.inner().id()
    }

    /// The first log line containing `needle`, within a bound that covers
    /// key generation in a debug build.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(e) => panic!(
                    "no {needle:?} in the log ({e}); log so far: {:#?}",
                    self.log
                ),
            }
        }
    }

    /// SIGTERM; the exit status, the rest of the log and stderr.
    fn stop(mut self) -> (ExitStatus, Vec<String>, String) {
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        // SAFETY: `pid` is our own child, not yet reaped (the guard reaps it).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = self.child.wait_for(Duration::from_secs(10));
        self.reader.take().unwrap().join().unwrap();
        let rest = self.lines.try_iter().collect();
        let err = self.stderr.take().unwrap().join().unwrap();
        (status, rest, err)
    }
}

#[test]
fn run_logs_identity_serves_and_stops_on_sigterm() {
    let d = TempDir::new("run");
    let data = d.path().join("data");
    let port = free_port();
    let torrc = write_torrc(
        d.path(),
        &format!(
            "DataDirectory {}\nORPort 127.0.0.1:{port}\nNickname RunTest\nNumCPUs 1\n",
            data.display()
        ),
    );
    let mut cmd = oxit();
    cmd.args(["run", "-f", s(&torrc)]);
    let mut relay = Relay::start(cmd);
    let identity = relay.wait_for("identity: RSA fingerprint");
    assert!(
        identity.contains(" [notice] Relay RunTest identity: "),
        "{identity}"
    );
    assert!(
        identity.contains(&format!("ORPort 127.0.0.1:{port}")),
        "{identity}"
    );
    let fp = fs::read_to_string(data.join("fingerprint")).unwrap();
    let hex = fp.trim().split_once(' ').unwrap().1;
    assert!(identity.contains(hex), "{identity} vs {fp}");

    // The listener is bound right after the identity line is logged.
    let deadline = Instant::now() + Duration::from_secs(10);
    let conn = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("ORPort {port} does not accept: {e}"),
        }
    };

    // SIGUSR1: a statistics summary, and the relay goes on (its default
    // action would kill it). SIGUSR2: every log to debug, then back.
    let pid = libc::pid_t::try_from(relay.pid()).unwrap();
    let signal = |sig| {
        // SAFETY: `pid` is our own child, still running.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    };
    signal(libc::SIGUSR1);
    relay.wait_for("Dumping stats:");
    let up = relay.wait_for("has been up for");
    assert!(up.contains(" [notice] "), "{up}");
    relay.wait_for("worker 0: ");
    signal(libc::SIGUSR2);
    relay.wait_for("every log now at debug level");
    signal(libc::SIGUSR2);
    relay.wait_for("logs back at their configured levels");

    let (status, rest, err) = relay.stop();
    drop(conn);
    assert!(status.success(), "exit status {status:?}");
    assert!(err.is_empty(), "stderr: {err}");
    assert!(
        rest.iter().any(|l| l.contains("Caught SIGTERM")),
        "{rest:#?}"
    );
}

#[test]
fn busy_orport_is_a_runtime_error() {
    let d = TempDir::new("busy");
    // A plain listener (no SO_REUSEPORT) holds the port.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let torrc = write_torrc(
        d.path(),
        &format!(
            "DataDirectory {}\nORPort 127.0.0.1:{port}\nNumCPUs 1\n",
            d.path().join("data").display()
        ),
    );
    let o = oxit_with(&["run", "-f", s(&torrc)]);
    assert_eq!(o.status.code(), Some(3), "{}", o.stderr);
    assert!(
        o.stderr.starts_with(&format!(
            "oxit: error: cannot listen on ORPort 127.0.0.1:{port}"
        )),
        "{}",
        o.stderr
    );
    assert_no_panic(&o);
    drop(holder);
}

/// The printable runs of at least `min` bytes in a binary (what `strings`
/// prints).
fn strings(bin: &[u8], min: usize) -> Vec<String> {
    bin.split(|b| !(b.is_ascii_graphic() || *b == b' '))
        .filter(|r| r.len() >= min)
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

/// Without DirAuthority lines oxit uses C tor's built-in authorities and
/// fallback directories: exactly the lists compiled into the installed
/// C tor (scripts/update-builtin-dirs.sh regenerates ours when Debian
/// ships a tor with other ones). Checked with `check-config`, which prints
/// the configuration and never starts the relay.
#[test]
fn default_authorities_are_c_tors_builtin_lists() {
    let tor = fs::read("/usr/bin/tor")
        .expect("/usr/bin/tor (Debian package tor, installed by scripts/test.sh)");
    let mut auths: Vec<String> = Vec::new();
    let mut fallbacks: Vec<String> = Vec::new();
    for s in strings(&tor, 20) {
        let first_digit = s.starts_with(|c: char| c.is_ascii_digit());
        if s.contains(" orport=")
            && (s.contains(" v3ident=") || s.contains(" bridge "))
            && !first_digit
        {
            auths.push(s);
        } else if first_digit && s.contains(" orport=") && s.contains(" id=") {
            fallbacks.push(s);
        }
    }
    assert!(
        auths.len() >= 9,
        "authorities found in /usr/bin/tor: {auths:#?}"
    );
    assert!(
        fallbacks.len() >= 10,
        "fallbacks found in /usr/bin/tor: {}",
        fallbacks.len()
    );
    let ours =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dir/builtin_dirs.txt"))
            .unwrap();
    let ours_auth: Vec<&str> = ours
        .lines()
        .filter_map(|l| l.strip_prefix("DirAuthority "))
        .collect();
    let ours_fb: Vec<&str> = ours
        .lines()
        .filter_map(|l| l.strip_prefix("FallbackDir "))
        .collect();
    let sorted = |v: Vec<&str>| {
        let mut v: Vec<String> = v.into_iter().map(str::to_owned).collect();
        v.sort();
        v
    };
    auths.sort();
    fallbacks.sort();
    assert_eq!(
        sorted(ours_auth),
        auths,
        "src/dir/builtin_dirs.txt differs from /usr/bin/tor: run scripts/update-builtin-dirs.sh"
    );
    assert_eq!(
        sorted(ours_fb),
        fallbacks,
        "src/dir/builtin_dirs.txt differs from /usr/bin/tor: run scripts/update-builtin-dirs.sh"
    );

    // What oxit uses with no DirAuthority line: those nine v3 authorities.
    let d = TempDir::new("defaults");
    let torrc = d.path().join("torrc");
    fs::write(&torrc, "Nickname Defaults\n").unwrap();
    let o = oxit_with(&["check-config", "-f", s(&torrc)]);
    assert!(o.status.success(), "{}", o.stderr);
    let listed: Vec<&str> = o
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("# DirAuthority "))
        .collect();
    assert_eq!(listed.len(), auths.len(), "{}", o.stdout);
    for name in [
        "moria1",
        "tor26",
        "dizum",
        "gabelmoo",
        "dannenberg",
        "maatuska",
        "longclaw",
        "bastet",
        "faravahar",
    ] {
        assert!(
            listed.iter().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing from {listed:#?}"
        );
    }
    assert!(
        o.stdout
            .contains(&format!("{} fallback directories", fallbacks.len())),
        "{}",
        o.stdout
    );
}

/// The numbers of a `/proc/<pid>/task/<tid>/status` text's line `key`
/// (`Uid:`, `Gid:`, `Groups:`).
fn status_ids(status: &str, key: &str) -> Vec<u32> {
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"));
    line[key.len()..]
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// A port below 1024 that is free: only root can bind it, so a relay that
/// serves on it and runs as another user bound it before switching.
fn free_low_port() -> u16 {
    (700..1000)
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below 1024")
}

#[test]
fn user_gives_up_root_after_binding_and_checks_the_data_directory() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test checks User, which needs root: run the suite as root (CI does)"
    );
    let ids = oxit::os::lookup_user("debian-tor")
        .expect("the debian-tor user, which Debian's tor package creates (the suite installs it)");
    let d = TempDir::new("user");
    let data = d.path().join("data");
    fs::create_dir(&data).unwrap();
    let port = free_low_port();
    let torrc = write_torrc(
        d.path(),
        &format!(
            "DataDirectory {}\nORPort 127.0.0.1:{port}\nNumCPUs 2\nUser debian-tor\n",
            data.display()
        ),
    );

    // Still root's: refused, as C tor refuses it, naming both users.
    let o = oxit_with(&["run", "-f", s(&torrc)]);
    assert_eq!(o.status.code(), Some(3), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "{} is not owned by this user (debian-tor, {}) but by root (0)",
            data.display(),
            ids.uid
        )),
        "{}",
        o.stderr
    );
    assert_no_panic(&o);

    std::os::unix::fs::chown(&data, Some(ids.uid), Some(ids.gid)).unwrap();
    let mut cmd = oxit();
    cmd.args(["run", "-f", s(&torrc)]);
    let mut relay = Relay::start(cmd);
    relay.wait_for("Switched to User debian-tor");
    relay.wait_for("relay running: 2 worker(s)");
    let conn = TcpStream::connect(("127.0.0.1", port)).expect("the ORPort bound as root serves");
    // Every thread (workers, control, signals) runs as the user, with no
    // way back: real, effective, saved and filesystem ids, and no group
    // but its own.
    let tasks: Vec<PathBuf> = fs::read_dir(format!("/proc/{}/task", relay.pid()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(tasks.len() >= 3, "{tasks:?}");
    let mut checked = 0;
    for t in &tasks {
        // Short-lived threads (a directory fetch) may end meanwhile.
        let Ok(status) = fs::read_to_string(t.join("status")) else {
            continue;
        };
        assert_eq!(status_ids(&status, "Uid:"), [ids.uid; 4], "{}", t.display());
        assert_eq!(status_ids(&status, "Gid:"), [ids.gid; 4], "{}", t.display());
        assert_eq!(status_ids(&status, "Groups:"), [ids.gid], "{}", t.display());
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} threads left to check");
    use std::os::unix::fs::MetadataExt;
    let key = fs::metadata(data.join("keys/secret_id_key")).unwrap();
    assert_eq!(key.uid(), ids.uid, "keys are written as the user");
    let (status, _, err) = relay.stop();
    drop(conn);
    assert!(status.success(), "exit status {status:?}: {err}");

    // A user that does not exist stops startup with a clear error.
    let torrc = write_torrc(
        d.path(),
        &format!(
            "DataDirectory {}\nORPort 127.0.0.1:{}\nUser no-such-user-oxit\n",
            data.display(),
            free_port()
        ),
    );
    let o = oxit_with(&["run", "-f", s(&torrc)]);
    assert_eq!(o.status.code(), Some(3), "{}", o.stderr);
    assert!(
        o.stderr.contains("User no-such-user-oxit: no such user"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_low_descriptor_limit_is_raised_and_warned_about() {
    use std::os::unix::process::CommandExt;
    let d = TempDir::new("nofile");
    let torrc = write_torrc(
        d.path(),
        &format!(
            "DataDirectory {}\nORPort 127.0.0.1:{}\nNumCPUs 1\n",
            d.path().join("data").display(),
            free_port()
        ),
    );
    let mut cmd = oxit();
    cmd.args(["run", "-f", s(&torrc)]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the
    // child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let rl = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut relay = Relay::start(cmd);
    relay.wait_for("Raised the file descriptor limit from 1024 to 4096 (the hard limit)");
    let warning = relay.wait_for("The file descriptor limit is 4096");
    assert!(warning.contains("[warn]"), "{warning}");
    relay.wait_for("relay running");
    let limits = fs::read_to_string(format!("/proc/{}/limits", relay.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(open_files[3..5], ["4096", "4096"], "{limits}");
    let (status, _, err) = relay.stop();
    assert!(status.success(), "exit status {status:?}: {err}");
}

/// C tor's command line, as Debian's `tor@.service` and Ansible roles use
/// it: `--defaults-torrc`, `-f`, `--Option value` overrides,
/// `--verify-config` and `--list-fingerprint`.
#[test]
fn c_tor_command_line_conventions() {
    let d = TempDir::new("ctorcli");
    let data = d.path().join("data");
    let defaults = d.path().join("defaults-torrc");
    fs::write(
        &defaults,
        format!(
            "DataDirectory {}\nNickname FromDefaults\nRunAsDaemon 1\n",
            data.display()
        ),
    )
    .unwrap();
    let torrc = write_torrc(d.path(), "Nickname FromTorrc\nORPort 127.0.0.1:19998\n");
    let o = oxit_with(&[
        "--defaults-torrc",
        s(&defaults),
        "-f",
        s(&torrc),
        "--RunAsDaemon",
        "0",
        "--verify-config",
    ]);
    assert_no_panic(&o);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout.trim(), "Configuration was valid");

    // The keys are made if missing, and the line is C's.
    let o = oxit_with(&[
        "--defaults-torrc",
        s(&defaults),
        "-f",
        s(&torrc),
        "--Nickname",
        "FromCli",
        "--list-fingerprint",
    ]);
    assert!(o.status.success(), "{o:?}");
    let line = o.stdout.trim();
    let (nick, spaced) = line.split_once(' ').unwrap();
    assert_eq!(nick, "FromCli");
    assert_eq!(spaced.len(), 49, "ten groups of four: {line}");
    let fp = fs::read_to_string(data.join("fingerprint")).unwrap();
    let hex = fp.trim().split_once(' ').unwrap().1;
    assert_eq!(spaced.replace(' ', ""), hex);

    // A bad override names the command line; a bad torrc line its file.
    let o = oxit_with(&["-f", s(&torrc), "--NoSuchOption", "1", "--verify-config"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("<command line>:1"), "{}", o.stderr);
    let o = oxit_with(&["-f", s(&torrc), "stray", "--verify-config"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("unexpected argument"), "{}", o.stderr);
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): READY=1 once relaying,
/// WATCHDOG=1 at half the watchdog interval, RELOADING=1 then READY=1
/// around a SIGHUP, STOPPING=1 on the way out (sd_notify(3); C tor sends
/// the same). The test plays systemd's part with a datagram socket.
#[test]
fn systemd_notifications_follow_the_relay_life() {
    let d = TempDir::new("notify");
    let sock_path = d.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let port = free_port();
    let torrc = write_torrc(
        d.path(),
        &format!(
            "DataDirectory {}\nORPort 127.0.0.1:{port}\nNickname NotifyTest\nNumCPUs 1\n",
            d.path().join("data").display()
        ),
    );
    let mut cmd = oxit();
    cmd.args(["-f", s(&torrc)])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID");
    let mut relay = Relay::start(cmd);
    let mut seen = Vec::new();
    let mut expect = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 512];
        loop {
            assert!(Instant::now() < deadline, "no {want:?}; got {seen:?}");
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {want:?} ({e}); got {seen:?}"));
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.lines().any(|l| l == want) {
                return msg;
            }
        }
    };
    let ready = expect("READY=1");
    assert!(ready.contains("STATUS=relaying on 1 worker"), "{ready}");
    expect("WATCHDOG=1");
    expect("WATCHDOG=1");
    let pid = libc::pid_t::try_from(relay.pid()).unwrap();
    // SAFETY: `pid` is our own child, still running.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let reloading = expect("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    expect("READY=1");
    relay.wait_for("Configuration unchanged");
    let (status, _, err) = relay.stop();
    assert!(status.success(), "exit status {status:?}, stderr {err}");
    expect("STOPPING=1");
}

/// The shipped units' command lines work as written: each `ExecStartPre`
/// (`--verify-config`) of tuning/oxit.service and tuning/oxit@.service,
/// with the binary, torrc and data directory pointed at the test's.
#[test]
fn shipped_unit_command_lines_verify_a_config() {
    let d = TempDir::new("units");
    let torrc = write_torrc(
        d.path(),
        "ORPort 127.0.0.1:9999\nNickname UnitTest\nExitRelay 1\n",
    );
    let data = d.path().join("data");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (unit, conf, dir) in [
        ("tuning/oxit.service", "/etc/oxit/torrc", "/var/lib/oxit"),
        (
            "tuning/oxit@.service",
            "/etc/oxit/instances/%i/torrc",
            "/var/lib/oxit/%i",
        ),
    ] {
        let text = fs::read_to_string(root.join(unit)).unwrap();
        for key in ["ExecStartPre=", "ExecStart="] {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{unit}: no {key}"));
            assert!(line.starts_with("/usr/local/bin/oxit "), "{unit}: {line}");
            let args: Vec<String> = line
                .replace(conf, s(&torrc))
                .replace(dir, s(&data))
                .split_whitespace()
                .skip(1)
                .map(str::to_owned)
                .collect();
            if key == "ExecStart=" {
                // The same command without --verify-config.
                assert!(!args.iter().any(|a| a == "--verify-config"), "{unit}");
                continue;
            }
            let mut cmd = oxit();
            cmd.args(&args);
            let o = run_bounded(cmd);
            assert_no_panic(&o);
            assert!(o.status.success(), "{unit}: {args:?}: {}", o.stderr);
            assert!(o.stdout.contains("Configuration was valid"), "{}", o.stdout);
        }
    }
}

/// logrotate's `postrotate` sends SIGHUP after moving the log away: oxit
/// reopens its `Log ... file` and writes to a new file at the old path,
/// while the moved file keeps what was written before.
#[test]
fn sighup_reopens_log_files_for_logrotate() {
    let d = TempDir::new("logrotate");
    let log = d.path().join("notices.log");
    let port = free_port();
    let torrc = write_torrc(
        d.path(),
        &format!(
            "DataDirectory {}\nORPort 127.0.0.1:{port}\nNickname RotateTest\nNumCPUs 1\n\
             Log notice stdout\nLog notice file {}\n",
            d.path().join("data").display(),
            log.display()
        ),
    );
    let mut cmd = oxit();
    cmd.args(["-f", s(&torrc)]);
    let mut relay = Relay::start(cmd);
    relay.wait_for("relay running");
    let rotated = d.path().join("notices.log.1");
    fs::rename(&log, &rotated).unwrap();
    let pid = libc::pid_t::try_from(relay.pid()).unwrap();
    // SAFETY: `pid` is our own child, still running.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    relay.wait_for("Configuration unchanged; logs reopened");
    let (status, _, err) = relay.stop();
    assert!(status.success(), "exit status {status:?}, stderr {err}");
    let old = fs::read_to_string(&rotated).unwrap();
    let new = fs::read_to_string(&log).unwrap();
    assert!(old.contains("relay running"), "{old}");
    assert!(!old.contains("logs reopened"), "{old}");
    assert!(
        new.contains("Configuration unchanged; logs reopened"),
        "{new}"
    );
    assert!(new.contains("Caught SIGTERM"), "{new}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
