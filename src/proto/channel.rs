#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! The link layer above TLS: one [`Channel`] per TLS connection, as a
//! sans-IO state machine (requirements.md §1, §8.2).
//!
//! The worker owns rustls; it feeds the channel the plaintext it read
//! ([`Channel::handle_input`]), writes out what [`Channel::take_output`]
//! hands back, asks [`Channel::poll_event`] whether the channel opened or
//! closed, and drives timers with [`Channel::poll_timeout`] /
//! [`Channel::handle_timeout`]. Time and randomness are parameters.
//!
//! This module owns: VERSIONS negotiation (we speak link 4 and 5), the v3
//! in-protocol handshake as responder (VERSIONS, CERTS, AUTH_CHALLENGE,
//! NETINFO; then a client's NETINFO or a relay's CERTS, AUTHENTICATE,
//! NETINFO) and as initiator for EXTEND2, certificate and AUTH0003 checks,
//! cell framing once open (4-byte circuit IDs, 514-byte cells), dropping
//! link-level cells, keepalive PADDING and the idle/handshake timeouts.
//!
//! It does not own: TLS, circuits (circuit-level cells are handed up as
//! [`IncomingCell`]s untouched), netflow padding on client channels (not
//! implemented: `nf_pad_relays` is 0 and client padding is [LN][S]), or the
//! circuit-ID direction rule for CREATE cells, which the circuit layer
//! enforces with [`Channel::peer_may_create`] because C checks it only
//! after "zero ID" and "ID in use", which need the circuit map
//! (command.c:command_process_create_cell).

mod auth;
mod certs;
mod error;
mod handshake;
mod keys;
pub mod queue;
#[cfg(test)]
mod tests;
mod timers;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use rand::CryptoRng;
use sha2::{Digest, Sha256};

use crate::proto::cell::{
    self, CELL_BODY_LEN, CellError, ChanBody, ChanCmd, CircId, Netinfo, PaddingNegotiate, RawCell,
    Versions,
};

pub use error::{AuthError, CertsError, ChannelError};
pub use keys::LinkKeys;

use auth::Transcript;
use certs::PeerCerts;
use timers::Timers;

/// Link protocol versions we speak: 4 (wide circuit IDs) and 5 (channel
/// padding). 0.4.9 relays require Link=4-5 (requirements.md §1.3, §6);
/// v3 (2-byte IDs) is left out on purpose.
pub const LINK_VERSIONS: &[u16] = &[4, 5];

/// First link version with PADDING_NEGOTIATE (`MIN_LINK_PROTO_FOR_CHANNEL_PADDING`).
const MIN_LINK_PROTO_FOR_CHANNEL_PADDING: u16 = 5;

/// The TLS facts the handshake needs, implemented by the worker over rustls.
pub trait TlsSession {
    /// RFC 5705 / 8446 exporter, 32 bytes.
    fn export_keying_material(&self, label: &[u8], context: &[u8]) -> Option<[u8; 32]>;
}

/// Who is on the other end of an open channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// A client (or bridge, or a relay that did not authenticate): it may not
    /// be used for EXTEND, and an exit refuses BEGIN on its first hop
    /// (channeltls.c:mark_channel_tls_endpoint_as_client).
    Client,
    /// A relay that proved both identities.
    Relay { rsa_id: [u8; 20], ed_id: [u8; 32] },
}

/// The identities an EXTEND2 named for the relay we connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPeer {
    pub rsa_id: [u8; 20],
    pub ed_id: Option<[u8; 32]>,
}

/// A circuit-level cell that arrived on an open channel (RELAY, RELAY_EARLY,
/// CREATE2, CREATED2, CREATE_FAST, CREATED_FAST, DESTROY, CREATE). Cells on
/// circuit 0 are dropped before they get here: C ignores a CREATE with a
/// zero ID and finds no circuit for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCell {
    pub circ_id: CircId,
    pub cmd: ChanCmd,
    pub body: [u8; CELL_BODY_LEN],
}

