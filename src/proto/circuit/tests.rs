//! Circuit-table tests: a fake client built from the client sides in
//! `crypto` (ntor, ntor-v3, CREATE_FAST, tor1) drives one or two tables
//! with cells; no sockets, a fixed clock, seeded rngs.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, RngExt, SeedableRng, rngs::StdRng};

use super::*;
use crate::crypto::ntor::{NtorKeypair, NtorOnionKeys};
use crate::crypto::ntor_v3::NTOR3_CIRC_VERIFICATION;
use crate::crypto::tor1::Tor1ClientCircuit;
use crate::crypto::{fast, ntor, ntor_v3};
use crate::exit::policy::{self, AddrPattern, ExitPolicy, PolicyRule, PortRange};
use crate::proto::cell::{ChanBody, Create2, Created2, CreatedFast, HandshakeType};
use crate::proto::relay_msg::{
    Extend2, Extended2, LinkSpec, RelayCmd, RelayHeader, encode_relay_data, encode_relay_msg,
    parse_relay_body,
};

pub(crate) const CLIENT_CHAN: ChanId = ChanId(1);
pub(crate) const RELAY_CHAN: ChanId = ChanId(5);
pub(crate) const PREV_RELAY: [u8; 20] = [0x77; 20];

pub(crate) fn config(rng: &mut StdRng, id_byte: u8) -> CircuitConfig {
    CircuitConfig {
        onion_keys: NtorOnionKeys {
            current: NtorKeypair::generate(rng),
            previous: None,
        },
        rsa_id: [id_byte; 20],
        ed_id: [id_byte; 32],
        exit_policy: ExitPolicy::from_rules([PolicyRule::new(
            policy::Action::Reject,
            AddrPattern::ANY4,
            PortRange::single(25),
        )]),
        ipv6_exit: true,
        refuse_unknown_exits: true,
        known_relays: [PREV_RELAY].into_iter().collect(),
        extend_allow_private: false,
        own_addrs: vec!["203.0.113.1:9001".parse().unwrap()],
        circwindow: 1000,
        cc: None,
        conflux: Default::default(),
        max_queue: 2500,
        sendme_emit_min_version: 1,
        sendme_accept_min_version: 0,
        allow_nonearly_extend: false,
        allow_network_reentry: false,
        reentry: ["198.51.100.9:9001".parse().unwrap()].into_iter().collect(),
        count_private_bandwidth: false,
        dos: crate::proto::dos::DosParams::default(),
        // Most tests create circuits without ending turns: no budget limit.
        max_mem_in_queues: 8 << 30,
        hibernating: false,
        dormant: false,
        outbound: Default::default(),
        onion: OnionParams {
            turn_budget: std::time::Duration::from_secs(3600),
            ..OnionParams::default()
        },
    }
}

/// A relay and the handles to talk to it.
pub(crate) struct Relay {
    pub t: CircuitTable,
    pub cfg: Arc<CircuitConfig>,
}

pub(crate) fn relay(rng: &mut StdRng, id_byte: u8) -> Relay {
    let cfg = Arc::new(config(rng, id_byte));
    let mut t = CircuitTable::new(cfg.clone());
    t.channel_opened(CLIENT_CHAN, PeerKind::Client);
    t.channel_opened(
        RELAY_CHAN,
        PeerKind::Relay {
            rsa_id: PREV_RELAY,
            ed_id: [0x77; 32],
        },
    );
    Relay { t, cfg }
}

pub(crate) struct Client {
    pub circ: Tor1ClientCircuit,
    pub chan: ChanId,
    pub id: CircId,
}

pub(crate) fn now() -> Instant {
    // A fixed instant: the table only compares instants it was given.
    static T: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T.get_or_init(Instant::now)
}

pub(crate) fn cell(circ_id: CircId, cmd: ChanCmd, body: [u8; 509]) -> IncomingCell {
    IncomingCell { circ_id, cmd, body }
}

pub(crate) fn drain(t: &mut CircuitTable) -> Vec<Action> {
    std::iter::from_fn(|| t.poll_action()).collect()
}

pub(crate) fn body_of(data: &[u8]) -> [u8; 509] {
    let mut b = [0u8; 509];
    b[..data.len()].copy_from_slice(data);
    b
}

pub(crate) fn sent_cells(actions: &[Action]) -> Vec<(ChanId, CircId, ChanCmd, [u8; 509])> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendCell {
                chan,
                circ_id,
                cmd,
                body,
            } => Some((*chan, *circ_id, *cmd, *body)),
            _ => None,
        })
        .collect()
}

/// Send CREATE2 with `hdata` on `chan` and return the relay's CREATED2.
fn exchange_create2(
    r: &mut Relay,
    rng: &mut StdRng,
    chan: ChanId,
    circ_id: CircId,
    htype: HandshakeType,
    hdata: Vec<u8>,
) -> Created2 {
    let mut v = Vec::new();
    Create2::new(htype, hdata)
        .unwrap()
        .encode_onto(&mut v)
        .unwrap();
    r.t.handle_cells(
        chan,
        &mut [cell(circ_id, ChanCmd::CREATE2, body_of(&v))],
        now(),
        rng,
    );
    let acts = drain(&mut r.t);
    let cells = sent_cells(&acts);
    assert_eq!(cells.len(), 1, "{acts:?}");
    let (c, cid, cmd, body) = cells[0];
    assert_eq!((c, cid, cmd), (chan, circ_id, ChanCmd::CREATED2));
    Created2::decode(&body).unwrap()
}

