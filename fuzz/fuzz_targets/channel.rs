//! The link handshake and open channel as a responder, on the plaintext
//! bytes a peer sends after TLS (VERSIONS, CERTS, AUTHENTICATE, NETINFO,
//! then cells), in the chunks the input splits them into.
#![no_main]

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use oxit::crypto::keys::RelayKeys;
use oxit::proto::channel::{Channel, LinkKeys, TlsSession};
use rand::SeedableRng;

struct FakeTls;

impl TlsSession for FakeTls {
    fn export_keying_material(&self, _: &[u8], _: &[u8]) -> Option<[u8; 32]> {
        Some([9; 32])
    }
}

fn keys() -> Arc<LinkKeys> {
    static KEYS: OnceLock<Arc<LinkKeys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // Keys in a fresh directory, once per process.
        let dir = std::env::temp_dir().join(format!("oxit-fuzz-keys-{}", std::process::id()));
        let keys = RelayKeys::load_or_create(&dir, "fuzz", std::time::SystemTime::now(), &mut rng)
            .expect("relay keys");
        let me: IpAddr = "203.0.113.1".parse().unwrap();
        Arc::new(LinkKeys::from_relay_keys(&keys, vec![me]))
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let peer: IpAddr = "198.51.100.2".parse().unwrap();
    let mut ch = Channel::new_responder(keys(), [3; 32], peer, now);
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut cells = Vec::new();
    // The first byte of each chunk is its length: the parser must not care
    // how the stream was cut.
    let mut rest = data;
    let mut t = now;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        t += Duration::from_millis(10);
        if ch
            .handle_input(chunk, t, 1_700_000_000, &FakeTls, &mut rng, &mut cells)
            .is_err()
        {
            break;
        }
        cells.clear();
        while ch.poll_event().is_some() {}
    }
    let _ = ch.handle_timeout(t + Duration::from_secs(400));
});
