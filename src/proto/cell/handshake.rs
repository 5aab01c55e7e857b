//! Bodies of the link-handshake and channel-maintenance cells: VERSIONS,
//! CERTS, AUTH_CHALLENGE, AUTHENTICATE, NETINFO and PADDING_NEGOTIATE
//! (requirements.md §1.3–§1.7, §8.2).
//!
//! Only the byte layout lives here. Certificate contents, the AUTH0003
//! authenticator and the padding timers belong to the handshake, `crypto`
//! and channel modules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::codec::Reader;
use super::{CELL_BODY_LEN, CellError, ChanBody, ChanCmd};

/// VERSIONS: a list of u16 link protocol versions (requirements.md §1.3).
/// Never padded. An odd body length is an error: C tor closes the
/// connection (channeltls.c:channel_tls_process_versions_cell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    versions: Vec<u16>,
}

impl Versions {
    /// Versions to offer. At most 32767 fit the u16 length field.
    pub fn new(versions: Vec<u16>) -> Result<Self, CellError> {
        let len = versions.len().saturating_mul(2);
        if len > usize::from(u16::MAX) {
            return Err(CellError::TooLong {
                what: "VERSIONS list",
                len,
                max: usize::from(u16::MAX),
            });
        }
        Ok(Versions { versions })
    }

    pub fn versions(&self) -> &[u16] {
        &self.versions
    }

    /// The highest version that both this list and `ours` contain.
    pub fn best_shared(&self, ours: &[u16]) -> Option<u16> {
        self.versions
            .iter()
            .copied()
            .filter(|v| ours.contains(v))
            .max()
    }
}

impl ChanBody for Versions {
    const CMD: ChanCmd = ChanCmd::VERSIONS;
    fn decode(body: &[u8]) -> Result<Self, CellError> {
        if !body.len().is_multiple_of(2) {
            return Err(CellError::OddVersionsLength(body.len()));
        }
        let versions = body
            .as_chunks::<2>()
            .0
            .iter()
            .map(|c| u16::from_be_bytes(*c))
            .collect();
        Ok(Versions { versions })
    }
    fn encode_onto(&self, out: &mut Vec<u8>) -> Result<(), CellError> {
        for v in &self.versions {
            out.extend_from_slice(&v.to_be_bytes());
        }
        Ok(())
    }
}

/// One certificate in a CERTS cell: its type and its undecoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertEntry {
    cert_type: u8,
    body: Vec<u8>,
}

impl CertEntry {
    pub fn cert_type(&self) -> u8 {
        self.cert_type
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// CERTS: `N(1) | N × { CertType(1) | CLEN(2) | Cert(CLEN) }`
/// (requirements.md §1.4; link_handshake.trunnel:certs_cell).
///
/// Duplicates are detected **here**, at decode: two certificates of one of
/// the types C tor knows (1–7) make the cell an error, as
/// channeltls.c:channel_tls_process_certs_cell closes the connection on
/// them. (C only counts certificates that decode; a duplicate that fails to
/// decode is rejected here too, which is stricter and harmless.) Types above
/// 7 may repeat and are kept. Bytes after the last certificate are ignored,
/// as trunnel's parser does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Certs {
    certs: Vec<CertEntry>,
}

/// Highest certificate type C tor interprets (`CERTTYPE_RSA1024_ID_EDID`).
const MAX_KNOWN_CERT_TYPE: u8 = 7;

impl Certs {
    pub fn new() -> Self {
        Certs::default()
    }

    /// Add a certificate. Refuses a second one of a known type (1–7), a
    /// 256th certificate, or one longer than 65535 bytes.
    pub fn push(&mut self, cert_type: u8, body: Vec<u8>) -> Result<(), CellError> {
        if body.len() > usize::from(u16::MAX) {
            return Err(CellError::TooLong {
                what: "certificate",
                len: body.len(),
                max: usize::from(u16::MAX),
            });
        }
        if self.certs.len() >= usize::from(u8::MAX) {
            return Err(CellError::TooLong {
                what: "CERTS list",
                len: self.certs.len().saturating_add(1),
                max: usize::from(u8::MAX),
            });
        }
        if (1..=MAX_KNOWN_CERT_TYPE).contains(&cert_type) && self.get(cert_type).is_some() {
            return Err(CellError::DuplicateCert(cert_type));
        }
        self.certs.push(CertEntry { cert_type, body });
        Ok(())
    }

