//! Decoded attribute reports per second through the `znp` driver and the plugin host's
//! `StreamSession`: a meter's Metering report (energy and demand: two readings) as AF_INCOMING_MSG
//! bytes in, typed reading events out. The coordinator emulator brings the link up and the meter in
//! first, in-process and on a virtual clock.

use std::time::Duration;

use concentrator_driver_znp::sim::{EmulatedMeter, ZnpEmulator};
use concentrator_driver_znp::IeeeAddress;
use concentrator_hal::sim::SimClock;
use concentrator_plugin_host::{
    PluginLoader, PluginPolicy, StaticDriver, StreamEvent, StreamSession, TrustedKeys,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const REPORTS_PER_BATCH: usize = 256;

fn exchange(session: &mut StreamSession, emulator: &mut ZnpEmulator, clock: &SimClock) -> usize {
    let mut readings = 0;
    for _ in 0..4 {
        clock.advance(Duration::from_millis(5));
        session.on_tick(clock).unwrap();
        while let Some(frame) = session.poll_transmit().unwrap() {
            emulator.on_bytes(&frame);
        }
        let out = emulator.take_output();
        if !out.is_empty() {
            session.on_bytes(&out).unwrap();
        }
        while let Some(event) = session.poll_event().unwrap() {
            readings += usize::from(matches!(event, StreamEvent::Reading { .. }));
        }
        while session.poll_notice().unwrap().is_some() {}
    }
    readings
}

fn setup() -> (StreamSession, ZnpEmulator, SimClock, IeeeAddress) {
    let plugin = PluginLoader::new(
        "/nonexistent",
        TrustedKeys::none(),
        PluginPolicy {
            max_faults: 3,
            require_root_owned: false,
            ..PluginPolicy::default()
        },
    )
    .register_static(StaticDriver::new(
        concentrator_driver_znp::plugin_declaration(),
    ))
    .unwrap();
    let clock = SimClock::new_virtual();
    let mut session = plugin.open_stream("", &clock).unwrap();
    let mut emulator = ZnpEmulator::new(true);
    let ieee = IeeeAddress(0x0012_4B00_0000_0001);
    emulator.add_meter(EmulatedMeter::new(ieee, 0x1001));
    for _ in 0..10 {
        exchange(&mut session, &mut emulator, &clock);
    }
    session
        .command(r#"{"id":1,"op":"permit_join","seconds":60}"#, &clock)
        .unwrap();
    for _ in 0..20 {
        exchange(&mut session, &mut emulator, &clock);
    }
    (session, emulator, clock, ieee)
}

fn reports(c: &mut Criterion) {
    let (mut session, mut emulator, clock, ieee) = setup();
    let mut batch = Vec::new();
    for _ in 0..REPORTS_PER_BATCH {
        emulator.report(ieee, 0x0702);
        batch.extend(emulator.take_output());
    }
    // Check once that every report becomes two readings.
    session.on_bytes(&batch).unwrap();
    let mut readings = 0;
    while let Some(event) = session.poll_event().unwrap() {
        readings += usize::from(matches!(event, StreamEvent::Reading { .. }));
    }
    assert_eq!(readings, 2 * REPORTS_PER_BATCH, "the meter was not set up");
    let _ = clock;

    let mut group = c.benchmark_group("znp");
    group.throughput(Throughput::Elements(REPORTS_PER_BATCH as u64));
    group.bench_function("attribute reports through StreamSession", |b| {
        b.iter(|| {
            for chunk in batch.chunks(64) {
                session.on_bytes(chunk).unwrap();
            }
            while session.poll_event().unwrap().is_some() {}
        })
    });
    group.finish();
}

criterion_group!(benches, reports);
criterion_main!(benches);
