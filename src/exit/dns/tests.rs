//! Resolver tests: a virtual clock, no sockets. Responses are crafted with
//! hickory-proto (hand-generated, not captured from a real server; the
//! dnsmasq integration test in tests/dns_dnsmasq.rs covers a real one).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::message::testutil::*;
use super::*;

const NS0: &str = "192.0.2.53:53";
const NS1: &str = "[2001:db8::53]:53";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Harness {
    r: Resolver<StdRng>,
    now: Instant,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut ResolverConfig)) -> Harness {
        let mut config = ResolverConfig::with_nameservers(vec![sa(NS0), sa(NS1)]);
        tweak(&mut config);
        Harness {
            r: Resolver::new(config, StdRng::seed_from_u64(7)),
            now: Instant::now(),
        }
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.r.handle_timeout(self.now);
    }

    fn resolve(
        &mut self,
        name: &str,
        kind: QueryKind,
        token: u64,
    ) -> Option<Result<Answer, ResolveError>> {
        self.r
            .resolve(self.now, Query::new(name, kind).unwrap(), token)
    }

    fn transmit(&mut self) -> Transmit {
        self.r.poll_transmit(self.now).expect("a query to send")
    }

    fn no_transmit(&mut self) {
        assert_eq!(self.r.poll_transmit(self.now), None);
    }

    /// Answer `tx` from its destination with records in the answer section.
    fn answer(&mut self, tx: &Transmit, rcode: ResponseCode, answers: Vec<Record>) {
        let mut m = response_to(&tx.payload, rcode);
        m.insert_answers(answers);
        self.deliver(tx.dst, &m);
    }

    fn deliver(&mut self, from: SocketAddr, m: &Message) {
        self.r.handle_datagram(self.now, from, &m.to_vec().unwrap());
    }

    fn events(&mut self) -> Vec<(u64, Result<Answer, ResolveError>)> {
        std::iter::from_fn(|| self.r.poll_event()).collect()
    }
}

fn ok(addrs: &[&str], ttl: u32) -> Result<Answer, ResolveError> {
    Ok(Answer {
        addrs: addrs.iter().map(|a| ip(a)).collect(),
        ttl,
        hostname: None,
    })
}

#[test]
fn answer_then_cache_hit() {
    let mut h = Harness::new();
    assert_eq!(h.resolve("www.example.com", QueryKind::A, 1), None);
    let tx = h.transmit();
    assert_eq!(tx.dst, sa(NS0));
    assert_eq!(question_of(&tx.payload).1, name("www.example.com."));
    h.no_transmit();
    h.answer(
        &tx,
        ResponseCode::NoError,
        vec![a("www.example.com.", 100, "192.0.2.1")],
    );
    assert_eq!(h.events(), vec![(1, ok(&["192.0.2.1"], 300))]);
    assert_eq!(h.r.poll_timeout(), None);
    assert_eq!(h.r.in_flight(), 0);

    // Case-insensitive and trailing-dot-insensitive cache hit, no query.
    h.advance(50);
    assert_eq!(
        h.resolve("WWW.example.com.", QueryKind::A, 2),
        Some(ok(&["192.0.2.1"], 300))
    );
    h.no_transmit();
    assert_eq!(h.r.stats().cache_hits, 1);
    // The metrics' C tor reasons: one success, one query.
    let s = h.r.stats();
    assert_eq!((s.lookups, s.results[0]), (1, 1));

    // Expired after the real TTL (100 s): asked again.
    h.advance(50);
    assert_eq!(h.resolve("www.example.com", QueryKind::A, 3), None);
    let _ = h.transmit();
}

