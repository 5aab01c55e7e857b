//! A Tor client built directly on Arti's `tor-proto` 0.47, with no directory.
//!
//! Owns: describing a hop from its keys ([`HopSpec`]), opening the TLS channel
//! to the first hop, creating and extending a circuit with an explicitly chosen
//! handshake, and the stream operations the interop tests need (HTTP GET over a
//! BEGIN stream, RESOLVE, BEGIN_DIR). Does not own: any relay process, server
//! or timeout policy — callers wrap every call in their own deadline.
//!
//! Every hop is described by the caller (address, identities, ntor key,
//! protocols): there is no consensus. Congestion control is never requested:
//! Arti 0.47 closes a circuit whose CC request is declined, and oxit does not
//! claim `FlowCtrl=2` yet, so every hop here runs fixed-window SENDMEs.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use safelog::MaybeSensitive;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tor_linkspec::{OwnedChanTarget, OwnedCircTarget};
use tor_llcrypto::pk::curve25519;
use tor_llcrypto::pk::ed25519::Ed25519Identity;
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_proto::ccparams::{
    Algorithm, CongestionControlParams, CongestionWindowParamsBuilder, FixedWindowParamsBuilder,
    RoundTripEstimatorParamsBuilder, VegasParamsBuilder,
};
use tor_proto::circuit::CircParameters;
use tor_proto::client::circuit::TimeoutEstimator;
use tor_proto::memquota::{ChannelAccount, SpecificAccount as _};
use tor_proto::peer::PeerAddr;
use tor_proto::{CellCount, ClientTunnel, FlowCtrlParameters};
use tor_rtcompat::tls::TlsConnector as _;
use tor_rtcompat::tokio::TokioRustlsRuntime;
use tor_rtcompat::{NetStreamProvider as _, TlsProvider as _};

/// The tunnel type the tests hold: cloneable, shared by concurrent streams.
pub type Tunnel = Arc<ClientTunnel>;

/// Subprotocols we claim a relay speaks when the caller does not say.
///
/// What matters to tor-proto: `Relay=4` (ntor-v3 available), no `FlowCtrl=2`
/// (so no congestion-control negotiation) and no `Relay=5` (no CGO). The rest
/// mirrors what C tor 0.4.9 relays publish, so the description is plausible.
pub const DEFAULT_RELAY_PROTOCOLS: &str = "Cons=1-2 Desc=1-2 DirCache=2 FlowCtrl=1 HSDir=2 \
     HSIntro=4-5 HSRend=1-2 Link=4-5 LinkAuth=3 Microdesc=1-2 Padding=2 Relay=1-4";

/// What C tor 0.4.9 relays publish (protover.c:protover_get_supported_protocols):
/// with FlowCtrl=2 and Relay=5-6, [`Handshake::NtorV3Cc`] to a C tor exit
/// asks it for congestion control and CGO, as a 0.4.9 client does.
pub const C_TOR_PROTOCOLS: &str = "Conflux=1 Cons=1-2 Desc=1-4 DirCache=2 FlowCtrl=1-2 HSDir=2 \
     HSIntro=4-5 HSRend=1-2 Link=3-5 LinkAuth=3 Microdesc=1-3 Padding=2 Relay=2-6";

/// Which circuit-extension handshake to use for one hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// ntor (CREATE2/EXTEND2 HTYPE 2).
    Ntor,
    /// ntor-v3 (HTYPE 3), without any extension (no congestion control).
    NtorV3,
    /// ntor-v3 asking for congestion control (Vegas, C tor's consensus
    /// defaults) when the hop's protocols say FlowCtrl=2, and for CGO
    /// relay crypto when they also say Relay=5-6, as tor-proto decides.
    NtorV3Cc,
    /// CREATE_FAST: only valid for the first hop.
    Fast,
}

impl std::str::FromStr for Handshake {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "ntor" => Ok(Self::Ntor),
            "ntor-v3" | "ntorv3" => Ok(Self::NtorV3),
            "ntor-v3-cc" => Ok(Self::NtorV3Cc),
            "fast" => Ok(Self::Fast),
            other => Err(Error::BadHopSpec(format!(
                "handshake {other:?}: expected ntor, ntor-v3, ntor-v3-cc or fast"
            ))),
        }
    }
}

