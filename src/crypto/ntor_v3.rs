#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! The ntor-v3 circuit handshake (CREATE2 HTYPE 3, prop332): relay side,
//! the client side tests and benchmarks use, and (in `negotiate`) the
//! extension-list codec with oxit's circuit-parameter policy.
//!
//! Owns only the handshake computation; the caller decides what the client's
//! message means through a closure (normally [`negotiate_circ_params`]).
//! Requirements: requirements.md §3.3; C tor
//! `onion_ntor_v3.c:onion_skin_ntor3_server_handshake_part1/part2`.

mod negotiate;

pub use negotiate::{
    EXT_CC_FIELD_REQUEST, EXT_CC_FIELD_RESPONSE, EXT_SUBPROTO, Extension, Negotiated,
    NegotiationError, encode_extensions, negotiate, negotiate_circ_params, parse_extensions,
};

use aes::Aes256;
use ctr::Ctr128BE;
use ctr::cipher::{KeyIvInit, StreamCipher};
use rand::CryptoRng;
use subtle::{Choice, ConstantTimeEq};
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use super::cgo::CGO_KEY_MATERIAL_LEN;
use super::kdf::{CgoKeys, CircuitKeys, KH_LEN, Sha3Writer, Shake256, TOR1_KEY_LEN};
use super::ntor::NtorOnionKeys;

/// The verification string for circuit extension
/// (onion_crypto.c:NTOR3_CIRC_VERIFICATION; 14 bytes, no NUL).
pub const NTOR3_CIRC_VERIFICATION: &[u8] = b"circuit extend";

/// ID(32) | B(32) | X(32) | MAC(32) with an empty message.
pub const NTOR3_MIN_CLIENT_LEN: usize = 128;
/// Y(32) | AUTH(32) with an empty message.
pub const NTOR3_MIN_REPLY_LEN: usize = 64;

const PROTOID: &[u8] = b"ntor3-curve25519-sha3_256-1";
const T_MSGKDF: &[u8] = b"ntor3-curve25519-sha3_256-1:kdf_phase1";
const T_MSGMAC: &[u8] = b"ntor3-curve25519-sha3_256-1:msg_mac";
const T_KEY_SEED: &[u8] = b"ntor3-curve25519-sha3_256-1:key_seed";
const T_VERIFY: &[u8] = b"ntor3-curve25519-sha3_256-1:verify";
const T_FINAL: &[u8] = b"ntor3-curve25519-sha3_256-1:kdf_final";
const T_AUTH: &[u8] = b"ntor3-curve25519-sha3_256-1:auth_final";

/// Why an ntor-v3 handshake failed. On the relay side every variant means
/// DESTROY with reason PROTOCOL ([`Ntor3Error::destroy_reason`]).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Ntor3Error {
    /// HDATA shorter than its fixed fields.
    #[error("ntor-v3 {what}: need at least {min} bytes, got {got}")]
    TooShort {
        /// "client handshake" or "server reply".
        what: &'static str,
        /// Minimum length.
        min: usize,
        /// Length received.
        got: usize,
    },
    /// ID is not our Ed25519 identity.
    #[error("ntor-v3 client handshake: ID {got} is not our Ed25519 identity")]
    WrongId {
        /// The ID sent, hex.
        got: String,
    },
    /// B is none of our onion keys.
    #[error("ntor-v3 client handshake: B {got} is not one of our onion keys")]
    UnknownKey {
        /// The B sent, hex.
        got: String,
    },
    /// A Diffie-Hellman output was all zero.
    #[error("ntor-v3 handshake: all-zero Diffie-Hellman output")]
    ZeroDh,
    /// The client's MAC did not verify (or the key was unknown).
    #[error("ntor-v3 client handshake: message MAC does not verify")]
    BadMac,
    /// The relay refused the client's message.
    #[error("ntor-v3 client message refused: {0}")]
    Refused(#[from] NegotiationError),
    /// Client side: the relay's AUTH did not verify.
    #[error("ntor-v3 server reply: AUTH does not verify")]
    BadAuth,
}

