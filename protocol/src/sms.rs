//! The SMS form of an urgent event (docs/protocol.md, *The SMS path*): what a gateway texts to the
//! head-end's number while its data link is down and its modem is still registered.
//!
//! ```text
//! CG1 <gateway id> <base32 of: CBOR [id, tid, at, code, severity, values] ‖ MAC-I>
//! ```
//!
//! The body is a CBOR array of the event's message id (16 octets, the same id the event has in the
//! outbox, so the head-end stores it once whichever way it comes first), its TID (8 octets) or null
//! for the gateway's own events, the time (unix seconds), the code, the severity (0 info, 1 warning,
//! 2 alarm) and at most four values; the detail text stays in the MQTT copy. MAC-I is 128-EIA2 (AES-CMAC,
//! 32 bits) with the IK of the gateway's own security context (scope `gw`), COUNT the low 32 bits of
//! the message id's sequence, BEARER 31 (the SMS bearer; MQTT frames use 0), DIRECTION uplink, over
//! `CG1 <gateway id> ` followed by the CBOR body. Base32 is RFC 4648's alphabet without padding:
//! upper-case letters and digits, all in the GSM 7-bit default alphabet, so the whole text is one
//! 160-character SMS in text mode and survives any operator's character handling (case is ignored).

use concentrator_security::{Direction, Eia2};
use minicbor::{Decode, Encode};

use crate::{Event, GatewayId, MessageId, Severity, Tid, MESSAGE_ID_LEN, TID_LEN};

/// The first word of every SMS form (version 1).
pub const PREFIX: &str = "CG1";
/// The BEARER of the SMS MAC-I.
pub const SMS_BEARER: u8 = 31;
/// Values carried at most (the rest are in the MQTT copy).
pub const MAX_VALUES: usize = 4;
/// Characters in one SMS in the GSM 7-bit alphabet.
pub const SMS_LEN: usize = 160;

/// Why an SMS is not a valid event form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsError {
    /// It does not start with `CG1 `: not a gateway's event.
    #[error("the text does not start with `{PREFIX} `: it is not an event from a gateway")]
    NotAnEvent,
    /// The structure is wrong.
    #[error("the event SMS is malformed: {0}")]
    Malformed(String),
    /// The MAC does not verify with any key given.
    #[error("the event SMS from gateway {0} does not verify with its security context: altered, forged, or sent with keys the head-end no longer holds")]
    Mac(String),
    /// The form does not fit one SMS.
    #[error("the event SMS would be {0} characters, more than one SMS ({SMS_LEN})")]
    TooLong(usize),
}

/// An event as the SMS carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsEvent {
    /// The gateway that sent it.
    pub gateway: GatewayId,
    /// Its message id (as in the outbox).
    pub id: MessageId,
    /// The meter's TID, or `None` for the gateway's own events.
    pub tid: Option<Tid>,
    /// The event (no detail).
    pub event: Event,
}

#[derive(Encode, Decode)]
#[cbor(array)]
struct Body {
    #[cbor(n(0), with = "minicbor::bytes")]
    id: [u8; MESSAGE_ID_LEN],
    #[cbor(n(1), with = "minicbor::bytes")]
    tid: Option<[u8; TID_LEN]>,
    #[n(2)]
    at: u64,
    #[n(3)]
    code: u16,
    #[n(4)]
    severity: u8,
    #[n(5)]
    values: Vec<i64>,
}

fn mac(ik: &[u8; 16], gateway: &str, id: &MessageId, body: &[u8]) -> Option<[u8; 4]> {
    let mut message = format!("{PREFIX} {gateway} ").into_bytes();
    message.extend_from_slice(body);
    Eia2::new(ik)
        .mac(
            id.seq() as u32,
            SMS_BEARER,
            Direction::Uplink,
            &message,
            message.len() * 8,
        )
        .ok()
}

