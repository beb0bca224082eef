//! Message frames: send, its answers, delivery, acknowledgement, receipts and flow control.

use bytes::{BufMut, Bytes};

use crate::{
    address::Address,
    codec::{Wire, get_list, get_str, put_list, put_str},
    envelope::{Envelope, MessageId, decode_address},
    error::{DecodeError, RejectReason},
    frame::session::MAX_TEXT_LEN,
};

/// Device to hub: send one message. Uses one unit of send credit until answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The message.
    pub envelope: Envelope,
}

/// Hub to device: the message with this id is durable; the hub now owns its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The id of the message accepted.
    pub id: MessageId,
}

/// Hub to device: the message with this id was not accepted and nothing of it was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The id of the message refused.
    pub id: MessageId,
    /// Why.
    pub reason: RejectReason,
    /// Detail for people, such as the name of the rule that refused it.
    pub detail: String,
}

/// Hub to device: one message from a queue the device reads. Uses one unit of delivery credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// The queue it comes from: the device's own account, or a line or group it reads.
    pub queue: Address,
    /// The message's position in that queue; strictly increasing within a queue.
    pub seq: u64,
    /// The message.
    pub envelope: Envelope,
}

/// Device to hub: the device holds every message of `queue` up to and including `up_to`, and
/// additionally the ones listed in `selective`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The queue acknowledged.
    pub queue: Address,
    /// Cumulative: every sequence up to this one is held (0 acknowledges nothing cumulatively).
    pub up_to: u64,
    /// Sequences above `up_to` also held, strictly increasing.
    pub selective: Vec<u64>,
}

/// What a receipt says happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptKind {
    /// The message reached a device of the recipient.
    Delivered = 1,
    /// A person read it.
    Read = 2,
    /// A person answered it (for a line: the colleagues see that someone did).
    Answered = 3,
}

/// Either direction: a receipt for a message, addressed to the message's sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The message's id.
    pub id: MessageId,
    /// What happened.
    pub kind: ReceiptKind,
    /// The message's `from`: whom the receipt is for.
    pub message_from: Address,
    /// Who delivered, read or answered it (a device, account or line).
    pub by: Address,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

/// Hub to device: a receipt from a queue the device reads. Receipts travel durably, in queue
/// order with the messages, so they carry a queue position and are acknowledged with `ack`
/// like a `deliver`; each uses one unit of delivery credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverReceipt {
    /// The queue it comes from.
    pub queue: Address,
    /// Its position in that queue.
    pub seq: u64,
    /// The receipt.
    pub receipt: Receipt,
}

/// Either direction: the sender of this frame lets the peer have `grant` more flow-controlled
/// frames in flight (`deliver` from a hub, `send` from a device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// Additional frames allowed.
    pub grant: u32,
}

impl Wire for Send {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.envelope.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self { envelope: Wire::decode(buf)? })
    }
}

impl Wire for Accepted {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.id.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self { id: Wire::decode(buf)? })
    }
}

impl Wire for RejectReason {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.0.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        u16::decode(buf).map(Self)
    }
}

impl Wire for Rejected {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.id.encode(out);
        self.reason.encode(out);
        put_str(out, &self.detail);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self {
            id: Wire::decode(buf)?,
            reason: Wire::decode(buf)?,
            detail: get_str(buf, "detail", MAX_TEXT_LEN)?,
        })
    }
}

impl Wire for Deliver {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.queue.encode(out);
        self.seq.encode(out);
        self.envelope.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self {
            queue: decode_address(buf, "queue")?,
            seq: Wire::decode(buf)?,
            envelope: Wire::decode(buf)?,
        })
    }
}

impl Wire for Ack {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.queue.encode(out);
        self.up_to.encode(out);
        put_list(out, &self.selective);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let queue = decode_address(buf, "queue")?;
        let up_to = u64::decode(buf)?;
        let selective: Vec<u64> = get_list(buf, 8)?;
        let mut floor = up_to;
        for &seq in &selective {
            if seq <= floor {
                return Err(DecodeError::InvalidValue { field: "selective", value: seq });
            }
            floor = seq;
        }
        Ok(Self { queue, up_to, selective })
    }
}

impl Wire for ReceiptKind {
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_u8(*self as u8);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        match u8::decode(buf)? {
            1 => Ok(Self::Delivered),
            2 => Ok(Self::Read),
            3 => Ok(Self::Answered),
            other => Err(DecodeError::InvalidValue { field: "receipt_kind", value: other.into() }),
        }
    }
}

impl Wire for Receipt {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.id.encode(out);
        self.kind.encode(out);
        self.message_from.encode(out);
        self.by.encode(out);
        self.at_ms.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self {
            id: Wire::decode(buf)?,
            kind: Wire::decode(buf)?,
            message_from: decode_address(buf, "message_from")?,
            by: decode_address(buf, "by")?,
            at_ms: Wire::decode(buf)?,
        })
    }
}

impl Wire for DeliverReceipt {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.queue.encode(out);
        self.seq.encode(out);
        self.receipt.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self {
            queue: decode_address(buf, "queue")?,
            seq: Wire::decode(buf)?,
            receipt: Wire::decode(buf)?,
        })
    }
}

impl Wire for Credit {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.grant.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self { grant: Wire::decode(buf)? })
    }
}
