//! The head-end as a whole: store, payment record, backend, MQTT worker and phone-facing server, for
//! the binary's `run` and for embedding (the all-in-one demo).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use concentrator_mpc::backend::Backend;
use concentrator_security::receipt::ReceiptVerifier;
use concentrator_security::signed::DocumentSigner;
use concentrator_security::token::TokenSigner;

use crate::audit::PaymentRecord;
use crate::backend::{PaymentServer, TopUpRules};
use crate::config::{read_hex, Config};
use crate::engine::{Engine, Settings};
use crate::error::{HeadEndError, Result};
use crate::mqtt::{self, LinkStatus, MqttSettings};
use crate::notify::Notifier;
use crate::pki;
use crate::store::Store;

/// A head-end with its store open and its keys loaded, not yet connected.
pub struct HeadEnd {
    config: Config,
    worker: Option<String>,
    store: Arc<Store>,
    payments: Arc<PaymentRecord>,
    notifier: Arc<Notifier>,
    backend: Arc<PaymentServer>,
}

impl std::fmt::Debug for HeadEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadEnd")
            .field("base", &self.config.base)
            .finish()
    }
}

/// What to start besides MQTT.
#[derive(Debug, Default)]
pub struct StartOptions {
    /// Serve phones: on this listener, or (`None`) on `[phone] listen` when `serve_phones`.
    pub phone_listener: Option<TcpListener>,
    /// Start the phone-facing server.
    pub serve_phones: bool,
}

/// A running head-end.
pub struct HeadEndHandle {
    backend: Arc<PaymentServer>,
    store: Arc<Store>,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<LinkStatus>>,
    worker: Option<JoinHandle<()>>,
    phone: Option<JoinHandle<()>>,
    phone_addr: Option<SocketAddr>,
    web: Option<JoinHandle<()>>,
    web_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for HeadEndHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadEndHandle")
            .field("phone_addr", &self.phone_addr)
            .finish()
    }
}

impl HeadEnd {
    /// Opens the store (`[store]`: sled at `path`, or PostgreSQL at `url`) and loads the token
    /// signer; the payment record is anchored in the anchor file ([`Config::anchor_path`]).
    pub fn open(config: Config) -> Result<HeadEnd> {
        let store = Arc::new(Store::open_configured(&config)?);
        let anchor = config.anchor_path();
        Self::assemble(config, store, Some(anchor))
    }

    /// Over a given store (tests: [`Store::memory`]); its payment record is not anchored in a file.
    pub fn with_store(config: Config, store: Arc<Store>) -> Result<HeadEnd> {
        Self::assemble(config, store, None)
    }

    /// Over a given store, its payment record anchored in `anchor` (see [`crate::audit`]).
    pub fn with_store_anchored(
        config: Config,
        store: Arc<Store>,
        anchor: std::path::PathBuf,
    ) -> Result<HeadEnd> {
        Self::assemble(config, store, Some(anchor))
    }

    fn assemble(
        config: Config,
        store: Arc<Store>,
        anchor: Option<std::path::PathBuf>,
    ) -> Result<HeadEnd> {
        let signer = token_signer(&config)?;
        let payments = Arc::new(match anchor {
            Some(path) => PaymentRecord::anchored(path),
            None => PaymentRecord::new(),
        });
        let notifier = Arc::new(Notifier::new());
        let backend = Arc::new(PaymentServer::new(
            store.clone(),
            payments.clone(),
            notifier.clone(),
            TokenSigner::new(signer),
            TopUpRules {
                currency: config.pilot.currency.clone(),
                lifetime_s: u64::from(config.tokens.lifetime_days) * 86_400,
                min_minor: config.tokens.min_minor,
                max_minor: config.tokens.max_minor,
            },
        ));
        Ok(HeadEnd {
            config,
            worker: None,
            store,
            payments,
            notifier,
            backend,
        })
    }

