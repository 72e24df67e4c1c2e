//! One sample frame of every kind, shared by the tests and the spec's hex dumps.
#![allow(dead_code)]

use concentrator_protocol::*;

pub const NOW: u64 = 1_767_225_600;
pub const TID: Tid = Tid([0x3c, 0x91, 0x0e, 0x55, 0xa2, 0x07, 0xd4, 0x18]);

pub fn id(seq: u64) -> MessageId {
    MessageId::new(*b"gw0001rd", seq)
}

pub fn bodies() -> Vec<Body> {
    vec![
        Body::Readings(Readings {
            readings: vec![
                Reading {
                    at: NOW,
                    quantity: Quantity::EnergyImportWh,
                    value: 1_234_567,
                    exponent: 0,
                },
                Reading {
                    at: NOW,
                    quantity: Quantity::Voltage,
                    value: 2301,
                    exponent: -1,
                },
            ],
        }),
        Body::Event(Event {
            at: NOW,
            code: event_code::RELAY_OPENED,
            severity: Severity::Warning,
            detail: Some("credit exhausted".into()),
            values: vec![0],
        }),
        Body::Receipt(ReceiptBody {
            signed: vec![0x01, 0x00, 0x02, 0x52, 0x01],
        }),
        Body::AccountSummary(AccountSummary {
            at: NOW,
            balance_minor: -150,
            currency: "EUR".into(),
            last_token_serial: Some(17),
            register_wh: 1_234_567,
            tariff_id: 3,
            charged_minor: 98_765,
            relay_closed: true,
            applied: Some(vec![
                SerialRange { first: 1, last: 4 },
                SerialRange { first: 6, last: 6 },
            ]),
            audit: Some(AuditAnchor {
                len: 42,
                head: [0x5a; 32],
            }),
        }),
        Body::Attach(Attach {
            profile: 1,
            key_id: 2,
            concealed: vec![0xAB; 12],
        }),
        Body::AkaResponse(AkaResponse {
            rand: [0x11; 16],
            result: AkaResult::Res(vec![0x22; 8]),
        }),
        Body::SecurityModeComplete(SecurityModeComplete {
            chosen: ModePair {
                integrity: 2,
                ciphering: 2,
            },
        }),
        Body::CommandResult(CommandResult {
            command: id(7),
            code: result_code::TOKEN_REFUSED,
            reason: Some("serial 16 already applied".into()),
        }),
        Body::AckUp(Ack {
            ids: vec![id(7), id(8)],
        }),
        Body::Birth(Birth {
            software: "0.1.0".into(),
            started_at: NOW,
            session: 1,
            modem: ModemReport {
                rssi_dbm: Some(-79),
                operator: Some("Example".into()),
                technology: Some("UTRAN".into()),
                iccid: Some("8949012345678901234".into()),
                recoveries: 0,
            },
            meters: vec![InventoryMeter {
                tid: Some(TID),
                model: "dlt645".into(),
                online: true,
            }],
            outbox_len: 12,
        }),
        Body::Death(Death { session: 1 }),
        Body::RestoreRequest(RestoreRequest {
            at: NOW,
            register_wh: Some(1_234_567),
        }),
        Body::AkaChallenge(AkaChallenge {
            rand: [0x11; 16],
            autn: [0x33; 16],
        }),
        Body::SecurityModeCommand(SecurityModeCommand {
            allowed: vec![
                ModePair {
                    integrity: 2,
                    ciphering: 2,
                },
                ModePair {
                    integrity: 1,
                    ciphering: 1,
                },
            ],
            fresh: 0x0506_0708,
            lifetime_s: 86_400,
        }),
        Body::TidAssignment(TidAssignment {
            tid: TID,
            expires_at: NOW + 86_400,
        }),
        Body::TopUp(TopUp {
            token: vec![0x01, 0x00, 0x02, 0x54, 0x01],
        }),
        Body::RelayCommand(RelayCommand {
            action: RelayAction::Arm,
            reason: None,
        }),
        Body::TariffUpdate(TariffUpdate {
            tariff_id: 4,
            effective_from: NOW,
            currency: "EUR".into(),
            standing_charge_minor_per_day: 25,
            rates: vec![
                Rate {
                    id: 1,
                    price_micro_per_kwh: 28_000_000,
                },
                Rate {
                    id: 2,
                    price_micro_per_kwh: 19_000_000,
                },
            ],
            calendar: vec![
                Switch {
                    days: 0x1f,
                    start_minute: 420,
                    rate: 1,
                },
                Switch {
                    days: 0xff,
                    start_minute: 1320,
                    rate: 2,
                },
            ],
            special_days: vec![20261225],
            utc_offset_min: 60,
        }),
        Body::TimeSync(TimeSync {
            unix_ms: NOW * 1000 + 250,
        }),
        Body::ConfigChange(ConfigChange {
            settings: vec![ConfigSetting {
                key: "relay.friendly_hours".into(),
                value: ConfigValue::Bool(true),
            }],
        }),
        Body::AckDown(Ack { ids: vec![id(1)] }),
        Body::AccountRequest(AccountRequest {}),
        Body::AccountRestore(AccountRestore {
            signed: vec![0x01, 0x00, 0x02, 0x53, 0x01],
        }),
        Body::AnchorRecorded(AnchorRecorded {
            len: 1_234,
            head: [0x5a; 32],
        }),
        Body::Settlement(SettlementBody {
            signed: vec![0x01, 0x00, 0x02, 0x53, 0x02],
        }),
        Body::TenancyChange(TenancyChange {
            order: vec![0x01, 0x00, 0x02, 0x4f, 0x01],
        }),
        Body::Backfill(Backfill {
            request: id(7),
            readings: vec![Reading {
                at: NOW - 3_600,
                quantity: Quantity::EnergyImportWh,
                value: 12_345,
                exponent: 0,
            }],
            last: true,
        }),
        Body::BackfillRequest(BackfillRequest {
            from: NOW - 7 * 86_400,
            to: NOW - 3_600,
            interval_s: 3_600,
        }),
    ]
}

/// The frame of a sample body, with a TID for meter-scoped kinds.
pub fn frame(seq: u64, body: Body) -> Frame {
    let gateway_level = matches!(
        body.kind(),
        Kind::Birth
            | Kind::Death
            | Kind::TimeSync
            | Kind::ConfigChange
            | Kind::AnchorRecorded
            | Kind::TariffUpdate
    );
    Frame::new(id(seq), (!gateway_level).then_some(TID), NOW, body)
}
