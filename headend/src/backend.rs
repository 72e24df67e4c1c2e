//! The payment server as the phone-facing server sees it: [`concentrator_mpc::backend::Backend`].

use std::sync::{mpsc, Arc, Mutex};

use concentrator_mpc::backend::{
    Backend, BackendError, Customer, Delivery, HistoryEntry, HistoryKind, MeterView, Purchase,
};
use concentrator_mpc::server::{Gate, GateConfig};
use concentrator_protocol::event_code;
use concentrator_security::token::{CreditToken, TokenSigner};
use openssl::hash::{hash, MessageDigest};

use crate::audit::{Draft, EntryKind, PaymentRecord};
use crate::notify::Notifier;
use crate::store::{
    customer_key, key2, meter_key, pending_key, token_key, Batch, CustomerRecord, Store,
    StoreError, TokenRecord, TokenRef, TokenState,
};

/// Money settings of top-ups.
#[derive(Debug, Clone)]
pub struct TopUpRules {
    /// ISO 4217 of every token.
    pub currency: String,
    /// Token validity, s.
    pub lifetime_s: u64,
    /// Smallest amount, minor units.
    pub min_minor: u64,
    /// Largest amount, minor units.
    pub max_minor: u64,
}

/// The [`Backend`] of the head-end.
pub struct PaymentServer {
    store: Arc<Store>,
    payments: Arc<PaymentRecord>,
    notifier: Arc<Notifier>,
    signer: TokenSigner,
    rules: TopUpRules,
    nudge: Mutex<Option<mpsc::Sender<String>>>,
    /// Names this process in the purchases it announces to other workers ([`PURCHASES`]).
    origin: String,
    topup: Mutex<()>,
    /// Shared by the phone-facing front ends (the `mpc` server and the web app).
    gate: Arc<Gate>,
}

impl std::fmt::Debug for PaymentServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentServer")
            .field("rules", &self.rules)
            .finish()
    }
}

fn unavailable(e: StoreError) -> BackendError {
    BackendError::Unavailable(e.to_string())
}

/// SHA-256 (hex) of an authorization code as stored.
pub fn code_hash(code: &str) -> String {
    hash(MessageDigest::sha256(), code.trim().as_bytes())
        .map(hex::encode)
        .unwrap_or_default()
}

use concentrator_protocol::unix_now as now;

fn to_customer(r: CustomerRecord) -> Customer {
    Customer {
        id: r.id,
        user: r.user,
        msisdn: r.msisdn,
        imsi: r.imsi,
        k: r.k,
        opc: r.opc,
        sqn: r.sqn,
        password_hash: r.password_hash,
        meters: r.meters,
    }
}

fn delivery(s: TokenState) -> Delivery {
    match s {
        TokenState::Pending => Delivery::Pending,
        TokenState::Applied => Delivery::Applied,
        TokenState::Refused => Delivery::Refused,
    }
}

fn to_purchase(t: &TokenRecord) -> Purchase {
    Purchase {
        record: t.record,
        meter: t.meter.clone(),
        serial: t.serial,
        amount_minor: t.amount_minor,
        currency: t.currency.clone(),
        issued_at: t.issued_at,
        expires_at: t.expires_at,
        token: hex::decode(&t.token).unwrap_or_default(),
        delivery: delivery(t.state),
    }
}

/// The database channel on which purchases are announced to every worker:
/// `ORIGIN<tab>GATEWAY<tab>METER`.
pub const PURCHASES: &str = "headend_purchases";

impl PaymentServer {
    /// What names this process in the purchases it announces ([`PURCHASES`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A backend over the store; tokens signed by `signer`.
    pub fn new(
        store: Arc<Store>,
        payments: Arc<PaymentRecord>,
        notifier: Arc<Notifier>,
        signer: TokenSigner,
        rules: TopUpRules,
    ) -> PaymentServer {
        // Tells buyers when their token reaches the gateway, and why a gateway cannot apply it yet.
        crate::notify::spawn_scanner(&notifier, &store);
        PaymentServer {
            store,
            payments,
            notifier,
            signer,
            rules,
            nudge: Mutex::new(None),
            origin: hex::encode(rand::random::<[u8; 8]>()),
            topup: Mutex::new(()),
            gate: Arc::new(Gate::new(GateConfig::default())),
        }
    }

    /// Where to announce a new token, as `GATEWAY<tab>METER` (the MQTT worker delivers it at once,
    /// on the engine that works for the gateway, so that its COUNTs leave in order).
    pub fn set_nudge(&self, tx: Option<mpsc::Sender<String>>) {
        *self.nudge.lock().unwrap_or_else(|p| p.into_inner()) = tx;
    }

