//! Durable per-recipient queues in RocksDB, sharded by recipient, with group commit.
//!
//! A *queue* holds the messages of one recipient: a user, or a shared line (a department, a
//! group), or the outbound traffic for one remote hub. Each queue has its own increasing
//! sequence numbers. *Devices* read queues: a device reads its user's queue and the queue of
//! every line it is subscribed to, each with its own cursor. An entry is removed when every
//! device that reads its queue has acknowledged it, or when its time-to-live ends. A message to a
//! line of 10,000 members is therefore one append; only deliveries grow with the line.
//!
//! Every queue belongs to one shard. Each shard has one writer thread that owns the in-memory
//! state of its queues (sequence counters, reader cursors) and receives commands over a channel.
//! The writer takes every command waiting, applies them all to one RocksDB `WriteBatch`, writes
//! it with `sync = true` (one fsync for the lot: group commit), and only then completes the
//! callers. Nothing is acknowledged before it is durable.
//!
//! Reads ([`Store::read`]) go straight to RocksDB from the calling thread; they block, so call
//! them from a thread that may block (a shard writer, a test), or from async code through
//! [`Store::blocking`], which runs them on tokio's blocking pool.
//!
//! After a crash, [`Store::open`] replays nothing by hand: RocksDB's state is the truth, and
//! sequence numbers continue after the last durable one.

mod batch;
mod codec;
mod dedupe;
mod error;
mod registry;
pub mod space;
mod tail;
mod writer;

use std::{
    fmt,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use crossbeam_channel::Sender;
use rocksdb::{DB, Direction, IteratorMode, ReadOptions};
use tokio::sync::oneshot;

pub use error::StoreError;
pub use registry::{DeviceKind, DeviceRecord, UserRecord, UserStatus};
// `TokenRecord` is defined below, beside the token keys.
use writer::{Command, ShardWriter};

/// The id of a queue. Allocated by the store; stable for the queue's life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct QueueId(pub u64);

/// The id of a device (a reader of queues). Allocated by the store.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct DeviceId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{}", self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

/// Where a new reader's cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At the oldest message the queue still holds: a user's new device gets what is still
    /// waiting for the user's other devices.
    Oldest,
    /// After the newest message: a new member of a line sees only what comes from now on.
    Next,
}

/// Settings of the store. Every field has a default measured on a 2-core machine.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The RocksDB directory.
    pub path: PathBuf,
    /// Number of shards, each with one writer thread. Default: 2.
    pub shards: usize,
    /// Most commands one writer puts in one write batch (one fsync). Default: 8,192.
    pub max_batch: usize,
    /// How long a writer waits for more commands after the first of a batch (none of
    /// acknowledgements alone): fewer, larger batches under load, each message that much later.
    /// Default: zero.
    pub commit_linger: Duration,
    /// Most unconsumed messages per queue before `BacklogFull`. Default: 1,000,000.
    pub backlog_limit: u64,
    /// Bytes the store may use on disk before new messages are refused; `None`: no limit.
    /// Default: none.
    pub disk_budget: Option<u64>,
    /// How long a (sender, id) pair is remembered to drop duplicates. Default: 7 days.
    pub dedupe_window: Duration,
    /// Dedupe records kept in memory, over all shards, so that a new message id needs no disk
    /// lookup (about 56 bytes each when full; older ids are looked up on disk). Default:
    /// 1,000,000.
    pub dedupe_memory: usize,
    /// Bytes of the newest entries of the queues kept in memory, so that the sessions of
    /// devices that keep up read them without RocksDB (every member of a line reads the same
    /// entry). 0 keeps none. Default: 64 MiB.
    pub tail_cache_bytes: usize,
    /// Most selective acks a device may hold above its cursor in one queue. Default: 4,096.
    pub max_selective: usize,
    /// Bytes of one RocksDB memtable (write buffer). Default: 64 MiB.
    pub memtable_bytes: usize,
    /// Fsync every write batch. Default: true. Only benchmarks of the non-durable case turn it
    /// off.
    pub sync: bool,
    /// Free bytes on the store's filesystem below which new messages are refused (see
    /// [`space`]). Default: 0 (not watched).
    pub min_free_bytes: u64,
    /// Bytes of the reserve file released when the disk is full. Default: 0 (none).
    pub reserve_bytes: u64,
}

impl StoreConfig {
    /// The defaults, with the database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            shards: 2,
            max_batch: 8192,
            commit_linger: Duration::ZERO,
            backlog_limit: 1_000_000,
            disk_budget: None,
            dedupe_window: Duration::from_secs(7 * 24 * 3600),
            dedupe_memory: 1_000_000,
            tail_cache_bytes: 64 << 20,
            max_selective: 4096,
            memtable_bytes: 64 << 20,
            sync: true,
            min_free_bytes: 0,
            reserve_bytes: 0,
        }
    }
}

/// A message to append to a queue.
#[derive(Debug, Clone)]
pub struct EnqueueRequest {
    /// The sender's id of the message; with `sender`, the dedupe key.
    pub id: u128,
    /// The sender (its address text); with `id`, the dedupe key.
    pub sender: Bytes,
    /// When the entry expires, Unix milliseconds.
    pub expires_ms: u64,
    /// The stored bytes (the encoded envelope); opaque to the store.
    pub payload: Bytes,
}

/// The result of an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The message's sequence in its queue.
    pub seq: u64,
    /// True when the same (sender, id) was already in the queue: nothing was appended and
    /// `seq` is the first copy's.
    pub duplicate: bool,
}

/// One message read from a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence.
    pub seq: u64,
    /// When it expires, Unix milliseconds.
    pub expires_ms: u64,
    /// The stored bytes.
    pub payload: Bytes,
}

