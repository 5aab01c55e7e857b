//! Policy summaries: the `accept 80,443` / `reject 25,119` port lists of
//! the descriptor's `ipv6-policy` line and of microdescriptors' `p`/`p6`
//! (policies.c:policy_summarize).
//!
//! A port counts as accepted when some rule accepts it for every address
//! of the family and, before that, rejects on that port cover no more than
//! 2^25 IPv4 addresses (two /8s) or one IPv6 /16 counted in /64s. Rejects
//! of exactly one of the private networks are not counted. The shorter of
//! the two lists is written, the accept list on a tie.

use super::{Action, AddrPattern, ExitPolicy, PRIVATE_NETS};

/// policies.c `MAX_EXITPOLICY_SUMMARY_LEN`.
const MAX_SUMMARY_LEN: usize = 1000;
/// `REJECT_CUTOFF_COUNT_IPV4`, `REJECT_CUTOFF_COUNT_IPV6` (in /64s).
const CUTOFF_V4: u64 = 1 << (32 - 7);
const CUTOFF_V6: u64 = 1 << (128 - 64 - 16);

#[derive(Clone, Copy)]
struct Item {
    min: u16,
    max: u16,
    rejects: u64,
    accepted: bool,
}

/// Split `items` so that `min` starts an item and `max` ends one; the
/// index of the item starting at `min`.
fn split(items: &mut Vec<Item>, min: u16, max: u16) -> usize {
    let mut i = items.iter().position(|it| it.max >= min).unwrap_or(0);
    if items[i].min != min {
        let mut new = items[i];
        new.min = min;
        items[i].max = min - 1;
        items.insert(i + 1, new);
        i += 1;
    }
    let start = i;
    let mut j = i;
    while items[j].max < max {
        j += 1;
    }
    if items[j].max != max {
        let mut new = items[j];
        new.min = max + 1;
        items[j].max = max;
        items.insert(j + 1, new);
    }
    start
}

impl ExitPolicy {
    /// The summary of this policy for IPv6 (`v6`) or IPv4.
    pub fn summary(&self, v6: bool) -> String {
        let mut items = vec![Item {
            min: 1,
            max: 65535,
            rejects: 0,
            accepted: false,
        }];
        for r in self.rules() {
            let (is_v6, bits) = match r.addr {
                AddrPattern::V4 { bits, .. } => (false, bits),
                AddrPattern::V6 { bits, .. } => (true, bits),
                // An ExitPolicy holds only concrete networks.
                AddrPattern::Any | AddrPattern::Private => continue,
            };
            if is_v6 != v6 {
                continue;
            }
            let (min, max) = (r.ports.min(), r.ports.max());
            match r.action {
                Action::Accept if bits == 0 => {
                    let cutoff = if v6 { CUTOFF_V6 } else { CUTOFF_V4 };
                    let i = split(&mut items, min, max);
                    for it in items[i..].iter_mut().take_while(|it| it.max <= max) {
                        if !it.accepted && it.rejects <= cutoff {
                            it.accepted = true;
                        }
                    }
                }
                Action::Accept => {}
                Action::Reject if PRIVATE_NETS.contains(&r.addr) => {}
                Action::Reject => {
                    // IPv6 is counted in /64s; anything narrower is ignored.
                    let width = if v6 {
                        match 64u32.checked_sub(u32::from(bits)) {
                            Some(w) => w,
                            None => continue,
                        }
                    } else {
                        32 - u32::from(bits.min(32))
                    };
                    let count = if width >= 64 { u64::MAX } else { 1u64 << width };
                    let i = split(&mut items, min, max);
                    for it in items[i..].iter_mut().take_while(|it| it.max <= max) {
                        it.rejects = it.rejects.saturating_add(count);
                    }
                }
            }
        }
        // Merge neighbouring items with the same verdict into ranges.
        let (mut accepts, mut rejects) = (Vec::new(), Vec::new());
        let mut start = 1u16;
        for (i, it) in items.iter().enumerate() {
            let last = i + 1 == items.len();
            if last || it.accepted != items[i + 1].accepted {
                let range = if start == it.max {
                    start.to_string()
                } else {
                    format!("{start}-{}", it.max)
                };
                if it.accepted {
                    accepts.push(range);
                } else {
                    rejects.push(range);
                }
                if !last {
                    start = items[i + 1].min;
                }
            }
        }
        if accepts.is_empty() {
            return "reject 1-65535".into();
        }
        if rejects.is_empty() {
            return "accept 1-65535".into();
        }
        let a = accepts.join(",");
        let r = rejects.join(",");
        if r.len() > MAX_SUMMARY_LEN - 7 && a.len() > MAX_SUMMARY_LEN - 7 {
            // Both too long: the accept list, cut at a comma.
            let mut cut = &a[..MAX_SUMMARY_LEN - 7];
            if let Some(c) = cut.rfind(',') {
                cut = &cut[..c];
            }
            format!("accept {cut}")
        } else if r.len() < a.len() {
            format!("reject {r}")
        } else {
            format!("accept {a}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ExitPolicyOptions, parse_policy_list};
    use super::*;

    fn policy(s: &str) -> ExitPolicy {
        ExitPolicy::from_rules(parse_policy_list(s).unwrap())
    }

    #[test]
    fn c_tor_summaries() {
        // Cases from C tor's test_policies.c (test_policy_summary_helper).
        for (p, v4) in [
            ("accept *:80, reject *:*", "accept 80"),
            ("accept *:80, accept *:443, reject *:*", "accept 80,443"),
            ("reject *:25, accept *:*", "reject 25"),
            ("accept *:1-65535", "accept 1-65535"),
            ("reject *:*", "reject 1-65535"),
            ("accept 1.2.3.0/24:*, reject *:*", "reject 1-65535"),
            // Rejecting a private network does not count; one /8 does not
            // outweigh the accept, three do.
            ("reject 10.0.0.0/8:80, accept *:*", "accept 1-65535"),
            ("reject 11.0.0.0/8:80, accept *:*", "accept 1-65535"),
            (
                "reject 11.0.0.0/8:80, reject 12.0.0.0/8:80, reject 13.0.0.0/8:80, accept *:*",
                "reject 80",
            ),
            ("accept *:80-90, reject *:85, accept *:*", "accept 1-65535"),
            (
                "reject *:85, accept *:80-90, reject *:*",
                "accept 80-84,86-90",
            ),
        ] {
            assert_eq!(policy(p).summary(false), v4, "{p}");
        }
        assert_eq!(
            policy("accept6 *:443, reject *:*").summary(true),
            "accept 443"
        );
        assert_eq!(
            policy("accept *:443, reject *:*").summary(true),
            "accept 443"
        );
    }

    #[test]
    fn default_exit_policy_summary() {
        let p = ExitPolicy::build(&ExitPolicyOptions {
            exit_relay: Some(true),
            user_rules: None,
            ipv6_exit: true,
            reject_private: true,
            reject_local_interfaces: false,
            reduced: false,
            published_addresses: vec!["1.2.3.4".parse().unwrap()],
            port_addresses: vec![],
            interface_addresses: vec![],
        });
        assert_eq!(
            p.summary(false),
            "reject 25,119,135-139,445,563,1214,4661-4666,6346-6429,6699,6881-6999"
        );
        assert_eq!(p.summary(true), p.summary(false));
    }
}
