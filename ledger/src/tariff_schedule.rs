//! Tariffs sent by the head-end (the wire's tariff update, 0x86): checked, stored durably as a
//! schedule, and switched in at their in-force time.
//!
//! The schedule is a time line. Before its first entry the `[ledger]` file's tariff is in force
//! (tariff id 0); from each entry's `in_force_at` that entry's tariff and standing charge are. A
//! charge interval `[from, to)` that straddles an in-force time is split there, and the energy is
//! apportioned by time (as [`crate::tariff`] does at a time-of-use edge), so each part is charged once,
//! at its own tariff's price. Standing charges follow the tariff in force at the day's local midnight.
//!
//! Rules (docs/ledger.md, *Tariff changes*):
//! - a change is never retroactive: an in-force time up to [`LATE_TOLERANCE_S`] in the past is taken
//!   as "now" (the moment it is stored), one further in the past is refused, so energy already
//!   charged is never priced again;
//! - a tariff id names one tariff: the same id with the same contents again is "already done", with
//!   other contents it is refused;
//! - an entry at the same in-force time as an earlier one replaces it (a correction of a pending
//!   change); otherwise entries are kept in time order, so a change scheduled for later still happens;
//! - the schedule is written in the same flushed transaction as its audit entry, before the
//!   head-end is answered.

use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::calendar::{Calendar, Date, DayType, TimeOfDay};
use crate::ledger::Ledger;
use crate::store::{Keyspace, Store};
use crate::tariff::{BlockUsage, Rate, Tariff, TouPeriod};
use crate::LedgerError;

/// Meta key of the stored schedule (JSON).
pub const SCHEDULE_KEY: &[u8] = b"tariff_schedule";

/// How far in the past an in-force time may be and still be accepted (applied from its arrival).
pub const LATE_TOLERANCE_S: u64 = 3_600;

/// A tariff change as the head-end sends it (the fields of the wire's tariff update).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TariffChange {
    /// The tariff's id (never 0: that is the `[ledger]` file's tariff).
    pub tariff_id: u32,
    /// In force from, unix seconds.
    pub effective_from: u64,
    /// ISO 4217 code; must be the ledger's.
    pub currency: String,
    /// Standing charge per local day, minor units.
    pub standing_charge_minor_per_day: u64,
    /// `(rate id, price per kWh in millionths of a minor unit)`.
    pub rates: Vec<(u8, u64)>,
    /// `(days bitmap: bit 0 Monday … bit 6 Sunday, bit 7 special days; start minute; rate id)`.
    pub switches: Vec<(u8, u16, u8)>,
    /// Special days, `YYYYMMDD`.
    pub special_days: Vec<u32>,
    /// UTC offset of local time, minutes; must be the ledger's.
    pub utc_offset_min: i16,
}

/// One entry of the schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledTariff {
    /// The tariff id.
    pub tariff_id: u32,
    /// When it takes over, unix seconds.
    pub in_force_at: u64,
    /// The in-force time the head-end asked for.
    pub requested_from: u64,
    /// When it was stored.
    pub received_at: u64,
    /// The energy prices.
    pub tariff: Tariff,
    /// The tariff's special days (its own holiday list).
    pub special_days: Vec<Date>,
    /// Standing charge, minor units per local day.
    pub standing_charge_minor_per_day: i64,
    /// The change as received, to tell a resend from a different tariff under the same id.
    pub change: TariffChange,
}

/// The schedule in memory: entries in time order, each with its calendar.
#[derive(Debug, Clone, Default)]
pub(crate) struct Schedule {
    pub(crate) entries: Vec<(ScheduledTariff, Calendar)>,
}

impl Schedule {
    pub(crate) fn load<S: Store + ?Sized>(
        store: &S,
        offset_minutes: i32,
    ) -> Result<Schedule, LedgerError> {
        let Some(v) = store.get(Keyspace::Meta, SCHEDULE_KEY)? else {
            return Ok(Schedule::default());
        };
        let entries: Vec<ScheduledTariff> =
            serde_json::from_slice(&v).map_err(|e| LedgerError::Corrupt {
                keyspace: Keyspace::Meta.name(),
                key: "tariff_schedule".into(),
                reason: e.to_string(),
            })?;
        Ok(Schedule::from_entries(entries, offset_minutes))
    }

