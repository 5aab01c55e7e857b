use super::*;
use crate::exit::policy::parse_policy_list;

/// Sources with `traffic` and nothing else set.
fn sources(traffic: Arc<[Traffic]>) -> Sources {
    Sources {
        rate_limit: Default::default(),
        control: Default::default(),
        traffic,
        flags: Arc::default(),
        signing_cert_expiry: Arc::default(),
        offline_master_key: false,
        max_mem_in_queues: Arc::default(),
    }
}

fn reply(req: &[u8]) -> String {
    match answer(req, || "tor_x 1\n".into()) {
        Answer::Reply(r) => String::from_utf8(r).unwrap(),
        Answer::More => "MORE".into(),
    }
}

#[test]
fn http_exchange_as_c_tor() {
    let ok = reply(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        ok,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 8\r\n\r\ntor_x 1\n"
    );
    assert!(reply(b"POST /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 405 "));
    assert!(reply(b"GET /metrics/ HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 404 "));
    assert!(reply(b"GET / HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 404 "));
    assert!(reply(b"hello\r\n\r\n").starts_with("HTTP/1.0 400 "));
    assert_eq!(reply(b"GET /metrics HTTP/1.0\r\n"), "MORE");
    assert!(reply(&[b'a'; MAX_REQUEST + 1]).starts_with("HTTP/1.0 400 "));
}