/// Build a one-hop circuit with ntor on `chan`.
pub(crate) fn create_ntor(r: &mut Relay, rng: &mut StdRng, chan: ChanId, id: u32) -> Client {
    let b = r.cfg.onion_keys.current.public_bytes();
    let (st, hdata) = ntor::client_create(rng, &r.cfg.rsa_id, &b);
    let circ_id = CircId::new(id);
    let created = exchange_create2(r, rng, chan, circ_id, HandshakeType::NTOR, hdata.to_vec());
    let keys = ntor::client_finish(st, created.hdata()).unwrap();
    let mut circ = Tor1ClientCircuit::new();
    circ.push_hop(&keys.tor1);
    Client {
        circ,
        chan,
        id: circ_id,
    }
}

/// Build a one-hop circuit with ntor-v3 on `chan`, the client sending
/// extension list `ext`; returns the client and the relay's reply message.
pub(crate) fn create_ntor_v3(
    r: &mut Relay,
    rng: &mut StdRng,
    chan: ChanId,
    id: u32,
    ext: &[u8],
) -> (Client, Vec<u8>) {
    let b = r.cfg.onion_keys.current.public_bytes();
    let (st, hdata) =
        ntor_v3::client_create(rng, &r.cfg.ed_id, &b, ext, NTOR3_CIRC_VERIFICATION).unwrap();
    let circ_id = CircId::new(id);
    let created = exchange_create2(r, rng, chan, circ_id, HandshakeType::NTOR_V3, hdata);
    let (msg, keys) = ntor_v3::client_finish(st, created.hdata(), NTOR3_CIRC_VERIFICATION).unwrap();
    let mut circ = Tor1ClientCircuit::new();
    circ.push_hop(&keys.tor1);
    let client = Client {
        circ,
        chan,
        id: circ_id,
    };
    (client, msg)
}

/// RELAY_EARLY or RELAY.
pub(crate) fn relay_chan_cmd(early: bool) -> ChanCmd {
    if early {
        ChanCmd::RELAY_EARLY
    } else {
        ChanCmd::RELAY
    }
}

/// Encrypt a relay cell from the client for hop `hop`.
pub(crate) fn client_cell(
    cl: &mut Client,
    rng: &mut StdRng,
    hop: usize,
    cmd: RelayCmd,
    sid: u16,
    data: &[u8],
    early: bool,
) -> IncomingCell {
    let mut body = [0u8; 509];
    encode_relay_data(cmd, StreamId::new(sid), data, rng, &mut body).unwrap();
    cl.circ.encrypt_forward(hop, &mut body).unwrap();
    let c = relay_chan_cmd(early);
    cell(cl.id, c, body)
}

pub(crate) fn client_msg<'m, M: RelayBody<'m>>(
    cl: &mut Client,
    rng: &mut StdRng,
    hop: usize,
    sid: u16,
    msg: &M,
    early: bool,
) -> IncomingCell {
    let mut body = [0u8; 509];
    encode_relay_msg(StreamId::new(sid), msg, rng, &mut body).unwrap();
    let tag = cl.circ.encrypt_forward(hop, &mut body).unwrap();
    let _ = tag;
    let c = relay_chan_cmd(early);
    cell(cl.id, c, body)
}

/// Decrypt a backward cell at the client: (hop, header, data, tag).
pub(crate) fn client_recv(
    cl: &mut Client,
    mut body: [u8; 509],
) -> (usize, RelayHeader, Vec<u8>, [u8; 20]) {
    let (hop, tag) = cl.circ.decrypt_backward(&mut body).expect("recognized");
    let (hdr, data) = parse_relay_body(&body).unwrap();
    (hop, hdr, data.to_vec(), tag.0)
}

fn destroy_reasons(acts: &[Action]) -> Vec<(ChanId, CircId, u8)> {
    sent_cells(acts)
        .into_iter()
        .filter(|c| c.2 == ChanCmd::DESTROY)
        .map(|c| (c.0, c.1, c.3[0]))
        .collect()
}

/// The reason bytes of the DESTROY cells among `acts`.
pub(crate) fn destroy_codes(acts: &[Action]) -> Vec<u8> {
    destroy_reasons(acts).into_iter().map(|d| d.2).collect()
}

#[test]
fn create2_ntor_then_drop_cell() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut r = relay(&mut rng, 1);
    let mut cl = create_ntor(&mut r, &mut rng, CLIENT_CHAN, 0x8000_0001);
    assert_eq!(r.t.circuit_count(CLIENT_CHAN), 1);
    // A DROP is recognized (the keys agree) and ignored.
    let mut c = [client_cell(
        &mut cl,
        &mut rng,
        0,
        RelayCmd::DROP,
        0,
        b"",
        false,
    )];
    r.t.handle_cells(CLIENT_CHAN, &mut c, now(), &mut rng);
    assert!(drain(&mut r.t).is_empty());
    assert_eq!(r.t.circuit_count(CLIENT_CHAN), 1);
    // Onion-service cells are dropped too: oxit serves no intro or
    // rendezvous point. Each is counted for the MetricsPort.
    for cmd in [
        RelayCmd::ESTABLISH_INTRO,
        RelayCmd::ESTABLISH_RENDEZVOUS,
        RelayCmd::INTRODUCE1,
        RelayCmd::RENDEZVOUS1,
        RelayCmd::RENDEZVOUS1,
    ] {
        let mut c = [client_cell(&mut cl, &mut rng, 0, cmd, 0, &[7; 20], false)];
        r.t.handle_cells(CLIENT_CHAN, &mut c, now(), &mut rng);
    }
    assert!(drain(&mut r.t).is_empty());
    assert_eq!(r.t.circuit_count(CLIENT_CHAN), 1);
    let mut counts = [0u64; CircCounter::SLOTS];
    counts[CircCounter::DropReceived as usize] = 1;
    counts[CircCounter::EstIntro as usize] = 1;
    counts[CircCounter::EstRend as usize] = 1;
    counts[CircCounter::Intro1 as usize] = 1;
    counts[CircCounter::Rend1 as usize] = 2;
    assert_eq!(r.t.counters(), counts);
    // Six cells decrypted at our hop, nothing sent back.
    assert_eq!(r.t.crypto_cells(), [6, 0]);
}

