//! Frame encoding: every kind round-trips, unknown fields are skipped, malformed input is refused
//! without a panic, and the example octets in docs/protocol.md are the ones this crate writes.

mod support;

use concentrator_protocol::*;
use proptest::prelude::*;
use support::*;

#[test]
fn every_kind_round_trips_and_has_a_sample() {
    let bodies = bodies();
    for kind in Kind::ALL {
        assert!(
            bodies.iter().any(|b| b.kind() == *kind),
            "no sample for {kind:?}"
        );
    }
    for (i, body) in bodies.into_iter().enumerate() {
        let f = frame(i as u64, body);
        let octets = f.encode().unwrap();
        assert_eq!(Frame::decode(&octets).unwrap(), f, "{:?}", f.kind());
    }
}

#[test]
fn priorities() {
    let b = bodies();
    let by = |k: Kind| b.iter().find(|x| x.kind() == k).unwrap();
    assert_eq!(by(Kind::Readings).priority(), Priority::Routine);
    assert!(by(Kind::Readings).droppable());
    assert_eq!(by(Kind::Receipt).priority(), Priority::Urgent);
    assert!(!by(Kind::Receipt).droppable());
    // A relay event is urgent even at warning severity.
    assert_eq!(by(Kind::Event).priority(), Priority::Urgent);
    let info = Body::Event(Event {
        at: 0,
        code: event_code::METER_ONLINE,
        severity: Severity::Info,
        detail: None,
        values: vec![],
    });
    assert_eq!(info.priority(), Priority::Normal);
}

/// The dumps in docs/protocol.md; run with `--nocapture` to print them when the spec changes.
#[test]
fn spec_examples() {
    let f = frame(
        1,
        Body::Readings(Readings {
            readings: vec![Reading {
                at: NOW,
                quantity: Quantity::EnergyImportWh,
                value: 1_234_567,
                exponent: 0,
            }],
        }),
    );
    let hex = hex::encode(f.encode().unwrap());
    println!("readings: {hex}");
    assert_eq!(
        hex,
        "a6000101506777303030317264000000000000000102010348\
         3c910e55a207d418041a6955b90005a10081a4001a6955b900\
         0101021a0012d6870300"
    );
    let all = bodies();
    for (i, body) in all.iter().cloned().enumerate() {
        let f = frame(i as u64, body);
        println!("{:?}: {}", f.kind(), hex::encode(f.encode().unwrap()));
    }
    // The change-of-tenancy pair, as docs/protocol.md shows them (message ids 0x17 and 0x18 whatever
    // their place in the sample list).
    let doc = |kind: Kind, seq: u64| {
        let body = all.iter().find(|b| b.kind() == kind).cloned().unwrap();
        hex::encode(frame(seq, body).encode().unwrap())
    };
    assert_eq!(
        doc(Kind::Settlement, 0x17),
        "a60001015067773030303172640000000000000017020d03483c910e55a207d418041a6955b90005a100450100025302"
    );
    assert_eq!(
        doc(Kind::TenancyChange, 0x18),
        "a6000101506777303030317264000000000000001802188c03483c910e55a207d418041a6955b90005a100450100024f01"
    );
    // The backfill pair (docs/protocol.md, *Backfill request*).
    assert_eq!(
        doc(Kind::Backfill, 0x19),
        "a60001015067773030303172640000000000000019020e03483c910e55a207d418041a6955b90005a30050677730303031726400000000000000070181a4001a6955aaf0010102193039030002f5"
    );
    assert_eq!(
        doc(Kind::BackfillRequest, 0x1a),
        "a6000101506777303030317264000000000000001a02188e03483c910e55a207d418041a6955b90005a3001a694c7e80011a6955aaf002190e10"
    );
    assert_eq!(
        doc(Kind::AnchorRecorded, 0x17),
        "a5000101506777303030317264000000000000001702188d041a6955b90005a2001904d20158205a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
    );
}

