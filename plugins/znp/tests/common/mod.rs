//! A host loop over the real plugin host: the `znp` driver registered statically, a `StreamSession`,
//! the host's end of a serial stream, and the emulator on the other end.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use concentrator_driver_znp::sim::{EmulatorThread, ZnpEmulator};
use concentrator_driver_znp::{DeviceEntry, IeeeAddress, Notice};
use concentrator_hal::sim::SimStream;
use concentrator_hal::{SerialStream, SystemClock};
use concentrator_plugin_api::coordinator::CoordinatorEvent;
use concentrator_plugin_host::{
    Plugin, PluginLoader, PluginPolicy, StaticDriver, StreamEvent, StreamSession, TrustedKeys,
};

/// Short timeouts so that failure paths run quickly.
pub const FAST: &str =
    "srsp_timeout_ms = 300\nreset_timeout_ms = 300\nretry_backoff_ms = 200\nzcl_timeout_ms = 800";

pub fn plugin() -> Arc<Plugin> {
    PluginLoader::new(
        "/nonexistent",
        TrustedKeys::none(),
        PluginPolicy {
            max_faults: 3,
            require_root_owned: false,
            ..PluginPolicy::default()
        },
    )
    .register_static(StaticDriver::new(
        concentrator_driver_znp::plugin_declaration(),
    ))
    .unwrap()
}

pub fn meter_ieee(n: u64) -> IeeeAddress {
    IeeeAddress(0x0012_4B00_0000_0000 | n)
}

pub struct Rig {
    pub session: StreamSession,
    pub stream: Box<dyn SerialStream>,
    pub emulator: EmulatorThread,
    pub clock: SystemClock,
    pub events: Vec<StreamEvent>,
    pub notices: Vec<Notice>,
    pub coordinator_events: Vec<CoordinatorEvent>,
    next_id: u64,
}

impl Rig {
    /// The driver on an in-process stream to `emulator`.
    pub fn new(emulator: ZnpEmulator, config: &str) -> Self {
        let (host, peer) = SimStream::pair("zigbee");
        let emulator = EmulatorThread::spawn(emulator, peer);
        Self::attach(Box::new(host), emulator, config)
    }

    pub fn attach(stream: Box<dyn SerialStream>, emulator: EmulatorThread, config: &str) -> Self {
        let clock = SystemClock::new();
        let session = plugin().open_stream(config, &clock).unwrap();
        Rig {
            session,
            stream,
            emulator,
            clock,
            events: Vec::new(),
            notices: Vec::new(),
            coordinator_events: Vec::new(),
            next_id: 0,
        }
    }

    /// One turn of the host loop.
    pub fn turn(&mut self) {
        let mut buf = [0u8; 512];
        let n = self
            .stream
            .read(&mut buf, Duration::from_millis(1))
            .unwrap();
        if n > 0 {
            self.session.on_bytes(&buf[..n]).unwrap();
        }
        self.session.on_tick(&self.clock).unwrap();
        while let Some(frame) = self.session.poll_transmit().unwrap() {
            self.stream.write_all(&frame).unwrap();
        }
        while let Some(event) = self.session.poll_event().unwrap() {
            self.events.push(event);
        }
        while let Some(text) = self.session.poll_notice().unwrap() {
            let event = CoordinatorEvent::from_json(&text).unwrap();
            self.coordinator_events.push(event.clone());
            if let Some(notice) = as_notice(event) {
                self.notices.push(notice);
            }
        }
    }

    /// Turns until `done` holds, failing after `secs` seconds.
    pub fn until(&mut self, secs: u64, what: &str, mut done: impl FnMut(&Rig) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "{what}: not within {secs} s; events {:?}; notices {:?}",
                self.events,
                self.notices
            );
            self.turn();
        }
    }

    pub fn link_ups(&self) -> usize {
        self.events
            .iter()
            .filter(|e| **e == StreamEvent::LinkUp)
            .count()
    }

    pub fn wait_up(&mut self) {
        self.until(5, "link up", |r| r.link_ups() > 0);
    }

    /// Sends a command (JSON without the id); returns its id.
    pub fn command(&mut self, json: serde_json::Value) -> u64 {
        self.next_id += 1;
        let mut json = json;
        json["id"] = self.next_id.into();
        self.session
            .command(&json.to_string(), &self.clock)
            .unwrap();
        self.next_id
    }

    /// Waits for the notice that ends command `id`.
    pub fn result(&mut self, id: u64) -> Notice {
        let ends = |n: &Notice| match n {
            Notice::CommandDone { id: i, .. }
            | Notice::CommandRefused { id: i, .. }
            | Notice::CommandFailed { id: i, .. } => *i == id,
            _ => false,
        };
        self.until(5, "command result", |r| r.notices.iter().any(ends));
        self.notices.iter().find(|n| ends(n)).cloned().unwrap()
    }

    /// Lets meters join and waits until every one is interviewed (its formatting read).
    pub fn join_meters(&mut self, ieees: &[IeeeAddress]) {
        let id = self.command(serde_json::json!({"op": "permit_join", "seconds": 60}));
        assert!(matches!(self.result(id), Notice::CommandDone { .. }));
        let all = ieees.to_vec();
        self.until(10, "meters interviewed", |r| {
            all.iter().all(|ieee| {
                r.notices.iter().any(|n| {
                    matches!(n, Notice::DeviceUpdated { device }
                    if device.ieee == *ieee && device.meter.format.is_some())
                })
            })
        });
    }
}

/// The driver's own notice behind a coordinator event, so that these tests can look at the driver's
/// detail (`None` for the events that are the API's alone: joined, interviewed).
pub fn as_notice(event: CoordinatorEvent) -> Option<Notice> {
    let ieee =
        |d: concentrator_plugin_api::coordinator::DeviceAddress| IeeeAddress(d.to_u64().unwrap());
    Some(match event {
        CoordinatorEvent::LinkUp {
            coordinator,
            firmware,
            restored,
        } => Notice::CoordinatorUp {
            ieee: ieee(coordinator),
            firmware,
            was_formed: restored,
        },
        CoordinatorEvent::Updated { info } => Notice::DeviceUpdated {
            device: Box::new(serde_json::from_value::<DeviceEntry>(info.record).unwrap()),
        },
        CoordinatorEvent::Left { device } => Notice::DeviceRemoved { ieee: ieee(device) },
        CoordinatorEvent::CommandDone { id, detail, .. } => Notice::CommandDone {
            id,
            result: detail
                .map(|d| serde_json::from_value(d).unwrap())
                .unwrap_or(concentrator_driver_znp::CommandResult::Accepted),
        },
        CoordinatorEvent::CommandRefused { id, code, text } => Notice::CommandRefused {
            id,
            status: u8::try_from(code).unwrap(),
            status_name: text,
        },
        CoordinatorEvent::CommandFailed { id, reason } => Notice::CommandFailed { id, reason },
        CoordinatorEvent::Joined { .. } | CoordinatorEvent::Interviewed { .. } => return None,
    })
}
