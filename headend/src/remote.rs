//! Remote configuration of gateways: tariff updates (0x86) and configuration changes (0x88) as the
//! utility issues them (`concentrator-headend tariff set`, `config set`), recorded in the store and
//! delivered by the engine with the retry rules of top-ups (docs/protocol.md, *Delivery, retries and
//! reconciliation*).
//!
//! The command line does not write the store (on sled it is locked while the head-end runs): it drops
//! a request file into the spool directory `commands/` beside `headend.toml` (written under a temporary
//! name, synced and renamed). The running head-end takes each request into its store (a record written
//! once, under the request's id), removes the file, sends the command and, at every step, writes the
//! command's state to `commands/<id>.status.json`, which `concentrator-headend commands` shows.

use std::path::{Path, PathBuf};

use concentrator_protocol::{
    Body, ConfigChange, ConfigSetting, ConfigValue, Rate, Switch, TariffUpdate,
};
use serde::{Deserialize, Serialize};

/// Where a request is once issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteState {
    /// Waiting to be sent, or for the gateway's answer.
    Pending,
    /// Carried out (or found done already): the gateway's words are in `reason`.
    Done,
    /// Refused by the gateway for good: its reason is in `reason`.
    Refused,
}

/// What a request asks of the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RemoteBody {
    /// A tariff update, as on the wire.
    Tariff {
        /// Tariff id.
        tariff_id: u32,
        /// In force from, unix seconds.
        effective_from: u64,
        /// ISO 4217.
        currency: String,
        /// Standing charge per day, minor units.
        standing_charge_minor_per_day: u64,
        /// (rate id, millionths of a minor unit per kWh).
        rates: Vec<(u8, u64)>,
        /// (days bitmap, start minute, rate id).
        switches: Vec<(u8, u16, u8)>,
        /// YYYYMMDD.
        special_days: Vec<u32>,
        /// Minutes east of UTC.
        utc_offset_min: i16,
    },
    /// Configuration settings, all or none.
    Config {
        /// (dotted key, value).
        settings: Vec<(String, SettingValue)>,
    },
    /// The head-end's time, taken when each copy is sealed: the gateway compares it with its clock and
    /// steps an unsynchronised one within its limit (docs/protocol.md, *Time sync*).
    TimeSync,
}

/// A configuration value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SettingValue {
    /// A flag.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
}

impl RemoteBody {
    /// The wire body.
    pub fn to_wire(&self) -> Body {
        match self {
            RemoteBody::Tariff {
                tariff_id,
                effective_from,
                currency,
                standing_charge_minor_per_day,
                rates,
                switches,
                special_days,
                utc_offset_min,
            } => Body::TariffUpdate(TariffUpdate {
                tariff_id: *tariff_id,
                effective_from: *effective_from,
                currency: currency.clone(),
                standing_charge_minor_per_day: *standing_charge_minor_per_day,
                rates: rates
                    .iter()
                    .map(|&(id, price_micro_per_kwh)| Rate {
                        id,
                        price_micro_per_kwh,
                    })
                    .collect(),
                calendar: switches
                    .iter()
                    .map(|&(days, start_minute, rate)| Switch {
                        days,
                        start_minute,
                        rate,
                    })
                    .collect(),
                special_days: special_days.clone(),
                utc_offset_min: *utc_offset_min,
            }),
            RemoteBody::Config { settings } => Body::ConfigChange(ConfigChange {
                settings: settings
                    .iter()
                    .map(|(key, v)| ConfigSetting {
                        key: key.clone(),
                        value: match v {
                            SettingValue::Bool(b) => ConfigValue::Bool(*b),
                            SettingValue::Int(i) => ConfigValue::Int(*i),
                            SettingValue::Text(t) => ConfigValue::Text(t.clone()),
                        },
                    })
                    .collect(),
            }),
            RemoteBody::TimeSync => Body::TimeSync(concentrator_protocol::TimeSync {
                unix_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            }),
        }
    }
}

