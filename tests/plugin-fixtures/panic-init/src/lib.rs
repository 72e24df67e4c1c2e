//! Plugin-host test fixture: a meter driver whose `init` panics. The host must refuse it with the panic
//! message.

use concentrator_plugin_sdk::{MeterDriver, Now, Outcome, Rejection, Reply, Request, Task};

/// A driver that cannot start.
#[derive(Debug)]
pub struct PanicInit;

impl MeterDriver for PanicInit {
    fn init() -> Result<(), Rejection> {
        panic!("licence file /etc/vendor/licence.key is missing");
    }

    fn open(_address: &[u8], _config: &str) -> Result<Self, Rejection> {
        Ok(PanicInit)
    }

    fn begin(&mut self, _task: &Task, _now: Now) -> Result<Request, Rejection> {
        Ok(Request::new(vec![0x01]))
    }

    fn is_complete(&mut self, _reply: &[u8]) -> bool {
        true
    }

    fn finish(&mut self, _reply: Reply<'_>, _now: Now) -> Outcome {
        Outcome::Done(Vec::new())
    }
}

concentrator_plugin_sdk::declare_meter_driver!(PanicInit, name = "panic-init", version = "0.1.0");
concentrator_plugin_sdk::export_plugin!();
