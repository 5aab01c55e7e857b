//! The load generator (`oxit-load`, behind bench/run.sh) against real
//! relays: every scenario, small and short, against oxit on both backends
//! and C tor 0.4.9, with every circuit verified (`--sample-every 1`: each
//! digest checked, each byte compared with the source's pattern). The
//! benchmark's numbers mean something only if the generator talks to both
//! relays correctly; its speed is bench/run.sh's business, not this test's.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use oxit_interop::harness::{
    Dnsmasq, IoBackend, OxitOptions, OxitProcess, TorProcess, TorRole, oxit_load_binary,
};

/// Run one scenario; returns the result line's fields.
fn run(who: &str, relay: SocketAddr, dir: &Path, pid: u32, args: &[&str]) -> Value {
    let bin = oxit_load_binary().expect("oxit-load: cargo build --workspace first");
    let out = Command::new(&bin)
        .arg("run")
        .args(args)
        .args(["--relay", &relay.to_string()])
        .arg("--relay-dir")
        .arg(dir)
        .args(["--relay-pid", &pid.to_string()])
        .args(["--sample-every", "1", "--duration", "2", "--warmup", "0.5"])
        .output()
        .expect("run oxit-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "{who} {args:?}: no result ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let o: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{who}: {e}: {line}"));
    assert_eq!(o["errors"], "", "{who} {args:?}: {line}");
    assert_eq!(o["measured"], true, "{who} {args:?}: {line}");
    assert_eq!(o["content_errors"], 0, "{who} {args:?}: {line}");
    assert_eq!(o["protocol_errors"], 0, "{who} {args:?}: {line}");
    o
}

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// A count that must have moved.
fn positive(v: &Value, what: &str) {
    assert!(n(v) > 0.0, "{what}");
}

/// Every exit scenario against one exit.
fn exit_scenarios(who: &str, relay: SocketAddr, dir: &Path, pid: u32) {
    let base = ["--links", "2", "--circuits", "4", "--probes", "1"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };

    let o = run(
        who,
        relay,
        dir,
        pid,
        &with(&["--scenario", "bulk-down", "--bytes", "1048576"]),
    );
    positive(
        &o["streams_done"],
        &format!("{who} bulk-down: no stream finished"),
    );
    positive(
        &o["bytes_checked"],
        &format!("{who} bulk-down: nothing verified"),
    );
    positive(
        &o["cell_rtt"]["count"],
        &format!("{who} bulk-down: no round trip measured"),
    );

    let o = run(
        who,
        relay,
        dir,
        pid,
        &with(&[
            "--scenario",
            "bulk-up",
            "--bytes",
            "1048576",
            "--streams",
            "2",
        ]),
    );
    positive(
        &o["streams_done"],
        &format!("{who} bulk-up: no upload acknowledged by the sink"),
    );
    positive(&o["bytes_up"], &format!("{who} bulk-up: nothing sent"));

    let o = run(
        who,
        relay,
        dir,
        pid,
        &with(&["--scenario", "web", "--bytes", "51200", "--rate", "40"]),
    );
    assert!(
        n(&o["streams_done"]) >= 40.0,
        "{who} web: {} streams",
        n(&o["streams_done"])
    );

    let o = run(
        who,
        relay,
        dir,
        pid,
        &with(&[
            "--scenario",
            "create",
            "--rate",
            "100",
            "--handshake",
            "mixed",
        ]),
    );
    assert!(
        n(&o["circuits_created"]) >= 100.0,
        "{who} create: {} circuits",
        n(&o["circuits_created"])
    );
    assert_eq!(n(&o["circuits_failed"]), 0.0, "{who} create");
}

/// The middle scenario: the generator is the client and the next hop.
fn middle_scenario(who: &str, relay: SocketAddr, dir: &Path, pid: u32) {
    let o = run(
        who,
        relay,
        dir,
        pid,
        &[
            "--scenario",
            "middle",
            "--links",
            "2",
            "--circuits",
            "4",
            "--probes",
            "1",
        ],
    );
    positive(
        &o["bytes_down"],
        &format!("{who} middle: nothing forwarded"),
    );
    positive(
        &o["bytes_checked"],
        &format!("{who} middle: nothing verified"),
    );
    positive(
        &o["cell_rtt"]["count"],
        &format!("{who} middle: no ping answered"),
    );
}

#[test]
fn oxit_load_drives_oxit_and_c_tor() {
    let dns = Dnsmasq::start().expect("dnsmasq");
    for backend in IoBackend::BOTH {
        let oxit = OxitProcess::start(&OxitOptions {
            dns: Some(dns.addr()),
            ..OxitOptions::new(backend)
        })
        .expect("oxit");
        let who = format!("oxit ({backend:?})");
        exit_scenarios(&who, oxit.or_addr(), &oxit.data_dir(), oxit.pid());
        middle_scenario(&who, oxit.or_addr(), &oxit.data_dir(), oxit.pid());
    }
    let cexit = TorProcess::start(TorRole::Exit { dns: dns.addr() }).expect("C tor exit");
    exit_scenarios("C tor", cexit.or_addr(), &cexit.data_dir(), cexit.pid());
    drop(cexit);
    let cmid = TorProcess::start(TorRole::Middle).expect("C tor middle");
    middle_scenario("C tor", cmid.or_addr(), &cmid.data_dir(), cmid.pid());
}
