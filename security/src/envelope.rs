//! The protected envelope: the format of every protected message on the wire, and a [`Channel`] that
//! seals outgoing messages and verifies incoming ones for one security context.
//!
//! Layout (all integers big-endian; see docs/security.md):
//!
//! ```text
//! off  size  field
//! 0    1     version (1)
//! 1    1     DIRECTION (0 uplink, 1 downlink)
//! 2    1     integrity algorithm (1 UIA1, 2 EIA2)
//! 3    1     ciphering algorithm (0 none, 1 UEA1, 2 EEA2)
//! 4    1     BEARER (0..=31)
//! 5    1     sender kind (1 TID, 2 KID, 3 device name)
//! 6    1     sender length n (1..=64)
//! 7    n     sender
//! 7+n  4     COUNT
//! 11+n 8     timestamp, unix seconds
//! 19+n 4     ciphertext length m
//! 23+n m     ciphertext
//! 23+n+m 4   MAC-I over every octet before it
//! ```
//!
//! Verification order: format, version, DIRECTION, algorithms, key lifetime, MAC-I, COUNT, timestamp;
//! each failure has its own [`EnvelopeError`] variant and leaves the channel's state unchanged.

use thiserror::Error;

use crate::bits::Direction;
use crate::security_mode::{CipherAlg, IntegrityAlg, ModeError, SecurityContext, SecurityMode};
use crate::wire::{Malformed, Reader};

/// The envelope format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Longest sender identity.
pub const MAX_SENDER_LEN: usize = 64;
/// Octets of MAC-I.
pub const MAC_LEN: usize = 4;

/// What kind of identity names the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SenderKind {
    /// A temporary identity issued by the head-end; wire id 1.
    Tid,
    /// A permanent key identity (only before a TID exists); wire id 2.
    Kid,
    /// A device name (a gateway or the head-end); wire id 3.
    Device,
}

impl SenderKind {
    fn id(self) -> u8 {
        match self {
            SenderKind::Tid => 1,
            SenderKind::Kid => 2,
            SenderKind::Device => 3,
        }
    }

    fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(SenderKind::Tid),
            2 => Some(SenderKind::Kid),
            3 => Some(SenderKind::Device),
            _ => None,
        }
    }
}

/// The sender of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sender {
    /// Its kind.
    pub kind: SenderKind,
    /// Its octets (1..=64).
    pub id: Vec<u8>,
}

/// A decoded envelope, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Format version.
    pub version: u8,
    /// DIRECTION.
    pub direction: Direction,
    /// The algorithms named in the header.
    pub mode: SecurityMode,
    /// BEARER.
    pub bearer: u8,
    /// The sender.
    pub sender: Sender,
    /// COUNT.
    pub count: u32,
    /// Sending time, unix seconds.
    pub timestamp: u64,
    /// The (possibly ciphered) payload.
    pub ciphertext: Vec<u8>,
    /// MAC-I.
    pub mac: [u8; MAC_LEN],
    /// Octets covered by MAC-I (everything before it).
    covered_len: usize,
}

/// Why an envelope was refused. Each class of tampering has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// The octets do not parse as an envelope.
    #[error("malformed envelope: bad or truncated {what} at offset {offset}; the message is corrupt or not an envelope")]
    Malformed {
        /// The field.
        what: &'static str,
        /// Its offset.
        offset: usize,
    },
    /// A version this crate does not read.
    #[error(
        "envelope version {0} is not supported (this end reads {VERSION}); upgrade the older end"
    )]
    UnsupportedVersion(u8),
    /// The DIRECTION bit is not the one expected for messages arriving here: a reflected message.
    #[error("envelope DIRECTION is {got:?} but this end receives {expected:?}: a reflected or misrouted message")]
    WrongDirection {
        /// As received.
        got: Direction,
        /// As expected.
        expected: Direction,
    },
    /// The header names algorithms other than the agreed ones (a downgrade attempt or a stale context).
    #[error("envelope uses {got:?} but the agreed security mode is {agreed:?}: downgrade attempt or stale context; rerun the security mode")]
    AlgorithmMismatch {
        /// As received.
        got: SecurityMode,
        /// As agreed.
        agreed: SecurityMode,
    },
    /// MAC-I does not verify: the message was altered or made with other keys.
    #[error("MAC-I does not verify: the message was altered or made with other keys")]
    BadMac,
    /// COUNT is not above the last accepted one: a replay.
    #[error("COUNT {count} is not above the last accepted {last}: replayed or reordered message")]
    Replayed {
        /// As received.
        count: u32,
        /// The last accepted.
        last: u32,
    },
    /// The timestamp is outside the accepted window around now.
    #[error("timestamp {timestamp} is outside {window_secs} s of now ({now}): a delayed message or a wrong clock; check NTP")]
    OutsideWindow {
        /// As received.
        timestamp: u64,
        /// Our time.
        now: u64,
        /// The window.
        window_secs: u64,
    },
    /// COUNT cannot go higher with these keys.
    #[error("COUNT exhausted for these keys: run a fresh AKA")]
    CountExhausted,
    /// The sender identity is empty or longer than 64 octets.
    #[error("sender identity of {0} octets: use 1 to {MAX_SENDER_LEN} octets")]
    BadSender(usize),
    /// The keys expired or an algorithm call failed.
    #[error(transparent)]
    Mode(#[from] ModeError),
}

