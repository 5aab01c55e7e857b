//! The directory schedule driven without sockets: three test authorities
//! answer the requests the client makes, and the clock is a number.

use super::*;
use crate::dir::authcert::tests::TestAuthority;
use crate::dir::authority::FallbackDir;
use crate::dir::consensus::tests::{Relay, T0, authorities, consensus_text, relays};

struct Net {
    auths: Vec<TestAuthority>,
    dir: Vec<DirAuthority>,
}

fn net() -> Net {
    let auths = authorities(3);
    let dir = auths
        .iter()
        .enumerate()
        .map(|(i, a)| {
            DirAuthority::parse(&format!(
                "auth{i} orport={} v3ident={} 127.0.0.1:{} {}",
                5000 + i,
                hex::encode_upper(a.v3ident()),
                7000 + i,
                hex::encode_upper([i as u8 + 0x40; 20])
            ))
            .unwrap()
        })
        .collect();
    Net { auths, dir }
}

impl Net {
    fn client(&self, publish: bool, assume_reachable: bool) -> DirClient {
        DirClient::new(
            DirClientConfig {
                authorities: self.dir.clone(),
                fallbacks: Vec::new(),
                authority_fallback_rate_milli: 100,
                testing: false,
                publish,
                assume_reachable,
                own_rsa_id: [2; 20],
            },
            T0,
        )
    }

    fn consensus(&self, valid_after: UnixTime, relays: &[Relay]) -> String {
        let all: Vec<&TestAuthority> = self.auths.iter().collect();
        consensus_text(&all, &all, valid_after, "circwindow=500", relays)
    }

    fn certs(&self) -> String {
        self.auths.iter().map(|a| a.cert_text.as_str()).collect()
    }
}

fn ok(body: &str) -> Result<Response, String> {
    Ok(Response {
        status: 200,
        reason: "OK".into(),
        headers: vec![],
        body: body.as_bytes().to_vec(),
    })
}

fn status(code: u16, reason: &str) -> Result<Response, String> {
    Ok(Response {
        status: code,
        reason: reason.into(),
        headers: vec![],
        body: vec![],
    })
}

/// All actions queued now.
fn drain(c: &mut DirClient) -> Vec<DirAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn fetches(actions: &[DirAction], p: Purpose) -> Vec<Fetch> {
    actions
        .iter()
        .filter_map(|a| match a {
            DirAction::Fetch(f) if f.purpose == p => Some(f.clone()),
            _ => None,
        })
        .collect()
}

/// Run the client at `now` until it asks nothing more of the consensus
/// kind, answering with `answer`.
fn bootstrap(n: &Net, c: &mut DirClient, now: UnixTime) -> Vec<DirAction> {
    let rng = &mut rand::rng();
    c.handle_timeout(now, rng);
    let a = drain(c);
    let f = fetches(&a, Purpose::Consensus);
    assert_eq!(f.len(), 1, "{a:?}");
    assert!(
        f[0].request
            .path
            .starts_with("/tor/status-vote/current/consensus-microdesc/"),
        "{:?}",
        f[0].request
    );
    assert!(f[0].request.path.ends_with(".z"));
    c.handle_response(f[0].id, ok(&n.consensus(T0, &relays())), now, rng);
    // No certificates yet: it asks for them, by identity and signing key.
    c.handle_timeout(now, rng);
    let a = drain(c);
    let f = fetches(&a, Purpose::Certs);
    assert_eq!(f.len(), 1, "{a:?}");
    assert!(f[0].request.path.starts_with("/tor/keys/fp-sk/"));
    // Three identity-signing key pairs after "fp-sk/".
    assert_eq!(f[0].request.path.matches('+').count(), 2);
    c.handle_response(f[0].id, ok(&n.certs()), now, rng);
    drain(c)
}

