//! The types the worker and the circuit table exchange: identifiers,
//! incoming cells, peer kinds, the configuration snapshot and the actions
//! the table asks the worker to perform.
//!
//! `IncomingCell` and `PeerKind` mirror the link layer's types of the same
//! name (they are unified at integration).

use std::io;
use std::net::SocketAddr;

use crate::crypto::ntor::NtorOnionKeys;
use crate::exit::dns::Query;
use crate::exit::policy::ExitPolicy;
use crate::proto::cell::{CELL_BODY_LEN, ChanCmd, CircId, DestroyReason};
use crate::proto::relay_msg::{EndReason, Extend2Target};

/// A channel, numbered by the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChanId(pub u32);

/// An exit stream (or a pending RESOLVE), numbered by the table; opaque to
/// the worker, which uses it to name the socket or DNS lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey(pub u64);

/// A pending EXTEND2 waiting for a channel to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtendKey(pub u64);

pub use crate::proto::channel::{IncomingCell, PeerKind};

/// Immutable snapshot from the control plane, swapped on key rotation or
/// reload. Circuits already built keep their keys; new handshakes and new
/// streams use the current snapshot.
#[derive(Debug, Clone)]
pub struct CircuitConfig {
    /// Current and previous ntor onion key.
    pub onion_keys: NtorOnionKeys,
    /// SHA-1 of our RSA identity key (ntor NODEID).
    pub rsa_id: [u8; 20],
    /// Our Ed25519 identity (ntor-v3 ID).
    pub ed_id: [u8; 32],
    pub exit_policy: ExitPolicy,
    /// IPv6Exit.
    pub ipv6_exit: bool,
    /// `refuseunknownexits`: refuse BEGIN from an authenticated relay that
    /// is not in [`CircuitConfig::known_relays`] (END MISC).
    pub refuse_unknown_exits: bool,
    /// RSA identity digests of the relays in the current consensus.
    pub known_relays: std::collections::HashSet<[u8; 20]>,
    /// ExtendAllowPrivateAddresses.
    pub extend_allow_private: bool,
    /// Our ORPorts: never extend to ourselves.
    pub own_addrs: Vec<SocketAddr>,
    /// Consensus `circwindow`: the initial circuit package window.
    pub circwindow: u16,
    /// Consensus `circ_max_cell_queue_size`.
    pub max_queue: usize,
    /// Consensus `sendme_emit_min_version`: 1 sends authenticated (v1)
    /// circuit SENDMEs, anything else the empty v0 form (sendme.c:
    /// send_circuit_level_sendme).
    pub sendme_emit_min_version: u8,
    /// Consensus `sendme_accept_min_version`: older circuit SENDMEs close
    /// the circuit (sendme.c:cell_version_can_be_handled).
    pub sendme_accept_min_version: u8,
    /// Consensus `AllowNonearlyExtend`: EXTEND2 outside RELAY_EARLY is
    /// dropped unless set (§4.4).
    pub allow_nonearly_extend: bool,
    /// Consensus `allow-network-reentry`: when false, streams to a known
    /// relay's ORPort or an authority's ORPort/DirPort get END
    /// CONNECTREFUSED (connection_edge.c:connection_exit_connect).
    pub allow_network_reentry: bool,
    /// The addresses and ports [`CircuitConfig::allow_network_reentry`]
    /// guards (nodelist.c:node_add_to_address_set).
    pub reentry: std::collections::HashSet<SocketAddr>,
    /// `CountPrivateBandwidth`: for the worker, whether bytes of
    /// connections to private addresses count in the bandwidth history.
    pub count_private_bandwidth: bool,
    /// The DoS mitigations in force (torrc, else consensus).
    pub dos: crate::proto::dos::DosParams,
    /// The onion queue's limits (`MaxOnionQueueDelay`,
    /// `onion_queue_wait_cutoff`) and per-turn handshake budget.
    pub onion: super::OnionParams,
    /// `MaxMemInQueues` in force, in bytes ([`crate::proto::oom::effective_limit`]).
    pub max_mem_in_queues: u64,
    /// Congestion control offered to clients that ask for it in ntor-v3
    /// (`None`: declined, and circuits keep fixed windows).
    pub cc: Option<crate::proto::cc::CcParams>,
    /// Conflux (proposal 329) for clients that link circuits.
    pub conflux: crate::proto::conflux::ConfluxParams,
    /// Shutting down (a SIGINT's `ShutdownWaitLength`) or hibernating
    /// (accounting): new circuits get DESTROY HIBERNATING and new exit
    /// streams END HIBERNATING, while open ones carry on
    /// (hibernate.c:we_are_hibernating, command.c, connection_edge.c).
    pub hibernating: bool,
    /// Dormant (the accounting budget is spent): workers close every link
    /// (hibernate.c:hibernate_go_dormant).
    pub dormant: bool,
    /// Source addresses for outgoing connections.
    pub outbound: OutboundBind,
}

/// `OutboundBindAddress`, `OutboundBindAddressOR`,
/// `OutboundBindAddressExit`: the source address of outgoing connections,
/// at most one IPv4 and one IPv6 address in each list (config.c:
/// parse_outbound_addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundBind {
    pub any: Vec<std::net::IpAddr>,
    pub or: Vec<std::net::IpAddr>,
    pub exit: Vec<std::net::IpAddr>,
}