/// Everything the client must know about one hop: no directory is consulted.
#[derive(Clone, Debug)]
pub struct HopSpec {
    /// ORPort address.
    pub addr: SocketAddr,
    /// SHA-1 of the relay's RSA identity key (DER PKCS#1).
    pub rsa_id: [u8; 20],
    /// Ed25519 master identity key.
    pub ed_id: [u8; 32],
    /// curve25519 ntor onion key (public).
    pub ntor_key: [u8; 32],
    /// Handshake used to create (first hop) or extend to this hop.
    pub handshake: Handshake,
    /// Subprotocols we tell tor-proto this relay speaks.
    pub protocols: String,
}

/// Errors from the client, with what was being attempted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hop description could not be parsed or read.
    #[error("bad hop description: {0}")]
    BadHopSpec(String),
    /// Reading a relay's key files failed.
    #[error("reading {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A socket or TLS operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// tor-proto reported an error.
    #[error("{context}: {source}")]
    Proto {
        /// What was being done.
        context: String,
        /// The tor-proto error (boxed: it is large).
        source: Box<tor_proto::Error>,
    },
    /// The exit answered the stream request with RELAY_END.
    #[error("{context}: stream refused with END reason {reason} ({name})")]
    StreamEnd {
        /// What was being done.
        context: String,
        /// END reason number (tor-spec §6.3).
        reason: u8,
        /// END reason name as tor-proto displays it.
        name: String,
    },
    /// The HTTP reply was not a 200 with a body of the announced length.
    #[error("HTTP reply for {path}: {detail}")]
    Http {
        /// Request path.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

impl Error {
    /// The END reason number, if the relay refused a stream with RELAY_END.
    pub fn end_reason(&self) -> Option<u8> {
        match self {
            Self::StreamEnd { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    fn proto(context: impl Into<String>, source: tor_proto::Error) -> Self {
        let context = context.into();
        match source {
            tor_proto::Error::EndReceived(r) => Self::StreamEnd {
                context,
                reason: r.into(),
                name: r.to_string(),
            },
            source => Self::Proto {
                context,
                source: Box::new(source),
            },
        }
    }

    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        // A DataStream reports a received END as an io::Error wrapping the
        // tor-proto error: surface its reason the same way as at BEGIN time.
        if let Some(inner) = source.get_ref()
            && let Some(tor_proto::Error::EndReceived(r)) = inner.downcast_ref::<tor_proto::Error>()
        {
            return Self::StreamEnd {
                context: context.into(),
                reason: (*r).into(),
                name: r.to_string(),
            };
        }
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl HopSpec {
    /// Describe a C tor relay from its DataDirectory.
    ///
    /// Reads `fingerprint` ("nickname HEX"), `fingerprint-ed25519`
    /// ("nickname BASE64") and `keys/secret_onion_key_ntor` (32-byte
    /// "== c25519v1: onion ==" header, then secret(32) ‖ public(32)).
    pub fn from_c_tor_data_dir(
        dir: &Path,
        addr: SocketAddr,
        handshake: Handshake,
    ) -> Result<Self, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| Error::KeyFile {
                path: path.display().to_string(),
                source,
            })
        };
        let second_word = |name: &str, bytes: Vec<u8>| -> Result<String, Error> {
            String::from_utf8_lossy(&bytes)
                .split_whitespace()
                .nth(1)
                .map(str::to_owned)
                .ok_or_else(|| Error::BadHopSpec(format!("{name}: expected \"nickname KEY\"")))
        };
        let rsa_hex = second_word("fingerprint", read("fingerprint")?)?;
        let ed_b64 = second_word("fingerprint-ed25519", read("fingerprint-ed25519")?)?;
        let ntor_file = read("keys/secret_onion_key_ntor")?;
        let ntor_key: [u8; 32] = ntor_file
            .get(64..96)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                Error::BadHopSpec(format!(
                    "keys/secret_onion_key_ntor: expected 96 bytes, found {}",
                    ntor_file.len()
                ))
            })?;
        if !ntor_file.starts_with(b"== c25519v1: onion ==") {
            return Err(Error::BadHopSpec(
                "keys/secret_onion_key_ntor: missing \"== c25519v1: onion ==\" header".into(),
            ));
        }
        Ok(Self {
            addr,
            rsa_id: parse_rsa_hex(&rsa_hex)?,
            ed_id: parse_b64_32("ed25519 identity", &ed_b64)?,
            ntor_key,
            handshake,
            protocols: DEFAULT_RELAY_PROTOCOLS.to_owned(),
        })
    }

    /// Parse the CLI form `ADDR,rsa=HEX,ed=B64,ntor=B64[,hs=ntor|ntor-v3|fast]`.
    pub fn parse_cli(s: &str) -> Result<Self, Error> {
        let mut parts = s.split(',');
        let addr_str = parts.next().unwrap_or_default();
        let addr: SocketAddr = addr_str
            .parse()
            .map_err(|e| Error::BadHopSpec(format!("address {addr_str:?}: {e}")))?;
        let (mut rsa, mut ed, mut ntor, mut hs) = (None, None, None, Handshake::Ntor);
        for part in parts {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| Error::BadHopSpec(format!("{part:?}: expected key=value")))?;
            match k {
                "rsa" => rsa = Some(parse_rsa_hex(v)?),
                "ed" => ed = Some(parse_b64_32("ed", v)?),
                "ntor" => ntor = Some(parse_b64_32("ntor", v)?),
                "hs" => hs = v.parse()?,
                other => return Err(Error::BadHopSpec(format!("unknown hop field {other:?}"))),
            }
        }
        let missing = |f: &str| Error::BadHopSpec(format!("{s:?}: missing {f}="));
        Ok(Self {
            addr,
            rsa_id: rsa.ok_or_else(|| missing("rsa"))?,
            ed_id: ed.ok_or_else(|| missing("ed"))?,
            ntor_key: ntor.ok_or_else(|| missing("ntor"))?,
            handshake: hs,
            protocols: DEFAULT_RELAY_PROTOCOLS.to_owned(),
        })
    }

    /// The same hop, reached with another handshake.
    pub fn with_handshake(mut self, handshake: Handshake) -> Self {
        self.handshake = handshake;
        self
    }

    /// The same hop, described with the subprotocols it publishes (what
    /// tor-proto negotiates congestion control and CGO from).
    pub fn with_protocols(mut self, protocols: &str) -> Self {
        self.protocols = protocols.to_owned();
        self
    }

    /// The CLI form accepted by [`HopSpec::parse_cli`].
    pub fn to_cli(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let hs = match self.handshake {
            Handshake::Ntor => "ntor",
            Handshake::NtorV3 => "ntor-v3",
            Handshake::NtorV3Cc => "ntor-v3-cc",
            Handshake::Fast => "fast",
        };
        format!(
            "{},rsa={},ed={},ntor={},hs={hs}",
            self.addr,
            hex::encode_upper(self.rsa_id),
            b64.encode(self.ed_id),
            b64.encode(self.ntor_key)
        )
    }

    fn chan_target(&self) -> Result<OwnedChanTarget, Error> {
        let mut b = OwnedChanTarget::builder();
        b.addrs(vec![self.addr])
            .ed_identity(Ed25519Identity::new(self.ed_id))
            .rsa_identity(RsaIdentity::from(self.rsa_id));
        b.build()
            .map_err(|e| Error::BadHopSpec(format!("channel target for {}: {e}", self.addr)))
    }

    fn circ_target(&self) -> Result<OwnedCircTarget, Error> {
        let protocols: tor_protover::Protocols = self
            .protocols
            .parse()
            .map_err(|e| Error::BadHopSpec(format!("protocols {:?}: {e}", self.protocols)))?;
        let mut b = OwnedCircTarget::builder();
        b.chan_target()
            .addrs(vec![self.addr])
            .ed_identity(Ed25519Identity::new(self.ed_id))
            .rsa_identity(RsaIdentity::from(self.rsa_id));
        b.ntor_onion_key(curve25519::PublicKey::from(self.ntor_key))
            .protocols(protocols);
        b.build()
            .map_err(|e| Error::BadHopSpec(format!("circuit target for {}: {e}", self.addr)))
    }
}

