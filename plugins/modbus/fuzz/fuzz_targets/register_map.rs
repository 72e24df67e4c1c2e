//! Arbitrary text as a register map: parsing and validation never panic, and a valid map plans reads.
#![no_main]

use concentrator_driver_modbus::RegisterMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(map) = RegisterMap::parse(text, "fuzz.toml") {
        let blocks = map.plan(None).expect("every quantity of the map is known");
        for block in &blocks {
            assert!(block.count <= map.max_registers_per_read.max(2));
            let _ = map.decode_block(block, &[0; 125]);
        }
    }
});
