//! Building the effective exit policy from the options, step by step as
//! policies.c:policies_parse_exit_policy_from_options and
//! policies_parse_exit_policy_internal do, including C's removal of
//! redundant rules (exit_policy_remove_redundancies), so the published rule
//! list is the one C tor would publish for the same torrc (requirements.md
//! §5.9).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Action, AddrPattern, ExitPolicy, PolicyRule, PortRange};

const fn v4(a: u8, b: u8, c: u8, d: u8, bits: u8) -> AddrPattern {
    AddrPattern::V4 {
        addr: Ipv4Addr::new(a, b, c, d),
        bits,
    }
}

const fn v6(first: u16, bits: u8) -> AddrPattern {
    AddrPattern::V6 {
        addr: Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, 0),
        bits,
    }
}

/// What `private` expands to, in C's order (policies.c:private_nets). The
/// authorities rely on this exact list when summarising policies.
pub const PRIVATE_NETS: [AddrPattern; 12] = [
    v4(0, 0, 0, 0, 8),
    v4(169, 254, 0, 0, 16),
    v4(127, 0, 0, 0, 8),
    v4(192, 168, 0, 0, 16),
    v4(10, 0, 0, 0, 8),
    v4(172, 16, 0, 0, 12),
    v6(0, 8),
    v6(0xfc00, 7),
    v6(0xfe80, 10),
    v6(0xfec0, 10),
    v6(0xff00, 8),
    v6(0, 127),
];

/// policies.c:DEFAULT_EXIT_POLICY.
pub const DEFAULT_EXIT_POLICY: &str = "reject *:25,reject *:119,reject *:135-139,reject *:445,\
reject *:563,reject *:1214,reject *:4661-4666,\
reject *:6346-6429,reject *:6699,reject *:6881-6999,accept *:*";

/// policies.c:REDUCED_EXIT_POLICY (copied verbatim: the port list is C's).
pub const REDUCED_EXIT_POLICY: &str = "accept *:20-23,accept *:43,accept *:53,accept *:79-81,accept *:88,\
accept *:110,accept *:143,accept *:194,accept *:220,accept *:389,\
accept *:443,accept *:464,accept *:465,accept *:531,accept *:543-544,\
accept *:554,accept *:563,accept *:587,accept *:636,accept *:706,\
accept *:749,accept *:873,accept *:902-904,accept *:981,accept *:989-995,\
accept *:1194,accept *:1220,accept *:1293,accept *:1500,accept *:1533,\
accept *:1677,accept *:1723,accept *:1755,accept *:1863,\
accept *:2082-2083,accept *:2086-2087,accept *:2095-2096,\
accept *:2102-2104,accept *:3128,accept *:3389,accept *:3690,\
accept *:4321,accept *:4643,accept *:5050,accept *:5190,\
accept *:5222-5223,accept *:5228,accept *:5900,accept *:6660-6669,\
accept *:6679,accept *:6697,accept *:8000,accept *:8008,accept *:8074,\
accept *:8080,accept *:8082,accept *:8087-8088,accept *:8232-8233,\
accept *:8332-8333,accept *:8443,accept *:8888,accept *:9418,\
accept *:9999,accept *:10000,accept *:11371,accept *:19294,\
accept *:19638,accept *:50002,accept *:64738,reject *:*";

/// The inputs of the policy builder: the exit-related options plus the
/// addresses C tor would look up itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitPolicyOptions {
    /// `ExitRelay`: `Some(true)`/`Some(false)`, or `None` for `auto`
    /// (an exit only if an exit option is set; policy_using_default_exit_options).
    pub exit_relay: Option<bool>,
    /// The user's `ExitPolicy` rules in order, or `None` if no `ExitPolicy`
    /// line was given (C distinguishes "unset" for `ExitRelay auto`).
    pub user_rules: Option<Vec<PolicyRule>>,
    pub ipv6_exit: bool,
    pub reject_private: bool,
    pub reject_local_interfaces: bool,
    pub reduced: bool,
    /// The addresses we publish (`Address`, or what we discovered). Rejected
    /// when `reject_private` is on.
    pub published_addresses: Vec<IpAddr>,
    /// The addresses our listeners are bound to (ORPort, MetricsPort...).
    /// Rejected when `reject_local_interfaces` is on.
    pub port_addresses: Vec<IpAddr>,
    /// Every address of every local interface, as enumerated by the caller.
    /// Rejected when `reject_local_interfaces` is on.
    pub interface_addresses: Vec<IpAddr>,
}

