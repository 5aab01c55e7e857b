//! Sans-IO tests: two channels (or a channel and a hand-scripted peer)
//! joined by moving bytes, with a fake TLS exporter and a virtual clock.
//! Keys are real `RelayKeys` made in a temp dir. No vectors from C exist
//! for a whole handshake (its AUTHENTICATE is randomised and bound to a TLS
//! session); the cell bytes are checked with the cell codec instead.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::*;
use crate::crypto::keys::RelayKeys;
use crate::crypto::rsa::tests::test_rng;
use crate::proto::cell::{AnyChanMsg, Certs, decode, encode_msg, encode_raw};

mod faults;

const T0: u64 = 1_750_000_000;
const ADDR_A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const ADDR_B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

struct Relay {
    keys: Arc<LinkKeys>,
    tls_der: Vec<u8>,
    tls_sha: [u8; 32],
}

struct Fixture {
    a: Relay,
    b: Relay,
}

fn relay(name: &str, seed: u64, addr: IpAddr) -> Relay {
    let dir = std::env::temp_dir().join(format!("oxit-chan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut rng = test_rng(seed);
    let k = RelayKeys::load_or_create(&dir, name, UNIX_EPOCH + Duration::from_secs(T0), &mut rng)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Relay {
        keys: Arc::new(LinkKeys::from_relay_keys(&k, vec![addr])),
        tls_der: k.tls().cert_der().to_vec(),
        tls_sha: *k.tls().cert_sha256(),
    }
}

/// Key generation is the slow part: make the two relays once.
fn fx() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| Fixture {
        a: relay("A", 101, ADDR_A),
        b: relay("B", 202, ADDR_B),
    })
}

/// Both ends of one TLS session share the exporter: a keyed hash of
/// label and context.
struct FakeTls([u8; 32]);

impl TlsSession for FakeTls {
    fn export_keying_material(&self, label: &[u8], context: &[u8]) -> Option<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update((label.len() as u32).to_be_bytes());
        h.update(label);
        h.update(context);
        Some(h.finalize().into())
    }
}

struct NoExporter;
impl TlsSession for NoExporter {
    fn export_keying_material(&self, _: &[u8], _: &[u8]) -> Option<[u8; 32]> {
        None
    }
}

const SESSION: FakeTls = FakeTls([7; 32]);

struct Side {
    ch: Channel,
    cells: Vec<IncomingCell>,
    unix_now: u64,
}

/// A's responder (accepting B's connection) and B's initiator (extending
/// to A). Returns (responder, initiator).
fn pair(now: Instant) -> (Side, Side) {
    let f = fx();
    let resp = Channel::new_responder(f.a.keys.clone(), f.a.tls_sha, ADDR_B, now);
    let expect = ExpectedPeer {
        rsa_id: *f.a.keys.rsa_id(),
        ed_id: Some(*f.a.keys.ed_id()),
    };
    let init = initiator(expect, &f.a.tls_der, now);
    (side(resp), side(init))
}

fn initiator(expect: ExpectedPeer, peer_der: &[u8], now: Instant) -> Channel {
    let f = fx();
    Channel::new_initiator(
        f.b.keys.clone(),
        peer_der,
        ADDR_A,
        expect,
        now,
        &mut test_rng(3),
    )
}

fn side(ch: Channel) -> Side {
    Side {
        ch,
        cells: Vec::new(),
        unix_now: T0 + 60,
    }
}

fn out_of(s: &mut Side) -> Vec<u8> {
    let mut v = Vec::new();
    s.ch.take_output(&mut v);
    v
}

fn feed(s: &mut Side, data: &[u8], now: Instant, tls: &dyn TlsSession) -> Result<(), ChannelError> {
    let mut rng = test_rng(9);
    s.ch.handle_input(data, now, s.unix_now, tls, &mut rng, &mut s.cells)
}

/// Move bytes both ways (in `chunk`-byte pieces) until both are quiet.
fn drive(r: &mut Side, i: &mut Side, now: Instant, chunk: usize) -> Result<(), ChannelError> {
    for _ in 0..20 {
        let from_i = out_of(i);
        let from_r = out_of(r);
        if from_i.is_empty() && from_r.is_empty() {
            return Ok(());
        }
        for c in from_i.chunks(chunk) {
            feed(r, c, now, &SESSION)?;
        }
        for c in from_r.chunks(chunk) {
            feed(i, c, now, &SESSION)?;
        }
    }
    panic!("handshake did not settle")
}

