//! Link handshakes that never finish, against C tor 0.4.9 and oxit (both
//! io backends) side by side: a ClientHello and then silence, TLS done and
//! no VERSIONS, VERSIONS and no NETINFO, and VERSIONS held back behind
//! 65,535-byte VPADDING cells (which C allows before VERSIONS:
//! channeltls.c:command_allowed_before_handshake).
//!
//! oxit closes an inbound connection whose handshake has not finished
//! after 60 s (channel/timers.rs HANDSHAKE_LIMIT). C tor closes it once
//! nothing was written to it for `KeepalivePeriod`, 5 minutes
//! (mainloop.c:run_connection_housekeeping, "Expiring non-open OR
//! connection"): the test watches for 75 s, so C's connections are still
//! open at the end. Meanwhile a quiet client is served, and once the
//! attacker is gone each relay's file descriptors return to where they
//! were.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxit_interop::harness::{IoBackend, OxitOptions, OxitProcess, TorProcess, TorRole};
use oxit_interop::harness::{SocketInfo, sockets};
use oxit_interop::rawclient::{RawClient, tcp_connect};

const STEP: Duration = Duration::from_secs(10);
/// How long the connections are watched.
const WATCH: Duration = Duration::from_secs(75);
/// oxit's bound on an unfinished handshake, and the slack the check allows
/// (oxit looks at its timers four times a second; the machine is shared).
const OXIT_LIMIT: Duration = Duration::from_secs(60);
const SLACK: Duration = Duration::from_secs(8);
/// VPADDING cells sent before going silent.
const VPADDINGS: usize = 40;

#[derive(Clone, Copy, Debug)]
enum Case {
    ClientHelloOnly,
    TlsNoVersions,
    VersionsNoNetinfo,
    VpaddingBeforeVersions,
}

const CASES: [Case; 4] = [
    Case::ClientHelloOnly,
    Case::TlsNoVersions,
    Case::VersionsNoNetinfo,
    Case::VpaddingBeforeVersions,
];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::ClientHelloOnly => "a ClientHello, then silence",
            Case::TlsNoVersions => "TLS completed, no VERSIONS",
            Case::VersionsNoNetinfo => "VERSIONS, then no NETINFO",
            Case::VpaddingBeforeVersions => "40 VPADDING of 65,535 bytes before VERSIONS",
        }
    }
}

/// One hostile connection, kept open by the test.
enum Held {
    Tcp(TcpStream),
    Raw(Box<RawClient>),
}

impl Held {
    fn open(case: Case, addr: SocketAddr) -> Held {
        match case {
            Case::ClientHelloOnly => {
                let mut s = tcp_connect(addr, None, STEP).expect("connect");
                let cfg = oxit::runtime::tls::client_config().expect("TLS config");
                let name = rustls::pki_types::ServerName::try_from("www.example.com").unwrap();
                let mut tls = rustls::ClientConnection::new(Arc::clone(&cfg), name).unwrap();
                let mut hello = Vec::new();
                tls.write_tls(&mut hello).expect("ClientHello");
                s.write_all(&hello).expect("send ClientHello");
                Held::Tcp(s)
            }
            Case::TlsNoVersions => Held::Raw(Box::new(RawClient::connect_tls(addr).expect("TLS"))),
            Case::VersionsNoNetinfo => {
                let mut c = RawClient::connect_tls(addr).expect("TLS");
                c.send_versions(&[4, 5]).expect("VERSIONS");
                Held::Raw(Box::new(c))
            }
            Case::VpaddingBeforeVersions => {
                let mut c = RawClient::connect_tls(addr).expect("TLS");
                // A variable-length cell before VERSIONS has a 2-byte
                // circuit ID: [0, 0], command 128, length 65535.
                let mut cell = vec![0, 0, 128, 0xff, 0xff];
                cell.resize(5 + 65535, 0);
                for _ in 0..VPADDINGS {
                    if c.send_raw(&cell).is_err() {
                        break;
                    }
                }
                Held::Raw(Box::new(c))
            }
        }
    }

    /// Our end of the connection.
    fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Held::Tcp(s) => s.local_addr().ok(),
            Held::Raw(c) => c.local_addr(),
        }
    }

    /// Whether the relay closed it (without waiting).
    fn closed(&mut self) -> bool {
        match self {
            Held::Tcp(s) => {
                s.set_nonblocking(true).ok();
                let mut b = [0u8; 4096];
                loop {
                    match s.read(&mut b) {
                        Ok(0) => return true,
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                        Err(_) => return true,
                    }
                }
            }
            Held::Raw(c) => c.wait_closed(Duration::from_millis(1)).unwrap_or(true),
        }
    }
}

enum Relay {
    CTor(TorProcess),
    Oxit(OxitProcess),
}

