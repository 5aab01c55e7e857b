//! C tor's `BUG()`: an internal invariant found broken where the relay
//! can carry on. Each one is logged and counted for the MetricsPort's
//! `tor_bug_reached_count` (lib/log/util_bug.c, log_sys.c), so an operator
//! can alert on a bug before a user reports it. Panics count too: a
//! panicking thread is the same kind of event, one the relay may not
//! survive.
//!
//! The count is one process-wide atomic, touched only when a bug is
//! reached: never on a normal path.

use std::sync::atomic::{AtomicU64, Ordering};

static REACHED: AtomicU64 = AtomicU64::new(0);

/// Note that the invariant `what` did not hold; the caller recovers.
pub fn reached(what: &str) {
    REACHED.fetch_add(1, Ordering::Relaxed);
    tracing::warn!("Bug: {what} (this is a bug in oxit: please report it)");
}

/// Bugs and panics so far.
pub fn count() -> u64 {
    REACHED.load(Ordering::Relaxed)
}

/// Count every panic, on any thread, before the default hook reports it.
pub fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        REACHED.fetch_add(1, Ordering::Relaxed);
        previous(info);
    }));
}
