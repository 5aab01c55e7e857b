//! Process signals: SIGINT drains and stops the relay, SIGTERM stops it,
//! SIGHUP asks the
//! control thread to reload the configuration, SIGUSR1 asks it for a
//! statistics summary and SIGUSR2 switches every log to debug and back.
//!
//! This module owns the signal mask and one thread that waits for signals
//! with `sigwait`. No async signal handler runs: the signals are blocked in
//! the thread that calls [`install`] *before* any worker thread exists, so
//! every thread inherits the mask and the kernel delivers them only to the
//! waiting thread, where ordinary code (logging, locks) is safe.
//!
//! It does not stop the workers itself: it triggers [`Shutdown`], which
//! the runtime watches.
//!
//! C tor's behaviour (main.c:process_signal, hibernate.c), which oxit
//! follows: SIGTERM closes the channels and exits cleanly; SIGINT on a
//! relay stops accepting and refuses new circuits and streams, lets the
//! open ones run for `ShutdownWaitLength`, then exits (oxit exits sooner
//! once every circuit has closed); a second SIGINT while draining, or any
//! SIGINT/SIGTERM while closing, exits at once with status 0.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::Shutdown;

/// What to do on a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalAction {
    /// SIGINT: stop accepting, let circuits drain for up to
    /// `ShutdownWaitLength`, then stop.
    Drain,
    /// Close every channel and stop now (SIGTERM; SIGINT when draining
    /// is not possible).
    Shutdown,
    /// A shutdown is already under way: exit the process now.
    ExitNow,
    /// SIGHUP: reload the configuration and reopen the logs.
    Reload,
    /// SIGUSR1: log a statistics summary.
    DumpStats,
    /// SIGUSR2: every log to debug, or back.
    ToggleDebug,
    /// A signal we did not ask for.
    Ignore,
}

/// Where the relay is in stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// A SIGINT's drain is under way.
    Draining,
    /// Channels are being closed.
    Stopping,
}

impl Phase {
    fn of(shutdown: &Shutdown) -> Phase {
        if shutdown.is_triggered() {
            Phase::Stopping
        } else if shutdown.is_draining() {
            Phase::Draining
        } else {
            Phase::Running
        }
    }
}

/// The decision for `signal` in `phase` (C: main.c:process_signal,
/// hibernate.c:hibernate_begin): SIGINT drains, a second SIGINT exits at
/// once; SIGTERM stops cleanly at once, and exits if sent again.
pub fn action_for(signal: libc::c_int, phase: Phase) -> SignalAction {
    match (signal, phase) {
        (libc::SIGINT | libc::SIGTERM, Phase::Stopping) => SignalAction::ExitNow,
        (libc::SIGINT, Phase::Draining) => SignalAction::ExitNow,
        (libc::SIGINT, Phase::Running) => SignalAction::Drain,
        (libc::SIGTERM, _) => SignalAction::Shutdown,
        (libc::SIGHUP, _) => SignalAction::Reload,
        (libc::SIGUSR1, _) => SignalAction::DumpStats,
        (libc::SIGUSR2, _) => SignalAction::ToggleDebug,
        _ => SignalAction::Ignore,
    }
}

/// The running signal thread.
#[derive(Debug)]
pub struct SignalThread {
    handle: JoinHandle<()>,
}

impl SignalThread {
    /// The thread's handle (tests send it signals with `pthread_kill`).
    pub fn handle(&self) -> &JoinHandle<()> {
        &self.handle
    }
}

/// Block SIGINT, SIGTERM and SIGHUP in the calling thread and start the
/// thread that waits for them.
///
/// Call this from `main` before anything spawns a thread: threads inherit
/// the mask, and a thread that does not block these signals could be
/// chosen to receive one and be killed by its default action.
pub fn install(shutdown: Arc<Shutdown>) -> io::Result<SignalThread> {
    let set = signal_set()?;
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is
    // allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let handle = std::thread::Builder::new()
        .name("oxit-signals".into())
        .spawn(move || wait_loop(&set, &shutdown))?;
    Ok(SignalThread { handle })
}