    fn from_entries(mut entries: Vec<ScheduledTariff>, offset_minutes: i32) -> Schedule {
        entries.sort_by_key(|e| e.in_force_at);
        Schedule {
            entries: entries
                .into_iter()
                .map(|e| {
                    let cal = Calendar::new(offset_minutes, e.special_days.iter().copied());
                    (e, cal)
                })
                .collect(),
        }
    }

    /// The entry in force at `t`, if any (else the configured tariff is).
    pub(crate) fn at(&self, t: u64) -> Option<&(ScheduledTariff, Calendar)> {
        self.entries.iter().rev().find(|(e, _)| e.in_force_at <= t)
    }

    /// In-force times strictly inside `(from, to)`.
    fn cuts(&self, from: u64, to: u64) -> Vec<u64> {
        self.entries
            .iter()
            .map(|(e, _)| e.in_force_at)
            .filter(|&t| t > from && t < to)
            .collect()
    }
}

/// What a tariff change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TariffOutcome {
    /// Stored and flushed; the words for the head-end.
    Scheduled(String),
    /// The same tariff id with the same contents was stored before; nothing changed.
    AlreadyScheduled(String),
}

/// Why a tariff change was refused (final: the same change will be refused again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tariff {tariff_id} refused: {reason}")]
pub struct TariffRefused {
    /// The tariff id.
    pub tariff_id: u32,
    /// What is wrong and what to send instead.
    pub reason: String,
}

fn utc_offset(minutes: i32) -> String {
    let sign = if minutes < 0 { '-' } else { '+' };
    let m = minutes.unsigned_abs();
    format!("UTC{sign}{:02}:{:02}", m / 60, m % 60)
}

/// `2026-12-07 00:00` in the calendar's local time.
pub fn local_minute(cal: &Calendar, at: u64) -> String {
    let l = cal.local(at);
    format!("{} {}", l.date, TimeOfDay((l.second / 60) as u16))
}

/// A price as people read it: 28 000 milli-minor units per kWh is "0.28 EUR per kWh" (two decimals,
/// more when the price has them).
fn price_words(rate: Rate, currency: &str) -> String {
    // Milli-minor units are 1/100 000 of the major unit.
    let a = rate.unsigned_abs();
    let mut frac = format!("{:05}", a % 100_000);
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    let sign = if rate < 0 { "-" } else { "" };
    format!("{sign}{}.{frac} {currency} per kWh", a / 100_000)
}

fn describe_prices(t: &Tariff, currency: &str) -> String {
    match t {
        Tariff::Flat { rate } => price_words(*rate, currency),
        Tariff::TimeOfUse { periods, .. } => {
            let mut rates: Vec<Rate> = periods.iter().map(|p| p.rate).collect();
            rates.sort_unstable();
            rates.dedup();
            let list: Vec<String> = rates.iter().map(|r| price_words(*r, currency)).collect();
            format!("time of use at {}", list.join(", "))
        }
        Tariff::Block { .. } => "block prices".into(),
    }
}

fn refuse(tariff_id: u32, reason: impl Into<String>) -> TariffRefused {
    TariffRefused {
        tariff_id,
        reason: reason.into(),
    }
}

const DAY_BITS: [(DayType, u8, &str); 4] = [
    (DayType::Weekday, 0x1f, "Monday to Friday"),
    (DayType::Saturday, 0x20, "Saturday"),
    (DayType::Sunday, 0x40, "Sunday"),
    (DayType::Holiday, 0x80, "special days"),
];

