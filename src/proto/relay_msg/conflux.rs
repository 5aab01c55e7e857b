//! Conflux messages (proposal 329; trunnel/conflux.trunnel, C tor 0.4.9
//! conflux_cell.c): CONFLUX_LINK / LINKED (one layout), LINKED_ACK and
//! SWITCH, with C tor's parser's leniencies (docs/conflux-exit.md §1).
//!
//! ```text
//! LINK, LINKED: version(1) = 1 | nonce(32) | last_seqno_sent(8) | last_seqno_recv(8) | desired_ux(1)
//! LINKED_ACK:   (empty; any body is ignored)
//! SWITCH:       seqnum(4)      (a shorter body reads as 0, as C tor's does)
//! ```
//! Bytes after these are ignored, as trunnel does.

use super::{RelayBody, RelayCmd, RelayMsgError};
use crate::proto::cell::codec::{Reader, SliceWriter};

/// The only LINK/LINKED version.
const CONFLUX_VERSION: u8 = 1;

/// What the sender of a LINK asks the other end to optimise its sending
/// for (trunnel `CONFLUX_UX_*`); anything above 4 is a parse error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfluxUx {
    NoOpinion = 0,
    MinLatency = 1,
    LowMemLatency = 2,
    HighThroughput = 3,
    LowMemThroughput = 4,
}

impl ConfluxUx {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::NoOpinion,
            1 => Self::MinLatency,
            2 => Self::LowMemLatency,
            3 => Self::HighThroughput,
            4 => Self::LowMemThroughput,
            _ => return None,
        })
    }
}

/// CONFLUX_LINK (client → exit) and CONFLUX_LINKED (exit → client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfluxLink {
    /// Names the set: every leg of a set carries the same nonce.
    pub nonce: [u8; 32],
    /// Absolute sequence number of the last multiplexed cell the sender
    /// sent on the set.
    pub last_seqno_sent: u64,
    /// Multiplexed cells the sender has delivered so far.
    pub last_seqno_recv: u64,
    pub desired_ux: ConfluxUx,
}

impl ConfluxLink {
    fn decode_any(data: &[u8], parsing: &'static str) -> Result<Self, RelayMsgError> {
        let mut r = Reader::new(data);
        let version = r.u8().map_err(RelayMsgError::short(parsing))?;
        if version != CONFLUX_VERSION {
            return Err(RelayMsgError::Malformed {
                parsing,
                reason: "version is not 1",
            });
        }
        let nonce = r.array::<32>().map_err(RelayMsgError::short(parsing))?;
        let mut u64_be = || {
            r.array::<8>()
                .map(u64::from_be_bytes)
                .map_err(RelayMsgError::short(parsing))
        };
        let last_seqno_sent = u64_be()?;
        let last_seqno_recv = u64_be()?;
        let ux = r.u8().map_err(RelayMsgError::short(parsing))?;
        let desired_ux = ConfluxUx::from_u8(ux).ok_or(RelayMsgError::Malformed {
            parsing,
            reason: "desired_ux is above 4",
        })?;
        Ok(Self {
            nonce,
            last_seqno_sent,
            last_seqno_recv,
            desired_ux,
        })
    }

    fn encode_any(&self, w: &mut SliceWriter<'_>, what: &'static str) -> Result<(), RelayMsgError> {
        let mut put = |b: &[u8]| w.put(b).map_err(RelayMsgError::overflow(what));
        put(&[CONFLUX_VERSION])?;
        put(&self.nonce)?;
        put(&self.last_seqno_sent.to_be_bytes())?;
        put(&self.last_seqno_recv.to_be_bytes())?;
        put(&[self.desired_ux as u8])
    }
}

impl RelayBody<'_> for ConfluxLink {
    const CMD: RelayCmd = RelayCmd::CONFLUX_LINK;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        Self::decode_any(data, "CONFLUX_LINK")
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        self.encode_any(w, "CONFLUX_LINK")
    }
}

/// CONFLUX_LINKED: the exit's answer, in LINK's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfluxLinked(pub ConfluxLink);

