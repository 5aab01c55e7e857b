//! TODO: fast
