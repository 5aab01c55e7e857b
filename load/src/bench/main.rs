//! oxit-bench: the capacity benchmark `bench/run.sh` runs.
//!
//! For every scenario, one relay after the other (oxit on io_uring, oxit on
//! epoll, C tor 0.4.9), each started fresh on 127.0.0.1 with the same exit
//! policy and pinned to CPU 0, is driven by `oxit-load` pinned to CPU 1.
//! What the generator measured is gathered into one JSON file, a Markdown
//! table, two plots and a capacity line. bench/README.md documents the
//! scenarios, the JSON schema and the many-core model.
//!
//! Owns: the relays' torrcs and processes, the DNS server process, the
//! list of runs, and the report. The measuring is `oxit-load`'s.

mod plot;
mod relay;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use clap::Parser;
use serde_json::{Value, json};

use crate::relay::{Bins, Relay, RelayKind};

#[derive(Parser, Clone)]
#[command(
    name = "oxit-bench",
    about = "Capacity benchmark: oxit beside C tor under oxit-load"
)]
pub struct Args {
    /// Where the JSON result and the plots go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Measured seconds per run (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Relays to measure, comma-separated: uring, epoll, ctor, and with
    /// --baseline-oxit also base-uring, base-epoll.
    #[arg(long, default_value = "uring,epoll,ctor")]
    relays: String,
    /// Another oxit binary to measure beside this one (labelled
    /// "baseline"), for before/after figures from the same run.
    #[arg(long)]
    baseline_oxit: Option<PathBuf>,
    /// Scenarios to run, comma-separated (default: all), from: bulk-down,
    /// bulk-down-cc, bulk-down-cgo, bulk-up, circuits, web, create, middle,
    /// sweep, workers.
    #[arg(long)]
    scenarios: Option<String>,
    /// Shorter runs and smaller sizes, for a quick look.
    #[arg(long)]
    quick: bool,
    /// Circuits in the many-circuits scenario.
    #[arg(long, default_value_t = 5000)]
    many_circuits: usize,
    /// Links in the many-circuits scenario.
    #[arg(long, default_value_t = 100)]
    many_links: usize,
    /// Web streams per second.
    #[arg(long, default_value_t = 500.0)]
    web_rate: f64,
    /// CREATE2 per second in the creation storm.
    #[arg(long, default_value_t = 8000.0)]
    create_rate: f64,
    /// CPU the relay runs on; the generator takes the other one.
    #[arg(long, default_value_t = 0)]
    relay_cpu: usize,
    #[arg(long, default_value_t = 1)]
    gen_cpu: usize,
}

/// One generator run: a scenario with its knobs.
#[derive(Clone)]
struct Run {
    /// Name in the table and the JSON (`scenario` is the generator's).
    name: String,
    args: Vec<String>,
    /// Workers the relay runs with (oxit's NumCPUs).
    workers: usize,
    /// Only these relays (the 2-worker check is oxit's alone).
    oxit_only: bool,
}

