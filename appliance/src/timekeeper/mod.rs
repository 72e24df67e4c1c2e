//! The gateway as the time authority of its meters (docs/install.md, *Meter clocks*).
//!
//! - Its own clock: trusted while NTP has synchronised the host's clock (`[time] ntp_flag` exists);
//!   otherwise, with `[modem]`, the modem's network time (`AT+CCLK?`, read by the modem worker) sets the
//!   daemon's step over the host's clock ([`crate::clock::set_correction_s`]); otherwise a head-end
//!   TimeSync within `headend_step_max_s` does. With none of them the clock is not trustworthy: meters
//!   are read but not set, and no drift is judged.
//! - Its meters ([`BusClocks`], on each bus's thread): every meter's clock is read every
//!   `read_every_min`; once a day at `sync_hour` (local time) they are read, set with one `SetClock` per
//!   driver on the bus (a DL/T 645 broadcast reaches every meter), and read again; a meter that did not
//!   take the time is set on its own once more. A clock further off than `drift_limit_s` raises
//!   event 60 ([`concentrator_protocol::event_code::METER_CLOCK_DRIFT`]); one still off after being set
//!   raises event 61 ([`concentrator_protocol::event_code::METER_CLOCK_REFUSED`]).
//! - The last reading of each meter's clock is kept in `meter-clocks.json` in the store, so status
//!   shows it across restarts.

mod meters;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use concentrator_protocol::{result_code, Event, Severity};
use serde::{Deserialize, Serialize};

pub use meters::BusClocks;

use crate::clock::{correction_s, set_correction_s, system_now, unix_now};
use crate::config::time::TimeSetup;
use crate::uplink::UplinkQueue;

/// A meter clock within this of the gateway's after a time sync took it, seconds (one second of the
/// meter's resolution, one of the reading's two exchanges).
pub const SET_TOLERANCE_S: i64 = 2;

/// The modem's network time is used for this long after it was last read, seconds.
const MODEM_FRESH_S: u64 = 2 * 3600;

/// Where the gateway's time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeSource {
    /// NTP has synchronised the host's clock.
    Ntp,
    /// The mobile network's time, from the modem.
    Modem,
    /// A TimeSync from the head-end.
    HeadEnd,
}

impl TimeSource {
    /// In words.
    pub fn words(self) -> &'static str {
        match self {
            TimeSource::Ntp => "NTP",
            TimeSource::Modem => "the mobile network's time (modem)",
            TimeSource::HeadEnd => "the head-end's TimeSync",
        }
    }
}

/// The gateway's clock and its meters' clocks, as the status file holds them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TimeView {
    /// Where the gateway's time comes from; absent: not trustworthy (meters are not set).
    pub source: Option<TimeSource>,
    /// What the gateway's clock is, in words (the source, or why it is not trustworthy and the fix).
    pub detail: String,
    /// The step over the host's clock, seconds (modem or head-end time while NTP has not synchronised).
    pub step_s: i64,
    /// The local hour of the daily meter time sync.
    pub sync_hour: u8,
    /// The drift limit, seconds.
    pub drift_limit_s: u32,
    /// When the meters were last set, unix seconds.
    pub last_sync_unix: Option<u64>,
    /// Meter clocks by `bus/address`.
    pub meters: BTreeMap<String, MeterClock>,
}

/// One meter's clock as last read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct MeterClock {
    /// The dwelling.
    pub dwelling: String,
    /// Meter minus gateway, seconds (positive: the meter is ahead), when the gateway's clock was
    /// trustworthy at the reading.
    pub drift_s: Option<i64>,
    /// When it was read, unix seconds (the gateway's time).
    pub read_unix: Option<u64>,
    /// When it was last set by the gateway, unix seconds.
    pub set_unix: Option<u64>,
    /// `ok`, `drifted` (past the limit), `refused` (did not take the time), `not-judged` (the gateway's
    /// clock was not trustworthy), `no-clock` (the driver or meter has none), `unread` (no answer).
    pub state: String,
    /// The problem in words, with what to do.
    pub problem: Option<String>,
}

