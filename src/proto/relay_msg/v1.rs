//! Relay messages, format v1: the layout of a CGO circuit's cell body once
//! its tag is checked (C tor 0.4.9 relay_msg.c; requirements.md §4.3).
//!
//! ```text
//! Tag(16) | Command(1) | Length(2) | [StreamID(2)] | Data(Length) | Padding
//! offsets 0  16           17          19             19 or 21
//! ```
//!
//! The stream ID is there only for the commands that address a stream
//! ([`RelayCmd::v1_has_stream_id`]); a command C tor does not know is a
//! decoding error (which closes the circuit), not a message to drop as in
//! v0. The tag is the crypto's (`crypto::cgo`): left zero here.

use rand::Rng;

use super::{RELAY_BODY_LEN, RelayBody, RelayCmd, RelayMsgError, StreamId};
use crate::proto::cell::codec::SliceWriter;

/// Bytes of the tag in front of a v1 message.
pub const V1_TAG_LEN: usize = 16;
const CMD_AT: usize = V1_TAG_LEN;
const LEN_AT: usize = CMD_AT + 1;
const STREAM_AT: usize = LEN_AT + 2;
/// Where the data starts without a stream ID.
const DATA_AT_NO_STREAM: usize = STREAM_AT;
/// Where the data starts after a stream ID.
const DATA_AT_STREAM: usize = STREAM_AT + 2;
/// Most data a v1 DATA cell carries (`RELAY_PAYLOAD_SIZE_MIN` in C tor).
pub const V1_DATA_MAX: usize = RELAY_BODY_LEN - DATA_AT_STREAM;

impl RelayCmd {
    /// Whether a v1 message of this command carries a stream ID
    /// (relay_msg.h:relay_cmd_expects_streamid_in_v1).
    pub const fn v1_has_stream_id(self) -> bool {
        matches!(self.0, 1 | 2 | 3 | 4 | 11 | 12 | 13 | 43 | 44)
    }

    /// Whether C tor knows the command (or.h:is_known_relay_command): a v1
    /// message with any other is undecodable.
    pub fn is_known(self) -> bool {
        self.name().is_some()
    }

    /// Most data a v1 message of this command carries: 488 with a stream
    /// ID, 490 without.
    pub const fn v1_data_max(self) -> usize {
        if self.v1_has_stream_id() {
            V1_DATA_MAX
        } else {
            RELAY_BODY_LEN - DATA_AT_NO_STREAM
        }
    }
}

const fn data_at(cmd: RelayCmd) -> usize {
    if cmd.v1_has_stream_id() {
        DATA_AT_STREAM
    } else {
        DATA_AT_NO_STREAM
    }
}

/// Split a recognized v1 cell body into command, stream and data
/// (relay_msg.c:decode_v1_cell). A command without a stream ID decodes
/// with [`StreamId::CIRCUIT`].
pub fn parse_relay_body_v1(
    body: &[u8; RELAY_BODY_LEN],
) -> Result<(RelayCmd, StreamId, &[u8]), RelayMsgError> {
    let cmd = RelayCmd(body[CMD_AT]);
    if !cmd.is_known() {
        return Err(RelayMsgError::Malformed {
            parsing: "v1 relay message",
            reason: "unknown relay command",
        });
    }
    let length = u16::from_be_bytes([body[LEN_AT], body[LEN_AT + 1]]);
    let stream = if cmd.v1_has_stream_id() {
        StreamId(u16::from_be_bytes([body[STREAM_AT], body[STREAM_AT + 1]]))
    } else {
        StreamId::CIRCUIT
    };
    let start = data_at(cmd);
    let data = body
        .get(start..start.saturating_add(usize::from(length)))
        .ok_or(RelayMsgError::LengthTooLarge(length))?;
    Ok((cmd, stream, data))
}

/// Build a v1 cell body in `out`: tag zero (for the crypto), header,
/// `data`, then 4 zero bytes and random padding, as
/// relay_msg.c:encode_v1_cell. A stream command needs a stream, and any
/// other must not have one.
pub fn encode_relay_data_v1<R: Rng + ?Sized>(
    cmd: RelayCmd,
    stream_id: StreamId,
    data: &[u8],
    rng: &mut R,
    out: &mut [u8; RELAY_BODY_LEN],
) -> Result<(), RelayMsgError> {
    encode_v1_with(cmd, stream_id, rng, out, |w| {
        w.put(data).map_err(RelayMsgError::overflow("relay data"))
    })
}

/// Like [`encode_relay_data_v1`], writing a typed message straight into
/// `out`.
pub fn encode_relay_msg_v1<'m, M: RelayBody<'m>, R: Rng + ?Sized>(
    stream_id: StreamId,
    msg: &M,
    rng: &mut R,
    out: &mut [u8; RELAY_BODY_LEN],
) -> Result<(), RelayMsgError> {
    encode_v1_with(M::CMD, stream_id, rng, out, |w| msg.encode_onto(w))
}

