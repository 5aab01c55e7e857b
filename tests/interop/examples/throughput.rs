//! Whole-relay comparison: the same downloads through a C tor middle and
//! then an exit that is oxit or C tor, in one run, reporting the exit's CPU
//! time per GiB relayed (user + system, from /proc) and the oxit/C ratio.
//!
//! With `ROLE=middle` the relay under test is the first hop instead, in
//! front of a C tor exit: oxit over a channel its own worker opened, oxit
//! over a channel another worker holds (the circuit spliced across cores,
//! found by building circuits until one lands on the other worker), and a
//! C tor relay in the same place.
//!
//! Run through `bench/run.sh` (it builds oxit in release mode first).
//! Loopback only; every process is started and stopped here.

use std::time::{Duration, Instant};

use oxit_interop::client::{self, Handshake};
use oxit_interop::harness::{
    Dnsmasq, HttpServer, IoBackend, OxitOptions, OxitProcess, TorProcess, TorRole, body_for,
    sha256_hex,
};

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: indices 11 and 12 of
    // the fields after the command name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc_sysconf(2) } as f64; // _SC_CLK_TCK
    (ticks(11) + ticks(12)) / hz
}

unsafe extern "C" {
    #[link_name = "sysconf"]
    fn libc_sysconf(name: i32) -> i64;
}

struct Run {
    label: String,
    bytes: usize,
    wall: Duration,
    exit_cpu: f64,
}

async fn measure(
    label: &str,
    hops: Vec<client::HopSpec>,
    http: &HttpServer,
    exit_pid: u32,
    mib: usize,
    streams: usize,
) -> Run {
    let tunnel = client::build_circuit(&hops)
        .await
        .unwrap_or_else(|e| panic!("{label}: build: {e}"));
    measure_tunnel(label, &tunnel, http, exit_pid, mib, streams).await
}

