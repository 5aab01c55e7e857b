//! Two workers of one relay, each with its own circuit table and
//! `Splices`, and a next relay B: the client's circuit arrives on worker 0,
//! the only channel to B belongs to worker 1. Batches are handed over by
//! hand, in the order the workers would send them.

use std::net::{Ipv4Addr, SocketAddrV4};

use rand::{SeedableRng, rngs::StdRng};

use super::*;
use crate::crypto::ntor;
use crate::proto::cell::{ChanBody, Create2, HandshakeType};
use crate::proto::circuit::Action;
use crate::proto::circuit::tests::{
    CLIENT_CHAN, Client, RELAY_CHAN, Relay, body_of, cell, client_cell, client_msg, client_recv,
    create_ntor, drain, now, relay, sent_cells,
};
use crate::proto::relay_msg::{Extend2, Extended2, LinkSpec, RelayBody, RelayCmd};

/// Worker 1's channel to B.
const HOLDER_CHAN: ChanId = ChanId(40);
/// Worker 0's virtual channel for it.
const VIRTUAL: ChanId = ChanId(900);

struct Net {
    /// Worker 0: owns the client's channel and circuit.
    owner: Relay,
    s0: Splices,
    /// Worker 1 of the same relay: owns the channel to B.
    holder: CircuitTable,
    s1: Splices,
    b: Relay,
    cl: Client,
    /// What worker 1 wrote on its channel to B.
    wire: Vec<HostedCell>,
}

fn b_identity(b: &Relay) -> PeerKind {
    PeerKind::Relay {
        rsa_id: b.cfg.rsa_id,
        ed_id: b.cfg.ed_id,
    }
}

/// The one cell in `acts`, which must be a DESTROY: (channel, id, reason).
fn only_destroy(acts: &[Action]) -> (ChanId, CircId, u8) {
    let cells = sent_cells(acts);
    let [(chan, id, cmd, body)] = &cells[..] else {
        panic!("one cell expected: {acts:?}")
    };
    assert_eq!(*cmd, ChanCmd::DESTROY);
    (*chan, *id, body[0])
}

fn deliver(
    from: &mut Splices,
    to: &mut Splices,
    table: &mut CircuitTable,
    rng: &mut StdRng,
) -> Vec<HostedCell> {
    let mut send = Vec::new();
    let batches: Vec<_> = from.take_outboxes().collect();
    for (w, items) in batches {
        assert_eq!(w, to.me, "only two workers here");
        let batch = Batch {
            from: from.me,
            items,
        };
        let mut next = 1000;
        let mut alloc = || {
            next += 1;
            ChanId(next)
        };
        to.handle_batch(batch, table, now(), rng, &mut send, &mut alloc);
    }
    send
}

/// Owner: take its table's actions; cells on the virtual channel go to
/// worker 1, the rest (toward the client) are returned.
fn owner_actions(net: &mut Net) -> Vec<Action> {
    let mut rest = Vec::new();
    for a in drain(&mut net.owner.t) {
        match a {
            Action::SendCell {
                chan,
                circ_id,
                cmd,
                body,
            } if net.s0.is_virtual(chan) => {
                assert!(net.s0.send_forward(chan, circ_id, cmd, body));
            }
            other => rest.push(other),
        }
    }
    rest
}

/// Move cells until nothing moves: owner → holder → B → holder → owner.
/// Returns what the owner sent toward the client.
fn pump(net: &mut Net, rng: &mut StdRng) -> Vec<Action> {
    let mut to_client = Vec::new();
    for _ in 0..8 {
        to_client.extend(owner_actions(net));
        let sent = deliver(&mut net.s0, &mut net.s1, &mut net.holder, rng);
        let moved = !sent.is_empty();
        for h in sent {
            assert_eq!(h.chan, HOLDER_CHAN);
            net.wire.push(HostedCell { ..h });
            let last = net.wire.last().expect("just pushed");
            net.b.t.handle_cells(
                RELAY_CHAN,
                &mut [cell(last.circ_id, last.cmd, last.body)],
                now(),
                rng,
            );
        }
        let mut back: Vec<IncomingCell> = sent_cells(&drain(&mut net.b.t))
            .into_iter()
            .map(|(_, id, cmd, body)| cell(id, cmd, body))
            .collect();
        let moved = moved || !back.is_empty();
        net.s1.take_hosted(HOLDER_CHAN, &mut back, &mut net.holder);
        assert!(
            back.is_empty(),
            "every cell from B here is for a hosted circuit"
        );
        deliver(&mut net.s1, &mut net.s0, &mut net.owner.t, rng);
        if !moved {
            to_client.extend(owner_actions(net));
            break;
        }
    }
    to_client
}