impl RelayBody<'_> for ConfluxLinked {
    const CMD: RelayCmd = RelayCmd::CONFLUX_LINKED;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        ConfluxLink::decode_any(data, "CONFLUX_LINKED").map(Self)
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        self.0.encode_any(w, "CONFLUX_LINKED")
    }
}

/// CONFLUX_SWITCH: the sender's next multiplexed cell on this leg comes
/// `seqnum` after the last one it sent on it. C tor reads a body shorter
/// than 4 bytes as 0 rather than refusing it (conflux_cell_parse_switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfluxSwitch {
    pub seqnum: u32,
}

impl RelayBody<'_> for ConfluxSwitch {
    const CMD: RelayCmd = RelayCmd::CONFLUX_SWITCH;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        let seqnum = data
            .first_chunk::<4>()
            .map_or(0, |b| u32::from_be_bytes(*b));
        Ok(Self { seqnum })
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        w.put(&self.seqnum.to_be_bytes())
            .map_err(RelayMsgError::overflow("CONFLUX_SWITCH"))
    }
}

impl RelayCmd {
    /// Whether a cell of this command is sequenced across a conflux set's
    /// legs (conflux.c:conflux_should_multiplex): the stream commands and
    /// XON/XOFF. Everything else stays on the leg it came on.
    pub const fn conflux_multiplexed(self) -> bool {
        matches!(self.0, 1 | 2 | 3 | 4 | 11 | 12 | 43 | 44)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::relay_msg::tests::{msg as hex_msg_roundtrip, unhex};

    fn link() -> ConfluxLink {
        ConfluxLink {
            nonce: core::array::from_fn(|i| i as u8),
            last_seqno_sent: 5,
            last_seqno_recv: 7,
            desired_ux: ConfluxUx::MinLatency,
        }
    }

    /// The layout from the trunnel definition (C's tests use a random
    /// nonce, so the bytes are derived, not captured).
    #[test]
    fn link_and_linked_layout() {
        let bytes = "01 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f \
                     0000000000000005 0000000000000007 01";
        hex_msg_roundtrip(bytes, &link());
        hex_msg_roundtrip(bytes, &ConfluxLinked(link()));
        // Trailing bytes ignored.
        let mut long = unhex(bytes);
        long.extend_from_slice(&[9, 9]);
        assert_eq!(ConfluxLink::decode(&long).unwrap(), link());
    }

    #[test]
    fn link_refusals() {
        let good = unhex(
            "01 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f \
             0000000000000005 0000000000000007 01",
        );
        for cut in 0..good.len() {
            assert!(ConfluxLink::decode(&good[..cut]).is_err(), "{cut} bytes");
        }
        let mut v2 = good.clone();
        v2[0] = 2;
        assert!(ConfluxLink::decode(&v2).is_err());
        let mut ux = good.clone();
        ux[49] = 4;
        assert_eq!(
            ConfluxLink::decode(&ux).unwrap().desired_ux,
            ConfluxUx::LowMemThroughput
        );
        ux[49] = 5;
        assert!(ConfluxLink::decode(&ux).is_err());
    }

    #[test]
    fn switch_is_lenient() {
        hex_msg_roundtrip("0000000a", &ConfluxSwitch { seqnum: 10 });
        assert_eq!(
            ConfluxSwitch::decode(&unhex("ffffffff 00")).unwrap().seqnum,
            u32::MAX
        );
        for short in ["", "00", "000001"] {
            assert_eq!(ConfluxSwitch::decode(&unhex(short)).unwrap().seqnum, 0);
        }
    }

    #[test]
    fn multiplexed_commands() {
        let mux: Vec<u8> = (0..=255u8)
            .filter(|&c| RelayCmd(c).conflux_multiplexed())
            .collect();
        // BEGIN, DATA, END, CONNECTED, RESOLVE, RESOLVED, XOFF, XON.
        assert_eq!(mux, vec![1, 2, 3, 4, 11, 12, 43, 44]);
    }
}
