#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! DNS messages: build a query, and check and read a response, with
//! hickory-proto. Owns the acceptance rules a response must pass before the
//! resolver trusts it (id, question, class) and the reading of the answer
//! section (CNAME chains, minimum TTL, negative TTL from the SOA). Does not
//! own where a response came from (the resolver checks the source address)
//! or what happens next (retry, cache, report).

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as DnsQuery, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

/// EDNS(0) payload size we advertise: the DNS Flag Day 2020 value, large
/// enough that answers an exit needs rarely come back truncated, small
/// enough to avoid IP fragmentation.
pub const EDNS_PAYLOAD: u16 = 1232;
/// Longest CNAME chain followed inside one answer (libevent and glibc use
/// similar small limits); longer chains are treated as no data.
pub const MAX_CNAME_CHAIN: usize = 16;

/// Encode a recursive query for `name` (lower-case, no trailing dot).
pub fn build_query(id: u16, name: &str, rtype: RecordType) -> Result<Vec<u8>, String> {
    let qname = Name::from_ascii(format!("{name}.")).map_err(|e| e.to_string())?;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(DnsQuery::query(qname, rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    msg.set_edns(edns);
    msg.to_vec().map_err(|e| e.to_string())
}

/// Why a datagram was not accepted as the answer to our question. The
/// resolver drops it and keeps waiting: it may be spoofed or stale.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("undecodable DNS message: {0}")]
    Malformed(String),
    #[error("not a response to a standard query")]
    NotAResponse,
    #[error("transaction id {got:#06x}, expected {expected:#06x}")]
    WrongId { expected: u16, got: u16 },
    #[error("question does not match the one asked")]
    WrongQuestion,
}

/// What an accepted response says about our question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Records of the asked type: addresses (A/AAAA) or a hostname (PTR);
    /// `ttl` is the smallest TTL along the CNAME chain and the records.
    Records {
        addrs: Vec<IpAddr>,
        hostname: Option<String>,
        ttl: u32,
    },
    /// NOERROR without records of the asked type; `negative_ttl` from the
    /// SOA in the authority section, if any (RFC 2308 §5).
    NoData { negative_ttl: Option<u32> },
    /// NXDOMAIN; `negative_ttl` as for NoData.
    NxDomain { negative_ttl: Option<u32> },
    /// TC bit set: the answer did not fit.
    Truncated,
    /// Another response code (SERVFAIL, REFUSED, …).
    Rcode(ResponseCode),
}

/// Decode `data` and check it answers query `id` for (`name`, `rtype`).
/// The question's name must echo `name` letter for letter when
/// `exact_case` (0x20 encoding), and case-insensitively otherwise; answer
/// records match it case-insensitively either way.
pub fn parse_response(
    data: &[u8],
    id: u16,
    name: &str,
    rtype: RecordType,
    exact_case: bool,
) -> Result<Outcome, Rejected> {
    let msg = Message::from_vec(data).map_err(|e| Rejected::Malformed(e.to_string()))?;
    if msg.metadata.message_type != MessageType::Response || msg.metadata.op_code != OpCode::Query {
        return Err(Rejected::NotAResponse);
    }
    if msg.metadata.id != id {
        return Err(Rejected::WrongId {
            expected: id,
            got: msg.metadata.id,
        });
    }
    let qname = Name::from_ascii(format!("{name}.")).map_err(|_| Rejected::WrongQuestion)?;
    match msg.queries.as_slice() {
        [q] if (if exact_case {
            q.name().eq_ignore_root_case(&qname)
        } else {
            q.name().eq_ignore_root(&qname)
        }) && q.query_type() == rtype
            && q.query_class() == DNSClass::IN => {}
        _ => return Err(Rejected::WrongQuestion),
    }
    if msg.metadata.truncation {
        return Ok(Outcome::Truncated);
    }
    match msg.metadata.response_code {
        ResponseCode::NoError => Ok(read_answers(&msg, qname, rtype)),
        ResponseCode::NXDomain => Ok(Outcome::NxDomain {
            negative_ttl: negative_ttl(&msg),
        }),
        other => Ok(Outcome::Rcode(other)),
    }
}

