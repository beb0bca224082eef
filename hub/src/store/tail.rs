//! The newest entries of each queue, in memory, for the devices that keep up.
//!
//! A message to a line of 10,000 members is one entry read by 10,000 sessions. Read from
//! RocksDB, each of those reads is an iterator seeking through the memtables and table files
//! and a copy of the entry (measured: a quarter of the hub's time when fanning out to a large
//! line). Here, the writers add every entry they commit, in commit order, before they answer
//! the callers; a session reading after its cursor is answered from memory, the payload shared
//! rather than copied, as long as the entries it asks for are still held.
//!
//! What is held per queue is a run of consecutive sequences ending at the queue's last
//! committed sequence, so "nothing after this cursor" is answered from memory too. Entries
//! every reader has acknowledged are dropped as the writers trim them; a queue holds at most
//! [`PER_QUEUE`] entries, and when all queues together hold more than the budget, whole queues
//! are dropped, oldest first. A read memory cannot answer goes to RocksDB: the cache can make
//! a read slower, never different.

use std::{
    collections::{HashMap, VecDeque},
    sync::RwLock,
};

use crate::store::{Entry, QueueId};

/// Entries held at most per queue: enough for a device that is a few windows behind.
pub(crate) const PER_QUEUE: usize = 256;

/// Bytes counted per entry on top of its payload.
const ENTRY_OVERHEAD: usize = 64;

pub(crate) struct Tails {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    queues: HashMap<QueueId, Tail>,
    /// Queues in the order their tails were made: the first to drop when over budget.
    order: VecDeque<QueueId>,
    bytes: usize,
    budget: usize,
}

struct Tail {
    /// The queue's last committed sequence.
    last: u64,
    /// Consecutive entries ending at `last` (possibly none).
    entries: VecDeque<Entry>,
}

fn cost(entry: &Entry) -> usize {
    entry.payload.len() + ENTRY_OVERHEAD
}

impl Tails {
    /// Tails holding at most `budget` bytes in all (0: none are kept).
    pub(crate) fn new(budget: usize) -> Self {
        Self { inner: RwLock::new(Inner { budget, ..Inner::default() }) }
    }

