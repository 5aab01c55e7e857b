//! Exit policy tests. The expected rule lists were worked out by hand from
//! C tor 0.4.9's policies.c (policies_parse_exit_policy_internal,
//! exit_policy_remove_redundancies) for each option combination; the
//! default-policy descriptor lines match what C exits publish.

use std::net::IpAddr;

use super::parse::PolicyProblem;
use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn opts() -> ExitPolicyOptions {
    ExitPolicyOptions {
        exit_relay: Some(true),
        user_rules: None,
        ipv6_exit: false,
        reject_private: true,
        reject_local_interfaces: false,
        reduced: false,
        published_addresses: vec![],
        port_addresses: vec![],
        interface_addresses: vec![],
    }
}

fn user(s: &str) -> Option<Vec<PolicyRule>> {
    Some(parse_policy_list(s).unwrap())
}

const PRIV4: &str = "reject 0.0.0.0/8:*, reject 169.254.0.0/16:*, reject 127.0.0.0/8:*, \
reject 192.168.0.0/16:*, reject 10.0.0.0/8:*, reject 172.16.0.0/12:*";
// `[::]/127` is not here: `[::]/8` covers it and C's redundancy removal drops it.
const PRIV6: &str = "reject [::]/8:*, reject [fc00::]/7:*, reject [fe80::]/10:*, reject [fec0::]/10:*, reject [ff00::]/8:*";
const DEFAULT4: &str = "reject *4:25, reject *4:119, reject *4:135-139, reject *4:445, \
reject *4:563, reject *4:1214, reject *4:4661-4666, reject *4:6346-6429, reject *4:6699, \
reject *4:6881-6999, accept *4:*";

fn check(p: &ExitPolicy, table: &[(&str, u16, bool)]) {
    for &(addr, port, want) in table {
        assert_eq!(p.allows(ip(addr), port), want, "{addr}:{port} under {p}");
    }
}

#[test]
fn built_default_matches_c() {
    let p = ExitPolicy::build(&opts());
    assert_eq!(p.to_string(), format!("reject *6:*, {PRIV4}, {DEFAULT4}"));
}

#[test]
fn built_ipv6_exit_with_user_list_matches_c() {
    let o = ExitPolicyOptions {
        ipv6_exit: true,
        user_rules: user("accept *:80, accept *:443, reject *:*"),
        ..opts()
    };
    let p = ExitPolicy::build(&o);
    assert_eq!(
        p.to_string(),
        format!(
            "{PRIV4}, {PRIV6}, accept *4:80, accept *6:80, accept *4:443, accept *6:443, \
             reject *4:*, reject *6:*"
        )
    );
}

#[test]
fn built_non_exit_and_auto() {
    let reject_all = "reject *4:*, reject *6:*";
    let off = ExitPolicyOptions {
        exit_relay: Some(false),
        user_rules: user("accept *:*"),
        ..opts()
    };
    assert_eq!(ExitPolicy::build(&off).to_string(), reject_all);
    // auto with nothing exit-related set: not an exit (C's
    // policy_using_default_exit_options).
    let auto = ExitPolicyOptions {
        exit_relay: None,
        ..opts()
    };
    assert_eq!(ExitPolicy::build(&auto).to_string(), reject_all);
    assert!(ExitPolicy::build(&auto).is_reject_all());
    // auto plus any exit option: an exit.
    let auto_v6 = ExitPolicyOptions {
        exit_relay: None,
        ipv6_exit: true,
        ..opts()
    };
    assert!(!ExitPolicy::build(&auto_v6).is_reject_all());
}

#[test]
fn built_reduced_matches_c() {
    let o = ExitPolicyOptions {
        reduced: true,
        ..opts()
    };
    let p = ExitPolicy::build(&o);
    let reduced4 = REDUCED_EXIT_POLICY.replace("*:", "*4:").replace(',', ", ");
    assert_eq!(p.to_string(), format!("reject *6:*, {PRIV4}, {reduced4}"));
    // 69 accepts and the final reject *4:* (its *6 half goes after reject *6:*).
    assert_eq!(p.rules().len(), 1 + 6 + 69 + 1);
}

