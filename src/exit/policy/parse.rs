#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! Parsing torrc `ExitPolicy` values: a comma-separated list of
//! `accept|reject|accept6|reject6 ADDR[/MASK][:PORTS]` items, the syntax of
//! policy_parse.c:router_parse_addr_policy_item_from_string and
//! address.c:tor_addr_parse_mask_ports (with TAPMP_EXTENDED_STAR).
//!
//! Where C tor silently drops an item (`accept6 1.2.3.4:80`: an IPv4 address
//! with an IPv6 verb), oxit refuses it: an exit policy that does not say
//! what the operator meant is worse than a failed start.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Action, AddrPattern, PolicyRule, PortRange};

/// What was wrong with one policy item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad exit policy item {item:?}: {problem}")]
pub struct PolicyParseError {
    /// The item as written (one comma-separated element).
    pub item: String,
    pub problem: PolicyProblem,
}

/// The specific fault in a policy item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyProblem {
    #[error("expected accept, reject, accept6 or reject6 followed by ADDRESS[/MASK][:PORTS]")]
    MissingAction,
    #[error("expected exactly one ADDRESS[/MASK][:PORTS] after the action")]
    WrongArgumentCount,
    #[error("no closing ']' for the IPv6 address")]
    UnclosedBracket,
    #[error("{0:?} is not an IPv4 address, [IPv6] address, '*', '*4', '*6' or 'private'")]
    BadAddress(String),
    #[error("mask {0:?} is not a bit count or an IPv4 prefix mask")]
    BadMask(String),
    #[error("mask /{bits} is too long for an {family} address")]
    MaskTooLong { bits: u32, family: &'static str },
    #[error("a wildcard address cannot have a mask")]
    MaskOnWildcard,
    #[error("'private' cannot have a mask")]
    MaskOnPrivate,
    #[error("port {0:?} is not a port number (0-65535), a range LOW-HIGH or '*'")]
    BadPort(String),
    #[error("port range {0}-{1} is empty (low end above high end)")]
    EmptyPortRange(u16, u16),
    #[error(
        "accept6/reject6 need an IPv6 address or '*'/'*6' (C tor would silently ignore this item)"
    )]
    Ipv4WithV6Action,
}

/// Parse a whole `ExitPolicy` value: comma-separated items, blanks ignored
/// (smartlist_split_string with SPLIT_SKIP_SPACE|SPLIT_IGNORE_BLANK).
pub fn parse_policy_list(value: &str) -> Result<Vec<PolicyRule>, PolicyParseError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_policy_item)
        .collect()
}

/// Parse one item such as `reject 10.0.0.0/8:*` or `accept6 [2001:db8::]/32:443`.
pub fn parse_policy_item(item: &str) -> Result<PolicyRule, PolicyParseError> {
    let err = |problem| PolicyParseError {
        item: item.to_owned(),
        problem,
    };
    let mut words = item.split_ascii_whitespace();
    let verb = words.next().unwrap_or("");
    let (action, v6_only) = match verb.to_ascii_lowercase().as_str() {
        "accept" => (Action::Accept, false),
        "reject" => (Action::Reject, false),
        "accept6" => (Action::Accept, true),
        "reject6" => (Action::Reject, true),
        _ => return Err(err(PolicyProblem::MissingAction)),
    };
    let (Some(arg), None) = (words.next(), words.next()) else {
        return Err(err(PolicyProblem::WrongArgumentCount));
    };
    let (addr, ports) = parse_addr_mask_ports(arg, v6_only).map_err(err)?;
    Ok(PolicyRule::new(action, addr, ports))
}