/// The client's circuit on worker 0, extended to B through worker 1's
/// channel.
fn spliced(rng: &mut StdRng) -> Net {
    let mut owner = relay(rng, 1);
    let mut holder = CircuitTable::new(owner.cfg.clone());
    let b = relay(rng, 2);
    let mut s0 = Splices::new(WorkerId(0), 2);
    let mut s1 = Splices::new(WorkerId(1), 2);
    holder.channel_opened_outbound(HOLDER_CHAN, b_identity(&b));
    s1.local_channel_opened(HOLDER_CHAN, &b_identity(&b));
    deliver(&mut s1, &mut s0, &mut owner.t, rng);

    let cl = create_ntor(&mut owner, rng, CLIENT_CHAN, 0x8000_0001);
    let mut net = Net {
        owner,
        s0,
        holder,
        s1,
        b,
        cl,
        wire: Vec::new(),
    };
    let bb = net.b.cfg.onion_keys.current.public_bytes();
    let (st, hdata) = ntor::client_create(rng, &net.b.cfg.rsa_id, &bb);
    let specs = vec![
        LinkSpec::Ipv4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 9001)),
        LinkSpec::LegacyId(net.b.cfg.rsa_id),
    ];
    let ext = Extend2::new(specs, HandshakeType::NTOR, hdata.to_vec());
    let mut c = [client_msg(&mut net.cl, rng, 0, 0, &ext, true)];
    net.owner.t.handle_cells(CLIENT_CHAN, &mut c, now(), rng);
    let acts = drain(&mut net.owner.t);
    let [Action::OpenChannel { key, target }] = &acts[..] else {
        panic!("{acts:?}")
    };
    // What the worker does on OpenChannel when it has no channel itself.
    let (v, w) = net
        .s0
        .virtual_chan_to(
            &target.rsa_id,
            target.ed25519_id.as_ref(),
            &mut net.owner.t,
            || VIRTUAL,
        )
        .expect("worker 1 announced its channel to B");
    assert_eq!((v, w), (VIRTUAL, WorkerId(1)));
    net.owner.t.handle_extend_channel(*key, Ok(v), rng);
    let out = pump(&mut net, rng);
    let cells = sent_cells(&out);
    assert_eq!(cells.len(), 1, "{out:?}");
    let (hop, hdr, data, _) = client_recv(&mut net.cl, cells[0].3);
    assert_eq!((hop, hdr.cmd), (0, RelayCmd::EXTENDED2));
    let keys = ntor::client_finish(st, Extended2::decode(&data).unwrap().hdata()).unwrap();
    net.cl.circ.push_hop(&keys.tor1);
    // B saw one CREATE2 with an ID of worker 1's choosing: high bit, as
    // worker 1 opened the channel.
    let [create] = &net.wire[..] else {
        panic!("{} cells on the wire", net.wire.len())
    };
    assert_eq!(create.cmd, ChanCmd::CREATE2);
    assert!(create.circ_id.has_high_bit());
    assert_eq!(Create2::decode(&create.body).unwrap().hdata(), &hdata[..]);
    net
}

