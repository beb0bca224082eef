//! Every store operation, on a real RocksDB in a temporary directory.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use switchboard_hub::store::*;

const FAR: u64 = u64::MAX;

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(StoreConfig::new(dir.path())).unwrap()
}

/// A message; an id without a time part (a small number) gets this run's start time, as real
/// ids carry their creation time. Ids from 1970 are older than the dedupe window, and a store
/// forgets those at its first sweep: a slow test could see a duplicate accepted as new.
fn msg(id: u128, body: &str) -> EnqueueRequest {
    static START: OnceLock<u128> = OnceLock::new();
    let id = if id >> 80 == 0 {
        *START.get_or_init(|| u128::from(system_clock_ms()) << 80) | id
    } else {
        id
    };
    EnqueueRequest {
        id,
        sender: Bytes::from_static(b"alice@example.org"),
        expires_ms: FAR,
        payload: Bytes::copy_from_slice(body.as_bytes()),
    }
}

fn bodies(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(|e| String::from_utf8(e.payload.to_vec()).unwrap()).collect()
}

#[test]
fn create_queue_is_idempotent_by_name_and_ids_differ_between_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let bob = store.create_queue("bob@example.org").wait().unwrap();
    assert_eq!(store.create_queue("bob@example.org").wait().unwrap(), bob);
    let carol = store.create_queue("carol@example.org").wait().unwrap();
    assert_ne!(bob, carol);
    assert_eq!(store.queue_id("bob@example.org").unwrap(), Some(bob));
    assert_eq!(store.queue_id("nobody@example.org").unwrap(), None);
    assert!(matches!(store.create_queue("").wait(), Err(StoreError::InvalidName(_))));
}

#[test]
fn enqueue_assigns_increasing_sequences_and_read_returns_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let d = store.add_device(q).wait().unwrap();
    for i in 1..=5u128 {
        let done = store.enqueue(q, msg(i, &format!("m{i}"))).wait().unwrap();
        assert_eq!(done, Enqueued { seq: i as u64, duplicate: false });
    }
    let entries = store.read(q, d, 10).unwrap();
    assert_eq!(bodies(&entries), ["m1", "m2", "m3", "m4", "m5"]);
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(bodies(&store.read(q, d, 2).unwrap()), ["m1", "m2"]);
}

#[test]
fn same_sender_and_id_twice_appends_once_and_answers_the_first_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let d = store.add_device(q).wait().unwrap();
    store.enqueue(q, msg(1, "first")).wait().unwrap();
    let again = store.enqueue(q, msg(1, "first again")).wait().unwrap();
    assert_eq!(again, Enqueued { seq: 1, duplicate: true });
    let mut other_sender = msg(1, "same id, other sender");
    other_sender.sender = Bytes::from_static(b"carol@example.org");
    assert_eq!(
        store.enqueue(q, other_sender).wait().unwrap(),
        Enqueued { seq: 2, duplicate: false }
    );
    assert_eq!(bodies(&store.read(q, d, 10).unwrap()), ["first", "same id, other sender"]);
}

#[test]
fn duplicates_within_one_group_commit_are_dropped_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let pending: Vec<_> = (0..50).map(|_| store.enqueue(q, msg(7, "x"))).collect();
    let results: Vec<Enqueued> = pending.into_iter().map(|p| p.wait().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| !r.duplicate).count(), 1);
    assert!(results.iter().all(|r| r.seq == 1));
    assert_eq!(store.stats(q).unwrap().last_seq, 1);
}

#[test]
fn a_duplicate_is_found_after_the_in_memory_records_forgot_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    // A few records per shard: most of the ids below are forgotten in memory and looked up
    // on disk when they come again.
    config.dedupe_memory = 8;
    let store = Store::open(config).unwrap();
    let q = store.create_queue("bob@example.org").wait().unwrap();
    // Ids of the present: ids older than the dedupe window are forgotten by the first sweep.
    let now = u128::from(switchboard_hub::store::system_clock_ms());
    let id = |n: u128| (now << 80) | n;
    for n in 1..=100 {
        assert_eq!(store.enqueue(q, msg(id(n), "x")).wait().unwrap().seq, n as u64);
    }
    for n in [1, 2, 50, 99, 100] {
        assert_eq!(
            store.enqueue(q, msg(id(n), "again")).wait().unwrap(),
            Enqueued { seq: n as u64, duplicate: true },
            "id {n}"
        );
    }
    assert_eq!(store.stats(q).unwrap().last_seq, 100);
}