    pub fn certs(&self) -> &[CertEntry] {
        &self.certs
    }

    /// The first certificate of `cert_type`, if any.
    pub fn get(&self, cert_type: u8) -> Option<&[u8]> {
        self.certs
            .iter()
            .find(|c| c.cert_type == cert_type)
            .map(|c| c.body.as_slice())
    }
}

impl ChanBody for Certs {
    const CMD: ChanCmd = ChanCmd::CERTS;
    fn decode(body: &[u8]) -> Result<Self, CellError> {
        const P: &str = "CERTS";
        let mut r = Reader::new(body);
        let n = r.u8().map_err(CellError::short(P))?;
        let mut certs = Certs::new();
        for _ in 0..n {
            let cert_type = r.u8().map_err(CellError::short(P))?;
            let len = r.u16().map_err(CellError::short(P))?;
            let cert = r.take(usize::from(len)).map_err(CellError::short(P))?;
            certs.push(cert_type, cert.to_vec())?;
        }
        Ok(certs)
    }
    fn encode_onto(&self, out: &mut Vec<u8>) -> Result<(), CellError> {
        // INVARIANT (push): count ≤ 255, each body ≤ 65535.
        out.push(u8::try_from(self.certs.len()).unwrap_or(u8::MAX));
        for c in &self.certs {
            out.push(c.cert_type);
            out.extend_from_slice(&u16::try_from(c.body.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(&c.body);
        }
        Ok(())
    }
}

/// AUTH_CHALLENGE: `Challenge(32) | N_Methods(2) | Methods(2 × N)`
/// (requirements.md §1.5). A 0.4.9 responder offers only method 3.
/// Trailing bytes are ignored (trunnel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthChallenge {
    challenge: [u8; 32],
    methods: Vec<u16>,
}

impl AuthChallenge {
    pub fn new(challenge: [u8; 32], methods: Vec<u16>) -> Result<Self, CellError> {
        if methods.len() > usize::from(u16::MAX) {
            return Err(CellError::TooLong {
                what: "AUTH_CHALLENGE methods",
                len: methods.len(),
                max: usize::from(u16::MAX),
            });
        }
        Ok(AuthChallenge { challenge, methods })
    }

    pub fn challenge(&self) -> &[u8; 32] {
        &self.challenge
    }

    pub fn methods(&self) -> &[u16] {
        &self.methods
    }
}

impl ChanBody for AuthChallenge {
    const CMD: ChanCmd = ChanCmd::AUTH_CHALLENGE;
    fn decode(body: &[u8]) -> Result<Self, CellError> {
        const P: &str = "AUTH_CHALLENGE";
        let mut r = Reader::new(body);
        let challenge = r.array().map_err(CellError::short(P))?;
        let n = r.u16().map_err(CellError::short(P))?;
        let methods = (0..n)
            .map(|_| r.u16().map_err(CellError::short(P)))
            .collect::<Result<_, _>>()?;
        Ok(AuthChallenge { challenge, methods })
    }
    fn encode_onto(&self, out: &mut Vec<u8>) -> Result<(), CellError> {
        out.extend_from_slice(&self.challenge);
        // INVARIANT (new): at most 65535 methods.
        out.extend_from_slice(&u16::try_from(self.methods.len()).unwrap_or(0).to_be_bytes());
        for m in &self.methods {
            out.extend_from_slice(&m.to_be_bytes());
        }
        Ok(())
    }
}

/// AUTHENTICATE: `AuthType(2) | AuthLen(2) | Authentication(AuthLen)`
/// (requirements.md §1.7). The authenticator (352 bytes for type 3) is kept
/// undecoded; checking it is the handshake's job. C tor rejects a body
/// shorter than 4 bytes or an AuthLen past its end
/// (channeltls.c:channel_tls_process_authenticate_cell); trailing bytes are
/// ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    auth_type: u16,
    auth: Vec<u8>,
}

impl Authenticate {
    /// Ed25519-SHA256-RFC5705, the only method 0.4.9 uses.
    pub const AUTH_TYPE_ED25519_SHA256_RFC5705: u16 = 3;

    pub fn new(auth_type: u16, auth: Vec<u8>) -> Result<Self, CellError> {
        if auth.len() > usize::from(u16::MAX) {
            return Err(CellError::TooLong {
                what: "AUTHENTICATE authenticator",
                len: auth.len(),
                max: usize::from(u16::MAX),
            });
        }
        Ok(Authenticate { auth_type, auth })
    }