impl ExitPolicy {
    /// The effective policy for these options, built as
    /// policies.c:policies_parse_exit_policy_from_options does.
    pub fn build(o: &ExitPolicyOptions) -> ExitPolicy {
        // ExitRelay 0, or auto with every exit option at its default:
        // not an exit at all.
        let default_exit_options = o.user_rules.is_none() && !o.reduced && !o.ipv6_exit;
        if o.exit_relay == Some(false) || (o.exit_relay.is_none() && default_exit_options) {
            return ExitPolicy::reject_all();
        }

        let mut dest = Vec::new();
        if !o.ipv6_exit {
            push_rule(
                &mut dest,
                PolicyRule::new(Action::Reject, AddrPattern::ANY6, PortRange::ALL),
            );
        }
        if o.reject_private {
            push_rule(
                &mut dest,
                PolicyRule::new(Action::Reject, AddrPattern::Private, PortRange::ALL),
            );
        }

        // policies_parse_exit_policy_reject_private: our own public
        // addresses. The published ones only when ExitPolicyRejectPrivate
        // (policies_parse_exit_policy_from_options copies them into
        // configured_addresses only then).
        if o.reject_private {
            for &a in &o.published_addresses {
                reject_public_addr(&mut dest, a, true, o.ipv6_exit);
            }
        }
        if o.reject_local_interfaces {
            for &a in &o.port_addresses {
                reject_public_addr(&mut dest, a, true, o.ipv6_exit);
            }
            for &a in &o.interface_addresses {
                let is_v4 = matches!(a, IpAddr::V4(_));
                // IPv4 interface addresses always; IPv6 ones only for an
                // IPv6 exit (C does not even enumerate them otherwise).
                if is_v4 || o.ipv6_exit {
                    reject_public_addr(&mut dest, a, true, true);
                }
            }
        }
        if !dest.is_empty() {
            remove_redundancies(&mut dest);
        }

        if let Some(user) = &o.user_rules {
            expand_into(user.iter().copied(), &mut dest);
        }

        let tail = if o.reduced {
            REDUCED_EXIT_POLICY
        } else {
            DEFAULT_EXIT_POLICY
        };
        // Both constants are ours and covered by tests; an error here
        // cannot come from a user, so fall back to reject-all rather than
        // a half-built policy.
        match super::parse_policy_list(tail) {
            Ok(rules) => expand_into(rules, &mut dest),
            Err(_) => return ExitPolicy::reject_all(),
        }
        remove_redundancies(&mut dest);
        ExitPolicy { rules: dest }
    }
}

/// Append rules, expanding `private` into [`PRIVATE_NETS`] and `*` into
/// `*4` + `*6` (policy_expand_private, then policy_expand_unspec).
pub(super) fn expand_into(rules: impl IntoIterator<Item = PolicyRule>, out: &mut Vec<PolicyRule>) {
    for r in rules {
        push_rule(out, r);
    }
}

fn push_rule(out: &mut Vec<PolicyRule>, r: PolicyRule) {
    match r.addr {
        AddrPattern::Private => {
            out.extend(PRIVATE_NETS.iter().map(|&addr| PolicyRule { addr, ..r }));
        }
        AddrPattern::Any => {
            out.push(PolicyRule {
                addr: AddrPattern::ANY4,
                ..r
            });
            out.push(PolicyRule {
                addr: AddrPattern::ANY6,
                ..r
            });
        }
        AddrPattern::V4 { .. } | AddrPattern::V6 { .. } => out.push(r),
    }
}

/// policies.c:addr_policy_append_reject_addr_filter: `reject ADDR:*` for a
/// public address of an allowed family.
fn reject_public_addr(dest: &mut Vec<PolicyRule>, a: IpAddr, v4_rules: bool, v6_rules: bool) {
    if !is_public_for_reject(a) {
        return;
    }
    let is_v4 = match a {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    };
    if (is_v4 && v4_rules) || (!is_v4 && v6_rules) {
        let addr = match a {
            IpAddr::V4(addr) => AddrPattern::V4 { addr, bits: 32 },
            IpAddr::V6(addr) => AddrPattern::V6 { addr, bits: 128 },
        };
        dest.push(PolicyRule::new(Action::Reject, addr, PortRange::ALL));
    }
}

