//! TODO: ntor_v3
