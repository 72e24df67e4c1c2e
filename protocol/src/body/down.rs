//! Bodies of the messages the head-end sends.

use minicbor::{Decode, Encode};

use crate::body::up::ModePair;
use crate::ids::Tid;

/// An AKA challenge for a meter (TS 33.102): the gateway answers with an [`crate::AkaResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct AkaChallenge {
    /// RAND.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub rand: [u8; 16],
    /// AUTN = SQN⊕AK ‖ AMF ‖ MAC-A.
    #[cbor(n(1), with = "minicbor::bytes")]
    pub autn: [u8; 16],
}

/// The algorithm pairs the head-end allows, in its order of preference, and FRESH for UIA1.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SecurityModeCommand {
    /// Allowed pairs.
    #[n(0)]
    pub allowed: Vec<ModePair>,
    /// FRESH (UIA1's per-context random value).
    #[n(1)]
    pub fresh: u32,
    /// Key lifetime, seconds.
    #[n(2)]
    pub lifetime_s: u64,
}

/// A new TID for the meter the envelope is for.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct TidAssignment {
    /// The TID.
    #[n(0)]
    pub tid: Tid,
    /// End of validity, unix seconds.
    #[n(1)]
    pub expires_at: u64,
}

/// A signed credit token.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct TopUp {
    /// `SignedToken` wire octets (docs/protocol.md, credit tokens).
    #[cbor(n(0), with = "minicbor::bytes")]
    pub token: Vec<u8>,
}

/// What to do with a meter's relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(index_only)]
pub enum RelayAction {
    /// Open (cut the supply).
    #[n(0)]
    Open,
    /// Close (restore the supply) now.
    #[n(1)]
    Close,
    /// Arm: close when the customer presses the meter's button.
    #[n(2)]
    Arm,
}

/// A relay command.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct RelayCommand {
    /// The action.
    #[n(0)]
    pub action: RelayAction,
    /// Why, for the event log (e.g. "disconnection order 42").
    #[n(1)]
    pub reason: Option<String>,
}

/// One rate of a tariff.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct Rate {
    /// Rate id, referenced by the calendar.
    #[n(0)]
    pub id: u8,
    /// Price per kWh in millionths of the minor unit (so 0.1234 cents is 123 400).
    #[n(1)]
    pub price_micro_per_kwh: u64,
}

/// A time-of-use switch: from `start_minute` after local midnight on the days in `days`, `rate` applies.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct Switch {
    /// Days: bit 0 Monday … bit 6 Sunday, bit 7 special days.
    #[n(0)]
    pub days: u8,
    /// Minutes after local midnight, 0..1440.
    #[n(1)]
    pub start_minute: u16,
    /// The rate id.
    #[n(2)]
    pub rate: u8,
}

/// A tariff with its calendar, in force from `effective_from`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct TariffUpdate {
    /// Tariff id.
    #[n(0)]
    pub tariff_id: u32,
    /// In force from, unix seconds.
    #[n(1)]
    pub effective_from: u64,
    /// ISO 4217 code.
    #[n(2)]
    pub currency: String,
    /// Standing charge per day, minor units.
    #[n(3)]
    pub standing_charge_minor_per_day: u64,
    /// The rates.
    #[n(4)]
    pub rates: Vec<Rate>,
    /// The week's switches.
    #[n(5)]
    pub calendar: Vec<Switch>,
    /// Special days (public holidays) as YYYYMMDD.
    #[n(6)]
    pub special_days: Vec<u32>,
    /// UTC offset of local time, minutes.
    #[n(7)]
    pub utc_offset_min: i16,
}

/// The head-end's clock.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct TimeSync {
    /// Unix time, milliseconds, when sent.
    #[n(0)]
    pub unix_ms: u64,
}

/// A configuration value.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ConfigValue {
    /// An integer.
    #[n(0)]
    Int(#[n(0)] i64),
    /// Text.
    #[n(1)]
    Text(#[n(0)] String),
    /// A flag.
    #[n(2)]
    Bool(#[n(0)] bool),
}

/// One setting to change.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct ConfigSetting {
    /// Dotted key, e.g. `relay.friendly_hours`.
    #[n(0)]
    pub key: String,
    /// The new value.
    #[n(1)]
    pub value: ConfigValue,
}

/// Configuration changes, applied all or none.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ConfigChange {
    /// The settings.
    #[n(0)]
    pub settings: Vec<ConfigSetting>,
}

/// The head-end asks for an [`crate::AccountSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct AccountRequest {}

/// The head-end's answer to a [`crate::RestoreRequest`]: a document signed with the head-end's token key
/// (`concentrator_security::signed`) stating the meter's account as the head-end knows it, which the
/// gateway verifies as it verifies a credit token before it charges or accepts tokens again.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct AccountRestore {
    /// The signed statement's wire octets.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub signed: Vec<u8>,
}

/// The head-end has recorded, durably, this anchor of the gateway's audit chain (the length and head
/// an account summary carried): the entries below it are proven to the utility, so the gateway may
/// archive them out of its store (docs/ledger.md *Archiving the audit log*). Gateway scope.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct AnchorRecorded {
    /// Entries in the chain at the anchor.
    #[n(0)]
    pub len: u64,
    /// SHA-256 of the anchor's last entry.
    #[cbor(n(1), with = "minicbor::bytes")]
    pub head: [u8; 32],
}

/// The head-end's order to change a meter's tenancy (`concentrator_security::tenancy::TenancyOrder`,
/// signed with the head-end's token key): the gateway closes the account, answers with a command
/// result and sends a [`crate::SettlementBody`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct TenancyChange {
    /// The signed order's wire octets.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub order: Vec<u8>,
}

/// The head-end asks for a meter's readings over `from..=to` (unix seconds), one interval of
/// `interval_s` apart, because it has none for that window. Meter scope. The gateway answers with a
/// command result (done: the history is queued as [`crate::Backfill`] messages; unsupported: the
/// meter keeps no history, the reason says so) and sends what the meter has stored.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct BackfillRequest {
    /// The first missing interval's time, unix seconds.
    #[n(0)]
    pub from: u64,
    /// The last missing interval's time, unix seconds.
    #[n(1)]
    pub to: u64,
    /// The meter's reading interval, seconds.
    #[n(2)]
    pub interval_s: u32,
}
