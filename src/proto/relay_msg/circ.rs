//! Circuit-level relay messages (StreamID 0, apart from stream SENDMEs):
//! SENDME, EXTEND2 / EXTENDED2, TRUNCATE / TRUNCATED, DROP, and EXTEND
//! (refused) (requirements.md §3.7, §5.7, §8.1).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use super::{RELAY_DATA_MAX, RelayBody, RelayCmd, RelayMsgError};
use crate::proto::cell::codec::{Reader, SliceWriter};
use crate::proto::cell::{Created2, DestroyReason, HandshakeType};

fn put(w: &mut SliceWriter<'_>, what: &'static str, b: &[u8]) -> Result<(), RelayMsgError> {
    w.put(b).map_err(RelayMsgError::overflow(what))
}

/// SENDME (requirements.md §5.7; sendme_cell.trunnel; sendme.c).
///
/// Empty body = version 0. Otherwise `VERSION(1) | DATA_LEN(2) | DATA`;
/// version 1 carries the tag of the cell it acknowledges ([`SendmeDigest`]:
/// 20 bytes on a tor1 circuit, 16 on a CGO one).
/// Versions other than 0 and 1 are kept ([`Sendme::Unknown`]) for the
/// circuit to police against `sendme_accept_min_version`; note that C tor's
/// trunnel parser refuses them outright, so the circuit should close.
/// Bytes after DATA are ignored, as trunnel does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sendme {
    /// Version 0 (empty, or version byte 0 with ignored data).
    V0,
    /// Version 1: authenticated by the digest tag.
    V1 { tag: SendmeDigest },
    /// Any other version, with its data.
    Unknown { version: u8, data: Vec<u8> },
}

impl RelayBody<'_> for Sendme {
    const CMD: RelayCmd = RelayCmd::SENDME;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        const P: &str = "SENDME";
        if data.is_empty() {
            return Ok(Sendme::V0);
        }
        let mut r = Reader::new(data);
        let version = r.u8().map_err(RelayMsgError::short(P))?;
        let len = r.u16().map_err(RelayMsgError::short(P))?;
        let body = r.take(usize::from(len)).map_err(RelayMsgError::short(P))?;
        Ok(match version {
            0 => Sendme::V0,
            1 => Sendme::V1 {
                tag: SendmeDigest::from_slice(body).ok_or(RelayMsgError::Malformed {
                    parsing: P,
                    reason: "version 1 DATA_LEN is neither 16 nor 20",
                })?,
            },
            version => Sendme::Unknown {
                version,
                data: body.to_vec(),
            },
        })
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        match self {
            Sendme::V0 => Ok(()),
            Sendme::V1 { tag } => {
                put(w, "SENDME", &[1, 0, tag.len])?;
                put(w, "SENDME", tag.as_bytes())
            }
            Sendme::Unknown { version, data } => {
                let len = u16::try_from(data.len()).map_err(|_| RelayMsgError::TooLong {
                    what: "SENDME data",
                    len: data.len(),
                    max: RELAY_DATA_MAX,
                })?;
                put(w, "SENDME", &[*version])?;
                put(w, "SENDME", &len.to_be_bytes())?;
                put(w, "SENDME", data)
            }
        }
    }
}

/// The tag an authenticated SENDME echoes: what the relay crypto reported
/// for the cell it acknowledges, 20 bytes on a tor1 circuit and 16 on a
/// CGO one (or.h `SENDME_TAG_LEN_TOR1`, `SENDME_TAG_LEN_CGO`;
/// sendme_cell.trunnel `data_len IN [16, 20]`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SendmeDigest {
    bytes: [u8; 20],
    /// 16 or 20.
    len: u8,
}

impl SendmeDigest {
    /// A tor1 tag: the cell's running SHA-1 digest.
    pub const fn tor1(bytes: [u8; 20]) -> Self {
        Self { bytes, len: 20 }
    }

