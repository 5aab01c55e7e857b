//! Both backends against real loopback sockets, with the same handler:
//! what one does, the other must do too.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::driver::{self, Backend, Driver, Event, Handler, Ops, Token, Waker};

fn backends() -> Vec<Backend> {
    assert!(
        driver::uring_available(),
        "io_uring is expected to work on the machines we test on"
    );
    vec![Backend::Uring, Backend::Epoll]
}

fn turn_until(d: &mut dyn Driver, h: &mut dyn Handler, mut done: impl FnMut(&dyn Handler) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(h) {
        assert!(Instant::now() < deadline, "{} driver: timed out", d.name());
        d.turn(Some(Duration::from_millis(20)), h).unwrap();
    }
}

#[derive(Default)]
struct Echo {
    accepted: usize,
    closed: usize,
    bytes: usize,
    paused: Option<Token>,
    pause_after: Option<usize>,
}

impl Handler for Echo {
    fn on_event(&mut self, ev: Event<'_>, ops: &mut dyn Ops) {
        match ev {
            Event::Accepted { fd, .. } => {
                self.accepted += 1;
                ops.add_conn(fd).unwrap();
            }
            Event::Recv(t, data) => {
                self.bytes += data.len();
                ops.out_buf(t).unwrap().extend_from_slice(data);
                if self.pause_after.is_some_and(|n| self.bytes >= n) && self.paused.is_none() {
                    ops.set_recv(t, false);
                    self.paused = Some(t);
                }
            }
            Event::RecvClosed(t, _) => {
                self.closed += 1;
                ops.close(t, true);
            }
            Event::SendFailed(t, _) => ops.close(t, false),
            _ => {}
        }
    }
    fn end_of_turn(&mut self, _ops: &mut dyn Ops) {}
}

fn listener(d: &mut dyn Driver) -> SocketAddr {
    let fd = driver::reuseport_listener("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = driver::local_addr(&fd).unwrap();
    d.listen(fd).unwrap();
    addr
}

#[test]
fn echo_large_transfer_on_both_backends() {
    for b in backends() {
        let mut d = driver::new_driver(b, Arc::new(Waker::new().unwrap())).unwrap();
        let addr = listener(d.as_mut());
        let data: Vec<u8> = (0..4 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let expect = data.clone();
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut r = s.try_clone().unwrap();
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                r.read_to_end(&mut got).unwrap();
                got
            });
            s.write_all(&data).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            reader.join().unwrap()
        });
        let mut h = Echo::default();
        turn_until(d.as_mut(), &mut h, |_| client.is_finished());
        let got = client.join().unwrap();
        assert_eq!(got.len(), expect.len(), "{b:?}");
        assert!(got == expect, "{b:?}: echoed bytes differ");
    }
}

#[test]
fn pause_and_resume_receiving() {
    for b in backends() {
        let mut d = driver::new_driver(b, Arc::new(Waker::new().unwrap())).unwrap();
        let addr = listener(d.as_mut());
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&[7u8; 1000]).unwrap();
        let mut h = Echo {
            pause_after: Some(1),
            ..Default::default()
        };
        turn_until(d.as_mut(), &mut h, |h| {
            let h = unsafe_downcast(h);
            h.paused.is_some()
        });
        let before = h.bytes;
        s.write_all(&[8u8; 5000]).unwrap();
        for _ in 0..10 {
            d.turn(Some(Duration::from_millis(5)), &mut h).unwrap();
        }
        // Data already received in the pausing turn may be delivered; nothing
        // written after the pause may be.
        assert!(h.bytes <= before.max(1000), "{b:?}: received while paused");
        let t = h.paused.unwrap();
        h.pause_after = None;
        d.ops().set_recv(t, true);
        // io_uring hands queued output to the kernel on the next turn, so
        // keep turning while the client reads the echo.
        let mut r = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut back = vec![0u8; 6000];
            r.read_exact(&mut back).unwrap();
            back
        });
        turn_until(d.as_mut(), &mut h, |_| reader.is_finished());
        let back = reader.join().unwrap();
        assert_eq!(&back[..1000], &[7u8; 1000][..]);
        assert_eq!(&back[1000..], &[8u8; 5000][..]);
    }
}

