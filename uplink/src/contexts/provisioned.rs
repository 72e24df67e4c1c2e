//! The security contexts the uplink seals and opens with, from the provisioned keys file (the stand-in
//! for AKA, docs/install.md *Uplink keys*), with their counters kept across restarts.
//!
//! COUNT must only grow per context and direction, also across restarts, or the head-end refuses what
//! the gateway sends as replays. Writing the counter at every message would add a store write per
//! publish, so the channel *reserves* blocks of [`RESERVE`] counts: before the first COUNT of a block is
//! used, the block's end is written and flushed to tree `uplink.counts`; a restart resumes at the stored
//! end (skipping at most one block, which the receiver accepts: it wants only a higher COUNT). The last
//! COUNT received from the head-end is written after every downlink message carried out, so a restart
//! still refuses a replay of it.

use std::collections::HashMap;

use concentrator_protocol::Scope;
use concentrator_security::envelope::{Channel, Sender, SenderKind};
use concentrator_security::{Direction, SecurityContext};
use std::sync::Arc;

use super::store::{ContextStore, Tree};
use super::{KeyFile, ScopeKey};
use crate::mqtt::Channels;
/// Counts reserved per store write.
pub const RESERVE: u32 = 1024;
/// Accepted distance between an envelope's timestamp and our clock, seconds.
const WINDOW_S: u64 = 300;
/// Lifetime of a provisioned context without `valid_until`: ten years.
const DEFAULT_LIFETIME_S: u64 = 10 * 365 * 86_400;

struct Entry {
    channel: Channel,
    sender: Sender,
    /// The first COUNT not covered by the stored reservation.
    reserved: u32,
}

/// Every provisioned context, keyed by scope.
pub struct StaticChannels {
    /// The counters (a reservation is flushed durably: a COUNT reused after a power cut would reuse a
    /// keystream).
    store: Arc<dyn ContextStore>,
    map: HashMap<Scope, Entry>,
}

impl std::fmt::Debug for StaticChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticChannels")
            .field("scopes", &self.map.len())
            .finish()
    }
}

fn scope_key(prefix: u8, scope: Scope) -> Vec<u8> {
    let mut k = vec![prefix];
    match scope {
        Scope::Gateway => k.extend_from_slice(b"gw"),
        Scope::Meter(t) => k.extend_from_slice(&t.0),
    }
    k
}

fn stored(store: &dyn ContextStore, key: &[u8]) -> Result<Option<u32>, String> {
    match store.get(Tree::Counts, key)? {
        Some(v) => <[u8; 4]>::try_from(v.as_ref())
            .map(|b| Some(u32::from_be_bytes(b)))
            .map_err(|_| format!("counter {} is not 4 octets", hex::encode(key))),
        None => Ok(None),
    }
}

impl StaticChannels {
    /// The channels of every scope of `keys` (the gateway's as device `gateway`), resumed from the
    /// counters in `store`.
    pub fn open(
        store: Arc<dyn ContextStore>,
        keys: &KeyFile,
        gateway: &str,
        now: u64,
    ) -> Result<Self, String> {
        let lifetime = keys
            .valid_until
            .map_or(DEFAULT_LIFETIME_S, |until| until.saturating_sub(now));
        let mut scopes: Vec<(Scope, &ScopeKey, Sender)> = vec![(
            Scope::Gateway,
            &keys.gateway,
            Sender {
                kind: SenderKind::Device,
                id: gateway.as_bytes().to_vec(),
            },
        )];
        for m in &keys.meters {
            scopes.push((
                Scope::Meter(m.tid),
                &m.key,
                Sender {
                    kind: SenderKind::Tid,
                    id: m.tid.0.to_vec(),
                },
            ));
        }
        let mut map = HashMap::new();
        for (scope, key, sender) in scopes {
            let ctx = SecurityContext::new(keys.mode, &key.ck, &key.ik, 0, now, lifetime);
            let next = stored(&*store, &scope_key(b's', scope))?.unwrap_or(0);
            let last = stored(&*store, &scope_key(b'r', scope))?;
            let channel = Channel::resume(ctx, Direction::Uplink, WINDOW_S, next, last);
            map.insert(
                scope,
                Entry {
                    channel,
                    sender,
                    reserved: next,
                },
            );
        }
        Ok(StaticChannels { store, map })
    }
}

impl Channels for StaticChannels {
    fn channel(&mut self, scope: Scope) -> Option<(&mut Channel, Sender)> {
        let e = self.map.get_mut(&scope)?;
        let next = e.channel.next_count()?;
        if next >= e.reserved {
            let end = next.saturating_add(RESERVE);
            let written = self
                .store
                .put(Tree::Counts, &scope_key(b's', scope), &end.to_be_bytes())
                .and_then(|()| self.store.flush(Tree::Counts));
            if let Err(err) = written {
                // Sealing without a durable reservation could repeat a COUNT after a restart.
                log::error!("uplink: cannot reserve envelope counters for {scope}: {err}; its messages wait");
                return None;
            }
            e.reserved = end;
        }
        Some((&mut e.channel, e.sender.clone()))
    }

    fn opened(&mut self, scope: Scope) {
        let Some(last) = self.map.get(&scope).and_then(|e| e.channel.last_received()) else {
            return;
        };
        if let Err(e) = self
            .store
            .put(Tree::Counts, &scope_key(b'r', scope), &last.to_be_bytes())
        {
            log::error!("uplink: cannot store the last received COUNT of {scope}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contexts::{MemContexts, MeterKey, ScopeKey};
    use concentrator_protocol::Tid;

    fn keys() -> KeyFile {
        let key = ScopeKey {
            ck: [1; 16],
            ik: [2; 16],
        };
        KeyFile {
            mode: concentrator_security::SecurityMode::AES,
            valid_until: None,
            gateway: key.clone(),
            meters: vec![MeterKey {
                meter: "M-1".into(),
                tid: Tid([7; 8]),
                key,
            }],
        }
    }

    #[test]
    fn a_restart_never_repeats_a_count_or_accepts_an_old_one() {
        let store: Arc<dyn ContextStore> = Arc::new(MemContexts::new());
        let mut chs = StaticChannels::open(store.clone(), &keys(), "gw-1", 1_000).unwrap();
        let scope = Scope::Meter(Tid([7; 8]));
        for _ in 0..3 {
            let (ch, sender) = chs.channel(scope).unwrap();
            ch.seal(&sender, 0, 1_000, b"x").unwrap();
        }
        assert_eq!(chs.map[&scope].channel.next_count(), Some(3));
        assert!(chs.channel(Scope::Meter(Tid([8; 8]))).is_none());
        let mut again = StaticChannels::open(store, &keys(), "gw-1", 1_001).unwrap();
        let (ch, _) = again.channel(scope).unwrap();
        assert_eq!(ch.next_count(), Some(RESERVE));
        // The gateway's scope was never used: it starts at 0.
        let (gw, sender) = again.channel(Scope::Gateway).unwrap();
        assert_eq!(gw.next_count(), Some(0));
        assert_eq!(sender.id, b"gw-1".to_vec());
    }
}
