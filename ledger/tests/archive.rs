//! Archiving the audit log below an anchor the head-end recorded: the store keeps only what follows,
//! every check still holds from the sealed base, replays are still refused, a base altered afterwards is
//! found, and a failed commit changes nothing.

mod common;

use common::*;
use concentrator_ledger::anchor::{verify_anchored, AuditAnchor};
use concentrator_ledger::archive::{ArchivePolicy, AuditBase, BASE_KEY};
use concentrator_ledger::check::check_store;
use concentrator_ledger::store::{for_each, Batch, Keyspace};
use concentrator_ledger::{
    audit, FaultPlan, FaultyStore, Ledger, LedgerError, MemStore, Reading, Store, TopUpError,
};

fn reading(meter: &str, wh: u64, at: u64) -> Reading {
    Reading {
        meter: meter.into(),
        meter_serial: format!("SN-{meter}"),
        register_wh: wh,
        at,
    }
}

/// Two meters, a token each, a day of quarter-hour readings.
fn busy<S: Store>(l: &mut Ledger<S>, pki: &concentrator_ledger::testkit::TestPki, day: u64) {
    for (i, meter) in ["M1", "M2"].iter().enumerate() {
        let serial = 1 + day * 2 + i as u64;
        l.apply_token(&token(pki, meter, serial, 1_000), local(day, 0, 5))
            .unwrap();
    }
    for q in 0..96 {
        let at = local(day, 0, 10) + q * 900;
        let wh = 10_000 + day * 9_600 + q * 100;
        l.on_readings(&[reading("M1", wh, at), reading("M2", wh + 60_000, at)])
            .unwrap();
    }
    l.tick(local(day, 23, 59)).unwrap();
    l.flush().unwrap();
}

fn stored_entries(store: &impl Store) -> u64 {
    let mut n = 0;
    for_each(store, Keyspace::Audit, |_, _| {
        n += 1;
        Ok(())
    })
    .unwrap();
    n
}

fn two_meters() -> (
    Ledger<MemStore>,
    MemStore,
    concentrator_ledger::testkit::TestPki,
) {
    let (mut l, store, pki) = ledger_with(config(), 1_500);
    l.open_account(account("M2", 500, 70_000), local(0, 12, 30))
        .unwrap();
    (l, store, pki)
}

