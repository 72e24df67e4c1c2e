//! The parent's side of one isolated plugin: starting its child, one call at a time under the watchdog,
//! restarts with backoff, quarantine after repeated crashes, and the log rate limit.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use concentrator_plugin_api::ApiVersion;

use super::process::{describe_exit, lock, LogLimiter, Running};
use super::wire::{frame, Malformed};
use super::{utc_time, ChildOptions};
use crate::error::TaskError;

mod spawn;

#[derive(Debug, Default)]
struct State {
    child: Option<Running>,
    generation: u64,
    crashes: VecDeque<Instant>,
    retry_at: Option<Instant>,
    quarantined: Option<(Instant, SystemTime, String)>,
    last_problem: Option<String>,
}

/// One isolated plugin's child process and its health. Shared by every meter the plugin drives; calls
/// are serialised.
#[derive(Debug)]
pub struct Supervisor {
    name: String,
    version: String,
    label: String,
    library: File,
    options: ChildOptions,
    api: ApiVersion,
    limiter: Arc<Mutex<LogLimiter>>,
    state: Mutex<State>,
}

/// How a call failed.
enum Failure {
    Timeout,
    Closed,
    Protocol(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::Timeout,
            ErrorKind::InvalidData => Failure::Protocol(e.to_string()),
            _ => Failure::Closed,
        }
    }
}

impl From<Malformed> for Failure {
    fn from(m: Malformed) -> Self {
        Failure::Protocol(format!("a malformed frame ({})", m.0))
    }
}

impl Supervisor {
    /// Starts the child for a verified plugin file (`library`: the sealed copy of the verified bytes)
    /// whose signature names `name` and `version`, and waits for its hello. Fails with the reason when
    /// the child refuses the plugin or declares another name or version.
    pub(crate) fn start(
        name: &str,
        version: &str,
        label: &str,
        library: File,
        options: ChildOptions,
    ) -> Result<Arc<Supervisor>, String> {
        let limiter = LogLimiter {
            target: format!("plugin::{name}"),
            rate: options.log_rate.max(1),
            window: Instant::now(),
            count: 0,
            dropped: 0,
            last_drop: None,
        };
        let mut supervisor = Supervisor {
            name: name.to_owned(),
            version: version.to_owned(),
            label: label.to_owned(),
            library,
            options,
            api: ApiVersion {
                major: 0,
                minor: 0,
                patch: 0,
            },
            limiter: Arc::new(Mutex::new(limiter)),
            state: Mutex::new(State::default()),
        };
        let (running, api) = supervisor.spawn()?;
        supervisor.api = api;
        {
            let mut state = lock(&supervisor.state);
            state.child = Some(running);
            state.generation = 1;
        }
        Ok(Arc::new(supervisor))
    }

    /// The API version the plugin declared in its child.
    pub fn api_version(&self) -> ApiVersion {
        self.api
    }

    /// The options it runs with.
    pub fn options(&self) -> &ChildOptions {
        &self.options
    }

