//! The dedupe records a writer made since the store opened, in memory, so that the common
//! enqueue (a new message id) needs no RocksDB lookup.
//!
//! A message id starts with its creation time. Dedupe keys in RocksDB are ordered by id, so
//! the newest record is one reverse seek away when a writer starts: every id above it was
//! never recorded before this process. From then on the writer remembers each record it
//! makes, and an id at or above [`RecentIds::complete_from`] is a duplicate only if it is
//! remembered: no disk lookup. Memory is bounded: records are kept in two generations, and
//! when the newer one fills the older one is dropped and `complete_from` rises above every id
//! it held. Ids below `complete_from` (a retransmission long after the first copy, or right
//! after a restart) are still looked up in RocksDB, so forgetting costs speed, never a
//! duplicate.

use std::collections::HashMap;

use rocksdb::{DB, ReadOptions};

use crate::store::{QueueId, StoreError, batch::Batch, codec, decode_u64};

/// Generations are dropped whole; ids this far ahead of the writer's clock when their
/// generation is dropped are carried into the next one instead, so that one device with a
/// clock far ahead cannot push `complete_from` into the future (which would send every
/// lookup to disk).
const CARRY_AHEAD_MS: u64 = 60_000;

type Key = [u8; 33];

pub(crate) struct RecentIds {
    current: HashMap<Key, u64>,
    previous: HashMap<Key, u64>,
    /// Most records per generation.
    generation: usize,
    /// Every dedupe record made with an id at or above this is in `current` or `previous`.
    complete_from: u128,
    /// The largest id in `current`, and in `previous`.
    current_max: u128,
    previous_max: u128,
    /// Records in `current` (and `previous`) whose ids were ahead of the clock when made:
    /// only a generation with some is searched for them when it is dropped.
    current_ahead: usize,
    previous_ahead: usize,
}

impl RecentIds {
    /// Remembers up to about `capacity` records; `newest` is the largest id RocksDB holds a
    /// record of (`None` if none).
    pub(crate) fn new(capacity: usize, newest: Option<u128>) -> Self {
        let generation = (capacity / 2).max(1);
        Self {
            // Full size from the start: growing a map of a few hundred thousand records moves
            // all of them at once, a stall of milliseconds for every caller of the shard. The
            // memory is only touched as records arrive.
            current: HashMap::with_capacity(generation),
            previous: HashMap::new(),
            generation,
            complete_from: newest.map_or(0, |id| id.saturating_add(1)),
            current_max: 0,
            previous_max: 0,
            current_ahead: 0,
            previous_ahead: 0,
        }
    }

    /// What is known of `key` (with message id `id`): `Known(seq)` for a remembered record,
    /// `Absent` when no record can exist, `Unknown` when RocksDB must be asked.
    pub(crate) fn lookup(&self, key: &Key, id: u128) -> Lookup {
        if let Some(&seq) = self.current.get(key).or_else(|| self.previous.get(key)) {
            Lookup::Known(seq)
        } else if id >= self.complete_from {
            Lookup::Absent
        } else {
            Lookup::Unknown
        }
    }

    /// Remembers a record made now; `now_ms` is the writer's clock.
    pub(crate) fn insert(&mut self, key: Key, id: u128, seq: u64, now_ms: u64) {
        if self.current.len() >= self.generation {
            self.rotate(now_ms);
        }
        self.current.insert(key, seq);
        self.current_max = self.current_max.max(id);
        if id >= ahead_of(now_ms) {
            self.current_ahead += 1;
        }
    }

