//! A pilot moves from sled to PostgreSQL with `concentrator-headend migrate --from-sled`: every record
//! copied as it is stored, read back and compared before the commit; refused while the pilot's
//! head-end still runs, into a database that already holds records, and under another key-encryption
//! key (nothing kept); and the copied store works: the same status, the payment record intact,
//! purchases go on from the next serial.
//!
//! Runs on the tests' own PostgreSQL (tests/support/pg.rs); missing PostgreSQL fails these tests with
//! the install command unless CONCENTRATOR_ALLOW_SKIP=1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use concentrator_headend::config::{Config, StoreBackend};
use concentrator_headend::store::Store;
use concentrator_headend::{audit, status, HeadEnd};
use concentrator_mpc::backend::Backend;
use support::pg::PgServer;
use support::Pilot;

/// Runs the head-end's command line: (succeeded, stdout and stderr).
fn headend(args: &[&str], paths: &[&Path]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_concentrator-headend"))
        .args(args)
        .args(paths)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The pilot's configuration with its store on a fresh PostgreSQL database, written beside the
/// pilot's own (so that its relative paths, the KEK among them, still hold).
fn on_postgres(p: &Pilot, server: &PgServer) -> (Config, PathBuf) {
    let mut pg = p.config.clone();
    pg.store.backend = StoreBackend::Postgres;
    pg.store.url = Some(server.fresh_database());
    let file = pg.base.join("headend-pg.toml");
    std::fs::write(&file, toml::to_string(&pg).unwrap()).unwrap();
    (Config::load(&file).unwrap(), file)
}

fn pg_rows(config: &Config) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut c =
        postgres::Client::connect(config.store.url.as_ref().unwrap(), postgres::NoTls).unwrap();
    c.query("SELECT key, value FROM kv ORDER BY key", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn a_pilot_on_sled_moves_to_postgresql_with_every_record_and_sells_on() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let p = Pilot::on_sled("copy");
    let sled_dir = p.config.path(&p.config.store.path);
    let before = {
        let he = HeadEnd::open(p.config.clone()).unwrap();
        p.provision(&he.store());
        for i in 0..5u8 {
            he.backend().top_up("C-1", "MTR-1", 500, [i; 16]).unwrap();
        }
        status::report(&he.store(), "EUR").unwrap()
    };
    let (pg, pg_file) = on_postgres(&p, server);
    let migrate = |what: &str| {
        headend(
            &["migrate", "--config"],
            &[&pg_file, Path::new("--from-sled"), &sled_dir],
        )
        .1
        .contains(what)
    };

    // While the pilot's head-end runs on the sled store, sled lets no other process open it.
    {
        let _running = HeadEnd::open(p.config.clone()).unwrap();
        let (ok, out) = headend(
            &["migrate", "--config"],
            &[&pg_file, Path::new("--from-sled"), &sled_dir],
        );
        assert!(!ok, "{out}");
        assert!(out.contains("stop it first"), "{out}");
        assert!(pg_rows(&pg).is_empty());
    }

    let (ok, out) = headend(
        &["migrate", "--config"],
        &[&pg_file, Path::new("--from-sled"), &sled_dir],
    );
    assert!(ok, "{out}");
    eprintln!("{out}");
    assert!(out.contains("copied "), "{out}");
    // Five purchases, each a purchase and a token issued.
    assert!(
        out.contains("the copied payment record verifies: 10 entries"),
        "{out}"
    );

    // Every record, octet for octet, in the same order.
    let sled_rows: Vec<(Vec<u8>, Vec<u8>)> =
        concentrator_ledger::open_sled(&sled::Config::new().path(&sled_dir))
            .unwrap()
            .open_tree("headend")
            .unwrap()
            .iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
    assert!(sled_rows.len() > 10);
    assert_eq!(pg_rows(&pg), sled_rows);

    // The copy works as the store: the same status, and selling goes on from the next serial.
    let store = Store::open_configured(&pg).unwrap();
    assert_eq!(status::report(&store, "EUR").unwrap(), before);
    let he = HeadEnd::open(pg.clone()).unwrap();
    let next = he.backend().top_up("C-1", "MTR-1", 500, [9; 16]).unwrap();
    assert_eq!(next.serial, 6);
    // The same request id as a purchase made on sled: the same purchase, not a second one.
    let again = he.backend().top_up("C-1", "MTR-1", 500, [0; 16]).unwrap();
    assert_eq!(again.serial, 1);
    assert_eq!(audit::verify(&he.store()).unwrap(), Ok(12));
    drop(he);

    // A second copy into the same database is refused, and adds nothing.
    let rows = pg_rows(&pg).len();
    assert!(migrate("already holds"));
    assert_eq!(pg_rows(&pg).len(), rows);
}

#[test]
fn a_sled_store_under_another_key_encryption_key_is_refused_and_nothing_is_kept() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let p = Pilot::on_sled("copy-kek");
    let sled_dir = p.config.path(&p.config.store.path);
    {
        let he = HeadEnd::open(p.config.clone()).unwrap();
        assert!(he.store().encrypts_secrets());
        p.provision(&he.store());
    }
    let (mut pg, _) = on_postgres(&p, server);
    let other = pg.base.join("other-kek.hex");
    concentrator_headend::store::kek::Kek::create(&other).unwrap();
    pg.store.kek = Some(other);
    let file = pg.base.join("headend-other-kek.toml");
    std::fs::write(&file, toml::to_string(&pg).unwrap()).unwrap();

    let (ok, out) = headend(
        &["migrate", "--config"],
        &[&file, Path::new("--from-sled"), &sled_dir],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("give the new headend.toml the pilot's KEK file"),
        "{out}"
    );
    assert!(out.contains("Nothing was copied"), "{out}");
    assert!(pg_rows(&pg).is_empty());

    // A configuration that names sled is told what --from-sled is for.
    let sled_file = p.config.base.join("headend.toml");
    let (ok, out) = headend(
        &["migrate", "--config"],
        &[&sled_file, Path::new("--from-sled"), &sled_dir],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("backend = \"postgres\""), "{out}");
}
