//! The CREATE_FAST handshake: relay side, and the client side tests use.
//!
//! Owns only the key computation; the CREATE_FAST/CREATED_FAST cells are
//! proto's. Requirements: requirements.md §3.4; C tor
//! `onion_fast.c:fast_server_handshake`, `fast_client_handshake`.

use rand::CryptoRng;
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroize;

use super::kdf::{CircuitKeys, KH_LEN, TOR1_KEY_LEN, kdf_tor};

/// X and Y are 20 random bytes each.
pub const FAST_KEY_LEN: usize = 20;
/// CREATED_FAST payload: Y(20) | KH(20).
pub const FAST_REPLY_LEN: usize = 40;

/// Why CREATE_FAST failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FastError {
    /// The payload is shorter than its fixed field.
    #[error("CREATE_FAST {what}: need {expected} bytes, got {got}")]
    TooShort {
        /// "X" or "Y | KH".
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// Client side: KH does not match, the relay derived other keys.
    #[error("CREATED_FAST: KH does not match the derived key")]
    BadKh,
}

impl FastError {
    /// DESTROY reason: PROTOCOL (1).
    pub fn destroy_reason(&self) -> u8 {
        1
    }
}

/// K = KDF-TOR(X | Y), split as KH(20) | Df | Db | Kf | Kb (tor-spec §5.2.1).
fn derive(x: &[u8; FAST_KEY_LEN], y: &[u8; FAST_KEY_LEN]) -> CircuitKeys {
    let mut k0 = [0u8; 2 * FAST_KEY_LEN];
    k0[..FAST_KEY_LEN].copy_from_slice(x);
    k0[FAST_KEY_LEN..].copy_from_slice(y);
    let mut k = [0u8; KH_LEN + TOR1_KEY_LEN];
    // 92 bytes is far below KDF-TOR's limit; the error arm cannot happen.
    let _ = kdf_tor(&k0, &mut k);
    let mut keys = CircuitKeys {
        tor1: [0; TOR1_KEY_LEN],
        kh: [0; KH_LEN],
    };
    keys.kh.copy_from_slice(&k[..KH_LEN]);
    keys.tor1.copy_from_slice(&k[KH_LEN..]);
    k0.zeroize();
    k.zeroize();
    keys
}

fn first20(payload: &[u8], what: &'static str) -> Result<[u8; FAST_KEY_LEN], FastError> {
    payload
        .get(..FAST_KEY_LEN)
        .and_then(|s| <[u8; FAST_KEY_LEN]>::try_from(s).ok())
        .ok_or(FastError::TooShort {
            what,
            expected: FAST_KEY_LEN,
            got: payload.len(),
        })
}

/// Relay side: `payload` is the CREATE_FAST payload (X then padding, which
/// is ignored). Returns the CREATED_FAST body Y | KH and the keys.
pub fn server_handshake(
    payload: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<([u8; FAST_REPLY_LEN], CircuitKeys), FastError> {
    let x = first20(payload, "X")?;
    let mut y = [0u8; FAST_KEY_LEN];
    rng.fill_bytes(&mut y);
    let keys = derive(&x, &y);
    let mut reply = [0u8; FAST_REPLY_LEN];
    reply[..FAST_KEY_LEN].copy_from_slice(&y);
    reply[FAST_KEY_LEN..].copy_from_slice(&keys.kh);
    Ok((reply, keys))
}

/// Client state: X. Wiped on drop.
pub struct FastClientState([u8; FAST_KEY_LEN]);

impl Drop for FastClientState {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Client side, step 1: X (the CREATE_FAST payload before padding).
pub fn client_create(rng: &mut impl CryptoRng) -> (FastClientState, [u8; FAST_KEY_LEN]) {
    let mut x = [0u8; FAST_KEY_LEN];
    rng.fill_bytes(&mut x);
    (FastClientState(x), x)
}

/// Client side, step 2: check KH in the CREATED_FAST body, derive keys.
pub fn client_finish(state: FastClientState, reply: &[u8]) -> Result<CircuitKeys, FastError> {
    let body = reply.get(..FAST_REPLY_LEN).ok_or(FastError::TooShort {
        what: "Y | KH",
        expected: FAST_REPLY_LEN,
        got: reply.len(),
    })?;
    let y = first20(body, "Y | KH")?;
    let keys = derive(&state.0, &y);
    if !bool::from(keys.kh.ct_eq(&body[FAST_KEY_LEN..])) {
        return Err(FastError::BadKh);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use sha1::{Digest, Sha1};

    #[test]
    fn roundtrip_and_layout() {
        let mut rng = StdRng::seed_from_u64(4);
        let (st, x) = client_create(&mut rng);
        let mut cell = [0u8; 509];
        cell[..20].copy_from_slice(&x);
        let (reply, skeys) = server_handshake(&cell, &mut rng).unwrap();
        let ckeys = client_finish(st, &reply).unwrap();
        assert_eq!(ckeys, skeys);

        // Clear-box check of tor-spec §5.2.1: K = SHA1(X|Y|00) | SHA1(X|Y|01) | ...
        let mut k = Vec::new();
        for i in 0u8..5 {
            let mut h = Sha1::new();
            h.update(x);
            h.update(&reply[..20]);
            h.update([i]);
            k.extend_from_slice(&h.finalize());
        }
        assert_eq!(&reply[20..], &k[..20]);
        assert_eq!(&skeys.kh[..], &k[..20]);
        assert_eq!(&skeys.tor1[..], &k[20..92]);
    }

    #[test]
    fn failures() {
        let mut rng = StdRng::seed_from_u64(5);
        assert!(matches!(
            server_handshake(&[0u8; 19], &mut rng),
            Err(FastError::TooShort {
                expected: 20,
                got: 19,
                ..
            })
        ));
        let (st, x) = client_create(&mut rng);
        let (mut reply, _) = server_handshake(&x, &mut rng).unwrap();
        reply[39] ^= 1;
        assert_eq!(client_finish(st, &reply).unwrap_err(), FastError::BadKh);
        let (st, _) = client_create(&mut rng);
        assert!(matches!(
            client_finish(st, &[0u8; 39]),
            Err(FastError::TooShort { .. })
        ));
    }
}
