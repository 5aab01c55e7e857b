#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! The ntor circuit handshake (CREATE2 HTYPE 2): relay side, and the client
//! side that tests and benchmarks drive the relay with.
//!
//! Owns the onion-key types (`NtorKeypair`, `NtorOnionKeys`) that ntor-v3
//! shares. Does not own cell framing (proto) nor key files and rotation
//! (`keys`, the control plane). Requirements: requirements.md §3.2; C tor
//! `onion_ntor.c:onion_skin_ntor_server_handshake`.

use hmac::{Hmac, KeyInit, Mac};
use rand::CryptoRng;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use super::kdf::{CircuitKeys, KH_LEN, TOR1_KEY_LEN, hkdf_sha256};

/// Client HDATA length: NODEID(20) | KEYID(32) | X(32).
pub const NTOR_ONIONSKIN_LEN: usize = 84;
/// Server reply length: Y(32) | AUTH(32).
pub const NTOR_REPLY_LEN: usize = 64;

const PROTOID: &[u8] = b"ntor-curve25519-sha256-1";
const T_MAC: &[u8] = b"ntor-curve25519-sha256-1:mac";
const T_KEY: &[u8] = b"ntor-curve25519-sha256-1:key_extract";
const T_VERIFY: &[u8] = b"ntor-curve25519-sha256-1:verify";
const M_EXPAND: &[u8] = b"ntor-curve25519-sha256-1:key_expand";

/// A curve25519 onion key (KP_ntor / KS_ntor). The secret is wiped on drop
/// by x25519-dalek.
#[derive(Clone)]
pub struct NtorKeypair {
    secret: StaticSecret,
    public: PublicKey,
}

impl NtorKeypair {
    /// A fresh random keypair.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        Self::from_secret(StaticSecret::random_from_rng(rng))
    }
    /// The keypair of a stored secret scalar (as C tor's key files hold it).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Self::from_secret(StaticSecret::from(secret))
    }
    fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }
    /// The public key B, as published in descriptors and sent as KEYID.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.public.to_bytes()
    }
    /// The secret scalar, for writing key files.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }
    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl core::fmt::Debug for NtorKeypair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "NtorKeypair(public={})",
            hex::encode(self.public.as_bytes())
        )
    }
}

/// The onion keys a relay answers to: the current one and, after a
/// rotation, the previous one (C tor `construct_ntor_key_map`).
#[derive(Clone, Debug)]
pub struct NtorOnionKeys {
    /// The key in our current descriptor.
    pub current: NtorKeypair,
    /// The key we published before the last rotation, still accepted.
    pub previous: Option<NtorKeypair>,
}

impl NtorOnionKeys {
    /// The keypair whose public key is `b`, if we hold one. Both keys are
    /// compared so the time taken does not say which one matched.
    /// The secret for onion key `b`, or a fresh junk secret when `b` is not
    /// one of ours, so that a handshake naming an unknown key does the same
    /// work as one naming ours and fails only at the end (no oracle; C:
    /// onion_skin_ntor_server_handshake, onion_skin_ntor3_server_handshake_part1).
    /// The flag says whether `b` was ours.
    pub(crate) fn secret_or_junk(
        &self,
        b: &[u8; 32],
        rng: &mut impl CryptoRng,
    ) -> (StaticSecret, bool) {
        match self.find(b) {
            Some(kp) => (kp.secret().clone(), true),
            None => (StaticSecret::random_from_rng(rng), false),
        }
    }

    pub fn find(&self, b: &[u8; 32]) -> Option<&NtorKeypair> {
        let cur = self.current.public.as_bytes().ct_eq(b);
        let prev = match &self.previous {
            Some(p) => p.public.as_bytes().ct_eq(b),
            None => Choice::from(0),
        };
        if bool::from(cur) {
            Some(&self.current)
        } else if bool::from(prev) {
            self.previous.as_ref()
        } else {
            None
        }
    }
}

/// Why an ntor handshake failed. On the relay side every variant means
/// DESTROY with reason PROTOCOL ([`NtorError::destroy_reason`]).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NtorError {
    /// HDATA is not 84 bytes (tor-spec §5.1.4; onion.c:check_create_cell).
    #[error("ntor client handshake: expected {expected} bytes of HDATA, got {got}")]
    BadLength {
        /// Required length.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// NODEID is not our RSA identity digest.
    #[error("ntor client handshake: NODEID {got} is not our identity")]
    WrongNodeId {
        /// The NODEID the client sent, hex.
        got: String,
    },
    /// A Diffie-Hellman output was all zero (X or Y of small order).
    #[error("ntor handshake: all-zero Diffie-Hellman output")]
    ZeroDh,
    /// Client side: the relay's AUTH did not verify.
    #[error("ntor server reply: AUTH does not verify")]
    BadAuth,
}

