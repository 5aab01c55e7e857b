//! Seed corpora for the fuzz targets, captured from real software: the
//! plaintext a C tor 0.4.9 relay sends a client and the client sends it
//! (link handshake, CREATE_FAST / CREATE2 and their answers, relay cells,
//! DESTROY), and dnsmasq's DNS answers (A, AAAA, PTR, NXDOMAIN).
//!
//!     cargo run -p oxit-interop --example capture_seeds -- fuzz/seeds
//!
//! Writes `DIR/cell/*` (what the relay sent: cells to decode),
//! `DIR/channel/*` (what the client sent: a responder's input) and
//! `DIR/dns_reply/*`. `scripts/fuzz-seeds.sh` runs it; `scripts/fuzz.sh`
//! adds `fuzz/seeds/TARGET` to each target's corpus.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use oxit::proto::relay_msg::RelayCmd;
use oxit_interop::client::Handshake;
use oxit_interop::harness::{Dnsmasq, TorProcess, TorRole};
use oxit_interop::rawclient::RawClient;

const STEP: Duration = Duration::from_secs(10);

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("seed directory");
    std::fs::write(d.join(name), bytes).expect("seed file");
    println!("{target}/{name}: {} bytes", bytes.len());
}

/// One recorded session with the relay: `what` runs after the handshake.
fn session(
    dir: &Path,
    relay: &TorProcess,
    name: &str,
    what: impl FnOnce(&mut RawClient) -> Result<(), String>,
) {
    let mut c = RawClient::connect_tls(relay.or_addr()).expect("TLS to C tor");
    c.transcript = Some((Vec::new(), Vec::new()));
    c.send_versions(&[3, 4, 5]).expect("VERSIONS");
    c.finish_link_handshake().expect("link handshake");
    if let Err(e) = what(&mut c) {
        panic!("{name}: {e}");
    }
    // Whatever else arrives within a moment belongs to the capture.
    while let Ok(Some(_)) = c.recv_cell(Duration::from_millis(300)) {}
    let (sent, got) = c.transcript.take().expect("recording");
    write(dir, "cell", name, &got);
    write(dir, "channel", name, &sent);
}

fn main() {
    let dir: PathBuf = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".into())
        .into();
    let relay = TorProcess::start(TorRole::Middle).expect("start C tor");
    let s = |e: oxit_interop::rawclient::RawError| e.to_string();
    session(&dir, &relay, "handshake", |_| Ok(()));
    session(&dir, &relay, "create_fast_begin_dir", |c| {
        let mut circ = c.create_fast(STEP).map_err(s)?;
        c.send_relay(&mut circ, 0, false, RelayCmd::BEGIN_DIR, 1, &[])
            .map_err(s)?;
        c.recv_relay(&mut circ, STEP).map_err(s)?;
        let req = b"GET /tor/server/authority HTTP/1.0\r\n\r\n";
        c.send_relay(&mut circ, 0, false, RelayCmd::DATA, 1, req)
            .map_err(s)?;
        for _ in 0..8 {
            if c.recv_relay(&mut circ, Duration::from_secs(2))
                .map_err(s)?
                .is_none()
            {
                break;
            }
        }
        Ok(())
    });
    let hop = relay.hop(Handshake::Ntor).expect("relay keys");
    session(&dir, &relay, "create2_ntor_destroy", |c| {
        let circ = c.create2_ntor(&hop, STEP).map_err(s)?;
        // DESTROY, reason FINISHED.
        c.send_cell(circ.id, oxit::proto::cell::ChanCmd::DESTROY, &[9])
            .map_err(s)
    });

    let dns = Dnsmasq::start().expect("start dnsmasq");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
    sock.set_read_timeout(Some(STEP)).expect("timeout");
    let ptr = {
        let [a, b, c, d] = Dnsmasq::V4.octets();
        format!("{d}.{c}.{b}.{a}.in-addr.arpa")
    };
    let questions = [
        ("a", Dnsmasq::NAME.to_string(), RecordType::A),
        ("aaaa", Dnsmasq::NAME.to_string(), RecordType::AAAA),
        ("ptr", ptr, RecordType::PTR),
        ("nxdomain", "absent.oxit.test".to_string(), RecordType::A),
        ("nodata", Dnsmasq::NAME.to_string(), RecordType::MX),
    ];
    for (i, (name, q, t)) in questions.iter().enumerate() {
        let query = oxit::exit::dns::message::build_query(0x5100 + i as u16, q, *t).expect("query");
        sock.send_to(&query, dns.addr()).expect("send query");
        let mut buf = [0u8; 4096];
        let (n, _) = sock.recv_from(&mut buf).expect("dnsmasq answers");
        write(&dir, "dns_reply", name, &buf[..n]);
    }
}