impl OutboundBind {
    /// The address to bind a connection to `dst` to: for an exit stream
    /// `…Exit`, else `…OR`, then `OutboundBindAddress`, of `dst`'s
    /// family (connection.c:conn_get_outbound_address).
    pub fn for_conn(&self, exit: bool, dst: &SocketAddr) -> Option<std::net::IpAddr> {
        let pick =
            |l: &[std::net::IpAddr]| l.iter().copied().find(|a| a.is_ipv6() == dst.is_ipv6());
        let first = if exit { &self.exit } else { &self.or };
        pick(first).or_else(|| pick(&self.any))
    }

    /// C's refusal of two addresses of one family in a list.
    pub fn validate(&self) -> Result<(), String> {
        for (list, what) in [(&self.any, ""), (&self.or, " OR"), (&self.exit, " exit")] {
            for v6 in [false, true] {
                let mut of = list.iter().filter(|a| a.is_ipv6() == v6);
                if let (Some(_), Some(second)) = (of.next(), of.next()) {
                    return Err(format!(
                        "Multiple {}{what} outbound bind addresses configured: {second}",
                        if v6 { "IPv6" } else { "IPv4" }
                    ));
                }
            }
        }
        Ok(())
    }
}

impl CircuitConfig {
    /// The defaults of every consensus parameter (C tor's), for a relay
    /// that has no consensus yet.
    pub const DEFAULT_CIRCWINDOW: u16 = 1000;
    pub const DEFAULT_MAX_QUEUE: usize = 2500;
}

/// Why the worker could not give an EXTEND2 a channel.
#[derive(Debug, thiserror::Error)]
pub enum ExtendFailure {
    /// No connection could be launched at all (no usable address, out of
    /// sockets): C tor closes with CONNECTFAILED
    /// (circuitbuild_relay.c:circuit_open_connection_for_extend).
    #[error("could not launch a connection to the extend target: {0}")]
    Launch(io::Error),
    /// The connection or its link handshake failed, or the peer's identity
    /// was not the requested one: C tor closes the waiting circuits with
    /// CHANNEL_CLOSED (circuitbuild_relay.c:circuit_n_chan_done).
    #[error("channel to the extend target failed: {0}")]
    Channel(String),
}

impl ExtendFailure {
    /// The DESTROY reason sent back toward the client.
    pub fn destroy_reason(&self) -> DestroyReason {
        match self {
            ExtendFailure::Launch(_) => DestroyReason::CONNECTFAILED,
            ExtendFailure::Channel(_) => DestroyReason::CHANNEL_CLOSED,
        }
    }
}

/// What the table asks the worker to do, in order.
///
/// `SendCell` carries its body inline: boxing it would cost a heap
/// allocation per relayed cell.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Action {
    /// Write this cell on channel `chan`.
    SendCell {
        chan: ChanId,
        circ_id: CircId,
        cmd: ChanCmd,
        body: [u8; CELL_BODY_LEN],
    },
    /// Resolve for a BEGIN or RESOLVE; answer with
    /// [`super::CircuitTable::handle_resolved`].
    Resolve { key: StreamKey, query: Query },
    /// Open a TCP connection (the exit policy already allowed `addr`);
    /// answer with [`super::CircuitTable::handle_connected`].
    Connect { key: StreamKey, addr: SocketAddr },
    /// Bytes from DATA cells to write to the exit socket.
    StreamWrite { key: StreamKey, data: Vec<u8> },
    /// Stop reading the exit socket: the windows are closed.
    PauseRead { key: StreamKey },
    /// Reading may resume.
    ResumeRead { key: StreamKey },
    /// Close the exit socket after its queued output is flushed (or abandon
    /// the connect / lookup). The key is dead afterwards.
    CloseStream { key: StreamKey },
    /// A client channel from `addr` sent a CREATE: its address's owner
    /// counts it (DoSCircuitCreation).
    DosCreate { addr: std::net::IpAddr },
    /// Find or open an authenticated channel to this relay; answer with
    /// [`super::CircuitTable::handle_extend_channel`].
    OpenChannel {
        key: ExtendKey,
        target: Extend2Target,
    },
}

/// Map a connect or socket error to an END reason
/// (connection_edge.c:errno_to_stream_end_reason).
pub fn errno_to_end_reason(err: &io::Error) -> EndReason {
    if let Some(code) = err.raw_os_error() {
        return match code {
            libc::EPIPE => EndReason::DONE,
            libc::EBADF
            | libc::EFAULT
            | libc::EINVAL
            | libc::EISCONN
            | libc::ENOTSOCK
            | libc::EPROTONOSUPPORT
            | libc::EAFNOSUPPORT
            | libc::ENOTCONN => EndReason::INTERNAL,
            libc::ECONNRESET => EndReason::CONNRESET,
            libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EPERM => {
                EndReason::NOROUTE
            }
            libc::ECONNREFUSED => EndReason::CONNECTREFUSED,
            libc::ETIMEDOUT => EndReason::TIMEOUT,
            libc::ENOBUFS
            | libc::ENOMEM
            | libc::ENFILE
            | libc::EADDRINUSE
            | libc::EADDRNOTAVAIL
            | libc::EMFILE => EndReason::RESOURCELIMIT,
            _ => EndReason::MISC,
        };
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => EndReason::CONNECTREFUSED,
        io::ErrorKind::ConnectionReset => EndReason::CONNRESET,
        io::ErrorKind::TimedOut => EndReason::TIMEOUT,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => EndReason::NOROUTE,
        io::ErrorKind::BrokenPipe => EndReason::DONE,
        _ => EndReason::MISC,
    }
}
