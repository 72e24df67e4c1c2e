//! What the UI shows live: the status board and the recent events, pushed to each browser over one
//! Server-Sent Events stream (`GET /api/stream`): a `state` message when the status changed (checked
//! every second, sent only on change) and an `event` message for each new event. No polling.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::Event;
use futures_util::Stream;
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;

use crate::ops::EventSink;
use crate::status::StatusBoard;

/// Events kept for a browser that connects later.
const KEPT: usize = 200;
/// How often a stream looks at the status board.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How often the store's size is measured.
const STORE_EVERY: Duration = Duration::from_secs(30);

/// Bytes in the files under `dir`, `depth` levels down.
fn dir_size(dir: &std::path::Path, depth: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_file() => m.len(),
            Ok(m) if m.is_dir() && depth > 0 => dir_size(&e.path(), depth - 1),
            _ => 0,
        })
        .sum()
}

/// Free bytes on the file system of `dir` (for unprivileged users).
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `st` is plain data that statvfs fills in; `c` is a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // u64::from: the fields are 32 bits wide on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    Some(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// The store directory, and its size and free space when last measured.
type StoreUse = (
    Option<std::path::PathBuf>,
    Option<(std::time::Instant, serde_json::Value)>,
);

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct UiEvent {
    /// Local time, as people read it.
    pub at: String,
    /// `relay`, `token`, `zigbee`, `login`, `config`, `scan`, `log`.
    pub kind: String,
    /// What happened.
    pub text: String,
}

/// The events and the status board.
#[derive(Debug)]
pub struct Hub {
    status: Arc<StatusBoard>,
    recent: Mutex<VecDeque<UiEvent>>,
    /// The log's last lines.
    log: Mutex<VecDeque<String>>,
    /// The configured meters and buses (a bus whose adapter is missing has no meters on the board).
    book: Mutex<serde_json::Value>,
    /// The store directory, and its size and free space when last measured.
    store: Mutex<StoreUse>,
    tx: broadcast::Sender<(&'static str, serde_json::Value)>,
}

impl Hub {
    /// A hub over `status`.
    pub fn new(status: Arc<StatusBoard>) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(256);
        Arc::new(Hub {
            status,
            recent: Mutex::new(VecDeque::new()),
            log: Mutex::new(VecDeque::new()),
            book: Mutex::new(json!({})),
            store: Mutex::new((None, None)),
            tx,
        })
    }

    /// Takes the configured meters, buses and store directory from `config`.
    pub fn set_config(&self, config: &crate::config::Config) {
        let meters: Vec<_> = config
            .meters
            .iter()
            .map(|m| json!({"bus": m.bus.get_ref(), "address": m.address.get_ref(), "dwelling": m.dwelling.get_ref(), "driver": m.driver.get_ref()}))
            .collect();
        let buses: Vec<_> = config
            .buses
            .iter()
            .map(|b| b.name.get_ref().clone())
            .collect();
        *self.book.lock().unwrap_or_else(|p| p.into_inner()) =
            json!({"configured": meters, "configured_buses": buses});
        self.store.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(config.gateway.store.clone());
    }

    /// The store's size and free space, measured at most every 30 s.
    fn store_use(&self) -> serde_json::Value {
        let mut s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, v)) = &s.1 {
            if at.elapsed() < STORE_EVERY {
                return v.clone();
            }
        }
        let Some(dir) = s.0.clone() else {
            return serde_json::Value::Null;
        };
        let v = json!({"used_bytes": dir_size(&dir, 3), "free_bytes": free_bytes(&dir)});
        s.1 = Some((std::time::Instant::now(), v.clone()));
        v
    }

    /// Records an event (and sends it to every stream).
    pub fn event(&self, kind: &str, text: String) {
        let e = UiEvent {
            at: concentrator_mpc::human::local_time(crate::prepay::unix_now()),
            kind: kind.to_string(),
            text,
        };
        {
            let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if r.len() >= KEPT {
                r.pop_front();
            }
            r.push_back(e.clone());
        }
        let _ = self
            .tx
            .send(("event", serde_json::to_value(e).unwrap_or_default()));
    }

    /// Sends a message of type `name` to every stream (scan progress).
    pub fn broadcast(&self, name: &'static str, data: serde_json::Value) {
        let _ = self.tx.send((name, data));
    }

    /// A log tap into this hub (the live log tail): each line kept and sent to every stream.
    pub fn log_tap(self: &Arc<Self>) -> crate::logging::Tap {
        let hub = Arc::downgrade(self);
        Arc::new(move |r: &log::Record<'_>| {
            let Some(hub) = hub.upgrade() else { return };
            let line = format!(
                "{} {:5} {}",
                concentrator_mpc::human::local_time(crate::prepay::unix_now()),
                r.level(),
                r.args()
            );
            {
                let mut l = hub.log.lock().unwrap_or_else(|p| p.into_inner());
                if l.len() >= KEPT {
                    l.pop_front();
                }
                l.push_back(line.clone());
            }
            let _ = hub.tx.send(("log", serde_json::Value::String(line)));
        })
    }

    /// An [`EventSink`] into this hub, for the control operations.
    pub fn sink(self: &Arc<Self>) -> EventSink {
        let hub = Arc::clone(self);
        Arc::new(move |kind: &str, text: String| hub.event(kind, text))
    }

    /// The status as the UI shows it: the board with every time in local time.
    pub fn state(&self) -> serde_json::Value {
        let s = self.status.snapshot();
        let mut v = serde_json::to_value(&s).unwrap_or_default();
        let now = crate::prepay::unix_now();
        v["now"] = json!(concentrator_mpc::human::local_time(now));
        v["now_unix"] = json!(now);
        v["store"] = self.store_use();
        if let Some(book) = self
            .book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_object()
        {
            for (k, b) in book {
                v[k] = b.clone();
            }
        }
        v
    }

    /// The live stream for one browser: the state and the recent events at once, then changes; it
    /// ends when `open` says its session ended (expired unused, or logged out).
    pub fn stream(
        self: &Arc<Self>,
        open: impl Fn() -> bool + Send + 'static,
    ) -> impl Stream<Item = Result<Event, Infallible>> {
        let hub = Arc::clone(self);
        let rx = hub.tx.subscribe();
        let recent: Vec<UiEvent> = hub
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let lines: Vec<String> = hub
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let first = vec![
            Event::default()
                .event("logs")
                .json_data(&lines)
                .unwrap_or_default(),
            Event::default()
                .event("events")
                .json_data(&recent)
                .unwrap_or_default(),
        ];
        let ticker = tokio::time::interval(LOOK_EVERY);
        futures_util::stream::unfold(
            (hub, rx, ticker, String::new(), first, open),
            |(hub, mut rx, mut ticker, mut last, mut queued, open)| async move {
                loop {
                    if let Some(e) = queued.pop() {
                        return Some((Ok(e), (hub, rx, ticker, last, queued, open)));
                    }
                    tokio::select! {
                        _ = ticker.tick() => {
                            if !open() {
                                return None;
                            }
                            let mut state = hub.state();
                            let now = state["now"].take();
                            let now_unix = state["now_unix"].take();
                            let text = state.to_string();
                            if text != last {
                                last = text;
                                state["now"] = now;
                                state["now_unix"] = now_unix;
                                queued.push(Event::default().event("state").data(state.to_string()));
                            }
                        }
                        got = rx.recv() => match got {
                            Ok((name, data)) => queued.push(Event::default().event(name).data(data.to_string())),
                            Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                    }
                }
            },
        )
    }
}
