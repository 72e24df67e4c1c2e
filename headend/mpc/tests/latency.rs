//! Top-up latency over one logged-in session (the lead's benchmark, with the in-memory payment server):
//! `cargo test -p concentrator-mpc --release --test latency -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
#[ignore = "a measurement; run with --release --ignored --nocapture"]
fn one_thousand_top_ups_over_one_session() {
    let server = TestServer::start();
    let mut keys = server.client().register(CODE_1, "alice", PASSWORD).unwrap();
    let mut c = server.client();
    let t = Instant::now();
    c.login(&mut keys, PASSWORD, &mut |_| Ok(())).unwrap();
    let login = t.elapsed();
    let mut times = Vec::with_capacity(1000);
    let all = Instant::now();
    for i in 0..1000u64 {
        let t = Instant::now();
        let p = c.top_up("MTR-1", 100).unwrap();
        times.push(t.elapsed());
        assert_eq!(p.serial, i + 1);
    }
    let total = all.elapsed();
    times.sort_unstable();
    let pct = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    println!(
        "login {login:?}; 1000 top-ups in {total:?}: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        times[times.len() - 1]
    );
    assert!(pct(0.5) < Duration::from_millis(50), "p50 {:?}", pct(0.5));
}
