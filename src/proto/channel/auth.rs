#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! The AUTH0003 authenticator (Ed25519-SHA256-RFC5705) carried by
//! AUTHENTICATE, and the handshake transcript digests it covers
//! (requirements.md §1.7, §1.8; relay_handshake.c:
//! connection_or_compute_authenticate_cell_body; connection_or.c:
//! or_handshake_state_record_cell / _var_cell).
//!
//! Layout (352 bytes): `"AUTH0003" | CID | SID | CID_ED | SID_ED | SLOG |
//! CLOG | SCERT | TLSSECRETS | RAND(24) | SIG(64)`, SIG by the type-6 key
//! over the 288 bytes before it.

use sha2::{Digest, Sha256};

use crate::crypto::cert::{Ed25519Keypair, ed25519_verify};

use super::error::AuthError;

/// RFC 5705 exporter label. The context is CID, not the Ed25519 key the
/// 2023 spec text names (requirements.md Appendix A.1).
pub(super) const EXPORTER_LABEL: &[u8] = b"EXPORTER FOR TOR TLS CLIENT BINDING AUTH0003";
/// AuthType of AUTH0003.
pub(super) const AUTH_TYPE: u16 = 3;
/// Whole authenticator length.
pub(super) const AUTH_LEN: usize = 352;
const TYPE_TAG: &[u8; 8] = b"AUTH0003";
const RAND_AT: usize = 264;
const SIGNED_LEN: usize = 288;
const _: () = assert!(8 + 32 * FIELD_NAMES.len() == RAND_AT && RAND_AT + 24 == SIGNED_LEN);

/// Names of the 32-byte fields after the tag, in wire order.
const FIELD_NAMES: [&str; 8] = [
    "CID",
    "SID",
    "CID_ED",
    "SID_ED",
    "SLOG",
    "CLOG",
    "SCERT",
    "TLSSECRETS",
];

/// The fields of an authenticator up to RAND, as the verifier recomputes
/// them or the signer fills them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AuthFields {
    /// SHA-256 of the initiator's RSA identity DER.
    pub cid: [u8; 32],
    /// SHA-256 of the responder's RSA identity DER.
    pub sid: [u8; 32],
    /// Initiator's Ed25519 identity.
    pub cid_ed: [u8; 32],
    /// Responder's Ed25519 identity.
    pub sid_ed: [u8; 32],
    /// SHA-256 of what the responder sent.
    pub slog: [u8; 32],
    /// SHA-256 of what the initiator sent.
    pub clog: [u8; 32],
    /// SHA-256 of the responder's TLS certificate DER.
    pub scert: [u8; 32],
    /// TLS exporter output (label above, context = CID).
    pub tlssecrets: [u8; 32],
}

impl AuthFields {
    fn fields(&self) -> [&[u8; 32]; 8] {
        [
            &self.cid,
            &self.sid,
            &self.cid_ed,
            &self.sid_ed,
            &self.slog,
            &self.clog,
            &self.scert,
            &self.tlssecrets,
        ]
    }

    /// Build and sign an authenticator (initiator side).
    pub fn sign(&self, rand: &[u8; 24], key: &Ed25519Keypair) -> Vec<u8> {
        let mut out = Vec::with_capacity(AUTH_LEN);
        out.extend_from_slice(TYPE_TAG);
        for f in self.fields() {
            out.extend_from_slice(f);
        }
        out.extend_from_slice(rand);
        let sig = key.sign(&out);
        out.extend_from_slice(&sig);
        out
    }

    /// Check a received authenticator (responder side): every field up to
    /// RAND must equal ours, then the signature must verify under
    /// `auth_key`, the type-6 key of the initiator's CERTS
    /// (channel_tls_process_authenticate_cell). Unlike C's single "Some
    /// field ... was not as expected", the error names the field.
    pub fn verify(&self, auth: &[u8], auth_key: &[u8; 32]) -> Result<(), AuthError> {
        if auth.len() != AUTH_LEN {
            return Err(AuthError::BadLength(auth.len()));
        }
        let (signed, sig) = auth.split_at(SIGNED_LEN);
        let Some(fields) = signed.strip_prefix(TYPE_TAG) else {
            return Err(AuthError::FieldMismatch("TYPE"));
        };
        // The assertion by RAND_AT keeps every field before RAND, so the
        // zip stops at the fields, not at the bytes.
        let got = fields.chunks_exact(32);
        for ((name, want), got) in FIELD_NAMES.iter().zip(self.fields()).zip(got) {
            if got != want {
                return Err(AuthError::FieldMismatch(name));
            }
        }
        let sig: [u8; 64] = sig
            .try_into()
            .map_err(|_| AuthError::BadLength(auth.len()))?;
        if ed25519_verify(auth_key, signed, &sig) {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

/// A running SHA-256 of the handshake bytes sent or received. Recording
/// stops where C stops it (NETINFO sent; AUTHENTICATE received), but the
/// digest of what was recorded stays readable, as C's `digest_sent` does
/// after `digest_sent_data = 0`.
#[derive(Debug, Clone, Default)]
pub(super) struct Transcript {
    hash: Sha256,
    stopped: bool,
}

impl Transcript {
    /// Add the exact wire bytes of one cell, if still recording.
    pub fn record(&mut self, wire: &[u8]) {
        if !self.stopped {
            self.hash.update(wire);
        }
    }

    /// Stop recording: later `record` calls do nothing.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// SHA-256 of everything recorded.
    pub fn digest(&self) -> [u8; 32] {
        self.hash.clone().finalize().into()
    }
}
