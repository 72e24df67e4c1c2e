//! The `znp` stream driver plugin: the SDK's [`StreamDriver`] over [`ZnpDriver`]. Commands arrive as
//! JSON ([`CommandRequest`]) and notices leave as JSON ([`Notice`]) through plugin API 1.1's
//! `command` and `poll_notice`.

use concentrator_plugin_sdk::{Now, Rejection, StreamDriver, StreamEvent};

use crate::driver::{CommandRejected, CommandRequest, ZnpConfig, ZnpDriver};

/// The plugin's per-stream state.
#[derive(Debug)]
pub struct ZnpPlugin {
    driver: ZnpDriver,
}

impl ZnpPlugin {
    /// The driver inside.
    pub fn driver(&self) -> &ZnpDriver {
        &self.driver
    }
}

impl StreamDriver for ZnpPlugin {
    fn open(config: &str, now: Now) -> Result<Self, Rejection> {
        let config = ZnpConfig::parse(config)?;
        Ok(ZnpPlugin {
            driver: ZnpDriver::new(config, now.monotonic, now.unix_millis),
        })
    }

    fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), Rejection> {
        self.driver.on_bytes(bytes);
        Ok(())
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.driver.poll_transmit()
    }

    fn on_tick(&mut self, now: Now) -> Result<(), Rejection> {
        self.driver.on_tick(now.monotonic, now.unix_millis);
        Ok(())
    }

    fn poll_event(&mut self) -> Option<StreamEvent> {
        self.driver.poll_event()
    }

    fn on_command(&mut self, command: &str, now: Now) -> Result<(), Rejection> {
        self.driver.on_tick(now.monotonic, now.unix_millis);
        let request: CommandRequest =
            serde_json::from_str(command).map_err(|e| CommandRejected::Parse(e.to_string()))?;
        self.driver.command(request)?;
        Ok(())
    }

    fn poll_notice(&mut self) -> Option<String> {
        self.driver.poll_notice().map(|n| n.to_json())
    }
}

concentrator_plugin_sdk::declare_stream_driver!(
    ZnpPlugin,
    kind = coordinator,
    name = "znp",
    version = env!("CARGO_PKG_VERSION")
);
