//! The incremental decoder: bytes in, in pieces of any size; whole frames out.

use bytes::{Buf, BytesMut};

use crate::{
    error::DecodeError,
    frame::{Frame, FrameType},
};

/// The protocol version this crate speaks, carried in every frame header.
pub const VERSION: u8 = 1;
/// Bytes in a frame header: version (1), type (1), payload length (4).
pub const HEADER_LEN: usize = 6;
/// The payload limit a hub uses unless configured otherwise: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;

/// Turns a byte stream into frames.
///
/// [`Decoder::decode`] takes bytes from the caller's buffer only as far as the current frame
/// reaches, so the decoder itself never holds more than one header plus one payload of at most
/// `max_payload` bytes, whatever the caller hands it. A header that announces a larger payload is
/// refused before anything is reserved for it.
#[derive(Debug)]
pub struct Decoder {
    max_payload: u32,
    buf: BytesMut,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    Payload { ty: FrameType, len: usize },
    Poisoned,
}

impl Decoder {
    /// A decoder that refuses payloads longer than `max_payload` bytes.
    pub fn new(max_payload: u32) -> Self {
        Self { max_payload, buf: BytesMut::with_capacity(HEADER_LEN), state: State::Header }
    }

    /// The payload limit.
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// True when no partial frame is buffered.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Header) && self.buf.is_empty()
    }

    /// Consumes bytes from `src` until one frame is complete or `src` is empty.
    ///
    /// Returns `Ok(None)` when more bytes are needed. Call it again while `src` has bytes left:
    /// one call yields at most one frame. After a fatal error ([`DecodeError::is_fatal`]) every
    /// later call fails with [`DecodeError::Poisoned`]; after any other error the bad frame has
    /// been consumed whole and decoding continues with the next one.
    pub fn decode<B: Buf>(&mut self, src: &mut B) -> Result<Option<Frame>, DecodeError> {
        loop {
            match self.state {
                State::Poisoned => return Err(DecodeError::Poisoned),
                State::Header => {
                    if !self.fill(src, HEADER_LEN) {
                        return Ok(None);
                    }
                    match self.parse_header() {
                        Ok((ty, len)) => {
                            self.buf.clear();
                            self.buf.reserve(len);
                            self.state = State::Payload { ty, len };
                        }
                        Err(error) => {
                            self.state = State::Poisoned;
                            self.buf = BytesMut::new();
                            return Err(error);
                        }
                    }
                }
                State::Payload { ty, len } => {
                    if !self.fill(src, len) {
                        return Ok(None);
                    }
                    let payload = self.buf.split().freeze();
                    self.state = State::Header;
                    return Frame::decode_payload(ty, payload).map(Some);
                }
            }
        }
    }

    /// Moves bytes from `src` until `buf` holds `want` bytes; true when it does.
    fn fill<B: Buf>(&mut self, src: &mut B, want: usize) -> bool {
        while self.buf.len() < want && src.has_remaining() {
            let chunk = src.chunk();
            let take = chunk.len().min(want - self.buf.len());
            self.buf.extend_from_slice(&chunk[..take]);
            src.advance(take);
        }
        self.buf.len() == want
    }

    fn parse_header(&self) -> Result<(FrameType, usize), DecodeError> {
        let header = &self.buf[..HEADER_LEN];
        if header[0] != VERSION {
            return Err(DecodeError::UnsupportedVersion(header[0]));
        }
        let ty = FrameType::from_u8(header[1]).ok_or(DecodeError::UnknownFrameType(header[1]))?;
        let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        if len > self.max_payload {
            return Err(DecodeError::FrameTooLarge { len, max: self.max_payload });
        }
        Ok((ty, len as usize))
    }
}