    pub fn auth_type(&self) -> u16 {
        self.auth_type
    }

    pub fn auth(&self) -> &[u8] {
        &self.auth
    }
}

impl ChanBody for Authenticate {
    const CMD: ChanCmd = ChanCmd::AUTHENTICATE;
    fn decode(body: &[u8]) -> Result<Self, CellError> {
        const P: &str = "AUTHENTICATE";
        let mut r = Reader::new(body);
        let auth_type = r.u16().map_err(CellError::short(P))?;
        let len = r.u16().map_err(CellError::short(P))?;
        let auth = r
            .take(usize::from(len))
            .map_err(CellError::short(P))?
            .to_vec();
        Ok(Authenticate { auth_type, auth })
    }
    fn encode_onto(&self, out: &mut Vec<u8>) -> Result<(), CellError> {
        out.extend_from_slice(&self.auth_type.to_be_bytes());
        // INVARIANT (new): auth.len() ≤ 65535.
        out.extend_from_slice(&u16::try_from(self.auth.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.auth);
        Ok(())
    }
}

const ATYPE_IPV4: u8 = 4;
const ATYPE_IPV6: u8 = 6;

/// NETINFO: `TIME(4) | OTHERADDR | NMYADDR(1) | NMYADDR × MYADDR`, each
/// address `ATYPE(1) | ALEN(1) | AVAL(ALEN)` (requirements.md §1.6;
/// netinfo.trunnel).
///
/// As in C tor's trunnel parser, an address of an unknown type is skipped
/// (OTHERADDR becomes `None`, a MYADDR is left out), but an IPv4 or IPv6
/// address whose ALEN is not 4 or 16 makes the whole cell an error (C closes
/// the connection: "Failed to parse NETINFO cell"). Arti is laxer here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netinfo {
    timestamp: u32,
    other_addr: Option<IpAddr>,
    my_addrs: Vec<IpAddr>,
}

impl Netinfo {
    /// A relay's NETINFO: `timestamp` is the current Unix time (passed in;
    /// a client sends 0), `other_addr` the peer's address as we see it,
    /// `my_addrs` our advertised addresses (at most 255).
    pub fn new(
        timestamp: u32,
        other_addr: Option<IpAddr>,
        my_addrs: Vec<IpAddr>,
    ) -> Result<Self, CellError> {
        // 4 + 18 + 1 + n*18 must fit the fixed body.
        let max = (CELL_BODY_LEN - 4 - 18 - 1) / 18;
        if my_addrs.len() > max {
            return Err(CellError::TooLong {
                what: "NETINFO address list",
                len: my_addrs.len(),
                max,
            });
        }
        Ok(Netinfo {
            timestamp,
            other_addr,
            my_addrs,
        })
    }

    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    pub fn other_addr(&self) -> Option<IpAddr> {
        self.other_addr
    }

