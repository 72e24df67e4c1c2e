//! `concentrator scan`: every simulated meter is found, including meters whose answers collide, and the
//! printed snippet is a valid configuration.

use std::process::Command;
use std::time::Duration;

use concentrator_appliance::config::Config;
use concentrator_appliance::scan::{
    config_snippet, modbus_candidates, modbus_worst_case, scan_dlt645, scan_modbus, TimeLeft,
};
use concentrator_driver_dlt645::sim::{Dlt645Meter, MeterConfig};
use concentrator_driver_modbus::model::ModelRegistry;
use concentrator_driver_modbus::sim::{ModbusMeter, ModbusMeterConfig};
use concentrator_hal::sim::{SimBus, SimClock};
use concentrator_hal::LineSettings;
use concentrator_hal::{DirectionControl, HalError, ReplyInfo, Rs485Bus, Rs485Timing};

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
    let mut meters = Vec::new();
    scan_dlt645(
        &mut bus,
        Duration::from_millis(150),
        &mut meters,
        &mut |_| {},
    )
    .unwrap();
    let mut found: Vec<String> = meters.into_iter().map(|f| f.address).collect();
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
    let mut found = Vec::new();
    scan_dlt645(
        &mut bus,
        Duration::from_millis(150),
        &mut found,
        &mut |_| {},
    )
    .unwrap();
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
    let mut found = Vec::new();
    scan_modbus(
        &mut bus,
        &modbus_candidates(bus_line),
        1..=20,
        Duration::from_millis(100),
        &mut found,
        &mut |_| {},
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
        snippet.contains("# 3 meters found on bus rs485-1"),
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

/// A bus whose adapter is pulled out after `left` exchanges.
struct Unplugged {
    inner: SimBus,
    left: usize,
}

impl Rs485Bus for Unplugged {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn settings(&self) -> LineSettings {
        self.inner.settings()
    }
    fn set_settings(&mut self, settings: LineSettings) -> Result<(), HalError> {
        self.inner.set_settings(settings)
    }
    fn direction(&self) -> DirectionControl {
        self.inner.direction()
    }
    fn send(&mut self, frame: &[u8], timing: &Rs485Timing) -> Result<(), HalError> {
        self.inner.send(frame, timing)
    }
    fn transact(
        &mut self,
        request: &[u8],
        timing: &Rs485Timing,
        reply: &mut Vec<u8>,
        is_complete: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<ReplyInfo, HalError> {
        if self.left == 0 {
            return Err(HalError::new(
                concentrator_hal::ErrorKind::Disconnected,
                "scan".to_string(),
                "the USB adapter went away".to_string(),
            ));
        }
        self.left -= 1;
        self.inner.transact(request, timing, reply, is_complete)
    }
}

#[test]
fn a_scan_that_stops_on_an_error_keeps_what_it_found_and_reports_each_meter_as_found() {
    let mut inner = SimBus::new(
        "scan",
        LineSettings::dlt645_default(),
        SimClock::new_virtual(),
    );
    // Two meters collide on the wildcard; the search finds 000000000001 at the second probe of the
    // first level and 000000000042 at the 43rd; the adapter goes away after 30 probes.
    for a in ["000000000001", "000000000042"] {
        inner.attach(Dlt645Meter::new(MeterConfig::new(a.parse().unwrap())));
    }
    let mut bus = Unplugged { inner, left: 30 };
    let mut found = Vec::new();
    let mut first_seen_at = None;
    let err = scan_dlt645(&mut bus, Duration::from_millis(100), &mut found, &mut |s| {
        if !s.found.is_empty() && first_seen_at.is_none() {
            first_seen_at = Some((s.done, s.total));
        }
    })
    .unwrap_err();
    assert!(err.to_string().contains("went away"), "{err}");
    let addresses: Vec<&str> = found.iter().map(|f| f.address.as_str()).collect();
    assert_eq!(addresses, ["000000000001"]);
    // Progress carried the meter while the scan went on, long before its end.
    let (done, total) = first_seen_at.expect("no progress report carried the meter found");
    assert!(done < total && done <= 3, "{done} of {total}");

    // The same for Modbus: what was found before the error stays, and the line is restored.
    let registry = ModelRegistry::builtin().unwrap();
    let line = LineSettings::modbus_default();
    let mut inner = SimBus::new("scan", line, SimClock::new_virtual());
    let mut sdm = ModbusMeterConfig::new(2, registry.get("sdm120").unwrap().clone());
    sdm.line = line;
    inner.attach(ModbusMeter::new(sdm));
    let mut bus = Unplugged { inner, left: 12 };
    let mut found = Vec::new();
    let err = scan_modbus(
        &mut bus,
        &modbus_candidates(line),
        1..=20,
        Duration::from_millis(50),
        &mut found,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("went away"), "{err}");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].address, "2");
    assert_eq!(bus.settings(), line);
}

#[test]
fn an_empty_bus_gets_an_estimate_of_the_time_left_from_the_start() {
    let line = LineSettings::modbus_default();
    let lines = modbus_candidates(line);
    let ids = 1..=247u8;
    let timeout = Duration::from_millis(200);
    let worst = modbus_worst_case(&lines, &ids, timeout);
    // 247 ids, two probes each, at 12 line settings, each waiting out 200 ms on an empty bus.
    let probes = 247 * 2 * lines.len() as u32;
    assert!(worst >= timeout * probes, "{worst:?}");
    assert!(
        worst < (timeout + Duration::from_millis(40)) * probes,
        "{worst:?}"
    );
    // Before any probe has run, the estimate is the worst case, not nothing.
    let per_probe = worst / (lines.len() * 247) as u32;
    let eta = TimeLeft::new(per_probe, Duration::ZERO);
    let left = eta.left(0, lines.len() * 247);
    assert!(
        left >= worst - Duration::from_millis(50) && left <= worst,
        "{left:?} {worst:?}"
    );
    assert_eq!(eta.left(10, 10), Duration::ZERO);
}

#[test]
fn the_cli_keeps_and_prints_what_it_found_and_shows_each_meter_and_the_time_left() {
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("DL/T 645: found "), "{stderr}");
    assert!(stderr.contains(" left"), "{stderr}");
}
