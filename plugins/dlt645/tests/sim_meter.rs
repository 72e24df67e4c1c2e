//! The emulated meter on a simulated bus, driven through the crate's request builders and reply
//! interpreters as the driver plugin will drive it.

use std::time::Duration;

use concentrator_driver_dlt645::sim::{Dlt645Meter, MeterConfig, MeterHandle, Prepaid};
use concentrator_driver_dlt645::*;
use concentrator_hal::sim::{SimBus, SimClock};
use concentrator_hal::{Clock, LineSettings, ReplyEnd, Rs485Bus};

struct Rig {
    bus: SimBus,
    clock: SimClock,
}

impl Rig {
    fn new(meters: Vec<Dlt645Meter>) -> Self {
        let clock = SimClock::new_virtual();
        let mut bus = SimBus::new("rs485-test", LineSettings::dlt645_default(), clock.clone());
        for meter in meters {
            bus.attach(meter);
        }
        Rig { bus, clock }
    }

    fn exchange(&mut self, request: &Frame) -> Option<Frame> {
        let mut reply = Vec::new();
        let timing = exchange_timing(&self.bus.settings());
        let info = self
            .bus
            .transact(&request.encode().unwrap(), &timing, &mut reply, &mut |r| {
                reply_complete(r).is_done()
            })
            .unwrap();
        match info.end {
            ReplyEnd::NoReply => None,
            _ => Some(decode_reply(&reply).unwrap()),
        }
    }

    fn read(&mut self, address: Dlt645Address, di: DataId) -> Result<Value, Dlt645Exception> {
        let mut session = ReadSession::new(address, di);
        loop {
            let request = session.request().clone();
            let reply = self.exchange(&request).expect("the meter answers");
            match session.on_reply_value(&reply).unwrap()? {
                Some(value) => return Ok(value),
                None => continue,
            }
        }
    }
}

fn meter(number: u64, power_w: i64) -> (Dlt645Meter, MeterHandle, Dlt645Address) {
    let address = Dlt645Address::from_number(number);
    let meter = Dlt645Meter::new(MeterConfig {
        power_w,
        import_centi_kwh: 1_000,
        ..MeterConfig::new(address)
    });
    let handle = meter.handle();
    (meter, handle, address)
}

fn reading(value: Value) -> Reading {
    match value {
        Value::Reading(r) => r,
        other => panic!("expected a reading, got {other:?}"),
    }
}

#[test]
fn energy_advances_with_simulated_time() {
    let (m, _, address) = meter(1, 2000);
    let mut rig = Rig::new(vec![m]);
    let first = reading(rig.read(address, DataId::IMPORT_ACTIVE_ENERGY).unwrap());
    assert_eq!(first, Reading::new(1_000, -2, Unit::KilowattHour));
    rig.clock.advance(Duration::from_secs(1800));
    let later = reading(rig.read(address, DataId::IMPORT_ACTIVE_ENERGY).unwrap());
    assert_eq!(later.mantissa, 1_100); // 2 kW for half an hour
    let voltage = reading(rig.read(address, DataId::voltage(Phase::A)).unwrap());
    assert_eq!(voltage.to_string(), "220.0 V");
    let current = reading(rig.read(address, DataId::current(Phase::A)).unwrap());
    assert_eq!(current.to_string(), "9.090 A");
    let power = reading(rig.read(address, DataId::ACTIVE_POWER).unwrap());
    assert_eq!(power.to_string(), "2.0000 kW");
    let Value::Readings(tariffs) = rig
        .read(address, DataId::IMPORT_ACTIVE_ENERGY_BLOCK)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(tariffs.len(), 5);
    assert_eq!(
        tariffs[0].mantissa,
        tariffs[1..].iter().map(|r| r.mantissa).sum::<i64>()
    );
}

