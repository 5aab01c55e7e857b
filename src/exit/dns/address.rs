#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! What a BEGIN or RESOLVE address asks for, decided before any DNS query:
//! an IP literal (answered without DNS), a hostname to resolve, or a
//! reverse name (`in-addr.arpa` / `ip6.arpa`) for a PTR lookup. Obviously
//! bad names are refused here, so they never reach a nameserver.
//!
//! Follows C tor's dns.c:dns_resolve_impl: tor_addr_parse first (IP
//! literals need no lookup), then address_is_invalid_destination with
//! `ServerDNSAllowNonRFC953Hostnames 0` (letters, digits, `-`, `_`; labels
//! must not start with `-` or `_`; address.c:string_is_valid_nonrfc_hostname),
//! then tor_addr_parse_PTR_name (reverse names: only for RESOLVE, never for an
//! internal address). Does not own the exit policy check on the result.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::QueryKind;

/// Longest name we ask about, without the trailing dot (RFC 1035 §2.3.4:
/// 255 octets on the wire, i.e. 253 characters in text form).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Why the stream asked for (BEGIN connects, RESOLVE only looks up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// RELAY_BEGIN: a reverse name is an error (dns_resolve_impl: "Attempt
    /// to connect to a .in-addr.arpa address").
    Connect,
    /// RELAY_RESOLVE: a reverse name asks for PTR.
    Resolve,
}

/// What an address needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An IP literal (`1.2.3.4`, `::1` or `[::1]`): no DNS needed; report
    /// [`super::DEFAULT_DNS_TTL`] as dns_resolve_impl does.
    Ip(IpAddr),
    /// A hostname to resolve: lower-cased, trailing dot removed.
    Hostname(String),
    /// A reverse name for a RESOLVE (PTR), with the address it names.
    Reverse { ip: IpAddr, name: String },
}

impl Target {
    /// The query for this target, or `None` for an IP literal. `kind` is
    /// used for hostnames; a reverse name always asks for PTR.
    pub fn query(&self, kind: QueryKind) -> Option<super::Query> {
        match self {
            Target::Ip(_) => None,
            Target::Hostname(name) => Some(super::Query {
                name: name.clone(),
                kind: if kind == QueryKind::Ptr {
                    QueryKind::Ipv4ThenIpv6
                } else {
                    kind
                },
            }),
            Target::Reverse { name, .. } => Some(super::Query {
                name: name.clone(),
                kind: QueryKind::Ptr,
            }),
        }
    }
}

/// Why an address was refused before any query. All of these are permanent
/// failures (RESOLVED 0xF1, END RESOLVEFAILED), as in dns_resolve_impl.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty address")]
    Empty,
    #[error("address {name:?}… is {len} characters long, more than {MAX_NAME_LEN}")]
    TooLong { name: String, len: usize },
    #[error("address {name:?}: bracketed text is not an IPv6 address")]
    BadIpv6Literal { name: String },
    #[error("address {name:?}: {reason}")]
    BadHostname { name: String, reason: &'static str },
    #[error("address {name:?}: malformed reverse (PTR) name")]
    BadReverse { name: String },
    #[error("address {name:?}: reverse (PTR) names can only be resolved, not connected to")]
    ReverseNotAllowed { name: String },
    #[error("address {name:?}: reverse lookup of an internal address is refused")]
    InternalReverse { name: String },
    #[error("address {name:?} cannot be asked as {kind:?}")]
    WrongKind { name: String, kind: QueryKind },
}

impl AddressError {
    /// RESOLVED answer type: invalid input is a permanent error.
    pub fn resolved_type(&self) -> u8 {
        super::RESOLVED_TYPE_ERROR
    }

    /// END reason for a BEGIN with this address: RESOLVEFAILED, as C tor
    /// sends when dns_resolve_impl returns -1.
    pub fn end_reason(&self) -> u8 {
        super::END_REASON_RESOLVEFAILED
    }
}

/// A short, printable copy of a peer-supplied name for errors and logs.
pub(crate) fn escape(name: &str) -> String {
    name.chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect()
}

