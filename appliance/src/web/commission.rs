//! Commissioning from the UI: scan a bus with live progress (over the stream, as `scan` messages), map
//! each meter found to a dwelling, and write the result into the configuration file through the same
//! validation as `concentratord validate`; mistakes come back at the meter and field they concern.
//! A valid file is written (the previous one kept as `FILE.bak`) and the daemon restarts itself
//! cleanly on it ([`crate::daemon::request_restart`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use toml::Spanned;

use super::api::{actor, ApiError};
use super::Shared;
use crate::config::{Backend, Config, ConfigError};
use crate::scan::{
    human_duration, modbus_candidates, modbus_worst_case, probe_time, scan_dlt645, scan_modbus,
    Found, Step, TimeLeft,
};
use crate::scheduler::loan::LentBus;
use concentrator_hal::Rs485Bus;

/// Whether a scan runs (one at a time).
static SCANNING: AtomicBool = AtomicBool::new(false);
/// The reply window of each probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// How often progress is sent at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(150);

#[derive(Deserialize)]
pub(crate) struct ScanRequest {
    bus: String,
    /// What to look for; default both.
    #[serde(default)]
    protocol: Option<ScanProtocol>,
}

/// What a scan looks for.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ScanProtocol {
    Dlt645,
    Modbus,
    All,
}

/// The bus a scan runs on: an instance of its own (a simulated bus), or the daemon's, lent.
enum ScanBus {
    Own(crate::buses::OpenBus),
    Lent(LentBus),
}

fn found_json(f: &Found) -> Value {
    json!({"address": f.address, "driver": f.driver, "model": f.model, "line": f.line.to_string()})
}

/// `POST /api/commission/scan {bus}`: starts a scan; progress and the result arrive on the stream.
pub(crate) async fn scan(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(r): Json<ScanRequest>,
) -> Result<Json<Value>, ApiError> {
    let s = actor(&shared, &headers)?;
    let config = shared.config.clone();
    let Some(bus) = config
        .buses
        .iter()
        .find(|b| b.name.get_ref() == &r.bus)
        .cloned()
    else {
        let names: Vec<&str> = config
            .buses
            .iter()
            .map(|b| b.name.get_ref().as_str())
            .collect();
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "there is no bus `{}`; the buses: {}",
                r.bus,
                names.join(", ")
            ),
        ));
    };
    if SCANNING.swap(true, Ordering::SeqCst) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "a scan is already running; wait for it to end".into(),
        ));
    }
    let protocol = r.protocol.unwrap_or(ScanProtocol::All);
    // A real port is the daemon's: the scan borrows it from the bus's scheduler, exchange by
    // exchange between the polls. A simulated bus gets an instance of its own, on virtual time.
    let source = if *bus.backend.get_ref() == Backend::Sim {
        crate::buses::open_with(&config, &bus, false).map(ScanBus::Own)
    } else {
        LentBus::borrow(&r.bus).map(ScanBus::Lent)
    };
    let mut source = match source {
        Ok(source) => source,
        Err(e) => {
            SCANNING.store(false, Ordering::SeqCst);
            return Err(ApiError(StatusCode::CONFLICT, format!("cannot scan bus {}: {e}; plug its adapter in (the overview says what is wrong with it), or stop the daemon and use `concentrator scan`", r.bus)));
        }
    };
    log::info!("web UI: installer {} scans bus {}", s.user, r.bus);
    shared.hub.event(
        "scan",
        format!("installer {} started a scan of bus {}", s.user, r.bus),
    );
    let hub = Arc::clone(&shared.hub);
    let name = r.bus.clone();
    std::thread::Builder::new()
        .name("web-scan".into())
        .spawn(move || {
            let bus: &mut dyn Rs485Bus = match &mut source {
                ScanBus::Own(open) => open.bus.as_mut(),
                ScanBus::Lent(lent) => lent,
            };
            run_scan(&hub, &name, bus, protocol);
            SCANNING.store(false, Ordering::SeqCst);
        })
        .map_err(|e| {
            SCANNING.store(false, Ordering::SeqCst);
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start the scan: {e}"),
            )
        })?;
    Ok(Json(json!({"started": r.bus})))
}