#[test]
fn policy_first_match_default_reject() {
    let p =
        MetricsPolicy(parse_policy_list("accept 127.0.0.1, reject 10.0.0.0/8, accept *").unwrap());
    assert!(p.permits("127.0.0.1".parse().unwrap()));
    assert!(!p.permits("10.1.2.3".parse().unwrap()));
    assert!(p.permits("192.0.2.1".parse().unwrap()));
    assert!(p.permits("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!MetricsPolicy::default().permits("127.0.0.1".parse().unwrap()));
    let only = MetricsPolicy(parse_policy_list("accept 127.0.0.1:9035").unwrap());
    assert!(
        only.permits("127.0.0.1".parse().unwrap()),
        "ports are ignored"
    );
    assert!(!only.permits("127.0.0.2".parse().unwrap()));
}

/// Every family C tor has is written with its name, type and label keys,
/// and the values come from the workers' counters.
#[test]
fn page_has_c_tors_families() {
    let traffic: Arc<[Traffic]> = (0..2).map(|_| Traffic::default()).collect();
    traffic[0].read.store(100, Ordering::Relaxed);
    traffic[1].read.store(23, Ordering::Relaxed);
    traffic[1].circuits.store(7, Ordering::Relaxed);
    traffic[0].streams[2].store(3, Ordering::Relaxed);
    traffic[1].streams[2].store(1, Ordering::Relaxed);
    traffic[0].oom[0].store(4096, Ordering::Relaxed);
    traffic[1].oom[1].store(512, Ordering::Relaxed);
    let flags = Flags::RUNNING.bits() | Flags::EXIT.bits();
    let src = Sources {
        rate_limit: Default::default(),
        control: Default::default(),
        traffic,
        flags: Arc::new(AtomicU32::new(u32::from(flags))),
        signing_cert_expiry: Arc::new(AtomicU64::new(1_900_000_000)),
        offline_master_key: true,
        max_mem_in_queues: Arc::new(AtomicU64::new(256 << 20)),
    };
    let page = render(&src);
    for line in [
        "# HELP tor_relay_traffic_bytes Traffic related counters",
        "# TYPE tor_relay_traffic_bytes counter",
        "tor_relay_traffic_bytes{direction=\"read\"} 123",
        "# TYPE tor_relay_circuits_total gauge",
        "tor_relay_circuits_total{state=\"opened\"} 7",
        "tor_relay_flag{type=\"Running\"} 1",
        "tor_relay_flag{type=\"Exit\"} 1",
        "tor_relay_flag{type=\"Guard\"} 0",
        "tor_relay_load_onionskins_total{type=\"ntor_v3\",action=\"processed\"} 0",
        "tor_relay_dos_total{type=\"stream_rejected\"} 0",
        "# TYPE tor_relay_load_socket_total gauge",
        "oxit_worker_traffic_bytes{worker=\"1\",direction=\"read\"} 23",
        "oxit_worker_circuits{worker=\"0\"} 0",
        "# TYPE tor_relay_load_tcp_exhaustion_total counter",
        "tor_relay_load_tcp_exhaustion_total 4",
        "# TYPE tor_relay_load_oom_bytes_total counter",
        "tor_relay_load_oom_bytes_total{subsys=\"cell\"} 4096",
        "tor_relay_load_oom_bytes_total{subsys=\"dns\"} 512",
        "tor_relay_load_oom_bytes_total{subsys=\"hsdir\"} 0",
        "# TYPE tor_relay_signing_cert_expiry_timestamp gauge",
        "tor_relay_signing_cert_expiry_timestamp 1900000000",
        "# TYPE oxit_process_cpu_seconds_total counter",
        "# TYPE oxit_worker_cpu_seconds_total counter",
        "oxit_max_mem_in_queues_bytes 268435456",
        "oxit_offline_master_key 1",
    ] {
        assert!(page.lines().any(|l| l == line), "{line}\n{page}");
    }
    // C's unlabelled series beside the labelled one.
    assert!(
        page.lines()
            .any(|l| l.starts_with("tor_relay_load_socket_total "))
    );
}

/// The circuit-level families (congestion control, onion-service cells,
/// DESTROY/DROP, violations), the bucket and bug counts and the
/// ControlPort's connection rows: C's label values, the workers' sums.
#[test]
fn circuit_and_control_families() {
    use crate::proto::cc::{CcStats, RunningAvg};
    use crate::proto::circuit::CircCounter;
    let traffic: Arc<[Traffic]> = (0..2).map(|_| Traffic::new(&[])).collect();
    let w0 = CcStats {
        circs_created: 5,
        xon_sent: 2,
        exit_ss_cwnd: RunningAvg { avg: 100.4, n: 1 },
        ..CcStats::default()
    };
    let w1 = CcStats {
        circs_created: 1,
        exit_ss_cwnd: RunningAvg { avg: 200.0, n: 3 },
        ..CcStats::default()
    };
    for (t, st) in traffic.iter().zip([w0, w1]) {
        crate::runtime::plane_store(&t.cc, &st.to_array());
    }
    traffic[0].circ[CircCounter::Rend1 as usize].store(4, Ordering::Relaxed);
    traffic[1].circ[CircCounter::DestroyReceived as usize].store(9, Ordering::Relaxed);
    traffic[0].circ[CircCounter::ProtoViolation as usize].store(2, Ordering::Relaxed);
    traffic[1].crypto[1].store(10, Ordering::Relaxed);
    let control = Arc::new(ControlConns::default());
    control.listeners[0].store(1, Ordering::Relaxed);
    control.accepted[0].store(3, Ordering::Relaxed);
    control.open[0].store(1, Ordering::Relaxed);
    let src = Sources {
        control,
        ..sources(traffic)
    };
    let page = render(&src);
    let conn = |name: &str, ty: &str, dir: &str, state: &str| {
        format!(r#"{name}{{type="{ty}",direction="{dir}",state="{state}",family="ipv4"}}"#)
    };
    for line in [
        "# TYPE tor_relay_congestion_control_total counter".to_owned(),
        r#"tor_relay_congestion_control_total{state="cc_circuits",action="circs_created"} 6"#
            .into(),
        r#"tor_relay_congestion_control_total{state="flow_control",action="xon_num_sent"} 2"#
            .into(),
        "# TYPE tor_relay_congestion_control gauge".into(),
        // (100.4·1 + 200·3) / 4 = 175.1, written rounded as C does.
        r#"tor_relay_congestion_control{state="slow_start_exit",action="cwnd"} 175"#.into(),
        r#"tor_relay_congestion_control{state="cc_estimates",action="bdp"} 0"#.into(),
        r#"tor_relay_rend1_total{action="unknown_cookie"} 4"#.into(),
        r#"tor_relay_rend1_total{action="success"} 0"#.into(),
        r#"tor_relay_est_intro_total{action="unsuitable_circuit"} 0"#.into(),
        r#"tor_relay_intro1_total{action="single_hop"} 0"#.into(),
        r#"tor_relay_est_rend_total{action="duplicate_cookie"} 0"#.into(),
        "tor_relay_destroy_cell_total 9".into(),
        "tor_relay_circ_proto_violation_total 2".into(),
        "tor_relay_drop_cell_total 0".into(),
        r#"tor_relay_load_global_rate_limit_reached_total{side="read"} 0"#.into(),
        r#"tor_relay_load_global_rate_limit_reached_total{side="write"} 0"#.into(),
        "# TYPE tor_bug_reached_count counter".into(),
        r#"oxit_worker_relay_crypto_bytes_total{worker="1",direction="backward"} 5090"#.into(),
        r#"oxit_worker_relay_crypto_bytes_total{worker="0",direction="forward"} 0"#.into(),
        format!(
            "{} 1",
            conn(
                "tor_relay_connections_total",
                "Control listener",
                "initiated",
                "created"
            )
        ),
        format!(
            "{} 3",
            conn(
                "tor_relay_connections_total",
                "Control",
                "received",
                "created"
            )
        ),
        format!(
            "{} 1",
            conn("tor_relay_connections", "Control", "received", "opened")
        ),
        format!(
            "{} 1",
            conn(
                "tor_relay_connections",
                "Control listener",
                "initiated",
                "opened"
            )
        ),
    ] {
        assert!(page.lines().any(|l| l == line), "{line}\n{page}");
    }
}

/// CPU time comes from /proc: the process's, and each worker thread's,
/// found by the name the data plane gives it.
#[test]
fn cpu_seconds_from_proc() {
    // A command name with a space and a ')' in it; utime 1500, stime 250.
    let stat = "4242 (oxit (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1500 250 0 0 20 0 5 0";
    assert_eq!(ticks_of_stat(stat), Some(1750));
    assert_eq!(ticks_of_stat("garbage"), None);
    assert_eq!(worker_index("oxit-worker-3\n"), Some(3));
    assert_eq!(worker_index("oxit-metrics\n"), None);
    assert!(clock_tick_seconds() > 0.0);

    // This test's own process has CPU time, and a thread named as a
    // worker is found and given its own.
    let src = sources((0..2).map(|_| Traffic::default()).collect());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
    let busy = std::thread::Builder::new()
        .name("oxit-worker-1".into())
        .spawn(move || {
            // Spin until the kernel has counted 10 ticks on this thread
            // (bounded: a loaded machine may take longer than 100 ms).
            let t = std::time::Instant::now();
            let mut x = 0u64;
            let own = || std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
            while ticks_of_stat(&own()).unwrap_or(0) < 10 && t.elapsed() < Duration::from_secs(20) {
                for _ in 0..100_000 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            ready_tx.send(()).unwrap();
            let _ = rx.recv();
        })
        .unwrap();
    ready.recv().unwrap();
    let page = render(&src);
    tx.send(()).unwrap();
    busy.join().unwrap();
    let value = |series: &str| -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series}\n{page}"))
    };
    assert!(value("oxit_process_cpu_seconds_total") > 0.0, "{page}");
    assert!(
        value("oxit_worker_cpu_seconds_total{worker=\"1\"}") >= 0.1,
        "{page}"
    );
    assert_eq!(value("oxit_worker_cpu_seconds_total{worker=\"0\"}"), 0.0);
    // No expiry known: no sample, rather than a 1970 that would fire
    // every expiry alert.
    assert!(
        !page
            .lines()
            .any(|l| l.starts_with("tor_relay_signing_cert_expiry_timestamp")),
        "{page}"
    );
}

/// C tor's connection families: every type, direction, state and family
/// it writes (17 types × 6 counter rows, × 4 gauge rows), with oxit's
/// figures in the OR, Exit and MetricsPort rows and zero elsewhere.
#[test]
fn connections_as_c_tor_writes_them() {
    use crate::runtime::ConnCounts;
    let traffic: Arc<[Traffic]> = (0..2).map(|_| Traffic::default()).collect();
    let c0 = ConnCounts {
        or_initiated: [2, 1],
        or_received: [10, 0],
        or_rejected: [3, 0],
        or_open_received: [4, 0],
        exit_initiated: [7, 2],
        exit_rejected: [1, 1],
        exit_open: [5, 0],
        listeners: [1, 1],
        listeners_created: [1, 1],
        ..ConnCounts::default()
    };
    let c1 = ConnCounts {
        or_received: [5, 0],
        or_open_initiated: [1, 0],
        listeners: [1, 1],
        listeners_created: [1, 1],
        ..ConnCounts::default()
    };
    crate::runtime::plane_store(&traffic[0].conns, &c0.to_array());
    crate::runtime::plane_store(&traffic[1].conns, &c1.to_array());
    let src = sources(traffic);
    let own = OwnConns {
        listener: Some(0),
        accepted: [6, 0],
        current: Some(0),
    };
    let page = render_with(&src, &own);
    let series = |name: &str, ty: &str, dir: &str, state: &str, fam: &str| {
        format!("{name}{{type=\"{ty}\",direction=\"{dir}\",state=\"{state}\",family=\"{fam}\"}}")
    };
    let total = "tor_relay_connections_total";
    let gauge = "tor_relay_connections";
    for (s, v) in [
        (series(total, "OR", "initiated", "created", "ipv4"), 2),
        (series(total, "OR", "initiated", "created", "ipv6"), 1),
        (series(total, "OR", "received", "created", "ipv4"), 15),
        (series(total, "OR", "received", "rejected", "ipv4"), 3),
        (series(total, "Exit", "initiated", "created", "ipv6"), 2),
        // C's quirk: rejected rows say "received", for exits too.
        (series(total, "Exit", "received", "rejected", "ipv4"), 1),
        (
            series(total, "OR listener", "initiated", "created", "ipv6"),
            2,
        ),
        (series(total, "Metrics", "received", "created", "ipv4"), 6),
        (
            series(total, "Metrics listener", "initiated", "created", "ipv4"),
            1,
        ),
        (series(total, "Socks", "received", "rejected", "ipv6"), 0),
        (series(gauge, "OR", "received", "opened", "ipv4"), 4),
        (series(gauge, "OR", "initiated", "opened", "ipv4"), 1),
        (series(gauge, "Exit", "initiated", "opened", "ipv4"), 5),
        (
            series(gauge, "OR listener", "initiated", "opened", "ipv4"),
            2,
        ),
        (series(gauge, "Metrics", "received", "opened", "ipv4"), 1),
        (
            series(gauge, "Control listener", "initiated", "opened", "ipv6"),
            0,
        ),
    ] {
        let line = format!("{s} {v}");
        assert!(page.lines().any(|l| l == line), "{line}\n{page}");
    }
    assert!(page.contains("# TYPE tor_relay_connections_total counter\n"));
    assert!(page.contains("# TYPE tor_relay_connections gauge\n"));
    let count = |prefix: &str| page.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(count("tor_relay_connections_total{"), 17 * 6);
    assert_eq!(count("tor_relay_connections{"), 17 * 4);
    // No gauge row is "rejected", as in C.
    assert!(
        !page
            .lines()
            .any(|l| l.starts_with("tor_relay_connections{") && l.contains("rejected"))
    );
}

/// oxit's own families beside them: cells and TLS bytes per worker,
/// circuit close reasons, DNS per nameserver and the connect latency
/// histogram, each summed over the workers where it has no worker label.
#[test]
fn oxit_families_cells_closes_dns_and_connect_latency() {
    use crate::runtime::{CONNECT_BUCKETS, ConnectHistogram};
    use std::time::Duration;
    let ns: Vec<std::net::SocketAddr> = vec![
        "192.0.2.53:53".parse().unwrap(),
        "[2001:db8::53]:53".parse().unwrap(),
    ];
    let traffic: Arc<[Traffic]> = (0..2).map(|_| Traffic::new(&ns)).collect();
    traffic[0].cells[0].store(1000, Ordering::Relaxed);
    traffic[1].cells[1].store(42, Ordering::Relaxed);
    traffic[1].tls[0].store(514_000, Ordering::Relaxed);
    // 2 CHANNEL_CLOSED (8) on one worker, 1 on the other; a code no name
    // covers.
    traffic[0].closed[8].store(2, Ordering::Relaxed);
    traffic[1].closed[8].store(1, Ordering::Relaxed);
    traffic[1].closed[13].store(4, Ordering::Relaxed);
    // Queries: 10 + 5 to the first nameserver; 3 timeouts (the last
    // error slot) at the second.
    traffic[0].nameservers[0].1[0].store(10, Ordering::Relaxed);
    traffic[1].nameservers[0].1[0].store(5, Ordering::Relaxed);
    traffic[1].nameservers[1].1[8].store(3, Ordering::Relaxed);
    let mut h0 = ConnectHistogram::default();
    h0.observe(Duration::from_millis(3));
    h0.observe(Duration::from_millis(40));
    let mut h1 = ConnectHistogram::default();
    h1.observe(Duration::from_secs(30));
    crate::runtime::plane_store(&traffic[0].connect, &h0.to_array());
    crate::runtime::plane_store(&traffic[1].connect, &h1.to_array());
    let src = sources(traffic);
    let page = render(&src);
    for line in [
        "# TYPE oxit_worker_cells_total counter",
        "oxit_worker_cells_total{worker=\"0\",direction=\"received\"} 1000",
        "oxit_worker_cells_total{worker=\"1\",direction=\"sent\"} 42",
        "# TYPE oxit_worker_tls_bytes_total counter",
        "oxit_worker_tls_bytes_total{worker=\"1\",direction=\"read\"} 514000",
        "oxit_worker_tls_bytes_total{worker=\"0\",direction=\"written\"} 0",
        "# TYPE oxit_circuits_closed_total counter",
        "oxit_circuits_closed_total{reason=\"CHANNEL_CLOSED\"} 3",
        "oxit_circuits_closed_total{reason=\"NONE\"} 0",
        "oxit_circuits_closed_total{reason=\"NOSUCHSERVICE\"} 0",
        "oxit_circuits_closed_total{reason=\"unknown\"} 4",
        "# TYPE oxit_dns_queries_total counter",
        "oxit_dns_queries_total{resolver=\"192.0.2.53:53\"} 15",
        "oxit_dns_queries_total{resolver=\"[2001:db8::53]:53\"} 0",
        "# TYPE oxit_dns_errors_total counter",
        "oxit_dns_errors_total{resolver=\"[2001:db8::53]:53\",reason=\"tor_timeout\"} 3",
        "oxit_dns_errors_total{resolver=\"192.0.2.53:53\",reason=\"serverfailed\"} 0",
        "# TYPE oxit_exit_connect_seconds histogram",
        "oxit_exit_connect_seconds_bucket{le=\"0.005\"} 1",
        "oxit_exit_connect_seconds_bucket{le=\"0.025\"} 1",
        "oxit_exit_connect_seconds_bucket{le=\"0.05\"} 2",
        "oxit_exit_connect_seconds_bucket{le=\"10\"} 2",
        "oxit_exit_connect_seconds_bucket{le=\"+Inf\"} 3",
        "oxit_exit_connect_seconds_sum 30.043",
        "oxit_exit_connect_seconds_count 3",
    ] {
        assert!(page.lines().any(|l| l == line), "{line}\n{page}");
    }
    assert_eq!(
        page.lines()
            .filter(|l| l.starts_with("oxit_exit_connect_seconds_bucket"))
            .count(),
        CONNECT_BUCKETS.len() + 1
    );
    assert_eq!(
        page.lines()
            .filter(|l| l.starts_with("oxit_circuits_closed_total{"))
            .count(),
        crate::proto::circuit::CLOSE_REASON_SLOTS
    );
}
