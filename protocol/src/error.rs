//! Errors of the protocol layer.

use concentrator_security::EnvelopeError;
use thiserror::Error;

use crate::kind::Kind;

/// Why a frame, a topic or a protected message was refused. No input makes the decoder panic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The octets are not a frame of this protocol.
    #[error("malformed frame: {what}: {reason}; the sender writes something other than protocol v1 frames, or the message was cut")]
    Malformed {
        /// Which part.
        what: &'static str,
        /// What the CBOR decoder said.
        reason: String,
    },
    /// A frame version this end does not read.
    #[error("frame version {0} is not supported (this end reads {v}); upgrade the older end", v = crate::FRAME_VERSION)]
    UnsupportedVersion(u8),
    /// A kind code this version does not define.
    #[error("unknown message kind 0x{0:04x}: the peer speaks a newer protocol; answer with an error and upgrade this end")]
    UnknownKind(u16),
    /// The frame is larger than any message of this protocol.
    #[error("frame of {len} octets is longer than the {max}-octet limit: split readings into smaller batches")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A topic that is not one of this protocol's.
    #[error("topic {topic:?} is not a concentrator v1 topic: {reason}")]
    BadTopic {
        /// The topic.
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A gateway id that cannot be a topic level or a certificate CN.
    #[error(
        "gateway id {0:?} is not valid: use 1 to 64 characters from A-Z, a-z, 0-9, '-' and '_'"
    )]
    BadGatewayId(String),
    /// The frame's kind is not the one its topic names (or travels the wrong way).
    #[error(
        "frame kind {header:?} arrived on the topic for {topic:?}: a misrouted or forged message"
    )]
    KindMismatch {
        /// From the topic.
        topic: Kind,
        /// From the header.
        header: Kind,
    },
    /// The frame's TID is not the one its topic names.
    #[error("frame is for TID {header} but arrived on the topic of {topic}: a misrouted or forged message")]
    TidMismatch {
        /// From the topic (or "gateway").
        topic: String,
        /// From the header (or "none").
        header: String,
    },
    /// The envelope failed a check (MAC, COUNT, time window, direction, algorithms, key lifetime).
    #[error("protected envelope refused: {0}")]
    Envelope(#[from] EnvelopeError),
    /// A field value the encoder refuses.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// Which value.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl From<minicbor::decode::Error> for ProtocolError {
    fn from(e: minicbor::decode::Error) -> Self {
        ProtocolError::Malformed {
            what: "cbor",
            reason: e.to_string(),
        }
    }
}
