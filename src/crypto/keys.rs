//! The relay's whole key set (requirements.md §2.1) kept in C tor's
//! `DataDirectory/keys/` formats (§2.3), so oxit can take over a C tor
//! relay's identity, and their renewal (§1.1, §2.1, §8.7).
//!
//! This module owns which keys exist, loading/creating them
//! (routerkeys.c:load_ed_keys, router.c:init_keys), when each is renewed,
//! and the ready-made certificate bytes the link handshake sends. It never
//! regenerates an identity: an identity file that exists but does not load
//! is an error naming the file. Short-lived keys (link-auth key, TLS key,
//! their certs, the X.509 identity cert, the crosscert) live in memory only,
//! as in C tor. It does not speak TLS or build descriptors.

mod disk;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use curve25519_dalek::montgomery::MontgomeryPoint;
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use crate::crypto::cert::crosscert::{CrosscertError, RsaEdCrosscert};
use crate::crypto::cert::{
    CERT_TYPE_NTOR_CC_IDENTITY, CERT_TYPE_SIGNING_AUTH, CERT_TYPE_SIGNING_LINK, CertError,
    Ed25519Cert, Ed25519Keypair, KEY_TYPE_ED25519, KEY_TYPE_SHA256_X509, expiration_hours,
};
use crate::crypto::keyfile::KeyFileError;
use crate::crypto::rsa::{RsaError, RsaIdentity, RsaPrivate};
use crate::crypto::x509::{TlsLinkCert, X509Error, create_identity_cert};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);

/// Lifetimes and renewal margins; defaults are C tor 0.4.9's (config.c,
/// or.h, routerkeys.c; requirements.md §2.1).
#[derive(Clone, Debug)]
pub struct KeyLifetimes {
    /// `SigningKeyLifetime`: 30 days.
    pub signing: Duration,
    /// `TestingSigningKeySlop`: renew 1 day before expiry.
    pub signing_slop: Duration,
    /// `TestingAuthKeyLifetime`: 2 days.
    pub auth: Duration,
    /// `TestingAuthKeySlop`: 3 hours.
    pub auth_slop: Duration,
    /// `TestingLinkCertLifetime` (type-5 cert): 2 days.
    pub link_cert: Duration,
    /// TLS context rotation (`MAX_SSL_KEY_LIFETIME_INTERNAL`): 2 hours.
    pub tls_rotation: Duration,
    /// RSA→Ed crosscert: 6 months, renewed 30 days before expiry.
    pub crosscert: Duration,
    /// Crosscert renewal margin.
    pub crosscert_slop: Duration,
    /// `onion-key-rotation-days`: 28 days.
    pub onion_rotation: Duration,
    /// `onion-key-grace-period-days`: keep the previous key 7 days.
    pub onion_grace: Duration,
}

impl Default for KeyLifetimes {
    fn default() -> Self {
        Self {
            signing: 30 * DAY,
            signing_slop: DAY,
            auth: 2 * DAY,
            auth_slop: 3 * HOUR,
            link_cert: 2 * DAY,
            tls_rotation: 2 * HOUR,
            crosscert: 6 * 30 * DAY,
            crosscert_slop: 30 * DAY,
            onion_rotation: 28 * DAY,
            onion_grace: 7 * DAY,
        }
    }
}

