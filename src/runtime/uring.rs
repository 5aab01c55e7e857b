//! The io_uring backend: one ring per worker thread.
//!
//! The ring is created `SINGLE_ISSUER | DEFER_TASKRUN`: only the owning
//! worker submits, and completions are processed only when it waits, so
//! each turn gathers a whole batch of completions. Receives take a
//! kernel-chosen buffer from a provided-buffer ring owned by this worker.
//! A socket starts with a multishot receive (one SQE for many buffers:
//! what a busy link needs). A socket the worker paces (`Ops::pace_recv`:
//! exit streams) or has paused once gets single-shot receives instead,
//! re-armed at the end of each turn while the worker wants input: a
//! multishot receive keeps pulling a fast peer's bytes out of the socket
//! after the pause (an exit stream whose circuit window closed, or whose
//! link is full), and those bytes had to be copied aside —
//! megabytes per pause, a quarter of the relay's CPU in page faults and
//! copies at saturation. With one receive at a time at most one buffer
//! arrives after a pause, and the rest waits in the kernel, as on epoll.
//! Accepts are multishot. Output queued by the worker during a turn becomes `SEND`
//! SQEs that go to the kernel with the next `io_uring_enter`, which is also
//! the wait: one syscall per turn.
//!
//! Ownership (see monoio's lifecycle notes): a buffer handed to the kernel
//! (the send buffer, the connect address, the eventfd counter) lives in the
//! socket's slot until the operation's final completion arrives, even after
//! the worker closed the socket. A slot is reused only when it has no
//! operation in flight, so `user_data` is never ambiguous.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::driver::{self, Driver, Event, Handler, Ops, Token, Waker};
use super::slots::Slots;

const RING_ENTRIES: u32 = 1024;
/// Provided receive buffers per worker: 16 KiB each covers a full TLS record.
const BUF_COUNT: u16 = 1024;
const BUF_SIZE: usize = 16 * 1024;
const BGID: u16 = 0;

// user_data = op << 56 | generation << 32 | token. Reserved values use a
// token field that no slot has.
const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_CONNECT: u64 = 4;
const OP_WAKE: u64 = 5;
const OP_CANCEL: u64 = 6;

fn ud(op: u64, t: Token, generation: u32) -> u64 {
    (op << 56) | (u64::from(generation & 0x00ff_ffff) << 32) | u64::from(t.0)
}

struct Conn {
    fd: OwnedFd,
    udp: bool,
    /// Operations whose final completion has not arrived yet.
    inflight: u32,
    recv_armed: bool,
    recv_on: bool,
    connecting: bool,
    /// The bytes the kernel is sending now; never touched while in flight.
    sending: Vec<u8>,
    send_off: usize,
    send_inflight: bool,
    /// Bytes queued by the worker since the last send was submitted.
    out: Vec<u8>,
    connect_addr: Option<Box<(libc::sockaddr_storage, libc::socklen_t)>>,
    /// Closed by the worker after its output drains.
    closing: bool,
    /// Closed by the worker; freed when `inflight` reaches zero.
    dead: bool,
    dirty: bool,
    /// EOF or a receive error was seen: never re-arm.
    ended: bool,
    /// Paused by the worker at least once: receives are single-shot from
    /// then on (see the module comment). Never set on UDP sockets.
    single_shot: bool,
    /// Bytes received after a pause was requested, delivered on resume.
    stash: Vec<u8>,
    stash_end: Option<Option<io::Error>>,
}

