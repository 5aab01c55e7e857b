//! tor1 relay-cell cryptography (AES-128-CTR + running SHA-1 digest) for
//! one circuit, relay side, behind batch entry points: the worker hands over
//! all cells of one circuit from a completion batch, so a wide AES backend
//! gets many blocks per call and a later vectorised implementation can
//! replace the loops without touching callers.
//!
//! Owns the per-circuit crypto state and the recognized/digest fields of the
//! relay header (offsets from requirements.md §4.1). Does not parse relay
//! messages (proto) nor decide what to do with an unrecognized cell.
//! Algorithm: requirements.md §4.2; C tor `relay_crypto_tor1.c`. The client
//! side, for tests and benchmarks, is in `tor1/client.rs`.

mod client;
pub(crate) mod ctr;
mod sha1;

pub use client::{Tor1ClientCircuit, Tor1ClientLayer};

use self::ctr::Aes128CtrStream;
use self::sha1::{RunningSha1, Sha1Batch};
use core::ops::Range;
use subtle::ConstantTimeEq;

use super::kdf::TOR1_KEY_LEN;

/// A relay cell body: the 509 bytes after CircID and command.
pub type CellBody = [u8; CELL_BODY_LEN];
/// Length of a relay cell body.
pub const CELL_BODY_LEN: usize = 509;

/// The `Recognized` field: bytes 1..3 of the relay header.
const RECOGNIZED: core::ops::Range<usize> = 1..3;
/// The `Digest` field: bytes 5..9 of the relay header.
const DIGEST: core::ops::Range<usize> = 5..9;

/// The full 20-byte running digest after a cell was recognized or
/// originated: what an authenticated SENDME (v1) carries (requirements §5.7).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SendmeTag(pub [u8; 20]);

/// One direction of one hop: its AES-128-CTR stream and running SHA-1.
/// Relays decrypt-and-check forward and digest-and-encrypt backward;
/// clients the opposite, so both sides share this.
pub(crate) struct Tor1Direction {
    cipher: Aes128CtrStream,
    digest: RunningSha1,
}

impl Tor1Direction {
    /// `digest_seed` is Df or Db (20 bytes), `key` is Kf or Kb (16 bytes);
    /// IV 0 (relay_crypto_tor1.c:tor1_crypt_init).
    pub(crate) fn new(digest_seed: &[u8], key: &[u8; 16]) -> Self {
        let mut digest = RunningSha1::new();
        digest.update(digest_seed);
        Self {
            cipher: Aes128CtrStream::new(key),
            digest,
        }
    }

    /// Apply this direction's keystream; the stream continues across calls.
    #[inline]
    pub(crate) fn crypt(&mut self, cell: &mut CellBody) {
        self.cipher.apply(cell);
    }

    /// [`Self::crypt`] over several cells in order. The fused kernels
    /// (tor1/ctr.rs) XOR keystream straight into each cell, a whole cell's
    /// blocks per AES pass, so one call per cell costs the same as one call
    /// over all of them.
    #[inline]
    pub(crate) fn crypt_batch(&mut self, cells: &mut [&mut CellBody]) {
        for cell in cells.iter_mut() {
            self.cipher.apply(&mut cell[..]);
        }
    }

    /// The recognized check on a decrypted cell (tor1_relay_digest_matches_v0):
    /// Recognized == 0, then the running digest over the cell with a zeroed
    /// Digest field must start with the received Digest. On a match the
    /// digest state advances and the full digest is returned; otherwise the
    /// digest state and the cell are left as they were.
    #[inline]
    pub(crate) fn check_recognized(&mut self, cell: &mut CellBody) -> Option<SendmeTag> {
        if cell[RECOGNIZED] != [0, 0] {
            return None;
        }
        // Checkpoint by working on a copy: committed only on a match.
        let mut next = self.digest;
        let mut received = [0u8; 4];
        received.copy_from_slice(&cell[DIGEST]);
        cell[DIGEST].fill(0);
        next.update(&cell[..]);
        let full = next.digest();
        if bool::from(full[..4].ct_eq(&received)) {
            self.digest = next;
            Some(SendmeTag(full))
        } else {
            cell[DIGEST].copy_from_slice(&received);
            None
        }
    }

