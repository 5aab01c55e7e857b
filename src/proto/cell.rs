//! TODO: cell
