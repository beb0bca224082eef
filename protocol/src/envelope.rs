//! The message envelope: the part of a message the hub reads. The body inside it is opaque.

use std::{fmt, str::FromStr};

use bytes::{BufMut, Bytes};

use crate::{
    address::Address,
    codec::{Wire, get_bytes, get_str_bytes, put_bytes, put_str},
    error::DecodeError,
};

/// A message id: 128 bits made by the sender, unique per sender, ordered by creation time.
///
/// The top 48 bits are the creation time in Unix milliseconds, the low 80 bits are random. Ids
/// made by one sender therefore sort by time, and two senders practically never collide; the
/// hub drops a second message with the same (sender, id).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u128);

impl MessageId {
    const RANDOM_BITS: u32 = 80;

    /// Makes an id from a creation time and random bits (of which the low 80 are used).
    pub fn from_parts(unix_ms: u64, random: u128) -> Self {
        let time = u128::from(unix_ms & ((1 << 48) - 1)) << Self::RANDOM_BITS;
        Self(time | (random & ((1 << Self::RANDOM_BITS) - 1)))
    }

    /// The creation time in Unix milliseconds.
    pub fn unix_ms(self) -> u64 {
        (self.0 >> Self::RANDOM_BITS) as u64
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl FromStr for MessageId {
    type Err = std::num::ParseIntError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(text, 16).map(Self)
    }
}

impl Wire for MessageId {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.0.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        u128::decode(buf).map(Self)
    }
}

/// Envelope flags. Bits not defined here are refused on decode.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u16);

impl Flags {
    /// No flag set.
    pub const NONE: Self = Self(0);
    /// The sender wants `delivered` and `read` receipts.
    pub const WANT_RECEIPTS: Self = Self(1 << 0);
    /// `from` is the line of the sender's unit rather than the sender's own account; the
    /// sender's hub checks the sender's right to send as that line.
    pub const AS_LINE: Self = Self(1 << 1);
    /// The body is encrypted end to end (informational for clients; the hub never reads it).
    pub const ENCRYPTED: Self = Self(1 << 2);
    /// A notice a hub wrote in `from`'s name (a group invitation, say); the body is a UTF-8
    /// JSON object whose `notice` field names the kind. Only a hub sets it: a device's send
    /// with it is refused.
    pub const NOTICE: Self = Self(1 << 3);
    /// On a hub link only: a message a user's former home hub hands over to their registration
    /// hub when the user moves to another home hub. A device's send with it is refused.
    pub const HANDOFF: Self = Self(1 << 4);
    /// Every bit this version defines.
    pub const ALL: Self = Self(0b1_1111);

    /// The raw bits.
    pub fn bits(self) -> u16 {
        self.0
    }

    /// Flags from raw bits, or `None` if an undefined bit is set.
    pub fn from_bits(bits: u16) -> Option<Self> {
        (bits & !Self::ALL.0 == 0).then_some(Self(bits))
    }

    /// True when every bit of `other` is set in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` without the bits of `other`.
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({:#06b})", self.0)
    }
}

impl Wire for Flags {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.0.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let bits = u16::decode(buf)?;
        Self::from_bits(bits)
            .ok_or(DecodeError::InvalidValue { field: "flags", value: bits.into() })
    }
}

/// One message as the hub sees it. The hub reads everything but `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Sender-made id; (`from`, `id`) identifies the message.
    pub id: MessageId,
    /// The sending account (or, with [`Flags::AS_LINE`], the line it sends as).
    pub from: Address,
    /// The recipient: an account, a line, a group or an organisation's main line.
    pub to: Address,
    /// Creation time, Unix milliseconds, as the sender's clock says.
    pub created_ms: u64,
    /// Seconds the hub keeps the message for devices that have not taken it; 0 means the
    /// hub's default.
    pub ttl_secs: u32,
    /// Flags.
    pub flags: Flags,
    /// The opaque body.
    pub body: Bytes,
}

impl Envelope {
    /// Fixed bytes of the wire form besides the two addresses and the body.
    pub(crate) const FIXED_LEN: usize = 16 + 2 + 2 + 8 + 4 + 2 + 4;
}

impl Wire for Envelope {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.id.encode(out);
        self.from.encode(out);
        self.to.encode(out);
        self.created_ms.encode(out);
        self.ttl_secs.encode(out);
        self.flags.encode(out);
        put_bytes(out, &self.body);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self {
            id: MessageId::decode(buf)?,
            from: decode_address(buf, "from")?,
            to: decode_address(buf, "to")?,
            created_ms: u64::decode(buf)?,
            ttl_secs: u32::decode(buf)?,
            flags: Flags::decode(buf)?,
            body: get_bytes(buf)?,
        })
    }
}

impl Wire for Address {
    fn encode<B: BufMut>(&self, out: &mut B) {
        put_str(out, self.as_str());
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        decode_address(buf, "address")
    }
}

/// Reads an address, naming `field` in the error.
pub(crate) fn decode_address(buf: &mut Bytes, field: &'static str) -> Result<Address, DecodeError> {
    let raw = get_str_bytes(buf, field, crate::address::MAX_ADDRESS_LEN)?;
    let text = std::str::from_utf8(&raw).map_err(|_| DecodeError::InvalidUtf8 { field })?;
    Address::parse(text).map_err(|source| DecodeError::InvalidAddress { field, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_keeps_time_in_top_bits_and_sorts_by_time() {
        let early = MessageId::from_parts(1_000, u128::MAX);
        let late = MessageId::from_parts(1_001, 0);
        assert_eq!(early.unix_ms(), 1_000);
        assert_eq!(late.unix_ms(), 1_001);
        assert!(early < late);
    }

    #[test]
    fn message_id_text_form_round_trips() {
        let id = MessageId::from_parts(1_700_000_000_000, 0xdead_beef);
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<MessageId>().unwrap(), id);
    }

    #[test]
    fn undefined_flag_bits_are_refused() {
        assert_eq!(Flags::from_bits(0b10_0000), None);
        assert_eq!(Flags::from_bits(0b1_0000), Some(Flags::HANDOFF));
        assert_eq!(Flags::from_bits(0b1000), Some(Flags::NOTICE));
        assert_eq!(Flags::from_bits(0b11), Some(Flags::WANT_RECEIPTS | Flags::AS_LINE));
        let mut raw = Bytes::from_static(&[0x80, 0x00]);
        assert_eq!(
            Flags::decode(&mut raw),
            Err(DecodeError::InvalidValue { field: "flags", value: 0x8000 })
        );
    }
}
