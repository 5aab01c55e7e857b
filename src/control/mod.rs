//! The control plane: what is slow or global. It owns configuration, keys
//! and their rotation, the directory (publishing, the consensus,
//! reachability: [`relay`]), signals and the relay's start and stop; it
//! hands the per-core workers immutable snapshots and never touches a cell.

pub mod accounting;
pub mod address;
pub mod controlport;
mod dirconn;
pub mod logging;
pub mod notify;
mod onehop;
pub mod relay;
pub mod signals;
pub mod state;
pub mod status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::runtime::driver::Waker;

/// A one-way "stop now" shared by the signal handler, the control thread
/// and every worker. Workers check it once per loop turn (an atomic load,
/// not on the per-cell path) and register their waker so a blocked
/// `io_uring_enter` or `epoll_wait` returns at once.
#[derive(Debug, Default)]
pub struct Shutdown {
    flag: AtomicBool,
    /// SIGUSR1 asked for a statistics dump (the control thread takes it).
    stats: AtomicBool,
    /// SIGHUP asked for a reload (the control thread takes it).
    reload: AtomicBool,
    /// SIGINT asked for a draining shutdown (`ShutdownWaitLength`); it
    /// stays set while the relay drains.
    drain: AtomicBool,
    wakers: Mutex<Vec<Arc<Waker>>>,
}

impl Shutdown {
    pub fn new() -> Arc<Self> {
        Arc::new(Shutdown::default())
    }

    /// Ask everything to stop, and wake every registered worker.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Ok(w) = self.wakers.lock() {
            for w in w.iter() {
                w.wake();
            }
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Ask the control thread to log a statistics summary (SIGUSR1).
    pub fn request_stats(&self) {
        self.stats.store(true, Ordering::Relaxed);
    }

    /// Whether a statistics summary was asked for since the last call.
    pub fn take_stats_request(&self) -> bool {
        self.stats.swap(false, Ordering::Relaxed)
    }

    /// SIGINT: stop accepting, let circuits drain, then stop (the control
    /// thread decides when).
    pub fn request_drain(&self) {
        self.drain.store(true, Ordering::SeqCst);
    }

    /// Whether a draining shutdown was asked for.
    pub fn is_draining(&self) -> bool {
        self.drain.load(Ordering::Relaxed)
    }

    /// Ask the control thread to reload the configuration (SIGHUP).
    pub fn request_reload(&self) {
        self.reload.store(true, Ordering::Relaxed);
    }

    /// Whether a reload was asked for since the last call.
    pub fn take_reload_request(&self) -> bool {
        self.reload.swap(false, Ordering::Relaxed)
    }

    /// Register a worker's waker (woken at once if already triggered).
    pub fn add_waker(&self, w: Arc<Waker>) {
        if let Ok(mut v) = self.wakers.lock() {
            v.push(w.clone());
        }
        if self.is_triggered() {
            w.wake();
        }
    }
}
