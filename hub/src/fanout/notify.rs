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

/// Who waits on which queue.
pub struct Notifier {
    tables: Vec<Mutex<HashMap<QueueId, Vec<Weak<Wake>>>>>,
}

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
        for &queue in &self.queues {
            let mut table = self.notifier.table(queue);
            if let Some(list) = table.get_mut(&queue) {
                list.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), &*self.wake));
                if list.is_empty() {
                    table.remove(&queue);
                }
            }
        }
    }
}

impl Notifier {
    fn table(
        &self,
        queue: QueueId,
    ) -> std::sync::MutexGuard<'_, HashMap<QueueId, Vec<Weak<Wake>>>> {
        let index = (queue.0 ^ (queue.0 >> 16)) as usize % TABLES;
        self.tables[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers one wake-up for all of `queues`.
    pub fn watch(&self, queues: &[QueueId]) -> Watch<'_> {
        let wake = Arc::new(Wake::default());
        for &queue in queues {
            self.table(queue).entry(queue).or_default().push(Arc::downgrade(&wake));
        }
        Watch { notifier: self, queues: queues.to_vec(), wake }
    }

    /// Wakes every session reading `queue`.
    pub fn wake(&self, queue: QueueId) {
        let table = self.table(queue);
        if let Some(list) = table.get(&queue) {
            for wake in list.iter().filter_map(Weak::upgrade) {
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
}
