//! A meter's account: what it was opened with, what was applied and charged, and the state derived from it.
//!
//! Credit is derived, never counted down: `balance = opening + Σ tokens − Σ energy − Σ standing − Σ debt
//! recovered`, each sum kept separately so that the audit log can recompute every one of them.

use concentrator_security::restore::SerialSpan;
use serde::{Deserialize, Serialize};

use crate::tariff::BlockUsage;

/// The state of an account, as shown to operators and sent to the head-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    /// The balance is above zero.
    InCredit,
    /// The balance is used up and the selected emergency credit is being used.
    InEmergencyCredit,
    /// Credit and emergency credit are used up, the supply is still on (friendly credit, or the cut is
    /// being carried out).
    Exhausted,
    /// The relay is (to be) open.
    Disconnected,
    /// Topped up; the meter is armed and waits for the customer to press its button.
    ArmedForReconnect,
}

impl AccountState {
    /// Lower-case name with dashes, for tables.
    pub fn name(self) -> &'static str {
        match self {
            AccountState::InCredit => "in-credit",
            AccountState::InEmergencyCredit => "emergency",
            AccountState::Exhausted => "exhausted",
            AccountState::Disconnected => "disconnected",
            AccountState::ArmedForReconnect => "armed",
        }
    }
}

/// The relay state the ledger wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayTarget {
    /// Supply on.
    Connected,
    /// Supply off.
    Disconnected,
    /// Armed: the customer's button press closes it.
    Armed,
}

impl std::fmt::Display for RelayTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RelayTarget::Connected => "closed (supply on)",
            RelayTarget::Disconnected => "open (supply off)",
            RelayTarget::Armed => "armed (open until the customer presses the button)",
        })
    }
}

/// The last token applied to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastTopUp {
    /// Serial.
    pub serial: u64,
    /// Amount, minor units.
    pub amount_minor: i64,
    /// When, unix seconds.
    pub at: u64,
}

/// The last durable register checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// The physical meter's serial, once seen.
    pub meter_serial: Option<String>,
    /// The cumulative register value charged up to, Wh.
    pub wh: u64,
    /// When that value was read, unix seconds.
    pub at: u64,
    /// Consecutive anomalous readings (backwards or implausible jumps) seen since.
    pub anomalies: u32,
}

/// One meter's account (one tenancy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The meter number (as in tokens).
    pub meter_id: String,
    /// Tenancy number, 1 for the first account on the meter.
    pub account_no: u32,
    /// The dwelling supplied.
    pub dwelling: String,
    /// The meter model (selects the reconnect mode).
    pub model: Option<String>,
    /// Never cut off (vulnerable household): friendly credit at all times.
    pub protected: bool,
    /// When the account was opened, unix seconds.
    pub opened_at: u64,
    /// Opening balance, minor units.
    pub opening_balance_minor: i64,
    /// Σ applied token amounts, minor units.
    pub tokens_minor: i64,
    /// Number of tokens applied.
    pub tokens_applied: u64,
    /// Σ energy charges, minor units.
    pub energy_minor: i64,
    /// Σ standing charges, minor units.
    pub standing_minor: i64,
    /// Σ debt recovered, minor units.
    pub recovered_minor: i64,
    /// Energy charge remainder carried to the next checkpoint, micro-units (|carry| ≤ 500 000).
    pub carry_micro: i64,
    /// Outstanding debt (arrears), minor units.
    pub debt_minor: i64,
    /// The highest token serial applied to this meter (carried over a change of tenancy). Serials may be
    /// applied out of order: which ones were applied is in the token records and [`Account::restored`].
    pub last_serial: Option<u64>,
    /// Serials applied before this gateway's store was restored from the head-end (its signed account
    /// statement lists them; this store has no token records for them). Carried over a change of tenancy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restored: Vec<SerialSpan>,
    /// The last token applied.
    pub last_topup: Option<LastTopUp>,
    /// The last register checkpoint.
    pub register: Register,
    /// Emergency credit selected (until the balance is above zero again).
    pub emergency_selected: bool,
    /// The last local day (days since 1970-01-01) a standing charge was taken for.
    pub standing_day: i64,
    /// The last local day a fixed daily debt recovery was taken for.
    pub recovery_day: i64,
    /// Block tariff usage in the current period.
    pub block: BlockUsage,
    /// The relay state wanted.
    pub relay: RelayTarget,
    /// How many low-credit levels the balance is below (warnings already sent).
    pub warned_levels: u32,
    /// The supply is held off by an order (the head-end or an installer), whatever the credit: no top-up
    /// reconnects it until the same authority orders it closed ([`crate::relay_order`]).
    #[serde(default)]
    pub hold: Option<RelayHold>,
}

