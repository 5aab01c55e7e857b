//! Cryptography that is specific to Tor: circuit handshakes (ntor, ntor-v3,
//! CREATE_FAST), key derivation, tor1 relay-cell crypto with batch entry
//! points, Ed25519/RSA/X.509 certificates, and C tor's on-disk key formats.
//! Generic primitives come from RustCrypto, dalek and aws-lc-rs; this module
//! only composes them the way the Tor specifications require.

pub mod cert;
pub mod cgo;
pub mod fast;
pub mod kdf;
pub mod keyfile;
pub mod keys;
pub mod ntor;
pub mod ntor_v3;
pub mod rsa;
pub mod tor1;
pub mod x509;
