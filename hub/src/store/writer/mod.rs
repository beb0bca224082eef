//! A shard writer: one thread that owns the in-memory state of its queues and commits every
//! command it receives in group-committed write batches.
//!
//! This file is the group commit: the commands, the writer's loop, and one batch from
//! commands to fsync to replies. `queues.rs` holds the queues and cursors (append, ack, trim,
//! subscriptions), `sweep.rs` expiry and the dedupe window's purge, `registry.rs` the
//! commands on users and devices; the dedupe index on disk is `store/dedupe.rs`.

use std::{
    collections::{BTreeMap, HashMap, hash_map},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use rocksdb::{DB, Direction, IteratorMode, ReadOptions, WriteOptions};
use tokio::sync::oneshot;

mod accounts;
mod queues;
mod sweep;

pub(crate) use queues::load_meta;
use queues::{QueueState, delete_entries};

use crate::store::{
    Cursor, DeviceId, EnqueueRequest, Enqueued, Entry, QueueId, Shared, StartAt, StoreError,
    batch::Batch,
    codec::{self, Meta, decode_cursor, decode_meta, encode_cursor, encode_meta},
    decode_u64,
    dedupe::{self, Lookup, RecentIds, Record},
    disk_usage,
    registry::{DeviceRecord, UserRecord, UserStatus},
};

type Done<T> = oneshot::Sender<Result<T, StoreError>>;

/// Work for a shard writer. Each carries the channel its result goes back on.
pub(crate) enum Command {
    CreateQueue {
        name: Box<str>,
        done: Done<QueueId>,
    },
    AddDevice {
        account: QueueId,
        done: Done<DeviceId>,
    },
    Subscribe {
        queue: QueueId,
        device: DeviceId,
        start: StartAt,
        done: Done<()>,
    },
    Unsubscribe {
        queue: QueueId,
        device: DeviceId,
        done: Done<()>,
    },
    ForgetDevice {
        device: DeviceId,
        done: Done<()>,
    },
    Enqueue {
        queue: QueueId,
        request: EnqueueRequest,
        done: Done<Enqueued>,
    },
    /// Two appends of one shard in one write: the second (a copy) only if the first is taken.
    EnqueueWithCopy {
        queue: QueueId,
        request: EnqueueRequest,
        copy: (QueueId, EnqueueRequest),
        done: Done<(Enqueued, Result<Enqueued, StoreError>)>,
    },
    AppendLog {
        queue: QueueId,
        payloads: Vec<Bytes>,
        done: Done<Vec<u64>>,
    },
    Ack {
        queue: QueueId,
        device: DeviceId,
        up_to: u64,
        selective: Vec<u64>,
        done: Done<Cursor>,
    },
    Sweep {
        done: Done<()>,
    },
    CreateUser {
        name: Box<str>,
        done: Done<UserRecord>,
    },
    SetUserStatus {
        name: Box<str>,
        status: UserStatus,
        done: Done<UserRecord>,
    },
    Purge {
        queue: QueueId,
        done: Done<()>,
    },
    PutRecord {
        key: Vec<u8>,
        value: Vec<u8>,
        done: Done<()>,
    },
    DeleteRecord {
        key: Vec<u8>,
        done: Done<()>,
    },
    IssueCode {
        account: QueueId,
        key: Vec<u8>,
        expires_ms: u64,
        done: Done<()>,
    },
    Enrol {
        account: QueueId,
        name: Box<str>,
        public_key: [u8; 32],
        /// The key of the enrolment code to spend; `None` when the operator registers a key
        /// it already knows.
        code: Option<Vec<u8>>,
        done: Done<DeviceRecord>,
    },
    Revoke {
        name: Box<str>,
        done: Done<DeviceRecord>,
    },
    SetDeviceKind {
        name: Box<str>,
        kind: crate::store::DeviceKind,
        done: Done<DeviceRecord>,
    },
}

/// How long a writer waits for work before it sweeps.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// How often the disk usage is measured.
const DISK_CHECK_EVERY: Duration = Duration::from_millis(500);
/// Queues looked at per idle sweep.
const SWEEP_QUEUES_PER_TICK: usize = 256;
/// Longest a sweep may hold the writer when it is idle.
const IDLE_SWEEP_BUDGET: Duration = Duration::from_millis(10);
/// Longest a sweep may hold the writer between two busy batches, once a second: callers wait
/// while the writer sweeps, so this bounds what sweeping adds to their latency.
const BUSY_SWEEP_BUDGET: Duration = Duration::from_micros(300);
/// How often a sweep pass also purges dedupe records older than the window. Each purge seeks
/// into every queue's dedupe records, and the window is days long: there is no hurry.
const DEDUPE_PURGE_EVERY: Duration = Duration::from_secs(600);
/// Expired entries removed from one queue per sweep.
const SWEEP_ENTRIES_PER_QUEUE: usize = 10_000;
/// Above this many entries, a trim writes one range deletion instead of one deletion each.
const RANGE_DELETE_ABOVE: u64 = 4096;

/// A queue's persisted counters, and its readers once someone needed them.
/// What the commands of one batch have done that is not yet in RocksDB.
#[derive(Default)]
struct Staged {
    names: HashMap<Box<str>, QueueId>,
    devices: HashMap<DeviceId, QueueId>,
    dirty: Vec<QueueId>,
    enqueued: u64,
    /// Entries appended, in order, for the tails in memory once the batch is durable.
    appended: Vec<(QueueId, Entry)>,
    /// Dedupe records made, written in blocks when the batch is built.
    dedupe: Vec<Record>,
    /// Queues whose floor rose (trimmed, expired, purged), with the new floor.
    floors: Vec<(QueueId, u64)>,
    /// Registry records written (Some) or deleted (None) earlier in this batch.
    records: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// Sends a command's result once the batch holding it is durable (or failed).
type Reply = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn reply<T: Send + 'static>(done: Done<T>, result: Result<T, StoreError>) -> Reply {
    Box::new(move |commit| {
        let result = match (commit, result) {
            (Err(error), Ok(_)) => Err(error.clone()),
            (_, result) => result,
        };
        // The caller may have stopped waiting; the operation is durable either way.
        let _ = done.send(result);
    })
}

pub(crate) struct ShardWriter {
    index: u16,
    shard_count: usize,
    db: Arc<DB>,
    shared: Arc<Shared>,
    queues: HashMap<QueueId, QueueState>,
    next_ids: HashMap<u8, u64>,
    sweep_after: Option<QueueId>,
    /// Every queue this shard owns, listed once from RocksDB and then kept up to date, so a
    /// sweep never scans the queue records (each floor change writes a new version of one,
    /// and a scan of the memtable walks every version).
    owned: Option<std::collections::BTreeSet<QueueId>>,
    last_sweep: Instant,
    /// Whether the sweep pass under way also purges old dedupe records.
    purging_dedupe: bool,
    last_dedupe_purge: Option<Instant>,
    last_disk_check: Instant,
    write_options: WriteOptions,
    /// For batches of acknowledgements alone: written to the WAL, not fsynced.
    ack_write_options: WriteOptions,
    /// Dedupe records made since the store opened; `None` until the writer starts.
    recent: Option<RecentIds>,
}

impl ShardWriter {
    pub(crate) fn new(index: u16, shard_count: usize, db: Arc<DB>, shared: Arc<Shared>) -> Self {
        let mut write_options = WriteOptions::default();
        write_options.set_sync(shared.config.sync);
        let mut ack_write_options = WriteOptions::default();
        ack_write_options.set_sync(false);
        Self {
            ack_write_options,
            index,
            shard_count,
            db,
            shared,
            queues: HashMap::new(),
            next_ids: HashMap::new(),
            sweep_after: None,
            owned: None,
            last_sweep: Instant::now(),
            purging_dedupe: false,
            last_dedupe_purge: None,
            last_disk_check: Instant::now(),
            write_options,
            recent: None,
        }
    }

    fn recent_capacity(&self) -> usize {
        self.shared.config.dedupe_memory / self.shard_count.max(1)
    }

    /// The in-memory dedupe records, rebuilt from disk after a start or a failed write (see
    /// [`dedupe::load_recent`]).
    fn recent(&mut self) -> Result<&mut RecentIds, StoreError> {
        if self.recent.is_none() {
            let now = (self.shared.clock)();
            self.recent = Some(dedupe::load_recent(&self.db, self.recent_capacity(), now)?);
        }
        Ok(self.recent.as_mut().expect("set above"))
    }

    fn dedupe_on_disk(&self, record: &Record) -> Result<Option<u64>, StoreError> {
        dedupe::lookup_on_disk(&self.db, record)
    }

    fn write_dedupe(&self, batch: &mut Batch, records: Vec<Record>) {
        dedupe::write_records(&self.db, batch, records);
    }

    pub(crate) fn run(mut self, rx: Receiver<Command>) {
        let max_batch = self.shared.config.max_batch.max(1);
        // The dedupe memory starts from what is on disk now, before any writer adds to it.
        // Started later, at this shard's first message, it would take as its bound the newest
        // record of any shard by then, and look up on disk every id below that.
        if let Err(error) = self.recent() {
            tracing::warn!(shard = self.index, %error, "cannot read the newest dedupe record; will retry");
        }
        loop {
            self.maybe_measure_disk();
            let first = match rx.recv_timeout(IDLE_TICK) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    self.idle_sweep(IDLE_SWEEP_BUDGET);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut commands = Vec::with_capacity(64);
            commands.push(first);
            while commands.len() < max_batch {
                match rx.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
            // Linger for more work, when asked to: one write (one fsync) for more messages.
            let linger = self.shared.config.commit_linger;
            let acks_only = commands.iter().all(|c| matches!(c, Command::Ack { .. }));
            if !linger.is_zero() && !acks_only {
                let until = Instant::now() + linger;
                while commands.len() < max_batch {
                    let Some(left) = until.checked_duration_since(Instant::now()) else { break };
                    match rx.recv_timeout(left) {
                        Ok(command) => commands.push(command),
                        Err(_) => break,
                    }
                }
            }
            self.commit(commands);
            if self.last_sweep.elapsed() > Duration::from_secs(1) {
                self.idle_sweep(BUSY_SWEEP_BUDGET);
            }
        }
    }

    fn commit(&mut self, commands: Vec<Command>) {
        let count = commands.len() as u64;
        // A batch of acknowledgements alone is not fsynced: nobody waits on its durability,
        // and the process dying after the write loses nothing (the WAL is in the page cache).
        // Only a power loss can take it back, and then the device is sent again what it had
        // acknowledged (the protocol allows that; a device takes each sequence once). The next
        // fsynced batch makes it durable with everything before it.
        let acks_only = commands.iter().all(|c| matches!(c, Command::Ack { .. }));
        let started = Instant::now();
        let mut batch = Batch::default();
        let mut staged = Staged::default();
        let replies: Vec<Reply> =
            commands.into_iter().map(|c| self.apply(c, &mut batch, &mut staged)).collect();
        if !staged.dedupe.is_empty() {
            self.write_dedupe(&mut batch, std::mem::take(&mut staged.dedupe));
        }
        for queue in std::mem::take(&mut staged.dirty) {
            if let Some(state) = self.queues.get(&queue) {
                batch.put(
                    codec::queue_meta(queue),
                    encode_meta(state.last_seq, state.floor, &state.name),
                );
            }
        }
        let write_batch = (!batch.is_empty()).then(|| batch.into_write_batch());
        let prepared = Instant::now();
        let outcome = match write_batch {
            None => Ok(()),
            Some(write_batch) => {
                let options = if acks_only { &self.ack_write_options } else { &self.write_options };
                self.db.write_opt(write_batch, options).map_err(StoreError::from)
            }
        };
        let metrics = &self.shared.metrics;
        metrics.prepare_nanos.fetch_add(nanos(prepared - started), Ordering::Relaxed);
        metrics.write_nanos.fetch_add(nanos(prepared.elapsed()), Ordering::Relaxed);
        match &outcome {
            Ok(()) => {
                metrics.batches.fetch_add(1, Ordering::Relaxed);
                metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
                if !acks_only && self.shared.config.sync {
                    metrics.synced_batches.fetch_add(1, Ordering::Relaxed);
                    if staged.enqueued > 0 {
                        metrics.batch_messages.observe(staged.enqueued as f64);
                    }
                }
                metrics.commands.fetch_add(count, Ordering::Relaxed);
                metrics.enqueued.fetch_add(staged.enqueued, Ordering::Relaxed);
                // Before any caller hears of it: a session woken by this append finds it.
                self.shared.tails.push(std::mem::take(&mut staged.appended));
                self.shared.tails.forget_through(std::mem::take(&mut staged.floors));
            }
            Err(error) => {
                if matches!(error, StoreError::NoSpace { .. }) {
                    self.shared.space.no_space();
                }
                tracing::error!(shard = self.index, %error, "write batch failed; nothing in it was acknowledged");
                // The in-memory state ran ahead of the failed batch: drop it and reload from
                // RocksDB, which holds the truth.
                self.queues.clear();
                self.next_ids.clear();
                self.owned = None;
                self.recent = None;
            }
        }
        let commit = outcome.as_ref().map(|_| ());
        for reply in replies {
            reply(commit);
        }
    }

    fn apply(&mut self, command: Command, batch: &mut Batch, staged: &mut Staged) -> Reply {
        match command {
            Command::Enqueue { queue, request, done } => {
                reply(done, self.enqueue(queue, request, batch, staged))
            }
            Command::EnqueueWithCopy { queue, request, copy, done } => {
                let result = self.enqueue(queue, request, batch, staged).map(|first| {
                    let (copy_queue, copy_request) = copy;
                    (first, self.enqueue(copy_queue, copy_request, batch, staged))
                });
                reply(done, result)
            }
            Command::AppendLog { queue, payloads, done } => {
                reply(done, self.append_log(queue, payloads, batch, staged))
            }
            Command::Ack { queue, device, up_to, selective, done } => {
                reply(done, self.ack(queue, device, up_to, selective, batch, staged))
            }
            Command::CreateQueue { name, done } => {
                reply(done, self.create_queue(name, batch, staged))
            }
            Command::AddDevice { account, done } => {
                reply(done, self.add_device(account, batch, staged))
            }
            Command::Subscribe { queue, device, start, done } => {
                reply(done, self.subscribe(queue, device, start, batch, staged))
            }
            Command::Unsubscribe { queue, device, done } => {
                reply(done, self.unsubscribe(queue, device, batch, staged))
            }
            Command::ForgetDevice { device, done } => {
                batch.delete(codec::device(device));
                reply(done, Ok(()))
            }
            Command::Sweep { done } => {
                // An explicit sweep is a whole pass, dedupe purge included.
                self.sweep_after = None;
                self.purging_dedupe = true;
                reply(done, self.sweep(usize::MAX, None, batch, staged))
            }
            Command::CreateUser { name, done } => {
                reply(done, self.create_user(name, batch, staged))
            }
            Command::IssueCode { account, key, expires_ms, done } => {
                // A new code retires every earlier one of the account, in the same write.
                let result = self
                    .queue(account)
                    .map(|_| ())
                    .and_then(|()| self.codes_of(account, staged))
                    .map(|earlier| {
                        for old in earlier {
                            delete_record(batch, staged, old);
                        }
                        put_record(batch, staged, key, expires_ms.to_be_bytes().to_vec());
                    });
                reply(done, result)
            }
            Command::Enrol { account, name, public_key, code, done } => {
                reply(done, self.enrol(account, name, public_key, code, batch, staged))
            }
            Command::Revoke { name, done } => reply(done, self.revoke(&name, batch, staged)),
            Command::SetDeviceKind { name, kind, done } => {
                reply(done, self.set_kind(&name, kind, batch, staged))
            }
            Command::SetUserStatus { name, status, done } => {
                let key = codec::user_key(&name);
                let result = match self.record(staged, &key) {
                    Ok(Some(value)) => codec::decode_user(name.into(), &value).map(|mut user| {
                        user.status = status;
                        put_record(batch, staged, key, codec::encode_user(&user));
                        user
                    }),
                    Ok(None) => Err(StoreError::UnknownUser(name.into())),
                    Err(error) => Err(error),
                };
                reply(done, result)
            }
            Command::Purge { queue, done } => {
                let result = self.queue(queue).map(|state| {
                    let (floor, last) = (state.floor, state.last_seq);
                    state.floor = last;
                    (floor, last)
                });
                let result = result.map(|(floor, last)| {
                    if last > floor {
                        delete_entries(batch, queue, floor, last);
                        staged.floors.push((queue, last));
                        mark_dirty(staged, queue);
                    }
                });
                reply(done, result)
            }
            Command::PutRecord { key, value, done } => {
                put_record(batch, staged, key, value);
                reply(done, Ok(()))
            }
            Command::DeleteRecord { key, done } => {
                delete_record(batch, staged, key);
                reply(done, Ok(()))
            }
        }
    }
}

impl ShardWriter {
    fn maybe_measure_disk(&mut self) {
        if self.index != 0 || self.last_disk_check.elapsed() < DISK_CHECK_EVERY {
            return;
        }
        self.last_disk_check = Instant::now();
        let used = disk_usage(&self.db, &self.shared.config.path);
        self.shared.disk_used.store(used, Ordering::Relaxed);
        self.shared.space.check();
    }

    /// A new id, unique across shards and restarts: a per-shard counter in the high 48 bits and
    /// the shard index in the low 16.
    fn allocate(&mut self, kind: u8, batch: &mut Batch) -> Result<u64, StoreError> {
        let key = codec::allocator(kind, self.index);
        let next = match self.next_ids.get(&kind) {
            Some(&next) => next,
            None => match self.db.get_pinned(key)? {
                Some(raw) => decode_u64(&raw, "allocator")?,
                None => 1,
            },
        };
        self.next_ids.insert(kind, next + 1);
        batch.put(key, (next + 1).to_be_bytes());
        Ok((next << 16) | u64::from(self.index))
    }

    fn shard_of(&self, queue: QueueId) -> usize {
        (codec::mix(queue.0) % self.shard_count as u64) as usize
    }
}

fn put_record(batch: &mut Batch, staged: &mut Staged, key: Vec<u8>, value: Vec<u8>) {
    batch.put(key.clone(), value.clone());
    staged.records.insert(key, Some(value));
}

fn delete_record(batch: &mut Batch, staged: &mut Staged, key: Vec<u8>) {
    batch.delete(key.clone());
    staged.records.insert(key, None);
}

fn mark_dirty(staged: &mut Staged, queue: QueueId) {
    if !staged.dirty.contains(&queue) {
        staged.dirty.push(queue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_millisecond_gets_few_blocks_and_every_record_is_found_after_a_reopen() {
        use crate::store::{EnqueueRequest, Pending, Store, StoreConfig, system_clock_ms};
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.shards = 1;
        let ms = system_clock_ms();
        // One device giving every message the same millisecond, in many group commits.
        let request = |n: u128| EnqueueRequest {
            id: (u128::from(ms) << 80) | n,
            sender: Bytes::from_static(b"mallory@example.org"),
            expires_ms: u64::MAX,
            payload: Bytes::from_static(b"x"),
        };
        let store = Store::open(config.clone()).unwrap();
        let queue = store.create_queue("bob@example.org").wait().unwrap();
        let mut seqs = Vec::new();
        for n in 1..=40 {
            seqs.push(store.enqueue(queue, request(n)).wait().unwrap().seq);
        }
        // And groups larger than a block.
        let pending: Vec<Pending<_>> =
            (41..=1_240).map(|n| store.enqueue(queue, request(n))).collect();
        seqs.extend(pending.into_iter().map(|p| p.wait().unwrap().seq));
        store.close();

        let store = Store::open(config).unwrap();
        let prefix = codec::dedupe_blocks_of(ms);
        let blocks = store
            .db
            .prefix_iterator(prefix)
            .take_while(|item| item.as_ref().is_ok_and(|(key, _)| key.starts_with(&prefix)));
        let count = blocks.count();
        assert!((1..=dedupe::MAX_BLOCKS_PER_MS).contains(&count), "{count} blocks");
        // Memory was emptied by the reopen: every check below goes to disk.
        for (n, &seq) in (1..=1_240).zip(&seqs) {
            let again = store.enqueue(queue, request(n)).wait().unwrap();
            assert_eq!(again, crate::store::Enqueued { seq, duplicate: true }, "message {n}");
        }
        assert!(store.metrics().dedupe_disk_lookups.load(Ordering::Relaxed) >= 1_240);
        assert_eq!(store.stats(queue).unwrap().last_seq, 1_240);
    }
}
