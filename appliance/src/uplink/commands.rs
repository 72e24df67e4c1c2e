//! The daemon's side of the downlink: verified, not yet executed commands from the head-end (the uplink
//! has already checked the envelope, the frame, and the message id against the executed set; it records
//! and answers what this returns). Work that waits on the ledger thread or a bus is handed back as a
//! [`Ticket`] that the uplink loop completes, so acknowledgements and other messages go on meanwhile.
//!
//! - top-up → the ledger thread, the same ledger call and store transaction as the token inbox; answered
//!   after the flush (the receipt drains from the ledger's outbox);
//! - relay → with `[ledger]`, the ledger's relay authority (an open is held until a close; a close
//!   without credit is refused), answered with the read-back; without, the meter's bus scheduler at
//!   [`Priority::Command`]; waiting at most [`RELAY_WAIT`] either way;
//! - time sync → the time keeper compares, and steps an unsynchronised gateway clock within limits
//!   (`crate::timekeeper`); the result's reason says what it did;
//! - account request → the ledger thread's summary of the meter's account, queued as an account summary
//!   (0x04) in the meter's scope;
//! - account restore → the ledger thread restores the meter's lost account from the head-end's signed
//!   statement; done after the flush, refused (final) for a statement that does not verify, try later
//!   when the ledger is busy;
//! - tariff update (gateway scope) → the ledger thread schedules it (flushed), answered with the
//!   tariff, its in-force time and the tariff it replaces; a resend is "already done";
//! - configuration change (gateway scope) → the configuration file, all or none
//!   ([`crate::config::remote`]), answered with each `key: old → new`;
//! - backfill request (meter scope) → the meter's stored history read record by record at routine
//!   priority on its bus ([`read_history`], at most [`BACKFILL_MAX_RECORDS`]): answered "done" once the
//!   newest record came (the readings inside the window follow as backfill messages, 0x0E), or
//!   "unsupported" with the driver's reason when the meter keeps no history;
//! - everything else → "unsupported" (22) until it is built.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use concentrator_plugin_host::{Quantity as MeterQuantity, Reading as MeterReading, Value};
use concentrator_plugin_host::{RelayCommand as MeterRelay, Task};
use concentrator_protocol::{
    result_code, Backfill, BackfillRequest, Body, Frame, MessageId, ReceiptBody, RelayAction,
    Scope, Tid,
};
use concentrator_uplink::mqtt::{AppendOutbox, Downlink, Handled, Outcome, SledOutbox, Ticket};

use concentrator_ledger::{RelayOrder, RelayState};

use crate::clock::unix_now;
use crate::prepay::{
    AnchorReply, Place, RelayReply, RelayRequest, RestoreReply, SchedulerHandles, TariffReply,
    TenancyReply, TenancyRequest, ToLedger, TokenReply, TokenRequest,
};
use crate::scheduler::{JobOutcome, Priority, SchedulerHandle};

