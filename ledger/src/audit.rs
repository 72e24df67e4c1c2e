//! The audit log: every money event, appended to a hash chain in the store.
//!
//! Entry `n` is stored under its sequence number (8 octets, big-endian) as `body ‖ hash`, where
//! `hash = SHA-256(previous hash ‖ n ‖ body)` and the hash before entry 0 is 32 zero octets. Removing,
//! reordering or altering an entry breaks every hash after it; [`verify`] walks the chain and names the
//! first entry that does not match. Cutting entries off the *end* leaves a chain that verifies: only an
//! outside anchor (the head sent to the head-end with the account summaries) shows it, see
//! [`crate::anchor`]. Bodies use the compact encoding of [`crate::codec`] (a 15-minute
//! charge checkpoint is about 40 octets plus the hash).

use std::io::Write;

use concentrator_security::restore::SerialSpan;
use serde::Serialize;

use crate::codec::{DecodeError, Reader, Writer};
use crate::store::{for_each, Keyspace, Store};
use crate::LedgerError;

/// Body format version.
const ENTRY_VERSION: u8 = 1;

/// Why the register was given a new baseline without a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebaselineReason {
    /// A different physical meter (new serial).
    MeterExchange,
    /// The register stayed below the last checkpoint for several readings (reset or replaced register).
    Backwards,
    /// The register stayed implausibly far ahead for several readings.
    Jump,
}

impl std::fmt::Display for RebaselineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RebaselineReason::MeterExchange => "a different meter (new serial number)",
            RebaselineReason::Backwards => {
                "the register stayed below the last checkpoint (reset or replaced register)"
            }
            RebaselineReason::Jump => "the register stayed implausibly far ahead",
        })
    }
}

/// A relay command as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayAction {
    /// Open the relay (supply off).
    Cut,
    /// Close the relay (supply on).
    Reconnect,
    /// Arm the meter: the customer's button press closes the relay.
    Arm,
}

impl std::fmt::Display for RelayAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RelayAction::Cut => "cut (open the relay)",
            RelayAction::Reconnect => "reconnect (close the relay)",
            RelayAction::Arm => "arm (for the customer's button)",
        })
    }
}

/// A relay state as read back from a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    /// Closed: supply on.
    Closed,
    /// Open: supply off.
    Open,
    /// Open and armed for the customer's button.
    Armed,
}

