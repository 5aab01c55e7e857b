//! The per-core stub resolver of an exit: DNS for BEGIN and RESOLVE
//! (requirements.md §5.1, §5.4, §5.10).
//!
//! Each worker thread owns one [`Resolver`]. It is sans-IO in the quinn
//! style: the worker's driver owns the UDP socket and only moves datagrams.
//! The resolver takes questions ([`Resolver::resolve`]), hands out queries
//! to send ([`Resolver::poll_transmit`]), takes datagrams that arrived
//! ([`Resolver::handle_datagram`]), asks to be woken
//! ([`Resolver::poll_timeout`], [`Resolver::handle_timeout`]) and reports
//! results ([`Resolver::poll_event`]). Time is always an argument;
//! randomness (transaction ids) comes from the rng given to
//! [`Resolver::new`].
//!
//! What lives here:
//! - [`conf`]: the resolv.conf subset C tor reads through libevent
//!   (`ServerDNSResolvConfFile`), parsed from text.
//! - [`address`]: is a BEGIN/RESOLVE address an IP literal, a hostname worth
//!   asking about, or a reverse (PTR) name; rejects invalid names before any
//!   query (C tor: dns.c:dns_resolve_impl, address_is_invalid_destination).
//! - [`message`]: building queries and checking answers with hickory-proto.
//! - [`cache`]: the per-worker cache (TTL, MAX_DNS_ENTRY_AGE, negative
//!   entries, bounded size).
//! - [`resolver`]: the state machine (merging, retries, rotation, timeouts).
//!
//! What does not: sockets, the choice of local port (the driver binds the
//! UDP socket to an ephemeral, kernel-randomised port, which together with
//! the random transaction id is the anti-spoofing entropy), the exit policy
//! check on the resolved address (§5.1) and the encoding of CONNECTED /
//! RESOLVED / END cells (the stream layer; this module gives it the clipped
//! TTL and the error type codes). There is no TCP fallback: a truncated
//! answer is a transient failure. There is no hijack detection
//! (ServerDNSDetectHijacking, §5.10) yet.

pub mod address;
pub mod cache;
pub mod conf;
pub mod message;
pub mod resolver;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

pub use address::{AddressError, Purpose, Target, classify_address};
pub use conf::{ConfNote, ConfigError, ResolverConfig};
pub use resolver::{
    DNS_RESULT_NAMES, Resolver, ResolverStats, SERVER_ERROR_NAMES, ServerStats, Transmit,
};

/// Lowest TTL reported to clients (connection_edge.h `MIN_DNS_TTL`).
pub const MIN_DNS_TTL: u32 = 5 * 60;
/// Highest TTL reported to clients (connection_edge.h `MAX_DNS_TTL`).
pub const MAX_DNS_TTL: u32 = 60 * 60;
/// No cache entry lives longer than this, whatever its TTL
/// (connection_edge.h `MAX_DNS_ENTRY_AGE`).
pub const MAX_DNS_ENTRY_AGE: u32 = 3 * 60 * 60;
/// TTL reported for an IP literal, which needs no lookup
/// (connection_edge.h `DEFAULT_DNS_TTL`, used by dns.c:dns_resolve_impl).
pub const DEFAULT_DNS_TTL: u32 = 30 * 60;
/// Spread of the fuzz C tor adds to clipped TTLs (connection_edge.h
/// `FUZZY_DNS_TTL`).
pub const FUZZY_DNS_TTL: u32 = 4 * 60;

/// RESOLVED answer type for a transient error (tor-spec §6.4, §5.4 here).
pub const RESOLVED_TYPE_ERROR_TRANSIENT: u8 = 0xF0;
/// RESOLVED answer type for a permanent error (tor-spec §6.4, §5.4 here).
pub const RESOLVED_TYPE_ERROR: u8 = 0xF1;
/// END reason RESOLVEFAILED (or.h `END_STREAM_REASON_RESOLVEFAILED`, §5.3).
pub const END_REASON_RESOLVEFAILED: u8 = 2;

