//! The publishing half of [`DirClient`]: when the descriptor goes out,
//! to whom, what the answers mean, and the reachability test that must
//! come first (router.c:mark_my_descriptor_dirty_if_too_old,
//! decide_if_publishable_server; dirclient.c:handle_response_upload_dir;
//! selftest.c).

use std::net::SocketAddr;
use std::sync::Arc;

use rand::{CryptoRng, RngExt as _};

use super::{
    DirAction, DirClient, NOT_LISTED_RETRY, Purpose, REPUBLISH_INTERVAL, Server, UNREACHABLE_WARN,
};
use crate::dir::consensus::{Consensus, Flags, RouterStatus};
use crate::dir::http::{Request, Response};
use crate::dir::time::UnixTime;

impl DirClient {
    /// Something that goes into the descriptor changed: publish anew. The
    /// first reason since the last publication is the one sent
    /// (`X-Desc-Gen-Reason`), as in C tor.
    pub fn mark_dirty(&mut self, reason: &str) {
        if self.dirty.is_none() {
            tracing::info!("publishing a new descriptor: {reason}");
            self.dirty = Some(reason.to_owned());
        }
    }

    pub(super) fn check_publication(&mut self, now: UnixTime) {
        if !self.cfg.publish || self.publishing {
            return;
        }
        if let Some(at) = self.published_at {
            if at + REPUBLISH_INTERVAL <= now {
                self.mark_dirty("time for new descriptor");
            }
            if let Some(c) = self.current.clone()
                && c.is_live(now)
                && c.relay(&self.cfg.own_rsa_id).is_none()
                && c.valid_after > at
                && at + self.not_listed_retry(&c) <= now
            {
                self.mark_dirty("not listed in consensus");
            }
        }
        if !self.reachable {
            return;
        }
        if let Some(reason) = self.dirty.take() {
            self.publishing = true;
            self.actions.push_back(DirAction::Publish { reason });
        }
    }

    /// C tor waits 90 minutes; a test network votes every few seconds, so
    /// there it is three voting intervals.
    fn not_listed_retry(&self, c: &Consensus) -> u64 {
        if self.cfg.testing {
            3 * c.fresh_until.saturating_sub(c.valid_after)
        } else {
            NOT_LISTED_RETRY
        }
    }

    /// The descriptor could not be built (no address yet, a signing error):
    /// try again a little later.
    pub fn publish_failed(&mut self, reason: String, now: UnixTime) {
        self.publishing = false;
        self.dirty = Some(reason);
        let _ = now;
    }

    /// Upload `body` (server descriptor then extra-info) to every v3
    /// authority.
    pub fn upload(&mut self, body: Vec<u8>, reason: &str, now: UnixTime) {
        self.publishing = false;
        self.published_at = Some(now);
        let body = Arc::new(body);
        self.upload_body = Some((body.clone(), reason.to_owned()));
        for r in &mut self.upload_retry {
            *r = None;
        }
        let targets = self.v3_authorities();
        if targets.is_empty() {
            tracing::warn!("no v3 directory authority is configured: nowhere to publish");
        }
        tracing::info!(
            "uploading our descriptor to {} authorities ({reason})",
            targets.len()
        );
        for i in targets {
            self.push_fetch(
                Purpose::Upload,
                Server::Authority(i),
                upload_request(&body, reason),
            );
        }
    }

    pub(super) fn on_upload<R: CryptoRng>(
        &mut self,
        name: &str,
        authority: usize,
        answer: Result<Response, String>,
        now: UnixTime,
        rng: &mut R,
    ) {
        let failed = match answer {
            Ok(r) if r.status == 200 => {
                if r.header("X-Descriptor-Not-New").is_some() {
                    tracing::debug!("{name} kept our previous descriptor (not new)");
                } else {
                    tracing::info!("{name} accepted our descriptor");
                }
                false
            }
            Ok(r) if r.status == 400 => {
                // The authority's verdict: retrying the same descriptor
                // would get the same answer.
                tracing::warn!(
                    "{name} rejected our descriptor: {:?} (HTTP 400). Please correct.",
                    r.reason
                );
                if let Some(slot) = self.upload_retry.get_mut(authority) {
                    *slot = None;
                }
                return;
            }
            Ok(r) => {
                tracing::warn!(
                    "{name} answered {} ({:?}) to our descriptor",
                    r.status,
                    r.reason
                );
                true
            }
            Err(e) => {
                tracing::warn!("uploading our descriptor to {name} failed: {e}");
                true
            }
        };
        let tick = self.tick();
        if let Some(slot) = self.upload_retry.get_mut(authority) {
            if failed {
                let mut b = slot.map(|(_, b)| b).unwrap_or_default();
                let d = b.next(rng, 10 * tick);
                *slot = Some((now + d, b));
            } else {
                *slot = None;
            }
        }
    }

    /// A worker saw a CREATE on an inbound channel whose peer names our
    /// published address: the ORPort is reachable from outside.
    pub fn note_reachable(&mut self, addr: SocketAddr) {
        if self.reachable {
            return;
        }
        self.reachable = true;
        let publishing = if self.cfg.publish {
            " Publishing server descriptor."
        } else {
            ""
        };
        tracing::info!(
            "Self-testing indicates your ORPort {addr} is reachable from the outside. Excellent.{publishing}"
        );
        if self.dirty.is_some() && self.published_at.is_none() {
            self.dirty = Some("ORPort found reachable".into());
        } else {
            self.mark_dirty("ORPort found reachable");
        }
    }

    /// The published address changed: reachability must be shown again.
    pub fn reset_reachability(&mut self, now: UnixTime) {
        if !self.cfg.assume_reachable {
            self.reachable = false;
            self.next_self_test = now;
        }
    }

    pub(super) fn check_reachability<R: CryptoRng>(&mut self, now: UnixTime, rng: &mut R) {
        if self.reachable || !self.cfg.publish || now < self.next_self_test {
            return;
        }
        let Some(c) = self.current.clone().filter(|c| c.is_reasonably_live(now)) else {
            return;
        };
        // C tests every minute for the first 20 minutes, then rarely; a test
        // network's relays answer within seconds.
        let early = now < self.started + UNREACHABLE_WARN;
        self.next_self_test = now
            + match (early, self.cfg.testing) {
                (_, true) => 5,
                (true, false) => 60,
                (false, false) => UNREACHABLE_WARN,
            };
        if now >= self.next_unreachable_warning {
            self.next_unreachable_warning = now + UNREACHABLE_WARN;
            tracing::warn!(
                "Your server has not managed to confirm reachability for its ORPort. Relays do \
                 not publish descriptors until their ORPort is reachable. Please check your \
                 firewalls, ports, address, /etc/hosts file, etc."
            );
        }
        // Any running relay but us: it connects back to our ORPort.
        let candidates: Vec<&RouterStatus> = c
            .relays
            .iter()
            .filter(|r| {
                r.rsa_id != self.cfg.own_rsa_id
                    && r.or_port != 0
                    && r.flags.contains(Flags::RUNNING)
                    && r.flags.contains(Flags::VALID)
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let via = candidates[rng.random_range(0..candidates.len())].clone();
        self.actions.push_back(DirAction::SelfTest(via));
    }
}

/// `POST /tor/` with the descriptors (dirclient.c:directory_send_command).
pub(super) fn upload_request(body: &[u8], reason: &str) -> Request {
    Request::post("/tor/", body.to_vec()).header("X-Desc-Gen-Reason", reason)
}