/// A device's position in one queue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Every sequence up to this one is acknowledged.
    pub acked: u64,
    /// Sequences above `acked` also acknowledged, ascending.
    pub selective: Vec<u64>,
}

/// The outbound queue for one remote hub, with its single reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outbound {
    /// The queue of messages waiting for the remote hub.
    pub queue: QueueId,
    /// The reader that stands for the hub link.
    pub link: DeviceId,
}

/// What a queue holds, as its writer last committed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// The last sequence given out (0 before the first message).
    pub last_seq: u64,
    /// Every sequence up to this one has been removed (acknowledged by all, or expired).
    pub floor: u64,
}

impl QueueStats {
    /// Messages between the floor and the tail: the queue's backlog.
    pub fn backlog(&self) -> u64 {
        self.last_seq - self.floor
    }
}

/// An operation handed to a shard writer; resolves when it is durable (or failed).
///
/// Await it from async code, or call [`Pending::wait`] from a thread that may block.
#[must_use = "the operation's result says whether it is durable"]
pub struct Pending<T> {
    rx: oneshot::Receiver<Result<T, StoreError>>,
}

impl<T> Pending<T> {
    /// Blocks until the operation is durable or failed. Must not be called on a tokio worker.
    pub fn wait(self) -> Result<T, StoreError> {
        self.rx.blocking_recv().unwrap_or(Err(StoreError::Closed))
    }

    fn failed(error: StoreError) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(error));
        Self { rx }
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, StoreError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(StoreError::Closed)))
    }
}

/// Counters of the writers' work, for metrics and benchmarks.
#[derive(Debug)]
pub struct StoreMetrics {
    /// Write batches committed (see `synced_batches` for how many were fsynced).
    pub batches: AtomicU64,
    /// Commands committed in those batches.
    pub commands: AtomicU64,
    /// Messages appended (duplicates not counted).
    pub enqueued: AtomicU64,
    /// Write batches fsynced (batches of acknowledgements alone are not).
    pub synced_batches: AtomicU64,
    /// Dedupe checks that had to look on disk (the id was older than what memory holds).
    pub dedupe_disk_lookups: AtomicU64,
    /// Nanoseconds the writers spent preparing batches (checks, dedupe lookups, building).
    pub prepare_nanos: AtomicU64,
    /// Nanoseconds the writers spent in RocksDB writes (memtable, WAL and its fsync).
    pub write_nanos: AtomicU64,
    /// Seconds a group commit takes from building its batch to the write being durable
    /// (checks, the write, the fsync), one observation per batch written.
    pub commit_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Messages appended per fsynced batch that appended any (what one fsync bought).
    pub batch_messages: prometheus_client::metrics::histogram::Histogram,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
        Self {
            batches: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            enqueued: AtomicU64::new(0),
            synced_batches: AtomicU64::new(0),
            dedupe_disk_lookups: AtomicU64::new(0),
            prepare_nanos: AtomicU64::new(0),
            write_nanos: AtomicU64::new(0),
            // 25 µs to about 0.8 s.
            commit_seconds: Histogram::new(exponential_buckets(25e-6, 2.0, 16)),
            // 1 to 8192 (the largest batch by default).
            batch_messages: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
        }
    }
}

/// How many messages the queues hold, per shard, with the largest queues.
#[derive(Debug, Clone, Default)]
pub struct QueueDepths {
    /// Queues in the store.
    pub queues: u64,
    /// Messages held (between each queue's floor and tail), per shard.
    pub held_per_shard: Vec<u64>,
    /// The queues holding the most, largest first: name and messages held.
    pub largest: Vec<(String, u64)>,
}

/// RocksDB's own figures that tell an operator the disk is falling behind.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineFigures {
    /// Microseconds writes have been stalled or slowed by RocksDB since the store opened.
    pub stall_micros: u64,
    /// Whether writes are stopped now.
    pub write_stopped: bool,
    /// Bytes compaction has to rewrite to bring the levels back in shape.
    pub pending_compaction_bytes: u64,
    /// Bytes in the memtables (active and waiting to be flushed).
    pub memtable_bytes: u64,
    /// Bytes the block cache holds.
    pub block_cache_bytes: u64,
    /// Bytes of the block cache.
    pub block_cache_capacity: u64,
    /// Bytes of the SST files.
    pub sst_bytes: u64,
}

/// The durable queue store. Cheap to share behind an `Arc`; dropping it stops the writers after
/// they finish what they hold.
pub struct Store {
    db: Arc<DB>,
    /// The options the database was opened with: they hold its statistics.
    options: rocksdb::Options,
    /// Each shard writer's channel; emptied by [`Store::shutdown`], which disconnects them.
    shards: ArcSwap<Vec<Sender<Command>>>,
    shard_count: usize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

/// State every writer and the store handle share.
pub(crate) struct Shared {
    pub(crate) config: StoreConfig,
    pub(crate) metrics: StoreMetrics,
    /// Current disk budget (0: unlimited); changeable at run time.
    pub(crate) disk_budget: AtomicU64,
    /// Bytes in use as last measured.
    pub(crate) disk_used: AtomicU64,
    pub(crate) clock: Box<dyn Fn() -> u64 + Send + Sync>,
    /// The newest committed entries of the queues.
    pub(crate) tails: tail::Tails,
    /// Free space on the store's filesystem.
    pub(crate) space: space::Space,
    /// `config.backlog_limit`, changed by a reload.
    pub(crate) backlog_limit: AtomicU64,
}

impl Store {
    /// Opens (or creates) the store at `config.path` and starts its shard writers.
    pub fn open(config: StoreConfig) -> Result<Self, StoreError> {
        Self::open_with_clock(config, Box::new(system_clock_ms))
    }

