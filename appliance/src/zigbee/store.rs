//! The Zigbee device table in the store: sled tree `zigbee.devices`, one JSON `DeviceInfo` (the coordinator API's record) per device
//! under `COORDINATOR/IEEE`, in the ledger's database when `[ledger]` exists (one database, one lock),
//! else in its own database `zigbee/` in the store directory. Every change is flushed before the
//! worker goes on, so a device that joined is known after a power cut without joining again.

use std::path::Path;

use std::collections::BTreeMap;

use concentrator_plugin_host::{DeviceAddress, DeviceInfo};

/// The devices of one coordinator, by address.
pub type DeviceTable = BTreeMap<DeviceAddress, DeviceInfo>;

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
    concentrator_ledger::open_sled(&sled::Config::new().path(&dir)).map_err(|e| {
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

    fn key(&self, device: DeviceAddress) -> String {
        format!("{}/{device}", self.coordinator)
    }

    /// The stored table. A record written before the coordinator API (a bare ZNP device entry, with
    /// `ieee` and `nwk`) is read as the driver's record of that device, so no device pairs again.
    pub fn load(&self) -> Result<DeviceTable, DeviceStoreError> {
        let mut table = DeviceTable::new();
        let prefix = format!("{}/", self.coordinator);
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item?;
            let corrupt = |reason: String| DeviceStoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason,
            };
            let json: serde_json::Value =
                serde_json::from_slice(&value).map_err(|e| corrupt(e.to_string()))?;
            let info = if json.get("device").is_some() {
                serde_json::from_value::<DeviceInfo>(json).map_err(|e| corrupt(e.to_string()))?
            } else {
                let device = json
                    .get("ieee")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| corrupt(String::from("no device address")))?
                    .parse::<DeviceAddress>()
                    .map_err(corrupt)?;
                DeviceInfo {
                    device,
                    network_address: json
                        .get("nwk")
                        .and_then(serde_json::Value::as_u64)
                        .and_then(|n| u16::try_from(n).ok()),
                    endpoints: Vec::new(),
                    clusters: Vec::new(),
                    interviewed: false,
                    record: json,
                }
            };
            table.insert(info.device, info);
        }
        Ok(table)
    }

    /// Stores a device and flushes.
    pub fn put(&self, info: &DeviceInfo) -> Result<(), DeviceStoreError> {
        let value = serde_json::to_vec(info).map_err(|e| DeviceStoreError::Corrupt {
            key: self.key(info.device),
            reason: e.to_string(),
        })?;
        self.tree.insert(self.key(info.device).as_bytes(), value)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Forgets a device and flushes.
    pub fn remove(&self, device: DeviceAddress) -> Result<(), DeviceStoreError> {
        self.tree.remove(self.key(device).as_bytes())?;
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
        let a = DeviceAddress::from_u64(0x00124B0000000001);
        let info = |device: DeviceAddress, nwk: u16| DeviceInfo {
            device,
            network_address: Some(nwk),
            endpoints: Vec::new(),
            clusters: Vec::new(),
            interviewed: false,
            record: serde_json::json!({"ieee": device.to_string(), "nwk": nwk}),
        };
        {
            let db = open_db(&dir, None).unwrap();
            let one = DeviceStore::open(&db, "zb-1").unwrap();
            let two = DeviceStore::open(&db, "zb-2").unwrap();
            let mut entry = info(a, 0x1001);
            entry.endpoints = vec![1];
            one.put(&entry).unwrap();
            let b = DeviceAddress::from_u64(2);
            two.put(&info(b, 0x2002)).unwrap();
            two.remove(b).unwrap();
        }
        let db = open_db(&dir, None).unwrap();
        let table = DeviceStore::open(&db, "zb-1").unwrap().load().unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(&a).unwrap().endpoints, vec![1]);
        assert!(DeviceStore::open(&db, "zb-2")
            .unwrap()
            .load()
            .unwrap()
            .is_empty());
        // A record of the ZNP driver stored before the coordinator API is read as its record.
        db.open_tree(TREE)
            .unwrap()
            .insert(
                "zb-1/00124b0000000009",
                br#"{"ieee":"00124b0000000009","nwk":4660,"endpoints":[1]}"#.to_vec(),
            )
            .unwrap();
        let table = DeviceStore::open(&db, "zb-1").unwrap().load().unwrap();
        let old = table
            .get(&DeviceAddress::from_u64(0x00124b0000000009))
            .unwrap();
        assert_eq!(old.network_address, Some(0x1234));
        assert_eq!(old.record["endpoints"], serde_json::json!([1]));
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
