//! Link cells and var-cells off the wire, as both circuit-ID widths, and
//! each cell's body parsed by its command (CREATE2, CERTS, NETINFO, ...).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxit::proto::cell::{self, AnyChanMsg};

fuzz_target!(|data: &[u8]| {
    for wide in [false, true] {
        let mut rest = data;
        // At most as many cells as bytes: each consumes at least one.
        while let Ok(Some((raw, used))) = cell::decode(rest, wide) {
            let _ = AnyChanMsg::decode(&raw);
            if used == 0 || used > rest.len() {
                break;
            }
            rest = &rest[used..];
        }
    }
});