    /// Like [`Store::open`], with a clock (Unix milliseconds) other than the system's, for tests
    /// of expiry and dedupe windows.
    pub fn open_with_clock(
        config: StoreConfig,
        clock: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Result<Self, StoreError> {
        let shard_count = config.shards.clamp(1, u16::MAX as usize);
        let options = db_options(&config)?;
        let db = Arc::new(DB::open(&options, &config.path)?);
        let budget = config.disk_budget.unwrap_or(0);
        let backlog_limit = config.backlog_limit;
        let tails = tail::Tails::new(config.tail_cache_bytes);
        let space = space::Space::new(&config.path, config.min_free_bytes, config.reserve_bytes);
        let shared = Arc::new(Shared {
            tails,
            space,
            config,
            metrics: StoreMetrics::default(),
            disk_budget: AtomicU64::new(budget),
            backlog_limit: AtomicU64::new(backlog_limit),
            disk_used: AtomicU64::new(0),
            clock,
        });
        let mut shards = Vec::with_capacity(shard_count);
        let mut threads = Vec::with_capacity(shard_count);
        for index in 0..shard_count {
            let (tx, rx) = crossbeam_channel::unbounded();
            let writer = ShardWriter::new(index as u16, shard_count, db.clone(), shared.clone());
            let thread = std::thread::Builder::new()
                .name(format!("store-shard-{index}"))
                .spawn(move || writer.run(rx))
                .map_err(|e| StoreError::Storage(format!("cannot start shard writer: {e}")))?;
            shards.push(tx);
            threads.push(thread);
        }
        let store = Self {
            db,
            options,
            shards: ArcSwap::from_pointee(shards),
            shard_count,
            threads: Mutex::new(threads),
            shared,
        };
        store.measure_disk();
        Ok(store)
    }

    /// Creates the queue named `name`, or returns the existing one's id.
    pub fn create_queue(&self, name: &str) -> Pending<QueueId> {
        if name.is_empty() || name.len() > 1024 {
            return Pending::failed(StoreError::InvalidName(format!("{} bytes", name.len())));
        }
        let shard = self.shard_of_name(name);
        self.submit(shard, |done| Command::CreateQueue { name: name.into(), done })
    }

    /// The name of `queue`.
    pub fn queue_name(&self, queue: QueueId) -> Result<String, StoreError> {
        Ok(writer::load_meta(&self.db, queue)?.name.into())
    }

    /// The id of the queue named `name`, if there is one.
    pub fn queue_id(&self, name: &str) -> Result<Option<QueueId>, StoreError> {
        let value = self.db.get_pinned(codec::queue_name(name))?;
        value.map(|v| decode_u64(&v, "queue name").map(QueueId)).transpose()
    }

    /// Registers a new device of the account whose queue is `account`; it reads that queue
    /// from its oldest message.
    pub fn add_device(&self, account: QueueId) -> Pending<DeviceId> {
        self.submit(self.shard_of(account), |done| Command::AddDevice { account, done })
    }

    /// The account queue a device belongs to, if the device exists.
    pub fn device_account(&self, device: DeviceId) -> Result<Option<QueueId>, StoreError> {
        let value = self.db.get_pinned(codec::device(device))?;
        value.map(|v| decode_u64(&v, "device").map(QueueId)).transpose()
    }

    /// Makes `device` a reader of `queue` (a line or group), durably. Subscribing again keeps
    /// the device's cursor.
    pub fn subscribe(&self, device: DeviceId, queue: QueueId, start: StartAt) -> Pending<()> {
        self.submit(self.shard_of(queue), |done| Command::Subscribe { queue, device, start, done })
    }

    /// Stops `device` reading `queue`, durably; what only it held back may then be trimmed.
    pub fn unsubscribe(&self, device: DeviceId, queue: QueueId) -> Pending<()> {
        self.submit(self.shard_of(queue), |done| Command::Unsubscribe { queue, device, done })
    }

    /// The queues `device` reads.
    pub fn subscriptions(&self, device: DeviceId) -> Result<Vec<QueueId>, StoreError> {
        let prefix = codec::subscriptions_of(device);
        self.scan_keys(&prefix, codec::subscription_queue)
    }

    /// Where `device`'s reading of `queue` started: the sequence its cursor was given when it
    /// subscribed (the queue's floor for [`StartAt::Oldest`], its last sequence for
    /// [`StartAt::Next`]). `None` if it does not read `queue`; 0 for a subscription made before
    /// starts were recorded.
    pub fn subscribed_at(
        &self,
        device: DeviceId,
        queue: QueueId,
    ) -> Result<Option<u64>, StoreError> {
        let Some(value) = self.db.get_pinned(codec::subscription(device, queue))? else {
            return Ok(None);
        };
        if value.is_empty() {
            return Ok(Some(0));
        }
        decode_u64(&value, "subscription").map(Some)
    }

    /// Whether the entry `seq` of `queue` reached `device`: it came after the device's start
    /// and the device acknowledged it, or it is at or below `handed` (what the device's
    /// session has handed out, acknowledged or not). Reads RocksDB.
    pub fn reached_device(
        &self,
        queue: QueueId,
        device: DeviceId,
        seq: u64,
        handed: u64,
    ) -> Result<bool, StoreError> {
        let Some(start) = self.subscribed_at(device, queue)? else { return Ok(false) };
        if seq <= start {
            return Ok(false);
        }
        if seq <= handed {
            return Ok(true);
        }
        let cursor = match self.cursor(queue, device) {
            Ok(cursor) => cursor,
            Err(StoreError::NotSubscribed { .. }) => return Ok(false),
            Err(error) => return Err(error),
        };
        Ok(seq <= cursor.acked || cursor.selective.binary_search(&seq).is_ok())
    }

    /// The devices that read `queue`.
    pub fn readers(&self, queue: QueueId) -> Result<Vec<DeviceId>, StoreError> {
        let prefix = codec::readers_of(queue);
        self.scan_keys(&prefix, codec::reader_device)
    }

    /// Removes a device: unsubscribes it from every queue it reads, then forgets it. Each step
    /// is durable and idempotent, so a crash in between is repaired by calling it again.
    pub async fn remove_device(&self, device: DeviceId) -> Result<(), StoreError> {
        for queue in self.subscriptions(device)? {
            self.unsubscribe(device, queue).await?;
        }
        let account = self.device_account(device)?.ok_or(StoreError::UnknownDevice(device))?;
        self.submit(self.shard_of(account), |done| Command::ForgetDevice { device, done }).await
    }

    /// The outbound queue for the remote hub `hub`, and the one reader (the hub link) that
    /// reads it; created on first use. Messages for that hub are enqueued on `queue`, read in
    /// order through `link`, and acknowledged (dropped) after the remote hub's relay-ack.
    /// One hub link manager owns each outbound queue; it must not call this concurrently for
    /// the same hub.
    pub async fn outbound(&self, hub: &str) -> Result<Outbound, StoreError> {
        self.link_queue(&format!("hub:{hub}")).await
    }

    /// The mailbox of `user`, a user of this hub whose home hub is another: the queue of what
    /// waits to be relayed to their home hub (`mailbox:<user>`), with the one reader standing
    /// for the link to whichever hub is their home. The user's devices read it too (they are
    /// subscribed to it, see [`Store::subscribe`]), each with its own cursor.
    pub async fn mailbox(&self, user: &str) -> Result<Outbound, StoreError> {
        self.link_queue(&format!("mailbox:{user}")).await
    }

    /// The hand-off queue of `user` on their registration hub: what their former home hub
    /// handed over (`handoff:<user>`), relayed to the new home hub before the mailbox.
    pub async fn handoff_queue(&self, user: &str) -> Result<Outbound, StoreError> {
        self.link_queue(&format!("handoff:{user}")).await
    }

    /// The reader of `user`'s mailbox standing for the link to their former home hub during a
    /// hand-off (the mailbox's second own reader, created on first use where the home link is):
    /// the former home hub gets the mailbox up to the move with its own cursor, whatever the
    /// new home hub has read.
    pub async fn mailbox_stand_in(&self, user: &str) -> Result<Outbound, StoreError> {
        let mailbox = self.mailbox(user).await?;
        let link = match self.link_readers(mailbox.queue)?.get(1) {
            Some(&link) => link,
            None => {
                // It starts where the home link is: what the user's devices hold further back
                // (they read the mailbox too) the former home hub had already.
                let link = self.add_device(mailbox.queue).await?;
                let at = self.cursor(mailbox.queue, mailbox.link)?.acked;
                self.ack(mailbox.queue, link, at, Vec::new()).await?;
                link
            }
        };
        Ok(Outbound { queue: mailbox.queue, link })
    }

    /// Removes the stand-in reader of `user`'s mailbox, if there is one: the hand-off is over,
    /// and what only it held back may be trimmed.
    pub async fn drop_mailbox_stand_in(&self, user: &str) -> Result<(), StoreError> {
        let mailbox = self.mailbox(user).await?;
        match self.link_readers(mailbox.queue)?.get(1) {
            Some(&link) => self.remove_device(link).await,
            None => Ok(()),
        }
    }

    /// The readers of `queue` that belong to it (made by [`Store::add_device`] on the queue
    /// itself, as hub links' readers are), oldest first; not the devices subscribed to it.
    fn link_readers(&self, queue: QueueId) -> Result<Vec<DeviceId>, StoreError> {
        let mut own = Vec::new();
        for device in self.readers(queue)? {
            if self.device_account(device)? == Some(queue) {
                own.push(device);
            }
        }
        Ok(own)
    }

    /// A queue named `name` with the one reader standing for a hub link.
    async fn link_queue(&self, name: &str) -> Result<Outbound, StoreError> {
        let queue = self.create_queue(name).await?;
        let link = match self.link_readers(queue)?.first() {
            Some(&link) => link,
            None => self.add_device(queue).await?,
        };
        Ok(Outbound { queue, link })
    }

    /// Appends `request` to `queue` and, if that is taken, `copy` to its queue, in one write
    /// (one fsync); both queues must be of one shard ([`Store::same_shard`]). Answers the first
    /// append and the copy's own result; a refused first append refuses the whole.
    pub fn enqueue_with_copy(
        &self,
        queue: QueueId,
        request: EnqueueRequest,
        copy: (QueueId, EnqueueRequest),
    ) -> Pending<(Enqueued, Result<Enqueued, StoreError>)> {
        debug_assert!(self.same_shard(queue, copy.0));
        self.submit(self.shard_of(queue), |done| Command::EnqueueWithCopy {
            queue,
            request,
            copy,
            done,
        })
    }

    /// Whether `a` and `b` are written by the same shard writer (so one write can hold both).
    pub fn same_shard(&self, a: QueueId, b: QueueId) -> bool {
        self.shard_of(a) == self.shard_of(b)
    }

    /// The sequence in `queue` of the message (`sender`, `id`), if its dedupe record is still
    /// kept (within the dedupe window). Reads RocksDB.
    pub fn dedupe_seq(
        &self,
        queue: QueueId,
        sender: &[u8],
        id: u128,
    ) -> Result<Option<u64>, StoreError> {
        let record =
            dedupe::Record { id, queue: queue.0, sender: codec::stable_hash(sender), seq: 0 };
        dedupe::lookup_on_disk(&self.db, &record)
    }

    /// Appends one message to `queue`. Resolves once it is durable. The same (sender, id) within
    /// the dedupe window appends nothing and answers the first copy's sequence.
    pub fn enqueue(&self, queue: QueueId, request: EnqueueRequest) -> Pending<Enqueued> {
        self.submit(self.shard_of(queue), |done| Command::Enqueue { queue, request, done })
    }

    /// Appends `payloads` to `queue` as a log of the hub's own, in one atomic write: all of
    /// them or none. Log entries never expire, carry no sender and no dedupe record, and are
    /// not held to the backlog limit. Answers their sequences.
    pub fn append_log(&self, queue: QueueId, payloads: Vec<Bytes>) -> Pending<Vec<u64>> {
        self.submit(self.shard_of(queue), |done| Command::AppendLog { queue, payloads, done })
    }

    /// Acknowledges, for `device`, every entry of `queue` up to `up_to` and the listed
    /// `selective` ones; entries every reader has acknowledged are removed.
    pub fn ack(
        &self,
        queue: QueueId,
        device: DeviceId,
        up_to: u64,
        selective: Vec<u64>,
    ) -> Pending<Cursor> {
        self.submit(self.shard_of(queue), |done| Command::Ack {
            queue,
            device,
            up_to,
            selective,
            done,
        })
    }

    /// The cursor of `device` in `queue`.
    pub fn cursor(&self, queue: QueueId, device: DeviceId) -> Result<Cursor, StoreError> {
        let value = self
            .db
            .get_pinned(codec::reader(queue, device))?
            .ok_or(StoreError::NotSubscribed { queue, device })?;
        codec::decode_cursor(&value)
    }

    /// Up to `max` entries of `queue` that `device` has not acknowledged, in order, skipping
    /// expired ones. Blocks on RocksDB.
    pub fn read(
        &self,
        queue: QueueId,
        device: DeviceId,
        max: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let cursor = self.cursor(queue, device)?;
        let mut entries = self.read_after(queue, cursor.acked, max + cursor.selective.len())?;
        entries.retain(|e| cursor.selective.binary_search(&e.seq).is_err());
        entries.truncate(max);
        Ok(entries)
    }

    /// Up to `max` unexpired entries of `queue` with a sequence above `after`, in order.
    /// May wait for the disk: call it where blocking is allowed.
    pub fn read_after(
        &self,
        queue: QueueId,
        after: u64,
        max: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.read_entries(queue, after, max, ReadOptions::default())?
            .ok_or_else(|| StoreError::Storage("a read of every tier came back incomplete".into()))
    }

    /// Like [`Store::read_after`], but only from memory (the newest entries the writers
    /// keep, then RocksDB's memtables and block cache): `None` if the read would have to wait
    /// for the disk. A device keeping up with its queue reads here without leaving its task.
    pub fn read_after_cached(
        &self,
        queue: QueueId,
        after: u64,
        max: usize,
    ) -> Result<Option<Vec<Entry>>, StoreError> {
        if let Some(entries) = self.shared.tails.read(queue, after, max, (self.shared.clock)()) {
            return Ok(Some(entries));
        }
        let mut options = ReadOptions::default();
        options.set_read_tier(rocksdb::ReadTier::BlockCache);
        self.read_entries(queue, after, max, options)
    }

    fn read_entries(
        &self,
        queue: QueueId,
        after: u64,
        max: usize,
        mut options: ReadOptions,
    ) -> Result<Option<Vec<Entry>>, StoreError> {
        let now = (self.shared.clock)();
        options.set_iterate_upper_bound(codec::entry(QueueId(queue.0 + 1), 0).to_vec());
        let start = codec::entry(queue, after.saturating_add(1));
        let iter = self.db.iterator_opt(IteratorMode::From(&start, Direction::Forward), options);
        let mut entries = Vec::with_capacity(max.min(1024));
        for item in iter {
            if entries.len() >= max {
                break;
            }
            let (key, value) = match item {
                Ok(item) => item,
                Err(error) if error.kind() == rocksdb::ErrorKind::Incomplete => return Ok(None),
                Err(error) => return Err(error.into()),
            };
            let seq = codec::entry_seq(&key)
                .ok_or_else(|| StoreError::Corrupt("entry key of the wrong size".into()))?;
            let entry = codec::decode_entry(seq, &value)?;
            if entry.expires_ms > now {
                entries.push(entry);
            }
        }
        Ok(Some(entries))
    }

    /// Runs `work` (reads, or anything else that blocks on RocksDB) on tokio's blocking pool
    /// and answers its result: the one way async code (sessions, the admin API, fan-out) reads
    /// the store.
    pub async fn blocking<T, F>(self: &Arc<Self>, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .unwrap_or_else(|e| Err(StoreError::TaskFailed(e.to_string())))
    }

    /// Writes the memtables to table files (RocksDB would do it by itself when they fill).
    /// For tests and for an operator preparing a backup.
    pub fn flush(&self) -> Result<(), StoreError> {
        Ok(self.db.flush()?)
    }

    /// The queue's sequence counters.
    pub fn stats(&self, queue: QueueId) -> Result<QueueStats, StoreError> {
        writer::load_meta(&self.db, queue).map(|m| m.stats())
    }

    /// Removes expired entries and dedupe records older than the window, in every shard.
    /// The writers also do this by themselves when idle.
    pub async fn sweep(&self) -> Result<(), StoreError> {
        let mut pending = Vec::with_capacity(self.shard_count);
        for shard in 0..self.shard_count {
            pending.push(self.submit(shard, |done| Command::Sweep { done }));
        }
        for p in pending {
            p.await?;
        }
        Ok(())
    }

    /// Sets the most unconsumed messages one queue may hold; takes effect at once.
    pub fn set_backlog_limit(&self, limit: u64) {
        self.shared.backlog_limit.store(limit, Ordering::Relaxed);
    }

    /// Sets the disk budget in bytes (`None`: unlimited); takes effect at once.
    pub fn set_disk_budget(&self, budget: Option<u64>) {
        self.shared.disk_budget.store(budget.unwrap_or(0), Ordering::Relaxed);
        self.measure_disk();
    }

    /// Bytes the database uses on disk (SST files and the write-ahead logs), as measured now.
    pub fn measure_disk(&self) -> u64 {
        let used = disk_usage(&self.db, &self.shared.config.path);
        self.shared.disk_used.store(used, Ordering::Relaxed);
        used
    }

    /// The writers' counters.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.shared.metrics
    }

