//! The engine: accounts in memory, every change staged in a [`Txn`] and committed to the store in one
//! atomic batch, outputs (relay commands, events) released only after the commit.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use concentrator_security::signed::DocumentSigner;
use concentrator_security::TokenVerifier;

use crate::account::{account_key, Account, AccountState, RelayTarget};
use crate::account_record;
use crate::audit::{AuditEvent, AuditHead, RelayAction};
use crate::calendar::Calendar;
use crate::config::LedgerConfig;
use crate::outbox::{encode_entry, Outbox, OutboxKind, OUTBOX_NEXT_KEY};
use crate::relay::PendingRelay;
use crate::schema::{self, CONFIG_KEY, SCHEMA_VERSION};
use crate::store::{for_each, Batch, Keyspace, Store};
use crate::LedgerError;

/// A relay command for the bus scheduler: send it, then read the relay state back and report it with
/// [`Ledger::relay_observed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCommand {
    /// The meter.
    pub meter: String,
    /// What to do.
    pub action: RelayAction,
    /// Attempt number, from 1.
    pub attempt: u32,
}

/// Something for the daemon to act on or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Drive a relay.
    Relay(RelayCommand),
    /// Report an event (journal, head-end, in-home display).
    Event(LedgerEvent),
}

/// Events for the log and the head-end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerEvent {
    /// The balance fell below a warning level.
    LowCredit {
        /// The meter.
        meter: String,
        /// The level crossed, minor units.
        level_minor: i64,
        /// The balance now.
        balance_minor: i64,
    },
    /// The account's state changed.
    StateChanged {
        /// The meter.
        meter: String,
        /// Before.
        from: AccountState,
        /// After.
        to: AccountState,
    },
    /// Credit is exhausted but the supply stays on (friendly credit or a protected dwelling).
    FriendlyCredit {
        /// The meter.
        meter: String,
        /// The balance now.
        balance_minor: i64,
    },
    /// A reading was not charged: the register went backwards or jumped implausibly.
    RegisterAnomaly {
        /// The meter.
        meter: String,
        /// The baseline held.
        held_wh: u64,
        /// The reading.
        read_wh: u64,
    },
    /// A new register baseline was taken without a charge.
    Rebaselined {
        /// The meter.
        meter: String,
        /// Why.
        reason: crate::audit::RebaselineReason,
        /// Old baseline.
        from_wh: u64,
        /// New baseline.
        to_wh: u64,
    },
    /// The relay read back differs from what the ledger wants, with no command pending.
    RelayMismatch {
        /// The meter.
        meter: String,
        /// Wanted.
        target: RelayTarget,
        /// Read back.
        observed: crate::audit::RelayState,
    },
    /// The meter did not obey a relay command after every attempt.
    RelayAlarm {
        /// The meter.
        meter: String,
        /// The command.
        action: RelayAction,
        /// Attempts made.
        attempts: u32,
        /// The last state read back, if any.
        observed: Option<crate::audit::RelayState>,
    },
}

/// Changes staged for one atomic commit.
#[derive(Debug)]
pub(crate) struct Txn {
    pub(crate) batch: Batch,
    pub(crate) head: AuditHead,
    pub(crate) outbox_next: u64,
    outbox_touched: bool,
    pub(crate) touched: BTreeMap<String, Account>,
    pub(crate) outputs: Vec<Output>,
    pub(crate) relay: Vec<(String, Option<PendingRelay>)>,
    pub(crate) tokens: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Txn {
    pub(crate) fn audit(&mut self, at: u64, meter: &str, event: AuditEvent) {
        let (k, v) = self.head.append(at, meter, event);
        self.batch.put(Keyspace::Audit, k, v);
    }

    pub(crate) fn outbox(&mut self, kind: OutboxKind, payload: &[u8]) -> u64 {
        let seq = self.outbox_next;
        self.batch.put(
            Keyspace::Outbox,
            seq.to_be_bytes().to_vec(),
            encode_entry(kind, payload),
        );
        self.outbox_next += 1;
        self.outbox_touched = true;
        seq
    }

    fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.touched.is_empty()
    }
}

