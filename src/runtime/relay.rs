//! What starting the data plane needs from its surroundings: the I/O
//! backend, the worker count, the resolver's settings, this host's
//! interface addresses, and the errors of starting and running.

use std::io;

use thiserror::Error;

use crate::config::{Config, IoBackend};

use super::driver::{self, Backend};

#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot listen on ORPort {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("cannot listen on MetricsPort {addr}: {source}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("IOBackend uring was requested but io_uring is not available here: {0}")]
    UringUnavailable(io::Error),
    #[error("cannot start worker {index}: {source}")]
    Worker { index: usize, source: io::Error },
    #[error("worker {index} failed: {message}")]
    WorkerFailed { index: usize, message: String },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot read ServerDNSResolvConfFile {path}: {source}")]
    ResolvConfRead {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    ResolvConf(String),
    #[error("{0}")]
    Keys(String),
}

/// The per-worker resolver's settings, from `ServerDNSResolvConfFile`.
pub fn resolver_config(config: &Config) -> Result<crate::exit::dns::ResolverConfig, RunError> {
    let path = &config.server_dns_resolv_conf_file;
    let text = std::fs::read_to_string(path).map_err(|source| RunError::ResolvConfRead {
        path: path.clone(),
        source,
    })?;
    let (cfg, notes) =
        crate::exit::dns::ResolverConfig::from_resolv_conf(&text, &path.display().to_string())
            .map_err(|e| RunError::ResolvConf(e.to_string()))?;
    for n in notes {
        tracing::info!("{}:{}: {}", path.display(), n.line, n.message);
    }
    let mut cfg = cfg;
    cfg.randomize_case = config.server_dns_randomize_case;
    Ok(cfg)
}

/// The addresses of this host's interfaces, for
/// `ExitPolicyRejectLocalInterfaces` (C: get_interface_address6_list).
pub fn local_interface_addrs() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: cur walks the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of at least its family's size.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as libc::c_int;
            if fam == libc::AF_INET || fam == libc::AF_INET6 {
                // SAFETY: sockaddr_storage is large enough for either family;
                // we copy only the family's own size.
                let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
                let len = if fam == libc::AF_INET {
                    std::mem::size_of::<libc::sockaddr_in>()
                } else {
                    std::mem::size_of::<libc::sockaddr_in6>()
                };
                // SAFETY: copies `len` bytes of a sockaddr of that family.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        ifa.ifa_addr.cast::<u8>(),
                        (&mut st as *mut libc::sockaddr_storage).cast::<u8>(),
                        len,
                    )
                };
                if let Some(a) = super::driver::from_sockaddr(&st) {
                    out.push(a.ip());
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees the list from getifaddrs exactly once.
    unsafe { libc::freeifaddrs(ifap) };
    out
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
