//! The v3 in-protocol link handshake, both roles (requirements.md §1.3–§1.8;
//! channeltls.c: channel_tls_handle_var_cell, channel_tls_process_*_cell;
//! relay_handshake.c).
//!
//! Transcript rules, from connection_or.c:or_handshake_state_record_*:
//! every cell received during the handshake is hashed in its wire form
//! (the first VERSIONS with its 2-byte circuit ID, later cells with 4
//! bytes), except AUTHENTICATE, and recording of received bytes stops once
//! AUTHENTICATE checks out; every cell we send is hashed until we send
//! NETINFO. The responder's SLOG is therefore VERSIONS + CERTS +
//! AUTH_CHALLENGE (+ VPADDING), never its NETINFO, and the initiator computes
//! its AUTHENTICATE the moment AUTH_CHALLENGE arrives, as C does.

use rand::CryptoRng;

use super::auth::{AUTH_LEN, AUTH_TYPE, AuthFields, EXPORTER_LABEL};
use super::certs::{PeerCerts, PeerRole, verify_peer_certs};
use super::{ChanEvent, Channel, ChannelError, Ctx, LINK_VERSIONS, PeerKind, Role, State};
use crate::proto::cell::{
    AuthChallenge, Authenticate, CellError, Certs, ChanBody, ChanCmd, Netinfo, RawCell, Versions,
};

fn malformed(cmd: ChanCmd) -> impl FnOnce(CellError) -> ChannelError {
    move |source| ChannelError::Malformed { cmd, source }
}

fn unexpected(cmd: ChanCmd, state: &'static str) -> ChannelError {
    ChannelError::Unexpected { cmd, state }
}

fn require_circ_zero(raw: &RawCell<'_>) -> Result<(), ChannelError> {
    if raw.circ_id().is_channel() {
        Ok(())
    } else {
        Err(ChannelError::NonzeroCircId {
            cmd: raw.cmd(),
            circ_id: raw.circ_id(),
        })
    }
}

impl Channel {
    /// One cell before the channel is open.
    pub(super) fn handshake_cell<R: CryptoRng>(
        &mut self,
        raw: &RawCell<'_>,
        wire: &[u8],
        ctx: &mut Ctx<'_, R>,
    ) -> Result<(), ChannelError> {
        let cmd = raw.cmd();
        if matches!(self.state, State::ExpectVersions) {
            // channeltls.c:command_allowed_before_handshake.
            return match cmd {
                ChanCmd::VPADDING | ChanCmd::AUTHORIZE => {
                    self.recv_log.record(wire);
                    Ok(())
                }
                ChanCmd::VERSIONS => {
                    self.recv_log.record(wire);
                    self.on_versions(raw, ctx)
                }
                _ => Err(unexpected(cmd, "before VERSIONS")),
            };
        }
        // channel_tls_handle_cell: while handshaking, the only fixed cell
        // allowed is NETINFO (PADDING included: C closes).
        if !cmd.is_var_len() && cmd != ChanCmd::NETINFO {
            return Err(unexpected(cmd, "during the link handshake"));
        }
        if cmd != ChanCmd::AUTHENTICATE {
            self.recv_log.record(wire);
        }
        match cmd {
            ChanCmd::CERTS => self.on_certs(raw, ctx),
            ChanCmd::AUTH_CHALLENGE => self.on_auth_challenge(raw, ctx),
            ChanCmd::AUTHENTICATE => self.on_authenticate(raw, ctx),
            ChanCmd::NETINFO => self.on_netinfo(raw, ctx),
            // VPADDING, AUTHORIZE, a second VERSIONS ("already set;
            // dropping"), unknown variable-length commands.
            _ => Ok(()),
        }
    }

