#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! Checking a peer's CERTS cell on the Ed25519 path (requirements.md §1.4,
//! §1.7, §1.8; torcert.c:or_handshake_certs_ed25519_ok,
//! or_handshake_certs_check_both).
//!
//! A responder is checked with types 2, 4, 5, 7 (type 5 must certify the TLS
//! certificate the peer presented); an initiator with types 2, 4, 6, 7 (the
//! type-6 key then signs AUTHENTICATE). Byte formats and signatures live in
//! `crypto::cert` and `crypto::x509`; this module only chains them.
//!
//! The RSA-only path (no type-4 cert) is not accepted: 0.4.9 always sends
//! Ed25519 certificates, and without type 4 an initiator could only use the
//! removed RSA AUTHENTICATE method, so C closes it too ("Invalid certificate
//! chain!") unless it carries type 3, which nobody sends any more.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::crypto::cert::crosscert::RsaEdCrosscert;
use crate::crypto::cert::{
    CERT_TYPE_ID_SIGNING, CERT_TYPE_SIGNING_AUTH, CERT_TYPE_SIGNING_LINK, Ed25519Cert,
    KEY_TYPE_ED25519, KEY_TYPE_SHA256_X509,
};
use crate::crypto::x509::verify_identity_cert;
use crate::proto::cell::Certs;

use super::error::CertsError;

/// CERTS type of the self-signed RSA-1024 identity X.509 cert.
const TYPE_RSA_ID: u8 = 2;
/// CERTS type of the RSA→Ed25519 crosscert.
const TYPE_CROSSCERT: u8 = 7;

/// What the peer's certificates proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PeerCerts {
    /// SHA-1 of the RSA identity key (fingerprint).
    pub rsa_id: [u8; 20],
    /// SHA-256 of the RSA identity key DER (CID or SID).
    pub rsa_id_sha256: [u8; 32],
    /// Ed25519 identity.
    pub ed_id: [u8; 32],
    /// The type-6 link-authentication key (initiator certs only).
    pub auth_key: Option<[u8; 32]>,
}

/// Which role the peer plays, and what its certs must bind to.
#[derive(Debug, Clone, Copy)]
pub(super) enum PeerRole<'a> {
    /// The peer accepted our connection: type 5 must certify this TLS cert
    /// digest.
    Responder { tls_cert_sha256: &'a [u8; 32] },
    /// The peer connected to us and wants to authenticate: type 6 needed.
    Initiator,
}

fn invalid(cert_type: u8) -> impl Fn(String) -> CertsError {
    move |detail| CertsError::Invalid { cert_type, detail }
}

fn get<'a>(certs: &'a Certs, t: u8, why: &'static str) -> Result<&'a [u8], CertsError> {
    certs.get(t).ok_or(CertsError::Missing(t, why))
}

fn ed_cert(
    certs: &Certs,
    t: u8,
    key_type: u8,
    why: &'static str,
) -> Result<Ed25519Cert, CertsError> {
    let c = Ed25519Cert::decode(get(certs, t, why)?).map_err(|e| invalid(t)(e.to_string()))?;
    c.expect_type(t, key_type)
        .map_err(|e| invalid(t)(e.to_string()))?;
    Ok(c)
}

/// Check `certs` at wall-clock `unix_now` and return the proven identities.
pub(super) fn verify_peer_certs(
    certs: &Certs,
    role: PeerRole<'_>,
    unix_now: u64,
) -> Result<PeerCerts, CertsError> {
    // Clamped to the year 36,812, which SystemTime can always hold, so
    // the fallback is never taken.
    let now: SystemTime = UNIX_EPOCH
        .checked_add(Duration::from_secs(unix_now.min(1 << 40)))
        .unwrap_or(UNIX_EPOCH);

    // Type 4: identity → signing key, with the identity in its extension.
    let id_sign = ed_cert(
        certs,
        CERT_TYPE_ID_SIGNING,
        KEY_TYPE_ED25519,
        "Ed25519 identity → signing key",
    )?;
    let ed_id = *id_sign
        .signing_key()
        .ok_or(CertsError::NoIdentityExtension)?;
    let signing_key = *id_sign.certified_key();
    id_sign
        .verify(None, now)
        .map_err(|e| invalid(CERT_TYPE_ID_SIGNING)(e.to_string()))?;

    // Type 5 or 6, signed by the type-4 signing key. C checks the type-5
    // binding to the TLS cert before any signature; same order here.
    let auth_key = match role {
        PeerRole::Responder { tls_cert_sha256 } => {
            let link = ed_cert(
                certs,
                CERT_TYPE_SIGNING_LINK,
                KEY_TYPE_SHA256_X509,
                "signing key → TLS link cert",
            )?;
            if link.certified_key() != tls_cert_sha256 {
                return Err(CertsError::LinkCertMismatch {
                    certified: hex::encode(link.certified_key()),
                    actual: hex::encode(tls_cert_sha256),
                });
            }
            link.verify(Some(&signing_key), now)
                .map_err(|e| invalid(CERT_TYPE_SIGNING_LINK)(e.to_string()))?;
            None
        }
        PeerRole::Initiator => {
            let auth = ed_cert(
                certs,
                CERT_TYPE_SIGNING_AUTH,
                KEY_TYPE_ED25519,
                "signing key → link authentication key",
            )?;
            auth.verify(Some(&signing_key), now)
                .map_err(|e| invalid(CERT_TYPE_SIGNING_AUTH)(e.to_string()))?;
            Some(*auth.certified_key())
        }
    };

    // Type 2: the legacy RSA-1024 identity, self-signed, valid with slop.
    let rsa = verify_identity_cert(get(certs, TYPE_RSA_ID, "RSA identity X.509")?, now)
        .map_err(|e| invalid(TYPE_RSA_ID)(e.to_string()))?;

    // Type 7: the RSA identity vouches for the Ed25519 identity.
    let cc = RsaEdCrosscert::decode(get(certs, TYPE_CROSSCERT, "RSA → Ed25519 crosscert")?)
        .map_err(|e| invalid(TYPE_CROSSCERT)(e.to_string()))?;
    cc.verify(&rsa, &ed_id, now)
        .map_err(|e| invalid(TYPE_CROSSCERT)(e.to_string()))?;

    Ok(PeerCerts {
        rsa_id: *rsa.identity().as_bytes(),
        rsa_id_sha256: rsa.sha256(),
        ed_id,
        auth_key,
    })
}
