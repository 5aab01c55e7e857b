//! The MetricsPort: Prometheus text on `GET /metrics`, as C tor 0.4.9
//! serves it (feature/metrics/metrics.c, feature/relay/relay_metrics.c),
//! with C tor's family names, types, labels and quirks for the families
//! oxit has, and oxit's own per-core families beside them (`oxit_*`).
//!
//! Owns: the page (gathered on request from what the workers already
//! publish once per turn, never from the cell path), the HTTP exchange
//! (sans-IO: request bytes in, response bytes out) and
//! `MetricsPortPolicy`, and the small thread that serves them. The workers'
//! side is [`crate::runtime::Traffic`].

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::dir::consensus::Flags;
use crate::exit::policy::{Action, PolicyRule};
use crate::runtime::{Traffic, load_slots};

/// Who may read the metrics: `MetricsPortPolicy`, exit-policy syntax with
/// the ports ignored; the first rule whose address matches decides, and
/// with no match (or no policy) the answer is no (metrics.c:
/// metrics_policy_permits_address).
#[derive(Debug, Clone, Default)]
pub struct MetricsPolicy(pub Vec<PolicyRule>);

impl MetricsPolicy {
    pub fn permits(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.0
            .iter()
            .find(|r| r.addr.contains(addr))
            .is_some_and(|r| r.action == Action::Accept)
    }
}

/// What the page is made from: the workers' published counters and what
/// the control thread knows.
#[derive(Clone)]
pub struct Sources {
    pub traffic: Arc<[Traffic]>,
    /// Our flags in the current consensus (bits of [`Flags`]; 0 when it
    /// does not list us), set by the control thread.
    pub flags: Arc<AtomicU32>,
    /// When the Ed25519 signing certificate expires (unix seconds; 0:
    /// unknown), set by the control thread at start and at each renewal.
    pub signing_cert_expiry: Arc<AtomicU64>,
    /// The Ed25519 master secret key is not loaded (C's
    /// `OfflineMasterKey`): nothing renews the signing certificate.
    pub offline_master_key: bool,
    /// The effective `MaxMemInQueues` (bytes) the workers' queues are held
    /// to, all workers together (the figure log_mem_limit reports), as
    /// the control thread last gave it to them.
    pub max_mem_in_queues: Arc<AtomicU64>,
    /// The relay's bandwidth buckets (how often they ran empty).
    pub rate_limit: Arc<crate::runtime::ratelimit::RateLimit>,
    /// The ControlPort's connections.
    pub control: Arc<ControlConns>,
}

/// The ControlPort's TCP listeners and connections, by address family
/// (0 IPv4, 1 IPv6), for `tor_relay_connections{,_total}`'s "Control
/// listener" and "Control" rows. Written by the ControlPort's threads,
/// once per connection. Unix sockets are not counted: C tor's rows have
/// only the two IP families.
#[derive(Debug, Default)]
pub struct ControlConns {
    pub listeners: [AtomicU64; 2],
    pub accepted: [AtomicU64; 2],
    pub open: [AtomicU64; 2],
}

impl ControlConns {
    fn load(a: &[AtomicU64; 2]) -> [u64; 2] {
        load_slots(a)
    }
}

/// A counter family of two directions per worker (`worker`,
/// `direction` labels), `values` giving each worker's two.
fn per_worker_pair(
    p: &mut Page,
    workers: &[Traffic],
    name: &str,
    help: &str,
    directions: [&str; 2],
    values: impl Fn(&Traffic) -> [u64; 2],
) {
    p.family(name, Kind::Counter, help);
    for (i, t) in workers.iter().enumerate() {
        let w = i.to_string();
        for (dir, v) in directions.into_iter().zip(values(t)) {
            p.sample(name, &[("worker", &w), ("direction", dir)], v);
        }
    }
}

/// Every worker's slots `pick`, added up.
fn sum_slots<const N: usize>(
    workers: &[Traffic],
    pick: impl Fn(&Traffic) -> &[AtomicU64],
) -> [u64; N] {
    let mut total = [0u64; N];
    for t in workers {
        for (sum, v) in total.iter_mut().zip(load_slots::<N>(pick(t))) {
            *sum = sum.saturating_add(v);
        }
    }
    total
}

