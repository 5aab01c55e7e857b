//! Handshake faults: each tampered or missing piece closes the channel with
//! the error that names it.

use std::time::Instant;

use super::*;

#[test]
fn tampered_authenticate_fields() {
    let now = Instant::now();
    // AUTHENTICATE cell: CircID(4) Cmd(1) Len(2) AuthType(2) AuthLen(2) auth.
    const AUTH_AT: usize = 4 + 1 + 2 + 4;
    let cases: [(usize, AuthError); 11] = [
        (0, AuthError::FieldMismatch("TYPE")),
        (8, AuthError::FieldMismatch("CID")),
        (40, AuthError::FieldMismatch("SID")),
        (72, AuthError::FieldMismatch("CID_ED")),
        (104, AuthError::FieldMismatch("SID_ED")),
        (136, AuthError::FieldMismatch("SLOG")),
        (168, AuthError::FieldMismatch("CLOG")),
        (200, AuthError::FieldMismatch("SCERT")),
        (232, AuthError::FieldMismatch("TLSSECRETS")),
        (264, AuthError::BadSignature), // RAND is signed
        (300, AuthError::BadSignature),
    ];
    for (off, want) in cases {
        let (mut r, _, mut cells) = up_to_authenticate(now, &SESSION);
        cells[1][AUTH_AT + off] ^= 1;
        let e = feed_all(&mut r, &cells, now).unwrap_err();
        assert_eq!(e, ChannelError::Authenticate(want), "offset {off}");
        closed_with(&mut r, &e);
    }
    // AuthType 1 (removed in 0.4.9) and a short authenticator.
    let (mut r, _, mut cells) = up_to_authenticate(now, &SESSION);
    cells[1][AUTH_AT - 3] = 1;
    let e = feed_all(&mut r, &cells, now).unwrap_err();
    assert_eq!(e, ChannelError::Authenticate(AuthError::UnsupportedType(1)));
    let (mut r, _, mut cells) = up_to_authenticate(now, &SESSION);
    cells[1][AUTH_AT - 1] -= 1; // AuthLen 351
    let e = feed_all(&mut r, &cells, now).unwrap_err();
    assert_eq!(e, ChannelError::Authenticate(AuthError::BadLength(351)));
}

#[test]
fn wrong_exporter_fails_tlssecrets() {
    let now = Instant::now();
    let (mut r, _, cells) = up_to_authenticate(now, &FakeTls([8; 32]));
    let e = feed_all(&mut r, &cells, now).unwrap_err();
    assert_eq!(
        e,
        ChannelError::Authenticate(AuthError::FieldMismatch("TLSSECRETS"))
    );
}

#[test]
fn missing_exporter_closes() {
    let now = Instant::now();
    let (mut r, mut i) = pair(now);
    let v = out_of(&mut i);
    feed(&mut r, &v, now, &SESSION).unwrap();
    let resp = out_of(&mut r);
    assert_eq!(
        feed(&mut i, &resp, now, &NoExporter),
        Err(ChannelError::NoExporter)
    );
}

#[test]
fn relay_that_skips_authenticate_is_a_client() {
    let now = Instant::now();
    let (mut r, _, cells) = up_to_authenticate(now, &SESSION);
    feed_all(&mut r, &[cells[0].clone(), cells[2].clone()], now).unwrap();
    assert_eq!(opened(&mut r.ch), PeerKind::Client);
}

#[test]
fn authenticate_before_certs_closes() {
    let now = Instant::now();
    let (mut r, _, cells) = up_to_authenticate(now, &SESSION);
    let e = feed_all(&mut r, &cells[1..], now).unwrap_err();
    assert_eq!(
        e,
        ChannelError::Unexpected {
            cmd: ChanCmd::AUTHENTICATE,
            state: "before CERTS"
        }
    );
}

#[test]
fn wrong_scert_and_own_cert_mismatch() {
    let now = Instant::now();
    let f = fx();
    // The initiator saw another TLS cert than the type-5 cert covers.
    let expect = ExpectedPeer {
        rsa_id: *f.a.keys.rsa_id(),
        ed_id: None,
    };
    let mut r = side(Channel::new_responder(
        f.a.keys.clone(),
        f.a.tls_sha,
        ADDR_B,
        now,
    ));
    let mut i = side(initiator(expect, &f.b.tls_der, now));
    let e = drive(&mut r, &mut i, now, usize::MAX).unwrap_err();
    assert!(
        matches!(e, ChannelError::Certs(CertsError::LinkCertMismatch { .. })),
        "{e}"
    );
    // A responder whose keys do not cover the TLS cert it serves.
    let (_, mut i) = pair(now);
    let mut r = side(Channel::new_responder(
        f.a.keys.clone(),
        [1; 32],
        ADDR_B,
        now,
    ));
    let e = drive(&mut r, &mut i, now, usize::MAX).unwrap_err();
    assert!(matches!(e, ChannelError::OwnKeys(_)), "{e}");
}

