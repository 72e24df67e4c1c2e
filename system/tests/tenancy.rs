//! Change of tenancy end to end (issue #19 item 5), with the real processes: Mosquitto, the
//! `concentrator-headend run` child process, `concentratord` on a simulated meter, the phone client, and
//! the operator's `concentrator-headend tenancy change` command while the head-end runs.
//!
//! The old customer tops up and uses some of it; the operator orders the change; the gateway closes the
//! account and its signed settlement comes back; the payment record refunds the old customer exactly the
//! credit the gateway's ledger held when it closed the account; the meter leaves the old customer's app
//! and appears in the new customer's, whose top-up applies to the new account.

use std::process::Command;
use std::time::{Duration, Instant};

use concentrator_headend::audit::{self, EntryKind};
use concentrator_ledger::store::Keyspace;
use concentrator_ledger::{Account, SledStore, Store as _};
use concentrator_mpc::backend::Notice;
use concentrator_mpc::client::Client;
use concentrator_mpc::profile::Profile;
use concentrator_system::{
    headend_proc, prereq, sibling_binary, BrokerChoice, GatewayRun, HeadEndRun, Options, System,
};

mod common;

use common::{customer_table, gateway_table, meter_table, temp_dir, M, NO_FRIENDLY};

const METER: &str = "FLAT-7";

fn login(system: &System, user: &str) -> Client {
    let path = &system.profiles[user];
    let profile = Profile::load(path).unwrap();
    let mut keys = profile.keys(path).unwrap();
    let mut client = Client::connect(&system.phone_addr.to_string(), &system.ca).unwrap();
    client
        .login(&mut keys, &system.passwords[user], &mut |_| Ok(()))
        .unwrap();
    client
}

fn applied(client: &mut Client, serial: u64, system: &System) -> i64 {
    match client
        .wait_applied(METER, serial, Duration::from_secs(120))
        .unwrap()
    {
        Some(Notice::Applied {
            balance_after_minor,
            ..
        }) => balance_after_minor,
        other => panic!(
            "top-up {serial} not applied: {other:?}\n{}",
            system.gateways[0].log_tail(60)
        ),
    }
}

#[test]
fn a_change_of_tenancy_refunds_exactly_the_credit_left_and_the_new_tenant_tops_up() {
    if prereq::skip(prereq::mosquitto_missing()) {
        return;
    }
    let bin = |name: &str| sibling_binary(name).unwrap_or_else(|e| panic!("{e}"));
    let mut spec = gateway_table("gw-tenancy", NO_FRIENDLY, &[("rs485-1", 1)]);
    // 72 kW at 25 c/kWh: half a cent a second, so the credit left is not the credit bought.
    spec.push_str(&meter_table(
        "gw-tenancy",
        "rs485-1",
        &M {
            number: METER,
            address: "000000000701",
            load_w: 72_000,
            opening_minor: 0,
        },
        None,
    ));
    spec.push_str(&customer_table("C-1", 1, &[METER]));
    spec.push_str(&customer_table("C-2", 2, &[]));
    let dir = temp_dir("e2e", "tenancy");
    let mut system = System::start(&Options {
        dir: dir.clone(),
        broker: BrokerChoice::Mosquitto,
        gateway: GatewayRun::Child {
            bin: bin("concentratord"),
        },
        headend: HeadEndRun::Child {
            bin: bin("concentrator-headend"),
        },
        spec,
        register: vec![("C-1".into(), "olga".into(), "olga-pass-1".into())],
        key_lifetime_s: None,
        // Resend an order without an answer after 5 s (the default, 300 s, is longer than the test).
        headend_settings: vec![("reconcile".into(), "result_timeout_s".into(), 5)],
        extra_acl: None,
    })
    .unwrap_or_else(|e| panic!("starting the system in {}: {e:#}", dir.display()));
    // (The head-end is a child process holding its store: attachment shows as the first top-up applied.)

    // The old tenant buys 20.00 and uses some of it.
    let mut olga = login(&system, "olga");
    olga.watch().unwrap();
    let bought = olga.top_up(METER, 2_000).unwrap();
    let after = applied(&mut olga, bought.serial, &system);
    assert!(after > 1_000, "{after}");
    std::thread::sleep(Duration::from_secs(4));

    // The operator orders the change while the head-end runs (its sled store is locked: the command
    // goes through the order spool).
    let out = Command::new(bin("concentrator-headend"))
        .args(["tenancy", "change", "--config"])
        .arg(&system.headend_config)
        .args(["--meter", METER, "--from", "C-1", "--to", "C-2"])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tenancy change failed: {said}");
    assert!(
        said.contains("order 1: meter FLAT-7 from C-1 to C-2"),
        "{said}"
    );

    // Once the settlement is booked, the meter leaves the old customer's app.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let views = olga.meters().unwrap();
        if views.is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "the meter is still the old customer's: {views:?}\n{}",
            system.gateways[0].log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        olga.top_up(METER, 500).is_err(),
        "the old customer cannot buy for it"
    );

    // The new tenant registers, sees the meter and tops up; the top-up applies to the new account.
    system
        .register("C-2", "nina", "nina-pass-2")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut nina = login(&system, "nina");
    nina.watch().unwrap();
    let views = nina.meters().unwrap();
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(views[0].meter, METER);
    let bought2 = nina.top_up(METER, 500).unwrap();
    assert_eq!(bought2.serial, bought.serial + 1);
    let new_balance = applied(&mut nina, bought2.serial, &system);
    assert!(
        (0..=500).contains(&new_balance),
        "the new account starts from nothing: {new_balance}"
    );

    // Stop everything and compare the books.
    let config = system.headend_config.clone();
    let ledger_dir = system.gateway_store.join("ledger");
    system.stop().unwrap();
    let ledger = SledStore::open(&ledger_dir).unwrap();
    let mut key = METER.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&1u32.to_be_bytes());
    let closed: Account = serde_json::from_slice(
        &ledger
            .get(Keyspace::Closed, &key)
            .unwrap()
            .expect("the closed account is kept"),
    )
    .unwrap();
    let left = closed.balance_minor();
    assert!(left > 0 && left < 2_000, "some credit was used: {left}");
    concentrator_ledger::check::check_store(&ledger).unwrap();

    let store = headend_proc::open_store(&config).unwrap();
    let entries = audit::entries(&store).unwrap();
    let refunds: Vec<_> = entries
        .iter()
        .filter(|e| e.what == EntryKind::Refund)
        .collect();
    assert_eq!(refunds.len(), 1, "{entries:?}");
    assert_eq!(refunds[0].customer.as_deref(), Some("C-1"));
    assert_eq!(
        i64::try_from(refunds[0].amount_minor).unwrap(),
        left,
        "the refund is exactly the credit the gateway held at the close"
    );
    assert!(entries
        .iter()
        .any(|e| e.what == EntryKind::TenancyOpened && e.customer.as_deref() == Some("C-2")));
    let new_token = store.token(METER, bought2.serial).unwrap().unwrap();
    assert_eq!(new_token.customer, "C-2");
    assert_eq!(
        new_token.state,
        concentrator_headend::store::TokenState::Applied
    );
    assert!(audit::verify(&store).unwrap().is_ok());
    let t = store.tenancy(1).unwrap().unwrap();
    assert_eq!(
        t.settlement.map(|s| s.remaining_credit_minor),
        Some(refunds[0].amount_minor)
    );
}