/// Longest wait for the ledger to apply and flush a top-up.
pub const TOKEN_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for a relay command to be carried out on its bus.
pub const RELAY_WAIT: Duration = Duration::from_secs(20);

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

    /// Sends the ledger thread a request about the meter of `scope` (built by `make` from the meter
    /// number and the reply channel): the meter number and where its answer comes, or the outcome when
    /// there is no such meter, no ledger, or the ledger has stopped.
    fn ask_ledger<T>(
        &self,
        scope: Scope,
        make: impl FnOnce(String, Sender<T>) -> ToLedger,
    ) -> Result<(String, Receiver<T>), Outcome> {
        let route = self.route(scope)?;
        let Some(ledger) = &self.ledger else {
            return Err(Outcome::failed(
                result_code::UNSUPPORTED,
                "this gateway keeps no credit or accounts ([ledger] is not configured)",
            ));
        };
        let (reply, answer) = channel();
        if ledger.send(make(route.meter.clone(), reply)).is_err() {
            return Err(Outcome::failed(
                result_code::TRY_LATER,
                "the gateway's ledger has stopped; send it again after the gateway restarts",
            ));
        }
        Ok((route.meter.clone(), answer))
    }

    fn top_up(&self, scope: Scope, token: &[u8]) -> Handled {
        let (meter, answer) = match self.ask_ledger(scope, |meter, reply| {
            ToLedger::Token(TokenRequest {
                meter,
                token: token.to_vec(),
                reply,
            })
        }) {
            Ok(asked) => asked,
            Err(o) => return Handled::Now(o),
        };
        let outbox = self.outbox.clone();
        ticket(
            answer,
            TOKEN_WAIT,
            "the ledger did not answer in time; send the token again (a token is applied at most once)",
            move |reply| match reply {
                TokenReply::Applied(_) => Outcome::done(),
                TokenReply::AlreadyApplied(r) => {
                    // The head-end asks again because it has no receipt: send the original one again
                    // (it may have been lost with a store, or the head-end's record of it with a crash).
                    let serial = r.receipt.serial;
                    let body = Body::Receipt(ReceiptBody { signed: r.signed });
                    if let Err(e) = outbox.append(scope, unix_now(), body) {
                        log::error!("meter {meter}: cannot queue the receipt of token {serial} again: {e}");
                    }
                    Outcome {
                        code: result_code::ALREADY_DONE,
                        reason: Some(format!(
                            "token serial {serial} was already applied; its receipt is sent again"
                        )),
                    }
                }
                TokenReply::AppliedBeforeRestore(why) => Outcome {
                    code: result_code::ALREADY_DONE,
                    reason: Some(why),
                },
                TokenReply::Refused(why) => Outcome::failed(result_code::TOKEN_REFUSED, why),
                TokenReply::NotNow(why) => Outcome::failed(result_code::TRY_LATER, why),
            },
        )
    }

    fn relay(&self, scope: Scope, action: RelayAction) -> Handled {
        let route = match self.route(scope) {
            Ok(r) => r,
            Err(o) => return Handled::Now(o),
        };
        if let Some(ledger) = &self.ledger {
            return relay_through_ledger(ledger, &route.meter, action);
        }
        // Without [ledger] nothing else decides the relay: the command goes to the meter's bus.
        let Some(handle) = self.handles.get(&route.place.bus) else {
            return Handled::Now(Outcome::failed(
                result_code::METER_FAILED,
                format!("bus {} is not open", route.place.bus),
            ));
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
        ticket(
            rx,
            RELAY_WAIT,
            format!("no answer within {} s", RELAY_WAIT.as_secs()),
            |outcome| match outcome {
                Ok(Ok(_)) => Outcome::done(),
                Ok(Err(exception)) => Outcome::failed(
                    result_code::METER_FAILED,
                    format!("the meter refused: {exception}"),
                ),
                Err(e) => Outcome::failed(result_code::METER_FAILED, e),
            },
        )
    }
}

/// A relay command on a gateway with a ledger: the ledger is the relay authority (it holds a cut the
/// head-end ordered, and refuses to close a meter without credit), and answers with the read-back.
fn relay_through_ledger(ledger: &Sender<ToLedger>, meter: &str, action: RelayAction) -> Handled {
    let order = match action {
        RelayAction::Open => RelayOrder::Open,
        RelayAction::Close => RelayOrder::Close,
        RelayAction::Arm => RelayOrder::Arm,
    };
    let (reply, answer) = channel();
    let request = ToLedger::Relay(RelayRequest {
        meter: meter.to_string(),
        order,
        by: "head-end".into(),
        reply,
    });
    if ledger.send(request).is_err() {
        return Handled::Now(Outcome::failed(
            result_code::TRY_LATER,
            "the gateway's ledger has stopped",
        ));
    }
    ticket(
        answer,
        RELAY_WAIT,
        format!(
            "meter {meter}: no relay read-back within {} s (meter offline?); the ledger keeps trying",
            RELAY_WAIT.as_secs()
        ),
        move |reply| match reply {
            RelayReply::ReadBack(state) => {
                let wanted = match order {
                    RelayOrder::Open => state == RelayState::Open,
                    RelayOrder::Close => state == RelayState::Closed,
                    RelayOrder::Arm => matches!(state, RelayState::Armed | RelayState::Closed),
                };
                if wanted {
                    Outcome {
                        code: result_code::DONE,
                        reason: Some(format!("relay read back {}", state_name(state))),
                    }
                } else {
                    Outcome::failed(
                        result_code::METER_FAILED,
                        format!(
                            "the meter's relay read back {} after the command; the ledger sends it again",
                            state_name(state)
                        ),
                    )
                }
            }
            RelayReply::Refused(why) => Outcome::failed(result_code::REFUSED, why),
            RelayReply::NotNow(why) => Outcome::failed(result_code::TRY_LATER, why),
        },
    )
}