#[test]
fn expired_certs_close() {
    let now = Instant::now();
    // Type-6 and type-5 certs live 2 days (TestingAuthKeyLifetime,
    // TestingLinkCertLifetime); three days later both sides refuse.
    let (mut r, _, cells) = up_to_authenticate(now, &SESSION);
    r.unix_now = T0 + 3 * 86400;
    let e = feed_all(&mut r, &cells, now).unwrap_err();
    let ChannelError::Certs(CertsError::Invalid {
        cert_type: 6,
        detail,
    }) = &e
    else {
        panic!("{e}")
    };
    assert!(detail.contains("expired"), "{detail}");

    let (mut r, mut i) = pair(now);
    i.unix_now = T0 + 3 * 86400;
    let e = drive(&mut r, &mut i, now, usize::MAX).unwrap_err();
    assert!(
        matches!(
            e,
            ChannelError::Certs(CertsError::Invalid { cert_type: 5, .. })
        ),
        "{e}"
    );
}

/// Replace the initiator's CERTS cell by one built from `edit` of its entries.
fn with_certs(now: Instant, edit: impl Fn(&mut Vec<(u8, Vec<u8>)>)) -> ChannelError {
    let (mut r, _, mut cells) = up_to_authenticate(now, &SESSION);
    let raw = decode(&cells[0], true).unwrap().unwrap().0;
    let AnyChanMsg::Certs(c) = AnyChanMsg::decode(&raw).unwrap() else {
        panic!()
    };
    let mut entries: Vec<_> = c
        .certs()
        .iter()
        .map(|e| (e.cert_type(), e.body().to_vec()))
        .collect();
    edit(&mut entries);
    // Built by hand: Certs::push refuses duplicates.
    let mut body = vec![entries.len() as u8];
    for (t, b) in &entries {
        body.push(*t);
        body.extend_from_slice(&(b.len() as u16).to_be_bytes());
        body.extend_from_slice(b);
    }
    let mut cell = Vec::new();
    encode_raw(CircId::CHANNEL, ChanCmd::CERTS, &body, true, &mut cell).unwrap();
    cells[0] = cell;
    feed_all(&mut r, &cells, now).unwrap_err()
}

#[test]
fn missing_and_duplicate_certs_close() {
    let now = Instant::now();
    for t in [2u8, 4, 6, 7] {
        let e = with_certs(now, |v| v.retain(|(ty, _)| *ty != t));
        assert!(
            matches!(e, ChannelError::Certs(CertsError::Missing(m, _)) if m == t),
            "type {t}: {e}"
        );
    }
    let e = with_certs(now, |v| {
        let four = v.iter().find(|(t, _)| *t == 4).unwrap().clone();
        v.push(four);
    });
    assert_eq!(
        e,
        ChannelError::Malformed {
            cmd: ChanCmd::CERTS,
            source: CellError::DuplicateCert(4)
        }
    );
    // A type-6 cert signed by someone else.
    let e = with_certs(now, |v| {
        let b = &mut v.iter_mut().find(|(t, _)| *t == 6).unwrap().1;
        let n = b.len();
        b[n - 1] ^= 1;
    });
    assert!(
        matches!(
            e,
            ChannelError::Certs(CertsError::Invalid { cert_type: 6, .. })
        ),
        "{e}"
    );
    // A crosscert for another identity: swap in the responder's.
    let e = with_certs(now, |v| {
        let cc = fx()
            .a
            .keys
            .responder_certs
            .as_ref()
            .unwrap()
            .get(7)
            .unwrap()
            .to_vec();
        v.iter_mut().find(|(t, _)| *t == 7).unwrap().1 = cc;
    });
    assert!(
        matches!(
            e,
            ChannelError::Certs(CertsError::Invalid { cert_type: 7, .. })
        ),
        "{e}"
    );
}

#[test]
fn wrong_expected_identity_fails_the_extend() {
    let now = Instant::now();
    let f = fx();
    for expect in [
        ExpectedPeer {
            rsa_id: [9; 20],
            ed_id: None,
        },
        ExpectedPeer {
            rsa_id: *f.a.keys.rsa_id(),
            ed_id: Some([9; 32]),
        },
    ] {
        let mut r = side(Channel::new_responder(
            f.a.keys.clone(),
            f.a.tls_sha,
            ADDR_B,
            now,
        ));
        let mut i = side(initiator(expect, &f.a.tls_der, now));
        let e = drive(&mut r, &mut i, now, usize::MAX).unwrap_err();
        assert!(e.is_identity_mismatch(), "{e}");
        closed_with(&mut i, &e);
    }
}

