//! Plugin-host test fixture: a meter driver that keeps 8 MiB more on every `begin` and never frees it.
//! In the isolated mode its child reaches its `RLIMIT_AS`, an allocation fails and it aborts.

use std::sync::Mutex;

use concentrator_plugin_sdk::{MeterDriver, Now, Outcome, Rejection, Reply, Request, Task};

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A driver with a cache that only grows.
#[derive(Debug)]
pub struct Leak;

impl MeterDriver for Leak {
    fn open(_address: &[u8], _config: &str) -> Result<Self, Rejection> {
        Ok(Leak)
    }

    fn begin(&mut self, _task: &Task, _now: Now) -> Result<Request, Rejection> {
        let block = vec![0x5au8; 8 << 20];
        KEPT.lock().unwrap_or_else(|p| p.into_inner()).push(block);
        Ok(Request::new(vec![0x01]))
    }

    fn is_complete(&mut self, _reply: &[u8]) -> bool {
        true
    }

    fn finish(&mut self, _reply: Reply<'_>, _now: Now) -> Outcome {
        Outcome::Done(Vec::new())
    }
}

concentrator_plugin_sdk::declare_meter_driver!(Leak, name = "leak", version = "0.1.0");
concentrator_plugin_sdk::export_plugin!();
