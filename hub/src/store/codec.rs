//! The one codec of the store: every RocksDB key (a tag byte and big-endian fixed-width
//! integers, so that a queue is one ordered range) and every value encoding (queue records,
//! cursors, entries, users and devices). The dedupe index's blocks are `dedupe.rs`'s own.

use bytes::Bytes;

use crate::store::{
    Cursor, DeviceId, DeviceKind, DeviceRecord, Entry, QueueId, QueueStats, StoreError, UserRecord,
    UserStatus, decode_u64,
};

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

/// A queue's record: its last sequence, the sequence below which its entries are gone, and
/// its name.
pub(crate) struct Meta {
    pub(crate) last_seq: u64,
    pub(crate) floor: u64,
    pub(crate) name: Box<str>,
}

impl Meta {
    pub(crate) fn stats(&self) -> QueueStats {
        QueueStats { last_seq: self.last_seq, floor: self.floor }
    }
}

pub(crate) fn encode_meta(last_seq: u64, floor: u64, name: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(16 + name.len());
    value.extend_from_slice(&last_seq.to_be_bytes());
    value.extend_from_slice(&floor.to_be_bytes());
    value.extend_from_slice(name.as_bytes());
    value
}

pub(crate) fn decode_meta(value: &[u8]) -> Result<Meta, StoreError> {
    if value.len() < 16 {
        return Err(StoreError::Corrupt(format!("queue record of {} bytes", value.len())));
    }
    let name = std::str::from_utf8(&value[16..])
        .map_err(|_| StoreError::Corrupt("queue name is not UTF-8".into()))?;
    Ok(Meta { last_seq: be_u64(value), floor: be_u64(&value[8..]), name: name.into() })
}

pub(crate) fn encode_cursor(cursor: &Cursor) -> Vec<u8> {
    let mut value = Vec::with_capacity(10 + 8 * cursor.selective.len());
    value.extend_from_slice(&cursor.acked.to_be_bytes());
    value.extend_from_slice(&(cursor.selective.len() as u16).to_be_bytes());
    for seq in &cursor.selective {
        value.extend_from_slice(&seq.to_be_bytes());
    }
    value
}

pub(crate) fn decode_cursor(value: &[u8]) -> Result<Cursor, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("reader record of {} bytes", value.len()));
    if value.len() < 10 {
        return Err(corrupt());
    }
    let count = usize::from(u16::from_be_bytes([value[8], value[9]]));
    if value.len() != 10 + 8 * count {
        return Err(corrupt());
    }
    let selective = value[10..].chunks_exact(8).map(be_u64).collect();
    Ok(Cursor { acked: be_u64(value), selective })
}

pub(crate) fn decode_entry(seq: u64, value: &[u8]) -> Result<Entry, StoreError> {
    let expires_ms = decode_u64(value, "entry")?;
    Ok(Entry { seq, expires_ms, payload: Bytes::copy_from_slice(&value[8..]) })
}

pub(crate) fn user_key(name: &str) -> Vec<u8> {
    tagged_text(USER, name)
}

pub(crate) fn device_key(name: &str) -> Vec<u8> {
    tagged_text(DEVICE_RECORD, name)
}

pub(crate) fn code_key(account: QueueId, code_hash: &[u8; 32]) -> Vec<u8> {
    let mut key = Vec::with_capacity(41);
    key.push(ENROLMENT_CODE);
    key.extend_from_slice(&account.0.to_be_bytes());
    key.extend_from_slice(code_hash);
    key
}

fn tagged_text(tag: u8, text: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + text.len());
    key.push(tag);
    key.extend_from_slice(text.as_bytes());
    key
}

/// The name in a user or device record key.
pub(crate) fn key_name(key: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(key[1..].to_vec()).map_err(|_| StoreError::Corrupt("record name".into()))
}

pub(crate) fn encode_user(user: &UserRecord) -> Vec<u8> {
    let mut value = Vec::with_capacity(17);
    value.extend_from_slice(&user.queue.0.to_be_bytes());
    value.push(match user.status {
        UserStatus::Active => 1,
        UserStatus::Deactivated => 2,
    });
    value.extend_from_slice(&user.created_ms.to_be_bytes());
    value
}

pub(crate) fn decode_user(name: String, value: &[u8]) -> Result<UserRecord, StoreError> {
    if value.len() != 17 {
        return Err(StoreError::Corrupt(format!("user record of {} bytes", value.len())));
    }
    let status = match value[8] {
        1 => UserStatus::Active,
        2 => UserStatus::Deactivated,
        other => return Err(StoreError::Corrupt(format!("user status {other}"))),
    };
    Ok(UserRecord {
        name,
        queue: QueueId(be_u64(&value[0..8])),
        status,
        created_ms: be_u64(&value[9..17]),
    })
}

pub(crate) fn encode_device(device: &DeviceRecord) -> Vec<u8> {
    let mut value = Vec::with_capacity(57);
    value.extend_from_slice(&device.device.0.to_be_bytes());
    value.extend_from_slice(&device.account.0.to_be_bytes());
    value.extend_from_slice(&device.public_key);
    value.push(u8::from(device.revoked));
    value.extend_from_slice(&device.enrolled_ms.to_be_bytes());
    value.push(device.kind.to_byte());
    value
}

pub(crate) fn decode_device(name: String, value: &[u8]) -> Result<DeviceRecord, StoreError> {
    // 57 bytes before device kinds existed, 58 since (the kind last).
    let kind = match value.len() {
        57 => Some(DeviceKind::Unspecified),
        58 => DeviceKind::from_byte(value[57]),
        _ => None,
    };
    let Some(kind) = kind.filter(|_| value[48] <= 1) else {
        return Err(StoreError::Corrupt(format!("device record of {} bytes", value.len())));
    };
    let mut public_key = [0u8; 32];
    public_key.copy_from_slice(&value[16..48]);
    Ok(DeviceRecord {
        name,
        device: DeviceId(be_u64(&value[0..8])),
        account: QueueId(be_u64(&value[8..16])),
        public_key,
        revoked: value[48] == 1,
        enrolled_ms: be_u64(&value[49..57]),
        kind,
    })
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

    #[test]
    fn records_round_trip_and_wrong_sizes_are_corrupt() {
        let user = UserRecord {
            name: "alice@example.org".into(),
            queue: QueueId(9),
            status: UserStatus::Deactivated,
            created_ms: 77,
        };
        assert_eq!(decode_user(user.name.clone(), &encode_user(&user)).unwrap(), user);
        let device = DeviceRecord {
            name: "alice@example.org/phone".into(),
            device: DeviceId(3),
            account: QueueId(9),
            public_key: [7; 32],
            revoked: true,
            enrolled_ms: 5,
            kind: DeviceKind::Laptop,
        };
        assert_eq!(decode_device(device.name.clone(), &encode_device(&device)).unwrap(), device);
        // A record from before device kinds: 57 bytes, its kind unspecified.
        let old = &encode_device(&device)[..57];
        let read = decode_device(device.name.clone(), old).unwrap();
        assert_eq!(read, DeviceRecord { kind: DeviceKind::Unspecified, ..device.clone() });
        let mut unknown = encode_device(&device);
        unknown[57] = 9;
        assert!(matches!(decode_device(String::new(), &unknown), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode_user(String::new(), &[0; 16]), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode_device(String::new(), &[0; 56]), Err(StoreError::Corrupt(_))));
    }
}
