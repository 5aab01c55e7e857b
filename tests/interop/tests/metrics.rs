//! The MetricsPort against C tor 0.4.9's, in the same test: oxit (both io
//! backends) and a C tor relay each serve `GET /metrics` under
//! `MetricsPortPolicy accept 127.0.0.1`. Every `tor_*` family oxit writes
//! must be one C tor writes too, with the same type and the same label
//! keys, and every series C tor writes oxit writes too (same label
//! values), so that dashboards and alert rules made for C tor read oxit's.
//! A peer the policy refuses gets no reply, and other requests get C
//! tor's status codes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use oxit_interop::harness::{
    IoBackend, OxitOptions, OxitProcess, TorProcess, TorRole, free_tcp_port, metrics,
};
use oxit_interop::rawclient::{RawClient, tcp_connect};

const STEP: Duration = Duration::from_secs(10);

/// Traffic from 127.0.0.1 counts only with `CountPrivateBandwidth`, in
/// both relays.
fn policy_lines(port: u16) -> String {
    format!(
        "MetricsPort 127.0.0.1:{port}\nMetricsPortPolicy accept 127.0.0.1\nCountPrivateBandwidth 1\n"
    )
}

/// One request from `from`; the whole answer (empty when the server closed
/// without one).
fn request(addr: SocketAddr, from: Option<IpAddr>, req: &str) -> String {
    let mut s = tcp_connect(addr, from, STEP).expect("connect to the MetricsPort");
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn scrape(addr: SocketAddr) -> String {
    let r = request(addr, None, "GET /metrics HTTP/1.0\r\n\r\n");
    let (head, body) = r.split_once("\r\n\r\n").unwrap_or(("", ""));
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{r}");
    assert!(
        head.contains("Content-Type: text/plain; charset=utf-8"),
        "{head}"
    );
    body.to_owned()
}

/// C tor families its page has only under some configuration, with the
/// type and label keys relay_metrics.c gives them: oxit writes them always.
/// `tor_relay_signing_cert_expiry_timestamp` needs `OfflineMasterKey 1` in
/// C tor; operators' alert rules (ansible-relayor's TorCertificateExpiry*)
/// read it, so oxit serves it for every relay.
const C_CONDITIONAL: [(&str, &str, &[&str]); 1] =
    [("tor_relay_signing_cert_expiry_timestamp", "gauge", &[])];

/// Per family: its type, and the label-key sets of its samples.
type Families = BTreeMap<String, (String, BTreeSet<Vec<String>>)>;

fn families(page: &str) -> Families {
    let mut f = Families::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, ""));
            f.entry(name.to_owned()).or_default().0 = ty.to_owned();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, _) = line.rsplit_once(' ').unwrap_or((line, ""));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let keys: Vec<String> = labels
            .split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| kv.split('=').next().unwrap_or("").to_owned())
            .collect();
        f.entry(name.to_owned()).or_default().1.insert(keys);
    }
    f
}

/// Every sample's series (name and labels, as written), of `tor_*`
/// families only.
fn series(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| l.starts_with("tor_"))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        .collect()
}

fn value(page: &str, series: &str) -> Option<u64> {
    metrics::sample(page, series).map(|v| v as u64)
}

