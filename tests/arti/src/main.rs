//! The `arti` binary, exactly as the arti crate's own `src/main.rs` builds
//! it: the private-network test runs it as a SOCKS client of the network.
//! It is a workspace member rather than a `cargo install` so that it shares
//! the harness's tor-* crates and the dev profile's optimised dependencies.

fn main() {
    arti::main();
}