impl std::fmt::Display for RelayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RelayState::Closed => "closed (supply on)",
            RelayState::Open => "open (supply off)",
            RelayState::Armed => "armed (open until the customer presses the button)",
        })
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// An account was opened.
    AccountOpened {
        /// Tenancy number.
        account_no: u32,
        /// The dwelling.
        dwelling: String,
        /// Opening balance.
        opening_balance_minor: i64,
        /// Opening debt (arrears).
        debt_minor: i64,
        /// Register baseline.
        register_wh: u64,
    },
    /// A token was applied.
    TokenApplied {
        /// Serial.
        serial: u64,
        /// Token amount.
        amount_minor: i64,
        /// Part of it taken for debt.
        recovered_minor: i64,
        /// Balance after.
        balance_after_minor: i64,
    },
    /// Energy charged at a checkpoint.
    Charge {
        /// Register before.
        from_wh: u64,
        /// Register after.
        to_wh: u64,
        /// The exact charge, micro-units.
        micro: i64,
        /// The charge in minor units (rounded with the carry).
        amount_minor: i64,
        /// Balance after.
        balance_after_minor: i64,
    },
    /// A day's standing charge.
    StandingCharge {
        /// Local day (days since 1970-01-01).
        day: i64,
        /// Amount.
        amount_minor: i64,
        /// Balance after.
        balance_after_minor: i64,
    },
    /// A fixed daily debt recovery.
    DebtRecovered {
        /// Amount.
        amount_minor: i64,
        /// Debt left.
        debt_after_minor: i64,
        /// Balance after.
        balance_after_minor: i64,
    },
    /// A reading that was not charged (backwards or implausible jump); the baseline is held.
    RegisterAnomaly {
        /// The baseline held.
        held_wh: u64,
        /// The reading.
        read_wh: u64,
    },
    /// A new register baseline, without a charge.
    Rebaselined {
        /// Why.
        reason: RebaselineReason,
        /// Old baseline.
        from_wh: u64,
        /// New baseline.
        to_wh: u64,
        /// The physical meter's serial now.
        meter_serial: String,
    },
    /// Emergency credit selected.
    EmergencySelected {
        /// Selected automatically (else by the customer).
        automatic: bool,
    },
    /// A relay command was issued.
    RelayCommand {
        /// The command.
        action: RelayAction,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// A relay command's result, read back.
    RelayResult {
        /// The command.
        action: RelayAction,
        /// The state read back.
        observed: RelayState,
        /// Whether the meter obeyed.
        ok: bool,
    },
    /// Someone with relay authority ordered the supply off, on or armed (the head-end, an installer's
    /// relay test); `held` says whether the supply is now held off whatever the credit.
    RelayOrdered {
        /// What was ordered.
        action: RelayAction,
        /// Who ordered it.
        by: String,
        /// The supply is held off after it.
        held: bool,
    },
    /// An account was restored from the head-end's signed account statement (the store had lost it).
    AccountRestored {
        /// Tenancy number.
        account_no: u32,
        /// The dwelling.
        dwelling: String,
        /// The balance the statement gives, the account's opening balance here.
        opening_balance_minor: i64,
        /// Debt (arrears) the statement gives.
        debt_minor: i64,
        /// Register baseline (the statement's register, else the first reading).
        register_wh: u64,
        /// The highest serial applied.
        last_serial: Option<u64>,
        /// The serials applied before the restore.
        restored: Vec<SerialSpan>,
        /// When the head-end made the statement, unix seconds.
        statement_at: u64,
    },
    /// The entries below `base_len` were archived out of the store (`crate::archive`); `digest` is the
    /// SHA-256 of the stored base (the anchor's hash and every meter recomputed up to it), which binds
    /// the base to the chain.
    Archived {
        /// Entries archived so far (the first entry still stored).
        base_len: u64,
        /// The stored base's digest.
        #[serde(serialize_with = "hex_digest")]
        digest: [u8; 32],
        /// Entries this step took out of the store.
        entries: u64,
    },
    /// An account was closed (change of tenancy).
    AccountClosed {
        /// Tenancy number.
        account_no: u32,
        /// Final register reading.
        final_wh: u64,
        /// Balance at closing.
        balance_minor: i64,
        /// Arrears at closing.
        debt_minor: i64,
    },
    /// A tariff from the head-end was stored (gateway-wide: logged with an empty meter).
    TariffScheduled {
        /// The tariff id.
        tariff_id: u32,
        /// When it takes over, unix seconds.
        in_force_at: u64,
        /// The tariff in force before it (0: the configured one).
        replaces: u32,
        /// Its standing charge, minor units per day.
        standing_minor_per_day: i64,
    },
}

fn hex_digest<S: serde::Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex_string(d))
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Sequence number, from 0.
    pub seq: u64,
    /// When, unix seconds.
    pub at: u64,
    /// The meter.
    pub meter: String,
    /// What happened.
    #[serde(flatten)]
    pub event: AuditEvent,
}

fn action_code(a: RelayAction) -> u8 {
    match a {
        RelayAction::Cut => 0,
        RelayAction::Reconnect => 1,
        RelayAction::Arm => 2,
    }
}

fn state_code(s: RelayState) -> u8 {
    match s {
        RelayState::Closed => 0,
        RelayState::Open => 1,
        RelayState::Armed => 2,
    }
}

