#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! The ntor-v3 message payload: the extension list codec (prop332 §A.2,
//! tor:src/trunnel/extension.trunnel) and oxit's circuit-parameter policy
//! (requirements.md §3.3; C tor onion_crypto.c:negotiate_v3_ntor_server_circ_params).
//!
//! Policy, as C tor 0.4.9's: congestion control is accepted when the relay
//! offers it (the circuit table's configuration; declined otherwise, with
//! the empty list). The one SUBPROTO capability supported is CGO (Relay
//! capability 6), and only together with congestion control; any other
//! capability fails the handshake.

use thiserror::Error;

/// CC_FIELD_REQUEST, client → relay, empty body.
pub const EXT_CC_FIELD_REQUEST: u8 = 0x01;
/// CC_FIELD_RESPONSE, relay → client, `sendme_inc(1)`.
pub const EXT_CC_FIELD_RESPONSE: u8 = 0x02;
/// SUBPROTO request: sorted `protocol_id(1) | cap_number(1)` pairs.
pub const EXT_SUBPROTO: u8 = 0x03;
/// The protocol id of "Relay" in a SUBPROTO pair (protover.h `PRT_RELAY`).
pub const PROTO_RELAY: u8 = 2;
/// Relay capability 6: CGO relay crypto with the v1 message format
/// (protover.h `PROTOVER_RELAY_CRYPT_CGO`).
pub const RELAY_CAP_CGO: u8 = 6;

/// One extension of a list: `TYPE(1) | LEN(1) | DATA(LEN)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    /// Extension type.
    pub ext_type: u8,
    /// Extension body.
    pub data: &'a [u8],
}

/// Why a client's ntor-v3 message is refused. Every variant fails the
/// handshake: DESTROY with reason PROTOCOL ([`NegotiationError::destroy_reason`]).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NegotiationError {
    /// The extension list ends inside an extension (or before N).
    #[error(
        "ntor-v3 extension list truncated: extension {index} needs {needed} more bytes, {available} left"
    )]
    Truncated {
        /// Index of the extension being read (0-based; 0 for the count byte).
        index: usize,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// SUBPROTO body is not a whole number of (protocol, capability) pairs.
    #[error("ntor-v3 SUBPROTO request of {len} bytes is not a list of 2-byte pairs")]
    SubprotoOddLength {
        /// Body length.
        len: usize,
    },
    /// SUBPROTO pairs not strictly increasing (unsorted or duplicated).
    #[error("ntor-v3 SUBPROTO request not strictly sorted at ({proto}, {cap})")]
    SubprotoUnsorted {
        /// Protocol id of the offending pair.
        proto: u8,
        /// Capability number of the offending pair.
        cap: u8,
    },
    /// A capability we do not support (any but CGO).
    #[error("ntor-v3 SUBPROTO requests unsupported capability ({proto}, {cap})")]
    SubprotoUnsupported {
        /// Protocol id.
        proto: u8,
        /// Capability number.
        cap: u8,
    },
    /// CGO without congestion control: its v1 message format has no way to
    /// carry stream-level SENDMEs.
    #[error("ntor-v3 asks for CGO without congestion control (the v1 format needs it)")]
    CgoWithoutCc,
}

impl NegotiationError {
    /// DESTROY reason: PROTOCOL (1), as C tor closes on a failed handshake.
    pub fn destroy_reason(&self) -> u8 {
        1
    }
}

/// Parse `N(1) | N × { TYPE(1) | LEN(1) | DATA(LEN) }`. A list that ends
/// early is an error. Bytes after the N-th extension are ignored, as C tor's
/// trunnel parser does (trn_extension_parse reports how much it consumed and
/// the callers only check for failure).
pub fn parse_extensions(msg: &[u8]) -> Result<Vec<Extension<'_>>, NegotiationError> {
    let (&n, mut rest) = msg.split_first().ok_or(NegotiationError::Truncated {
        index: 0,
        needed: 1,
        available: 0,
    })?;
    let mut out = Vec::with_capacity(usize::from(n));
    for index in 0..usize::from(n) {
        let (&ext_type, &len, body) = match rest {
            [t, l, body @ ..] => (t, l, body),
            _ => {
                return Err(NegotiationError::Truncated {
                    index,
                    needed: 2,
                    available: rest.len(),
                });
            }
        };
        let len = usize::from(len);
        if body.len() < len {
            return Err(NegotiationError::Truncated {
                index,
                needed: len,
                available: body.len(),
            });
        }
        let (data, tail) = body.split_at(len);
        out.push(Extension { ext_type, data });
        rest = tail;
    }
    Ok(out)
}

