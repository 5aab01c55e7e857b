//! The far end of the middle scenario: an ORPort of the generator's own,
//! with its own relay identity, that the relay under test extends to.
//!
//! Owns the responder side of those links (TLS, the link handshake with
//! oxit's own `Channel`, CREATE2 answered with a real ntor handshake) and
//! what it sends back: DATA-shaped cells with the source's pattern and no
//! layer of its own, paced by the credit the client sends through the
//! relay (a window of cells, like SENDMEs), and an answer to every ping.
//! Forward cells arrive here without the relay's layer, so the fake exit
//! reads them as plaintext (`gen::FAKE_CREDIT`, `gen::FAKE_PING`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use oxit::crypto::keys::RelayKeys;
use oxit::crypto::ntor::{self, NtorKeypair, NtorOnionKeys};
use oxit::proto::cell::{ChanBody, ChanCmd, CircId, Create2, Created2};
use oxit::proto::channel::{Channel, IncomingCell, LinkKeys, TlsSession};
use oxit::proto::relay_msg::{
    RELAY_BODY_LEN, RELAY_DATA_MAX, RELAY_HEADER_LEN, RelayCmd, RelayHeader, StreamId,
};
use oxit::runtime::driver::{Ops, Token};
use oxit::runtime::tls::TlsConn;

use crate::dest;
use crate::engine::{FAKE_BULK_STREAM, FAKE_CREDIT, FAKE_PING, FAKE_PONG_STREAM, Hop, unix_now};

/// Plaintext a fake link may have queued in the driver.
const FAKE_QUEUE: usize = 256 * 1024;

struct FakeCirc {
    credit: u64,
    seed: u32,
    sent: u64,
}

struct FakeLink {
    tls: TlsConn,
    chan: Channel,
    plain: Vec<u8>,
    cells: Vec<IncomingCell>,
    circs: HashMap<u32, FakeCirc>,
    /// Circuits with credit, served round robin.
    ready: Vec<u32>,
    dirty: bool,
}

struct Tls<'a>(&'a TlsConn);

impl TlsSession for Tls<'_> {
    fn export_keying_material(&self, label: &[u8], context: &[u8]) -> Option<[u8; 32]> {
        self.0.export(label, context)
    }
}

pub struct FakeExit {
    addr: SocketAddr,
    hop: Hop,
    link_keys: Arc<LinkKeys>,
    tls_sha256: [u8; 32],
    server_cfg: Arc<rustls::ServerConfig>,
    onion: NtorOnionKeys,
    links: HashMap<Token, FakeLink>,
    scratch: Vec<u8>,
    pub errors: u64,
}

