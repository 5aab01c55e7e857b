//! The TLS 1.3 record layer of an open link, done here rather than in
//! rustls (RFC 8446 §5): rustls copied every byte twice on the way out (into
//! a record buffer of its own, then into ours) and twice on the way in,
//! about a fifth of an exit's CPU. Here a record is sealed in place in the
//! driver's output buffer and opened in place in the plaintext buffer.
//!
//! rustls still does the handshake, the link handshake's exporter and the
//! peer certificate; once the link is open and rustls holds nothing
//! unsent or half-received, `TlsConn` takes its traffic keys
//! (`dangerous_extract_secrets`) and hands over to this. Key updates
//! (§4.6.3) need the traffic secrets themselves, which rustls gives only to
//! a key log: [`SecretCapture`] is one.
//!
//! Owns: record framing, AEAD sealing and opening with per-direction
//! sequence numbers, inner content types and padding, KeyUpdate both ways
//! (and our own before AES-GCM's record limit), NewSessionTicket ignored,
//! alerts. Only AES-128-GCM and AES-256-GCM suites are taken over.

use std::cell::RefCell;

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

/// Content types (RFC 8446 §5.1).
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// Handshake message types after the handshake (§4.6).
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
/// The most plaintext in a record, and the most ciphertext (§5.2).
pub(super) const MAX_PLAIN: usize = 1 << 14;
const MAX_CIPHER: usize = MAX_PLAIN + 256;
const HEADER: usize = 5;
const TAG: usize = 16;
/// Records under one key before we update it: AES-GCM's limit is 2^24.5
/// full records (§5.5); stay well inside it.
const UPDATE_AFTER: u64 = 1 << 23;

/// Why a link's TLS failed after the handover.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("TLS record of {0} bytes (at most {MAX_CIPHER})")]
    TooLong(usize),
    #[error("TLS record with outer type {0} after the handshake")]
    OuterType(u8),
    #[error("TLS record failed to decrypt")]
    Decrypt,
    #[error("TLS record with no content type")]
    NoContentType,
    #[error("TLS alert {0} from the peer")]
    Alert(u8),
    #[error("unexpected TLS handshake message {0} after the handshake")]
    Handshake(u8),
    #[error("malformed TLS {0}")]
    Malformed(&'static str),
    #[error("TLS data after the peer's close_notify")]
    AfterClose,
}

/// The hash of the suite, for the key schedule's HKDF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SuiteHash {
    Sha256,
    Sha384,
}

/// HKDF-Expand-Label(secret, label, "", len) (RFC 8446 §7.1).
fn expand_label(hash: SuiteHash, secret: &[u8], label: &[u8], out: &mut [u8]) -> Option<()> {
    let mut info = Vec::with_capacity(4 + 6 + label.len());
    info.extend_from_slice(&u16::try_from(out.len()).ok()?.to_be_bytes());
    info.push(u8::try_from(6 + label.len()).ok()?);
    info.extend_from_slice(b"tls13 ");
    info.extend_from_slice(label);
    info.push(0);
    match hash {
        SuiteHash::Sha256 => hkdf::Hkdf::<sha2::Sha256>::from_prk(secret)
            .ok()?
            .expand(&info, out)
            .ok(),
        SuiteHash::Sha384 => hkdf::Hkdf::<sha2::Sha384>::from_prk(secret)
            .ok()?
            .expand(&info, out)
            .ok(),
    }
}

/// One direction: its AEAD key, IV, sequence number and traffic secret.
pub(super) struct Direction {
    hash: SuiteHash,
    secret: Zeroizing<Vec<u8>>,
    key: LessSafeKey,
    iv: Zeroizing<[u8; 12]>,
    seq: u64,
}

impl Direction {
    /// From a traffic secret and the next sequence number.
    pub(super) fn new(hash: SuiteHash, secret: &[u8], seq: u64) -> Option<Self> {
        let (alg, key_len) = match hash {
            SuiteHash::Sha256 => (&AES_128_GCM, 16),
            SuiteHash::Sha384 => (&AES_256_GCM, 32),
        };
        let mut key = Zeroizing::new([0u8; 32]);
        expand_label(hash, secret, b"key", key.get_mut(..key_len)?)?;
        let mut iv = Zeroizing::new([0u8; 12]);
        expand_label(hash, secret, b"iv", &mut iv[..])?;
        let key = LessSafeKey::new(UnboundKey::new(alg, key.get(..key_len)?).ok()?);
        Some(Self {
            hash,
            secret: Zeroizing::new(secret.to_vec()),
            key,
            iv,
            seq,
        })
    }

