//! Bad input on the wire, end to end: what a relay answers to malformed
//! link handshakes, CREATE/CREATE2 cells and relay messages, and that it
//! goes on serving other circuits afterwards.
//!
//! Each case runs against a C tor 0.4.9 relay (the reference: the expected
//! answers below are what it does, learnt by running these tests against it)
//! and against oxit (io_uring backend; the normal paths are covered on both
//! backends by oxit_e2e.rs). The client is [`RawClient`], which sends
//! whatever bytes a case needs.
//!
//! Topology per target (all on 127.0.0.1):
//! - link and CREATE cases: client → target.
//! - EXTEND2 cases: a one-hop CREATE_FAST circuit to an *extender*, which is
//!   asked to extend to a *next* relay that really exists, so the malformed
//!   field is the only thing wrong. For C tor the extender is a C middle
//!   (an exit without `ExtendAllowPrivateAddresses` would refuse any
//!   extension to 127.0.0.1 anyway) and the next hop the C exit; for oxit
//!   the extender is oxit and the next hop the C middle.
//! - bad-digest and RELAY_EARLY cases: a one-hop CREATE_FAST circuit to the
//!   target (it is the last hop, so an unrecognized cell stops there).
//! - BEGIN cases: client → C middle → target (CREATE_FAST, then EXTEND2).
//!   On a one-hop circuit every BEGIN is refused with END TORPROTOCOL
//!   whatever its contents (connection_edge.c:connection_exit_begin_conn,
//!   a client channel), which would hide the parse errors under test; behind
//!   a relay a good BEGIN is accepted, so the refusal is the parser's.
//! - flood cases: the EXTEND2 topology, with the next relay frozen by
//!   SIGSTOP while the client floods, and resumed afterwards.
//!
//! Liveness after each case: a fresh connection, CREATE_FAST and BEGIN_DIR.
//! C tor (a directory cache) answers CONNECTED, oxit (no directory yet)
//! END NOTDIRECTORY: either proves the relay serves a new circuit.
//!
//! Every wait is bounded (a few seconds); each test gathers all failing
//! cases and reports them together, so one run shows the whole picture.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use oxit::crypto::ntor::NtorClientState;
use oxit::proto::cell::{ChanBody as _, ChanCmd, Created2};
use oxit::proto::relay_msg::RelayCmd;
use oxit_interop::client::{Handshake, HopSpec};
use oxit_interop::harness::{
    Dnsmasq, HttpServer, IoBackend, OxitOptions, OxitProcess, TorProcess, TorRole,
};
use oxit_interop::rawclient::{CircEvent, RawClient, RawError, describe, relay_data};

/// Bound on waiting for an answer the relay must give.
const ANSWER: Duration = Duration::from_secs(4);
/// How long "no answer" is waited for.
const SILENCE: Duration = Duration::from_millis(1500);

/// DESTROY reasons (tor-spec §5.4).
const DESTROY_PROTOCOL: u8 = 1;
const DESTROY_RESOURCELIMIT: u8 = 5;
/// Most cells sent at a frozen next hop before DESTROY must have come: the
/// kernel's socket buffers take what they can (about 20,000 cells here,
/// more where tcp_wmem/tcp_rmem are raised), then
/// `circ_max_cell_queue_size` (2500) more close the circuit.
const FLOOD_CELLS: usize = 200_000;
/// Circuits that flood together in the link-level case, and the most
/// cells each sends: under `circ_max_cell_queue_size`, so only oxit's
/// per-link limit (64,000 cells waiting) can stop them.
const LOUD_CIRCUITS: usize = 64;
const LOUD_CELLS_EACH: usize = 2400;
/// END reasons (tor-spec §6.3).
const END_TORPROTOCOL: u8 = 13;
const END_NOTDIRECTORY: u8 = 14;

/// The relay under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// A C tor 0.4.9 exit: the reference behaviour.
    CTor,
    /// The oxit binary on one of its I/O backends.
    Oxit(IoBackend),
}

/// What the relay does with a bad input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Closes the TLS connection.
    Closed,
    /// Sends DESTROY with this reason on the circuit.
    Destroy(u8),
    /// Sends RELAY_END with this reason on the stream.
    End(u8),
    /// Says nothing (the cell is dropped) and the circuit keeps working.
    Nothing,
    /// Goes on with the link handshake as if the input were fine.
    Handshake,
    /// Answers CREATED2; `verifies` says whether the client could check it.
    Created2 { verifies: bool },
}

/// The processes one test needs. Dropped → all killed.
struct Net {
    target: Target,
    _dns: Dnsmasq,
    http: HttpServer,
    ctor: Option<TorProcess>,
    oxit: Option<OxitProcess>,
    middle: Option<TorProcess>,
}

impl Net {
    fn start(target: Target, with_middle: bool) -> Net {
        let dns = Dnsmasq::start().expect("start dnsmasq");
        let http = HttpServer::start().expect("start HTTP server");
        let middle = with_middle.then(|| std::thread::spawn(|| TorProcess::start(TorRole::Middle)));
        let (ctor, oxit) = match target {
            Target::CTor => (
                Some(
                    TorProcess::start(TorRole::Exit { dns: dns.addr() }).expect("start C tor exit"),
                ),
                None,
            ),
            Target::Oxit(backend) => (
                None,
                Some(
                    OxitProcess::start(&OxitOptions {
                        backend,
                        dns: Some(dns.addr()),
                        rejected_port: None,
                        debug_log: false,
                        extra_torrc: String::new(),
                    })
                    .expect("start oxit"),
                ),
            ),
        };
        let middle = middle.map(|m| {
            m.join()
                .expect("middle thread")
                .expect("start C tor middle")
        });
        Net {
            target,
            _dns: dns,
            http,
            ctor,
            oxit,
            middle,
        }
    }

