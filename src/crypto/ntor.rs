//! TODO: ntor
