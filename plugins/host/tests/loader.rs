//! The loader and the bridge against real shared libraries: the example vendor plugin and every bad
//! fixture, built by cargo with this toolchain at test time (see `common/fixtures.rs`).

#[path = "common/fixtures.rs"]
mod fixtures;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use concentrator_example_meter::sim::SimExampleMeter;
use concentrator_hal::sim::{SimBus, SimClock};
use concentrator_hal::{LineSettings, Parity};
use concentrator_plugin_host::{
    Algorithm, Decimal, DeclarationError, DriverKind, LoadError, Plugin, PluginLoader,
    PluginOrigin, PluginPolicy, PluginStatus, Quantity, Reading, RelayCommand, RelayState,
    SignatureError, StaticDriver, StreamEvent, Task, TaskError, TrustedKeys, Unit, Value,
};

// -------------------------------------------------------------------------------------------------
// A logger that keeps every record, so tests can see what reached the daemon's log.

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        eprintln!("{line}");
        self.0.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

fn logs() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(capture).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
        capture
    })
}

fn logged(needle: &str) -> bool {
    logs()
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|line| line.contains(needle))
}

// -------------------------------------------------------------------------------------------------

const EXAMPLE: &str = "concentrator-example-meter";

fn policy() -> PluginPolicy {
    // Test directories live under /tmp and need not be root-owned; one test checks the rule itself.
    PluginPolicy {
        max_faults: 3,
        require_root_owned: false,
        ..PluginPolicy::default()
    }
}

/// A plugin directory with a vendor key; returns (dir, private key, trusted keys).
fn setup(test: &str) -> (std::path::PathBuf, std::path::PathBuf, TrustedKeys) {
    logs();
    let dir = fixtures::scratch_dir(test);
    let (private, public) = fixtures::key_pair(&dir, "vendor", Algorithm::Ed25519);
    let trusted = TrustedKeys::from_pem_files(&[public]).unwrap();
    let plugins = dir.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    (plugins, private, trusted)
}

fn sim_bus(name: &str, addresses: &[u8]) -> (SimBus, SimClock) {
    let clock = SimClock::new_virtual();
    let mut bus = SimBus::new(
        name,
        LineSettings::new(9600, 8, Parity::None, 1).unwrap(),
        clock.clone(),
    );
    for address in addresses {
        bus.attach(SimExampleMeter::new(*address));
    }
    (bus, clock)
}

fn load_refused(crate_name: &str, test: &str, sign: bool) -> (std::path::PathBuf, LoadError) {
    let (dir, key, trusted) = setup(test);
    let file = format!("lib{}.so", crate_name.replace('-', "_"));
    let path = fixtures::install(crate_name, &dir, &file, sign.then_some(key.as_path()));
    let mut loader = PluginLoader::new(&dir, trusted, policy());
    let report = loader.load_all().unwrap();
    assert!(
        report.loaded.is_empty(),
        "{crate_name} should have been refused"
    );
    let [error] = <[LoadError; 1]>::try_from(report.refused).unwrap();
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the message names the file: {message}"
    );
    assert!(logged(&message), "the refusal is logged: {message}");
    (path, error)
}

fn energy(mantissa: i64) -> Reading {
    Reading::new(
        Quantity::EnergyImportTotal,
        Value::Decimal(Decimal::new(mantissa, 1, Unit::WattHour)),
    )
}

// -------------------------------------------------------------------------------------------------
// The good plugin