/// Decide what `addr` (the host part of a BEGIN, or a RESOLVE payload)
/// needs. The input is compared case-insensitively and returned lower-cased.
pub fn classify_address(addr: &str, purpose: Purpose) -> Result<Target, AddressError> {
    if addr.is_empty() {
        return Err(AddressError::Empty);
    }
    if let Some(inner) = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Target::Ip(IpAddr::V6(ip)))
            .map_err(|_| AddressError::BadIpv6Literal { name: escape(addr) });
    }
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Ok(Target::Ip(ip));
    }
    let trimmed = addr.strip_suffix('.').unwrap_or(addr);
    if trimmed.len() > MAX_NAME_LEN {
        return Err(AddressError::TooLong {
            name: escape(addr),
            len: addr.len(),
        });
    }
    let name = trimmed.to_ascii_lowercase();
    check_hostname(&name).map_err(|reason| AddressError::BadHostname {
        name: escape(addr),
        reason,
    })?;
    if name.ends_with(".in-addr.arpa") || name.ends_with(".ip6.arpa") {
        let ip = parse_reverse_name(&name)
            .ok_or_else(|| AddressError::BadReverse { name: escape(addr) })?;
        if purpose == Purpose::Connect {
            return Err(AddressError::ReverseNotAllowed { name: escape(addr) });
        }
        if is_internal(ip) {
            return Err(AddressError::InternalReverse { name: escape(addr) });
        }
        return Ok(Target::Reverse { ip, name });
    }
    Ok(Target::Hostname(name))
}

/// address.c:string_is_valid_nonrfc_hostname on a lower-cased name without
/// trailing dot, plus the RFC 1035 label length.
fn check_hostname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    for label in name.split('.') {
        let first = label.bytes().next().ok_or("empty label")?;
        if label.len() > MAX_LABEL_LEN {
            return Err("label longer than 63 characters");
        }
        if first == b'-' || first == b'_' {
            return Err("label starts with '-' or '_'");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("character other than letter, digit, '-' or '_'");
        }
    }
    Ok(())
}

/// Parse `d.c.b.a.in-addr.arpa` (exactly four decimal octets) or the
/// 32-nibble `ip6.arpa` form (address.c:tor_addr_parse_PTR_name).
pub fn parse_reverse_name(name: &str) -> Option<IpAddr> {
    let lower = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if let Some(rest) = lower.strip_suffix(".in-addr.arpa") {
        let octet = |label: &str| -> Option<u8> {
            if label.is_empty() || label.len() > 3 || !label.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            label.parse().ok()
        };
        // Reversed order: the first label is the last octet.
        let labels: Vec<&str> = rest.split('.').collect();
        let [d, c, b, a] = labels.as_slice() else {
            return None;
        };
        return Some(IpAddr::V4(Ipv4Addr::new(
            octet(a)?,
            octet(b)?,
            octet(c)?,
            octet(d)?,
        )));
    }
    if let Some(rest) = lower.strip_suffix(".ip6.arpa") {
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() != 32
            || !labels
                .iter()
                .all(|l| l.len() == 1 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return None;
        }
        // The first label is the lowest nibble, so the labels reversed
        // spell the address in hex.
        let hex: String = labels.iter().rev().copied().collect();
        return u128::from_str_radix(&hex, 16)
            .ok()
            .map(|v| IpAddr::V6(Ipv6Addr::from(v)));
    }
    None
}

