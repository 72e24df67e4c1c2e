//! The block balance (docs/install.md, *Block balance*): each block's or staircase's feeder (master)
//! meter against the sum of its dwellings' meters, interval by interval, to find theft (a tap before
//! the dwellings' meters) and faults. The computation is [`engine`]; this module feeds it the buses'
//! readings, decides the intervals from the daemon's main loop, raises event 70
//! ([`concentrator_protocol::event_code::BLOCK_IMBALANCE`]) when a group stays over its allowance and
//! 71 ([`concentrator_protocol::event_code::BLOCK_BALANCED`]) when it is back within, and keeps the
//! groups' counters and alarms in `balance.json` in the store so they survive restarts.

pub mod engine;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use concentrator_protocol::{event_code, Event, Severity};
use serde::{Deserialize, Serialize};

pub use engine::{Alarm, Engine, GroupState, Judgement, Outcome};

use crate::clock::unix_now;
use crate::config::balance::BalanceSetup;
use crate::scheduler::ReadingSink;
use crate::uplink::UplinkQueue;

/// The balance as the status file holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct BalanceView {
    /// The interval, seconds.
    pub interval_s: u64,
    /// Losses allowed, percent of the feeder's energy.
    pub loss_percent: f64,
    /// Losses allowed on top, Wh per interval.
    pub loss_wh: u64,
    /// Intervals over the allowance before the event.
    pub intervals: u32,
    /// The groups by name.
    pub groups: BTreeMap<String, GroupView>,
}

/// One group in the status file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct GroupView {
    /// The feeder meter, `bus/address`.
    pub feeder: String,
    /// Its dwellings' meters.
    pub dwellings: usize,
    /// Counters, the alarm and the last interval.
    pub state: GroupState,
}

impl GroupView {
    /// The group's problem in words (kWh, percent, local times), when its alarm is raised.
    pub fn problem(&self, name: &str) -> Option<String> {
        if !self.state.alarm {
            return None;
        }
        let j = self.state.last.as_ref()?;
        Some(format!(
            "group {name}: {} — possible theft or a fault between the feeder meter {} and the dwellings' meters; inspect the wiring before the dwellings' meters",
            judgement_words(j),
            self.feeder
        ))
    }
}

/// Wh as kWh with three decimals.
pub fn kwh(wh: i64) -> String {
    let sign = if wh < 0 { "-" } else { "" };
    let wh = wh.unsigned_abs();
    format!("{sign}{}.{:03} kWh", wh / 1000, wh % 1000)
}

/// One interval in words: `from 10:15 to 10:30 (15 min) the feeder measured 1.500 kWh, the dwellings 1.000 kWh:
/// 0.500 kWh (33.3 %) unaccounted for, 0.095 kWh allowed`.
pub fn judgement_words(j: &Judgement) -> String {
    let percent = if j.feeder_wh > 0 {
        j.difference_wh.unsigned_abs() as f64 * 100.0 / j.feeder_wh as f64
    } else {
        0.0
    };
    format!(
        "from {} to {} ({}) the feeder measured {}, the dwellings {}: {} ({percent:.1} %) {}, {} allowed",
        concentrator_mpc::human::local_time(j.start),
        concentrator_mpc::human::local_time(j.end),
        crate::timekeeper::duration_words(j.end.saturating_sub(j.start)),
        kwh(i64::try_from(j.feeder_wh).unwrap_or(i64::MAX)),
        kwh(i64::try_from(j.dwellings_wh).unwrap_or(i64::MAX)),
        kwh(j.difference_wh.abs()),
        if j.difference_wh >= 0 {
            "unaccounted for"
        } else {
            "more at the dwellings than at the feeder"
        },
        kwh(i64::try_from(j.allowed_wh).unwrap_or(i64::MAX)),
    )
}

/// The daemon's block balance.
#[derive(Debug)]
pub struct BlockBalance {
    engine: Mutex<Engine>,
    file: PathBuf,
    uplink: Option<UplinkQueue>,
}

