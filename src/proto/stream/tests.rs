//! Exit stream tests, driven through a two-hop circuit (BEGIN from the
//! first hop is refused, so the exit sits behind a relay channel).

use std::net::{IpAddr, SocketAddr};

use rand::{SeedableRng, rngs::StdRng};

use crate::exit::dns::{Answer, ResolveError};
use crate::proto::cell::{ChanCmd, CircId};
use crate::proto::circuit::tests::{
    CLIENT_CHAN, Client, RELAY_CHAN, Relay, client_cell, client_msg, client_recv, create_ntor,
    create_ntor_v3, destroy_codes, drain, now, relay, sent_cells,
};
use crate::proto::circuit::{Action, ChanId, PeerKind, StreamKey};
use crate::proto::relay_msg::{
    Connected, End, EndReason, RelayBody, RelayCmd, Resolved, ResolvedVal, Sendme, SendmeDigest,
};

/// The exit with a circuit arriving from a known relay.
fn exit(rng: &mut StdRng) -> (Relay, Client) {
    let mut r = relay(rng, 1);
    let cl = create_ntor(&mut r, rng, RELAY_CHAN, 0x8000_0001);
    (r, cl)
}

fn send(r: &mut Relay, cl: &mut Client, rng: &mut StdRng, cmd: RelayCmd, sid: u16, data: &[u8]) {
    let chan = chan_of(cl);
    let mut c = [client_cell(cl, rng, 0, cmd, sid, data, false)];
    r.t.handle_cells(chan, &mut c, now(), rng);
}

fn chan_of(cl: &Client) -> ChanId {
    cl.chan
}

/// Decrypt every cell the exit sent to the client: (cmd, stream, data, tag).
fn replies(
    r: &mut Relay,
    cl: &mut Client,
    acts: &[Action],
) -> Vec<(RelayCmd, u16, Vec<u8>, [u8; 20])> {
    let _ = r;
    sent_cells(acts)
        .into_iter()
        .map(|(_, _, cmd, body)| {
            assert_eq!(cmd, ChanCmd::RELAY);
            let (_, hdr, data, tag) = client_recv(cl, body);
            (hdr.cmd, hdr.stream_id.get(), data, tag)
        })
        .collect()
}

fn only_end(r: &mut Relay, cl: &mut Client) -> End {
    let acts = drain(&mut r.t);
    let rep = replies(r, cl, &acts);
    assert_eq!(rep.len(), 1, "{rep:?}");
    assert_eq!(rep[0].0, RelayCmd::END);
    End::decode(&rep[0].2).unwrap()
}

/// BEGIN to a host name through resolve and connect; returns the key.
fn open_stream(r: &mut Relay, cl: &mut Client, rng: &mut StdRng, sid: u16) -> StreamKey {
    send(r, cl, rng, RelayCmd::BEGIN, sid, b"Example.COM:443\0");
    let acts = drain(&mut r.t);
    let [Action::Resolve { key, query }] = &acts[..] else {
        panic!("{acts:?}")
    };
    assert_eq!(query.name(), "example.com");
    let key = *key;
    let ans = Answer {
        addrs: vec![
            "2001:db8::1".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
        ],
        ttl: 3600,
        hostname: None,
    };
    r.t.handle_resolved(key, Ok(ans), now(), rng);
    let acts = drain(&mut r.t);
    let [Action::Connect { key: k2, addr }] = &acts[..] else {
        panic!("{acts:?}")
    };
    assert_eq!(
        (*k2, *addr),
        (key, "192.0.2.10:443".parse::<SocketAddr>().unwrap())
    );
    r.t.handle_connected(key, Ok(*addr), now(), rng);
    let acts = drain(&mut r.t);
    let rep = replies(r, cl, &acts);
    assert_eq!((rep[0].0, rep[0].1), (RelayCmd::CONNECTED, sid));
    let c = Connected::decode(&rep[0].2).unwrap();
    assert_eq!(c.addr(), Some("192.0.2.10".parse::<IpAddr>().unwrap()));
    assert_eq!(c.ttl(), Some(3600));
    key
}

#[test]
fn begin_resolve_connect_connected() {
    let mut rng = StdRng::seed_from_u64(20);
    let (mut r, mut cl) = exit(&mut rng);
    let key = open_stream(&mut r, &mut cl, &mut rng, 5);
    let counted = r.t.exit_stream_counts();
    assert_eq!(
        (counted.begin, counted.resolve),
        (1, 0),
        "tor_relay_streams_total"
    );
    // DATA both ways.
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::DATA,
        5,
        b"GET / HTTP/1.0\r\n\r\n",
    );
    let acts = drain(&mut r.t);
    assert!(
        matches!(&acts[..], [Action::StreamWrite { key: k, data }] if *k == key && data == b"GET / HTTP/1.0\r\n\r\n")
    );
    assert_eq!(
        r.t.handle_stream_data(key, b"HTTP/1.0 200 OK\r\n", now(), &mut rng),
        17
    );
    let acts = drain(&mut r.t);
    let rep = replies(&mut r, &mut cl, &acts);
    assert_eq!(
        (rep[0].0, rep[0].1, &rep[0].2[..]),
        (RelayCmd::DATA, 5, &b"HTTP/1.0 200 OK\r\n"[..])
    );
    // EOF → END DONE and close.
    r.t.handle_stream_eof(key, None, now(), &mut rng);
    let acts = drain(&mut r.t);
    assert!(matches!(acts.last(), Some(Action::CloseStream { key: k }) if *k == key));
    let rep = replies(&mut r, &mut cl, &acts[..1]);
    assert_eq!(End::decode(&rep[0].2).unwrap().reason(), EndReason::DONE);
}

