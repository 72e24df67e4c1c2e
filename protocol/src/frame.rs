//! Frames: the header (version, message id, kind, TID, creation time) and the body, as one CBOR map.
//! This is the plaintext that the protected envelope seals.

use minicbor::{Decoder, Encoder};

use crate::body::*;
use crate::ids::{MessageId, Tid};
use crate::kind::{Kind, Priority};
use crate::ProtocolError;

/// The frame version this crate writes and reads.
pub const FRAME_VERSION: u8 = 1;
/// Longest frame either end accepts (a batch of about 8 000 readings fits).
pub const MAX_FRAME_LEN: usize = 256 * 1024;

mod key {
    pub const VERSION: u64 = 0;
    pub const ID: u64 = 1;
    pub const KIND: u64 = 2;
    pub const TID: u64 = 3;
    pub const CREATED_AT: u64 = 4;
    pub const BODY: u64 = 5;
}

/// The header of every frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The message id (dedup and acknowledgement).
    pub id: MessageId,
    /// The meter the message is about; `None` for gateway-level messages.
    pub tid: Option<Tid>,
    /// When the message was made (not when it was sent), unix seconds.
    pub created_at: u64,
}

/// A whole message: header and body. The kind is the body's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// The body.
    pub body: Body,
}

macro_rules! bodies {
    ($( $(#[$doc:meta])* $var:ident($ty:ty), )*) => {
        /// The body of a message; one variant per [`Kind`].
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum Body {
            $( $(#[$doc])* $var($ty), )*
        }

        impl Body {
            /// The kind.
            pub fn kind(&self) -> Kind {
                match self { $(Body::$var(_) => Kind::$var,)* }
            }

            fn encode_into(&self, e: &mut Encoder<Vec<u8>>) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
                match self { $(Body::$var(b) => { e.encode(b)?; })* }
                Ok(())
            }

            fn decode_as(kind: Kind, d: &mut Decoder<'_>) -> Result<Body, minicbor::decode::Error> {
                #[allow(unreachable_patterns)]
                match kind {
                    $(Kind::$var => Ok(Body::$var(d.decode()?)),)*
                    _ => Err(minicbor::decode::Error::message("kind without a body type")),
                }
            }
        }
    };
}

bodies! {
    Readings(Readings),
    Event(Event),
    Receipt(ReceiptBody),
    AccountSummary(AccountSummary),
    Attach(Attach),
    AkaResponse(AkaResponse),
    SecurityModeComplete(SecurityModeComplete),
    CommandResult(CommandResult),
    AckUp(Ack),
    Birth(Birth),
    Death(Death),
    RestoreRequest(RestoreRequest),
    Settlement(SettlementBody),
    AkaChallenge(AkaChallenge),
    SecurityModeCommand(SecurityModeCommand),
    TidAssignment(TidAssignment),
    TopUp(TopUp),
    RelayCommand(RelayCommand),
    TariffUpdate(TariffUpdate),
    TimeSync(TimeSync),
    ConfigChange(ConfigChange),
    AckDown(Ack),
    AccountRequest(AccountRequest),
    AccountRestore(AccountRestore),
    AnchorRecorded(AnchorRecorded),
    TenancyChange(TenancyChange),
    Backfill(Backfill),
    BackfillRequest(BackfillRequest),
}

impl Body {
    /// The outbox priority: the kind's, raised to urgent for alarms and for relay and money events.
    pub fn priority(&self) -> Priority {
        match self {
            Body::Event(ev)
                if ev.severity == Severity::Alarm
                    || matches!(
                        ev.code,
                        event_code::RELAY_OPENED
                            | event_code::RELAY_CLOSED
                            | event_code::RELAY_ARMED
                            | event_code::EMERGENCY_CREDIT
                            | event_code::TOKEN_REFUSED
                    ) =>
            {
                Priority::Urgent
            }
            other => other.kind().priority(),
        }
    }

    /// Whether the outbox may drop it when full (routine readings only; never receipts or money events).
    pub fn droppable(&self) -> bool {
        self.priority() == Priority::Routine
    }
}

impl Frame {
    /// A frame with a header made of its parts.
    pub fn new(id: MessageId, tid: Option<Tid>, created_at: u64, body: Body) -> Self {
        Frame {
            header: Header {
                id,
                tid,
                created_at,
            },
            body,
        }
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.body.kind()
    }

    /// The CBOR octets.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let fail = |e: minicbor::encode::Error<std::convert::Infallible>| ProtocolError::Encode {
            what: "frame",
            reason: e.to_string(),
        };
        let mut e = Encoder::new(Vec::with_capacity(64));
        let entries = if self.header.tid.is_some() { 6 } else { 5 };
        (|| {
            e.map(entries)?;
            e.u64(key::VERSION)?.u8(FRAME_VERSION)?;
            e.u64(key::ID)?.encode(self.header.id)?;
            e.u64(key::KIND)?.u16(self.kind().code())?;
            if let Some(tid) = self.header.tid {
                e.u64(key::TID)?.encode(tid)?;
            }
            e.u64(key::CREATED_AT)?.u64(self.header.created_at)?;
            e.u64(key::BODY)?;
            self.body.encode_into(&mut e)
        })()
        .map_err(fail)?;
        let out = e.into_writer();
        if out.len() > MAX_FRAME_LEN {
            return Err(ProtocolError::TooLong {
                len: out.len(),
                max: MAX_FRAME_LEN,
            });
        }
        Ok(out)
    }

    /// Parses CBOR octets. Unknown header keys are skipped (forward compatibility); unknown kinds and
    /// versions are errors. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Frame, ProtocolError> {
        if bytes.len() > MAX_FRAME_LEN {
            return Err(ProtocolError::TooLong {
                len: bytes.len(),
                max: MAX_FRAME_LEN,
            });
        }
        let malformed = |what: &'static str, reason: &str| ProtocolError::Malformed {
            what,
            reason: reason.into(),
        };
        let mut d = Decoder::new(bytes);
        let n = d
            .map()?
            .ok_or_else(|| malformed("header", "indefinite-length map; use a definite length"))?;
        let (mut version, mut id, mut kind, mut tid, mut created_at, mut body_at) =
            (None, None, None, None, None, None);
        for _ in 0..n {
            match d.u64()? {
                key::VERSION => version = Some(d.u8()?),
                key::ID => id = Some(d.decode::<MessageId>()?),
                key::KIND => kind = Some(d.u16()?),
                key::TID => tid = Some(d.decode::<Tid>()?),
                key::CREATED_AT => created_at = Some(d.u64()?),
                key::BODY => {
                    let start = d.position();
                    d.skip()?;
                    body_at = Some((start, d.position()));
                }
                _ => d.skip()?,
            }
        }
        if d.position() != bytes.len() {
            return Err(malformed("frame", "trailing octets after the frame"));
        }
        let version = version.ok_or_else(|| malformed("version", "missing"))?;
        if version != FRAME_VERSION {
            return Err(ProtocolError::UnsupportedVersion(version));
        }
        let id = id.ok_or_else(|| malformed("message id", "missing"))?;
        let code = kind.ok_or_else(|| malformed("kind", "missing"))?;
        let kind = Kind::from_code(code).ok_or(ProtocolError::UnknownKind(code))?;
        let created_at = created_at.ok_or_else(|| malformed("created_at", "missing"))?;
        let (start, end) = body_at.ok_or_else(|| malformed("body", "missing"))?;
        let body_bytes = bytes
            .get(start..end)
            .ok_or_else(|| malformed("body", "out of range"))?;
        let body = Body::decode_as(kind, &mut Decoder::new(body_bytes)).map_err(|e| {
            ProtocolError::Malformed {
                what: "body",
                reason: e.to_string(),
            }
        })?;
        Ok(Frame {
            header: Header {
                id,
                tid,
                created_at,
            },
            body,
        })
    }
}
