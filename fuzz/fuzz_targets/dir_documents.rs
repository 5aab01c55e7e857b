//! Directory documents a server sends: a microdesc consensus (live and
//! testing rules) and authority key certificates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxit::dir::authcert;
use oxit::dir::consensus::Consensus;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Consensus::parse(text, false);
        let _ = Consensus::parse(text, true);
        let _ = authcert::parse_all(text);
    }
});