impl NtorError {
    /// The DESTROY reason a relay sends for this failure (tor-spec §5.4;
    /// C tor closes with END_CIRC_REASON_TORPROTOCOL).
    pub fn destroy_reason(&self) -> u8 {
        1
    }
}

/// What the relay sends back and keeps after a successful handshake.
#[derive(Debug)]
pub struct NtorServerOutput {
    /// CREATED2 HDATA: Y | AUTH.
    pub reply: [u8; NTOR_REPLY_LEN],
    /// tor1 key material and KH.
    pub keys: CircuitKeys,
}

/// Concatenation helper for the fixed-size transcripts; wiped on drop.
struct Transcript(Vec<u8>);

impl Transcript {
    fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }
    fn put(&mut self, d: &[u8]) -> &mut Self {
        self.0.extend_from_slice(d);
        self
    }
}

impl Drop for Transcript {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// H(x, t) = HMAC-SHA256(key = t, message = x) (tor-spec §5.1.4).
fn h(x: &[u8], t: &[u8]) -> [u8; 32] {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(t) {
        Ok(mut m) => {
            m.update(x);
            m.finalize().into_bytes().into()
        }
        // HMAC takes keys of any length; this arm is unreachable.
        Err(_) => [0; 32],
    }
}

/// secret_input: EXP(X,y) | EXP(X,b) | ID | B | X | Y | PROTOID.
const SECRET_INPUT_LEN: usize = 32 * 5 + 20 + PROTOID.len();
/// auth_input: verify | ID | B | Y | X | PROTOID | "Server".
const AUTH_INPUT_LEN: usize = 32 * 4 + 20 + PROTOID.len() + 6;

/// Both sides share this: secret_input → (AUTH, keys).
/// `xy` = EXP(X,y) = EXP(Y,x), `xb` = EXP(X,b) = EXP(B,x).
fn derive(
    xy: &[u8; 32],
    xb: &[u8; 32],
    id: &[u8; 20],
    b: &[u8; 32],
    x: &[u8; 32],
    y: &[u8; 32],
) -> ([u8; 32], CircuitKeys) {
    let mut si = Transcript::with_capacity(SECRET_INPUT_LEN);
    si.put(xy).put(xb).put(id).put(b).put(x).put(y).put(PROTOID);
    let verify = h(&si.0, T_VERIFY);
    let mut ai = Transcript::with_capacity(AUTH_INPUT_LEN);
    ai.put(&verify)
        .put(id)
        .put(b)
        .put(y)
        .put(x)
        .put(PROTOID)
        .put(b"Server");
    let auth = h(&ai.0, T_MAC);
    let mut material = [0u8; TOR1_KEY_LEN + KH_LEN];
    // 92 bytes is far below the HKDF limit; the error arm cannot happen.
    let _ = hkdf_sha256(&si.0, T_KEY, M_EXPAND, &mut material);
    let keys = CircuitKeys::from_tor1_then_kh(&material);
    material.zeroize();
    (auth, keys)
}

/// Relay side of ntor: answer a CREATE2/EXTEND2 HTYPE 2 `hdata`.
///
/// `my_id` is SHA1 of our RSA identity key (DER). An unknown KEYID runs the
/// whole computation with a random junk key and then fails, so timing does
/// not tell which keys we hold. (C tor does the same computation but then
/// replies; the client cannot verify that reply, so the circuit fails either
/// way. We fail here so that no CREATED2 goes out for a key we lack.)
pub fn server_handshake(
    hdata: &[u8],
    my_id: &[u8; 20],
    keys: &NtorOnionKeys,
    rng: &mut impl CryptoRng,
) -> Result<NtorServerOutput, NtorError> {
    let y = StaticSecret::random_from_rng(&mut *rng);
    server_handshake_with_y(hdata, my_id, keys, y, rng)
}

fn server_handshake_with_y(
    hdata: &[u8],
    my_id: &[u8; 20],
    keys: &NtorOnionKeys,
    y: StaticSecret,
    rng: &mut impl CryptoRng,
) -> Result<NtorServerOutput, NtorError> {
    let skin: &[u8; NTOR_ONIONSKIN_LEN] = hdata.try_into().map_err(|_| NtorError::BadLength {
        expected: NTOR_ONIONSKIN_LEN,
        got: hdata.len(),
    })?;
    let (node_id, rest) = skin.split_at(20);
    let (key_id, x_bytes) = rest.split_at(32);
    // C tor returns early on a wrong NODEID: it is public information.
    if !bool::from(node_id.ct_eq(my_id)) {
        return Err(NtorError::WrongNodeId {
            got: hex::encode(node_id),
        });
    }
    let mut b_arr = [0u8; 32];
    b_arr.copy_from_slice(key_id);
    let mut x_arr = [0u8; 32];
    x_arr.copy_from_slice(x_bytes);

    // An unknown KEYID (say, a key we rotated out) is answered with a
    // CREATED2 made with a junk key, as C tor does: the client cannot verify
    // it and gives up, and nothing tells it which keys we hold
    // (onion_ntor.c:onion_skin_ntor_server_handshake looks keys up with the
    // junk keypair as the default).
    let (secret_b, _ours) = keys.secret_or_junk(&b_arr, rng);
    let x_pub = PublicKey::from(x_arr);
    let y_pub = PublicKey::from(&y);
    let xy = y.diffie_hellman(&x_pub);
    let xb = secret_b.diffie_hellman(&x_pub);
    let zero = !(Choice::from(u8::from(xy.was_contributory()))
        & Choice::from(u8::from(xb.was_contributory())));
    let (auth, circuit_keys) = derive(
        xy.as_bytes(),
        xb.as_bytes(),
        my_id,
        &b_arr,
        &x_arr,
        y_pub.as_bytes(),
    );

    if bool::from(zero) {
        return Err(NtorError::ZeroDh);
    }
    let mut reply = [0u8; NTOR_REPLY_LEN];
    reply[..32].copy_from_slice(y_pub.as_bytes());
    reply[32..].copy_from_slice(&auth);
    Ok(NtorServerOutput {
        reply,
        keys: circuit_keys,
    })
}

/// Client state between CREATE2 and CREATED2. Used by tests and benchmarks
/// (and later by our own circuits, e.g. reachability self-tests).
pub struct NtorClientState {
    x: StaticSecret,
    x_pub: [u8; 32],
    relay_id: [u8; 20],
    relay_b: [u8; 32],
}

/// Client side, step 1: the 84-byte HDATA for a relay with RSA identity
/// digest `relay_id` and ntor onion key `relay_b`.
pub fn client_create(
    rng: &mut impl CryptoRng,
    relay_id: &[u8; 20],
    relay_b: &[u8; 32],
) -> (NtorClientState, [u8; NTOR_ONIONSKIN_LEN]) {
    client_create_with_x(StaticSecret::random_from_rng(rng), relay_id, relay_b)
}

fn client_create_with_x(
    x: StaticSecret,
    relay_id: &[u8; 20],
    relay_b: &[u8; 32],
) -> (NtorClientState, [u8; NTOR_ONIONSKIN_LEN]) {
    let x_pub = PublicKey::from(&x).to_bytes();
    let mut hdata = [0u8; NTOR_ONIONSKIN_LEN];
    hdata[..20].copy_from_slice(relay_id);
    hdata[20..52].copy_from_slice(relay_b);
    hdata[52..].copy_from_slice(&x_pub);
    let st = NtorClientState {
        x,
        x_pub,
        relay_id: *relay_id,
        relay_b: *relay_b,
    };
    (st, hdata)
}

/// Client side, step 2: check the relay's reply and derive the keys.
pub fn client_finish(state: NtorClientState, reply: &[u8]) -> Result<CircuitKeys, NtorError> {
    let reply: &[u8; NTOR_REPLY_LEN] = reply.try_into().map_err(|_| NtorError::BadLength {
        expected: NTOR_REPLY_LEN,
        got: reply.len(),
    })?;
    let (y_bytes, auth) = reply.split_at(32);
    let mut y_arr = [0u8; 32];
    y_arr.copy_from_slice(y_bytes);
    let xy = state.x.diffie_hellman(&PublicKey::from(y_arr));
    let xb = state.x.diffie_hellman(&PublicKey::from(state.relay_b));
    let (expect_auth, keys) = derive(
        xy.as_bytes(),
        xb.as_bytes(),
        &state.relay_id,
        &state.relay_b,
        &state.x_pub,
        &y_arr,
    );
    if !(xy.was_contributory() && xb.was_contributory()) {
        return Err(NtorError::ZeroDh);
    }
    if !bool::from(expect_auth.ct_eq(auth)) {
        return Err(NtorError::BadAuth);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn h32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The vector from C tor's src/test/ntor_ref.py, as arti
    /// crates/tor-proto/src/crypto/handshake/ntor.rs `testvec` carries it.
    #[test]
    fn ntor_ref_vector() {
        let b_sk = h32("4820544f4c4420594f5520444f474954204b454550532048415050454e494e47");
        let b_pk = h32("ccbc8541904d18af08753eae967874749e6149f873de937f57f8fd903a21c471");
        let x_sk = h32("706f6461792069207075742e2e2e2e2e2e2e2e4a454c4c59206f6e2074686973");
        let y_sk = h32("70686520737175697272656c2e2e2e2e2e2e2e2e686173206869732067616d65");
        let y_pk = h32("390480a14362761d6aec1fea840f6e9e928fb2adb7b25c670be1045e35133a37");
        let id: [u8; 20] = hex::decode("69546f6c64596f7541626f75745374616972732e")
            .unwrap()
            .try_into()
            .unwrap();
        let client_hs = hex::decode(
            "69546f6c64596f7541626f75745374616972732eccbc8541904d18af08753eae967874749e6149f873de937f57f8fd903a21c471e65dfdbef8b2635837fe2cebc086a8096eae3213e6830dc407516083d412b078",
        )
        .unwrap();
        let server_hs = hex::decode(
            "390480a14362761d6aec1fea840f6e9e928fb2adb7b25c670be1045e35133a371cbdf68b89923e1f85e8e18ee6e805ea333fe4849c790ffd2670bd80fec95cc8",
        )
        .unwrap();
        let keys = hex::decode(
            "0c62dee7f48893370d0ef896758d35729867beef1a5121df80e00f79ed349af39b51cae125719182f19d932a667dae1afbf2e336e6910e7822223e763afad0a13342157969dc6b79",
        )
        .unwrap();

        let relay = NtorKeypair::from_secret_bytes(b_sk);
        assert_eq!(relay.public_bytes(), b_pk);
        let onion = NtorOnionKeys {
            current: relay,
            previous: None,
        };
        let (state, hdata) = client_create_with_x(StaticSecret::from(x_sk), &id, &b_pk);
        assert_eq!(hdata.to_vec(), client_hs);

        let mut rng = StdRng::seed_from_u64(1);
        let y = StaticSecret::from(y_sk);
        assert_eq!(PublicKey::from(&y).to_bytes(), y_pk);
        let out = server_handshake_with_y(&hdata, &id, &onion, y, &mut rng).unwrap();
        assert_eq!(out.reply.to_vec(), server_hs);

        let ckeys = client_finish(state, &out.reply).unwrap();
        let mut all = out.keys.tor1.to_vec();
        all.extend_from_slice(&out.keys.kh);
        assert_eq!(all[..keys.len()], keys[..]);
        assert_eq!(ckeys, out.keys);
    }

    fn setup(rng: &mut StdRng) -> (NtorOnionKeys, [u8; 20]) {
        let current = NtorKeypair::generate(rng);
        let previous = Some(NtorKeypair::generate(rng));
        (NtorOnionKeys { current, previous }, [7u8; 20])
    }

    #[test]
    fn roundtrip_current_and_previous_key() {
        let mut rng = StdRng::seed_from_u64(2);
        let (onion, id) = setup(&mut rng);
        for kp in [&onion.current, onion.previous.as_ref().unwrap()] {
            let (st, hdata) = client_create(&mut rng, &id, &kp.public_bytes());
            let out = server_handshake(&hdata, &id, &onion, &mut rng).unwrap();
            let ck = client_finish(st, &out.reply).unwrap();
            assert_eq!(ck, out.keys);
        }
    }

    #[test]
    fn failures() {
        let mut rng = StdRng::seed_from_u64(3);
        let (onion, id) = setup(&mut rng);
        let b = onion.current.public_bytes();

        // Wrong NODEID.
        let (_, hdata) = client_create(&mut rng, &[8u8; 20], &b);
        let e = server_handshake(&hdata, &id, &onion, &mut rng).unwrap_err();
        assert!(matches!(e, NtorError::WrongNodeId { .. }));
        assert_eq!(e.destroy_reason(), 1);

        // Unknown KEYID: a reply (as C tor sends) that the client rejects.
        let other = NtorKeypair::generate(&mut rng);
        let (state, hdata) = client_create(&mut rng, &id, &other.public_bytes());
        let out = server_handshake(&hdata, &id, &onion, &mut rng).unwrap();
        assert!(client_finish(state, &out.reply).is_err());

        // All-zero DH: X = 0 (small order point).
        let (_, mut hdata) = client_create(&mut rng, &id, &b);
        hdata[52..].fill(0);
        let e = server_handshake(&hdata, &id, &onion, &mut rng).unwrap_err();
        assert_eq!(e, NtorError::ZeroDh);

        // Bad length.
        let e = server_handshake(&hdata[..83], &id, &onion, &mut rng).unwrap_err();
        assert!(matches!(
            e,
            NtorError::BadLength {
                expected: 84,
                got: 83
            }
        ));

        // Client detects a tampered AUTH.
        let (st, hdata) = client_create(&mut rng, &id, &b);
        let mut out = server_handshake(&hdata, &id, &onion, &mut rng).unwrap();
        out.reply[40] ^= 1;
        assert_eq!(
            client_finish(st, &out.reply).unwrap_err(),
            NtorError::BadAuth
        );
    }
}
