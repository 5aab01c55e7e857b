//! Processes and servers the interop tests start on 127.0.0.1.
//!
//! Owns: picking free ports, the C tor relay guard ([`TorProcess`]), the
//! dnsmasq guard ([`Dnsmasq`]), and a tiny HTTP/1.0 server ([`HttpServer`])
//! whose bodies are deterministic so a test knows their SHA-256 in advance.
//! Every guard kills its child by PID on Drop, so a failing test leaves no
//! process behind. Every wait is bounded. A missing program makes the test
//! fail with the Debian package to install — never skip.

mod acceptor;
pub mod arti;
mod delay;
pub mod dest;
mod dnsmasq;
mod http;
pub mod metrics;
mod netns;
mod oxit;
mod path;
pub mod procinfo;
pub mod socks;
pub mod testnet;
mod tor;

pub use delay::DelayLine;
pub use dnsmasq::Dnsmasq;
pub use http::{HttpServer, body_for, sha256_hex};
pub use netns::{isolate_thread_network, set_thread_net_sysctl};
pub use oxit::{
    DUMMY_AUTHORITY, IoBackend, OxitOptions, OxitProcess, oxit_binary, oxit_load_binary,
};
pub use path::ExitPath;
pub use procinfo::{SocketInfo, cpu_ticks, open_fds, rss_kib, sockets};
pub use testnet::{Testnet, TestnetOptions};
pub use tor::{TorProcess, TorRole};

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// Errors from starting the harness' programs.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A program the tests need is not installed.
    #[error("{program} not found: install the Debian package `{package}` (scripts/test.sh does)")]
    Missing {
        /// Path looked for.
        program: String,
        /// Debian package that provides it.
        package: &'static str,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A program did not become ready in time, or exited early.
    #[error("{program} not ready: {detail}")]
    NotReady {
        /// Which program.
        program: String,
        /// What was seen (exit status, log tail).
        detail: String,
    },
    /// Building a hop description from the relay's files failed.
    #[error(transparent)]
    Hop(#[from] crate::client::Error),
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

/// Fail with the Debian package name when `program` is absent.
pub fn require_program(program: &str, package: &'static str) -> Result<(), HarnessError> {
    if Path::new(program).exists() {
        Ok(())
    } else {
        Err(HarnessError::Missing {
            program: program.to_owned(),
            package,
        })
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind :0, read, drop).
pub fn free_tcp_port() -> Result<u16, HarnessError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind 127.0.0.1:0"))?;
    Ok(l.local_addr().map_err(io_err("local_addr"))?.port())
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> Result<u16, HarnessError> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(io_err("bind udp 127.0.0.1:0"))?;
    Ok(s.local_addr().map_err(io_err("local_addr"))?.port())
}

/// Poll `ready` every 50 ms until it holds, `child` exits, or `timeout` passes.
pub(crate) fn wait_until(
    program: &str,
    child: &mut Child,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
    log_tail: impl Fn() -> String,
) -> Result<(), HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HarnessError::NotReady {
                program: program.to_owned(),
                detail: format!("exited with {status}; log:\n{}", log_tail()),
            });
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::NotReady {
                program: program.to_owned(),
                detail: format!("not ready after {timeout:?}; log:\n{}", log_tail()),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when something accepts TCP connections on `addr`.
pub(crate) fn tcp_listening(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Kill a child by its PID and reap it.
pub(crate) const SIGTERM: i32 = 15;
pub(crate) const SIGCONT: i32 = 18;
pub(crate) const SIGSTOP: i32 = 19;

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Send `sig` to this child's PID only.
pub(crate) fn signal_child(child: &Child, sig: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's PID; no memory is involved.
        unsafe { libc_kill(pid, sig) };
    }
}

pub(crate) fn kill_child(child: &mut Child) {
    // Child::kill sends SIGKILL to this child's PID only.
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of a log file, for error messages.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