#[test]
fn create2_ntor_v3_succeeds_and_declines_cc() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut r = relay(&mut rng, 1);
    // The table's configuration offers no congestion control (cc: None).
    let (_, msg) = create_ntor_v3(&mut r, &mut rng, CLIENT_CHAN, 0x8000_0002, &[1, 1, 0]);
    assert_eq!(msg, vec![0], "empty extension list: CC declined");
}

#[test]
fn create_fast_succeeds() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut r = relay(&mut rng, 1);
    let (st, x) = fast::client_create(&mut rng);
    let id = CircId::new(0x8000_0003);
    r.t.handle_cells(
        CLIENT_CHAN,
        &mut [cell(id, ChanCmd::CREATE_FAST, body_of(&x))],
        now(),
        &mut rng,
    );
    let cells = sent_cells(&drain(&mut r.t));
    assert_eq!(cells[0].2, ChanCmd::CREATED_FAST);
    let cf = CreatedFast::decode(&cells[0].3).unwrap();
    let mut reply = cf.y().to_vec();
    reply.extend_from_slice(cf.kh());
    fast::client_finish(st, &reply).unwrap();
}

#[test]
fn marked_client_addresses_get_destroy_resourcelimit() {
    use crate::proto::dos::{DosOptions, DosParams, Verdict};
    let mut rng = StdRng::seed_from_u64(31);
    let mut r = relay(&mut rng, 1);
    let mut cfg = (*r.cfg).clone();
    cfg.dos = DosParams::resolve(
        &DosOptions {
            cc_enabled: Some(true),
            ..DosOptions::default()
        },
        &|_, d, _, _| d,
    );
    r.t.set_config(Arc::new(cfg));
    let client: std::net::IpAddr = "198.51.100.20".parse().unwrap();
    r.t.set_channel_addr(CLIENT_CHAN, client);
    r.t.set_channel_addr(RELAY_CHAN, client);
    let create_fast = |r: &mut Relay, rng: &mut StdRng, chan, id: u32| {
        let (_, x) = fast::client_create(rng);
        r.t.handle_cells(
            chan,
            &mut [cell(
                CircId::new(0x8000_0000 | id),
                ChanCmd::CREATE_FAST,
                body_of(&x),
            )],
            now(),
            rng,
        );
        drain(&mut r.t)
    };
    // Unmarked: the CREATE is counted for the address's owner and served.
    let acts = create_fast(&mut r, &mut rng, CLIENT_CHAN, 1);
    assert!(
        matches!(acts[0], Action::DosCreate { addr } if addr == client),
        "{acts:?}"
    );
    assert_eq!(sent_cells(&acts)[0].2, ChanCmd::CREATED_FAST);
    // Marked by its owner: DESTROY RESOURCELIMIT, still counted.
    r.t.dos_verdict(Verdict {
        addr: client,
        conn_marked_until: 0,
        over_concurrent: false,
        cc_marked_until: u64::MAX,
    });
    let acts = create_fast(&mut r, &mut rng, CLIENT_CHAN, 2);
    assert!(matches!(acts[0], Action::DosCreate { .. }), "{acts:?}");
    assert_eq!(
        destroy_reasons(&acts),
        [(
            CLIENT_CHAN,
            CircId::new(0x8000_0002),
            DestroyReason::RESOURCELIMIT.get()
        )]
    );
    assert_eq!(r.t.dos_counters().cc_rejected_cells, 1);
    // An authenticated relay at the same address is not a client.
    let acts = create_fast(&mut r, &mut rng, RELAY_CHAN, 3);
    assert!(!acts.iter().any(|a| matches!(a, Action::DosCreate { .. })));
    assert_eq!(sent_cells(&acts)[0].2, ChanCmd::CREATED_FAST);
}

