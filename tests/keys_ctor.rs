//! oxit loads the keys C tor itself generated (requirements.md §2.3), keeps
//! the identity, and refuses damaged identity files by name.
//!
//! Needs the `tor` binary (Debian tor 0.4.9): `tor --list-fingerprint`
//! runs init_keys (creating secret_id_key, the Ed25519 master and signing
//! keys, the onion keys and both fingerprint files) without touching the
//! network. The test fails, never skips, if tor is missing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use oxit::crypto::cert::{Ed25519Cert, ed25519_verify};
use oxit::crypto::keys::RelayKeys;
use rand::SeedableRng;

const NICK: &str = "OxitKeysTest";

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(0x6b657973)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oxit-keys-ctor-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Have C tor create a relay key set in `dir/data`; returns the DataDirectory.
fn tor_keys(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let torrc = dir.join("torrc");
    fs::write(&torrc, "").unwrap();
    let out = Command::new("tor")
        .args(["--list-fingerprint", "-f"])
        .arg(&torrc)
        .arg("--DataDirectory")
        .arg(&data)
        .args([
            "--ORPort",
            "127.0.0.1:9",
            "--Nickname",
            NICK,
            "--SocksPort",
            "0",
            "--PublishServerDescriptor",
            "0",
            "--Log",
            "warn stderr",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs C tor: running `tor` failed ({e}); install the Debian `tor` package")
        });
    assert!(
        out.status.success(),
        "tor --list-fingerprint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "secret_id_key",
        "secret_onion_key",
        "secret_onion_key_ntor",
        "ed25519_master_id_secret_key",
        "ed25519_master_id_public_key",
        "ed25519_signing_secret_key",
        "ed25519_signing_cert",
    ] {
        assert!(
            data.join("keys").join(f).exists(),
            "tor did not write keys/{f}"
        );
    }
    data
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            m.insert(
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            );
        }
    }
    m
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to.join("keys")).unwrap();
    for (name, bytes) in snapshot(&from.join("keys")) {
        fs::write(to.join("keys").join(name), bytes).unwrap();
    }
}

#[test]
fn loads_c_tor_keys_and_keeps_identity() {
    let dir = tmp("load");
    let data = tor_keys(&dir);
    let keys_before = snapshot(&data.join("keys"));
    let fp = fs::read_to_string(data.join("fingerprint")).unwrap();
    let fp_ed = fs::read_to_string(data.join("fingerprint-ed25519")).unwrap();

    let now = SystemTime::now();
    let k = RelayKeys::load_or_create(&data, NICK, now, &mut rng()).unwrap();

    assert_eq!(fp, format!("{NICK} {}\n", k.rsa_identity().hex_upper()));
    // oxit writes the fingerprint files exactly as tor did.
    assert_eq!(fs::read_to_string(data.join("fingerprint")).unwrap(), fp);
    assert_eq!(
        fs::read_to_string(data.join("fingerprint-ed25519")).unwrap(),
        fp_ed
    );
    use base64::Engine;
    let ed64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(k.ed_identity());
    assert_eq!(fp_ed, format!("{NICK} {ed64}\n"));
    assert!(k.has_master_secret());

    // Nothing tor wrote was changed.
    assert_eq!(snapshot(&data.join("keys")), keys_before);

    // The signing key loaded from tor's expanded secret signs for the key
    // tor's type-4 cert certifies; the cert verifies under the master key.
    let cert = k.signing_cert();
    cert.verify(Some(k.ed_identity()), now).unwrap();
    assert_eq!(cert.certified_key(), &k.signing_key().public_bytes());
    let sig = k.signing_key().sign(b"oxit");
    assert!(ed25519_verify(cert.certified_key(), b"oxit", &sig));
    let file_cert = &keys_before["ed25519_signing_cert"][32..];
    assert_eq!(
        Ed25519Cert::decode(file_cert).unwrap().as_bytes(),
        cert.as_bytes()
    );

    // The ntor key matches tor's file (secret ‖ public after the header).
    let ntor = &keys_before["secret_onion_key_ntor"];
    assert_eq!(&ntor[64..96], k.ntor_key().public());
    assert_eq!(&ntor[32..64], k.ntor_key().secret());

    // The master public file agrees.
    assert_eq!(
        &keys_before["ed25519_master_id_public_key"][32..],
        k.ed_identity()
    );

    // Offline master: without the secret, the same identity from the cert.
    let off = tmp("offline");
    copy_dir(&data, &off);
    fs::remove_file(off.join("keys/ed25519_master_id_secret_key")).unwrap();
    let k2 = RelayKeys::load_or_create(&off, NICK, now, &mut rng()).unwrap();
    assert!(!k2.has_master_secret());
    assert_eq!(k2.ed_identity(), k.ed_identity());
    assert_eq!(k2.rsa_identity(), k.rsa_identity());

    fs::remove_dir_all(&dir).unwrap();
    fs::remove_dir_all(&off).unwrap();
}

