//! Durable flushes of a sled database: [`DurableSync`].
//!
//! A small crate of its own so that every store that needs it (the ledger, the uplink's outbox and
//! counters, the head-end) shares one implementation without depending on one another.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Opens the sled database `config` names, waiting up to two seconds while its directory is still
/// locked by the same process's previous handle.
///
/// sled 0.34 takes an exclusive `flock` on the directory's `db` file and releases it only when the
/// last reference to the file is gone; after the last `Db` handle is dropped, sled's background write
/// threads can still hold one for a moment, so opening the same directory again at once (a store
/// reopened by a test, the daemon restarting a component) fails with `EWOULDBLOCK`. Another process
/// holding the store still fails, two seconds later, with sled's own error.
pub fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Makes a sled database durable against a power cut, not only against a crash of the process.
///
/// sled 0.34's `flush()` ends its log writes with `sync_file_range(2)` on Linux, which writes the data
/// pages but neither the file's metadata (its size, newly allocated extents) nor the drive's cache; only
/// sled's background flusher calls `fsync`, every `flush_every_ms`. A process killed with SIGKILL loses
/// nothing (the page cache survives it), but a power cut in between loses writes that `flush()` had
/// reported done: the QEMU hard power-off test lost an acknowledged top-up this way. `fsync` applies to
/// the file, whatever descriptor it is called on, so this holds its own descriptor of sled's log file
/// and calls `sync_all` on it after every `flush()`. The directory is synced once at open, so a newly
/// created log file's name survives too.
#[derive(Debug, Clone)]
pub struct DurableSync {
    log: Arc<File>,
}

impl DurableSync {
    /// For the sled database in directory `dir` (opened already, so its files exist).
    pub fn open(dir: &Path) -> std::io::Result<DurableSync> {
        let log = File::open(dir.join("db"))?;
        // sled writes its `conf` at creation without an fsync: after a power cut in the first seconds
        // it finds it empty and writes it again ("empty/corrupt configuration file found").
        if let Ok(conf) = File::open(dir.join("conf")) {
            conf.sync_all()?;
        }
        File::open(dir)?.sync_all()?;
        log.sync_all()?;
        Ok(DurableSync { log: Arc::new(log) })
    }

    /// `db.flush()`, then `fsync` of its log file.
    pub fn flush(&self, db: &sled::Db) -> Result<(), String> {
        db.flush().map_err(|e| e.to_string())?;
        self.sync_log()
    }

    /// `fsync` of the log file, after a `flush()` of the database or of one of its trees.
    pub fn sync_log(&self) -> Result<(), String> {
        self.log
            .sync_all()
            .map_err(|e| format!("fsync of the store's log file: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::DurableSync;

    #[test]
    fn flushes_and_syncs_an_open_database() {
        let dir = std::env::temp_dir().join(format!("durable-{}", std::process::id()));
        let db = sled::Config::new().path(&dir).open().unwrap();
        db.insert(b"k", b"v").unwrap();
        let sync = DurableSync::open(&dir).unwrap();
        sync.flush(&db).unwrap();
        sync.sync_log().unwrap();
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_without_a_database_is_an_error() {
        let dir = std::env::temp_dir().join("durable-no-such-database");
        assert!(DurableSync::open(&dir).is_err());
    }
}