#[test]
fn create_refusals() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut r = relay(&mut rng, 1);
    let hi = |n: u32| CircId::new(0x8000_0000 | n);
    // CREATE (TAP) → DESTROY(PROTOCOL).
    r.t.handle_cells(
        CLIENT_CHAN,
        &mut [cell(hi(1), ChanCmd::CREATE, [0; 509])],
        now(),
        &mut rng,
    );
    assert_eq!(
        destroy_reasons(&drain(&mut r.t)),
        vec![(CLIENT_CHAN, hi(1), 1)]
    );
    // CREATE2 with TAP HTYPE → PROTOCOL.
    let mut v = Vec::new();
    Create2::new(HandshakeType::TAP, vec![0; 186])
        .unwrap()
        .encode_onto(&mut v)
        .unwrap();
    r.t.handle_cells(
        CLIENT_CHAN,
        &mut [cell(hi(2), ChanCmd::CREATE2, body_of(&v))],
        now(),
        &mut rng,
    );
    assert_eq!(
        destroy_reasons(&drain(&mut r.t)),
        vec![(CLIENT_CHAN, hi(2), 1)]
    );
    // ntor to another NODEID → PROTOCOL.
    let b = r.cfg.onion_keys.current.public_bytes();
    let (_, hdata) = ntor::client_create(&mut rng, &[9; 20], &b);
    let mut v = Vec::new();
    Create2::new(HandshakeType::NTOR, hdata.to_vec())
        .unwrap()
        .encode_onto(&mut v)
        .unwrap();
    r.t.handle_cells(
        CLIENT_CHAN,
        &mut [cell(hi(3), ChanCmd::CREATE2, body_of(&v))],
        now(),
        &mut rng,
    );
    assert_eq!(
        destroy_reasons(&drain(&mut r.t)),
        vec![(CLIENT_CHAN, hi(3), 1)]
    );
    // Low-bit circuit ID on a channel we accepted → PROTOCOL.
    let (_, x) = fast::client_create(&mut rng);
    r.t.handle_cells(
        CLIENT_CHAN,
        &mut [cell(CircId::new(7), ChanCmd::CREATE_FAST, body_of(&x))],
        now(),
        &mut rng,
    );
    assert_eq!(
        destroy_reasons(&drain(&mut r.t)),
        vec![(CLIENT_CHAN, CircId::new(7), 1)]
    );
    // Circuit ID 0: dropped.
    r.t.handle_cells(
        CLIENT_CHAN,
        &mut [cell(CircId::new(0), ChanCmd::CREATE_FAST, body_of(&x))],
        now(),
        &mut rng,
    );
    assert!(drain(&mut r.t).is_empty());
    // In use: dropped silently, the circuit survives.
    let _cl = create_ntor(&mut r, &mut rng, CLIENT_CHAN, 0x8000_0010);
    r.t.handle_cells(
        CLIENT_CHAN,
        &mut [cell(hi(0x10), ChanCmd::CREATE_FAST, body_of(&x))],
        now(),
        &mut rng,
    );
    assert!(drain(&mut r.t).is_empty());
    assert_eq!(r.t.circuit_count(CLIENT_CHAN), 1);
    // The four PROTOCOL refusals are protocol violations, as C counts
    // the circuits it marks for them; the dropped ones are not.
    assert_eq!(r.t.counters()[CircCounter::ProtoViolation as usize], 4);
}

#[test]
fn relay_early_limit_and_unrecognized_at_last_hop() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut r = relay(&mut rng, 1);
    let mut cl = create_ntor(&mut r, &mut rng, CLIENT_CHAN, 0x8000_0001);
    let mut cells: Vec<_> = (0..9)
        .map(|_| client_cell(&mut cl, &mut rng, 0, RelayCmd::DROP, 0, b"", true))
        .collect();
    r.t.handle_cells(CLIENT_CHAN, &mut cells[..8], now(), &mut rng);
    assert!(drain(&mut r.t).is_empty());
    r.t.handle_cells(CLIENT_CHAN, &mut cells[8..], now(), &mut rng);
    assert_eq!(
        destroy_reasons(&drain(&mut r.t)),
        vec![(CLIENT_CHAN, cl.id, 1)]
    );
    assert_eq!(r.t.circuit_count(CLIENT_CHAN), 0);

    // A cell no hop recognizes at the last hop closes the circuit.
    let cl = create_ntor(&mut r, &mut rng, CLIENT_CHAN, 0x8000_0002);
    let mut junk = [cell(cl.id, ChanCmd::RELAY, [0x55; 509])];
    r.t.handle_cells(CLIENT_CHAN, &mut junk, now(), &mut rng);
    assert_eq!(
        destroy_reasons(&drain(&mut r.t)),
        vec![(CLIENT_CHAN, cl.id, 1)]
    );
}

/// Two relays A (first hop) and B (second); the client extends through A.
pub(crate) struct TwoHop {
    pub a: Relay,
    pub b: Relay,
    pub cl: Client,
    /// A's circuit ID toward B (on A's channel `A_TO_B`).
    pub ab_id: CircId,
}

pub(crate) const A_TO_B: ChanId = ChanId(2);

pub(crate) fn two_hop(rng: &mut StdRng) -> TwoHop {
    let mut a = relay(rng, 1);
    let mut b = relay(rng, 2);
    let mut cl = create_ntor(&mut a, rng, CLIENT_CHAN, 0x8000_0001);
    let bb = b.cfg.onion_keys.current.public_bytes();
    let (st, hdata) = ntor::client_create(rng, &b.cfg.rsa_id, &bb);
    let specs = vec![
        LinkSpec::Ipv4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 9001)),
        LinkSpec::LegacyId(b.cfg.rsa_id),
    ];
    let ext = Extend2::new(specs, HandshakeType::NTOR, hdata.to_vec());
    let mut c = [client_msg(&mut cl, rng, 0, 0, &ext, true)];
    a.t.handle_cells(CLIENT_CHAN, &mut c, now(), rng);
    let acts = drain(&mut a.t);
    let [Action::OpenChannel { key, target }] = &acts[..] else {
        panic!("{acts:?}")
    };
    assert_eq!(target.rsa_id, b.cfg.rsa_id);
    a.t.handle_extend_channel(*key, Ok(A_TO_B), rng);
    let cells = sent_cells(&drain(&mut a.t));
    let (ch, ab_id, cmd, body) = cells[0];
    assert_eq!((ch, cmd), (A_TO_B, ChanCmd::CREATE2));
    assert!(ab_id.has_high_bit(), "we initiated the channel");
    assert_eq!(Create2::decode(&body).unwrap().hdata(), &hdata[..]);
    // B sees it on its channel from A (a known relay).
    b.t.handle_cells(
        RELAY_CHAN,
        &mut [cell(ab_id, ChanCmd::CREATE2, body)],
        now(),
        rng,
    );
    let cells = sent_cells(&drain(&mut b.t));
    assert_eq!(cells[0].2, ChanCmd::CREATED2);
    a.t.handle_cells(
        A_TO_B,
        &mut [cell(ab_id, ChanCmd::CREATED2, cells[0].3)],
        now(),
        rng,
    );
    let cells = sent_cells(&drain(&mut a.t));
    assert_eq!(cells.len(), 1);
    let (hop, hdr, data, _) = client_recv(&mut cl, cells[0].3);
    assert_eq!((hop, hdr.cmd), (0, RelayCmd::EXTENDED2));
    let ext2 = Extended2::decode(&data).unwrap();
    let keys = ntor::client_finish(st, ext2.hdata()).unwrap();
    cl.circ.push_hop(&keys.tor1);
    TwoHop { a, b, cl, ab_id }
}

