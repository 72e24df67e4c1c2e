//! Tariffs and the energy charge of one checkpoint interval.
//!
//! A charge covers the energy between two register readings, `wh` over `[from, to)`. The register tells
//! only the total, so when the interval crosses a boundary where the price changes (a time-of-use period,
//! local midnight, a block's billing period) the energy is **apportioned by time**, as if the power had
//! been constant: each segment gets `wh × its seconds / interval seconds`, rounded down, and the last
//! segment gets the rest, so the segments always add up to `wh` exactly. With 15-minute readings the
//! apportioning error is at most one reading's energy shifted across one boundary.
//!
//! The charge is returned in micro-units (Wh × milli-minor per kWh); [`crate::money::charge_with_carry`]
//! turns it into whole minor units.

use serde::{Deserialize, Serialize};

use crate::calendar::{Calendar, DayType, TimeOfDay};

/// A price: milli-minor units per kWh (`23_450` = 23.45 cents per kWh).
pub type Rate = i64;

/// One time-of-use period: on these kinds of day, from `start` until `end` (local time; `end` before
/// `start` wraps past midnight), energy costs `rate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TouPeriod {
    /// The kinds of day the period applies on.
    pub days: Vec<DayType>,
    /// Start, local `"HH:MM"`.
    pub start: TimeOfDay,
    /// End (exclusive), local `"HH:MM"`.
    pub end: TimeOfDay,
    /// Price in milli-minor units per kWh.
    pub rate: Rate,
}

impl TouPeriod {
    fn covers(&self, day: DayType, second: u32) -> bool {
        if !self.days.contains(&day) {
            return false;
        }
        let (s, e) = (u32::from(self.start.0) * 60, u32::from(self.end.0) * 60);
        if s <= e {
            (s..e).contains(&second)
        } else {
            second >= s || second < e
        }
    }
}

/// One step of a block tariff: energy in the billing period up to `up_to_wh` (cumulative) costs `rate`;
/// the last block has no limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffBlock {
    /// Upper bound of the block in Wh used in the period; `None` for the last block.
    pub up_to_wh: Option<u64>,
    /// Price in milli-minor units per kWh.
    pub rate: Rate,
}

/// When block usage starts again from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockPeriod {
    /// Each local day.
    Daily,
    /// Each calendar month.
    Monthly,
}

/// The energy price structure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Tariff {
    /// One price at all times.
    Flat {
        /// Price in milli-minor units per kWh.
        rate: Rate,
    },
    /// Prices by time of day and kind of day; the first matching period wins, else `default_rate`.
    TimeOfUse {
        /// Price when no period matches.
        default_rate: Rate,
        /// The periods, in priority order.
        periods: Vec<TouPeriod>,
    },
    /// Rising (or falling) prices by the energy already used in the billing period.
    Block {
        /// When usage resets.
        period: BlockPeriod,
        /// The blocks, in order of `up_to_wh`; the last has `up_to_wh = None`.
        blocks: Vec<TariffBlock>,
    },
}

/// How much of the block period's allowance has been used (kept in the account).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockUsage {
    /// The period it counts (a day number or a month index).
    pub period: i64,
    /// Wh used in that period.
    pub used_wh: u64,
}

/// A charged segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Energy.
    pub wh: u64,
    /// Price.
    pub rate: Rate,
}

/// Why a tariff is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TariffError {
    /// A negative price.
    #[error("tariff rate {0} is negative; give prices as milli-minor units per kWh, 0 or more")]
    NegativeRate(Rate),
    /// Blocks out of order or without a last open block.
    #[error("block tariff: {0}; list blocks by rising up_to_wh and end with one without up_to_wh")]
    Blocks(&'static str),
    /// A period with no days.
    #[error("time-of-use period {0} names no days; list weekday, saturday, sunday or holiday")]
    NoDays(usize),
}

impl Tariff {
    /// Checks prices and block order.
    pub fn validate(&self) -> Result<(), TariffError> {
        let check = |r: Rate| {
            if r < 0 {
                Err(TariffError::NegativeRate(r))
            } else {
                Ok(())
            }
        };
        match self {
            Tariff::Flat { rate } => check(*rate),
            Tariff::TimeOfUse {
                default_rate,
                periods,
            } => {
                check(*default_rate)?;
                for (i, p) in periods.iter().enumerate() {
                    check(p.rate)?;
                    if p.days.is_empty() {
                        return Err(TariffError::NoDays(i));
                    }
                }
                Ok(())
            }
            Tariff::Block { blocks, .. } => {
                let Some((last, rest)) = blocks.split_last() else {
                    return Err(TariffError::Blocks("no blocks"));
                };
                if last.up_to_wh.is_some() {
                    return Err(TariffError::Blocks("the last block has an up_to_wh"));
                }
                let mut prev = 0;
                for b in rest {
                    let Some(limit) = b.up_to_wh else {
                        return Err(TariffError::Blocks(
                            "a block before the last has no up_to_wh",
                        ));
                    };
                    if limit <= prev {
                        return Err(TariffError::Blocks("up_to_wh values do not rise"));
                    }
                    prev = limit;
                }
                blocks.iter().try_for_each(|b| check(b.rate))
            }
        }
    }