/// The SMS text for an urgent event with message id `id`, in scope `tid`, MACed with `ik` (the IK of
/// the gateway's own security context).
pub fn encode(
    gateway: &GatewayId,
    ik: &[u8; 16],
    id: MessageId,
    tid: Option<Tid>,
    event: &Event,
) -> Result<String, SmsError> {
    let body = Body {
        id: id.0,
        tid: tid.map(|t| t.0),
        at: event.at,
        code: event.code,
        severity: match event.severity {
            Severity::Info => 0,
            Severity::Warning => 1,
            Severity::Alarm => 2,
        },
        values: event.values.iter().copied().take(MAX_VALUES).collect(),
    };
    let mut bytes =
        minicbor::to_vec(&body).map_err(|e| SmsError::Malformed(format!("encoding: {e}")))?;
    let tag = mac(ik, gateway.as_str(), &id, &bytes)
        .ok_or_else(|| SmsError::Malformed("the MAC cannot be computed".into()))?;
    bytes.extend_from_slice(&tag);
    let text = format!("{PREFIX} {} {}", gateway.as_str(), base32(&bytes));
    if text.len() > SMS_LEN {
        return Err(SmsError::TooLong(text.len()));
    }
    Ok(text)
}

/// The gateway an SMS form claims to come from (to find its keys), before any check of the MAC.
pub fn claimed_gateway(text: &str) -> Result<GatewayId, SmsError> {
    let (gateway, _) = split(text)?;
    Ok(gateway)
}

fn split(text: &str) -> Result<(GatewayId, Vec<u8>), SmsError> {
    let mut words = text.split_whitespace();
    if !words.next().is_some_and(|w| w.eq_ignore_ascii_case(PREFIX)) {
        return Err(SmsError::NotAnEvent);
    }
    let gateway = words
        .next()
        .ok_or_else(|| SmsError::Malformed("no gateway id after the prefix".into()))?;
    let gateway = GatewayId::new(gateway)
        .map_err(|_| SmsError::Malformed(format!("`{gateway}` is not a gateway id")))?;
    let data = words
        .next()
        .ok_or_else(|| SmsError::Malformed("no event after the gateway id".into()))?;
    if words.next().is_some() {
        return Err(SmsError::Malformed(
            "more words than prefix, gateway id and event".into(),
        ));
    }
    let bytes = unbase32(data)
        .ok_or_else(|| SmsError::Malformed("the event is not base32 (A-Z, 2-7)".into()))?;
    Ok((gateway, bytes))
}