    fn on_versions<R: CryptoRng>(
        &mut self,
        raw: &RawCell<'_>,
        ctx: &mut Ctx<'_, R>,
    ) -> Result<(), ChannelError> {
        let v = Versions::decode(raw.body()).map_err(malformed(ChanCmd::VERSIONS))?;
        let best = v
            .best_shared(LINK_VERSIONS)
            .ok_or_else(|| ChannelError::NoCommonVersion {
                offered: v.versions().to_vec(),
                ours: LINK_VERSIONS,
            })?;
        self.link_version = Some(best);
        match self.role {
            Role::Responder {
                own_tls_cert_sha256,
            } => {
                let keys = std::sync::Arc::clone(&self.keys);
                if keys.tls_cert_sha256 != Some(own_tls_cert_sha256) {
                    return Err(ChannelError::OwnKeys(format!(
                        "type-5 cert certifies {}, this connection's TLS cert is {}",
                        keys.tls_cert_sha256.map(hex::encode).unwrap_or_default(),
                        hex::encode(own_tls_cert_sha256)
                    )));
                }
                // VERSIONS still goes out with a 2-byte circuit ID; C sets
                // wide_circ_ids right after sending it.
                self.send_versions()?;
                self.wide = true;
                let certs = keys
                    .responder_certs
                    .as_ref()
                    .map_err(|e| ChannelError::OwnKeys(e.to_string()))?;
                self.send_msg(certs)?;
                let mut challenge = [0u8; 32];
                ctx.rng.fill_bytes(&mut challenge);
                let ac = AuthChallenge::new(challenge, vec![AUTH_TYPE]).map_err(|source| {
                    ChannelError::Encode {
                        cmd: ChanCmd::AUTH_CHALLENGE,
                        source,
                    }
                })?;
                self.send_msg(&ac)?;
                self.send_netinfo(ctx.unix_now)?;
                self.state = State::RespExpectCerts;
            }
            Role::Initiator { .. } => {
                self.wide = true;
                self.state = State::InitExpectCerts;
            }
        }
        Ok(())
    }

    /// Our NETINFO: the time (we are a relay), the peer's address as we see
    /// it, our addresses. Stops recording what we send
    /// (connection_or_send_netinfo: `digest_sent_data = 0`).
    fn send_netinfo(&mut self, unix_now: u64) -> Result<(), ChannelError> {
        // C casts time_t to uint32_t; so do we.
        let client = matches!(
            self.role,
            Role::Initiator {
                authenticate: false,
                ..
            }
        );
        let (ts, mine) = if client {
            // A client's NETINFO: no clock, no addresses of its own.
            (0, Vec::new())
        } else {
            ((unix_now & 0xffff_ffff) as u32, self.keys.my_addrs.clone())
        };
        let n = Netinfo::new(ts, Some(self.peer_addr), mine).map_err(|source| {
            ChannelError::Encode {
                cmd: ChanCmd::NETINFO,
                source,
            }
        })?;
        self.sent_log.stop();
        self.send_msg(&n)
    }

    fn on_certs<R: CryptoRng>(
        &mut self,
        raw: &RawCell<'_>,
        ctx: &mut Ctx<'_, R>,
    ) -> Result<(), ChannelError> {
        let expecting = matches!(self.state, State::RespExpectCerts | State::InitExpectCerts);
        if !expecting {
            return Err(unexpected(
                ChanCmd::CERTS,
                "after CERTS was already received",
            ));
        }
        require_circ_zero(raw)?;
        let certs = Certs::decode(raw.body()).map_err(malformed(ChanCmd::CERTS))?;
        match &self.role {
            Role::Responder { .. } => {
                let pc = verify_peer_certs(&certs, PeerRole::Initiator, ctx.unix_now)?;
                self.state = State::RespExpectAuthenticate(pc);
            }
            Role::Initiator {
                peer_tls_cert_sha256,
                expect,
                ..
            } => {
                let pc = verify_peer_certs(
                    &certs,
                    PeerRole::Responder {
                        tls_cert_sha256: peer_tls_cert_sha256,
                    },
                    ctx.unix_now,
                )?;
                // connection_or_client_learned_peer_id: all given ids must match.
                if pc.rsa_id != expect.rsa_id {
                    return Err(ChannelError::WrongRsaIdentity {
                        expected: hex::encode_upper(expect.rsa_id),
                        got: hex::encode_upper(pc.rsa_id),
                    });
                }
                if let Some(ed) = expect.ed_id
                    && ed != pc.ed_id
                {
                    return Err(ChannelError::WrongEdIdentity {
                        expected: hex::encode(ed),
                        got: hex::encode(pc.ed_id),
                    });
                }
                self.state = State::InitExpectChallenge(pc);
            }
        }
        Ok(())
    }

