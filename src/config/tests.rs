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
    // A torrc that says nothing about exiting makes a non-exit, as in C.
    assert_eq!(Config::default().exit_relay, AutoBool::Auto);
    assert!(Config::default().build_exit_policy(&[]).is_reject_all());
    assert_eq!(parse("Nickname Foo\n").exit_relay, AutoBool::Auto);
    // With no file at all, oxit starts as an exit.
    let c = Config::builtin();
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
    assert_eq!(parse(""), Config::default());
    assert_eq!(parse("ExitRelay 1"), c);
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
         IOBackend epoll\n\
         User debian-tor\n\
         SafeLogging relay\n\
         DoSCircuitCreationEnabled 1\n\
         DoSConnectionEnabled auto\n\
         DoSCircuitCreationDefenseTimePeriod 2 hours\n\
         DoSConnectionMaxConcurrentCount 50\n\
         DoSStreamCreationDefenseType 3\n",
    );
    assert_eq!(c.or_ports.len(), 2);
    assert_eq!(c.user.as_deref(), Some("debian-tor"));
    assert_eq!(c.safe_logging, crate::config::SafeLogging::Relay);
    assert!(c.safe_logging.scrubs());
    assert!(!parse("SafeLogging 0").safe_logging.scrubs());
    assert!(Config::parse_str("SafeLogging 2", "torrc").is_err());
    // HeartbeatPeriod: at least 30 minutes outside a test network, 0 off.
    assert_eq!(c.heartbeat_period, Duration::from_secs(6 * 3600));
    assert_eq!(
        parse("HeartbeatPeriod 1 minute").heartbeat_period,
        Duration::from_secs(1800)
    );
    assert!(parse("HeartbeatPeriod 0").heartbeat_period.is_zero());
    assert_eq!(c.dos.cc_enabled, Some(true));
    assert_eq!(c.dos.conn_enabled, None);
    assert_eq!(c.dos.cc_defense_time_period, 7200);
    assert_eq!(c.dos.conn_max_concurrent_count, 50);
    assert_eq!(c.dos.stream_defense_type, 3);
    for bad in [
        "DoSStreamCreationDefenseType 4",
        "DoSConnectionEnabled yes",
        "DoSCircuitCreationRate -1",
    ] {
        assert!(Config::parse_str(bad, "torrc").is_err(), "{bad}");
    }
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
    let reparsed = parse(&d);
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
        "SocksPort 0\nControlPortWriteToFile /x\nsocksport 9050\nAvoidDiskWrites 1\nDirCache 0\n\
         Sandbox 1\nRunAsDaemon 1\n",
        "torrc",
    )
    .unwrap();
    assert_eq!(c, Config::default());
    let names: Vec<&str> = w.iter().map(|w| w.option).collect();
    assert_eq!(
        names,
        [
            "SocksPort",
            "ControlPortWriteToFile",
            "AvoidDiskWrites",
            "DirCache",
            "Sandbox",
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

const AUTH1: &str = "DirAuthority auth1 orport=5001 no-v2 v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 \
                     127.0.0.1:7001 FDB2 FBD2 AAA5 25FA 2999 E617 5091 5A32 C777 3B17\n";

#[test]
fn directory_options() {
    // No DirAuthority: C tor's built-in list, the live network.
    let c = parse("");
    assert!(c.dir_authorities.is_empty());
    let d = c.dir_servers();
    assert!(d.is_default());
    assert!(d.v3().count() >= 3 && !d.fallbacks.is_empty());
    assert!(c.publish_server_descriptor && !c.assume_reachable && !c.testing_tor_network);
    assert!(
        c.describe().contains("\n# DirAuthority moria1 "),
        "{}",
        c.describe()
    );

    let c = parse(&format!(
        "{AUTH1}DirServer auth2 orport=5002 v3ident=24C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 \
         127.0.0.1:7002 0DB2FBD2AAA525FA2999E61750915A32C7773B17\n\
         FallbackDir 10.0.0.1 orport=9001 id=0DB2FBD2AAA525FA2999E61750915A32C7773B17\n\
         PublishServerDescriptor 0\nAssumeReachable 1\nTestingTorNetwork 1\n\
         DirPort 9030\nContactInfo me\n"
    ));
    assert_eq!(c.dir_authorities.len(), 2);
    assert_eq!(c.dir_servers().authorities, c.dir_authorities);
    assert_eq!(c.fallback_dirs.len(), 1);
    assert!(!c.publish_server_descriptor && c.assume_reachable && c.testing_tor_network);
    assert_eq!(c.dir_port.as_deref(), Some("9030"));
    // TestingTorNetwork's defaults, where the file says nothing.
    assert!(!c.exit_policy_reject_private);
    assert!(c.extend_allow_private_addresses && c.count_private_bandwidth);
    let reparsed = parse(&c.describe());
    assert_eq!(reparsed, c, "{}", c.describe());
    // ...but what the file says wins, in any order.
    let c = parse(&format!(
        "ExitPolicyRejectPrivate 1\nTestingTorNetwork 1\n{AUTH1}"
    ));
    assert!(c.exit_policy_reject_private && c.extend_allow_private_addresses);

    for (text, want) in [
        (
            "TestingTorNetwork 1\n",
            "TestingTorNetwork may only be configured",
        ),
        (
            &format!(
                "{AUTH1}{}",
                AUTH1.replace("DirAuthority", "AlternateDirAuthority")
            ),
            "cannot be used together",
        ),
        ("DirAuthority 127.0.0.1:7 FDB2FBD2\n", "bad value"),
        (
            "DirAuthority x orport=1 127.0.0.1:7 FDB2FBD2AAA525FA2999E61750915A32C7773B17\n",
            "authority for nothing",
        ),
        ("FallbackDir 10.0.0.1 orport=9001\n", "missing id="),
        ("PublishServerDescriptor bridge\n", "not run as a bridge"),
        ("PublishServerDescriptor maybe\n", "0, 1 or v3"),
        ("DirPort x\n", "bad value"),
    ] {
        let e = err(text);
        assert!(e.contains(want), "{text:?}: {e}");
    }
    assert!(parse("PublishServerDescriptor v3\n").publish_server_descriptor);
}

#[test]
fn bandwidth_options() {
    let c =
        parse("BandwidthRate 10 MBytes\nBandwidthBurst 20 MB\nMaxAdvertisedBandwidth 8 mbits\n");
    assert_eq!(c.bandwidth_rate, 10 << 20);
    assert_eq!(c.bandwidth_burst, 20 << 20);
    assert_eq!(c.max_advertised_bandwidth, 1 << 20);
    assert_eq!(c.advertised_bandwidth(), (1 << 20, 20 << 20));
    // RelayBandwidthRate alone sets the burst and raises BandwidthRate.
    let c = parse("BandwidthRate 100 KBytes\nRelayBandwidthRate 200 KBytes\n");
    assert_eq!(c.relay_bandwidth_burst, 200 << 10);
    assert_eq!(c.bandwidth_rate, 200 << 10);
    assert_eq!(c.advertised_bandwidth(), (200 << 10, 200 << 10));
    // Exactly 2 GBytes is taken as INT32_MAX, as C tor does.
    assert_eq!(
        parse("BandwidthRate 2 GBytes\nBandwidthBurst 2 GBytes\n").bandwidth_rate,
        i32::MAX as u64
    );
    assert_eq!(parse("BandwidthRate 1.5 MBytes\n").bandwidth_rate, 3 << 19);
    for (text, want) in [
        (
            "BandwidthRate 50 KBytes\n",
            "BandwidthRate is set to 51200 bytes/second. For servers, it must be at least 76800.",
        ),
        (
            "MaxAdvertisedBandwidth 1 KB\n",
            "MaxAdvertisedBandwidth is set to 1024",
        ),
        (
            "RelayBandwidthRate 10 KB\n",
            "RelayBandwidthRate is set to 10240",
        ),
        (
            "RelayBandwidthRate 200 KB\nRelayBandwidthBurst 100 KB\n",
            "RelayBandwidthBurst must be at least equal",
        ),
        (
            "BandwidthRate 2 MB\nBandwidthBurst 1 MB\n",
            "BandwidthBurst must be at least equal to BandwidthRate.",
        ),
        ("BandwidthRate 3 GB\n", "must be at most 2147483647"),
        ("BandwidthRate 10 furlongs\n", "bad value"),
        ("BandwidthRate KB\n", "bad value"),
    ] {
        let e = err(text);
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn family_options() {
    let c = parse(
        "MyFamily $0123456789ABCDEF0123456789ABCDEF01234567, abcdef0123456789abcdef0123456789abcdef01\n\
         MyFamily friend, $0123456789ABCDEF0123456789ABCDEF01234567~named\n\
         FamilyId wiaXEBn6D0Fiv4XWsvKjgwBChfZLAg6wVByy3sqpSRo\nFamilyId *\n",
    );
    assert_eq!(
        c.my_family,
        [
            "$0123456789ABCDEF0123456789ABCDEF01234567",
            "$abcdef0123456789abcdef0123456789abcdef01",
            "friend",
            "$0123456789ABCDEF0123456789ABCDEF01234567~named",
        ]
    );
    assert_eq!(c.family_ids.len(), 2);
    assert_eq!(c.family_ids[1], FamilyId::Any);
    assert_eq!(
        c.family_ids[0].to_string(),
        "wiaXEBn6D0Fiv4XWsvKjgwBChfZLAg6wVByy3sqpSRo"
    );
    assert_eq!(parse(&c.describe()), c);
    for bad in ["MyFamily bad-name\n", "MyFamily $ABC\n", "FamilyId short\n"] {
        assert!(err(bad).contains("bad value"), "{bad}");
    }
}

/// MetricsPort as C tor reads it: a bare port is on 127.0.0.1, only the
/// first line counts; MetricsPortPolicy is an exit-policy list.
#[test]
fn metrics_port_and_policy() {
    let c = parse(
        "MetricsPort 9035\nMetricsPort 127.0.0.1:9999\nMetricsPortPolicy accept 127.0.0.1, reject *\n",
    );
    assert_eq!(c.metrics_port, Some("127.0.0.1:9035".parse().unwrap()));
    assert_eq!(c.metrics_port_policy.len(), 2);
    assert!(Config::parse_str("MetricsPort 9035 json", "torrc").is_err());
    assert!(Config::parse_str("MetricsPortPolicy accept nowhere", "torrc").is_err());
}

/// C tor's layers: `--defaults-torrc`, the torrc, the command line. A
/// later layer's option replaces the earlier lines of it (list options
/// too); `+Option` appends, `/Option` clears.
#[test]
fn defaults_torrc_and_command_line_layers() {
    let d = scratch();
    let defaults = d.join("defaults");
    let torrc = d.join("torrc");
    fs::write(
        &defaults,
        "Nickname FromDefaults\nExitPolicy accept *:80\nContactInfo def\nIPv6Exit 1\n",
    )
    .unwrap();
    fs::write(&torrc, "Nickname FromTorrc\nExitPolicy accept *:443\n").unwrap();
    let layers = |cli: &[(&str, &str)]| {
        let cli: Vec<(String, String)> = cli
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse_layers(Some(&defaults), Some(&torrc), &cli)
            .unwrap()
            .0
    };
    let c = layers(&[]);
    assert_eq!(c.nickname, "FromTorrc");
    assert_eq!(
        c.contact_info.as_deref(),
        Some("def"),
        "kept from the defaults"
    );
    let policy = |c: &Config| -> Vec<String> {
        c.exit_policy
            .iter()
            .flatten()
            .map(|r| r.to_string())
            .collect()
    };
    assert_eq!(
        policy(&c),
        vec!["accept *:443"],
        "the torrc's list replaces the defaults'"
    );
    let c = layers(&[
        ("nickname", "FromCli"),
        ("+ExitPolicy", "accept *:22"),
        ("/IPv6Exit", ""),
    ]);
    assert_eq!(c.nickname, "FromCli");
    assert_eq!(policy(&c), vec!["accept *:443", "accept *:22"]);
    assert!(!c.ipv6_exit, "cleared back to its default");
    let err = Config::parse_layers(None, Some(&torrc), &[("NoSuchOption".into(), "1".into())])
        .unwrap_err()
        .to_string();
    assert!(err.contains("<command line>:1"), "{err}");
}

#[test]
fn outbound_bind_addresses_pick_by_kind_and_family() {
    let c = parse(
        "OutboundBindAddress 192.0.2.1\nOutboundBindAddress [2001:db8::1]\n\
         OutboundBindAddressExit 192.0.2.2\nOutboundBindAddressOR 2001:db8::3\n",
    );
    let v4: std::net::SocketAddr = "198.51.100.7:443".parse().unwrap();
    let v6: std::net::SocketAddr = "[2001:db8::9]:443".parse().unwrap();
    let o = &c.outbound_bind;
    assert_eq!(o.for_conn(true, &v4), Some("192.0.2.2".parse().unwrap()));
    assert_eq!(o.for_conn(false, &v4), Some("192.0.2.1".parse().unwrap()));
    assert_eq!(o.for_conn(true, &v6), Some("2001:db8::1".parse().unwrap()));
    assert_eq!(o.for_conn(false, &v6), Some("2001:db8::3".parse().unwrap()));
    assert_eq!(Config::default().outbound_bind.for_conn(true, &v4), None);
    let e = err("OutboundBindAddressExit 192.0.2.2\nOutboundBindAddressExit 192.0.2.3\n");
    assert!(
        e.contains("Multiple IPv4 exit outbound bind addresses configured: 192.0.2.3"),
        "{e}"
    );
    assert!(err("OutboundBindAddress example.org\n").contains("IPv4 or IPv6"));
}
