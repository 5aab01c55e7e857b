//! TODO: rsa
