//! Bodies of the circuit-management channel cells: CREATE (refused),
//! CREATE_FAST / CREATED_FAST, CREATE2 / CREATED2 and DESTROY
//! (requirements.md §3.1, §3.4, §3.7).
//!
//! Only the byte layout lives here. Which handshake types are acceptable
//! beyond what C tor's parser refuses, and what to answer, is the circuit
//! layer's business.

use std::fmt;

use super::codec::Reader;
use super::{CELL_BODY_LEN, CellError, ChanBody, ChanCmd};

/// Largest CREATE2 HLEN: the body minus HTYPE and HLEN
/// (`MAX_CREATE_LEN = 509 - 4`, onion.c:parse_create2_payload).
pub const MAX_CREATE2_HLEN: usize = CELL_BODY_LEN - 4;

/// Largest CREATED2 HLEN: the body minus HLEN (onion.c:parse_created_cell).
pub const MAX_CREATED2_HLEN: usize = CELL_BODY_LEN - 2;

/// A circuit handshake type (HTYPE; or.h `ONION_HANDSHAKE_TYPE_*`). Open: the
/// circuit layer refuses what it does not implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandshakeType(u16);

impl HandshakeType {
    /// TAP: refused by 0.4.9 relays (§3.1).
    pub const TAP: HandshakeType = HandshakeType(0);
    /// "fast": only valid as CREATE_FAST, never inside CREATE2/EXTEND2.
    pub const FAST: HandshakeType = HandshakeType(1);
    /// ntor, HLEN 84 (§3.2).
    pub const NTOR: HandshakeType = HandshakeType(2);
    /// ntor v3 (§3.3).
    pub const NTOR_V3: HandshakeType = HandshakeType(3);

    pub const fn new(v: u16) -> Self {
        HandshakeType(v)
    }

    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for HandshakeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("TAP"),
            1 => f.write_str("fast"),
            2 => f.write_str("ntor"),
            3 => f.write_str("ntor-v3"),
            n => write!(f, "handshake type {n}"),
        }
    }
}

/// CREATE (cmd 1, TAP). Recognised only so that it can be refused: 0.4.9
/// closes the circuit with reason PROTOCOL (requirements.md §3.1). Its body is
/// not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Create;

impl ChanBody for Create {
    const CMD: ChanCmd = ChanCmd::CREATE;
    fn decode(_body: &[u8]) -> Result<Self, CellError> {
        Ok(Create)
    }
    fn encode_onto(&self, _out: &mut Vec<u8>) -> Result<(), CellError> {
        Ok(())
    }
}

/// CREATE2: `HTYPE(2) | HLEN(2) | HDATA(HLEN)`, HLEN ≤ 505
/// (requirements.md §3.1; onion.c:parse_create2_payload).
///
/// An exit answers ntor (2) and ntor-v3 (3) with CREATED2, and anything else
/// with DESTROY(PROTOCOL) (onion.c:check_create_cell). The decoder already
/// refuses HTYPE 1 ("fast"), as C tor's parser does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create2 {
    htype: HandshakeType,
    // INVARIANT: hdata.len() <= MAX_CREATE2_HLEN
    hdata: Vec<u8>,
}

impl Create2 {
    pub fn new(htype: HandshakeType, hdata: Vec<u8>) -> Result<Self, CellError> {
        if hdata.len() > MAX_CREATE2_HLEN {
            return Err(CellError::HandshakeTooLong {
                parsing: "CREATE2",
                hlen: hdata.len(),
                max: MAX_CREATE2_HLEN,
            });
        }
        Ok(Create2 { htype, hdata })
    }

    pub fn htype(&self) -> HandshakeType {
        self.htype
    }

    pub fn hdata(&self) -> &[u8] {
        &self.hdata
    }

    pub fn into_hdata(self) -> Vec<u8> {
        self.hdata
    }
}

