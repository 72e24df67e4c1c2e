//! The ledger's configuration: tariff, standing charge, emergency and friendly credit, debt recovery,
//! low-credit levels, relay policy and register plausibility.
//!
//! The configuration in force is stored in the ledger's store at every open, so that the CLI (and an
//! auditor) use exactly the rules the daemon charged by.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::calendar::{Calendar, Date, TimeOfDay};
use crate::tariff::{Tariff, TariffError};

/// Emergency credit: an amount the customer may use after the credit runs out, repaid by the next top-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyConfig {
    /// The emergency credit, minor units (0 disables it).
    pub amount_minor: i64,
    /// Select it automatically when the credit runs out (else the customer selects it).
    pub auto_select: bool,
    /// The customer may select it once the balance is at or below this, minor units.
    pub offer_below_minor: i64,
}

/// How outstanding debt (arrears) is recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DebtRecovery {
    /// A share of every top-up, in basis points (2 500 = 25 %), rounded half to even.
    PercentOfTopUp {
        /// Share in basis points, 0..=10 000.
        basis_points: u32,
    },
    /// A fixed amount each local day, taken from the credit.
    FixedPerDay {
        /// Minor units per day.
        amount_minor: i64,
    },
}

/// Hours in which nobody is cut off (the debt grows instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FriendlyConfig {
    /// Daily local windows `[start, end)`; `end` before `start` wraps past midnight.
    #[serde(default)]
    pub hours: Vec<FriendlyWindow>,
    /// All of Saturday and Sunday.
    #[serde(default)]
    pub weekends: bool,
    /// All of every configured holiday.
    #[serde(default)]
    pub holidays: bool,
}

/// One daily friendly window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FriendlyWindow {
    /// Start, local `"HH:MM"`.
    pub start: TimeOfDay,
    /// End (exclusive), local `"HH:MM"`.
    pub end: TimeOfDay,
}

/// How a meter is reconnected after a top-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconnectMode {
    /// Close the relay directly.
    Direct,
    /// Arm the meter; the customer presses its button to close the relay (safer: nobody is surprised by a
    /// live circuit).
    Arm,
}

/// Relay policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Reconnect once available credit (balance plus selected emergency credit) is above this, minor units.
    pub reconnect_threshold_minor: i64,
    /// The reconnect mode for meters whose model is not listed.
    pub reconnect: ReconnectMode,
    /// Reconnect mode per meter model (as in the meter's `model` in the daemon's config).
    #[serde(default)]
    pub reconnect_by_model: BTreeMap<String, ReconnectMode>,
    /// Seconds to wait for the relay state to be read back before a command is sent again.
    pub verify_after_s: u64,
    /// Attempts before an alarm is raised.
    pub max_attempts: u32,
}

/// Register plausibility: what counts as a jump and when a new baseline is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlausibilityConfig {
    /// The largest plausible power of a dwelling, watts.
    pub max_power_w: u64,
    /// Energy tolerated above `max_power_w × interval`, Wh (register resolution, clock skew).
    pub slack_wh: u64,
    /// Consecutive anomalous readings (backwards or jump) after which the reading becomes the baseline.
    pub rebaseline_after: u32,
}

/// Everything the ledger charges and decides by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// This gateway's id (signed into receipts).
    pub gateway_id: String,
    /// ISO 4217 currency of every amount; tokens in another currency are refused.
    pub currency: String,
    /// Local time offset from UTC, minutes east.
    pub utc_offset_minutes: i32,
    /// Public holidays, `"YYYY-MM-DD"`.
    #[serde(default)]
    pub holidays: Vec<Date>,
    /// The energy tariff.
    pub tariff: Tariff,
    /// Standing charge, minor units per local day.
    pub standing_charge_minor_per_day: i64,
    /// Emergency credit.
    pub emergency: EmergencyConfig,
    /// Debt recovery.
    pub debt_recovery: DebtRecovery,
    /// Low-credit warning levels, minor units (a warning when the balance falls below each).
    #[serde(default)]
    pub low_credit_levels_minor: Vec<i64>,
    /// Friendly-credit periods.
    #[serde(default)]
    pub friendly: FriendlyConfig,
    /// Relay policy.
    pub relay: RelayConfig,
    /// Register plausibility.
    pub plausibility: PlausibilityConfig,
}

/// A configuration mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The tariff is unusable.
    #[error("ledger tariff: {0}")]
    Tariff(#[from] TariffError),
    /// A value out of range.
    #[error("ledger config field {field}: {problem}; write {fix}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
        /// What to write instead.
        fix: &'static str,
    },
}

