//! The isolated mode's cost: one task (a read of the example vendor plugin's sim meter: `begin`, one
//! `is_complete` per reply chunk, `finish`) in-process against the same plugin in a child process,
//! and the overhead per request/response frame pair. Prints the figures docs/plugins.md quotes.
//!
//! `cargo bench -p concentrator-plugin-host --bench isolation`

#[path = "../tests/common/fixtures.rs"]
mod fixtures;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concentrator_example_meter::sim::SimExampleMeter;
use concentrator_hal::sim::{SimBus, SimClock};
use concentrator_hal::{LineSettings, Parity};
use concentrator_plugin_host::{
    Algorithm, ChildOptions, Plugin, PluginLoader, PluginPolicy, Quantity, StaticDriver, Task,
    TrustedKeys,
};
use criterion::{criterion_group, criterion_main, Criterion};

fn plugins() -> (Arc<Plugin>, Arc<Plugin>) {
    let dir = fixtures::scratch_dir("bench-isolation");
    let (private, public) = fixtures::key_pair(&dir, "vendor", Algorithm::Ed25519);
    let plugin_dir = dir.join("plugins");
    std::fs::create_dir(&plugin_dir).unwrap();
    fixtures::install(
        "concentrator-example-meter",
        &plugin_dir,
        "libexample.so",
        Some(&private),
    );
    let mut policy = PluginPolicy {
        require_root_owned: false,
        ..PluginPolicy::default()
    };
    policy.isolation.insert(
        String::from("example-meter"),
        ChildOptions {
            program: PathBuf::from(env!("CARGO_BIN_EXE_concentrator-plugin-child")),
            args: Vec::new(),
            ..ChildOptions::default()
        },
    );
    let trusted = TrustedKeys::from_pem_files(&[public]).unwrap();
    let mut isolated = PluginLoader::new(&plugin_dir, trusted, policy);
    assert!(isolated.load_all().unwrap().refused.is_empty());
    let mut local = PluginLoader::new("/nonexistent", TrustedKeys::none(), PluginPolicy::default());
    let local = local
        .register_static(StaticDriver::new(
            concentrator_example_meter::plugin_declaration(),
        ))
        .unwrap();
    (local, isolated.get("example-meter").unwrap())
}

fn bus() -> (SimBus, SimClock) {
    let clock = SimClock::new_virtual();
    let mut bus = SimBus::new(
        "bench",
        LineSettings::new(9600, 8, Parity::None, 1).unwrap(),
        clock.clone(),
    );
    bus.attach(SimExampleMeter::new(7));
    (bus, clock)
}

/// Mean time of one read task, over `n`.
fn mean_task(plugin: &Arc<Plugin>, n: u32) -> (Duration, usize) {
    let (mut bus, clock) = bus();
    let mut meter = plugin.open_meter(&[7], "model = \"em-1\"").unwrap();
    let task = Task::Read(Quantity::EnergyImportTotal);
    meter.run(&mut bus, &clock, task).unwrap().unwrap();
    let started = Instant::now();
    for _ in 0..n {
        meter.run(&mut bus, &clock, task).unwrap().unwrap();
    }
    (started.elapsed() / n, meter.last_exchanges().len())
}

fn isolation(c: &mut Criterion) {
    let (local, isolated) = plugins();
    let mut group = c.benchmark_group("read task");
    for (name, plugin) in [("in-process", &local), ("child process", &isolated)] {
        let (mut bus, clock) = bus();
        let mut meter = plugin.open_meter(&[7], "model = \"em-1\"").unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                meter
                    .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
                    .unwrap()
                    .unwrap()
            })
        });
    }
    group.finish();

    // The summary: a read of this meter is `begin`, one `is_complete` (the sim bus hands the reply over
    // in one chunk) and `finish` per exchange: 3 request/response pairs.
    let (in_process, exchanges) = mean_task(&local, 2000);
    let (child, _) = mean_task(&isolated, 2000);
    let calls = 3 * exchanges as u32;
    let overhead = child.saturating_sub(in_process) / calls;
    println!(
        "isolation: one read task in-process {:.1} µs, in a child process {:.1} µs; {calls} entry-point calls per task; overhead {:.1} µs per request/response (goal: under 50 µs)",
        in_process.as_secs_f64() * 1e6,
        child.as_secs_f64() * 1e6,
        overhead.as_secs_f64() * 1e6
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = isolation
}
criterion_main!(benches);
