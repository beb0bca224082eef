//! The Switchboard wire protocol, version 1.
//!
//! This crate is the wire format and nothing else: addresses, the message envelope, every frame
//! that devices and hubs exchange, an encoder into [`bytes::BytesMut`] and an incremental
//! [`Decoder`] that turns bytes arriving in pieces of any size into whole [`Frame`]s.
//!
//! It does no I/O, owns no clock and spawns nothing: time comes in as arguments (for example
//! [`MessageId::from_parts`]), and bytes come in and go out as buffers. That keeps it usable from
//! the hub, the client library and the load generator alike, and makes it easy to test and fuzz
//! on its own.
//!
//! What it does not do: it does not decide whether a frame is *allowed* at a given moment (that
//! is the session state machine in the hub and the client), and it never reads a message body,
//! which is opaque bytes that clients may encrypt end to end.
//!
//! The byte layout of every frame is specified in `docs/protocol.md`.
#![warn(missing_docs, unreachable_pub)]

mod address;
mod codec;
mod decoder;
mod envelope;
mod error;
mod frame;

pub use address::{Address, AddressError, AddressKind, MAX_ADDRESS_LEN};
pub use decoder::{DEFAULT_MAX_PAYLOAD, Decoder, HEADER_LEN, VERSION};
pub use envelope::{Envelope, Flags, MessageId};
pub use error::{DecodeError, EncodeError, ErrorCode, RejectReason};
pub use frame::{
    Accepted, Ack, Challenge, Close, Credit, Deliver, DeliverReceipt, ErrorFrame, Frame, FrameType,
    Hello, HubHello, MAX_CODE_LEN, MAX_HUB_NAME_LEN, MAX_TEXT_LEN, Ping, Pong, Proof, Receipt,
    ReceiptKind, Rejected, Relay, RelayAck, RelayReceipts, RelayRejection, RelayTaken, Send, Taken,
    Welcome, proof_message,
};
