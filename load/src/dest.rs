//! The destinations the generator serves itself, on one TCP port of
//! 127.0.0.1: the relay under test connects here for every exit stream.
//!
//! Owns the small request the client sends as a stream's first DATA (what
//! this connection should be: a source, a sink or an echo), the byte
//! pattern every source sends and every sink may check, and the state of
//! each accepted connection. No HTTP, no parsing beyond 20 bytes: the
//! measurement is of the relay, not of a server in front of it.
//!
//! Request (20 bytes): `"OXLD"`, mode (`D` download, `U` upload, `E`
//! echo), check flag (1: compare content with the pattern), two zero
//! bytes, seed (u32, big-endian: where in the pattern this stream
//! starts), size (u64, big-endian). A sink that got all `size` bytes
//! answers `"DONE"` and closes; one whose content differed answers `"BAD!"`.

use std::sync::OnceLock;

use oxit::runtime::driver::{Ops, Token};

pub const REQUEST_LEN: usize = 20;
const MAGIC: &[u8; 4] = b"OXLD";
pub const ACK_DONE: &[u8; 4] = b"DONE";
pub const ACK_BAD: &[u8; 4] = b"BAD!";

/// The pattern's period: prime, so that a cell's 498 bytes never line up
/// with it and a misplaced cell shows.
pub const PATTERN_LEN: usize = 65_521;

/// Bytes a source keeps queued in front of the kernel: at most twice
/// this is queued, under the 64 KiB a drained driver buffer keeps, so the
/// buffer is never given back and faulted in again.
const SOURCE_QUEUE: usize = 32 * 1024;
/// Bytes a source appends at a time.
const SOURCE_CHUNK: usize = 32 * 1024;

/// The pattern, twice over, so that any `PATTERN_LEN` bytes from any
/// offset are one contiguous slice.
fn pattern2() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let one: Vec<u8> = (0..PATTERN_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        let mut two = one.clone();
        two.extend_from_slice(&one);
        two
    })
}

/// Up to `len` (at most `PATTERN_LEN`) pattern bytes of a stream with
/// `seed`, starting at stream offset `off`.
pub fn pattern_at(seed: u32, off: u64, len: usize) -> &'static [u8] {
    let start = ((u64::from(seed) + off) % PATTERN_LEN as u64) as usize;
    let p = pattern2();
    let end = start + len.min(PATTERN_LEN);
    p.get(start..end).unwrap_or_default()
}

/// Whether `data` is what a stream with `seed` carries at offset `off`.
pub fn matches_pattern(seed: u32, off: u64, data: &[u8]) -> bool {
    let mut at = 0usize;
    while at < data.len() {
        let want = pattern_at(seed, off + at as u64, data.len() - at);
        let Some(got) = data.get(at..at + want.len()) else {
            return false;
        };
        if want.is_empty() || got != want {
            return false;
        }
        at += want.len();
    }
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Download,
    Upload,
    Echo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub mode: Mode,
    pub check: bool,
    pub seed: u32,
    pub size: u64,
}

impl Request {
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = match self.mode {
            Mode::Download => b'D',
            Mode::Upload => b'U',
            Mode::Echo => b'E',
        };
        b[5] = u8::from(self.check);
        b[8..12].copy_from_slice(&self.seed.to_be_bytes());
        b[12..20].copy_from_slice(&self.size.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; REQUEST_LEN]) -> Option<Self> {
        let [
            m0,
            m1,
            m2,
            m3,
            mode,
            check,
            _,
            _,
            s0,
            s1,
            s2,
            s3,
            z0,
            z1,
            z2,
            z3,
            z4,
            z5,
            z6,
            z7,
        ] = *b;
        if [m0, m1, m2, m3] != *MAGIC {
            return None;
        }
        let z = [z0, z1, z2, z3, z4, z5, z6, z7];
        let mode = match mode {
            b'D' => Mode::Download,
            b'U' => Mode::Upload,
            b'E' => Mode::Echo,
            _ => return None,
        };
        Some(Request {
            mode,
            check: check == 1,
            seed: u32::from_be_bytes([s0, s1, s2, s3]),
            size: u64::from_be_bytes(z),
        })
    }
}

