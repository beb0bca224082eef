//! The delivery path: reading a device's queues, turning entries into `deliver` frames, the
//! receipt policy, and acknowledgements.
//!
//! A session asks for the entries of a queue after its last handed-out sequence
//! ([`Hub::read_now`] from memory on its own task, [`Hub::read`] from disk on a blocking
//! thread); [`prepare`] decodes each and decides whether its acknowledgement makes a
//! `delivered` receipt (the sender asked for receipts, and the reader is someone else). Acks go
//! to the store ([`Hub::ack`]); receipts a device sends are checked against the receipt rule
//! ([`Hub::check_receipt`]) and stored for the message's sender ([`Hub::store_receipt`]).

use bytes::Bytes;
use switchboard_protocol::{
    Address, Deliver, DeliverReceipt, ErrorCode, Flags, Frame, MessageId, Receipt, ReceiptKind,
};

use crate::{
    fanout::{
        Account, Hub, SendError,
        entry::{Stored, decode_entry, encode_receipt},
    },
    store::{DeviceId, EnqueueRequest, Entry, QueueId, StoreError, system_clock_ms},
};

/// One entry ready to hand to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its sequence in the queue.
    pub seq: u64,
    /// The `deliver` or `deliver-receipt` frame.
    pub frame: Frame,
    /// The `delivered` receipt to store when the device acknowledges it.
    pub receipt: Option<Receipt>,
}

/// Which entries a session wants: up to `max` of `queue` after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// Names the read, so that its answer finds the session's state it was made for.
    pub id: u64,
    /// The queue.
    pub queue: QueueId,
    /// The queue's address, as deliveries name it.
    pub name: Address,
    /// The last sequence handed out.
    pub after: u64,
    /// At most this many entries.
    pub max: usize,
}

/// Decodes a queue entry for a device of `reader` reading the queue named `queue`, with the
/// receipt policy: a message whose sender asked for receipts, read by someone else, makes a
/// `delivered` receipt by the queue's address when the device acknowledges it.
pub fn prepare(entry: &Entry, queue: &Address, reader: &Address) -> Result<Delivery, StoreError> {
    let (frame, receipt) = match decode_entry(&entry.payload)? {
        Stored::Message(envelope) => {
            let receipt = (envelope.flags.contains(Flags::WANT_RECEIPTS)
                && envelope.from != *reader)
                .then(|| Receipt {
                    id: envelope.id,
                    kind: ReceiptKind::Delivered,
                    message_from: envelope.from.clone(),
                    by: queue.clone(),
                    at_ms: 0,
                });
            (Deliver { queue: queue.clone(), seq: entry.seq, envelope }.into(), receipt)
        }
        Stored::Receipt(receipt) => {
            (DeliverReceipt { queue: queue.clone(), seq: entry.seq, receipt }.into(), None)
        }
    };
    Ok(Delivery { seq: entry.seq, frame, receipt })
}

/// An acknowledgement the store refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ack refused: {0}")]
pub struct AckError(pub StoreError);

impl AckError {
    /// The error code on the wire: the device's fault, or the hub's.
    pub fn code(&self) -> ErrorCode {
        match self.0 {
            StoreError::AckBeyondTail { .. } | StoreError::TooManySelectiveAcks { .. } => {
                ErrorCode::ACK_REFUSED
            }
            _ => ErrorCode::INTERNAL,
        }
    }

    /// What the device is told, naming the queue by its address (`queue`) rather than the
    /// store's id.
    pub fn text(&self, queue: &Address) -> String {
        match &self.0 {
            StoreError::AckBeyondTail { seq, last, .. } => {
                format!("ack of {queue}: sequence {seq} is past the queue's last, {last}")
            }
            StoreError::TooManySelectiveAcks { limit } => {
                format!("ack of {queue}: more than {limit} selective acks above the cursor")
            }
            _ => format!("ack of {queue}: the store failed; send it again"),
        }
    }
}

