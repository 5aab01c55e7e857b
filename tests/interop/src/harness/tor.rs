//! A C tor relay guard: one private relay on 127.0.0.1 with no authorities.
//!
//! [`TorProcess::start`] writes a torrc into a fresh temp dir, spawns
//! `/usr/bin/tor -f torrc`, waits (bounded) until the ORPort accepts and the
//! identity/onion keys are on disk, and exposes the relay as a [`HopSpec`].
//! Drop kills it by PID. The relay also watches our PID
//! (`__OwningControllerProcess`), so it exits even if the test process is
//! killed before Drop runs.
//!
//! The options are the smallest set found (by removing each in turn and
//! running tests/ctor_baseline.rs) that lets a C tor 0.4.9 relay with no
//! consensus accept CREATE2/EXTEND2 and act as an exit towards 127.0.0.1,
//! plus two for isolation. Each carries its reason in [`TorProcess::torrc`].
//! Found unnecessary: `Address` (with `ORPort 127.0.0.1:P` the relay works
//! without it), `AssumeReachable` (nothing waits for self-testing),
//! `ServerDNSDetectHijacking 0` (dnsmasq answers the probes quickly) and
//! `TestingTorNetwork` (its useful defaults are set one by one here).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{
    HarnessError, SIGCONT, SIGSTOP, free_tcp_port, io_err, kill_child, require_program,
    signal_child, tail, tcp_listening, wait_until,
};
use crate::client::{Handshake, HopSpec};

const TOR: &str = "/usr/bin/tor";

/// What the relay is for.
#[derive(Clone, Debug)]
pub enum TorRole {
    /// A non-exit relay: guard or middle.
    Middle,
    /// An exit that allows everything, resolving names through the DNS
    /// server at `dns` (e.g. a [`super::Dnsmasq`]).
    Exit {
        /// DNS server the exit uses (any port: see `resolv_conf`).
        dns: SocketAddr,
    },
}

/// A running C tor relay.
pub struct TorProcess {
    child: Child,
    dir: tempfile::TempDir,
    or_addr: SocketAddr,
}

impl TorProcess {
    /// Start a relay and wait (≤ 30 s) until it can take circuits.
    pub fn start(role: TorRole) -> Result<Self, HarnessError> {
        Self::start_with(role, "")
    }

    /// [`Self::start`], with `extra` torrc lines after the role's (a later
    /// line of a single-valued option wins in C tor).
    pub fn start_with(role: TorRole, extra: &str) -> Result<Self, HarnessError> {
        require_program(TOR, "tor")?;
        let dir = tempfile::Builder::new()
            .prefix("oxit-interop-tor-")
            .tempdir()
            .map_err(io_err("tor temp dir"))?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).map_err(io_err("tor data dir"))?;
        // C tor refuses a DataDirectory readable by others.
        set_mode_700(&data_dir)?;
        let or_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let resolv = dir.path().join("resolv.conf");
        if let TorRole::Exit { dns } = &role {
            std::fs::write(&resolv, resolv_conf(*dns)).map_err(io_err("write resolv.conf"))?;
        }
        let torrc = dir.path().join("torrc");
        std::fs::write(
            &torrc,
            Self::torrc(&role, &data_dir, or_addr, &resolv, std::process::id()) + extra,
        )
        .map_err(io_err("write torrc"))?;
        let log = dir.path().join("notice.log");