#[test]
fn unknown_keys_are_skipped() {
    // Header with an extra key 9 (a nested array) and a body with an extra key 7: both ignored.
    let f = frame(3, Body::TimeSync(TimeSync { unix_ms: 5 }));
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(6).unwrap();
    e.u8(0).unwrap().u8(1).unwrap();
    e.u8(1).unwrap().encode(f.header.id).unwrap();
    e.u8(2).unwrap().u16(Kind::TimeSync.code()).unwrap();
    e.u8(9)
        .unwrap()
        .array(2)
        .unwrap()
        .array(0)
        .unwrap()
        .str("future")
        .unwrap();
    e.u8(4).unwrap().u64(NOW).unwrap();
    e.u8(5)
        .unwrap()
        .map(2)
        .unwrap()
        .u8(7)
        .unwrap()
        .bool(true)
        .unwrap()
        .u8(0)
        .unwrap()
        .u64(5)
        .unwrap();
    assert_eq!(Frame::decode(&e.into_writer()).unwrap(), f);
}

#[test]
fn refusals_name_the_problem() {
    let good = frame(1, Body::TimeSync(TimeSync { unix_ms: 5 }))
        .encode()
        .unwrap();
    let mut v2 = good.clone();
    v2[2] = 2; // version value
    assert_eq!(
        Frame::decode(&v2),
        Err(ProtocolError::UnsupportedVersion(2))
    );
    let mut unknown = good.clone();
    let pos = good
        .windows(3)
        .position(|w| w == [0x02, 0x18, 0x87])
        .unwrap();
    unknown[pos + 2] = 0x7f;
    assert_eq!(
        Frame::decode(&unknown),
        Err(ProtocolError::UnknownKind(0x7f))
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        Frame::decode(&trailing),
        Err(ProtocolError::Malformed { .. })
    ));
    assert!(matches!(
        Frame::decode(&good[..good.len() - 1]),
        Err(ProtocolError::Malformed { .. })
    ));
    let big = vec![0u8; MAX_FRAME_LEN + 1];
    assert!(matches!(
        Frame::decode(&big),
        Err(ProtocolError::TooLong { .. })
    ));
    // A body of the wrong shape for its kind.
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(5).unwrap();
    e.u8(0).unwrap().u8(1).unwrap();
    e.u8(1).unwrap().encode(id(1)).unwrap();
    e.u8(2).unwrap().u16(Kind::TopUp.code()).unwrap();
    e.u8(4).unwrap().u64(NOW).unwrap();
    e.u8(5)
        .unwrap()
        .map(1)
        .unwrap()
        .u8(0)
        .unwrap()
        .str("not bytes")
        .unwrap();
    assert!(matches!(
        Frame::decode(&e.into_writer()),
        Err(ProtocolError::Malformed { what: "body", .. })
    ));
}

#[test]
fn deep_nesting_does_not_overflow() {
    let mut bytes = vec![0xa6, 0x09];
    bytes.extend(std::iter::repeat_n(0x81, 100_000));
    bytes.push(0x00);
    assert!(Frame::decode(&bytes).is_err());
    let mut indefinite = vec![0xa6, 0x09];
    indefinite.extend(std::iter::repeat_n(0x9f, 100_000));
    assert!(Frame::decode(&indefinite).is_err());
}

fn reading() -> impl Strategy<Value = Reading> {
    (any::<u64>(), any::<u16>(), any::<i64>(), any::<i8>()).prop_map(|(at, q, value, exponent)| {
        Reading {
            at,
            quantity: Quantity::from_code(q),
            value,
            exponent,
        }
    })
}

proptest! {
    #[test]
    fn readings_round_trip(rs in proptest::collection::vec(reading(), 0..50), seq in any::<u64>(), tid in any::<Option<[u8; 8]>>()) {
        let f = Frame::new(id(seq), tid.map(Tid), NOW, Body::Readings(Readings { readings: rs }));
        prop_assert_eq!(Frame::decode(&f.encode().unwrap()).unwrap(), f);
    }

    #[test]
    fn arbitrary_octets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Frame::decode(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(i in 0usize..20, pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let body = bodies().swap_remove(i);
        let mut octets = frame(1, body).encode().unwrap();
        let p = pos.index(octets.len());
        octets[p] = byte;
        let _ = Frame::decode(&octets);
        let c = cut.index(octets.len());
        let _ = Frame::decode(&octets[..c]);
    }

    #[test]
    fn arbitrary_topics_never_panic(s in "\\PC{0,80}", t in "c/v1/[a-z0-9/+#-]{0,60}") {
        let _ = Topic::parse(&s);
        let _ = Topic::parse(&t);
    }
}