// The handler in these tests is always an `Echo`; `turn_until`'s predicate
// sees it as `&dyn Handler`.
fn unsafe_downcast(h: &dyn Handler) -> &Echo {
    // SAFETY: every caller passes an `Echo`.
    unsafe { &*(h as *const dyn Handler as *const Echo) }
}

#[derive(Default)]
struct Dialer {
    connected: Option<Result<(), std::io::ErrorKind>>,
    got: Vec<u8>,
    closed: bool,
}

impl Handler for Dialer {
    fn on_event(&mut self, ev: Event<'_>, ops: &mut dyn Ops) {
        match ev {
            Event::Connected(t, r) => {
                self.connected = Some(r.as_ref().map(|_| ()).map_err(|e| e.kind()));
                if r.is_ok() {
                    ops.out_buf(t).unwrap().extend_from_slice(b"ping");
                } else {
                    ops.close(t, false);
                }
            }
            Event::Recv(_, data) => self.got.extend_from_slice(data),
            Event::RecvClosed(t, _) => {
                self.closed = true;
                ops.close(t, false);
            }
            _ => {}
        }
    }
    fn end_of_turn(&mut self, _ops: &mut dyn Ops) {}
}

#[test]
fn outgoing_connect_and_refused_connect() {
    for b in backends() {
        let mut d = driver::new_driver(b, Arc::new(Waker::new().unwrap())).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"hello").unwrap();
            buf
        });
        d.ops().connect(addr, None).unwrap();
        let mut h = Dialer::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !h.closed {
            assert!(Instant::now() < deadline, "{b:?}: timed out");
            d.turn(Some(Duration::from_millis(20)), &mut h).unwrap();
        }
        assert_eq!(h.connected, Some(Ok(())));
        assert_eq!(h.got, b"hello");
        assert_eq!(&server.join().unwrap(), b"ping");

        // A port nobody listens on: the connect completes with an error.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        d.ops().connect(dead, None).unwrap();
        let mut h = Dialer::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.connected.is_none() {
            assert!(Instant::now() < deadline, "{b:?}: timed out");
            d.turn(Some(Duration::from_millis(20)), &mut h).unwrap();
        }
        assert_eq!(
            h.connected,
            Some(Err(std::io::ErrorKind::ConnectionRefused)),
            "{b:?}"
        );
    }
}

#[derive(Default)]
struct Datagrams {
    got: Vec<Vec<u8>>,
    woken: bool,
}

impl Handler for Datagrams {
    fn on_event(&mut self, ev: Event<'_>, _ops: &mut dyn Ops) {
        match ev {
            Event::Recv(_, data) => self.got.push(data.to_vec()),
            Event::Woken => self.woken = true,
            _ => {}
        }
    }
    fn end_of_turn(&mut self, _ops: &mut dyn Ops) {}
}

#[test]
fn udp_datagrams_keep_boundaries_and_waker_wakes() {
    for b in backends() {
        let waker = Arc::new(Waker::new().unwrap());
        let mut d = driver::new_driver(b, waker.clone()).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ours = UdpSocket::bind("127.0.0.1:0").unwrap();
        ours.connect(peer.local_addr().unwrap()).unwrap();
        peer.connect(ours.local_addr().unwrap()).unwrap();
        let t = d.ops().add_udp(OwnedFd::from(ours)).unwrap();
        d.ops().send_datagram(t, b"query").unwrap();
        let mut buf = [0u8; 64];
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"query");
        peer.send(b"one").unwrap();
        peer.send(b"two!").unwrap();
        let mut h = Datagrams::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.got.len() < 2 {
            assert!(Instant::now() < deadline, "{b:?}: timed out");
            d.turn(Some(Duration::from_millis(20)), &mut h).unwrap();
        }
        assert_eq!(h.got, vec![b"one".to_vec(), b"two!".to_vec()]);

        let w = waker.clone();
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            w.wake();
        });
        let start = Instant::now();
        while !h.woken {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{b:?}: not woken"
            );
            d.turn(None, &mut h).unwrap();
        }
        th.join().unwrap();
    }
}