#[test]
fn circuit_through_another_workers_channel() {
    let mut rng = StdRng::seed_from_u64(21);
    let mut net = spliced(&mut rng);
    let real_id = net.wire[0].circ_id;
    assert_eq!(net.s1.hosted_count(), 1);
    // The holder counts the circuit on its channel (idle timeout) and never
    // hands its ID out.
    assert_eq!(net.holder.circuit_count(HOLDER_CHAN), 1);
    assert!(net.holder.reserved.contains(&(HOLDER_CHAN, real_id)));

    // RESOLVE at B and back, twice (stream state lives at B).
    for sid in [3u16, 4] {
        let mut c = [client_cell(
            &mut net.cl,
            &mut rng,
            1,
            RelayCmd::RESOLVE,
            sid,
            b"192.0.2.9\0",
            false,
        )];
        net.owner
            .t
            .handle_cells(CLIENT_CHAN, &mut c, now(), &mut rng);
        let out = pump(&mut net, &mut rng);
        let cells = sent_cells(&out);
        assert_eq!(cells.len(), 1, "{out:?}");
        let (hop, hdr, data, _) = client_recv(&mut net.cl, cells[0].3);
        assert_eq!(
            (hop, hdr.cmd, hdr.stream_id.get()),
            (1, RelayCmd::RESOLVED, sid)
        );
        assert_eq!(data, [4, 4, 192, 0, 2, 9, 0, 0, 0x0e, 0x10]);
    }
    assert!(net.wire.iter().all(|h| h.circ_id == real_id));

    // The client tears the circuit down: DESTROYED reaches B under the
    // real ID and the splice is gone on both workers.
    let mut d = [cell(net.cl.id, ChanCmd::DESTROY, body_of(&[9]))];
    net.owner
        .t
        .handle_cells(CLIENT_CHAN, &mut d, now(), &mut rng);
    pump(&mut net, &mut rng);
    let last = net.wire.last().unwrap();
    assert_eq!(
        (last.circ_id, last.cmd, last.body[0]),
        (real_id, ChanCmd::DESTROY, 11)
    );
    assert_eq!(net.s1.hosted_count(), 0);
    assert_eq!(net.holder.circuit_count(HOLDER_CHAN), 0);
    assert_eq!(net.owner.t.circuit_count(VIRTUAL), 0);
}

#[test]
fn destroy_from_the_next_hop_reaches_the_client() {
    let mut rng = StdRng::seed_from_u64(22);
    let mut net = spliced(&mut rng);
    let real_id = net.wire[0].circ_id;
    let mut back = vec![cell(real_id, ChanCmd::DESTROY, body_of(&[6]))];
    net.s1.take_hosted(HOLDER_CHAN, &mut back, &mut net.holder);
    assert!(back.is_empty());
    assert_eq!(net.s1.hosted_count(), 0);
    deliver(&mut net.s1, &mut net.s0, &mut net.owner.t, &mut rng);
    assert_eq!(
        only_destroy(&drain(&mut net.owner.t)),
        (CLIENT_CHAN, net.cl.id, 11)
    );
}

#[test]
fn holder_channel_closing_closes_spliced_circuits() {
    let mut rng = StdRng::seed_from_u64(23);
    let mut net = spliced(&mut rng);
    net.s1.local_channel_closed(HOLDER_CHAN);
    net.holder.channel_closed(HOLDER_CHAN);
    assert_eq!(net.s1.hosted_count(), 0);
    deliver(&mut net.s1, &mut net.s0, &mut net.owner.t, &mut rng);
    assert_eq!(
        only_destroy(&drain(&mut net.owner.t)),
        (CLIENT_CHAN, net.cl.id, 8),
        "CHANNEL_CLOSED toward the client"
    );
    assert!(!net.s0.is_virtual(VIRTUAL));
    let b_rsa = net.b.cfg.rsa_id;
    assert!(
        net.s0
            .virtual_chan_to(&b_rsa, None, &mut net.owner.t, || ChanId(901))
            .is_none(),
        "the directory forgot the channel"
    );
}