impl Ntor3Error {
    /// The DESTROY reason a relay sends (tor-spec §5.4; C tor closes with
    /// END_CIRC_REASON_TORPROTOCOL on any handshake failure).
    pub fn destroy_reason(&self) -> u8 {
        1
    }
}

/// What the relay sends back and keeps.
#[derive(Debug)]
pub struct Ntor3ServerOutput {
    /// CREATED2 HDATA: Y | AUTH | encrypted server message.
    pub reply: Vec<u8>,
    /// tor1 key material and KH.
    pub keys: CircuitKeys,
    /// The key material instead, when the handshake negotiated CGO.
    pub cgo: CgoKeys,
}

fn aes256_ctr(key: &[u8; 32], data: &mut [u8]) {
    let mut c = Ctr128BE::<Aes256>::new(key.into(), &[0u8; 16].into());
    c.apply_keystream(data);
}

/// Phase 1: (ENC_K1, MAC_K1) from Xb, then the MAC hash primed with
/// ENCAP(t_msg_mac) | ENCAP(MAC_K1) | ID | B | X.
fn phase1(
    xb: &[u8; 32],
    id: &[u8; 32],
    x: &[u8; 32],
    b: &[u8; 32],
    ver: &[u8],
) -> ([u8; 32], Sha3Writer) {
    let mut kdf = Shake256::with_tweak(T_MSGKDF);
    kdf.put(xb).put(id).put(x).put(b).put(PROTOID).encap(ver);
    let mut r = kdf.finish();
    let enc_k1: [u8; 32] = r.take();
    let mut mac_k1: [u8; 32] = r.take();
    let mut mac = Sha3Writer::with_tweak(T_MSGMAC);
    mac.encap(&mac_k1).put(id).put(b).put(x);
    mac_k1.zeroize();
    (enc_k1, mac)
}

/// Phase 2, shared by both sides: key seed, verify, ENC_KEY, relay keys.
/// The KDF's stream is cut for both relay cryptos; what was negotiated
/// picks one (onion_crypto.c: the length follows `params_out->crypto_alg`).
struct Phase2 {
    verify: [u8; 32],
    enc_key: [u8; 32],
    keys: CircuitKeys,
    cgo: CgoKeys,
}

impl Drop for Phase2 {
    fn drop(&mut self) {
        self.verify.zeroize();
        self.enc_key.zeroize();
    }
}

/// secret_input without the verification string: six 32-byte values,
/// PROTOID and the string's 8-byte length.
const SECRET_INPUT_FIXED_LEN: usize = 32 * 6 + PROTOID.len() + 8;

#[allow(clippy::too_many_arguments)]
fn phase2(
    xy: &[u8; 32],
    xb: &[u8; 32],
    id: &[u8; 32],
    b: &[u8; 32],
    x: &[u8; 32],
    y: &[u8; 32],
    ver: &[u8],
) -> Phase2 {
    // A capacity hint: saturating is harmless.
    let mut si = Vec::with_capacity(SECRET_INPUT_FIXED_LEN.saturating_add(ver.len()));
    si.extend_from_slice(xy);
    si.extend_from_slice(xb);
    si.extend_from_slice(id);
    si.extend_from_slice(b);
    si.extend_from_slice(x);
    si.extend_from_slice(y);
    si.extend_from_slice(PROTOID);
    si.extend_from_slice(&super::kdf::encap_len(ver));
    si.extend_from_slice(ver);
    let mut seed = Sha3Writer::with_tweak(T_KEY_SEED);
    seed.put(&si);
    let mut key_seed = seed.finish();
    let mut v = Sha3Writer::with_tweak(T_VERIFY);
    v.put(&si);
    let verify = v.finish();
    si.zeroize();
    let mut kdf = Shake256::with_tweak(T_FINAL);
    kdf.put(&key_seed);
    key_seed.zeroize();
    let mut r = kdf.finish();
    let enc_key: [u8; 32] = r.take();
    let mut material: [u8; CGO_KEY_MATERIAL_LEN + KH_LEN] = r.take();
    // Both prefixes exist: the array is longer than either.
    let keys = CircuitKeys::from_tor1_then_kh(
        material
            .first_chunk()
            .unwrap_or(&[0; TOR1_KEY_LEN + KH_LEN]),
    );
    let cgo = CgoKeys(*material.first_chunk().unwrap_or(&[0; CGO_KEY_MATERIAL_LEN]));
    material.zeroize();
    Phase2 {
        verify,
        enc_key,
        keys,
        cgo,
    }
}

