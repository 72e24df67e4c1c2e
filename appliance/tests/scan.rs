//! `concentrator scan`: every simulated meter is found, including meters whose answers collide, and the
//! printed snippet is a valid configuration.

use std::process::Command;
use std::time::Duration;

use concentrator_appliance::config::Config;
use concentrator_appliance::scan::{config_snippet, modbus_candidates, scan_dlt645, scan_modbus};
use concentrator_driver_dlt645::sim::{Dlt645Meter, MeterConfig};
use concentrator_driver_modbus::model::ModelRegistry;
use concentrator_driver_modbus::sim::{ModbusMeter, ModbusMeterConfig};
use concentrator_hal::sim::{SimBus, SimClock};
use concentrator_hal::LineSettings;

#[test]
fn finds_every_dlt645_meter_even_when_their_answers_collide() {
    // Addresses chosen so that the search must go two and three bytes deep (same lowest digits).
    let addresses = [
        "000000000001",
        "000000000101",
        "000000010101",
        "123456789012",
        "000000000042",
        "999999999998",
    ];
    let mut bus = SimBus::new(
        "scan",
        LineSettings::dlt645_default(),
        SimClock::new_virtual(),
    );
    for a in addresses {
        bus.attach(Dlt645Meter::new(MeterConfig::new(a.parse().unwrap())));
    }
    let handle = bus.handle();
    let mut found: Vec<String> =
        scan_dlt645(&mut bus, Duration::from_millis(150), &mut |_, _, _| {})
            .unwrap()
            .into_iter()
            .map(|f| f.address)
            .collect();
    found.sort();
    let mut expected: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    expected.sort();
    assert_eq!(found, expected);
    assert!(
        handle.stats().collisions > 0,
        "the wildcard probe must have collided"
    );
}

#[test]
fn a_single_dlt645_meter_is_found_with_one_probe() {
    let mut bus = SimBus::new(
        "scan",
        LineSettings::dlt645_default(),
        SimClock::new_virtual(),
    );
    bus.attach(Dlt645Meter::new(MeterConfig::new(
        "000000000077".parse().unwrap(),
    )));
    let handle = bus.handle();
    let found = scan_dlt645(&mut bus, Duration::from_millis(150), &mut |_, _, _| {}).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].address, "000000000077");
    assert_eq!(handle.stats().frames_sent, 1);
}

#[test]
fn finds_modbus_meters_across_baud_rates_and_tells_their_models() {
    let registry = ModelRegistry::builtin().unwrap();
    let bus_line = LineSettings::modbus_default();
    let fast = LineSettings::with_format(19200, "8N1").unwrap();
    let mut bus = SimBus::new("scan", bus_line, SimClock::new_virtual());
    let mut sdm = ModbusMeterConfig::new(3, registry.get("sdm630").unwrap().clone());
    sdm.line = bus_line;
    bus.attach(ModbusMeter::new(sdm));
    let mut dds = ModbusMeterConfig::new(17, registry.get("dds238").unwrap().clone());
    dds.line = fast;
    bus.attach(ModbusMeter::new(dds));
    let found = scan_modbus(
        &mut bus,
        &modbus_candidates(bus_line),
        1..=20,
        Duration::from_millis(100),
        &mut |_, _, _| {},
    )
    .unwrap();
    let summary: Vec<(String, Option<&str>, LineSettings)> = found
        .iter()
        .map(|f| (f.address.clone(), f.model, f.line))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("3".into(), Some("sdm630"), bus_line),
            ("17".into(), Some("dds238"), fast)
        ]
    );
    let snippet = config_snippet("rs485-2", bus_line, &found);
    assert!(snippet.contains("answered at 19200 baud 8N1"), "{snippet}");
}

#[test]
fn the_cli_prints_a_snippet_that_validates() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sim.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args([
            "scan",
            "--bus",
            "rs485-1",
            "--protocol",
            "dlt645",
            "-c",
            example,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snippet = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        snippet.contains("# 3 meter(s) found on bus rs485-1"),
        "{snippet}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("DL/T 645: 100%"));
    // The snippet is a valid configuration for that bus.
    let config = format!(
        "[gateway]\nid = \"gw\"\nstore = \"/tmp/x\"\n\n[[bus]]\nname = \"rs485-1\"\nbackend = \"sim\"\n\n{snippet}"
    );
    let parsed = Config::parse("scan.toml", &config).unwrap_or_else(|e| panic!("{e}\n{config}"));
    assert_eq!(parsed.meters.len(), 3);

    let bad = Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(["scan", "--bus", "rs485-9", "-c", example])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr)
        .contains("no bus named `rs485-9`; its buses: rs485-1, rs485-2"));
}
