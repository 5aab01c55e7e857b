//! Conflux legs through the circuit table: two congestion-controlled
//! circuits from relay channels linked into one set, as a C tor client
//! links them (docs/conflux-exit.md).

use std::time::Duration;

use rand::{SeedableRng, rngs::StdRng};

use super::tests::{
    Client, PREV_RELAY, RELAY_CHAN, Relay, client_cell, client_msg, client_recv, create_ntor_v3,
    destroy_codes, drain, now, relay, sent_cells,
};
use super::{Action, ChanId, CircCounter, PeerKind, StreamKey};
use crate::exit::dns::Answer;
use crate::proto::cell::ChanCmd;
use crate::proto::relay_msg::{
    ConfluxLink, ConfluxLinked, ConfluxSwitch, ConfluxUx, RelayBody, RelayCmd,
};

const RELAY_CHAN_2: ChanId = ChanId(6);
const NONCE: [u8; 32] = [0x42; 32];

/// An exit offering congestion control, with a second relay channel.
fn cc_relay(rng: &mut StdRng, tweak: impl FnOnce(&mut super::CircuitConfig)) -> Relay {
    let mut r = relay(rng, 1);
    let mut cfg = (*r.cfg).clone();
    cfg.cc = Some(crate::proto::cc::CcParams::default());
    tweak(&mut cfg);
    r.cfg = std::sync::Arc::new(cfg);
    r.t.set_config(r.cfg.clone());
    r.t.channel_opened(
        RELAY_CHAN_2,
        PeerKind::Relay {
            rsa_id: PREV_RELAY,
            ed_id: [0x77; 32],
        },
    );
    r
}

/// A circuit that negotiated congestion control.
fn cc_leg(r: &mut Relay, rng: &mut StdRng, chan: ChanId, id: u32) -> Client {
    let (cl, reply) = create_ntor_v3(r, rng, chan, id, &[1, 1, 0]);
    assert_eq!(reply, vec![1, 2, 1, 31]);
    cl
}

fn link_msg(sent: u64, ux: ConfluxUx) -> ConfluxLink {
    ConfluxLink {
        nonce: NONCE,
        last_seqno_sent: sent,
        last_seqno_recv: 0,
        desired_ux: ux,
    }
}

fn send_msg<'m, M: RelayBody<'m>>(
    r: &mut Relay,
    cl: &mut Client,
    rng: &mut StdRng,
    sid: u16,
    msg: &M,
    at: std::time::Instant,
) {
    let mut c = [client_msg(cl, rng, 0, sid, msg, false)];
    r.t.handle_cells(cl.chan, &mut c, at, rng);
}

/// The client's SWITCH on `cl`: its next cell there comes `seqnum` later.
fn switch(r: &mut Relay, cl: &mut Client, rng: &mut StdRng, seqnum: u32) {
    send_msg(r, cl, rng, 0, &ConfluxSwitch { seqnum }, now());
}

fn send(r: &mut Relay, cl: &mut Client, rng: &mut StdRng, cmd: RelayCmd, sid: u16, data: &[u8]) {
    let mut c = [client_cell(cl, rng, 0, cmd, sid, data, false)];
    r.t.handle_cells(cl.chan, &mut c, now(), rng);
}

/// The relay messages `acts` carry to `cl`'s circuit, decrypted in order.
fn to_leg(cl: &mut Client, acts: &[Action]) -> Vec<(RelayCmd, u16, Vec<u8>)> {
    let me = (cl.chan, cl.id);
    sent_cells(acts)
        .into_iter()
        .filter(|c| (c.0, c.1) == me && c.2 == ChanCmd::RELAY)
        .map(|(_, _, _, body)| {
            let (_, hdr, data, _) = client_recv(cl, body);
            (hdr.cmd, hdr.stream_id.get(), data)
        })
        .collect()
}

/// LINK on `cl`, and the LINKED that comes back.
fn link(r: &mut Relay, cl: &mut Client, rng: &mut StdRng, msg: &ConfluxLink) -> ConfluxLinked {
    send_msg(r, cl, rng, 0, msg, now());
    let acts = drain(&mut r.t);
    let rep = to_leg(cl, &acts);
    assert_eq!(rep.len(), 1, "{acts:?}");
    assert_eq!((rep[0].0, rep[0].1), (RelayCmd::CONFLUX_LINKED, 0));
    ConfluxLinked::decode(&rep[0].2).unwrap()
}