/// The provided-buffer ring: `BUF_COUNT` entries the kernel picks from.
struct BufRing {
    entries: *mut types::BufRingEntry,
    entries_len: usize,
    mem: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new() -> io::Result<Self> {
        let entries_len = usize::from(BUF_COUNT) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: anonymous private mapping; checked for MAP_FAILED. The
        // kernel requires the ring to be page aligned, which mmap guarantees.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                entries_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(BufRing {
            entries: ptr.cast(),
            entries_len,
            mem: vec![0; usize::from(BUF_COUNT) * BUF_SIZE],
            tail: 0,
        })
    }

    /// Hand buffer `bid` back to the kernel.
    fn give(&mut self, bid: u16) {
        let mask = BUF_COUNT - 1;
        let idx = usize::from(self.tail & mask);
        // SAFETY: idx < BUF_COUNT, the mapping holds BUF_COUNT entries, and
        // the buffer address points into `mem`, which lives as long as the ring.
        unsafe {
            let e = &mut *self.entries.add(idx);
            e.set_addr(self.mem.as_ptr().add(usize::from(bid) * BUF_SIZE) as u64);
            e.set_len(BUF_SIZE as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publish the entries added by `give` to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's reserved field;
        // the kernel reads it with acquire semantics, so store with release.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * BUF_SIZE;
        let len = len.min(BUF_SIZE);
        self.mem.get(start..start + len).unwrap_or(&[])
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in new(); the ring that
        // used it is dropped first (field order in UringDriver).
        unsafe {
            libc::munmap(self.entries.cast(), self.entries_len);
        }
    }
}

struct State {
    ring: IoUring,
    conns: Slots<Conn>,
    dirty: Vec<Token>,
    /// Sockets whose multishot receive ended and must be re-armed.
    rearm: Vec<Token>,
    /// Sockets resumed with stashed input to deliver.
    resumed: Vec<Token>,
    /// Sockets closing after a flush, with the time we give up on it.
    closing: Vec<(std::time::Instant, (Token, u32))>,
    /// Entries that did not fit in the submission queue, in order.
    overflow: Vec<squeue::Entry>,
}

pub struct UringDriver {
    // Field order matters: the ring (in `st`) must be dropped before the
    // buffer memory it points at.
    st: State,
    bufs: BufRing,
    listeners: Vec<OwnedFd>,
    waker: Arc<Waker>,
    wake_buf: Box<u64>,
    cqes: Vec<(u64, i32, u32)>,
    recycled: bool,
    /// Listeners to re-arm at a time (after running out of descriptors).
    accept_rearm: Vec<(std::time::Instant, usize)>,
    /// [`Driver::close_listeners`] ran: accepts are never armed again.
    listeners_closed: bool,
}

impl UringDriver {
    fn build_ring() -> io::Result<IoUring> {
        IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_submit_all()
            .setup_cqsize(RING_ENTRIES * 8)
            .build(RING_ENTRIES)
    }

    /// Whether this kernel gives us the ring we need.
    pub fn probe() -> io::Result<()> {
        let ring = Self::build_ring()?;
        let bufs = BufRing::new()?;
        // SAFETY: the ring memory is valid until unregistered just below.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.entries as u64,
                BUF_COUNT,
                BGID,
                0,
            )?
        };
        ring.submitter().unregister_buf_ring(BGID)?;
        Ok(())
    }

    pub fn new(waker: Arc<Waker>) -> io::Result<Self> {
        let ring = Self::build_ring()?;
        let mut bufs = BufRing::new()?;
        for bid in 0..BUF_COUNT {
            bufs.give(bid);
        }
        bufs.publish();
        // SAFETY: the entries mapping and buffer memory live in `bufs`, which
        // outlives the ring (dropped after it).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.entries as u64,
                BUF_COUNT,
                BGID,
                0,
            )?
        };
        let mut d = UringDriver {
            st: State {
                ring,
                conns: Slots::new(),
                dirty: Vec::new(),
                rearm: Vec::new(),
                resumed: Vec::new(),
                closing: Vec::new(),
                overflow: Vec::new(),
            },
            bufs,
            listeners: Vec::new(),
            waker,
            wake_buf: Box::new(0),
            cqes: Vec::with_capacity(RING_ENTRIES as usize * 8),
            recycled: false,
            accept_rearm: Vec::new(),
            listeners_closed: false,
        };
        d.arm_waker();
        Ok(d)
    }

    fn arm_waker(&mut self) {
        let sqe = opcode::Read::new(
            types::Fd(self.waker.raw_fd()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(ud(OP_WAKE, Token(u32::MAX), 0));
        self.st.push(sqe);
    }
}

impl State {
    fn push(&mut self, sqe: squeue::Entry) {
        // Keep submission order: once something waits in the overflow list,
        // later entries queue behind it.
        if self.overflow.is_empty() && self.try_push(&sqe) {
            return;
        }
        // Queue full: hand what we have to the kernel and retry once.
        if self.overflow.is_empty() && self.ring.submit().is_ok() && self.try_push(&sqe) {
            return;
        }
        // The kernel is busy (e.g. EBUSY while completions are pending): an
        // operation is never dropped, it waits for the next turn.
        self.overflow.push(sqe);
    }

    fn try_push(&mut self, sqe: &squeue::Entry) -> bool {
        // SAFETY: every buffer an SQE points at lives in a slot (or the
        // driver) until its completion arrives; see the module doc.
        unsafe { self.ring.submission().push(sqe) }.is_ok()
    }

    /// Move entries that did not fit last turn into the queue.
    fn push_overflow(&mut self) {
        let pending = std::mem::take(&mut self.overflow);
        let mut rest = pending.into_iter();
        for sqe in rest.by_ref() {
            if !self.try_push(&sqe) {
                self.overflow.push(sqe);
                break;
            }
        }
        self.overflow.extend(rest);
    }

    fn arm_recv(&mut self, t: Token) {
        let generation = self.conns.generation(t);
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if c.recv_armed || !c.recv_on || c.dead || c.connecting || c.ended {
            return;
        }
        c.recv_armed = true;
        c.inflight += 1;
        let fd = types::Fd(c.fd.as_raw_fd());
        let sqe = if !c.single_shot {
            opcode::RecvMulti::new(fd, BGID).build()
        } else {
            opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        }
        .user_data(ud(OP_RECV, t, generation));
        self.push(sqe);
    }

    fn cancel_all(&mut self, t: Token) {
        let Some(c) = self.conns.get(t) else { return };
        let sqe =
            opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(c.fd.as_raw_fd())).all())
                .build()
                .user_data(ud(OP_CANCEL, Token(u32::MAX), 0));
        self.push(sqe);
    }

    /// Start sending `out` if nothing is in flight.
    fn kick_send(&mut self, t: Token) {
        let generation = self.conns.generation(t);
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        c.dirty = false;
        if c.send_inflight || c.connecting || c.dead {
            return;
        }
        if c.send_off >= c.sending.len() {
            if c.out.is_empty() {
                return;
            }
            c.sending.clear();
            c.send_off = 0;
            std::mem::swap(&mut c.sending, &mut c.out);
        }
        let rest = &c.sending[c.send_off..];
        let len = rest.len().min(u32::MAX as usize) as u32;
        let sqe = opcode::Send::new(types::Fd(c.fd.as_raw_fd()), rest.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud(OP_SEND, t, generation));
        c.send_inflight = true;
        c.inflight += 1;
        self.push(sqe);
    }

    /// Free the slot if the worker closed it and the kernel is done with it.
    fn maybe_free(&mut self, t: Token) {
        if self.conns.get(t).is_some_and(|c| c.dead && c.inflight == 0) {
            self.conns.remove(t);
        }
    }

    fn kill(&mut self, t: Token) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        c.dead = true;
        c.recv_on = false;
        if c.inflight > 0 {
            // A send to a peer with a zero window may sit in a kernel
            // worker that a cancel does not reach; shutting the socket
            // down ends it (and any receive) with an error, so the slot and
            // its descriptor are freed rather than held for good.
            // SAFETY: plain syscall on a descriptor this slot owns.
            unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_RDWR) };
            self.cancel_all(t);
        }
        self.maybe_free(t);
    }

    fn new_conn(&mut self, fd: OwnedFd, udp: bool, connecting: bool) -> Token {
        self.conns
            .insert(Conn {
                fd,
                udp,
                inflight: 0,
                recv_armed: false,
                recv_on: true,
                connecting,
                sending: Vec::new(),
                send_off: 0,
                send_inflight: false,
                out: Vec::new(),
                connect_addr: None,
                closing: false,
                dead: false,
                dirty: false,
                ended: false,
                single_shot: false,
                stash: Vec::new(),
                stash_end: None,
            })
            .0
    }
}

