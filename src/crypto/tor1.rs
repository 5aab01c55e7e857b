//! TODO: tor1
