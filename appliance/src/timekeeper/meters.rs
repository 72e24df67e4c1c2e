//! One bus's meter clocks, run on the bus's own thread between polls: the periodic clock reads and the
//! daily time sync.

use std::sync::Arc;

use concentrator_plugin_host::{Quantity, Task, TaskError, Value};
use concentrator_protocol::event_code;

use super::{drift_words, MeterClock, TimeKeeper, SET_TOLERANCE_S};
use crate::clock::{local_hour_and_day, unix_now};
use crate::scheduler::BusScheduler;

/// What reading one meter's clock gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClockRead {
    /// Meter minus gateway, seconds.
    Drift(i64),
    /// The driver or the meter has no clock to read.
    NoClock,
    /// No usable answer.
    Unread,
}

/// A bus's meter clocks.
#[derive(Debug)]
pub struct BusClocks {
    keeper: Arc<TimeKeeper>,
    bus: String,
    /// When the next periodic read is due (gateway time).
    next_read: u64,
    /// The local day of the last daily sync.
    synced_day: Option<i64>,
    /// The local day a skipped sync was last logged.
    skip_logged: Option<i64>,
    /// [`TimeKeeper::trusted_since`] at the last read: clocks read while the gateway's was not
    /// trustworthy are read again as soon as it is.
    trusted_since: u64,
}

impl BusClocks {
    /// The clocks of bus `bus`, kept by `keeper`.
    pub fn new(keeper: Arc<TimeKeeper>, bus: &str) -> Self {
        BusClocks {
            keeper,
            bus: bus.to_string(),
            next_read: 0,
            synced_day: None,
            skip_logged: None,
            trusted_since: 0,
        }
    }

    fn key(&self, address: &str) -> String {
        format!("{}/{address}", self.bus)
    }

    /// Does what is due now: the daily sync in its hour, else the periodic read. Returns whether it
    /// used the bus.
    pub fn tick(&mut self, sched: &mut BusScheduler) -> bool {
        let now = unix_now();
        let setup = self.keeper.setup().clone();
        let trusted_since = self.keeper.trusted_since();
        if trusted_since != self.trusted_since {
            self.trusted_since = trusted_since;
            self.next_read = 0;
        }
        if let Some((hour, day)) = local_hour_and_day(now) {
            if hour == setup.sync_hour && self.synced_day != Some(day) {
                match self.keeper.trusted() {
                    Ok(_) => {
                        self.sync(sched);
                        self.synced_day = Some(day);
                        self.next_read = unix_now().saturating_add(setup.read_every_s);
                        return true;
                    }
                    Err(why) => {
                        if self.skip_logged != Some(day) {
                            log::warn!("bus {}: the daily meter time sync waits: {why}", self.bus);
                            self.skip_logged = Some(day);
                        }
                    }
                }
            }
        }
        if setup.read_every_s > 0 && now >= self.next_read {
            self.read_all(sched);
            self.next_read = unix_now().saturating_add(setup.read_every_s);
            return true;
        }
        false
    }

    /// The meters worth a clock exchange: driven, and not known to be offline.
    fn candidates(sched: &BusScheduler) -> Vec<usize> {
        sched
            .meters()
            .iter()
            .enumerate()
            .filter(|(_, m)| m.failure().is_none() && m.online() != Some(false))
            .map(|(i, _)| i)
            .collect()
    }

    fn read(&self, sched: &mut BusScheduler, index: usize) -> ClockRead {
        match sched.run_now(index, Task::Read(Quantity::MeterDateTime)) {
            Ok(Ok(readings)) => readings
                .iter()
                .find_map(|r| match (r.quantity, r.value) {
                    (Quantity::MeterDateTime, Value::Timestamp(t)) => Some(ClockRead::Drift(
                        t - i64::try_from(unix_now()).unwrap_or(i64::MAX),
                    )),
                    _ => None,
                })
                .unwrap_or(ClockRead::NoClock),
            Ok(Err(_)) => ClockRead::NoClock,
            Err(e) if e.is_plugin_fault() => ClockRead::NoClock,
            // A driver that has no clock for this meter says so before any exchange.
            Err(TaskError::TaskRejected { .. } | TaskError::WrongKind { .. }) => ClockRead::NoClock,
            Err(_) => ClockRead::Unread,
        }
    }

    /// [`Self::read`], once more when no answer came (a reply lost on a busy line; the reads decide
    /// events).
    fn read_again_if_lost(&self, sched: &mut BusScheduler, index: usize) -> ClockRead {
        match self.read(sched, index) {
            ClockRead::Unread => self.read(sched, index),
            read => read,
        }
    }

    /// Reads every meter's clock, records it and raises the drift event on crossing the limit.
    fn read_all(&mut self, sched: &mut BusScheduler) -> Vec<(usize, ClockRead)> {
        let trusted = self.keeper.trusted().is_ok();
        let mut updates = Vec::new();
        let mut reads = Vec::new();
        for index in Self::candidates(sched) {
            let read = self.read_again_if_lost(sched, index);
            reads.push((index, read));
            let meter = &sched.meters()[index];
            let key = self.key(&meter.address);
            let before = self.keeper.meter(&key).unwrap_or_default();
            let clock = self.judge(&meter.address, &meter.dwelling, read, trusted, &before);
            updates.push((key, clock));
        }
        self.keeper.record(updates, None);
        reads
    }

