//! What makes oxit an exit: the exit policy, the per-core DNS resolver and
//! cache, and the logic of the TCP connector. All sans-IO: the worker owns
//! the sockets and feeds datagrams and connect results in.

pub mod dns;
pub mod policy;
