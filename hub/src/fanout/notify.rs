//! Wake-ups: a session waiting for new entries in the queues it reads is woken when one of
//! them is appended to, and told which: it reads only those (a member of a line reads the
//! line, not also its own queue, for each message to the line). A wake-up carries no entries;
//! the session reads the store after it, so an extra wake-up costs a read, never a message.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use tokio::sync::Notify;

use crate::store::QueueId;

const TABLES: usize = 64;

/// Who waits on which queue: per queue, each session's wake-up by its address, so that a
/// session leaving a line of 10,000 members removes itself without a search.
pub struct Notifier {
    tables: Vec<Mutex<HashMap<QueueId, Watchers>>>,
}

type Watchers = HashMap<usize, Weak<Wake>>;

/// One session's wake-up and the queues appended to since it last looked.
#[derive(Default)]
struct Wake {
    notify: Notify,
    changed: Mutex<Vec<QueueId>>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self { tables: (0..TABLES).map(|_| Mutex::default()).collect() }
    }
}

/// A session's registration: its wake-up, and the queues it is registered on (removed on drop).
pub struct Watch<'a> {
    notifier: &'a Notifier,
    queues: Vec<QueueId>,
    wake: Arc<Wake>,
}

impl Watch<'_> {
    /// Waits for the next wake-up (or returns at once if one came since the last wait).
    pub async fn woken(&self) {
        self.wake.notify.notified().await;
    }

    /// The queues appended to since the last call, each once.
    pub fn take_changed(&self) -> Vec<QueueId> {
        std::mem::take(&mut *self.wake.changed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let id = id_of(&self.wake);
        for &queue in &self.queues {
            let mut table = self.notifier.table(queue);
            if let Some(watchers) = table.get_mut(&queue) {
                watchers.remove(&id);
                if watchers.is_empty() {
                    table.remove(&queue);
                }
            }
        }
    }
}

/// A wake-up's key in the tables: its address, unique while its watch lives (the watch holds
/// it, and removes the key before letting it go).
fn id_of(wake: &Arc<Wake>) -> usize {
    Arc::as_ptr(wake) as usize
}

impl Notifier {
    fn table(&self, queue: QueueId) -> std::sync::MutexGuard<'_, HashMap<QueueId, Watchers>> {
        let index = (queue.0 ^ (queue.0 >> 16)) as usize % TABLES;
        self.tables[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers one wake-up for all of `queues`.
    pub fn watch(&self, queues: &[QueueId]) -> Watch<'_> {
        let wake = Arc::new(Wake::default());
        for &queue in queues {
            self.table(queue).entry(queue).or_default().insert(id_of(&wake), Arc::downgrade(&wake));
        }
        Watch { notifier: self, queues: queues.to_vec(), wake }
    }

    /// Wakes every session reading `queue`.
    pub fn wake(&self, queue: QueueId) {
        // Taken out of the table first: waking the 10,000 sessions of a line takes
        // milliseconds, and the table also serves the wake-ups of other queues meanwhile.
        let wakes: Vec<Arc<Wake>> = match self.table(queue).get(&queue) {
            Some(watchers) => watchers.values().filter_map(Weak::upgrade).collect(),
            None => return,
        };
        for wake in wakes {
            {
                let mut changed = wake.changed.lock().unwrap_or_else(|e| e.into_inner());
                if !changed.contains(&queue) {
                    changed.push(queue);
                }
            }
            wake.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_every_watcher_of_the_queue_and_no_other() {
        let notifier = Notifier::default();
        let a = notifier.watch(&[QueueId(1), QueueId(2)]);
        let b = notifier.watch(&[QueueId(2)]);
        notifier.wake(QueueId(2));
        notifier.wake(QueueId(2));
        a.woken().await;
        b.woken().await;
        assert_eq!(a.take_changed(), [QueueId(2)]);
        assert_eq!(b.take_changed(), [QueueId(2)]);
        assert!(a.take_changed().is_empty());
        notifier.wake(QueueId(1));
        notifier.wake(QueueId(2));
        a.woken().await;
        assert_eq!(a.take_changed(), [QueueId(1), QueueId(2)]);
        assert_eq!(b.take_changed(), [QueueId(2)]);
        b.woken().await;
        notifier.wake(QueueId(1));
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), b.woken()).await;
        assert!(waited.is_err(), "b does not read queue 1");
        assert!(b.take_changed().is_empty());
        drop(a);
        assert!(!notifier.table(QueueId(1)).contains_key(&QueueId(1)));
    }

    #[tokio::test]
    async fn a_watch_leaving_a_crowded_queue_removes_itself_alone() {
        let notifier = Notifier::default();
        let line = QueueId(9);
        let mut watches: Vec<Option<Watch<'_>>> =
            (0..1_000).map(|_| Some(notifier.watch(&[line, QueueId(10)]))).collect();
        for watch in watches.iter_mut().step_by(2) {
            *watch = None;
        }
        assert_eq!(notifier.table(line).get(&line).map(HashMap::len), Some(500));
        notifier.wake(line);
        for watch in watches.iter().flatten() {
            watch.woken().await;
            assert_eq!(watch.take_changed(), [line]);
        }
        watches.clear();
        assert!(!notifier.table(line).contains_key(&line));
        assert!(!notifier.table(QueueId(10)).contains_key(&QueueId(10)));
    }
}
