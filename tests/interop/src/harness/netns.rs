//! A private network namespace for the calling thread, with narrow TCP
//! buffers.
//!
//! On loopback the kernel's socket buffers (up to 4 MiB per socket by
//! default) can absorb a flood and hide what the relay itself holds. A
//! test that measures the relay's own limits moves its thread into a new
//! network namespace first: every socket the thread opens afterwards, and
//! every process and thread it starts, lives there, on a loopback of its
//! own whose `net.ipv4.tcp_wmem` the test sets. The namespace goes away
//! when its last process and socket do. Needs root (CI runs as root).

use std::process::Command;

use super::HarnessError;

/// Move the calling thread into a new network namespace, bring its
/// loopback up, and cap automatic TCP send buffers at `wmem_max` bytes.
pub fn isolate_thread_network(wmem_max: u32) -> Result<(), HarnessError> {
    let fail = |detail: String| HarnessError::NotReady {
        program: "network namespace".into(),
        detail,
    };
    // SAFETY: unshare only changes this thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(fail(format!(
            "unshare(CLONE_NEWNET): {} (the test needs root)",
            std::io::Error::last_os_error()
        )));
    }
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| fail(format!("ip (Debian package iproute2): {e}")))?;
    if !up.success() {
        return Err(fail(format!("ip link set lo up: {up}")));
    }
    let min = wmem_max.min(4096);
    set_thread_net_sysctl("ipv4/tcp_wmem", &format!("{min} {min} {wmem_max}"))
}

/// Set `net.<name>` (e.g. `ipv4/tcp_rmem`) in the calling thread's network
/// namespace: /proc/sys/net shows the namespace of the thread that opens
/// it.
pub fn set_thread_net_sysctl(name: &str, value: &str) -> Result<(), HarnessError> {
    std::fs::write(format!("/proc/thread-self/net/../../sys/net/{name}"), value)
        .or_else(|_| std::fs::write(format!("/proc/sys/net/{name}"), value))
        .map_err(|e| HarnessError::NotReady {
            program: "network namespace".into(),
            detail: format!("setting net.{name}: {e}"),
        })
}