#[derive(Default)]
struct UdpErrors {
    closed: bool,
}

impl Handler for UdpErrors {
    fn on_event(&mut self, ev: Event<'_>, _ops: &mut dyn Ops) {
        if let Event::RecvClosed(_, Some(_)) = ev {
            self.closed = true;
        }
    }
    fn end_of_turn(&mut self, _ops: &mut dyn Ops) {}
}

/// An ICMP error on a connected UDP socket (a nameserver that restarted)
/// must reach the worker, which replaces the socket: a DNS socket that
/// silently stops receiving would make every later lookup fail.
#[test]
fn udp_icmp_error_is_reported() {
    for b in backends() {
        let mut d = driver::new_driver(b, Arc::new(Waker::new().unwrap())).unwrap();
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let ours = UdpSocket::bind("127.0.0.1:0").unwrap();
        ours.connect(dead).unwrap();
        let t = d.ops().add_udp(OwnedFd::from(ours)).unwrap();
        let mut h = UdpErrors::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !h.closed {
            assert!(Instant::now() < deadline, "{b:?}: no error reported");
            let _ = d.ops().send_datagram(t, b"query");
            d.turn(Some(Duration::from_millis(20)), &mut h).unwrap();
        }
    }
}

/// Records each connection's bytes; pauses a connection once it has
/// received `pause_at` bytes and resumes it `pause_turns` turns later.
struct Recorder {
    got: std::collections::HashMap<Token, Vec<u8>>,
    ended: usize,
    pause_at: usize,
    pause_turns: u32,
    paused: Vec<(Token, u32)>,
    was_paused: std::collections::HashSet<Token>,
}

impl Handler for Recorder {
    fn on_event(&mut self, ev: Event<'_>, ops: &mut dyn Ops) {
        match ev {
            Event::Accepted { fd, .. } => {
                let t = ops.add_conn(fd).unwrap();
                self.got.insert(t, Vec::new());
            }
            Event::Recv(t, data) => {
                let v = self.got.entry(t).or_default();
                v.extend_from_slice(data);
                if v.len() >= self.pause_at && self.was_paused.insert(t) {
                    ops.set_recv(t, false);
                    self.paused.push((t, self.pause_turns));
                }
            }
            Event::RecvClosed(t, _) => {
                self.ended += 1;
                ops.close(t, false);
            }
            _ => {}
        }
    }

    fn end_of_turn(&mut self, ops: &mut dyn Ops) {
        for (t, left) in &mut self.paused {
            *left = left.saturating_sub(1);
            if *left == 0 {
                ops.set_recv(*t, true);
            }
        }
        self.paused.retain(|(_, left)| *left > 0);
    }
}

/// The byte at `offset` of client `id`'s stream.
fn pattern(id: usize, offset: usize) -> u8 {
    ((id * 31 + offset * 7 + offset / 4096) % 251) as u8
}

