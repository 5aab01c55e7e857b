//! The exit side of streams: what a recognized stream cell does, and what
//! the worker's DNS, connect and socket events do to a stream.

use std::cmp::Reverse;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::CryptoRng;

use super::{
    FlowOut, MAX_OPTIMISTIC_BYTES, MAX_QUEUED_CELLS_FOR_SENDME, MAX_STREAMS_PER_CIRCUIT,
    STREAM_SETUP_TIMEOUT, STREAMWINDOW_INCREMENT, STREAMWINDOW_START, Stream, StreamState,
};
use crate::exit::dns::{
    Answer, DEFAULT_DNS_TTL, MIN_DNS_TTL, Purpose, QueryKind, ResolveError, Target,
    classify_address, clip_dns_ttl,
};
use crate::proto::cell::DestroyReason;
use crate::proto::circuit::{
    Action, CircIdx, CircuitTable, PeerKind, StreamKey, errno_to_end_reason,
};
use crate::proto::dos::StreamDefense;
use crate::proto::relay_msg::{
    Begin, BeginTarget, Connected, End, EndReason, RelayBody, RelayCmd, Resolve, Resolved,
    ResolvedVal, Sendme, StreamId,
};

/// What [`CircuitTable::admit_stream`] decided.
enum Admit {
    Yes,
    /// Answer the BEGIN or RESOLVE with a refusal.
    Refuse,
    /// The circuit was closed.
    CircuitClosed,
}

impl CircuitTable {
    /// A recognized cell with a non-zero StreamID, other than DATA.
    pub(crate) fn stream_cell(
        &mut self,
        idx: CircIdx,
        cmd: RelayCmd,
        sid: StreamId,
        data: &[u8],
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let existing = self.find_stream(idx, sid);
        match cmd {
            RelayCmd::BEGIN | RelayCmd::BEGIN_DIR | RelayCmd::RESOLVE if existing.is_some() => {
                // "Begin cell for known stream. Dropping." (relay.c)
            }
            // "If we're hibernating or shutting down, we refuse to open new
            // streams" (connection_edge.c); C resolves all the same.
            RelayCmd::BEGIN | RelayCmd::BEGIN_DIR if self.cfg.hibernating => {
                self.send_end(idx, sid, &End::new(EndReason::HIBERNATING), rng);
            }
            RelayCmd::BEGIN => self.begin(idx, sid, data, now, rng),
            RelayCmd::BEGIN_DIR => {
                // We serve no directory data (§5.5).
                self.send_end(idx, sid, &End::new(EndReason::NOTDIRECTORY), rng);
            }
            RelayCmd::RESOLVE => self.resolve(idx, sid, data, now, rng),
            RelayCmd::END => {
                if let Some(key) = existing {
                    // Close the socket, send nothing more (§5.3); queued
                    // optimistic data goes with the stream.
                    self.remove_stream(key);
                    self.push_action(Action::CloseStream { key });
                }
            }
            RelayCmd::SENDME => {
                let Some(key) = existing else { return };
                if self.circuit_uses_cc(idx) {
                    // Streams of a congestion-controlled circuit have no
                    // windows: C tor closes the circuit
                    // (sendme.c:sendme_process_stream_level).
                    self.close_protocol(idx);
                    return;
                }
                let Some(s) = self.streams.get_mut(&key) else {
                    return;
                };
                s.package += STREAMWINDOW_INCREMENT;
                if s.package > STREAMWINDOW_START {
                    // sendme.c:sendme_process_stream_level.
                    self.close_protocol(idx);
                    return;
                }
                self.resume_streams(idx);
            }
            RelayCmd::XOFF => {
                if let Some(key) = existing {
                    self.stream_xoff(idx, key);
                }
            }
            RelayCmd::XON => {
                if let Some(key) = existing {
                    self.stream_xon(idx, key, data);
                }
            }
            // CONNECTED, RESOLVED, unknown commands: not for an exit; drop.
            _ => {}
        }
    }