#[test]
fn each_device_has_its_own_cursor_and_ack_hides_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let phone = store.add_device(q).wait().unwrap();
    let laptop = store.add_device(q).wait().unwrap();
    for i in 1..=4 {
        store.enqueue(q, msg(i, &format!("m{i}"))).wait().unwrap();
    }
    store.ack(q, phone, 3, vec![]).wait().unwrap();
    assert_eq!(bodies(&store.read(q, phone, 10).unwrap()), ["m4"]);
    assert_eq!(bodies(&store.read(q, laptop, 10).unwrap()), ["m1", "m2", "m3", "m4"]);
    assert_eq!(store.cursor(q, phone).unwrap(), Cursor { acked: 3, selective: vec![] });
}

#[test]
fn selective_acks_are_skipped_by_reads_and_merge_when_the_gap_closes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let d = store.add_device(q).wait().unwrap();
    for i in 1..=5 {
        store.enqueue(q, msg(i, &format!("m{i}"))).wait().unwrap();
    }
    let cursor = store.ack(q, d, 1, vec![3, 4]).wait().unwrap();
    assert_eq!(cursor, Cursor { acked: 1, selective: vec![3, 4] });
    assert_eq!(bodies(&store.read(q, d, 10).unwrap()), ["m2", "m5"]);
    let cursor = store.ack(q, d, 2, vec![]).wait().unwrap();
    assert_eq!(cursor, Cursor { acked: 4, selective: vec![] });
    assert_eq!(bodies(&store.read(q, d, 10).unwrap()), ["m5"]);
}

#[test]
fn entries_are_trimmed_only_when_every_reader_acknowledged_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let a = store.add_device(q).wait().unwrap();
    let b = store.add_device(q).wait().unwrap();
    for i in 1..=4 {
        store.enqueue(q, msg(i, "x")).wait().unwrap();
    }
    store.ack(q, a, 4, vec![]).wait().unwrap();
    assert_eq!(store.stats(q).unwrap().floor, 0);
    assert_eq!(store.read_after(q, 0, 10).unwrap().len(), 4);
    store.ack(q, b, 2, vec![]).wait().unwrap();
    assert_eq!(store.stats(q).unwrap(), QueueStats { last_seq: 4, floor: 2 });
    assert_eq!(
        store.read_after(q, 0, 10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 4]
    );
}

#[test]
fn a_queue_without_readers_keeps_its_messages_for_the_first_device() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let q = store.create_queue("bob@example.org").wait().unwrap();
    store.enqueue(q, msg(1, "early")).wait().unwrap();
    let d = store.add_device(q).wait().unwrap();
    assert_eq!(bodies(&store.read(q, d, 10).unwrap()), ["early"]);
}

#[test]
fn line_subscription_reads_with_its_own_cursor_and_costs_one_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let line = store.create_queue("sales@example.org").wait().unwrap();
    let mut devices = Vec::new();
    for i in 0..20 {
        let user = store.create_queue(&format!("u{i}@example.org")).wait().unwrap();
        let d = store.add_device(user).wait().unwrap();
        store.subscribe(d, line, StartAt::Next).wait().unwrap();
        devices.push((user, d));
    }
    let batches_before = store.metrics().batches.load(Ordering::Relaxed);
    store.enqueue(line, msg(1, "to all of sales")).wait().unwrap();
    assert_eq!(store.metrics().enqueued.load(Ordering::Relaxed), 1);
    assert_eq!(store.metrics().batches.load(Ordering::Relaxed), batches_before + 1);
    for (user, d) in &devices {
        assert_eq!(bodies(&store.read(line, *d, 10).unwrap()), ["to all of sales"]);
        assert!(store.read(*user, *d, 10).unwrap().is_empty());
        assert_eq!(store.subscriptions(*d).unwrap().len(), 2);
    }
    assert_eq!(store.readers(line).unwrap().len(), 20);
    // The line's entry goes once the last member device acknowledges it.
    for (_, d) in &devices[..19] {
        store.ack(line, *d, 1, vec![]).wait().unwrap();
    }
    assert_eq!(store.stats(line).unwrap().floor, 0);
    store.ack(line, devices[19].1, 1, vec![]).wait().unwrap();
    assert_eq!(store.stats(line).unwrap().floor, 1);
}

