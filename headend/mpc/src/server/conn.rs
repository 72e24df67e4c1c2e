//! One phone connection: the TLS handshake, then a loop that reads messages (with a short read timeout,
//! so notices can be pushed and `stop` noticed) and answers them. State: idle, challenged (an AKA run in
//! progress), or a session (a security context and, when watching, the backend's notice receiver).

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use concentrator_security::envelope::{Sender, SenderKind};
use concentrator_security::security_mode::negotiate;
use concentrator_security::{Channel, Direction, EnvelopeError, SecurityContext, SecurityMode};
use openssl::ssl::SslStream;

use super::accounts::{self, check_user_name};
use super::gate::{wait_text, Login, Started};
use super::Shared;
use crate::backend::BackendError;
use crate::feed::NoticeFeed;
use crate::message::{
    ErrorCode, HistoryWire, Inner, Message, MessageError, MeterWire, ModePair, NoticeWire, Plain,
    PurchaseWire, Sealed, FIRST_NOTICE_KINDS, NEWEST_NOTICE_KIND, UNSOLICITED,
};
use crate::wire::{Conn, WireError};
use crate::{now_unix, SERVER_SENDER};

/// The server's algorithm pairs, preferred first.
const OUR_MODES: [SecurityMode; 2] = [SecurityMode::AES, SecurityMode::KASUMI];
/// Longest history and purchase lists returned.
const MAX_HISTORY: u32 = 1000;
const MAX_PURCHASES: u32 = 100;
/// How often an idle connection wakes to check `stop` and the idle timeout.
const TICK: Duration = Duration::from_millis(500);

pub(super) fn serve_connection(shared: &Shared, tcp: TcpStream, peer: SocketAddr) {
    let cfg = &shared.config;
    if let Err(e) = tcp
        .set_read_timeout(Some(cfg.handshake_timeout))
        .and_then(|()| tcp.set_write_timeout(Some(cfg.write_timeout)))
        .and_then(|()| tcp.set_nodelay(true))
    {
        log::warn!("phone connection from {peer}: cannot set socket options: {e}");
        return;
    }
    let tls = match shared.acceptor.accept(tcp) {
        Ok(tls) => tls,
        Err(e) => {
            log::info!("phone connection from {peer}: TLS handshake failed: {e}");
            return;
        }
    };
    let mut c = Connection {
        shared,
        peer,
        conn: Conn::new(tls),
        state: State::Idle,
        failures: 0,
    };
    c.run();
}

enum State {
    Idle,
    Challenged(Challenge),
    Session(Session),
}

struct Challenge {
    login: Login,
    mode: SecurityMode,
}

struct Session {
    customer_id: String,
    user: String,
    channel: Channel,
    watch: Option<NoticeFeed>,
    /// The newest notice kind the phone reads (what it said in `Watch`).
    newest_kind: u8,
}

/// After handling a message: keep serving or close.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

struct Connection<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    conn: Conn<SslStream<TcpStream>>,
    state: State,
    /// Failed logins and registrations on this connection.
    failures: u32,
}