#[test]
fn built_rejects_own_public_addresses() {
    let o = ExitPolicyOptions {
        reject_local_interfaces: true,
        published_addresses: vec![ip("198.51.100.7"), ip("2001:db8::7")],
        port_addresses: vec![ip("0.0.0.0"), ip("198.51.100.7")],
        interface_addresses: vec![
            ip("10.0.0.5"),
            ip("100.64.1.1"),
            ip("203.0.113.9"),
            ip("2001:db8::9"),
            ip("224.0.0.1"),
        ],
        ..opts()
    };
    let p = ExitPolicy::build(&o);
    // IPv6 addresses are skipped without IPv6Exit; internal, null and
    // multicast ones never appear; the repeated 198.51.100.7 is removed.
    assert_eq!(
        p.to_string(),
        format!("reject *6:*, {PRIV4}, reject 198.51.100.7:*, reject 203.0.113.9:*, {DEFAULT4}")
    );
    // Without ExitPolicyRejectPrivate the published address is not rejected.
    let o2 = ExitPolicyOptions {
        reject_private: false,
        reject_local_interfaces: false,
        ..o
    };
    assert_eq!(
        ExitPolicy::build(&o2).to_string(),
        format!("reject *6:*, {DEFAULT4}")
    );
}

#[test]
fn built_ipv6_own_addresses() {
    let o = ExitPolicyOptions {
        ipv6_exit: true,
        reject_private: false,
        reject_local_interfaces: true,
        interface_addresses: vec![ip("2001:db8::9"), ip("fe80::1")],
        user_rules: user("reject *:80"),
        ..opts()
    };
    let p = ExitPolicy::build(&o).to_string();
    assert!(
        p.starts_with(
            "reject [2001:db8::9]:*, reject *4:80, reject *6:80, reject *4:25, reject *6:25, "
        ),
        "{p}"
    );
    assert!(!p.contains("fe80::1"), "{p}");
    // A later `reject *:*` makes the own-address reject redundant; C drops
    // it (exit_policy_remove_redundancies step three).
    let o = ExitPolicyOptions {
        user_rules: user("reject *:*"),
        ..o
    };
    assert_eq!(
        ExitPolicy::build(&o).to_string(),
        "reject *4:*, reject *6:*"
    );
}

#[test]
fn built_redundancies_removed_like_c() {
    // Step two: an earlier rule covering a later one removes the later
    // (1.2.3.4:80 under 1.2.3.0/24, the repeated accept *:80); step three
    // then removes accept *4:80 itself, covered by the final accept *4:*
    // with no reject of port 80 in between.
    let o = ExitPolicyOptions {
        reject_private: false,
        user_rules: user(
            "reject 1.2.3.0/24:*, reject 1.2.3.4:80, accept *:80, accept *:80, reject *:25",
        ),
        ..opts()
    };
    assert_eq!(
        ExitPolicy::build(&o).to_string(),
        format!("reject *6:*, reject 1.2.3.0/24:*, {DEFAULT4}")
    );
    // Step three: an accept covered by a later accept with no conflicting
    // reject between them goes, here down to the final accept *4:*.
    let o = ExitPolicyOptions {
        reject_private: false,
        user_rules: user("accept 1.2.3.4:80, accept *:80"),
        ..opts()
    };
    assert_eq!(
        ExitPolicy::build(&o).to_string(),
        format!("reject *6:*, {DEFAULT4}")
    );
}