    /// Mark a plaintext cell as ours (tor1_set_digest_v0): Recognized = 0,
    /// Digest = first 4 bytes of the running digest over the cell with
    /// Digest zeroed. Returns the full digest.
    #[inline]
    pub(crate) fn set_digest(&mut self, cell: &mut CellBody) -> SendmeTag {
        cell[RECOGNIZED].fill(0);
        cell[DIGEST].fill(0);
        self.digest.update(&cell[..]);
        let full = self.digest.digest();
        cell[DIGEST].copy_from_slice(&full[..4]);
        SendmeTag(full)
    }
}

/// Split Df(20) | Db(20) | Kf(16) | Kb(16) (requirements.md §3.5).
pub(crate) fn split_keys(keys: &[u8; TOR1_KEY_LEN]) -> ([u8; 20], [u8; 20], [u8; 16], [u8; 16]) {
    let mut df = [0u8; 20];
    let mut db = [0u8; 20];
    let mut kf = [0u8; 16];
    let mut kb = [0u8; 16];
    df.copy_from_slice(&keys[0..20]);
    db.copy_from_slice(&keys[20..40]);
    kf.copy_from_slice(&keys[40..56]);
    kb.copy_from_slice(&keys[56..72]);
    (df, db, kf, kb)
}

/// Scratch for the many-circuit entry points, kept by their caller (one per
/// worker) so that a batch allocates nothing once it has grown.
#[derive(Default)]
pub struct Tor1Batch {
    sha1: Sha1Batch,
    states: Vec<RunningSha1>,
    /// The states before a batch, for a circuit whose guess failed.
    before: Vec<RunningSha1>,
    digests: Vec<[u8; 20]>,
    /// Per candidate cell: its index in the batch and the Digest it came
    /// with; and the candidates' groups.
    candidates: Vec<(usize, [u8; 4])>,
    candidate_groups: Vec<Range<usize>>,
}

/// The relay side of one tor1 circuit hop (middle or exit).
///
/// The key material is wiped by its owner (`CircuitKeys`); the cipher and
/// digest states here hold expanded keys that the RustCrypto types do not
/// wipe on drop.
pub struct Tor1RelayCrypto {
    forward: Tor1Direction,
    backward: Tor1Direction,
}

impl Tor1RelayCrypto {
    /// From the 72-byte tor1 key material Df | Db | Kf | Kb.
    pub fn new(keys: &[u8; TOR1_KEY_LEN]) -> Self {
        let (mut df, mut db, mut kf, mut kb) = split_keys(keys);
        let s = Self {
            forward: Tor1Direction::new(&df, &kf),
            backward: Tor1Direction::new(&db, &kb),
        };
        use zeroize::Zeroize;
        df.zeroize();
        db.zeroize();
        kf.zeroize();
        kb.zeroize();
        s
    }

    /// Cells arriving from the client side, in order. First AES-CTR with Kf
    /// over all of them, then per cell the recognized check:
    /// `recognized[i]` is `Some(tag)` if cell `i` is for us, else `None`
    /// (forward it, or close the circuit at the last hop).
    ///
    /// `recognized` must be as long as `cells`; extra cells beyond its
    /// length are decrypted but not checked (a caller bug, caught in debug
    /// builds).
    pub fn decrypt_forward_batch(
        &mut self,
        cells: &mut [&mut CellBody],
        recognized: &mut [Option<SendmeTag>],
    ) {
        debug_assert_eq!(cells.len(), recognized.len());
        self.forward.crypt_batch(cells);
        for (cell, out) in cells.iter_mut().zip(recognized.iter_mut()) {
            *out = self.forward.check_recognized(cell);
        }
    }

    /// Cells travelling toward the client that another hop originated
    /// (we are a middle): AES-CTR with Kb only.
    pub fn encrypt_backward_batch(&mut self, cells: &mut [&mut CellBody]) {
        self.backward.crypt_batch(cells);
    }

