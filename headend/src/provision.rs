//! `concentrator-headend provision`: enrols gateways, meters and customers from a [`Spec`] into the
//! store and writes each gateway's provisioning bundle (docs/install.md 1.4) and `customers.txt`.
//!
//! Idempotent: a subscriber already enrolled keeps its IMSI, K, OPc and SQN state (unless `rekey`, which
//! draws a new K and OPc), a meter keeps its token serials and account view, a customer keeps its
//! registration. A gateway certificate is issued again only when the bundle has no matching key.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use concentrator_security::identity::derive_kid;
use concentrator_security::sqn::SqnGenerator;
use openssl::x509::X509;
use rand::Rng;

use crate::backend::code_hash;
use crate::config::{read_hex, Config};
use crate::error::{HeadEndError, Result};
use crate::pki::{self, CertSpec, Usage};
use crate::spec::{GatewaySpec, MeterSpec, Spec};
use crate::store::{
    customer_key, gateway_key, meter_key, AccountView, Batch, CustomerRecord, GatewayRecord,
    MeterRecord, Store, SubscriberRef,
};

/// Where the bundle's configuration says the gateway keeps things.
#[derive(Debug, Clone)]
pub enum BundlePaths {
    /// The appliance: secrets in `/var/lib/concentrator/secrets`, the ledger rules in
    /// `/etc/concentrator`, the store `/var/lib/concentrator` (firstboot moves them there).
    Appliance,
    /// A gateway run from the bundle directory itself (the all-in-one demo, tests): every path in
    /// `concentrator.toml` points into the bundle, the store into `<bundle>/../store`.
    Local,
}

/// Options of a provisioning run.
#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    /// Output directory: `<out>/<gateway>/concentrator/` per gateway, `<out>/customers.txt`.
    pub out: PathBuf,
    /// Draw new K and OPc for subscribers already enrolled.
    pub rekey: bool,
    /// Path layout of the bundles.
    pub paths: BundlePaths,
    /// The gateway's own `concentratord`, to run its `validate` on every bundle before anything is
    /// written or enrolled (a bundle the gateway would refuse fails the run); `None`: not checked.
    pub validator: Option<PathBuf>,
}

/// `concentratord` beside this program or on the PATH, for [`ProvisionOptions::validator`].
pub fn find_validator() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("concentratord")));
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("concentratord"))
            .find(|c| c.is_file())
    });
    beside.filter(|b| b.is_file()).or(on_path)
}

/// The enrolled meters by number and by gateway, and the spec's entries by meter number.
struct MeterIndex<'a> {
    records: HashMap<&'a str, &'a MeterRecord>,
    by_gateway: HashMap<&'a str, Vec<&'a str>>,
    specs: HashMap<&'a str, &'a MeterSpec>,
}

impl<'a> MeterIndex<'a> {
    fn new(all: &'a [MeterRecord], spec: &'a Spec) -> MeterIndex<'a> {
        let mut by_gateway: HashMap<&str, Vec<&str>> = HashMap::new();
        for m in all {
            by_gateway
                .entry(m.gateway.as_str())
                .or_default()
                .push(m.meter.as_str());
        }
        MeterIndex {
            records: all.iter().map(|m| (m.meter.as_str(), m)).collect(),
            by_gateway,
            specs: spec.meters.iter().map(|m| (m.meter.as_str(), m)).collect(),
        }
    }

    /// A gateway's meters, each with its entry in this spec if it has one.
    fn of(&self, rec: &GatewayRecord) -> Vec<(&'a MeterRecord, Option<&'a MeterSpec>)> {
        rec.meters
            .iter()
            .filter_map(|m| self.records.get(m.as_str()))
            .map(|r| (*r, self.specs.get(r.meter.as_str()).copied()))
            .collect()
    }
}

/// Where the appliance keeps the secrets first boot moves out of the bundle.
const APPLIANCE_SECRETS: &str = "/var/lib/concentrator/secrets/";

