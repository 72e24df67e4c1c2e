//! Bodies of the messages the gateway sends.

use minicbor::{Decode, Encode};

use crate::ids::MessageId;

/// What a reading measures. Codes are stable; a receiver keeps unknown codes as [`Quantity::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantity {
    /// Cumulative active energy imported, Wh (code 1).
    EnergyImportWh,
    /// Cumulative active energy exported, Wh (code 2).
    EnergyExportWh,
    /// Voltage, V (code 3).
    Voltage,
    /// Current, A (code 4).
    Current,
    /// Active power, W (code 5).
    PowerW,
    /// Frequency, Hz (code 6).
    FrequencyHz,
    /// Remaining credit, minor currency units (code 7).
    CreditMinor,
    /// A code this end does not know.
    Other(u16),
}

impl Quantity {
    /// The wire code.
    pub fn code(self) -> u16 {
        match self {
            Quantity::EnergyImportWh => 1,
            Quantity::EnergyExportWh => 2,
            Quantity::Voltage => 3,
            Quantity::Current => 4,
            Quantity::PowerW => 5,
            Quantity::FrequencyHz => 6,
            Quantity::CreditMinor => 7,
            Quantity::Other(c) => c,
        }
    }

    /// From a wire code.
    pub fn from_code(c: u16) -> Self {
        match c {
            1 => Quantity::EnergyImportWh,
            2 => Quantity::EnergyExportWh,
            3 => Quantity::Voltage,
            4 => Quantity::Current,
            5 => Quantity::PowerW,
            6 => Quantity::FrequencyHz,
            7 => Quantity::CreditMinor,
            c => Quantity::Other(c),
        }
    }
}

impl<C> Encode<C> for Quantity {
    fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
        _: &mut C,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.u16(self.code())?;
        Ok(())
    }
}

impl<'b, C> Decode<'b, C> for Quantity {
    fn decode(d: &mut minicbor::Decoder<'b>, _: &mut C) -> Result<Self, minicbor::decode::Error> {
        Ok(Quantity::from_code(d.u16()?))
    }
}

/// One reading: `value × 10^exponent` of `quantity` at `at`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Reading {
    /// When the meter was read, unix seconds.
    #[n(0)]
    pub at: u64,
    /// What was read.
    #[n(1)]
    pub quantity: Quantity,
    /// The mantissa.
    #[n(2)]
    pub value: i64,
    /// The decimal exponent (e.g. -1 for tenths).
    #[n(3)]
    pub exponent: i8,
}

/// A batch of readings of one meter, in the order they were taken.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Readings {
    /// The readings.
    #[n(0)]
    pub readings: Vec<Reading>,
}

/// Readings read back from the meter's own stored history for a window the head-end asked for
/// ([`crate::BackfillRequest`]): each interval's readings stamped with the interval's end as the meter
/// stored it. The head-end stores a (meter, time) it has already once, so a resend or an overlap with
/// live readings is never counted twice.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Backfill {
    /// The backfill request's message id.
    #[n(0)]
    pub request: MessageId,
    /// The readings, oldest first.
    #[n(1)]
    pub readings: Vec<Reading>,
    /// Whether this is the last message for the request (a long window goes up in several).
    #[n(2)]
    pub last: bool,
}

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(index_only)]
pub enum Severity {
    /// For the record.
    #[n(0)]
    Info,
    /// Worth a look.
    #[n(1)]
    Warning,
    /// Needs action (tamper, supply cut, register anomaly); drained before everything else.
    #[n(2)]
    Alarm,
}

/// A meter or gateway event.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Event {
    /// When it happened, unix seconds.
    #[n(0)]
    pub at: u64,
    /// The event code (table in docs/protocol.md; unknown codes are kept and shown as numbers).
    #[n(1)]
    pub code: u16,
    /// How serious.
    #[n(2)]
    pub severity: Severity,
    /// Free text for people, at most 256 characters.
    #[n(3)]
    pub detail: Option<String>,
    /// Values the code defines (e.g. the register before and after a jump).
    #[n(4)]
    pub values: Vec<i64>,
}

