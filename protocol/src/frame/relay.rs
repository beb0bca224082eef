//! Hub link frames: hub-to-hub hello, relay of envelope batches, and their acknowledgement.
//!
//! A hub link runs over QUIC with mutual TLS, so these frames carry no proof of identity; the
//! TLS certificates do.

use bytes::{BufMut, Bytes};

use crate::frame::Receipt;
use crate::{
    address::Address,
    codec::{Wire, get_list, get_str, put_list, put_str},
    envelope::{Envelope, MessageId},
    error::{DecodeError, RejectReason},
};

/// Longest hub name, in bytes.
pub const MAX_HUB_NAME_LEN: usize = 253;

/// Either hub, first frame of a link: who it is and which domains it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubHello {
    /// The hub's name (a DNS name, matching its certificate).
    pub hub: String,
    /// The organisation main lines (`@domain`) of the domains this hub serves.
    pub domains: Vec<Address>,
    /// The largest number of envelopes this hub takes in one [`Relay`].
    pub max_batch: u32,
}

/// Sending hub to receiving hub: a batch of envelopes to commit into recipients' queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// Sender-chosen batch number, echoed in the [`RelayAck`].
    pub batch: u64,
    /// The envelopes, in the order they were accepted.
    pub envelopes: Vec<Envelope>,
}

/// Sending hub to receiving hub: a batch of receipts for messages of the receiving hub's users
/// (made by users of the sending hub), acknowledged by a [`RelayAck`] like a [`Relay`]; the two
/// share one sequence of batch numbers on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayReceipts {
    /// Sender-chosen batch number, echoed in the [`RelayAck`].
    pub batch: u64,
    /// The receipts, in the order they were made.
    pub receipts: Vec<Receipt>,
}

/// Home hub to registration hub: how far devices of the home hub's users have taken the
/// messages the registration hub relayed to it (see [`Taken`]), acknowledged by a
/// [`RelayAck`] like a [`Relay`] and in the same sequence of batch numbers. The registration
/// hub keeps what a device has not taken yet in the user's mailbox, for the device to read
/// there while its home hub is out of reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTaken {
    /// Sender-chosen batch number, echoed in the [`RelayAck`].
    pub batch: u64,
    /// One entry per device, the newest progress of each.
    pub taken: Vec<Taken>,
}

/// One device's progress in a [`RelayTaken`]: it has taken every message its home hub got
/// from the registration hub up to and including the message (`from`, `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The device, `local@domain/device`.
    pub device: Address,
    /// The sender of the last message taken.
    pub from: Address,
    /// Its id.
    pub id: MessageId,
}

/// One envelope of a relayed batch that the receiving hub refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRejection {
    /// Its position in [`Relay::envelopes`].
    pub index: u16,
    /// Why it was refused.
    pub reason: RejectReason,
}

/// Receiving hub to sending hub: every envelope of the batch is durable, except those listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayAck {
    /// The batch number of the [`Relay`].
    pub batch: u64,
    /// Envelopes refused, in increasing `index` order; the sender must not retry them.
    pub rejected: Vec<RelayRejection>,
}

impl Wire for HubHello {
    fn encode<B: BufMut>(&self, out: &mut B) {
        put_str(out, &self.hub);
        put_list(out, &self.domains);
        self.max_batch.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let hub = get_str(buf, "hub", MAX_HUB_NAME_LEN)?;
        let domains: Vec<Address> = get_list(buf, 2)?;
        if domains.iter().any(|d| d.kind() != crate::AddressKind::OrgLine) {
            return Err(DecodeError::WrongAddressKind {
                field: "domains",
                expected: crate::AddressKind::OrgLine,
            });
        }
        Ok(Self { hub, domains, max_batch: Wire::decode(buf)? })
    }
}

impl Wire for Relay {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.batch.encode(out);
        put_list(out, &self.envelopes);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self { batch: Wire::decode(buf)?, envelopes: get_list(buf, Envelope::FIXED_LEN)? })
    }
}

impl Wire for RelayReceipts {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.batch.encode(out);
        put_list(out, &self.receipts);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        // A receipt is at least 16 + 1 + 2 + 2 + 8 bytes (two empty-length addresses).
        Ok(Self { batch: Wire::decode(buf)?, receipts: get_list(buf, 29)? })
    }
}

impl Wire for RelayTaken {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.batch.encode(out);
        put_list(out, &self.taken);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        // An entry is at least 2 + 2 + 16 bytes (two empty-length addresses and the id).
        Ok(Self { batch: Wire::decode(buf)?, taken: get_list(buf, 20)? })
    }
}

impl Wire for Taken {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.device.encode(out);
        self.from.encode(out);
        self.id.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let device = Address::decode(buf)?;
        if device.kind() != crate::AddressKind::Device {
            return Err(DecodeError::WrongAddressKind {
                field: "device",
                expected: crate::AddressKind::Device,
            });
        }
        Ok(Self { device, from: Wire::decode(buf)?, id: Wire::decode(buf)? })
    }
}

impl Wire for RelayRejection {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.index.encode(out);
        self.reason.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self { index: Wire::decode(buf)?, reason: Wire::decode(buf)? })
    }
}

impl Wire for RelayAck {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.batch.encode(out);
        put_list(out, &self.rejected);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let batch = u64::decode(buf)?;
        let rejected: Vec<RelayRejection> = get_list(buf, 4)?;
        if let Some(pair) = rejected.windows(2).find(|pair| pair[0].index >= pair[1].index) {
            return Err(DecodeError::InvalidValue {
                field: "rejected",
                value: pair[1].index.into(),
            });
        }
        Ok(Self { batch, rejected })
    }
}