    /// Cells we originate toward the client (we are the exit), plaintext
    /// relay cells with random padding already in place: set Recognized and
    /// Digest, collect each cell's SENDME tag into `tags[i]`, then AES-CTR
    /// with Kb over all of them. `tags` must be as long as `cells`.
    pub fn originate_backward_batch(
        &mut self,
        cells: &mut [&mut CellBody],
        tags: &mut [SendmeTag],
    ) {
        debug_assert_eq!(cells.len(), tags.len());
        for (cell, tag) in cells.iter_mut().zip(tags.iter_mut()) {
            *tag = self.backward.set_digest(cell);
        }
        self.backward.crypt_batch(cells);
    }

    /// [`Self::originate_backward_batch`] for several circuits at once:
    /// circuit `circuits[g]` seals `cells[groups[g]]`, in order, and
    /// `tags[i]` gets cell `i`'s tag. One circuit's digest is a chain, but
    /// different circuits' digests, and the last block of each cell, can
    /// share SHA-NI's pipeline (`sha1/lanes.rs`): this is how an exit
    /// seals what a turn read from many streams.
    pub fn originate_backward_many(
        batch: &mut Tor1Batch,
        circuits: &mut [&mut Tor1RelayCrypto],
        groups: &[Range<usize>],
        cells: &mut [&mut CellBody],
        tags: &mut [SendmeTag],
    ) {
        debug_assert_eq!(circuits.len(), groups.len());
        debug_assert_eq!(cells.len(), tags.len());
        if let ([c], [g]) = (&mut *circuits, groups) {
            // One chain has no lanes to share: the laid-out copy would be
            // pure cost (cell_ops: 490 against 471 ns for 31 cells).
            if let (Some(cells), Some(tags)) = (cells.get_mut(g.clone()), tags.get_mut(g.clone())) {
                c.originate_backward_batch(cells, tags);
            }
            return;
        }
        for cell in cells.iter_mut() {
            cell[RECOGNIZED].fill(0);
            cell[DIGEST].fill(0);
        }
        let Tor1Batch {
            sha1,
            states,
            digests,
            ..
        } = batch;
        states.clear();
        states.extend(circuits.iter().map(|c| c.backward.digest));
        digests.clear();
        digests.resize(cells.len(), [0; 20]);
        sha1::absorb_many(sha1, states, groups, cells, digests);
        for ((c, s), g) in circuits.iter_mut().zip(states.iter()).zip(groups) {
            c.backward.digest = *s;
            let Some(group) = cells.get_mut(g.clone()) else {
                continue;
            };
            let (d, t) = (digests.get(g.clone()), tags.get_mut(g.clone()));
            if let (Some(d), Some(t)) = (d, t) {
                for ((cell, d), t) in group.iter_mut().zip(d).zip(t) {
                    cell[DIGEST].copy_from_slice(&d[..4]);
                    *t = SendmeTag(*d);
                }
            }
            c.backward.crypt_batch(group);
        }
    }

