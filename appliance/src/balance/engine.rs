//! The block balance's computation, sans IO: register readings with their times in, judged intervals
//! and events out. The daemon's [`super::BlockBalance`] feeds it from the buses and a timer.
//!
//! Meters are polled at different moments, so each meter's register is interpolated linearly to the
//! interval's boundaries from the readings on either side of each. An interval is judged when every
//! meter of the group has a reading at or after its end; it is *incomplete* (counted and shown, never
//! judged, never an alarm) when, one grace period after its end, a meter still has no reading on both
//! sides of a boundary, or its readings around a boundary are more than two intervals apart. An
//! interval in which a meter's register went backwards or jumped further than its plausible power
//! allows (a reset or a replaced meter, the ledger's rules) is *skipped*, also without an alarm.

use std::collections::{BTreeMap, VecDeque};

use crate::config::balance::BalanceSetup;

/// The largest plausible power of one dwelling without `[ledger]`, watts (the ledger's default
/// plausibility); a feeder's is this times its dwellings.
pub const DWELLING_MAX_POWER_W: u64 = 25_000;

/// Energy tolerated above the plausible power over a gap, Wh (register resolution, clock skew).
const JUMP_SLACK_WH: u64 = 100;

/// Intervals overdue beyond this many (the gateway's clock stepped forward, or it was suspended) are
/// counted incomplete at once instead of one by one.
const CATCH_UP_MAX: u64 = 96;

/// What the comparison of one interval found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Judgement {
    /// Interval start, unix s.
    pub start: u64,
    /// Interval end, unix s.
    pub end: u64,
    /// The feeder's energy over the interval, Wh.
    pub feeder_wh: u64,
    /// The dwellings' energy together, Wh.
    pub dwellings_wh: u64,
    /// Feeder minus dwellings, Wh (negative: the dwellings measured more, a meter error).
    pub difference_wh: i64,
    /// The losses allowed for this interval, Wh.
    pub allowed_wh: u64,
}

impl Judgement {
    /// Whether the difference exceeds the allowance.
    pub fn over(&self) -> bool {
        self.difference_wh > i64::try_from(self.allowed_wh).unwrap_or(i64::MAX)
    }

    /// The event values: [start, end, feeder Wh, dwellings Wh, difference Wh, allowed Wh].
    pub fn values(&self) -> Vec<i64> {
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        vec![
            i(self.start),
            i(self.end),
            i(self.feeder_wh),
            i(self.dwellings_wh),
            self.difference_wh,
            i(self.allowed_wh),
        ]
    }
}

/// What became of one interval of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Compared.
    Judged(Judgement),
    /// Not judged: these meters (`bus/address`) had no readings around a boundary.
    Incomplete {
        /// Interval start, unix s.
        start: u64,
        /// Interval end, unix s.
        end: u64,
        /// The meters without readings on both sides.
        missing: Vec<String>,
    },
    /// Not judged: this meter's register went backwards or jumped (reset, replaced meter).
    Skipped {
        /// Interval start, unix s.
        start: u64,
        /// Interval end, unix s.
        end: u64,
        /// The meter.
        meter: String,
    },
}

impl Outcome {
    /// Why an interval was not judged, in words; `None` for a judged one.
    pub fn not_judged_words(&self) -> Option<String> {
        match self {
            Outcome::Judged(_) => None,
            Outcome::Incomplete { missing, .. } => Some(format!(
                "incomplete: no readings around the interval's start or end from {}",
                missing.join(", ")
            )),
            Outcome::Skipped { meter, .. } => Some(format!(
                "skipped: the register of {meter} went backwards or jumped (reset or replaced meter)"
            )),
        }
    }
}

/// An event to raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alarm {
    /// Over the allowance for the configured number of intervals (event 70).
    Imbalance {
        /// The group.
        group: String,
        /// The last interval.
        judgement: Judgement,
        /// Intervals over the allowance in a row.
        intervals: u32,
    },
    /// Back within the allowance (event 71).
    Balanced {
        /// The group.
        group: String,
        /// The first interval back within.
        judgement: Judgement,
    },
}