/// What the destinations saw: problems are counted, never fatal.
#[derive(Default, Debug, Clone)]
pub struct DestStats {
    pub accepted: u64,
    pub bad_requests: u64,
    pub sink_bytes: u64,
    pub sink_mismatches: u64,
    pub source_bytes: u64,
}

enum State {
    /// Waiting for the 20-byte request.
    Request(Vec<u8>),
    Source {
        seed: u32,
        sent: u64,
        size: u64,
    },
    Sink {
        req: Request,
        got: u64,
        bad: bool,
    },
    Echo,
    /// Answered; closing once flushed.
    Done,
}

/// One accepted connection.
pub struct DestConn {
    state: State,
}

impl DestConn {
    pub fn new() -> Self {
        DestConn {
            state: State::Request(Vec::with_capacity(REQUEST_LEN)),
        }
    }

    /// Bytes arrived from the relay.
    pub fn on_recv(&mut self, t: Token, mut data: &[u8], ops: &mut dyn Ops, st: &mut DestStats) {
        if let State::Request(buf) = &mut self.state {
            let take = (REQUEST_LEN - buf.len()).min(data.len());
            buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            let Ok(raw) = <&[u8; REQUEST_LEN]>::try_from(buf.as_slice()) else {
                return;
            };
            let Some(req) = Request::decode(raw) else {
                st.bad_requests += 1;
                self.state = State::Done;
                ops.close(t, false);
                return;
            };
            self.state = match req.mode {
                Mode::Download => State::Source {
                    seed: req.seed,
                    sent: 0,
                    size: req.size,
                },
                Mode::Upload => State::Sink {
                    req,
                    got: 0,
                    bad: false,
                },
                Mode::Echo => State::Echo,
            };
            if matches!(self.state, State::Source { .. }) {
                self.fill(t, ops, st);
            }
        }
        match &mut self.state {
            State::Sink { req, got, bad } => {
                if req.check && !*bad && !matches_pattern(req.seed, *got, data) {
                    *bad = true;
                }
                *got += data.len() as u64;
                st.sink_bytes += data.len() as u64;
                if *got >= req.size {
                    let ack = if *bad || *got != req.size {
                        st.sink_mismatches += 1;
                        ACK_BAD
                    } else {
                        ACK_DONE
                    };
                    if let Some(out) = ops.out_buf(t) {
                        out.extend_from_slice(ack);
                    }
                    self.state = State::Done;
                    ops.close(t, true);
                }
            }
            State::Echo => {
                if let Some(out) = ops.out_buf(t) {
                    out.extend_from_slice(data);
                }
            }
            _ => {}
        }
    }

    /// Everything queued went to the kernel: a source sends more.
    pub fn on_drained(&mut self, t: Token, ops: &mut dyn Ops, st: &mut DestStats) {
        self.fill(t, ops, st);
    }

    fn fill(&mut self, t: Token, ops: &mut dyn Ops, st: &mut DestStats) {
        let State::Source { seed, sent, size } = &mut self.state else {
            return;
        };
        while *sent < *size && ops.queued(t) < SOURCE_QUEUE {
            let n = (*size - *sent).min(SOURCE_CHUNK as u64) as usize;
            let chunk = pattern_at(*seed, *sent, n);
            let Some(out) = ops.out_buf(t) else {
                return;
            };
            out.extend_from_slice(chunk);
            *sent += chunk.len() as u64;
            st.source_bytes += chunk.len() as u64;
        }
        if *sent >= *size {
            self.state = State::Done;
            ops.close(t, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r = Request {
            mode: Mode::Upload,
            check: true,
            seed: 0xdead_beef,
            size: 1 << 40,
        };
        assert_eq!(Request::decode(&r.encode()), Some(r));
        let mut bad = r.encode();
        bad[0] = b'X';
        assert_eq!(Request::decode(&bad), None);
    }

    #[test]
    fn the_pattern_is_continuous_across_its_period() {
        let seed = 7;
        let whole: Vec<u8> = (0..3 * PATTERN_LEN as u64)
            .step_by(498)
            .flat_map(|off| pattern_at(seed, off, 498).to_vec())
            .collect();
        assert!(matches_pattern(seed, 0, &whole));
        assert!(!matches_pattern(seed, 1, &whole));
        assert!(!matches_pattern(seed + 1, 0, &whole[..498]));
    }
}
