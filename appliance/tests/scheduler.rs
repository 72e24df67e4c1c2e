//! The bus scheduler on simulated buses with the real DL/T 645 driver and emulated meters: the
//! poll-cycle time against the wire time, priorities, retries, offline meters and adaptive timeouts.
//! All times are on the bus's virtual clock, so they are exact.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use concentrator_appliance::drivers::pack_address;
use concentrator_appliance::scheduler::{BusScheduler, Priority, ScheduledMeter, SchedulerPolicy};
use concentrator_driver_dlt645::sim::{Dlt645Meter, MeterConfig, MeterHandle};
use concentrator_driver_dlt645::RelayState;
use concentrator_hal::sim::{DeviceId, Fault, SimBus, SimBusHandle, SimClock, SimDevice, SimReply};
use concentrator_hal::{Clock, LineSettings};
use concentrator_plugin_host::{
    PluginLoader, PluginPolicy, Quantity, RelayCommand, StaticDriver, Task, TrustedKeys,
};

const LATENCY: Duration = Duration::from_millis(40);

/// Hears every frame on the bus and never answers: the order of frames on the wire.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

impl SimDevice for Recorder {
    fn name(&self) -> String {
        "recorder".into()
    }
    fn on_frame(&mut self, frame: &[u8], _wall: SystemTime) -> Option<SimReply> {
        self.0.lock().unwrap().push(frame.to_vec());
        None
    }
}

struct Rig {
    scheduler: BusScheduler,
    clock: SimClock,
    bus: SimBusHandle,
    ids: Vec<DeviceId>,
    meters: Vec<MeterHandle>,
    heard: Recorder,
}

fn address(i: usize) -> String {
    format!("{:012}", i + 1)
}

fn rig(count: usize) -> Rig {
    let mut loader =
        PluginLoader::new("/nonexistent", TrustedKeys::none(), PluginPolicy::default());
    let plugin = loader
        .register_static(StaticDriver::new(
            concentrator_driver_dlt645::plugin_declaration(),
        ))
        .unwrap();
    let clock = SimClock::new_virtual();
    let mut bus = SimBus::new("rs485-1", LineSettings::dlt645_default(), clock.clone());
    let heard = Recorder::default();
    bus.attach(heard.clone());
    let mut ids = Vec::new();
    let mut handles = Vec::new();
    let mut meters = Vec::new();
    for i in 0..count {
        let mut config = MeterConfig::new(address(i).parse().unwrap());
        config.latency = LATENCY;
        config.import_centi_kwh = 100 * (i as u64 + 1);
        let meter = Dlt645Meter::new(config);
        handles.push(meter.handle());
        ids.push(bus.attach(meter));
        let session = ScheduledMeter::open(
            &plugin,
            &pack_address(&address(i)).unwrap(),
            "password = \"02000000\"",
        );
        meters.push(ScheduledMeter::new(
            &address(i),
            &format!("A-{i}"),
            "dlt645",
            vec![Quantity::EnergyImportTotal],
            session,
        ));
    }
    let handle = bus.handle();
    let scheduler = BusScheduler::new(
        Box::new(bus),
        Box::new(clock.clone()),
        meters,
        Duration::from_secs(60),
        SchedulerPolicy::default(),
    );
    Rig {
        scheduler,
        clock,
        bus: handle,
        ids,
        meters: handles,
        heard,
    }
}

#[test]
fn thirty_two_meters_poll_within_15_percent_of_the_wire_time() {
    let mut rig = rig(32);
    rig.scheduler.poll_cycle();
    let before = rig.bus.stats();
    let report = rig.scheduler.poll_cycle();
    let after = rig.bus.stats();
    assert_eq!((report.polled, report.answered), (32, 32));
    let bytes = (after.bytes_sent - before.bytes_sent + after.bytes_received
        - before.bytes_received) as usize;
    let exchanges = after.frames_sent - before.frames_sent;
    assert_eq!(exchanges, 32);
    let wire = LineSettings::dlt645_default().wire_time(bytes) + LATENCY * exchanges as u32;
    let ratio = report.took.as_secs_f64() / wire.as_secs_f64();
    println!(
        "32 DL/T 645 meters at 2400 8E1: cycle {:?}, wire {:?}, ratio {ratio:.3}",
        report.took, wire
    );
    assert!(
        ratio < 1.15,
        "cycle {:?} against wire {:?}: ratio {ratio:.3}",
        report.took,
        wire
    );
    // Every meter's reading arrived.
    for (i, meter) in rig.scheduler.meters().iter().enumerate() {
        assert_eq!(
            meter.last_readings()[0].to_string(),
            format!("energy-import-total = {} Wh", 1000 * (i + 1))
        );
    }
}

