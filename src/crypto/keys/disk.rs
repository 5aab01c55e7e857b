//! Reading and writing the long- and medium-term keys under
//! `DataDirectory/keys/` (requirements.md §2.3): file names, headers and
//! the load-or-create rules of router.c:init_keys and
//! routerkeys.c:load_ed_keys.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;

use super::{KeyLifetimes, KeysError, NtorKey};
use crate::crypto::cert::{
    CERT_TYPE_ID_SIGNING, Ed25519Cert, Ed25519Keypair, KEY_TYPE_ED25519, expiration_hours,
};
use crate::crypto::keyfile::{self, KeyFileError};
use crate::crypto::rsa::{RsaIdentity, RsaPrivate, TOR_RSA_BITS};

pub(super) const SECRET_ID_KEY: &str = "secret_id_key";
pub(super) const ONION_TAP: &str = "secret_onion_key";
pub(super) const ONION_NTOR: &str = "secret_onion_key_ntor";
pub(super) const MASTER_SECRET: &str = "ed25519_master_id_secret_key";
pub(super) const MASTER_SECRET_ENCRYPTED: &str = "ed25519_master_id_secret_key_encrypted";
pub(super) const MASTER_PUBLIC: &str = "ed25519_master_id_public_key";
pub(super) const SIGNING_SECRET: &str = "ed25519_signing_secret_key";
pub(super) const SIGNING_CERT: &str = "ed25519_signing_cert";

const ED_SECRET_TYPE: &str = "ed25519v1-secret";
const ED_PUBLIC_TYPE: &str = "ed25519v1-public";
const ED_CERT_TYPE: &str = "ed25519v1-cert";
const NTOR_TYPE: &str = "c25519v1";
const NTOR_TAG: &str = "onion";

/// What lives on disk.
pub(super) struct DiskKeys {
    pub rsa_id: RsaPrivate,
    pub ed_id: [u8; 32],
    pub ed_id_secret: Option<Ed25519Keypair>,
    pub signing: Ed25519Keypair,
    pub signing_cert: Ed25519Cert,
    pub ntor: NtorKey,
    pub ntor_old: Option<NtorKey>,
    pub tap: RsaPrivate,
    pub tap_old: Option<RsaPrivate>,
    pub onion_created: SystemTime,
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

fn load_rsa(path: &Path, bits: Option<usize>) -> Result<RsaPrivate, KeysError> {
    let data = keyfile::read_file(path)?;
    let text = std::str::from_utf8(&data)
        .map_err(|_| KeyFileError::invalid(path, "RSA key PEM is not text"))?;
    let rsa_err = |source| KeysError::RsaFile {
        path: path.to_path_buf(),
        source,
    };
    let key = RsaPrivate::from_pkcs1_pem(text).map_err(rsa_err)?;
    if let Some(bits) = bits {
        key.public().check_tor_params(bits).map_err(rsa_err)?;
    }
    Ok(key)
}

fn load_or_create_rsa<R: rand::CryptoRng + ?Sized>(
    path: &Path,
    rng: &mut R,
) -> Result<RsaPrivate, KeysError> {
    if exists(path) {
        return load_rsa(path, Some(TOR_RSA_BITS));
    }
    let key = RsaPrivate::generate_1024(rng)?;
    keyfile::write_new_file(path, key.to_pkcs1_pem()?.as_bytes())?;
    Ok(key)
}

fn load_ed_secret(path: &Path, tag: &str) -> Result<Ed25519Keypair, KeysError> {
    let body = zeroize::Zeroizing::new(keyfile::read_tagged(path, ED_SECRET_TYPE, tag, 64)?);
    let mut exp = zeroize::Zeroizing::new([0u8; 64]);
    exp.copy_from_slice(&body);
    Ok(Ed25519Keypair::from_expanded(&exp))
}

fn load_ntor(path: &Path) -> Result<NtorKey, KeysError> {
    let body = zeroize::Zeroizing::new(keyfile::read_tagged(path, NTOR_TYPE, NTOR_TAG, 64)?);
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(body.get(..32).unwrap_or(&[0; 32]));
    let key = NtorKey::from_secret(&secret);
    // crypto_curve25519.c:curve25519_keypair_read_from_file refuses a file
    // whose public half does not match its secret.
    if body.get(32..) != Some(&key.public()[..]) {
        return Err(KeyFileError::invalid(path, "public key does not match the secret key").into());
    }
    Ok(key)
}

fn write_ntor(path: &Path, key: &NtorKey, replace: bool) -> Result<(), KeyFileError> {
    let mut body = zeroize::Zeroizing::new([0u8; 64]);
    body[..32].copy_from_slice(key.secret());
    body[32..].copy_from_slice(key.public());
    if replace {
        keyfile::replace_tagged(path, NTOR_TYPE, NTOR_TAG, &body[..])
    } else {
        keyfile::write_tagged(path, NTOR_TYPE, NTOR_TAG, &body[..])
    }
}

fn old(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".old");
    PathBuf::from(s)
}