    fn addr(&self) -> SocketAddr {
        match (&self.ctor, &self.oxit) {
            (Some(c), _) => c.or_addr(),
            (_, Some(o)) => o.or_addr(),
            _ => unreachable!("a net has a target"),
        }
    }

    fn hop(&self) -> HopSpec {
        match (&self.ctor, &self.oxit) {
            (Some(c), _) => c.hop(Handshake::Ntor).expect("C tor hop"),
            (_, Some(o)) => o.hop(Handshake::Ntor).expect("oxit hop"),
            _ => unreachable!("a net has a target"),
        }
    }

    fn middle(&self) -> &TorProcess {
        self.middle.as_ref().expect("this test started a middle")
    }

    /// The process behind [`Self::extender`]'s next hop.
    fn next_process(&self) -> &TorProcess {
        match self.target {
            Target::CTor => self.ctor.as_ref().expect("a C tor target"),
            Target::Oxit(_) => self.middle(),
        }
    }

    /// (extender address, next hop) for the EXTEND2 cases: see the module doc.
    fn extender(&self) -> (SocketAddr, HopSpec) {
        let m = self.middle();
        match self.target {
            Target::CTor => (m.or_addr(), self.hop()),
            Target::Oxit(_) => (self.addr(), m.hop(Handshake::Ntor).expect("middle hop")),
        }
    }

    /// Logs to append to a failure report.
    fn logs(&self) -> String {
        let mut s = String::new();
        if let Some(o) = &self.oxit {
            let _ = write!(s, "\n--- oxit log ---\n{}", o.log());
        }
        if let Some(c) = &self.ctor {
            let log = c.info_log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let _ = write!(s, "\n--- C tor info log (tail) ---\n{}", tail.join("\n"));
        }
        s
    }
}

/// Collects per-case failures; panics with all of them at the end.
struct Report {
    target: Target,
    failures: Vec<String>,
    passed: Vec<&'static str>,
}

impl Report {
    fn new(target: Target) -> Self {
        Report {
            target,
            failures: Vec::new(),
            passed: Vec::new(),
        }
    }

    fn case(&mut self, name: &'static str, r: Result<(), String>) {
        match r {
            Ok(()) => self.passed.push(name),
            Err(e) => self.failures.push(format!("{name}: {e}")),
        }
    }

    fn finish(self, net: &Net) {
        eprintln!("{:?}: passed {:?}", self.target, self.passed);
        if !self.failures.is_empty() {
            panic!(
                "{:?}: {} case(s) failed:\n  {}{}",
                self.target,
                self.failures.len(),
                self.failures.join("\n  "),
                net.logs()
            );
        }
    }
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Liveness: a fresh connection builds a CREATE_FAST circuit and gets an
/// answer to BEGIN_DIR (CONNECTED, or END NOTDIRECTORY from a relay that
/// serves no directory).
fn alive(addr: SocketAddr) -> Result<(), String> {
    let mut c = RawClient::connect(addr).map_err(|e| format!("liveness: new connection: {e}"))?;
    circuit_answers(&mut c, None)
}

/// A new CREATE_FAST circuit on `c` (or the given one) answers BEGIN_DIR.
fn circuit_answers(
    c: &mut RawClient,
    circ: Option<&mut oxit_interop::rawclient::Circ>,
) -> Result<(), String> {
    let mut fresh;
    let circ = match circ {
        Some(circ) => circ,
        None => {
            fresh = c
                .create_fast(ANSWER)
                .map_err(|e| format!("liveness: CREATE_FAST: {e}"))?;
            &mut fresh
        }
    };
    let stream = 77;
    c.send_relay(circ, 0, false, RelayCmd::BEGIN_DIR, stream, &[])
        .map_err(|e| format!("liveness: BEGIN_DIR: {e}"))?;
    match c.recv_relay(circ, ANSWER) {
        Ok(Some(CircEvent::Relay {
            cmd: RelayCmd::CONNECTED,
            stream: s,
            ..
        })) if s == stream => Ok(()),
        Ok(Some(CircEvent::Relay {
            cmd: RelayCmd::END,
            stream: s,
            data,
            ..
        })) if s == stream && data.first() == Some(&END_NOTDIRECTORY) => Ok(()),
        other => Err(format!("liveness: BEGIN_DIR answered {other:?}")),
    }
}

// ---------------------------------------------------------------- link

#[derive(Clone, Copy, Debug)]
enum LinkCase {
    /// An HTTP request where VERSIONS should be. Its third byte, 'T' (84),
    /// reads as a fixed-cell command, so 512 bytes make one bogus cell.
    Garbage,
    /// VERSIONS [4, 5] plus a stray fifth byte.
    VersionsOddLength,
    /// VERSIONS listing only versions nobody speaks.
    VersionsNoCommon,
}

impl LinkCase {
    const ALL: [LinkCase; 3] = [
        LinkCase::Garbage,
        LinkCase::VersionsOddLength,
        LinkCase::VersionsNoCommon,
    ];

