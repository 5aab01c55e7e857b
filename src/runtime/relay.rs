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
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot read ServerDNSResolvConfFile {path}: {source}")]
    ResolvConfRead {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    ResolvConf(String),
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

/// Run the relay until `shutdown` is triggered.
pub fn run(config: &Config, keys: RelayKeys, shutdown: Arc<Shutdown>) -> Result<(), RunError> {
    super::worker::run_workers(config, keys, shutdown)
}

/// The circuit layer's snapshot: onion keys, identities, exit policy and
/// the exit options.
pub fn circuit_config(config: &Config, keys: &RelayKeys) -> crate::proto::circuit::CircuitConfig {
    use crate::crypto::ntor::{NtorKeypair, NtorOnionKeys};
    let onion_keys = NtorOnionKeys {
        current: NtorKeypair::from_secret_bytes(*keys.ntor_key().secret()),
        previous: keys
            .ntor_key_old()
            .map(|k| NtorKeypair::from_secret_bytes(*k.secret())),
    };
    crate::proto::circuit::CircuitConfig {
        onion_keys,
        rsa_id: *keys.rsa_identity().as_bytes(),
        ed_id: *keys.ed_identity(),
        exit_policy: config.build_exit_policy(&local_interface_addrs()),
        ipv6_exit: config.ipv6_exit,
        // oxit has no consensus yet: `auto` behaves as C tor's default
        // consensus value (refuseunknownexits = 1).
        refuse_unknown_exits: config.refuse_unknown_exits.as_option().unwrap_or(true),
        extend_allow_private: config.extend_allow_private_addresses,
        own_addrs: config.or_ports.iter().map(|p| p.addr).collect(),
        known_relays: Default::default(),
        circwindow: 1000,
        max_queue: 2500,
    }
}
