//! The epoll backend, for kernels or containers that block io_uring.
//!
//! It follows mio's readiness contract: sockets are registered
//! edge-triggered, so a readable or writable notification is drained until
//! `EAGAIN` (or the per-turn budget runs out, in which case the socket stays
//! on the ready list and the next wait does not block); readiness flags other
//! than in/out are hints; sub-millisecond timeouts round up so a short timer
//! never turns into a busy loop. Its behaviour towards the worker is the one
//! the io_uring backend has: see [`super::driver`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::driver::{self, Driver, Event, Handler, Ops, Token, Waker};
use super::slots::Slots;

const LISTENER_TAG: u64 = 1 << 62;
const WAKER_TAG: u64 = 1 << 63;
/// Bytes read per socket per turn before others get their turn.
const READ_BUDGET: usize = 256 * 1024;
const SCRATCH: usize = 64 * 1024;
/// How long to stop accepting after running out of file descriptors.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

struct Conn {
    fd: OwnedFd,
    udp: bool,
    connecting: bool,
    out: Vec<u8>,
    recv_on: bool,
    readable: bool,
    writable: bool,
    /// Closed by the worker; waiting for `out` to drain.
    closing: bool,
    dirty: bool,
}

struct State {
    ep: OwnedFd,
    conns: Slots<Conn>,
    listeners: Vec<OwnedFd>,
    /// Sockets with unread data left over from an earlier turn.
    ready: Vec<Token>,
    /// Sockets with output queued this turn.
    dirty: Vec<Token>,
    /// Sockets closing after a flush, with the time we give up on it.
    closing: Vec<(std::time::Instant, (Token, u32))>,
}

pub struct EpollDriver {
    st: State,
    waker: Arc<Waker>,
    events: Vec<libc::epoll_event>,
    scratch: Vec<u8>,
    /// Accepting is paused (out of file descriptors) until then.
    accept_paused_until: Option<std::time::Instant>,
    /// Listeners [`Driver::close_listeners`] shut down, kept open so their
    /// fd numbers are not reused while events may still name them.
    closed_listeners: Vec<OwnedFd>,
}

fn key(t: Token, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(t.0)
}

impl EpollDriver {
    pub fn new(waker: Arc<Waker>) -> io::Result<Self> {
        // SAFETY: plain syscall, checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh owned fd.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let st = State {
            ep,
            conns: Slots::new(),
            listeners: Vec::new(),
            ready: Vec::new(),
            dirty: Vec::new(),
            closing: Vec::new(),
        };
        st.ctl(
            libc::EPOLL_CTL_ADD,
            waker.raw_fd(),
            libc::EPOLLIN as u32,
            WAKER_TAG,
        )?;
        Ok(EpollDriver {
            st,
            waker,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
            scratch: vec![0; SCRATCH],
            accept_paused_until: None,
            closed_listeners: Vec::new(),
        })
    }
}

impl State {
    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: epoll_ctl with a live event struct.
        if unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn register(&mut self, fd: OwnedFd, udp: bool, connecting: bool) -> io::Result<Token> {
        let raw = fd.as_raw_fd();
        let (t, generation) = self.conns.insert(Conn {
            fd,
            udp,
            connecting,
            out: Vec::new(),
            recv_on: true,
            readable: false,
            writable: false,
            closing: false,
            dirty: false,
        });
        let flags = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
        if let Err(e) = self.ctl(libc::EPOLL_CTL_ADD, raw, flags as u32, key(t, generation)) {
            self.conns.remove(t);
            return Err(e);
        }
        Ok(t)
    }

    fn destroy(&mut self, t: Token) {
        if let Some(c) = self.conns.remove(t) {
            // The fd closes on drop; closing removes it from the epoll set.
            drop(c);
        }
    }

