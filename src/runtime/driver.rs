//! The contract between a worker and its I/O backend.
//!
//! Both backends (io_uring in [`super::uring`], epoll in [`super::epoll`])
//! present the same completion-style interface, so the worker's logic is
//! written once: the driver hands the worker [`Event`]s through a
//! [`Handler`], and the handler asks for work through [`Ops`]. Output is
//! queued, not written: everything a handler queued during one turn is
//! flushed together at the end of the turn, which is one `io_uring_enter`
//! on the io_uring backend.
//!
//! Tokens are allocated by the driver. After the worker calls
//! [`Ops::close`] it never hears of that token again; the driver only
//! reuses a slot once the kernel has finished every operation on it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// How long a socket closed "after its output is flushed" may take to flush
/// before it is closed anyway.
pub(crate) const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(30);

/// An output buffer that grew past this (a burst on a link, a destination
/// that stalled) gives its memory back once it drains, instead of keeping
/// the burst's size for the rest of the connection's life. Below it, the
/// room is kept so that steady traffic does not reallocate.
pub(crate) const OUT_KEEP: usize = 64 * 1024;

/// Give back the room of a drained output buffer past [`OUT_KEEP`].
pub(crate) fn release_drained(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > OUT_KEEP {
        buf.shrink_to(OUT_KEEP);
    }
}

/// Remove the entries of a deadline list that are due at `now` and return
/// their payloads (closing sockets to give up on, listeners to re-arm).
pub(crate) fn take_due<T: Copy>(
    list: &mut Vec<(std::time::Instant, T)>,
    now: std::time::Instant,
) -> Vec<T> {
    let mut due = Vec::new();
    list.retain(|&(at, v)| {
        if at <= now {
            due.push(v);
        }
        at > now
    });
    due
}

/// One socket owned by a driver (a TCP connection or a connected UDP socket).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u32);

impl Token {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What happened on the worker's sockets.
#[derive(Debug)]
pub enum Event<'a> {
    /// A listener accepted a connection. The worker decides whether to
    /// keep it ([`Ops::add_conn`]) or drop the fd.
    Accepted {
        fd: OwnedFd,
        peer: Option<SocketAddr>,
    },
    /// Bytes arrived. The slice is only valid during the call.
    Recv(Token, &'a [u8]),
    /// The peer closed its side, or the socket failed. No more `Recv` for
    /// this token; the worker should [`Ops::close`] it.
    RecvClosed(Token, Option<io::Error>),
    /// A connect started with [`Ops::connect`] finished.
    Connected(Token, io::Result<()>),
    /// Everything queued for this token has been written to the kernel.
    /// Lets the worker resume reading a source it paused for backpressure.
    SendDrained(Token),
    /// A write failed; the worker should close the token.
    SendFailed(Token, io::Error),
    /// Another thread called [`Waker::wake`].
    Woken,
}

/// Requests a handler can make while it handles events.
pub trait Ops {
    /// Take ownership of a connected socket and start receiving from it.
    fn add_conn(&mut self, fd: OwnedFd) -> io::Result<Token>;
    /// Start a non-blocking TCP connect; [`Event::Connected`] follows.
    fn connect(&mut self, addr: SocketAddr, bind: Option<std::net::IpAddr>) -> io::Result<Token>;
    /// Adopt a connected UDP socket (one per DNS server); datagrams arrive
    /// as [`Event::Recv`], one per event.
    fn add_udp(&mut self, fd: OwnedFd) -> io::Result<Token>;
    /// Send one datagram now on a UDP token. Errors are returned, not queued:
    /// DNS retries on its own schedule.
    fn send_datagram(&mut self, token: Token, data: &[u8]) -> io::Result<()>;
    /// The buffer of bytes waiting to be written on `token`; append to it.
    /// Flushed at the end of the turn. `None` for an unknown token.
    fn out_buf(&mut self, token: Token) -> Option<&mut Vec<u8>>;
    /// Bytes queued or in flight on `token` and not yet taken by the kernel.
    fn queued(&self, token: Token) -> usize;
    /// Bytes of output buffer `token` holds, used or not.
    fn out_capacity(&self, token: Token) -> usize;
    /// Stop or resume delivering `Recv` for `token` (backpressure).
    fn set_recv(&mut self, token: Token, enabled: bool);
    /// `token` is a source the worker will pause often (an exit stream,
    /// paced by circuit windows and its link's room): take from it only
    /// what one receive brings per turn, so that a pause leaves the rest
    /// in the kernel. The io_uring backend uses single-shot receives for
    /// it instead of a multishot one; epoll already reads once per turn.
    fn pace_recv(&mut self, token: Token);
    /// Close the socket once queued output is flushed (`flush = true`) or
    /// at once. The token is dead for the worker from this call on.
    fn close(&mut self, token: Token, flush: bool);
}

/// The worker side of a turn.
pub trait Handler {
    fn on_event(&mut self, ev: Event<'_>, ops: &mut dyn Ops);
    /// Called once per turn after every event was delivered, before the
    /// driver flushes: the place to run batched work (relay crypto grouped
    /// by circuit) and timers.
    fn end_of_turn(&mut self, ops: &mut dyn Ops);
}

/// Wakes a driver blocked in [`Driver::turn`] from another thread.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, owned descriptor.
        Ok(Waker {
            fd: unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
        })
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd. A full
        // counter (EAGAIN) already means "woken", so the result is ignored.
        unsafe {
            libc::write(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                (&one as *const u64).cast(),
                8,
            );
        }
    }

    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }

    /// Reset the counter after a wakeup (epoll backend).
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN is harmless.
        unsafe {
            libc::read(self.raw_fd(), (&mut v as *mut u64).cast(), 8);
        }
    }
}

