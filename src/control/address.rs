//! Which address the relay publishes (resolve_addr.c:find_my_address,
//! relay_find_addr.c:relay_find_addr_to_publish), without I/O: the caller
//! passes the interface addresses and the suggestions it received.
//!
//! In C tor's order: an `Address` line; else the address of an `ORPort`
//! line that names one; else the first public address of an interface;
//! else what a directory authority says it sees us as (`X-Your-Address-Is`
//! on a directory answer, or the other-address of its NETINFO). A private
//! address is only ever used when it was written explicitly (`Address`, an
//! `ORPort` address) and the relay uses its own `DirAuthority` lines: the
//! live network's authorities refuse private addresses. Once found, an
//! address is kept for the life of the process, as in C tor. Looking up
//! the host name (C's last resort) is not done.

use std::net::IpAddr;

use crate::config::Config;
use crate::exit::dns::address::is_internal;

/// How an address was found (C tor's `METHOD=` in its log lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Configured,
    OrPort,
    Interface,
    Suggested,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Configured => "CONFIGURED",
            Method::OrPort => "CONFIGURED_ORPORT",
            Method::Interface => "INTERFACE",
            Method::Suggested => "SUGGESTED",
        })
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct AddressFinder {
    configured: Vec<IpAddr>,
    or_port_addrs: Vec<IpAddr>,
    has_orport: [bool; 2],
    custom_authorities: bool,
    found: [Option<(IpAddr, Method)>; 2],
    suggested: [Option<IpAddr>; 2],
}

fn fam(v6: bool) -> usize {
    usize::from(v6)
}

impl AddressFinder {
    pub fn new(config: &Config) -> AddressFinder {
        let advertised = config.or_ports.iter().filter(|p| !p.no_advertise);
        let mut has_orport = [false; 2];
        let mut or_port_addrs = Vec::new();
        for p in advertised {
            has_orport[fam(p.addr.is_ipv6())] = true;
            if !p.addr.ip().is_unspecified() {
                or_port_addrs.push(p.addr.ip());
            }
        }
        AddressFinder {
            configured: config.addresses.clone(),
            or_port_addrs,
            has_orport,
            custom_authorities: !config.dir_authorities.is_empty()
                || !config.alternate_dir_authorities.is_empty(),
            found: [None, None],
            suggested: [None, None],
        }
    }

    /// address_can_be_used.
    fn usable(&self, a: IpAddr, explicit: bool) -> Result<(), String> {
        if !is_internal(a) {
            return Ok(());
        }
        if !self.custom_authorities {
            return Err(format!(
                "address {a} is a private IP address; relays that use the default directory \
                 authorities must have public IP addresses"
            ));
        }
        if !explicit {
            return Err(format!(
                "address {a} is private and was not set explicitly (Address or ORPort)"
            ));
        }
        Ok(())
    }

    /// The address to publish for a family (`v6`), and how it was found.
    /// `interfaces` are this host's interface addresses.
    pub fn find(&mut self, v6: bool, interfaces: &[IpAddr]) -> Result<(IpAddr, Method), String> {
        let f = fam(v6);
        if let Some(found) = self.found[f] {
            return Ok(found);
        }
        let family = if v6 { "IPv6" } else { "IPv4" };
        if !self.has_orport[f] {
            return Err(format!("no {family} ORPort"));
        }
        let same = |a: &IpAddr| a.is_ipv6() == v6;
        let mut why = Vec::new();
        let tries = self
            .configured
            .iter()
            .filter(|a| same(a))
            .map(|a| (*a, Method::Configured, true))
            .chain(
                self.or_port_addrs
                    .iter()
                    .filter(|a| same(a))
                    .map(|a| (*a, Method::OrPort, true)),
            )
            .chain(
                interfaces
                    .iter()
                    .filter(|a| same(a) && !a.is_loopback() && !a.is_multicast())
                    .map(|a| (*a, Method::Interface, false)),
            )
            .chain(self.suggested[f].map(|a| (a, Method::Suggested, false)));
        for (a, m, explicit) in tries {
            match self.usable(a, explicit) {
                Ok(()) => {
                    self.found[f] = Some((a, m));
                    return Ok((a, m));
                }
                // A configured address that cannot be used is final (C
                // bails out rather than guessing another one).
                Err(e) if m == Method::Configured => return Err(e),
                Err(e) => why.push(e),
            }
        }
        if why.is_empty() {
            Err(format!(
                "unable to find our {family} address: set Address, or an address on the ORPort line"
            ))
        } else {
            Err(format!(
                "unable to find our {family} address: {}",
                why.join("; ")
            ))
        }
    }