#[test]
fn ttl_clipping_and_max_age() {
    let mut h = Harness::new();
    for (i, (ttl, clipped)) in [(0, 300), (299, 300), (300, 3600), (86400 * 7, 3600)]
        .into_iter()
        .enumerate()
    {
        let n = format!("h{i}.example");
        assert_eq!(h.resolve(&n, QueryKind::A, i as u64), None);
        let tx = h.transmit();
        h.answer(
            &tx,
            ResponseCode::NoError,
            vec![a(&format!("{n}."), ttl, "192.0.2.9")],
        );
        assert_eq!(h.events(), vec![(i as u64, ok(&["192.0.2.9"], clipped))]);
    }
    // TTL 0 is not cached.
    assert_eq!(h.resolve("h0.example", QueryKind::A, 10), None);
    let _ = h.transmit();
    // A week-long TTL is cached no longer than MAX_DNS_ENTRY_AGE; as it
    // nears expiry the reported TTL drops to the low clip.
    h.advance(u64::from(MAX_DNS_ENTRY_AGE) - 100);
    assert_eq!(
        h.resolve("h3.example", QueryKind::A, 11),
        Some(ok(&["192.0.2.9"], 300))
    );
    h.advance(100);
    assert_eq!(h.resolve("h3.example", QueryKind::A, 12), None);
}

#[test]
fn timeouts_retry_rotating_nameservers_then_fail() {
    let mut h = Harness::with(|c| c.attempts = 3);
    let t0 = h.now;
    assert_eq!(h.resolve("slow.example", QueryKind::A, 1), None);
    let tx1 = h.transmit();
    assert_eq!(tx1.dst, sa(NS0));
    assert_eq!(h.r.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    // Early wakeups do nothing.
    h.r.handle_timeout(t0 + Duration::from_millis(999));
    h.no_transmit();
    h.advance(1);
    let tx2 = h.transmit();
    assert_eq!(tx2.dst, sa(NS1));
    // Same question, same transaction id on every attempt.
    assert_eq!(question_of(&tx1.payload), question_of(&tx2.payload));
    h.advance(1);
    let tx3 = h.transmit();
    assert_eq!(tx3.dst, sa(NS0));
    assert!(h.events().is_empty());
    h.advance(1);
    h.no_transmit();
    let events = h.events();
    assert_eq!(
        events,
        vec![(
            1,
            Err(ResolveError::Timeout {
                name: "slow.example".into(),
                attempts: 3
            })
        )]
    );
    let err = events[0].1.clone().unwrap_err();
    assert!(err.is_transient());
    assert_eq!(err.resolved_type(), 0xF0);
    assert_eq!(err.end_reason(), 2);
    assert_eq!(h.r.poll_timeout(), None);
    assert_eq!(h.r.stats().timeouts, 3);
    let s = h.r.stats();
    assert_eq!(
        (s.lookups, s.queries_sent, s.results[8]),
        (1, 3, 1),
        "one tor_timeout for the lookup, after its 3 sends"
    );
    // Per nameserver: each attempt counts against the one it went to.
    let timeout = SERVER_ERROR_NAMES.iter().position(|n| *n == "tor_timeout");
    let per: Vec<(u64, u64)> =
        h.r.server_stats()
            .iter()
            .map(|s| (s.queries, timeout.map_or(0, |i| s.errors[i])))
            .collect();
    assert_eq!(per, vec![(2, 2), (1, 1)]);
    assert_eq!(h.r.nameservers(), &[sa(NS0), sa(NS1)]);
    // Transient failures are not cached.
    assert_eq!(h.resolve("slow.example", QueryKind::A, 2), None);
}

#[test]
fn late_answer_to_an_earlier_attempt_is_accepted() {
    let mut h = Harness::new();
    assert_eq!(h.resolve("late.example", QueryKind::A, 1), None);
    let tx1 = h.transmit();
    h.advance(1);
    let tx2 = h.transmit();
    assert_ne!(tx1.dst, tx2.dst);
    h.answer(
        &tx1,
        ResponseCode::NoError,
        vec![a("late.example.", 600, "192.0.2.7")],
    );
    assert_eq!(h.events(), vec![(1, ok(&["192.0.2.7"], 3600))]);
    assert_eq!(h.r.poll_timeout(), None);
}

#[test]
fn servfail_retries_at_once_then_is_transient() {
    let mut h = Harness::new();
    assert_eq!(h.resolve("broken.example", QueryKind::A, 1), None);
    let tx1 = h.transmit();
    h.answer(&tx1, ResponseCode::ServFail, vec![]);
    assert!(h.events().is_empty());
    let tx2 = h.transmit();
    assert_eq!(tx2.dst, sa(NS1));
    h.answer(&tx2, ResponseCode::ServFail, vec![]);
    let events = h.events();
    assert_eq!(
        events,
        vec![(
            1,
            Err(ResolveError::ServerFailure {
                name: "broken.example".into(),
                attempts: 2
            })
        )]
    );
    assert!(events[0].1.clone().unwrap_err().is_transient());
    assert_eq!(h.r.poll_timeout(), None);

    // REFUSED is permanent, as in C tor (evdns_err_is_transient).
    assert_eq!(h.resolve("refused.example", QueryKind::A, 2), None);
    let tx = h.transmit();
    h.answer(&tx, ResponseCode::Refused, vec![]);
    let tx = h.transmit();
    h.answer(&tx, ResponseCode::Refused, vec![]);
    let err = h.events().remove(0).1.unwrap_err();
    assert!(matches!(
        err,
        ResolveError::Rcode {
            rcode: ResponseCode::Refused,
            ..
        }
    ));
    assert_eq!(err.resolved_type(), 0xF1);
    // Per nameserver, by response code: one SERVFAIL and one REFUSED
    // each, and no timeout.
    let count = |s: &ServerStats, name: &str| {
        SERVER_ERROR_NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| s.errors[i])
    };
    for s in h.r.server_stats() {
        assert_eq!(s.queries, 2);
        assert_eq!(count(s, "serverfailed"), 1);
        assert_eq!(count(s, "refused"), 1);
        assert_eq!(count(s, "tor_timeout"), 0);
        assert_eq!(s.errors.iter().sum::<u64>(), 2);
    }
}

