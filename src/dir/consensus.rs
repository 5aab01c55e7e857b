#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! The network-status consensus a relay reads (dir-spec §3.4.1, §3.9.2;
//! ns_parse.c:networkstatus_parse_vote_from_string, networkstatus.c:
//! networkstatus_check_consensus_signature).
//!
//! oxit fetches the microdescriptor flavor: it lists every relay's identity,
//! addresses, flags and protocols, which is all an exit needs (the
//! known-relay set for `RefuseUnknownExits`, the re-entry filter, the
//! consensus parameters). This module owns parsing it with C tor's checks
//! (a malformed entry rejects the whole document), the signature check with
//! C tor's majority rule, and the validity windows. It does not fetch,
//! store or schedule anything.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use base64::Engine as _;
use base64::engine::general_purpose::GeneralPurpose;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::authcert::AuthCert;
use super::document::{self, Item, SyntaxError};
use super::time::{UnixTime, parse_iso};

/// How long before `valid-after` and after `valid-until` a consensus is
/// still usable (networkstatus.c `REASONABLY_LIVE_TIME`).
pub const REASONABLY_LIVE: u64 = 24 * 3600;
/// Shortest voting interval a consensus may have (dirvote.h
/// `MIN_VOTE_INTERVAL`), and under `TestingTorNetwork`
/// (`MIN_VOTE_INTERVAL_TESTING`).
const MIN_VOTE_INTERVAL: u64 = 300;
const MIN_VOTE_INTERVAL_TESTING: u64 = 10;
/// Signature sizes C tor accepts (ns_parse.c).
const SIG_LEN: std::ops::RangeInclusive<usize> = 128..=512;

/// Base64 as directory documents write digests: standard alphabet,
/// with or without `=` padding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Why a consensus was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("{0}")]
    Syntax(#[from] SyntaxError),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(s: impl Into<String>) -> ConsensusError {
    ConsensusError::Invalid(s.into())
}

/// Which consensus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The full ("ns") consensus.
    Ns,
    /// The microdescriptor consensus (what clients and oxit use).
    Microdesc,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Ns => "ns",
            Flavor::Microdesc => "microdesc",
        }
    }
}

/// Relay flags (the ones C tor knows; others are ignored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(u16);

impl Flags {
    pub const AUTHORITY: Flags = Flags(1);
    pub const BAD_EXIT: Flags = Flags(1 << 1);
    pub const EXIT: Flags = Flags(1 << 2);
    pub const FAST: Flags = Flags(1 << 3);
    pub const GUARD: Flags = Flags(1 << 4);
    pub const HSDIR: Flags = Flags(1 << 5);
    pub const MIDDLE_ONLY: Flags = Flags(1 << 6);
    pub const RUNNING: Flags = Flags(1 << 7);
    pub const STABLE: Flags = Flags(1 << 8);
    pub const STALE_DESC: Flags = Flags(1 << 9);
    pub const V2DIR: Flags = Flags(1 << 10);
    pub const VALID: Flags = Flags(1 << 11);

    const NAMES: [(&'static str, Flags); 12] = [
        ("Authority", Flags::AUTHORITY),
        ("BadExit", Flags::BAD_EXIT),
        ("Exit", Flags::EXIT),
        ("Fast", Flags::FAST),
        ("Guard", Flags::GUARD),
        ("HSDir", Flags::HSDIR),
        ("MiddleOnly", Flags::MIDDLE_ONLY),
        ("Running", Flags::RUNNING),
        ("Stable", Flags::STABLE),
        ("StaleDesc", Flags::STALE_DESC),
        ("V2Dir", Flags::V2DIR),
        ("Valid", Flags::VALID),
    ];

    /// The flags as bits (for carrying them between threads).
    pub fn bits(self) -> u16 {
        self.0
    }

    pub fn from_bits(bits: u16) -> Flags {
        Flags(bits)
    }

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    fn from_name(name: &str) -> Option<Flags> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }
}

impl std::fmt::Display for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(_, fl)| self.contains(*fl))
            .map(|(n, _)| *n)
            .collect();
        f.write_str(&names.join(" "))
    }
}

/// One relay's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterStatus {
    pub nickname: String,
    /// SHA-1 of its RSA identity key.
    pub rsa_id: [u8; 20],
    pub ipv4: Ipv4Addr,
    pub or_port: u16,
    pub dir_port: u16,
    /// Its IPv6 ORPort (first `a` line).
    pub ipv6: Option<SocketAddr>,
    pub flags: Flags,
    /// The `pr` line.
    pub protocols: String,
    /// `w Bandwidth=`.
    pub bandwidth: Option<u32>,
}

