//! Users, enrolment codes and device records in the store, on a real RocksDB.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use switchboard_hub::store::*;

fn open_at(dir: &tempfile::TempDir, now: Arc<AtomicU64>) -> Store {
    Store::open_with_clock(
        StoreConfig::new(dir.path()),
        Box::new(move || now.load(Ordering::Relaxed)),
    )
    .unwrap()
}

#[test]
fn a_user_is_created_once_and_listed_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_at(&dir, Arc::new(AtomicU64::new(1_000)));
    let bob = store.create_user("bob@example.org").wait().unwrap();
    store.create_user("alice@example.org").wait().unwrap();
    assert_eq!(bob.status, UserStatus::Active);
    assert_eq!(bob.created_ms, 1_000);
    assert_eq!(store.queue_id("bob@example.org").unwrap(), Some(bob.queue));
    assert!(matches!(
        store.create_user("bob@example.org").wait(),
        Err(StoreError::Exists(name)) if name == "bob@example.org"
    ));
    let names: Vec<String> = store.users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["alice@example.org", "bob@example.org"]);
    assert_eq!(store.user("bob@example.org").unwrap(), Some(bob));
    assert_eq!(store.user("nobody@example.org").unwrap(), None);
}

#[test]
fn a_code_enrols_one_device_and_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_at(&dir, Arc::new(AtomicU64::new(1_000)));
    let bob = store.create_user("bob@example.org").wait().unwrap();
    store.issue_code(bob.queue, "CODE-1", 2_000).wait().unwrap();
    let phone = store.enrol_device(bob.queue, "bob@example.org/phone", [1; 32], "CODE-1");
    let phone = phone.wait().unwrap();
    assert_eq!(phone.public_key, [1; 32]);
    assert!(!phone.revoked);
    assert_eq!(store.readers(bob.queue).unwrap(), vec![phone.device]);
    let again = store.enrol_device(bob.queue, "bob@example.org/laptop", [2; 32], "CODE-1");
    assert!(matches!(again.wait(), Err(StoreError::EnrolmentRefused(_))));
    assert_eq!(store.device_record("bob@example.org/phone").unwrap(), Some(phone));
    assert_eq!(store.device_record("bob@example.org/laptop").unwrap(), None);
}

#[test]
fn two_enrolments_with_one_code_in_the_same_batch_admit_only_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_at(&dir, Arc::new(AtomicU64::new(1_000)));
    let bob = store.create_user("bob@example.org").wait().unwrap();
    store.issue_code(bob.queue, "CODE", 2_000).wait().unwrap();
    let pending: Vec<_> = (0..8)
        .map(|i| store.enrol_device(bob.queue, &format!("bob@example.org/d{i}"), [i; 32], "CODE"))
        .collect();
    let admitted = pending.into_iter().filter_map(|p| p.wait().ok()).count();
    assert_eq!(admitted, 1);
    assert_eq!(store.device_records(Some("bob@example.org")).unwrap().len(), 1);
}

#[test]
fn an_expired_or_foreign_code_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(1_000));
    let store = open_at(&dir, now.clone());
    let bob = store.create_user("bob@example.org").wait().unwrap();
    let carol = store.create_user("carol@example.org").wait().unwrap();
    store.issue_code(bob.queue, "BOB", 2_000).wait().unwrap();
    let foreign = store.enrol_device(carol.queue, "carol@example.org/x", [3; 32], "BOB");
    assert!(matches!(foreign.wait(), Err(StoreError::EnrolmentRefused(_))));
    now.store(2_000, Ordering::Relaxed);
    let late = store.enrol_device(bob.queue, "bob@example.org/x", [3; 32], "BOB");
    assert!(matches!(late.wait(), Err(StoreError::EnrolmentRefused("the code has expired"))));
}

