//! A worker's UDP sockets to its nameservers: a small pool per server, so
//! that queries leave from several source ports chosen by the kernel, and
//! each socket is replaced after a number of queries, so that the ports
//! keep changing. An off-path forger must then guess the port besides the
//! transaction ID and the 0x20 letter case (RFC 5452 §9.2).
//!
//! A replaced socket stays open for [`DRAIN`] so that answers to the
//! queries it sent still arrive, then the worker closes it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::driver::Token;

/// Sockets per nameserver.
pub(super) const POOL: usize = 8;
/// Queries a socket sends before it is replaced.
pub(super) const USES: u32 = 256;
/// How long a replaced socket waits for late answers: a few times the
/// resolver's attempt timeout (1 s), and short enough that a flood of
/// lookups (a socket replaced every 256) keeps few sockets draining.
pub(super) const DRAIN: Duration = Duration::from_secs(3);

#[derive(Debug)]
struct Slot {
    token: Token,
    uses: u32,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct DnsSockets {
    pools: HashMap<SocketAddr, Vec<Slot>>,
    draining: Vec<(Instant, Token)>,
}

impl DnsSockets {
    /// The socket to send the next query to `dst` from: a new one (opened
    /// with `open`) while the pool is not full, else a random one of the
    /// pool. `None` if there is none and none can be opened.
    pub(super) fn pick(
        &mut self,
        dst: SocketAddr,
        now: Instant,
        rng: &mut impl rand::Rng,
        open: impl FnOnce() -> Option<Token>,
    ) -> Option<Token> {
        let pool = self.pools.entry(dst).or_default();
        if pool.len() < POOL
            && let Some(token) = open()
        {
            pool.push(Slot { token, uses: 0 });
        }
        if pool.is_empty() {
            return None;
        }
        let i = rng.random_range(0..pool.len());
        let slot = pool.get_mut(i)?;
        slot.uses += 1;
        let token = slot.token;
        if slot.uses >= USES {
            pool.swap_remove(i);
            self.draining.push((now + DRAIN, token));
        }
        Some(token)
    }

    /// Replaced sockets whose answers had time to arrive: close them.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Token> {
        super::driver::take_due(&mut self.draining, now)
    }

    /// The socket failed or was closed: never hand it out again.
    pub(super) fn forget(&mut self, token: Token) {
        for pool in self.pools.values_mut() {
            pool.retain(|s| s.token != token);
        }
        self.draining.retain(|(_, t)| *t != token);
    }

    /// Sockets open (in pools and draining), for tests and counts.
    #[cfg(test)]
    fn open_count(&self) -> usize {
        self.pools.values().map(Vec::len).sum::<usize>() + self.draining.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn queries_spread_over_a_pool_that_keeps_changing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut s = DnsSockets::default();
        let dst: SocketAddr = "192.0.2.53:53".parse().unwrap();
        let t0 = Instant::now();
        let mut next = 0u32;
        let mut used = std::collections::HashSet::new();
        for _ in 0..5000 {
            let t = s
                .pick(dst, t0, &mut rng, || {
                    next += 1;
                    Some(Token(next))
                })
                .unwrap();
            used.insert(t);
        }
        // 5000 queries at 256 per socket: at least 19 sockets were used,
        // never more than the pool at a time (plus those draining).
        assert!(used.len() >= 5000 / USES as usize, "{} sockets", used.len());
        assert!(s.pools[&dst].len() <= POOL);
        assert_eq!(s.open_count(), s.pools[&dst].len() + s.draining.len());
        // Replaced sockets close after the drain time, not before.
        assert!(s.due(t0).is_empty());
        let closed = s.due(t0 + DRAIN);
        assert!(!closed.is_empty());
        assert!(
            closed
                .iter()
                .all(|t| !s.pools[&dst].iter().any(|p| p.token == *t))
        );
    }

    #[test]
    fn a_failed_socket_is_not_handed_out() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let mut s = DnsSockets::default();
        let dst: SocketAddr = "192.0.2.53:53".parse().unwrap();
        let t = s
            .pick(dst, Instant::now(), &mut rng, || Some(Token(1)))
            .unwrap();
        s.forget(t);
        // Opening fails from now on: nothing to send from.
        assert_eq!(s.pick(dst, Instant::now(), &mut rng, || None), None);
    }
}