/// A ticket that completes with `map` of the answer on `answer`, or after `wait` with a temporary
/// failure (`timeout` says why): the uplink loop polls it while it goes on with other messages.
fn ticket<T: Send + 'static>(
    answer: Receiver<T>,
    wait: Duration,
    timeout: impl Into<String>,
    mut map: impl FnMut(T) -> Outcome + Send + 'static,
) -> Handled {
    let timeout = Outcome::failed(result_code::METER_FAILED, timeout);
    Handled::Later(Ticket::new(wait, timeout, move || {
        match answer.try_recv() {
            Ok(v) => Some(map(v)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Outcome::failed(
                result_code::TRY_LATER,
                "the gateway stopped the work before it answered",
            )),
        }
    }))
}

fn state_name(s: RelayState) -> &'static str {
    match s {
        RelayState::Open => "open (supply off)",
        RelayState::Closed => "closed (supply on)",
        RelayState::Armed => "armed (waiting for the customer's button)",
    }
}

impl Commands {
    fn account(&self, scope: Scope) -> Handled {
        let (meter, answer) =
            match self.ask_ledger(scope, |meter, reply| ToLedger::Account { meter, reply }) {
                Ok(asked) => asked,
                Err(o) => return Handled::Now(o),
            };
        let outbox = self.outbox.clone();
        ticket(
            answer,
            TOKEN_WAIT,
            "the ledger did not answer in time",
            move |summary| match summary {
                Some(summary) => {
                    let now = summary.at;
                    match outbox.append(scope, now, Body::AccountSummary(summary)) {
                        Ok(_) => Outcome::done(),
                        Err(e) => Outcome::failed(result_code::TRY_LATER, e.to_string()),
                    }
                }
                None => Outcome::failed(
                    result_code::TRY_LATER,
                    format!("meter {meter} has no account until its first reading"),
                ),
            },
        )
    }
}

impl Commands {
    /// The head-end's account statement for a meter whose account is being restored: to the ledger
    /// thread, answered once the account is flushed. A statement that does not verify is refused for
    /// good; a busy or failing ledger is temporary.
    fn restore(&self, scope: Scope, statement: &[u8]) -> Handled {
        let (meter, answer) = match self.ask_ledger(scope, |meter, reply| ToLedger::Restore {
            meter,
            statement: statement.to_vec(),
            reply,
        }) {
            Ok(asked) => asked,
            Err(o) => return Handled::Now(o),
        };
        ticket(
            answer,
            TOKEN_WAIT,
            "the ledger did not answer in time; send the statement again",
            move |reply| match reply {
                RestoreReply::Restored => Outcome::done(),
                RestoreReply::AlreadyOpen => Outcome {
                    code: result_code::ALREADY_DONE,
                    reason: Some(format!("meter {meter} has an account already")),
                },
                RestoreReply::Refused(why) => Outcome::failed(result_code::TOKEN_REFUSED, why),
                RestoreReply::NotNow(why) => Outcome::failed(result_code::TRY_LATER, why),
            },
        )
    }
}

