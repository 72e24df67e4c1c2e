//! Remote configuration (issue #19, item 4) at the gateway:
//!
//! - a configuration change is all or none: one refused key (the uplink's credentials) or one value
//!   the daemon's own validation refuses leaves the file byte for byte as it was; an accepted one
//!   names each `key: old → new` and says whether it is in effect now or at restart, and the same
//!   change again is "no change";
//! - through the real daemon and a real Mosquitto: a tariff update in the gateway scope is scheduled
//!   and answered with what changes and when, after a restart a resend is "already done" and the pending
//!   tariff still starts at its time, and the audit log shows every
//!   charge before the in-force time at the old price, after it at the new one, and the interval that
//!   straddles it split at it; a configuration change of a forbidden key is refused, of the log level
//!   applied at once.

mod common;

use std::path::Path;

use common::{temp_dir, unix_now, uplink_section, write_setup, Daemon, TestMeter};
use concentrator_appliance::config::remote::{apply, RemoteOutcome, RemoteRefusal};
use concentrator_appliance::config::{Config, LogLevel};
use concentrator_ledger::audit::{self, AuditEvent};
use concentrator_ledger::SledStore;
use concentrator_protocol::*;
use concentrator_uplink::testkit::broker::{skip_without_mosquitto, Broker};
use concentrator_uplink::testkit::headend::{HeadEnd, Log};

const GW: &str = "gw-test";

fn set(key: &str, value: ConfigValue) -> ConfigSetting {
    ConfigSetting {
        key: key.into(),
        value,
    }
}

#[test]
fn a_configuration_change_is_all_or_none_and_names_what_changed() {
    let dir = temp_dir("remote-config");
    let meters = [TestMeter {
        bus: "a",
        address: "000000000401".into(),
        meter_id: "M-1".into(),
        load_w: 100,
        start_kwh: 1.0,
        opening_minor: 1_000,
    }];
    let (path, _) = write_setup(&dir, &meters, 25_000, 60, None);
    let before = std::fs::read(&path).unwrap();

    // One forbidden key among good ones: refused, nothing written.
    let e = apply(
        &path,
        &[
            set("gateway.log_level", ConfigValue::Text("debug".into())),
            set(
                "uplink.broker",
                ConfigValue::Text("mqtt://elsewhere".into()),
            ),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(&e, RemoteRefusal::Forbidden { key, .. } if key == "uplink.broker"),
        "{e}"
    );
    assert!(e.to_string().contains("changed on site"), "{e}");
    for key in [
        "gateway.trusted_keys",
        "ledger.gateway_key",
        "plugin.isolation",
    ] {
        let e = apply(&path, &[set(key, ConfigValue::Bool(true))]).unwrap_err();
        assert!(matches!(e, RemoteRefusal::Forbidden { .. }), "{key}: {e}");
    }
    // One value the daemon's validation refuses: refused, nothing written.
    let e = apply(
        &path,
        &[
            set("gateway.log_level", ConfigValue::Text("debug".into())),
            set("ledger.checkpoint_s", ConfigValue::Text("often".into())),
        ],
    )
    .unwrap_err();
    assert!(matches!(e, RemoteRefusal::Invalid(_)), "{e}");
    assert!(e.to_string().contains("checkpoint_s"), "{e}");
    let e = apply(
        &path,
        &[set("gateway.log_level", ConfigValue::Text("loud".into()))],
    )
    .unwrap_err();
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "a refused change wrote the file"
    );

    // Both good: written, each named with its old and new value and when it takes effect.
    let words = match apply(
        &path,
        &[
            set("gateway.log_level", ConfigValue::Text("debug".into())),
            set("ledger.checkpoint_s", ConfigValue::Int(120)),
        ],
    )
    .unwrap()
    {
        RemoteOutcome::Changed(words) => words,
        other => panic!("expected a change, got {other:?}"),
    };
    assert_eq!(
        words,
        "gateway.log_level: \"info\" → \"debug\"; ledger.checkpoint_s: 60 → 120; in effect now: gateway.log_level; takes effect at restart: ledger.checkpoint_s"
    );
    let config = Config::load_checked(&path).unwrap();
    assert_eq!(config.gateway.log_level, LogLevel::Debug);
    assert_eq!(*config.ledger.unwrap().checkpoint_s.get_ref(), 120);
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("# Accounts open at the first reading"));
    // The same change again (a resend): no change, nothing written.
    let after = std::fs::read(&path).unwrap();
    let again = apply(&path, &[set("ledger.checkpoint_s", ConfigValue::Int(120))]).unwrap();
    assert!(matches!(again, RemoteOutcome::Unchanged(_)), "{again:?}");
    assert_eq!(std::fs::read(&path).unwrap(), after);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every energy charge of `meter` in a stopped gateway's ledger: (interval start, end, Wh, micro).