impl From<Malformed> for EnvelopeError {
    fn from(m: Malformed) -> Self {
        EnvelopeError::Malformed {
            what: m.what,
            offset: m.offset,
        }
    }
}

impl Envelope {
    /// Parses the octets of an envelope. Never panics; checks structure only (see [`Channel::open`]).
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let off = r.offset();
        let direction = Direction::from_bit(r.u8("direction")?).ok_or(Malformed {
            what: "direction",
            offset: off,
        })?;
        let off = r.offset();
        let integrity = IntegrityAlg::from_id(r.u8("integrity algorithm")?).ok_or(Malformed {
            what: "integrity algorithm",
            offset: off,
        })?;
        let off = r.offset();
        let ciphering = CipherAlg::from_id(r.u8("ciphering algorithm")?).ok_or(Malformed {
            what: "ciphering algorithm",
            offset: off,
        })?;
        let off = r.offset();
        let bearer = r.u8("bearer")?;
        if bearer > 31 {
            return Err(Malformed {
                what: "bearer",
                offset: off,
            }
            .into());
        }
        let off = r.offset();
        let kind = SenderKind::from_id(r.u8("sender kind")?).ok_or(Malformed {
            what: "sender kind",
            offset: off,
        })?;
        let off = r.offset();
        let id = r.bytes_u8("sender")?;
        if id.is_empty() || id.len() > MAX_SENDER_LEN {
            return Err(Malformed {
                what: "sender",
                offset: off,
            }
            .into());
        }
        let count = r.u32("count")?;
        let timestamp = r.u64("timestamp")?;
        let ciphertext = r.bytes_u32("ciphertext")?.to_vec();
        let covered_len = r.offset();
        let mac = r.array::<MAC_LEN>("mac")?;
        r.finish()?;
        Ok(Envelope {
            version,
            direction,
            mode: SecurityMode {
                integrity,
                ciphering,
            },
            bearer,
            sender: Sender {
                kind,
                id: id.to_vec(),
            },
            count,
            timestamp,
            ciphertext,
            mac,
            covered_len,
        })
    }
}

fn header(
    dir: Direction,
    mode: SecurityMode,
    bearer: u8,
    sender: &Sender,
    count: u32,
    ts: u64,
    len: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(23 + sender.id.len() + len + MAC_LEN);
    out.extend_from_slice(&[
        VERSION,
        dir.bit(),
        mode.integrity.id(),
        mode.ciphering.id(),
        bearer,
        sender.kind.id(),
    ]);
    out.push(sender.id.len() as u8);
    out.extend_from_slice(&sender.id);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out
}

/// A message that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sender.
    pub sender: Sender,
    /// BEARER.
    pub bearer: u8,
    /// COUNT.
    pub count: u32,
    /// Sending time.
    pub timestamp: u64,
    /// The deciphered payload.
    pub plaintext: Vec<u8>,
}

/// One end of a protected channel: a security context, the direction this end sends in, the next COUNT
/// to send, the last COUNT accepted, and the timestamp window.
#[derive(Debug, Clone)]
pub struct Channel {
    ctx: SecurityContext,
    sends: Direction,
    next_count: Option<u32>,
    last_received: Option<u32>,
    window_secs: u64,
}

