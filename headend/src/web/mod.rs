//! The customer's mobile web app over HTTPS (`[phone_web] listen`): the app itself (hand-written HTML,
//! CSS and JS in `headend/web/`, embedded), a JSON API and one WebSocket for live notices, answered
//! from the same [`PaymentServer`] the framed `mpc` server uses.
//!
//! Login is the design's mutual authentication: the phone computes AKA (Milenage in WebCrypto) with
//! the K and OPc it got at registration and checks the server's AUTN (MAC-A and SQN), then sends RES
//! and the password; the answer is a bearer token the app keeps in memory (no cookie, so no CSRF).
//!
//! TLS is openssl (tokio-openssl), like the `mpc` server and the MQTT link: one TLS library, the
//! utility's certificate and the same TLS 1.2+ settings ([`concentrator_mpc::tls::acceptor`]).

mod api;
mod assets;
mod auth;
mod live;
pub mod wire;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use openssl::ssl::{Ssl, SslAcceptor};
use tower::ServiceExt;

use crate::backend::PaymentServer;

/// How the web server behaves.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time for the TLS handshake and for a request's headers.
    pub handshake_timeout: Duration,
    /// Lifetime of a login's bearer token.
    pub session_lifetime: Duration,
    /// Time to answer a login challenge.
    pub challenge_lifetime: Duration,
    /// Pause before answering a failed login or registration.
    pub failure_delay: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            session_lifetime: Duration::from_secs(1800),
            challenge_lifetime: Duration::from_secs(120),
            failure_delay: Duration::from_millis(250),
        }
    }
}

/// Serves the app on `listener` until `stop` is set (noticed within 200 ms).
pub fn serve(
    listener: std::net::TcpListener,
    acceptor: SslAcceptor,
    backend: Arc<PaymentServer>,
    stop: Arc<AtomicBool>,
    config: WebConfig,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("phone-web")
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("phone-web-accept".into())
        .spawn(move || {
            runtime.block_on(accept_loop(listener, acceptor, backend, stop, config));
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
}

/// The routes (also for tests that drive them without TLS). Each request must carry the peer's
/// `ConnectInfo<SocketAddr>` in its extensions, as [`serve`] puts it there: the login gate counts
/// failures per source address.
pub fn router(app: Arc<auth::App>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/{file}", get(assets::file))
        .route("/api/register", post(api::register))
        .route("/api/login", post(api::login))
        .route("/api/login/sync", post(api::sync))
        .route("/api/login/finish", post(api::finish))
        .route("/api/logout", post(api::logout))
        .route("/api/meters", get(api::meters))
        .route("/api/topup", post(api::top_up))
        .route("/api/purchases", get(api::purchases))
        .route("/api/history", get(api::history))
        .route("/api/live", get(live::upgrade))
        .layer(DefaultBodyLimit::max(wire::MAX_BODY))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(app)
}

async fn secure_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

async fn accept_loop(
    listener: std::net::TcpListener,
    acceptor: SslAcceptor,
    backend: Arc<PaymentServer>,
    stop: Arc<AtomicBool>,
    config: WebConfig,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("phone web app: cannot use the listener: {e}");
            return;
        }
    };
    let app = Arc::new(auth::App::new(backend, config.clone()));
    let routes = router(app);
    let acceptor = Arc::new(acceptor);
    let open = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                log::warn!("phone web app: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.load(Ordering::SeqCst) >= config.max_connections {
            log::warn!(
                "phone web app: refused {peer}: {} connections already",
                config.max_connections
            );
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (acceptor, routes, open, timeout) = (
            acceptor.clone(),
            routes.clone(),
            open.clone(),
            config.handshake_timeout,
        );
        tokio::spawn(async move {
            connection(tcp, peer, &acceptor, routes, timeout).await;
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: &SslAcceptor,
    routes: Router,
    timeout: Duration,
) {
    let _ = tcp.set_nodelay(true);
    let tls = Ssl::new(acceptor.context()).and_then(|ssl| tokio_openssl::SslStream::new(ssl, tcp));
    let mut tls = match tls {
        Ok(t) => t,
        Err(e) => {
            log::warn!("phone web app {peer}: cannot start TLS: {e}");
            return;
        }
    };
    match tokio::time::timeout(timeout, Pin::new(&mut tls).accept()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            log::info!("phone web app {peer}: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            log::info!(
                "phone web app {peer}: no TLS handshake within {} s",
                timeout.as_secs()
            );
            return;
        }
    }
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(
            TokioIo::new(tls),
            // The peer's address for the login gate's counts per source.
            TowerToHyperService::new(routes.map_request(
                move |mut r: axum::http::Request<hyper::body::Incoming>| {
                    r.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    r
                },
            )),
        )
        .with_upgrades()
        .await;
    if let Err(e) = served {
        log::debug!("phone web app {peer}: {e}");
    }
}