/// What happened to the channel as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChanEvent {
    Opened { peer: PeerKind, link_version: u16 },
    Closed(ChannelError),
}

/// Which side of the TLS connection we are, with what that side needs.
#[derive(Debug, Clone)]
enum Role {
    /// We accepted: SCERT is our own TLS cert.
    Responder { own_tls_cert_sha256: [u8; 32] },
    /// We connected for an EXTEND2: SCERT is the peer's TLS cert.
    Initiator {
        peer_tls_cert_sha256: [u8; 32],
        expect: ExpectedPeer,
        /// Answer AUTH_CHALLENGE (a relay's channel). Off for a channel
        /// that must look like a client's: the reachability self-test's,
        /// whose first hop would refuse to extend back to an identity it
        /// knows as the previous hop.
        authenticate: bool,
    },
}

/// Where the handshake is; each variant is named for what it waits for.
#[derive(Debug, Clone)]
enum State {
    /// Nothing but VERSIONS, VPADDING or AUTHORIZE yet (both roles).
    ExpectVersions,
    /// Responder, our four cells sent: a client's NETINFO or a relay's CERTS.
    RespExpectCerts,
    /// Responder, initiator CERTS checked: AUTHENTICATE (or NETINFO, which
    /// makes it a client).
    RespExpectAuthenticate(PeerCerts),
    /// Responder, initiator authenticated: its NETINFO.
    RespExpectNetinfo(PeerCerts),
    /// Initiator, VERSIONS agreed: the responder's CERTS.
    InitExpectCerts,
    /// Initiator, responder proven: AUTH_CHALLENGE (or NETINFO).
    InitExpectChallenge(PeerCerts),
    /// Initiator, we authenticated: the responder's NETINFO.
    InitExpectNetinfo(PeerCerts),
    Open,
    /// Sticky: every later call returns this error.
    Closed(ChannelError),
}

/// One link-protocol channel over one TLS connection.
#[derive(Debug)]
pub struct Channel {
    keys: Arc<LinkKeys>,
    role: Role,
    peer_addr: IpAddr,
    state: State,
    link_version: Option<u16>,
    /// 4-byte circuit IDs: true once VERSIONS agreed on v4+.
    wide: bool,
    peer: Option<PeerKind>,
    /// SHA-256 of what we sent / received during the handshake (SLOG/CLOG).
    sent_log: Transcript,
    recv_log: Transcript,
    /// Bytes of an incomplete cell left over from earlier input.
    inbuf: Vec<u8>,
    out: Vec<u8>,
    events: VecDeque<ChanEvent>,
    timers: Timers,
    peer_netinfo: Option<Netinfo>,
    padding_negotiate: Option<PaddingNegotiate>,
}

impl Channel {
    fn new(keys: Arc<LinkKeys>, role: Role, peer_addr: IpAddr, now: Instant) -> Self {
        Channel {
            keys,
            role,
            peer_addr,
            state: State::ExpectVersions,
            link_version: None,
            wide: false,
            peer: None,
            sent_log: Transcript::default(),
            recv_log: Transcript::default(),
            inbuf: Vec::new(),
            out: Vec::new(),
            events: VecDeque::new(),
            timers: Timers::new(now),
            peer_netinfo: None,
            padding_negotiate: None,
        }
    }

    /// A channel on a connection we accepted. `own_tls_cert_sha256` is the
    /// SHA-256 of the TLS certificate served on this connection; the type-5
    /// cert in `keys` must certify it.
    pub fn new_responder(
        keys: Arc<LinkKeys>,
        own_tls_cert_sha256: [u8; 32],
        peer_addr: IpAddr,
        now: Instant,
    ) -> Self {
        Self::new(
            keys,
            Role::Responder {
                own_tls_cert_sha256,
            },
            peer_addr,
            now,
        )
    }

