//! oxit as a member of a private Tor network (tests/interop/src/harness/
//! testnet.rs): three C tor 0.4.9 authorities, three C tor relays, a C tor
//! client, and oxit, which publishes itself, is voted into the consensus
//! and is then chosen by the client on its own as its exit: no hop is
//! described by hand, the client reads everything from the authorities.
//!
//! One network per I/O backend, each checked for everything at once so the
//! suite pays for a network's start only twice. On 127.0.0.1 only: every
//! torrc names the network's own authorities.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use oxit_interop::client::{self, Handshake};
use oxit_interop::harness::arti::ArtiProcess;
use oxit_interop::harness::socks::{self, Target};
use oxit_interop::harness::testnet::wait_log;
use oxit_interop::harness::{
    Dnsmasq, HttpServer, IoBackend, Testnet, TestnetOptions, TorProcess, TorRole, body_for,
    sha256_hex,
};

/// Bound on each network step on a loaded 2-core machine.
const STEP: Duration = Duration::from_secs(120);
/// oxit's exit policy rejects this port: no exit of the network allows it.
const REJECTED_PORT: u16 = 9;
/// Relay END reasons (tor-spec §6.3).
const END_MISC: u8 = 1;
const END_CONNECTREFUSED: u8 = 3;

fn check_body(body: &[u8], n: usize, what: &str) {
    assert_eq!(body.len(), n, "{what}: length");
    assert_eq!(sha256_hex(body), sha256_hex(&body_for(n)), "{what}: sha256");
}

/// `GET /bytes/<n>` through the client, with a few tries: right after
/// bootstrap a C client may still be waiting for a circuit.
fn get(
    net: &Testnet,
    socks_addr: std::net::SocketAddr,
    target: Target<'_>,
    port: u16,
    n: usize,
    what: &str,
) {
    get_via(net, socks_addr, target, port, n, what, &|| net.client.log());
}