/// Checks a change against the ledger's configuration and builds its tariff.
pub fn build(
    change: &TariffChange,
    currency: &str,
    offset_minutes: i32,
) -> Result<(Tariff, Vec<Date>, i64), TariffRefused> {
    let id = change.tariff_id;
    if id == 0 {
        return Err(refuse(
            id,
            "tariff id 0 names the gateway's configured tariff; number head-end tariffs from 1",
        ));
    }
    if change.currency != currency {
        return Err(refuse(
            id,
            format!(
                "its currency is {:?} but this gateway's accounts are in {currency}; send the tariff in {currency}",
                change.currency
            ),
        ));
    }
    if i32::from(change.utc_offset_min) != offset_minutes {
        return Err(refuse(
            id,
            format!(
                "its local time is {} but this gateway's is {} ([ledger] utc_offset_minutes); state the tariff in the gateway's local time",
                utc_offset(i32::from(change.utc_offset_min)),
                utc_offset(offset_minutes)
            ),
        ));
    }
    let standing = i64::try_from(change.standing_charge_minor_per_day).map_err(|_| {
        refuse(
            id,
            "its standing charge is beyond any amount; give minor units per day",
        )
    })?;
    if change.rates.is_empty() {
        return Err(refuse(id, "it has no rates; list at least one"));
    }
    let mut rates: Vec<(u8, Rate)> = Vec::new();
    for &(rid, micro) in &change.rates {
        if rates.iter().any(|(r, _)| *r == rid) {
            return Err(refuse(
                id,
                format!("rate id {rid} is listed twice; give each rate its own id"),
            ));
        }
        if micro % 1_000 != 0 {
            return Err(refuse(
                id,
                format!(
                    "rate {rid}'s price {micro} millionths of a minor unit per kWh is finer than the gateway charges (thousandths of a minor unit per kWh); round it to a multiple of 1000"
                ),
            ));
        }
        let rate = Rate::try_from(micro / 1_000)
            .map_err(|_| refuse(id, format!("rate {rid}'s price is beyond any amount")))?;
        rates.push((rid, rate));
    }
    let mut special = Vec::new();
    for &d in &change.special_days {
        let date =
            Date::from_ymd(i64::from(d / 10_000), (d / 100) % 100, d % 100).ok_or_else(|| {
                refuse(
                    id,
                    format!("special day {d} is not a date; write YYYYMMDD, e.g. 20261225"),
                )
            })?;
        special.push(date);
    }
    // Each kind of day's switches, by start minute.
    let mut periods: Vec<TouPeriod> = Vec::new();
    let mut used: Vec<Rate> = Vec::new();
    for (n, &(days, start, rid)) in change.switches.iter().enumerate() {
        if start >= 1_440 {
            return Err(refuse(
                id,
                format!(
                    "switch {} starts at minute {start}; give minutes after local midnight, 0 to 1439",
                    n + 1
                ),
            ));
        }
        if !rates.iter().any(|(r, _)| *r == rid) {
            return Err(refuse(
                id,
                format!(
                    "switch {} uses rate {rid}, which is not among its rates; add the rate or fix the switch",
                    n + 1
                ),
            ));
        }
        let weekdays = days & 0x1f;
        if weekdays != 0 && weekdays != 0x1f {
            return Err(refuse(
                id,
                format!(
                    "switch {} applies on some weekdays but not all (days bitmap {days:#04x}); this gateway prices Monday to Friday alike, so give weekday switches for all five",
                    n + 1
                ),
            ));
        }
        if days == 0 {
            return Err(refuse(
                id,
                format!("switch {} names no days; set bits 0–7 of its days", n + 1),
            ));
        }
    }
    for (day_type, bits, name) in DAY_BITS {
        let mut mine: Vec<(u16, u8)> = change
            .switches
            .iter()
            .filter(|(d, _, _)| d & bits == bits)
            .map(|&(_, s, r)| (s, r))
            .collect();
        mine.sort_unstable();
        mine.dedup();
        if mine.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(refuse(
                id,
                format!("two switches on {name} start at the same minute with different rates; keep one"),
            ));
        }
        if mine.is_empty() {
            if day_type == DayType::Holiday && special.is_empty() {
                continue;
            }
            return Err(refuse(
                id,
                format!("its calendar leaves {name} without a rate; add a switch for {name}"),
            ));
        }
        let rate_of = |rid: u8| rates.iter().find(|(r, _)| *r == rid).map_or(0, |(_, p)| *p);
        for (i, &(start, rid)) in mine.iter().enumerate() {
            // Each day's schedule wraps at midnight: before its first switch its last one applies.
            let end = if i + 1 < mine.len() {
                mine[i + 1].0
            } else if mine[0].0 == 0 || mine.len() == 1 {
                1_440
            } else {
                mine[0].0
            };
            let begin = if mine.len() == 1 { 0 } else { start };
            let rate = rate_of(rid);
            used.push(rate);
            periods.push(TouPeriod {
                days: vec![day_type],
                start: TimeOfDay(begin),
                end: TimeOfDay(end),
                rate,
            });
        }
    }
    used.sort_unstable();
    used.dedup();
    let tariff = match used.as_slice() {
        [one] => Tariff::Flat { rate: *one },
        _ => Tariff::TimeOfUse {
            default_rate: used.first().copied().unwrap_or(0),
            periods,
        },
    };
    tariff.validate().map_err(|e| refuse(id, e.to_string()))?;
    Ok((tariff, special, standing))
}

