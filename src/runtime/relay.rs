//! Starting and stopping the relay's workers.
//!
//! `run` binds one `SO_REUSEPORT` listener per worker on every ORPort,
//! starts the workers pinned one per core, and returns when a shutdown is
//! requested and every worker has closed its channels.

use std::io;
use std::sync::Arc;

use thiserror::Error;

use crate::config::{Config, IoBackend};
use crate::control::Shutdown;
use crate::crypto::keys::RelayKeys;

use super::driver::{self, Backend};

#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot listen on ORPort {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("IOBackend uring was requested but io_uring is not available here: {0}")]
    UringUnavailable(io::Error),
    #[error("cannot start worker {index}: {source}")]
    Worker { index: usize, source: io::Error },
    #[error("worker {index} failed: {message}")]
    WorkerFailed { index: usize, message: String },
}

/// Which backend `IOBackend` selects on this machine.
pub fn choose_backend(cfg: IoBackend) -> Result<Backend, RunError> {
    match cfg {
        IoBackend::Epoll => Ok(Backend::Epoll),
        IoBackend::Uring => match super::uring::UringDriver::probe() {
            Ok(()) => Ok(Backend::Uring),
            Err(e) => Err(RunError::UringUnavailable(e)),
        },
        IoBackend::Auto => {
            if driver::uring_available() {
                Ok(Backend::Uring)
            } else {
                tracing::warn!(
                    "io_uring is not available on this kernel or container; using epoll"
                );
                Ok(Backend::Epoll)
            }
        }
    }
}

/// Number of workers `NumCPUs` asks for (0 = every core we may run on).
pub fn worker_count(num_cpus: u32) -> usize {
    if num_cpus > 0 {
        return num_cpus as usize;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Run the relay until `shutdown` is triggered.
pub fn run(config: &Config, keys: RelayKeys, shutdown: Arc<Shutdown>) -> Result<(), RunError> {
    super::worker::run_workers(config, keys, shutdown)
}