/// Errors loading, creating or renewing keys. File problems name the file.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Reading or writing a key file.
    #[error(transparent)]
    File(#[from] KeyFileError),
    #[error(transparent)]
    Dir(#[from] crate::os::ProcessError),
    /// An RSA key file that does not parse or has the wrong shape.
    #[error("key file {path}: {source}")]
    RsaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: RsaError,
    },
    /// A certificate file that does not parse or verify.
    #[error("key file {path}: {source}")]
    CertFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: CertError,
    },
    /// Files that disagree with each other.
    #[error("key file {path}: {reason}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// A new signing key is needed but the master secret is not here.
    #[error(
        "the Ed25519 signing certificate {path} is missing or expired and the master identity secret key is not available (offline or encrypted) to sign a new one"
    )]
    MasterKeyOffline {
        /// The signing cert file.
        path: PathBuf,
    },
    /// RSA key generation or signing.
    #[error("RSA: {0}")]
    Rsa(#[from] RsaError),
    /// X.509 generation.
    #[error("X.509: {0}")]
    X509(#[from] X509Error),
    /// Crosscert generation.
    #[error("RSA->Ed25519 crosscert: {0}")]
    Crosscert(#[from] CrosscertError),
}

/// A curve25519 ntor onion key as C tor stores it (secret ‖ public).
#[derive(Clone)]
pub struct NtorKey {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl std::fmt::Debug for NtorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NtorKey({})", hex::encode(self.public))
    }
}

impl NtorKey {
    /// Generate: 32 random bytes clamped as curve25519_secret_key_generate
    /// does, so the stored secret is byte-identical to what C would write.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut s = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut s[..]);
        s[0] &= 248;
        s[31] &= 127;
        s[31] |= 64;
        Self::from_secret(&s)
    }
    /// From the 32-byte secret; the public key is computed.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let public = MontgomeryPoint::mul_base_clamped(*secret).to_bytes();
        Self {
            secret: Zeroizing::new(*secret),
            public,
        }
    }
    /// The secret scalar bytes (for an x25519 `StaticSecret`).
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
    /// The public key (the descriptor's `ntor-onion-key`).
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }
}

/// What [`RelayKeys::renew`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct RenewOutcome {
    /// New Ed25519 signing key and type-4 cert (republish the descriptor).
    pub signing: bool,
    /// New link-auth key and type-6 cert.
    pub auth: bool,
    /// New TLS key/cert, type-5 cert and X.509 identity cert (rebuild the
    /// rustls server config).
    pub tls: bool,
    /// New RSA→Ed crosscert.
    pub crosscert: bool,
    /// Onion keys rotated (republish the descriptor).
    pub onion_rotated: bool,
    /// The previous onion keys passed their grace period and were dropped.
    pub onion_old_dropped: bool,
}

/// The relay's keys and certificates (requirements.md §2.1).
#[derive(Debug)]
pub struct RelayKeys {
    keys_dir: PathBuf,
    lifetimes: KeyLifetimes,
    rsa_id: RsaPrivate,
    ed_id: [u8; 32],
    ed_id_secret: Option<Ed25519Keypair>,
    signing: Ed25519Keypair,
    signing_cert: Ed25519Cert,
    auth: Ed25519Keypair,
    auth_cert: Ed25519Cert,
    tls: TlsLinkCert,
    tls_cert: Ed25519Cert,
    tls_created: SystemTime,
    id_x509: Vec<u8>,
    crosscert: RsaEdCrosscert,
    ntor: NtorKey,
    ntor_old: Option<NtorKey>,
    tap: RsaPrivate,
    tap_old: Option<RsaPrivate>,
    onion_created: SystemTime,
}