impl Ops for State {
    fn add_conn(&mut self, fd: OwnedFd) -> io::Result<Token> {
        driver::set_nodelay(&fd);
        let t = self.new_conn(fd, false, false);
        self.arm_recv(t);
        Ok(t)
    }

    fn connect(&mut self, addr: SocketAddr, bind: Option<std::net::IpAddr>) -> io::Result<Token> {
        let fd = driver::nonblocking_tcp_socket(&addr, bind)?;
        let t = self.new_conn(fd, false, true);
        let generation = self.conns.generation(t);
        let Some(c) = self.conns.get_mut(t) else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let boxed = Box::new(driver::to_sockaddr(&addr));
        let sqe = opcode::Connect::new(
            types::Fd(c.fd.as_raw_fd()),
            (&boxed.0 as *const libc::sockaddr_storage).cast(),
            boxed.1,
        )
        .build()
        .user_data(ud(OP_CONNECT, t, generation));
        c.connect_addr = Some(boxed);
        c.inflight += 1;
        self.push(sqe);
        Ok(t)
    }

    fn add_udp(&mut self, fd: OwnedFd) -> io::Result<Token> {
        let t = self.new_conn(fd, true, false);
        self.arm_recv(t);
        Ok(t)
    }

    fn send_datagram(&mut self, t: Token, data: &[u8]) -> io::Result<()> {
        let c = self
            .conns
            .get(t)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        // DNS queries are few and small: a direct non-blocking send keeps
        // datagram boundaries without a queue of buffers.
        // SAFETY: send from a live slice on a live fd.
        let n = unsafe {
            libc::send(
                c.fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
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
        if c.dead || c.closing {
            return None;
        }
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(t);
        }
        Some(&mut c.out)
    }

    fn queued(&self, t: Token) -> usize {
        self.conns.get(t).map_or(0, |c| {
            c.out.len() + c.sending.len().saturating_sub(c.send_off)
        })
    }

    fn out_capacity(&self, t: Token) -> usize {
        self.conns
            .get(t)
            .map_or(0, |c| c.out.capacity() + c.sending.capacity())
    }

    fn pace_recv(&mut self, t: Token) {
        if let Some(c) = self.conns.get_mut(t)
            && !c.udp
        {
            c.single_shot = true;
        }
    }

    fn set_recv(&mut self, t: Token, enabled: bool) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if c.dead {
            return;
        }
        let was = c.recv_on;
        c.recv_on = enabled;
        if !enabled && !c.udp {
            c.single_shot = true;
        }
        if enabled {
            if !was && (!c.stash.is_empty() || c.stash_end.is_some()) {
                self.resumed.push(t);
            }
            self.arm_recv(t);
        } else if c.recv_armed {
            // The receive ends with -ECANCELED; data already in the socket
            // stays there until we re-arm.
            let generation = self.conns.generation(t);
            let sqe = opcode::AsyncCancel::new(ud(OP_RECV, t, generation))
                .build()
                .user_data(ud(OP_CANCEL, Token(u32::MAX), 0));
            self.push(sqe);
        }
    }