    /// Initiator: answer AUTH_CHALLENGE with CERTS, AUTHENTICATE, NETINFO
    /// (channel_tls_process_auth_challenge_cell; we are a public relay, so
    /// we always authenticate when method 3 is offered).
    fn on_auth_challenge<R: CryptoRng>(
        &mut self,
        raw: &RawCell<'_>,
        ctx: &mut Ctx<'_, R>,
    ) -> Result<(), ChannelError> {
        let pc = match (&self.role, &self.state) {
            (Role::Responder { .. }, _) => {
                return Err(unexpected(
                    ChanCmd::AUTH_CHALLENGE,
                    "on a channel we did not originate",
                ));
            }
            (_, State::InitExpectChallenge(pc)) => pc.clone(),
            (_, State::InitExpectCerts) => {
                return Err(unexpected(ChanCmd::AUTH_CHALLENGE, "before CERTS"));
            }
            _ => return Err(unexpected(ChanCmd::AUTH_CHALLENGE, "a second time")),
        };
        require_circ_zero(raw)?;
        let ac = AuthChallenge::decode(raw.body()).map_err(malformed(ChanCmd::AUTH_CHALLENGE))?;
        let authenticate = matches!(
            self.role,
            Role::Initiator {
                authenticate: true,
                ..
            }
        );
        if authenticate && ac.methods().contains(&AUTH_TYPE) {
            self.send_authentication(&pc, ctx)?;
        }
        self.send_netinfo(ctx.unix_now)?;
        self.state = State::InitExpectNetinfo(pc);
        Ok(())
    }

    fn send_authentication<R: CryptoRng>(
        &mut self,
        pc: &PeerCerts,
        ctx: &mut Ctx<'_, R>,
    ) -> Result<(), ChannelError> {
        let Role::Initiator {
            peer_tls_cert_sha256,
            ..
        } = self.role
        else {
            return Err(unexpected(ChanCmd::AUTHENTICATE, "as responder"));
        };
        let keys = std::sync::Arc::clone(&self.keys);
        let certs = keys
            .initiator_certs
            .as_ref()
            .map_err(|e| ChannelError::OwnKeys(e.to_string()))?;
        self.send_msg(certs)?;
        let cid = keys.rsa_id_sha256;
        let fields = AuthFields {
            cid,
            sid: pc.rsa_id_sha256,
            cid_ed: keys.ed_id,
            sid_ed: pc.ed_id,
            slog: self.recv_log.digest(),
            clog: self.sent_log.digest(),
            scert: peer_tls_cert_sha256,
            tlssecrets: ctx
                .tls
                .export_keying_material(EXPORTER_LABEL, &cid)
                .ok_or(ChannelError::NoExporter)?,
        };
        let mut rand = [0u8; 24];
        ctx.rng.fill_bytes(&mut rand);
        let auth = Authenticate::new(AUTH_TYPE, fields.sign(&rand, &keys.link_auth)).map_err(
            |source| ChannelError::Encode {
                cmd: ChanCmd::AUTHENTICATE,
                source,
            },
        )?;
        self.send_msg(&auth)
    }

