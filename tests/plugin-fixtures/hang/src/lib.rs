//! Plugin-host test fixture: a meter driver that never returns from `begin`. The isolated mode's
//! watchdog kills its child at the call deadline.

use concentrator_plugin_sdk::{MeterDriver, Now, Outcome, Rejection, Reply, Request, Task};

/// A driver stuck in a loop.
#[derive(Debug)]
pub struct Hang;

impl MeterDriver for Hang {
    fn open(_address: &[u8], _config: &str) -> Result<Self, Rejection> {
        Ok(Hang)
    }

    fn begin(&mut self, _task: &Task, _now: Now) -> Result<Request, Rejection> {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn is_complete(&mut self, _reply: &[u8]) -> bool {
        true
    }

    fn finish(&mut self, _reply: Reply<'_>, _now: Now) -> Outcome {
        Outcome::Done(Vec::new())
    }
}

concentrator_plugin_sdk::declare_meter_driver!(Hang, name = "hang", version = "0.1.0");
concentrator_plugin_sdk::export_plugin!();
