//! The hub's figures in the Prometheus text format, and the listener that serves them with the
//! health endpoints (see `listener`).
//!
//! Two kinds of figure: counters the hub's paths increment as they work ([`HubMetrics`], one
//! per hub, shared by every session and link), and values read when Prometheus scrapes
//! (connections, queue depths, RocksDB's figures, the process's CPU and memory). A scrape
//! builds a fresh registry from both and encodes it with `prometheus-client`: nothing is
//! formatted by hand. Every name follows Prometheus's conventions: the `switchboard_` prefix,
//! `_total` on counters, base units (`_seconds`, `_bytes`) in the name; the process's own
//! figures keep the standard `process_` names every dashboard knows.

pub mod listener;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::prometheus_text,
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
    },
    registry::{Registry, Unit},
};

use crate::{fanout::Hub, store::QueueDepths};

/// A label set of one label.
pub type Label = [(&'static str, String); 1];

/// How many of the fullest queues a scrape names.
pub const LARGEST_QUEUES: usize = 10;
/// How long a scrape reuses the queue depths it read, at least: reading them is one pass over
/// every queue's record and a seek per queue, which a hub of a million queues should not do
/// every few seconds. They are also reused for 20 times as long as the last read took, so that
/// reading them costs at most a twentieth of one core.
const DEPTHS_FOR: Duration = Duration::from_secs(10);

/// The counters the hub's paths increment as they work.
#[derive(Debug)]
pub struct HubMetrics {
    /// Sends answered `accepted`.
    pub sends_accepted: Counter,
    /// Sends answered `rejected`, by reason.
    pub sends_rejected: Family<Label, Counter>,
    /// Messages and receipts handed to devices in `deliver` frames (again after a reconnect).
    pub deliveries: Counter,
    /// Deliveries devices acknowledged.
    pub acks: Counter,
    /// Times a session had entries waiting but its delivery window was full.
    pub window_stalls: Counter,
    /// Device sessions opened (welcomed).
    pub sessions_opened: Counter,
    /// Handshakes that did not end in a session, by reason.
    pub handshake_failures: Family<Label, Counter>,
    /// New connections refused before their handshake, by reason.
    pub connections_refused: Family<Label, Counter>,
    /// Open sessions that ended, by reason.
    pub sessions_closed: Family<Label, Counter>,
    /// Frame bytes read from devices.
    pub received_bytes: Counter,
    /// Frame bytes written to devices.
    pub sent_bytes: Counter,
    /// Messages and receipts relayed to a peer and made durable there, by peer.
    pub relayed_out: Family<Label, Counter>,
    /// Messages and receipts a peer relayed here and this hub committed, by peer.
    pub relayed_in: Family<Label, Counter>,
    /// Items a peer relayed here that this hub refused, by peer.
    pub relay_refusals: Family<Label, Counter>,
    /// Queue depths read by the last scrape: when, how long the read took, the depths.
    depths: Mutex<Option<(Instant, Duration, QueueDepths)>>,
}

/// Reasons a handshake fails for, shown at 0 from the start (a series that appears only with
/// its first event breaks `rate()` and alerts on it).
const HANDSHAKE_FAILURES: &[&str] = &[
    "tls",
    "no-stream",
    "peer-gone",
    "timeout",
    "authentication",
    "enrolment",
    "deactivated",
    "revoked",
    "decode",
    "too-early",
];
/// Reasons an open session ends for, shown at 0 from the start.
const SESSION_ENDS: &[&str] = &[
    "closed-by-device",
    "peer-gone",
    "shutting-down",
    "revoked",
    "deactivated",
    "flow-control",
    "decode",
    "store",
    "internal",
];
/// Reasons a new connection is refused for, shown at 0 from the start.
const REFUSALS: &[&str] = &[
    "max-connections",
    "max-handshakes",
    "connections-per-address",
    "connection-rate-per-address",
];

impl Default for HubMetrics {
    fn default() -> Self {
        let metrics = Self {
            sends_accepted: Counter::default(),
            sends_rejected: Family::default(),
            deliveries: Counter::default(),
            acks: Counter::default(),
            window_stalls: Counter::default(),
            sessions_opened: Counter::default(),
            handshake_failures: Family::default(),
            connections_refused: Family::default(),
            sessions_closed: Family::default(),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            relayed_out: Family::default(),
            relayed_in: Family::default(),
            relay_refusals: Family::default(),
            depths: Mutex::default(),
        };
        for reason in switchboard_protocol::RejectReason::ALL {
            let name = reason.name().unwrap_or_default();
            let _ = metrics.sends_rejected.get_or_create(&label("reason", name));
        }
        for (family, reasons) in [
            (&metrics.handshake_failures, HANDSHAKE_FAILURES),
            (&metrics.sessions_closed, SESSION_ENDS),
            (&metrics.connections_refused, REFUSALS),
        ] {
            for reason in reasons {
                let _ = family.get_or_create(&label("reason", *reason));
            }
        }
        metrics
    }
}

/// One label set of `name = value`.
pub fn label(name: &'static str, value: impl Into<String>) -> Label {
    [(name, value.into())]
}

impl HubMetrics {
    /// Counts one refused send with its wire reason.
    pub fn rejected(&self, reason: switchboard_protocol::RejectReason) {
        let name = reason.name().map_or_else(|| format!("code-{}", reason.0), str::to_string);
        self.sends_rejected.get_or_create(&label("reason", name)).inc();
    }

    fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register("sends_accepted", "Sends answered accepted", self.sends_accepted.clone());
        r.register(
            "sends_rejected",
            "Sends answered rejected, by reason",
            self.sends_rejected.clone(),
        );
        r.register(
            "deliveries",
            "Messages and receipts handed to devices",
            self.deliveries.clone(),
        );
        r.register("acks", "Deliveries devices acknowledged", self.acks.clone());
        r.register(
            "delivery_window_stalls",
            "Times a session had entries waiting and a full delivery window",
            self.window_stalls.clone(),
        );
        r.register("sessions_opened", "Device sessions opened", self.sessions_opened.clone());
        r.register(
            "handshake_failures",
            "Handshakes that did not end in a session, by reason",
            self.handshake_failures.clone(),
        );
        r.register(
            "connections_refused",
            "New connections refused before their handshake, by reason",
            self.connections_refused.clone(),
        );
        r.register(
            "sessions_closed",
            "Open device sessions that ended, by reason",
            self.sessions_closed.clone(),
        );
        r.register_with_unit(
            "received",
            "Frame bytes read from devices",
            Unit::Bytes,
            self.received_bytes.clone(),
        );
        r.register_with_unit(
            "sent",
            "Frame bytes written to devices",
            Unit::Bytes,
            self.sent_bytes.clone(),
        );
        r.register(
            "peer_relayed_out",
            "Messages and receipts relayed to a peer hub and made durable there",
            self.relayed_out.clone(),
        );
        r.register(
            "peer_relayed_in",
            "Messages and receipts a peer hub relayed here and this hub committed",
            self.relayed_in.clone(),
        );
        r.register(
            "peer_relay_refusals",
            "Items a peer hub relayed here that this hub refused",
            self.relay_refusals.clone(),
        );
    }
}

/// The whole exposition: the hub's counters, the values read now, the process's figures.
pub async fn render(hub: &Arc<Hub>) -> String {
    let depths = depths(hub).await;
    let peers = crate::admin::peer_statuses(hub).await.unwrap_or_default();
    // Each peer's relay counters exist from its first scrape on, at 0.
    for peer in &peers {
        let peer = label("peer", peer.name.clone());
        let metrics = hub.metrics();
        for family in [&metrics.relayed_out, &metrics.relayed_in, &metrics.relay_refusals] {
            let _ = family.get_or_create(&peer);
        }
    }
    let mut registry = Registry::with_prefix("switchboard");
    hub.metrics().register(&mut registry);
    live(hub, depths.as_ref(), &peers, &mut registry);
    let mut process = Registry::default();
    process_figures(&mut process);
    let mut text = String::with_capacity(16 << 10);
    // Writing to a String cannot fail; an encoding error would be a bug in a metric's name.
    if let Err(error) = prometheus_text::encode(&mut text, &registry)
        .and_then(|()| prometheus_text::encode(&mut text, &process))
    {
        tracing::error!(%error, "metrics could not be encoded");
    }
    text
}

/// The queue depths, read at most every [`DEPTHS_FOR`].
async fn depths(hub: &Arc<Hub>) -> Option<QueueDepths> {
    let cache = &hub.metrics().depths;
    if let Some((at, took, depths)) = cache.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        && at.elapsed() < DEPTHS_FOR.max(*took * 20)
    {
        return Some(depths.clone());
    }
    let started = Instant::now();
    match hub.store().blocking(|store| store.queue_depths(LARGEST_QUEUES)).await {
        Ok(depths) => {
            *cache.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), started.elapsed(), depths.clone()));
            Some(depths)
        }
        Err(error) => {
            tracing::warn!(%error, "queue depths could not be read for the metrics");
            None
        }
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)));
}

