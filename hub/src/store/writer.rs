//! A shard writer: one thread that owns the in-memory state of its queues and commits every
//! command it receives in group-committed write batches.

use std::{
    collections::{BTreeMap, HashMap, hash_map},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use rocksdb::{DB, Direction, IteratorMode, ReadOptions, WriteOptions};
use tokio::sync::oneshot;

use crate::store::{
    Cursor, DeviceId, EnqueueRequest, Enqueued, Entry, QueueId, QueueStats, Shared, StartAt,
    StoreError,
    batch::Batch,
    decode_u64,
    dedupe::{self, Lookup, MAX_BLOCK_RECORDS, MAX_BLOCKS_PER_MS, RecentIds, Record},
    disk_usage, keys,
    registry::{self, DeviceRecord, UserRecord, UserStatus},
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
struct QueueState {
    last_seq: u64,
    floor: u64,
    name: Box<str>,
    readers: Option<Readers>,
}

/// The cursors of every device reading a queue, with a count of readers per cursor so that
/// the lowest cursor (how far the queue may be trimmed) costs O(log n) even for 10,000 readers.
#[derive(Default)]
struct Readers {
    cursors: HashMap<DeviceId, Cursor>,
    by_position: BTreeMap<u64, u32>,
}

impl Readers {
    fn insert(&mut self, device: DeviceId, cursor: Cursor) {
        if let Some(old) = self.cursors.insert(device, cursor.clone()) {
            self.forget_position(old.acked);
        }
        *self.by_position.entry(cursor.acked).or_default() += 1;
    }

    fn remove(&mut self, device: DeviceId) -> bool {
        match self.cursors.remove(&device) {
            Some(old) => {
                self.forget_position(old.acked);
                true
            }
            None => false,
        }
    }

    fn forget_position(&mut self, position: u64) {
        if let Some(count) = self.by_position.get_mut(&position) {
            *count -= 1;
            if *count == 0 {
                self.by_position.remove(&position);
            }
        }
    }

    fn lowest(&self) -> Option<u64> {
        self.by_position.keys().next().copied()
    }
}

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

    /// The in-memory dedupe records, rebuilt from disk after a start or a failed write.
    ///
    /// Memory answers alone for ids above the newest record on disk. A device whose clock runs
    /// far ahead leaves records with ids from the future, which would put that bound out of
    /// reach of every other id for as long as they are kept; so the bound is the newest id
    /// up to a minute ahead of this clock, and the (few) records beyond it are loaded into
    /// memory. If there are too many of them, the bound is the newest id of all: slower
    /// (ids below it are looked up on disk), never wrong.
    fn recent(&mut self) -> Result<&mut RecentIds, StoreError> {
        if self.recent.is_none() {
            let now = (self.shared.clock)();
            let capacity = self.recent_capacity();
            let horizon = dedupe::ahead_of(now);
            let horizon_ms = dedupe::ms_of(horizon);
            let mut iter = self.db.raw_iterator();
            let mut ahead = Vec::new();
            let mut too_many = false;
            // Single records: the newest below the horizon, then every one from it on.
            iter.seek_for_prev(keys::dedupe(QueueId(0), horizon, 0));
            iter.status()?;
            let mut newest = iter.key().and_then(keys::dedupe_id);
            iter.seek(keys::dedupe(QueueId(0), horizon, 0));
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                let (Some(id), Some((queue, sender))) =
                    (keys::dedupe_id(key), keys::dedupe_queue_and_sender(key))
                else {
                    break;
                };
                if ahead.len() > capacity / 4 {
                    too_many = true;
                    break;
                }
                ahead.push(Record { id, queue, sender, seq: decode_u64(value, "dedupe")? });
                iter.next();
            }
            iter.status()?;
            // Blocks likewise, by the millisecond of their ids.
            iter.seek_for_prev(keys::dedupe_blocks_of(horizon_ms));
            iter.status()?;
            if let Some(ms) = iter.key().and_then(keys::dedupe_block_ms) {
                newest = newest.max(newest_in_blocks_of(&mut iter, ms)?);
            }
            iter.seek(keys::dedupe_blocks_of(horizon_ms));
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                if too_many || keys::dedupe_block_ms(key).is_none() {
                    break;
                }
                ahead.extend(dedupe::decode_block(value)?);
                too_many = ahead.len() > capacity / 4;
                iter.next();
            }
            iter.status()?;
            let mut recent = if too_many {
                // Too many records from the future to hold: bound by the newest of all.
                ahead.clear();
                iter.seek_for_prev(keys::dedupe(QueueId(u64::MAX), u128::MAX, u64::MAX));
                iter.status()?;
                let newest_single = iter.key().and_then(keys::dedupe_id);
                iter.seek_for_prev(keys::dedupe_block(u64::MAX, QueueId(u64::MAX), u64::MAX));
                iter.status()?;
                let newest_block = match iter.key().and_then(keys::dedupe_block_ms) {
                    Some(ms) => newest_in_blocks_of(&mut iter, ms)?,
                    None => None,
                };
                RecentIds::new(capacity, newest_single.max(newest_block))
            } else {
                RecentIds::new(capacity, newest)
            };
            for record in ahead {
                recent.insert(record.key(), record.id, record.seq, now);
            }
            self.recent = Some(recent);
        }
        Ok(self.recent.as_mut().expect("set above"))
    }

    /// The sequence a dedupe record on disk gives (`record.seq` is not looked at): a single
    /// record, or one in a block of the id's millisecond (at most a few of them).
    fn dedupe_on_disk(&self, record: &Record) -> Result<Option<u64>, StoreError> {
        if let Some(seq) = self.db.get_pinned(record.key())? {
            return decode_u64(&seq, "dedupe").map(Some);
        }
        let prefix = keys::dedupe_blocks_of(dedupe::ms_of(record.id));
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::prefix_end(&prefix));
        let mut iter = self.db.raw_iterator_opt(options);
        iter.seek(prefix);
        while let Some(block) = iter.value() {
            if let Some(seq) = dedupe::find_in_block(block, record.id, record.queue, record.sender)?
            {
                return Ok(Some(seq));
            }
            iter.next();
        }
        iter.status()?;
        Ok(None)
    }

    /// Writes a batch's dedupe records: per millisecond of their ids, one block, or single
    /// records when the millisecond has its blocks already or the group is too large (see
    /// `dedupe`).
    fn write_dedupe(&self, batch: &mut Batch, mut records: Vec<Record>) {
        records.sort_unstable();
        let mut iter = self.db.raw_iterator();
        let mut rest = &records[..];
        while let Some(first) = rest.first() {
            let ms = dedupe::ms_of(first.id);
            let len = rest.iter().take_while(|r| dedupe::ms_of(r.id) == ms).count();
            let (group, after) = rest.split_at(len);
            rest = after;
            if group.len() <= MAX_BLOCK_RECORDS && blocks_of(&mut iter, ms) < MAX_BLOCKS_PER_MS {
                let key = keys::dedupe_block(ms, QueueId(first.queue), first.seq);
                batch.put(key, dedupe::encode_block(group));
            } else {
                for record in group {
                    batch.put(record.key(), record.seq.to_be_bytes());
                }
            }
        }
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
                    keys::queue_meta(queue),
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
                if !acks_only && self.shared.config.sync {
                    metrics.synced_batches.fetch_add(1, Ordering::Relaxed);
                }
                metrics.commands.fetch_add(count, Ordering::Relaxed);
                metrics.enqueued.fetch_add(staged.enqueued, Ordering::Relaxed);
                // Before any caller hears of it: a session woken by this append finds it.
                self.shared.tails.push(std::mem::take(&mut staged.appended));
                self.shared.tails.forget_through(std::mem::take(&mut staged.floors));
            }
            Err(error) => {
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
                batch.delete(keys::device(device));
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
                let result = self.queue(account).map(|_| {
                    put_record(batch, staged, key, expires_ms.to_be_bytes().to_vec());
                });
                reply(done, result)
            }
            Command::Enrol { account, name, public_key, code, done } => {
                reply(done, self.enrol(account, name, public_key, code, batch, staged))
            }
            Command::Revoke { name, done } => reply(done, self.revoke(&name, batch, staged)),
            Command::SetUserStatus { name, status, done } => {
                let key = registry::user_key(&name);
                let result = match self.record(staged, &key) {
                    Ok(Some(value)) => {
                        registry::decode_user(name.into(), &value).map(|mut user| {
                            user.status = status;
                            put_record(batch, staged, key, registry::encode_user(&user));
                            user
                        })
                    }
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
        }
    }

    /// A registry record as this batch leaves it.
    fn record(&self, staged: &Staged, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match staged.records.get(key) {
            Some(value) => Ok(value.clone()),
            None => Ok(self.db.get(key)?),
        }
    }

    fn create_user(
        &mut self,
        name: Box<str>,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<UserRecord, StoreError> {
        let key = registry::user_key(&name);
        if self.record(staged, &key)?.is_some() {
            return Err(StoreError::Exists(name.into()));
        }
        let queue = self.create_queue(name.clone(), batch, staged)?;
        let user = UserRecord {
            name: name.into(),
            queue,
            status: UserStatus::Active,
            created_ms: (self.shared.clock)(),
        };
        put_record(batch, staged, key, registry::encode_user(&user));
        Ok(user)
    }

    fn enrol(
        &mut self,
        account: QueueId,
        name: Box<str>,
        public_key: [u8; 32],
        code: Option<Vec<u8>>,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<DeviceRecord, StoreError> {
        let now = (self.shared.clock)();
        if let Some(code) = &code {
            let expires = match self.record(staged, code)? {
                Some(value) => decode_u64(&value, "enrolment code")?,
                None => return Err(StoreError::EnrolmentRefused("unknown or already used code")),
            };
            if expires <= now {
                return Err(StoreError::EnrolmentRefused("the code has expired"));
            }
        }
        let key = registry::device_key(&name);
        if self.record(staged, &key)?.is_some() {
            return Err(StoreError::Exists(name.into()));
        }
        let device = self.add_device(account, batch, staged)?;
        let record = DeviceRecord {
            name: name.into(),
            device,
            account,
            public_key,
            revoked: false,
            enrolled_ms: now,
        };
        if let Some(code) = code {
            batch.delete(code.clone());
            staged.records.insert(code, None);
        }
        put_record(batch, staged, key, registry::encode_device(&record));
        Ok(record)
    }

    fn revoke(
        &mut self,
        name: &str,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<DeviceRecord, StoreError> {
        let key = registry::device_key(name);
        let value =
            self.record(staged, &key)?.ok_or_else(|| StoreError::UnknownDeviceName(name.into()))?;
        let mut record = registry::decode_device(name.into(), &value)?;
        if !record.revoked {
            record.revoked = true;
            put_record(batch, staged, key, registry::encode_device(&record));
        }
        Ok(record)
    }

    /// Appends every payload to `queue`, a log of the hub's own (the organisation events):
    /// all in the same write or none, never expiring, with no dedupe record and no backlog
    /// limit (a log is never trimmed; refusing its growth would stop the changes it records).
    fn append_log(
        &mut self,
        queue: QueueId,
        payloads: Vec<Bytes>,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<Vec<u64>, StoreError> {
        let budget = self.shared.disk_budget.load(Ordering::Relaxed);
        let used = self.shared.disk_used.load(Ordering::Relaxed);
        if budget > 0 && used >= budget {
            return Err(StoreError::DiskFull { used, budget });
        }
        let state = self.queue(queue)?;
        let mut seqs = Vec::with_capacity(payloads.len());
        for payload in payloads {
            state.last_seq += 1;
            let mut value = Vec::with_capacity(8 + payload.len());
            value.extend_from_slice(&u64::MAX.to_be_bytes());
            value.extend_from_slice(&payload[..]);
            batch.put(keys::entry(queue, state.last_seq), value);
            seqs.push(state.last_seq);
            staged
                .appended
                .push((queue, Entry { seq: state.last_seq, expires_ms: u64::MAX, payload }));
        }
        staged.enqueued += seqs.len() as u64;
        Ok(seqs)
    }

    fn enqueue(
        &mut self,
        queue: QueueId,
        request: EnqueueRequest,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<Enqueued, StoreError> {
        let budget = self.shared.disk_budget.load(Ordering::Relaxed);
        let used = self.shared.disk_used.load(Ordering::Relaxed);
        if budget > 0 && used >= budget {
            return Err(StoreError::DiskFull { used, budget });
        }
        let sender = keys::stable_hash(&request.sender);
        let dedupe_key = keys::dedupe(queue, request.id, sender);
        let limit = self.shared.config.backlog_limit;
        self.queue(queue)?;
        match self.recent()?.lookup(&dedupe_key, request.id) {
            Lookup::Known(seq) => return Ok(Enqueued { seq, duplicate: true }),
            Lookup::Absent => {}
            Lookup::Unknown => {
                self.shared.metrics.dedupe_disk_lookups.fetch_add(1, Ordering::Relaxed);
                let wanted = Record { id: request.id, queue: queue.0, sender, seq: 0 };
                if let Some(seq) = self.dedupe_on_disk(&wanted)? {
                    return Ok(Enqueued { seq, duplicate: true });
                }
            }
        }
        let state = self.queue(queue)?;
        if state.last_seq - state.floor >= limit {
            return Err(StoreError::BacklogFull { queue, backlog: limit });
        }
        state.last_seq += 1;
        let seq = state.last_seq;
        let mut value = Vec::with_capacity(8 + request.payload.len());
        value.extend_from_slice(&request.expires_ms.to_be_bytes());
        value.extend_from_slice(&request.payload);
        batch.put(keys::entry(queue, seq), value);
        staged.dedupe.push(Record { id: request.id, queue: queue.0, sender, seq });
        let entry = Entry { seq, expires_ms: request.expires_ms, payload: request.payload };
        staged.appended.push((queue, entry));
        let now = (self.shared.clock)();
        self.recent()?.insert(dedupe_key, request.id, seq, now);
        staged.enqueued += 1;
        // The queue record is not rewritten for an append: on load, the last sequence is
        // recovered from the queue's last entry key. Only a trim or an expiry, which can remove
        // that entry, writes the record (with the last sequence) again.
        Ok(Enqueued { seq, duplicate: false })
    }

    fn ack(
        &mut self,
        queue: QueueId,
        device: DeviceId,
        up_to: u64,
        selective: Vec<u64>,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<Cursor, StoreError> {
        let max_selective = self.shared.config.max_selective;
        let state = self.readers_of(queue)?;
        let last = state.last_seq;
        let readers = state.readers.as_mut().expect("readers_of loads the readers");
        let old =
            readers.cursors.get(&device).ok_or(StoreError::NotSubscribed { queue, device })?;
        if let Some(&seq) = selective.iter().chain([&up_to]).find(|&&s| s > last) {
            return Err(StoreError::AckBeyondTail { queue, seq, last });
        }
        let cursor = advance(old, state.floor, up_to, &selective);
        if cursor.selective.len() > max_selective {
            return Err(StoreError::TooManySelectiveAcks { limit: max_selective });
        }
        if cursor != *old {
            batch.put(keys::reader(queue, device), encode_cursor(&cursor));
            readers.insert(device, cursor.clone());
            self.trim(queue, batch, staged);
        }
        Ok(cursor)
    }

    fn create_queue(
        &mut self,
        name: Box<str>,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<QueueId, StoreError> {
        if let Some(&queue) = staged.names.get(&name) {
            return Ok(queue);
        }
        if let Some(existing) = self.db.get_pinned(keys::queue_name(&name))? {
            return decode_u64(&existing, "queue name").map(QueueId);
        }
        let queue = QueueId(self.allocate(keys::ALLOC_QUEUE, batch)?);
        batch.put(keys::queue_name(&name), queue.0.to_be_bytes());
        batch.put(keys::queue_meta(queue), encode_meta(0, 0, &name));
        staged.names.insert(name, queue);
        if self.shard_of(queue) == self.index as usize
            && let Some(owned) = self.owned.as_mut()
        {
            owned.insert(queue);
        }
        Ok(queue)
    }

    fn add_device(
        &mut self,
        account: QueueId,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<DeviceId, StoreError> {
        self.queue(account)?;
        let device = DeviceId(self.allocate(keys::ALLOC_DEVICE, batch)?);
        batch.put(keys::device(device), account.0.to_be_bytes());
        staged.devices.insert(device, account);
        self.subscribe(account, device, StartAt::Oldest, batch, staged)?;
        Ok(device)
    }

    fn subscribe(
        &mut self,
        queue: QueueId,
        device: DeviceId,
        start: StartAt,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<(), StoreError> {
        let known = staged.devices.contains_key(&device)
            || self.db.get_pinned(keys::device(device))?.is_some();
        if !known {
            return Err(StoreError::UnknownDevice(device));
        }
        let state = self.readers_of(queue)?;
        let readers = state.readers.as_mut().expect("readers_of loads the readers");
        if readers.cursors.contains_key(&device) {
            return Ok(());
        }
        let acked = match start {
            StartAt::Oldest => state.floor,
            StartAt::Next => state.last_seq,
        };
        let cursor = Cursor { acked, selective: Vec::new() };
        batch.put(keys::reader(queue, device), encode_cursor(&cursor));
        batch.put(keys::subscription(device, queue), []);
        readers.insert(device, cursor);
        // A queue whose only readers start after its backlog holds nothing anyone will read.
        self.trim(queue, batch, staged);
        Ok(())
    }

    fn unsubscribe(
        &mut self,
        queue: QueueId,
        device: DeviceId,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<(), StoreError> {
        let state = self.readers_of(queue)?;
        let readers = state.readers.as_mut().expect("readers_of loads the readers");
        batch.delete(keys::subscription(device, queue));
        if readers.remove(device) {
            batch.delete(keys::reader(queue, device));
            self.trim(queue, batch, staged);
        }
        Ok(())
    }

    /// Removes every entry all readers have acknowledged. A queue without readers keeps its
    /// entries (until they expire): a user with no device yet still gets them later.
    fn trim(&mut self, queue: QueueId, batch: &mut Batch, staged: &mut Staged) {
        let Some(state) = self.queues.get_mut(&queue) else { return };
        let Some(lowest) = state.readers.as_ref().and_then(Readers::lowest) else { return };
        if lowest > state.floor {
            delete_entries(batch, queue, state.floor, lowest);
            state.floor = lowest;
            staged.floors.push((queue, lowest));
            mark_dirty(staged, queue);
        }
    }

    /// Removes expired entries at the head of queues, and (in one pass every
    /// [`DEDUPE_PURGE_EVERY`]) dedupe records older than the window, for up to `max_queues`
    /// queues of this shard after the last one swept, stopping early once `budget` is spent.
    fn sweep(
        &mut self,
        max_queues: usize,
        budget: Option<Duration>,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<(), StoreError> {
        let now = (self.shared.clock)();
        let window = self.shared.config.dedupe_window.as_millis() as u64;
        let dedupe_cutoff = (u128::from(now.saturating_sub(window))) << 80;
        if self.owned.is_none() {
            let mut owned = std::collections::BTreeSet::new();
            let mut options = ReadOptions::default();
            options.set_iterate_upper_bound(vec![keys::QUEUE_META + 1]);
            let start = keys::queue_meta(QueueId(0));
            for item in
                self.db.iterator_opt(IteratorMode::From(&start, Direction::Forward), options)
            {
                let (key, _) = item?;
                if let Some(queue) = keys::queue_meta_id(&key)
                    && self.shard_of(queue) == self.index as usize
                {
                    owned.insert(queue);
                }
            }
            self.owned = Some(owned);
        }
        if self.sweep_after.is_none() && !self.purging_dedupe {
            // A new pass starts: it purges dedupe records if the last purge is old enough.
            self.purging_dedupe =
                self.last_dedupe_purge.is_none_or(|at| at.elapsed() >= DEDUPE_PURGE_EVERY);
        }
        if self.purging_dedupe {
            self.purge_dedupe(dedupe_cutoff, batch)?;
        }
        let started = Instant::now();
        let owned = self.owned.as_ref().expect("listed above");
        let from = self.sweep_after.map_or(QueueId(0), |q| QueueId(q.0 + 1));
        let ours: Vec<QueueId> = owned.range(from..).take(max_queues).copied().collect();
        let db = self.db.clone();
        let mut iter = db.raw_iterator();
        let mut swept = 0;
        for &queue in &ours {
            if budget.is_some_and(|budget| started.elapsed() >= budget) {
                break;
            }
            self.expire_head(&mut iter, queue, now, batch, staged)?;
            swept += 1;
        }
        let reached_end = swept == ours.len() && ours.len() < max_queues;
        if reached_end {
            self.sweep_after = None;
        } else if swept > 0 {
            self.sweep_after = Some(ours[swept - 1]);
        }
        Ok(())
    }

    /// Removes the expired entries at the head of `queue`. `iter` is one raw iterator reused for
    /// every queue of a sweep: creating an iterator per queue made RocksDB read and decompress
    /// the index blocks of every table file again for each queue.
    fn expire_head(
        &mut self,
        iter: &mut rocksdb::DBRawIterator<'_>,
        queue: QueueId,
        now: u64,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<(), StoreError> {
        let (floor, last_seq) = match self.queues.get(&queue) {
            Some(state) => (state.floor, state.last_seq),
            None => {
                let meta = load_meta(&self.db, queue)?;
                (meta.floor, meta.last_seq)
            }
        };
        // An empty queue has nothing to expire. Seeking into it anyway would walk, key by key,
        // over the deletion markers of every trimmed entry after it until the next live key.
        if last_seq <= floor {
            return Ok(());
        }
        let end = keys::entry(QueueId(queue.0 + 1), 0);
        iter.seek(keys::entry(queue, floor + 1));
        let mut expired_to = None;
        for _ in 0..SWEEP_ENTRIES_PER_QUEUE {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else { break };
            if key >= &end[..] || decode_u64(value, "entry")? > now {
                break;
            }
            expired_to = keys::entry_seq(key);
            iter.next();
        }
        iter.status()?;
        let Some(expired_to) = expired_to else { return Ok(()) };
        let state = self.queue(queue)?;
        if expired_to > state.floor {
            delete_entries(batch, queue, state.floor, expired_to);
            state.floor = expired_to;
            staged.floors.push((queue, expired_to));
            mark_dirty(staged, queue);
        }
        Ok(())
    }

    /// Forgets the dedupe records whose message ids are older than `cutoff`: in memory in
    /// every shard, and on disk (one range deletion, as the records are in id order across
    /// all queues) by shard 0.
    fn purge_dedupe(&mut self, cutoff: u128, batch: &mut Batch) -> Result<(), StoreError> {
        self.purging_dedupe = false;
        self.last_dedupe_purge = Some(Instant::now());
        self.recent()?.forget_below(cutoff);
        if self.index != 0 {
            return Ok(());
        }
        let first = keys::dedupe(QueueId(0), 0, 0);
        let end = keys::dedupe(QueueId(0), cutoff, 0);
        let mut iter = self.db.raw_iterator();
        iter.seek(first);
        iter.status()?;
        if iter.key().is_some_and(|key| key < &end[..]) {
            batch.delete_range(first, end);
        }
        // Blocks of a millisecond before the cutoff's hold only older ids.
        let (first, end) =
            (keys::dedupe_blocks_of(0), keys::dedupe_blocks_of(dedupe::ms_of(cutoff)));
        iter.seek(first);
        iter.status()?;
        if iter.key().is_some_and(|key| key < &end[..]) {
            batch.delete_range(first, end);
        }
        Ok(())
    }

    fn idle_sweep(&mut self, budget: Duration) {
        self.last_sweep = Instant::now();
        let mut batch = Batch::default();
        let mut staged = Staged::default();
        if let Err(error) = self.sweep(SWEEP_QUEUES_PER_TICK, Some(budget), &mut batch, &mut staged)
        {
            tracing::warn!(shard = self.index, %error, "sweep failed");
            return;
        }
        for queue in std::mem::take(&mut staged.dirty) {
            if let Some(state) = self.queues.get(&queue) {
                batch.put(
                    keys::queue_meta(queue),
                    encode_meta(state.last_seq, state.floor, &state.name),
                );
            }
        }
        if !batch.is_empty() {
            match self.db.write_opt(batch.into_write_batch(), &self.write_options) {
                Ok(()) => self.shared.tails.forget_through(staged.floors),
                Err(error) => {
                    tracing::warn!(shard = self.index, %error, "sweep batch failed");
                    self.queues.clear();
                }
            }
        }
    }

    fn maybe_measure_disk(&mut self) {
        if self.index != 0 || self.last_disk_check.elapsed() < DISK_CHECK_EVERY {
            return;
        }
        self.last_disk_check = Instant::now();
        let used = disk_usage(&self.db, &self.shared.config.path);
        self.shared.disk_used.store(used, Ordering::Relaxed);
    }

    /// The state of a queue this shard owns, loaded from RocksDB on first use.
    fn queue(&mut self, queue: QueueId) -> Result<&mut QueueState, StoreError> {
        match self.queues.entry(queue) {
            hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            hash_map::Entry::Vacant(vacant) => {
                let meta = load_meta(&self.db, queue)?;
                // A queue another shard created is learnt when this shard first touches it.
                if let Some(owned) = self.owned.as_mut() {
                    owned.insert(queue);
                }
                Ok(vacant.insert(QueueState {
                    last_seq: meta.last_seq,
                    floor: meta.floor,
                    name: meta.name,
                    readers: None,
                }))
            }
        }
    }

    /// Like [`Self::queue`], with the readers loaded too.
    fn readers_of(&mut self, queue: QueueId) -> Result<&mut QueueState, StoreError> {
        let db = self.db.clone();
        let state = self.queue(queue)?;
        if state.readers.is_none() {
            let prefix = keys::readers_of(queue);
            let mut options = ReadOptions::default();
            options.set_iterate_upper_bound(keys::prefix_end(&prefix));
            let mut readers = Readers::default();
            for item in db.iterator_opt(IteratorMode::From(&prefix, Direction::Forward), options) {
                let (key, value) = item?;
                let device = keys::reader_device(&key)
                    .ok_or_else(|| StoreError::Corrupt("reader key".into()))?;
                readers.insert(device, decode_cursor(&value)?);
            }
            state.readers = Some(readers);
        }
        Ok(state)
    }

    /// A new id, unique across shards and restarts: a per-shard counter in the high 48 bits and
    /// the shard index in the low 16.
    fn allocate(&mut self, kind: u8, batch: &mut Batch) -> Result<u64, StoreError> {
        let key = keys::allocator(kind, self.index);
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
        (keys::mix(queue.0) % self.shard_count as u64) as usize
    }
}

fn put_record(batch: &mut Batch, staged: &mut Staged, key: Vec<u8>, value: Vec<u8>) {
    batch.put(key.clone(), value.clone());
    staged.records.insert(key, Some(value));
}

fn mark_dirty(staged: &mut Staged, queue: QueueId) {
    if !staged.dirty.contains(&queue) {
        staged.dirty.push(queue);
    }
}

/// Deletes the entries of `queue` with sequences in `(from, to]`.
fn delete_entries(batch: &mut Batch, queue: QueueId, from: u64, to: u64) {
    if to - from > RANGE_DELETE_ABOVE {
        batch.delete_range(keys::entry(queue, from + 1), keys::entry(queue, to + 1));
    } else {
        for seq in from + 1..=to {
            batch.delete(keys::entry(queue, seq));
        }
    }
}

/// The cursor after acknowledging `up_to` and `selective` from `old`, with `floor` (entries
/// already removed) counted as acknowledged.
fn advance(old: &Cursor, floor: u64, up_to: u64, selective: &[u64]) -> Cursor {
    let mut acked = old.acked.max(up_to).max(floor);
    let mut above: Vec<u64> =
        old.selective.iter().chain(selective).copied().filter(|&s| s > acked).collect();
    above.sort_unstable();
    above.dedup();
    let mut consumed = 0;
    for &seq in &above {
        if seq != acked + 1 {
            break;
        }
        acked = seq;
        consumed += 1;
    }
    above.drain(..consumed);
    Cursor { acked, selective: above }
}

pub(crate) struct Meta {
    pub(crate) last_seq: u64,
    pub(crate) floor: u64,
    pub(crate) name: Box<str>,
}

impl Meta {
    pub(crate) fn stats(&self) -> QueueStats {
        QueueStats { last_seq: self.last_seq, floor: self.floor }
    }
}

/// A queue's record, with the last sequence raised to the queue's last entry (appends do not
/// rewrite the record).
/// The largest message id in the dedupe blocks of millisecond `ms` (the last record of each:
/// records are sorted).
fn newest_in_blocks_of(
    iter: &mut rocksdb::DBRawIterator<'_>,
    ms: u64,
) -> Result<Option<u128>, StoreError> {
    let prefix = keys::dedupe_blocks_of(ms);
    iter.seek(prefix);
    let mut newest = None;
    while let (Some(key), Some(block)) = (iter.key(), iter.value()) {
        if !key.starts_with(&prefix) {
            break;
        }
        newest = newest.max(dedupe::decode_block(block)?.last().map(|r| r.id));
        iter.next();
    }
    iter.status()?;
    Ok(newest)
}

/// How many dedupe blocks millisecond `ms` has, counted up to [`MAX_BLOCKS_PER_MS`];
/// `usize::MAX` if RocksDB could not tell (the caller then writes single records, which are
/// always safe).
fn blocks_of(iter: &mut rocksdb::DBRawIterator<'_>, ms: u64) -> usize {
    let prefix = keys::dedupe_blocks_of(ms);
    iter.seek(prefix);
    let mut count = 0;
    while count < MAX_BLOCKS_PER_MS && iter.key().is_some_and(|key| key.starts_with(&prefix)) {
        count += 1;
        iter.next();
    }
    if iter.status().is_err() { usize::MAX } else { count }
}

pub(crate) fn load_meta(db: &DB, queue: QueueId) -> Result<Meta, StoreError> {
    let raw = db.get_pinned(keys::queue_meta(queue))?.ok_or(StoreError::UnknownQueue(queue))?;
    let mut meta = decode_meta(&raw)?;
    let mut options = ReadOptions::default();
    options.set_iterate_lower_bound(keys::entry(queue, 0).to_vec());
    let last_key = keys::entry(queue, u64::MAX);
    let mut iter = db.iterator_opt(IteratorMode::From(&last_key, Direction::Reverse), options);
    if let Some(item) = iter.next() {
        let (key, _) = item?;
        let seq = keys::entry_seq(&key).ok_or_else(|| StoreError::Corrupt("entry key".into()))?;
        meta.last_seq = meta.last_seq.max(seq);
    }
    Ok(meta)
}

fn encode_meta(last_seq: u64, floor: u64, name: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(16 + name.len());
    value.extend_from_slice(&last_seq.to_be_bytes());
    value.extend_from_slice(&floor.to_be_bytes());
    value.extend_from_slice(name.as_bytes());
    value
}

pub(crate) fn decode_meta(value: &[u8]) -> Result<Meta, StoreError> {
    if value.len() < 16 {
        return Err(StoreError::Corrupt(format!("queue record of {} bytes", value.len())));
    }
    let name = std::str::from_utf8(&value[16..])
        .map_err(|_| StoreError::Corrupt("queue name is not UTF-8".into()))?;
    Ok(Meta { last_seq: keys::be_u64(value), floor: keys::be_u64(&value[8..]), name: name.into() })
}

fn encode_cursor(cursor: &Cursor) -> Vec<u8> {
    let mut value = Vec::with_capacity(10 + 8 * cursor.selective.len());
    value.extend_from_slice(&cursor.acked.to_be_bytes());
    value.extend_from_slice(&(cursor.selective.len() as u16).to_be_bytes());
    for seq in &cursor.selective {
        value.extend_from_slice(&seq.to_be_bytes());
    }
    value
}

pub(crate) fn decode_cursor(value: &[u8]) -> Result<Cursor, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("reader record of {} bytes", value.len()));
    if value.len() < 10 {
        return Err(corrupt());
    }
    let count = usize::from(u16::from_be_bytes([value[8], value[9]]));
    if value.len() != 10 + 8 * count {
        return Err(corrupt());
    }
    let selective = value[10..].chunks_exact(8).map(keys::be_u64).collect();
    Ok(Cursor { acked: keys::be_u64(value), selective })
}

pub(crate) fn decode_entry(seq: u64, value: &[u8]) -> Result<Entry, StoreError> {
    let expires_ms = decode_u64(value, "entry")?;
    Ok(Entry { seq, expires_ms, payload: Bytes::copy_from_slice(&value[8..]) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(acked: u64, selective: &[u64]) -> Cursor {
        Cursor { acked, selective: selective.to_vec() }
    }

    #[test]
    fn cumulative_ack_moves_the_cursor_and_drops_selective_below_it() {
        assert_eq!(advance(&cursor(2, &[5, 9]), 0, 6, &[]), cursor(6, &[9]));
    }

    #[test]
    fn selective_ack_that_closes_the_gap_moves_the_cursor_over_the_run() {
        assert_eq!(advance(&cursor(2, &[4, 5, 7]), 0, 0, &[3]), cursor(5, &[7]));
    }

    #[test]
    fn an_older_cumulative_ack_never_moves_the_cursor_back() {
        assert_eq!(advance(&cursor(10, &[]), 0, 4, &[]), cursor(10, &[]));
    }

    #[test]
    fn removed_entries_below_the_floor_count_as_acknowledged() {
        assert_eq!(advance(&cursor(1, &[]), 8, 0, &[9, 11]), cursor(9, &[11]));
    }

    #[test]
    fn lowest_reader_position_follows_inserts_and_removals() {
        let mut readers = Readers::default();
        readers.insert(DeviceId(1), cursor(5, &[]));
        readers.insert(DeviceId(2), cursor(3, &[]));
        readers.insert(DeviceId(3), cursor(3, &[]));
        assert_eq!(readers.lowest(), Some(3));
        readers.insert(DeviceId(2), cursor(7, &[]));
        assert_eq!(readers.lowest(), Some(3));
        readers.remove(DeviceId(3));
        assert_eq!(readers.lowest(), Some(5));
        readers.remove(DeviceId(1));
        readers.remove(DeviceId(2));
        assert_eq!(readers.lowest(), None);
    }

    #[test]
    fn cursor_records_round_trip_and_bad_lengths_are_corrupt() {
        let c = cursor(42, &[44, 50]);
        assert_eq!(decode_cursor(&encode_cursor(&c)).unwrap(), c);
        assert!(matches!(decode_cursor(&[0; 11]), Err(StoreError::Corrupt(_))));
    }

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
        let prefix = keys::dedupe_blocks_of(ms);
        let blocks = store
            .db
            .prefix_iterator(prefix)
            .take_while(|item| item.as_ref().is_ok_and(|(key, _)| key.starts_with(&prefix)));
        let count = blocks.count();
        assert!((1..=MAX_BLOCKS_PER_MS).contains(&count), "{count} blocks");
        // Memory was emptied by the reopen: every check below goes to disk.
        for (n, &seq) in (1..=1_240).zip(&seqs) {
            let again = store.enqueue(queue, request(n)).wait().unwrap();
            assert_eq!(again, crate::store::Enqueued { seq, duplicate: true }, "message {n}");
        }
        assert!(store.metrics().dedupe_disk_lookups.load(Ordering::Relaxed) >= 1_240);
        assert_eq!(store.stats(queue).unwrap().last_seq, 1_240);
    }
}