/// Move every cell A sent toward B into B, and every cell B sent back
/// into A; return what A sent to the client.
pub(crate) fn pump(th: &mut TwoHop, rng: &mut StdRng) -> Vec<Action> {
    let mut to_client = Vec::new();
    for _ in 0..8 {
        let mut moved = false;
        for act in drain(&mut th.a.t) {
            match act {
                Action::SendCell {
                    chan: A_TO_B,
                    circ_id,
                    cmd,
                    body,
                } => {
                    moved = true;
                    th.b.t
                        .handle_cells(RELAY_CHAN, &mut [cell(circ_id, cmd, body)], now(), rng);
                }
                other => to_client.push(other),
            }
        }
        for act in drain(&mut th.b.t) {
            if let Action::SendCell {
                circ_id, cmd, body, ..
            } = act
            {
                moved = true;
                th.a.t
                    .handle_cells(A_TO_B, &mut [cell(circ_id, cmd, body)], now(), rng);
            }
        }
        if !moved {
            break;
        }
    }
    to_client
}

/// The client sends RESOLVE of `name` (NUL-terminated) on stream `sid` to
/// hop `hop` of the two-hop circuit; A handles it.
fn resolve_at(th: &mut TwoHop, rng: &mut StdRng, hop: usize, sid: u16, name: &[u8]) {
    let mut c = [client_cell(
        &mut th.cl,
        rng,
        hop,
        RelayCmd::RESOLVE,
        sid,
        name,
        false,
    )];
    th.a.t.handle_cells(CLIENT_CHAN, &mut c, now(), rng);
}

#[test]
fn extend2_and_forwarding_both_ways() {
    let mut rng = StdRng::seed_from_u64(6);
    let mut th = two_hop(&mut rng);
    // RESOLVE of an IP literal at hop 2 travels A → B and back.
    resolve_at(&mut th, &mut rng, 1, 3, b"192.0.2.9\0");
    let out = pump(&mut th, &mut rng);
    let cells = sent_cells(&out);
    assert_eq!(cells.len(), 1);
    let (hop, hdr, data, _) = client_recv(&mut th.cl, cells[0].3);
    assert_eq!(
        (hop, hdr.cmd, hdr.stream_id.get()),
        (1, RelayCmd::RESOLVED, 3)
    );
    assert_eq!(data, [4, 4, 192, 0, 2, 9, 0, 0, 0x0e, 0x10]);
    // EXTEND2 again on an extended circuit → close.
    assert_eq!(th.a.t.circuit_count(A_TO_B), 1);
}

/// A middle's own cell queued (unsealed) before it adds its layer to a
/// cell from the next hop reaches the client first, both readable: the
/// backward keystream is used in wire order.
#[test]
fn originated_then_relayed_keep_keystream_order() {
    let mut rng = StdRng::seed_from_u64(16);
    let mut th = two_hop(&mut rng);
    // B's answer to a RESOLVE, held back.
    resolve_at(&mut th, &mut rng, 1, 3, b"192.0.2.9\0");
    for act in drain(&mut th.a.t) {
        if let Action::SendCell {
            circ_id, cmd, body, ..
        } = act
        {
            th.b.t
                .handle_cells(RELAY_CHAN, &mut [cell(circ_id, cmd, body)], now(), &mut rng);
        }
    }
    let from_b = sent_cells(&drain(&mut th.b.t));
    assert_eq!(from_b.len(), 1);
    // A answers a RESOLVE itself; its answer waits in A's queue...
    resolve_at(&mut th, &mut rng, 0, 4, b"192.0.2.10\0");
    // ...when B's cell arrives.
    let (_, id, cmd, body) = from_b[0];
    th.a.t
        .handle_cells(A_TO_B, &mut [cell(id, cmd, body)], now(), &mut rng);
    let out = sent_cells(&drain(&mut th.a.t));
    assert_eq!(out.len(), 2);
    let (hop, hdr, _, _) = client_recv(&mut th.cl, out[0].3);
    assert_eq!(
        (hop, hdr.cmd, hdr.stream_id.get()),
        (0, RelayCmd::RESOLVED, 4)
    );
    let (hop, hdr, _, _) = client_recv(&mut th.cl, out[1].3);
    assert_eq!(
        (hop, hdr.cmd, hdr.stream_id.get()),
        (1, RelayCmd::RESOLVED, 3)
    );
}

