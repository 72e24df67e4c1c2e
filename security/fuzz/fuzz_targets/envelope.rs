//! Envelope decoding and full verification on arbitrary octets must never panic.
#![no_main]

use concentrator_security::bits::Direction;
use concentrator_security::envelope::{Channel, Envelope};
use concentrator_security::security_mode::{SecurityContext, SecurityMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Envelope::decode(data);
    for mode in [SecurityMode::AES, SecurityMode::KASUMI] {
        let ctx = SecurityContext::new(mode, &[1; 16], &[2; 16], 3, 0, 1000);
        let _ = Channel::new(ctx, Direction::Downlink, 60).open(data, 10);
    }
});
