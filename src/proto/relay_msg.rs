#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! Relay messages, format v0 ("tor1" circuits): the 11-byte relay header,
//! padding, and one struct per relay command (requirements.md §4.1, §5.1–§5.7,
//! §8.1).
//!
//! This module owns the plaintext layout of a 509-byte relay cell body once
//! relay crypto has decrypted and recognized it, and the layout of a body
//! about to be encrypted:
//!
//! ```text
//! Command(1) | Recognized(2) | StreamID(2) | Digest(4) | Length(2) | Data(Length) | Padding
//! offsets 0    1               3             5           9           11
//! ```
//!
//! It does not own the crypto (Recognized and Digest are written as zero here
//! and filled by `crypto::tor1`), stream or circuit state, or any policy
//! about which message is acceptable when, beyond the two context enums
//! [`ExitStreamMsg`] and [`CircuitMsg`] that limit which parsers a peer can
//! reach (arti's `restricted_msg!`).

mod circ;
mod conflux;
mod stream;
#[cfg(test)]
mod tests;
mod v1;

use std::fmt;

use rand::Rng;

use crate::proto::cell::DestroyReason;
use crate::proto::cell::codec::{Overflow, Short, SliceWriter};

pub use circ::{
    Drop, Extend, Extend2, Extend2Error, Extend2Target, Extended2, LinkSpec, Sendme, SendmeDigest,
    Truncate, Truncated,
};
pub use conflux::{ConfluxLink, ConfluxLinked, ConfluxSwitch, ConfluxUx};
pub use stream::{
    Begin, BeginDir, BeginFlags, BeginTarget, Connected, Data, End, EndReason, RESOLVED_MAX_LEN,
    Resolve, Resolved, ResolvedAnswer, ResolvedVal,
};
pub use v1::{
    V1_DATA_MAX, V1_TAG_LEN, encode_relay_data_v1, encode_relay_msg_v1, parse_relay_body_v1,
};

/// Bytes of a relay cell body (= a channel cell body).
pub const RELAY_BODY_LEN: usize = 509;
/// Bytes of the v0 relay header.
pub const RELAY_HEADER_LEN: usize = 11;
/// Most data one v0 relay cell carries (`RELAY_PAYLOAD_SIZE_MAX`).
pub const RELAY_DATA_MAX: usize = RELAY_BODY_LEN - RELAY_HEADER_LEN;
/// Zero bytes left after the data before random padding starts
/// (`CELL_PADDING_GAP`, relay.c; requirements.md §4.1).
pub const RELAY_PADDING_GAP: usize = 4;

/// A relay command (requirements.md §4.1; or.h `RELAY_COMMAND_*`). Open: any
/// byte value can be carried; a recognized cell with an unknown command is
/// dropped (but still counted in the digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayCmd(u8);

macro_rules! relay_cmds {
    ($($name:ident = $val:expr;)*) => {
        impl RelayCmd {
            $(pub const $name: RelayCmd = RelayCmd($val);)*

            /// The tor-spec name of a known command.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

relay_cmds! {
    BEGIN = 1;
    DATA = 2;
    END = 3;
    CONNECTED = 4;
    SENDME = 5;
    EXTEND = 6;
    EXTENDED = 7;
    TRUNCATE = 8;
    TRUNCATED = 9;
    DROP = 10;
    RESOLVE = 11;
    RESOLVED = 12;
    BEGIN_DIR = 13;
    EXTEND2 = 14;
    EXTENDED2 = 15;
    CONFLUX_LINK = 19;
    CONFLUX_LINKED = 20;
    CONFLUX_LINKED_ACK = 21;
    CONFLUX_SWITCH = 22;
    ESTABLISH_INTRO = 32;
    ESTABLISH_RENDEZVOUS = 33;
    INTRODUCE1 = 34;
    INTRODUCE2 = 35;
    RENDEZVOUS1 = 36;
    RENDEZVOUS2 = 37;
    INTRO_ESTABLISHED = 38;
    RENDEZVOUS_ESTABLISHED = 39;
    INTRODUCE_ACK = 40;
    PADDING_NEGOTIATE = 41;
    PADDING_NEGOTIATED = 42;
    XOFF = 43;
    XON = 44;
}

impl RelayCmd {
    pub const fn new(v: u8) -> Self {
        RelayCmd(v)
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    /// Commands that only make sense on a stream: with StreamID 0 C tor drops
    /// them (relay.c:connection_edge_process_relay_cell "Relay command %u
    /// with zero stream_id. Dropping."; requirements.md §4.1).
    pub const fn needs_stream(self) -> bool {
        matches!(self.0, 1 | 2 | 3 | 4 | 11 | 12 | 13)
    }
}

impl From<u8> for RelayCmd {
    fn from(v: u8) -> Self {
        RelayCmd(v)
    }
}

impl fmt::Display for RelayCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "relay command {}", self.0),
        }
    }
}

