//! TODO: relay_msg