/// C tor's circuit-level families: congestion control, the onion-service
/// cells, DESTROY and DROP cells and protocol violations
/// (relay_metrics.c), from every worker's circuit table.
fn circuit_families(p: &mut Page, workers: &[Traffic]) {
    use crate::proto::cc::CcStats;
    use crate::proto::circuit::CircCounter;
    let mut cc = CcStats::default();
    for t in workers {
        cc.add(&CcStats::from_array(load_slots(&t.cc)));
    }
    let circ: [u64; CircCounter::SLOTS] = sum_slots(workers, |t| &t.circ);
    let n = |what: CircCounter| circ.get(what as usize).copied().unwrap_or(0);

    let name = "tor_relay_congestion_control_total";
    p.family(name, Kind::Counter, "Congestion control related counters");
    let rows = [
        ("starvation", "rtt_reset", cc.rtt_reset),
        ("clock_stalls", "rtt_skipped", cc.clock_stalls),
        ("flow_control", "xoff_num_sent", cc.xoff_sent),
        ("flow_control", "xon_num_sent", cc.xon_sent),
        ("cc_limits", "above_delta", cc.above_delta),
        ("cc_limits", "above_ss_cwnd_max", cc.above_ss_cwnd_max),
        ("cc_limits", "below_ss_inc_floor", cc.below_ss_inc_floor),
        ("cc_circuits", "circs_created", cc.circs_created),
        ("cc_circuits", "circs_closed", cc.circs_closed),
        ("cc_circuits", "circs_exited_ss", cc.exited_ss),
    ];
    for (state, action, v) in rows {
        p.sample(name, &[("state", state), ("action", action)], v);
    }
    let name = "tor_relay_congestion_control";
    p.family(name, Kind::Gauge, "Congestion control related gauges");
    let rows = [
        ("slow_start_exit", "cwnd", cc.exit_ss_cwnd),
        ("slow_start_exit", "bdp", cc.exit_ss_bdp),
        ("slow_start_exit", "inc", cc.exit_ss_inc),
        ("on_circ_close", "cwnd", cc.close_cwnd),
        ("on_circ_close", "ss_cwnd", cc.close_ss_cwnd),
        ("buffers", "xon_outbuf", cc.xon_outbuf),
        ("buffers", "xoff_outbuf", cc.xoff_outbuf),
        ("cc_backoff", "chan_blocked_pct", cc.csig_blocked),
        ("cc_backoff", "gamma_drop", cc.gamma_drop),
        ("cc_backoff", "delta_drop", cc.delta_drop),
        ("cc_backoff", "ss_chan_blocked_pct", cc.ss_csig_blocked),
        ("cc_cwnd_update", "alpha_pct", cc.csig_alpha),
        ("cc_cwnd_update", "beta_pct", cc.csig_beta),
        ("cc_cwnd_update", "delta_pct", cc.csig_delta),
        ("cc_estimates", "ss_queue", cc.ss_queue),
        ("cc_estimates", "queue", cc.queue),
        ("cc_estimates", "bdp", cc.bdp),
    ];
    for (state, action, v) in rows {
        // C writes tor_llround of its average: an integer.
        let rounded = if v.avg.is_finite() && v.avg > 0.0 {
            v.avg.round() as u64
        } else {
            0
        };
        p.sample(name, &[("state", state), ("action", action)], rounded);
    }

    // Onion-service cells: oxit serves no introduction or rendezvous
    // point, so every one it receives is counted under the action C tor
    // takes when it cannot serve it (the rest stay 0, so dashboards find
    // C's series).
    let families: [(&str, &str, &[&str], &str, CircCounter); 4] = [
        (
            "tor_relay_est_rend_total",
            "Total number of EST_REND cells we received",
            &[
                "success",
                "unsuitable_circuit",
                "single_hop",
                "malformed",
                "duplicate_cookie",
                "circuit_dead",
            ],
            "unsuitable_circuit",
            CircCounter::EstRend,
        ),
        (
            "tor_relay_est_intro_total",
            "Total number of EST_INTRO cells we received",
            &["success", "malformed", "unsuitable_circuit", "circuit_dead"],
            "unsuitable_circuit",
            CircCounter::EstIntro,
        ),
        (
            "tor_relay_intro1_total",
            "Total number of INTRO1 cells we received",
            &[
                "success",
                "circuit_dead",
                "malformed",
                "unknown_service",
                "rate_limited",
                "circuit_reused",
                "single_hop",
            ],
            "unknown_service",
            CircCounter::Intro1,
        ),
        (
            "tor_relay_rend1_total",
            "Total number of REND1 cells we received",
            &[
                "success",
                "unsuitable_circuit",
                "malformed",
                "unknown_cookie",
                "circuit_dead",
            ],
            "unknown_cookie",
            CircCounter::Rend1,
        ),
    ];
    for (name, help, actions, ours, what) in families {
        p.family(name, Kind::Counter, help);
        for action in actions {
            let v = if *action == ours { n(what) } else { 0 };
            p.sample(name, &[("action", action)], v);
        }
    }

    let name = "tor_relay_destroy_cell_total";
    p.family(
        name,
        Kind::Counter,
        "Total number of DESTROY cell we received",
    );
    p.sample(name, &[], n(CircCounter::DestroyReceived));
    let name = "tor_relay_circ_proto_violation_total";
    p.family(
        name,
        Kind::Counter,
        "Total number of circuit protocol violation",
    );
    p.sample(name, &[], n(CircCounter::ProtoViolation));
    // C 0.4.9 counts here the DROP cells its padding machines send
    // (rephist.c: rep_hist_padding_count_write); oxit runs no padding
    // machine and counts what the name and help say.
    let name = "tor_relay_drop_cell_total";
    p.family(name, Kind::Counter, "Total number of DROP cell we received");
    p.sample(name, &[], n(CircCounter::DropReceived));
}