#[allow(clippy::too_many_arguments)]
fn auth(
    verify: &[u8; 32],
    id: &[u8; 32],
    b: &[u8; 32],
    y: &[u8; 32],
    x: &[u8; 32],
    mac: &[u8; 32],
    server_msg: &[u8],
) -> [u8; 32] {
    let mut a = Sha3Writer::with_tweak(T_AUTH);
    a.put(verify)
        .put(id)
        .put(b)
        .put(y)
        .put(x)
        .put(mac)
        .encap(server_msg);
    a.put(PROTOID).put(b"Server");
    a.finish()
}

/// Relay side of ntor-v3.
///
/// `reply_fn` gets the decrypted client message and returns the plaintext
/// reply message, or refuses (normally [`negotiate_circ_params`]). It is
/// called only when the client's MAC verifies, as in C tor (part1 fails
/// before the message is processed).
pub fn server_handshake<F>(
    hdata: &[u8],
    my_ed_id: &[u8; 32],
    keys: &NtorOnionKeys,
    verification: &[u8],
    rng: &mut impl CryptoRng,
    reply_fn: F,
) -> Result<Ntor3ServerOutput, Ntor3Error>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, NegotiationError>,
{
    let y = StaticSecret::random_from_rng(&mut *rng);
    server_handshake_with_y(hdata, my_ed_id, keys, verification, y, rng, reply_fn)
}

fn server_handshake_with_y<F>(
    hdata: &[u8],
    my_ed_id: &[u8; 32],
    keys: &NtorOnionKeys,
    verification: &[u8],
    y: StaticSecret,
    rng: &mut impl CryptoRng,
    reply_fn: F,
) -> Result<Ntor3ServerOutput, Ntor3Error>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, NegotiationError>,
{
    let too_short = || Ntor3Error::TooShort {
        what: "client handshake",
        min: NTOR3_MIN_CLIENT_LEN,
        got: hdata.len(),
    };
    let (&id, rest) = hdata.split_first_chunk::<32>().ok_or_else(too_short)?;
    let (&b, rest) = rest.split_first_chunk::<32>().ok_or_else(too_short)?;
    let (&x, rest) = rest.split_first_chunk::<32>().ok_or_else(too_short)?;
    let (msg, mac_recv) = rest.split_last_chunk::<32>().ok_or_else(too_short)?;

    // Like C tor, accumulate problems and decide at the end of part 1, so
    // the work done does not depend on which check failed.
    let id_ok = id.ct_eq(my_ed_id);
    let (secret_b, found) = keys.secret_or_junk(&b, rng);
    let x_pub = PublicKey::from(x);
    let xb = secret_b.diffie_hellman(&x_pub);
    let xb_ok = Choice::from(u8::from(xb.was_contributory()));
    let (mut enc_k1, mut mac) = phase1(xb.as_bytes(), &id, &x, &b, verification);
    mac.put(msg);
    let mac_computed = mac.finish();
    let mac_ok = mac_computed.ct_eq(mac_recv);

    if !bool::from(id_ok) {
        enc_k1.zeroize();
        return Err(Ntor3Error::WrongId {
            got: hex::encode(id),
        });
    }
    if !found {
        enc_k1.zeroize();
        return Err(Ntor3Error::UnknownKey {
            got: hex::encode(b),
        });
    }
    if !bool::from(xb_ok) {
        enc_k1.zeroize();
        return Err(Ntor3Error::ZeroDh);
    }
    if !bool::from(mac_ok) {
        enc_k1.zeroize();
        return Err(Ntor3Error::BadMac);
    }
    let mut client_msg = msg.to_vec();
    aes256_ctr(&enc_k1, &mut client_msg);
    enc_k1.zeroize();
    let reply_msg = reply_fn(&client_msg);
    client_msg.zeroize();
    let mut reply_msg = reply_msg?;

    // Part 2.
    let y_pub = PublicKey::from(&y).to_bytes();
    let xy = y.diffie_hellman(&x_pub);
    if !xy.was_contributory() {
        return Err(Ntor3Error::ZeroDh);
    }
    let p2 = phase2(
        xy.as_bytes(),
        xb.as_bytes(),
        &id,
        &b,
        &x,
        &y_pub,
        verification,
    );
    aes256_ctr(&p2.enc_key, &mut reply_msg);
    let auth = auth(&p2.verify, &id, &b, &y_pub, &x, mac_recv, &reply_msg);
    // A capacity hint: saturating is harmless.
    let mut reply = Vec::with_capacity(reply_msg.len().saturating_add(64));
    reply.extend_from_slice(&y_pub);
    reply.extend_from_slice(&auth);
    reply.extend_from_slice(&reply_msg);
    Ok(Ntor3ServerOutput {
        reply,
        keys: p2.keys.clone(),
        cgo: p2.cgo.clone(),
    })
}