    fn name(self) -> &'static str {
        match self {
            LinkCase::Garbage => "link: garbage instead of VERSIONS",
            LinkCase::VersionsOddLength => "link: VERSIONS with odd length",
            LinkCase::VersionsNoCommon => "link: VERSIONS with no common version",
        }
    }

    /// C tor 0.4.9's answer.
    fn expected(self) -> Answer {
        match self {
            LinkCase::Garbage => Answer::Closed,
            // channeltls.c:channel_tls_process_versions_cell: "Received a
            // VERSION cell with odd payload length"; closes.
            LinkCase::VersionsOddLength => Answer::Closed,
            LinkCase::VersionsNoCommon => Answer::Closed,
        }
    }

    fn bytes(self) -> Vec<u8> {
        match self {
            LinkCase::Garbage => b"GET / HTTP/1.0\r\nHost: relay\r\n\r\n"
                .iter()
                .copied()
                .cycle()
                .take(1024)
                .collect(),
            // CircID 0 (2 bytes), VERSIONS, length 5, 4, 5, stray byte.
            LinkCase::VersionsOddLength => vec![0, 0, 7, 0, 5, 0, 4, 0, 5, 0],
            LinkCase::VersionsNoCommon => vec![0, 0, 7, 0, 4, 0, 6, 0, 100],
        }
    }

    fn run(self, addr: SocketAddr) -> Result<(), String> {
        let mut c = RawClient::connect_tls(addr).map_err(s)?;
        c.send_raw(&self.bytes()).map_err(s)?;
        let got = match c.finish_link_handshake() {
            Ok(()) => {
                // The handshake went on: the channel must be usable.
                circuit_answers(&mut c, None)?;
                Answer::Handshake
            }
            Err(RawError::Closed(_)) => Answer::Closed,
            Err(e) => {
                // Something other than a clean handshake: did it close?
                if c.wait_closed(ANSWER).map_err(s)? {
                    Answer::Closed
                } else {
                    return Err(format!("neither a handshake nor a close: {e}"));
                }
            }
        };
        if got != self.expected() {
            return Err(format!("expected {:?}, got {got:?}", self.expected()));
        }
        alive(addr)
    }
}

fn link_cases(target: Target) {
    let net = Net::start(target, false);
    let mut report = Report::new(target);
    for case in LinkCase::ALL {
        report.case(case.name(), case.run(net.addr()));
    }
    report.finish(&net);
}

#[test]
fn link_ctor() {
    link_cases(Target::CTor);
}

#[test]
fn link_oxit_io_uring() {
    link_cases(Target::Oxit(IoBackend::Uring));
}

#[test]
fn link_oxit_epoll() {
    link_cases(Target::Oxit(IoBackend::Epoll));
}

// -------------------------------------------------------------- CREATE

#[derive(Clone, Copy, Debug)]
enum CreateCase {
    /// CREATE2 whose HLEN (506) exceeds the 505 bytes a cell can hold.
    Create2HlenTooLong,
    /// CREATE2 HTYPE 0 (TAP), a 186-byte onionskin.
    Create2Tap,
    /// CREATE2 HTYPE 2 (ntor) with HLEN 83.
    Create2NtorShort,
    /// A well-formed ntor CREATE2 for another relay's identity.
    Create2WrongNodeId,
    /// A well-formed ntor CREATE2 naming an onion key the relay lacks.
    Create2UnknownKeyId,
    /// CREATE (command 1, TAP).
    CreateTap,
    /// A CREATE2 on a circuit ID already in use.
    Create2ReusedCircId,
    /// A CREATE2 whose circuit ID lacks the initiator's high bit.
    Create2LowCircId,
    /// A CREATE2 on circuit ID 0.
    Create2ZeroCircId,
}

impl CreateCase {
    const ALL: [CreateCase; 9] = [
        CreateCase::Create2HlenTooLong,
        CreateCase::Create2Tap,
        CreateCase::Create2NtorShort,
        CreateCase::Create2WrongNodeId,
        CreateCase::Create2UnknownKeyId,
        CreateCase::CreateTap,
        CreateCase::Create2ReusedCircId,
        CreateCase::Create2LowCircId,
        CreateCase::Create2ZeroCircId,
    ];

