//! Moving a pilot's embedded store to PostgreSQL (`concentrator-headend migrate --from-sled DIR`): every
//! record under the same key, as it is stored (subscriber keys stay encrypted under the same KEK), in
//! one transaction that is read back and compared before it commits.

use std::path::Path;

use super::kv::SledKv;
use super::pg::{EntryDigest, PgKv, PgSettings};
use super::{kek, StoreError};

/// Copies the sled store at `from` into the PostgreSQL store that `config` names, which must be
/// empty and migrated. Before a record holding subscriber keys is sent, it is opened with the KEK
/// that `config` names (`[store] kek`), so that a store whose keys were sealed under another KEK is
/// refused instead of copied into a database that could not use them. `progress` is told the number
/// of records sent so far, now and then.
pub fn sled_to_postgres(
    from: &Path,
    config: &crate::config::Config,
    progress: &mut dyn FnMut(u64),
) -> Result<EntryDigest, StoreError> {
    let place = from.display().to_string();
    if !from.join("db").is_file() {
        return Err(StoreError::Db {
            path: place,
            reason: "holds no sled store (no `db` file in it); give the directory that the pilot's headend.toml names as [store] path".into(),
        });
    }
    let sled = SledKv::open(from).map_err(|e| match e {
        StoreError::Db { path, reason } => StoreError::Db {
            path,
            reason: format!(
                "{reason}; if the head-end still runs on this store, stop it first (sled lets one process open it)"
            ),
        },
        other => other,
    })?;
    let kek_file = kek::kek_path(config);
    let kek = match &kek_file {
        Some(path) => Some(kek::Kek::load(path)?),
        None => None,
    };
    let settings = PgSettings::from_config(config)?;
    let entries = sled.entries().map(|r| {
        let (k, v) = r?;
        kek::reveal(kek.as_ref(), &k, v.clone()).map_err(|e| match e {
            StoreError::Corrupt { key, reason } => StoreError::Db {
                path: place.clone(),
                reason: format!(
                    "record {key:?} cannot be used with the new configuration's key-encryption key ({}): {reason}; \
                     give the new headend.toml the pilot's KEK file as [store] kek. Nothing was copied",
                    kek_file.as_ref().map_or("none configured".to_string(), |p| p.display().to_string())
                ),
            },
            other => other,
        })?;
        Ok((k, v))
    });
    PgKv::copy_into_empty(&settings, entries, progress)
}
