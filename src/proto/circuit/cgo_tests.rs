//! CGO circuits through the table: a client with `crypto::cgo`'s client
//! side negotiates CGO in ntor-v3 (with congestion control, as 0.4.9
//! clients do), then talks v1 relay messages to an exit, and through a
//! middle that is itself a CGO hop. No sockets, a fixed clock, seeded rngs.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use rand::{SeedableRng, rngs::StdRng};

use super::tests::{
    RELAY_CHAN, Relay, body_of, cell, destroy_codes, drain, now, relay, relay_chan_cmd, sent_cells,
};
use super::*;
use crate::crypto::cgo::{CgoClientHop, CgoTag};
use crate::crypto::ntor_v3::{self, NTOR3_CIRC_VERIFICATION};
use crate::proto::cell::{ChanBody, Create2, Created2, HandshakeType};
use crate::proto::relay_msg::{
    Connected, Extend2, Extended2, LinkSpec, RelayCmd, RelayFormat, Sendme, SendmeDigest,
};

/// What a 0.4.9 client asks an exit advertising Relay=5-6: CC and CGO.
const ASK_CC_CGO: &[u8] = &[2, 1, 0, 3, 2, 2, 6];

/// A client's CGO circuit: its hops' state, nearest first.
struct CgoClient {
    hops: Vec<CgoClientHop>,
    chan: ChanId,
    id: CircId,
}

impl CgoClient {
    /// A cell for hop `hop` carrying a v1 message; returns it and the tag
    /// the hop will see (what its SENDME for a DATA cell echoes).
    fn originate(
        &mut self,
        rng: &mut StdRng,
        hop: usize,
        cmd: RelayCmd,
        sid: u16,
        data: &[u8],
        early: bool,
    ) -> (IncomingCell, CgoTag) {
        let mut body = [0u8; 509];
        RelayFormat::V1
            .encode_data(cmd, StreamId::new(sid), data, rng, &mut body)
            .unwrap();
        self.seal(hop, body, early)
    }

    fn originate_msg<'m, M: RelayBody<'m>>(
        &mut self,
        rng: &mut StdRng,
        hop: usize,
        sid: u16,
        msg: &M,
        early: bool,
    ) -> (IncomingCell, CgoTag) {
        let mut body = [0u8; 509];
        RelayFormat::V1
            .encode_msg(StreamId::new(sid), msg, rng, &mut body)
            .unwrap();
        self.seal(hop, body, early)
    }

    fn seal(&mut self, hop: usize, mut body: [u8; 509], early: bool) -> (IncomingCell, CgoTag) {
        let cmd = relay_chan_cmd(early);
        let tag = self.hops[hop].originate_forward(cmd.get(), &mut body);
        for h in self.hops[..hop].iter_mut().rev() {
            h.wrap_forward(cmd.get(), &mut body);
        }
        (cell(self.id, cmd, body), tag)
    }

    /// A backward cell: (hop, command, stream, data, tag).
    fn recv(&mut self, mut body: [u8; 509]) -> (usize, RelayCmd, u16, Vec<u8>, CgoTag) {
        for (i, h) in self.hops.iter_mut().enumerate() {
            if let Some(tag) = h.decrypt_backward(ChanCmd::RELAY.get(), &mut body) {
                let (cmd, sid, data) = RelayFormat::V1.parse(&body).expect("v1 message");
                return (i, cmd, sid.get(), data.to_vec(), tag);
            }
        }
        panic!("no hop recognized the cell");
    }

    /// Every relay cell in `acts`, decrypted.
    fn replies(&mut self, acts: &[Action]) -> Vec<(usize, RelayCmd, u16, Vec<u8>, CgoTag)> {
        sent_cells(acts)
            .into_iter()
            .map(|(_, _, cmd, body)| {
                assert_eq!(cmd, ChanCmd::RELAY);
                self.recv(body)
            })
            .collect()
    }
}

/// A relay that offers congestion control (and so CGO).
fn cc_relay(rng: &mut StdRng, id_byte: u8) -> Relay {
    let mut r = relay(rng, id_byte);
    let mut cfg = (*r.cfg).clone();
    cfg.cc = Some(crate::proto::cc::CcParams::default());
    r.cfg = Arc::new(cfg);
    r.t.set_config(r.cfg.clone());
    r
}