#[test]
fn optimistic_data_waits_for_connected_and_dies_with_end() {
    let mut rng = StdRng::seed_from_u64(21);
    let (mut r, mut cl) = exit(&mut rng);
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        1,
        b"192.0.2.3:80\0",
    );
    send(&mut r, &mut cl, &mut rng, RelayCmd::DATA, 1, b"early");
    let acts = drain(&mut r.t);
    let [Action::Connect { key, addr }] = &acts[..] else {
        panic!("{acts:?}")
    };
    let (key, addr) = (*key, *addr);
    r.t.handle_connected(key, Ok(addr), now(), &mut rng);
    let acts = drain(&mut r.t);
    assert!(matches!(&acts[1], Action::StreamWrite { data, .. } if data == b"early"));
    // A second stream: END before connect drops the queued data.
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        2,
        b"192.0.2.3:80\0",
    );
    send(&mut r, &mut cl, &mut rng, RelayCmd::DATA, 2, b"lost");
    let acts = drain(&mut r.t);
    let [Action::Connect { key, .. }] = &acts[..] else {
        panic!()
    };
    let key = *key;
    let mut end = End::new(EndReason::MISC);
    let _ = &mut end;
    let mut c = [client_msg(&mut cl, &mut rng, 0, 2, &end, false)];
    r.t.handle_cells(RELAY_CHAN, &mut c, now(), &mut rng);
    let acts = drain(&mut r.t);
    assert!(matches!(&acts[..], [Action::CloseStream { key: k }] if *k == key));
    r.t.handle_connected(key, Ok(addr), now(), &mut rng);
    assert!(drain(&mut r.t).is_empty());
}

#[test]
fn end_reasons() {
    let mut rng = StdRng::seed_from_u64(22);
    // EXITPOLICY with the address for a rejected port (IP literal).
    let (mut r, mut cl) = exit(&mut rng);
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        1,
        b"192.0.2.3:25\0",
    );
    let end = only_end(&mut r, &mut cl);
    assert_eq!(end.reason(), EndReason::EXITPOLICY);
    assert_eq!(end.address(), Some("192.0.2.3".parse().unwrap()));
    assert_eq!(end.ttl(), Some(3600));
    // EXITPOLICY for the resolved address of a host name.
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        2,
        b"mail.example:25\0",
    );
    let Some(Action::Resolve { key, .. }) = r.t.poll_action() else {
        panic!()
    };
    let ans = Answer {
        addrs: vec!["198.51.100.4".parse().unwrap()],
        ttl: 300,
        hostname: None,
    };
    r.t.handle_resolved(key, Ok(ans), now(), &mut rng);
    let end = only_end(&mut r, &mut cl);
    assert_eq!(
        (end.reason(), end.address(), end.ttl()),
        (
            EndReason::EXITPOLICY,
            Some("198.51.100.4".parse().unwrap()),
            Some(300)
        )
    );
    // Both refusals are rejected IPv4 Exit connections for the metrics,
    // and neither a BEGIN that went to connect.
    let counted = r.t.exit_stream_counts();
    assert_eq!((counted.rejected, counted.begin), ([2, 0], 0));
    // RESOLVEFAILED.
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        3,
        b"nx.example:80\0",
    );
    let Some(Action::Resolve { key, .. }) = r.t.poll_action() else {
        panic!()
    };
    r.t.handle_resolved(
        key,
        Err(ResolveError::NxDomain {
            name: "nx.example".into(),
        }),
        now(),
        &mut rng,
    );
    assert_eq!(only_end(&mut r, &mut cl).reason(), EndReason::RESOLVEFAILED);
    // CONNECTREFUSED.
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        4,
        b"192.0.2.3:81\0",
    );
    let Some(Action::Connect { key, .. }) = r.t.poll_action() else {
        panic!()
    };
    r.t.handle_connected(
        key,
        Err(std::io::Error::from_raw_os_error(libc::ECONNREFUSED)),
        now(),
        &mut rng,
    );
    let acts = drain(&mut r.t);
    let rep = replies(&mut r, &mut cl, &acts[..1]);
    assert_eq!(
        End::decode(&rep[0].2).unwrap().reason(),
        EndReason::CONNECTREFUSED
    );
    // NOTDIRECTORY for BEGIN_DIR; TORPROTOCOL for a bad BEGIN.
    send(&mut r, &mut cl, &mut rng, RelayCmd::BEGIN_DIR, 5, b"");
    assert_eq!(only_end(&mut r, &mut cl).reason(), EndReason::NOTDIRECTORY);
    send(&mut r, &mut cl, &mut rng, RelayCmd::BEGIN, 6, b"no-port\0");
    assert_eq!(only_end(&mut r, &mut cl).reason(), EndReason::TORPROTOCOL);

    // First hop (client channel) → TORPROTOCOL.
    let mut r = relay(&mut rng, 1);
    let mut cl = create_ntor(&mut r, &mut rng, CLIENT_CHAN, 0x8000_0001);
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        1,
        b"192.0.2.3:80\0",
    );
    assert_eq!(only_end(&mut r, &mut cl).reason(), EndReason::TORPROTOCOL);
    // Unknown relay while refusing unknown exits → MISC.
    r.t.channel_opened(
        ChanId(9),
        PeerKind::Relay {
            rsa_id: [0x42; 20],
            ed_id: [0x42; 32],
        },
    );
    let mut cl = create_ntor(&mut r, &mut rng, ChanId(9), 0x8000_0001);
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        1,
        b"192.0.2.3:80\0",
    );
    assert_eq!(only_end(&mut r, &mut cl).reason(), EndReason::MISC);
}