/// Encode an extension list. Bodies longer than 255 bytes and lists longer
/// than 255 entries cannot be encoded; this is only used with our own
/// constant replies, so they are truncated rather than reported.
pub fn encode_extensions(exts: &[Extension<'_>]) -> Vec<u8> {
    let exts = exts.get(..exts.len().min(255)).unwrap_or_default();
    // A capacity hint: saturating is harmless.
    let cap = exts.iter().fold(1usize, |n, e| {
        n.saturating_add(2).saturating_add(e.data.len())
    });
    let mut out = Vec::with_capacity(cap);
    out.push(exts.len() as u8);
    for e in exts {
        let data = e.data.get(..e.data.len().min(255)).unwrap_or_default();
        out.push(e.ext_type);
        out.push(data.len() as u8);
        out.extend_from_slice(data);
    }
    out
}

/// Check a SUBPROTO body: strictly sorted pairs, each one we support;
/// returns whether CGO was asked for (onion_crypto.c:relay_process_subproto_ext).
fn check_subproto(data: &[u8]) -> Result<bool, NegotiationError> {
    if !data.len().is_multiple_of(2) {
        return Err(NegotiationError::SubprotoOddLength { len: data.len() });
    }
    let mut prev: Option<(u8, u8)> = None;
    let mut cgo = false;
    for pair in data.chunks_exact(2) {
        let (proto, cap) = match pair {
            [p, c] => (*p, *c),
            _ => continue,
        };
        if prev.is_some_and(|p| p >= (proto, cap)) {
            return Err(NegotiationError::SubprotoUnsorted { proto, cap });
        }
        prev = Some((proto, cap));
        if (proto, cap) == (PROTO_RELAY, RELAY_CAP_CGO) {
            cgo = true;
        } else {
            return Err(NegotiationError::SubprotoUnsupported { proto, cap });
        }
    }
    Ok(cgo)
}

/// What the relay answers a client's ntor-v3 message with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The plaintext reply message (an extension list).
    pub reply: Vec<u8>,
    /// Congestion control was asked for and granted.
    pub cc: bool,
    /// CGO relay crypto (and the v1 message format) was asked for, and so
    /// is what the circuit uses.
    pub cgo: bool,
}

/// oxit's answer to a client's ntor-v3 message, offering congestion control
/// with `cc_offer` = our `cc_sendme_inc` (`None`: not offered)
/// (onion_crypto.c:negotiate_v3_ntor_server_circ_params,
/// congestion_control_build_ext_response):
///
/// - CC_FIELD_REQUEST (its body ignored, as C does) with an offer: reply
///   `01 02 01 <sendme_inc>`; otherwise the empty list `00`, and the
///   client runs the circuit with classic SENDME windows.
/// - SUBPROTO (the first one, as trn_extension_find): unsorted/duplicate
///   → refuse; CGO → granted, and nothing in the reply says so (the client
///   takes a completed handshake as the answer); any other capability →
///   refuse. CGO on a circuit without congestion control → refuse.
/// - Unknown extension types are ignored (prop332).
pub fn negotiate(client_msg: &[u8], cc_offer: Option<u8>) -> Result<Negotiated, NegotiationError> {
    let exts = parse_extensions(client_msg)?;
    let asked_cc = exts.iter().any(|e| e.ext_type == EXT_CC_FIELD_REQUEST);
    let cgo = match exts.iter().find(|e| e.ext_type == EXT_SUBPROTO) {
        Some(e) => check_subproto(e.data)?,
        None => false,
    };
    let n = match cc_offer {
        Some(inc) if asked_cc => Negotiated {
            reply: encode_extensions(&[Extension {
                ext_type: EXT_CC_FIELD_RESPONSE,
                data: &[inc],
            }]),
            cc: true,
            cgo,
        },
        _ => Negotiated {
            reply: encode_extensions(&[]),
            cc: false,
            cgo,
        },
    };
    if n.cgo && !n.cc {
        return Err(NegotiationError::CgoWithoutCc);
    }
    Ok(n)
}