    fn close(&mut self, t: Token, flush: bool) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if c.dead || (c.closing && flush) {
            return;
        }
        let pending = !c.out.is_empty() || c.send_inflight;
        if flush && pending && !c.connecting {
            c.closing = true;
            c.recv_on = false;
            let generation = self.conns.generation(t);
            self.closing.push((
                std::time::Instant::now() + super::driver::CLOSE_FLUSH_LIMIT,
                (t, generation),
            ));
            let Some(c) = self.conns.get_mut(t) else {
                return;
            };
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(t);
            }
            // Nothing more is read from a closing socket: stop the multishot
            // receive, or a peer that keeps sending would fill the stash.
            if c.recv_armed {
                let generation = self.conns.generation(t);
                let sqe = opcode::AsyncCancel::new(ud(OP_RECV, t, generation))
                    .build()
                    .user_data(ud(OP_CANCEL, Token(u32::MAX), 0));
                self.push(sqe);
            }
        } else {
            self.kill(t);
        }
    }
}

impl UringDriver {
    fn handle_cqe(&mut self, user_data: u64, res: i32, flags: u32, handler: &mut dyn Handler) {
        let op = user_data >> 56;
        let t = Token(user_data as u32);
        let generation = ((user_data >> 32) & 0x00ff_ffff) as u32;
        match op {
            OP_WAKE => {
                self.arm_waker();
                handler.on_event(Event::Woken, &mut self.st);
            }
            OP_CANCEL => {}
            OP_ACCEPT => {
                // A multishot accept that ended is re-armed: at once, or
                // after a pause when it ended because we ran out of file
                // descriptors (re-arming at once would spin).
                if !cqueue::more(flags) {
                    if res < 0 {
                        let at = std::time::Instant::now() + super::epoll::ACCEPT_BACKOFF;
                        self.accept_rearm.push((at, t.index()));
                    } else {
                        self.arm_accept(t.index());
                    }
                }
                if res >= 0 {
                    // SAFETY: a successful accept completion carries a fresh fd.
                    let fd = unsafe { OwnedFd::from_raw_fd(res) };
                    let peer = driver::peer_addr(&fd);
                    handler.on_event(Event::Accepted { fd, peer }, &mut self.st);
                } else {
                    tracing::warn!("accept failed: {}", io::Error::from_raw_os_error(-res));
                }
            }
            OP_RECV => {
                let bid = cqueue::buffer_select(flags);
                let more = cqueue::more(flags);
                let (alive, on, udp) = match self.st.conns.get_generation_mut(t, generation) {
                    Some(c) => {
                        if !more {
                            c.recv_armed = false;
                            c.inflight = c.inflight.saturating_sub(1);
                        }
                        (!c.dead && !c.ended, c.recv_on, c.udp)
                    }
                    None => (false, false, false),
                };
                if alive {
                    let end = if res == 0 && !udp {
                        Some(None)
                    } else if res < 0 && -res != libc::ENOBUFS && -res != libc::ECANCELED {
                        // ENOBUFS (every buffer in use) ends the multishot
                        // receive; it is re-armed below once buffers come
                        // back. ECANCELED is our own pause.
                        Some(Some(io::Error::from_raw_os_error(-res)))
                    } else {
                        None
                    };
                    if res > 0 {
                        if let Some(bid) = bid {
                            let data = self.bufs.get(bid, res as usize);
                            if on || udp {
                                handler.on_event(Event::Recv(t, data), &mut self.st);
                            } else if let Some(c) = self.st.conns.get_mut(t)
                                && !c.closing
                            {
                                // Completions that raced with our pause: the
                                // kernel already took these bytes from the
                                // socket, so keep them for the resume. (A
                                // closing socket's input is dropped.)
                                crate::copy::extend(&mut c.stash, data);
                            }
                        }
                    } else if let Some(end) = end {
                        if let Some(c) = self.st.conns.get_mut(t) {
                            c.ended = true;
                            if on {
                                c.recv_on = false;
                            } else {
                                c.stash_end = Some(end);
                                // Delivered on resume, after the stash.
                                return self.recycle(bid, more, t);
                            }
                        }
                        handler.on_event(Event::RecvClosed(t, end), &mut self.st);
                    }
                }
                self.recycle(bid, more, t);
            }
            OP_SEND => {
                let Some(c) = self.st.conns.get_generation_mut(t, generation) else {
                    return;
                };
                c.send_inflight = false;
                c.inflight = c.inflight.saturating_sub(1);
                if c.dead {
                    self.st.maybe_free(t);
                    return;
                }
                if res < 0 {
                    let err = io::Error::from_raw_os_error(-res);
                    c.out.clear();
                    c.sending.clear();
                    c.send_off = 0;
                    if c.closing {
                        self.st.kill(t);
                    } else {
                        handler.on_event(Event::SendFailed(t, err), &mut self.st);
                    }
                    return;
                }
                c.send_off += res as usize;
                let drained = c.send_off >= c.sending.len() && c.out.is_empty();
                if drained {
                    // Nothing is in flight: the buffers may move.
                    c.sending.clear();
                    c.send_off = 0;
                    driver::release_drained(&mut c.sending);
                    driver::release_drained(&mut c.out);
                }
                if !drained {
                    self.st.kick_send(t);
                } else if c.closing {
                    self.st.kill(t);
                } else {
                    handler.on_event(Event::SendDrained(t), &mut self.st);
                }
            }
            OP_CONNECT => {
                let Some(c) = self.st.conns.get_generation_mut(t, generation) else {
                    return;
                };
                c.inflight = c.inflight.saturating_sub(1);
                c.connecting = false;
                c.connect_addr = None;
                if c.dead {
                    self.st.maybe_free(t);
                    return;
                }
                let res = if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(())
                };
                let ok = res.is_ok();
                handler.on_event(Event::Connected(t, res), &mut self.st);
                if ok {
                    self.st.arm_recv(t);
                    if self.st.conns.get(t).is_some_and(|c| !c.out.is_empty()) {
                        self.st.kick_send(t);
                    }
                }
            }
            _ => {}
        }
    }
}

