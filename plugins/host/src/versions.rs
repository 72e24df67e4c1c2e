//! The highest version of each plugin this appliance has run, kept in a small state file so that an
//! older signed build cannot be swapped back in (a downgrade is refused unless the configuration allows
//! it for that plugin).
//!
//! The file holds one `name version` line per plugin and is replaced atomically (written beside, then
//! renamed) whenever a higher version loads.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// Compares two version strings: dot- or dash-separated parts, numbers by value, other parts as text;
/// a missing part is lower (`1.2` < `1.2.0` < `1.10`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |v: &str| -> Vec<String> {
        v.split(['.', '-', '+'])
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (a, b) = (parts(a), parts(b));
    for (x, y) in a.iter().zip(&b) {
        let order = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// The state file of the highest versions seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStore {
    path: PathBuf,
}

impl VersionStore {
    /// The store in `path` (created when the first plugin loads).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        VersionStore { path: path.into() }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (name, version) = line.trim().split_once(' ')?;
                Some((name.to_owned(), version.trim().to_owned()))
            })
            .collect()
    }

    /// The highest version of `name` recorded.
    pub fn highest(&self, name: &str) -> Option<String> {
        self.read()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Records `version` of `name` when it is higher than the recorded one.
    pub fn record(&self, name: &str, version: &str) -> std::io::Result<()> {
        let mut entries = self.read();
        match entries.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) if compare_versions(version, v) != Ordering::Greater => return Ok(()),
            Some((_, v)) => *v = version.to_owned(),
            None => entries.push((name.to_owned(), version.to_owned())),
        }
        entries.sort();
        let text: String = entries.iter().map(|(n, v)| format!("{n} {v}\n")).collect();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".new");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_their_numbers() {
        assert_eq!(compare_versions("1.10.0", "1.9.3"), Ordering::Greater);
        assert_eq!(compare_versions("1.2", "1.2.0"), Ordering::Less);
        assert_eq!(compare_versions("2.0.0", "2.0.0"), Ordering::Equal);
        assert_eq!(compare_versions("0.9.0", "1.0.0-rc1"), Ordering::Less);
    }

    #[test]
    fn the_store_keeps_the_highest_version() {
        let dir =
            std::env::temp_dir().join(format!("concentrator-versions-{}", std::process::id()));
        let store = VersionStore::new(dir.join("plugin-versions"));
        assert_eq!(store.highest("acme"), None);
        store.record("acme", "1.2.0").unwrap();
        store.record("other", "0.1.0").unwrap();
        store.record("acme", "1.1.0").unwrap();
        assert_eq!(store.highest("acme").as_deref(), Some("1.2.0"));
        store.record("acme", "1.10.0").unwrap();
        assert_eq!(store.highest("acme").as_deref(), Some("1.10.0"));
        assert_eq!(store.highest("other").as_deref(), Some("0.1.0"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
