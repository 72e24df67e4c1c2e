//! The ledger thread's loop: readings in, checkpoints, the clock, the token inbox, relay jobs, events
//! and the status board.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concentrator_ledger::{
    Ledger, LedgerEvent, NewAccount, OrderOutcome, Output, Reading, RelayOrder, RelayState,
    RestoreAccountError, SledStore, TopUpError, TopUpReceipt,
};
use concentrator_security::restore::AccountStatement;

use super::archiving::Archiving;
use super::inbox::TokenInbox;
use super::relay::RelayDriver;
use super::restoring::Restoring;
use super::{
    places, unix_now, LedgerReports, PrepaidMeter, RegisterRead, RelayReply, RelayRequest,
    RestoreReply, TariffReply, TenancyReply, TenancyRequest, ToLedger, TokenReply, TokenRequest,
};
use crate::status::{AccountStatus, StatusBoard};

/// The longest the loop sleeps waiting for a reading.
const WAKE: Duration = Duration::from_millis(100);
/// How often `tick` runs and the status board is refreshed.
const TICK_EVERY: Duration = Duration::from_secs(1);
/// How long a relay order's answer waits for the read-back before the order's sender is forgotten.
const RELAY_ANSWER: Duration = Duration::from_secs(60);
/// How often the token inbox is scanned.
const INBOX_EVERY: Duration = Duration::from_millis(250);
/// How often committed charges are flushed, so the audit head that goes up as the chain's anchor (the
/// flushed one) keeps up with the log: one fsync a minute at most (sled writes every 500 ms anyway).
const ANCHOR_EVERY: Duration = Duration::from_secs(60);
/// The most top-up commands applied in one commit and flush.
const TOKENS_PER_COMMIT: usize = 64;

pub(super) struct Service {
    ledger: Ledger<SledStore>,
    book: Vec<PrepaidMeter>,
    places: HashMap<(String, String), usize>,
    /// The newest register of each meter not yet committed: (Wh, unix seconds).
    latest: HashMap<usize, (u64, u64)>,
    committed: HashMap<usize, Instant>,
    checkpoint: Duration,
    archiving: Archiving,
    inbox: Option<TokenInbox>,
    relays: RelayDriver,
    read_back: HashMap<String, RelayState>,
    /// Inbox tokens kept for meters without an account yet, and the meter each waits for.
    inbox_waiting: HashMap<PathBuf, String>,
    /// Relay orders waiting for their read-back, by meter.
    relay_waiters: HashMap<String, Vec<(Sender<RelayReply>, Instant)>>,
    status: Arc<StatusBoard>,
    stop: Arc<AtomicBool>,
    rx: Receiver<ToLedger>,
    reports: Option<Box<dyn LedgerReports>>,
    /// Meters without an account in the store, waiting for the head-end (`restore = "headend"`).
    restoring: Restoring,
}