impl ChanBody for Create2 {
    const CMD: ChanCmd = ChanCmd::CREATE2;
    fn decode(body: &[u8]) -> Result<Self, CellError> {
        const P: &str = "CREATE2";
        let mut r = Reader::new(body);
        let htype = HandshakeType(r.u16().map_err(CellError::short(P))?);
        let hlen = usize::from(r.u16().map_err(CellError::short(P))?);
        if hlen > MAX_CREATE2_HLEN {
            return Err(CellError::HandshakeTooLong {
                parsing: P,
                hlen,
                max: MAX_CREATE2_HLEN,
            });
        }
        if htype == HandshakeType::FAST {
            return Err(CellError::Malformed {
                parsing: P,
                reason: "handshake type 1 (fast) is not allowed in CREATE2",
            });
        }
        let hdata = r.take(hlen).map_err(CellError::short(P))?.to_vec();
        Ok(Create2 { htype, hdata })
    }
    fn encode_onto(&self, out: &mut Vec<u8>) -> Result<(), CellError> {
        out.extend_from_slice(&self.htype.0.to_be_bytes());
        put_len_prefixed(out, &self.hdata, "CREATE2 HDATA", MAX_CREATE2_HLEN)
    }
}

fn put_len_prefixed(
    out: &mut Vec<u8>,
    data: &[u8],
    what: &'static str,
    max: usize,
) -> Result<(), CellError> {
    let len = u16::try_from(data.len())
        .ok()
        .filter(|&l| usize::from(l) <= max)
        .ok_or(CellError::TooLong {
            what,
            len: data.len(),
            max,
        })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    Ok(())
}

/// CREATED2: `HLEN(2) | HDATA(HLEN)`, HLEN ≤ 507. An exit sends it in reply
/// to CREATE2, and receives it from the next hop after an EXTEND2, to be
/// rewrapped as EXTENDED2 (requirements.md §8.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created2 {
    // INVARIANT: hdata.len() <= MAX_CREATED2_HLEN
    hdata: Vec<u8>,
}

impl Created2 {
    pub fn new(hdata: Vec<u8>) -> Result<Self, CellError> {
        if hdata.len() > MAX_CREATED2_HLEN {
            return Err(CellError::HandshakeTooLong {
                parsing: "CREATED2",
                hlen: hdata.len(),
                max: MAX_CREATED2_HLEN,
            });
        }
        Ok(Created2 { hdata })
    }

    pub fn hdata(&self) -> &[u8] {
        &self.hdata
    }

    pub fn into_hdata(self) -> Vec<u8> {
        self.hdata
    }
}

impl ChanBody for Created2 {
    const CMD: ChanCmd = ChanCmd::CREATED2;
    fn decode(body: &[u8]) -> Result<Self, CellError> {
        const P: &str = "CREATED2";
        let mut r = Reader::new(body);
        let hlen = usize::from(r.u16().map_err(CellError::short(P))?);
        if hlen > MAX_CREATED2_HLEN {
            return Err(CellError::HandshakeTooLong {
                parsing: P,
                hlen,
                max: MAX_CREATED2_HLEN,
            });
        }
        let hdata = r.take(hlen).map_err(CellError::short(P))?.to_vec();
        Ok(Created2 { hdata })
    }
    fn encode_onto(&self, out: &mut Vec<u8>) -> Result<(), CellError> {
        put_len_prefixed(out, &self.hdata, "CREATED2 HDATA", MAX_CREATED2_HLEN)
    }
}

/// CREATE_FAST: the client's 20 random bytes X (requirements.md §3.4).
/// An exit still answers it with CREATED_FAST (command.c).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateFast {
    x: [u8; 20],
}

impl CreateFast {
    pub fn new(x: [u8; 20]) -> Self {
        CreateFast { x }
    }

    pub fn x(&self) -> &[u8; 20] {
        &self.x
    }
}

impl ChanBody for CreateFast {
    const CMD: ChanCmd = ChanCmd::CREATE_FAST;
    fn decode(body: &[u8]) -> Result<Self, CellError> {
        let x = Reader::new(body)
            .array()
            .map_err(CellError::short("CREATE_FAST"))?;
        Ok(CreateFast { x })
    }
    fn encode_onto(&self, out: &mut Vec<u8>) -> Result<(), CellError> {
        out.extend_from_slice(&self.x);
        Ok(())
    }
}

