//! The daemon's side of the downlink: verified, not yet executed commands from the head-end, carried out
//! on the uplink thread (the uplink has already checked the envelope, the frame, and the message id
//! against the executed set; it records and answers what this returns).
//!
//! - top-up → the ledger thread, the same ledger call and store transaction as the token inbox; answered
//!   after the flush (the receipt drains from the ledger's outbox);
//! - relay → the meter's bus scheduler at [`Priority::Command`], waiting at most [`RELAY_WAIT`];
//! - time sync → the offset is logged (the system clock is NTP's to set);
//! - account request → the ledger thread's summary of the meter's account, queued as an account summary
//!   (0x04) in the meter's scope;
//! - account restore → the ledger thread restores the meter's lost account from the head-end's signed
//!   statement; done after the flush, refused (final) for a statement that does not verify, try later
//!   when the ledger is busy;
//! - everything else → "unsupported" (22) until it is built.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use concentrator_plugin_host::{RelayCommand as MeterRelay, Task};
use concentrator_protocol::{result_code, Body, Frame, RelayAction, Scope, Tid};
use concentrator_uplink::mqtt::{AppendOutbox, Downlink, Outcome, SledOutbox};

use crate::prepay::{Place, RestoreReply, SchedulerHandles, ToLedger, TokenReply, TokenRequest};
use crate::scheduler::Priority;

/// Longest wait for the ledger to apply and flush a top-up.
pub const TOKEN_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for a relay command to be carried out on its bus.
pub const RELAY_WAIT: Duration = Duration::from_secs(20);
/// A head-end clock this far from ours is logged as a warning.
const CLOCK_WARN_MS: u64 = 5_000;

/// A meter as the downlink addresses it.
#[derive(Debug, Clone)]
pub struct Route {
    /// The meter number (what tokens name).
    pub meter: String,
    /// Its bus and address.
    pub place: Place,
}

/// The command handler.
#[derive(Debug)]
pub struct Commands {
    /// Meters by TID.
    pub routes: HashMap<Tid, Route>,
    /// The ledger thread, with `[ledger]`.
    pub ledger: Option<Sender<ToLedger>>,
    /// The bus schedulers.
    pub handles: SchedulerHandles,
    /// Where answers other than command results are queued (account summaries).
    pub outbox: Arc<SledOutbox>,
}

impl Commands {
    fn route(&self, scope: Scope) -> Result<&Route, Outcome> {
        match scope {
            Scope::Meter(tid) => self.routes.get(&tid).ok_or_else(|| {
                Outcome::failed(result_code::INVALID, "no configured meter has this TID")
            }),
            Scope::Gateway => Err(Outcome::failed(
                result_code::INVALID,
                "this command is about a meter; send it in the meter's scope",
            )),
        }
    }

    fn top_up(&self, scope: Scope, token: &[u8]) -> Outcome {
        let route = match self.route(scope) {
            Ok(r) => r,
            Err(o) => return o,
        };
        let Some(ledger) = &self.ledger else {
            return Outcome::failed(
                result_code::UNSUPPORTED,
                "this gateway keeps no credit ([ledger] is not configured)",
            );
        };
        let (reply, answer) = channel();
        let request = ToLedger::Token(TokenRequest {
            meter: route.meter.clone(),
            token: token.to_vec(),
            reply,
        });
        if ledger.send(request).is_err() {
            return Outcome::failed(result_code::METER_FAILED, "the ledger has stopped");
        }
        match answer.recv_timeout(TOKEN_WAIT) {
            Ok(TokenReply::Applied(_)) => Outcome::done(),
            Ok(TokenReply::AlreadyApplied(r)) => Outcome {
                code: result_code::ALREADY_DONE,
                reason: Some(format!("token serial {} was already applied", r.receipt.serial)),
            },
            Ok(TokenReply::AppliedBeforeRestore(why)) => Outcome {
                code: result_code::ALREADY_DONE,
                reason: Some(why),
            },
            Ok(TokenReply::Refused(why)) => Outcome::failed(result_code::TOKEN_REFUSED, why),
            Ok(TokenReply::NotNow(why)) => Outcome::failed(result_code::METER_FAILED, why),
            Err(_) => Outcome::failed(
                result_code::METER_FAILED,
                "the ledger did not answer in time; send the token again (a token is applied at most once)",
            ),
        }
    }

