//! tor1 tests: a 3-hop circuit, client layers against relay layers, in the
//! style of arti tor-proto crypto/cell tests; batch == one-by-one; and a
//! clear-box check of the first cell against AES/SHA-1 computed directly.

use super::*;
use ::sha1::{Digest, Sha1};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

fn random_keys(rng: &mut StdRng) -> [u8; TOR1_KEY_LEN] {
    let mut k = [0u8; TOR1_KEY_LEN];
    rng.fill_bytes(&mut k);
    k
}

fn random_cell(rng: &mut StdRng) -> Box<CellBody> {
    let mut c = Box::new([0u8; CELL_BODY_LEN]);
    rng.fill_bytes(&mut c[..]);
    c
}

#[test]
fn three_hops_both_directions() {
    let mut rng = StdRng::seed_from_u64(10);
    let mut client = Tor1ClientCircuit::new();
    let mut relays = Vec::new();
    for _ in 0..3 {
        let k = random_keys(&mut rng);
        client.push_hop(&k);
        relays.push(Tor1RelayCrypto::new(&k));
    }
    assert_eq!(client.len(), 3);
    assert!(
        client
            .encrypt_forward(3, &mut [0u8; CELL_BODY_LEN])
            .is_none()
    );

    for _ in 0..300 {
        // Forward: client → hop `target`.
        let target = rng.random_range(0..3usize);
        let plain = random_cell(&mut rng);
        let mut cell = plain.clone();
        let ctag = client.encrypt_forward(target, &mut cell).unwrap();
        let mut seen = None;
        for (i, relay) in relays.iter_mut().enumerate() {
            if let Some(tag) = relay.decrypt_forward(&mut cell) {
                seen = Some((i, tag));
                break;
            }
        }
        let (hop, rtag) = seen.expect("some hop recognizes the cell");
        assert_eq!(hop, target);
        assert_eq!(rtag, ctag);
        assert_eq!(cell[9..], plain[9..]);
        assert_eq!(cell[0], plain[0]);
        assert_eq!(cell[3..5], plain[3..5]);

        // Backward: hop `origin` → client.
        let origin = rng.random_range(0..3usize);
        let plain = random_cell(&mut rng);
        let mut cell = plain.clone();
        let rtag = relays[origin].originate_backward(&mut cell);
        for relay in relays[..origin].iter_mut().rev() {
            relay.encrypt_backward(&mut cell);
        }
        let (hop, ctag) = client
            .decrypt_backward(&mut cell)
            .expect("client recognizes");
        assert_eq!(hop, origin);
        assert_eq!(ctag, rtag);
        assert_eq!(cell[9..], plain[9..]);
    }
}

#[test]
fn batch_equals_one_by_one() {
    let mut rng = StdRng::seed_from_u64(11);
    let k = random_keys(&mut rng);
    let mut client = Tor1ClientLayer::new(&k);
    let mut single = Tor1RelayCrypto::new(&k);
    let mut batch = Tor1RelayCrypto::new(&k);

    for round in 0..10 {
        let n = 1 + round * 3;
        // Forward: a mix of cells for us and cells to pass on.
        let mut cells: Vec<Box<CellBody>> = Vec::new();
        let mut expect_tags = Vec::new();
        for _ in 0..n {
            let mut c = random_cell(&mut rng);
            if rng.random_bool(0.5) {
                expect_tags.push(Some(client.originate_forward(&mut c)));
            } else {
                client.encrypt_forward(&mut c);
                expect_tags.push(None);
            }
            cells.push(c);
        }
        let mut copy = cells.clone();
        let one: Vec<_> = copy.iter_mut().map(|c| single.decrypt_forward(c)).collect();
        let mut refs: Vec<&mut CellBody> = cells.iter_mut().map(|c| &mut **c).collect();
        let mut rec = vec![None; n];
        batch.decrypt_forward_batch(&mut refs, &mut rec);
        assert_eq!(rec, one);
        assert_eq!(rec, expect_tags);
        assert_eq!(cells, copy);

        // Backward originate and relay.
        let mut cells: Vec<Box<CellBody>> = (0..n).map(|_| random_cell(&mut rng)).collect();
        let mut copy = cells.clone();
        let one: Vec<_> = copy
            .iter_mut()
            .map(|c| single.originate_backward(c))
            .collect();
        let mut refs: Vec<&mut CellBody> = cells.iter_mut().map(|c| &mut **c).collect();
        let mut tags = vec![SendmeTag::default(); n];
        batch.originate_backward_batch(&mut refs, &mut tags);
        assert_eq!(tags, one);
        assert_eq!(cells, copy);
        for (c, t) in cells.iter_mut().zip(&tags) {
            assert_eq!(client.decrypt_backward(c), Some(*t));
        }

        let mut cells: Vec<Box<CellBody>> = (0..n).map(|_| random_cell(&mut rng)).collect();
        let mut copy = cells.clone();
        copy.iter_mut().for_each(|c| single.encrypt_backward(c));
        let mut refs: Vec<&mut CellBody> = cells.iter_mut().map(|c| &mut **c).collect();
        batch.encrypt_backward_batch(&mut refs);
        assert_eq!(cells, copy);
        // Keep the client's backward keystream in step with the relay's.
        for c in cells.iter_mut() {
            client.decrypt_backward(c);
        }
    }
}

