//! The simulated bus: wire-accurate virtual time and every kind of fault, observed through the
//! `Rs485Bus` contract only.

use std::time::Duration;

use concentrator_hal::sim::{Fault, ScriptedDevice, SimBus, SimClock};
use concentrator_hal::{Clock, LineSettings, Preamble, ReplyEnd, Rs485Bus, Rs485Timing};

const REQUEST: &[u8] = &[
    0x68, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x68, 0x11, 0x04, 0x33, 0x33, 0x34, 0x33, 0xB3, 0x16,
];
const REPLY: &[u8] = &[
    0x68, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x68, 0x91, 0x08, 0x33, 0x33, 0x34, 0x33, 0x9A, 0x78,
    0x56, 0x34, 0xD3, 0x16,
];
const LATENCY: Duration = Duration::from_millis(40);

fn whole(reply: &[u8]) -> bool {
    reply.len() >= REPLY.len()
}

fn bus_with_meter() -> (SimBus, SimClock, concentrator_hal::sim::DeviceId) {
    let clock = SimClock::new_virtual();
    let mut bus = SimBus::new("bus1", LineSettings::dlt645_default(), clock.clone());
    let meter =
        bus.attach(ScriptedDevice::new("meter 000000000001").answer(REQUEST, REPLY, LATENCY));
    (bus, clock, meter)
}

fn timing() -> Rs485Timing {
    Rs485Timing {
        preamble: Some(Preamble {
            byte: 0xFE,
            count: 4,
        }),
        turnaround: Duration::from_millis(2),
        first_byte_timeout: Duration::from_millis(500),
        inter_byte_timeout: Duration::from_millis(50),
        min_idle_before: Duration::ZERO,
    }
}

#[test]
fn one_exchange_takes_the_computed_wire_time_at_2400_8e1() {
    let (mut bus, clock, _) = bus_with_meter();
    let mut reply = Vec::new();
    let start = clock.monotonic();
    let info = bus
        .transact(REQUEST, &timing(), &mut reply, &mut whole)
        .unwrap();
    let took = clock.monotonic() - start;

    assert_eq!(info.end, ReplyEnd::Complete);
    assert_eq!(reply, REPLY);
    assert_eq!(info.latency, Some(LATENCY));
    // 4 preamble + 16 request bytes out, 20 reply bytes back: 40 characters of 11 bits at 2400 baud,
    // 440 bits = 183 333.333 µs, plus the meter's 40 ms latency.
    let wire = Duration::from_nanos(440 * 1_000_000_000 / 2400);
    assert_eq!(took.as_micros(), (wire + LATENCY).as_micros());
    assert_eq!(took.as_micros(), 223_333);
}

#[test]
fn a_silent_meter_costs_exactly_the_first_byte_timeout() {
    let (mut bus, clock, meter) = bus_with_meter();
    bus.handle().inject(meter, Fault::Silence, Some(1));
    let mut reply = Vec::new();
    let info = bus
        .transact(REQUEST, &timing(), &mut reply, &mut whole)
        .unwrap();
    assert_eq!(info.end, ReplyEnd::NoReply);
    assert!(reply.is_empty());
    let t = timing();
    let expected =
        LineSettings::dlt645_default().wire_time(20) + t.turnaround + t.first_byte_timeout;
    assert_eq!(clock.monotonic(), expected);
    // The fault was for one reply only.
    let info = bus
        .transact(REQUEST, &timing(), &mut reply, &mut whole)
        .unwrap();
    assert_eq!(info.end, ReplyEnd::Complete);
    assert_eq!(bus.handle().stats().faults_applied, 1);
}

