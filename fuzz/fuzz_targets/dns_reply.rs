//! A datagram on the resolver's socket, checked against a question (both
//! case modes), and fed to a resolver with a question in flight.
#![no_main]

use std::time::Instant;

use hickory_proto::rr::RecordType;
use libfuzzer_sys::fuzz_target;
use oxit::exit::dns::message::parse_response;
use oxit::exit::dns::{Query, QueryKind, Resolver, ResolverConfig};
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let id = data
        .first_chunk::<2>()
        .map_or(0, |b| u16::from_be_bytes(*b));
    for t in [RecordType::A, RecordType::AAAA, RecordType::PTR] {
        for exact in [false, true] {
            let _ = parse_response(data, id, "www.Example.com", t, exact);
        }
    }
    let ns = "192.0.2.53:53".parse().unwrap();
    let mut cfg = ResolverConfig::with_nameservers(vec![ns]);
    // The id is random: answer the one in flight by patching it in.
    cfg.randomize_case = false;
    // A small cache: one is built per input.
    cfg.cache_capacity = 8;
    let mut r = Resolver::new(cfg, rand::rngs::StdRng::seed_from_u64(7));
    let now = Instant::now();
    let q = Query::new("www.example.com", QueryKind::Ipv4ThenIpv6).unwrap();
    let _ = r.resolve(now, q, 1);
    let Some(tx) = r.poll_transmit(now) else {
        return;
    };
    let mut reply = data.to_vec();
    if let (Some(dst), Some(src)) = (reply.get_mut(..2), tx.payload.get(..2)) {
        dst.copy_from_slice(src);
    }
    r.handle_datagram(now, ns, &reply);
    while r.poll_event().is_some() {}
});