/// A remote command as recorded (`rc/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCommand {
    /// The request id (also the spool file's name).
    pub id: String,
    /// The gateway.
    pub gateway: String,
    /// What it is, in words.
    pub what: String,
    /// The command.
    pub body: RemoteBody,
    /// When it was issued, unix seconds.
    pub issued_at: u64,
    /// Where it is.
    pub state: RemoteState,
    /// The message id of the last send (hex).
    pub command: Option<String>,
    /// When it was last sent.
    pub sent_at: Option<u64>,
    /// How many times it was sent.
    pub sends: u32,
    /// The gateway's last result code.
    pub result: Option<u16>,
    /// When it came.
    pub result_at: Option<u64>,
    /// The gateway's words (what changed, or why not).
    pub reason: Option<String>,
}

/// The store key of a remote command.
pub fn remote_key(id: &str) -> String {
    format!("rc/{id}")
}

/// The store key that maps a message id to its remote command.
pub fn remote_message_key(message_id: &str) -> String {
    format!("rcmd/{message_id}")
}

/// The spool directory of a head-end configured by `headend.toml` at `config_base`.
pub fn spool_dir(config_base: &Path) -> PathBuf {
    config_base.join("commands")
}

/// Writes `text` to `path` through a synced temporary file and a rename.
fn write_durably(path: &Path, text: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("partial");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Drops a request into the spool for the running head-end.
pub fn issue(spool: &Path, c: &RemoteCommand) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(spool)?;
    let path = spool.join(format!("{}.json", c.id));
    let text = serde_json::to_vec_pretty(c).map_err(std::io::Error::other)?;
    write_durably(&path, &text)?;
    Ok(path)
}

/// Writes a command's state beside the requests (for `concentrator-headend commands`).
pub fn write_status(spool: &Path, c: &RemoteCommand) -> std::io::Result<()> {
    std::fs::create_dir_all(spool)?;
    let text = serde_json::to_vec_pretty(c).map_err(std::io::Error::other)?;
    write_durably(&spool.join(format!("{}.status.json", c.id)), &text)
}

/// Requests waiting in the spool: (file, the request or why it does not read).
pub fn waiting(spool: &Path) -> Vec<(PathBuf, Result<RemoteCommand, String>)> {
    let Ok(dir) = std::fs::read_dir(spool) else {
        return Vec::new();
    };
    let mut out: Vec<_> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".json") && !n.ends_with(".status.json"))
        })
        .map(|p| {
            let r = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            (p, r)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every command's last state written to the spool, oldest first.
pub fn statuses(spool: &Path) -> Vec<RemoteCommand> {
    let Ok(dir) = std::fs::read_dir(spool) else {
        return Vec::new();
    };
    let mut out: Vec<RemoteCommand> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".status.json"))
        })
        .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
        .collect();
    out.sort_by(|a, b| (a.issued_at, &a.id).cmp(&(b.issued_at, &b.id)));
    out
}

// ---- the tariff file ----

/// A tariff as the utility writes it (`concentrator-headend tariff set --file tariff.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffFile {
    /// The tariff's id (1 or more; one id, one tariff).
    pub tariff_id: u32,
    /// In force from, local time `YYYY-MM-DD HH:MM` (or `HH:MM:SS`).
    pub in_force_from: String,
    /// The gateway's local time, minutes east of UTC (as its `[ledger]` file says).
    pub utc_offset_minutes: i16,
    /// ISO 4217; default: the pilot's currency.
    pub currency: Option<String>,
    /// Standing charge, minor units per day.
    #[serde(default)]
    pub standing_charge_minor_per_day: u64,
    /// The rates.
    #[serde(rename = "rate")]
    pub rates: Vec<RateEntry>,
    /// The week's switches.
    #[serde(rename = "switch")]
    pub switches: Vec<SwitchEntry>,
    /// Special days (public holidays), `YYYY-MM-DD`.
    #[serde(default)]
    pub special_days: Vec<String>,
}

/// One rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateEntry {
    /// Its id.
    pub id: u8,
    /// Minor units per kWh, as a decimal (`"28"`, `"28.125"`).
    pub minor_per_kwh: String,
}

/// One switch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchEntry {
    /// `weekdays`, `saturday`, `sunday`, `special`, `every_day`, or day names `monday` … `sunday`.
    pub days: Vec<String>,
    /// Local `HH:MM`.
    pub from: String,
    /// The rate id.
    pub rate: u8,
}