impl AuditEntry {
    /// The compact body (without the sequence number, which is the key).
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(ENTRY_VERSION).u64(self.at).str(&self.meter);
        match &self.event {
            AuditEvent::AccountOpened {
                account_no,
                dwelling,
                opening_balance_minor,
                debt_minor,
                register_wh,
            } => {
                w.u8(1)
                    .u64(u64::from(*account_no))
                    .str(dwelling)
                    .i64(*opening_balance_minor)
                    .i64(*debt_minor)
                    .u64(*register_wh);
            }
            AuditEvent::TokenApplied {
                serial,
                amount_minor,
                recovered_minor,
                balance_after_minor,
            } => {
                w.u8(2)
                    .u64(*serial)
                    .i64(*amount_minor)
                    .i64(*recovered_minor)
                    .i64(*balance_after_minor);
            }
            AuditEvent::Charge {
                from_wh,
                to_wh,
                micro,
                amount_minor,
                balance_after_minor,
            } => {
                w.u8(3)
                    .u64(*from_wh)
                    .u64(to_wh.wrapping_sub(*from_wh))
                    .i64(*micro)
                    .i64(*amount_minor)
                    .i64(*balance_after_minor);
            }
            AuditEvent::StandingCharge {
                day,
                amount_minor,
                balance_after_minor,
            } => {
                w.u8(4)
                    .i64(*day)
                    .i64(*amount_minor)
                    .i64(*balance_after_minor);
            }
            AuditEvent::DebtRecovered {
                amount_minor,
                debt_after_minor,
                balance_after_minor,
            } => {
                w.u8(5)
                    .i64(*amount_minor)
                    .i64(*debt_after_minor)
                    .i64(*balance_after_minor);
            }
            AuditEvent::RegisterAnomaly { held_wh, read_wh } => {
                w.u8(6).u64(*held_wh).u64(*read_wh);
            }
            AuditEvent::Rebaselined {
                reason,
                from_wh,
                to_wh,
                meter_serial,
            } => {
                let r = match reason {
                    RebaselineReason::MeterExchange => 0,
                    RebaselineReason::Backwards => 1,
                    RebaselineReason::Jump => 2,
                };
                w.u8(7).u8(r).u64(*from_wh).u64(*to_wh).str(meter_serial);
            }
            AuditEvent::EmergencySelected { automatic } => {
                w.u8(8).u8(u8::from(*automatic));
            }
            AuditEvent::RelayCommand { action, attempt } => {
                w.u8(9).u8(action_code(*action)).u64(u64::from(*attempt));
            }
            AuditEvent::RelayResult {
                action,
                observed,
                ok,
            } => {
                w.u8(10)
                    .u8(action_code(*action))
                    .u8(state_code(*observed))
                    .u8(u8::from(*ok));
            }
            AuditEvent::RelayOrdered { action, by, held } => {
                w.u8(20)
                    .u8(action_code(*action))
                    .str(by)
                    .u8(u8::from(*held));
            }
            AuditEvent::Archived {
                base_len,
                digest,
                entries,
            } => {
                w.u8(21).u64(*base_len).bytes(digest).u64(*entries);
            }
            AuditEvent::AccountClosed {
                account_no,
                final_wh,
                balance_minor,
                debt_minor,
            } => {
                w.u8(11)
                    .u64(u64::from(*account_no))
                    .u64(*final_wh)
                    .i64(*balance_minor)
                    .i64(*debt_minor);
            }
            AuditEvent::TariffScheduled {
                tariff_id,
                in_force_at,
                replaces,
                standing_minor_per_day,
            } => {
                w.u8(30)
                    .u64(u64::from(*tariff_id))
                    .u64(*in_force_at)
                    .u64(u64::from(*replaces))
                    .i64(*standing_minor_per_day);
            }
            AuditEvent::AccountRestored {
                account_no,
                dwelling,
                opening_balance_minor,
                debt_minor,
                register_wh,
                last_serial,
                restored,
                statement_at,
            } => {
                w.u8(12)
                    .u64(u64::from(*account_no))
                    .str(dwelling)
                    .i64(*opening_balance_minor)
                    .i64(*debt_minor)
                    .u64(*register_wh)
                    .opt_u64(*last_serial)
                    .u64(*statement_at)
                    .u64(restored.len() as u64);
                for r in restored {
                    w.u64(r.first).u64(r.last);
                }
            }
        }
        w.finish()
    }

    /// Decodes a body stored under `seq`; never panics.
    pub fn decode_body(seq: u64, body: &[u8]) -> Result<AuditEntry, DecodeError> {
        let mut r = Reader::new(body);
        if r.u8("entry version")? != ENTRY_VERSION {
            return Err(DecodeError {
                field: "entry version",
                offset: 0,
            });
        }
        let at = r.u64("at")?;
        let meter = r.string("meter")?;
        let u32_of = |v: u64, field| u32::try_from(v).map_err(|_| DecodeError { field, offset: 0 });
        let action = |c: u8| match c {
            0 => Ok(RelayAction::Cut),
            1 => Ok(RelayAction::Reconnect),
            2 => Ok(RelayAction::Arm),
            _ => Err(DecodeError {
                field: "relay action",
                offset: 0,
            }),
        };
        let event = match r.u8("event tag")? {
            1 => AuditEvent::AccountOpened {
                account_no: u32_of(r.u64("account_no")?, "account_no")?,
                dwelling: r.string("dwelling")?,
                opening_balance_minor: r.i64("opening_balance")?,
                debt_minor: r.i64("debt")?,
                register_wh: r.u64("register_wh")?,
            },
            2 => AuditEvent::TokenApplied {
                serial: r.u64("serial")?,
                amount_minor: r.i64("amount")?,
                recovered_minor: r.i64("recovered")?,
                balance_after_minor: r.i64("balance_after")?,
            },
            3 => {
                let from_wh = r.u64("from_wh")?;
                let delta = r.u64("wh")?;
                AuditEvent::Charge {
                    from_wh,
                    to_wh: from_wh.wrapping_add(delta),
                    micro: r.i64("micro")?,
                    amount_minor: r.i64("amount")?,
                    balance_after_minor: r.i64("balance_after")?,
                }
            }
            4 => AuditEvent::StandingCharge {
                day: r.i64("day")?,
                amount_minor: r.i64("amount")?,
                balance_after_minor: r.i64("balance_after")?,
            },
            5 => AuditEvent::DebtRecovered {
                amount_minor: r.i64("amount")?,
                debt_after_minor: r.i64("debt_after")?,
                balance_after_minor: r.i64("balance_after")?,
            },
            6 => AuditEvent::RegisterAnomaly {
                held_wh: r.u64("held_wh")?,
                read_wh: r.u64("read_wh")?,
            },
            7 => AuditEvent::Rebaselined {
                reason: match r.u8("reason")? {
                    0 => RebaselineReason::MeterExchange,
                    1 => RebaselineReason::Backwards,
                    2 => RebaselineReason::Jump,
                    _ => {
                        return Err(DecodeError {
                            field: "reason",
                            offset: 0,
                        })
                    }
                },
                from_wh: r.u64("from_wh")?,
                to_wh: r.u64("to_wh")?,
                meter_serial: r.string("meter_serial")?,
            },
            8 => AuditEvent::EmergencySelected {
                automatic: r.u8("automatic")? != 0,
            },
            9 => AuditEvent::RelayCommand {
                action: action(r.u8("action")?)?,
                attempt: u32_of(r.u64("attempt")?, "attempt")?,
            },
            10 => AuditEvent::RelayResult {
                action: action(r.u8("action")?)?,
                observed: match r.u8("observed")? {
                    0 => RelayState::Closed,
                    1 => RelayState::Open,
                    2 => RelayState::Armed,
                    _ => {
                        return Err(DecodeError {
                            field: "observed",
                            offset: 0,
                        })
                    }
                },
                ok: r.u8("ok")? != 0,
            },
            20 => AuditEvent::RelayOrdered {
                action: action(r.u8("action")?)?,
                by: r.string("by")?,
                held: r.u8("held")? != 0,
            },
            21 => AuditEvent::Archived {
                base_len: r.u64("base_len")?,
                digest: r.bytes("digest")?.try_into().map_err(|_| DecodeError {
                    field: "digest",
                    offset: 0,
                })?,
                entries: r.u64("entries")?,
            },
            11 => AuditEvent::AccountClosed {
                account_no: u32_of(r.u64("account_no")?, "account_no")?,
                final_wh: r.u64("final_wh")?,
                balance_minor: r.i64("balance")?,
                debt_minor: r.i64("debt")?,
            },
            30 => AuditEvent::TariffScheduled {
                tariff_id: u32_of(r.u64("tariff_id")?, "tariff_id")?,
                in_force_at: r.u64("in_force_at")?,
                replaces: u32_of(r.u64("replaces")?, "replaces")?,
                standing_minor_per_day: r.i64("standing")?,
            },
            12 => {
                let account_no = u32_of(r.u64("account_no")?, "account_no")?;
                let dwelling = r.string("dwelling")?;
                let opening_balance_minor = r.i64("opening_balance")?;
                let debt_minor = r.i64("debt")?;
                let register_wh = r.u64("register_wh")?;
                let last_serial = r.opt_u64("last_serial")?;
                let statement_at = r.u64("statement_at")?;
                let n = r.u64("restored count")?;
                let mut restored = Vec::new();
                for _ in 0..n {
                    restored.push(SerialSpan {
                        first: r.u64("restored first")?,
                        last: r.u64("restored last")?,
                    });
                }
                AuditEvent::AccountRestored {
                    account_no,
                    dwelling,
                    opening_balance_minor,
                    debt_minor,
                    register_wh,
                    last_serial,
                    restored,
                    statement_at,
                }
            }
            _ => {
                return Err(DecodeError {
                    field: "event tag",
                    offset: 0,
                })
            }
        };
        r.finish()?;
        Ok(AuditEntry {
            seq,
            at,
            meter,
            event,
        })
    }
}