    /// [`Self::decrypt_forward_batch`] for several circuits at once: circuit
    /// `circuits[g]` decrypts and checks `cells[groups[g]]`, in order, and
    /// `recognized[i]` is cell `i`'s answer, exactly as one circuit at a
    /// time would give it.
    ///
    /// The digests are computed on a guess: that every cell whose
    /// Recognized field is zero is ours (true at an exit for every cell but
    /// one in 65,536 by chance). All circuits' guesses are hashed together
    /// on SHA-NI lanes; a circuit whose guess fails at some cell keeps the
    /// cells before it and checks the rest one by one.
    pub fn decrypt_forward_many(
        batch: &mut Tor1Batch,
        circuits: &mut [&mut Tor1RelayCrypto],
        groups: &[Range<usize>],
        cells: &mut [&mut CellBody],
        recognized: &mut [Option<SendmeTag>],
    ) {
        debug_assert_eq!(circuits.len(), groups.len());
        debug_assert_eq!(cells.len(), recognized.len());
        recognized.fill(None);
        if let ([c], [g]) = (&mut *circuits, groups) {
            // One chain: nothing to share the lanes with.
            if let (Some(cells), Some(rec)) =
                (cells.get_mut(g.clone()), recognized.get_mut(g.clone()))
            {
                c.decrypt_forward_batch(cells, rec);
            }
            return;
        }
        let Tor1Batch {
            sha1,
            states,
            before,
            digests,
            candidates,
            candidate_groups,
        } = batch;
        candidates.clear();
        candidate_groups.clear();
        for (c, g) in circuits.iter_mut().zip(groups) {
            let start = candidates.len();
            if let Some(group) = cells.get_mut(g.clone()) {
                c.forward.crypt_batch(group);
                for (i, cell) in group.iter_mut().enumerate() {
                    if cell[RECOGNIZED] == [0, 0] {
                        let mut received = [0u8; 4];
                        received.copy_from_slice(&cell[DIGEST]);
                        cell[DIGEST].fill(0);
                        candidates.push((g.start + i, received));
                    }
                }
            }
            candidate_groups.push(start..candidates.len());
        }
        states.clear();
        states.extend(circuits.iter().map(|c| c.forward.digest));
        before.clear();
        before.extend_from_slice(states);
        digests.clear();
        digests.resize(candidates.len(), [0; 20]);
        {
            let mut want = candidates.iter().map(|&(i, _)| i).peekable();
            let picked: Vec<&mut CellBody> = cells
                .iter_mut()
                .enumerate()
                .filter_map(|(i, c)| want.next_if_eq(&i).map(|_| &mut **c))
                .collect();
            sha1::absorb_many(sha1, states, candidate_groups, &picked, digests);
        }
        for (g, c) in circuits.iter_mut().enumerate() {
            let Some(cg) = candidate_groups.get(g) else {
                continue;
            };
            let mine = candidates.get(cg.clone()).unwrap_or(&[]);
            let sums = digests.get(cg.clone()).unwrap_or(&[]);
            let good = mine
                .iter()
                .zip(sums)
                .take_while(|((_, received), d)| bool::from(d[..4].ct_eq(received)))
                .count();
            for (&(i, _), d) in mine.iter().zip(sums).take(good) {
                if let Some(r) = recognized.get_mut(i) {
                    *r = Some(SendmeTag(*d));
                }
            }
            if good == mine.len() {
                if let Some(s) = states.get(g) {
                    c.forward.digest = *s;
                }
                continue;
            }
            // The guess failed at candidate `good`: put the Digest fields
            // back from there, then continue one cell at a time from the
            // state after the last cell that was ours.
            let mut st = before.get(g).copied().unwrap_or(c.forward.digest);
            for &(i, _) in mine.iter().take(good) {
                if let Some(cell) = cells.get(i) {
                    st.update(&cell[..]);
                }
            }
            c.forward.digest = st;
            for &(i, received) in mine.iter().skip(good) {
                if let Some(cell) = cells.get_mut(i) {
                    cell[DIGEST].copy_from_slice(&received);
                }
            }
            for &(i, _) in mine.iter().skip(good + 1) {
                if let (Some(cell), Some(r)) = (cells.get_mut(i), recognized.get_mut(i)) {
                    *r = c.forward.check_recognized(cell);
                }
            }
        }
    }

    /// One-cell [`Self::decrypt_forward_batch`].
    pub fn decrypt_forward(&mut self, cell: &mut CellBody) -> Option<SendmeTag> {
        self.forward.crypt(cell);
        self.forward.check_recognized(cell)
    }

    /// One-cell [`Self::encrypt_backward_batch`].
    pub fn encrypt_backward(&mut self, cell: &mut CellBody) {
        self.backward.crypt(cell);
    }

    /// One-cell [`Self::originate_backward_batch`].
    pub fn originate_backward(&mut self, cell: &mut CellBody) -> SendmeTag {
        let tag = self.backward.set_digest(cell);
        self.backward.crypt(cell);
        tag
    }
}

#[cfg(test)]
mod tests;
