//! Last gasp and outages (`[power]`): the daemon watches the power-fail line of a UPS HAT or
//! supercapacitor board. When the supply fails it
//!
//! 1. writes the outage marker (`power-outage` in the store: when it failed; fsynced),
//! 2. queues the last gasp (event 54, an alarm, so it leaves ahead of everything) in the durable outbox,
//! 3. lets the daemon stop cleanly (buses, ledger flushed, uplink), after giving the last gasp up to
//!    `last_gasp_grace_ms` to leave, and exits with status 75 so that systemd starts it again.
//!
//! A daemon that starts while the supply is still failed (the reserve outlasted the stop) waits for it
//! without touching the store. Once the supply is there at a start and a marker is found, the outage's
//! window goes up as event 55 (failed at, back at) and the marker is removed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concentrator_hal::gpio::InputLine;
use concentrator_hal::power_fail::{PowerEvent, PowerFailMonitor};
use concentrator_protocol::{event_code, MessageId};

use crate::clock::unix_now;

/// The exit status after a stop for a power failure (EX_TEMPFAIL): systemd's `Restart=on-failure`
/// starts the daemon again, which then waits for the supply.
pub const EXIT_POWER_FAILED: u8 = 75;

/// How often the line is read.
const POLL: Duration = Duration::from_millis(10);

static FAILED: AtomicBool = AtomicBool::new(false);

/// Whether the daemon is stopping because the supply failed.
pub fn stopping_for_power() -> bool {
    FAILED.load(Ordering::SeqCst)
}

/// Where the outage marker is kept.
pub fn marker_path(store: &Path) -> PathBuf {
    store.join("power-outage")
}

/// Where the last gasp and the outage window go (the uplink's outbox).
pub trait PowerReports: Send {
    /// Queues the last gasp (durably); its message id.
    fn last_gasp(&self, failed_at: u64) -> Option<MessageId>;
    /// Queues the outage window (durably).
    fn restored(&self, failed_at: u64, back_at: u64) -> bool;
}

impl PowerReports for crate::uplink::UplinkQueue {
    fn last_gasp(&self, failed_at: u64) -> Option<MessageId> {
        self.power_event(
            event_code::LAST_GASP,
            concentrator_protocol::Severity::Alarm,
            "the supply failed; the gateway stops cleanly on its reserve",
            vec![i64::try_from(failed_at).unwrap_or(i64::MAX)],
        )
    }

    fn restored(&self, failed_at: u64, back_at: u64) -> bool {
        self.power_event(
            event_code::POWER_RESTORED,
            concentrator_protocol::Severity::Warning,
            "the supply is back after an outage",
            vec![
                i64::try_from(failed_at).unwrap_or(i64::MAX),
                i64::try_from(back_at).unwrap_or(i64::MAX),
            ],
        )
        .is_some()
    }
}

/// Writes `failed_at` to the marker, durably (file and directory fsynced).
fn write_marker(path: &Path, failed_at: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("partial");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{failed_at}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The time in the marker, if there is one (an unreadable one counts as "unknown", 0).
fn read_marker(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.trim().parse().unwrap_or(0))
}

/// Before the daemon starts: waits while the supply is failed (no store touched), until it is back or
/// `stop` is set. Returns whether the supply is there.
pub fn wait_for_supply(
    monitor: &mut PowerFailMonitor,
    stop: &AtomicBool,
    mut idle: impl FnMut(),
) -> bool {
    let start = Instant::now();
    let mut logged = false;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        match monitor.poll(start.elapsed()) {
            Ok(Some(PowerEvent::Failed)) if !logged => {
                log::warn!("the supply is off (power-fail line): waiting for it before starting");
                logged = true;
            }
            Ok(Some(PowerEvent::Restored)) => {
                log::info!("the supply is back: starting");
                return true;
            }
            Ok(_) => {}
            Err(e) => {
                log::error!("{e}; starting without the power-fail input");
                return true;
            }
        }
        // Settled as "present" for a whole debounce time: go.
        if !monitor.failed() && start.elapsed() >= Duration::from_millis(200) && !logged {
            return true;
        }
        idle();
        std::thread::sleep(POLL);
    }
}

/// The running watch.
#[derive(Debug)]
pub struct PowerWatch {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    last_gasp: Arc<std::sync::Mutex<Option<MessageId>>>,
    grace: Duration,
}

