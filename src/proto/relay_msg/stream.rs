//! Stream messages an exit receives or sends: BEGIN, BEGIN_DIR, DATA, END,
//! CONNECTED, RESOLVE, RESOLVED, and the END reasons
//! (requirements.md §5.1–§5.6).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{RELAY_DATA_MAX, RelayBody, RelayCmd, RelayMsgError};
use crate::proto::cell::codec::{Reader, SliceWriter};

fn put(w: &mut SliceWriter<'_>, what: &'static str, b: &[u8]) -> Result<(), RelayMsgError> {
    w.put(b).map_err(RelayMsgError::overflow(what))
}

/// Where a BEGIN asks to connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BeginTarget {
    /// A DNS name, lower-cased, made of letters, digits, '-', '_' and '.'.
    Hostname(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

impl fmt::Display for BeginTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BeginTarget::Hostname(h) => f.write_str(h),
            BeginTarget::Ipv4(a) => write!(f, "{a}"),
            BeginTarget::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// The FLAGS word of a BEGIN (connection_edge.h `BEGIN_FLAG_*`;
/// requirements.md §5.1). Unknown bits are kept and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BeginFlags(u32);

impl BeginFlags {
    pub const IPV6_OK: u32 = 0x1;
    pub const IPV4_NOT_OK: u32 = 0x2;
    pub const IPV6_PREFERRED: u32 = 0x4;

    pub const fn new(bits: u32) -> Self {
        BeginFlags(bits)
    }
    pub const fn bits(self) -> u32 {
        self.0
    }
    pub const fn ipv6_ok(self) -> bool {
        self.0 & Self::IPV6_OK != 0
    }
    pub const fn ipv4_not_ok(self) -> bool {
        self.0 & Self::IPV4_NOT_OK != 0
    }
    pub const fn ipv6_preferred(self) -> bool {
        self.0 & Self::IPV6_PREFERRED != 0
    }
}

/// BEGIN: `ADDRPORT` = NUL-terminated ASCII `host:port`, then an optional
/// FLAGS(4) (requirements.md §5.1; connection_edge.c:begin_cell_parse).
///
/// An exit resolves the host, applies its exit policy to the resolved
/// address and port, then connects and answers CONNECTED, or answers END.
/// A BEGIN that does not parse gets END with [`RelayMsgError::end_reason`]:
/// TORPROTOCOL for a missing NUL, a missing or bad port (0 included), and
/// RESOLVEFAILED for a host that is not an address or DNS name.
///
/// FLAGS is read iff at least 4 bytes follow the NUL. (C tor's test is
/// `body + length >= nul + 4`, so with exactly 3 bytes it also reads one
/// byte past the data, a zero gap byte; clients never send that.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    target: BeginTarget,
    // INVARIANT: port != 0
    port: u16,
    flags: BeginFlags,
}

impl Begin {
    /// A BEGIN for `host` (a DNS name, an IPv4 address, or an IPv6 address
    /// with or without brackets) and `port` (1–65535).
    pub fn new(host: &str, port: u16, flags: BeginFlags) -> Result<Self, RelayMsgError> {
        if port == 0 {
            return Err(RelayMsgError::Malformed {
                parsing: "BEGIN",
                reason: "port 0",
            });
        }
        Ok(Begin {
            target: parse_host(host.as_bytes())?,
            port,
            flags,
        })
    }

    pub fn target(&self) -> &BeginTarget {
        &self.target
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn flags(&self) -> BeginFlags {
        self.flags
    }
}

/// Classify a host: `[IPv6]`, bare IPv6 (C's tor_addr_parse accepts it),
/// dotted quad, else a DNS name checked like
/// addressmap.c:address_is_invalid_destination and lower-cased.
fn parse_host(host: &[u8]) -> Result<BeginTarget, RelayMsgError> {
    const BAD: RelayMsgError = RelayMsgError::BadHostname { parsing: "BEGIN" };
    let s = std::str::from_utf8(host).map_err(|_| BAD)?;
    if let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return inner.parse().map(BeginTarget::Ipv6).map_err(|_| BAD);
    }
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        return Ok(BeginTarget::Ipv4(a));
    }
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Ok(BeginTarget::Ipv6(a));
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !ok {
        return Err(BAD);
    }
    Ok(BeginTarget::Hostname(s.to_ascii_lowercase()))
}