    /// A CGO tag.
    pub fn cgo(tag: [u8; 16]) -> Self {
        let mut bytes = [0; 20];
        bytes[..16].copy_from_slice(&tag);
        Self { bytes, len: 16 }
    }

    /// A tag of either length; `None` for any other.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        match b.len() {
            16 => <[u8; 16]>::try_from(b).ok().map(Self::cgo),
            20 => <[u8; 20]>::try_from(b).ok().map(Self::tor1),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes
            .get(..usize::from(self.len))
            .unwrap_or(&self.bytes)
    }
}

impl Default for SendmeDigest {
    fn default() -> Self {
        Self::tor1([0; 20])
    }
}

impl From<crate::crypto::tor1::SendmeTag> for SendmeDigest {
    fn from(t: crate::crypto::tor1::SendmeTag) -> Self {
        Self::tor1(t.0)
    }
}

impl From<crate::crypto::cgo::CgoTag> for SendmeDigest {
    fn from(t: crate::crypto::cgo::CgoTag) -> Self {
        Self::cgo(t.0)
    }
}

/// One link specifier of an EXTEND2 (requirements.md §8.1;
/// ed25519_cert.trunnel:link_specifier). A known type whose length does not
/// match is a parse error, as in trunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSpec {
    /// Type 0: IPv4 address and port (6 bytes).
    Ipv4(SocketAddrV4),
    /// Type 1: IPv6 address and port (18 bytes).
    Ipv6(SocketAddrV6),
    /// Type 2: SHA-1 of the RSA identity key (20 bytes).
    LegacyId([u8; 20]),
    /// Type 3: Ed25519 identity key (32 bytes).
    Ed25519Id([u8; 32]),
    /// Any other type: ignored by C tor, kept here.
    Unrecognized { ls_type: u8, body: Vec<u8> },
}

impl LinkSpec {
    fn decode(r: &mut Reader<'_>) -> Result<Self, RelayMsgError> {
        const P: &str = "EXTEND2 link specifier";
        let ls_type = r.u8().map_err(RelayMsgError::short(P))?;
        let len = r.u8().map_err(RelayMsgError::short(P))?;
        let body = r.take(usize::from(len)).map_err(RelayMsgError::short(P))?;
        let bad = RelayMsgError::Malformed {
            parsing: P,
            reason: "length does not match the specifier type",
        };
        Ok(match ls_type {
            0 => {
                let b = <[u8; 6]>::try_from(body).map_err(|_| bad)?;
                let [a, b2, c, d, p0, p1] = b;
                LinkSpec::Ipv4(SocketAddrV4::new(
                    Ipv4Addr::new(a, b2, c, d),
                    u16::from_be_bytes([p0, p1]),
                ))
            }
            1 => {
                let b = <[u8; 18]>::try_from(body).map_err(|_| bad)?;
                let (a, p) = b.split_at(16);
                let a = <[u8; 16]>::try_from(a).map_err(|_| bad)?;
                let p = <[u8; 2]>::try_from(p).map_err(|_| bad)?;
                LinkSpec::Ipv6(SocketAddrV6::new(
                    Ipv6Addr::from(a),
                    u16::from_be_bytes(p),
                    0,
                    0,
                ))
            }
            2 => LinkSpec::LegacyId(<[u8; 20]>::try_from(body).map_err(|_| bad)?),
            3 => LinkSpec::Ed25519Id(<[u8; 32]>::try_from(body).map_err(|_| bad)?),
            ls_type => LinkSpec::Unrecognized {
                ls_type,
                body: body.to_vec(),
            },
        })
    }

    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        const W: &str = "EXTEND2 link specifier";
        match self {
            LinkSpec::Ipv4(a) => {
                put(w, W, &[0, 6])?;
                put(w, W, &a.ip().octets())?;
                put(w, W, &a.port().to_be_bytes())
            }
            LinkSpec::Ipv6(a) => {
                put(w, W, &[1, 18])?;
                put(w, W, &a.ip().octets())?;
                put(w, W, &a.port().to_be_bytes())
            }
            LinkSpec::LegacyId(id) => {
                put(w, W, &[2, 20])?;
                put(w, W, id)
            }
            LinkSpec::Ed25519Id(id) => {
                put(w, W, &[3, 32])?;
                put(w, W, id)
            }
            LinkSpec::Unrecognized { ls_type, body } => {
                let len = u8::try_from(body.len()).map_err(|_| RelayMsgError::TooLong {
                    what: W,
                    len: body.len(),
                    max: usize::from(u8::MAX),
                })?;
                put(w, W, &[*ls_type, len])?;
                put(w, W, body)
            }
        }
    }
}

