//! TODO: x509
