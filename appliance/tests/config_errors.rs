//! Broken configurations are refused with file:line:column and what to write instead, by
//! `concentratord validate` and by the daemon itself, which then does not start.

use std::path::PathBuf;
use std::process::Command;

const DAEMON: &str = env!("CARGO_BIN_EXE_concentratord");

const GOOD: &str = r#"[gateway]
id = "gw-1"
store = "/tmp/concentrator-store"

[[bus]]
name = "rs485-1"
backend = "sim"
baud = 2400

[[meter]]
bus = "rs485-1"
address = "000000000001"
driver = "dlt645"
dwelling = "A-101"
"#;

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("concentrator-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `validate` and the daemon on the text; both must refuse it. Returns validate's stderr.
fn refused(name: &str, text: &str) -> String {
    let path = write(name, text);
    let out = Command::new(DAEMON)
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "validate accepted {name}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let run = Command::new(DAEMON)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "the daemon started on {name}");
    let run_err = String::from_utf8_lossy(&run.stderr);
    assert!(run_err.contains("not started"), "{run_err}");
    assert!(!run_err.contains("opened bus"), "{run_err}");
    stderr
}

#[test]
fn the_good_config_and_the_example_validate() {
    let out = Command::new(DAEMON)
        .arg("validate")
        .arg(write("good.toml", GOOD))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 buses, 1 meters)"));
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sim.toml");
    let out = Command::new(DAEMON)
        .arg("validate")
        .arg(example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_key_names_line_column_and_the_right_key() {
    let text = GOOD.replace("baud = 2400", "baudrate = 2400");
    let err = refused("unknown.toml", &text);
    assert!(
        err.contains("unknown.toml:8:1: unknown field `baudrate`"),
        "{err}"
    );
    assert!(err.contains("write `baud` instead of `baudrate`"), "{err}");
    assert!(err.contains("8 | baudrate = 2400"), "{err}");
}

#[test]
fn missing_bus_points_at_the_meters_bus() {
    let text = GOOD.replace("bus = \"rs485-1\"", "bus = \"rs485-2\"");
    let err = refused("missing.toml", &text);
    assert!(
        err.contains("missing.toml:11:7: no bus is named `rs485-2`"),
        "{err}"
    );
    assert!(err.contains("write `bus = \"rs485-1\"`"), "{err}");
}

#[test]
fn bad_baud_suggests_a_real_rate() {
    let text = GOOD.replace("baud = 2400", "baud = 2500");
    let err = refused("baud.toml", &text);
    assert!(
        err.contains("baud.toml:8:8: 2500 is not a baud rate"),
        "{err}"
    );
    assert!(err.contains("write `baud = 2400`"), "{err}");
}

#[test]
fn duplicate_meter_address_on_a_bus_is_refused() {
    let text = format!("{GOOD}\n[[meter]]\nbus = \"rs485-1\"\naddress = \"000000000001\"\ndriver = \"dlt645\"\ndwelling = \"A-102\"\n");
    let err = refused("dup.toml", &text);
    assert!(
        err.contains("dup.toml:18:11: address 000000000001 is used twice on bus `rs485-1`"),
        "{err}"
    );
    assert!(err.contains("dwelling `A-101`"), "{err}");
}

#[test]
fn every_mistake_is_listed_at_once() {
    let text = GOOD
        .replace("baud = 2400", "baud = 2500")
        .replace("address = \"000000000001\"", "address = \"12\"");
    let err = refused("many.toml", &text);
    assert!(err.contains("many.toml:8:8:"), "{err}");
    assert!(
        err.contains("many.toml:12:11: `12` is not a DL/T 645 address"),
        "{err}"
    );
    assert!(err.contains("2 mistakes in"), "{err}");
}

#[test]
fn syntax_errors_and_unreadable_files() {
    let err = refused("syntax.toml", "[gateway\nid = 1\n");
    assert!(err.contains("syntax.toml:1:"), "{err}");
    let out = Command::new(DAEMON)
        .arg("validate")
        .arg("/nonexistent/c.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read the configuration /nonexistent/c.toml"));
}

#[test]
fn ledger_table_mistakes_name_the_file_line_and_column() {
    let dir =
        std::env::temp_dir().join(format!("concentrator-config-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A ledger file with a misspelt key on line 3.
    let rules = dir.join("ledger.toml");
    std::fs::write(
        &rules,
        "currency = \"EUR\"\nutc_offset_minutes = 60\nstanding_charge_per_day = 30\n",
    )
    .unwrap();
    let text = format!(
        "{GOOD}\n[ledger]\nconfig = \"{}\"\nutility_ca = \"{}/missing-ca.pem\"\ngateway_key = \"{}\"\ngateway_cert_chain = \"{}\"\ncheckpoint_s = 0\n",
        rules.display(),
        dir.display(),
        rules.display(),
        rules.display()
    );
    let err = refused("ledger.toml", &text);
    // The nested file's own position, reported at the key that names it.
    assert!(
        err.contains(&format!(
            "{}:3:1: unknown field `standing_charge_per_day`",
            rules.display()
        )),
        "{err}"
    );
    assert!(err.contains("missing-ca.pem"), "{err}");
    assert!(err.contains("is not a PEM private key"), "{err}");
    assert!(err.contains("holds no certificate"), "{err}");
    assert!(err.contains("a checkpoint interval of 0 s"), "{err}");
    assert!(
        err.contains(":21:16: a checkpoint interval of 0 s"),
        "the line and column of checkpoint_s: {err}"
    );
    // Two meters with the same meter number are refused once the ledger keeps accounts by it.
    let twice = format!(
        "{text}\n[[meter]]\nbus = \"rs485-1\"\naddress = \"000000000002\"\nmeter_id = \"000000000001\"\ndriver = \"dlt645\"\ndwelling = \"A-102\"\n"
    );
    let err = refused("ledger-twice.toml", &twice);
    assert!(
        err.contains("meter number `000000000001` is used twice"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn uplink_files_are_checked_at_validate_time() {
    let dir = std::env::temp_dir().join(format!("concentrator-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let keys = dir.join("keys.toml");
    std::fs::write(&keys, "[gateway]\nck = \"00\"\nik = \"00\"\n").unwrap();
    let text = format!(
        "{GOOD}\n[uplink]\nbroker = \"mqtts://broker.example:8883\"\nca = \"{0}\"\ncert = \"{0}\"\nkey = \"{1}\"\nkeys = \"{2}\"\n",
        not_pem.display(),
        dir.join("missing.key").display(),
        keys.display()
    );
    let err = refused("uplink-files.toml", &text);
    assert!(err.contains("holds no PEM certificate"), "{err}");
    assert!(
        err.contains("cannot read the gateway's private key"),
        "{err}"
    );
    assert!(err.contains("ck is not 32 hex digits"), "{err}");

    let plain = format!(
        "{GOOD}\n[uplink]\nbroker = \"mqtt://broker.example:1883\"\nkeys = \"{}\"\n",
        keys.display()
    );
    let err = refused("uplink-plain.toml", &plain);
    assert!(err.contains("without TLS"), "{err}");
    assert!(err.contains("mqtts://broker.example:8883"), "{err}");
}

#[test]
fn ledger_restore_source_is_checked() {
    let dir = std::env::temp_dir().join(format!(
        "concentrator-config-restore-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let table = |restore: &str| {
        format!(
            "{GOOD}\n[ledger]\nconfig = \"{0}/ledger.toml\"\nutility_ca = \"{0}/ca.pem\"\ngateway_key = \"{0}/gw.key\"\ngateway_cert_chain = \"{0}/gw.pem\"\nrestore = \"{restore}\"\n",
            dir.display()
        )
    };
    let err = refused("restore-maybe.toml", &table("maybe"));
    assert!(
        err.contains("restore = \"maybe\" is not a restore source"),
        "{err}"
    );
    let err = refused("restore-no-uplink.toml", &table("headend"));
    assert!(
        err.contains("restore = \"headend\" but there is no [uplink]"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plugin_isolation_keys_are_checked_with_their_place() {
    // The [[plugin]] tables start on line 16, after GOOD and a blank line.
    let text = format!(
        "{GOOD}\n[[plugin]]\nname = \"acme-meter\"\nmemory_limit_mb = 64\n\n[[plugin]]\nname = \"dlt645\"\nisolation = \"process\"\n\n[[plugin]]\nname = \"other\"\nisolation = \"process\"\ncall_timeout_ms = 5\n"
    );
    let err = refused("plugins.toml", &text);
    assert!(
        err.contains(
            "plugins.toml:18:19: `memory_limit_mb` applies only to a plugin in its own process"
        ),
        "{err}"
    );
    assert!(err.contains("add `isolation = \"process\"`"), "{err}");
    assert!(
        err.contains("plugins.toml:21:8: `dlt645` is a built-in driver"),
        "{err}"
    );
    assert!(
        err.contains("plugins.toml:27:19: `call_timeout_ms = 5` is out of range"),
        "{err}"
    );
    assert!(err.contains("no plugin directory is set"), "{err}");
    let err = refused(
        "isolation.toml",
        &format!("{GOOD}\n[[plugin]]\nname = \"acme\"\nisolation = \"jail\"\n"),
    );
    assert!(err.contains("isolation.toml:18:13"), "{err}");
}

#[test]
fn typos_in_several_sections_and_the_drivers_own_checks_are_reported_together() {
    // Line numbers: GOOD is lines 1–14; the second meter starts on line 16.
    let text = GOOD
        .replace(
            "store = \"/tmp/concentrator-store\"",
            "store = \"/tmp/concentrator-store\"\nlog_levl = \"info\"",
        )
        .replace("baud = 2400", "baud = 2400\nformt = \"8E1\"");
    let text = format!(
        "{text}\n[[meter]]\nbus = \"rs485-1\"\naddress = \"000000000002\"\ndriver = \"dlt645\"\ndwelling = \"A-102\"\npassword = \"0200000\"\n\n[[meter]]\nbus = \"rs485-1\"\naddress = \"12\"\ndriver = \"dlt645\"\ndwelling = \"A-103\"\n"
    );
    let err = refused("several.toml", &text);
    // Two unknown keys, in different sections, each with its fix.
    assert!(
        err.contains("several.toml:4:1: unknown field `log_levl`"),
        "{err}"
    );
    assert!(
        err.contains("write `log_level` instead of `log_levl`"),
        "{err}"
    );
    assert!(
        err.contains("several.toml:10:1: unknown field `formt`"),
        "{err}"
    );
    // The checks across the configuration still ran on the rest.
    assert!(
        err.contains("several.toml:27:11: `12` is not a DL/T 645 address"),
        "{err}"
    );
    // And the DL/T 645 driver's own check of the 7-digit password, at its field.
    assert!(
        err.contains(
            "several.toml:23:12: the `dlt645` driver refuses this meter (dwelling `A-102`)"
        ),
        "{err}"
    );
    assert!(err.contains("`password = \"0200000\"`"), "{err}");
    assert!(err.contains("8 hex digits"), "{err}");
    assert!(err.contains("4 mistakes in"), "{err}");
}

#[test]
fn a_wrong_type_does_not_hide_the_mistakes_in_other_sections() {
    let text = GOOD
        .replace("baud = 2400", "baud = \"fast\"")
        .replace(
            "dwelling = \"A-101\"",
            "dwelling = \"A-101\"\nadress = \"1\"",
        )
        .replace("id = \"gw-1\"", "id = \"gw-1\"\nstoer = \"x\"");
    let err = refused("types.toml", &text);
    assert!(
        err.contains("types.toml:3:1: unknown field `stoer`"),
        "{err}"
    );
    assert!(err.contains("types.toml:9:8: invalid type"), "{err}");
    assert!(
        err.contains("types.toml:16:1: unknown field `adress`"),
        "{err}"
    );
    // The rest of the bus table after the wrong type is read too.
    let err = refused(
        "types2.toml",
        &text.replace("baud = \"fast\"", "baud = \"fast\"\nformt = \"8E1\""),
    );
    assert!(
        err.contains("types2.toml:10:1: unknown field `formt`"),
        "{err}"
    );
}

#[test]
fn an_unusable_vendor_key_is_a_mistake_and_a_plugin_that_will_not_load_a_warning() {
    let dir = std::env::temp_dir().join(format!("concentrator-config-plug-{}", std::process::id()));
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // A file the loader refuses: not signed.
    std::fs::write(plugins.join("acme.so"), b"not a library").unwrap();
    let key = dir.join("vendor.pub.pem");
    let (_, public) =
        concentrator_plugin_host::generate_key_pem(concentrator_plugin_host::Algorithm::Ed25519)
            .unwrap();
    std::fs::write(&key, public).unwrap();
    let text = GOOD
        .replace(
            "store = \"/tmp/concentrator-store\"",
            &format!(
                "store = \"/tmp/concentrator-store\"\nplugin_dir = \"{}\"\ntrusted_keys = [\"{}\", \"{}/missing.pem\"]\nplugin_owner_check = false",
                plugins.display(),
                key.display(),
                dir.display()
            ),
        )
        .replace("driver = \"dlt645\"", "driver = \"acme\"");
    let err = refused("plugin-driver.toml", &text);
    assert!(err.contains("missing.pem cannot be used"), "{err}");
    // With the keys usable, the meter's plugin is looked for as the daemon would: a file it will
    // refuse is a warning (the daemon starts and runs the other meters), not a mistake.
    let text = text.replace(&format!(", \"{}/missing.pem\"", dir.display()), "");
    let path = write("plugin-driver2.toml", &text);
    let out = Command::new(DAEMON)
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("plugin-driver2.toml:16:10: warning: no plugin named `acme` would load from"),
        "{stderr}"
    );
    assert!(stderr.contains("acme.so is refused"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 warning above"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_power_fail_line_and_polarity_are_named_at_their_keys() {
    let text = format!("{GOOD}\n[power]\nfail_line = \"pin six\"\npolarity = \"upside_down\"\n");
    let err = refused("power.toml", &text);
    assert!(err.contains("power.toml:17:13"), "{err}");
    assert!(err.contains("power.toml:18:12"), "{err}");
    assert!(err.contains("fail_line = \"gpiochip0:6\""), "{err}");
    assert!(err.contains("\"upside_down\" is not a polarity"), "{err}");
    assert!(err.contains("active_low"), "{err}");
}

#[test]
fn block_balance_mistakes_are_named_at_their_keys_with_the_fix() {
    let text = format!(
        "{GOOD}\n[[meter]]\nbus = \"rs485-1\"\naddress = \"000000000002\"\ndriver = \"dlt645\"\ndwelling = \"A-102\"\ngroup = \"stair-A\"\n\n[[meter]]\nbus = \"rs485-1\"\naddress = \"000000000003\"\ndriver = \"dlt645\"\ndwelling = \"B main\"\nrole = \"feeder\"\ngroup = \"stair-B\"\nread = [\"voltage-a\"]\n\n[balance]\ninterval_s = 1000\n"
    );
    let err = refused("balance.toml", &text);
    for part in [
        "balance.toml:21:9",
        "group `stair-A` has no feeder meter",
        "add `role = \"feeder\"` and `group = \"stair-A\"` to its master meter",
        "balance.toml:29:9",
        "no dwelling meter is in group `stair-B`",
        "balance.toml:30:9",
        "a feeder meter must read its energy register",
        "balance.toml:33:14",
        "an interval of 1000 s does not divide the day",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
}
