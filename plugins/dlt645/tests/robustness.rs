//! Partial frames, garbage, frames split at every byte, and arbitrary bytes: the decoders never panic
//! and always find a good frame after noise.

use concentrator_driver_dlt645::*;
use proptest::prelude::*;

const REPLY: &str = "FEFEFEFE68010000000000689108333334339A785634D316";

fn reply() -> Vec<u8> {
    hex::decode(REPLY).unwrap()
}

#[test]
fn split_at_every_byte_into_a_frame_buffer() {
    let bytes = reply();
    for cut in 0..=bytes.len() {
        let mut buffer = FrameBuffer::new();
        buffer.push(&bytes[..cut]);
        let early = buffer.next_frame();
        buffer.push(&bytes[cut..]);
        let frame = early
            .or_else(|| buffer.next_frame())
            .unwrap_or_else(|| panic!("cut at {cut}"));
        assert_eq!(frame.data[4..], [0x67, 0x45, 0x23, 0x01]);
    }
}

#[test]
fn every_truncation_is_named() {
    let bytes = reply();
    for cut in 5..bytes.len() {
        let err = Frame::decode(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, FrameError::Truncated { have, .. } if have == cut),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn every_single_byte_corruption_is_caught() {
    let bytes = reply();
    for at in 4..bytes.len() {
        for flip in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[at] ^= flip;
            assert!(
                Frame::decode_exact(&bad).is_err(),
                "flip 0x{flip:02X} at byte {at} went unnoticed"
            );
        }
    }
}

#[test]
fn garbage_before_and_between_frames() {
    let one = reply();
    let mut stream = vec![0x00, 0x16, 0x68, 0x68, 0xFF];
    stream.extend_from_slice(&one);
    stream.extend_from_slice(&[0x68, 0x01, 0x02]);
    stream.extend_from_slice(&one);
    let mut buffer = FrameBuffer::new();
    let mut frames = 0;
    for chunk in stream.chunks(1) {
        buffer.push(chunk);
        while buffer.next_frame().is_some() {
            frames += 1;
        }
    }
    assert_eq!(frames, 2);
    assert_eq!(buffer.discarded(), 8);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Frame::decode(&bytes);
        let _ = Frame::decode_exact(&bytes);
        let _ = reply_complete(&bytes);
        let _ = scan(&bytes);
        if let Ok(frame) = decode_reply(&bytes) {
            let request = read_data(frame.address, DataId::IMPORT_ACTIVE_ENERGY);
            let _ = read_reply(&request, DataId::IMPORT_ACTIVE_ENERGY, &frame);
            let _ = address_reply(&frame);
            let mut session = ReadSession::new(frame.address, DataId::VOLTAGE_BLOCK);
            let _ = session.on_reply_value(&frame);
        }
        let mut buffer = FrameBuffer::new();
        buffer.push(&bytes);
        while buffer.next_frame().is_some() {}
    }

    #[test]
    fn arbitrary_values_never_panic(di in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = decode_value(DataId(di), &data);
        let _ = MeterDateTime::from_wire(&data);
        let _ = MeterDate::from_wire(&data);
    }

    #[test]
    fn frames_round_trip(address in any::<[u8; 6]>(), control in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..=255), preamble in 0usize..8) {
        let frame = Frame::new(Dlt645Address(address), ControlCode(control), data);
        let wire = frame.encode_with_preamble(preamble).unwrap();
        prop_assert_eq!(reply_complete(&wire), Completeness::Complete(wire.len()));
        let decoded = Frame::decode_exact(&wire).unwrap();
        prop_assert_eq!(decoded.frame, frame);
        prop_assert_eq!(decoded.preamble, preamble);
    }

    #[test]
    fn a_frame_is_found_after_any_garbage(garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = garbage.clone();
        bytes.extend_from_slice(&reply());
        match scan(&bytes) {
            Scan::Found { start, len } => {
                // Garbage may itself end in a valid frame or in FE bytes; the real one is at the end.
                prop_assert!(start + len <= bytes.len());
                let mut buffer = FrameBuffer::new();
                buffer.push(&bytes);
                let mut last = None;
                while let Some(frame) = buffer.next_frame() {
                    last = Some(frame);
                }
                prop_assert_eq!(last.map(|f| f.data), Some(vec![0, 0, 1, 0, 0x67, 0x45, 0x23, 0x01]));
            }
            Scan::NeedMore { .. } => prop_assert!(false, "no frame found"),
        }
    }
}
