//! Arbitrary bytes through every DL/T 645 decoder: none may panic, and a decoded frame re-encodes to
//! the bytes it came from.
#![no_main]

use concentrator_driver_dlt645::{
    decode_value, reply_complete, scan, Completeness, DataId, Frame, FrameBuffer, ReadSession,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Completeness::Complete(len) = reply_complete(bytes) {
        let decoded = Frame::decode(&bytes[..len]).expect("complete means decodable");
        let again = decoded
            .frame
            .encode_with_preamble(decoded.preamble)
            .expect("it came from the wire");
        assert_eq!(again, &bytes[..len]);
        let mut session =
            ReadSession::new(decoded.frame.address, DataId::IMPORT_ACTIVE_ENERGY_BLOCK);
        let _ = session.on_reply_value(&decoded.frame);
        if decoded.frame.data.len() >= 4 {
            let di = DataId::from_wire([
                decoded.frame.data[0],
                decoded.frame.data[1],
                decoded.frame.data[2],
                decoded.frame.data[3],
            ]);
            let _ = decode_value(di, &decoded.frame.data[4..]);
        }
    }
    let _ = scan(bytes);
    let mut buffer = FrameBuffer::new();
    for chunk in bytes.chunks(7) {
        buffer.push(chunk);
        while buffer.next_frame().is_some() {}
    }
});