fn parse_rsa_hex(s: &str) -> Result<[u8; 20], Error> {
    let v = hex::decode(s).map_err(|e| Error::BadHopSpec(format!("rsa id {s:?}: {e}")))?;
    v.try_into()
        .map_err(|v: Vec<u8>| Error::BadHopSpec(format!("rsa id: {} bytes, expected 20", v.len())))
}

fn parse_b64_32(what: &str, s: &str) -> Result<[u8; 32], Error> {
    let trimmed = s.trim_end_matches('=');
    let v = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .map_err(|e| Error::BadHopSpec(format!("{what} {s:?}: {e}")))?;
    v.try_into()
        .map_err(|v: Vec<u8>| Error::BadHopSpec(format!("{what}: {} bytes, expected 32", v.len())))
}

/// Half-stream expiry needs a circuit build timeout; there is no estimator
/// without a directory, so use a fixed, generous value.
struct FixedTimeout;
impl TimeoutEstimator for FixedTimeout {
    fn circuit_build_timeout(&self, _length: usize) -> Duration {
        Duration::from_secs(60)
    }
}

/// Circuit parameters with congestion control OFF (fixed-window SENDMEs).
///
/// Fixed-window numbers are C tor's (circwindow 1000, min 100, max 1000).
/// The Vegas-only fields must still be filled in; they are prop324's
/// defaults and are never used since the algorithm is FixedWindow.
pub fn circ_params_no_cc() -> Result<CircParameters, Error> {
    circ_params(false)
}

