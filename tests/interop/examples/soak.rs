//! Soak: oxit as an exit behind a C tor middle, under mixed load for a
//! given time, sampled every few seconds (RSS, file descriptors, CPU) into
//! a CSV that `scripts/soak.sh` plots.
//!
//!     cargo run --release -p oxit-interop --example soak -- SECONDS OUT.csv
//!
//! The load, from `CLIENTS` threads each on its own link to the middle:
//! circuits built and torn down continually (CREATE_FAST to the middle,
//! EXTEND2 to oxit), each with a few streams to destinations run here
//! that answer, reset, stall or trickle, by name (so through oxit's
//! resolver) or by address, and lookups of names that never get an answer.
//! Loopback only; every process is started and stopped here.
//!
//! At the end the load stops, the driver waits for oxit to settle, and
//! prints the figures `scripts/soak.sh` checks: circuits built, streams,
//! file descriptors at the start and end, RSS after warm-up and at the end,
//! and whether oxit logged a panic.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use oxit::proto::relay_msg::{Begin, BeginFlags, RelayCmd};
use oxit_interop::client::Handshake;
use oxit_interop::harness::{IoBackend, OxitOptions, OxitProcess, TorProcess, TorRole};
use oxit_interop::harness::{cpu_ticks, open_fds, rss_kib};
use oxit_interop::rawclient::{CircEvent, RawClient, relay_data};

const CLIENTS: usize = 6;
const STREAMS_PER_CIRCUIT: u16 = 4;
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const STEP: Duration = Duration::from_secs(10);

/// TCP destinations of each kind, on 127.0.0.1.
struct Destinations {
    answer: SocketAddr,
    reset: SocketAddr,
    stall: SocketAddr,
    trickle: SocketAddr,
}

fn serve(kind: &'static str, stop: Arc<AtomicBool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind destination");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).ok();
            std::thread::spawn(move || match kind {
                // Read the request line, answer 64 KiB, close.
                "answer" => {
                    let mut b = [0u8; 512];
                    let _ = s.read(&mut b);
                    let _ = s.write_all(&vec![b'x'; 64 << 10]);
                }
                // Close with RST.
                "reset" => {
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                }
                // Neither read nor write for 20 s.
                "stall" => std::thread::sleep(Duration::from_secs(20)),
                // A byte every 100 ms for 5 s.
                _ => {
                    for _ in 0..50 {
                        if s.write_all(b"t").is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        }
    });
    addr
}

/// A DNS server: `*.ok.test` → 127.0.0.1, `*.silent.test` never answered,
/// anything else NXDOMAIN.
fn dns(stop: Arc<AtomicBool>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind DNS");
    sock.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let addr = sock.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(question) = q.queries.first() else {
                continue;
            };
            let name = question.name().to_ascii().to_ascii_lowercase();
            if name.trim_end_matches('.').ends_with(".silent.test") {
                continue;
            }
            let mut m = Message::response(q.metadata.id, OpCode::Query);
            m.metadata.recursion_available = true;
            m.add_queries(q.queries.clone());
            if name.trim_end_matches('.').ends_with(".ok.test")
                && question.query_type() == RecordType::A
            {
                m.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    RData::A(A("127.0.0.1".parse().unwrap())),
                ));
            } else if !name.trim_end_matches('.').ends_with(".ok.test") {
                m.metadata.response_code = ResponseCode::NXDomain;
            }
            if let Ok(b) = m.to_vec() {
                let _ = sock.send_to(&b, from);
            }
        }
    });
    addr
}

#[derive(Default)]
struct Counts {
    circuits: AtomicU64,
    streams: AtomicU64,
    errors: AtomicU64,
}

