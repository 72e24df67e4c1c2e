//! `headend.toml`: the pilot's settings, written by `concentrator-headend init` and read by every other
//! command. Relative paths are relative to the file's directory. Unknown keys are refused.

use std::path::{Path, PathBuf};

use concentrator_security::suci::Profile;
use concentrator_security::SecurityMode;
use serde::{Deserialize, Serialize};

use crate::error::{HeadEndError, Result};

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The home network and the money.
    pub pilot: Pilot,
    /// The broker connection.
    pub mqtt: Mqtt,
    /// The utility CA and the token signer.
    pub pki: Pki,
    /// The SUCI key pair the gateways conceal IMSIs for.
    pub home_network: HomeNetwork,
    /// The subscriber store.
    pub store: StoreSection,
    /// The phone-facing server.
    pub phone: Phone,
    /// Credit tokens.
    #[serde(default)]
    pub tokens: Tokens,
    /// AKA and security mode.
    #[serde(default)]
    pub aka: Aka,
    /// Reconciliation with the gateways.
    #[serde(default)]
    pub reconcile: Reconcile,
    /// The customer's mobile web app over HTTPS (`[phone_web]`); absent: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_web: Option<PhoneWeb>,
    /// The directory relative paths are resolved against (the file's); not in the file.
    #[serde(skip)]
    pub base: PathBuf,
}

/// `[pilot]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pilot {
    /// Mobile country code of the pilot's IMSIs (3 digits; 001 is the test network).
    pub mcc: String,
    /// Mobile network code (2 or 3 digits).
    pub mnc: String,
    /// ISO 4217 currency of every account and token.
    pub currency: String,
}

/// `[mqtt]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    /// `mqtts://HOST[:PORT]` (port 8883 by default), or `mqtt://127.0.0.1:PORT` (plain, loopback only).
    pub broker: String,
    /// MQTT client id (persistent session). Several workers: each adds its `run --worker NAME`.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Several workers: the MQTT shared-subscription group (`$share/GROUP/...`, Mosquitto 2.0 and
    /// every MQTT 5 broker), so that each gateway message reaches one worker. Needs `[store] backend
    /// = "postgres"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_group: Option<String>,
    /// Engine threads of a worker on PostgreSQL: each gateway's messages go to one of them, so
    /// gateways are worked on in parallel while each one's messages keep their order. On sled there
    /// is one.
    #[serde(default = "default_engines")]
    pub engines: usize,
    /// CA certificate(s) the broker's certificate chains to (PEM).
    pub ca: PathBuf,
    /// The head-end's client certificate (CN `head-end`, the ACL's user name).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

fn default_engines() -> usize {
    4
}

fn default_client_id() -> String {
    "head-end".into()
}

/// `[pki]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pki {
    /// The utility CA certificate: trust anchor of tokens, receipts and TLS.
    pub ca_cert: PathBuf,
    /// The CA key (provisioning issues gateway certificates with it; keep it offline after).
    pub ca_key: PathBuf,
    /// The token-signing certificate (OU `head-end`).
    pub token_cert: PathBuf,
    /// Its key.
    pub token_key: PathBuf,
    /// The main key of KID derivation (hex, 32 octets).
    pub kid_key: PathBuf,
}

/// `[home_network]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeNetwork {
    /// `a` (X25519) or `b` (P-256).
    pub profile: String,
    /// The key id the gateways name in attach requests.
    pub key_id: u8,
    /// The private key (hex in a file).
    pub private_key: PathBuf,
    /// The public key (hex in a file; 33 octets compressed for b, 32 for a).
    pub public_key: PathBuf,
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Which database: `sled` (the default: embedded, one head-end process) or `postgres` (many
    /// workers; `url` says where).
    #[serde(default)]
    pub backend: StoreBackend,
    /// The sled database directory (with `postgres`, only the default anchor file's name uses it).
    pub path: PathBuf,
    /// PostgreSQL: `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=require&...]`, or
    /// the key-value form (`host=/run/postgresql dbname=headend user=headend`). A password is better
    /// kept in `~/.pgpass` or `PGPASSWORD` than here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// PostgreSQL: CA certificate(s) (PEM) the server's certificate chains to, when TLS is used and
    /// the system's trust store does not know the server's CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// PostgreSQL: connections kept open by each worker.
    #[serde(default = "default_pool")]
    pub pool: usize,
    /// Uplink message ids remembered per gateway for deduplication.
    #[serde(default = "default_dedup")]
    pub dedup_per_gateway: u64,
    /// The payment record's anchor file, outside the database directory (default: beside it,
    /// `<path>.anchor`): one line `len hexhash unix_time` per append, fsynced.
    #[serde(default)]
    pub anchor: Option<PathBuf>,
    /// The key-encryption key file (64 hex digits, mode 0600, kept outside the database and backed up
    /// apart from it): subscriber keys (K, OPc, CK, IK) are stored encrypted under it. `init` writes
    /// one; without it they are stored in the clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek: Option<PathBuf>,
}

