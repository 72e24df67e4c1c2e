//! The login gate: what every phone-facing front end of one payment server shares (this crate's framed
//! server and the head-end's web app), so that a second front end gives an attacker no second set of
//! guesses.
//!
//! - One lock for the read-modify-write of customer records (the SQN state, registration).
//! - One count of failed logins per customer (or, for an identity that names nobody, per identity as
//!   typed), one per source address, and one of failed registrations per authorization code tried,
//!   per user name chosen and per source address: across connections and front ends.
//! - Logins for identities that name nobody get a decoy challenge: RAND and AUTN made with Milenage
//!   from a K and OPc derived from a secret of this process and the identity, after the time a real
//!   challenge takes. It has the shape of a real one (AMF `8000`, an AUTN that verifies only with a
//!   key nobody has), so neither the answer nor its time tells whether the user exists; answering it
//!   can only fail, and the failure counts like any other.
//!
//! All of it is in memory: a restart forgets the counts, which costs an attacker nothing they could not
//! get by waiting, and draws a new secret, which changes nothing anyone can observe.

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use concentrator_security::aka::{self, AuthVector};
use concentrator_security::sqn::SqnGenerator;
use concentrator_security::Milenage;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

use super::accounts::{self, ChallengeError, Refusal, AMF};
use super::limiter::Limiter;
use crate::backend::{Backend, BackendError, Customer};
use crate::message::ErrorCode;

/// Resynchronisations allowed in one login.
pub const MAX_RESYNCS: u32 = 2;
/// The longest a decoy challenge waits to look like a real one.
const MAX_DECOY_WAIT: Duration = Duration::from_secs(2);

/// The gate's limits.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Failed logins in a row for one customer (or identity) before each further attempt must wait
    /// 1, 2, 4, … s after the last failure; also failed registrations per code and per user name.
    pub lockout_after: u32,
    /// The longest such wait.
    pub lockout_max: Duration,
    /// Failed logins and registrations from one source address (an IPv6 address counts by its /64)
    /// before it must wait likewise. Higher than `lockout_after`: several customers may share an
    /// address (a carrier's NAT), and a success does not clear this count (it fades after an hour
    /// without failures).
    pub source_after: u32,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            lockout_after: 5,
            lockout_max: Duration::from_secs(900),
            source_after: 20,
        }
    }
}

/// How long a failure is remembered without another one.
const FORGET_IDENTITY: Duration = Duration::from_secs(24 * 3600);
const FORGET_SOURCE: Duration = Duration::from_secs(3600);