/// The exit's first originated cell, computed from the primitives by hand:
/// digest = SHA1(Db | cell with Recognized = Digest = 0), then AES-128-CTR
/// with Kb and IV 0 (requirements.md §3.5, §4.2).
#[test]
fn clear_box_first_cell() {
    let mut rng = StdRng::seed_from_u64(12);
    let k = random_keys(&mut rng);
    let mut relay = Tor1RelayCrypto::new(&k);
    let mut cell = random_cell(&mut rng);
    let mut expect = cell.clone();
    let tag = relay.originate_backward(&mut cell);

    expect[1..3].fill(0);
    expect[5..9].fill(0);
    let mut h = Sha1::new();
    h.update(&k[20..40]);
    h.update(&expect[..]);
    let d: [u8; 20] = h.finalize().into();
    assert_eq!(tag.0, d);
    expect[5..9].copy_from_slice(&d[..4]);
    let kb: [u8; 16] = k[56..72].try_into().unwrap();
    use ::ctr::cipher::{KeyIvInit, StreamCipher};
    let mut c = ::ctr::Ctr128BE::<aes::Aes128>::new(&kb.into(), &[0u8; 16].into());
    c.apply_keystream(&mut expect[..]);
    assert_eq!(cell, expect);
}

#[test]
fn not_recognized_leaves_state() {
    let mut rng = StdRng::seed_from_u64(13);
    let k = random_keys(&mut rng);
    let mut client = Tor1ClientLayer::new(&k);
    let mut relay = Tor1RelayCrypto::new(&k);
    // A cell whose plaintext has Recognized = 0 but is not for us (the
    // digest will not match): nothing is recognized and the next real
    // cell still is.
    let mut c = random_cell(&mut rng);
    c[1..3].fill(0);
    let plain = c.clone();
    client.encrypt_forward(&mut c);
    assert_eq!(relay.decrypt_forward(&mut c), None);
    assert_eq!(c, plain);
    let mut c = random_cell(&mut rng);
    let t = client.originate_forward(&mut c);
    assert_eq!(relay.decrypt_forward(&mut c), Some(t));
}