    /// Drops the older generation; the newer one becomes the older. Dropping costs nothing
    /// per record unless some of its ids were ahead of the clock.
    fn rotate(&mut self, now_ms: u64) {
        let mut dropped = std::mem::take(&mut self.previous);
        std::mem::swap(&mut self.previous, &mut self.current);
        let dropped_max = std::mem::replace(&mut self.previous_max, self.current_max);
        let dropped_ahead = std::mem::replace(&mut self.previous_ahead, self.current_ahead);
        self.current_max = 0;
        self.current_ahead = 0;
        let mut bound = dropped_max;
        if dropped_ahead > 0 {
            // Carry the ids still ahead of the clock, up to half a generation; the others set
            // the new lower bound.
            let horizon = ahead_of(now_ms);
            bound = 0;
            for (&key, &seq) in &dropped {
                let id = id_of(&key);
                if id >= horizon && self.current.len() < self.generation / 2 {
                    self.current.insert(key, seq);
                    self.current_max = self.current_max.max(id);
                    self.current_ahead += 1;
                } else {
                    bound = bound.max(id);
                }
            }
        }
        if bound > 0 {
            self.complete_from = self.complete_from.max(bound + 1);
        }
        // The dropped generation's memory becomes the new one: clearing keeps its capacity.
        dropped.clear();
        dropped.reserve(self.generation);
        dropped.extend(self.current.drain());
        self.current = dropped;
    }

    /// Forgets the records with ids below `cutoff`, as the purge of the dedupe window does on
    /// disk: a message resent after the window is new again.
    pub(crate) fn forget_below(&mut self, cutoff: u128) {
        self.previous.retain(|key, _| id_of(key) >= cutoff);
        self.current.retain(|key, _| id_of(key) >= cutoff);
    }

    /// Records remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// See [`RecentIds::lookup`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Known(u64),
    Absent,
    Unknown,
}

/// The smallest id more than [`CARRY_AHEAD_MS`] ahead of `now_ms`.
pub(crate) fn ahead_of(now_ms: u64) -> u128 {
    u128::from(now_ms.saturating_add(CARRY_AHEAD_MS)) << 80
}

/// The message id in a dedupe key (tag, id, queue, sender hash).
fn id_of(key: &Key) -> u128 {
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[1..17]);
    u128::from_be_bytes(id)
}

// On disk, the records of one group commit are written together: one *block* per millisecond
// their ids start with, a sorted array of records under a key that starts with that
// millisecond. A group commit of hundreds of messages writes a few blocks instead of one
// record each (each RocksDB put costs its write-ahead log, memtable insert, flush and
// compactions: measured, the per-message record cost a third of the enqueue throughput).
//
// A lookup on disk (an id memory has forgotten) reads the blocks of the id's millisecond. A
// device chooses its ids, so it could give thousands of messages the same millisecond and make
// every such lookup read thousands of blocks; so a millisecond gets at most
// [`MAX_BLOCKS_PER_MS`] blocks of at most [`MAX_BLOCK_RECORDS`] records (the writer counts the
// blocks already there before it adds one), and records beyond that are written one key each,
// as single records. A lookup therefore reads at most a few dozen kilobytes.

/// Most blocks one millisecond gets (two shards counting at once may each add one more).
pub(crate) const MAX_BLOCKS_PER_MS: usize = 8;
/// Most records in one block.
pub(crate) const MAX_BLOCK_RECORDS: usize = 512;
const RECORD_LEN: usize = 40;

/// A dedupe record: the message `id` from the sender with hash `sender` is `seq` in `queue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Record {
    pub(crate) id: u128,
    pub(crate) queue: u64,
    pub(crate) sender: u64,
    pub(crate) seq: u64,
}

impl Record {
    /// The record's key when written alone (and in memory).
    pub(crate) fn key(&self) -> Key {
        codec::dedupe(QueueId(self.queue), self.id, self.sender)
    }
}

/// The millisecond a message id starts with.
pub(crate) fn ms_of(id: u128) -> u64 {
    (id >> 80) as u64
}

/// A block's value: `records`, which must be sorted, one after the other.
pub(crate) fn encode_block(records: &[Record]) -> Vec<u8> {
    let mut value = Vec::with_capacity(records.len() * RECORD_LEN);
    for r in records {
        value.extend_from_slice(&r.id.to_be_bytes());
        value.extend_from_slice(&r.queue.to_be_bytes());
        value.extend_from_slice(&r.sender.to_be_bytes());
        value.extend_from_slice(&r.seq.to_be_bytes());
    }
    value
}

