//! What `mpc` and the payment server send each other: length-prefixed frames (headend/mpc/src/wire.rs),
//! each an outer message and, inside a sealed one, an inner request or answer (headend/mpc/src/message.rs)
//! whose notices, purchases and history entries the client turns into its own types: never a panic.
#![no_main]

use concentrator_mpc::backend::{HistoryEntry, Notice, Purchase};
use concentrator_mpc::message::{Inner, Message, Sealed};
use concentrator_mpc::wire::FrameDecoder;
use libfuzzer_sys::fuzz_target;

/// What the client does with an inner answer (the server's notices included, kinds 1 to 8).
fn convert(inner: Inner) {
    match inner.body {
        Sealed::Notice { notice } => {
            if let Ok(n) = Notice::try_from(notice) {
                let _ = concentrator_mpc::human::advice(&n);
                let _ = (n.meter().len(), n.serial(), n.is_progress());
            }
        }
        Sealed::Purchased { purchase } => {
            let _ = Purchase::try_from(purchase);
        }
        Sealed::PurchaseList { purchases } => {
            for p in purchases {
                let _ = Purchase::try_from(p);
            }
        }
        Sealed::HistoryList { entries } => {
            for h in entries {
                let _ = HistoryEntry::try_from(h);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = Message::decode(data);
    if let Ok(inner) = Inner::decode(data) {
        convert(inner);
    }
    // The stream in two pieces, as TCP may deliver it.
    let (a, b) = data.split_at(data.len() / 2);
    let mut d = FrameDecoder::new();
    d.push(a);
    for piece in [b, &[][..]] {
        while let Ok(Some(frame)) = d.next_frame() {
            let _ = Message::decode(&frame);
            if let Ok(inner) = Inner::decode(&frame) {
                convert(inner);
            }
        }
        d.push(piece);
    }
});