    /// Messages held per shard and the `largest` queues, read from the queue records and each
    /// queue's last entry (one pass and one seek per queue; blocks on RocksDB).
    pub fn queue_depths(&self, largest: usize) -> Result<QueueDepths, StoreError> {
        let mut depths =
            QueueDepths { held_per_shard: vec![0; self.shard_count], ..Default::default() };
        // A min-heap of the largest seen so far.
        let mut top: std::collections::BinaryHeap<std::cmp::Reverse<(u64, Box<str>)>> =
            std::collections::BinaryHeap::with_capacity(largest + 1);
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(vec![codec::QUEUE_META + 1]);
        let start = codec::queue_meta(QueueId(0));
        // A queue's record holds its floor; its tail is its last entry (the record's
        // `last_seq` is brought up to date only now and then), found with one seek.
        let mut entries = self.db.raw_iterator();
        for item in self.db.iterator_opt(IteratorMode::From(&start, Direction::Forward), options) {
            let (key, value) = item?;
            let Some(queue) = codec::queue_meta_id(&key) else { continue };
            let meta = codec::decode_meta(&value)?;
            entries.seek_for_prev(codec::entry(queue, u64::MAX));
            let last = match entries.key() {
                Some(key) if key.starts_with(&codec::entry(queue, 0)[..9]) => {
                    codec::entry_seq(key).unwrap_or(0)
                }
                _ => 0,
            };
            entries.status()?;
            let held = meta.last_seq.max(last).saturating_sub(meta.floor);
            depths.queues += 1;
            depths.held_per_shard[self.shard_of(queue)] += held;
            if largest > 0 && held > 0 {
                top.push(std::cmp::Reverse((held, meta.name)));
                if top.len() > largest {
                    top.pop();
                }
            }
        }
        let mut top: Vec<(String, u64)> =
            top.into_iter().map(|std::cmp::Reverse((held, name))| (name.into(), held)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        depths.largest = top;
        Ok(depths)
    }

    /// Writes a consistent copy of the whole store into `dir`, which must not exist: the
    /// memtables are flushed, then the table files are hard-linked (copied across
    /// filesystems) with the manifest. Writers go on meanwhile. Blocks on the disk.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StoreError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        checkpoint.create_checkpoint(dir)?;
        Ok(())
    }