/// The end of the chain: the next sequence number and the last hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditHead {
    /// The sequence number of the next entry.
    pub next_seq: u64,
    /// The hash of the last entry (zeros before the first).
    pub hash: [u8; 32],
}

fn chain_hash(prev: &[u8; 32], seq: u64, body: &[u8]) -> [u8; 32] {
    let mut h = openssl::sha::Sha256::new();
    h.update(prev);
    h.update(&seq.to_be_bytes());
    h.update(body);
    h.finish()
}

impl AuditHead {
    /// Reads the head from the last stored entry (or the archive base, with no entry after it).
    pub fn load<S: Store + ?Sized>(store: &S) -> Result<AuditHead, LedgerError> {
        let Some((key, value)) = store.last(Keyspace::Audit)? else {
            return Ok(crate::archive::AuditBase::load(store)?
                .map(|b| AuditHead {
                    next_seq: b.len,
                    hash: b.hash,
                })
                .unwrap_or_default());
        };
        let seq = seq_of(&key)?;
        let (_, hash) = split_value(seq, &value)?;
        Ok(AuditHead {
            next_seq: seq + 1,
            hash,
        })
    }

    /// Chains an entry: returns the key and value to store and advances the head.
    pub fn append(&mut self, at: u64, meter: &str, event: AuditEvent) -> (Vec<u8>, Vec<u8>) {
        let entry = AuditEntry {
            seq: self.next_seq,
            at,
            meter: meter.to_string(),
            event,
        };
        let mut value = entry.encode_body();
        let hash = chain_hash(&self.hash, entry.seq, &value);
        value.extend_from_slice(&hash);
        let key = entry.seq.to_be_bytes().to_vec();
        self.hash = hash;
        self.next_seq += 1;
        (key, value)
    }
}