    fn begin(
        &mut self,
        idx: CircIdx,
        sid: StreamId,
        data: &[u8],
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let begin = match Begin::decode(data) {
            Ok(b) => b,
            Err(e) => {
                self.send_end(idx, sid, &End::new(e.end_reason()), rng);
                return;
            }
        };
        // No one-hop proxying, no exits for unknown relays
        // (connection_exit_begin_conn).
        let Some(c) = self.circs.get(&idx) else {
            return;
        };
        let peer = self.chans.get(&c.prev_chan).and_then(|i| i.peer);
        let refusal = match peer {
            None | Some(PeerKind::Client) => Some(EndReason::TORPROTOCOL),
            Some(PeerKind::Relay { rsa_id, .. })
                if self.cfg.refuse_unknown_exits && !self.cfg.known_relays.contains(&rsa_id) =>
            {
                Some(EndReason::MISC)
            }
            Some(PeerKind::Relay { .. }) => None,
        };
        if let Some(r) = refusal {
            self.send_end(idx, sid, &End::new(r), rng);
            return;
        }
        let Some(kind) = QueryKind::for_begin(begin.flags().bits(), self.cfg.ipv6_exit) else {
            self.send_end(idx, sid, &End::new(EndReason::EXITPOLICY), rng);
            return;
        };
        match self.admit_stream(idx, now) {
            Admit::Yes => {}
            // MISC, not RESOURCELIMIT: that would make clients think the
            // exit broken (connection_edge.c).
            Admit::Refuse => return self.send_end(idx, sid, &End::new(EndReason::MISC), rng),
            Admit::CircuitClosed => return,
        }
        if self.circs.get(&idx).is_some_and(|c| c.conflux) {
            tracing::debug!(stream = sid.get(), "exit stream on a conflux set");
        }
        let key = self.new_stream(idx, sid, StreamState::Resolving, now);
        if let Some(s) = self.streams.get_mut(&key) {
            s.port = begin.port();
            s.flags = begin.flags();
        }
        match begin.target() {
            BeginTarget::Ipv4(a) => {
                self.policy_then_connect(key, IpAddr::V4(*a), clip_dns_ttl(DEFAULT_DNS_TTL), rng)
            }
            BeginTarget::Ipv6(a) => {
                self.policy_then_connect(key, IpAddr::V6(*a), clip_dns_ttl(DEFAULT_DNS_TTL), rng)
            }
            BeginTarget::Hostname(h) => {
                let query = classify_address(h, Purpose::Connect)
                    .ok()
                    .and_then(|t| t.query(kind));
                match query {
                    Some(query) => self.push_action(Action::Resolve { key, query }),
                    None => self.end_stream(key, &End::new(EndReason::RESOLVEFAILED), false, rng),
                }
            }
        }
    }

    fn resolve(
        &mut self,
        idx: CircIdx,
        sid: StreamId,
        data: &[u8],
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        // Counted on arrival, as connection_exit_begin_resolve does.
        self.exit_streams.resolve += 1;
        match self.admit_stream(idx, now) {
            Admit::Yes => {}
            Admit::Refuse => {
                let msg = Resolved::error(true, MIN_DNS_TTL);
                self.send_back(idx, sid, &msg, rng);
                return;
            }
            Admit::CircuitClosed => return,
        }
        let target = Resolve::decode(data)
            .ok()
            .and_then(|r| classify_address(r.name(), Purpose::Resolve).ok());
        let query = match target {
            None => {
                let msg = Resolved::error(false, MIN_DNS_TTL);
                self.send_back(idx, sid, &msg, rng);
                return;
            }
            Some(Target::Ip(ip)) => {
                let mut msg = Resolved::new();
                let _ = msg.push(ResolvedVal::Ip(ip), clip_dns_ttl(DEFAULT_DNS_TTL));
                self.send_back(idx, sid, &msg, rng);
                return;
            }
            Some(t) => t.query(QueryKind::Ipv4ThenIpv6),
        };
        let Some(query) = query else { return };
        let key = self.new_stream(idx, sid, StreamState::ResolveOnly, now);
        self.push_action(Action::Resolve { key, query });
    }