    /// RocksDB's figures on stalls, compaction debt and memory.
    pub fn engine_figures(&self) -> EngineFigures {
        let int = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        EngineFigures {
            stall_micros: self.options.get_ticker_count(rocksdb::statistics::Ticker::StallMicros),
            write_stopped: int("rocksdb.is-write-stopped") != 0,
            pending_compaction_bytes: int("rocksdb.estimate-pending-compaction-bytes"),
            memtable_bytes: int("rocksdb.cur-size-all-mem-tables"),
            block_cache_bytes: int("rocksdb.block-cache-usage"),
            block_cache_capacity: int("rocksdb.block-cache-capacity"),
            sst_bytes: int("rocksdb.total-sst-files-size"),
        }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Stops the writers after they commit what they hold, and closes the database.
    pub fn close(self) {
        self.shutdown();
    }

    /// Adds a user: its queue and its record. Fails with [`StoreError::Exists`] if the user
    /// is there already.
    pub fn create_user(&self, name: &str) -> Pending<UserRecord> {
        if name.is_empty() || name.len() > 1024 {
            return Pending::failed(StoreError::InvalidName(format!("{} bytes", name.len())));
        }
        let shard = self.shard_of_name(name);
        self.submit(shard, |done| Command::CreateUser { name: name.into(), done })
    }

    /// The user named `name`, if there is one.
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let value = self.db.get_pinned(codec::user_key(name))?;
        value.map(|v| codec::decode_user(name.into(), &v)).transpose()
    }

