//! The scenarios of C tor's test_dos.c, on the owner's counts and a
//! worker's verdicts.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

const NOW: u64 = 1_700_000_000;

fn addr() -> IpAddr {
    "203.0.113.9".parse().unwrap()
}

fn params(o: DosOptions) -> DosParams {
    DosParams::resolve(&o, &|_, d, _, _| d)
}

#[test]
fn everything_is_off_by_default_and_the_torrc_or_consensus_turns_it_on() {
    let p = DosParams::default();
    assert!(!p.cc_enabled && !p.conn_enabled && !p.stream_enabled);
    assert_eq!(
        (
            p.cc_circuit_rate,
            p.cc_circuit_burst,
            p.cc_min_concurrent_conn
        ),
        (3, 90, 3)
    );
    assert_eq!(p.conn_max_concurrent_count, 100);
    assert_eq!((p.stream_rate, p.stream_burst), (100, 300));
    // The consensus turns cc on and sets a rate; the torrc's burst wins.
    let o = DosOptions {
        cc_burst: 10,
        ..DosOptions::default()
    };
    let consensus = |name: &str, d: i32, min: i32, max: i32| -> i32 {
        let v = match name {
            "DoSCircuitCreationEnabled" => 1,
            "DoSCircuitCreationRate" => 7,
            "DoSCircuitCreationBurst" => 500,
            "DoSConnectionConnectDefenseTimePeriod" => 1,
            _ => d,
        };
        v.clamp(min, max)
    };
    let p = DosParams::resolve(&o, &consensus);
    assert!(p.cc_enabled);
    assert_eq!((p.cc_circuit_rate, p.cc_circuit_burst), (7, 10));
    // Clamped to C's minimum.
    assert_eq!(p.conn_connect_defense_time_period, 10);
    // An explicit 0 in the torrc keeps it off whatever the consensus says.
    let off = DosOptions {
        cc_enabled: Some(false),
        ..DosOptions::default()
    };
    assert!(!DosParams::resolve(&off, &consensus).cc_enabled);
}

#[test]
fn token_bucket_refills_in_whole_seconds_up_to_the_burst() {
    let mut b = TokenBucketCtr::new(20, 40, 100);
    for _ in 0..40 {
        assert!(b.take());
    }
    assert!(!b.take());
    b.refill(100);
    assert_eq!(b.get(), 0);
    b.refill(101);
    assert_eq!(b.get(), 20);
    b.refill(1000);
    assert_eq!(b.get(), 40);
    // A clock jump of more than a quarter of its range refills nothing.
    b.take();
    b.refill(1000u32.wrapping_sub(5));
    assert_eq!(b.get(), 39);
}

#[test]
fn concurrent_connections_over_the_limit_are_refused() {
    // test_dos_conn: max 100 means the 101st is accepted, the 102nd not.
    let p = params(DosOptions {
        conn_enabled: Some(true),
        conn_connect_burst: 1000,
        ..DosOptions::default()
    });
    let mut rng = StdRng::seed_from_u64(1);
    let mut owner = AddrTable::default();
    let mut view = Verdicts::default();
    for _ in 0..101 {
        assert!(!view.refuse_connection(&p, addr(), NOW));
        if let Some(v) = owner.conn_opened(&p, addr(), NOW, 0, &mut rng) {
            view.apply(v);
        }
    }
    assert!(view.refuse_connection(&p, addr(), NOW));
    assert_eq!(view.counters.conn_addr_rejected, 1);
    // Another address is unaffected.
    assert!(!view.refuse_connection(&p, "203.0.113.10".parse().unwrap(), NOW));
    // One closes: accepted again.
    view.apply(
        owner
            .conn_closed(&p, addr(), NOW, 0)
            .expect("a new verdict"),
    );
    assert!(!view.refuse_connection(&p, addr(), NOW));
}

#[test]
fn connect_rate_marks_the_address_for_a_day_and_a_random_part() {
    let p = params(DosOptions {
        conn_enabled: Some(true),
        ..DosOptions::default()
    });
    let mut rng = StdRng::seed_from_u64(2);
    let mut owner = AddrTable::default();
    let mut view = Verdicts::default();
    // Burst 40 in one second: the 40th empties the bucket and marks.
    for i in 0..40 {
        assert!(!view.refuse_connection(&p, addr(), NOW), "connection {i}");
        if let Some(v) = owner.conn_opened(&p, addr(), NOW, 5, &mut rng) {
            view.apply(v);
        }
    }
    assert!(view.refuse_connection(&p, addr(), NOW));
    assert_eq!(view.counters.conn_addr_connect_rejected, 1);
    let until = view.map[&addr()].conn_marked_until;
    assert!(
        (NOW + 86400 + 1..NOW + 86400 + 43200).contains(&until),
        "{until}"
    );
    // Closing them all does not lift the mark.
    for _ in 0..40 {
        if let Some(v) = owner.conn_closed(&p, addr(), NOW + 10, 15) {
            view.apply(v);
        }
    }
    assert!(view.refuse_connection(&p, addr(), NOW + 10));
    // It ends on its own.
    assert!(!view.refuse_connection(&p, addr(), until + 1));
    // Defense type 1 counts but lets the connection in.
    let p1 = params(DosOptions {
        conn_enabled: Some(true),
        conn_defense_type: 1,
        ..DosOptions::default()
    });
    assert!(!view.refuse_connection(&p1, addr(), NOW + 10));
}

