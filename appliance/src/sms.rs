//! The SMS path (docs/install.md, *The SMS path*; docs/protocol.md, *The SMS path*): run by the modem
//! worker after each check while the modem is registered.
//!
//! - Urgent events (supply cut off 1, tamper 22, last gasp 54, theft 70) still waiting in the outbox go
//!   to the head-end's number in the signed SMS form ([`concentrator_protocol::sms`]) once the uplink has
//!   been disconnected for `[modem] sms_after_s`. Each goes by SMS once (its message id is remembered
//!   in the budget file), and the same code for the same meter at most once in six hours and stays in the outbox, so the MQTT copy still goes when the link is back;
//!   the head-end stores the event once, by its message id.
//! - A tenant texts `BAL <dwelling> <PIN>` to the gateway's SIM and gets the balance back; a wrong
//!   dwelling or PIN gets one refusal that says neither which was wrong nor whether the dwelling exists,
//!   and a number that is refused three times in an hour gets no answer for the rest of that hour;
//!   at most ten refusals an hour are sent in all.
//! - Every SMS sent counts against `[modem] sms_per_month`; when it is used up only last gasp still
//!   goes (the one event whose silence the head-end would misread), BAL is not answered, and event 80
//!   is queued once for the month. The counters are durable per calendar month (local time) in
//!   `sms-budget.json` in the store, and shown in `concentrator status`.
//! - With `[modem] data_mib_per_month`, the uplink's bytes are counted (see [`crate::uplink`]): when
//!   the month's data is used up, readings (the outbox's routine class) are no longer queued and event
//!   81 is queued once for the month.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concentrator_hal::SerialStream;
use concentrator_protocol::{event_code, Event, GatewayId, Severity};
use concentrator_uplink::modem::parse::TextMessage;
use concentrator_uplink::modem::{ModemError, Supervisor};
use serde::{Deserialize, Serialize};

use crate::clock::unix_now;
use crate::config::SmsConfig;
use crate::status::{SmsView, StatusBoard};
use crate::uplink::UplinkQueue;

/// The events that go by SMS while the data link is down: supply cut off, tamper, last gasp, theft
/// (block balance).
pub const URGENT: [u16; 4] = [
    event_code::RELAY_OPENED,
    event_code::TAMPER,
    event_code::LAST_GASP,
    THEFT,
];

/// The block balance's theft/loss event (codes 70-79 belong to block balance).
pub const THEFT: u16 = 70;

/// Wrong BAL tries from one number within [`TRY_WINDOW`] before it gets no answer.
pub const MAX_TRIES: usize = 3;
/// The window of [`MAX_TRIES`] and [`MAX_REFUSALS`].
pub const TRY_WINDOW: Duration = Duration::from_secs(3600);
/// Refusals answered within [`TRY_WINDOW`] from all numbers together: wrong guesses from many phones
/// cannot spend the month's SMS budget.
pub const MAX_REFUSALS: usize = 10;
/// Message ids remembered as sent by SMS.
const REMEMBERED: usize = 512;

/// The refusal of a BAL query: the same words for an unknown dwelling, a wrong PIN or a malformed query.
pub const REFUSAL: &str =
    "BAL: no balance for this dwelling code and PIN. Check both and text BAL <dwelling> <PIN>.";

/// What is counted in `sms-budget.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Counters {
    month: String,
    sms_sent: u32,
    events_sent: u32,
    bal_answered: u32,
    bal_refused: u32,
    data_bytes: u64,
    sms_budget_reported: bool,
    data_budget_reported: bool,
    /// Message ids (hex) of events sent by SMS, newest last.
    sent_ids: VecDeque<String>,
    /// (scope, code, unix s) of the events sent by SMS within [`REPEAT_WINDOW_S`].
    #[serde(default)]
    recent: Vec<(String, u16, u64)>,
}

/// The same event (code, meter) goes by SMS at most once in this many seconds: a gateway restarted
/// while a supply is off reads the relay back and queues a new cut-off, which then waits for the data
/// link instead of spending the SMS budget at every restart.
pub const REPEAT_WINDOW_S: u64 = 6 * 3600;

/// Shared between the SMS path (which owns the budget) and the uplink queue (which stops queuing
/// readings when the data budget is used up).
#[derive(Debug, Default)]
pub struct DataBudget {
    /// Bytes used this month.
    pub used: AtomicU64,
    /// Whether readings are dropped now.
    pub exhausted: AtomicBool,
}