/// Scans `bus` for DL/T 645 meters, then Modbus devices, broadcasting progress on the stream: probes
/// done, each meter as it is found, and the time left (the worst case until the pace is measured, so an
/// empty bus gets an estimate too). A scan that stops on an error keeps and shows what it found.
fn run_scan(hub: &super::hub::Hub, name: &str, bus: &mut dyn Rs485Bus, protocol: ScanProtocol) {
    let line = bus.settings();
    let lines = modbus_candidates(line);
    let ids = 1..=247u8;
    let (dlt645, modbus) = (
        protocol != ScanProtocol::Modbus,
        protocol != ScanProtocol::Dlt645,
    );
    let modbus_total = if modbus {
        modbus_worst_case(&lines, &ids, PROBE_TIMEOUT)
    } else {
        Duration::ZERO
    };
    let mut found: Vec<Found> = Vec::new();
    let mut last: Option<Instant> = None;
    let mut shown = 0;
    let mut send = |phase: &str, eta: &TimeLeft, s: &Step<'_>| {
        let new_meter = s.found.len() != shown;
        if !new_meter && s.done < s.total && last.is_some_and(|l| l.elapsed() < PROGRESS_EVERY) {
            return;
        }
        shown = s.found.len();
        last = Some(Instant::now());
        let left = eta.left(s.done, s.total);
        hub.broadcast(
            "scan",
            json!({"bus": name, "phase": phase, "done": s.done, "total": s.total, "what": s.what,
            "seconds_left": left.as_secs(), "left": human_duration(left),
            "found": s.found.iter().map(found_json).collect::<Vec<_>>(), "finished": false}),
        );
    };
    let mut error = None;
    let eta = TimeLeft::new(probe_time(line, PROBE_TIMEOUT, 16, 0), modbus_total);
    if dlt645 {
        if let Err(e) = scan_dlt645(bus, PROBE_TIMEOUT, &mut found, &mut |s| {
            send("DL/T 645", &eta, s)
        }) {
            error = Some(format!("the DL/T 645 scan stopped: {e}"));
        }
    }
    if modbus && error.is_none() {
        let per_probe = modbus_total / (lines.len() * ids.clone().count()).max(1) as u32;
        let eta = TimeLeft::new(per_probe, Duration::ZERO);
        if let Err(e) = scan_modbus(bus, &lines, ids, PROBE_TIMEOUT, &mut found, &mut |s| {
            send("Modbus", &eta, s)
        }) {
            error = Some(format!("the Modbus scan stopped: {e}"));
        }
    }
    let error = error.map(|e| {
        format!(
            "{e}; the {} found before it stopped are listed; check the adapter and its cable, then scan again for the rest",
            crate::words::count(found.len(), "meter", "meters")
        )
    });
    hub.event(
        "scan",
        format!(
            "scan of bus {name}: {} found{}",
            crate::words::count(found.len(), "meter", "meters"),
            error
                .as_deref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        ),
    );
    hub.broadcast("scan", json!({"bus": name, "done": 1, "total": 1, "seconds_left": 0, "found": found.iter().map(found_json).collect::<Vec<_>>(), "finished": true, "error": error}));
}

#[derive(Deserialize)]
pub(crate) struct Mapped {
    address: String,
    driver: String,
    #[serde(default)]
    model: Option<String>,
    dwelling: String,
}

#[derive(Deserialize)]
pub(crate) struct ApplyRequest {
    bus: String,
    meters: Vec<Mapped>,
}

/// The places of each `[[meter]]`'s values, to say which field a diagnostic is about.
#[derive(Deserialize)]
struct Places {
    #[serde(default)]
    meter: Vec<MeterPlaces>,
}