/// Seconds as people read them, the two largest units and no zero part: `45 s`, `4 min 12 s`,
/// `10 min`, `3 h 5 min`, `1 h`, `1 day`, `2 days 4 h`.
pub fn duration_words(seconds: u64) -> String {
    let (big, big_unit, small, small_unit) = match seconds {
        0..=59 => return format!("{seconds} s"),
        60..=3599 => (seconds / 60, "min", seconds % 60, "s"),
        3600..=86_399 => (seconds / 3600, "h", seconds % 3600 / 60, "min"),
        _ => {
            let days = seconds / 86_400;
            let unit = if days == 1 { "day" } else { "days" };
            (days, unit, seconds % 86_400 / 3600, "h")
        }
    };
    if small == 0 {
        format!("{big} {big_unit}")
    } else {
        format!("{big} {big_unit} {small} {small_unit}")
    }
}

/// A drift in words: `4 min 12 s ahead of the gateway`, `3 s behind the gateway`, `on time`.
pub fn drift_words(drift_s: i64) -> String {
    match drift_s {
        0 => "on time".into(),
        d if d > 0 => format!("{} ahead of the gateway", duration_words(d.unsigned_abs())),
        d => format!("{} behind the gateway", duration_words(d.unsigned_abs())),
    }
}

#[derive(Debug, Default)]
struct State {
    source: Option<TimeSource>,
    detail: String,
    /// The modem's network time minus the host's clock, and when it was read (host clock).
    modem: Option<(i64, u64)>,
    /// A head-end step was taken (kept until NTP or the modem take over).
    headend: bool,
    last_sync_unix: Option<u64>,
    meters: BTreeMap<String, MeterClock>,
    /// Counts the times the clock became trustworthy (the buses read their meters again then).
    trusted_since: u64,
}

/// The time authority: one per daemon.
#[derive(Debug)]
pub struct TimeKeeper {
    setup: TimeSetup,
    file: Option<PathBuf>,
    uplink: Option<UplinkQueue>,
    state: Mutex<State>,
}

static KEEPER: OnceLock<Arc<TimeKeeper>> = OnceLock::new();

impl TimeKeeper {
    /// A time keeper with `setup`, keeping meter clocks in `store` (when given), queueing its events
    /// on `uplink` (when configured); the last meter clocks are loaded from the store.
    pub fn new(setup: TimeSetup, store: Option<&Path>, uplink: Option<UplinkQueue>) -> Arc<Self> {
        let file = store.map(|s| s.join("meter-clocks.json"));
        let meters = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let keeper = Arc::new(TimeKeeper {
            setup,
            file,
            uplink,
            state: Mutex::new(State {
                meters,
                ..State::default()
            }),
        });
        // A trustworthy clock is logged by `refresh` as it becomes so; an untrusted one here.
        if keeper.refresh().is_none() {
            log::warn!(
                "time: the gateway's clock is {}",
                keeper.with(|s| s.detail.clone())
            );
        }
        keeper
    }

    /// Makes this the daemon's time keeper (the head-end's TimeSync finds it here). The first wins.
    pub fn install(self: &Arc<Self>) {
        let _ = KEEPER.set(Arc::clone(self));
    }

    /// The daemon's time keeper, once installed.
    pub fn installed() -> Option<Arc<TimeKeeper>> {
        KEEPER.get().cloned()
    }

