//! The directory protocol as a relay speaks it: where the authorities are
//! ([`authority`]), the documents a relay publishes ([`descriptor`]) and
//! the ones it reads ([`consensus`], [`authcert`]), and HTTP/1.0 as the
//! directory protocol uses it ([`http`]).
//!
//! Everything here is sans-IO: documents are built from values and parsed
//! from bytes, and time is an argument. The control thread opens the
//! connections and keeps the schedule (`crate::control`).

pub mod authcert;
pub mod authority;
pub mod bwhist;
pub mod client;
pub mod consensus;
pub mod descriptor;
pub mod document;
pub mod http;
pub mod time;
