//! RSA keys the way Tor uses them: the RSA-1024 relay identity
//! (KP_relayid_rsa) and the dummy TAP onion key (requirements.md §2.1).
//!
//! This module owns key generation, the PKCS#1 PEM form C tor writes to
//! `keys/secret_id_key` and `keys/secret_onion_key`, the PKCS#1
//! `RSAPublicKey` DER that Tor hashes into fingerprints, and Tor's "raw
//! digest" PKCS#1 v1.5 signatures (type-1 padding over the bare digest, no
//! DigestInfo; C: crypto_pk_private_sign, requirements.md §2.2).
//! It does not own X.509 (see `x509`) or reading files (see `keyfile`).

use std::fmt;

use rsa::pkcs1::{
    DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey, LineEnding,
};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, PrivateKey, PublicKey};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Size of the relay identity and TAP onion keys (tor-spec §0.3).
pub const TOR_RSA_BITS: usize = 1024;
/// The only public exponent Tor uses (tor-spec §0.3; C: crypto_pk_generate_key
/// with e = 65537; routerparse.c checks it for onion keys).
pub const TOR_RSA_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// DER DigestInfo prefix for SHA-1 (RFC 8017 §9.2 note 1), used to check
/// ordinary PKCS#1 v1.5 signatures (X.509 sha1WithRSAEncryption).
pub const DIGEST_INFO_SHA1: [u8; 15] = [
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
/// DER DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1).
pub const DIGEST_INFO_SHA256: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Errors from RSA key handling.
#[derive(Debug, thiserror::Error)]
pub enum RsaError {
    /// The RSA library failed to generate a key.
    #[error("generating a {bits}-bit RSA key failed: {source}")]
    Generate {
        /// Requested size.
        bits: usize,
        /// Library error.
        source: rsa::Error,
    },
    /// A PKCS#1 private key (PEM or DER) did not parse.
    #[error("bad PKCS#1 RSA private key: {0}")]
    PrivateKey(String),
    /// A PKCS#1 RSAPublicKey DER did not parse.
    #[error("bad PKCS#1 RSAPublicKey DER: {0}")]
    PublicKey(String),
    /// The modulus has the wrong size.
    #[error("RSA key has a {got}-bit modulus, expected exactly {expected} bits")]
    WrongSize {
        /// Bits found.
        got: usize,
        /// Bits required.
        expected: usize,
    },
    /// The public exponent is not 65537.
    #[error("RSA key has public exponent 0x{got}, expected 65537")]
    WrongExponent {
        /// Exponent found (hex).
        got: String,
    },
    /// Signing failed (digest too long for the key, or an internal error).
    #[error("RSA signing of a {len}-byte digest failed: {source}")]
    Sign {
        /// Length of the data to sign.
        len: usize,
        /// Library error.
        source: rsa::Error,
    },
    /// A signature did not verify.
    #[error("RSA signature does not verify")]
    BadSignature,
}

/// SHA-1 of a relay's RSA identity key in PKCS#1 DER: the legacy relay
/// fingerprint (tor-spec §0.3; C: crypto_pk_get_digest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RsaIdentity([u8; 20]);

impl RsaIdentity {
    /// Wrap 20 raw bytes.
    pub fn from_bytes(bytes: [u8; 20]) -> Self {
        Self(bytes)
    }

    /// The 20 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// Uppercase hex without spaces, as in the `fingerprint` file and
    /// consensus lookups (C: crypto_pk_get_fingerprint(.., 0)).
    pub fn hex_upper(&self) -> String {
        hex::encode_upper(self.0)
    }

    /// Uppercase hex in groups of four separated by spaces, as in the
    /// descriptor's `fingerprint` line (C: crypto_pk_get_fingerprint(.., 1)).
    pub fn spaced(&self) -> String {
        let hex = self.hex_upper();
        let groups: Vec<&str> = hex
            .as_bytes()
            .chunks(4)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        groups.join(" ")
    }
}

impl fmt::Debug for RsaIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaIdentity({})", self.hex_upper())
    }
}

impl fmt::Display for RsaIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex_upper())
    }
}

/// An RSA public key with its PKCS#1 DER encoding cached (every use in Tor
/// hashes or sends that DER).
#[derive(Clone)]
pub struct RsaPublic {
    key: PublicKey,
    der: Vec<u8>,
}

impl fmt::Debug for RsaPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaPublic({} bits, {})", self.bits(), self.identity())
    }
}

impl PartialEq for RsaPublic {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}
impl Eq for RsaPublic {}

impl RsaPublic {
    fn from_key(key: PublicKey) -> Result<Self, RsaError> {
        let der = key
            .to_pkcs1_der()
            .map_err(|e| RsaError::PublicKey(e.to_string()))?
            .as_bytes()
            .to_vec();
        Ok(Self { key, der })
    }

