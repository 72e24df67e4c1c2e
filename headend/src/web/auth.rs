//! Who is asking: the login steps (the AKA challenge, resynchronisation, RES with the password), the
//! failed-login limiter (the `mpc` server's, keyed by the identity typed so an unknown name is limited
//! like a known one), and bearer tokens with an expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use concentrator_mpc::backend::{Backend, BackendError, Customer};
use concentrator_mpc::server::accounts::{self, ChallengeError};
use concentrator_mpc::server::Limiter;
use concentrator_security::aka::{self, AuthVector};

use super::api::ApiError;
use super::WebConfig;
use crate::backend::PaymentServer;

/// Open logins and sessions kept at most (the oldest are dropped past this).
const MAX_OPEN: usize = 10_000;
const MAX_RESYNCS: u32 = 2;

/// An open login: the vector the phone must answer, or none (a decoy for an unknown identity, which
/// looks the same to the phone and can only fail).
struct Pending {
    limiter_key: String,
    customer: Option<(String, String)>,
    vector: Option<AuthVector>,
    resyncs: u32,
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
    accounts: Mutex<()>,
    limiter: Mutex<Limiter>,
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
        App {
            backend,
            limiter: Mutex::new(Limiter::new(config.lockout_after, config.lockout_max)),
            config,
            accounts: Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Registration ([`accounts::register`]).
    pub fn register(&self, code: &str, user: &str, pass: &str) -> Result<Customer, ApiError> {
        accounts::check_user_name(user).map_err(ApiError::BadRequest)?;
        accounts::check_password_rule(pass).map_err(ApiError::BadRequest)?;
        match accounts::register(self.backend.as_ref(), &self.accounts, code, user, pass)? {
            Ok(c) => Ok(c),
            Err((code, message)) => {
                std::thread::sleep(self.config.failure_delay);
                Err(ApiError::Refused(code, message))
            }
        }
    }

    /// The first step of a login: `(challenge id, RAND, AUTN)`.
    pub fn login(&self, identity: &str) -> Result<(String, [u8; 16], [u8; 16]), ApiError> {
        let limiter_key = identity.trim().to_ascii_lowercase();
        if let Err(wait) = lock(&self.limiter).check(&limiter_key, Instant::now()) {
            std::thread::sleep(self.config.failure_delay);
            return Err(ApiError::TooMany(wait));
        }
        let found = if accounts::is_imsi(identity) {
            self.backend.customer_by_imsi(identity)?
        } else {
            self.backend.customer_by_user(identity)?
        };
        let customer = found.filter(|c| c.k.is_some() && c.opc.is_some() && c.user.is_some());
        let (customer, vector) = match customer {
            Some(c) => {
                let v = accounts::challenge(self.backend.as_ref(), &self.accounts, &c.imsi, None)
                    .map_err(|e| match e {
                    ChallengeError::Backend(e) => ApiError::Backend(e),
                    ChallengeError::BadAuts => ApiError::LoginFailed,
                })?;
                (Some((c.id, c.imsi)), Some(v))
            }
            None => (None, None),
        };
        let (rand, autn) = match &vector {
            Some(v) => (v.rand, v.autn),
            None => {
                let mut r = [0u8; 32];
                openssl::rand::rand_bytes(&mut r)
                    .map_err(|e| ApiError::Backend(BackendError::Unavailable(e.to_string())))?;
                let (a, b) = r.split_at(16);
                (
                    a.try_into().unwrap_or_default(),
                    b.try_into().unwrap_or_default(),
                )
            }
        };
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
                limiter_key,
                customer,
                vector,
                resyncs: 0,
                created: Instant::now(),
            },
        );
        Ok((id, rand, autn))
    }

    fn take(&self, challenge: &str) -> Option<Pending> {
        let p = lock(&self.pending).remove(challenge)?;
        (p.created.elapsed() < self.config.challenge_lifetime).then_some(p)
    }

    fn failed(&self, limiter_key: &str) -> ApiError {
        lock(&self.limiter).failed(limiter_key, Instant::now());
        std::thread::sleep(self.config.failure_delay);
        ApiError::LoginFailed
    }

    /// The phone found SQN stale: resynchronise on AUTS, a new challenge under the same id.
    pub fn sync(&self, challenge: &str, auts: &[u8; 14]) -> Result<([u8; 16], [u8; 16]), ApiError> {
        let Some(mut p) = self.take(challenge) else {
            std::thread::sleep(self.config.failure_delay);
            return Err(ApiError::LoginFailed);
        };
        let (Some((_, imsi)), Some(v)) = (&p.customer, &p.vector) else {
            return Err(self.failed(&p.limiter_key));
        };
        if p.resyncs >= MAX_RESYNCS {
            return Err(self.failed(&p.limiter_key));
        }
        let rand = v.rand;
        match accounts::challenge(
            self.backend.as_ref(),
            &self.accounts,
            imsi,
            Some((&rand, auts)),
        ) {
            Ok(v) => {
                let out = (v.rand, v.autn);
                p.vector = Some(v);
                p.resyncs += 1;
                p.created = Instant::now();
                lock(&self.pending).insert(challenge.to_string(), p);
                Ok(out)
            }
            Err(ChallengeError::BadAuts) => Err(self.failed(&p.limiter_key)),
            Err(ChallengeError::Backend(e)) => Err(e.into()),
        }
    }

    /// RES and the password: a bearer token and its session.
    pub fn finish(
        &self,
        challenge: &str,
        res: &[u8],
        pass: &str,
    ) -> Result<(String, Session), ApiError> {
        let Some(p) = self.take(challenge) else {
            std::thread::sleep(self.config.failure_delay);
            return Err(ApiError::LoginFailed);
        };
        let res_ok = p
            .vector
            .as_ref()
            .is_some_and(|v| aka::check_res(v, res).is_ok());
        let stored = match &p.customer {
            Some((_, imsi)) => self.backend.customer_by_imsi(imsi)?,
            None => None,
        };
        // Both checks always run, so the time does not tell which one failed or whether the user exists.
        let pass_ok = accounts::password_ok(stored.as_ref(), pass);
        let Some(c) = stored.filter(|_| res_ok & pass_ok) else {
            log::info!("phone web app: failed login for {:?}", p.limiter_key);
            return Err(self.failed(&p.limiter_key));
        };
        lock(&self.limiter).succeeded(&p.limiter_key);
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

/// A wait for people: at least one second.
pub fn wait_text(d: Duration) -> String {
    let s = d.as_secs().max(1);
    if s < 120 {
        format!("{s} s")
    } else {
        format!("{} min", s.div_ceil(60))
    }
}