/// policies.c:tor_addr_is_public_for_reject: not null, not internal
/// (address.c:tor_addr_is_internal, including 100.64/10), not multicast
/// (C only checks 224/8 for IPv4).
fn is_public_for_reject(a: IpAddr) -> bool {
    let a = match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    };
    match a {
        IpAddr::V4(v4) => {
            let h = u32::from(v4);
            let internal = (h & 0xff00_0000) == 0x0a00_0000
                || (h & 0xff00_0000) == 0
                || (h & 0xff00_0000) == 0x7f00_0000
                || (h & 0xffc0_0000) == 0x6440_0000
                || (h & 0xffff_0000) == 0xa9fe_0000
                || (h & 0xfff0_0000) == 0xac10_0000
                || (h & 0xffff_0000) == 0xc0a8_0000;
            h != 0 && !internal && (h >> 24) != 0xe0
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let w0 = (u32::from(s[0]) << 16) | u32::from(s[1]);
            let internal = (w0 & 0xfe00_0000) == 0xfc00_0000
                || (w0 & 0xffc0_0000) == 0xfe80_0000
                || (w0 & 0xffc0_0000) == 0xfec0_0000
                || (u128::from(v6) & !1) == 0;
            !v6.is_unspecified() && !internal && s[0] >> 8 != 0xff
        }
    }
}

fn family_bits(r: &PolicyRule) -> Option<(bool, u8)> {
    match r.addr {
        AddrPattern::V4 { bits, .. } => Some((false, bits)),
        AddrPattern::V6 { bits, .. } => Some((true, bits)),
        AddrPattern::Any | AddrPattern::Private => None,
    }
}

/// policies.c:addr_policy_covers: `a` matches everything `b` matches.
fn covers(a: &PolicyRule, b: &PolicyRule) -> bool {
    let (Some((fa, ba)), Some((fb, bb))) = (family_bits(a), family_bits(b)) else {
        return false;
    };
    fa == fb
        && ba <= bb
        && a.addr.prefix_matches(&b.addr, ba)
        && a.ports.min() <= b.ports.min()
        && a.ports.max() >= b.ports.max()
}

/// policies.c:addr_policy_intersects: some address:port matches both.
fn intersects(a: &PolicyRule, b: &PolicyRule) -> bool {
    let (Some((_, ba)), Some((_, bb))) = (family_bits(a), family_bits(b)) else {
        return false;
    };
    a.addr.prefix_matches(&b.addr, ba.min(bb))
        && a.ports.max() >= b.ports.min()
        && b.ports.max() >= a.ports.min()
}

/// policies.c:exit_policy_remove_redundancies, the same three steps in the
/// same order, so the resulting list is C's.
fn remove_redundancies(dest: &mut Vec<PolicyRule>) {
    // Step one: nothing of a family survives after that family's catch-all.
    let (mut kill4, mut kill6) = (false, false);
    dest.retain(|r| {
        let Some((is6, bits)) = family_bits(r) else {
            return true;
        };
        if (is6 && kill6) || (!is6 && kill4) {
            return false;
        }
        if bits == 0 && r.ports.is_all() {
            if is6 {
                kill6 = true;
            } else {
                kill4 = true;
            }
        }
        true
    });

    // Step two: drop any later rule an earlier one covers (whatever the
    // actions: the earlier rule decides first).
    let mut i = 0;
    while i + 1 < dest.len() {
        let mut j = i + 1;
        while j < dest.len() {
            if covers(&dest[i], &dest[j]) {
                dest.remove(j);
            } else {
                j += 1;
            }
        }
        i += 1;
    }

    // Step three: drop A if a later B of the same action covers it with no
    // intersecting rule of the other action in between.
    let mut i = 0;
    while i + 1 < dest.len() {
        let mut removed = false;
        for j in i + 1..dest.len() {
            let (a, b) = (&dest[i], &dest[j]);
            if a.action != b.action {
                if intersects(a, b) {
                    break;
                }
            } else if covers(b, a) {
                removed = true;
                break;
            }
        }
        if removed {
            dest.remove(i);
            // C steps back one (i--) and the loop's ++i revisits index i.
        } else {
            i += 1;
        }
    }
}