    /// Names this worker among several on one PostgreSQL store (`run --worker`): its MQTT client id
    /// is `[mqtt] client_id`-`name`, so each has its own session.
    pub fn worker(mut self, name: &str) -> HeadEnd {
        self.worker = Some(name.to_string());
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Orders a change of tenancy (signed with the token key, recorded and flushed); the running
    /// head-end sends it to the meter's gateway ([`crate::tenancy`]).
    pub fn order_tenancy(
        &self,
        req: &crate::tenancy::OrderRequest,
        now: u64,
    ) -> std::result::Result<crate::store::TenancyRecord, crate::tenancy::OrderError> {
        let signer = token_signer(&self.config)
            .map_err(|e| crate::tenancy::OrderError::Refused(e.to_string()))?;
        crate::tenancy::create_order(
            &self.store,
            &self.payments,
            &signer,
            &self.config.pilot.currency,
            req,
            now,
        )
    }

    /// The [`Backend`] (the phone-facing server's view).
    pub fn backend(&self) -> Arc<PaymentServer> {
        self.backend.clone()
    }

    /// The protocol core over this head-end's store (the MQTT worker runs one; tests drive one).
    pub fn engine(&self) -> Result<Engine> {
        let c = &self.config;
        let bad = |message: String| HeadEndError::Config {
            path: c.base.join("headend.toml"),
            message,
        };
        let ca_path = c.path(&c.pki.ca_cert);
        let ca = pki::load_cert(&ca_path, "utility CA certificate")?;
        Ok(Engine::new(
            self.store.clone(),
            Settings {
                profile: c.profile().map_err(bad)?,
                hn_private: read_hex(
                    &c.path(&c.home_network.private_key),
                    "home-network private key",
                )?,
                key_id: c.home_network.key_id,
                modes: c.modes().map_err(bad)?,
                key_lifetime: c.aka.key_lifetime_s,
                window: c.aka.window_s,
                currency: c.pilot.currency.clone(),
                dedup_capacity: c.store.dedup_per_gateway,
                reconcile_interval: c.reconcile.interval_s,
                result_timeout: c.reconcile.result_timeout_s,
                anchor_confirm_every: c.reconcile.anchor_confirm_every_s,
                gap_checks_per_s: c.reconcile.gap_checks_per_s,
                receipts: ReceiptVerifier::new(vec![ca]),
                statements: token_signer(c)?,
            },
            self.payments.clone(),
            self.notifier.clone(),
        )
        .with_spool(crate::remote::spool_dir(&c.base)))
    }

    /// Connects to the broker and (if asked) serves phones. Returns at once; the work runs on threads.
    pub fn start(self, opts: StartOptions) -> Result<HeadEndHandle> {
        let broker = self.config.broker()?;
        if self.config.mqtt.shared_group.is_some() && !self.store.shared() {
            return Err(HeadEndError::Config {
                path: self.config.base.join("headend.toml"),
                message: "[mqtt] shared_group (several workers) needs a store they can share: set [store] backend = \"postgres\" and url".into(),
            });
        }
        let tls = mqtt::tls_for(&self.config)?;
        // Several engine threads only on a shared store: there each unit of work rebuilds what it
        // needs from the store under its gateway's lock, as separate workers do; on sled an engine
        // keeps reserved COUNTs and AKA runs in memory, which a second engine would not see.
        let n = if self.store.shared() {
            self.config.mqtt.engines.max(1)
        } else {
            1
        };
        let mut engines = Vec::with_capacity(n);
        for _ in 0..n {
            engines.push(self.engine()?);
        }
        if let Some(first) = engines.first_mut() {
            // The spools are the periodic work's, which the first engine does.
            first.set_order_spool(Some(crate::tenancy::spool_dir(&self.config)));
            first.set_sms_spool(Some(crate::engine::sms_spool_dir(&self.config.base)));
        }
        let settings = MqttSettings {
            host: broker.host,
            port: broker.port,
            tls,
            client_id: match &self.worker {
                Some(w) => format!("{}-{w}", self.config.mqtt.client_id),
                None => self.config.mqtt.client_id.clone(),
            },
            shared_group: self.config.mqtt.shared_group.clone(),
            keep_alive: Duration::from_secs(30),
            backoff: (
                Duration::from_millis(500),
                Duration::from_secs(60),
                Duration::from_millis(100),
            ),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (phone, phone_addr) = if opts.serve_phones || opts.phone_listener.is_some() {
            let listener = match opts.phone_listener {
                Some(l) => l,
                None => TcpListener::bind(&self.config.phone.listen).map_err(|e| HeadEndError::Config {
                    path: self.config.base.join("headend.toml"),
                    message: format!(
                        "[phone] listen {:?}: cannot listen there ({e}); choose a free address:port",
                        self.config.phone.listen
                    ),
                })?,
            };
            let addr = listener.local_addr().ok();
            let cert = self.config.path(&self.config.phone.cert);
            let key = self.config.path(&self.config.phone.key);
            let acceptor =
                concentrator_mpc::tls::acceptor(&cert, &key).map_err(|e| HeadEndError::Pki {
                    what: "phone server certificate",
                    path: cert.clone(),
                    reason: e.to_string(),
                })?;
            let backend: Arc<dyn Backend> = self.backend.clone();
            let h = concentrator_mpc::server::serve(listener, acceptor, backend, stop.clone())
                .map_err(|e| HeadEndError::Mqtt(format!("cannot start the phone server: {e}")))?;
            (Some(h), addr)
        } else {
            (None, None)
        };
        let (web, web_addr) = if opts.serve_phones {
            self.start_web(&stop)?
        } else {
            (None, None)
        };
        let (tx, rx) = mpsc::channel();
        if let Some(heard) = self.store.listen(crate::backend::PURCHASES, stop.clone())? {
            forward_purchases(heard, self.backend.origin().to_string(), tx.clone())?;
        }
        self.backend.set_nudge(Some(tx));
        let status = Arc::new(Mutex::new(LinkStatus::default()));
        let (st, stat) = (stop.clone(), status.clone());
        let worker = std::thread::Builder::new()
            .name("headend-worker".into())
            .spawn(move || mqtt::run(settings, engines, rx, st, stat))
            .map_err(|e| HeadEndError::Mqtt(format!("cannot start the MQTT worker: {e}")))?;
        Ok(HeadEndHandle {
            backend: self.backend,
            store: self.store,
            stop,
            status,
            worker: Some(worker),
            phone,
            phone_addr,
            web,
            web_addr,
        })
    }

    /// The web app (headend/src/web) on `[phone_web] listen` (port 0: any free port, see
    /// [`HeadEndHandle::web_addr`]), with `[phone]`'s certificate; none without that section.
    fn start_web(
        &self,
        stop: &Arc<AtomicBool>,
    ) -> Result<(Option<JoinHandle<()>>, Option<SocketAddr>)> {
        let bad = |message: String| HeadEndError::Config {
            path: self.config.base.join("headend.toml"),
            message,
        };
        let Some(w) = &self.config.phone_web else {
            return Ok((None, None));
        };
        let listener = TcpListener::bind(&w.listen).map_err(|e| {
            bad(format!(
                "[phone_web] listen {:?}: cannot listen there ({e}); choose a free address:port",
                w.listen
            ))
        })?;
        let addr = listener.local_addr().ok();
        let cert = self.config.path(&self.config.phone.cert);
        let key = self.config.path(&self.config.phone.key);
        let acceptor =
            concentrator_mpc::tls::acceptor(&cert, &key).map_err(|e| HeadEndError::Pki {
                what: "phone server certificate",
                path: cert.clone(),
                reason: e.to_string(),
            })?;
        let h = crate::web::serve(
            listener,
            acceptor,
            self.backend.clone(),
            stop.clone(),
            crate::web::WebConfig::default(),
        )
        .map_err(|e| bad(format!("cannot start the phone web app: {e}")))?;
        Ok((Some(h), addr))
    }
}

/// How long a purchase another worker announced waits before this one delivers it: the worker that
/// sold it normally has (its engine was nudged at once), and then this one finds it sent.
const FOREIGN_PURCHASE_WAIT: Duration = Duration::from_secs(1);

/// Hands the purchases other processes announce (`ORIGIN<tab>GATEWAY<tab>METER` on
/// [`crate::backend::PURCHASES`])
/// to this worker's engines, [`FOREIGN_PURCHASE_WAIT`] later; ends with the listener.
fn forward_purchases(
    heard: mpsc::Receiver<String>,
    origin: String,
    nudge: mpsc::Sender<String>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("headend-purchases".into())
        .spawn(move || {
            let mut waiting: std::collections::VecDeque<(std::time::Instant, String)> =
                Default::default();
            loop {
                let wait = waiting
                    .front()
                    .map(|(at, _)| at.saturating_duration_since(std::time::Instant::now()))
                    .unwrap_or(Duration::from_millis(500));
                match heard.recv_timeout(wait) {
                    Ok(p) => match p.split_once('\t') {
                        Some((from, _)) if from == origin => {}
                        Some((_, nudge)) => waiting.push_back((
                            std::time::Instant::now() + FOREIGN_PURCHASE_WAIT,
                            nudge.to_string(),
                        )),
                        None => log::warn!("ignored a purchase announcement without its origin"),
                    },
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                let now = std::time::Instant::now();
                while waiting.front().is_some_and(|(at, _)| *at <= now) {
                    if let Some((_, meter)) = waiting.pop_front() {
                        if nudge.send(meter).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| {
            HeadEndError::Mqtt(format!(
                "cannot start the thread that takes other workers' purchases: {e}"
            ))
        })
}

/// The head-end's token key with its certificate (tokens and account restore statements).
fn token_signer(config: &Config) -> Result<DocumentSigner> {
    let cert_path = config.path(&config.pki.token_cert);
    let cert = pki::load_cert(&cert_path, "token-signing certificate")?;
    let key = pki::load_key(&config.path(&config.pki.token_key), "token-signing key")?;
    DocumentSigner::new(key, &[cert]).map_err(|e| HeadEndError::Pki {
        what: "token-signing certificate",
        path: cert_path,
        reason: e.to_string(),
    })
}

impl HeadEndHandle {
    /// The [`Backend`].
    pub fn backend(&self) -> Arc<PaymentServer> {
        self.backend.clone()
    }

    /// The store (reads while running are fine).
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// The MQTT link.
    pub fn status(&self) -> LinkStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Where the phone server listens.
    pub fn phone_addr(&self) -> Option<SocketAddr> {
        self.phone_addr
    }

    /// Where the web app listens (`https://ADDR/`).
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    /// Whether the threads still run.
    pub fn is_running(&self) -> bool {
        self.worker.as_ref().is_some_and(|w| !w.is_finished())
    }

    /// Stops MQTT and the phone server, flushes the store.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.backend.set_nudge(None);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        if let Some(p) = self.phone.take() {
            let _ = p.join();
        }
        if let Some(w) = self.web.take() {
            let _ = w.join();
        }
        self.store.flush()?;
        Ok(())
    }
}

impl Drop for HeadEndHandle {
    fn drop(&mut self) {
        if self.worker.is_some() {
            let _ = self.shutdown();
        }
    }
}