/// CREATE2 (ntor-v3, client message `ext`): the client's state and what
/// the relay answered.
fn create(
    r: &mut Relay,
    rng: &mut StdRng,
    chan: ChanId,
    id: CircId,
    ext: &[u8],
) -> (ntor_v3::Ntor3ClientState, Vec<Action>) {
    let b = r.cfg.onion_keys.current.public_bytes();
    let (st, hdata) =
        ntor_v3::client_create(rng, &r.cfg.ed_id, &b, ext, NTOR3_CIRC_VERIFICATION).unwrap();
    let mut v = Vec::new();
    Create2::new(HandshakeType::NTOR_V3, hdata)
        .unwrap()
        .encode_onto(&mut v)
        .unwrap();
    r.t.handle_cells(
        chan,
        &mut [cell(id, ChanCmd::CREATE2, body_of(&v))],
        now(),
        rng,
    );
    (st, drain(&mut r.t))
}

/// A one-hop CGO circuit to `r` on the relay channel.
fn cgo_circuit(r: &mut Relay, rng: &mut StdRng) -> CgoClient {
    let id = CircId::new(0x8000_0001);
    let (st, acts) = create(r, rng, RELAY_CHAN, id, ASK_CC_CGO);
    let cells = sent_cells(&acts);
    assert_eq!(cells[0].2, ChanCmd::CREATED2);
    let created = Created2::decode(&cells[0].3).unwrap();
    let (msg, _, cgo) =
        ntor_v3::client_finish_all(st, created.hdata(), NTOR3_CIRC_VERIFICATION).unwrap();
    assert_eq!(msg, vec![1, 2, 1, 31], "CC granted; nothing says CGO");
    CgoClient {
        hops: vec![CgoClientHop::new(&cgo.0)],
        chan: RELAY_CHAN,
        id,
    }
}

/// BEGIN to an IP literal, connected; returns the stream's key.
fn open_stream(r: &mut Relay, cl: &mut CgoClient, rng: &mut StdRng, hop: usize) -> StreamKey {
    let (c, _) = cl.originate(rng, hop, RelayCmd::BEGIN, 1, b"192.0.2.10:443\0", false);
    r.t.handle_cells(cl.chan, &mut [c], now(), rng);
    let acts = drain(&mut r.t);
    let [Action::Connect { key, addr }] = &acts[..] else {
        panic!("{acts:?}")
    };
    let (key, addr) = (*key, *addr);
    r.t.handle_connected(key, Ok(addr), now(), rng);
    let rep = cl.replies(&drain(&mut r.t));
    assert_eq!(
        (rep[0].0, rep[0].1, rep[0].2),
        (hop, RelayCmd::CONNECTED, 1)
    );
    let c = Connected::decode(&rep[0].3).unwrap();
    assert_eq!(c.addr(), Some("192.0.2.10".parse().unwrap()));
    key
}

