//! Helpers shared by the criterion benchmarks in `benches/`.
#![warn(missing_docs, unreachable_pub)]

use std::{
    path::Path,
    sync::{Arc, atomic::Ordering},
};

use bytes::Bytes;
use switchboard_hub::store::{EnqueueRequest, QueueId, Store, StoreConfig};

/// Body size used by the store benchmarks.
pub const BODY_LEN: usize = 256;

/// Opens a store with its defaults in `dir`, except the per-queue backlog limit, which is
/// lifted: the benchmarks append millions of messages nobody reads.
pub fn open_store(dir: &Path) -> Arc<Store> {
    let mut config = StoreConfig::new(dir);
    config.backlog_limit = u64::MAX;
    if let Some(shards) =
        std::env::var("SWITCHBOARD_BENCH_SHARDS").ok().and_then(|v| v.parse().ok())
    {
        config.shards = shards;
    }
    if let Some(mib) =
        std::env::var("SWITCHBOARD_BENCH_MEMTABLE_MIB").ok().and_then(|v| v.parse::<usize>().ok())
    {
        config.memtable_bytes = mib << 20;
    }
    Arc::new(Store::open(config).expect("open store"))
}

/// An enqueue request with a 256-byte body and an id made as a device makes one: the current
/// time in milliseconds, then `n` (unique per call) below it.
pub fn request(n: u128) -> EnqueueRequest {
    static BODY: [u8; BODY_LEN] = [0x5a; BODY_LEN];
    EnqueueRequest {
        id: (u128::from(switchboard_hub::store::system_clock_ms()) << 80) | n,
        sender: Bytes::from_static(b"bench@example.org"),
        expires_ms: u64::MAX,
        payload: Bytes::from_static(&BODY),
    }
}

/// Write batches (fsyncs) and messages the store has committed so far.
pub fn fsyncs_and_messages(store: &Store) -> WriterCounters {
    let m = store.metrics();
    WriterCounters {
        batches: m.batches.load(Ordering::Relaxed),
        messages: m.enqueued.load(Ordering::Relaxed),
        prepare_nanos: m.prepare_nanos.load(Ordering::Relaxed),
        write_nanos: m.write_nanos.load(Ordering::Relaxed),
    }
}

/// The store writers' counters at one moment; differences of two tell what a run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriterCounters {
    /// Write batches committed (one fsync each).
    pub batches: u64,
    /// Messages appended.
    pub messages: u64,
    /// Time the writers spent preparing batches, summed over writers.
    pub prepare_nanos: u64,
    /// Time the writers spent in RocksDB writes, summed over writers.
    pub write_nanos: u64,
}

impl WriterCounters {
    /// What happened between `before` and `self`, as one line for a benchmark's output.
    pub fn since(&self, before: &WriterCounters) -> String {
        let batches = self.batches - before.batches;
        let messages = self.messages - before.messages;
        if batches == 0 {
            return "no batches".into();
        }
        let per = |nanos: u64| nanos as f64 / batches as f64 / 1000.0;
        format!(
            "{messages} messages in {batches} fsyncs = {:.1} messages/fsync; per batch: \
             prepare {:.0} µs, write {:.0} µs",
            messages as f64 / batches as f64,
            per(self.prepare_nanos - before.prepare_nanos),
            per(self.write_nanos - before.write_nanos),
        )
    }
}

/// Creates `count` user queues (`user0@example.org`, ...) and returns their ids.
pub fn user_queues(store: &Store, count: usize) -> Arc<Vec<QueueId>> {
    let queues = (0..count)
        .map(|i| store.create_queue(&format!("user{i}@example.org")).wait().expect("create queue"))
        .collect();
    Arc::new(queues)
}
