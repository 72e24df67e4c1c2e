//! Relay orders from outside the credit rules: the head-end's relay command (0x85) and an installer's
//! relay test. The ledger is the one relay authority, so an order goes through it, never around it:
//!
//! - **open** cuts the supply and holds it off, whatever the credit, until the next close or arm
//!   order; a top-up meanwhile adds credit but does not reconnect (the account shows who holds it);
//! - **close** and **arm** release the hold and ask the credit rules: with credit (or inside friendly
//!   credit, or for a protected dwelling) the supply is reconnected directly (close) or armed for the
//!   customer's button (arm); without, the order is refused with the balance, and the supply stays off.
//!
//! Every order is an audit entry naming who gave it, and its command is read back like every other.

use crate::account::{RelayHold, RelayTarget};
use crate::audit::{AuditEvent, RelayAction};
use crate::ledger::Ledger;
use crate::money::format_minor;
use crate::relay::is_friendly;
use crate::store::Store;
use crate::LedgerError;

/// What was ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayOrder {
    /// Supply off, held off.
    Open,
    /// Supply on, if the credit rules allow.
    Close,
    /// Armed for the customer's button press, if the credit rules allow.
    Arm,
}

/// How an order went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOutcome {
    /// The command was sent to the meter; its read-back follows.
    Commanded(RelayAction),
    /// Refused by the credit rules, for this reason (the supply stays off).
    Refused(String),
}

impl<S: Store> Ledger<S> {
    /// Carries out a relay order for `meter` given by `by`, in one flushed transaction with its audit
    /// entry.
    pub fn order_relay(
        &mut self,
        meter: &str,
        order: RelayOrder,
        by: &str,
        now: u64,
    ) -> Result<OrderOutcome, LedgerError> {
        let ec = self.config().emergency.amount_minor;
        let currency = self.config().currency.clone();
        let mut txn = self.begin();
        let friendly_at_all = |protected| is_friendly(self.config(), now, protected);
        let a = self.stage(&mut txn, meter)?;
        // Set when a meter that is on without credit must be cut by a refused close.
        let mut cut = false;
        let outcome = match order {
            RelayOrder::Open => {
                a.hold = Some(RelayHold {
                    by: by.to_string(),
                    at: now,
                });
                a.relay = RelayTarget::Disconnected;
                OrderOutcome::Commanded(RelayAction::Cut)
            }
            RelayOrder::Close | RelayOrder::Arm => {
                a.hold = None;
                if a.available_minor(ec) > 0 || friendly_at_all(a.protected) {
                    let (target, action) = match order {
                        RelayOrder::Arm => (RelayTarget::Armed, RelayAction::Arm),
                        _ => (RelayTarget::Connected, RelayAction::Reconnect),
                    };
                    a.relay = target;
                    OrderOutcome::Commanded(action)
                } else {
                    cut = a.relay != RelayTarget::Disconnected;
                    a.relay = RelayTarget::Disconnected;
                    OrderOutcome::Refused(format!(
                        "meter {meter} has no credit (balance {} {currency}) outside friendly credit: the supply stays off until a top-up",
                        format_minor(a.balance_minor())
                    ))
                }
            }
        };
        if cut {
            // It was on without credit: the rules cut it now.
            self.command(&mut txn, meter, RelayAction::Cut, 1, now.max(1));
        }
        let (action, held) = match order {
            RelayOrder::Open => (RelayAction::Cut, true),
            RelayOrder::Arm => (RelayAction::Arm, false),
            RelayOrder::Close => (RelayAction::Reconnect, false),
        };
        txn.audit(
            now,
            meter,
            AuditEvent::RelayOrdered {
                action,
                by: by.to_string(),
                held,
            },
        );
        if let OrderOutcome::Commanded(action) = outcome {
            self.command(&mut txn, meter, action, 1, now.max(1));
        }
        self.settle(&mut txn, meter, now)?;
        self.finish(txn, true)?;
        Ok(outcome)
    }
}
