//! [`LinkKeys`]: the immutable snapshot of our keys that the link handshake
//! needs, shared by every worker behind an `Arc` and replaced as a whole
//! when the control thread renews keys (requirements.md §1.4, §1.7, §2.1).

use std::net::IpAddr;

use crate::crypto::cert::{Ed25519Cert, Ed25519Keypair};
use crate::crypto::keys::RelayKeys;
use crate::proto::cell::{CellError, Certs};

/// What the link handshake needs from our keys.
#[derive(Debug, Clone)]
pub struct LinkKeys {
    /// CERTS body we send as responder: types 2, 4, 5, 7 (§1.4). An error
    /// here (impossible with keys from [`RelayKeys`]) is reported by the
    /// first channel that needs the cell rather than panicking.
    pub(super) responder_certs: Result<Certs, CellError>,
    /// CERTS body we send as initiator: types 2, 4, 6, 7 (§1.7).
    pub(super) initiator_certs: Result<Certs, CellError>,
    /// SHA-256 of the TLS cert our type-5 cert certifies.
    pub(super) tls_cert_sha256: Option<[u8; 32]>,
    /// The type-6 key: signs AUTHENTICATE.
    pub(super) link_auth: Ed25519Keypair,
    /// SHA-1 of our RSA identity (the fingerprint).
    pub(super) rsa_id: [u8; 20],
    /// SHA-256 of our RSA identity key DER: CID/SID in AUTH0003.
    pub(super) rsa_id_sha256: [u8; 32],
    /// Our Ed25519 identity: CID_ED/SID_ED.
    pub(super) ed_id: [u8; 32],
    /// Our advertised addresses for NETINFO.
    pub(super) my_addrs: Vec<IpAddr>,
}

fn certs_of(entries: [(u8, &[u8]); 4]) -> Result<Certs, CellError> {
    let mut certs = Certs::new();
    for (t, body) in entries {
        certs.push(t, body.to_vec())?;
    }
    Ok(certs)
}

impl LinkKeys {
    /// Take a snapshot of `keys`. `my_addrs` are the addresses we advertise
    /// (IPv4 first, then IPv6, as connection_or_send_netinfo orders them).
    /// The addresses our NETINFO cells name: the ones we publish.
    pub fn my_addrs(&self) -> &[IpAddr] {
        &self.my_addrs
    }

    pub fn from_relay_keys(keys: &RelayKeys, my_addrs: Vec<IpAddr>) -> Self {
        let tls_cert_sha256 = keys
            .responder_certs()
            .iter()
            .find(|(t, _)| *t == 5)
            .and_then(|(_, b)| Ed25519Cert::decode(b).ok())
            .map(|c| *c.certified_key());
        let rsa = keys.rsa_id().public();
        LinkKeys {
            responder_certs: certs_of(keys.responder_certs()),
            initiator_certs: certs_of(keys.initiator_certs()),
            tls_cert_sha256,
            link_auth: keys.link_auth_key().clone(),
            rsa_id: *rsa.identity().as_bytes(),
            rsa_id_sha256: rsa.sha256(),
            ed_id: *keys.ed_identity(),
            my_addrs,
        }
    }

    /// SHA-1 fingerprint of our RSA identity.
    pub fn rsa_id(&self) -> &[u8; 20] {
        &self.rsa_id
    }

    /// Our Ed25519 identity.
    pub fn ed_id(&self) -> &[u8; 32] {
        &self.ed_id
    }

    /// SHA-256 of the TLS certificate this snapshot's type-5 cert covers:
    /// the worker must serve exactly that certificate with these keys.
    pub fn tls_cert_sha256(&self) -> Option<&[u8; 32]> {
        self.tls_cert_sha256.as_ref()
    }
}
