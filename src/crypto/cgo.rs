//! Counter Galois Onion (CGO, proposal 359) relay-cell cryptography for
//! one hop of a circuit: the relay's two directions, and the client's
//! counterpart for tests, benchmarks and the load generator.
//!
//! Owns the per-hop state (keys, nonce N, last tag T′) and the 16-byte tag
//! at the front of the cell body. Does not parse the v1 relay message that
//! follows the tag (proto) nor decide what to do with an unrecognized cell.
//!
//! The algorithm is C tor 0.4.9's (`relay_crypto_cgo.c`), whose code wins
//! over the proposal text; requirements.md §4.3 digests it:
//! - POLYVAL is RFC 8452's (little-endian field elements, no length block).
//! - ET (an LRW2 tweakable block cipher) encrypts the 16-byte tag X_L under
//!   `mask = POLYVAL(KU, T′ ‖ cmd ‖ X_R)`: `Y_L = mask ⊕ AES(KB, X_L ⊕ mask)`.
//! - PRF: AES-128-CTR under K from the IV `POLYVAL(B, T)` with the low six
//!   bits of its last byte cleared (a 128-bit big-endian counter); t = 0
//!   XORs X_R, t = 1 starts 31 blocks later and gives the next keys.
//! - UIV+ = ET on the tag, then X_R ⊕= PRF(Y_L, 0). Relays only ever
//!   encrypt (UIV+ is non-malleable for encryption only); clients decrypt.
//! - `cmd` is the channel cell's command (RELAY 3, RELAY_EARLY 9): turning
//!   one into the other breaks the cell.
//! - UPDATE: the 80 bytes of PRF(input, 1) become KB ‖ KU ‖ K ‖ B ‖ N.
//!
//! AES-128 throughout (`CGO_AES_BITS 128` in relay_crypto.c).

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128Dec, Aes128Enc};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use self::polyval::{PolyvalKey, PolyvalOne};
use super::tor1::CellBody;
use super::tor1::ctr::Aes128CtrStream;

/// Bytes of the tag at the front of a CGO cell body.
pub const CGO_TAG_LEN: usize = 16;
/// Key material per direction: KB, KU, K, B (16 each), then N (16).
const DIRECTION_KEY_LEN: usize = 80;
/// Key material a CGO hop takes from the ntor-v3 KDF: forward first, then
/// backward (relay_crypto.c:cgo_pair_init).
pub const CGO_KEY_MATERIAL_LEN: usize = 2 * DIRECTION_KEY_LEN;
/// Where the PRF's t = 1 stream starts, in blocks after t = 0's.
const T1_OFFSET: u8 = 31;

/// The tag of a cell recognized or originated on a CGO circuit: what an
/// authenticated SENDME carries there (16 bytes, not tor1's 20).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CgoTag(pub [u8; CGO_TAG_LEN]);

/// Which way UIV+ runs: relays encrypt, clients decrypt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Relay,
    Client,
}

/// ET's AES: only the direction the role uses is keyed.
enum EtAes {
    Enc(Aes128Enc),
    Dec(Aes128Dec),
}

impl EtAes {
    fn new(kb: &[u8; 16], role: Role) -> Self {
        match role {
            Role::Relay => Self::Enc(Aes128Enc::new(kb.into())),
            Role::Client => Self::Dec(Aes128Dec::new(kb.into())),
        }
    }

    /// A new key, same direction.
    fn rekey(&mut self, kb: &[u8; 16]) {
        match self {
            Self::Enc(a) => *a = Aes128Enc::new(kb.into()),
            Self::Dec(a) => *a = Aes128Dec::new(kb.into()),
        }
    }
}

/// The keys of UIV+ for one direction: ET (KB, KU) and PRF (K, B).
struct Uiv {
    et_aes: EtAes,
    /// POLYVAL keyed with KU.
    et_hash: PolyvalKey,
    /// AES-128 keyed with K; restarted at each PRF IV.
    prf_ctr: Aes128CtrStream,
    /// POLYVAL keyed with B (one block per use).
    prf_hash: PolyvalOne,
    /// The keys as given, for the known-answer tests' state checks.
    #[cfg(test)]
    raw: [u8; 64],
}

fn block(bytes: &[u8]) -> [u8; 16] {
    let mut b = [0u8; 16];
    let n = bytes.len().min(16);
    b[..n].copy_from_slice(&bytes[..n]);
    b
}

