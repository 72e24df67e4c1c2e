//! Plugin-host test fixture: a meter driver that tries what an isolated plugin may not do (open a file,
//! open a TCP connection, start a process) and refuses the task with what each attempt gave, so a test
//! can see the sandbox refuse them.

use concentrator_plugin_sdk::{MeterDriver, Now, Outcome, Rejection, Reply, Request, Task};

/// A nosy driver.
#[derive(Debug)]
pub struct SandboxProbe;

fn outcome<T>(result: std::io::Result<T>) -> String {
    match result {
        Ok(_) => String::from("allowed"),
        Err(e) => e.to_string(),
    }
}

impl MeterDriver for SandboxProbe {
    fn open(_address: &[u8], _config: &str) -> Result<Self, Rejection> {
        Ok(SandboxProbe)
    }

    fn begin(&mut self, _task: &Task, _now: Now) -> Result<Request, Rejection> {
        let file = outcome(std::fs::File::open("/etc/hostname"));
        let tcp = outcome(std::net::TcpStream::connect("127.0.0.1:9"));
        let exec = outcome(std::process::Command::new("/bin/true").status());
        Err(format!("file: {file}; tcp: {tcp}; exec: {exec}").into())
    }

    fn is_complete(&mut self, _reply: &[u8]) -> bool {
        true
    }

    fn finish(&mut self, _reply: Reply<'_>, _now: Now) -> Outcome {
        Outcome::Done(Vec::new())
    }
}

concentrator_plugin_sdk::declare_meter_driver!(
    SandboxProbe,
    name = "sandbox-probe",
    version = "0.1.0"
);
concentrator_plugin_sdk::export_plugin!();
