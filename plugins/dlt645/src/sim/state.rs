//! The emulated meter's physics: energy registers that advance with wall time, instantaneous values,
//! its clock, relay and prepaid balance.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::status::{RelayState, RunningStatus3};
use crate::value::MeterDateTime;

/// W·µs in 0.01 kWh (the registers' resolution).
const WUS_PER_CENTI_KWH: u128 = 36_000_000_000;
/// W·µs in 1 kWh.
const WUS_PER_KWH: u128 = 3_600_000_000_000;

/// How a prepaid meter is funded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepaid {
    /// A money balance in hundredths (`balance_cents`), spent at `price_cents_per_kwh`.
    Money {
        /// Balance at start, in 0.01 of the currency.
        balance_cents: i64,
        /// Tariff, in 0.01 of the currency per kWh.
        price_cents_per_kwh: i64,
    },
    /// An energy balance at start, in 0.01 kWh.
    Energy {
        /// Balance at start, in 0.01 kWh.
        balance_centi_kwh: i64,
    },
}

/// The tariff in force at an hour of the meter's clock: 1 sharp 17-21, 2 peak 8-11, 3 flat 11-17 and
/// 21-24, 4 valley 0-8.
pub fn tariff_at(hour: u8) -> usize {
    match hour {
        0..=7 => 4,
        8..=10 => 2,
        17..=20 => 1,
        _ => 3,
    }
}

/// The state of an emulated meter, shared between the device on the bus and the test's handle.
#[derive(Debug, Clone)]
pub struct MeterState {
    /// Active power drawn while the relay is closed, in W (negative: exporting).
    pub power_w: i64,
    /// Phase voltage in 0.1 V.
    pub voltage_decivolts: u32,
    /// Number of phases (1 or 3).
    pub phases: u8,
    /// Grid frequency in 0.01 Hz.
    pub frequency_centihertz: u32,
    /// Import energy per tariff (index 1..=4), in W·µs.
    import: [u128; 5],
    /// Export energy per tariff, in W·µs.
    export: [u128; 5],
    /// Energy imported since the prepaid balance was set, in W·µs.
    spent: u128,
    /// The prepaid funding, if any.
    pub prepaid: Option<Prepaid>,
    /// Where the relay is.
    pub relay: RelayState,
    /// The last relay command.
    pub relay_command: RelayState,
    /// Pre-trip alarm.
    pub alarm: bool,
    /// Guarantee power.
    pub guarantee_power: bool,
    /// Meter clock minus wall clock, in seconds.
    pub clock_offset_s: i64,
    /// The last wall time the registers were advanced to.
    last_wall: Option<SystemTime>,
    /// How many freezes were ordered.
    pub freezes: u32,
    /// The period of the "hourly" freeze, seconds of the meter's clock (3600; real meters set 15, 30
    /// or 60 minutes; tests shorter). Whole minutes: a frozen time carries no seconds, so the
    /// emulator rounds a shorter or uneven period up to the next minute.
    pub freeze_period_s: u64,
    /// The freezes kept, oldest first, at most [`crate::DataId::HOURLY_FREEZES`].
    pub frozen: VecDeque<Freeze>,
}

/// A freeze period in whole minutes (at least one), as a frozen time (`mm hh DD MM YY`) can state it.
pub fn whole_minutes(period_s: u64) -> u64 {
    period_s.max(60).div_ceil(60) * 60
}

/// One periodic freeze: the meter's clock and its totals at a period boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freeze {
    /// The meter's clock at the freeze, seconds since 1970 (its local time).
    pub at: u64,
    /// Import active energy, total, 0.01 kWh.
    pub import_centi_kwh: u64,
    /// Export active energy, total, 0.01 kWh.
    pub export_centi_kwh: u64,
}

impl MeterState {
    /// A meter drawing `power_w`, with starting totals in 0.01 kWh. The total is the sum of the tariff
    /// registers, so the starting energy is booked to the flat tariff (3).
    pub fn new(power_w: i64, import_centi_kwh: u64, export_centi_kwh: u64) -> Self {
        let mut import = [0u128; 5];
        let mut export = [0u128; 5];
        import[3] = u128::from(import_centi_kwh) * WUS_PER_CENTI_KWH;
        export[3] = u128::from(export_centi_kwh) * WUS_PER_CENTI_KWH;
        MeterState {
            power_w,
            voltage_decivolts: 2200,
            phases: 1,
            frequency_centihertz: 5000,
            import,
            export,
            spent: 0,
            prepaid: None,
            relay: RelayState::Closed,
            relay_command: RelayState::Closed,
            alarm: false,
            guarantee_power: false,
            clock_offset_s: 0,
            last_wall: None,
            freezes: 0,
            freeze_period_s: 3_600,
            frozen: VecDeque::new(),
        }
    }

