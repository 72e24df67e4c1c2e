//! The phone's side: a connection to the payment server, registration, login and the requests of a
//! session. One request at a time; notices pushed by the server between answers are queued and read
//! with [`Client::next_notice`], [`Client::notices`] or [`Client::wait_applied`].
//!
//! ```no_run
//! use concentrator_mpc::client::Client;
//! use std::path::Path;
//!
//! let mut client = Client::connect("ps.example:8443", Path::new("utility-ca.pem"))?;
//! let mut keys = client.register("K7Q2-99XT", "alice", "a long password")?; // once; keep `keys`
//! client.login(&mut keys, "a long password", &mut |_keys| Ok(()))?;        // save `keys` in the callback
//! let purchase = client.top_up("MTR-0001", 2000)?;
//! let outcome = client.wait_applied("MTR-0001", purchase.serial, std::time::Duration::from_secs(30))?;
//! # Ok::<(), concentrator_mpc::client::ClientError>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use concentrator_security::aka::{self, AkaError, AkaResponse};
use concentrator_security::envelope::{Sender, SenderKind};
use concentrator_security::sqn::SqnWindow;
use concentrator_security::{
    Channel, Direction, EnvelopeError, Milenage, SecurityContext, SecurityMode,
};
use openssl::ssl::{SslConnector, SslStream};
use thiserror::Error;

use crate::backend::{Delivery, HistoryEntry, HistoryKind, MeterView, Notice, Purchase};
use crate::message::{
    ErrorCode, Inner, Message, MessageError, ModePair, Plain, Sealed, NEWEST_NOTICE_KIND,
    UNSOLICITED,
};
use crate::tls::TlsSetupError;
use crate::wire::{frame, Conn, WireError};
use crate::{now_unix, SERVER_SENDER};

/// Resynchronisations the client goes along with in one login.
const MAX_RESYNCS: usize = 2;
/// Notices kept while nobody reads them; the oldest are dropped beyond this.
const MAX_QUEUED_NOTICES: usize = 1000;

/// What the phone keeps from registration: the AKA credentials and its SQN window.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    /// The customer's id at the utility.
    pub customer: String,
    /// The user name.
    pub user: String,
    /// The subscriber identity for AKA.
    pub imsi: String,
    /// K.
    pub k: [u8; 16],
    /// OPc.
    pub opc: [u8; 16],
    /// The SQN window (the phone is the USIM side).
    pub sqn: SqnWindow,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("customer", &self.customer)
            .field("user", &self.user)
            .field("imsi", &self.imsi)
            .field("k", &"<secret>")
            .field("opc", &"<secret>")
            .finish()
    }
}

/// The session a login made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The customer's id.
    pub customer: String,
    /// The user name.
    pub user: String,
    /// The algorithms protecting the session.
    pub mode: SecurityMode,
    /// When the session's keys expire (unix seconds); then log in again.
    pub expires_at: u64,
}

/// Why a client operation failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// TLS could not be set up (the CA file).
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The server could not be reached.
    #[error(
        "cannot connect to the payment server {addr}: {reason}; check the address and the network"
    )]
    Connect {
        /// The address given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed (e.g. a certificate not issued by the utility CA).
    #[error("TLS with {addr} failed: {reason}; the server's certificate must be issued by the utility CA given and name the host")]
    Handshake {
        /// The address given.
        addr: String,
        /// openssl's reason.
        reason: String,
    },
    /// The connection failed or the framing was broken.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The server sent something that is not a message of this protocol.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The server answered with an error.
    #[error("the payment server refused: {message} (code {number})")]
    Server {
        /// The code, if this client knows it.
        code: Option<ErrorCode>,
        /// The code's number.
        number: u16,
        /// The server's message.
        message: String,
    },
    /// The server's AKA challenge did not verify with this phone's key: mutual authentication failed.
    #[error("the server is not the utility's: its login challenge does not verify with this phone's key (or was altered); nothing was sent to it; check the server address and CA, or register again")]
    NotTheUtility,
    /// An answer failed the protected envelope's checks.
    #[error("an answer from the server failed the envelope check: {0}; the connection is not trustworthy, connect again")]
    Protection(EnvelopeError),
    /// A session request without a session.
    #[error("not logged in: log in first")]
    NotLoggedIn,
    /// The session's keys expired on this side (the server says so with [`ErrorCode::SessionExpired`]).
    #[error("the session's keys expired: log in again")]
    SessionExpired,
    /// The server answered with a message that does not fit.
    #[error("the server answered `{got}` where `{expected}` was expected")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: String,
    },
    /// No answer in time.
    #[error("no answer from the payment server within {0} s")]
    Timeout(u64),
    /// The SQN window could not be saved (the login stops before the response leaves).
    #[error("cannot save the phone's SQN window: {0}")]
    Save(io::Error),
}