    /// May the circuit open another stream (BEGIN or RESOLVE)? Not past
    /// [`MAX_STREAMS_PER_CIRCUIT`], and not without a token from its
    /// DoSStreamCreation bucket (dos_stream_new_begin_or_resolve_cell; a
    /// refusal takes no token). With defense type 3 the circuit is closed
    /// here (RESOURCELIMIT).
    fn admit_stream(&mut self, idx: CircIdx, now: Instant) -> Admit {
        let p = &self.cfg.dos;
        let Some(c) = self.circs.get_mut(&idx) else {
            return Admit::CircuitClosed;
        };
        let limited = p.stream_enabled && {
            c.stream_limiter.refill(crate::proto::dos::secs32(now));
            !c.stream_limiter.take()
        };
        let full = c.streams.len() >= MAX_STREAMS_PER_CIRCUIT;
        if !limited && !full {
            return Admit::Yes;
        }
        self.dos.counters.stream_rejected += 1;
        match (limited, p.stream_defense) {
            (true, StreamDefense::CloseCircuit) => {
                let r = Some(DestroyReason::RESOURCELIMIT);
                self.close_circuit(idx, r, r);
                Admit::CircuitClosed
            }
            (true, StreamDefense::None) if !full => Admit::Yes,
            _ => Admit::Refuse,
        }
    }

    fn new_stream(
        &mut self,
        idx: CircIdx,
        sid: StreamId,
        state: StreamState,
        now: Instant,
    ) -> StreamKey {
        let key = StreamKey(self.alloc_key());
        self.streams.insert(key, Stream::new(idx, sid, state));
        if let Some(c) = self.circs.get_mut(&idx) {
            c.streams.insert(sid, key);
        }
        self.deadlines
            .push(Reverse((now + STREAM_SETUP_TIMEOUT, key)));
        // Deadlines of streams that ended are dropped lazily; a client that
        // opens and ends streams quickly must not grow the heap without
        // bound, so compact it when dead entries dominate (amortised O(1)).
        if self.deadlines.len() > 2 * self.streams.len() + 1024 {
            let streams = &self.streams;
            self.deadlines
                .retain(|Reverse((_, k))| streams.contains_key(k));
        }
        key
    }

    pub(crate) fn remove_stream(&mut self, key: StreamKey) -> Option<Stream> {
        let s = self.streams.remove(&key)?;
        if let Some(c) = self.circs.get_mut(&s.circ) {
            c.streams.remove(&s.id);
        }
        Some(s)
    }

    fn send_end(&mut self, idx: CircIdx, sid: StreamId, end: &End, rng: &mut impl CryptoRng) {
        self.send_back(idx, sid, end, rng);
    }

    /// Optimistic data held by streams not yet connected, in bytes (for
    /// `MaxMemInQueues`; one pass over the streams).
    pub fn optimistic_bytes(&self) -> usize {
        self.streams.values().map(|s| s.pending.len()).sum()
    }

    /// Streams holding optimistic data: (stream, bytes, since when), for
    /// the OOM handler.
    pub fn optimistic_streams(&self) -> Vec<(StreamKey, usize, Option<Instant>)> {
        self.streams
            .iter()
            .filter(|(_, s)| !s.pending.is_empty())
            .map(|(k, s)| (*k, s.pending.len(), s.pending_since))
            .collect()
    }

    /// The optimistic data `key` holds, in bytes.
    pub fn optimistic_bytes_of(&self, key: StreamKey) -> Option<usize> {
        self.streams.get(&key).map(|s| s.pending.len())
    }

    /// The OOM handler closes this stream: END RESOURCELIMIT to the client.
    /// The worker drops the socket and what it held itself.
    pub fn end_stream_for_memory(&mut self, key: StreamKey, rng: &mut impl CryptoRng) {
        self.end_stream(key, &End::new(EndReason::RESOURCELIMIT), true, rng);
    }

    /// END a stream we hold; `close` also tells the worker to drop its
    /// socket or lookup.
    fn end_stream(&mut self, key: StreamKey, end: &End, close: bool, rng: &mut impl CryptoRng) {
        if let Some(s) = self.remove_stream(key) {
            self.send_end(s.circ, s.id, end, rng);
            if close {
                self.push_action(Action::CloseStream { key });
            }
        }
    }

