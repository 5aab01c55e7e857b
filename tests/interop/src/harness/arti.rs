//! An Arti client (the `arti` program of the crates.io `arti` crate, pinned
//! and built as the workspace member `tests/arti`) as a SOCKS
//! proxy in a [`Testnet`]: it bootstraps from the network's own authorities
//! with its own directory code, and picks its path itself.
//!
//! Arti reaches the directory only through BEGIN_DIR to the fallback
//! caches it is given (here the C relays, which are directory caches), and
//! its guards must be Guard, Fast, Stable and V2Dir; relays on one /16 are
//! one family to it unless the subnet prefixes are widened (33 and 129).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::oxit::workspace_binary;
use super::testnet::Testnet;
use super::{HarnessError, free_tcp_port, io_err, kill_child, tail, wait_until};

/// Arti's own `arti` program as `tests/arti` builds it (`ARTI_BIN`
/// overrides it).
pub fn arti_binary() -> Result<PathBuf, HarnessError> {
    workspace_binary("arti", "ARTI_BIN")
}

/// A running arti proxy.
pub struct ArtiProcess {
    child: Child,
    dir: PathBuf,
    socks: SocketAddr,
}

fn field(path: &Path, n: usize) -> Result<String, HarnessError> {
    let s = std::fs::read_to_string(path).map_err(io_err(format!("read {}", path.display())))?;
    s.split_whitespace()
        .nth(n)
        .map(str::to_owned)
        .ok_or_else(|| HarnessError::NotReady {
            program: "arti".into(),
            detail: format!("nothing in {}", path.display()),
        })
}

impl ArtiProcess {
    /// Start arti in `dir` against `net` and wait (≤ `timeout`) until it
    /// says it can carry traffic.
    pub fn start(
        net: &Testnet,
        dir: &Path,
        timeout: Duration,
    ) -> Result<ArtiProcess, HarnessError> {
        let bin = arti_binary()?;
        std::fs::create_dir_all(dir).map_err(io_err("arti dir"))?;
        let socks = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let mut c = String::new();
        let _ = writeln!(c, "# written by oxit's test network harness");
        let _ = writeln!(
            c,
            "[application]\nallow_running_as_root = true\nwatch_configuration = false"
        );
        let _ = writeln!(c, "[proxy]\nsocks_listen = \"{socks}\"");
        let _ = writeln!(
            c,
            "[logging]\nconsole = \"warn\"\nlog_sensitive_information = true\nprotocol_warnings = true"
        );
        let _ = writeln!(
            c,
            "files = [ {{ path = \"{}\", filter = \"info\" }} ]",
            dir.join("arti.log").display()
        );
        let _ = writeln!(
            c,
            "[storage]\ncache_dir = \"{}\"\nstate_dir = \"{}\"",
            dir.join("cache").display(),
            dir.join("state").display()
        );
        let _ = writeln!(
            c,
            "[storage.permissions]\ndangerously_trust_everyone = true"
        );
        // Everything is on 127.0.0.1: without these, every relay is one
        // family and no three-hop path exists.
        let _ = writeln!(
            c,
            "[path_rules]\nipv4_subnet_family_prefix = 33\nipv6_subnet_family_prefix = 129"
        );
        let _ = writeln!(c, "[address_filter]\nallow_local_addrs = true");
        // A network of a few relays: a guard sample that fits it.
        let _ = writeln!(
            c,
            "[override_net_params]\nguard-max-sample-size = 3\nguard-min-filtered-sample-size = 2\n\
             guard-n-primary-guards = 2"
        );
        let _ = writeln!(c, "[tor_network]\nfallback_caches = [");
        for r in &net.relays {
            let _ = writeln!(
                c,
                "  {{ rsa_identity = \"{}\", ed_identity = \"{}\", orports = [ \"{}\" ] }},",
                r.fingerprint,
                field(&r.dir.join("fingerprint-ed25519"), 1)?,
                r.or_addr
            );
        }
        let _ = writeln!(c, "]\n[tor_network.authorities]\nv3idents = [");
        for a in &net.authorities {
            let cert = a.dir.join("keys/authority_certificate");
            let text =
                std::fs::read_to_string(&cert).map_err(io_err("read authority_certificate"))?;
            let v3 = text
                .lines()
                .find_map(|l| l.strip_prefix("fingerprint "))
                .unwrap_or_default()
                .trim()
                .to_owned();
            let _ = writeln!(c, "  \"{v3}\",");
        }
        let _ = writeln!(c, "]");
        let cfg = dir.join("arti.toml");
        std::fs::write(&cfg, c).map_err(io_err("write arti.toml"))?;
        let log = dir.join("arti.log");
        let mut child = Command::new(&bin)
            .arg("proxy")
            .arg("-c")
            .arg(&cfg)
            .arg("--disable-fs-permission-checks")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("arti.stderr")).map_err(io_err("arti stderr"))?)
            .spawn()
            .map_err(io_err(format!("spawn {}", bin.display())))?;
        let ready = wait_until(
            "arti",
            &mut child,
            timeout,
            || std::fs::read_to_string(&log).is_ok_and(|s| s.contains("Sufficiently bootstrapped")),
            || format!("{}\n{}", tail(&log, 30), tail(&dir.join("arti.stderr"), 10)),
        );
        if let Err(e) = ready {
            kill_child(&mut child);
            return Err(e);
        }
        Ok(ArtiProcess {
            child,
            dir: dir.to_path_buf(),
            socks,
        })
    }

    /// Its SOCKS port.
    pub fn socks(&self) -> SocketAddr {
        self.socks
    }

    /// The end of its log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.dir.join("arti.log"), n)
    }
}

impl Drop for ArtiProcess {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}
