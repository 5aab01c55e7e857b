#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! X.509 certificates of the link handshake (requirements.md §1.1, §1.4,
//! §2.2): the type-2 self-signed RSA identity certificate, the TLS link
//! key and certificate that rustls presents, and checking a peer's type-2
//! certificate.
//!
//! This module owns making and checking those DER blobs. It does not
//! configure rustls or decide when to rotate (see `keys`). Time comes in as
//! a parameter; randomness as an rng.

use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use der::{Decode, Encode};
use rand::{CryptoRng, Rng};
use rsa::pkcs1v15::SigningKey;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CertificateBuilder, profile::BuilderProfile};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{EncodePublicKey, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};
use zeroize::Zeroizing;

use crate::crypto::rsa::{
    DIGEST_INFO_SHA1, DIGEST_INFO_SHA256, RsaError, RsaPrivate, RsaPublic, TOR_RSA_BITS,
};

/// `IDENTITY_CERT_LIFETIME` (tortls.h): 365 days.
pub const IDENTITY_CERT_LIFETIME: Duration = Duration::from_secs(365 * 86400);
/// Accept a peer cert up to 2 days after it expired (`TOR_X509_PAST_SLOP`).
pub const X509_PAST_SLOP: Duration = Duration::from_secs(2 * 86400);
/// Accept a peer cert up to 30 days before it starts (`TOR_X509_FUTURE_SLOP`).
pub const X509_FUTURE_SLOP: Duration = Duration::from_secs(30 * 86400);

const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_SHA1_WITH_RSA: &str = "1.2.840.113549.1.1.5";
const OID_SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";

/// Errors making or checking X.509 certificates.
#[derive(Debug, thiserror::Error)]
pub enum X509Error {
    /// DER encoding/decoding.
    #[error("X.509 {what}: {detail}")]
    Der {
        /// What was being done.
        what: &'static str,
        /// Error text.
        detail: String,
    },
    /// Building the certificate failed.
    #[error("building X.509 certificate: {0}")]
    Build(String),
    /// TLS key generation in aws-lc-rs failed.
    #[error("generating the TLS link key failed")]
    TlsKeyGen,
    /// Not an RSA key.
    #[error("peer identity certificate key algorithm is {0}, expected rsaEncryption")]
    NotRsa(String),
    /// Unsupported signature algorithm.
    #[error("peer identity certificate signature algorithm {0} is not SHA-1/SHA-256 with RSA")]
    SignatureAlgorithm(String),
    /// RSA key or signature problem.
    #[error("peer identity certificate: {0}")]
    Rsa(#[from] RsaError),
    /// Outside its validity period (with slop).
    #[error(
        "peer identity certificate is not valid now: valid {not_before}..{not_after} (unix), now {now}"
    )]
    NotValidNow {
        /// notBefore.
        not_before: u64,
        /// notAfter.
        not_after: u64,
        /// now.
        now: u64,
    },
}

fn der_err(what: &'static str) -> impl Fn(der::Error) -> X509Error {
    move |e| X509Error::Der {
        what,
        detail: e.to_string(),
    }
}

/// A random hostname like C's crypto_random_hostname(8, 20, "www.", sfx):
/// 8..=20 lowercase base32 characters.
pub fn random_hostname<R: Rng + ?Sized>(rng: &mut R, suffix: &str) -> String {
    const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let len = 8usize.saturating_add((rng.next_u32() % 13) as usize);
    let mut s = String::from("www.");
    for _ in 0..len {
        let c = B32
            .get((rng.next_u32() % 32) as usize)
            .copied()
            .unwrap_or(b'a');
        s.push(char::from(c));
    }
    s.push_str(suffix);
    s
}

/// Validity chosen like tor_tls_pick_certificate_lifetime: start a random
/// time in the past (so the cert is part-way through its life), rounded
/// back to a day boundary. Fails only if the end is past what SystemTime
/// can hold.
pub fn pick_validity<R: Rng + ?Sized>(
    rng: &mut R,
    now: SystemTime,
    lifetime: Duration,
) -> Result<(SystemTime, SystemTime), X509Error> {
    const DAY: u64 = 86400;
    // Seconds of our own clock and a lifetime of days: nowhere near
    // u64::MAX, so the saturating operations never saturate.
    let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let life = lifetime.as_secs();
    let earliest = if life <= 2 * DAY {
        now_s.saturating_sub(1)
    } else {
        now_s.saturating_add(2 * DAY).saturating_sub(life)
    };
    let span = now_s.saturating_sub(earliest);
    let offset = NonZeroU64::new(span).map_or(0, |span| rng.next_u64() % span);
    let start = earliest.saturating_add(offset);
    let start = start.saturating_sub(start % DAY);
    let out_of_range = || X509Error::Build("certificate validity out of range".into());
    let start = UNIX_EPOCH
        .checked_add(Duration::from_secs(start))
        .ok_or_else(out_of_range)?;
    Ok((start, start.checked_add(lifetime).ok_or_else(out_of_range)?))
}

struct TorProfile {
    subject: Name,
    issuer: Name,
}

