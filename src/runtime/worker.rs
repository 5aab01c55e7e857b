//! One worker thread per core: its driver, its listeners, and every
//! connection those lead to.
//!
//! Worker state never leaves its thread (the driver and connection table
//! are created on the thread and are `!Send` by construction); only the
//! waker, the shutdown flag and immutable snapshots cross threads.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::control::Shutdown;
use crate::crypto::keys::RelayKeys;

use super::driver::{self, Backend, Event, Handler, Ops, Waker};
use super::relay::{RunError, choose_backend, worker_count};

/// How long a worker waits for events when it has no timer due: bounds how
/// late it notices a shutdown if a wakeup is ever lost.
const IDLE_TURN: Duration = Duration::from_millis(500);

pub(crate) fn run_workers(
    config: &Config,
    keys: RelayKeys,
    shutdown: Arc<Shutdown>,
) -> Result<(), RunError> {
    let backend = choose_backend(config.io_backend)?;
    let n = worker_count(config.num_cpus);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let _keys = Arc::new(keys);
    let mut handles = Vec::new();
    for index in 0..n {
        // Bind on the control thread so a busy port is reported before any
        // worker starts.
        let mut listeners = Vec::new();
        for p in config.or_ports.iter().filter(|p| !p.no_listen) {
            let fd = driver::reuseport_listener(p.addr).map_err(|source| RunError::Listen {
                addr: p.addr,
                source,
            })?;
            listeners.push(fd);
        }
        let waker = Arc::new(Waker::new().map_err(|source| RunError::Worker { index, source })?);
        shutdown.add_waker(waker.clone());
        let core = if cores.is_empty() {
            None
        } else {
            cores.get(index % cores.len()).copied()
        };
        let sd = shutdown.clone();
        let h = std::thread::Builder::new()
            .name(format!("oxit-worker-{index}"))
            .spawn(move || -> Result<(), String> {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                let mut d = driver::new_driver(backend, waker).map_err(|e| e.to_string())?;
                for l in listeners {
                    d.listen(l).map_err(|e| e.to_string())?;
                }
                let mut w = Worker { conns: 0 };
                while !sd.is_triggered() {
                    d.turn(Some(IDLE_TURN), &mut w).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .map_err(|source| RunError::Worker { index, source })?;
        handles.push(h);
    }
    tracing::info!(workers = n, backend = ?backend_name(backend), "relay running");
    let mut first_err = None;
    for (index, h) in handles.into_iter().enumerate() {
        let res = match h.join() {
            Ok(Ok(())) => continue,
            Ok(Err(message)) => RunError::WorkerFailed { index, message },
            Err(_) => RunError::WorkerFailed {
                index,
                message: "worker thread panicked".into(),
            },
        };
        shutdown.trigger();
        first_err.get_or_insert(res);
    }
    first_err.map_or(Ok(()), Err)
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Uring => "io_uring",
        Backend::Epoll => "epoll",
    }
}

struct Worker {
    conns: usize,
}

impl Handler for Worker {
    fn on_event(&mut self, ev: Event<'_>, ops: &mut dyn Ops) {
        match ev {
            Event::Accepted { fd, .. } if ops.add_conn(fd).is_ok() => self.conns += 1,
            Event::RecvClosed(t, _) | Event::SendFailed(t, _) => ops.close(t, false),
            _ => {}
        }
    }

    fn end_of_turn(&mut self, _ops: &mut dyn Ops) {}
}
