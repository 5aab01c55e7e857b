//! The capacity dashboard and the alert rules against real software: oxit
//! under load (bulk downloads and web streams with fresh host names, from
//! the load generator `oxit-load`), Debian's Prometheus scraping its
//! MetricsPort every second, and every query of tuning/grafana-oxit.json
//! evaluated through Prometheus's HTTP API: each must return data. The
//! rules of tuning/prometheus-alerts.yml must pass `promtool check rules`,
//! load, and evaluate with health "ok" against oxit's series.
//!
//! `OXIT_RENDER_DASHBOARD=path.png` also draws the dashboard from the data
//! Prometheus holds (tuning/render-dashboard.py, Debian's
//! python3-matplotlib), after `OXIT_RENDER_LOAD_SECS` (default 90) of load;
//! that is how tuning/dashboard.png is made.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use oxit_interop::harness::{IoBackend, OxitOptions, OxitProcess, free_tcp_port, oxit_load_binary};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
/// What the dashboard's `$__rate_interval` stands for here: Grafana makes
/// it at least four scrape intervals (1 s); 10 s holds enough samples for
/// a rate even when a scrape is late on a loaded machine.
const RATE_INTERVAL: &str = "10s";

fn tuning(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tuning")
        .join(file)
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A child killed by PID on Drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // Child::kill signals this PID only.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prometheus on 127.0.0.1, its data in a temp dir.
struct Prometheus {
    child: Guard,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr, rules: &Path) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} not found: install the Debian package `prometheus` (scripts/test.sh does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("oxit-prometheus-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: oxit\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rules.display()
            ),
        )
        .expect("write prometheus.yml");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port().expect("free port")));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus {
            child: Guard(child),
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if get(addr, "/-/ready").is_some_and(|(code, _)| code == 200) {
                break;
            }
            if let Ok(Some(st)) = p.child.0.try_wait() {
                panic!("prometheus exited with {st}:\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 30 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path`, parsed; panics on a non-JSON answer.
    fn api(&self, path: &str) -> Value {
        let (code, body) =
            get(self.addr, path).unwrap_or_else(|| panic!("no answer to {path}:\n{}", self.log()));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: HTTP {code}, not JSON ({e}): {body}"));
        v
    }

    /// An instant query's result vector (empty on error).
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self.api(&format!("/api/v1/query?query={}", url_encode(expr)));
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        match &v["data"]["result"] {
            Value::Array(a) => Ok(a.clone()),
            // A scalar (e.g. `time()`): one value.
            Value::Null => Ok(Vec::new()),
            other => Ok(vec![other.clone()]),
        }
    }
}

/// One HTTP/1.0 GET on 127.0.0.1, bounded to 10 s: (status, body).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let step = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(step)).ok()?;
    s.set_write_timeout(Some(step)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `oxit-load` runs of one scenario, one after another, until dropped;
/// the running one is killed by PID on drop.
struct LoadLoop {
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<Child>>>,
    runs_ok: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
    name: &'static str,
}

impl LoadLoop {
    fn start(name: &'static str, args: Vec<String>) -> LoadLoop {
        let bin = oxit_load_binary().expect("oxit-load: cargo build --workspace --all-targets");
        let stop = Arc::new(AtomicBool::new(false));
        let current: Arc<Mutex<Option<Child>>> = Arc::default();
        let runs_ok = Arc::new(AtomicU32::new(0));
        let (s, c, ok) = (stop.clone(), current.clone(), runs_ok.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let child = Command::new(&bin)
                    .arg("run")
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn oxit-load");
                *c.lock().unwrap() = Some(child);
                // Poll, so that drop can kill the child meanwhile.
                let status = loop {
                    let mut g = c.lock().unwrap();
                    let Some(ch) = g.as_mut() else { return };
                    if let Ok(Some(st)) = ch.try_wait() {
                        let mut err = String::new();
                        if let Some(mut e) = ch.stderr.take() {
                            let _ = e.read_to_string(&mut err);
                        }
                        *g = None;
                        break (st, err);
                    }
                    drop(g);
                    std::thread::sleep(Duration::from_millis(100));
                };
                if status.0.success() {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else if !s.load(Ordering::Relaxed) {
                    eprintln!("[load {name}] oxit-load: {}: {}", status.0, status.1);
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        });
        LoadLoop {
            stop,
            current,
            runs_ok,
            thread: Some(thread),
            name,
        }
    }
}

impl Drop for LoadLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut g) = self.current.lock()
            && let Some(mut ch) = g.take()
        {
            let _ = ch.kill();
            let _ = ch.wait();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        eprintln!(
            "[load {}] {} runs completed",
            self.name,
            self.runs_ok.load(Ordering::Relaxed)
        );
    }
}

/// The load generator's DNS server (every A question: 127.0.0.1, where
/// its destinations listen).
fn start_dns() -> (Guard, SocketAddr) {
    let bin = oxit_load_binary().expect("oxit-load: cargo build --workspace --all-targets");
    let mut child = Command::new(bin)
        .args(["dns", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn oxit-load dns");
    let out = child.stdout.take().expect("stdout");
    let guard = Guard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("oxit-load dns printed no address in 10 s");
    let addr = line.trim().parse().expect("oxit-load dns address");
    (guard, addr)
}

/// Every panel target's query, with the dashboard's variables given the
/// values Grafana would: (panel title, expr).
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dash["panels"].as_array().expect("panels").iter().collect();
    // Panels inside collapsed rows.
    let nested: Vec<&Value> = panels
        .iter()
        .filter_map(|p| p["panels"].as_array())
        .flatten()
        .collect();
    panels.extend(nested);
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: no expr"));
            let expr = expr
                .replace("$__rate_interval", RATE_INTERVAL)
                .replace("$__interval", "1s")
                .replace("$__range", "1m")
                .replace("$instance", ".*")
                .replace("$worker", ".*");
            assert!(
                !expr.contains('$'),
                "{title}: a dashboard variable this test does not know: {expr}"
            );
            out.push((title.clone(), expr));
        }
    }
    out
}