/// Sealing several circuits' cells in one call gives each circuit the cells
/// and tags it would give one at a time, its client reads them, and later
/// single cells continue the same streams.
#[test]
fn originate_many_equals_one_by_one() {
    let mut rng = StdRng::seed_from_u64(12);
    let keys: Vec<_> = (0..9).map(|_| random_keys(&mut rng)).collect();
    let mut single: Vec<_> = keys.iter().map(Tor1RelayCrypto::new).collect();
    let mut many: Vec<_> = keys.iter().map(Tor1RelayCrypto::new).collect();
    let mut clients: Vec<_> = keys.iter().map(Tor1ClientLayer::new).collect();
    let mut batch = Tor1Batch::default();
    for round in 0..6 {
        // Uneven groups, one of them empty, one circuit left out per round.
        let sizes: Vec<usize> = (0..9).map(|c| (c * 7 + round * 3) % 6).collect();
        let mut plain: Vec<Box<CellBody>> = Vec::new();
        let mut groups = Vec::new();
        for &n in &sizes {
            let at = plain.len();
            plain.extend((0..n).map(|_| random_cell(&mut rng)));
            groups.push(at..at + n);
        }
        let mut want = plain.clone();
        let mut want_tags = Vec::new();
        for (c, g) in single.iter_mut().zip(&groups) {
            for cell in &mut want[g.clone()] {
                want_tags.push(c.originate_backward(cell));
            }
        }
        let mut cells = plain.clone();
        let mut refs: Vec<&mut CellBody> = cells.iter_mut().map(|c| &mut **c).collect();
        let mut tags = vec![SendmeTag::default(); refs.len()];
        let mut circs: Vec<&mut Tor1RelayCrypto> = many.iter_mut().collect();
        Tor1RelayCrypto::originate_backward_many(
            &mut batch, &mut circs, &groups, &mut refs, &mut tags,
        );
        assert_eq!(cells, want, "round {round}");
        assert_eq!(tags, want_tags);
        for (client, g) in clients.iter_mut().zip(&groups) {
            for i in g.clone() {
                let mut c = cells[i].clone();
                assert_eq!(client.decrypt_backward(&mut c), Some(tags[i]));
                assert_eq!(c[9..], plain[i][9..]);
            }
        }
    }
    // The states carried on: one more cell each, one at a time.
    for ((s, m), client) in single.iter_mut().zip(&mut many).zip(&mut clients) {
        let plain = random_cell(&mut rng);
        let (mut a, mut b) = (plain.clone(), plain.clone());
        assert_eq!(s.originate_backward(&mut a), m.originate_backward(&mut b));
        assert_eq!(a, b);
        assert!(client.decrypt_backward(&mut a).is_some());
    }
}

/// Checking several circuits' cells in one call answers as one cell at a
/// time does, including cells whose Recognized field is zero by chance
/// (the guess fails there, and the rest of that circuit is checked one by
/// one), and leaves the same states behind.
#[test]
fn decrypt_forward_many_equals_one_by_one() {
    let mut rng = StdRng::seed_from_u64(13);
    let keys: Vec<_> = (0..7).map(|_| random_keys(&mut rng)).collect();
    let mut single: Vec<_> = keys.iter().map(Tor1RelayCrypto::new).collect();
    let mut many: Vec<_> = keys.iter().map(Tor1RelayCrypto::new).collect();
    let mut clients: Vec<_> = keys.iter().map(Tor1ClientLayer::new).collect();
    let mut batch = Tor1Batch::default();
    let mut fooled = 0;
    for round in 0..12 {
        let sizes: Vec<usize> = (0..7).map(|c| (c * 5 + round * 3) % 7).collect();
        let mut cells: Vec<Box<CellBody>> = Vec::new();
        let mut groups = Vec::new();
        for (client, &n) in clients.iter_mut().zip(&sizes) {
            let at = cells.len();
            for _ in 0..n {
                let mut c = random_cell(&mut rng);
                match rng.random_range(0..6u8) {
                    // Not ours, and Recognized zero: a guess that fails.
                    0 => {
                        c[1..3].fill(0);
                        client.encrypt_forward(&mut c);
                        fooled += 1;
                    }
                    1 => client.encrypt_forward(&mut c),
                    _ => {
                        client.originate_forward(&mut c);
                    }
                }
                cells.push(c);
            }
            groups.push(at..at + n);
        }
        let mut want = cells.clone();
        let mut want_rec = Vec::new();
        for (c, g) in single.iter_mut().zip(&groups) {
            for cell in &mut want[g.clone()] {
                want_rec.push(c.decrypt_forward(cell));
            }
        }
        let mut refs: Vec<&mut CellBody> = cells.iter_mut().map(|c| &mut **c).collect();
        let mut rec = vec![None; refs.len()];
        let mut circs: Vec<&mut Tor1RelayCrypto> = many.iter_mut().collect();
        Tor1RelayCrypto::decrypt_forward_many(&mut batch, &mut circs, &groups, &mut refs, &mut rec);
        assert_eq!(rec, want_rec, "round {round}");
        assert_eq!(cells, want, "round {round}");
    }
    assert!(fooled > 5);
    // Same states: the next cell of each circuit is recognized by both.
    for ((s, m), client) in single.iter_mut().zip(&mut many).zip(&mut clients) {
        let mut a = random_cell(&mut rng);
        let tag = client.originate_forward(&mut a);
        let mut b = a.clone();
        assert_eq!(s.decrypt_forward(&mut a), Some(tag));
        assert_eq!(m.decrypt_forward(&mut b), Some(tag));
    }
}
