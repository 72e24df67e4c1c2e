//! What `mpc` sends the payment server: length-prefixed frames (headend/mpc/src/wire.rs), each an outer
//! message and, inside a sealed one, an inner request (headend/mpc/src/message.rs): never a panic.
#![no_main]

use concentrator_mpc::message::{Inner, Message};
use concentrator_mpc::wire::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Message::decode(data);
    let _ = Inner::decode(data);
    // The stream in two pieces, as TCP may deliver it.
    let (a, b) = data.split_at(data.len() / 2);
    let mut d = FrameDecoder::new();
    d.push(a);
    for piece in [b, &[][..]] {
        while let Ok(Some(frame)) = d.next_frame() {
            let _ = Message::decode(&frame);
            let _ = Inner::decode(&frame);
        }
        d.push(piece);
    }
});
