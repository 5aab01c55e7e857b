//! The ntor-v3 client message's extensions and the circuit parameters
//! negotiated from them (congestion control, SUBPROTO).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxit::crypto::ntor_v3;

fuzz_target!(|data: &[u8]| {
    let _ = ntor_v3::parse_extensions(data);
    let _ = ntor_v3::negotiate_circ_params(data);
});
