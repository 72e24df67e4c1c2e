//! A full-duplex serial byte stream, for Zigbee coordinators and cellular modems.

use std::time::Duration;

use crate::HalError;

/// A full-duplex byte stream. Unlike an RS485 bus there is no request/reply discipline: the driver on
/// top reads whatever arrives (asynchronous indications, unsolicited result codes).
pub trait SerialStream: Send {
    /// The stream's name (from the config) for logs and errors.
    fn name(&self) -> &str;

    /// Writes all of `data` and waits until it has left the port.
    fn write_all(&mut self, data: &[u8]) -> Result<(), HalError>;

    /// Reads what is available into `buf`, waiting up to `timeout` for the first byte; returns 0 when
    /// nothing arrived in time.
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, HalError>;
}