fn corrupt(seq: u64, reason: String) -> LedgerError {
    LedgerError::Corrupt {
        keyspace: Keyspace::Audit.name(),
        key: seq.to_string(),
        reason,
    }
}

fn seq_of(key: &[u8]) -> Result<u64, LedgerError> {
    let arr: [u8; 8] = key.try_into().map_err(|_| LedgerError::Corrupt {
        keyspace: Keyspace::Audit.name(),
        key: format!("{key:02x?}"),
        reason: "key is not an 8-octet sequence number".into(),
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// The chain hash stored with entry `seq`; a missing entry is a gap in the chain.
pub(crate) fn stored_hash<S: Store + ?Sized>(store: &S, seq: u64) -> Result<[u8; 32], LedgerError> {
    let value = store
        .get(Keyspace::Audit, &seq.to_be_bytes())?
        .ok_or(AuditError::Gap {
            expected: seq,
            found: seq + 1,
        })?;
    split_value(seq, &value).map(|(_, hash)| hash)
}

/// The time of stored entry `seq`.
pub(crate) fn stored_time<S: Store + ?Sized>(store: &S, seq: u64) -> Result<u64, LedgerError> {
    let value = store
        .get(Keyspace::Audit, &seq.to_be_bytes())?
        .ok_or(AuditError::Gap {
            expected: seq,
            found: seq + 1,
        })?;
    let (body, _) = split_value(seq, &value)?;
    AuditEntry::decode_body(seq, body)
        .map(|e| e.at)
        .map_err(|e| corrupt(seq, e.to_string()))
}

fn split_value(seq: u64, value: &[u8]) -> Result<(&[u8], [u8; 32]), LedgerError> {
    let cut = value
        .len()
        .checked_sub(32)
        .ok_or_else(|| corrupt(seq, "shorter than its hash".into()))?;
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&value[cut..]);
    Ok((&value[..cut], hash))
}

/// The result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: u64,
    /// The last hash (hex), which the head-end can compare with its copy.
    pub head_hash: String,
}

/// A break in the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// An entry's stored hash is not the hash of its body and the previous hash.
    #[error("audit entry {seq}: hash does not match its content and the previous entry; the log was altered at or before this entry")]
    HashMismatch {
        /// The entry.
        seq: u64,
    },
    /// A sequence number is missing.
    #[error("audit entry {expected} is missing (next present is {found}); entries were removed")]
    Gap {
        /// The missing number.
        expected: u64,
        /// The next present.
        found: u64,
    },
    /// The chain is shorter than its outside anchor: entries were cut off the end.
    #[error("the audit log has {entries} entries but its anchor recorded {anchor_len}: entries {entries} to {last} are missing (cut off the end of the log); restore the store from a backup and report it", last = anchor_len - 1)]
    Truncated {
        /// Entries present.
        entries: u64,
        /// Entries the anchor recorded.
        anchor_len: u64,
    },
    /// The entry at the anchor's length is not the one the anchor recorded.
    #[error("audit entry {seq} is not the entry the anchor recorded: the log was rewritten up to entry {seq}; restore the store from a backup and report it")]
    AnchorMismatch {
        /// The entry.
        seq: u64,
    },
    /// An anchor names entries the chain does not have (yet, or no longer durable).
    #[error("the anchor names {anchor_len} entries but the chain has {entries} on disk; archive only up to an anchor the gateway sent")]
    BeyondHead {
        /// The anchor's length.
        anchor_len: u64,
        /// Entries on disk.
        entries: u64,
    },
    /// The stored archive base is not the one the chain's `Archived` entry recorded.
    #[error("the audit log's archive base at entry {len} does not match the digest the chain recorded for it (or the chain has no record of it): the base was altered; restore the store from a backup and report it")]
    BaseMismatch {
        /// The base's length.
        len: u64,
    },
    /// An entry does not decode.
    #[error("audit entry {seq} does not decode: {reason}")]
    Undecodable {
        /// The entry.
        seq: u64,
        /// Why.
        reason: String,
    },
}