/// [`get`] through a client whose log is `client_log` (printed on failure).
fn get_via(
    net: &Testnet,
    socks_addr: std::net::SocketAddr,
    target: Target<'_>,
    port: u16,
    n: usize,
    what: &str,
    client_log: &dyn Fn() -> String,
) {
    let deadline = Instant::now() + STEP;
    loop {
        match socks::http_get(
            socks_addr,
            target.clone(),
            port,
            &format!("/bytes/{n}"),
            STEP,
        ) {
            Ok(body) => return check_body(&body, n, what),
            Err(e) if Instant::now() < deadline => {
                eprintln!("{what}: {e}; trying again");
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => panic!(
                "{what}: {e}\n--- the authorities' consensus (r and s lines) ---\n{}\n\
                 --- oxit log ---\n{}\n--- client log ---\n{}",
                consensus_flags(net),
                net.oxit.log_tail(40),
                client_log()
            ),
        }
    }
}

/// Who the consensus lists and with which flags: a client that cannot
/// build a path usually lost its guards or exits there.
fn consensus_flags(net: &Testnet) -> String {
    net.consensus_text()
        .map(|t| {
            t.lines()
                .filter(|l| l.starts_with("r ") || l.starts_with("s ") || l.starts_with("valid-"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|| "(none cached)".into())
}

/// A C tor relay's data directory, with every key C tor makes, for oxit to
/// take over; returns it with its fingerprint.
fn c_tor_keys(root: &std::path::Path) -> (std::path::PathBuf, String) {
    let dir = root.join("migrated");
    std::fs::create_dir_all(&dir).unwrap();
    let empty = root.join("empty-torrc");
    std::fs::write(&empty, "").unwrap();
    let out = std::process::Command::new("/usr/bin/tor")
        .args(["--list-fingerprint", "--defaults-torrc"])
        .arg(&empty)
        .arg("-f")
        .arg(&empty)
        .arg("--DataDirectory")
        .arg(&dir)
        .args(["--ORPort", "127.0.0.1:1", "--Nickname", "migrated"])
        .args([
            "--DirAuthority",
            "dummy orport=1 no-v2 v3ident=0000000000000000000000000000000000000000 \
             127.0.0.1:1 0000000000000000000000000000000000000000",
        ])
        .output()
        .expect("run tor --list-fingerprint");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let fp = std::fs::read_to_string(dir.join("fingerprint")).unwrap();
    let fp = fp.split_whitespace().nth(1).unwrap().to_owned();
    (dir, fp)
}

fn private_network(backend: IoBackend, migrate_c_keys: bool, family: bool) {
    // One network at a time: each is a dozen tor processes voting every
    // 10 s, and two at once on a loaded 2-core machine have left a
    // client without a usable path for minutes.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dns = Dnsmasq::start().expect("start dnsmasq");
    let http = HttpServer::start().expect("start HTTP server");
    // Reached by the name only dnsmasq knows (it resolves to 127.0.0.42).
    let named = HttpServer::start_on(Dnsmasq::V4).expect("start HTTP server on the test name");
    // A port only the C exit allows: there, oxit can only be a middle.
    let c_only = HttpServer::start().expect("start HTTP server for the C exit");
    let scratch = tempfile::tempdir().unwrap();
    let mut opts = TestnetOptions::new(backend);
    opts.dns = Some(dns.addr());
    opts.rejected_port = Some(REJECTED_PORT);
    opts.c_exit_port = Some(c_only.addr().port());
    opts.oxit_family = family;
    // Debug: the log says which circuits negotiated congestion control.
    opts.oxit_debug = true;
    let migrated = migrate_c_keys.then(|| c_tor_keys(scratch.path()));
    if let Some((dir, _)) = &migrated {
        opts.oxit_data_dir = Some(dir.clone());
    }
    let t0 = Instant::now();
    let mut net = Testnet::start(&opts).expect("start the test network");
    let started = t0.elapsed();

    // The authorities take oxit's descriptor and vote it in.
    let entry = net
        .wait_for_oxit(&["Running", "Valid", "Exit", "Fast", "Stable"], STEP)
        .expect("oxit in the consensus");
    let listed = t0.elapsed();
    eprintln!(
        "[{backend:?}] network started in {:.1} s; the consensus lists oxit {:.1} s after the start:\n{entry}",
        started.as_secs_f64(),
        listed.as_secs_f64()
    );
    assert!(
        entry.contains(&format!("\npr {}\n", oxit::dir::descriptor::PROTOCOLS)),
        "{entry}"
    );
    assert!(
        entry.lines().any(|l| l.starts_with("w Bandwidth=")),
        "{entry}"
    );
    for a in &net.authorities {
        let log = a.log();
        assert!(
            !log.contains("Rejected router descriptor"),
            "{}: {log}",
            a.name
        );
    }
    assert!(
        net.oxit.log_lines("accepted our descriptor").len() >= 3,
        "{}",
        net.oxit.log_tail(40)
    );
    // Before publishing, the consensus came from a C relay over BEGIN_DIR.
    assert!(
        !net.oxit
            .log_lines("consensus from directory mirror")
            .is_empty(),
        "{}",
        net.oxit.log_tail(60)
    );
    if let Some((_, fp)) = &migrated {
        assert_eq!(
            &net.oxit.fingerprint, fp,
            "oxit keeps the C tor relay's identity"
        );
    }
    // The happy-family certificate checked out: the authorities put the
    // family id into oxit's microdescriptor, with its `family` line.
    if let Some(id) = &net.oxit_family_id {
        let deadline = Instant::now() + STEP;
        while !net
            .microdescriptors()
            .contains(&format!("family-ids ed25519:{id}"))
        {
            assert!(
                Instant::now() < deadline,
                "no family-ids ed25519:{id} in the authorities' microdescriptors"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(
            net.microdescriptors()
                .contains(&format!("${}", net.relays[0].fingerprint)),
            "MyFamily in the microdescriptor's family line"
        );
    }

    // Arti, with its own directory code, bootstraps meanwhile.
    let arti_dir = scratch.path().join("arti");
    let arti = std::thread::scope(|sc| {
        let arti = sc.spawn(|| ArtiProcess::start(&net, &arti_dir, STEP));
        net.wait_for_client(STEP).expect("the client bootstraps");
        arti.join().expect("arti thread")
    })
    .expect("arti bootstraps from the network's authorities");
    let s = net.socks;
    let lo = Target::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST));
    // The client picks oxit itself: it is the only exit for these ports.
    get(
        &net,
        s,
        lo.clone(),
        http.addr().port(),
        20 << 20,
        "20 MiB through the client",
    );
    // oxit advertises FlowCtrl=2 and Relay=5-6, so the C tor client asked
    // for congestion control and CGO on its exit circuit, and got both:
    // the 20 MiB above went over CGO.
    let negotiated = net.oxit.log_lines("congestion control negotiated");
    assert!(
        negotiated.iter().any(|l| l.contains("crypto=CGO")),
        "{negotiated:?}\n{}",
        net.oxit.log_tail(60)
    );
    eprintln!(
        "[{backend:?}] oxit's log of what the C tor client negotiated: {}",
        negotiated.first().map_or("", |l| l.as_str())
    );
    // Conflux: oxit is Stable and says Conflux=1, so the client builds
    // linked sets of two legs to it ahead of time and puts its streams on
    // them; oxit sends each cell on the leg of lowest RTT with room, and
    // says so with a SWITCH when that changes. Its two workers each take
    // some legs; a leg whose set the other worker holds moves there.
    // The client links sets of two legs ahead of time and puts a stream
    // on one it has not used for other streams' isolation; when none is
    // ready it takes a plain circuit, so the download is tried again (at
    // most four times) until one lands on a set. A set's download moves to
    // the second leg only when the first has no room or measures slower:
    // when the client reads slower than the path (its XOFFs keep the
    // window from filling, as on this loaded machine in CI), C tor's exit
    // too keeps one leg. The switching itself is checked without sockets
    // (proto::circuit::conflux_tests); here, the count is reported.
    let deadline = Instant::now() + STEP;
    while !net
        .oxit
        .log_lines("conflux leg linked")
        .iter()
        .any(|l| l.contains("legs=2"))
    {
        assert!(
            Instant::now() < deadline,
            "the client linked no two legs through oxit:\n{}",
            net.oxit.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let on_sets = || net.oxit.log_lines("exit stream on a conflux set").len();
    let switches = || net.oxit.log_lines("conflux switch:").len();
    let mut landed = None;
    for attempt in 1..=4 {
        let (streams, before) = (on_sets(), switches());
        get(
            &net,
            s,
            lo.clone(),
            http.addr().port(),
            10 << 20,
            &format!("10 MiB, attempt {attempt} at a conflux set"),
        );
        if on_sets() > streams {
            landed = Some((attempt, switches() - before));
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let Some((attempt, used)) = landed else {
        panic!(
            "four downloads, none on a conflux set:\n{}",
            net.oxit.log_tail(60)
        );
    };
    eprintln!(
        "[{backend:?}] conflux: {} legs linked, {} handed to the other worker; \
         {used} leg switches in the 10 MiB download (attempt {attempt})",
        net.oxit.log_lines("conflux leg linked").len(),
        net.oxit.log_lines("handed to the worker of its set").len()
    );
    std::thread::scope(|sc| {
        for i in 0..20 {
            let n = 50_000 + i * 7919;
            let port = http.addr().port();
            let net = &net;
            let lo = lo.clone();
            sc.spawn(move || get(net, s, lo, port, n, &format!("stream {i} of 20")));
        }
    });
    get(
        &net,
        s,
        Target::Name(Dnsmasq::NAME),
        named.addr().port(),
        100_000,
        "by a name only dnsmasq resolves",
    );
    // No exit allows the rejected port: the client cannot open the stream.
    let e = socks::http_get(s, lo.clone(), REJECTED_PORT, "/", STEP)
        .expect_err("a port oxit's policy rejects must fail at the client");
    assert!(e.reply_code().is_some(), "{e}");
    // tor-resolve through the client: oxit's resolver answers.
    let out = std::process::Command::new("/usr/bin/tor-resolve")
        .arg("-5")
        .arg(Dnsmasq::NAME)
        .arg(s.to_string())
        .output()
        .expect("run tor-resolve");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        Dnsmasq::V4.to_string(),
        "tor-resolve: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // RefuseUnknownExits (auto, the consensus says 1): BEGIN over a circuit
    // from a relay the consensus lists works; from an authenticated relay it
    // does not list, END MISC.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let oxit_hop =
        client::HopSpec::from_c_tor_data_dir(&net.oxit.data_dir, net.oxit.or_addr, Handshake::Ntor)
            .expect("oxit hop");
    let listed_hop = client::HopSpec::from_c_tor_data_dir(
        &net.relays[1].dir,
        net.relays[1].or_addr,
        Handshake::Ntor,
    )
    .expect("relay hop");
    let unlisted = TorProcess::start(TorRole::Middle).expect("start an unlisted C relay");
    let unlisted_hop = unlisted.hop(Handshake::Ntor).expect("unlisted hop");
    let port = http.addr().port();
    rt.block_on(async {
        let t = tokio::time::timeout(
            STEP,
            client::build_circuit(&[listed_hop.clone(), oxit_hop.clone()]),
        )
        .await
        .expect("in time")
        .expect("circuit through a listed relay");
        let body =
            tokio::time::timeout(STEP, client::http_get(&t, "127.0.0.1", port, "/bytes/1000"))
                .await
                .expect("in time")
                .expect("BEGIN from a listed relay");
        check_body(&body, 1000, "through a listed relay");
        // Network re-entry: a relay's ORPort is refused at the exit (the C
        // client would not even ask: it refuses such streams itself).
        let relay0 = net.relays[0].or_addr;
        let err = tokio::time::timeout(
            STEP,
            client::http_get(&t, &relay0.ip().to_string(), relay0.port(), "/"),
        )
        .await
        .expect("in time")
        .expect_err("oxit must refuse to connect to a relay's ORPort");
        assert_eq!(err.end_reason(), Some(END_CONNECTREFUSED), "{err}");
        // tor-proto as a congestion-controlled client: told oxit's own
        // protocols it asks for CC and CGO; without Relay=5-6, for CC on
        // tor1. oxit's log says what each circuit got.
        let tor1_cc = oxit::dir::descriptor::PROTOCOLS.replace("Relay=2-6", "Relay=2-4");
        for (protocols, crypto) in [
            (oxit::dir::descriptor::PROTOCOLS, "crypto=CGO"),
            (tor1_cc.as_str(), "crypto=tor1"),
        ] {
            let before = net.oxit.log_lines(crypto).len();
            let hop = oxit_hop
                .clone()
                .with_handshake(Handshake::NtorV3Cc)
                .with_protocols(protocols);
            let t = tokio::time::timeout(STEP, client::build_circuit(&[listed_hop.clone(), hop]))
                .await
                .expect("in time")
                .unwrap_or_else(|e| panic!("tor-proto circuit asking {crypto}: {e}"));
            let n = 3 << 20;
            let body = tokio::time::timeout(
                STEP,
                client::http_get(&t, "127.0.0.1", port, &format!("/bytes/{n}")),
            )
            .await
            .expect("in time")
            .unwrap_or_else(|e| panic!("download over tor-proto with {crypto}: {e}"));
            check_body(
                &body,
                n,
                &format!("tor-proto with congestion control, {crypto}"),
            );
            assert!(
                net.oxit.log_lines(crypto).len() > before,
                "oxit negotiated no {crypto} circuit for tor-proto:\n{}",
                net.oxit.log_tail(40)
            );
        }
        let t = tokio::time::timeout(STEP, client::build_circuit(&[unlisted_hop, oxit_hop]))
            .await
            .expect("in time")
            .expect("circuit through an unlisted relay");
        let err = tokio::time::timeout(STEP, client::http_get(&t, "127.0.0.1", port, "/bytes/10"))
            .await
            .expect("in time")
            .expect_err("BEGIN from a relay not in the consensus must be refused");
        assert_eq!(err.end_reason(), Some(END_MISC), "{err}");
    });

    // The same download through Arti: it too picks oxit as its exit.
    get_via(
        &net,
        arti.socks(),
        lo.clone(),
        http.addr().port(),
        20 << 20,
        "20 MiB through Arti",
        &|| arti.log_tail(60),
    );
    drop(arti);

    // oxit as a middle: a second client whose middles can only be oxit,
    // whose exits only the C exit, and whose guards the C relays; the
    // client builds the path itself from what the authorities publish.
    let cexit_fp = net.c_exit.as_ref().map(|c| c.fingerprint.clone()).unwrap();
    net.wait_for_relay(&cexit_fp, &["Running", "Valid"], STEP)
        .expect("the C exit in the consensus");
    let (c2, s2) = net
        .add_client(
            "client2",
            // With MiddleNodes alone, C tor would count guards among those
            // middles only (nodelist.c:compute_frac_paths_available).
            // ExitNodes: its predicted circuits would otherwise pick oxit
            // as their exit, and then find no middle.
            &format!(
                "MiddleNodes {}\nExitNodes {cexit_fp}\nEntryNodes {}\n",
                net.oxit.fingerprint,
                net.relays
                    .iter()
                    .map(|r| r.fingerprint.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        )
        .expect("start the second client");
    wait_log(&c2, "Bootstrapped 100%", STEP).expect("the second client bootstraps");
    get(
        &net,
        s2,
        lo,
        c_only.addr().port(),
        5 << 20,
        "5 MiB with oxit as the middle",
    );
    drop(c2);
    assert!(net.stop_oxit(), "oxit must exit 0 on SIGTERM");
    bandwidth_history_is_saved(&mut net);
}

/// oxit leaves its bandwidth history in `DataDirectory/state` as C tor
/// does, and reads the state file a C relay writes.
fn bandwidth_history_is_saved(net: &mut Testnet) {
    use oxit::control::state::StateFile;
    use oxit::dir::bwhist::BwHistory;
    let now = oxit::dir::time::unix(std::time::SystemTime::now());
    let ours = std::fs::read_to_string(net.oxit.data_dir.join("state")).expect("oxit's state file");
    let state = StateFile::parse(&ours);
    assert!(
        state
            .get("TorVersion")
            .is_some_and(|v| v.starts_with("oxit ")),
        "{ours}"
    );
    // Every byte of the downloads went out through oxit this (first) day.
    let written: u64 = state
        .get("BWHistoryWriteValues")
        .and_then(|v| v.rsplit(',').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no write history in oxit's state file:\n{ours}"));
    assert!(written >= 20 << 20, "{ours}");
    BwHistory::from_state(|k| state.get(k), now).expect("oxit reads its own state file");

    let relay = &mut net.relays[0];
    let stopped = relay.stop();
    let log = relay.log();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    assert!(
        stopped,
        "the C relay exits 0 on SIGTERM; its log, newest first:\n{}",
        tail.join("\n")
    );
    let theirs = std::fs::read_to_string(relay.dir.join("state")).expect("the C relay's state");
    let state = StateFile::parse(&theirs);
    assert!(state.get("BWHistoryReadValues").is_some(), "{theirs}");
    BwHistory::from_state(|k| state.get(k), now).expect("oxit reads a C relay's state file");
}

#[test]
fn private_network_io_uring() {
    private_network(IoBackend::Uring, true, false);
}

#[test]
fn private_network_epoll() {
    private_network(IoBackend::Epoll, false, true);
}