    /// Parse a PKCS#1 `RSAPublicKey` DER of any size the library accepts.
    /// Use [`RsaPublic::from_der_tor`] for keys a peer sent.
    pub fn from_der(der: &[u8]) -> Result<Self, RsaError> {
        let key = PublicKey::from_pkcs1_der(der).map_err(|e| RsaError::PublicKey(e.to_string()))?;
        Self::from_key(key)
    }

    /// Parse a peer's key and insist on exactly `bits` bits and e = 65537
    /// (x509_openssl.c:tor_tls_cert_is_valid checks `RSA_bits == 1024`).
    pub fn from_der_tor(der: &[u8], bits: usize) -> Result<Self, RsaError> {
        let k = Self::from_der(der)?;
        k.check_tor_params(bits)?;
        Ok(k)
    }

    /// Check the modulus size and the public exponent.
    pub fn check_tor_params(&self, bits: usize) -> Result<(), RsaError> {
        if self.bits() != bits {
            return Err(RsaError::WrongSize {
                got: self.bits(),
                expected: bits,
            });
        }
        let e = self.key.e_bytes();
        let e = strip_zeros(&e);
        if e != TOR_RSA_EXPONENT {
            return Err(RsaError::WrongExponent {
                got: hex::encode(e),
            });
        }
        Ok(())
    }

    /// Exact bit length of the modulus.
    pub fn bits(&self) -> usize {
        let n = self.key.n_bytes();
        let n = strip_zeros(&n);
        match n.first() {
            Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
            None => 0,
        }
    }

    /// PKCS#1 `RSAPublicKey` DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-1 of the DER: the relay fingerprint.
    pub fn identity(&self) -> RsaIdentity {
        RsaIdentity(Sha1::digest(&self.der).into())
    }

    /// SHA-256 of the DER (CID/SID in AUTHENTICATE, requirements.md §1.7).
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.der).into()
    }

    /// Verify a Tor raw-digest signature: PKCS#1 v1.5 type-1 padding around
    /// `data` itself, no DigestInfo (C: crypto_pk_public_checksig).
    pub fn verify_raw(&self, data: &[u8], sig: &[u8]) -> Result<(), RsaError> {
        self.key
            .verify(Pkcs1v15Sign::new_unprefixed(), data, sig)
            .map_err(|_| RsaError::BadSignature)
    }

    /// Verify an ordinary PKCS#1 v1.5 signature: `prefix` is the DigestInfo
    /// of the hash used ([`DIGEST_INFO_SHA1`], [`DIGEST_INFO_SHA256`]).
    pub fn verify_digest_info(
        &self,
        prefix: &[u8],
        digest: &[u8],
        sig: &[u8],
    ) -> Result<(), RsaError> {
        let mut block = Vec::with_capacity(prefix.len() + digest.len());
        block.extend_from_slice(prefix);
        block.extend_from_slice(digest);
        self.verify_raw(&block, sig)
    }

    /// The library key, for callers that need another scheme.
    pub fn inner(&self) -> &PublicKey {
        &self.key
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or(&[])
}

/// An RSA private key (identity or TAP onion key).
#[derive(Clone)]
pub struct RsaPrivate {
    key: PrivateKey,
    public: RsaPublic,
}

impl fmt::Debug for RsaPrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaPrivate({:?})", self.public)
    }
}

impl RsaPrivate {
    fn from_key(key: PrivateKey) -> Result<Self, RsaError> {
        let public = RsaPublic::from_key(key.to_public_key())?;
        Ok(Self { key, public })
    }

    /// Generate a key of `bits` bits with e = 65537.
    pub fn generate<R: rand::CryptoRng + ?Sized>(
        rng: &mut R,
        bits: usize,
    ) -> Result<Self, RsaError> {
        let key =
            PrivateKey::new(rng, bits).map_err(|source| RsaError::Generate { bits, source })?;
        Self::from_key(key)
    }

    /// Generate an RSA-1024 key, the size of Tor identity and TAP keys.
    pub fn generate_1024<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Result<Self, RsaError> {
        Self::generate(rng, TOR_RSA_BITS)
    }

    /// Parse `-----BEGIN RSA PRIVATE KEY-----` PEM (PKCS#1), the form C tor
    /// writes with PEM_write_bio_RSAPrivateKey (crypto_rsa_openssl.c).
    pub fn from_pkcs1_pem(pem: &str) -> Result<Self, RsaError> {
        // C tor writes the PEM string *with its terminating NUL*
        // (crypto_pk_write_private_key_to_filename), and files may carry
        // stray whitespace: the PEM decoder wants exactly one block.
        let pem = pem.trim_matches(|c: char| c == '\0' || c.is_ascii_whitespace());
        let key =
            PrivateKey::from_pkcs1_pem(pem).map_err(|e| RsaError::PrivateKey(e.to_string()))?;
        Self::from_key(key)
    }