#[test]
fn subscribing_at_next_skips_the_backlog_and_oldest_includes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let line = store.create_queue("sales@example.org").wait().unwrap();
    let user = store.create_queue("u@example.org").wait().unwrap();
    let old = store.add_device(user).wait().unwrap();
    store.subscribe(old, line, StartAt::Next).wait().unwrap();
    store.enqueue(line, msg(1, "before")).wait().unwrap();
    let late = store.add_device(user).wait().unwrap();
    let later = store.add_device(user).wait().unwrap();
    store.subscribe(late, line, StartAt::Next).wait().unwrap();
    store.subscribe(later, line, StartAt::Oldest).wait().unwrap();
    store.enqueue(line, msg(2, "after")).wait().unwrap();
    assert_eq!(bodies(&store.read(line, late, 10).unwrap()), ["after"]);
    assert_eq!(bodies(&store.read(line, later, 10).unwrap()), ["before", "after"]);
}

#[test]
fn unsubscribing_the_slowest_reader_lets_the_queue_trim() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let line = store.create_queue("sales@example.org").wait().unwrap();
    let u = store.create_queue("u@example.org").wait().unwrap();
    let fast = store.add_device(u).wait().unwrap();
    let slow = store.add_device(u).wait().unwrap();
    store.subscribe(fast, line, StartAt::Next).wait().unwrap();
    store.subscribe(slow, line, StartAt::Next).wait().unwrap();
    store.enqueue(line, msg(1, "x")).wait().unwrap();
    store.ack(line, fast, 1, vec![]).wait().unwrap();
    assert_eq!(store.stats(line).unwrap().floor, 0);
    store.unsubscribe(slow, line).wait().unwrap();
    assert_eq!(store.stats(line).unwrap().floor, 1);
    assert!(matches!(store.read(line, slow, 10), Err(StoreError::NotSubscribed { .. })));
    assert_eq!(store.subscriptions(slow).unwrap(), vec![u]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_device_unsubscribes_it_everywhere_and_forgets_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let u = store.create_queue("u@example.org").await.unwrap();
    let line = store.create_queue("sales@example.org").await.unwrap();
    let d = store.add_device(u).await.unwrap();
    store.subscribe(d, line, StartAt::Next).await.unwrap();
    store.remove_device(d).await.unwrap();
    assert!(store.subscriptions(d).unwrap().is_empty());
    assert!(store.readers(line).unwrap().is_empty());
    assert_eq!(store.device_account(d).unwrap(), None);
    assert_eq!(store.subscribe(d, line, StartAt::Next).await, Err(StoreError::UnknownDevice(d)));
}

#[test]
fn bad_ids_and_acks_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let d = store.add_device(q).wait().unwrap();
    let other = store.create_queue("carol@example.org").wait().unwrap();
    store.enqueue(q, msg(1, "x")).wait().unwrap();
    let missing = QueueId(999_999);
    assert_eq!(store.enqueue(missing, msg(2, "x")).wait(), Err(StoreError::UnknownQueue(missing)));
    assert_eq!(store.add_device(missing).wait(), Err(StoreError::UnknownQueue(missing)));
    assert_eq!(
        store.ack(q, d, 5, vec![]).wait(),
        Err(StoreError::AckBeyondTail { queue: q, seq: 5, last: 1 })
    );
    assert_eq!(
        store.ack(other, d, 0, vec![]).wait(),
        Err(StoreError::NotSubscribed { queue: other, device: d })
    );
    assert_eq!(
        store.subscribe(DeviceId(12345), q, StartAt::Next).wait(),
        Err(StoreError::UnknownDevice(DeviceId(12345)))
    );
    // Nothing of the refused operations changed the queue.
    assert_eq!(store.stats(q).unwrap(), QueueStats { last_seq: 1, floor: 0 });
}

