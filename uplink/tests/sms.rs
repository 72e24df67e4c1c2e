//! SMS through the modem supervisor, at the AT level, against the simulated modem: sending in text mode
//! (`AT+CMGF=1`, `AT+CMGS`, the `> ` prompt, Ctrl-Z), receiving (`+CMTI`, `AT+CMGR`, `AT+CMGD`), in-process
//! and on a pseudo-terminal, and refusals while not registered.

use std::sync::Arc;
use std::time::Duration;

use concentrator_hal::linux::SerialStreamPort;
use concentrator_hal::pty::PtyPair;
use concentrator_hal::sim::SimStream;
use concentrator_hal::{SerialStream, SystemClock};
use concentrator_uplink::modem::at::AtFailure;
use concentrator_uplink::modem::parse::TextMessage;
use concentrator_uplink::modem::sim::{Cure, ModemFault, SentSms, SimModem};
use concentrator_uplink::modem::{AtPort, ModemConfig, NoDataLink, Supervisor};

fn config() -> ModemConfig {
    ModemConfig {
        command_timeout: Duration::from_millis(300),
        register_timeout: Duration::from_millis(300),
        boot_time: Duration::from_millis(10),
        failures_per_stage: 1,
        ..ModemConfig::default()
    }
}

fn exchange<S: SerialStream>(sup: &mut Supervisor<S>, modem: &SimModem) {
    assert_eq!(sup.check().unwrap(), vec![]);
    assert!(sup.registered());
    let reference = sup
        .send_sms("+4930123456", "CG1 gw-1 ABCDEFGH234567")
        .unwrap()
        .unwrap();
    assert_eq!(reference, 1);
    assert_eq!(
        modem.sent_sms(),
        vec![SentSms {
            to: "+4930123456".into(),
            text: "CG1 gw-1 ABCDEFGH234567".into()
        }]
    );
    // Nothing arrived: nothing read.
    assert_eq!(sup.receive_sms(Duration::from_millis(60)).unwrap(), vec![]);
    modem.deliver_sms("+491511234567", "BAL A-101 4711");
    modem.deliver_sms("+491517654321", "+49 starts like a URC");
    let got = sup.receive_sms(Duration::from_millis(100)).unwrap();
    assert_eq!(
        got,
        vec![
            TextMessage {
                from: "+491511234567".into(),
                text: "BAL A-101 4711".into()
            },
            TextMessage {
                from: "+491517654321".into(),
                text: "+49 starts like a URC".into()
            }
        ]
    );
    assert_eq!(modem.stored_sms(), 0, "each message read is deleted");
    let cmds = modem.stats().commands;
    for c in [
        "AT+CMGF=1",
        "AT+CMGS=\"+4930123456\"",
        "AT+CMGR=1",
        "AT+CMGD=1",
        "AT+CMGR=2",
    ] {
        assert!(cmds.iter().any(|x| x == c), "no {c} in {cmds:?}");
    }
}

#[test]
fn text_mode_send_and_receive_in_process() {
    let (stream, peer) = SimStream::pair("modem");
    let modem = SimModem::new();
    modem.serve(peer);
    let port = AtPort::new(stream, Arc::new(SystemClock::new()));
    let mut sup = Supervisor::new(port, Box::new(NoDataLink), None, config());
    exchange(&mut sup, &modem);
}

#[test]
fn text_mode_send_and_receive_on_a_pty() {
    let pty = PtyPair::open().unwrap();
    let modem = SimModem::new();
    modem.serve_path(pty.slave_path()).unwrap();
    let stream = SerialStreamPort::attach_pty("modem", &pty).unwrap();
    let port = AtPort::new(stream, Arc::new(SystemClock::new()));
    let mut sup = Supervisor::new(port, Box::new(NoDataLink), None, config());
    exchange(&mut sup, &modem);
}

#[test]
fn no_network_no_sms_and_the_port_stays_usable() {
    let (stream, peer) = SimStream::pair("modem");
    let modem = SimModem::new();
    modem.serve(peer);
    let port = AtPort::new(stream, Arc::new(SystemClock::new()));
    let mut sup = Supervisor::new(port, Box::new(NoDataLink), None, config());
    sup.check().unwrap();
    modem.set_fault(ModemFault::NotRegistered, Cure::Never);
    let refused = sup.send_sms("+4930123456", "hello").unwrap();
    assert_eq!(refused, Err(AtFailure::Cme("no network service".into())));
    assert!(modem.sent_sms().is_empty());
    modem.clear_fault();
    assert_eq!(sup.send_sms("+4930123456", "again").unwrap(), Ok(1));
}

#[test]
fn messages_that_came_while_nobody_listened_are_read_once() {
    let (stream, peer) = SimStream::pair("modem");
    let modem = SimModem::new();
    modem.store_sms("+491511234567", "BAL A-101 4711");
    modem.serve(peer);
    let port = AtPort::new(stream, Arc::new(SystemClock::new()));
    let mut sup = Supervisor::new(port, Box::new(NoDataLink), None, config());
    sup.check().unwrap();
    let got = sup.receive_sms(Duration::from_millis(60)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, "BAL A-101 4711");
    assert_eq!(modem.stored_sms(), 0);
    assert_eq!(sup.receive_sms(Duration::from_millis(60)).unwrap(), vec![]);
    let lists = modem
        .stats()
        .commands
        .iter()
        .filter(|c| c.starts_with("AT+CMGL"))
        .count();
    assert_eq!(
        lists, 1,
        "the SIM's memory is listed once after the modem starts"
    );
}
