//! Key derivation for the circuit handshakes: KDF-TOR (CREATE_FAST), the
//! HKDF-SHA256 expansion of ntor, and the SHA3-256 / SHAKE-256 helpers of
//! ntor-v3 (ENCAP, tweaked hashes, the XOF).
//!
//! This module owns only the derivation primitives; which bytes go in and how
//! the output is split into relay keys is the business of `fast`, `ntor` and
//! `ntor_v3` (requirements.md §3.2–§3.5).

use hkdf::Hkdf;
use sha1::{Digest, Sha1};
use sha2::Sha256;
use sha3::Sha3_256;
use thiserror::Error;
use zeroize::Zeroize;

/// A KDF was asked for more output than it can produce.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("{kdf}: asked for {requested} bytes of key material, at most {max} can be derived")]
pub struct KdfError {
    /// Which KDF refused.
    pub kdf: &'static str,
    /// Output length asked for.
    pub requested: usize,
    /// Largest output the KDF can produce.
    pub max: usize,
}

/// Longest KDF-TOR output: the counter is one byte (tor-spec §5.2.1).
pub const KDF_TOR_MAX: usize = 256 * 20;
/// Longest HKDF-SHA256 output (RFC 5869 §2.3: 255 × HashLen).
pub const HKDF_SHA256_MAX: usize = 255 * 32;

/// KDF-TOR: `K = SHA1(K0 | [00]) | SHA1(K0 | [01]) | …`, truncated to
/// `out.len()` (tor-spec §5.2.1; C tor `crypto_expand_key_material_TAP`).
pub fn kdf_tor(k0: &[u8], out: &mut [u8]) -> Result<(), KdfError> {
    if out.len() > KDF_TOR_MAX {
        return Err(KdfError {
            kdf: "KDF-TOR",
            requested: out.len(),
            max: KDF_TOR_MAX,
        });
    }
    for (counter, chunk) in (0u8..=255).zip(out.chunks_mut(20)) {
        let mut h = Sha1::new();
        h.update(k0);
        h.update([counter]);
        let mut block: [u8; 20] = h.finalize().into();
        chunk.copy_from_slice(&block[..chunk.len()]);
        block.zeroize();
    }
    Ok(())
}

/// HKDF-SHA256 as ntor uses it: extract with `salt` over `ikm`, then expand
/// with `info` into `out` (RFC 5869; C tor
/// `crypto_expand_key_material_rfc5869_sha256(key_in, salt, info, out)`).
pub fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), KdfError> {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    hk.expand(info, out).map_err(|_| KdfError {
        kdf: "HKDF-SHA256",
        requested: out.len(),
        max: HKDF_SHA256_MAX,
    })
}

/// Length of the tor1 relay key material: Df(20) | Db(20) | Kf(16) | Kb(16)
/// (requirements.md §3.5; C tor `CPATH_KEY_MATERIAL_LEN`).
pub const TOR1_KEY_LEN: usize = 72;
/// Length of KH (the value that proves the key, and the rendezvous nonce).
pub const KH_LEN: usize = 20;

/// What a circuit handshake yields for a tor1 circuit: the relay key
/// material and KH. Wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct CircuitKeys {
    /// Df | Db | Kf | Kb, input of `tor1::Tor1RelayCrypto::new`.
    pub tor1: [u8; TOR1_KEY_LEN],
    /// KH (CREATE_FAST proof of the key) / rendezvous nonce.
    pub kh: [u8; KH_LEN],
}

impl CircuitKeys {
    /// Split `tor1 | kh`, the order ntor and ntor-v3 derive them in.
    pub fn from_tor1_then_kh(material: &[u8; TOR1_KEY_LEN + KH_LEN]) -> Self {
        let mut keys = Self {
            tor1: [0; TOR1_KEY_LEN],
            kh: [0; KH_LEN],
        };
        let (a, b) = material.split_at(TOR1_KEY_LEN);
        keys.tor1.copy_from_slice(a);
        keys.kh.copy_from_slice(b);
        keys
    }
}

impl Drop for CircuitKeys {
    fn drop(&mut self) {
        self.tor1.zeroize();
        self.kh.zeroize();
    }
}

impl core::fmt::Debug for CircuitKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CircuitKeys(..)")
    }
}

/// What ntor-v3 gives a CGO hop: the 160 bytes of relay key material,
/// forward then backward (relay_crypto.c:cgo_pair_init). KH follows them
/// in the KDF's output and is not needed by an exit. Wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct CgoKeys(pub [u8; super::cgo::CGO_KEY_MATERIAL_LEN]);

impl Drop for CgoKeys {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl core::fmt::Debug for CgoKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CgoKeys(..)")
    }
}

/// ENCAP(s) = u64 big-endian length of `s` (prop332 §"Notation").
pub fn encap_len(s: &[u8]) -> [u8; 8] {
    (s.len() as u64).to_be_bytes()
}

