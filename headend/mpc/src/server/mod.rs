//! The payment server's phone-facing side: TLS, one thread per connection, registration, login by AKA
//! and password, then sealed requests answered from a [`Backend`] and notices pushed as they come.
//!
//! ```no_run
//! use std::net::TcpListener;
//! use std::path::Path;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//! # fn backend() -> Arc<dyn concentrator_mpc::backend::Backend> { unimplemented!() }
//!
//! let acceptor = concentrator_mpc::tls::acceptor(Path::new("server.pem"), Path::new("server.key"))?;
//! let stop = Arc::new(AtomicBool::new(false));
//! let listener = TcpListener::bind("0.0.0.0:8443")?;
//! let server = concentrator_mpc::server::serve(listener, acceptor, backend(), stop.clone())?;
//! // ... on shutdown:
//! stop.store(true, Ordering::SeqCst);
//! server.join().ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod accounts;
mod conn;
pub mod gate;
pub mod limiter;

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use openssl::ssl::SslAcceptor;

use crate::backend::Backend;
pub use gate::{Gate, GateConfig};
pub use limiter::Limiter;

/// How the server behaves; [`ServerConfig::default`] is what [`serve`] uses.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections served at once; one more is closed at once, before TLS.
    pub max_connections: usize,
    /// Time for the TLS handshake.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long (and is not watching) is closed.
    pub idle_timeout: Duration,
    /// A write that blocks this long closes the connection.
    pub write_timeout: Duration,
    /// How often a watching connection looks for notices (the most a notice waits on the server).
    pub watch_poll: Duration,
    /// Lifetime of a session's keys, seconds; then the client logs in again.
    pub session_lifetime_s: u64,
    /// Envelope timestamps must be within this many seconds of the server's clock.
    pub window_s: u64,
    /// Failed logins in a row for one customer before the server makes them wait (used only when the
    /// backend has no [`Backend::gate`] shared with other front ends; then the gate's apply).
    pub lockout_after: u32,
    /// The longest wait imposed after repeated failures (likewise).
    pub lockout_max: Duration,
    /// Failed logins and registrations from one source address before it must wait (likewise).
    pub source_lockout_after: u32,
    /// Pause before answering a failed login or registration (slows guessing on one connection).
    pub failure_delay: Duration,
    /// Failed logins and registrations on one connection before it is closed.
    pub max_failures_per_connection: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(10),
            watch_poll: Duration::from_millis(20),
            session_lifetime_s: 3600,
            window_s: 300,
            lockout_after: 5,
            lockout_max: Duration::from_secs(900),
            source_lockout_after: 20,
            failure_delay: Duration::from_millis(250),
            max_failures_per_connection: 5,
        }
    }
}

/// What every connection thread shares.
struct Shared {
    backend: Arc<dyn Backend>,
    acceptor: SslAcceptor,
    config: ServerConfig,
    stop: Arc<AtomicBool>,
    /// Failure counts and the lock for read-modify-write of customer records (SQN state,
    /// registration), which the backend offers only as whole-record reads and writes; shared with the
    /// payment server's other front ends when the backend has a gate.
    gate: Arc<Gate>,
    connections: AtomicUsize,
}

/// Serves phones on `listener` until `stop` is set; the handle's thread ends once every connection has
/// ended (each notices `stop` within a second). Uses [`ServerConfig::default`].
pub fn serve(
    listener: TcpListener,
    acceptor: SslAcceptor,
    backend: Arc<dyn Backend>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    serve_with(listener, acceptor, backend, stop, ServerConfig::default())
}

/// [`serve`] with a configuration.
pub fn serve_with(
    listener: TcpListener,
    acceptor: SslAcceptor,
    backend: Arc<dyn Backend>,
    stop: Arc<AtomicBool>,
    config: ServerConfig,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let gate = backend.gate().unwrap_or_else(|| {
        Arc::new(Gate::new(GateConfig {
            lockout_after: config.lockout_after,
            lockout_max: config.lockout_max,
            source_after: config.source_lockout_after,
        }))
    });
    let shared = Arc::new(Shared {
        backend,
        acceptor,
        gate,
        config,
        stop,
        connections: AtomicUsize::new(0),
    });
    std::thread::Builder::new()
        .name("mpc-accept".into())
        .spawn(move || accept_loop(listener, shared))
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((tcp, peer)) => {
                threads.retain(|t| !t.is_finished());
                if shared.connections.load(Ordering::SeqCst) >= shared.config.max_connections {
                    // Closed before TLS: a thread per refused connection would defeat the limit.
                    log::warn!(
                        "refused the phone connection from {peer}: {} connections already (max_connections)",
                        shared.config.max_connections
                    );
                    drop(tcp);
                    continue;
                }
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let s = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("mpc-{peer}"))
                    .spawn(move || {
                        conn::serve_connection(&s, tcp, peer);
                        s.connections.fetch_sub(1, Ordering::SeqCst);
                    });
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => {
                        shared.connections.fetch_sub(1, Ordering::SeqCst);
                        log::error!(
                            "cannot start a thread for the phone connection from {peer}: {e}"
                        );
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                log::warn!("accepting a phone connection failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
}
