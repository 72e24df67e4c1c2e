//! Partial frames, garbage, frames split at every byte and arbitrary bytes: the decoders never panic
//! and find a good frame after noise.

use concentrator_driver_modbus::*;
use proptest::prelude::*;

const REPLY: [u8; 9] = [0x01, 0x04, 0x04, 0x43, 0x66, 0x80, 0x00, 0x6F, 0xDF];

#[test]
fn every_single_byte_corruption_is_caught() {
    for at in 0..REPLY.len() {
        for flip in [0x01u8, 0x40, 0x80] {
            let mut bad = REPLY;
            bad[at] ^= flip;
            let decoded = decode_exact(&bad, Direction::Response);
            // A flipped slave address still makes a valid frame, for another slave.
            if at == 0 {
                assert!(decoded.is_err() || bad[0] != 1);
                continue;
            }
            assert!(
                decoded.is_err(),
                "flip 0x{flip:02X} at byte {at} went unnoticed"
            );
        }
    }
}

#[test]
fn split_at_every_byte() {
    for cut in 0..=REPLY.len() {
        let mut buffer = REPLY[..cut].to_vec();
        let early = matches!(reply_complete(&buffer), Completeness::Complete(_));
        assert_eq!(early, cut == REPLY.len());
        buffer.extend_from_slice(&REPLY[cut..]);
        assert_eq!(reply_complete(&buffer), Completeness::Complete(REPLY.len()));
    }
}

#[test]
fn reply_after_noise_and_a_broken_frame() {
    let mut bytes = vec![0xFF, 0x00, 0x01, 0x04, 0x04, 0x43];
    bytes.extend_from_slice(&REPLY);
    let reply = decode_reply(&bytes, 1).unwrap();
    assert_eq!(
        reply.pdu,
        Response::ReadInputRegisters {
            values: vec![0x4366, 0x8000]
        }
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = reply_complete(&bytes);
        let _ = request_complete(&bytes);
        let _ = decode_exact(&bytes, Direction::Request);
        let _ = decode_exact(&bytes, Direction::Response);
        let _ = scan(&bytes, Direction::Response, None);
        if let Ok(reply) = decode_reply(&bytes, bytes.first().copied().unwrap_or(1)) {
            let registry = ModelRegistry::builtin().unwrap();
            let map = registry.get("dds238").unwrap();
            let block = &map.plan(None).unwrap()[0];
            let _ = read_block_reply(map, block, reply.slave.max(1), &reply);
            let request = read_registers(reply.slave.max(1), RegisterKind::Input, 0, 2).unwrap();
            let _ = interpret(&request, &reply);
        }
    }

    #[test]
    fn arbitrary_register_values_never_panic(words in proptest::collection::vec(any::<u16>(), 0..4), scale in -20i8..20, decimals in 0u8..10) {
        for t in [DataType::U16, DataType::I16, DataType::U32be, DataType::U32ws, DataType::I32be, DataType::I32ws, DataType::F32be, DataType::F32ws] {
            if let Some(raw) = t.decode(&words) {
                let _ = to_reading(raw, scale, decimals, "kWh");
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_map_parser(text in ".{0,200}") {
        let _ = RegisterMap::parse(&text, "fuzz.toml");
    }

    #[test]
    fn requests_round_trip(slave in 1u8..=247, address in any::<u16>(), values in proptest::collection::vec(any::<u16>(), 1..=123)) {
        let count = values.len().min(usize::from(u16::MAX - address) + 1);
        prop_assume!(count == values.len());
        let request = write_registers(slave, address, &values).unwrap();
        let wire = request.encode();
        prop_assert_eq!(request_complete(&wire), Completeness::Complete(wire.len()));
        prop_assert_eq!(RequestAdu::decode(&wire).unwrap(), (request, wire.len()));
    }

    #[test]
    fn a_reply_is_found_after_any_garbage(garbage in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut bytes = garbage;
        bytes.extend_from_slice(&REPLY);
        let reply = decode_reply(&bytes, 1).unwrap();
        // Garbage may hold its own valid frame from slave 1; if not, we get the real one.
        prop_assert_eq!(reply.slave, 1);
    }
}