/// The acceptance path: the example vendor plugin, signed, loaded from the plugin directory, reads a sim
/// meter through the bridge, and its own log records reach the daemon's log.
#[test]
fn signed_example_plugin_loads_and_reads_a_sim_meter() {
    let (dir, key, trusted) = setup("good");
    fixtures::install(EXAMPLE, &dir, "libexample_meter.so", Some(&key));
    let mut loader = PluginLoader::new(&dir, trusted, policy());
    let report = loader.load_all().unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let plugin = loader.get("example-meter").unwrap();
    let info = plugin.info();
    assert_eq!(
        (info.kind, info.version.as_str()),
        (DriverKind::Rs485Meter, env!("CARGO_PKG_VERSION"))
    );
    assert!(
        matches!(&info.origin, PluginOrigin::File { path, .. } if path.ends_with("libexample_meter.so"))
    );
    assert_eq!(plugin.status(), PluginStatus::Active { faults: 0 });

    let (mut bus, clock) = sim_bus("bus-good", &[7, 8]);
    let mut meter = plugin.open_meter(&[7], "model = \"em-1\"").unwrap();
    let readings = meter
        .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
        .unwrap()
        .unwrap();
    assert_eq!(readings, [energy(123_450)]);
    assert!(logged("plugin::example-meter: [concentrator_example_meter] meter 7: energy-import-total = 1234500 Wh"));

    let voltage = meter
        .run(
            &mut bus,
            &clock,
            Task::Read(Quantity::Voltage(concentrator_plugin_host::Phase::B)),
        )
        .unwrap();
    assert_eq!(
        voltage.unwrap()[0].value,
        Value::Decimal(Decimal::new(2298, -1, Unit::Volt))
    );

    // A device exception is a healthy meter's answer, not a failure.
    let exception = meter
        .run(
            &mut bus,
            &clock,
            Task::Read(Quantity::PrepaidRemainingEnergy),
        )
        .unwrap()
        .unwrap_err();
    assert_eq!(exception.code, 2);

    // Relay and clock (two exchanges) work, and the state shows in later reads.
    assert_eq!(
        meter
            .run(&mut bus, &clock, Task::Relay(RelayCommand::Trip))
            .unwrap()
            .unwrap(),
        []
    );
    let relay = meter
        .run(&mut bus, &clock, Task::Read(Quantity::RelayState))
        .unwrap()
        .unwrap();
    assert_eq!(relay[0].value, Value::Relay(RelayState::Open));
    let set = meter
        .run(&mut bus, &clock, Task::SetClock(1_800_000_000))
        .unwrap()
        .unwrap();
    assert_eq!(
        set,
        [Reading::new(
            Quantity::MeterDateTime,
            Value::Timestamp(1_800_000_000)
        )]
    );

    // A silent meter is a transport failure, not a plugin fault.
    let mut absent = plugin.open_meter(&[9], "").unwrap();
    let err = absent
        .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
        .unwrap_err();
    assert!(
        matches!(err, TaskError::NoReply { ref bus, .. } if bus == "bus-good"),
        "{err}"
    );
    assert!(matches!(
        meter.run(&mut bus, &clock, Task::DiscoverAddress),
        Err(TaskError::TaskRejected { .. })
    ));
    assert_eq!(plugin.status(), PluginStatus::Active { faults: 0 });

    let err = plugin.open_meter(&[7], "colour = \"red\"").unwrap_err();
    assert!(
        matches!(err, TaskError::ConfigRejected { .. }) && err.to_string().contains("colour"),
        "{err}"
    );
}

#[test]
fn ecdsa_p256_signatures_are_accepted_too() {
    let (dir, _, _) = setup("ecdsa");
    let (private, public) = fixtures::key_pair(dir.parent().unwrap(), "p256", Algorithm::EcdsaP256);
    fixtures::install(EXAMPLE, &dir, "libexample_meter.so", Some(&private));
    let trusted = TrustedKeys::from_pem_files(&[public]).unwrap();
    let mut loader = PluginLoader::new(&dir, trusted, policy());
    let report = loader.load_all().unwrap();
    assert_eq!(report.loaded.len(), 1, "{:?}", report.refused);
}

/// The same driver crate, linked statically, registers and reads without dlopen or a signature.
#[test]
fn static_registration_runs_the_same_driver_without_dlopen() {
    logs();
    let mut loader = PluginLoader::new("/nonexistent", TrustedKeys::none(), policy());
    let plugin = loader
        .register_static(StaticDriver::new(
            concentrator_example_meter::plugin_declaration(),
        ))
        .unwrap();
    assert_eq!(plugin.info().origin, PluginOrigin::Static);
    let (mut bus, clock) = sim_bus("bus-static", &[3]);
    let mut meter = plugin.open_meter(&[3], "").unwrap();
    let readings = meter
        .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
        .unwrap()
        .unwrap();
    assert_eq!(readings, [energy(123_450)]);

    let again = loader.register_static(StaticDriver::new(
        concentrator_example_meter::plugin_declaration(),
    ));
    assert!(matches!(again, Err(LoadError::Duplicate { .. })));
}

// -------------------------------------------------------------------------------------------------
// Refused before any call

