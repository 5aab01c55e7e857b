use std::fs;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::crypto::rsa::tests::test_rng;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oxit-keys-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

#[test]
fn create_load_renew() {
    let d = tmpdir("clr");
    let mut rng = test_rng(31);
    let k = RelayKeys::load_or_create(&d, "Nick", t0(), &mut rng).unwrap();
    let k2 = RelayKeys::load_or_create(&d, "Nick", t0(), &mut rng).unwrap();
    assert_eq!(k.rsa_identity(), k2.rsa_identity());
    assert_eq!(k.ed_identity(), k2.ed_identity());
    assert_eq!(k.ntor_key().public(), k2.ntor_key().public());
    assert_eq!(k.signing_cert(), k2.signing_cert());
    let fp = fs::read_to_string(d.join("fingerprint")).unwrap();
    assert_eq!(fp, format!("Nick {}\n", k.rsa_identity().hex_upper()));
    // The certs chain up.
    let id = *k.ed_identity();
    k.signing_cert().verify(Some(&id), t0()).unwrap();
    let [(2, x2), (4, _), (5, c5), (7, c7)] = k.responder_certs() else {
        panic!("order")
    };
    crate::crypto::x509::verify_identity_cert(x2, t0()).unwrap();
    let c5 = Ed25519Cert::decode(c5).unwrap();
    c5.verify(Some(&k.signing_key().public_bytes()), t0())
        .unwrap();
    assert_eq!(c5.certified_key(), k.tls().cert_sha256());
    RsaEdCrosscert::decode(c7)
        .unwrap()
        .verify(k.rsa_id().public(), &id, t0())
        .unwrap();
    let [_, _, (6, c6), _] = k.initiator_certs() else {
        panic!("order")
    };
    let c6 = Ed25519Cert::decode(c6).unwrap();
    c6.verify(Some(&k.signing_key().public_bytes()), t0())
        .unwrap();
    assert_eq!(c6.certified_key(), &k.link_auth_key().public_bytes());
    let (cc, bit) = k.ntor_onion_key_crosscert(t0());
    let (kp, _) = Ed25519Keypair::from_curve25519_secret(k.ntor_key().secret());
    assert_eq!(bit, kp.public_bytes()[31] >> 7);
    cc.verify(Some(&kp.public_bytes()), t0()).unwrap();

    // Renewal: nothing at t0; TLS after 2 h; onion rotation after 28 days.
    let mut k = k;
    assert_eq!(k.renew(t0(), &mut rng).unwrap(), RenewOutcome::default());
    let r = k.renew(t0() + 2 * HOUR, &mut rng).unwrap();
    assert!(r.tls && !r.signing && !r.onion_rotated);
    let old_ntor = *k.ntor_key().public();
    let later = t0() + 29 * DAY + 12 * HOUR;
    let r = k.renew(later, &mut rng).unwrap();
    assert!(r.signing && r.auth && r.tls && r.onion_rotated);
    assert_eq!(k.ntor_key_old().map(|o| *o.public()), Some(old_ntor));
    assert!(d.join("keys/secret_onion_key_ntor.old").exists());
    k.signing_cert().verify(Some(&id), later).unwrap();
    let r = k.renew(later + 8 * DAY, &mut rng).unwrap();
    assert!(r.onion_old_dropped);
    let k3 = RelayKeys::load_or_create(&d, "Nick", later, &mut rng).unwrap();
    assert_eq!(k3.ntor_key().public(), k.ntor_key().public());
    assert_eq!(k3.ed_identity(), &id);
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn offline_master() {
    let d = tmpdir("off");
    let mut rng = test_rng(32);
    let k = RelayKeys::load_or_create(&d, "N", t0(), &mut rng).unwrap();
    fs::remove_file(d.join("keys/ed25519_master_id_secret_key")).unwrap();
    let k2 = RelayKeys::load_or_create(&d, "N", t0(), &mut rng).unwrap();
    assert!(!k2.has_master_secret());
    assert_eq!(k.ed_identity(), k2.ed_identity());
    // Expired signing cert and no master: refuse.
    let e = RelayKeys::load_or_create(&d, "N", t0() + 31 * DAY, &mut rng).unwrap_err();
    assert!(matches!(e, KeysError::MasterKeyOffline { .. }), "{e}");
    fs::remove_dir_all(&d).unwrap();
}

/// Happy-family keys as `tor --keygen-family` writes them: a tagged
/// `fmly-id` file of the expanded secret key.
#[test]
fn family_keys_load_by_family_id() {
    use crate::config::FamilyId;
    let d = std::env::temp_dir().join(format!("oxit-family-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let write = |name: &str, kp: &Ed25519Keypair| {
        let mut body = b"== ed25519v1-secret: fmly-id ==".to_vec();
        body.resize(32, 0);
        body.extend_from_slice(kp.expanded_secret());
        std::fs::write(d.join(name), body).unwrap();
    };
    let a = Ed25519Keypair::generate(&mut rand::rng());
    let b = Ed25519Keypair::generate(&mut rand::rng());
    write("a.secret_family_key", &a);
    write("b.secret_family_key", &b);
    std::fs::write(d.join("notes.txt"), "not a key").unwrap();
    // Only the listed family.
    let got = load_family_keys(&d, &[FamilyId::Key(a.public_bytes())]).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].public_bytes(), a.public_bytes());
    // `*`: every key there.
    assert_eq!(load_family_keys(&d, &[FamilyId::Any]).unwrap().len(), 2);
    // No FamilyId: none, and the directory is not even read.
    assert!(load_family_keys(&d.join("absent"), &[]).unwrap().is_empty());
    // A listed family without its key stops startup, naming it.
    let missing = Ed25519Keypair::generate(&mut rand::rng()).public_bytes();
    let e = load_family_keys(&d, &[FamilyId::Key(missing)]).unwrap_err();
    assert!(
        e.to_string()
            .contains("no key was found for the listed FamilyId"),
        "{e}"
    );
    // A damaged key file is an error naming the file.
    std::fs::write(
        d.join("c.secret_family_key"),
        b"== ed25519v1-secret: type0 ==",
    )
    .unwrap();
    let e = load_family_keys(&d, &[FamilyId::Any]).unwrap_err();
    assert!(e.to_string().contains("c.secret_family_key"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}