fn xor16(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    core::array::from_fn(|i| a[i] ^ b[i])
}

impl Uiv {
    /// `keys` = KB ‖ KU ‖ K ‖ B.
    fn new(keys: &[u8; 64], role: Role) -> Self {
        Self {
            et_aes: EtAes::new(&block(&keys[0..16]), role),
            et_hash: PolyvalKey::new(&block(&keys[16..32])),
            prf_ctr: Aes128CtrStream::new(&block(&keys[32..48])),
            prf_hash: PolyvalOne::new(&block(&keys[48..64])),
            #[cfg(test)]
            raw: *keys,
        }
    }

    /// `POLYVAL(KU, H ‖ cmd ‖ X_R)`, the last block zero-padded.
    fn et_mask(&mut self, h: &[u8; 16], cmd: u8, x_r: &[u8]) -> [u8; 16] {
        // 16 + 1 + 493 bytes: 32 blocks, the last ending in two zeros.
        let mut input = [0u8; 512];
        input[..16].copy_from_slice(h);
        input[16] = cmd;
        let n = x_r.len().min(512 - 17);
        input[17..17 + n].copy_from_slice(&x_r[..n]);
        self.et_hash.hash(&input)
    }

    /// The PRF's first counter block for input `t`, stream `t1` or t0.
    fn prf_counter(&mut self, t: &[u8; 16], t1: bool) -> u128 {
        let mut iv = self.prf_hash.hash(t);
        iv[15] &= 0xC0;
        if t1 {
            // Low six bits are zero: no carry out of the byte.
            iv[15] |= T1_OFFSET;
        }
        u128::from_be_bytes(iv)
    }

    /// `data ⊕= PRF(t, 0)`.
    fn prf_xor_t0(&mut self, t: &[u8; 16], data: &mut [u8]) {
        let start = self.prf_counter(t, false);
        self.prf_ctr.seek(start);
        self.prf_ctr.apply(data);
    }

    /// ET on the tag under the tweak (H, cmd, X_R), in the role's
    /// direction: AES encryption for relays, decryption for clients.
    fn et(&mut self, h: &[u8; 16], cmd: u8, x_r: &[u8], tag: &[u8; 16]) -> [u8; 16] {
        let mask = self.et_mask(h, cmd, x_r);
        let mut b = xor16(tag, &mask).into();
        match &self.et_aes {
            EtAes::Enc(aes) => aes.encrypt_block(&mut b),
            EtAes::Dec(aes) => aes.decrypt_block(&mut b),
        }
        xor16(&b.into(), &mask)
    }

    /// ENC_UIV (relays) or DEC_UIV (clients) on a whole cell body, by the
    /// role the keys were made for.
    fn crypt(&mut self, h: &[u8; 16], cmd: u8, body: &mut CellBody) {
        let (tag, rest) = body.split_at_mut(CGO_TAG_LEN);
        match self.et_aes {
            EtAes::Enc(_) => {
                let y_l = self.et(h, cmd, rest, &block(tag));
                tag.copy_from_slice(&y_l);
                self.prf_xor_t0(&y_l, rest);
            }
            EtAes::Dec(_) => {
                let y_l = block(tag);
                self.prf_xor_t0(&y_l, rest);
                tag.copy_from_slice(&self.et(h, cmd, rest, &y_l));
            }
        }
    }

    /// `PRF(input, 1)`: 80 bytes.
    fn prf_t1(&mut self, input: &[u8; 16]) -> [u8; DIRECTION_KEY_LEN] {
        let mut out = [0u8; DIRECTION_KEY_LEN];
        let start = self.prf_counter(input, true);
        self.prf_ctr.seek(start);
        self.prf_ctr.apply(&mut out);
        out
    }

    /// UPDATE: the next keys and nonce from `PRF(input, 1)`.
    fn update(&mut self, input: &[u8; 16]) -> [u8; 16] {
        let mut out = self.prf_t1(input);
        // In place: the old keys are overwritten, not moved or dropped.
        self.et_aes.rekey(&block(&out[0..16]));
        self.et_hash.set(&block(&out[16..32]));
        self.prf_ctr.rekey(&block(&out[32..48]), 0);
        self.prf_hash.set(&block(&out[48..64]));
        #[cfg(test)]
        self.raw.copy_from_slice(&out[..64]);
        let nonce = block(&out[64..]);
        // A slice, not the array: the bulk wipe, not one store per byte.
        out[..].zeroize();
        nonce
    }
}