/// Prometheus text exposition, written as C tor writes it
/// (lib/metrics/prometheus.c): `# HELP`, `# TYPE`, then the samples.
#[derive(Debug, Default)]
pub struct Page {
    out: String,
}

/// A metric's type.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    /// oxit's own families only (C tor writes none).
    Histogram,
}

impl Page {
    /// Start family `name` (prefix included).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        self.out
            .push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    }

    /// One sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.series(name, labels);
        self.out.push_str(&format!(" {value}\n"));
    }

    /// One sample with a fractional value (oxit's own families: CPU
    /// seconds, which C's integer samples could give only in whole
    /// seconds).
    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.series(name, labels);
        self.out.push_str(&format!(" {value}\n"));
    }

    /// `name{k="v",...}`.
    fn series(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.out.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            self.out.push('{');
            self.out.push_str(&l.join(","));
            self.out.push('}');
        }
    }

    pub fn into_string(self) -> String {
        self.out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The consensus flags C tor reports, in its order (relay_metrics.c:
/// fill_relay_flags). oxit never is an authority, and no consensus flag
/// says Sybil to a relay: those two are always 0 for it, as for C relays
/// not listed with them.
const FLAG_TYPES: [(&str, Option<Flags>); 9] = [
    ("Fast", Some(Flags::FAST)),
    ("Exit", Some(Flags::EXIT)),
    ("Authority", Some(Flags::AUTHORITY)),
    ("Stable", Some(Flags::STABLE)),
    ("HSDir", Some(Flags::HSDIR)),
    ("Running", Some(Flags::RUNNING)),
    ("V2Dir", Some(Flags::V2DIR)),
    ("Sybil", None),
    ("Guard", Some(Flags::GUARD)),
];

/// C tor's connection types, in its order (connection.h CONN_TYPE_* 3 to
/// 20, type 10 unused; connection.c:conn_type_to_string): its
/// `tor_relay_connections{,_total}` write every one of them.
const CONN_TYPES: [&str; 17] = [
    "OR listener",
    "OR",
    "Exit",
    "Socks listener",
    "Socks",
    "Directory listener",
    "Directory",
    "Control listener",
    "Control",
    "Transparent pf/netfilter listener",
    "Transparent natd listener",
    "DNS listener",
    "Extended OR",
    "Extended OR listener",
    "HTTP tunnel listener",
    "Metrics listener",
    "Metrics",
];

/// The MetricsPort's own connections, which C tor counts as "Metrics
/// listener" and "Metrics" connections: known only to the thread that
/// serves them.
#[derive(Debug, Default, Clone, Copy)]
pub struct OwnConns {
    /// The family of the MetricsPort listener (0 IPv4, 1 IPv6); `None`
    /// when there is none (tests).
    pub listener: Option<usize>,
    /// Requests' connections accepted so far, by family, the one being
    /// answered included.
    pub accepted: [u64; 2],
    /// The family of the connection being answered.
    pub current: Option<usize>,
}

/// The samples of `tor_relay_connections_total` (`gauge` false) or
/// `tor_relay_connections` for one connection type, by family: C's rows
/// (relay_metrics.c: fill_conn_counter_values, fill_conn_gauge_values),
/// with C's quirk that a rejected connection is "received" whatever its
/// type.
struct ConnRow {
    initiated: [u64; 2],
    received: [u64; 2],
    rejected: [u64; 2],
}

fn conn_rows(p: &mut Page, name: &str, gauge: bool, row: impl Fn(&str) -> ConnRow) {
    const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];
    let state = if gauge { "opened" } else { "created" };
    for ty in CONN_TYPES {
        let r = row(ty);
        let mut rows = vec![
            ("initiated", state, r.initiated),
            ("received", state, r.received),
        ];
        if !gauge {
            rows.push(("received", "rejected", r.rejected));
        }
        for (direction, state, v) in rows {
            for (family, v) in FAMILIES.iter().zip(v) {
                p.sample(
                    name,
                    &[
                        ("type", ty),
                        ("direction", direction),
                        ("state", state),
                        ("family", family),
                    ],
                    v,
                );
            }
        }
    }
}

/// The whole page (as the MetricsPort thread serves it, `own` being its
/// own connections).
pub fn render(src: &Sources) -> String {
    render_with(src, &OwnConns::default())
}

/// [`render`], with the MetricsPort's own connections.
pub fn render_with(src: &Sources, own: &OwnConns) -> String {
    let mut p = Page::default();
    let workers = &src.traffic;
    let sum = |f: &dyn Fn(&Traffic) -> u64| workers.iter().map(f).sum::<u64>();
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);

    let name = "tor_relay_traffic_bytes";
    p.family(name, Kind::Counter, "Traffic related counters");
    p.sample(name, &[("direction", "read")], sum(&|t| ld(&t.read)));
    p.sample(name, &[("direction", "written")], sum(&|t| ld(&t.written)));

    let name = "tor_relay_circuits_total";
    p.family(name, Kind::Gauge, "Total number of circuits");
    p.sample(name, &[("state", "opened")], sum(&|t| ld(&t.circuits)));

    let name = "tor_relay_flag";
    p.family(name, Kind::Gauge, "Relay flags from consensus");
    let bits = src.flags.load(Ordering::Relaxed);
    let ours = Flags::from_bits(u16::try_from(bits).unwrap_or(0));
    for (ty, flag) in FLAG_TYPES {
        let on = flag.is_some_and(|f| ours.contains(f));
        p.sample(name, &[("type", ty)], u64::from(on));
    }

    let mut onion = crate::proto::circuit::OnionStats::default();
    let mut dos = crate::proto::dos::DosStats::default();
    for t in workers.iter() {
        onion.add(&crate::proto::circuit::OnionStats::from_array(load_slots(
            &t.onion,
        )));
        dos.add(&crate::proto::dos::DosStats::from_array(load_slots(&t.dos)));
    }
    let name = "tor_relay_load_onionskins_total";
    p.family(name, Kind::Counter, "Total number of onionskins handled");
    // C's per-type counts: handshakes assigned and creates dropped. oxit's
    // queue counts ntor and ntor-v3 drops together; they are reported as
    // ntor's.
    let rows: [(&str, u64, u64); 4] = [
        ("tap", 0, 0),
        ("fast", onion.processed[0], onion.dropped[0]),
        ("ntor", onion.assigned[0], onion.dropped[1]),
        ("ntor_v3", onion.assigned[1], 0),
    ];
    for (ty, processed, dropped) in rows {
        p.sample(name, &[("type", ty), ("action", "processed")], processed);
        p.sample(name, &[("type", ty), ("action", "dropped")], dropped);
    }

    let name = "tor_relay_dos_total";
    p.family(
        name,
        Kind::Counter,
        "Denial of Service defenses related counters",
    );
    let rows: [(&str, u64); 10] = [
        ("circuit_rejected", dos.cc_rejected_cells),
        ("circuit_killed_max_cell", dos.circ_max_cell_killed),
        ("circuit_killed_max_cell_outq", 0),
        ("marked_address", dos.cc_marked_addrs),
        ("marked_address_maxq", dos.cc_marked_addrs_max_queue),
        ("conn_rejected", dos.conn_addr_connect_rejected),
        ("concurrent_conn_rejected", dos.conn_addr_rejected),
        ("single_hop_refused", 0),
        ("introduce2_rejected", 0),
        ("stream_rejected", dos.stream_rejected),
    ];
    for (ty, v) in rows {
        p.sample(name, &[("type", ty)], v);
    }

    let dns: [u64; crate::runtime::DNS_FIELDS] = sum_slots(workers, |t| &t.dns);
    let name = "tor_relay_exit_dns_query_total";
    p.family(
        name,
        Kind::Counter,
        "Total number of DNS queries done by this relay",
    );
    p.sample(name, &[], dns[0]);
    let name = "tor_relay_exit_dns_error_total";
    p.family(
        name,
        Kind::Counter,
        "Total number of DNS errors encountered by this relay",
    );
    for (reason, v) in crate::exit::dns::DNS_RESULT_NAMES
        .iter()
        .zip(dns.iter().skip(2))
    {
        p.sample(name, &[("reason", reason)], *v);
    }

    let name = "tor_relay_streams_total";
    p.family(name, Kind::Counter, "Total number of streams");
    p.sample(
        name,
        &[("type", "BEGIN")],
        sum(&|t| t.streams.first().map_or(0, ld)),
    );
    p.sample(name, &[("type", "BEGIN_DIR")], 0);
    p.sample(
        name,
        &[("type", "RESOLVE")],
        sum(&|t| t.streams.get(1).map_or(0, ld)),
    );

    let mut conns = crate::runtime::ConnCounts::default();
    for t in workers.iter() {
        conns.add(&crate::runtime::ConnCounts::from_array(load_slots(
            &t.conns,
        )));
    }
    let one = |f: Option<usize>| std::array::from_fn(|i| u64::from(f == Some(i)));
    let none = [0u64; 2];
    let name = "tor_relay_connections_total";
    p.family(
        name,
        Kind::Counter,
        "Total number of created/rejected connections",
    );
    conn_rows(&mut p, name, false, |ty| match ty {
        "OR listener" => ConnRow {
            initiated: conns.listeners_created,
            received: none,
            rejected: none,
        },
        "OR" => ConnRow {
            initiated: conns.or_initiated,
            received: conns.or_received,
            rejected: conns.or_rejected,
        },
        "Exit" => ConnRow {
            initiated: conns.exit_initiated,
            received: none,
            rejected: conns.exit_rejected,
        },
        "Metrics listener" => ConnRow {
            initiated: one(own.listener),
            received: none,
            rejected: none,
        },
        "Metrics" => ConnRow {
            initiated: none,
            received: own.accepted,
            rejected: none,
        },
        "Control listener" => ConnRow {
            initiated: ControlConns::load(&src.control.listeners),
            received: none,
            rejected: none,
        },
        "Control" => ConnRow {
            initiated: none,
            received: ControlConns::load(&src.control.accepted),
            rejected: none,
        },
        _ => ConnRow {
            initiated: none,
            received: none,
            rejected: none,
        },
    });
    let name = "tor_relay_connections";
    p.family(name, Kind::Gauge, "Total number of opened connections");
    conn_rows(&mut p, name, true, |ty| {
        let (initiated, received) = match ty {
            "OR listener" => (conns.listeners, none),
            "OR" => (conns.or_open_initiated, conns.or_open_received),
            "Exit" => (conns.exit_open, none),
            "Metrics listener" => (one(own.listener), none),
            "Metrics" => (none, one(own.current)),
            "Control listener" => (ControlConns::load(&src.control.listeners), none),
            "Control" => (none, ControlConns::load(&src.control.open)),
            _ => (none, none),
        };
        ConnRow {
            initiated,
            received,
            rejected: none,
        }
    });

    let name = "tor_relay_load_socket_total";
    p.family(name, Kind::Gauge, "Total number of sockets");
    let (open, max) = sockets();
    p.sample(name, &[("state", "opened")], open);
    p.sample(name, &[], max);

    let name = "tor_relay_load_tcp_exhaustion_total";
    p.family(
        name,
        Kind::Counter,
        "Total number of times we ran out of TCP ports",
    );
    p.sample(name, &[], sum(&|t| t.streams.get(2).map_or(0, ld)));

    let name = "tor_relay_load_oom_bytes_total";
    p.family(
        name,
        Kind::Counter,
        "Total number of bytes the OOM has freed by subsystem",
    );
    // oxit keeps no GeoIP table or HSDir cache: nothing there to free.
    let rows: [(&str, u64); 4] = [
        ("cell", sum(&|t| t.oom.first().map_or(0, ld))),
        ("dns", sum(&|t| t.oom.get(1).map_or(0, ld))),
        ("geoip", 0),
        ("hsdir", 0),
    ];
    for (subsys, v) in rows {
        p.sample(name, &[("subsys", subsys)], v);
    }

    // C writes this only with OfflineMasterKey (relay_metrics.c:
    // fill_signing_cert_expiry), where the operator has to renew by hand.
    // oxit writes it always: the alert rules operators already run
    // (ansible-relayor's TorCertificateExpiry*) then watch every relay,
    // and a relay whose master key is online renews long before they fire.
    let expiry = src.signing_cert_expiry.load(Ordering::Relaxed);
    if expiry > 0 {
        let name = "tor_relay_signing_cert_expiry_timestamp";
        p.family(
            name,
            Kind::Gauge,
            "Timestamp at which the current online keys will expire",
        );
        p.sample(name, &[], expiry);
    }
    // What tells an expiry that needs the operator from one the relay
    // deals with itself a day before (tuning/prometheus-alerts.yml).
    let name = "oxit_offline_master_key";
    p.family(
        name,
        Kind::Gauge,
        "1 when the Ed25519 master identity secret key is offline, so that only the operator \
         can renew the signing certificate before tor_relay_signing_cert_expiry_timestamp",
    );
    p.sample(name, &[], u64::from(src.offline_master_key));

    let name = "tor_relay_load_global_rate_limit_reached_total";
    p.family(
        name,
        Kind::Counter,
        "Total number of global connection bucket limit reached",
    );
    let [read, write] = src.rate_limit.reached();
    p.sample(name, &[("side", "read")], read);
    p.sample(name, &[("side", "write")], write);

    circuit_families(&mut p, workers);

    let name = "tor_bug_reached_count";
    p.family(
        name,
        Kind::Counter,
        "Total number of BUG() and similar assertion reached",
    );
    p.sample(name, &[], crate::bug::count());

    // oxit's own: per core, what C tor cannot have.
    per_worker_pair(
        &mut p,
        workers,
        "oxit_worker_traffic_bytes",
        "Bytes read and written on links and exit connections, per worker thread (one per core)",
        ["read", "written"],
        |t| [ld(&t.read), ld(&t.written)],
    );
    let name = "oxit_worker_circuits";
    p.family(name, Kind::Gauge, "Circuits per worker thread");
    for (i, t) in workers.iter().enumerate() {
        p.sample(name, &[("worker", &i.to_string())], ld(&t.circuits));
    }
    let name = "oxit_worker_queued_bytes";
    p.family(
        name,
        Kind::Gauge,
        "Bytes a worker holds in its queues (links, exit streams, onion queue, DNS cache, conflux), \
         as MaxMemInQueues counts them",
    );
    for (i, t) in workers.iter().enumerate() {
        p.sample(name, &[("worker", &i.to_string())], ld(&t.mem));
    }
    let name = "oxit_dns_cache_hits_total";
    p.family(
        name,
        Kind::Counter,
        "Exit lookups answered from the workers' DNS caches without a query",
    );
    p.sample(name, &[], dns[1]);
    let name = "oxit_process_resident_memory_bytes";
    p.family(name, Kind::Gauge, "Resident memory of the oxit process");
    p.sample(name, &[], resident_bytes());

    // CPU time: what a core costs, beside the bytes it carried (the cost
    // per GiB that bench/run.sh reports as relay_cpu_s_per_gib).
    let tick = clock_tick_seconds();
    let name = "oxit_process_cpu_seconds_total";
    p.family(
        name,
        Kind::Counter,
        "User and system CPU time of the oxit process, all threads, in seconds",
    );
    let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    p.sample_f64(name, &[], ticks_of_stat(&own).unwrap_or(0) as f64 * tick);
    let name = "oxit_worker_cpu_seconds_total";
    p.family(
        name,
        Kind::Counter,
        "User and system CPU time of each worker thread (one per core), in seconds",
    );
    let cpu = worker_cpu_ticks(workers.len());
    for (i, ticks) in cpu.iter().enumerate() {
        p.sample_f64(name, &[("worker", &i.to_string())], *ticks as f64 * tick);
    }
    let name = "oxit_max_mem_in_queues_bytes";
    p.family(
        name,
        Kind::Gauge,
        "The effective MaxMemInQueues: past this sum of oxit_worker_queued_bytes the workers \
         free queues (tor_relay_load_oom_bytes_total)",
    );
    p.sample(name, &[], src.max_mem_in_queues.load(Ordering::Relaxed));

    per_worker_pair(
        &mut p,
        workers,
        "oxit_worker_cells_total",
        "Cells received and sent on links, per worker thread (one per core)",
        ["received", "sent"],
        |t| [ld(&t.cells[0]), ld(&t.cells[1])],
    );
    per_worker_pair(
        &mut p,
        workers,
        "oxit_worker_tls_bytes_total",
        "TLS bytes read and written on links (every link, private addresses included), \
         per worker thread",
        ["read", "written"],
        |t| [ld(&t.tls[0]), ld(&t.tls[1])],
    );
    let body = crate::proto::cell::CELL_BODY_LEN as u64;
    per_worker_pair(
        &mut p,
        workers,
        "oxit_worker_relay_crypto_bytes_total",
        "Relay cell bodies through the relay crypto layer, per worker thread: forward \
         (decrypted, from clients' side) and backward (encrypted, toward them)",
        ["forward", "backward"],
        |t| load_slots::<2>(&t.crypto).map(|n| n.saturating_mul(body)),
    );

    let name = "oxit_circuits_closed_total";
    p.family(
        name,
        Kind::Counter,
        "Circuits closed, by the DESTROY reason they were closed with (DESTROYED: by a peer)",
    );
    let slots = crate::proto::circuit::CLOSE_REASON_SLOTS;
    for i in 0..slots {
        let n = sum(&|t| t.closed.get(i).map_or(0, ld));
        let reason = u8::try_from(i)
            .ok()
            .and_then(|c| crate::proto::cell::DestroyReason::new(c).name())
            .unwrap_or("unknown");
        p.sample(name, &[("reason", reason)], n);
    }

    // Per nameserver, summed over the workers (each asks the same list).
    let mut servers: Vec<(
        std::net::SocketAddr,
        [u64; crate::runtime::NAMESERVER_FIELDS],
    )> = Vec::new();
    for t in workers.iter() {
        for (addr, slots) in t.nameservers.iter() {
            let i = match servers.iter().position(|(a, _)| a == addr) {
                Some(i) => i,
                None => {
                    servers.push((*addr, [0; crate::runtime::NAMESERVER_FIELDS]));
                    servers.len() - 1
                }
            };
            if let Some((_, sum)) = servers.get_mut(i) {
                for (x, slot) in sum.iter_mut().zip(slots.iter()) {
                    *x += ld(slot);
                }
            }
        }
    }
    let name = "oxit_dns_queries_total";
    p.family(
        name,
        Kind::Counter,
        "DNS queries sent to each nameserver, retries included",
    );
    for (addr, c) in &servers {
        p.sample(name, &[("resolver", &addr.to_string())], c[0]);
    }
    let name = "oxit_dns_errors_total";
    p.family(
        name,
        Kind::Counter,
        "DNS queries each nameserver failed, by response code or tor_timeout (no answer in time), \
         retried or not",
    );
    for (addr, c) in &servers {
        let resolver = addr.to_string();
        for (reason, v) in crate::exit::dns::SERVER_ERROR_NAMES
            .iter()
            .zip(c.iter().skip(1))
        {
            p.sample(name, &[("resolver", &resolver), ("reason", reason)], *v);
        }
    }

    let mut hist = crate::runtime::ConnectHistogram::default();
    for t in workers.iter() {
        hist.add(&crate::runtime::ConnectHistogram::from_array(load_slots(
            &t.connect,
        )));
    }
    let name = "oxit_exit_connect_seconds";
    p.family(
        name,
        Kind::Histogram,
        "Time from an exit stream's TCP connect to its connection, in seconds (connects that \
         failed are not counted)",
    );
    let bucket = format!("{name}_bucket");
    let mut below = 0u64;
    for (le, n) in crate::runtime::CONNECT_BUCKETS.iter().zip(hist.counts) {
        below += n;
        p.sample(&bucket, &[("le", &le.to_string())], below);
    }
    p.sample(&bucket, &[("le", "+Inf")], hist.count());
    p.sample_f64(
        &format!("{name}_sum"),
        &[],
        hist.sum_us as f64 / 1_000_000.0,
    );
    p.sample(&format!("{name}_count"), &[], hist.count());
    p.into_string()
}