/// Split a byte stream into cells; the first is narrow if `first_narrow`.
fn split(mut bytes: &[u8], first_narrow: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut wide = !first_narrow;
    while !bytes.is_empty() {
        let (_, n) = decode(bytes, wide).unwrap().expect("whole cells");
        out.push(bytes[..n].to_vec());
        bytes = &bytes[n..];
        wide = true;
    }
    out
}

fn cmd_of(cell: &[u8], wide: bool) -> ChanCmd {
    decode(cell, wide).unwrap().unwrap().0.cmd()
}

fn events(ch: &mut Channel) -> Vec<ChanEvent> {
    std::iter::from_fn(|| ch.poll_event()).collect()
}

fn opened(ch: &mut Channel) -> PeerKind {
    match events(ch).as_slice() {
        [ChanEvent::Opened { peer, link_version }] => {
            assert_eq!(*link_version, 5);
            *peer
        }
        e => panic!("expected one Opened event, got {e:?}"),
    }
}

fn relay_kind(r: &Relay) -> PeerKind {
    PeerKind::Relay {
        rsa_id: *r.keys.rsa_id(),
        ed_id: *r.keys.ed_id(),
    }
}

#[test]
fn relay_to_relay_opens_both_sides() {
    let now = Instant::now();
    let (mut r, mut i) = pair(now);
    drive(&mut r, &mut i, now, usize::MAX).unwrap();
    assert!(r.ch.is_open() && i.ch.is_open());
    assert_eq!(opened(&mut r.ch), relay_kind(&fx().b));
    assert_eq!(opened(&mut i.ch), relay_kind(&fx().a));
    assert_eq!(r.ch.peer(), Some(&relay_kind(&fx().b)));
    assert_eq!(i.ch.link_version(), Some(5));
    // Each listed the address it connects from: canonical.
    assert!(r.ch.is_canonical() && i.ch.is_canonical());
    assert_eq!(r.ch.peer_netinfo().unwrap().other_addr(), Some(ADDR_A));
}

#[test]
fn byte_by_byte_handshake_and_cells() {
    let now = Instant::now();
    let (mut r, mut i) = pair(now);
    drive(&mut r, &mut i, now, 1).unwrap();
    assert!(r.ch.is_open() && i.ch.is_open());
    let body = [0x5a; CELL_BODY_LEN];
    i.ch.send_cell(CircId::new(0x8000_0001), ChanCmd::CREATE2, &body)
        .unwrap();
    let bytes = out_of(&mut i);
    assert_eq!(bytes.len(), 514);
    for b in bytes.chunks(1) {
        feed(&mut r, b, now, &SESSION).unwrap();
    }
    assert_eq!(
        r.cells,
        vec![IncomingCell {
            circ_id: CircId::new(0x8000_0001),
            cmd: ChanCmd::CREATE2,
            body
        }]
    );
}

/// Reads that end anywhere inside a cell, with several cells and a
/// variable-length one between them: every cell arrives once, whole.
#[test]
fn cells_straddling_reads_arrive_whole() {
    let now = Instant::now();
    let (mut r, mut i) = pair(now);
    drive(&mut r, &mut i, now, 4096).unwrap();
    let mut wire = Vec::new();
    let mut want = Vec::new();
    for n in 0..12u32 {
        let body = [n as u8; CELL_BODY_LEN];
        let id = CircId::new(0x8000_0000 + n);
        encode_raw(id, ChanCmd::CREATE2, &body, true, &mut wire).unwrap();
        want.push(IncomingCell {
            circ_id: id,
            cmd: ChanCmd::CREATE2,
            body,
        });
        if n == 5 {
            encode_raw(
                CircId::new(0),
                ChanCmd::VPADDING,
                &[9; 700],
                true,
                &mut wire,
            )
            .unwrap();
        }
    }
    for chunk in [3, 7, 513, 515, 700, 1029, 1500, 4096] {
        r.cells.clear();
        for c in wire.chunks(chunk) {
            feed(&mut r, c, now, &SESSION).unwrap();
        }
        assert_eq!(r.cells, want, "reads of {chunk} bytes");
    }
}

