//! `concentrator status` (issue #15): a bus whose adapter is missing made its meters vanish, a cut-off
//! dwelling was printed as "all buses and meters are working", and `status` exited 0 with problems
//! listed. These checks failed before the fix.

use std::process::Command;

use concentrator_appliance::status::{AccountStatus, BusStatus, MeterStatus, Status, ZigbeeView};

fn status_of(status: &Status, name: &str) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("status-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("status.json");
    std::fs::write(&file, serde_json::to_vec(status).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(["status", "--file"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_missing_adapter_names_each_dwelling_a_cut_dwelling_is_a_problem_and_problems_exit_1() {
    let now = concentrator_protocol::unix_now();
    let mut status = Status {
        gateway: "gw".into(),
        updated_unix: now,
        ..Status::default()
    };
    status.buses.insert(
        "rs485-9".into(),
        BusStatus {
            state: "retrying".into(),
            detail: "/dev/x: no such file".into(),
            meters: vec![],
        },
    );
    status.accounts.insert(
        "MTR-1".into(),
        AccountStatus {
            bus: "rs485-1".into(),
            address: "1".into(),
            dwelling: "A-1".into(),
            state: "disconnected".into(),
            currency: "EUR".into(),
            held_by: Some("installer alice".into()),
            ..AccountStatus::default()
        },
    );
    status.accounts.insert(
        "MTR-9".into(),
        AccountStatus {
            bus: "rs485-9".into(),
            address: "000000000901".into(),
            dwelling: "D-901".into(),
            state: "in-credit".into(),
            currency: "EUR".into(),
            ..AccountStatus::default()
        },
    );
    let (code, text) = status_of(&status, "bad");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("dwelling D-901 (meter 000000000901 on bus rs485-9) is not read"),
        "{text}"
    );
    assert!(
        text.contains(
            "dwelling A-1 (meter MTR-1) is cut off: its supply is held off by installer alice"
        ),
        "{text}"
    );
    assert!(!text.contains("all buses and meters are working"), "{text}");
    assert!(text.contains("3 problems, listed above"), "{text}");

    let fine = Status {
        gateway: "gw".into(),
        updated_unix: now,
        ..Status::default()
    };
    let (code, text) = status_of(&fine, "fine");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("all buses and meters are working"), "{text}");
}

/// Issue #15: with the Zigbee stick missing, each Zigbee meter was told to "pair it with permit-join".
#[test]
fn a_missing_zigbee_stick_is_one_problem_naming_the_stick() {
    let now = concentrator_protocol::unix_now();
    let mut status = Status {
        gateway: "gw".into(),
        updated_unix: now,
        ..Status::default()
    };
    let meter = |ieee: &str, dwelling: &str| {
        MeterStatus {
        address: ieee.into(),
        dwelling: dwelling.into(),
        driver: "znp".into(),
        state: "not-joined".into(),
        error: Some("not in the coordinator's device table: pair it with `concentrator zigbee permit-join` (docs/install.md)".into()),
        readings: vec![],
        stats: Default::default(),
    }
    };
    status.zigbee.insert(
        "zb-1".into(),
        ZigbeeView {
            port: "/dev/ttyUSB7".into(),
            link_up: false,
            last_error: Some("/dev/ttyUSB7: No such file or directory".into()),
            ..ZigbeeView::default()
        },
    );
    status.buses.insert(
        "zb-1".into(),
        BusStatus {
            state: "down".into(),
            detail: "/dev/ttyUSB7".into(),
            meters: vec![
                meter("00124b0000000001", "C-301"),
                meter("00124b0000000002", "C-302"),
            ],
        },
    );
    let (code, text) = status_of(&status, "zigbee");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("Zigbee coordinator zb-1 is not up (/dev/ttyUSB7: No such file or directory): plug the Zigbee stick in"), "{text}");
    assert!(text.contains("not read meanwhile: C-301, C-302"), "{text}");
    assert!(
        !text.contains("- Zigbee meter"),
        "no per-meter pairing advice: {text}"
    );
    assert!(text.contains("1 problem, listed above"), "{text}");
}

/// Issue #15: the meter of a quarantined plugin was reported as "check its wiring".
#[test]
fn a_faulting_driver_is_a_software_fault_not_the_wiring() {
    let now = concentrator_protocol::unix_now();
    let mut status = Status {
        gateway: "gw".into(),
        updated_unix: now,
        ..Status::default()
    };
    let mut m = MeterStatus {
        address: "7".into(),
        dwelling: "B-7".into(),
        driver: "acme".into(),
        state: "offline".into(),
        error: None,
        readings: vec![],
        stats: Default::default(),
    };
    m.stats.driver_faults = 3;
    m.stats.requests = 3;
    status.buses.insert(
        "rs485-2".into(),
        BusStatus {
            state: "running".into(),
            detail: "sim".into(),
            meters: vec![m],
        },
    );
    let (code, text) = status_of(&status, "faults");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("its driver `acme` failed 3 times"), "{text}");
    assert!(text.contains("a software fault, not the wiring"), "{text}");
    assert!(!text.contains("check its wiring"), "{text}");
}

/// Issue #15: a quarantined plugin's meters said "cannot be driven" with no advice, and nothing said
/// the driver itself was out of service.
#[test]
fn a_quarantined_plugin_is_not_active_and_its_meters_are_a_software_fault() {
    let now = concentrator_protocol::unix_now();
    let mut status = Status {
        gateway: "gw".into(),
        updated_unix: now,
        drivers: vec![
            "dlt645 1.0.0 (in-process; active)".into(),
            "acme 1.2.0 (in-process; quarantined: 3 faults, the last: panicked in read: index out of bounds)".into(),
        ],
        ..Status::default()
    };
    status.buses.insert(
        "rs485-2".into(),
        BusStatus {
            state: "running".into(),
            detail: "sim".into(),
            meters: vec![MeterStatus {
                address: "7".into(),
                dwelling: "B-7".into(),
                driver: "acme".into(),
                state: "failed".into(),
                error: Some("driver plugin `acme` quarantined: 3 faults, the last: panicked in read: index out of bounds".into()),
                readings: vec![],
                stats: Default::default(),
            }],
        },
    );
    let (code, text) = status_of(&status, "quarantined");
    assert_eq!(code, Some(1), "{text}");
    let acme = text
        .lines()
        .find(|l| l.trim_start().starts_with("acme 1.2.0"))
        .unwrap_or_else(|| panic!("no drivers line for acme: {text}"));
    assert!(!acme.contains("active"), "{acme}");
    assert!(acme.contains("quarantined"), "{acme}");
    assert!(
        text.contains(
            "driver plugin `acme` is quarantined, out of service until the daemon restarts"
        ),
        "{text}"
    );
    assert!(
        text.contains("meter 7 (B-7) on bus rs485-2 is not read because its driver plugin `acme` is quarantined (3 faults, the last: panicked in read: index out of bounds): a software fault, not the wiring: install a fixed version"),
        "{text}"
    );
    assert!(!text.contains("wiring, address"), "{text}");
    assert!(text.contains("2 problems"), "{text}");
}
