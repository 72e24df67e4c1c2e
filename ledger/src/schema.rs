//! The store's schema version and migrations.
//!
//! Meta keys: `schema` (u32, big-endian), `config` (the [`crate::LedgerConfig`] in force, JSON),
//! `outbox_next` (u64, big-endian), `tariff_schedule` (the head-end's tariffs,
//! [`crate::tariff_schedule`], JSON; absent until the first one: no migration needed). Other keyspaces are described in [`crate::store::Keyspace`].
//!
//! A store is opened only by a build that knows its version: an older store is migrated forward step by
//! step, each step in one transaction together with the new version number, and flushed; a newer store is
//! refused (a ledger is never downgraded).

use crate::store::{Batch, Keyspace, Store};
use crate::LedgerError;

/// The schema this build writes. Version 2: account records in the compact binary form
/// ([`crate::account_record`]) instead of JSON.
pub const SCHEMA_VERSION: u32 = 2;

/// Meta key of the schema version.
pub const SCHEMA_KEY: &[u8] = b"schema";
/// Meta key of the stored configuration.
pub const CONFIG_KEY: &[u8] = b"config";

/// One migration: from version `from` to `from + 1`, returning the writes to make.
pub type Migration = fn(&dyn Store) -> Result<Batch, LedgerError>;

/// The migrations of this build, by the version they start from. Version 1 is the first schema.
pub const MIGRATIONS: &[(u32, Migration)] = &[(1, accounts_to_binary)];

/// 1 → 2: every account record re-encoded from JSON to the binary record, in the same transaction as the
/// new version (a record that does not decode stops the migration, naming it, and nothing is written).
fn accounts_to_binary(store: &dyn Store) -> Result<Batch, LedgerError> {
    let mut batch = Batch::new();
    crate::store::for_each(store, Keyspace::Accounts, |key, value| {
        let account = crate::account_record::decode(value).map_err(|e| LedgerError::Corrupt {
            keyspace: Keyspace::Accounts.name(),
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })?;
        batch.put(
            Keyspace::Accounts,
            key.to_vec(),
            crate::account_record::encode(&account),
        );
        Ok(())
    })?;
    Ok(batch)
}

/// The version stored, if any.
pub fn stored_version<S: Store + ?Sized>(store: &S) -> Result<Option<u32>, LedgerError> {
    let Some(v) = store.get(Keyspace::Meta, SCHEMA_KEY)? else {
        return Ok(None);
    };
    let arr: [u8; 4] = v.as_slice().try_into().map_err(|_| LedgerError::Corrupt {
        keyspace: Keyspace::Meta.name(),
        key: "schema".into(),
        reason: format!("{} octets, expected 4", v.len()),
    })?;
    Ok(Some(u32::from_be_bytes(arr)))
}

fn is_empty<S: Store + ?Sized>(store: &S) -> Result<bool, LedgerError> {
    for ks in Keyspace::ALL {
        if store.last(ks)?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Brings the store to `target` using `steps`: initialises an empty store, migrates an older one, refuses
/// a newer or an unversioned non-empty one.
pub fn prepare<S: Store>(
    store: &S,
    target: u32,
    steps: &[(u32, Migration)],
) -> Result<(), LedgerError> {
    let mut version = match stored_version(store)? {
        Some(v) => v,
        None if is_empty(store)? => {
            let mut b = Batch::new();
            b.put(Keyspace::Meta, SCHEMA_KEY, target.to_be_bytes().to_vec());
            store.commit(&b)?;
            store.flush()?;
            return Ok(());
        }
        None => return Err(LedgerError::Unversioned),
    };
    if version > target {
        return Err(LedgerError::SchemaTooNew {
            found: version,
            supported: target,
        });
    }
    while version < target {
        let Some((_, step)) = steps.iter().find(|(from, _)| *from == version) else {
            return Err(LedgerError::Corrupt {
                keyspace: Keyspace::Meta.name(),
                key: "schema".into(),
                reason: format!("no migration from version {version}"),
            });
        };
        let mut batch = step(store)?;
        version += 1;
        batch.put(Keyspace::Meta, SCHEMA_KEY, version.to_be_bytes().to_vec());
        store.commit(&batch)?;
        store.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn add_marker(store: &dyn Store) -> Result<Batch, LedgerError> {
        let mut b = Batch::new();
        let n = store.get(Keyspace::Meta, b"marker")?.map_or(0, |v| v.len());
        b.put(Keyspace::Meta, b"marker".to_vec(), vec![1; n + 1]);
        Ok(b)
    }

    #[test]
    fn new_store_is_stamped_and_old_store_is_migrated_step_by_step() {
        let store = MemStore::new();
        prepare(&store, 1, &[]).unwrap();
        assert_eq!(stored_version(&store).unwrap(), Some(1));
        let steps: &[(u32, Migration)] = &[(1, add_marker), (2, add_marker)];
        prepare(&store, 3, steps).unwrap();
        assert_eq!(stored_version(&store).unwrap(), Some(3));
        assert_eq!(
            store.get(Keyspace::Meta, b"marker").unwrap(),
            Some(vec![1, 1])
        );
        // Reopening at the same version does nothing.
        prepare(&store, 3, steps).unwrap();
        assert_eq!(
            store.get(Keyspace::Meta, b"marker").unwrap(),
            Some(vec![1, 1])
        );
    }

    #[test]
    fn newer_or_unversioned_stores_are_refused() {
        let store = MemStore::new();
        prepare(&store, 2, &[]).unwrap();
        assert!(matches!(
            prepare(&store, 1, &[]),
            Err(LedgerError::SchemaTooNew {
                found: 2,
                supported: 1
            })
        ));
        let other = MemStore::new();
        let mut b = Batch::new();
        b.put(Keyspace::Accounts, b"x".to_vec(), b"y".to_vec());
        other.commit(&b).unwrap();
        assert!(matches!(
            prepare(&other, 1, &[]),
            Err(LedgerError::Unversioned)
        ));
    }
}
