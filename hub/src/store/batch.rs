//! A write batch that hands its point writes to RocksDB in key order.
//!
//! RocksDB's memtable is a skip list that reuses the position of the previous insert: keys that
//! arrive in order are cheap to insert, keys in random order each cost a full search with cache
//! misses. A group commit mixes messages for many queues, so the writer collects its writes here
//! and sorts them before building the `WriteBatch`. Measured in `benches/store_enqueue.rs`.

use rocksdb::WriteBatch;

/// Point writes (puts and deletes) and range deletions of one group commit.
#[derive(Default)]
pub(crate) struct Batch {
    points: Vec<PointWrite>,
    ranges: Vec<RangeDelete>,
}

/// A put (`value` is `Some`) or a delete of one key.
struct PointWrite {
    key: Box<[u8]>,
    value: Option<Box<[u8]>>,
}

/// Deletion of the keys in `[from, to)`.
struct RangeDelete {
    from: Box<[u8]>,
    to: Box<[u8]>,
}

impl Batch {
    pub(crate) fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.points
            .push(PointWrite { key: key.as_ref().into(), value: Some(value.as_ref().into()) });
    }

    pub(crate) fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.points.push(PointWrite { key: key.as_ref().into(), value: None });
    }

    /// Deletes `[from, to)`. Range deletions are applied after every point write of the batch;
    /// the writer never puts a key into a range it deletes in the same batch.
    pub(crate) fn delete_range(&mut self, from: impl AsRef<[u8]>, to: impl AsRef<[u8]>) {
        self.ranges.push(RangeDelete { from: from.as_ref().into(), to: to.as_ref().into() });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.points.is_empty() && self.ranges.is_empty()
    }

    /// The RocksDB batch: point writes sorted by key (a stable sort, so writes to one key keep
    /// their order), then the range deletions in the order they were made.
    pub(crate) fn into_write_batch(mut self) -> WriteBatch {
        self.points.sort_by(|a, b| a.key.cmp(&b.key));
        let mut batch = WriteBatch::default();
        for write in self.points {
            match write.value {
                Some(value) => batch.put(write.key, value),
                None => batch.delete(write.key),
            }
        }
        for range in self.ranges {
            batch.delete_range(range.from, range.to);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_to_one_key_keep_their_order_after_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let db = rocksdb::DB::open_default(dir.path()).unwrap();
        let mut batch = Batch::default();
        batch.put(b"b", b"1");
        batch.delete(b"a");
        batch.put(b"a", b"2");
        batch.delete(b"b");
        batch.put(b"c", b"x");
        batch.delete_range(b"c", b"d");
        db.write(batch.into_write_batch()).unwrap();
        assert_eq!(db.get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(db.get(b"b").unwrap(), None);
        assert_eq!(db.get(b"c").unwrap(), None);
    }
}