#[test]
fn destroy_propagates_as_destroyed() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut th = two_hop(&mut rng);
    let mut d = [cell(th.cl.id, ChanCmd::DESTROY, body_of(&[9]))];
    th.a.t.handle_cells(CLIENT_CHAN, &mut d, now(), &mut rng);
    assert_eq!(
        destroy_reasons(&drain(&mut th.a.t)),
        vec![(A_TO_B, th.ab_id, 11)]
    );
    assert_eq!(th.a.t.circuit_count(CLIENT_CHAN), 0);
    assert_eq!(th.a.t.circuit_count(A_TO_B), 0);
    // Counted once, as DESTROYED, whatever reason the client gave (9).
    let mut closed = [0u64; crate::proto::circuit::CLOSE_REASON_SLOTS];
    closed[usize::from(DestroyReason::DESTROYED.get())] = 1;
    assert_eq!(th.a.t.close_counts(), closed);
    // Every DESTROY cell counts, for a circuit we know or not (command.c).
    let mut d = [cell(th.cl.id, ChanCmd::DESTROY, body_of(&[9]))];
    th.a.t.handle_cells(CLIENT_CHAN, &mut d, now(), &mut rng);
    let destroys = th.a.t.counters()[CircCounter::DestroyReceived as usize];
    assert_eq!(destroys, 2);
    assert_eq!(th.a.t.counters()[CircCounter::ProtoViolation as usize], 0);

    // From ahead: DESTROYED toward the client.
    let mut th = two_hop(&mut rng);
    let mut d = [cell(th.ab_id, ChanCmd::DESTROY, body_of(&[6]))];
    th.a.t.handle_cells(A_TO_B, &mut d, now(), &mut rng);
    assert_eq!(
        destroy_reasons(&drain(&mut th.a.t)),
        vec![(CLIENT_CHAN, th.cl.id, 11)]
    );

    // Backward RELAY_EARLY closes the circuit both ways.
    let mut th = two_hop(&mut rng);
    let mut e = [cell(th.ab_id, ChanCmd::RELAY_EARLY, [0; 509])];
    th.a.t.handle_cells(A_TO_B, &mut e, now(), &mut rng);
    let mut got = destroy_reasons(&drain(&mut th.a.t));
    got.sort();
    assert_eq!(got, vec![(CLIENT_CHAN, th.cl.id, 1), (A_TO_B, th.ab_id, 1)]);
    let protocol = usize::from(DestroyReason::PROTOCOL.get());
    assert_eq!(th.a.t.close_counts()[protocol], 1);
    assert_eq!(th.a.t.close_counts().iter().sum::<u64>(), 1);
    assert_eq!(th.a.t.counters()[CircCounter::ProtoViolation as usize], 1);

    // Channel closed: CHANNEL_CLOSED to the other side.
    let mut th = two_hop(&mut rng);
    th.a.t.channel_closed(A_TO_B);
    assert_eq!(
        destroy_reasons(&drain(&mut th.a.t)),
        vec![(CLIENT_CHAN, th.cl.id, 8)]
    );
    let closed = th.a.t.close_counts();
    assert_eq!(closed[usize::from(DestroyReason::CHANNEL_CLOSED.get())], 1);
    // Closing again (nothing left) counts nothing.
    th.a.t.channel_closed(A_TO_B);
    assert_eq!(th.a.t.close_counts(), closed);
}

#[test]
fn extend2_refusals() {
    let mut rng = StdRng::seed_from_u64(8);
    let cases: Vec<(Vec<LinkSpec>, bool)> = vec![
        // To ourselves (our RSA id).
        (
            vec![
                LinkSpec::Ipv4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 9001)),
                LinkSpec::LegacyId([1; 20]),
            ],
            true,
        ),
        // Private address.
        (
            vec![
                LinkSpec::Ipv4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 9001)),
                LinkSpec::LegacyId([3; 20]),
            ],
            true,
        ),
        // Our own ORPort.
        (
            vec![
                LinkSpec::Ipv4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 9001)),
                LinkSpec::LegacyId([3; 20]),
            ],
            true,
        ),
        // No legacy id.
        (
            vec![LinkSpec::Ipv4(SocketAddrV4::new(
                Ipv4Addr::new(198, 51, 100, 7),
                9001,
            ))],
            true,
        ),
        // Fine, but not in RELAY_EARLY: dropped, circuit stays.
        (
            vec![
                LinkSpec::Ipv4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 9001)),
                LinkSpec::LegacyId([3; 20]),
            ],
            false,
        ),
    ];
    for (i, (specs, early)) in cases.into_iter().enumerate() {
        let mut r = relay(&mut rng, 1);
        let mut cl = create_ntor(&mut r, &mut rng, CLIENT_CHAN, 0x8000_0001);
        let ext = Extend2::new(specs, HandshakeType::NTOR, vec![0; 84]);
        let mut c = [client_msg(&mut cl, &mut rng, 0, 0, &ext, early)];
        r.t.handle_cells(CLIENT_CHAN, &mut c, now(), &mut rng);
        let acts = drain(&mut r.t);
        if early {
            assert_eq!(
                destroy_reasons(&acts),
                vec![(CLIENT_CHAN, cl.id, 1)],
                "case {i}"
            );
        } else {
            assert!(acts.is_empty(), "case {i}: {acts:?}");
            assert_eq!(r.t.circuit_count(CLIENT_CHAN), 1);
        }
    }
    // Extend failure → DESTROY(CONNECTFAILED).
    let mut r = relay(&mut rng, 1);
    let mut cl = create_ntor(&mut r, &mut rng, CLIENT_CHAN, 0x8000_0001);
    let specs = vec![
        LinkSpec::Ipv4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 9001)),
        LinkSpec::LegacyId([3; 20]),
    ];
    let ext = Extend2::new(specs, HandshakeType::NTOR, vec![0; 84]);
    let mut c = [client_msg(&mut cl, &mut rng, 0, 0, &ext, true)];
    r.t.handle_cells(CLIENT_CHAN, &mut c, now(), &mut rng);
    let Some(Action::OpenChannel { key, .. }) = r.t.poll_action() else {
        panic!()
    };
    let err = ExtendFailure::Launch(std::io::Error::other("no route"));
    r.t.handle_extend_channel(key, Err(err), &mut rng);
    assert_eq!(
        destroy_reasons(&drain(&mut r.t)),
        vec![(CLIENT_CHAN, cl.id, 6)]
    );
}