    /// When a token was first sent to its gateway and the reason it was refused, if it was (the web
    /// app's `delivered` state and refusal text; the [`Backend`] has neither).
    pub fn delivery_facts(
        &self,
        meter: &str,
        serial: u64,
    ) -> Result<(Option<u64>, Option<String>), BackendError> {
        Ok(self
            .store
            .token(meter, serial)
            .map_err(unavailable)?
            .map(|t| (t.sent_at, t.reason))
            .unwrap_or_default())
    }

    fn customer_record(&self, id: &str) -> Result<CustomerRecord, BackendError> {
        self.store
            .customer(id)
            .map_err(unavailable)?
            .ok_or_else(|| BackendError::NotFound(format!("customer {id} is not enrolled")))
    }

    fn by_index(&self, key: String) -> Result<Option<Customer>, BackendError> {
        let Some(id) = self.store.get::<String>(key).map_err(unavailable)? else {
            return Ok(None);
        };
        Ok(self
            .store
            .customer(&id)
            .map_err(unavailable)?
            .map(to_customer))
    }

    fn customer_tokens(
        &self,
        c: &CustomerRecord,
        meter: Option<&str>,
    ) -> Result<Vec<TokenRecord>, BackendError> {
        let mut out = Vec::new();
        // The meters the customer has, and those they moved out of (their purchases stay theirs).
        let mut meters = c.meters.clone();
        for m in self.store.meters_left(&c.id).map_err(unavailable)? {
            if !meters.contains(&m) {
                meters.push(m);
            }
        }
        for m in meters
            .iter()
            .filter(|m| meter.is_none_or(|x| x == m.as_str()))
        {
            out.extend(
                self.store
                    .tokens(m)
                    .map_err(unavailable)?
                    .into_iter()
                    .filter(|t| t.customer == c.id),
            );
        }
        Ok(out)
    }
}

impl Backend for PaymentServer {
    fn customer_by_auth_code(&self, code: &str) -> Result<Option<Customer>, BackendError> {
        self.by_index(format!("code/{}", code_hash(code)))
    }

    fn customer_by_user(&self, user: &str) -> Result<Option<Customer>, BackendError> {
        self.by_index(format!("user/{user}"))
    }

    fn customer_by_imsi(&self, imsi: &str) -> Result<Option<Customer>, BackendError> {
        match self.store.subscriber_by_imsi(imsi).map_err(unavailable)? {
            Some(crate::store::SubscriberRef::Customer(id)) => Ok(self
                .store
                .customer(&id)
                .map_err(unavailable)?
                .map(to_customer)),
            _ => Ok(None),
        }
    }

    fn save_customer(&self, c: &Customer, consume_code: Option<&str>) -> Result<(), BackendError> {
        let _guard = self.topup.lock().unwrap_or_else(|p| p.into_inner());
        let mut rec = self.customer_record(&c.id)?;
        let mut b = Batch::new();
        if let Some(code) = consume_code {
            let h = code_hash(code);
            let owner = self
                .store
                .get::<String>(format!("code/{h}"))
                .map_err(unavailable)?;
            if owner.as_deref() != Some(c.id.as_str()) {
                return Err(BackendError::Refused(
                    "the authorization code is not valid for this customer (already used or mistyped)".into(),
                ));
            }
            b.remove(format!("code/{h}"));
            rec.auth_code_hash = None;
        }
        if c.user != rec.user {
            if let Some(u) = &c.user {
                if let Some(other) = self
                    .store
                    .get::<String>(format!("user/{u}"))
                    .map_err(unavailable)?
                {
                    if other != c.id {
                        return Err(BackendError::Refused(format!(
                            "user name {u:?} is taken; choose another"
                        )));
                    }
                }
                b.put(format!("user/{u}"), &c.id);
            }
            if let Some(old) = &rec.user {
                b.remove(format!("user/{old}"));
            }
        }
        if c.imsi != rec.imsi {
            return Err(BackendError::Refused(format!(
                "customer {}: the IMSI is assigned by provisioning and cannot change",
                c.id
            )));
        }
        rec.user = c.user.clone();
        rec.msisdn = c.msisdn.clone();
        rec.k = c.k;
        rec.opc = c.opc;
        rec.sqn = c.sqn.clone();
        rec.password_hash = c.password_hash.clone();
        // The linked meters are provisioning's to change, not the phone's.
        b.put(customer_key(&c.id), &rec);
        self.store.commit(b).map_err(unavailable)
    }