/// One step's result for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The group.
    pub group: String,
    /// What became of the interval.
    pub outcome: Outcome,
    /// The event it raises, if any.
    pub alarm: Option<Alarm>,
}

/// A group's running state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupState {
    /// The next interval to decide starts here, unix s (set by the first reading).
    pub next_start: Option<u64>,
    /// Intervals over the allowance in a row.
    pub over_in_a_row: u32,
    /// Whether the imbalance event is raised (and the balanced one not yet).
    pub alarm: bool,
    /// Intervals judged.
    pub judged: u64,
    /// Intervals over the allowance.
    pub over: u64,
    /// Intervals incomplete.
    pub incomplete: u64,
    /// Intervals skipped for a register reset or jump.
    pub skipped: u64,
    /// The last interval judged.
    pub last: Option<Judgement>,
    /// Why the last interval not judged was not (in words).
    pub last_not_judged: Option<String>,
}

/// The balance of every group.
#[derive(Debug)]
pub struct Engine {
    setup: BalanceSetup,
    series: BTreeMap<String, VecDeque<(u64, u64)>>,
    states: BTreeMap<String, GroupState>,
}

impl Engine {
    /// An engine for `setup`'s groups, from their saved states (when any).
    pub fn new(setup: BalanceSetup, saved: BTreeMap<String, GroupState>) -> Engine {
        let mut series = BTreeMap::new();
        let mut states = BTreeMap::new();
        for g in &setup.groups {
            series.insert(g.feeder.clone(), VecDeque::new());
            for d in &g.dwellings {
                series.insert(d.clone(), VecDeque::new());
            }
            let mut state = saved.get(&g.name).cloned().unwrap_or_default();
            // Readings are not kept across restarts: start at the next whole interval.
            state.next_start = None;
            states.insert(g.name.clone(), state);
        }
        Engine {
            setup,
            series,
            states,
        }
    }

    /// The settings.
    pub fn setup(&self) -> &BalanceSetup {
        &self.setup
    }

    /// The groups' states.
    pub fn states(&self) -> &BTreeMap<String, GroupState> {
        &self.states
    }

    /// A register reading of meter `key` (`bus/address`), `wh` at unix time `at`. Readings of other
    /// meters, and readings not newer than the meter's last, are ignored.
    pub fn reading(&mut self, key: &str, at: u64, wh: u64) {
        let Some(points) = self.series.get_mut(key) else {
            return;
        };
        if points.back().is_some_and(|(t, _)| *t >= at) {
            return;
        }
        points.push_back((at, wh));
        let interval = self.setup.interval_s;
        for g in &self.setup.groups {
            if g.feeder == key || g.dwellings.iter().any(|d| d == key) {
                let state = self.states.entry(g.name.clone()).or_default();
                if state.next_start.is_none() {
                    state.next_start = Some(at.div_ceil(interval) * interval);
                }
            }
        }
    }

