//! Archiving the audit log in the daemon: the head-end confirms that it recorded an anchor of the
//! chain (0x8D); the ledger keeps the newest such anchor, and entries below it older than
//! `[ledger] audit_online_days` are moved out of the store (into `audit_archive_dir`, within its
//! budget), at once after a new confirmation and then hourly as entries age. The mechanism is the
//! ledger's (`concentrator_ledger::archive`); this is when and with what settings.

use std::time::{Duration, Instant};

use concentrator_ledger::anchor::AuditAnchor;
use concentrator_ledger::archive::{AnchorKept, ArchivePolicy};
use concentrator_ledger::{Ledger, SledStore};

/// How often aged entries below the kept anchor are looked for without a new confirmation.
const EVERY: Duration = Duration::from_secs(3600);

/// The answer to a confirmed anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnchorReply {
    /// Kept (flushed): what the gateway keeps and archives, in words.
    Kept(String),
    /// No newer than the anchor already kept.
    AlreadyKept(String),
    /// Not on this gateway's chain: why. Final for this anchor.
    Refused(String),
    /// Not now (the store failed): why; send it again.
    NotNow(String),
}

/// When and how the audit log is archived.
#[derive(Debug)]
pub struct Archiving {
    online_s: u64,
    policy: ArchivePolicy,
    last: Option<Instant>,
}

impl Archiving {
    /// Keeping `online_s` seconds of the log in the store, archiving with `policy`.
    pub fn new(online_s: u64, policy: ArchivePolicy) -> Self {
        Archiving {
            online_s,
            policy,
            last: None,
        }
    }

    /// The head-end confirmed `anchor`: kept if it is on the chain and newer, then archives what is due.
    pub fn confirmed(
        &mut self,
        ledger: &mut Ledger<SledStore>,
        anchor: AuditAnchor,
        now: u64,
    ) -> AnchorReply {
        let kept = match ledger.keep_confirmed_anchor(&anchor) {
            Ok(k) => k,
            Err(e @ concentrator_ledger::LedgerError::Audit(_)) => {
                log::warn!("the head-end confirmed audit anchor {anchor}, which is not on this gateway's chain: {e}");
                return AnchorReply::Refused(format!(
                    "audit anchor {anchor} is not on this gateway's chain: {e}"
                ));
            }
            Err(e) => {
                log::error!("keeping the confirmed audit anchor {anchor} failed: {e}");
                return AnchorReply::NotNow(format!(
                    "the gateway's store failed keeping the anchor: {e}"
                ));
            }
        };
        let days = self.online_s / 86_400;
        let what = format!(
            "audit anchor of {} entries kept; entries below it older than {} are archived",
            anchor.len,
            crate::words::count(days, "day", "days")
        );
        match kept {
            AnchorKept::AlreadyKept => AnchorReply::AlreadyKept(format!(
                "a newer or equal audit anchor is kept already ({} entries)",
                ledger
                    .confirmed_anchor()
                    .ok()
                    .flatten()
                    .map_or(anchor.len, |a| a.len)
            )),
            AnchorKept::Kept => {
                log::info!("the head-end recorded audit anchor {anchor}: {what}");
                self.run(ledger, now);
                AnchorReply::Kept(what)
            }
        }
    }

    /// Archives aged entries when an hour has passed since the last look.
    pub fn tick(&mut self, ledger: &mut Ledger<SledStore>, now: u64) {
        if self.last.is_none_or(|t| t.elapsed() >= EVERY) {
            self.run(ledger, now);
        }
    }

    fn run(&mut self, ledger: &mut Ledger<SledStore>, now: u64) {
        self.last = Some(Instant::now());
        // A large backlog goes in steps of `max_entries`, each its own transaction.
        for _ in 0..100 {
            match ledger.archive_due(self.online_s, &self.policy, now) {
                Ok(Some(r)) if r.entries > 0 => {
                    log::info!(
                        "audit log: {} entries archived out of the store (the store's chain now starts at entry {}){}{}",
                        r.entries,
                        r.base_len,
                        r.file
                            .as_ref()
                            .map_or(String::new(), |f| format!(", copied to {}", f.display())),
                        if r.deleted.is_empty() {
                            String::new()
                        } else {
                            format!(", {} deleted for the budget", crate::words::count(r.deleted.len(), "older archive file", "older archive files"))
                        }
                    );
                }
                Ok(_) => return,
                Err(e) => {
                    log::error!("archiving the audit log failed: {e}; the store keeps the entries and the next hour tries again");
                    return;
                }
            }
        }
    }
}
