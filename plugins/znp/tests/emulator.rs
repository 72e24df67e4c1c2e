//! The driver through the plugin host against the coordinator emulator: start-up from cold and from a
//! formed network, resets and garbage in the middle of operation, meters joining and leaving, reads,
//! reports, and prepayment commands.

mod common;

use common::{meter_ieee, Rig, FAST};
use concentrator_driver_znp::mt::{MtCommand, Subsystem};
use concentrator_driver_znp::sim::{EmulatedMeter, EmulatorThread, SerialLink, ZnpEmulator};
use concentrator_driver_znp::{CommandResult, Notice, PrepaymentResponse, ZclValue};
use concentrator_hal::linux::SerialStreamPort;
use concentrator_hal::pty::PtyPair;
use concentrator_hal::LineSettings;
use concentrator_plugin_host::{Quantity, StreamEvent, TaskError};
use serde_json::json;

fn sent_names(rig: &Rig) -> Vec<String> {
    rig.emulator.with(|e| {
        e.received
            .iter()
            .map(|f| {
                concentrator_driver_znp::mt::command_name(f.kind, f.subsystem, f.id)
                    .unwrap_or("?")
                    .to_string()
            })
            .collect()
    })
}

fn up_notice(rig: &Rig) -> Option<bool> {
    rig.notices.iter().rev().find_map(|n| match n {
        Notice::CoordinatorUp { was_formed, .. } => Some(*was_formed),
        _ => None,
    })
}

#[test]
fn starts_from_cold_and_forms_the_network() {
    let mut rig = Rig::new(ZnpEmulator::new(false), FAST);
    rig.wait_up();
    assert_eq!(
        sent_names(&rig),
        [
            "SYS_RESET_REQ",
            "SYS_PING",
            "SYS_VERSION",
            "UTIL_GET_DEVICE_INFO",
            "ZDO_STARTUP_FROM_APP",
            "AF_REGISTER"
        ]
    );
    assert_eq!(up_notice(&rig), Some(false));
    assert!(rig.emulator.with(|e| e.formed && e.endpoints == [1]));
}

#[test]
fn starts_on_an_already_formed_network_without_forming_again() {
    let mut rig = Rig::new(ZnpEmulator::new(true), FAST);
    rig.wait_up();
    let names = sent_names(&rig);
    assert!(
        !names.iter().any(|n| n == "ZDO_STARTUP_FROM_APP"),
        "{names:?}"
    );
    assert_eq!(names.last().map(String::as_str), Some("AF_REGISTER"));
    assert_eq!(up_notice(&rig), Some(true));
}

#[test]
fn an_already_registered_endpoint_counts_as_registered() {
    let mut emulator = ZnpEmulator::new(true);
    emulator.endpoints.push(1);
    let mut rig = Rig::new(emulator, "reset_on_start = false\nsrsp_timeout_ms = 300");
    rig.wait_up();
    assert_eq!(sent_names(&rig)[0], "SYS_PING");
}

#[test]
fn a_silent_coordinator_is_retried_until_it_answers() {
    let mut emulator = ZnpEmulator::new(true);
    emulator.silent = true;
    let mut rig = Rig::new(emulator, FAST);
    rig.until(5, "two pings", |r| {
        sent_names(r).iter().filter(|n| *n == "SYS_PING").count() >= 2
    });
    assert_eq!(rig.link_ups(), 0);
    let refused = rig.session.command(
        &json!({"id": 1, "op": "permit_join", "seconds": 10}).to_string(),
        &rig.clock,
    );
    assert!(
        matches!(refused, Err(TaskError::TaskRejected { .. })),
        "{refused:?}"
    );
    rig.emulator.with(|e| e.silent = false);
    rig.wait_up();
}

#[test]
fn a_coordinator_reset_in_operation_brings_the_link_down_and_up_again() {
    let mut rig = Rig::new(ZnpEmulator::new(false), FAST);
    rig.wait_up();
    rig.emulator.with(|e| e.reset(2));
    rig.until(5, "link down and up", |r| {
        r.events.contains(&StreamEvent::LinkDown) && r.link_ups() == 2
    });
    let down = rig
        .events
        .iter()
        .position(|e| *e == StreamEvent::LinkDown)
        .unwrap();
    let second_up = rig
        .events
        .iter()
        .rposition(|e| *e == StreamEvent::LinkUp)
        .unwrap();
    assert!(down < second_up);
    // Restarted without another reset, on the network it had formed: registered again.
    let names = sent_names(&rig);
    assert_eq!(names.iter().filter(|n| *n == "SYS_RESET_REQ").count(), 1);
    assert_eq!(names.iter().filter(|n| *n == "AF_REGISTER").count(), 2);
    assert_eq!(up_notice(&rig), Some(true));
}

