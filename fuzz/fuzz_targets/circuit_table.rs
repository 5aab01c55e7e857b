//! The circuit table of one worker on a sequence of events: raw cells on a
//! client channel and on a relay channel, CREATE_FAST circuits the harness
//! completes as a client, relay messages it encrypts on them (so the exit
//! logic sees well-formed cells with hostile contents), and the worker's
//! answers (resolves, connects, destination data, EOF) to what the table
//! asked for.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use oxit::crypto::fast;
use oxit::crypto::ntor::{NtorKeypair, NtorOnionKeys};
use oxit::crypto::tor1::Tor1ClientCircuit;
use oxit::exit::dns::Answer;
use oxit::exit::policy::ExitPolicy;
use oxit::proto::cell::{ChanBody, ChanCmd, CircId, CreateFast, CreatedFast};
use oxit::proto::circuit::{
    Action, ChanId, CircuitConfig, CircuitTable, IncomingCell, PeerKind, StreamKey,
};
use oxit::proto::dos::DosParams;
use oxit::proto::relay_msg::{RelayCmd, StreamId, encode_relay_data};
use rand::SeedableRng;
use rand::rngs::StdRng;

const CLIENT: ChanId = ChanId(1);
const RELAY: ChanId = ChanId(2);

fn config() -> Arc<CircuitConfig> {
    static CFG: OnceLock<Arc<CircuitConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(1);
        Arc::new(CircuitConfig {
            onion_keys: NtorOnionKeys {
                current: NtorKeypair::generate(&mut rng),
                previous: None,
            },
            rsa_id: [1; 20],
            ed_id: [1; 32],
            exit_policy: ExitPolicy::from_rules([]),
            ipv6_exit: true,
            refuse_unknown_exits: false,
            known_relays: HashSet::new(),
            extend_allow_private: false,
            own_addrs: vec!["203.0.113.1:9001".parse().unwrap()],
            circwindow: 1000,
            max_queue: 2500,
            sendme_emit_min_version: 1,
            sendme_accept_min_version: 0,
            allow_nonearly_extend: false,
            allow_network_reentry: false,
            reentry: HashSet::new(),
            count_private_bandwidth: false,
            dos: DosParams::default(),
            onion: oxit::proto::circuit::OnionParams::default(),
            max_mem_in_queues: 8 << 30,
        })
    })
    .clone()
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    let mut t = CircuitTable::new(config());
    t.channel_opened(CLIENT, PeerKind::Client);
    t.channel_opened(
        RELAY,
        PeerKind::Relay {
            rsa_id: [7; 20],
            ed_id: [7; 32],
        },
    );
    let mut rng = StdRng::seed_from_u64(2);
    let mut now = Instant::now();
    let mut circs: Vec<(ChanId, u32, Tor1ClientCircuit)> = Vec::new();
    let mut pending: Vec<StreamKey> = Vec::new();
    let mut open: Vec<StreamKey> = Vec::new();
    let mut r = Reader(data);
    let mut next_id = 0x8000_0000u32;
    while let Some(op) = r.byte() {
        let chan = if op & 0x80 == 0 { RELAY } else { CLIENT };
        match op & 0x7 {
            // A raw cell.
            0 => {
                let cmd = ChanCmd::new(r.byte().unwrap_or(0));
                let id = u32::from_be_bytes(r.take(4).try_into().unwrap_or([0; 4]));
                let mut body = [0u8; 509];
                let b = r.take(509);
                body[..b.len()].copy_from_slice(b);
                t.handle_cells(
                    chan,
                    &mut [IncomingCell {
                        circ_id: CircId::new(id),
                        cmd,
                        body,
                    }],
                    now,
                    &mut rng,
                );
            }
            // A CREATE_FAST the harness completes.
            1 => {
                next_id += 1;
                let (st, x) = fast::client_create(&mut rng);
                let mut v = Vec::new();
                let _ = CreateFast::new(x).encode_onto(&mut v);
                let mut body = [0u8; 509];
                body[..v.len().min(509)].copy_from_slice(&v[..v.len().min(509)]);
                t.handle_cells(
                    chan,
                    &mut [IncomingCell {
                        circ_id: CircId::new(next_id),
                        cmd: ChanCmd::CREATE_FAST,
                        body,
                    }],
                    now,
                    &mut rng,
                );
                while let Some(a) = t.poll_action() {
                    if let Action::SendCell {
                        cmd: ChanCmd::CREATED_FAST,
                        body,
                        ..
                    } = a
                        && let Ok(cf) = CreatedFast::decode(&body)
                    {
                        let mut yk = cf.y().to_vec();
                        yk.extend_from_slice(cf.kh());
                        if let Ok(keys) = fast::client_finish(st, &yk) {
                            let mut c = Tor1ClientCircuit::new();
                            c.push_hop(&keys.tor1);
                            circs.push((chan, next_id, c));
                        }
                        break;
                    }
                }
            }
            // A relay message on one of those circuits.
            2 => {
                if circs.is_empty() {
                    continue;
                }
                let i = usize::from(r.byte().unwrap_or(0)) % circs.len();
                let cmd = RelayCmd::from(r.byte().unwrap_or(0));
                let sid = u16::from_be_bytes(r.take(2).try_into().unwrap_or([0; 2]));
                let len = usize::from(r.byte().unwrap_or(0)).min(498);
                let payload = r.take(len).to_vec();
                let (chan, id, c) = &mut circs[i];
                let mut body = [0u8; 509];
                if encode_relay_data(cmd, StreamId::new(sid), &payload, &mut rng, &mut body).is_ok()
                {
                    c.encrypt_forward(0, &mut body);
                    let early = op & 0x40 != 0;
                    let cmd = if early {
                        ChanCmd::RELAY_EARLY
                    } else {
                        ChanCmd::RELAY
                    };
                    t.handle_cells(
                        *chan,
                        &mut [IncomingCell {
                            circ_id: CircId::new(*id),
                            cmd,
                            body,
                        }],
                        now,
                        &mut rng,
                    );
                }
            }
            // The worker's answers to what the table asked.
            3 => {
                if let Some(key) = pending.pop() {
                    let ip: IpAddr = if op & 0x40 == 0 {
                        "192.0.2.7".parse().unwrap()
                    } else {
                        "127.0.0.1".parse().unwrap()
                    };
                    let ans = Answer {
                        addrs: vec![ip],
                        ttl: u32::from(r.byte().unwrap_or(0)),
                        hostname: None,
                    };
                    t.handle_resolved(key, Ok(ans), now, &mut rng);
                }
            }
            4 => {
                if let Some(key) = open.last().copied() {
                    let n = usize::from(r.byte().unwrap_or(0)) * 8;
                    let d = r.take(n).to_vec();
                    let _ = t.handle_stream_data(key, &d, now, &mut rng);
                }
            }
            5 => {
                if let Some(key) = open.pop() {
                    t.handle_stream_eof(key, None, now, &mut rng);
                }
            }
            6 => now += Duration::from_secs(u64::from(r.byte().unwrap_or(0))),
            _ => t.handle_timeout(now, &mut rng),
        }
        while let Some(a) = t.poll_action() {
            match a {
                Action::Resolve { key, .. } => pending.push(key),
                Action::Connect { key, addr } => {
                    let addr: SocketAddr = addr;
                    t.handle_connected(key, Ok(addr), now, &mut rng);
                    open.push(key);
                }
                Action::CloseStream { key } => open.retain(|k| *k != key),
                _ => {}
            }
        }
    }
});