    fn relay(&self, scope: Scope, action: RelayAction) -> Outcome {
        let route = match self.route(scope) {
            Ok(r) => r,
            Err(o) => return o,
        };
        let Some(handle) = self.handles.get(&route.place.bus) else {
            return Outcome::failed(
                result_code::METER_FAILED,
                format!("bus {} is not open", route.place.bus),
            );
        };
        let command = match action {
            RelayAction::Open => MeterRelay::Trip,
            RelayAction::Close => MeterRelay::CloseDirect,
            RelayAction::Arm => MeterRelay::CloseAllowed,
        };
        log::info!(
            "meter {}: relay {action:?} ordered by the head-end",
            route.meter
        );
        let rx = handle.submit(
            &route.place.address,
            Task::Relay(command),
            Priority::Command,
        );
        match rx.recv_timeout(RELAY_WAIT) {
            Ok(Ok(Ok(_))) => Outcome::done(),
            Ok(Ok(Err(exception))) => Outcome::failed(
                result_code::METER_FAILED,
                format!("the meter refused: {exception}"),
            ),
            Ok(Err(e)) => Outcome::failed(result_code::METER_FAILED, e),
            Err(_) => Outcome::failed(
                result_code::METER_FAILED,
                format!("no answer within {RELAY_WAIT:?}"),
            ),
        }
    }
}

impl Commands {
    fn account(&self, scope: Scope) -> Outcome {
        let route = match self.route(scope) {
            Ok(r) => r,
            Err(o) => return o,
        };
        let Some(ledger) = &self.ledger else {
            return Outcome::failed(
                result_code::UNSUPPORTED,
                "this gateway keeps no accounts ([ledger] is not configured)",
            );
        };
        let (reply, answer) = channel();
        let request = ToLedger::Account {
            meter: route.meter.clone(),
            reply,
        };
        if ledger.send(request).is_err() {
            return Outcome::failed(result_code::METER_FAILED, "the ledger has stopped");
        }
        match answer.recv_timeout(TOKEN_WAIT) {
            Ok(Some(summary)) => {
                let now = summary.at;
                match self
                    .outbox
                    .append(scope, now, Body::AccountSummary(summary))
                {
                    Ok(_) => Outcome::done(),
                    Err(e) => Outcome::failed(result_code::METER_FAILED, e.to_string()),
                }
            }
            Ok(None) => Outcome::failed(
                result_code::METER_FAILED,
                format!(
                    "meter {} has no account until its first reading",
                    route.meter
                ),
            ),
            Err(_) => Outcome::failed(
                result_code::METER_FAILED,
                "the ledger did not answer in time",
            ),
        }
    }
}

impl Commands {
    /// The head-end's account statement for a meter whose account is being restored: to the ledger
    /// thread, answered once the account is flushed. A statement that does not verify is refused for
    /// good; a busy or failing ledger is temporary.
    fn restore(&self, scope: Scope, statement: &[u8]) -> Outcome {
        let route = match self.route(scope) {
            Ok(r) => r,
            Err(o) => return o,
        };
        let Some(ledger) = &self.ledger else {
            return Outcome::failed(
                result_code::UNSUPPORTED,
                "this gateway keeps no accounts ([ledger] is not configured)",
            );
        };
        let (reply, answer) = channel();
        let request = ToLedger::Restore {
            meter: route.meter.clone(),
            statement: statement.to_vec(),
            reply,
        };
        if ledger.send(request).is_err() {
            return Outcome::failed(result_code::TRY_LATER, "the ledger has stopped");
        }
        match answer.recv_timeout(TOKEN_WAIT) {
            Ok(RestoreReply::Restored) => Outcome::done(),
            Ok(RestoreReply::AlreadyOpen) => Outcome {
                code: result_code::ALREADY_DONE,
                reason: Some(format!("meter {} has an account already", route.meter)),
            },
            Ok(RestoreReply::Refused(why)) => Outcome::failed(result_code::TOKEN_REFUSED, why),
            Ok(RestoreReply::NotNow(why)) => Outcome::failed(result_code::TRY_LATER, why),
            Err(_) => Outcome::failed(
                result_code::TRY_LATER,
                "the ledger did not answer in time; send the statement again",
            ),
        }
    }
}

fn time_sync(head_end_ms: u64) -> Outcome {
    let ours = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let offset = i128::from(head_end_ms) - i128::from(ours);
    if offset.unsigned_abs() > u128::from(CLOCK_WARN_MS) {
        log::warn!("the head-end's clock is {offset} ms from ours; check NTP (timedatectl timesync-status)");
    } else {
        log::info!("time sync: the head-end's clock is {offset} ms from ours");
    }
    Outcome::done()
}

impl Downlink for Commands {
    fn handle(&mut self, scope: Scope, frame: &Frame) -> Outcome {
        match &frame.body {
            Body::TopUp(t) => self.top_up(scope, &t.token),
            Body::RelayCommand(r) => self.relay(scope, r.action),
            Body::TimeSync(t) => time_sync(t.unix_ms),
            Body::AccountRequest(_) => self.account(scope),
            Body::AccountRestore(r) => self.restore(scope, &r.signed),
            _ => Outcome::failed(
                result_code::UNSUPPORTED,
                format!("{:?} is not supported by this gateway yet", frame.kind()),
            ),
        }
    }
}
