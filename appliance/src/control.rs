//! The daemon's control socket: how `concentrator` commands talk to the running daemon, which holds the
//! store and the ports.
//!
//! A Unix stream socket, `control.sock` in the store directory, mode 0660 (the daemon's user and group;
//! put installers in the group). One request per connection, one JSON object per line each way:
//!
//! ```text
//! → {"op": "zigbee.permit_join", "args": {"seconds": 60}}
//! ← {"ok": true, "result": {...}}            or   {"ok": false, "error": "what went wrong and the fix"}
//! ```
//!
//! Requests are at most [`MAX_REQUEST`] bytes and must arrive within [`IO_TIMEOUT`]; at most
//! [`MAX_CONNECTIONS`] are served at once. Operations are registered by name in [`ControlRoutes`], so
//! other subsystems add theirs the same way Zigbee does (docs/ARCHITECTURE.md, *Control socket*).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The socket's file name in the store directory.
pub const SOCKET_NAME: &str = "control.sock";
/// The longest request line, bytes.
pub const MAX_REQUEST: usize = 64 * 1024;
/// The longest response line a client accepts, bytes.
pub const MAX_RESPONSE: usize = 8 * 1024 * 1024;
/// How long either side waits for the other's line.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are answered "busy".
pub const MAX_CONNECTIONS: usize = 4;

/// The socket of the daemon whose store is `store`.
pub fn socket_path(store: &Path) -> PathBuf {
    store.join(SOCKET_NAME)
}

/// A request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The operation, `subsystem.verb` (`zigbee.devices`).
    pub op: String,
    /// Its arguments (an object; `null` when it takes none).
    #[serde(default)]
    pub args: Value,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the operation was carried out.
    pub ok: bool,
    /// Its result, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why not, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An operation's handler: its arguments in, its result or an error message (with the fix) out. It
/// runs on the connection's thread and may wait (up to the client's timeout).
pub type Handler = Arc<dyn Fn(&Value) -> Result<Value, String> + Send + Sync>;

/// The operations the socket serves, by name.
#[derive(Clone, Default)]
pub struct ControlRoutes {
    routes: BTreeMap<String, Handler>,
}

impl std::fmt::Debug for ControlRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.routes.keys()).finish()
    }
}

impl ControlRoutes {
    /// Adds (or replaces) operation `op`.
    pub fn add(&mut self, op: &str, handler: Handler) {
        self.routes.insert(op.to_string(), handler);
    }

    /// Whether no operation is registered.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Runs one request.
    pub fn dispatch(&self, request: &Request) -> Response {
        match self.routes.get(&request.op) {
            Some(handler) => match handler(&request.args) {
                Ok(result) => Response {
                    ok: true,
                    result: Some(result),
                    error: None,
                },
                Err(error) => Response::error(error),
            },
            None => Response::error(format!(
                "the daemon has no operation `{}`; it serves: {} (is the daemon older than this `concentrator`, or is the subsystem not configured?)",
                request.op,
                self.routes.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

impl Response {
    fn error(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(message.into()),
        }
    }
}

/// The serving socket; removed when stopped.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `path` (mode 0660) and serves `routes` on a thread until [`ControlServer::stop`]. A stale
    /// socket file (no daemon answers on it) is replaced; a live one means another daemon runs on the
    /// same store, which is an error.
    pub fn start(path: &Path, routes: ControlRoutes) -> Result<ControlServer, String> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "another daemon answers on the control socket {}; stop it first (two daemons cannot share a store)",
                    path.display()
                ));
            }
            std::fs::remove_file(path).map_err(|e| {
                format!(
                    "cannot remove the stale control socket {}: {e}",
                    path.display()
                )
            })?;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| format!("cannot create the control socket {}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("control socket {}: {e}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || serve(listener, routes, stopping))
            .map_err(|e| format!("cannot start the control socket's thread: {e}"))?;
        log::info!("control socket {}", path.display());
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving and removes the socket file.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the control socket's thread panicked");
            }
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn serve(listener: UnixListener, routes: ControlRoutes, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    let mut stream = stream;
                    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                    let _ = write_line(
                        &mut stream,
                        &Response::error("the daemon is busy with other control requests; try again in a few seconds"),
                    );
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (routes, active) = (routes.clone(), Arc::clone(&active));
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        handle(stream, &routes);
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    log::warn!("control socket: cannot serve a connection: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                log::warn!("control socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn handle(stream: UnixStream, routes: &ControlRoutes) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let response = match read_line(&stream, MAX_REQUEST) {
        Ok(line) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                log::info!("control: {}", request.op);
                routes.dispatch(&request)
            }
            Err(e) => Response::error(format!(
                "the request is not {{\"op\": ..., \"args\": {{...}}}} JSON: {e}"
            )),
        },
        Err(e) => Response::error(format!("cannot read the request: {e}")),
    };
    if let Err(e) = write_line(&mut writer, &response) {
        log::debug!("control: cannot send the response: {e}");
    }
}