#[test]
fn selective_acks_past_the_limit_are_refused_and_the_cursor_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.max_selective = 2;
    let store = Store::open(config).unwrap();
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let d = store.add_device(q).wait().unwrap();
    for i in 1..=6 {
        store.enqueue(q, msg(i, "x")).wait().unwrap();
    }
    assert_eq!(
        store.ack(q, d, 0, vec![2, 4, 6]).wait(),
        Err(StoreError::TooManySelectiveAcks { limit: 2 })
    );
    assert_eq!(store.cursor(q, d).unwrap(), Cursor::default());
}

#[test]
fn backlog_limit_refuses_new_messages_until_readers_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.backlog_limit = 3;
    let store = Store::open(config).unwrap();
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let d = store.add_device(q).wait().unwrap();
    for i in 1..=3 {
        store.enqueue(q, msg(i, "x")).wait().unwrap();
    }
    assert_eq!(
        store.enqueue(q, msg(4, "x")).wait(),
        Err(StoreError::BacklogFull { queue: q, backlog: 3 })
    );
    // A duplicate of an accepted message is still answered, not refused.
    assert_eq!(store.enqueue(q, msg(3, "x")).wait(), Ok(Enqueued { seq: 3, duplicate: true }));
    store.ack(q, d, 2, vec![]).wait().unwrap();
    assert_eq!(store.enqueue(q, msg(4, "x")).wait(), Ok(Enqueued { seq: 4, duplicate: false }));
}

#[test]
fn a_batch_of_acknowledgements_alone_is_written_without_an_fsync_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let d = store.add_device(q).wait().unwrap();
    let synced = |store: &Store| store.metrics().synced_batches.load(Ordering::Relaxed);
    let batches = |store: &Store| store.metrics().batches.load(Ordering::Relaxed);
    let before = synced(&store);
    store.enqueue(q, msg(1, "a")).wait().unwrap();
    store.enqueue(q, msg(2, "b")).wait().unwrap();
    assert_eq!(synced(&store), before + 2, "a message is acknowledged only after an fsync");
    let (synced_before, batches_before) = (synced(&store), batches(&store));
    store.ack(q, d, 1, vec![]).wait().unwrap();
    assert_eq!(batches(&store), batches_before + 1);
    assert_eq!(synced(&store), synced_before, "an ack alone is not fsynced");
    store.close();
    let store = open(&dir);
    assert_eq!(store.cursor(q, d).unwrap().acked, 1, "the ack was written all the same");
    assert_eq!(store.read(q, d, 10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
}

#[test]
fn a_log_append_is_atomic_in_order_outside_the_backlog_limit_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.backlog_limit = 3;
    let store = Store::open(config.clone()).unwrap();
    let log = store.create_queue("org:events").wait().unwrap();
    let first: Vec<Bytes> = (1..=5).map(|i| Bytes::from(format!("event {i}"))).collect();
    assert_eq!(store.append_log(log, first).wait(), Ok(vec![1, 2, 3, 4, 5]));
    assert_eq!(store.append_log(log, vec![Bytes::from("event 6")]).wait(), Ok(vec![6]));
    // An ordinary message to the same queue is held to the limit.
    assert!(matches!(store.enqueue(log, msg(1, "x")).wait(), Err(StoreError::BacklogFull { .. })));
    // With the disk budget used up, nothing of a group is written.
    store.set_disk_budget(Some(1));
    store.measure_disk();
    let refused = vec![Bytes::from("event 7"), Bytes::from("event 8")];
    assert!(matches!(store.append_log(log, refused).wait(), Err(StoreError::DiskFull { .. })));
    store.close();

    let store = Store::open(config).unwrap();
    let entries = store.read_after(log, 0, 100).unwrap();
    let bodies: Vec<&[u8]> = entries.iter().map(|e| &e.payload[..]).collect();
    let expected: Vec<String> = (1..=6).map(|i| format!("event {i}")).collect();
    assert_eq!(bodies, expected.iter().map(|e| e.as_bytes()).collect::<Vec<_>>());
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
}

