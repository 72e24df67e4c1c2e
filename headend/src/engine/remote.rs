//! Delivery of tariff updates and configuration changes ([`crate::remote`]): taken from the spool into
//! the store, sent in the gateway's scope, resent by the rules of top-ups (no result within the result
//! timeout: again with the same id; a temporary failure: again after the timeout), finished by the
//! gateway's answer: done or already done (its words say what changed), or refused for good.

use concentrator_protocol::{result_code, CommandResult, GatewayId, MessageId, Scope};

use super::{Engine, Fault, Outgoing};
use crate::remote::{remote_key, remote_message_key, write_status, RemoteCommand, RemoteState};
use crate::store::{Batch, StoreError, SubscriberRef};

/// Codes that end a remote command as refused.
fn refused(code: u16) -> bool {
    matches!(
        code,
        result_code::UNSUPPORTED | result_code::INVALID | result_code::REFUSED
    )
}

impl Engine {
    /// Sets where remote commands are taken from and their states written (`commands/` beside
    /// `headend.toml`); without it (unit tests) they are taken only from the store.
    pub fn with_spool(mut self, dir: std::path::PathBuf) -> Engine {
        self.spool = Some(dir);
        self
    }

    fn remote_status(&self, c: &RemoteCommand) {
        if let Some(spool) = &self.spool {
            if let Err(e) = write_status(spool, c) {
                log::warn!(
                    "remote command {}: its state cannot be written to {}: {e}",
                    c.id,
                    spool.display()
                );
            }
        }
    }

