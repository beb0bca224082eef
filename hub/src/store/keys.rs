//! The RocksDB key layout. Nothing outside `store/` knows it.
//!
//! Every key starts with one tag byte, then fixed-width big-endian integers, so that all the
//! entries of one queue are one ordered range and a scan never crosses into another queue.
//!
//! | tag | key | value |
//! |---|---|---|
//! | 0x01 entry | queue u64, seq u64 | expires_ms u64, payload |
//! | 0x02 queue meta | queue u64 | last_seq u64, floor u64, name |
//! | 0x03 queue name | name bytes | queue u64 |
//! | 0x04 reader | queue u64, device u64 | cursor u64, n u16, n × selective seq u64 |
//! | 0x05 subscription | device u64, queue u64 | (empty) |
//! | 0x06 device | device u64 | account queue u64 |
//! | 0x07 dedupe | message id u128, queue u64, sender hash u64 | seq u64 |
//! | 0x0E dedupe block | millisecond of its ids u64, queue u64, seq u64 (of its first record) | n × (id u128, queue u64, sender hash u64, seq u64), ascending |
//! | 0x08 id allocator | kind u8, shard u16 | next counter u64 |
//! | 0x09 user | address bytes | queue u64, status u8, created_ms u64 |
//! | 0x0A enrolment code | account queue u64, SHA-256 of the code | expires_ms u64 |
//! | 0x0D blob | name bytes | bytes (logos) |
//! | 0x0C API token | SHA-256 of the token | user address bytes |
//! | 0x0B device record | device address bytes | device u64, account u64, key 32, revoked u8, enrolled_ms u64 |

use crate::store::{DeviceId, QueueId};

pub(crate) const ENTRY: u8 = 0x01;
pub(crate) const QUEUE_META: u8 = 0x02;
pub(crate) const QUEUE_NAME: u8 = 0x03;
pub(crate) const READER: u8 = 0x04;
pub(crate) const SUBSCRIPTION: u8 = 0x05;
pub(crate) const DEVICE: u8 = 0x06;
pub(crate) const DEDUPE: u8 = 0x07;
pub(crate) const ALLOCATOR: u8 = 0x08;
pub(crate) const USER: u8 = 0x09;
pub(crate) const ENROLMENT_CODE: u8 = 0x0A;
pub(crate) const DEVICE_RECORD: u8 = 0x0B;
pub(crate) const API_TOKEN: u8 = 0x0C;
pub(crate) const BLOB: u8 = 0x0D;
pub(crate) const DEDUPE_BLOCK: u8 = 0x0E;

/// Allocator kinds.
pub(crate) const ALLOC_QUEUE: u8 = 1;
pub(crate) const ALLOC_DEVICE: u8 = 2;

pub(crate) fn entry(queue: QueueId, seq: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = ENTRY;
    key[1..9].copy_from_slice(&queue.0.to_be_bytes());
    key[9..17].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number in an entry key.
pub(crate) fn entry_seq(key: &[u8]) -> Option<u64> {
    (key.len() == 17 && key[0] == ENTRY).then(|| be_u64(&key[9..17]))
}

pub(crate) fn queue_meta(queue: QueueId) -> [u8; 9] {
    tagged_u64(QUEUE_META, queue.0)
}

pub(crate) fn queue_meta_id(key: &[u8]) -> Option<QueueId> {
    (key.len() == 9 && key[0] == QUEUE_META).then(|| QueueId(be_u64(&key[1..9])))
}

pub(crate) fn queue_name(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(QUEUE_NAME);
    key.extend_from_slice(name.as_bytes());
    key
}

pub(crate) fn reader(queue: QueueId, device: DeviceId) -> [u8; 17] {
    two_u64(READER, queue.0, device.0)
}

/// The device in a reader key.
pub(crate) fn reader_device(key: &[u8]) -> Option<DeviceId> {
    (key.len() == 17 && key[0] == READER).then(|| DeviceId(be_u64(&key[9..17])))
}

pub(crate) fn readers_of(queue: QueueId) -> [u8; 9] {
    tagged_u64(READER, queue.0)
}

pub(crate) fn subscription(device: DeviceId, queue: QueueId) -> [u8; 17] {
    two_u64(SUBSCRIPTION, device.0, queue.0)
}

pub(crate) fn subscriptions_of(device: DeviceId) -> [u8; 9] {
    tagged_u64(SUBSCRIPTION, device.0)
}

/// The queue in a subscription key.
pub(crate) fn subscription_queue(key: &[u8]) -> Option<QueueId> {
    (key.len() == 17 && key[0] == SUBSCRIPTION).then(|| QueueId(be_u64(&key[9..17])))
}

pub(crate) fn device(device: DeviceId) -> [u8; 9] {
    tagged_u64(DEVICE, device.0)
}

/// A dedupe record's key. Ids start with their creation time, so the records are in time
/// order across all queues: the newest is one reverse seek away, and the records older than
/// the dedupe window are one key range.
pub(crate) fn dedupe(queue: QueueId, id: u128, sender_hash: u64) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = DEDUPE;
    key[1..17].copy_from_slice(&id.to_be_bytes());
    key[17..25].copy_from_slice(&queue.0.to_be_bytes());
    key[25..33].copy_from_slice(&sender_hash.to_be_bytes());
    key
}