#[test]
fn resolve_gives_resolved() {
    let mut rng = StdRng::seed_from_u64(23);
    let (mut r, mut cl) = exit(&mut rng);
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::RESOLVE,
        7,
        b"www.example\0",
    );
    let Some(Action::Resolve { key, .. }) = r.t.poll_action() else {
        panic!()
    };
    let ans = Answer {
        addrs: vec!["2001:db8::5".parse().unwrap(), "192.0.2.5".parse().unwrap()],
        ttl: 300,
        hostname: None,
    };
    r.t.handle_resolved(key, Ok(ans), now(), &mut rng);
    let acts = drain(&mut r.t);
    let rep = replies(&mut r, &mut cl, &acts);
    assert_eq!((rep[0].0, rep[0].1), (RelayCmd::RESOLVED, 7));
    let mut want = vec![4, 4, 192, 0, 2, 5, 0, 0, 1, 0x2c, 6, 16];
    want.extend_from_slice(
        &"2001:db8::5"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    want.extend_from_slice(&[0, 0, 1, 0x2c]);
    assert_eq!(rep[0].2, want);
    // An error is typed (transient) and carries C tor's text.
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::RESOLVE,
        8,
        b"slow.example\0",
    );
    let Some(Action::Resolve { key, .. }) = r.t.poll_action() else {
        panic!()
    };
    r.t.handle_resolved(
        key,
        Err(ResolveError::Timeout {
            name: "slow.example".into(),
            attempts: 3,
        }),
        now(),
        &mut rng,
    );
    let acts = drain(&mut r.t);
    let rep = replies(&mut r, &mut cl, &acts);
    let res = Resolved::decode(&rep[0].2).unwrap();
    assert_eq!(res.answers()[0].val, ResolvedVal::TransientError);
}

/// The client's side of flow control: SENDMEs as C clients send them.
struct Receiver {
    circ_deliver: i32,
    stream_deliver: i32,
    cells: usize,
}

impl Receiver {
    fn take(
        &mut self,
        r: &mut Relay,
        cl: &mut Client,
        rng: &mut StdRng,
        acts: &[Action],
        sid: u16,
    ) {
        for (cmd, s, _data, tag) in replies(r, cl, acts) {
            assert_eq!((cmd, s), (RelayCmd::DATA, sid));
            self.cells += 1;
            self.circ_deliver -= 1;
            self.stream_deliver -= 1;
            if self.circ_deliver <= 900 {
                self.circ_deliver += 100;
                let mut c = [client_msg(
                    cl,
                    rng,
                    0,
                    0,
                    &Sendme::V1 {
                        tag: SendmeDigest::tor1(tag),
                    },
                    false,
                )];
                r.t.handle_cells(RELAY_CHAN, &mut c, now(), rng);
            }
            if self.stream_deliver <= 450 {
                self.stream_deliver += 50;
                let mut c = [client_msg(cl, rng, 0, sid, &Sendme::V0, false)];
                r.t.handle_cells(RELAY_CHAN, &mut c, now(), rng);
            }
        }
    }
}

#[test]
fn download_3000_cells_with_windows_and_v1_sendmes() {
    let mut rng = StdRng::seed_from_u64(24);
    let (mut r, mut cl) = exit(&mut rng);
    let keys: Vec<StreamKey> = (1..=3)
        .map(|s| open_stream(&mut r, &mut cl, &mut rng, s))
        .collect();
    let chunk = vec![0xabu8; 498 * 3000];
    // Without SENDMEs: 500 cells per stream, 1000 for the circuit.
    assert_eq!(
        r.t.handle_stream_data(keys[0], &chunk, now(), &mut rng),
        498 * 500
    );
    assert_eq!(
        r.t.handle_stream_data(keys[1], &chunk, now(), &mut rng),
        498 * 500
    );
    assert_eq!(r.t.handle_stream_data(keys[2], &chunk, now(), &mut rng), 0);
    let acts = drain(&mut r.t);
    assert_eq!(sent_cells(&acts).len(), 1000);
    assert_eq!(
        acts.iter()
            .filter(|a| matches!(a, Action::PauseRead { .. }))
            .count(),
        3
    );
    // Deliver them; v1 SENDMEs with the right tags reopen the windows.
    let mut rx = Receiver {
        circ_deliver: 1000,
        stream_deliver: 500,
        cells: 0,
    };
    let (first, second): (Vec<_>, Vec<_>) = sent_cells(&acts).into_iter().partition(|c| {
        let _ = c;
        true
    });
    let _ = second;
    let acts: Vec<Action> = first
        .into_iter()
        .map(|(chan, circ_id, cmd, body)| Action::SendCell {
            chan,
            circ_id,
            cmd,
            body,
        })
        .collect();
    // Only stream accounting for stream 1 and 2 is simulated loosely: stream
    // SENDMEs go to the stream of each cell.
    let mut per_stream = [500i32; 4];
    for (cmd, s, _d, tag) in replies(&mut r, &mut cl, &acts) {
        assert_eq!(cmd, RelayCmd::DATA);
        rx.circ_deliver -= 1;
        per_stream[s as usize] -= 1;
        if rx.circ_deliver <= 900 {
            rx.circ_deliver += 100;
            let mut c = [client_msg(
                &mut cl,
                &mut rng,
                0,
                0,
                &Sendme::V1 {
                    tag: SendmeDigest::tor1(tag),
                },
                false,
            )];
            r.t.handle_cells(RELAY_CHAN, &mut c, now(), &mut rng);
        }
    }
    let acts = drain(&mut r.t);
    let resumed: Vec<_> = acts
        .iter()
        .filter_map(|a| match a {
            Action::ResumeRead { key } => Some(*key),
            _ => None,
        })
        .collect();
    assert_eq!(
        resumed,
        vec![keys[2]],
        "only stream 3 has stream window left"
    );
    // Stream 3 now downloads 3000 cells with a well-behaved receiver.
    let mut left = &chunk[..];
    let mut rx = Receiver {
        circ_deliver: rx.circ_deliver,
        stream_deliver: 500,
        cells: 0,
    };
    for _ in 0..100 {
        let n = r.t.handle_stream_data(keys[2], left, now(), &mut rng);
        left = &left[n..];
        let acts = drain(&mut r.t);
        let data_acts: Vec<Action> = acts
            .into_iter()
            .filter(|a| matches!(a, Action::SendCell { .. }))
            .collect();
        rx.take(&mut r, &mut cl, &mut rng, &data_acts, 3);
        if left.is_empty() {
            break;
        }
    }
    assert!(left.is_empty());
    assert_eq!(rx.cells, 3000);
    assert_eq!(r.t.circuit_count(RELAY_CHAN), 1);

    // A SENDME with a wrong tag closes the circuit.
    assert!(r.t.handle_stream_data(keys[2], &chunk[..498 * 100], now(), &mut rng) > 0);
    drain(&mut r.t);
    let mut c = [client_msg(
        &mut cl,
        &mut rng,
        0,
        0,
        &Sendme::V1 {
            tag: SendmeDigest::tor1([7; 20]),
        },
        false,
    )];
    r.t.handle_cells(RELAY_CHAN, &mut c, now(), &mut rng);
    let acts = drain(&mut r.t);
    let destroys: Vec<_> = sent_cells(&acts)
        .into_iter()
        .filter(|c| c.2 == ChanCmd::DESTROY)
        .map(|c| (c.1, c.3[0]))
        .collect();
    assert_eq!(destroys, vec![(CircId::new(0x8000_0001), 1)]);
    assert_eq!(r.t.circuit_count(RELAY_CHAN), 0);
}

