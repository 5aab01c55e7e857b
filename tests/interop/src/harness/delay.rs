//! A TCP delay line: a link with latency, in user space.
//!
//! The kernels the tests run on may lack `netem` (`CONFIG_NET_SCH_NETEM`
//! is off on the CI machines, and no other qdisc can hold packets back),
//! so latency is added here instead: [`DelayLine`] listens on 127.0.0.1,
//! connects every accepted connection to its target, and hands each chunk
//! read in either direction to the other side `delay` after it was read.
//! It never limits the rate (it reads as fast as it can and holds what is
//! in flight), so a Tor circuit through it sees a longer round trip and
//! nothing else: its windows, not a bottleneck, bound its speed.
//!
//! A relay reached through a delay line is described to the client with
//! the line's address (EXTEND2 link specifiers carry it, so the previous
//! hop connects to the line); identities are checked end to end by the
//! link handshake, which the line does not touch.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::HarnessError;
use super::acceptor::Acceptor;

/// The running line; stops accepting on Drop (open connections end when
/// either side closes).
pub struct DelayLine {
    acceptor: Acceptor,
}

impl DelayLine {
    /// Listen on 127.0.0.1:0 and forward to `target`, each direction
    /// delayed by `delay` (a round trip through the line takes twice it).
    pub fn start(target: SocketAddr, delay: Duration) -> Result<Self, HarnessError> {
        let acceptor = Acceptor::spawn(Ipv4Addr::LOCALHOST, "delay line", move |a| {
            let Ok(b) = TcpStream::connect(target) else {
                return;
            };
            for (from, to) in [(&a, &b), (&b, &a)] {
                if let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) {
                    pipe(from, to, delay);
                }
            }
        })?;
        Ok(Self { acceptor })
    }

    /// Where clients (and previous hops) connect.
    pub fn addr(&self) -> SocketAddr {
        self.acceptor.addr()
    }
}

/// One direction: a reader thread stamps what it reads, a writer thread
/// writes each chunk once its time has come, and passes the end on.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let _ = from.set_nodelay(true);
    let _ = to.set_nodelay(true);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` tells the writer the stream ended.
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