    /// A directory authority says it sees us as `a`. Private addresses are
    /// ignored (relay_find_addr.c:relay_address_new_suggestion); true when
    /// the suggestion is new.
    pub fn suggest(&mut self, a: IpAddr) -> bool {
        if is_internal(a) {
            return false;
        }
        let slot = &mut self.suggested[fam(a.is_ipv6())];
        if *slot == Some(a) {
            return false;
        }
        *slot = Some(a);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finder(torrc: &str) -> AddressFinder {
        AddressFinder::new(&Config::parse_str(torrc, "t").unwrap().0)
    }

    const AUTH: &str = "DirAuthority a orport=1 v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 \
                        127.0.0.1:7 FDB2FBD2AAA525FA2999E61750915A32C7773B17\n";

    #[test]
    fn order_and_rules() {
        let public: IpAddr = "198.51.100.4".parse().unwrap();
        let ifs = [public, "10.1.1.1".parse().unwrap()];
        // Address wins, even over an ORPort address.
        let mut f = finder("ORPort 203.0.113.9:443\nAddress 203.0.113.7\n");
        assert_eq!(
            f.find(false, &ifs).unwrap(),
            ("203.0.113.7".parse().unwrap(), Method::Configured)
        );
        let mut f = finder("ORPort 203.0.113.9:443\n");
        assert_eq!(f.find(false, &ifs).unwrap().1, Method::OrPort);
        // A wildcard ORPort: the interface's public address.
        let mut f = finder("ORPort 443\n");
        assert_eq!(f.find(false, &ifs).unwrap(), (public, Method::Interface));
        // No IPv6 ORPort, no IPv6 address.
        assert!(f.find(true, &ifs).is_err());
        // Only private interfaces: a suggestion from an authority.
        let mut f = finder("ORPort 443\n");
        assert!(f.find(false, &["10.1.1.1".parse().unwrap()]).is_err());
        assert!(
            !f.suggest("192.168.1.1".parse().unwrap()),
            "private suggestions are ignored"
        );
        assert!(f.suggest(public));
        assert_eq!(f.find(false, &[]).unwrap(), (public, Method::Suggested));
        // Sticky once found.
        f.suggest("198.51.100.99".parse().unwrap());
        assert_eq!(f.find(false, &[]).unwrap().0, public);
    }

    #[test]
    fn private_addresses_need_explicit_and_custom_authorities() {
        // Default (live) authorities: never a private address.
        let mut f = finder("ORPort 127.0.0.1:9001\n");
        let e = f.find(false, &[]).unwrap_err();
        assert!(e.contains("default directory authorities"), "{e}");
        // Own authorities: an explicit private ORPort address is fine.
        let mut f = finder(&format!("{AUTH}ORPort 127.0.0.1:9001\n"));
        assert_eq!(f.find(false, &[]).unwrap().1, Method::OrPort);
        // But not one merely found on an interface.
        let mut f = finder(&format!("{AUTH}ORPort 9001\n"));
        assert!(f.find(false, &["10.0.0.2".parse().unwrap()]).is_err());
        // A private Address with the default authorities is final.
        let mut f = finder("Address 10.0.0.5\nORPort 9001\n");
        assert!(f.find(false, &["198.51.100.4".parse().unwrap()]).is_err());
    }
}