fn record_at(block: &[u8], index: usize) -> Record {
    let raw = &block[index * RECORD_LEN..(index + 1) * RECORD_LEN];
    let mut id = [0u8; 16];
    id.copy_from_slice(&raw[..16]);
    Record {
        id: u128::from_be_bytes(id),
        queue: codec::be_u64(&raw[16..24]),
        sender: codec::be_u64(&raw[24..32]),
        seq: codec::be_u64(&raw[32..40]),
    }
}

fn check_block(block: &[u8]) -> Result<usize, StoreError> {
    if !block.len().is_multiple_of(RECORD_LEN) {
        return Err(StoreError::Corrupt(format!("dedupe block of {} bytes", block.len())));
    }
    Ok(block.len() / RECORD_LEN)
}

/// The sequence recorded in `block` for (`id`, `queue`, `sender`), if any.
pub(crate) fn find_in_block(
    block: &[u8],
    id: u128,
    queue: u64,
    sender: u64,
) -> Result<Option<u64>, StoreError> {
    let wanted = (id, queue, sender);
    let (mut low, mut high) = (0, check_block(block)?);
    while low < high {
        let middle = low + (high - low) / 2;
        let record = record_at(block, middle);
        match (record.id, record.queue, record.sender).cmp(&wanted) {
            std::cmp::Ordering::Less => low = middle + 1,
            std::cmp::Ordering::Greater => high = middle,
            std::cmp::Ordering::Equal => return Ok(Some(record.seq)),
        }
    }
    Ok(None)
}

/// Every record of `block`.
pub(crate) fn decode_block(block: &[u8]) -> Result<Vec<Record>, StoreError> {
    Ok((0..check_block(block)?).map(|i| record_at(block, i)).collect())
}

// The index on disk: single records and blocks under the dedupe keys of `codec`.

/// The in-memory dedupe records, rebuilt from disk after a start or a failed write.
///
/// Memory answers alone for ids above the newest record on disk. A device whose clock runs
/// far ahead leaves records with ids from the future, which would put that bound out of
/// reach of every other id for as long as they are kept; so the bound is the newest id
/// up to a minute ahead of this clock, and the (few) records beyond it are loaded into
/// memory. If there are too many of them, the bound is the newest id of all: slower
/// (ids below it are looked up on disk), never wrong.
pub(crate) fn load_recent(db: &DB, capacity: usize, now: u64) -> Result<RecentIds, StoreError> {
    let horizon = ahead_of(now);
    let horizon_ms = ms_of(horizon);
    let mut iter = db.raw_iterator();
    let mut ahead = Vec::new();
    let mut too_many = false;
    // Single records: the newest below the horizon, then every one from it on.
    iter.seek_for_prev(codec::dedupe(QueueId(0), horizon, 0));
    iter.status()?;
    let mut newest = iter.key().and_then(codec::dedupe_id);
    iter.seek(codec::dedupe(QueueId(0), horizon, 0));
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        let (Some(id), Some((queue, sender))) =
            (codec::dedupe_id(key), codec::dedupe_queue_and_sender(key))
        else {
            break;
        };
        if ahead.len() > capacity / 4 {
            too_many = true;
            break;
        }
        ahead.push(Record { id, queue, sender, seq: decode_u64(value, "dedupe")? });
        iter.next();
    }
    iter.status()?;
    // Blocks likewise, by the millisecond of their ids.
    iter.seek_for_prev(codec::dedupe_blocks_of(horizon_ms));
    iter.status()?;
    if let Some(ms) = iter.key().and_then(codec::dedupe_block_ms) {
        newest = newest.max(newest_in_blocks_of(&mut iter, ms)?);
    }
    iter.seek(codec::dedupe_blocks_of(horizon_ms));
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        if too_many || codec::dedupe_block_ms(key).is_none() {
            break;
        }
        ahead.extend(decode_block(value)?);
        too_many = ahead.len() > capacity / 4;
        iter.next();
    }
    iter.status()?;
    let mut recent = if too_many {
        // Too many records from the future to hold: bound by the newest of all.
        ahead.clear();
        iter.seek_for_prev(codec::dedupe(QueueId(u64::MAX), u128::MAX, u64::MAX));
        iter.status()?;
        let newest_single = iter.key().and_then(codec::dedupe_id);
        iter.seek_for_prev(codec::dedupe_block(u64::MAX, QueueId(u64::MAX), u64::MAX));
        iter.status()?;
        let newest_block = match iter.key().and_then(codec::dedupe_block_ms) {
            Some(ms) => newest_in_blocks_of(&mut iter, ms)?,
            None => None,
        };
        RecentIds::new(capacity, newest_single.max(newest_block))
    } else {
        RecentIds::new(capacity, newest)
    };
    for record in ahead {
        recent.insert(record.key(), record.id, record.seq, now);
    }
    Ok(recent)
}

