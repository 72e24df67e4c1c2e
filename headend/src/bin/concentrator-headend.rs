//! `concentrator-headend`: the reference payment server (headend/README.md).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use concentrator_headend::config::{Config, StoreBackend};
use concentrator_headend::store::pg::{migrations, PgKv, PgSettings};
use concentrator_headend::store::Store;
use concentrator_headend::{audit, init, provision, remote, spec, status, HeadEnd, StartOptions};
use concentrator_security::suci::Profile;

#[derive(Parser)]
#[command(
    name = "concentrator-headend",
    version,
    about = "The concentrator pilot's payment server"
)]
struct Cli {
    /// Log level on stderr: error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a pilot in DIR: CA, certificates, SUCI and KID keys, store, headend.toml, mosquitto.conf, acl.
    Init {
        /// The directory (created; must not hold a pilot yet).
        dir: PathBuf,
        /// Name gateways and phones use for this machine (added to the TLS certificates).
        #[arg(long, default_value = "localhost")]
        host: String,
        /// The pilot broker's TLS port.
        #[arg(long, default_value_t = 8883)]
        broker_port: u16,
        /// Broker URL for headend.toml (default mqtts://HOST:BROKER_PORT).
        #[arg(long)]
        broker: Option<String>,
        /// Phone listener address.
        #[arg(long, default_value = "0.0.0.0:8443")]
        phone_listen: String,
        /// The customer's web app listener (`[phone_web] listen`); `none`: no web app.
        #[arg(long, default_value = "127.0.0.1:8444")]
        phone_web_listen: String,
        /// Mobile country code of the pilot's IMSIs.
        #[arg(long, default_value = "001")]
        mcc: String,
        /// Mobile network code.
        #[arg(long, default_value = "01")]
        mnc: String,
        /// ISO 4217 currency.
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// SUCI profile: a (X25519) or b (P-256).
        #[arg(long, default_value = "b")]
        profile: String,
    },
    /// Enrols gateways, meters and customers from FILE and writes the gateways' bundles to --out.
    Provision {
        /// headend.toml.
        #[arg(long)]
        config: PathBuf,
        /// The provisioning file (TOML).
        #[arg(required_unless_present = "remove")]
        file: Option<PathBuf>,
        /// Output directory.
        #[arg(long, required_unless_present = "remove")]
        out: Option<PathBuf>,
        /// Takes a subscriber out of service instead: `meter:NUMBER`, `gateway:ID` or `customer:ID`
        /// (repeat it; all or nothing). A meter with tokens on their way is refused, and one in credit
        /// without `--force`; its tokens and payment history stay.
        #[arg(long, value_name = "KIND:ID", conflicts_with_all = ["file", "rekey"])]
        remove: Vec<concentrator_headend::deprovision::Removal>,
        /// With `--remove`: remove a meter even though its last known balance is in credit.
        #[arg(long, requires = "remove")]
        force: bool,
        /// New K and OPc for subscribers already enrolled.
        #[arg(long)]
        rekey: bool,
        /// Paths in the bundle point into the bundle (a gateway run from it), not /var/lib.
        #[arg(long)]
        local: bool,
    },
    /// Runs the head-end: MQTT and the phone-facing server, until SIGTERM or SIGINT.
    Run {
        /// headend.toml.
        #[arg(long)]
        config: PathBuf,
        /// Do not serve phones.
        #[arg(long)]
        no_phone: bool,
        /// This worker's name when several run on one PostgreSQL store with `[mqtt] shared_group`
        /// (its MQTT client id is `[mqtt] client_id`-NAME; restart a worker under the same name).
        #[arg(long)]
        worker: Option<String>,
        /// Serve phones on this address instead of `[phone] listen` (several workers on one machine).
        #[arg(long)]
        phone_listen: Option<String>,
    },
    /// Brings a PostgreSQL store's schema up to this version (each migration in its own transaction);
    /// with the sled store there is nothing to do. With --from-sled, also copies a pilot's sled store
    /// into the (empty) PostgreSQL store.
    Migrate {
        /// headend.toml (naming the PostgreSQL store).
        #[arg(long)]
        config: PathBuf,
        /// A sled store to copy into PostgreSQL: the directory the pilot's headend.toml names as
        /// [store] path. Stop the pilot's head-end first; keep its KEK file for the new configuration.
        #[arg(long, value_name = "DIR")]
        from_sled: Option<PathBuf>,
    },
    /// Gateways, meters and pending tokens (on sled the head-end must be stopped: the store is locked
    /// while it runs; on PostgreSQL it works while workers run).
    Status {
        /// headend.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Change of tenancy: orders the meter's account closed and the next tenant's opened.
    Tenancy {
        #[command(subcommand)]
        what: TenancyCommand,
    },
    /// Tariff updates for gateways (sent by the running head-end; see `commands`).
    Tariff {
        #[command(subcommand)]
        what: TariffCommand,
    },
    /// Configuration changes for gateways (sent by the running head-end; see `commands`).
    #[command(name = "config")]
    GatewayConfig {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// Time sync of a gateway: the running head-end sends its time; the gateway answers what it did.
    Time {
        #[command(subcommand)]
        what: TimeCommand,
    },
    /// Tariff updates and configuration changes issued, and how each went.
    Commands {
        /// headend.toml.
        #[arg(long)]
        config: PathBuf,
        /// Only this gateway's.
        #[arg(long)]
        gateway: Option<String>,
    },
    /// Urgent events that came by SMS while a gateway's data link was down (headend/README.md, *The
    /// SMS path*).
    Sms {
        #[command(subcommand)]
        what: SmsCommand,
    },
    /// The payment record.
    Audit {
        /// headend.toml.
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        what: AuditCommand,
    },
}

#[derive(Subcommand)]
enum SmsCommand {
    /// Verifies one SMS text (`CG1 <gateway> <event>`) with the gateway's security context and stores
    /// its event once (an MQTT copy of the same event is then not stored again). Exit 1 when it does
    /// not verify. With sled while `concentrator-headend run` holds the store, the text goes through
    /// the running head-end (the `sms/` spool beside headend.toml).
    Ingest {
        /// headend.toml.
        #[arg(long)]
        config: PathBuf,
        /// The sender's number, as the SMS gateway gives it.
        #[arg(long)]
        from: String,
        /// The message text.
        text: String,
    },
}

#[derive(Subcommand)]
enum TenancyCommand {
    /// Signs the order and sends it to the meter's gateway (again until the gateway's settlement
    /// arrives); the settlement refunds the credit left (or bills the debt) to --from, refunds its
    /// tokens never applied, and moves the meter to --to. With the sled store and the head-end
    /// running, the order goes through the running head-end (the order spool).
    Change {
        /// headend.toml.
        #[arg(long)]
        config: PathBuf,
        /// The meter number.
        #[arg(long)]
        meter: String,
        /// The customer who leaves (has the meter now).
        #[arg(long)]
        from: String,
        /// The customer who moves in (provisioned; registers with their authorization code).
        #[arg(long)]
        to: String,
        /// When the account closes, UTC: "YYYY-MM-DD HH:MM[:SS] UTC" (default now).
        #[arg(long)]
        at: Option<String>,
        /// The new tenant's opening credit, e.g. 5.00 (default none: the new tenant buys credit).
        #[arg(long, default_value = "0")]
        opening_credit: String,
        /// Also write the signed order to this file (hex text), for an installer to apply in the
        /// gateway's web UI where the gateway cannot be reached.
        #[arg(long)]
        order_file: Option<PathBuf>,
    },
    /// Every change-of-tenancy order with its state and settlement (on sled, with the head-end
    /// stopped: the store is locked while it runs).
    List {
        /// headend.toml.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TariffCommand {
    /// Issues the tariff in FILE (headend/README.md, *Tariffs and gateway settings*) to a gateway;
    /// the running head-end sends it and retries until the gateway answers.
    Set {
        /// headend.toml.
        #[arg(long)]
        config: PathBuf,
        /// The gateway (its meters share one tariff).
        #[arg(long)]
        gateway: String,
        /// The tariff file (TOML).
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum TimeCommand {
    /// Sends the head-end's time to a gateway (resent until it answers); `commands` shows the answer:
    /// kept its own NTP time, stepped to the head-end's, or refused.
    Sync {
        /// headend.toml.
        #[arg(long)]
        config: PathBuf,
        /// The gateway.
        #[arg(long)]
        gateway: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Issues KEY=VALUE settings of the gateway's configuration file, applied all or none.
    Set {
        /// headend.toml.
        #[arg(long)]
        config: PathBuf,
        /// The gateway.
        #[arg(long)]
        gateway: String,
        /// Dotted keys with their values, e.g. gateway.log_level=debug.
        #[arg(required = true)]
        settings: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walks the hash chain and compares it with its anchor file; names the first broken entry (exit
    /// status 1).
    Verify,
    /// The gateways' audit anchors (LEN:HEXHEAD for `concentrator audit verify --anchor`) and alarms.
    Anchors,
    /// Prints the entries.
    Show {
        /// The last N entries only.
        #[arg(long)]
        last: Option<usize>,
    },
}

fn open_store(cfg: &Config) -> Result<Store> {
    match cfg.store.backend {
        StoreBackend::Sled => {
            let path = cfg.path(&cfg.store.path);
            Store::open(&path)
                .with_context(|| {
                    format!(
                        "opening the store {} (is `concentrator-headend run` using it? stop it first)",
                        path.display()
                    )
                })?
                .with_configured_kek(cfg)
                .context("the key-encryption key ([store] kek)")
        }
        StoreBackend::Postgres => {
            Store::open_configured(cfg).context("opening the PostgreSQL store ([store] url)")
        }
    }
}

/// `migrate --from-sled`: the copy, with its progress on stderr (at most once a second).
fn copy_from_sled(from: &std::path::Path, cfg: &Config) -> Result<()> {
    let started = std::time::Instant::now();
    let mut shown = started;
    let copied = concentrator_headend::store::copy::sled_to_postgres(from, cfg, &mut |n| {
        if shown.elapsed() >= Duration::from_secs(1) {
            shown = std::time::Instant::now();
            eprintln!("copying: {} records so far…", group_digits(n));
        }
    })
    .with_context(|| format!("copying the sled store {} into PostgreSQL", from.display()))?;
    let place = PgKv::open(&PgSettings::from_config(cfg)?)?
        .place()
        .to_string();
    println!(
        "copied {} from the sled store {} into PostgreSQL at {place} in {:.1} s, read back the same before committing (SHA-256 {}); \
         the sled store is left as it was: keep it until the head-end runs on PostgreSQL",
        records(copied.records),
        from.display(),
        started.elapsed().as_secs_f64(),
        &copied.hex()[..16],
    );
    Ok(())
}

/// "1 record", "1,234 records".
fn records(n: u64) -> String {
    if n == 1 {
        "1 record".to_string()
    } else {
        format!("{} records", group_digits(n))
    }
}

/// 1234567 → "1,234,567".
fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = cli.log_level.parse().unwrap_or(log::LevelFilter::Info);
    concentrator_headend::log_to_stderr(level);
    match real_main(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Drops a remote command into the running head-end's spool.
fn issue(cfg: &Config, gateway: &str, body: remote::RemoteBody, what: String) -> Result<()> {
    let now = concentrator_protocol::unix_now();
    let kind = match body {
        remote::RemoteBody::Tariff { .. } => "tariff",
        remote::RemoteBody::Config { .. } => "config",
        remote::RemoteBody::TimeSync => "time",
    };
    let c = remote::RemoteCommand {
        // `20261206-192757-4711-tariff`: when (UTC), this process, what; sorts by time.
        id: format!(
            "{}-{}-{kind}",
            concentrator_headend::money::time(now)
                .trim_end_matches(" UTC")
                .replace(['-', ':'], "")
                .replace(' ', "-"),
            std::process::id()
        ),
        gateway: gateway.to_string(),
        what,
        body,
        issued_at: now,
        state: remote::RemoteState::Pending,
        command: None,
        sent_at: None,
        sends: 0,
        result: None,
        result_at: None,
        reason: None,
    };
    let spool = remote::spool_dir(&cfg.base);
    remote::issue(&spool, &c)
        .with_context(|| format!("writing the request into {}", spool.display()))?;
    println!("{} issued for gateway {gateway}: {}", c.id, c.what);
    println!("the running head-end sends it; `concentrator-headend commands` shows how it went");
    Ok(())
}

fn remote_line(c: &remote::RemoteCommand) -> String {
    use concentrator_headend::money::time;
    let state = match c.state {
        remote::RemoteState::Pending if c.sends == 0 => "waiting for the gateway".to_string(),
        remote::RemoteState::Pending => format!(
            "sent {} time(s), last {}, no final answer yet{}",
            c.sends,
            c.sent_at.map_or_else(String::new, time),
            c.reason
                .as_deref()
                .map_or_else(String::new, |r| format!(" (last answer: {r})"))
        ),
        remote::RemoteState::Done => format!(
            "DONE {}: {}",
            c.result_at.map_or_else(String::new, time),
            c.reason.as_deref().unwrap_or("")
        ),
        remote::RemoteState::Refused => format!(
            "REFUSED {}: {}",
            c.result_at.map_or_else(String::new, time),
            c.reason.as_deref().unwrap_or("")
        ),
    };
    format!(
        "{} gateway {} issued {}: {}\n  {state}",
        c.id,
        c.gateway,
        time(c.issued_at),
        c.what
    )
}

fn real_main(cmd: Command) -> Result<std::process::ExitCode> {
    match cmd {
        Command::Init {
            dir,
            host,
            broker_port,
            broker,
            phone_listen,
            phone_web_listen,
            mcc,
            mnc,
            currency,
            profile,
        } => {
            let profile = match profile.as_str() {
                "a" | "A" => Profile::A,
                "b" | "B" => Profile::B,
                other => bail!("--profile {other:?}: give a or b"),
            };
            let path = init::run(
                &dir,
                &init::InitOptions {
                    host,
                    broker_port,
                    broker_url: broker,
                    phone_listen,
                    phone_web_listen: (phone_web_listen != "none").then_some(phone_web_listen),
                    mcc,
                    mnc,
                    currency,
                    profile,
                    key_id: 1,
                    days: 3650,
                },
            )?;
            println!("pilot created: {}", path.display());
            println!(
                "broker: mosquitto -c {}",
                dir.join("mosquitto.conf").display()
            );
        }
        Command::Provision {
            config,
            file,
            out,
            rekey,
            local,
            remove,
            force,
        } => {
            let cfg = Config::load(&config)?;
            if !remove.is_empty() {
                let store = open_store(&cfg)?;
                for line in concentrator_headend::deprovision::remove(
                    &store,
                    &remove,
                    force,
                    &cfg.pilot.currency,
                )? {
                    println!("{line}");
                }
                println!(
                    "run provision with the file (without them) to write the gateways' new bundles"
                );
                return Ok(std::process::ExitCode::SUCCESS);
            }
            let (Some(file), Some(out)) = (file, out) else {
                anyhow::bail!(
                    "provision needs the provisioning file and --out (or --remove KIND:ID)"
                );
            };
            let spec = spec::Spec::load(&file)?;
            let store = open_store(&cfg)?;
            let validator = provision::find_validator();
            if validator.is_none() {
                eprintln!("note: concentratord is not on this machine, so the bundles are not checked with the gateway's own `concentratord validate`; install the concentrator package here (or put concentratord on the PATH) to have provision check them");
            }
            let r = provision::run(
                &cfg,
                &store,
                &spec,
                &provision::ProvisionOptions {
                    out: out.clone(),
                    rekey,
                    paths: if local {
                        provision::BundlePaths::Local
                    } else {
                        provision::BundlePaths::Appliance
                    },
                    validator,
                },
            )?;
            println!("enrolled {} new subscribers, kept {}", r.enrolled, r.kept);
            for (g, d) in &r.bundles {
                println!("gateway {g}: bundle {}", d.display());
            }
            println!(
                "customers' authorization codes: {}",
                out.join("customers.txt").display()
            );
        }
        Command::Run {
            config,
            no_phone,
            worker,
            phone_listen,
        } => {
            let mut cfg = Config::load(&config)?;
            if let Some(addr) = phone_listen {
                cfg.phone.listen = addr;
            }
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(sig, stop.clone())
                    .context("installing the signal handler")?;
            }
            let he = HeadEnd::open(cfg)?;
            let he = match &worker {
                Some(w) => he.worker(w),
                None => he,
            };
            let handle = he.start(StartOptions {
                serve_phones: !no_phone,
                ..Default::default()
            })?;
            log::info!(
                "head-end running{}",
                handle
                    .phone_addr()
                    .map(|a| format!("; phones on {a}"))
                    .unwrap_or_default()
            );
            if let Some(a) = handle.web_addr() {
                log::info!("the customers' web app: https://{a}/");
            }
            while !stop.load(Ordering::SeqCst) && handle.is_running() {
                std::thread::sleep(Duration::from_millis(100));
            }
            log::info!("stopping");
            handle.stop()?;
        }
        Command::Tariff {
            what:
                TariffCommand::Set {
                    config,
                    gateway,
                    file,
                },
        } => {
            let cfg = Config::load(&config)?;
            let (body, what) =
                remote::TariffFile::load(&file, &cfg.pilot.currency).map_err(anyhow::Error::msg)?;
            issue(&cfg, &gateway, body, what)?;
        }
        Command::GatewayConfig {
            what:
                ConfigCommand::Set {
                    config,
                    gateway,
                    settings,
                },
        } => {
            let cfg = Config::load(&config)?;
            let (body, what) = remote::parse_settings(&settings).map_err(anyhow::Error::msg)?;
            issue(&cfg, &gateway, body, what)?;
        }
        Command::Time {
            what: TimeCommand::Sync { config, gateway },
        } => {
            let cfg = Config::load(&config)?;
            issue(
                &cfg,
                &gateway,
                remote::RemoteBody::TimeSync,
                "time sync (the head-end's clock)".into(),
            )?;
        }
        Command::Commands { config, gateway } => {
            let cfg = Config::load(&config)?;
            let spool = remote::spool_dir(&cfg.base);
            let mut shown = 0;
            for c in remote::statuses(&spool)
                .iter()
                .filter(|c| gateway.as_deref().is_none_or(|g| g == c.gateway))
            {
                shown += 1;
                println!("{}", remote_line(c));
            }
            for (path, r) in remote::waiting(&spool) {
                match r {
                    Ok(c) if gateway.as_deref().is_none_or(|g| g == c.gateway) => {
                        shown += 1;
                        println!(
                            "{} gateway {}: {} — not yet taken in (is the head-end running?)",
                            c.id, c.gateway, c.what
                        );
                    }
                    Ok(_) => {}
                    Err(e) => println!("{}: does not read: {e}", path.display()),
                }
            }
            if shown == 0 {
                println!("no tariff updates or configuration changes issued");
            }
        }
        Command::Migrate { config, from_sled } => {
            let cfg = Config::load(&config)?;
            match cfg.store.backend {
                StoreBackend::Sled if from_sled.is_some() => bail!(
                    "{} names sled as its store; --from-sled copies a sled store into PostgreSQL: \
                     set [store] backend = \"postgres\" and [store] url in it first (docs/install.md, *Production*)",
                    config.display()
                ),
                StoreBackend::Sled => println!(
                    "the store is sled ([store] backend), which needs no migrations; nothing done"
                ),
                StoreBackend::Postgres => {
                    let settings = PgSettings::from_config(&cfg)?;
                    let applied = PgKv::migrate(&settings)?;
                    if applied.is_empty() {
                        println!(
                            "the schema is current (version {}); nothing done",
                            migrations::latest()
                        );
                    }
                    for (v, name) in applied {
                        println!("applied migration {v} ({name})");
                    }
                    if let Some(from) = &from_sled {
                        copy_from_sled(from, &cfg)?;
                    }
                }
            }
            if cfg.store.kek.is_some() {
                let store = open_store(&cfg)?;
                let n = store.seal_secrets()?;
                if n > 0 {
                    println!(
                        "encrypted the subscriber keys of {} under the key-encryption key ([store] kek)",
                        records(n as u64)
                    );
                }
            }
            if from_sled.is_some() {
                let store = open_store(&cfg)?;
                match audit::verify(&store)? {
                    Ok(n) => println!(
                        "the copied payment record verifies: {n} entries, one intact chain"
                    ),
                    Err(b) => {
                        println!("the copied payment record does not verify: {b}");
                        return Ok(std::process::ExitCode::from(1));
                    }
                }
            }
        }
        Command::Status { config } => {
            let cfg = Config::load(&config)?;
            let store = open_store(&cfg)?;
            print!("{}", status::report(&store, &cfg.pilot.currency)?);
        }
        Command::Tenancy { what } => return tenancy(what),
        Command::Sms {
            what: SmsCommand::Ingest { config, from, text },
        } => {
            use concentrator_headend::engine::{describe, sms_spool_dir, spool_sms};
            let cfg = Config::load(&config)?;
            let he = match cfg.store.backend {
                StoreBackend::Postgres => Some(HeadEnd::open(cfg.clone())?),
                // A running head-end holds the sled store: then the text goes through it.
                StoreBackend::Sled => HeadEnd::open(cfg.clone()).ok(),
            };
            let now = concentrator_protocol::unix_now();
            if let Some(he) = he {
                return match he.engine()?.ingest_sms(&text, &from, now) {
                    Ok(outcome) => {
                        println!("{}", describe(&outcome));
                        Ok(std::process::ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        Ok(std::process::ExitCode::from(1))
                    }
                };
            }
            let dir = sms_spool_dir(&cfg.base);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let path = spool_sms(
                &dir,
                &from,
                &text,
                &format!("{nanos}-{}", std::process::id()),
            )
            .with_context(|| format!("writing the SMS into {}", dir.display()))?;
            let (done, refused) = (path.with_extension("done"), path.with_extension("refused"));
            for _ in 0..300 {
                for (answer, code) in [(&done, 0u8), (&refused, 1u8)] {
                    if let Ok(text) = std::fs::read_to_string(answer) {
                        let _ = std::fs::remove_file(answer);
                        if code == 0 {
                            print!("{text}");
                        } else {
                            eprint!("error: {text}");
                        }
                        return Ok(std::process::ExitCode::from(code));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            bail!(
                "the store is in use (a running head-end holds it) and no head-end took the SMS within 30 s; it stays in {} and the running head-end takes it at its next tick (check that `concentrator-headend run` is running)",
                path.display()
            )
        }
        Command::Audit { config, what } => {
            let cfg = Config::load(&config)?;
            let store = open_store(&cfg)?;
            match what {
                AuditCommand::Verify => {
                    let anchor = cfg.anchor_path();
                    match audit::verify_anchored(&store, &anchor)? {
                        Ok(n) => println!(
                            "payment record intact: {n} entries{}",
                            match audit::last_anchor(&anchor)? {
                                Some(a) => format!(
                                    ", matching its anchor ({} entries on {}) in {}",
                                    a.len,
                                    concentrator_headend::money::time(a.at),
                                    anchor.display()
                                ),
                                None => format!(" (no anchor in {} yet)", anchor.display()),
                            }
                        ),
                        Err(b) => {
                            println!("{b}");
                            return Ok(std::process::ExitCode::from(1));
                        }
                    }
                }
                AuditCommand::Anchors => print!("{}", status::anchors(&store)?),
                AuditCommand::Show { last } => {
                    let all = audit::entries(&store)?;
                    let skip = last.map_or(0, |n| all.len().saturating_sub(n));
                    for e in all.into_iter().skip(skip) {
                        println!("{}", serde_json::to_string(&e)?);
                    }
                }
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn tenancy(what: TenancyCommand) -> Result<std::process::ExitCode> {
    use concentrator_headend::tenancy::{self, OrderError, OrderRequest};
    let now = concentrator_protocol::unix_now();
    match what {
        TenancyCommand::List { config } => {
            let cfg = Config::load(&config)?;
            let store = open_store(&cfg)?;
            print!("{}", status::tenancies(&store)?);
            Ok(std::process::ExitCode::SUCCESS)
        }
        TenancyCommand::Change {
            meter,
            from,
            to,
            at,
            opening_credit,
            order_file,
            config,
        } => {
            let cfg = Config::load(&config)?;
            let write_order = |hex_text: &str| -> Result<()> {
                if let Some(path) = &order_file {
                    std::fs::write(path, format!("{}\n", hex_text.trim()))
                        .with_context(|| format!("writing the order file {}", path.display()))?;
                    println!("signed order written to {} (the installer applies it in the gateway's web UI, Accounts page)", path.display());
                }
                Ok(())
            };
            let effective_at = match at.as_deref() {
                None | Some("now") => now,
                Some(t) => tenancy::parse_time(t).map_err(anyhow::Error::msg)?,
            };
            let req = OrderRequest {
                meter,
                from,
                to,
                effective_at,
                opening_credit_minor: tenancy::parse_amount(&opening_credit)
                    .map_err(anyhow::Error::msg)?,
            };
            let he = match cfg.store.backend {
                StoreBackend::Postgres => Some(HeadEnd::open(cfg.clone())?),
                // A running head-end holds the sled store: then the order goes through it.
                StoreBackend::Sled => HeadEnd::open(cfg.clone()).ok(),
            };
            if let Some(he) = he {
                return match he.order_tenancy(&req, now) {
                    Ok(rec) => {
                        println!(
                            "order {}: meter {} from {} to {}, effective {}; the head-end sends it to the meter's gateway when it runs (concentrator-headend tenancy list)",
                            rec.order_id,
                            rec.meter,
                            rec.from,
                            rec.to,
                            concentrator_headend::money::time(rec.effective_at)
                        );
                        write_order(&rec.signed)?;
                        Ok(std::process::ExitCode::SUCCESS)
                    }
                    Err(OrderError::Refused(why)) => {
                        eprintln!("error: {why}");
                        Ok(std::process::ExitCode::from(1))
                    }
                    Err(e) => Err(e.into()),
                };
            }
            let dir = tenancy::spool_dir(&cfg);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let path = tenancy::spool(&dir, &req, nanos)
                .with_context(|| format!("writing the order request into {}", dir.display()))?;
            let stem = path.with_extension("");
            let (done, refused) = (stem.with_extension("done"), stem.with_extension("refused"));
            for _ in 0..300 {
                for (answer, code) in [(&done, 0u8), (&refused, 1u8)] {
                    if let Ok(text) = std::fs::read_to_string(answer) {
                        let _ = std::fs::remove_file(answer);
                        if code == 0 {
                            print!("{text}");
                            let signed = stem.with_extension("order");
                            if let Ok(hex_text) = std::fs::read_to_string(&signed) {
                                let _ = std::fs::remove_file(&signed);
                                write_order(&hex_text)?;
                            }
                        } else {
                            eprint!("error: {text}");
                        }
                        return Ok(std::process::ExitCode::from(code));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            bail!(
                "the store is in use (a running head-end holds it) and no head-end took the request within 30 s; it stays in {} and the running head-end takes it at its next tick (check that `concentrator-headend run` is running; its log names the order)",
                path.display()
            )
        }
    }
}