#[test]
fn only_the_addressed_meter_answers_and_unknown_data_is_refused() {
    let (a, _, address_a) = meter(1, 100);
    let (b, _, address_b) = meter(2, 200);
    let mut rig = Rig::new(vec![a, b]);
    let power_b = reading(rig.read(address_b, DataId::ACTIVE_POWER).unwrap());
    assert_eq!(power_b.mantissa, 2000);
    let exception = rig.read(address_a, DataId::REMAINING_MONEY).unwrap_err();
    assert_eq!(exception.bits(), vec![ErrorBit::NoRequestedData]);
    assert!(rig
        .exchange(&read_data(Dlt645Address::from_number(3), DataId::DATE))
        .is_none());
}

#[test]
fn read_address_with_the_wildcard() {
    let (m, _, address) = meter(201_800_001_234, 100);
    let mut rig = Rig::new(vec![m]);
    let reply = rig.exchange(&read_address()).unwrap();
    assert_eq!(address_reply(&reply), Ok(Ok(address)));
}

#[test]
fn relay_control_needs_the_password() {
    let (m, handle, address) = meter(1, 1000);
    let mut rig = Rig::new(vec![m]);
    let until = MeterDateTime::new(2030, 12, 31, 23, 59, 59).unwrap();
    let wrong = relay_control(
        address,
        RelayCommand::Trip,
        &Password::new(2, 111_111),
        OperatorCode::new(0),
        &until,
    );
    let reply = rig.exchange(&wrong).unwrap();
    assert!(ack_reply(&wrong, &reply)
        .unwrap()
        .unwrap_err()
        .has(ErrorBit::Unauthorised));
    assert_eq!(handle.lock().relay, RelayState::Closed);

    let trip = relay_control(
        address,
        RelayCommand::Trip,
        &Password::new(2, 0),
        OperatorCode::new(0x1234_5678),
        &until,
    );
    let reply = rig.exchange(&trip).unwrap();
    assert_eq!(ack_reply(&trip, &reply), Ok(Ok(())));
    let Value::RunningStatus3(status) = rig.read(address, DataId::RUNNING_STATUS_3).unwrap() else {
        panic!()
    };
    assert_eq!(
        (status.relay, status.relay_command),
        (RelayState::Open, RelayState::Open)
    );
    assert_eq!(
        reading(rig.read(address, DataId::ACTIVE_POWER).unwrap()).mantissa,
        0
    );

    let allow = relay_control(
        address,
        RelayCommand::CloseAllowed,
        &Password::new(2, 0),
        OperatorCode::new(0),
        &until,
    );
    rig.exchange(&allow).unwrap();
    assert_eq!(handle.lock().relay, RelayState::Open);
    handle.press_button();
    assert_eq!(handle.lock().relay, RelayState::Closed);

    let expired = MeterDateTime::new(2020, 1, 1, 0, 0, 0).unwrap();
    let late = relay_control(
        address,
        RelayCommand::Trip,
        &Password::new(2, 0),
        OperatorCode::new(0),
        &expired,
    );
    let reply = rig.exchange(&late).unwrap();
    assert!(ack_reply(&late, &reply)
        .unwrap()
        .unwrap_err()
        .has(ErrorBit::Other));
}

#[test]
fn esam_only_meters_refuse_plaintext_control() {
    let address = Dlt645Address::from_number(7);
    let m = Dlt645Meter::new(MeterConfig {
        esam_only: true,
        ..MeterConfig::new(address)
    });
    let mut rig = Rig::new(vec![m]);
    let until = MeterDateTime::new(2030, 12, 31, 23, 59, 59).unwrap();
    let trip = relay_control(
        address,
        RelayCommand::Trip,
        &Password::new(2, 0),
        OperatorCode::new(0),
        &until,
    );
    let reply = rig.exchange(&trip).unwrap();
    assert!(ack_reply(&trip, &reply)
        .unwrap()
        .unwrap_err()
        .has(ErrorBit::Unauthorised));
}

