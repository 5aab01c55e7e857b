//! The exit's conflux core against the rules of docs/conflux-exit.md.

use super::*;

fn now() -> std::time::Instant {
    crate::proto::circuit::tests::now()
}

const NONCE: [u8; 32] = [7; 32];
const BIG: usize = usize::MAX;

fn link(sent: u64, recv: u64, ux: ConfluxUx) -> ConfluxLink {
    ConfluxLink {
        nonce: NONCE,
        last_seqno_sent: sent,
        last_seqno_recv: recv,
        desired_ux: ux,
    }
}

/// Two legs, 1 and 2, linked with the C client's default UX; RTTs 100
/// and 125 µs (test_conflux_switch's).
fn two_legs() -> ConfluxSets {
    let mut s = ConfluxSets::default();
    let ux = ConfluxUx::HighThroughput;
    s.link(1, &link(0, 0, ux), MAX_LEGS_DEFAULT, 1_000).unwrap();
    s.link(2, &link(0, 0, ux), MAX_LEGS_DEFAULT, 1_000).unwrap();
    assert!(s.linked_ack(1, 1_100));
    assert!(s.linked_ack(2, 1_125));
    s
}

fn data(s: &mut ConfluxSets, leg: LegId, tag: u8) -> Arrival {
    s.arrived(leg, (RelayCmd::DATA, StreamId::new(1), &[tag]), BIG, now())
}

/// A new set answers 0/0 with MIN_LATENCY; a second leg joins by nonce at
/// once (no LINKED_ACK needed) and is told the set's state before it.
#[test]
fn link_makes_and_joins_sets() {
    let mut s = ConfluxSets::default();
    let reply = s
        .link(1, &link(0, 0, ConfluxUx::HighThroughput), 8, 0)
        .unwrap();
    assert_eq!(
        reply.0,
        ConfluxLink {
            nonce: NONCE,
            last_seqno_sent: 0,
            last_seqno_recv: 0,
            desired_ux: ConfluxUx::MinLatency
        }
    );
    assert!(s.is_linked(1));
    // Some traffic on leg 1, then leg 2 joins.
    assert_eq!(data(&mut s, 1, 0), Arrival::Deliver);
    assert_eq!(data(&mut s, 1, 1), Arrival::Deliver);
    s.linked_ack(1, 50);
    let sent = s.send_leg(1, true, |_| true).unwrap();
    assert_eq!(
        sent,
        SendLeg {
            leg: 1,
            switch: None
        }
    );
    s.note_sent(1, 1);
    let reply = s
        .link(2, &link(2, 1, ConfluxUx::HighThroughput), 8, 0)
        .unwrap();
    assert_eq!((reply.0.last_seqno_sent, reply.0.last_seqno_recv), (1, 2));
    assert_eq!(s.legs_of(2).collect::<Vec<_>>(), vec![1, 2]);
    // A second LINK on a linked leg.
    assert_eq!(
        s.link(2, &link(0, 0, ConfluxUx::HighThroughput), 8, 0),
        Err(LinkError::AlreadyLinked)
    );
}

/// The leg cap, and the one-sided data-loss check that ends the named set.
#[test]
fn link_refusals() {
    let mut s = ConfluxSets::default();
    let ux = ConfluxUx::NoOpinion;
    for leg in 1..=3 {
        s.link(leg, &link(0, 0, ux), 3, 0).unwrap();
    }
    assert_eq!(
        s.link(4, &link(0, 0, ux), 3, 0),
        Err(LinkError::TooManyLegs(3))
    );
    assert!(!s.is_linked(4));
    // The client claims to have sent a cell we never delivered.
    assert_eq!(
        s.link(5, &link(1, 0, ux), 8, 0),
        Err(LinkError::DataLoss {
            sent: 1,
            delivered: 0
        })
    );
    assert!(!s.is_linked(1) && !s.is_linked(2) && !s.is_linked(3));
    // last_seqno_recv is never checked.
    let mut s = ConfluxSets::default();
    assert!(s.link(1, &link(0, 99, ux), 8, 0).is_ok());
}

