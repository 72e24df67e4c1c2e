//! The modem supervisor against the simulated modem: in-process and on a pseudo-terminal, healthy and
//! with each fault, through each stage of recovery.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use concentrator_hal::linux::SerialStreamPort;
use concentrator_hal::pty::PtyPair;
use concentrator_hal::sim::{SimPin, SimStream};
use concentrator_hal::{SerialStream, SystemClock};
use concentrator_uplink::modem::parse::{Registration, SimState};
use concentrator_uplink::modem::sim::{Cure, ModemFault, SimModem};
use concentrator_uplink::modem::{
    AtPort, DataLink, ModemConfig, NoDataLink, Stage, Supervisor, SupervisorEvent,
};

fn config() -> ModemConfig {
    ModemConfig {
        pin: None,
        apn: "meters.example".into(),
        command_timeout: Duration::from_millis(100),
        register_timeout: Duration::from_millis(150),
        boot_time: Duration::from_millis(10),
        power_pulse: Duration::from_millis(5),
        failures_per_stage: 1,
        weak_signal_dbm: -105,
    }
}

struct Rig {
    sup: Supervisor<SimStream>,
    modem: SimModem,
    key: SimPin,
}

fn rig(cfg: ModemConfig, link: Box<dyn DataLink>) -> Rig {
    let (stream, peer) = SimStream::pair("modem");
    let modem = SimModem::new();
    let key = SimPin::new("modem-power");
    modem.attach_power_key(key.clone());
    modem.serve(peer);
    let port = AtPort::new(stream, Arc::new(SystemClock::new()));
    let sup = Supervisor::new(port, link, Some(Box::new(key.clone())), cfg);
    Rig { sup, modem, key }
}

fn stages(events: &[SupervisorEvent]) -> Vec<Stage> {
    events
        .iter()
        .filter_map(|e| match e {
            SupervisorEvent::Recovery { stage, .. } => Some(*stage),
            SupervisorEvent::NeedsAttention { .. } => Some(Stage::NeedsAttention),
            _ => None,
        })
        .collect()
}

#[test]
fn healthy_modem_reports_everything() {
    let mut r = rig(config(), Box::new(NoDataLink));
    assert_eq!(r.sup.check().unwrap(), vec![]);
    let s = r.sup.status();
    assert_eq!(s.stage, Stage::Healthy);
    assert_eq!(s.sim, Some(SimState::Ready));
    assert_eq!(s.registration, Some(Registration::Home));
    assert_eq!(s.rssi_dbm, Some(-79));
    assert_eq!(s.operator.as_deref(), Some("Example Net"));
    assert_eq!(s.technology, Some("UTRAN"));
    assert_eq!(s.iccid.as_deref(), Some("89490200001234567890"));
    assert_eq!(s.imsi.as_deref(), Some("001010123456789"));
    assert!(s.link_up);
    assert_eq!(r.modem.apn().as_deref(), Some("meters.example"));
    // Initialisation happens once.
    r.sup.check().unwrap();
    let cmds = r.modem.stats().commands;
    assert_eq!(
        cmds.iter().filter(|c| c.starts_with("AT+CGDCONT")).count(),
        1
    );
}

#[test]
fn pin_is_entered_once_and_a_wrong_pin_is_never_retried() {
    let mut cfg = config();
    cfg.pin = Some("1234".into());
    let mut r = rig(cfg.clone(), Box::new(NoDataLink));
    r.modem
        .set_fault(ModemFault::PinRequired("1234".into()), Cure::Never);
    assert_eq!(r.sup.check().unwrap(), vec![]);
    assert_eq!(r.sup.status().stage, Stage::Healthy);

    let mut r = rig(cfg, Box::new(NoDataLink));
    r.modem
        .set_fault(ModemFault::PinRequired("9999".into()), Cure::Never);
    let ev = r.sup.check().unwrap();
    assert_eq!(stages(&ev), vec![Stage::NeedsAttention]);
    assert!(r.sup.check().unwrap().is_empty(), "reported once");
    let tries = r
        .modem
        .stats()
        .commands
        .iter()
        .filter(|c| c.starts_with("AT+CPIN="))
        .count();
    assert_eq!(tries, 1);
}

#[test]
fn missing_pin_config_needs_attention_at_once() {
    let mut r = rig(config(), Box::new(NoDataLink));
    r.modem
        .set_fault(ModemFault::PinRequired("1234".into()), Cure::Never);
    let ev = r.sup.check().unwrap();
    assert!(
        matches!(&ev[..], [SupervisorEvent::NeedsAttention { problem }] if problem.contains("modem.pin"))
    );
}

#[test]
fn not_registered_recovers_by_reregistering() {
    let mut r = rig(config(), Box::new(NoDataLink));
    r.modem
        .set_fault(ModemFault::NotRegistered, Cure::Reregister);
    assert_eq!(stages(&r.sup.check().unwrap()), vec![Stage::Reconnect]);
    assert_eq!(r.sup.check().unwrap(), vec![SupervisorEvent::Recovered]);
    assert_eq!(r.sup.status().recoveries, 1);
}