    /// The record of a reading; raises the drift event when the meter newly passes the limit.
    fn judge(
        &self,
        address: &str,
        dwelling: &str,
        read: ClockRead,
        trusted: bool,
        before: &MeterClock,
    ) -> MeterClock {
        let limit = i64::from(self.keeper.setup().drift_limit_s);
        let mut clock = MeterClock {
            dwelling: dwelling.to_string(),
            set_unix: before.set_unix,
            read_unix: before.read_unix,
            drift_s: before.drift_s,
            ..MeterClock::default()
        };
        match read {
            ClockRead::NoClock => {
                clock.state = "no-clock".into();
                clock.drift_s = None;
            }
            ClockRead::Unread => {
                clock.state = "unread".into();
                clock.problem = Some("its clock could not be read (no answer)".into());
            }
            ClockRead::Drift(drift) if !trusted => {
                clock.state = "not-judged".into();
                clock.read_unix = Some(unix_now());
                clock.drift_s = None;
                clock.problem = Some(format!(
                    "its clock is {} but the gateway's own clock is not trustworthy",
                    drift_words(drift)
                ));
            }
            ClockRead::Drift(drift) => {
                clock.read_unix = Some(unix_now());
                clock.drift_s = Some(drift);
                if drift.abs() > limit {
                    clock.state = "drifted".into();
                    clock.problem = Some(format!(
                        "its clock is {}, past the limit of {limit} s; it is set at the daily sync ({:02}:00)",
                        drift_words(drift),
                        self.keeper.setup().sync_hour
                    ));
                    // Once per excursion: a meter that refused the last sync has had its event 61.
                    if before.state != "drifted" && before.state != "refused" {
                        log::warn!(
                            "bus {} meter {address} ({dwelling}): clock {}, past the limit of {limit} s",
                            self.bus,
                            drift_words(drift)
                        );
                        self.keeper.event(
                            &self.bus,
                            address,
                            event_code::METER_CLOCK_DRIFT,
                            format!("clock {}", drift_words(drift)),
                            vec![drift, limit],
                        );
                    }
                } else {
                    clock.state = "ok".into();
                }
            }
        }
        clock
    }

    /// The daily sync: read, set once per driver, read again, set the ones still off on their own,
    /// read again; a meter still off did not take the time.
    fn sync(&mut self, sched: &mut BusScheduler) {
        // A meter whose clock answered before and missed this one read (a reply lost on a busy
        // line) is still set.
        let had_clock: Vec<bool> = sched
            .meters()
            .iter()
            .map(|m| {
                self.keeper
                    .meter(&self.key(&m.address))
                    .is_some_and(|c| c.read_unix.is_some() && c.state != "no-clock")
            })
            .collect();
        let first = self.read_all(sched);
        let with_clock: Vec<usize> = first
            .iter()
            .filter(|(i, r)| {
                matches!(r, ClockRead::Drift(_))
                    || (*r == ClockRead::Unread && had_clock.get(*i).copied().unwrap_or(false))
            })
            .map(|(i, _)| *i)
            .collect();
        if with_clock.is_empty() {
            return;
        }
        let mut drivers: Vec<&str> = Vec::new();
        let mut first_of_driver = Vec::new();
        for &i in &with_clock {
            let driver = sched.meters()[i].driver.as_str();
            if !drivers.contains(&driver) {
                drivers.push(driver);
                first_of_driver.push(i);
            }
        }
        let at = unix_now();
        for i in first_of_driver {
            self.set(sched, i);
        }
        log::info!(
            "bus {}: daily meter time sync: {} set",
            self.bus,
            crate::words::count(with_clock.len(), "meter clock", "meter clocks")
        );
        let mut updates = Vec::new();
        for i in with_clock {
            let mut read = self.read_again_if_lost(sched, i);
            if !matches!(read, ClockRead::Drift(d) if d.abs() <= SET_TOLERANCE_S) {
                self.set(sched, i);
                read = self.read_again_if_lost(sched, i);
            }
            let meter = &sched.meters()[i];
            let (address, dwelling) = (meter.address.clone(), meter.dwelling.clone());
            let key = self.key(&address);
            let before = self.keeper.meter(&key).unwrap_or_default();
            let mut clock = match read {
                ClockRead::Drift(d) if d.abs() <= SET_TOLERANCE_S => {
                    let mut c = self.judge(&address, &dwelling, read, true, &before);
                    c.set_unix = Some(at);
                    c
                }
                ClockRead::Drift(d) => {
                    log::warn!(
                        "bus {} meter {address} ({dwelling}) did not take the gateway's time: its clock is still {}",
                        self.bus,
                        drift_words(d)
                    );
                    self.keeper.event(
                        &self.bus,
                        &address,
                        event_code::METER_CLOCK_REFUSED,
                        format!(
                            "still {} after a time sync and a set of its own",
                            drift_words(d)
                        ),
                        vec![d],
                    );
                    MeterClock {
                        dwelling: dwelling.clone(),
                        drift_s: Some(d),
                        read_unix: Some(unix_now()),
                        set_unix: before.set_unix,
                        state: "refused".into(),
                        problem: Some(format!(
                            "it did not take the gateway's time (still {}); many DL/T 645 meters take a broadcast sync only within 5 minutes: set its clock on site with the meter's own tool",
                            drift_words(d)
                        )),
                    }
                }
                other => self.judge(&address, &dwelling, other, true, &before),
            };
            if clock.dwelling.is_empty() {
                clock.dwelling = dwelling;
            }
            updates.push((key, clock));
        }
        self.keeper.record(updates, Some(at));
    }

    fn set(&self, sched: &mut BusScheduler, index: usize) {
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let problem = match sched.run_now(index, Task::SetClock(now)) {
            Ok(Ok(_)) => return,
            Ok(Err(exception)) => exception.to_string(),
            Err(e) => e.to_string(),
        };
        log::warn!(
            "bus {} meter {}: setting its clock failed: {problem}",
            self.bus,
            sched.meters()[index].address
        );
    }
}