/// Parse a decimal port the way tor_parse_long(…, 1, 65535) does for BEGIN:
/// digits only, 1–65535.
fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = p.iter().try_fold(0u32, |acc, &d| {
        // At most 65535 * 10 + 9 before the check: no overflow, and `d`
        // is an ASCII digit.
        let v = acc
            .saturating_mul(10)
            .saturating_add(u32::from(d.saturating_sub(b'0')));
        (v <= 65535).then_some(v)
    })?;
    u16::try_from(v).ok().filter(|&v| v != 0)
}

impl RelayBody<'_> for Begin {
    const CMD: RelayCmd = RelayCmd::BEGIN;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        const P: &str = "BEGIN";
        let mut r = Reader::new(data);
        let addrport = r.until_nul().ok_or(RelayMsgError::Malformed {
            parsing: P,
            reason: "no NUL after the address",
        })?;
        // A whole-string IPv6 address has no port: C's tor_addr_port_split
        // returns port 0 for it, which begin_cell_parse refuses.
        if std::str::from_utf8(addrport)
            .ok()
            .is_some_and(|s| s.parse::<Ipv6Addr>().is_ok())
        {
            return Err(RelayMsgError::Malformed {
                parsing: P,
                reason: "missing port",
            });
        }
        let colon = addrport
            .iter()
            .rposition(|&b| b == b':')
            .ok_or(RelayMsgError::Malformed {
                parsing: P,
                reason: "missing port",
            })?;
        let (host, port) = addrport.split_at(colon);
        let port =
            parse_port(port.get(1..).unwrap_or_default()).ok_or(RelayMsgError::Malformed {
                parsing: P,
                reason: "port is not a number in 1-65535",
            })?;
        let target = parse_host(host)?;
        let flags = match r.array::<4>() {
            Ok(f) => BeginFlags(u32::from_be_bytes(f)),
            Err(_) => BeginFlags(0),
        };
        Ok(Begin {
            target,
            port,
            flags,
        })
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        let addrport = format!("{}:{}", self.target, self.port);
        put(w, "BEGIN address", addrport.as_bytes())?;
        put(w, "BEGIN address", &[0])?;
        // C and arti clients omit FLAGS when it is zero.
        if self.flags.0 != 0 {
            put(w, "BEGIN flags", &self.flags.0.to_be_bytes())?;
        }
        Ok(())
    }
}

/// BEGIN_DIR: open a stream to this relay's directory service. Its body is
/// ignored. An exit that serves no directory answers END(NOTDIRECTORY)
/// (requirements.md §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BeginDir;

impl RelayBody<'_> for BeginDir {
    const CMD: RelayCmd = RelayCmd::BEGIN_DIR;
    fn decode(_data: &[u8]) -> Result<Self, RelayMsgError> {
        Ok(BeginDir)
    }
    fn encode_onto(&self, _w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        Ok(())
    }
}

/// DATA: up to 498 bytes of stream data, borrowed from the cell
/// (requirements.md §5.6). An exit writes it to the stream's TCP connection
/// (or queues it while connecting: optimistic data, §5.1); DATA on an
/// unknown stream is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    // INVARIANT: data.len() <= RELAY_DATA_MAX
    data: &'a [u8],
}

impl<'a> Data<'a> {
    pub fn new(data: &'a [u8]) -> Result<Self, RelayMsgError> {
        if data.len() > RELAY_DATA_MAX {
            return Err(RelayMsgError::TooLong {
                what: "DATA",
                len: data.len(),
                max: RELAY_DATA_MAX,
            });
        }
        Ok(Data { data })
    }

