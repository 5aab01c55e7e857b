//! A directory server's HTTP/1.0 answer, with and without a body limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxit::dir::http::Response;

fuzz_target!(|data: &[u8]| {
    let _ = Response::parse(data, 1 << 20);
    let _ = Response::parse(data, 16);
});
