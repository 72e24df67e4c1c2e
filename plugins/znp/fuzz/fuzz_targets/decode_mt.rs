//! Arbitrary bytes through the MT decoders and the driver: none may panic, a decoded frame re-encodes
//! to its bytes, and a typed command re-encodes to its frame.
#![no_main]

use std::time::Duration;

use concentrator_driver_znp::mt::{FrameReader, MtCommand, MtFrame, Read};
use concentrator_driver_znp::{decode_to_json, ZnpConfig, ZnpDriver};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((frame, used)) = MtFrame::decode_prefix(bytes) {
        assert_eq!(
            frame.encode().expect("it came from the wire"),
            &bytes[..used]
        );
        if let Ok(command) = MtCommand::try_from_frame(&frame) {
            if let Some(again) = command.to_frame() {
                // Z-Stack may append bytes after the documented payload; typed frames drop them.
                assert!(frame.data.starts_with(&again.data) || again.data.len() > frame.data.len());
            }
        }
    }
    let _ = decode_to_json(bytes);
    let mut reader = FrameReader::new();
    for chunk in bytes.chunks(7) {
        reader.push(chunk);
        while let Some(read) = reader.next_frame() {
            if let Read::Frame(frame) = read {
                let _ = MtCommand::try_from_frame(&frame);
            }
        }
    }
    let mut driver = ZnpDriver::new(ZnpConfig::default(), Duration::ZERO, 0);
    driver.on_bytes(bytes);
    driver.on_tick(Duration::from_secs(1), 0);
    while driver.poll_transmit().is_some() {}
});
