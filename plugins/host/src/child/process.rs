//! An isolated plugin's child as a process: its handles, its stderr, how it ended, and the limit on
//! its log records.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{channel, Sender};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::{signal_name, utc_time};

type SpawnRequest = (Command, Sender<std::io::Result<Child>>);

/// Starts a child from one thread that lives as long as the process. The child asks to be killed with
/// its parent (`PR_SET_PDEATHSIG`), and Linux takes the parent to be the *thread* that forked it: a
/// child started from a bus worker that ends would be killed with it, and counted as a crash.
pub(super) fn spawn_from_keeper(command: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = channel::<SpawnRequest>();
        let started = std::thread::Builder::new()
            .name(String::from("plugin-children"))
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            });
        if let Err(e) = started {
            log::error!(target: "concentrator::plugins", "cannot start the thread that starts plugin children: {e}");
        }
        Mutex::new(tx)
    });
    let (reply, answer) = channel();
    lock(keeper)
        .send((command, reply))
        .map_err(|_| std::io::Error::other("the thread that starts plugin children is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the thread that starts plugin children is gone"))?
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts log records (and stderr lines) a second; drops those over the limit.
#[derive(Debug)]
pub(super) struct LogLimiter {
    pub(super) target: String,
    pub(super) rate: u32,
    pub(super) window: Instant,
    pub(super) count: u32,
    pub(super) dropped: u64,
    pub(super) last_drop: Option<(Instant, SystemTime)>,
}

impl LogLimiter {
    fn admit(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > self.rate {
            self.dropped += 1;
            self.last_drop = Some((now, SystemTime::now()));
            return false;
        }
        true
    }

    pub(super) fn log(&mut self, level: log::Level, text: &str) {
        if self.admit() {
            let text = text.get(..4096).unwrap_or(text);
            log::log!(target: &self.target, level, "{text}");
        }
    }

    /// "flooding its log: …" while records were dropped in the last minute.
    pub(super) fn flooding(&self) -> Option<String> {
        let (at, wall) = self.last_drop?;
        (at.elapsed() < Duration::from_secs(60)).then(|| {
            format!(
                "flooding its log: {} records dropped (limit {} a second), the last at {}",
                self.dropped,
                self.rate,
                utc_time(wall)
            )
        })
    }
}

#[derive(Debug)]
pub(super) struct Running {
    pub(super) process: Child,
    pub(super) socket: UnixStream,
    pub(super) reader: BufReader<UnixStream>,
    pub(super) stderr_tail: Arc<Mutex<String>>,
    pub(super) stderr_thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Reaps the ended child and waits for the last of its stderr (the pipe closes with it).
    pub(super) fn reap(&mut self) -> Option<ExitStatus> {
        let status = reap(&mut self.process);
        if let Some(thread) = self.stderr_thread.take() {
            let _ = thread.join();
        }
        status
    }
}

/// Waits briefly for an ended child; kills it when it closed its socket but lingers.
pub(super) fn reap(process: &mut Child) -> Option<ExitStatus> {
    let until = Instant::now() + Duration::from_millis(500);
    loop {
        match process.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = process.kill();
                let _ = process.wait();
                return None;
            }
        }
    }
}

/// What became of an ended child, for status: the signal, the exit status, or its memory limit.
pub(super) fn describe_exit(
    status: Option<ExitStatus>,
    tail: &Arc<Mutex<String>>,
    memory_limit: u64,
) -> String {
    let tail = lock(tail).clone();
    let out_of_memory = tail.contains("memory allocation of");
    match status {
        Some(s) if s.signal() == Some(libc::SIGABRT) && out_of_memory => format!(
            "over its memory limit of {} MiB (an allocation failed and it aborted)",
            memory_limit >> 20
        ),
        Some(s) => match (s.signal(), s.code()) {
            (Some(signal), _) => {
                format!("crashed with signal {signal} ({})", signal_name(signal))
            }
            (None, Some(code)) => format!("exited with status {code}"),
            _ => String::from("ended"),
        },
        None => String::from("closed its socket and was killed"),
    }
}
