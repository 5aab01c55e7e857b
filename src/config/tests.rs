//! Configuration tests: the torrc syntax (C tor's torrc_format.txt rules),
//! `%include`, option values, and that every error names file and line.

use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Config {
    let (c, w) = Config::parse_str(text, "torrc").unwrap_or_else(|e| panic!("{e}"));
    assert!(w.is_empty(), "{w:?}");
    c
}

fn err(text: &str) -> String {
    Config::parse_str(text, "torrc").unwrap_err().to_string()
}

/// A fresh scratch directory under the target dir's temp area.
fn scratch() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "oxit-config-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn default_is_a_working_exit() {
    let c = Config::default();
    assert_eq!(c.or_ports[0].addr, "127.0.0.1:9001".parse().unwrap());
    assert_eq!(c.nickname, "Unnamed");
    assert_eq!(c.exit_relay, AutoBool::On);
    assert!(c.exit_policy_reject_private);
    assert_eq!(c.refuse_unknown_exits, AutoBool::Auto);
    assert_eq!(c.logs.len(), 1);
    let p = c.build_exit_policy(&[]);
    assert!(p.allows("1.2.3.4".parse().unwrap(), 443));
    assert!(!p.allows("1.2.3.4".parse().unwrap(), 25));
    assert!(!p.allows("127.0.0.1".parse().unwrap(), 443));
    assert_eq!(parse(""), c);
    let d = c.describe();
    assert!(d.contains("ORPort 127.0.0.1:9001\n"), "{d}");
    assert!(
        d.contains("# effective exit policy: reject *6:*, reject 0.0.0.0/8:*"),
        "{d}"
    );
}

#[test]
fn data_directory_defaults() {
    assert_eq!(
        data_directory_for(true, Some("/home/x".into())),
        PathBuf::from("/var/lib/oxit")
    );
    assert_eq!(
        data_directory_for(false, Some("/home/x".into())),
        PathBuf::from("/home/x/.oxit")
    );
    assert_eq!(data_directory_for(false, None), PathBuf::from("./.oxit"));
}

