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

use crate::store::{DeviceId, QueueId};

/// Whether a user may connect.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// The user's devices may connect.
    Active,
    /// The user's devices are refused (`user-deactivated`).
    Deactivated,
}

/// A user of this hub.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UserRecord {
    /// The user's address, `local@domain`.
    pub name: String,
    /// The user's queue.
    #[schema(value_type = u64)]
    pub queue: QueueId,
    /// Whether the user may connect.
    pub status: UserStatus,
    /// When the user was added, Unix milliseconds.
    pub created_ms: u64,
}

/// What kind of machine a device is; a private user's first desktop is their preferred device
/// (see [`crate::personal`]).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// Not said (devices enrolled before kinds existed, or whose owner did not say).
    #[default]
    Unspecified,
    /// A desktop computer: always on, a steady connection; can be a home hub.
    Desktop,
    /// A laptop.
    Laptop,
    /// A phone or tablet.
    Mobile,
    /// A server.
    Server,
}

impl DeviceKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::Desktop => 1,
            Self::Laptop => 2,
            Self::Mobile => 3,
            Self::Server => 4,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Unspecified,
            1 => Self::Desktop,
            2 => Self::Laptop,
            3 => Self::Mobile,
            4 => Self::Server,
            _ => return None,
        })
    }
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeviceRecord {
    /// The device's address, `local@domain/device`.
    pub name: String,
    /// The store device (its cursors).
    #[schema(value_type = u64)]
    pub device: DeviceId,
    /// The queue of the device's user.
    #[schema(value_type = u64)]
    pub account: QueueId,
    /// The device's ed25519 public key: 32 numbers, one per byte.
    #[schema(value_type = Vec<u8>, min_items = 32, max_items = 32)]
    pub public_key: [u8; 32],
    /// A revoked device is refused and reads nothing.
    pub revoked: bool,
    /// When the device enrolled, Unix milliseconds.
    pub enrolled_ms: u64,
    /// What kind of machine it is.
    #[serde(default)]
    pub kind: DeviceKind,
}