/// One `dir-source`: an authority that voted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub nickname: String,
    pub v3ident: [u8; 20],
    pub ipv4: Ipv4Addr,
    pub dir_port: u16,
    pub or_port: u16,
}

/// The digest a signature is made over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigAlg {
    Sha1,
    Sha256,
    /// Named but not one we can check (C tor skips these).
    Other(String),
}

#[derive(Clone, Debug)]
pub struct DirSignature {
    pub alg: SigAlg,
    /// The signing authority's v3 identity.
    pub v3ident: [u8; 20],
    /// SHA-1 of the signing key that made it.
    pub signing_key_digest: [u8; 20],
    pub signature: Vec<u8>,
}

/// A parsed consensus; its signatures are checked separately
/// ([`Consensus::check_signatures`]).
#[derive(Clone, Debug)]
pub struct Consensus {
    pub flavor: Flavor,
    pub valid_after: UnixTime,
    pub fresh_until: UnixTime,
    pub valid_until: UnixTime,
    pub params: BTreeMap<String, i32>,
    pub required_relay_protocols: Option<String>,
    pub recommended_relay_protocols: Option<String>,
    pub voters: Vec<Voter>,
    /// Sorted by identity (the parser insists).
    pub relays: Vec<RouterStatus>,
    pub signatures: Vec<DirSignature>,
    digest_sha1: [u8; 20],
    digest_sha256: [u8; 32],
}

/// The outcome of [`Consensus::check_signatures`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignatureCheck {
    /// Configured v3 authorities.
    pub authorities: usize,
    /// Good signatures needed: a majority of `authorities`.
    pub required: usize,
    /// Authorities whose signature verified.
    pub good: usize,
    /// Authorities whose signatures were all bad.
    pub bad: usize,
    /// Signatures we could not check for want of a (current) certificate:
    /// (authority v3 identity, signing key digest) to fetch.
    pub missing: Vec<([u8; 20], [u8; 20])>,
    /// Signatures from authorities we are not configured with.
    pub unknown: usize,
}

/// What to do with a consensus after its signatures were checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A majority verified: use it.
    Accept,
    /// Not enough yet, but enough would be with the missing certificates.
    NeedCerts,
    /// Even with every missing certificate it could not pass.
    Reject,
}

impl SignatureCheck {
    pub fn verdict(&self) -> Verdict {
        if self.good >= self.required {
            Verdict::Accept
        // Both counts are at most the number of voters: no overflow.
        } else if self.good.saturating_add(self.missing.len()) >= self.required {
            Verdict::NeedCerts
        } else {
            Verdict::Reject
        }
    }
}

impl std::fmt::Display for SignatureCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} good signature(s) of the {} needed from {} configured authorities; \
             {} bad, {} unverifiable for want of a certificate, {} from unknown authorities",
            self.good,
            self.required,
            self.authorities,
            self.bad,
            self.missing.len(),
            self.unknown
        )
    }
}

fn b64_digest(s: &str) -> Option<[u8; 20]> {
    let v = B64.decode(s).ok()?;
    v.try_into().ok()
}