impl ClientError {
    /// The server's error code, for [`ClientError::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => *code,
            _ => None,
        }
    }

    /// Whether the session ended because its keys expired (on either side): log in again.
    pub fn session_expired(&self) -> bool {
        matches!(self, ClientError::SessionExpired)
            || self.code() == Some(ErrorCode::SessionExpired)
    }
}

struct Session {
    channel: Channel,
    user: String,
}

/// A connection to the payment server.
pub struct Client {
    conn: Conn<SslStream<TcpStream>>,
    next_id: u64,
    session: Option<Session>,
    notices: VecDeque<Notice>,
    watching: bool,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("logged_in", &self.session.is_some())
            .field("watching", &self.watching)
            .field("queued_notices", &self.notices.len())
            .finish()
    }
}

/// The host part of `host:port` or `[v6]:port`, for SNI and the certificate check.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

impl Client {
    /// Connects to `addr` (`host:port`) over TLS, trusting only the CA certificate(s) in `ca_pem`.
    pub fn connect(addr: &str, ca_pem: &Path) -> Result<Client, ClientError> {
        Client::connect_with(addr, &crate::tls::connector(ca_pem)?)
    }

    /// Connects with a connector of the caller's (see [`crate::tls::connector_from_pem`]).
    pub fn connect_with(addr: &str, connector: &SslConnector) -> Result<Client, ClientError> {
        let fail = |reason: String| ClientError::Connect {
            addr: addr.to_owned(),
            reason,
        };
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| fail(format!("{e} (write HOST:PORT)")))?
            .collect();
        let mut last = String::from("the name resolves to no address");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        let tcp = tcp.ok_or_else(|| fail(last))?;
        let timeout = Duration::from_secs(30);
        tcp.set_read_timeout(Some(timeout))
            .and_then(|()| tcp.set_write_timeout(Some(timeout)))
            .and_then(|()| tcp.set_nodelay(true))
            .map_err(|e| fail(e.to_string()))?;
        let tls = connector
            .connect(host_of(addr), tcp)
            .map_err(|e| ClientError::Handshake {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Client {
            conn: Conn::new(tls),
            next_id: 1,
            session: None,
            notices: VecDeque::new(),
            watching: false,
            timeout,
        })
    }

