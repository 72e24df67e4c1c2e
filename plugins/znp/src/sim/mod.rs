//! A ZNP coordinator emulator of our own with emulated Zigbee prepayment meters behind it, for tests,
//! benchmarks and the sim appliance.
//!
//! [`ZnpEmulator`] is sans-IO; [`EmulatorThread`] runs it on a thread over any [`Link`]: the
//! emulator's end of an in-process [`SimStream`](concentrator_hal::sim::SimStream) pair, or the slave
//! side of a pseudo-terminal opened as a serial port (the host then attaches to the master with
//! `SerialStreamPort::attach_pty`).
//!
//! ```
//! use std::time::Duration;
//! use concentrator_driver_znp::sim::{EmulatorThread, ZnpEmulator};
//! use concentrator_hal::sim::SimStream;
//! use concentrator_hal::SerialStream;
//!
//! let (mut host, peer) = SimStream::pair("zigbee");
//! let emulator = EmulatorThread::spawn(ZnpEmulator::new(true), peer);
//! host.write_all(&[0xFE, 0x00, 0x21, 0x01, 0x20]).unwrap(); // SYS_PING
//! let mut buf = [0u8; 16];
//! let mut got = Vec::new();
//! while got.len() < 7 {
//!     let n = host.read(&mut buf, Duration::from_secs(1)).unwrap();
//!     assert!(n > 0);
//!     got.extend_from_slice(&buf[..n]);
//! }
//! assert_eq!(got, [0xFE, 0x02, 0x61, 0x01, 0x59, 0x06, 0x3D]);
//! emulator.stop();
//! ```

mod coordinator;
mod meter;
mod nv;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use concentrator_hal::sim::SimStreamPeer;
use concentrator_hal::SerialStream;

pub use coordinator::ZnpEmulator;
pub use meter::{EmulatedMeter, METER_ENDPOINT};
pub use nv::{item as nv_item, NetworkSettings, NvMemory};

/// The emulator's end of a byte stream.
pub trait Link: Send + 'static {
    /// Sends bytes to the host; false when the host is gone.
    fn send(&mut self, bytes: &[u8]) -> bool;
    /// Receives bytes, waiting up to `timeout`; `None` when the host is gone.
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Option<usize>;
}

impl Link for SimStreamPeer {
    fn send(&mut self, bytes: &[u8]) -> bool {
        SimStreamPeer::send(self, bytes)
    }
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Option<usize> {
        SimStreamPeer::recv(self, buf, timeout)
    }
}

/// A serial port (the pty slave) as the emulator's link.
#[derive(Debug)]
pub struct SerialLink<S>(pub S);

impl<S: SerialStream + 'static> Link for SerialLink<S> {
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.0.write_all(bytes).is_ok()
    }
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Option<usize> {
        self.0.read(buf, timeout).ok()
    }
}

/// A TCP connection as the emulator's link: hosts that reach a coordinator over the network (a
/// serial-to-TCP bridge, `tcp://HOST:PORT` in zigbee-herdsman) connect here.
#[derive(Debug)]
pub struct TcpLink(std::net::TcpStream);

impl TcpLink {
    /// The link over an accepted connection (no Nagle delay: MT frames are small and answered at once).
    pub fn new(stream: std::net::TcpStream) -> std::io::Result<Self> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_millis(1)))?;
        Ok(TcpLink(stream))
    }
}

impl Link for TcpLink {
    fn send(&mut self, bytes: &[u8]) -> bool {
        use std::io::Write;
        self.0.write_all(bytes).is_ok()
    }
    fn recv(&mut self, buf: &mut [u8], _timeout: Duration) -> Option<usize> {
        use std::io::{ErrorKind, Read};
        match self.0.read(buf) {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Some(0),
            Err(e) if e.kind() == ErrorKind::Interrupted => Some(0),
            Err(_) => None,
        }
    }
}

/// An emulator running on its own thread. Reach into it with [`EmulatorThread::with`]; what it sends
/// as a result goes out on the next turn of its loop (within a millisecond or two).
#[derive(Debug)]
pub struct EmulatorThread {
    emulator: Arc<Mutex<ZnpEmulator>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EmulatorThread {
    /// Runs `emulator` on `link`.
    pub fn spawn(emulator: ZnpEmulator, mut link: impl Link) -> Self {
        let emulator = Arc::new(Mutex::new(emulator));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (Arc::clone(&emulator), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1024];
            let epoch = std::time::Instant::now();
            while !stopping.load(Ordering::Relaxed) {
                let Some(n) = link.recv(&mut buf, Duration::from_millis(1)) else {
                    return;
                };
                let out = {
                    let mut emu = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(bytes) = buf.get(..n) {
                        emu.on_bytes(bytes);
                    }
                    emu.tick(epoch.elapsed());
                    emu.take_output()
                };
                if !out.is_empty() && !link.send(&out) {
                    return;
                }
            }
        });
        EmulatorThread {
            emulator,
            stop,
            thread: Some(thread),
        }
    }

    /// Runs `f` on the emulator (join a meter, reset, send garbage, inspect).
    pub fn with<R>(&self, f: impl FnOnce(&mut ZnpEmulator) -> R) -> R {
        f(&mut self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, ZnpEmulator> {
        self.emulator.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the thread and hands the emulator back, network and meters as they are (to run it on
    /// another link).
    pub fn into_inner(mut self) -> ZnpEmulator {
        self.halt();
        std::mem::replace(&mut *self.lock(), ZnpEmulator::new(false))
    }

    /// Stops the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EmulatorThread {
    fn drop(&mut self) {
        self.halt();
    }
}
