#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! Directory authority key certificates (dir-spec §3.1;
//! authcert_parse.c:authority_cert_parse_from_string): an authority's
//! long-term v3 identity key certifies the medium-term signing key that
//! signs the consensus.
//!
//! Checks, as C tor makes them: `fingerprint` is SHA-1 of the identity
//! key; the signing key signs (raw PKCS#1 v1.5) SHA-1 of the identity key
//! (`dir-key-crosscert`); the identity key signs SHA-1 of the text from
//! `dir-key-certificate-version` through the `dir-key-certification` line
//! (`dir-key-certification`). Whether the certificate has expired is the
//! caller's question, at the time it uses it.

use sha1::{Digest, Sha1};

use super::document::{self, Item, SyntaxError};
use super::time::{UnixTime, parse_iso};
use crate::crypto::rsa::RsaPublic;

/// Why a certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0}")]
    Syntax(#[from] SyntaxError),
    #[error("certificate: {0}")]
    Invalid(String),
}

fn invalid(s: impl Into<String>) -> CertError {
    CertError::Invalid(s.into())
}

/// A checked authority certificate.
#[derive(Clone, Debug)]
pub struct AuthCert {
    /// SHA-1 of the identity key: the `v3ident` of `DirAuthority` lines.
    pub v3ident: [u8; 20],
    /// SHA-1 of the signing key's DER: what `directory-signature` names.
    pub signing_key_digest: [u8; 20],
    pub signing_key: RsaPublic,
    pub published: UnixTime,
    pub expires: UnixTime,
    /// The certificate's text, as received (kept in `cached-certs`).
    pub text: String,
}

/// Parse and check every certificate in `text` (an answer to
/// `/tor/keys/...` holds several, back to back). A certificate that does
/// not check out is an error for the whole answer, as in C tor.
pub fn parse_all(text: &str) -> Result<Vec<AuthCert>, CertError> {
    const START: &str = "dir-key-certificate-version";
    let items = document::items(text)?;
    if items.first().map(|it| it.keyword) != Some(START) {
        return Err(invalid("does not start with dir-key-certificate-version"));
    }
    // Each certificate runs from its first line to the next one's.
    items
        .chunk_by(|_, next| next.keyword != START)
        .map(|cert| check_one(text, cert))
        .collect()
}

fn one<'i, 'a>(items: &'i [Item<'a>], kw: &str) -> Result<&'i Item<'a>, CertError> {
    let mut it = items.iter().filter(|i| i.keyword == kw);
    let first = it.next().ok_or_else(|| invalid(format!("missing {kw}")))?;
    if it.next().is_some() {
        return Err(invalid(format!("{kw} appears more than once")));
    }
    Ok(first)
}