#[test]
fn fetches_checks_and_installs_a_consensus() {
    let n = net();
    let mut c = n.client(false, false);
    let a = bootstrap(&n, &mut c, T0 + 10);
    assert!(
        a.iter()
            .any(|a| matches!(a, DirAction::StoreCerts(t) if t.contains("dir-key-certification")))
    );
    let Some(DirAction::NewConsensus { consensus, text }) = a
        .iter()
        .find(|a| matches!(a, DirAction::NewConsensus { .. }))
    else {
        panic!("no consensus: {a:?}")
    };
    assert_eq!(consensus.param("circwindow", 1000, 100, 1000), 500);
    assert!(text.starts_with("network-status-version 3 microdesc"));
    // Next fetch: in the first half of the interval after fresh-until.
    let next = c.poll_timeout(T0 + 10);
    assert_eq!(next, T0 + 70, "one check interval later");
    assert!(c.next_consensus_fetch >= T0 + 3600 + 120);
    assert!(c.next_consensus_fetch < T0 + 3600 + 120 + 1800);
    c.handle_timeout(T0 + 3000, &mut rand::rng());
    assert!(drain(&mut c).is_empty(), "nothing due before fresh-until");

    // A restart with what was kept: no fetch until the schedule says so.
    let mut again = n.client(false, false);
    again.load_cached(Some(&n.certs()), Some(text), T0 + 20);
    assert!(matches!(
        drain(&mut again)[..],
        [DirAction::NewConsensus { .. }]
    ));
    again.handle_timeout(T0 + 20, &mut rand::rng());
    assert!(fetches(&drain(&mut again), Purpose::Consensus).is_empty());
    // A corrupt cached copy is ignored and fetched again.
    let mut corrupt = n.client(false, false);
    corrupt.load_cached(Some(&n.certs()), Some(&text[..text.len() / 3]), T0 + 20);
    corrupt.handle_timeout(T0 + 20, &mut rand::rng());
    assert_eq!(fetches(&drain(&mut corrupt), Purpose::Consensus).len(), 1);
}

#[test]
fn bad_consensuses_are_refused_and_retried_later() {
    let n = net();
    let mut c = n.client(false, false);
    let rng = &mut rand::rng();
    c.load_cached(Some(&n.certs()), None, T0);
    let all: Vec<&TestAuthority> = n.auths.iter().collect();
    let cases = [
        (
            "one signature of three",
            consensus_text(&all, &all[..1], T0, "", &relays()),
        ),
        ("expired", n.consensus(T0 - 5 * 86400, &relays())),
        ("truncated", {
            let full = n.consensus(T0, &relays());
            full[..full.len() / 2].to_owned()
        }),
    ];
    let mut now = T0;
    for (what, doc) in cases {
        c.handle_timeout(now, rng);
        let f = fetches(&drain(&mut c), Purpose::Consensus);
        assert_eq!(f.len(), 1, "{what}");
        c.handle_response(f[0].id, ok(&doc), now, rng);
        assert!(
            !drain(&mut c)
                .iter()
                .any(|a| matches!(a, DirAction::NewConsensus { .. })),
            "{what} was accepted"
        );
        assert!(c.consensus().is_none(), "{what}");
        // Not retried at once: at least one check interval later.
        c.handle_timeout(now, rng);
        assert!(
            fetches(&drain(&mut c), Purpose::Consensus).is_empty(),
            "{what}"
        );
        now = c.next_consensus_fetch;
    }
    // HTTP errors and failed connections count the same way, and the
    // failing authority is avoided next time.
    c.handle_timeout(now, rng);
    let f = fetches(&drain(&mut c), Purpose::Consensus);
    c.handle_response(f[0].id, Err("connection refused".into()), now, rng);
    let first = f[0].server;
    now = c.next_consensus_fetch;
    c.handle_timeout(now, rng);
    let f = fetches(&drain(&mut c), Purpose::Consensus);
    assert_ne!(f[0].server, first);
    c.handle_response(f[0].id, status(404, "Not found"), now, rng);
    now = c.next_consensus_fetch;
    c.handle_timeout(now, rng);
    let f = fetches(&drain(&mut c), Purpose::Consensus);
    c.handle_response(f[0].id, ok(&n.consensus(T0, &relays())), now, rng);
    assert!(c.consensus().is_some());
}

#[test]
fn publishes_to_every_authority_and_retries_failures() {
    let n = net();
    let mut c = n.client(true, true);
    let rng = &mut rand::rng();
    c.handle_timeout(T0, rng);
    let a = drain(&mut c);
    let Some(DirAction::Publish { reason }) =
        a.iter().find(|a| matches!(a, DirAction::Publish { .. }))
    else {
        panic!("{a:?}")
    };
    assert_eq!(reason, "oxit just started");
    c.upload(b"router x\n".to_vec(), reason, T0);
    let ups = fetches(&drain(&mut c), Purpose::Upload);
    assert_eq!(ups.len(), 3);
    for u in &ups {
        assert_eq!(u.request.path, "/tor/");
        let Server::Authority(i) = u.server else {
            panic!("{u:?}")
        };
        assert_eq!(u.via, Via::DirPort(n.dir[i].upload_addr()));
        assert!(
            u.request
                .headers
                .iter()
                .any(|(k, v)| k == "X-Desc-Gen-Reason" && v == reason)
        );
    }
    c.handle_response(ups[0].id, status(200, "[None]"), T0, rng);
    c.handle_response(
        ups[1].id,
        status(400, "Fingerprint is marked rejected"),
        T0,
        rng,
    );
    c.handle_response(ups[2].id, Err("connection refused".into()), T0, rng);
    // Only the unreachable authority is tried again, a little later.
    c.handle_timeout(T0 + 1, rng);
    assert!(fetches(&drain(&mut c), Purpose::Upload).is_empty());
    let later = c.poll_timeout(T0 + 1);
    c.handle_timeout(T0 + 600, rng);
    let again = fetches(&drain(&mut c), Purpose::Upload);
    assert!(later <= T0 + 600);
    assert_eq!(
        again.iter().map(|f| f.server).collect::<Vec<_>>(),
        vec![ups[2].server]
    );
    c.handle_response(again[0].id, status(200, "[None]"), T0 + 600, rng);
    c.handle_timeout(T0 + 3000, rng);
    assert!(
        drain(&mut c)
            .iter()
            .all(|a| !matches!(a, DirAction::Publish { .. }))
    );
    // 18 hours on: republished.
    c.handle_timeout(T0 + REPUBLISH_INTERVAL, rng);
    assert!(drain(&mut c).iter().any(
        |a| matches!(a, DirAction::Publish { reason } if reason == "time for new descriptor")
    ));
}