    /// A channel on a connection we made (EXTEND2). Starts by queueing
    /// VERSIONS. The handshake itself draws its randomness later, in
    /// `handle_input`; `rng` is taken for interface stability.
    pub fn new_initiator(
        keys: Arc<LinkKeys>,
        peer_tls_cert_der: &[u8],
        peer_addr: IpAddr,
        expect: ExpectedPeer,
        now: Instant,
        _rng: &mut impl CryptoRng,
    ) -> Self {
        Self::initiator(keys, peer_tls_cert_der, peer_addr, expect, now, true)
    }

    /// A channel we open as a client would: the responder's certificates
    /// are checked, but we do not authenticate and our NETINFO names no
    /// address of ours (channeltls.c for a client's channel).
    pub fn new_client_initiator(
        keys: Arc<LinkKeys>,
        peer_tls_cert_der: &[u8],
        peer_addr: IpAddr,
        expect: ExpectedPeer,
        now: Instant,
    ) -> Self {
        Self::initiator(keys, peer_tls_cert_der, peer_addr, expect, now, false)
    }

    fn initiator(
        keys: Arc<LinkKeys>,
        peer_tls_cert_der: &[u8],
        peer_addr: IpAddr,
        expect: ExpectedPeer,
        now: Instant,
        authenticate: bool,
    ) -> Self {
        let role = Role::Initiator {
            peer_tls_cert_sha256: Sha256::digest(peer_tls_cert_der).into(),
            expect,
            authenticate,
        };
        let mut chan = Self::new(keys, role, peer_addr, now);
        if let Err(e) = chan.send_versions() {
            let _ = chan.fail(e);
        }
        chan
    }

    /// Feed plaintext read from TLS. Link-level cells are handled here;
    /// circuit-level cells of an open channel are appended to `cells`.
    /// `unix_now` is wall-clock seconds (NETINFO time, certificate expiry).
    ///
    /// On a fatal error the channel closes: the error is returned, a
    /// [`ChanEvent::Closed`] is queued, and every later call returns the
    /// same error. Cells decoded before the error stay in `cells`.
    pub fn handle_input(
        &mut self,
        data: &[u8],
        now: Instant,
        unix_now: u64,
        tls: &dyn TlsSession,
        rng: &mut impl CryptoRng,
        cells: &mut Vec<IncomingCell>,
    ) -> Result<(), ChannelError> {
        if let State::Closed(e) = &self.state {
            return Err(e.clone());
        }
        let out_before = self.out.len();
        let mut ctx = Ctx {
            unix_now,
            tls,
            rng,
            cells,
            now,
        };
        let res = self.take_input(data, &mut ctx);
        if self.out.len() != out_before {
            self.timers.wrote(now);
        }
        res.or_else(|e| self.fail(e))
    }

    /// Complete the cell an earlier read left in `inbuf` from the front of
    /// `data`, then parse the rest straight from the caller's buffer and
    /// keep only its incomplete tail: a read is copied only as far as the
    /// one cell that straddles two reads.
    fn take_input<R: CryptoRng>(
        &mut self,
        mut data: &[u8],
        ctx: &mut Ctx<'_, R>,
    ) -> Result<(), ChannelError> {
        while !self.inbuf.is_empty() && !data.is_empty() {
            let need = cell::framed_len(&self.inbuf, self.wide)
                .saturating_sub(self.inbuf.len())
                .max(1);
            let (head, rest) = data.split_at(need.min(data.len()));
            self.inbuf.extend_from_slice(head);
            data = rest;
            let mut buf = std::mem::take(&mut self.inbuf);
            let used = self.process(&buf, ctx);
            buf.drain(..used.as_ref().map_or(0, |&u| u.min(buf.len())));
            self.inbuf = buf;
            used?;
        }
        if self.inbuf.is_empty() {
            let used = self.process(data, ctx)?;
            crate::copy::extend(&mut self.inbuf, data.get(used..).unwrap_or_default());
        }
        Ok(())
    }