fn gauge_in(registry: &mut Registry, name: &str, help: &str, unit: Unit, value: f64) {
    registry.register_with_unit(name, help, unit, ConstGauge::new(value));
}

fn counter_in(registry: &mut Registry, name: &str, help: &str, unit: Unit, value: f64) {
    registry.register_with_unit(name, help, unit, ConstCounter::new(value));
}

/// A gauge family filled with `values`.
fn gauge_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Label, f64)>,
) {
    let family = Family::<Label, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (labels, value) in values {
        family.get_or_create(&labels).set(value);
    }
    registry.register(name, help, family);
}

/// What is read at the scrape: sessions, the store, RocksDB, the peer links.
fn live(
    hub: &Arc<Hub>,
    depths: Option<&QueueDepths>,
    peers: &[crate::links::PeerStatus],
    registry: &mut Registry,
) {
    let r = registry;
    gauge(r, "connections", "QUIC connections open", hub.connections() as u64);
    gauge(r, "handshakes_in_progress", "Handshakes under way", hub.handshakes() as u64);
    let (devices, sessions) = hub.sessions().counts();
    gauge(r, "devices_connected", "Devices with at least one open session", devices as u64);
    gauge(r, "sessions", "Open device sessions", sessions as u64);

    let store = hub.store().metrics();
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    r.register(
        "store_batches",
        "Write batches the store committed",
        ConstCounter::new(load(&store.batches)),
    );
    r.register(
        "store_fsyncs",
        "Write batches the store fsynced (all but acknowledgements alone)",
        ConstCounter::new(load(&store.synced_batches)),
    );
    r.register(
        "store_messages_appended",
        "Messages appended to queues (duplicates not counted)",
        ConstCounter::new(load(&store.enqueued)),
    );
    r.register(
        "store_dedupe_disk_lookups",
        "Duplicate checks that had to read the disk",
        ConstCounter::new(load(&store.dedupe_disk_lookups)),
    );
    r.register_with_unit(
        "store_commit",
        "Time from building a write batch to its write being durable",
        Unit::Seconds,
        store.commit_seconds.clone(),
    );
    r.register(
        "store_batch_messages",
        "Messages appended per fsynced write batch",
        store.batch_messages.clone(),
    );
    gauge(r, "store_shards", "Shard writers", hub.store().shard_count() as u64);
    if let Some(depths) = depths {
        gauge(r, "store_queues", "Queues in the store", depths.queues);
        gauge_family(
            r,
            "store_messages_held",
            "Messages held by the queues (not yet taken by every reader, nor expired), per shard",
            depths
                .held_per_shard
                .iter()
                .enumerate()
                .map(|(shard, held)| (label("shard", shard.to_string()), *held as f64)),
        );
        gauge_family(
            r,
            "queue_messages_held",
            "Messages held by the fullest queues, by queue name",
            depths.largest.iter().map(|(name, held)| (label("queue", name.clone()), *held as f64)),
        );
    }
    let engine = hub.store().engine_figures();
    counter_in(
        r,
        "rocksdb_stall",
        "Time RocksDB stalled or slowed writes",
        Unit::Seconds,
        engine.stall_micros as f64 / 1e6,
    );
    gauge(
        r,
        "rocksdb_write_stopped",
        "1 while RocksDB stops writes",
        u64::from(engine.write_stopped),
    );
    gauge_in(
        r,
        "rocksdb_pending_compaction",
        "Bytes compaction has yet to rewrite",
        Unit::Bytes,
        engine.pending_compaction_bytes as f64,
    );
    gauge_in(
        r,
        "rocksdb_memtable",
        "Bytes in memtables",
        Unit::Bytes,
        engine.memtable_bytes as f64,
    );
    gauge_in(
        r,
        "rocksdb_block_cache_usage",
        "Bytes the block cache holds",
        Unit::Bytes,
        engine.block_cache_bytes as f64,
    );
    gauge_in(
        r,
        "rocksdb_block_cache_capacity",
        "Size of the block cache",
        Unit::Bytes,
        engine.block_cache_capacity as f64,
    );
    gauge_in(r, "rocksdb_sst_files", "Bytes of table files", Unit::Bytes, engine.sst_bytes as f64);

    let peer = |p: &crate::links::PeerStatus| label("peer", p.name.clone());
    gauge_family(
        r,
        "peer_link_up",
        "1 when this hub's link to the peer is up, 0 while connecting or backing off",
        peers.iter().map(|p| (peer(p), f64::from(p.state == crate::links::LinkState::Up))),
    );
    gauge_family(
        r,
        "peer_inbound_up",
        "1 when the peer's own link to this hub is up",
        peers.iter().map(|p| (peer(p), f64::from(u8::from(p.inbound_up)))),
    );
    gauge_family(
        r,
        "peer_queued_messages",
        "Messages and receipts waiting for the peer",
        peers.iter().map(|p| (peer(p), p.queued as f64)),
    );
    gauge_family(
        r,
        "peer_oldest_waiting_seconds",
        "How long the oldest message waiting for the peer has waited (0 when none waits)",
        peers.iter().map(|p| (peer(p), p.oldest_age_ms.unwrap_or(0) as f64 / 1000.0)),
    );
    gauge_family(
        r,
        "peer_connect_attempts",
        "Connection attempts to the peer since the hub started",
        peers.iter().map(|p| (peer(p), p.attempts as f64)),
    );
}

/// The standard process figures: CPU, resident memory, file descriptors, start time.
fn process_figures(registry: &mut Registry) {
    let r = registry;
    if let Some(cpu) = crate::admin::process_cpu_seconds() {
        counter_in(r, "process_cpu", "CPU time used, user and system", Unit::Seconds, cpu);
    }
    if let Some(bytes) = crate::admin::resident_bytes() {
        gauge_in(r, "process_resident_memory", "Resident memory", Unit::Bytes, bytes as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(r, "process_open_fds", "Open file descriptors", fds.count() as u64);
    }
    if let Some(max) = max_fds() {
        gauge(r, "process_max_fds", "Limit on open file descriptors", max);
    }
    if let Some(start) = start_time() {
        gauge_in(
            r,
            "process_start_time",
            "Start of the process since the Unix epoch",
            Unit::Seconds,
            start,
        );
    }
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// When the process started, in seconds since the epoch: boot time plus its start in ticks.
fn start_time() -> Option<f64> {
    static START: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
        // `starttime` is field 22 of the file; fields here start at field 3.
        let ticks: u64 = fields.get(19)?.parse().ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let btime: u64 =
            boot.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
        Some(btime as f64 + ticks as f64 / 100.0)
    })
}