    /// Records a remote command in the store (once: the same id again changes nothing).
    pub fn record_remote(&mut self, c: &RemoteCommand) -> Result<bool, StoreError> {
        let mut b = Batch::new();
        b.insert(remote_key(&c.id), c);
        match self.store.commit(b) {
            Ok(()) => {
                log::info!(
                    "remote command {} for gateway {}: {}",
                    c.id,
                    c.gateway,
                    c.what
                );
                self.remote_status(c);
                Ok(true)
            }
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes the spool's requests into the store, removing each once it is stored.
    fn remote_intake(&mut self) {
        let Some(spool) = self.spool.clone() else {
            return;
        };
        for (path, request) in crate::remote::waiting(&spool) {
            match request {
                Ok(c) => match self.record_remote(&c) {
                    Ok(_) => {
                        if let Err(e) = std::fs::remove_file(&path) {
                            log::warn!("remote command {}: {}: {e}", c.id, path.display());
                        }
                    }
                    Err(e) => log::error!("remote command {}: not stored: {e}", c.id),
                },
                Err(why) => {
                    log::error!(
                        "remote command file {} does not read ({why}); it is set aside as .bad",
                        path.display()
                    );
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                }
            }
        }
    }

    fn remote_due(&self, c: &RemoteCommand, now: u64) -> bool {
        let timeout = self.s.result_timeout;
        c.state == RemoteState::Pending
            && match (c.sent_at, c.result_at) {
                (None, _) => true,
                (Some(at), None) => now >= at.saturating_add(timeout),
                (Some(_), Some(r)) => now >= r.saturating_add(timeout),
            }
    }

    /// The gateway's own scope: its id, and the RAND of its newest confirmed live context.
    fn gateway_target(&self, gw: &str, now: u64) -> Option<(GatewayId, SubscriberRef, String)> {
        let sub = SubscriberRef::Gateway(gw.to_string());
        let set = self.store.contexts(&sub).ok()?;
        let rand = set.live(now).next()?.rand.clone();
        Some((GatewayId::new(gw.to_string()).ok()?, sub, rand))
    }

    /// Takes new requests in and sends every remote command that is due to its online gateway.
    pub(super) fn deliver_remote(&mut self, now: u64) -> Vec<Outgoing> {
        self.remote_intake();
        let pending = match self.store.scan::<RemoteCommand>("rc/") {
            Ok(p) => p,
            Err(e) => {
                log::error!("remote commands: {e}");
                return vec![];
            }
        };
        let mut out = Vec::new();
        for (_, c) in pending {
            if !self.remote_due(&c, now) {
                continue;
            }
            if self.in_gateway.as_deref().is_some_and(|g| g != c.gateway) {
                continue;
            }
            let id = c.id.clone();
            match self.on_gateway(&c.gateway.clone(), now, |this| this.send_remote(&id, now)) {
                Ok(Ok(Some(o))) => out.push(o),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => log::warn!("remote command {id}: {e}"),
                Err(e) => log::warn!("remote command {id}: {e}"),
            }
        }
        out
    }

    /// One remote command, read afresh in its gateway's scope and sent if still due.
    fn send_remote(&mut self, id: &str, now: u64) -> Result<Option<Outgoing>, String> {
        let e = |e: StoreError| e.to_string();
        let Some(mut c) = self.store.get::<RemoteCommand>(remote_key(id)).map_err(e)? else {
            return Ok(None);
        };
        if !self.remote_due(&c, now) {
            return Ok(None);
        }
        let online = self
            .store
            .gateway(&c.gateway)
            .map_err(e)?
            .is_some_and(|g| g.online);
        if !online {
            return Ok(None);
        }
        let Some((gw, sub, rand)) = self.gateway_target(&c.gateway, now) else {
            return Ok(None);
        };
        // No answer: the same id again (the gateway answers a repeat from its memory); a temporary
        // failure: the same id again too (the gateway did not remember it, so it executes it).
        let msg = match c
            .command
            .as_deref()
            .and_then(|h| Some(MessageId(hex::decode(h).ok()?.try_into().ok()?)))
        {
            Some(m) => m,
            None => self.new_id(),
        };
        let out = self.seal(
            &gw,
            Scope::Gateway,
            &sub,
            &rand,
            c.body.to_wire(),
            Some(msg),
            now,
        )?;
        c.command = Some(msg.to_string());
        c.sent_at = Some(now);
        c.sends += 1;
        c.result = None;
        c.result_at = None;
        let mut b = Batch::new();
        b.put(remote_key(&c.id), &c);
        b.put(remote_message_key(&msg.to_string()), &c.id);
        self.store.commit(b).map_err(e)?;
        log::info!(
            "remote command {} sent to gateway {} (send {}): {}",
            c.id,
            c.gateway,
            c.sends,
            c.what
        );
        self.remote_status(&c);
        Ok(Some(out))
    }

    /// A command result for a remote command, if `r` answers one (`None`: not ours).
    pub(super) fn remote_result(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        r: &CommandResult,
        now: u64,
    ) -> Result<Option<Vec<Outgoing>>, Fault> {
        let Some(id) = self
            .store
            .get::<String>(remote_message_key(&r.command.to_string()))?
        else {
            return Ok(None);
        };
        let Some(mut c) = self.store.get::<RemoteCommand>(remote_key(&id))? else {
            return Err(Fault::Reject(format!(
                "result for remote command {id}, which is not in the store"
            )));
        };
        if c.gateway != gw || meter.is_some() {
            return Err(Fault::Reject(format!(
                "result for remote command {id} of gateway {} arrived from gateway {gw}{}",
                c.gateway,
                meter.map_or(String::new(), |m| format!(" in the scope of meter {m}"))
            )));
        }
        if c.state != RemoteState::Pending {
            return Ok(Some(vec![]));
        }
        c.result = Some(r.code);
        c.result_at = Some(now);
        c.reason = r.reason.clone();
        let words = r.reason.as_deref().unwrap_or("no reason given");
        if matches!(r.code, result_code::DONE | result_code::ALREADY_DONE) {
            c.state = RemoteState::Done;
            log::info!("remote command {id}: gateway {gw} carried it out: {words}");
        } else if refused(r.code) {
            c.state = RemoteState::Refused;
            log::warn!("remote command {id}: gateway {gw} refused it: {words}");
        } else {
            log::warn!(
                "remote command {id}: gateway {gw} answered {} ({words}); sent again in {} s",
                r.code,
                self.s.result_timeout
            );
        }
        let mut b = Batch::new();
        b.put(remote_key(&id), &c);
        self.store.commit(b)?;
        self.remote_status(&c);
        Ok(Some(vec![]))
    }

    /// Every remote command in the store, oldest first.
    pub fn remote_commands(&self) -> Result<Vec<RemoteCommand>, StoreError> {
        let mut v: Vec<RemoteCommand> = self
            .store
            .scan::<RemoteCommand>("rc/")?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        v.sort_by(|a, b| (a.issued_at, &a.id).cmp(&(b.issued_at, &b.id)));
        Ok(v)
    }
}