#[test]
fn upload_emits_v1_circuit_sendme_with_last_data_tag() {
    let mut rng = StdRng::seed_from_u64(25);
    let (mut r, mut cl) = exit(&mut rng);
    let _key = open_stream(&mut r, &mut cl, &mut rng, 1);
    let last_tag = upload_100(&mut r, &mut cl, &mut rng);
    let acts: Vec<Action> = drain(&mut r.t)
        .into_iter()
        .filter(|a| matches!(a, Action::SendCell { .. }))
        .collect();
    let rep = replies(&mut r, &mut cl, &acts);
    let sendmes: Vec<_> = rep.iter().filter(|x| x.0 == RelayCmd::SENDME).collect();
    // One circuit SENDME (v1, tag of the 100th DATA) and, the socket not
    // having drained, no stream SENDME yet.
    assert_eq!(sendmes.len(), 1, "{rep:?}");
    assert_eq!(sendmes[0].1, 0);
    assert_eq!(
        Sendme::decode(&sendmes[0].2).unwrap(),
        Sendme::V1 {
            tag: SendmeDigest::tor1(last_tag)
        }
    );
}

/// A client that opens and ends streams as fast as it can must not grow
/// the table's deadline heap without bound (review finding: deadlines of
/// ended streams were only dropped when they fell due, 60 s later).
#[test]
fn stream_setup_deadlines_stay_bounded_under_begin_end_churn() {
    let mut rng = StdRng::seed_from_u64(29);
    let (mut r, mut cl) = exit(&mut rng);
    for i in 0..5000u32 {
        let sid = (i % 60000 + 1) as u16;
        send(
            &mut r,
            &mut cl,
            &mut rng,
            RelayCmd::BEGIN,
            sid,
            b"example.com:443\0",
        );
        send(&mut r, &mut cl, &mut rng, RelayCmd::END, sid, &[6]);
        drain(&mut r.t);
    }
    assert!(
        r.t.deadlines.len() <= 2 * r.t.streams.len() + 1025,
        "{} deadlines",
        r.t.deadlines.len()
    );
}

/// The network re-entry filter (connection_edge.c:connection_exit_connect):
/// a stream to a known relay's ORPort gets END CONNECTREFUSED, after the
/// exit policy and whether the address came as a literal or from DNS; with
/// `allow-network-reentry` the connect goes ahead. The config's reentry set
/// holds 198.51.100.9:9001.
#[test]
fn network_reentry_is_refused_unless_allowed() {
    let mut rng = StdRng::seed_from_u64(41);
    let (mut r, mut cl) = exit(&mut rng);
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        1,
        b"198.51.100.9:9001\0",
    );
    assert_eq!(
        only_end(&mut r, &mut cl).reason(),
        EndReason::CONNECTREFUSED
    );
    // The same address on another port is an ordinary destination.
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        2,
        b"198.51.100.9:443\0",
    );
    let acts = drain(&mut r.t);
    assert!(matches!(acts[..], [Action::Connect { .. }]), "{acts:?}");
    // A name that resolves to the relay: refused too.
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        3,
        b"relay.example:9001\0",
    );
    let Some(Action::Resolve { key, .. }) = r.t.poll_action() else {
        panic!()
    };
    let ans = Answer {
        addrs: vec!["198.51.100.9".parse().unwrap()],
        ttl: 300,
        hostname: None,
    };
    r.t.handle_resolved(key, Ok(ans), now(), &mut rng);
    assert_eq!(
        only_end(&mut r, &mut cl).reason(),
        EndReason::CONNECTREFUSED
    );
    assert_eq!(r.t.exit_stream_counts().rejected, [2, 0]);
    // The consensus allows re-entry: the next snapshot lets it through.
    let mut cfg = (*r.cfg).clone();
    cfg.allow_network_reentry = true;
    r.t.set_config(std::sync::Arc::new(cfg));
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        4,
        b"198.51.100.9:9001\0",
    );
    let acts = drain(&mut r.t);
    assert!(matches!(acts[..], [Action::Connect { .. }]), "{acts:?}");
}

