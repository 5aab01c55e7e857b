//! Destinations that misbehave on purpose, for the attacks on an exit:
//! one that accepts and never reads ([`NeverReads`]), one whose accept
//! queue is full so that the kernel drops new SYNs ([`DropsSyns`]).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::{HarnessError, io_err};

/// A TCP server that accepts every connection and never reads, with a
/// tiny receive buffer so that it takes little of what is sent to it.
pub struct NeverReads {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NeverReads {
    /// Listen on 127.0.0.1 with room for `backlog` connections not yet
    /// accepted.
    pub fn start(backlog: i32) -> Result<NeverReads, HarnessError> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .map_err(io_err("socket"))?;
        // Set before listen: accepted sockets inherit it, and the window
        // they offer stays small.
        sock.set_recv_buffer_size(4096)
            .map_err(io_err("SO_RCVBUF"))?;
        sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .map_err(io_err("bind"))?;
        sock.listen(backlog).map_err(io_err("listen"))?;
        let l: TcpListener = sock.into();
        l.set_nonblocking(true).map_err(io_err("nonblocking"))?;
        let addr = l.local_addr().map_err(io_err("local_addr"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, n) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        held.push(c);
                        n.store(held.len(), Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(NeverReads {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted (and held) so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for NeverReads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listener whose accept queue is filled at once (backlog 0 holds one
/// connection), so that the SYNs that follow are dropped and a connect to
/// it hangs until the connecting side gives up.
pub struct DropsSyns {
    addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl DropsSyns {
    pub fn start() -> Result<DropsSyns, HarnessError> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .map_err(io_err("socket"))?;
        sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .map_err(io_err("bind"))?;
        sock.listen(0).map_err(io_err("listen"))?;
        let l: TcpListener = sock.into();
        let addr = l.local_addr().map_err(io_err("local_addr"))?;
        let fillers = (0..2)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok())
            .collect();
        Ok(DropsSyns {
            addr,
            _listener: l,
            _fillers: fillers,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Raise this process's soft `RLIMIT_NOFILE` to its hard limit: a test
/// that holds thousands of sockets needs more than the usual 1,024.
pub fn raise_fd_limit() -> Result<u64, HarnessError> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(io_err("getrlimit")(std::io::Error::last_os_error()));
    }
    l.rlim_cur = l.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
        return Err(io_err("setrlimit")(std::io::Error::last_os_error()));
    }
    Ok(l.rlim_cur)
}
