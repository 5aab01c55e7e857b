#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! Channel cells: framing, command numbers and typed bodies
//! (requirements.md §1.2–§1.7, §3.1, §3.4, §3.7, §8.2).
//!
//! This module owns the bytes of one cell on a channel: how the circuit ID,
//! command and body are laid out for each link protocol, the zero-copy
//! [`decode`] of one cell from a receive buffer, the encoders that append a
//! cell to a caller-provided `Vec<u8>`, and one struct per command body
//! ([`Versions`], [`Certs`], [`Create2`], [`Destroy`], ...), gathered in
//! [`AnyChanMsg`].
//!
//! It does not own what a cell *means*: the link handshake state machine
//! decides which command is allowed when, certificate contents are checked in
//! `crypto::cert`, and the relay cell body (509 bytes) is handed untouched to
//! relay crypto and then to [`crate::proto::relay_msg`].
//!
//! Wire layouts (tor-spec §3; requirements.md §1.2):
//!
//! ```text
//! fixed cell:    CircID(2 or 4) | Command(1) | Body(509)
//! variable cell: CircID(2 or 4) | Command(1) | Length(2) | Body(Length)
//! ```
//!
//! The circuit ID is 4 bytes once link protocol 4 or later is negotiated, and
//! 2 bytes before that: the first VERSIONS cell of every connection always has
//! a 2-byte circuit ID. Variable-length cells are VERSIONS and every command
//! ≥ 128, whatever the link version (C tor `cell_command_is_var_length`
//! treats "not yet negotiated" like v3+).

mod circ;
pub mod codec;
mod handshake;
#[cfg(test)]
mod tests;

use std::fmt;

pub use circ::{
    Create, Create2, CreateFast, Created2, CreatedFast, Destroy, DestroyReason, HandshakeType,
    MAX_CREATE2_HLEN, MAX_CREATED2_HLEN,
};
pub use handshake::{
    AuthChallenge, Authenticate, CertEntry, Certs, Netinfo, PaddingNegotiate, PaddingNegotiateCmd,
    Versions,
};

use codec::Short;

/// Length of a fixed cell's body (`CELL_PAYLOAD_SIZE`, or.h). 509 = 512 minus
/// the 3 header bytes of the original 2-byte-circuit-ID format.
pub const CELL_BODY_LEN: usize = 509;

/// Bytes of a fixed cell on the wire with 4-byte circuit IDs
/// (`CELL_MAX_NETWORK_SIZE`, or.h).
pub const FIXED_CELL_LEN_WIDE: usize = 514;

/// Bytes of a fixed cell on the wire with 2-byte circuit IDs (link v3 and
/// before negotiation).
pub const FIXED_CELL_LEN_NARROW: usize = 512;

/// Whether a negotiated link protocol uses 4-byte circuit IDs
/// (`MIN_LINK_PROTO_FOR_WIDE_CIRC_IDS` = 4, requirements.md §1.3).
pub const fn link_uses_wide_circ_ids(link_version: u16) -> bool {
    link_version >= 4
}

/// A circuit ID on one channel. Zero is not a circuit: it addresses the
/// channel itself (VERSIONS, NETINFO, PADDING, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CircId(u32);

impl CircId {
    /// The channel-level "circuit" 0.
    pub const CHANNEL: CircId = CircId(0);

