//! The health mark of a trial boot (docs/ARCHITECTURE.md, *Signed A/B updates*): after
//! `concentrator update apply` and a `tryboot` reboot, the new slot runs once on trial. The daemon
//! watches its own health for up to [`TRIAL_LIMIT`]: every bus polled at least once (its meters asked,
//! answered or not: a silent meter is not the new version's fault), and the uplink connected or its
//! outbox growing (no network is not the new version's fault either). Healthy, it leaves
//! `update-healthy` in the request directory, which the root unit `concentrator-update-commit` turns into
//! `concentrator update commit`; not healthy in time, `update-unhealthy`, and the unit reboots into the
//! old slot. The daemon itself stays unprivileged.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::status::Status;

/// How long a trial boot has to become healthy unless `[update] trial_limit_s` says otherwise.
pub const TRIAL_LIMIT: Duration = Duration::from_secs(600);

/// Whether the firmware flag says this is a trial boot (a big-endian u32, non-zero; a missing file is
/// an ordinary boot).
pub fn is_trial_boot(flag: &Path) -> bool {
    std::fs::read(flag).is_ok_and(|b| b.iter().any(|&x| x != 0))
}

/// What is still missing for a healthy trial, in words; `None` when healthy.
pub fn missing(status: &Status, outbox_at_start: Option<u64>) -> Option<String> {
    let mut missing = Vec::new();
    for (name, bus) in &status.buses {
        if bus.state != "running" {
            missing.push(format!("bus {name} is {}", bus.state));
        } else if !bus.meters.is_empty() && bus.meters.iter().all(|m| m.stats.requests == 0) {
            missing.push(format!("bus {name} has not polled yet"));
        }
    }
    if let Some(u) = &status.uplink {
        let growing = outbox_at_start.is_some_and(|start| u.outbox > start);
        if !u.connected && !growing {
            missing.push("the uplink is not connected and its outbox is not growing".into());
        }
    }
    (!missing.is_empty()).then(|| missing.join("; "))
}

/// The trial's watch, called by the daemon's main loop.
#[derive(Debug)]
pub struct Trial {
    dir: PathBuf,
    started: Instant,
    limit: Duration,
    outbox_at_start: Option<u64>,
    done: bool,
}

impl Trial {
    /// On a trial boot (`flag`), a watch leaving its verdict in `dir` within `limit`; `None` on an
    /// ordinary boot.
    pub fn start(flag: &Path, dir: &Path, limit: Duration) -> Option<Trial> {
        if !is_trial_boot(flag) {
            return None;
        }
        log::warn!(
            "trial boot of a new version: it stays only if the daemon becomes healthy within {}",
            crate::timekeeper::duration_words(limit.as_secs())
        );
        Some(Trial {
            dir: dir.to_path_buf(),
            started: Instant::now(),
            limit,
            outbox_at_start: None,
            done: false,
        })
    }

    /// Looks at the status; leaves the verdict once.
    pub fn check(&mut self, status: &Status) {
        if self.done {
            return;
        }
        if self.outbox_at_start.is_none() {
            self.outbox_at_start = status.uplink.as_ref().map(|u| u.outbox);
        }
        let (file, line) = match missing(status, self.outbox_at_start) {
            None => (
                "update-healthy",
                format!(
                    "healthy after {} s: every bus polled, the uplink connected or queueing",
                    self.started.elapsed().as_secs()
                ),
            ),
            Some(why) if self.started.elapsed() >= self.limit => ("update-unhealthy", why),
            Some(_) => return,
        };
        let path = self.dir.join(file);
        match std::fs::write(&path, format!("{line}\n")) {
            Ok(()) => {
                if file == "update-healthy" {
                    log::info!("trial boot {line}; asked for this version to be made permanent");
                } else {
                    log::error!(
                        "trial boot not healthy after {} ({line}); asked to go back to the previous version",
                        crate::timekeeper::duration_words(self.limit.as_secs())
                    );
                }
                self.done = true;
            }
            Err(e) => log::error!(
                "cannot leave the trial boot's verdict in {}: {e}; check [update] request_dir",
                path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{BusStatus, MeterStatus, UplinkView};

    fn status(polled: bool, connected: bool, outbox: u64) -> Status {
        let mut s = Status::default();
        let mut m = MeterStatus::default();
        m.stats.requests = u64::from(polled);
        s.buses.insert(
            "rs485-1".into(),
            BusStatus {
                state: "running".into(),
                detail: String::new(),
                meters: vec![m],
            },
        );
        s.uplink = Some(UplinkView {
            connected,
            outbox,
            ..Default::default()
        });
        s
    }

    #[test]
    fn healthy_needs_every_bus_polled_and_the_uplink_connected_or_queueing() {
        assert!(missing(&status(false, true, 0), Some(0))
            .unwrap()
            .contains("has not polled"));
        assert!(missing(&status(true, false, 3), Some(3))
            .unwrap()
            .contains("not growing"));
        assert_eq!(
            missing(&status(true, false, 4), Some(3)),
            None,
            "no network, queueing"
        );
        assert_eq!(missing(&status(true, true, 0), Some(0)), None);
    }

    #[test]
    fn a_trial_boot_leaves_its_verdict_once_and_an_ordinary_boot_none() {
        let dir = std::env::temp_dir().join(format!("trial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let flag = dir.join("tryboot");
        assert!(
            Trial::start(&flag, &dir, TRIAL_LIMIT).is_none(),
            "no flag: ordinary boot"
        );
        std::fs::write(&flag, [0, 0, 0, 0]).unwrap();
        assert!(Trial::start(&flag, &dir, TRIAL_LIMIT).is_none());
        std::fs::write(&flag, [0, 0, 0, 1]).unwrap();
        let mut t = Trial::start(&flag, &dir, TRIAL_LIMIT).unwrap();
        t.check(&status(false, true, 0));
        assert!(!dir.join("update-healthy").exists());
        t.check(&status(true, true, 0));
        assert!(dir.join("update-healthy").exists());
        std::fs::remove_file(dir.join("update-healthy")).unwrap();
        t.check(&status(true, true, 0));
        assert!(!dir.join("update-healthy").exists(), "once");
        // Not healthy within the limit: the verdict sends it back.
        let mut t = Trial::start(&flag, &dir, Duration::ZERO).unwrap();
        t.check(&status(false, true, 0));
        assert!(std::fs::read_to_string(dir.join("update-unhealthy"))
            .unwrap()
            .contains("has not polled"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