    pub fn my_addrs(&self) -> &[IpAddr] {
        &self.my_addrs
    }
}

fn read_netinfo_addr(r: &mut Reader<'_>) -> Result<Option<IpAddr>, CellError> {
    const P: &str = "NETINFO address";
    let atype = r.u8().map_err(CellError::short(P))?;
    let alen = r.u8().map_err(CellError::short(P))?;
    let val = r.take(usize::from(alen)).map_err(CellError::short(P))?;
    match atype {
        ATYPE_IPV4 => <[u8; 4]>::try_from(val)
            .map(|a| Some(IpAddr::V4(Ipv4Addr::from(a))))
            .map_err(|_| CellError::Malformed {
                parsing: P,
                reason: "IPv4 address whose length is not 4",
            }),
        ATYPE_IPV6 => <[u8; 16]>::try_from(val)
            .map(|a| Some(IpAddr::V6(Ipv6Addr::from(a))))
            .map_err(|_| CellError::Malformed {
                parsing: P,
                reason: "IPv6 address whose length is not 16",
            }),
        _ => Ok(None),
    }
}

fn put_netinfo_addr(out: &mut Vec<u8>, addr: Option<IpAddr>) {
    match addr {
        Some(IpAddr::V4(a)) => {
            out.extend_from_slice(&[ATYPE_IPV4, 4]);
            out.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            out.extend_from_slice(&[ATYPE_IPV6, 16]);
            out.extend_from_slice(&a.octets());
        }
        // An unknown peer address goes out as 0.0.0.0, as arti's client
        // does; C tor treats it as "no address".
        None => out.extend_from_slice(&[ATYPE_IPV4, 4, 0, 0, 0, 0]),
    }
}

impl ChanBody for Netinfo {
    const CMD: ChanCmd = ChanCmd::NETINFO;
    fn decode(body: &[u8]) -> Result<Self, CellError> {
        let mut r = Reader::new(body);
        let timestamp = r.u32().map_err(CellError::short("NETINFO"))?;
        let other_addr = read_netinfo_addr(&mut r)?;
        let n = r.u8().map_err(CellError::short("NETINFO"))?;
        let mut my_addrs = Vec::new();
        for _ in 0..n {
            if let Some(a) = read_netinfo_addr(&mut r)? {
                my_addrs.push(a);
            }
        }
        Ok(Netinfo {
            timestamp,
            other_addr,
            my_addrs,
        })
    }
    fn encode_onto(&self, out: &mut Vec<u8>) -> Result<(), CellError> {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        put_netinfo_addr(out, self.other_addr);
        // INVARIANT (new): my_addrs.len() ≤ 27.
        out.push(u8::try_from(self.my_addrs.len()).unwrap_or(0));
        for a in &self.my_addrs {
            put_netinfo_addr(out, Some(*a));
        }
        Ok(())
    }
}

/// The command of a PADDING_NEGOTIATE cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingNegotiateCmd {
    /// 1: stop sending channel padding.
    Stop,
    /// 2: start (or keep) sending padding with these timeouts.
    Start,
}

/// PADDING_NEGOTIATE (link v5): `version(1)=0 | command(1) (1 STOP, 2 START)
/// | ito_low_ms(2) | ito_high_ms(2)` (requirements.md §8.2;
/// channelpadding_negotiation.trunnel). A malformed one is an error here;
/// the channel drops it (channeltls.c:channel_tls_process_padding_negotiate_cell)
/// and clamps the values to the consensus. Relays never send it to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaddingNegotiate {
    command: PaddingNegotiateCmd,
    ito_low_ms: u16,
    ito_high_ms: u16,
}

impl PaddingNegotiate {
    pub fn start(ito_low_ms: u16, ito_high_ms: u16) -> Self {
        PaddingNegotiate {
            command: PaddingNegotiateCmd::Start,
            ito_low_ms,
            ito_high_ms,
        }
    }

    pub fn stop() -> Self {
        PaddingNegotiate {
            command: PaddingNegotiateCmd::Stop,
            ito_low_ms: 0,
            ito_high_ms: 0,
        }
    }

    pub fn command(&self) -> PaddingNegotiateCmd {
        self.command
    }

    pub fn ito_low_ms(&self) -> u16 {
        self.ito_low_ms
    }

    pub fn ito_high_ms(&self) -> u16 {
        self.ito_high_ms
    }
}

impl ChanBody for PaddingNegotiate {
    const CMD: ChanCmd = ChanCmd::PADDING_NEGOTIATE;
    fn decode(body: &[u8]) -> Result<Self, CellError> {
        const P: &str = "PADDING_NEGOTIATE";
        let mut r = Reader::new(body);
        if r.u8().map_err(CellError::short(P))? != 0 {
            return Err(CellError::Malformed {
                parsing: P,
                reason: "version is not 0",
            });
        }
        let command = match r.u8().map_err(CellError::short(P))? {
            1 => PaddingNegotiateCmd::Stop,
            2 => PaddingNegotiateCmd::Start,
            _ => {
                return Err(CellError::Malformed {
                    parsing: P,
                    reason: "command is neither 1 (stop) nor 2 (start)",
                });
            }
        };
        let ito_low_ms = r.u16().map_err(CellError::short(P))?;
        let ito_high_ms = r.u16().map_err(CellError::short(P))?;
        Ok(PaddingNegotiate {
            command,
            ito_low_ms,
            ito_high_ms,
        })
    }
    fn encode_onto(&self, out: &mut Vec<u8>) -> Result<(), CellError> {
        let cmd = match self.command {
            PaddingNegotiateCmd::Stop => 1,
            PaddingNegotiateCmd::Start => 2,
        };
        out.extend_from_slice(&[0, cmd]);
        out.extend_from_slice(&self.ito_low_ms.to_be_bytes());
        out.extend_from_slice(&self.ito_high_ms.to_be_bytes());
        Ok(())
    }
}
