//! A reconnect storm, measured: with `--idle N --hub-restarts`, each idle device watches its
//! connection and, when it drops (the hub was killed or restarted by the harness), connects
//! again the way protocol.md asks of a device — at once, then after a growing, jittered pause
//! (1 s doubling to 30 s) while the hub refuses it or its handshake times out. The run then
//! reports how long the storm lasted (first drop to the last device back), how many attempts
//! failed and why, and whether every device came back. A device learns of a killed hub at its
//! next keep-alive (the restarted hub answers it with a stateless reset), so the drops are
//! spread over one keep-alive interval (10 s) and the storm lasts at least that long; each
//! device's own wait (drop to back) is the figure for the hub's handshakes.
//!
//! loadgen runs every device on the few cores of one machine, where a real storm has a CPU per
//! device: left alone, 100,000 handshakes started at once each get a sliver of loadgen's own
//! CPU, time out on loadgen's side, and count as failures of the hub. So at most
//! [`CLIENT_HANDSHAKES`] attempts are in progress in loadgen at once, as that many machines
//! would; a device waiting for its turn has not made an attempt yet (its wait counts, its turn
//! is not a failure).

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use switchboard_hub::client::{Client, ClientError, ClientOptions, DeviceIdentity};

/// The first pause after a failed attempt; it doubles up to [`PAUSE_CAP`].
const PAUSE_START: Duration = Duration::from_secs(1);
const PAUSE_CAP: Duration = Duration::from_secs(30);

/// Connection attempts in progress in loadgen at once (see the module's documentation).
pub const CLIENT_HANDSHAKES: usize = 512;

/// What the idle devices saw, shared by their tasks.
#[derive(Debug)]
pub(crate) struct Storm {
    /// Turns to attempt a connection.
    turns: tokio::sync::Semaphore,
    lost: AtomicU64,
    back: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    other: AtomicU64,
    first_lost: Mutex<Option<Instant>>,
    last_lost: Mutex<Option<Instant>>,
    last_back: Mutex<Option<Instant>>,
    /// Seconds from a drop to being back, per reconnection (for the median and the p99).
    waits: Mutex<Vec<f64>>,
}

/// A storm's figures, in the run's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormReport {
    /// Idle connections that dropped.
    pub lost: u64,
    /// Of them, connected again.
    pub back: u64,
    /// Seconds from the first drop to the last device back (to now if some are not back).
    pub secs_to_all_back: f64,
    /// Seconds from a drop to that device being back: the median.
    pub wait_p50_secs: f64,
    /// The same, 99th percentile.
    pub wait_p99_secs: f64,
    /// The same, the longest.
    pub wait_max_secs: f64,
    /// Failed attempts: refused by the hub (QUIC `CONNECTION_REFUSED`, before TLS).
    pub refused: u64,
    /// Failed attempts: the handshake did not finish in the connect timeout.
    pub timed_out: u64,
    /// Failed attempts: any other reason (the hub not listening yet, say).
    pub other: u64,
}

impl Default for Storm {
    fn default() -> Self {
        Self {
            turns: tokio::sync::Semaphore::new(CLIENT_HANDSHAKES),
            lost: AtomicU64::default(),
            back: AtomicU64::default(),
            refused: AtomicU64::default(),
            timed_out: AtomicU64::default(),
            other: AtomicU64::default(),
            first_lost: Mutex::default(),
            last_lost: Mutex::default(),
            last_back: Mutex::default(),
            waits: Mutex::default(),
        }
    }
}

impl Storm {
    /// Holds `client` open; when its connection drops, connects `identity` again through
    /// `endpoint` until it is back, and again after every later drop, until the task is
    /// aborted.
    pub(crate) async fn hold(
        &self,
        endpoint: quinn::Endpoint,
        identity: DeviceIdentity,
        options: ClientOptions,
        mut client: Client,
    ) {
        loop {
            // An idle device is sent nothing; the stream ends when the connection does.
            while client.next_event().await.is_some() {}
            let dropped = Instant::now();
            self.lost.fetch_add(1, Ordering::Relaxed);
            self.first_lost.lock().expect("storm lock").get_or_insert(dropped);
            *self.last_lost.lock().expect("storm lock") = Some(dropped);
            let mut pause = PAUSE_START;
            client = loop {
                let attempt = async {
                    let _turn = self.turns.acquire().await.expect("the storm's turns stay open");
                    Client::connect_with(&endpoint, &identity, None, &options).await
                };
                match attempt.await {
                    Ok(client) => break client,
                    Err(error) => {
                        self.count_failure(&error);
                        let jitter = 0.5 + rand::random::<f64>();
                        tokio::time::sleep(pause.mul_f64(jitter)).await;
                        pause = (pause * 2).min(PAUSE_CAP);
                    }
                }
            };
            let now = Instant::now();
            self.back.fetch_add(1, Ordering::Relaxed);
            *self.last_back.lock().expect("storm lock") = Some(now);
            self.waits.lock().expect("storm lock").push((now - dropped).as_secs_f64());
        }
    }

    fn count_failure(&self, error: &ClientError) {
        let text = error.to_string();
        let counter = if text.contains("refused") {
            &self.refused
        } else if text.contains("no welcome") || text.contains("timed out") {
            &self.timed_out
        } else {
            &self.other
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the storm is over: nothing dropped, or every connection that dropped is back
    /// and none dropped for longer than a keep-alive interval (an idle device learns of a
    /// restart only at its next keep-alive, up to 10 s later, so drops come spread over that).
    pub(crate) fn settled(&self) -> bool {
        let Some(last) = *self.last_lost.lock().expect("storm lock") else {
            return true;
        };
        self.back.load(Ordering::Relaxed) >= self.lost.load(Ordering::Relaxed)
            && last.elapsed() > Duration::from_secs(12)
    }

    /// The figures so far; `None` if no idle connection ever dropped.
    pub(crate) fn report(&self) -> Option<StormReport> {
        let first = (*self.first_lost.lock().expect("storm lock"))?;
        let (lost, back) = (self.lost.load(Ordering::Relaxed), self.back.load(Ordering::Relaxed));
        let end = match *self.last_back.lock().expect("storm lock") {
            Some(last) if back >= lost => last,
            _ => Instant::now(),
        };
        let mut waits = self.waits.lock().expect("storm lock").clone();
        waits.sort_by(f64::total_cmp);
        let at = |q: f64| match waits.len() {
            0 => 0.0,
            n => waits[((n as f64 * q).ceil() as usize).clamp(1, n) - 1],
        };
        Some(StormReport {
            lost,
            back,
            secs_to_all_back: end.saturating_duration_since(first).as_secs_f64(),
            wait_p50_secs: at(0.5),
            wait_p99_secs: at(0.99),
            wait_max_secs: at(1.0),
            refused: self.refused.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
        })
    }
}
