//! Signed-token, token-body and receipt decoding on arbitrary octets must never panic.
#![no_main]

use concentrator_security::receipt::Receipt;
use concentrator_security::token::{CreditToken, SignedToken};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = SignedToken::decode(data) {
        let _ = CreditToken::decode(&signed.0.body);
    }
    let _ = CreditToken::decode(data);
    let _ = Receipt::decode(data);
});