/// Cells are delivered in sequence order across legs; early ones wait in
/// the queue and come out when their turn comes; SWITCH moves a leg's
/// counter without being counted itself.
#[test]
fn reordering_across_legs() {
    let mut s = two_legs();
    // Client sends seq 1, 2 on leg 1, then SWITCH(2) and seq 3, 4 on leg 2.
    // Leg 2's cells arrive first.
    assert!(s.switch(2, 2));
    assert_eq!(data(&mut s, 2, 3), Arrival::Queued);
    assert_eq!(data(&mut s, 2, 4), Arrival::Queued);
    assert_eq!(s.pop_ready(2), None);
    assert!(s.ooo_bytes > 0);
    assert_eq!(data(&mut s, 1, 1), Arrival::Deliver);
    assert_eq!(s.pop_ready(1), None, "seq 2 is still missing");
    assert_eq!(data(&mut s, 1, 2), Arrival::Deliver);
    let out: Vec<(u64, LegId, Vec<u8>)> = std::iter::from_fn(|| s.pop_ready(1))
        .map(|q| (q.seq, q.leg, q.data))
        .collect();
    assert_eq!(out, vec![(3, 2, vec![3]), (4, 2, vec![4])]);
    assert_eq!(s.ooo_bytes, 0);
    // A short SWITCH body reads as 0 (the codec), which changes nothing.
    assert!(s.switch(1, 0));
    // Leg 1 sends what leg 2 already covered: a regression closes leg 1.
    assert_eq!(
        data(&mut s, 1, 5),
        Arrival::CloseLeg(DestroyReason::INTERNAL)
    );
    // Cells for a leg in no set.
    assert_eq!(
        data(&mut s, 9, 0),
        Arrival::CloseLeg(DestroyReason::INTERNAL)
    );
    assert!(!s.switch(9, 1));
    assert!(!s.linked_ack(9, 0));
}

/// The queue's bound is checked before the insert (one cell may go over),
/// and the leg it came on is closed with RESOURCELIMIT.
#[test]
fn queue_bound() {
    let mut s = two_legs();
    assert!(s.switch(2, 100));
    let big = [0u8; 498];
    let max = 2 * (498 + QUEUED_OVERHEAD);
    let arrive =
        |s: &mut ConfluxSets| s.arrived(2, (RelayCmd::DATA, StreamId::new(1), &big), max, now());
    assert_eq!(arrive(&mut s), Arrival::Queued);
    assert_eq!(arrive(&mut s), Arrival::Queued);
    assert_eq!(
        arrive(&mut s),
        Arrival::CloseLeg(DestroyReason::RESOURCELIMIT)
    );
}

/// LOWRTT (the C client's default HIGH_THROUGHPUT): the fastest leg with
/// room; a full window moves DATA to the other leg, announced by a SWITCH
/// whose value makes the sequence numbers line up (test_conflux_switch's
/// invariants); other cells stay on the current leg when no leg has room.
#[test]
fn lowrtt_switching_keeps_sequences_coherent() {
    let mut s = two_legs();
    for _ in 0..10 {
        assert_eq!(
            s.send_leg(1, true, |_| true),
            Ok(SendLeg {
                leg: 1,
                switch: None
            })
        );
        s.note_sent(1, 1);
    }
    // Leg 1 (100 µs) is full: leg 2 (125 µs) takes over, SWITCH(10).
    let sw = s.send_leg(1, true, |l| l == 2).unwrap();
    assert_eq!(
        sw,
        SendLeg {
            leg: 2,
            switch: Some(10)
        }
    );
    s.note_sent(2, 1);
    let sent = |s: &mut ConfluxSets, l: LegId| {
        s.set_of(l)
            .and_then(|set| set.legs.iter().find(|x| x.id == l).map(|x| x.last_seq_sent))
            .unwrap()
    };
    assert_eq!((sent(&mut s, 1), sent(&mut s, 2)), (10, 11));
    // Back to leg 1 once it has room: SWITCH(1).
    assert_eq!(
        s.send_leg(2, true, |_| true),
        Ok(SendLeg {
            leg: 1,
            switch: Some(1)
        })
    );
    s.note_sent(1, 1);
    assert_eq!(sent(&mut s, 1), 12);
    // Nothing has room: DATA waits, an END goes on the current leg.
    assert_eq!(s.send_leg(1, true, |_| false), Err(NoLeg::Blocked));
    assert_eq!(
        s.send_leg(1, false, |_| false),
        Ok(SendLeg {
            leg: 1,
            switch: None
        })
    );
}

