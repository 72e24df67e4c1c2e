//! Forwarding a plugin's `log` records and panic messages to the host.
//!
//! A cdylib has its own copy of the `log` crate and of the standard library's panic hook, so when the
//! host says it does not share our `log` crate (it passes a log callback) we install a logger that calls
//! the callback, and a panic hook that records where a panic happened (the shim reports it). When the
//! driver is linked statically into the host (no callback), the host's own logger and hook are used
//! and we install nothing.

use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::OnceLock;

use concentrator_plugin_api::codes::log_level;
use concentrator_plugin_api::{LogFn, StrRef};

struct HostLog {
    context: *const c_void,
    log: LogFn,
}

// SAFETY: the host's contract (`HostServices`) is that its log callback and context may be used from any
// thread for the life of the process.
unsafe impl Send for HostLog {}
// SAFETY: as above; we only read the two fields.
unsafe impl Sync for HostLog {}

static HOST_LOG: OnceLock<HostLog> = OnceLock::new();
static LOGGER: ForwardingLogger = ForwardingLogger;

thread_local! {
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct ForwardingLogger;

impl log::Log for ForwardingLogger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        HOST_LOG.get().is_some()
    }

    fn log(&self, record: &log::Record<'_>) {
        let Some(host) = HOST_LOG.get() else { return };
        let level = match record.level() {
            log::Level::Error => log_level::ERROR,
            log::Level::Warn => log_level::WARN,
            log::Level::Info => log_level::INFO,
            log::Level::Debug => log_level::DEBUG,
            log::Level::Trace => log_level::TRACE,
        };
        let message = record.args().to_string();
        // SAFETY: the callback is the host's, valid for the life of the process; the string references
        // live for the duration of the call.
        unsafe {
            (host.log)(
                host.context,
                level,
                StrRef::new(record.target()),
                StrRef::new(&message),
            )
        };
    }

    fn flush(&self) {}
}

/// Installs the forwarding logger and the panic hook; called once from `init` when the host passed a
/// log callback. A second call (the host initialising the same plugin twice) changes nothing.
pub(crate) fn install(context: *const c_void, log: LogFn, max_level: u32) {
    if HOST_LOG.set(HostLog { context, log }).is_err() {
        return;
    }
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(match max_level {
            0 => log::LevelFilter::Off,
            log_level::ERROR => log::LevelFilter::Error,
            log_level::WARN => log::LevelFilter::Warn,
            log_level::INFO => log::LevelFilter::Info,
            log_level::DEBUG => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        });
    }
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        PANIC_LOCATION.with(|slot| {
            if let Ok(mut slot) = slot.try_borrow_mut() {
                *slot = location;
            }
        });
    }));
}

/// Where the last panic on this thread happened, if our hook saw it.
pub(crate) fn take_panic_location() -> Option<String> {
    PANIC_LOCATION.with(|slot| slot.try_borrow_mut().ok().and_then(|mut slot| slot.take()))
}