fn metrics_like_c_tor(backend: IoBackend) {
    let c_port = free_tcp_port().unwrap();
    let _ctor =
        TorProcess::start_with(TorRole::Middle, &policy_lines(c_port)).expect("C tor relay");
    let c_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, c_port));
    let port = free_tcp_port().unwrap();
    let mut opts = OxitOptions::new(backend);
    opts.extra_torrc = policy_lines(port);
    let oxit = OxitProcess::start(&opts).expect("start oxit");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    // A circuit, so that the counters have something to count.
    let mut c = RawClient::connect(oxit.or_addr()).expect("link to oxit");
    c.create_fast(STEP).expect("CREATE_FAST");
    let deadline = Instant::now() + STEP;
    let page = loop {
        let page = scrape(addr);
        if value(&page, "tor_relay_circuits_total{state=\"opened\"}") == Some(1) {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "no open circuit counted:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(value(&page, "tor_relay_traffic_bytes{direction=\"read\"}").unwrap_or(0) > 0);
    assert_eq!(
        value(
            &page,
            "tor_relay_load_onionskins_total{type=\"fast\",action=\"processed\"}"
        ),
        Some(1),
        "{page}"
    );
    assert!(value(&page, "oxit_process_resident_memory_bytes").unwrap_or(0) > 1 << 20);
    // Our link is a received OR connection, and this scrape the open
    // Metrics one, as C tor counts them.
    let conn = |name: &str, ty: &str, dir: &str, state: &str| {
        let s = format!(
            "{name}{{type=\"{ty}\",direction=\"{dir}\",state=\"{state}\",family=\"ipv4\"}}"
        );
        value(&page, &s).unwrap_or_else(|| panic!("no {s}:\n{page}"))
    };
    assert!(conn("tor_relay_connections_total", "OR", "received", "created") >= 1);
    assert_eq!(
        conn("tor_relay_connections", "Metrics", "received", "opened"),
        1
    );
    assert!(
        value(
            &page,
            "oxit_worker_cells_total{worker=\"0\",direction=\"received\"}"
        )
        .is_some()
    );

    let c_page = scrape(c_addr);
    let (ours, theirs) = (families(&page), families(&c_page));
    let mut compared = 0;
    for (name, (ty, keys)) in &ours {
        if !name.starts_with("tor_") {
            assert!(
                name.starts_with("oxit_"),
                "{name}: oxit's own families say oxit_"
            );
            continue;
        }
        let conditional = C_CONDITIONAL
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, ty, keys)| {
                let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                (ty.to_string(), BTreeSet::from([keys]))
            });
        let Some((c_ty, c_keys)) = theirs.get(name).or(conditional.as_ref()) else {
            panic!("{name}: C tor 0.4.9 has no such family:\n{c_page}");
        };
        assert_eq!(ty, c_ty, "{name}: type");
        assert!(
            keys.is_subset(c_keys),
            "{name}: label keys {keys:?}, C tor's {c_keys:?}"
        );
        compared += 1;
    }
    eprintln!("[{backend:?}] {compared} families named, typed and labelled as C tor's");
    assert!(compared >= 6);
    // And the other way: every series C tor writes, oxit writes too, with
    // the same label values, so that no panel or rule made for C tor
    // finds nothing.
    let ours = series(&page);
    let missing: Vec<String> = series(&c_page)
        .into_iter()
        .filter(|s| !ours.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "C tor's series oxit lacks: {missing:#?}\n{page}"
    );
    eprintln!(
        "[{backend:?}] all {} of C tor's series are in oxit's page",
        series(&c_page).len()
    );

    // As C tor: refused peers get nothing; other requests get a status.
    let refused = request(
        addr,
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
        "GET /metrics HTTP/1.0\r\n\r\n",
    );
    assert_eq!(refused, "", "MetricsPortPolicy refuses 127.0.0.2");
    for (req, code) in [
        ("POST /metrics HTTP/1.0\r\n\r\n", "405"),
        ("GET /other HTTP/1.0\r\n\r\n", "404"),
    ] {
        let ours = request(addr, None, req);
        let c = request(c_addr, None, req);
        assert!(ours.starts_with(&format!("HTTP/1.0 {code} ")), "{ours}");
        assert!(c.contains(code), "C tor answered {c:?} to {req:?}");
    }
    drop(c);
    assert!(oxit.stop().expect("stop oxit"), "oxit exits 0");
}

#[test]
fn metrics_like_c_tor_io_uring() {
    metrics_like_c_tor(IoBackend::Uring);
}

#[test]
fn metrics_like_c_tor_epoll() {
    metrics_like_c_tor(IoBackend::Epoll);
}