fn hex_digest(s: &str) -> Option<[u8; 20]> {
    let mut out = [0u8; 20];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn is_nickname(s: &str) -> bool {
    (1..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn port(s: &str) -> Option<u16> {
    s.parse().ok()
}

impl Consensus {
    /// Parse a consensus of either flavor. `testing` relaxes the shortest
    /// voting interval as `TestingTorNetwork` does.
    pub fn parse(text: &str, testing: bool) -> Result<Consensus, ConsensusError> {
        let items = document::items(text)?;
        let first = items.first().ok_or_else(|| invalid("empty document"))?;
        if first.keyword != "network-status-version" || first.start != 0 {
            return Err(invalid("does not start with network-status-version"));
        }
        let flavor = match first.args().nth(1) {
            None | Some("ns") => Flavor::Ns,
            Some("microdesc") => Flavor::Microdesc,
            Some(f) => return Err(invalid(format!("unknown flavor {f:?}"))),
        };
        let first_sig = items
            .iter()
            .find(|i| i.keyword == "directory-signature")
            .ok_or_else(|| invalid("no directory-signature"))?;
        // The footer starts at a "directory-footer" that comes before the
        // signatures, or else at the first signature; the router entries
        // start at the first "r" before it.
        let (body, footer) = split_before(&items, |kw| {
            kw == "directory-footer" || kw == "directory-signature"
        });
        let (header, entries) = split_before(body, |kw| kw == "r");

        let one = |kw: &str| -> Result<&Item<'_>, ConsensusError> {
            let mut it = header.iter().filter(|i| i.keyword == kw);
            let found = it.next().ok_or_else(|| invalid(format!("missing {kw}")))?;
            if it.next().is_some() {
                return Err(invalid(format!("{kw} appears more than once")));
            }
            Ok(found)
        };
        let status = one("vote-status")?;
        if status.rest.trim() != "consensus" {
            return Err(status.error("vote-status is not \"consensus\"").into());
        }
        let time = |kw: &str| -> Result<UnixTime, ConsensusError> {
            let it = one(kw)?;
            parse_iso(it.rest.trim())
                .ok_or_else(|| it.error(format!("{kw} {:?} is not a time", it.rest)).into())
        };
        let valid_after = time("valid-after")?;
        let fresh_until = time("fresh-until")?;
        let valid_until = time("valid-until")?;
        let min = if testing {
            MIN_VOTE_INTERVAL_TESTING
        } else {
            MIN_VOTE_INTERVAL
        };
        // parse_iso stops at year 9999, so these sums are far from
        // u64::MAX.
        if valid_after.saturating_add(min) > fresh_until {
            return Err(invalid("freshness interval is too short"));
        }
        if valid_after.saturating_add(min.saturating_mul(2)) > valid_until {
            return Err(invalid("liveness interval is too short"));
        }
        let delay = one("voting-delay")?;
        let delays: Vec<u64> = delay.args().filter_map(|a| a.parse().ok()).collect();
        if !matches!(delays.as_slice(), [vote, dist, ..] if *vote >= 2 && *dist >= 2) {
            return Err(delay
                .error("voting-delay needs two numbers of at least 2")
                .into());
        }

        let mut params = BTreeMap::new();
        if let Some(p) = header.iter().find(|i| i.keyword == "params") {
            let mut prev: Option<&str> = None;
            for kv in p.args() {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| p.error(format!("bad parameter {kv:?}")))?;
                let v: i32 = v
                    .parse()
                    .map_err(|_| p.error(format!("parameter {kv:?} is not a 32-bit integer")))?;
                if prev.is_some_and(|q| q >= kv) {
                    return Err(p.error("params are not in order").into());
                }
                prev = Some(kv);
                if params.insert(k.to_owned(), v).is_some() {
                    return Err(p.error(format!("parameter {k} appears twice")).into());
                }
            }
        }
        let text_of = |kw: &str| {
            header
                .iter()
                .find(|i| i.keyword == kw)
                .map(|i| i.rest.to_owned())
        };

        let mut voters = Vec::new();
        for ds in header.iter().filter(|i| i.keyword == "dir-source") {
            let a: Vec<&str> = ds.args().collect();
            let [nickname, ident, _hostname, addr, dir_port, or_port, ..] = a.as_slice() else {
                return Err(ds.error("dir-source needs 6 arguments").into());
            };
            voters.push(Voter {
                nickname: (*nickname).to_owned(),
                v3ident: hex_digest(ident)
                    .ok_or_else(|| ds.error("dir-source identity is not 40 hex digits"))?,
                ipv4: addr
                    .parse()
                    .map_err(|_| ds.error("dir-source address is not IPv4"))?,
                dir_port: port(dir_port).ok_or_else(|| ds.error("bad dir-source DirPort"))?,
                or_port: port(or_port).ok_or_else(|| ds.error("bad dir-source ORPort"))?,
            });
        }
        if voters.is_empty() {
            return Err(invalid("no dir-source"));
        }

        let relays = parse_entries(entries, flavor)?;
        let signatures = parse_signatures(footer, &voters)?;

        // Signed: from the start through the space after the first
        // "directory-signature" (dir-spec §3.4.1). The start is an offset
        // into `text`, so the sum cannot overflow.
        let signed_end = first_sig.start.saturating_add("directory-signature ".len());
        let signed = text
            .get(..signed_end)
            .ok_or_else(|| invalid("truncated signature line"))?;
        Ok(Consensus {
            flavor,
            valid_after,
            fresh_until,
            valid_until,
            params,
            required_relay_protocols: text_of("required-relay-protocols"),
            recommended_relay_protocols: text_of("recommended-relay-protocols"),
            voters,
            relays,
            signatures,
            digest_sha1: Sha1::digest(signed.as_bytes()).into(),
            digest_sha256: Sha256::digest(signed.as_bytes()).into(),
        })
    }

    /// A consensus parameter with C tor's default and bounds (out-of-range
    /// values are clamped, networkstatus.c:get_net_param_from_list).
    pub fn param(&self, name: &str, default: i32, min: i32, max: i32) -> i32 {
        self.params
            .get(name)
            .map_or(default, |v| (*v).clamp(min, max))
    }

    /// Usable now: from a day before `valid-after` to a day after
    /// `valid-until` (networkstatus_consensus_reasonably_live).
    pub fn is_reasonably_live(&self, now: UnixTime) -> bool {
        // A sum past u64::MAX is later than any time, which is what
        // saturating gives: the comparisons stay exact.
        now.saturating_add(REASONABLY_LIVE) >= self.valid_after
            && now <= self.valid_until.saturating_add(REASONABLY_LIVE)
    }

    /// Within its own validity window.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.valid_after <= now && now <= self.valid_until
    }

    /// The entry for a relay identity.
    pub fn relay(&self, rsa_id: &[u8; 20]) -> Option<&RouterStatus> {
        self.relays
            .binary_search_by(|r| r.rsa_id.cmp(rsa_id))
            .ok()
            .and_then(|i| self.relays.get(i))
    }

    /// Check the signatures against the configured v3 authorities and the
    /// certificates we hold, with C tor's majority rule: each authority
    /// counts once; a certificate that has expired counts as missing.
    pub fn check_signatures(
        &self,
        authorities: &[[u8; 20]],
        certs: &[AuthCert],
        now: UnixTime,
    ) -> SignatureCheck {
        let mut check = SignatureCheck {
            authorities: authorities.len(),
            required: (authorities.len() / 2).saturating_add(1),
            ..SignatureCheck::default()
        };
        for voter in &self.voters {
            let sigs: Vec<&DirSignature> = self
                .signatures
                .iter()
                .filter(|s| s.v3ident == voter.v3ident)
                .collect();
            if sigs.is_empty() {
                continue;
            }
            if !authorities.contains(&voter.v3ident) {
                check.unknown = check.unknown.saturating_add(1);
                continue;
            }
            let (mut good, mut bad, mut missing) = (false, false, None);
            for sig in sigs {
                let digest: &[u8] = match sig.alg {
                    SigAlg::Sha1 => &self.digest_sha1,
                    SigAlg::Sha256 => &self.digest_sha256,
                    SigAlg::Other(_) => continue,
                };
                let cert = certs.iter().find(|c| {
                    c.v3ident == sig.v3ident
                        && c.signing_key_digest == sig.signing_key_digest
                        && c.expires >= now
                });
                match cert {
                    None => missing = Some((sig.v3ident, sig.signing_key_digest)),
                    Some(c) => match c.signing_key.verify_raw(digest, &sig.signature) {
                        Ok(()) => good = true,
                        Err(_) => bad = true,
                    },
                }
            }
            // Each voter counts once: these stay below the number of voters.
            if good {
                check.good = check.good.saturating_add(1);
            } else if bad {
                check.bad = check.bad.saturating_add(1);
            } else if let Some(m) = missing {
                check.missing.push(m);
            }
        }
        check
    }
}