/// One direction of one hop: UIV+ keys, the nonce N and the last tag T′.
pub(crate) struct CgoDirection {
    uiv: Uiv,
    nonce: [u8; 16],
    tprime: [u8; 16],
}

impl Drop for CgoDirection {
    fn drop(&mut self) {
        self.nonce.zeroize();
        self.tprime.zeroize();
    }
}

impl CgoDirection {
    /// `material` = KB ‖ KU ‖ K ‖ B ‖ N (80 bytes); T′ starts at zero
    /// (relay_crypto_cgo.c:cgo_crypt_new).
    fn new(material: &[u8; DIRECTION_KEY_LEN], role: Role) -> Self {
        let mut keys = [0u8; 64];
        keys.copy_from_slice(&material[..64]);
        let uiv = Uiv::new(&keys, role);
        keys.zeroize();
        Self {
            uiv,
            nonce: block(&material[64..]),
            tprime: [0; 16],
        }
    }

    fn update(&mut self, input: &[u8; 16]) {
        self.nonce = self.uiv.update(input);
    }

    /// A relay's cell from the client side (cgo_crypt_relay_forward):
    /// encrypt, and if the new tag is N the cell is ours: the keys move on
    /// and the tag it arrived with is the SENDME tag.
    fn relay_forward(&mut self, cmd: u8, body: &mut CellBody) -> Option<CgoTag> {
        let t_in = block(&body[..CGO_TAG_LEN]);
        self.uiv.crypt(&self.tprime, cmd, body);
        self.tprime = block(&body[..CGO_TAG_LEN]);
        if bool::from(self.tprime.ct_eq(&self.nonce)) {
            let n = self.nonce;
            self.update(&n);
            Some(CgoTag(t_in))
        } else {
            None
        }
    }

    /// A relay's cell toward the client from further along
    /// (cgo_crypt_relay_backward): encrypt only.
    fn relay_backward(&mut self, cmd: u8, body: &mut CellBody) {
        self.uiv.crypt(&self.tprime, cmd, body);
        self.tprime = block(&body[..CGO_TAG_LEN]);
    }

    /// A relay's own cell toward the client (cgo_crypt_relay_originate):
    /// N goes in the tag, and the resulting tag is both the next N's input
    /// and the SENDME tag.
    fn relay_originate(&mut self, cmd: u8, body: &mut CellBody) -> CgoTag {
        body[..CGO_TAG_LEN].copy_from_slice(&self.nonce);
        self.uiv.crypt(&self.tprime, cmd, body);
        let t = block(&body[..CGO_TAG_LEN]);
        self.tprime = t;
        self.update(&t);
        CgoTag(t)
    }

    /// A client removing this hop's layer from a cell it sends
    /// (cgo_crypt_client_forward).
    fn client_forward(&mut self, cmd: u8, body: &mut CellBody) {
        let next = block(&body[..CGO_TAG_LEN]);
        self.uiv.crypt(&self.tprime, cmd, body);
        self.tprime = next;
    }

    /// A client's cell for this hop (cgo_crypt_client_originate): returns
    /// the tag the hop will see.
    fn client_originate(&mut self, cmd: u8, body: &mut CellBody) -> CgoTag {
        body[..CGO_TAG_LEN].copy_from_slice(&self.nonce);
        self.client_forward(cmd, body);
        let n = self.nonce;
        self.update(&n);
        CgoTag(block(&body[..CGO_TAG_LEN]))
    }

    /// [`Self::client_backward`] for a cell known to be this hop's own:
    /// the tag is the next T′ and UPDATE's input whether or not it checks,
    /// so ET (and its POLYVAL over the cell) is skipped.
    fn client_backward_trusted(&mut self, body: &mut CellBody) -> CgoTag {
        let t = block(&body[..CGO_TAG_LEN]);
        self.uiv.prf_xor_t0(&t, &mut body[CGO_TAG_LEN..]);
        self.tprime = t;
        self.update(&t);
        CgoTag(t)
    }

    /// A client's cell from this hop or beyond (cgo_crypt_client_backward):
    /// `Some(tag)` if this hop originated it.
    fn client_backward(&mut self, cmd: u8, body: &mut CellBody) -> Option<CgoTag> {
        let t = block(&body[..CGO_TAG_LEN]);
        self.uiv.crypt(&self.tprime, cmd, body);
        self.tprime = t;
        if bool::from(body[..CGO_TAG_LEN].ct_eq(&self.nonce)) {
            self.update(&t);
            Some(CgoTag(t))
        } else {
            None
        }
    }
}