#[test]
fn dashboard_and_alerts_on_real_prometheus() {
    let started = Instant::now();
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(tuning("grafana-oxit.json")).expect("read grafana-oxit.json"),
    )
    .expect("grafana-oxit.json is JSON");
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let rules = tuning("prometheus-alerts.yml")
        .canonicalize()
        .expect("tuning/prometheus-alerts.yml");

    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} not found: install the Debian package `prometheus` (scripts/test.sh does)"
    );
    let check = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("run promtool");
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let (_dns, dns_addr) = start_dns();
    let metrics_port = free_tcp_port().unwrap();
    let mut opts = OxitOptions::new(IoBackend::Uring);
    opts.dns = Some(dns_addr);
    opts.extra_torrc = format!(
        "MetricsPort 127.0.0.1:{metrics_port}\nMetricsPortPolicy accept 127.0.0.1\n\
         CountPrivateBandwidth 1\n"
    );
    let oxit = OxitProcess::start(&opts).expect("start oxit");
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, metrics_port));
    let prom = Prometheus::start(target, &rules);

    let keys = tempfile::tempdir().unwrap();
    let common = |scenario: &str, keys: &str| -> Vec<String> {
        [
            "--scenario",
            scenario,
            "--relay",
            &oxit.or_addr().to_string(),
            "--relay-dir",
            &oxit.data_dir().display().to_string(),
            "--links",
            "2",
            "--circuits",
            "4",
            "--probes",
            "1",
            "--sample-every",
            "0",
            "--warmup",
            "0.2",
            "--duration",
            "4",
            "--keys-dir",
            keys,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let k = |n: &str| keys.path().join(n).display().to_string();
    let mut bulk = common("bulk-down", &k("bulk"));
    // As a 0.4.9 client asks an exit advertising Relay=5-6: congestion
    // control and CGO, so that the congestion-control panels have data.
    bulk.extend(["--bytes", "4194304", "--crypto", "cgo"].map(String::from));
    // Fresh names (w0.load.test, w1, ...) each run: the first run's are
    // lookups, later runs' partly cache hits (TTL 60 s).
    let mut web = common("web", &k("web"));
    web.extend(["--bytes", "20000", "--rate", "40", "--names"].map(String::from));
    let loads = [
        LoadLoop::start("bulk-down", bulk),
        LoadLoop::start("web", web),
    ];

    // Until Prometheus has seen traffic and lookups for a rate window.
    let deadline = Instant::now() + Duration::from_secs(40);
    let load_seen = format!(
        "rate(tor_relay_traffic_bytes{{direction=\"written\"}}[{RATE_INTERVAL}]) > 0 \
         and on (instance) rate(tor_relay_exit_dns_query_total[{RATE_INTERVAL}]) > 0 \
         and on (instance) tor_relay_congestion_control_total{{action=\"circs_created\"}} > 0"
    );
    loop {
        if prom.query(&load_seen).is_ok_and(|r| !r.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no traffic, DNS lookups and CC circuits seen by Prometheus in 40 s\nup: {:?}\noxit:\n{}\nprometheus:\n{}",
            prom.query("up"),
            oxit.log(),
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A few more scrapes, so that every rate window holds load only.
    std::thread::sleep(Duration::from_secs(4));
    eprintln!("load visible after {:?}", started.elapsed());

    // The variable queries (Grafana's label_values) find the relay.
    let v = prom.api("/api/v1/label/instance/values?match[]=oxit_worker_circuits");
    assert_eq!(v["data"], serde_json::json!([target.to_string()]), "{v}");

    let mut empty = Vec::new();
    for (title, expr) in &queries {
        match prom.query(expr) {
            Ok(r) if !r.is_empty() => {
                let vals: Vec<&str> = r
                    .iter()
                    .filter_map(|s| s["value"][1].as_str())
                    .take(4)
                    .collect();
                eprintln!("ok  {title}: {} series {vals:?}", r.len());
            }
            Ok(_) => empty.push(format!("{title}: no data: {expr}")),
            Err(e) => empty.push(format!("{title}: {e}: {expr}")),
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );

    // Every alert rule loaded and evaluated without error.
    let deadline = Instant::now() + Duration::from_secs(15);
    let evaluated = loop {
        let v = prom.api("/api/v1/rules?type=alert");
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let names: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
        for want in [
            "TorFlagRunningMissing",
            "TorFlagSybilPresent",
            "TorTCPPortsExhausted",
            "TorCertificateExpiryUnder15Days",
            "TorCertificateExpiryUnder1Day",
            "TorHighDnsTimeoutRate",
            "TorOnionskinsDropped",
            "OxitWorkerCPUSaturated",
            "OxitQueuesNearMaxMemInQueues",
            "OxitOutOfMemoryHandlerRan",
            "OxitBugReached",
        ] {
            assert!(names.contains(&want), "{want} not loaded: {names:?}");
        }
        let bad: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        if bad.is_empty() {
            // A new relay: a Running flag missing, but not for 3h yet.
            for r in &rules {
                eprintln!("rule {} {} ok", r["name"], r["state"]);
            }
            // Keys made a moment ago: no expiry alert, with the master key
            // online.
            for r in &rules {
                let name = r["name"].as_str().unwrap_or("");
                if name.starts_with("TorCertificateExpiry") || name == "OxitBugReached" {
                    assert_eq!(r["state"], "inactive", "{name}: {r}");
                }
            }
            break rules.len();
        }
        assert!(
            Instant::now() < deadline,
            "alert rules not all evaluated ok in 15 s: {bad:?}\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "{} dashboard queries returned data and {evaluated} alert rules evaluated, in {:?}",
        queries.len(),
        started.elapsed()
    );

    if let Some(png) = std::env::var_os("OXIT_RENDER_DASHBOARD") {
        let secs: u64 = std::env::var("OXIT_RENDER_LOAD_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(90);
        let from = now_unix() - started.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(secs));
        let out = Command::new("/usr/bin/python3")
            .arg(tuning("render-dashboard.py"))
            .arg("--prometheus")
            .arg(format!("http://{}", prom.addr))
            .arg("--dashboard")
            .arg(tuning("grafana-oxit.json"))
            .arg("--start")
            .arg(format!("{from:.0}"))
            .arg("--end")
            .arg(format!("{:.0}", now_unix()))
            .arg("--out")
            .arg(&png)
            .output()
            .expect("run tuning/render-dashboard.py");
        assert!(
            out.status.success(),
            "render-dashboard.py: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    }

    drop(loads);
    drop(prom);
    assert!(oxit.stop().expect("stop oxit"), "oxit exits 0");
}
