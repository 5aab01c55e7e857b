//! The sans-IO Tor protocol core: cell codecs, relay messages, the link
//! handshake, circuits and streams. Inputs arrive through `handle_*`
//! methods (bytes, a timer, a connect or DNS result, always with `now`
//! passed in); outputs leave through `poll_*` methods. No sockets, no
//! threads and no `Instant::now()` live here, except as the default of
//! the circuit table's cost clock, which measures CPU spent on handshakes
//! (the onion queue's budget), not protocol time.

pub mod cc;
pub mod cell;
pub mod channel;
pub mod circuit;
pub(crate) mod conflux;
pub mod dos;
pub mod oom;
pub mod relay_msg;
pub mod splice;
pub mod stream;

/// A map keyed by numbers oxit assigns itself (circuit indexes, stream
/// keys, channel ids, driver tokens), hashed with foldhash: nothing in the
/// key is chosen by a peer, so there is no hash flooding to guard against,
/// and SipHash was 7 % of an exit's CPU at saturation (several lookups per
/// relayed cell). Maps keyed by what a peer picks (circuit IDs, addresses)
/// keep std's SipHash.
pub type OwnKeyMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