impl UringDriver {
    /// Return a receive buffer to the kernel and re-arm or free the socket
    /// when its multishot receive ended.
    fn recycle(&mut self, bid: Option<u16>, more: bool, t: Token) {
        if let Some(bid) = bid {
            self.bufs.give(bid);
            self.recycled = true;
        }
        if !more {
            if self
                .st
                .conns
                .get(t)
                .is_some_and(|c| c.recv_on && !c.dead && !c.ended)
            {
                self.st.rearm.push(t);
            }
            self.st.maybe_free(t);
        }
    }

    /// Deliver what arrived while a socket was paused, before anything its
    /// re-armed receive brings.
    fn deliver_resumed(&mut self, handler: &mut dyn Handler) {
        for t in std::mem::take(&mut self.st.resumed) {
            let Some(c) = self.st.conns.get_mut(t) else {
                continue;
            };
            if c.dead || !c.recv_on {
                continue;
            }
            let stash = std::mem::take(&mut c.stash);
            let end = c.stash_end.take();
            if !stash.is_empty() {
                handler.on_event(Event::Recv(t, &stash), &mut self.st);
            }
            if let Some(end) = end {
                if let Some(c) = self.st.conns.get_mut(t) {
                    c.recv_on = false;
                }
                handler.on_event(Event::RecvClosed(t, end), &mut self.st);
            }
        }
    }
}