impl Channel {
    /// A channel over `ctx` for the end that sends in direction `sends` (a meter side sends
    /// [`Direction::Uplink`]), accepting timestamps within `window_secs` of now.
    pub fn new(ctx: SecurityContext, sends: Direction, window_secs: u64) -> Self {
        Channel {
            ctx,
            sends,
            next_count: Some(0),
            last_received: None,
            window_secs,
        }
    }

    /// A channel that continues where a persisted one stopped: the next COUNT to send and the last COUNT
    /// accepted (as [`Channel::next_count`] and [`Channel::last_received`] gave them), so a restart
    /// neither repeats a COUNT the peer has seen nor accepts a replay of one already received.
    pub fn resume(
        ctx: SecurityContext,
        sends: Direction,
        window_secs: u64,
        next_count: u32,
        last_received: Option<u32>,
    ) -> Self {
        Channel {
            next_count: Some(next_count),
            last_received,
            ..Channel::new(ctx, sends, window_secs)
        }
    }

    /// The next COUNT this end will send (`None` once every COUNT is used), for the caller to persist.
    pub fn next_count(&self) -> Option<u32> {
        self.next_count
    }

    /// The last COUNT accepted, for the caller to persist.
    pub fn last_received(&self) -> Option<u32> {
        self.last_received
    }

    /// The security context.
    pub fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    /// Protects `plaintext` into envelope octets with the next COUNT.
    pub fn seal(
        &mut self,
        sender: &Sender,
        bearer: u8,
        now: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, EnvelopeError> {
        self.ctx.check_alive(now)?;
        if sender.id.is_empty() || sender.id.len() > MAX_SENDER_LEN {
            return Err(EnvelopeError::BadSender(sender.id.len()));
        }
        if u32::try_from(plaintext.len()).is_err() {
            return Err(Malformed {
                what: "ciphertext",
                offset: 0,
            }
            .into());
        }
        let count = self.next_count.ok_or(EnvelopeError::CountExhausted)?;
        let mode = self.ctx.mode();
        let mut out = header(
            self.sends,
            mode,
            bearer,
            sender,
            count,
            now,
            plaintext.len(),
        );
        let start = out.len();
        out.extend_from_slice(plaintext);
        self.ctx
            .cipher(count, bearer, self.sends, &mut out[start..])?;
        let mac = self.ctx.mac(count, bearer, self.sends, &out)?;
        out.extend_from_slice(&mac);
        self.next_count = count.checked_add(1);
        Ok(out)
    }

    /// Verifies and deciphers envelope octets; on success records COUNT.
    pub fn open(&mut self, bytes: &[u8], now: u64) -> Result<Opened, EnvelopeError> {
        let env = Envelope::decode(bytes)?;
        let expected = self.sends.reverse();
        if env.direction != expected {
            return Err(EnvelopeError::WrongDirection {
                got: env.direction,
                expected,
            });
        }
        if env.mode != self.ctx.mode() {
            return Err(EnvelopeError::AlgorithmMismatch {
                got: env.mode,
                agreed: self.ctx.mode(),
            });
        }
        self.ctx.check_alive(now)?;
        let mac = self.ctx.mac(
            env.count,
            env.bearer,
            env.direction,
            &bytes[..env.covered_len],
        )?;
        if !openssl::memcmp::eq(&mac, &env.mac) {
            return Err(EnvelopeError::BadMac);
        }
        if let Some(last) = self.last_received {
            if env.count <= last {
                return Err(EnvelopeError::Replayed {
                    count: env.count,
                    last,
                });
            }
        }
        if env.timestamp.abs_diff(now) > self.window_secs {
            return Err(EnvelopeError::OutsideWindow {
                timestamp: env.timestamp,
                now,
                window_secs: self.window_secs,
            });
        }
        let mut plaintext = env.ciphertext;
        self.ctx
            .cipher(env.count, env.bearer, env.direction, &mut plaintext)?;
        self.last_received = Some(env.count);
        Ok(Opened {
            sender: env.sender,
            bearer: env.bearer,
            count: env.count,
            timestamp: env.timestamp,
            plaintext,
        })
    }
}
