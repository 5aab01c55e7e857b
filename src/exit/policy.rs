//! Exit policy: the rule model, parsing of torrc `ExitPolicy` values, the
//! effective policy built the way C tor builds it, and the queries the exit
//! path asks (requirements.md §5.9), and its port summary ([`summary`]).
//!
//! This module owns the *semantics* of a policy. It does not own where the
//! inputs come from: the configuration (`crate::config`) supplies the user's
//! rules and switches, and the caller enumerates local interface addresses.
//!
//! Layout: [`parse`] turns `accept 1.2.3.0/24:80-88` into a [`PolicyRule`];
//! [`build`] assembles the effective [`ExitPolicy`] like
//! `policies.c:policies_parse_exit_policy_internal`; this file holds the
//! types, matching and formatting.

mod build;
mod parse;
mod summary;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use build::{DEFAULT_EXIT_POLICY, ExitPolicyOptions, PRIVATE_NETS, REDUCED_EXIT_POLICY};
pub use parse::{PolicyParseError, parse_policy_item, parse_policy_list};

/// What a rule does to a matching connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    Reject,
}

/// The address part of a rule, as written in a torrc.
///
/// [`Any`](AddrPattern::Any) (`*`) and [`Private`](AddrPattern::Private)
/// only exist in parsed input: an [`ExitPolicy`] holds only `V4`/`V6`
/// networks, because C tor expands `*` into `*4` + `*6` and `private` into
/// [`PRIVATE_NETS`] before using a policy (policies.c:parse_addr_policy →
/// policy_expand_private, policy_expand_unspec). `*4` is `V4 0.0.0.0/0` and
/// `*6` is `V6 ::/0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrPattern {
    /// `*`: every IPv4 and IPv6 address.
    Any,
    /// `private`: the [`PRIVATE_NETS`] list (both families).
    Private,
    /// An IPv4 network. `bits == 0` is `*4`. The address is kept as written
    /// (host bits are not cleared), as C tor does; matching masks it.
    V4 { addr: Ipv4Addr, bits: u8 },
    /// An IPv6 network. `bits == 0` is `*6`.
    V6 { addr: Ipv6Addr, bits: u8 },
}

impl AddrPattern {
    /// (is it IPv6, mask bits) for questions asked about one family
    /// (`asked_v6`). `*` and `private` do not survive policy expansion; if
    /// seen they count as the asked family, `*` as a /0 and `private` as
    /// narrower than that.
    fn family_and_bits(&self, asked_v6: bool) -> (bool, u8) {
        match *self {
            AddrPattern::V4 { bits, .. } => (false, bits),
            AddrPattern::V6 { bits, .. } => (true, bits),
            AddrPattern::Any => (asked_v6, 0),
            AddrPattern::Private => (asked_v6, 1),
        }
    }

    /// `*4`.
    pub const ANY4: AddrPattern = AddrPattern::V4 {
        addr: Ipv4Addr::UNSPECIFIED,
        bits: 0,
    };
    /// `*6`.
    pub const ANY6: AddrPattern = AddrPattern::V6 {
        addr: Ipv6Addr::UNSPECIFIED,
        bits: 0,
    };

    /// Mask bits of a concrete network (`None` for `*` and `private`).
    fn bits(&self) -> Option<u8> {
        match *self {
            AddrPattern::V4 { bits, .. } | AddrPattern::V6 { bits, .. } => Some(bits),
            AddrPattern::Any | AddrPattern::Private => None,
        }
    }

    /// Does this network contain `ip`? Families never match each other
    /// (tor_addr_compare_masked with CMP_EXACT).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (AddrPattern::V4 { addr, bits }, IpAddr::V4(ip)) => {
                prefix_eq(&addr.octets(), &ip.octets(), bits)
            }
            (AddrPattern::V6 { addr, bits }, IpAddr::V6(ip)) => {
                prefix_eq(&addr.octets(), &ip.octets(), bits)
            }
            (AddrPattern::Any, _) => true,
            (AddrPattern::Private, ip) => PRIVATE_NETS.iter().any(|n| n.contains(ip)),
            _ => false,
        }
    }

    /// Same family, and the first `bits` bits of both addresses agree
    /// (tor_addr_compare_masked(a, b, bits, CMP_EXACT) == 0).
    fn prefix_matches(&self, other: &AddrPattern, bits: u8) -> bool {
        match (*self, *other) {
            (AddrPattern::V4 { addr: a, .. }, AddrPattern::V4 { addr: b, .. }) => {
                prefix_eq(&a.octets(), &b.octets(), bits)
            }
            (AddrPattern::V6 { addr: a, .. }, AddrPattern::V6 { addr: b, .. }) => {
                prefix_eq(&a.octets(), &b.octets(), bits)
            }
            _ => false,
        }
    }
}