    pub const fn new(id: u32) -> Self {
        CircId(id)
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    /// True for 0, the ID of channel-level cells.
    pub const fn is_channel(self) -> bool {
        self.0 == 0
    }

    /// True if the most significant bit of a 4-byte ID is set. On link v4+
    /// the initiator of a channel picks IDs with this bit set, so a CREATE2
    /// arriving on a channel we accepted must have it (requirements.md §1.7,
    /// §1.8; channel.c:channel_set_circid_type).
    pub const fn has_high_bit(self) -> bool {
        self.0 & 0x8000_0000 != 0
    }
}

impl fmt::Display for CircId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// A channel cell command (requirements.md §1.2; or.h `CELL_*`). Open: every
/// byte value is representable, so an unknown command can be carried to the
/// caller, which drops it (fixed) or ignores it (variable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChanCmd(u8);

macro_rules! chan_cmds {
    ($($(#[$m:meta])* $name:ident = $val:expr;)*) => {
        impl ChanCmd {
            $($(#[$m])* pub const $name: ChanCmd = ChanCmd($val);)*

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

chan_cmds! {
    /// Link padding; ignored on receipt.
    PADDING = 0;
    /// TAP circuit creation; refused with DESTROY(PROTOCOL) (§3.1).
    CREATE = 1;
    /// TAP reply; never sent by 0.4.9.
    CREATED = 2;
    /// A relay cell (509 encrypted bytes).
    RELAY = 3;
    /// Tear down a circuit (§3.7).
    DESTROY = 4;
    /// CREATE_FAST (§3.4).
    CREATE_FAST = 5;
    /// CREATED_FAST (§3.4).
    CREATED_FAST = 6;
    /// Link version negotiation; variable-length (§1.3).
    VERSIONS = 7;
    /// Time and addresses (§1.6).
    NETINFO = 8;
    /// A relay cell counted against the RELAY_EARLY limit (§4.4).
    RELAY_EARLY = 9;
    /// CREATE2 (§3.1).
    CREATE2 = 10;
    /// CREATED2 (§3.1).
    CREATED2 = 11;
    /// Channel padding negotiation, link v5 (§8.2).
    PADDING_NEGOTIATE = 12;
    /// Variable-length padding.
    VPADDING = 128;
    /// Certificates (§1.4).
    CERTS = 129;
    /// Responder's authentication challenge (§1.5).
    AUTH_CHALLENGE = 130;
    /// Initiator's authentication (§1.7).
    AUTHENTICATE = 131;
    /// Reserved; allowed before VERSIONS and ignored.
    AUTHORIZE = 132;
}

impl ChanCmd {
    pub const fn new(v: u8) -> Self {
        ChanCmd(v)
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    /// Whether cells with this command are variable-length: VERSIONS, or any
    /// command ≥ 128 (tor-spec §3; proto_cell.c:cell_command_is_var_length).
    pub const fn is_var_len(self) -> bool {
        self.0 == 7 || self.0 >= 128
    }
}

impl From<u8> for ChanCmd {
    fn from(v: u8) -> Self {
        ChanCmd(v)
    }
}

impl fmt::Display for ChanCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "command {}", self.0),
        }
    }
}

/// Everything that can be wrong with a channel cell or its body.
///
/// Every variant is a definite fault: "not enough bytes yet" is
/// `Ok(None)` from [`decode`], never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CellError {
    /// A field ran past the end of the body.
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
    /// Something to encode does not fit its length field or the cell.
    #[error("{what} too long: {len} bytes, at most {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// VERSIONS body of odd length (channeltls.c:channel_tls_process_versions_cell
    /// closes the connection).
    #[error("VERSIONS body has odd length {0}")]
    OddVersionsLength(usize),
    /// Two certificates of one known type 1–7 in a CERTS cell
    /// (channeltls.c:channel_tls_process_certs_cell: "Duplicate ...").
    #[error("CERTS cell carries two certificates of type {0}")]
    DuplicateCert(u8),
    /// A handshake length field larger than the cell allows.
    #[error("{parsing}: handshake length {hlen} exceeds the maximum {max}")]
    HandshakeTooLong {
        parsing: &'static str,
        hlen: usize,
        max: usize,
    },
    /// A 2-byte circuit-ID cell was asked to carry a larger ID.
    #[error("circuit ID {0} does not fit a 2-byte circuit ID field")]
    CircIdTooWide(CircId),
    /// A typed body was asked to decode a cell of another command.
    #[error("expected a {expected} cell, got {got}")]
    WrongCommand { expected: ChanCmd, got: ChanCmd },
}

impl CellError {
    pub(crate) fn short(parsing: &'static str) -> impl FnOnce(Short) -> CellError {
        move |s| CellError::Truncated {
            parsing,
            wanted: s.wanted,
            available: s.available,
        }
    }

    /// The DESTROY reason to send when this error is about a circuit's cell
    /// (a malformed CREATE2, say). Channel-level faults close the channel
    /// instead; C tor logs them as protocol warnings.
    pub fn destroy_reason(&self) -> DestroyReason {
        DestroyReason::PROTOCOL
    }
}

/// One cell, borrowed from the receive buffer: nothing is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawCell<'a> {
    circ_id: CircId,
    cmd: ChanCmd,
    body: &'a [u8],
}

impl<'a> RawCell<'a> {
    /// A cell from its parts. For a fixed-length command, `body` should be
    /// [`CELL_BODY_LEN`] bytes; [`AnyChanMsg::decode`] checks it.
    pub fn new(circ_id: CircId, cmd: ChanCmd, body: &'a [u8]) -> Self {
        RawCell { circ_id, cmd, body }
    }

    pub fn circ_id(&self) -> CircId {
        self.circ_id
    }

    pub fn cmd(&self) -> ChanCmd {
        self.cmd
    }

    /// The body: 509 bytes for a fixed cell (padding included), `Length`
    /// bytes for a variable one.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The body as a fixed-size array, if it is a full fixed cell body (what
    /// relay crypto wants for RELAY / RELAY_EARLY).
    pub fn fixed_body(&self) -> Option<&'a [u8; CELL_BODY_LEN]> {
        self.body.try_into().ok()
    }
}

/// Bytes of the circuit ID field.
pub const fn circ_id_len(wide: bool) -> usize {
    if wide { 4 } else { 2 }
}

/// Decode one cell from the front of `buf`.
///
/// `wide` selects 4-byte circuit IDs: false for the first VERSIONS cell (and
/// for link v3), true once v4 or v5 is negotiated. Returns the cell and the
/// number of bytes it took, or `Ok(None)` if `buf` does not yet hold a whole
/// cell (read more and call again).
///
/// Framing itself cannot be wrong: any command byte is a fixed or variable
/// cell by the rule of [`ChanCmd::is_var_len`] and any length fits. The
/// `Result` is there so a stricter framing rule can be added without changing
/// callers; today it is always `Ok`.
pub fn decode(buf: &[u8], wide: bool) -> Result<Option<(RawCell<'_>, usize)>, CellError> {
    let id_len = circ_id_len(wide);
    let mut r = codec::Reader::new(buf);
    let Ok(id_bytes) = r.take(id_len) else {
        return Ok(None);
    };
    let circ_id = id_bytes
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    let Ok(cmd) = r.u8().map(ChanCmd) else {
        return Ok(None);
    };
    let (body_len, header_len) = if cmd.is_var_len() {
        let Ok(len) = r.u16() else {
            return Ok(None);
        };
        // id_len is 2 or 4: no overflow in the header sums.
        (usize::from(len), id_len.saturating_add(3))
    } else {
        (CELL_BODY_LEN, id_len.saturating_add(1))
    };
    let Ok(body) = r.take(body_len) else {
        return Ok(None);
    };
    Ok(Some((
        RawCell {
            circ_id: CircId(circ_id),
            cmd,
            body,
        },
        header_len.saturating_add(body_len),
    )))
}

/// The bytes the cell at the front of `buf` takes on the wire, as far as
/// `buf` tells: while its header is incomplete, the header's length so
/// far known (a caller completing a cell byte-range by byte-range asks
/// again once it has that much).
pub fn framed_len(buf: &[u8], wide: bool) -> usize {
    // id_len is 2 or 4: none of these sums can overflow.
    let id_len = circ_id_len(wide);
    let fixed_header = id_len.saturating_add(1);
    let var_header = id_len.saturating_add(3);
    let Some(&cmd) = buf.get(id_len) else {
        return fixed_header;
    };
    if !ChanCmd(cmd).is_var_len() {
        return fixed_header.saturating_add(CELL_BODY_LEN);
    }
    match buf.get(fixed_header..var_header) {
        Some(&[hi, lo]) => var_header.saturating_add(usize::from(u16::from_be_bytes([hi, lo]))),
        _ => var_header,
    }
}

fn put_circ_id(circ_id: CircId, wide: bool, out: &mut Vec<u8>) -> Result<(), CellError> {
    if wide {
        out.extend_from_slice(&circ_id.0.to_be_bytes());
    } else {
        let narrow = u16::try_from(circ_id.0).map_err(|_| CellError::CircIdTooWide(circ_id))?;
        out.extend_from_slice(&narrow.to_be_bytes());
    }
    Ok(())
}

/// Append a cell with an already-encoded body to `out`. Fixed-length bodies
/// shorter than 509 bytes are padded with NUL (tor-spec §3: non-RELAY fixed
/// cells are zero-padded; RELAY bodies arrive here already 509 bytes long).
/// On error nothing is appended.
pub fn encode_raw(
    circ_id: CircId,
    cmd: ChanCmd,
    body: &[u8],
    wide: bool,
    out: &mut Vec<u8>,
) -> Result<(), CellError> {
    encode_with(circ_id, cmd, wide, out, |out| {
        out.extend_from_slice(body);
        Ok(())
    })
}

/// Append a typed message as one cell to `out`, writing its body in place
/// (no intermediate buffer). On error nothing is appended.
pub fn encode_msg<M: ChanBody>(
    circ_id: CircId,
    msg: &M,
    wide: bool,
    out: &mut Vec<u8>,
) -> Result<(), CellError> {
    encode_with(circ_id, M::CMD, wide, out, |out| msg.encode_onto(out))
}

fn encode_with(
    circ_id: CircId,
    cmd: ChanCmd,
    wide: bool,
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), CellError>,
) -> Result<(), CellError> {
    let start = out.len();
    let res = (|| {
        put_circ_id(circ_id, wide, out)?;
        out.push(cmd.0);
        if cmd.is_var_len() {
            let len_at = out.len();
            out.extend_from_slice(&[0, 0]);
            body(out)?;
            let len = out.len().saturating_sub(len_at).saturating_sub(2);
            let len16 = u16::try_from(len).map_err(|_| CellError::TooLong {
                what: "variable-length cell body",
                len,
                max: usize::from(u16::MAX),
            })?;
            if let Some(slot) = out.get_mut(len_at..len_at.saturating_add(2)) {
                slot.copy_from_slice(&len16.to_be_bytes());
            }
        } else {
            let body_at = out.len();
            body(out)?;
            let len = out.len().saturating_sub(body_at);
            if len > CELL_BODY_LEN {
                return Err(CellError::TooLong {
                    what: "fixed cell body",
                    len,
                    max: CELL_BODY_LEN,
                });
            }
            out.resize(body_at.saturating_add(CELL_BODY_LEN), 0);
        }
        Ok(())
    })();
    if res.is_err() {
        out.truncate(start);
    }
    res
}

/// A typed channel-cell body: one struct per command, as in tor-spec.
pub trait ChanBody: Sized {
    /// The command this body travels under.
    const CMD: ChanCmd;
    /// Parse a body. For fixed cells `body` is the 509 bytes with padding,
    /// which decoders ignore.
    fn decode(body: &[u8]) -> Result<Self, CellError>;
    /// Append the body (without padding) to `out`.
    fn encode_onto(&self, out: &mut Vec<u8>) -> Result<(), CellError>;
}

/// Every channel message oxit understands, plus [`AnyChanMsg::Unrecognized`].
///
/// RELAY and RELAY_EARLY bodies stay borrowed: they are ciphertext for relay
/// crypto, not something to parse here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyChanMsg<'a> {
    /// PADDING: ignore (requirements.md §8.2).
    Padding,
    /// VPADDING with its body length: ignore.
    Vpadding(u16),
    /// CREATE (TAP): refuse with DESTROY(PROTOCOL) (§3.1).
    Create(Create),
    Relay(&'a [u8; CELL_BODY_LEN]),
    RelayEarly(&'a [u8; CELL_BODY_LEN]),
    Destroy(Destroy),
    CreateFast(CreateFast),
    CreatedFast(CreatedFast),
    Versions(Versions),
    Netinfo(Netinfo),
    Create2(Create2),
    Created2(Created2),
    PaddingNegotiate(PaddingNegotiate),
    Certs(Certs),
    AuthChallenge(AuthChallenge),
    Authenticate(Authenticate),
    /// AUTHORIZE: allowed before VERSIONS, otherwise ignored (§1.3).
    Authorize(&'a [u8]),
    /// Any other command (CREATED included: 0.4.9 never sends it). Fixed:
    /// drop; variable: ignore (tor-spec §3, requirements.md §1.2).
    Unrecognized {
        cmd: ChanCmd,
        body: &'a [u8],
    },
}

impl<'a> AnyChanMsg<'a> {
    /// Parse the body of `cell` according to its command.
    pub fn decode(cell: &RawCell<'a>) -> Result<Self, CellError> {
        let body = cell.body;
        let fixed = || {
            cell.fixed_body().ok_or(CellError::Malformed {
                parsing: "relay cell",
                reason: "body is not 509 bytes",
            })
        };
        Ok(match cell.cmd {
            ChanCmd::PADDING => AnyChanMsg::Padding,
            ChanCmd::VPADDING => AnyChanMsg::Vpadding(u16::try_from(body.len()).unwrap_or(0)),
            ChanCmd::CREATE => AnyChanMsg::Create(Create::decode(body)?),
            ChanCmd::RELAY => AnyChanMsg::Relay(fixed()?),
            ChanCmd::RELAY_EARLY => AnyChanMsg::RelayEarly(fixed()?),
            ChanCmd::DESTROY => AnyChanMsg::Destroy(Destroy::decode(body)?),
            ChanCmd::CREATE_FAST => AnyChanMsg::CreateFast(CreateFast::decode(body)?),
            ChanCmd::CREATED_FAST => AnyChanMsg::CreatedFast(CreatedFast::decode(body)?),
            ChanCmd::VERSIONS => AnyChanMsg::Versions(Versions::decode(body)?),
            ChanCmd::NETINFO => AnyChanMsg::Netinfo(Netinfo::decode(body)?),
            ChanCmd::CREATE2 => AnyChanMsg::Create2(Create2::decode(body)?),
            ChanCmd::CREATED2 => AnyChanMsg::Created2(Created2::decode(body)?),
            ChanCmd::PADDING_NEGOTIATE => {
                AnyChanMsg::PaddingNegotiate(PaddingNegotiate::decode(body)?)
            }
            ChanCmd::CERTS => AnyChanMsg::Certs(Certs::decode(body)?),
            ChanCmd::AUTH_CHALLENGE => AnyChanMsg::AuthChallenge(AuthChallenge::decode(body)?),
            ChanCmd::AUTHENTICATE => AnyChanMsg::Authenticate(Authenticate::decode(body)?),
            ChanCmd::AUTHORIZE => AnyChanMsg::Authorize(body),
            cmd => AnyChanMsg::Unrecognized { cmd, body },
        })
    }

    /// The command this message travels under.
    pub fn cmd(&self) -> ChanCmd {
        match self {
            AnyChanMsg::Padding => ChanCmd::PADDING,
            AnyChanMsg::Vpadding(_) => ChanCmd::VPADDING,
            AnyChanMsg::Create(_) => ChanCmd::CREATE,
            AnyChanMsg::Relay(_) => ChanCmd::RELAY,
            AnyChanMsg::RelayEarly(_) => ChanCmd::RELAY_EARLY,
            AnyChanMsg::Destroy(_) => ChanCmd::DESTROY,
            AnyChanMsg::CreateFast(_) => ChanCmd::CREATE_FAST,
            AnyChanMsg::CreatedFast(_) => ChanCmd::CREATED_FAST,
            AnyChanMsg::Versions(_) => ChanCmd::VERSIONS,
            AnyChanMsg::Netinfo(_) => ChanCmd::NETINFO,
            AnyChanMsg::Create2(_) => ChanCmd::CREATE2,
            AnyChanMsg::Created2(_) => ChanCmd::CREATED2,
            AnyChanMsg::PaddingNegotiate(_) => ChanCmd::PADDING_NEGOTIATE,
            AnyChanMsg::Certs(_) => ChanCmd::CERTS,
            AnyChanMsg::AuthChallenge(_) => ChanCmd::AUTH_CHALLENGE,
            AnyChanMsg::Authenticate(_) => ChanCmd::AUTHENTICATE,
            AnyChanMsg::Authorize(_) => ChanCmd::AUTHORIZE,
            AnyChanMsg::Unrecognized { cmd, .. } => *cmd,
        }
    }

    /// Append this message as one cell to `out`.
    pub fn encode(&self, circ_id: CircId, wide: bool, out: &mut Vec<u8>) -> Result<(), CellError> {
        match self {
            AnyChanMsg::Padding => encode_raw(circ_id, ChanCmd::PADDING, &[], wide, out),
            AnyChanMsg::Vpadding(n) => encode_with(circ_id, ChanCmd::VPADDING, wide, out, |out| {
                out.resize(out.len().saturating_add(usize::from(*n)), 0);
                Ok(())
            }),
            AnyChanMsg::Create(m) => encode_msg(circ_id, m, wide, out),
            AnyChanMsg::Relay(b) => encode_raw(circ_id, ChanCmd::RELAY, &b[..], wide, out),
            AnyChanMsg::RelayEarly(b) => {
                encode_raw(circ_id, ChanCmd::RELAY_EARLY, &b[..], wide, out)
            }
            AnyChanMsg::Destroy(m) => encode_msg(circ_id, m, wide, out),
            AnyChanMsg::CreateFast(m) => encode_msg(circ_id, m, wide, out),
            AnyChanMsg::CreatedFast(m) => encode_msg(circ_id, m, wide, out),
            AnyChanMsg::Versions(m) => encode_msg(circ_id, m, wide, out),
            AnyChanMsg::Netinfo(m) => encode_msg(circ_id, m, wide, out),
            AnyChanMsg::Create2(m) => encode_msg(circ_id, m, wide, out),
            AnyChanMsg::Created2(m) => encode_msg(circ_id, m, wide, out),
            AnyChanMsg::PaddingNegotiate(m) => encode_msg(circ_id, m, wide, out),
            AnyChanMsg::Certs(m) => encode_msg(circ_id, m, wide, out),
            AnyChanMsg::AuthChallenge(m) => encode_msg(circ_id, m, wide, out),
            AnyChanMsg::Authenticate(m) => encode_msg(circ_id, m, wide, out),
            AnyChanMsg::Authorize(b) => encode_raw(circ_id, ChanCmd::AUTHORIZE, b, wide, out),
            AnyChanMsg::Unrecognized { cmd, body } => encode_raw(circ_id, *cmd, body, wide, out),
        }
    }
}
