//! The per-core data plane: worker threads, each owning an I/O driver
//! (io_uring, or epoll where io_uring is unavailable), its listener on the
//! ORPort, and everything that the channels it accepted lead to.
//!
//! This module moves bytes; the protocol logic lives in `proto`. The
//! control plane starts it ([`DataPlane::start`]) and talks to it only
//! through snapshots, events and traffic counters.

mod dnssocks;
pub mod driver;
pub mod epoll;
mod plane;
pub mod ratelimit;
pub mod relay;
mod slots;
pub mod tls;
pub mod uring;
mod worker;

pub use plane::{
    CONNECT_BUCKETS, ConnCounts, ConnectHistogram, DNS_FIELDS, DataPlane, Listeners,
    NAMESERVER_FIELDS, PlaneEvent, Snapshot, Traffic, build_snapshot, family_index, load_slots,
};
pub use relay::RunError;

/// Store values in a worker's published slots, as the worker does (for
/// the MetricsPort's tests).
#[cfg(test)]
pub(crate) fn plane_store(slots: &[std::sync::atomic::AtomicU64], values: &[u64]) {
    plane::store_all(slots, values);
}

#[cfg(test)]
mod tests;