fn parse_entries(items: &[Item<'_>], flavor: Flavor) -> Result<Vec<RouterStatus>, ConsensusError> {
    let mut relays: Vec<RouterStatus> = Vec::new();
    // Each entry is an "r" item and what follows it up to the next "r".
    for group in items.chunk_by(|_, next| next.keyword != "r") {
        let Some((r, entry)) = group.split_first() else {
            continue;
        };
        if r.keyword != "r" {
            return Err(r
                .error(format!("unexpected {:?} before a router entry", r.keyword))
                .into());
        }
        let a: Vec<&str> = r.args().collect();
        // microdesc: nick id date time IP OR Dir; ns adds the descriptor digest.
        let ((Flavor::Microdesc, [nick, id, date, time, ip, or_port, dir_port, ..])
        | (Flavor::Ns, [nick, id, _, date, time, ip, or_port, dir_port, ..])) =
            (flavor, a.as_slice())
        else {
            return Err(r.error("router entry has too few fields").into());
        };
        if !is_nickname(nick) {
            return Err(r.error(format!("bad nickname {nick:?}")).into());
        }
        let rsa_id = b64_digest(id).ok_or_else(|| r.error("bad identity digest"))?;
        let when = format!("{date} {time}");
        if parse_iso(&when).is_none() {
            return Err(r.error("bad publication time").into());
        }
        let ipv4 = ip.parse().map_err(|_| r.error("bad IPv4 address"))?;
        // C tor turns an unparsable port into 0; so do we.
        let or_port = port(or_port).unwrap_or(0);
        let dir_port = port(dir_port).unwrap_or(0);
        let mut rs = RouterStatus {
            nickname: (*nick).to_owned(),
            rsa_id,
            ipv4,
            or_port,
            dir_port,
            ipv6: None,
            flags: Flags::default(),
            protocols: String::new(),
            bandwidth: None,
        };
        let (mut have_s, mut have_pr) = (false, false);
        for it in entry {
            match it.keyword {
                "a" if rs.ipv6.is_none() => {
                    rs.ipv6 = it
                        .arg(0)
                        .ok()
                        .and_then(|s| s.parse::<SocketAddr>().ok())
                        .filter(|s| s.is_ipv6());
                }
                "s" => {
                    if have_s {
                        return Err(it.error("two s lines").into());
                    }
                    have_s = true;
                    for f in it.args().filter_map(Flags::from_name) {
                        rs.flags.insert(f);
                    }
                }
                "pr" => {
                    if have_pr {
                        return Err(it.error("two pr lines").into());
                    }
                    have_pr = true;
                    rs.protocols = it.rest.to_owned();
                }
                "w" => {
                    for kv in it.args() {
                        if let Some(v) = kv.strip_prefix("Bandwidth=") {
                            rs.bandwidth =
                                Some(v.parse().map_err(|_| it.error("bad w Bandwidth="))?);
                        }
                    }
                }
                _ => {}
            }
        }
        if !have_s {
            return Err(r.error("router entry without an s line").into());
        }
        if !have_pr {
            return Err(r.error("router entry without a pr line").into());
        }
        if let Some(prev) = relays.last()
            && prev.rsa_id >= rs.rsa_id
        {
            return Err(r.error("entries are not sorted by identity digest").into());
        }
        relays.push(rs);
    }
    Ok(relays)
}

/// `items` split before the first item whose keyword passes `at`; all of
/// them come before when none does.
fn split_before<'i, 'a>(
    items: &'i [Item<'a>],
    at: impl Fn(&str) -> bool,
) -> (&'i [Item<'a>], &'i [Item<'a>]) {
    let pos = items
        .iter()
        .position(|i| at(i.keyword))
        .unwrap_or(items.len());
    items.split_at_checked(pos).unwrap_or((items, &[]))
}