/// Why a receipt was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// A device made a receipt in the name of someone it does not read for; the device is
    /// told with an `error` frame.
    #[error("a receipt by {by} from a device of {account}")]
    NotTheReader {
        /// Whom the receipt claims to be by.
        by: Address,
        /// The device's user.
        account: Address,
    },
    /// A device made a receipt for a message that never reached a device of its user (or
    /// reached it too long ago for the hub to know, beyond the dedupe window); the device is
    /// told with an `error` frame.
    #[error("receipt for {id} from {message_from}: no such message reached a device of {account}")]
    NotReceived {
        /// The message the receipt names.
        id: MessageId,
        /// Whom the receipt names as the message's sender.
        message_from: Address,
        /// The device's user.
        account: Address,
    },
    /// A device made a `delivered` receipt: those are the hub's to make.
    #[error("a device may send read and answered receipts; the hub makes delivered ones")]
    DeliveredByDevice,
    /// The store failed while checking the receipt; only logged.
    #[error("checking a receipt: {0}")]
    Store(#[from] StoreError),
    /// The receipt could not be stored (its sender is not served here, the store refused);
    /// receipts are best effort, so this is only logged.
    #[error(transparent)]
    NotStored(#[from] SendError),
}

impl ReceiptError {
    /// Whether the device is told (the receipt broke a rule) rather than the hub only logging.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::NotTheReader { .. } | Self::NotReceived { .. } | Self::DeliveredByDevice
        )
    }
}

impl Hub {
    /// Up to `request.max` entries from memory (the store's queue tails, RocksDB's memtables
    /// and block cache), prepared for a device of `reader`; `None` if the read needs the disk.
    pub fn read_now(
        &self,
        reader: &Address,
        request: &ReadRequest,
    ) -> Option<Result<Vec<Delivery>, StoreError>> {
        match self.store.read_after_cached(request.queue, request.after, request.max) {
            Ok(Some(entries)) => Some(prepare_all(&entries, &request.name, reader)),
            Ok(None) => None,
            Err(error) => Some(Err(error)),
        }
    }

    /// Like [`Hub::read_now`], from disk on a blocking thread.
    pub async fn read(
        &self,
        reader: &Address,
        request: &ReadRequest,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (queue, after, max) = (request.queue, request.after, request.max);
        let entries = self.store.blocking(move |store| store.read_after(queue, after, max)).await?;
        prepare_all(&entries, &request.name, reader)
    }

