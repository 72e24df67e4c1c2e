//! `provision` runs the gateway's own `concentratord validate` on every bundle before it writes one or
//! enrols anybody: a provisioning file the gateway would refuse (here a DL/T 645 address of five
//! digits) fails the run with the gateway's own words, and nothing is enrolled; the corrected file
//! provisions and its bundles validate.

use concentrator_headend::provision::{self, BundlePaths, ProvisionOptions};
use concentrator_headend::{config::Config, init, spec::Spec, store::Store};
use concentrator_system::sibling_binary;

const SPEC: &str = r#"
[[gateway]]
id = "gw-check"
[gateway.ledger]
currency = "EUR"
utc_offset_minutes = 0
holidays = []
standing_charge_minor_per_day = 0
low_credit_levels_minor = [300]
tariff = { kind = "flat", rate = 25000 }
emergency = { amount_minor = 0, auto_select = false, offer_below_minor = 0 }
debt_recovery = { kind = "percent_of_top_up", basis_points = 0 }
friendly = { hours = [], weekends = false, holidays = false }
relay = { reconnect_threshold_minor = 100, reconnect = "direct", verify_after_s = 30, max_attempts = 3 }
plausibility = { max_power_w = 1000000, slack_wh = 1000, rebaseline_after = 3 }

[[gateway.bus]]
name = "rs485-1"
backend = "sim"

[[meter]]
meter = "CHK-1"
gateway = "gw-check"
dwelling = "A-1"
bus = "rs485-1"
address = "ADDRESS"
driver = "dlt645"

[[customer]]
id = "C-1"
name = "Ada"
msisdn = "491701234567"
meters = ["CHK-1"]
"#;

#[test]
fn a_bundle_the_gateway_would_refuse_is_never_written_and_nobody_is_enrolled() {
    let validator = sibling_binary("concentratord").unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("provision-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let conf = init::run(&dir.join("pilot"), &init::InitOptions::default()).unwrap();
    let cfg = Config::load(&conf).unwrap();
    let store = Store::open_configured(&cfg).unwrap();
    let out = dir.join("bundles");
    let run = |address: &str| {
        let path = dir.join("spec.toml");
        std::fs::write(&path, SPEC.replace("ADDRESS", address)).unwrap();
        provision::run(
            &cfg,
            &store,
            &Spec::load(&path).unwrap(),
            &ProvisionOptions {
                out: out.clone(),
                rekey: false,
                paths: BundlePaths::Appliance,
                validator: Some(validator.clone()),
            },
        )
    };
    let e = run("12345").unwrap_err().to_string();
    assert!(
        e.contains("gateway gw-check") && e.contains("concentratord validate"),
        "{e}"
    );
    assert!(
        e.contains("12345"),
        "the gateway's own words name the address: {e}"
    );
    assert!(!e.contains("ledger.toml"), "only the address is wrong: {e}");
    assert!(store.meters().unwrap().is_empty() && store.gateways().unwrap().is_empty());
    assert!(
        !out.join("gw-check/concentrator/concentrator.toml").exists(),
        "no bundle written"
    );
    run("000000000001").unwrap();
    assert_eq!(store.meters().unwrap().len(), 1);
    assert!(out.join("gw-check/concentrator/concentrator.toml").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