    /// The settings.
    pub fn setup(&self) -> &TimeSetup {
        &self.setup
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Decides where the gateway's time comes from now, and sets the daemon's step accordingly.
    pub fn refresh(&self) -> Option<TimeSource> {
        let ntp = self.setup.ntp_flag.exists();
        let host = system_now();
        let (source, _, step) = self.with(|s| {
            let modem = s
                .modem
                .filter(|(_, at)| self.setup.modem_time && host.saturating_sub(*at) <= MODEM_FRESH_S);
            let chosen = if ntp {
                s.headend = false;
                (Some(TimeSource::Ntp), "synchronised by NTP".to_string(), Some(0))
            } else if let Some((offset, _)) = modem {
                s.headend = false;
                (
                    Some(TimeSource::Modem),
                    format!(
                        "set from the mobile network's time (NTP has not synchronised: {} does not exist; check `timedatectl timesync-status`)",
                        self.setup.ntp_flag.display()
                    ),
                    Some(offset),
                )
            } else if s.headend {
                (
                    Some(TimeSource::HeadEnd),
                    "set from the head-end's TimeSync (NTP has not synchronised and there is no network time)".to_string(),
                    None,
                )
            } else {
                (
                    None,
                    format!(
                        "not trustworthy: NTP has not synchronised ({} does not exist){}; meter clocks are read but not set — check the uplink and `timedatectl timesync-status`",
                        self.setup.ntp_flag.display(),
                        if self.setup.modem_time { " and the modem has given no network time" } else { "" }
                    ),
                    None,
                )
            };
            if s.source.is_none() && chosen.0.is_some() {
                s.trusted_since += 1;
            }
            if s.source != chosen.0 {
                match chosen.0 {
                    Some(_) => log::info!("time: the gateway's clock is {}", chosen.1),
                    None => log::warn!("time: the gateway's clock is {}", chosen.1),
                }
            }
            s.source = chosen.0;
            s.detail = chosen.1.clone();
            chosen
        });
        if let Some(step) = step {
            set_correction_s(step);
        }
        source
    }

    /// Where the gateway's time comes from, or why it is not trustworthy.
    pub fn trusted(&self) -> Result<TimeSource, String> {
        self.with(|s| {
            s.source
                .ok_or_else(|| format!("the gateway's clock is {}", s.detail))
        })
    }

    /// A number that changes each time the gateway's clock becomes trustworthy.
    pub fn trusted_since(&self) -> u64 {
        self.with(|s| s.trusted_since)
    }

    /// The modem's network time was read: `network_unix` (UTC).
    pub fn network_time(&self, network_unix: u64) {
        let host = system_now();
        let offset =
            i64::try_from(network_unix).unwrap_or(i64::MAX) - i64::try_from(host).unwrap_or(0);
        self.with(|s| s.modem = Some((offset, host)));
        self.refresh();
    }

    /// The head-end's TimeSync: compares, and steps the gateway's clock when it is not synchronised
    /// by NTP or the network and the head-end's is within `headend_step_max_s`. The result code and
    /// what was done, for the command's result.
    pub fn head_end_time(&self, head_end_ms: u64) -> (u16, String) {
        let source = self.refresh();
        let ours_ms = i128::from(unix_now()) * 1000;
        let offset_ms = i128::from(head_end_ms) - ours_ms;
        let offset_s =
            i64::try_from((offset_ms + offset_ms.signum() * 500) / 1000).unwrap_or(i64::MAX);
        let apart = if offset_s == 0 {
            "within a second of the gateway's".to_string()
        } else if offset_s > 0 {
            format!(
                "{} ahead of the gateway's",
                duration_words(offset_s.unsigned_abs())
            )
        } else {
            format!(
                "{} behind the gateway's",
                duration_words(offset_s.unsigned_abs())
            )
        };
        match source {
            Some(source @ (TimeSource::Ntp | TimeSource::Modem)) => {
                if offset_s.unsigned_abs() > u64::from(self.setup.drift_limit_s) {
                    log::warn!("time: the head-end's clock is {apart}; the gateway keeps {} (check the head-end's NTP)", source.words());
                }
                (
                    result_code::DONE,
                    format!("kept the gateway's clock (set by {}); the head-end's clock is {apart}", source.words()),
                )
            }
            _ if self.setup.headend_step_max_s == 0 => (
                result_code::REFUSED,
                format!("the gateway's clock is not synchronised and stepping to the head-end's time is off ([time] headend_step_max_s = 0); the head-end's clock is {apart}"),
            ),
            _ if offset_s.unsigned_abs() > u64::from(self.setup.headend_step_max_s) => (
                result_code::REFUSED,
                format!(
                    "not stepped: the head-end's clock is {apart}, more than [time] headend_step_max_s = {} s; fix the gateway's NTP (`timedatectl timesync-status`) or raise the limit",
                    self.setup.headend_step_max_s
                ),
            ),
            _ => {
                set_correction_s(correction_s().saturating_add(offset_s));
                self.with(|s| s.headend = true);
                self.refresh();
                log::warn!("time: stepped the gateway's clock to the head-end's time (it was {apart}); NTP has not synchronised");
                (
                    result_code::DONE,
                    format!("stepped the gateway's clock to the head-end's time (the head-end's was {apart}); meters are set from it at the daily sync"),
                )
            }
        }
    }

    /// The view for the status file.
    pub fn view(&self) -> TimeView {
        self.refresh();
        self.with(|s| TimeView {
            source: s.source,
            detail: s.detail.clone(),
            step_s: correction_s(),
            sync_hour: self.setup.sync_hour,
            drift_limit_s: self.setup.drift_limit_s,
            last_sync_unix: s.last_sync_unix,
            meters: s.meters.clone(),
        })
    }

    /// Records meter clocks (from a bus's thread) and keeps them in the store.
    fn record(&self, updates: Vec<(String, MeterClock)>, synced_at: Option<u64>) {
        let snapshot = self.with(|s| {
            for (key, clock) in updates {
                s.meters.insert(key, clock);
            }
            if synced_at.is_some() {
                s.last_sync_unix = synced_at;
            }
            s.meters.clone()
        });
        if let Some(file) = &self.file {
            let tmp = file.with_extension("json.tmp");
            let written = serde_json::to_vec_pretty(&snapshot)
                .map_err(std::io::Error::other)
                .and_then(|json| std::fs::write(&tmp, json))
                .and_then(|()| std::fs::rename(&tmp, file));
            if let Err(e) = written {
                log::warn!(
                    "time: cannot keep the meter clocks in {}: {e}",
                    file.display()
                );
            }
        }
    }

    /// The last record of a meter's clock.
    fn meter(&self, key: &str) -> Option<MeterClock> {
        self.with(|s| s.meters.get(key).cloned())
    }

    /// Queues a meter's clock event for the head-end (in the meter's scope when it has one).
    fn event(&self, bus: &str, address: &str, code: u16, detail: String, values: Vec<i64>) {
        let Some(queue) = &self.uplink else {
            return;
        };
        let mut detail = detail;
        detail.truncate(detail.floor_char_boundary(256));
        queue.meter_event(
            bus,
            address,
            Event {
                at: unix_now(),
                code,
                severity: Severity::Warning,
                detail: Some(detail),
                values,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(flag: &Path, step_max: u32) -> TimeSetup {
        TimeSetup {
            sync_hour: 3,
            drift_limit_s: 60,
            read_every_s: 3600,
            ntp_flag: flag.to_path_buf(),
            modem_time: false,
            headend_step_max_s: step_max,
        }
    }

    /// The decisions that do not step (a step changes the daemon's clock, which other unit tests in
    /// this process read; appliance/tests/time.rs covers it in a daemon of its own).
    #[test]
    fn a_head_end_time_sync_is_kept_or_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("timekeeper-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flag = dir.join("synchronized");
        std::fs::write(&flag, "").unwrap();
        let now_ms = || unix_now() * 1000;

        let synced = TimeKeeper::new(setup(&flag, 600), None, None);
        assert_eq!(synced.trusted(), Ok(TimeSource::Ntp));
        let (code, reason) = synced.head_end_time(now_ms() + 2_000);
        assert_eq!(code, result_code::DONE, "{reason}");
        assert!(
            reason.starts_with("kept the gateway's clock (set by NTP)"),
            "{reason}"
        );
        assert!(reason.contains("2 s ahead of the gateway's"), "{reason}");

        let missing = dir.join("not-synchronized");
        let free = TimeKeeper::new(setup(&missing, 600), None, None);
        let why = free.trusted().unwrap_err();
        assert!(
            why.contains("not trustworthy") && why.contains("not-synchronized"),
            "{why}"
        );
        let (code, reason) = free.head_end_time(now_ms() + 7_200_000);
        assert_eq!(code, result_code::REFUSED, "{reason}");
        assert!(
            reason.contains(
                "2 h ahead of the gateway's, more than [time] headend_step_max_s = 600 s"
            ),
            "{reason}"
        );
        assert!(free.trusted().is_err(), "not stepped");

        let never = TimeKeeper::new(setup(&missing, 0), None, None);
        let (code, reason) = never.head_end_time(now_ms());
        assert_eq!(code, result_code::REFUSED, "{reason}");
        assert!(reason.contains("headend_step_max_s = 0"), "{reason}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn drifts_read_as_words() {
        assert_eq!(drift_words(0), "on time");
        assert_eq!(drift_words(252), "4 min 12 s ahead of the gateway");
        assert_eq!(drift_words(-3), "3 s behind the gateway");
        assert_eq!(duration_words(3 * 3600 + 300), "3 h 5 min");
        assert_eq!(duration_words(600), "10 min");
        assert_eq!(duration_words(3600 + 59), "1 h");
        assert_eq!(duration_words(86_400 + 7200), "1 day 2 h");
        assert_eq!(duration_words(3 * 86_400), "3 days");
        assert_eq!(duration_words(0), "0 s");
    }
}