#[test]
fn cells_after_open_are_framed_both_ways() {
    let now = Instant::now();
    let (mut r, mut i) = pair(now);
    assert!(matches!(
        r.ch.send_cell(CircId::new(1), ChanCmd::RELAY, &[0; CELL_BODY_LEN]),
        Err(ChannelError::NotOpen { .. })
    ));
    drive(&mut r, &mut i, now, usize::MAX).unwrap();
    let mut body = [0u8; CELL_BODY_LEN];
    body[0] = 2;
    body[508] = 0xff;
    r.ch.send_cell(CircId::new(0x8000_0002), ChanCmd::RELAY, &body)
        .unwrap();
    r.ch.send_cell(CircId::new(0x8000_0003), ChanCmd::DESTROY, &body)
        .unwrap();
    assert!(r.ch.has_output());
    let bytes = out_of(&mut r);
    assert_eq!(bytes.len(), 2 * 514);
    assert_eq!(&bytes[..5], &[0x80, 0, 0, 2, 3]);
    // Link-level noise between them: PADDING, VPADDING, a circuit-0 RELAY,
    // an unknown fixed command, an unknown var command, a late VERSIONS and
    // NETINFO: all dropped.
    let mut noise = Vec::new();
    encode_raw(CircId::CHANNEL, ChanCmd::PADDING, &[], true, &mut noise).unwrap();
    encode_raw(
        CircId::CHANNEL,
        ChanCmd::VPADDING,
        &[1, 2, 3],
        true,
        &mut noise,
    )
    .unwrap();
    encode_raw(CircId::CHANNEL, ChanCmd::RELAY, &body, true, &mut noise).unwrap();
    encode_raw(CircId::new(9), ChanCmd::new(77), &[], true, &mut noise).unwrap();
    encode_raw(
        CircId::new(9),
        ChanCmd::new(200),
        &[9; 10],
        true,
        &mut noise,
    )
    .unwrap();
    encode_raw(
        CircId::CHANNEL,
        ChanCmd::VERSIONS,
        &[0, 4],
        true,
        &mut noise,
    )
    .unwrap();
    encode_raw(CircId::CHANNEL, ChanCmd::NETINFO, &[], true, &mut noise).unwrap();
    let stream = [&bytes[..514], &noise, &bytes[514..]].concat();
    feed(&mut i, &stream, now, &SESSION).unwrap();
    assert_eq!(i.cells.len(), 2);
    assert_eq!(i.cells[0].circ_id, CircId::new(0x8000_0002));
    assert_eq!(i.cells[0].cmd, ChanCmd::RELAY);
    assert_eq!(i.cells[0].body, body);
    assert_eq!(i.cells[1].cmd, ChanCmd::DESTROY);
    // Variable-length commands cannot go through send_cell.
    assert!(
        r.ch.send_cell(CircId::new(1), ChanCmd::CERTS, &body)
            .is_err()
    );
    assert!(r.ch.is_open());
    // A CERTS after open closes, as in C.
    let mut late = Vec::new();
    encode_raw(CircId::CHANNEL, ChanCmd::CERTS, &[0], true, &mut late).unwrap();
    let e = feed(&mut i, &late, now, &SESSION).unwrap_err();
    assert!(matches!(
        e,
        ChannelError::Unexpected {
            cmd: ChanCmd::CERTS,
            ..
        }
    ));
}

#[test]
fn padding_negotiate_is_recorded_on_v5() {
    let now = Instant::now();
    let (mut r, mut i) = pair(now);
    drive(&mut r, &mut i, now, usize::MAX).unwrap();
    let mut c = Vec::new();
    encode_msg(
        CircId::CHANNEL,
        &PaddingNegotiate::start(1500, 9500),
        true,
        &mut c,
    )
    .unwrap();
    encode_raw(
        CircId::CHANNEL,
        ChanCmd::PADDING_NEGOTIATE,
        &[1],
        true,
        &mut c,
    )
    .unwrap();
    feed(&mut r, &c, now, &SESSION).unwrap();
    let p = r.ch.padding_negotiate().unwrap();
    assert_eq!((p.ito_low_ms(), p.ito_high_ms()), (1500, 9500));
    assert!(r.cells.is_empty());
}

#[test]
fn circ_id_direction() {
    let now = Instant::now();
    let (r, i) = pair(now);
    // We accepted: peer (the initiator) picks high IDs.
    assert!(r.ch.peer_may_create(CircId::new(0x8000_0001)));
    assert!(!r.ch.peer_may_create(CircId::new(1)));
    assert!(!r.ch.we_pick_high_circ_ids());
    // We initiated: we pick high, the peer must pick low.
    assert!(i.ch.we_pick_high_circ_ids());
    assert!(i.ch.peer_may_create(CircId::new(1)));
    assert!(!i.ch.peer_may_create(CircId::new(0x8000_0001)));
}

