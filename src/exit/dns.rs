//! TODO: dns
