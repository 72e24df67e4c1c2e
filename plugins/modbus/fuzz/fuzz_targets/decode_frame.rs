//! Arbitrary bytes through every Modbus RTU decoder: none may panic, and a decoded frame re-encodes to
//! the bytes it came from.
#![no_main]

use concentrator_driver_modbus::{
    decode_exact, decode_reply, read_block_reply, reply_complete, request_complete, scan,
    Completeness, Decoded, Direction, ModelRegistry,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    for (direction, complete) in [
        (Direction::Request, request_complete(bytes)),
        (Direction::Response, reply_complete(bytes)),
    ] {
        if let Completeness::Complete(len) = complete {
            let again =
                match decode_exact(&bytes[..len], direction).expect("complete means decodable") {
                    Decoded::Request(adu) => adu.encode(),
                    Decoded::Response(adu) => adu.encode(),
                };
            assert_eq!(again, &bytes[..len]);
        }
        let _ = scan(bytes, direction, None);
    }
    if let Ok(reply) = decode_reply(bytes, bytes.first().copied().unwrap_or(1)) {
        if let Ok(registry) = ModelRegistry::builtin() {
            for model in ["sdm630", "dds238"] {
                if let Some(map) = registry.get(model) {
                    for block in map.plan(None).unwrap_or_default() {
                        let _ = read_block_reply(map, &block, reply.slave.max(1), &reply);
                    }
                }
            }
        }
    }
});