impl Commands {
    /// The head-end recorded an anchor of the audit chain (0x8D, gateway scope): to the ledger thread,
    /// answered once the anchor is kept (flushed) or refused.
    fn anchor_recorded(&self, a: &concentrator_protocol::AnchorRecorded) -> Handled {
        let Some(ledger) = &self.ledger else {
            return Handled::Now(Outcome::failed(
                result_code::UNSUPPORTED,
                "this gateway keeps no audit log ([ledger] is not configured)",
            ));
        };
        let (reply, answer) = channel();
        let anchor = concentrator_ledger::anchor::AuditAnchor {
            len: a.len,
            head: a.head,
        };
        if ledger.send(ToLedger::Anchor { anchor, reply }).is_err() {
            return Handled::Now(Outcome::failed(
                result_code::TRY_LATER,
                "the gateway's ledger has stopped; send it again after the gateway restarts",
            ));
        }
        ticket(
            answer,
            TOKEN_WAIT,
            "the ledger did not answer in time; send the anchor again",
            |reply| match reply {
                AnchorReply::Kept(what) => Outcome {
                    code: result_code::DONE,
                    reason: Some(what),
                },
                AnchorReply::AlreadyKept(what) => Outcome {
                    code: result_code::ALREADY_DONE,
                    reason: Some(what),
                },
                AnchorReply::Refused(why) => Outcome::failed(result_code::INVALID, why),
                AnchorReply::NotNow(why) => Outcome::failed(result_code::TRY_LATER, why),
            },
        )
    }

    /// The head-end's change-of-tenancy order (0x8C) for the meter of `scope`: done once the ledger
    /// has flushed the close (the settlement follows from its outbox), already done for an order
    /// carried out before (its settlement is sent again).
    fn tenancy(&self, scope: Scope, order: &[u8]) -> Handled {
        let (_, answer) = match self.ask_ledger(scope, |meter, reply| {
            ToLedger::Tenancy(TenancyRequest {
                meter: Some(meter),
                order: order.to_vec(),
                by: "head-end".into(),
                reply,
            })
        }) {
            Ok(asked) => asked,
            Err(o) => return Handled::Now(o),
        };
        ticket(
            answer,
            TOKEN_WAIT,
            "the ledger did not answer in time; send the order again (an order is carried out once)",
            |reply| match reply {
                TenancyReply::Done(_) => Outcome::done(),
                TenancyReply::AlreadyDone(text) => Outcome {
                    code: result_code::ALREADY_DONE,
                    reason: Some(text),
                },
                TenancyReply::Refused(why) => Outcome::failed(result_code::TOKEN_REFUSED, why),
                TenancyReply::NotNow(why) => Outcome::failed(result_code::TRY_LATER, why),
            },
        )
    }
}

/// The head-end's TimeSync: the daemon's time keeper compares and, when the gateway's clock is not
/// synchronised (no NTP, no network time), steps it within `[time] headend_step_max_s`; the result's
/// reason says what it did. Without a time keeper (a daemon not started by `concentratord`), only
/// compared.
fn time_sync(head_end_ms: u64) -> Outcome {
    let (code, reason) = match crate::timekeeper::TimeKeeper::installed() {
        Some(keeper) => keeper.head_end_time(head_end_ms),
        None => {
            let offset_s = (i128::from(head_end_ms) - i128::from(unix_now()) * 1000) / 1000;
            let apart = crate::timekeeper::duration_words(
                u64::try_from(offset_s.unsigned_abs()).unwrap_or(u64::MAX),
            );
            let side = if offset_s < 0 { "behind" } else { "ahead of" };
            (
                result_code::DONE,
                format!("compared only: the head-end's clock is {apart} {side} the gateway's"),
            )
        }
    };
    log::info!("time sync from the head-end: {reason}");
    Outcome {
        code,
        reason: Some(reason),
    }
}

