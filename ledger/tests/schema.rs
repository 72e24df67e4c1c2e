//! A store written by the first schema (JSON account records) opens in this build: migrated to the
//! compact records in one step, every account the same, the audit chain untouched.

mod common;

use common::*;
use concentrator_ledger::schema::{stored_version, SCHEMA_KEY, SCHEMA_VERSION};
use concentrator_ledger::store::{for_each, Batch, Keyspace};
use concentrator_ledger::{audit, Store};

#[test]
fn a_version_1_store_with_json_accounts_is_migrated_and_reads_the_same() {
    let (mut l, store, pki) = ledger_with(config(), 1_500);
    l.open_account(account("M2", -300, 77_000), local(0, 13, 0))
        .unwrap();
    l.apply_token(&token(&pki, "M1", 1, 2_000), local(0, 14, 0))
        .unwrap();
    l.flush().unwrap();
    let before = l.accounts().clone();
    let chain = audit::verify(&store).unwrap();
    drop(l);

    // Rewrite the store as the first schema left it: JSON records, version 1.
    let mut keys = Vec::new();
    for_each(&store, Keyspace::Accounts, |k, _| {
        keys.push(k.to_vec());
        Ok(())
    })
    .unwrap();
    assert_eq!(keys.len(), 2);
    let mut v1 = Batch::new();
    for k in &keys {
        let json = serde_json::to_vec(&before[std::str::from_utf8(k).unwrap()]).unwrap();
        v1.put(Keyspace::Accounts, k.clone(), json);
    }
    v1.put(Keyspace::Meta, SCHEMA_KEY, 1u32.to_be_bytes().to_vec());
    store.commit(&v1).unwrap();

    let l = open(store.clone(), config(), &pki);
    assert_eq!(stored_version(&store).unwrap(), Some(SCHEMA_VERSION));
    assert_eq!(l.accounts(), &before);
    for_each(&store, Keyspace::Accounts, |k, v| {
        assert_ne!(v.first(), Some(&b'{'), "{k:?} is still JSON");
        Ok(())
    })
    .unwrap();
    assert_eq!(audit::verify(&store).unwrap(), chain);
}
