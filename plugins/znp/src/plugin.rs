//! The `znp` stream driver plugin: the SDK's [`StreamDriver`] over [`ZnpDriver`]. Commands arrive as
//! the coordinator API's JSON (or one of the driver's own `op`s, [`crate::driver::CommandRequest`]) and
//! notices leave as coordinator events, through `command` and `poll_notice` (plugin API 1.2), translated
//! by [`Translator`].

use concentrator_plugin_sdk::{Now, Rejection, StreamDriver, StreamEvent};

use crate::coordinator::Translator;
use crate::driver::{CommandRejected, ZnpConfig, ZnpDriver};

/// The plugin's per-stream state.
#[derive(Debug)]
pub struct ZnpPlugin {
    driver: ZnpDriver,
    translator: Translator,
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
            translator: Translator::default(),
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
        let request = self
            .translator
            .command(command)
            .map_err(CommandRejected::Parse)?;
        let id = request.id;
        if let Err(e) = self.driver.command(request) {
            self.translator.forget(id);
            return Err(e.into());
        }
        Ok(())
    }

    fn poll_notice(&mut self) -> Option<String> {
        while let Some(notice) = self.driver.poll_notice() {
            self.translator.notice(notice);
        }
        self.translator.next_event().map(|event| event.to_json())
    }
}

concentrator_plugin_sdk::declare_stream_driver!(
    ZnpPlugin,
    kind = coordinator,
    name = "znp",
    version = env!("CARGO_PKG_VERSION")
);
