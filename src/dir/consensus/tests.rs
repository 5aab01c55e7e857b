//! Consensus parsing and checking against documents signed here by test
//! authorities, in the shape C tor 0.4.9 authorities produce (dirvote.c:
//! networkstatus_compute_consensus, microdesc flavor).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

use super::*;
use crate::dir::authcert::parse_all;
use crate::dir::authcert::tests::TestAuthority;
use crate::dir::document::write_object;
use crate::dir::time::format_iso;

pub(crate) const T0: UnixTime = 1_800_000_000;

pub(crate) struct Relay {
    pub nick: &'static str,
    pub id: [u8; 20],
    pub ip: &'static str,
    pub or_port: u16,
    pub flags: &'static str,
}

pub(crate) fn relays() -> Vec<Relay> {
    vec![
        Relay {
            nick: "first",
            id: [1; 20],
            ip: "10.0.0.1",
            or_port: 9001,
            flags: "Fast Guard Running Stable Valid",
        },
        Relay {
            nick: "exit",
            id: [2; 20],
            ip: "10.0.0.2",
            or_port: 443,
            flags: "Exit Fast Running Valid",
        },
    ]
}

/// A microdesc consensus valid from `valid_after`, voted by `voters` and
/// signed by `signers` (sha256), with `params`.
pub(crate) fn consensus_text(
    voters: &[&TestAuthority],
    signers: &[&TestAuthority],
    valid_after: UnixTime,
    params: &str,
    relays: &[Relay],
) -> String {
    let mut s = String::from(
        "network-status-version 3 microdesc\nvote-status consensus\nconsensus-method 35\n",
    );
    s += &format!(
        "valid-after {}\nfresh-until {}\nvalid-until {}\nvoting-delay 300 300\n",
        format_iso(valid_after),
        format_iso(valid_after + 3600),
        format_iso(valid_after + 3 * 3600)
    );
    s += "known-flags Authority BadExit Exit Fast Guard HSDir MiddleOnly Running Stable StaleDesc Sybil V2Dir Valid\n";
    s += "recommended-relay-protocols Cons=2 Desc=2 Link=4-5 Relay=2-4\n";
    s += "required-relay-protocols Cons=2 Link=4 Relay=2\n";
    if !params.is_empty() {
        s += &format!("params {params}\n");
    }
    let mut sorted: Vec<&&TestAuthority> = voters.iter().collect();
    sorted.sort_by_key(|a| a.v3ident());
    for (i, a) in sorted.iter().enumerate() {
        s += &format!(
            "dir-source auth{i} {} 127.0.0.1 127.0.0.1 {} {}\ncontact auth{i}@test\nvote-digest {}\n",
            hex::encode_upper(a.v3ident()),
            7000 + i,
            5000 + i,
            "00".repeat(20)
        );
    }
    for r in relays {
        s += &format!(
            "r {} {} 2038-01-01 00:00:00 {} {} 0\nm {}\ns {}\nv Tor 0.4.9.11\npr Link=4-5 Relay=2-4\nw Bandwidth=20\n",
            r.nick,
            STANDARD_NO_PAD.encode(r.id),
            r.ip,
            r.or_port,
            STANDARD_NO_PAD.encode([7u8; 32]),
            r.flags
        );
    }
    s += "directory-footer\nbandwidth-weights Wbd=0 Wbe=0\n";
    let digest: [u8; 32] = Sha256::digest(format!("{s}directory-signature ").as_bytes()).into();
    for a in signers {
        s += &format!(
            "directory-signature sha256 {} {}\n",
            hex::encode_upper(a.v3ident()),
            a.signing.public().identity().hex_upper()
        );
        write_object(&mut s, "SIGNATURE", &a.sign(&digest));
    }
    s
}

pub(crate) fn authorities(n: usize) -> Vec<TestAuthority> {
    (0..n)
        .map(|_| TestAuthority::new(T0 - 86400, T0 + 365 * 86400))
        .collect()
}

