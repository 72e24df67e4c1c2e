//! The Zigbee device table in the store: sled tree `zigbee.devices`, one JSON `DeviceEntry` per device
//! under `COORDINATOR/IEEE`, in the ledger's database when `[ledger]` exists (one database, one lock),
//! else in its own database `zigbee/` in the store directory. Every change is flushed before the
//! worker goes on, so a device that joined is known after a power cut without joining again.

use std::path::Path;

use concentrator_driver_znp::{DeviceEntry, DeviceTable, IeeeAddress};

/// The tree's name.
pub const TREE: &str = "zigbee.devices";

/// Why the device table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DeviceStoreError {
    /// sled failed.
    #[error("the Zigbee device table in the store: {0}; check the store directory's disk and permissions")]
    Sled(#[from] sled::Error),
    /// An entry is not a device.
    #[error("the Zigbee device table in the store: entry {key} is not a device ({reason}); remove the device and pair it again")]
    Corrupt {
        /// The entry's key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Opens the database for the device tables: the ledger's when given, else `STORE/zigbee`.
pub fn open_db(store: &Path, ledger: Option<&sled::Db>) -> Result<sled::Db, String> {
    if let Some(db) = ledger {
        return Ok(db.clone());
    }
    let dir = store.join("zigbee");
    sled::open(&dir).map_err(|e| {
        format!(
            "cannot open the Zigbee device table {}: {e}; check [gateway] store is writable by the daemon and no other daemon uses it",
            dir.display()
        )
    })
}

/// One coordinator's devices in the store.
#[derive(Debug, Clone)]
pub struct DeviceStore {
    tree: sled::Tree,
    coordinator: String,
}

impl DeviceStore {
    /// The devices of coordinator `coordinator` in `db`.
    pub fn open(db: &sled::Db, coordinator: &str) -> Result<DeviceStore, DeviceStoreError> {
        Ok(DeviceStore {
            tree: db.open_tree(TREE)?,
            coordinator: coordinator.to_string(),
        })
    }

    fn key(&self, ieee: IeeeAddress) -> String {
        format!("{}/{ieee}", self.coordinator)
    }

    /// The stored table.
    pub fn load(&self) -> Result<DeviceTable, DeviceStoreError> {
        let mut table = DeviceTable::new();
        let prefix = format!("{}/", self.coordinator);
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item?;
            let entry: DeviceEntry =
                serde_json::from_slice(&value).map_err(|e| DeviceStoreError::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: e.to_string(),
                })?;
            table.insert(entry);
        }
        Ok(table)
    }

    /// Stores a device and flushes.
    pub fn put(&self, entry: &DeviceEntry) -> Result<(), DeviceStoreError> {
        let value = serde_json::to_vec(entry).map_err(|e| DeviceStoreError::Corrupt {
            key: self.key(entry.ieee),
            reason: e.to_string(),
        })?;
        self.tree.insert(self.key(entry.ieee).as_bytes(), value)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Forgets a device and flushes.
    pub fn remove(&self, ieee: IeeeAddress) -> Result<(), DeviceStoreError> {
        self.tree.remove(self.key(ieee).as_bytes())?;
        self.tree.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_survive_reopening_per_coordinator() {
        let dir = std::env::temp_dir().join(format!("zigbee-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = IeeeAddress(0x00124B0000000001);
        {
            let db = open_db(&dir, None).unwrap();
            let one = DeviceStore::open(&db, "zb-1").unwrap();
            let two = DeviceStore::open(&db, "zb-2").unwrap();
            let mut entry = DeviceEntry::new(a, 0x1001);
            entry.endpoints = Some(vec![1]);
            one.put(&entry).unwrap();
            two.put(&DeviceEntry::new(IeeeAddress(2), 0x2002)).unwrap();
            two.remove(IeeeAddress(2)).unwrap();
        }
        let db = open_db(&dir, None).unwrap();
        let table = DeviceStore::open(&db, "zb-1").unwrap().load().unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(a).unwrap().endpoints, Some(vec![1]));
        assert!(DeviceStore::open(&db, "zb-2")
            .unwrap()
            .load()
            .unwrap()
            .is_empty());
        db.open_tree(TREE)
            .unwrap()
            .insert("zb-1/bad", b"{".to_vec())
            .unwrap();
        let e = DeviceStore::open(&db, "zb-1").unwrap().load().unwrap_err();
        assert!(
            e.to_string().contains("entry zb-1/bad is not a device"),
            "{e}"
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