    /// The longest prefix of `buf` that fits one DATA message, and the rest.
    pub fn split_from(buf: &'a [u8]) -> (Data<'a>, &'a [u8]) {
        let (head, tail) = buf.split_at(buf.len().min(RELAY_DATA_MAX));
        (Data { data: head }, tail)
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }
}

impl<'a> RelayBody<'a> for Data<'a> {
    const CMD: RelayCmd = RelayCmd::DATA;
    fn decode(data: &'a [u8]) -> Result<Self, RelayMsgError> {
        Data::new(data)
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        put(w, "DATA", self.data)
    }
}

/// Why a stream ended (tor-spec §6.3; or.h `END_STREAM_REASON_*`;
/// requirements.md §5.3). Open: unknown reasons received are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndReason(u8);

macro_rules! end_reasons {
    ($($(#[$m:meta])* $name:ident = $val:expr;)*) => {
        impl EndReason {
            $($(#[$m])* pub const $name: EndReason = EndReason($val);)*

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

end_reasons! {
    /// Catch-all; also what an empty END means.
    MISC = 1;
    /// Could not resolve the host.
    RESOLVEFAILED = 2;
    /// The remote host refused the connection.
    CONNECTREFUSED = 3;
    /// The exit policy refuses this address:port; carries address and TTL.
    EXITPOLICY = 4;
    /// The circuit is being destroyed.
    DESTROY = 5;
    /// The connection closed normally.
    DONE = 6;
    /// Connection attempt timed out.
    TIMEOUT = 7;
    /// No route to host.
    NOROUTE = 8;
    /// The relay is hibernating.
    HIBERNATING = 9;
    /// Internal error at the relay.
    INTERNAL = 10;
    /// Out of resources. Not for per-stream DoS refusals: clients then shun
    /// the exit (§5.3).
    RESOURCELIMIT = 11;
    /// Connection reset.
    CONNRESET = 12;
    /// Tor protocol violation.
    TORPROTOCOL = 13;
    /// BEGIN_DIR to a relay that serves no directory.
    NOTDIRECTORY = 14;
}

impl EndReason {
    pub const fn new(v: u8) -> Self {
        EndReason(v)
    }
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl From<u8> for EndReason {
    fn from(v: u8) -> Self {
        EndReason(v)
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "unknown reason {}", self.0),
        }
    }
}

/// END: `Reason(1)`, and for EXITPOLICY `| ADDR(4 or 16) | TTL(4)`
/// (requirements.md §5.3; connection_edge.c:connection_edge_end). An empty
/// END means MISC. On receipt an exit closes the TCP connection and sends
/// nothing more on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    reason: EndReason,
    /// For EXITPOLICY: the refused address and, if present, its TTL.
    exit_policy: Option<(IpAddr, Option<u32>)>,
}

impl End {
    pub fn new(reason: EndReason) -> Self {
        End {
            reason,
            exit_policy: None,
        }
    }

    /// END(EXITPOLICY) naming the refused (resolved) address and its TTL.
    pub fn exit_policy(addr: IpAddr, ttl: u32) -> Self {
        End {
            reason: EndReason::EXITPOLICY,
            exit_policy: Some((addr, Some(ttl))),
        }
    }

    pub fn reason(&self) -> EndReason {
        self.reason
    }

    pub fn address(&self) -> Option<IpAddr> {
        self.exit_policy.map(|(a, _)| a)
    }

    pub fn ttl(&self) -> Option<u32> {
        self.exit_policy.and_then(|(_, t)| t)
    }
}

impl RelayBody<'_> for End {
    const CMD: RelayCmd = RelayCmd::END;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        let mut r = Reader::new(data);
        let Ok(reason) = r.u8().map(EndReason) else {
            return Ok(End::new(EndReason::MISC));
        };
        let rest = r.rest();
        // Address forms as C clients read them (relay.c
        // connection_ap_process_end_not_open): 4 or 16 bytes, optional TTL.
        // Anything else after the reason is ignored.
        let exit_policy = if reason == EndReason::EXITPOLICY {
            let ttl = |t: &[u8]| <[u8; 4]>::try_from(t).ok().map(u32::from_be_bytes);
            match rest.len() {
                4 | 8 => {
                    let (a, t) = rest.split_at(4);
                    <[u8; 4]>::try_from(a)
                        .ok()
                        .map(|a| (IpAddr::V4(a.into()), ttl(t)))
                }
                16 | 20 => {
                    let (a, t) = rest.split_at(16);
                    <[u8; 16]>::try_from(a)
                        .ok()
                        .map(|a| (IpAddr::V6(a.into()), ttl(t)))
                }
                _ => None,
            }
        } else {
            None
        };
        Ok(End {
            reason,
            exit_policy,
        })
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        put(w, "END", &[self.reason.0])?;
        if let Some((addr, ttl)) = self.exit_policy {
            match addr {
                IpAddr::V4(a) => put(w, "END address", &a.octets())?,
                IpAddr::V6(a) => put(w, "END address", &a.octets())?,
            }
            if let Some(ttl) = ttl {
                put(w, "END ttl", &ttl.to_be_bytes())?;
            }
        }
        Ok(())
    }
}

/// CONNECTED: empty (BEGIN_DIR), `ADDR(4) | TTL(4)` for IPv4, or
/// `00000000 | 06 | ADDR(16) | TTL(4)` for IPv6 (requirements.md §5.2;
/// connection_edge.c:connected_cell_format_payload). An exit sends it once
/// the TCP connection is up, with the TTL clipped to 300 or 3600.
///
/// The decoder is stricter than C's client (relay.c:connected_cell_parse):
/// it wants the TTL with an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Connected {
    addr: Option<(IpAddr, u32)>,
}

impl Connected {
    /// The empty CONNECTED sent for BEGIN_DIR.
    pub fn empty() -> Self {
        Connected { addr: None }
    }

    /// CONNECTED naming the address connected to. 0.0.0.0 is refused: its
    /// encoding would read as the start of the IPv6 form.
    pub fn new(addr: IpAddr, ttl: u32) -> Result<Self, RelayMsgError> {
        if addr == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
            return Err(RelayMsgError::Malformed {
                parsing: "CONNECTED",
                reason: "0.0.0.0 cannot be encoded",
            });
        }
        Ok(Connected {
            addr: Some((addr, ttl)),
        })
    }

    pub fn addr(&self) -> Option<IpAddr> {
        self.addr.map(|(a, _)| a)
    }

    pub fn ttl(&self) -> Option<u32> {
        self.addr.map(|(_, t)| t)
    }
}

impl RelayBody<'_> for Connected {
    const CMD: RelayCmd = RelayCmd::CONNECTED;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        const P: &str = "CONNECTED";
        if data.is_empty() {
            return Ok(Connected::empty());
        }
        let mut r = Reader::new(data);
        let v4 = r.array::<4>().map_err(RelayMsgError::short(P))?;
        let addr = if v4 != [0; 4] {
            IpAddr::V4(v4.into())
        } else {
            if r.u8().map_err(RelayMsgError::short(P))? != 6 {
                return Err(RelayMsgError::Malformed {
                    parsing: P,
                    reason: "address type is not 6 (IPv6)",
                });
            }
            IpAddr::V6(r.array::<16>().map_err(RelayMsgError::short(P))?.into())
        };
        let ttl = r.u32().map_err(RelayMsgError::short(P))?;
        Ok(Connected {
            addr: Some((addr, ttl)),
        })
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        match self.addr {
            None => {}
            Some((IpAddr::V4(a), ttl)) => {
                put(w, "CONNECTED", &a.octets())?;
                put(w, "CONNECTED", &ttl.to_be_bytes())?;
            }
            Some((IpAddr::V6(a), ttl)) => {
                put(w, "CONNECTED", &[0, 0, 0, 0, 6])?;
                put(w, "CONNECTED", &a.octets())?;
                put(w, "CONNECTED", &ttl.to_be_bytes())?;
            }
        }
        Ok(())
    }
}

