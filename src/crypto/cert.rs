#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! Tor certificates: Ed25519 certificates (cert-spec §2.1; torcert.c) and
//! the RSA→Ed25519 cross-certificate (type 7 in CERTS, see [`crosscert`]).
//!
//! This module owns their byte formats, signing and checking. Time is a
//! parameter: callers pass `now`. It does not decide which certificates a
//! CERTS cell must hold (the link handshake does) nor store them (`keys`).
//! Requirements: requirements.md §1.4, §1.7, §2.2, §7.1.

pub mod crosscert;
pub mod ed_key;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use ed_key::{Ed25519Keypair, ed25519_verify};

/// CERT_TYPE: Ed25519 identity signs the Ed25519 signing key (torcert.h).
pub const CERT_TYPE_ID_SIGNING: u8 = 0x04;
/// CERT_TYPE: signing key signs SHA-256 of the TLS link certificate.
pub const CERT_TYPE_SIGNING_LINK: u8 = 0x05;
/// CERT_TYPE: signing key signs the link-authentication Ed25519 key.
pub const CERT_TYPE_SIGNING_AUTH: u8 = 0x06;
/// CERT_TYPE: ntor onion key (as Ed25519) signs the Ed25519 identity.
pub const CERT_TYPE_NTOR_CC_IDENTITY: u8 = 0x0A;

/// CERT_KEY_TYPE: the certified key is an Ed25519 public key.
pub const KEY_TYPE_ED25519: u8 = 0x01;
/// CERT_KEY_TYPE: the certified "key" is SHA-256 of an X.509 certificate.
pub const KEY_TYPE_SHA256_X509: u8 = 0x03;

/// Extension type "signed-with-ed25519-key" (cert-spec §2.2.1).
pub const EXT_SIGNED_WITH_ED25519_KEY: u8 = 0x04;
/// Extension flag: a verifier that does not know the extension must reject.
pub const EXT_FLAG_AFFECTS_VALIDATION: u8 = 0x01;

const HEADER_LEN: usize = 1 + 1 + 4 + 1 + 32 + 1;
const SIG_LEN: usize = 64;

/// Errors from decoding or checking an Ed25519 certificate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    /// Fewer bytes than the format requires.
    #[error("Ed25519 certificate truncated while reading {what}: {len} bytes")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Total length of the input.
        len: usize,
    },
    /// VERSION is not 1.
    #[error("Ed25519 certificate has version {0}, expected 1")]
    BadVersion(u8),
    /// Bytes after the signature.
    #[error("Ed25519 certificate has {0} trailing bytes after the signature")]
    TrailingBytes(usize),
    /// An extension this code does not know is marked AFFECTS_VALIDATION.
    #[error("Ed25519 certificate has unknown extension {ext_type:#04x} that affects validation")]
    UnknownCriticalExtension {
        /// The extension type.
        ext_type: u8,
    },
    /// A signed-with-ed25519-key extension whose length is not 32.
    #[error("signed-with-ed25519-key extension has length {0}, expected 32")]
    BadSigningKeyExtension(usize),
    /// Two signed-with-key extensions.
    #[error("Ed25519 certificate has two signed-with-ed25519-key extensions")]
    DuplicateSigningKeyExtension,
    /// No key to check the signature with.
    #[error("Ed25519 certificate has no signed-with-ed25519-key extension and no key was given")]
    NoSigningKey,
    /// The extension names a different key than the one expected.
    #[error("Ed25519 certificate was signed with {got}, expected {expected}")]
    WrongSigningKey {
        /// Key in the extension (hex).
        got: String,
        /// Key the caller expected (hex).
        expected: String,
    },
    /// The signature does not verify.
    #[error("Ed25519 certificate (type {cert_type:#04x}) signature does not verify")]
    BadSignature {
        /// CERT_TYPE.
        cert_type: u8,
    },
    /// Expired at `now`.
    #[error("Ed25519 certificate (type {cert_type:#04x}) expired at hour {expiration_hours}")]
    Expired {
        /// CERT_TYPE.
        cert_type: u8,
        /// EXPIRATION field.
        expiration_hours: u32,
    },
    /// The certificate is not of the type the caller needs.
    #[error(
        "expected a certificate of type {expected:#04x} with key type {expected_key_type:#04x}, got type {got:#04x} key type {got_key_type:#04x}"
    )]
    WrongType {
        /// Expected CERT_TYPE.
        expected: u8,
        /// Found CERT_TYPE.
        got: u8,
        /// Expected CERT_KEY_TYPE.
        expected_key_type: u8,
        /// Found CERT_KEY_TYPE.
        got_key_type: u8,
    },
}