    /// Exit policy on the (resolved) address, then connect
    /// (connection_exit_connect → my_exit_policy_rejects).
    /// `ttl` is already clipped (an [`Answer::ttl`] is; clipping twice
    /// would turn 300 into 3600).
    fn policy_then_connect(
        &mut self,
        key: StreamKey,
        ip: IpAddr,
        ttl: u32,
        rng: &mut impl CryptoRng,
    ) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        let port = s.port;
        let v6_refused = ip.is_ipv6() && !self.cfg.ipv6_exit;
        // C counts both refusals below as rejected Exit connections
        // (connection_exit_connect → rep_hist_note_conn_rejected); by the
        // destination's family here, where C's not yet connected stream
        // still says AF_INET for an IPv6 one.
        let family = usize::from(ip.to_canonical().is_ipv6());
        if v6_refused || !self.cfg.exit_policy.allows(ip, port) || ip.is_unspecified() {
            self.exit_streams.rejected[family] += 1;
            self.end_stream(key, &End::exit_policy(ip, ttl), false, rng);
            return;
        }
        // No Tor over Tor: refuse a known relay's ORPort (or an
        // authority's ports) unless the consensus allows re-entry.
        if !self.cfg.allow_network_reentry && self.cfg.reentry.contains(&SocketAddr::new(ip, port))
        {
            self.exit_streams.rejected[family] += 1;
            self.end_stream(key, &End::new(EndReason::CONNECTREFUSED), false, rng);
            return;
        }
        s.addr = Some(ip);
        s.ttl = ttl;
        s.state = StreamState::Connecting;
        // C counts a BEGIN once it passed the policy and re-entry checks
        // (connection_exit_connect).
        self.exit_streams.begin += 1;
        self.push_action(Action::Connect {
            key,
            addr: SocketAddr::new(ip, port),
        });
    }

    /// The DNS answer for a BEGIN or RESOLVE.
    pub fn handle_resolved(
        &mut self,
        key: StreamKey,
        res: Result<Answer, ResolveError>,
        _now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let Some(s) = self.streams.get(&key) else {
            return;
        };
        match (s.state, res) {
            (StreamState::Resolving, Ok(ans)) => {
                let ipv4_ok = !s.flags.ipv4_not_ok();
                let ipv6_ok = self.cfg.ipv6_exit && s.flags.ipv6_ok();
                let prefer6 = ipv6_ok && s.flags.ipv6_preferred();
                let v4 = ans.addrs.iter().find(|a| a.is_ipv4() && ipv4_ok);
                let v6 = ans.addrs.iter().find(|a| a.is_ipv6() && ipv6_ok);
                let pick = if prefer6 { v6.or(v4) } else { v4.or(v6) };
                match pick {
                    Some(ip) => self.policy_then_connect(key, *ip, ans.ttl, rng),
                    None => self.end_stream(key, &End::new(EndReason::RESOLVEFAILED), false, rng),
                }
            }
            (StreamState::Resolving, Err(e)) => {
                tracing::debug!("BEGIN resolve failed: {e}");
                self.end_stream(key, &End::new(EndReason::RESOLVEFAILED), false, rng);
            }
            (StreamState::ResolveOnly, res) => {
                let Some(s) = self.remove_stream(key) else {
                    return;
                };
                let msg = resolved_msg(res);
                self.send_back(s.circ, s.id, &msg, rng);
            }
            _ => {}
        }
    }

    /// The TCP connect finished (or failed).
    pub fn handle_connected(
        &mut self,
        key: StreamKey,
        res: io::Result<SocketAddr>,
        _now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if s.state != StreamState::Connecting {
            return;
        }
        if let Err(e) = res {
            if matches!(
                e.raw_os_error(),
                Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE)
            ) {
                self.exit_streams.tcp_exhaustion += 1;
            }
            let reason = errno_to_end_reason(&e);
            self.end_stream(key, &End::new(reason), true, rng);
            return;
        }
        s.state = StreamState::Open;
        let (circ, sid) = (s.circ, s.id);
        let msg = s
            .addr
            .and_then(|a| Connected::new(a, s.ttl).ok())
            .unwrap_or_else(Connected::empty);
        let pending = std::mem::take(&mut s.pending);
        s.pending_since = None;
        self.send_back(circ, sid, &msg, rng);
        if !pending.is_empty() {
            if let Some(s) = self.streams.get_mut(&key) {
                s.queued_cells += 1;
            }
            self.push_action(Action::StreamWrite { key, data: pending });
        }
        self.consider_stream_sendme(key, rng);
    }

    /// The client asks us to stop reading the destination
    /// (congestion_control_flow.c:circuit_process_stream_xoff, exit side:
    /// the body is not parsed; on a circuit without congestion control, or
    /// a second XOFF, it is ignored, never fatal).
    fn stream_xoff(&mut self, idx: CircIdx, key: StreamKey) {
        if !self.circuit_uses_cc(idx) {
            return;
        }
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if s.xoff_received {
            return;
        }
        tracing::debug!(stream = s.id.get(), "XOFF from the client: reads stop");
        s.xoff_received = true;
        if !s.paused {
            s.paused = true;
            self.push_action(Action::PauseRead { key });
        }
    }

    /// The client lets us read the destination again
    /// (circuit_process_stream_xon): `version(1) = 0 | kbps_ewma(4)`; a
    /// malformed XON is ignored. The rate advisory is not applied: reads
    /// are paced by the circuit's congestion window.
    fn stream_xon(&mut self, idx: CircIdx, key: StreamKey, data: &[u8]) {
        if !self.circuit_uses_cc(idx) || data.len() < 5 || data.first() != Some(&0) {
            return;
        }
        let may = self.may_package(idx);
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if !s.xoff_received {
            return;
        }
        tracing::debug!(stream = s.id.get(), "XON from the client: reads resume");
        s.xoff_received = false;
        if s.paused && may {
            s.paused = false;
            self.push_action(Action::ResumeRead { key });
        }
    }

    /// DATA for our hop on stream `sid` (the circuit window is already
    /// accounted for).
    pub(crate) fn stream_data(
        &mut self,
        idx: CircIdx,
        sid: StreamId,
        data: &[u8],
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let Some(key) = self.find_stream(idx, sid) else {
            return; // "data cell dropped, unknown stream"
        };
        let cc = self.circuit_uses_cc(idx);
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        // With congestion control, stream windows are not used
        // (sendme.c:sendme_stream_data_received).
        if !cc {
            s.deliver -= 1;
            if s.deliver < 0 {
                // "conn deliver_window below 0. Killing." (relay.c)
                self.close_protocol(idx);
                return;
            }
        }
        match s.state {
            StreamState::Open => {
                s.queued_cells += 1;
                self.push_stream_write(key, data);
                self.consider_stream_sendme(key, rng);
            }
            StreamState::Resolving | StreamState::Connecting => {
                // Optimistic data: kept until CONNECTED (§5.1).
                if s.pending.len() + data.len() > MAX_OPTIMISTIC_BYTES {
                    self.close_protocol(idx);
                    return;
                }
                s.pending.extend_from_slice(data);
                s.pending_since.get_or_insert(now);
            }
            StreamState::ResolveOnly => {}
        }
    }

    /// Stream SENDME when the deliver window is low and the socket keeps
    /// up (sendme.c:sendme_connection_edge_consider_sending).
    fn consider_stream_sendme(&mut self, key: StreamKey, rng: &mut impl CryptoRng) {
        loop {
            let Some(s) = self.streams.get_mut(&key) else {
                return;
            };
            if s.state != StreamState::Open
                || s.deliver > STREAMWINDOW_START - STREAMWINDOW_INCREMENT
                || self.circs.get(&s.circ).is_some_and(|c| c.windows.uses_cc())
                || s.queued_cells >= MAX_QUEUED_CELLS_FOR_SENDME
            {
                return;
            }
            s.deliver += STREAMWINDOW_INCREMENT;
            let (circ, sid) = (s.circ, s.id);
            // Stream SENDMEs carry no body (§5.7).
            if self.send_back(circ, sid, &Sendme::V0, rng).is_none() {
                return;
            }
        }
    }

    /// Bytes read from an exit socket → DATA cells within the windows.
    /// Returns how many bytes were taken; on a short take the worker keeps
    /// the rest and waits for [`Action::ResumeRead`].
    pub fn handle_stream_data(
        &mut self,
        key: StreamKey,
        data: &[u8],
        now: Instant,
        rng: &mut impl CryptoRng,
    ) -> usize {
        let Some(s) = self.streams.get(&key) else {
            return 0;
        };
        if s.state != StreamState::Open {
            return 0;
        }
        let (idx, sid, stream_window, xoff) = (s.circ, s.id, s.package, s.xoff_received);
        // A congestion-controlled circuit's streams have no windows.
        let cc = self.circuit_uses_cc(idx);
        if xoff || (!cc && stream_window <= 0) || !self.may_package(idx) {
            return self.paused_after(key, 0, data.len());
        }
        let max = if cc {
            usize::MAX
        } else {
            stream_window as usize
        };
        let (cells, taken) = self.package_data(idx, sid, data, max, now, rng);
        if !cc && let Some(s) = self.streams.get_mut(&key) {
            s.package -= cells as i32;
        }
        self.paused_after(key, taken, data.len())
    }

    /// After packaging `taken` of `len` bytes: pause the stream if it
    /// could not take everything.
    fn paused_after(&mut self, key: StreamKey, taken: usize, len: usize) -> usize {
        if taken < len
            && let Some(s) = self.streams.get_mut(&key)
            && !s.paused
        {
            s.paused = true;
            self.push_action(Action::PauseRead { key });
        }
        taken
    }

    /// Resume the paused streams of a circuit whose windows reopened.
    pub(crate) fn resume_streams(&mut self, idx: CircIdx) {
        if !self.may_package(idx) {
            return;
        }
        let mut keys = self.set_streams(idx);
        keys.sort_unstable();
        for key in keys {
            if let Some(s) = self.streams.get_mut(&key)
                && s.paused
                && s.package > 0
                && !s.xoff_received
            {
                s.paused = false;
                self.push_action(Action::ResumeRead { key });
            }
        }
    }

    /// The exit socket reached EOF (`None`) or failed: END DONE or the
    /// mapped reason (§5.3: half-close is not a thing in Tor).
    pub fn handle_stream_eof(
        &mut self,
        key: StreamKey,
        err: Option<io::Error>,
        _now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let reason = err.as_ref().map_or(EndReason::DONE, errno_to_end_reason);
        self.end_stream(key, &End::new(reason), true, rng);
    }

    /// The exit socket's send queue drained: stream SENDMEs may go out,
    /// and on a congestion-controlled circuit the drain counts toward the
    /// rate an XON advises, and answers our XOFF.
    pub fn handle_stream_drained(
        &mut self,
        key: StreamKey,
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        s.queued_cells = 0;
        let circ = s.circ;
        if self.circuit_uses_cc(circ) {
            let now_usec = self.usec(now);
            let reliable = self.cc_clock.is_reliable();
            if let Some(s) = self.streams.get_mut(&key)
                && let answers_xoff = s.flow.xoff_sent
                && let Some(xon) = flow_drained(&mut s.flow, now_usec, reliable)
            {
                let sid = s.id;
                if !answers_xoff {
                    // A rate-change XON: C averages what is still
                    // buffered; oxit decides it once the socket drained.
                    self.cc_stats.xon_outbuf.update(0);
                }
                let mut body = [0u8; 5];
                body[1..].copy_from_slice(&xon.to_be_bytes());
                self.send_flow_cell(circ, sid, RelayCmd::XON, &body, rng);
            }
        }
        self.consider_stream_sendme(key, rng);
    }

    /// Bytes were handed to stream `key`'s socket, which now holds
    /// `buffered` of them not yet taken by the kernel. On a
    /// congestion-controlled circuit, past `cc_xoff_exit` (and still past
    /// it more than 5 ms later) the client is told XOFF
    /// (congestion_control_flow.c:flow_control_decide_xoff; C measures when
    /// a DATA cell arrives, before adding it: the caller gives the length
    /// before the write).
    pub fn handle_stream_buffered(
        &mut self,
        key: StreamKey,
        written: usize,
        buffered: usize,
        now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let Some(s) = self.streams.get(&key) else {
            return;
        };
        let circ = s.circ;
        if !self.circuit_uses_cc(circ) {
            return;
        }
        let now_usec = self.usec(now);
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        s.flow.queued_bytes = s.flow.queued_bytes.saturating_add(written as u64);
        if s.flow.drain_start_usec == 0 && buffered > 0 {
            s.flow.drain_start_usec = now_usec.max(1);
            s.flow.drained_bytes = 0;
        }
        if flow_decide_xoff(&mut s.flow, buffered as u64, now_usec) {
            let sid = s.id;
            self.cc_stats.xoff_outbuf.update(buffered as u64);
            self.send_flow_cell(circ, sid, RelayCmd::XOFF, &[0], rng);
        }
    }

    /// XON or XOFF toward the client on stream `sid`.
    fn send_flow_cell(
        &mut self,
        circ: CircIdx,
        sid: StreamId,
        cmd: RelayCmd,
        body: &[u8],
        rng: &mut impl CryptoRng,
    ) {
        if cmd == RelayCmd::XOFF {
            self.cc_stats.xoff_sent += 1;
        } else {
            self.cc_stats.xon_sent += 1;
        }
        self.originate(circ, cmd, rng, |format, cell, rng| {
            format.encode_data(cmd, sid, body, rng, cell).is_ok()
        });
    }

    pub(crate) fn stream_setup_timeout(
        &mut self,
        key: StreamKey,
        _now: Instant,
        rng: &mut impl CryptoRng,
    ) {
        let Some(s) = self.streams.get(&key) else {
            return;
        };
        match s.state {
            StreamState::Resolving | StreamState::Connecting => {
                self.end_stream(key, &End::new(EndReason::TIMEOUT), true, rng);
            }
            StreamState::ResolveOnly => {
                if let Some(s) = self.remove_stream(key) {
                    self.send_back(s.circ, s.id, &Resolved::error(true, MIN_DNS_TTL), rng);
                    self.push_action(Action::CloseStream { key });
                }
            }
            StreamState::Open => {}
        }
    }
}

