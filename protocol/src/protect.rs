//! Frames in and out of the protected envelope, with every check a receiver must make before it acts.
//!
//! Order of checks on receipt: topic, then (for sealed kinds) the envelope's structure, version,
//! DIRECTION, algorithms, key lifetime, MAC-I, COUNT and time window (`Channel::open`), then the frame
//! (structure, version, kind), then the frame's kind and TID against the topic's. A message that fails any
//! check must not be acted on.

use concentrator_security::envelope::{Channel, Sender};

use crate::frame::Frame;
use crate::kind::Protection;
use crate::topic::Topic;
use crate::ProtocolError;

/// The BEARER every frame uses (logical channels are told apart by kind, inside the MAC).
pub const BEARER: u8 = 0;

/// Encodes and seals a frame with the next COUNT of `channel`, timestamped `now` (unix seconds).
///
/// Seal at *send* time, not when the message is queued: COUNT must rise in the order messages reach the
/// head-end, and the envelope's timestamp must be within the head-end's window.
pub fn seal(
    channel: &mut Channel,
    sender: &Sender,
    now: u64,
    frame: &Frame,
) -> Result<Vec<u8>, ProtocolError> {
    let plain = frame.encode()?;
    Ok(channel.seal(sender, BEARER, now, &plain)?)
}

/// The payload to publish for `frame`: sealed when its kind is sealed (a channel is then required),
/// the plain frame otherwise.
pub fn payload(
    channel: Option<&mut Channel>,
    sender: &Sender,
    now: u64,
    frame: &Frame,
) -> Result<Vec<u8>, ProtocolError> {
    match (frame.kind().protection(), channel) {
        (Protection::Plain, _) => frame.encode(),
        (Protection::Sealed, Some(ch)) => seal(ch, sender, now, frame),
        (Protection::Sealed, None) => Err(ProtocolError::Encode {
            what: "sealed frame",
            reason: format!(
                "{:?} travels sealed and no security context exists; run AKA first",
                frame.kind()
            ),
        }),
    }
}

/// Checks a frame against the topic it arrived on: kind (and so direction) and TID.
pub fn check_topic(topic: &Topic, frame: &Frame) -> Result<(), ProtocolError> {
    match topic {
        Topic::Status { .. } => {
            if !matches!(frame.kind(), crate::Kind::Birth | crate::Kind::Death) {
                return Err(ProtocolError::KindMismatch {
                    topic: crate::Kind::Birth,
                    header: frame.kind(),
                });
            }
            Ok(())
        }
        Topic::Data { scope, kind, .. } => {
            if *kind != frame.kind() {
                return Err(ProtocolError::KindMismatch {
                    topic: *kind,
                    header: frame.kind(),
                });
            }
            if scope.tid() != frame.header.tid {
                let show = |t: Option<crate::Tid>| t.map_or("none".to_string(), |t| t.to_string());
                return Err(ProtocolError::TidMismatch {
                    topic: show(scope.tid()),
                    header: show(frame.header.tid),
                });
            }
            Ok(())
        }
    }
}

/// Opens a message that arrived on `topic`: a plain kind is decoded; a sealed kind is verified and
/// deciphered with `channel` (the security context of the topic's scope; `None` when there is none, which
/// refuses it). Then the frame is checked against the topic. On error nothing may be acted on.
pub fn open(
    topic: &Topic,
    payload: &[u8],
    channel: Option<&mut Channel>,
    now: u64,
) -> Result<Frame, ProtocolError> {
    let protection = match topic {
        Topic::Status { .. } => Protection::Plain,
        Topic::Data { kind, .. } => kind.protection(),
    };
    let frame = match (protection, channel) {
        (Protection::Plain, _) => Frame::decode(payload)?,
        (Protection::Sealed, Some(ch)) => {
            let opened = ch.open(payload, now)?;
            Frame::decode(&opened.plaintext)?
        }
        (Protection::Sealed, None) => {
            return Err(ProtocolError::Envelope(
                concentrator_security::EnvelopeError::Malformed {
                    what: "security context (none for this scope; run AKA)",
                    offset: 0,
                },
            ))
        }
    };
    check_topic(topic, &frame)?;
    Ok(frame)
}
