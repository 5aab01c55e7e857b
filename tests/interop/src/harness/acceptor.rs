//! A loopback listener served by a background thread: one handler call
//! per accepted connection, and the accept loop stopped on drop. What the
//! harness's little servers (HTTP, delay lines) share.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{HarnessError, io_err};

pub(crate) struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// Bind `ip:0` and call `on_conn` for every connection (on the accept
    /// thread: spawn from it for anything long). `what` names it in errors.
    pub(crate) fn spawn(
        ip: Ipv4Addr,
        what: &str,
        on_conn: impl Fn(TcpStream) + Send + 'static,
    ) -> Result<Self, HarnessError> {
        let listener = TcpListener::bind((ip, 0)).map_err(io_err(format!("{what} bind")))?;
        let addr = listener
            .local_addr()
            .map_err(io_err(format!("{what} addr")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    on_conn(conn);
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the loop sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