/// RESOLVED for a lookup result: first IPv4 then first IPv6 answer, or the
/// PTR name, or an error type (dns.c:send_resolved_cell).
fn resolved_msg(res: Result<Answer, ResolveError>) -> Resolved {
    match res {
        Ok(ans) => {
            let mut msg = Resolved::new();
            if let Some(h) = &ans.hostname {
                let _ = msg.push(ResolvedVal::Hostname(h.as_bytes().to_vec()), ans.ttl);
            }
            let v4 = ans.addrs.iter().find(|a| a.is_ipv4());
            let v6 = ans.addrs.iter().find(|a| a.is_ipv6());
            for ip in v4.into_iter().chain(v6) {
                let _ = msg.push(ResolvedVal::Ip(*ip), ans.ttl);
            }
            if msg.answers().is_empty() {
                Resolved::error(false, ans.ttl)
            } else {
                msg
            }
        }
        Err(e) => Resolved::error(e.is_transient(), MIN_DNS_TTL),
    }
}

/// `cc_xoff_exit` (500 cells) × RELAY_PAYLOAD_SIZE_MIN (488) bytes
/// (congestion_control_flow.c, 0.4.9).
pub(crate) const XOFF_EXIT_BYTES: u64 = 500 * 488;
/// `cc_xon_rate` (500 cells) × RELAY_PAYLOAD_SIZE_MAX (498) bytes: how much
/// must drain before a drain rate is computed.
pub(crate) const XON_RATE_BYTES: u64 = 500 * 498;
/// XOFF waits this long past the limit (`XOFF_GRACE_PERIOD_USEC`).
const XOFF_GRACE_USEC: u64 = 5000;
/// `cc_xon_change_pct`: an advisory XON when the rate moves this much.
const XON_CHANGE_PCT: u64 = 25;
/// `cc_xon_ewma_cnt`.
const XON_EWMA_CNT: u64 = 2;

