//! Control plane: key rotation, signals, snapshots handed to workers. TODO