#[test]
fn create_racing_a_close_fails_the_circuit() {
    let mut rng = StdRng::seed_from_u64(24);
    let mut owner = relay(&mut rng, 1);
    let mut holder = CircuitTable::new(owner.cfg.clone());
    let b = relay(&mut rng, 2);
    let mut s0 = Splices::new(WorkerId(0), 2);
    let mut s1 = Splices::new(WorkerId(1), 2);
    holder.channel_opened_outbound(HOLDER_CHAN, b_identity(&b));
    s1.local_channel_opened(HOLDER_CHAN, &b_identity(&b));
    deliver(&mut s1, &mut s0, &mut owner.t, &mut rng);
    // Worker 1's channel closes, but worker 0 extends before it hears.
    holder.channel_closed(HOLDER_CHAN);
    let down: Vec<_> = s1.take_outboxes().map(|(_, i)| i.len()).collect();
    assert!(down.is_empty(), "nothing announced yet: {down:?}");

    let mut cl = create_ntor(&mut owner, &mut rng, CLIENT_CHAN, 0x8000_0001);
    let bb = b.cfg.onion_keys.current.public_bytes();
    let (_, hdata) = ntor::client_create(&mut rng, &b.cfg.rsa_id, &bb);
    let specs = vec![
        LinkSpec::Ipv4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 9001)),
        LinkSpec::LegacyId(b.cfg.rsa_id),
    ];
    let ext = Extend2::new(specs, HandshakeType::NTOR, hdata.to_vec());
    let mut c = [client_msg(&mut cl, &mut rng, 0, 0, &ext, true)];
    owner.t.handle_cells(CLIENT_CHAN, &mut c, now(), &mut rng);
    let [Action::OpenChannel { key, target }] = &drain(&mut owner.t)[..] else {
        panic!()
    };
    let (v, _) = s0
        .virtual_chan_to(&target.rsa_id, None, &mut owner.t, || VIRTUAL)
        .unwrap();
    owner.t.handle_extend_channel(*key, Ok(v), &mut rng);
    for a in drain(&mut owner.t) {
        if let Action::SendCell {
            chan,
            circ_id,
            cmd,
            body,
        } = a
        {
            assert!(s0.send_forward(chan, circ_id, cmd, body));
        }
    }
    let sent = deliver(&mut s0, &mut s1, &mut holder, &mut rng);
    assert!(sent.is_empty(), "nothing may go on a closed channel");
    deliver(&mut s1, &mut s0, &mut owner.t, &mut rng);
    assert_eq!(only_destroy(&drain(&mut owner.t)), (CLIENT_CHAN, cl.id, 8));
}

#[test]
fn holders_own_circuits_are_left_alone() {
    let mut rng = StdRng::seed_from_u64(25);
    let mut net = spliced(&mut rng);
    // A cell for some other circuit on the holder's channel stays with the
    // holder's table.
    let other = CircId::new(0x8000_1234);
    let mut cells = vec![
        cell(other, ChanCmd::RELAY, [1; CELL_BODY_LEN]),
        cell(net.wire[0].circ_id, ChanCmd::RELAY, [2; CELL_BODY_LEN]),
    ];
    net.s1.take_hosted(HOLDER_CHAN, &mut cells, &mut net.holder);
    assert_eq!(cells.len(), 1);
    assert_eq!(cells[0].circ_id, other);
    // A channel hosting nothing is not even looked at.
    let mut cells = vec![cell(other, ChanCmd::RELAY, [1; CELL_BODY_LEN])];
    net.s1.take_hosted(ChanId(41), &mut cells, &mut net.holder);
    assert_eq!(cells.len(), 1);
}

#[test]
fn client_channels_are_not_announced() {
    let mut s = Splices::new(WorkerId(0), 3);
    s.local_channel_opened(ChanId(1), &PeerKind::Client);
    s.local_channel_closed(ChanId(1));
    assert_eq!(s.take_outboxes().count(), 0);
    s.local_channel_opened(
        ChanId(2),
        &PeerKind::Relay {
            rsa_id: [1; 20],
            ed_id: [2; 32],
        },
    );
    let to: Vec<_> = s.take_outboxes().map(|(w, i)| (w, i.len())).collect();
    assert_eq!(to, vec![(WorkerId(1), 1), (WorkerId(2), 1)]);
}

#[test]
fn owner_cutting_off_a_slow_holder() {
    let mut rng = StdRng::seed_from_u64(26);
    let mut net = spliced(&mut rng);
    let real_id = net.wire[0].circ_id;
    let mut send = Vec::new();
    assert_eq!(net.s0.cut_off(WorkerId(1), &mut net.owner.t, &mut send), 1);
    assert!(send.is_empty(), "the owner holds no channel of worker 1");
    let to_client = pump(&mut net, &mut rng);
    assert_eq!(
        only_destroy(&to_client),
        (CLIENT_CHAN, net.cl.id, 5),
        "RESOURCELIMIT toward the client"
    );
    let last = net.wire.last().unwrap();
    assert_eq!(
        (last.circ_id, last.cmd, last.body[0]),
        (real_id, ChanCmd::DESTROY, 5)
    );
    assert_eq!(net.s1.hosted_count(), 0);
    assert_eq!(net.holder.circuit_count(HOLDER_CHAN), 0);
    // Nothing left to cut.
    assert_eq!(net.s0.cut_off(WorkerId(1), &mut net.owner.t, &mut send), 0);
}

