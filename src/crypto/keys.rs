//! TODO: keys
