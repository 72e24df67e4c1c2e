//! A PostgreSQL server of the tests' own, like the Mosquitto harness: `initdb` into a temporary
//! directory as an unprivileged user (`nobody` when the tests run as root: PostgreSQL refuses root),
//! the server on a Unix socket in that directory only (no TCP port), one per test process, a fresh
//! database per pilot. A watchdog shell started with the server stops it and removes the directory
//! when the test process is gone, however it ended.
//!
//! Missing PostgreSQL fails the test with the install command, unless CONCENTRATOR_ALLOW_SKIP=1.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use concentrator_headend::store::pg::{PgKv, PgSettings};
use concentrator_uplink::testkit::prerequisite::{skip, Missing};

/// Selects the store the head-end suite runs on: `postgres`, or the default (in memory / sled).
pub const STORE_VAR: &str = "CONCENTRATOR_HEADEND_STORE";

/// Whether this run puts the head-end on PostgreSQL.
pub fn selected() -> bool {
    std::env::var(STORE_VAR).is_ok_and(|v| v.trim() == "postgres")
}

/// The running server.
pub struct PgServer {
    dir: PathBuf,
    user: String,
    /// The shell that runs the server and cleans up after this process (never waited for: it
    /// outlives the tests by design).
    _watchdog: std::process::Child,
}

/// PostgreSQL's binaries: the newest `/usr/lib/postgresql/N/bin` with `initdb`, or `PATH`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs `args` as `user` (through runuser when we are root).
fn as_user(user: Option<&str>, program: &Path, args: &[&str]) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program).args(args);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

impl PgServer {
    fn start() -> Result<PgServer, Missing> {
        let bin = bin_dir().ok_or_else(|| {
            Missing::new(
                "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb)",
                "sudo apt-get install -y postgresql (or bash tests/setup.sh)",
            )
        })?;
        let runas = is_root().then_some("nobody");
        let dir = std::env::temp_dir().join(format!("concentrator-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        if let Some(u) = runas {
            let ok = Command::new("chown")
                .arg(format!("{u}:"))
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown {u}: {}", dir.display());
        }
        let data = dir.join("data");
        let out = as_user(
            runas,
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                "headend",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
        )
        .stdin(Stdio::null())
        .output()
        .expect("initdb starts");
        assert!(
            out.status.success(),
            "initdb into {} failed: {}",
            data.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // The server and a watchdog that stops it and removes the directory when we are gone.
        let script = format!(
            "{postgres} -D {data} -k {dir} -h '' -p 5432 -c fsync=off -c max_connections=200 \
             -c shared_buffers=32MB >{dir}/log 2>&1 & pid=$!; \
             while [ -d /proc/{me} ] && kill -0 $pid 2>/dev/null; do sleep 0.5; done; \
             kill -INT $pid 2>/dev/null; wait $pid; rm -rf {dir}",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            dir = dir.display(),
            me = std::process::id(),
        );
        let watchdog = as_user(runas, Path::new("/bin/sh"), &["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the PostgreSQL watchdog starts");
        let server = PgServer {
            dir,
            user: "headend".into(),
            _watchdog: watchdog,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match postgres::Client::connect(&server.url("postgres"), postgres::NoTls) {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!(
                    "PostgreSQL did not accept connections within 30 s ({e}); its log: {}",
                    std::fs::read_to_string(server.dir.join("log")).unwrap_or_default()
                ),
            }
        }
        Ok(server)
    }

    /// The process's server, started on first use; `None` when PostgreSQL is missing and skipping
    /// is allowed (the test returns).
    pub fn get() -> Option<&'static PgServer> {
        static SERVER: OnceLock<Result<PgServer, Missing>> = OnceLock::new();
        match SERVER.get_or_init(PgServer::start) {
            Ok(s) => Some(s),
            Err(m) => {
                if skip(Some(m.clone())) {
                    None
                } else {
                    unreachable!("skip() fails the test when skipping is not allowed")
                }
            }
        }
    }

    /// A connection string for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host={} port=5432 user={} dbname={db}",
            self.dir.display(),
            self.user
        )
    }

    /// A fresh database with the head-end's schema; its connection string.
    pub fn fresh_database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connect to the test server");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a database");
        let url = self.url(&name);
        PgKv::migrate(&PgSettings {
            url: url.clone(),
            ca: None,
            pool: 4,
        })
        .expect("migrate");
        url
    }
}
