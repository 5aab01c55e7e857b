//! The sans-IO Tor protocol core: cell codecs, relay messages, the link
//! handshake, circuits and streams. Inputs arrive through `handle_*`
//! methods (bytes, a timer, a connect or DNS result, always with `now`
//! passed in); outputs leave through `poll_*` methods. No sockets, no
//! threads and no `Instant::now()` live here.

pub mod cell;
pub mod channel;
pub mod circuit;
pub mod dos;
pub mod relay_msg;
pub mod splice;
pub mod stream;