    fn tou_rate(&self, cal: &Calendar, at: i64) -> Rate {
        match self {
            Tariff::Flat { rate } => *rate,
            Tariff::TimeOfUse {
                default_rate,
                periods,
            } => {
                let local = cal.local(at.max(0) as u64);
                let day = cal.day_type(local.date);
                periods
                    .iter()
                    .find(|p| p.covers(day, local.second))
                    .map_or(*default_rate, |p| p.rate)
            }
            Tariff::Block { .. } => 0,
        }
    }

    /// The next moment after `t` at which the price may change: the next period edge or local midnight.
    fn next_boundary(&self, cal: &Calendar, t: i64) -> i64 {
        let local = cal.local(t.max(0) as u64);
        let midnight = cal.midnight(local.date);
        let mut next = midnight + 86_400;
        if let Tariff::TimeOfUse { periods, .. } = self {
            for p in periods {
                for edge in [p.start.0, p.end.0] {
                    let e = midnight + i64::from(edge) * 60;
                    if e > t && e < next {
                        next = e;
                    }
                }
            }
        }
        next
    }

    fn block_period(cal: &Calendar, period: BlockPeriod, at: i64) -> i64 {
        let date = cal.local(at.max(0) as u64).date;
        match period {
            BlockPeriod::Daily => date.0,
            BlockPeriod::Monthly => date.month_index(),
        }
    }

    /// The charge in micro-units for `wh` used over `[from, to)`, with the segments it was priced in;
    /// updates `usage` for block tariffs.
    pub fn charge(
        &self,
        cal: &Calendar,
        from: u64,
        to: u64,
        wh: u64,
        usage: &mut BlockUsage,
    ) -> (i128, Vec<Segment>) {
        let (from, to) = (
            i64::try_from(from).unwrap_or(i64::MAX),
            i64::try_from(to).unwrap_or(i64::MAX),
        );
        // Split [from, to) into pieces of constant price context.
        let mut pieces: Vec<(i64, i64)> = Vec::new();
        if to <= from {
            pieces.push((to, 0));
        } else {
            let mut t = from;
            while t < to {
                let end = self.next_boundary(cal, t).min(to);
                pieces.push((t, end - t));
                t = end;
            }
        }
        let total: i128 = pieces.iter().map(|p| i128::from(p.1)).sum();
        let mut left = wh;
        let mut segments = Vec::new();
        let mut micro: i128 = 0;
        for (i, (start, secs)) in pieces.iter().enumerate() {
            let share = if i + 1 == pieces.len() || total == 0 {
                left
            } else {
                (i128::from(wh) * i128::from(*secs) / total) as u64
            };
            left -= share.min(left);
            for seg in self.price(cal, *start, share, usage) {
                micro += i128::from(seg.wh) * i128::from(seg.rate);
                segments.push(seg);
            }
        }
        (micro, segments)
    }

