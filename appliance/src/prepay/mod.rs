//! Prepayment in the daemon: the ledger (concentrator-ledger, on sled) runs on its own thread, fed
//! through a channel by the bus workers, so a bus never waits for a store flush.
//!
//! - Every routine poll's `EnergyImportTotal` goes to the ledger thread; a meter's register is committed
//!   as a charge checkpoint once per `checkpoint_s` (the first reading after a start at once, which
//!   charges whatever was consumed while the daemon was down), and at every poll while the meter is
//!   close to a cut-off (balance below the highest low-credit level, supply on, not protected). Charges
//!   derive from the meter's cumulative register, so the interval changes only how often the store is
//!   written, never the energy charged.
//! - A meter without an account gets one at its first reading (the register then is the baseline), with
//!   its `opening_balance_minor` and `protected` flag; a changed `protected` flag is applied at start.
//!   With `[ledger] restore = "headend"` (the default with `[uplink]`) it is restored from the head-end
//!   instead ([`ToLedger::Restore`]): until then it is not charged and takes no tokens (`restoring.rs`).
//! - `tick` runs every second (standing charges, friendly-credit ends, relay retries).
//! - Relay commands go through the meter's bus scheduler and are read back ([`relay`]).
//! - Tokens arrive through the inbox directory ([`inbox`]) and, with `[uplink]`, as top-up commands from
//!   the head-end ([`ToLedger::Token`], answered on a channel once the store has flushed them).
//! - Events are logged and, with `[uplink]`, handed to [`LedgerReports`] (the uplink's outbox); the
//!   status board shows every account.

mod archiving;
pub mod inbox;
pub mod relay;
mod restoring;
mod service;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use concentrator_ledger::{Ledger, LedgerEvent, RelayOrder, RelayState, SledStore, TopUpReceipt};
use concentrator_plugin_host::{Quantity, Reading, Unit, Value};

use crate::config::{Config, LedgerSetup};
use crate::scheduler::ReadingSink;
use crate::status::StatusBoard;

pub use archiving::AnchorReply;
pub use inbox::TokenInbox;
pub use relay::{Place, SchedulerHandles};

/// A meter with an account, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepaidMeter {
    /// The meter number (`meter_id`, else the address).
    pub meter_id: String,
    /// Where it is.
    pub place: Place,
    /// The dwelling.
    pub dwelling: String,
    /// The model (for the reconnect mode).
    pub model: Option<String>,
    /// Protected dwelling.
    pub protected: bool,
    /// Opening balance for a new account.
    pub opening_balance_minor: i64,
}

/// A register read by a bus worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRead {
    /// The bus.
    pub bus: String,
    /// The meter's address as written.
    pub address: String,
    /// The cumulative imported energy, Wh.
    pub wh: u64,
    /// When, unix seconds.
    pub at: u64,
}

/// What other threads send the ledger thread.
#[derive(Debug)]
pub enum ToLedger {
    /// A register read by a bus worker.
    Reading(RegisterRead),
    /// A credit token for a meter (a top-up command from the head-end).
    Token(TokenRequest),
    /// The head-end's account request (0x8A) for a meter: answered with its summary, `None` when the
    /// meter has no account (yet).
    Account {
        /// The meter number.
        meter: String,
        /// Gets the summary.
        reply: Sender<Option<concentrator_protocol::AccountSummary>>,
    },
    /// A relay order (the head-end's relay command, an installer's relay test): carried out by the
    /// ledger's relay authority ([`concentrator_ledger::relay_order`]) and answered with the read-back.
    Relay(RelayRequest),
    /// A change-of-tenancy order (the head-end's 0x8C, or an installer's order file).
    Tenancy(TenancyRequest),
    /// The head-end's account restore (0x8B) for a meter: its signed account statement.
    Restore {
        /// The meter number the command was addressed to.
        meter: String,
        /// `SignedDocument` wire octets of the statement.
        statement: Vec<u8>,
        /// Gets the answer once the restored account is flushed (or why not).
        reply: Sender<RestoreReply>,
    },
    /// The head-end recorded this anchor of the audit chain (0x8D): kept, and what is due archived.
    Anchor {
        /// The confirmed anchor.
        anchor: concentrator_ledger::anchor::AuditAnchor,
        /// Gets the answer once the anchor is flushed (or why not).
        reply: Sender<AnchorReply>,
    },
    /// The head-end's tariff update (0x86), for every account of the gateway.
    Tariff {
        /// The change as received.
        change: concentrator_ledger::TariffChange,
        /// Gets the answer once the schedule is flushed (or why not).
        reply: Sender<TariffReply>,
    },
}

