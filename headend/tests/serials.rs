//! Token serials are never reused (issue #14, defect 4): top-ups bought from phones while the MQTT
//! worker ingests the same meter's readings and events, each rewriting the meter's record.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use concentrator_mpc::backend::Backend;
use concentrator_protocol::*;
use concentrator_security::SecurityMode;
use support::*;

#[test]
fn concurrent_top_ups_and_ingestion_never_reuse_a_serial() {
    let p = Pilot::new("serials");
    let he = p.head_end();
    let backend = he.backend();
    let mut e = he.engine().unwrap();
    let mut g = p.gateway("gw-1", vec![SecurityMode::AES]);
    let scope = Scope::Meter(attach_meter(&mut e, &mut g, "MTR-1", 1));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let body = if n.is_multiple_of(5) {
                    event(event_code::RELAY_CLOSED, Severity::Info)
                } else {
                    concentrator_uplink::testkit::reading(n)
                };
                let msg = g.seal(scope, body, None);
                feed(&mut e, &msg);
                if n.is_multiple_of(32) {
                    e.flush_acks(unix_now());
                }
            }
            n
        })
    };
    let buyers: Vec<_> = (0..3u8)
        .map(|b| {
            let backend = backend.clone();
            std::thread::spawn(move || {
                (0..100u8)
                    .map(|i| {
                        let mut req = [b; 16];
                        req[15] = i;
                        backend.top_up("C-1", "MTR-1", 500, req).unwrap().serial
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let serials: Vec<u64> = buyers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    stop.store(true, Ordering::SeqCst);
    let ingested = worker.join().unwrap();
    eprintln!(
        "{} top-ups while the worker ingested {ingested} messages",
        serials.len()
    );
    assert!(
        ingested > 10,
        "the worker ran alongside ({ingested} messages)"
    );
    let distinct: HashSet<u64> = serials.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        serials.len(),
        "a serial was handed out twice: {serials:?}"
    );
    let stored = he.store().tokens("MTR-1").unwrap();
    assert_eq!(
        stored.len(),
        serials.len(),
        "every purchase kept its own token"
    );
    assert_eq!(
        he.store().next_serial("MTR-1").unwrap(),
        serials.len() as u64 + 1
    );
}
