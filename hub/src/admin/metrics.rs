//! `GET /v1/metrics`: the hub's counters as JSON (operator only).

use axum::{Json, extract::State, http::HeaderMap};
use serde::{Deserialize, Serialize};

use crate::admin::{ApiError, AppState, auth::authorise};

/// What `GET /v1/metrics` answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Metrics {
    /// QUIC connections open now.
    pub connections: u64,
    /// Handshakes in progress now (TLS, then a device's hello and proof).
    #[serde(default)]
    pub handshakes: u64,
    /// New connections refused since the hub started because `quic.max_handshakes`
    /// handshakes were in progress (a reconnect storm being worked through).
    #[serde(default)]
    pub handshakes_refused: u64,
    /// The hub process's resident memory in bytes (Linux; absent elsewhere).
    pub resident_bytes: Option<u64>,
    /// Write batches the store has committed (each one fsync).
    pub store_batches: u64,
    /// Commands in those batches.
    pub store_commands: u64,
    /// Messages appended to queues.
    pub store_enqueued: u64,
    /// Dedupe checks that had to look on disk: the message id was older than what the store
    /// holds in memory (late retransmissions, the first minutes after a restart). A steady
    /// rise under normal traffic means `[store] dedupe_memory` is too small.
    #[serde(default)]
    pub store_dedupe_disk_lookups: u64,
    /// Write batches fsynced: every batch but those of acknowledgements alone.
    #[serde(default)]
    pub store_synced_batches: u64,
    /// CPU time the hub process has used since it started, user and system, in seconds
    /// (`/proc/self/stat`, to the hundredth; absent where there is none). Its difference over a run, divided by
    /// the messages of the run, is the hub's CPU per message.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
}

/// The CPU time this process has used, user and system, in seconds: `utime` and `stime` of
/// `/proc/self/stat` (every thread, in clock ticks, taken as 100 a second: the value of
/// `CLK_TCK` on every Linux the hub runs on). Absent elsewhere.
pub fn process_cpu_seconds() -> Option<f64> {
    proc_cpu_seconds("/proc/self/stat")
}

/// `utime` + `stime` of a `/proc/<pid>/stat` file, in seconds.
pub fn proc_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name, in parentheses, may hold spaces: count fields after its end.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    // After the name: state is field 3 of the file, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The resident set size of this process, from `/proc/self/statm` (in pages, taken as 4 KiB:
/// the page size of the x86-64 and most arm64 Linux systems the hub runs on).
pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Open connections, handshakes, resident memory, CPU time and store counters (operator only).
#[utoipa::path(get, path = "/v1/metrics", tag = "hub", responses(
    (status = 200, description = "the metrics", body = Metrics),
))]
pub(super) async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Metrics>, ApiError> {
    authorise(&state, &headers)?;
    let store = state.hub.store().metrics();
    Ok(Json(Metrics {
        connections: state.hub.connections() as u64,
        handshakes: state.hub.handshakes() as u64,
        handshakes_refused: state.hub.handshakes_refused(),
        resident_bytes: resident_bytes(),
        store_batches: store.batches.load(std::sync::atomic::Ordering::Relaxed),
        store_commands: store.commands.load(std::sync::atomic::Ordering::Relaxed),
        store_enqueued: store.enqueued.load(std::sync::atomic::Ordering::Relaxed),
        store_dedupe_disk_lookups: store
            .dedupe_disk_lookups
            .load(std::sync::atomic::Ordering::Relaxed),
        store_synced_batches: store.synced_batches.load(std::sync::atomic::Ordering::Relaxed),
        cpu_seconds: process_cpu_seconds(),
    }))
}
