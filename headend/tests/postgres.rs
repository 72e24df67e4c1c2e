//! The PostgreSQL store as several workers share it: schema migrations, records written once, scopes
//! that exclude each other across connections, and purchases from two head-ends at once on one
//! database (no serial twice, none lost, the payment record one intact chain).
//!
//! Runs on the tests' own PostgreSQL (tests/support/pg.rs); missing PostgreSQL fails these tests with
//! the install command unless CONCENTRATOR_ALLOW_SKIP=1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use concentrator_headend::audit;
use concentrator_headend::config::StoreBackend;
use concentrator_headend::store::pg::{migrations, PgKv, PgSettings};
use concentrator_headend::store::{Batch, Store, StoreError};
use concentrator_headend::HeadEnd;
use concentrator_mpc::backend::Backend;
use support::pg::PgServer;
use support::Pilot;

fn settings(url: &str) -> PgSettings {
    PgSettings {
        url: url.to_string(),
        ca: None,
        pool: 4,
    }
}

fn two_stores(server: &PgServer) -> (Arc<Store>, Arc<Store>) {
    let url = server.fresh_database();
    let open = || Arc::new(Store::new(Box::new(PgKv::open(&settings(&url)).unwrap())));
    (open(), open())
}

#[test]
fn migrations_are_versioned_and_a_stale_schema_is_refused_with_the_fix() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    // Already current: nothing more to apply.
    assert!(PgKv::migrate(&settings(&url)).unwrap().is_empty());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let v: i32 = c
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, migrations::latest());

    // A database without the schema: opening names the command that fixes it.
    c.batch_execute("CREATE DATABASE bare").unwrap();
    let bare = url.replace(&url[url.find("dbname=").unwrap()..], "dbname=bare");
    let err = PgKv::open(&settings(&bare)).unwrap_err();
    assert!(matches!(err, StoreError::Schema { found: 0, .. }), "{err}");
    assert!(
        err.to_string().contains("concentrator-headend migrate"),
        "{err}"
    );
    let applied = PgKv::migrate(&settings(&bare)).unwrap();
    assert_eq!(applied.len(), migrations::latest() as usize);
    PgKv::open(&settings(&bare)).unwrap();

    // Nothing listens there: the error names the place and the fix, no password.
    let err = PgKv::open(&settings(
        "host=/nonexistent user=headend dbname=x password=secret",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/nonexistent") && err.contains("check that PostgreSQL runs"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn records_written_once_are_refused_the_second_time_by_the_database() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let (a, b) = two_stores(server);
    let mut first = Batch::new();
    first.insert("tok/MTR-1\0\0\0\0\0\0\0\0\x01", &"first");
    a.commit(first).unwrap();
    // Another worker's batch that would write the same token: refused whole.
    let mut second = Batch::new();
    second.put("m/other", &1u32);
    second.insert("tok/MTR-1\0\0\0\0\0\0\0\0\x01", &"second");
    let err = b.commit(second).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(
        a.get::<String>("tok/MTR-1\0\0\0\0\0\0\0\0\x01")
            .unwrap()
            .as_deref(),
        Some("first")
    );
    assert_eq!(
        a.get::<u32>("m/other").unwrap(),
        None,
        "nothing of the batch was written"
    );

    // Inside a scope the refused batch is undone alone; the scope's other writes commit.
    b.scope(&[b"g/gw-1"], || {
        let mut ok = Batch::new();
        ok.put("m/kept", &2u32);
        b.apply(ok).unwrap();
        let mut dup = Batch::new();
        dup.insert("tok/MTR-1\0\0\0\0\0\0\0\0\x01", &"third");
        assert!(matches!(b.apply(dup), Err(StoreError::Conflict { .. })));
    })
    .unwrap();
    assert_eq!(a.get::<u32>("m/kept").unwrap(), Some(2));
}

#[test]
fn scopes_exclude_each_other_across_workers_and_commit_at_their_end() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let (a, b) = two_stores(server);
    let inside = Arc::new(AtomicBool::new(false));
    let t = {
        let (a, inside) = (a.clone(), inside.clone());
        std::thread::spawn(move || {
            a.scope(&[b"g/gw-1"], || {
                inside.store(true, Ordering::SeqCst);
                let mut w = Batch::new();
                w.put("m/x", &1u32);
                a.apply(w).unwrap();
                std::thread::sleep(Duration::from_millis(500));
            })
            .unwrap();
        })
    };
    while !inside.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Not committed yet: the other worker does not see it.
    assert_eq!(b.get::<u32>("m/x").unwrap(), None);
    // The other worker's scope on the same gateway waits for the first to commit, then sees it.
    let seen = b
        .scope(&[b"g/gw-1"], || b.get::<u32>("m/x").unwrap())
        .unwrap();
    assert_eq!(seen, Some(1));
    t.join().unwrap();
}

#[test]
fn serials_and_the_payment_record_stay_whole_with_two_workers_appending() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let (a, b) = two_stores(server);
    let threads: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                let payments = audit::PaymentRecord::new();
                let mut serials = Vec::new();
                for _ in 0..25 {
                    let serial = s.next_serial("MTR-1").unwrap();
                    let draft = audit::Draft {
                        at: 1_700_000_000,
                        what: audit::EntryKind::Purchase,
                        customer: Some("C-1".into()),
                        meter: "MTR-1".into(),
                        serial,
                        amount_minor: 100,
                        currency: "EUR".into(),
                        detail: None,
                    };
                    payments.append(&s, vec![draft], |_| Batch::new()).unwrap();
                    serials.push(serial);
                }
                serials
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<_>>(), "every serial once");
    assert_eq!(
        audit::verify(&a).unwrap(),
        Ok(100),
        "one chain, no entry lost or forked"
    );
    let serials: BTreeSet<u64> = audit::entries(&b)
        .unwrap()
        .iter()
        .map(|e| e.serial)
        .collect();
    assert_eq!(serials.len(), 100);
}

#[test]
fn purchases_through_two_head_ends_on_one_database_are_each_recorded_once() {
    let Some(p) = Pilot::on_postgres("pg-two", None) else {
        return;
    };
    assert_eq!(p.config.store.backend, StoreBackend::Postgres);
    let he1 = HeadEnd::open(p.config.clone()).unwrap();
    p.provision(&he1.store());
    let he2 = HeadEnd::open(p.config.clone()).unwrap();
    let threads: Vec<_> = [he1.backend(), he2.backend(), he1.backend(), he2.backend()]
        .into_iter()
        .enumerate()
        .map(|(n, backend)| {
            std::thread::spawn(move || {
                (0..10u8)
                    .map(|i| {
                        let mut id = [n as u8; 16];
                        id[15] = i;
                        backend.top_up("C-1", "MTR-1", 500, id).unwrap().serial
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut serials: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    serials.sort_unstable();
    assert_eq!(serials, (1..=40).collect::<Vec<_>>());
    // The same request through the other worker: the same purchase, not a second one.
    let again = he2.backend().top_up("C-1", "MTR-1", 500, [0; 16]).unwrap();
    let first = he1.backend().top_up("C-1", "MTR-1", 500, [0; 16]).unwrap();
    assert_eq!(again.serial, first.serial);
    assert_eq!(he1.store().tokens("MTR-1").unwrap().len(), 40);
    assert_eq!(he2.store().pending(Some("MTR-1")).unwrap().len(), 40);
    // Two entries per purchase (purchase, token issued), one chain.
    assert_eq!(audit::verify(&he2.store()).unwrap(), Ok(80));
}
