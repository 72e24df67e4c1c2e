//! Shared pieces of the plugin host's test fixtures: a meter driver that does nothing, for fixtures whose
//! point is a bad declaration. Used only by `tests/plugin-fixtures/*`.

use concentrator_plugin_sdk::{MeterDriver, Now, Outcome, Rejection, Reply, Request, Task};

/// A meter that sends one byte and is done with any reply.
#[derive(Debug)]
pub struct QuietMeter;

impl MeterDriver for QuietMeter {
    fn open(_address: &[u8], _config: &str) -> Result<Self, Rejection> {
        Ok(QuietMeter)
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
