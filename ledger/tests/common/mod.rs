//! Shared fixtures: a generated PKI, a ledger on a memory store, times in local (UTC+1) terms.
#![allow(dead_code)]

use concentrator_ledger::testkit::TestPki;
use concentrator_ledger::{Ledger, LedgerConfig, MemStore, NewAccount, Output, Store};

/// 2024-06-03 (a Monday) 00:00 local time at UTC+1, as unix seconds.
pub const MONDAY: u64 = 1_717_372_800 - 3_600;

/// Unix time of `day` days after Monday 2024-06-03 at `h:m` local.
pub fn local(day: u64, h: u64, m: u64) -> u64 {
    MONDAY + day * 86_400 + h * 3_600 + m * 60
}

pub fn pki() -> TestPki {
    TestPki::generate().unwrap()
}

pub fn config() -> LedgerConfig {
    let mut c = LedgerConfig::example("gw-test");
    c.standing_charge_minor_per_day = 0;
    c
}

pub fn open<S: Store>(store: S, config: LedgerConfig, pki: &TestPki) -> Ledger<S> {
    Ledger::open(store, config, pki.verifier(), pki.gateway_signer().unwrap()).unwrap()
}

pub fn account(meter: &str, opening: i64, register_wh: u64) -> NewAccount {
    NewAccount {
        meter_id: meter.into(),
        dwelling: format!("D-{meter}"),
        model: None,
        protected: false,
        opening_balance_minor: opening,
        opening_debt_minor: 0,
        register_wh,
        meter_serial: Some(format!("SN-{meter}")),
    }
}

pub fn ledger_with(config: LedgerConfig, opening: i64) -> (Ledger<MemStore>, MemStore, TestPki) {
    let pki = pki();
    let store = MemStore::new();
    let mut l = open(store.clone(), config, &pki);
    l.open_account(account("M1", opening, 10_000), local(0, 12, 0))
        .unwrap();
    l.drain_outputs();
    (l, store, pki)
}

pub fn token(pki: &TestPki, meter: &str, serial: u64, amount: u64) -> Vec<u8> {
    pki.token(
        meter,
        serial,
        amount,
        MONDAY - 86_400,
        MONDAY + 365 * 86_400,
    )
    .unwrap()
}

pub fn relay_actions(outputs: &[Output]) -> Vec<concentrator_ledger::RelayAction> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Relay(c) => Some(c.action),
            Output::Event(_) => None,
        })
        .collect()
}