/// The prepayment engine for the meters of one gateway.
///
/// Sans-IO apart from the store: the daemon feeds it readings ([`Ledger::on_register`]), tokens
/// ([`Ledger::apply_token`]), the clock ([`Ledger::tick`]) and relay read-backs
/// ([`Ledger::relay_observed`]), and takes relay commands and events from [`Ledger::poll_output`].
#[derive(Debug)]
pub struct Ledger<S: Store> {
    pub(crate) store: S,
    pub(crate) config: LedgerConfig,
    pub(crate) calendar: Calendar,
    pub(crate) verifier: TokenVerifier,
    pub(crate) signer: DocumentSigner,
    pub(crate) accounts: BTreeMap<String, Account>,
    pub(crate) head: AuditHead,
    /// The audit head as of the last flush: what survives a crash, so the only head worth anchoring.
    pub(crate) durable_head: AuditHead,
    pub(crate) outbox_next: u64,
    pub(crate) unflushed: bool,
    pub(crate) pending: BTreeMap<String, PendingRelay>,
    pub(crate) outputs: VecDeque<Output>,
    /// The serials of the token records, per meter (a copy of the Tokens keyspace's keys).
    pub(crate) applied: BTreeMap<String, BTreeSet<u64>>,
    /// Tariffs received from the head-end ([`crate::tariff_schedule`]).
    pub(crate) tariffs: crate::tariff_schedule::Schedule,
}

/// Reads every account of a store (for the CLI and checks; the engine keeps its own copy).
pub fn load_accounts<S: Store + ?Sized>(
    store: &S,
) -> Result<BTreeMap<String, Account>, LedgerError> {
    let mut accounts = BTreeMap::new();
    for_each(store, Keyspace::Accounts, |k, v| {
        let account: Account = account_record::decode(v).map_err(|e| LedgerError::Corrupt {
            keyspace: Keyspace::Accounts.name(),
            key: String::from_utf8_lossy(k).into_owned(),
            reason: e.to_string(),
        })?;
        accounts.insert(account.meter_id.clone(), account);
        Ok(())
    })?;
    Ok(accounts)
}

/// The configuration stored in a ledger store, if any.
pub fn stored_config<S: Store + ?Sized>(store: &S) -> Result<Option<LedgerConfig>, LedgerError> {
    let Some(v) = store.get(Keyspace::Meta, CONFIG_KEY)? else {
        return Ok(None);
    };
    serde_json::from_slice(&v)
        .map(Some)
        .map_err(|e| LedgerError::Corrupt {
            keyspace: Keyspace::Meta.name(),
            key: "config".into(),
            reason: e.to_string(),
        })
}

impl<S: Store> Ledger<S> {
    /// Opens the ledger: checks or migrates the schema, stores `config` as the configuration in force,
    /// loads the accounts and re-asserts relay states that are not "connected" (their commands are in
    /// [`Ledger::poll_output`]).
    pub fn open(
        store: S,
        config: LedgerConfig,
        verifier: TokenVerifier,
        signer: DocumentSigner,
    ) -> Result<Self, LedgerError> {
        config.validate()?;
        schema::prepare(&store, SCHEMA_VERSION, schema::MIGRATIONS)?;
        let config_json =
            serde_json::to_vec(&config).map_err(|e| LedgerError::Output(e.to_string()))?;
        if store.get(Keyspace::Meta, CONFIG_KEY)?.as_deref() != Some(config_json.as_slice()) {
            let mut b = Batch::new();
            b.put(Keyspace::Meta, CONFIG_KEY, config_json);
            store.commit(&b)?;
            store.flush()?;
        }
        let accounts = load_accounts(&store)?;
        // What a crashed process wrote may not be on disk yet: make it durable before its head is
        // anchored anywhere.
        store.flush()?;
        let head = AuditHead::load(&store)?;
        let applied = crate::restore::load_applied(&store)?;
        let tariffs = crate::tariff_schedule::Schedule::load(&store, config.utc_offset_minutes)?;
        let outbox_next = match store.get(Keyspace::Meta, OUTBOX_NEXT_KEY)? {
            Some(v) => <[u8; 8]>::try_from(v.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| LedgerError::Corrupt {
                    keyspace: Keyspace::Meta.name(),
                    key: "outbox_next".into(),
                    reason: "not 8 octets".into(),
                })?,
            None => 0,
        };
        let mut ledger = Ledger {
            calendar: config.calendar(),
            store,
            config,
            verifier,
            signer,
            accounts,
            head,
            durable_head: head,
            outbox_next,
            unflushed: false,
            pending: BTreeMap::new(),
            outputs: VecDeque::new(),
            applied,
            tariffs,
        };
        ledger.reassert_relays()?;
        Ok(ledger)
    }

