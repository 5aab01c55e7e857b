//! The sans-IO resolver against a real nameserver: Debian's dnsmasq on
//! 127.0.0.1, driven over a real UDP socket by a small blocking loop (the
//! part the worker's driver plays in the relay). Checks A, AAAA, NXDOMAIN,
//! "no data" and PTR answers as a real server encodes them.
//!
//! Needs /usr/sbin/dnsmasq (package dnsmasq-base); fails loudly without it.

use std::fs;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oxit::exit::dns::{
    Answer, Purpose, Query, QueryKind, ResolveError, Resolver, ResolverConfig, classify_address,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// Kills dnsmasq (by its PID) when the test ends, even on failure.
struct Dnsmasq {
    child: Child,
    dir: PathBuf,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A port free for UDP and for TCP: dnsmasq binds both, and a port free
/// only for UDP can be a busy machine's TCP connection's, which makes
/// dnsmasq exit at start and every query time out.
fn free_udp_port() -> u16 {
    for _ in 0..100 {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
        let port = sock.local_addr().expect("local address").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP in 100 tries");
}

fn start_dnsmasq() -> (Dnsmasq, SocketAddr) {
    assert!(
        std::path::Path::new(DNSMASQ).exists(),
        "{DNSMASQ} not found: install the dnsmasq-base package to run this test"
    );
    let dir = std::env::temp_dir().join(format!("oxit-dnsmasq-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("create temp dir");
    let port = free_udp_port();
    let child = Command::new(DNSMASQ)
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            &format!("--port={port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            &format!("--pid-file={}", dir.join("pid").display()),
            &format!("--log-facility={}", dir.join("log").display()),
            // Everything under test.example is answered locally; unknown
            // names there are NXDOMAIN.
            "--local=/test.example/",
            "--address=/wild.test.example/127.0.0.42",
            "--host-record=www.test.example,192.0.2.42,2001:db8::42",
            "--host-record=v4.test.example,192.0.2.43",
            "--local-ttl=120",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {DNSMASQ}: {e} (install dnsmasq-base)"));
    let guard = Dnsmasq { child, dir };
    (guard, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The driver's part: move datagrams and wake on timeouts until `token`
/// has its result.
fn run(
    resolver: &mut Resolver<StdRng>,
    sock: &UdpSocket,
    query: Query,
    token: u64,
) -> Result<Answer, ResolveError> {
    if let Some(done) = resolver.resolve(Instant::now(), query, token) {
        return done;
    }
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    loop {
        let now = Instant::now();
        assert!(now < give_up, "no DNS result for token {token} in 20 s");
        while let Some(tx) = resolver.poll_transmit(now) {
            sock.send_to(&tx.payload, tx.dst).expect("send DNS query");
        }
        if let Some((t, result)) = resolver.poll_event() {
            assert_eq!(t, token);
            return result;
        }
        let wait = resolver
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(100))
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).expect("set read timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => resolver.handle_datagram(Instant::now(), from, &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("recv from resolver socket: {e}"),
        }
        resolver.handle_timeout(Instant::now());
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn resolver_against_dnsmasq() {
    let (_dnsmasq, server) = start_dnsmasq();
    let conf = format!(
        "# test\nnameserver {}\noptions timeout:1 attempts:5\n",
        server.ip()
    );
    let (mut config, _) = ResolverConfig::from_resolv_conf(&conf, "test resolv.conf").unwrap();
    // resolv.conf has no port syntax; dnsmasq listens on a free port.
    config.nameservers = vec![server];
    // Short attempts so the first query rides out dnsmasq's start-up.
    config.timeout = Duration::from_millis(250);
    config.attempts = 40;
    let mut resolver = Resolver::new(config, StdRng::seed_from_u64(u64::from(std::process::id())));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind resolver socket");

    // A (dnsmasq answers host records with --local-ttl: 120 s → clip 300).
    let q = Query::new("WWW.test.example", QueryKind::A).unwrap();
    assert_eq!(
        run(&mut resolver, &sock, q, 1),
        Ok(Answer {
            addrs: vec![ip("192.0.2.42")],
            ttl: 300,
            hostname: None
        })
    );
    // AAAA.
    let q = Query::new("www.test.example", QueryKind::Aaaa).unwrap();
    assert_eq!(
        run(&mut resolver, &sock, q, 2),
        Ok(Answer {
            addrs: vec![ip("2001:db8::42")],
            ttl: 300,
            hostname: None
        })
    );
    // --address wildcard.
    let q = Query::new("foo.wild.test.example", QueryKind::A).unwrap();
    assert_eq!(
        run(&mut resolver, &sock, q, 3).unwrap().addrs,
        vec![ip("127.0.0.42")]
    );
    // NXDOMAIN: permanent.
    let q = Query::new("missing.test.example", QueryKind::A).unwrap();
    let err = run(&mut resolver, &sock, q, 4).unwrap_err();
    assert!(matches!(err, ResolveError::NxDomain { .. }), "{err}");
    assert_eq!(err.resolved_type(), 0xF1);
    // A name with only an IPv4 address: AAAA has no data, and the
    // IPv6-then-IPv4 mode falls back to A.
    let q = Query::new("v4.test.example", QueryKind::Aaaa).unwrap();
    let err = run(&mut resolver, &sock, q, 5).unwrap_err();
    assert!(matches!(err, ResolveError::NoData { .. }), "{err}");
    let q = Query::new("v4.test.example", QueryKind::Ipv6ThenIpv4).unwrap();
    assert_eq!(
        run(&mut resolver, &sock, q, 6).unwrap().addrs,
        vec![ip("192.0.2.43")]
    );
    // PTR from a RESOLVE payload (host records also make PTR records).
    let target = classify_address("42.2.0.192.in-addr.arpa", Purpose::Resolve).unwrap();
    let q = target.query(QueryKind::A).unwrap();
    let answer = run(&mut resolver, &sock, q, 7).unwrap();
    assert_eq!(answer.hostname.as_deref(), Some("www.test.example"));
    assert_eq!(answer.ttl, 300);
    // IPv6 PTR.
    let answer = run(&mut resolver, &sock, Query::reverse(ip("2001:db8::42")), 8).unwrap();
    assert_eq!(answer.hostname.as_deref(), Some("www.test.example"));
    // Cache hit: answered without the network.
    let sent = resolver.stats().queries_sent;
    let q = Query::new("www.test.example", QueryKind::A).unwrap();
    assert!(resolver.resolve(Instant::now(), q, 9).is_some());
    assert_eq!(resolver.stats().queries_sent, sent);
}
