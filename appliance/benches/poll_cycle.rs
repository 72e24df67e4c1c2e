//! Poll-cycle time of a full bus against the time its bytes need on the wire.
//!
//! 32 DL/T 645 meters on one simulated bus at 2400 baud 8E1 (and 32 Modbus SDM630 meters at 9600 8N1),
//! each read once (imported energy) through the real driver, host bridge and scheduler. The bus clock
//! is virtual and advances by the wire time of every byte, so the figures are exact and repeatable:
//!
//! - wire time: every byte sent and received times the character time, plus each meter's own reply
//!   latency (time the host cannot shorten);
//! - cycle time: what the scheduler took, including the protocol's idle times (DL/T 645's wait before a
//!   request, Modbus's 3.5-character silence) and turnarounds.
//!
//! Run: `cargo bench -p concentrator-appliance --bench poll_cycle`. Prints the figures and the ratio
//! (goal: under 1.15 for DL/T 645).

use std::time::Duration;

use concentrator_appliance::scheduler::{BusScheduler, ScheduledMeter, SchedulerPolicy};
use concentrator_driver_dlt645::sim::{Dlt645Meter, MeterConfig};
use concentrator_driver_modbus::model::ModelRegistry;
use concentrator_driver_modbus::sim::{ModbusMeter, ModbusMeterConfig};
use concentrator_hal::sim::{SimBus, SimClock};
use concentrator_hal::LineSettings;
use concentrator_plugin_host::{PluginLoader, PluginPolicy, Quantity, StaticDriver, TrustedKeys};

const METERS: usize = 32;

struct Figures {
    cycle: Duration,
    wire: Duration,
    exchanges: u64,
    answered: usize,
}

fn run(
    declaration: &'static concentrator_plugin_api::PluginDeclaration,
    settings: LineSettings,
    latency: Duration,
    attach: impl Fn(&mut SimBus, usize),
    address: impl Fn(usize) -> (String, Vec<u8>),
    config: &str,
) -> Figures {
    let mut loader =
        PluginLoader::new("/nonexistent", TrustedKeys::none(), PluginPolicy::default());
    let plugin = loader
        .register_static(StaticDriver::new(declaration))
        .expect("driver registers");
    let clock = SimClock::new_virtual();
    let mut bus = SimBus::new("bench", settings, clock.clone());
    for i in 0..METERS {
        attach(&mut bus, i);
    }
    let handle = bus.handle();
    let meters = (0..METERS)
        .map(|i| {
            let (text, bytes) = address(i);
            let session = ScheduledMeter::open(&plugin, &bytes, config);
            ScheduledMeter::new(
                &text,
                &format!("flat {i}"),
                plugin.name(),
                vec![Quantity::EnergyImportTotal],
                session,
            )
        })
        .collect();
    let mut scheduler = BusScheduler::new(
        Box::new(bus),
        Box::new(clock),
        meters,
        Duration::from_secs(60),
        SchedulerPolicy::default(),
    );
    // A first cycle settles the latency estimates; the second is measured.
    scheduler.poll_cycle();
    let before = handle.stats();
    let report = scheduler.poll_cycle();
    let after = handle.stats();
    let bytes =
        (after.bytes_sent - before.bytes_sent) + (after.bytes_received - before.bytes_received);
    let exchanges = after.frames_sent - before.frames_sent;
    let wire = settings.wire_time(bytes as usize) + latency * exchanges as u32;
    Figures {
        cycle: report.took,
        wire,
        exchanges,
        answered: report.answered,
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name}: {} meters answered, {} exchanges; cycle {:.3} s, wire {:.3} s, ratio {:.3}",
        f.answered,
        f.exchanges,
        f.cycle.as_secs_f64(),
        f.wire.as_secs_f64(),
        f.cycle.as_secs_f64() / f.wire.as_secs_f64()
    );
}

fn main() {
    let dlt_latency = Duration::from_millis(40);
    let dlt = run(
        concentrator_driver_dlt645::plugin_declaration(),
        LineSettings::dlt645_default(),
        dlt_latency,
        |bus, i| {
            let mut config = MeterConfig::new(format!("{:012}", i + 1).parse().expect("address"));
            config.latency = dlt_latency;
            bus.attach(Dlt645Meter::new(config));
        },
        |i| {
            let text = format!("{:012}", i + 1);
            let bytes = concentrator_appliance::drivers::pack_address(&text).expect("address");
            (text, bytes)
        },
        "",
    );
    print("DL/T 645, 32 meters, 2400 baud 8E1", &dlt);

    let registry = ModelRegistry::builtin().expect("built-in maps");
    let map = registry.get("sdm630").expect("sdm630").clone();
    let mb_latency = Duration::from_millis(30);
    let modbus = run(
        concentrator_driver_modbus::plugin_declaration(),
        LineSettings::modbus_default(),
        mb_latency,
        |bus, i| {
            let mut config = ModbusMeterConfig::new(i as u8 + 1, map.clone());
            config.latency = mb_latency;
            bus.attach(ModbusMeter::new(config));
        },
        |i| ((i + 1).to_string(), vec![i as u8 + 1]),
        "model = \"sdm630\"",
    );
    print("Modbus SDM630, 32 meters, 9600 baud 8N1", &modbus);
}
