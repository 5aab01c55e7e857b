//! A circuit's relay crypto at this hop, whichever the handshake chose:
//! tor1 (running SHA-1 digests, v0 messages) or CGO (v1 messages,
//! requirements.md §4.3). Circuit code asks this type to decrypt, add a
//! layer or seal, and which message format the hop speaks; the
//! many-circuit batches ([`super::relay`], [`super::seal`]) split their
//! work by algorithm, so tor1's SHA-NI lanes still see only tor1 circuits.

use crate::crypto::cgo::CgoRelayCrypto;
use crate::crypto::kdf::{CgoKeys, CircuitKeys};
use crate::crypto::tor1::{CellBody, Tor1RelayCrypto};
use crate::proto::channel::IncomingCell;
use crate::proto::relay_msg::{RelayFormat, SendmeDigest};

/// See the module documentation.
// tor1, the common case, stays inline: no pointer to chase per cell.
#[allow(clippy::large_enum_variant)]
pub(crate) enum HopCrypto {
    Tor1(Tor1RelayCrypto),
    /// Boxed: its keys and POLYVAL powers are several times tor1's state,
    /// and most circuits are tor1.
    Cgo(Box<CgoRelayCrypto>),
}

/// The keys a circuit handshake produced, for the relay crypto it
/// negotiated.
pub(crate) enum HopKeys {
    Tor1(CircuitKeys),
    Cgo(CgoKeys),
}

impl HopCrypto {
    pub(crate) fn new(keys: &HopKeys) -> Self {
        match keys {
            HopKeys::Tor1(k) => HopCrypto::Tor1(Tor1RelayCrypto::new(&k.tor1)),
            HopKeys::Cgo(k) => HopCrypto::Cgo(Box::new(CgoRelayCrypto::new(&k.0))),
        }
    }

    /// The relay message layout the hop's cells carry.
    pub(crate) fn format(&self) -> RelayFormat {
        match self {
            HopCrypto::Tor1(_) => RelayFormat::V0,
            HopCrypto::Cgo(_) => RelayFormat::V1,
        }
    }

    /// Cells from the client side, in order: `tags[i]` is `Some` if cell
    /// `i` is ours, with the tag our SENDME for it would echo.
    pub(crate) fn decrypt_forward(
        &mut self,
        cells: &mut [IncomingCell],
        tags: &mut Vec<Option<SendmeDigest>>,
    ) {
        tags.clear();
        match self {
            HopCrypto::Tor1(t) => {
                let mut refs: Vec<&mut CellBody> = cells.iter_mut().map(|g| &mut g.body).collect();
                let mut rec = vec![None; refs.len()];
                t.decrypt_forward_batch(&mut refs, &mut rec);
                tags.extend(rec.into_iter().map(|r| r.map(SendmeDigest::from)));
            }
            HopCrypto::Cgo(c) => tags.extend(cells.iter_mut().map(|g| {
                c.decrypt_forward(g.cmd.get(), &mut g.body)
                    .map(SendmeDigest::from)
            })),
        }
    }

    /// Cells from the next hop toward the client: add our layer.
    pub(crate) fn relay_backward(&mut self, cells: &mut [IncomingCell]) {
        match self {
            HopCrypto::Tor1(t) => {
                let mut refs: Vec<&mut CellBody> = cells.iter_mut().map(|g| &mut g.body).collect();
                t.encrypt_backward_batch(&mut refs);
            }
            HopCrypto::Cgo(c) => {
                for g in cells {
                    c.relay_backward(g.cmd.get(), &mut g.body);
                }
            }
        }
    }
}