/// Event codes this version defines.
pub mod event_code {
    /// The relay opened (supply cut); values: [reason].
    pub const RELAY_OPENED: u16 = 1;
    /// The relay closed (supply restored).
    pub const RELAY_CLOSED: u16 = 2;
    /// The relay is armed: it closes when the customer presses the button.
    pub const RELAY_ARMED: u16 = 3;
    /// Credit fell below the low-credit threshold; values: [credit minor units].
    pub const LOW_CREDIT: u16 = 10;
    /// Emergency credit taken.
    pub const EMERGENCY_CREDIT: u16 = 11;
    /// A top-up token was refused; detail: the reason.
    pub const TOKEN_REFUSED: u16 = 12;
    /// The energy register went backwards or jumped; values: [before, after].
    pub const REGISTER_ANOMALY: u16 = 20;
    /// A different meter answers at this address.
    pub const METER_REPLACED: u16 = 21;
    /// Cover or terminal tamper.
    pub const TAMPER: u16 = 22;
    /// The meter stopped answering.
    pub const METER_OFFLINE: u16 = 30;
    /// The meter answers again.
    pub const METER_ONLINE: u16 = 31;
    /// A downlink message failed verification; detail: the reason.
    pub const VERIFICATION_FAILED: u16 = 40;
    /// The modem needs attention (staged recovery failed); detail: the last error.
    pub const MODEM_NEEDS_ATTENTION: u16 = 50;
    /// The outbox dropped routine readings because it was full; values: [dropped count].
    pub const READINGS_DROPPED: u16 = 51;
    /// The modem supervisor took a recovery step; values: [stage: 1 re-dial, 2 modem reset by AT,
    /// 3 power cycle through the power-key line]; detail: what the check found.
    pub const MODEM_RECOVERY: u16 = 52;
    /// The modem and its data link are healthy again after recovery; values: [recovery steps since the
    /// daemon started].
    pub const MODEM_RECOVERED: u16 = 53;
    /// Last gasp: the supply failed and the gateway runs on its reserve, stopping cleanly; values: [when
    /// the supply failed, unix s]. Sent ahead of everything.
    pub const LAST_GASP: u16 = 54;
    /// The supply is back after an outage that stopped the gateway; values: [when it failed, when the
    /// gateway found it back, unix s].
    pub const POWER_RESTORED: u16 = 55;
    /// The meter's clock is further from the gateway's than `[time] drift_limit_s`; values: [drift,
    /// seconds, meter minus gateway (positive: the meter is ahead), limit seconds].
    pub const METER_CLOCK_DRIFT: u16 = 60;
    /// The meter did not take the gateway's time: its clock was still off after a time sync; values:
    /// [drift after the sync, seconds, meter minus gateway]; detail: what was tried.
    pub const METER_CLOCK_REFUSED: u16 = 61;
    /// Block balance: a group's feeder (master) meter measured more energy than its dwellings' meters
    /// together plus the allowed losses, for `[balance] intervals` intervals in a row (theft or a
    /// fault); gateway scope, detail `group NAME: ...`; values: [interval start, interval end (unix s),
    /// feeder Wh, dwellings' sum Wh, difference Wh (feeder minus sum), allowed Wh] of the last interval.
    pub const BLOCK_IMBALANCE: u16 = 70;
    /// Block balance: the group is back within the allowance; same detail and values as 70, of the
    /// first interval back within.
    pub const BLOCK_BALANCED: u16 = 71;
    /// The gateway: the monthly SMS budget (`[modem] sms_per_month`) is used up; urgent events wait for
    /// the data link (values: SMS sent this month, the budget). Queued once a month.
    pub const SMS_BUDGET_EXHAUSTED: u16 = 80;
    /// The gateway: the monthly data budget (`[modem] data_mib_per_month`) is used up; routine readings
    /// are dropped until the month ends (values: bytes used, the budget in bytes). Queued once a month.
    pub const DATA_BUDGET_EXHAUSTED: u16 = 81;
}

/// The signed receipt of an applied token.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ReceiptBody {
    /// `SignedDocument` wire octets (docs/protocol.md, signed container).
    #[cbor(n(0), with = "minicbor::bytes")]
    pub signed: Vec<u8>,
}