/// The client sends 100 one-byte DATA cells on stream 1; the tag of the last.
fn upload_100(r: &mut Relay, cl: &mut Client, rng: &mut StdRng) -> [u8; 20] {
    let mut last_tag = [0u8; 20];
    for _ in 0..100 {
        let mut body = [0u8; 509];
        crate::proto::relay_msg::encode_relay_data(
            RelayCmd::DATA,
            crate::proto::relay_msg::StreamId::new(1),
            b"x",
            rng,
            &mut body,
        )
        .unwrap();
        last_tag = cl.circ.encrypt_forward(0, &mut body).unwrap().0;
        r.t.handle_cells(
            RELAY_CHAN,
            &mut [crate::proto::circuit::tests::cell(
                cl.id,
                ChanCmd::RELAY,
                body,
            )],
            now(),
            rng,
        );
    }
    last_tag
}

/// `sendme_emit_min_version` 0: the exit's circuit SENDME is the empty v0
/// (sendme.c:send_circuit_level_sendme). `sendme_accept_min_version` 1: a
/// v0 SENDME from the client closes the circuit.
#[test]
fn sendme_versions_follow_the_consensus() {
    let mut rng = StdRng::seed_from_u64(43);
    let (mut r, mut cl) = exit(&mut rng);
    let mut cfg = (*r.cfg).clone();
    cfg.sendme_emit_min_version = 0;
    r.t.set_config(std::sync::Arc::new(cfg));
    let _key = open_stream(&mut r, &mut cl, &mut rng, 1);
    upload_100(&mut r, &mut cl, &mut rng);
    let acts = drain(&mut r.t);
    let rep = replies(&mut r, &mut cl, &acts);
    let sendme = rep
        .iter()
        .find(|x| x.0 == RelayCmd::SENDME && x.1 == 0)
        .unwrap();
    assert_eq!(Sendme::decode(&sendme.2).unwrap(), Sendme::V0);

    let (mut r, mut cl) = exit(&mut rng);
    let mut cfg = (*r.cfg).clone();
    cfg.sendme_accept_min_version = 1;
    r.t.set_config(std::sync::Arc::new(cfg));
    let key = open_stream(&mut r, &mut cl, &mut rng, 1);
    assert_eq!(
        r.t.handle_stream_data(key, &[7u8; 498 * 100], now(), &mut rng),
        498 * 100
    );
    let _ = drain(&mut r.t);
    let mut c = [client_msg(&mut cl, &mut rng, 0, 0, &Sendme::V0, false)];
    r.t.handle_cells(RELAY_CHAN, &mut c, now(), &mut rng);
    let acts = drain(&mut r.t);
    assert!(
        sent_cells(&acts).iter().any(|c| c.2 == ChanCmd::DESTROY),
        "a v0 SENDME must close the circuit: {acts:?}"
    );
}

/// The exit with DoSStreamCreation on: burst 3, one more a second.
fn limited_exit(rng: &mut StdRng, defense_type: i32) -> (Relay, Client) {
    use crate::proto::dos::{DosOptions, DosParams};
    let mut r = relay(rng, 1);
    let mut cfg = (*r.cfg).clone();
    cfg.dos = DosParams::resolve(
        &DosOptions {
            stream_enabled: Some(true),
            stream_rate: 1,
            stream_burst: 3,
            stream_defense_type: defense_type,
            ..DosOptions::default()
        },
        &|_, d, _, _| d,
    );
    r.t.set_config(std::sync::Arc::new(cfg));
    let cl = create_ntor(&mut r, rng, RELAY_CHAN, 0x8000_0001);
    (r, cl)
}

#[test]
fn stream_creation_over_the_rate_is_refused_with_end_misc() {
    let mut rng = StdRng::seed_from_u64(40);
    let (mut r, mut cl) = limited_exit(&mut rng, 2);
    for sid in 1..=3 {
        send(
            &mut r,
            &mut cl,
            &mut rng,
            RelayCmd::BEGIN,
            sid,
            b"example.com:80\0",
        );
        let acts = drain(&mut r.t);
        assert!(matches!(&acts[..], [Action::Resolve { .. }]), "{acts:?}");
    }
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        4,
        b"example.com:80\0",
    );
    assert_eq!(only_end(&mut r, &mut cl).reason(), EndReason::MISC);
    // RESOLVE counts too: a transient error.
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::RESOLVE,
        5,
        b"example.com\0",
    );
    let acts = drain(&mut r.t);
    let rep = replies(&mut r, &mut cl, &acts);
    assert_eq!((rep[0].0, rep[0].1), (RelayCmd::RESOLVED, 5));
    let resolved = Resolved::decode(&rep[0].2).unwrap();
    assert!(matches!(
        resolved.answers().first(),
        Some(a) if a.val == ResolvedVal::TransientError
    ));
    assert_eq!(r.t.dos_counters().stream_rejected, 2);
    // A second later there is one token again.
    let later = now() + std::time::Duration::from_secs(1);
    let mut c = [client_cell(
        &mut cl,
        &mut rng,
        0,
        RelayCmd::BEGIN,
        6,
        b"example.com:80\0",
        false,
    )];
    r.t.handle_cells(cl.chan, &mut c, later, &mut rng);
    assert!(matches!(&drain(&mut r.t)[..], [Action::Resolve { .. }]));
}

