//! From an accepted `send` to the queues that hold it, and the wake-ups that bring it to the
//! devices reading them.
//!
//! [`Hub`] is the state every session shares: the store, the wake-up table and the settings.
//! A message is committed to its recipient's queue, then (when the sender is another user) to
//! the sender's own queue, so that the sender's other devices show the whole conversation.
//! A queue entry holds the encoded `send` or `receipt` frame; [`Stored`] reads it back.

mod notify;

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use switchboard_protocol::{
    Address, AddressKind, Envelope, Flags, Frame, FrameType, HEADER_LEN, Receipt, ReceiptKind,
    RejectReason,
};
use tokio::sync::Notify;

pub use notify::{Notifier, Watch};

use crate::{
    config::Config,
    store::{
        DeviceId, EnqueueRequest, Enqueued, Pending, QueueId, Store, StoreError, UserRecord,
        system_clock_ms,
    },
};

/// What a queue entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A message.
    Message(Envelope),
    /// A receipt for a message.
    Receipt(Receipt),
}

/// Encodes a message as a queue entry.
pub fn encode_message(envelope: &Envelope) -> Bytes {
    encode_frame(&Frame::Send(switchboard_protocol::Send { envelope: envelope.clone() }))
}

/// Encodes a receipt as a queue entry.
pub fn encode_receipt(receipt: &Receipt) -> Bytes {
    encode_frame(&Frame::Receipt(receipt.clone()))
}

fn encode_frame(frame: &Frame) -> Bytes {
    // Fields were checked when the frame was decoded; a stored entry has no size limit of its
    // own beyond the body limit enforced before it gets here.
    frame.to_bytes(u32::MAX).expect("a decoded frame re-encodes")
}

/// Reads a queue entry back.
pub fn decode_entry(payload: &Bytes) -> Result<Stored, StoreError> {
    let corrupt = || StoreError::Corrupt("queue entry is not a stored frame".into());
    if payload.len() < HEADER_LEN {
        return Err(corrupt());
    }
    let ty = FrameType::from_u8(payload[1]).ok_or_else(corrupt)?;
    match Frame::decode_payload(ty, payload.slice(HEADER_LEN..)).map_err(|_| corrupt())? {
        Frame::Send(send) => Ok(Stored::Message(send.envelope)),
        Frame::Receipt(receipt) => Ok(Stored::Receipt(receipt)),
        _ => Err(corrupt()),
    }
}

/// A refusal of a send: the reason on the wire and a detail for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Reject reason.
    pub reason: RejectReason,
    /// Detail.
    pub detail: String,
}

impl Refusal {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        let reason = match &error {
            StoreError::BacklogFull { .. } => RejectReason::RECIPIENT_BACKLOG_FULL,
            StoreError::DiskFull { .. } => RejectReason::DISK_FULL,
            StoreError::UnknownQueue(_) => RejectReason::UNKNOWN_RECIPIENT,
            _ => RejectReason::INTERNAL,
        };
        Self { reason, detail: error.to_string() }
    }
}

/// The sending side of a session, as the fan-out needs it.
#[derive(Debug, Clone)]
pub struct Sender {
    /// The device's account.
    pub account: Address,
    /// The account's queue.
    pub queue: QueueId,
}

/// State shared by every session of the hub.
pub struct Hub {
    /// The store.
    pub store: Arc<Store>,
    /// Wake-ups for sessions waiting on queues.
    pub notifier: Notifier,
    /// Settings.
    pub config: Config,
    kicks: std::sync::Mutex<HashMap<DeviceId, Vec<std::sync::Weak<Notify>>>>,
    /// Every user's queue by address, so that resolving a recipient never reads RocksDB on
    /// a network thread. Loaded at start; users are added through [`Hub::add_user`].
    directory: std::sync::RwLock<HashMap<Box<str>, QueueId>>,
}

/// A send whose commit to the recipient's queue is under way.
pub struct Submission {
    /// The recipient's queue.
    pub recipient: QueueId,
    /// The commit to the recipient's queue.
    pub commit: Pending<Enqueued>,
    /// The copy for the sender's own queue, to commit once the first is durable.
    pub copy: Option<(QueueId, EnqueueRequest)>,
}

impl Hub {
    /// A hub over `store`.
    pub fn new(store: Arc<Store>, config: Config) -> Self {
        Self {
            store,
            notifier: Notifier::default(),
            config,
            kicks: Default::default(),
            directory: Default::default(),
        }
    }

    /// Loads every user into the directory. Blocks on RocksDB.
    pub fn load_directory(&self) -> Result<usize, StoreError> {
        let users = self.store.users()?;
        let mut directory = self.directory.write().unwrap_or_else(|e| e.into_inner());
        for user in &users {
            directory.insert(user.name.as_str().into(), user.queue);
        }
        Ok(users.len())
    }

