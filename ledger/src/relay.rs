//! Relay policy: when to cut off and reconnect, friendly credit, and the read-back of every command.
//!
//! Rules, applied after every change to an account ([`Ledger::settle`]):
//! - a low-credit warning is raised once per level crossed downwards;
//! - with the supply on and nothing available (balance plus selected emergency credit ≤ 0): select
//!   emergency credit if it is automatic; else, inside a friendly-credit period or for a protected
//!   dwelling, keep the supply on (the balance, and so the debt, keeps growing); else cut off;
//! - with the supply off or armed and available credit above the reconnect threshold: reconnect directly,
//!   or arm the meter for the customer's button press (per meter model);
//! - an armed meter whose credit ran out again outside friendly credit is cut (disarmed).
//!
//! Every command is read back: the daemon reports the relay state with [`Ledger::relay_observed`]; a
//! wrong state or no answer within `verify_after_s` sends the command again, and after `max_attempts` an
//! alarm is raised.

use crate::account::{AccountState, RelayTarget};
use crate::audit::{AuditEvent, RelayAction, RelayState};
use crate::config::{LedgerConfig, ReconnectMode};
use crate::ledger::{Ledger, LedgerEvent, Output, RelayCommand, Txn};
use crate::store::Store;
use crate::LedgerError;

/// A command waiting for its read-back (in memory: after a restart the ledger re-asserts instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRelay {
    /// The command.
    pub action: RelayAction,
    /// Attempt number.
    pub attempt: u32,
    /// When it was issued.
    pub sent_at: u64,
}

/// Whether `at` is inside a friendly-credit period for a dwelling.
pub fn is_friendly(config: &LedgerConfig, at: u64, protected: bool) -> bool {
    if protected {
        return true;
    }
    let cal = config.calendar();
    let local = cal.local(at);
    let f = &config.friendly;
    let day = cal.day_type(local.date);
    if f.weekends
        && matches!(
            day,
            crate::calendar::DayType::Saturday | crate::calendar::DayType::Sunday
        )
    {
        return true;
    }
    if f.holidays && day == crate::calendar::DayType::Holiday {
        return true;
    }
    f.hours.iter().any(|w| {
        let (s, e) = (u32::from(w.start.0) * 60, u32::from(w.end.0) * 60);
        if s <= e {
            (s..e).contains(&local.second)
        } else {
            local.second >= s || local.second < e
        }
    })
}

fn obeyed(action: RelayAction, observed: RelayState) -> bool {
    match action {
        RelayAction::Cut => observed == RelayState::Open,
        RelayAction::Reconnect => observed == RelayState::Closed,
        // A customer may press the button before the read-back.
        RelayAction::Arm => matches!(observed, RelayState::Armed | RelayState::Closed),
    }
}

fn satisfied(target: RelayTarget, observed: RelayState) -> bool {
    matches!(
        (target, observed),
        (RelayTarget::Connected, RelayState::Closed)
            | (RelayTarget::Disconnected, RelayState::Open)
            | (RelayTarget::Armed, RelayState::Armed)
    )
}

fn action_for(target: RelayTarget) -> RelayAction {
    match target {
        RelayTarget::Connected => RelayAction::Reconnect,
        RelayTarget::Disconnected => RelayAction::Cut,
        RelayTarget::Armed => RelayAction::Arm,
    }
}

impl<S: Store> Ledger<S> {
    /// Issues a relay command (logged unless it only re-asserts a stored state at start-up).
    pub(crate) fn command(
        &self,
        txn: &mut Txn,
        meter: &str,
        action: RelayAction,
        attempt: u32,
        now: u64,
    ) {
        if now > 0 {
            txn.audit(now, meter, AuditEvent::RelayCommand { action, attempt });
        }
        txn.relay.push((
            meter.to_string(),
            Some(PendingRelay {
                action,
                attempt,
                sent_at: now,
            }),
        ));
        txn.outputs.push(Output::Relay(RelayCommand {
            meter: meter.to_string(),
            action,
            attempt,
        }));
    }

