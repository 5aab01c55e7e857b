//! A torrc: lexing, every option's value, %include of paths that do not
//! exist, and the cross-option rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxit::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((c, _)) = Config::parse_str(text, "torrc") {
            // What check-config prints reads back.
            let _ = Config::parse_str(&c.describe(), "described");
        }
    }
});
