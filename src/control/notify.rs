//! systemd's service notification protocol (sd_notify(3)), for a unit of
//! `Type=notify` as Debian's `tor@.service`: `READY=1` once the workers
//! run, `RELOADING=1` … `READY=1` around a SIGHUP, `STOPPING=1` when a
//! shutdown begins, `EXTEND_TIMEOUT_USEC` while draining, and `WATCHDOG=1`
//! from the control loop at half of `WATCHDOG_USEC` (C tor does the same
//! from its main loop: main.c, mainloop.c, hibernate.c).
//!
//! Without `NOTIFY_SOCKET` every call is a no-op. A datagram that cannot
//! be sent is logged at debug level and otherwise ignored: systemd
//! notices a missing READY or watchdog on its own.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where systemd listens, from the environment at start.
#[derive(Debug)]
pub struct Notifier {
    target: Option<std::os::unix::net::SocketAddr>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        Self::from_vars(
            std::env::var("NOTIFY_SOCKET").ok(),
            std::env::var("WATCHDOG_USEC").ok(),
            std::env::var("WATCHDOG_PID").ok(),
            std::process::id(),
        )
    }

    fn from_vars(
        socket: Option<String>,
        usec: Option<String>,
        wpid: Option<String>,
        pid: u32,
    ) -> Notifier {
        let target = socket.and_then(|s| parse_addr(&s));
        // The watchdog is ours unless WATCHDOG_PID names another process.
        let ours = wpid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(pid));
        let watchdog = usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// How often to send `WATCHDOG=1` (half the unit's `WatchdogSec`).
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.target.as_ref()?;
        self.watchdog.map(|w| w / 2)
    }

    /// Send one state string (`READY=1`, `STOPPING=1`, ...).
    pub fn notify(&self, state: &str) {
        let Some(addr) = &self.target else {
            return;
        };
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(state.as_bytes(), addr));
        if let Err(e) = sent {
            tracing::debug!("cannot notify systemd ({state:?}): {e}");
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, as `RELOADING=1` wants it beside.
pub fn monotonic_usec() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    let secs = u128::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u128::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000 + nanos / 1000
}

/// A path, or `@name` for the abstract namespace.
fn parse_addr(s: &str) -> Option<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    if let Some(name) = s.strip_prefix('@') {
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()
    } else if s.starts_with('/') {
        std::os::unix::net::SocketAddr::from_pathname(s).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("oxit-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_vars(
            Some(path.display().to_string()),
            Some("2000000".into()),
            None,
            1,
        );
        assert_eq!(n.watchdog_every(), Some(Duration::from_secs(1)));
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_socket_no_watchdog_and_other_pids_watchdog_is_not_ours() {
        let n = Notifier::from_vars(None, Some("1000".into()), None, 1);
        assert_eq!(n.watchdog_every(), None);
        n.notify("READY=1");
        let n = Notifier::from_vars(Some("@x".into()), Some("1000".into()), Some("2".into()), 1);
        assert_eq!(n.watchdog_every(), None);
        let n = Notifier::from_vars(Some("@x".into()), Some("1000".into()), Some("1".into()), 1);
        assert_eq!(n.watchdog_every(), Some(Duration::from_micros(500)));
        assert!(parse_addr("relative").is_none());
    }
}