#[test]
fn disk_budget_refuses_new_messages_keeps_old_ones_and_recovers_when_raised() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let d = store.add_device(q).wait().unwrap();
    store.enqueue(q, msg(1, "kept")).wait().unwrap();
    store.set_disk_budget(Some(1));
    assert!(matches!(
        store.enqueue(q, msg(2, "refused")).wait(),
        Err(StoreError::DiskFull { budget: 1, .. })
    ));
    assert_eq!(bodies(&store.read(q, d, 10).unwrap()), ["kept"]);
    // Acks free space and keep working while the budget is exhausted.
    store.ack(q, d, 1, vec![]).wait().unwrap();
    store.set_disk_budget(None);
    assert_eq!(store.enqueue(q, msg(2, "accepted")).wait().unwrap().seq, 2);
}

#[test]
fn sequences_continue_after_reopen_without_reuse_even_when_all_was_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let (q, d) = {
        let store = open(&dir);
        let q = store.create_queue("bob@example.org").wait().unwrap();
        let d = store.add_device(q).wait().unwrap();
        for i in 1..=3 {
            store.enqueue(q, msg(i, "x")).wait().unwrap();
        }
        store.ack(q, d, 3, vec![]).wait().unwrap();
        store.close();
        (q, d)
    };
    let store = open(&dir);
    assert_eq!(store.stats(q).unwrap(), QueueStats { last_seq: 3, floor: 3 });
    assert_eq!(store.enqueue(q, msg(10, "next")).wait().unwrap().seq, 4);
    assert_eq!(bodies(&store.read(q, d, 10).unwrap()), ["next"]);
    // Dedupe survives the restart too.
    assert_eq!(store.enqueue(q, msg(2, "x")).wait().unwrap(), Enqueued { seq: 2, duplicate: true });
    // New ids after a restart do not collide with old ones.
    let q2 = store.create_queue("carol@example.org").wait().unwrap();
    assert_ne!(q2, q);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entries_are_not_read_and_are_swept_from_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(1_000_000));
    let clock = now.clone();
    let store = Store::open_with_clock(
        StoreConfig::new(dir.path()),
        Box::new(move || clock.load(Ordering::Relaxed)),
    )
    .unwrap();
    let q = store.create_queue("bob@example.org").await.unwrap();
    let d = store.add_device(q).await.unwrap();
    for (i, expires) in [(1u128, 1_000_500u64), (2, 1_000_600), (3, 5_000_000), (4, 1_000_700)] {
        let mut m = msg(i, &format!("m{i}"));
        m.expires_ms = expires;
        store.enqueue(q, m).await.unwrap();
    }
    now.store(1_000_650, Ordering::Relaxed);
    let read = tokio::task::block_in_place(|| store.read(q, d, 10)).unwrap();
    assert_eq!(bodies(&read), ["m3", "m4"]);
    store.sweep().await.unwrap();
    // The expired head (1, 2) is removed; 4 waits behind 3 but is already unreadable once expired.
    assert_eq!(store.stats(q).unwrap().floor, 2);
    now.store(1_000_800, Ordering::Relaxed);
    let read = tokio::task::block_in_place(|| store.read(q, d, 10)).unwrap();
    assert_eq!(bodies(&read), ["m3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_records_are_forgotten_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(10_000_000));
    let clock = now.clone();
    let mut config = StoreConfig::new(dir.path());
    config.dedupe_window = std::time::Duration::from_secs(60);
    let store =
        Store::open_with_clock(config, Box::new(move || clock.load(Ordering::Relaxed))).unwrap();
    let q = store.create_queue("bob@example.org").await.unwrap();
    // Ids carry their creation time in the top 48 bits.
    let id = (10_000_000u128 << 80) | 1;
    store.enqueue(q, msg(id, "x")).await.unwrap();
    assert!(store.enqueue(q, msg(id, "x")).await.unwrap().duplicate);
    now.store(10_000_000 + 61_000, Ordering::Relaxed);
    store.sweep().await.unwrap();
    assert!(!store.enqueue(q, msg(id, "x")).await.unwrap().duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_queue_for_a_remote_hub_is_read_in_order_and_dropped_after_relay_ack() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let outbound = store.outbound("hub2.example.net").await.unwrap();
    for i in 1..=3 {
        store.enqueue(outbound.queue, msg(i, &format!("r{i}"))).await.unwrap();
    }
    let batch =
        tokio::task::block_in_place(|| store.read(outbound.queue, outbound.link, 10)).unwrap();
    assert_eq!(bodies(&batch), ["r1", "r2", "r3"]);
    store.ack(outbound.queue, outbound.link, batch[1].seq, vec![]).await.unwrap();
    assert_eq!(store.read_after(outbound.queue, 0, 10).unwrap().len(), 1);
    assert_eq!(store.outbound("hub2.example.net").await.unwrap(), outbound);
}

#[test]
fn closing_the_store_completes_every_pending_operation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let pending: Vec<_> = (0..1000).map(|i| store.enqueue(q, msg(i, "x"))).collect();
    store.close();
    for p in pending {
        assert!(!p.wait().unwrap().duplicate);
    }
    let store = open(&dir);
    assert_eq!(store.stats(q).unwrap().last_seq, 1000);
}

#[test]
fn a_read_from_memory_answers_what_a_full_read_answers_or_says_it_cannot() {
    // Bodies larger than a table block, so that each message has blocks of its own: at start
    // a writer reads the newest dedupe record and a sweep reads the head of each queue, which
    // may bring a small table's only block (holding every message) into the cache.
    let body = |i: u128| format!("m{i}{}", ".".repeat(8192));
    let names = |entries: &[Entry]| -> Vec<String> {
        bodies(entries).iter().map(|b| b.trim_end_matches('.').to_string()).collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let q = {
        let store = open(&dir);
        let q = store.create_queue("bob@example.org").wait().unwrap();
        for i in 1..=5 {
            store.enqueue(q, msg(i, &body(i))).wait().unwrap();
        }
        // New messages are in memory (the writer's tails, the memtable): answered from there.
        let cached = store.read_after_cached(q, 2, 10).unwrap().expect("in memory");
        assert_eq!(names(&cached), ["m3", "m4", "m5"]);
        store.flush().unwrap();
        store.close();
        q
    };
    let store = open(&dir);
    let full = store.read_after(q, 0, 10).unwrap();
    assert_eq!(names(&full), ["m1", "m2", "m3", "m4", "m5"]);
    // Now that it was read, its blocks may be cached: a cached read agrees, or says it cannot.
    if let Some(cached) = store.read_after_cached(q, 0, 10).unwrap() {
        assert_eq!(bodies(&cached), bodies(&full));
    }
    // After a restart the messages are only in a table file that nothing has read beyond the
    // head of the queue: a read from memory says it cannot, and the full read answers.
    store.close();
    let store = open(&dir);
    assert!(store.read_after_cached(q, 0, 10).unwrap().is_none());
    assert_eq!(names(&store.read_after(q, 3, 10).unwrap()), ["m4", "m5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_from_a_clock_far_ahead_does_not_send_every_later_dedupe_check_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_000_000_000u64;
    let open_at = |dir: &tempfile::TempDir| {
        Store::open_with_clock(StoreConfig::new(dir.path()), Box::new(move || now)).unwrap()
    };
    let id = |ms: u64, n: u128| (u128::from(ms) << 80) | n;
    let future = id(now + 365 * 24 * 3600 * 1000, 1);
    let q = {
        let store = open_at(&dir);
        let q = store.create_queue("bob@example.org").await.unwrap();
        store.enqueue(q, msg(id(now, 1), "now")).await.unwrap();
        store.enqueue(q, msg(future, "from a year ahead")).await.unwrap();
        store.close();
        q
    };
    let store = open_at(&dir);
    let disk = || store.metrics().dedupe_disk_lookups.load(Ordering::Relaxed);
    // Both earlier ids are still known after the restart.
    assert!(store.enqueue(q, msg(future, "again")).await.unwrap().duplicate);
    assert!(store.enqueue(q, msg(id(now, 1), "again")).await.unwrap().duplicate);
    let before = disk();
    // New ids of the present are checked in memory, not on disk.
    for n in 2..=50 {
        let done = store.enqueue(q, msg(id(now, n), "new")).await.unwrap();
        assert!(!done.duplicate);
    }
    assert_eq!(disk(), before);
    assert_eq!(store.stats(q).unwrap().last_seq, 51);
}

#[test]
fn an_append_with_its_copy_is_one_fsync_and_a_refused_append_writes_no_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.backlog_limit = 2;
    // One shard: every pair of queues is written by one writer.
    config.shards = 1;
    let store = Store::open(config).unwrap();
    let bob = store.create_queue("bob@example.org").wait().unwrap();
    let alice = store.create_queue("alice@example.org").wait().unwrap();
    let (bob_d, alice_d) =
        (store.add_device(bob).wait().unwrap(), store.add_device(alice).wait().unwrap());
    assert!(store.same_shard(bob, alice));
    let synced = |store: &Store| store.metrics().synced_batches.load(Ordering::Relaxed);
    let before = synced(&store);
    let (first, copy) =
        store.enqueue_with_copy(bob, msg(1, "one"), (alice, msg(1, "one"))).wait().unwrap();
    assert_eq!(first, Enqueued { seq: 1, duplicate: false });
    assert_eq!(copy, Ok(Enqueued { seq: 1, duplicate: false }));
    assert_eq!(synced(&store), before + 1, "both appends in one fsynced write");
    let (_, copy) =
        store.enqueue_with_copy(bob, msg(2, "two"), (alice, msg(2, "two"))).wait().unwrap();
    copy.unwrap();
    // Bob's queue is full: the third is refused, and alice's queue does not show it.
    assert_eq!(
        store.enqueue_with_copy(bob, msg(3, "three"), (alice, msg(3, "three"))).wait(),
        Err(StoreError::BacklogFull { queue: bob, backlog: 2 })
    );
    assert_eq!(bodies(&store.read(alice, alice_d, 10).unwrap()), ["one", "two"]);
    // A retry of an accepted send is answered as a duplicate, the copy too.
    let (first, copy) =
        store.enqueue_with_copy(bob, msg(2, "two"), (alice, msg(2, "two"))).wait().unwrap();
    assert_eq!((first.duplicate, copy.map(|c| c.duplicate)), (true, Ok(true)));
    // The copy's own refusal does not refuse the first append.
    store.ack(bob, bob_d, 2, vec![]).wait().unwrap();
    let (first, copy) =
        store.enqueue_with_copy(bob, msg(4, "four"), (alice, msg(4, "four"))).wait().unwrap();
    assert_eq!(first, Enqueued { seq: 3, duplicate: false });
    assert_eq!(copy, Err(StoreError::BacklogFull { queue: alice, backlog: 2 }));
    store.close();
    let store = Store::open({
        let mut config = StoreConfig::new(dir.path());
        config.shards = 1;
        config
    })
    .unwrap();
    assert_eq!(bodies(&store.read(bob, bob_d, 10).unwrap()), ["four"]);
    assert_eq!(bodies(&store.read(alice, alice_d, 10).unwrap()), ["one", "two"]);
}

#[test]
fn with_a_commit_linger_commands_that_come_during_it_share_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.shards = 1;
    // Long enough that the second command comes within it on any machine.
    config.commit_linger = std::time::Duration::from_millis(500);
    let store = Store::open(config).unwrap();
    let q = store.create_queue("bob@example.org").wait().unwrap();
    let synced = |store: &Store| store.metrics().synced_batches.load(Ordering::Relaxed);
    let before = synced(&store);
    let first = store.enqueue(q, msg(1, "a"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = store.enqueue(q, msg(2, "b"));
    assert_eq!(first.wait().unwrap().seq, 1);
    assert_eq!(second.wait().unwrap().seq, 2);
    assert_eq!(synced(&store), before + 1, "both in the first command's batch");
}