/// One client: circuits with streams of every kind, until `stop`.
fn client(
    id: usize,
    middle: SocketAddr,
    hop: oxit_interop::client::HopSpec,
    dest: Arc<Destinations>,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) {
    let mut round: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = RawClient::connect(middle) else {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        // A link carries a few dozen circuits, then goes.
        for _ in 0..32 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            round += 1;
            let built = c
                .create_fast(STEP)
                .and_then(|mut circ| c.extend2_ntor(&mut circ, &hop, STEP).map(|()| circ));
            let Ok(mut circ) = built else {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                break;
            };
            counts.circuits.fetch_add(1, Ordering::Relaxed);
            for s in 1..=STREAMS_PER_CIRCUIT {
                let pick = (round as usize * 7 + id * 3 + usize::from(s)) % 10;
                let (host, port) = match pick {
                    0..=3 => (format!("c{id}r{round}.ok.test"), dest.answer.port()),
                    4 => ("127.0.0.1".to_string(), dest.answer.port()),
                    5 => ("127.0.0.1".to_string(), dest.reset.port()),
                    6 => ("127.0.0.1".to_string(), dest.stall.port()),
                    7 => ("127.0.0.1".to_string(), dest.trickle.port()),
                    8 => (format!("c{id}r{round}.silent.test"), dest.answer.port()),
                    _ => (format!("c{id}r{round}.missing.test"), dest.answer.port()),
                };
                let Ok(body) = Begin::new(&host, port, BeginFlags::new(0))
                    .map_err(|e| e.to_string())
                    .and_then(|b| relay_data(&b).map_err(|e| e.to_string()))
                else {
                    continue;
                };
                if c.send_relay(&mut circ, 1, false, RelayCmd::BEGIN, s, &body)
                    .is_err()
                {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                counts.streams.fetch_add(1, Ordering::Relaxed);
                if pick <= 4 {
                    let _ = c.send_relay(&mut circ, 1, false, RelayCmd::DATA, s, b"GET /\r\n");
                }
            }
            // Read what comes for a moment (answers, ENDs), then drop the
            // circuit with the streams still open: stalls and trickles
            // are left to oxit to clean up.
            let until = Instant::now() + Duration::from_millis(800);
            while Instant::now() < until {
                match c.recv_relay(&mut circ, Duration::from_millis(100)) {
                    Ok(Some(CircEvent::Relay { .. })) | Ok(None) => {}
                    Ok(Some(_)) => break,
                    Err(_) => break,
                }
            }
            let _ = c.send_cell(circ.id, oxit::proto::cell::ChanCmd::DESTROY, &[9]);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(600);
    let out = args.next().unwrap_or_else(|| "soak.csv".into());
    let stop = Arc::new(AtomicBool::new(false));
    let servers_stop = Arc::new(AtomicBool::new(false));
    let dest = Arc::new(Destinations {
        answer: serve("answer", servers_stop.clone()),
        reset: serve("reset", servers_stop.clone()),
        stall: serve("stall", servers_stop.clone()),
        trickle: serve("trickle", servers_stop.clone()),
    });
    let dns = dns(servers_stop.clone());
    let middle = TorProcess::start(TorRole::Middle).expect("start C tor middle");
    let oxit = OxitProcess::start(&OxitOptions {
        dns: Some(dns),
        ..OxitOptions::new(IoBackend::Uring)
    })
    .expect("start oxit");
    let pid = oxit.pid();
    let hop = oxit.hop(Handshake::Ntor).expect("oxit keys");
    let fds_start = open_fds(pid);
    let counts = Arc::new(Counts::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (hop, dest, stop, counts) =
                (hop.clone(), dest.clone(), stop.clone(), counts.clone());
            let m = middle.or_addr();
            std::thread::spawn(move || client(id, m, hop, dest, stop, counts))
        })
        .collect();
    let mut csv = String::from("seconds,rss_mib,fds,cpu_percent,circuits,streams\n");
    let hz = 100.0; // USER_HZ on Linux
    let start = Instant::now();
    let mut last = (start, cpu_ticks(pid));
    let mut rss_warm = 0;
    let sample = |csv: &mut String, last: &mut (Instant, u64)| {
        let now = Instant::now();
        let ticks = cpu_ticks(pid);
        let cpu = (ticks - last.1) as f64 / hz / now.duration_since(last.0).as_secs_f64() * 100.0;
        *last = (now, ticks);
        let rss = rss_kib(pid) / 1024;
        csv.push_str(&format!(
            "{:.0},{rss},{},{cpu:.1},{},{}\n",
            start.elapsed().as_secs_f64(),
            open_fds(pid),
            counts.circuits.load(Ordering::Relaxed),
            counts.streams.load(Ordering::Relaxed)
        ));
        rss
    };
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(SAMPLE_EVERY);
        let rss = sample(&mut csv, &mut last);
        if start.elapsed() >= Duration::from_secs(secs / 4) && rss_warm == 0 {
            rss_warm = rss;
        }
        eprint!(
            "\r{:>5} s: {} circuits, {} streams, RSS {rss} MiB, {} fds   ",
            start.elapsed().as_secs(),
            counts.circuits.load(Ordering::Relaxed),
            counts.streams.load(Ordering::Relaxed),
            open_fds(pid)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    // The stalled destinations hold their sockets 20 s; then let oxit settle.
    servers_stop.store(true, Ordering::Relaxed);
    for _ in 0..8 {
        std::thread::sleep(SAMPLE_EVERY);
        sample(&mut csv, &mut last);
    }
    let rss_end = rss_kib(pid) / 1024;
    let fds_end = open_fds(pid);
    std::fs::write(&out, csv).expect("write CSV");
    let panicked = oxit.log().contains("panicked");
    let alive = oxit.stop().unwrap_or(false);
    println!();
    println!("circuits {}", counts.circuits.load(Ordering::Relaxed));
    println!("streams {}", counts.streams.load(Ordering::Relaxed));
    println!("client_errors {}", counts.errors.load(Ordering::Relaxed));
    println!("fds_start {fds_start}");
    println!("fds_end {fds_end}");
    println!("rss_after_warmup_mib {rss_warm}");
    println!("rss_end_mib {rss_end}");
    println!("panic {panicked}");
    println!("clean_exit {alive}");
}
