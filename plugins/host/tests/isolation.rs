//! The isolated mode against real plugins: the example vendor plugin in a child process reads a sim
//! meter like in-process; and each misbehaving fixture (segfault, abort, hang, memory leak, log flood)
//! run in its own child leaves the host up, the other bus at its cycle time, and the culprit named in
//! its status. Also the signature's binding of name and version, and the refusal of a downgrade.

#[path = "common/fixtures.rs"]
mod fixtures;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concentrator_example_meter::sim::SimExampleMeter;
use concentrator_hal::sim::{SimBus, SimClock};
use concentrator_hal::{LineSettings, Parity};
use concentrator_plugin_host::{
    Algorithm, ChildOptions, Isolation, LoadError, Plugin, PluginLoader, PluginPolicy,
    PluginStatus, Quantity, SigningKey, StaticDriver, Task, TaskError, TrustedKeys, VersionStore,
};

const CHILD: &str = env!("CARGO_BIN_EXE_concentrator-plugin-child");

fn options() -> ChildOptions {
    ChildOptions {
        program: PathBuf::from(CHILD),
        args: Vec::new(),
        memory_limit: 96 << 20,
        call_deadline: Duration::from_millis(300),
        crash_limit: 3,
        crash_window: Duration::from_secs(60),
        quarantine: Duration::from_secs(600),
        restart_backoff: Duration::from_millis(20),
        log_rate: 50,
    }
}

fn policy(isolated: &[&str]) -> PluginPolicy {
    PluginPolicy {
        max_faults: 3,
        require_root_owned: false,
        isolation: isolated
            .iter()
            .map(|name| ((*name).to_owned(), options()))
            .collect::<BTreeMap<_, _>>(),
        ..PluginPolicy::default()
    }
}

/// A plugin directory with a vendor key and the given fixtures signed in it.
fn setup(test: &str, crates: &[&str]) -> (PathBuf, PathBuf, TrustedKeys) {
    let dir = fixtures::scratch_dir(test);
    let (private, public) = fixtures::key_pair(&dir, "vendor", Algorithm::Ed25519);
    let trusted = TrustedKeys::from_pem_files(&[public]).unwrap();
    let plugins = dir.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for name in crates {
        let file = format!("lib{}.so", name.replace('-', "_"));
        fixtures::install(name, &plugins, &file, Some(&private));
    }
    (plugins, private, trusted)
}

fn sim_bus(name: &str, address: u8) -> (SimBus, SimClock) {
    let clock = SimClock::new_virtual();
    let mut bus = SimBus::new(
        name,
        LineSettings::new(9600, 8, Parity::None, 1).unwrap(),
        clock.clone(),
    );
    bus.attach(SimExampleMeter::new(address));
    (bus, clock)
}

fn read_energy(plugin: &Arc<Plugin>, bus: &mut SimBus, clock: &SimClock) -> String {
    let mut meter = plugin.open_meter(&[7], "model = \"em-1\"").unwrap();
    let readings = meter
        .run(bus, clock, Task::Read(Quantity::EnergyImportTotal))
        .unwrap()
        .unwrap();
    readings[0].to_string()
}

#[test]
fn the_example_plugin_reads_the_same_in_a_child_and_survives_a_kill() {
    let (dir, _, trusted) = setup("child-example", &["concentrator-example-meter"]);
    let mut loader = PluginLoader::new(&dir, trusted, policy(&["example-meter"]));
    let report = loader.load_all().unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let plugin = loader.get("example-meter").unwrap();
    assert_eq!(plugin.isolation(), Isolation::Process);
    let (mut bus, clock) = sim_bus("bus-1", 7);
    assert_eq!(
        read_energy(&plugin, &mut bus, &clock),
        "energy-import-total = 1234500 Wh"
    );

    // The child is killed from outside: the task in flight fails naming the signal, and after the
    // backoff the plugin's child is restarted and the open meter is opened again in it.
    let mut meter = plugin.open_meter(&[7], "model = \"em-1\"").unwrap();
    let pid = plugin.child().unwrap().pid().unwrap();
    // SAFETY: a plain kill of the child this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let error = meter
        .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
        .unwrap_err();
    assert!(error.to_string().contains("signal 9 (SIGKILL)"), "{error}");
    assert!(plugin.problem().unwrap().contains("SIGKILL"));
    std::thread::sleep(Duration::from_millis(30));
    let readings = meter
        .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
        .unwrap()
        .unwrap();
    assert_eq!(readings[0].to_string(), "energy-import-total = 1234500 Wh");
    assert_ne!(plugin.child().unwrap().pid().unwrap(), pid);
}