impl<S: Store> Ledger<S> {
    /// Stores a tariff change from the head-end: checked, written with its audit entry and flushed
    /// before it returns. See the module documentation for the rules.
    pub fn schedule_tariff(
        &mut self,
        change: &TariffChange,
        now: u64,
    ) -> Result<Result<TariffOutcome, TariffRefused>, LedgerError> {
        let cal = self.calendar.clone();
        let id = change.tariff_id;
        // What the store holds: a change whose commit went through but whose flush failed is there,
        // so its resend is not written a second time (and is made durable below before the answer).
        self.tariffs = Schedule::load(&self.store, self.config.utc_offset_minutes)?;
        let seen = self
            .tariffs
            .entries
            .iter()
            .find(|(e, _)| e.tariff_id == id)
            .map(|(e, _)| (e.change == *change, e.in_force_at));
        if let Some((same, at)) = seen {
            if !same {
                return Ok(Err(refuse(
                    id,
                    format!(
                        "tariff {id} was received before with other contents (in force from {} local time); send a changed tariff under a new id",
                        local_minute(&cal, at)
                    ),
                )));
            }
            if self.unflushed() {
                self.flush()?;
            }
            return Ok(Ok(TariffOutcome::AlreadyScheduled(format!(
                "tariff {id} was received before: in force from {} local time",
                local_minute(&cal, at)
            ))));
        }
        let (tariff, special, standing) = match build(
            change,
            &self.config.currency,
            self.config.utc_offset_minutes,
        ) {
            Ok(b) => b,
            Err(r) => return Ok(Err(r)),
        };
        if change.effective_from.saturating_add(LATE_TOLERANCE_S) < now {
            return Ok(Err(refuse(
                id,
                format!(
                    "its in-force time {} local time is more than {} minutes past (now {}); energy already charged is not priced again, so send it with a time to come",
                    local_minute(&cal, change.effective_from),
                    LATE_TOLERANCE_S / 60,
                    local_minute(&cal, now)
                ),
            )));
        }
        let in_force_at = change.effective_from.max(now);
        let mut entries: Vec<ScheduledTariff> = self
            .tariffs
            .entries
            .iter()
            .map(|(e, _)| e.clone())
            .filter(|e| e.in_force_at != in_force_at)
            .collect();
        let corrected = self
            .tariffs
            .entries
            .iter()
            .find(|(e, _)| e.in_force_at == in_force_at)
            .map(|(e, _)| e.tariff_id);
        let before = entries
            .iter()
            .filter(|e| e.in_force_at < in_force_at)
            .max_by_key(|e| e.in_force_at)
            .map_or(0, |e| e.tariff_id);
        let prices = describe_prices(&tariff, &self.config.currency);
        entries.push(ScheduledTariff {
            tariff_id: id,
            in_force_at,
            requested_from: change.effective_from,
            received_at: now,
            tariff,
            special_days: special,
            standing_charge_minor_per_day: standing,
            change: change.clone(),
        });
        entries.sort_by_key(|e| e.in_force_at);
        let json = serde_json::to_vec(&entries).map_err(|e| LedgerError::Output(e.to_string()))?;
        let mut txn = self.begin();
        txn.batch.put(Keyspace::Meta, SCHEDULE_KEY, json);
        txn.audit(
            now,
            "",
            AuditEvent::TariffScheduled {
                tariff_id: id,
                in_force_at,
                replaces: before,
                standing_minor_per_day: standing,
            },
        );
        self.finish(txn, true)?;
        self.tariffs = Schedule::from_entries(entries, self.config.utc_offset_minutes);
        let mut words = format!(
            "tariff {id} in force from {} local time ({}), replacing {}; {prices}, standing charge {} {} per day",
            local_minute(&cal, in_force_at),
            utc_offset(self.config.utc_offset_minutes),
            if before == 0 {
                "the configured tariff".to_string()
            } else {
                format!("tariff {before}")
            },
            crate::money::format_minor(standing),
            self.config.currency,
        );
        if in_force_at > change.effective_from {
            words.push_str(&format!(
                " (sent for {}, received later: never applied to energy already charged)",
                local_minute(&cal, change.effective_from)
            ));
        }
        if let Some(c) = corrected {
            words.push_str(&format!(
                "; it takes the place of tariff {c}, which was to start then"
            ));
        }
        Ok(Ok(TariffOutcome::Scheduled(words)))
    }

