//! Starting an isolated plugin's child and reading its frames: the socket pair, the sandbox set
//! before `exec`, the stderr capture, the hello, and the receive loop with the log limit.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concentrator_plugin_api::ApiVersion;

use super::super::process::{describe_exit, lock, spawn_from_keeper, Running};
use super::super::sandbox;
use super::super::wire::{frame, read_frame, Malformed, Reader, PROTOCOL_VERSION};
use super::{Failure, Supervisor};

impl Supervisor {
    pub(super) fn spawn(&self) -> Result<(Running, ApiVersion), String> {
        let (parent, child) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let (socket_fd, library_fd) = (child.as_raw_fd(), self.library.as_raw_fd());
        let memory_limit = self.options.memory_limit;
        let mut command = Command::new(&self.options.program);
        command
            .args(&self.options.args)
            .arg(&self.label)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: `before_exec` makes only async-signal-safe system calls.
        unsafe {
            command.pre_exec(move || sandbox::before_exec(socket_fd, library_fd, memory_limit));
        }
        let mut process = spawn_from_keeper(command).map_err(|e| {
            format!(
                "cannot start the child program {}: {e}",
                self.options.program.display()
            )
        })?;
        drop(child);
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        let mut stderr_thread = None;
        if let Some(stderr) = process.stderr.take() {
            let (tail, limiter) = (Arc::clone(&stderr_tail), Arc::clone(&self.limiter));
            stderr_thread = std::thread::Builder::new()
                .name(format!("plugin-stderr-{}", self.name))
                .spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        {
                            let mut tail = lock(&tail);
                            tail.push_str(&line);
                            tail.push('\n');
                            if tail.len() > 4096 {
                                let cut = tail.len() - 2048;
                                let cut = (cut..tail.len())
                                    .find(|i| tail.is_char_boundary(*i))
                                    .unwrap_or(0);
                                tail.drain(..cut);
                            }
                        }
                        lock(&limiter).log(log::Level::Warn, &format!("[stderr] {line}"));
                    }
                })
                .ok();
        }
        // The timeouts are set once: the receive loop checks the call's deadline between frames, so a
        // call is cut at its deadline, or, while the child keeps writing log records, soon after.
        let timeouts = parent
            .set_read_timeout(Some(self.options.call_deadline))
            .and_then(|()| parent.set_write_timeout(Some(self.options.call_deadline)))
            .and_then(|()| parent.try_clone());
        let reader = match timeouts {
            Ok(clone) => BufReader::with_capacity(64 * 1024, clone),
            Err(e) => {
                let _ = process.kill();
                let _ = process.wait();
                return Err(format!("setting up the child's socket: {e}"));
            }
        };
        let mut running = Running {
            process,
            reader,
            socket: parent,
            stderr_tail,
            stderr_thread,
        };
        // Loading and initialising may take longer than one call: the hello has 5 s at least.
        let window = self.options.call_deadline.max(Duration::from_secs(5));
        let deadline = Instant::now() + window;
        let hello = running
            .socket
            .set_read_timeout(Some(window))
            .map_err(|e| e.to_string())
            .and_then(|()| self.hello(&mut running, deadline))
            .and_then(|api| {
                running
                    .socket
                    .set_read_timeout(Some(self.options.call_deadline))
                    .map_err(|e| e.to_string())?;
                Ok(api)
            });
        match hello {
            Ok(api) => Ok((running, api)),
            Err(reason) => {
                let _ = running.process.kill();
                let _ = running.process.wait();
                Err(reason)
            }
        }
    }

    fn hello(&self, running: &mut Running, deadline: Instant) -> Result<ApiVersion, String> {
        let fields = match self.receive(running, deadline, frame::HELLO) {
            Ok(fields) => fields,
            Err(Failure::Timeout) => {
                return Err(String::from("the child did not say hello in time"))
            }
            Err(Failure::Closed) => {
                let status = running.reap();
                return Err(format!(
                    "the child ended before its hello: {}",
                    describe_exit(status, &running.stderr_tail, self.options.memory_limit)
                ));
            }
            Err(Failure::Protocol(reason)) => return Err(reason),
        };
        let mut r = Reader::new(&fields);
        let protocol = r.u32("protocol").map_err(|m| m.0.to_owned())?;
        if protocol != PROTOCOL_VERSION {
            return Err(format!(
                "the child speaks protocol {protocol}, this host {PROTOCOL_VERSION}; install a matching concentratord"
            ));
        }
        let name = r.string("name").map_err(|m| m.0.to_owned())?;
        let version = r.string("version").map_err(|m| m.0.to_owned())?;
        if name != self.name || version != self.version {
            return Err(format!(
                "the file declares `{name}` {version} but its signature is for `{}` {}; re-sign the plugin",
                self.name, self.version
            ));
        }
        let mut api = || -> Result<ApiVersion, Malformed> {
            Ok(ApiVersion {
                major: u16::try_from(r.u32("api")?).map_err(|_| Malformed("api"))?,
                minor: u16::try_from(r.u32("api")?).map_err(|_| Malformed("api"))?,
                patch: u16::try_from(r.u32("api")?).map_err(|_| Malformed("api"))?,
            })
        };
        api().map_err(|m| format!("a malformed hello ({})", m.0))
    }

    /// Reads frames until one of type `want`, logging the child's log records on the way.
    pub(super) fn receive(
        &self,
        running: &mut Running,
        deadline: Instant,
        want: u8,
    ) -> Result<Vec<u8>, Failure> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::Timeout);
            }
            let Some((kind, fields)) = read_frame(&mut running.reader)? else {
                return Err(Failure::Closed);
            };
            match kind {
                frame::LOG => {
                    let mut r = Reader::new(&fields);
                    let level = match r.u32("level")? {
                        1 => log::Level::Error,
                        2 => log::Level::Warn,
                        3 => log::Level::Info,
                        4 => log::Level::Debug,
                        _ => log::Level::Trace,
                    };
                    let _target = r.string("target")?;
                    let message = r.string("message")?;
                    lock(&self.limiter).log(level, &message);
                }
                frame::REFUSED if want == frame::HELLO => {
                    let reason = Reader::new(&fields).string("reason")?;
                    return Err(Failure::Protocol(format!(
                        "the child refused the plugin: {reason}"
                    )));
                }
                k if k == want => return Ok(fields),
                other => {
                    return Err(Failure::Protocol(format!(
                        "sent frame type {other} where {want} was due"
                    )))
                }
            }
        }
    }
}