/// Why an EXTEND2 is refused by [`Extend2::validate`] (requirements.md §8.1;
/// onion.c:extend_cell_from_extend2_cell_body, check_extend_cell). Every
/// case closes the circuit with DESTROY(PROTOCOL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Extend2Error {
    #[error("EXTEND2 has no RSA legacy identity link specifier")]
    MissingLegacyId,
    #[error("EXTEND2 has two RSA legacy identity link specifiers")]
    DuplicateLegacyId,
    #[error("EXTEND2 has two Ed25519 identity link specifiers")]
    DuplicateEd25519Id,
    #[error("EXTEND2 RSA legacy identity is all zero")]
    ZeroLegacyId,
    #[error("EXTEND2 has neither an IPv4 nor an IPv6 link specifier")]
    NoAddress,
    #[error("EXTEND2 uses obsolete handshake type {0}")]
    ObsoleteHandshake(HandshakeType),
}

impl Extend2Error {
    pub fn destroy_reason(&self) -> DestroyReason {
        DestroyReason::PROTOCOL
    }
}

/// Where a validated EXTEND2 asks to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extend2Target {
    /// The first IPv4 specifier, if any.
    pub ipv4: Option<SocketAddrV4>,
    /// The first IPv6 specifier, if any.
    pub ipv6: Option<SocketAddrV6>,
    /// SHA-1 of the next hop's RSA identity key (mandatory).
    pub rsa_id: [u8; 20],
    /// The next hop's Ed25519 identity, when the client sent one.
    pub ed25519_id: Option<[u8; 32]>,
}

/// EXTEND2: `NSPEC(1) | NSPEC × {LSTYPE(1) LSLEN(1) LSPEC} | HTYPE(2) |
/// HLEN(2) | HDATA` (requirements.md §8.1). A relay checks it with
/// [`Extend2::validate`], connects (or reuses a channel) to the target,
/// sends CREATE2 with HTYPE/HDATA unchanged and wraps the CREATED2 into
/// EXTENDED2. It must arrive in a RELAY_EARLY cell (§4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extend2 {
    specs: Vec<LinkSpec>,
    htype: HandshakeType,
    hdata: Vec<u8>,
}

impl Extend2 {
    /// Build an EXTEND2; the size is checked when it is encoded.
    pub fn new(specs: Vec<LinkSpec>, htype: HandshakeType, hdata: Vec<u8>) -> Self {
        Extend2 {
            specs,
            htype,
            hdata,
        }
    }

    pub fn specs(&self) -> &[LinkSpec] {
        &self.specs
    }

    pub fn htype(&self) -> HandshakeType {
        self.htype
    }

    pub fn hdata(&self) -> &[u8] {
        &self.hdata
    }

