//! CGO against C tor's known-answer vectors (`vectors.rs`), RFC 8452's
//! POLYVAL example, and round trips between the relay and client sides.

use super::vectors::{self, State};
use super::*;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    unhex(s).try_into().unwrap()
}

fn cell(s: &str) -> CellBody {
    arr(s)
}

/// A direction in the vector's state, in `role`.
fn direction(st: &State, role: Role) -> CgoDirection {
    let mut material = [0u8; DIRECTION_KEY_LEN];
    material[..64].copy_from_slice(&unhex(st.k));
    material[64..].copy_from_slice(&unhex(st.n));
    let mut d = CgoDirection::new(&material, role);
    d.tprime = arr(st.tprime);
    d
}

fn assert_state(d: &CgoDirection, st: &State, what: &str) {
    assert_eq!(hex::encode(d.uiv.raw), st.k, "{what}: K");
    assert_eq!(hex::encode(d.nonce), st.n, "{what}: N");
    assert_eq!(hex::encode(d.tprime), st.tprime, "{what}: T'");
}

#[test]
fn et_vectors() {
    for v in vectors::ET {
        let mut keys = [0u8; 64];
        keys[..32].copy_from_slice(&unhex(v.keys));
        let role = if v.encrypt { Role::Relay } else { Role::Client };
        let mut uiv = Uiv::new(&keys, role);
        let tweak = unhex(v.tweak);
        let out = uiv.et(
            &arr(&v.tweak[..32]),
            tweak[16],
            &tweak[17..],
            &arr(v.block_in),
        );
        assert_eq!(hex::encode(out), v.block_out, "{}", v.name);
    }
}

#[test]
fn prf_vectors() {
    for v in vectors::PRF {
        let mut keys = [0u8; 64];
        keys[32..].copy_from_slice(&unhex(v.keys));
        let mut uiv = Uiv::new(&keys, Role::Relay);
        let out = if v.t == 0 {
            let mut data = vec![0u8; 493];
            uiv.prf_xor_t0(&arr(v.input), &mut data);
            data
        } else {
            uiv.prf_t1(&arr(v.input)).to_vec()
        };
        assert_eq!(hex::encode(out), v.output, "{}", v.name);
    }
}

#[test]
fn uiv_vectors() {
    for v in vectors::UIV {
        let role = if v.encrypt { Role::Relay } else { Role::Client };
        let mut uiv = Uiv::new(&arr(v.keys), role);
        let tweak = unhex(v.tweak);
        let mut body = cell(&format!("{}{}", v.x_l, v.x_r));
        uiv.crypt(&arr(&v.tweak[..32]), tweak[16], &mut body);
        assert_eq!(
            hex::encode(body),
            format!("{}{}", v.y_l, v.y_r),
            "{}",
            v.name
        );
    }
}

#[test]
fn update_vectors() {
    for v in vectors::UPDATE {
        for role in [Role::Relay, Role::Client] {
            let mut uiv = Uiv::new(&arr(v.keys), role);
            let nonce = uiv.update(&arr(v.nonce));
            assert_eq!(hex::encode(uiv.raw), v.new_keys, "{}", v.name);
            assert_eq!(hex::encode(nonce), v.new_nonce, "{}", v.name);
        }
    }
}

#[test]
fn relay_vectors() {
    for v in vectors::RELAY {
        let mut d = direction(&v.before, Role::Relay);
        let mut body = cell(v.cell);
        if v.inbound {
            d.relay_backward(v.cmd, &mut body);
        } else {
            assert_eq!(d.relay_forward(v.cmd, &mut body), None, "{}", v.name);
        }
        assert_eq!(hex::encode(body), v.out_cell, "{}", v.name);
        assert_state(&d, &v.after, v.name);
    }
}

#[test]
fn relay_originate_vectors() {
    for v in vectors::ORIGINATE {
        let mut d = direction(&v.before, Role::Relay);
        let mut body = [0u8; 509];
        body[16..].copy_from_slice(&unhex(v.body));
        let tag = d.relay_originate(v.cmd, &mut body);
        assert_eq!(hex::encode(body), v.out_cell, "{}", v.name);
        assert_eq!(hex::encode(tag.0), &v.out_cell[..32], "{}", v.name);
        assert_state(&d, &v.after, v.name);
    }
}

