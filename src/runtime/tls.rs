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

/// One TLS session of a link, either side.
pub enum TlsConn {
    Server(ServerConnection),
    Client(ClientConnection),
}

impl TlsConn {
    pub fn server(cfg: &Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut c = ServerConnection::new(cfg.clone())?;
        // Flow control is the relay's job (circuit and stream windows):
        // rustls must not refuse plaintext we already decided to send.
        c.set_buffer_limit(None);
        Ok(TlsConn::Server(c))
    }

    /// `sni` should look like C tor's random `www.<random>.com`.
    pub fn client(cfg: &Arc<ClientConfig>, sni: &str) -> Result<Self, rustls::Error> {
        let name = ServerName::try_from(sni.to_owned())
            .map_err(|_| rustls::Error::General("bad SNI".into()))?;
        let mut c = ClientConnection::new(cfg.clone(), name)?;
        c.set_buffer_limit(None);
        Ok(TlsConn::Client(c))
    }

    /// Feed TLS bytes from the socket; decrypted plaintext is appended to
    /// `plain`. An error is fatal for the connection.
    pub fn feed(&mut self, mut data: &[u8], plain: &mut Vec<u8>) -> Result<(), rustls::Error> {
        while !data.is_empty() {
            let n = match self {
                TlsConn::Server(c) => c.read_tls(&mut data),
                TlsConn::Client(c) => c.read_tls(&mut data),
            }
            .map_err(|e| rustls::Error::General(format!("reading TLS: {e}")))?;
            let state = match self {
                TlsConn::Server(c) => c.process_new_packets(),
                TlsConn::Client(c) => c.process_new_packets(),
            }?;
            if state.plaintext_bytes_to_read() > 0 {
                let start = plain.len();
                plain.resize(start + state.plaintext_bytes_to_read(), 0);
                let got = match self {
                    TlsConn::Server(c) => c.reader().read(&mut plain[start..]),
                    TlsConn::Client(c) => c.reader().read(&mut plain[start..]),
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
        let r = match self {
            TlsConn::Server(c) => c.writer().write_all(data),
            TlsConn::Client(c) => c.writer().write_all(data),
        };
        // With no buffer limit, writing plaintext cannot fail.
        debug_assert!(r.is_ok());
    }

    /// Move pending TLS records into `out`.
    pub fn write_tls_into(&mut self, out: &mut Vec<u8>) {
        loop {
            let wants = match self {
                TlsConn::Server(c) => c.wants_write(),
                TlsConn::Client(c) => c.wants_write(),
            };
            if !wants {
                return;
            }
            let r = match self {
                TlsConn::Server(c) => c.write_tls(out),
                TlsConn::Client(c) => c.write_tls(out),
            };
            if r.is_err() {
                return;
            }
        }
    }

    pub fn is_handshaking(&self) -> bool {
        match self {
            TlsConn::Server(c) => c.is_handshaking(),
            TlsConn::Client(c) => c.is_handshaking(),
        }
    }

    /// The peer's end-entity certificate (client side: the relay's link cert).
    pub fn peer_cert_der(&self) -> Option<&[u8]> {
        let certs = match self {
            TlsConn::Server(c) => c.peer_certificates(),
            TlsConn::Client(c) => c.peer_certificates(),
        }?;
        certs.first().map(|c| c.as_ref())
    }

    /// RFC 5705 / RFC 8446 exporter output, 32 bytes.
    pub fn export(&self, label: &[u8], context: &[u8]) -> Option<[u8; 32]> {
        let out = [0u8; 32];
        match self {
            TlsConn::Server(c) => c.export_keying_material(out, label, Some(context)),
            TlsConn::Client(c) => c.export_keying_material(out, label, Some(context)),
        }
        .ok()
    }

    /// Send a close_notify.
    pub fn close(&mut self) {
        match self {
            TlsConn::Server(c) => c.send_close_notify(),
            TlsConn::Client(c) => c.send_close_notify(),
        }
    }
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsConn::Server(_) => "TlsConn::Server",
            TlsConn::Client(_) => "TlsConn::Client",
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
}