/// MINRTT never falls back to a slower leg; legs without an RTT are not
/// chosen, but before any is measured the first leg carries non-DATA.
#[test]
fn minrtt_and_unmeasured_legs() {
    let mut s = ConfluxSets::default();
    let ux = ConfluxUx::MinLatency;
    s.link(1, &link(0, 0, ux), 8, 0).unwrap();
    s.link(2, &link(0, 0, ux), 8, 0).unwrap();
    // No LINKED_ACK yet: CONNECTED goes on leg 1, DATA waits.
    assert_eq!(
        s.send_leg(1, false, |_| true),
        Ok(SendLeg {
            leg: 1,
            switch: None
        })
    );
    assert_eq!(s.send_leg(1, true, |_| true), Err(NoLeg::Blocked));
    s.linked_ack(2, 40);
    s.linked_ack(1, 90);
    // Leg 2 is fastest: DATA switches there.
    assert_eq!(
        s.send_leg(1, true, |_| true),
        Ok(SendLeg {
            leg: 2,
            switch: Some(0)
        })
    );
    // The fastest has no room: MINRTT waits rather than use leg 1.
    assert_eq!(s.send_leg(1, true, |l| l == 1), Err(NoLeg::Blocked));
    // A stalled clock (RTT 0) makes a leg the slowest.
    s.linked_ack(2, 0);
    assert_eq!(s.send_leg(1, true, |_| true).unwrap().leg, 1);
    // Its congestion control measures it again (0 is no measurement).
    s.note_rtt(2, 0);
    assert_eq!(s.send_leg(1, true, |_| true).unwrap().leg, 1);
    s.note_rtt(2, 10);
    assert_eq!(s.send_leg(1, true, |_| true).unwrap().leg, 2);
}

/// Closing a leg: the set goes on when the leg was idle and behind, and
/// ends (FINISHED for the others) when it was the current send leg, had a
/// SENDME's worth in flight, or was strictly ahead.
#[test]
fn closing_legs() {
    // An idle, non-current leg: the set goes on.
    let mut s = two_legs();
    s.send_leg(1, true, |_| true).unwrap();
    s.note_sent(1, 1);
    assert_eq!(data(&mut s, 1, 1), Arrival::Deliver);
    assert!(s.switch(2, 1));
    assert_eq!(s.leg_closed(2, 30, 31), LegClosed::Continue { to: 1 });
    assert_eq!(s.leg_closed(1, 0, 31), LegClosed::Gone);
    assert_eq!(s.leg_closed(1, 0, 31), LegClosed::NotInSet);

    // The current send leg.
    let mut s = two_legs();
    s.send_leg(1, true, |_| true).unwrap();
    assert_eq!(
        s.leg_closed(1, 0, 31),
        LegClosed::Teardown { close: vec![2] }
    );
    assert!(!s.is_linked(2));

    // sendme_inc cells in flight.
    let mut s = two_legs();
    s.send_leg(1, true, |_| true).unwrap();
    assert_eq!(
        s.leg_closed(2, 31, 31),
        LegClosed::Teardown { close: vec![1] }
    );

    // Strictly ahead in what it received.
    let mut s = two_legs();
    s.send_leg(1, true, |_| true).unwrap();
    assert_eq!(data(&mut s, 2, 1), Arrival::Deliver);
    assert_eq!(
        s.leg_closed(2, 0, 31),
        LegClosed::Teardown { close: vec![1] }
    );
}
