//! What a queue entry holds: the encoded `send` or `receipt` frame the hub accepted, so that a
//! delivery re-reads exactly what was accepted. The send path encodes, the delivery path decodes.

use bytes::Bytes;
use switchboard_protocol::{Envelope, Frame, FrameType, HEADER_LEN, Receipt};

use crate::store::StoreError;

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

#[cfg(test)]
mod tests {
    use switchboard_protocol::{Address, Flags, MessageId, ReceiptKind};

    use super::*;

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