        let mut child = Command::new(TOR)
            .arg("-f")
            .arg(&torrc)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err(format!("spawn {TOR}")))?;
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
            "tor",
            &mut child,
            Duration::from_secs(30),
            || keys_ready() && tcp_listening(or_addr) && descriptor_built(&log),
            || tail(&log, 30),
        );
        let mut me = Self {
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

    /// The torrc for `role`. Each option says why it is there.
    pub fn torrc(
        role: &TorRole,
        data_dir: &Path,
        or_addr: SocketAddr,
        resolv_conf: &Path,
        owner_pid: u32,
    ) -> String {
        let mut c = String::new();
        let mut opt = |line: String, why: &str| {
            c.push_str(&format!("# {why}\n{line}\n"));
        };
        opt(
            format!("DataDirectory {}", data_dir.display()),
            "fresh keys per test run",
        );
        opt(
            "SocksPort 0".into(),
            "a relay only: no client port to collide on",
        );
        opt(
            format!("ORPort {or_addr}"),
            "server mode; bound to loopback on a port we picked",
        );
        opt(
            "DirAuthority dummy orport=1 no-v2 v3ident=0000000000000000000000000000000000000000 \
             127.0.0.1:1 0000000000000000000000000000000000000000"
                .into(),
            "isolation, not function: with the default authorities a relay on \
             a connected machine would fetch the real consensus (and its \
             refuseunknownexits etc.) and try to publish",
        );
        opt(
            "PublishServerDescriptor 0".into(),
            "isolation: never upload a descriptor; C tor still builds it \
             and enforces the exit policy it contains",
        );
        opt(
            format!("__OwningControllerProcess {owner_pid}"),
            "exit when the test process is gone, even if it was killed",
        );
        opt(
            format!(
                "Log notice file {}",
                data_dir.with_file_name("notice.log").display()
            ),
            "readiness and failure diagnosis",
        );
        opt(
            format!(
                "Log info file {}",
                data_dir.with_file_name("info.log").display()
            ),
            "readiness (descriptor built) and protocol warnings",
        );
        opt(
            "GeoIPFile /nonexistent\nGeoIPv6File /nonexistent".into(),
            "parsing the GeoIP files costs ~2 s per start",
        );
        match role {
            TorRole::Middle => {
                opt(
                    "ExitRelay 0".into(),
                    "a middle: BEGIN on its circuits is refused",
                );
                opt(
                    "ExtendAllowPrivateAddresses 1".into(),
                    "EXTEND2 to 127.0.0.1 is refused by default \
                     (circuit_extend_addr_port_is_valid): the client sees \
                     its circuit destroyed",
                );
            }
            TorRole::Exit { .. } => {
                opt("ExitRelay 1".into(), "be an exit");
                opt("ExitPolicy accept *:*".into(), "allow every port");
                opt(
                    "ExitPolicyRejectPrivate 0".into(),
                    "the HTTP server is on 127.0.0.1, rejected by default \
                     (BEGIN gets END EXITPOLICY)",
                );
                opt(
                    "RefuseUnknownExits 0".into(),
                    "with no consensus every relay is 'unknown': BEGIN from \
                     an authenticated relay gets END MISC \
                     (connection_exit_begin_conn, should_refuse_unknown_exits)",
                );
                opt(
                    format!("ServerDNSResolvConfFile {}", resolv_conf.display()),
                    "resolve through the test's dnsmasq (needed for RESOLVE; \
                     evdns accepts `nameserver IP:PORT`)",
                );
            }
        }
        c
    }

    /// The relay as a hop, reached with `handshake`.
    pub fn hop(&self, handshake: Handshake) -> Result<HopSpec, HarnessError> {
        Ok(HopSpec::from_c_tor_data_dir(
            &self.data_dir(),
            self.or_addr,
            handshake,
        )?)
    }

    /// ORPort address.
    pub fn or_addr(&self) -> SocketAddr {
        self.or_addr
    }

    /// Freeze the relay (SIGSTOP): it stops reading its connections, so
    /// what is sent to it piles up in front of it. [`Self::resume`] undoes it.
    pub fn pause(&self) {
        signal_child(&self.child, SIGSTOP);
    }

    /// Let a paused relay run again (SIGCONT).
    pub fn resume(&self) {
        signal_child(&self.child, SIGCONT);
    }

    /// The relay's process id (benchmarks read its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The DataDirectory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The info-level log so far (protocol warnings appear here).
    pub fn info_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("info.log")).unwrap_or_default()
    }
}

impl Drop for TorProcess {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// resolv.conf naming the DNS server, port included.
///
/// libevent's evdns parses each `nameserver` value with
/// `evutil_parse_sockaddr_port`, so `127.0.0.1:PORT` works: a test DNS server
/// need not own port 53. (Checked by tests/ctor_baseline.rs resolving a name
/// that only the test's dnsmasq knows.)
fn resolv_conf(dns: SocketAddr) -> String {
    format!("nameserver {dns}\n")
}

/// C tor builds its own descriptor (and with it the exit policy it enforces,
/// router_compare_to_my_exit_policy) shortly after start; until then every
/// BEGIN is refused.
fn descriptor_built(notice_log: &Path) -> bool {
    let info = notice_log.with_file_name("info.log");
    std::fs::read_to_string(info).is_ok_and(|s| s.contains("router_rebuild_descriptor"))
}

fn set_mode_700(path: &Path) -> Result<(), HarnessError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("chmod 700 {}", path.display())))
}