/// Random cells, valid-crypto cells with random payloads, random control
/// cells: nothing panics, and the table stays usable.
#[test]
fn random_input_never_panics() {
    let mut rng = StdRng::seed_from_u64(9);
    let mut th = two_hop(&mut rng);
    let mut r = relay(&mut rng, 3);
    let mut cl = create_ntor(&mut r, &mut rng, CLIENT_CHAN, 0x8000_0001);
    for i in 0..3000u32 {
        let mut body = [0u8; 509];
        rng.fill_bytes(&mut body);
        let len = rng.random_range(0..40usize);
        let cmds = [
            RelayCmd::BEGIN,
            RelayCmd::DATA,
            RelayCmd::END,
            RelayCmd::SENDME,
            RelayCmd::EXTEND2,
            RelayCmd::EXTEND,
            RelayCmd::TRUNCATE,
            RelayCmd::RESOLVE,
            RelayCmd::BEGIN_DIR,
            RelayCmd::new(rng.random()),
        ];
        let cmd = cmds[rng.random_range(0..cmds.len())];
        let sid = rng.random_range(0..3u16);
        if r.t.circuit_count(CLIENT_CHAN) == 0 {
            cl = create_ntor(&mut r, &mut rng, CLIENT_CHAN, 0x8000_0001 + i);
        }
        let early = rng.random_bool(0.2);
        let mut c = [client_cell(
            &mut cl,
            &mut rng,
            0,
            cmd,
            sid,
            &body[..len],
            early,
        )];
        r.t.handle_cells(CLIENT_CHAN, &mut c, now(), &mut rng);
        // Raw garbage of any command on random circuit IDs, both tables.
        let raw_cmd = ChanCmd::new(rng.random_range(0..16u8));
        let id = CircId::new(if rng.random_bool(0.5) {
            cl.id.get()
        } else {
            rng.random()
        });
        r.t.handle_cells(CLIENT_CHAN, &mut [cell(id, raw_cmd, body)], now(), &mut rng);
        th.a.t.handle_cells(
            A_TO_B,
            &mut [cell(th.ab_id, raw_cmd, body)],
            now(),
            &mut rng,
        );
        // Answer whatever the table asked for with random outcomes.
        for a in drain(&mut r.t) {
            match a {
                Action::Resolve { key, .. } => r.t.handle_resolved(
                    key,
                    Ok(crate::exit::dns::Answer {
                        addrs: vec!["192.0.2.1".parse().unwrap()],
                        ttl: 300,
                        hostname: None,
                    }),
                    now(),
                    &mut rng,
                ),
                Action::Connect { key, addr } => {
                    r.t.handle_connected(key, Ok(addr), now(), &mut rng)
                }
                _ => {}
            }
        }
        drain(&mut th.a.t);
    }
    r.t.handle_timeout(now() + std::time::Duration::from_secs(3600), &mut rng);
    drain(&mut r.t);
}