    /// Advances the registers to `wall`: the power flows while the relay is closed, into the tariff of
    /// the meter's clock at the start of the step. A prepaid meter whose balance runs out trips itself
    /// (unless guarantee power is on).
    pub fn advance(&mut self, wall: SystemTime) {
        let Some(last) = self.last_wall.replace(wall) else {
            return;
        };
        let Ok(step) = wall.duration_since(last) else {
            self.last_wall = Some(last);
            return;
        };
        let power = self.present_power_w();
        let energy = u128::from(power.unsigned_abs()) * step.as_micros();
        let before = (
            self.import[1..].iter().sum::<u128>(),
            self.export[1..].iter().sum::<u128>(),
        );
        let (from_s, to_s) = (self.clock_seconds(last), self.clock_seconds(wall));
        let tariff = tariff_at(self.clock(last).hour);
        if power >= 0 {
            self.import[tariff] += energy;
            self.spent += energy;
        } else {
            self.export[tariff] += energy;
        }
        self.freeze_between(from_s, to_s, before, power >= 0, energy);
        if self.remaining().is_some_and(|r| r <= 0)
            && !self.guarantee_power
            && self.relay == RelayState::Closed
        {
            self.relay = RelayState::Open;
            self.relay_command = RelayState::Open;
        }
    }

    /// Records a freeze at every period boundary in `(from_s, to_s]` of the meter's clock, the totals
    /// taken between `before` and `before + energy` in proportion to the time passed.
    fn freeze_between(
        &mut self,
        from_s: u64,
        to_s: u64,
        before: (u128, u128),
        importing: bool,
        energy: u128,
    ) {
        let period = whole_minutes(self.freeze_period_s);
        let span = u128::from(to_s.saturating_sub(from_s).max(1));
        let mut b = (from_s / period + 1) * period;
        while b <= to_s {
            let part = energy * u128::from(b - from_s) / span;
            let (import, export) = if importing {
                (before.0 + part, before.1)
            } else {
                (before.0, before.1 + part)
            };
            self.record_freeze(Freeze {
                at: b,
                import_centi_kwh: to_centi(import),
                export_centi_kwh: to_centi(export),
            });
            b += period;
        }
    }

    /// Keeps `f` as the newest freeze (a test's history, or the meter's own), dropping the oldest
    /// beyond what a meter keeps.
    pub fn record_freeze(&mut self, f: Freeze) {
        if self.frozen.back().is_some_and(|last| last.at >= f.at) {
            return;
        }
        self.frozen.push_back(f);
        while self.frozen.len() > usize::from(crate::DataId::HOURLY_FREEZES) {
            self.frozen.pop_front();
        }
    }

    /// The `n`-th most recent freeze (1 = the newest).
    pub fn freeze(&self, n: u8) -> Option<Freeze> {
        let i = self.frozen.len().checked_sub(usize::from(n))?;
        (n >= 1).then(|| self.frozen.get(i).copied()).flatten()
    }

    fn clock_seconds(&self, wall: SystemTime) -> u64 {
        wall.duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs()
            .saturating_add_signed(self.clock_offset_s)
    }

    /// Power flowing now, in W (0 while the relay is open).
    pub fn present_power_w(&self) -> i64 {
        if self.relay == RelayState::Closed {
            self.power_w
        } else {
            0
        }
    }

    /// Current per phase in mA.
    pub fn current_milliamps(&self) -> i64 {
        let per_phase = self.present_power_w() / i64::from(self.phases.max(1));
        per_phase * 10_000 / i64::from(self.voltage_decivolts.max(1))
    }

    /// Import energy of a tariff (0 = total) in 0.01 kWh.
    pub fn import_centi_kwh(&self, tariff: usize) -> u64 {
        to_centi(self.register(&self.import, tariff))
    }

    /// Export energy of a tariff (0 = total) in 0.01 kWh.
    pub fn export_centi_kwh(&self, tariff: usize) -> u64 {
        to_centi(self.register(&self.export, tariff))
    }