impl LedgerConfig {
    /// Checks every value the engine relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |field, problem: String, fix| {
            Err(ConfigError::Field {
                field,
                problem,
                fix,
            })
        };
        self.tariff.validate()?;
        let gw = self.gateway_id.as_bytes();
        if gw.is_empty() || gw.len() > 64 || !gw.iter().all(u8::is_ascii_graphic) {
            return field(
                "gateway_id",
                format!(
                    "{:?} is not 1 to 64 printable ASCII characters",
                    self.gateway_id
                ),
                "the gateway's id as the head-end knows it",
            );
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return field(
                "currency",
                format!("{:?} is not an ISO 4217 code", self.currency),
                "three upper-case letters such as \"EUR\"",
            );
        }
        if !(-14 * 60..=14 * 60).contains(&self.utc_offset_minutes) {
            return field(
                "utc_offset_minutes",
                format!("{} is beyond ±14 h", self.utc_offset_minutes),
                "minutes east of UTC, e.g. 60 for UTC+1",
            );
        }
        if self.standing_charge_minor_per_day < 0 || self.emergency.amount_minor < 0 {
            return field(
                "standing_charge_minor_per_day / emergency.amount_minor",
                "negative".into(),
                "0 or more minor units",
            );
        }
        match self.debt_recovery {
            DebtRecovery::PercentOfTopUp { basis_points } if basis_points > 10_000 => {
                return field(
                    "debt_recovery.basis_points",
                    format!("{basis_points} is above 100 %"),
                    "0 to 10000 (2500 = 25 %)",
                )
            }
            DebtRecovery::FixedPerDay { amount_minor } if amount_minor < 0 => {
                return field(
                    "debt_recovery.amount_minor",
                    "negative".into(),
                    "0 or more minor units per day",
                )
            }
            _ => {}
        }
        if self.relay.max_attempts == 0 {
            return field("relay.max_attempts", "0".into(), "1 or more (3 is usual)");
        }
        if self.plausibility.rebaseline_after == 0 {
            return field(
                "plausibility.rebaseline_after",
                "0".into(),
                "1 or more consecutive readings (3 is usual)",
            );
        }
        Ok(())
    }

    /// The local calendar of this configuration.
    pub fn calendar(&self) -> Calendar {
        Calendar::new(self.utc_offset_minutes, self.holidays.iter().copied())
    }

    /// The reconnect mode for a meter model.
    pub fn reconnect_mode(&self, model: Option<&str>) -> ReconnectMode {
        model
            .and_then(|m| self.relay.reconnect_by_model.get(m).copied())
            .unwrap_or(self.relay.reconnect)
    }

    /// A reasonable configuration to start from (flat 25 c/kWh, 30 c/day, 5.00 emergency credit, 25 %
    /// debt recovery, friendly nights 18:00–08:00, weekends and holidays, direct reconnect above 1.00).
    pub fn example(gateway_id: &str) -> LedgerConfig {
        LedgerConfig {
            gateway_id: gateway_id.into(),
            currency: "EUR".into(),
            utc_offset_minutes: 60,
            holidays: Vec::new(),
            tariff: Tariff::Flat { rate: 25_000 },
            standing_charge_minor_per_day: 30,
            emergency: EmergencyConfig {
                amount_minor: 500,
                auto_select: false,
                offer_below_minor: 100,
            },
            debt_recovery: DebtRecovery::PercentOfTopUp {
                basis_points: 2_500,
            },
            low_credit_levels_minor: vec![500, 200],
            friendly: FriendlyConfig {
                hours: vec![FriendlyWindow {
                    start: TimeOfDay(18 * 60),
                    end: TimeOfDay(8 * 60),
                }],
                weekends: true,
                holidays: true,
            },
            relay: RelayConfig {
                reconnect_threshold_minor: 100,
                reconnect: ReconnectMode::Direct,
                reconnect_by_model: BTreeMap::new(),
                verify_after_s: 30,
                max_attempts: 3,
            },
            plausibility: PlausibilityConfig {
                max_power_w: 25_000,
                slack_wh: 1_000,
                rebaseline_after: 3,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_validates_and_round_trips_through_json() {
        let c = LedgerConfig::example("gw-1");
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        let back: LedgerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn mistakes_name_the_field() {
        let mut c = LedgerConfig::example("gw-1");
        c.currency = "eur".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("currency"), "{e}");
        let mut c = LedgerConfig::example("gw-1");
        c.debt_recovery = DebtRecovery::PercentOfTopUp {
            basis_points: 12_000,
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("basis_points"));
    }
}