    fn meters(&self, customer_id: &str) -> Result<Vec<MeterView>, BackendError> {
        let c = self.customer_record(customer_id)?;
        let mut out = Vec::new();
        for m in &c.meters {
            let Some(r) = self.store.meter(m).map_err(unavailable)? else {
                continue;
            };
            let pending = self.store.pending(Some(m)).map_err(unavailable)?.len();
            out.push(MeterView {
                meter: r.meter,
                dwelling: r.dwelling,
                currency: self.rules.currency.clone(),
                balance_minor: r.view.balance_minor,
                balance_at: r.view.balance_at,
                supply_on: r.view.supply_on,
                last_reading_wh: r.view.last_reading_wh,
                last_reading_at: r.view.last_reading_at,
                pending_tokens: u32::try_from(pending).unwrap_or(u32::MAX),
            });
        }
        Ok(out)
    }

    fn top_up(
        &self,
        customer_id: &str,
        meter: &str,
        amount_minor: u64,
        request_id: [u8; 16],
    ) -> Result<Purchase, BackendError> {
        let c = self.customer_record(customer_id)?;
        if !c.meters.iter().any(|m| m == meter) {
            return Err(BackendError::Refused(format!(
                "meter {meter} is not linked to customer {customer_id}"
            )));
        }
        // One purchase of a meter at a time, across workers on PostgreSQL (a scope on the meter).
        let key = meter_key(meter);
        self.store
            .scope(&[key.as_bytes()], || {
                self.top_up_in_scope(customer_id, meter, amount_minor, request_id)
            })
            .map_err(unavailable)?
    }

    fn history(
        &self,
        customer_id: &str,
        meter: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, BackendError> {
        let c = self.customer_record(customer_id)?;
        let mut out = Vec::new();
        for t in self.customer_tokens(&c, meter)? {
            out.push(HistoryEntry {
                at: t.issued_at,
                meter: t.meter.clone(),
                what: HistoryKind::Purchased,
                serial: Some(t.serial),
                amount_minor: Some(t.amount_minor),
                balance_after_minor: None,
                detail: None,
            });
            match t.state {
                TokenState::Applied => out.push(HistoryEntry {
                    at: t.applied_at.unwrap_or(t.issued_at),
                    meter: t.meter.clone(),
                    what: HistoryKind::Applied,
                    serial: Some(t.serial),
                    amount_minor: Some(t.amount_minor),
                    balance_after_minor: t.balance_after_minor,
                    detail: None,
                }),
                TokenState::Refused => out.push(HistoryEntry {
                    at: t.sent_at.unwrap_or(t.issued_at),
                    meter: t.meter.clone(),
                    what: HistoryKind::Refused,
                    serial: Some(t.serial),
                    amount_minor: Some(t.amount_minor),
                    balance_after_minor: None,
                    detail: t.reason.clone(),
                }),
                TokenState::Pending => {}
            }
        }
        for m in c
            .meters
            .iter()
            .filter(|m| meter.is_none_or(|x| x == m.as_str()))
        {
            for ev in self.store.ingested("event", m).map_err(unavailable)? {
                let code = ev.body.get("code").and_then(|v| v.as_u64()).unwrap_or(0) as u16;
                let at = ev
                    .body
                    .get("at")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(ev.received_at);
                let what = match code {
                    event_code::LOW_CREDIT => HistoryKind::LowCredit,
                    event_code::RELAY_OPENED => HistoryKind::SupplyCut,
                    event_code::RELAY_CLOSED => HistoryKind::SupplyRestored,
                    _ => continue,
                };
                let first = ev
                    .body
                    .get("values")
                    .and_then(|v| v.get(0))
                    .and_then(|v| v.as_i64());
                out.push(HistoryEntry {
                    at,
                    meter: m.clone(),
                    what,
                    serial: None,
                    amount_minor: None,
                    balance_after_minor: if what == HistoryKind::LowCredit {
                        first
                    } else {
                        None
                    },
                    detail: ev
                        .body
                        .get("detail")
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                });
            }
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.at));
        out.truncate(limit);
        Ok(out)
    }

    fn purchases(&self, customer_id: &str, limit: usize) -> Result<Vec<Purchase>, BackendError> {
        let c = self.customer_record(customer_id)?;
        let mut ts = self.customer_tokens(&c, None)?;
        ts.sort_by_key(|t| std::cmp::Reverse((t.issued_at, t.serial)));
        Ok(ts.iter().take(limit).map(to_purchase).collect())
    }

    fn subscribe(&self, customer_id: &str) -> concentrator_mpc::feed::NoticeFeed {
        self.notifier.subscribe(customer_id)
    }

    fn gate(&self) -> Option<Arc<Gate>> {
        Some(self.gate.clone())
    }
}