/// A meter's account, for reconciliation with the head-end's books.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct AccountSummary {
    /// As of, unix seconds.
    #[n(0)]
    pub at: u64,
    /// Credit, minor units (negative while emergency credit is in use).
    #[n(1)]
    pub balance_minor: i64,
    /// ISO 4217 code.
    #[n(2)]
    pub currency: String,
    /// Serial of the last applied token, if any.
    #[n(3)]
    pub last_token_serial: Option<u64>,
    /// Cumulative import register, Wh, at the last checkpoint.
    #[n(4)]
    pub register_wh: u64,
    /// Tariff in force.
    #[n(5)]
    pub tariff_id: u32,
    /// Sum of charges since enrolment, minor units.
    #[n(6)]
    pub charged_minor: u64,
    /// Relay state: true when closed (supply on).
    #[n(7)]
    pub relay_closed: bool,
    /// Every token serial applied to this meter, as inclusive ranges in increasing order (absent from
    /// gateways older than this field: then only `last_token_serial` is known).
    #[n(8)]
    pub applied: Option<Vec<SerialRange>>,
    /// The head of the gateway's audit chain when the summary was made (the head-end records it as
    /// the chain's outside anchor).
    #[n(9)]
    pub audit: Option<AuditAnchor>,
}

/// An inclusive range of token serials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(array)]
pub struct SerialRange {
    /// The first serial in the range.
    #[n(0)]
    pub first: u64,
    /// The last serial in the range (≥ `first`).
    #[n(1)]
    pub last: u64,
}

impl SerialRange {
    /// The ranges covering `serials` (any order, duplicates allowed), in increasing order.
    pub fn cover(serials: impl IntoIterator<Item = u64>) -> Vec<SerialRange> {
        let mut v: Vec<u64> = serials.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        let mut out: Vec<SerialRange> = Vec::new();
        for s in v {
            match out.last_mut() {
                Some(r) if r.last.checked_add(1) == Some(s) => r.last = s,
                _ => out.push(SerialRange { first: s, last: s }),
            }
        }
        out
    }

    /// Whether `serial` is in one of `ranges`.
    pub fn contains(ranges: &[SerialRange], serial: u64) -> bool {
        ranges.iter().any(|r| r.first <= serial && serial <= r.last)
    }
}

/// Where an audit chain stood: its length and the hash of its last entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(map)]
pub struct AuditAnchor {
    /// Entries in the chain (the sequence number of the next entry).
    #[n(0)]
    pub len: u64,
    /// SHA-256 of the last entry (all zero for an empty chain).
    #[cbor(n(1), with = "minicbor::bytes")]
    pub head: [u8; 32],
}

/// The gateway asks the head-end to restore a meter's account: its store holds no state for it (a new
/// store after an SD card failure or a re-image, or a meter moved here). Until the answer
/// ([`crate::AccountRestore`]) the gateway neither charges the meter nor accepts tokens for it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct RestoreRequest {
    /// When asked, unix seconds.
    #[n(0)]
    pub at: u64,
    /// The meter's cumulative import register now, Wh, when a reading was taken.
    #[n(1)]
    pub register_wh: Option<u64>,
}

/// A meter asks for AKA; its identity is concealed (`concentrator_security::suci`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Attach {
    /// Concealment profile: 1 A (X25519), 2 B (P-256).
    #[n(0)]
    pub profile: u8,
    /// The home network public key id the gateway used.
    #[n(1)]
    pub key_id: u8,
    /// The scheme output.
    #[cbor(n(2), with = "minicbor::bytes")]
    pub concealed: Vec<u8>,
}

/// The gateway's answer to an [`crate::AkaChallenge`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum AkaResult {
    /// RES (4 to 16 octets).
    #[n(0)]
    Res(#[cbor(n(0), with = "minicbor::bytes")] Vec<u8>),
    /// SQN out of range: AUTS (14 octets) for resynchronisation.
    #[n(1)]
    SyncFailure(#[cbor(n(0), with = "minicbor::bytes")] Vec<u8>),
    /// AUTN's MAC did not verify.
    #[n(2)]
    MacFailure,
}

/// Answer to an AKA challenge.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct AkaResponse {
    /// The RAND of the challenge answered.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub rand: [u8; 16],
    /// The result.
    #[n(1)]
    pub result: AkaResult,
}

/// An integrity and ciphering pair, by the envelope's algorithm ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(array)]
pub struct ModePair {
    /// 1 UIA1, 2 128-EIA2.
    #[n(0)]
    pub integrity: u8,
    /// 0 none, 1 UEA1, 2 128-EEA2.
    #[n(1)]
    pub ciphering: u8,
}