/// An incremental SHA3-256 that also knows ENCAP, the shape every ntor-v3
/// hash takes: `H(ENCAP(tweak) | …)`.
#[derive(Clone, Default)]
pub struct Sha3Writer(Sha3_256);

impl Sha3Writer {
    /// A hash that starts with `ENCAP(tweak)`.
    pub fn with_tweak(tweak: &[u8]) -> Self {
        let mut w = Self::default();
        w.encap(tweak);
        w
    }
    /// Absorb raw bytes.
    pub fn put(&mut self, data: &[u8]) -> &mut Self {
        Digest::update(&mut self.0, data);
        self
    }
    /// Absorb `ENCAP(data)` = length (u64 BE) then the bytes.
    pub fn encap(&mut self, data: &[u8]) -> &mut Self {
        Digest::update(&mut self.0, encap_len(data));
        Digest::update(&mut self.0, data);
        self
    }
    /// The 32-byte digest.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// SHAKE-256 rate in bytes (1088-bit rate, FIPS 202 §6.2).
const SHAKE256_RATE: usize = 136;

/// SHAKE-256 (FIPS 202) on the Keccak-f[1600] permutation. ntor-v3 uses it
/// as its KDF (prop332: `KDF = SHAKE256`). Absorb with [`Shake256::put`] /
/// [`Shake256::encap`], then [`Shake256::finish`] gives a reader.
#[derive(Clone, Default)]
pub struct Shake256 {
    state: [u64; 25],
    /// Bytes of the current block already absorbed (0..RATE).
    pos: usize,
}

impl Drop for Shake256 {
    fn drop(&mut self) {
        self.state.zeroize();
    }
}

fn permute(state: &mut [u64; 25]) {
    keccak::Keccak::new().with_f1600(|f| f(state));
}

fn xor_byte(state: &mut [u64; 25], pos: usize, b: u8) {
    // Lanes are little-endian (FIPS 202 §B.1); pos < RATE < 200.
    if let Some(lane) = state.get_mut(pos / 8) {
        *lane ^= u64::from(b) << (8 * (pos % 8));
    }
}

impl Shake256 {
    /// A SHAKE-256 instance whose input starts with `ENCAP(tweak)`.
    pub fn with_tweak(tweak: &[u8]) -> Self {
        let mut s = Self::default();
        s.encap(tweak);
        s
    }
    /// Absorb raw bytes.
    pub fn put(&mut self, data: &[u8]) -> &mut Self {
        for &b in data {
            xor_byte(&mut self.state, self.pos, b);
            self.pos += 1;
            if self.pos == SHAKE256_RATE {
                permute(&mut self.state);
                self.pos = 0;
            }
        }
        self
    }
    /// Absorb `ENCAP(data)`.
    pub fn encap(&mut self, data: &[u8]) -> &mut Self {
        self.put(&encap_len(data));
        self.put(data)
    }
    /// Pad (SHAKE domain bits `1111` then pad10*1) and switch to squeezing.
    pub fn finish(mut self) -> ShakeReader {
        xor_byte(&mut self.state, self.pos, 0x1f);
        xor_byte(&mut self.state, SHAKE256_RATE - 1, 0x80);
        permute(&mut self.state);
        ShakeReader {
            state: self.state,
            pos: 0,
        }
    }
}

/// The squeezing side of [`Shake256`]: an endless keystream.
pub struct ShakeReader {
    state: [u64; 25],
    /// Bytes of the current block already output.
    pos: usize,
}

impl Drop for ShakeReader {
    fn drop(&mut self) {
        self.state.zeroize();
    }
}

impl ShakeReader {
    /// Fill `out` with the next bytes of output.
    pub fn read(&mut self, out: &mut [u8]) {
        for o in out.iter_mut() {
            if self.pos == SHAKE256_RATE {
                permute(&mut self.state);
                self.pos = 0;
            }
            let lane = self.state.get(self.pos / 8).copied().unwrap_or(0);
            *o = (lane >> (8 * (self.pos % 8))) as u8;
            self.pos += 1;
        }
    }
    /// The next `N` bytes.
    pub fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.read(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    /// C tor src/test/test_crypto.c `test_crypto_kdf_TAP` (
    /// "generated by a python script"); also arti tor-proto ll/kdf.rs.
    #[test]
    fn kdf_tor_vectors() {
        let cases: [(&[u8], &str); 3] = [
            (
                b"",
                "5ba93c9db0cff93f52b521d7420e43f6eda2784fbf8b4530d8
                 d246dd74ac53a13471bba17941dff7c4ea21bb365bbeeaf5f2
                 c654883e56d11e43c44e9842926af7ca0a8cca12604f945414
                 f07b01e13da42c6cf1de3abfdea9b95f34687cbbe92b9a7383",
            ),
            (
                b"Tor",
                "776c6214fc647aaa5f683c737ee66ec44f03d0372e1cce6922
                 7950f236ddf1e329a7ce7c227903303f525a8c6662426e8034
                 870642a6dabbd41b5d97ec9bf2312ea729992f48f8ea2d0ba8
                 3f45dfda1a80bdc8b80de01b23e3e0ffae099b3e4ccf28dc28",
            ),
            (
                b"AN ALARMING ITEM TO FIND ON A MONTHLY AUTO-DEBIT NOTICE",
                "a340b5d126086c3ab29c2af4179196dbf95e1c72431419d331
                 4844bf8f6afb6098db952b95581fb6c33625709d6f4400b8e7
                 ace18a70579fad83c0982ef73f89395bcc39493ad53a685854
                 daf2ba9b78733b805d9a6824c907ee1dba5ac27a1e466d4d10",
            ),
        ];
        for (input, expect) in cases {
            let mut out = [0u8; 100];
            kdf_tor(input, &mut out).unwrap();
            assert_eq!(out.to_vec(), h(expect));
        }
        let mut too_long = vec![0u8; KDF_TOR_MAX + 1];
        assert!(kdf_tor(b"x", &mut too_long).is_err());
    }

    /// C tor src/test/test_crypto.c `test_crypto_hkdf_sha256` (ntor_ref.py);
    /// also arti tor-proto ll/kdf.rs `testvec_ntor1_kdf`.
    #[test]
    fn hkdf_sha256_ntor_vectors() {
        let salt = b"ntor-curve25519-sha256-1:key_extract";
        let info = b"ntor-curve25519-sha256-1:key_expand";
        let cases: [(&[u8], &str); 2] = [
            (
                b"Tor",
                "5521492a85139a8d9107a2d5c0d9c91610d0f95989975ebee6
                 c02a4f8d622a6cfdf9b7c7edd3832e2760ded1eac309b76f8d
                 66c4a3c4d6225429b3a016e3c3d45911152fc87bc2de9630c3
                 961be9fdb9f93197ea8e5977180801926d3321fa21513e59ac",
            ),
            (
                b"AN ALARMING ITEM TO FIND ON YOUR CREDIT-RATING STATEMENT",
                "a2aa9b50da7e481d30463adb8f233ff06e9571a0ca6ab6df0f
                 b206fa34e5bc78d063fc291501beec53b36e5a0e434561200c
                 5f8bd13e0f88b3459600b4dc21d69363e2895321c06184879d
                 94b18f078411be70b767c7fc40679a9440a0c95ea83a23efbf",
            ),
        ];
        for (input, expect) in cases {
            let mut out = [0u8; 100];
            hkdf_sha256(input, salt, info, &mut out).unwrap();
            assert_eq!(out.to_vec(), h(expect));
        }
    }

    /// SHAKE256("") from FIPS 202 examples / NIST CAVP; the second vector is
    /// the one arti tor-proto ll/kdf.rs `testvec_shake_kdf` uses (CAVP
    /// SHAKE256ShortMsg). The third checks multi-block absorb and squeeze
    /// against the split-input form.
    #[test]
    fn shake256_vectors() {
        let mut r = Shake256::default().finish();
        let mut out = [0u8; 32];
        r.read(&mut out);
        assert_eq!(
            out.to_vec(),
            h("46b9dd2b0ba88d13233b3feb743eeb243fcd52ea62b81b82b50c27646ed5762f")
        );

        let input = h("76891a7bcc6c04490035b743152f64a8dd2ea18ab472b8d36ecf45858d0b0046");
        let expect = h("e8447df87d01beeb724c9a2a38ab00fcc24e9bd17860e673b021222d621a7810e5d3");
        let mut s = Shake256::default();
        s.put(&input);
        let mut out = vec![0u8; expect.len()];
        s.finish().read(&mut out);
        assert_eq!(out, expect);

        let long: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut a = Shake256::default();
        a.put(&long);
        let mut b = Shake256::default();
        for piece in long.chunks(7) {
            b.put(piece);
        }
        let (mut ra, mut rb) = (a.finish(), b.finish());
        let mut oa = vec![0u8; 500];
        ra.read(&mut oa);
        let mut ob = vec![0u8; 500];
        for piece in ob.chunks_mut(33) {
            rb.read(piece);
        }
        assert_eq!(oa, ob);
    }

    #[test]
    fn sha3_writer_encap() {
        // ENCAP is an 8-byte big-endian length prefix.
        assert_eq!(encap_len(b"abc"), [0, 0, 0, 0, 0, 0, 0, 3]);
        let mut w = Sha3Writer::with_tweak(b"t");
        w.put(b"x");
        let mut plain = Sha3_256::new();
        Digest::update(&mut plain, [0, 0, 0, 0, 0, 0, 0, 1, b't', b'x']);
        let expect: [u8; 32] = plain.finalize().into();
        assert_eq!(w.finish(), expect);
        // SHA3-256("") (FIPS 202).
        assert_eq!(
            Sha3Writer::default().finish().to_vec(),
            h("a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a")
        );
    }
}
