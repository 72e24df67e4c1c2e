//! Charging: register readings to energy charges, and the daily work of [`Ledger::tick`] (standing
//! charges, fixed daily debt recovery, friendly-credit transitions, relay retries).
//!
//! Register rules: a reading below the checkpoint (backwards) or further above it than the plausible
//! maximum (`max_power_w × interval + slack_wh`) is an anomaly: it is logged, the baseline is held and
//! nothing is charged. After `rebaseline_after` anomalous readings in a row the reading becomes the new
//! baseline, still without a charge. A reading from a different physical meter serial (meter exchange)
//! takes a new baseline at once. None of them ever produces a negative charge.

use crate::account::Account;
use crate::audit::{AuditEvent, RebaselineReason};
use crate::config::DebtRecovery;
use crate::ledger::{Ledger, LedgerEvent, Output, Txn};
use crate::money::charge_with_carry;
use crate::store::Store;
use crate::LedgerError;

/// One register reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The meter number (account).
    pub meter: String,
    /// The physical meter's serial as the driver reads it.
    pub meter_serial: String,
    /// The cumulative energy register, Wh.
    pub register_wh: u64,
    /// When it was read, unix seconds.
    pub at: u64,
}

impl<S: Store> Ledger<S> {
    /// Charges the consumption since the last checkpoint of one meter. Committed (not flushed: a
    /// checkpoint lost in a crash is charged again from the register after restart).
    pub fn on_register(
        &mut self,
        meter: &str,
        meter_serial: &str,
        register_wh: u64,
        at: u64,
    ) -> Result<(), LedgerError> {
        self.on_readings(&[Reading {
            meter: meter.into(),
            meter_serial: meter_serial.into(),
            register_wh,
            at,
        }])
    }

    /// Charges several readings in one commit (a bus cycle). An unknown meter fails the whole batch,
    /// which then changes nothing.
    pub fn on_readings(&mut self, readings: &[Reading]) -> Result<(), LedgerError> {
        let mut txn = self.begin();
        for r in readings {
            self.charge_reading(&mut txn, r)?;
        }
        self.finish(txn, false)
    }

    pub(crate) fn staged_copy(&self, txn: &mut Txn, meter: &str) -> Result<Account, LedgerError> {
        Ok(self.stage(txn, meter)?.clone())
    }

    fn charge_reading(&self, txn: &mut Txn, r: &Reading) -> Result<(), LedgerError> {
        let current = txn
            .touched
            .get(&r.meter)
            .or_else(|| self.accounts.get(&r.meter))
            .ok_or_else(|| LedgerError::UnknownMeter {
                meter: r.meter.clone(),
            })?;
        let same_serial = current.register.meter_serial.as_deref() == Some(&r.meter_serial);
        if same_serial && current.register.wh == r.register_wh && current.register.anomalies == 0 {
            return Ok(());
        }
        let mut a = self.staged_copy(txn, &r.meter)?;
        let held = a.register.wh;
        match &a.register.meter_serial {
            None => a.register.meter_serial = Some(r.meter_serial.clone()),
            Some(s) if *s != r.meter_serial => {
                self.rebaseline(txn, &mut a, RebaselineReason::MeterExchange, r);
                txn.touched.insert(r.meter.clone(), a);
                return Ok(());
            }
            Some(_) => {}
        }
        let p = &self.config.plausibility;
        let dt = r.at.saturating_sub(a.register.at);
        let limit = p
            .max_power_w
            .saturating_mul(dt)
            .checked_div(3_600)
            .unwrap_or(0)
            .saturating_add(p.slack_wh);
        if r.register_wh < held || r.register_wh - held > limit {
            a.register.anomalies += 1;
            txn.audit(
                r.at,
                &r.meter,
                AuditEvent::RegisterAnomaly {
                    held_wh: held,
                    read_wh: r.register_wh,
                },
            );
            txn.outputs
                .push(Output::Event(LedgerEvent::RegisterAnomaly {
                    meter: r.meter.clone(),
                    held_wh: held,
                    read_wh: r.register_wh,
                }));
            if a.register.anomalies >= p.rebaseline_after {
                let reason = if r.register_wh < held {
                    RebaselineReason::Backwards
                } else {
                    RebaselineReason::Jump
                };
                self.rebaseline(txn, &mut a, reason, r);
            }
            txn.touched.insert(r.meter.clone(), a);
            return Ok(());
        }
        a.register.anomalies = 0;
        let delta = r.register_wh - held;
        if delta > 0 {
            let micro = self.charge_energy(a.register.at, r.at, delta, &mut a.block);
            let (amount, carry) = charge_with_carry(a.carry_micro, micro);
            a.carry_micro = carry;
            a.energy_minor += amount;
            txn.audit(
                r.at,
                &r.meter,
                AuditEvent::Charge {
                    from_wh: held,
                    to_wh: r.register_wh,
                    micro: i64::try_from(micro).unwrap_or(i64::MAX),
                    amount_minor: amount,
                    balance_after_minor: a.balance_minor(),
                },
            );
            a.register.wh = r.register_wh;
            a.register.at = r.at.max(a.register.at);
        }
        txn.touched.insert(r.meter.clone(), a);
        self.settle(txn, &r.meter, r.at)
    }