    /// Decides every interval that can be decided at unix time `now`.
    pub fn tick(&mut self, now: u64) -> Vec<Step> {
        let interval = self.setup.interval_s;
        let mut steps = Vec::new();
        for g in self.setup.groups.clone() {
            if let Some(s) = self.states.get_mut(&g.name) {
                if let Some(start) = s.next_start {
                    let overdue = now.saturating_sub(start) / interval;
                    if overdue > CATCH_UP_MAX {
                        let skip = overdue - 2;
                        s.incomplete += skip;
                        s.next_start = Some(start + skip * interval);
                        s.last_not_judged = Some(format!(
                            "incomplete: {skip} intervals passed without being decided (the gateway's clock stepped forward or the daemon was held up)"
                        ));
                    }
                }
            }
            while let Some(start) = self.states.get(&g.name).and_then(|s| s.next_start) {
                let end = start + interval;
                let meters: Vec<&String> = std::iter::once(&g.feeder).chain(&g.dwellings).collect();
                let all_past_end = meters.iter().all(|m| {
                    self.series
                        .get(*m)
                        .and_then(|p| p.back())
                        .is_some_and(|(t, _)| *t >= end)
                });
                if !all_past_end && now < end + interval {
                    break;
                }
                let outcome = self.decide(&g.feeder, &g.dwellings, start, end);
                let alarm = self.record(&g.name, &outcome);
                steps.push(Step {
                    group: g.name.clone(),
                    outcome,
                    alarm,
                });
                if let Some(s) = self.states.get_mut(&g.name) {
                    s.next_start = Some(end);
                }
                // Keep each meter's last reading at or before the next start, and those after.
                for m in &meters {
                    if let Some(points) = self.series.get_mut(*m) {
                        while points.len() > 1 && points[1].0 <= end {
                            points.pop_front();
                        }
                    }
                }
            }
        }
        steps
    }

    fn decide(&self, feeder: &str, dwellings: &[String], start: u64, end: u64) -> Outcome {
        let mut missing = Vec::new();
        let mut energy = Vec::new();
        let dwelling_max = self.setup.dwelling_max_power_w;
        let max_power = |m: &str| {
            if m == feeder {
                dwelling_max.saturating_mul((dwellings.len() as u64).max(1))
            } else {
                dwelling_max
            }
        };
        for m in std::iter::once(feeder).chain(dwellings.iter().map(String::as_str)) {
            let empty = VecDeque::new();
            let points = self.series.get(m).unwrap_or(&empty);
            match energy_between(points, start, end, self.setup.interval_s * 2, max_power(m)) {
                Ok(wh) => energy.push(wh),
                Err(Gap::Missing) => missing.push(m.to_string()),
                Err(Gap::Reset) => {
                    return Outcome::Skipped {
                        start,
                        end,
                        meter: m.to_string(),
                    }
                }
            }
        }
        if !missing.is_empty() {
            return Outcome::Incomplete {
                start,
                end,
                missing,
            };
        }
        let feeder_wh = energy[0];
        let dwellings_wh: u64 = energy[1..].iter().sum();
        let allowed_wh = (feeder_wh as f64 * self.setup.loss_percent / 100.0).round() as u64
            + self.setup.loss_wh;
        Outcome::Judged(Judgement {
            start,
            end,
            feeder_wh,
            dwellings_wh,
            difference_wh: i64::try_from(feeder_wh).unwrap_or(i64::MAX)
                - i64::try_from(dwellings_wh).unwrap_or(i64::MAX),
            allowed_wh,
        })
    }

    fn record(&mut self, group: &str, outcome: &Outcome) -> Option<Alarm> {
        let needed = self.setup.intervals;
        let s = self.states.entry(group.to_string()).or_default();
        match outcome {
            Outcome::Incomplete { .. } => {
                s.incomplete += 1;
                s.last_not_judged = outcome.not_judged_words();
                None
            }
            Outcome::Skipped { .. } => {
                s.skipped += 1;
                s.last_not_judged = outcome.not_judged_words();
                None
            }
            Outcome::Judged(j) => {
                s.judged += 1;
                s.last = Some(j.clone());
                if j.over() {
                    s.over += 1;
                    s.over_in_a_row += 1;
                    if !s.alarm && s.over_in_a_row >= needed {
                        s.alarm = true;
                        return Some(Alarm::Imbalance {
                            group: group.to_string(),
                            judgement: j.clone(),
                            intervals: s.over_in_a_row,
                        });
                    }
                    None
                } else {
                    s.over_in_a_row = 0;
                    if s.alarm {
                        s.alarm = false;
                        return Some(Alarm::Balanced {
                            group: group.to_string(),
                            judgement: j.clone(),
                        });
                    }
                    None
                }
            }
        }
    }
}

enum Gap {
    Missing,
    Reset,
}

