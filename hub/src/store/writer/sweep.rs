//! Sweeping: expired entries leave the head of their queues (when idle, and briefly under
//! load), and dedupe records older than the window go in one range deletion.

use super::*;

impl ShardWriter {
    /// Removes expired entries at the head of queues, and (in one pass every
    /// [`DEDUPE_PURGE_EVERY`]) dedupe records older than the window, for up to `max_queues`
    /// queues of this shard after the last one swept, stopping early once `budget` is spent.
    pub(super) fn sweep(
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
            options.set_iterate_upper_bound(vec![codec::QUEUE_META + 1]);
            let start = codec::queue_meta(QueueId(0));
            for item in
                self.db.iterator_opt(IteratorMode::From(&start, Direction::Forward), options)
            {
                let (key, _) = item?;
                if let Some(queue) = codec::queue_meta_id(&key)
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
    pub(super) fn expire_head(
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
        let end = codec::entry(QueueId(queue.0 + 1), 0);
        iter.seek(codec::entry(queue, floor + 1));
        let mut expired_to = None;
        for _ in 0..SWEEP_ENTRIES_PER_QUEUE {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else { break };
            if key >= &end[..] || decode_u64(value, "entry")? > now {
                break;
            }
            expired_to = codec::entry_seq(key);
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
    pub(super) fn purge_dedupe(
        &mut self,
        cutoff: u128,
        batch: &mut Batch,
    ) -> Result<(), StoreError> {
        self.purging_dedupe = false;
        self.last_dedupe_purge = Some(Instant::now());
        self.recent()?.forget_below(cutoff);
        if self.index != 0 {
            return Ok(());
        }
        let first = codec::dedupe(QueueId(0), 0, 0);
        let end = codec::dedupe(QueueId(0), cutoff, 0);
        let mut iter = self.db.raw_iterator();
        iter.seek(first);
        iter.status()?;
        if iter.key().is_some_and(|key| key < &end[..]) {
            batch.delete_range(first, end);
        }
        // Blocks of a millisecond before the cutoff's hold only older ids.
        let (first, end) =
            (codec::dedupe_blocks_of(0), codec::dedupe_blocks_of(dedupe::ms_of(cutoff)));
        iter.seek(first);
        iter.status()?;
        if iter.key().is_some_and(|key| key < &end[..]) {
            batch.delete_range(first, end);
        }
        Ok(())
    }

    pub(super) fn idle_sweep(&mut self, budget: Duration) {
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
                    codec::queue_meta(queue),
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
}