/// Make and store a new signing key and type-4 cert (C replaces the files:
/// INIT_ED_KEY_REPLACE).
pub(super) fn new_signing<R: rand::CryptoRng + ?Sized>(
    keys_dir: &Path,
    master: &Ed25519Keypair,
    lt: &KeyLifetimes,
    now: SystemTime,
    rng: &mut R,
) -> Result<(Ed25519Keypair, Ed25519Cert), KeysError> {
    let key = Ed25519Keypair::generate(rng);
    let cert = Ed25519Cert::sign(
        CERT_TYPE_ID_SIGNING,
        KEY_TYPE_ED25519,
        key.public_bytes(),
        expiration_hours(now, lt.signing),
        true,
        master,
    );
    keyfile::replace_tagged(
        &keys_dir.join(SIGNING_SECRET),
        ED_SECRET_TYPE,
        "type4",
        key.expanded_secret(),
    )?;
    keyfile::replace_tagged(
        &keys_dir.join(SIGNING_CERT),
        ED_CERT_TYPE,
        "type4",
        cert.as_bytes(),
    )?;
    Ok((key, cert))
}

fn load_signing(keys_dir: &Path) -> Result<Option<(Ed25519Keypair, Ed25519Cert)>, KeysError> {
    let sk_path = keys_dir.join(SIGNING_SECRET);
    let cert_path = keys_dir.join(SIGNING_CERT);
    if !exists(&sk_path) && !exists(&cert_path) {
        return Ok(None);
    }
    // One without the other is damage, not absence: report it.
    let key = load_ed_secret(&sk_path, "type4")?;
    let data = keyfile::read_file(&cert_path)?;
    let tag = keyfile::tagged_header(ED_CERT_TYPE, "type4")?;
    let body = data
        .strip_prefix(&tag[..])
        .ok_or_else(|| KeyFileError::WrongHeader {
            path: cert_path.clone(),
            got: String::from_utf8_lossy(data.get(..32).unwrap_or(&data))
                .trim_end_matches('\0')
                .to_string(),
            expected: format!("== {ED_CERT_TYPE}: type4 =="),
        })?;
    let cert_err = |source| KeysError::CertFile {
        path: cert_path.clone(),
        source,
    };
    let cert = Ed25519Cert::decode(body).map_err(cert_err)?;
    cert.expect_type(CERT_TYPE_ID_SIGNING, KEY_TYPE_ED25519)
        .map_err(cert_err)?;
    if cert.signing_key().is_none() {
        return Err(cert_err(crate::crypto::cert::CertError::NoSigningKey));
    }
    cert.verify_signature(None).map_err(cert_err)?;
    if cert.certified_key() != &key.public_bytes() {
        return Err(KeysError::Mismatch {
            path: cert_path,
            reason: format!("certifies a key other than the one in {SIGNING_SECRET}"),
        });
    }
    Ok(Some((key, cert)))
}