/// Circuit parameters with congestion control ON: Vegas with C tor 0.4.9's
/// consensus defaults (congestion_control_common.c, congestion_control_vegas.c).
/// A hop whose protocols lack FlowCtrl=2 still gets fixed windows.
pub fn circ_params_cc() -> Result<CircParameters, Error> {
    circ_params(true)
}

fn circ_params(vegas: bool) -> Result<CircParameters, Error> {
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::BadHopSpec(format!("{what}: {e}"));
    let fixed = FixedWindowParamsBuilder::default()
        .circ_window_start(1000)
        .circ_window_min(100)
        .circ_window_max(1000)
        .build()
        .map_err(|e| bad("fixed window params", &e))?;
    let cwnd = CongestionWindowParamsBuilder::default()
        .cwnd_init(124)
        .cwnd_inc_pct_ss(tor_units::Percentage::new(100))
        .cwnd_inc(31)
        .cwnd_inc_rate(1)
        .cwnd_min(124)
        .cwnd_max(u32::MAX)
        .sendme_inc(31)
        .build()
        .map_err(|e| bad("congestion window params", &e))?;
    let rtt = RoundTripEstimatorParamsBuilder::default()
        .ewma_cwnd_pct(tor_units::Percentage::new(50))
        .ewma_max(10)
        .ewma_ss_max(2)
        .rtt_reset_pct(tor_units::Percentage::new(100))
        .build()
        .map_err(|e| bad("rtt params", &e))?;
    let alg = if vegas {
        // cc_vegas_{alpha,beta,gamma,delta}_exit and cc_sscap_exit, which
        // a client uses on its exit circuits: 186, 248, 186, 310, 600 (the
        // 5-tuple is alpha, beta, delta, gamma, cap); cc_ss_max 5000,
        // cc_cwnd_full_gap 4, _minpct 25, _per_cwnd 1.
        let v = VegasParamsBuilder::default()
            .cell_in_queue_params((186, 248, 310, 186, 600).into())
            .ss_cwnd_max(5000)
            .cwnd_full_gap(4)
            .cwnd_full_min_pct(tor_units::Percentage::new(25))
            .cwnd_full_per_cwnd(1)
            .build()
            .map_err(|e| bad("vegas params", &e))?;
        Algorithm::Vegas(v)
    } else {
        Algorithm::FixedWindow(fixed)
    };
    let cc = CongestionControlParams::builder()
        .alg(alg)
        .fixed_window_params(fixed)
        .cwnd_params(cwnd)
        .rtt_params(rtt)
        .build()
        .map_err(|e| bad("congestion control params", &e))?;
    // C tor's consensus defaults (flow_control_new_consensus_params); only
    // consulted when congestion control is on.
    let flow = FlowCtrlParameters {
        cc_xoff_client: CellCount::new(500),
        cc_xoff_exit: CellCount::new(500),
        cc_xon_rate: CellCount::new(500),
        cc_xon_change_pct: 25,
        cc_xon_ewma_cnt: 2,
    };
    Ok(CircParameters::new(true, cc, flow))
}