#[test]
fn silent_modem_recovers_by_reset() {
    let mut r = rig(config(), Box::new(NoDataLink));
    r.sup.check().unwrap();
    r.modem.set_fault(ModemFault::Silent, Cure::Reset);
    assert_eq!(stages(&r.sup.check().unwrap()), vec![Stage::Reconnect]);
    assert_eq!(stages(&r.sup.check().unwrap()), vec![Stage::Reset]);
    assert_eq!(r.modem.stats().resets, 1);
    assert_eq!(r.sup.check().unwrap(), vec![SupervisorEvent::Recovered]);
    // Re-initialised after the reset: echo off and the APN set again.
    let cmds = r.modem.stats().commands;
    assert_eq!(
        cmds.iter().filter(|c| c.starts_with("AT+CGDCONT")).count(),
        2
    );
}

#[test]
fn garbage_then_hung_modem_needs_the_power_key() {
    let mut r = rig(config(), Box::new(NoDataLink));
    r.modem.set_fault(ModemFault::Garbage, Cure::PowerCycle);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(stages(&r.sup.check().unwrap()));
    }
    assert_eq!(
        seen,
        vec![Stage::Reconnect, Stage::Reset, Stage::PowerCycle]
    );
    assert_eq!(r.key.edges(), 2, "one pulse");
    assert!(!r.key.level(), "the key is released");
    assert_eq!(r.sup.check().unwrap(), vec![SupervisorEvent::Recovered]);
    assert_eq!(r.modem.stats().power_cycles, 1);
}

#[test]
fn dead_modem_ends_in_needs_attention_once_and_recovers_later() {
    let mut r = rig(config(), Box::new(NoDataLink));
    r.modem.set_fault(ModemFault::Silent, Cure::Never);
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.extend(stages(&r.sup.check().unwrap()));
    }
    assert_eq!(
        seen,
        vec![
            Stage::Reconnect,
            Stage::Reset,
            Stage::PowerCycle,
            Stage::NeedsAttention
        ]
    );
    assert_eq!(r.sup.status().stage, Stage::NeedsAttention);
    assert!(r
        .sup
        .status()
        .last_problem
        .as_deref()
        .unwrap()
        .contains("does not answer"));
    r.modem.clear_fault();
    assert_eq!(r.sup.check().unwrap(), vec![SupervisorEvent::Recovered]);
    assert_eq!(r.sup.status().stage, Stage::Healthy);
}

#[test]
fn no_sim_and_denied_registration_escalate() {
    let mut r = rig(config(), Box::new(NoDataLink));
    r.modem.set_fault(ModemFault::NoSim, Cure::Reset);
    let ev = r.sup.check().unwrap();
    assert!(
        matches!(&ev[..], [SupervisorEvent::Recovery { stage: Stage::Reconnect, problem }] if problem.contains("SIM not inserted"))
    );
    assert_eq!(stages(&r.sup.check().unwrap()), vec![Stage::Reset]);
    assert_eq!(r.sup.check().unwrap(), vec![SupervisorEvent::Recovered]);

    let mut r = rig(config(), Box::new(NoDataLink));
    r.modem.set_fault(ModemFault::Denied, Cure::Never);
    let ev = r.sup.check().unwrap();
    assert!(
        matches!(&ev[..], [SupervisorEvent::Recovery { problem, .. }] if problem.contains("denies"))
    );
}

#[test]
fn weak_signal_is_reported_not_recovered() {
    let mut r = rig(config(), Box::new(NoDataLink));
    r.modem.set_fault(ModemFault::WeakSignal, Cure::Never);
    assert_eq!(
        r.sup.check().unwrap(),
        vec![SupervisorEvent::WeakSignal { dbm: -109 }]
    );
    assert_eq!(r.sup.status().stage, Stage::Healthy);
}

#[derive(Debug, Clone, Default)]
struct FakeLink(Arc<Mutex<(bool, u32, u32)>>); // (up, restarts, stops)

impl DataLink for FakeLink {
    fn is_up(&mut self) -> bool {
        self.0.lock().unwrap().0
    }
    fn restart(&mut self) -> Result<(), String> {
        let mut s = self.0.lock().unwrap();
        s.0 = true;
        s.1 += 1;
        Ok(())
    }
    fn stop(&mut self) {
        let mut s = self.0.lock().unwrap();
        s.0 = false;
        s.2 += 1;
    }
}

