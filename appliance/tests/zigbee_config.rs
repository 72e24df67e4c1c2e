//! `[[zigbee]]` coordinators and Zigbee meters in the configuration: the example validates, and each
//! mistake is refused by `concentratord validate` with file:line:column and what to write instead.

use std::path::PathBuf;
use std::process::Command;

const DAEMON: &str = env!("CARGO_BIN_EXE_concentratord");

const GOOD: &str = r#"[gateway]
id = "gw-1"
store = "/tmp/concentrator-store"

[[bus]]
name = "rs485-1"
backend = "sim"

[[zigbee]]
name = "zb-1"
backend = "linux"
path = "/dev/ttyUSB0"
options = { report_max_s = 60 }

[[meter]]
bus = "rs485-1"
address = "000000000001"
driver = "dlt645"
dwelling = "A-101"

[[meter]]
zigbee = "zb-1"
ieee = "00:12:4B:00:01:A2:B3:C4"
dwelling = "A-102"
"#;

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("concentrator-zbconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn validate(name: &str, text: &str) -> (Option<i32>, String) {
    let out = Command::new(DAEMON)
        .arg("validate")
        .arg(write(name, text))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

/// `line:column` of the `nth` occurrence of `needle` in `text` (1-based, as the diagnostics print).
fn at(text: &str, needle: &str, nth: usize) -> String {
    let offset = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle} not in the text"))
        .0;
    let line = text[..offset].matches('\n').count() + 1;
    let col = offset - text[..offset].rfind('\n').map_or(0, |p| p + 1) + 1;
    format!("{line}:{col}")
}

fn refused(name: &str, text: &str, needle: &str, nth: usize, message: &str, help: &str) {
    let (code, err) = validate(name, text);
    assert_eq!(code, Some(1), "{name} was accepted: {err}");
    let place = format!("{name}:{}: {message}", at(text, needle, nth));
    assert!(err.contains(&place), "expected `{place}` in:\n{err}");
    assert!(err.contains(help), "expected help `{help}` in:\n{err}");
}

#[test]
fn the_good_config_and_the_example_validate() {
    let (code, err) = validate("good.toml", GOOD);
    assert_eq!(code, Some(0), "{err}");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sim.toml");
    let out = Command::new(DAEMON)
        .args(["validate", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn zigbee_meter_mistakes_are_located() {
    let text = GOOD.replace("zigbee = \"zb-1\"", "zigbee = \"zb-2\"");
    refused(
        "unknown.toml",
        &text,
        "\"zb-2\"",
        0,
        "no Zigbee coordinator is named `zb-2`",
        "write `zigbee = \"zb-1\"`",
    );

    let text = GOOD.replace(
        "ieee = \"00:12:4B:00:01:A2:B3:C4\"",
        "ieee = \"00124b01a2b3c4\"",
    );
    refused(
        "ieee.toml",
        &text,
        "\"00124b01a2b3c4\"",
        0,
        "`00124b01a2b3c4` is not an IEEE address",
        "meter's label",
    );

    let text = GOOD.replace("ieee = \"00:12:4B:00:01:A2:B3:C4\"\n", "");
    refused(
        "noieee.toml",
        &text,
        "\"zb-1\"",
        1,
        "a Zigbee meter needs its IEEE address",
        "add `ieee = ",
    );

    let text = GOOD.replace(
        "zigbee = \"zb-1\"\n",
        "zigbee = \"zb-1\"\nbus = \"rs485-1\"\n",
    );
    refused(
        "both.toml",
        &text,
        "\"rs485-1\"",
        2,
        "a meter is either on an RS485 bus or behind a Zigbee coordinator",
        "remove `bus`",
    );

    let text = GOOD.replace(
        "zigbee = \"zb-1\"\nieee = \"00:12:4B:00:01:A2:B3:C4\"\n",
        "",
    );
    refused(
        "neither.toml",
        &text,
        "\"A-102\"",
        0,
        "the meter of dwelling `A-102` is on no bus and behind no coordinator",
        "add `bus = ",
    );

    let text = format!(
        "{GOOD}\n[[meter]]\nzigbee = \"zb-1\"\nieee = \"00124b0001a2b3c4\"\ndwelling = \"A-103\"\n"
    );
    refused(
        "dup.toml",
        &text,
        "\"00124b0001a2b3c4\"",
        0,
        "IEEE address 00124b0001a2b3c4 is used twice behind `zb-1`",
        "dwelling `A-102`",
    );

    let text = GOOD.replace(
        "dwelling = \"A-102\"",
        "dwelling = \"A-102\"\nread = [\"voltage-a\"]",
    );
    refused(
        "read.toml",
        &text,
        "\"voltage-a\"",
        0,
        "a Zigbee meter reports by itself",
        "remove `read`",
    );
}

#[test]
fn coordinator_mistakes_are_located() {
    let text = GOOD.replace("path = \"/dev/ttyUSB0\"\n", "");
    refused(
        "nopath.toml",
        &text,
        "\"linux\"",
        0,
        "coordinator `zb-1` needs a device path",
        "/dev/serial/by-id/",
    );

    let text = GOOD.replace(
        "path = \"/dev/ttyUSB0\"",
        "path = \"/dev/ttyUSB0\"\nsim_meters = 4",
    );
    refused(
        "simkey.toml",
        &text,
        "\"linux\"",
        0,
        "`sim_meters` is set but coordinator `zb-1` is not emulated",
        "set `backend = \"sim\"`",
    );

    let text = GOOD.replace("report_max_s = 60", "report_max_secs = 60");
    refused(
        "options.toml",
        &text,
        "{ report_max_secs",
        0,
        "the ZNP coordinator's config",
        "docs/plugins.md",
    );

    let text = GOOD
        .replace("name = \"zb-1\"", "name = \"rs485-1\"")
        .replace("zigbee = \"zb-1\"", "zigbee = \"rs485-1\"");
    refused(
        "clash.toml",
        &text,
        "\"rs485-1\"",
        1,
        "`rs485-1` is the name of a bus already",
        "different names",
    );

    let text = GOOD.replace(
        "backend = \"linux\"",
        "backend = \"linux\"\ndriver = \"zpn\"",
    );
    refused(
        "driver.toml",
        &text,
        "\"zpn\"",
        0,
        "no Zigbee driver named `zpn`",
        "write `driver = \"znp\"`",
    );
}

#[test]
fn a_sim_coordinator_emulates_only_its_meters() {
    let text = GOOD
        .replace(
            "backend = \"linux\"\npath = \"/dev/ttyUSB0\"",
            "backend = \"sim\"\nsim_meters = 2",
        )
        .replace("00:12:4B:00:01:A2:B3:C4", "00124b0000000003");
    refused(
        "simmeter.toml",
        &text,
        "\"00124b0000000003\"",
        0,
        "coordinator `zb-1` emulates no meter 00124b0000000003",
        "the emulated meters are 00124b0000000001 to 00124b0000000002",
    );
    let ok = text.replace("00124b0000000003", "00124b0000000002");
    let (code, err) = validate("simok.toml", &ok);
    assert_eq!(code, Some(0), "{err}");
}