#[test]
fn oversized_answers_are_dropped() {
    let mut h = Harness::new();
    assert_eq!(h.resolve("big.example", QueryKind::A, 1), None);
    let tx = h.transmit();
    let mut m = response_to(&tx.payload, ResponseCode::NoError);
    for i in 0..1100u32 {
        m.add_answer(a(
            "big.example.",
            600,
            &std::net::Ipv4Addr::from(0xC633_6400 + i).to_string(),
        ));
    }
    let wire = m.to_vec().unwrap();
    assert!(wire.len() > super::resolver::MAX_DATAGRAM);
    h.deliver(tx.dst, &m);
    // As the io_uring backend would hand it over: cut at 16 KiB.
    h.r.handle_datagram(h.now, tx.dst, &wire[..super::resolver::MAX_DATAGRAM]);
    assert!(h.events().is_empty());
    assert_eq!(h.r.stats().responses_rejected, 2);
    assert_eq!(h.r.in_flight(), 1);
}

#[test]
fn spoofed_responses_are_ignored() {
    let mut h = Harness::new();
    assert_eq!(h.resolve("bank.example", QueryKind::A, 1), None);
    let tx = h.transmit();
    let good = {
        let mut m = response_to(&tx.payload, ResponseCode::NoError);
        m.add_answer(a("bank.example.", 600, "192.0.2.10"));
        m
    };
    let evil = |m: &Message| {
        let mut m = m.clone();
        m.answers = vec![a("bank.example.", 600, "203.0.113.66")];
        m
    };
    // Wrong transaction id.
    let mut wrong_id = evil(&good);
    wrong_id.metadata.id = good.metadata.id.wrapping_add(1);
    h.deliver(tx.dst, &wrong_id);
    // Right id, wrong source (another nameserver we did not ask, and a
    // random host).
    h.deliver(sa(NS1), &evil(&good));
    h.deliver(sa("192.0.2.53:5353"), &evil(&good));
    // Right id and source, wrong question (name, then type).
    let mut wrong_name = evil(&good);
    wrong_name.queries[0].set_name(name("other.example."));
    h.deliver(tx.dst, &wrong_name);
    let mut wrong_type = evil(&good);
    wrong_type.queries[0].set_query_type(RecordType::AAAA);
    h.deliver(tx.dst, &wrong_type);
    // Garbage.
    h.r.handle_datagram(h.now, tx.dst, &[0xff]);
    h.r.handle_datagram(h.now, tx.dst, &tx.payload[..2]);
    assert!(h.events().is_empty());
    assert_eq!(h.r.stats().responses_rejected, 7);
    assert_eq!(h.r.in_flight(), 1);

    // The real answer still counts.
    h.deliver(tx.dst, &good);
    assert_eq!(h.events(), vec![(1, ok(&["192.0.2.10"], 3600))]);
    // A replay after completion is dropped.
    h.deliver(tx.dst, &evil(&good));
    assert!(h.events().is_empty());
    assert_eq!(h.r.stats().responses_accepted, 1);
}