#[derive(Deserialize)]
struct MeterPlaces {
    address: Option<Spanned<toml::Value>>,
    bus: Option<Spanned<toml::Value>>,
    driver: Option<Spanned<toml::Value>>,
    model: Option<Spanned<toml::Value>>,
    dwelling: Option<Spanned<toml::Value>>,
}

/// The configuration text with each mapped meter's dwelling set (an existing `[[meter]]` at the same
/// bus and address) or a new `[[meter]]` table appended; comments are kept.
pub fn edit(
    text: &str,
    bus: &str,
    meters: &[(String, String, Option<String>, String)],
) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| format!("the configuration file no longer parses: {e}"))?;
    if doc.get("meter").is_none() {
        doc.insert(
            "meter",
            toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()),
        );
    }
    let tables = doc
        .get_mut("meter")
        .and_then(toml_edit::Item::as_array_of_tables_mut)
        .ok_or("`meter` in the configuration is not a list of [[meter]] tables")?;
    for (address, driver, model, dwelling) in meters {
        let existing = tables.iter_mut().find(|t| {
            t.get("bus").and_then(|v| v.as_str()) == Some(bus)
                && t.get("address").and_then(|v| v.as_str()) == Some(address)
        });
        match existing {
            Some(t) => t["dwelling"] = toml_edit::value(dwelling.as_str()),
            None => {
                let mut t = toml_edit::Table::new();
                t["bus"] = toml_edit::value(bus);
                t["address"] = toml_edit::value(address.as_str());
                t["driver"] = toml_edit::value(driver.as_str());
                if let Some(m) = model {
                    t["model"] = toml_edit::value(m.as_str());
                }
                t["dwelling"] = toml_edit::value(dwelling.as_str());
                tables.push(t);
            }
        }
    }
    Ok(doc.to_string())
}

/// Each diagnostic of `text` with the meter (address) and field it is at, when it is at one.
pub fn located(text: &str, error: &ConfigError) -> Vec<Value> {
    let ConfigError::Invalid { diagnostics, .. } = error else {
        return vec![json!({"message": error.to_string()})];
    };
    let places: Option<Places> = toml::from_str(text).ok();
    diagnostics
        .iter()
        .map(|d| {
            let (line, col) = d
                .span
                .as_ref()
                .map_or((0, 0), |s| crate::config::line_col(text, s.start));
            let mut out =
                json!({"message": d.message, "help": d.help, "line": line, "column": col});
            if let (Some(span), Some(p)) = (&d.span, &places) {
                for m in &p.meter {
                    let fields = [
                        ("address", &m.address),
                        ("bus", &m.bus),
                        ("driver", &m.driver),
                        ("model", &m.model),
                        ("dwelling", &m.dwelling),
                    ];
                    for (field, value) in fields {
                        if value
                            .as_ref()
                            .is_some_and(|v| v.span().contains(&span.start))
                        {
                            out["address"] =
                                json!(m.address.as_ref().and_then(|a| a.get_ref().as_str()));
                            out["field"] = json!(field);
                        }
                    }
                }
            }
            out
        })
        .collect()
}

