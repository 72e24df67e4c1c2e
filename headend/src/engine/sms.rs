//! Urgent events that came by SMS (docs/protocol.md, *The SMS path*): the text is verified with the
//! gateway's own security context (current, then previous) and the event stored exactly as if it had
//! come over MQTT, under its message id, so the MQTT copy that follows is acknowledged and not stored
//! again (and an SMS that follows the MQTT copy is not stored either).

use concentrator_protocol::event_code;
use concentrator_protocol::sms::{self, SmsError, SmsEvent};

use super::{Engine, Fault};
use crate::store::{Batch, SubscriberRef};

/// What became of an SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsIngest {
    /// Verified and stored.
    Stored(SmsEvent, Option<String>),
    /// Verified; the same message id was stored before (by SMS or MQTT).
    AlreadyStored(SmsEvent, Option<String>),
}

/// Why an SMS was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SmsIngestError {
    /// Not a valid form, or not verified.
    #[error("{0}")]
    Form(#[from] SmsError),
    /// The gateway it names is not provisioned here.
    #[error("the SMS names gateway {0}, which this head-end does not know; check the sender ({1}) and `concentrator-headend status`")]
    UnknownGateway(String, String),
    /// The gateway has no security context yet.
    #[error("gateway {0} has no security context yet (it never completed AKA), so its SMS cannot be verified")]
    NoContext(String),
    /// The TID is not one of the gateway's meters.
    #[error("the SMS from gateway {0} names TID {1}, which is not one of its meters'")]
    UnknownTid(String, String),
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

/// The meaning of an event code in words, for the operator's output.
pub fn event_name(code: u16) -> &'static str {
    match code {
        event_code::RELAY_OPENED => "supply cut off",
        event_code::TAMPER => "tamper",
        event_code::LAST_GASP => "last gasp (the gateway lost its supply)",
        70 => "theft or loss (block balance)",
        event_code::SMS_BUDGET_EXHAUSTED => "SMS budget used up",
        _ => "event",
    }
}

impl Engine {
    /// Verifies an SMS `text` received from `from` (the sender's number, for the log) and stores its
    /// event once.
    pub fn ingest_sms(
        &mut self,
        text: &str,
        from: &str,
        now: u64,
    ) -> Result<SmsIngest, SmsIngestError> {
        let gw = sms::claimed_gateway(text)?;
        let gw = gw.as_str().to_string();
        let store_err = |e: crate::store::StoreError| SmsIngestError::Store(e.to_string());
        if self.store.gateway(&gw).map_err(store_err)?.is_none() {
            return Err(SmsIngestError::UnknownGateway(gw, from.to_string()));
        }
        let set = self
            .store
            .contexts(&SubscriberRef::Gateway(gw.clone()))
            .map_err(store_err)?;
        let keys: Vec<[u8; 16]> = [set.current, set.previous]
            .into_iter()
            .flatten()
            .map(|c| c.ik)
            .collect();
        if keys.is_empty() {
            return Err(SmsIngestError::NoContext(gw));
        }
        let form = sms::decode(text, &keys)?;
        let meter = match form.tid {
            None => None,
            Some(tid) => match self.store.tid(&tid.0).map_err(store_err)? {
                Some(rec) if rec.gateway == gw => Some(rec.meter),
                _ => return Err(SmsIngestError::UnknownTid(gw, tid.to_hex())),
            },
        };
        let id = form.id;
        let outcome = self.on_gateway(&gw, now, |e| -> Result<bool, SmsIngestError> {
            if e.store.seen(&gw, &id.0).map_err(store_err)? {
                return Ok(false);
            }
            e.event(&gw, meter.as_deref(), id, form.event.clone(), now)
                .map_err(|f| match f {
                    Fault::Retry(s) | Fault::Reject(s) => SmsIngestError::Store(s),
                })?;
            let mut b = Batch::new();
            let capacity = e.s.dedup_capacity;
            e.store
                .remember(&mut b, &gw, &id.0, capacity, &mut e.dedup_next)
                .map_err(store_err)?;
            e.store.apply(b).map_err(store_err)?;
            Ok(true)
        });
        let stored = outcome.map_err(store_err)??;
        log::info!(
            "gateway {gw}: {} (event {}){} by SMS from {from}: {}",
            event_name(form.event.code),
            form.event.code,
            meter
                .as_deref()
                .map_or(String::new(), |m| format!(", meter {m}")),
            if stored {
                "stored"
            } else {
                "already stored (its MQTT copy or the same SMS came first)"
            }
        );
        Ok(if stored {
            SmsIngest::Stored(form, meter)
        } else {
            SmsIngest::AlreadyStored(form, meter)
        })
    }
}