    /// The key a traffic secret gives, to check a captured secret against
    /// the key rustls handed over.
    pub(super) fn key_of(hash: SuiteHash, secret: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let len = match hash {
            SuiteHash::Sha256 => 16,
            SuiteHash::Sha384 => 32,
        };
        let mut key = Zeroizing::new(vec![0u8; len]);
        expand_label(hash, secret, b"key", &mut key)?;
        Some(key)
    }

    /// The next generation of keys (§7.2), sequence number 0.
    fn updated(&self) -> Option<Self> {
        let len = self.secret.len();
        let mut next = Zeroizing::new(vec![0u8; len]);
        expand_label(self.hash, &self.secret, b"traffic upd", &mut next)?;
        Self::new(self.hash, &next, 0)
    }

    /// The per-record nonce (§5.3); each sequence number is used once.
    fn nonce(&mut self) -> Nonce {
        let mut n = *self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(n)
    }
}

/// See the module documentation.
pub(super) struct Records {
    tx: Direction,
    rx: Direction,
    /// Bytes of a record not yet complete.
    partial: Vec<u8>,
    /// Handshake bytes not yet a whole message.
    handshake: Vec<u8>,
    /// The peer asked us to update our keys too.
    owe_update: bool,
    /// The peer sent close_notify.
    peer_closed: bool,
}

impl Records {
    pub(super) fn new(tx: Direction, rx: Direction) -> Self {
        Self {
            tx,
            rx,
            partial: Vec::new(),
            handshake: Vec::new(),
            owe_update: false,
            peer_closed: false,
        }
    }

    /// Seal `plain` into records appended to `out`: each byte is copied
    /// once, into `out`, and encrypted there.
    pub(super) fn seal_into(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        if self.owe_update {
            self.owe_update = false;
            self.send_key_update(out);
        }
        for chunk in plain.chunks(MAX_PLAIN) {
            if self.tx.seq >= UPDATE_AFTER {
                self.send_key_update(out);
            }
            self.seal_record(APPLICATION_DATA, chunk, out);
        }
    }

    /// A close_notify alert.
    pub(super) fn close_into(&mut self, out: &mut Vec<u8>) {
        self.seal_record(ALERT, &[1, 0], out);
    }

    fn send_key_update(&mut self, out: &mut Vec<u8>) {
        // KeyUpdate, update_not_requested, under the old key (§4.6.3).
        self.seal_record(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out);
        if let Some(next) = self.tx.updated() {
            self.tx = next;
        }
    }