#[test]
fn pauses_while_buffers_run_out_lose_nothing() {
    // 32 clients send 1 MiB each as fast as loopback allows: more than the
    // io_uring backend's 16 MiB of receive buffers, so its multishot
    // receives run out (ENOBUFS) and are re-armed, while the handler
    // pauses each connection for a few turns in the middle of its stream.
    // Every byte must arrive once and in order, on both backends.
    const CLIENTS: usize = 32;
    const EACH: usize = 1 << 20;
    for b in backends() {
        let mut d = driver::new_driver(b, Arc::new(Waker::new().unwrap())).unwrap();
        let addr = listener(d.as_mut());
        let senders: Vec<_> = (0..CLIENTS)
            .map(|id| {
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    let mut buf = (id as u64).to_be_bytes().to_vec();
                    buf.extend((0..EACH).map(|o| pattern(id, o)));
                    s.write_all(&buf).unwrap();
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    // Keep the socket until the driver has read everything.
                    let mut sink = [0u8; 1];
                    let _ = s.read(&mut sink);
                })
            })
            .collect();
        // Let the data pile up in the kernel before the first turn.
        std::thread::sleep(Duration::from_millis(300));
        let mut h = Recorder {
            got: Default::default(),
            ended: 0,
            pause_at: EACH / 2,
            pause_turns: 5,
            paused: Vec::new(),
            was_paused: Default::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while h.ended < CLIENTS {
            assert!(
                Instant::now() < deadline,
                "{b:?}: {} of {CLIENTS} streams ended",
                h.ended
            );
            d.turn(Some(Duration::from_millis(5)), &mut h).unwrap();
        }
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(h.got.len(), CLIENTS, "{b:?}");
        assert_eq!(
            h.was_paused.len(),
            CLIENTS,
            "{b:?}: every stream was paused once"
        );
        for (t, v) in &h.got {
            assert_eq!(v.len(), 8 + EACH, "{b:?}: {t:?} got {} bytes", v.len());
            let id = u64::from_be_bytes(v[..8].try_into().unwrap()) as usize;
            if let Some(o) = (0..EACH).find(|&o| v[8 + o] != pattern(id, o)) {
                panic!("{b:?}: client {id}'s byte {o} is wrong");
            }
        }
    }
}

/// Writes a burst to each accepted connection and records what its output
/// buffer holds once the burst has drained.
struct Burst {
    size: usize,
    conn: Option<Token>,
    peak: usize,
    after_drain: Option<usize>,
}

impl Handler for Burst {
    fn on_event(&mut self, ev: Event<'_>, ops: &mut dyn Ops) {
        match ev {
            Event::Accepted { fd, .. } => {
                let t = ops.add_conn(fd).unwrap();
                ops.out_buf(t).unwrap().resize(self.size, 0x42);
                self.peak = ops.out_capacity(t);
                self.conn = Some(t);
            }
            Event::SendDrained(t) => self.after_drain = Some(ops.out_capacity(t)),
            _ => {}
        }
    }
    fn end_of_turn(&mut self, _ops: &mut dyn Ops) {}
}

#[test]
fn a_drained_burst_gives_its_buffer_back() {
    // 8 MiB queued on one connection (a link after a burst, an exit
    // stream whose destination stalled): once the kernel has taken it all,
    // the connection keeps at most OUT_KEEP of buffer, not 8 MiB.
    const SIZE: usize = 8 << 20;
    for b in backends() {
        let mut d = driver::new_driver(b, Arc::new(Waker::new().unwrap())).unwrap();
        let addr = listener(d.as_mut());
        let reader = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut got = 0;
            let mut buf = vec![0u8; 1 << 16];
            while got < SIZE {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            got
        });
        let mut h = Burst {
            size: SIZE,
            conn: None,
            peak: 0,
            after_drain: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while h.after_drain.is_none() {
            assert!(Instant::now() < deadline, "{b:?}: the burst never drained");
            d.turn(Some(Duration::from_millis(20)), &mut h).unwrap();
        }
        assert_eq!(reader.join().unwrap(), SIZE, "{b:?}");
        assert!(
            h.peak >= SIZE,
            "{b:?}: {} bytes of buffer for the burst",
            h.peak
        );
        let kept = h.after_drain.unwrap_or(usize::MAX);
        assert!(
            kept <= 2 * driver::OUT_KEEP,
            "{b:?}: {kept} bytes of buffer kept after the burst drained"
        );
        let t = h.conn.unwrap();
        d.ops().close(t, false);
    }
}