/// A client: VERSIONS {3,4,5}, read the responder's four cells, NETINFO.
#[test]
fn client_without_certs_is_a_client() {
    let now = Instant::now();
    let f = fx();
    let mut r = side(Channel::new_responder(
        f.a.keys.clone(),
        f.a.tls_sha,
        ADDR_B,
        now,
    ));
    let mut v = Vec::new();
    // What C 0.4.9 clients send: 3, 4, 5 with a 2-byte circuit ID.
    v.extend_from_slice(&[0, 0, 7, 0, 6, 0, 3, 0, 4, 0, 5]);
    feed(&mut r, &v, now, &SESSION).unwrap();
    let cells = split(&out_of(&mut r), true);
    let cmds: Vec<_> = cells
        .iter()
        .enumerate()
        .map(|(n, c)| cmd_of(c, n > 0))
        .collect();
    assert_eq!(
        cmds,
        [
            ChanCmd::VERSIONS,
            ChanCmd::CERTS,
            ChanCmd::AUTH_CHALLENGE,
            ChanCmd::NETINFO
        ]
    );
    // Our VERSIONS: 2-byte circuit ID, versions 4 and 5, not padded.
    assert_eq!(cells[0], [0, 0, 7, 0, 4, 0, 4, 0, 5]);
    // Every cell decodes with the codec.
    let msgs: Vec<_> = cells
        .iter()
        .enumerate()
        .map(|(n, c)| AnyChanMsg::decode(&decode(c, n > 0).unwrap().unwrap().0).unwrap())
        .collect();
    let AnyChanMsg::Certs(certs) = &msgs[1] else {
        panic!()
    };
    let types: Vec<_> = certs.certs().iter().map(|c| c.cert_type()).collect();
    assert_eq!(types, [2, 4, 5, 7]);
    let AnyChanMsg::AuthChallenge(ac) = &msgs[2] else {
        panic!()
    };
    assert_eq!(ac.methods(), [3]);
    let AnyChanMsg::Netinfo(ni) = &msgs[3] else {
        panic!()
    };
    assert_eq!(ni.other_addr(), Some(ADDR_B));
    assert_eq!(ni.my_addrs(), [ADDR_A]);
    assert_eq!(u64::from(ni.timestamp()), T0 + 60);
    assert_eq!(cells[3].len(), 514);
    // The client answers with NETINFO (time 0, as clients send).
    let mut n = Vec::new();
    encode_msg(
        CircId::CHANNEL,
        &Netinfo::new(0, Some(ADDR_A), vec![]).unwrap(),
        true,
        &mut n,
    )
    .unwrap();
    feed(&mut r, &n, now, &SESSION).unwrap();
    assert_eq!(opened(&mut r.ch), PeerKind::Client);
    assert!(!r.ch.is_canonical());
}

/// Run the pair until the initiator has answered AUTH_CHALLENGE; return the
/// initiator's not-yet-delivered cells (CERTS, AUTHENTICATE, NETINFO).
fn up_to_authenticate(now: Instant, tls_i: &dyn TlsSession) -> (Side, Side, Vec<Vec<u8>>) {
    let (mut r, mut i) = pair(now);
    let v = out_of(&mut i);
    feed(&mut r, &v, now, &SESSION).unwrap();
    let resp = out_of(&mut r);
    feed(&mut i, &resp, now, tls_i).unwrap();
    let cells = split(&out_of(&mut i), false);
    let cmds: Vec<_> = cells.iter().map(|c| cmd_of(c, true)).collect();
    assert_eq!(
        cmds,
        [ChanCmd::CERTS, ChanCmd::AUTHENTICATE, ChanCmd::NETINFO]
    );
    (r, i, cells)
}

fn feed_all(s: &mut Side, cells: &[Vec<u8>], now: Instant) -> Result<(), ChannelError> {
    feed(s, &cells.concat(), now, &SESSION)
}

