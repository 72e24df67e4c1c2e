//! Plugin-host test fixture: a meter driver that aborts the process in `begin` (what a C library's
//! `assert` does). In the isolated mode only its child dies (SIGABRT).

use concentrator_plugin_sdk::{MeterDriver, Now, Outcome, Rejection, Reply, Request, Task};

/// A driver that gives up hard.
#[derive(Debug)]
pub struct CrashAbort;

impl MeterDriver for CrashAbort {
    fn open(_address: &[u8], _config: &str) -> Result<Self, Rejection> {
        Ok(CrashAbort)
    }

    fn begin(&mut self, _task: &Task, _now: Now) -> Result<Request, Rejection> {
        eprintln!("crash-abort: an invariant does not hold, aborting");
        std::process::abort();
    }

    fn is_complete(&mut self, _reply: &[u8]) -> bool {
        true
    }

    fn finish(&mut self, _reply: Reply<'_>, _now: Now) -> Outcome {
        Outcome::Done(Vec::new())
    }
}

concentrator_plugin_sdk::declare_meter_driver!(CrashAbort, name = "crash-abort", version = "0.1.0");
concentrator_plugin_sdk::export_plugin!();