    /// Every user, ordered by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.scan_records(&[codec::USER], codec::decode_user)
    }

    /// Stores an enrolment code for the user whose queue is `account`, valid until
    /// `expires_ms`. Only the code's SHA-256 hash is kept.
    pub fn issue_code(&self, account: QueueId, code: &str, expires_ms: u64) -> Pending<()> {
        let key = codec::code_key(account, &code_hash(code));
        self.submit(self.shard_of(account), |done| Command::IssueCode {
            account,
            key,
            expires_ms,
            done,
        })
    }

    /// Enrols the device `name` of the user whose queue is `account` with `public_key`,
    /// spending `code` in the same atomic write. The device reads its user's queue from the
    /// oldest message kept.
    pub fn enrol_device(
        &self,
        account: QueueId,
        name: &str,
        public_key: [u8; 32],
        code: &str,
    ) -> Pending<DeviceRecord> {
        let code = codec::code_key(account, &code_hash(code));
        self.submit(self.shard_of(account), |done| Command::Enrol {
            account,
            name: name.into(),
            public_key,
            code: Some(code),
            done,
        })
    }

    /// Registers the device `name` of the user whose queue is `account` with a `public_key`
    /// the operator already knows (provisioning without a code). The device reads its user's
    /// queue from the oldest message kept. Fails with [`StoreError::Exists`] if a device of
    /// that name is enrolled.
    pub fn register_device(
        &self,
        account: QueueId,
        name: &str,
        public_key: [u8; 32],
    ) -> Pending<DeviceRecord> {
        self.submit(self.shard_of(account), |done| Command::Enrol {
            account,
            name: name.into(),
            public_key,
            code: None,
            done,
        })
    }