/// The SMS path of one gateway.
pub struct SmsPath {
    cfg: SmsConfig,
    gateway: GatewayId,
    ik: Box<dyn Fn() -> Option<[u8; 16]> + Send>,
    file: PathBuf,
    counters: Counters,
    down_since: Option<Instant>,
    sending: bool,
    tries: HashMap<String, Vec<Instant>>,
    /// When refusals were answered (all numbers).
    refusals: Vec<Instant>,
    data: Arc<DataBudget>,
}

impl std::fmt::Debug for SmsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsPath")
            .field("gateway", &self.gateway)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// `2026-12` for `unix` in local time.
fn month_of(unix: u64) -> String {
    concentrator_mpc::human::local_time(unix)
        .get(..7)
        .unwrap_or("-")
        .to_string()
}

impl SmsPath {
    /// The SMS path with counters from `store/sms-budget.json` (fresh when absent, unreadable or of
    /// another month); `ik` gives the IK of the gateway's current security context when an event is
    /// to be signed.
    pub fn open(
        cfg: SmsConfig,
        gateway: GatewayId,
        store: &std::path::Path,
        ik: Box<dyn Fn() -> Option<[u8; 16]> + Send>,
        data: Arc<DataBudget>,
    ) -> Self {
        let file = store.join("sms-budget.json");
        let counters = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::warn!(
                    "SMS path: {} is unreadable ({e}); this month's counters start again at 0",
                    file.display()
                );
                Counters::default()
            }),
            Err(_) => Counters::default(),
        };
        let mut me = SmsPath {
            cfg,
            gateway,
            ik,
            file,
            counters,
            down_since: None,
            sending: false,
            tries: HashMap::new(),
            refusals: Vec::new(),
            data,
        };
        me.roll_month();
        me
    }

    fn roll_month(&mut self) {
        let month = month_of(unix_now());
        if self.counters.month != month {
            let ids = std::mem::take(&mut self.counters.sent_ids);
            self.counters = Counters {
                month,
                sent_ids: ids,
                ..Counters::default()
            };
            self.data.used.store(0, Ordering::SeqCst);
            self.data.exhausted.store(false, Ordering::SeqCst);
            self.save();
        } else {
            let used = self.counters.data_bytes;
            self.data.used.fetch_max(used, Ordering::SeqCst);
        }
    }

    /// Writes the counters (temporary file, fsync, rename), so a restart does not reset the month.
    fn save(&mut self) {
        self.counters.data_bytes = self
            .counters
            .data_bytes
            .max(self.data.used.load(Ordering::SeqCst));
        let tmp = self.file.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(&self.counters).unwrap_or_default())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.file)
        };
        if let Err(e) = write() {
            log::error!(
                "SMS path: cannot write {}: {e}; check that [gateway] store is writable",
                self.file.display()
            );
        }
    }

    /// The status view.
    pub fn view(&self) -> SmsView {
        SmsView {
            month: self.counters.month.clone(),
            sms_sent: self.counters.sms_sent,
            sms_budget: self.cfg.per_month,
            events_sent: self.counters.events_sent,
            bal_answered: self.counters.bal_answered,
            bal_refused: self.counters.bal_refused,
            data_bytes: self.data.used.load(Ordering::SeqCst),
            data_budget_bytes: self.cfg.data_bytes_per_month,
            sending_events: self.sending,
        }
    }

    fn budget_left(&self) -> bool {
        self.counters.sms_sent < self.cfg.per_month
    }

    /// One round after a modem check: the data budget, incoming BAL queries, then urgent events.
    pub fn tick<S: SerialStream>(
        &mut self,
        sup: &mut Supervisor<S>,
        status: &StatusBoard,
        uplink: Option<&UplinkQueue>,
    ) -> Result<(), ModemError> {
        self.roll_month();
        self.data_budget(uplink);
        if !sup.registered() {
            self.sending = false;
            return Ok(());
        }
        for message in sup.receive_sms(Duration::from_millis(100))? {
            self.incoming(sup, status, &message)?;
        }
        let connected = status.snapshot().uplink.map(|u| u.connected);
        match connected {
            None | Some(true) => {
                self.down_since = None;
                self.sending = false;
            }
            Some(false) => {
                let since = *self.down_since.get_or_insert_with(Instant::now);
                self.sending = self.cfg.number.is_some() && since.elapsed() >= self.cfg.after;
            }
        }
        if let (true, Some(queue)) = (self.sending, uplink) {
            self.urgent(sup, queue)?;
        }
        if let (false, Some(queue)) = (self.budget_left(), uplink) {
            self.report_sms_budget(queue);
        }
        Ok(())
    }

    fn data_budget(&mut self, uplink: Option<&UplinkQueue>) {
        let used = self.data.used.load(Ordering::SeqCst);
        // Written every 64 KiB (an SD card is not rewritten at every check for a few readings); a
        // restart loses at most that much of the count.
        if used.saturating_sub(self.counters.data_bytes) >= 64 * 1024 {
            self.counters.data_bytes = used;
            self.save();
        }
        let Some(budget) = self.cfg.data_bytes_per_month else {
            return;
        };
        if used < budget {
            return;
        }
        self.data.exhausted.store(true, Ordering::SeqCst);
        if !self.counters.data_budget_reported {
            log::warn!(
                "the month's data budget ({} MiB) is used up: readings are not queued until the month ends; events, receipts and commands still go",
                budget / (1024 * 1024)
            );
            if let Some(q) = uplink {
                q.gateway_event(Event {
                    at: unix_now(),
                    code: event_code::DATA_BUDGET_EXHAUSTED,
                    severity: Severity::Warning,
                    detail: Some("the monthly data budget is used up; readings are dropped until the month ends".into()),
                    values: vec![i64::try_from(used).unwrap_or(i64::MAX), i64::try_from(budget).unwrap_or(i64::MAX)],
                });
            }
            self.counters.data_budget_reported = true;
            self.save();
        }
    }

    fn urgent<S: SerialStream>(
        &mut self,
        sup: &mut Supervisor<S>,
        queue: &UplinkQueue,
    ) -> Result<(), ModemError> {
        let Some(number) = self.cfg.number.clone() else {
            return Ok(());
        };
        for (id, tid, event) in queue.waiting_events(&URGENT, 32) {
            let key = hex::encode(id.0);
            if self.counters.sent_ids.contains(&key) {
                continue;
            }
            if !self.budget_left() && event.code != event_code::LAST_GASP {
                continue;
            }
            let scope = tid.map_or_else(|| "gw".to_string(), |t| t.to_hex());
            let now = unix_now();
            self.counters
                .recent
                .retain(|(_, _, at)| now.saturating_sub(*at) < REPEAT_WINDOW_S);
            if self
                .counters
                .recent
                .iter()
                .any(|(s, c, _)| *s == scope && *c == event.code)
            {
                continue;
            }
            let Some(ik) = (self.ik)() else {
                log::warn!("SMS path: the gateway has no security context yet (AKA has not run); urgent events wait for the data link");
                return Ok(());
            };
            let text = match concentrator_protocol::sms::encode(&self.gateway, &ik, id, tid, &event)
            {
                Ok(t) => t,
                Err(e) => {
                    log::error!("SMS path: event {} cannot go by SMS: {e}", event.code);
                    continue;
                }
            };
            match sup.send_sms(&number, &text)? {
                Ok(_) => {
                    log::info!(
                        "SMS path: event {} sent by SMS to {number} (the data link is down); it still goes over MQTT later",
                        event.code
                    );
                    self.counters.sms_sent += 1;
                    self.counters.events_sent += 1;
                    self.counters.sent_ids.push_back(key);
                    self.counters.recent.push((scope, event.code, now));
                    while self.counters.sent_ids.len() > REMEMBERED {
                        self.counters.sent_ids.pop_front();
                    }
                    self.save();
                }
                Err(e) => {
                    log::warn!("SMS path: the modem did not send event {} to {number}: {e}; it is tried again at the next check", event.code);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn report_sms_budget(&mut self, queue: &UplinkQueue) {
        if self.counters.sms_budget_reported {
            return;
        }
        log::warn!(
            "the month's SMS budget ({}) is used up: only last gasp still goes by SMS, BAL is not answered",
            self.cfg.per_month
        );
        queue.gateway_event(Event {
            at: unix_now(),
            code: event_code::SMS_BUDGET_EXHAUSTED,
            severity: Severity::Warning,
            detail: Some(
                "the monthly SMS budget is used up; only last gasp still goes by SMS".into(),
            ),
            values: vec![
                i64::from(self.counters.sms_sent),
                i64::from(self.cfg.per_month),
            ],
        });
        self.counters.sms_budget_reported = true;
        self.save();
    }

    fn incoming<S: SerialStream>(
        &mut self,
        sup: &mut Supervisor<S>,
        status: &StatusBoard,
        message: &TextMessage,
    ) -> Result<(), ModemError> {
        let from = message.from.as_str();
        let valid_from = from.len() <= 20
            && from
                .trim_start_matches('+')
                .bytes()
                .all(|b| b.is_ascii_digit())
            && from.len() >= 3;
        let mut words = message.text.split_whitespace();
        if !valid_from || !words.next().is_some_and(|w| w.eq_ignore_ascii_case("BAL")) {
            log::info!("SMS path: a message that is not a BAL query was deleted unanswered");
            return Ok(());
        }
        let now = Instant::now();
        let tries = self.tries.entry(from.to_string()).or_default();
        tries.retain(|t| now.duration_since(*t) < TRY_WINDOW);
        if tries.len() >= MAX_TRIES {
            log::warn!(
                "SMS path: BAL from {from} not answered: {MAX_TRIES} refusals within the hour"
            );
            self.counters.bal_refused += 1;
            self.save();
            return Ok(());
        }
        let (dwelling, pin) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let answer = self.balance(status, dwelling, pin, words.next().is_none());
        if answer.is_none() {
            self.tries.entry(from.to_string()).or_default().push(now);
            self.counters.bal_refused += 1;
        }
        if !self.budget_left() {
            log::warn!("SMS path: BAL from {from} not answered: the month's SMS budget is used up");
            self.save();
            return Ok(());
        }
        if answer.is_none() {
            self.refusals
                .retain(|t| now.duration_since(*t) < TRY_WINDOW);
            if self.refusals.len() >= MAX_REFUSALS {
                log::warn!("SMS path: BAL refused without an answer: {MAX_REFUSALS} refusals sent within the hour (someone may be guessing PINs)");
                self.save();
                return Ok(());
            }
            self.refusals.push(now);
        }
        let text = answer.clone().unwrap_or_else(|| REFUSAL.to_string());
        match sup.send_sms(from, &text)? {
            Ok(_) => {
                self.counters.sms_sent += 1;
                if answer.is_some() {
                    self.counters.bal_answered += 1;
                    log::info!("SMS path: BAL for dwelling {dwelling} answered");
                } else {
                    log::info!("SMS path: BAL refused (wrong dwelling code or PIN)");
                }
            }
            Err(e) => log::warn!("SMS path: the answer to a BAL query was not sent: {e:?}"),
        }
        self.save();
        Ok(())
    }

    /// The answer to `BAL dwelling pin`, or `None` to refuse. The PIN is checked against a hash even
    /// for an unknown dwelling, so the time taken does not tell which dwellings exist.
    fn balance(
        &self,
        status: &StatusBoard,
        dwelling: &str,
        pin: &str,
        alone: bool,
    ) -> Option<String> {
        let stored = self.cfg.pins.get(dwelling);
        let hash = stored.or_else(|| self.cfg.pins.values().next())?;
        let ok = concentrator_mpc::password::verify(pin, hash).unwrap_or(false);
        if !(ok && alone && stored.is_some()) {
            return None;
        }
        let snapshot = status.snapshot();
        let Some(account) = snapshot.accounts.values().find(|a| a.dwelling == dwelling) else {
            return Some(format!(
                "Flat {dwelling}: no balance yet, the meter's account is not open"
            ));
        };
        let (amount, word) = if account.balance_minor < 0 {
            (-account.balance_minor, "debt")
        } else {
            (account.balance_minor, "credit")
        };
        let supply = match account.state.as_str() {
            "disconnected" | "exhausted" => "supply off",
            _ if account.relay_read_back.as_deref() == Some("open") => "supply off",
            _ => "supply on",
        };
        let debt = if account.debt_minor > 0 && account.balance_minor >= 0 {
            format!(
                ", {} {} owed",
                concentrator_ledger::money::format_minor(account.debt_minor),
                account.currency
            )
        } else {
            String::new()
        };
        Some(format!(
            "Flat {dwelling}: {} {} {word}{debt}, {supply}",
            concentrator_ledger::money::format_minor(amount),
            account.currency
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use concentrator_hal::sim::SimStream;
    use concentrator_hal::SystemClock;
    use concentrator_uplink::modem::sim::SimModem;
    use concentrator_uplink::modem::{AtPort, ModemConfig, NoDataLink};

    use super::*;
    use crate::status::AccountStatus;

    fn rig(per_month: u32) -> (SmsPath, Supervisor<SimStream>, SimModem, StatusBoard) {
        let dir = std::env::temp_dir().join(format!(
            "concentrator-sms-unit-{}-{per_month}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut pins = BTreeMap::new();
        pins.insert(
            "A-101".to_string(),
            concentrator_mpc::password::hash("4711").unwrap(),
        );
        let cfg = SmsConfig {
            number: Some("+4930123456".into()),
            after: Duration::from_secs(300),
            per_month,
            data_bytes_per_month: None,
            pins,
        };
        let path = SmsPath::open(
            cfg,
            GatewayId::new("gw-1").unwrap(),
            &dir,
            Box::new(|| Some([3; 16])),
            Arc::default(),
        );
        let (stream, peer) = SimStream::pair("modem");
        let modem = SimModem::new();
        modem.serve(peer);
        let port = AtPort::new(stream, Arc::new(SystemClock::new()));
        let config = ModemConfig {
            command_timeout: Duration::from_millis(300),
            ..ModemConfig::default()
        };
        let mut sup = Supervisor::new(port, Box::new(NoDataLink), None, config);
        sup.check().unwrap();
        let board = StatusBoard::new("gw-1", Vec::new());
        let mut accounts = BTreeMap::new();
        accounts.insert(
            "M-1".to_string(),
            AccountStatus {
                dwelling: "A-101".into(),
                state: "in-credit".into(),
                balance_minor: 1234,
                currency: "EUR".into(),
                ..AccountStatus::default()
            },
        );
        board.set_accounts(accounts);
        (path, sup, modem, board)
    }

    fn texts_to(modem: &SimModem, to: &str) -> Vec<String> {
        modem
            .sent_sms()
            .into_iter()
            .filter(|s| s.to == to)
            .map(|s| s.text)
            .collect()
    }

    #[test]
    fn bal_answers_refuses_and_stops_answering_a_guesser() {
        let (mut path, mut sup, modem, board) = rig(100);
        modem.deliver_sms("+491511111111", "bal A-101 4711");
        path.tick(&mut sup, &board, None).unwrap();
        assert_eq!(
            texts_to(&modem, "+491511111111"),
            ["Flat A-101: 12.34 EUR credit, supply on"]
        );
        // Unknown dwelling, wrong PIN, extra words: the same refusal; the fourth try: no answer, even
        // with the right PIN.
        for text in [
            "BAL B-999 4711",
            "BAL A-101 0000",
            "BAL A-101 4711 please",
            "BAL A-101 4711",
        ] {
            modem.deliver_sms("+491522222222", text);
            path.tick(&mut sup, &board, None).unwrap();
        }
        assert_eq!(texts_to(&modem, "+491522222222"), vec![REFUSAL; 3]);
        // Not BAL, or from something that is not a phone number: deleted, unanswered.
        modem.deliver_sms("+491533333333", "hello");
        modem.deliver_sms("Operator", "BAL A-101 4711");
        path.tick(&mut sup, &board, None).unwrap();
        assert_eq!(modem.sent_sms().len(), 4);
        assert_eq!(modem.stored_sms(), 0);
        let v = path.view();
        assert_eq!((v.sms_sent, v.bal_answered, v.bal_refused), (4, 1, 4));
    }

    #[test]
    fn the_budget_stops_answers_and_survives_a_restart() {
        let (mut path, mut sup, modem, board) = rig(1);
        modem.deliver_sms("+491511111111", "BAL A-101 4711");
        path.tick(&mut sup, &board, None).unwrap();
        modem.deliver_sms("+491511111111", "BAL A-101 4711");
        path.tick(&mut sup, &board, None).unwrap();
        assert_eq!(texts_to(&modem, "+491511111111").len(), 1);
        let file = path.file.clone();
        let again = SmsPath::open(
            path.cfg.clone(),
            GatewayId::new("gw-1").unwrap(),
            file.parent().unwrap(),
            Box::new(|| None),
            Arc::default(),
        );
        assert_eq!(again.view().sms_sent, 1);
        assert_eq!(again.view().month, month_of(unix_now()));
    }
}
