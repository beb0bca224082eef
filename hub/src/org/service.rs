//! The organisation state as the hub runs it: every change decided on the current snapshot,
//! appended durably to the event log (a store queue nobody trims), then published as a new
//! snapshot that readers load without a lock.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::{
    org::{Actor, Command, Event, OrgError, OrgState},
    store::{QueueId, Store, StoreError, system_clock_ms},
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
///
/// Changes are decided one after another, each on the state the ones before it left, but
/// made durable together: while one group of changes is being written, the changes asked for
/// meanwhile wait, and the next writer takes all of them into one atomic append to the log
/// (one fsync for many changes instead of one each). A snapshot is published only once its
/// changes are durable, so nobody ever reads a change that a crash could take back.
pub struct OrgService {
    inner: Arc<Inner>,
}

struct Inner {
    snapshot: ArcSwap<OrgState>,
    /// Held by the one task that decides and writes a group of changes.
    writing: tokio::sync::Mutex<()>,
    /// Changes asked for and not yet taken by a writer.
    waiting: std::sync::Mutex<Vec<Request>>,
    store: Arc<Store>,
    log: QueueId,
}

struct Request {
    actor: Actor,
    command: Command,
    answer: oneshot::Sender<Result<Event, ServiceError>>,
}

/// The most changes decided and appended together.
const MAX_GROUP: usize = 1024;

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
        let inner = Inner {
            snapshot: ArcSwap::from_pointee(state),
            writing: tokio::sync::Mutex::new(()),
            waiting: std::sync::Mutex::new(Vec::new()),
            store,
            log,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The current state; cheap, lock-free, and never changes under the caller.
    pub fn snapshot(&self) -> Arc<OrgState> {
        self.inner.snapshot.load_full()
    }

    /// Decides `command` by `actor`; if allowed, makes it durable in the log and publishes the
    /// new state. Changes take effect one at a time, in the order they are decided; changes
    /// asked for at the same time are written together.
    ///
    /// The work is done by a task of its own: a caller that goes away (an HTTP client that
    /// hangs up) cannot leave a change written but not published.
    pub async fn execute(&self, actor: &Actor, command: Command) -> Result<Event, ServiceError> {
        let (answer, answered) = oneshot::channel();
        self.inner.lock_waiting().push(Request { actor: actor.clone(), command, answer });
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _writer = inner.writing.lock().await;
            // Another writer may have taken this request with its group already.
            loop {
                let group = {
                    let mut waiting = inner.lock_waiting();
                    let take = waiting.len().min(MAX_GROUP);
                    waiting.drain(..take).collect::<Vec<_>>()
                };
                if group.is_empty() {
                    break;
                }
                inner.write_group(group).await;
            }
        });
        answered.await.unwrap_or(Err(ServiceError::Store(StoreError::Closed)))
    }

    /// Appends an event that records something without changing the state (a key used, or a
    /// use refused).
    pub async fn record(&self, actor: Actor, change: crate::org::Change) -> Result<(), StoreError> {
        let also = self.snapshot().also_concerned(&change);
        let event = Event { actor, at_ms: system_clock_ms(), change, also };
        let payload = serde_json::to_vec(&event)
            .map_err(|e| StoreError::Encode { what: "an org event", why: e.to_string() })?;
        self.inner.store.append_log(self.inner.log, vec![Bytes::from(payload)]).await?;
        Ok(())
    }

    /// The position of the newest event (0 while the log is empty). Blocks on RocksDB.
    pub fn last_position(&self) -> Result<u64, StoreError> {
        Ok(self.inner.store.stats(self.inner.log)?.last_seq)
    }

    /// Up to `max` events after position `after`, with their positions. Blocks on RocksDB.
    pub fn events(&self, after: u64, max: usize) -> Result<Vec<(u64, Event)>, StoreError> {
        self.inner
            .store
            .read_after(self.inner.log, after, max)?
            .into_iter()
            .map(|entry| {
                serde_json::from_slice(&entry.payload)
                    .map(|event| (entry.seq, event))
                    .map_err(|e| StoreError::Corrupt(format!("org event {}: {e}", entry.seq)))
            })
            .collect()
    }
}