#[test]
fn entries_below_an_anchor_leave_the_store_and_every_check_goes_on_from_the_base() {
    let (mut l, store, pki) = two_meters();
    let early = token(&pki, "M1", 100, 700);
    l.apply_token(&early, local(1, 0, 0)).unwrap();
    busy(&mut l, &pki, 1);
    let anchor = AuditAnchor::of(&l.audit_head());
    busy(&mut l, &pki, 2);
    let before = check_store(&store).unwrap();
    let total = before.audit.entries;
    assert!(anchor.len > 150, "a day of readings: {}", anchor.len);

    let dir = std::env::temp_dir().join(format!("ledger-archive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let policy = ArchivePolicy {
        dir: Some(dir.clone()),
        ..ArchivePolicy::default()
    };
    let report = l.archive_through(&anchor, &policy, local(3, 1, 0)).unwrap();
    assert_eq!(report.entries, anchor.len);
    assert_eq!(report.base_len, anchor.len);
    // Out of the store, into the file: 8 + 4 octets of framing per entry.
    assert_eq!(stored_entries(&store), total - anchor.len + 1);
    let file = report.file.expect("an archive file");
    let framed = std::fs::metadata(&file).unwrap().len();
    assert!(framed > anchor.len * (12 + 32), "{framed} octets");

    // The whole chain still counts, every balance and serial still recomputes, both anchors hold.
    let after = check_store(&store).unwrap();
    assert_eq!(after.audit.entries, total + 1);
    assert_eq!(after.meters, before.meters);
    verify_anchored(&store, &anchor).unwrap();
    verify_anchored(&store, &AuditAnchor::of(&l.audit_head())).unwrap();

    // A token applied before the archive is still a replay; new work goes on and checks.
    let again = l.apply_token(&early, local(3, 2, 0));
    assert!(
        matches!(again, Err(TopUpError::Replayed { .. })),
        "{again:?}"
    );
    let other = l.apply_token(&token(&pki, "M1", 3, 1_000), local(3, 2, 0));
    assert!(
        matches!(other, Err(TopUpError::SerialConflict { .. })),
        "{other:?}"
    );
    busy(&mut l, &pki, 3);
    check_store(&store).unwrap();

    // Reopened on the archived store, the ledger carries on where it was.
    let head = l.audit_head();
    drop(l);
    let mut l = open(store.clone(), config(), &pki);
    assert_eq!(l.audit_head(), head);
    busy(&mut l, &pki, 4);
    check_store(&store).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_large_backlog_is_archived_in_steps_each_sealed() {
    let (mut l, store, pki) = two_meters();
    busy(&mut l, &pki, 1);
    busy(&mut l, &pki, 2);
    let anchor = AuditAnchor::of(&l.audit_head());
    let policy = ArchivePolicy {
        max_entries: 100,
        ..ArchivePolicy::default()
    };
    let mut steps = 0;
    loop {
        let r = l
            .archive_through(&anchor, &policy, local(3, 0, steps))
            .unwrap();
        if r.entries == 0 {
            break;
        }
        assert!(r.entries <= 100);
        steps += 1;
        check_store(&store).unwrap();
    }
    assert_eq!(
        AuditBase::load(&store).unwrap().unwrap().len,
        anchor.len,
        "the base reaches the anchor"
    );
    assert!(steps >= 4, "{steps} steps");
    verify_anchored(&store, &anchor).unwrap();
}

#[test]
fn an_altered_base_or_an_anchor_off_the_chain_is_refused() {
    let (mut l, store, pki) = two_meters();
    busy(&mut l, &pki, 1);
    let good = AuditAnchor::of(&l.audit_head());
    busy(&mut l, &pki, 2);

    let mut forged = good;
    forged.head[0] ^= 1;
    let e = l
        .archive_through(&forged, &ArchivePolicy::default(), local(3, 0, 0))
        .unwrap_err();
    assert!(
        e.to_string().contains("not the entry the anchor recorded"),
        "{e}"
    );
    assert!(
        AuditBase::load(&store).unwrap().is_none(),
        "nothing archived"
    );

    let beyond = AuditAnchor {
        len: l.audit_head().next_seq + 5,
        head: [0; 32],
    };
    assert!(l
        .archive_through(&beyond, &ArchivePolicy::default(), local(3, 0, 1))
        .is_err());

    l.archive_through(&good, &ArchivePolicy::default(), local(3, 0, 2))
        .unwrap();
    check_store(&store).unwrap();
    // Someone adds credit to the base: the chain's seal no longer matches it.
    let mut base = AuditBase::load(&store).unwrap().unwrap();
    base.meters.get_mut("M1").unwrap().balance_minor += 10_000;
    let mut b = Batch::new();
    b.put(Keyspace::Meta, BASE_KEY, base.encode());
    store.commit(&b).unwrap();
    let e = audit::verify(&store).unwrap_err();
    assert!(
        matches!(&e, LedgerError::Audit(_)) || e.to_string().contains("archive base"),
        "{e}"
    );
    assert!(e.to_string().contains("archive base"), "{e}");
}

#[test]
fn a_failed_commit_archives_nothing_and_the_archive_budget_deletes_the_oldest_files() {
    let pki = pki();
    let store = FaultyStore::new(MemStore::new());
    let mut l = open(store.clone(), config(), &pki);
    l.open_account(account("M1", 1_500, 10_000), local(0, 12, 0))
        .unwrap();
    l.open_account(account("M2", 500, 70_000), local(0, 12, 30))
        .unwrap();
    busy(&mut l, &pki, 1);
    let first = AuditAnchor::of(&l.audit_head());
    busy(&mut l, &pki, 2);
    let before = check_store(&store).unwrap();

    let dir = std::env::temp_dir().join(format!("ledger-archive-budget-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let policy = ArchivePolicy {
        dir: Some(dir.clone()),
        keep_bytes: 1,
        ..ArchivePolicy::default()
    };
    store.set_plan(FaultPlan {
        fail_commits: true,
        ..FaultPlan::default()
    });
    assert!(l.archive_through(&first, &policy, local(3, 0, 0)).is_err());
    store.set_plan(FaultPlan::default());
    assert!(AuditBase::load(&store).unwrap().is_none());
    assert_eq!(check_store(&store).unwrap(), before);

    // The file written before the failed commit is written again under the same name.
    let one = l.archive_through(&first, &policy, local(3, 0, 1)).unwrap();
    busy(&mut l, &pki, 3);
    let second = AuditAnchor::of(&l.audit_head());
    let two = l.archive_through(&second, &policy, local(4, 0, 0)).unwrap();
    assert_eq!(two.deleted, vec![one.file.clone().unwrap()]);
    assert!(two.file.as_ref().unwrap().exists());
    check_store(&store).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The daemon's way: the head-end confirms an anchor, the ledger keeps it (only if it is on this chain,
/// only if newer), and `archive_due` archives below it only what is older than the time kept online.
#[test]
fn a_confirmed_anchor_is_kept_once_on_this_chain_and_only_the_old_part_below_it_is_archived() {
    use concentrator_ledger::archive::AnchorKept;
    let (mut l, store, pki) = two_meters();
    let policy = ArchivePolicy::default();
    // Nothing confirmed: nothing is due.
    busy(&mut l, &pki, 1);
    assert!(l.archive_due(0, &policy, local(2, 0, 0)).unwrap().is_none());

    // An anchor off this chain (another store's), or beyond the head, is refused and not kept.
    let head = AuditAnchor::of(&l.audit_head());
    let forged = AuditAnchor {
        len: head.len - 3,
        head: [0x42; 32],
    };
    let e = l.keep_confirmed_anchor(&forged).unwrap_err();
    assert!(e.to_string().contains(&(head.len - 4).to_string()), "{e}");
    let beyond = AuditAnchor {
        len: head.len + 10,
        head: [0; 32],
    };
    assert!(l.keep_confirmed_anchor(&beyond).is_err());
    assert_eq!(l.confirmed_anchor().unwrap(), None);

    // Day 2 follows; the head-end confirms the anchor of the end of day 2.
    busy(&mut l, &pki, 2);
    let day2 = AuditAnchor::of(&l.audit_head());
    assert_eq!(l.keep_confirmed_anchor(&day2).unwrap(), AnchorKept::Kept);
    assert_eq!(
        l.keep_confirmed_anchor(&head).unwrap(),
        AnchorKept::AlreadyKept
    );
    assert_eq!(
        l.keep_confirmed_anchor(&day2).unwrap(),
        AnchorKept::AlreadyKept
    );
    busy(&mut l, &pki, 3);

    // Keeping a day online on day 3 at 01:00: day 1 and what came before go, day 2 stays.
    let report = l
        .archive_due(86_400, &policy, local(3, 1, 0))
        .unwrap()
        .expect("day 1 is due");
    let base = AuditBase::load(&store).unwrap().unwrap();
    assert_eq!(base.len, report.base_len);
    assert!(base.len < day2.len && base.len > 150, "{base:?}");
    check_store(&store).unwrap();
    // Again at once: nothing more is due until time passes; a week later all below the anchor goes.
    assert!(l
        .archive_due(86_400, &policy, local(3, 1, 1))
        .unwrap()
        .is_none_or(|r| r.entries == 0));
    let later = l
        .archive_due(86_400, &policy, local(10, 0, 0))
        .unwrap()
        .expect("the rest below the anchor");
    assert_eq!(later.base_len, day2.len);
    verify_anchored(&store, &day2).unwrap();
    check_store(&store).unwrap();

    // The kept anchor survives a reopen.
    drop(l);
    let l = open(store.clone(), config(), &pki);
    assert_eq!(l.confirmed_anchor().unwrap(), Some(day2));
}
