//! The protected envelope: round trips under both security modes, each class of tampering refused with its
//! own error, and any flipped bit refused.

use concentrator_security::bits::Direction;
use concentrator_security::envelope::{Channel, EnvelopeError, Sender, SenderKind};
use concentrator_security::security_mode::{ModeError, SecurityContext, SecurityMode};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000;
const WINDOW: u64 = 300;

fn pair(mode: SecurityMode) -> (Channel, Channel) {
    let ctx = SecurityContext::new(mode, &[0x3c; 16], &[0xa5; 16], 0x1234_5678, NOW - 10, 3600);
    (
        Channel::new(ctx.clone(), Direction::Uplink, WINDOW),
        Channel::new(ctx, Direction::Downlink, WINDOW),
    )
}

fn sender() -> Sender {
    Sender {
        kind: SenderKind::Tid,
        id: vec![1, 2, 3, 4, 5, 6, 7, 8],
    }
}

#[test]
fn round_trip_in_both_modes_and_directions() {
    for mode in [SecurityMode::AES, SecurityMode::KASUMI] {
        let (mut meter, mut server) = pair(mode);
        for i in 0..3u8 {
            let msg = vec![i; 37 + usize::from(i)];
            let wire = meter.seal(&sender(), 5, NOW, &msg).unwrap();
            assert!(
                !wire.windows(msg.len()).any(|w| w == msg.as_slice()),
                "payload is ciphered"
            );
            let opened = server.open(&wire, NOW + 1).unwrap();
            assert_eq!(opened.plaintext, msg);
            assert_eq!(opened.count, u32::from(i));
            let reply = server
                .seal(
                    &Sender {
                        kind: SenderKind::Device,
                        id: b"head-end".to_vec(),
                    },
                    5,
                    NOW,
                    b"ack",
                )
                .unwrap();
            assert_eq!(meter.open(&reply, NOW).unwrap().plaintext, b"ack");
        }
    }
}

#[test]
fn each_class_of_tampering_has_its_own_error() {
    let (mut meter, mut server) = pair(SecurityMode::AES);
    let wire = meter.seal(&sender(), 1, NOW, b"reading 1234 kWh").unwrap();

    // Bad MAC: a payload bit flipped.
    let mut t = wire.clone();
    let n = t.len();
    t[n - 6] ^= 0x01;
    assert_eq!(server.open(&t, NOW), Err(EnvelopeError::BadMac));

    // Wrong direction: the meter's own message reflected back to it.
    assert!(matches!(
        meter.open(&wire, NOW),
        Err(EnvelopeError::WrongDirection { .. })
    ));

    // Timestamp outside the window.
    assert!(matches!(
        server.open(&wire, NOW + WINDOW + 1),
        Err(EnvelopeError::OutsideWindow { .. })
    ));
    assert!(matches!(
        server.open(&wire, NOW - WINDOW - 1),
        Err(EnvelopeError::OutsideWindow { .. })
    ));

    // Accepted once, then a replay.
    server.open(&wire, NOW).unwrap();
    assert_eq!(
        server.open(&wire, NOW),
        Err(EnvelopeError::Replayed { count: 0, last: 0 })
    );

    // An older COUNT after a newer one.
    let w1 = meter.seal(&sender(), 1, NOW, b"one").unwrap();
    let w2 = meter.seal(&sender(), 1, NOW, b"two").unwrap();
    server.open(&w2, NOW).unwrap();
    assert_eq!(
        server.open(&w1, NOW),
        Err(EnvelopeError::Replayed { count: 1, last: 2 })
    );

    // Downgrade: the header names the KASUMI algorithms.
    let mut t = meter.seal(&sender(), 1, NOW, b"x").unwrap();
    t[2] = 1;
    t[3] = 1;
    assert!(matches!(
        server.open(&t, NOW),
        Err(EnvelopeError::AlgorithmMismatch { .. })
    ));

    // Malformed and unsupported version.
    assert!(matches!(
        server.open(&t[..10], NOW),
        Err(EnvelopeError::Malformed { .. })
    ));
    let mut t = wire.clone();
    t[0] = 9;
    assert_eq!(
        server.open(&t, NOW),
        Err(EnvelopeError::UnsupportedVersion(9))
    );

    // Keys past their lifetime: refuse to send and to receive; a fresh AKA is needed.
    assert!(matches!(
        meter.seal(&sender(), 1, NOW + 4000, b"x"),
        Err(EnvelopeError::Mode(ModeError::KeysExpired { .. }))
    ));
    let fresh = meter.seal(&sender(), 1, NOW, b"x").unwrap();
    assert!(matches!(
        server.open(&fresh, NOW + 4000),
        Err(EnvelopeError::Mode(ModeError::KeysExpired { .. }))
    ));
}

#[test]
fn a_failed_message_does_not_move_count() {
    let (mut meter, mut server) = pair(SecurityMode::KASUMI);
    let good = meter.seal(&sender(), 2, NOW, b"hello").unwrap();
    let mut bad = meter.seal(&sender(), 2, NOW, b"hello").unwrap();
    bad[9] ^= 0x80; // inside the sender id
    assert_eq!(server.open(&bad, NOW), Err(EnvelopeError::BadMac));
    assert_eq!(server.last_received(), None);
    server.open(&good, NOW).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Flipping any one bit of a sealed envelope gets it refused, whatever the mode.
    #[test]
    fn any_flipped_bit_is_refused(payload in proptest::collection::vec(any::<u8>(), 0..80), kasumi in any::<bool>(), bit in any::<prop::sample::Index>()) {
        let mode = if kasumi { SecurityMode::KASUMI } else { SecurityMode::AES };
        let (mut meter, mut server) = pair(mode);
        let wire = meter.seal(&sender(), 3, NOW, &payload).unwrap();
        let i = bit.index(wire.len() * 8);
        let mut t = wire.clone();
        t[i / 8] ^= 0x80 >> (i % 8);
        prop_assert!(server.open(&t, NOW).is_err());
        prop_assert_eq!(server.open(&wire, NOW).unwrap().plaintext, payload);
    }
}