    /// Adds a user durably, then to the directory.
    pub async fn add_user(&self, name: &str) -> Result<UserRecord, StoreError> {
        let user = self.store.create_user(name).await?;
        self.directory
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.name.as_str().into(), user.queue);
        Ok(user)
    }

    /// Registers a live session of `device` so that [`Hub::kick`] can end it.
    pub fn register_session(&self, device: DeviceId) -> Arc<Notify> {
        let kick = Arc::new(Notify::new());
        let mut kicks = self.kicks.lock().unwrap_or_else(|e| e.into_inner());
        let list = kicks.entry(device).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&kick));
        kick
    }

    /// Ends every live session of `device` (after a revocation).
    pub fn kick(&self, device: DeviceId) {
        let list = self.kicks.lock().unwrap_or_else(|e| e.into_inner()).remove(&device);
        for kick in list.into_iter().flatten().filter_map(|w| w.upgrade()) {
            kick.notify_one();
        }
    }

    /// The queue of a local recipient address.
    pub fn resolve(&self, to: &Address) -> Result<QueueId, Refusal> {
        match to.kind() {
            AddressKind::Account => {}
            AddressKind::Device => {
                return Err(Refusal::new(
                    RejectReason::INVALID_ENVELOPE,
                    "send to the account, not to one of its devices",
                ));
            }
            _ => {
                return Err(Refusal::new(
                    RejectReason::UNKNOWN_RECIPIENT,
                    format!("{to}: lines, groups and organisations are not served by this hub yet"),
                ));
            }
        }
        let directory = self.directory.read().unwrap_or_else(|e| e.into_inner());
        match directory.get(to.as_str()) {
            Some(&queue) => Ok(queue),
            None => Err(Refusal::new(RejectReason::UNKNOWN_RECIPIENT, format!("no user {to}"))),
        }
    }

    /// Starts committing `envelope` from `sender` to its recipient's queue. The commit is
    /// submitted before this returns, so sends submitted in order are appended in order. Once
    /// it is durable, the caller commits [`Submission::copy`] (the sender's own queue, for the
    /// sender's other devices) with [`Hub::commit_copy`], and answers `accepted` after that.
    pub fn submit(&self, sender: &Sender, mut envelope: Envelope) -> Result<Submission, Refusal> {
        if envelope.from != sender.account {
            if envelope.flags.contains(Flags::AS_LINE) {
                return Err(Refusal::new(
                    RejectReason::NOT_ALLOWED,
                    "sending as a line needs the rights module, which this hub does not run yet",
                ));
            }
            return Err(Refusal::new(
                RejectReason::INVALID_ENVELOPE,
                format!("from is {}, but this device belongs to {}", envelope.from, sender.account),
            ));
        }
        if envelope.body.len() > self.config.limits.max_body_bytes {
            return Err(Refusal::new(
                RejectReason::TOO_LARGE,
                format!(
                    "body of {} bytes; this hub takes at most {}",
                    envelope.body.len(),
                    self.config.limits.max_body_bytes
                ),
            ));
        }
        let recipient = self.resolve(&envelope.to)?;
        let delivery = &self.config.delivery;
        let ttl = match envelope.ttl_secs {
            0 => delivery.default_ttl_secs,
            ttl => ttl.min(delivery.max_ttl_secs),
        };
        envelope.ttl_secs = ttl;
        let request = EnqueueRequest {
            id: envelope.id.0,
            sender: Bytes::copy_from_slice(envelope.from.as_str().as_bytes()),
            expires_ms: system_clock_ms().saturating_add(u64::from(ttl) * 1000),
            payload: encode_message(&envelope),
        };
        let copy = (recipient != sender.queue).then(|| (sender.queue, request.clone()));
        Ok(Submission { recipient, commit: self.store.enqueue(recipient, request), copy })
    }

    /// Commits the sender's copy of a message whose first commit is durable. A retry of a
    /// message whose copy failed before writes the copy then; dedupe drops a second one.
    pub fn commit_copy(&self, copy: (QueueId, EnqueueRequest)) -> Pending<Enqueued> {
        self.store.enqueue(copy.0, copy.1)
    }

    /// Records a receipt for the message `receipt.id` from `receipt.message_from`, into that
    /// sender's queue when it is a user of this hub. `dedupe` names who made it, so that the
    /// same receipt made twice (two devices of one recipient) is stored once.
    pub async fn store_receipt(&self, receipt: Receipt) -> Result<(), Refusal> {
        let queue = self.resolve(&receipt.message_from)?;
        let kind = match receipt.kind {
            ReceiptKind::Delivered => "delivered",
            ReceiptKind::Read => "read",
            ReceiptKind::Answered => "answered",
        };
        let request = EnqueueRequest {
            id: receipt.id.0,
            sender: Bytes::from(format!("receipt:{kind}:{}", receipt.by)),
            expires_ms: system_clock_ms()
                .saturating_add(u64::from(self.config.delivery.default_ttl_secs) * 1000),
            payload: encode_receipt(&receipt),
        };
        self.store.enqueue(queue, request).await?;
        self.notifier.wake(queue);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::MessageId;

    #[test]
    fn entries_round_trip_and_other_bytes_are_corrupt() {
        let envelope = Envelope {
            id: MessageId(7),
            from: Address::parse("alice@example.org").unwrap(),
            to: Address::parse("bob@example.org").unwrap(),
            created_ms: 1,
            ttl_secs: 2,
            flags: Flags::WANT_RECEIPTS,
            body: Bytes::from_static(b"hi"),
        };
        let stored = decode_entry(&encode_message(&envelope)).unwrap();
        assert_eq!(stored, Stored::Message(envelope));
        let receipt = Receipt {
            id: MessageId(7),
            kind: ReceiptKind::Read,
            message_from: Address::parse("alice@example.org").unwrap(),
            by: Address::parse("bob@example.org").unwrap(),
            at_ms: 3,
        };
        assert_eq!(decode_entry(&encode_receipt(&receipt)).unwrap(), Stored::Receipt(receipt));
        assert!(decode_entry(&Bytes::from_static(b"\x01\x10\0\0\0\x01x")).is_err());
        assert!(decode_entry(&Bytes::from_static(b"ab")).is_err());
    }
}
