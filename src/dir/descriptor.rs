#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! The documents a relay publishes: its server descriptor (dir-spec §2.1.1;
//! router.c:router_dump_router_to_string) and its extra-info descriptor
//! (dir-spec §2.1.2; router.c:extrainfo_dump_to_string), built and signed
//! from values.
//!
//! Line order, encodings and signatures follow C tor 0.4.9 exactly
//! (requirements.md §7.1, §7.2): the ed25519 signature covers
//! SHA-256("Tor router descriptor signature v1" ‖ text through
//! "router-sig-ed25519 "); the RSA signature is the identity key's
//! raw-digest PKCS#1 v1.5 signature of SHA-1 of the text through
//! "router-signature\n". Where C tor writes a line oxit must not (the
//! `hidden-service-dir` and `tunnelled-dir-server` it always or usually
//! adds, which would earn the HSDir and V2Dir flags for services oxit does
//! not offer), oxit leaves it out.
//!
//! This module does not decide what goes in (addresses, bandwidth, policy:
//! the control plane does), nor when to publish.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV6};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::document::write_object;
use super::time::{UnixTime, format_iso, system};
use crate::crypto::cert::{Ed25519Cert, Ed25519Keypair, KEY_TYPE_ED25519, expiration_hours};
use crate::crypto::keys::RelayKeys;
use crate::exit::policy::ExitPolicy;

/// `ED_DESC_SIGNATURE_PREFIX` (routerparse.h).
const ED_SIG_PREFIX: &[u8] = b"Tor router descriptor signature v1";
/// Largest descriptor an authority takes (`MAX_DESCRIPTOR_UPLOAD_SIZE`).
pub const MAX_DESCRIPTOR_LEN: usize = 20_000;
/// Largest extra-info an authority takes (`MAX_EXTRAINFO_UPLOAD_SIZE`).
pub const MAX_EXTRA_INFO_LEN: usize = 50_000;
/// Happy-family certificate type (torcert.h `CERT_TYPE_FAMILY_V_IDENTITY`).
pub const CERT_TYPE_FAMILY_V_IDENTITY: u8 = 0x0C;
/// Family certificates live 30 days from `published` (`FAMILY_CERT_LIFETIME`).
const FAMILY_CERT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 86400);

/// What oxit implements, in the `proto` line's form (requirements.md §6):
/// link protocols 4–5 with Ed25519 link authentication, CREATE2/EXTEND2
/// with ntor, IPv6 extends and ntor-v3, authenticated SENDMEs, congestion
/// control with XON/XOFF (FlowCtrl=2), ntor-v3 SUBPROTO negotiation
/// (Relay=5) of CGO relay crypto (Relay=6), conflux at the exit
/// (Conflux=1). Nothing that would make clients send it traffic it cannot
/// handle (no HS*, DirCache, Padding).
pub const PROTOCOLS: &str =
    "Conflux=1 Cons=1-2 Desc=1-2 FlowCtrl=1-2 Link=4-5 LinkAuth=3 Microdesc=1-2 Relay=2-6";

/// Why a document could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("the {what} is {len} bytes, over the authorities' limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

/// `bandwidth <rate> <burst> <observed>`, bytes per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bandwidth {
    pub rate: u32,
    pub burst: u32,
    pub observed: u32,
}

/// The digests of an extra-info document that the server descriptor names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtraInfoDigest {
    /// SHA-1 of the signed part (through `router-signature\n`).
    pub sha1: [u8; 20],
    /// SHA-256 of the whole document.
    pub sha256: [u8; 32],
}

/// The contents of a server descriptor, before signing.
#[derive(Clone, Debug)]
pub struct ServerDescriptor<'a> {
    pub nickname: &'a str,
    pub ipv4: Ipv4Addr,
    pub or_port: u16,
    pub ipv6: Option<SocketAddrV6>,
    /// `platform` (not starting with "Tor ", so authorities do not parse
    /// it as a C tor version).
    pub platform: &'a str,
    pub protocols: &'a str,
    pub published: UnixTime,
    pub uptime: u64,
    pub bandwidth: Bandwidth,
    pub extra_info: Option<ExtraInfoDigest>,
    /// The canonical `family` members (see [`canonical_family`]).
    pub family: &'a [String],
    /// Happy-family keys: one `family-cert` each.
    pub family_keys: &'a [Ed25519Keypair],
    pub hibernating: bool,
    pub contact: Option<&'a str>,
    pub exit_policy: &'a ExitPolicy,
    /// `IPv6Exit`: write the `ipv6-policy` summary.
    pub ipv6_exit: bool,
    /// Consensus `onion-key-rotation-days`: the ntor crosscert's lifetime.
    pub onion_key_lifetime: std::time::Duration,
}