#[test]
fn full_exit_torrc() {
    let c = parse(
        "# an exit\n\
         ORPort 203.0.113.5:443\n\
         ORPort [2001:db8::5]:443 NoAdvertise\n\
         Address 203.0.113.5\n\
         Address 2001:db8::5\n\
         DataDirectory /srv/oxit\n\
         Nickname MyExit01\n\
         ContactInfo ops at example dot org\n\
         ExitRelay 1\n\
         ExitPolicy accept *:80, accept *:443\n\
         ExitPolicy reject *:*\n\
         ExitPolicyRejectPrivate 1\n\
         ExitPolicyRejectLocalInterfaces 1\n\
         ReducedExitPolicy 0\n\
         IPv6Exit 1\n\
         RefuseUnknownExits 0\n\
         ExtendAllowPrivateAddresses 1\n\
         ServerDNSResolvConfFile /etc/oxit/resolv.conf\n\
         NumCPUs 8\n\
         Log notice file /var/log/oxit/notices.log\n\
         Log warn syslog\n\
         ShutdownWaitLength 5 seconds\n\
         MetricsPort 127.0.0.1:9035 prometheus\n\
         IOBackend epoll\n",
    );
    assert_eq!(c.or_ports.len(), 2);
    assert!(c.or_ports[1].no_advertise);
    assert_eq!(c.addresses.len(), 2);
    assert_eq!(c.data_directory, PathBuf::from("/srv/oxit"));
    assert_eq!(c.nickname, "MyExit01");
    assert_eq!(c.contact_info.as_deref(), Some("ops at example dot org"));
    assert_eq!(c.exit_policy.as_ref().map(Vec::len), Some(3));
    assert!(
        c.exit_policy_reject_local_interfaces && c.ipv6_exit && c.extend_allow_private_addresses
    );
    assert_eq!(c.refuse_unknown_exits, AutoBool::Off);
    assert_eq!(c.num_cpus, 8);
    assert_eq!(c.logs.len(), 2);
    assert_eq!(c.logs[1].target, LogTarget::Syslog);
    assert_eq!(c.shutdown_wait_length, Duration::from_secs(5));
    assert_eq!(c.metrics_port, Some("127.0.0.1:9035".parse().unwrap()));
    assert_eq!(c.io_backend, IoBackend::Epoll);
    let p = c.build_exit_policy(&["198.51.100.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        p.to_string(),
        "reject 0.0.0.0/8:*, reject 169.254.0.0/16:*, reject 127.0.0.0/8:*, reject 192.168.0.0/16:*, \
         reject 10.0.0.0/8:*, reject 172.16.0.0/12:*, reject [::]/8:*, reject [fc00::]/7:*, \
         reject [fe80::]/10:*, reject [fec0::]/10:*, reject [ff00::]/8:*, reject 203.0.113.5:*, \
         reject [2001:db8::5]:*, reject 198.51.100.1:*, accept *4:80, accept *6:80, accept *4:443, \
         accept *6:443, reject *4:*, reject *6:*"
    );
    // describe() re-parses to the same configuration.
    let d = c.describe();
    let reparsed = parse(&d.replace("Address (discover)\n", ""));
    assert_eq!(reparsed, c, "{d}");
}

#[test]
fn keywords_are_case_insensitive_and_scalars_replace() {
    let c = parse(
        "nickname first\nNICKNAME second\norport 9002\nexitpolicy ACCEPT *:22\niobackend URING\n",
    );
    assert_eq!(c.nickname, "second");
    assert_eq!(c.or_ports.len(), 1);
    assert_eq!(c.or_ports[0].addr, "0.0.0.0:9002".parse().unwrap());
    assert_eq!(c.exit_policy.unwrap()[0].to_string(), "accept *:22");
    assert_eq!(c.io_backend, IoBackend::Uring);
}

#[test]
fn empty_value_resets_to_default() {
    let c =
        parse("Nickname Foo\nNickname\nORPort 9002\nORPort\nExitPolicy reject *:*\nExitPolicy\n");
    assert_eq!(c, Config::default());
}

#[test]
fn comments_continuations_and_quotes() {
    let c = parse(
        "  # leading comment\n\
         \n\
         Nickname Relay1 # trailing comment\n\
         ExitPolicy accept *:80, \\\n\
         # a comment inside a continued value is dropped\n\
         \x20 accept *:443, \\\n\
         \x20 reject *:*\n\
         ContactInfo \"quoted \\\"value\\\" \\x41\\102\\tend\"   # comment\n\
         DataDirectory \"/path with spaces\"\r\n\
         NumCPUs 2\n",
    );
    assert_eq!(c.nickname, "Relay1");
    let p: Vec<String> = c
        .exit_policy
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(p, ["accept *:80", "accept *:443", "reject *:*"]);
    assert_eq!(c.contact_info.as_deref(), Some("quoted \"value\" AB\tend"));
    assert_eq!(c.data_directory, PathBuf::from("/path with spaces"));
    assert_eq!(c.num_cpus, 2);
}

#[test]
fn errors_name_file_and_line() {
    let cases: &[(&str, &str)] = &[
        (
            "Nickname a\nBogusOption 1\n",
            "torrc:2: unknown option \"BogusOption\"",
        ),
        (
            "\n\nNickname this-is-not-valid\n",
            "torrc:3: bad value \"this-is-not-valid\" for Nickname",
        ),
        ("Nickname abcdefghijklmnopqrst\n", "torrc:1: bad value"),
        ("ORPort 70000\n", "torrc:1: bad value \"70000\" for ORPort"),
        ("ORPort 1.2.3.4:0\n", "torrc:1: bad value"),
        (
            "ExitRelay yes\n",
            "torrc:1: bad value \"yes\" for ExitRelay: expected 0, 1 or auto",
        ),
        (
            "IPv6Exit true\n",
            "torrc:1: bad value \"true\" for IPv6Exit: expected 0 or 1",
        ),
        ("NumCPUs -1\n", "torrc:1: bad value"),
        ("Address exit.example.com\n", "torrc:1: bad value"),
        ("Address 1.2.3.4\nAddress 5.6.7.8\n", "torrc:2: bad value"),
        (
            "Log loud stdout\n",
            "torrc:1: bad value \"loud stdout\" for Log",
        ),
        ("IOBackend kqueue\n", "torrc:1: bad value"),
        ("ShutdownWaitLength soon\n", "torrc:1: bad value"),
        (
            "Nickname a\n\nExitPolicy accept *:80, \\\n  accept *:99999\n",
            "torrc:3: bad ExitPolicy: bad exit policy item \"accept *:99999\": port \"99999\"",
        ),
        ("ExitPolicy allow *:80\n", "torrc:1: bad ExitPolicy"),
        ("ContactInfo \"bad \\q escape\"\n", "torrc:1: syntax error"),
        ("ContactInfo \"unterminated\n", "torrc:1: syntax error"),
        (
            "ContactInfo \"x\" junk\n",
            "torrc:1: syntax error: unexpected text after the closing quote",
        ),
        (
            "%include /nonexistent/oxit-test-file\n",
            "torrc:1: cannot %include \"/nonexistent/oxit-test-file\"",
        ),
    ];
    for (text, want) in cases {
        let e = err(text);
        assert!(e.starts_with(want), "{text:?}\n got: {e}\nwant: {want}");
    }
    let e = Config::parse_str("Bogus 1", "torrc").unwrap_err();
    assert_eq!(e.location(), Some(("torrc", 1)));
}

#[test]
fn unimplemented_c_options_warn_once_each() {
    let (c, w) = Config::parse_str(
        "SocksPort 0\nControlPort 9051\nsocksport 9050\nRelayBandwidthRate 10 MB\nMyFamily $AAAA\n\
         PublishServerDescriptor 1\nFamilyId abc\nUser debian-tor\nRunAsDaemon 1\n",
        "torrc",
    )
    .unwrap();
    assert_eq!(c, Config::default());
    let names: Vec<&str> = w.iter().map(|w| w.option).collect();
    assert_eq!(
        names,
        [
            "SocksPort",
            "ControlPort",
            "RelayBandwidthRate",
            "MyFamily",
            "PublishServerDescriptor",
            "FamilyId",
            "User",
            "RunAsDaemon"
        ]
    );
    assert_eq!(
        w[0].to_string(),
        "torrc:1: SocksPort is a C tor option that oxit does not implement; ignoring it"
    );
    assert_eq!(w[2].line, 4);
}

#[test]
fn implemented_and_unimplemented_lists_are_disjoint() {
    for o in options::option_names() {
        assert!(
            known::lookup(o).is_none(),
            "{o} is both implemented and ignored"
        );
        // Every implemented option parses an empty value (reset).
        Config::parse_str(&format!("{o}\n"), "t").unwrap_or_else(|e| panic!("{o}: {e}"));
    }
}

#[test]
fn include_file_and_directory() {
    let d = scratch();
    let inc = d.join("torrc.d");
    fs::create_dir(&inc).unwrap();
    fs::write(inc.join("20-policy.conf"), "ExitPolicy reject *:25\n").unwrap();
    fs::write(inc.join("10-name"), "Nickname FromDir\n").unwrap();
    fs::write(inc.join(".hidden"), "Bogus option\n").unwrap();
    fs::write(inc.join("30-empty"), "").unwrap();
    fs::create_dir(inc.join("40-subdir")).unwrap();
    fs::write(inc.join("40-subdir").join("x"), "Bogus option\n").unwrap();
    fs::write(d.join("extra"), "NumCPUs 3\n").unwrap();
    let main = d.join("torrc");
    fs::write(
        &main,
        format!(
            "Nickname Main\n%include {}\n%include {}\nExitPolicy accept *:*\n",
            inc.display(),
            d.join("extra").display()
        ),
    )
    .unwrap();
    let (c, w) = Config::parse_file(&main).unwrap();
    assert!(w.is_empty());
    assert_eq!(c.nickname, "FromDir");
    assert_eq!(c.num_cpus, 3);
    let p: Vec<String> = c
        .exit_policy
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(p, ["reject *:25", "accept *:*"]);

    // A glob in the last component, in lexical order.
    fs::write(&main, format!("%include {}/*.conf\n", inc.display())).unwrap();
    let (c, _) = Config::parse_file(&main).unwrap();
    assert_eq!(c.exit_policy.unwrap().len(), 1);
    assert_eq!(c.nickname, "Unnamed");

    // An error inside an included file names that file and its line.
    fs::write(inc.join("50-bad"), "\n\nNumCPUs many\n").unwrap();
    fs::write(&main, format!("Nickname X\n%include {}\n", inc.display())).unwrap();
    let e = Config::parse_file(&main).unwrap_err();
    assert_eq!(
        e.location(),
        Some((inc.join("50-bad").display().to_string().as_str(), 3)),
        "{e}"
    );
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn include_loops_and_missing_files() {
    let d = scratch();
    let a = d.join("a");
    let b = d.join("b");
    fs::write(&a, format!("Nickname A\n%include {}\n", b.display())).unwrap();
    fs::write(&b, format!("\n%include {}\n", a.display())).unwrap();
    let e = Config::parse_file(&a).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:2: %include loop: ", b.display())),
        "{e}"
    );
    assert!(e.contains(" -> "), "{e}");

    fs::write(&a, format!("%include {}\n", a.display())).unwrap();
    let e = Config::parse_file(&a).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:1: %include loop", a.display())),
        "{e}"
    );

    fs::write(
        &a,
        format!("Nickname A\n%include {}\n", d.join("missing").display()),
    )
    .unwrap();
    let e = Config::parse_file(&a).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:2: cannot %include", a.display())),
        "{e}"
    );
    assert!(e.contains("missing"), "{e}");

    let e = Config::parse_file(d.join("nope")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    let _ = fs::remove_dir_all(&d);
}
