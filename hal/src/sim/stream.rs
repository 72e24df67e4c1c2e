//! An in-memory full-duplex serial stream, for coordinator and modem emulators.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::{ErrorKind, HalError, SerialStream};

/// The host's end of a simulated serial stream.
#[derive(Debug)]
pub struct SimStream {
    name: String,
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

/// The emulator's end of a simulated serial stream: what the host writes arrives here, and what the
/// emulator sends arrives at the host.
#[derive(Debug)]
pub struct SimStreamPeer {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

impl SimStream {
    /// A connected pair: the host's stream and the emulator's peer.
    pub fn pair(name: impl Into<String>) -> (SimStream, SimStreamPeer) {
        let (host_tx, peer_rx) = channel();
        let (peer_tx, host_rx) = channel();
        (
            SimStream {
                name: name.into(),
                tx: host_tx,
                rx: host_rx,
                pending: Vec::new(),
            },
            SimStreamPeer {
                tx: peer_tx,
                rx: peer_rx,
                pending: Vec::new(),
            },
        )
    }
}

fn read_from(
    rx: &Receiver<Vec<u8>>,
    pending: &mut Vec<u8>,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<usize, RecvTimeoutError> {
    if pending.is_empty() {
        match rx.recv_timeout(timeout) {
            Ok(chunk) => pending.extend(chunk),
            Err(RecvTimeoutError::Timeout) => return Ok(0),
            Err(e) => return Err(e),
        }
    }
    while let Ok(chunk) = rx.try_recv() {
        pending.extend(chunk);
    }
    let n = pending.len().min(buf.len());
    buf[..n].copy_from_slice(&pending[..n]);
    pending.drain(..n);
    Ok(n)
}

impl SerialStream for SimStream {
    fn name(&self) -> &str {
        &self.name
    }

    fn write_all(&mut self, data: &[u8]) -> Result<(), HalError> {
        self.tx.send(data.to_vec()).map_err(|_| {
            HalError::new(
                ErrorKind::Disconnected,
                &self.name,
                "the simulated device has gone away",
            )
        })
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, HalError> {
        read_from(&self.rx, &mut self.pending, buf, timeout).map_err(|_| {
            HalError::new(
                ErrorKind::Disconnected,
                &self.name,
                "the simulated device has gone away",
            )
        })
    }
}

impl SimStreamPeer {
    /// Sends bytes to the host. Returns false when the host's end is gone.
    pub fn send(&self, data: &[u8]) -> bool {
        self.tx.send(data.to_vec()).is_ok()
    }

    /// Receives what the host wrote, waiting up to `timeout`; `None` when the host's end is gone.
    pub fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Option<usize> {
        read_from(&self.rx, &mut self.pending, buf, timeout).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_and_disconnect() {
        let (mut host, mut peer) = SimStream::pair("zigbee");
        host.write_all(&[0xFE, 0x00]).unwrap();
        host.write_all(&[0x21, 0x01]).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(peer.recv(&mut buf, Duration::from_millis(10)), Some(4));
        assert_eq!(&buf[..4], &[0xFE, 0x00, 0x21, 0x01]);
        assert!(peer.send(b"OK\r\n"));
        assert_eq!(
            host.read(&mut buf[..2], Duration::from_millis(10)).unwrap(),
            2
        );
        assert_eq!(host.read(&mut buf, Duration::from_millis(10)).unwrap(), 2);
        assert_eq!(host.read(&mut buf, Duration::from_millis(1)).unwrap(), 0);
        drop(peer);
        assert_eq!(
            host.read(&mut buf, Duration::from_millis(1))
                .unwrap_err()
                .kind(),
            ErrorKind::Disconnected
        );
    }
}
