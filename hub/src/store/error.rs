//! Errors of the store.

use crate::store::{DeviceId, QueueId};

/// Why a store operation failed. Every failure leaves what was already durable untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The queue holds as many unconsumed messages as its limit allows; the sender is told
    /// `recipient-backlog-full`.
    #[error("queue {queue} holds {backlog} messages, its limit")]
    BacklogFull {
        /// The queue.
        queue: QueueId,
        /// The limit that was reached.
        backlog: u64,
    },
    /// The store's disk budget is used up: new messages are refused until space returns.
    /// Acknowledgements, which free space, still work.
    #[error("disk budget of {budget} bytes used up ({used} bytes in use)")]
    DiskFull {
        /// Bytes in use.
        used: u64,
        /// The budget.
        budget: u64,
    },
    /// The disk is nearly full (see `[store] min_free_bytes`): new messages are refused until
    /// space returns; acknowledgements still work.
    #[error(
        "the disk is nearly full ({free} bytes free): new messages are refused until space returns"
    )]
    NoSpace {
        /// Free bytes as last measured.
        free: u64,
    },
    /// No queue with this id.
    #[error("unknown queue {0}")]
    UnknownQueue(QueueId),
    /// No device with this id.
    #[error("unknown device {0}")]
    UnknownDevice(DeviceId),
    /// The device does not read this queue.
    #[error("device {device} does not read queue {queue}")]
    NotSubscribed {
        /// The queue.
        queue: QueueId,
        /// The device.
        device: DeviceId,
    },
    /// An ack names a sequence the queue never reached.
    #[error("ack of sequence {seq} on queue {queue}, whose last sequence is {last}")]
    AckBeyondTail {
        /// The queue.
        queue: QueueId,
        /// The sequence acknowledged.
        seq: u64,
        /// The queue's last sequence.
        last: u64,
    },
    /// A device holds more selective acks above its cursor than allowed.
    #[error("more than {limit} selective acks above the cursor")]
    TooManySelectiveAcks {
        /// The limit.
        limit: usize,
    },
    /// A queue name is empty or longer than 1,024 bytes.
    #[error("invalid queue name: {0}")]
    InvalidName(String),
    /// A user or device with this name already exists.
    #[error("{0} already exists")]
    Exists(String),
    /// No user with this name.
    #[error("unknown user {0}")]
    UnknownUser(String),
    /// No device with this name.
    #[error("unknown device {0}")]
    UnknownDeviceName(String),
    /// The enrolment code is unknown, spent, expired or issued for another user.
    #[error("enrolment refused: {0}")]
    EnrolmentRefused(&'static str),
    /// RocksDB failed (I/O error, out of space, corruption); the operation did not happen.
    #[error("storage failure: {0}")]
    Storage(String),
    /// A stored record could not be read back; the store refuses to guess.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The store is shut down.
    #[error("the store is closed")]
    Closed,
    /// A task that ran store work off the async threads panicked or was cancelled; the work's
    /// own result is unknown to the caller.
    #[error("store task failed: {0}")]
    TaskFailed(String),
    /// A record could not be encoded for storage.
    #[error("cannot encode {what}: {why}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        why: String,
    },
}

impl From<rocksdb::Error> for StoreError {
    fn from(error: rocksdb::Error) -> Self {
        let text = error.into_string();
        match super::space::is_no_space(&text) {
            true => Self::NoSpace { free: 0 },
            false => Self::Storage(text),
        }
    }
}