    /// The child's process id, while one runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.state).child.as_ref().map(|c| c.process.id())
    }

    /// The generation of the running child: it changes with every restart, and a meter opened in an
    /// older one is opened again.
    pub(crate) fn generation(&self) -> u64 {
        lock(&self.state).generation
    }

    /// Starts the child when it is down and its backoff is over; returns the running generation.
    pub(crate) fn started_generation(&self, entry: &'static str) -> Result<u64, TaskError> {
        let mut state = lock(&self.state);
        self.ensure_running(&mut state, entry)?;
        Ok(state.generation)
    }

    /// `Some((until, reason))` while quarantined.
    pub fn quarantined(&self) -> Option<(SystemTime, String)> {
        let state = lock(&self.state);
        match &state.quarantined {
            Some((until, wall, reason)) if Instant::now() < *until => Some((*wall, reason.clone())),
            _ => None,
        }
    }

    /// What is wrong with it now, for status: quarantined, the last crash, or flooding its log.
    pub fn problem(&self) -> Option<String> {
        if let Some((until, reason)) = self.quarantined() {
            return Some(format!("quarantined until {}: {reason}", utc_time(until)));
        }
        let flooding = lock(&self.limiter).flooding();
        let last = lock(&self.state).last_problem.clone();
        match (last, flooding) {
            (Some(last), Some(flood)) => Some(format!("{last}; {flood}")),
            (last, flood) => last.or(flood),
        }
    }

    /// One call: sends `request` (a whole frame) and returns the reply's fields and the generation of
    /// the child that answered. Starts the child first when it is down and its backoff is over.
    pub(crate) fn call(
        &self,
        entry: &'static str,
        request: &[u8],
    ) -> Result<(u64, Vec<u8>), TaskError> {
        let mut state = lock(&self.state);
        self.ensure_running(&mut state, entry)?;
        let generation = state.generation;
        let Some(running) = state.child.as_mut() else {
            return Err(self.failed(entry, "the child is not running"));
        };
        let deadline = Instant::now() + self.options.call_deadline;
        let result = (|| {
            use std::io::Write;
            running.socket.write_all(request)?;
            self.receive(running, deadline, frame::REPLY)
        })();
        let failure = match result {
            Ok(fields) => return Ok((generation, fields)),
            Err(failure) => failure,
        };
        let Some(mut running) = state.child.take() else {
            return Err(self.failed(entry, "the child is not running"));
        };
        let reason = match failure {
            Failure::Timeout => {
                let _ = running.process.kill();
                let _ = running.process.wait();
                format!(
                    "killed by the watchdog: no answer to `{entry}` within {} ms",
                    self.options.call_deadline.as_millis()
                )
            }
            Failure::Protocol(reason) => {
                let _ = running.process.kill();
                let _ = running.process.wait();
                format!("killed for breaking the child protocol in `{entry}`: {reason}")
            }
            Failure::Closed => {
                let status = running.reap();
                format!(
                    "{} in `{entry}`",
                    describe_exit(status, &running.stderr_tail, self.options.memory_limit)
                )
            }
        };
        Err(self.crashed(&mut state, entry, reason))
    }

    fn failed(&self, entry: &'static str, reason: impl Into<String>) -> TaskError {
        TaskError::ChildFailed {
            plugin: self.name.clone(),
            entry,
            reason: reason.into(),
        }
    }

    /// Records a crash: restart after a backoff, or quarantine at the limit.
    fn crashed(&self, state: &mut State, entry: &'static str, reason: String) -> TaskError {
        let now = Instant::now();
        state.crashes.push_back(now);
        while state
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.options.crash_window)
        {
            state.crashes.pop_front();
        }
        let count = u32::try_from(state.crashes.len()).unwrap_or(u32::MAX);
        let text = format!("{reason} at {}", utc_time(SystemTime::now()));
        state.last_problem = Some(text.clone());
        if count >= self.options.crash_limit.max(1) {
            let wall = SystemTime::now() + self.options.quarantine;
            let why = format!(
                "{count} crashes within {} minutes, the last: {text}",
                self.options.crash_window.as_secs().div_ceil(60)
            );
            log::error!(target: "concentrator::plugins",
                "plugin `{}` is quarantined until {}: {why}; its meters are reported as failed, other buses keep running",
                self.name, utc_time(wall));
            state.quarantined = Some((now + self.options.quarantine, wall, why));
            state.crashes.clear();
        } else {
            let shift = count.saturating_sub(1).min(6);
            let backoff =
                (self.options.restart_backoff * (1u32 << shift)).min(Duration::from_secs(60));
            state.retry_at = Some(now + backoff);
            log::warn!(target: "concentrator::plugins",
                "plugin `{}` {text} (crash {count} of {} allowed in {} minutes); restarting it in {} ms",
                self.name, self.options.crash_limit, self.options.crash_window.as_secs().div_ceil(60), backoff.as_millis());
        }
        self.failed(entry, text)
    }

    fn ensure_running(&self, state: &mut State, entry: &'static str) -> Result<(), TaskError> {
        let now = Instant::now();
        if let Some((until, wall, reason)) = &state.quarantined {
            if now < *until {
                return Err(TaskError::ChildQuarantined {
                    plugin: self.name.clone(),
                    until: utc_time(*wall),
                    reason: reason.clone(),
                });
            }
            state.quarantined = None;
        }
        if state.child.is_some() {
            return Ok(());
        }
        if let Some(at) = state.retry_at {
            if now < at {
                return Err(self.failed(
                    entry,
                    format!(
                        "restarting in {} ms after: {}",
                        at.duration_since(now).as_millis(),
                        state.last_problem.as_deref().unwrap_or("a crash")
                    ),
                ));
            }
        }
        match self.spawn() {
            Ok((running, _)) => {
                log::info!(target: "concentrator::plugins", "plugin `{}` restarted in a new child (pid {})", self.name, running.process.id());
                state.child = Some(running);
                state.generation += 1;
                state.retry_at = None;
                Ok(())
            }
            Err(reason) => Err(self.crashed(state, entry, format!("could not restart: {reason}"))),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(mut running) = lock(&self.state).child.take() {
            let _ = running.process.kill();
            let _ = running.process.wait();
        }
    }
}