/// Reads and verifies an SMS form: `keys` are the IKs to try (the gateway's current security context,
/// then the previous one, so a form sent just before a fresh AKA run still verifies).
pub fn decode(text: &str, keys: &[[u8; 16]]) -> Result<SmsEvent, SmsError> {
    let (gateway, bytes) = split(text)?;
    if bytes.len() < 5 {
        return Err(SmsError::Malformed("too short".into()));
    }
    let (body_bytes, tag) = bytes.split_at(bytes.len() - 4);
    let body: Body = minicbor::decode(body_bytes)
        .map_err(|e| SmsError::Malformed(format!("the event cannot be read: {e}")))?;
    let id = MessageId(body.id);
    if !keys
        .iter()
        .any(|ik| mac(ik, gateway.as_str(), &id, body_bytes).is_some_and(|m| m == tag))
    {
        return Err(SmsError::Mac(gateway.as_str().to_string()));
    }
    let severity = match body.severity {
        0 => Severity::Info,
        1 => Severity::Warning,
        2 => Severity::Alarm,
        n => {
            return Err(SmsError::Malformed(format!(
                "severity {n} is not 0, 1 or 2"
            )))
        }
    };
    Ok(SmsEvent {
        gateway,
        id,
        tid: body.tid.map(Tid),
        event: Event {
            at: body.at,
            code: body.code,
            severity,
            detail: None,
            values: body.values,
        },
    })
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, no padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The octets of RFC 4648 base32 without padding (either case); `None` for any other character.
pub fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    // Canonical form only: a text that ends in a whole character of left-over bits, or whose left-over
    // bits are not zero, is not what any encoder writes (a change there would otherwise decode to the
    // same octets and pass as the original).
    if bits >= 5 || acc != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_code;

    fn event() -> Event {
        Event {
            at: 1_796_580_000,
            code: event_code::RELAY_OPENED,
            severity: Severity::Alarm,
            detail: Some("credit exhausted".into()),
            values: vec![-1234, 5, 6, 7, 8, 9],
        }
    }

    #[test]
    fn round_trip_fits_one_sms_and_drops_only_the_detail() {
        let gw = GatewayId::new("gw-block-7-staircase-b").unwrap();
        let ik = [7u8; 16];
        let id = MessageId::new(*b"uplink\0\0", 0x1_0000_0042);
        let tid = Some(Tid([0x3c, 0x91, 0, 0, 0, 0, 0, 1]));
        let text = encode(&gw, &ik, id, tid, &event()).unwrap();
        assert!(text.starts_with("CG1 gw-block-7-staircase-b "), "{text}");
        assert!(text.len() <= SMS_LEN, "{} characters", text.len());
        // An operator that changes the case of the event's letters changes nothing.
        let (head, data) = text.rsplit_once(' ').unwrap();
        let lower = format!("{head} {}", data.to_ascii_lowercase());
        let got = decode(&lower, &[[1; 16], ik]).unwrap();
        assert_eq!(got.gateway, gw);
        assert_eq!(got.id, id);
        assert_eq!(got.tid, tid);
        assert_eq!(got.event.code, 1);
        assert_eq!(got.event.severity, Severity::Alarm);
        assert_eq!(got.event.detail, None);
        assert_eq!(got.event.values, vec![-1234, 5, 6, 7]);
        assert_eq!(claimed_gateway(&text).unwrap(), gw);
    }

    #[test]
    fn wrong_key_altered_text_and_other_gateways_are_refused() {
        let gw = GatewayId::new("gw-1").unwrap();
        let ik = [9u8; 16];
        let id = MessageId::new(*b"uplink\0\0", 7);
        let text = encode(&gw, &ik, id, None, &event()).unwrap();
        assert_eq!(decode(&text, &[[8; 16]]), Err(SmsError::Mac("gw-1".into())));
        let other = text.replacen("gw-1", "gw-2", 1);
        assert_eq!(decode(&other, &[ik]), Err(SmsError::Mac("gw-2".into())));
        // Flip one character of the body.
        let mut chars: Vec<char> = text.chars().collect();
        let i = chars.len() - 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let altered: String = chars.into_iter().collect();
        assert!(decode(&altered, &[ik]).is_err());
        // A change in the last character's unused bits only is refused too (not the original's octets
        // read leniently), as is a character too many.
        let (head, data) = text.rsplit_once(' ').unwrap();
        let last = data.chars().last().unwrap();
        let bits_used = (data.len() * 5) % 8;
        if bits_used != 0 {
            let value = ALPHABET
                .iter()
                .position(|&c| char::from(c) == last)
                .unwrap();
            let flipped = char::from(ALPHABET[value ^ 1]);
            let tail = format!("{head} {}{flipped}", &data[..data.len() - 1]);
            assert!(unbase32(&tail[head.len() + 1..]).is_none(), "{tail}");
            assert!(decode(&tail, &[ik]).is_err());
        }
        assert!(unbase32("MZXW6A").is_none());
        assert_eq!(unbase32("MZXW6").unwrap(), b"foo");
        assert_eq!(unbase32("MZXW6YQ").unwrap(), b"foob");
        assert!(unbase32("MZXW6YR").is_none());
        assert_eq!(decode("BAL A-101 1234", &[ik]), Err(SmsError::NotAnEvent));
        assert!(matches!(
            decode("CG1 gw-1 !!!", &[ik]),
            Err(SmsError::Malformed(_))
        ));
        assert!(matches!(decode("CG1", &[ik]), Err(SmsError::Malformed(_))));
        assert!(matches!(
            decode("CG1 gw-1 AA", &[ik]),
            Err(SmsError::Malformed(_))
        ));
    }

    #[test]
    fn base32_matches_rfc_4648() {
        for (plain, coded) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(plain.as_bytes()), coded);
            assert_eq!(unbase32(coded).unwrap(), plain.as_bytes());
        }
        assert_eq!(unbase32("mzxw6"), Some(b"foo".to_vec()));
        assert_eq!(unbase32("MZ1"), None);
    }
}
