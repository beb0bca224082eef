//! Session frames: the device handshake, liveness, errors and closing.
//!
//! Handshake: the device sends [`Hello`] (with an enrolment code the first time), the hub answers
//! [`Challenge`], the device signs [`proof_message`] with its ed25519 key and sends [`Proof`], and
//! the hub answers [`Welcome`] or closes with a [`Close`] naming the reason.

use bytes::{BufMut, Bytes};

use crate::{
    address::{Address, AddressKind},
    codec::{Wire, get_str, put_str},
    envelope::decode_address,
    error::{DecodeError, ErrorCode},
};

/// Longest free text (agent, error text, close reason, reject detail), in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Longest enrolment code, in bytes.
pub const MAX_CODE_LEN: usize = 64;
/// The context every device proof is bound to.
const PROOF_CONTEXT: &[u8] = b"switchboard/1 device-proof\0";

/// Device to hub, first frame: who the device is and which key it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The device's address (`user@domain/device`).
    pub device: Address,
    /// The device's ed25519 public key.
    pub public_key: [u8; 32],
    /// The one-time enrolment code, on the device's first connection only.
    pub enrolment_code: Option<String>,
    /// Free text naming the client software, for logs.
    pub agent: String,
}

/// Hub to device: a fresh random nonce the device must sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// 32 random bytes, never reused.
    pub nonce: [u8; 32],
}

/// Device to hub: the ed25519 signature of [`proof_message`] for the challenge's nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The signature.
    pub signature: [u8; 64],
}

/// Hub to device: the handshake succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// An id of this session, for logs on both sides.
    pub session_id: u64,
    /// The hub's clock, Unix milliseconds, so the device can judge its own clock's skew.
    pub server_time_ms: u64,
    /// The largest frame payload the hub accepts from this device.
    pub max_payload: u32,
    /// How many `send` frames the device may have unanswered at once (its send credit).
    pub send_credit: u32,
    /// How many deliveries the hub may have unacknowledged to this device before the device
    /// grants more with `credit` (its delivery window at the start).
    pub window: u32,
    /// The connection's idle timeout, milliseconds: a device that sends nothing for this long
    /// is disconnected, so it pings more often than that when it has nothing to say.
    pub idle_timeout_ms: u32,
}

/// Either side: a liveness probe; the peer answers [`Pong`] with the same nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// Echoed in the pong.
    pub nonce: u64,
}

/// Either side: the answer to a [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
}

/// Either side: a request failed but the session goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub text: String,
}

/// Either side: the last frame before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// Stable code; [`ErrorCode::NORMAL`] for an orderly close.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub reason: String,
}

/// The bytes a device signs to answer a challenge: a fixed context string, the nonce and the
/// device's address, so that a proof cannot be replayed for another nonce or device.
pub fn proof_message(nonce: &[u8; 32], device: &Address) -> Vec<u8> {
    let mut message = Vec::with_capacity(PROOF_CONTEXT.len() + 32 + device.as_str().len());
    message.extend_from_slice(PROOF_CONTEXT);
    message.extend_from_slice(nonce);
    message.extend_from_slice(device.as_str().as_bytes());
    message
}

impl Wire for Hello {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.device.encode(out);
        self.public_key.encode(out);
        match &self.enrolment_code {
            Some(code) => {
                out.put_u8(1);
                put_str(out, code);
            }
            None => out.put_u8(0),
        }
        put_str(out, &self.agent);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let device = decode_address(buf, "device")?;
        if device.kind() != AddressKind::Device {
            return Err(DecodeError::WrongAddressKind {
                field: "device",
                expected: AddressKind::Device,
            });
        }
        let public_key = <[u8; 32]>::decode(buf)?;
        let enrolment_code = match u8::decode(buf)? {
            0 => None,
            1 => Some(get_str(buf, "enrolment_code", MAX_CODE_LEN)?),
            other => {
                return Err(DecodeError::InvalidValue { field: "has_code", value: other.into() });
            }
        };
        let agent = get_str(buf, "agent", MAX_TEXT_LEN)?;
        Ok(Self { device, public_key, enrolment_code, agent })
    }
}

impl Wire for Challenge {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.nonce.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self { nonce: Wire::decode(buf)? })
    }
}

impl Wire for Proof {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.signature.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self { signature: Wire::decode(buf)? })
    }
}

impl Wire for Welcome {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.session_id.encode(out);
        self.server_time_ms.encode(out);
        self.max_payload.encode(out);
        self.send_credit.encode(out);
        self.window.encode(out);
        self.idle_timeout_ms.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self {
            session_id: Wire::decode(buf)?,
            server_time_ms: Wire::decode(buf)?,
            max_payload: Wire::decode(buf)?,
            send_credit: Wire::decode(buf)?,
            window: Wire::decode(buf)?,
            idle_timeout_ms: Wire::decode(buf)?,
        })
    }
}

impl Wire for Ping {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.nonce.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self { nonce: Wire::decode(buf)? })
    }
}

impl Wire for Pong {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.nonce.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self { nonce: Wire::decode(buf)? })
    }
}

impl Wire for ErrorCode {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.0.encode(out);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        u16::decode(buf).map(Self)
    }
}

impl Wire for ErrorFrame {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.code.encode(out);
        put_str(out, &self.text);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self { code: Wire::decode(buf)?, text: get_str(buf, "text", MAX_TEXT_LEN)? })
    }
}

impl Wire for Close {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.code.encode(out);
        put_str(out, &self.reason);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Self { code: Wire::decode(buf)?, reason: get_str(buf, "reason", MAX_TEXT_LEN)? })
    }
}