/// Seconds per clock tick of /proc's CPU times (USER_HZ).
fn clock_tick_seconds() -> f64 {
    // SAFETY: sysconf reads a constant of the C library; no memory is
    // passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // 100 is USER_HZ on every architecture Linux ships a default for.
    1.0 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// utime + stime of a `/proc/.../stat` line, in clock ticks.
fn ticks_of_stat(stat: &str) -> Option<u64> {
    // The command name, in parentheses, may hold spaces and ')': the
    // fields are counted from its last ')'. utime and stime are fields 14
    // and 15 of the line, 12th and 13th after the name.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

/// The worker index of a thread named as the data plane names its
/// workers (`oxit-worker-N`).
fn worker_index(comm: &str) -> Option<usize> {
    comm.trim_end().strip_prefix("oxit-worker-")?.parse().ok()
}

/// CPU ticks of each worker thread, found by name under /proc/self/task:
/// the workers publish nothing for this, so the cell path stays as it is.
fn worker_cpu_ticks(n: usize) -> Vec<u64> {
    let mut out = vec![0; n];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let Some(i) = std::fs::read_to_string(dir.join("comm"))
            .ok()
            .and_then(|c| worker_index(&c))
        else {
            continue;
        };
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        if let (Some(slot), Some(t)) = (out.get_mut(i), ticks_of_stat(&stat)) {
            *slot = t;
        }
    }
    out
}

/// Open descriptors and the descriptor limit (C: open sockets and
/// max sockets).
fn sockets() -> (u64, u64) {
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let max = crate::os::nofile_limit().unwrap_or(0);
    (open, max)
}

fn resident_bytes() -> u64 {
    // statm: size resident shared ... in pages.
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * 4096
}

/// What to answer a request (metrics.c:metrics_connection_process_inbuf).
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not a whole request head yet.
    More,
    /// Write this, then close.
    Reply(Vec<u8>),
}