fn encode_v1_with<R: Rng + ?Sized>(
    cmd: RelayCmd,
    stream_id: StreamId,
    rng: &mut R,
    out: &mut [u8; RELAY_BODY_LEN],
    body: impl FnOnce(&mut SliceWriter<'_>) -> Result<(), RelayMsgError>,
) -> Result<(), RelayMsgError> {
    if cmd.v1_has_stream_id() == stream_id.is_circuit() {
        return Err(RelayMsgError::Malformed {
            parsing: "v1 relay message",
            reason: if stream_id.is_circuit() {
                "stream command without a stream"
            } else {
                "circuit command with a stream"
            },
        });
    }
    let start = data_at(cmd);
    let (head, data_area) = out.split_at_mut(start);
    let mut w = SliceWriter::new(data_area);
    body(&mut w)?;
    let len = w.written();
    // INVARIANT: the writer is bounded by the data area (at most 490).
    let [l0, l1] = u16::try_from(len).unwrap_or(0).to_be_bytes();
    head.fill(0);
    if let Some(h) = head.get_mut(CMD_AT..DATA_AT_NO_STREAM) {
        h.copy_from_slice(&[cmd.0, l0, l1]);
    }
    if let Some(s) = head.get_mut(STREAM_AT..DATA_AT_STREAM) {
        s.copy_from_slice(&stream_id.0.to_be_bytes());
    }
    super::pad_after(out, start.saturating_add(len), rng);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::relay_msg::{End, EndReason, Sendme, SendmeDigest};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn data_cell_layout() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut out = [0xAAu8; RELAY_BODY_LEN];
        let data = [7u8; 100];
        encode_relay_data_v1(
            RelayCmd::DATA,
            StreamId::new(0x1234),
            &data,
            &mut rng,
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..16], &[0u8; 16]);
        assert_eq!(&out[16..21], &[2, 0, 100, 0x12, 0x34]);
        assert_eq!(&out[21..121], &data[..]);
        assert_eq!(&out[121..125], &[0u8; 4]);
        let (cmd, stream, got) = parse_relay_body_v1(&out).unwrap();
        assert_eq!(
            (cmd, stream, got),
            (RelayCmd::DATA, StreamId::new(0x1234), &data[..])
        );
        // Full: 488 bytes, and one more does not fit.
        let full = [9u8; V1_DATA_MAX];
        encode_relay_data_v1(RelayCmd::DATA, StreamId::new(1), &full, &mut rng, &mut out).unwrap();
        assert_eq!(parse_relay_body_v1(&out).unwrap().2, &full[..]);
        let over = [9u8; V1_DATA_MAX + 1];
        assert!(
            encode_relay_data_v1(RelayCmd::DATA, StreamId::new(1), &over, &mut rng, &mut out)
                .is_err()
        );
    }

    #[test]
    fn circuit_messages_have_no_stream_id() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut out = [0u8; RELAY_BODY_LEN];
        let tag = [5u8; 20];
        let sendme = Sendme::V1 {
            tag: SendmeDigest::tor1(tag),
        };
        encode_relay_msg_v1(StreamId::CIRCUIT, &sendme, &mut rng, &mut out).unwrap();
        // 01 | 0014 | tag: 23 bytes, right after the 3-byte header.
        assert_eq!(&out[16..19], &[5, 0, 23]);
        assert_eq!(&out[19..22], &[1, 0, 20]);
        assert_eq!(&out[22..42], &tag);
        let (cmd, stream, data) = parse_relay_body_v1(&out).unwrap();
        assert_eq!(
            (cmd, stream, data.len()),
            (RelayCmd::SENDME, StreamId::CIRCUIT, 23)
        );
        assert_eq!(RelayCmd::SENDME.v1_data_max(), 490);
        // A stream ID where there is none, and none where there must be.
        assert!(encode_relay_msg_v1(StreamId::new(3), &sendme, &mut rng, &mut out).is_err());
        let end = End::new(EndReason::DONE);
        assert!(encode_relay_msg_v1(StreamId::CIRCUIT, &end, &mut rng, &mut out).is_err());
        encode_relay_msg_v1(StreamId::new(3), &end, &mut rng, &mut out).unwrap();
        assert_eq!(&out[16..22], &[3, 0, 1, 0, 3, 6]);
    }

    #[test]
    fn bad_messages_are_errors() {
        let mut body = [0u8; RELAY_BODY_LEN];
        // Unknown commands (v0 would carry them; v1 cannot decode them).
        for cmd in [0u8, 16, 17, 18, 23, 31, 45, 255] {
            body[16] = cmd;
            assert!(parse_relay_body_v1(&body).is_err(), "command {cmd}");
        }
        // Length past the end, with and without a stream ID.
        body[16] = 2;
        body[17..19].copy_from_slice(&489u16.to_be_bytes());
        assert_eq!(
            parse_relay_body_v1(&body),
            Err(RelayMsgError::LengthTooLarge(489))
        );
        body[17..19].copy_from_slice(&488u16.to_be_bytes());
        assert!(parse_relay_body_v1(&body).is_ok());
        body[16] = 5;
        body[17..19].copy_from_slice(&491u16.to_be_bytes());
        assert!(parse_relay_body_v1(&body).is_err());
        body[17..19].copy_from_slice(&490u16.to_be_bytes());
        assert!(parse_relay_body_v1(&body).is_ok());
        // Any bytes: an answer, never a panic.
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..2000 {
            rng.fill_bytes(&mut body);
            let _ = parse_relay_body_v1(&body);
        }
    }
}
