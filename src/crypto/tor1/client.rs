//! The client side of tor1, used by tests and benchmarks to drive relays
//! (and later by our own circuits, e.g. reachability tests): originate
//! forward cells for any hop, peel backward cells and find which hop sent
//! them. Same algorithm as the relay side with the directions swapped
//! (tor-spec §5.5; C tor relay_crypto_tor1.c client functions).

use super::{CellBody, SendmeTag, Tor1Direction, split_keys};
use crate::crypto::kdf::TOR1_KEY_LEN;

/// One hop's keys as the client holds them.
pub struct Tor1ClientLayer {
    forward: Tor1Direction,
    backward: Tor1Direction,
}

impl Tor1ClientLayer {
    /// From the same 72 bytes the hop built its `Tor1RelayCrypto` from.
    pub fn new(keys: &[u8; TOR1_KEY_LEN]) -> Self {
        let (df, db, kf, kb) = split_keys(keys);
        Self {
            forward: Tor1Direction::new(&df, &kf),
            backward: Tor1Direction::new(&db, &kb),
        }
    }

    /// Address a plaintext cell to this hop: set Recognized/Digest, then
    /// encrypt with Kf. Returns the SENDME tag.
    pub fn originate_forward(&mut self, cell: &mut CellBody) -> SendmeTag {
        let tag = self.forward.set_digest(cell);
        self.forward.crypt(cell);
        tag
    }

    /// Add this hop's forward layer to a cell addressed further out.
    pub fn encrypt_forward(&mut self, cell: &mut CellBody) {
        self.forward.crypt(cell);
    }

    /// Remove this hop's backward layer and check whether it originated the
    /// cell.
    pub fn decrypt_backward(&mut self, cell: &mut CellBody) -> Option<SendmeTag> {
        self.backward.crypt(cell);
        self.backward.check_recognized(cell)
    }

    /// Remove this hop's backward layer without the digest check (AES
    /// only). For a load generator that counts cells on most circuits and
    /// verifies a sample: SHA-1 is most of tor1's cost, and a generator
    /// must cost much less than the relay it measures. The running digest
    /// stops following the circuit, so a layer peeled this way once must
    /// never be checked with [`Self::decrypt_backward`] again.
    pub fn peel_backward_unverified(&mut self, cell: &mut CellBody) {
        self.backward.crypt(cell);
    }
}

/// A client's view of a whole circuit: one layer per hop, hop 0 first.
#[derive(Default)]
pub struct Tor1ClientCircuit {
    hops: Vec<Tor1ClientLayer>,
}

impl Tor1ClientCircuit {
    /// An empty circuit; add hops with [`Self::push_hop`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Extend by one hop.
    pub fn push_hop(&mut self, keys: &[u8; TOR1_KEY_LEN]) {
        self.hops.push(Tor1ClientLayer::new(keys));
    }

    /// Number of hops.
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// True with no hops.
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// Encrypt a plaintext cell for hop `hop` (0-based): originate at that
    /// hop, then add the layers of the hops before it. `None` if there is no
    /// such hop.
    pub fn encrypt_forward(&mut self, hop: usize, cell: &mut CellBody) -> Option<SendmeTag> {
        let (inner, _) = self.hops.split_at_mut_checked(hop.checked_add(1)?)?;
        let (target, before) = inner.split_last_mut()?;
        let tag = target.originate_forward(cell);
        for layer in before.iter_mut().rev() {
            layer.encrypt_forward(cell);
        }
        Some(tag)
    }

    /// Peel a cell arriving from hop 0: returns the hop that originated it
    /// and the tag, or `None` if no hop recognized it (the circuit must then
    /// be closed).
    pub fn decrypt_backward(&mut self, cell: &mut CellBody) -> Option<(usize, SendmeTag)> {
        for (i, layer) in self.hops.iter_mut().enumerate() {
            if let Some(tag) = layer.decrypt_backward(cell) {
                return Some((i, tag));
            }
        }
        None
    }
}
