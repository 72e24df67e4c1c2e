//! Uplink figures against a real Mosquitto on loopback (TLS, client certificates), with the fake
//! head-end of the tests acknowledging by message id:
//!
//! - appends per second into the outbox (100 000 readings, broker not involved);
//! - resident memory (VmRSS) while 100 000 readings are queued;
//! - time to drain them to the head-end (sealed, published with QoS 1, acknowledged, deleted), and so
//!   messages per second from outbox to broker.
//!
//! `CARGO_TARGET_DIR=… cargo bench -p concentrator-uplink --bench mqtt` (needs /usr/sbin/mosquitto).
//! `UPLINK_BENCH_N` changes the count.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use concentrator_protocol::*;
use concentrator_uplink::mqtt::*;
use support::broker::{skip_without_mosquitto, Broker, TempDir};
use support::headend::HeadEnd;
use support::*;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if skip_without_mosquitto() {
        return;
    }
    let n: u64 = std::env::var("UPLINK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-bench");
    std::thread::sleep(Duration::from_millis(500));
    let dir = TempDir::new("bench");
    let store = Store::open(dir.path(), Limits::default());
    let rss0 = rss_kib("VmRSS:");

    let t = Instant::now();
    for i in 0..n {
        let meter = Scope::Meter(tid(1 + (i % 4) as u8));
        store.outbox.append(meter, unix_now(), reading(i)).unwrap();
    }
    let queued_in = t.elapsed();
    store.outbox.flush().unwrap();
    let rss_queued = rss_kib("VmRSS:");
    println!(
        "append: {n} readings in {:.2} s = {:.0} appends/s",
        queued_in.as_secs_f64(),
        n as f64 / queued_in.as_secs_f64()
    );
    println!(
        "outbox: {n} readings queued, {} KiB in the tree; RSS {} KiB before, {} KiB while queued (+{} KiB)",
        store.outbox.bytes() / 1024,
        rss0,
        rss_queued,
        rss_queued.saturating_sub(rss0)
    );

    let cfg = config(&broker, "gw-bench");
    let gw = cfg.gateway.clone();
    let t = Instant::now();
    let uplink = Uplink::start(cfg, store.parts(&gw, ignore_commands())).unwrap();
    let mut peak = 0;
    while !store.outbox.is_empty().unwrap() {
        peak = peak.max(rss_kib("VmRSS:"));
        std::thread::sleep(Duration::from_millis(50));
        assert!(t.elapsed() < Duration::from_secs(1800), "drain stalled");
    }
    let drained = t.elapsed();
    let st = uplink.status();
    println!(
        "drain: {n} readings to the head-end and acknowledged in {:.2} s = {:.0} messages/s (sent {}, acked {}, resends {})",
        drained.as_secs_f64(),
        n as f64 / drained.as_secs_f64(),
        st.sent,
        st.acked,
        st.sent.saturating_sub(st.acked)
    );
    println!(
        "memory: peak RSS while draining {} KiB; VmHWM {} KiB",
        peak,
        rss_kib("VmHWM:")
    );
    let unique = head.unique(Kind::Readings).len();
    println!("head-end: {unique} distinct readings received");
    uplink.stop().unwrap();
}