/// A decimal amount of minor units to millionths.
fn micro(text: &str) -> Option<u64> {
    let (whole, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if frac.len() > 3 || whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let w: u64 = whole.parse().ok()?;
    let f: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    w.checked_mul(1_000_000)?.checked_add(f)
}

fn days_bits(names: &[String]) -> Result<u8, String> {
    let mut bits = 0u8;
    for n in names {
        bits |= match n.as_str() {
            "monday" => 0x01,
            "tuesday" => 0x02,
            "wednesday" => 0x04,
            "thursday" => 0x08,
            "friday" => 0x10,
            "saturday" => 0x20,
            "sunday" => 0x40,
            "special" => 0x80,
            "weekdays" => 0x1f,
            "weekend" => 0x60,
            "every_day" => 0xff,
            other => {
                return Err(format!(
                "day {other:?} is not one of monday … sunday, weekdays, weekend, special, every_day"
            ))
            }
        };
    }
    Ok(bits)
}

fn hh_mm(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn civil(text: &str) -> Option<concentrator_ledger::calendar::Date> {
    text.parse().ok()
}

impl TariffFile {
    /// Reads and checks a tariff file; `currency` is the pilot's.
    pub fn load(path: &Path, currency: &str) -> Result<(RemoteBody, String), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the tariff file {}: {e}", path.display()))?;
        let file: TariffFile =
            toml::from_str(&text).map_err(|e| format!("tariff file {}: {e}", path.display()))?;
        file.to_body(currency)
            .map_err(|e| format!("tariff file {}: {e}", path.display()))
    }

    /// The wire command and its description.
    pub fn to_body(&self, pilot_currency: &str) -> Result<(RemoteBody, String), String> {
        let (date, time) = self
            .in_force_from
            .split_once(' ')
            .ok_or("in_force_from is not \"YYYY-MM-DD HH:MM\"")?;
        let day = civil(date).ok_or("in_force_from is not \"YYYY-MM-DD HH:MM\"")?;
        // Seconds are allowed (`HH:MM:SS`) for tests; a utility writes minutes.
        let (hm, secs) = match time.matches(':').count() {
            2 => {
                let (hm, ss) = time.rsplit_once(':').unwrap_or((time, "0"));
                (hm, ss.parse::<u16>().ok().filter(|s| *s < 60))
            }
            _ => (time, Some(0)),
        };
        let bad = "in_force_from is not \"YYYY-MM-DD HH:MM\"";
        let minute = hh_mm(hm).ok_or(bad)?;
        let secs = secs.ok_or(bad)?;
        let local = day.0 * 86_400 + i64::from(minute) * 60 + i64::from(secs);
        let at = u64::try_from(local - i64::from(self.utc_offset_minutes) * 60)
            .map_err(|_| "in_force_from is before 1970".to_string())?;
        let mut rates = Vec::new();
        for r in &self.rates {
            let m = micro(&r.minor_per_kwh).ok_or_else(|| {
                format!(
                    "rate {}: minor_per_kwh {:?} is not a decimal such as \"28.5\" (at most 3 decimals: gateways charge in thousandths of a minor unit per kWh)",
                    r.id, r.minor_per_kwh
                )
            })?;
            rates.push((r.id, m));
        }
        let mut switches = Vec::new();
        for (i, s) in self.switches.iter().enumerate() {
            let days = days_bits(&s.days).map_err(|e| format!("switch {}: {e}", i + 1))?;
            let start = hh_mm(&s.from)
                .ok_or_else(|| format!("switch {}: from {:?} is not HH:MM", i + 1, s.from))?;
            switches.push((days, start, s.rate));
        }
        let mut special = Vec::new();
        for d in &self.special_days {
            let (y, m, dd) = civil(d)
                .ok_or_else(|| format!("special day {d:?} is not YYYY-MM-DD"))?
                .ymd();
            special.push(u32::try_from(y).unwrap_or(0) * 10_000 + m * 100 + dd);
        }
        let currency = self
            .currency
            .clone()
            .unwrap_or_else(|| pilot_currency.to_string());
        let sign = if self.utc_offset_minutes < 0 {
            '-'
        } else {
            '+'
        };
        let off = self.utc_offset_minutes.unsigned_abs();
        let what = format!(
            "tariff {} in force from {} local time (UTC{sign}{:02}:{:02}), {} rate(s), standing charge {} per day",
            self.tariff_id,
            self.in_force_from,
            off / 60,
            off % 60,
            rates.len(),
            crate::money::money_u(self.standing_charge_minor_per_day, &currency)
        );
        Ok((
            RemoteBody::Tariff {
                tariff_id: self.tariff_id,
                effective_from: at,
                currency,
                standing_charge_minor_per_day: self.standing_charge_minor_per_day,
                rates,
                switches,
                special_days: special,
                utc_offset_min: self.utc_offset_minutes,
            },
            what,
        ))
    }
}

/// `KEY=VALUE` arguments: `true`/`false` are flags, whole numbers integers, the rest text (quotes
/// around it are taken off).
pub fn parse_settings(args: &[String]) -> Result<(RemoteBody, String), String> {
    let mut settings = Vec::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| format!("{a:?} is not KEY=VALUE (e.g. gateway.log_level=debug)"))?;
        let k = k.trim();
        if k.split('.').count() != 2 || k.split('.').any(str::is_empty) {
            return Err(format!(
                "key {k:?} is not SECTION.KEY (e.g. gateway.log_level)"
            ));
        }
        let v = v.trim();
        let value = match v {
            "true" => SettingValue::Bool(true),
            "false" => SettingValue::Bool(false),
            _ => match v.parse::<i64>() {
                Ok(i) => SettingValue::Int(i),
                Err(_) => SettingValue::Text(v.trim_matches('"').to_string()),
            },
        };
        settings.push((k.to_string(), value));
    }
    if settings.is_empty() {
        return Err("give at least one KEY=VALUE".into());
    }
    let what = settings
        .iter()
        .map(|(k, v)| match v {
            SettingValue::Bool(b) => format!("{k} = {b}"),
            SettingValue::Int(i) => format!("{k} = {i}"),
            SettingValue::Text(t) => format!("{k} = {t:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok((
        RemoteBody::Config { settings },
        format!("configuration {what}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tariff_file_becomes_the_wire_tariff() {
        let file: TariffFile = toml::from_str(
            r#"
tariff_id = 7
in_force_from = "2026-12-07 00:00"
utc_offset_minutes = 60
standing_charge_minor_per_day = 25
special_days = ["2026-12-25"]
[[rate]]
id = 1
minor_per_kwh = "28"
[[rate]]
id = 2
minor_per_kwh = "19.5"
[[switch]]
days = ["weekdays"]
from = "07:00"
rate = 1
[[switch]]
days = ["every_day"]
from = "22:00"
rate = 2
"#,
        )
        .unwrap();
        let (body, what) = file.to_body("EUR").unwrap();
        assert!(
            what.starts_with("tariff 7 in force from 2026-12-07 00:00 local time (UTC+01:00)"),
            "{what}"
        );
        let RemoteBody::Tariff {
            effective_from,
            rates,
            switches,
            special_days,
            ..
        } = body
        else {
            panic!("not a tariff");
        };
        // 2026-12-07 00:00 at UTC+1 is 2026-12-06 23:00 UTC.
        assert_eq!(effective_from, 1_796_598_000);
        assert_eq!(rates, vec![(1, 28_000_000), (2, 19_500_000)]);
        assert_eq!(switches, vec![(0x1f, 420, 1), (0xff, 1_320, 2)]);
        assert_eq!(special_days, vec![20_261_225]);
    }

    #[test]
    fn settings_are_typed_and_mistakes_named() {
        let (body, what) = parse_settings(&[
            "gateway.log_level=debug".into(),
            "ledger.checkpoint_s=120".into(),
            "x.flag=true".into(),
        ])
        .unwrap();
        assert_eq!(
            what,
            "configuration gateway.log_level = \"debug\", ledger.checkpoint_s = 120, x.flag = true"
        );
        assert!(matches!(body, RemoteBody::Config { ref settings } if settings.len() == 3));
        assert!(parse_settings(&["log_level".into()]).is_err());
        assert!(parse_settings(&["log_level=debug".into()]).is_err());
    }
}