/// `POST /api/commission/apply {bus, meters: [{address, driver, model, dwelling}]}`.
pub(crate) async fn apply(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(r): Json<ApplyRequest>,
) -> Result<Json<Value>, ApiError> {
    let s = actor(&shared, &headers)?;
    let Some(path) = shared.config_path.clone() else {
        return Err(ApiError(StatusCode::CONFLICT, "the daemon runs on its built-in example configuration; start it with `--config FILE` to commission into a file".into()));
    };
    let mut missing = Vec::new();
    for m in &r.meters {
        if m.dwelling.trim().is_empty() {
            missing.push(json!({"address": m.address, "field": "dwelling", "message": "no dwelling given", "help": "write the dwelling this meter supplies (as on the door, e.g. A-101)"}));
        }
    }
    if !missing.is_empty() {
        return Ok(Json(json!({"ok": false, "errors": missing})));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let wanted: Vec<_> = r
        .meters
        .iter()
        .map(|m| {
            (
                m.address.clone(),
                m.driver.clone(),
                m.model.clone(),
                m.dwelling.trim().to_string(),
            )
        })
        .collect();
    let new =
        edit(&text, &r.bus, &wanted).map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    if let Err(e) = Config::parse_checked(&path.display().to_string(), &new) {
        return Ok(Json(json!({"ok": false, "errors": located(&new, &e)})));
    }
    // On the appliance /etc/concentrator/concentrator.toml links to the file in the store's
    // writable config directory (docs/install.md §6, *Where commissioning writes the configuration*): write there, beside the real file.
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let tmp = path.with_extension("toml.new");
    let written = std::fs::write(&tmp, &new)
        .and_then(|()| {
            // The new file keeps the old one's permissions (the unit's umask would make it 0600).
            let permissions = std::fs::metadata(&path)?.permissions();
            std::fs::set_permissions(&tmp, permissions)
        })
        .and_then(|()| std::fs::copy(&path, path.with_extension("toml.bak")).map(|_| ()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        log::warn!(
            "web UI: the commissioned configuration is valid but cannot be written to {}: {e}",
            path.display()
        );
        // Not in the writable config directory (an unprovisioned .deb install keeps the file in the
        // read-only /etc/concentrator): hand the valid file over.
        return Ok(Json(json!({"ok": false, "config": new, "errors": [{
            "message": format!("the new configuration is valid, but the daemon cannot write {}: {e}", path.display()),
            "help": "copy the file below to the gateway (sudo), then `sudo systemctl restart concentrator`",
        }]})));
    }
    log::info!(
        "web UI: installer {} commissioned {} on bus {} into {}; restarting on it",
        s.user,
        crate::words::count(r.meters.len(), "meter", "meters"),
        r.bus,
        path.display()
    );
    shared.hub.event(
        "config",
        format!(
            "installer {} commissioned {} on bus {}; the daemon restarts on the new configuration",
            s.user,
            crate::words::count(r.meters.len(), "meter", "meters"),
            r.bus
        ),
    );
    crate::daemon::request_restart();
    Ok(Json(
        json!({"ok": true, "written": path.display().to_string(), "restarting": true}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# the block\n[gateway]\nid = \"gw\"\nstore = \"/tmp/s\"\n\n[[bus]]\nname = \"rs485-1\"\nbackend = \"sim\"\n\n# first floor\n[[meter]]\nbus = \"rs485-1\"\naddress = \"000000000001\"\ndriver = \"dlt645\"\ndwelling = \"old\"\n";

    #[test]
    fn mapping_edits_keep_comments_and_mistakes_come_back_at_their_field() {
        let found = vec![
            (
                "000000000001".to_string(),
                "dlt645".to_string(),
                None,
                "A-101".to_string(),
            ),
            (
                "2".to_string(),
                "modbus".to_string(),
                Some("sdm630".to_string()),
                "A-102".to_string(),
            ),
        ];
        let new = edit(TEXT, "rs485-1", &found).unwrap();
        assert!(
            new.contains("# first floor") && new.contains("# the block"),
            "{new}"
        );
        let config = Config::parse("c.toml", &new).unwrap();
        let dwellings: Vec<_> = config
            .meters
            .iter()
            .map(|m| m.dwelling.get_ref().as_str())
            .collect();
        assert_eq!(dwellings, ["A-101", "A-102"]);
        // A DL/T 645 address of 5 digits: refused by the same validation, located at the meter's address.
        let bad = vec![(
            "12345".to_string(),
            "dlt645".to_string(),
            None,
            "A-103".to_string(),
        )];
        let new = edit(TEXT, "rs485-1", &bad).unwrap();
        let e = Config::parse("c.toml", &new).unwrap_err();
        let errors = located(&new, &e);
        assert!(
            errors
                .iter()
                .any(|e| e["address"] == "12345" && e["field"] == "address"),
            "{errors:?}"
        );
    }
}