#[test]
fn holder_cutting_off_a_slow_owner() {
    let mut rng = StdRng::seed_from_u64(27);
    let mut net = spliced(&mut rng);
    let real_id = net.wire[0].circ_id;
    let mut send = Vec::new();
    assert_eq!(net.s1.cut_off(WorkerId(0), &mut net.holder, &mut send), 1);
    let [d] = &send[..] else { panic!("{send:?}") };
    assert_eq!(
        (d.chan, d.circ_id, d.cmd, d.body[0]),
        (HOLDER_CHAN, real_id, ChanCmd::DESTROY, 5)
    );
    assert_eq!(net.s1.hosted_count(), 0);
    assert_eq!(net.holder.circuit_count(HOLDER_CHAN), 0);
    deliver(&mut net.s1, &mut net.s0, &mut net.owner.t, &mut rng);
    let acts = drain(&mut net.owner.t);
    assert_eq!(only_destroy(&acts), (CLIENT_CHAN, net.cl.id, 5));
    // The owner sent nothing more toward worker 1 for it.
    assert_eq!(net.s0.take_outboxes().count(), 0);
    assert_eq!(net.owner.t.circuit_count(VIRTUAL), 0);
}

#[test]
fn a_second_announcement_of_a_channel_keeps_its_circuits() {
    let mut rng = StdRng::seed_from_u64(28);
    let mut net = spliced(&mut rng);
    let b = b_identity(&net.b);
    net.s1.local_channel_opened(HOLDER_CHAN, &b);
    deliver(&mut net.s1, &mut net.s0, &mut net.owner.t, &mut rng);
    assert!(drain(&mut net.owner.t).is_empty());
    assert_eq!(net.owner.t.circuit_count(VIRTUAL), 1);
}

#[test]
fn a_circuit_flooding_another_worker_is_closed_alone() {
    let mut rng = StdRng::seed_from_u64(28);
    let mut net = spliced(&mut rng);
    // Everything so far was taken in.
    net.s0.taken(WorkerId(1), 0);
    net.s1.taken(WorkerId(0), 0);
    let vcirc = net
        .owner
        .t
        .ids
        .keys()
        .find(|(c, _)| *c == VIRTUAL)
        .map(|(_, id)| *id)
        .expect("the circuit goes on over the virtual channel");
    let f = Flow::Forward {
        chan: VIRTUAL,
        vcirc,
    };
    assert_eq!(net.s0.outstanding(WorkerId(1), f), 0);
    net.s0.set_flow_cap(10);
    // The client sends 10 cells for B: at the cap, not over it.
    let send = |net: &mut Net, rng: &mut StdRng, n: usize| {
        for _ in 0..n {
            let mut c = [client_cell(
                &mut net.cl,
                rng,
                1,
                RelayCmd::DROP,
                0,
                b"",
                false,
            )];
            net.owner.t.handle_cells(CLIENT_CHAN, &mut c, now(), rng);
        }
        owner_actions(net)
    };
    assert!(send(&mut net, &mut rng, 10).is_empty());
    // Sent as this turn's batch; worker 1 has not taken it in.
    assert_eq!(net.s0.take_outboxes().count(), 1);
    assert_eq!(net.s0.outstanding(WorkerId(1), f), 10);
    assert!(net.s0.take_over_cap().is_empty());
    net.s0.taken(WorkerId(1), 10);
    assert_eq!(net.s0.outstanding(WorkerId(1), f), 10);
    // One more: over the cap, while the first ten still wait.
    send(&mut net, &mut rng, 1);
    let _ = net.s0.take_outboxes().count();
    assert_eq!(net.s0.take_over_cap(), [(WorkerId(1), f)]);
    // What the worker does with it: that circuit alone, both ways.
    net.owner
        .t
        .close_circuit_at(VIRTUAL, vcirc, DestroyReason::RESOURCELIMIT);
    let to_client = owner_actions(&mut net);
    assert_eq!(only_destroy(&to_client), (CLIENT_CHAN, net.cl.id, 5));
    // Once worker 1 took the first batch in, only the last cell and the
    // DESTROY (in two more batches) count.
    let _ = net.s0.take_outboxes().count();
    net.s0.taken(WorkerId(1), 2);
    assert_eq!(net.s0.outstanding(WorkerId(1), f), 2);
    net.s0.taken(WorkerId(1), 0);
    assert_eq!(net.s0.outstanding(WorkerId(1), f), 0);
}