#[test]
fn a_command_runs_before_the_routine_poll() {
    let mut rig = rig(4);
    let outcome = rig.scheduler.handle().submit(
        &address(3),
        Task::Relay(RelayCommand::Trip),
        Priority::Command,
    );
    rig.scheduler.step();
    let result = outcome.recv().unwrap();
    assert!(matches!(result, Ok(Ok(_))), "{result:?}");
    assert_eq!(rig.meters[3].lock().relay, RelayState::Open);
    // The first frame on the wire is the relay command (control code 0x1C) to meter 4, although meters
    // 1 to 3 were due for their routine poll.
    let heard = rig.heard.0.lock().unwrap();
    let first = heard.first().unwrap();
    let start = first.iter().position(|&b| b == 0x68).unwrap();
    assert_eq!(first[start + 1], 0x04, "frame {first:02x?}");
    assert_eq!(first[start + 8], 0x1C, "frame {first:02x?}");
    assert_eq!(heard.len(), 5, "the command and four polls");
}

#[test]
fn a_corrupted_reply_is_retried_and_counted() {
    let mut rig = rig(2);
    rig.bus.inject(
        rig.ids[1],
        Fault::CorruptByte {
            index: 12,
            mask: 0x10,
        },
        Some(1),
    );
    let report = rig.scheduler.poll_cycle();
    assert_eq!(report.answered, 2);
    let stats = rig.scheduler.meters()[1].stats();
    assert_eq!((stats.requests, stats.bad_replies, stats.ok), (2, 1, 1));
}

#[test]
fn a_silent_meter_goes_offline_without_slowing_the_others_beyond_its_timeout() {
    let mut rig = rig(3);
    // What the daemon turns into events 30 and 31 for the head-end.
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    rig.scheduler.set_state_sink(Box::new(
        move |address: &str, online: bool, failures: u32| {
            seen.lock()
                .unwrap()
                .push((address.to_string(), online, failures));
        },
    ));
    let normal = rig.scheduler.poll_cycle().took;
    rig.scheduler.poll_cycle();
    rig.bus.inject(rig.ids[1], Fault::Silence, None);
    let mut cycles = Vec::new();
    for _ in 0..6 {
        cycles.push(rig.scheduler.poll_cycle());
    }
    let meter = &rig.scheduler.meters()[1];
    assert_eq!(meter.online(), Some(false));
    assert!(meter.stats().timeouts >= 3);
    let share = normal / 3;
    for (i, cycle) in cycles.iter().enumerate() {
        assert_eq!(cycle.answered, 2, "cycle {i}");
        // At most the silent meter's two attempts: the first with the learned (short) timeout, the
        // retry with the protocol's full 500 ms window.
        let extra = cycle.took.saturating_sub(normal - share);
        assert!(
            extra <= Duration::from_millis(2 * 600),
            "cycle {i} took {:?} ({extra:?} extra)",
            cycle.took
        );
    }
    // Offline, it is tried once every 4 cycles; in the cycles in between it costs nothing.
    let skipped: Vec<_> = cycles[3..].iter().filter(|c| c.took < normal).collect();
    assert!(!skipped.is_empty(), "{cycles:?}");
    // It comes back.
    rig.bus.clear_fault(rig.ids[1]);
    for _ in 0..4 {
        rig.scheduler.poll_cycle();
    }
    assert_eq!(rig.scheduler.meters()[1].online(), Some(true));
    let address = rig.scheduler.meters()[1].address.clone();
    let changes = changes.lock().unwrap().clone();
    assert_eq!(
        changes.len(),
        2,
        "offline once, back once, nothing for the others: {changes:?}"
    );
    assert_eq!(
        (changes[0].0.as_str(), changes[0].1),
        (address.as_str(), false)
    );
    assert!(changes[0].2 >= 3, "{changes:?}");
    assert_eq!(changes[1], (address, true, 0));
}

#[test]
fn the_reply_timeout_adapts_to_the_meters_latency() {
    let mut rig = rig(1);
    for _ in 0..5 {
        rig.scheduler.poll_cycle();
    }
    rig.bus.inject(rig.ids[0], Fault::Silence, Some(1));
    let before = rig.clock.monotonic();
    let cycle = rig.scheduler.poll_cycle();
    assert_eq!(cycle.answered, 1, "the retry answers");
    let took = rig.clock.monotonic() - before;
    let normal = {
        let before = rig.clock.monotonic();
        rig.scheduler.poll_cycle();
        rig.clock.monotonic() - before
    };
    // The silent attempt cost the learned timeout (about the 40 ms latency, floored at 60 ms), not 500 ms.
    let silent_attempt = took - normal;
    assert!(
        silent_attempt < Duration::from_millis(200),
        "{silent_attempt:?}"
    );
}