/// What an SMS became, in one line for the operator: `gateway G, meter M: supply cut off (event 1,
/// alarm) at 2026-12-06 21:04 UTC, message …`.
pub fn describe(outcome: &SmsIngest) -> String {
    let (f, meter, again) = match outcome {
        SmsIngest::Stored(f, m) => (f, m, ""),
        SmsIngest::AlreadyStored(f, m) => (
            f,
            m,
            "; already stored before (by SMS or MQTT), not stored again",
        ),
    };
    format!(
        "gateway {}{}: {} (event {}, {}) at {}, message {}{again}",
        f.gateway.as_str(),
        meter
            .as_ref()
            .map_or(String::new(), |m| format!(", meter {m}")),
        event_name(f.event.code),
        f.event.code,
        match f.event.severity {
            concentrator_protocol::Severity::Info => "info",
            concentrator_protocol::Severity::Warning => "warning",
            concentrator_protocol::Severity::Alarm => "alarm",
        },
        crate::money::time(f.event.at),
        f.id
    )
}

/// The SMS spool beside `headend.toml`: while `concentrator-headend run` holds a sled store, the CLI
/// leaves each text there and the running head-end takes it at its next tick.
pub fn sms_spool_dir(base: &std::path::Path) -> std::path::PathBuf {
    base.join("sms")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Spooled {
    from: String,
    text: String,
}

/// Leaves `text` from `from` in the spool `dir` as `<stem>.sms`; the answer comes as `<stem>.done` (what
/// was stored) or `<stem>.refused` (why not). Returns the request's path.
pub fn spool_sms(
    dir: &std::path::Path,
    from: &str,
    text: &str,
    stem: &str,
) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let body = serde_json::to_vec(&Spooled {
        from: from.to_string(),
        text: text.to_string(),
    })
    .map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{stem}.partial"));
    std::fs::write(&tmp, body)?;
    let path = dir.join(format!("{stem}.sms"));
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

impl Engine {
    /// Ingests the texts waiting in the SMS spool, answering each beside it.
    pub(super) fn take_sms(&mut self, now: u64) {
        let Some(dir) = self.sms_spool.clone() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut paths: Vec<std::path::PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sms"))
            .collect();
        paths.sort();
        for path in paths {
            let answer = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Spooled>(&b).map_err(|e| e.to_string()))
            {
                Ok(req) => match self.ingest_sms(&req.text, &req.from, now) {
                    Ok(outcome) => Ok(describe(&outcome)),
                    Err(SmsIngestError::Store(e)) => {
                        log::error!(
                            "SMS in {}: {e}; tried again at the next tick",
                            path.display()
                        );
                        continue;
                    }
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(format!("{} is not an SMS request: {e}", path.display())),
            };
            let (ext, text) = match answer {
                Ok(t) => ("done", t),
                Err(t) => {
                    log::warn!("SMS refused: {t}");
                    ("refused", t)
                }
            };
            if let Err(e) = std::fs::write(path.with_extension(ext), format!("{text}\n")) {
                log::error!("cannot answer the SMS request {}: {e}", path.display());
            }
            let _ = std::fs::remove_file(&path);
        }
    }
}
