//! Users, devices and enrolment codes: the records that say who may connect.
//!
//! A user is a queue (named by the user's address) plus a user record. A device is a store
//! device reading its user's queue plus a device record holding its public key. An enrolment
//! code is stored only as its SHA-256 hash, with its expiry; enrolling spends it.
//!
//! The records of one account are written by the shard writer that owns the account's queue
//! (the user record by the writer of the name's shard, which creates the queue), so that
//! spending a code and registering the device happen in one atomic batch and two devices can
//! never spend the same code.

use crate::store::{DeviceId, QueueId, StoreError, keys};

/// Whether a user may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// The user's devices may connect.
    Active,
    /// The user's devices are refused (`user-deactivated`).
    Deactivated,
}

/// A user of this hub.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserRecord {
    /// The user's address, `local@domain`.
    pub name: String,
    /// The user's queue.
    pub queue: QueueId,
    /// Whether the user may connect.
    pub status: UserStatus,
    /// When the user was added, Unix milliseconds.
    pub created_ms: u64,
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRecord {
    /// The device's address, `local@domain/device`.
    pub name: String,
    /// The store device (its cursors).
    pub device: DeviceId,
    /// The queue of the device's user.
    pub account: QueueId,
    /// The device's ed25519 public key.
    pub public_key: [u8; 32],
    /// A revoked device is refused and reads nothing.
    pub revoked: bool,
    /// When the device enrolled, Unix milliseconds.
    pub enrolled_ms: u64,
}

pub(crate) fn user_key(name: &str) -> Vec<u8> {
    tagged_text(keys::USER, name)
}

pub(crate) fn device_key(name: &str) -> Vec<u8> {
    tagged_text(keys::DEVICE_RECORD, name)
}

pub(crate) fn code_key(account: QueueId, code_hash: &[u8; 32]) -> Vec<u8> {
    let mut key = Vec::with_capacity(41);
    key.push(keys::ENROLMENT_CODE);
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
        queue: QueueId(keys::be_u64(&value[0..8])),
        status,
        created_ms: keys::be_u64(&value[9..17]),
    })
}

pub(crate) fn encode_device(device: &DeviceRecord) -> Vec<u8> {
    let mut value = Vec::with_capacity(57);
    value.extend_from_slice(&device.device.0.to_be_bytes());
    value.extend_from_slice(&device.account.0.to_be_bytes());
    value.extend_from_slice(&device.public_key);
    value.push(u8::from(device.revoked));
    value.extend_from_slice(&device.enrolled_ms.to_be_bytes());
    value
}

pub(crate) fn decode_device(name: String, value: &[u8]) -> Result<DeviceRecord, StoreError> {
    if value.len() != 57 || value[48] > 1 {
        return Err(StoreError::Corrupt(format!("device record of {} bytes", value.len())));
    }
    let mut public_key = [0u8; 32];
    public_key.copy_from_slice(&value[16..48]);
    Ok(DeviceRecord {
        name,
        device: DeviceId(keys::be_u64(&value[0..8])),
        account: QueueId(keys::be_u64(&value[8..16])),
        public_key,
        revoked: value[48] == 1,
        enrolled_ms: keys::be_u64(&value[49..57]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        assert_eq!(decode_device(device.name.clone(), &encode_device(&device)).unwrap(), device);
        assert!(matches!(decode_user(String::new(), &[0; 16]), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode_device(String::new(), &[0; 56]), Err(StoreError::Corrupt(_))));
    }
}