/// The TTL an exit tells clients: only two values, 300 s or 3600 s, so the
/// TTL a client sees does not reveal how long ago somebody else looked the
/// name up (DefectTor; connection_edge.c:clip_dns_ttl, §5.2).
pub fn clip_dns_ttl(ttl: u32) -> u32 {
    if ttl < MIN_DNS_TTL {
        MIN_DNS_TTL
    } else {
        MAX_DNS_TTL
    }
}

/// [`clip_dns_ttl`] plus uniform fuzz in `[-FUZZY_DNS_TTL, +FUZZY_DNS_TTL]`
/// (connection_edge.c:clip_dns_fuzzy_ttl). C tor applies this to what
/// libevent returned before caching it; [`Answer::ttl`] is the unfuzzed
/// clip, and the stream layer may fuzz it with this.
pub fn clip_dns_fuzzy_ttl(ttl: u32, rng: &mut impl rand::Rng) -> u32 {
    let span = 2 * FUZZY_DNS_TTL + 1;
    // Modulo bias over 2^32 for a span of 481 is below 1e-7: irrelevant here.
    let fuzz = rng.next_u32() % span;
    // Cannot underflow: MIN_DNS_TTL (300) > FUZZY_DNS_TTL (240).
    clip_dns_ttl(ttl) + fuzz - FUZZY_DNS_TTL
}

/// What to ask for. BEGIN asks for the families its flags allow
/// ([`QueryKind::for_begin`]); RESOLVE of an `in-addr.arpa`/`ip6.arpa` name
/// asks for PTR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// IPv4 addresses only.
    A,
    /// IPv6 addresses only.
    Aaaa,
    /// IPv4; if the name has no A record (but exists), IPv6.
    Ipv4ThenIpv6,
    /// IPv6; if the name has no AAAA record (but exists), IPv4.
    Ipv6ThenIpv4,
    /// Reverse lookup: the name must be an `in-addr.arpa`/`ip6.arpa` name.
    Ptr,
}

impl QueryKind {
    /// Choose what to resolve for a BEGIN, from its flags (§5.1:
    /// `BEGIN_FLAG_IPV6_OK` 0x1, `BEGIN_FLAG_IPV4_NOT_OK` 0x2,
    /// `BEGIN_FLAG_IPV6_PREFERRED` 0x4) and whether this exit allows IPv6
    /// (IPv6Exit). `None` means no family is acceptable: the caller answers
    /// END(EXITPOLICY), as connection_exit_begin_conn does.
    pub fn for_begin(flags: u32, ipv6_exit: bool) -> Option<QueryKind> {
        let ipv6_ok = ipv6_exit && flags & 0x1 != 0;
        let ipv4_ok = flags & 0x2 == 0;
        let ipv6_preferred = ipv6_ok && flags & 0x4 != 0;
        match (ipv4_ok, ipv6_ok) {
            (true, false) => Some(QueryKind::A),
            (false, true) => Some(QueryKind::Aaaa),
            (true, true) if ipv6_preferred => Some(QueryKind::Ipv6ThenIpv4),
            (true, true) => Some(QueryKind::Ipv4ThenIpv6),
            (false, false) => None,
        }
    }

    /// The DNS record type asked for first.
    pub(crate) fn first_type(self) -> RecordType {
        match self {
            QueryKind::A | QueryKind::Ipv4ThenIpv6 => RecordType::A,
            QueryKind::Aaaa | QueryKind::Ipv6ThenIpv4 => RecordType::AAAA,
            QueryKind::Ptr => RecordType::PTR,
        }
    }

    /// The record type asked for when the first has no data, if any.
    pub(crate) fn fallback_type(self) -> Option<RecordType> {
        match self {
            QueryKind::Ipv4ThenIpv6 => Some(RecordType::AAAA),
            QueryKind::Ipv6ThenIpv4 => Some(RecordType::A),
            _ => None,
        }
    }
}

/// A question for the resolver: a checked, lower-cased name without a
/// trailing dot, and what to ask about it. Build it with [`Query::new`] or
/// from a [`Target`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Query {
    name: String,
    kind: QueryKind,
}