fn default_dedup() -> u64 {
    100_000
}

fn default_pool() -> usize {
    8
}

/// `[store] backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// sled in `[store] path`: nothing to install, one head-end process.
    #[default]
    Sled,
    /// PostgreSQL at `[store] url`: several workers, `status` and `audit` while they run.
    Postgres,
}

/// `[phone_web]`: the customer's mobile web app (headend/src/web), with `[phone]`'s certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneWeb {
    /// Listener address, e.g. `127.0.0.1:8444`.
    pub listen: String,
}

/// `[phone]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phone {
    /// Listener address, e.g. `0.0.0.0:8443`.
    pub listen: String,
    /// TLS certificate (SAN localhost, 127.0.0.1 and the `--host` name).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// `[tokens]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// Validity of a credit token, days.
    #[serde(default = "default_lifetime_days")]
    pub lifetime_days: u32,
    /// Smallest top-up, minor units.
    #[serde(default = "default_min")]
    pub min_minor: u64,
    /// Largest top-up, minor units.
    #[serde(default = "default_max")]
    pub max_minor: u64,
}

fn default_lifetime_days() -> u32 {
    30
}
fn default_min() -> u64 {
    100
}
fn default_max() -> u64 {
    100_000
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            lifetime_days: default_lifetime_days(),
            min_minor: default_min(),
            max_minor: default_max(),
        }
    }
}

/// `[aka]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aka {
    /// Lifetime of the keys of a security context, seconds (TIDs live as long).
    #[serde(default = "default_key_lifetime")]
    pub key_lifetime_s: u64,
    /// Allowed pairs, preferred first: `aes` (128-EIA2/EEA2), `kasumi` (UIA1/UEA1).
    #[serde(default = "default_modes")]
    pub modes: Vec<String>,
    /// Accepted distance of an envelope's timestamp from our clock, seconds.
    #[serde(default = "default_window")]
    pub window_s: u64,
}

fn default_key_lifetime() -> u64 {
    86_400
}
fn default_modes() -> Vec<String> {
    vec!["aes".into(), "kasumi".into()]
}
fn default_window() -> u64 {
    300
}

impl Default for Aka {
    fn default() -> Self {
        Aka {
            key_lifetime_s: default_key_lifetime(),
            modes: default_modes(),
            window_s: default_window(),
        }
    }
}

/// `[reconcile]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    /// Account requests to meters with pending tokens, every this many seconds (and at every birth).
    #[serde(default = "default_interval")]
    pub interval_s: u64,
    /// A top-up command without a result after this many seconds is sent again.
    #[serde(default = "default_result_timeout")]
    pub result_timeout_s: u64,
    /// The gateways' audit anchors recorded here are confirmed to them (0x8D, so they may archive
    /// below) at most every this many seconds per gateway.
    #[serde(default = "default_anchor_confirm_every")]
    pub anchor_confirm_every_s: u64,
    /// Meters whose readings are looked at for gaps per second, at most (each look is about three
    /// store reads): a million meters at the default 200 take 83 minutes a sweep, at a steady cost
    /// instead of one that grows with the meters; raise it on a larger database.
    #[serde(default = "default_gap_checks_per_s")]
    pub gap_checks_per_s: u64,
}

fn default_gap_checks_per_s() -> u64 {
    200
}

fn default_anchor_confirm_every() -> u64 {
    3600
}

fn default_interval() -> u64 {
    900
}
fn default_result_timeout() -> u64 {
    300
}

impl Default for Reconcile {
    fn default() -> Self {
        Reconcile {
            interval_s: default_interval(),
            result_timeout_s: default_result_timeout(),
            anchor_confirm_every_s: default_anchor_confirm_every(),
            gap_checks_per_s: default_gap_checks_per_s(),
        }
    }
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS (always, except loopback tests).
    pub tls: bool,
}