    fn name(self) -> &'static str {
        match self {
            CreateCase::Create2HlenTooLong => "CREATE2 with HLEN 506",
            CreateCase::Create2Tap => "CREATE2 with HTYPE 0 (TAP)",
            CreateCase::Create2NtorShort => "CREATE2 ntor with HLEN 83",
            CreateCase::Create2WrongNodeId => "CREATE2 ntor with a wrong NODEID",
            CreateCase::Create2UnknownKeyId => "CREATE2 ntor with an unknown KEYID",
            CreateCase::CreateTap => "CREATE (TAP)",
            CreateCase::Create2ReusedCircId => "CREATE2 on a circuit ID in use",
            CreateCase::Create2LowCircId => "CREATE2 on a circuit ID without the high bit",
            CreateCase::Create2ZeroCircId => "CREATE2 on circuit ID 0",
        }
    }

    /// C tor 0.4.9's answer.
    fn expected(self) -> Answer {
        match self {
            // command.c:command_process_create_cell: "for known circ.
            // Dropping", and "with zero circID; ignoring".
            CreateCase::Create2ReusedCircId | CreateCase::Create2ZeroCircId => Answer::Nothing,
            // onion_ntor.c: an unknown KEYID is answered with a junk key,
            // so the relay sends a CREATED2 whose AUTH the client rejects.
            CreateCase::Create2UnknownKeyId => Answer::Created2 { verifies: false },
            _ => Answer::Destroy(DESTROY_PROTOCOL),
        }
    }

    fn body(self, hop: &HopSpec) -> (ChanCmd, Vec<u8>, Option<NtorClientState>) {
        let create2 = |htype: u16, hlen: u16, hdata: &[u8]| {
            let mut b = Vec::new();
            b.extend_from_slice(&htype.to_be_bytes());
            b.extend_from_slice(&hlen.to_be_bytes());
            b.extend_from_slice(hdata);
            b
        };
        let raw = |htype: u16, hlen: u16, hdata: Vec<u8>| {
            (ChanCmd::CREATE2, create2(htype, hlen, &hdata), None)
        };
        let ntor = |id: [u8; 20], key: [u8; 32]| {
            let (st, hdata) = oxit::crypto::ntor::client_create(&mut rand::rng(), &id, &key);
            (ChanCmd::CREATE2, create2(2, 84, &hdata), Some(st))
        };
        match self {
            CreateCase::Create2HlenTooLong => raw(2, 506, vec![0x5a; 505]),
            CreateCase::Create2Tap => raw(0, 186, vec![0x5a; 186]),
            CreateCase::Create2NtorShort => raw(2, 83, vec![0x5a; 83]),
            CreateCase::Create2WrongNodeId => ntor([0x42; 20], hop.ntor_key),
            CreateCase::Create2UnknownKeyId => ntor(hop.rsa_id, [0x42; 32]),
            CreateCase::CreateTap => (ChanCmd::CREATE, vec![0x5a; 186], None),
            CreateCase::Create2ReusedCircId
            | CreateCase::Create2LowCircId
            | CreateCase::Create2ZeroCircId => ntor(hop.rsa_id, hop.ntor_key),
        }
    }

    fn run(self, addr: SocketAddr, hop: &HopSpec) -> Result<(), String> {
        let mut c = RawClient::connect(addr).map_err(s)?;
        let (cmd, body, state) = self.body(hop);
        let got = if let CreateCase::Create2ReusedCircId = self {
            let mut circ = c.create_fast(ANSWER).map_err(s)?;
            c.send_cell(circ.id, cmd, &body).map_err(s)?;
            let got = answer_on(&mut c, &mut circ, SILENCE)?;
            if got == Answer::Nothing {
                // The first circuit on that ID is untouched.
                circuit_answers(&mut c, Some(&mut circ))?;
            }
            got
        } else {
            let id = match self {
                CreateCase::Create2LowCircId => 0x0000_0101,
                CreateCase::Create2ZeroCircId => 0,
                _ => c.next_circ_id(),
            };
            c.send_cell(id, cmd, &body).map_err(s)?;
            let wait = if self.expected() == Answer::Nothing {
                SILENCE
            } else {
                ANSWER
            };
            answer_on_id(&mut c, id, wait, state)?
        };
        if got != self.expected() {
            return Err(format!("expected {:?}, got {got:?}", self.expected()));
        }
        // The channel survives a refused circuit, and so does the relay.
        circuit_answers(&mut c, None)?;
        alive(addr)
    }
}

/// What arrives for circuit `id` (no crypto yet) within `wait`.
fn answer_on_id(
    c: &mut RawClient,
    id: u32,
    wait: Duration,
    ntor: Option<NtorClientState>,
) -> Result<Answer, String> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match c.recv_cell(left) {
            Err(RawError::Closed(_)) => return Ok(Answer::Closed),
            Err(e) => return Err(e.to_string()),
            Ok(None) => return Ok(Answer::Nothing),
            Ok(Some(cell)) if cell.circ_id != id => {}
            Ok(Some(cell)) if cell.cmd == ChanCmd::DESTROY => {
                return Ok(Answer::Destroy(cell.body.first().copied().unwrap_or(0)));
            }
            Ok(Some(cell)) if cell.cmd == ChanCmd::CREATED2 => {
                let reply = Created2::decode(&cell.body).map_err(s)?;
                let verifies = ntor
                    .is_some_and(|st| oxit::crypto::ntor::client_finish(st, reply.hdata()).is_ok());
                return Ok(Answer::Created2 { verifies });
            }
            Ok(Some(cell)) => return Err(format!("unexpected {}", describe(&cell))),
        }
    }
}

/// What arrives on a built circuit within `wait`: DESTROY, an END from the
/// last hop, nothing, or a closed connection.
fn answer_on(
    c: &mut RawClient,
    circ: &mut oxit_interop::rawclient::Circ,
    wait: Duration,
) -> Result<Answer, String> {
    match c.recv_relay(circ, wait) {
        Err(RawError::Closed(_)) => Ok(Answer::Closed),
        Err(e) => Err(e.to_string()),
        Ok(None) => Ok(Answer::Nothing),
        Ok(Some(CircEvent::Destroy(r))) => Ok(Answer::Destroy(r)),
        Ok(Some(CircEvent::Relay {
            cmd: RelayCmd::END,
            data,
            ..
        })) => Ok(Answer::End(data.first().copied().unwrap_or(0))),
        Ok(Some(other)) => Err(format!("unexpected {other:?}")),
    }
}