    /// Applies the policy to a staged account after a change.
    pub(crate) fn settle(&self, txn: &mut Txn, meter: &str, now: u64) -> Result<(), LedgerError> {
        let cfg = &self.config;
        let ec = cfg.emergency.amount_minor;
        let before = self
            .accounts
            .get(meter)
            .map(|a| a.state(ec))
            .unwrap_or(AccountState::InCredit);
        let mut a = self.staged_copy(txn, meter)?;
        let mut levels = cfg.low_credit_levels_minor.clone();
        levels.sort_unstable_by(|x, y| y.cmp(x));
        let below = levels.iter().filter(|&&l| a.balance_minor() < l).count() as u32;
        if below > a.warned_levels {
            for &level in &levels[a.warned_levels as usize..below as usize] {
                txn.outputs.push(Output::Event(LedgerEvent::LowCredit {
                    meter: meter.into(),
                    level_minor: level,
                    balance_minor: a.balance_minor(),
                }));
            }
        }
        a.warned_levels = below;
        let friendly = is_friendly(cfg, now, a.protected);
        let threshold = cfg.relay.reconnect_threshold_minor;
        let mut action = None;
        match a.relay {
            RelayTarget::Connected if a.available_minor(ec) <= 0 => {
                if !a.emergency_selected && ec > 0 && cfg.emergency.auto_select {
                    a.emergency_selected = true;
                    txn.audit(
                        now,
                        meter,
                        AuditEvent::EmergencySelected { automatic: true },
                    );
                }
                if a.available_minor(ec) <= 0 && !friendly {
                    a.relay = RelayTarget::Disconnected;
                    action = Some(RelayAction::Cut);
                }
            }
            RelayTarget::Connected => {}
            // Held off by an order: credit does not reconnect it (crate::relay_order).
            RelayTarget::Disconnected | RelayTarget::Armed if a.hold.is_some() => {}
            RelayTarget::Disconnected | RelayTarget::Armed if a.available_minor(ec) > threshold => {
                match cfg.reconnect_mode(a.model.as_deref()) {
                    ReconnectMode::Direct => {
                        a.relay = RelayTarget::Connected;
                        action = Some(RelayAction::Reconnect);
                    }
                    ReconnectMode::Arm if a.relay == RelayTarget::Disconnected => {
                        a.relay = RelayTarget::Armed;
                        action = Some(RelayAction::Arm);
                    }
                    ReconnectMode::Arm => {}
                }
            }
            RelayTarget::Armed if a.available_minor(ec) <= 0 && !friendly => {
                a.relay = RelayTarget::Disconnected;
                action = Some(RelayAction::Cut);
            }
            RelayTarget::Disconnected | RelayTarget::Armed => {}
        }
        let after = a.state(ec);
        let last_reported = txn
            .outputs
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::Event(LedgerEvent::StateChanged { meter: m, to, .. }) if m == meter => {
                    Some(*to)
                }
                _ => None,
            })
            .unwrap_or(before);
        if after != last_reported {
            txn.outputs.push(Output::Event(LedgerEvent::StateChanged {
                meter: meter.into(),
                from: last_reported,
                to: after,
            }));
            if after == AccountState::Exhausted {
                txn.outputs.push(Output::Event(LedgerEvent::FriendlyCredit {
                    meter: meter.into(),
                    balance_minor: a.balance_minor(),
                }));
            }
        }
        txn.touched.insert(meter.to_string(), a);
        if let Some(action) = action {
            self.command(txn, meter, action, 1, now);
        }
        Ok(())
    }

    /// The relay state read back from a meter (after a command, or on any routine read).
    pub fn relay_observed(
        &mut self,
        meter: &str,
        observed: RelayState,
        now: u64,
    ) -> Result<(), LedgerError> {
        let target = self
            .accounts
            .get(meter)
            .ok_or_else(|| LedgerError::UnknownMeter {
                meter: meter.into(),
            })?
            .relay;
        let max = self.config.relay.max_attempts;
        let mut txn = self.begin();
        match self.pending.get(meter).copied() {
            Some(p) => {
                let ok = obeyed(p.action, observed);
                txn.audit(
                    now,
                    meter,
                    AuditEvent::RelayResult {
                        action: p.action,
                        observed,
                        ok,
                    },
                );
                if ok {
                    txn.relay.push((meter.into(), None));
                    if p.action == RelayAction::Arm && observed == RelayState::Closed {
                        self.stage(&mut txn, meter)?.relay = RelayTarget::Connected;
                        self.settle(&mut txn, meter, now)?;
                    }
                } else if p.attempt < max {
                    self.command(&mut txn, meter, p.action, p.attempt + 1, now.max(1));
                } else {
                    txn.relay.push((meter.into(), None));
                    txn.outputs.push(Output::Event(LedgerEvent::RelayAlarm {
                        meter: meter.into(),
                        action: p.action,
                        attempts: p.attempt,
                        observed: Some(observed),
                    }));
                }
            }
            None if target == RelayTarget::Armed && observed == RelayState::Closed => {
                // The customer pressed the button.
                txn.audit(
                    now,
                    meter,
                    AuditEvent::RelayResult {
                        action: RelayAction::Arm,
                        observed,
                        ok: true,
                    },
                );
                self.stage(&mut txn, meter)?.relay = RelayTarget::Connected;
                self.settle(&mut txn, meter, now)?;
            }
            None if !satisfied(target, observed) => {
                txn.outputs.push(Output::Event(LedgerEvent::RelayMismatch {
                    meter: meter.into(),
                    target,
                    observed,
                }));
                self.command(&mut txn, meter, action_for(target), 1, now.max(1));
            }
            None => {}
        }
        self.finish(txn, false)
    }

    /// Commands not confirmed within `verify_after_s` are sent again, or raise an alarm.
    pub(crate) fn relay_timeouts(&self, txn: &mut Txn, now: u64) {
        let cfg = &self.config.relay;
        for (meter, p) in &self.pending {
            if txn.relay.iter().any(|(m, _)| m == meter) {
                continue;
            }
            if p.sent_at == 0 {
                // Re-asserted when the ledger opened, before the clock ran: its wait starts now, so a
                // start never counts attempts (and raises alarms) before the buses are even open.
                txn.relay.push((
                    meter.clone(),
                    Some(PendingRelay {
                        sent_at: now.max(1),
                        ..*p
                    }),
                ));
                continue;
            }
            if now < p.sent_at.saturating_add(cfg.verify_after_s) {
                continue;
            }
            if p.attempt < cfg.max_attempts {
                self.command(txn, meter, p.action, p.attempt + 1, now.max(1));
            } else {
                txn.relay.push((meter.clone(), None));
                txn.outputs.push(Output::Event(LedgerEvent::RelayAlarm {
                    meter: meter.clone(),
                    action: p.action,
                    attempts: p.attempt,
                    observed: None,
                }));
            }
        }
    }
}
