//! Zigbee in the daemon: one worker thread per `[[zigbee]]` coordinator ([`worker`]), the device
//! table in the store ([`store`]), the coordinator's stream or emulator ([`port`]), the ledger's relay
//! decisions as prepayment commands ([`relay`]), and the installer's operations on the control socket
//! (`zigbee.permit_join`, `zigbee.devices`, `zigbee.remove`; see [`crate::control`]).
//!
//! A Zigbee meter is configured like an RS485 meter with `zigbee`/`ieee` instead of `bus`/`address`;
//! its readings reach the ledger and the uplink through the same [`ReadingSink`]s as bus polls, and
//! relay jobs reach its worker through the same [`SchedulerHandles`] registry, under the
//! coordinator's name.

pub mod port;
pub mod relay;
pub mod store;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use concentrator_plugin_host::DeviceAddress;
use serde_json::{json, Value};

use crate::control::ControlRoutes;
use crate::health::WorkerKind;
use crate::scheduler::{ReadingSink, SchedulerHandle};
use crate::workers::WorkerContext;
use store::DeviceStore;
use worker::{ToWorker, WorkerSetup, ZigbeeWorker};

/// How long a control request waits for its worker (a permit-join or a leave waits for the
/// coordinator's answer).
const CONTROL_WAIT: Duration = Duration::from_secs(35);

/// The running Zigbee workers.
#[derive(Debug, Default)]
pub struct Zigbee {
    workers: Vec<JoinHandle<()>>,
    senders: BTreeMap<String, Sender<ToWorker>>,
}

impl Zigbee {
    /// Starts a worker per coordinator. Fails when the device tables cannot be opened.
    pub fn start(cx: &WorkerContext<'_>, ledger_db: Option<&sled::Db>) -> Result<Zigbee, String> {
        let config = cx.config;
        if config.zigbee.is_empty() {
            return Ok(Zigbee::default());
        }
        let db = store::open_db(&config.gateway.store, ledger_db)?;
        let mut zigbee = Zigbee::default();
        for z in &config.zigbee {
            let name = z.name.get_ref().clone();
            let store = DeviceStore::open(&db, &name).map_err(|e| e.to_string())?;
            let driver = z.driver.get_ref().clone();
            let plugin = cx.drivers.get(&driver).ok_or_else(|| {
                format!(
                    "no driver named `{driver}` is loaded (loaded: {}); check the coordinator's `driver` and the plugin log above",
                    cx.drivers.all().iter().map(|p| p.name().to_string()).collect::<Vec<_>>().join(", ")
                )
            });
            if let Err(e) = &plugin {
                log::error!("zigbee {name}: {e}");
            }
            let meters = config
                .meters
                .iter()
                .filter(|m| m.zigbee.as_ref().is_some_and(|c| *c.get_ref() == name))
                .map(|m| {
                    (
                        m.address.get_ref().clone(),
                        m.dwelling.get_ref().clone(),
                        m.ledger_id().to_string(),
                    )
                })
                .collect();
            let mut sinks: Vec<ReadingSink> = Vec::new();
            if let Some(prepay) = cx.prepay {
                sinks.push(prepay.link(&name).sink());
            }
            if let Some(queue) = cx.queue {
                sinks.push(queue.sink(&name));
            }
            if let Some(balance) = cx.balance {
                sinks.push(balance.sink(&name));
            }
            let (handle, jobs) = SchedulerHandle::channel();
            cx.handles.register(&name, handle);
            let (tx, control) = channel();
            let report_max_s = z
                .options
                .as_ref()
                .and_then(|o| o.get_ref().get("report_max_s"))
                .and_then(toml::Value::as_integer)
                .unwrap_or(300);
            let setup = WorkerSetup {
                name: name.clone(),
                driver,
                driver_config: z.driver_config(),
                plugin,
                source: port::PortSource::new(config, z),
                store,
                meters,
                sinks,
                jobs,
                control,
                status: Arc::clone(cx.status),
                health: cx.health.register(WorkerKind::Coordinator, &name),
                stop: Arc::clone(cx.stop),
                offline_after: Duration::from_secs(3 * report_max_s.max(1) as u64 + 10),
            };
            let worker = ZigbeeWorker::new(setup);
            let thread = std::thread::Builder::new()
                .name(format!("zigbee {name}"))
                .spawn(move || worker.run())
                .map_err(|e| {
                    format!("cannot start the worker of Zigbee coordinator {name}: {e}")
                })?;
            zigbee.workers.push(thread);
            zigbee.senders.insert(name, tx);
        }
        Ok(zigbee)
    }

