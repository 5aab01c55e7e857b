//! torrc-compatible configuration. TODO
