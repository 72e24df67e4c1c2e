//! Plugin-host test fixture: a meter driver that works but writes 5000 log records on every `begin`.
//! The isolated mode's host drops what is over the child's log rate and reports the flood.

use concentrator_plugin_sdk::{MeterDriver, Now, Outcome, Rejection, Reply, Request, Task};

/// A chatty driver.
#[derive(Debug)]
pub struct FloodLog;

impl MeterDriver for FloodLog {
    fn open(_address: &[u8], _config: &str) -> Result<Self, Rejection> {
        Ok(FloodLog)
    }

    fn begin(&mut self, task: &Task, _now: Now) -> Result<Request, Rejection> {
        for i in 0..5000 {
            log::info!("begin {task}: detail {i} of 5000");
        }
        Ok(Request::new(vec![0x01]))
    }

    fn is_complete(&mut self, _reply: &[u8]) -> bool {
        true
    }

    fn finish(&mut self, _reply: Reply<'_>, _now: Now) -> Outcome {
        Outcome::Done(Vec::new())
    }
}

concentrator_plugin_sdk::declare_meter_driver!(FloodLog, name = "flood-log", version = "0.1.0");
concentrator_plugin_sdk::export_plugin!();