#[test]
fn a_device_name_is_enrolled_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_at(&dir, Arc::new(AtomicU64::new(1_000)));
    let bob = store.create_user("bob@example.org").wait().unwrap();
    store.issue_code(bob.queue, "A", 9_000).wait().unwrap();
    store.enrol_device(bob.queue, "bob@example.org/phone", [1; 32], "A").wait().unwrap();
    store.issue_code(bob.queue, "B", 9_000).wait().unwrap();
    let twice = store.enrol_device(bob.queue, "bob@example.org/phone", [2; 32], "B");
    assert!(matches!(twice.wait(), Err(StoreError::Exists(_))));
    // The refused enrolment did not spend its code.
    store.enrol_device(bob.queue, "bob@example.org/tablet", [2; 32], "B").wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_stops_reading_and_stays_revoked_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(1_000));
    let store = open_at(&dir, now.clone());
    let bob = store.create_user("bob@example.org").await.unwrap();
    store.issue_code(bob.queue, "A", 9_000).await.unwrap();
    let phone = store.enrol_device(bob.queue, "bob@example.org/phone", [1; 32], "A").await;
    let phone = phone.unwrap();
    let revoked = store.revoke_device("bob@example.org/phone").await.unwrap();
    assert!(revoked.revoked);
    assert!(store.readers(bob.queue).unwrap().is_empty());
    // Revoking again is harmless; an unknown name is a typed error.
    assert!(store.revoke_device("bob@example.org/phone").await.unwrap().revoked);
    assert!(matches!(
        store.revoke_device("bob@example.org/none").await,
        Err(StoreError::UnknownDeviceName(_))
    ));
    store.close();
    let store = open_at(&dir, now);
    let record = store.device_record("bob@example.org/phone").unwrap().unwrap();
    assert!(record.revoked);
    assert_eq!(record.device, phone.device);
    assert_eq!(store.users().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_an_account_deactivates_the_user_and_deletes_what_waits_in_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_at(&dir, Arc::new(AtomicU64::new(1_000)));
    let bob = store.create_user("bob@example.org").await.unwrap();
    for id in 1..=3u128 {
        let request = EnqueueRequest {
            id,
            sender: bytes::Bytes::from_static(b"alice@example.org"),
            expires_ms: u64::MAX,
            payload: bytes::Bytes::from_static(b"waiting"),
        };
        store.enqueue(bob.queue, request).await.unwrap();
    }
    assert_eq!(store.read_after(bob.queue, 0, 10).unwrap().len(), 3);
    let closed = store.close_account("bob@example.org").await.unwrap();
    assert_eq!(closed.status, UserStatus::Deactivated);
    assert!(store.read_after(bob.queue, 0, 10).unwrap().is_empty());
    assert_eq!(store.user("bob@example.org").unwrap().unwrap().status, UserStatus::Deactivated);
    // Closing again is harmless; an unknown user is a typed error.
    store.close_account("bob@example.org").await.unwrap();
    assert!(matches!(
        store.close_account("nobody@example.org").await,
        Err(StoreError::UnknownUser(_))
    ));
}

#[test]
fn a_new_enrolment_code_retires_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_at(&dir, Arc::new(AtomicU64::new(1_000)));
    let bob = store.create_user("bob@example.org").wait().unwrap();
    let other = store.create_user("eve@example.org").wait().unwrap();
    store.issue_code(other.queue, "E", 9_000).wait().unwrap();
    store.issue_code(bob.queue, "A", 9_000).wait().unwrap();
    store.issue_code(bob.queue, "B", 9_000).wait().unwrap();
    let old = store.enrol_device(bob.queue, "bob@example.org/phone", [1; 32], "A");
    assert!(matches!(old.wait(), Err(StoreError::EnrolmentRefused(_))));
    store.enrol_device(bob.queue, "bob@example.org/phone", [1; 32], "B").wait().unwrap();
    // Another user's code is untouched.
    store.enrol_device(other.queue, "eve@example.org/phone", [2; 32], "E").wait().unwrap();
    // Retired across a restart too.
    store.issue_code(bob.queue, "C", 9_000).wait().unwrap();
    store.issue_code(bob.queue, "D", 9_000).wait().unwrap();
    drop(store);
    let store = open_at(&dir, Arc::new(AtomicU64::new(1_000)));
    let retired = store.enrol_device(bob.queue, "bob@example.org/tablet", [3; 32], "C");
    assert!(matches!(retired.wait(), Err(StoreError::EnrolmentRefused(_))));
    store.enrol_device(bob.queue, "bob@example.org/tablet", [3; 32], "D").wait().unwrap();
}