/// The file name of the SIM's PIN that a `[modem]` table names in the appliance's secrets directory:
/// a secret the installer adds to the bundle, not the utility.
fn installer_pin(modem: &toml::Table) -> Option<&str> {
    modem
        .get("pin_file")
        .and_then(toml::Value::as_str)
        .and_then(|p| p.strip_prefix(APPLIANCE_SECRETS))
}

/// Writes each gateway's bundle in the local layout to a scratch directory and runs the gateway's
/// `concentratord validate` on it; the first refusal is the error, with the gateway named.
#[allow(clippy::too_many_arguments)]
fn check_bundles(
    validator: &Path,
    cfg: &Config,
    spec: &Spec,
    gateways: &[(&GatewaySpec, GatewayRecord, PathBuf)],
    index: &MeterIndex<'_>,
    ca: &X509,
    hn_public: &[u8],
    out: &Path,
) -> Result<()> {
    for (g, rec, dir) in gateways {
        let scratch = out.join(format!(".check-{}-{}", g.id, std::process::id()));
        let check = scratch.join("concentrator");
        let result = (|| -> Result<std::process::Output> {
            std::fs::create_dir_all(&check).map_err(HeadEndError::io(
                "bundle check directory",
                &check,
                "check that --out is writable",
            ))?;
            if let Ok(key) = std::fs::read(dir.join("gateway.key")) {
                pki::write_file(&check.join("gateway.key"), "gateway key", &key, true)?;
            }
            let gw_meters = index.of(rec);
            write_bundle(
                cfg,
                spec,
                g,
                rec,
                &gw_meters,
                ca,
                hn_public,
                &check,
                &BundlePaths::Local,
            )?;
            // The SIM's PIN is the installer's to add to the bundle (it is not the utility's): the
            // check sees a placeholder where the configuration names it.
            if let Some(file) = g.modem.as_ref().and_then(installer_pin) {
                pki::write_file(&check.join(file), "SIM PIN placeholder", b"0000\n", true)?;
            }
            std::process::Command::new(validator)
                .arg("validate")
                .arg(check.join("concentrator.toml"))
                .output()
                .map_err(|e| HeadEndError::Spec {
                    path: spec.base.clone(),
                    message: format!(
                        "cannot run the gateway's check {}: {e}",
                        validator.display()
                    ),
                })
        })();
        let _ = std::fs::remove_dir_all(&scratch);
        let output = result?;
        if !output.status.success() {
            let text = String::from_utf8_lossy(&output.stderr).replace(
                &check.display().to_string(),
                &format!("<bundle of {}>", g.id),
            );
            return Err(HeadEndError::Spec {
                path: spec.base.clone(),
                message: format!(
                    "the bundle of gateway {} would be refused by the gateway's own check (concentratord validate); no bundle was written and nothing enrolled:\n{}",
                    g.id,
                    text.trim_end()
                ),
            });
        }
    }
    Ok(())
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct ProvisionReport {
    /// Per gateway, its bundle directory.
    pub bundles: Vec<(String, PathBuf)>,
    /// Subscribers enrolled now (new), and kept.
    pub enrolled: u32,
    /// See `enrolled`.
    pub kept: u32,
    /// Authorization codes issued now: (customer id, code).
    pub codes: Vec<(String, String)>,
}

fn random_digits(n: usize) -> String {
    let mut r = rand::thread_rng();
    (0..n)
        .map(|_| char::from(b'0' + r.gen_range(0..10u8)))
        .collect()
}

fn new_imsi(
    store: &Store,
    cfg: &Config,
    taken: &mut std::collections::HashSet<String>,
) -> Result<String> {
    let prefix = format!("{}{}", cfg.pilot.mcc, cfg.pilot.mnc);
    loop {
        let imsi = format!("{prefix}{}", random_digits(15 - prefix.len()));
        if !taken.contains(&imsi) && store.subscriber_by_imsi(&imsi)?.is_none() {
            taken.insert(imsi.clone());
            return Ok(imsi);
        }
    }
}

fn random16() -> [u8; 16] {
    rand::random()
}

/// A one-time authorization code: 4 groups of 4 characters from an alphabet without look-alikes.
pub fn new_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut r = rand::thread_rng();
    let groups: Vec<String> = (0..4)
        .map(|_| {
            (0..4)
                .map(|_| char::from(ALPHABET[r.gen_range(0..ALPHABET.len())]))
                .collect()
        })
        .collect();
    groups.join("-")
}