/// The security mode the gateway chose from the command's list.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SecurityModeComplete {
    /// The chosen pair.
    #[n(0)]
    pub chosen: ModePair,
}

/// The outcome of a downlink command.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct CommandResult {
    /// The command's message id.
    #[n(0)]
    pub command: MessageId,
    /// 0 done; otherwise an error code (table in docs/protocol.md).
    #[n(1)]
    pub code: u16,
    /// The reason, for people.
    #[n(2)]
    pub reason: Option<String>,
}

/// Command result codes.
pub mod result_code {
    /// Carried out.
    pub const DONE: u16 = 0;
    /// Already carried out earlier (a repeated command is answered, never executed again).
    pub const ALREADY_DONE: u16 = 1;
    /// The envelope failed a check (MAC, COUNT, time window, direction, algorithms).
    pub const VERIFICATION_FAILED: u16 = 10;
    /// The frame did not decode or does not fit its topic.
    pub const MALFORMED: u16 = 11;
    /// The token was refused (signature, meter, serial, expiry); reason says which.
    pub const TOKEN_REFUSED: u16 = 20;
    /// The meter did not carry out the command (offline, device exception). Temporary: the same command
    /// (same id) is executed again when it is sent again.
    pub const METER_FAILED: u16 = 21;
    /// The command is not supported by this gateway or meter.
    pub const UNSUPPORTED: u16 = 22;
    /// A parameter is out of range.
    pub const INVALID: u16 = 23;
    /// The gateway cannot carry it out now (no account until the meter's first reading, the account is
    /// being restored, the store is busy or failed). Temporary, like [`METER_FAILED`].
    pub const TRY_LATER: u16 = 24;
    /// Refused by the gateway's rules, for a reason that holds until something else changes (a relay
    /// close for a meter without credit: the ledger keeps it cut); reason says why. Final.
    pub const REFUSED: u16 = 25;

    /// Whether `code` is a final outcome (done, or refused for a reason that will not change), which
    /// the gateway remembers under the command's id; a temporary outcome is not remembered, so a resend
    /// with the same id is executed again.
    pub fn is_final(code: u16) -> bool {
        !matches!(code, METER_FAILED | TRY_LATER)
    }
}

/// Acknowledges messages by id (either direction).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Ack {
    /// The ids acknowledged.
    #[n(0)]
    pub ids: Vec<MessageId>,
}

/// The modem's state as reported in the birth message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
#[cbor(map)]
pub struct ModemReport {
    /// Signal, dBm (absent when unknown).
    #[n(0)]
    pub rssi_dbm: Option<i16>,
    /// Operator name.
    #[n(1)]
    pub operator: Option<String>,
    /// Access technology (e.g. "UTRAN", "E-UTRAN").
    #[n(2)]
    pub technology: Option<String>,
    /// ICCID of the SIM.
    #[n(3)]
    pub iccid: Option<String>,
    /// Recoveries since start.
    #[n(4)]
    pub recoveries: u32,
}

/// One meter in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct InventoryMeter {
    /// Its TID, absent while it has none.
    #[n(0)]
    pub tid: Option<crate::Tid>,
    /// Driver model (e.g. "dlt645-generic").
    #[n(1)]
    pub model: String,
    /// Online on its bus.
    #[n(2)]
    pub online: bool,
}

/// Retained on the birth topic when the gateway connects.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Birth {
    /// Software version.
    #[n(0)]
    pub software: String,
    /// When the daemon started, unix seconds.
    #[n(1)]
    pub started_at: u64,
    /// Connection number since start (1 for the first).
    #[n(2)]
    pub session: u32,
    /// The modem.
    #[n(3)]
    pub modem: ModemReport,
    /// The meters.
    #[n(4)]
    pub meters: Vec<InventoryMeter>,
    /// Messages waiting in the outbox.
    #[n(5)]
    pub outbox_len: u64,
}

/// The last will, retained on the birth topic's sibling by the broker.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Death {
    /// The connection number of the birth it ends.
    #[n(0)]
    pub session: u32,
}

/// The gateway's signed settlement of an account it closed on a change of tenancy
/// (`concentrator_security::tenancy::SettlementDocument`, signed with the gateway's device key as
/// receipts are): the credit to refund or the debt to bill, the closing register and audit head.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SettlementBody {
    /// `SignedDocument` wire octets.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub signed: Vec<u8>,
}
