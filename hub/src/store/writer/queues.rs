//! Queues and cursors: appends (messages and the hub's own logs), acks, trims, queue and device
//! creation, subscriptions, and each queue's state in memory.

use super::*;

pub(super) struct QueueState {
    pub(super) last_seq: u64,
    pub(super) floor: u64,
    pub(super) name: Box<str>,
    pub(super) readers: Option<Readers>,
}

/// The cursors of every device reading a queue, with a count of readers per cursor so that
/// the lowest cursor (how far the queue may be trimmed) costs O(log n) even for 10,000 readers.
#[derive(Default)]
pub(super) struct Readers {
    pub(super) cursors: HashMap<DeviceId, Cursor>,
    pub(super) by_position: BTreeMap<u64, u32>,
}

impl Readers {
    pub(super) fn insert(&mut self, device: DeviceId, cursor: Cursor) {
        if let Some(old) = self.cursors.insert(device, cursor.clone()) {
            self.forget_position(old.acked);
        }
        *self.by_position.entry(cursor.acked).or_default() += 1;
    }

    pub(super) fn remove(&mut self, device: DeviceId) -> bool {
        match self.cursors.remove(&device) {
            Some(old) => {
                self.forget_position(old.acked);
                true
            }
            None => false,
        }
    }

    pub(super) fn forget_position(&mut self, position: u64) {
        if let Some(count) = self.by_position.get_mut(&position) {
            *count -= 1;
            if *count == 0 {
                self.by_position.remove(&position);
            }
        }
    }

    pub(super) fn lowest(&self) -> Option<u64> {
        self.by_position.keys().next().copied()
    }
}