/// Walks every stored entry in order from the archive base (`crate::archive`; the start of the chain
/// when nothing was archived), checking the chain and the base's seal, and hands each decoded entry to
/// `visit`. The report counts the whole chain, archived entries included.
pub fn walk<S: Store + ?Sized>(
    store: &S,
    mut visit: impl FnMut(&AuditEntry) -> Result<(), LedgerError>,
) -> Result<VerifyReport, LedgerError> {
    let base = crate::archive::AuditBase::load(store)?;
    let (mut prev, mut expected) = base.as_ref().map_or(([0u8; 32], 0), |b| (b.hash, b.len));
    let seal = base.as_ref().map(|b| (b.len, b.digest()));
    let mut sealed = seal.is_none();
    for_each(store, Keyspace::Audit, |key, value| {
        let seq = seq_of(key)?;
        if seq != expected {
            return Err(AuditError::Gap {
                expected,
                found: seq,
            }
            .into());
        }
        let (body, hash) = split_value(seq, value)?;
        if chain_hash(&prev, seq, body) != hash {
            return Err(AuditError::HashMismatch { seq }.into());
        }
        let entry = AuditEntry::decode_body(seq, body).map_err(|e| AuditError::Undecodable {
            seq,
            reason: e.to_string(),
        })?;
        if let (
            AuditEvent::Archived {
                base_len, digest, ..
            },
            Some((len, want)),
        ) = (&entry.event, seal)
        {
            if *base_len == len {
                if *digest != want {
                    return Err(AuditError::BaseMismatch { len }.into());
                }
                sealed = true;
            }
        }
        visit(&entry)?;
        prev = hash;
        expected += 1;
        Ok(())
    })?;
    if !sealed {
        let len = seal.map_or(0, |(len, _)| len);
        return Err(AuditError::BaseMismatch { len }.into());
    }
    Ok(VerifyReport {
        entries: expected,
        head_hash: hex_string(&prev),
    })
}

/// Verifies the whole chain.
pub fn verify<S: Store + ?Sized>(store: &S) -> Result<VerifyReport, LedgerError> {
    walk(store, |_| Ok(()))
}

/// Writes every entry as one JSON object per line (with its hash), after verifying the chain as it goes.
pub fn export<S: Store + ?Sized>(
    store: &S,
    out: &mut dyn Write,
) -> Result<VerifyReport, LedgerError> {
    walk(store, |entry| {
        let line = serde_json::to_string(entry).map_err(|e| LedgerError::Output(e.to_string()))?;
        writeln!(out, "{line}").map_err(|e| LedgerError::Output(e.to_string()))
    })
}