#[test]
fn stream_creation_over_the_rate_can_close_the_circuit() {
    let mut rng = StdRng::seed_from_u64(41);
    let (mut r, mut cl) = limited_exit(&mut rng, 3);
    for sid in 1..=3 {
        send(
            &mut r,
            &mut cl,
            &mut rng,
            RelayCmd::BEGIN,
            sid,
            b"example.com:80\0",
        );
        drain(&mut r.t);
    }
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        4,
        b"example.com:80\0",
    );
    let acts = drain(&mut r.t);
    let destroys: Vec<_> = sent_cells(&acts)
        .into_iter()
        .filter(|c| c.2 == ChanCmd::DESTROY)
        .map(|c| c.3[0])
        .collect();
    assert_eq!(
        destroys,
        [crate::proto::cell::DestroyReason::RESOURCELIMIT.get()]
    );
    // Its streams went with it.
    assert_eq!(
        acts.iter()
            .filter(|a| matches!(a, Action::CloseStream { .. }))
            .count(),
        3
    );
}

#[test]
fn a_circuit_holds_at_most_max_streams() {
    use crate::proto::stream::MAX_STREAMS_PER_CIRCUIT;
    let mut rng = StdRng::seed_from_u64(42);
    let (mut r, mut cl) = exit(&mut rng);
    for sid in 1..=MAX_STREAMS_PER_CIRCUIT as u16 {
        send(
            &mut r,
            &mut cl,
            &mut rng,
            RelayCmd::BEGIN,
            sid,
            b"example.com:80\0",
        );
    }
    let resolves = drain(&mut r.t)
        .iter()
        .filter(|a| matches!(a, Action::Resolve { .. }))
        .count();
    assert_eq!(resolves, MAX_STREAMS_PER_CIRCUIT);
    let next = MAX_STREAMS_PER_CIRCUIT as u16 + 1;
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        next,
        b"example.com:80\0",
    );
    assert_eq!(only_end(&mut r, &mut cl).reason(), EndReason::MISC);
    // One ends: there is room again.
    send(&mut r, &mut cl, &mut rng, RelayCmd::END, 1, &[6]);
    drain(&mut r.t);
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::BEGIN,
        next,
        b"example.com:80\0",
    );
    assert!(matches!(&drain(&mut r.t)[..], [Action::Resolve { .. }]));
}

/// A full client link stops the exit's streams (CircuitTable::set_chan_room):
/// each packaged cell is charged to the link's room, the stream pauses at
/// zero room with windows still open, and resumes when the worker reports
/// that the link drained; a report without the drain resumes nothing.
#[test]
fn a_full_link_pauses_exit_streams_until_it_drains() {
    let mut rng = StdRng::seed_from_u64(31);
    let (mut r, mut cl) = exit(&mut rng);
    let key = open_stream(&mut r, &mut cl, &mut rng, 1);
    let chan = chan_of(&cl);
    let chunk = vec![0x5au8; 498 * 100];
    // Room for 10 cells of 514 bytes.
    r.t.set_chan_room(chan, 10 * 514, false);
    assert_eq!(
        r.t.handle_stream_data(key, &chunk, now(), &mut rng),
        498 * 10
    );
    let acts = drain(&mut r.t);
    assert_eq!(sent_cells(&acts).len(), 10);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::PauseRead { key: k } if *k == key))
    );
    // Still full: nothing more, and no resume.
    assert_eq!(r.t.handle_stream_data(key, &chunk, now(), &mut rng), 0);
    r.t.set_chan_room(chan, 0, false);
    assert!(
        drain(&mut r.t)
            .iter()
            .all(|a| !matches!(a, Action::ResumeRead { .. }))
    );
    // Drained: the stream resumes and packages again.
    r.t.set_chan_room(chan, 100 * 514, true);
    let acts = drain(&mut r.t);
    assert_eq!(
        acts.iter()
            .filter(|a| matches!(a, Action::ResumeRead { key: k } if *k == key))
            .count(),
        1
    );
    assert_eq!(
        r.t.handle_stream_data(key, &chunk, now(), &mut rng),
        498 * 100
    );
    // A closed link forgets its room.
    r.t.channel_closed(chan);
    assert!(!r.t.chan_room.contains_key(&chan));
}

/// The exit with a circuit from a known relay that negotiated congestion
/// control in ntor-v3 (the relay offering it).
fn cc_exit(rng: &mut StdRng) -> (Relay, Client) {
    let mut r = relay(rng, 1);
    let mut cfg = (*r.cfg).clone();
    cfg.cc = Some(crate::proto::cc::CcParams::default());
    r.cfg = std::sync::Arc::new(cfg);
    r.t.set_config(r.cfg.clone());
    let (cl, reply) = create_ntor_v3(&mut r, rng, RELAY_CHAN, 0x8000_0001, &[1, 1, 0]);
    assert_eq!(reply, vec![1, 2, 1, 31], "CC granted with sendme_inc 31");
    (r, cl)
}

