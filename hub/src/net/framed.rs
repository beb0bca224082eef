//! Frames over a QUIC stream: a reader that decodes one frame at a time, and a writer that
//! gathers frames and writes them in one go.

use bytes::BytesMut;
use switchboard_protocol::{DecodeError, Decoder, EncodeError, Frame};

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes were not a valid frame. After a fatal one (see
    /// [`DecodeError::is_fatal`]) the stream cannot be read further.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The stream or connection failed.
    #[error(transparent)]
    Stream(#[from] quinn::ReadError),
}

/// Reads frames from a QUIC receive stream.
pub struct FrameReader {
    recv: quinn::RecvStream,
    decoder: Decoder,
    buf: BytesMut,
    /// Where the bytes read are counted, if anywhere.
    received: Option<prometheus_client::metrics::counter::Counter>,
}

impl FrameReader {
    /// Reads frames of at most `max_payload` payload bytes from `recv`.
    pub fn new(recv: quinn::RecvStream, max_payload: u32) -> Self {
        Self { recv, decoder: Decoder::new(max_payload), buf: BytesMut::new(), received: None }
    }

    /// Counts the bytes read in `received`.
    pub fn counting(mut self, received: prometheus_client::metrics::counter::Counter) -> Self {
        self.received = Some(received);
        self
    }

    /// The next frame; `None` when the peer finished the stream between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            match self.recv.read_chunk(64 << 10, true).await? {
                Some(chunk) => {
                    if let Some(received) = &self.received {
                        received.inc_by(chunk.bytes.len() as u64);
                    }
                    self.buf.extend_from_slice(&chunk.bytes);
                }
                None if self.buf.is_empty() && self.decoder.is_idle() => return Ok(None),
                None => return Err(ReadError::Decode(DecodeError::UnexpectedEnd)),
            }
        }
    }
}

/// Gathers frames and writes them to a QUIC send stream.
pub struct FrameWriter {
    send: quinn::SendStream,
    buf: BytesMut,
    max_payload: u32,
}

impl FrameWriter {
    /// Writes frames of at most `max_payload` payload bytes (the peer's limit) to `send`.
    pub fn new(send: quinn::SendStream, max_payload: u32) -> Self {
        Self { send, buf: BytesMut::new(), max_payload }
    }

    /// Sets the peer's payload limit.
    pub fn set_max_payload(&mut self, max_payload: u32) {
        self.max_payload = max_payload;
    }

    /// Adds a frame to the pending bytes.
    pub fn push(&mut self, frame: &Frame) -> Result<(), EncodeError> {
        frame.encode(self.max_payload, &mut self.buf)
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Writes every pending frame.
    pub async fn flush(&mut self) -> Result<(), quinn::WriteError> {
        if !self.buf.is_empty() {
            let bytes = self.buf.split().freeze();
            self.send.write_chunk(bytes).await?;
        }
        Ok(())
    }

    /// Writes bytes that need not be a frame (tests of a peer's handling of garbage).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), quinn::WriteError> {
        self.send.write_all(bytes).await
    }

    /// Adds `frame` and writes everything pending.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), WriteFrameError> {
        self.push(frame)?;
        Ok(self.flush().await?)
    }

    /// Finishes the stream after the pending bytes.
    pub async fn finish(&mut self) {
        let _ = self.flush().await;
        let _ = self.send.finish();
    }
}

/// Why writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteFrameError {
    /// The frame could not be encoded (a field or the frame is over its limit).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The stream or connection failed.
    #[error(transparent)]
    Stream(#[from] quinn::WriteError),
}