impl ShardWriter {
    /// Appends every payload to `queue`, a log of the hub's own (the organisation events):
    /// all in the same write or none, never expiring, with no dedupe record and no backlog
    /// limit (a log is never trimmed; refusing its growth would stop the changes it records).
    pub(super) fn append_log(
        &mut self,
        queue: QueueId,
        payloads: Vec<Bytes>,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<Vec<u64>, StoreError> {
        let budget = self.shared.disk_budget.load(Ordering::Relaxed);
        let used = self.shared.disk_used.load(Ordering::Relaxed);
        if budget > 0 && used >= budget {
            return Err(StoreError::DiskFull { used, budget });
        }
        if self.shared.space.is_full() {
            return Err(StoreError::NoSpace { free: self.shared.space.free() });
        }
        let state = self.queue(queue)?;
        let mut seqs = Vec::with_capacity(payloads.len());
        for payload in payloads {
            state.last_seq += 1;
            let mut value = Vec::with_capacity(8 + payload.len());
            value.extend_from_slice(&u64::MAX.to_be_bytes());
            value.extend_from_slice(&payload[..]);
            batch.put(codec::entry(queue, state.last_seq), value);
            seqs.push(state.last_seq);
            staged
                .appended
                .push((queue, Entry { seq: state.last_seq, expires_ms: u64::MAX, payload }));
        }
        staged.enqueued += seqs.len() as u64;
        Ok(seqs)
    }

    pub(super) fn enqueue(
        &mut self,
        queue: QueueId,
        request: EnqueueRequest,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<Enqueued, StoreError> {
        let budget = self.shared.disk_budget.load(Ordering::Relaxed);
        let used = self.shared.disk_used.load(Ordering::Relaxed);
        if budget > 0 && used >= budget {
            return Err(StoreError::DiskFull { used, budget });
        }
        if self.shared.space.is_full() {
            return Err(StoreError::NoSpace { free: self.shared.space.free() });
        }
        let sender = codec::stable_hash(&request.sender);
        let dedupe_key = codec::dedupe(queue, request.id, sender);
        let limit = self.shared.backlog_limit.load(std::sync::atomic::Ordering::Relaxed);
        self.queue(queue)?;
        match self.recent()?.lookup(&dedupe_key, request.id) {
            Lookup::Known(seq) => return Ok(Enqueued { seq, duplicate: true }),
            Lookup::Absent => {}
            Lookup::Unknown => {
                self.shared.metrics.dedupe_disk_lookups.fetch_add(1, Ordering::Relaxed);
                let wanted = Record { id: request.id, queue: queue.0, sender, seq: 0 };
                if let Some(seq) = self.dedupe_on_disk(&wanted)? {
                    return Ok(Enqueued { seq, duplicate: true });
                }
            }
        }
        let state = self.queue(queue)?;
        if state.last_seq - state.floor >= limit {
            return Err(StoreError::BacklogFull { queue, backlog: limit });
        }
        state.last_seq += 1;
        let seq = state.last_seq;
        let mut value = Vec::with_capacity(8 + request.payload.len());
        value.extend_from_slice(&request.expires_ms.to_be_bytes());
        value.extend_from_slice(&request.payload);
        batch.put(codec::entry(queue, seq), value);
        staged.dedupe.push(Record { id: request.id, queue: queue.0, sender, seq });
        let entry = Entry { seq, expires_ms: request.expires_ms, payload: request.payload };
        staged.appended.push((queue, entry));
        let now = (self.shared.clock)();
        self.recent()?.insert(dedupe_key, request.id, seq, now);
        staged.enqueued += 1;
        // The queue record is not rewritten for an append: on load, the last sequence is
        // recovered from the queue's last entry key. Only a trim or an expiry, which can remove
        // that entry, writes the record (with the last sequence) again.
        Ok(Enqueued { seq, duplicate: false })
    }

    pub(super) fn ack(
        &mut self,
        queue: QueueId,
        device: DeviceId,
        up_to: u64,
        selective: Vec<u64>,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<Cursor, StoreError> {
        let max_selective = self.shared.config.max_selective;
        let state = self.readers_of(queue)?;
        let last = state.last_seq;
        let readers = state.readers.as_mut().expect("readers_of loads the readers");
        let old =
            readers.cursors.get(&device).ok_or(StoreError::NotSubscribed { queue, device })?;
        if let Some(&seq) = selective.iter().chain([&up_to]).find(|&&s| s > last) {
            return Err(StoreError::AckBeyondTail { queue, seq, last });
        }
        let cursor = advance(old, state.floor, up_to, &selective);
        if cursor.selective.len() > max_selective {
            return Err(StoreError::TooManySelectiveAcks { limit: max_selective });
        }
        if cursor != *old {
            batch.put(codec::reader(queue, device), encode_cursor(&cursor));
            readers.insert(device, cursor.clone());
            self.trim(queue, batch, staged);
        }
        Ok(cursor)
    }

    pub(super) fn create_queue(
        &mut self,
        name: Box<str>,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<QueueId, StoreError> {
        if let Some(&queue) = staged.names.get(&name) {
            return Ok(queue);
        }
        if let Some(existing) = self.db.get_pinned(codec::queue_name(&name))? {
            return decode_u64(&existing, "queue name").map(QueueId);
        }
        let queue = QueueId(self.allocate(codec::ALLOC_QUEUE, batch)?);
        batch.put(codec::queue_name(&name), queue.0.to_be_bytes());
        batch.put(codec::queue_meta(queue), encode_meta(0, 0, &name));
        staged.names.insert(name, queue);
        if self.shard_of(queue) == self.index as usize
            && let Some(owned) = self.owned.as_mut()
        {
            owned.insert(queue);
        }
        Ok(queue)
    }

    pub(super) fn add_device(
        &mut self,
        account: QueueId,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<DeviceId, StoreError> {
        self.queue(account)?;
        let device = DeviceId(self.allocate(codec::ALLOC_DEVICE, batch)?);
        batch.put(codec::device(device), account.0.to_be_bytes());
        staged.devices.insert(device, account);
        self.subscribe(account, device, StartAt::Oldest, batch, staged)?;
        Ok(device)
    }

    pub(super) fn subscribe(
        &mut self,
        queue: QueueId,
        device: DeviceId,
        start: StartAt,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<(), StoreError> {
        let known = staged.devices.contains_key(&device)
            || self.db.get_pinned(codec::device(device))?.is_some();
        if !known {
            return Err(StoreError::UnknownDevice(device));
        }
        let state = self.readers_of(queue)?;
        let readers = state.readers.as_mut().expect("readers_of loads the readers");
        if readers.cursors.contains_key(&device) {
            return Ok(());
        }
        let acked = match start {
            StartAt::Oldest => state.floor,
            StartAt::Next => state.last_seq,
        };
        let cursor = Cursor { acked, selective: Vec::new() };
        batch.put(codec::reader(queue, device), encode_cursor(&cursor));
        // The subscription records where the device started: what is at or below it never
        // reached this device (see `Store::reached_device`).
        batch.put(codec::subscription(device, queue), acked.to_be_bytes());
        readers.insert(device, cursor);
        // A queue whose only readers start after its backlog holds nothing anyone will read.
        self.trim(queue, batch, staged);
        Ok(())
    }

    pub(super) fn unsubscribe(
        &mut self,
        queue: QueueId,
        device: DeviceId,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<(), StoreError> {
        let state = self.readers_of(queue)?;
        let readers = state.readers.as_mut().expect("readers_of loads the readers");
        batch.delete(codec::subscription(device, queue));
        if readers.remove(device) {
            batch.delete(codec::reader(queue, device));
            self.trim(queue, batch, staged);
        }
        Ok(())
    }

    /// Removes every entry all readers have acknowledged. A queue without readers keeps its
    /// entries (until they expire): a user with no device yet still gets them later.
    pub(super) fn trim(&mut self, queue: QueueId, batch: &mut Batch, staged: &mut Staged) {
        let Some(state) = self.queues.get_mut(&queue) else { return };
        let Some(lowest) = state.readers.as_ref().and_then(Readers::lowest) else { return };
        if lowest > state.floor {
            delete_entries(batch, queue, state.floor, lowest);
            state.floor = lowest;
            staged.floors.push((queue, lowest));
            mark_dirty(staged, queue);
        }
    }

    /// The state of a queue this shard owns, loaded from RocksDB on first use.
    pub(super) fn queue(&mut self, queue: QueueId) -> Result<&mut QueueState, StoreError> {
        match self.queues.entry(queue) {
            hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            hash_map::Entry::Vacant(vacant) => {
                let meta = load_meta(&self.db, queue)?;
                // A queue another shard created is learnt when this shard first touches it.
                if let Some(owned) = self.owned.as_mut() {
                    owned.insert(queue);
                }
                Ok(vacant.insert(QueueState {
                    last_seq: meta.last_seq,
                    floor: meta.floor,
                    name: meta.name,
                    readers: None,
                }))
            }
        }
    }

    /// Like [`Self::queue`], with the readers loaded too.
    pub(super) fn readers_of(&mut self, queue: QueueId) -> Result<&mut QueueState, StoreError> {
        let db = self.db.clone();
        let state = self.queue(queue)?;
        if state.readers.is_none() {
            let prefix = codec::readers_of(queue);
            let mut options = ReadOptions::default();
            options.set_iterate_upper_bound(codec::prefix_end(&prefix));
            let mut readers = Readers::default();
            for item in db.iterator_opt(IteratorMode::From(&prefix, Direction::Forward), options) {
                let (key, value) = item?;
                let device = codec::reader_device(&key)
                    .ok_or_else(|| StoreError::Corrupt("reader key".into()))?;
                readers.insert(device, decode_cursor(&value)?);
            }
            state.readers = Some(readers);
        }
        Ok(state)
    }
}

/// Deletes the entries of `queue` with sequences in `(from, to]`.
pub(super) fn delete_entries(batch: &mut Batch, queue: QueueId, from: u64, to: u64) {
    if to - from > RANGE_DELETE_ABOVE {
        batch.delete_range(codec::entry(queue, from + 1), codec::entry(queue, to + 1));
    } else {
        for seq in from + 1..=to {
            batch.delete(codec::entry(queue, seq));
        }
    }
}

/// The cursor after acknowledging `up_to` and `selective` from `old`, with `floor` (entries
/// already removed) counted as acknowledged.
pub(super) fn advance(old: &Cursor, floor: u64, up_to: u64, selective: &[u64]) -> Cursor {
    let mut acked = old.acked.max(up_to).max(floor);
    let mut above: Vec<u64> =
        old.selective.iter().chain(selective).copied().filter(|&s| s > acked).collect();
    above.sort_unstable();
    above.dedup();
    let mut consumed = 0;
    for &seq in &above {
        if seq != acked + 1 {
            break;
        }
        acked = seq;
        consumed += 1;
    }
    above.drain(..consumed);
    Cursor { acked, selective: above }
}

/// A queue's record, with the last sequence raised to the queue's last entry (appends do not
/// rewrite the record).
pub(crate) fn load_meta(db: &DB, queue: QueueId) -> Result<Meta, StoreError> {
    let raw = db.get_pinned(codec::queue_meta(queue))?.ok_or(StoreError::UnknownQueue(queue))?;
    let mut meta = decode_meta(&raw)?;
    let mut options = ReadOptions::default();
    options.set_iterate_lower_bound(codec::entry(queue, 0).to_vec());
    let last_key = codec::entry(queue, u64::MAX);
    let mut iter = db.iterator_opt(IteratorMode::From(&last_key, Direction::Reverse), options);
    if let Some(item) = iter.next() {
        let (key, _) = item?;
        let seq = codec::entry_seq(&key).ok_or_else(|| StoreError::Corrupt("entry key".into()))?;
        meta.last_seq = meta.last_seq.max(seq);
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn cursor(acked: u64, selective: &[u64]) -> Cursor {
        Cursor { acked, selective: selective.to_vec() }
    }

    #[test]
    pub(super) fn cumulative_ack_moves_the_cursor_and_drops_selective_below_it() {
        assert_eq!(advance(&cursor(2, &[5, 9]), 0, 6, &[]), cursor(6, &[9]));
    }

    #[test]
    pub(super) fn selective_ack_that_closes_the_gap_moves_the_cursor_over_the_run() {
        assert_eq!(advance(&cursor(2, &[4, 5, 7]), 0, 0, &[3]), cursor(5, &[7]));
    }

    #[test]
    pub(super) fn an_older_cumulative_ack_never_moves_the_cursor_back() {
        assert_eq!(advance(&cursor(10, &[]), 0, 4, &[]), cursor(10, &[]));
    }

    #[test]
    pub(super) fn removed_entries_below_the_floor_count_as_acknowledged() {
        assert_eq!(advance(&cursor(1, &[]), 8, 0, &[9, 11]), cursor(9, &[11]));
    }

    #[test]
    pub(super) fn lowest_reader_position_follows_inserts_and_removals() {
        let mut readers = Readers::default();
        readers.insert(DeviceId(1), cursor(5, &[]));
        readers.insert(DeviceId(2), cursor(3, &[]));
        readers.insert(DeviceId(3), cursor(3, &[]));
        assert_eq!(readers.lowest(), Some(3));
        readers.insert(DeviceId(2), cursor(7, &[]));
        assert_eq!(readers.lowest(), Some(3));
        readers.remove(DeviceId(3));
        assert_eq!(readers.lowest(), Some(5));
        readers.remove(DeviceId(1));
        readers.remove(DeviceId(2));
        assert_eq!(readers.lowest(), None);
    }

    #[test]
    pub(super) fn cursor_records_round_trip_and_bad_lengths_are_corrupt() {
        let c = cursor(42, &[44, 50]);
        assert_eq!(decode_cursor(&encode_cursor(&c)).unwrap(), c);
        assert!(matches!(decode_cursor(&[0; 11]), Err(StoreError::Corrupt(_))));
    }
}
