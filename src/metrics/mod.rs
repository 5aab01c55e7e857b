//! Per-core counters collected by the control thread. TODO