#[test]
fn a_reset_fails_the_commands_under_way() {
    let mut rig = Rig::new(ZnpEmulator::new(true), FAST);
    rig.wait_up();
    let ieee = meter_ieee(1);
    rig.emulator
        .with(|e| e.add_meter(EmulatedMeter::new(ieee, 0x1001)));
    rig.join_meters(&[ieee]);
    // The meter goes out of range, so the read waits; then the coordinator resets.
    rig.emulator.with(|e| {
        e.meter_mut(ieee).unwrap().reachable = false;
        e.silent = true;
    });
    let id = rig.command(
        json!({"op": "read", "device": ieee.to_string(), "cluster": 0x0702, "attributes": [0]}),
    );
    for _ in 0..20 {
        rig.turn();
    }
    rig.emulator.with(|e| {
        e.silent = false;
        e.reset(2);
    });
    match rig.result(id) {
        Notice::CommandFailed { reason, .. } => assert!(
            reason.contains("reset") || reason.contains("did not answer"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    rig.until(5, "up again", |r| r.link_ups() == 2);
}

#[test]
fn garbage_between_frames_is_skipped() {
    let mut rig = Rig::new(ZnpEmulator::new(true), FAST);
    rig.emulator.with(|e| {
        e.send_raw(&[0x00, 0xFE, 0xFE, 0x13, 0xFE, 0x05, 0x61, 0x01, 0x99]);
    });
    rig.wait_up();
    let ieee = meter_ieee(2);
    rig.emulator
        .with(|e| e.add_meter(EmulatedMeter::new(ieee, 0x2002)));
    rig.join_meters(&[ieee]);
    // Garbage, a frame with a bad FCS, then a report: the report still arrives.
    rig.emulator.with(|e| {
        e.send_raw(&[0x55, 0xAA, 0xFE, 0x00, 0x21, 0x01, 0x21, 0xFE]);
        e.report(ieee, 0x0702);
    });
    rig.until(5, "report after garbage", |r| {
        r.events.iter().any(|e| {
            matches!(e, StreamEvent::Reading { reading, .. }
            if reading.quantity == Quantity::ActivePower(concentrator_plugin_host::Phase::Total))
        })
    });
}

#[test]
fn meters_join_are_interviewed_report_and_leave() {
    let mut rig = Rig::new(ZnpEmulator::new(true), FAST);
    rig.wait_up();
    let (a, b) = (meter_ieee(0xA), meter_ieee(0xB));
    rig.emulator.with(|e| {
        e.add_meter(EmulatedMeter::new(a, 0x0A0A));
        e.add_meter(EmulatedMeter::new(b, 0x0B0B));
    });
    rig.join_meters(&[a, b]);
    assert!(rig.events.contains(&StreamEvent::DeviceSeen {
        address: a.to_bytes().to_vec()
    }));
    rig.until(5, "reporting configured", |r| {
        r.emulator
            .with(|e| e.meters.iter().all(|m| m.reporting_configured))
    });
    rig.emulator.with(|e| e.report(a, 0x0702));
    rig.until(5, "energy reading", |r| {
        r.events.iter().any(|e| {
            matches!(e, StreamEvent::Reading { address, reading }
            if *address == a.to_bytes() && reading.to_string() == "energy-import-total = 123456 Wh")
        })
    });
    // The device table carries the mapping the daemon persists.
    let device = rig
        .notices
        .iter()
        .rev()
        .find_map(|n| match n {
            Notice::DeviceUpdated { device } if device.ieee == b => Some(device.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(device.nwk, 0x0B0B);
    assert_eq!(device.meter.metering_endpoint, Some(1));
    assert_eq!(device.meter.prepayment_endpoint, Some(1));
    assert_eq!(device.meter.format.unwrap().divisor, 1000);
    // One leaves by itself, the other is asked to.
    rig.emulator.with(|e| e.remove_meter(a));
    let id = rig.command(json!({"op": "leave", "device": b.to_string()}));
    assert!(matches!(rig.result(id), Notice::CommandDone { .. }));
    rig.until(5, "both lost", |r| {
        [a, b].iter().all(|x| {
            r.events.contains(&StreamEvent::DeviceLost {
                address: x.to_bytes().to_vec(),
            }) && r.notices.contains(&Notice::DeviceRemoved { ieee: *x })
        })
    });
    let refused = rig.session.command(
        &json!({"id": 99, "op": "read", "device": a.to_string(), "cluster": 0x0702, "attributes": [0]}).to_string(),
        &rig.clock,
    );
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("not in the coordinator's device table"));
}

#[test]
fn permit_join_needs_a_time_limit() {
    let mut rig = Rig::new(ZnpEmulator::new(true), FAST);
    rig.wait_up();
    let refused = rig.session.command(
        &json!({"id": 1, "op": "permit_join", "seconds": 255}).to_string(),
        &rig.clock,
    );
    assert!(refused.unwrap_err().to_string().contains("time limit"));
    let id = rig.command(json!({"op": "permit_join", "seconds": 30}));
    assert!(matches!(rig.result(id), Notice::CommandDone { .. }));
    let sent = rig.emulator.with(|e| e.received.last().cloned().unwrap());
    assert_eq!(
        MtCommand::try_from_frame(&sent).unwrap(),
        MtCommand::ZdoMgmtPermitJoinReq {
            addr_mode: 0x0F,
            dst: 0xFFFC,
            duration: 30,
            tc_significance: 0
        }
    );
}

#[test]
fn a_top_up_reaches_a_zigbee_meter_and_other_prepayment_commands() {
    let mut rig = Rig::new(ZnpEmulator::new(true), FAST);
    rig.wait_up();
    let ieee = meter_ieee(7);
    rig.emulator
        .with(|e| e.add_meter(EmulatedMeter::new(ieee, 0x0707)));
    rig.join_meters(&[ieee]);
    let device = ieee.to_string();

    let id = rig.command(json!({"op": "top_up", "device": device, "code": "12345678901234002500"}));
    match rig.result(id) {
        Notice::CommandDone {
            result:
                CommandResult::Prepayment {
                    response:
                        PrepaymentResponse::ConsumerTopUpResponse {
                            result,
                            top_up_value,
                            credit_remaining,
                            ..
                        },
                },
            ..
        } => {
            assert_eq!((result, top_up_value, credit_remaining), (0, 2500, 3500));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rig.emulator.with(|e| e.meter_mut(ieee).unwrap().credit),
        3500
    );
    // The same code again: the meter refuses it as a duplicate (a healthy answer).
    let id = rig.command(json!({"op": "top_up", "device": device, "code": "12345678901234002500"}));
    assert!(matches!(
        rig.result(id),
        Notice::CommandDone {
            result: CommandResult::Prepayment {
                response: PrepaymentResponse::ConsumerTopUpResponse { result: 2, .. }
            },
            ..
        }
    ));
    // The new credit, read back as a reading.
    let id = rig.command(
        json!({"op": "read", "device": device, "cluster": 0x0705, "attributes": [1, 2, 0x99]}),
    );
    match rig.result(id) {
        Notice::CommandDone {
            result: CommandResult::Attributes { records },
            ..
        } => {
            assert_eq!(records[0].value, Some(ZclValue::Signed(0x2B, 3500)));
            assert_eq!(records[2].status, 0x86);
        }
        other => panic!("{other:?}"),
    }
    assert!(rig
        .events
        .iter()
        .any(|e| matches!(e, StreamEvent::Reading { reading, .. }
        if reading.to_string() == "prepaid-remaining-money = 35.00 money")));

    let id = rig.command(json!({"op": "set_low_credit_warning", "device": device, "level": 500}));
    assert!(matches!(
        rig.result(id),
        Notice::CommandDone {
            result: CommandResult::Acknowledged,
            ..
        }
    ));
    let id = rig.command(json!({"op": "select_emergency_credit", "device": device}));
    assert!(matches!(
        rig.result(id),
        Notice::CommandDone {
            result: CommandResult::Acknowledged,
            ..
        }
    ));
    let id = rig.command(json!({"op": "set_cut_off", "device": device, "cut_off_value": -200}));
    assert!(matches!(
        rig.result(id),
        Notice::CommandDone {
            result: CommandResult::Prepayment { .. },
            ..
        }
    ));
    let id = rig.command(
        json!({"op": "change_debt", "device": device, "issuer_event_id": 1,
        "debt_amount": 4200, "recovery_method": 1, "amount_type": 0, "recovery_start": 0,
        "recovery_collection_time": 0, "recovery_frequency": 1, "recovery_amount": 100,
        "recovery_balance_percentage": 1000}),
    );
    assert!(matches!(
        rig.result(id),
        Notice::CommandDone {
            result: CommandResult::Acknowledged,
            ..
        }
    ));
    let meter = rig.emulator.with(|e| e.meter_mut(ieee).unwrap().clone());
    assert_eq!(
        (meter.low_credit_warning, meter.cut_off, meter.debt),
        (500, -200, 4200)
    );
    assert_eq!(meter.credit_status & 0x04, 0x04);

    // Without emergency credit left, the meter refuses: a ZCL status, not a failure.
    rig.emulator
        .with(|e| e.meter_mut(ieee).unwrap().emergency_credit = 0);
    let id = rig.command(json!({"op": "select_emergency_credit", "device": device}));
    assert!(matches!(
        rig.result(id),
        Notice::CommandRefused { status: 1, .. }
    ));

    // Out of range: not delivered.
    rig.emulator
        .with(|e| e.meter_mut(ieee).unwrap().reachable = false);
    let id = rig.command(json!({"op": "top_up", "device": device, "code": "99"}));
    match rig.result(id) {
        Notice::CommandFailed { reason, .. } => assert!(reason.contains("0xe9"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_device_table_comes_back_from_the_daemon() {
    let mut rig = Rig::new(ZnpEmulator::new(true), FAST);
    rig.wait_up();
    let ieee = meter_ieee(9);
    rig.emulator
        .with(|e| e.add_meter(EmulatedMeter::new(ieee, 0x0909)));
    rig.join_meters(&[ieee]);
    let table = rig.notices.iter().rev().find_map(|n| match n {
        Notice::DeviceUpdated { device } => Some(device.clone()),
        _ => None,
    });
    let mut stored = concentrator_driver_znp::DeviceTable::new();
    let device = table.unwrap();
    stored.on_announce(device.ieee, device.nwk, device.capabilities);
    // A new driver (the daemon restarted) gets the table and reads the meter without a new join.
    let stream_emulator = rig.emulator.with(|e| {
        let mut fresh = ZnpEmulator::new(true);
        fresh.meters = e.meters.clone();
        fresh
    });
    let mut rig = Rig::new(stream_emulator, FAST);
    let id = rig.command(json!({"op": "load_devices", "table": stored}));
    assert!(matches!(rig.result(id), Notice::CommandDone { .. }));
    rig.wait_up();
    rig.until(5, "re-interviewed", |r| {
        r.notices
            .iter()
            .any(|n| matches!(n, Notice::DeviceUpdated { device } if device.meter.format.is_some()))
    });
    let id = rig.command(
        json!({"op": "read", "device": ieee.to_string(), "cluster": 0x0702, "attributes": [0]}),
    );
    assert!(matches!(rig.result(id), Notice::CommandDone { .. }));
}

#[test]
fn runs_on_a_pseudo_terminal() {
    let pty = PtyPair::open().unwrap();
    let slave = pty.slave_path().to_str().unwrap().to_string();
    let port = SerialStreamPort::open(
        "znp-emulator",
        &slave,
        LineSettings::new(115_200, 8, concentrator_hal::Parity::None, 1).unwrap(),
    )
    .unwrap();
    let emulator = EmulatorThread::spawn(ZnpEmulator::new(false), SerialLink(port));
    let host = SerialStreamPort::attach_pty("zigbee", &pty).unwrap();
    let mut rig = Rig::attach(Box::new(host), emulator, FAST);
    rig.wait_up();
    let ieee = meter_ieee(0x77);
    rig.emulator
        .with(|e| e.add_meter(EmulatedMeter::new(ieee, 0x7777)));
    rig.join_meters(&[ieee]);
    let id = rig.command(json!({"op": "top_up", "device": ieee.to_string(), "code": "000100"}));
    assert!(matches!(rig.result(id), Notice::CommandDone { .. }));
    assert_eq!(
        rig.emulator.with(|e| e.meter_mut(ieee).unwrap().credit),
        1100
    );
    let _ = Subsystem::SYS;
}