    /// The device named `name` (`user@domain/device`), if it ever enrolled.
    pub fn device_record(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let value = self.db.get_pinned(codec::device_key(name))?;
        value.map(|v| codec::decode_device(name.into(), &v)).transpose()
    }

    /// The devices of the user `user` (every device when `None`), ordered by name.
    pub fn device_records(&self, user: Option<&str>) -> Result<Vec<DeviceRecord>, StoreError> {
        let prefix = match user {
            Some(user) => codec::device_key(&format!("{user}/")),
            None => vec![codec::DEVICE_RECORD],
        };
        self.scan_records(&prefix, codec::decode_device)
    }

    /// Revokes the device `name`: it is refused from now on, and stops reading every queue
    /// so that it holds nothing back. Idempotent: calling it again finishes a revocation a
    /// crash interrupted.
    pub async fn revoke_device(&self, name: &str) -> Result<DeviceRecord, StoreError> {
        let record =
            self.device_record(name)?.ok_or_else(|| StoreError::UnknownDeviceName(name.into()))?;
        let shard = self.shard_of(record.account);
        let record = self.submit(shard, |done| Command::Revoke { name: name.into(), done }).await?;
        if self.device_account(record.device)?.is_some() {
            self.remove_device(record.device).await?;
        }
        Ok(record)
    }

    /// Records what kind of machine the device `name` is.
    pub async fn set_device_kind(
        &self,
        name: &str,
        kind: DeviceKind,
    ) -> Result<DeviceRecord, StoreError> {
        let record =
            self.device_record(name)?.ok_or_else(|| StoreError::UnknownDeviceName(name.into()))?;
        let shard = self.shard_of(record.account);
        self.submit(shard, |done| Command::SetDeviceKind { name: name.into(), kind, done }).await
    }

    /// Closes the account `name`: the user is marked deactivated and every message waiting in
    /// their queue is deleted. Idempotent.
    pub async fn close_account(&self, name: &str) -> Result<UserRecord, StoreError> {
        let shard = self.shard_of_name(name);
        let user = self
            .submit(shard, |done| Command::SetUserStatus {
                name: name.into(),
                status: UserStatus::Deactivated,
                done,
            })
            .await?;
        let queue = user.queue;
        self.submit(self.shard_of(queue), |done| Command::Purge { queue, done }).await?;
        Ok(user)
    }

    /// Stores an admin API token (only its SHA-256 hash is kept, as the key of `record`).
    pub fn issue_token(&self, token: &str, record: &TokenRecord) -> Pending<()> {
        let key = token_key(token);
        let value = match serde_json::to_vec(record) {
            Ok(value) => value,
            Err(e) => {
                let why = e.to_string();
                return Pending::failed(StoreError::Encode { what: "a token record", why });
            }
        };
        self.submit(0, |done| Command::PutRecord { key, value, done })
    }