/// Two legs linked, LINKED_ACK'd with RTTs of 10 ms (`a`) and 20 ms (`b`).
fn linked_pair(r: &mut Relay, rng: &mut StdRng) -> (Client, Client) {
    let mut a = cc_leg(r, rng, RELAY_CHAN, 0x8000_0001);
    let mut b = cc_leg(r, rng, RELAY_CHAN_2, 0x8000_0002);
    let ux = ConfluxUx::HighThroughput;
    let la = link(r, &mut a, rng, &link_msg(0, ux));
    let lb = link(r, &mut b, rng, &link_msg(0, ux));
    for l in [&la, &lb] {
        assert_eq!(l.0.nonce, NONCE);
        assert_eq!((l.0.last_seqno_sent, l.0.last_seqno_recv), (0, 0));
        assert_eq!(l.0.desired_ux, ConfluxUx::MinLatency, "the exit's fixed UX");
    }
    let ack = |r: &mut Relay, cl: &mut Client, rng: &mut StdRng, ms| {
        let mut c = [client_cell(
            cl,
            rng,
            0,
            RelayCmd::CONFLUX_LINKED_ACK,
            0,
            &[],
            false,
        )];
        r.t.handle_cells(cl.chan, &mut c, now() + Duration::from_millis(ms), rng);
    };
    ack(r, &mut a, rng, 10);
    ack(r, &mut b, rng, 20);
    assert!(drain(&mut r.t).is_empty());
    (a, b)
}

/// BEGIN on `cl` for stream `sid`, resolved and connected; the CONNECTED
/// is returned to the caller among the actions.
fn open_stream(
    r: &mut Relay,
    cl: &mut Client,
    rng: &mut StdRng,
    sid: u16,
) -> (StreamKey, Vec<Action>) {
    send(r, cl, rng, RelayCmd::BEGIN, sid, b"example.com:443\0");
    let acts = drain(&mut r.t);
    let [Action::Resolve { key, .. }] = &acts[..] else {
        panic!("{acts:?}")
    };
    let key = *key;
    let ans = Answer {
        addrs: vec!["192.0.2.10".parse().unwrap()],
        ttl: 3600,
        hostname: None,
    };
    r.t.handle_resolved(key, Ok(ans), now(), rng);
    let acts = drain(&mut r.t);
    let [Action::Connect { addr, .. }] = &acts[..] else {
        panic!("{acts:?}")
    };
    r.t.handle_connected(key, Ok(*addr), now(), rng);
    (key, drain(&mut r.t))
}

/// A download over two linked legs: the lowest-RTT leg takes cells until
/// its congestion window is full, then a SWITCH announces the other leg,
/// which takes the next cells; the client puts them back in order.
#[test]
fn download_fills_the_fast_leg_then_switches() {
    let mut rng = StdRng::seed_from_u64(90);
    let mut r = cc_relay(&mut rng, |_| {});
    let (mut a, mut b) = linked_pair(&mut r, &mut rng);
    let (key, acts) = open_stream(&mut r, &mut a, &mut rng, 7);
    let rep = to_leg(&mut a, &acts);
    assert_eq!(
        (rep[0].0, rep[0].1),
        (RelayCmd::CONNECTED, 7),
        "on the 10 ms leg"
    );
    let data: Vec<u8> = (0..498 * 400).map(|i| (i * 7 % 251) as u8).collect();
    let taken = r.t.handle_stream_data(key, &data, now(), &mut rng);
    assert_eq!(taken, 498 * 248, "two congestion windows of 124 cells");
    let acts = drain(&mut r.t);
    let on_a = to_leg(&mut a, &acts);
    let on_b = to_leg(&mut b, &acts);
    assert_eq!(on_a.len(), 124);
    assert!(on_a.iter().all(|m| (m.0, m.1) == (RelayCmd::DATA, 7)));
    // Leg A sent CONNECTED (1) and 124 DATA: B's first cell is 126.
    assert_eq!(on_b[0].0, RelayCmd::CONFLUX_SWITCH);
    assert_eq!(ConfluxSwitch::decode(&on_b[0].2).unwrap().seqnum, 125);
    assert_eq!(on_b.len(), 125);
    let got: Vec<u8> = on_a
        .iter()
        .chain(&on_b[1..])
        .flat_map(|m| m.2.iter().copied())
        .collect();
    assert_eq!(got, data[..taken]);
}

