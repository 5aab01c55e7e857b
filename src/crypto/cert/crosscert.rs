//! The RSA→Ed25519 cross-certificate: CERTS type 7 (cert-spec §2.3;
//! link_handshake.trunnel:rsa_ed_crosscert; torcert.c:
//! tor_make_rsa_ed25519_crosscert, rsa_ed25519_crosscert_check).
//!
//! `ED25519_KEY(32) | EXPIRATION(4, hours) | SIGLEN(1) | SIG`, SIG = the RSA
//! identity's raw-digest PKCS#1 v1.5 signature of
//! SHA-256("Tor TLS RSA/Ed25519 cross-certificate" ‖ ED25519_KEY ‖ EXPIRATION).

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::hours_to_time;
use crate::crypto::rsa::{RsaError, RsaPrivate, RsaPublic};

const PREFIX: &[u8] = b"Tor TLS RSA/Ed25519 cross-certificate";

/// Errors from a type-7 crosscert.
#[derive(Debug, thiserror::Error)]
pub enum CrosscertError {
    /// Too short, or SIGLEN disagrees with the length.
    #[error("RSA->Ed25519 crosscert is malformed: {len} bytes, SIGLEN {siglen:?}")]
    Malformed {
        /// Input length.
        len: usize,
        /// SIGLEN if it was reached.
        siglen: Option<u8>,
    },
    /// Certifies another Ed25519 key.
    #[error("RSA->Ed25519 crosscert certifies {got}, expected {expected}")]
    WrongKey {
        /// Key in the cert (hex).
        got: String,
        /// Expected key (hex).
        expected: String,
    },
    /// Expired.
    #[error("RSA->Ed25519 crosscert expired at hour {0}")]
    Expired(u32),
    /// Signature failure.
    #[error("RSA->Ed25519 crosscert signature: {0}")]
    Signature(#[from] RsaError),
}

/// A type-7 cross-certificate with its encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsaEdCrosscert {
    ed_key: [u8; 32],
    expiration_hours: u32,
    encoded: Vec<u8>,
}

fn digest(signed: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(PREFIX);
    h.update(signed);
    h.finalize().into()
}

impl RsaEdCrosscert {
    /// Sign `ed_key` with the RSA identity until `expiration_hours`
    /// (C: CEIL_DIV(now + 6 months, 3600); see [`super::expiration_hours`]).
    pub fn sign<R: rand::CryptoRng + ?Sized>(
        ed_key: [u8; 32],
        expiration_hours: u32,
        rsa_id: &RsaPrivate,
        rng: &mut R,
    ) -> Result<Self, CrosscertError> {
        let mut out = Vec::with_capacity(32 + 4 + 1 + 128);
        out.extend_from_slice(&ed_key);
        out.extend_from_slice(&expiration_hours.to_be_bytes());
        let sig = rsa_id.sign_raw(rng, &digest(&out))?;
        let siglen = u8::try_from(sig.len()).map_err(|_| CrosscertError::Malformed {
            len: sig.len(),
            siglen: None,
        })?;
        out.push(siglen);
        out.extend_from_slice(&sig);
        Ok(Self {
            ed_key,
            expiration_hours,
            encoded: out,
        })
    }

    /// Decode; the whole input must be the cert ("Unparseable or overlong").
    pub fn decode(bytes: &[u8]) -> Result<Self, CrosscertError> {
        let malformed = |siglen| CrosscertError::Malformed {
            len: bytes.len(),
            siglen,
        };
        let siglen = *bytes.get(36).ok_or(malformed(None))?;
        if bytes.len() != 37 + usize::from(siglen) {
            return Err(malformed(Some(siglen)));
        }
        let mut ed_key = [0u8; 32];
        ed_key.copy_from_slice(bytes.get(..32).ok_or(malformed(None))?);
        let mut exp = [0u8; 4];
        exp.copy_from_slice(bytes.get(32..36).ok_or(malformed(None))?);
        Ok(Self {
            ed_key,
            expiration_hours: u32::from_be_bytes(exp),
            encoded: bytes.to_vec(),
        })
    }

    /// Check as C's rsa_ed25519_crosscert_check does: certifies
    /// `expected_ed`, not expired at `now` (expiration*3600 < now fails),
    /// RSA signature by `rsa_id`.
    pub fn verify(
        &self,
        rsa_id: &RsaPublic,
        expected_ed: &[u8; 32],
        now: SystemTime,
    ) -> Result<(), CrosscertError> {
        if &self.ed_key != expected_ed {
            return Err(CrosscertError::WrongKey {
                got: hex::encode(self.ed_key),
                expected: hex::encode(expected_ed),
            });
        }
        if hours_to_time(self.expiration_hours) < now {
            return Err(CrosscertError::Expired(self.expiration_hours));
        }
        let signed = self.encoded.get(..36).unwrap_or(&[]);
        let sig = self.encoded.get(37..).unwrap_or(&[]);
        rsa_id.verify_raw(&digest(signed), sig)?;
        Ok(())
    }

    /// The certified Ed25519 identity.
    pub fn ed_key(&self) -> &[u8; 32] {
        &self.ed_key
    }
    /// EXPIRATION in hours.
    pub fn expiration_hours(&self) -> u32 {
        self.expiration_hours
    }
    /// The instant it expires.
    pub fn expires_at(&self) -> SystemTime {
        hours_to_time(self.expiration_hours)
    }
    /// Encoded bytes, as sent in CERTS.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::rsa::tests::test_rng;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn sign_decode_verify() {
        let mut rng = test_rng(11);
        let rsa = RsaPrivate::generate_1024(&mut rng).unwrap();
        let c = RsaEdCrosscert::sign([5; 32], 1000, &rsa, &mut rng).unwrap();
        assert_eq!(c.as_bytes().len(), 32 + 4 + 1 + 128);
        assert_eq!(c.as_bytes()[36], 128);
        let d = RsaEdCrosscert::decode(c.as_bytes()).unwrap();
        assert_eq!(d, c);
        let at = |h: u64| UNIX_EPOCH + Duration::from_secs(h);
        d.verify(rsa.public(), &[5; 32], at(1000 * 3600)).unwrap();
        assert!(matches!(
            d.verify(rsa.public(), &[5; 32], at(1000 * 3600 + 1)),
            Err(CrosscertError::Expired(1000))
        ));
        assert!(matches!(
            d.verify(rsa.public(), &[6; 32], at(0)),
            Err(CrosscertError::WrongKey { .. })
        ));
        let other = RsaPrivate::generate_1024(&mut rng).unwrap();
        assert!(d.verify(other.public(), &[5; 32], at(0)).is_err());
        let b = c.as_bytes();
        assert!(RsaEdCrosscert::decode(&b[..b.len() - 1]).is_err());
        assert!(RsaEdCrosscert::decode(&[b, &[0]].concat()).is_err());
        assert!(RsaEdCrosscert::decode(&b[..30]).is_err());
    }
}