fn ed_sign_and_rsa_sign<R: rand::CryptoRng + ?Sized>(
    mut s: String,
    keys: &RelayKeys,
    rng: &mut R,
) -> Result<String, DescriptorError> {
    s.push_str("router-sig-ed25519 ");
    let mut h = Sha256::new();
    h.update(ED_SIG_PREFIX);
    h.update(s.as_bytes());
    let sig = keys.signing_key().sign(&h.finalize());
    s.push_str(&STANDARD_NO_PAD.encode(sig));
    s.push_str("\nrouter-signature\n");
    let digest: [u8; 20] = Sha1::digest(s.as_bytes()).into();
    let rsa = keys
        .rsa_id()
        .sign_raw(rng, &digest)
        .map_err(|e| DescriptorError::Sign(e.to_string()))?;
    write_object(&mut s, "SIGNATURE", &rsa);
    Ok(s)
}

fn write_ed_cert(s: &mut String, keys: &RelayKeys) {
    s.push_str("identity-ed25519\n");
    write_object(s, "ED25519 CERT", keys.signing_cert().as_bytes());
}

impl ServerDescriptor<'_> {
    /// The signed descriptor.
    pub fn sign<R: rand::CryptoRng + ?Sized>(
        &self,
        keys: &RelayKeys,
        rng: &mut R,
    ) -> Result<String, DescriptorError> {
        let mut s = String::with_capacity(4096);
        // Writing to a String cannot fail: the results are ignored.
        let _ = writeln!(
            s,
            "router {} {} {} 0 0",
            self.nickname, self.ipv4, self.or_port
        );
        write_ed_cert(&mut s, keys);
        let _ = writeln!(
            s,
            "master-key-ed25519 {}",
            STANDARD_NO_PAD.encode(keys.ed_identity())
        );
        if let Some(v6) = &self.ipv6 {
            let _ = writeln!(s, "or-address {v6}");
        }
        let _ = writeln!(s, "platform {}", self.platform);
        let _ = writeln!(s, "proto {}", self.protocols);
        let _ = writeln!(s, "published {}", format_iso(self.published));
        let _ = writeln!(s, "fingerprint {}", keys.rsa_identity().spaced());
        let _ = writeln!(s, "uptime {}", self.uptime);
        let b = self.bandwidth;
        let _ = writeln!(s, "bandwidth {} {} {}", b.rate, b.burst, b.observed);
        if let Some(d) = &self.extra_info {
            let _ = writeln!(
                s,
                "extra-info-digest {} {}",
                hex::encode_upper(d.sha1),
                STANDARD_NO_PAD.encode(d.sha256)
            );
        }
        // The dummy TAP key: no longer used for circuits, but 0.4.9
        // authorities refuse a descriptor without it ("Missing TAP key").
        s.push_str("onion-key\n");
        write_object(&mut s, "RSA PUBLIC KEY", keys.tap_key().public().der());
        s.push_str("signing-key\n");
        write_object(&mut s, "RSA PUBLIC KEY", keys.rsa_id().public().der());
        s.push_str("onion-key-crosscert\n");
        let tap_cc = keys
            .tap_onion_key_crosscert(rng)
            .map_err(|e| DescriptorError::Sign(e.to_string()))?;
        write_object(&mut s, "CROSSCERT", &tap_cc);
        let (ntor_cc, sign_bit) =
            keys.ntor_onion_key_crosscert_for(system(self.published), self.onion_key_lifetime);
        let _ = writeln!(s, "ntor-onion-key-crosscert {sign_bit}");
        write_object(&mut s, "ED25519 CERT", ntor_cc.as_bytes());
        if !self.family.is_empty() {
            let _ = writeln!(s, "family {}", self.family.join(" "));
        }
        if self.hibernating {
            s.push_str("hibernating 1\n");
        }
        for fk in self.family_keys {
            let cert = Ed25519Cert::sign(
                CERT_TYPE_FAMILY_V_IDENTITY,
                KEY_TYPE_ED25519,
                *keys.ed_identity(),
                expiration_hours(system(self.published), FAMILY_CERT_LIFETIME),
                true,
                fk,
            );
            s.push_str("family-cert\n");
            write_object(&mut s, "FAMILY CERT", cert.as_bytes());
        }
        if let Some(c) = self.contact.filter(|c| !c.is_empty()) {
            // A torrc value has no line breaks; keep the document well
            // formed whatever the caller passes.
            let c: String = c
                .chars()
                .map(|ch| if ch.is_control() { ' ' } else { ch })
                .collect();
            let _ = writeln!(s, "contact {c}");
        }
        let _ = writeln!(
            s,
            "ntor-onion-key {}",
            STANDARD_NO_PAD.encode(keys.ntor_key().public())
        );
        s.push_str(&self.exit_policy.descriptor_lines());
        s.push('\n');
        if self.ipv6_exit {
            let summary = self.exit_policy.summary(true);
            if summary != "reject 1-65535" {
                let _ = writeln!(s, "ipv6-policy {summary}");
            }
        }
        let s = ed_sign_and_rsa_sign(s, keys, rng)?;
        if s.len() > MAX_DESCRIPTOR_LEN {
            return Err(DescriptorError::TooLarge {
                what: "server descriptor",
                len: s.len(),
                max: MAX_DESCRIPTOR_LEN,
            });
        }
        Ok(s)
    }
}

