//! A DNS server for the name-lookup cases: every A question is answered
//! with 127.0.0.1 (where the generator's destinations listen), every other
//! question with an empty NOERROR. TTL 60 s: the relay's cache holds an
//! answer for the rest of a run, so only names never asked before reach
//! this server (the web scenario makes every stream's name unique).
//!
//! Runs on its own thread with a blocking socket: lookups are rare next to
//! cells, and the relay under test, not this server, is what is measured.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

/// Answer queries on `addr` until the process ends; count them in the
/// returned counter.
pub fn spawn(addr: SocketAddr) -> std::io::Result<(SocketAddr, Arc<AtomicU64>)> {
    let sock = UdpSocket::bind(addr)?;
    let local = sock.local_addr()?;
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Some(reply) = buf.get(..n).and_then(answer) else {
                    continue;
                };
                seen.fetch_add(1, Ordering::Relaxed);
                let _ = sock.send_to(&reply, from);
            }
        })?;
    Ok((local, count))
}

fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = ResponseCode::NoError;
    for question in &q.queries {
        if question.query_type() == RecordType::A {
            m.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(Ipv4Addr::LOCALHOST)),
            ));
        }
    }
    m.add_queries(q.queries.clone());
    m.to_vec().ok()
}
