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