#[test]
fn a_library_without_the_declaration_symbol_is_refused() {
    let (_, error) = load_refused(
        "concentrator-fixture-missing-symbol",
        "missing-symbol",
        true,
    );
    assert!(matches!(error, LoadError::MissingSymbol { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("concentrator_plugin_declaration"),
        "{error}"
    );
}

#[test]
fn a_wrong_abi_version_is_refused() {
    let (_, error) = load_refused("concentrator-fixture-wrong-abi", "wrong-abi", true);
    assert!(
        matches!(
            error,
            LoadError::Declaration {
                source: DeclarationError::AbiVersion {
                    found: 999,
                    expected: 1
                },
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("ABI 999"), "{error}");
}

#[test]
fn a_wrong_target_is_refused() {
    let (_, error) = load_refused("concentrator-fixture-wrong-target", "wrong-target", true);
    assert!(
        matches!(
            error,
            LoadError::Declaration {
                source: DeclarationError::Target { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("sparc64-unknown-openbsd"),
        "{error}"
    );
}

#[test]
fn panic_abort_plugins_are_refused() {
    let (_, error) = load_refused("concentrator-fixture-panic-abort", "panic-abort", true);
    assert!(
        matches!(
            error,
            LoadError::Declaration {
                source: DeclarationError::PanicStrategy { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("panic = \"unwind\""), "{error}");
}

#[test]
fn a_panicking_init_is_refused_with_the_panic_message() {
    let (_, error) = load_refused("concentrator-fixture-panic-init", "panic-init", true);
    assert!(
        matches!(
            error,
            LoadError::Init {
                status: "panicked",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("licence file /etc/vendor/licence.key is missing"),
        "{error}"
    );
}

#[test]
fn an_unsigned_file_is_refused() {
    let (path, error) = load_refused(EXAMPLE, "unsigned", false);
    assert!(
        matches!(
            error,
            LoadError::Signature {
                source: SignatureError::Missing { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("{}.sig", path.display())),
        "{error}"
    );
    assert!(
        error.to_string().contains("concentrator plugins sign"),
        "{error}"
    );
}

#[test]
fn a_file_changed_after_signing_is_refused() {
    let (dir, key, trusted) = setup("changed");
    let path = fixtures::install(EXAMPLE, &dir, "libexample_meter.so", Some(&key));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let mut loader = PluginLoader::new(&dir, trusted, policy());
    let error = loader.load_file(&path).unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::Signature {
                source: SignatureError::FileChanged { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("changed after signing"),
        "{error}"
    );
}

#[test]
fn a_file_signed_by_an_untrusted_key_is_refused() {
    let (dir, _, trusted) = setup("untrusted");
    let (stranger, _) = fixtures::key_pair(dir.parent().unwrap(), "stranger", Algorithm::Ed25519);
    let path = fixtures::install(EXAMPLE, &dir, "libexample_meter.so", Some(&stranger));
    let error = PluginLoader::new(&dir, trusted, policy())
        .load_file(&path)
        .unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::Signature {
                source: SignatureError::UnknownKey { .. },
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_world_writable_plugin_is_refused_when_ownership_is_enforced() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, key, trusted) = setup("writable");
    let path = fixtures::install(EXAMPLE, &dir, "libexample_meter.so", Some(&key));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut loader = PluginLoader::new(&dir, trusted, PluginPolicy::default());
    let error = loader.load_file(&path).unwrap_err();
    assert!(matches!(error, LoadError::NotPrivate { .. }), "{error}");
    assert!(error.to_string().contains("666"), "{error}");
}

/// A directory with good and bad files: each bad one is refused with its own reason and the good ones load.
#[test]
fn one_bad_file_does_not_stop_the_others() {
    let (dir, key, trusted) = setup("mixed");
    fixtures::install(EXAMPLE, &dir, "a_example.so", Some(&key));
    fixtures::install(
        "concentrator-fixture-wrong-abi",
        &dir,
        "b_wrong_abi.so",
        Some(&key),
    );
    fixtures::install(
        "concentrator-fixture-stream-echo",
        &dir,
        "c_stream.so",
        Some(&key),
    );
    fixtures::install(
        "concentrator-fixture-missing-symbol",
        &dir,
        "d_missing.so",
        None,
    );
    std::fs::write(dir.join("notes.txt"), "not a plugin").unwrap();
    let report = PluginLoader::new(&dir, trusted, policy())
        .load_all()
        .unwrap();
    let names: Vec<&str> = report.loaded.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["example-meter", "stream-echo"]);
    assert_eq!(report.refused.len(), 2);
}

// -------------------------------------------------------------------------------------------------
// Contained at run time

fn load_one(crate_name: &str, test: &str) -> Arc<Plugin> {
    let (dir, key, trusted) = setup(test);
    let path = fixtures::install(crate_name, &dir, "plugin.so", Some(&key));
    PluginLoader::new(&dir, trusted, policy())
        .load_file(&path)
        .unwrap()
}

/// A plugin that panics on every call is contained each time, quarantined after three faults, and
/// fails fast afterwards; a bus driven by another plugin keeps reading all along.
#[test]
fn a_panicking_plugin_is_quarantined_while_other_buses_keep_running() {
    let bad = load_one("concentrator-fixture-panic-call", "panic-call");
    let good = load_one(EXAMPLE, "panic-call-neighbour");

    let bad_bus = std::thread::spawn({
        let bad = Arc::clone(&bad);
        move || {
            let (mut bus, clock) = sim_bus("bus-bad", &[1]);
            let mut meter = bad.open_meter(&[1], "").unwrap();
            let mut errors = Vec::new();
            for _ in 0..5 {
                errors.push(
                    meter
                        .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
                        .unwrap_err(),
                );
            }
            errors
        }
    });
    let good_bus = std::thread::spawn(move || {
        let (mut bus, clock) = sim_bus("bus-good-neighbour", &[2]);
        let mut meter = good.open_meter(&[2], "").unwrap();
        (0..20)
            .map(|_| {
                meter
                    .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
                    .unwrap()
                    .unwrap()
            })
            .count()
    });

    let errors = bad_bus.join().unwrap();
    for error in &errors[..3] {
        assert!(
            matches!(error, TaskError::Panicked { entry: "begin", .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("register map has 0 entries, index 11 is out of range"),
            "{error}"
        );
    }
    for error in &errors[3..] {
        assert!(matches!(error, TaskError::Quarantined { .. }), "{error}");
    }
    assert!(matches!(bad.status(), PluginStatus::Quarantined { .. }));
    assert!(matches!(
        bad.open_meter(&[1], ""),
        Err(TaskError::Quarantined { .. })
    ));
    assert_eq!(good_bus.join().unwrap(), 20);
    // The plugin's log record before the panic, and its panic message, reached the host's log.
    assert!(logged("plugin::panic-call: [concentrator_fixture_panic_call] about to fail on read energy-import-total"));
    assert!(logged(
        "plugin::panic-call: [panic] driver panicked in `begin`: register map has 0 entries"
    ));
    assert!(logged("plugin `panic-call` from"));
}

#[test]
fn garbage_lengths_are_caught_before_the_host_reads_them() {
    let plugin = load_one("concentrator-fixture-garbage-lengths", "garbage");
    let (mut bus, clock) = sim_bus("bus-garbage", &[1]);
    let mut meter = plugin.open_meter(&[1], "").unwrap();
    let error = meter
        .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
        .unwrap_err();
    assert!(
        matches!(error, TaskError::Misbehaved { entry: "begin", .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("reported a 5120-byte frame in a 1024-byte buffer"),
        "{error}"
    );
    assert_eq!(plugin.status(), PluginStatus::Active { faults: 1 });
    assert_eq!(
        bus.handle().stats().frames_sent,
        0,
        "nothing went on the bus"
    );
}

#[test]
fn stream_driver_shims_pass_bytes_ticks_and_events_and_contain_panics() {
    let plugin = load_one("concentrator-fixture-stream-echo", "stream");
    assert_eq!(plugin.info().kind, DriverKind::StreamCoordinator);
    let clock = SimClock::new_virtual();
    assert!(matches!(
        plugin.open_stream("refuse = true", &clock),
        Err(TaskError::ConfigRejected { .. })
    ));
    let mut stream = plugin.open_stream("", &clock).unwrap();
    assert_eq!(stream.poll_transmit().unwrap(), None);
    stream.on_bytes(b"\x42hello").unwrap();
    stream.on_tick(&clock).unwrap();
    assert_eq!(
        stream.poll_transmit().unwrap().as_deref(),
        Some(&b"ACK:\x42hello"[..])
    );
    assert_eq!(
        stream.poll_event().unwrap(),
        Some(StreamEvent::DeviceSeen {
            address: vec![0x42]
        })
    );
    assert_eq!(stream.poll_event().unwrap(), Some(StreamEvent::LinkUp));
    assert_eq!(stream.poll_event().unwrap(), None);
    // API 1.1 entries through dlopen: the SDK's defaults refuse commands and have no notices.
    let refused = stream.command("{\"op\": \"ping\"}", &clock).unwrap_err();
    assert!(
        matches!(refused, TaskError::TaskRejected { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("takes no commands"),
        "{refused}"
    );
    assert_eq!(stream.poll_notice().unwrap(), None);
    let error = stream.on_bytes(b"panic").unwrap_err();
    assert!(error.to_string().contains("impossible state"), "{error}");
    assert!(matches!(
        plugin.open_meter(&[1], ""),
        Err(TaskError::WrongKind { .. })
    ));
}

#[test]
fn fixtures_are_built_where_expected() {
    assert!(Path::new(&fixtures::library(EXAMPLE)).exists());
}
