//! Key material never reaches a log line through `Debug`: every type that holds K, OPc, CK, IK, RES or
//! a derived key prints a placeholder for it (derived `Debug` would print the bytes).

use concentrator_security::aka::{generate_vector, respond, AkaResponse};
use concentrator_security::security_mode::{CipherAlg, IntegrityAlg};
use concentrator_security::sqn::{SqnGenerator, SqnWindow};
use concentrator_security::{Channel, Direction, Milenage, SecurityContext, SecurityMode};

/// `bytes` as `Debug` prints an array of them, and as lower-case hex: either in a line is a leak.
fn leaks(line: &str, bytes: &[u8]) -> bool {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    line.contains(&format!("{bytes:?}")) || line.contains(&hex)
}

const K: [u8; 16] = [
    0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f, 0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc,
];
const OPC: [u8; 16] = [
    0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e, 0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf,
];
const RAND: [u8; 16] = [
    0x23, 0x55, 0x3c, 0xbe, 0x96, 0x37, 0xa8, 0x9d, 0x21, 0x8a, 0xe6, 0x4d, 0xae, 0x47, 0xbf, 0x35,
];

#[test]
fn milenage_and_its_outputs_hide_their_keys() {
    let m = Milenage::with_opc(&K, &OPC);
    assert!(!leaks(&format!("{m:?}"), &OPC));
    let out = m.compute(&RAND, &[0, 0, 0, 0, 0, 0x21], &[0x80, 0]);
    let line = format!("{out:?}");
    for secret in [&out.ck[..], &out.ik[..], &out.res[..]] {
        assert!(!leaks(&line, secret), "{line}");
    }
}

#[test]
fn an_aka_answer_and_the_channel_built_from_it_hide_ck_and_ik() {
    let m = Milenage::with_opc(&K, &OPC);
    let vector = generate_vector(&m, &mut SqnGenerator::new(), RAND, [0x80, 0]).expect("a vector");
    let line = format!("{vector:?}");
    for secret in [&vector.xres[..], &vector.ck[..], &vector.ik[..]] {
        assert!(!leaks(&line, secret), "{line}");
    }
    let autn = vector.autn;
    let mut window = SqnWindow::new(1 << 28);
    let answer = respond(&m, &mut window, &RAND, &autn).expect("a fresh challenge is answered");
    let line = format!("{answer:?}");
    let AkaResponse::Authenticated { res, ck, ik } = &answer else {
        panic!("a fresh SQN authenticates: {line}");
    };
    for secret in [&res[..], &ck[..], &ik[..]] {
        assert!(!leaks(&line, secret), "{line}");
    }
    for (integrity, ciphering) in [
        (IntegrityAlg::Uia1, CipherAlg::Uea1),
        (IntegrityAlg::Eia2, CipherAlg::Eea2),
    ] {
        let mode = SecurityMode {
            integrity,
            ciphering,
        };
        let ctx = SecurityContext::new(mode, ck, ik, 7, 1_800_000_000, 3600);
        let channel = Channel::new(ctx, Direction::Uplink, 300);
        let line = format!("{channel:?}");
        for secret in [&ck[..], &ik[..]] {
            assert!(!leaks(&line, secret), "{line}");
        }
    }
}
