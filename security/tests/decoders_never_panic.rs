//! The decoders of untrusted octets (envelope, signed token, token body, receipt) return errors on any
//! input and never panic; the same targets run under cargo-fuzz in security/fuzz.

use concentrator_security::bits::Direction;
use concentrator_security::envelope::{Channel, Envelope};
use concentrator_security::receipt::Receipt;
use concentrator_security::security_mode::{SecurityContext, SecurityMode};
use concentrator_security::signed::SignedDocument;
use concentrator_security::suci::{self, Profile};
use concentrator_security::token::{CreditToken, SignedToken};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Envelope::decode(&data);
        let ctx = SecurityContext::new(SecurityMode::AES, &[1; 16], &[2; 16], 0, 0, 100);
        let _ = Channel::new(ctx, Direction::Downlink, 10).open(&data, 5);
        let _ = SignedToken::decode(&data);
        let _ = SignedDocument::decode(&data);
        let _ = CreditToken::decode(&data);
        let _ = Receipt::decode(&data);
        let _ = suci::reveal(Profile::A, &[7; 32], &data);
        let _ = suci::bcd_to_msin(&data);
    }

    /// Near-valid inputs: a valid envelope header with arbitrary tails and lengths.
    #[test]
    fn mutated_envelopes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..64), len in any::<u8>()) {
        let mut data = vec![1, 0, 2, 2, 3, 1, len];
        data.extend_from_slice(&tail);
        let _ = Envelope::decode(&data);
        let mut t = vec![b'T', 1, len];
        t.extend_from_slice(&tail);
        let _ = CreditToken::decode(&t);
    }
}
