//! The TLS layer of Tor links, over rustls with the aws-lc-rs provider.
//!
//! Tor does not use TLS for authentication: identities are proven inside
//! the link handshake (CERTS and AUTHENTICATE cells, `proto::channel`),
//! which binds itself to this TLS session through the RFC 5705 exporter
//! and the digest of the responder's certificate. So the server presents
//! its short-lived link certificate to anyone, ignores SNI, and asks for
//! no client certificate; the client accepts whatever certificate the
//! relay presents (the CERTS cell then has to vouch for it) but still
//! checks the handshake signature made with it. Resumption is disabled on
//! both sides, as tor-spec §2.2 requires.
//!
//! Once a link is open, a TLS 1.3 session with AES-GCM leaves rustls: its
//! traffic keys go to the record layer in [`record`], which seals and
//! opens records in place (rustls's copies of every byte cost about a fifth
//! of an exit's CPU). TLS 1.2 and ChaCha20 sessions stay with rustls.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection,
    SignatureScheme,
};

use crate::crypto::x509::TlsLinkCert;

mod record;

use self::record::{Direction, Records, SecretCapture, SuiteHash};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server side for our ORPort, presenting `link`.
pub fn server_config(link: &TlsLinkCert) -> Result<Arc<ServerConfig>, rustls::Error> {
    let cert = CertificateDer::from(link.cert_der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(link.key_pkcs8_der().to_vec()));
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    cfg.max_early_data_size = 0;
    // For the handover to our record layer (`record.rs`).
    cfg.key_log = Arc::new(SecretCapture);
    cfg.enable_secret_extraction = true;
    Ok(Arc::new(cfg))
}

/// The client side, for channels we open to extend circuits.
pub fn client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let p = provider();
    let verifier = Arc::new(AnyRelayCert {
        algs: p.signature_verification_algorithms,
    });
    let mut cfg = ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.enable_sni = true;
    cfg.key_log = Arc::new(SecretCapture);
    cfg.enable_secret_extraction = true;
    Ok(Arc::new(cfg))
}

/// Accepts any certificate: the CERTS cell proves the relay's identity and
/// binds this certificate to it (type-5 cert = SHA-256 of its DER). The
/// TLS handshake signature is still checked, so the peer holds the key.
#[derive(Debug)]
struct AnyRelayCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyRelayCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// One TLS session of a link, either side: rustls until the link is open,
/// then (TLS 1.3 with AES-GCM) our own record layer ([`record`]).
pub struct TlsConn {
    state: State,
    /// Bytes of a TLS record not yet complete: rustls is only ever given
    /// whole records, so that nothing is half-read inside it when it hands
    /// over its keys.
    inbuf: Vec<u8>,
    /// Traffic secrets rustls logged for this session ([`SecretCapture`]).
    secrets: Vec<record::Logged>,
    /// The peer's certificate, kept when rustls is gone.
    peer_cert: Option<Vec<u8>>,
    /// TLS records sealed by `write_plain` after the handover, not yet
    /// taken by `write_tls_into`.
    sealed: Vec<u8>,
}

enum State {
    Server(ServerConnection),
    Client(ClientConnection),
    Records(Box<Records>),
    /// rustls failed to hand over: the link is closed.
    Gone,
}

/// What [`TlsConn::hand_over`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum HandOver {
    /// The record layer is ours from now on.
    Done,
    /// Not now (still handshaking, output pending) or never (TLS 1.2,
    /// ChaCha20): rustls keeps the session.
    NotNow,
}

impl TlsConn {
    fn new(state: State) -> Self {
        Self {
            state,
            inbuf: Vec::new(),
            secrets: Vec::new(),
            peer_cert: None,
            sealed: Vec::new(),
        }
    }

    pub fn server(cfg: &Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut c = ServerConnection::new(cfg.clone())?;
        // Flow control is the relay's job (circuit and stream windows):
        // rustls must not refuse plaintext we already decided to send.
        c.set_buffer_limit(None);
        Ok(Self::new(State::Server(c)))
    }