/// [`negotiate`] with congestion control declined.
pub fn negotiate_circ_params(client_msg: &[u8]) -> Result<Vec<u8>, NegotiationError> {
    negotiate(client_msg, None).map(|n| n.reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_encode() {
        assert_eq!(parse_extensions(&[0]).unwrap(), vec![]);
        let exts = parse_extensions(&[2, 1, 0, 3, 2, 2, 6]).unwrap();
        assert_eq!(
            exts,
            vec![
                Extension {
                    ext_type: 1,
                    data: &[]
                },
                Extension {
                    ext_type: 3,
                    data: &[2, 6]
                }
            ]
        );
        assert_eq!(encode_extensions(&exts), vec![2, 1, 0, 3, 2, 2, 6]);
        assert_eq!(encode_extensions(&[]), vec![0]);
        // Trailing bytes ignored, as trunnel does.
        assert_eq!(parse_extensions(&[0, 9, 9]).unwrap(), vec![]);
    }

    #[test]
    fn truncated_lists_fail() {
        for bad in [
            &[][..],
            &[1],
            &[1, 1],
            &[1, 1, 1],
            &[2, 1, 0],
            &[1, 5, 3, 0, 0],
        ] {
            assert!(
                matches!(
                    parse_extensions(bad),
                    Err(NegotiationError::Truncated { .. })
                ),
                "{bad:?}"
            );
            assert!(negotiate_circ_params(bad).is_err());
        }
    }

    #[test]
    fn policy() {
        // Nothing asked, CC asked (0.4.9 exit circuits), unknown type: `00`.
        assert_eq!(negotiate_circ_params(&[0]).unwrap(), vec![0]);
        assert_eq!(negotiate_circ_params(&[1, 1, 0]).unwrap(), vec![0]);
        assert_eq!(negotiate_circ_params(&[1, 0x7f, 2, 1, 2]).unwrap(), vec![0]);
        // Empty SUBPROTO asks for nothing.
        assert_eq!(negotiate_circ_params(&[1, 3, 0]).unwrap(), vec![0]);
        // CGO (Relay=2, cap 6) with CC, as 0.4.9 clients send it, on a
        // relay not offering CC: refused.
        assert_eq!(
            negotiate_circ_params(&[2, 1, 0, 3, 2, 2, 6]),
            Err(NegotiationError::CgoWithoutCc)
        );
        // Any other capability, alone or beside CGO.
        assert_eq!(
            negotiate_circ_params(&[1, 3, 2, 2, 5]),
            Err(NegotiationError::SubprotoUnsupported { proto: 2, cap: 5 })
        );
        assert_eq!(
            negotiate(&[2, 1, 0, 3, 4, 2, 6, 3, 1], Some(31)),
            Err(NegotiationError::SubprotoUnsupported { proto: 3, cap: 1 })
        );
        // Unsorted, duplicate, odd length.
        assert_eq!(
            negotiate_circ_params(&[1, 3, 4, 2, 6, 2, 5]),
            Err(NegotiationError::SubprotoUnsorted { proto: 2, cap: 5 })
        );
        assert_eq!(
            negotiate_circ_params(&[1, 3, 4, 2, 6, 2, 6]),
            Err(NegotiationError::SubprotoUnsorted { proto: 2, cap: 6 })
        );
        assert_eq!(
            negotiate_circ_params(&[1, 3, 3, 2, 6, 2]),
            Err(NegotiationError::SubprotoOddLength { len: 3 })
        );
        assert_eq!(
            NegotiationError::SubprotoOddLength { len: 3 }.destroy_reason(),
            1
        );
    }

    #[test]
    fn congestion_control_offered() {
        let cc = |reply: Vec<u8>| Negotiated {
            reply,
            cc: true,
            cgo: false,
        };
        let no = |reply: Vec<u8>| Negotiated {
            reply,
            cc: false,
            cgo: false,
        };
        // Asked and offered: 01 02 01 <sendme_inc>, as C tor's reply.
        assert_eq!(negotiate(&[1, 1, 0], Some(31)), Ok(cc(vec![1, 2, 1, 31])));
        // The request's body is ignored, as C does.
        assert_eq!(
            negotiate(&[1, 1, 2, 9, 9], Some(31)),
            Ok(cc(vec![1, 2, 1, 31]))
        );
        // Not asked, or not offered: the empty list.
        assert_eq!(negotiate(&[0], Some(31)), Ok(no(vec![0])));
        assert_eq!(negotiate(&[1, 1, 0], None), Ok(no(vec![0])));
    }

    #[test]
    fn cgo_with_congestion_control() {
        // What a 0.4.9 client sends an exit advertising Relay=5-6: the reply
        // is the CC answer alone.
        assert_eq!(
            negotiate(&[2, 1, 0, 3, 2, 2, 6], Some(31)),
            Ok(Negotiated {
                reply: vec![1, 2, 1, 31],
                cc: true,
                cgo: true,
            })
        );
        // Order of the extensions does not matter.
        assert!(negotiate(&[2, 3, 2, 2, 6, 1, 0], Some(31)).unwrap().cgo);
        // CGO without asking for CC, or with CC not offered: refused.
        assert_eq!(
            negotiate(&[1, 3, 2, 2, 6], Some(31)),
            Err(NegotiationError::CgoWithoutCc)
        );
        assert_eq!(
            negotiate(&[2, 1, 0, 3, 2, 2, 6], None),
            Err(NegotiationError::CgoWithoutCc)
        );
        // Only the first SUBPROTO counts (trn_extension_find).
        assert!(
            negotiate(&[3, 1, 0, 3, 2, 2, 6, 3, 2, 9, 9], Some(31))
                .unwrap()
                .cgo
        );
        assert!(negotiate(&[3, 1, 0, 3, 0, 3, 2, 2, 6], Some(31)).is_ok_and(|n| !n.cgo));
        // Duplicated CGO.
        assert_eq!(
            negotiate(&[2, 1, 0, 3, 4, 2, 6, 2, 6], Some(31)),
            Err(NegotiationError::SubprotoUnsorted { proto: 2, cap: 6 })
        );
    }
}
