//! The per-core data plane: worker threads, each owning an I/O driver
//! (io_uring, or epoll where io_uring is unavailable), its listener on the
//! ORPort, and everything that the channels it accepted lead to.
//!
//! This module moves bytes; the protocol logic lives in `proto`.

pub mod driver;
pub mod epoll;
pub mod relay;
mod slots;
pub mod tls;
pub mod uring;
mod worker;

pub use relay::{RunError, run};

#[cfg(test)]
mod tests;