/// Follow the CNAME chain from `qname` through the answer section and
/// collect the records of `rtype` owned by its end. Records owned by names
/// off the chain are ignored, so a response cannot slip in data for names
/// we did not ask about.
fn read_answers(msg: &Message, qname: Name, rtype: RecordType) -> Outcome {
    let mut owner = qname;
    let mut ttl = u32::MAX;
    for _ in 0..=MAX_CNAME_CHAIN {
        let mut addrs = Vec::new();
        let mut hostname = None;
        let mut found_ttl = u32::MAX;
        let mut cname = None;
        for rec in msg
            .answers
            .iter()
            .filter(|r| r.dns_class == DNSClass::IN && r.name.eq_ignore_root(&owner))
        {
            match &rec.data {
                RData::A(a) if rtype == RecordType::A => addrs.push(IpAddr::V4(a.0)),
                RData::AAAA(a) if rtype == RecordType::AAAA => addrs.push(IpAddr::V6(a.0)),
                RData::PTR(p) if rtype == RecordType::PTR && hostname.is_none() => {
                    let text = p.0.to_ascii().to_ascii_lowercase();
                    hostname = Some(text.trim_end_matches('.').to_string());
                }
                RData::CNAME(c) => {
                    cname = Some((c.0.clone(), rec.ttl));
                    continue;
                }
                _ => continue,
            }
            found_ttl = found_ttl.min(rec.ttl);
        }
        if !addrs.is_empty() || hostname.is_some() {
            return Outcome::Records {
                addrs,
                hostname,
                ttl: ttl.min(found_ttl),
            };
        }
        match cname {
            Some((target, cname_ttl)) => {
                ttl = ttl.min(cname_ttl);
                owner = target;
            }
            None => break,
        }
    }
    Outcome::NoData {
        negative_ttl: negative_ttl(msg),
    }
}