    /// Responder: check AUTHENTICATE (channel_tls_process_authenticate_cell).
    fn on_authenticate<R: CryptoRng>(
        &mut self,
        raw: &RawCell<'_>,
        ctx: &mut Ctx<'_, R>,
    ) -> Result<(), ChannelError> {
        let (pc, own_scert) = match (&self.role, &self.state) {
            (Role::Initiator { .. }, _) => {
                return Err(unexpected(
                    ChanCmd::AUTHENTICATE,
                    "on a channel we originated",
                ));
            }
            (
                Role::Responder {
                    own_tls_cert_sha256,
                },
                State::RespExpectAuthenticate(pc),
            ) => (pc.clone(), *own_tls_cert_sha256),
            (_, State::RespExpectCerts) => {
                return Err(unexpected(ChanCmd::AUTHENTICATE, "before CERTS"));
            }
            _ => return Err(unexpected(ChanCmd::AUTHENTICATE, "a second time")),
        };
        let a = Authenticate::decode(raw.body()).map_err(malformed(ChanCmd::AUTHENTICATE))?;
        if a.auth_type() != AUTH_TYPE {
            return Err(super::AuthError::UnsupportedType(a.auth_type()).into());
        }
        if a.auth().len() != AUTH_LEN {
            return Err(super::AuthError::BadLength(a.auth().len()).into());
        }
        let auth_key = pc.auth_key.ok_or(super::CertsError::Missing(
            6,
            "signing key → link authentication key",
        ))?;
        let fields = AuthFields {
            cid: pc.rsa_id_sha256,
            sid: self.keys.rsa_id_sha256,
            cid_ed: pc.ed_id,
            sid_ed: self.keys.ed_id,
            slog: self.sent_log.digest(),
            clog: self.recv_log.digest(),
            scert: own_scert,
            tlssecrets: ctx
                .tls
                .export_keying_material(EXPORTER_LABEL, &pc.rsa_id_sha256)
                .ok_or(ChannelError::NoExporter)?,
        };
        fields.verify(a.auth(), &auth_key)?;
        self.recv_log.stop();
        self.state = State::RespExpectNetinfo(pc);
        Ok(())
    }

    /// NETINFO ends the handshake (channel_tls_process_netinfo_cell).
    fn on_netinfo<R: CryptoRng>(
        &mut self,
        raw: &RawCell<'_>,
        ctx: &mut Ctx<'_, R>,
    ) -> Result<(), ChannelError> {
        let peer = match &self.state {
            // A peer that never authenticated is a client
            // (mark_channel_tls_endpoint_as_client), even if it sent CERTS.
            State::RespExpectCerts | State::RespExpectAuthenticate(_) => PeerKind::Client,
            State::RespExpectNetinfo(pc) | State::InitExpectNetinfo(pc) => relay(pc),
            // No AUTH_CHALLENGE came: send NETINFO unauthenticated, as C
            // does when it never sent one.
            State::InitExpectChallenge(pc) => {
                let p = relay(pc);
                self.send_netinfo(ctx.unix_now)?;
                p
            }
            _ => {
                return Err(unexpected(
                    ChanCmd::NETINFO,
                    "from a responder that has not authenticated",
                ));
            }
        };
        let n = Netinfo::decode(raw.body()).map_err(malformed(ChanCmd::NETINFO))?;
        self.peer_netinfo = Some(n);
        let relay_canonical = matches!(peer, PeerKind::Relay { .. }) && self.is_canonical();
        self.timers.opened(ctx.now, relay_canonical, ctx.rng);
        self.recv_log.stop();
        self.sent_log.stop();
        self.state = State::Open;
        self.peer = Some(peer);
        self.events.push_back(ChanEvent::Opened {
            peer,
            link_version: self.link_version.unwrap_or_default(),
        });
        Ok(())
    }
}

fn relay(pc: &PeerCerts) -> PeerKind {
    PeerKind::Relay {
        rsa_id: pc.rsa_id,
        ed_id: pc.ed_id,
    }
}