    fn rebaseline(&self, txn: &mut Txn, a: &mut Account, reason: RebaselineReason, r: &Reading) {
        txn.audit(
            r.at,
            &r.meter,
            AuditEvent::Rebaselined {
                reason,
                from_wh: a.register.wh,
                to_wh: r.register_wh,
                meter_serial: r.meter_serial.clone(),
            },
        );
        txn.outputs.push(Output::Event(LedgerEvent::Rebaselined {
            meter: r.meter.clone(),
            reason,
            from_wh: a.register.wh,
            to_wh: r.register_wh,
        }));
        a.register = crate::account::Register {
            meter_serial: Some(r.meter_serial.clone()),
            wh: r.register_wh,
            at: r.at,
            anomalies: 0,
        };
    }

    /// The clock: standing charges for each new local day, fixed daily debt recovery, cut-offs when a
    /// friendly-credit period ends, and relay commands that were not confirmed in time. Committed, not
    /// flushed (all of it is derived again from the stored day counters after a crash).
    pub fn tick(&mut self, now: u64) -> Result<(), LedgerError> {
        let today = self.calendar.local(now).date.0;
        let ec = self.config.emergency.amount_minor;
        let fixed = match self.config.debt_recovery {
            DebtRecovery::FixedPerDay { amount_minor } => Some(amount_minor),
            DebtRecovery::PercentOfTopUp { .. } => None,
        };
        let due: Vec<String> = self
            .accounts
            .iter()
            .filter(|(_, a)| {
                a.standing_day < today
                    || (fixed.is_some() && a.recovery_day < today)
                    || a.available_minor(ec) <= 0
                    || a.relay != crate::account::RelayTarget::Connected
            })
            .map(|(m, _)| m.clone())
            .collect();
        let mut txn = self.begin();
        for meter in &due {
            let mut a = self.staged_copy(&mut txn, meter)?;
            while a.standing_day < today {
                a.standing_day += 1;
                let midnight = self
                    .calendar
                    .midnight(crate::calendar::Date(a.standing_day));
                let standing = self.standing_charge_at(u64::try_from(midnight).unwrap_or(0));
                if standing > 0 {
                    a.standing_minor += standing;
                    txn.audit(
                        now,
                        meter,
                        AuditEvent::StandingCharge {
                            day: a.standing_day,
                            amount_minor: standing,
                            balance_after_minor: a.balance_minor(),
                        },
                    );
                }
            }
            if let Some(per_day) = fixed {
                while a.recovery_day < today {
                    a.recovery_day += 1;
                    // Taken only from credit: recovery never pushes a customer towards a cut-off.
                    let take = per_day.min(a.debt_minor);
                    if take > 0 && a.balance_minor() >= take {
                        a.recovered_minor += take;
                        a.debt_minor -= take;
                        txn.audit(
                            now,
                            meter,
                            AuditEvent::DebtRecovered {
                                amount_minor: take,
                                debt_after_minor: a.debt_minor,
                                balance_after_minor: a.balance_minor(),
                            },
                        );
                    }
                }
            }
            txn.touched.insert(meter.clone(), a);
            self.settle(&mut txn, meter, now)?;
        }
        self.relay_timeouts(&mut txn, now);
        self.finish(txn, false)
    }

    /// The customer selects emergency credit (meter button, in-home display). Flushed before it returns.
    pub fn select_emergency_credit(&mut self, meter: &str, now: u64) -> Result<(), LedgerError> {
        let a = self
            .accounts
            .get(meter)
            .ok_or_else(|| LedgerError::UnknownMeter {
                meter: meter.into(),
            })?;
        let e = &self.config.emergency;
        let refuse = |reason: String| LedgerError::EmergencyRefused {
            meter: meter.into(),
            reason,
        };
        if e.amount_minor <= 0 {
            return Err(refuse(
                "emergency credit is disabled in the configuration".into(),
            ));
        }
        if a.emergency_selected {
            return Err(refuse("it is already selected".into()));
        }
        if a.balance_minor() > e.offer_below_minor {
            return Err(refuse(format!(
                "the balance {} is above the offer level {}; it is offered only when credit is nearly used up",
                a.balance_minor(),
                e.offer_below_minor
            )));
        }
        let mut txn = self.begin();
        self.stage(&mut txn, meter)?.emergency_selected = true;
        txn.audit(
            now,
            meter,
            AuditEvent::EmergencySelected { automatic: false },
        );
        self.settle(&mut txn, meter, now)?;
        self.finish(txn, true)
    }
}