fn closed_with(s: &mut Side, e: &ChannelError) {
    assert_eq!(events(&mut s.ch), vec![ChanEvent::Closed(e.clone())]);
    assert!(!s.ch.is_open());
    // Sticky.
    assert_eq!(feed(s, &[0; 600], Instant::now(), &SESSION), Err(e.clone()));
    assert_eq!(s.ch.handle_timeout(Instant::now()), Err(e.clone()));
    assert!(events(&mut s.ch).is_empty());
    assert_eq!(s.ch.poll_timeout(), None);
}

fn responder(now: Instant) -> Side {
    let f = fx();
    side(Channel::new_responder(
        f.a.keys.clone(),
        f.a.tls_sha,
        ADDR_B,
        now,
    ))
}

#[test]
fn handshake_timeout() {
    let now = Instant::now();
    let mut r = responder(now);
    // A minute from the start at most, however the peer keeps us busy.
    assert_eq!(r.ch.poll_timeout(), Some(now + Duration::from_secs(60)));
    r.ch.handle_timeout(now + Duration::from_secs(59)).unwrap();
    let e =
        r.ch.handle_timeout(now + Duration::from_secs(60))
            .unwrap_err();
    assert_eq!(e, ChannelError::HandshakeTimeout);
    closed_with(&mut r, &e);
}

#[test]
fn keepalive_and_idle_timeout() {
    let now = Instant::now();
    let (mut r, mut i) = pair(now);
    drive(&mut r, &mut i, now, usize::MAX).unwrap();
    // Canonical relay channel: idle timeout 2700..4500 s; keepalive first.
    r.ch.note_circuits(1, now);
    assert_eq!(r.ch.poll_timeout(), Some(now + Duration::from_secs(300)));
    let t1 = now + Duration::from_secs(300);
    r.ch.handle_timeout(t1).unwrap();
    let pad = out_of(&mut r);
    assert_eq!(pad.len(), 514);
    assert_eq!(pad[4], 0); // PADDING
    feed(&mut i, &pad, t1, &SESSION).unwrap();
    assert!(i.cells.is_empty());
    // A cell sent without a time stamps the next call's `now`.
    r.ch.send_cell(
        CircId::new(0x8000_0001),
        ChanCmd::RELAY,
        &[0; CELL_BODY_LEN],
    )
    .unwrap();
    let t2 = t1 + Duration::from_secs(100);
    r.ch.handle_timeout(t2).unwrap();
    let _ = out_of(&mut r);
    assert_eq!(r.ch.poll_timeout(), Some(t2 + Duration::from_secs(300)));
    // No more circuits: the idle clock starts.
    r.ch.note_circuits(0, t2);
    let deadline = r.ch.poll_timeout().unwrap();
    assert_eq!(deadline, t2 + Duration::from_secs(300));
    // Step through keepalives until the idle deadline closes the channel.
    let mut t: Instant;
    let e = loop {
        t = r.ch.poll_timeout().unwrap();
        let _ = out_of(&mut r);
        if let Err(e) = r.ch.handle_timeout(t) {
            break e;
        }
    };
    let ChannelError::IdleTimeout { secs } = e else {
        panic!("{e}")
    };
    assert!((2700..4500).contains(&secs), "{secs}");
    assert_eq!(t, t2 + Duration::from_secs(secs));
    assert!(e.is_normal_close());

    // A client channel idles out after 180..270 s.
    let mut r = responder(now);
    feed(&mut r, &[0, 0, 7, 0, 2, 0, 4], now, &SESSION).unwrap();
    let mut n = Vec::new();
    encode_msg(
        CircId::CHANNEL,
        &Netinfo::new(0, None, vec![]).unwrap(),
        true,
        &mut n,
    )
    .unwrap();
    feed(&mut r, &n, now, &SESSION).unwrap();
    let d = r.ch.poll_timeout().unwrap() - now;
    assert!((180..270).contains(&d.as_secs()), "{d:?}");
}

#[test]
fn relay_certs_decode_with_codec() {
    // Both CERTS bodies hold exactly the types §1.4 / §1.7 name, in order.
    let k = &fx().a.keys;
    let types = |c: &Certs| c.certs().iter().map(|e| e.cert_type()).collect::<Vec<_>>();
    assert_eq!(types(k.responder_certs.as_ref().unwrap()), [2, 4, 5, 7]);
    assert_eq!(types(k.initiator_certs.as_ref().unwrap()), [2, 4, 6, 7]);
    assert_eq!(k.tls_cert_sha256(), Some(&fx().a.tls_sha));
}