/// RFC 2308 §5: a negative answer may be cached for min(SOA TTL, SOA
/// MINIMUM), taken from the SOA in the authority section.
fn negative_ttl(msg: &Message) -> Option<u32> {
    msg.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Crafting responses for tests, with hickory-proto.
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA};

    pub fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// The question of a query we sent: (id, name, type).
    pub fn question_of(query: &[u8]) -> (u16, Name, RecordType) {
        let m = Message::from_vec(query).unwrap();
        let q = &m.queries[0];
        (m.metadata.id, q.name().clone(), q.query_type())
    }

    /// A response skeleton echoing `query`'s id and question.
    pub fn response_to(query: &[u8], rcode: ResponseCode) -> Message {
        let q = Message::from_vec(query).unwrap();
        let mut m = Message::response(q.metadata.id, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.metadata.response_code = rcode;
        m.add_queries(q.queries.clone());
        m
    }

    pub fn a(owner: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A(ip.parse().unwrap())))
    }

    pub fn aaaa(owner: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip.parse().unwrap())))
    }

    pub fn cname(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
    }

    pub fn ptr(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::PTR(PTR(name(target))))
    }

    pub fn soa(owner: &str, ttl: u32, minimum: u32) -> Record {
        let soa = SOA::new(
            name("ns.example."),
            name("root.example."),
            1,
            3600,
            600,
            86400,
            minimum,
        );
        Record::from_rdata(name(owner), ttl, RData::SOA(soa))
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn query_encoding() {
        let q = build_query(0x1234, "www.example.com", RecordType::AAAA).unwrap();
        // Header: id, flags RD only, 1 question, 0 answers, 0 authority,
        // 1 additional (the EDNS OPT record).
        assert_eq!(&q[..12], &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&q[12..29], b"\x03www\x07example\x03com\x00");
        assert_eq!(&q[29..33], &[0x00, 0x1c, 0x00, 0x01]); // AAAA, IN
        assert_eq!(
            question_of(&q),
            (0x1234, name("www.example.com."), RecordType::AAAA)
        );
    }

    #[test]
    fn cname_chain_and_min_ttl() {
        let q = build_query(7, "www.example.com", RecordType::A).unwrap();
        let mut r = response_to(&q, ResponseCode::NoError);
        r.add_answer(cname("WWW.example.com.", 600, "cdn.example.net."));
        r.add_answer(cname("cdn.example.net.", 50, "edge.example.net."));
        r.add_answer(a("edge.example.net.", 400, "192.0.2.1"));
        r.add_answer(a("edge.example.net.", 300, "192.0.2.2"));
        // Not on the chain: must be ignored.
        r.add_answer(a("evil.example.org.", 10, "203.0.113.66"));
        let out = parse_response(
            &r.to_vec().unwrap(),
            7,
            "www.example.com",
            RecordType::A,
            false,
        );
        assert_eq!(
            out,
            Ok(Outcome::Records {
                addrs: vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
                hostname: None,
                ttl: 50
            })
        );
    }

    #[test]
    fn cname_loop_is_no_data() {
        let q = build_query(7, "a.example", RecordType::A).unwrap();
        let mut r = response_to(&q, ResponseCode::NoError);
        r.add_answer(cname("a.example.", 60, "b.example."));
        r.add_answer(cname("b.example.", 60, "a.example."));
        let out = parse_response(&r.to_vec().unwrap(), 7, "a.example", RecordType::A, false);
        assert_eq!(out, Ok(Outcome::NoData { negative_ttl: None }));
    }

    #[test]
    fn rejections() {
        let q = build_query(9, "x.example", RecordType::A).unwrap();
        let ok = response_to(&q, ResponseCode::NoError).to_vec().unwrap();
        assert!(matches!(
            parse_response(&ok, 10, "x.example", RecordType::A, false),
            Err(Rejected::WrongId {
                expected: 10,
                got: 9
            })
        ));
        assert_eq!(
            parse_response(&ok, 9, "y.example", RecordType::A, false),
            Err(Rejected::WrongQuestion)
        );
        assert_eq!(
            parse_response(&ok, 9, "x.example", RecordType::AAAA, false),
            Err(Rejected::WrongQuestion)
        );
        // Our own query echoed back is not a response.
        assert_eq!(
            parse_response(&q, 9, "x.example", RecordType::A, false),
            Err(Rejected::NotAResponse)
        );
        assert!(matches!(
            parse_response(&ok[..5], 9, "x.example", RecordType::A, false),
            Err(Rejected::Malformed(_))
        ));
        // Case differences in the echoed question are fine, unless the
        // name went out in random case (0x20), which must come back exact.
        assert_eq!(
            parse_response(&ok, 9, "X.Example", RecordType::A, false),
            Ok(Outcome::NoData { negative_ttl: None })
        );
        assert_eq!(
            parse_response(&ok, 9, "X.Example", RecordType::A, true),
            Err(Rejected::WrongQuestion)
        );
        let mixed = build_query(9, "x.ExAmple", RecordType::A).unwrap();
        let echoed = response_to(&mixed, ResponseCode::NoError).to_vec().unwrap();
        assert_eq!(
            parse_response(&echoed, 9, "x.ExAmple", RecordType::A, true),
            Ok(Outcome::NoData { negative_ttl: None })
        );
    }

    #[test]
    fn negative_answers() {
        let q = build_query(1, "nope.example", RecordType::A).unwrap();
        let mut r = response_to(&q, ResponseCode::NXDomain);
        r.add_authority(soa("example.", 900, 60));
        let out = parse_response(
            &r.to_vec().unwrap(),
            1,
            "nope.example",
            RecordType::A,
            false,
        );
        assert_eq!(
            out,
            Ok(Outcome::NxDomain {
                negative_ttl: Some(60)
            })
        );
        let r = response_to(&q, ResponseCode::ServFail);
        let out = parse_response(
            &r.to_vec().unwrap(),
            1,
            "nope.example",
            RecordType::A,
            false,
        );
        assert_eq!(out, Ok(Outcome::Rcode(ResponseCode::ServFail)));
        let mut r = response_to(&q, ResponseCode::NoError);
        r.metadata.truncation = true;
        let out = parse_response(
            &r.to_vec().unwrap(),
            1,
            "nope.example",
            RecordType::A,
            false,
        );
        assert_eq!(out, Ok(Outcome::Truncated));
    }

    #[test]
    fn ptr_answer() {
        let n = "4.3.2.1.in-addr.arpa";
        let q = build_query(3, n, RecordType::PTR).unwrap();
        let mut r = response_to(&q, ResponseCode::NoError);
        r.add_answer(ptr("4.3.2.1.in-addr.arpa.", 7200, "Host.Example.COM."));
        let out = parse_response(&r.to_vec().unwrap(), 3, n, RecordType::PTR, false);
        assert_eq!(
            out,
            Ok(Outcome::Records {
                addrs: vec![],
                hostname: Some("host.example.com".into()),
                ttl: 7200
            })
        );
    }
}
