//! Key files as C tor writes them: tagged Ed25519/Curve25519 blobs and
//! PEM RSA keys.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use oxit::crypto::keyfile::parse_tagged;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz");
    for (typ, tag, len) in [
        ("ed25519v1-secret", "type0", 64),
        ("ed25519v1-public", "type0", 32),
        ("ed25519v1-cert", "type4", 0),
        ("c25519v1", "onion", 64),
    ] {
        let _ = parse_tagged(p, data, typ, tag, len);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = oxit::crypto::rsa::RsaPrivate::from_pkcs1_pem(text);
    }
});