fn run_list(a: &Args) -> Vec<Run> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let q = a.quick;
    let many = if q { 1000 } else { a.many_circuits };
    let many_links = if q { 50 } else { a.many_links };
    let bulk_down = |name: &str, extra: &[&str]| Run {
        name: name.into(),
        args: s(&[
            &[
                "--scenario",
                "bulk-down",
                "--links",
                "8",
                "--circuits",
                "16",
            ][..],
            extra,
        ]
        .concat()),
        workers: 1,
        oxit_only: false,
    };
    let mut runs = vec![
        bulk_down("bulk-down", &[]),
        // The same downloads with congestion control, on tor1 and on CGO:
        // what a 0.4.9 client negotiates with an exit advertising
        // FlowCtrl=2 and Relay=5-6.
        bulk_down("bulk-down-cc", &["--crypto", "tor1-cc"]),
        bulk_down("bulk-down-cgo", &["--crypto", "cgo"]),
        Run {
            name: "bulk-up".into(),
            args: s(&[
                "--scenario",
                "bulk-up",
                "--links",
                "8",
                "--circuits",
                "16",
                "--streams",
                "4",
            ]),
            workers: 1,
            oxit_only: false,
        },
        Run {
            name: "circuits".into(),
            args: vec![
                "--scenario".into(),
                "circuits".into(),
                "--links".into(),
                many_links.to_string(),
                "--circuits".into(),
                many.to_string(),
                "--bytes".into(),
                (256 * 1024).to_string(),
                "--probes".into(),
                "4".into(),
                // At 5,000 circuits a circuit's fair share of the relay is
                // ~100 cells/s: a probe every 10 ms would be a bulk flow.
                "--probe-interval-ms".into(),
                "100".into(),
            ],
            workers: 1,
            oxit_only: false,
        },
        Run {
            name: "web".into(),
            args: vec![
                "--scenario".into(),
                "web".into(),
                "--links".into(),
                "16".into(),
                "--circuits".into(),
                "64".into(),
                "--bytes".into(),
                (50 * 1024).to_string(),
                "--rate".into(),
                a.web_rate.to_string(),
                "--names".into(),
            ],
            workers: 1,
            oxit_only: false,
        },
        Run {
            name: "create".into(),
            args: vec![
                "--scenario".into(),
                "create".into(),
                "--links".into(),
                "16".into(),
                "--rate".into(),
                a.create_rate.to_string(),
                "--handshake".into(),
                "mixed".into(),
            ],
            workers: 1,
            oxit_only: false,
        },
        Run {
            name: "middle".into(),
            args: s(&["--scenario", "middle", "--links", "8", "--circuits", "16"]),
            workers: 1,
            oxit_only: false,
        },
    ];
    // Throughput and cost against the number of circuits (the plots).
    let sweep: &[usize] = if q {
        &[1, 10, 100]
    } else {
        &[1, 10, 100, 1000]
    };
    for &n in sweep {
        runs.push(Run {
            name: format!("sweep-{n}"),
            args: vec![
                "--scenario".into(),
                "bulk-down".into(),
                "--links".into(),
                n.clamp(1, 100).to_string(),
                "--circuits".into(),
                n.to_string(),
                "--bytes".into(),
                if n >= 100 {
                    (1 << 20).to_string()
                } else {
                    (64 << 20).to_string()
                },
            ],
            workers: 1,
            oxit_only: false,
        });
    }
    // The many-core model's check: the same load on two workers, then one.
    for workers in [2, 1] {
        runs.push(Run {
            name: format!("workers-{workers}"),
            args: s(&[
                "--scenario",
                "bulk-down",
                "--links",
                "16",
                "--circuits",
                "64",
                "--bytes",
                "16777216",
            ]),
            workers,
            oxit_only: true,
        });
    }
    if let Some(only) = &a.scenarios {
        let want: Vec<&str> = only.split(',').map(str::trim).collect();
        runs.retain(|r| {
            want.iter().any(|w| {
                r.name == *w
                    || (*w == "sweep" && r.name.starts_with("sweep-"))
                    || (*w == "workers" && r.name.starts_with("workers-"))
            })
        });
    }
    runs
}

fn main() -> ExitCode {
    let a = Args::parse();
    match bench(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxit-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn target_bin(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me.parent().ok_or("no directory for oxit-bench")?;
    let p = dir.join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: bench/run.sh builds it",
            p.display()
        ))
    }
}