    /// Decode and handle whole cells from the front of `buf`; returns the
    /// bytes consumed.
    fn process<R: CryptoRng>(
        &mut self,
        buf: &[u8],
        ctx: &mut Ctx<'_, R>,
    ) -> Result<usize, ChannelError> {
        let mut pos = 0;
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            // Re-read `wide` every cell: it flips right after VERSIONS.
            let Some((raw, n)) =
                cell::decode(rest, self.wide).map_err(|source| ChannelError::Malformed {
                    cmd: ChanCmd::new(rest.get(2).copied().unwrap_or(0)),
                    source,
                })?
            else {
                return Ok(pos);
            };
            let wire = rest.get(..n).unwrap_or_default();
            if matches!(self.state, State::Open) {
                self.open_cell(&raw, ctx.cells);
                if let Some(e) = unexpected_after_open(raw.cmd()) {
                    return Err(e);
                }
            } else {
                self.handshake_cell(&raw, wire, ctx)?;
            }
            // n ≤ rest.len(): pos stays within buf.
            pos = pos.saturating_add(n);
        }
    }

    /// An open channel's cell: the hot path. Link-level cells are dropped
    /// as channeltls.c does; handshake cells that must close are reported by
    /// [`unexpected_after_open`].
    fn open_cell(&mut self, raw: &RawCell<'_>, cells: &mut Vec<IncomingCell>) {
        let cmd = raw.cmd();
        match cmd {
            ChanCmd::RELAY
            | ChanCmd::RELAY_EARLY
            | ChanCmd::CREATE2
            | ChanCmd::CREATED2
            | ChanCmd::CREATE_FAST
            | ChanCmd::CREATED_FAST
            | ChanCmd::DESTROY
            | ChanCmd::CREATE => {
                if let (false, Some(body)) = (raw.circ_id().is_channel(), raw.fixed_body()) {
                    cells.push(IncomingCell {
                        circ_id: raw.circ_id(),
                        cmd,
                        body: *body,
                    });
                }
            }
            // Accepted on v5 only, malformed ones dropped
            // (channel_tls_process_padding_negotiate_cell). Relays do not pad
            // client channels yet, so the request is only remembered.
            ChanCmd::PADDING_NEGOTIATE => {
                if self.link_version >= Some(MIN_LINK_PROTO_FOR_CHANNEL_PADDING)
                    && let Ok(p) = PaddingNegotiate::decode(raw.body())
                {
                    self.padding_negotiate = Some(p);
                }
            }
            // PADDING, VPADDING, AUTHORIZE, a late VERSIONS ("already set;
            // dropping") or NETINFO ("non-handshaking connection;
            // dropping"), unknown fixed or variable commands: ignored.
            _ => {}
        }
    }

    fn fail(&mut self, e: ChannelError) -> Result<(), ChannelError> {
        self.state = State::Closed(e.clone());
        self.events.push_back(ChanEvent::Closed(e.clone()));
        Err(e)
    }

    /// Next channel-level event, if any.
    pub fn poll_event(&mut self) -> Option<ChanEvent> {
        self.events.pop_front()
    }

    /// Append the plaintext to write into TLS to `out`.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.out);
        } else {
            out.append(&mut self.out);
        }
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Queue a fixed-length cell on an open channel, encoded straight into
    /// the output buffer. A caller mistake (channel not open, a
    /// variable-length command) is an error but does not close the channel.
    /// Relays must never send PADDING_NEGOTIATE to clients (§8.2); that is
    /// the caller's to respect.
    pub fn send_cell(
        &mut self,
        circ_id: CircId,
        cmd: ChanCmd,
        body: &[u8; CELL_BODY_LEN],
    ) -> Result<(), ChannelError> {
        if !self.is_open() {
            return Err(ChannelError::NotOpen { cmd, circ_id });
        }
        if cmd.is_var_len() {
            return Err(ChannelError::Encode {
                cmd,
                source: CellError::Malformed {
                    parsing: "send_cell",
                    reason: "variable-length command",
                },
            });
        }
        cell::encode_raw(circ_id, cmd, body, self.wide, &mut self.out)
            .map_err(|source| ChannelError::Encode { cmd, source })?;
        self.timers.wrote_without_time();
        Ok(())
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// The peer, once the channel is open.
    pub fn peer(&self) -> Option<&PeerKind> {
        self.peer.as_ref()
    }

    /// The negotiated link protocol, once VERSIONS agreed.
    pub fn link_version(&self) -> Option<u16> {
        self.link_version
    }

    /// The peer's NETINFO (its clock, our address as it sees us, its
    /// addresses), once received.
    pub fn peer_netinfo(&self) -> Option<&Netinfo> {
        self.peer_netinfo.as_ref()
    }

    /// Whether the peer listed the address it connects from among its own
    /// addresses in NETINFO (C: connection_or_set_canonical). Canonical
    /// relay channels get the long idle timeout.
    pub fn is_canonical(&self) -> bool {
        self.peer_netinfo
            .as_ref()
            .is_some_and(|n| n.my_addrs().contains(&self.peer_addr))
    }

    /// The last valid PADDING_NEGOTIATE the peer sent (link v5).
    pub fn padding_negotiate(&self) -> Option<&PaddingNegotiate> {
        self.padding_negotiate.as_ref()
    }

    /// True if we started this channel: then the circuit IDs *we* choose
    /// must have the high bit set (CIRC_ID_TYPE_HIGHER), requirements §1.7.
    pub fn we_pick_high_circ_ids(&self) -> bool {
        matches!(self.role, Role::Initiator { .. })
    }

    /// Whether the peer may open a circuit with `circ_id` here. On link v4+
    /// C ignores identities (channel.c:channel_set_circid_type with
    /// `consider_identity` false): on a channel we accepted the peer must
    /// set the high bit, on one we initiated it must not
    /// (command.c:command_process_create_cell). A CREATE* that fails this
    /// gets DESTROY(PROTOCOL); the circuit layer checks it after "zero ID"
    /// and "ID already in use" (both: drop silently), as C does.
    pub fn peer_may_create(&self, circ_id: CircId) -> bool {
        circ_id.has_high_bit() != self.we_pick_high_circ_ids()
    }

    fn send_versions(&mut self) -> Result<(), ChannelError> {
        let v = Versions::new(LINK_VERSIONS.to_vec()).map_err(|source| ChannelError::Encode {
            cmd: ChanCmd::VERSIONS,
            source,
        })?;
        self.send_msg(&v)
    }

    /// Append one channel-level (circuit 0) cell, recording it into SLOG or
    /// CLOG unless recording has stopped.
    fn send_msg<M: ChanBody>(&mut self, msg: &M) -> Result<(), ChannelError> {
        let start = self.out.len();
        cell::encode_msg(CircId::CHANNEL, msg, self.wide, &mut self.out).map_err(|source| {
            ChannelError::Encode {
                cmd: M::CMD,
                source,
            }
        })?;
        self.sent_log
            .record(self.out.get(start..).unwrap_or_default());
        Ok(())
    }
}

/// Handshake cells that close an open channel: C's CERTS, AUTH_CHALLENGE
/// and AUTHENTICATE handlers all fail "We're not doing a v3 handshake".
fn unexpected_after_open(cmd: ChanCmd) -> Option<ChannelError> {
    matches!(
        cmd,
        ChanCmd::CERTS | ChanCmd::AUTH_CHALLENGE | ChanCmd::AUTHENTICATE
    )
    .then_some(ChannelError::Unexpected {
        cmd,
        state: "after the channel opened",
    })
}

/// Per-call inputs threaded through cell handling.
struct Ctx<'a, R: CryptoRng> {
    now: Instant,
    unix_now: u64,
    tls: &'a dyn TlsSession,
    rng: &'a mut R,
    cells: &'a mut Vec<IncomingCell>,
}