#[test]
fn circuit_creation_marks_after_the_burst_with_enough_connections() {
    // test_dos_cc: burst 90, three connections: 89 CREATEs pass, the
    // 90th empties the bucket and marks the address.
    let p = params(DosOptions {
        cc_enabled: Some(true),
        ..DosOptions::default()
    });
    let mut rng = StdRng::seed_from_u64(3);
    let mut owner = AddrTable::default();
    let mut view = Verdicts::default();
    for _ in 0..3 {
        assert_eq!(owner.conn_opened(&p, addr(), NOW, 0, &mut rng), None);
    }
    for i in 0..89 {
        assert_eq!(
            owner.create_cell(&p, addr(), NOW, &mut rng),
            None,
            "CREATE {i}"
        );
    }
    let v = owner
        .create_cell(&p, addr(), NOW, &mut rng)
        .expect("the 90th marks");
    assert!((NOW + 3601..NOW + 3600 + 1800).contains(&v.cc_marked_until));
    view.apply(v);
    assert!(view.refuse_create(&p, addr(), NOW + 1));
    assert_eq!(
        (
            view.counters.cc_rejected_cells,
            owner.counters.cc_marked_addrs
        ),
        (1, 1)
    );
    assert!(!view.refuse_create(&p, addr(), v.cc_marked_until + 1));
    // Connections are not refused by a circuit-creation mark.
    assert!(!view.refuse_connection(&p, addr(), NOW + 1));
}

#[test]
fn too_few_connections_are_never_marked_and_the_bucket_refills() {
    let p = params(DosOptions {
        cc_enabled: Some(true),
        ..DosOptions::default()
    });
    let mut rng = StdRng::seed_from_u64(4);
    let mut owner = AddrTable::default();
    for _ in 0..2 {
        owner.conn_opened(&p, addr(), NOW, 0, &mut rng);
    }
    for _ in 0..1000 {
        assert_eq!(owner.create_cell(&p, addr(), NOW, &mut rng), None);
    }
    // A third connection: a second later the bucket has 3 tokens, so two
    // CREATEs pass and the third empties it and marks.
    owner.conn_opened(&p, addr(), NOW, 0, &mut rng);
    for _ in 0..2 {
        assert_eq!(owner.create_cell(&p, addr(), NOW + 1, &mut rng), None);
    }
    assert!(owner.create_cell(&p, addr(), NOW + 1, &mut rng).is_some());
}

#[test]
fn nothing_is_tracked_while_disabled_and_idle_addresses_are_forgotten() {
    let p = DosParams::default();
    let mut rng = StdRng::seed_from_u64(5);
    let mut owner = AddrTable::default();
    assert_eq!(owner.conn_opened(&p, addr(), NOW, 0, &mut rng), None);
    assert!(owner.stats.is_empty());
    let p = params(DosOptions {
        conn_enabled: Some(true),
        ..DosOptions::default()
    });
    owner.conn_opened(&p, addr(), NOW, 0, &mut rng);
    owner.conn_closed(&p, addr(), NOW, 0);
    // The connect bucket still remembers the connection for a while.
    assert_eq!(owner.stats.len(), 1);
    owner.conn_opened(&p, addr(), NOW + 10, 10, &mut rng);
    owner.conn_closed(&p, addr(), NOW + 10, 15);
    assert!(
        owner.stats.is_empty(),
        "full bucket, no connection: forgotten"
    );
}

#[test]
fn a_short_defense_period_does_not_panic() {
    // C asserts in crypto_rand_int_range when period/2 <= 1.
    let mut rng = StdRng::seed_from_u64(6);
    for period in 0..4 {
        assert_eq!(mark_until(NOW, period, &mut rng), NOW + u64::from(period));
    }
}