/// EXPIRATION for a certificate made at `now` that lives `lifetime`:
/// hours since the epoch, rounded up (torcert.c:tor_cert_create_raw,
/// `CEIL_DIV(now + lifetime, 3600)`).
pub fn expiration_hours(now: SystemTime, lifetime: Duration) -> u32 {
    let secs = now
        .checked_add(lifetime)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs.div_ceil(3600)).unwrap_or(u32::MAX)
}

/// The instant an EXPIRATION field names.
pub fn hours_to_time(hours: u32) -> SystemTime {
    // 2^32 hours (about 490,000 years) fit SystemTime's i64 seconds, so
    // the fallback is never taken; were it, the certificate would read as
    // long expired, not as valid forever.
    UNIX_EPOCH
        .checked_add(Duration::from_hours(u64::from(hours)))
        .unwrap_or(UNIX_EPOCH)
}

/// A decoded (or freshly signed) Ed25519 certificate. Keeps its encoding,
/// which is what CERTS cells and key files carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519Cert {
    cert_type: u8,
    expiration_hours: u32,
    key_type: u8,
    certified_key: [u8; 32],
    signing_key: Option<[u8; 32]>,
    signature: [u8; 64],
    encoded: Vec<u8>,
}

impl Ed25519Cert {
    /// Build and sign a certificate. With `include_signing_key`, the
    /// signed-with-ed25519-key extension (flags 0, as C writes it) carries
    /// the signer's public key; type-4 certs MUST have it (§1.4).
    pub fn sign(
        cert_type: u8,
        key_type: u8,
        certified_key: [u8; 32],
        expiration_hours: u32,
        include_signing_key: bool,
        signer: &Ed25519Keypair,
    ) -> Self {
        let mut out = Vec::with_capacity(HEADER_LEN + 36 + SIG_LEN);
        out.push(1);
        out.push(cert_type);
        out.extend_from_slice(&expiration_hours.to_be_bytes());
        out.push(key_type);
        out.extend_from_slice(&certified_key);
        let signing_key = include_signing_key.then(|| signer.public_bytes());
        match signing_key {
            Some(k) => {
                out.push(1);
                out.extend_from_slice(&32u16.to_be_bytes());
                out.push(EXT_SIGNED_WITH_ED25519_KEY);
                out.push(0);
                out.extend_from_slice(&k);
            }
            None => out.push(0),
        }
        let signature = signer.sign(&out);
        out.extend_from_slice(&signature);
        Self {
            cert_type,
            expiration_hours,
            key_type,
            certified_key,
            signing_key,
            signature,
            encoded: out,
        }
    }