thread_local! {
    /// Calls to [`fake_clock`] so far on this thread.
    static TICKS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A clock that advances 250 µs per reading: a handshake (two readings)
/// costs 250 µs, whatever the machine.
fn fake_clock() -> Instant {
    let n = TICKS.with(|t| {
        t.set(t.get() + 1);
        t.get()
    });
    now() + std::time::Duration::from_micros(250) * n
}

/// A relay whose onion queue gives `budget` of handshake time per turn,
/// measured with [`fake_clock`].
fn onion_relay(rng: &mut StdRng, budget_us: u64, max_delay_ms: u64) -> Relay {
    let mut cfg = config(rng, 1);
    cfg.onion.turn_budget = std::time::Duration::from_micros(budget_us);
    cfg.onion.max_delay = std::time::Duration::from_millis(max_delay_ms);
    let cfg = Arc::new(cfg);
    let mut t = CircuitTable::new(cfg.clone());
    t.clock = fake_clock;
    t.channel_opened(CLIENT_CHAN, PeerKind::Client);
    Relay { t, cfg }
}

fn create_fast_cells(rng: &mut StdRng, ids: std::ops::RangeInclusive<u32>) -> Vec<IncomingCell> {
    ids.map(|i| {
        let (_, x) = fast::client_create(rng);
        cell(
            CircId::new(0x8000_0000 | i),
            ChanCmd::CREATE_FAST,
            body_of(&x),
        )
    })
    .collect()
}

fn answered(acts: &[Action]) -> Vec<(u32, ChanCmd)> {
    sent_cells(acts)
        .into_iter()
        .map(|c| (c.1.get() & 0x7fff_ffff, c.2))
        .collect()
}

#[test]
fn onion_queue_spends_the_turn_budget_then_waits_in_order() {
    let mut rng = StdRng::seed_from_u64(41);
    // 1 ms per turn, 250 µs per handshake: four handshakes a turn.
    let mut r = onion_relay(&mut rng, 1000, 1750);
    let mut cells = create_fast_cells(&mut rng, 1..=10);
    r.t.handle_cells(CLIENT_CHAN, &mut cells, now(), &mut rng);
    let first: Vec<u32> = answered(&drain(&mut r.t)).iter().map(|a| a.0).collect();
    assert_eq!(first, [1, 2, 3, 4], "the turn's budget runs the first four");
    assert_eq!(r.t.onion_backlog(), 6);
    // Waiting creates hold their IDs: counted on the channel, and a
    // second CREATE with one of them is dropped.
    assert_eq!(r.t.circuit_count(CLIENT_CHAN), 10);
    let mut dup = create_fast_cells(&mut rng, 5..=5);
    r.t.handle_cells(CLIENT_CHAN, &mut dup, now(), &mut rng);
    assert!(drain(&mut r.t).is_empty());

    // A relay cell on a waiting circuit closes it with PROTOCOL (command.c:
    // "circuit in create_wait"); a DESTROY just forgets it.
    let mut early = [cell(CircId::new(0x8000_0005), ChanCmd::RELAY, [0; 509])];
    r.t.handle_cells(CLIENT_CHAN, &mut early, now(), &mut rng);
    assert_eq!(
        destroy_reasons(&drain(&mut r.t)),
        [(
            CLIENT_CHAN,
            CircId::new(0x8000_0005),
            DestroyReason::PROTOCOL.get()
        )]
    );
    let mut d = [cell(CircId::new(0x8000_0006), ChanCmd::DESTROY, [0; 509])];
    r.t.handle_cells(CLIENT_CHAN, &mut d, now(), &mut rng);
    assert!(drain(&mut r.t).is_empty());
    assert_eq!(r.t.onion_backlog(), 4);

    // The end of this turn has no budget left; the next turn runs the rest
    // in arrival order.
    assert!(r.t.run_onion_queue(now(), &mut rng));
    assert!(drain(&mut r.t).is_empty());
    assert!(!r.t.run_onion_queue(now(), &mut rng));
    assert_eq!(
        answered(&drain(&mut r.t)),
        [7, 8, 9, 10].map(|i| (i, ChanCmd::CREATED_FAST))
    );
    assert_eq!(r.t.onion_stats().processed, [8, 0]);
    assert_eq!(r.t.circuit_count(CLIENT_CHAN), 8);
}

#[test]
fn onion_queue_refuses_past_max_delay_and_drops_old_creates() {
    let mut rng = StdRng::seed_from_u64(42);
    // A budget of one handshake per turn; at 250 µs each, 50 waiting are
    // 12.5 ms of work, over a 10 ms MaxOnionQueueDelay.
    let mut r = onion_relay(&mut rng, 1, 10);
    let mut cells = create_fast_cells(&mut rng, 1..=61);
    r.t.handle_cells(CLIENT_CHAN, &mut cells, now(), &mut rng);
    let acts = answered(&drain(&mut r.t));
    assert_eq!(acts[0], (1, ChanCmd::CREATED_FAST));
    // Fewer than 50 waiting are always admitted (ids 2..=51); then the
    // estimate is over the limit and the rest are refused.
    assert!(acts[1..].iter().all(|a| a.1 == ChanCmd::DESTROY));
    let refused: Vec<u32> = acts[1..].iter().map(|a| a.0).collect();
    assert_eq!(refused, (52..=61).collect::<Vec<_>>());
    assert_eq!(r.t.onion_backlog(), 50);
    assert_eq!(r.t.onion_stats().dropped, [10, 0]);

    // Past onion_queue_wait_cutoff (5 s) every waiting create is dropped
    // with RESOURCELIMIT instead of answered late.
    let later = now() + std::time::Duration::from_secs(6);
    assert!(!r.t.run_onion_queue(later, &mut rng));
    let acts = drain(&mut r.t);
    let d = destroy_reasons(&acts);
    assert_eq!(d.len(), 50);
    assert!(
        d.iter()
            .all(|c| c.2 == DestroyReason::RESOURCELIMIT.get() && c.0 == CLIENT_CHAN)
    );
    assert_eq!(r.t.onion_stats().timed_out, 50);
    assert_eq!(r.t.circuit_count(CLIENT_CHAN), 1);
}

#[test]
fn onion_queue_forgets_a_closed_channel() {
    let mut rng = StdRng::seed_from_u64(43);
    let mut r = onion_relay(&mut rng, 1, 1750);
    let mut cells = create_fast_cells(&mut rng, 1..=20);
    r.t.handle_cells(CLIENT_CHAN, &mut cells, now(), &mut rng);
    drain(&mut r.t);
    assert_eq!(r.t.onion_backlog(), 19);
    r.t.channel_closed(CLIENT_CHAN);
    assert_eq!(r.t.onion_backlog(), 0);
    assert!(!r.t.run_onion_queue(now(), &mut rng));
    assert!(
        sent_cells(&drain(&mut r.t)).is_empty(),
        "nothing is answered on a closed channel"
    );
}

#[test]
fn handshake_stats_count_as_c_tor_does() {
    let mut rng = StdRng::seed_from_u64(21);
    let mut r = relay(&mut rng, 1);
    // Requested counts creates from relays only; assigned counts every
    // handshake run (command.c, cpuworker.c).
    create_ntor(&mut r, &mut rng, CLIENT_CHAN, 0x8000_0001);
    create_ntor(&mut r, &mut rng, RELAY_CHAN, 0x8000_0001);
    create_ntor(&mut r, &mut rng, RELAY_CHAN, 0x8000_0002);
    let fast = create_fast_cells(&mut rng, 0x8000_0010..=0x8000_0010);
    r.t.handle_cells(RELAY_CHAN, &mut fast.clone(), now(), &mut rng);
    drain(&mut r.t);
    let s = r.t.onion_stats();
    assert_eq!(s.requested, [2, 0]);
    assert_eq!(s.assigned, [3, 0]);
    assert_eq!(s.processed, [1, 3], "fast, then ntor");

    // The heartbeat prints what changed since the last one.
    let last = OnionStats {
        assigned: [1, 0],
        requested: [1, 0],
        ..OnionStats::default()
    };
    let now = OnionStats {
        assigned: [4, 5],
        requested: [5, 6],
        ..OnionStats::default()
    };
    assert_eq!(
        handshake_heartbeat_line(&now, &last),
        "Circuit handshake stats since last time: 0/0 TAP, 3/4 NTor, 5/6 NTor (v3)."
    );
    assert_eq!(OnionStats::from_array(s.to_array()), s);
}
