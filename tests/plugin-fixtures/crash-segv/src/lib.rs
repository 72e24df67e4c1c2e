//! Plugin-host test fixture: a meter driver that dereferences a null pointer in `begin`. In-process it
//! would take the daemon down; in the isolated mode only its child dies (SIGSEGV).

use concentrator_plugin_sdk::{MeterDriver, Now, Outcome, Rejection, Reply, Request, Task};

/// A driver with a wild pointer.
#[derive(Debug)]
pub struct CrashSegv;

impl MeterDriver for CrashSegv {
    fn open(_address: &[u8], _config: &str) -> Result<Self, Rejection> {
        Ok(CrashSegv)
    }

    fn begin(&mut self, _task: &Task, _now: Now) -> Result<Request, Rejection> {
        let wild = std::hint::black_box(std::ptr::null_mut::<u8>());
        // SAFETY: none: this fixture crashes on purpose.
        unsafe { wild.write_volatile(1) };
        Ok(Request::new(vec![0x01]))
    }

    fn is_complete(&mut self, _reply: &[u8]) -> bool {
        true
    }

    fn finish(&mut self, _reply: Reply<'_>, _now: Now) -> Outcome {
        Outcome::Done(Vec::new())
    }
}

concentrator_plugin_sdk::declare_meter_driver!(CrashSegv, name = "crash-segv", version = "0.1.0");
concentrator_plugin_sdk::export_plugin!();