#[test]
fn garbage_corruption_truncation_and_lateness_are_visible() {
    let (mut bus, clock, meter) = bus_with_meter();
    let handle = bus.handle();
    let mut reply = Vec::new();

    handle.inject(meter, Fault::Garbage { len: 7 }, Some(1));
    let info = bus
        .transact(REQUEST, &timing(), &mut reply, &mut whole)
        .unwrap();
    assert_eq!(
        info.end,
        ReplyEnd::Silence,
        "7 bytes of noise never make a whole frame"
    );
    assert_eq!(reply.len(), 7);
    assert_ne!(&reply[..], &REPLY[..7]);

    handle.inject(
        meter,
        Fault::CorruptByte {
            index: 15,
            mask: 0x01,
        },
        Some(1),
    );
    bus.transact(REQUEST, &timing(), &mut reply, &mut whole)
        .unwrap();
    assert_eq!(reply.len(), REPLY.len());
    let diff: Vec<usize> = (0..REPLY.len()).filter(|&i| reply[i] != REPLY[i]).collect();
    assert_eq!(diff, vec![15]);

    handle.inject(meter, Fault::Truncate { keep: 12 }, Some(1));
    let before = clock.monotonic();
    let info = bus
        .transact(REQUEST, &timing(), &mut reply, &mut whole)
        .unwrap();
    assert_eq!((info.end, reply.len()), (ReplyEnd::Silence, 12));
    let s = LineSettings::dlt645_default();
    assert_eq!(
        clock.monotonic() - before,
        s.wire_time(20) + LATENCY + s.wire_time(12) + timing().inter_byte_timeout
    );

    handle.inject(
        meter,
        Fault::Late {
            extra: Duration::from_millis(100),
        },
        Some(1),
    );
    let info = bus
        .transact(REQUEST, &timing(), &mut reply, &mut whole)
        .unwrap();
    assert_eq!(info.latency, Some(LATENCY + Duration::from_millis(100)));

    // Later than the first-byte timeout: no reply, and the late bytes are stray noise.
    handle.inject(
        meter,
        Fault::Late {
            extra: Duration::from_secs(1),
        },
        Some(1),
    );
    let info = bus
        .transact(REQUEST, &timing(), &mut reply, &mut whole)
        .unwrap();
    assert_eq!(info.end, ReplyEnd::NoReply);
    assert_eq!(handle.stats().stray_bytes, REPLY.len() as u64);
    // The next exchange waits for the stray reply to pass and then works.
    let info = bus
        .transact(REQUEST, &timing(), &mut reply, &mut whole)
        .unwrap();
    assert_eq!(info.end, ReplyEnd::Complete);
    assert_eq!(reply, REPLY);
}

#[test]
fn two_devices_answering_at_once_collide() {
    let (mut bus, _clock, _meter) = bus_with_meter();
    let other = bus.attach(ScriptedDevice::new("meter 000000000002"));
    let handle = bus.handle();
    handle.inject(other, Fault::AnswerAll, Some(1));
    let mut reply = Vec::new();
    bus.transact(REQUEST, &timing(), &mut reply, &mut whole)
        .unwrap();
    assert_eq!(handle.stats().collisions, 1);
    assert_ne!(reply, REPLY, "a collision must garble the reply");
    // Once the fault is spent the bus is clean again.
    bus.transact(REQUEST, &timing(), &mut reply, &mut whole)
        .unwrap();
    assert_eq!(reply, REPLY);
    assert_eq!(handle.stats().collisions, 1);
}

#[test]
fn silent_interval_and_broadcast_timing() {
    let clock = SimClock::new_virtual();
    let settings = LineSettings::modbus_default();
    let mut bus = SimBus::new("modbus", settings, clock.clone());
    let timing = Rs485Timing {
        min_idle_before: settings.modbus_silent_interval(),
        ..Rs485Timing::default()
    };
    bus.send(&[0x00, 0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00], &timing)
        .unwrap();
    let after_first = clock.monotonic();
    // The first frame went out at once (the line was idle since start) and took 8 characters.
    assert_eq!(after_first, settings.wire_time(8));
    bus.send(&[0x00; 8], &timing).unwrap();
    // The second waited the 3.5-character silence before its own 8 characters.
    assert_eq!(
        clock.monotonic() - after_first,
        settings.modbus_silent_interval() + settings.wire_time(8)
    );
    assert_eq!(bus.handle().stats().frames_sent, 2);
}

#[test]
fn a_device_at_other_line_settings_is_deaf() {
    let clock = SimClock::new_virtual();
    let mut bus = SimBus::new("scan", LineSettings::dlt645_default(), clock);
    bus.attach(
        ScriptedDevice::new("9600 baud meter")
            .at(LineSettings::with_format(9600, "8E1").unwrap())
            .answer(b"hello", b"world", Duration::from_millis(10)),
    );
    let mut reply = Vec::new();
    let info = bus
        .transact(b"hello", &Rs485Timing::default(), &mut reply, &mut |r| {
            r.len() == 5
        })
        .unwrap();
    assert_eq!(info.end, ReplyEnd::NoReply);
    bus.set_settings(LineSettings::with_format(9600, "8E1").unwrap())
        .unwrap();
    let info = bus
        .transact(b"hello", &Rs485Timing::default(), &mut reply, &mut |r| {
            r.len() == 5
        })
        .unwrap();
    assert_eq!(
        (info.end, reply.as_slice()),
        (ReplyEnd::Complete, &b"world"[..])
    );
}