    /// The tariff schedule received from the head-end, in time order.
    pub fn tariff_schedule(&self) -> Vec<&ScheduledTariff> {
        self.tariffs.entries.iter().map(|(e, _)| e).collect()
    }

    /// The id of the tariff in force at `at` (0: the configured one).
    pub fn tariff_id_at(&self, at: u64) -> u32 {
        self.tariffs.at(at).map_or(0, |(e, _)| e.tariff_id)
    }

    /// The standing charge for the local day starting at `midnight`.
    pub(crate) fn standing_charge_at(&self, midnight: u64) -> i64 {
        self.tariffs
            .at(midnight)
            .map_or(self.config.standing_charge_minor_per_day, |(e, _)| {
                e.standing_charge_minor_per_day
            })
    }

    /// The energy charge of `wh` over `[from, to)` in micro-units: split at every in-force time inside
    /// the interval, the energy apportioned by time, each part priced by its own tariff.
    pub(crate) fn charge_energy(
        &self,
        from: u64,
        to: u64,
        wh: u64,
        usage: &mut BlockUsage,
    ) -> i128 {
        let priced =
            |start: u64, end: u64, share: u64, usage: &mut BlockUsage| match self.tariffs.at(start)
            {
                Some((e, cal)) => e.tariff.charge(cal, start, end, share, usage).0,
                None => {
                    self.config
                        .tariff
                        .charge(&self.calendar, start, end, share, usage)
                        .0
                }
            };
        let cuts = self.tariffs.cuts(from, to);
        if cuts.is_empty() {
            return priced(from, to, wh, usage);
        }
        let total = u128::from(to - from);
        let mut edges = vec![from];
        edges.extend(cuts);
        edges.push(to);
        let mut left = wh;
        let mut micro = 0;
        for (i, w) in edges.windows(2).enumerate() {
            let share = if i + 2 == edges.len() {
                left
            } else {
                (u128::from(wh) * u128::from(w[1] - w[0]) / total) as u64
            };
            left -= share.min(left);
            micro += priced(w[0], w[1], share, usage);
        }
        micro
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_read_as_money() {
        assert_eq!(price_words(28_000, "EUR"), "0.28 EUR per kWh");
        assert_eq!(price_words(28_125, "EUR"), "0.28125 EUR per kWh");
        assert_eq!(price_words(1_250_000, "EUR"), "12.50 EUR per kWh");
    }
}