/// The reverse name of `ip` (`4.3.2.1.in-addr.arpa`, or 32 nibbles under
/// `ip6.arpa`), lower-case, without trailing dot.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            // Nibbles from the lowest: each byte from the last, low nibble
            // first.
            let mut s = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                let hex = format!("{byte:02x}");
                for nibble in hex.chars().rev() {
                    s.push(nibble);
                    s.push('.');
                }
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// Close to C tor's tor_addr_is_internal (address.c): addresses that must
/// not be reverse-resolved through the exit's nameserver.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            a == 0
                || a == 10
                || a == 127
                || (a == 169 && b == 254)
                || (a == 172 && (16..=31).contains(&b))
                || (a == 192 && b == 168)
                || (a == 100 && (64..=127).contains(&b))
        }
        IpAddr::V6(v6) => {
            let seg0 = v6.segments()[0];
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            v6.is_unspecified()
                || v6.is_loopback()
                || (seg0 & 0xfe00) == 0xfc00 // fc00::/7 unique local
                || (seg0 & 0xffc0) == 0xfe80 // fe80::/10 link local
                || (seg0 & 0xffc0) == 0xfec0 // fec0::/10 site local
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Target {
        Target::Hostname(s.to_string())
    }

    #[test]
    fn ip_literals_need_no_dns() {
        let c = Purpose::Connect;
        assert_eq!(
            classify_address("1.2.3.4", c),
            Ok(Target::Ip("1.2.3.4".parse().unwrap()))
        );
        assert_eq!(
            classify_address("[2001:db8::1]", c),
            Ok(Target::Ip("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(
            classify_address("2001:DB8::1", c),
            Ok(Target::Ip("2001:db8::1".parse().unwrap()))
        );
        assert!(matches!(
            classify_address("[1.2.3.4]", c),
            Err(AddressError::BadIpv6Literal { .. })
        ));
        assert!(matches!(
            classify_address("[zz]", c),
            Err(AddressError::BadIpv6Literal { .. })
        ));
    }

    #[test]
    fn hostnames_are_lowercased_and_checked() {
        let c = Purpose::Connect;
        assert_eq!(
            classify_address("WWW.Example.COM", c),
            Ok(host("www.example.com"))
        );
        assert_eq!(classify_address("example.com.", c), Ok(host("example.com")));
        assert_eq!(classify_address("a_b.example", c), Ok(host("a_b.example")));
        // Not a valid dotted quad, but a permitted (non-RFC) hostname, as in C.
        assert_eq!(classify_address("1.2.3", c), Ok(host("1.2.3")));
        for bad in [
            "", ".", "a..b", ".a", "-a.com", "_a.com", "a b.com", "a/b", "é.com", "a.com..", "x\0y",
        ] {
            assert!(classify_address(bad, c).is_err(), "{bad:?} accepted");
        }
        let label = "a".repeat(64);
        assert!(classify_address(&format!("{label}.com"), c).is_err());
        let long = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        assert!(matches!(
            classify_address(&long, c),
            Err(AddressError::TooLong { .. })
        ));
        let ok = format!("{}.com", vec!["a".repeat(60); 4].join("."));
        assert!(classify_address(&ok, c).is_ok());
    }

    #[test]
    fn reverse_names() {
        let r = Purpose::Resolve;
        assert_eq!(
            classify_address("4.3.2.1.IN-ADDR.ARPA", r),
            Ok(Target::Reverse {
                ip: "1.2.3.4".parse().unwrap(),
                name: "4.3.2.1.in-addr.arpa".into()
            })
        );
        let v6: IpAddr = "2001:db8::567:89ab".parse().unwrap();
        // RFC 3596 §2.5 style example, built by hand for 2001:db8::567:89ab.
        let name = "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
        assert_eq!(reverse_name(v6), name);
        assert_eq!(parse_reverse_name(name), Some(v6));
        assert_eq!(
            classify_address(name, r),
            Ok(Target::Reverse {
                ip: v6,
                name: name.into()
            })
        );
        assert_eq!(
            reverse_name("1.2.3.4".parse().unwrap()),
            "4.3.2.1.in-addr.arpa"
        );
        assert!(matches!(
            classify_address("4.3.2.1.in-addr.arpa", Purpose::Connect),
            Err(AddressError::ReverseNotAllowed { .. })
        ));
        assert!(matches!(
            classify_address("1.0.0.127.in-addr.arpa", r),
            Err(AddressError::InternalReverse { .. })
        ));
        for bad in [
            "3.2.1.in-addr.arpa",
            "5.4.3.2.1.in-addr.arpa",
            "256.3.2.1.in-addr.arpa",
            "x.3.2.1.in-addr.arpa",
            "1.ip6.arpa",
            "ab.0.ip6.arpa",
        ] {
            assert!(
                matches!(
                    classify_address(bad, r),
                    Err(AddressError::BadReverse { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn internal_addresses() {
        for a in [
            "10.1.1.1",
            "127.0.0.1",
            "192.168.0.1",
            "172.20.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "172.32.0.1", "2001:db8::1"] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }
}
