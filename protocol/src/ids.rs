//! Identifiers that appear in frames and topics: message ids, meter TIDs and gateway ids.

use std::fmt;

use minicbor::{Decode, Encode};

use crate::ProtocolError;

/// Octets of a [`MessageId`].
pub const MESSAGE_ID_LEN: usize = 16;
/// Octets of a [`Tid`].
pub const TID_LEN: usize = 8;
/// Longest gateway id.
pub const MAX_GATEWAY_ID_LEN: usize = 64;

/// The id of one message: what the receiver deduplicates on and what an acknowledgement names.
///
/// 16 octets: an 8-octet *source* (chosen once per outbox, e.g. at random when a store is created, so that
/// a wiped and re-provisioned gateway never reuses an id the head-end remembers) followed by the
/// big-endian sequence number of the entry in that outbox. A message that is sent again keeps its id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
#[cbor(transparent)]
pub struct MessageId(#[cbor(n(0), with = "minicbor::bytes")] pub [u8; MESSAGE_ID_LEN]);

impl MessageId {
    /// The id of entry `seq` of the outbox whose source is `source`.
    pub fn new(source: [u8; 8], seq: u64) -> Self {
        let mut id = [0u8; MESSAGE_ID_LEN];
        id[..8].copy_from_slice(&source);
        id[8..].copy_from_slice(&seq.to_be_bytes());
        MessageId(id)
    }

    /// The source half.
    pub fn source(&self) -> [u8; 8] {
        let mut s = [0u8; 8];
        s.copy_from_slice(&self.0[..8]);
        s
    }

    /// The sequence half.
    pub fn seq(&self) -> u64 {
        let mut s = [0u8; 8];
        s.copy_from_slice(&self.0[8..]);
        u64::from_be_bytes(s)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A meter's temporary identity, as the head-end assigned it (see `concentrator_security::identity`).
/// It is what topics and frame headers name; the permanent identity never appears on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
#[cbor(transparent)]
pub struct Tid(#[cbor(n(0), with = "minicbor::bytes")] pub [u8; TID_LEN]);

impl Tid {
    /// The 16 lower-case hex digits used in topics.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// Parses 16 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, ProtocolError> {
        let bad = || ProtocolError::BadTopic {
            topic: s.to_string(),
            reason: "a TID is 16 hex digits".into(),
        };
        if s.len() != 2 * TID_LEN || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; TID_LEN];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Tid(out))
    }
}

impl From<concentrator_security::identity::Tid> for Tid {
    fn from(t: concentrator_security::identity::Tid) -> Self {
        Tid(t.0)
    }
}

impl From<Tid> for concentrator_security::identity::Tid {
    fn from(t: Tid) -> Self {
        concentrator_security::identity::Tid(t.0)
    }
}

impl fmt::Debug for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tid({self})")
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A gateway's id: 1 to 64 characters from `[A-Za-z0-9_-]`, so that it is one MQTT topic level, never a
/// wildcard, and the same string as the CN of the gateway's client certificate (the broker's ACL keys on it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayId(String);

impl GatewayId {
    /// Checks and wraps a gateway id.
    pub fn new(id: impl Into<String>) -> Result<Self, ProtocolError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= MAX_GATEWAY_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(GatewayId(id))
        } else {
            Err(ProtocolError::BadGatewayId(id))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_halves() {
        let id = MessageId::new(*b"srcsrc01", 0x0102_0304_0506_0708);
        assert_eq!(id.source(), *b"srcsrc01");
        assert_eq!(id.seq(), 0x0102_0304_0506_0708);
        assert_eq!(
            id.to_string(),
            "737263737263303101020304050607 08".replace(' ', "")
        );
    }

    #[test]
    fn tid_hex() {
        let t = Tid([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]);
        assert_eq!(t.to_hex(), "deadbeef00010203");
        assert_eq!(Tid::from_hex("DEADBEEF00010203").unwrap(), t);
        assert!(Tid::from_hex("deadbeef0001020").is_err());
        assert!(Tid::from_hex("deadbeef000102zz").is_err());
        assert!(Tid::from_hex("ééééééé0").is_err());
    }

    #[test]
    fn gateway_ids() {
        assert!(GatewayId::new("gw-0001_a").is_ok());
        for bad in ["", "a/b", "+", "#", "a b", &"x".repeat(65)] {
            assert!(GatewayId::new(bad).is_err(), "{bad}");
        }
    }
}
