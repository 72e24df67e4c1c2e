//! Logging: to journald when the daemon runs under systemd with the journal available, to stderr
//! otherwise. Choosing never panics: a journal that cannot be opened falls back to stderr with a note.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

/// Where the log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSink {
    /// The systemd journal, with structured fields.
    Journal,
    /// Standard error, one line per record.
    Stderr,
}

/// Installs the logger once; later calls only change the level. Returns where the log goes.
pub fn init(level: LevelFilter) -> LogSink {
    let sink = if systemd_journal_logger::connected_to_journal() {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => match log::set_boxed_logger(Box::new(Tapped(
                journal.with_syslog_identifier("concentratord".to_string()),
            ))) {
                Ok(()) => LogSink::Journal,
                Err(_) => return already_installed(level),
            },
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "concentratord: journald is not reachable ({e}); logging to stderr"
                );
                install_stderr()
            }
        }
    } else {
        install_stderr()
    };
    log::set_max_level(level);
    sink
}

fn already_installed(level: LevelFilter) -> LogSink {
    log::set_max_level(level);
    LogSink::Stderr
}

fn install_stderr() -> LogSink {
    // A second install (tests call init repeatedly) fails harmlessly.
    let _ = log::set_boxed_logger(Box::new(Tapped(StderrLog)));
    LogSink::Stderr
}

/// Something that sees every log record as well (the web UI's live log tail).
pub type Tap = std::sync::Arc<dyn Fn(&Record<'_>) + Send + Sync>;

static TAP: std::sync::Mutex<Option<Tap>> = std::sync::Mutex::new(None);

/// Sets (or with `None` removes) the tap.
pub fn set_tap(tap: Option<Tap>) {
    *TAP.lock().unwrap_or_else(|p| p.into_inner()) = tap;
}

/// A logger that also hands each record it logs to the tap.
#[derive(Debug)]
struct Tapped<L>(L);

impl<L: Log> Log for Tapped<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        self.0.log(record);
        if record.level() <= log::max_level() && !quieted(record.target()) {
            let tap = TAP.lock().ok().and_then(|t| t.clone());
            if let Some(tap) = tap {
                tap(record);
            }
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Targets whose records the stderr log leaves out (see [`quiet`]).
static QUIET: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

/// Leaves out the stderr records of every target that starts with `prefix`: for a library that logs
/// its internals at error level (the embedded MQTT broker of `concentrator-system` logs every span of
/// every packet that way).
pub fn quiet(prefix: &'static str) {
    if let Ok(mut q) = QUIET.lock() {
        q.push(prefix);
    }
}

fn quieted(target: &str) -> bool {
    QUIET
        .lock()
        .map(|q| q.iter().any(|p| target.starts_with(p)))
        .unwrap_or(false)
}

/// `LEVEL target: message` lines on stderr, with a UTC timestamp.
#[derive(Debug)]
struct StderrLog;

impl Log for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level() && !quieted(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (h, m, s) = (
            (now.as_secs() / 3600) % 24,
            (now.as_secs() / 60) % 60,
            now.as_secs() % 60,
        );
        let line = format!(
            "{h:02}:{m:02}:{s:02}.{:03} {:5} {}: {}\n",
            now.subsec_millis(),
            record.level(),
            record.target(),
            record.args()
        );
        // Nothing sensible to do if stderr is gone; never panic over a log line.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}
