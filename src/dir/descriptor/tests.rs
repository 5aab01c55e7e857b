//! The descriptors are checked the way an authority reads them
//! (routerparse.c:router_parse_entry_from_string): item order and counts,
//! both signatures over their exact ranges, the cross-certificates, and
//! the extra-info digests. The real authority's verdict is the end-to-end
//! test's (tests/interop, private network).

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::*;
use crate::crypto::cert::{CERT_TYPE_NTOR_CC_IDENTITY, ed25519_verify};
use crate::dir::document::items;
use crate::dir::time::unix;
use crate::exit::policy::{ExitPolicyOptions, parse_policy_list};

fn keys() -> (RelayKeys, std::path::PathBuf) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "oxit-desc-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    let k = RelayKeys::load_or_create(&d, "Desc", SystemTime::now(), &mut rand::rng()).unwrap();
    (k, d)
}

fn exit_policy(ipv6_exit: bool) -> ExitPolicy {
    ExitPolicy::build(&ExitPolicyOptions {
        exit_relay: Some(true),
        user_rules: Some(parse_policy_list("reject *:25, accept *:*").unwrap()),
        ipv6_exit,
        reject_private: true,
        reject_local_interfaces: false,
        reduced: false,
        published_addresses: vec!["203.0.113.7".parse().unwrap()],
        port_addresses: vec![],
        interface_addresses: vec![],
    })
}

/// The range an ed25519 descriptor signature covers, and the signature.
fn check_signatures(doc: &str, first_kw: &str, keys: &RelayKeys) {
    let ed_at = doc.find("\nrouter-sig-ed25519 ").unwrap() + 1 + "router-sig-ed25519 ".len();
    let mut h = Sha256::new();
    h.update(b"Tor router descriptor signature v1");
    h.update(&doc.as_bytes()[..ed_at]);
    let digest = h.finalize();
    let sig_line = doc[ed_at..].lines().next().unwrap();
    let sig: [u8; 64] = STANDARD_NO_PAD
        .decode(sig_line)
        .unwrap()
        .try_into()
        .unwrap();
    assert!(ed25519_verify(
        &keys.signing_key().public_bytes(),
        &digest,
        &sig
    ));

    assert!(doc.starts_with(first_kw));
    let rsa_end = doc.find("\nrouter-signature\n").unwrap() + "\nrouter-signature\n".len();
    let digest: [u8; 20] = Sha1::digest(&doc.as_bytes()[..rsa_end]).into();
    let it = items(doc).unwrap();
    let last = it.last().unwrap();
    assert_eq!(last.keyword, "router-signature");
    assert_eq!(it[it.len() - 2].keyword, "router-sig-ed25519");
    keys.rsa_id()
        .public()
        .verify_raw(&digest, last.object_tagged("SIGNATURE").unwrap())
        .unwrap();
    // identity-ed25519 right after the first line, and it is our type-4 cert.
    assert_eq!(it[1].keyword, "identity-ed25519");
    assert_eq!(
        it[1].object_tagged("ED25519 CERT").unwrap(),
        keys.signing_cert().as_bytes()
    );
}

