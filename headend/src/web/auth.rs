//! Who is asking: the login steps (the AKA challenge, resynchronisation, RES with the password) and
//! registration through the payment server's login gate ([`Gate`], shared with the `mpc` server in the
//! same process: one count of failures per customer, identity, code and source address, one SQN lock,
//! decoy challenges for unknown identities), and bearer tokens with an expiry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::HeaderMap;
use concentrator_mpc::backend::{Backend, BackendError, Customer};
use concentrator_mpc::server::accounts;
use concentrator_mpc::server::gate::{GateConfig, Login, Started};
use concentrator_mpc::server::Gate;

use super::api::ApiError;
use super::WebConfig;
use crate::backend::PaymentServer;

/// Open logins and sessions kept at most (the oldest are dropped past this).
const MAX_OPEN: usize = 10_000;

/// An open login: the challenge the phone must answer (perhaps a decoy, which can only fail).
struct Pending {
    login: Login,
    created: Instant,
}

/// A logged-in phone.
#[derive(Debug, Clone)]
pub struct Session {
    pub customer: String,
    pub user: String,
    pub expires: Instant,
}

/// The web app's state.
pub struct App {
    pub backend: Arc<PaymentServer>,
    pub config: WebConfig,
    gate: Arc<Gate>,
    pending: Mutex<HashMap<String, Pending>>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("config", &self.config).finish()
    }
}

fn random_hex(n: usize) -> Result<String, ApiError> {
    let mut b = vec![0u8; n];
    openssl::rand::rand_bytes(&mut b).map_err(|e| {
        ApiError::Backend(BackendError::Unavailable(format!(
            "random number generator: {e}"
        )))
    })?;
    Ok(hex::encode(b))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl App {
    pub fn new(backend: Arc<PaymentServer>, config: WebConfig) -> App {
        let gate = backend
            .gate()
            .unwrap_or_else(|| Arc::new(Gate::new(GateConfig::default())));
        App {
            backend,
            config,
            gate,
            pending: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Registration ([`Gate::register`]).
    pub fn register(
        &self,
        code: &str,
        user: &str,
        pass: &str,
        source: IpAddr,
    ) -> Result<Customer, ApiError> {
        accounts::check_user_name(user).map_err(ApiError::BadRequest)?;
        accounts::check_password_rule(pass).map_err(ApiError::BadRequest)?;
        match self
            .gate
            .register(self.backend.as_ref(), code, user, pass, source)?
        {
            Ok(c) => Ok(c),
            Err((code, message)) => {
                std::thread::sleep(self.config.failure_delay);
                Err(ApiError::Refused(code, message))
            }
        }
    }

    /// The first step of a login: `(challenge id, RAND, AUTN)`; an identity that names nobody gets a
    /// decoy of the same shape.
    pub fn login(
        &self,
        identity: &str,
        source: IpAddr,
    ) -> Result<(String, [u8; 16], [u8; 16]), ApiError> {
        let login = match self
            .gate
            .start_login(self.backend.as_ref(), identity, source)?
        {
            Started::Wait(wait) => {
                std::thread::sleep(self.config.failure_delay);
                return Err(ApiError::TooMany(wait));
            }
            Started::Challenge(login) => login,
        };
        let (rand, autn) = (login.vector.rand, login.vector.autn);
        let id = random_hex(16)?;
        let mut pending = lock(&self.pending);
        let ttl = self.config.challenge_lifetime;
        pending.retain(|_, p| p.created.elapsed() < ttl);
        if pending.len() >= MAX_OPEN {
            return Err(ApiError::Backend(BackendError::Unavailable(
                "too many logins in progress; try again in a minute".into(),
            )));
        }
        pending.insert(
            id.clone(),
            Pending {
                login,
                created: Instant::now(),
            },
        );
        Ok((id, rand, autn))
    }

    fn take(&self, challenge: &str) -> Option<Pending> {
        let p = lock(&self.pending).remove(challenge)?;
        (p.created.elapsed() < self.config.challenge_lifetime).then_some(p)
    }

    fn failed(&self) -> ApiError {
        std::thread::sleep(self.config.failure_delay);
        ApiError::LoginFailed
    }

    /// The phone found SQN stale: resynchronise on AUTS, a new challenge under the same id.
    pub fn sync(
        &self,
        challenge: &str,
        auts: &[u8; 14],
        source: IpAddr,
    ) -> Result<([u8; 16], [u8; 16]), ApiError> {
        let Some(mut p) = self.take(challenge) else {
            return Err(self.failed());
        };
        if !self
            .gate
            .resync(self.backend.as_ref(), &mut p.login, auts, source)?
        {
            return Err(self.failed());
        }
        let out = (p.login.vector.rand, p.login.vector.autn);
        p.created = Instant::now();
        lock(&self.pending).insert(challenge.to_string(), p);
        Ok(out)
    }

    /// RES and the password: a bearer token and its session.
    pub fn finish(
        &self,
        challenge: &str,
        res: &[u8],
        pass: &str,
        source: IpAddr,
    ) -> Result<(String, Session), ApiError> {
        let Some(p) = self.take(challenge) else {
            return Err(self.failed());
        };
        let Some(c) = self
            .gate
            .finish_login(self.backend.as_ref(), &p.login, res, pass, source)?
        else {
            log::info!("phone web app: failed login ({})", p.login.key);
            return Err(self.failed());
        };
        let token = random_hex(32)?;
        let session = Session {
            customer: c.id.clone(),
            user: c.user.clone().unwrap_or_default(),
            expires: Instant::now() + self.config.session_lifetime,
        };
        let mut sessions = lock(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_OPEN {
            return Err(ApiError::Backend(BackendError::Unavailable(
                "too many sessions open; try again later".into(),
            )));
        }
        sessions.insert(token.clone(), session.clone());
        log::info!("phone web app: customer {} logged in", c.id);
        Ok((token, session))
    }

    /// The session of a bearer token, if it is open.
    pub fn session_of(&self, token: &str) -> Option<Session> {
        let mut sessions = lock(&self.sessions);
        match sessions.get(token) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                sessions.remove(token);
                None
            }
            None => None,
        }
    }

    /// The session of a request's `Authorization: Bearer` header.
    pub fn session(&self, headers: &HeaderMap) -> Result<Session, ApiError> {
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| self.session_of(t.trim()))
            .ok_or(ApiError::NoSession)
    }

    pub fn logout(&self, headers: &HeaderMap) {
        if let Some(t) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            lock(&self.sessions).remove(t.trim());
        }
    }

    /// How long a session has left, seconds.
    pub fn remaining(s: &Session) -> u64 {
        s.expires
            .saturating_duration_since(Instant::now())
            .as_secs()
    }
}

pub use concentrator_mpc::server::gate::wait_text;