/// A download and an upload on a CGO exit circuit: v1 messages with 488
/// bytes of data per cell, SENDMEs with 16-byte tags both ways, the
/// congestion window as on tor1.
#[test]
fn cgo_exit_download_and_upload() {
    let mut rng = StdRng::seed_from_u64(90);
    let mut r = cc_relay(&mut rng, 1);
    let mut cl = cgo_circuit(&mut r, &mut rng);
    let key = open_stream(&mut r, &mut cl, &mut rng, 0);

    // Download: the first flight is cwnd_init cells of 488 bytes.
    let data: Vec<u8> = (0..488 * 300).map(|i| (i % 251) as u8).collect();
    let taken = r.t.handle_stream_data(key, &data, now(), &mut rng);
    assert_eq!(taken, 488 * 124, "cwnd_init cells of V1_DATA_MAX");
    let rep = cl.replies(&drain(&mut r.t));
    assert_eq!(rep.len(), 124);
    let got: Vec<u8> = rep.iter().flat_map(|x| x.3.clone()).collect();
    assert_eq!(got, data[..taken]);
    assert!(
        rep.iter()
            .all(|x| (x.0, x.1, x.2) == (0, RelayCmd::DATA, 1))
    );
    // The client's SENDME for the 31st cell echoes that cell's tag.
    let (c, _) = cl.originate_msg(
        &mut rng,
        0,
        0,
        &Sendme::V1 {
            tag: SendmeDigest::cgo(rep[30].4.0),
        },
        false,
    );
    r.t.handle_cells(RELAY_CHAN, &mut [c], now(), &mut rng);
    let more = r.t.handle_stream_data(key, &data[taken..], now(), &mut rng);
    assert!(more > 0, "the SENDME was accepted and reopened the window");
    let rep = cl.replies(&drain(&mut r.t));
    let got: Vec<u8> = rep.iter().flat_map(|x| x.3.clone()).collect();
    assert_eq!(got, data[taken..taken + more]);

    // Upload: 31 DATA cells make one SENDME carrying the 31st's tag.
    let mut tags = Vec::new();
    for i in 0..31u8 {
        let (c, tag) = cl.originate(&mut rng, 0, RelayCmd::DATA, 1, &[i; 100], false);
        tags.push(tag);
        r.t.handle_cells(RELAY_CHAN, &mut [c], now(), &mut rng);
    }
    let acts = drain(&mut r.t);
    let writes: usize = acts
        .iter()
        .map(|a| match a {
            Action::StreamWrite { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(writes, 3100);
    let sendmes: Vec<Sendme> = cl
        .replies(&acts)
        .into_iter()
        .filter(|x| x.1 == RelayCmd::SENDME)
        .map(|x| Sendme::decode(&x.3).unwrap())
        .collect();
    assert_eq!(
        sendmes,
        vec![Sendme::V1 {
            tag: SendmeDigest::cgo(tags[30].0)
        }]
    );
    assert_eq!(r.t.circuit_count(RELAY_CHAN), 1);
}

/// A tor1-length tag on a CGO circuit, and a v1 message with a command C
/// tor does not know, close the circuit (PROTOCOL), as C tor does.
#[test]
fn cgo_exit_refuses_wrong_tags_and_unknown_commands() {
    let mut rng = StdRng::seed_from_u64(91);
    let mut r = cc_relay(&mut rng, 1);
    let mut cl = cgo_circuit(&mut r, &mut rng);
    let key = open_stream(&mut r, &mut cl, &mut rng, 0);
    let data = vec![7u8; 488 * 124];
    r.t.handle_stream_data(key, &data, now(), &mut rng);
    let rep = cl.replies(&drain(&mut r.t));
    let mut long = [0u8; 20];
    long[..16].copy_from_slice(&rep[30].4.0);
    let (c, _) = cl.originate_msg(
        &mut rng,
        0,
        0,
        &Sendme::V1 {
            tag: SendmeDigest::tor1(long),
        },
        false,
    );
    r.t.handle_cells(RELAY_CHAN, &mut [c], now(), &mut rng);
    assert_eq!(destroy_codes(&drain(&mut r.t)), vec![1]);

    let mut cl = cgo_circuit(&mut r, &mut rng);
    let mut body = [0u8; 509];
    body[16] = 200; // command
    let (c, _) = cl.seal(0, body, false);
    r.t.handle_cells(RELAY_CHAN, &mut [c], now(), &mut rng);
    assert_eq!(destroy_codes(&drain(&mut r.t)), vec![1]);
}

/// The negotiation failures C tor answers with DESTROY(PROTOCOL): CGO on a
/// relay without congestion control, CGO without asking for it, any other
/// capability. A relay without CC still serves a plain ntor-v3 client.
#[test]
fn cgo_negotiation_failures_destroy_the_circuit() {
    let mut rng = StdRng::seed_from_u64(92);
    let mut r = relay(&mut rng, 1);
    let id = CircId::new(0x8000_0010);
    assert_eq!(
        destroy_codes(&create(&mut r, &mut rng, RELAY_CHAN, id, ASK_CC_CGO).1),
        vec![1]
    );
    let mut r = cc_relay(&mut rng, 1);
    for ext in [&[1, 3, 2, 2, 6][..], &[2, 1, 0, 3, 2, 2, 5], &[1, 3, 2, 2]] {
        assert_eq!(
            destroy_codes(&create(&mut r, &mut rng, RELAY_CHAN, id, ext).1),
            vec![1],
            "{ext:?}"
        );
    }
    let (_, acts) = create(&mut r, &mut rng, RELAY_CHAN, id, &[1, 1, 0]);
    assert_eq!(sent_cells(&acts)[0].2, ChanCmd::CREATED2);
}

/// A two-hop CGO circuit: A is the middle (a CGO hop too, extending with
/// an EXTEND2 it received as a v1 message), B the exit. Cells for B pass
/// A unrecognized, B's replies get A's layer, and a cell A originates
/// between them keeps A's backward chain in order.
#[test]
fn cgo_middle_forwards_both_ways() {
    let mut rng = StdRng::seed_from_u64(93);
    let mut a = cc_relay(&mut rng, 1);
    let mut b = cc_relay(&mut rng, 2);
    let mut cl = cgo_circuit(&mut a, &mut rng);

    let bb = b.cfg.onion_keys.current.public_bytes();
    let (st, hdata) = ntor_v3::client_create(
        &mut rng,
        &b.cfg.ed_id,
        &bb,
        ASK_CC_CGO,
        NTOR3_CIRC_VERIFICATION,
    )
    .unwrap();
    let specs = vec![
        LinkSpec::Ipv4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 9001)),
        LinkSpec::LegacyId(b.cfg.rsa_id),
        LinkSpec::Ed25519Id(b.cfg.ed_id),
    ];
    let ext = Extend2::new(specs, HandshakeType::NTOR_V3, hdata);
    let (c, _) = cl.originate_msg(&mut rng, 0, 0, &ext, true);
    a.t.handle_cells(RELAY_CHAN, &mut [c], now(), &mut rng);
    let acts = drain(&mut a.t);
    let [Action::OpenChannel { key, .. }] = &acts[..] else {
        panic!("{acts:?}")
    };
    const A_TO_B: ChanId = ChanId(2);
    a.t.handle_extend_channel(*key, Ok(A_TO_B), &mut rng);
    let cells = sent_cells(&drain(&mut a.t));
    let (_, ab_id, cmd, body) = cells[0];
    assert_eq!(cmd, ChanCmd::CREATE2);
    b.t.handle_cells(
        RELAY_CHAN,
        &mut [cell(ab_id, ChanCmd::CREATE2, body)],
        now(),
        &mut rng,
    );
    let cells = sent_cells(&drain(&mut b.t));
    a.t.handle_cells(
        A_TO_B,
        &mut [cell(ab_id, ChanCmd::CREATED2, cells[0].3)],
        now(),
        &mut rng,
    );
    let rep = cl.replies(&drain(&mut a.t));
    assert_eq!((rep[0].0, rep[0].1), (0, RelayCmd::EXTENDED2));
    let ext2 = Extended2::decode(&rep[0].3).unwrap();
    let (msg, _, cgo) =
        ntor_v3::client_finish_all(st, ext2.hdata(), NTOR3_CIRC_VERIFICATION).unwrap();
    assert_eq!(msg, vec![1, 2, 1, 31]);
    cl.hops.push(CgoClientHop::new(&cgo.0));

    // BEGIN for B passes A (as RELAY), and B's CONNECTED comes back
    // through A's layer.
    let (c, _) = cl.originate(&mut rng, 1, RelayCmd::BEGIN, 1, b"192.0.2.10:80\0", false);
    a.t.handle_cells(RELAY_CHAN, &mut [c], now(), &mut rng);
    let fwd = sent_cells(&drain(&mut a.t));
    assert_eq!((fwd[0].0, fwd[0].2), (A_TO_B, ChanCmd::RELAY));
    b.t.handle_cells(
        RELAY_CHAN,
        &mut [cell(ab_id, ChanCmd::RELAY, fwd[0].3)],
        now(),
        &mut rng,
    );
    let acts = drain(&mut b.t);
    let [Action::Connect { key, addr }] = &acts[..] else {
        panic!("{acts:?}")
    };
    let (key, addr): (StreamKey, SocketAddr) = (*key, *addr);
    b.t.handle_connected(key, Ok(addr), now(), &mut rng);
    b.t.handle_stream_data(key, b"hello from B", now(), &mut rng);
    let back: Vec<IncomingCell> = sent_cells(&drain(&mut b.t))
        .into_iter()
        .map(|(_, id, cmd, body)| cell(id, cmd, body))
        .collect();
    assert_eq!(back.len(), 2);
    // A originates a cell toward the client (a RESOLVED of its own)
    // before B's cells reach it.
    let (c, _) = cl.originate(&mut rng, 0, RelayCmd::RESOLVE, 5, b"192.0.2.1\0", false);
    a.t.handle_cells(RELAY_CHAN, &mut [c], now(), &mut rng);
    let mut back = back;
    a.t.handle_cells(A_TO_B, &mut back, now(), &mut rng);
    let rep = cl.replies(&drain(&mut a.t));
    let seen: Vec<(usize, RelayCmd, u16)> = rep.iter().map(|x| (x.0, x.1, x.2)).collect();
    assert_eq!(
        seen,
        vec![
            (0, RelayCmd::RESOLVED, 5),
            (1, RelayCmd::CONNECTED, 1),
            (1, RelayCmd::DATA, 1)
        ]
    );
    assert_eq!(rep[2].3, b"hello from B");
}