    fn seal_record(&mut self, inner: u8, data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let len = data.len() + 1 + TAG;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        out.extend_from_slice(&header);
        crate::copy::extend(out, data);
        out.push(inner);
        let nonce = self.tx.nonce();
        let body = out.get_mut(start + HEADER..).unwrap_or(&mut []);
        match self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), body)
        {
            Ok(tag) => out.extend_from_slice(tag.as_ref()),
            // aws-lc fails to seal only on a length past its limit, which
            // a record is not; send nothing rather than plaintext.
            Err(_) => out.truncate(start),
        }
    }

    /// Open the records in `data`; application data is appended to
    /// `plain` (ciphertext is copied there once and decrypted in place).
    ///
    /// A record begun in an earlier read is completed from the front of
    /// `data` first; the rest is opened where it lies, and only its
    /// incomplete tail is kept, so a read is not copied behind the partial
    /// record.
    pub(super) fn open_into(
        &mut self,
        mut data: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let mut partial = std::mem::take(&mut self.partial);
        while !partial.is_empty() && !data.is_empty() {
            let need = match partial.get(..HEADER) {
                Some(h) => HEADER + usize::from(u16::from_be_bytes([h[3], h[4]])),
                None => HEADER,
            };
            let (head, rest) = data.split_at(need.saturating_sub(partial.len()).min(data.len()));
            crate::copy::extend(&mut partial, head);
            data = rest;
            // A whole record is opened; a header alone is checked.
            let used = self.open_records(&partial, plain)?;
            partial.drain(..used);
        }
        if partial.is_empty() {
            let used = self.open_records(data, plain)?;
            crate::copy::extend(&mut partial, data.get(used..).unwrap_or(&[]));
        }
        self.partial = partial;
        Ok(())
    }

    /// Open every whole record at the start of `data`; returns the bytes
    /// used.
    fn open_records(&mut self, data: &[u8], plain: &mut Vec<u8>) -> Result<usize, RecordError> {
        let mut at = 0;
        while let Some(h) = data.get(at..at + HEADER) {
            let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
            if len > MAX_CIPHER {
                return Err(RecordError::TooLong(len));
            }
            if h[0] != APPLICATION_DATA {
                return Err(RecordError::OuterType(h[0]));
            }
            let Some(body) = data.get(at + HEADER..at + HEADER + len) else {
                break;
            };
            if self.peer_closed {
                return Err(RecordError::AfterClose);
            }
            let mut header = [0u8; HEADER];
            header.copy_from_slice(h);
            let start = plain.len();
            crate::copy::extend(plain, body);
            let nonce = self.rx.nonce();
            let opened = self
                .rx
                .key
                .open_in_place(
                    nonce,
                    Aad::from(header),
                    plain.get_mut(start..).unwrap_or(&mut []),
                )
                .map_err(|_| RecordError::Decrypt)?
                .len();
            if opened > MAX_PLAIN + 1 {
                return Err(RecordError::TooLong(opened));
            }
            plain.truncate(start + opened);
            // Inner plaintext: content, its type, then zero padding.
            let Some(type_at) = plain
                .get(start..)
                .and_then(|p| p.iter().rposition(|&b| b != 0))
            else {
                return Err(RecordError::NoContentType);
            };
            let inner = plain.get(start + type_at).copied().unwrap_or(0);
            plain.truncate(start + type_at);
            match inner {
                APPLICATION_DATA => {}
                HANDSHAKE => {
                    let msg = plain.split_off(start);
                    self.handshake.extend_from_slice(&msg);
                    self.handle_handshake()?;
                }
                ALERT => {
                    let alert = plain.split_off(start);
                    match alert.as_slice() {
                        [_, 0] => self.peer_closed = true,
                        [_, d] => return Err(RecordError::Alert(*d)),
                        _ => return Err(RecordError::Malformed("alert")),
                    }
                }
                other => return Err(RecordError::OuterType(other)),
            }
            at += HEADER + len;
        }
        Ok(at)
    }

    /// Whole handshake messages received after the handshake.
    fn handle_handshake(&mut self) -> Result<(), RecordError> {
        loop {
            let Some(h) = self.handshake.get(..4) else {
                return Ok(());
            };
            let (kind, len) = (
                h[0],
                usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]),
            );
            if len > MAX_PLAIN {
                return Err(RecordError::Malformed("handshake message length"));
            }
            let Some(body) = self.handshake.get(4..4 + len) else {
                return Ok(());
            };
            match (kind, body) {
                // No resumption on Tor links (tor-spec §2.2): a ticket is
                // dropped unread.
                (NEW_SESSION_TICKET, _) => {}
                (KEY_UPDATE, [req @ (0 | 1)]) => {
                    if *req == 1 {
                        self.owe_update = true;
                    }
                    self.rx = self
                        .rx
                        .updated()
                        .ok_or(RecordError::Malformed("key update"))?;
                }
                (KEY_UPDATE, _) => return Err(RecordError::Malformed("KeyUpdate")),
                (other, _) => return Err(RecordError::Handshake(other)),
            }
            self.handshake.drain(..4 + len);
        }
    }

    /// Whether a KeyUpdate the peer asked for waits to be sent.
    pub(super) fn owes_output(&self) -> bool {
        self.owe_update
    }
}

/// A traffic secret rustls logged: its label and bytes.
pub(super) type Logged = (&'static str, Zeroizing<Vec<u8>>);

thread_local! {
    /// Traffic secrets rustls logged on this thread since the last
    /// [`SecretCapture::take`].
    static CAPTURED: RefCell<Vec<Logged>> = const { RefCell::new(Vec::new()) };
}

/// A rustls key log that keeps the first application traffic secrets of
/// the connection being processed on this thread. rustls logs them while
/// `process_new_packets` runs, and a worker processes one connection at a
/// time, so the caller takes them right after each call.
#[derive(Debug)]
pub(super) struct SecretCapture;

pub(super) const CLIENT_SECRET: &str = "CLIENT_TRAFFIC_SECRET_0";
pub(super) const SERVER_SECRET: &str = "SERVER_TRAFFIC_SECRET_0";

impl rustls::KeyLog for SecretCapture {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let label = match label {
            CLIENT_SECRET => CLIENT_SECRET,
            SERVER_SECRET => SERVER_SECRET,
            _ => return,
        };
        CAPTURED.with(|c| {
            c.borrow_mut()
                .push((label, Zeroizing::new(secret.to_vec())))
        });
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_SECRET || label == SERVER_SECRET
    }
}

