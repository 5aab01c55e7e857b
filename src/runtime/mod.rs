//! Per-core data plane: worker threads, io_uring and epoll drivers. TODO
