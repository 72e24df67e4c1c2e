//! A gateway whose store has no account for a meter restores it from the head-end before it charges the
//! meter or accepts a token: `concentratord` with its uplink to a real Mosquitto and the uplink testkit's
//! fake head-end, which answers the restore request with a signed account statement.
//!
//! Before the restore existed, the account opened at `opening_balance_minor` at the first reading and
//! every token still valid applied again (issue 14, defect 8).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{temp_dir, unix_now, uplink_section, write_setup, Daemon, TestMeter};
use concentrator_appliance::status::Status;
use concentrator_protocol::*;
use concentrator_security::restore::{AccountStatement, SerialSpan};
use concentrator_uplink::testkit::broker::{skip_without_mosquitto, Broker};
use concentrator_uplink::testkit::headend::{HeadEnd, Log};
use concentrator_uplink::testkit::tid;

const GW: &str = "gw-test";
const METER: &str = "M-1";

fn status(dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(dir.join("store/status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn wait(secs: u64, what: &str, daemon: &Daemon, mut ok: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn result(log: &Log, id: MessageId) -> Option<CommandResult> {
    log.up.iter().find_map(|r| match &r.frame.body {
        Body::CommandResult(c) if c.command == id => Some(c.clone()),
        _ => None,
    })
}

#[test]
fn a_lost_account_is_restored_from_the_head_end_before_tokens_or_charges() {
    if skip_without_mosquitto() {
        return;
    }
    let dir = temp_dir("restore");
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-restore");
    let meters = [TestMeter {
        bus: "a",
        address: "000000000401".into(),
        meter_id: METER.into(),
        load_w: 3_600,
        start_kwh: 10.0,
        opening_minor: 100,
    }];
    let (path, pki) = write_setup(&dir, &meters, 25_000, 1, None);
    // The default with [uplink]: restore from the head-end.
    let mut text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("restore = \"none\"\n", "");
    text.push_str(&uplink_section(&dir, &broker, GW, &[METER]));
    std::fs::write(&path, text).unwrap();

    let mut daemon = Daemon::start(&path);
    wait(20, "the restoring state", &daemon, || {
        status(&dir).is_some_and(|s| {
            s.accounts
                .get(METER)
                .is_some_and(|a| a.state == "restoring")
        })
    });
    head.wait_for(20, "a restore request with a register", |log| {
        log.up.iter().any(|r| {
            matches!(&r.frame.body, Body::RestoreRequest(q) if q.register_wh.is_some())
                && r.frame.header.tid == Some(tid(1))
        })
    });
    let gw = GatewayId::new(GW).unwrap();
    let scope = Scope::Meter(tid(1));
    let mut next_id = 0u64;
    let mut send = |body: Body| {
        next_id += 1;
        let frame = Frame::new(
            MessageId::new(*b"headend0", next_id),
            Some(tid(1)),
            unix_now(),
            body,
        );
        let topic = Topic::for_message(&gw, scope, frame.kind()).to_string();
        head.publish(&topic, head.seal(scope, &frame));
        frame.header.id
    };
    let answer = |id: MessageId, what: &str| {
        head.wait_for(20, what, |log| result(log, id).is_some());
        result(&head.log.lock().unwrap(), id).unwrap()
    };

    // A token while restoring: a temporary refusal (try later), with the reason.
    let now = unix_now();
    let token = |serial| {
        pki.token(METER, serial, 1_000, now - 60, now + 3_600)
            .unwrap()
    };
    let early = send(Body::TopUp(TopUp { token: token(3) }));
    let r = answer(early, "the early top-up's result");
    assert!(!result_code::is_final(r.code), "{r:?}");
    assert!(
        r.reason
            .as_deref()
            .unwrap_or("")
            .contains("being restored from the head-end"),
        "{r:?}"
    );

    // The head-end's statement: 50.00 at its last summary, serials 1 and 2 applied.
    let statement = AccountStatement {
        meter_id: METER.into(),
        at: now,
        currency: *b"EUR",
        balance_minor: 5_000,
        summary_at: now - 60,
        register_wh: Some(10_000),
        debt_minor: 0,
        applied: SerialSpan::cover([1, 2]),
        last_serial: Some(2),
        new_account: false,
        key_id: [0; 8],
    };
    // Signed by a head-end of another CA: refused for good, the meter still restoring.
    let rogue = send(Body::AccountRestore(AccountRestore {
        signed: pki.statement(&statement, true).unwrap(),
    }));
    let r = answer(rogue, "the rogue statement's result");
    assert_eq!(r.code, result_code::TOKEN_REFUSED, "{r:?}");
    assert_eq!(status(&dir).unwrap().accounts[METER].state, "restoring");

    let good = send(Body::AccountRestore(AccountRestore {
        signed: pki.statement(&statement, false).unwrap(),
    }));
    let r = answer(good, "the statement's result");
    assert_eq!(r.code, result_code::DONE, "{r:?}");
    // Restored at 50.00, then charged from the statement's register (the sim meter is at 10 kWh and
    // more, 3.6 kW): never the opening balance of 1.00.
    wait(20, "the restored account", &daemon, || {
        status(&dir).is_some_and(|s| {
            let a = &s.accounts[METER];
            a.state == "in-credit" && a.balance_minor > 4_000 && a.balance_minor <= 5_000
        })
    });
    assert_eq!(status(&dir).unwrap().accounts[METER].last_serial, Some(2));

    // A token applied before the store was lost is not applied again ("already done": the head-end's
    // own statement lists it); a new serial applies once.
    let replay = send(Body::TopUp(TopUp { token: token(2) }));
    let r = answer(replay, "the replayed token's result");
    assert_eq!(r.code, result_code::ALREADY_DONE, "{r:?}");
    let fresh = send(Body::TopUp(TopUp { token: token(3) }));
    assert_eq!(
        answer(fresh, "the fresh token's result").code,
        result_code::DONE
    );
    wait(10, "serial 3 on the account", &daemon, || {
        status(&dir).is_some_and(|s| s.accounts[METER].last_serial == Some(3))
    });
    // The summary that goes up lists every serial and the audit anchor.
    head.wait_for(20, "a summary with serials 1 to 3", |log| {
        log.up.iter().any(|r| {
            matches!(&r.frame.body, Body::AccountSummary(s)
                if s.applied == Some(vec![SerialRange { first: 1, last: 3 }])
                    && s.audit.is_some_and(|a| a.len > 0))
        })
    });
    daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