    fn price(&self, cal: &Calendar, at: i64, wh: u64, usage: &mut BlockUsage) -> Vec<Segment> {
        let Tariff::Block { period, blocks } = self else {
            return vec![Segment {
                wh,
                rate: self.tou_rate(cal, at),
            }];
        };
        let key = Self::block_period(cal, *period, at);
        if usage.period != key {
            *usage = BlockUsage {
                period: key,
                used_wh: 0,
            };
        }
        let mut out = Vec::new();
        let mut left = wh;
        for block in blocks {
            if left == 0 {
                break;
            }
            let room = block
                .up_to_wh
                .map_or(u64::MAX, |limit| limit.saturating_sub(usage.used_wh));
            let take = left.min(room);
            if take > 0 {
                out.push(Segment {
                    wh: take,
                    rate: block.rate,
                });
                usage.used_wh += take;
                left -= take;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::Date;

    fn cal() -> Calendar {
        Calendar::new(60, ["2024-12-25".parse::<Date>().unwrap()])
    }

    fn at(cal: &Calendar, date: &str, h: i64, m: i64) -> u64 {
        (cal.midnight(date.parse().unwrap()) + h * 3600 + m * 60) as u64
    }

    fn tou() -> Tariff {
        let p = |days: &[DayType], s: u16, e: u16, rate| TouPeriod {
            days: days.to_vec(),
            start: TimeOfDay(s * 60),
            end: TimeOfDay(e * 60),
            rate,
        };
        Tariff::TimeOfUse {
            default_rate: 20_000,
            periods: vec![
                p(&[DayType::Holiday, DayType::Sunday], 0, 24, 12_000),
                p(&[DayType::Weekday, DayType::Saturday], 23, 7, 10_000),
                p(&[DayType::Weekday], 17, 20, 35_000),
            ],
        }
    }

    #[test]
    fn flat_rate_worked_number() {
        // 1.234 kWh at 23.45 c/kWh = 28.9373 cents = 28 937 300 micro.
        let c = cal();
        let t = Tariff::Flat { rate: 23_450 };
        let (micro, segs) = t.charge(&c, 0, 900, 1_234, &mut BlockUsage::default());
        assert_eq!(micro, 28_937_300);
        assert_eq!(segs.len(), 1);
    }

    #[test]
    fn time_of_use_apportions_across_the_evening_peak() {
        // Monday 2024-06-03 16:30 → 17:30 local, 2 000 Wh: half before the peak at 20 c, half in it at 35 c.
        // 1 000 × 20 000 + 1 000 × 35 000 = 55 000 000 micro = 55 cents.
        let c = cal();
        let (micro, segs) = tou().charge(
            &c,
            at(&c, "2024-06-03", 16, 30),
            at(&c, "2024-06-03", 17, 30),
            2_000,
            &mut BlockUsage::default(),
        );
        assert_eq!(micro, 55_000_000);
        assert_eq!(segs.iter().map(|s| s.wh).sum::<u64>(), 2_000);
    }

    #[test]
    fn time_of_use_night_rate_wraps_midnight_and_sundays_and_holidays_are_cheap() {
        let c = cal();
        let t = tou();
        // Tuesday 22:00 → Wednesday 02:00, 4 000 Wh: 1 h at 20 c, 3 h at 10 c → 1 000×20 000 + 3 000×10 000.
        let (micro, _) = t.charge(
            &c,
            at(&c, "2024-06-04", 22, 0),
            at(&c, "2024-06-05", 2, 0),
            4_000,
            &mut BlockUsage::default(),
        );
        assert_eq!(micro, 50_000_000);
        // Sunday 18:00 → 19:00: no peak, Sunday price 12 c: 1 000 Wh → 12 cents.
        let (sun, _) = t.charge(
            &c,
            at(&c, "2024-06-09", 18, 0),
            at(&c, "2024-06-09", 19, 0),
            1_000,
            &mut BlockUsage::default(),
        );
        assert_eq!(sun, 12_000_000);
        // Christmas (a Wednesday) 18:00 → 19:00 is a holiday: 12 c, not the 35 c peak.
        let (xmas, _) = t.charge(
            &c,
            at(&c, "2024-12-25", 18, 0),
            at(&c, "2024-12-25", 19, 0),
            1_000,
            &mut BlockUsage::default(),
        );
        assert_eq!(xmas, 12_000_000);
    }

    #[test]
    fn apportioning_never_loses_a_watt_hour() {
        // 7 Wh over 3 pieces of 1 h each (16:00-17:00 default, 17:00-19:00 peak): shares 2, then the rest 5.
        let c = cal();
        let (_, segs) = tou().charge(
            &c,
            at(&c, "2024-06-03", 16, 0),
            at(&c, "2024-06-03", 19, 0),
            7,
            &mut BlockUsage::default(),
        );
        assert_eq!(segs.iter().map(|s| s.wh).sum::<u64>(), 7);
        assert_eq!(
            segs[0],
            Segment {
                wh: 2,
                rate: 20_000
            }
        );
        assert_eq!(
            segs[1],
            Segment {
                wh: 5,
                rate: 35_000
            }
        );
    }

    #[test]
    fn block_tariff_fills_blocks_and_resets_each_month() {
        // First 100 kWh of the month at 10 c, next 200 kWh at 20 c, the rest at 30 c.
        let t = Tariff::Block {
            period: BlockPeriod::Monthly,
            blocks: vec![
                TariffBlock {
                    up_to_wh: Some(100_000),
                    rate: 10_000,
                },
                TariffBlock {
                    up_to_wh: Some(300_000),
                    rate: 20_000,
                },
                TariffBlock {
                    up_to_wh: None,
                    rate: 30_000,
                },
            ],
        };
        t.validate().unwrap();
        let c = cal();
        let mut usage = BlockUsage::default();
        let june = at(&c, "2024-06-10", 12, 0);
        // 90 kWh: all in block 1 → 900 cents.
        let (m1, _) = t.charge(&c, june, june + 3600, 90_000, &mut usage);
        assert_eq!(m1, 900_000_000);
        // 250 kWh more: 10 at 10 c + 200 at 20 c + 40 at 30 c = 100 + 4 000 + 1 200 = 5 300 cents.
        let (m2, segs) = t.charge(&c, june + 3600, june + 7200, 250_000, &mut usage);
        assert_eq!(m2, 5_300_000_000);
        assert_eq!(segs.len(), 3);
        // July: block 1 again. 1 kWh → 10 cents.
        let july = at(&c, "2024-07-01", 12, 0);
        let (m3, _) = t.charge(&c, july, july + 900, 1_000, &mut usage);
        assert_eq!(m3, 10_000_000);
        assert_eq!(usage.used_wh, 1_000);
    }

    #[test]
    fn bad_tariffs_are_refused() {
        let t = Tariff::Block {
            period: BlockPeriod::Daily,
            blocks: vec![TariffBlock {
                up_to_wh: Some(5),
                rate: 1,
            }],
        };
        assert!(t.validate().is_err());
        assert!(Tariff::Flat { rate: -1 }.validate().is_err());
    }
}