    fn register(&self, registers: &[u128; 5], tariff: usize) -> u128 {
        if tariff == 0 {
            registers[1..].iter().sum()
        } else {
            registers.get(tariff).copied().unwrap_or(0)
        }
    }

    /// The prepaid remainder in 0.01 units (money or kWh), if the meter is prepaid.
    pub fn remaining(&self) -> Option<i64> {
        let spent = |per_unit: u128| i64::try_from(self.spent / per_unit).unwrap_or(i64::MAX);
        match self.prepaid? {
            Prepaid::Money {
                balance_cents,
                price_cents_per_kwh,
            } => {
                let price = u128::try_from(price_cents_per_kwh.max(0)).unwrap_or(0);
                let cost = i64::try_from(self.spent * price / WUS_PER_KWH).unwrap_or(i64::MAX);
                Some(balance_cents.saturating_sub(cost))
            }
            Prepaid::Energy { balance_centi_kwh } => {
                Some(balance_centi_kwh.saturating_sub(spent(WUS_PER_CENTI_KWH)))
            }
        }
    }

    /// Sets a new prepaid balance (a top-up), counting consumption from now.
    pub fn set_prepaid(&mut self, prepaid: Option<Prepaid>) {
        self.prepaid = prepaid;
        self.spent = 0;
    }

    /// The meter's clock at wall time `wall`.
    pub fn clock(&self, wall: SystemTime) -> MeterDateTime {
        let wall_s = wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let meter_s = wall_s.saturating_add_signed(self.clock_offset_s);
        MeterDateTime::from_unix(meter_s).unwrap_or(MeterDateTime {
            year: 2000,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
        })
    }

    /// Sets the meter's clock to `time` at wall time `wall`.
    pub fn set_clock(&mut self, wall: SystemTime, time: &MeterDateTime) {
        let wall_s = wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        self.clock_offset_s =
            i64::try_from(time.to_unix()).unwrap_or(0) - i64::try_from(wall_s).unwrap_or(0);
    }

    /// Running status word 3.
    pub fn status_word_3(&self) -> u16 {
        let mut word = 0u16;
        if self.relay == RelayState::Open {
            word |= RunningStatus3::RELAY_OPEN;
        }
        if self.relay_command == RelayState::Open {
            word |= RunningStatus3::COMMAND_TRIP;
        }
        if self.alarm {
            word |= RunningStatus3::PRE_TRIP_ALARM;
        }
        if self.guarantee_power {
            word |= RunningStatus3::GUARANTEE_POWER;
        }
        word | match self.prepaid {
            None => 0,
            Some(Prepaid::Energy { .. }) => 0x0100,
            Some(Prepaid::Money { .. }) => 0x0200,
        }
    }
}

fn to_centi(wus: u128) -> u64 {
    u64::try_from(wus / WUS_PER_CENTI_KWH).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_advances_with_wall_time() {
        let mut state = MeterState::new(1000, 100, 0);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_777_638_896); // 2026-05-01 12:34:56, flat tariff
        state.advance(t0);
        state.advance(t0 + Duration::from_secs(3600));
        assert_eq!(state.import_centi_kwh(0), 200);
        assert_eq!(state.import_centi_kwh(3), 200);
        assert_eq!(state.current_milliamps(), 4545);
        state.relay = RelayState::Open;
        state.advance(t0 + Duration::from_secs(7200));
        assert_eq!(state.import_centi_kwh(0), 200);
    }

    #[test]
    fn prepaid_meter_trips_when_empty() {
        let mut state = MeterState::new(2000, 0, 0);
        state.set_prepaid(Some(Prepaid::Money {
            balance_cents: 100,
            price_cents_per_kwh: 50,
        }));
        let t0 = UNIX_EPOCH + Duration::from_secs(1_777_638_896);
        state.advance(t0);
        state.advance(t0 + Duration::from_secs(1800)); // 1 kWh: 0.50 spent
        assert_eq!(state.remaining(), Some(50));
        assert_eq!(state.relay, RelayState::Closed);
        state.advance(t0 + Duration::from_secs(3600));
        assert_eq!(state.remaining(), Some(0));
        assert_eq!(state.relay, RelayState::Open);
        assert_eq!(state.status_word_3() & 0x0350, 0x0250);
    }
}