impl BuilderProfile for TorProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &x509_cert::TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        // C tor's certificates are X.509 v3 with no extensions, but this
        // builder emits v1 when there are none, and webpki (which rustls
        // uses to check the TLS handshake signature) only accepts v3. A
        // non-critical basicConstraints cA:FALSE (an empty SEQUENCE) makes
        // it v3; C tor checks only signature, validity and key size.
        let value = der::asn1::OctetString::new(vec![0x30, 0x00])
            .map_err(x509_cert::builder::Error::from)?;
        Ok(vec![Extension {
            extn_id: der::oid::ObjectIdentifier::new_unwrap("2.5.29.19"),
            critical: false,
            extn_value: value,
        }])
    }
}

/// Like x509_openssl.c:tor_tls_create_certificate: `spki` signed by
/// `signer` with SHA-256/RSA, random 8-byte serial, CN names as given.
fn create_cert<R: CryptoRng + ?Sized>(
    rng: &mut R,
    spki: SubjectPublicKeyInfoOwned,
    signer: &RsaPrivate,
    subject_cn: &str,
    issuer_cn: &str,
    validity: (SystemTime, SystemTime),
) -> Result<Vec<u8>, X509Error> {
    let name = |cn: &str| Name::from_str(&format!("CN={cn}")).map_err(der_err("name"));
    let profile = TorProfile {
        subject: name(subject_cn)?,
        issuer: name(issuer_cn)?,
    };
    let mut serial = [0u8; 8];
    rng.fill_bytes(&mut serial);
    // A DER INTEGER is signed: keep it positive and non-zero as OpenSSL's
    // BN_to_ASN1_INTEGER of 8 random bytes would be.
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let serial = SerialNumber::new(&serial).map_err(der_err("serial"))?;
    let validity = Validity::new(
        Time::try_from(validity.0).map_err(der_err("notBefore"))?,
        Time::try_from(validity.1).map_err(der_err("notAfter"))?,
    );
    let builder = CertificateBuilder::new(profile, serial, validity, spki)
        .map_err(|e| X509Error::Build(e.to_string()))?;
    let key = SigningKey::<Sha256>::new(signer.inner().clone());
    let cert = builder
        .build_with_rng::<_, rsa::pkcs1v15::Signature, _>(&key, rng)
        .map_err(|e| X509Error::Build(e.to_string()))?;
    cert.to_der().map_err(der_err("encoding certificate"))
}

fn rsa_spki(key: &RsaPublic) -> Result<SubjectPublicKeyInfoOwned, X509Error> {
    let der = key
        .inner()
        .to_public_key_der()
        .map_err(|e| X509Error::Build(e.to_string()))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(der_err("identity SPKI"))
}

/// The type-2 CERTS entry: the RSA identity key self-signed, subject =
/// issuer = `www.<random>.com`, 365-day lifetime starting in the past
/// (tortls.c:tor_tls_context_init_certificates).
pub fn create_identity_cert<R: CryptoRng + ?Sized>(
    rng: &mut R,
    identity: &RsaPrivate,
    now: SystemTime,
) -> Result<Vec<u8>, X509Error> {
    let cn = random_hostname(rng, ".com");
    let validity = pick_validity(rng, now, IDENTITY_CERT_LIFETIME)?;
    create_cert(
        rng,
        rsa_spki(identity.public())?,
        identity,
        &cn,
        &cn,
        validity,
    )
}

/// The TLS link key and certificate rustls presents. C tor uses RSA-2048
/// signed by the identity (tortls.c, RSA_LINK_KEY_BITS); so do we:
/// 0.4.9 clients only compare SHA-256(cert DER) to the type-5 cert, but an
/// RSA key works with every TLS 1.2 suite C offers.
pub struct TlsLinkCert {
    cert_der: Vec<u8>,
    key_pkcs8: Zeroizing<Vec<u8>>,
    digest: [u8; 32],
}

impl std::fmt::Debug for TlsLinkCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsLinkCert(sha256 {})", hex::encode(self.digest))
    }
}

impl TlsLinkCert {
    /// Generate a fresh RSA-2048 key (aws-lc-rs draws its own randomness)
    /// and a certificate for it signed by `identity`, subject
    /// `www.<random>.net`, issuer `www.<random>.com`.
    pub fn generate<R: CryptoRng + ?Sized>(
        rng: &mut R,
        identity: &RsaPrivate,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Self, X509Error> {
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| X509Error::TlsKeyGen)?;
        let pkcs8 = kp.as_der().map_err(|_| X509Error::TlsKeyGen)?;
        let spki_der = aws_lc_rs::signature::KeyPair::public_key(&kp)
            .as_der()
            .map_err(|_| X509Error::TlsKeyGen)?;
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_ref())
            .map_err(der_err("TLS key SPKI"))?;
        let subject = random_hostname(rng, ".net");
        let issuer = random_hostname(rng, ".com");
        let validity = pick_validity(rng, now, lifetime)?;
        let cert_der = create_cert(rng, spki, identity, &subject, &issuer, validity)?;
        let digest = Sha256::digest(&cert_der).into();
        Ok(Self {
            cert_der,
            key_pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
            digest,
        })
    }

    /// The certificate DER (rustls `CertificateDer`).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
    /// The private key as PKCS#8 DER (rustls `PrivatePkcs8KeyDer`).
    pub fn key_pkcs8_der(&self) -> &[u8] {
        &self.key_pkcs8
    }
    /// SHA-256 of the certificate DER: the type-5 cert's certified "key".
    pub fn cert_sha256(&self) -> &[u8; 32] {
        &self.digest
    }
}