    /// Adds the Zigbee operations to the control socket's routes.
    pub fn add_routes(&self, routes: &mut ControlRoutes) {
        let senders = Arc::new(self.senders.clone());
        let s = Arc::clone(&senders);
        routes.add(
            "zigbee.permit_join",
            Arc::new(move |args: &Value| {
                let seconds = match args.get("seconds").map(Value::as_u64) {
                    None => 60,
                    Some(Some(n)) if n <= 254 => n as u8,
                    Some(_) => {
                        return Err("`seconds` must be 0 to 254 (0 closes the network)".into())
                    }
                };
                ask(&s, args, |reply| ToWorker::PermitJoin { seconds, reply })
            }),
        );
        let s = Arc::clone(&senders);
        routes.add(
            "zigbee.devices",
            Arc::new(move |args: &Value| {
                let names: Vec<String> = match args.get("coordinator").and_then(Value::as_str) {
                    Some(one) => vec![one.to_string()],
                    None => s.keys().cloned().collect(),
                };
                let mut out = Vec::new();
                for name in names {
                    let one = json!({"coordinator": name});
                    out.push(ask(&s, &one, |reply| ToWorker::Devices { reply })?);
                }
                Ok(Value::Array(out))
            }),
        );
        let s = senders;
        routes.add(
            "zigbee.remove",
            Arc::new(move |args: &Value| {
                let text = args
                    .get("ieee")
                    .and_then(Value::as_str)
                    .ok_or("`ieee` (the device's IEEE address) is missing")?;
                let ieee: DeviceAddress = crate::config::zigbee::normalise_ieee(text)?.parse()?;
                ask(&s, args, |reply| ToWorker::Remove { ieee, reply })
            }),
        );
    }

    /// Waits for the workers (after the stop flag was set).
    pub fn join(self) {
        for worker in self.workers {
            if worker.join().is_err() {
                log::error!("a Zigbee worker panicked while stopping");
            }
        }
    }
}

/// Sends a request to the coordinator named in `args` (or the only one) and waits for its answer.
fn ask(
    senders: &BTreeMap<String, Sender<ToWorker>>,
    args: &Value,
    request: impl FnOnce(Sender<Result<Value, String>>) -> ToWorker,
) -> Result<Value, String> {
    let names = || senders.keys().cloned().collect::<Vec<_>>().join(", ");
    let sender = match args.get("coordinator").and_then(Value::as_str) {
        Some(name) => senders.get(name).ok_or_else(|| {
            format!(
                "no Zigbee coordinator is named `{name}`; the configured ones: {}",
                names()
            )
        })?,
        None if senders.len() == 1 => senders.values().next().ok_or("no Zigbee coordinator")?,
        None if senders.is_empty() => {
            return Err(
                "no Zigbee coordinator is configured; add a [[zigbee]] table (docs/install.md)"
                    .into(),
            )
        }
        None => {
            return Err(format!(
                "several Zigbee coordinators are configured; name one with --coordinator ({})",
                names()
            ))
        }
    };
    let (tx, rx) = channel();
    sender
        .send(request(tx))
        .map_err(|_| "the Zigbee worker has stopped".to_string())?;
    rx.recv_timeout(CONTROL_WAIT).map_err(|_| {
        format!(
            "the Zigbee worker did not answer within {} s",
            CONTROL_WAIT.as_secs()
        )
    })?
}