/// The client side against C tor's vectors, then the relays on the path
/// take the cell: every hop before the target passes it on, the target
/// recognizes it with the client's tag and reads the message, and each
/// relay's state ends where the client's does.
#[test]
fn client_originate_vectors_and_relays_recognize() {
    for v in vectors::CLIENT_ORIGINATE {
        let target = v.target_hop - 1;
        let mut clients: Vec<_> = v
            .before
            .iter()
            .map(|s| direction(s, Role::Client))
            .collect();
        let mut relays: Vec<_> = v.before.iter().map(|s| direction(s, Role::Relay)).collect();
        let mut body = [0u8; 509];
        body[16..].copy_from_slice(&unhex(v.body));
        let tag = clients[target].client_originate(v.cmd, &mut body);
        for c in clients[..target].iter_mut().rev() {
            c.client_forward(v.cmd, &mut body);
        }
        assert_eq!(hex::encode(body), v.out_cell, "{}", v.name);
        for (c, st) in clients.iter().zip(&v.after) {
            assert_state(c, st, v.name);
        }
        for (i, r) in relays.iter_mut().enumerate().take(target + 1) {
            let got = r.relay_forward(v.cmd, &mut body);
            if i < target {
                assert_eq!(got, None, "{}: hop {}", v.name, i + 1);
            } else {
                assert_eq!(got, Some(tag), "{}: target", v.name);
                assert_eq!(hex::encode(&body[16..]), v.body, "{}", v.name);
            }
            assert_state(r, &v.after[i], v.name);
        }
    }
}

fn material(seed: u8) -> [u8; CGO_KEY_MATERIAL_LEN] {
    core::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
}

/// A relay's cells reach the client and its own are recognized there, over
/// many cells (the keys move on after each), with a middle's layer on top;
/// forward cells for the exit pass the middle and are recognized by the
/// exit only; RELAY_EARLY stays RELAY_EARLY.
#[test]
fn two_hops_both_ways() {
    let (m_keys, e_keys) = (material(1), material(2));
    let (mut cm, mut ce) = (CgoClientHop::new(&m_keys), CgoClientHop::new(&e_keys));
    let (mut rm, mut re) = (CgoRelayCrypto::new(&m_keys), CgoRelayCrypto::new(&e_keys));
    for i in 0..50u32 {
        let msg: Vec<u8> = (0..493u32).map(|j| (i * 7 + j) as u8).collect();
        // Forward, to the exit through the middle.
        let cmd = if i < 3 { 9 } else { 3 };
        let mut body = [0u8; 509];
        body[16..].copy_from_slice(&msg);
        let tag = ce.originate_forward(cmd, &mut body);
        cm.wrap_forward(cmd, &mut body);
        assert_eq!(rm.decrypt_forward(cmd, &mut body), None);
        assert_eq!(re.decrypt_forward(cmd, &mut body), Some(tag));
        assert_eq!(&body[16..], &msg[..]);
        // A cell for the middle itself, every fifth turn.
        if i % 5 == 0 {
            let mut body = [0u8; 509];
            body[16..].copy_from_slice(&msg);
            let tag = cm.originate_forward(3, &mut body);
            assert_eq!(rm.decrypt_forward(3, &mut body), Some(tag));
            assert_eq!(&body[16..], &msg[..]);
        }
        // Backward, from the exit through the middle.
        let mut body = [0u8; 509];
        body[16..].copy_from_slice(&msg);
        let tag = re.originate_backward(&mut body);
        rm.relay_backward(3, &mut body);
        assert_eq!(cm.decrypt_backward(3, &mut body), None);
        assert_eq!(ce.decrypt_backward(3, &mut body), Some(tag));
        assert_eq!(&body[16..], &msg[..]);
        // And one from the middle.
        let mut body = [0u8; 509];
        body[16..].copy_from_slice(&msg);
        let tag = rm.originate_backward(&mut body);
        assert_eq!(cm.decrypt_backward(3, &mut body), Some(tag));
    }
}

/// A flipped bit anywhere, or the cell's command changed, and the target
/// does not recognize the cell; nor any later one (T′ chains them).
#[test]
fn tampering_is_not_recognized() {
    let keys = material(9);
    for at in [0usize, 15, 16, 17, 200, 508] {
        for change_cmd in [false, true] {
            let mut client = CgoClientHop::new(&keys);
            let mut relay = CgoRelayCrypto::new(&keys);
            let mut body = [0x42u8; 509];
            client.originate_forward(3, &mut body);
            let cmd = if change_cmd {
                9
            } else {
                body[at] ^= 1;
                3
            };
            assert_eq!(relay.decrypt_forward(cmd, &mut body), None, "byte {at}");
            let mut body = [0x43u8; 509];
            client.originate_forward(3, &mut body);
            assert_eq!(relay.decrypt_forward(3, &mut body), None, "after byte {at}");
        }
    }
}

/// The generator's trusted peel gives what the checked one gives, cell
/// after cell (the keys move on alike).
#[test]
fn trusted_backward_matches_checked() {
    let keys = material(4);
    let mut relay = CgoRelayCrypto::new(&keys);
    let (mut checked, mut trusted) = (CgoClientHop::new(&keys), CgoClientHop::new(&keys));
    for i in 0..20u8 {
        let mut body = [i; 509];
        let tag = relay.originate_backward(&mut body);
        let mut copy = body;
        assert_eq!(checked.decrypt_backward(3, &mut body), Some(tag));
        assert_eq!(trusted.decrypt_backward_trusted(&mut copy), tag);
        assert_eq!(&copy[16..], &[i; 493][..]);
    }
}