/// Request bytes so far → the answer; `page` builds the body of a
/// `GET /metrics`.
pub fn answer(request: &[u8], page: impl FnOnce() -> String) -> Answer {
    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
        if request.len() > MAX_REQUEST {
            return Answer::Reply(status(400, "Bad Request"));
        }
        return Answer::More;
    };
    let head = String::from_utf8_lossy(request.get(..end).unwrap_or_default());
    let mut words = head.lines().next().unwrap_or("").split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if path.is_empty() || !words.next().is_some_and(|v| v.starts_with("HTTP/")) {
        return Answer::Reply(status(400, "Bad Request"));
    }
    if method != "GET" {
        return Answer::Reply(status(405, "Method Not Allowed"));
    }
    if path != "/metrics" {
        return Answer::Reply(status(404, "Not Found"));
    }
    let body = page();
    let mut out = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    Answer::Reply(out)
}

/// Longest request head read.
const MAX_REQUEST: usize = 8192;

fn status(code: u16, text: &str) -> Vec<u8> {
    format!("HTTP/1.0 {code} {text}\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

/// Serve the MetricsPort on `listener` until the process ends: one
/// connection at a time (a scrape is one short request), each bounded to
/// a few seconds, peers the policy refuses closed without a reply.
/// The policy is shared with the control thread, which swaps it on a
/// reload (SIGHUP).
pub fn serve(listener: TcpListener, policy: Arc<std::sync::RwLock<MetricsPolicy>>, src: Sources) {
    let mut own = OwnConns {
        listener: listener
            .local_addr()
            .ok()
            .map(|a| crate::runtime::family_index(a.ip())),
        ..OwnConns::default()
    };
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        let Ok(peer) = s.peer_addr() else { continue };
        // C counts a metrics connection when accepted, before its policy
        // check (metrics.c checks the policy on the request).
        let family = crate::runtime::family_index(peer.ip());
        if let Some(n) = own.accepted.get_mut(family) {
            *n += 1;
        }
        if !policy.read().is_ok_and(|p| p.permits(peer.ip())) {
            tracing::debug!("MetricsPort: refused {} (MetricsPortPolicy)", peer.ip());
            continue;
        }
        own.current = Some(family);
        if let Err(e) = exchange(&mut s, &src, &own) {
            tracing::debug!("MetricsPort: {}: {e}", peer.ip());
        }
        own.current = None;
    }
}

fn exchange(s: &mut TcpStream, src: &Sources, own: &OwnConns) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Answer::Reply(r) = answer(&buf, || render_with(src, own)) {
            return s.write_all(&r);
        }
    }
}

#[cfg(test)]
mod tests;