    /// `sni` should look like C tor's random `www.<random>.com`.
    pub fn client(cfg: &Arc<ClientConfig>, sni: &str) -> Result<Self, rustls::Error> {
        let name = ServerName::try_from(sni.to_owned())
            .map_err(|_| rustls::Error::General("bad SNI".into()))?;
        let mut c = ClientConnection::new(cfg.clone(), name)?;
        c.set_buffer_limit(None);
        Ok(Self::new(State::Client(c)))
    }

    /// Feed TLS bytes from the socket; decrypted plaintext is appended to
    /// `plain`. An error is fatal for the connection.
    pub fn feed(&mut self, data: &[u8], plain: &mut Vec<u8>) -> Result<(), rustls::Error> {
        if let State::Records(r) = &mut self.state {
            return r
                .open_into(data, plain)
                .map_err(|e| rustls::Error::General(e.to_string()));
        }
        // Whole records only, to rustls.
        let mut inbuf = std::mem::take(&mut self.inbuf);
        let r = if inbuf.is_empty() {
            let whole = whole_records(data);
            let r = self.feed_rustls(data.get(..whole).unwrap_or(&[]), plain);
            inbuf.extend_from_slice(data.get(whole..).unwrap_or(&[]));
            r
        } else {
            inbuf.extend_from_slice(data);
            let whole = whole_records(&inbuf);
            let r = self.feed_rustls(inbuf.get(..whole).unwrap_or(&[]), plain);
            inbuf.drain(..whole);
            r
        };
        self.inbuf = inbuf;
        r
    }