/// A meter's energy from `start` to `end`, from its readings `points` (time, Wh; ascending times).
fn energy_between(
    points: &VecDeque<(u64, u64)>,
    start: u64,
    end: u64,
    max_gap: u64,
    max_power_w: u64,
) -> Result<u64, Gap> {
    let at_start = value_at(points, start, max_gap)?;
    let at_end = value_at(points, end, max_gap)?;
    // Every step between the readings around the interval must be plausible.
    let first = points.iter().rposition(|(t, _)| *t <= start).unwrap_or(0);
    let last = points
        .iter()
        .position(|(t, _)| *t >= end)
        .unwrap_or(points.len() - 1);
    for w in first..last {
        let (t0, v0) = points[w];
        let (t1, v1) = points[w + 1];
        let limit = max_power_w.saturating_mul(t1 - t0) / 3600 + JUMP_SLACK_WH;
        if v1 < v0 || v1 - v0 > limit {
            return Err(Gap::Reset);
        }
    }
    Ok(at_end.saturating_sub(at_start))
}

/// The register at time `t`, interpolated between the readings on either side (no further apart than
/// `max_gap`), in Wh.
fn value_at(points: &VecDeque<(u64, u64)>, t: u64, max_gap: u64) -> Result<u64, Gap> {
    let after = points
        .iter()
        .position(|(pt, _)| *pt >= t)
        .ok_or(Gap::Missing)?;
    let (t1, v1) = points[after];
    if t1 == t {
        return Ok(v1);
    }
    let before = after.checked_sub(1).ok_or(Gap::Missing)?;
    let (t0, v0) = points[before];
    if t1 - t0 > max_gap {
        return Err(Gap::Missing);
    }
    if v1 < v0 {
        return Err(Gap::Reset);
    }
    let span = u128::from(t1 - t0);
    let rise = u128::from(v1 - v0) * u128::from(t - t0);
    Ok(v0 + u64::try_from((rise + span / 2) / span).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::balance::GroupSetup;

    const I: u64 = 900;
    const T0: u64 = 1_796_000_400; // a multiple of 900

    fn engine(intervals: u32) -> Engine {
        Engine::new(
            BalanceSetup {
                interval_s: I,
                loss_percent: 5.0,
                loss_wh: 20,
                intervals,
                groups: vec![GroupSetup {
                    name: "stair-A".into(),
                    feeder: "b/f".into(),
                    dwellings: vec!["b/d1".into(), "b/d2".into()],
                }],
                dwelling_max_power_w: DWELLING_MAX_POWER_W,
            },
            BTreeMap::new(),
        )
    }

    /// Feeds readings every `every` s from `from` to `to`, of meters drawing these powers (W), each
    /// meter polled at its own offset; registers start at 1000 Wh.
    fn feed(e: &mut Engine, from: u64, to: u64, every: u64, powers: [(&str, u64, u64); 3]) {
        for (key, watts, offset) in powers {
            let mut t = from + offset;
            while t <= to {
                e.reading(key, t, 1000 + watts * (t - from) / 3600);
                t += every;
            }
        }
    }

    fn judged(steps: &[Step]) -> Vec<&Judgement> {
        steps
            .iter()
            .filter_map(|s| match &s.outcome {
                Outcome::Judged(j) => Some(j),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_balanced_block_is_judged_on_interpolated_boundaries_and_raises_nothing() {
        let mut e = engine(2);
        // Polled at 7, 29 and 53 s past each minute: no reading falls on a boundary.
        feed(
            &mut e,
            T0 - 53,
            T0 + 3 * I + 60,
            60,
            [("b/f", 4000, 7), ("b/d1", 1500, 29), ("b/d2", 2500, 53)],
        );
        let steps = e.tick(T0 + 3 * I + 60);
        let j = judged(&steps);
        assert_eq!(j.len(), 3, "{steps:?}");
        assert_eq!(j[0].start, T0);
        assert_eq!(j[0].end, T0 + I);
        // 4 kW for 15 min is 1000 Wh; the dwellings together the same, within a rounding.
        assert!(j[0].feeder_wh.abs_diff(1000) <= 1, "{:?}", j[0]);
        assert!(j[0].dwellings_wh.abs_diff(1000) <= 2, "{:?}", j[0]);
        assert!(!j[0].over());
        assert!(steps.iter().all(|s| s.alarm.is_none()));
        assert_eq!(e.states()["stair-A"].judged, 3);
    }

    #[test]
    fn theft_past_the_allowance_raises_the_event_once_after_n_intervals_and_a_reset_is_skipped() {
        let mut e = engine(2);
        // A 2 kW tap before the dwellings' meters: the feeder measures 6 kW, the dwellings 4 kW.
        feed(
            &mut e,
            T0 - 30,
            T0 + 3 * I,
            30,
            [("b/f", 6000, 1), ("b/d1", 1500, 2), ("b/d2", 2500, 3)],
        );
        let steps = e.tick(T0 + 3 * I);
        assert_eq!(
            steps.len(),
            2,
            "the third interval waits for readings past its end: {steps:?}"
        );
        assert!(
            steps[0].alarm.is_none(),
            "one interval over is not yet an event"
        );
        let Some(Alarm::Imbalance {
            group,
            judgement,
            intervals,
        }) = &steps[1].alarm
        else {
            panic!("{steps:?}")
        };
        assert_eq!((group.as_str(), *intervals), ("stair-A", 2));
        assert!(judgement.feeder_wh.abs_diff(1500) <= 1, "{judgement:?}");
        assert!(judgement.dwellings_wh.abs_diff(1000) <= 2, "{judgement:?}");
        assert!(judgement.difference_wh.abs_diff(500) <= 3, "{judgement:?}");
        assert_eq!(judgement.allowed_wh, 75 + 20, "5 % of 1500 Wh plus 20 Wh");
        assert_eq!(judgement.values()[0], T0 as i64 + I as i64);
        // The registers start again from 1000 Wh (a reset): skipped, the alarm neither raised again nor cleared.
        feed(
            &mut e,
            T0 + 3 * I + 1,
            T0 + 4 * I + 30,
            30,
            [("b/f", 6000, 0), ("b/d1", 1500, 1), ("b/d2", 2500, 2)],
        );
        let steps = e.tick(T0 + 4 * I + 30);
        assert!(!steps.is_empty());
        assert!(
            steps
                .iter()
                .all(|s| s.alarm.is_none() && matches!(s.outcome, Outcome::Skipped { .. })),
            "{steps:?}"
        );
        assert_eq!(e.states()["stair-A"].skipped, steps.len() as u64);
        assert!(
            e.states()["stair-A"].alarm,
            "a reset neither raises nor clears"
        );
    }

    #[test]
    fn the_tap_removed_clears_the_alarm_with_the_balanced_event() {
        let mut e = engine(1);
        let mut regs = [1000u64; 3];
        let mut t = T0 - 10;
        let step = |e: &mut Engine, t: u64, watts: [u64; 3], regs: &mut [u64; 3]| {
            for (n, key) in ["b/f", "b/d1", "b/d2"].iter().enumerate() {
                regs[n] += watts[n] * 10 / 3600;
                e.reading(key, t, regs[n]);
            }
        };
        while t <= T0 + I {
            step(&mut e, t, [36_000, 9_000, 9_000], &mut regs);
            t += 10;
        }
        let steps = e.tick(t);
        assert!(
            matches!(steps[0].alarm, Some(Alarm::Imbalance { .. })),
            "{steps:?}"
        );
        while t <= T0 + 2 * I + 10 {
            step(&mut e, t, [18_000, 9_000, 9_000], &mut regs);
            t += 10;
        }
        let steps = e.tick(t);
        let Some(Alarm::Balanced { judgement, .. }) = &steps[0].alarm else {
            panic!("{steps:?}")
        };
        assert!(!judgement.over(), "{judgement:?}");
        assert!(!e.states()["stair-A"].alarm);
    }

    #[test]
    fn losses_within_the_allowance_are_not_theft() {
        let mut e = engine(1);
        // 4 % lost in the wiring, 5 % + 20 Wh allowed.
        feed(
            &mut e,
            T0 - 30,
            T0 + 2 * I + 30,
            30,
            [("b/f", 4160, 1), ("b/d1", 1500, 2), ("b/d2", 2500, 3)],
        );
        let steps = e.tick(T0 + 2 * I + 30);
        let j = judged(&steps);
        assert_eq!(j.len(), 2);
        assert!(j.iter().all(|j| !j.over() && j.difference_wh > 30), "{j:?}");
        assert!(steps.iter().all(|s| s.alarm.is_none()));
    }

    #[test]
    fn a_silent_meter_makes_the_interval_incomplete_never_an_alarm() {
        let mut e = engine(1);
        // Dwelling 2 answered once before the interval and then fell silent.
        feed(
            &mut e,
            T0 - 30,
            T0 + 3 * I,
            30,
            [("b/f", 6000, 1), ("b/d1", 1500, 2), ("b/none", 0, 0)],
        );
        e.reading("b/d2", T0 - 20, 5000);
        // Not decided while the grace period runs, then incomplete.
        assert!(e.tick(T0 + I + 60).is_empty());
        let steps = e.tick(T0 + 2 * I);
        assert_eq!(steps.len(), 1, "{steps:?}");
        let Outcome::Incomplete { missing, .. } = &steps[0].outcome else {
            panic!("{steps:?}")
        };
        assert_eq!(missing, &vec!["b/d2".to_string()]);
        assert!(steps[0].alarm.is_none());
        let state = &e.states()["stair-A"];
        assert_eq!((state.incomplete, state.judged), (1, 0));
        assert!(state
            .last_not_judged
            .as_deref()
            .unwrap()
            .contains("from b/d2"));
    }

    #[test]
    fn a_clock_step_of_a_year_is_counted_at_once_not_interval_by_interval() {
        let mut e = engine(1);
        feed(
            &mut e,
            T0 - 30,
            T0 + 30,
            30,
            [("b/f", 6000, 1), ("b/d1", 1500, 2), ("b/d2", 2500, 3)],
        );
        let steps = e.tick(T0 + 365 * 86_400);
        assert!(steps.len() <= 3, "{}", steps.len());
        assert!(steps.iter().all(|s| s.alarm.is_none()));
        let state = &e.states()["stair-A"];
        // Every interval whose end and grace have passed: all but the last of the year.
        assert_eq!(state.incomplete, 365 * 96 - 1);
        assert!(
            state
                .last_not_judged
                .as_deref()
                .unwrap()
                .starts_with("incomplete"),
            "{state:?}"
        );
    }

    #[test]
    fn a_register_reset_or_meter_exchange_is_skipped() {
        let mut e = engine(1);
        feed(
            &mut e,
            T0 - 30,
            T0 + I + 30,
            30,
            [("b/f", 6000, 1), ("b/d1", 1500, 2), ("b/d2", 2500, 3)],
        );
        // Dwelling 1's meter is replaced mid-interval: its register jumps to 40 MWh.
        let mut t = T0 + I + 60;
        while t <= T0 + 2 * I + 30 {
            e.reading("b/f", t, 1000 + 6000 * (t - T0 + 30) / 3600);
            e.reading("b/d1", t, 40_000_000 + (t - T0));
            e.reading("b/d2", t, 1000 + 2500 * (t - T0 + 30) / 3600);
            t += 30;
        }
        let steps = e.tick(t);
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert!(matches!(steps[0].outcome, Outcome::Judged(_)));
        assert!(
            matches!(&steps[1].outcome, Outcome::Skipped { meter, .. } if meter == "b/d1"),
            "{steps:?}"
        );
        assert!(steps[1].alarm.is_none(), "{steps:?}");
    }
}
