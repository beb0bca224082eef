//! The organisation state as the hub runs it: every change decided on the current snapshot,
//! appended durably to the event log (a store queue nobody trims), then published as a new
//! snapshot that readers load without a lock.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::{
    org::{Actor, Command, Event, OrgError, OrgState},
    store::{EnqueueRequest, QueueId, Store, StoreError, system_clock_ms},
};

/// The name of the store queue that holds the event log.
const LOG_QUEUE: &str = "org:events";

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A rule refused it.
    #[error(transparent)]
    Refused(#[from] OrgError),
    /// The log could not be written or read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The organisations of a hub.
pub struct OrgService {
    snapshot: ArcSwap<OrgState>,
    writing: tokio::sync::Mutex<()>,
    store: Arc<Store>,
    log: QueueId,
}

impl OrgService {
    /// Opens the event log and folds it into the first snapshot. Blocks on RocksDB.
    pub fn open(store: Arc<Store>) -> Result<Self, StoreError> {
        let log = store.create_queue(LOG_QUEUE).wait()?;
        let mut state = OrgState::default();
        let mut after = 0;
        loop {
            let entries = store.read_after(log, after, 1024)?;
            let Some(last) = entries.last() else { break };
            after = last.seq;
            for entry in &entries {
                let event: Event = serde_json::from_slice(&entry.payload)
                    .map_err(|e| StoreError::Corrupt(format!("org event {}: {e}", entry.seq)))?;
                state.apply(&event);
            }
        }
        Ok(Self {
            snapshot: ArcSwap::from_pointee(state),
            writing: tokio::sync::Mutex::new(()),
            store,
            log,
        })
    }

    /// The current state; cheap, lock-free, and never changes under the caller.
    pub fn snapshot(&self) -> Arc<OrgState> {
        self.snapshot.load_full()
    }

    /// Decides `command` by `actor`; if allowed, makes it durable in the log and publishes the
    /// new state. Changes are made one at a time.
    pub async fn execute(&self, actor: &Actor, command: Command) -> Result<Event, ServiceError> {
        let _one_at_a_time = self.writing.lock().await;
        let current = self.snapshot.load_full();
        let now = system_clock_ms();
        let event = current.decide(actor, command, now)?;
        let payload = serde_json::to_vec(&event)
            .map_err(|e| StoreError::Storage(format!("cannot encode an org event: {e}")))?;
        let request = EnqueueRequest {
            id: switchboard_protocol::MessageId::from_parts(now, rand::random()).0,
            sender: Bytes::from_static(b"org"),
            expires_ms: u64::MAX,
            payload: Bytes::from(payload),
        };
        self.store.enqueue(self.log, request).await?;
        let mut next = (*current).clone();
        next.apply(&event);
        self.snapshot.store(Arc::new(next));
        Ok(event)
    }

    /// Appends an event that records something without changing the state (a refused key
    /// use).
    pub async fn record(&self, actor: Actor, change: crate::org::Change) -> Result<(), StoreError> {
        let event = Event { actor, at_ms: system_clock_ms(), change };
        let payload = serde_json::to_vec(&event)
            .map_err(|e| StoreError::Storage(format!("cannot encode an org event: {e}")))?;
        let request = EnqueueRequest {
            id: switchboard_protocol::MessageId::from_parts(event.at_ms, rand::random()).0,
            sender: Bytes::from_static(b"org"),
            expires_ms: u64::MAX,
            payload: Bytes::from(payload),
        };
        self.store.enqueue(self.log, request).await?;
        Ok(())
    }

    /// Up to `max` events after position `after`, with their positions. Blocks on RocksDB.
    pub fn events(&self, after: u64, max: usize) -> Result<Vec<(u64, Event)>, StoreError> {
        self.store
            .read_after(self.log, after, max)?
            .into_iter()
            .map(|entry| {
                serde_json::from_slice(&entry.payload)
                    .map(|event| (entry.seq, event))
                    .map_err(|e| StoreError::Corrupt(format!("org event {}: {e}", entry.seq)))
            })
            .collect()
    }
}
