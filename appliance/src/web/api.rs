//! The UI's HTTP routes: the embedded assets, login and logout, the live stream, and the actions, each
//! dispatched to the same control operation the CLI uses. Every state-changing request needs a
//! session of the installer role and the session's CSRF token in `X-CSRF-Token`; each is audited.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{csrf_ok, LoginError, Session, COOKIE};
use super::{assets, Shared};
use crate::config::Role;
use crate::control::Request as ControlRequest;

/// The client's address, set per connection by the accept loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub IpAddr);

/// An error answer: a status and a sentence with the fix.
#[derive(Debug)]
pub(crate) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

type Shared_ = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { assets::page(assets::INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { assets::page(assets::APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app.css",
            get(|| async { assets::page(assets::APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/stream", get(stream))
        .route("/api/relay", post(relay))
        .route("/api/token", post(token))
        .route("/api/tenancy", post(tenancy))
        .route("/api/zigbee/permit", post(permit))
        .route("/api/zigbee/devices", get(devices))
        .route("/api/zigbee/remove", post(remove))
        .route("/api/commission/scan", post(super::commission::scan))
        .route("/api/commission/apply", post(super::commission::apply))
        .layer(DefaultBodyLimit::max(256 * 1024))
        .layer(middleware::from_fn(security_headers))
        .with_state(shared)
}

async fn security_headers<B>(req: Request<B>, next: Next<B>) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (name, value) in [
        ("content-security-policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("strict-transport-security", "max-age=31536000"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The session of the request, refreshed.
pub(crate) fn viewer(shared: &Shared, headers: &HeaderMap) -> Result<Session, ApiError> {
    cookie(headers)
        .and_then(|t| shared.auth.session(&t, Instant::now()))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "not logged in, or the session expired; log in again".into(),
            )
        })
}

/// The session of a state-changing request: logged in, the CSRF token sent, the installer role.
pub(crate) fn actor(shared: &Shared, headers: &HeaderMap) -> Result<Session, ApiError> {
    let s = viewer(shared, headers)?;
    let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    if !csrf_ok(&s, sent) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "the request lacks this session's CSRF token; reload the page".into(),
        ));
    }
    if s.role != Role::Installer {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "{} has the read-only role and cannot change anything; an installer must do this",
                s.user
            ),
        ));
    }
    Ok(s)
}

/// Runs control operation `op` (off the async thread: handlers may wait for the ledger or a bus).
pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    op: &str,
    args: Value,
) -> Result<Value, ApiError> {
    let (s, request) = (
        Arc::clone(shared),
        ControlRequest {
            op: op.to_string(),
            args,
        },
    );
    let response = tokio::task::spawn_blocking(move || s.routes.dispatch(&request))
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the operation failed inside the daemon; see the log".into(),
            )
        })?;
    match response.result {
        Some(v) if response.ok => Ok(v),
        _ if response.ok => Ok(Value::Null),
        _ => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            response
                .error
                .unwrap_or_else(|| "refused without a reason".into()),
        )),
    }
}

#[derive(Deserialize)]
struct Login {
    name: String,
    password: String,
}

async fn login(
    State(shared): Shared_,
    Extension(Peer(ip)): Extension<Peer>,
    Json(l): Json<Login>,
) -> Result<Response, ApiError> {
    let s = Arc::clone(&shared);
    let name = l.name.clone();
    let outcome =
        tokio::task::spawn_blocking(move || s.auth.login(ip, &l.name, &l.password, Instant::now()))
            .await
            .map_err(|_| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the login check failed; see the log".into(),
                )
            })?;
    match outcome {
        Ok((token, session)) => {
            log::info!(
                "web UI: {} ({:?}) logged in from {ip}",
                session.user,
                session.role
            );
            shared
                .hub
                .event("login", format!("{} logged in from {ip}", session.user));
            let max_age = shared.auth.lifetime().as_secs();
            let set = format!(
                "{COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"
            );
            let mut r = Json(me_json(&session)).into_response();
            if let Ok(v) = HeaderValue::from_str(&set) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            Ok(r)
        }
        Err(LoginError::Wrong) => {
            log::warn!("web UI: failed login as {name:?} from {ip}");
            shared
                .hub
                .event("login", format!("failed login as {name:?} from {ip}"));
            Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "wrong name or password".into(),
            ))
        }
        Err(LoginError::Wait(d)) => Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed logins from {ip}: wait {} s before trying again",
                d.as_secs().max(1)
            ),
        )),
    }
}

