//! Sealed frames: a command is acted on only after envelope, frame and topic checks all pass.

mod support;

use concentrator_protocol::*;
use concentrator_security::envelope::{Channel, Sender, SenderKind};
use concentrator_security::{Direction, EnvelopeError, SecurityContext, SecurityMode};
use support::*;

fn pair() -> (Channel, Channel) {
    let ctx = SecurityContext::new(SecurityMode::AES, &[7; 16], &[9; 16], 0, NOW, 86_400);
    (
        Channel::new(ctx.clone(), Direction::Uplink, 300),
        Channel::new(ctx, Direction::Downlink, 300),
    )
}

fn head_end() -> Sender {
    Sender {
        kind: SenderKind::Device,
        id: b"head-end".to_vec(),
    }
}

fn relay(seq: u64) -> Frame {
    Frame::new(
        id(seq),
        Some(TID),
        NOW,
        Body::RelayCommand(RelayCommand {
            action: RelayAction::Open,
            reason: None,
        }),
    )
}

#[test]
fn command_opens_once_and_replay_is_refused() {
    let (mut gw, mut he) = pair();
    let gwid = GatewayId::new("gw-1").unwrap();
    let topic = Topic::for_message(&gwid, Scope::Meter(TID), Kind::RelayCommand);
    let sealed = protect::payload(Some(&mut he), &head_end(), NOW, &relay(1)).unwrap();
    let got = protect::open(&topic, &sealed, Some(&mut gw), NOW + 5).unwrap();
    assert_eq!(got, relay(1));
    assert!(matches!(
        protect::open(&topic, &sealed, Some(&mut gw), NOW + 6),
        Err(ProtocolError::Envelope(EnvelopeError::Replayed { .. }))
    ));
}

#[test]
fn tampered_late_reflected_and_misrouted_are_refused() {
    let (mut gw, mut he) = pair();
    let gwid = GatewayId::new("gw-1").unwrap();
    let topic = Topic::for_message(&gwid, Scope::Meter(TID), Kind::RelayCommand);
    let mut sealed = protect::payload(Some(&mut he), &head_end(), NOW, &relay(1)).unwrap();
    let n = sealed.len();
    sealed[n - 6] ^= 1;
    assert!(matches!(
        protect::open(&topic, &sealed, Some(&mut gw), NOW),
        Err(ProtocolError::Envelope(EnvelopeError::BadMac))
    ));
    let late = protect::payload(Some(&mut he), &head_end(), NOW, &relay(2)).unwrap();
    assert!(matches!(
        protect::open(&topic, &late, Some(&mut gw), NOW + 301),
        Err(ProtocolError::Envelope(EnvelopeError::OutsideWindow { .. }))
    ));
    // The gateway's own uplink message sent back to it.
    let mine = protect::payload(Some(&mut gw), &head_end(), NOW, &relay(3)).unwrap();
    assert!(matches!(
        protect::open(&topic, &mine, Some(&mut gw), NOW),
        Err(ProtocolError::Envelope(
            EnvelopeError::WrongDirection { .. }
        ))
    ));
    // A valid command for this meter published on another meter's topic.
    let other = Topic::for_message(&gwid, Scope::Meter(Tid([1; 8])), Kind::RelayCommand);
    let good = protect::payload(Some(&mut he), &head_end(), NOW, &relay(4)).unwrap();
    assert!(matches!(
        protect::open(&other, &good, Some(&mut gw), NOW),
        Err(ProtocolError::TidMismatch { .. })
    ));
    // A valid top-up frame on the relay topic.
    let topup = Frame::new(id(5), Some(TID), NOW, Body::TopUp(TopUp { token: vec![1] }));
    let sealed = protect::payload(Some(&mut he), &head_end(), NOW, &topup).unwrap();
    assert!(matches!(
        protect::open(&topic, &sealed, Some(&mut gw), NOW),
        Err(ProtocolError::KindMismatch { .. })
    ));
}

#[test]
fn sealed_kinds_are_refused_plain_or_without_context() {
    let gwid = GatewayId::new("gw-1").unwrap();
    let topic = Topic::for_message(&gwid, Scope::Meter(TID), Kind::RelayCommand);
    let plain = relay(1).encode().unwrap();
    let (mut gw, _) = pair();
    assert!(matches!(
        protect::open(&topic, &plain, Some(&mut gw), NOW),
        Err(ProtocolError::Envelope(_))
    ));
    assert!(protect::open(&topic, &plain, None, NOW).is_err());
    assert!(protect::payload(None, &head_end(), NOW, &relay(1)).is_err());
    // Plain kinds go as frames.
    let ch = Frame::new(
        id(2),
        Some(TID),
        NOW,
        Body::AkaChallenge(AkaChallenge {
            rand: [1; 16],
            autn: [2; 16],
        }),
    );
    let t = Topic::for_message(&gwid, Scope::Meter(TID), Kind::AkaChallenge);
    let p = protect::payload(None, &head_end(), NOW, &ch).unwrap();
    assert_eq!(protect::open(&t, &p, None, NOW).unwrap(), ch);
}