/// An I/O backend owned by one worker thread.
pub trait Driver {
    /// Start accepting on a listening socket (multishot on io_uring).
    fn listen(&mut self, fd: OwnedFd) -> io::Result<()>;
    /// Stop accepting for good (a draining shutdown, hibernation): peers
    /// that connect from now on are refused by the kernel. Connections
    /// already accepted stay.
    fn close_listeners(&mut self);
    /// Accept again on the listeners [`Driver::close_listeners`] closed
    /// (hibernation ended). They kept their bound addresses, so this
    /// needs no privilege.
    fn reopen_listeners(&mut self);
    /// Wait for events (at most `timeout`), deliver them, then flush output.
    fn turn(&mut self, timeout: Option<Duration>, handler: &mut dyn Handler) -> io::Result<()>;
    /// Ops outside a turn (set-up, tests).
    fn ops(&mut self) -> &mut dyn Ops;
    /// Name for logs: "io_uring" or "epoll".
    fn name(&self) -> &'static str;
}

/// Which backend to run.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Uring,
    Epoll,
}

/// Build a driver for `backend`, sharing `waker` with other threads.
pub fn new_driver(backend: Backend, waker: std::sync::Arc<Waker>) -> io::Result<Box<dyn Driver>> {
    Ok(match backend {
        Backend::Uring => Box::new(super::uring::UringDriver::new(waker)?),
        Backend::Epoll => Box::new(super::epoll::EpollDriver::new(waker)?),
    })
}

/// True when this kernel lets us build the ring oxit needs
/// (`IOBackend auto` falls back to epoll otherwise).
pub fn uring_available() -> bool {
    super::uring::UringDriver::probe().is_ok()
}

/// A fresh non-blocking, close-on-exec TCP socket for `addr`'s family.
fn tcp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall; the fd is checked before use.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, owned descriptor.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A socket for an outgoing connection (EXTEND2 or an exit stream), from
/// `bind` if given (`OutboundBindAddress*`).
pub(crate) fn nonblocking_tcp_socket(
    addr: &SocketAddr,
    bind: Option<std::net::IpAddr>,
) -> io::Result<OwnedFd> {
    let fd = tcp_socket(addr)?;
    set_nodelay(&fd);
    if let Some(ip) = bind {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let one: libc::c_int = 1;
        // The port is chosen at connect time, per destination, as without
        // a bind: an exit would otherwise run out of ports at ~28k
        // streams (C tor sets the same option, connection.c).
        // SAFETY: setsockopt with a live int on a socket we own.
        unsafe {
            libc::setsockopt(
                raw,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let (sa, len) = to_sockaddr(&SocketAddr::new(ip, 0));
        // SAFETY: sa is a valid sockaddr of length len.
        if unsafe { libc::bind(raw, (&sa as *const libc::sockaddr_storage).cast(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// Cells are latency-sensitive and already batched into TLS records by us:
/// Nagle only adds delay.
pub(crate) fn set_nodelay(fd: &OwnedFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a live int; failure (e.g. on UDP) is harmless.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

pub(crate) fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
    // SAFETY: fcntl on a live fd.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl on a live fd.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Convert a socket address to the C form for connect().
pub(crate) fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The peer address of a connected socket, if the kernel tells us.
pub fn peer_addr(fd: &OwnedFd) -> Option<SocketAddr> {
    sock_name(fd, true)
}

/// The local address of a socket.
pub fn local_addr(fd: &OwnedFd) -> Option<SocketAddr> {
    sock_name(fd, false)
}

fn sock_name(fd: &OwnedFd, peer: bool) -> Option<SocketAddr> {
    // SAFETY: zeroed sockaddr_storage is valid; the kernel fills at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
    let ptr = (&mut storage as *mut libc::sockaddr_storage).cast();
    // SAFETY: pointers to live locals with the right length.
    let rc = unsafe {
        if peer {
            libc::getpeername(raw, ptr, &mut len)
        } else {
            libc::getsockname(raw, ptr, &mut len)
        }
    };
    if rc != 0 {
        return None;
    }
    from_sockaddr(&storage)
}

pub(crate) fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: family says this is a sockaddr_in.
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: family says this is a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `listen` again on a socket shut down by [`Driver::close_listeners`]
/// (Linux keeps its explicit binding; a warning if it fails).
pub(crate) fn relisten(fd: &OwnedFd) {
    // SAFETY: listen on a socket we own.
    if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(fd), 1024) } != 0 {
        tracing::warn!(
            "cannot listen again after hibernation: {}",
            io::Error::last_os_error()
        );
    }
}

/// A per-core listener: `SO_REUSEPORT` lets every worker bind the same
/// ORPort and the kernel spreads incoming connections across them.
pub fn reuseport_listener(addr: SocketAddr) -> io::Result<OwnedFd> {
    let fd = tcp_socket(&addr)?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: setsockopt with a live int.
        let rc = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let (sa, len) = to_sockaddr(&addr);
    // SAFETY: sa is a valid sockaddr of length len.
    if unsafe { libc::bind(raw, (&sa as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen on a bound socket.
    if unsafe { libc::listen(raw, 1024) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