fn me_json(s: &Session) -> Value {
    json!({"user": s.user, "role": if s.role == Role::Installer { "installer" } else { "read-only" }, "csrf": s.csrf})
}

async fn logout(State(shared): Shared_, headers: HeaderMap) -> Response {
    if let Some(t) = cookie(&headers) {
        shared.auth.logout(&t);
    }
    let mut r = Json(json!({})).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "concentrator_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

async fn me(State(shared): Shared_, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    viewer(&shared, &headers).map(|s| Json(me_json(&s)))
}

async fn stream(State(shared): Shared_, headers: HeaderMap) -> Result<Response, ApiError> {
    viewer(&shared, &headers)?;
    let token = cookie(&headers).unwrap_or_default();
    let s = Arc::clone(&shared);
    let open = move || s.auth.open(&token, Instant::now());
    Ok(Sse::new(shared.hub.stream(open))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[derive(Deserialize)]
struct Relay {
    meter: String,
    action: String,
}

async fn relay(
    State(shared): Shared_,
    headers: HeaderMap,
    Json(r): Json<Relay>,
) -> Result<Json<Value>, ApiError> {
    let s = actor(&shared, &headers)?;
    let by = format!("installer {}", s.user);
    log::info!(
        "web UI: {by} orders the relay of meter {} {}",
        r.meter,
        r.action
    );
    dispatch(
        &shared,
        "ledger.relay",
        json!({"meter": r.meter, "action": r.action, "by": by}),
    )
    .await
    .map(Json)
}

#[derive(Deserialize)]
struct Token {
    token: String,
    #[serde(default)]
    meter: Option<String>,
}

async fn token(
    State(shared): Shared_,
    headers: HeaderMap,
    Json(t): Json<Token>,
) -> Result<Json<Value>, ApiError> {
    let s = actor(&shared, &headers)?;
    let by = format!("installer {}", s.user);
    dispatch(
        &shared,
        "ledger.token",
        json!({"token": t.token, "meter": t.meter, "by": by}),
    )
    .await
    .map(Json)
}

#[derive(Deserialize)]
struct TenancyOrderFile {
    order: String,
}

async fn tenancy(
    State(shared): Shared_,
    headers: HeaderMap,
    Json(t): Json<TenancyOrderFile>,
) -> Result<Json<Value>, ApiError> {
    let s = actor(&shared, &headers)?;
    let by = format!("installer {}", s.user);
    dispatch(
        &shared,
        "ledger.tenancy",
        json!({"order": t.order, "by": by}),
    )
    .await
    .map(Json)
}

#[derive(Deserialize)]
struct Permit {
    seconds: u64,
    #[serde(default)]
    coordinator: Option<String>,
}

async fn permit(
    State(shared): Shared_,
    headers: HeaderMap,
    Json(p): Json<Permit>,
) -> Result<Json<Value>, ApiError> {
    let s = actor(&shared, &headers)?;
    let mut args = json!({"seconds": p.seconds});
    if let Some(c) = p.coordinator {
        args["coordinator"] = json!(c);
    }
    let v = dispatch(&shared, "zigbee.permit_join", args).await?;
    log::info!(
        "web UI: installer {} permits joining for {} s",
        s.user,
        p.seconds
    );
    shared.hub.event(
        "zigbee",
        format!("installer {} permitted joining for {} s", s.user, p.seconds),
    );
    Ok(Json(v))
}

async fn devices(State(shared): Shared_, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    viewer(&shared, &headers)?;
    dispatch(&shared, "zigbee.devices", json!({}))
        .await
        .map(Json)
}

#[derive(Deserialize)]
struct Remove {
    ieee: String,
    #[serde(default)]
    coordinator: Option<String>,
}

async fn remove(
    State(shared): Shared_,
    headers: HeaderMap,
    Json(r): Json<Remove>,
) -> Result<Json<Value>, ApiError> {
    let s = actor(&shared, &headers)?;
    let mut args = json!({"ieee": r.ieee});
    if let Some(c) = r.coordinator {
        args["coordinator"] = json!(c);
    }
    let v = dispatch(&shared, "zigbee.remove", args).await?;
    log::info!(
        "web UI: installer {} removed Zigbee device {}",
        s.user,
        r.ieee
    );
    shared.hub.event(
        "zigbee",
        format!("installer {} removed device {}", s.user, r.ieee),
    );
    Ok(Json(v))
}