#[test]
fn republishes_when_the_consensus_does_not_list_us() {
    let n = net();
    let mut c = n.client(true, true);
    let rng = &mut rand::rng();
    c.load_cached(Some(&n.certs()), None, T0);
    c.handle_timeout(T0, rng);
    let f = fetches(&drain(&mut c), Purpose::Consensus);
    c.upload(b"router x\n".to_vec(), "x", T0);
    let _ = drain(&mut c);
    // A consensus without us (our id is [2; 20]), made after we published.
    let others: Vec<Relay> = relays().into_iter().filter(|r| r.id != [2; 20]).collect();
    let now = T0 + 100 * 60;
    c.handle_response(f[0].id, ok(&n.consensus(T0 + 95 * 60, &others)), now, rng);
    c.handle_timeout(now + 1, rng);
    assert!(drain(&mut c).iter().any(
        |a| matches!(a, DirAction::Publish { reason } if reason == "not listed in consensus")
    ));
}

#[test]
fn waits_for_reachability_before_publishing() {
    let n = net();
    let mut c = n.client(true, false);
    let rng = &mut rand::rng();
    let a = bootstrap(&n, &mut c, T0 + 1);
    assert!(!a.iter().any(|a| matches!(a, DirAction::Publish { .. })));
    c.handle_timeout(T0 + 1, rng);
    let a = drain(&mut c);
    let Some(DirAction::SelfTest(via)) = a.iter().find(|a| matches!(a, DirAction::SelfTest(_)))
    else {
        panic!("{a:?}")
    };
    assert_ne!(via.rsa_id, [2; 20], "not through ourselves");
    assert!(!a.iter().any(|a| matches!(a, DirAction::Publish { .. })));
    c.note_reachable("203.0.113.7:443".parse().unwrap());
    c.handle_timeout(T0 + 2, rng);
    assert!(
        drain(&mut c).iter().any(
            |a| matches!(a, DirAction::Publish { reason } if reason == "ORPort found reachable")
        )
    );
}

#[test]
fn fallbacks_before_publishing_authorities_after() {
    let n = net();
    let fb = FallbackDir::parse("10.9.9.9 orport=9001 id=0123456789ABCDEF0123456789ABCDEF01234567")
        .unwrap();
    let mut c = DirClient::new(
        DirClientConfig {
            authorities: n.dir.clone(),
            fallbacks: vec![fb.clone()],
            authority_fallback_rate_milli: 100,
            testing: false,
            publish: true,
            assume_reachable: true,
            own_rsa_id: [2; 20],
        },
        T0,
    );
    let rng = &mut rand::rng();
    // With one fallback and three authorities weighted a tenth each, the
    // fallback is asked most of the time, through a one-hop tunnel.
    let mut tunnelled = 0;
    for i in 0..20 {
        c.handle_timeout(T0 + i, rng);
        let f = fetches(&drain(&mut c), Purpose::Consensus);
        let Some(f) = f.first() else { continue };
        if f.via
            == (Via::Tunnel {
                or_addr: fb.or_addr(),
                rsa_id: fb.rsa_id,
            })
        {
            tunnelled += 1;
        }
        c.handle_response(f.id, Err("refused".into()), T0 + i, rng);
        c.next_consensus_fetch = T0 + i + 1;
        c.fallback_down_until[0] = 0;
    }
    assert!(tunnelled >= 10, "{tunnelled} of 20 through the fallback");
    // Once published, the authorities' DirPorts.
    c.upload(b"router x\n".to_vec(), "x", T0 + 30);
    let _ = drain(&mut c);
    c.next_consensus_fetch = T0 + 30;
    c.handle_timeout(T0 + 30, rng);
    let f = fetches(&drain(&mut c), Purpose::Consensus);
    assert!(matches!(f[0].via, Via::DirPort(_)), "{f:?}");
}