fn expect_error_naming(data: &Path, file: &str) {
    let e = RelayKeys::load_or_create(data, NICK, SystemTime::now(), &mut rng())
        .expect_err("damaged key set must not load");
    let msg = e.to_string();
    assert!(
        msg.contains(file),
        "error for {file} does not name it: {msg}"
    );
}

#[test]
fn damaged_files_are_errors_naming_the_file() {
    let dir = tmp("damage");
    let data = tor_keys(&dir);
    type Damage<'a> = (&'a str, &'a dyn Fn(&Path));
    let cases: &[Damage] = &[
        ("secret_id_key", &|p| {
            fs::write(p, b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n").unwrap()
        }),
        ("secret_id_key", &|p| {
            let b = fs::read(p).unwrap();
            fs::write(p, &b[..b.len() / 2]).unwrap()
        }),
        ("ed25519_master_id_secret_key", &|p| {
            let b = fs::read(p).unwrap();
            fs::write(p, &b[..90]).unwrap()
        }),
        ("ed25519_master_id_secret_key", &|p| {
            let mut b = fs::read(p).unwrap();
            b[3] = b'X';
            fs::write(p, b).unwrap()
        }),
        ("ed25519_master_id_public_key", &|p| {
            let mut b = fs::read(p).unwrap();
            b[40] ^= 1;
            fs::write(p, b).unwrap()
        }),
        ("ed25519_signing_cert", &|p| {
            let mut b = fs::read(p).unwrap();
            let l = b.len();
            b[l - 1] ^= 1;
            fs::write(p, b).unwrap()
        }),
        ("ed25519_signing_secret_key", &|p| {
            fs::remove_file(p).unwrap()
        }),
        ("secret_onion_key_ntor", &|p| {
            let mut b = fs::read(p).unwrap();
            b[70] ^= 1;
            fs::write(p, b).unwrap()
        }),
        ("secret_onion_key_ntor", &|p| {
            let b = fs::read(p).unwrap();
            fs::write(p, &b[..20]).unwrap()
        }),
    ];
    for (i, (file, damage)) in cases.iter().enumerate() {
        let d = dir.join(format!("case{i}"));
        copy_dir(&data, &d);
        let target = d.join("keys").join(file);
        damage(&target);
        let before = snapshot(&d.join("keys"));
        expect_error_naming(&d, file);
        // A failed load never replaces anything.
        assert_eq!(
            snapshot(&d.join("keys")),
            before,
            "case {i} ({file}) changed files"
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn created_keys_are_private_and_reload() {
    let dir = tmp("create");
    let data = dir.join("data");
    let now = SystemTime::now();
    let k = RelayKeys::load_or_create(&data, NICK, now, &mut rng()).unwrap();
    let keys = data.join("keys");
    assert_eq!(
        fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let files = snapshot(&keys);
    for name in files.keys() {
        let mode = fs::metadata(keys.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
    }
    assert_eq!(files.len(), 7, "{:?}", files.keys().collect::<Vec<_>>());
    let k2 = RelayKeys::load_or_create(&data, NICK, now, &mut rng()).unwrap();
    assert_eq!(k.rsa_identity(), k2.rsa_identity());
    assert_eq!(k.ed_identity(), k2.ed_identity());
    assert_eq!(snapshot(&keys), files, "reloading rewrote key files");
    fs::remove_dir_all(&dir).unwrap();
}

/// C tor loads the key set oxit created: same fingerprints.
#[test]
fn c_tor_loads_oxit_keys() {
    let dir = tmp("reverse");
    let data = dir.join("data");
    let k = RelayKeys::load_or_create(&data, NICK, SystemTime::now(), &mut rng()).unwrap();
    let before = snapshot(&data.join("keys"));
    fs::remove_file(data.join("fingerprint")).unwrap();
    fs::remove_file(data.join("fingerprint-ed25519")).unwrap();
    let again = tor_keys(&dir);
    assert_eq!(again, data);
    let fp = fs::read_to_string(data.join("fingerprint")).unwrap();
    assert_eq!(fp, format!("{NICK} {}\n", k.rsa_identity().hex_upper()));
    let after = snapshot(&data.join("keys"));
    for name in [
        "secret_id_key",
        "ed25519_master_id_secret_key",
        "ed25519_signing_cert",
        "secret_onion_key_ntor",
    ] {
        assert_eq!(before[name], after[name], "tor rewrote {name}");
    }
    fs::remove_dir_all(&dir).unwrap();
}