    /// Deletes the token whose id is `id`; answers its record, or `None` if there is none.
    pub async fn revoke_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let found = self.scan(&[codec::API_TOKEN], |key, value| {
            Ok((key.to_vec(), decode_token(key, value)?))
        })?;
        let Some((key, record)) = found.into_iter().find(|(_, record)| record.id == id) else {
            return Ok(None);
        };
        self.submit(0, |done| Command::DeleteRecord { key, done }).await?;
        Ok(Some(record))
    }

    /// Every token's record (never the token), of `user` alone when given.
    pub fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let all = self.scan(&[codec::API_TOKEN], decode_token)?;
        Ok(all.into_iter().filter(|t| user.is_none_or(|u| t.user == u)).collect())
    }

    /// Stores `bytes` under `name`, durably (small files such as logos).
    pub fn put_blob(&self, name: &str, bytes: Vec<u8>) -> Pending<()> {
        let mut key = vec![codec::BLOB];
        key.extend_from_slice(name.as_bytes());
        self.submit(0, |done| Command::PutRecord { key, value: bytes, done })
    }

    /// The bytes stored under `name`.
    pub fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut key = vec![codec::BLOB];
        key.extend_from_slice(name.as_bytes());
        Ok(self.db.get(key)?)
    }

    /// The record of an admin API token.
    pub fn token(&self, token: &str) -> Result<Option<TokenRecord>, StoreError> {
        let key = token_key(token);
        let value = self.db.get_pinned(&key)?;
        value.map(|v| decode_token(&key, &v)).transpose()
    }

    fn scan_records<T>(
        &self,
        prefix: &[u8],
        decode: impl Fn(String, &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.scan(prefix, |key, value| decode(codec::key_name(key)?, value))
    }

    /// Stops the shard writers after they have committed every command they hold; later
    /// commands answer [`StoreError::Closed`]. Blocks until they are done. Called by the
    /// server's orderly shutdown, and on drop.
    pub fn shutdown(&self) {
        // Disconnects the channels: each writer drains and exits.
        self.shards.store(Arc::new(Vec::new()));
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }

    fn shard_of(&self, queue: QueueId) -> usize {
        (codec::mix(queue.0) % self.shard_count as u64) as usize
    }

    fn shard_of_name(&self, name: &str) -> usize {
        (codec::stable_hash(name.as_bytes()) % self.shard_count as u64) as usize
    }

    fn submit<T>(
        &self,
        shard: usize,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Pending<T> {
        let (tx, rx) = oneshot::channel();
        // A send fails only when the writer has stopped; the dropped sender then resolves the
        // pending result as `Closed`.
        if let Some(writer) = self.shards.load().get(shard) {
            let _ = writer.send(command(tx));
        }
        Pending { rx }
    }

    fn scan_keys<T>(
        &self,
        prefix: &[u8],
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.scan(prefix, |key, _| {
            parse(key).ok_or_else(|| StoreError::Corrupt("key of the wrong size".into()))
        })
    }

    /// Every record whose key starts with `prefix`, in key order, through `read`.
    fn scan<T>(
        &self,
        prefix: &[u8],
        read: impl Fn(&[u8], &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(codec::prefix_end(prefix));
        let iter = self.db.iterator_opt(IteratorMode::From(prefix, Direction::Forward), options);
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item?;
            out.push(read(&key, &value)?);
        }
        Ok(out)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn db_options(config: &StoreConfig) -> Result<rocksdb::Options, StoreError> {
    // A group commit appends to many queues at once, and each append lands at the end of its
    // queue's keys. A memtable insert normally searches the whole skip list from the top (a
    // cache miss per level: most of a writer's time, measured); with a hint per queue (the
    // 9-byte prefix: key tag and queue id) RocksDB starts from where that queue's last insert
    // went. Hints are only used by non-concurrent memtable writes. The C API has no setter for
    // this option, hence the options string.
    let mut options = rocksdb::Options::default().get_options_from_string(
        "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.9;\
         allow_concurrent_memtable_write=false;recycle_log_file_num=4",
    )?;
    options.create_if_missing(true);
    // Tickers only (no histograms, no timers): the stall time the metrics show, at the cost
    // of a few per-core counter increments.
    options.enable_statistics();
    options.set_statistics_level(rocksdb::statistics::StatsLevel::ExceptHistogramOrTimers);
    options.increase_parallelism(2);
    options.set_max_background_jobs(2);
    // Flushes and compactions hand their output to the disk a megabyte at a time rather than
    // all at once when a table file is finished: a burst of tens of megabytes queues every
    // WAL fsync behind it.
    options.set_bytes_per_sync(1 << 20);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options.set_write_buffer_size(config.memtable_bytes);
    options.set_max_write_buffer_number(4);
    // Dedupe lookups of older ids and metadata lookups are point reads, most of them misses:
    // bloom filters in every table make a miss cost a few hash probes. The memtable has none:
    // new ids are checked in the writers' memory, and a memtable filter costs every insert a
    // cache miss (measured: 6% of the store's time).
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_whole_key_filtering(true);
    // Index and filter blocks stay in the table readers' memory rather than competing for the
    // block cache: a sweep or a dedupe lookup that finds them evicted must read and decompress
    // them again (measured: with them in a 128 MiB cache and a million-message backlog, the
    // writers spent most of their time decompressing index blocks).
    table.set_cache_index_and_filter_blocks(false);
    table.set_block_cache(&rocksdb::Cache::new_lru_cache(128 << 20));
    options.set_block_based_table_factory(&table);
    Ok(options)
}

fn disk_usage(db: &DB, path: &std::path::Path) -> u64 {
    let sst = db.property_int_value("rocksdb.total-sst-files-size").ok().flatten().unwrap_or(0);
    let wal: u64 = std::fs::read_dir(path)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    sst + wal
}

pub(crate) fn decode_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    if bytes.len() < 8 {
        return Err(StoreError::Corrupt(format!("{what} record of {} bytes", bytes.len())));
    }
    Ok(codec::be_u64(bytes))
}

/// An admin API token's record: whose it is, and when it stops working. The token itself is
/// never stored; `id` names it in lists and revocations.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TokenRecord {
    /// Its id: the first 16 hex digits of the token's SHA-256.
    #[serde(default)]
    pub id: String,
    /// The user it acts as.
    pub user: String,
    /// When it was made, Unix milliseconds (0 for tokens made before this was kept).
    #[serde(default)]
    pub created_ms: u64,
    /// When it stops working, Unix milliseconds; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// A label its maker gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The id of the token whose key is `key`.
fn token_id(key: &[u8]) -> String {
    key.iter().skip(1).take(8).map(|b| format!("{b:02x}")).collect()
}

/// A token record: JSON, or (written before records had fields) the user's name alone.
fn decode_token(key: &[u8], value: &[u8]) -> Result<TokenRecord, StoreError> {
    let mut record = if value.first() == Some(&b'{') {
        serde_json::from_slice(value)
            .map_err(|e| StoreError::Corrupt(format!("token record: {e}")))?
    } else {
        let user = String::from_utf8(value.to_vec())
            .map_err(|_| StoreError::Corrupt("token record".into()))?;
        TokenRecord { id: String::new(), user, created_ms: 0, expires_ms: None, label: None }
    };
    record.id = token_id(key);
    Ok(record)
}

/// The id a token gets (the first 16 hex digits of its SHA-256).
pub fn token_id_of(token: &str) -> String {
    token_id(&token_key(token))
}

fn token_key(token: &str) -> Vec<u8> {
    let mut key = vec![codec::API_TOKEN];
    key.extend_from_slice(&code_hash(token));
    key
}

fn code_hash(code: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(code.as_bytes()).into()
}

/// The system clock in Unix milliseconds.
pub fn system_clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