impl PaymentServer {
    /// [`Backend::top_up`] inside the meter's scope.
    fn top_up_in_scope(
        &self,
        customer_id: &str,
        meter: &str,
        amount_minor: u64,
        request_id: [u8; 16],
    ) -> Result<Purchase, BackendError> {
        let req_key = key2("req/", customer_id, hex::encode(request_id).as_bytes());
        if let Some(r) = self.store.get::<TokenRef>(&req_key).map_err(unavailable)? {
            if let Some(t) = self.store.token(&r.meter, r.serial).map_err(unavailable)? {
                return Ok(to_purchase(&t));
            }
        }
        // Under the meter's scope, as the order's serial boundary is taken (crate::tenancy).
        if let Some(t) = self.store.tenancy_in_progress(meter).map_err(unavailable)? {
            return Err(BackendError::Refused(format!(
                "meter {meter} is changing tenancy (order {}): no credit can be bought for it until its gateway has closed the account; try again in a few minutes",
                t.order_id
            )));
        }
        if amount_minor < self.rules.min_minor || amount_minor > self.rules.max_minor {
            return Err(BackendError::Refused(format!(
                "amount {} is outside the allowed {} to {}",
                crate::money::money_u(amount_minor, &self.rules.currency),
                crate::money::money_u(self.rules.min_minor, &self.rules.currency),
                crate::money::money_u(self.rules.max_minor, &self.rules.currency)
            )));
        }
        let Some(gateway) = self
            .store
            .meter(meter)
            .map_err(unavailable)?
            .map(|m| m.gateway)
        else {
            return Err(BackendError::NotFound(format!(
                "meter {meter} is not enrolled"
            )));
        };
        let currency: [u8; 3] = self.rules.currency.as_bytes().try_into().map_err(|_| {
            BackendError::Unavailable("the configured currency is not 3 letters".into())
        })?;
        let issued_at = now();
        // Its own counter, never the meter record (which the MQTT worker rewrites concurrently).
        let serial = self.store.next_serial(meter).map_err(unavailable)?;
        if self
            .store
            .token(meter, serial)
            .map_err(unavailable)?
            .is_some()
        {
            return Err(BackendError::Unavailable(format!(
                "token serial {serial} of meter {meter} is already taken: the store's serial counter ser/{meter} was altered; restore the store from a backup"
            )));
        }
        let token = CreditToken {
            meter_id: meter.to_string(),
            serial,
            amount_minor,
            currency,
            issued_at,
            expires_at: issued_at + self.rules.lifetime_s,
            key_id: self.signer.key_id(),
        };
        let signed = self
            .signer
            .sign(&token)
            .and_then(|s| s.encode())
            .map_err(|e| BackendError::Unavailable(format!("signing the token failed: {e}")))?;
        let draft = |what| Draft {
            at: issued_at,
            what,
            customer: Some(customer_id.to_string()),
            meter: meter.to_string(),
            serial,
            amount_minor,
            currency: self.rules.currency.clone(),
            detail: None,
        };
        let mut rec = TokenRecord {
            meter: meter.to_string(),
            serial,
            amount_minor,
            currency: self.rules.currency.clone(),
            issued_at,
            expires_at: token.expires_at,
            token: hex::encode(&signed),
            customer: customer_id.to_string(),
            record: 0,
            state: TokenState::Pending,
            command: None,
            sent_at: None,
            sends: 0,
            result: None,
            result_at: None,
            reason: None,
            receipt: None,
            balance_after_minor: None,
            applied_at: None,
        };
        let mut out = None;
        self.payments
            .append(
                &self.store,
                vec![draft(EntryKind::Purchase), draft(EntryKind::TokenIssued)],
                |seqs| {
                    rec.record = seqs.first().copied().unwrap_or(0);
                    let mut b = Batch::new();
                    b.insert(token_key(meter, serial), &rec);
                    b.put(
                        pending_key(meter, serial),
                        &TokenRef {
                            meter: meter.to_string(),
                            serial,
                        },
                    );
                    b.insert(
                        req_key.clone(),
                        &TokenRef {
                            meter: meter.to_string(),
                            serial,
                        },
                    );
                    out = Some(to_purchase(&rec));
                    b
                },
            )
            .map_err(unavailable)?;
        self.notifier.track(customer_id, meter, serial);
        log::info!(
            "top-up {meter}#{serial}: {} bought by {customer_id}",
            crate::money::money_u(amount_minor, &self.rules.currency)
        );
        // The new token is delivered from a queue, not found by a poll: this process's engine is
        // nudged, other workers are told through the database (NOTIFY, delivered with the commit).
        self.store
            .notify(PURCHASES, &format!("{}\t{gateway}\t{meter}", self.origin))
            .map_err(unavailable)?;
        if let Some(tx) = self.nudge.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            // Once committed, so that the engine finds the token.
            let nudge = format!("{gateway}\t{meter}");
            self.store.after_commit(move || {
                let _ = tx.send(nudge);
            });
        }
        out.ok_or_else(|| BackendError::Unavailable("purchase not recorded".into()))
    }
}
