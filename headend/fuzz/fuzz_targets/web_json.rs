//! The web app's request bodies (headend/src/web/wire.rs) on arbitrary octets: never a panic.
#![no_main]

use concentrator_headend::web::wire::{
    decode, hex_bytes, FinishRequest, LoginRequest, RegisterRequest, SyncRequest, TopUpRequest,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<RegisterRequest>("registration", data);
    let _ = decode::<LoginRequest>("login", data);
    if let Ok(s) = decode::<SyncRequest>("resynchronisation", data) {
        let _ = hex_bytes::<14>("auts", &s.auts);
    }
    let _ = decode::<FinishRequest>("login", data);
    if let Ok(t) = decode::<TopUpRequest>("top-up", data) {
        let _ = hex_bytes::<16>("key", &t.key);
    }
});