    /// Write as much queued output as the socket takes. Returns true when
    /// the queue went from non-empty to empty.
    fn flush_one(&mut self, t: Token) -> Result<bool, io::Error> {
        let Some(c) = self.conns.get_mut(t) else {
            return Ok(false);
        };
        c.dirty = false;
        if c.connecting || c.out.is_empty() {
            return Ok(false);
        }
        let mut off = 0;
        while off < c.out.len() {
            let rest = &c.out[off..];
            // SAFETY: writes from a live slice. MSG_NOSIGNAL: a closed peer is
            // an error to report, not a SIGPIPE.
            let n = unsafe {
                libc::send(
                    c.fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        c.writable = false;
                        break;
                    }
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        c.out.clear();
                        return Err(e);
                    }
                }
            }
            off += n as usize;
        }
        c.out.drain(..off);
        driver::release_drained(&mut c.out);
        Ok(c.out.is_empty())
    }
}

impl Ops for State {
    fn add_conn(&mut self, fd: OwnedFd) -> io::Result<Token> {
        driver::set_nonblocking(&fd)?;
        driver::set_nodelay(&fd);
        self.register(fd, false, false)
    }

    fn connect(&mut self, addr: SocketAddr, bind: Option<std::net::IpAddr>) -> io::Result<Token> {
        let fd = driver::nonblocking_tcp_socket(&addr, bind)?;
        let (sa, len) = driver::to_sockaddr(&addr);
        // SAFETY: sa is a valid sockaddr of length len.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        // Edge-triggered registration reports the initial writable state, so
        // an immediate success still produces the Connected event.
        self.register(fd, false, true)
    }

    fn add_udp(&mut self, fd: OwnedFd) -> io::Result<Token> {
        driver::set_nonblocking(&fd)?;
        self.register(fd, true, false)
    }

    fn send_datagram(&mut self, t: Token, data: &[u8]) -> io::Result<()> {
        let c = self
            .conns
            .get(t)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        // SAFETY: send from a live slice on a live fd.
        let n = unsafe {
            libc::send(
                c.fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn out_buf(&mut self, t: Token) -> Option<&mut Vec<u8>> {
        let c = self.conns.get_mut(t)?;
        if c.closing {
            return None;
        }
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(t);
        }
        Some(&mut c.out)
    }

    fn queued(&self, t: Token) -> usize {
        self.conns.get(t).map_or(0, |c| c.out.len())
    }

    fn out_capacity(&self, t: Token) -> usize {
        self.conns.get(t).map_or(0, |c| c.out.capacity())
    }

    fn pace_recv(&mut self, _t: Token) {}

    fn set_recv(&mut self, t: Token, enabled: bool) {
        if let Some(c) = self.conns.get_mut(t) {
            let was = c.recv_on;
            c.recv_on = enabled;
            // Edge-triggered: readiness that arrived while paused is not
            // reported again, so resume by trying to read.
            if enabled && !was && c.readable {
                self.ready.push(t);
            }
        }
    }

    fn close(&mut self, t: Token, flush: bool) {
        let generation = self.conns.generation(t);
        let deadline = std::time::Instant::now() + super::driver::CLOSE_FLUSH_LIMIT;
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if flush && !c.out.is_empty() && !c.connecting {
            c.closing = true;
            c.recv_on = false;
            self.closing.push((deadline, (t, generation)));
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(t);
            }
        } else {
            self.destroy(t);
        }
    }
}

impl EpollDriver {
    fn accept_all(&mut self, li: usize, handler: &mut dyn Handler) {
        loop {
            let Some(l) = self.st.listeners.get(li) else {
                return;
            };
            // SAFETY: accept4 on a live listening socket; no address wanted.
            let fd = unsafe {
                libc::accept4(
                    l.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                    io::ErrorKind::WouldBlock => return,
                    // EMFILE and friends: the backlog keeps the connection.
                    // The listener is level-triggered, so retrying at once
                    // would spin: stop listening for a moment.
                    _ => {
                        tracing::warn!(
                            "accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}"
                        );
                        self.pause_listeners();
                        return;
                    }
                }
            }
            // SAFETY: fresh owned fd.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let peer = driver::peer_addr(&fd);
            handler.on_event(Event::Accepted { fd, peer }, &mut self.st);
        }
    }

