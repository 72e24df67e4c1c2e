//! Who may use the UI: users from the users file (scrypt hashes), sessions that expire when unused,
//! a CSRF token per session, and a login rate limit per address with growing waits.
//!
//! Sessions survive a restart of the daemon (commissioning restarts it): they are kept in
//! `web-sessions.json` in the store (mode 0600), each under the SHA-256 of its cookie value, so the
//! file alone does not let anyone in. A session whose user is no longer in the users file, or whose
//! role changed, is dropped when the file is read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::unix_now;
use crate::config::{Role, WebUser};

/// The session cookie's name.
pub const COOKIE: &str = "concentrator_session";
/// Failed logins from one address that are let through without a wait.
pub const FREE_FAILURES: u32 = 2;
/// The longest wait after failed logins.
pub const MAX_WAIT: Duration = Duration::from_secs(900);
/// Sessions kept at once; the least recently used goes first.
const MAX_SESSIONS: usize = 32;
/// Addresses whose failures are remembered at once.
const MAX_ADDRESSES: usize = 1024;

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    /// Their name.
    pub user: String,
    /// Their role.
    pub role: Role,
    /// The token every state-changing request must carry in `X-CSRF-Token`.
    pub csrf: String,
    last_used: Instant,
    /// When it was last written to the sessions file (Unix seconds), to write a refresh only now and then.
    saved_unix: u64,
}

/// A session as the sessions file keeps it.
#[derive(Serialize, Deserialize)]
struct SavedSession {
    user: String,
    role: String,
    csrf: String,
    last_used_unix: u64,
}

/// How often a session's refresh is written to the file at most (a restart may then end a session
/// this much early).
const SAVE_REFRESH_EVERY: u64 = 60;

/// The Unix time of `at`, an instant of this process.
fn unix_of(at: Instant) -> u64 {
    let now = Instant::now();
    match at.checked_duration_since(now) {
        Some(ahead) => unix_now() + ahead.as_secs(),
        None => unix_now().saturating_sub(now.duration_since(at).as_secs()),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Installer => "installer",
        Role::ReadOnly => "read-only",
    }
}

/// The key a session is kept under: the SHA-256 of its cookie value.
fn key_of(token: &str) -> String {
    hex::encode(openssl::sha::sha256(token.as_bytes()))
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    until: Option<Instant>,
    last: Option<Instant>,
}

/// Users, sessions and failed logins.
#[derive(Debug)]
pub struct Auth {
    users: Vec<WebUser>,
    lifetime: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// The sessions file, when sessions are kept across restarts.
    file: Option<PathBuf>,
}

/// Why a login did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong name or password.
    Wrong,
    /// Too many failures from this address: wait this long.
    Wait(Duration),
}

/// scrypt takes 16 MiB per check; glibc keeps such freed blocks in the heap, where they would stay in
/// the daemon's resident memory. Hand them back to the system.
fn give_back_scrypt_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top of the heap; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    if openssl::rand::rand_bytes(&mut b).is_err() {
        // openssl's CSPRNG does not fail once seeded; a fallback from the OS keeps the token unguessable.
        use rand::RngCore;
        rand::rngs::OsRng.fill_bytes(&mut b);
    }
    hex::encode(b)
}

impl Auth {
    /// For these users, with sessions that expire after `lifetime` without use.
    pub fn new(users: Vec<WebUser>, lifetime: Duration) -> Self {
        Auth {
            users,
            lifetime,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            file: None,
        }
    }

    /// Keeps the sessions in `file` across restarts, and takes up the ones it holds that are still
    /// open (for users still in the users file with the same role).
    pub fn keep_sessions_in(mut self, file: PathBuf) -> Self {
        let saved: HashMap<String, SavedSession> = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let (now, now_unix) = (Instant::now(), unix_now());
        let mut sessions = HashMap::new();
        for (key, s) in saved {
            let age = Duration::from_secs(now_unix.saturating_sub(s.last_used_unix));
            let Some(user) = self.users.iter().find(|u| u.name == s.user) else {
                continue;
            };
            if age >= self.lifetime || role_name(user.role) != s.role {
                continue;
            }
            let Some(last_used) = now.checked_sub(age) else {
                continue;
            };
            sessions.insert(
                key,
                Session {
                    user: s.user,
                    role: user.role,
                    csrf: s.csrf,
                    last_used,
                    saved_unix: s.last_used_unix,
                },
            );
        }
        if !sessions.is_empty() {
            log::info!(
                "web UI: {} kept from before the restart",
                crate::words::count(sessions.len(), "session", "sessions")
            );
        }
        self.sessions = Mutex::new(sessions);
        self.file = Some(file);
        self
    }

