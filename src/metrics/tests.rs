use super::*;
use crate::exit::policy::parse_policy_list;

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
    let flags = Flags::RUNNING.bits() | Flags::EXIT.bits();
    let src = Sources {
        traffic,
        flags: Arc::new(AtomicU32::new(u32::from(flags))),
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
    ] {
        assert!(page.lines().any(|l| l == line), "{line}\n{page}");
    }
    // C's unlabelled series beside the labelled one.
    assert!(
        page.lines()
            .any(|l| l.starts_with("tor_relay_load_socket_total "))
    );
}