impl Commands {
    /// A tariff update for every account of the gateway: to the ledger thread, answered once the
    /// schedule is flushed, with what changes and when.
    fn tariff(&self, scope: Scope, t: &concentrator_protocol::TariffUpdate) -> Handled {
        if scope != Scope::Gateway {
            return Handled::Now(Outcome::failed(
                result_code::INVALID,
                "this gateway charges one tariff for all its meters; send the tariff update in the gateway's scope",
            ));
        }
        let Some(ledger) = &self.ledger else {
            return Handled::Now(Outcome::failed(
                result_code::UNSUPPORTED,
                "this gateway keeps no credit or accounts ([ledger] is not configured)",
            ));
        };
        let change = concentrator_ledger::TariffChange {
            tariff_id: t.tariff_id,
            effective_from: t.effective_from,
            currency: t.currency.clone(),
            standing_charge_minor_per_day: t.standing_charge_minor_per_day,
            rates: t
                .rates
                .iter()
                .map(|r| (r.id, r.price_micro_per_kwh))
                .collect(),
            switches: t
                .calendar
                .iter()
                .map(|s| (s.days, s.start_minute, s.rate))
                .collect(),
            special_days: t.special_days.clone(),
            utc_offset_min: t.utc_offset_min,
        };
        let (reply, answer) = channel();
        if ledger.send(ToLedger::Tariff { change, reply }).is_err() {
            return Handled::Now(Outcome::failed(
                result_code::TRY_LATER,
                "the gateway's ledger has stopped; send it again after the gateway restarts",
            ));
        }
        ticket(
            answer,
            TOKEN_WAIT,
            "the ledger did not answer in time; send the tariff again",
            |reply| match reply {
                TariffReply::Scheduled(words) => Outcome {
                    code: result_code::DONE,
                    reason: Some(words),
                },
                TariffReply::Already(words) => Outcome {
                    code: result_code::ALREADY_DONE,
                    reason: Some(words),
                },
                TariffReply::Refused(why) => Outcome::failed(result_code::INVALID, why),
                TariffReply::NotNow(why) => Outcome::failed(result_code::TRY_LATER, why),
            },
        )
    }
}

/// A configuration change: the daemon's configuration file, all or none (see
/// [`crate::config::remote`]), answered with each `key: old → new` and when it takes effect.
fn config_change(scope: Scope, settings: &[concentrator_protocol::ConfigSetting]) -> Outcome {
    use crate::config::remote::{self, RemoteOutcome, RemoteRefusal};
    if scope != Scope::Gateway {
        return Outcome::failed(
            result_code::INVALID,
            "the configuration is the gateway's; send the change in the gateway's scope",
        );
    }
    let Some(path) = remote::started_with() else {
        return Outcome::failed(
            result_code::UNSUPPORTED,
            "this gateway runs on its built-in example configuration (no --config file) and has nothing to change",
        );
    };
    match remote::apply(&path, settings) {
        Ok(RemoteOutcome::Changed(words)) => Outcome {
            code: result_code::DONE,
            reason: Some(words),
        },
        Ok(RemoteOutcome::Unchanged(words)) => Outcome {
            code: result_code::ALREADY_DONE,
            reason: Some(words),
        },
        Err(e @ RemoteRefusal::Forbidden { .. }) => {
            log::warn!("configuration change from the head-end refused: {e}");
            Outcome::failed(result_code::REFUSED, e.to_string())
        }
        Err(e @ RemoteRefusal::Invalid(_)) => {
            log::warn!("configuration change from the head-end refused: {e}");
            Outcome::failed(result_code::INVALID, e.to_string())
        }
        Err(e @ RemoteRefusal::NotNow(_)) => {
            log::warn!("configuration change from the head-end not applied: {e}");
            Outcome::failed(result_code::TRY_LATER, e.to_string())
        }
    }
}

impl Downlink for Commands {
    fn handle(&mut self, scope: Scope, frame: &Frame) -> Outcome {
        match self.start(scope, frame) {
            Handled::Now(o) => o,
            Handled::Later(mut ticket) => loop {
                if let Some(o) = ticket.poll() {
                    break o;
                }
                std::thread::sleep(Duration::from_millis(5));
            },
        }
    }

    fn start(&mut self, scope: Scope, frame: &Frame) -> Handled {
        match &frame.body {
            Body::TopUp(t) => self.top_up(scope, &t.token),
            Body::RelayCommand(r) => self.relay(scope, r.action),
            Body::TimeSync(t) => Handled::Now(time_sync(t.unix_ms)),
            Body::AccountRequest(_) => self.account(scope),
            Body::AccountRestore(r) => self.restore(scope, &r.signed),
            Body::AnchorRecorded(a) => self.anchor_recorded(a),
            Body::TenancyChange(t) => self.tenancy(scope, &t.order),
            Body::TariffUpdate(t) => self.tariff(scope, t),
            Body::ConfigChange(c) => Handled::Now(config_change(scope, &c.settings)),
            Body::BackfillRequest(r) => self.backfill(scope, frame.header.id, r),
            _ => Handled::Now(Outcome::failed(
                result_code::UNSUPPORTED,
                format!(
                    "a {} command is not supported by this gateway yet",
                    frame.kind()
                ),
            )),
        }
    }
}