    /// How long a request waits for its answer (default 30 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Whether a session is open.
    pub fn logged_in(&self) -> bool {
        self.session.is_some()
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    /// The next message, or `None` at `deadline`.
    fn next_message(&mut self, deadline: Option<Instant>) -> Result<Option<Message>, ClientError> {
        loop {
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left
                }
                None => Duration::from_secs(1),
            };
            self.conn
                .get_ref()
                .get_ref()
                .set_read_timeout(Some(slice.max(Duration::from_millis(1))))
                .map_err(WireError::Io)?;
            if let Some(octets) = self.conn.receive()? {
                return Ok(Some(Message::decode(&octets)?));
            }
        }
    }

    /// Opens a sealed message of the session.
    fn open(&mut self, envelope: &[u8]) -> Result<Inner, ClientError> {
        let s = self.session.as_mut().ok_or(ClientError::NotLoggedIn)?;
        let opened = s
            .channel
            .open(envelope, now_unix())
            .map_err(ClientError::Protection)?;
        if opened.sender.id != SERVER_SENDER.as_bytes() {
            return Err(ClientError::Unexpected {
                expected: "an answer sealed by the payment server",
                got: format!(
                    "one sealed by {:?}",
                    String::from_utf8_lossy(&opened.sender.id)
                ),
            });
        }
        Ok(Inner::decode(&opened.plaintext)?)
    }

    fn server_error(&mut self, code: u16, message: String) -> ClientError {
        let code_known = ErrorCode::from_u16(code);
        if matches!(
            code_known,
            Some(ErrorCode::SessionExpired | ErrorCode::Protection)
        ) {
            self.session = None;
            self.watching = false;
        }
        ClientError::Server {
            code: code_known,
            number: code,
            message,
        }
    }

    /// Handles a message that answers no request: a notice is queued, an error returned.
    fn unsolicited(&mut self, msg: Message) -> Result<(), ClientError> {
        match msg.body {
            Plain::Sealed { envelope } => {
                let inner = self.open(&envelope)?;
                match inner.body {
                    Sealed::Notice { notice } => {
                        let notice = match Notice::try_from(notice) {
                            Ok(n) => n,
                            Err(e @ MessageError::UnknownNotice(_)) => {
                                log::info!("{e}");
                                return Ok(());
                            }
                            Err(e) => return Err(e.into()),
                        };
                        if self.notices.len() >= MAX_QUEUED_NOTICES {
                            self.notices.pop_front();
                        }
                        self.notices.push_back(notice);
                        Ok(())
                    }
                    Sealed::Error { code, message } => Err(self.server_error(code, message)),
                    other => Err(ClientError::Unexpected {
                        expected: "a notice",
                        got: format!("{other:?}"),
                    }),
                }
            }
            Plain::Error { code, .. }
                if code == ErrorCode::SessionExpired as u16 && self.session.is_none() =>
            {
                // About a session that is already over here (e.g. during a new login): nothing to do.
                Ok(())
            }
            Plain::Error { code, message } => Err(self.server_error(code, message)),
            other => Err(ClientError::Unexpected {
                expected: "a notice",
                got: other.name().to_owned(),
            }),
        }
    }

    /// Sends a plain message and waits for the answer to it.
    fn exchange(&mut self, body: Plain) -> Result<Plain, ClientError> {
        let id = self.take_id();
        self.conn.send(&Message::new(id, body).encode()?)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let msg = self
                .next_message(Some(deadline))?
                .ok_or(ClientError::Timeout(self.timeout.as_secs()))?;
            if msg.id == id {
                return match msg.body {
                    Plain::Error { code, message } => Err(self.server_error(code, message)),
                    other => Ok(other),
                };
            }
            if msg.id == UNSOLICITED {
                self.unsolicited(msg)?;
            }
            // An answer to an earlier request that timed out: dropped.
        }
    }

    /// Registers with the authorization code from the bank counter; returns the credentials to keep
    /// (the server sends them this once).
    pub fn register(
        &mut self,
        code: &str,
        user: &str,
        password: &str,
    ) -> Result<Keys, ClientError> {
        match self.exchange(Plain::Register {
            code: code.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
        })? {
            Plain::Registered {
                customer,
                imsi,
                k,
                opc,
            } => Ok(Keys {
                customer,
                user: user.to_owned(),
                imsi,
                k,
                opc,
                sqn: SqnWindow::default(),
            }),
            other => Err(ClientError::Unexpected {
                expected: "registered",
                got: other.name().to_owned(),
            }),
        }
    }

    /// Logs in: answers the server's AKA challenge with `keys` (refusing a server whose challenge does
    /// not verify), resynchronises if the SQN is stale, and sends RES with the password. `save` is called
    /// with the updated SQN window before each answer leaves; an error there stops the login.
    pub fn login(
        &mut self,
        keys: &mut Keys,
        password: &str,
        save: &mut dyn FnMut(&Keys) -> io::Result<()>,
    ) -> Result<SessionInfo, ClientError> {
        self.session = None;
        self.watching = false;
        let m = Milenage::with_opc(&keys.k, &keys.opc);
        let modes = [SecurityMode::AES, SecurityMode::KASUMI]
            .into_iter()
            .map(ModePair::from)
            .collect();
        let mut reply = self.exchange(Plain::Login {
            identity: keys.user.clone(),
            modes,
        })?;
        for _ in 0..=MAX_RESYNCS {
            let Plain::Challenge { rand, autn } = reply else {
                return Err(ClientError::Unexpected {
                    expected: "challenge",
                    got: reply.name().to_owned(),
                });
            };
            match aka::respond(&m, &mut keys.sqn, &rand, &autn) {
                Err(AkaError::MacFailure) => {
                    // Tell the server (it logs it); nothing else is sent.
                    if let Ok(octets) =
                        Message::new(UNSOLICITED, Plain::MacFailure { rand }).encode()
                    {
                        let _ = self.conn.send(&octets);
                    }
                    return Err(ClientError::NotTheUtility);
                }
                Err(other) => {
                    return Err(ClientError::Unexpected {
                        expected: "a challenge this phone can answer",
                        got: other.to_string(),
                    })
                }
                Ok(AkaResponse::SyncFailure { auts, .. }) => {
                    save(keys).map_err(ClientError::Save)?;
                    reply = self.exchange(Plain::SyncFailure { rand, auts })?;
                }
                Ok(AkaResponse::Authenticated { res, ck, ik }) => {
                    save(keys).map_err(ClientError::Save)?;
                    let answer = self.exchange(Plain::Response {
                        rand,
                        res: res.to_vec(),
                        password: password.to_owned(),
                    })?;
                    let Plain::LoggedIn {
                        customer,
                        user,
                        mode,
                        fresh,
                        lifetime_s,
                        window_s,
                    } = answer
                    else {
                        return Err(ClientError::Unexpected {
                            expected: "logged in",
                            got: answer.name().to_owned(),
                        });
                    };
                    let mode = mode.mode().ok_or(MessageError::Invalid {
                        field: "logged-in mode",
                        reason: format!(
                            "[{}, {}] is not a pair this client offered",
                            mode.integrity, mode.ciphering
                        ),
                    })?;
                    let ctx = SecurityContext::new(mode, &ck, &ik, fresh, now_unix(), lifetime_s);
                    let expires_at = ctx.expires_at();
                    self.session = Some(Session {
                        channel: Channel::new(ctx, Direction::Uplink, window_s),
                        user: user.clone(),
                    });
                    return Ok(SessionInfo {
                        customer,
                        user,
                        mode,
                        expires_at,
                    });
                }
            }
        }
        Err(ClientError::Unexpected {
            expected: "a challenge with a fresh SQN",
            got: format!("{} resynchronisations in a row", MAX_RESYNCS + 1),
        })
    }

    /// Ends the session; the connection stays open for another login.
    pub fn logout(&mut self) -> Result<(), ClientError> {
        self.session = None;
        self.watching = false;
        let id = self.take_id();
        self.conn
            .send(&Message::new(id, Plain::Logout {}).encode()?)?;
        Ok(())
    }

    /// A request sealed in the session and framed, not sent: its id and the octets for
    /// [`Client::send_octets`]. For diagnostics and tests (a replayed or altered request).
    pub fn seal_request(&mut self, body: Sealed) -> Result<(u64, Vec<u8>), ClientError> {
        let id = self.take_id();
        let s = self.session.as_mut().ok_or(ClientError::NotLoggedIn)?;
        let sender = Sender {
            kind: SenderKind::Device,
            id: s.user.as_bytes().to_vec(),
        };
        let plain = Inner { id, body }.encode()?;
        let envelope = match s.channel.seal(&sender, 0, now_unix(), &plain) {
            Ok(e) => e,
            Err(EnvelopeError::Mode(_) | EnvelopeError::CountExhausted) => {
                self.session = None;
                self.watching = false;
                return Err(ClientError::SessionExpired);
            }
            Err(e) => return Err(ClientError::Protection(e)),
        };
        let octets = frame(&Message::new(id, Plain::Sealed { envelope }).encode()?)?;
        Ok((id, octets))
    }

    /// Writes octets as they are (see [`Client::seal_request`]).
    pub fn send_octets(&mut self, octets: &[u8]) -> Result<(), ClientError> {
        Ok(self.conn.send_framed(octets)?)
    }

    /// Waits for the sealed answer to request `id`, queueing notices that come first.
    pub fn read_answer(&mut self, id: u64) -> Result<Sealed, ClientError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let msg = self
                .next_message(Some(deadline))?
                .ok_or(ClientError::Timeout(self.timeout.as_secs()))?;
            if msg.id == UNSOLICITED {
                self.unsolicited(msg)?;
                continue;
            }
            if msg.id != id {
                continue;
            }
            return match msg.body {
                Plain::Sealed { envelope } => {
                    let inner = self.open(&envelope)?;
                    if inner.id != id {
                        return Err(ClientError::Unexpected {
                            expected: "the sealed answer to this request",
                            got: format!("a sealed answer to request {}", inner.id),
                        });
                    }
                    match inner.body {
                        Sealed::Error { code, message } => Err(self.server_error(code, message)),
                        other => Ok(other),
                    }
                }
                Plain::Error { code, message } => Err(self.server_error(code, message)),
                other => Err(ClientError::Unexpected {
                    expected: "a sealed answer",
                    got: other.name().to_owned(),
                }),
            };
        }
    }

    /// One request of the session and its answer.
    pub fn call(&mut self, body: Sealed) -> Result<Sealed, ClientError> {
        let (id, octets) = self.seal_request(body)?;
        self.send_octets(&octets)?;
        self.read_answer(id)
    }

    fn unexpected<T>(expected: &'static str, got: &Sealed) -> Result<T, ClientError> {
        Err(ClientError::Unexpected {
            expected,
            got: format!("{got:?}"),
        })
    }

    /// The customer's meters with their balance views.
    pub fn meters(&mut self) -> Result<Vec<MeterView>, ClientError> {
        match self.call(Sealed::Meters {})? {
            Sealed::MeterList { meters } => Ok(meters.into_iter().map(MeterView::from).collect()),
            other => Self::unexpected("meter list", &other),
        }
    }

    /// One meter's balance view (or every meter's).
    pub fn balance(&mut self, meter: Option<&str>) -> Result<Vec<MeterView>, ClientError> {
        match self.call(Sealed::Balance {
            meter: meter.map(str::to_owned),
        })? {
            Sealed::MeterList { meters } => Ok(meters.into_iter().map(MeterView::from).collect()),
            other => Self::unexpected("meter list", &other),
        }
    }

    /// Buys credit for a meter with a new random request id.
    pub fn top_up(&mut self, meter: &str, amount_minor: u64) -> Result<Purchase, ClientError> {
        let mut request_id = [0u8; 16];
        openssl::rand::rand_bytes(&mut request_id).map_err(|e| ClientError::Unexpected {
            expected: "random octets",
            got: e.to_string(),
        })?;
        self.top_up_with_id(meter, amount_minor, request_id)
    }

    /// Buys credit with the caller's request id: asking again with the same id (after a lost answer)
    /// returns the same purchase and pays once.
    pub fn top_up_with_id(
        &mut self,
        meter: &str,
        amount_minor: u64,
        request_id: [u8; 16],
    ) -> Result<Purchase, ClientError> {
        match self.call(Sealed::TopUp {
            meter: meter.to_owned(),
            amount_minor,
            request_id,
        })? {
            Sealed::Purchased { purchase } => Ok(Purchase::try_from(purchase)?),
            other => Self::unexpected("purchase", &other),
        }
    }

    /// History, newest first (at most `limit` entries; the server caps it at 1000).
    pub fn history(
        &mut self,
        meter: Option<&str>,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        match self.call(Sealed::History {
            meter: meter.map(str::to_owned),
            limit,
        })? {
            Sealed::HistoryList { entries } => Ok(entries
                .into_iter()
                .map(HistoryEntry::try_from)
                .collect::<Result<_, _>>()?),
            other => Self::unexpected("history", &other),
        }
    }

    /// Purchases with their tokens, newest first (the server caps `limit` at 100).
    pub fn purchases(&mut self, limit: u32) -> Result<Vec<Purchase>, ClientError> {
        match self.call(Sealed::Purchases { limit })? {
            Sealed::PurchaseList { purchases } => Ok(purchases
                .into_iter()
                .map(Purchase::try_from)
                .collect::<Result<_, _>>()?),
            other => Self::unexpected("purchase list", &other),
        }
    }

    /// Asks the server to push notices on this connection from now on.
    pub fn watch(&mut self) -> Result<(), ClientError> {
        match self.call(Sealed::Watch {
            newest_kind: Some(NEWEST_NOTICE_KIND),
        })? {
            Sealed::Done {} => {
                self.watching = true;
                Ok(())
            }
            other => Self::unexpected("done", &other),
        }
    }

    /// Stops the pushed notices.
    pub fn unwatch(&mut self) -> Result<(), ClientError> {
        match self.call(Sealed::Unwatch {})? {
            Sealed::Done {} => {
                self.watching = false;
                Ok(())
            }
            other => Self::unexpected("done", &other),
        }
    }

    /// The next pushed notice, waiting up to `timeout` (`None`: until one comes or the connection
    /// fails). Call [`Client::watch`] first.
    pub fn next_notice(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<Notice>, ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(n) = self.notices.pop_front() {
                return Ok(Some(n));
            }
            let Some(msg) = self.next_message(deadline)? else {
                if deadline.is_some() {
                    return Ok(None);
                }
                continue;
            };
            if msg.id == UNSOLICITED {
                self.unsolicited(msg)?;
            }
        }
    }

    /// Pushed notices as they come, until the connection fails (the error is the last item).
    pub fn notices(&mut self) -> Notices<'_> {
        Notices {
            client: self,
            done: false,
        }
    }

    /// Waits up to `timeout` for the outcome of token `serial` of `meter`: `Some(Notice::Applied)` or
    /// `Some(Notice::Refused)`, `None` if neither came in time. Subscribes first if needed, then looks at
    /// the purchase's delivery state, so an outcome that came before the subscription is not missed.
    pub fn wait_applied(
        &mut self,
        meter: &str,
        serial: u64,
        timeout: Duration,
    ) -> Result<Option<Notice>, ClientError> {
        self.follow_purchase(meter, serial, timeout, Duration::MAX, |_| {})
    }

    /// [`Client::wait_applied`], telling `step` what happens on the way: the token's
    /// [`Notice::Delivered`] and [`Notice::Delayed`] (with the gateway's reason) as they are pushed, and,
    /// every `heartbeat` without news, a [`Step::StillWaiting`], so that a person is never left
    /// waiting in silence.
    pub fn follow_purchase(
        &mut self,
        meter: &str,
        serial: u64,
        timeout: Duration,
        heartbeat: Duration,
        mut step: impl FnMut(Step<'_>),
    ) -> Result<Option<Notice>, ClientError> {
        let start = Instant::now();
        let deadline = start
            .checked_add(timeout)
            .unwrap_or(start + Duration::from_secs(86_400));
        if !self.watching {
            self.watch()?;
        }
        let heard = std::cell::Cell::new(false);
        let mut report = |s: Step<'_>| {
            heard.set(true);
            step(s);
        };
        if let Some(n) = self.take_outcome(meter, serial, &mut report) {
            return Ok(Some(n));
        }
        if let Some(n) = self.delivered(meter, serial)? {
            return Ok(Some(n));
        }
        let mut news = Instant::now();
        loop {
            if let Some(n) = self.take_outcome(meter, serial, &mut report) {
                return Ok(Some(n));
            }
            if heard.replace(false) {
                news = Instant::now();
            }
            let beat = news
                .checked_add(heartbeat)
                .unwrap_or(deadline)
                .min(deadline);
            let Some(msg) = self.next_message(Some(beat))? else {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                report(Step::StillWaiting(start.elapsed()));
                continue;
            };
            if msg.id == UNSOLICITED {
                self.unsolicited(msg)?;
            }
        }
    }

    /// The outcome of the token if it came; its steps so far are handed to `step` and taken from the
    /// queue (other notices stay for [`Client::next_notice`]).
    fn take_outcome(
        &mut self,
        meter: &str,
        serial: u64,
        step: &mut impl FnMut(Step<'_>),
    ) -> Option<Notice> {
        let mut i = 0;
        while i < self.notices.len() {
            let n = &self.notices[i];
            let ours = n.meter() == meter && n.serial() == Some(serial);
            if ours && n.is_progress() {
                if let Some(n) = self.notices.remove(i) {
                    step(Step::Notice(&n));
                }
                continue;
            }
            if ours {
                return self.notices.remove(i);
            }
            i += 1;
        }
        None
    }

    /// The outcome from the stored state, for a token whose notice came before the subscription.
    fn delivered(&mut self, meter: &str, serial: u64) -> Result<Option<Notice>, ClientError> {
        let purchases = self.purchases(100)?;
        let Some(p) = purchases
            .iter()
            .find(|p| p.meter == meter && p.serial == serial)
        else {
            return Ok(None);
        };
        if p.delivery == Delivery::Pending {
            return Ok(None);
        }
        let history = self.history(Some(meter), 200)?;
        let entry = history.iter().find(|h| {
            h.serial == Some(serial)
                && matches!(h.what, HistoryKind::Applied | HistoryKind::Refused)
        });
        Ok(match (p.delivery, entry) {
            (Delivery::Applied, Some(h)) => h.balance_after_minor.map(|balance| Notice::Applied {
                meter: meter.to_owned(),
                serial,
                amount_minor: h.amount_minor.unwrap_or(p.amount_minor),
                balance_after_minor: balance,
                at: h.at,
            }),
            (Delivery::Refused, h) => Some(Notice::Refused {
                meter: meter.to_owned(),
                serial,
                reason: h
                    .and_then(|h| h.detail.clone())
                    .unwrap_or_else(|| "refused by the gateway".to_owned()),
                at: h.map_or(0, |h| h.at),
            }),
            _ => None,
        })
    }
}

/// What [`Client::follow_purchase`] reports while it waits.
#[derive(Debug)]
pub enum Step<'a> {
    /// A step of the purchase: [`Notice::Delivered`] or [`Notice::Delayed`].
    Notice(&'a Notice),
    /// Nothing new for a heartbeat; this long since the wait began.
    StillWaiting(Duration),
}

/// Iterator over pushed notices ([`Client::notices`]).
#[derive(Debug)]
pub struct Notices<'a> {
    client: &'a mut Client,
    done: bool,
}

impl Iterator for Notices<'_> {
    type Item = Result<Notice, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.client.next_notice(None) {
            Ok(Some(n)) => Some(Ok(n)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