/// A stream ID within a circuit. Zero addresses the circuit itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StreamId(u16);

impl StreamId {
    /// The circuit-level "stream" 0.
    pub const CIRCUIT: StreamId = StreamId(0);

    pub const fn new(v: u16) -> Self {
        StreamId(v)
    }

    pub const fn get(self) -> u16 {
        self.0
    }

    pub const fn is_circuit(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}", self.0)
    }
}

/// The v0 relay header, unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayHeader {
    pub cmd: RelayCmd,
    pub recognized: u16,
    pub stream_id: StreamId,
    pub digest: [u8; 4],
    pub length: u16,
}

impl RelayHeader {
    /// Read the header fields at offsets 0, 1, 3, 5, 9. Never fails: the
    /// Length field is checked by [`parse_relay_body`].
    pub fn unpack(body: &[u8; RELAY_BODY_LEN]) -> Self {
        let [cmd, r0, r1, s0, s1, d0, d1, d2, d3, l0, l1, ..] = *body;
        RelayHeader {
            cmd: RelayCmd(cmd),
            recognized: u16::from_be_bytes([r0, r1]),
            stream_id: StreamId(u16::from_be_bytes([s0, s1])),
            digest: [d0, d1, d2, d3],
            length: u16::from_be_bytes([l0, l1]),
        }
    }

    /// Write the header fields into the first 11 bytes of `body`.
    pub fn pack(&self, body: &mut [u8; RELAY_BODY_LEN]) {
        let [r0, r1] = self.recognized.to_be_bytes();
        let [s0, s1] = self.stream_id.0.to_be_bytes();
        let [d0, d1, d2, d3] = self.digest;
        let [l0, l1] = self.length.to_be_bytes();
        let hdr = [self.cmd.0, r0, r1, s0, s1, d0, d1, d2, d3, l0, l1];
        let (head, _) = body.split_at_mut(RELAY_HEADER_LEN);
        head.copy_from_slice(&hdr);
    }
}