fn bench(a: &Args) -> Result<(), String> {
    let oxit = target_bin("oxit")?;
    let load = target_bin("oxit-load")?;
    let tor = which("tor")
        .ok_or("tor is not installed: apt-get install -y tor (scripts/test.sh does)")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        return Err(
            "the benchmark needs 2 CPUs: one for the relay, one for the load generator".into(),
        );
    }
    let work = std::env::temp_dir().join(format!("oxit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let machine = report::machine(&tor);
    let bins = Bins {
        oxit,
        baseline: a.baseline_oxit.clone(),
        tor,
    };
    eprintln!(
        "oxit-bench: {}",
        machine["line"].as_str().unwrap_or_default()
    );

    // The DNS server the exits resolve the web scenario's names through.
    let mut dns = Command::new(&load)
        .args(["dns", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the DNS server: {e}"))?;
    let dns_addr = {
        use std::io::BufRead as _;
        let out = dns.stdout.take().ok_or("DNS server: no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .map_err(|e| format!("DNS server: {e}"))?;
        line.trim().to_owned()
    };
    let resolv = work.join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {dns_addr}\n")).map_err(|e| e.to_string())?;

    let kinds: Vec<RelayKind> = a
        .relays
        .split(',')
        .filter_map(|r| match r.trim() {
            "uring" | "io_uring" => Some(RelayKind::OxitUring),
            "epoll" => Some(RelayKind::OxitEpoll),
            "ctor" | "tor" => Some(RelayKind::CTor),
            "base-uring" => Some(RelayKind::BaselineUring),
            "base-epoll" => Some(RelayKind::BaselineEpoll),
            _ => None,
        })
        .collect();
    let runs = run_list(a);
    let (duration, warmup) = if a.quick {
        (a.duration.min(4.0), a.warmup.min(1.0))
    } else {
        (a.duration, a.warmup)
    };
    let total = runs
        .iter()
        .map(|r| {
            kinds
                .iter()
                .filter(|k| !r.oxit_only || **k != RelayKind::CTor)
                .count()
        })
        .sum::<usize>();
    let mut results: Vec<Value> = Vec::new();
    let started = Instant::now();
    let mut n = 0;
    for run in &runs {
        for &kind in &kinds {
            if run.oxit_only && kind == RelayKind::CTor {
                continue;
            }
            n += 1;
            eprint!(
                "[{n}/{total}] {:<9} {:<16} ({:.0} s so far) ... ",
                run.name,
                kind.label(),
                started.elapsed().as_secs_f64()
            );
            let r = measure(a, &work, &bins, &load, &resolv, kind, run, duration, warmup);
            match r {
                Ok(v) => {
                    eprintln!("{}", report::progress(&v));
                    results.push(v);
                }
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    results.push(json!({
                        "run": run.name, "relay": kind.label(), "workers": run.workers,
                        "failed": e,
                    }));
                }
            }
        }
    }
    let _ = dns.kill();
    let _ = dns.wait();
    let doc = report::document(&machine, &results, a);
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let json_path = a.out.join("latest.json");
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text + "\n").map_err(|e| format!("{}: {e}", json_path.display()))?;
    let plots = plot::draw(&results, &a.out);
    println!("{}", report::markdown(&doc));
    eprintln!("oxit-bench: wrote {}", json_path.display());
    for p in plots {
        match p {
            Ok(p) => eprintln!("oxit-bench: wrote {}", p.display()),
            Err(e) => eprintln!("oxit-bench: plot: {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let failed = results.iter().filter(|r| r.get("failed").is_some()).count();
    if failed > 0 {
        return Err(format!("{failed} of {total} runs failed (see above)"));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn measure(
    a: &Args,
    work: &Path,
    bins: &Bins,
    load: &Path,
    resolv: &Path,
    kind: RelayKind,
    run: &Run,
    duration: f64,
    warmup: f64,
) -> Result<Value, String> {
    let relay = Relay::start(kind, work, bins, resolv, run.workers, a.relay_cpu)?;
    let mut cmd = Command::new(load);
    cmd.arg("run")
        .args(&run.args)
        .args(["--relay", &relay.addr.to_string()])
        .arg("--relay-dir")
        .arg(relay.data_dir())
        .args(["--relay-pid", &relay.pid().to_string()])
        .args([
            "--duration",
            &duration.to_string(),
            "--warmup",
            &warmup.to_string(),
        ])
        .arg("--keys-dir")
        .arg(work.join("generator-keys"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // With two workers the relay uses both CPUs: the generator is not
    // pinned (what that run checks is the relay's cost, not its speed).
    if run.workers == 1 {
        cmd.args(["--cpu", &a.gen_cpu.to_string()]);
    }
    let out = cmd.output().map_err(|e| format!("oxit-load: {e}"))?;
    let log_tail = relay.log_tail(15);
    drop(relay);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().rev().find(|l| l.starts_with('{')) else {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "no result from oxit-load ({}): {}\nrelay log:\n{log_tail}",
            out.status,
            err.trim()
        ));
    };
    let mut v: Value = serde_json::from_str(line).map_err(|e| format!("oxit-load's JSON: {e}"))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("run".into(), json!(run.name));
        o.insert("relay".into(), json!(kind.label()));
        o.insert("workers".into(), json!(run.workers));
        o.insert("saturated".into(), json!(report::saturated(o, run.workers)));
    }
    if !v["measured"].as_bool().unwrap_or(false) {
        return Err(format!(
            "the run did not reach its measured window: {}\nrelay log:\n{log_tail}",
            v["errors"].as_str().unwrap_or_default()
        ));
    }
    Ok(v)
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}