/// The contents of an extra-info descriptor, before signing.
#[derive(Clone, Debug)]
pub struct ExtraInfo<'a> {
    pub nickname: &'a str,
    /// The same second as the server descriptor's `published`.
    pub published: UnixTime,
    /// The bandwidth history lines (`write-history`, `read-history`, …),
    /// each ending in a newline; empty before the first complete period.
    pub history: &'a str,
}

impl ExtraInfo<'_> {
    /// The signed document and the digests the server descriptor names.
    pub fn sign<R: rand::CryptoRng + ?Sized>(
        &self,
        keys: &RelayKeys,
        rng: &mut R,
    ) -> Result<(String, ExtraInfoDigest), DescriptorError> {
        let mut s = String::with_capacity(2048);
        let _ = writeln!(
            s,
            "extra-info {} {}",
            self.nickname,
            keys.rsa_identity().hex_upper()
        );
        write_ed_cert(&mut s, keys);
        let _ = writeln!(s, "published {}", format_iso(self.published));
        s.push_str(self.history);
        let s = ed_sign_and_rsa_sign(s, keys, rng)?;
        if s.len() > MAX_EXTRA_INFO_LEN {
            return Err(DescriptorError::TooLarge {
                what: "extra-info descriptor",
                len: s.len(),
                max: MAX_EXTRA_INFO_LEN,
            });
        }
        // The text through the first "\nrouter-signature\n" (all of it if
        // there is none): the first piece split_inclusive yields.
        let signed = s
            .split_inclusive("\nrouter-signature\n")
            .next()
            .unwrap_or_default();
        let digest = ExtraInfoDigest {
            sha1: Sha1::digest(signed.as_bytes()).into(),
            sha256: Sha256::digest(s.as_bytes()).into(),
        };
        Ok((s, digest))
    }
}

/// The `family` line's members, as C tor writes them
/// (nodefamily.c:nodefamily_from_members, nodefamily_format): fingerprints
/// as `$` + upper-case hex, nicknames lower-cased, our own fingerprint
/// added, fingerprints first in byte order, then nicknames, no duplicates.
/// Empty when only we remain. `members` are `MyFamily` entries as
/// normalised by the configuration (`$HEX`, `$HEX=nick`, `$HEX~nick` or a
/// nickname).
pub fn canonical_family(
    members: &[String],
    own_rsa_id: &[u8; 20],
    own_nickname: &str,
) -> Vec<String> {
    let mut ids: Vec<[u8; 20]> = vec![*own_rsa_id];
    let mut nicks: Vec<String> = Vec::new();
    for m in members {
        if m.eq_ignore_ascii_case(own_nickname) {
            continue;
        }
        if let Some(h) = m.strip_prefix('$') {
            let hex_part = h.split(['=', '~']).next().unwrap_or("");
            let mut id = [0u8; 20];
            if hex::decode_to_slice(hex_part, &mut id).is_ok() {
                ids.push(id);
            }
        } else {
            nicks.push(m.to_ascii_lowercase());
        }
    }
    ids.sort_unstable();
    ids.dedup();
    nicks.sort_unstable();
    nicks.dedup();
    if ids.len() == 1 && nicks.is_empty() {
        return Vec::new();
    }
    ids.iter()
        .map(|id| format!("${}", hex::encode_upper(id)))
        .chain(nicks)
        .collect()
}

#[cfg(test)]
mod tests;