/// `ADDR[/MASK][:PORTS]`; IPv6 addresses must be in brackets, since the
/// first ':' after the address starts the ports.
fn parse_addr_mask_ports(
    s: &str,
    v6_only: bool,
) -> Result<(AddrPattern, PortRange), PolicyProblem> {
    let (addr_part, rest) = if let Some(inner) = s.strip_prefix('[') {
        inner
            .split_once(']')
            .ok_or(PolicyProblem::UnclosedBracket)?
    } else {
        let end = s.find(['/', ':']).unwrap_or(s.len());
        (&s[..end], &s[end..])
    };
    let bracketed = s.starts_with('[');
    let (mask, ports) = match rest.strip_prefix('/') {
        Some(m) => match m.split_once(':') {
            Some((m, p)) => (Some(m), Some(p)),
            None => (Some(m), None),
        },
        None => match rest.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None if rest.is_empty() => (None, None),
            None => return Err(PolicyProblem::BadAddress(s.to_owned())),
        },
    };
    let ports = parse_port_range(ports.unwrap_or("*"))?;

    // `private` and wildcards first (router_parse_addr_policy_private,
    // TAPMP_EXTENDED_STAR). `accept6 private` still means both families.
    if !bracketed {
        let wildcard = match addr_part {
            "private" => {
                if mask.is_some() {
                    return Err(PolicyProblem::MaskOnPrivate);
                }
                return Ok((AddrPattern::Private, ports));
            }
            "*" if v6_only => Some(AddrPattern::ANY6),
            "*" => Some(AddrPattern::Any),
            "*4" => Some(AddrPattern::ANY4),
            "*6" => Some(AddrPattern::ANY6),
            _ => None,
        };
        if let Some(w) = wildcard {
            if mask.is_some() {
                return Err(PolicyProblem::MaskOnWildcard);
            }
            if v6_only && w == AddrPattern::ANY4 {
                return Err(PolicyProblem::Ipv4WithV6Action);
            }
            return Ok((w, ports));
        }
    }

    if bracketed {
        let addr: Ipv6Addr = addr_part
            .parse()
            .map_err(|_| PolicyProblem::BadAddress(addr_part.to_owned()))?;
        let bits = match mask {
            None => 128,
            Some(m) => parse_mask_bits(m, 128, "IPv6")?,
        };
        Ok((AddrPattern::V6 { addr, bits }, ports))
    } else {
        let addr: Ipv4Addr = addr_part
            .parse()
            .map_err(|_| PolicyProblem::BadAddress(addr_part.to_owned()))?;
        if v6_only {
            return Err(PolicyProblem::Ipv4WithV6Action);
        }
        let bits = match mask {
            None => 32,
            Some(m) => parse_mask_bits(m, 32, "IPv4")?,
        };
        Ok((AddrPattern::V4 { addr, bits }, ports))
    }
}

/// A mask is a bit count or, for IPv4 only in C, a dotted prefix mask
/// (`255.255.0.0`); C accepts the dotted form for IPv6 too, which then
/// means the same bit count, and we follow.
fn parse_mask_bits(m: &str, max: u32, family: &'static str) -> Result<u8, PolicyProblem> {
    let bits = if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) {
        m.parse::<u32>()
            .map_err(|_| PolicyProblem::BadMask(m.to_owned()))?
    } else {
        let mask: Ipv4Addr = m
            .parse()
            .map_err(|_| PolicyProblem::BadMask(m.to_owned()))?;
        let v = u32::from(mask);
        let ones = v.leading_ones();
        // A prefix mask has all its ones at the top (addr_mask_get_bits).
        if v.checked_shl(ones).unwrap_or(0) != 0 {
            return Err(PolicyProblem::BadMask(m.to_owned()));
        }
        ones
    };
    if bits > max {
        return Err(PolicyProblem::MaskTooLong { bits, family });
    }
    u8::try_from(bits).map_err(|_| PolicyProblem::BadMask(m.to_owned()))
}

/// `*`, empty, `N` or `LOW-HIGH` (address.c:parse_port_range): 0 is allowed
/// and clamped to 1; a reversed range is an error.
fn parse_port_range(p: &str) -> Result<PortRange, PolicyProblem> {
    if p.is_empty() || p == "*" {
        return Ok(PortRange::ALL);
    }
    let num = |s: &str| -> Result<u16, PolicyProblem> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PolicyProblem::BadPort(p.to_owned()));
        }
        s.parse::<u16>()
            .map_err(|_| PolicyProblem::BadPort(p.to_owned()))
    };
    match p.split_once('-') {
        None => Ok(PortRange::single(num(p)?)),
        Some((lo, hi)) => {
            let (lo, hi) = (num(lo)?, num(hi)?);
            if hi == 0 {
                // C parses the high end with a minimum of 1.
                return Err(PolicyProblem::BadPort(p.to_owned()));
            }
            PortRange::new(lo, hi).ok_or(PolicyProblem::EmptyPortRange(lo, hi))
        }
    }
}