/// Client state between CREATE2 and CREATED2 (tests, benchmarks, and later
/// our own circuits).
pub struct Ntor3ClientState {
    x: StaticSecret,
    x_pub: [u8; 32],
    id: [u8; 32],
    b: [u8; 32],
    mac: [u8; 32],
    xb: [u8; 32],
}

impl Drop for Ntor3ClientState {
    fn drop(&mut self) {
        self.xb.zeroize();
    }
}

/// Client side, step 1: HDATA carrying `client_msg` to a relay with
/// Ed25519 identity `relay_id` and onion key `relay_b`.
pub fn client_create(
    rng: &mut impl CryptoRng,
    relay_id: &[u8; 32],
    relay_b: &[u8; 32],
    client_msg: &[u8],
    verification: &[u8],
) -> Result<(Ntor3ClientState, Vec<u8>), Ntor3Error> {
    let x = StaticSecret::random_from_rng(rng);
    client_create_with_x(x, relay_id, relay_b, client_msg, verification)
}

fn client_create_with_x(
    x: StaticSecret,
    relay_id: &[u8; 32],
    relay_b: &[u8; 32],
    client_msg: &[u8],
    verification: &[u8],
) -> Result<(Ntor3ClientState, Vec<u8>), Ntor3Error> {
    let x_pub = PublicKey::from(&x).to_bytes();
    let xb = x.diffie_hellman(&PublicKey::from(*relay_b));
    if !xb.was_contributory() {
        return Err(Ntor3Error::ZeroDh);
    }
    let (mut enc_k1, mut mac) = phase1(xb.as_bytes(), relay_id, &x_pub, relay_b, verification);
    let mut msg = client_msg.to_vec();
    aes256_ctr(&enc_k1, &mut msg);
    enc_k1.zeroize();
    mac.put(&msg);
    let mac = mac.finish();
    // A capacity hint: saturating is harmless.
    let mut hdata = Vec::with_capacity(msg.len().saturating_add(NTOR3_MIN_CLIENT_LEN));
    hdata.extend_from_slice(relay_id);
    hdata.extend_from_slice(relay_b);
    hdata.extend_from_slice(&x_pub);
    hdata.extend_from_slice(&msg);
    hdata.extend_from_slice(&mac);
    let st = Ntor3ClientState {
        x,
        x_pub,
        id: *relay_id,
        b: *relay_b,
        mac,
        xb: xb.to_bytes(),
    };
    Ok((st, hdata))
}

/// Client side, step 2: verify the reply; return the relay's (decrypted)
/// message and the keys.
pub fn client_finish(
    state: Ntor3ClientState,
    reply: &[u8],
    verification: &[u8],
) -> Result<(Vec<u8>, CircuitKeys), Ntor3Error> {
    client_finish_all(state, reply, verification).map(|(msg, keys, _)| (msg, keys))
}

