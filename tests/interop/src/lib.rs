//! End-to-end interop harness for oxit.
//!
//! Two halves: [`client`], a Tor client built on Arti's `tor-proto` 0.47 (an
//! implementation independent of both C tor and oxit), and [`harness`], which
//! starts and stops the real programs the tests talk to on 127.0.0.1 — C tor
//! relays, dnsmasq — plus a small HTTP server with deterministic bodies.
//! Nothing here is part of the relay's own build: this crate is a separate
//! workspace member so the relay never links tor-proto.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod client;
pub mod harness;
pub mod rawclient;

pub use client::{Error, Handshake, HopSpec, Tunnel, begin_dir, build_circuit, http_get, resolve};