    /// Writes the sessions to the file (a new file renamed over the old; mode 0600).
    fn save(&self, sessions: &mut HashMap<String, Session>) {
        let Some(file) = &self.file else { return };
        let saved: HashMap<&String, SavedSession> = sessions
            .iter_mut()
            .map(|(k, s)| {
                s.saved_unix = unix_of(s.last_used);
                (
                    k,
                    SavedSession {
                        user: s.user.clone(),
                        role: role_name(s.role).to_string(),
                        csrf: s.csrf.clone(),
                        last_used_unix: s.saved_unix,
                    },
                )
            })
            .collect();
        let tmp = file.with_extension("json.new");
        let written = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = written {
            log::warn!(
                "web UI: cannot keep the sessions in {}: {e}; a restart will end them",
                file.display()
            );
        }
    }

    /// How long a session lasts unused.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// How long `addr` must still wait before it may try again, if at all.
    pub fn wait(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.get(&addr)
            .and_then(|f| f.until)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Checks a login (scrypt: call it off the async threads). On success returns the session's cookie
    /// value and the session.
    pub fn login(
        &self,
        addr: IpAddr,
        name: &str,
        password: &str,
        now: Instant,
    ) -> Result<(String, Session), LoginError> {
        if let Some(wait) = self.wait(addr, now) {
            return Err(LoginError::Wait(wait));
        }
        let user = self.users.iter().find(|u| u.name == name);
        // An unknown name costs the same scrypt as a known one.
        let hash = user.map_or_else(
            || self.users.first().map_or("", |u| u.password.as_str()),
            |u| u.password.as_str(),
        );
        let matches = concentrator_mpc::password::verify(password, hash).unwrap_or(false);
        give_back_scrypt_memory();
        let Some(user) = user.filter(|_| matches) else {
            let mut all = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if all.len() >= MAX_ADDRESSES && !all.contains_key(&addr) {
                all.retain(|_, f| f.last.is_some_and(|l| now.duration_since(l) < MAX_WAIT));
            }
            let f = all.entry(addr).or_default();
            f.count += 1;
            f.last = Some(now);
            if f.count > FREE_FAILURES {
                let doublings = (f.count - FREE_FAILURES - 1).min(12);
                let wait = (Duration::from_secs(5) * (1u32 << doublings)).min(MAX_WAIT);
                f.until = Some(now + wait);
            }
            return Err(LoginError::Wrong);
        };
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr);
        let session = Session {
            user: user.name.clone(),
            role: user.role,
            csrf: random_token(),
            last_used: now,
            saved_unix: 0,
        };
        let token = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| now.saturating_duration_since(s.last_used) < self.lifetime);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(key_of(&token), session.clone());
        self.save(&mut sessions);
        Ok((token, session))
    }

    /// Whether the session of cookie value `token` is still open (not refreshed: an open stream alone
    /// does not keep a session alive).
    pub fn open(&self, token: &str, now: Instant) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(&key_of(token))
            .is_some_and(|s| now.saturating_duration_since(s.last_used) < self.lifetime)
    }

    /// The session of cookie value `token`, refreshed, unless it expired.
    pub fn session(&self, token: &str, now: Instant) -> Option<Session> {
        let key = key_of(token);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let s = sessions.get_mut(&key)?;
        if now.saturating_duration_since(s.last_used) >= self.lifetime {
            sessions.remove(&key);
            self.save(&mut sessions);
            return None;
        }
        s.last_used = now;
        let session = s.clone();
        if unix_of(now).saturating_sub(session.saved_unix) >= SAVE_REFRESH_EVERY {
            self.save(&mut sessions);
        }
        Some(session)
    }

    /// Ends a session.
    pub fn logout(&self, token: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(&key_of(token));
        self.save(&mut sessions);
    }
}

