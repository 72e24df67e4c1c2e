//! The stored form of an [`Account`]: a compact binary record (the audit entries' varint codec) instead
//! of JSON, because every charge checkpoint rewrites it and the store's size on an SD card is set mostly
//! by how many octets each checkpoint writes (docs/ledger.md, *Store growth*).
//!
//! Layout, version 1 (varints are LEB128, signed values zig-zag, strings length-prefixed UTF-8, an
//! optional value a 0/1 octet before it):
//!
//! | field | encoding |
//! |---|---|
//! | version | octet `0x01` (a JSON record starts with `{`, 0x7b, and is still read) |
//! | meter_id, account_no, dwelling | string, varint, string |
//! | model | optional string |
//! | flags | octet: bit 0 protected, bit 1 emergency selected |
//! | opened_at, opening balance | varint, signed |
//! | tokens, tokens applied, energy, standing, recovered, carry, debt | signed, varint, 5 × signed |
//! | last_serial | optional varint |
//! | restored | varint count, then first/last varint pairs |
//! | last_topup | optional: serial varint, amount signed, at varint |
//! | register | optional meter serial string, Wh varint, at varint, anomalies varint |
//! | standing_day, recovery_day | signed, signed |
//! | block | period signed, used Wh varint |
//! | relay | octet: 0 connected, 1 disconnected, 2 armed |
//! | warned_levels | varint |
//! | hold | optional: by string, at varint |
//!
//! A field added later takes a new version; this build refuses versions it does not know (a ledger is
//! never read by an older build: the schema version guards the store as a whole).

use concentrator_security::restore::SerialSpan;

use crate::account::{Account, LastTopUp, Register, RelayHold, RelayTarget};
use crate::codec::{DecodeError, Reader, Writer};
use crate::tariff::BlockUsage;

/// The record version this build writes.
pub const RECORD_VERSION: u8 = 1;

/// Why a stored account did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A binary record with a bad field.
    #[error("{0}")]
    Field(#[from] DecodeError),
    /// A version this build does not know.
    #[error("account record version {0} is newer than this build knows ({RECORD_VERSION}); run the build that wrote it")]
    Version(u8),
    /// An old JSON record that does not parse.
    #[error("JSON account record: {0}")]
    Json(String),
}

/// Encodes an account for the store.
pub fn encode(a: &Account) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(RECORD_VERSION)
        .str(&a.meter_id)
        .u64(u64::from(a.account_no))
        .str(&a.dwelling);
    opt_str(&mut w, a.model.as_deref());
    w.u8(u8::from(a.protected) | (u8::from(a.emergency_selected) << 1))
        .u64(a.opened_at)
        .i64(a.opening_balance_minor)
        .i64(a.tokens_minor)
        .u64(a.tokens_applied)
        .i64(a.energy_minor)
        .i64(a.standing_minor)
        .i64(a.recovered_minor)
        .i64(a.carry_micro)
        .i64(a.debt_minor)
        .opt_u64(a.last_serial)
        .u64(a.restored.len() as u64);
    for span in &a.restored {
        w.u64(span.first).u64(span.last);
    }
    match &a.last_topup {
        None => w.u8(0),
        Some(t) => w.u8(1).u64(t.serial).i64(t.amount_minor).u64(t.at),
    };
    opt_str(&mut w, a.register.meter_serial.as_deref());
    w.u64(a.register.wh)
        .u64(a.register.at)
        .u64(u64::from(a.register.anomalies))
        .i64(a.standing_day)
        .i64(a.recovery_day)
        .i64(a.block.period)
        .u64(a.block.used_wh)
        .u8(match a.relay {
            RelayTarget::Connected => 0,
            RelayTarget::Disconnected => 1,
            RelayTarget::Armed => 2,
        })
        .u64(u64::from(a.warned_levels));
    match &a.hold {
        None => w.u8(0),
        Some(h) => w.u8(1).str(&h.by).u64(h.at),
    };
    w.finish()
}