impl FakeExit {
    pub fn new(keys: &RelayKeys, addr: SocketAddr) -> Result<Self, String> {
        let link_keys = Arc::new(LinkKeys::from_relay_keys(keys, vec![addr.ip()]));
        let server_cfg = oxit::runtime::tls::server_config(keys.tls())
            .map_err(|e| format!("fake exit TLS: {e}"))?;
        let ntor_secret = *keys.ntor_key().secret();
        Ok(FakeExit {
            addr,
            hop: Hop {
                addr,
                rsa_id: *keys.rsa_identity().as_bytes(),
                ed_id: *keys.ed_identity(),
                ntor_key: *keys.ntor_key().public(),
            },
            link_keys,
            tls_sha256: *keys.tls().cert_sha256(),
            server_cfg,
            onion: NtorOnionKeys {
                current: NtorKeypair::from_secret_bytes(ntor_secret),
                previous: None,
            },
            links: HashMap::new(),
            scratch: Vec::new(),
            errors: 0,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hop(&self) -> Hop {
        self.hop.clone()
    }

    pub fn accept(&mut self, t: Token, peer: Option<SocketAddr>, now: Instant) {
        let Ok(tls) = TlsConn::server(&self.server_cfg) else {
            return;
        };
        let ip = peer.map_or(self.addr.ip(), |p| p.ip());
        let chan = Channel::new_responder(self.link_keys.clone(), self.tls_sha256, ip, now);
        self.links.insert(
            t,
            FakeLink {
                tls,
                chan,
                plain: Vec::new(),
                cells: Vec::new(),
                circs: HashMap::new(),
                ready: Vec::new(),
                dirty: false,
            },
        );
    }

    pub fn close(&mut self, t: Token) {
        self.links.remove(&t);
    }

    pub fn on_recv(&mut self, t: Token, data: &[u8], now: Instant, ops: &mut dyn Ops) {
        let Some(l) = self.links.get_mut(&t) else {
            return;
        };
        if l.tls.feed(data, &mut l.plain).is_err() {
            self.errors += 1;
            self.links.remove(&t);
            ops.close(t, false);
            return;
        }
        l.dirty = true;
        if !l.plain.is_empty() {
            let r = l.chan.handle_input(
                &l.plain,
                now,
                unix_now(),
                &Tls(&l.tls),
                &mut rand::rng(),
                &mut l.cells,
            );
            l.plain.clear();
            if r.is_err() {
                self.errors += 1;
            }
        }
        while l.chan.poll_event().is_some() {}
        let mut cells = std::mem::take(&mut l.cells);
        for c in cells.drain(..) {
            self.on_cell(t, &c);
        }
        if let Some(l) = self.links.get_mut(&t) {
            l.cells = cells;
        }
        self.flush(t, ops);
    }

    fn on_cell(&mut self, t: Token, c: &IncomingCell) {
        let Some(l) = self.links.get_mut(&t) else {
            return;
        };
        let id = c.circ_id.get();
        match c.cmd {
            ChanCmd::CREATE2 => {
                let Ok(create) = Create2::decode(&c.body) else {
                    self.errors += 1;
                    return;
                };
                let Ok(out) = ntor::server_handshake(
                    create.hdata(),
                    &self.hop.rsa_id,
                    &self.onion,
                    &mut rand::rng(),
                ) else {
                    self.errors += 1;
                    return;
                };
                let Ok(created) = Created2::new(out.reply.to_vec()) else {
                    return;
                };
                let mut v = Vec::new();
                if created.encode_onto(&mut v).is_err() {
                    return;
                }
                let mut body = [0u8; RELAY_BODY_LEN];
                let n = v.len().min(RELAY_BODY_LEN);
                body[..n].copy_from_slice(&v[..n]);
                let _ = l.chan.send_cell(c.circ_id, ChanCmd::CREATED2, &body);
                l.circs.insert(
                    id,
                    FakeCirc {
                        credit: 0,
                        seed: 0,
                        sent: 0,
                    },
                );
            }
            ChanCmd::RELAY | ChanCmd::RELAY_EARLY => {
                let Some(fc) = l.circs.get_mut(&id) else {
                    return;
                };
                let p = &c.body[RELAY_HEADER_LEN..];
                match c.body[0] {
                    FAKE_CREDIT => {
                        let n = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                        let seed = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                        if fc.credit == 0 && fc.sent == 0 {
                            fc.seed = seed;
                        }
                        if fc.credit == 0 {
                            l.ready.push(id);
                        }
                        fc.credit += u64::from(n);
                    }
                    FAKE_PING => {
                        let mut body = [0u8; RELAY_BODY_LEN];
                        RelayHeader {
                            cmd: RelayCmd::DATA,
                            recognized: 0,
                            stream_id: StreamId::new(FAKE_PONG_STREAM),
                            digest: [0; 4],
                            length: 8,
                        }
                        .pack(&mut body);
                        body[RELAY_HEADER_LEN..RELAY_HEADER_LEN + 8].copy_from_slice(&p[..8]);
                        let _ = l.chan.send_cell(c.circ_id, ChanCmd::RELAY, &body);
                    }
                    _ => self.errors += 1,
                }
            }
            ChanCmd::DESTROY => {
                l.circs.remove(&id);
            }
            _ => {}
        }
    }

    fn flush(&mut self, t: Token, ops: &mut dyn Ops) {
        let Some(l) = self.links.get_mut(&t) else {
            return;
        };
        l.dirty = false;
        self.scratch.clear();
        l.chan.take_output(&mut self.scratch);
        match ops.out_buf(t) {
            Some(out) => l.tls.encrypt_into(&self.scratch, out),
            None if !self.scratch.is_empty() => l.tls.write_plain(&self.scratch),
            None => {}
        }
        // Records of our own once the link is open, as the relay does.
        if l.chan.is_open() && !l.tls.handed_over() {
            let _ = l.tls.hand_over();
        }
    }

    /// Send bulk cells on every circuit with credit while the link has room.
    pub fn pump(&mut self, ops: &mut dyn Ops) {
        let tokens: Vec<Token> = self.links.keys().copied().collect();
        for t in tokens {
            let Some(l) = self.links.get_mut(&t) else {
                continue;
            };
            let mut wrote = false;
            let mut body = [0u8; RELAY_BODY_LEN];
            RelayHeader {
                cmd: RelayCmd::DATA,
                recognized: 0,
                stream_id: StreamId::new(FAKE_BULK_STREAM),
                digest: [0; 4],
                length: RELAY_DATA_MAX as u16,
            }
            .pack(&mut body);
            'fill: while !l.ready.is_empty() && ops.queued(t) < FAKE_QUEUE {
                let mut i = 0;
                while i < l.ready.len() {
                    let id = l.ready[i];
                    let Some(fc) = l.circs.get_mut(&id) else {
                        l.ready.swap_remove(i);
                        continue;
                    };
                    // A few cells per circuit per round: fair, and few
                    // hash lookups per cell.
                    for _ in 0..8 {
                        if fc.credit == 0 {
                            break;
                        }
                        let data = dest::pattern_at(
                            fc.seed,
                            fc.sent * RELAY_DATA_MAX as u64,
                            RELAY_DATA_MAX,
                        );
                        body[RELAY_HEADER_LEN..RELAY_HEADER_LEN + data.len()].copy_from_slice(data);
                        let _ = l.chan.send_cell(CircId::new(id), ChanCmd::RELAY, &body);
                        fc.sent += 1;
                        fc.credit -= 1;
                    }
                    wrote = true;
                    if fc.credit == 0 {
                        l.ready.swap_remove(i);
                    } else {
                        i += 1;
                    }
                }
                // Hand what was built to TLS so `queued` sees it.
                self.scratch.clear();
                l.chan.take_output(&mut self.scratch);
                let Some(out) = ops.out_buf(t) else {
                    l.tls.write_plain(&self.scratch);
                    break 'fill;
                };
                l.tls.encrypt_into(&self.scratch, out);
            }
            if wrote || l.dirty {
                self.flush(t, ops);
            }
        }
    }
}
