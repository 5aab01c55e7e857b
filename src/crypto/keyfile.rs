//! TODO: keyfile