/// The installer web UI for a bundle: a `[web]` table on `listen` with the gateway's certificate, a
/// users file (secret, in the bundle) with the scrypt hash of a generated password for `installer`, and
/// the password beside the bundle (`BUNDLE.installer-password`), for the utility to hand to the installer.
fn web_ui(
    t: &mut String,
    listen: &[String],
    dir: &Path,
    secret: &dyn Fn(&str) -> String,
) -> Result<()> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut raw = [0u8; 16];
    openssl::rand::rand_bytes(&mut raw)
        .map_err(HeadEndError::openssl("making the installer's password"))?;
    let password: String = raw
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    let hash = concentrator_mpc::password::hash(&password).map_err(|e| HeadEndError::Pki {
        what: "installer password",
        path: dir.join("web-users.toml"),
        reason: e.to_string(),
    })?;
    pki::write_file(
        &dir.join("web-users.toml"),
        "web UI users",
        format!(
            "[[user]]\nname = \"installer\"\nrole = \"installer\"\npassword = {}\n",
            toml_str(&hash)
        )
        .as_bytes(),
        true,
    )?;
    let name = dir
        .file_name()
        .map_or_else(|| "bundle".into(), |n| n.to_string_lossy().to_string());
    pki::write_file(
        &dir.with_file_name(format!("{name}.installer-password")),
        "installer password",
        format!("{password}\n").as_bytes(),
        true,
    )?;
    let listen: Vec<String> = listen.iter().map(|a| toml_str(a)).collect();
    let _ = writeln!(
        t,
        "\n[web]\nlisten = [{}]\ncert = {}\nkey = {}\nusers = {}",
        listen.join(", "),
        toml_str(&secret("gateway.pem")),
        toml_str(&secret("gateway.key")),
        toml_str(&secret("web-users.toml")),
    );
    Ok(())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Writes the bundles of `spec`, then enrols it, all or nothing: the store changes in one batch after