/// Check a peer's type-2 certificate as x509_openssl.c:tor_tls_cert_is_valid
/// does for a self-signed identity cert: SHA-1/SHA-256-with-RSA
/// self-signature, validity with slop, key exactly 1024 bits, e = 65537.
/// Returns the identity key.
pub fn verify_identity_cert(der: &[u8], now: SystemTime) -> Result<RsaPublic, X509Error> {
    let cert = Certificate::from_der(der).map_err(der_err("peer identity certificate"))?;
    let tbs = cert.tbs_certificate();
    let spki = tbs.subject_public_key_info();
    if spki.algorithm.oid.to_string() != OID_RSA_ENCRYPTION {
        return Err(X509Error::NotRsa(spki.algorithm.oid.to_string()));
    }
    let key = RsaPublic::from_der_tor(spki.subject_public_key.raw_bytes(), TOR_RSA_BITS)?;
    let tbs_der = tbs.to_der().map_err(der_err("re-encoding TBS"))?;
    let sig = cert.signature().raw_bytes();
    match cert.signature_algorithm().oid.to_string().as_str() {
        OID_SHA256_WITH_RSA => {
            key.verify_digest_info(&DIGEST_INFO_SHA256, &Sha256::digest(&tbs_der), sig)?
        }
        OID_SHA1_WITH_RSA => {
            key.verify_digest_info(&DIGEST_INFO_SHA1, &sha1::Sha1::digest(&tbs_der), sig)?
        }
        other => return Err(X509Error::SignatureAlgorithm(other.to_string())),
    }
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let nb = tbs.validity().not_before.to_system_time();
    let na = tbs.validity().not_after.to_system_time();
    // Not yet valid: notBefore more than the slop after now; expired:
    // now more than the slop after notAfter. Differences, not sums, so
    // nothing can overflow.
    let not_yet = nb.duration_since(now).is_ok_and(|d| d > X509_FUTURE_SLOP);
    let expired = now.duration_since(na).is_ok_and(|d| d > X509_PAST_SLOP);
    if not_yet || expired {
        return Err(X509Error::NotValidNow {
            not_before: secs(nb),
            not_after: secs(na),
            now: secs(now),
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::rsa::tests::test_rng;

    #[test]
    fn identity_cert_roundtrip() {
        let mut rng = test_rng(21);
        let id = RsaPrivate::generate_1024(&mut rng).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let der = create_identity_cert(&mut rng, &id, now).unwrap();
        let k = verify_identity_cert(&der, now).unwrap();
        assert_eq!(k.identity(), id.public().identity());
        let cert = Certificate::from_der(&der).unwrap();
        let v = cert.tbs_certificate().validity();
        let nb = v.not_before.to_unix_duration().as_secs();
        assert_eq!(nb % 86400, 0);
        assert!(nb <= 1_750_000_000);
        assert_eq!(v.not_after.to_unix_duration().as_secs() - nb, 365 * 86400);
        assert_eq!(cert.tbs_certificate().serial_number().as_bytes().len(), 8);
        let cn = cert.tbs_certificate().subject().to_string();
        assert!(cn.starts_with("CN=www.") && cn.ends_with(".com"), "{cn}");
        assert_eq!(
            cert.tbs_certificate().issuer(),
            cert.tbs_certificate().subject()
        );
        // Far in the future: expired even with slop.
        assert!(matches!(
            verify_identity_cert(&der, now + Duration::from_secs(400 * 86400)),
            Err(X509Error::NotValidNow { .. })
        ));
        let mut bad = der.clone();
        let l = bad.len();
        bad[l - 5] ^= 1;
        assert!(verify_identity_cert(&bad, now).is_err());
    }

    #[test]
    fn tls_link_cert() {
        let mut rng = test_rng(22);
        let id = RsaPrivate::generate_1024(&mut rng).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let t = TlsLinkCert::generate(&mut rng, &id, now, Duration::from_secs(86400 * 10)).unwrap();
        assert_eq!(
            t.cert_sha256(),
            &<[u8; 32]>::from(Sha256::digest(t.cert_der()))
        );
        let cert = Certificate::from_der(t.cert_der()).unwrap();
        assert!(
            cert.tbs_certificate()
                .subject()
                .to_string()
                .ends_with(".net")
        );
        // A 2048-bit link key is not an identity cert.
        assert!(matches!(
            verify_identity_cert(t.cert_der(), now),
            Err(X509Error::Rsa(RsaError::WrongSize { got: 2048, .. }))
        ));
        // rustls accepts the key.
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(t.key_pkcs8_der().to_vec().into());
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).unwrap();
    }
}