impl Connection<'_> {
    fn run(&mut self) {
        let cfg = &self.shared.config;
        let mut last_heard = Instant::now();
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                self.send_plain(
                    UNSOLICITED,
                    Plain::error(
                        ErrorCode::ShuttingDown,
                        "the payment server is stopping; connect again later",
                    ),
                );
                break;
            }
            if self.push_notices() == Flow::Close {
                break;
            }
            if let State::Session(s) = &self.state {
                if s.channel.context().check_alive(now_unix()).is_err() {
                    self.state = State::Idle;
                    self.send_plain(
                        UNSOLICITED,
                        Plain::error(
                            ErrorCode::SessionExpired,
                            "the session's keys expired; log in again",
                        ),
                    );
                }
            }
            let watching = matches!(&self.state, State::Session(s) if s.watch.is_some());
            if !watching && last_heard.elapsed() >= cfg.idle_timeout {
                self.send_plain(
                    UNSOLICITED,
                    Plain::error(
                        ErrorCode::IdleTimeout,
                        format!(
                            "nothing received for {} s; connect again",
                            cfg.idle_timeout.as_secs()
                        ),
                    ),
                );
                break;
            }
            let slice = if watching { cfg.watch_poll } else { TICK };
            if self
                .conn
                .get_ref()
                .get_ref()
                .set_read_timeout(Some(slice))
                .is_err()
            {
                break;
            }
            match self.conn.receive() {
                Ok(None) => {}
                Ok(Some(frame)) => {
                    last_heard = Instant::now();
                    if self.handle(&frame) == Flow::Close {
                        break;
                    }
                }
                Err(WireError::Closed) => break,
                Err(e @ WireError::TooLong { .. }) => {
                    log::info!("phone {}: {e}", self.peer);
                    self.send_plain(UNSOLICITED, Plain::error(ErrorCode::TooLong, e.to_string()));
                    break;
                }
                Err(e @ (WireError::Empty | WireError::Truncated { .. })) => {
                    log::info!("phone {}: {e}", self.peer);
                    self.send_plain(
                        UNSOLICITED,
                        Plain::error(ErrorCode::Malformed, e.to_string()),
                    );
                    break;
                }
                Err(WireError::Io(e)) => {
                    log::debug!("phone {}: connection failed: {e}", self.peer);
                    break;
                }
            }
        }
        let _ = self.conn.get_mut().shutdown();
    }

    fn send_plain(&mut self, id: u64, body: Plain) -> Flow {
        let octets = match Message::new(id, body).encode() {
            Ok(o) => o,
            Err(e) => {
                log::error!("phone {}: {e}", self.peer);
                return Flow::Close;
            }
        };
        match self.conn.send(&octets) {
            Ok(()) => Flow::Continue,
            Err(e) => {
                log::debug!("phone {}: sending failed: {e}", self.peer);
                Flow::Close
            }
        }
    }

    /// Seals `body` as the answer to `id` in the current session and sends it.
    fn send_sealed(&mut self, id: u64, body: Sealed) -> Flow {
        let State::Session(s) = &mut self.state else {
            return Flow::Continue;
        };
        let sealed = Inner { id, body }
            .encode()
            .map_err(|e| e.to_string())
            .and_then(|plain| {
                s.channel
                    .seal(&server_sender(), 0, now_unix(), &plain)
                    .map_err(|e| e.to_string())
            });
        match sealed {
            Ok(envelope) => self.send_plain(id, Plain::Sealed { envelope }),
            Err(e) => {
                // Keys expired between the check and now, or COUNT ran out: the session is over.
                self.state = State::Idle;
                self.send_plain(
                    id,
                    Plain::error(ErrorCode::SessionExpired, format!("{e}; log in again")),
                )
            }
        }
    }

    fn push_notices(&mut self) -> Flow {
        loop {
            let State::Session(s) = &mut self.state else {
                return Flow::Continue;
            };
            let Some(rx) = &s.watch else {
                return Flow::Continue;
            };
            let notice = match rx.try_recv() {
                Ok(n) => n,
                Err(TryRecvError::Empty) => return Flow::Continue,
                Err(TryRecvError::Disconnected) => {
                    log::warn!(
                        "phone {}: the payment server ended the notice feed of {}",
                        self.peer,
                        s.customer_id
                    );
                    s.watch = None;
                    return Flow::Continue;
                }
            };
            let notice = NoticeWire::from(&notice);
            if notice.kind() > s.newest_kind {
                continue;
            }
            let body = Sealed::Notice { notice };
            if self.send_sealed(UNSOLICITED, body) == Flow::Close {
                return Flow::Close;
            }
        }
    }

    fn handle(&mut self, frame: &[u8]) -> Flow {
        let msg = match Message::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                log::info!("phone {}: {e}", self.peer);
                let code = match e {
                    MessageError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
                    _ => ErrorCode::Malformed,
                };
                self.send_plain(UNSOLICITED, Plain::error(code, e.to_string()));
                return Flow::Close;
            }
        };
        let id = msg.id;
        match msg.body {
            Plain::Register {
                code,
                user,
                password,
            } => self.register(id, &code, &user, &password),
            Plain::Login { identity, modes } => self.login(id, &identity, &modes),
            Plain::Response {
                rand,
                res,
                password,
            } => self.response(id, rand, &res, &password),
            Plain::SyncFailure { rand, auts } => self.sync_failure(id, rand, &auts),
            Plain::MacFailure { rand } => {
                if let State::Challenged(ch) = &self.state {
                    if ch.login.vector.rand == rand && ch.login.customer.is_some() {
                        log::warn!(
                            "phone {}: {}'s client refused the server's AUTN: its K/OPc differ from the server's, or the challenge was altered on the way",
                            self.peer, ch.login.key
                        );
                    }
                }
                self.state = State::Idle;
                Flow::Continue
            }
            Plain::Sealed { envelope } => self.sealed(id, &envelope),
            Plain::Logout {} => {
                self.state = State::Idle;
                Flow::Continue
            }
            other @ (Plain::Registered { .. }
            | Plain::Challenge { .. }
            | Plain::LoggedIn { .. }
            | Plain::Error { .. }) => {
                self.send_plain(
                    id,
                    Plain::error(
                        ErrorCode::UnexpectedMessage,
                        format!(
                            "a phone does not send `{}` messages; the server sends them",
                            other.name()
                        ),
                    ),
                );
                Flow::Close
            }
        }
    }

    /// A failed login or registration: pause, answer, and close after too many on this connection.
    fn refuse(&mut self, id: u64, code: ErrorCode, message: String) -> Flow {
        self.failures += 1;
        std::thread::sleep(self.shared.config.failure_delay);
        let flow = self.send_plain(id, Plain::error(code, message));
        if self.failures >= self.shared.config.max_failures_per_connection {
            log::info!(
                "phone {}: closing after {} failed attempts",
                self.peer,
                self.failures
            );
            return Flow::Close;
        }
        flow
    }

    fn backend_failed(&mut self, id: u64, e: &BackendError) -> Flow {
        log::warn!("phone {}: payment server: {e}", self.peer);
        let code = match e {
            BackendError::NotFound(_) => ErrorCode::NotFound,
            BackendError::Refused(_) => ErrorCode::Refused,
            BackendError::Unavailable(_) => ErrorCode::Unavailable,
        };
        self.send_plain(id, Plain::error(code, e.to_string()))
    }

    fn register(&mut self, id: u64, code: &str, user: &str, pass: &str) -> Flow {
        if let Err(why) = check_user_name(user) {
            return self.send_plain(id, Plain::error(ErrorCode::BadRequest, why));
        }
        if let Err(why) = accounts::check_password_rule(pass) {
            return self.send_plain(id, Plain::error(ErrorCode::BadRequest, why));
        }
        let result = self.shared.gate.register(
            self.shared.backend.as_ref(),
            code,
            user,
            pass,
            self.peer.ip(),
        );
        match result {
            Err(e) => self.backend_failed(id, &e),
            Ok(Err((code, message))) => self.refuse(id, code, message),
            Ok(Ok(c)) => {
                log::info!(
                    "phone {}: customer {} registered as {user:?}",
                    self.peer,
                    c.id
                );
                let (Some(k), Some(opc)) = (c.k, c.opc) else {
                    return Flow::Close;
                };
                self.send_plain(
                    id,
                    Plain::Registered {
                        customer: c.id,
                        imsi: c.imsi,
                        k,
                        opc,
                    },
                )
            }
        }
    }

    fn login_failed(&mut self, id: u64) -> Flow {
        self.refuse(
            id,
            ErrorCode::LoginFailed,
            "login refused: the user name, the password or the phone's key is wrong".to_owned(),
        )
    }

    /// The first step: a challenge (a decoy for an identity that names nobody, which the phone cannot
    /// tell from a real one), or a wait.
    fn login(&mut self, id: u64, identity: &str, modes: &[ModePair]) -> Flow {
        self.state = State::Idle;
        let theirs: Vec<SecurityMode> = modes.iter().filter_map(|p| p.mode()).collect();
        let mode = match negotiate(&OUR_MODES, &theirs) {
            Ok(m) => m,
            Err(e) => {
                return self.send_plain(id, Plain::error(ErrorCode::BadRequest, e.to_string()))
            }
        };
        let started =
            self.shared
                .gate
                .start_login(self.shared.backend.as_ref(), identity, self.peer.ip());
        match started {
            Err(e) => self.backend_failed(id, &e),
            Ok(Started::Wait(wait)) => self.refuse(
                id,
                ErrorCode::TooManyAttempts,
                format!(
                    "too many failed logins for this user or from this address; try again in {}",
                    wait_text(wait)
                ),
            ),
            Ok(Started::Challenge(login)) => {
                let (rand, autn) = (login.vector.rand, login.vector.autn);
                self.state = State::Challenged(Challenge { login, mode });
                self.send_plain(id, Plain::Challenge { rand, autn })
            }
        }
    }

    fn take_challenge(&mut self, rand: &[u8; 16]) -> Option<Challenge> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Challenged(ch) if ch.login.vector.rand == *rand => Some(ch),
            other => {
                self.state = other;
                None
            }
        }
    }

    fn no_challenge(&mut self, id: u64) -> Flow {
        self.send_plain(
            id,
            Plain::error(
                ErrorCode::UnexpectedMessage,
                "no login challenge with that RAND is open on this connection; start with a login",
            ),
        )
    }

    fn response(&mut self, id: u64, rand: [u8; 16], res: &[u8], pass: &str) -> Flow {
        let Some(ch) = self.take_challenge(&rand) else {
            return self.no_challenge(id);
        };
        let finished = self.shared.gate.finish_login(
            self.shared.backend.as_ref(),
            &ch.login,
            res,
            pass,
            self.peer.ip(),
        );
        let stored = match finished {
            Err(e) => return self.backend_failed(id, &e),
            Ok(None) => {
                log::info!("phone {}: failed login ({})", self.peer, ch.login.key);
                return self.login_failed(id);
            }
            Ok(Some(c)) => c,
        };
        let Some(user) = stored.user.clone() else {
            return self.login_failed(id);
        };
        let cfg = &self.shared.config;
        let mut fresh = [0u8; 4];
        if let Err(e) = openssl::rand::rand_bytes(&mut fresh) {
            return self.backend_failed(
                id,
                &BackendError::Unavailable(format!("random number generator: {e}")),
            );
        }
        let fresh = u32::from_be_bytes(fresh);
        let vector = &ch.login.vector;
        let ctx = SecurityContext::new(
            ch.mode,
            &vector.ck,
            &vector.ik,
            fresh,
            now_unix(),
            cfg.session_lifetime_s,
        );
        self.state = State::Session(Session {
            customer_id: stored.id.clone(),
            user: user.clone(),
            channel: Channel::new(ctx, Direction::Downlink, cfg.window_s),
            watch: None,
            newest_kind: FIRST_NOTICE_KINDS,
        });
        log::info!("phone {}: customer {} logged in", self.peer, stored.id);
        self.send_plain(
            id,
            Plain::LoggedIn {
                customer: stored.id,
                user,
                mode: ModePair::from(ch.mode),
                fresh,
                lifetime_s: cfg.session_lifetime_s,
                window_s: cfg.window_s,
            },
        )
    }

    fn sync_failure(&mut self, id: u64, rand: [u8; 16], auts: &[u8; 14]) -> Flow {
        let Some(mut ch) = self.take_challenge(&rand) else {
            return self.no_challenge(id);
        };
        let resynced = self.shared.gate.resync(
            self.shared.backend.as_ref(),
            &mut ch.login,
            auts,
            self.peer.ip(),
        );
        match resynced {
            Ok(true) => {
                log::info!("phone {}: {}: SQN resynchronised", self.peer, ch.login.key);
                let (rand, autn) = (ch.login.vector.rand, ch.login.vector.autn);
                self.state = State::Challenged(ch);
                self.send_plain(id, Plain::Challenge { rand, autn })
            }
            Ok(false) => self.login_failed(id),
            Err(e) => self.backend_failed(id, &e),
        }
    }

    fn sealed(&mut self, id: u64, envelope: &[u8]) -> Flow {
        let State::Session(s) = &mut self.state else {
            return self.send_plain(
                id,
                Plain::error(
                    ErrorCode::UnexpectedMessage,
                    "not logged in on this connection; log in first",
                ),
            );
        };
        let opened = match s.channel.open(envelope, now_unix()) {
            Ok(o) => o,
            Err(EnvelopeError::Mode(_)) => {
                self.state = State::Idle;
                return self.send_plain(
                    id,
                    Plain::error(
                        ErrorCode::SessionExpired,
                        "the session's keys expired; log in again",
                    ),
                );
            }
            Err(e) => {
                log::warn!(
                    "phone {}: customer {}: envelope refused: {e}",
                    self.peer,
                    s.customer_id
                );
                self.send_plain(
                    id,
                    Plain::error(ErrorCode::Protection, format!("request refused: {e}")),
                );
                return Flow::Close;
            }
        };
        if opened.sender != client_sender(&s.user) {
            let who = String::from_utf8_lossy(&opened.sender.id).into_owned();
            self.send_plain(
                id,
                Plain::error(
                    ErrorCode::Protection,
                    format!("request refused: sealed by {who:?}, not by the user logged in"),
                ),
            );
            return Flow::Close;
        }
        let inner = match Inner::decode(&opened.plaintext) {
            Ok(i) if i.id == id => i,
            Ok(i) => {
                self.send_plain(
                    id,
                    Plain::error(
                        ErrorCode::Protection,
                        format!(
                            "request refused: sealed request id {} differs from the message's {id}",
                            i.id
                        ),
                    ),
                );
                return Flow::Close;
            }
            Err(e) => {
                self.send_sealed(id, Sealed::error(ErrorCode::Malformed, e.to_string()));
                return Flow::Close;
            }
        };
        let answer = self.request(inner.body);
        self.send_sealed(id, answer)
    }

    fn request(&mut self, body: Sealed) -> Sealed {
        let State::Session(s) = &mut self.state else {
            return Sealed::error(ErrorCode::UnexpectedMessage, "not logged in");
        };
        let backend = &self.shared.backend;
        let customer = s.customer_id.as_str();
        let answer = match body {
            Sealed::Meters {} => backend.meters(customer).map(|ms| Sealed::MeterList {
                meters: ms.iter().map(MeterWire::from).collect(),
            }),
            Sealed::Balance { meter } => backend.meters(customer).and_then(|ms| {
                let ms: Vec<_> = ms
                    .iter()
                    .filter(|m| meter.as_deref().is_none_or(|want| m.meter == want))
                    .map(MeterWire::from)
                    .collect();
                match (&meter, ms.is_empty()) {
                    (Some(want), true) => Err(BackendError::NotFound(format!(
                        "meter {want} is not one of this customer's meters"
                    ))),
                    _ => Ok(Sealed::MeterList { meters: ms }),
                }
            }),
            Sealed::TopUp {
                meter,
                amount_minor,
                request_id,
            } => {
                if amount_minor == 0 {
                    return Sealed::error(ErrorCode::BadRequest, "the amount must be more than 0");
                }
                backend
                    .top_up(customer, &meter, amount_minor, request_id)
                    .map(|p| Sealed::Purchased {
                        purchase: PurchaseWire::from(&p),
                    })
            }
            Sealed::History { meter, limit } => backend
                .history(customer, meter.as_deref(), limit.min(MAX_HISTORY) as usize)
                .map(|hs| Sealed::HistoryList {
                    entries: hs.iter().map(HistoryWire::from).collect(),
                }),
            Sealed::Purchases { limit } => backend
                .purchases(customer, limit.min(MAX_PURCHASES) as usize)
                .map(|ps| Sealed::PurchaseList {
                    purchases: ps.iter().map(PurchaseWire::from).collect(),
                }),
            Sealed::Watch { newest_kind } => {
                s.newest_kind = newest_kind
                    .unwrap_or(FIRST_NOTICE_KINDS)
                    .min(NEWEST_NOTICE_KIND);
                let feed = s.watch.get_or_insert_with(|| backend.subscribe(customer));
                feed.set_progress(s.newest_kind >= NEWEST_NOTICE_KIND);
                Ok(Sealed::Done {})
            }
            Sealed::Unwatch {} => {
                s.watch = None;
                Ok(Sealed::Done {})
            }
            other @ (Sealed::MeterList { .. }
            | Sealed::Purchased { .. }
            | Sealed::HistoryList { .. }
            | Sealed::PurchaseList { .. }
            | Sealed::Done {}
            | Sealed::Notice { .. }
            | Sealed::Error { .. }) => Ok(Sealed::error(
                ErrorCode::UnexpectedMessage,
                format!("{other:?} is an answer, not a request"),
            )),
        };
        answer.unwrap_or_else(|e| Sealed::backend_error(&e))
    }
}

fn server_sender() -> Sender {
    Sender {
        kind: SenderKind::Device,
        id: SERVER_SENDER.as_bytes().to_vec(),
    }
}

/// The envelope sender of a user's requests.
pub(crate) fn client_sender(user: &str) -> Sender {
    Sender {
        kind: SenderKind::Device,
        id: user.as_bytes().to_vec(),
    }
}