/// A download on a congestion-controlled circuit: the first flight is
/// cwnd_init (124 cells, not the fixed window's 1000 nor a stream's 500),
/// a SENDME v1 every 31 cells with that cell's tag acknowledges them, and
/// slow start opens the window as RTT samples arrive.
#[test]
fn cc_download_follows_the_congestion_window() {
    let mut rng = StdRng::seed_from_u64(40);
    let (mut r, mut cl) = cc_exit(&mut rng);
    let key = open_stream(&mut r, &mut cl, &mut rng, 1);
    let data = vec![0x5au8; 498 * 5000];
    let mut left = &data[..];
    let mut t = now();
    let mut sent_total = 0;
    let mut flights = Vec::new();
    // The client's count of DATA cells since its last SENDME.
    let mut since = 0;
    for _ in 0..8 {
        let n = r.t.handle_stream_data(key, left, t, &mut rng);
        left = &left[n..];
        let acts: Vec<Action> = drain(&mut r.t)
            .into_iter()
            .filter(|a| matches!(a, Action::SendCell { .. }))
            .collect();
        flights.push(acts.len());
        sent_total += acts.len();
        // The client takes the flight 50 ms later and acknowledges every
        // 31st cell with its tag, as a C tor client with CC does.
        t += std::time::Duration::from_millis(50);
        for (cmd, sid, _d, tag) in replies(&mut r, &mut cl, &acts) {
            assert_eq!((cmd, sid), (RelayCmd::DATA, 1));
            since += 1;
            if since == 31 {
                since = 0;
                let mut c = [client_msg(
                    &mut cl,
                    &mut rng,
                    0,
                    0,
                    &Sendme::V1 {
                        tag: SendmeDigest::tor1(tag),
                    },
                    false,
                )];
                r.t.handle_cells(RELAY_CHAN, &mut c, t, &mut rng);
            }
        }
    }
    assert_eq!(flights[0], 124, "cwnd_init");
    // Slow start: every flight larger than the one before (124, 217, 372...).
    assert!(flights.windows(2).all(|w| w[1] > w[0]), "{flights:?}");
    assert_eq!(r.t.circuit_count(RELAY_CHAN), 1);
    assert!(sent_total > 1000);
}

/// Uploads on a CC circuit are acknowledged every sendme_inc (31) DATA
/// cells, not every 100; a stream SENDME closes the circuit (PROTOCOL).
#[test]
fn cc_upload_sendmes_and_stream_sendme_refused() {
    let mut rng = StdRng::seed_from_u64(41);
    let (mut r, mut cl) = cc_exit(&mut rng);
    let _key = open_stream(&mut r, &mut cl, &mut rng, 1);
    let mut tags = Vec::new();
    for i in 0..62u32 {
        let mut body = [0u8; 509];
        crate::proto::relay_msg::encode_relay_data(
            RelayCmd::DATA,
            crate::proto::relay_msg::StreamId::new(1),
            &[i as u8; 100],
            &mut rng,
            &mut body,
        )
        .unwrap();
        tags.push(cl.circ.encrypt_forward(0, &mut body).unwrap().0);
        let mut c = [crate::proto::circuit::tests::cell(
            cl.id,
            ChanCmd::RELAY,
            body,
        )];
        r.t.handle_cells(RELAY_CHAN, &mut c, now(), &mut rng);
    }
    let acts: Vec<Action> = drain(&mut r.t)
        .into_iter()
        .filter(|a| matches!(a, Action::SendCell { .. }))
        .collect();
    let sendmes: Vec<_> = replies(&mut r, &mut cl, &acts)
        .into_iter()
        .filter(|x| x.0 == RelayCmd::SENDME)
        .map(|x| Sendme::decode(&x.2).unwrap())
        .collect();
    assert_eq!(
        sendmes,
        vec![
            Sendme::V1 {
                tag: SendmeDigest::tor1(tags[30])
            },
            Sendme::V1 {
                tag: SendmeDigest::tor1(tags[61])
            }
        ],
        "no stream SENDMEs on a CC circuit either"
    );
    send(&mut r, &mut cl, &mut rng, RelayCmd::SENDME, 1, &[]);
    assert_eq!(
        destroy_codes(&drain(&mut r.t)),
        vec![1],
        "stream SENDME on a CC circuit: PROTOCOL"
    );
}

/// XOFF from the client stops reading the destination until its XON, even
/// when SENDMEs would resume the stream; a malformed XON, and XOFF on a
/// circuit without congestion control, are ignored (never fatal).
#[test]
fn cc_xoff_pauses_until_xon() {
    let mut rng = StdRng::seed_from_u64(42);
    let (mut r, mut cl) = cc_exit(&mut rng);
    let key = open_stream(&mut r, &mut cl, &mut rng, 1);
    send(&mut r, &mut cl, &mut rng, RelayCmd::XOFF, 1, &[0]);
    let acts = drain(&mut r.t);
    assert!(
        matches!(acts[..], [Action::PauseRead { key: k }] if k == key),
        "{acts:?}"
    );
    // Paused: nothing is taken.
    assert_eq!(r.t.handle_stream_data(key, &[1; 1000], now(), &mut rng), 0);
    assert!(drain(&mut r.t).is_empty());
    // A second XOFF and a malformed XON change nothing.
    send(&mut r, &mut cl, &mut rng, RelayCmd::XOFF, 1, &[0]);
    send(&mut r, &mut cl, &mut rng, RelayCmd::XON, 1, &[0, 0]);
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::XON,
        1,
        &[1, 0, 0, 0, 0],
    );
    assert!(drain(&mut r.t).is_empty());
    assert_eq!(r.t.handle_stream_data(key, &[1; 1000], now(), &mut rng), 0);
    // XON (rate advisory 0: unlimited) resumes reading.
    send(
        &mut r,
        &mut cl,
        &mut rng,
        RelayCmd::XON,
        1,
        &[0, 0, 0, 0, 0],
    );
    let acts = drain(&mut r.t);
    assert!(
        matches!(acts[..], [Action::ResumeRead { key: k }] if k == key),
        "{acts:?}"
    );
    assert_eq!(
        r.t.handle_stream_data(key, &[1; 1000], now(), &mut rng),
        1000
    );
    assert_eq!(r.t.circuit_count(RELAY_CHAN), 1);

    // On a fixed-window circuit XOFF is ignored.
    let (mut r, mut cl) = exit(&mut rng);
    let key = open_stream(&mut r, &mut cl, &mut rng, 1);
    send(&mut r, &mut cl, &mut rng, RelayCmd::XOFF, 1, &[0]);
    assert!(drain(&mut r.t).is_empty());
    assert_eq!(
        r.t.handle_stream_data(key, &[1; 1000], now(), &mut rng),
        1000
    );
}