/// How a tariff update went; each carries the words for the head-end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TariffReply {
    /// Stored and flushed: what changes and when.
    Scheduled(String),
    /// The same tariff was stored before.
    Already(String),
    /// Refused for good (a mistake in the tariff).
    Refused(String),
    /// The store failed: send it again.
    NotNow(String),
}

/// A change-of-tenancy order and where to answer.
#[derive(Debug)]
pub struct TenancyRequest {
    /// The meter number the command was addressed to; `None` for an installer's order file (the order
    /// names its meter).
    pub meter: Option<String>,
    /// `SignedDocument` wire octets of the head-end's order.
    pub order: Vec<u8>,
    /// Who delivered it, for the log ("head-end", "installer alice").
    pub by: String,
    /// Gets the answer once the change is flushed (or why not).
    pub reply: Sender<TenancyReply>,
}

/// How a change-of-tenancy order went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenancyReply {
    /// The account was closed and the new one opened; the settlement is in the outbox. For people.
    Done(String),
    /// The order was carried out before; the same settlement was queued again. For people.
    AlreadyDone(String),
    /// Refused for good (signature, meter, currency): why.
    Refused(String),
    /// Not now (before its effective time, no account yet, the store failed): why; send it again.
    NotNow(String),
}

/// A relay order and where to answer.
#[derive(Debug)]
pub struct RelayRequest {
    /// The meter number.
    pub meter: String,
    /// What is ordered.
    pub order: RelayOrder,
    /// Who orders it, for the audit log ("head-end", "installer alice").
    pub by: String,
    /// Gets the refusal at once, or the state read back after the command.
    pub reply: Sender<RelayReply>,
}

/// How a relay order went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayReply {
    /// Carried out; the relay state read back from the meter.
    ReadBack(RelayState),
    /// Refused by the credit rules (the reason names the balance); final.
    Refused(String),
    /// Not now (no account until the meter's first reading, the store failed): why.
    NotNow(String),
}

/// How an account restore went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreReply {
    /// The account was created from the statement and flushed.
    Restored,
    /// The meter has an account already; nothing changed.
    AlreadyOpen,
    /// The statement was refused (signature, meter, age, currency...): why. Final for this statement.
    Refused(String),
    /// Not now (the store failed, no reading yet for a new account): why; send it again.
    NotNow(String),
}

/// A token to apply, and where to answer.
#[derive(Debug)]
pub struct TokenRequest {
    /// The meter number the command was addressed to (a token for another meter is refused).
    pub meter: String,
    /// `SignedToken` wire octets.
    pub token: Vec<u8>,
    /// Gets the answer once the store has flushed the top-up (or refused it).
    pub reply: Sender<TokenReply>,
}

/// How a token went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenReply {
    /// Applied and flushed; the receipt is in the ledger's outbox.
    Applied(TopUpReceipt),
    /// Applied before (through any path); not applied again.
    AlreadyApplied(TopUpReceipt),
    /// Applied before this gateway's store was restored from the head-end (its statement lists the
    /// serial); not applied again, and no receipt exists here: why.
    AppliedBeforeRestore(String),
    /// Refused (signature, meter, serial, expiry...): why.
    Refused(String),
    /// Not applied now (the meter has no account yet, or the store failed): why; it may be sent again.
    NotNow(String),
}