/// Parses `mqtts://HOST[:PORT]` or `mqtt://LOOPBACK:PORT`.
pub fn parse_broker(url: &str) -> std::result::Result<BrokerAddr, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(format!(
            "broker {url:?} has no scheme; write mqtts://HOST:8883 (or mqtt://127.0.0.1:PORT for a loopback test broker)"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(':') => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse::<u16>()
                .map_err(|_| format!("broker {url:?}: port {p:?} is not a number 1-65535"))?,
        ),
        _ => (rest.to_string(), 8883),
    };
    if host.is_empty() {
        return Err(format!("broker {url:?} names no host"));
    }
    if !tls && !matches!(host.as_str(), "127.0.0.1" | "::1" | "localhost") {
        return Err(format!(
            "broker {url:?}: plain mqtt:// is allowed only to a loopback address; use mqtts:// for {host}"
        ));
    }
    Ok(BrokerAddr { host, port, tls })
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(HeadEndError::io(
            "configuration",
            path,
            "give the headend.toml that `concentrator-headend init DIR` wrote",
        ))?;
        let mut c: Config = toml::from_str(&text).map_err(|e| HeadEndError::Config {
            path: path.to_path_buf(),
            message: format!("{e}"),
        })?;
        c.base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        c.check().map_err(|message| HeadEndError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(c)
    }

    /// Consistency checks beyond the types.
    pub fn check(&self) -> std::result::Result<(), String> {
        let digits =
            |s: &str, n: &[usize]| n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(&self.pilot.mcc, &[3]) {
            return Err(format!(
                "[pilot] mcc {:?} is not 3 digits (001 for a test network)",
                self.pilot.mcc
            ));
        }
        if !digits(&self.pilot.mnc, &[2, 3]) {
            return Err(format!(
                "[pilot] mnc {:?} is not 2 or 3 digits",
                self.pilot.mnc
            ));
        }
        if self.pilot.currency.len() != 3
            || !self.pilot.currency.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(format!(
                "[pilot] currency {:?} is not an ISO 4217 code of three upper-case letters (e.g. EUR)",
                self.pilot.currency
            ));
        }
        parse_broker(&self.mqtt.broker).map_err(|e| format!("[mqtt] {e}"))?;
        self.profile()?;
        self.modes()?;
        if self.tokens.min_minor == 0 || self.tokens.min_minor > self.tokens.max_minor {
            return Err(format!(
                "[tokens] min_minor {} and max_minor {}: give 0 < min_minor <= max_minor",
                self.tokens.min_minor, self.tokens.max_minor
            ));
        }
        if self.tokens.lifetime_days == 0 {
            return Err(
                "[tokens] lifetime_days is 0: tokens would expire when issued; give 1 or more"
                    .into(),
            );
        }
        if self.aka.key_lifetime_s < 60 {
            return Err(format!(
                "[aka] key_lifetime_s {} is under a minute: the gateway would re-authenticate all the time; give 3600 or more",
                self.aka.key_lifetime_s
            ));
        }
        if self.reconcile.interval_s == 0
            || self.reconcile.result_timeout_s == 0
            || self.reconcile.gap_checks_per_s == 0
        {
            return Err(
                "[reconcile] interval_s, result_timeout_s and gap_checks_per_s must be above 0"
                    .into(),
            );
        }
        Ok(())
    }

    /// The SUCI profile.
    pub fn profile(&self) -> std::result::Result<Profile, String> {
        match self.home_network.profile.as_str() {
            "a" | "A" => Ok(Profile::A),
            "b" | "B" => Ok(Profile::B),
            other => Err(format!(
                "[home_network] profile {other:?} is neither \"a\" nor \"b\""
            )),
        }
    }

    /// The allowed security modes, preferred first.
    pub fn modes(&self) -> std::result::Result<Vec<SecurityMode>, String> {
        let mut out = Vec::new();
        for m in &self.aka.modes {
            let mode = match m.as_str() {
                "aes" => SecurityMode::AES,
                "kasumi" => SecurityMode::KASUMI,
                other => {
                    return Err(format!(
                        "[aka] modes: {other:?} is not a mode; use \"aes\" and/or \"kasumi\""
                    ))
                }
            };
            if !out.contains(&mode) {
                out.push(mode);
            }
        }
        if out.is_empty() {
            return Err("[aka] modes is empty; allow at least \"aes\"".into());
        }
        Ok(out)
    }

    /// The payment record's anchor file: `[store] anchor`, or `<[store] path>.anchor` beside the
    /// database directory.
    pub fn anchor_path(&self) -> PathBuf {
        match &self.store.anchor {
            Some(p) => self.path(p),
            None => {
                let mut s = self.path(&self.store.path).into_os_string();
                s.push(".anchor");
                PathBuf::from(s)
            }
        }
    }

    /// A path from the file, resolved against its directory.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// The broker address.
    pub fn broker(&self) -> Result<BrokerAddr> {
        parse_broker(&self.mqtt.broker).map_err(|message| HeadEndError::Config {
            path: self.base.join("headend.toml"),
            message,
        })
    }
}

/// Reads a hex file (keys), trimming whitespace.
pub fn read_hex(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).map_err(HeadEndError::io(
        what,
        path,
        "run `concentrator-headend init` or fix the path in headend.toml",
    ))?;
    hex::decode(text.trim()).map_err(|e| HeadEndError::Pki {
        what,
        path: path.to_path_buf(),
        reason: format!("not hex ({e}); the file holds the key as hex digits"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker("mqtts://he.example:8884").unwrap(),
            BrokerAddr {
                host: "he.example".into(),
                port: 8884,
                tls: true
            }
        );
        assert_eq!(parse_broker("mqtts://he.example").unwrap().port, 8883);
        assert!(parse_broker("mqtt://127.0.0.1:1883").is_ok());
        assert!(parse_broker("mqtt://he.example:1883")
            .unwrap_err()
            .contains("loopback"));
        assert!(parse_broker("he.example:1883")
            .unwrap_err()
            .contains("scheme"));
        assert!(parse_broker("mqtts://h:99999")
            .unwrap_err()
            .contains("port"));
    }
}