    /// The checks C tor applies before extending: exactly one legacy
    /// identity, not all zero; at most one Ed25519 identity; at least one
    /// address (the first of each family is used); and not TAP or "fast".
    pub fn validate(&self) -> Result<Extend2Target, Extend2Error> {
        let mut ipv4 = None;
        let mut ipv6 = None;
        let mut rsa_id = None;
        let mut ed25519_id = None;
        for s in &self.specs {
            match s {
                LinkSpec::Ipv4(a) => {
                    ipv4.get_or_insert(*a);
                }
                LinkSpec::Ipv6(a) => {
                    ipv6.get_or_insert(*a);
                }
                LinkSpec::LegacyId(id) => {
                    if rsa_id.replace(*id).is_some() {
                        return Err(Extend2Error::DuplicateLegacyId);
                    }
                }
                LinkSpec::Ed25519Id(id) => {
                    if ed25519_id.replace(*id).is_some() {
                        return Err(Extend2Error::DuplicateEd25519Id);
                    }
                }
                LinkSpec::Unrecognized { .. } => {}
            }
        }
        let rsa_id = rsa_id.ok_or(Extend2Error::MissingLegacyId)?;
        if rsa_id == [0; 20] {
            return Err(Extend2Error::ZeroLegacyId);
        }
        if ipv4.is_none() && ipv6.is_none() {
            return Err(Extend2Error::NoAddress);
        }
        if self.htype == HandshakeType::TAP || self.htype == HandshakeType::FAST {
            return Err(Extend2Error::ObsoleteHandshake(self.htype));
        }
        Ok(Extend2Target {
            ipv4,
            ipv6,
            rsa_id,
            ed25519_id,
        })
    }
}

impl RelayBody<'_> for Extend2 {
    const CMD: RelayCmd = RelayCmd::EXTEND2;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        const P: &str = "EXTEND2";
        let mut r = Reader::new(data);
        let n = r.u8().map_err(RelayMsgError::short(P))?;
        let specs = (0..n)
            .map(|_| LinkSpec::decode(&mut r))
            .collect::<Result<Vec<_>, _>>()?;
        let htype = HandshakeType::new(r.u16().map_err(RelayMsgError::short(P))?);
        let hlen = r.u16().map_err(RelayMsgError::short(P))?;
        let hdata = r
            .take(usize::from(hlen))
            .map_err(RelayMsgError::short(P))?
            .to_vec();
        Ok(Extend2 {
            specs,
            htype,
            hdata,
        })
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        let n = u8::try_from(self.specs.len()).map_err(|_| RelayMsgError::TooLong {
            what: "EXTEND2 link specifiers",
            len: self.specs.len(),
            max: usize::from(u8::MAX),
        })?;
        put(w, "EXTEND2", &[n])?;
        for s in &self.specs {
            s.encode_onto(w)?;
        }
        let hlen = u16::try_from(self.hdata.len()).map_err(|_| RelayMsgError::TooLong {
            what: "EXTEND2 HDATA",
            len: self.hdata.len(),
            max: RELAY_DATA_MAX,
        })?;
        put(w, "EXTEND2", &self.htype.get().to_be_bytes())?;
        put(w, "EXTEND2", &hlen.to_be_bytes())?;
        put(w, "EXTEND2 HDATA", &self.hdata)
    }
}

/// Largest EXTENDED2 HLEN: the relay data minus HLEN.
const MAX_EXTENDED2_HLEN: usize = RELAY_DATA_MAX - 2;

/// EXTENDED2: `HLEN(2) | HDATA`, the next hop's CREATED2 body rewrapped and
/// sent back to the client on StreamID 0 (requirements.md §8.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extended2 {
    // INVARIANT: hdata.len() <= MAX_EXTENDED2_HLEN
    hdata: Vec<u8>,
}

impl Extended2 {
    pub fn new(hdata: Vec<u8>) -> Result<Self, RelayMsgError> {
        if hdata.len() > MAX_EXTENDED2_HLEN {
            return Err(RelayMsgError::TooLong {
                what: "EXTENDED2 HDATA",
                len: hdata.len(),
                max: MAX_EXTENDED2_HLEN,
            });
        }
        Ok(Extended2 { hdata })
    }

