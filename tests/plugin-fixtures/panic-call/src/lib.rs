//! Plugin-host test fixture: a meter driver that loads fine and panics inside `begin` on every read.
//! The host must contain each panic and quarantine the plugin after its fault limit.

use concentrator_plugin_sdk::{MeterDriver, Now, Outcome, Rejection, Reply, Request, Task};

/// A driver with a bug.
#[derive(Debug)]
pub struct PanicCall {
    address: Vec<u8>,
}

impl MeterDriver for PanicCall {
    fn open(address: &[u8], _config: &str) -> Result<Self, Rejection> {
        Ok(PanicCall {
            address: address.to_vec(),
        })
    }

    fn begin(&mut self, task: &Task, _now: Now) -> Result<Request, Rejection> {
        log::warn!("about to fail on {task} for meter {:02x?}", self.address);
        let registers: Vec<u16> = Vec::new();
        let index = self.address.len() + 10;
        panic!(
            "register map has {} entries, index {index} is out of range",
            registers.len()
        );
    }

    fn is_complete(&mut self, _reply: &[u8]) -> bool {
        true
    }

    fn finish(&mut self, _reply: Reply<'_>, _now: Now) -> Outcome {
        Outcome::Done(Vec::new())
    }
}

concentrator_plugin_sdk::declare_meter_driver!(PanicCall, name = "panic-call", version = "0.1.0");
concentrator_plugin_sdk::export_plugin!();
