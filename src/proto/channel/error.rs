//! Why a channel closed: one enum for the whole link layer, with enough
//! context (which cell, which check, what was expected) to log a useful
//! line. Every variant is fatal to the channel; C tor reacts to all of them
//! with `connection_or_close_for_error` (channeltls.c), so there is no wire
//! reaction to choose beyond "close the TLS connection".

use crate::proto::cell::{CellError, ChanCmd, CircId};

/// A check of a peer's CERTS cell that failed (requirements.md §1.4, §1.8;
/// torcert.c:or_handshake_certs_ed25519_ok).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertsError {
    /// A certificate type the handshake needs is absent.
    #[error("no certificate of type {0} (needed: {1})")]
    Missing(u8, &'static str),
    /// A certificate that does not decode or fails a check; `detail` is the
    /// crypto layer's message.
    #[error("certificate of type {cert_type} rejected: {detail}")]
    Invalid { cert_type: u8, detail: String },
    /// The type-4 cert lacks the signed-with-ed25519-key extension
    /// ("No Ed25519 signing key" in C).
    #[error("type-4 certificate has no signed-with-ed25519-key extension")]
    NoIdentityExtension,
    /// Type-5 cert certifies another TLS certificate ("Link certificate does
    /// not match TLS certificate").
    #[error("type-5 certificate certifies TLS cert {certified}, but the TLS cert is {actual}")]
    LinkCertMismatch { certified: String, actual: String },
}

/// Which AUTHENTICATE check failed (requirements.md §1.7, §1.8;
/// channeltls.c:channel_tls_process_authenticate_cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// AuthType is not 3 (Ed25519-SHA256-RFC5705).
    #[error("authentication type {0} is not supported (only 3)")]
    UnsupportedType(u16),
    /// The authenticator is not 352 bytes.
    #[error("authenticator is {0} bytes, expected 352")]
    BadLength(usize),
    /// One field up to RAND differs from what we computed.
    #[error("field {0} differs from the expected value")]
    FieldMismatch(&'static str),
    /// The Ed25519 signature does not verify under the type-6 key.
    #[error("Ed25519 signature does not verify under the type-6 key")]
    BadSignature,
}

/// Everything that closes a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// A cell body that does not parse (includes duplicate certificates and
    /// odd-length VERSIONS, which the cell codec reports).
    #[error("malformed {cmd} cell: {source}")]
    Malformed { cmd: ChanCmd, source: CellError },
    /// A cell that is not allowed in the current state.
    #[error("unexpected {cmd} cell {state}")]
    Unexpected { cmd: ChanCmd, state: &'static str },
    /// A handshake cell that must address circuit 0 did not.
    #[error("{cmd} cell has nonzero circuit ID {circ_id}")]
    NonzeroCircId { cmd: ChanCmd, circ_id: CircId },
    /// VERSIONS offers no version we speak.
    #[error("VERSIONS offers {offered:?}, none in common with our {ours:?}")]
    NoCommonVersion {
        offered: Vec<u16>,
        ours: &'static [u16],
    },
    /// The peer's CERTS cell does not check out.
    #[error("bad CERTS cell: {0}")]
    Certs(#[from] CertsError),
    /// The peer's AUTHENTICATE cell does not check out.
    #[error("bad AUTHENTICATE cell: {0}")]
    Authenticate(#[from] AuthError),
    /// The responder proved another RSA identity than the one we extend to
    /// (connection_or.c:connection_or_client_learned_peer_id).
    #[error("peer RSA identity is {got}, expected {expected}")]
    WrongRsaIdentity { expected: String, got: String },
    /// The responder proved another Ed25519 identity than expected.
    #[error("peer Ed25519 identity is {got}, expected {expected}")]
    WrongEdIdentity { expected: String, got: String },
    /// The TLS layer has no exporter (it must: requirements.md §1.1).
    #[error("TLS keying-material exporter unavailable")]
    NoExporter,
    /// Our own key snapshot cannot be sent (e.g. its type-5 cert certifies
    /// another TLS cert than the one on this connection).
    #[error("our link keys are unusable: {0}")]
    OwnKeys(String),
    /// Encoding one of our own cells failed.
    #[error("encoding our {cmd} cell: {source}")]
    Encode { cmd: ChanCmd, source: CellError },
    /// `send_cell` before the channel is open.
    #[error("cannot send {cmd} on circuit {circ_id}: channel is not open")]
    NotOpen { cmd: ChanCmd, circ_id: CircId },
    /// The handshake did not finish within `KeepalivePeriod` of our last
    /// write (mainloop.c:run_connection_housekeeping "Expiring non-open OR
    /// connection").
    #[error("link handshake timed out")]
    HandshakeTimeout,
    /// No circuits for the idle timeout (channelpadding.c:
    /// channelpadding_get_channel_idle_timeout).
    #[error("channel idle without circuits for {secs} s")]
    IdleTimeout { secs: u64 },
}

impl ChannelError {
    /// True when the peer is not who an EXTEND2 asked for: the extend fails
    /// and the circuit layer answers with DESTROY.
    pub fn is_identity_mismatch(&self) -> bool {
        matches!(
            self,
            ChannelError::WrongRsaIdentity { .. } | ChannelError::WrongEdIdentity { .. }
        )
    }

    /// True for a normal, non-error close (idle channel).
    pub fn is_normal_close(&self) -> bool {
        matches!(self, ChannelError::IdleTimeout { .. })
    }

    /// A short stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ChannelError::Malformed { .. } => "malformed",
            ChannelError::Unexpected { .. } => "unexpected_cell",
            ChannelError::NonzeroCircId { .. } => "nonzero_circ_id",
            ChannelError::NoCommonVersion { .. } => "no_common_version",
            ChannelError::Certs(_) => "certs",
            ChannelError::Authenticate(_) => "authenticate",
            ChannelError::WrongRsaIdentity { .. } | ChannelError::WrongEdIdentity { .. } => {
                "wrong_identity"
            }
            ChannelError::NoExporter => "no_exporter",
            ChannelError::OwnKeys(_) => "own_keys",
            ChannelError::Encode { .. } => "encode",
            ChannelError::NotOpen { .. } => "not_open",
            ChannelError::HandshakeTimeout => "handshake_timeout",
            ChannelError::IdleTimeout { .. } => "idle",
        }
    }
}