    /// Parse PKCS#1 `RSAPrivateKey` DER.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, RsaError> {
        let key =
            PrivateKey::from_pkcs1_der(der).map_err(|e| RsaError::PrivateKey(e.to_string()))?;
        Self::from_key(key)
    }

    /// PKCS#1 PEM with LF line endings and 64-column base64, as C tor writes.
    pub fn to_pkcs1_pem(&self) -> Result<Zeroizing<String>, RsaError> {
        self.key
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|e| RsaError::PrivateKey(e.to_string()))
    }

    /// PKCS#1 `RSAPrivateKey` DER.
    pub fn to_pkcs1_der(&self) -> Result<Zeroizing<Vec<u8>>, RsaError> {
        let doc = self
            .key
            .to_pkcs1_der()
            .map_err(|e| RsaError::PrivateKey(e.to_string()))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// The public half.
    pub fn public(&self) -> &RsaPublic {
        &self.public
    }

    /// Tor raw-digest signature over `data` (usually a SHA-1 or SHA-256
    /// digest): PKCS#1 v1.5 type-1 padding, no DigestInfo
    /// (C: crypto_pk_private_sign). `rng` only blinds the private operation.
    pub fn sign_raw<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        data: &[u8],
    ) -> Result<Vec<u8>, RsaError> {
        self.key
            .sign_with_rng(rng, Pkcs1v15Sign::new_unprefixed(), data)
            .map_err(|source| RsaError::Sign {
                len: data.len(),
                source,
            })
    }

    /// The library key, for the X.509 builder.
    pub fn inner(&self) -> &PrivateKey {
        &self.key
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;

    pub(crate) fn test_rng(seed: u64) -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(seed)
    }

    #[test]
    fn generate_pem_roundtrip_and_sign() {
        let mut rng = test_rng(1);
        let k = RsaPrivate::generate_1024(&mut rng).unwrap();
        assert_eq!(k.public().bits(), 1024);
        k.public().check_tor_params(1024).unwrap();
        let pem = k.to_pkcs1_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        let k2 = RsaPrivate::from_pkcs1_pem(&pem).unwrap();
        // As C tor writes it: with a trailing NUL.
        let k3 = RsaPrivate::from_pkcs1_pem(&format!("{}\0", &*pem)).unwrap();
        assert_eq!(k3.public(), k.public());
        assert_eq!(k.public(), k2.public());
        let digest = Sha1::digest(b"hello");
        let sig = k2.sign_raw(&mut rng, &digest).unwrap();
        assert_eq!(sig.len(), 128);
        k.public().verify_raw(&digest, &sig).unwrap();
        assert!(
            k.public()
                .verify_raw(&Sha1::digest(b"other"), &sig)
                .is_err()
        );
        let pk = RsaPublic::from_der_tor(k.public().der(), 1024).unwrap();
        assert_eq!(pk.identity(), k.public().identity());
        assert!(matches!(
            RsaPublic::from_der_tor(k.public().der(), 2048),
            Err(RsaError::WrongSize { got: 1024, .. })
        ));
    }

    #[test]
    fn raw_signature_is_plain_type1_padding() {
        // PKCS#1 v1.5 with a DigestInfo is exactly "raw" padding over
        // DigestInfo || hash (RFC 8017 §9.2), and signatures are
        // deterministic: so the raw form over prefix||hash must equal the
        // library's prefixed signature. That pins that sign_raw adds nothing.
        let mut rng = test_rng(2);
        let k = RsaPrivate::generate_1024(&mut rng).unwrap();
        let h = Sha256::digest(b"abc");
        let raw = k
            .sign_raw(&mut rng, &[&DIGEST_INFO_SHA256[..], &h[..]].concat())
            .unwrap();
        let std = k.inner().sign(Pkcs1v15Sign::new::<Sha256>(), &h).unwrap();
        assert_eq!(raw, std);
        k.public()
            .verify_digest_info(&DIGEST_INFO_SHA256, &h, &std)
            .unwrap();
    }

    #[test]
    fn fingerprint_formats() {
        let id = RsaIdentity::from_bytes([
            0xAB, 0xCD, 0xEF, 0x01, 0x23, 0x45, 0x67, 0x89, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
            0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb,
        ]);
        assert_eq!(id.hex_upper(), "ABCDEF012345678900112233445566778899AABB");
        assert_eq!(
            id.spaced(),
            "ABCD EF01 2345 6789 0011 2233 4455 6677 8899 AABB"
        );
        assert_eq!(id.to_string(), id.hex_upper());
    }
}