fn create_cases(target: Target) {
    let net = Net::start(target, false);
    let hop = net.hop();
    let mut report = Report::new(target);
    for case in CreateCase::ALL {
        report.case(case.name(), case.run(net.addr(), &hop));
    }
    report.finish(&net);
}

#[test]
fn create_ctor() {
    create_cases(Target::CTor);
}

#[test]
fn create_oxit_io_uring() {
    create_cases(Target::Oxit(IoBackend::Uring));
}

#[test]
fn create_oxit_epoll() {
    create_cases(Target::Oxit(IoBackend::Epoll));
}

// --------------------------------------------------------------- relay

#[derive(Clone, Copy, Debug)]
enum RelayCase {
    /// EXTEND2 with NSPEC 0.
    Extend2NoLinkSpecs,
    /// EXTEND2 whose legacy-identity specifier is all zeros.
    Extend2ZeroRsaId,
    /// EXTEND2 asking for HTYPE 1 (CREATE_FAST) with a 20-byte X.
    Extend2HtypeFast,
    /// A well-formed EXTEND2 in a RELAY (not RELAY_EARLY) cell.
    Extend2NotEarly,
    /// A DROP cell whose ciphertext was altered: the digest fails at the
    /// last hop.
    BadDigest,
    /// Nine RELAY_EARLY cells (DROP) on one circuit; eight are allowed.
    NineRelayEarly,
    /// BEGIN "127.0.0.1:PORT" with no terminating NUL.
    BeginNoNul,
    /// BEGIN to port 0.
    BeginPort0,
    /// BEGIN to port 65536.
    BeginPort65536,
}

impl RelayCase {
    const ALL: [RelayCase; 9] = [
        RelayCase::Extend2NoLinkSpecs,
        RelayCase::Extend2ZeroRsaId,
        RelayCase::Extend2HtypeFast,
        RelayCase::Extend2NotEarly,
        RelayCase::BadDigest,
        RelayCase::NineRelayEarly,
        RelayCase::BeginNoNul,
        RelayCase::BeginPort0,
        RelayCase::BeginPort65536,
    ];

