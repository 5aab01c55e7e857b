//! oxit: a multi-core Tor exit relay.
//!
//! The crate is split the way `DESIGN.md` draws it: a sans-IO protocol core
//! (`proto`, `crypto`, `exit`) that turns bytes and events into bytes and
//! actions, per-core drivers that move those bytes (`runtime`), and a small
//! control plane (`control`, `config`, `metrics`). Nothing under `proto`,
//! `crypto` or `exit` opens a socket, reads the clock or spawns a thread.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod bug;
pub mod config;
pub mod control;
pub mod copy;
pub mod crypto;
pub mod dir;
pub mod exit;
pub mod metrics;
pub mod os;
pub mod proto;
pub mod runtime;