    fn feed_rustls(&mut self, mut data: &[u8], plain: &mut Vec<u8>) -> Result<(), rustls::Error> {
        while !data.is_empty() {
            let n = match &mut self.state {
                State::Server(c) => c.read_tls(&mut data),
                State::Client(c) => c.read_tls(&mut data),
                _ => return Err(rustls::Error::General("TLS session is gone".into())),
            }
            .map_err(|e| rustls::Error::General(format!("reading TLS: {e}")))?;
            let state = match &mut self.state {
                State::Server(c) => c.process_new_packets(),
                State::Client(c) => c.process_new_packets(),
                _ => return Err(rustls::Error::General("TLS session is gone".into())),
            };
            self.secrets.extend(SecretCapture::take());
            let state = state?;
            if state.plaintext_bytes_to_read() > 0 {
                let start = plain.len();
                plain.resize(start + state.plaintext_bytes_to_read(), 0);
                let got = match &mut self.state {
                    State::Server(c) => c.reader().read(&mut plain[start..]),
                    State::Client(c) => c.reader().read(&mut plain[start..]),
                    _ => Ok(0),
                }
                .unwrap_or(0);
                plain.truncate(start + got);
            }
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Queue plaintext to be encrypted.
    pub fn write_plain(&mut self, data: &[u8]) {
        let r = match &mut self.state {
            State::Server(c) => c.writer().write_all(data),
            State::Client(c) => c.writer().write_all(data),
            State::Records(r) => {
                r.seal_into(data, &mut self.sealed);
                Ok(())
            }
            State::Gone => Ok(()),
        };
        // With no buffer limit, writing plaintext cannot fail.
        debug_assert!(r.is_ok());
    }

    /// Encrypt `plain` into TLS records appended to `out`. After the
    /// handover each byte is copied once, into `out`, and sealed there.
    pub fn encrypt_into(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        self.write_tls_into(out);
        if let State::Records(r) = &mut self.state {
            r.seal_into(plain, out);
            return;
        }
        // A record at a time: rustls copies each into a record buffer of
        // its own and then into `out`; done for a whole turn's output at
        // once, those copies ran from and to memory rather than cache.
        for record in plain.chunks(record::MAX_PLAIN) {
            self.write_plain(record);
            self.write_tls_into(out);
        }
    }

    /// Move pending TLS records into `out`.
    pub fn write_tls_into(&mut self, out: &mut Vec<u8>) {
        if !self.sealed.is_empty() {
            if out.is_empty() {
                std::mem::swap(out, &mut self.sealed);
            } else {
                out.append(&mut self.sealed);
            }
        }
        if let State::Records(r) = &mut self.state {
            if r.owes_output() {
                r.seal_into(&[], out);
            }
            return;
        }
        loop {
            let wants = match &self.state {
                State::Server(c) => c.wants_write(),
                State::Client(c) => c.wants_write(),
                _ => false,
            };
            if !wants {
                return;
            }
            let r = match &mut self.state {
                State::Server(c) => c.write_tls(out),
                State::Client(c) => c.write_tls(out),
                _ => return,
            };
            if r.is_err() {
                return;
            }
        }
    }

    pub fn is_handshaking(&self) -> bool {
        match &self.state {
            State::Server(c) => c.is_handshaking(),
            State::Client(c) => c.is_handshaking(),
            State::Records(_) | State::Gone => false,
        }
    }

    /// Whether our record layer has taken over from rustls.
    pub fn handed_over(&self) -> bool {
        matches!(self.state, State::Records(_))
    }

    /// The peer's end-entity certificate (client side: the relay's link cert).
    pub fn peer_cert_der(&self) -> Option<&[u8]> {
        let certs = match &self.state {
            State::Server(c) => c.peer_certificates(),
            State::Client(c) => c.peer_certificates(),
            State::Records(_) | State::Gone => return self.peer_cert.as_deref(),
        }?;
        certs.first().map(|c| c.as_ref())
    }

    /// RFC 5705 / RFC 8446 exporter output, 32 bytes (rustls only: the
    /// link handshake, which needs it, is over before the handover).
    pub fn export(&self, label: &[u8], context: &[u8]) -> Option<[u8; 32]> {
        let out = [0u8; 32];
        match &self.state {
            State::Server(c) => c.export_keying_material(out, label, Some(context)),
            State::Client(c) => c.export_keying_material(out, label, Some(context)),
            State::Records(_) | State::Gone => return None,
        }
        .ok()
    }

    /// Send a close_notify.
    pub fn close(&mut self) {
        match &mut self.state {
            State::Server(c) => c.send_close_notify(),
            State::Client(c) => c.send_close_notify(),
            State::Records(r) => r.close_into(&mut self.sealed),
            State::Gone => {}
        }
    }

    /// Take the record layer over from rustls, if this session is TLS 1.3
    /// with AES-GCM, the handshake is done, rustls has nothing left to
    /// send and the traffic secrets were captured. Call once the link is
    /// open (its handshake uses the exporter). An error leaves the session
    /// unusable: close the link.
    pub fn hand_over(&mut self) -> Result<HandOver, rustls::Error> {
        use rustls::{CipherSuite, ProtocolVersion};
        let (common, server): (&rustls::CommonState, bool) = match &self.state {
            State::Server(c) => (c, true),
            State::Client(c) => (c, false),
            State::Records(_) | State::Gone => return Ok(HandOver::NotNow),
        };
        if common.is_handshaking()
            || common.wants_write()
            || common.protocol_version() != Some(ProtocolVersion::TLSv1_3)
        {
            return Ok(HandOver::NotNow);
        }
        let hash = match common.negotiated_cipher_suite().map(|s| s.suite()) {
            Some(CipherSuite::TLS13_AES_128_GCM_SHA256) => SuiteHash::Sha256,
            Some(CipherSuite::TLS13_AES_256_GCM_SHA384) => SuiteHash::Sha384,
            _ => return Ok(HandOver::NotNow),
        };
        let (ours, theirs) = if server {
            (record::SERVER_SECRET, record::CLIENT_SECRET)
        } else {
            (record::CLIENT_SECRET, record::SERVER_SECRET)
        };
        let has = |label| self.secrets.iter().any(|(l, _)| *l == label);
        if !has(ours) || !has(theirs) {
            return Ok(HandOver::NotNow);
        }
        self.peer_cert = self.peer_cert_der().map(<[u8]>::to_vec);
        let extracted = match std::mem::replace(&mut self.state, State::Gone) {
            State::Server(c) => c.dangerous_extract_secrets(),
            State::Client(c) => c.dangerous_extract_secrets(),
            _ => return Ok(HandOver::NotNow),
        }?;
        // The logged secret behind each of rustls's keys: a key log sees
        // every session on this thread, so match by the key it gives.
        let secrets = std::mem::take(&mut self.secrets);
        let direction = |label, (seq, given): (u64, rustls::ConnectionTrafficSecrets)| {
            use rustls::ConnectionTrafficSecrets::{Aes128Gcm, Aes256Gcm};
            let key = match &given {
                Aes128Gcm { key, .. } | Aes256Gcm { key, .. } => key.as_ref(),
                _ => return None,
            };
            let secret = secrets.iter().rev().find(|(l, s)| {
                *l == label && Direction::key_of(hash, s).is_some_and(|k| k.as_slice() == key)
            })?;
            Direction::new(hash, &secret.1, seq)
        };
        let (Some(tx), Some(rx)) = (
            direction(ours, extracted.tx),
            direction(theirs, extracted.rx),
        ) else {
            return Err(rustls::Error::General(
                "TLS keys handed over by rustls are not in its key log".into(),
            ));
        };
        let mut records = Records::new(tx, rx);
        // A record already half-received continues under our layer.
        let mut plain = Vec::new();
        let pending = std::mem::take(&mut self.inbuf);
        records
            .open_into(&pending, &mut plain)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        debug_assert!(plain.is_empty(), "only partial records wait in inbuf");
        self.state = State::Records(Box::new(records));
        Ok(HandOver::Done)
    }
}

/// The length of the whole TLS records at the start of `data`. A header
/// with a length no record may have counts as whole, so that rustls sees
/// it and fails the connection.
fn whole_records(data: &[u8]) -> usize {
    let mut at = 0;
    while let Some(h) = data.get(at..at + 5) {
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if len > 18_432 {
            return data.len();
        }
        if data.len() < at + 5 + len {
            break;
        }
        at += 5 + len;
    }
    at
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.state {
            State::Server(_) => "TlsConn::Server",
            State::Client(_) => "TlsConn::Client",
            State::Records(_) => "TlsConn::Records",
            State::Gone => "TlsConn::Gone",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn pump(a: &mut TlsConn, b: &mut TlsConn, a_plain: &mut Vec<u8>, b_plain: &mut Vec<u8>) {
        for _ in 0..10 {
            let mut buf = Vec::new();
            a.write_tls_into(&mut buf);
            b.feed(&buf, b_plain).unwrap();
            let mut buf2 = Vec::new();
            b.write_tls_into(&mut buf2);
            a.feed(&buf2, a_plain).unwrap();
            if buf.is_empty() && buf2.is_empty() {
                break;
            }
        }
    }

    #[test]
    fn handshake_data_and_exporter_agree() {
        let mut rng = rand::rng();
        let id = crate::crypto::rsa::RsaPrivate::generate_1024(&mut rng).unwrap();
        let link = TlsLinkCert::generate(
            &mut rng,
            &id,
            SystemTime::now(),
            std::time::Duration::from_secs(86400),
        )
        .unwrap();
        let mut s = TlsConn::server(&server_config(&link).unwrap()).unwrap();
        let mut c = TlsConn::client(&client_config().unwrap(), "www.example.com").unwrap();
        let (mut cp, mut sp) = (Vec::new(), Vec::new());
        pump(&mut c, &mut s, &mut cp, &mut sp);
        assert!(!c.is_handshaking() && !s.is_handshaking());
        assert_eq!(c.peer_cert_der(), Some(link.cert_der()));
        let l = b"EXPORTER FOR TOR TLS CLIENT BINDING AUTH0003";
        assert_eq!(c.export(l, b"ctx"), s.export(l, b"ctx"));
        assert_ne!(c.export(l, b"ctx"), c.export(l, b"other"));
        c.write_plain(b"hello relay");
        s.write_plain(&vec![9u8; 100_000]);
        pump(&mut c, &mut s, &mut cp, &mut sp);
        assert_eq!(sp, b"hello relay");
        assert_eq!(cp.len(), 100_000);
    }

    fn link_cert() -> TlsLinkCert {
        let mut rng = rand::rng();
        let id = crate::crypto::rsa::RsaPrivate::generate_1024(&mut rng).unwrap();
        TlsLinkCert::generate(
            &mut rng,
            &id,
            SystemTime::now(),
            std::time::Duration::from_secs(86400),
        )
        .unwrap()
    }

    /// Our record layer against rustls's on the other end, each side in
    /// turn: data both ways, records cut anywhere, the peer's key updates
    /// (it asks for ours too), close_notify.
    #[test]
    fn handed_over_records_talk_to_rustls() {
        let link = link_cert();
        for ours_is_server in [true, false] {
            let mut s = TlsConn::server(&server_config(&link).unwrap()).unwrap();
            let mut c = TlsConn::client(&client_config().unwrap(), "www.example.com").unwrap();
            let (mut cp, mut sp) = (Vec::new(), Vec::new());
            // The handshake, fed in awkward pieces so records straddle reads.
            for _ in 0..10 {
                let mut buf = Vec::new();
                c.write_tls_into(&mut buf);
                for piece in buf.chunks(7) {
                    s.feed(piece, &mut sp).unwrap();
                }
                let mut buf2 = Vec::new();
                s.write_tls_into(&mut buf2);
                for piece in buf2.chunks(11) {
                    c.feed(piece, &mut cp).unwrap();
                }
                if buf.is_empty() && buf2.is_empty() {
                    break;
                }
            }
            let (ours, theirs, ours_plain, theirs_plain) = if ours_is_server {
                (&mut s, &mut c, &mut sp, &mut cp)
            } else {
                (&mut c, &mut s, &mut cp, &mut sp)
            };
            let cert = ours.peer_cert_der().map(<[u8]>::to_vec);
            assert_eq!(ours.hand_over().unwrap(), HandOver::Done);
            assert!(ours.handed_over());
            assert_eq!(ours.peer_cert_der().map(<[u8]>::to_vec), cert);
            assert_eq!(ours.export(b"x", b"y"), None);

            let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
            let mut wire = Vec::new();
            ours.encrypt_into(&big, &mut wire);
            for piece in wire.chunks(1000) {
                theirs.feed(piece, theirs_plain).unwrap();
            }
            assert_eq!(*theirs_plain, big);
            theirs.write_plain(&big[..50_000]);
            let mut wire = Vec::new();
            theirs.write_tls_into(&mut wire);
            for piece in wire.chunks(333) {
                ours.feed(piece, ours_plain).unwrap();
            }
            assert_eq!(*ours_plain, big[..50_000]);

            // rustls updates its keys and asks for ours.
            match &mut theirs.state {
                State::Server(x) => x.refresh_traffic_keys().unwrap(),
                State::Client(x) => x.refresh_traffic_keys().unwrap(),
                _ => unreachable!(),
            }
            theirs.write_plain(b"after their update");
            let mut wire = Vec::new();
            theirs.write_tls_into(&mut wire);
            ours_plain.clear();
            ours.feed(&wire, ours_plain).unwrap();
            assert_eq!(*ours_plain, b"after their update");
            let mut wire = Vec::new();
            ours.encrypt_into(b"after ours", &mut wire);
            theirs_plain.clear();
            theirs.feed(&wire, theirs_plain).unwrap();
            assert_eq!(*theirs_plain, b"after ours");

            ours.close();
            let mut wire = Vec::new();
            ours.write_tls_into(&mut wire);
            theirs.feed(&wire, theirs_plain).unwrap();
            match &mut theirs.state {
                State::Server(x) => assert!(x.process_new_packets().unwrap().peer_has_closed()),
                State::Client(x) => assert!(x.process_new_packets().unwrap().peer_has_closed()),
                _ => unreachable!(),
            }
        }
    }

    /// A TLS 1.2 session stays with rustls.
    #[test]
    fn tls12_is_not_handed_over() {
        let link = link_cert();
        let s_cfg = server_config(&link).unwrap();
        let p = provider();
        let c_cfg = ClientConfig::builder_with_provider(p.clone())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyRelayCert {
                algs: p.signature_verification_algorithms,
            }))
            .with_no_client_auth();
        let mut s = TlsConn::server(&s_cfg).unwrap();
        let mut c = TlsConn::client(&Arc::new(c_cfg), "www.example.com").unwrap();
        let (mut cp, mut sp) = (Vec::new(), Vec::new());
        pump(&mut c, &mut s, &mut cp, &mut sp);
        assert!(!s.is_handshaking());
        assert_eq!(s.hand_over().unwrap(), HandOver::NotNow);
        assert!(!s.handed_over());
    }
}