#[test]
fn cname_chain() {
    let mut h = Harness::new();
    assert_eq!(h.resolve("www.example.org", QueryKind::A, 1), None);
    let tx = h.transmit();
    h.answer(
        &tx,
        ResponseCode::NoError,
        vec![
            cname("www.example.org.", 3000, "example.cdn.example."),
            cname("example.cdn.example.", 120, "edge1.cdn.example."),
            a("edge1.cdn.example.", 3000, "192.0.2.20"),
            a("edge1.cdn.example.", 3000, "192.0.2.21"),
        ],
    );
    // The smallest TTL on the chain (120) governs: low clip.
    assert_eq!(
        h.events(),
        vec![(1, ok(&["192.0.2.20", "192.0.2.21"], 300))]
    );
}

#[test]
fn nxdomain_is_permanent_and_cached_briefly() {
    let mut h = Harness::new();
    assert_eq!(h.resolve("nope.example", QueryKind::A, 1), None);
    let tx = h.transmit();
    let mut m = response_to(&tx.payload, ResponseCode::NXDomain);
    m.add_authority(soa("example.", 3600, 900));
    h.deliver(tx.dst, &m);
    let nx = Err(ResolveError::NxDomain {
        name: "nope.example".into(),
    });
    assert_eq!(h.events(), vec![(1, nx.clone())]);
    assert_eq!(nx.clone().unwrap_err().resolved_type(), 0xF1);
    // Cached: answered at once, no query.
    h.advance(59);
    assert_eq!(h.resolve("nope.example", QueryKind::A, 2), Some(nx));
    h.no_transmit();
    // But only for NEGATIVE_TTL_MAX, whatever the SOA said.
    h.advance(1);
    assert_eq!(h.resolve("nope.example", QueryKind::A, 3), None);
    let _ = h.transmit();
}

#[test]
fn aaaa_and_no_data() {
    let mut h = Harness::new();
    assert_eq!(h.resolve("v6.example", QueryKind::Aaaa, 1), None);
    let tx = h.transmit();
    assert_eq!(question_of(&tx.payload).2, RecordType::AAAA);
    h.answer(
        &tx,
        ResponseCode::NoError,
        vec![aaaa("v6.example.", 900, "2001:db8::20")],
    );
    assert_eq!(h.events(), vec![(1, ok(&["2001:db8::20"], 3600))]);

    assert_eq!(h.resolve("v4only.example", QueryKind::Aaaa, 2), None);
    let tx = h.transmit();
    h.answer(&tx, ResponseCode::NoError, vec![]);
    let err = h.events().remove(0).1.unwrap_err();
    assert_eq!(
        err,
        ResolveError::NoData {
            name: "v4only.example".into(),
            rtype: RecordType::AAAA
        }
    );
    assert!(!err.is_transient());
}