/// The most history records one backfill request reads (what a DL/T 645 meter keeps of its hourly
/// freezes); an older part of the window is left for the head-end's next request.
pub const BACKFILL_MAX_RECORDS: u32 = 254;
/// Longest wait for one history record on the bus (routine priority: polls and commands go first).
pub const HISTORY_WAIT: Duration = Duration::from_secs(60);
/// Backfilled readings per message.
pub const BACKFILL_CHUNK: usize = 64;

/// The window a backfill request asks for: records whose time lies within half an interval of
/// `from..=to` belong to it (the meter freezes on its own grid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Earliest record time taken, Unix s.
    pub earliest: u64,
    /// Latest record time taken, Unix s.
    pub latest: u64,
}

impl Window {
    /// The window of a request; `None` for one that asks for nothing (no interval, `from` after `to`).
    pub fn of(r: &BackfillRequest) -> Option<Window> {
        if r.interval_s == 0 || r.from > r.to {
            return None;
        }
        let half = u64::from(r.interval_s / 2);
        Some(Window {
            earliest: r.from.saturating_sub(half),
            latest: r.to.saturating_add(half),
        })
    }
}

/// Why a meter's history could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// The meter (its driver) keeps no history: the driver's words.
    Unsupported(String),
    /// The bus or the meter failed (offline, no answer): try again later.
    Failed(String),
}

/// The time of a history record (its `MeterDateTime` reading).
fn record_time(record: &[MeterReading]) -> Option<u64> {
    record.iter().find_map(|r| match (r.quantity, r.value) {
        (MeterQuantity::MeterDateTime, Value::Timestamp(t)) => u64::try_from(t).ok(),
        _ => None,
    })
}

/// One history record's outcome: its readings, `None` when the meter has no such record (a device
/// exception: the history is shorter), or why it could not be read.
fn history_record(outcome: JobOutcome) -> Result<Option<Vec<MeterReading>>, HistoryError> {
    match outcome {
        Ok(Ok(readings)) => Ok(Some(readings)),
        Ok(Err(_no_such_record)) => Ok(None),
        Err(e)
            if e.contains(&format!("cannot {}", Task::ReadHistory(1)))
                || e.contains("not done on request behind a coordinator") =>
        {
            Err(HistoryError::Unsupported(e))
        }
        Err(e) => Err(HistoryError::Failed(e)),
    }
}

/// Reads the meter at `address` back from record `start + 1` on (newer records first), given record
/// `start`'s readings, until a record is older than the window, the meter has no more, or
/// [`BACKFILL_MAX_RECORDS`]; returns the wire readings of the records inside the window, oldest first.
pub fn read_history(
    handle: &SchedulerHandle,
    address: &str,
    window: Window,
    start: (u32, Vec<MeterReading>),
) -> Vec<concentrator_protocol::Reading> {
    let (mut n, mut record) = start;
    let mut out = Vec::new();
    loop {
        let Some(at) = record_time(&record) else {
            log::warn!(
                "meter {address}: history record {n} carries no time; the backfill stops there"
            );
            break;
        };
        if at < window.earliest {
            break;
        }
        if at <= window.latest {
            // Newest first here; reversed below.
            out.extend(super::convert::readings(at, &record).into_iter().rev());
        }
        n += 1;
        if n > BACKFILL_MAX_RECORDS {
            break;
        }
        let rx = handle.submit(address, Task::ReadHistory(n), Priority::Routine);
        match rx.recv_timeout(HISTORY_WAIT).map(history_record) {
            Ok(Ok(Some(r))) => record = r,
            Ok(Ok(None)) => break,
            Ok(Err(HistoryError::Unsupported(e) | HistoryError::Failed(e))) => {
                log::warn!("meter {address}: history record {n} not read ({e}); the backfill sends what it has");
                break;
            }
            Err(_) => {
                log::warn!(
                    "meter {address}: history record {n} not read within {} s; the backfill sends what it has",
                    HISTORY_WAIT.as_secs()
                );
                break;
            }
        }
    }
    out.reverse();
    out
}