/// RESOLVE: a NUL-terminated host name, or an `in-addr.arpa` / `ip6.arpa`
/// name for a reverse lookup (requirements.md §5.4). An exit resolves it and
/// answers RESOLVED on the same StreamID; no stream is created. The name is
/// kept as sent (the DNS module lower-cases and validates it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    name: String,
}

impl Resolve {
    pub fn new(name: &str) -> Result<Self, RelayMsgError> {
        if !name.is_ascii() || name.bytes().any(|b| b == 0) {
            return Err(RelayMsgError::BadHostname { parsing: "RESOLVE" });
        }
        Ok(Resolve {
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl RelayBody<'_> for Resolve {
    const CMD: RelayCmd = RelayCmd::RESOLVE;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        let name = Reader::new(data)
            .until_nul()
            .ok_or(RelayMsgError::Malformed {
                parsing: "RESOLVE",
                reason: "no NUL after the name",
            })?;
        let name = std::str::from_utf8(name)
            .map_err(|_| RelayMsgError::BadHostname { parsing: "RESOLVE" })?;
        Resolve::new(name)
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        put(w, "RESOLVE", self.name.as_bytes())?;
        put(w, "RESOLVE", &[0])
    }
}

/// Cap on a RESOLVED body: the smallest relay payload any format allows, as
/// dns.c:send_resolved_cell uses (requirements.md §5.4).
pub const RESOLVED_MAX_LEN: usize = 488;

/// The literal C tor puts in RESOLVED error answers; clients ignore it.
const RESOLVED_ERROR_TEXT: &[u8] = b"Error resolving hostname";

/// One answer in a RESOLVED message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedVal {
    /// 0x00: a host name (reverse lookup result).
    Hostname(Vec<u8>),
    /// 0x04 / 0x06.
    Ip(IpAddr),
    /// 0xF0: transient error.
    TransientError,
    /// 0xF1: permanent error.
    PermanentError,
    /// Any other type, kept as received.
    Unrecognized { atype: u8, value: Vec<u8> },
}

/// An answer and its TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAnswer {
    pub val: ResolvedVal,
    pub ttl: u32,
}

