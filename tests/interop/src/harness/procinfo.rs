//! What `/proc` says about a process the tests started: open file
//! descriptors, resident memory, CPU time (the baselines of the attack
//! tests and the soak's samples).

/// Open file descriptors of `pid` (0 if it is gone).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in KiB.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// User plus system CPU time of `pid`, in clock ticks (USER_HZ, 100 on
/// Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses: utime
    // and stime are fields 14 and 15 of stat, 11 and 12 of these.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    t(11).saturating_add(t(12))
}

/// One socket a process holds, as `/proc/PID/net/{tcp,tcp6,udp,udp6,unix,
/// netlink}` lists it; `listed: false` for a socket no table lists (such as
/// a TCP socket already closed but not yet released).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketInfo {
    pub inode: u64,
    pub listed: bool,
    pub proto: &'static str,
    pub local: Option<std::net::SocketAddr>,
    pub remote: Option<std::net::SocketAddr>,
    /// The kernel's state number (TCP: 1 established, 8 close-wait, ...).
    pub state: u8,
}

/// Every socket descriptor of `pid`, with its addresses where the kernel
/// lists them: what a leak check needs to tell a leaked client connection
/// from the relay's own short-lived sockets.
pub fn sockets(pid: u32) -> Vec<SocketInfo> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: Vec<u64> = dir
        .filter_map(|e| {
            let target = std::fs::read_link(e.ok()?.path()).ok()?;
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    let mut table = std::collections::HashMap::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(l), Some(r), Some(st), Some(ino)) = (f.get(1), f.get(2), f.get(3), f.get(9))
            else {
                continue;
            };
            let Ok(ino) = ino.parse::<u64>() else {
                continue;
            };
            let state = u8::from_str_radix(st, 16).unwrap_or(0);
            table.insert(ino, (proto, parse_proc_addr(l), parse_proc_addr(r), state));
        }
    }
    // Unix and netlink sockets: listed, with no address.
    for (proto, col) in [("unix", 6), ("netlink", 9)] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            if let Some(Ok(ino)) = line.split_whitespace().nth(col).map(str::parse::<u64>) {
                table.insert(ino, (proto, None, None, 0));
            }
        }
    }
    inodes
        .into_iter()
        .map(|inode| match table.get(&inode) {
            Some(&(proto, local, remote, state)) => SocketInfo {
                inode,
                listed: true,
                proto,
                local,
                remote,
                state,
            },
            None => SocketInfo {
                inode,
                listed: false,
                proto: "?",
                local: None,
                remote: None,
                state: 0,
            },
        })
        .collect()
}

/// `0100007F:2328` (IPv4) or 32 hex digits and a port (IPv6), as the
/// kernel prints them: each 32-bit word in host (little-endian) order.
fn parse_proc_addr(s: &str) -> Option<std::net::SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(8 * i..8 * i + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses() {
        assert_eq!(
            parse_proc_addr("0100007F:2328"),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
    }

    /// This process's own listening socket shows up with its address.
    #[test]
    fn own_sockets() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        let mine = sockets(std::process::id());
        assert!(
            mine.iter().any(|s| s.listed && s.local == Some(at)),
            "{mine:?}"
        );
    }
}