    fn pause_listeners(&mut self) {
        for l in &self.st.listeners {
            let _ = self.st.ctl(libc::EPOLL_CTL_MOD, l.as_raw_fd(), 0, 0);
        }
        self.accept_paused_until = Some(std::time::Instant::now() + ACCEPT_BACKOFF);
    }

    fn resume_listeners_if_due(&mut self) {
        let Some(at) = self.accept_paused_until else {
            return;
        };
        if std::time::Instant::now() < at {
            return;
        }
        self.accept_paused_until = None;
        for (i, l) in self.st.listeners.iter().enumerate() {
            let _ = self.st.ctl(
                libc::EPOLL_CTL_MOD,
                l.as_raw_fd(),
                libc::EPOLLIN as u32,
                LISTENER_TAG | i as u64,
            );
        }
    }

    /// Read from one ready socket, within the budget.
    fn read_one(&mut self, t: Token, handler: &mut dyn Handler) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(c) = self.st.conns.get_mut(t) else {
                return;
            };
            if !c.recv_on || c.closing {
                return;
            }
            if !c.readable {
                return;
            }
            if budget == 0 {
                self.st.ready.push(t);
                return;
            }
            // SAFETY: reads into the live scratch buffer.
            let n = unsafe {
                libc::recv(
                    c.fd.as_raw_fd(),
                    self.scratch.as_mut_ptr().cast(),
                    self.scratch.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        c.readable = false;
                        return;
                    }
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        c.readable = false;
                        c.recv_on = false;
                        handler.on_event(Event::RecvClosed(t, Some(e)), &mut self.st);
                        return;
                    }
                }
            }
            if n == 0 && !c.udp {
                c.readable = false;
                c.recv_on = false;
                handler.on_event(Event::RecvClosed(t, None), &mut self.st);
                return;
            }
            let n = n as usize;
            budget = budget.saturating_sub(n.max(1));
            handler.on_event(Event::Recv(t, &self.scratch[..n]), &mut self.st);
        }
    }

    fn flush(&mut self, handler: &mut dyn Handler) {
        // Handlers may queue more output when told a queue drained; bound the
        // rounds so a handler that always writes cannot keep us here.
        for _ in 0..4 {
            if self.st.dirty.is_empty() {
                return;
            }
            let dirty = std::mem::take(&mut self.st.dirty);
            let mut drained = Vec::new();
            for t in dirty {
                match self.st.flush_one(t) {
                    Ok(true) => {
                        if self.st.conns.get(t).is_some_and(|c| c.closing) {
                            self.st.destroy(t);
                        } else {
                            drained.push(t);
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        if self.st.conns.get(t).is_some_and(|c| c.closing) {
                            self.st.destroy(t);
                        } else {
                            handler.on_event(Event::SendFailed(t, e), &mut self.st);
                        }
                    }
                }
            }
            for t in drained {
                handler.on_event(Event::SendDrained(t), &mut self.st);
            }
        }
    }
}

impl Driver for EpollDriver {
    fn reopen_listeners(&mut self) {
        for l in std::mem::take(&mut self.closed_listeners) {
            driver::relisten(&l);
            if let Err(e) = self.listen(l) {
                tracing::warn!("cannot accept again after hibernation: {e}");
            }
        }
    }

    fn close_listeners(&mut self) {
        // Out of the epoll set first (a shut-down listener would report
        // itself ready forever), then refused by the kernel; the fds are
        // kept, and accept_all finds no listener by index any more.
        for l in std::mem::take(&mut self.st.listeners) {
            let _ = self.st.ctl(libc::EPOLL_CTL_DEL, l.as_raw_fd(), 0, 0);
            // SAFETY: shutdown on a socket we own; failure leaves it as is.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
            self.closed_listeners.push(l);
        }
        self.accept_paused_until = None;
    }