    /// Adds entries just committed, in commit order.
    pub(crate) fn push(&self, appended: Vec<(QueueId, Entry)>) {
        if appended.is_empty() {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.budget == 0 {
            return;
        }
        for (queue, entry) in appended {
            inner.push(queue, entry);
        }
        inner.shrink();
    }

    /// Drops the entries of each queue up to its new floor (trimmed, expired or purged).
    pub(crate) fn forget_through(&self, floors: Vec<(QueueId, u64)>) {
        if floors.is_empty() {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut freed = 0;
        for (queue, floor) in floors {
            if let Some(tail) = inner.queues.get_mut(&queue) {
                while tail.entries.front().is_some_and(|e| e.seq <= floor) {
                    freed += tail.entries.pop_front().as_ref().map_or(0, cost);
                }
            }
        }
        inner.bytes -= freed;
    }

    /// Up to `max` unexpired entries of `queue` after `after`, if memory holds every one there
    /// is; `None` if the read must go to RocksDB.
    pub(crate) fn read(
        &self,
        queue: QueueId,
        after: u64,
        max: usize,
        now: u64,
    ) -> Option<Vec<Entry>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let tail = inner.queues.get(&queue)?;
        if after >= tail.last {
            return Some(Vec::new());
        }
        let first = tail.last + 1 - tail.entries.len() as u64;
        if after.saturating_add(1) < first {
            return None;
        }
        let skip = (after + 1 - first) as usize;
        Some(
            tail.entries
                .iter()
                .skip(skip)
                .filter(|e| e.expires_ms > now)
                .take(max)
                .cloned()
                .collect(),
        )
    }

    /// Bytes held, as counted against the budget.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

impl Inner {
    fn push(&mut self, queue: QueueId, entry: Entry) {
        let mut freed = 0;
        let added = cost(&entry);
        let tail = match self.queues.get_mut(&queue) {
            Some(tail) => tail,
            None => {
                self.order.push_back(queue);
                self.queues.entry(queue).or_insert(Tail { last: 0, entries: VecDeque::new() })
            }
        };
        if tail.last != 0 && tail.last + 1 != entry.seq {
            // Not the next sequence (a writer reloaded its state after a failed write, or
            // this tail was made anew): start again from this entry.
            freed += tail.entries.drain(..).map(|e| cost(&e)).sum::<usize>();
        }
        tail.last = entry.seq;
        tail.entries.push_back(entry);
        if tail.entries.len() > PER_QUEUE {
            freed += tail.entries.pop_front().as_ref().map_or(0, cost);
        }
        self.bytes = self.bytes + added - freed;
    }

    /// Drops whole queues, oldest tails first, until within the budget.
    fn shrink(&mut self) {
        while self.bytes > self.budget {
            let Some(queue) = self.order.pop_front() else { break };
            if let Some(tail) = self.queues.remove(&queue) {
                self.bytes -= tail.entries.iter().map(cost).sum::<usize>();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entry(seq: u64, expires_ms: u64) -> Entry {
        Entry { seq, expires_ms, payload: Bytes::from(vec![b'x'; 36]) }
    }

    const Q: QueueId = QueueId(7);

    #[test]
    fn reads_are_answered_only_when_memory_holds_every_entry_after_the_cursor() {
        let tails = Tails::new(1 << 20);
        assert_eq!(tails.read(Q, 0, 10, 0), None, "nothing known of the queue");
        tails.push((5..=8).map(|seq| (Q, entry(seq, u64::MAX))).collect());
        let seqs =
            |read: Option<Vec<Entry>>| read.map(|v| v.iter().map(|e| e.seq).collect::<Vec<_>>());
        assert_eq!(seqs(tails.read(Q, 4, 10, 0)), Some(vec![5, 6, 7, 8]));
        assert_eq!(seqs(tails.read(Q, 6, 1, 0)), Some(vec![7]));
        assert_eq!(seqs(tails.read(Q, 8, 10, 0)), Some(vec![]), "caught up");
        assert_eq!(tails.read(Q, 3, 10, 0), None, "entry 4 is not held");
        // Trimmed entries go; the queue's end is still known.
        tails.forget_through(vec![(Q, 8)]);
        assert_eq!(seqs(tails.read(Q, 8, 10, 0)), Some(vec![]));
        assert_eq!(tails.read(Q, 7, 10, 0), None);
        assert_eq!(tails.bytes(), 0);
        // A gap (a writer that reloaded its state) starts the run again.
        tails.push(vec![(Q, entry(9, u64::MAX)), (Q, entry(11, u64::MAX))]);
        assert_eq!(tails.read(Q, 9, 10, 0), None);
        assert_eq!(seqs(tails.read(Q, 10, 10, 0)), Some(vec![11]));
    }

    #[test]
    fn expired_entries_are_not_answered() {
        let tails = Tails::new(1 << 20);
        tails.push(vec![(Q, entry(1, 100)), (Q, entry(2, 300)), (Q, entry(3, 100))]);
        let read = tails.read(Q, 0, 10, 200).unwrap();
        assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn memory_stays_within_the_queue_limit_and_the_budget() {
        let tails = Tails::new(100 * (36 + ENTRY_OVERHEAD));
        tails.push(
            (1..=(PER_QUEUE as u64 + 10)).map(|seq| (QueueId(1), entry(seq, u64::MAX))).collect(),
        );
        // Over budget: the oldest tail went whole.
        assert_eq!(tails.read(QueueId(1), PER_QUEUE as u64, 10, 0), None);
        assert!(tails.bytes() <= 100 * (36 + ENTRY_OVERHEAD));
        let tails = Tails::new(1 << 30);
        tails.push(
            (1..=(PER_QUEUE as u64 + 10)).map(|seq| (QueueId(1), entry(seq, u64::MAX))).collect(),
        );
        assert_eq!(tails.bytes(), PER_QUEUE * (36 + ENTRY_OVERHEAD));
        assert_eq!(tails.read(QueueId(1), 10, 1000, 0).unwrap().len(), PER_QUEUE);
        assert_eq!(tails.read(QueueId(1), 9, 1000, 0), None);
        // Many queues: the first ones are dropped to make room for the last.
        let tails = Tails::new(10 * (36 + ENTRY_OVERHEAD));
        tails.push((1..=20).map(|q| (QueueId(q), entry(1, u64::MAX))).collect());
        assert_eq!(tails.read(QueueId(1), 0, 10, 0), None);
        assert_eq!(tails.read(QueueId(20), 0, 10, 0).unwrap().len(), 1);
        assert!(tails.bytes() <= 10 * (36 + ENTRY_OVERHEAD));
    }
}