    fn name(self) -> &'static str {
        match self {
            RelayCase::Extend2NoLinkSpecs => "EXTEND2 with no link specifiers",
            RelayCase::Extend2ZeroRsaId => "EXTEND2 with a zero RSA identity",
            RelayCase::Extend2HtypeFast => "EXTEND2 with HTYPE 1",
            RelayCase::Extend2NotEarly => "EXTEND2 not in RELAY_EARLY",
            RelayCase::BadDigest => "relay cell with a bad digest at the last hop",
            RelayCase::NineRelayEarly => "nine RELAY_EARLY cells",
            RelayCase::BeginNoNul => "BEGIN without NUL",
            RelayCase::BeginPort0 => "BEGIN to port 0",
            RelayCase::BeginPort65536 => "BEGIN to port 65536",
        }
    }

    /// C tor 0.4.9's answer.
    fn expected(self) -> Answer {
        match self {
            RelayCase::Extend2NoLinkSpecs
            | RelayCase::Extend2ZeroRsaId
            | RelayCase::Extend2HtypeFast
            | RelayCase::BadDigest
            | RelayCase::NineRelayEarly => Answer::Destroy(DESTROY_PROTOCOL),
            RelayCase::Extend2NotEarly => Answer::Nothing,
            RelayCase::BeginNoNul | RelayCase::BeginPort0 | RelayCase::BeginPort65536 => {
                Answer::End(END_TORPROTOCOL)
            }
        }
    }

    fn run(self, net: &Net) -> Result<(), String> {
        match self {
            RelayCase::Extend2NoLinkSpecs
            | RelayCase::Extend2ZeroRsaId
            | RelayCase::Extend2HtypeFast
            | RelayCase::Extend2NotEarly => self.run_extend2(net),
            RelayCase::BadDigest | RelayCase::NineRelayEarly => self.run_one_hop(net),
            RelayCase::BeginNoNul | RelayCase::BeginPort0 | RelayCase::BeginPort65536 => {
                self.run_begin(net)
            }
        }
    }

    fn check(self, got: Answer) -> Result<(), String> {
        if got == self.expected() {
            Ok(())
        } else {
            Err(format!("expected {:?}, got {got:?}", self.expected()))
        }
    }

    fn run_extend2(self, net: &Net) -> Result<(), String> {
        let (addr, next) = net.extender();
        let SocketAddr::V4(next_v4) = next.addr else {
            return Err("next hop is not IPv4".into());
        };
        let mut c = RawClient::connect(addr).map_err(s)?;
        let mut circ = c.create_fast(ANSWER).map_err(s)?;
        let (_, onion) =
            oxit::crypto::ntor::client_create(&mut rand::rng(), &next.rsa_id, &next.ntor_key);
        // NSPEC | (LSTYPE LSLEN LSPEC)* | HTYPE | HLEN | HDATA, built by
        // hand so that any field can be wrong.
        let ipv4 = |b: &mut Vec<u8>| {
            b.extend_from_slice(&[0, 6]);
            b.extend_from_slice(&next_v4.ip().octets());
            b.extend_from_slice(&next_v4.port().to_be_bytes());
        };
        let legacy = |b: &mut Vec<u8>, id: &[u8; 20]| {
            b.extend_from_slice(&[2, 20]);
            b.extend_from_slice(id);
        };
        let ed = |b: &mut Vec<u8>| {
            b.extend_from_slice(&[3, 32]);
            b.extend_from_slice(&next.ed_id);
        };
        let mut data = Vec::new();
        let (htype, hdata): (u16, Vec<u8>) = match self {
            RelayCase::Extend2NoLinkSpecs => {
                data.push(0);
                (2, onion.to_vec())
            }
            RelayCase::Extend2ZeroRsaId => {
                data.push(2);
                ipv4(&mut data);
                legacy(&mut data, &[0; 20]);
                (2, onion.to_vec())
            }
            RelayCase::Extend2HtypeFast => {
                data.push(3);
                ipv4(&mut data);
                legacy(&mut data, &next.rsa_id);
                ed(&mut data);
                (1, vec![0x5a; 20])
            }
            _ => {
                data.push(3);
                ipv4(&mut data);
                legacy(&mut data, &next.rsa_id);
                ed(&mut data);
                (2, onion.to_vec())
            }
        };
        data.extend_from_slice(&htype.to_be_bytes());
        data.extend_from_slice(&u16::try_from(hdata.len()).unwrap_or(0).to_be_bytes());
        data.extend_from_slice(&hdata);
        let early = !matches!(self, RelayCase::Extend2NotEarly);
        c.send_relay(&mut circ, 0, early, RelayCmd::EXTEND2, 0, &data)
            .map_err(s)?;
        // A refused extension can take a moment (the next hop is contacted
        // first, or the handshake is checked on a worker thread).
        let wait = if self.expected() == Answer::Nothing {
            SILENCE
        } else {
            ANSWER
        };
        let got = answer_on(&mut c, &mut circ, wait)?;
        self.check(got)?;
        if got == Answer::Nothing {
            circuit_answers(&mut c, Some(&mut circ))?;
        }
        circuit_answers(&mut c, None)?;
        alive(addr)
    }

    fn run_one_hop(self, net: &Net) -> Result<(), String> {
        let addr = net.addr();
        let mut c = RawClient::connect(addr).map_err(s)?;
        let mut circ = c.create_fast(ANSWER).map_err(s)?;
        let got = match self {
            RelayCase::BadDigest => {
                let mut body = c
                    .seal_relay(&mut circ, 0, RelayCmd::DROP, 0, b"padding")
                    .map_err(s)?;
                // Flip a bit inside the data: after decryption the digest no
                // longer matches, so the cell is not recognized.
                if let Some(b) = body.get_mut(100) {
                    *b ^= 0x01;
                }
                c.send_sealed(&mut circ, false, &body).map_err(s)?;
                answer_on(&mut c, &mut circ, ANSWER)?
            }
            _ => {
                for i in 0..8 {
                    c.send_relay(&mut circ, 0, true, RelayCmd::DROP, 0, b"early")
                        .map_err(s)?;
                    let _ = i;
                }
                // Eight are within the limit: nothing happens.
                let after8 = answer_on(&mut c, &mut circ, SILENCE)?;
                if after8 != Answer::Nothing {
                    return Err(format!("after eight RELAY_EARLY: {after8:?}"));
                }
                c.send_relay(&mut circ, 0, true, RelayCmd::DROP, 0, b"early")
                    .map_err(s)?;
                answer_on(&mut c, &mut circ, ANSWER)?
            }
        };
        self.check(got)?;
        circuit_answers(&mut c, None)?;
        alive(addr)
    }

    fn run_begin(self, net: &Net) -> Result<(), String> {
        let mut c = RawClient::connect(net.middle().or_addr()).map_err(s)?;
        let mut circ = c.create_fast(ANSWER).map_err(s)?;
        c.extend2_ntor(&mut circ, &net.hop(), ANSWER).map_err(s)?;
        let http = net.http.addr().port();
        let data: Vec<u8> = match self {
            RelayCase::BeginNoNul => format!("127.0.0.1:{http}").into_bytes(),
            RelayCase::BeginPort0 => b"127.0.0.1:0\0".to_vec(),
            _ => b"127.0.0.1:65536\0".to_vec(),
        };
        let stream = 5;
        c.send_relay(&mut circ, 1, false, RelayCmd::BEGIN, stream, &data)
            .map_err(s)?;
        let got = answer_on(&mut c, &mut circ, ANSWER)?;
        self.check(got)?;
        // The circuit goes on: a good BEGIN to the HTTP server connects.
        let good = relay_data(
            &oxit::proto::relay_msg::Begin::new(
                "127.0.0.1",
                http,
                oxit::proto::relay_msg::BeginFlags::new(0),
            )
            .map_err(s)?,
        )
        .map_err(s)?;
        c.send_relay(&mut circ, 1, false, RelayCmd::BEGIN, stream + 1, &good)
            .map_err(s)?;
        match c.recv_relay(&mut circ, ANSWER) {
            Ok(Some(CircEvent::Relay {
                hop: 1,
                cmd: RelayCmd::CONNECTED,
                ..
            })) => {}
            other => return Err(format!("good BEGIN after the bad one: {other:?}")),
        }
        alive(net.addr())
    }
}

