#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! Ed25519 keypairs held in C tor's 64-byte *expanded* secret form.
//!
//! C tor never stores a 32-byte seed: `ed25519_*_secret_key` files hold
//! SHA-512(seed) with the scalar half clamped (crypto_ed25519.c:
//! ed25519_seckey_write_to_file; requirements.md §2.3), so every signature
//! here is made from the expanded key (ed25519-dalek `hazmat::raw_sign`).
//! Also owns the curve25519 → Ed25519 derivation that signs the
//! ntor-onion-key-crosscert (crypto_ed25519.c:
//! ed25519_keypair_from_curve25519_keypair; requirements.md §7.1).

use std::fmt;

use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

/// An Ed25519 keypair whose secret is the 64-byte expanded key.
pub struct Ed25519Keypair {
    expanded: Zeroizing<[u8; 64]>,
    secret: ExpandedSecretKey,
    public: VerifyingKey,
}

impl fmt::Debug for Ed25519Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519Keypair({})", hex::encode(self.public.as_bytes()))
    }
}

impl Clone for Ed25519Keypair {
    fn clone(&self) -> Self {
        Self::from_expanded(&self.expanded)
    }
}

impl Ed25519Keypair {
    /// Generate a fresh key: random seed, expanded and clamped the standard
    /// way (RFC 8032 §5.1.5), the seed then forgotten as C tor does.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut seed[..]);
        let mut expanded = Zeroizing::new([0u8; 64]);
        expanded.copy_from_slice(&Sha512::digest(&seed[..]));
        clamp(&mut expanded);
        Self::from_expanded(&expanded)
    }

    /// Use a 64-byte expanded secret (scalar ‖ hash prefix) as stored by C tor.
    pub fn from_expanded(expanded: &[u8; 64]) -> Self {
        let secret = ExpandedSecretKey::from_bytes(expanded);
        let public = VerifyingKey::from(&secret);
        Self {
            expanded: Zeroizing::new(*expanded),
            secret,
            public,
        }
    }

    /// The 64-byte expanded secret, as written to `ed25519_*_secret_key`.
    pub fn expanded_secret(&self) -> &[u8; 64] {
        &self.expanded
    }

    /// The public key.
    pub fn public(&self) -> &VerifyingKey {
        &self.public
    }

    /// The public key bytes.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// Sign `msg` (plain Ed25519, no context).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        raw_sign::<Sha512>(&self.secret, msg, &self.public).to_bytes()
    }

    /// Derive the Ed25519 keypair C tor signs the ntor-onion-key-crosscert
    /// with: scalar = the curve25519 secret, hash prefix =
    /// SHA-512(secret ‖ "Derive high part of ed25519 key from curve25519 key"
    /// ‖ NUL)[0..32]. Returns the keypair and the sign bit (public[31] >> 7)
    /// that the descriptor's `ntor-onion-key-crosscert` line carries
    /// (crypto_ed25519.c:ed25519_keypair_from_curve25519_keypair).
    pub fn from_curve25519_secret(curve_secret: &[u8; 32]) -> (Self, u8) {
        // C's sizeof(string) includes the terminating NUL.
        const TWEAK: &[u8] = b"Derive high part of ed25519 key from curve25519 key\0";
        let mut h = Sha512::new();
        h.update(curve_secret);
        h.update(TWEAK);
        let out = h.finalize();
        // The secret, then the first half of the hash: zip stops at 64 bytes.
        let mut expanded = Zeroizing::new([0u8; 64]);
        for (e, s) in expanded.iter_mut().zip(curve_secret.iter().chain(&out)) {
            *e = *s;
        }
        let kp = Self::from_expanded(&expanded);
        let sign_bit = kp.public_bytes()[31] >> 7;
        (kp, sign_bit)
    }
}

/// Verify a plain Ed25519 signature. Cofactorless and without the
/// small-order-key rejection of `verify_strict`, closer to the ref10/donna
/// checks C tor runs (they only require a canonical S).
pub fn ed25519_verify(public: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    let Ok(pk) = VerifyingKey::from_bytes(public) else {
        return false;
    };
    pk.verify(msg, &Signature::from_bytes(sig)).is_ok()
}

fn clamp(expanded: &mut [u8; 64]) {
    expanded[0] &= 248;
    expanded[31] &= 127;
    expanded[31] |= 64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::montgomery::MontgomeryPoint;

    /// RFC 8032 §7.1 TEST 2: the same signature from the expanded key.
    #[test]
    fn rfc8032_vector_from_expanded() {
        let seed: [u8; 32] =
            hex::decode("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
                .unwrap()
                .try_into()
                .unwrap();
        let mut expanded = [0u8; 64];
        expanded.copy_from_slice(&Sha512::digest(seed));
        clamp(&mut expanded);
        let kp = Ed25519Keypair::from_expanded(&expanded);
        assert_eq!(
            hex::encode(kp.public_bytes()),
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
        );
        let sig = kp.sign(&[0x72]);
        assert_eq!(
            hex::encode(sig),
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        );
        assert!(ed25519_verify(&kp.public_bytes(), &[0x72], &sig));
        assert!(!ed25519_verify(&kp.public_bytes(), &[0x73], &sig));
    }

    /// The derived key's public point maps to the curve25519 public key
    /// (birational map u = (1+y)/(1-y)), which is what C asserts with
    /// ed25519_public_key_from_curve25519_public_key.
    #[test]
    fn curve25519_derivation_matches_montgomery_public() {
        let mut rng = crate::crypto::rsa::tests::test_rng(7);
        for _ in 0..8 {
            let mut s = [0u8; 32];
            rand::Rng::fill_bytes(&mut rng, &mut s);
            s[0] &= 248;
            s[31] &= 127;
            s[31] |= 64;
            let curve_pub = MontgomeryPoint::mul_base_clamped(s);
            let (kp, sign_bit) = Ed25519Keypair::from_curve25519_secret(&s);
            let ed = curve_pub.to_edwards(sign_bit).unwrap().compress();
            assert_eq!(ed.to_bytes(), kp.public_bytes());
            let sig = kp.sign(b"msg");
            assert!(ed25519_verify(&kp.public_bytes(), b"msg", &sig));
        }
    }
}