#[test]
fn broadcast_time_sync_sets_every_clock_without_replies() {
    let (a, _, address_a) = meter(1, 100);
    let (b, _, address_b) = meter(2, 100);
    let mut rig = Rig::new(vec![a, b]);
    let time = MeterDateTime::new(2026, 5, 1, 12, 34, 56).unwrap();
    let settings = rig.bus.settings();
    rig.bus
        .send(
            &broadcast_time_sync(&time).encode().unwrap(),
            &broadcast_timing(&settings),
        )
        .unwrap();
    for address in [address_a, address_b] {
        let Value::Date(date) = rig.read(address, DataId::DATE).unwrap() else {
            panic!()
        };
        assert_eq!(
            (date.year, date.month, date.day, date.weekday),
            (2026, 5, 1, 5)
        );
        let Value::Time(t) = rig.read(address, DataId::TIME).unwrap() else {
            panic!()
        };
        assert_eq!((t.hour, t.minute), (12, 34));
    }
    assert_eq!(rig.bus.handle().stats().replies, 4);
}

#[test]
fn set_clock_with_write_data() {
    let (m, _, address) = meter(1, 100);
    let mut rig = Rig::new(vec![m]);
    let time = MeterDateTime::new(2027, 2, 3, 4, 5, 6).unwrap();
    for request in set_clock(address, &time, &Password::new(2, 0), OperatorCode::new(1)) {
        let reply = rig.exchange(&request).unwrap();
        assert_eq!(ack_reply(&request, &reply), Ok(Ok(())));
    }
    let Value::Date(date) = rig.read(address, DataId::DATE).unwrap() else {
        panic!()
    };
    assert_eq!((date.year, date.month, date.day), (2027, 2, 3));
}

#[test]
fn long_data_comes_in_follow_ups() {
    let address = Dlt645Address::from_number(1);
    let long: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    let di = DataId(0x0330_0201);
    let m = Dlt645Meter::new(MeterConfig::new(address)).with_data(di, long.clone());
    let mut rig = Rig::new(vec![m]);
    let mut session = ReadSession::new(address, di);
    let mut exchanges = 0;
    let data = loop {
        exchanges += 1;
        let reply = rig.exchange(&session.request().clone()).unwrap();
        match session.on_reply(&reply).unwrap().unwrap() {
            ReadStep::FollowUp(_) => continue,
            ReadStep::Done(data) => break data,
        }
    };
    assert_eq!(data, long);
    assert_eq!(exchanges, 3); // 196 + 196 + 120 bytes
}

#[test]
fn prepaid_meter_reports_its_balance_and_trips_when_empty() {
    let address = Dlt645Address::from_number(9);
    let config = MeterConfig {
        power_w: 3000,
        prepaid: Some(Prepaid::Money {
            balance_cents: 150,
            price_cents_per_kwh: 50,
        }),
        ..MeterConfig::new(address)
    };
    let m = Dlt645Meter::new(config);
    let handle = m.handle();
    let mut rig = Rig::new(vec![m]);
    assert_eq!(
        reading(rig.read(address, DataId::REMAINING_MONEY).unwrap()),
        Reading::new(150, -2, Unit::Currency)
    );
    rig.clock.advance(Duration::from_secs(3600)); // 3 kWh = 1.50
    let Value::RunningStatus3(status) = rig.read(address, DataId::RUNNING_STATUS_3).unwrap() else {
        panic!()
    };
    assert_eq!(status.relay, RelayState::Open);
    assert_eq!(status.meter_type, MeterType::MoneyPrepaid);
    assert_eq!(handle.lock().remaining(), Some(0));
    assert!(rig.read(address, DataId::REMAINING_ENERGY).is_err());
}

#[test]
fn a_meter_at_other_line_settings_stays_silent() {
    let address = Dlt645Address::from_number(1);
    let m = Dlt645Meter::new(MeterConfig {
        line: LineSettings::with_format(9600, "8E1").unwrap(),
        ..MeterConfig::new(address)
    });
    let mut rig = Rig::new(vec![m]);
    assert!(rig.exchange(&read_data(address, DataId::DATE)).is_none());
    let start = rig.clock.monotonic();
    rig.bus
        .set_settings(LineSettings::with_format(9600, "8E1").unwrap())
        .unwrap();
    assert!(rig.exchange(&read_data(address, DataId::DATE)).is_some());
    assert!(rig.clock.monotonic() > start);
}