    /// Rewrap a CREATED2 from the next hop. Fails if its HDATA (up to 507
    /// bytes) does not fit a relay message (496).
    pub fn from_created2(c: Created2) -> Result<Self, RelayMsgError> {
        Extended2::new(c.into_hdata())
    }

    pub fn hdata(&self) -> &[u8] {
        &self.hdata
    }
}

impl RelayBody<'_> for Extended2 {
    const CMD: RelayCmd = RelayCmd::EXTENDED2;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        const P: &str = "EXTENDED2";
        let mut r = Reader::new(data);
        let hlen = r.u16().map_err(RelayMsgError::short(P))?;
        let hdata = r.take(usize::from(hlen)).map_err(RelayMsgError::short(P))?;
        Extended2::new(hdata.to_vec())
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        let hlen = u16::try_from(self.hdata.len()).unwrap_or(u16::MAX);
        put(w, "EXTENDED2", &hlen.to_be_bytes())?;
        put(w, "EXTENDED2", &self.hdata)
    }
}

/// Decode the optional reason byte of TRUNCATE / TRUNCATED. C tor reads the
/// first data byte whatever the length (relay.c), and for an empty message
/// that is a zero gap byte: NONE.
fn reason_byte(data: &[u8]) -> DestroyReason {
    DestroyReason::new(data.first().copied().unwrap_or(0))
}

fn put_reason(w: &mut SliceWriter<'_>, r: DestroyReason) -> Result<(), RelayMsgError> {
    // NONE goes out as an empty message, which C reads the same way.
    if r == DestroyReason::NONE {
        Ok(())
    } else {
        put(w, "TRUNCATE reason", &[r.get()])
    }
}

/// TRUNCATE: tear down the circuit beyond this hop. A relay sends DESTROY
/// with this reason to its next hop, if any, and answers TRUNCATED(REQUESTED)
/// (requirements.md §3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncate {
    reason: DestroyReason,
}

impl Truncate {
    pub fn new(reason: DestroyReason) -> Self {
        Truncate { reason }
    }

    pub fn reason(&self) -> DestroyReason {
        self.reason
    }
}

impl Default for Truncate {
    fn default() -> Self {
        Truncate::new(DestroyReason::NONE)
    }
}

impl RelayBody<'_> for Truncate {
    const CMD: RelayCmd = RelayCmd::TRUNCATE;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        Ok(Truncate {
            reason: reason_byte(data),
        })
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        put_reason(w, self.reason)
    }
}

/// TRUNCATED: the circuit beyond the sender is gone, with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated {
    reason: DestroyReason,
}

impl Truncated {
    pub fn new(reason: DestroyReason) -> Self {
        Truncated { reason }
    }

    pub fn reason(&self) -> DestroyReason {
        self.reason
    }
}

impl RelayBody<'_> for Truncated {
    const CMD: RelayCmd = RelayCmd::TRUNCATED;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        Ok(Truncated {
            reason: reason_byte(data),
        })
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        put_reason(w, self.reason)
    }
}

/// DROP: long-range padding; accept and ignore (tor-spec §6.2;
/// requirements.md §8.3). Its body is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drop;

impl RelayBody<'_> for Drop {
    const CMD: RelayCmd = RelayCmd::DROP;
    fn decode(_data: &[u8]) -> Result<Self, RelayMsgError> {
        Ok(Drop)
    }
    fn encode_onto(&self, _w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        Ok(())
    }
}

/// EXTEND (relay cmd 6, TAP). Recognised only so that it can be refused:
/// 0.4.9 relays no longer extend with it (requirements.md §8.1). Its body is
/// not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extend;

impl RelayBody<'_> for Extend {
    const CMD: RelayCmd = RelayCmd::EXTEND;
    fn decode(_data: &[u8]) -> Result<Self, RelayMsgError> {
        Ok(Extend)
    }
    fn encode_onto(&self, _w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        Ok(())
    }
}