impl Relay {
    fn addr(&self) -> SocketAddr {
        match self {
            Relay::CTor(t) => t.or_addr(),
            Relay::Oxit(o) => o.or_addr(),
        }
    }
    fn pid(&self) -> u32 {
        match self {
            Relay::CTor(t) => t.pid(),
            Relay::Oxit(o) => o.pid(),
        }
    }
}

/// Open every case's connection to `relay`, watch them for [`WATCH`],
/// and return when each closed (`None`: still open at the end).
fn watch(relay: &Relay) -> Vec<Option<Duration>> {
    let addr = relay.addr();
    let before: Vec<u64> = sockets(relay.pid()).iter().map(|s| s.inode).collect();
    let start = Instant::now();
    let mut held: Vec<Held> = CASES.iter().map(|c| Held::open(*c, addr)).collect();
    let ours: Vec<SocketAddr> = held.iter().filter_map(Held::local_addr).collect();
    assert_eq!(
        ours.len(),
        CASES.len(),
        "every held connection has an address"
    );
    let mut closed: Vec<Option<Duration>> = vec![None; CASES.len()];
    let mut quiet_checked = false;
    let mut seen_checked = false;
    while start.elapsed() < WATCH {
        if !seen_checked && start.elapsed() > Duration::from_secs(2) {
            // The relay's ends of our connections are visible, so the
            // leak check at the end can see one that stays.
            seen_checked = true;
            let seen = sockets(relay.pid())
                .iter()
                .filter(|s| s.remote.is_some_and(|r| ours.contains(&r)))
                .count();
            assert!(seen > 0, "no socket of the relay is connected to {ours:?}");
        }
        for (i, h) in held.iter_mut().enumerate() {
            if closed[i].is_none() && h.closed() {
                closed[i] = Some(start.elapsed());
            }
        }
        if !quiet_checked && start.elapsed() > Duration::from_secs(30) {
            quiet_checked = true;
            let mut q = RawClient::connect(addr).expect("a quiet client connects meanwhile");
            q.create_fast(STEP).expect("and gets a circuit");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(held);
    // No descriptor of the relay may still hold one of these connections:
    // none connected to one of our ends, and no new socket the kernel no
    // longer lists (a TCP socket closed but never released). The relay's
    // own sockets meanwhile (the dummy authority's fetch retries, DNS) are
    // neither; a count of descriptors caught those in CI.
    let deadline = Instant::now() + 3 * STEP;
    loop {
        let leaked: Vec<SocketInfo> = sockets(relay.pid())
            .into_iter()
            .filter(|s| {
                s.remote.is_some_and(|r| ours.contains(&r))
                    || (!s.listed && !before.contains(&s.inode))
            })
            .collect();
        if leaked.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sockets of the held connections still open {} s after they closed: {leaked:?} \
             (our ends: {ours:?}; all: {:?})",
            (3 * STEP).as_secs(),
            sockets(relay.pid())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    closed
}

#[test]
fn unfinished_handshakes() {
    let ctor = std::thread::spawn(|| {
        let r = Relay::CTor(TorProcess::start(TorRole::Middle).expect("start C tor"));
        watch(&r)
    });
    let epoll = std::thread::spawn(|| {
        let r = Relay::Oxit(OxitProcess::start(&OxitOptions::new(IoBackend::Epoll)).expect("oxit"));
        watch(&r)
    });
    let uring = {
        let r = Relay::Oxit(OxitProcess::start(&OxitOptions::new(IoBackend::Uring)).expect("oxit"));
        watch(&r)
    };
    let ctor = ctor.join().expect("C tor thread");
    let epoll = epoll.join().expect("epoll thread");
    let show = |d: &Option<Duration>| {
        d.map_or(format!("open at {} s", WATCH.as_secs()), |d| {
            format!("closed after {:.0} s", d.as_secs_f64())
        })
    };
    let mut table = String::from(
        "| case | C tor 0.4.9 | oxit (io_uring) | oxit (epoll) |\n|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} |",
            case.name(),
            show(&ctor[i]),
            show(&uring[i]),
            show(&epoll[i])
        );
        for (who, d) in [("io_uring", uring[i]), ("epoll", epoll[i])] {
            match d {
                Some(d) if d + SLACK >= OXIT_LIMIT && d <= OXIT_LIMIT + SLACK => {}
                other => failures.push(format!(
                    "{}: oxit {who}: {} (expected closed after about 60 s)",
                    case.name(),
                    show(&other)
                )),
            }
        }
        if ctor[i].is_some() {
            failures.push(format!(
                "{}: C tor closed it after {} (expected open until KeepalivePeriod)",
                case.name(),
                show(&ctor[i])
            ));
        }
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
