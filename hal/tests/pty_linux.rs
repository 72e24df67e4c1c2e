//! OS loopback: the Linux serial backend on real pseudo-terminals.

use std::io::{Read, Write};
use std::time::Duration;

use concentrator_hal::linux::SerialBusConfig;
use concentrator_hal::linux::{KernelRs485, SerialStreamPort};
use concentrator_hal::pty::PtyPair;
use concentrator_hal::sim::{PtyServer, ScriptedDevice, SimBus, SimClock};
use concentrator_hal::{
    DirectionControl, LineSettings, ReplyEnd, Rs485Bus, Rs485Timing, SerialStream,
};

fn timing() -> Rs485Timing {
    Rs485Timing {
        first_byte_timeout: Duration::from_millis(1000),
        inter_byte_timeout: Duration::from_millis(100),
        ..Rs485Timing::default()
    }
}

/// Bytes written through the Linux backend arrive at the other end of the pty, and the other end's
/// answer comes back through the backend.
#[test]
fn bytes_cross_a_pty_both_ways() {
    let pty = PtyPair::open().unwrap();
    let config = SerialBusConfig {
        name: "bus-pty".into(),
        path: pty.slave_path().to_path_buf(),
        settings: LineSettings::dlt645_default(),
        kernel_rs485: KernelRs485::IfSupported,
        direction_gpio: None,
        turnaround: Duration::ZERO,
        echo: false,
    };
    let mut bus = config.open().unwrap();
    // A pty has no RS485 mode: the backend falls back to automatic direction.
    assert_eq!(bus.direction(), DirectionControl::Automatic);

    let mut far_end = pty.master().unwrap();
    let peer = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < 6 {
            let n = far_end.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        std::thread::sleep(Duration::from_millis(30));
        far_end.write_all(b"\x01\x02").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        far_end.write_all(b"\x03\x04\x05").unwrap();
        got
    });

    let mut reply = Vec::new();
    let info = bus
        .transact(b"\xFE\xFEhello", &timing(), &mut reply, &mut |r| {
            r.len() == 5
        })
        .unwrap();
    assert_eq!(peer.join().unwrap(), b"\xFE\xFEhello");
    assert_eq!(info.end, ReplyEnd::Complete);
    assert_eq!(reply, b"\x01\x02\x03\x04\x05");
    assert!(
        info.latency.unwrap() >= Duration::from_millis(25),
        "{:?}",
        info.latency
    );
}

/// A partial reply ends by silence after the inter-byte timeout; no reply at all is `NoReply`.
#[test]
fn silence_and_no_reply_on_a_pty() {
    let pty = PtyPair::open().unwrap();
    let mut bus =
        SerialBusConfig::attach_pty("bus-master", &pty, LineSettings::modbus_default()).unwrap();
    let mut reply = Vec::new();
    let quick = Rs485Timing {
        first_byte_timeout: Duration::from_millis(50),
        ..timing()
    };
    let info = bus
        .transact(b"ping", &quick, &mut reply, &mut |_| false)
        .unwrap();
    assert_eq!(info.end, ReplyEnd::NoReply);

    // The slave side (an external program's end) answers with half a frame.
    let mut slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(pty.slave_path())
        .unwrap();
    let peer = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        while got.len() < 8 {
            let n = slave.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        slave.write_all(b"pon").unwrap();
        got
    });
    let info = bus
        .transact(b"ping", &timing(), &mut reply, &mut |r| r == b"pong")
        .unwrap();
    // The first, unanswered ping is still in the slave's input queue: two pings arrive.
    assert_eq!(peer.join().unwrap(), b"pingping");
    assert_eq!(
        (info.end, reply.as_slice()),
        (ReplyEnd::Silence, &b"pon"[..])
    );
}

/// A simulated bus served on a pty answers a real serial client: the backend on one end, sim devices on
/// the other.
#[test]
fn sim_devices_answer_on_a_pty() {
    let clock = SimClock::new_virtual();
    let mut sim = SimBus::new("sim", LineSettings::dlt645_default(), clock);
    sim.attach(ScriptedDevice::new("m1").answer(b"read 1", b"value 1", Duration::from_millis(5)));
    sim.attach(ScriptedDevice::new("m2").answer(b"read 2", b"value 2", Duration::from_millis(5)));
    let server = PtyServer::start(sim.handle(), LineSettings::dlt645_default()).unwrap();

    let config = SerialBusConfig {
        name: "to-sim".into(),
        path: server.path().to_path_buf(),
        settings: LineSettings::dlt645_default(),
        kernel_rs485: KernelRs485::Off,
        direction_gpio: None,
        turnaround: Duration::ZERO,
        echo: false,
    };
    let mut bus = config.open().unwrap();
    let mut reply = Vec::new();
    for (request, expected) in [(&b"read 2"[..], &b"value 2"[..]), (b"read 1", b"value 1")] {
        let info = bus
            .transact(request, &timing(), &mut reply, &mut |r| r.len() == 7)
            .unwrap();
        assert_eq!(info.end, ReplyEnd::Complete);
        assert_eq!(reply, expected);
    }
}

/// The kernel RS485 mode is refused clearly where the UART lacks it.
#[test]
fn required_kernel_rs485_on_a_pty_is_refused() {
    let pty = PtyPair::open().unwrap();
    let config = SerialBusConfig {
        name: "needs-rs485".into(),
        path: pty.slave_path().to_path_buf(),
        settings: LineSettings::dlt645_default(),
        kernel_rs485: KernelRs485::Required,
        direction_gpio: None,
        turnaround: Duration::ZERO,
        echo: false,
    };
    let err = config.open().unwrap_err();
    assert_eq!(err.kind(), concentrator_hal::ErrorKind::Unsupported);
    assert!(err.to_string().contains("TIOCSRS485"), "{err}");
}

/// A full-duplex stream on a pty: what the emulator writes, the host reads, and back.
#[test]
fn stream_on_a_pty() {
    let pty = PtyPair::open().unwrap();
    let mut stream = SerialStreamPort::attach_pty("modem", &pty).unwrap();
    let mut emulator = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(pty.slave_path())
        .unwrap();
    stream.write_all(b"AT\r").unwrap();
    let mut buf = [0u8; 16];
    let n = emulator.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"AT\r");
    emulator.write_all(b"\r\nOK\r\n").unwrap();
    let mut got = Vec::new();
    while got.len() < 6 {
        let n = stream.read(&mut buf, Duration::from_millis(500)).unwrap();
        assert!(n > 0, "timed out after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"\r\nOK\r\n");
    assert_eq!(stream.read(&mut buf, Duration::from_millis(20)).unwrap(), 0);
}

/// A missing device names the path and the fix.
#[test]
fn missing_port_names_path_and_fix() {
    let config = SerialBusConfig {
        name: "ghost".into(),
        path: "/dev/ttyUSB-does-not-exist".into(),
        settings: LineSettings::dlt645_default(),
        kernel_rs485: KernelRs485::IfSupported,
        direction_gpio: None,
        turnaround: Duration::ZERO,
        echo: false,
    };
    let err = config.open().unwrap_err();
    assert_eq!(err.kind(), concentrator_hal::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("/dev/ttyUSB-does-not-exist"));
    assert!(err.to_string().contains("/dev/serial/by-id"));
}