/// Reads one line of at most `limit` bytes (without the newline).
fn read_line(stream: &UnixStream, limit: usize) -> std::io::Result<String> {
    let mut reader = BufReader::new(stream.take(limit as u64 + 1));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.len() > limit {
        return Err(std::io::Error::other(format!(
            "the line is longer than {limit} bytes"
        )));
    }
    if !line.ends_with('\n') {
        return Err(std::io::Error::other(
            "the line ended without a newline (connection closed or timed out)",
        ));
    }
    line.pop();
    Ok(line)
}

fn write_line(stream: &mut UnixStream, value: &impl Serialize) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    text.push(b'\n');
    stream.write_all(&text)?;
    stream.flush()
}

/// Why a control request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No daemon answers on the socket.
    #[error("cannot reach the daemon on {path}: {reason}; is concentratord running with this configuration (`systemctl status concentrator`), and are you in its group?")]
    NotRunning {
        /// The socket.
        path: String,
        /// The OS's reason.
        reason: String,
    },
    /// The connection broke or timed out.
    #[error("the control socket {path}: {reason}")]
    Io {
        /// The socket.
        path: String,
        /// What happened.
        reason: String,
    },
    /// The daemon refused or failed the operation.
    #[error("{0}")]
    Refused(String),
}

/// Sends one request to the daemon at `path` and waits up to `timeout` for its answer.
pub fn request(
    path: &Path,
    op: &str,
    args: Value,
    timeout: Duration,
) -> Result<Value, ControlError> {
    let io = |reason: String| ControlError::Io {
        path: path.display().to_string(),
        reason,
    };
    let stream = UnixStream::connect(path).map_err(|e| ControlError::NotRunning {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| io(e.to_string()))?;
    let mut writer = stream.try_clone().map_err(|e| io(e.to_string()))?;
    let request = Request {
        op: op.to_string(),
        args,
    };
    write_line(&mut writer, &request).map_err(|e| io(format!("sending the request: {e}")))?;
    let line =
        read_line(&stream, MAX_RESPONSE).map_err(|e| io(format!("reading the answer: {e}")))?;
    let response: Response = serde_json::from_str(&line)
        .map_err(|e| io(format!("the answer is not a control response: {e}")))?;
    if response.ok {
        Ok(response.result.unwrap_or(Value::Null))
    } else {
        Err(ControlError::Refused(response.error.unwrap_or_else(|| {
            "the daemon refused without a reason".into()
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serves_routes_refuses_unknown_ops_and_bad_lines() {
        let dir = std::env::temp_dir().join(format!("control-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = socket_path(&dir);
        let mut routes = ControlRoutes::default();
        routes.add(
            "echo.twice",
            Arc::new(|args: &Value| {
                let n = args["n"].as_i64().ok_or("`n` must be a number")?;
                Ok(json!({"twice": n * 2}))
            }),
        );
        let server = ControlServer::start(&path, routes.clone()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let t = Duration::from_secs(2);
        assert_eq!(
            request(&path, "echo.twice", json!({"n": 21}), t).unwrap(),
            json!({"twice": 42})
        );
        let e = request(&path, "echo.twice", json!({}), t).unwrap_err();
        assert_eq!(e.to_string(), "`n` must be a number");
        let e = request(&path, "nope", Value::Null, t).unwrap_err();
        assert!(
            e.to_string()
                .contains("no operation `nope`; it serves: echo.twice"),
            "{e}"
        );
        // A line that is not JSON, and one that is too long.
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"hello\n").unwrap();
        let answer = read_line(&raw, MAX_RESPONSE).unwrap();
        assert!(answer.contains("is not {\\\"op\\\""), "{answer}");
        let mut raw = UnixStream::connect(&path).unwrap();
        let _ = raw.write_all(&vec![b'x'; MAX_REQUEST + 10]);
        let answer = read_line(&raw, MAX_RESPONSE).unwrap();
        assert!(answer.contains("longer than 65536 bytes"), "{answer}");
        // A second daemon on the same store is refused; the socket goes away with the server.
        let second = ControlServer::start(&path, routes).unwrap_err();
        assert!(second.contains("another daemon answers"), "{second}");
        server.stop();
        assert!(!path.exists());
        let e = request(&path, "echo.twice", json!({"n": 1}), t).unwrap_err();
        assert!(matches!(e, ControlError::NotRunning { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