#[test]
fn ipv4_then_ipv6_falls_back_on_no_data() {
    let mut h = Harness::new();
    assert_eq!(h.resolve("v6.example", QueryKind::Ipv4ThenIpv6, 1), None);
    // A plain AAAA question for the same name is merged with the fallback.
    let tx_a = h.transmit();
    assert_eq!(question_of(&tx_a.payload).2, RecordType::A);
    assert_eq!(h.resolve("v6.example", QueryKind::Aaaa, 2), None);
    let tx_aaaa = h.transmit();
    h.no_transmit();
    h.answer(&tx_a, ResponseCode::NoError, vec![]);
    // No new query: the AAAA question is already in flight.
    h.no_transmit();
    assert!(h.events().is_empty());
    h.answer(
        &tx_aaaa,
        ResponseCode::NoError,
        vec![aaaa("v6.example.", 900, "2001:db8::6")],
    );
    let mut events = h.events();
    events.sort_by_key(|e| e.0);
    assert_eq!(
        events,
        vec![
            (1, ok(&["2001:db8::6"], 3600)),
            (2, ok(&["2001:db8::6"], 3600))
        ]
    );
    // Both outcomes are cached now: the fallback is answered at once.
    assert_eq!(
        h.resolve("v6.example", QueryKind::Ipv4ThenIpv6, 3),
        Some(ok(&["2001:db8::6"], 3600))
    );
    // With an A record there is no fallback.
    assert_eq!(h.resolve("dual.example", QueryKind::Ipv6ThenIpv4, 4), None);
    let tx = h.transmit();
    assert_eq!(question_of(&tx.payload).2, RecordType::AAAA);
    h.answer(&tx, ResponseCode::NoError, vec![]);
    let tx = h.transmit();
    assert_eq!(question_of(&tx.payload).2, RecordType::A);
    h.answer(
        &tx,
        ResponseCode::NoError,
        vec![a("dual.example.", 900, "192.0.2.4")],
    );
    assert_eq!(h.events(), vec![(4, ok(&["192.0.2.4"], 3600))]);
}

#[test]
fn ptr_lookup() {
    let mut h = Harness::new();
    let query = Query::reverse(ip("192.0.2.33"));
    assert_eq!(query.name(), "33.2.0.192.in-addr.arpa");
    assert_eq!(h.r.resolve(h.now, query, 1), None);
    let tx = h.transmit();
    assert_eq!(question_of(&tx.payload).2, RecordType::PTR);
    h.answer(
        &tx,
        ResponseCode::NoError,
        vec![ptr("33.2.0.192.in-addr.arpa.", 86400, "mail.example.net.")],
    );
    assert_eq!(
        h.events(),
        vec![(
            1,
            Ok(Answer {
                addrs: vec![],
                ttl: 3600,
                hostname: Some("mail.example.net".into())
            })
        )]
    );
    // From a RESOLVE payload.
    let target = classify_address("33.2.0.192.IN-ADDR.ARPA", Purpose::Resolve).unwrap();
    let q = target.query(QueryKind::A).unwrap();
    assert_eq!(q.kind(), QueryKind::Ptr);
    assert!(h.r.resolve(h.now, q, 2).unwrap().is_ok());
}

#[test]
fn identical_questions_are_merged() {
    let mut h = Harness::new();
    for token in 1..=3 {
        assert_eq!(h.resolve("popular.example", QueryKind::A, token), None);
    }
    let tx = h.transmit();
    h.no_transmit();
    assert_eq!(h.r.in_flight(), 1);
    h.answer(
        &tx,
        ResponseCode::NoError,
        vec![a("popular.example.", 400, "192.0.2.30")],
    );
    let events = h.events();
    let tokens: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(tokens, vec![1, 2, 3]);
    assert!(events.iter().all(|e| e.1 == ok(&["192.0.2.30"], 3600)));
    assert_eq!(h.r.stats().queries_sent, 1);
}