/// Decodes a stored account: a binary record, or a JSON one written by an earlier build.
pub fn decode(bytes: &[u8]) -> Result<Account, RecordError> {
    match bytes.first() {
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| RecordError::Json(e.to_string())),
        Some(&RECORD_VERSION) => decode_v1(&mut Reader::new(&bytes[1..])),
        Some(&v) => Err(RecordError::Version(v)),
        None => Err(DecodeError {
            field: "version",
            offset: 0,
        }
        .into()),
    }
}

fn decode_v1(r: &mut Reader<'_>) -> Result<Account, RecordError> {
    let meter_id = r.string("meter_id")?;
    let account_no = u32_of(r, "account_no")?;
    let dwelling = r.string("dwelling")?;
    let model = opt_string(r, "model")?;
    let flags = r.u8("flags")?;
    let opened_at = r.u64("opened_at")?;
    let opening_balance_minor = r.i64("opening_balance_minor")?;
    let tokens_minor = r.i64("tokens_minor")?;
    let tokens_applied = r.u64("tokens_applied")?;
    let energy_minor = r.i64("energy_minor")?;
    let standing_minor = r.i64("standing_minor")?;
    let recovered_minor = r.i64("recovered_minor")?;
    let carry_micro = r.i64("carry_micro")?;
    let debt_minor = r.i64("debt_minor")?;
    let last_serial = r.opt_u64("last_serial")?;
    let spans = r.u64("restored")?;
    // Each span takes at least two octets: a count beyond what is left is corrupt, not a reason to
    // reserve memory.
    let mut restored = Vec::new();
    for _ in 0..spans {
        let first = r.u64("restored.first")?;
        let last = r.u64("restored.last")?;
        restored.push(SerialSpan { first, last });
    }
    let last_topup = match flag(r, "last_topup")? {
        false => None,
        true => Some(LastTopUp {
            serial: r.u64("last_topup.serial")?,
            amount_minor: r.i64("last_topup.amount_minor")?,
            at: r.u64("last_topup.at")?,
        }),
    };
    let register = Register {
        meter_serial: opt_string(r, "register.meter_serial")?,
        wh: r.u64("register.wh")?,
        at: r.u64("register.at")?,
        anomalies: u32_of(r, "register.anomalies")?,
    };
    let standing_day = r.i64("standing_day")?;
    let recovery_day = r.i64("recovery_day")?;
    let block = BlockUsage {
        period: r.i64("block.period")?,
        used_wh: r.u64("block.used_wh")?,
    };
    let relay = match r.u8("relay")? {
        0 => RelayTarget::Connected,
        1 => RelayTarget::Disconnected,
        2 => RelayTarget::Armed,
        _ => return Err(bad("relay")),
    };
    let warned_levels = u32_of(r, "warned_levels")?;
    let hold = match flag(r, "hold")? {
        false => None,
        true => Some(RelayHold {
            by: r.string("hold.by")?,
            at: r.u64("hold.at")?,
        }),
    };
    r.finish()?;
    if flags > 0b11 {
        return Err(bad("flags"));
    }
    Ok(Account {
        meter_id,
        account_no,
        dwelling,
        model,
        protected: flags & 1 != 0,
        opened_at,
        opening_balance_minor,
        tokens_minor,
        tokens_applied,
        energy_minor,
        standing_minor,
        recovered_minor,
        carry_micro,
        debt_minor,
        last_serial,
        restored,
        last_topup,
        register,
        emergency_selected: flags & 2 != 0,
        standing_day,
        recovery_day,
        block,
        relay,
        warned_levels,
        hold,
    })
}

fn bad(field: &'static str) -> RecordError {
    DecodeError { field, offset: 0 }.into()
}

fn opt_str(w: &mut Writer, v: Option<&str>) {
    match v {
        None => w.u8(0),
        Some(s) => w.u8(1).str(s),
    };
}