impl RelayKeys {
    /// Load the key set from `data_dir/keys/`, creating what is missing
    /// (never an identity that exists but does not load), then write
    /// `fingerprint` and `fingerprint-ed25519` like router_write_fingerprint.
    pub fn load_or_create<R: rand::CryptoRng + ?Sized>(
        data_dir: &Path,
        nickname: &str,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<Self, KeysError> {
        Self::load_or_create_with(data_dir, nickname, KeyLifetimes::default(), now, rng)
    }

    /// [`RelayKeys::load_or_create`] with explicit lifetimes (tests,
    /// `TestingTorNetwork`-style short lifetimes).
    pub fn load_or_create_with<R: rand::CryptoRng + ?Sized>(
        data_dir: &Path,
        nickname: &str,
        lifetimes: KeyLifetimes,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<Self, KeysError> {
        let d = disk::load_or_create(data_dir, &lifetimes, now, rng)?;
        let (auth, auth_cert) = new_auth(&d.signing, &lifetimes, now, rng);
        let (tls, tls_cert, id_x509) = new_tls(&d.rsa_id, &d.signing, &lifetimes, now, rng)?;
        let crosscert = new_crosscert(&d.rsa_id, &d.ed_id, &lifetimes, now, rng)?;
        let keys = Self {
            keys_dir: data_dir.join("keys"),
            lifetimes,
            rsa_id: d.rsa_id,
            ed_id: d.ed_id,
            ed_id_secret: d.ed_id_secret,
            signing: d.signing,
            signing_cert: d.signing_cert,
            auth,
            auth_cert,
            tls,
            tls_cert,
            tls_created: now,
            id_x509,
            crosscert,
            ntor: d.ntor,
            ntor_old: d.ntor_old,
            tap: d.tap,
            tap_old: d.tap_old,
            onion_created: d.onion_created,
        };
        disk::write_fingerprints(data_dir, nickname, &keys.rsa_identity(), &keys.ed_id)?;
        Ok(keys)
    }

    /// Renew whatever expires soon (call at least hourly, like C's
    /// periodic key checks). Files change only for the signing key/cert and
    /// onion keys, as in C tor.
    pub fn renew<R: rand::CryptoRng + ?Sized>(
        &mut self,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<RenewOutcome, KeysError> {
        let mut out = RenewOutcome::default();
        let lt = self.lifetimes.clone();
        if self.signing_cert.expires_at() < now + lt.signing_slop {
            match &self.ed_id_secret {
                Some(master) => {
                    let (k, c) = disk::new_signing(&self.keys_dir, master, &lt, now, rng)?;
                    self.signing = k;
                    self.signing_cert = c;
                    out.signing = true;
                }
                None if self.signing_cert.expires_at() < now => {
                    return Err(KeysError::MasterKeyOffline {
                        path: self.keys_dir.join("ed25519_signing_cert"),
                    });
                }
                // C: "Signing key will expire soon, but I can't load the
                // master key to sign a new one!" — keep running until expiry.
                None => {}
            }
        }
        if out.signing || self.auth_cert.expires_at() < now + lt.auth_slop {
            (self.auth, self.auth_cert) = new_auth(&self.signing, &lt, now, rng);
            out.auth = true;
        }
        if out.signing
            || self.tls_created + lt.tls_rotation <= now
            || self.tls_cert.expires_at() < now + lt.auth_slop
        {
            (self.tls, self.tls_cert, self.id_x509) =
                new_tls(&self.rsa_id, &self.signing, &lt, now, rng)?;
            self.tls_created = now;
            out.tls = true;
        }
        if self.crosscert.expires_at() < now + lt.crosscert_slop {
            self.crosscert = new_crosscert(&self.rsa_id, &self.ed_id, &lt, now, rng)?;
            out.crosscert = true;
        }
        if self.onion_created + lt.onion_rotation <= now {
            let (ntor, tap) = disk::rotate_onion_keys(&self.keys_dir, rng)?;
            self.ntor_old = Some(std::mem::replace(&mut self.ntor, ntor));
            self.tap_old = Some(std::mem::replace(&mut self.tap, tap));
            self.onion_created = now;
            out.onion_rotated = true;
        } else if self.ntor_old.is_some() && self.onion_created + lt.onion_grace <= now {
            self.ntor_old = None;
            self.tap_old = None;
            out.onion_old_dropped = true;
        }
        Ok(out)
    }

    /// The consensus's `onion-key-rotation-days` and
    /// `onion-key-grace-period-days` (router.c:get_onion_key_lifetime,
    /// get_onion_key_grace_period): when the onion keys rotate next, and
    /// how long the previous ones still answer.
    pub fn set_onion_lifetimes(&mut self, rotation: Duration, grace: Duration) {
        self.lifetimes.onion_rotation = rotation;
        self.lifetimes.onion_grace = grace.min(rotation);
    }

    /// CERTS cell entries a responder sends: types 2, 4, 5, 7 (§1.4).
    pub fn responder_certs(&self) -> [(u8, &[u8]); 4] {
        [
            (2, &self.id_x509),
            (4, self.signing_cert.as_bytes()),
            (5, self.tls_cert.as_bytes()),
            (7, self.crosscert.as_bytes()),
        ]
    }

    /// CERTS cell entries an initiator sends: types 2, 4, 6, 7 (§1.7).
    pub fn initiator_certs(&self) -> [(u8, &[u8]); 4] {
        [
            (2, &self.id_x509),
            (4, self.signing_cert.as_bytes()),
            (6, self.auth_cert.as_bytes()),
            (7, self.crosscert.as_bytes()),
        ]
    }

    /// The RSA identity key.
    pub fn rsa_id(&self) -> &RsaPrivate {
        &self.rsa_id
    }
    /// SHA-1 fingerprint of the RSA identity.
    pub fn rsa_identity(&self) -> RsaIdentity {
        self.rsa_id.public().identity()
    }
    /// The Ed25519 master identity public key.
    pub fn ed_identity(&self) -> &[u8; 32] {
        &self.ed_id
    }
    /// Whether the master secret is loaded (false = offline master key).
    pub fn has_master_secret(&self) -> bool {
        self.ed_id_secret.is_some()
    }
    /// The medium-term Ed25519 signing key (descriptors, type-5/6 certs).
    pub fn signing_key(&self) -> &Ed25519Keypair {
        &self.signing
    }
    /// The type-4 cert.
    pub fn signing_cert(&self) -> &Ed25519Cert {
        &self.signing_cert
    }
    /// The link-authentication key (signs AUTHENTICATE).
    pub fn link_auth_key(&self) -> &Ed25519Keypair {
        &self.auth
    }
    /// The TLS certificate and key for rustls.
    pub fn tls(&self) -> &TlsLinkCert {
        &self.tls
    }
    /// The type-2 X.509 identity certificate DER.
    pub fn identity_x509(&self) -> &[u8] {
        &self.id_x509
    }
    /// The type-7 crosscert.
    pub fn crosscert(&self) -> &RsaEdCrosscert {
        &self.crosscert
    }
    /// Current ntor onion key.
    pub fn ntor_key(&self) -> &NtorKey {
        &self.ntor
    }
    /// Previous ntor onion key while in its grace period.
    pub fn ntor_key_old(&self) -> Option<&NtorKey> {
        self.ntor_old.as_ref()
    }
    /// Current dummy TAP onion key (descriptor `onion-key` only).
    pub fn tap_key(&self) -> &RsaPrivate {
        &self.tap
    }
    /// Previous TAP key while in its grace period.
    pub fn tap_key_old(&self) -> Option<&RsaPrivate> {
        self.tap_old.as_ref()
    }
    /// When the current onion keys were made (rotation base).
    pub fn onion_created(&self) -> SystemTime {
        self.onion_created
    }

    /// The descriptor's ntor-onion-key-crosscert: a type-0x0A cert of the
    /// Ed25519 identity, signed by the key derived from the current ntor
    /// secret, expiring `now + onion rotation period`; and the sign bit for
    /// the line (routerkeys.c:make_ntor_onion_key_crosscert; §7.1).
    pub fn ntor_onion_key_crosscert(&self, now: SystemTime) -> (Ed25519Cert, u8) {
        self.ntor_onion_key_crosscert_for(now, self.lifetimes.onion_rotation)
    }

    /// [`RelayKeys::ntor_onion_key_crosscert`] with the lifetime the
    /// consensus sets (`onion-key-rotation-days`, router.c:get_onion_key_lifetime).
    pub fn ntor_onion_key_crosscert_for(
        &self,
        now: SystemTime,
        lifetime: Duration,
    ) -> (Ed25519Cert, u8) {
        let (kp, sign_bit) = Ed25519Keypair::from_curve25519_secret(self.ntor.secret());
        let exp = expiration_hours(now, lifetime);
        let cert = Ed25519Cert::sign(
            CERT_TYPE_NTOR_CC_IDENTITY,
            KEY_TYPE_ED25519,
            self.ed_id,
            exp,
            false,
            &kp,
        );
        (cert, sign_bit)
    }

    /// The descriptor's onion-key-crosscert body: the TAP key's raw-digest
    /// signature over SHA1(RSA identity DER) ‖ Ed25519 identity
    /// (routerkeys.c:make_tap_onion_key_crosscert).
    pub fn tap_onion_key_crosscert<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> Result<Vec<u8>, KeysError> {
        let mut data = Vec::with_capacity(52);
        data.extend_from_slice(&Sha1::digest(self.rsa_id.public().der()));
        data.extend_from_slice(&self.ed_id);
        Ok(self.tap.sign_raw(rng, &data)?)
    }
}

fn new_auth<R: rand::CryptoRng + ?Sized>(
    signing: &Ed25519Keypair,
    lt: &KeyLifetimes,
    now: SystemTime,
    rng: &mut R,
) -> (Ed25519Keypair, Ed25519Cert) {
    let auth = Ed25519Keypair::generate(rng);
    let cert = Ed25519Cert::sign(
        CERT_TYPE_SIGNING_AUTH,
        KEY_TYPE_ED25519,
        auth.public_bytes(),
        expiration_hours(now, lt.auth),
        false,
        signing,
    );
    (auth, cert)
}

fn new_tls<R: rand::CryptoRng + ?Sized>(
    rsa_id: &RsaPrivate,
    signing: &Ed25519Keypair,
    lt: &KeyLifetimes,
    now: SystemTime,
    rng: &mut R,
) -> Result<(TlsLinkCert, Ed25519Cert, Vec<u8>), KeysError> {
    // C picks the link cert's X.509 lifetime at random between 5 and 365
    // days (router_initialize_tls_context); nobody checks it on the Ed path.
    let tls = TlsLinkCert::generate(rng, rsa_id, now, 30 * DAY)?;
    let cert = Ed25519Cert::sign(
        CERT_TYPE_SIGNING_LINK,
        KEY_TYPE_SHA256_X509,
        *tls.cert_sha256(),
        expiration_hours(now, lt.link_cert),
        false,
        signing,
    );
    let id_x509 = create_identity_cert(rng, rsa_id, now)?;
    Ok((tls, cert, id_x509))
}

fn new_crosscert<R: rand::CryptoRng + ?Sized>(
    rsa_id: &RsaPrivate,
    ed_id: &[u8; 32],
    lt: &KeyLifetimes,
    now: SystemTime,
    rng: &mut R,
) -> Result<RsaEdCrosscert, KeysError> {
    Ok(RsaEdCrosscert::sign(
        *ed_id,
        expiration_hours(now, lt.crosscert),
        rsa_id,
        rng,
    )?)
}

/// Happy-family key files: `*.secret_family_key` in the key directory
/// (routerkeys.c:load_family_id_keys_impl), each an expanded Ed25519
/// secret key tagged `fmly-id`, as `tor --keygen-family` writes them.
const FAMILY_KEY_SUFFIX: &str = ".secret_family_key";

/// Load the family keys `ids` name from `dir` (`FamilyId *` takes every
/// key there). A configured family whose key is missing, or a key file
/// that does not load, is an error naming it; keys for other families are
/// skipped with a warning. Files are read in name order.
pub fn load_family_keys(
    dir: &Path,
    ids: &[crate::config::FamilyId],
) -> Result<Vec<Ed25519Keypair>, KeysError> {
    use crate::config::FamilyId;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(FAMILY_KEY_SUFFIX))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(KeysError::File(KeyFileError::Io {
                path: dir.to_path_buf(),
                source,
            }));
        }
    };
    files.sort();
    let any = ids.contains(&FamilyId::Any);
    let mut keys = Vec::new();
    for f in files {
        let body = Zeroizing::new(crate::crypto::keyfile::read_tagged(
            &f,
            "ed25519v1-secret",
            "fmly-id",
            64,
        )?);
        let mut expanded = Zeroizing::new([0u8; 64]);
        expanded.copy_from_slice(&body);
        let kp = Ed25519Keypair::from_expanded(&expanded);
        if any || ids.contains(&FamilyId::Key(kp.public_bytes())) {
            keys.push(kp);
        } else {
            tracing::warn!(
                "found a family key in {} for a family not listed in FamilyId; not using it",
                f.display()
            );
        }
    }
    for id in ids {
        if let FamilyId::Key(k) = id
            && !keys.iter().any(|kp| kp.public_bytes() == *k)
        {
            return Err(KeysError::Mismatch {
                path: dir.to_path_buf(),
                reason: format!("no key was found for the listed FamilyId {id}"),
            });
        }
    }
    Ok(keys)
}