impl Service {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        ledger: Ledger<SledStore>,
        book: Vec<PrepaidMeter>,
        restore_from_headend: bool,
        checkpoint: Duration,
        archiving: Archiving,
        inbox: Option<TokenInbox>,
        relays: RelayDriver,
        status: Arc<StatusBoard>,
        stop: Arc<AtomicBool>,
        rx: Receiver<ToLedger>,
        reports: Option<Box<dyn LedgerReports>>,
    ) -> Self {
        let mut restoring = Restoring::default();
        if restore_from_headend {
            for (index, m) in book.iter().enumerate() {
                if ledger.account(&m.meter_id).is_none() {
                    log::warn!(
                        "meter {} ({}): no account in the store; restoring it from the head-end before charging or accepting tokens",
                        m.meter_id,
                        m.dwelling
                    );
                    restoring.start(index);
                }
            }
        }
        Service {
            restoring,
            places: places(&book),
            ledger,
            book,
            latest: HashMap::new(),
            committed: HashMap::new(),
            checkpoint,
            archiving,
            inbox,
            relays,
            read_back: HashMap::new(),
            relay_waiters: HashMap::new(),
            inbox_waiting: HashMap::new(),
            status,
            stop,
            rx,
            reports,
        }
    }

    pub(super) fn run(mut self) {
        let mut last_tick: Option<Instant> = None;
        let mut last_scan: Option<Instant> = None;
        let mut last_flush = Instant::now();
        self.outputs();
        while !self.stop.load(Ordering::SeqCst) {
            let first = match self.rx.recv_timeout(WAKE) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // Top-up commands that queued up while the thread was busy go into one commit and one
            // flush (group commit); each is still answered only after that flush.
            let mut tokens: Vec<TokenRequest> = Vec::new();
            let mut next = first;
            while let Some(message) = next.take().or_else(|| self.rx.try_recv().ok()) {
                match message {
                    ToLedger::Token(request) => {
                        tokens.push(request);
                        if tokens.len() >= TOKENS_PER_COMMIT {
                            self.tokens(std::mem::take(&mut tokens));
                        }
                    }
                    // A register of a meter with an account only updates the newest register, which
                    // a top-up does not read: it need not wait for the group.
                    ToLedger::Reading(read) if self.has_account(&read) => self.reading(read),
                    // Anything else sees the store as the tokens before it left it.
                    other => {
                        self.tokens(std::mem::take(&mut tokens));
                        self.received(other);
                    }
                }
            }
            self.tokens(tokens);
            self.checkpoints();
            let now = unix_now();
            if last_tick.is_none_or(|t| t.elapsed() >= TICK_EVERY) {
                last_tick = Some(Instant::now());
                self.relay_waiters.retain(|_, w| {
                    w.retain(|(_, since)| since.elapsed() < RELAY_ANSWER);
                    !w.is_empty()
                });
                if let Err(e) = self.ledger.tick(now) {
                    log::error!("ledger clock tick failed: {e}");
                }
                if self.ledger.unflushed() && last_flush.elapsed() >= ANCHOR_EVERY {
                    last_flush = Instant::now();
                    if let Err(e) = self.ledger.flush() {
                        log::error!("flushing the ledger's charges failed: {e}; they are charged again from the registers after a crash");
                    }
                }
                self.publish();
                self.offer_accounts();
                self.ask_restores(now);
                self.archiving.tick(&mut self.ledger, now);
            }
            if last_scan.is_none_or(|t| t.elapsed() >= INBOX_EVERY) {
                last_scan = Some(Instant::now());
                self.scan_inbox(now);
            }
            for (meter, state) in self.relays.poll() {
                if let Some(waiters) = self.relay_waiters.remove(&meter) {
                    for (reply, _) in waiters {
                        let _ = reply.send(RelayReply::ReadBack(state));
                    }
                }
                if self.read_back.insert(meter.clone(), state) != Some(state) {
                    if let Some(r) = self.reports.as_mut() {
                        r.relay(&meter, state);
                    }
                }
                if let Err(e) = self.ledger.relay_observed(&meter, state, unix_now()) {
                    log::error!("meter {meter}: recording the relay read-back failed: {e}");
                }
            }
            self.outputs();
        }
        if let Err(e) = self.ledger.flush() {
            log::error!("flushing the ledger at stop failed: {e}; the last checkpoints are charged again from the registers at the next start");
        }
        self.publish();
        log::info!("ledger stopped");
    }

    fn received(&mut self, message: ToLedger) {
        match message {
            ToLedger::Reading(read) => self.reading(read),
            ToLedger::Token(request) => self.tokens(vec![request]),
            ToLedger::Account { meter, reply } => {
                let _ = reply.send(self.summary(&meter));
            }
            ToLedger::Relay(request) => self.relay_order(request),
            ToLedger::Tenancy(request) => {
                // The old tenant pays up to the newest register read, not the last checkpoint.
                self.charge_now();
                let answer = self.tenancy(&request);
                self.outputs();
                self.publish();
                let _ = request.reply.send(answer);
            }
            ToLedger::Restore {
                meter,
                statement,
                reply,
            } => {
                let answer = self.restore(&meter, &statement);
                self.outputs();
                self.publish();
                let _ = reply.send(answer);
            }
            ToLedger::Anchor { anchor, reply } => {
                let answer = self
                    .archiving
                    .confirmed(&mut self.ledger, anchor, unix_now());
                let _ = reply.send(answer);
            }
            ToLedger::Tariff { change, reply } => {
                let _ = reply.send(self.tariff(&change));
            }
        }
    }

    /// A change-of-tenancy order: the account is closed with a signed settlement and the next tenant's
    /// opened (flushed), or why not.
    fn tenancy(&mut self, r: &TenancyRequest) -> TenancyReply {
        let currency = self.ledger.config().currency.clone();
        match self
            .ledger
            .apply_tenancy_order(r.meter.as_deref(), &r.order, unix_now())
        {
            Ok(out) => {
                let s = &out.settlement;
                let figure = if s.debt_minor > 0 {
                    format!(
                        "debt {} {currency}",
                        concentrator_ledger::money::format_minor(s.debt_minor as i64)
                    )
                } else {
                    format!(
                        "credit {} {currency}",
                        concentrator_ledger::money::format_minor(s.remaining_credit_minor as i64)
                    )
                };
                let text = format!(
                    "meter {}: account {} of {} closed by order {} ({figure}, register {} Wh); the new tenant's account is open",
                    s.meter_id, s.account_no, s.old_customer, s.order_id, s.closing_register_wh
                );
                if out.already_done {
                    log::info!(
                        "{text} (order from {} carried out before; its settlement sent again)",
                        r.by
                    );
                    TenancyReply::AlreadyDone(text)
                } else {
                    log::info!("{text} (order from {})", r.by);
                    TenancyReply::Done(text)
                }
            }
            Err(e) if e.retry_later() => {
                log::warn!("change of tenancy from {} not carried out yet: {e}", r.by);
                TenancyReply::NotNow(e.to_string())
            }
            Err(e) => {
                log::warn!("change of tenancy from {} refused: {e}", r.by);
                TenancyReply::Refused(e.to_string())
            }
        }
    }

    /// A tariff update from the head-end: scheduled (flushed) or refused, with the words for it.
    fn tariff(&mut self, change: &concentrator_ledger::TariffChange) -> TariffReply {
        match self.ledger.schedule_tariff(change, unix_now()) {
            Ok(Ok(concentrator_ledger::TariffOutcome::Scheduled(words))) => {
                log::info!("{words}");
                TariffReply::Scheduled(words)
            }
            Ok(Ok(concentrator_ledger::TariffOutcome::AlreadyScheduled(words))) => {
                TariffReply::Already(words)
            }
            Ok(Err(refused)) => {
                log::warn!("tariff update from the head-end: {refused}");
                TariffReply::Refused(refused.to_string())
            }
            Err(e) => {
                log::error!("tariff update from the head-end not stored: {e}");
                TariffReply::NotNow(format!(
                    "the ledger store failed: {e}; send the tariff again"
                ))
            }
        }
    }

    /// A relay order through the ledger's relay authority; answered with the read-back, or at once when
    /// refused.
    fn relay_order(&mut self, r: RelayRequest) {
        if self.ledger.account(&r.meter).is_none() {
            let _ = r.reply.send(RelayReply::NotNow(format!(
                "meter {} has no account until its first reading; its relay is the ledger's to switch",
                r.meter
            )));
            return;
        }
        match self
            .ledger
            .order_relay(&r.meter, r.order, &r.by, unix_now())
        {
            Ok(OrderOutcome::Commanded(action)) => {
                log::info!(
                    "meter {}: relay {action:?} ordered by {} (held off: {})",
                    r.meter,
                    r.by,
                    r.order == RelayOrder::Open
                );
                self.relay_waiters
                    .entry(r.meter)
                    .or_default()
                    .push((r.reply, Instant::now()));
            }
            Ok(OrderOutcome::Refused(why)) => {
                log::warn!("meter {}: relay order by {} refused: {why}", r.meter, r.by);
                let _ = r.reply.send(RelayReply::Refused(why));
            }
            Err(e) => {
                let _ = r.reply.send(RelayReply::NotNow(format!(
                    "the ledger could not record the relay order: {e}"
                )));
            }
        }
    }

    /// Offers every account to the reports (the uplink sends those that changed).
    fn offer_accounts(&mut self) {
        let Some(mut reports) = self.reports.take() else {
            return;
        };
        for m in &self.book {
            if let Some(s) = self.summary(&m.meter_id) {
                reports.account(&m.meter_id, &s);
            }
        }
        self.reports = Some(reports);
    }

    /// The account of `meter` as the protocol's account summary (0x04), with every serial applied to the
    /// meter (ranges) and the audit chain's head as its outside anchor. The tariff id is the one in
    /// force now (0: the `[ledger]` file's tariff; else the head-end's tariff update).
    fn summary(&self, meter: &str) -> Option<concentrator_protocol::AccountSummary> {
        let a = self.ledger.account(meter)?;
        let charged = a.energy_minor.saturating_add(a.standing_minor);
        let head = self.ledger.audit_head();
        Some(concentrator_protocol::AccountSummary {
            at: unix_now(),
            balance_minor: a.balance_minor(),
            currency: self.ledger.config().currency.clone(),
            last_token_serial: a.last_serial,
            register_wh: a.register.wh,
            tariff_id: self.ledger.tariff_id_at(unix_now()),
            charged_minor: u64::try_from(charged).unwrap_or(0),
            relay_closed: a.relay == concentrator_ledger::RelayTarget::Connected,
            applied: Some(
                self.ledger
                    .applied_serials(meter)
                    .into_iter()
                    .map(|r| concentrator_protocol::SerialRange {
                        first: r.first,
                        last: r.last,
                    })
                    .collect(),
            ),
            audit: Some(concentrator_protocol::AuditAnchor {
                len: head.next_seq,
                head: head.hash,
            }),
        })
    }

    /// Top-up commands' tokens: each applied for the meter it was addressed to (the same check and store
    /// transaction as the inbox), all in one commit and flush, and each answered after that flush.
    fn tokens(&mut self, requests: Vec<TokenRequest>) {
        if requests.is_empty() {
            return;
        }
        let results = {
            let batch: Vec<(&str, &[u8])> = requests
                .iter()
                .map(|r| (r.meter.as_str(), r.token.as_slice()))
                .collect();
            self.ledger.apply_tokens_for(&batch, unix_now())
        };
        let answers: Vec<(Sender<TokenReply>, TokenReply)> = requests
            .into_iter()
            .zip(results)
            .map(|(r, result)| {
                let answer = self.token_answer(&r.meter, result);
                (r.reply, answer)
            })
            .collect();
        self.outputs();
        self.publish();
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
    }

    /// The answer to a top-up command, logged.
    fn token_answer(&self, meter: &str, result: Result<TopUpReceipt, TopUpError>) -> TokenReply {
        match result {
            Ok(r) => {
                log_receipt("applied (head-end command)", &r);
                TokenReply::Applied(r)
            }
            Err(TopUpError::Replayed { original, .. }) => {
                log_receipt("already applied", &original);
                TokenReply::AlreadyApplied(*original)
            }
            Err(e @ TopUpError::AppliedBeforeRestore { .. }) => {
                log::info!("meter {meter}: {e}");
                TokenReply::AppliedBeforeRestore(e.to_string())
            }
            Err(TopUpError::UnknownMeter { meter })
                if self.book.iter().any(|m| m.meter_id == meter) =>
            {
                TokenReply::NotNow(self.no_account_yet(&meter))
            }
            Err(TopUpError::Token(e)) if e.retry_later() => {
                log::warn!("meter {meter}: token from the head-end not applied yet: {e}");
                TokenReply::NotNow(format!(
                    "{e}; the same token applies once this gateway's clock is right"
                ))
            }
            Err(TopUpError::Ledger(e)) => {
                log::error!("meter {meter}: token from the head-end not applied: {e}");
                TokenReply::NotNow(format!(
                    "the ledger store failed: {e}; send the token again"
                ))
            }
            Err(refusal) => {
                log::warn!("meter {meter}: token from the head-end refused: {refusal}");
                TokenReply::Refused(refusal.to_string())
            }
        }
    }

    /// Why a configured meter without an account takes no token now.
    fn no_account_yet(&self, meter: &str) -> String {
        let restoring = self
            .book
            .iter()
            .position(|m| m.meter_id == meter)
            .is_some_and(|i| self.restoring.contains(i));
        if restoring {
            format!("account of meter {meter} is being restored from the head-end; send the token again")
        } else {
            format!("meter {meter} has no account until its first reading; send the token again")
        }
    }

    /// Queues the restore requests that are due (every minute per meter until its account exists).
    fn ask_restores(&mut self, now: u64) {
        let due = self.restoring.due(Instant::now(), now);
        let Some(reports) = self.reports.as_mut() else {
            return;
        };
        for (index, request) in due {
            let meter = &self.book[index].meter_id;
            if !reports.restore_request(meter, &request) {
                log::warn!("meter {meter}: its account cannot be restored: it has no security context or AKA credentials for the uplink; give it one, or set [ledger] restore = \"none\"");
            }
        }
    }

    /// The head-end's account statement for `meter`: the account is created from it (flushed), and the
    /// readings kept while waiting are charged from its register on.
    fn restore(&mut self, meter: &str, statement: &[u8]) -> RestoreReply {
        if self.ledger.account(meter).is_some() {
            return RestoreReply::AlreadyOpen;
        }
        let Some(index) = self.book.iter().position(|m| m.meter_id == meter) else {
            return RestoreReply::Refused(format!(
                "meter {meter} is not configured on this gateway"
            ));
        };
        let m = &self.book[index];
        let baseline = self.restoring.first(index);
        let spec = NewAccount {
            meter_id: m.meter_id.clone(),
            dwelling: m.dwelling.clone(),
            model: m.model.clone(),
            protected: m.protected,
            opening_balance_minor: m.opening_balance_minor,
            opening_debt_minor: 0,
            register_wh: baseline.map_or(0, |(wh, _)| wh),
            meter_serial: Some(m.place.address.clone()),
        };
        if baseline.is_none() && statement_without_register(statement) {
            return RestoreReply::NotNow(format!(
                "meter {meter} has not been read yet, and a new account's baseline is its first reading; send the statement again"
            ));
        }
        match self.ledger.restore_account(spec, statement, unix_now()) {
            Ok(a) => {
                log::info!(
                    "meter {meter} ({}): account restored from the head-end with {} {} at register {} Wh, {} serials applied before",
                    a.dwelling,
                    concentrator_ledger::money::format_minor(a.balance_minor()),
                    self.ledger.config().currency,
                    a.register.wh,
                    a.restored.iter().map(|r| r.last - r.first + 1).sum::<u64>()
                );
                if let Some(latest) = self.restoring.done(index) {
                    self.latest.insert(index, latest);
                }
                RestoreReply::Restored
            }
            Err(RestoreAccountError::Ledger(e)) => {
                log::error!("meter {meter}: restoring the account failed: {e}");
                RestoreReply::NotNow(format!(
                    "the ledger store failed: {e}; send the statement again"
                ))
            }
            Err(RestoreAccountError::AccountExists { .. }) => RestoreReply::AlreadyOpen,
            Err(refusal) => {
                log::warn!("meter {meter}: account statement from the head-end refused: {refusal}");
                RestoreReply::Refused(refusal.to_string())
            }
        }
    }

    /// Whether the meter of a register read has an account (its reading then only updates the newest
    /// register).
    fn has_account(&self, read: &RegisterRead) -> bool {
        self.places
            .get(&(read.bus.clone(), read.address.clone()))
            .is_some_and(|i| self.ledger.account(&self.book[*i].meter_id).is_some())
    }

    fn reading(&mut self, read: RegisterRead) {
        let Some(&index) = self.places.get(&(read.bus.clone(), read.address.clone())) else {
            return;
        };
        let meter = &self.book[index];
        if self.ledger.account(&meter.meter_id).is_some() {
            self.latest.insert(index, (read.wh, read.at));
            return;
        }
        if self.restoring.reading(index, read.wh, read.at) {
            return;
        }
        let spec = NewAccount {
            meter_id: meter.meter_id.clone(),
            dwelling: meter.dwelling.clone(),
            model: meter.model.clone(),
            protected: meter.protected,
            opening_balance_minor: meter.opening_balance_minor,
            opening_debt_minor: 0,
            register_wh: read.wh,
            meter_serial: Some(meter.place.address.clone()),
        };
        match self.ledger.open_account(spec, read.at) {
            Ok(()) => {
                log::info!(
                    "meter {} ({}): account opened with {} at register {} Wh",
                    meter.meter_id,
                    meter.dwelling,
                    concentrator_ledger::money::format_minor(meter.opening_balance_minor),
                    read.wh
                );
                self.committed.insert(index, Instant::now());
            }
            Err(e) => log::error!("meter {}: cannot open its account: {e}", meter.meter_id),
        }
    }

    /// A meter that may have to be cut soon is charged at every reading, not only every `checkpoint_s`:
    /// its supply is on, it is not protected, and its balance is below the highest low-credit level
    /// (or zero when none is configured). So a cut-off is decided one poll after the credit runs out,
    /// while meters in credit write a checkpoint only every `checkpoint_s`.
    fn urgent(&self, index: usize) -> bool {
        let config = self.ledger.config();
        let level = config
            .low_credit_levels_minor
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(0);
        self.ledger
            .account(&self.book[index].meter_id)
            .is_some_and(|a| {
                a.relay == concentrator_ledger::RelayTarget::Connected
                    && !a.protected
                    && a.balance_minor() <= level
            })
    }

    /// Commits the registers whose checkpoint is due, in one commit.
    fn checkpoints(&mut self) {
        self.commit_registers(false);
    }

    /// Commits every register read and not yet charged, due or not (before an account is closed).
    fn charge_now(&mut self) {
        self.commit_registers(true);
    }

    fn commit_registers(&mut self, all: bool) {
        let due: Vec<usize> = self
            .latest
            .keys()
            .copied()
            .filter(|i| {
                all || self.urgent(*i)
                    || self
                        .committed
                        .get(i)
                        .is_none_or(|t| t.elapsed() >= self.checkpoint)
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let readings: Vec<Reading> = due
            .iter()
            .filter_map(|i| {
                let (wh, at) = self.latest.get(i)?;
                let m = &self.book[*i];
                Some(Reading {
                    meter: m.meter_id.clone(),
                    meter_serial: m.place.address.clone(),
                    register_wh: *wh,
                    at: *at,
                })
            })
            .collect();
        match self.ledger.on_readings(&readings) {
            Ok(()) => {
                for i in due {
                    self.latest.remove(&i);
                    self.committed.insert(i, Instant::now());
                }
            }
            Err(e) => log::error!(
                "charging {} readings failed: {e}; they are charged at the next checkpoint",
                readings.len()
            ),
        }
    }

    fn scan_inbox(&mut self, now: u64) {
        let Some(inbox) = self.inbox.clone() else {
            return;
        };
        // Tokens kept for meters that still have no account are skipped until the meter has one.
        let ledger = &self.ledger;
        self.inbox_waiting
            .retain(|path, meter| path.exists() && ledger.account(meter).is_none());
        let waiting = &self.inbox_waiting;
        let files = match inbox.pending(|p| waiting.contains_key(p)) {
            Ok(files) => files,
            Err(e) => {
                log::warn!("cannot list the token inbox {}: {e}", inbox.dir().display());
                return;
            }
        };
        let mut tokens: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for file in files {
            match std::fs::read(&file) {
                Ok(bytes) => tokens.push((file, super::inbox::token_octets(&bytes))),
                Err(e) => log::warn!("cannot read the token {}: {e}", file.display()),
            }
        }
        if tokens.is_empty() {
            return;
        }
        let refs: Vec<&[u8]> = tokens.iter().map(|(_, t)| t.as_slice()).collect();
        let results = self.ledger.apply_tokens(&refs, now);
        for ((file, _), result) in tokens.iter().zip(results) {
            let name = file.display();
            let done = match result {
                Ok(r) => {
                    log_receipt("applied", &r);
                    inbox.accepted(file, &r.signed)
                }
                Err(TopUpError::Replayed { original, .. }) => {
                    log_receipt("already applied", &original);
                    inbox.accepted(file, &original.signed)
                }
                Err(TopUpError::UnknownMeter { meter })
                    if self.book.iter().any(|m| m.meter_id == meter) =>
                {
                    log::info!(
                        "token {name}: {}; kept in the inbox until then",
                        self.no_account_yet(&meter)
                    );
                    self.inbox_waiting.insert(file.clone(), meter);
                    continue;
                }
                Err(TopUpError::Ledger(e)) => {
                    log::error!(
                        "token {name} not applied: {e}; kept in the inbox for the next try"
                    );
                    continue;
                }
                Err(TopUpError::Token(e)) if e.retry_later() => {
                    log::debug!("token {name} not applied yet: {e}; kept in the inbox until this gateway's clock is right");
                    continue;
                }
                Err(refusal) => {
                    log::warn!("token {name} refused: {refusal}");
                    inbox.refused(file, &refusal.to_string())
                }
            };
            if let Err(e) = done {
                log::error!("token {name}: cannot move it out of the inbox: {e}; it is recognised as applied at the next scan");
            }
        }
    }

    fn outputs(&mut self) {
        for output in self.ledger.drain_outputs() {
            match output {
                Output::Relay(command) => {
                    match self.book.iter().find(|m| m.meter_id == command.meter) {
                        Some(m) => self.relays.submit(command, m.place.clone()),
                        None => log::warn!(
                            "meter {}: relay {:?} wanted, but the meter is not in the configuration",
                            command.meter,
                            command.action
                        ),
                    }
                }
                Output::Event(event) => {
                    log_event(&event);
                    if let Some(r) = self.reports.as_mut() {
                        r.event(&event);
                    }
                }
            }
        }
    }

    fn publish(&self) {
        let config = self.ledger.config();
        let ec = config.emergency.amount_minor;
        let accounts = self
            .book
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let a = self.ledger.account(&m.meter_id);
                let status = AccountStatus {
                    bus: m.place.bus.clone(),
                    address: m.place.address.clone(),
                    dwelling: m.dwelling.clone(),
                    state: match a {
                        Some(a) => a.state(ec).name(),
                        None if self.restoring.contains(i) => "restoring",
                        None => "not-opened",
                    }
                    .to_string(),
                    balance_minor: a.map_or(0, |a| a.balance_minor()),
                    debt_minor: a.map_or(0, |a| a.total_debt_minor()),
                    currency: config.currency.clone(),
                    relay_read_back: self.read_back.get(&m.meter_id).map(|s| {
                        match s {
                            RelayState::Open => "open",
                            RelayState::Closed => "closed",
                            RelayState::Armed => "armed",
                        }
                        .to_string()
                    }),
                    last_serial: a.and_then(|a| a.last_serial),
                    held_by: a.and_then(|a| a.hold.as_ref()).map(|h| h.by.clone()),
                    last_topup_unix: a.and_then(|a| a.last_topup.as_ref()).map(|t| t.at),
                    last_topup_minor: a
                        .and_then(|a| a.last_topup.as_ref())
                        .map(|t| t.amount_minor),
                };
                (m.meter_id.clone(), status)
            })
            .collect::<BTreeMap<_, _>>();
        self.status.set_accounts(accounts);
    }
}