#[test]
fn default_policy_table() {
    let p = ExitPolicy::build(&opts());
    check(
        &p,
        &[
            ("1.2.3.4", 80, true),
            ("1.2.3.4", 443, true),
            ("1.2.3.4", 25, false),
            ("1.2.3.4", 119, false),
            ("1.2.3.4", 134, true),
            ("1.2.3.4", 135, false),
            ("1.2.3.4", 139, false),
            ("1.2.3.4", 140, true),
            ("1.2.3.4", 6346, false),
            ("1.2.3.4", 6429, false),
            ("1.2.3.4", 6430, true),
            ("1.2.3.4", 6999, false),
            ("1.2.3.4", 7000, true),
            ("127.0.0.1", 80, false),
            ("10.200.1.1", 443, false),
            ("172.31.255.255", 80, false),
            ("172.32.0.1", 80, true),
            ("192.168.1.1", 80, false),
            ("169.254.3.3", 80, false),
            ("0.1.2.3", 80, false),
            ("2001:db8::1", 80, false),
            ("::ffff:127.0.0.1", 80, false),
            ("::ffff:1.2.3.4", 80, true),
        ],
    );
    assert!(p.may_allow_port(80));
    assert!(!p.may_allow_port(25));
    assert!(!p.is_reject_all());
    assert!(p.is_reject_all_v6());
}

#[test]
fn reduced_policy_table() {
    let p = ExitPolicy::build(&ExitPolicyOptions {
        reduced: true,
        ..opts()
    });
    check(
        &p,
        &[
            ("1.2.3.4", 22, true),
            ("1.2.3.4", 24, false),
            ("1.2.3.4", 25, false),
            ("1.2.3.4", 443, true),
            ("1.2.3.4", 8080, true),
            ("1.2.3.4", 8081, false),
            ("1.2.3.4", 64738, true),
            ("1.2.3.4", 65535, false),
            ("10.0.0.1", 443, false),
        ],
    );
    assert!(p.may_allow_port(443));
    assert!(!p.may_allow_port(25));
}

#[test]
fn ipv6_private_masks_ranges_table() {
    let o = ExitPolicyOptions {
        ipv6_exit: true,
        user_rules: user(
            "reject 198.51.100.0/255.255.255.0:*, accept 203.0.113.0/25:8000-8010, \
             reject 203.0.113.0/24:*, reject6 [2001:db8::]/32:22-23, accept [2001:db8::1]:*",
        ),
        ..opts()
    };
    let p = ExitPolicy::build(&o);
    check(
        &p,
        &[
            ("2001:db9::1", 80, true),
            ("2001:db8::1", 22, false),
            ("2001:db8::1", 24, true),
            ("fe80::1", 80, false),
            ("fd00::1", 443, false),
            ("::1", 80, false),
            ("ff02::1", 80, false),
            ("198.51.100.200", 80, false),
            ("198.51.101.1", 80, true),
            ("203.0.113.5", 8000, true),
            ("203.0.113.5", 8010, true),
            ("203.0.113.5", 8011, false),
            ("203.0.113.200", 8005, false),
            ("203.0.114.1", 25, false),
        ],
    );
}

#[test]
fn queries_on_hand_written_policies() {
    let p = ExitPolicy::from_rules(
        parse_policy_list("accept 1.2.3.4:25, reject *:25, accept *:*").unwrap(),
    );
    assert!(p.may_allow_port(25));
    assert!(p.allows(ip("1.2.3.4"), 25));
    assert!(!p.allows(ip("1.2.3.5"), 25));
    // No rule matches: accept.
    let p = ExitPolicy::from_rules(parse_policy_list("reject 1.2.3.4:*").unwrap());
    assert!(p.allows(ip("5.6.7.8"), 1));
    let rej = ExitPolicy::reject_all();
    assert!(rej.is_reject_all() && rej.is_reject_all_v6());
    assert!(!rej.may_allow_port(80));
    let v6only = ExitPolicy::from_rules(parse_policy_list("reject *4:*, accept *6:*").unwrap());
    assert!(v6only.is_reject_all());
    assert!(!v6only.is_reject_all_v6());
    assert!(v6only.may_allow_port(80));
    assert_eq!(v6only.descriptor_lines(), "reject *:*");
    // An accept for one port only is not reject-all.
    let one = ExitPolicy::from_rules(parse_policy_list("accept 1.2.3.4:80, reject *:*").unwrap());
    assert!(!one.is_reject_all());
}

