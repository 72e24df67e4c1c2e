//! Versioned schema migrations: numbered SQL files, each applied in its own transaction and recorded
//! in `schema_migrations`. A new version only ever adds a file; `concentrator-headend migrate`
//! applies what a database lacks, and a worker refuses to start on a schema other than its own.

use postgres::Client;

/// (version, name, SQL), in order.
const MIGRATIONS: &[(i32, &str, &str)] = &[(1, "kv", include_str!("migrations/0001_kv.sql"))];

/// Serialises concurrent `migrate` runs (an advisory lock id of our own).
const MIGRATE_LOCK: i64 = 0x4845_4144_454e_4431; // "HEADEND1"

/// The version this program needs.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The version the database has (0: none applied).
pub fn version(client: &mut Client) -> Result<i32, postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )?
        .get(0))
}

/// Applies what the database lacks; returns what was applied.
pub fn apply(client: &mut Client) -> Result<Vec<(i32, &'static str)>, postgres::Error> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let mut applied = Vec::new();
    for &(v, name, sql) in MIGRATIONS {
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
        let done = tx
            .query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&v])?
            .is_some();
        if done {
            tx.rollback()?;
            continue;
        }
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&v, &name],
        )?;
        tx.commit()?;
        applied.push((v, name));
    }
    Ok(applied)
}