#[test]
fn link_is_started_once_and_restarted_when_down() {
    let link = FakeLink::default();
    let mut r = rig(config(), Box::new(link.clone()));
    // The first healthy check starts the link: not a recovery.
    assert_eq!(r.sup.check().unwrap(), vec![]);
    assert_eq!(link.0.lock().unwrap().1, 1);
    assert!(r.sup.status().link_up);
    assert_eq!(r.sup.status().recoveries, 0);
    link.0.lock().unwrap().0 = false; // the link drops
    assert_eq!(stages(&r.sup.check().unwrap()), vec![Stage::Reconnect]);
    assert_eq!(link.0.lock().unwrap().1, 2);
    assert_eq!(r.sup.check().unwrap(), vec![SupervisorEvent::Recovered]);
    assert!(r.sup.status().link_up);
}

/// A link that dials for `dials` checks before it is up, and reports why it is down.
#[derive(Debug, Clone, Default)]
struct SlowLink(Arc<Mutex<(u32, u32, u32)>>); // (checks left while dialling, restarts, stops)

impl DataLink for SlowLink {
    fn is_up(&mut self) -> bool {
        let mut s = self.0.lock().unwrap();
        if s.0 > 0 {
            s.0 -= 1;
            return false;
        }
        s.1 > 0
    }
    fn connecting(&mut self) -> bool {
        true
    }
    fn restart(&mut self) -> Result<(), String> {
        let mut s = self.0.lock().unwrap();
        s.0 = 2;
        s.1 += 1;
        Ok(())
    }
    fn stop(&mut self) {
        self.0.lock().unwrap().2 += 1;
    }
}

#[test]
fn a_dialling_link_is_given_time_and_restarted_after_a_power_cycle() {
    let link = SlowLink::default();
    let mut r = rig(config(), Box::new(link.clone()));
    for _ in 0..2 {
        assert_eq!(
            r.sup.check().unwrap(),
            vec![],
            "dialling: neither pass nor fail"
        );
        assert_eq!(r.sup.status().stage, Stage::Healthy);
        assert!(!r.sup.status().link_up);
    }
    assert_eq!(r.sup.check().unwrap(), vec![]);
    assert!(r.sup.status().link_up);
    assert_eq!(link.0.lock().unwrap().1, 1, "started once");
    // The modem crashes: reconnect, reset, power cycle; each reset stops the link.
    r.modem.set_fault(ModemFault::Silent, Cure::PowerCycle);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(stages(&r.sup.check().unwrap()));
    }
    assert_eq!(
        seen,
        vec![Stage::Reconnect, Stage::Reset, Stage::PowerCycle]
    );
    assert!(
        link.0.lock().unwrap().2 >= 2,
        "stopped before reset and power cycle"
    );
    let restarts = link.0.lock().unwrap().1;
    // The modem is back: the link is started again without another stage, dials, and is up.
    let mut events = Vec::new();
    for _ in 0..3 {
        events.extend(r.sup.check().unwrap());
    }
    assert_eq!(events, vec![SupervisorEvent::Recovered]);
    assert_eq!(link.0.lock().unwrap().1, restarts + 1);
    assert!(r.sup.status().link_up);
}

#[test]
fn the_ladder_starts_again_after_needs_attention() {
    let mut r = rig(config(), Box::new(NoDataLink));
    r.modem.set_fault(ModemFault::Silent, Cure::Never);
    let mut seen = Vec::new();
    let mut attention = 0;
    for _ in 0..9 {
        for e in r.sup.check().unwrap() {
            match e {
                SupervisorEvent::Recovery { stage, .. } => seen.push(stage),
                SupervisorEvent::NeedsAttention { .. } => attention += 1,
                _ => {}
            }
        }
    }
    assert_eq!(attention, 1, "reported once");
    assert_eq!(
        seen,
        vec![
            Stage::Reconnect,
            Stage::Reset,
            Stage::PowerCycle,
            Stage::Reconnect,
            Stage::Reset
        ]
    );
    assert_eq!(
        r.sup.status().stage,
        Stage::NeedsAttention,
        "until a check passes"
    );
}

#[test]
fn over_a_pseudo_terminal() {
    let pty = PtyPair::open().unwrap();
    let modem = SimModem::new();
    modem.serve_path(pty.slave_path()).unwrap();
    let stream = SerialStreamPort::attach_pty("modem", &pty).unwrap();
    assert_eq!(stream.name(), "modem");
    let key = SimPin::new("key");
    modem.attach_power_key(key.clone());
    let port = AtPort::new(stream, Arc::new(SystemClock::new()));
    let mut sup = Supervisor::new(port, Box::new(NoDataLink), Some(Box::new(key)), config());
    assert_eq!(sup.check().unwrap(), vec![]);
    assert_eq!(sup.status().rssi_dbm, Some(-79));
    modem.set_fault(ModemFault::Silent, Cure::PowerCycle);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(stages(&sup.check().unwrap()));
    }
    assert_eq!(
        seen,
        vec![Stage::Reconnect, Stage::Reset, Stage::PowerCycle]
    );
    assert_eq!(sup.check().unwrap(), vec![SupervisorEvent::Recovered]);
}