#[test]
fn descriptor_form() {
    let p = ExitPolicy::build(&opts());
    let d = p.descriptor_lines();
    let lines: Vec<&str> = d.lines().collect();
    assert_eq!(lines.first(), Some(&"reject 0.0.0.0/8:*"));
    assert_eq!(lines.get(6), Some(&"reject *:25"));
    assert_eq!(lines.get(8), Some(&"reject *:135-139"));
    assert_eq!(lines.last(), Some(&"accept *:*"));
    assert_eq!(lines.len(), 17);
    let mut s = String::new();
    parse_policy_item("accept6 [2001:db8::]/32:443")
        .unwrap()
        .write_descriptor(&mut s);
    assert_eq!(s, "accept6 [2001:db8::]/32:443");
}

#[test]
fn parse_items() {
    let cases: &[(&str, &str)] = &[
        ("accept *:80", "accept *:80"),
        ("reject *4:*", "reject *4:*"),
        ("accept6 *:443", "accept *6:443"),
        ("ACCEPT   1.2.3.0/24:80-88", "accept 1.2.3.0/24:80-88"),
        ("reject 1.2.3.4/255.255.0.0:*", "reject 1.2.3.4/16:*"),
        ("reject 1.2.3.4/32", "reject 1.2.3.4:*"),
        ("accept [2001:db8::]/32:443", "accept [2001:db8::]/32:443"),
        ("accept6 [::1]:1-65535", "accept [::1]:*"),
        ("reject private:25", "reject private:25"),
        ("reject6 private:*", "reject private:*"),
        ("accept *:0", "accept *:1"),
        ("accept *:0-10", "accept *:1-10"),
    ];
    for &(input, shown) in cases {
        let r = parse_policy_item(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(r.to_string(), shown, "{input}");
    }
    assert_eq!(
        parse_policy_list(" accept *:80 ,, reject *:* ")
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn parse_errors_say_what_was_wrong() {
    use PolicyProblem as P;
    let cases: &[(&str, PolicyProblem)] = &[
        ("allow *:80", P::MissingAction),
        ("*:80", P::MissingAction),
        ("accept", P::WrongArgumentCount),
        ("accept *:80 extra", P::WrongArgumentCount),
        ("accept [::1:80", P::UnclosedBracket),
        ("accept 1.2.3:80", P::BadAddress("1.2.3".into())),
        ("accept example.com:80", P::BadAddress("example.com".into())),
        (
            "accept 1.2.3.4/255.0.255.0:80",
            P::BadMask("255.0.255.0".into()),
        ),
        (
            "accept 1.2.3.4/33:80",
            P::MaskTooLong {
                bits: 33,
                family: "IPv4",
            },
        ),
        (
            "accept [::]/129:80",
            P::MaskTooLong {
                bits: 129,
                family: "IPv6",
            },
        ),
        ("accept */8:80", P::MaskOnWildcard),
        ("accept private/8:80", P::MaskOnPrivate),
        ("accept *:70000", P::BadPort("70000".into())),
        ("accept *:http", P::BadPort("http".into())),
        ("accept *:80:90", P::BadPort("80:90".into())),
        ("accept *:90-80", P::EmptyPortRange(90, 80)),
        ("accept6 1.2.3.4:80", P::Ipv4WithV6Action),
        ("reject6 *4:*", P::Ipv4WithV6Action),
    ];
    for (input, want) in cases {
        let e = parse_policy_item(input).unwrap_err();
        assert_eq!(&e.problem, want, "{input}");
        assert!(e.to_string().contains(input), "{e}");
    }
    assert!(parse_policy_list("accept *:80, bogus").is_err());
}

#[test]
fn constants_parse() {
    assert_eq!(parse_policy_list(DEFAULT_EXIT_POLICY).unwrap().len(), 11);
    assert_eq!(parse_policy_list(REDUCED_EXIT_POLICY).unwrap().len(), 70);
}