/// Compare the first `bits` bits of two equal-length byte strings.
fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let mut left = usize::from(bits);
    for (x, y) in a.iter().zip(b.iter()) {
        if left == 0 {
            return true;
        }
        let take = left.min(8);
        // take is 1..=8: the mask keeps the top `take` bits.
        let mask = 0xffu8 << (8 - take);
        if (x & mask) != (y & mask) {
            return false;
        }
        left -= take;
    }
    true
}

/// An inclusive port range; `*` is 1–65535. Port 0 never appears (C clamps
/// a written 0 to 1, address.c:parse_port_range).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    min: u16,
    max: u16,
}

impl PortRange {
    /// `*`.
    pub const ALL: PortRange = PortRange { min: 1, max: 65535 };

    /// A range `min..=max`; `None` if `min > max`. A `min` of 0 becomes 1.
    pub fn new(min: u16, max: u16) -> Option<PortRange> {
        let min = min.max(1);
        (min <= max).then_some(PortRange { min, max })
    }

    /// A single port (0 becomes 1, as in C).
    pub fn single(port: u16) -> PortRange {
        let p = port.max(1);
        PortRange { min: p, max: p }
    }

    pub fn min(&self) -> u16 {
        self.min
    }

    pub fn max(&self) -> u16 {
        self.max
    }

    pub fn contains(&self, port: u16) -> bool {
        self.min <= port && port <= self.max
    }

    /// Covers every port (C: `prt_min <= 1 && prt_max == 65535`).
    pub fn is_all(&self) -> bool {
        self.min <= 1 && self.max == 65535
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            f.write_str("*")
        } else if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// One `accept|reject ADDR:PORTS` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyRule {
    pub action: Action,
    pub addr: AddrPattern,
    pub ports: PortRange,
}

impl PolicyRule {
    pub fn new(action: Action, addr: AddrPattern, ports: PortRange) -> PolicyRule {
        PolicyRule {
            action,
            addr,
            ports,
        }
    }

    /// Does this rule apply to `ip:port`?
    pub fn matches(&self, ip: IpAddr, port: u16) -> bool {
        self.ports.contains(port) && self.addr.contains(ip)
    }

    /// `accept/reject *4:*` or `*6:*` (or `*:*` before expansion).
    pub fn is_catch_all(&self) -> bool {
        self.ports.is_all()
            && matches!(self.addr.bits(), Some(0) | None)
            && self.addr != AddrPattern::Private
    }

    /// Write in descriptor form (policies.c:policy_write_item with
    /// format_for_desc=1): `*` for a zero mask, `accept6`/`reject6` for IPv6.
    pub fn write_descriptor(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "{}",
            RuleFmt {
                rule: self,
                desc: true
            }
        );
    }
}

/// torrc form (policy_write_item with format_for_desc=0): `*4`/`*6` for
/// zero masks, `accept`/`reject` for both families, `/bits` only when it is
/// not a full-length mask.
impl fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        RuleFmt {
            rule: self,
            desc: false,
        }
        .fmt(f)
    }
}

struct RuleFmt<'a> {
    rule: &'a PolicyRule,
    desc: bool,
}

impl fmt::Display for RuleFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.rule;
        let verb = match r.action {
            Action::Accept => "accept",
            Action::Reject => "reject",
        };
        let six = matches!(r.addr, AddrPattern::V6 { .. }) && self.desc;
        write!(f, "{verb}{} ", if six { "6" } else { "" })?;
        match r.addr {
            AddrPattern::Any => f.write_str("*")?,
            AddrPattern::Private => f.write_str("private")?,
            AddrPattern::V4 { bits: 0, .. } => f.write_str(if self.desc { "*" } else { "*4" })?,
            AddrPattern::V6 { bits: 0, .. } => f.write_str(if self.desc { "*" } else { "*6" })?,
            AddrPattern::V4 { addr, bits } => {
                write!(f, "{addr}")?;
                if bits < 32 {
                    write!(f, "/{bits}")?;
                }
            }
            AddrPattern::V6 { addr, bits } => {
                write!(f, "[{addr}]")?;
                if bits < 128 {
                    write!(f, "/{bits}")?;
                }
            }
        }
        write!(f, ":{}", r.ports)
    }
}