pub fn charges(store: &Path, meter: &str) -> Vec<(u64, u64, u64, i64)> {
    let db = SledStore::open(&store.join("ledger")).unwrap();
    let mut out = Vec::new();
    let mut last_at = None;
    audit::walk(&db, |e| {
        if e.meter != meter {
            return Ok(());
        }
        match &e.event {
            AuditEvent::AccountOpened { .. } | AuditEvent::AccountRestored { .. } => {
                last_at = Some(e.at)
            }
            AuditEvent::Rebaselined { .. } => last_at = Some(e.at),
            AuditEvent::Charge {
                from_wh,
                to_wh,
                micro,
                ..
            } => {
                out.push((last_at.unwrap_or(e.at), e.at, to_wh - from_wh, *micro));
                last_at = Some(e.at);
            }
            _ => {}
        }
        Ok(())
    })
    .unwrap();
    out
}

/// The charge of `wh` over `[from, to)` with `old` (milli-minor per kWh) before `at` and `new` from
/// it: the straddling interval split by time, the first part rounded down.
pub fn expected(from: u64, to: u64, wh: u64, at: u64, old: i64, new: i64) -> i64 {
    let wh = wh as i64;
    if to <= at {
        wh * old
    } else if from >= at {
        wh * new
    } else {
        let before = wh * (at - from) as i64 / (to - from) as i64;
        before * old + (wh - before) * new
    }
}

fn result_for(log: &Log, id: MessageId) -> Option<CommandResult> {
    log.up.iter().find_map(|r| match &r.frame.body {
        Body::CommandResult(c) if c.command == id => Some(c.clone()),
        _ => None,
    })
}

fn answer(head: &HeadEnd, id: MessageId, what: &str) -> CommandResult {
    head.wait_for(30, what, |l| result_for(l, id).is_some());
    result_for(&head.log.lock().unwrap(), id).unwrap()
}