/// Runs the culprit on one thread until it is quarantined (or `calls` tasks for one that is not),
/// while a good in-process plugin polls another bus every 5 ms; returns the culprit's plugin and the
/// good bus's longest cycle.
fn run_beside_a_good_bus(
    culprit: &str,
    crate_name: &str,
    calls: usize,
) -> (Arc<Plugin>, Duration, Vec<TaskError>) {
    let (dir, _, trusted) = setup(culprit, &[crate_name]);
    let mut loader = PluginLoader::new(&dir, trusted, policy(&[culprit]));
    let good = loader
        .register_static(StaticDriver::new(
            concentrator_example_meter::plugin_declaration(),
        ))
        .unwrap();
    let report = loader.load_all().unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let bad = loader.get(culprit).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut bus, clock) = sim_bus("good-bus", 7);
            let mut meter = good.open_meter(&[7], "model = \"em-1\"").unwrap();
            let mut longest = Duration::ZERO;
            let mut cycles = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                meter
                    .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
                    .unwrap()
                    .unwrap();
                longest = longest.max(started.elapsed());
                cycles += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(cycles > 5, "the good bus polled only {cycles} times");
            longest
        })
    };
    let (mut bus, clock) = sim_bus("bad-bus", 7);
    let mut errors = Vec::new();
    let mut meter = bad.open_meter(&[7], "").unwrap();
    for _ in 0..calls {
        match meter.run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal)) {
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
        if bad.is_quarantined() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let longest = poller.join().unwrap();
    (bad, longest, errors)
}

/// The culprit crashes every call: three crashes quarantine it, its status names it and why, and the
/// next call fails fast with the quarantine.
fn quarantined_after_crashes(culprit: &str, crate_name: &str, why: &str) {
    let (bad, longest, errors) = run_beside_a_good_bus(culprit, crate_name, 10);
    assert!(
        longest < Duration::from_millis(50),
        "the good bus's longest cycle was {longest:?} while `{culprit}` failed"
    );
    let PluginStatus::Quarantined { reason } = bad.status() else {
        panic!(
            "`{culprit}` is not quarantined: {:?} {errors:?}",
            bad.status()
        );
    };
    assert!(
        reason.contains("until") && reason.contains(why),
        "{culprit}: {reason}"
    );
    let problem = bad.problem().unwrap();
    assert!(problem.contains(why), "{problem}");
    assert!(
        errors
            .iter()
            .all(|e| e.to_string().contains(&format!("`{culprit}`"))),
        "{errors:?}"
    );
    let mut meter_error = bad.open_meter(&[7], "").err();
    if meter_error.is_none() {
        let (mut bus, clock) = sim_bus("again", 7);
        meter_error = bad
            .open_meter(&[7], "")
            .unwrap()
            .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
            .err();
    }
    let message = meter_error.unwrap().to_string();
    assert!(
        message.contains(&format!("driver plugin `{culprit}` is quarantined until")),
        "{message}"
    );
}

#[test]
fn a_segfaulting_plugin_is_restarted_then_quarantined_and_named() {
    quarantined_after_crashes(
        "crash-segv",
        "concentrator-fixture-crash-segv",
        "crashed with signal 11 (SIGSEGV)",
    );
}

#[test]
fn an_aborting_plugin_is_restarted_then_quarantined_and_named() {
    quarantined_after_crashes(
        "crash-abort",
        "concentrator-fixture-crash-abort",
        "crashed with signal 6 (SIGABRT)",
    );
}

#[test]
fn a_hanging_plugin_is_killed_by_the_watchdog() {
    quarantined_after_crashes(
        "hang",
        "concentrator-fixture-hang",
        "killed by the watchdog: no answer to `begin` within 300 ms",
    );
}

#[test]
fn a_leaking_plugin_is_stopped_at_its_memory_limit() {
    let (bad, longest, errors) = run_beside_a_good_bus("leak", "concentrator-fixture-leak", 40);
    assert!(longest < Duration::from_millis(50), "{longest:?}");
    let first = errors
        .first()
        .expect("the leak reached the limit")
        .to_string();
    assert!(first.contains("over its memory limit of 96 MiB"), "{first}");
    assert!(bad.problem().unwrap().contains("memory limit"));
}

#[test]
fn a_plugin_flooding_its_log_keeps_working_and_is_named() {
    let (bad, longest, errors) =
        run_beside_a_good_bus("flood-log", "concentrator-fixture-flood-log", 4);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(longest < Duration::from_millis(50), "{longest:?}");
    assert_eq!(bad.status(), PluginStatus::Active { faults: 0 });
    let problem = bad.problem().unwrap();
    assert!(
        problem.contains("flooding its log") && problem.contains("limit 50 a second"),
        "{problem}"
    );
}