/// Whether a statement (as far as it parses) gives no register: a new account, whose baseline is the
/// first reading. A statement that does not parse is left to the ledger to refuse.
fn statement_without_register(statement: &[u8]) -> bool {
    concentrator_security::signed::SignedDocument::decode(statement)
        .ok()
        .and_then(|d| AccountStatement::decode(&d.body).ok())
        .is_some_and(|s| s.register_wh.is_none())
}

fn log_receipt(what: &str, r: &TopUpReceipt) {
    log::info!(
        "meter {}: token {} {what}: {} {}, balance {}",
        r.receipt.meter_id,
        r.receipt.serial,
        concentrator_ledger::money::format_minor(
            i64::try_from(r.receipt.amount_minor).unwrap_or(i64::MAX)
        ),
        String::from_utf8_lossy(&r.receipt.currency),
        concentrator_ledger::money::format_minor(r.receipt.balance_after_minor)
    );
}

fn log_event(event: &LedgerEvent) {
    use concentrator_ledger::money::format_minor;
    match event {
        LedgerEvent::LowCredit {
            meter,
            level_minor,
            balance_minor,
        } => log::warn!(
            "meter {meter}: low credit, balance {} below {}",
            format_minor(*balance_minor),
            format_minor(*level_minor)
        ),
        LedgerEvent::StateChanged { meter, from, to } => {
            log::info!("meter {meter}: account {} -> {}", from.name(), to.name())
        }
        LedgerEvent::FriendlyCredit {
            meter,
            balance_minor,
        } => log::warn!(
            "meter {meter}: credit exhausted (balance {}), supply kept on (friendly credit or protected dwelling)",
            format_minor(*balance_minor)
        ),
        LedgerEvent::RegisterAnomaly {
            meter,
            held_wh,
            read_wh,
        } => log::warn!(
            "meter {meter}: register read {read_wh} Wh against the checkpoint {held_wh} Wh (backwards or a jump); not charged"
        ),
        LedgerEvent::Rebaselined {
            meter,
            reason,
            from_wh,
            to_wh,
        } => log::warn!("meter {meter}: new register baseline {to_wh} Wh (was {from_wh} Wh): {reason}"),
        LedgerEvent::RelayMismatch {
            meter,
            target,
            observed,
        } => log::warn!("meter {meter}: relay read back {observed} but should be {target}; sending the command again"),
        LedgerEvent::RelayAlarm {
            meter,
            action,
            attempts,
            observed,
        } => log::warn!(
            "meter {meter}: relay did not obey {action} after {attempts} attempts ({}); check the meter",
            observed.map_or_else(|| "nothing read back".to_string(), |o| format!("last read back {o}"))
        ),
    }
}