fn check_one(text: &str, items: &[Item<'_>]) -> Result<AuthCert, CertError> {
    let (Some(first), Some(last)) = (items.first(), items.last()) else {
        return Err(invalid("empty certificate"));
    };
    if first.rest.trim() != "3" {
        return Err(invalid(format!(
            "dir-key-certificate-version {:?}, expected 3",
            first.rest
        )));
    }
    if last.keyword != "dir-key-certification" {
        return Err(invalid("does not end with dir-key-certification"));
    }
    let fp = one(items, "fingerprint")?.arg(0)?;
    let mut v3ident = [0u8; 20];
    hex::decode_to_slice(fp, &mut v3ident)
        .map_err(|_| invalid(format!("fingerprint {fp:?} is not 40 hex digits")))?;
    let time = |kw: &str| -> Result<UnixTime, CertError> {
        let it = one(items, kw)?;
        parse_iso(it.rest.trim())
            .ok_or_else(|| invalid(format!("{kw} {:?} is not a time", it.rest)))
    };
    let published = time("dir-key-published")?;
    let expires = time("dir-key-expires")?;
    let key = |kw: &str| -> Result<RsaPublic, CertError> {
        let der = one(items, kw)?.object_tagged("RSA PUBLIC KEY")?;
        RsaPublic::from_der(der).map_err(|e| invalid(format!("{kw}: {e}")))
    };
    let identity = key("dir-identity-key")?;
    let signing = key("dir-signing-key")?;
    if identity.identity().as_bytes() != &v3ident {
        return Err(invalid(
            "the identity key's digest does not match the declared fingerprint",
        ));
    }
    let cross = one(items, "dir-key-crosscert")?;
    let cross_sig = match &cross.object {
        Some(o) if o.tag == "ID SIGNATURE" || o.tag == "SIGNATURE" => &o.data,
        _ => return Err(invalid("dir-key-crosscert has no signature object")),
    };
    signing
        .verify_raw(&v3ident, cross_sig)
        .map_err(|_| invalid("the signing key's cross-certificate does not verify"))?;
    // Signed text: from the first keyword through "dir-key-certification\n".
    // The start is an offset into `text`: the sum cannot overflow.
    let signed_end = last.start.saturating_add("dir-key-certification\n".len());
    let signed = text
        .get(first.start..signed_end)
        .ok_or_else(|| invalid("dir-key-certification line is malformed"))?;
    if !signed.ends_with("dir-key-certification\n") {
        return Err(invalid("dir-key-certification takes no arguments"));
    }
    let digest: [u8; 20] = Sha1::digest(signed.as_bytes()).into();
    identity
        .verify_raw(&digest, last.object_tagged("SIGNATURE")?)
        .map_err(|_| invalid("the certification signature does not verify"))?;
    Ok(AuthCert {
        v3ident,
        signing_key_digest: *signing.identity().as_bytes(),
        signing_key: signing,
        published,
        expires,
        text: text[first.start..last.end].to_owned(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::rsa::RsaPrivate;
    use crate::dir::document::write_object;
    use crate::dir::time::format_iso;

    /// A test authority: identity and signing keys, and a certificate.
    pub(crate) struct TestAuthority {
        pub identity: RsaPrivate,
        pub signing: RsaPrivate,
        pub cert_text: String,
    }

    impl TestAuthority {
        pub(crate) fn new(published: UnixTime, expires: UnixTime) -> TestAuthority {
            let mut rng = rand::rng();
            // Small keys keep the tests fast; the format does not care.
            let identity = RsaPrivate::generate(&mut rng, 1024).unwrap();
            let signing = RsaPrivate::generate(&mut rng, 1024).unwrap();
            let cert_text = make_cert(&identity, &signing, published, expires);
            TestAuthority {
                identity,
                signing,
                cert_text,
            }
        }

        pub(crate) fn v3ident(&self) -> [u8; 20] {
            *self.identity.public().identity().as_bytes()
        }

        /// Sign a digest with the signing key (consensus signatures).
        pub(crate) fn sign(&self, digest: &[u8]) -> Vec<u8> {
            self.signing.sign_raw(&mut rand::rng(), digest).unwrap()
        }
    }

    pub(crate) fn make_cert(
        identity: &RsaPrivate,
        signing: &RsaPrivate,
        published: UnixTime,
        expires: UnixTime,
    ) -> String {
        let mut rng = rand::rng();
        let id = identity.public().identity();
        let mut s = format!(
            "dir-key-certificate-version 3\nfingerprint {}\ndir-key-published {}\ndir-key-expires {}\n",
            id.hex_upper(),
            format_iso(published),
            format_iso(expires)
        );
        s.push_str("dir-identity-key\n");
        write_object(&mut s, "RSA PUBLIC KEY", identity.public().der());
        s.push_str("dir-signing-key\n");
        write_object(&mut s, "RSA PUBLIC KEY", signing.public().der());
        s.push_str("dir-key-crosscert\n");
        let cross = signing.sign_raw(&mut rng, id.as_bytes()).unwrap();
        write_object(&mut s, "ID SIGNATURE", &cross);
        s.push_str("dir-key-certification\n");
        let d: [u8; 20] = Sha1::digest(s.as_bytes()).into();
        let sig = identity.sign_raw(&mut rng, &d).unwrap();
        write_object(&mut s, "SIGNATURE", &sig);
        s
    }

    #[test]
    fn good_certs_and_tampering() {
        let a = TestAuthority::new(1_000_000, 2_000_000);
        let b = TestAuthority::new(1_000_000, 3_000_000);
        let both = format!("{}{}", a.cert_text, b.cert_text);
        let certs = parse_all(&both).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].v3ident, a.v3ident());
        assert_eq!(
            &certs[1].signing_key_digest,
            b.signing.public().identity().as_bytes()
        );
        assert_eq!(
            (certs[0].published, certs[0].expires),
            (1_000_000, 2_000_000)
        );
        assert_eq!(certs[1].text, b.cert_text);

        // A changed expiry breaks the certification.
        let t = a
            .cert_text
            .replace(&format_iso(2_000_000), &format_iso(2_000_001));
        assert!(
            parse_all(&t)
                .unwrap_err()
                .to_string()
                .contains("certification")
        );
        // Another authority's signing key: the cross-certificate fails.
        let t = make_cert(&a.identity, &b.signing, 1, 2);
        assert!(parse_all(&t).is_ok());
        let wrong = a.cert_text.replace(
            &crate::dir::document::items(&a.cert_text).unwrap()[5]
                .object
                .as_ref()
                .map(|o| {
                    let mut s = String::new();
                    write_object(&mut s, o.tag, &o.data);
                    s
                })
                .unwrap(),
            &{
                let mut s = String::new();
                write_object(&mut s, "RSA PUBLIC KEY", b.signing.public().der());
                s
            },
        );
        assert!(parse_all(&wrong).is_err());
        assert!(parse_all("fingerprint x\n").is_err());
        assert!(parse_all(&a.cert_text[..a.cert_text.len() - 10]).is_err());
    }
}
