//! The benchmark's report: the machine line, the JSON document (schema in
//! bench/README.md), the Markdown table, the capacity line and the
//! many-core projection.

use std::path::Path;
use std::process::Command;

use serde_json::{Map, Value, json};

use crate::Args;

pub const SCHEMA: &str = "oxit-bench/1";

/// CPU flags that decide relay crypto's speed.
const FLAGS: &[&str] = &[
    "aes",
    "vaes",
    "pclmulqdq",
    "vpclmulqdq",
    "sha_ni",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "gfni",
];

/// What the numbers were measured on.
pub fn machine(tor: &Path) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let model = field("model name");
    let all_flags = field("flags");
    let flags: Vec<&str> = FLAGS
        .iter()
        .copied()
        .filter(|f| all_flags.split_whitespace().any(|x| x == *f))
        .collect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tor_version = Command::new(tor)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let line = format!(
        "{model}; flags {}; kernel {kernel}; {cores} cores; {tor_version}; oxit {commit}",
        flags.join(" ")
    );
    json!({
        "cpu": model, "flags": flags, "kernel": kernel, "cores": cores,
        "tor": tor_version, "oxit_commit": commit, "line": line,
    })
}

/// The relay kept its CPUs busy: the generator was not the limit.
pub fn saturated(o: &Map<String, Value>, workers: usize) -> bool {
    o.get("relay_cpu_util")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
        >= 0.9 * workers as f64
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// The one-line summary printed as each run ends.
pub fn progress(v: &Value) -> String {
    let mut s = format!(
        "{:.2} Gbit/s, {:.2} CPU s/GiB, relay CPU {:.0} %, generator/relay CPU {:.2}",
        f(v, "gbit_s"),
        f(v, "relay_cpu_s_per_gib"),
        f(v, "relay_cpu_util") * 100.0,
        f(v, "gen_cpu_per_relay_cpu")
    );
    if f(v, "streams_s") > 0.0 {
        s += &format!(", {:.0} streams/s", f(v, "streams_s"));
    }
    if f(v, "circuits_created_s") > 0.0 {
        s += &format!(", {:.0} creates/s", f(v, "circuits_created_s"));
    }
    let errs = v.get("errors").and_then(Value::as_str).unwrap_or_default();
    if !errs.is_empty() {
        s += &format!(" [{}]", errs.chars().take(200).collect::<String>());
    }
    s
}

/// Add what is derived from the generator's figures to one result.
fn derive(v: &Value) -> Value {
    let mut o = v.as_object().cloned().unwrap_or_default();
    let util = f(v, "relay_cpu_util");
    let per_core = |x: f64| if util > 0.0 { x / util } else { 0.0 };
    o.insert("gbit_s_per_core".into(), json!(per_core(f(v, "gbit_s"))));
    o.insert("cells_s_per_core".into(), json!(per_core(f(v, "cells_s"))));
    o.insert(
        "circuits_created_s_per_core".into(),
        json!(per_core(f(v, "circuits_created_s"))),
    );
    Value::Object(o)
}

/// Cores to carry 10 Gbit/s of exit traffic at a measured cost.
fn cores_per_10g(gbit_per_core: f64) -> f64 {
    if gbit_per_core > 0.0 {
        10.0 / gbit_per_core
    } else {
        0.0
    }
}

/// The JSON document: machine, every result, the oxit/C tor ratios, the
/// capacity line and the many-core projection.
pub fn document(machine: &Value, results: &[Value], a: &Args) -> Value {
    let results: Vec<Value> = results.iter().map(derive).collect();
    let find = |run: &str, relay: &str| {
        results
            .iter()
            .find(|r| r["run"] == run && r["relay"] == relay && r.get("failed").is_none())
    };
    // Ratios to C tor in the same run.
    let mut ratios = Vec::new();
    for r in &results {
        let (Some(run), Some(relay)) = (r["run"].as_str(), r["relay"].as_str()) else {
            continue;
        };
        if relay == "C tor" {
            continue;
        }
        let Some(c) = find(run, "C tor") else {
            continue;
        };
        let ratio = |k: &str| {
            let (x, y) = (f(r, k), f(c, k));
            if x > 0.0 && y > 0.0 {
                json!(x / y)
            } else {
                Value::Null
            }
        };
        ratios.push(json!({
            "run": run, "relay": relay,
            "cpu_per_gib": ratio("relay_cpu_s_per_gib"),
            "cpu_per_mcell": ratio("relay_cpu_s_per_mcell"),
            "cpu_per_stream": ratio("relay_cpu_us_per_stream"),
            "cpu_per_circuit": ratio("relay_cpu_us_per_circuit"),
            "cell_rtt_p99": {
                "oxit_us": r["cell_rtt"]["p99_us"], "ctor_us": c["cell_rtt"]["p99_us"],
            },
        }));
    }
    let mut capacity = Vec::new();
    for relay in ["oxit io_uring", "oxit epoll", "C tor"] {
        for run in ["bulk-down", "circuits"] {
            if let Some(r) = find(run, relay) {
                let g = f(r, "gbit_s_per_core");
                capacity.push(json!({
                    "relay": relay, "run": run, "gbit_s_per_core": g,
                    "cores_per_10_gbit_s": cores_per_10g(g),
                }));
            }
        }
    }
    let model = many_core_model(&results);
    json!({
        "schema": SCHEMA,
        "date": chrono_free_date(),
        "machine": machine,
        "settings": {
            "duration_s": a.duration, "warmup_s": a.warmup, "quick": a.quick,
            "relay_cpu": a.relay_cpu, "generator_cpu": a.gen_cpu,
        },
        "results": results,
        "ratios_to_ctor": ratios,
        "capacity": capacity,
        "model": model,
    })
}

/// Today's date (UTC) from the system clock, without a date crate.
fn chrono_free_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Project oxit's exit capacity to 16–64 cores (bench/README.md states
/// the model and its assumptions): per-core throughput from the 1-worker
/// bulk run, the cost of spreading over workers from the 2-worker check,
/// capped by memory bandwidth and NIC queues.
fn many_core_model(results: &[Value]) -> Value {
    let get = |run: &str, relay: &str| {
        results
            .iter()
            .find(|r| r["run"] == run && r["relay"] == relay && r.get("failed").is_none())
    };
    let mut out = Vec::new();
    for relay in ["oxit io_uring", "oxit epoll"] {
        let (Some(one), Some(two)) = (get("workers-1", relay), get("workers-2", relay)) else {
            continue;
        };
        let c1 = f(one, "relay_cpu_s_per_gib");
        let c2 = f(two, "relay_cpu_s_per_gib");
        let Some(bulk) = get("bulk-down", relay).or(Some(one)) else {
            continue;
        };
        let g1 = f(bulk, "gbit_s_per_core");
        if c1 <= 0.0 || c2 <= 0.0 || g1 <= 0.0 {
            continue;
        }
        // Extra CPU per GiB once work spreads over workers (splices,
        // cross-core messages, shared caches), applied once: past two
        // workers a circuit still crosses at most one core boundary.
        let spread = (c2 / c1).max(1.0);
        let mem_cap_gbit = MEM_BW_GBYTE_S * 8.0 / BYTES_TOUCHED_PER_BYTE;
        let points: Vec<Value> = [1usize, 2, 16, 32, 64]
            .iter()
            .map(|&n| {
                let cpu_bound = if n == 1 { g1 } else { n as f64 * g1 / spread };
                let nic_cap = NIC_GBIT_PER_QUEUE * n.min(NIC_QUEUES) as f64;
                let gbit = cpu_bound.min(mem_cap_gbit).min(nic_cap);
                let limit = if gbit == cpu_bound {
                    "cpu"
                } else if gbit == mem_cap_gbit {
                    "memory bandwidth"
                } else {
                    "NIC queues"
                };
                json!({"cores": n, "gbit_s": gbit, "limit": limit})
            })
            .collect();
        out.push(json!({
            "relay": relay,
            "gbit_s_per_core": g1,
            "cpu_s_per_gib_1_worker": c1,
            "cpu_s_per_gib_2_workers": c2,
            "spread_factor": spread,
            "assumed_memory_bandwidth_gbyte_s": MEM_BW_GBYTE_S,
            "assumed_bytes_touched_per_relayed_byte": BYTES_TOUCHED_PER_BYTE,
            "assumed_nic_queues": NIC_QUEUES,
            "assumed_gbit_s_per_nic_queue": NIC_GBIT_PER_QUEUE,
            "projection": points,
        }));
    }
    Value::Array(out)
}

/// Model assumptions (bench/README.md explains each).
const MEM_BW_GBYTE_S: f64 = 100.0;
const BYTES_TOUCHED_PER_BYTE: f64 = 8.0;
const NIC_QUEUES: usize = 64;
const NIC_GBIT_PER_QUEUE: f64 = 10.0;

fn ms(v: &Value) -> String {
    v.as_u64()
        .map_or("-".into(), |us| format!("{:.1}", us as f64 / 1000.0))
}

/// The side-by-side table.
pub fn markdown(doc: &Value) -> String {
    let mut s = String::new();
    s += &format!(
        "Machine: {}\n\n",
        doc["machine"]["line"].as_str().unwrap_or_default()
    );
    s += "| run | relay | Gbit/s | kcells/s | CPU s/GiB | vs C tor | CPU s/Mcell | Gbit/s per core | streams/s | CPU µs/stream | creates/s per core | CPU µs/create | cell RTT p50/p99/p999 ms | peak RSS MiB | B/idle circuit | gen/relay CPU | saturated |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    let results = doc["results"].as_array().cloned().unwrap_or_default();
    for r in &results {
        if let Some(e) = r.get("failed") {
            s += &format!(
                "| {} | {} | failed: {} |\n",
                r["run"],
                r["relay"],
                e.as_str()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
            );
            continue;
        }
        let vs = doc["ratios_to_ctor"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|x| x["run"] == r["run"] && x["relay"] == r["relay"])
            })
            .and_then(|x| x["cpu_per_gib"].as_f64().or(x["cpu_per_circuit"].as_f64()))
            .map_or_else(
                || {
                    if r["relay"] == "C tor" {
                        "1".into()
                    } else {
                        "-".into()
                    }
                },
                |x| format!("{x:.2}"),
            );
        let opt = |k: &str, prec: usize| {
            let x = f(r, k);
            if x > 0.0 {
                format!("{x:.prec$}")
            } else {
                "-".into()
            }
        };
        s += &format!(
            "| {} | {}{} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{}/{} | {:.0} | {} | {:.2} | {} |\n",
            r["run"].as_str().unwrap_or_default(),
            r["relay"].as_str().unwrap_or_default(),
            if f(r, "workers") > 1.0 {
                ", 2 workers"
            } else {
                ""
            },
            f(r, "gbit_s"),
            f(r, "cells_s") / 1000.0,
            opt("relay_cpu_s_per_gib", 2),
            vs,
            opt("relay_cpu_s_per_mcell", 2),
            opt("gbit_s_per_core", 2),
            opt("streams_s", 0),
            opt("relay_cpu_us_per_stream", 0),
            opt("circuits_created_s_per_core", 0),
            opt("relay_cpu_us_per_circuit", 0),
            ms(&r["cell_rtt"]["p50_us"]),
            ms(&r["cell_rtt"]["p99_us"]),
            ms(&r["cell_rtt"]["p999_us"]),
            f(r, "relay_rss_peak_kib") / 1024.0,
            opt("relay_bytes_per_idle_circuit", 0),
            f(r, "gen_cpu_per_relay_cpu"),
            if r["saturated"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
        );
    }
    s += "\nCapacity (cores per 10 Gbit/s of exit traffic, from the measured cost per core):\n\n";
    for c in doc["capacity"].as_array().cloned().unwrap_or_default() {
        s += &format!(
            "- {} ({}): {:.2} Gbit/s per core, {:.1} cores per 10 Gbit/s\n",
            c["relay"].as_str().unwrap_or_default(),
            c["run"].as_str().unwrap_or_default(),
            f(&c, "gbit_s_per_core"),
            f(&c, "cores_per_10_gbit_s")
        );
    }
    for m in doc["model"].as_array().cloned().unwrap_or_default() {
        let pts: Vec<String> = m["projection"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| {
                format!(
                    "{} cores {:.0} Gbit/s ({})",
                    p["cores"],
                    f(p, "gbit_s"),
                    p["limit"].as_str().unwrap_or_default()
                )
            })
            .collect();
        s += &format!(
            "\nMany-core projection, {} (spread factor {:.2} from 1 vs 2 workers): {}\n",
            m["relay"].as_str().unwrap_or_default(),
            f(&m, "spread_factor"),
            pts.join("; ")
        );
    }
    s
}
