//! Serving a simulated bus's devices on a pseudo-terminal, in real time, for external programs.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::SimBusHandle;
use crate::pty::{wait_readable, PtyPair};
use crate::{HalError, LineSettings};

/// A thread that answers, on a pseudo-terminal, for the devices of a simulated bus. A program that opens
/// [`path`](Self::path) sees the devices as if they were on a real RS485 adapter. Frames are delimited by
/// silence (3.5 character times at the bus settings, at least 5 ms, since a pseudo-terminal has no
/// baud rate of its own). Stops when dropped.
#[derive(Debug)]
pub struct PtyServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _pair: Arc<PtyPair>,
}

impl PtyServer {
    /// Starts serving `devices` (a handle to a sim bus) on a new pseudo-terminal.
    pub fn start(devices: SimBusHandle, settings: LineSettings) -> Result<Self, HalError> {
        let pair = Arc::new(PtyPair::open()?);
        let path = pair.slave_path().to_path_buf();
        let master = pair.master()?;
        let stop = Arc::new(AtomicBool::new(false));
        let gap = (settings.wire_time(7) / 2).max(Duration::from_millis(5));
        let thread = {
            let stop = Arc::clone(&stop);
            let path = path.clone();
            std::thread::Builder::new()
                .name(format!("sim-pty {}", path.display()))
                .spawn(move || serve(master, &path, devices, gap, &stop))
                .map_err(|e| HalError::io("sim-pty", "starting the pty server thread", e))?
        };
        Ok(PtyServer {
            path,
            stop,
            thread: Some(thread),
            _pair: pair,
        })
    }

    /// The path to open (`/dev/pts/N`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn serve(mut master: File, path: &Path, devices: SimBusHandle, gap: Duration, stop: &AtomicBool) {
    let mut frame = Vec::new();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::SeqCst) {
        let wait = if frame.is_empty() {
            Duration::from_millis(50)
        } else {
            gap
        };
        match wait_readable(&master, wait) {
            Ok(true) => match master.read(&mut buf) {
                Ok(0) => std::thread::sleep(Duration::from_millis(5)),
                Ok(n) => frame.extend_from_slice(&buf[..n]),
                Err(e) => {
                    log::debug!("sim pty {}: read failed: {e}", path.display());
                    std::thread::sleep(Duration::from_millis(20));
                }
            },
            Ok(false) if !frame.is_empty() => {
                if let Some(reply) = devices.answer_now(&frame, SystemTime::now()) {
                    std::thread::sleep(reply.latency);
                    if let Err(e) = master.write_all(&reply.bytes) {
                        log::warn!("sim pty {}: cannot write a reply: {e}", path.display());
                    }
                }
                frame.clear();
            }
            Ok(false) => {}
            Err(e) => {
                log::warn!("sim pty {}: {e}", path.display());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for PtyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