/// Flood circuit `loud` with relay cells of random bodies (the extender
/// does not recognize them and forwards each one) until the relay
/// destroys it or [`FLOOD_CELLS`] went out, then wait for the DESTROY.
/// Returns its reason; a DESTROY of `quiet` is an error.
fn flood_until_destroyed(
    c: &mut RawClient,
    loud: u32,
    quiet: Option<u32>,
) -> Result<Option<u8>, String> {
    let mut destroyed = None;
    let look = |cell: Option<oxit_interop::rawclient::Cell>,
                destroyed: &mut Option<u8>|
     -> Result<(), String> {
        if let Some(cell) = cell.filter(|c| c.cmd == ChanCmd::DESTROY) {
            if Some(cell.circ_id) == quiet {
                return Err("the quiet circuit was destroyed".into());
            }
            if cell.circ_id == loud {
                *destroyed = cell.body.first().copied();
            }
        }
        Ok(())
    };
    let mut body = [0u8; 509];
    for i in 0..FLOOD_CELLS {
        rand::fill(&mut body[..]);
        c.send_cell(loud, ChanCmd::RELAY, &body)
            .map_err(|e| format!("flood cell {i}: {e}"))?;
        if i % 1000 == 999 {
            while let Some(cell) = c.recv_cell(Duration::from_millis(1)).map_err(s)? {
                look(Some(cell), &mut destroyed)?;
            }
            if destroyed.is_some() {
                return Ok(destroyed);
            }
        }
    }
    let deadline = std::time::Instant::now() + ANSWER;
    while destroyed.is_none() && std::time::Instant::now() < deadline {
        let cell = c.recv_cell(ANSWER).map_err(s)?;
        look(cell, &mut destroyed)?;
    }
    Ok(destroyed)
}

/// A client floods a circuit toward a next hop that stopped reading
/// (frozen with SIGSTOP): the extender closes that circuit with DESTROY
/// RESOURCELIMIT once its queue passes `circ_max_cell_queue_size`
/// (relay.c:append_cell_to_circuit_queue), and nothing else: the client's
/// link serves a new circuit, and once the next hop runs again the link to
/// it carries a new extension.
fn flood_toward_frozen_next_hop(net: &Net) -> Result<(), String> {
    let (addr, next) = net.extender();
    let mut c = RawClient::connect(addr).map_err(s)?;
    let mut circ = c.create_fast(ANSWER).map_err(s)?;
    c.extend2_ntor(&mut circ, &next, ANSWER).map_err(s)?;
    net.next_process().pause();
    let res = (|| {
        let destroyed = flood_until_destroyed(&mut c, circ.id, None)?;
        match destroyed {
            Some(DESTROY_RESOURCELIMIT) => {}
            other => return Err(format!("expected DESTROY RESOURCELIMIT, got {other:?}")),
        }
        circuit_answers(&mut c, None).map_err(|e| format!("same link, new circuit: {e}"))
    })();
    net.next_process().resume();
    res?;
    let mut circ = c.create_fast(ANSWER).map_err(s)?;
    c.extend2_ntor(&mut circ, &next, Duration::from_secs(20))
        .map_err(|e| format!("extending again after the next hop resumed: {e}"))
}

/// oxit only: many circuits flood toward a frozen next hop, each staying
/// under `circ_max_cell_queue_size`, until the link to it holds more than
/// oxit's per-link limit. oxit closes the circuits with more than 1250
/// cells waiting (DESTROY RESOURCELIMIT) and keeps the link: a quiet
/// circuit on it reaches the next hop again once that relay runs. C tor
/// has no per-link limit (its OOM handler looks at total memory), so this
/// case has no C reference.
fn link_flood_spares_quiet_circuits(net: &Net, oxit: &OxitProcess) -> Result<(), String> {
    let (addr, next) = net.extender();
    let mut c = RawClient::connect(addr).map_err(s)?;
    let mut quiet = c.create_fast(ANSWER).map_err(s)?;
    c.extend2_ntor(&mut quiet, &next, ANSWER).map_err(s)?;
    let mut loud = Vec::new();
    for _ in 0..LOUD_CIRCUITS {
        let mut circ = c.create_fast(ANSWER).map_err(s)?;
        c.extend2_ntor(&mut circ, &next, ANSWER).map_err(s)?;
        loud.push(circ.id);
    }
    net.next_process().pause();
    let res = (|| {
        let mut body = [0u8; 509];
        let mut destroyed = std::collections::HashMap::new();
        let collect = |c: &mut RawClient,
                       destroyed: &mut std::collections::HashMap<u32, u8>,
                       wait: Duration|
         -> Result<(), String> {
            while let Some(cell) = c.recv_cell(wait).map_err(s)? {
                if cell.cmd != ChanCmd::DESTROY {
                    continue;
                }
                let reason = cell.body.first().copied().unwrap_or(0);
                if cell.circ_id == quiet.id {
                    return Err(format!("the quiet circuit got DESTROY {reason}"));
                }
                destroyed.insert(cell.circ_id, reason);
            }
            Ok(())
        };
        for round in 0..LOUD_CELLS_EACH {
            for &id in &loud {
                if destroyed.contains_key(&id) {
                    continue;
                }
                rand::fill(&mut body[..]);
                c.send_cell(id, ChanCmd::RELAY, &body)
                    .map_err(|e| format!("flood round {round}: {e}"))?;
            }
            if round % 25 == 24 {
                collect(&mut c, &mut destroyed, Duration::from_millis(1))?;
                if !destroyed.is_empty() {
                    break;
                }
            }
        }
        collect(&mut c, &mut destroyed, ANSWER)?;
        if destroyed.is_empty() {
            return Err("no flooding circuit was closed".into());
        }
        if let Some((id, r)) = destroyed.iter().find(|(_, r)| **r != DESTROY_RESOURCELIMIT) {
            return Err(format!(
                "circuit {id:#x} got DESTROY {r}, not RESOURCELIMIT"
            ));
        }
        Ok(())
    })();
    net.next_process().resume();
    res?;
    // The link to the next hop survived: the quiet circuit still reaches it.
    c.send_relay(&mut quiet, 1, false, RelayCmd::BEGIN_DIR, 9, &[])
        .map_err(s)?;
    match c
        .recv_relay(&mut quiet, Duration::from_secs(30))
        .map_err(s)?
    {
        Some(CircEvent::Relay {
            hop: 1, stream: 9, ..
        }) => {}
        other => return Err(format!("quiet circuit after the flood: {other:?}")),
    }
    let closed = oxit.log_count("peer is not reading");
    if closed > 0 {
        return Err(format!("oxit closed {closed} link(s) instead of circuits"));
    }
    Ok(())
}