fn flag(r: &mut Reader<'_>, field: &'static str) -> Result<bool, RecordError> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(bad(field)),
    }
}

fn opt_string(r: &mut Reader<'_>, field: &'static str) -> Result<Option<String>, RecordError> {
    Ok(if flag(r, field)? {
        Some(r.string(field)?)
    } else {
        None
    })
}

fn u32_of(r: &mut Reader<'_>, field: &'static str) -> Result<u32, RecordError> {
    u32::try_from(r.u64(field)?).map_err(|_| bad(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Account {
        Account {
            meter_id: "000000000042".into(),
            account_no: 3,
            dwelling: "Flat 2B".into(),
            model: Some("DDSY1088".into()),
            protected: true,
            opened_at: 1_780_000_000,
            opening_balance_minor: -250,
            tokens_minor: 123_456,
            tokens_applied: 17,
            energy_minor: 99_999,
            standing_minor: 3_000,
            recovered_minor: 1_500,
            carry_micro: -499_999,
            debt_minor: 2_000,
            last_serial: Some(41),
            restored: vec![
                SerialSpan { first: 1, last: 9 },
                SerialSpan {
                    first: 12,
                    last: 12,
                },
            ],
            last_topup: Some(LastTopUp {
                serial: 41,
                amount_minor: 2_000,
                at: 1_780_086_400,
            }),
            register: Register {
                meter_serial: Some("SN-7".into()),
                wh: 12_345_678,
                at: 1_780_090_000,
                anomalies: 2,
            },
            emergency_selected: true,
            standing_day: 20_602,
            recovery_day: 20_601,
            block: BlockUsage {
                period: 676,
                used_wh: 150_000,
            },
            relay: RelayTarget::Armed,
            warned_levels: 2,
            hold: Some(RelayHold {
                by: "installer alice".into(),
                at: 1_780_090_500,
            }),
        }
    }

    fn empty() -> Account {
        Account {
            meter_id: String::new(),
            account_no: 0,
            dwelling: String::new(),
            model: None,
            protected: false,
            opened_at: 0,
            opening_balance_minor: 0,
            tokens_minor: 0,
            tokens_applied: 0,
            energy_minor: 0,
            standing_minor: 0,
            recovered_minor: 0,
            carry_micro: 0,
            debt_minor: 0,
            last_serial: None,
            restored: Vec::new(),
            last_topup: None,
            register: Register {
                meter_serial: None,
                wh: 0,
                at: 0,
                anomalies: 0,
            },
            emergency_selected: false,
            standing_day: 0,
            recovery_day: 0,
            block: BlockUsage {
                period: 0,
                used_wh: 0,
            },
            relay: RelayTarget::Disconnected,
            warned_levels: 0,
            hold: None,
        }
    }

    #[test]
    fn every_field_round_trips_and_the_record_is_a_fraction_of_the_json() {
        for a in [full(), empty()] {
            let bytes = encode(&a);
            assert_eq!(decode(&bytes).unwrap(), a);
            let json = serde_json::to_vec(&a).unwrap();
            assert!(
                bytes.len() * 4 < json.len(),
                "{} octets against {} of JSON",
                bytes.len(),
                json.len()
            );
        }
    }

    #[test]
    fn a_json_record_of_an_earlier_build_is_still_read() {
        let a = full();
        assert_eq!(decode(&serde_json::to_vec(&a).unwrap()).unwrap(), a);
    }

    #[test]
    fn damaged_records_are_errors_naming_the_field_never_panics() {
        let bytes = encode(&full());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut newer = bytes.clone();
        newer[0] = 9;
        assert_eq!(decode(&newer), Err(RecordError::Version(9)));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        // Every single-octet change either decodes to some account or is refused; none panics.
        for i in 0..bytes.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = decode(&b);
            }
        }
    }
}