impl Inner {
    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Vec<Request>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides each request on the state the ones before it left, appends the allowed ones
    /// in one atomic write, then publishes the state and answers. A refused request is
    /// answered at once; if the write fails, every allowed one is answered with its error and
    /// the state stays as it was.
    async fn write_group(&self, group: Vec<Request>) {
        let current = self.snapshot.load_full();
        let mut next = (*current).clone();
        let now = system_clock_ms();
        let mut allowed = Vec::with_capacity(group.len());
        let mut payloads = Vec::with_capacity(group.len());
        for request in group {
            let decided = next.decide(&request.actor, request.command, now).map_err(Into::into);
            let encoded = decided.and_then(|event| match serde_json::to_vec(&event) {
                Ok(payload) => Ok((event, payload)),
                Err(e) => {
                    Err(StoreError::Encode { what: "an org event", why: e.to_string() }.into())
                }
            });
            match encoded {
                Ok((event, payload)) => {
                    next.apply(&event);
                    payloads.push(Bytes::from(payload));
                    allowed.push((request.answer, event));
                }
                Err(error) => {
                    let _ = request.answer.send(Err(error));
                }
            }
        }
        if allowed.is_empty() {
            return;
        }
        match self.store.append_log(self.log, payloads).await {
            Ok(_) => {
                self.snapshot.store(Arc::new(next));
                for (answer, event) in allowed {
                    let _ = answer.send(Ok(event));
                }
            }
            Err(error) => {
                for (answer, _) in allowed {
                    let _ = answer.send(Err(error.clone().into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::{
        org::{Change, OrgId, UnitId},
        store::StoreConfig,
    };

    fn create_unit(org: OrgId, root: UnitId, name: &str, line: &str) -> Command {
        Command::CreateUnit { org, parent: root, name: name.into(), line: line.into() }
    }

    // A current-thread runtime: every request is waiting before the first writer runs, so
    // that they are all one group.
    #[test]
    fn changes_asked_together_are_decided_in_order_written_once_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(StoreConfig::new(dir.path())).unwrap());
        let service = OrgService::open(store.clone()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let units = runtime.block_on(ask_together(&service, &store));
        drop(runtime);
        drop(service);
        let reopened = OrgService::open(store).unwrap();
        let snapshot = reopened.snapshot();
        assert_eq!(snapshot.units().count(), 101);
        for (i, id) in units.iter().enumerate() {
            assert_eq!(snapshot.unit(*id).unwrap().address, format!("u{i}@example.org"));
        }
    }

    async fn ask_together(service: &OrgService, store: &Store) -> Vec<UnitId> {
        let created = service
            .execute(
                &Actor::Operator,
                Command::CreateOrg {
                    name: "Example".into(),
                    owner: "max@example.org".into(),
                    domain: "example.org".into(),
                    line: "main@example.org".into(),
                    seat_limit: Some(10),
                },
            )
            .await
            .unwrap();
        let Change::OrgCreated { org, root } = created.change else { panic!("{created:?}") };
        let owner = Actor::User("max@example.org".into());
        let batches = store.metrics().batches.load(Ordering::Relaxed);

        // 100 new units, and a second unit asking for a line the first one takes: decided on
        // the state the change before it left, it is refused; the rest are unharmed.
        let mut commands: Vec<Command> = (0..100)
            .map(|i| {
                create_unit(org.id, root.id, &format!("Unit {i}"), &format!("u{i}@example.org"))
            })
            .collect();
        commands.insert(50, create_unit(org.id, root.id, "Twin", "u7@example.org"));
        let answers = futures_util::future::join_all(
            commands.into_iter().map(|c| service.execute(&owner, c)),
        )
        .await;
        assert!(
            matches!(&answers[50], Err(ServiceError::Refused(OrgError::Taken(line))) if line == "u7@example.org"),
            "{:?}",
            answers[50]
        );
        let units: Vec<UnitId> = answers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 50)
            .map(|(_, answer)| match &answer.as_ref().unwrap().change {
                Change::UnitCreated(unit) => unit.id,
                other => panic!("{other:?}"),
            })
            .collect();
        let mut distinct = units.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 100, "every unit has an id of its own");
        assert_eq!(
            store.metrics().batches.load(Ordering::Relaxed) - batches,
            1,
            "the 100 changes are one write"
        );
        assert_eq!(service.snapshot().units().count(), 101);
        units
    }
}
