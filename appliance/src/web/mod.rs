//! The installer web UI, served by concentratord itself when `[web]` is configured (docs/install.md,
//! *Commissioning with the web UI*).
//!
//! One thread runs a single-threaded tokio runtime with axum 0.6 on hyper 0.14 — the tokio and HTTP
//! stack the daemon's MQTT client and the lock file already carry — behind TLS through openssl
//! (tokio-openssl), on the addresses `[web] listen` names only. The page is a view of the daemon's own
//! state: the status board and events go to the browser over one Server-Sent Events stream, and every
//! action goes through the same control-socket operations the `concentrator` CLI uses
//! ([`crate::ops`], the Zigbee operations), dispatched in process: the UI adds no second truth.

mod api;
pub mod assets;
pub mod auth;
pub mod commission;
pub mod hub;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use openssl::ssl::{SslAcceptor, SslMethod, SslMode};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::WebSetup;
use crate::control::ControlRoutes;

pub use hub::Hub;

/// Connections served at once (a browser opens up to 6).
const MAX_CONNECTIONS: usize = 24;
/// How long a TLS handshake or a request's headers may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The running UI.
#[derive(Debug)]
pub struct WebServer {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    /// The addresses bound.
    pub bound: Vec<SocketAddr>,
}

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub auth: auth::Auth,
    pub routes: ControlRoutes,
    pub hub: Arc<Hub>,
    pub config: crate::config::Config,
    pub config_path: Option<std::path::PathBuf>,
}

impl WebServer {
    /// Binds every `listen` address and serves the UI on its own thread until [`WebServer::stop`].
    pub fn start(
        setup: WebSetup,
        routes: ControlRoutes,
        hub: Arc<Hub>,
        config: &crate::config::Config,
    ) -> Result<WebServer, String> {
        let config_path = config_file();
        hub.set_config(config);
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
            .map_err(|e| format!("web UI TLS: {e}"))?;
        b.set_private_key(&setup.key)
            .map_err(|e| format!("web UI TLS key: {e}"))?;
        let (leaf, rest) = setup
            .chain
            .split_first()
            .ok_or("web UI TLS: no certificate")?;
        b.set_certificate(leaf)
            .map_err(|e| format!("web UI TLS certificate: {e}"))?;
        for c in rest {
            b.add_extra_chain_cert(c.clone())
                .map_err(|e| format!("web UI TLS chain: {e}"))?;
        }
        b.check_private_key()
            .map_err(|e| format!("web UI TLS: the key is not the certificate's: {e}"))?;
        b.set_mode(SslMode::RELEASE_BUFFERS);
        let acceptor = Arc::new(b.build());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(4)
            .thread_name("web-blocking")
            .build()
            .map_err(|e| format!("web UI: cannot start its runtime: {e}"))?;
        let listeners = runtime.block_on(async {
            let mut out = Vec::new();
            for addr in &setup.listen {
                let l = TcpListener::bind(addr).await.map_err(|e| {
                    format!("web UI: cannot listen on {addr}: {e}; is another program on that port? change `[web] listen`")
                })?;
                out.push(l);
            }
            Ok::<_, String>(out)
        })?;
        let bound = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect::<Vec<_>>();
        let shared = Arc::new(Shared {
            auth: auth::Auth::new(setup.users, setup.session)
                .keep_sessions_in(config.gateway.store.join("web-sessions.json")),
            routes,
            hub,
            config: config.clone(),
            config_path,
        });
        let app = api::router(shared);
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("web".into())
            .spawn(move || runtime.block_on(serve(listeners, acceptor, app, stopped)))
            .map_err(|e| format!("web UI: cannot start its thread: {e}"))?;
        for a in &bound {
            log::info!("web UI on https://{a}/");
        }
        Ok(WebServer {
            stop,
            thread: Some(thread),
            bound,
        })
    }

    /// Stops serving (open streams are dropped).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the web UI's thread panicked");
            }
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.halt();
    }
}

async fn serve(
    listeners: Vec<TcpListener>,
    acceptor: Arc<SslAcceptor>,
    app: axum::Router,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = Vec::new();
    for listener in listeners {
        let (acceptor, app, slots, mut stopped) = (
            Arc::clone(&acceptor),
            app.clone(),
            Arc::clone(&slots),
            stopped.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stopped.changed() => return,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        log::warn!("web UI: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    log::warn!("web UI: more than {MAX_CONNECTIONS} connections; {peer} refused");
                    continue;
                };
                let (acceptor, app, mut stopped) = (Arc::clone(&acceptor), app.clone(), stopped.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else { return };
                    let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, tcp) else { return };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut tls).accept()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            log::debug!("web UI: TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => return,
                    }
                    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::Body>| {
                        req.extensions_mut().insert(api::Peer(peer.ip()));
                        let mut app = app.clone();
                        async move { hyper::service::Service::call(&mut app, req).await }
                    });
                    let conn = hyper::server::conn::Http::new()
                        .http1_only(true)
                        .http1_header_read_timeout(HANDSHAKE_TIMEOUT)
                        .serve_connection(tls, service);
                    tokio::select! {
                        r = conn => if let Err(e) = r { log::debug!("web UI: connection with {peer}: {e}") },
                        _ = stopped.changed() => {}
                    }
                });
            }
        }));
    }
    let _ = stopped.changed().await;
    for t in tasks {
        let _ = t.await;
    }
}

/// The configuration file the daemon was started with (`--config FILE` or `-c FILE`), which
/// commissioning writes; `None` on the built-in example.
fn config_file() -> Option<std::path::PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "--config" | "-c" => args.get(i + 1).map(std::path::PathBuf::from),
        _ => a.strip_prefix("--config=").map(std::path::PathBuf::from),
    })
}