    fn listen(&mut self, fd: OwnedFd) -> io::Result<()> {
        driver::set_nonblocking(&fd)?;
        let idx = self.st.listeners.len() as u64;
        self.st.ctl(
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            libc::EPOLLIN as u32,
            LISTENER_TAG | idx,
        )?;
        self.st.listeners.push(fd);
        Ok(())
    }

    fn turn(&mut self, timeout: Option<Duration>, handler: &mut dyn Handler) -> io::Result<()> {
        self.resume_listeners_if_due();
        // A peer that stops reading (zero window) must not pin a closing
        // socket and its buffer forever.
        let now = std::time::Instant::now();
        for (t, g) in super::driver::take_due(&mut self.st.closing, now) {
            if self
                .st
                .conns
                .get_generation_mut(t, g)
                .is_some_and(|c| c.closing)
            {
                self.st.destroy(t);
            }
        }
        let timeout = match self.accept_paused_until {
            Some(at) => {
                let left = at.saturating_duration_since(std::time::Instant::now());
                Some(timeout.map_or(left, |t| t.min(left)))
            }
            None => timeout,
        };
        let ms = if !self.st.ready.is_empty() || !self.st.dirty.is_empty() {
            0
        } else {
            match timeout {
                None => -1,
                // Round up: a 0.3 ms timer must not become a 0 ms busy poll.
                Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
            }
        };
        // SAFETY: the events buffer is live and its length is passed.
        let n = unsafe {
            libc::epoll_wait(
                self.st.ep.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let mut ready = std::mem::take(&mut self.st.ready);
        for i in 0..n.max(0) as usize {
            let ev = self.events[i];
            let (bits, data) = (ev.events, ev.u64);
            if data == WAKER_TAG {
                self.waker.drain();
                handler.on_event(Event::Woken, &mut self.st);
                continue;
            }
            if data & LISTENER_TAG != 0 {
                self.accept_all((data & !LISTENER_TAG) as usize, handler);
                continue;
            }
            let t = Token(data as u32);
            let generation = (data >> 32) as u32;
            let Some(c) = self.st.conns.get_generation_mut(t, generation) else {
                continue;
            };
            let err = bits & (libc::EPOLLERR as u32) != 0;
            if c.connecting {
                if bits & (libc::EPOLLOUT as u32 | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32)
                    == 0
                {
                    continue;
                }
                c.connecting = false;
                let res = so_error(&c.fd);
                let ok = res.is_ok();
                if ok {
                    c.writable = true;
                }
                handler.on_event(Event::Connected(t, res), &mut self.st);
                if !ok {
                    continue;
                }
                let Some(c) = self.st.conns.get_generation_mut(t, generation) else {
                    continue;
                };
                if !c.out.is_empty() && !c.dirty {
                    c.dirty = true;
                    self.st.dirty.push(t);
                }
                if bits & (libc::EPOLLIN as u32) != 0 {
                    c.readable = true;
                    ready.push(t);
                }
                continue;
            }
            if bits & (libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32 | libc::EPOLLHUP as u32) != 0
                || err
            {
                c.readable = true;
                ready.push(t);
            }
            if bits & (libc::EPOLLOUT as u32) != 0 {
                c.writable = true;
                if !c.out.is_empty() && !c.dirty {
                    c.dirty = true;
                    self.st.dirty.push(t);
                }
            }
        }
        ready.sort_unstable();
        ready.dedup();
        for t in ready {
            self.read_one(t, handler);
        }
        handler.end_of_turn(&mut self.st);
        self.flush(handler);
        Ok(())
    }

    fn ops(&mut self) -> &mut dyn Ops {
        &mut self.st
    }

    fn name(&self) -> &'static str {
        "epoll"
    }
}

fn so_error(fd: &OwnedFd) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live int of the given length.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if err != 0 {
        Err(io::Error::from_raw_os_error(err))
    } else {
        Ok(())
    }
}
