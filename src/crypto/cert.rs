//! TODO: cert
