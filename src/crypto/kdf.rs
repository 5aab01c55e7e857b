//! TODO: kdf