impl SecretCapture {
    /// What was logged since the last call.
    pub(super) fn take() -> Vec<Logged> {
        CAPTURED.with(|c| std::mem::take(&mut *c.borrow_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8448 §3 (simple 1-RTT handshake): the server's application
    /// traffic secret gives this key and IV.
    #[test]
    fn rfc8448_application_keys() {
        let secret =
            hex::decode("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")
                .unwrap();
        let key = Direction::key_of(SuiteHash::Sha256, &secret).unwrap();
        assert_eq!(hex::encode(&*key), "9f02283b6c9c07efc26bb9f2ac92e356");
        let mut iv = [0u8; 12];
        expand_label(SuiteHash::Sha256, &secret, b"iv", &mut iv).unwrap();
        assert_eq!(hex::encode(iv), "cf782b88dd83549aadf1e984");
    }

    fn pair() -> (Records, Records) {
        let a = [7u8; 32];
        let b = [9u8; 32];
        let d = |s: &[u8]| Direction::new(SuiteHash::Sha256, s, 0).unwrap();
        (Records::new(d(&a), d(&b)), Records::new(d(&b), d(&a)))
    }

    /// Both ways, across record boundaries cut anywhere, with key updates
    /// on both sides (one asked for by the peer).
    #[test]
    fn sealed_records_open_on_the_other_side() {
        let (mut x, mut y) = pair();
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 13) as u8).collect();
        let mut wire = Vec::new();
        x.seal_into(&data, &mut wire);
        // The peer asks for an update; our next write sends ours first.
        x.send_key_update(&mut wire);
        x.seal_into(b"after update", &mut wire);
        let mut got = Vec::new();
        for piece in wire.chunks(977) {
            y.open_into(piece, &mut got).unwrap();
        }
        assert_eq!(&got[..data.len()], &data[..]);
        assert_eq!(&got[data.len()..], b"after update");

        // y asks x to update too (request_update = 1).
        let mut back = Vec::new();
        y.seal_record(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 1], &mut back);
        y.tx = y.tx.updated().unwrap();
        y.seal_into(b"ping", &mut back);
        let mut got = Vec::new();
        x.open_into(&back, &mut got).unwrap();
        assert_eq!(got, b"ping");
        assert!(x.owes_output());
        let mut wire = Vec::new();
        x.seal_into(b"pong", &mut wire);
        let mut got = Vec::new();
        y.open_into(&wire, &mut got).unwrap();
        assert_eq!(got, b"pong");

        // close_notify, then nothing more is accepted.
        let mut wire = Vec::new();
        x.close_into(&mut wire);
        x.seal_into(b"late", &mut wire);
        let mut got = Vec::new();
        assert!(matches!(
            y.open_into(&wire, &mut got),
            Err(RecordError::AfterClose)
        ));
    }

    /// Random bytes, random record headers and truncated records give an
    /// error or wait for more; never a panic.
    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..2000 {
            let (mut x, mut y) = pair();
            let mut wire = Vec::new();
            x.seal_into(&vec![1u8; rng.random_range(0..40_000)], &mut wire);
            match rng.random_range(0..3u8) {
                0 => wire.truncate(rng.random_range(0..wire.len().max(1))),
                1 => {
                    let i = rng.random_range(0..wire.len().max(1));
                    if let Some(b) = wire.get_mut(i) {
                        *b = rng.random();
                    }
                }
                _ => {
                    wire = vec![0u8; rng.random_range(0..600)];
                    rng.fill_bytes(&mut wire);
                    if let Some(b) = wire.first_mut() {
                        *b = APPLICATION_DATA;
                    }
                }
            }
            let mut plain = Vec::new();
            for piece in wire.chunks(rng.random_range(1..5000)) {
                if y.open_into(piece, &mut plain).is_err() {
                    break;
                }
            }
        }
    }

    /// A flipped bit, a bad outer type and an oversized record are errors.
    #[test]
    fn bad_records_are_errors() {
        let (mut x, mut y) = pair();
        let mut wire = Vec::new();
        x.seal_into(b"hello", &mut wire);
        let mut bad = wire.clone();
        bad[8] ^= 1;
        assert!(matches!(
            y.open_into(&bad, &mut Vec::new()),
            Err(RecordError::Decrypt)
        ));
        let (_, mut y) = pair();
        let mut bad = wire.clone();
        bad[0] = 22;
        assert!(matches!(
            y.open_into(&bad, &mut Vec::new()),
            Err(RecordError::OuterType(22))
        ));
        let (_, mut y) = pair();
        assert!(matches!(
            y.open_into(&[23, 3, 3, 0xff, 0xff], &mut Vec::new()),
            Err(RecordError::TooLong(65535))
        ));
    }
}