impl Query {
    /// Check `name` and make a query. For [`QueryKind::Ptr`] the name must
    /// be a reverse name (`…in-addr.arpa` / `…ip6.arpa`); for the others it
    /// must be a plausible hostname, not an IP literal or a reverse name.
    pub fn new(name: &str, kind: QueryKind) -> Result<Query, AddressError> {
        let purpose = if kind == QueryKind::Ptr {
            Purpose::Resolve
        } else {
            Purpose::Connect
        };
        match (classify_address(name, purpose)?, kind) {
            (Target::Reverse { name, .. }, QueryKind::Ptr) => Ok(Query { name, kind }),
            (Target::Hostname(name), k) if k != QueryKind::Ptr => Ok(Query { name, kind }),
            _ => Err(AddressError::WrongKind {
                name: address::escape(name),
                kind,
            }),
        }
    }

    /// A PTR query for `ip` (built from the address, so always valid).
    pub fn reverse(ip: IpAddr) -> Query {
        Query {
            name: address::reverse_name(ip),
            kind: QueryKind::Ptr,
        }
    }

    /// The lower-cased name, without trailing dot.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What is asked.
    pub fn kind(&self) -> QueryKind {
        self.kind
    }
}

/// A successful lookup, as the exit needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The addresses, in the order the server gave them (empty for PTR).
    pub addrs: Vec<IpAddr>,
    /// TTL to report to the client in CONNECTED / RESOLVED, already clipped
    /// with [`clip_dns_ttl`] (§5.2).
    pub ttl: u32,
    /// For PTR: the host name (lower-cased, no trailing dot).
    pub hostname: Option<String>,
}

/// Why a lookup failed. [`ResolveError::is_transient`] splits them the way
/// C tor does (dns.c:evdns_err_is_transient: server failure, truncation and
/// timeout are transient; everything else is permanent).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The name does not exist (NXDOMAIN).
    #[error("{name}: no such domain (NXDOMAIN)")]
    NxDomain { name: String },
    /// The name exists but has no record of the asked type (NOERROR with an
    /// empty answer, after following CNAMEs).
    #[error("{name}: no {rtype} record")]
    NoData { name: String, rtype: RecordType },
    /// SERVFAIL from the last nameserver tried, after all attempts.
    #[error("{name}: server failure (SERVFAIL) after {attempts} attempt(s)")]
    ServerFailure { name: String, attempts: u32 },
    /// Another error code (REFUSED, NOTIMP, FORMERR, …) after all attempts.
    #[error("{name}: nameserver answered {rcode} after {attempts} attempt(s)")]
    Rcode {
        name: String,
        rcode: ResponseCode,
        attempts: u32,
    },
    /// The answer had TC set. There is no TCP fallback yet.
    #[error("{name}: answer truncated (TC) and TCP fallback is not implemented")]
    Truncated { name: String },
    /// No acceptable answer within the timeout, on every attempt.
    #[error("{name}: no answer after {attempts} attempt(s)")]
    Timeout { name: String, attempts: u32 },
    /// The name could not be encoded as a DNS query (should not happen for
    /// a name that passed [`classify_address`]).
    #[error("{name}: cannot be put in a DNS query: {reason}")]
    BadName { name: String, reason: String },
    /// Too many lookups in flight on this worker.
    #[error("{name}: too many DNS lookups in flight ({limit})")]
    Overloaded { name: String, limit: usize },
}

impl ResolveError {
    /// Transient errors may succeed if retried later (RESOLVED type 0xF0);
    /// permanent ones will not (0xF1).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ResolveError::ServerFailure { .. }
                | ResolveError::Truncated { .. }
                | ResolveError::Timeout { .. }
                | ResolveError::Overloaded { .. }
        )
    }

    /// The RESOLVED answer type for this error (§5.4).
    pub fn resolved_type(&self) -> u8 {
        if self.is_transient() {
            RESOLVED_TYPE_ERROR_TRANSIENT
        } else {
            RESOLVED_TYPE_ERROR
        }
    }

    /// The END reason for a BEGIN whose lookup failed: always RESOLVEFAILED
    /// (§5.1; connection_exit_begin_conn).
    pub fn end_reason(&self) -> u8 {
        END_REASON_RESOLVEFAILED
    }
}