fn signal_set() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid for writes; the signal numbers are valid.
    unsafe {
        if libc::sigemptyset(&mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        for s in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            if libc::sigaddset(&mut set, s) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(set)
}

fn wait_loop(set: &libc::sigset_t, shutdown: &Shutdown) {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: both pointers are valid; the set's signals are blocked
        // in this thread (inherited from `install`'s caller).
        let rc = unsafe { libc::sigwait(set, &mut sig) };
        if rc != 0 {
            // sigwait only fails for an invalid set; nothing to retry with.
            tracing::warn!(
                "waiting for signals failed: {}",
                io::Error::from_raw_os_error(rc)
            );
            return;
        }
        match action_for(sig, Phase::of(shutdown)) {
            // The control thread logs C's "Interrupt: ..." line with the
            // configured wait, and stops at once if it is 0.
            SignalAction::Drain => shutdown.request_drain(),
            SignalAction::Shutdown => {
                tracing::info!(
                    "Caught {}: closing channels and exiting. Send it again to exit now.",
                    name(sig)
                );
                shutdown.trigger();
            }
            SignalAction::ExitNow => {
                tracing::info!("Second {} received; exiting now.", name(sig));
                std::process::exit(0);
            }
            SignalAction::Reload => {
                tracing::info!(
                    "Received reload signal (hup). Reloading config and resetting internal state."
                );
                shutdown.request_reload();
            }
            SignalAction::DumpStats => shutdown.request_stats(),
            SignalAction::ToggleDebug => {
                if crate::control::logging::toggle_debug() {
                    tracing::info!(
                        "Caught SIGUSR2: every log now at debug level; send SIGUSR2 again to go back."
                    );
                } else {
                    tracing::info!("Caught SIGUSR2: logs back at their configured levels.");
                }
            }
            SignalAction::Ignore => {}
        }
    }
}

fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::thread::JoinHandleExt;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn decisions() {
        use super::Phase::{Draining, Running, Stopping};
        use SignalAction::*;
        assert_eq!(action_for(libc::SIGINT, Running), Drain);
        assert_eq!(action_for(libc::SIGTERM, Running), Shutdown);
        // A second SIGINT while draining exits at once (C: "SIGINT
        // received a second time; exiting now."); SIGTERM stops cleanly.
        assert_eq!(action_for(libc::SIGINT, Draining), ExitNow);
        assert_eq!(action_for(libc::SIGTERM, Draining), Shutdown);
        assert_eq!(action_for(libc::SIGINT, Stopping), ExitNow);
        assert_eq!(action_for(libc::SIGTERM, Stopping), ExitNow);
        assert_eq!(action_for(libc::SIGHUP, Running), Reload);
        assert_eq!(action_for(libc::SIGHUP, Draining), Reload);
        assert_eq!(action_for(libc::SIGUSR1, Running), DumpStats);
        assert_eq!(action_for(libc::SIGUSR2, Stopping), ToggleDebug);
        assert_eq!(action_for(libc::SIGPIPE, Running), Ignore);
    }

    #[test]
    fn sigterm_to_the_signal_thread_triggers_shutdown() {
        let sd = Shutdown::new();
        // install() blocks the signals in this test thread only; the
        // signal thread inherits the mask, and pthread_kill aims at it, so
        // no other thread of the test binary can receive these signals.
        let t = install(sd.clone()).unwrap();
        let tid = t.handle().as_pthread_t();
        // SIGHUP asks for a reload and does not stop anything.
        // SAFETY: the thread is alive (it loops forever) and blocks SIGHUP.
        assert_eq!(unsafe { libc::pthread_kill(tid, libc::SIGHUP) }, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sd.take_reload_request() {
            assert!(Instant::now() < deadline, "SIGHUP asked for no reload");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!sd.is_triggered());
        // SAFETY: as above.
        assert_eq!(unsafe { libc::pthread_kill(tid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sd.is_triggered() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(sd.is_triggered());
        // Not sending a second one: that would exit the test process.
    }
}