/// Who holds a meter's supply off, since when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayHold {
    /// Who ordered it ("head-end", "installer alice").
    pub by: String,
    /// When, unix seconds.
    pub at: u64,
}

impl Account {
    /// The balance in minor units; negative when emergency or friendly credit is being used.
    pub fn balance_minor(&self) -> i64 {
        self.opening_balance_minor + self.tokens_minor
            - self.energy_minor
            - self.standing_minor
            - self.recovered_minor
    }

    /// Balance plus the emergency credit, if selected.
    pub fn available_minor(&self, emergency_amount: i64) -> i64 {
        self.balance_minor()
            + if self.emergency_selected {
                emergency_amount
            } else {
                0
            }
    }

    /// The state, derived from the balance, the emergency credit and the relay.
    pub fn state(&self, emergency_amount: i64) -> AccountState {
        match self.relay {
            RelayTarget::Disconnected => AccountState::Disconnected,
            RelayTarget::Armed => AccountState::ArmedForReconnect,
            RelayTarget::Connected if self.balance_minor() > 0 => AccountState::InCredit,
            RelayTarget::Connected if self.available_minor(emergency_amount) > 0 => {
                AccountState::InEmergencyCredit
            }
            RelayTarget::Connected => AccountState::Exhausted,
        }
    }

    /// The debt shown to people: arrears plus any balance below zero.
    pub fn total_debt_minor(&self) -> i64 {
        self.debt_minor + (-self.balance_minor()).max(0)
    }
}

/// Key of a meter's account record.
pub fn account_key(meter_id: &str) -> Vec<u8> {
    meter_id.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Account {
        Account {
            meter_id: "M1".into(),
            account_no: 1,
            dwelling: "A-1".into(),
            model: None,
            protected: false,
            opened_at: 0,
            opening_balance_minor: 1_000,
            tokens_minor: 2_000,
            tokens_applied: 1,
            energy_minor: 2_500,
            standing_minor: 300,
            recovered_minor: 500,
            carry_micro: 0,
            debt_minor: 0,
            last_serial: Some(1),
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
            block: BlockUsage::default(),
            relay: RelayTarget::Connected,
            warned_levels: 0,
            hold: None,
        }
    }

    #[test]
    fn balance_and_state_worked_numbers() {
        // 10.00 opening + 20.00 token − 25.00 energy − 3.00 standing − 5.00 recovered = −3.00
        let mut a = sample();
        assert_eq!(a.balance_minor(), -300);
        assert_eq!(a.total_debt_minor(), 300);
        assert_eq!(a.state(500), AccountState::Exhausted);
        a.emergency_selected = true;
        // −3.00 + 5.00 emergency = 2.00 available
        assert_eq!(a.available_minor(500), 200);
        assert_eq!(a.state(500), AccountState::InEmergencyCredit);
        a.tokens_minor += 301;
        assert_eq!(a.state(500), AccountState::InCredit);
        a.relay = RelayTarget::Armed;
        assert_eq!(a.state(500), AccountState::ArmedForReconnect);
    }
}
