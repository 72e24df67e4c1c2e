//! The JSON API: each handler decodes its body ([`super::wire`]), runs the blocking work (scrypt, the
//! store) off the async threads, and answers JSON; errors are `{"error": code, "message": text}` with
//! the text written for the customer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use concentrator_mpc::backend::{Backend, BackendError, Delivery, Purchase};
use concentrator_mpc::message::ErrorCode;
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, App, Session};
use super::wire::{self, BadRequest};

/// Longest lists answered.
const MAX_HISTORY: usize = 500;
const MAX_PURCHASES: usize = 100;

/// What went wrong, as the API answers it.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Refused(ErrorCode, String),
    LoginFailed,
    TooMany(Duration),
    NoSession,
    Backend(BackendError),
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        ApiError::Backend(e)
    }
}

impl From<BadRequest> for ApiError {
    fn from(e: BadRequest) -> Self {
        ApiError::BadRequest(e.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Refused(ErrorCode::UserTaken, m) => (StatusCode::CONFLICT, "user_taken", m),
            ApiError::Refused(ErrorCode::TooManyAttempts, m) => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", m)
            }
            ApiError::Refused(_, m) => (StatusCode::FORBIDDEN, "code_refused", m),
            ApiError::LoginFailed => (
                StatusCode::UNAUTHORIZED,
                "login_failed",
                "login refused: the user name, the password or this phone's key is wrong".into(),
            ),
            ApiError::TooMany(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!(
                    "too many failed logins; try again in {}",
                    auth::wait_text(wait)
                ),
            ),
            ApiError::NoSession => (
                StatusCode::UNAUTHORIZED,
                "no_session",
                "not logged in, or the session expired; log in again".into(),
            ),
            ApiError::Backend(BackendError::NotFound(m)) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Backend(BackendError::Refused(m)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "refused", m)
            }
            ApiError::Backend(BackendError::Unavailable(m)) => {
                log::warn!("phone web app: {m}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the payment server cannot answer now; try again in a minute".into(),
                )
            }
        };
        let mut r = (status, Json(json!({"error": code, "message": message}))).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

use concentrator_protocol::unix_now;

type Answer = Result<Response, ApiError>;

fn ok<T: serde::Serialize>(v: T) -> Answer {
    let mut r = Json(v).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Runs blocking work (scrypt, the store) on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ApiError::Backend(BackendError::Unavailable(format!(
            "a request's worker failed: {e}"
        ))))
    })
}

/// The phone's address, for the gate's counts per source (set by the server on every request).
type Peer = ConnectInfo<SocketAddr>;

pub async fn register(State(app): State<Arc<App>>, ConnectInfo(peer): Peer, body: Bytes) -> Answer {
    let r: wire::RegisterRequest = wire::decode("registration", &body)?;
    let c = blocking(move || app.register(&r.code, &r.user, &r.password, peer.ip())).await?;
    let (Some(k), Some(opc)) = (c.k, c.opc) else {
        return Err(BackendError::Unavailable("registration stored no key".into()).into());
    };
    ok(wire::Registered {
        customer: c.id,
        user: c.user.unwrap_or_default(),
        imsi: c.imsi,
        k: hex::encode(k),
        opc: hex::encode(opc),
    })
}

pub async fn login(State(app): State<Arc<App>>, ConnectInfo(peer): Peer, body: Bytes) -> Answer {
    let r: wire::LoginRequest = wire::decode("login", &body)?;
    let start = Instant::now();
    let floor = app.config.failure_delay;
    let out = blocking(move || app.login(&r.identity, peer.ip())).await;
    // Every first step takes at least this long, known user or not (the known one writes its SQN).
    if let Some(rest) = floor.checked_sub(start.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let (challenge, rand, autn) = out?;
    ok(wire::ChallengeAnswer {
        challenge,
        rand: hex::encode(rand),
        autn: hex::encode(autn),
    })
}

pub async fn sync(State(app): State<Arc<App>>, ConnectInfo(peer): Peer, body: Bytes) -> Answer {
    let r: wire::SyncRequest = wire::decode("resynchronisation", &body)?;
    let auts: [u8; 14] = wire::hex_bytes("auts", &r.auts)?;
    let challenge = r.challenge.clone();
    let (rand, autn) = blocking(move || app.sync(&r.challenge, &auts, peer.ip())).await?;
    ok(wire::ChallengeAnswer {
        challenge,
        rand: hex::encode(rand),
        autn: hex::encode(autn),
    })
}

pub async fn finish(State(app): State<Arc<App>>, ConnectInfo(peer): Peer, body: Bytes) -> Answer {
    let r: wire::FinishRequest = wire::decode("login", &body)?;
    let res = hex::decode(&r.res).map_err(|_| ApiError::BadRequest("res is not hex".into()))?;
    let (token, s) =
        blocking(move || app.finish(&r.challenge, &res, &r.password, peer.ip())).await?;
    let expires_at = unix_now() + App::remaining(&s);
    ok(wire::LoggedIn {
        token,
        customer: s.customer,
        user: s.user,
        expires_at,
    })
}

pub async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    app.logout(&headers);
    ok(json!({}))
}

async fn with_session<T: Send + 'static>(
    app: Arc<App>,
    headers: &HeaderMap,
    f: impl FnOnce(&App, Session) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let s = app.session(headers)?;
    blocking(move || f(&app, s)).await
}

pub async fn meters(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    let m = with_session(app, &headers, |app, s| {
        Ok(app.backend.meters(&s.customer)?)
    })
    .await?;
    ok(m.into_iter().map(wire::MeterJson::from).collect::<Vec<_>>())
}

/// A purchase with its `delivered` state and refusal reason from the token's record.
fn purchase_json(app: &App, p: &Purchase) -> Result<wire::PurchaseJson, ApiError> {
    let (sent_at, reason) = if p.delivery == Delivery::Applied {
        (None, None)
    } else {
        app.backend.delivery_facts(&p.meter, p.serial)?
    };
    Ok(wire::PurchaseJson::new(p, sent_at.is_some(), reason))
}

pub async fn top_up(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Answer {
    let r: wire::TopUpRequest = wire::decode("top-up", &body)?;
    let key: [u8; 16] = wire::hex_bytes("key", &r.key)?;
    // The key is per customer: the backend books request ids under the customer's id, so the same
    // key from a double tap (or a retry after a lost answer) returns the first purchase.
    let p = with_session(app, &headers, move |app, s| {
        let p = app
            .backend
            .top_up(&s.customer, &r.meter, r.amount_minor, key)?;
        purchase_json(app, &p)
    })
    .await?;
    ok(p)
}

pub async fn purchases(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    let list = with_session(app, &headers, |app, s| {
        app.backend
            .purchases(&s.customer, MAX_PURCHASES)?
            .iter()
            .map(|p| purchase_json(app, p))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    ok(list)
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    meter: Option<String>,
}

pub async fn history(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> Answer {
    let list = with_session(app, &headers, move |app, s| {
        Ok(app
            .backend
            .history(&s.customer, q.meter.as_deref(), MAX_HISTORY)?)
    })
    .await?;
    ok(list
        .into_iter()
        .map(wire::HistoryJson::from)
        .collect::<Vec<_>>())
}