/// flow_control_decide_xoff: whether to send XOFF now.
pub(crate) fn flow_decide_xoff(f: &mut FlowOut, buffered: u64, now_usec: u64) -> bool {
    if buffered <= XOFF_EXIT_BYTES {
        f.grace_start_usec = 0;
        return false;
    }
    if f.xoff_sent {
        return false;
    }
    if f.grace_start_usec == 0 {
        f.grace_start_usec = now_usec.max(1);
        return false;
    }
    if now_usec > f.grace_start_usec + XOFF_GRACE_USEC {
        f.xoff_sent = true;
        f.ewma_drain_rate = 0;
        f.grace_start_usec = 0;
        return true;
    }
    false
}

/// The socket drained everything handed to it: the drain-rate bookkeeping
/// of flow_control_decide_xon with everything written since the last
/// drain, then the XON to send, if any (its kbps_ewma). oxit learns of
/// writes when the socket drains, not write by write as C does, so a
/// period's bytes are counted at its end.
pub(crate) fn flow_drained(f: &mut FlowOut, now_usec: u64, clock_reliable: bool) -> Option<u32> {
    let written = std::mem::take(&mut f.queued_bytes);
    if f.drained_bytes >= u64::from(u32::MAX).saturating_sub(written) {
        f.drained_bytes /= 2;
        if f.drain_start_usec != 0 {
            f.drain_start_usec = now_usec - (now_usec.saturating_sub(f.drain_start_usec)) / 2;
        }
    }
    f.drained_bytes += written;
    if !clock_reliable {
        f.drain_start_usec = 0;
        f.drained_bytes = 0;
    }
    if f.drain_start_usec != 0 && f.drained_bytes > XON_RATE_BYTES {
        if f.prev_drained_bytes == 0 {
            f.prev_drained_bytes = f.drained_bytes;
        }
        let rate = drain_rate(f, now_usec);
        f.prev_drained_bytes = f.drained_bytes;
        if rate != 0 {
            let ewma = crate::proto::cc::n_count_ewma(
                u64::from(rate),
                u64::from(f.ewma_drain_rate),
                XON_EWMA_CNT,
            );
            f.ewma_drain_rate = u32::try_from(ewma).unwrap_or(u32::MAX);
            f.drained_bytes = 0;
            f.drain_start_usec = 0;
        }
    }
    let xon = if !f.xoff_sent {
        drain_rate_changed(f, clock_reliable)
    } else {
        // Everything drained: the XON that answers our XOFF.
        true
    };
    // C sends the XON here, before the drained-to-zero bookkeeping below
    // (which reads the rate it just sent).
    let out = xon.then(|| {
        f.ewma_rate_last_sent = f.ewma_drain_rate;
        f.xoff_sent = false;
        f.ewma_drain_rate
    });
    // Drained to zero: the next period starts with the next write.
    f.drain_start_usec = 0;
    if f.drained_bytes >= XON_RATE_BYTES && f.ewma_rate_last_sent != 0 {
        f.ewma_drain_rate = f.ewma_drain_rate.saturating_mul(2).min(i32::MAX as u32);
        f.prev_drained_bytes = f.drained_bytes;
        f.drained_bytes = 0;
    }
    out
}

/// compute_drain_rate: KB/s (1 KB = 1000 bytes) from the previous
/// period's bytes over this period's time, as C computes it.
fn drain_rate(f: &FlowOut, now_usec: u64) -> u32 {
    let delta = now_usec.saturating_sub(f.drain_start_usec);
    if delta == 0 {
        return 0;
    }
    let limit = u64::from(i32::MAX as u32) / 1000;
    if f.prev_drained_bytes > limit || f.prev_drained_bytes / delta > limit {
        return i32::MAX as u32;
    }
    u32::try_from((f.prev_drained_bytes * 1000) / delta)
        .unwrap_or(u32::MAX)
        .max(1)
}

/// stream_drain_rate_changed.
fn drain_rate_changed(f: &FlowOut, clock_reliable: bool) -> bool {
    if !clock_reliable || f.ewma_rate_last_sent == 0 {
        return false;
    }
    let (rate, last) = (
        u64::from(f.ewma_drain_rate),
        u64::from(f.ewma_rate_last_sent),
    );
    rate > (100 + XON_CHANGE_PCT) * last / 100 || rate < (100 - XON_CHANGE_PCT) * last / 100
}