impl ResolvedAnswer {
    fn encoded_len(&self) -> usize {
        let value = match &self.val {
            ResolvedVal::Hostname(h) => h.len(),
            ResolvedVal::Ip(IpAddr::V4(_)) => 4,
            ResolvedVal::Ip(IpAddr::V6(_)) => 16,
            ResolvedVal::TransientError | ResolvedVal::PermanentError => RESOLVED_ERROR_TEXT.len(),
            ResolvedVal::Unrecognized { value, .. } => value.len(),
        };
        value.saturating_add(6)
    }
}

/// RESOLVED: a sequence of `Type(1) | Len(1) | Value(Len) | TTL(4)`
/// (requirements.md §5.4; dns.c:send_resolved_cell). An exit puts the IPv4
/// answer first if there is one; the encoder never exceeds
/// [`RESOLVED_MAX_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    // INVARIANT: every value is at most 255 bytes; built with `push`, the
    // encoded length is at most RESOLVED_MAX_LEN (a decoded one may reach
    // 498, which still fits a cell).
    answers: Vec<ResolvedAnswer>,
}

impl Resolved {
    pub fn new() -> Self {
        Resolved::default()
    }

    /// A RESOLVED holding only an error answer.
    pub fn error(transient: bool, ttl: u32) -> Self {
        let val = if transient {
            ResolvedVal::TransientError
        } else {
            ResolvedVal::PermanentError
        };
        Resolved {
            answers: vec![ResolvedAnswer { val, ttl }],
        }
    }