/// [`client_finish`], with the key material for CGO too (the client's
/// message says which it asked for).
pub fn client_finish_all(
    state: Ntor3ClientState,
    reply: &[u8],
    verification: &[u8],
) -> Result<(Vec<u8>, CircuitKeys, CgoKeys), Ntor3Error> {
    let too_short = || Ntor3Error::TooShort {
        what: "server reply",
        min: NTOR3_MIN_REPLY_LEN,
        got: reply.len(),
    };
    let (&y, rest) = reply.split_first_chunk::<32>().ok_or_else(too_short)?;
    let (auth_recv, enc_msg) = rest.split_first_chunk::<32>().ok_or_else(too_short)?;
    let xy = state.x.diffie_hellman(&PublicKey::from(y));
    let p2 = phase2(
        xy.as_bytes(),
        &state.xb,
        &state.id,
        &state.b,
        &state.x_pub,
        &y,
        verification,
    );
    let expect = auth(
        &p2.verify,
        &state.id,
        &state.b,
        &y,
        &state.x_pub,
        &state.mac,
        enc_msg,
    );
    if !xy.was_contributory() {
        return Err(Ntor3Error::ZeroDh);
    }
    if !bool::from(expect.ct_eq(auth_recv)) {
        return Err(Ntor3Error::BadAuth);
    }
    let mut msg = enc_msg.to_vec();
    aes256_ctr(&p2.enc_key, &mut msg);
    Ok((msg, p2.keys.clone(), p2.cgo.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::ntor::NtorKeypair;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn hx(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }
    fn h32(s: &str) -> [u8; 32] {
        hx(s).try_into().unwrap()
    }

    /// The vector of arti crates/tor-proto/src/crypto/handshake/ntor_v3.rs
    /// `test_ntor3_testvec` (generated with C tor's ntor3 reference script).
    #[test]
    fn arti_test_vector() {
        let b = h32("4051daa5921cfa2a1c27b08451324919538e79e788a81b38cbed097a5dff454a");
        let id = h32("9fad2af287ef942632833d21f946c6260c33fae6172b60006e86e4a6911753a2");
        let x = h32("b825a3719147bcbe5fb1d0b0fcb9c09e51948048e2e3283d2ab7b45b5ef38b49");
        let y = h32("4865a5b7689dafd978f529291c7171bc159be076b92186405d13220b80e2a053");
        let client_message = hx("68656c6c6f20776f726c64");
        let verification = hx("78797a7a79");
        let server_message = hx("486f6c61204d756e646f");
        let relay = NtorKeypair::from_secret_bytes(b);
        let big_b = relay.public_bytes();
        let onion = NtorOnionKeys {
            current: relay,
            previous: None,
        };

        let (state, hdata) = client_create_with_x(
            StaticSecret::from(x),
            &id,
            &big_b,
            &client_message,
            &verification,
        )
        .unwrap();
        assert_eq!(
            hdata,
            hx(
                "9fad2af287ef942632833d21f946c6260c33fae6172b60006e86e4a6911753a2f8307a2bc1870b00b828bb74dbb8fd88e632a6375ab3bcd1ae706aaa8b6cdd1d252fe9ae91264c91d4ecb8501f79d0387e34ad8ca0f7c995184f7d11d5da4f463bebd9151fd3b47c180abc9e044d53565f04d82bbb3bebed3d06cea65db8be9c72b68cd461942088502f67"
            )
        );

        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = None;
        let out = server_handshake_with_y(
            &hdata,
            &id,
            &onion,
            &verification,
            StaticSecret::from(y),
            &mut rng,
            |m| {
                seen = Some(m.to_vec());
                Ok(server_message.clone())
            },
        )
        .unwrap();
        assert_eq!(seen, Some(client_message));
        assert_eq!(
            out.reply,
            hx(
                "4bf4814326fdab45ad5184f5518bd7fae25dc59374062698201a50a22954246d2fc5f8773ca824542bc6cf6f57c7c29bbf4e5476461ab130c5b18ab0a91276651202c3e1e87c0d32054c"
            )
        );
        let (msg, ckeys) = client_finish(state, &out.reply, &verification).unwrap();
        assert_eq!(msg, server_message);
        assert_eq!(ckeys, out.keys);
        // First 92 bytes of the 256-byte keystream in the vector.
        let mut all = out.keys.tor1.to_vec();
        all.extend_from_slice(&out.keys.kh);
        assert_eq!(
            hex::encode(all),
            "9c19b631fd94ed86a817e01f6c80b0743a43f5faebd39cfaa8b00fa8bcc65c3bfeaa403d91acbd68a821bf6ee8504602b094a254392a07737d5662768c7a9fb1b2814bb34780eaee6e867c773e28c212ead563e98a1cd5d5b4576f5e"
        );
    }

    #[test]
    fn roundtrip_with_negotiation_and_failures() {
        let mut rng = StdRng::seed_from_u64(5);
        let onion = NtorOnionKeys {
            current: NtorKeypair::generate(&mut rng),
            previous: Some(NtorKeypair::generate(&mut rng)),
        };
        let id = [9u8; 32];
        let ver = NTOR3_CIRC_VERIFICATION;
        let b_prev = onion.previous.as_ref().unwrap().public_bytes();
        // A 0.4.9 client asking for congestion control: declined with `00`.
        let (st, hdata) = client_create(&mut rng, &id, &b_prev, &[1, 1, 0], ver).unwrap();
        let out =
            server_handshake(&hdata, &id, &onion, ver, &mut rng, negotiate_circ_params).unwrap();
        assert_eq!(out.reply.len(), 65);
        let (msg, ck) = client_finish(st, &out.reply, ver).unwrap();
        assert_eq!(msg, vec![0]);
        assert_eq!(ck, out.keys);

        let b = onion.current.public_bytes();
        // CGO request: refused.
        let (_, hdata) = client_create(&mut rng, &id, &b, &[2, 1, 0, 3, 2, 2, 6], ver).unwrap();
        let e = server_handshake(&hdata, &id, &onion, ver, &mut rng, negotiate_circ_params)
            .unwrap_err();
        assert!(matches!(e, Ntor3Error::Refused(_)));
        // Wrong identity, unknown key, bad MAC, short, wrong verification.
        let (_, hdata) = client_create(&mut rng, &[1; 32], &b, &[0], ver).unwrap();
        let e = server_handshake(&hdata, &id, &onion, ver, &mut rng, negotiate_circ_params);
        assert!(matches!(e, Err(Ntor3Error::WrongId { .. })));
        let (_, hdata) = client_create(&mut rng, &id, &[5; 32], &[0], ver).unwrap();
        let e = server_handshake(&hdata, &id, &onion, ver, &mut rng, negotiate_circ_params);
        assert!(matches!(e, Err(Ntor3Error::UnknownKey { .. })));
        let (_, mut hdata) = client_create(&mut rng, &id, &b, &[0], ver).unwrap();
        hdata[96] ^= 1;
        let e = server_handshake(&hdata, &id, &onion, ver, &mut rng, negotiate_circ_params);
        assert_eq!(e.unwrap_err(), Ntor3Error::BadMac);
        let e = server_handshake(
            &hdata[..127],
            &id,
            &onion,
            ver,
            &mut rng,
            negotiate_circ_params,
        );
        assert!(matches!(e, Err(Ntor3Error::TooShort { .. })));
        let (_, hdata) = client_create(&mut rng, &id, &b, &[0], b"other").unwrap();
        let e = server_handshake(&hdata, &id, &onion, ver, &mut rng, negotiate_circ_params);
        assert_eq!(e.unwrap_err(), Ntor3Error::BadMac);
        // Client detects a tampered reply.
        let (st, hdata) = client_create(&mut rng, &id, &b, &[0], ver).unwrap();
        let mut out =
            server_handshake(&hdata, &id, &onion, ver, &mut rng, negotiate_circ_params).unwrap();
        out.reply[64] ^= 1;
        assert_eq!(
            client_finish(st, &out.reply, ver).unwrap_err(),
            Ntor3Error::BadAuth
        );
    }
}