#[test]
fn truncated_is_transient_without_retry() {
    let mut h = Harness::new();
    assert_eq!(h.resolve("big.example", QueryKind::A, 1), None);
    let tx = h.transmit();
    let mut m = response_to(&tx.payload, ResponseCode::NoError);
    m.metadata.truncation = true;
    h.deliver(tx.dst, &m);
    h.no_transmit();
    let err = h.events().remove(0).1.unwrap_err();
    assert_eq!(
        err,
        ResolveError::Truncated {
            name: "big.example".into()
        }
    );
    assert!(err.is_transient());
}

#[test]
fn in_flight_limit_queue_and_unique_ids() {
    let mut h = Harness::with(|c| {
        c.max_in_flight = 50;
        c.max_queued = 10;
    });
    let mut sent = Vec::new();
    for i in 0..50 {
        assert_eq!(h.resolve(&format!("n{i}.example"), QueryKind::A, i), None);
        sent.push(h.transmit());
    }
    let ids: std::collections::HashSet<u16> =
        sent.iter().map(|t| question_of(&t.payload).0).collect();
    assert_eq!(ids.len(), 50);
    // Every slot taken: the next ten wait, unsent.
    for i in 50..60 {
        assert_eq!(h.resolve(&format!("q{i}.example"), QueryKind::A, i), None);
    }
    h.no_transmit();
    assert_eq!((h.r.in_flight(), h.r.queued()), (50, 10));
    let refused = h.resolve("one-more.example", QueryKind::A, 99);
    assert!(matches!(
        refused,
        Some(Err(ResolveError::Overloaded { limit: 60, .. }))
    ));
    // Joining a question already in flight or queued is still fine.
    assert_eq!(h.resolve("n0.example", QueryKind::A, 100), None);
    assert_eq!(h.resolve("q50.example", QueryKind::A, 101), None);
    // A queued question whose only stream ended is never sent.
    h.r.cancel(51);
    assert_eq!(h.r.queued(), 9);
    // An answer frees a slot: the oldest waiting question goes out.
    let first = sent.remove(0);
    h.answer(
        &first,
        ResponseCode::NoError,
        vec![a("n0.example", 60, "192.0.2.1")],
    );
    let next = h.transmit();
    assert!(
        question_of(&next.payload)
            .1
            .to_ascii()
            .eq_ignore_ascii_case("q50.example."),
        "{:?}",
        question_of(&next.payload).1
    );
    h.no_transmit();
    let tokens: Vec<u64> = h.events().into_iter().map(|(t, _)| t).collect();
    assert_eq!(tokens, [0, 100]);
}

#[test]
fn a_cancelled_stream_gets_no_result_but_the_answer_is_cached() {
    let mut h = Harness::new();
    assert_eq!(h.resolve("gone.example", QueryKind::A, 1), None);
    assert_eq!(h.resolve("gone.example", QueryKind::A, 2), None);
    let tx = h.transmit();
    h.r.cancel(1);
    h.answer(
        &tx,
        ResponseCode::NoError,
        vec![a("gone.example", 60, "192.0.2.9")],
    );
    let tokens: Vec<u64> = h.events().into_iter().map(|(t, _)| t).collect();
    assert_eq!(tokens, [2]);
    // Cancelling every waiter of a question in flight lets it finish, for
    // the cache.
    assert_eq!(h.resolve("late.example", QueryKind::A, 3), None);
    let tx = h.transmit();
    h.r.cancel(3);
    assert_eq!(h.r.in_flight(), 1);
    h.answer(
        &tx,
        ResponseCode::NoError,
        vec![a("late.example", 60, "192.0.2.10")],
    );
    assert!(h.events().is_empty());
    assert!(matches!(
        h.resolve("late.example", QueryKind::A, 4),
        Some(Ok(_))
    ));
}