/// Where the ledger thread reports what the head-end must hear of (the uplink's outbox).
pub trait LedgerReports: Send {
    /// A ledger event.
    fn event(&mut self, event: &LedgerEvent);
    /// A relay state read back after a command, when it differs from the last one read.
    fn relay(&mut self, meter: &str, state: RelayState);
    /// A meter's account, offered at every ledger tick (once a second); the receiver decides whether
    /// it is worth sending (docs/uplink.md, *Account summaries*).
    fn account(&mut self, _meter: &str, _summary: &concentrator_protocol::AccountSummary) {}
    /// A meter's account must be restored from the head-end (repeated until it is); `false` when the
    /// request cannot be sent (the meter has no scope on the uplink).
    fn restore_request(
        &mut self,
        _meter: &str,
        _request: &concentrator_protocol::RestoreRequest,
    ) -> bool {
        false
    }
}

/// The running ledger thread.
#[derive(Debug)]
pub struct Prepay {
    tx: Sender<ToLedger>,
    thread: Option<JoinHandle<()>>,
}

/// What a bus worker holds of the ledger: the channel for its readings and the registry for its
/// scheduler's handle.
#[derive(Debug, Clone)]
pub struct PrepayLink {
    bus: String,
    tx: Sender<ToLedger>,
}

impl PrepayLink {
    /// The reading sink of the bus's scheduler: its energy registers go to the ledger thread.
    pub fn sink(&self) -> ReadingSink {
        let tx = self.tx.clone();
        let bus = self.bus.clone();
        Box::new(move |address: &str, readings: &[Reading]| {
            if let Some(wh) = register_wh(readings) {
                let _ = tx.send(ToLedger::Reading(RegisterRead {
                    bus: bus.clone(),
                    address: address.to_string(),
                    wh,
                    at: unix_now(),
                }));
            }
        })
    }
}

/// The daemon's wall clock (moved to [`crate::clock::unix_now`]; kept here for its callers).
pub use crate::clock::unix_now;

/// The imported energy register of a poll, in Wh (rounded down), if it was read.
pub fn register_wh(readings: &[Reading]) -> Option<u64> {
    readings.iter().find_map(|r| match (r.quantity, r.value) {
        (Quantity::EnergyImportTotal, Value::Decimal(d))
            if d.unit == Unit::WattHour && d.mantissa >= 0 =>
        {
            let m = u64::try_from(d.mantissa).ok()?;
            let scale = 10u64.checked_pow(u32::from(d.exponent.unsigned_abs()))?;
            if d.exponent >= 0 {
                m.checked_mul(scale)
            } else {
                Some(m / scale)
            }
        }
        _ => None,
    })
}

impl Prepay {
    /// Opens the ledger's sled store (the uplink's trees go in the same database).
    pub fn open_store(setup: &LedgerSetup) -> Result<SledStore, String> {
        std::fs::create_dir_all(&setup.store).map_err(|e| {
            format!(
                "cannot create the ledger store {}: {e}; check [gateway] store is writable by the daemon",
                setup.store.display()
            )
        })?;
        SledStore::open(&setup.store).map_err(|e| e.to_string())
    }