fn parse_signatures(
    items: &[Item<'_>],
    voters: &[Voter],
) -> Result<Vec<DirSignature>, ConsensusError> {
    let mut sigs = Vec::new();
    let mut seen_sig = false;
    for (n, it) in items.iter().enumerate() {
        match it.keyword {
            "directory-footer" if n == 0 => {}
            "bandwidth-weights" if !seen_sig => {}
            "directory-signature" => {
                seen_sig = true;
                let a: Vec<&str> = it.args().collect();
                let (alg, id, sk) = match a.as_slice() {
                    [id, sk] => (SigAlg::Sha1, *id, *sk),
                    [alg, id, sk, ..] => (
                        match *alg {
                            "sha1" => SigAlg::Sha1,
                            "sha256" => SigAlg::Sha256,
                            other => SigAlg::Other(other.to_owned()),
                        },
                        *id,
                        *sk,
                    ),
                    _ => {
                        return Err(it
                            .error("directory-signature needs 2 or 3 arguments")
                            .into());
                    }
                };
                let sig = it.object_tagged("SIGNATURE")?;
                if !SIG_LEN.contains(&sig.len()) {
                    return Err(it.error("signature has an impossible length").into());
                }
                let v3ident =
                    hex_digest(id).ok_or_else(|| it.error("signature identity is not hex"))?;
                if !voters.iter().any(|v| v.v3ident == v3ident) {
                    return Err(it
                        .error("signature from an authority that is not a dir-source")
                        .into());
                }
                sigs.push(DirSignature {
                    alg,
                    v3ident,
                    signing_key_digest: hex_digest(sk)
                        .ok_or_else(|| it.error("signing key digest is not hex"))?,
                    signature: sig.to_vec(),
                });
            }
            other => {
                return Err(it
                    .error(format!("unexpected {other:?} in the footer"))
                    .into());
            }
        }
    }
    if sigs.is_empty() {
        return Err(invalid("no signatures"));
    }
    Ok(sigs)
}

#[cfg(test)]
pub(crate) mod tests;