    /// Opens with the configuration stored by the last [`Ledger::open`] (for the CLI).
    pub fn open_stored(
        store: S,
        verifier: TokenVerifier,
        signer: DocumentSigner,
    ) -> Result<Self, LedgerError> {
        schema::prepare(&store, SCHEMA_VERSION, schema::MIGRATIONS)?;
        let config = stored_config(&store)?.ok_or(LedgerError::NoStoredConfig)?;
        Ledger::open(store, config, verifier, signer)
    }

    /// The configuration in force.
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// The store (for read-only use such as [`crate::audit::verify`]).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The outbox, for the uplink.
    pub fn outbox(&self) -> Outbox<'_, S> {
        Outbox::new(&self.store)
    }

    /// An account.
    pub fn account(&self, meter: &str) -> Option<&Account> {
        self.accounts.get(meter)
    }

    /// Every account, by meter id.
    pub fn accounts(&self) -> &BTreeMap<String, Account> {
        &self.accounts
    }

    /// The next output (relay command or event), oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Every output waiting.
    pub fn drain_outputs(&mut self) -> Vec<Output> {
        self.outputs.drain(..).collect()
    }

    pub(crate) fn begin(&self) -> Txn {
        Txn {
            batch: Batch::new(),
            head: self.head,
            outbox_next: self.outbox_next,
            outbox_touched: false,
            touched: BTreeMap::new(),
            outputs: Vec::new(),
            relay: Vec::new(),
            tokens: BTreeMap::new(),
        }
    }

    /// The staged copy of an account, cloned from the committed one on first touch.
    pub(crate) fn stage<'t>(
        &self,
        txn: &'t mut Txn,
        meter: &str,
    ) -> Result<&'t mut Account, LedgerError> {
        if !txn.touched.contains_key(meter) {
            let a = self
                .accounts
                .get(meter)
                .ok_or_else(|| LedgerError::UnknownMeter {
                    meter: meter.to_string(),
                })?;
            txn.touched.insert(meter.to_string(), a.clone());
        }
        txn.touched
            .get_mut(meter)
            .ok_or_else(|| LedgerError::UnknownMeter {
                meter: meter.to_string(),
            })
    }

    /// Commits a transaction atomically; with `durable`, flushes before returning. Outputs and in-memory
    /// state change only after the commit succeeded.
    pub(crate) fn finish(&mut self, mut txn: Txn, durable: bool) -> Result<(), LedgerError> {
        if !txn.is_empty() {
            for (meter, account) in &txn.touched {
                txn.batch.put(
                    Keyspace::Accounts,
                    account_key(meter),
                    account_record::encode(account),
                );
            }
            if txn.outbox_touched {
                txn.batch.put(
                    Keyspace::Meta,
                    OUTBOX_NEXT_KEY,
                    txn.outbox_next.to_be_bytes().to_vec(),
                );
            }
            self.store.commit(&txn.batch)?;
            self.unflushed = true;
        }
        self.head = txn.head;
        self.outbox_next = txn.outbox_next;
        self.accounts.extend(txn.touched);
        for key in txn.tokens.keys() {
            if let Some((meter, serial)) = crate::restore::split_token_key(key) {
                self.applied.entry(meter).or_default().insert(serial);
            }
        }
        for (meter, p) in txn.relay {
            match p {
                Some(p) => self.pending.insert(meter, p),
                None => self.pending.remove(&meter),
            };
        }
        self.outputs.extend(txn.outputs);
        if durable && self.unflushed {
            self.flush()?;
        }
        Ok(())
    }

    /// Flushes everything committed so far.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        self.store.flush()?;
        self.unflushed = false;
        self.durable_head = self.head;
        Ok(())
    }

    /// Whether changes were committed since the last flush (charge checkpoints, relay results).
    pub fn unflushed(&self) -> bool {
        self.unflushed
    }

    fn reassert_relays(&mut self) -> Result<(), LedgerError> {
        let mut txn = self.begin();
        let meters: Vec<(String, RelayTarget)> = self
            .accounts
            .iter()
            .filter(|(_, a)| a.relay != RelayTarget::Connected)
            .map(|(m, a)| (m.clone(), a.relay))
            .collect();
        for (meter, target) in meters {
            let action = match target {
                RelayTarget::Disconnected => RelayAction::Cut,
                RelayTarget::Armed => RelayAction::Arm,
                RelayTarget::Connected => continue,
            };
            self.command(&mut txn, &meter, action, 1, 0);
        }
        // Nothing is written for a re-assertion; the commands are logged when their results come back.
        txn.batch = Batch::new();
        txn.head = self.head;
        self.finish(txn, false)
    }

    /// Opens an account for a meter (first tenancy). Flushed before it returns.
    pub fn open_account(&mut self, spec: NewAccount, now: u64) -> Result<(), LedgerError> {
        let meter = spec.meter_id.clone();
        let b = meter.as_bytes();
        if b.is_empty() || b.len() > 32 || !b.iter().all(u8::is_ascii_graphic) {
            return Err(LedgerError::BadMeterId { meter });
        }
        if self.accounts.contains_key(&meter) {
            return Err(LedgerError::AccountExists { meter });
        }
        let mut txn = self.begin();
        let account = self.new_account(&mut txn, spec, 1, None, now);
        txn.touched.insert(meter, account);
        self.finish(txn, true)
    }

    pub(crate) fn new_account(
        &self,
        txn: &mut Txn,
        spec: NewAccount,
        account_no: u32,
        last_serial: Option<u64>,
        now: u64,
    ) -> Account {
        txn.audit(
            now,
            &spec.meter_id,
            AuditEvent::AccountOpened {
                account_no,
                dwelling: spec.dwelling.clone(),
                opening_balance_minor: spec.opening_balance_minor,
                debt_minor: spec.opening_debt_minor,
                register_wh: spec.register_wh,
            },
        );
        self.account_from(spec, account_no, last_serial, now)
    }

    /// A new account's record, without its audit entry.
    pub(crate) fn account_from(
        &self,
        spec: NewAccount,
        account_no: u32,
        last_serial: Option<u64>,
        now: u64,
    ) -> Account {
        let today = self.calendar.local(now).date.0;
        Account {
            meter_id: spec.meter_id,
            account_no,
            dwelling: spec.dwelling,
            model: spec.model,
            protected: spec.protected,
            opened_at: now,
            opening_balance_minor: spec.opening_balance_minor,
            tokens_minor: 0,
            tokens_applied: 0,
            energy_minor: 0,
            standing_minor: 0,
            recovered_minor: 0,
            carry_micro: 0,
            debt_minor: spec.opening_debt_minor.max(0),
            last_serial,
            restored: Vec::new(),
            last_topup: None,
            register: crate::account::Register {
                meter_serial: spec.meter_serial,
                wh: spec.register_wh,
                at: now,
                anomalies: 0,
            },
            emergency_selected: false,
            standing_day: today - 1,
            recovery_day: today - 1,
            block: Default::default(),
            relay: RelayTarget::Connected,
            warned_levels: 0,
            hold: None,
        }
    }

    /// Changes the protected flag of a dwelling (never cut off while set).
    pub fn set_protected(
        &mut self,
        meter: &str,
        protected: bool,
        now: u64,
    ) -> Result<(), LedgerError> {
        let mut txn = self.begin();
        self.stage(&mut txn, meter)?.protected = protected;
        self.settle(&mut txn, meter, now)?;
        self.finish(txn, true)
    }
}

/// What a new account starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// The meter number (as in tokens).
    pub meter_id: String,
    /// The dwelling.
    pub dwelling: String,
    /// The meter model.
    pub model: Option<String>,
    /// Never cut off.
    pub protected: bool,
    /// Opening balance, minor units.
    pub opening_balance_minor: i64,
    /// Opening debt (arrears) to recover, minor units.
    pub opening_debt_minor: i64,
    /// The register baseline, Wh.
    pub register_wh: u64,
    /// The physical meter's serial, if known.
    pub meter_serial: Option<String>,
}
