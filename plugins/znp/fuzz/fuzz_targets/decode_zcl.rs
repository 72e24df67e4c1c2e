//! Arbitrary bytes through the ZCL decoders of the metering and prepayment clusters: none may panic,
//! and a decoded frame re-encodes to its bytes.
#![no_main]

use concentrator_driver_znp::{zcl, zcl_json, ZclFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(frame) = ZclFrame::decode(bytes) {
        assert_eq!(frame.encode(), bytes);
    }
    for cluster in [0x0702, 0x0705, 0x0000] {
        let _ = zcl::decode(cluster, bytes);
        let _ = zcl_json(cluster, bytes);
    }
});