impl PowerWatch {
    /// Watches `line` on its own thread: reports an outage found at start (the marker in `store`) and
    /// a failure while running (see the module documentation). `reports`: the uplink's outbox, if any.
    pub fn start(
        monitor: PowerFailMonitor,
        store: &Path,
        reports: Option<Box<dyn PowerReports>>,
        grace: Duration,
    ) -> Result<PowerWatch, String> {
        let marker = marker_path(store);
        if let Some(failed_at) = read_marker(&marker) {
            let back_at = unix_now();
            let queued = reports
                .as_ref()
                .map(|r| r.restored(failed_at, back_at))
                .unwrap_or(true);
            log::warn!(
                "the gateway was stopped by a power failure for {} (from its last gasp to this start); the outage goes to the head-end",
                crate::timekeeper::duration_words(back_at.saturating_sub(failed_at))
            );
            if queued {
                if let Err(e) = std::fs::remove_file(&marker) {
                    log::error!("cannot remove the outage marker {}: {e}", marker.display());
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let last_gasp = Arc::new(std::sync::Mutex::new(None));
        let (s, lg) = (Arc::clone(&stop), Arc::clone(&last_gasp));
        let thread = std::thread::Builder::new()
            .name("power".into())
            .spawn(move || watch(monitor, &marker, reports, &s, &lg))
            .map_err(|e| format!("cannot start the power-fail watch: {e}"))?;
        Ok(PowerWatch {
            thread: Some(thread),
            stop,
            last_gasp,
            grace,
        })
    }

    /// After a failure, before the daemon stops: waits up to the grace time for the last gasp to leave
    /// (`reports` says whether it is still queued).
    pub fn let_last_gasp_leave(&self, waiting: &dyn Fn(MessageId) -> bool) {
        let Some(id) = *self.last_gasp.lock().unwrap_or_else(|p| p.into_inner()) else {
            return;
        };
        let until = Instant::now() + self.grace;
        while Instant::now() < until {
            if !waiting(id) {
                log::info!("the last gasp left");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        log::warn!(
            "the last gasp did not leave within {} ms; it goes at the next connection",
            self.grace.as_millis()
        );
    }

    /// Stops the watch.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(
    mut monitor: PowerFailMonitor,
    marker: &Path,
    reports: Option<Box<dyn PowerReports>>,
    stop: &AtomicBool,
    last_gasp: &std::sync::Mutex<Option<MessageId>>,
) {
    let start = Instant::now();
    let mut error_logged = false;
    while !stop.load(Ordering::SeqCst) {
        match monitor.poll(start.elapsed()) {
            Ok(Some(PowerEvent::Failed)) => {
                let at = unix_now();
                log::error!("LAST GASP: the supply failed; stopping cleanly on the reserve");
                if let Err(e) = write_marker(marker, at) {
                    log::error!("cannot write the outage marker {}: {e}", marker.display());
                }
                let id = reports.as_ref().and_then(|r| r.last_gasp(at));
                *last_gasp.lock().unwrap_or_else(|p| p.into_inner()) = id;
                FAILED.store(true, Ordering::SeqCst);
                return;
            }
            Ok(_) => error_logged = false,
            Err(e) if !error_logged => {
                log::error!("{e}; the power-fail line is not watched until it reads again");
                error_logged = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(POLL);
    }
}

/// Opens `[power]`'s line.
pub fn open_line(setup: &crate::config::PowerSetup) -> Result<Box<dyn InputLine>, String> {
    concentrator_hal::linux::GpioInput::open(&setup.line, "concentratord power-fail")
        .map(|l| Box::new(l) as Box<dyn InputLine>)
        .map_err(|e| format!("[power] fail_line: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use concentrator_hal::power_fail::Polarity;
    use concentrator_hal::sim::SimPin;
    use std::sync::Mutex;

    /// The events queued: (code, values).
    type Queued = Vec<(u16, Vec<u64>)>;

    #[derive(Default, Clone)]
    struct Seen(Arc<Mutex<Queued>>);

    impl PowerReports for Seen {
        fn last_gasp(&self, failed_at: u64) -> Option<MessageId> {
            self.0.lock().unwrap().push((54, vec![failed_at]));
            Some(MessageId([9; 16]))
        }
        fn restored(&self, failed_at: u64, back_at: u64) -> bool {
            self.0.lock().unwrap().push((55, vec![failed_at, back_at]));
            true
        }
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("power-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn monitor(line: &SimPin) -> PowerFailMonitor {
        PowerFailMonitor::new(
            Box::new(line.clone()),
            Polarity::ActiveLow,
            Duration::from_millis(30),
        )
    }

    #[test]
    fn a_failure_writes_the_marker_queues_the_last_gasp_and_the_next_start_reports_the_window() {
        let store = temp("cycle");
        let line = SimPin::new("power-good");
        line.drive(true);
        let seen = Seen::default();
        let watch = PowerWatch::start(
            monitor(&line),
            &store,
            Some(Box::new(seen.clone())),
            Duration::from_millis(100),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!stopping_for_power() && seen.0.lock().unwrap().is_empty());
        // A 10 ms dip is not an outage; a real one is.
        line.drive(false);
        std::thread::sleep(Duration::from_millis(10));
        line.drive(true);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!stopping_for_power());
        line.drive(false);
        let until = Instant::now() + Duration::from_secs(5);
        while !stopping_for_power() {
            assert!(Instant::now() < until, "no last gasp");
            std::thread::sleep(Duration::from_millis(5));
        }
        let failed_at = read_marker(&marker_path(&store)).expect("the marker");
        assert_eq!(seen.0.lock().unwrap().clone(), vec![(54, vec![failed_at])]);
        watch.let_last_gasp_leave(&|_| false);
        watch.stop();
        FAILED.store(false, Ordering::SeqCst);

        // Started again while the supply is still off: it waits, touching nothing.
        let stop = AtomicBool::new(false);
        let mut m = monitor(&line);
        let t = std::thread::scope(|s| {
            let h = s.spawn(|| wait_for_supply(&mut m, &stop, || {}));
            std::thread::sleep(Duration::from_millis(200));
            assert!(!h.is_finished(), "it must wait for the supply");
            line.drive(true);
            h.join().unwrap()
        });
        assert!(t);
        // The supply is there: the window goes up and the marker goes.
        let watch = PowerWatch::start(
            monitor(&line),
            &store,
            Some(Box::new(seen.clone())),
            Duration::from_millis(100),
        )
        .unwrap();
        watch.stop();
        let all = seen.0.lock().unwrap().clone();
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[1].0, 55);
        assert_eq!(all[1].1[0], failed_at);
        assert!(all[1].1[1] >= failed_at);
        assert!(read_marker(&marker_path(&store)).is_none());
        let _ = std::fs::remove_dir_all(&store);
    }
}