#[test]
fn bad_versions_and_early_cells_close() {
    let now = Instant::now();
    let mut r = responder(now);
    let e = feed(&mut r, &[0, 0, 7, 0, 3, 0, 4, 0], now, &SESSION).unwrap_err();
    assert_eq!(
        e,
        ChannelError::Malformed {
            cmd: ChanCmd::VERSIONS,
            source: CellError::OddVersionsLength(3)
        }
    );
    closed_with(&mut r, &e);

    let mut r = responder(now);
    let e = feed(&mut r, &[0, 0, 7, 0, 4, 0, 2, 0, 3], now, &SESSION).unwrap_err();
    assert!(matches!(e, ChannelError::NoCommonVersion { .. }), "{e}");
    assert!(!r.ch.has_output());

    // Fixed cells (NETINFO, PADDING) and CERTS before VERSIONS close;
    // VPADDING and AUTHORIZE are allowed.
    for (cmd, body) in [
        (ChanCmd::NETINFO, &[][..]),
        (ChanCmd::PADDING, &[][..]),
        (ChanCmd::CERTS, &[0][..]),
    ] {
        let mut r = responder(now);
        let mut c = Vec::new();
        encode_raw(CircId::CHANNEL, cmd, body, false, &mut c).unwrap();
        let e = feed(&mut r, &c, now, &SESSION).unwrap_err();
        assert_eq!(
            e,
            ChannelError::Unexpected {
                cmd,
                state: "before VERSIONS"
            }
        );
    }
    let mut r = responder(now);
    let mut c = Vec::new();
    encode_raw(CircId::CHANNEL, ChanCmd::VPADDING, &[0; 5], false, &mut c).unwrap();
    encode_raw(CircId::CHANNEL, ChanCmd::AUTHORIZE, &[], false, &mut c).unwrap();
    c.extend_from_slice(&[0, 0, 7, 0, 2, 0, 4]);
    feed(&mut r, &c, now, &SESSION).unwrap();
    assert_eq!(r.ch.link_version(), Some(4));
    // PADDING during the handshake closes (channel_tls_handle_cell).
    let mut p = Vec::new();
    encode_raw(CircId::CHANNEL, ChanCmd::PADDING, &[], true, &mut p).unwrap();
    let e = feed(&mut r, &p, now, &SESSION).unwrap_err();
    assert!(matches!(
        e,
        ChannelError::Unexpected {
            cmd: ChanCmd::PADDING,
            ..
        }
    ));
}

/// VPADDING before VERSIONS counts in the transcript on both sides: the
/// relay handshake still verifies.
#[test]
fn vpadding_is_part_of_the_transcript() {
    let now = Instant::now();
    let (mut r, mut i) = pair(now);
    let mut pad = Vec::new();
    encode_raw(CircId::CHANNEL, ChanCmd::VPADDING, &[1; 7], false, &mut pad).unwrap();
    let v = out_of(&mut i);
    // Injected on the wire, so the initiator's CLOG lacks it: must fail...
    feed(&mut r, &[pad.clone(), v].concat(), now, &SESSION).unwrap();
    let resp = out_of(&mut r);
    feed(&mut i, &resp, now, &SESSION).unwrap();
    let e = feed(&mut r, &out_of(&mut i), now, &SESSION).unwrap_err();
    assert_eq!(
        e,
        ChannelError::Authenticate(AuthError::FieldMismatch("CLOG"))
    );
    // ...and a VPADDING the responder received after VERSIONS, but the
    // initiator never saw, breaks SLOG only from the initiator's view.
    let (mut r, mut i) = pair(now);
    let v = out_of(&mut i);
    feed(&mut r, &v, now, &SESSION).unwrap();
    let mut resp = out_of(&mut r);
    let mut pad = Vec::new();
    encode_raw(CircId::CHANNEL, ChanCmd::VPADDING, &[1; 7], true, &mut pad).unwrap();
    resp.splice(9..9, pad); // after our 9-byte VERSIONS
    feed(&mut i, &resp, now, &SESSION).unwrap();
    let e = feed(&mut r, &out_of(&mut i), now, &SESSION).unwrap_err();
    assert_eq!(
        e,
        ChannelError::Authenticate(AuthError::FieldMismatch("SLOG"))
    );
}