/// The backfill messages of `readings` for request `request`: chunks of [`BACKFILL_CHUNK`], the last
/// one marked (one empty, marked message when the meter had nothing for the window).
pub fn backfill_bodies(
    request: MessageId,
    readings: Vec<concentrator_protocol::Reading>,
) -> Vec<Body> {
    let chunks: Vec<Vec<_>> = if readings.is_empty() {
        vec![vec![]]
    } else {
        readings.chunks(BACKFILL_CHUNK).map(<[_]>::to_vec).collect()
    };
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, readings)| {
            Body::Backfill(Backfill {
                request,
                readings,
                last: i + 1 == n,
            })
        })
        .collect()
}

impl Commands {
    fn backfill(&self, scope: Scope, id: MessageId, r: &BackfillRequest) -> Handled {
        let route = match self.route(scope) {
            Ok(r) => r.clone(),
            Err(o) => return Handled::Now(o),
        };
        let Some(window) = Window::of(r) else {
            return Handled::Now(Outcome::failed(
                result_code::INVALID,
                format!(
                    "a backfill request needs an interval above 0 and its start before its end (from {} to {}, interval {} s)",
                    crate::clock::local_time_text(r.from),
                    crate::clock::local_time_text(r.to),
                    r.interval_s
                ),
            ));
        };
        let Some(handle) = self.handles.get(&route.place.bus) else {
            return Handled::Now(Outcome::failed(
                result_code::METER_FAILED,
                format!("bus {} is not open", route.place.bus),
            ));
        };
        log::info!(
            "meter {}: the head-end asks for its readings from {} to {}",
            route.meter,
            crate::clock::local_time_text(r.from),
            crate::clock::local_time_text(r.to)
        );
        let first = handle.submit(
            &route.place.address,
            Task::ReadHistory(1),
            Priority::Routine,
        );
        let outbox = self.outbox.clone();
        ticket(
            first,
            HISTORY_WAIT,
            format!(
                "meter {}: its newest history record did not come within {} s",
                route.meter,
                HISTORY_WAIT.as_secs()
            ),
            move |outcome| match history_record(outcome) {
                Ok(first) => {
                    let (handle, route, outbox) = (handle.clone(), route.clone(), outbox.clone());
                    let started =
                        std::thread::Builder::new()
                            .name("backfill".into())
                            .spawn(move || {
                                let readings = match first {
                                    Some(rec) => read_history(
                                        &handle,
                                        &route.place.address,
                                        window,
                                        (1, rec),
                                    ),
                                    None => vec![],
                                };
                                let count = readings.len();
                                for body in backfill_bodies(id, readings) {
                                    if let Err(e) = outbox.append(scope, unix_now(), body) {
                                        log::error!(
                                            "meter {}: backfilled readings not queued: {e}",
                                            route.meter
                                        );
                                        return;
                                    }
                                }
                                log::info!(
                                    "meter {}: {count} backfilled readings queued for the head-end",
                                    route.meter
                                );
                            });
                    match started {
                        Ok(_) => Outcome {
                            code: result_code::DONE,
                            reason: Some("the meter's stored history is being read; the readings inside the window follow as backfill messages".into()),
                        },
                        Err(e) => Outcome::failed(
                            result_code::TRY_LATER,
                            format!("the gateway cannot start reading the history: {e}"),
                        ),
                    }
                }
                Err(HistoryError::Unsupported(why)) => Outcome::failed(
                    result_code::UNSUPPORTED,
                    format!(
                        "meter {} keeps no reading history the gateway can read: {why}",
                        route.meter
                    ),
                ),
                Err(HistoryError::Failed(why)) => Outcome::failed(
                    result_code::METER_FAILED,
                    format!(
                        "meter {}: its history could not be read: {why}",
                        route.meter
                    ),
                ),
            },
        )
    }
}

#[cfg(test)]
mod backfill_tests {
    use super::*;
    use concentrator_plugin_host::{Decimal, Unit};
    use concentrator_protocol::Quantity;

