//! A link cut between the gateway and the broker: the gateway runs in a network namespace joined to
//! this one by a veth pair, the link goes down in the middle of a stream of readings and comes back.
//! Nothing is lost, nothing is duplicated after dedup by message id, and order holds per meter.
//! Needs root (network namespaces): where the machine refuses them the test fails with the reason,
//! or skips visibly with `CONCENTRATOR_ALLOW_SKIP=1`.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use concentrator_protocol::*;
use concentrator_uplink::mqtt::*;
use support::broker::{skip_without_mosquitto, Broker, TempDir};
use support::headend::HeadEnd;
use support::netns::{enter, LinkCut, HOST_ADDR};
use support::*;

#[test]
fn readings_survive_a_link_cut_between_gateway_and_broker() {
    if skip_without_mosquitto() {
        return;
    }
    let cut = match LinkCut::create() {
        Ok(cut) => cut,
        Err(why) => {
            let missing = prerequisite::Missing::new(
                format!("this machine refuses network namespaces ({why})"),
                "run the tests as root (CAP_NET_ADMIN and CAP_SYS_ADMIN), e.g. \
                 sudo -E cargo test -p concentrator-uplink --test link_cut, \
                 or in a container started with --privileged",
            );
            assert!(prerequisite::skip(Some(missing)));
            return;
        }
    };
    let broker = Broker::start_on(HOST_ADDR);
    let head = HeadEnd::connect(&broker, "head-end-cut");
    std::thread::sleep(Duration::from_millis(500));

    let dir = TempDir::new("cut");
    let store = std::sync::Arc::new(Store::open(dir.path(), Limits::default()));
    let cfg = config(&broker, "gw-cut");
    let gw = cfg.gateway.clone();
    // The uplink's threads start inside the namespace: they reach the broker only over the veth link.
    let uplink = {
        let store = std::sync::Arc::clone(&store);
        let parts_gw = gw.clone();
        let namespace = cut.namespace.clone();
        let started = std::thread::spawn(move || {
            enter(&namespace);
            Uplink::start(cfg, store.parts(&parts_gw, ignore_commands()))
        })
        .join()
        .unwrap();
        started.unwrap()
    };

    let total = 300u64;
    for n in 0..total {
        if n == 100 {
            head.wait_for(30, "the first 100 readings", |l| {
                l.up.iter()
                    .filter(|r| r.frame.kind() == Kind::Readings)
                    .count()
                    >= 100
            });
            cut.down();
            eprintln!("link down after {n} readings");
        }
        if n == 200 {
            // The gateway notices the dead link by its keep-alive (5 s without a PINGRESP).
            let until = std::time::Instant::now() + Duration::from_secs(30);
            while uplink.status().connected {
                assert!(
                    std::time::Instant::now() < until,
                    "the gateway never noticed the cut"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            cut.up();
            eprintln!("link up after {n} readings");
        }
        store
            .outbox
            .append(Scope::Meter(tid(1 + (n % 3) as u8)), unix_now(), reading(n))
            .unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    head.wait_for(60, "all readings after the cut", |l| {
        l.up.iter()
            .filter(|r| r.frame.kind() == Kind::Readings)
            .map(|r| r.frame.header.id)
            .collect::<HashSet<_>>()
            .len()
            == total as usize
    });
    let frames = head.unique(Kind::Readings);
    let values: HashSet<i64> = frames.iter().map(value).collect();
    assert_eq!(values.len(), total as usize, "lost or duplicated readings");
    let mut per_meter: HashMap<Option<Tid>, Vec<i64>> = HashMap::new();
    for f in &frames {
        per_meter.entry(f.header.tid).or_default().push(value(f));
    }
    for (meter, vals) in &per_meter {
        assert!(
            vals.windows(2).all(|w| w[0] < w[1]),
            "meter {meter:?} out of order: {vals:?}"
        );
    }
    eprintln!(
        "{} readings arrived across the cut, {} connection failures",
        frames.len(),
        uplink.status().failures
    );
    uplink.stop().unwrap();
}
