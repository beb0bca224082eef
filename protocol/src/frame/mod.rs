//! Frames: the units peers exchange. One file per family: [`session`] (handshake, liveness,
//! errors, close), [`messaging`] (send, accept, deliver, ack, receipts, credit) and [`relay`]
//! (hub links).
//!
//! Every frame travels as a 6-byte header — version (u8), frame type (u8), payload length (u32,
//! big-endian) — followed by the payload.

pub(crate) mod messaging;
pub(crate) mod relay;
pub(crate) mod session;

use bytes::{BufMut, Bytes, BytesMut};

pub use messaging::{
    Accepted, Ack, Credit, Deliver, DeliverReceipt, Receipt, ReceiptKind, Rejected, Send,
};
pub use relay::{
    HubHello, MAX_HUB_NAME_LEN, Relay, RelayAck, RelayReceipts, RelayRejection, RelayTaken, Taken,
};
pub use session::{
    Challenge, Close, ErrorFrame, Hello, MAX_CODE_LEN, MAX_TEXT_LEN, Ping, Pong, Proof, Welcome,
    proof_message,
};

use crate::{
    codec::Wire,
    decoder::{HEADER_LEN, VERSION},
    error::{DecodeError, EncodeError},
};

macro_rules! frames {
    ($($variant:ident($ty:ty) = $code:literal, $name:literal;)*) => {
        /// The type byte of a frame header.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum FrameType {
            $(#[doc = concat!("`", $name, "`")] $variant = $code,)*
        }

        impl FrameType {
            /// Every frame type of this version.
            pub const ALL: &'static [FrameType] = &[$(FrameType::$variant),*];

            /// The frame type with this type byte, if there is one.
            pub fn from_u8(byte: u8) -> Option<Self> {
                match byte {
                    $($code => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// The frame's name as the specification writes it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }

        /// One frame of protocol version 1.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Frame {
            $(#[doc = concat!("`", $name, "`")] $variant($ty),)*
        }

        impl Frame {
            /// This frame's type.
            pub fn frame_type(&self) -> FrameType {
                match self {
                    $(Self::$variant(_) => FrameType::$variant,)*
                }
            }

            fn encode_payload<B: BufMut>(&self, out: &mut B) {
                match self {
                    $(Self::$variant(frame) => frame.encode(out),)*
                }
            }

            /// Decodes a whole payload of the given type. Bytes left after the last field
            /// are an error.
            pub fn decode_payload(ty: FrameType, mut payload: Bytes) -> Result<Self, DecodeError> {
                let frame = match ty {
                    $(FrameType::$variant => Self::$variant(<$ty>::decode(&mut payload)?),)*
                };
                if !payload.is_empty() {
                    return Err(DecodeError::TrailingBytes(payload.len()));
                }
                Ok(frame)
            }
        }

        $(impl From<$ty> for Frame {
            fn from(frame: $ty) -> Self {
                Self::$variant(frame)
            }
        })*
    };
}

frames! {
    Hello(Hello) = 0x01, "hello";
    Challenge(Challenge) = 0x02, "challenge";
    Proof(Proof) = 0x03, "proof";
    Welcome(Welcome) = 0x04, "welcome";
    Ping(Ping) = 0x05, "ping";
    Pong(Pong) = 0x06, "pong";
    Error(ErrorFrame) = 0x07, "error";
    Close(Close) = 0x08, "close";
    Send(Send) = 0x10, "send";
    Accepted(Accepted) = 0x11, "accepted";
    Rejected(Rejected) = 0x12, "rejected";
    Deliver(Deliver) = 0x13, "deliver";
    Ack(Ack) = 0x14, "ack";
    Receipt(Receipt) = 0x15, "receipt";
    Credit(Credit) = 0x16, "credit";
    DeliverReceipt(DeliverReceipt) = 0x17, "deliver-receipt";
    HubHello(HubHello) = 0x20, "hub-hello";
    Relay(Relay) = 0x21, "relay";
    RelayAck(RelayAck) = 0x22, "relay-ack";
    RelayReceipts(RelayReceipts) = 0x23, "relay-receipts";
    RelayTaken(RelayTaken) = 0x24, "relay-taken";
}

impl Frame {
    /// Appends this frame, header included, to `out`.
    ///
    /// Fails, leaving `out` as it was, when a field is longer than the protocol allows or the
    /// payload is longer than `max_payload` (the limit the receiving peer announced).
    pub fn encode(&self, max_payload: u32, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.check_fields()?;
        let start = out.len();
        out.put_u8(VERSION);
        out.put_u8(self.frame_type() as u8);
        out.put_u32(0);
        self.encode_payload(out);
        let len = out.len() - start - HEADER_LEN;
        if len > max_payload as usize {
            out.truncate(start);
            return Err(EncodeError::FrameTooLarge { len, max: max_payload });
        }
        out[start + 2..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Encodes this frame into a new buffer.
    pub fn to_bytes(&self, max_payload: u32) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(max_payload, &mut out)?;
        Ok(out.freeze())
    }

    /// Checks the length limits that the wire form cannot express (strings counted by u16,
    /// lists by u16, bodies by u32) before anything is written.
    fn check_fields(&self) -> Result<(), EncodeError> {
        let u16_max = usize::from(u16::MAX);
        match self {
            Self::Hello(f) => {
                check("agent", f.agent.len(), MAX_TEXT_LEN)?;
                check(
                    "enrolment_code",
                    f.enrolment_code.as_ref().map_or(0, String::len),
                    MAX_CODE_LEN,
                )
            }
            Self::Error(f) => check("text", f.text.len(), MAX_TEXT_LEN),
            Self::Close(f) => check("reason", f.reason.len(), MAX_TEXT_LEN),
            Self::Rejected(f) => check("detail", f.detail.len(), MAX_TEXT_LEN),
            Self::Send(f) => check("body", f.envelope.body.len(), u32::MAX as usize),
            Self::Deliver(f) => check("body", f.envelope.body.len(), u32::MAX as usize),
            Self::Ack(f) => check("selective", f.selective.len(), u16_max),
            Self::HubHello(f) => {
                check("hub", f.hub.len(), MAX_HUB_NAME_LEN)?;
                check("domains", f.domains.len(), u16_max)
            }
            Self::Relay(f) => check("envelopes", f.envelopes.len(), u16_max),
            Self::RelayAck(f) => check("rejected", f.rejected.len(), u16_max),
            Self::RelayReceipts(f) => check("receipts", f.receipts.len(), u16_max),
            Self::RelayTaken(f) => check("taken", f.taken.len(), u16_max),
            Self::Challenge(_)
            | Self::Proof(_)
            | Self::Welcome(_)
            | Self::Ping(_)
            | Self::Pong(_)
            | Self::Accepted(_)
            | Self::Receipt(_)
            | Self::DeliverReceipt(_)
            | Self::Credit(_) => Ok(()),
        }
    }
}

fn check(field: &'static str, len: usize, max: usize) -> Result<(), EncodeError> {
    if len > max {
        return Err(EncodeError::FieldTooLong { field, len, max });
    }
    Ok(())
}
