//! Emulated meters for `sim` buses, built from the `[[meter]]` tables (with their `[meter.sim]`
//! behaviour), so the daemon runs a whole simulated block with no hardware: DL/T 645 meters from the
//! dlt645 driver's emulator, Modbus meters from the modbus driver's emulator with the model's register
//! map. A meter whose driver has no emulator here (a vendor plugin) stays silent on the sim bus and is
//! reported offline; serve such a meter on a pseudo-terminal instead (see docs/plugins.md).

use concentrator_driver_dlt645::sim::{
    whole_minutes, Dlt645Meter, Freeze, MeterConfig as Dlt645MeterConfig,
};
use concentrator_driver_dlt645::Dlt645Address;
use concentrator_driver_modbus::model::ModelRegistry;
use concentrator_driver_modbus::sim::{ModbusMeter, ModbusMeterConfig};
use concentrator_hal::sim::SimBus;

use crate::config::{BusConfig, MeterConfig};

/// Attaches an emulator for every meter of `meters` that is on `bus`; returns how many.
pub fn attach(meters: &[MeterConfig], bus: &BusConfig, sim: &mut SimBus) -> usize {
    let Ok(line) = bus.line_settings() else {
        return 0;
    };
    let mut attached = 0;
    for meter in meters
        .iter()
        .filter(|m| m.bus.get_ref() == bus.name.get_ref())
    {
        let (load_w, start_kwh, since) = meter.sim.as_ref().map_or((800, 0.0, None), |s| {
            (s.load_w, s.start_kwh, s.running_since_unix)
        });
        let clock_offset_s = meter.sim.as_ref().map_or(0, |s| s.clock_offset_s);
        let freeze_period_s = meter.sim.as_ref().map_or(3_600, |s| s.freeze_period_s);
        let start_centi_kwh = (start_kwh.max(0.0) * 100.0).round() as u64
            + since.map_or(0, |since| {
                consumed_centi_kwh(load_w, since, concentrator_protocol::unix_now())
            });
        let result = match meter.driver.get_ref().as_str() {
            "dlt645" => dlt645(meter, line, load_w, start_centi_kwh, clock_offset_s).map(|m| {
                if let Some(since) = since {
                    let start = (start_kwh.max(0.0) * 100.0).round() as u64;
                    seed_freezes(&m, load_w, start, since, freeze_period_s);
                }
                m.handle().lock().freeze_period_s = whole_minutes(freeze_period_s);
                sim.attach(m);
            }),
            "modbus" => modbus(meter, line, load_w, start_centi_kwh).map(|m| {
                sim.attach(m);
            }),
            other => Err(format!(
                "no emulator for driver `{other}`; serve it on a pseudo-terminal instead"
            )),
        };
        match result {
            Ok(()) => attached += 1,
            Err(why) => log::warn!(
                "bus {}: meter {} ({}) is not emulated: {why}",
                bus.name.get_ref(),
                meter.address.get_ref(),
                meter.dwelling.get_ref()
            ),
        }
    }
    attached
}

/// Energy drawn at `load_w` from `since` to `now` (unix seconds), in 0.01 kWh, rounded down.
pub fn consumed_centi_kwh(load_w: u32, since: u64, now: u64) -> u64 {
    (u128::from(load_w) * u128::from(now.saturating_sub(since)) / 36_000) as u64
}

/// The freezes a meter drawing `load_w` since `since` (its register then `start_centi_kwh`) would keep
/// now: one at every `period` boundary of its clock, the newest 254 of them.
fn seed_freezes(m: &Dlt645Meter, load_w: u32, start_centi_kwh: u64, since: u64, period: u64) {
    let period = whole_minutes(period);
    let now = concentrator_protocol::unix_now();
    let handle = m.handle();
    let mut state = handle.lock();
    let offset = state.clock_offset_s;
    let keep = u64::from(concentrator_driver_dlt645::DataId::HOURLY_FREEZES);
    let first = since.max(now.saturating_sub(keep * period)) / period + 1;
    for k in first..=now / period {
        let wall = k * period;
        state.record_freeze(Freeze {
            at: wall.saturating_add_signed(offset),
            import_centi_kwh: start_centi_kwh + consumed_centi_kwh(load_w, since, wall),
            export_centi_kwh: 0,
        });
    }
}

fn dlt645(
    meter: &MeterConfig,
    line: concentrator_hal::LineSettings,
    load_w: u32,
    start_centi_kwh: u64,
    clock_offset_s: i64,
) -> Result<Dlt645Meter, String> {
    let address: Dlt645Address = meter
        .address
        .get_ref()
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut config = Dlt645MeterConfig::new(address);
    config.power_w = i64::from(load_w);
    config.import_centi_kwh = start_centi_kwh;
    config.line = line;
    config.clock_offset_s = clock_offset_s;
    config.broadcast_sync_limit_s = Some(300);
    if let Some(password) = &meter.password {
        config.password = password.get_ref().parse()?;
    }
    Ok(Dlt645Meter::new(config))
}

fn modbus(
    meter: &MeterConfig,
    line: concentrator_hal::LineSettings,
    load_w: u32,
    start_centi_kwh: u64,
) -> Result<ModbusMeter, String> {
    let slave: u8 = meter
        .address
        .get_ref()
        .parse()
        .map_err(|_| "not a slave id".to_string())?;
    let model = meter
        .model
        .as_ref()
        .map(|m| m.get_ref().as_str())
        .unwrap_or_default();
    let registry = ModelRegistry::builtin().map_err(|e| e.to_string())?;
    let map = registry
        .get(model)
        .ok_or_else(|| format!("no register map for model `{model}`"))?
        .clone();
    let mut config = ModbusMeterConfig::new(slave, map);
    config.power_w = i64::from(load_w);
    config.import_centi_kwh = start_centi_kwh;
    config.line = line;
    Ok(ModbusMeter::new(config))
}