/// An effective exit policy: an ordered list of rules over concrete IPv4 and
/// IPv6 networks; first match wins, no match accepts (dir-spec §2.1.1;
/// policies.c:compare_known_tor_addr_to_addr_policy).
///
/// Built once by the control plane and shared read-only with the workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitPolicy {
    rules: Vec<PolicyRule>,
}

impl ExitPolicy {
    /// A policy from rules exactly as given, after expanding `*` and
    /// `private` the way C does. No default policy is added and nothing is
    /// removed: this is for tests and for policies read from elsewhere.
    pub fn from_rules(rules: impl IntoIterator<Item = PolicyRule>) -> ExitPolicy {
        let mut out = Vec::new();
        build::expand_into(rules, &mut out);
        ExitPolicy { rules: out }
    }

    /// `reject *4:*, reject *6:*`: what a non-exit publishes.
    pub fn reject_all() -> ExitPolicy {
        ExitPolicy {
            rules: vec![
                PolicyRule::new(Action::Reject, AddrPattern::ANY4, PortRange::ALL),
                PolicyRule::new(Action::Reject, AddrPattern::ANY6, PortRange::ALL),
            ],
        }
    }

    /// The rules, in order. Every address is `V4` or `V6`.
    pub fn rules(&self) -> &[PolicyRule] {
        &self.rules
    }

    /// May we connect to `addr:port`? First match wins; no match accepts.
    /// IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry,
    /// so `::ffff:127.0.0.1` cannot slip past `reject private:*`.
    pub fn allows(&self, addr: IpAddr, port: u16) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.rules
            .iter()
            .find(|r| r.matches(addr, port))
            .is_none_or(|r| r.action == Action::Accept)
    }

    /// Could some address be accepted on `port`? Used before DNS resolution
    /// to refuse a BEGIN early. Per family, walk the rules that cover `port`:
    /// an accept means "maybe", a reject of the whole family means "no" for
    /// that family (a finer version of
    /// policies.c:compare_unknown_tor_addr_to_addr_policy, which would let
    /// `reject *6:*` decide for both families).
    pub fn may_allow_port(&self, port: u16) -> bool {
        self.family_may_allow_port(false, port) || self.family_may_allow_port(true, port)
    }

    fn family_may_allow_port(&self, v6: bool, port: u16) -> bool {
        for r in self.rules.iter().filter(|r| r.ports.contains(port)) {
            let (is_v6, bits) = r.addr.family_and_bits(v6);
            if is_v6 != v6 {
                continue;
            }
            match r.action {
                Action::Accept => return true,
                Action::Reject if bits == 0 => return false,
                Action::Reject => {}
            }
        }
        true
    }

    /// Is this certainly a reject-all policy for IPv4 (what decides whether
    /// the descriptor says `reject *:*`)? Mirrors
    /// policies.c:policy_is_reject_star(policy, AF_INET, 1).
    pub fn is_reject_all(&self) -> bool {
        self.is_reject_all_for(false)
    }

    /// The same question for IPv6 (drives the `ipv6-policy` line).
    pub fn is_reject_all_v6(&self) -> bool {
        self.is_reject_all_for(true)
    }

    fn is_reject_all_for(&self, v6: bool) -> bool {
        for r in &self.rules {
            let (is_v6, bits) = r.addr.family_and_bits(v6);
            if is_v6 != v6 {
                continue;
            }
            match r.action {
                Action::Accept => return false,
                Action::Reject if bits == 0 && r.ports.is_all() => return true,
                Action::Reject => {}
            }
        }
        true
    }

    /// The descriptor's accept/reject lines (router.c:router_dump_router_to_string
    /// → policy_dump_to_string(policy, 1, 0)): IPv4 rules only, one per line,
    /// no trailing newline; `reject *:*` for a reject-all policy.
    pub fn descriptor_lines(&self) -> String {
        if self.is_reject_all() {
            return "reject *:*".to_owned();
        }
        let mut out = String::new();
        for r in self
            .rules
            .iter()
            .filter(|r| matches!(r.addr, AddrPattern::V4 { .. }))
        {
            if !out.is_empty() {
                out.push('\n');
            }
            r.write_descriptor(&mut out);
        }
        out
    }
}

/// torrc form, comma-separated: `reject *6:*, reject 0.0.0.0/8:*, …`.
impl fmt::Display for ExitPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}