/// Everything that can be wrong with a relay message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayMsgError {
    /// Length field above 498: C tor closes the circuit
    /// (relay.c: "Relay cell length field too long").
    #[error("relay header length {0} exceeds {RELAY_DATA_MAX}")]
    LengthTooLarge(u16),
    /// A field ran past the end of the message.
    #[error("{parsing} truncated: a field needed {wanted} bytes, {available} left")]
    Truncated {
        parsing: &'static str,
        wanted: usize,
        available: usize,
    },
    /// A field had a value the format does not allow.
    #[error("malformed {parsing}: {reason}")]
    Malformed {
        parsing: &'static str,
        reason: &'static str,
    },
    /// A target host that is neither an IP address nor a name made of
    /// letters, digits, '-', '_' and '.'. C tor accepts the BEGIN and then
    /// fails the resolve (dns.c:dns_resolve_impl via
    /// address_is_invalid_destination), so the answer is END(RESOLVEFAILED).
    #[error("{parsing}: target host is not a valid address or DNS name")]
    BadHostname { parsing: &'static str },
    /// Something to encode does not fit.
    #[error("{what} too long: {len} bytes, at most {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

impl RelayMsgError {
    pub(crate) fn short(parsing: &'static str) -> impl FnOnce(Short) -> RelayMsgError {
        move |s| RelayMsgError::Truncated {
            parsing,
            wanted: s.wanted,
            available: s.available,
        }
    }

    pub(crate) fn overflow(what: &'static str) -> impl FnOnce(Overflow) -> RelayMsgError {
        move |o| RelayMsgError::TooLong {
            what,
            len: o.wanted,
            max: o.room,
        }
    }

    /// The END reason for a stream whose opening message (BEGIN, RESOLVE)
    /// failed to parse: TORPROTOCOL (connection_edge.c:begin_cell_parse),
    /// except a bad host name, which C tor reports as RESOLVEFAILED.
    pub fn end_reason(&self) -> EndReason {
        match self {
            RelayMsgError::BadHostname { .. } => EndReason::RESOLVEFAILED,
            _ => EndReason::TORPROTOCOL,
        }
    }

    /// The DESTROY reason when the fault closes the circuit (bad header
    /// length, malformed circuit-level message): PROTOCOL.
    pub fn destroy_reason(&self) -> DestroyReason {
        DestroyReason::PROTOCOL
    }
}

/// Split a decrypted, recognized relay cell body into header and data.
pub fn parse_relay_body(
    body: &[u8; RELAY_BODY_LEN],
) -> Result<(RelayHeader, &[u8]), RelayMsgError> {
    let hdr = RelayHeader::unpack(body);
    let end = RELAY_HEADER_LEN + usize::from(hdr.length);
    let data = body
        .get(RELAY_HEADER_LEN..end)
        .ok_or(RelayMsgError::LengthTooLarge(hdr.length))?;
    Ok((hdr, data))
}

/// A typed relay message body, one struct per command.
pub trait RelayBody<'a>: Sized {
    /// The command this message travels under.
    const CMD: RelayCmd;
    /// Parse the `Length` data bytes of a relay cell.
    fn decode(data: &'a [u8]) -> Result<Self, RelayMsgError>;
    /// Write the data bytes (at most 498).
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError>;
}

/// Build a relay cell body in `out`: header (Recognized and Digest zero, for
/// relay crypto to fill), `data`, then 4 zero bytes and random padding to
/// 509 (relay.c:pad_cell_payload / relay_cell_pad; requirements.md §4.1).
/// The padding must be random: authenticated SENDMEs rely on the peer not
/// being able to predict the cell.
pub fn encode_relay_data<R: Rng + ?Sized>(
    cmd: RelayCmd,
    stream_id: StreamId,
    data: &[u8],
    rng: &mut R,
    out: &mut [u8; RELAY_BODY_LEN],
) -> Result<(), RelayMsgError> {
    encode_with(cmd, stream_id, rng, out, |w| {
        w.put(data).map_err(RelayMsgError::overflow("relay data"))
    })
}

/// Like [`encode_relay_data`], writing a typed message straight into `out`.
pub fn encode_relay_msg<'m, M: RelayBody<'m>, R: Rng + ?Sized>(
    stream_id: StreamId,
    msg: &M,
    rng: &mut R,
    out: &mut [u8; RELAY_BODY_LEN],
) -> Result<(), RelayMsgError> {
    encode_with(M::CMD, stream_id, rng, out, |w| msg.encode_onto(w))
}

/// The relay message layout of one hop of a circuit: v0 with tor1 crypto,
/// v1 with CGO (relay_msg.h `relay_cell_fmt_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayFormat {
    V0,
    V1,
}

impl RelayFormat {
    /// Most data one DATA cell carries: 498, or 488.
    pub const fn data_max(self) -> usize {
        match self {
            RelayFormat::V0 => RELAY_DATA_MAX,
            RelayFormat::V1 => V1_DATA_MAX,
        }
    }

    /// Command, stream and data of a recognized cell body.
    pub fn parse(
        self,
        body: &[u8; RELAY_BODY_LEN],
    ) -> Result<(RelayCmd, StreamId, &[u8]), RelayMsgError> {
        match self {
            RelayFormat::V0 => {
                parse_relay_body(body).map(|(hdr, data)| (hdr.cmd, hdr.stream_id, data))
            }
            RelayFormat::V1 => parse_relay_body_v1(body),
        }
    }