#[test]
fn a_tariff_update_takes_effect_at_its_time_and_config_changes_answer_in_words() {
    if skip_without_mosquitto() {
        return;
    }
    let dir = temp_dir("remote-tariff");
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-remote");
    // 360 kW: 100 Wh a second, so every one-second poll is a charged checkpoint.
    let meters = [TestMeter {
        bus: "a",
        address: "000000000402".into(),
        meter_id: "M-1".into(),
        load_w: 360_000,
        start_kwh: 10.0,
        opening_minor: 1_000_000,
    }];
    // The simulated register counts from now, so it goes on across the restart.
    let (path, _) = write_setup(&dir, &meters, 25_000, 1, Some(unix_now()));
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&uplink_section(&dir, &broker, GW, &["M-1"]));
    std::fs::write(&path, text).unwrap();
    let mut daemon = Daemon::start(&path);
    head.wait_for(30, "the first readings", |l| {
        l.up.iter().any(|r| r.frame.kind() == Kind::Readings)
    });

    let gw = GatewayId::new(GW).unwrap();
    let send = |n: u64, body: Body| {
        let id = MessageId::new(*b"headend0", n);
        let frame = Frame::new(id, None, unix_now(), body);
        let topic = Topic::for_message(&gw, Scope::Gateway, frame.kind()).to_string();
        head.publish(&topic, head.seal(Scope::Gateway, &frame));
        id
    };
    // In force 15 s from now.
    let in_force = unix_now() + 15;
    let tariff = TariffUpdate {
        tariff_id: 7,
        effective_from: in_force,
        currency: "EUR".into(),
        standing_charge_minor_per_day: 30,
        rates: vec![Rate {
            id: 1,
            price_micro_per_kwh: 40_000_000,
        }],
        calendar: vec![Switch {
            days: 0xff,
            start_minute: 0,
            rate: 1,
        }],
        special_days: vec![],
        utc_offset_min: 0,
    };
    let first = send(1, Body::TariffUpdate(tariff.clone()));
    let r = answer(&head, first, "the tariff update's result");
    assert_eq!(r.code, result_code::DONE, "{r:?}");
    let words = r.reason.unwrap_or_default();
    assert!(
        words.starts_with("tariff 7 in force from ")
            && words.contains("replacing the configured tariff"),
        "{words}"
    );
    assert!(
        unix_now() < in_force,
        "the tariff was answered after its in-force time: the test cannot tell the prices apart"
    );
    // The daemon is down across the in-force time and starts again with the tariff scheduled: the
    // first reading after the start charges an interval that straddles it. The same tariff under a new
    // command id is then already done (the schedule was flushed before the first answer).
    while unix_now() + 6 < in_force {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    daemon.stop();
    while unix_now() < in_force + 2 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut daemon = Daemon::start(&path);
    let again = send(2, Body::TariffUpdate(tariff.clone()));
    let r = answer(&head, again, "the resent tariff's result");
    assert_eq!(r.code, result_code::ALREADY_DONE, "{r:?}");
    // In a meter's scope: refused (one tariff per gateway).
    let id = MessageId::new(*b"headend0", 3);
    let frame = Frame::new(
        id,
        Some(concentrator_uplink::testkit::tid(1)),
        unix_now(),
        Body::TariffUpdate(tariff),
    );
    let scope = Scope::Meter(concentrator_uplink::testkit::tid(1));
    head.publish(
        &Topic::for_message(&gw, scope, Kind::TariffUpdate).to_string(),
        head.seal(scope, &frame),
    );
    assert_eq!(
        answer(&head, id, "the meter-scope refusal").code,
        result_code::INVALID
    );

    // Configuration: a forbidden key is refused, the log level is applied at once.
    let refused = send(
        4,
        Body::ConfigChange(ConfigChange {
            settings: vec![set(
                "uplink.keys",
                ConfigValue::Text("/tmp/other.toml".into()),
            )],
        }),
    );
    let r = answer(&head, refused, "the forbidden change's result");
    assert_eq!(r.code, result_code::REFUSED, "{r:?}");
    let changed = send(
        5,
        Body::ConfigChange(ConfigChange {
            settings: vec![set("gateway.log_level", ConfigValue::Text("debug".into()))],
        }),
    );
    let r = answer(&head, changed, "the log level change's result");
    assert_eq!(r.code, result_code::DONE, "{r:?}");
    assert_eq!(
        r.reason.as_deref(),
        Some("gateway.log_level: \"info\" → \"debug\"; in effect now: gateway.log_level")
    );
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("log_level = \"debug\""));

    // Readings well past the in-force time, then the audit log.
    while unix_now() < in_force + 8 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    daemon.stop();
    let charges = charges(&dir.join("store"), "M-1");
    let before = charges.iter().filter(|c| c.1 <= in_force).count();
    let after = charges.iter().filter(|c| c.0 >= in_force).count();
    assert!(before >= 2 && after >= 2, "{charges:?}");
    assert!(
        charges.iter().any(|c| c.0 < in_force && c.1 > in_force),
        "no charge straddles the in-force time although the daemon was down across it: {charges:?}"
    );
    for &(from, to, wh, micro) in &charges {
        assert_eq!(
            micro,
            expected(from, to, wh, in_force, 25_000, 40_000),
            "charge of {wh} Wh over {from}..{to} (tariff 7 from {in_force})"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