/// A dedupe block's key: the millisecond its message ids start with, then the queue and
/// sequence of its first record, which no other record has (sequences are never reused).
pub(crate) fn dedupe_block(ms: u64, queue: QueueId, seq: u64) -> [u8; 25] {
    let mut key = [0u8; 25];
    key[0] = DEDUPE_BLOCK;
    key[1..9].copy_from_slice(&ms.to_be_bytes());
    key[9..17].copy_from_slice(&queue.0.to_be_bytes());
    key[17..25].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The prefix of every dedupe block of one millisecond.
pub(crate) fn dedupe_blocks_of(ms: u64) -> [u8; 9] {
    tagged_u64(DEDUPE_BLOCK, ms)
}

/// The millisecond of a dedupe block key.
pub(crate) fn dedupe_block_ms(key: &[u8]) -> Option<u64> {
    (key.len() == 25 && key[0] == DEDUPE_BLOCK).then(|| be_u64(&key[1..9]))
}

/// The message id in a dedupe key.
pub(crate) fn dedupe_id(key: &[u8]) -> Option<u128> {
    (key.len() == 33 && key[0] == DEDUPE).then(|| {
        let mut id = [0u8; 16];
        id.copy_from_slice(&key[1..17]);
        u128::from_be_bytes(id)
    })
}

/// The queue and sender hash in a dedupe key.
pub(crate) fn dedupe_queue_and_sender(key: &[u8]) -> Option<(u64, u64)> {
    (key.len() == 33 && key[0] == DEDUPE).then(|| (be_u64(&key[17..25]), be_u64(&key[25..33])))
}

pub(crate) fn allocator(kind: u8, shard: u16) -> [u8; 4] {
    let [hi, lo] = shard.to_be_bytes();
    [ALLOCATOR, kind, hi, lo]
}

/// The smallest key strictly above every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

pub(crate) fn be_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(raw)
}

fn tagged_u64(tag: u8, value: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = tag;
    key[1..9].copy_from_slice(&value.to_be_bytes());
    key
}

fn two_u64(tag: u8, a: u64, b: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = tag;
    key[1..9].copy_from_slice(&a.to_be_bytes());
    key[9..17].copy_from_slice(&b.to_be_bytes());
    key
}

/// FNV-1a, 64 bits: a hash that never changes between builds, for values that are persisted
/// (sender hashes in dedupe keys) or must agree across restarts (shard of a name).
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Spreads sequential ids evenly over shards (splitmix64's finaliser).
pub(crate) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_of_one_queue_sort_by_sequence_and_stay_inside_the_queue() {
        let q = QueueId(7);
        assert!(entry(q, 1) < entry(q, 2));
        assert!(entry(q, 255) < entry(q, 256));
        assert!(entry(q, u64::MAX) < entry(QueueId(8), 0));
        assert!(entry(QueueId(6), u64::MAX) < entry(q, 0));
        assert_eq!(entry_seq(&entry(q, 300)), Some(300));
    }

    #[test]
    fn prefix_end_is_above_every_key_with_the_prefix() {
        let prefix = readers_of(QueueId(5));
        let end = prefix_end(&prefix);
        assert!(reader(QueueId(5), DeviceId(u64::MAX)).as_slice() < end.as_slice());
        assert!(reader(QueueId(6), DeviceId(0)).as_slice() >= end.as_slice());
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
    }

    #[test]
    fn stable_hash_matches_known_fnv1a_values() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