/// The sequence a dedupe record on disk gives (`record.seq` is not looked at): a single
/// record, or one in a block of the id's millisecond (at most a few of them).
pub(crate) fn lookup_on_disk(db: &DB, record: &Record) -> Result<Option<u64>, StoreError> {
    if let Some(seq) = db.get_pinned(record.key())? {
        return decode_u64(&seq, "dedupe").map(Some);
    }
    let prefix = codec::dedupe_blocks_of(ms_of(record.id));
    let mut options = ReadOptions::default();
    options.set_iterate_upper_bound(codec::prefix_end(&prefix));
    let mut iter = db.raw_iterator_opt(options);
    iter.seek(prefix);
    while let Some(block) = iter.value() {
        if let Some(seq) = find_in_block(block, record.id, record.queue, record.sender)? {
            return Ok(Some(seq));
        }
        iter.next();
    }
    iter.status()?;
    Ok(None)
}

/// Writes a batch's dedupe records: per millisecond of their ids, one block, or single
/// records when the millisecond has its blocks already or the group is too large (see
/// `dedupe`).
pub(crate) fn write_records(db: &DB, batch: &mut Batch, mut records: Vec<Record>) {
    records.sort_unstable();
    let mut iter = db.raw_iterator();
    let mut rest = &records[..];
    while let Some(first) = rest.first() {
        let ms = ms_of(first.id);
        let len = rest.iter().take_while(|r| ms_of(r.id) == ms).count();
        let (group, after) = rest.split_at(len);
        rest = after;
        if group.len() <= MAX_BLOCK_RECORDS && blocks_of(&mut iter, ms) < MAX_BLOCKS_PER_MS {
            let key = codec::dedupe_block(ms, QueueId(first.queue), first.seq);
            batch.put(key, encode_block(group));
        } else {
            for record in group {
                batch.put(record.key(), record.seq.to_be_bytes());
            }
        }
    }
}

/// The largest message id in the dedupe blocks of millisecond `ms` (the last record of each:
/// records are sorted).
fn newest_in_blocks_of(
    iter: &mut rocksdb::DBRawIterator<'_>,
    ms: u64,
) -> Result<Option<u128>, StoreError> {
    let prefix = codec::dedupe_blocks_of(ms);
    iter.seek(prefix);
    let mut newest = None;
    while let (Some(key), Some(block)) = (iter.key(), iter.value()) {
        if !key.starts_with(&prefix) {
            break;
        }
        newest = newest.max(decode_block(block)?.last().map(|r| r.id));
        iter.next();
    }
    iter.status()?;
    Ok(newest)
}

