//! Virtual devices on a simulated bus.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::LineSettings;

/// A reply from a simulated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReply {
    /// The bytes the device sends.
    pub bytes: Vec<u8>,
    /// From the end of the request to the device's first byte.
    pub latency: Duration,
}

/// A device on a simulated bus. It sees every frame on the line (as a real transceiver does) and
/// decides whether to answer.
pub trait SimDevice: Send + fmt::Debug {
    /// A name for logs and statistics.
    fn name(&self) -> String;

    /// The line settings the device's UART uses. A device hears only garbage, and so stays silent, when
    /// the bus runs at other settings (this is how a baud-rate scan finds it).
    fn line_settings(&self) -> Option<LineSettings> {
        None
    }

    /// A frame arrived; `wall` is the simulated wall time at its end. Returns the reply, if any.
    fn on_frame(&mut self, frame: &[u8], wall: SystemTime) -> Option<SimReply>;
}

/// A protocol-free device that answers fixed requests with fixed replies. For HAL tests and examples.
#[derive(Debug, Clone)]
pub struct ScriptedDevice {
    name: String,
    settings: Option<LineSettings>,
    script: Vec<(Vec<u8>, Vec<u8>, Duration)>,
    heard: Vec<Vec<u8>>,
}

impl ScriptedDevice {
    /// A device that answers nothing until taught.
    pub fn new(name: impl Into<String>) -> Self {
        ScriptedDevice {
            name: name.into(),
            settings: None,
            script: Vec::new(),
            heard: Vec::new(),
        }
    }

    /// Answers frames that end with `request` (so a wake-up preamble before it does not matter) with
    /// `reply` after `latency`.
    pub fn answer(mut self, request: &[u8], reply: &[u8], latency: Duration) -> Self {
        self.script
            .push((request.to_vec(), reply.to_vec(), latency));
        self
    }

    /// Listens only at these line settings.
    pub fn at(mut self, settings: LineSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Every frame the device has heard.
    pub fn heard(&self) -> &[Vec<u8>] {
        &self.heard
    }
}

impl SimDevice for ScriptedDevice {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn line_settings(&self) -> Option<LineSettings> {
        self.settings
    }

    fn on_frame(&mut self, frame: &[u8], _wall: SystemTime) -> Option<SimReply> {
        self.heard.push(frame.to_vec());
        self.script
            .iter()
            .find(|(request, _, _)| frame.ends_with(request))
            .map(|(_, reply, latency)| SimReply {
                bytes: reply.clone(),
                latency: *latency,
            })
    }
}