/// every file was written.
pub fn run(
    cfg: &Config,
    store: &Store,
    spec: &Spec,
    o: &ProvisionOptions,
) -> Result<ProvisionReport> {
    let ca = pki::load_cert(&cfg.path(&cfg.pki.ca_cert), "utility CA certificate")?;
    let ca_key = pki::load_key(&cfg.path(&cfg.pki.ca_key), "utility CA key")?;
    let kid_key = read_hex(&cfg.path(&cfg.pki.kid_key), "KID main key")?;
    let hn_public = read_hex(
        &cfg.path(&cfg.home_network.public_key),
        "home-network public key",
    )?;
    let mut report = ProvisionReport::default();
    let mut taken = std::collections::HashSet::new();
    let mut b = Batch::new();

    // Meters first (gateways list them).
    let mut meters: HashMap<String, MeterRecord> = HashMap::new();
    for m in &spec.meters {
        let rec = match store.meter(&m.meter)? {
            Some(mut r) => {
                report.kept += 1;
                if r.gateway != m.gateway {
                    log::info!(
                        "meter {} moves from gateway {} to {}",
                        m.meter,
                        r.gateway,
                        m.gateway
                    );
                }
                r.gateway = m.gateway.clone();
                r.dwelling = m.dwelling.clone();
                if o.rekey {
                    r.k = random16();
                    r.opc = random16();
                }
                r
            }
            None => {
                report.enrolled += 1;
                let imsi = new_imsi(store, cfg, &mut taken)?;
                let msisdn = m
                    .msisdn
                    .clone()
                    .unwrap_or_else(|| format!("{}{}", cfg.pilot.mcc, random_digits(9)));
                let imei = m.imei.clone().unwrap_or_else(|| random_digits(15));
                let kid = derive_kid(&kid_key, &imsi, &msisdn, &imei).map_err(|e| {
                    HeadEndError::Spec {
                        path: spec.base.clone(),
                        message: format!("[[meter]] {}: {e}", m.meter),
                    }
                })?;
                MeterRecord {
                    meter: m.meter.clone(),
                    gateway: m.gateway.clone(),
                    dwelling: m.dwelling.clone(),
                    imsi,
                    msisdn,
                    imei,
                    kid: hex::encode(kid.0),
                    k: random16(),
                    opc: random16(),
                    sqn: SqnGenerator::new(),
                    last_applied_serial: None,
                    view: AccountView::default(),
                    summary: None,
                }
            }
        };
        b.put(
            format!("imsi/{}", rec.imsi),
            &SubscriberRef::Meter(rec.meter.clone()),
        );
        b.put(meter_key(&rec.meter), &rec);
        meters.insert(rec.meter.clone(), rec);
    }
    // Every enrolled meter, for the gateways' lists (meters of earlier files stay enrolled).
    let mut all_meters: Vec<MeterRecord> = store
        .meters()?
        .into_iter()
        .filter(|r| !meters.contains_key(&r.meter))
        .collect();
    all_meters.extend(meters.values().cloned());
    // Indexes, so that a spec of 10,000 gateways and a million meters is not walked per gateway.
    let index = MeterIndex::new(&all_meters, spec);

    let mut gateways = Vec::new();
    for g in &spec.gateways {
        let broker = g.broker.clone().unwrap_or_else(|| cfg.mqtt.broker.clone());
        let mut rec = match store.gateway(&g.id)? {
            Some(mut r) => {
                report.kept += 1;
                if o.rekey {
                    r.k = random16();
                    r.opc = random16();
                }
                r.broker = broker;
                r
            }
            None => {
                report.enrolled += 1;
                GatewayRecord {
                    id: g.id.clone(),
                    imsi: new_imsi(store, cfg, &mut taken)?,
                    k: random16(),
                    opc: random16(),
                    sqn: SqnGenerator::new(),
                    cert_pem: String::new(),
                    broker,
                    meters: vec![],
                    online: false,
                    birth: None,
                }
            }
        };
        let mut list: Vec<String> = index
            .by_gateway
            .get(g.id.as_str())
            .map(|ms| ms.iter().map(|m| m.to_string()).collect())
            .unwrap_or_default();
        list.sort();
        rec.meters = list;
        let dir = o.out.join(&g.id).join("concentrator");
        std::fs::create_dir_all(&dir).map_err(HeadEndError::io(
            "bundle directory",
            &dir,
            "check that --out is writable",
        ))?;
        // The gateway's certificate: kept when the bundle still holds its key.
        let existing_key = pki::load_key(&dir.join("gateway.key"), "gateway key").ok();
        let existing_cert = X509::from_pem(rec.cert_pem.as_bytes()).ok();
        let keep = match (&existing_key, &existing_cert) {
            (Some(k), Some(c)) => c.public_key().map(|p| p.public_eq(k)).unwrap_or(false),
            _ => false,
        };
        if !keep || o.rekey {
            let (cert, key) = pki::issue(
                &ca,
                &ca_key,
                &CertSpec {
                    cn: &g.id,
                    ou: Some("gateway"),
                    usage: Usage::ClientAndSigning,
                    names: &[],
                    days: 3650,
                },
            )?;
            rec.cert_pem = String::from_utf8_lossy(&pki::cert_pem(&cert)?).into_owned();
            pki::write_file(
                &dir.join("gateway.key"),
                "gateway key",
                &pki::key_pem(&key)?,
                true,
            )?;
        }
        b.put(
            format!("imsi/{}", rec.imsi),
            &SubscriberRef::Gateway(rec.id.clone()),
        );
        b.put(gateway_key(&rec.id), &rec);
        gateways.push((g, rec, dir));
    }

    // Customers; codes already printed are reused when the previous customers.txt still holds them.
    let previous_codes = previous_codes(&o.out.join("customers.txt"));
    let mut lines = String::from(
        "# One-time authorization codes for the customers' first registration with the mpc phone client\n\
         # (`mpc register`). Hand each code to its customer only; the head-end keeps only its hash.\n\n",
    );
    for c in &spec.customers {
        let rec = match store.customer(&c.id)? {
            Some(mut r) => {
                report.kept += 1;
                r.name = c.name.clone();
                r.msisdn = c.msisdn.clone();
                r.meters = c.meters.clone();
                r
            }
            None => {
                report.enrolled += 1;
                CustomerRecord {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    user: None,
                    msisdn: c.msisdn.clone(),
                    imsi: new_imsi(store, cfg, &mut taken)?,
                    k: None,
                    opc: None,
                    sqn: SqnGenerator::new(),
                    password_hash: None,
                    meters: c.meters.clone(),
                    auth_code_hash: None,
                }
            }
        };
        let mut rec = rec;
        let line = if let Some(user) = &rec.user {
            format!("{}\t{}\tregistered as {user:?}\n", c.id, c.name)
        } else {
            let reuse = previous_codes
                .get(&c.id)
                .filter(|code| rec.auth_code_hash.as_deref() == Some(code_hash(code).as_str()))
                .cloned();
            let code = match reuse {
                Some(code) => code,
                None => {
                    let code = new_code();
                    if let Some(old) = &rec.auth_code_hash {
                        b.remove(format!("code/{old}"));
                    }
                    let h = code_hash(&code);
                    b.put(format!("code/{h}"), &rec.id);
                    rec.auth_code_hash = Some(h);
                    report.codes.push((c.id.clone(), code.clone()));
                    code
                }
            };
            format!("{}\t{}\t{code}\n", c.id, c.name)
        };
        lines.push_str(&line);
        b.put(
            format!("imsi/{}", rec.imsi),
            &SubscriberRef::Customer(rec.id.clone()),
        );
        b.put(customer_key(&rec.id), &rec);
    }

    if let Some(validator) = &o.validator {
        check_bundles(
            validator, cfg, spec, &gateways, &index, &ca, &hn_public, &o.out,
        )?;
    }
    for (g, rec, dir) in &gateways {
        let gw_meters = index.of(rec);
        write_bundle(
            cfg, spec, g, rec, &gw_meters, &ca, &hn_public, dir, &o.paths,
        )?;
        report.bundles.push((g.id.clone(), dir.clone()));
    }
    std::fs::create_dir_all(&o.out).map_err(HeadEndError::io(
        "output directory",
        &o.out,
        "check that it is writable",
    ))?;
    pki::write_file(
        &o.out.join("customers.txt"),
        "customers.txt",
        lines.as_bytes(),
        true,
    )?;
    // Enrolled only once every bundle and customers.txt are written, in one batch (one transaction
    // on PostgreSQL): a run that fails half-way enrols nothing, and running it again issues
    // everything afresh.
    store.commit(b)?;
    Ok(report)
}