/// Cells of one stream sent on both legs, the later one first: it waits
/// in the set's queue until the earlier arrives, then both go out in
/// order; each leg's DATA counts in its own window.
#[test]
fn upload_out_of_order_is_put_back_in_order() {
    let mut rng = StdRng::seed_from_u64(91);
    let mut r = cc_relay(&mut rng, |_| {});
    let (mut a, mut b) = linked_pair(&mut r, &mut rng);
    let (key, _) = open_stream(&mut r, &mut a, &mut rng, 3);
    // Seq 1 was BEGIN on A. B announces it continues after 2: its DATA
    // is seq 3, A's next is seq 2.
    switch(&mut r, &mut b, &mut rng, 2);
    send(&mut r, &mut b, &mut rng, RelayCmd::DATA, 3, b"second");
    assert!(drain(&mut r.t).is_empty(), "queued until seq 2 arrives");
    send(&mut r, &mut a, &mut rng, RelayCmd::DATA, 3, b"first,");
    let writes: Vec<Vec<u8>> = drain(&mut r.t)
        .into_iter()
        .filter_map(|a| match a {
            Action::StreamWrite { key: k, data } if k == key => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(writes.concat(), b"first,second");
}

/// A leg that is neither the current send leg nor ahead of the others
/// closes alone: its stream moves to the surviving leg and goes on. The
/// current send leg's close ends the set: the rest get DESTROY FINISHED.
#[test]
fn closing_legs_as_c_tor_does() {
    let mut rng = StdRng::seed_from_u64(92);
    let mut r = cc_relay(&mut rng, |_| {});
    let (mut a, mut b) = linked_pair(&mut r, &mut rng);
    // A stream homed on B (BEGIN seq 1 on B); CONNECTED leaves on A, the
    // faster leg. Then A catches up: SWITCH 1 and a DATA (seq 2).
    let (key, acts) = open_stream(&mut r, &mut b, &mut rng, 5);
    assert_eq!(to_leg(&mut a, &acts)[0].0, RelayCmd::CONNECTED);
    switch(&mut r, &mut a, &mut rng, 1);
    send(&mut r, &mut a, &mut rng, RelayCmd::DATA, 5, b"x");
    drain(&mut r.t);
    r.t.handle_cells(
        b.chan,
        &mut [super::tests::cell(b.id, ChanCmd::DESTROY, [0; 509])],
        now(),
        &mut rng,
    );
    assert!(
        destroy_codes(&drain(&mut r.t)).is_empty(),
        "the set goes on"
    );
    send(&mut r, &mut a, &mut rng, RelayCmd::DATA, 5, b"y");
    let acts = drain(&mut r.t);
    assert!(
        acts.iter().any(
            |x| matches!(x, Action::StreamWrite { key: k, data } if *k == key && data == b"y")
        ),
        "{acts:?}"
    );

    // A third leg joins; closing A, the current send leg, ends the set.
    let mut c = cc_leg(&mut r, &mut rng, RELAY_CHAN_2, 0x8000_0003);
    let lc = link(
        &mut r,
        &mut c,
        &mut rng,
        &link_msg(3, ConfluxUx::HighThroughput),
    );
    assert_eq!((lc.0.last_seqno_sent, lc.0.last_seqno_recv), (1, 3));
    r.t.handle_cells(
        a.chan,
        &mut [super::tests::cell(a.id, ChanCmd::DESTROY, [0; 509])],
        now(),
        &mut rng,
    );
    let acts = drain(&mut r.t);
    assert_eq!(destroy_codes(&acts), vec![9], "FINISHED to leg C");
    assert!(
        acts.iter()
            .any(|x| matches!(x, Action::CloseStream { key: k } if *k == key))
    );
    assert_eq!(r.t.circuit_total(), 0);
    // Three circuits with congestion control came and went, all still in
    // slow start with no RTT range: none is averaged at close (C's rule).
    let st = r.t.cc_stats();
    assert_eq!((st.circs_created, st.circs_closed), (3, 3));
    assert_eq!(st.close_ss_cwnd.n + st.close_cwnd.n, 0);
    assert_eq!(r.t.counters()[CircCounter::DestroyReceived as usize], 2);
}

/// Every refusal C tor's exit makes, with the DESTROY reason it sends.
#[test]
fn refusals_close_with_c_tors_reasons() {
    let mut rng = StdRng::seed_from_u64(93);
    let ht = ConfluxUx::HighThroughput;
    let mut r = cc_relay(&mut rng, |_| {});

    // No congestion control on the circuit: PROTOCOL.
    let (mut plain, _) = create_ntor_v3(&mut r, &mut rng, RELAY_CHAN, 0x8000_0010, &[0]);
    send_msg(&mut r, &mut plain, &mut rng, 0, &link_msg(0, ht), now());
    assert_eq!(destroy_codes(&drain(&mut r.t)), vec![1]);

    // SWITCH or LINKED_ACK on a circuit not linked; LINKED at an exit;
    // a LINK that does not parse; a LINK on a circuit with a stream; a
    // second LINK on a leg.
    type Case<'a> = Box<dyn Fn(&mut Relay, &mut Client, &mut StdRng) + 'a>;
    let cases: [(&str, Case); 6] = [
        (
            "switch",
            Box::new(|r, cl, rng| send(r, cl, rng, RelayCmd::CONFLUX_SWITCH, 0, &[0, 0, 0, 1])),
        ),
        (
            "ack",
            Box::new(|r, cl, rng| send(r, cl, rng, RelayCmd::CONFLUX_LINKED_ACK, 0, &[])),
        ),
        (
            "linked",
            Box::new(|r, cl, rng| send_msg(r, cl, rng, 0, &ConfluxLinked(link_msg(0, ht)), now())),
        ),
        (
            "bad version",
            Box::new(|r, cl, rng| send(r, cl, rng, RelayCmd::CONFLUX_LINK, 0, &[2; 50])),
        ),
        (
            "streams",
            Box::new(|r, cl, rng| {
                send(r, cl, rng, RelayCmd::BEGIN, 1, b"example.com:80\0");
                drain(&mut r.t);
                send_msg(r, cl, rng, 0, &link_msg(0, ht), now());
            }),
        ),
        (
            "twice",
            Box::new(|r, cl, rng| {
                link(
                    r,
                    cl,
                    rng,
                    &ConfluxLink {
                        nonce: [9; 32],
                        ..link_msg(0, ht)
                    },
                );
                send_msg(
                    r,
                    cl,
                    rng,
                    0,
                    &ConfluxLink {
                        nonce: [9; 32],
                        ..link_msg(0, ht)
                    },
                    now(),
                );
            }),
        ),
    ];
    for (i, (what, case)) in cases.iter().enumerate() {
        let mut cl = cc_leg(&mut r, &mut rng, RELAY_CHAN, 0x8000_0100 + i as u32);
        case(&mut r, &mut cl, &mut rng);
        assert_eq!(destroy_codes(&drain(&mut r.t)), vec![1], "{what}");
    }

    // Data loss: a LINK saying the client sent more than the set
    // delivered ends the set (PROTOCOL) and the new leg (INTERNAL).
    linked_pair(&mut r, &mut rng);
    let mut c = cc_leg(&mut r, &mut rng, RELAY_CHAN, 0x8000_0200);
    send_msg(&mut r, &mut c, &mut rng, 0, &link_msg(5, ht), now());
    let mut codes = destroy_codes(&drain(&mut r.t));
    codes.sort_unstable();
    assert_eq!(codes, vec![1, 1, 2]);

    // Conflux off (ConfluxEnabled 0 / cfx_enabled=0): PROTOCOL.
    let mut off = cc_relay(&mut rng, |c| c.conflux.enabled = false);
    let mut cl = cc_leg(&mut off, &mut rng, RELAY_CHAN, 0x8000_0001);
    send_msg(&mut off, &mut cl, &mut rng, 0, &link_msg(0, ht), now());
    assert_eq!(destroy_codes(&drain(&mut off.t)), vec![1]);
}

/// A cell whose sequence number was already delivered closes its leg
/// (INTERNAL); a queue past `cfx_max_oooq_bytes` closes the leg that
/// brings one more (RESOURCELIMIT), and with it the set.
#[test]
fn sequence_regression_and_queue_bound() {
    let mut rng = StdRng::seed_from_u64(94);
    let mut r = cc_relay(&mut rng, |c| c.conflux.max_ooo_bytes = 1000);
    let (mut a, mut b) = linked_pair(&mut r, &mut rng);
    send(
        &mut r,
        &mut a,
        &mut rng,
        RelayCmd::BEGIN,
        1,
        b"example.com:80\0",
    );
    drain(&mut r.t);
    // B's first cell is seq 1, which A already delivered.
    send(&mut r, &mut b, &mut rng, RelayCmd::DATA, 1, b"late");
    assert_eq!(destroy_codes(&drain(&mut r.t)), vec![2]);

    let mut r = cc_relay(&mut rng, |c| c.conflux.max_ooo_bytes = 1000);
    let (_a, mut b) = linked_pair(&mut r, &mut rng);
    // B jumps ahead; its cells queue until the cap, then B is closed.
    switch(&mut r, &mut b, &mut rng, 10);
    let mut codes = Vec::new();
    for _ in 0..4 {
        send(&mut r, &mut b, &mut rng, RelayCmd::DATA, 1, &[0; 400]);
        codes.extend(destroy_codes(&drain(&mut r.t)));
    }
    // B was ahead of A, so its close ends the set: A gets FINISHED.
    assert_eq!(
        codes,
        vec![5, 9],
        "RESOURCELIMIT once the queue holds 1000 bytes"
    );
}

/// Two workers of one relay, as the data plane runs them: each with its
/// own table and `Splices`, batches handed over by hand.
mod two_workers {
    use super::*;
    use crate::proto::circuit::{CircuitTable, IncomingCell, SetHomes};
    use crate::proto::splice::{Batch, HostedCell, Splices, WorkerId};

    /// Worker 1's channel from the second leg's middle relay.
    const CHAN_W1: ChanId = ChanId(41);

    struct Net {
        w: [Relay; 2],
        s: [Splices; 2],
        /// Cells written on real channels: (chan, circ id, cmd, body).
        wire: Vec<(ChanId, crate::proto::cell::CircId, ChanCmd, [u8; 509])>,
        /// Other actions, per worker.
        acts: [Vec<Action>; 2],
        next_chan: u32,
        /// The workers' clock.
        at: std::time::Instant,
    }

    impl Net {
        fn new(rng: &mut StdRng) -> (Net, [u8; 32]) {
            let w0 = cc_relay(rng, |_| {});
            let mut t1 = CircuitTable::new(w0.cfg.clone());
            let peer = PeerKind::Relay {
                rsa_id: PREV_RELAY,
                ed_id: [0x77; 32],
            };
            t1.channel_opened(CHAN_W1, peer);
            let w1 = Relay {
                t: t1,
                cfg: w0.cfg.clone(),
            };
            let hasher = std::hash::RandomState::new();
            let mut w = [w0, w1];
            for (me, r) in w.iter_mut().enumerate() {
                r.t.set_conflux_homes(SetHomes {
                    me,
                    workers: 2,
                    hasher: hasher.clone(),
                });
            }
            // A nonce whose set lives on worker 0.
            let homes = SetHomes {
                me: 0,
                workers: 2,
                hasher,
            };
            let nonce = (0u8..=255)
                .map(|i| [i; 32])
                .find(|n| homes.of(n) == 0)
                .expect("half the nonces");
            let mut s = [Splices::new(WorkerId(0), 2), Splices::new(WorkerId(1), 2)];
            s[1].local_channel_opened(CHAN_W1, &peer);
            let mut net = Net {
                w,
                s,
                wire: Vec::new(),
                acts: [Vec::new(), Vec::new()],
                next_chan: 900,
                at: now(),
            };
            net.pump(rng);
            (net, nonce)
        }

        /// Cells from a channel of worker `i`, as its worker hands them.
        fn read(&mut self, i: usize, chan: ChanId, mut cells: Vec<IncomingCell>, rng: &mut StdRng) {
            let [s0, s1] = &mut self.s;
            let s = if i == 0 { s0 } else { s1 };
            s.take_hosted(chan, &mut cells, &mut self.w[i].t);
            self.w[i].t.handle_cells(chan, &mut cells, self.at, rng);
            self.pump(rng);
        }

        /// Run actions and mail until nothing moves.
        fn pump(&mut self, rng: &mut StdRng) {
            for _ in 0..16 {
                let mut moved = false;
                for i in 0..2 {
                    let mut send: Vec<HostedCell> = Vec::new();
                    for leg in self.w[i].t.take_moved_legs() {
                        self.s[i].host_moved_leg(leg, &mut self.w[i].t, rng, &mut send);
                    }
                    for a in drain(&mut self.w[i].t) {
                        moved = true;
                        match a {
                            Action::SendCell {
                                chan,
                                circ_id,
                                cmd,
                                body,
                            } => {
                                if !self.s[i].send_forward(chan, circ_id, cmd, body) {
                                    self.wire.push((chan, circ_id, cmd, body));
                                }
                            }
                            other => self.acts[i].push(other),
                        }
                    }
                    let out: Vec<_> = self.s[i].take_outboxes().collect();
                    for (to, items) in out {
                        moved = true;
                        let from = WorkerId(i);
                        let next = &mut self.next_chan;
                        let mut alloc = || {
                            *next += 1;
                            ChanId(*next)
                        };
                        self.s[to.0].handle_batch(
                            Batch { from, items },
                            &mut self.w[to.0].t,
                            self.at,
                            rng,
                            &mut send,
                            &mut alloc,
                        );
                        self.s[to.0].taken(from, 0);
                    }
                    for h in send {
                        moved = true;
                        self.wire.push((h.chan, h.circ_id, h.cmd, h.body));
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("still moving after 16 rounds");
        }

        /// What reached `cl` on the wire, decrypted; taken off the wire.
        fn take_sent_to(&mut self, cl: &mut Client) -> Vec<(RelayCmd, u16, Vec<u8>)> {
            let me = (cl.chan, cl.id);
            let (mine, rest) = std::mem::take(&mut self.wire)
                .into_iter()
                .partition::<Vec<_>, _>(|c| (c.0, c.1) == me);
            self.wire = rest;
            let relay: Vec<_> = mine.into_iter().filter(|c| c.2 == ChanCmd::RELAY).collect();
            relay
                .into_iter()
                .map(|(_, _, _, body)| {
                    let (_, hdr, data, _) = client_recv(cl, body);
                    (hdr.cmd, hdr.stream_id.get(), data)
                })
                .collect()
        }
    }

    /// A leg whose LINK reaches worker 1 while its set lives on worker 0
    /// moves there with the cells that followed the LINK in its batch
    /// (one decrypted already, one not); from then on its cells cross
    /// between the workers, and a download uses both legs byte-exact. When
    /// worker 1's channel closes, worker 0 closes the leg.
    #[test]
    fn a_leg_on_another_worker_joins_its_set() {
        let mut rng = StdRng::seed_from_u64(95);
        let (mut net, nonce) = Net::new(&mut rng);
        let ht = ConfluxUx::HighThroughput;
        let msg = ConfluxLink {
            nonce,
            ..link_msg(0, ht)
        };
        let mut a = cc_leg(&mut net.w[0], &mut rng, RELAY_CHAN, 0x8000_0001);
        let mut b = cc_leg(&mut net.w[1], &mut rng, CHAN_W1, 0x8000_0002);
        link(&mut net.w[0], &mut a, &mut rng, &msg);

        // LINK, DROP (same run: decrypted on worker 1), PADDING (a control
        // cell ends the run), BEGIN (so not decrypted on worker 1).
        let cells = vec![
            client_msg(&mut b, &mut rng, 0, 0, &msg, false),
            client_cell(&mut b, &mut rng, 0, RelayCmd::DROP, 0, &[], false),
            super::super::tests::cell(b.id, ChanCmd::PADDING, [0; 509]),
            client_cell(
                &mut b,
                &mut rng,
                0,
                RelayCmd::BEGIN,
                9,
                b"example.com:443\0",
                false,
            ),
        ];
        net.read(1, CHAN_W1, cells, &mut rng);
        let rep = net.take_sent_to(&mut b);
        assert_eq!(rep.len(), 1, "{rep:?}");
        assert_eq!(rep[0].0, RelayCmd::CONFLUX_LINKED);
        let linked = ConfluxLinked::decode(&rep[0].2).unwrap();
        assert_eq!((linked.0.last_seqno_sent, linked.0.last_seqno_recv), (0, 0));
        assert_eq!(net.w[1].t.circuit_total(), 0, "the leg left worker 1");
        assert_eq!(net.w[0].t.circuit_total(), 2);
        let acts = std::mem::take(&mut net.acts[0]);
        let [Action::Resolve { key, .. }] = &acts[..] else {
            panic!("the BEGIN reached worker 0: {acts:?}")
        };
        let key = *key;

        // LINKED_ACKs: 10 ms on A, 20 ms on B (through worker 1).
        let mut ack = [client_cell(
            &mut a,
            &mut rng,
            0,
            RelayCmd::CONFLUX_LINKED_ACK,
            0,
            &[],
            false,
        )];
        net.w[0].t.handle_cells(
            RELAY_CHAN,
            &mut ack,
            now() + Duration::from_millis(10),
            &mut rng,
        );
        let ack = vec![client_cell(
            &mut b,
            &mut rng,
            0,
            RelayCmd::CONFLUX_LINKED_ACK,
            0,
            &[],
            false,
        )];
        net.at = now() + Duration::from_millis(20);
        net.read(1, CHAN_W1, ack, &mut rng);

        let ans = Answer {
            addrs: vec!["192.0.2.10".parse().unwrap()],
            ttl: 3600,
            hostname: None,
        };
        net.w[0].t.handle_resolved(key, Ok(ans), now(), &mut rng);
        net.pump(&mut rng);
        let addr = net.acts[0]
            .drain(..)
            .find_map(|x| match x {
                Action::Connect { addr, .. } => Some(addr),
                _ => None,
            })
            .expect("connect");
        net.w[0].t.handle_connected(key, Ok(addr), now(), &mut rng);
        let data: Vec<u8> = (0..498 * 300).map(|i| (i * 13 % 251) as u8).collect();
        let taken = net.w[0].t.handle_stream_data(key, &data, now(), &mut rng);
        net.pump(&mut rng);
        let on_a = net.take_sent_to(&mut a);
        let on_b = net.take_sent_to(&mut b);
        // A measured 10 ms, B 20 ms: A takes CONNECTED and 124 DATA, then
        // B after its SWITCH.
        assert_eq!(on_a[0].0, RelayCmd::CONNECTED);
        assert_eq!(on_b[0].0, RelayCmd::CONFLUX_SWITCH);
        assert_eq!(ConfluxSwitch::decode(&on_b[0].2).unwrap().seqnum, 125);
        assert_eq!(taken, 498 * 248);
        let got: Vec<u8> = on_a[1..]
            .iter()
            .chain(&on_b[1..])
            .flat_map(|m| m.2.iter().copied())
            .collect();
        assert_eq!(got, data[..taken]);

        // Worker 1's channel closes: worker 0 learns it and drops the leg.
        net.w[1].t.channel_closed(CHAN_W1);
        net.s[1].local_channel_closed(CHAN_W1);
        net.pump(&mut rng);
        assert_eq!(
            net.w[0].t.circuit_total(),
            0,
            "B had cells in flight: the set ends"
        );
        let codes: Vec<u8> = net
            .wire
            .iter()
            .filter(|c| c.2 == ChanCmd::DESTROY)
            .map(|c| c.3[0])
            .collect();
        assert_eq!(codes, vec![9], "FINISHED to leg A");
    }
}

/// What the OOM handler sees of a set's queue, and ending the set it
/// picks: every leg RESOURCELIMIT, the queue freed.
#[test]
fn oom_handler_ends_a_set_with_queued_cells() {
    let mut rng = StdRng::seed_from_u64(96);
    let mut r = cc_relay(&mut rng, |_| {});
    let (_a, mut b) = linked_pair(&mut r, &mut rng);
    switch(&mut r, &mut b, &mut rng, 10);
    send(&mut r, &mut b, &mut rng, RelayCmd::DATA, 1, &[7; 300]);
    assert!(r.t.conflux_queued_bytes() >= 300);
    let q = r.t.conflux_queues();
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].0, q[0].1), (Some(now()), r.t.conflux_queued_bytes()));
    drain(&mut r.t);
    r.t.close_conflux_set(q[0].2);
    assert_eq!(destroy_codes(&drain(&mut r.t)), vec![5, 5]);
    assert_eq!((r.t.conflux_queued_bytes(), r.t.circuit_total()), (0, 0));
}