/// init_keys + load_ed_keys, file side.
pub(super) fn load_or_create<R: rand::CryptoRng + ?Sized>(
    data_dir: &Path,
    lt: &KeyLifetimes,
    now: SystemTime,
    rng: &mut R,
) -> Result<DiskKeys, KeysError> {
    let dir = data_dir.join("keys");
    crate::os::check_private_dir(&dir)?;
    let rsa_id = load_or_create_rsa(&dir.join(SECRET_ID_KEY), rng)?;

    let signing = load_signing(&dir)?;
    let master_path = dir.join(MASTER_SECRET);
    let public_path = dir.join(MASTER_PUBLIC);
    let mut master = if exists(&master_path) {
        Some(load_ed_secret(&master_path, "type0")?)
    } else {
        None
    };
    let mut ed_id = if exists(&public_path) {
        let b = keyfile::read_tagged(&public_path, ED_PUBLIC_TYPE, "type0", 32)?;
        let mut k = [0u8; 32];
        k.copy_from_slice(&b);
        Some(k)
    } else {
        None
    };
    if let (Some(m), Some(p)) = (&master, &ed_id)
        && &m.public_bytes() != p
    {
        return Err(KeysError::Mismatch {
            path: public_path,
            reason: format!("does not match {MASTER_SECRET}"),
        });
    }
    let known_id = ed_id.or(master.as_ref().map(Ed25519Keypair::public_bytes));
    if let (Some((_, cert)), Some(p)) = (&signing, known_id)
        && cert.signing_key() != Some(&p)
    {
        return Err(KeysError::Mismatch {
            path: dir.join(SIGNING_CERT),
            reason: "was not signed by the master identity key".into(),
        });
    }
    // Only make a master identity when nothing of the Ed25519 identity
    // exists at all (can_make_master_id_key: no signing key either).
    let encrypted = exists(&dir.join(MASTER_SECRET_ENCRYPTED));
    if master.is_none() && ed_id.is_none() && signing.is_none() && !encrypted {
        let m = Ed25519Keypair::generate(rng);
        keyfile::write_tagged(&master_path, ED_SECRET_TYPE, "type0", m.expanded_secret())?;
        keyfile::write_tagged(&public_path, ED_PUBLIC_TYPE, "type0", &m.public_bytes())?;
        ed_id = Some(m.public_bytes());
        master = Some(m);
    }
    if ed_id.is_none() {
        ed_id = master.as_ref().map(Ed25519Keypair::public_bytes);
    }

    let want_new = signing
        .as_ref()
        .is_none_or(|(_, c)| c.expires_at() < now + lt.signing_slop);
    let need_new = signing.as_ref().is_none_or(|(_, c)| c.expires_at() < now);
    let (signing, signing_cert) = match (signing, &master) {
        (_, Some(m)) if want_new => new_signing(&dir, m, lt, now, rng)?,
        (Some(s), _) if !need_new => s,
        _ => {
            return Err(KeysError::MasterKeyOffline {
                path: dir.join(SIGNING_CERT),
            });
        }
    };
    let ed_id = match ed_id.or(signing_cert.signing_key().copied()) {
        Some(k) => k,
        None => {
            return Err(KeysError::MasterKeyOffline {
                path: dir.join(SIGNING_CERT),
            });
        }
    };
    if !exists(&public_path) {
        // load_ed_keys: "Master public key was absent; inferring from
        // public key in signing certificate and saving to disk."
        keyfile::write_tagged(&public_path, ED_PUBLIC_TYPE, "type0", &ed_id)?;
    }

    let ntor_path = dir.join(ONION_NTOR);
    let (ntor, onion_created) = if exists(&ntor_path) {
        let created = fs::metadata(&ntor_path)
            .and_then(|m| m.modified())
            .unwrap_or(now)
            .min(now);
        (load_ntor(&ntor_path)?, created)
    } else {
        let k = NtorKey::generate(rng);
        write_ntor(&ntor_path, &k, false)?;
        (k, now)
    };
    let ntor_old_path = old(&ntor_path);
    let ntor_old = if exists(&ntor_old_path) {
        Some(load_ntor(&ntor_old_path)?)
    } else {
        None
    };
    let tap = load_or_create_rsa(&dir.join(ONION_TAP), rng)?;
    let tap_old_path = old(&dir.join(ONION_TAP));
    let tap_old = if exists(&tap_old_path) {
        Some(load_rsa(&tap_old_path, None)?)
    } else {
        None
    };
    Ok(DiskKeys {
        rsa_id,
        ed_id,
        ed_id_secret: master,
        signing,
        signing_cert,
        ntor,
        ntor_old,
        tap,
        tap_old,
        onion_created,
    })
}

/// rotate_onion_key: current files become `.old`, new keys are written.
pub(super) fn rotate_onion_keys<R: rand::CryptoRng + ?Sized>(
    keys_dir: &Path,
    rng: &mut R,
) -> Result<(NtorKey, RsaPrivate), KeysError> {
    let ntor = NtorKey::generate(rng);
    let tap = RsaPrivate::generate_1024(rng)?;
    let ntor_path = keys_dir.join(ONION_NTOR);
    let tap_path = keys_dir.join(ONION_TAP);
    for p in [&ntor_path, &tap_path] {
        if exists(p) {
            fs::rename(p, old(p)).map_err(|source| KeyFileError::Io {
                path: p.clone(),
                source,
            })?;
        }
    }
    write_ntor(&ntor_path, &ntor, false)?;
    keyfile::write_new_file(&tap_path, tap.to_pkcs1_pem()?.as_bytes())?;
    Ok((ntor, tap))
}

/// router_write_fingerprint: `<nickname> <HEX>\n` and
/// `<nickname> <base64 ed25519, no padding>\n`, rewritten only if changed.
pub(super) fn write_fingerprints(
    data_dir: &Path,
    nickname: &str,
    rsa: &RsaIdentity,
    ed: &[u8; 32],
) -> Result<(), KeysError> {
    let ed64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(ed);
    for (name, value) in [
        ("fingerprint", rsa.hex_upper()),
        ("fingerprint-ed25519", ed64),
    ] {
        let path = data_dir.join(name);
        let line = format!("{nickname} {value}\n");
        if fs::read(&path).ok().as_deref() == Some(line.as_bytes()) {
            continue;
        }
        keyfile::replace_file(&path, line.as_bytes())?;
    }
    Ok(())
}
