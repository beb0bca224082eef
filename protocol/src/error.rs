//! Errors of the codec, and the stable numeric codes that travel in `error`, `close` and
//! `rejected` frames.

use std::fmt;

use crate::address::{AddressError, AddressKind};

/// Why bytes could not be decoded into a frame.
///
/// Errors in the 6-byte frame header ([`DecodeError::UnsupportedVersion`],
/// [`DecodeError::UnknownFrameType`], [`DecodeError::FrameTooLarge`]) leave the byte stream
/// without a known frame boundary: [`DecodeError::is_fatal`] is true and the connection must be
/// closed. Any other error concerns one frame's payload only; the decoder has already skipped
/// that frame and may be used for the next one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header names a protocol version this crate does not speak.
    #[error("unsupported protocol version {0} (this peer speaks version 1)")]
    UnsupportedVersion(u8),
    /// The header names a frame type that does not exist in this version.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// The header announces a payload longer than the receiver's limit.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced payload length.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
    /// The payload ended before all of its fields were read.
    #[error("frame payload ends before its last field")]
    UnexpectedEnd,
    /// The payload holds bytes after its last field.
    #[error("{0} bytes left over after the last field of the frame")]
    TrailingBytes(usize),
    /// A string field is not valid UTF-8.
    #[error("field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        /// Name of the field.
        field: &'static str,
    },
    /// A length-limited field is longer than its limit.
    #[error("field `{field}` is {len} bytes long, more than its limit of {max}")]
    FieldTooLong {
        /// Name of the field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// Its limit.
        max: usize,
    },
    /// An address field does not parse.
    #[error("field `{field}`: {source}")]
    InvalidAddress {
        /// Name of the field.
        field: &'static str,
        /// Why it does not parse.
        source: AddressError,
    },
    /// An address field holds a valid address of the wrong kind (for example an account where
    /// a device is required).
    #[error("field `{field}` must be an address of kind {expected:?}")]
    WrongAddressKind {
        /// Name of the field.
        field: &'static str,
        /// The kind required.
        expected: AddressKind,
    },
    /// A field holds a value outside its allowed set.
    #[error("field `{field}` holds the invalid value {value}")]
    InvalidValue {
        /// Name of the field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// An earlier fatal error left the stream unsynchronised; the decoder refuses more input.
    #[error("the decoder stopped after a fatal framing error")]
    Poisoned,
}

impl DecodeError {
    /// True when the byte stream has lost its frame boundaries and must be closed.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::UnsupportedVersion(_)
                | Self::UnknownFrameType(_)
                | Self::FrameTooLarge { .. }
                | Self::Poisoned
        )
    }

    /// The error code a peer reports for this error in an `error` or `close` frame.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnsupportedVersion(_) => ErrorCode::UNSUPPORTED_VERSION,
            Self::FrameTooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            _ => ErrorCode::MALFORMED,
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded payload would exceed the limit the caller gave.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// A field is longer than the protocol allows.
    #[error("field `{field}` is {len} long, more than its limit of {max}")]
    FieldTooLong {
        /// Name of the field.
        field: &'static str,
        /// Its length (bytes, or items for a list).
        len: usize,
        /// Its limit.
        max: usize,
    },
}

macro_rules! codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$doc:meta])* $konst:ident = $value:literal, $text:literal;)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u16);

        impl $name {
            $($(#[$doc])* pub const $konst: Self = Self($value);)*

            /// Every code this version defines.
            pub const ALL: &'static [Self] = &[$(Self::$konst),*];

            /// The stable text name of the code, or `None` for a code this version does not
            /// define (a newer peer may send one; treat it as its numeric value).
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "code-{}", self.0),
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", self, self.0)
            }
        }
    };
}

codes! {
    /// A stable numeric code carried by `error` and `close` frames. Unknown codes are kept as
    /// numbers so that a newer peer's codes survive a round trip.
    ErrorCode {
        /// Orderly close; nothing went wrong.
        NORMAL = 0, "normal";
        /// A frame could not be decoded.
        MALFORMED = 1, "malformed";
        /// The peer speaks another protocol version.
        UNSUPPORTED_VERSION = 2, "unsupported-version";
        /// A frame exceeded the receiver's size limit.
        FRAME_TOO_LARGE = 3, "frame-too-large";
        /// A frame arrived that is not allowed in the current state of the session (for
        /// example `send` before the handshake finished).
        UNEXPECTED_FRAME = 4, "unexpected-frame";
        /// The device's proof of its key did not verify, or the device is unknown.
        AUTHENTICATION_FAILED = 5, "authentication-failed";
        /// The enrolment code is unknown, used or expired.
        ENROLMENT_REFUSED = 6, "enrolment-refused";
        /// The device was revoked.
        DEVICE_REVOKED = 7, "device-revoked";
        /// The user was deactivated.
        USER_DEACTIVATED = 8, "user-deactivated";
        /// The peer sent more than its credit allowed.
        FLOW_CONTROL = 9, "flow-control";
        /// The session was idle for longer than allowed.
        IDLE_TIMEOUT = 10, "idle-timeout";
        /// The hub refuses more connections (from this address or in total).
        TOO_MANY_CONNECTIONS = 11, "too-many-connections";
        /// The hub is shutting down; reconnect later.
        SHUTTING_DOWN = 12, "shutting-down";
        /// The hub failed internally; the request may be retried.
        INTERNAL = 13, "internal";
        /// A hub link peer is not a known hub, or claims domains it does not serve.
        UNKNOWN_HUB = 14, "unknown-hub";
        /// A device's `receipt` was refused: it names a message that never reached a device
        /// of the device's user, it is made in the name of someone the device does not read
        /// for, or it is a `delivered` receipt (those are the hub's to make).
        RECEIPT_REFUSED = 15, "receipt-refused";
        /// A device's `ack` was refused and changed nothing: it names a queue the device does
        /// not read, a sequence the queue has not reached, or more selective acks than a
        /// device may hold.
        ACK_REFUSED = 16, "ack-refused";
    }
}

codes! {
    /// Why a hub refused a message in a `rejected` frame or a `relay-ack`.
    RejectReason {
        /// The recipient's queue holds as many messages as it may; retry later.
        RECIPIENT_BACKLOG_FULL = 1, "recipient-backlog-full";
        /// The sender may not address this recipient (the detail names the rule).
        NOT_ALLOWED = 2, "not-allowed";
        /// No such user, line, group or organisation.
        UNKNOWN_RECIPIENT = 3, "unknown-recipient";
        /// The message is larger than this hub accepts.
        TOO_LARGE = 4, "too-large";
        /// The sender sends faster than allowed; retry later.
        RATE_LIMITED = 5, "rate-limited";
        /// The hub's storage budget is used up; nothing already accepted is affected.
        DISK_FULL = 6, "disk-full";
        /// The envelope is inconsistent (for example `from` is not the sending device's user).
        INVALID_ENVELOPE = 7, "invalid-envelope";
        /// The message's time-to-live ended before it could be stored.
        EXPIRED = 8, "expired";
        /// The hub that serves the recipient cannot be reached now; the sender may retry.
        UNREACHABLE = 9, "unreachable";
        /// The hub failed internally; the message was not accepted and may be sent again.
        INTERNAL = 10, "internal";
    }
}