/// Open a channel (TLS + link handshake, verified against the hop's
/// identities) and build a circuit through `hops`, in order.
pub async fn build_circuit(hops: &[HopSpec]) -> Result<Tunnel, Error> {
    let Some((first, rest)) = hops.split_first() else {
        return Err(Error::BadHopSpec("a circuit needs at least one hop".into()));
    };
    // tor-rtcompat 0.47 expects the application to pick rustls' crypto
    // provider; a second install (another circuit) is a harmless no-op.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = TokioRustlsRuntime::current()
        .map_err(|e| Error::io("tor-rtcompat runtime (needs a tokio runtime)", e))?;
    let ctx = |what: &str| format!("{what} {}", first.addr);

    let tcp = rt
        .connect(&first.addr, &Default::default())
        .await
        .map_err(|e| Error::io(ctx("TCP connect to"), e))?;
    // C tor ignores SNI; any name will do.
    let tls = rt
        .tls_connector()
        .negotiate_unvalidated(tcp, "www.example.com")
        .await
        .map_err(|e| Error::io(ctx("TLS handshake with"), e))?;
    let peer_cert = {
        use tor_rtcompat::tls::CertifiedConn as _;
        tls.peer_certificate()
            .map_err(|e| Error::io(ctx("TLS peer certificate of"), e))?
            .ok_or_else(|| Error::Io {
                context: ctx("TLS peer certificate of"),
                source: std::io::Error::other("relay presented no certificate"),
            })?
            .into_owned()
    };

    let target = first.chan_target()?;
    let unverified = tor_proto::ClientChannelBuilder::new()
        .launch(tls, rt.clone(), ChannelAccount::new_noop())
        .connect(std::time::SystemTime::now)
        .await
        .map_err(|e| Error::proto(ctx("link handshake with"), e))?;
    let verified = unverified
        .verify(&target, &peer_cert, None)
        .map_err(|e| Error::proto(ctx("verifying certificates of"), e))?;
    let (chan, chan_reactor) = verified
        .finish(MaybeSensitive::not_sensitive(PeerAddr::from(first.addr)))
        .await
        .map_err(|e| Error::proto(ctx("finishing link handshake with"), e))?;
    tokio::spawn(chan_reactor.run());

    let (pending, circ_reactor) = chan
        .new_tunnel(Arc::new(FixedTimeout))
        .await
        .map_err(|e| Error::proto(ctx("allocating a circuit on"), e))?;
    tokio::spawn(circ_reactor.run());

    let params_for = |h: Handshake| match h {
        Handshake::NtorV3Cc => circ_params_cc(),
        _ => circ_params_no_cc(),
    };
    let first_target = first.circ_target()?;
    // The explicit per-handshake calls are deprecated in favour of a method
    // that picks ntor-v3 whenever Relay=4 is advertised; the tests need to
    // choose.
    let params = params_for(first.handshake)?;
    #[allow(deprecated)]
    let tunnel = match first.handshake {
        Handshake::Fast => pending.create_firsthop_fast(params).await,
        Handshake::Ntor => pending.create_firsthop_ntor(&first_target, params).await,
        Handshake::NtorV3 | Handshake::NtorV3Cc => {
            pending.create_firsthop_ntor_v3(&first_target, params).await
        }
    }
    .map_err(|e| Error::proto(ctx("creating the first hop at"), e))?;

    for hop in rest {
        let target = hop.circ_target()?;
        let circ = tunnel
            .as_single_circ()
            .map_err(|e| Error::proto("single-path circuit", e))?;
        let what = format!("extending to {}", hop.addr);
        let params = params_for(hop.handshake)?;
        #[allow(deprecated)]
        match hop.handshake {
            Handshake::Ntor => circ.extend_ntor(&target, params).await,
            Handshake::NtorV3 | Handshake::NtorV3Cc => circ.extend_ntor_v3(&target, params).await,
            Handshake::Fast => {
                return Err(Error::BadHopSpec(format!(
                    "{what}: CREATE_FAST is only valid for the first hop"
                )));
            }
        }
        .map_err(|e| Error::proto(what, e))?;
    }
    Ok(Arc::new(tunnel))
}

/// HTTP/1.0 GET through a BEGIN stream to `host:port`; returns the body.
///
/// Fails unless the status is 200 and, when a Content-Length is given, the
/// body has exactly that length.
pub async fn http_get(
    tunnel: &Tunnel,
    host: &str,
    port: u16,
    path: &str,
) -> Result<Vec<u8>, Error> {
    let ctx = format!("GET http://{host}:{port}{path}");
    let mut stream = tunnel
        .begin_stream(host, port, None)
        .await
        .map_err(|e| Error::proto(format!("{ctx}: BEGIN"), e))?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let reply = exchange(&mut stream, Some(req.as_bytes()), &ctx).await?;
    parse_http_reply(path, reply)
}

/// Send `request` (if any) on `stream`, then read until the stream ends.
async fn exchange<S>(stream: &mut S, request: Option<&[u8]>, ctx: &str) -> Result<Vec<u8>, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some(req) = request {
        stream
            .write_all(req)
            .await
            .map_err(|e| Error::io(format!("{ctx}: send request"), e))?;
        // A DataStream packs writes into cells and only sends on flush.
        stream
            .flush()
            .await
            .map_err(|e| Error::io(format!("{ctx}: send request"), e))?;
    }
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .await
        .map_err(|e| Error::io(format!("{ctx}: read reply"), e))?;
    Ok(reply)
}