#[test]
fn parses_and_checks_a_majority() {
    let auths = authorities(3);
    let all: Vec<&TestAuthority> = auths.iter().collect();
    let ids: Vec<[u8; 20]> = auths.iter().map(|a| a.v3ident()).collect();
    let certs: Vec<AuthCert> = auths
        .iter()
        .flat_map(|a| parse_all(&a.cert_text).unwrap())
        .collect();
    let text = consensus_text(
        &all,
        &all[..2],
        T0,
        "circwindow=500 refuseunknownexits=0",
        &relays(),
    );
    let c = Consensus::parse(&text, false).unwrap();
    assert_eq!(c.flavor, Flavor::Microdesc);
    assert_eq!(
        (c.valid_after, c.fresh_until, c.valid_until),
        (T0, T0 + 3600, T0 + 3 * 3600)
    );
    assert_eq!(c.relays.len(), 2);
    let exit = c.relay(&[2; 20]).unwrap();
    assert_eq!((exit.nickname.as_str(), exit.or_port), ("exit", 443));
    assert!(exit.flags.contains(Flags::EXIT) && !exit.flags.contains(Flags::GUARD));
    assert_eq!(exit.bandwidth, Some(20));
    assert_eq!(c.param("circwindow", 1000, 100, 1000), 500);
    assert_eq!(c.param("circwindow", 1000, 600, 1000), 600, "clamped");
    assert_eq!(c.param("absent", 7, 0, 10), 7);
    assert_eq!(c.voters.len(), 3);

    // 2 of 3 signed: a majority.
    let check = c.check_signatures(&ids, &certs, T0);
    assert_eq!((check.good, check.required), (2, 2));
    assert_eq!(check.verdict(), Verdict::Accept);
    // Without the certificates: enough could verify once fetched.
    let check = c.check_signatures(&ids, &certs[2..], T0);
    assert_eq!(check.missing.len(), 2);
    assert_eq!(check.verdict(), Verdict::NeedCerts);
    // Expired certificates count as missing.
    let check = c.check_signatures(&ids, &certs, T0 + 400 * 86400);
    assert_eq!(check.verdict(), Verdict::NeedCerts);
    // Configured with five authorities, two signatures are not a majority.
    let mut five = ids.clone();
    five.extend([[9u8; 20], [10u8; 20]]);
    assert_eq!(
        c.check_signatures(&five, &certs, T0).verdict(),
        Verdict::Reject
    );
    // Signatures from authorities we are not configured with do not count.
    let check = c.check_signatures(&ids[2..], &certs, T0);
    assert_eq!((check.unknown, check.good), (2, 0));
    assert_eq!(check.verdict(), Verdict::Reject);

    // Liveness windows.
    assert!(c.is_live(T0) && !c.is_live(T0 + 3 * 3600 + 1));
    assert!(c.is_reasonably_live(T0 + 3 * 3600 + 86400));
    assert!(!c.is_reasonably_live(T0 + 3 * 3600 + 86401));
    assert!(c.is_reasonably_live(T0 - 86400) && !c.is_reasonably_live(T0 - 86401));
}

#[test]
fn tampering_breaks_signatures() {
    let auths = authorities(3);
    let all: Vec<&TestAuthority> = auths.iter().collect();
    let ids: Vec<[u8; 20]> = auths.iter().map(|a| a.v3ident()).collect();
    let certs: Vec<AuthCert> = auths
        .iter()
        .flat_map(|a| parse_all(&a.cert_text).unwrap())
        .collect();
    let text = consensus_text(&all, &all, T0, "", &relays());
    // One relay's flags changed after signing.
    let bad = text.replace("Exit Fast Running Valid", "BadExit Fast Running Valid");
    let c = Consensus::parse(&bad, false).unwrap();
    let check = c.check_signatures(&ids, &certs, T0);
    assert_eq!((check.good, check.bad), (0, 3));
    assert_eq!(check.verdict(), Verdict::Reject);
}

#[test]
fn malformed_documents() {
    let auths = authorities(1);
    let all: Vec<&TestAuthority> = auths.iter().collect();
    let good = consensus_text(&all, &all, T0, "a=1 b=2", &relays());
    assert!(Consensus::parse(&good, false).is_ok());
    let cases: Vec<(String, &str)> = vec![
        (good[..good.len() / 2].to_owned(), "truncated"),
        (
            good.replace("vote-status consensus", "vote-status vote"),
            "vote",
        ),
        (good.replace("params a=1 b=2", "params b=2 a=1"), "order"),
        (good.replace("params a=1 b=2", "params a=1 a=2"), "dup"),
        (good.replace("params a=1 b=2", "params a=x"), "int"),
        (good.replace("microdesc\n", "bogus\n"), "flavor"),
        (
            good.replace(
                &format!("fresh-until {}", format_iso(T0 + 3600)),
                &format!("fresh-until {}", format_iso(T0 + 60)),
            ),
            "interval",
        ),
        (good.replacen("r first", "r exit!!", 1), "nickname"),
        (good.replacen("pr Link=4-5 Relay=2-4\n", "", 1), "no pr"),
        (
            good.replace("directory-footer\n", "directory-footer\nextra junk\n"),
            "footer",
        ),
        (
            good.replace("voting-delay 300 300", "voting-delay 1 300"),
            "delay",
        ),
    ];
    for (doc, what) in cases {
        assert!(
            Consensus::parse(&doc, false).is_err(),
            "{what} should be rejected"
        );
    }
    // Entries out of order.
    let mut rs = relays();
    rs.reverse();
    assert!(Consensus::parse(&consensus_text(&all, &all, T0, "", &rs), false).is_err());
    // A 60-second voting interval is fine in a test network only.
    let short = good.replace(
        &format!(
            "fresh-until {}\nvalid-until {}",
            format_iso(T0 + 3600),
            format_iso(T0 + 3 * 3600)
        ),
        &format!(
            "fresh-until {}\nvalid-until {}",
            format_iso(T0 + 60),
            format_iso(T0 + 180)
        ),
    );
    assert!(Consensus::parse(&short, false).is_err());
    assert!(Consensus::parse(&short, true).is_ok());
}