    fn record(at: u64, centi_kwh: i64) -> Vec<MeterReading> {
        vec![
            MeterReading::new(MeterQuantity::MeterDateTime, Value::Timestamp(at as i64)),
            MeterReading::new(
                MeterQuantity::EnergyImportTotal,
                Value::Decimal(Decimal::new(centi_kwh, 1, Unit::WattHour)),
            ),
        ]
    }

    /// A meter on a fake bus worker keeping hourly records up to `newest`, `kept` of them.
    fn meter(newest: u64, kept: u32) -> SchedulerHandle {
        let (handle, jobs) = SchedulerHandle::channel();
        std::thread::spawn(move || {
            for (_, task, priority, reply) in jobs {
                assert_eq!(priority, Priority::Routine);
                let Task::ReadHistory(n) = task else {
                    panic!("{task}")
                };
                let outcome: JobOutcome = if n <= kept {
                    let at = newest - u64::from(n - 1) * 3_600;
                    Ok(Ok(record(at, (at / 36) as i64)))
                } else {
                    Ok(Err(concentrator_plugin_host::DeviceException {
                        code: 2,
                        text: "no requested data".into(),
                    }))
                };
                let _ = reply.send(outcome);
            }
        });
        handle
    }

    #[test]
    fn the_records_inside_the_window_are_read_oldest_first() {
        let h = 3_600;
        let newest = 1_800_000_000 / h * h;
        let handle = meter(newest, 254);
        // Asked for hours 3 to 5 back (the head-end's slots a few seconds after the hour).
        let req = BackfillRequest {
            from: newest - 5 * h + 4,
            to: newest - 3 * h + 4,
            interval_s: h as u32,
        };
        let w = Window::of(&req).unwrap();
        let first = record(newest, (newest / 36) as i64);
        let got = read_history(&handle, "000000000001", w, (1, first));
        let times: Vec<u64> = got.iter().map(|r| r.at).collect();
        assert_eq!(times, vec![newest - 5 * h, newest - 4 * h, newest - 3 * h]);
        assert!(got.iter().all(|r| r.quantity == Quantity::EnergyImportWh));
        assert_eq!(got[0].value, ((newest - 5 * h) / 36) as i64);
        let bodies = backfill_bodies(MessageId([7; 16]), got);
        assert_eq!(bodies.len(), 1);
        assert!(matches!(&bodies[0], Body::Backfill(b) if b.last && b.readings.len() == 3));
    }

    #[test]
    fn a_short_history_stops_at_its_oldest_record_and_a_long_window_is_chunked() {
        let h = 3_600;
        let newest = 1_800_000_000 / h * h;
        let handle = meter(newest, 100);
        let req = BackfillRequest {
            from: newest - 500 * h,
            to: newest,
            interval_s: h as u32,
        };
        let first = record(newest, 1);
        let got = read_history(&handle, "x", Window::of(&req).unwrap(), (1, first));
        assert_eq!(got.len(), 100, "all the meter keeps");
        let bodies = backfill_bodies(MessageId([7; 16]), got);
        assert_eq!(bodies.len(), 2);
        assert!(
            matches!(&bodies[0], Body::Backfill(b) if !b.last && b.readings.len() == BACKFILL_CHUNK)
        );
        assert!(matches!(&bodies[1], Body::Backfill(b) if b.last));
        assert!(Window::of(&BackfillRequest {
            from: 2,
            to: 1,
            interval_s: 60
        })
        .is_none());
        assert!(Window::of(&BackfillRequest {
            from: 1,
            to: 2,
            interval_s: 0
        })
        .is_none());
    }

    #[test]
    fn a_driver_without_history_is_unsupported_and_a_silent_meter_a_failure() {
        let rejected = format!(
            "plugin `modbus` cannot {} on meter 01: this Modbus meter's register map keeps no reading history",
            Task::ReadHistory(1)
        );
        assert!(matches!(
            history_record(Err(rejected)),
            Err(HistoryError::Unsupported(w)) if w.contains("keeps no reading history")
        ));
        assert!(matches!(
            history_record(Err("meter 01: no reply within 500 ms".into())),
            Err(HistoryError::Failed(_))
        ));
    }
}