/// Whether the CSRF token sent matches the session's (constant time).
pub fn csrf_ok(session: &Session, sent: Option<&str>) -> bool {
    sent.is_some_and(|s| {
        s.len() == session.csrf.len() && openssl::memcmp::eq(s.as_bytes(), session.csrf.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let password = concentrator_mpc::password::hash("right-horse").unwrap();
        let users = vec![
            WebUser {
                name: "alice".into(),
                role: Role::Installer,
                password: password.clone(),
            },
            WebUser {
                name: "bob".into(),
                role: Role::ReadOnly,
                password,
            },
        ];
        Auth::new(users, Duration::from_secs(60))
    }

    #[test]
    fn wrong_passwords_wait_longer_each_time_and_sessions_expire() {
        let a = auth();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(
                a.login(ip, "alice", "nope", t0).unwrap_err(),
                LoginError::Wrong
            );
        }
        assert_eq!(
            a.login(ip, "alice", "nope", t0).unwrap_err(),
            LoginError::Wrong
        );
        // Now even the right password waits 5 s, and the next failure doubles it.
        assert_eq!(
            a.login(ip, "alice", "right-horse", t0).unwrap_err(),
            LoginError::Wait(Duration::from_secs(5))
        );
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(
            a.login(ip, "mallory", "x", t1).unwrap_err(),
            LoginError::Wrong
        );
        assert_eq!(a.wait(ip, t1), Some(Duration::from_secs(10)));
        // Another address is not held back.
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let (token, s) = a.login(other, "bob", "right-horse", t1).unwrap();
        assert_eq!(s.role, Role::ReadOnly);
        assert!(csrf_ok(&s, Some(&s.csrf)));
        assert!(!csrf_ok(&s, Some("0")));
        assert!(!csrf_ok(&s, None));
        assert!(a.open(&token, t1 + Duration::from_secs(30)));
        // An open stream checks without refreshing: unused for a minute, the session ends.
        assert!(!a.open(&token, t1 + Duration::from_secs(61)));
        assert!(a.session(&token, t1 + Duration::from_secs(59)).is_some());
        assert!(
            a.session(&token, t1 + Duration::from_secs(59 + 61))
                .is_none(),
            "expired after a minute unused"
        );
        // After the wait, the right password gets in and the failures are forgotten.
        let t2 = t1 + Duration::from_secs(11);
        assert!(a.login(ip, "alice", "right-horse", t2).is_ok());
        assert_eq!(a.wait(ip, t2), None);
    }

    #[test]
    fn sessions_survive_a_restart_but_not_a_logout_or_a_changed_role() {
        let dir = std::env::temp_dir().join(format!("web-sessions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("web-sessions.json");
        let _ = std::fs::remove_file(&file);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let a = auth().keep_sessions_in(file.clone());
        let now = Instant::now();
        let (alice, s) = a.login(ip, "alice", "right-horse", now).unwrap();
        let (bob, _) = a.login(ip, "bob", "right-horse", now).unwrap();
        let (gone, _) = a.login(ip, "alice", "right-horse", now).unwrap();
        a.logout(&gone);
        // The file holds no cookie value, and only its owner may read it.
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(&alice) && !text.contains(&bob), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(a);
        // The daemon starts again: the sessions are still open, with the same CSRF token.
        let b = auth().keep_sessions_in(file.clone());
        let again = b
            .session(&alice, Instant::now())
            .expect("alice's session was lost");
        assert_eq!(again.user, "alice");
        assert_eq!(again.csrf, s.csrf);
        assert!(b.session(&bob, Instant::now()).is_some());
        assert!(
            b.session(&gone, Instant::now()).is_none(),
            "a logged-out session came back"
        );
        // bob is made an installer in the users file: his read-only session does not carry over.
        let mut users = auth().users;
        users[1].role = Role::Installer;
        let c = Auth::new(users, Duration::from_secs(60)).keep_sessions_in(file.clone());
        assert!(c.session(&bob, Instant::now()).is_none());
        assert!(c.session(&alice, Instant::now()).is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