    /// Append an answer; refuses one that would push the body past
    /// [`RESOLVED_MAX_LEN`] or whose value exceeds 255 bytes.
    pub fn push(&mut self, val: ResolvedVal, ttl: u32) -> Result<(), RelayMsgError> {
        let ans = ResolvedAnswer { val, ttl };
        let value_len = ans.encoded_len().saturating_sub(6);
        if value_len > usize::from(u8::MAX) {
            return Err(RelayMsgError::TooLong {
                what: "RESOLVED answer",
                len: value_len,
                max: usize::from(u8::MAX),
            });
        }
        let total = self.encoded_len().saturating_add(ans.encoded_len());
        if total > RESOLVED_MAX_LEN {
            return Err(RelayMsgError::TooLong {
                what: "RESOLVED",
                len: total,
                max: RESOLVED_MAX_LEN,
            });
        }
        self.answers.push(ans);
        Ok(())
    }

    pub fn answers(&self) -> &[ResolvedAnswer] {
        &self.answers
    }

    fn encoded_len(&self) -> usize {
        self.answers.iter().map(ResolvedAnswer::encoded_len).sum()
    }
}

impl RelayBody<'_> for Resolved {
    const CMD: RelayCmd = RelayCmd::RESOLVED;
    fn decode(data: &[u8]) -> Result<Self, RelayMsgError> {
        const P: &str = "RESOLVED";
        let mut r = Reader::new(data);
        let mut answers = Vec::new();
        while !r.is_empty() {
            let atype = r.u8().map_err(RelayMsgError::short(P))?;
            let len = r.u8().map_err(RelayMsgError::short(P))?;
            let value = r.take(usize::from(len)).map_err(RelayMsgError::short(P))?;
            let ttl = r.u32().map_err(RelayMsgError::short(P))?;
            let wrong_len = RelayMsgError::Malformed {
                parsing: P,
                reason: "address answer of the wrong length",
            };
            let val = match atype {
                0x00 => ResolvedVal::Hostname(value.to_vec()),
                0x04 => ResolvedVal::Ip(IpAddr::V4(
                    <[u8; 4]>::try_from(value).map_err(|_| wrong_len)?.into(),
                )),
                0x06 => ResolvedVal::Ip(IpAddr::V6(
                    <[u8; 16]>::try_from(value).map_err(|_| wrong_len)?.into(),
                )),
                0xF0 => ResolvedVal::TransientError,
                0xF1 => ResolvedVal::PermanentError,
                atype => ResolvedVal::Unrecognized {
                    atype,
                    value: value.to_vec(),
                },
            };
            answers.push(ResolvedAnswer { val, ttl });
        }
        Ok(Resolved { answers })
    }
    fn encode_onto(&self, w: &mut SliceWriter<'_>) -> Result<(), RelayMsgError> {
        for a in &self.answers {
            let v4;
            let v6;
            let (atype, value): (u8, &[u8]) = match &a.val {
                ResolvedVal::Hostname(h) => (0x00, h),
                ResolvedVal::Ip(IpAddr::V4(ip)) => {
                    v4 = ip.octets();
                    (0x04, &v4)
                }
                ResolvedVal::Ip(IpAddr::V6(ip)) => {
                    v6 = ip.octets();
                    (0x06, &v6)
                }
                ResolvedVal::TransientError => (0xF0, RESOLVED_ERROR_TEXT),
                ResolvedVal::PermanentError => (0xF1, RESOLVED_ERROR_TEXT),
                ResolvedVal::Unrecognized { atype, value } => (*atype, value),
            };
            // INVARIANT (push): value.len() <= 255.
            let len = u8::try_from(value.len()).map_err(|_| RelayMsgError::TooLong {
                what: "RESOLVED answer",
                len: value.len(),
                max: usize::from(u8::MAX),
            })?;
            put(w, "RESOLVED", &[atype, len])?;
            put(w, "RESOLVED", value)?;
            put(w, "RESOLVED", &a.ttl.to_be_bytes())?;
        }
        Ok(())
    }
}
