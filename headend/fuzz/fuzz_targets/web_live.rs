//! The live stream's messages from the phone (headend/src/web/wire.rs `LiveIn`): never a panic.
#![no_main]

use concentrator_headend::web::wire::{decode, LiveIn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<LiveIn>("live", data);
});