async fn measure_tunnel(
    label: &str,
    tunnel: &client::Tunnel,
    http: &HttpServer,
    exit_pid: u32,
    mib: usize,
    streams: usize,
) -> Run {
    let n = mib << 20;
    let port = http.addr().port();
    let want = sha256_hex(&body_for(n));
    let cpu0 = cpu_seconds(exit_pid);
    let t0 = Instant::now();
    let gets = (0..streams).map(|_| {
        let t = tunnel.clone();
        async move { client::http_get(&t, "127.0.0.1", port, &format!("/bytes/{n}")).await }
    });
    for body in futures::future::join_all(gets).await {
        let body = body.unwrap_or_else(|e| panic!("{label}: GET: {e}"));
        assert_eq!(sha256_hex(&body), want, "{label}: body differs");
    }
    Run {
        label: label.into(),
        bytes: n * streams,
        wall: t0.elapsed(),
        exit_cpu: cpu_seconds(exit_pid) - cpu0,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mib: usize = std::env::var("MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let streams: usize = std::env::var("STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let dns = Dnsmasq::start().expect("dnsmasq");
    let http = HttpServer::start().expect("HTTP server");
    let middle = TorProcess::start(TorRole::Middle).expect("C tor middle");
    let cexit = TorProcess::start(TorRole::Exit { dns: dns.addr() }).expect("C tor exit");
    let mut runs = Vec::new();
    // BACKENDS=uring (or epoll) measures one backend only, e.g. to profile it.
    let only = std::env::var("BACKENDS").unwrap_or_default();
    if std::env::var("ROLE").is_ok_and(|r| r == "middle") {
        return middle_runs(&only, &dns, &http, &middle, &cexit, mib, streams).await;
    }
    for backend in backends(&only) {
        let oxit = start_oxit(backend, &dns, false);
        let hops = vec![
            middle.hop(Handshake::Ntor).unwrap(),
            oxit.hop(Handshake::Ntor).unwrap(),
        ];
        runs.push(
            measure(
                &format!("oxit exit ({backend:?})"),
                hops,
                &http,
                oxit.pid(),
                mib,
                streams,
            )
            .await,
        );
    }
    let hops = vec![
        middle.hop(Handshake::Ntor).unwrap(),
        cexit.hop(Handshake::Ntor).unwrap(),
    ];
    runs.push(measure("C tor exit", hops, &http, cexit.pid(), mib, streams).await);
    println!("{streams} streams x {mib} MiB through C tor middle -> exit, one circuit, loopback");
    print_runs("exit", &runs);
}

/// The backends `BACKENDS` selects (empty: both).
fn backends(only: &str) -> impl Iterator<Item = IoBackend> + '_ {
    IoBackend::BOTH
        .into_iter()
        .filter(move |b| only.is_empty() || format!("{b:?}").eq_ignore_ascii_case(only))
}

fn start_oxit(backend: IoBackend, dns: &Dnsmasq, debug_log: bool) -> OxitProcess {
    OxitProcess::start(&OxitOptions {
        backend,
        dns: Some(dns.addr()),
        rejected_port: None,
        debug_log,
        extra_torrc: String::new(),
    })
    .expect("oxit")
}

/// oxit's debug log line for an EXTEND2 carried over another worker's
/// channel.
const SPLICED: &str = "extending over another worker's channel";

async fn middle_runs(
    only: &str,
    dns: &Dnsmasq,
    http: &HttpServer,
    cmiddle: &TorProcess,
    cexit: &TorProcess,
    mib: usize,
    streams: usize,
) {
    let mut runs = Vec::new();
    for backend in backends(only) {
        // Debug logging says which circuit was spliced.
        let oxit = start_oxit(backend, dns, true);
        let hops = vec![
            oxit.hop(Handshake::Ntor).unwrap(),
            cexit.hop(Handshake::Ntor).unwrap(),
        ];
        let first = client::build_circuit(&hops).await.expect("build");
        // More circuits, each on its own client channel, until one lands on
        // the worker that does not hold the channel to the exit.
        let mut spliced = None;
        let mut keep = Vec::new();
        for _ in 0..32 {
            let before = oxit.log_count(SPLICED);
            let t = client::build_circuit(&hops).await.expect("build");
            if oxit.log_count(SPLICED) > before {
                spliced = Some(t);
                break;
            }
            keep.push(t);
        }
        let spliced = spliced.expect("no circuit landed on the other worker in 32 tries");
        let label = format!("oxit, own channel ({backend:?})");
        runs.push(measure_tunnel(&label, &first, http, oxit.pid(), mib, streams).await);
        let label = format!("oxit, spliced ({backend:?})");
        runs.push(measure_tunnel(&label, &spliced, http, oxit.pid(), mib, streams).await);
    }
    let hops = vec![
        cmiddle.hop(Handshake::Ntor).unwrap(),
        cexit.hop(Handshake::Ntor).unwrap(),
    ];
    runs.push(measure("C tor", hops, http, cmiddle.pid(), mib, streams).await);
    println!(
        "{streams} streams x {mib} MiB through first hop -> C tor exit, one circuit, loopback"
    );
    print_runs("first hop", &runs);
}

/// The table; the last run is C tor's, the baseline of the ratios.
fn print_runs(role: &str, runs: &[Run]) {
    let c_per_gib = runs
        .last()
        .map_or(1.0, |r| r.exit_cpu / (r.bytes as f64 / (1u64 << 30) as f64));
    println!(
        "{:<28} {:>10} {:>12} {:>16} {:>10}",
        role, "MiB/s", "CPU s", "CPU s per GiB", "vs C tor"
    );
    for r in runs {
        let gib = r.bytes as f64 / (1u64 << 30) as f64;
        let per = r.exit_cpu / gib;
        println!(
            "{:<28} {:>10.1} {:>12.2} {:>16.2} {:>10.2}",
            r.label,
            r.bytes as f64 / (1 << 20) as f64 / r.wall.as_secs_f64(),
            r.exit_cpu,
            per,
            per / c_per_gib
        );
    }
}