fn previous_codes(path: &Path) -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 3).then(|| (f[0].to_string(), f[2].to_string()))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn write_bundle(
    cfg: &Config,
    spec: &Spec,
    g: &GatewaySpec,
    rec: &GatewayRecord,
    meters: &[(&MeterRecord, Option<&MeterSpec>)],
    ca: &X509,
    hn_public: &[u8],
    dir: &Path,
    paths: &BundlePaths,
) -> Result<()> {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let (secrets, etc, default_store) = match paths {
        BundlePaths::Appliance => (
            PathBuf::from(APPLIANCE_SECRETS.trim_end_matches('/')),
            PathBuf::from("/etc/concentrator"),
            "/var/lib/concentrator".to_string(),
        ),
        BundlePaths::Local => (
            abs.clone(),
            abs.clone(),
            abs.parent()
                .unwrap_or(&abs)
                .join("store")
                .display()
                .to_string(),
        ),
    };
    let secret = |name: &str| secrets.join(name).display().to_string();
    // The ledger's rules.
    let ledger_text = match (&g.ledger, &g.ledger_file) {
        (Some(t), _) => toml::to_string(t).map_err(|e| HeadEndError::Spec {
            path: spec.base.clone(),
            message: format!("[[gateway]] {}: ledger table: {e}", g.id),
        })?,
        (None, Some(f)) => {
            let p = if f.is_absolute() {
                f.clone()
            } else {
                spec.base.join(f)
            };
            std::fs::read_to_string(&p).map_err(HeadEndError::io(
                "ledger rules",
                &p,
                "ledger_file is relative to the provisioning file",
            ))?
        }
        (None, None) => String::new(),
    };
    pki::write_file(
        &dir.join("ledger.toml"),
        "ledger rules",
        ledger_text.as_bytes(),
        false,
    )?;
    pki::write_file(
        &dir.join("utility-ca.pem"),
        "utility CA",
        &pki::cert_pem(ca)?,
        false,
    )?;
    pki::write_file(
        &dir.join("gateway.pem"),
        "gateway certificate",
        rec.cert_pem.as_bytes(),
        false,
    )?;

    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Provisioning bundle of gateway {id} (concentrator-headend provision). Copy this folder to the\n\
         # card's RASPIFIRM partition as concentrator/ (docs/install.md 1.4). Every file but this one and\n\
         # ledger.toml is a secret.\n\n[gateway]\nid = {idq}\nstore = {store}\n",
        id = rec.id,
        idq = toml_str(&rec.id),
        store = toml_str(g.store.as_deref().unwrap_or(&default_store)),
    );
    for bus in &g.bus {
        let mut wrapper = toml::Table::new();
        wrapper.insert(
            "bus".into(),
            toml::Value::Array(vec![toml::Value::Table(bus.clone())]),
        );
        let _ = writeln!(t, "{}", toml::to_string(&wrapper).unwrap_or_default());
    }
    for (_, ms) in meters {
        // A meter enrolled by an earlier spec file has no entry in this one: its keys only.
        let Some(ms) = ms else {
            continue;
        };
        let mut table = toml::Table::new();
        for (key, value) in [
            ("bus", &ms.bus),
            ("address", &ms.address),
            ("driver", &ms.driver),
        ] {
            if let Some(v) = value {
                table.insert(key.into(), v.clone().into());
            }
        }
        table.insert("dwelling".into(), ms.dwelling.clone().into());
        table.insert("meter_id".into(), ms.meter.clone().into());
        for (k, v) in &ms.extra {
            table.insert(k.clone(), v.clone());
        }
        let mut wrapper = toml::Table::new();
        wrapper.insert(
            "meter".into(),
            toml::Value::Array(vec![toml::Value::Table(table)]),
        );
        let _ = writeln!(t, "{}", toml::to_string(&wrapper).unwrap_or_default());
    }
    // The gateway's own sections, passed on as the block file gives them.
    for (name, table) in [
        ("modem", &g.modem),
        ("balance", &g.balance),
        ("power", &g.power),
        ("update", &g.update),
    ] {
        if let Some(table) = table {
            let mut table = table.clone();
            // The SIM's PIN, named in the appliance's secrets directory, is the bundle's own file in
            // the local layout.
            if let Some(file) = (name == "modem").then(|| installer_pin(&table)).flatten() {
                table.insert("pin_file".into(), secret(file).into());
            }
            let mut wrapper = toml::Table::new();
            wrapper.insert(name.into(), toml::Value::Table(table));
            let _ = writeln!(t, "{}", toml::to_string(&wrapper).unwrap_or_default());
        }
    }
    for zigbee in &g.zigbee {
        let mut wrapper = toml::Table::new();
        wrapper.insert(
            "zigbee".into(),
            toml::Value::Array(vec![toml::Value::Table(zigbee.clone())]),
        );
        let _ = writeln!(t, "{}", toml::to_string(&wrapper).unwrap_or_default());
    }
    // The token inbox lets a customer's saved token be applied while the daemon runs (the local path
    // when the uplink is down: `concentrator topup --config … --token FILE`).
    let store_dir = PathBuf::from(g.store.as_deref().unwrap_or(&default_store));
    let mut ledger_extra = toml::Table::new();
    ledger_extra.insert(
        "token_inbox".into(),
        store_dir.join("inbox").display().to_string().into(),
    );
    for (k, v) in g.ledger_options.iter().flatten() {
        ledger_extra.insert(k.clone(), v.clone());
    }
    let uplink_extra = g.uplink_options.clone().unwrap_or_default();
    let _ = writeln!(
        t,
        "[ledger]\nconfig = {ledger}\nutility_ca = {ca}\ngateway_key = {key}\ngateway_cert_chain = {cert}\n{ledger_extra}\n\
         [uplink]\nbroker = {broker}\nca = {ca}\ncert = {cert}\nkey = {key}\naka = {aka}\n{uplink_extra}",
        ledger = toml_str(&etc.join("ledger.toml").display().to_string()),
        ca = toml_str(&secret("utility-ca.pem")),
        key = toml_str(&secret("gateway.key")),
        cert = toml_str(&secret("gateway.pem")),
        broker = toml_str(&rec.broker),
        aka = toml_str(&secret("aka.toml")),
        ledger_extra = toml::to_string(&ledger_extra).unwrap_or_default(),
        uplink_extra = toml::to_string(&uplink_extra).unwrap_or_default(),
    );
    if let Some(listen) = &g.web_listen {
        web_ui(&mut t, listen, dir, &secret)?;
    }
    pki::write_file(
        &dir.join("concentrator.toml"),
        "bundle configuration",
        t.as_bytes(),
        false,
    )?;

    let mut a = String::new();
    let _ = writeln!(
        a,
        "# AKA credentials of gateway {id} and its meters (secret). docs/protocol.md, \"Attach, AKA and\n\
         # security mode over MQTT\".\nhome_network_key_id = {kid}\nprofile = {profile}\nhome_network_public_key = {pk}\nmodes = [{modes}]\n\n\
         [gateway]\nimsi = {imsi}\nk = {k}\nopc = {opc}",
        id = rec.id,
        kid = cfg.home_network.key_id,
        profile = toml_str(&cfg.home_network.profile.to_lowercase()),
        pk = toml_str(&hex::encode(hn_public)),
        modes = cfg.aka.modes.iter().map(|m| toml_str(m)).collect::<Vec<_>>().join(", "),
        imsi = toml_str(&rec.imsi),
        k = toml_str(&hex::encode(rec.k)),
        opc = toml_str(&hex::encode(rec.opc)),
    );
    for (m, _) in meters {
        let _ = writeln!(
            a,
            "\n[[meter]]\nmeter = {}\nimsi = {}\nk = {}\nopc = {}",
            toml_str(&m.meter),
            toml_str(&m.imsi),
            toml_str(&hex::encode(m.k)),
            toml_str(&hex::encode(m.opc)),
        );
    }
    pki::write_file(&dir.join("aka.toml"), "AKA credentials", a.as_bytes(), true)?;
    Ok(())
}
