//! Properties of the frame decoder and the message decoders: any octets, split anywhere, never panic,
//! and well-formed frames come out whole whatever the split.

use concentrator_mpc::message::{Inner, Message};
use concentrator_mpc::wire::{frame, FrameDecoder, WireError};
use proptest::prelude::*;

proptest! {
    #[test]
    fn any_octets_in_any_pieces_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048),
                                            cuts in proptest::collection::vec(0usize..2048, 0..8)) {
        let mut d = FrameDecoder::new();
        let mut at = 0;
        let mut cuts = cuts;
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([data.len()]) {
            let cut = cut.min(data.len()).max(at);
            d.push(&data[at..cut]);
            at = cut;
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => {
                        let _ = Message::decode(&f);
                        let _ = Inner::decode(&f);
                    }
                    Ok(None) => break,
                    Err(WireError::TooLong { .. } | WireError::Empty) => return Ok(()),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
        }
        let _ = d.end_of_stream();
    }

    #[test]
    fn frames_survive_any_split(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..6),
                                cut in any::<prop::sample::Index>()) {
        let octets: Vec<u8> = payloads.iter().flat_map(|p| frame(p).unwrap()).collect();
        let cut = cut.index(octets.len() + 1);
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for part in [&octets[..cut], &octets[cut..]] {
            d.push(part);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, payloads);
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn message_decoding_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&data);
        let _ = Inner::decode(&data);
    }
}