    /// Decode strictly: version 1, every length checked, no trailing bytes,
    /// unknown extensions with AFFECTS_VALIDATION rejected
    /// (ed25519_cert.trunnel; torcert.c:tor_cert_parse). Does not check the
    /// signature or expiry: see [`Ed25519Cert::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CertError> {
        let len = bytes.len();
        let trunc = |what| CertError::Truncated { what, len };
        let (header, mut rest) = bytes
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(trunc("header"))?;
        // VERSION, CERT_TYPE, EXPIRATION, CERT_KEY_TYPE, CERTIFIED_KEY, N_EXTENSIONS.
        let [version, cert_type, e0, e1, e2, e3, key_type, key @ .., n] = header;
        if *version != 1 {
            return Err(CertError::BadVersion(*version));
        }
        let expiration_hours = u32::from_be_bytes([*e0, *e1, *e2, *e3]);
        let mut signing_key = None;
        for _ in 0..*n {
            let ([a, b, ext_type, flags], after) = rest
                .split_first_chunk::<4>()
                .ok_or(trunc("extension header"))?;
            let ext_len = usize::from(u16::from_be_bytes([*a, *b]));
            let (data, after) = after
                .split_at_checked(ext_len)
                .ok_or(trunc("extension body"))?;
            rest = after;
            if *ext_type == EXT_SIGNED_WITH_ED25519_KEY {
                let k: [u8; 32] = data
                    .try_into()
                    .map_err(|_| CertError::BadSigningKeyExtension(ext_len))?;
                if signing_key.replace(k).is_some() {
                    return Err(CertError::DuplicateSigningKeyExtension);
                }
            } else if flags & EXT_FLAG_AFFECTS_VALIDATION != 0 {
                return Err(CertError::UnknownCriticalExtension {
                    ext_type: *ext_type,
                });
            }
        }
        let (signature, trailing) = rest
            .split_first_chunk::<SIG_LEN>()
            .ok_or(trunc("signature"))?;
        if !trailing.is_empty() {
            return Err(CertError::TrailingBytes(trailing.len()));
        }
        Ok(Self {
            cert_type: *cert_type,
            expiration_hours,
            key_type: *key_type,
            certified_key: *key,
            signing_key,
            signature: *signature,
            encoded: bytes.to_vec(),
        })
    }

    /// Check the signature. `key` is the expected signer; if the cert
    /// carries a signed-with-key extension it must name the same key. With
    /// `key == None` the extension's key is used (torcert.c:
    /// tor_cert_get_checkable_sig).
    pub fn verify_signature(&self, key: Option<&[u8; 32]>) -> Result<(), CertError> {
        let signer = match (key, &self.signing_key) {
            (Some(k), Some(ext)) if k != ext => {
                return Err(CertError::WrongSigningKey {
                    got: hex::encode(ext),
                    expected: hex::encode(k),
                });
            }
            (Some(k), _) => k,
            (None, Some(ext)) => ext,
            (None, None) => return Err(CertError::NoSigningKey),
        };
        let signed = self
            .encoded
            .get(..self.encoded.len().saturating_sub(SIG_LEN))
            .unwrap_or(&[]);
        if ed25519_verify(signer, signed, &self.signature) {
            Ok(())
        } else {
            Err(CertError::BadSignature {
                cert_type: self.cert_type,
            })
        }
    }

    /// Expired at `now`? C: `now > expiration*3600` fails, no slop
    /// (torcert.c:tor_cert_checksig).
    pub fn check_not_expired(&self, now: SystemTime) -> Result<(), CertError> {
        if now > self.expires_at() {
            Err(CertError::Expired {
                cert_type: self.cert_type,
                expiration_hours: self.expiration_hours,
            })
        } else {
            Ok(())
        }
    }

    /// Signature and expiry together.
    pub fn verify(&self, key: Option<&[u8; 32]>, now: SystemTime) -> Result<(), CertError> {
        self.check_not_expired(now)?;
        self.verify_signature(key)
    }

    /// Insist on a CERT_TYPE and CERT_KEY_TYPE. Type-5 certs may also say
    /// key type 0x01: early C tor wrote that, and cert-spec A.4 asks parsers
    /// to tolerate it.
    pub fn expect_type(&self, cert_type: u8, key_type: u8) -> Result<(), CertError> {
        let key_ok = self.key_type == key_type
            || (cert_type == CERT_TYPE_SIGNING_LINK && self.key_type == KEY_TYPE_ED25519);
        if self.cert_type == cert_type && key_ok {
            Ok(())
        } else {
            Err(CertError::WrongType {
                expected: cert_type,
                got: self.cert_type,
                expected_key_type: key_type,
                got_key_type: self.key_type,
            })
        }
    }

    /// CERT_TYPE.
    pub fn cert_type(&self) -> u8 {
        self.cert_type
    }
    /// CERT_KEY_TYPE.
    pub fn key_type(&self) -> u8 {
        self.key_type
    }
    /// EXPIRATION (hours since the epoch).
    pub fn expiration_hours(&self) -> u32 {
        self.expiration_hours
    }
    /// The instant the cert expires.
    pub fn expires_at(&self) -> SystemTime {
        hours_to_time(self.expiration_hours)
    }
    /// CERTIFIED_KEY.
    pub fn certified_key(&self) -> &[u8; 32] {
        &self.certified_key
    }
    /// Key from the signed-with-ed25519-key extension, if present.
    pub fn signing_key(&self) -> Option<&[u8; 32]> {
        self.signing_key.as_ref()
    }
    /// The encoded certificate.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::rsa::tests::test_rng;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn expiration_is_ceil_hours() {
        assert_eq!(expiration_hours(t(3600), Duration::ZERO), 1);
        assert_eq!(expiration_hours(t(3601), Duration::ZERO), 2);
        assert_eq!(expiration_hours(t(0), Duration::from_secs(7200)), 2);
    }

    #[test]
    fn sign_decode_verify_roundtrip() {
        let mut rng = test_rng(3);
        let id = Ed25519Keypair::generate(&mut rng);
        let sk = Ed25519Keypair::generate(&mut rng);
        let c = Ed25519Cert::sign(4, 1, sk.public_bytes(), 500_000, true, &id);
        assert_eq!(c.as_bytes().len(), 40 + 36 + 64);
        let d = Ed25519Cert::decode(c.as_bytes()).unwrap();
        assert_eq!(d, c);
        assert_eq!(d.signing_key(), Some(&id.public_bytes()));
        d.verify(None, t(500_000 * 3600)).unwrap();
        d.verify(Some(&id.public_bytes()), t(0)).unwrap();
        assert!(matches!(
            d.verify(Some(&sk.public_bytes()), t(0)),
            Err(CertError::WrongSigningKey { .. })
        ));
        assert!(matches!(
            d.verify(None, t(500_000 * 3600 + 1)),
            Err(CertError::Expired { .. })
        ));
        let c5 = Ed25519Cert::sign(5, 3, [7; 32], 10, false, &sk);
        assert_eq!(c5.verify_signature(None), Err(CertError::NoSigningKey));
        c5.verify_signature(Some(&sk.public_bytes())).unwrap();
        c5.expect_type(5, 3).unwrap();
        assert!(c5.expect_type(6, 1).is_err());
        let mut bad = c5.as_bytes().to_vec();
        bad[10] ^= 1;
        let bad = Ed25519Cert::decode(&bad).unwrap();
        assert!(matches!(
            bad.verify_signature(Some(&sk.public_bytes())),
            Err(CertError::BadSignature { .. })
        ));
    }

    #[test]
    fn strict_decoding() {
        let mut rng = test_rng(4);
        let k = Ed25519Keypair::generate(&mut rng);
        let c = Ed25519Cert::sign(4, 1, [1; 32], 1, true, &k);
        let b = c.as_bytes();
        for cut in 0..b.len() {
            assert!(
                matches!(
                    Ed25519Cert::decode(&b[..cut]),
                    Err(CertError::Truncated { .. })
                ),
                "cut {cut}"
            );
        }
        let mut v = b.to_vec();
        v.push(0);
        assert_eq!(Ed25519Cert::decode(&v), Err(CertError::TrailingBytes(1)));
        let mut v = b.to_vec();
        v[0] = 2;
        assert_eq!(Ed25519Cert::decode(&v), Err(CertError::BadVersion(2)));
        // Unknown extension: ignored without the flag, fatal with it.
        let mut body = b[..39].to_vec();
        body.extend_from_slice(&[1, 0, 2, 0x99, 0, 0xaa, 0xbb]);
        body.extend_from_slice(&[0; 64]);
        let d = Ed25519Cert::decode(&body).unwrap();
        assert_eq!(d.signing_key(), None);
        body[43] = EXT_FLAG_AFFECTS_VALIDATION;
        assert_eq!(
            Ed25519Cert::decode(&body),
            Err(CertError::UnknownCriticalExtension { ext_type: 0x99 })
        );
    }

    /// Byte layout of cert-spec §2.1 (C tor's own type-4 certs are decoded
    /// and verified in tests/keys_ctor.rs).
    #[test]
    fn layout_matches_spec() {
        let mut rng = test_rng(5);
        let k = Ed25519Keypair::generate(&mut rng);
        let c = Ed25519Cert::sign(0x0A, 1, [9; 32], 0x0102_0304, false, &k);
        let b = c.as_bytes();
        assert_eq!(&b[..7], &[1, 0x0A, 1, 2, 3, 4, 1]);
        assert_eq!(&b[7..39], &[9; 32]);
        assert_eq!(b[39], 0);
        assert_eq!(b.len(), 40 + 64);
    }
}
