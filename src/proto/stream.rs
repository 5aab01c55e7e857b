//! Exit streams of the circuits in a [`crate::proto::circuit::CircuitTable`]:
//! BEGIN → resolve → exit policy → connect → CONNECTED, DATA both ways
//! within the stream windows, END, RESOLVE → RESOLVED, BEGIN_DIR refused
//! (requirements.md §5.1–§5.7; connection_edge.c:connection_exit_begin_conn,
//! connected_cell_format_payload, connection_edge_end; relay.c; sendme.c;
//! dns.c:send_resolved_cell).
//!
//! Owns the per-stream state and windows. Does not own sockets or the DNS
//! resolver (the worker runs them on [`crate::proto::circuit::Action`]s),
//! nor circuit-level windows (the circuit module).

pub(crate) mod exit;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::time::Duration;

use crate::proto::circuit::CircIdx;
use crate::proto::relay_msg::{BeginFlags, StreamId};

/// Stream windows at creation (`STREAMWINDOW_START`, or.h).
pub const STREAMWINDOW_START: i32 = 500;
/// Cells acknowledged by one stream SENDME (`STREAMWINDOW_INCREMENT`).
pub const STREAMWINDOW_INCREMENT: i32 = 50;
/// A stream SENDME goes out only while fewer cells than this wait to be
/// written to the exit socket (sendme.c:sendme_connection_edge_consider_sending,
/// `connection_outbuf_too_full`).
pub const MAX_QUEUED_CELLS_FOR_SENDME: u32 = 10;
/// How long a stream may stay resolving or connecting before it is ended
/// with TIMEOUT.
pub const STREAM_SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Optimistic data kept for a stream that is not connected yet: a full
/// stream window.
pub const MAX_OPTIMISTIC_BYTES: usize = 500 * 498;

/// Most streams (opening, open, or resolving) one circuit may have at the
/// exit. C tor has no such cap; each stream can hold
/// [`MAX_OPTIMISTIC_BYTES`] and a destination's data for up to
/// [`STREAM_SETUP_TIMEOUT`], so without one a single circuit could pin
/// gigabytes. A browser's busiest page opens far fewer.
pub const MAX_STREAMS_PER_CIRCUIT: usize = 512;

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// BEGIN to a host name: waiting for DNS.
    Resolving,
    /// Waiting for the TCP connect.
    Connecting,
    /// CONNECTED sent; data flows.
    Open,
    /// A RESOLVE request: waiting for DNS, then RESOLVED; no socket.
    ResolveOnly,
}

/// One exit stream (or pending RESOLVE).
#[derive(Debug)]
pub(crate) struct Stream {
    pub circ: CircIdx,
    pub id: StreamId,
    pub state: StreamState,
    pub port: u16,
    pub flags: BeginFlags,
    /// The address connected to, for CONNECTED.
    pub addr: Option<IpAddr>,
    /// Clipped TTL for CONNECTED / END(EXITPOLICY).
    pub ttl: u32,
    pub package: i32,
    pub deliver: i32,
    /// Optimistic DATA received before CONNECTED, and since when (for the
    /// OOM handler's "oldest queued data first").
    pub pending: Vec<u8>,
    pub pending_since: Option<std::time::Instant>,
    /// We asked the worker to pause reading.
    pub paused: bool,
    /// DATA cells written to the socket since it last drained.
    pub queued_cells: u32,
    /// The client sent XOFF (congestion-controlled circuits): no reading
    /// from the destination until its XON.
    pub xoff_received: bool,
    /// Our side of XON/XOFF toward the client (congestion-controlled
    /// circuits only).
    pub flow: FlowOut,
}

/// What an exit stream on a congestion-controlled circuit tracks to tell
/// the client to stop (XOFF) and go on (XON, with the rate at which the
/// destination takes the data), as congestion_control_flow.c does.
/// Times are congestion control's microseconds; 0 means unset, as in C.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowOut {
    pub xoff_sent: bool,
    pub grace_start_usec: u64,
    /// Bytes handed to the socket since it last drained.
    pub queued_bytes: u64,
    pub drain_start_usec: u64,
    pub drained_bytes: u64,
    pub prev_drained_bytes: u64,
    /// Drain-rate EWMA and the value our last XON carried, in KB/s.
    pub ewma_drain_rate: u32,
    pub ewma_rate_last_sent: u32,
}

impl Stream {
    pub(crate) fn new(circ: CircIdx, id: StreamId, state: StreamState) -> Self {
        Stream {
            circ,
            id,
            state,
            port: 0,
            flags: BeginFlags::default(),
            addr: None,
            ttl: 0,
            package: STREAMWINDOW_START,
            deliver: STREAMWINDOW_START,
            pending: Vec::new(),
            pending_since: None,
            paused: false,
            queued_cells: 0,
            xoff_received: false,
            flow: FlowOut::default(),
        }
    }
}