#[test]
fn server_descriptor_is_what_an_authority_checks() {
    let (keys, dir) = keys();
    let published = unix(SystemTime::now());
    let policy = exit_policy(true);
    let family = canonical_family(
        &[
            "$0123456789ABCDEF0123456789ABCDEF01234567".into(),
            "Friend".into(),
        ],
        keys.rsa_identity().as_bytes(),
        "Desc",
    );
    let family_key = Ed25519Keypair::generate(&mut rand::rng());
    let (ei, ei_digest) = ExtraInfo {
        nickname: "Desc",
        published,
        history: "",
    }
    .sign(&keys, &mut rand::rng())
    .unwrap();
    let d = ServerDescriptor {
        nickname: "Desc",
        ipv4: "203.0.113.7".parse().unwrap(),
        or_port: 443,
        ipv6: Some("[2001:db8::7]:443".parse().unwrap()),
        platform: "oxit 0.1.0 on Linux",
        protocols: PROTOCOLS,
        published,
        uptime: 42,
        bandwidth: Bandwidth {
            rate: 1 << 30,
            burst: 1 << 30,
            observed: 12345,
        },
        extra_info: Some(ei_digest),
        family: &family,
        family_keys: std::slice::from_ref(&family_key),
        hibernating: false,
        contact: Some("ops@example.org"),
        exit_policy: &policy,
        ipv6_exit: true,
        onion_key_lifetime: std::time::Duration::from_secs(28 * 86400),
    }
    .sign(&keys, &mut rand::rng())
    .unwrap();
    check_signatures(&d, "router Desc 203.0.113.7 443 0 0\n", &keys);
    check_signatures(&ei, "extra-info Desc ", &keys);

    let it = items(&d).unwrap();
    let kws: Vec<&str> = it.iter().map(|i| i.keyword).collect();
    let pos = |k: &str| {
        kws.iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    // C tor's order for everything we write.
    let order = [
        "router",
        "identity-ed25519",
        "master-key-ed25519",
        "or-address",
        "platform",
        "proto",
        "published",
        "fingerprint",
        "uptime",
        "bandwidth",
        "extra-info-digest",
        "onion-key",
        "signing-key",
        "onion-key-crosscert",
        "ntor-onion-key-crosscert",
        "family",
        "family-cert",
        "contact",
        "ntor-onion-key",
        "reject",
        "ipv6-policy",
        "router-sig-ed25519",
        "router-signature",
    ];
    for w in order.windows(2) {
        assert!(pos(w[0]) < pos(w[1]), "{} before {}", w[0], w[1]);
    }
    // Nothing oxit does not serve.
    for absent in [
        "hidden-service-dir",
        "tunnelled-dir-server",
        "caches-extra-info",
    ] {
        assert!(!kws.contains(&absent), "{absent}");
    }
    let line = |k: &str| it[pos(k)].rest;
    assert_eq!(
        line("master-key-ed25519"),
        STANDARD_NO_PAD.encode(keys.ed_identity())
    );
    assert_eq!(line("fingerprint"), keys.rsa_identity().spaced());
    assert_eq!(line("bandwidth"), "1073741824 1073741824 12345");
    assert_eq!(line("or-address"), "[2001:db8::7]:443");
    assert_eq!(
        line("ntor-onion-key"),
        STANDARD_NO_PAD.encode(keys.ntor_key().public())
    );
    assert_eq!(
        line("family"),
        format!(
            "$0123456789ABCDEF0123456789ABCDEF01234567 ${} friend",
            keys.rsa_identity().hex_upper()
        )
    );
    // The private networks and our own address come first, then the user's rules.
    assert!(d.contains("\nreject 10.0.0.0/8:*\nreject 172.16.0.0/12:*\nreject 203.0.113.7:*\nreject *:25\naccept *:*\n"));
    assert_eq!(line("ipv6-policy"), "reject 25");
    let eid = line("extra-info-digest");
    assert_eq!(
        eid,
        format!(
            "{} {}",
            hex::encode_upper(Sha1::digest(
                &ei.as_bytes()[..ei.find("\nrouter-signature\n").unwrap() + 18]
            )),
            STANDARD_NO_PAD.encode(Sha256::digest(ei.as_bytes()))
        )
    );

    // onion-key-crosscert: the TAP key's raw signature over
    // SHA1(RSA identity DER) ‖ Ed25519 identity.
    let cc = it[pos("onion-key-crosscert")]
        .object_tagged("CROSSCERT")
        .unwrap();
    let mut signed = Sha1::digest(keys.rsa_id().public().der()).to_vec();
    signed.extend_from_slice(keys.ed_identity());
    keys.tap_key().public().verify_raw(&signed, cc).unwrap();
    // ntor-onion-key-crosscert: type 0x0A over the identity, signed by the
    // key derived from the ntor secret, whose sign bit the line carries.
    let nc = &it[pos("ntor-onion-key-crosscert")];
    let cert = Ed25519Cert::decode(nc.object_tagged("ED25519 CERT").unwrap()).unwrap();
    assert_eq!(cert.cert_type(), CERT_TYPE_NTOR_CC_IDENTITY);
    assert_eq!(cert.certified_key(), keys.ed_identity());
    let (derived, bit) = Ed25519Keypair::from_curve25519_secret(keys.ntor_key().secret());
    assert_eq!(nc.rest, bit.to_string());
    cert.verify_signature(Some(&derived.public_bytes()))
        .unwrap();
    // family-cert: type 0x0C over the identity, signed by the family key.
    let fc =
        Ed25519Cert::decode(it[pos("family-cert")].object_tagged("FAMILY CERT").unwrap()).unwrap();
    assert_eq!(fc.cert_type(), CERT_TYPE_FAMILY_V_IDENTITY);
    assert_eq!(fc.certified_key(), keys.ed_identity());
    assert_eq!(fc.signing_key(), Some(&family_key.public_bytes()));
    fc.verify_signature(None).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn non_exit_and_limits() {
    let (keys, dir) = keys();
    let policy = ExitPolicy::reject_all();
    let mut desc = ServerDescriptor {
        nickname: "Desc",
        ipv4: "127.0.0.1".parse().unwrap(),
        or_port: 9001,
        ipv6: None,
        platform: "oxit",
        protocols: PROTOCOLS,
        published: 1_700_000_000,
        uptime: 0,
        bandwidth: Bandwidth::default(),
        extra_info: None,
        family: &[],
        family_keys: &[],
        hibernating: true,
        contact: Some("line\nbreak"),
        exit_policy: &policy,
        ipv6_exit: false,
        onion_key_lifetime: std::time::Duration::from_secs(86400),
    };
    let d = desc.sign(&keys, &mut rand::rng()).unwrap();
    assert!(d.contains("\nreject *:*\nrouter-sig-ed25519 "), "{d}");
    assert!(d.contains("\nhibernating 1\n"));
    assert!(d.contains("\ncontact line break\n"));
    assert!(!d.contains("extra-info-digest") && !d.contains("or-address") && !d.contains("family"));
    check_signatures(&d, "router Desc 127.0.0.1 9001 0 0\n", &keys);

    let huge: Vec<String> = (0..3000).map(|i| format!("nick{i}")).collect();
    desc.family = &huge;
    assert!(matches!(
        desc.sign(&keys, &mut rand::rng()),
        Err(DescriptorError::TooLarge { .. })
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn family_canonical_form() {
    let me = [0x55u8; 20];
    let me_hex = hex::encode_upper(me);
    // Only ourselves: no line.
    assert!(canonical_family(&[format!("${me_hex}")], &me, "Me").is_empty());
    assert!(canonical_family(&["Me".into()], &me, "Me").is_empty());
    let f = canonical_family(
        &[
            "$ABCDABCDABCDABCDABCDABCDABCDABCDABCDABCD=named".into(),
            "$1234123412341234123412341234123412341234".into(),
            "Zed".into(),
            "alpha".into(),
            "zed".into(),
        ],
        &me,
        "Me",
    );
    assert_eq!(
        f,
        vec![
            "$1234123412341234123412341234123412341234".to_string(),
            format!("${me_hex}"),
            "$ABCDABCDABCDABCDABCDABCDABCDABCDABCDABCD".into(),
            "alpha".into(),
            "zed".into(),
        ]
    );
}