/// How many dedupe blocks millisecond `ms` has, counted up to [`MAX_BLOCKS_PER_MS`];
/// `usize::MAX` if RocksDB could not tell (the caller then writes single records, which are
/// always safe).
fn blocks_of(iter: &mut rocksdb::DBRawIterator<'_>, ms: u64) -> usize {
    let prefix = codec::dedupe_blocks_of(ms);
    iter.seek(prefix);
    let mut count = 0;
    while count < MAX_BLOCKS_PER_MS && iter.key().is_some_and(|key| key.starts_with(&prefix)) {
        count += 1;
        iter.next();
    }
    if iter.status().is_err() { usize::MAX } else { count }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, n: u128) -> u128 {
        (u128::from(ms) << 80) | n
    }

    fn key(id: u128) -> Key {
        codec::dedupe(QueueId(7), id, 42)
    }

    #[test]
    fn ids_above_the_newest_on_disk_need_no_lookup() {
        let recent = RecentIds::new(100, Some(id(1_000, 5)));
        assert_eq!(recent.lookup(&key(id(1_000, 5)), id(1_000, 5)), Lookup::Unknown);
        assert_eq!(recent.lookup(&key(id(1_000, 6)), id(1_000, 6)), Lookup::Absent);
        let empty = RecentIds::new(100, None);
        assert_eq!(empty.lookup(&key(1), 1), Lookup::Absent);
    }

    #[test]
    fn a_dropped_generation_sends_its_ids_back_to_disk() {
        let mut recent = RecentIds::new(4, None);
        for n in 1..=4 {
            recent.insert(key(id(1_000, n)), id(1_000, n), n as u64, 1_000);
        }
        assert_eq!(recent.lookup(&key(id(1_000, 1)), id(1_000, 1)), Lookup::Known(1));
        // The third generation drops the first (ids 1 and 2).
        recent.insert(key(id(1_000, 5)), id(1_000, 5), 5, 1_000);
        assert_eq!(recent.len(), 3);
        assert_eq!(recent.lookup(&key(id(1_000, 1)), id(1_000, 1)), Lookup::Unknown);
        assert_eq!(recent.lookup(&key(id(1_000, 2)), id(1_000, 2)), Lookup::Unknown);
        assert_eq!(recent.lookup(&key(id(1_000, 3)), id(1_000, 3)), Lookup::Known(3));
        assert_eq!(recent.lookup(&key(id(1_000, 9)), id(1_000, 9)), Lookup::Absent);
    }

    #[test]
    fn an_id_from_a_clock_far_ahead_is_carried_not_dropped() {
        let mut recent = RecentIds::new(8, None);
        let future = id(10_000_000, 1);
        recent.insert(key(future), future, 1, 1_000);
        // Enough ordinary records to drop the generation holding it several times over.
        for n in 2..=40 {
            recent.insert(key(id(1_000, n)), id(1_000, n), n as u64, 1_000);
        }
        assert_eq!(recent.lookup(&key(future), future), Lookup::Known(1));
        // Ordinary ids are still answered from memory.
        assert_eq!(recent.lookup(&key(id(1_001, 1)), id(1_001, 1)), Lookup::Absent);
    }

    #[test]
    fn forgetting_below_a_cutoff_forgets_only_older_ids() {
        let mut recent = RecentIds::new(100, None);
        recent.insert(key(id(1_000, 1)), id(1_000, 1), 1, 1_000);
        recent.insert(key(id(2_000, 1)), id(2_000, 1), 2, 2_000);
        recent.forget_below(id(1_500, 0));
        assert_eq!(recent.lookup(&key(id(1_000, 1)), id(1_000, 1)), Lookup::Absent);
        assert_eq!(recent.lookup(&key(id(2_000, 1)), id(2_000, 1)), Lookup::Known(2));
    }

    #[test]
    fn a_block_finds_each_of_its_records_and_nothing_else() {
        let mut records: Vec<Record> = (0..300u64)
            .map(|n| Record { id: id(1_000, u128::from(n % 7)), queue: n, sender: 5, seq: n * 3 })
            .collect();
        records.sort();
        let block = encode_block(&records);
        for r in &records {
            assert_eq!(find_in_block(&block, r.id, r.queue, r.sender).unwrap(), Some(r.seq));
            assert_eq!(find_in_block(&block, r.id, r.queue, r.sender + 1).unwrap(), None);
        }
        assert_eq!(decode_block(&block).unwrap(), records);
        assert!(matches!(find_in_block(&block[1..], 0, 0, 0), Err(StoreError::Corrupt(_))));
    }
}