#[test]
fn heartbeat_line_is_c_tors() {
    let off = heartbeat_line(&DosParams::default(), &DosStats::default(), false);
    assert_eq!(
        off,
        "Heartbeat: DoS mitigation since startup: 0 circuits killed with too many cells, \
         [DoSCircuitCreationEnabled disabled], [DoSConnectionEnabled disabled], \
         [DoSRefuseSingleHopClientRendezvous disabled], [DoSStreamCreationEnabled disabled], \
         0 INTRODUCE2 rejected."
    );
    let p = params(DosOptions {
        cc_enabled: Some(true),
        conn_enabled: Some(true),
        stream_enabled: Some(true),
        ..DosOptions::default()
    });
    let s = DosStats {
        cc_rejected_cells: 5,
        cc_marked_addrs: 2,
        cc_marked_addrs_max_queue: 0,
        conn_addr_rejected: 3,
        conn_addr_connect_rejected: 4,
        stream_rejected: 6,
        circ_max_cell_killed: 1,
    };
    assert_eq!(DosStats::from_array(s.to_array()), s);
    assert_eq!(
        heartbeat_line(&p, &s, false),
        "Heartbeat: DoS mitigation since startup: 1 circuits killed with too many cells, \
         5 circuits rejected, 2 marked addresses, 0 marked addresses for max queue, \
         3 same address concurrent connections rejected, 4 connections rejected, \
         [DoSRefuseSingleHopClientRendezvous disabled], 6 stream rejected, \
         0 INTRODUCE2 rejected."
    );
}

#[test]
fn idle_addresses_and_lapsed_marks_are_purged() {
    let p = params(DosOptions {
        cc_enabled: Some(true),
        cc_min_connections: 1,
        ..DosOptions::default()
    });
    let mut rng = StdRng::seed_from_u64(7);
    let mut owner = AddrTable::default();
    let mut view = Verdicts::default();
    owner.conn_opened(&p, addr(), NOW, 0, &mut rng);
    let mut mark = None;
    for _ in 0..90 {
        mark = mark.or(owner.create_cell(&p, addr(), NOW, &mut rng));
    }
    let v = mark.expect("marked");
    view.apply(v);
    owner.conn_closed(&p, addr(), NOW, 0);
    // Still marked: kept.
    assert!(owner.purge(&p, NOW + 10, 10).is_empty());
    view.purge(NOW + 10);
    assert_eq!((owner.len(), view.len()), (1, 1));
    // The mark over and nothing open: forgotten, and the others told.
    let after = v.cc_marked_until + 1;
    let lapsed = owner.purge(&p, after, 10_000);
    assert_eq!(lapsed.len(), 1);
    assert!(lapsed[0].blocks_nothing());
    view.purge(after);
    assert!(owner.is_empty() && view.is_empty());
}

#[test]
fn every_worker_names_the_same_owner() {
    let a = addr();
    let b: IpAddr = "2001:db8::9".parse().unwrap();
    assert_eq!(owner_of(a, 4), owner_of(a, 4));
    assert!(owner_of(b, 4) < 4);
    assert_eq!(owner_of(a, 1), 0);
    assert_eq!(owner_of(a, 0), 0);
}

#[test]
fn circuits_closed_for_full_queues_mark_the_client_address() {
    // dos.c:dos_note_circ_max_outq: the third closed circuit (consensus
    // default dos_num_circ_max_outq 3) marks the address like a
    // circuit-creation attacker, counted once in the heartbeat's "marked
    // addresses for max queue".
    let p = params(DosOptions {
        cc_enabled: Some(true),
        ..DosOptions::default()
    });
    assert_eq!(p.num_circ_max_outq, 3);
    let mut rng = StdRng::seed_from_u64(3);
    let mut owner = AddrTable::default();
    let mut view = Verdicts::default();
    // Only addresses with a connection are tracked.
    assert_eq!(owner.circ_max_outq(&p, addr(), NOW, &mut rng), None);
    owner.conn_opened(&p, addr(), NOW, 5, &mut rng);
    assert_eq!(owner.circ_max_outq(&p, addr(), NOW, &mut rng), None);
    assert_eq!(owner.circ_max_outq(&p, addr(), NOW, &mut rng), None);
    let v = owner
        .circ_max_outq(&p, addr(), NOW, &mut rng)
        .expect("the third marks");
    view.apply(v);
    assert!(view.refuse_create(&p, addr(), NOW + 1));
    assert_eq!(owner.counters.cc_marked_addrs_max_queue, 1);
    // While marked, more of them change nothing.
    assert_eq!(owner.circ_max_outq(&p, addr(), NOW + 2, &mut rng), None);
    let line = heartbeat_line(&p, &owner.counters, false);
    assert!(line.contains("1 marked addresses for max queue"), "{line}");
    // The consensus can turn it off.
    let off = DosParams::resolve(
        &DosOptions {
            cc_enabled: Some(true),
            ..DosOptions::default()
        },
        &|n, d, _, _| if n == "dos_num_circ_max_outq" { 0 } else { d },
    );
    let mut other = AddrTable::default();
    other.conn_opened(&off, addr(), NOW, 5, &mut rng);
    for _ in 0..5 {
        assert_eq!(other.circ_max_outq(&off, addr(), NOW, &mut rng), None);
    }
}