    /// [`encode_relay_data`] or [`encode_relay_data_v1`].
    pub fn encode_data<R: Rng + ?Sized>(
        self,
        cmd: RelayCmd,
        stream_id: StreamId,
        data: &[u8],
        rng: &mut R,
        out: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<(), RelayMsgError> {
        match self {
            RelayFormat::V0 => encode_relay_data(cmd, stream_id, data, rng, out),
            RelayFormat::V1 => encode_relay_data_v1(cmd, stream_id, data, rng, out),
        }
    }

    /// [`encode_relay_msg`] or [`encode_relay_msg_v1`].
    pub fn encode_msg<'m, M: RelayBody<'m>, R: Rng + ?Sized>(
        self,
        stream_id: StreamId,
        msg: &M,
        rng: &mut R,
        out: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<(), RelayMsgError> {
        match self {
            RelayFormat::V0 => encode_relay_msg(stream_id, msg, rng, out),
            RelayFormat::V1 => encode_relay_msg_v1(stream_id, msg, rng, out),
        }
    }
}

fn encode_with<R: Rng + ?Sized>(
    cmd: RelayCmd,
    stream_id: StreamId,
    rng: &mut R,
    out: &mut [u8; RELAY_BODY_LEN],
    body: impl FnOnce(&mut SliceWriter<'_>) -> Result<(), RelayMsgError>,
) -> Result<(), RelayMsgError> {
    let (_, data_area) = out.split_at_mut(RELAY_HEADER_LEN);
    let mut w = SliceWriter::new(data_area);
    body(&mut w)?;
    let len = w.written();
    // INVARIANT: the writer is bounded by the 498-byte data area.
    let length = u16::try_from(len).unwrap_or(0);
    RelayHeader {
        cmd,
        recognized: 0,
        stream_id,
        digest: [0; 4],
        length,
    }
    .pack(out);
    pad_after(out, RELAY_HEADER_LEN.saturating_add(len), rng);
    Ok(())
}

/// After a message ending at `end`: 4 zero bytes, then random bytes to
/// the end of the body (relay.c:relay_cell_pad; both formats).
fn pad_after<R: Rng + ?Sized>(out: &mut [u8; RELAY_BODY_LEN], end: usize, rng: &mut R) {
    let pad_start = end.saturating_add(RELAY_PADDING_GAP).min(RELAY_BODY_LEN);
    if let Some(gap) = out.get_mut(end..pad_start) {
        gap.fill(0);
    }
    if let Some(pad) = out.get_mut(pad_start..) {
        rng.fill_bytes(pad);
    }
}

/// Every relay message oxit parses, plus [`AnyRelayMsg::Unrecognized`] for
/// the rest (conflux, onion-service, flow-control and circuit-padding
/// commands are carried by number for the caller to drop or refuse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyRelayMsg<'a> {
    Begin(Begin),
    Data(Data<'a>),
    End(End),
    Connected(Connected),
    Sendme(Sendme),
    Extend(Extend),
    Truncate(Truncate),
    Truncated(Truncated),
    Drop(Drop),
    Resolve(Resolve),
    Resolved(Resolved),
    BeginDir(BeginDir),
    Extend2(Extend2),
    Extended2(Extended2),
    Unrecognized { cmd: RelayCmd, data: &'a [u8] },
}

macro_rules! any_relay_dispatch {
    ($($var:ident),*) => {
        impl<'a> AnyRelayMsg<'a> {
            /// Parse `data` as a message of command `cmd`.
            pub fn decode(cmd: RelayCmd, data: &'a [u8]) -> Result<Self, RelayMsgError> {
                Ok(match cmd {
                    $(<$var as RelayBody<'a>>::CMD => AnyRelayMsg::$var(<$var>::decode(data)?),)*
                    _ => AnyRelayMsg::Unrecognized { cmd, data },
                })
            }

            /// The command of this message.
            pub fn cmd(&self) -> RelayCmd {
                match self {
                    $(AnyRelayMsg::$var(_) => <$var as RelayBody<'a>>::CMD,)*
                    AnyRelayMsg::Unrecognized { cmd, .. } => *cmd,
                }
            }

            /// Write the data bytes of this message.
            pub fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
                match self {
                    $(AnyRelayMsg::$var(m) => m.encode_onto(w),)*
                    AnyRelayMsg::Unrecognized { data, .. } => {
                        w.put(data).map_err(RelayMsgError::overflow("relay data"))
                    }
                }
            }
        }
    };
}

any_relay_dispatch!(
    Begin, Data, End, Connected, Sendme, Extend, Truncate, Truncated, Drop, Resolve, Resolved,
    BeginDir, Extend2, Extended2
);

impl<'a> AnyRelayMsg<'a> {
    /// Build a whole relay cell body for this message (see
    /// [`encode_relay_data`]).
    pub fn encode<R: Rng + ?Sized>(
        &self,
        stream_id: StreamId,
        rng: &mut R,
        out: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<(), RelayMsgError> {
        encode_with(self.cmd(), stream_id, rng, out, |w| self.encode_onto(w))
    }
}

/// What an exit accepts on an open or opening stream (StreamID ≠ 0). Only
/// these parsers are reachable through it, so a peer cannot exercise the
/// others (arti's `restricted_msg!` rationale). `Sendme` here is a stream
/// SENDME (empty body; §5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStreamMsg<'a> {
    Begin(Begin),
    BeginDir(BeginDir),
    Data(Data<'a>),
    End(End),
    Sendme(Sendme),
    Resolve(Resolve),
}

impl<'a> ExitStreamMsg<'a> {
    /// Parse a message for an exit stream. `Ok(None)` means the command is
    /// not one an exit stream takes (CONNECTED, RESOLVED, EXTEND2, unknown
    /// commands, ...): the caller drops it, as C tor does for recognized
    /// cells it does not handle (requirements.md §4.1).
    pub fn decode(cmd: RelayCmd, data: &'a [u8]) -> Result<Option<Self>, RelayMsgError> {
        Ok(Some(match cmd {
            RelayCmd::BEGIN => ExitStreamMsg::Begin(Begin::decode(data)?),
            RelayCmd::BEGIN_DIR => ExitStreamMsg::BeginDir(BeginDir::decode(data)?),
            RelayCmd::DATA => ExitStreamMsg::Data(Data::decode(data)?),
            RelayCmd::END => ExitStreamMsg::End(End::decode(data)?),
            RelayCmd::SENDME => ExitStreamMsg::Sendme(Sendme::decode(data)?),
            RelayCmd::RESOLVE => ExitStreamMsg::Resolve(Resolve::decode(data)?),
            _ => return Ok(None),
        }))
    }
}

/// What a relay accepts on the circuit itself (StreamID 0) at its hop.
/// EXTEND is here only so that it can be refused (§8.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitMsg {
    Sendme(Sendme),
    Extend2(Extend2),
    Extend(Extend),
    Truncate(Truncate),
    Drop(Drop),
}

impl CircuitMsg {
    /// Parse a circuit-level message. `Ok(None)` means the command is not
    /// one a relay takes at StreamID 0; the caller drops it (or, for a
    /// stream command with StreamID 0, drops it per §4.1).
    pub fn decode(cmd: RelayCmd, data: &[u8]) -> Result<Option<Self>, RelayMsgError> {
        Ok(Some(match cmd {
            RelayCmd::SENDME => CircuitMsg::Sendme(Sendme::decode(data)?),
            RelayCmd::EXTEND2 => CircuitMsg::Extend2(Extend2::decode(data)?),
            RelayCmd::EXTEND => CircuitMsg::Extend(Extend::decode(data)?),
            RelayCmd::TRUNCATE => CircuitMsg::Truncate(Truncate::decode(data)?),
            RelayCmd::DROP => CircuitMsg::Drop(Drop::decode(data)?),
            _ => return Ok(None),
        }))
    }
}