pub(crate) fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, MemStore};

    fn events() -> Vec<AuditEvent> {
        vec![
            AuditEvent::AccountOpened {
                account_no: 1,
                dwelling: "A-1".into(),
                opening_balance_minor: 500,
                debt_minor: 1_000,
                register_wh: 12_345,
            },
            AuditEvent::TokenApplied {
                serial: 7,
                amount_minor: 2_000,
                recovered_minor: 500,
                balance_after_minor: 2_000,
            },
            AuditEvent::Charge {
                from_wh: 12_345,
                to_wh: 12_400,
                micro: 1_375_000,
                amount_minor: 1,
                balance_after_minor: 1_999,
            },
            AuditEvent::StandingCharge {
                day: 19_000,
                amount_minor: 30,
                balance_after_minor: 1_969,
            },
            AuditEvent::DebtRecovered {
                amount_minor: 50,
                debt_after_minor: 450,
                balance_after_minor: 1_919,
            },
            AuditEvent::RegisterAnomaly {
                held_wh: 12_400,
                read_wh: 100,
            },
            AuditEvent::Rebaselined {
                reason: RebaselineReason::MeterExchange,
                from_wh: 12_400,
                to_wh: 5,
                meter_serial: "SN-2".into(),
            },
            AuditEvent::EmergencySelected { automatic: true },
            AuditEvent::Archived {
                base_len: 123_456,
                digest: [0xa5; 32],
                entries: 100_000,
            },
            AuditEvent::TariffScheduled {
                tariff_id: 7,
                in_force_at: 1_796_598_000,
                replaces: 3,
                standing_minor_per_day: 30,
            },
            AuditEvent::RelayCommand {
                action: RelayAction::Arm,
                attempt: 2,
            },
            AuditEvent::RelayResult {
                action: RelayAction::Cut,
                observed: RelayState::Closed,
                ok: false,
            },
            AuditEvent::AccountClosed {
                account_no: 1,
                final_wh: 99,
                balance_minor: -5,
                debt_minor: 3,
            },
            AuditEvent::AccountRestored {
                account_no: 1,
                dwelling: "A-1".into(),
                opening_balance_minor: -120,
                debt_minor: 40,
                register_wh: 777,
                last_serial: Some(9),
                restored: SerialSpan::cover([1, 2, 3, 9]),
                statement_at: 1_700_000_000,
            },
        ]
    }

    fn store_with_chain() -> MemStore {
        let store = MemStore::new();
        let mut head = AuditHead::default();
        let mut batch = Batch::new();
        for (i, e) in events().into_iter().enumerate() {
            let (k, v) = head.append(1_700_000_000 + i as u64, "M1", e);
            batch.put(Keyspace::Audit, k, v);
        }
        store.commit(&batch).unwrap();
        store
    }

    #[test]
    fn every_event_round_trips_and_the_chain_verifies() {
        let store = store_with_chain();
        let mut seen = Vec::new();
        let report = walk(&store, |e| {
            seen.push(e.event.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, events());
        let n = events().len() as u64;
        assert_eq!(report.entries, n);
        assert_eq!(AuditHead::load(&store).unwrap().next_seq, n);
        let mut out = Vec::new();
        export(&store, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count() as u64, n);
        assert!(text.contains("\"event\":\"token_applied\""), "{text}");
        assert!(
            text.contains(&format!("\"digest\":\"{}\"", "a5".repeat(32))),
            "{text}"
        );
    }

    #[test]
    fn an_altered_or_removed_entry_is_found() {
        let store = store_with_chain();
        let key = 3u64.to_be_bytes();
        let mut value = store.get(Keyspace::Audit, &key).unwrap().unwrap();
        value[3] ^= 1;
        let mut b = Batch::new();
        b.put(Keyspace::Audit, key.to_vec(), value);
        store.commit(&b).unwrap();
        let e = verify(&store).unwrap_err();
        assert!(
            matches!(e, LedgerError::Audit(AuditError::HashMismatch { seq: 3 })),
            "{e}"
        );

        let store = store_with_chain();
        let mut b = Batch::new();
        b.delete(Keyspace::Audit, 5u64.to_be_bytes().to_vec());
        store.commit(&b).unwrap();
        let e = verify(&store).unwrap_err();
        assert!(
            matches!(
                e,
                LedgerError::Audit(AuditError::Gap {
                    expected: 5,
                    found: 6
                })
            ),
            "{e}"
        );
    }
}