/// See the module's documentation.
pub struct Gate {
    accounts: Mutex<()>,
    identities: Mutex<Limiter>,
    sources: Mutex<Limiter>,
    secret: [u8; 32],
    /// A moving average of the time a real challenge takes (the SQN is saved, flushed, first).
    challenge_time: Mutex<Duration>,
    config: GateConfig,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("config", &self.config)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A login in progress: the challenge sent and whose it is.
#[derive(Debug)]
pub struct Login {
    /// What the failed-login count is kept under ([`Gate::login_key`]).
    pub key: String,
    /// The customer's id and IMSI; `None` for a decoy.
    pub customer: Option<(String, String)>,
    /// The vector whose RAND and AUTN were sent.
    pub vector: AuthVector,
    /// Resynchronisations so far.
    pub resyncs: u32,
}

/// How a login's first step ends for the phone.
#[derive(Debug)]
pub enum Started {
    /// Send RAND and AUTN (a real challenge or a decoy: the phone cannot tell).
    Challenge(Login),
    /// Too many failures for this identity or from this address: wait this long.
    Wait(Duration),
}

/// The source-address key: the address, or for IPv6 its /64 (one subscriber's usual allocation).
fn source_key(source: IpAddr) -> String {
    match source {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

fn random_secret() -> [u8; 32] {
    let mut s = [0u8; 32];
    if let Err(e) = openssl::rand::rand_bytes(&mut s) {
        log::error!("login gate: openssl's random generator failed ({e}); using the system's");
        s = rand::random();
    }
    s
}

impl Gate {
    /// A gate with a fresh secret.
    pub fn new(config: GateConfig) -> Gate {
        Gate {
            accounts: Mutex::new(()),
            identities: Mutex::new(Limiter::new(config.lockout_after, config.lockout_max)),
            sources: Mutex::new(Limiter::new(config.source_after, config.lockout_max)),
            secret: random_secret(),
            challenge_time: Mutex::new(Duration::ZERO),
            config,
        }
    }

    /// The lock for read-modify-write of customer records ([`accounts::register`],
    /// [`accounts::challenge`]).
    pub fn accounts(&self) -> &Mutex<()> {
        &self.accounts
    }

    /// The limits.
    pub fn config(&self) -> &GateConfig {
        &self.config
    }

    /// The key failed logins are counted under: the customer's id, so the user name and the IMSI
    /// share one count; for an identity that names nobody, the identity as typed (lower case).
    pub fn login_key(identity: &str, customer: Option<&Customer>) -> String {
        match customer {
            Some(c) => format!("customer:{}", c.id),
            None => format!("identity:{}", identity.trim().to_ascii_lowercase()),
        }
    }

    /// `Err(wait)` while any of `keys` or `source` must wait (the longest wait).
    fn check(&self, keys: &[&str], source: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let ids = lock(&self.identities);
        let mut wait = keys
            .iter()
            .filter_map(|k| ids.check(k, now).err())
            .max()
            .unwrap_or_default();
        drop(ids);
        if let Err(w) = lock(&self.sources).check(&source_key(source), now) {
            wait = wait.max(w);
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    fn failed(&self, keys: &[&str], source: IpAddr) {
        let now = Instant::now();
        let mut ids = lock(&self.identities);
        for k in keys {
            ids.failed(k, now);
        }
        ids.prune(now, FORGET_IDENTITY);
        drop(ids);
        let mut src = lock(&self.sources);
        src.failed(&source_key(source), now);
        src.prune(now, FORGET_SOURCE);
    }

    /// The first step of a login for `identity` (a user name, or an IMSI if all digits) from
    /// `source`: a challenge, or how long to wait.
    pub fn start_login(
        &self,
        backend: &dyn Backend,
        identity: &str,
        source: IpAddr,
    ) -> Result<Started, BackendError> {
        let found = if accounts::is_imsi(identity) {
            backend.customer_by_imsi(identity)?
        } else {
            backend.customer_by_user(identity)?
        };
        let customer = found.filter(|c| c.k.is_some() && c.opc.is_some() && c.user.is_some());
        let key = Gate::login_key(identity, customer.as_ref());
        if let Err(wait) = self.check(&[&key], source) {
            return Ok(Started::Wait(wait));
        }
        let Some(c) = customer else {
            return Ok(Started::Challenge(Login {
                key,
                customer: None,
                vector: self.decoy(identity)?,
                resyncs: 0,
            }));
        };
        let started = Instant::now();
        let vector = match accounts::challenge(backend, &self.accounts, &c.imsi, None) {
            Ok(v) => v,
            Err(ChallengeError::Backend(e)) => return Err(e),
            // No AUTS was given: cannot happen; answered as a decoy would be.
            Err(ChallengeError::BadAuts) => self.decoy(identity)?,
        };
        let took = started.elapsed();
        let mut avg = lock(&self.challenge_time);
        *avg = if avg.is_zero() {
            took
        } else {
            (*avg * 7 + took) / 8
        };
        Ok(Started::Challenge(Login {
            key,
            customer: Some((c.id, c.imsi)),
            vector,
            resyncs: 0,
        }))
    }

    /// The K and OPc of an identity's decoys: HMAC-SHA-256 of the identity under the gate's secret.
    fn decoy_keys(&self, identity: &str) -> Result<([u8; 16], [u8; 16]), BackendError> {
        let unavailable = |e: openssl::error::ErrorStack| {
            BackendError::Unavailable(format!("making a login challenge: {e}"))
        };
        let key = PKey::hmac(&self.secret).map_err(unavailable)?;
        let mut mac = Signer::new(MessageDigest::sha256(), &key).map_err(unavailable)?;
        mac.update(b"decoy K and OPc\0").map_err(unavailable)?;
        mac.update(identity.trim().to_ascii_lowercase().as_bytes())
            .map_err(unavailable)?;
        let derived = mac.sign_to_vec().map_err(unavailable)?;
        let (mut k, mut opc) = ([0u8; 16], [0u8; 16]);
        if let (Some(a), Some(b)) = (derived.get(..16), derived.get(16..32)) {
            k.copy_from_slice(a);
            opc.copy_from_slice(b);
        }
        Ok((k, opc))
    }

    /// A challenge for an identity that names nobody (see the module's documentation).
    fn decoy(&self, identity: &str) -> Result<AuthVector, BackendError> {
        let started = Instant::now();
        let (k, opc) = self.decoy_keys(identity)?;
        let mut rand = [0u8; 16];
        openssl::rand::rand_bytes(&mut rand)
            .map_err(|e| BackendError::Unavailable(format!("random number generator: {e}")))?;
        let vector = aka::generate_vector(
            &Milenage::with_opc(&k, &opc),
            &mut SqnGenerator::default(),
            rand,
            AMF,
        )
        .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        let typical = *lock(&self.challenge_time);
        if let Some(rest) = typical.min(MAX_DECOY_WAIT).checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        Ok(vector)
    }

    /// The phone found the SQN stale and sent AUTS: a new challenge in `login`, or `false` (a failed
    /// login, counted) when the AUTS does not verify, the login is a decoy, or it resynchronised too
    /// often.
    pub fn resync(
        &self,
        backend: &dyn Backend,
        login: &mut Login,
        auts: &[u8; 14],
        source: IpAddr,
    ) -> Result<bool, BackendError> {
        let refuse = |login: &Login| {
            self.failed(&[&login.key], source);
            Ok(false)
        };
        let Some((_, imsi)) = &login.customer else {
            return refuse(login);
        };
        if login.resyncs >= MAX_RESYNCS {
            return refuse(login);
        }
        let rand = login.vector.rand;
        match accounts::challenge(backend, &self.accounts, imsi, Some((&rand, auts))) {
            Ok(v) => {
                login.vector = v;
                login.resyncs += 1;
                Ok(true)
            }
            Err(ChallengeError::BadAuts) => refuse(login),
            Err(ChallengeError::Backend(e)) => Err(e),
        }
    }

    /// RES and the password: the customer if both are right (the count cleared), else `None` (the
    /// failure counted). Both checks always run, so the time does not tell which one failed or
    /// whether the customer exists.
    pub fn finish_login(
        &self,
        backend: &dyn Backend,
        login: &Login,
        res: &[u8],
        pass: &str,
        source: IpAddr,
    ) -> Result<Option<Customer>, BackendError> {
        let res_ok = aka::check_res(&login.vector, res).is_ok();
        let stored = match &login.customer {
            Some((_, imsi)) => backend.customer_by_imsi(imsi)?,
            None => None,
        };
        let pass_ok = accounts::password_ok(stored.as_ref(), pass);
        match stored {
            Some(c) if res_ok & pass_ok => {
                lock(&self.identities).succeeded(&login.key);
                Ok(Some(c))
            }
            _ => {
                self.failed(&[&login.key], source);
                Ok(None)
            }
        }
    }

    /// Registration ([`accounts::register`]) under the limits: an unknown or used code counts as a
    /// failure for the code, the user name and the source address; while any must wait the answer
    /// is [`ErrorCode::TooManyAttempts`] and the code is not even looked up.
    pub fn register(
        &self,
        backend: &dyn Backend,
        code: &str,
        user: &str,
        pass: &str,
        source: IpAddr,
    ) -> Result<Result<Customer, Refusal>, BackendError> {
        let code_key = format!("code:{}", code.trim());
        let user_key = format!("registering:{}", user.trim().to_ascii_lowercase());
        let keys = [code_key.as_str(), user_key.as_str()];
        if let Err(wait) = self.check(&keys, source) {
            return Ok(Err((
                ErrorCode::TooManyAttempts,
                format!(
                    "too many failed registrations; try again in {}",
                    wait_text(wait)
                ),
            )));
        }
        let out = accounts::register(backend, &self.accounts, code, user, pass)?;
        if let Err((ErrorCode::CodeRefused, _)) = &out {
            self.failed(&keys, source);
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_count_by_address_and_ipv6_by_its_64() {
        assert_eq!(source_key("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(
            source_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            source_key("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
        assert_ne!(
            source_key("2001:db8:1:2::1".parse().unwrap()),
            source_key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(source_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
    }

    #[test]
    fn decoys_look_like_challenges_and_differ_per_identity() {
        let g = Gate::new(GateConfig::default());
        let a = g.decoy("nobody").unwrap();
        let b = g.decoy("nobody").unwrap();
        assert_ne!(
            a.rand, b.rand,
            "a fresh RAND each time, as a real challenge"
        );
        assert_eq!(&a.autn[6..8], &AMF, "AMF as in a real AUTN");
        // The same identity has the same (secret) keys; another identity or another gate, others.
        let keys = |g: &Gate, who: &str| g.decoy_keys(who).unwrap();
        assert_eq!(keys(&g, "nobody"), keys(&g, "Nobody "));
        assert_ne!(keys(&g, "nobody"), keys(&g, "somebody"));
        assert_ne!(
            keys(&g, "nobody"),
            keys(&Gate::new(GateConfig::default()), "nobody"),
            "a secret per gate"
        );
    }
}
