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

pub use plane::{DNS_FIELDS, DataPlane, Listeners, PlaneEvent, Snapshot, Traffic, build_snapshot};
pub use relay::RunError;

#[cfg(test)]
mod tests;