/// CREATED_FAST: `Y(20) | KH(20)` (requirements.md §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedFast {
    y: [u8; 20],
    kh: [u8; 20],
}

impl CreatedFast {
    pub fn new(y: [u8; 20], kh: [u8; 20]) -> Self {
        CreatedFast { y, kh }
    }

    pub fn y(&self) -> &[u8; 20] {
        &self.y
    }

    /// The key hash proving knowledge of the derived keys.
    pub fn kh(&self) -> &[u8; 20] {
        &self.kh
    }
}

impl ChanBody for CreatedFast {
    const CMD: ChanCmd = ChanCmd::CREATED_FAST;
    fn decode(body: &[u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(body);
        let y = r.array().map_err(CellError::short("CREATED_FAST"))?;
        let kh = r.array().map_err(CellError::short("CREATED_FAST"))?;
        Ok(CreatedFast { y, kh })
    }
    fn encode_onto(&self, out: &mut Vec<u8>) -> Result<(), CellError> {
        out.extend_from_slice(&self.y);
        out.extend_from_slice(&self.kh);
        Ok(())
    }
}

/// Why a circuit is being destroyed (tor-spec §5.4; or.h
/// `END_CIRC_REASON_*`; requirements.md §3.7). Open: unknown values received
/// from a peer are kept as their number. Also carried by RELAY_TRUNCATE(D).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DestroyReason(u8);

macro_rules! destroy_reasons {
    ($($(#[$m:meta])* $name:ident = $val:expr;)*) => {
        impl DestroyReason {
            $($(#[$m])* pub const $name: DestroyReason = DestroyReason($val);)*

            /// The tor-spec name of a known reason.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

destroy_reasons! {
    /// No reason given.
    NONE = 0;
    /// Tor protocol violation.
    PROTOCOL = 1;
    /// Internal error.
    INTERNAL = 2;
    /// A client sent TRUNCATE.
    REQUESTED = 3;
    /// Not currently operating; trying to save bandwidth.
    HIBERNATING = 4;
    /// Out of memory, sockets, or circuit IDs.
    RESOURCELIMIT = 5;
    /// Unable to reach the next relay.
    CONNECTFAILED = 6;
    /// Connected to the next relay, but its identity was wrong.
    OR_IDENTITY = 7;
    /// The channel carrying this circuit died.
    CHANNEL_CLOSED = 8;
    /// The circuit has expired for being dirty or old.
    FINISHED = 9;
    /// Circuit construction took too long.
    TIMEOUT = 10;
    /// The circuit was destroyed without a client TRUNCATE; what a relay
    /// forwards in place of the reason it received (§3.7).
    DESTROYED = 11;
    /// Request for an unknown onion service.
    NOSUCHSERVICE = 12;
}

impl DestroyReason {
    pub const fn new(v: u8) -> Self {
        DestroyReason(v)
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

impl From<u8> for DestroyReason {
    fn from(v: u8) -> Self {
        DestroyReason(v)
    }
}

impl fmt::Display for DestroyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "unknown reason {}", self.0),
        }
    }
}

/// DESTROY: one reason byte (requirements.md §3.7). On receipt from the
/// client side, an exit closes the circuit's streams and forwards DESTROY
/// with reason DESTROYED, not the reason it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destroy {
    reason: DestroyReason,
}

impl Destroy {
    pub fn new(reason: DestroyReason) -> Self {
        Destroy { reason }
    }

    pub fn reason(&self) -> DestroyReason {
        self.reason
    }
}

impl ChanBody for Destroy {
    const CMD: ChanCmd = ChanCmd::DESTROY;
    fn decode(body: &[u8]) -> Result<Self, CellError> {
        let reason = Reader::new(body)
            .u8()
            .map_err(CellError::short("DESTROY"))?;
        Ok(Destroy {
            reason: DestroyReason(reason),
        })
    }
    fn encode_onto(&self, out: &mut Vec<u8>) -> Result<(), CellError> {
        out.push(self.reason.0);
        Ok(())
    }
}