#[test]
fn names_go_out_in_random_case_and_must_come_back_so() {
    let mut h = Harness::new();
    let name = "www.some-long-name.example";
    assert_eq!(h.resolve(name, QueryKind::A, 1), None);
    let tx = h.transmit();
    let sent = question_of(&tx.payload).1.to_ascii();
    assert!(sent.eq_ignore_ascii_case(&format!("{name}.")), "{sent}");
    assert_ne!(sent, format!("{name}."), "no letter changed case");
    // A spoofer who guessed the id but not the case is ignored...
    let txid = question_of(&tx.payload).0;
    let lower = super::message::build_query(txid, name, RecordType::A).unwrap();
    let mut forged = response_to(&lower, ResponseCode::NoError);
    forged.insert_answers(vec![a(name, 60, "203.0.113.66")]);
    h.deliver(tx.dst, &forged);
    assert!(h.events().is_empty());
    // ...and the real answer, echoing the case, still counts.
    h.answer(&tx, ResponseCode::NoError, vec![a(name, 60, "192.0.2.1")]);
    let (_, res) = h.events().remove(0);
    assert_eq!(res.unwrap().addrs, [ip("192.0.2.1")]);
    // With ServerDNSRandomizeCase 0 the name goes out as asked.
    let mut plain = Harness::with(|c| c.randomize_case = false);
    assert_eq!(plain.resolve(name, QueryKind::A, 1), None);
    let tx = plain.transmit();
    assert_eq!(question_of(&tx.payload).1.to_ascii(), format!("{name}."));
}

#[test]
fn begin_flags() {
    use QueryKind::*;
    assert_eq!(QueryKind::for_begin(0, true), Some(A));
    assert_eq!(QueryKind::for_begin(0x1, true), Some(Ipv4ThenIpv6));
    assert_eq!(QueryKind::for_begin(0x1 | 0x4, true), Some(Ipv6ThenIpv4));
    assert_eq!(QueryKind::for_begin(0x1 | 0x2, true), Some(Aaaa));
    assert_eq!(QueryKind::for_begin(0x2, true), None);
    // IPv6Exit off: IPv6 is never used, "IPv4 not OK" leaves nothing.
    assert_eq!(QueryKind::for_begin(0x1 | 0x4, false), Some(A));
    assert_eq!(QueryKind::for_begin(0x1 | 0x2, false), None);
}

#[test]
fn query_constructor_checks_names() {
    assert!(Query::new("example.com", QueryKind::A).is_ok());
    assert!(Query::new("1.2.3.4", QueryKind::A).is_err());
    assert!(Query::new("bad name", QueryKind::A).is_err());
    assert!(Query::new("4.3.2.1.in-addr.arpa", QueryKind::A).is_err());
    assert!(Query::new("example.com", QueryKind::Ptr).is_err());
    assert_eq!(
        Query::new("4.3.2.1.in-addr.arpa", QueryKind::Ptr)
            .unwrap()
            .name(),
        "4.3.2.1.in-addr.arpa"
    );
}

#[test]
fn fuzzy_ttl_range() {
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..1000 {
        let low = clip_dns_fuzzy_ttl(10, &mut rng);
        assert!((60..=540).contains(&low), "{low}");
        let high = clip_dns_fuzzy_ttl(10_000, &mut rng);
        assert!((3360..=3840).contains(&high), "{high}");
    }
}

#[test]
fn final_error_reflects_the_last_attempt() {
    let mut h = Harness::new();
    assert_eq!(h.resolve("flaky.example", QueryKind::A, 1), None);
    let tx = h.transmit();
    h.answer(&tx, ResponseCode::Refused, vec![]);
    // The refused attempt's timer is gone; the retry has its own.
    let _ = h.transmit();
    assert_eq!(h.r.poll_timeout(), Some(h.now + Duration::from_secs(1)));
    h.advance(1);
    let err = h.events().remove(0).1.unwrap_err();
    assert_eq!(
        err,
        ResolveError::Timeout {
            name: "flaky.example".into(),
            attempts: 2
        }
    );
}