    /// Acknowledges entries of `queue` for `device`. Submitted before this returns, so an ack
    /// the hub has read is committed even if the session ends at once.
    pub fn ack(
        &self,
        queue: QueueId,
        device: DeviceId,
        up_to: u64,
        selective: Vec<u64>,
    ) -> impl Future<Output = Result<(), AckError>> + Send + 'static {
        let pending = self.store.ack(queue, device, up_to, selective);
        // A user whose registration hub relays to this hub: it learns what the device took.
        let peers =
            self.peers.taken().logs(queue).then(|| (self.peers.clone(), self.store.clone()));
        async move {
            pending.await.map_err(AckError)?;
            if let Some((peers, store)) = peers {
                peers.device_took(&store, queue, device, up_to);
            }
            Ok(())
        }
    }

    /// The receipt rule: a device may make receipts by its own user (or one of that user's
    /// devices), or by a line its user reads, which the line's other members then see too.
    /// Answers the line, if any, whose queue also gets the receipt.
    pub fn check_receipt(
        &self,
        account: &Address,
        receipt: &Receipt,
    ) -> Result<Option<Address>, ReceiptError> {
        let own = receipt.by == *account || receipt.by.account().as_ref() == Some(account);
        if own {
            return Ok(None);
        }
        if self.org.snapshot().reads_line(account.as_str(), receipt.by.as_str()) {
            return Ok(Some(receipt.by.clone()));
        }
        Err(ReceiptError::NotTheReader { by: receipt.by.clone(), account: account.clone() })
    }

    /// The second receipt rule: a device makes receipts only for messages that reached a
    /// device of its user. The message is looked up by its dedupe record (`message_from`,
    /// `id`) in the queues the device reads (with `line`, in that line's queue only), and it
    /// reached a device if that device's reading started before it and the device took it:
    /// acknowledged it, or, for this device, had it handed out in this session (`handed`).
    pub async fn check_received(
        &self,
        account: &Account,
        device: DeviceId,
        receipt: &Receipt,
        line: Option<&Address>,
        handed: Vec<(QueueId, u64)>,
    ) -> Result<(), ReceiptError> {
        if receipt.kind == ReceiptKind::Delivered {
            return Err(ReceiptError::DeliveredByDevice);
        }
        let only = match line {
            Some(line) => Some(self.directory.resolve(line).map_err(ReceiptError::NotStored)?),
            None => None,
        };
        let candidates: Vec<(QueueId, u64)> =
            handed.into_iter().filter(|(queue, _)| only.is_none_or(|q| q == *queue)).collect();
        let (from, id, user, own) =
            (receipt.message_from.clone(), receipt.id, account.address.clone(), account.queue);
        let reached = self
            .store
            .blocking(move |store| {
                let mut devices: Option<Vec<DeviceId>> = None;
                for (queue, handed) in candidates {
                    let Some(seq) = store.dedupe_seq(queue, from.as_str().as_bytes(), id.0)? else {
                        continue;
                    };
                    if store.reached_device(queue, device, seq, handed)? {
                        return Ok(true);
                    }
                    // Another device of the user may have taken it.
                    if devices.is_none() {
                        let records = store.device_records(Some(user.as_str()))?;
                        devices = Some(
                            records
                                .into_iter()
                                .filter(|r| r.account == own && r.device != device && !r.revoked)
                                .map(|r| r.device)
                                .collect(),
                        );
                    }
                    for &other in devices.iter().flatten() {
                        if store.reached_device(queue, other, seq, 0)? {
                            return Ok(true);
                        }
                    }
                }
                Ok::<_, StoreError>(false)
            })
            .await?;
        match reached {
            true => Ok(()),
            false => Err(ReceiptError::NotReceived {
                id: receipt.id,
                message_from: receipt.message_from.clone(),
                account: account.address.clone(),
            }),
        }
    }

    /// Stores a receipt for the message `receipt.id` in its sender's queue, when that sender is
    /// a user of this hub. Who made it is part of its dedupe key, so that the same receipt
    /// made twice (two devices of one recipient) is stored once. With `line`, the receipt
    /// also goes to the line's queue, so the other members see that someone read or answered.
    pub async fn store_receipt(
        &self,
        receipt: Receipt,
        line: Option<Address>,
    ) -> Result<(), ReceiptError> {
        // A receipt for a user of another hub travels back through that hub's outbound queue.
        let home = self.peers().home_for(receipt.message_from.as_str());
        let queue = match home.map_or_else(|| self.directory.resolve(&receipt.message_from), Ok) {
            Ok(queue) => queue,
            Err(refusal) => self.peers().outbound_for(&receipt.message_from).ok_or(refusal)?,
        };
        let request = receipt_request(&receipt, self.config().delivery.default_ttl_secs);
        let line = match &line {
            Some(line) => Some(self.directory.resolve(line)?),
            None => None,
        };
        let copy =
            line.filter(|&l| l != queue).map(|l| (l, self.store.enqueue(l, request.clone())));
        self.store.enqueue(queue, request).await.map_err(SendError::from)?;
        self.notifier.wake(queue);
        if let Some((line, pending)) = copy {
            pending.await.map_err(SendError::from)?;
            self.notifier.wake(line);
        }
        Ok(())
    }
}

/// The queue entry of a receipt. Who made it is part of its dedupe key, so that the same
/// receipt made twice (two devices of one recipient) is stored once.
pub fn receipt_request(receipt: &Receipt, ttl_secs: u32) -> EnqueueRequest {
    let kind = match receipt.kind {
        ReceiptKind::Delivered => "delivered",
        ReceiptKind::Read => "read",
        ReceiptKind::Answered => "answered",
    };
    EnqueueRequest {
        id: receipt.id.0,
        sender: Bytes::from(format!("receipt:{kind}:{}", receipt.by)),
        expires_ms: system_clock_ms().saturating_add(u64::from(ttl_secs) * 1000),
        payload: encode_receipt(receipt),
    }
}

fn prepare_all(
    entries: &[Entry],
    queue: &Address,
    reader: &Address,
) -> Result<Vec<Delivery>, StoreError> {
    entries.iter().map(|entry| prepare(entry, queue, reader)).collect()
}