/// The channel command of an ordinary relay cell: every cell a relay
/// originates is one (RELAY_EARLY goes only away from the client).
const RELAY_CMD: u8 = 3;

/// Both directions from the KDF's 160 bytes: forward first, then backward
/// (relay_crypto.c:cgo_pair_init, no swap for either side).
fn directions(material: &[u8; CGO_KEY_MATERIAL_LEN], role: Role) -> (CgoDirection, CgoDirection) {
    let mut fwd = [0u8; DIRECTION_KEY_LEN];
    let mut back = [0u8; DIRECTION_KEY_LEN];
    fwd.copy_from_slice(&material[..DIRECTION_KEY_LEN]);
    back.copy_from_slice(&material[DIRECTION_KEY_LEN..]);
    let pair = (
        CgoDirection::new(&fwd, role),
        CgoDirection::new(&back, role),
    );
    fwd[..].zeroize();
    back[..].zeroize();
    pair
}

/// A relay's CGO state for one circuit.
pub struct CgoRelayCrypto {
    forward: CgoDirection,
    backward: CgoDirection,
}

impl CgoRelayCrypto {
    /// From the 160 bytes the ntor-v3 KDF gives after ENC_KEY.
    pub fn new(material: &[u8; CGO_KEY_MATERIAL_LEN]) -> Self {
        let (forward, backward) = directions(material, Role::Relay);
        Self { forward, backward }
    }

    /// A cell from the client side, `cmd` its channel command (RELAY or
    /// RELAY_EARLY). `Some(tag)` if it is for us: `body[16..]` is then the
    /// v1 relay message. Otherwise it goes on to the next hop as it now
    /// is, with the same command.
    pub fn decrypt_forward(&mut self, cmd: u8, body: &mut CellBody) -> Option<CgoTag> {
        self.forward.relay_forward(cmd, body)
    }

    /// A cell from the next hop toward the client: add our layer.
    pub fn relay_backward(&mut self, cmd: u8, body: &mut CellBody) {
        self.backward.relay_backward(cmd, body);
    }

    /// Our own cell toward the client: `body[16..]` holds the v1 relay
    /// message; returns the tag a SENDME for it will carry.
    pub fn originate_backward(&mut self, body: &mut CellBody) -> CgoTag {
        self.backward.relay_originate(RELAY_CMD, body)
    }
}

/// A client's CGO state for one hop (tests, benchmarks, the generator).
pub struct CgoClientHop {
    forward: CgoDirection,
    backward: CgoDirection,
}

impl CgoClientHop {
    /// The same 160 bytes the hop derives.
    pub fn new(material: &[u8; CGO_KEY_MATERIAL_LEN]) -> Self {
        let (forward, backward) = directions(material, Role::Client);
        Self { forward, backward }
    }

    /// A cell for this hop: `body[16..]` holds the v1 relay message. Apply
    /// [`Self::wrap_forward`] of the hops before this one, innermost first,
    /// before sending. Returns the tag the hop will report.
    pub fn originate_forward(&mut self, cmd: u8, body: &mut CellBody) -> CgoTag {
        self.forward.client_originate(cmd, body)
    }

    /// This hop's layer on a cell for a hop beyond it.
    pub fn wrap_forward(&mut self, cmd: u8, body: &mut CellBody) {
        self.forward.client_forward(cmd, body);
    }

    /// Remove this hop's layer from a cell toward us: `Some(tag)` if this
    /// hop originated it (`body[16..]` is then its v1 relay message).
    pub fn decrypt_backward(&mut self, cmd: u8, body: &mut CellBody) -> Option<CgoTag> {
        self.backward.client_backward(cmd, body)
    }

    /// [`Self::decrypt_backward`] of a cell the caller knows this hop
    /// originated (the last hop of a circuit, which sends every backward
    /// cell): the message is decrypted and the keys move on without
    /// checking the tag. For a load generator that counts what it gets
    /// rather than verifying it; a real client must not use it.
    pub fn decrypt_backward_trusted(&mut self, body: &mut CellBody) -> CgoTag {
        self.backward.client_backward_trusted(body)
    }
}

mod polyval;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;