    /// Opens the ledger in `store` (from [`Prepay::open_store`]), applies configured `protected` flags,
    /// opens the token inbox, and starts the ledger thread, which drives relays through `handles` and
    /// reports to `reports`. Fails (and the daemon does not start) when the ledger cannot be opened.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        setup: LedgerSetup,
        store: SledStore,
        config: &Config,
        status: Arc<StatusBoard>,
        stop: Arc<AtomicBool>,
        handles: SchedulerHandles,
        reports: Option<Box<dyn LedgerReports>>,
    ) -> Result<Prepay, String> {
        let mut ledger = Ledger::open(store, setup.config, setup.verifier, setup.signer)
            .map_err(|e| format!("cannot open the ledger in {}: {e}", setup.store.display()))?;
        let book: Vec<PrepaidMeter> = config
            .meters
            .iter()
            .map(|m| PrepaidMeter {
                meter_id: m.ledger_id().to_string(),
                place: Place {
                    bus: m.bus.get_ref().clone(),
                    address: m.address.get_ref().clone(),
                },
                dwelling: m.dwelling.get_ref().clone(),
                model: m.model.as_ref().map(|m| m.get_ref().clone()),
                protected: m.protected,
                opening_balance_minor: m.opening_balance_minor,
            })
            .collect();
        let now = unix_now();
        for m in &book {
            if ledger
                .account(&m.meter_id)
                .is_some_and(|a| a.protected != m.protected)
            {
                log::info!(
                    "meter {}: protected = {} as configured",
                    m.meter_id,
                    m.protected
                );
                ledger
                    .set_protected(&m.meter_id, m.protected, now)
                    .map_err(|e| format!("meter {}: {e}", m.meter_id))?;
            }
        }
        let inbox = match &setup.inbox {
            Some(dir) => Some(TokenInbox::open(dir).map_err(|e| {
                format!(
                    "cannot create the token inbox {}: {e}; check [ledger] token_inbox",
                    dir.display()
                )
            })?),
            None => None,
        };
        log::info!(
            "ledger ready: {} accounts for {} configured meters (missing accounts {}), store {}, checkpoint every {} s, token inbox {}",
            ledger.accounts().len(),
            book.len(),
            if setup.restore_from_headend {
                "restored from the head-end"
            } else {
                "opened at the first reading"
            },
            setup.store.display(),
            setup.checkpoint.as_secs(),
            inbox.as_ref().map_or("none".to_string(), |i| i.dir().display().to_string())
        );
        let (tx, rx) = channel();
        let restore = setup.restore_from_headend;
        let service = service::Service::new(
            ledger,
            book,
            restore,
            setup.checkpoint,
            archiving::Archiving::new(setup.audit_online_s, setup.archive.clone()),
            inbox,
            relay::RelayDriver::new(handles.clone()),
            status,
            stop,
            rx,
            reports,
        );
        let thread = std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || service.run())
            .map_err(|e| format!("cannot start the ledger thread: {e}"))?;
        Ok(Prepay {
            tx,
            thread: Some(thread),
        })
    }

    /// The link for bus `bus`'s worker.
    pub fn link(&self, bus: &str) -> PrepayLink {
        PrepayLink {
            bus: bus.to_string(),
            tx: self.tx.clone(),
        }
    }

    /// Where other threads send the ledger work (top-up commands).
    pub fn sender(&self) -> Sender<ToLedger> {
        self.tx.clone()
    }

    /// Waits for the ledger thread to finish (after the stop flag was set); it flushes before it ends.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the ledger thread panicked");
            }
        }
    }
}

/// Meters by place, for the readings.
pub(crate) fn places(book: &[PrepaidMeter]) -> HashMap<(String, String), usize> {
    book.iter()
        .enumerate()
        .map(|(i, m)| ((m.place.bus.clone(), m.place.address.clone()), i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use concentrator_plugin_host::Decimal;

    #[test]
    fn registers_convert_to_watt_hours() {
        let r = |m, e, unit| {
            vec![Reading::new(
                Quantity::EnergyImportTotal,
                Value::Decimal(Decimal::new(m, e, unit)),
            )]
        };
        assert_eq!(
            register_wh(&r(1_234_567, 1, Unit::WattHour)),
            Some(12_345_670)
        );
        assert_eq!(
            register_wh(&r(1_234_567, -1, Unit::WattHour)),
            Some(123_456)
        );
        assert_eq!(register_wh(&r(-5, 0, Unit::WattHour)), None);
        assert_eq!(register_wh(&r(5, 0, Unit::Volt)), None);
        assert_eq!(register_wh(&r(i64::MAX, 20, Unit::WattHour)), None);
    }
}
