//! A dnsmasq guard: an authoritative-enough DNS server for one test name.
//!
//! dnsmasq (Debian `dnsmasq-base`) runs in the foreground on 127.0.0.1 and a
//! free port, forwards nothing (`--no-resolv`, no upstream), reads no
//! `/etc/hosts`, and answers [`Dnsmasq::NAME`] with an A and an AAAA record.
//! Killed by PID on Drop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{HarnessError, free_udp_port, io_err, kill_child, require_program, tail, wait_until};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// The running dnsmasq.
pub struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// The name served.
    pub const NAME: &'static str = "interop.oxit.test";
    /// Its A record.
    pub const V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 42);
    /// Its AAAA record.
    pub const V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x42);

    /// Start dnsmasq and wait (≤ 10 s) until it answers [`Self::NAME`].
    ///
    /// The port is one that was free for UDP a moment ago; dnsmasq also
    /// listens on TCP there, and another test's connection may hold that
    /// TCP port (or take the UDP one) in between. dnsmasq then exits with
    /// "Address already in use", and another port is tried.
    pub fn start() -> Result<Self, HarnessError> {
        let mut last = None;
        for _ in 0..5 {
            match Self::start_once() {
                Err(HarnessError::NotReady { detail, .. })
                    if detail.contains("Address already in use") =>
                {
                    last = Some(detail);
                }
                other => return other,
            }
        }
        Err(HarnessError::NotReady {
            program: "dnsmasq".into(),
            detail: last.unwrap_or_default(),
        })
    }

    fn start_once() -> Result<Self, HarnessError> {
        require_program(DNSMASQ, "dnsmasq-base")?;
        let dir = tempfile::tempdir().map_err(io_err("dnsmasq temp dir"))?;
        let log: PathBuf = dir.path().join("dnsmasq.log");
        let log_file = std::fs::File::create(&log).map_err(io_err("dnsmasq log file"))?;
        let log_err = log_file.try_clone().map_err(io_err("dnsmasq log file"))?;
        let port = free_udp_port()?;
        let mut cmd = Command::new(DNSMASQ);
        cmd.arg("--no-daemon")
            .arg("--conf-file=/dev/null") // ignore /etc/dnsmasq.conf
            .arg(format!("--port={port}"))
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!(
                "--host-record={},{},{}",
                Self::NAME,
                Self::V4,
                Self::V6
            ))
            .arg("--log-queries")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        // As root, dnsmasq would switch to user "nobody", which may not be
        // able to write its pid file in our temp dir.
        if is_root() {
            cmd.arg("--user=root");
        }
        let mut child = cmd.spawn().map_err(io_err(format!("spawn {DNSMASQ}")))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let ready = wait_until(
            "dnsmasq",
            &mut child,
            Duration::from_secs(10),
            || query_a(addr, Self::NAME).is_some_and(|ips| ips.contains(&IpAddr::V4(Self::V4))),
            || tail(&log, 20),
        );
        let mut me = Self {
            child,
            addr,
            _dir: dir,
        };
        if let Err(e) = ready {
            kill_child(&mut me.child);
            return Err(e);
        }
        Ok(me)
    }

    /// Where it answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// One A query over UDP (≤ 300 ms); the IPv4 answers, or None on any failure.
pub fn query_a(server: SocketAddr, name: &str) -> Option<Vec<IpAddr>> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    // Header: id, flags=RD, 1 question.
    let mut q = vec![0x4f, 0x58, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).ok()?);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, QTYPE A, QCLASS IN
    sock.send_to(&q, server).ok()?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).ok()?;
    let resp = buf.get(..n)?;
    let ancount = u16::from_be_bytes([*resp.get(6)?, *resp.get(7)?]);
    // Skip the echoed question.
    let mut pos = q.len();
    let mut out = Vec::new();
    for _ in 0..ancount {
        // Name: a compression pointer (2 bytes) or labels.
        if resp.get(pos)? & 0xC0 == 0xC0 {
            pos += 2;
        } else {
            while *resp.get(pos)? != 0 {
                pos += usize::from(*resp.get(pos)?) + 1;
            }
            pos += 1;
        }
        let rtype = u16::from_be_bytes([*resp.get(pos)?, *resp.get(pos + 1)?]);
        let rdlen = usize::from(u16::from_be_bytes([
            *resp.get(pos + 8)?,
            *resp.get(pos + 9)?,
        ]));
        let rdata = resp.get(pos + 10..pos + 10 + rdlen)?;
        if rtype == 1 && rdlen == 4 {
            out.push(IpAddr::V4(Ipv4Addr::new(
                rdata[0], rdata[1], rdata[2], rdata[3],
            )));
        }
        pos += 10 + rdlen;
    }
    Some(out)
}
