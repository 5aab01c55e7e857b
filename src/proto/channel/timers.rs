//! Channel timers (requirements.md §8.2; mainloop.c:
//! run_connection_housekeeping; channelpadding.c:
//! channelpadding_get_channel_idle_timeout):
//!
//! - handshake: a channel that is not open `KeepalivePeriod` after our last
//!   write is closed ("Expiring non-open OR connection"); and, unlike C
//!   (where a peer that keeps us writing can stretch it), one that is not
//!   open [`HANDSHAKE_LIMIT`] after it began is closed too, so a
//!   half-finished handshake holds a socket and a TLS session for a
//!   bounded time;
//! - keepalive: an open channel with nothing written for `KeepalivePeriod`
//!   (5 min) sends a PADDING cell;
//! - idle: an open channel without circuits closes after a randomised
//!   timeout: 180–270 s for clients and non-canonical channels, 45–75 min
//!   (`nf_conntimeout_relays` 3600 s ± 25 %) for canonical relay channels.

use std::time::{Duration, Instant};

use rand::{CryptoRng, RngExt};

use super::{Channel, ChannelError, State};
use crate::proto::cell::{CELL_BODY_LEN, ChanCmd, CircId, encode_raw};

/// `KeepalivePeriod` default (config.c): 5 minutes.
pub(super) const KEEPALIVE_PERIOD: Duration = Duration::from_secs(300);
/// The longest a link handshake (TLS, VERSIONS to NETINFO) may take from
/// the connection's start. Relays finish in a few round trips; a minute
/// leaves room for a congested path.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(60);
/// `CONNTIMEOUT_CLIENTS_BASE` (channelpadding.c).
const CONNTIMEOUT_CLIENTS_BASE: u64 = 180;
/// `nf_conntimeout_relays` consensus default (channelpadding.c).
/// TODO: take the consensus value once the consensus is fetched.
const CONNTIMEOUT_RELAYS_DEFAULT: u64 = 3600;

#[derive(Debug)]
pub(super) struct Timers {
    started: Instant,
    last_write: Instant,
    /// `send_cell` wrote without knowing the time: the next call that has a
    /// `now` stamps `last_write` (at worst one early wakeup).
    unstamped_write: bool,
    circuits: usize,
    last_had_circuits: Instant,
    idle_timeout: Option<Duration>,
}

impl Timers {
    pub fn new(now: Instant) -> Self {
        Timers {
            started: now,
            last_write: now,
            unstamped_write: false,
            circuits: 0,
            last_had_circuits: now,
            idle_timeout: None,
        }
    }

    pub fn wrote(&mut self, now: Instant) {
        self.last_write = now;
        self.unstamped_write = false;
    }

    pub fn wrote_without_time(&mut self) {
        self.unstamped_write = true;
    }

    fn stamp(&mut self, now: Instant) {
        if self.unstamped_write {
            self.wrote(now);
        }
    }

    /// Start the idle clock when the channel opens; the timeout is drawn
    /// once, as C draws it once per connection.
    pub fn opened(&mut self, now: Instant, relay_canonical: bool, rng: &mut impl CryptoRng) {
        // Constants of minutes plus a draw below them: no overflow.
        let secs = if relay_canonical {
            const T: u64 = CONNTIMEOUT_RELAYS_DEFAULT;
            (3 * T / 4).saturating_add(rng.random_range(0..T / 2))
        } else {
            CONNTIMEOUT_CLIENTS_BASE
                .saturating_add(rng.random_range(0..CONNTIMEOUT_CLIENTS_BASE / 2))
        };
        self.idle_timeout = Some(Duration::from_secs(secs));
        self.last_had_circuits = now;
    }

    /// How long since our last write (zero if `now` is before it).
    fn since_write(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_write)
    }

    fn idle_deadline(&self) -> Option<Instant> {
        match (self.circuits, self.idle_timeout) {
            (0, Some(t)) => self.last_had_circuits.checked_add(t),
            _ => None,
        }
    }
}

impl Channel {
    /// Tell the channel how many circuits use it. C refreshes "last had
    /// circuits" every second while there are any; here the caller reports
    /// changes, and a drop to zero at `now` starts the idle clock.
    pub fn note_circuits(&mut self, count: usize, now: Instant) {
        if count > 0 || self.timers.circuits > 0 {
            self.timers.last_had_circuits = now;
        }
        self.timers.circuits = count;
        self.timers.stamp(now);
    }

    /// Run due timers. Harmless to call early or often. Closing (handshake
    /// or idle timeout) returns the error and queues [`super::ChanEvent::Closed`];
    /// on a closed channel it returns the sticky error.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ChannelError> {
        match &self.state {
            State::Closed(e) => return Err(e.clone()),
            State::Open => {}
            _ => {
                self.timers.stamp(now);
                if self.timers.since_write(now) >= KEEPALIVE_PERIOD
                    || now.saturating_duration_since(self.timers.started) >= HANDSHAKE_LIMIT
                {
                    return self.fail(ChannelError::HandshakeTimeout);
                }
                return Ok(());
            }
        }
        self.timers.stamp(now);
        if let (Some(deadline), Some(t)) = (self.timers.idle_deadline(), self.timers.idle_timeout)
            && now >= deadline
        {
            return self.fail(ChannelError::IdleTimeout { secs: t.as_secs() });
        }
        if self.timers.since_write(now) >= KEEPALIVE_PERIOD {
            // C sends the keepalive only when the outbuf is empty; output
            // still waiting here counts as a write about to happen.
            if self.out.is_empty() {
                let body = [0u8; CELL_BODY_LEN];
                encode_raw(
                    CircId::CHANNEL,
                    ChanCmd::PADDING,
                    &body,
                    self.wide,
                    &mut self.out,
                )
                .map_err(|source| ChannelError::Encode {
                    cmd: ChanCmd::PADDING,
                    source,
                })?;
            }
            self.timers.wrote(now);
        }
        Ok(())
    }

    /// The next instant [`Channel::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Instants minutes ahead cannot overflow; were one to, it would
        // drop out rather than panic.
        let keepalive = self.timers.last_write.checked_add(KEEPALIVE_PERIOD);
        let other = match self.state {
            State::Closed(_) => return None,
            State::Open => self.timers.idle_deadline(),
            _ => self.timers.started.checked_add(HANDSHAKE_LIMIT),
        };
        keepalive.into_iter().chain(other).min()
    }
}