impl BlockBalance {
    /// The balance of `setup`'s groups, its state kept in `store`, its events queued on `uplink`.
    pub fn new(setup: BalanceSetup, store: &Path, uplink: Option<UplinkQueue>) -> Arc<Self> {
        let file = store.join("balance.json");
        let saved: BTreeMap<String, GroupState> = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        log::info!(
            "balance: {}, {} s intervals, {} % plus {} Wh allowed, event after {} over",
            crate::words::count(setup.groups.len(), "group", "groups"),
            setup.interval_s,
            setup.loss_percent,
            setup.loss_wh,
            crate::words::count(setup.intervals, "interval", "intervals")
        );
        Arc::new(BlockBalance {
            engine: Mutex::new(Engine::new(setup, saved)),
            file,
            uplink,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        f(&mut self.engine.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The reading sink part of bus `bus`: each poll's energy register goes to the balance.
    pub fn sink(self: &Arc<Self>, bus: &str) -> ReadingSink {
        let me = Arc::clone(self);
        let bus = bus.to_string();
        Box::new(move |address: &str, readings: &[_]| {
            if let Some(wh) = crate::prepay::register_wh(readings) {
                let key = format!("{bus}/{address}");
                me.with(|e| e.reading(&key, unix_now(), wh));
            }
        })
    }

    /// Decides the intervals that can be decided now, logs them, queues the events and keeps the state.
    pub fn tick(&self) {
        let (steps, states) = self.with(|e| {
            let steps = e.tick(unix_now());
            (steps, e.states().clone())
        });
        if steps.is_empty() {
            return;
        }
        for step in &steps {
            match &step.outcome {
                Outcome::Judged(j) => {
                    log::info!("balance: group {}: {}", step.group, judgement_words(j))
                }
                other => log::info!(
                    "balance: group {}: {}",
                    step.group,
                    other.not_judged_words().unwrap_or_default()
                ),
            }
            if let Some(alarm) = &step.alarm {
                self.raise(alarm);
            }
        }
        let tmp = self.file.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&states)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(&tmp, json))
            .and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = written {
            log::warn!(
                "balance: cannot keep the groups' state in {}: {e}",
                self.file.display()
            );
        }
    }

    fn raise(&self, alarm: &Alarm) {
        let (code, severity, group, j, detail) = match alarm {
            Alarm::Imbalance {
                group,
                judgement,
                intervals,
            } => (
                event_code::BLOCK_IMBALANCE,
                Severity::Alarm,
                group,
                judgement,
                format!(
                    "group {group}: over the allowance for {}; {}",
                    crate::words::count(*intervals, "interval", "intervals"),
                    judgement_words(judgement)
                ),
            ),
            Alarm::Balanced { group, judgement } => (
                event_code::BLOCK_BALANCED,
                Severity::Info,
                group,
                judgement,
                format!(
                    "group {group}: back within the allowance; {}",
                    judgement_words(judgement)
                ),
            ),
        };
        match code {
            event_code::BLOCK_IMBALANCE => log::warn!("balance: {detail}"),
            _ => log::info!("balance: {detail}"),
        }
        let _ = group;
        if let Some(queue) = &self.uplink {
            let mut detail = detail;
            detail.truncate(detail.floor_char_boundary(256));
            queue.gateway_event(Event {
                at: unix_now(),
                code,
                severity,
                detail: Some(detail),
                values: j.values(),
            });
        }
    }

    /// The view for the status file.
    pub fn view(&self) -> BalanceView {
        self.with(|e| {
            let setup = e.setup();
            BalanceView {
                interval_s: setup.interval_s,
                loss_percent: setup.loss_percent,
                loss_wh: setup.loss_wh,
                intervals: setup.intervals,
                groups: setup
                    .groups
                    .iter()
                    .map(|g| {
                        (
                            g.name.clone(),
                            GroupView {
                                feeder: g.feeder.clone(),
                                dwellings: g.dwellings.len(),
                                state: e.states().get(&g.name).cloned().unwrap_or_default(),
                            },
                        )
                    })
                    .collect(),
            }
        })
    }
}