/// The log line of a circuit extended over another worker's channel.
const SPLICED: &str = "extending over another worker's channel";
/// Client links tried until one lands on the other worker (each does with
/// probability 1/2).
const SPLICE_TRIES: usize = 24;

/// oxit only: two circuits that ride another worker's channel to the next
/// hop (spliced), from one client link. One floods toward the frozen next
/// hop; the cap on cells in flight between workers closes it (DESTROY
/// RESOURCELIMIT) and only it: the quiet one reaches the next hop again
/// once that relay runs. C tor has no workers; its answer to a flooding
/// circuit is the "flood toward a frozen next hop" case.
fn spliced_flood_spares_quiet_circuit(net: &Net, oxit: &OxitProcess) -> Result<(), String> {
    let (addr, next) = net.extender();
    // A first link makes oxit open its channel to the next hop on the
    // worker that link landed on.
    let mut first = RawClient::connect(addr).map_err(s)?;
    let mut opener = first.create_fast(ANSWER).map_err(s)?;
    first.extend2_ntor(&mut opener, &next, ANSWER).map_err(s)?;
    let before = oxit.log_count(SPLICED);
    let mut spliced = None;
    for _ in 0..SPLICE_TRIES {
        let mut c = RawClient::connect(addr).map_err(s)?;
        let mut circ = c.create_fast(ANSWER).map_err(s)?;
        c.extend2_ntor(&mut circ, &next, ANSWER).map_err(s)?;
        if oxit.log_count(SPLICED) > before {
            spliced = Some((c, circ));
            break;
        }
    }
    let Some((mut c, mut quiet)) = spliced else {
        return Err(format!(
            "no link landed on the other worker in {SPLICE_TRIES} tries"
        ));
    };
    // A second circuit on the same link is spliced too.
    let mut loud = c.create_fast(ANSWER).map_err(s)?;
    c.extend2_ntor(&mut loud, &next, ANSWER).map_err(s)?;
    net.next_process().pause();
    let res = (|| {
        let destroyed = flood_until_destroyed(&mut c, loud.id, Some(quiet.id))?;
        match destroyed {
            Some(DESTROY_RESOURCELIMIT) => Ok(()),
            other => Err(format!("expected DESTROY RESOURCELIMIT, got {other:?}")),
        }
    })();
    net.next_process().resume();
    res?;
    c.send_relay(&mut quiet, 1, false, RelayCmd::BEGIN_DIR, 9, &[])
        .map_err(s)?;
    loop {
        match c
            .recv_relay(&mut quiet, Duration::from_secs(30))
            .map_err(s)?
        {
            Some(CircEvent::Relay {
                hop: 1, stream: 9, ..
            }) => return Ok(()),
            // The flooded circuit's answers from before, if any.
            Some(CircEvent::Unrecognized) => continue,
            other => return Err(format!("quiet spliced circuit after the flood: {other:?}")),
        }
    }
}

fn relay_cases(target: Target) {
    let net = Net::start(target, true);
    let mut report = Report::new(target);
    for case in RelayCase::ALL {
        report.case(case.name(), case.run(&net));
    }
    // Last: they freeze a relay for a while.
    report.case(
        "flood toward a frozen next hop",
        flood_toward_frozen_next_hop(&net),
    );
    if let Some(oxit) = &net.oxit {
        report.case(
            "many circuits flood toward a frozen next hop",
            link_flood_spares_quiet_circuits(&net, oxit),
        );
        report.case(
            "a spliced circuit floods beside a quiet spliced one",
            spliced_flood_spares_quiet_circuit(&net, oxit),
        );
    }
    report.finish(&net);
}

#[test]
fn relay_ctor() {
    relay_cases(Target::CTor);
}

#[test]
fn relay_oxit_io_uring() {
    relay_cases(Target::Oxit(IoBackend::Uring));
}

#[test]
fn relay_oxit_epoll() {
    relay_cases(Target::Oxit(IoBackend::Epoll));
}