fn sign_as(key: &Path, file: &Path, name: &str, version: &str) {
    SigningKey::from_pem_file(key)
        .unwrap()
        .sign_file(file, name, version)
        .unwrap();
}

#[test]
fn the_signature_binds_name_and_version_and_a_downgrade_is_refused() {
    let (dir, key, trusted) = setup("downgrade", &["concentrator-example-meter"]);
    let file = dir.join("libconcentrator_example_meter.so");
    let version = env!("CARGO_PKG_VERSION");

    let keys =
        || TrustedKeys::from_pem_files(&[dir.parent().unwrap().join("vendor.pub.pem")]).unwrap();
    drop(trusted);

    // Signed for another version than the file declares.
    sign_as(&key, &file, "example-meter", "9.9.9");
    let error = PluginLoader::new(&dir, keys(), policy(&[]))
        .load_file(&file)
        .unwrap_err();
    assert!(matches!(error, LoadError::NotAsSigned { .. }), "{error}");
    assert!(error.to_string().contains("re-sign"), "{error}");

    // A higher version was run here before: this one is refused, unless allowed.
    sign_as(&key, &file, "example-meter", version);
    let store = VersionStore::new(dir.parent().unwrap().join("plugin-versions"));
    store.record("example-meter", "0.2.0").unwrap();
    let mut with_store = policy(&[]);
    with_store.versions = Some(store.clone());
    let error = PluginLoader::new(&dir, keys(), with_store.clone())
        .load_file(&file)
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&format!("`example-meter` {version} is older than 0.2.0"))
            && message.contains("allow_downgrade = true"),
        "{message}"
    );
    with_store
        .allow_downgrade
        .insert(String::from("example-meter"));
    PluginLoader::new(&dir, keys(), with_store)
        .load_file(&file)
        .unwrap();
}

/// A child restarted from a thread that then ends (a bus worker stopping) lives on: it asks to die
/// with its parent, and Linux takes the parent to be the thread that started it, so children are
/// started from one long-lived thread. Failed before: the next task found the child killed (SIGKILL).
#[test]
fn a_child_restarted_from_a_thread_that_ends_lives_on() {
    let (dir, _, trusted) = setup("child-thread", &["concentrator-example-meter"]);
    let mut loader = PluginLoader::new(&dir, trusted, policy(&["example-meter"]));
    assert!(loader.load_all().unwrap().refused.is_empty());
    let plugin = loader.get("example-meter").unwrap();
    let (mut bus, clock) = sim_bus("bus-1", 7);
    let mut meter = plugin.open_meter(&[7], "model = \"em-1\"").unwrap();
    let pid = plugin.child().unwrap().pid().unwrap();
    // SAFETY: a plain kill of the child this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(meter
        .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
        .is_err());
    std::thread::sleep(Duration::from_millis(30));
    let worker = Arc::clone(&plugin);
    std::thread::spawn(move || {
        let (mut bus, clock) = sim_bus("bus-2", 7);
        read_energy(&worker, &mut bus, &clock)
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let readings = meter
        .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
        .unwrap()
        .unwrap();
    assert_eq!(readings[0].to_string(), "energy-import-total = 1234500 Wh");
}

/// The seccomp filter: in its child, a plugin cannot open a file, connect anywhere or start a program.
/// (The same fixture in-process can: the test checks the filter, not the machine.)
#[test]
fn an_isolated_plugin_cannot_open_files_connect_or_exec() {
    let (dir, _, trusted) = setup("sandbox", &["concentrator-fixture-sandbox-probe"]);
    let mut loader = PluginLoader::new(&dir, trusted, policy(&["sandbox-probe"]));
    assert!(loader.load_all().unwrap().refused.is_empty());
    let plugin = loader.get("sandbox-probe").unwrap();
    let (mut bus, clock) = sim_bus("bus-1", 7);
    let mut meter = plugin.open_meter(&[7], "").unwrap();
    let refused = meter
        .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
        .unwrap_err()
        .to_string();
    let denied = "Operation not permitted";
    assert!(
        refused.contains(&format!("file: {denied}"))
            && refused.contains(&format!("tcp: {denied}"))
            && refused.contains(&format!("exec: {denied}")),
        "{refused}"
    );
    assert_eq!(plugin.status(), PluginStatus::Active { faults: 0 });
}