/// Split an HTTP/1.x reply into its body, checking status and length.
pub fn parse_http_reply(path: &str, reply: Vec<u8>) -> Result<Vec<u8>, Error> {
    let http = |detail: String| Error::Http {
        path: path.to_owned(),
        detail,
    };
    let head_end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| http(format!("no header terminator in {} bytes", reply.len())))?;
    let head = String::from_utf8_lossy(reply.get(..head_end).unwrap_or_default()).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(http(format!("status line {status:?}")));
    }
    let body = reply.get(head_end + 4..).unwrap_or_default().to_vec();
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            let want: usize = v
                .trim()
                .parse()
                .map_err(|e| http(format!("Content-Length {v:?}: {e}")))?;
            if want != body.len() {
                return Err(http(format!(
                    "body is {} bytes, Content-Length says {want}",
                    body.len()
                )));
            }
        }
    }
    Ok(body)
}

/// RESOLVE `name` at the last hop; returns the addresses of the RESOLVED reply.
pub async fn resolve(tunnel: &Tunnel, name: &str) -> Result<Vec<IpAddr>, Error> {
    tunnel
        .resolve(name)
        .await
        .map_err(|e| Error::proto(format!("RESOLVE {name}"), e))
}

/// Open a BEGIN_DIR stream to the last hop and fetch `path` over HTTP/1.0;
/// returns the whole reply (status line, headers and body).
///
/// BEGIN_DIR is sent optimistically by tor-proto, so a refusal
/// (END NOTDIRECTORY) shows up as an error while reading.
pub async fn begin_dir(tunnel: &Tunnel, path: &str) -> Result<Vec<u8>, Error> {
    begin_dir_with(tunnel, Some(path)).await
}

/// Open a BEGIN_DIR stream and read what comes back without sending a
/// request: for a relay that refuses it, the END. (Writing first races
/// the END: a write after it fails without the END's reason.)
pub async fn begin_dir_answer(tunnel: &Tunnel) -> Result<Vec<u8>, Error> {
    begin_dir_with(tunnel, None).await
}

async fn begin_dir_with(tunnel: &Tunnel, path: Option<&str>) -> Result<Vec<u8>, Error> {
    let ctx = format!("BEGIN_DIR GET {}", path.unwrap_or("(no request)"));
    let mut stream = Arc::clone(tunnel)
        .begin_dir_stream()
        .await
        .map_err(|e| Error::proto(ctx.clone(), e))?;
    let req = path.map(|p| format!("GET {p} HTTP/1.0\r\n\r\n"));
    exchange(&mut stream, req.as_deref().map(str::as_bytes), &ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_round_trip() {
        let hop = HopSpec {
            addr: "127.0.0.1:9001".parse().unwrap(),
            rsa_id: [0xAB; 20],
            ed_id: [7; 32],
            ntor_key: [9; 32],
            handshake: Handshake::NtorV3,
            protocols: DEFAULT_RELAY_PROTOCOLS.into(),
        };
        let back = HopSpec::parse_cli(&hop.to_cli()).unwrap();
        assert_eq!(back.addr, hop.addr);
        assert_eq!(back.rsa_id, hop.rsa_id);
        assert_eq!(back.ed_id, hop.ed_id);
        assert_eq!(back.ntor_key, hop.ntor_key);
        assert_eq!(back.handshake, Handshake::NtorV3);
        // Padded base64 (as C tor writes some keys) is accepted too.
        let padded = hop
            .to_cli()
            .replace(",ntor=", ",x=")
            .replace(",x=", ",ntor=");
        assert!(HopSpec::parse_cli(&padded).is_ok());
        assert!(HopSpec::parse_cli("127.0.0.1:1,rsa=00").is_err());
    }

    #[test]
    fn http_reply_checks_status_and_length() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc".to_vec();
        assert_eq!(parse_http_reply("/", ok).unwrap(), b"abc");
        let short = b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nabc".to_vec();
        assert!(parse_http_reply("/", short).is_err());
        let notfound = b"HTTP/1.0 404 Not Found\r\n\r\n".to_vec();
        assert!(parse_http_reply("/", notfound).is_err());
    }

    #[test]
    fn no_cc_params_build() {
        circ_params_no_cc().unwrap();
    }
}