impl UringDriver {
    fn arm_accept(&mut self, idx: usize) {
        if self.listeners_closed {
            return;
        }
        if let Some(l) = self.listeners.get(idx) {
            let sqe = opcode::AcceptMulti::new(types::Fd(l.as_raw_fd()))
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(ud(OP_ACCEPT, Token(idx as u32), 0));
            self.st.push(sqe);
        }
    }
}

impl Driver for UringDriver {
    fn listen(&mut self, fd: OwnedFd) -> io::Result<()> {
        self.listeners.push(fd);
        self.arm_accept(self.listeners.len() - 1);
        Ok(())
    }

    fn reopen_listeners(&mut self) {
        if !self.listeners_closed {
            return;
        }
        self.listeners_closed = false;
        for (i, l) in self.listeners.iter().enumerate() {
            super::driver::relisten(l);
            self.accept_rearm.push((std::time::Instant::now(), i));
        }
    }

    fn close_listeners(&mut self) {
        // shutdown() ends the armed multishot accepts (they complete with
        // an error and are not re-armed) and makes the kernel refuse new
        // connections; the fds stay open until the driver goes, so no
        // submitted accept can ever name a reused fd number.
        self.listeners_closed = true;
        self.accept_rearm.clear();
        for l in &self.listeners {
            // SAFETY: shutdown on a socket we own; failure leaves it as is.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    fn turn(&mut self, timeout: Option<Duration>, handler: &mut dyn Handler) -> io::Result<()> {
        let now = std::time::Instant::now();
        for idx in super::driver::take_due(&mut self.accept_rearm, now) {
            self.arm_accept(idx);
        }
        // A peer that stops reading (zero window) must not pin a closing
        // socket and its buffers forever.
        for (t, g) in super::driver::take_due(&mut self.st.closing, now) {
            if self
                .st
                .conns
                .get_generation_mut(t, g)
                .is_some_and(|c| c.closing && !c.dead)
            {
                self.st.kill(t);
            }
        }
        let timeout = match self.accept_rearm.iter().map(|&(at, _)| at).min() {
            Some(at) => {
                let left = at.saturating_duration_since(now);
                Some(timeout.map_or(left, |t| t.min(left)))
            }
            None => timeout,
        };
        self.st.push_overflow();
        let busy = !self.st.overflow.is_empty()
            || !self.st.dirty.is_empty()
            || !self.st.rearm.is_empty()
            || !self.st.resumed.is_empty();
        let res = match (busy, timeout) {
            (false, None) => self.st.ring.submit_and_wait(1),
            (busy, t) => {
                let d = if busy {
                    Duration::ZERO
                } else {
                    t.unwrap_or(Duration::ZERO)
                };
                let ts = types::Timespec::new()
                    .sec(d.as_secs())
                    .nsec(d.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.st.ring.submitter().submit_with_args(1, &args)
            }
        };
        if let Err(e) = res {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) => {}
                _ => return Err(e),
            }
        }
        self.deliver_resumed(handler);
        self.cqes.clear();
        self.cqes.extend(
            self.st
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let cqes = std::mem::take(&mut self.cqes);
        for &(u, r, f) in &cqes {
            self.handle_cqe(u, r, f, handler);
        }
        self.cqes = cqes;
        if self.recycled {
            self.bufs.publish();
            self.recycled = false;
        }
        handler.end_of_turn(&mut self.st);
        for t in std::mem::take(&mut self.st.rearm) {
            self.st.arm_recv(t);
        }
        for t in std::mem::take(&mut self.st.dirty) {
            self.st.kick_send(t);
        }
        Ok(())
    }

    fn ops(&mut self) -> &mut dyn Ops {
        &mut self.st
    }

    fn name(&self) -> &'static str {
        "io_uring"
    }
}
