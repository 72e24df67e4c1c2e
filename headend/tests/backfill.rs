//! Reading backfill from the head-end's side (issue #19 item 2): a gap in a meter's readings is found
//! from their spacing and asked for once; the gateway's backfilled readings fill it exactly once (a
//! resend, an overlap with what the head-end holds, and a late live reading are not stored twice);
//! a meter that keeps no history is not asked again at once. On PostgreSQL too when the suite runs
//! there (CONCENTRATOR_HEADEND_STORE=postgres).

mod support;

use concentrator_headend::engine::{Engine, Outgoing};
use concentrator_headend::HeadEnd;
use concentrator_protocol::*;
use concentrator_security::SecurityMode;
use support::*;

const H: u64 = 3_600;

fn online(p: &Pilot, he: &HeadEnd) -> (Engine, GatewaySide, Scope) {
    let mut e = he.engine().unwrap();
    let mut g = p.gateway("gw-1", vec![SecurityMode::AES]);
    feed(&mut e, &birth(&mut g));
    let tid = attach_meter(&mut e, &mut g, "MTR-1", 1);
    (e, g, Scope::Meter(tid))
}

fn energy(at: u64, wh: i64) -> Reading {
    Reading {
        at,
        quantity: Quantity::EnergyImportWh,
        value: wh,
        exponent: 0,
    }
}

fn live(g: &mut GatewaySide, scope: Scope, at: u64) -> (String, Vec<u8>) {
    g.seal(
        scope,
        Body::Readings(Readings {
            readings: vec![energy(at, wh_at(at))],
        }),
        None,
    )
}

/// The register the meter shows at `at` (1 kWh an hour).
fn wh_at(at: u64) -> i64 {
    (at / 3_600) as i64 * 1_000 % 1_000_000_000
}

fn request(g: &mut GatewaySide, out: &[Outgoing], now: u64) -> (MessageId, BackfillRequest) {
    let o = out
        .iter()
        .find(|o| o.topic.ends_with("/backfill-request"))
        .expect("a backfill request");
    let (_, f) = g.open_at(o, now);
    let Body::BackfillRequest(r) = f.body else {
        panic!("not a backfill request")
    };
    (f.header.id, r)
}

fn result(
    g: &mut GatewaySide,
    scope: Scope,
    cmd: MessageId,
    code: u16,
    why: &str,
) -> (String, Vec<u8>) {
    g.seal(
        scope,
        Body::CommandResult(CommandResult {
            command: cmd,
            code,
            reason: Some(why.into()),
        }),
        None,
    )
}

/// Every stored reading of MTR-1: (time, backfilled), in key order.
fn stored(e: &Engine) -> Vec<(u64, bool)> {
    let mut v: Vec<(u64, bool)> = e
        .store()
        .ingested("readings", "MTR-1")
        .unwrap()
        .iter()
        .flat_map(|i| i.body.as_array().cloned().unwrap_or_default())
        .map(|r| {
            (
                r["at"].as_u64().unwrap(),
                r["backfilled"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn a_gap_is_asked_for_once_and_filled_exactly_once() {
    let p = Pilot::new("backfill-fill");
    let he = p.head_end();
    let (mut e, mut g, scope) = online(&p, &he);
    let now = unix_now();
    let t0 = (now / H - 20) * H;
    // Hourly readings, taken a few seconds late, with hours 3, 4 and 5 missing (the uplink was down).
    for k in [0, 1, 2, 6, 7, 8] {
        feed(&mut e, &live(&mut g, scope, t0 + k * H + 4));
    }
    assert_eq!(stored(&e).len(), 6);

    let out = e.deliver_backfill(Some("MTR-1"), now);
    let (cmd, req) = request(&mut g, &out, now);
    assert_eq!(
        req,
        BackfillRequest {
            from: t0 + 3 * H + 4,
            to: t0 + 5 * H + 4,
            interval_s: H as u32,
        }
    );
    // One request open at a time: nothing more until it is answered or times out.
    assert!(e.deliver_backfill(Some("MTR-1"), now + 1).is_empty());
    feed(
        &mut e,
        &result(&mut g, scope, cmd, result_code::DONE, "3 intervals queued"),
    );
    let rec = e.store().backfill("MTR-1").unwrap().unwrap();
    assert_eq!(rec.result, Some(result_code::DONE));

    // The meter's frozen data is on the hour: hour 2 overlaps the live reading (4 s later), hours 3
    // to 5 are the gap. Sent twice (a resend under a new message id): stored once.
    let history: Vec<Reading> = (2..=5)
        .map(|k| energy(t0 + k * H, wh_at(t0 + k * H)))
        .collect();
    for _ in 0..2 {
        let msg = g.seal(
            scope,
            Body::Backfill(Backfill {
                request: cmd,
                readings: history.clone(),
                last: true,
            }),
            None,
        );
        feed(&mut e, &msg);
    }
    // The live reading of hour 4 arrives late after all (the outbox kept it): not stored again.
    feed(
        &mut e,
        &g.seal(
            scope,
            Body::Readings(Readings {
                readings: vec![energy(t0 + 4 * H, wh_at(t0 + 4 * H))],
            }),
            None,
        ),
    );

    let s = stored(&e);
    let times: Vec<u64> = s.iter().map(|x| x.0).collect();
    let mut expected: Vec<u64> = [0, 1, 2, 6, 7, 8].iter().map(|k| t0 + k * H + 4).collect();
    expected.extend((3..=5).map(|k| t0 + k * H));
    expected.sort_unstable();
    assert_eq!(times, expected, "each interval once");
    assert_eq!(
        s.iter().filter(|x| x.1).count(),
        3,
        "the three filled are marked backfilled"
    );
    let rec = e.store().backfill("MTR-1").unwrap().unwrap();
    assert_eq!((rec.stored, rec.duplicates), (3, 5));

    // No gap is left: nothing is asked for, even after the result timeout.
    assert!(e.deliver_backfill(Some("MTR-1"), now + 86_400).is_empty());
}

#[test]
fn an_unanswered_request_is_resent_and_a_meter_without_history_is_left_alone() {
    let p = Pilot::new("backfill-unsupported");
    let he = p.head_end();
    let (mut e, mut g, scope) = online(&p, &he);
    let now = unix_now();
    let t0 = (now / H - 10) * H;
    for k in [0, 1, 4, 5] {
        feed(&mut e, &live(&mut g, scope, t0 + k * H));
    }
    let (cmd, req) = request(&mut g, &e.deliver_backfill(Some("MTR-1"), now), now);
    assert_eq!((req.from, req.to), (t0 + 2 * H, t0 + 3 * H));
    // No answer within the result timeout: the same request (same id) again.
    let later = now + 7_200;
    let (again, req2) = request(&mut g, &e.deliver_backfill(Some("MTR-1"), later), later);
    assert_eq!((again, req2), (cmd, req));
    assert_eq!(e.store().backfill("MTR-1").unwrap().unwrap().sends, 2);
    feed(
        &mut e,
        &result(
            &mut g,
            scope,
            cmd,
            result_code::UNSUPPORTED,
            "meter MTR-1 (Modbus) keeps no reading history",
        ),
    );
    let rec = e.store().backfill("MTR-1").unwrap().unwrap();
    assert_eq!(rec.result, Some(result_code::UNSUPPORTED));
    assert!(rec.reason.unwrap().contains("keeps no reading history"));
    // Not asked again within a day (while its security context lives on, so only the pause holds it).
    let answered = rec.result_at.unwrap();
    assert!(e
        .deliver_backfill(Some("MTR-1"), answered + 3_600)
        .is_empty());
}