/// The exit tells the client XOFF when a destination does not take the
/// upload (past 244,000 bytes held, and still past it more than 5 ms
/// later), and XON once the socket drained; never on a circuit without
/// congestion control.
#[test]
fn cc_exit_sends_xoff_then_xon() {
    let mut rng = StdRng::seed_from_u64(43);
    let (mut r, mut cl) = cc_exit(&mut rng);
    let key = open_stream(&mut r, &mut cl, &mut rng, 1);
    let t0 = now() + std::time::Duration::from_secs(1);
    let ms = std::time::Duration::from_millis(1);
    r.t.handle_stream_buffered(key, 498, 300_000, t0, &mut rng);
    r.t.handle_stream_buffered(key, 498, 300_000, t0 + 3 * ms, &mut rng);
    assert!(drain(&mut r.t).is_empty(), "within the grace period");
    r.t.handle_stream_buffered(key, 498, 300_000, t0 + 6 * ms, &mut rng);
    let acts = drain(&mut r.t);
    let rep = replies(&mut r, &mut cl, &acts);
    assert_eq!(rep.len(), 1, "{rep:?}");
    assert_eq!(
        (rep[0].0, rep[0].1, &rep[0].2[..]),
        (RelayCmd::XOFF, 1, &[0u8][..])
    );
    // Only one XOFF until an XON.
    r.t.handle_stream_buffered(key, 498, 300_000, t0 + 20 * ms, &mut rng);
    assert!(drain(&mut r.t).is_empty());
    r.t.handle_stream_drained(key, t0 + 30 * ms, &mut rng);
    let acts = drain(&mut r.t);
    let rep = replies(&mut r, &mut cl, &acts);
    assert_eq!(rep.len(), 1, "{rep:?}");
    assert_eq!((rep[0].0, rep[0].1), (RelayCmd::XON, 1));
    assert_eq!(rep[0].2.len(), 5);
    assert_eq!(rep[0].2[0], 0, "version 0");

    let (mut r, mut cl) = exit(&mut rng);
    let key = open_stream(&mut r, &mut cl, &mut rng, 1);
    for i in 0..10 {
        r.t.handle_stream_buffered(key, 498, 300_000, t0 + i * 10 * ms, &mut rng);
    }
    r.t.handle_stream_drained(key, t0 + 200 * ms, &mut rng);
    let acts = drain(&mut r.t);
    assert!(replies(&mut r, &mut cl, &acts).is_empty());
}

/// The drain rate an XON carries, with C tor's arithmetic (the worked
/// example of congestion_control_flow.c's compute_drain_rate: the previous
/// period's bytes over this period's time, EWMA with N = 2), and the
/// advisory XON once the rate moves more than 25 %.
#[test]
fn drain_rate_and_advisory_xon() {
    use crate::proto::stream::FlowOut;
    use crate::proto::stream::exit::{flow_decide_xoff, flow_drained};
    // 250,000 bytes drained over 500 ms: 500 KB/s; no XON yet (none sent).
    let mut f = FlowOut {
        drain_start_usec: 1_000_000,
        queued_bytes: 250_000,
        ..Default::default()
    };
    assert_eq!(flow_drained(&mut f, 1_500_000, true), None);
    assert_eq!(f.ewma_drain_rate, 500);
    // 260,000 over 400 ms: C's rate is the previous 250,000 over 400 ms
    // (625), and the EWMA (2·625 + 500) / 3 = 583.
    f.drain_start_usec = 1_600_000;
    f.queued_bytes = 260_000;
    assert_eq!(flow_drained(&mut f, 2_000_000, true), None);
    assert_eq!(f.ewma_drain_rate, 583);
    // XOFF resets the rate; the XON answering it carries what was measured
    // since: nothing yet, 0 (no limit).
    assert!(
        !flow_decide_xoff(&mut f, 244_000, 2_100_000),
        "not past the limit"
    );
    assert!(
        !flow_decide_xoff(&mut f, 244_001, 2_100_000),
        "grace starts"
    );
    assert!(
        !flow_decide_xoff(&mut f, 244_001, 2_105_000),
        "5 ms is not past it"
    );
    assert!(flow_decide_xoff(&mut f, 244_001, 2_105_001));
    assert_eq!(f.ewma_drain_rate, 0);
    f.queued_bytes = 1000;
    assert_eq!(flow_drained(&mut f, 2_200_000, true), Some(0));
    assert!(!f.xoff_sent);
    // Once an XON carried a rate, a change past 25 % sends an advisory one.
    f.ewma_drain_rate = 400;
    f.ewma_rate_last_sent = 400;
    f.drain_start_usec = 3_000_000;
    f.queued_bytes = 300_000;
    f.prev_drained_bytes = 300_000;
    // 300,000 bytes over 400 ms: 750; EWMA (2·750 + 400) / 3 = 633 > 500.
    assert_eq!(flow_drained(&mut f, 3_400_000, true), Some(633));
    assert_eq!(f.ewma_rate_last_sent, 633);
}
