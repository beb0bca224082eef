//! Primitive encodings shared by every frame: fixed-width big-endian integers, length-prefixed
//! strings and byte strings. Decoding reads from a [`Bytes`] payload so that byte strings (message
//! bodies) are sliced, not copied.

use bytes::{Buf, BufMut, Bytes};

use crate::error::DecodeError;

/// A value with a wire form.
pub(crate) trait Wire: Sized {
    /// Appends the wire form of `self` to `out`.
    fn encode<B: BufMut>(&self, out: &mut B);
    /// Reads one value from the front of `buf`.
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError>;
}

macro_rules! int_wire {
    ($($ty:ty => $put:ident, $get:ident;)*) => {$(
        impl Wire for $ty {
            fn encode<B: BufMut>(&self, out: &mut B) {
                out.$put(*self);
            }
            fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
                need(buf, size_of::<$ty>())?;
                Ok(buf.$get())
            }
        }
    )*};
}

int_wire! {
    u8 => put_u8, get_u8;
    u16 => put_u16, get_u16;
    u32 => put_u32, get_u32;
    u64 => put_u64, get_u64;
    u128 => put_u128, get_u128;
}

impl<const N: usize> Wire for [u8; N] {
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self);
    }
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        need(buf, N)?;
        let mut value = [0u8; N];
        buf.copy_to_slice(&mut value);
        Ok(value)
    }
}

/// Fails with [`DecodeError::UnexpectedEnd`] unless `buf` holds at least `len` more bytes.
pub(crate) fn need(buf: &Bytes, len: usize) -> Result<(), DecodeError> {
    if buf.remaining() < len {
        return Err(DecodeError::UnexpectedEnd);
    }
    Ok(())
}

/// Writes a string with a u16 length prefix. Callers keep strings under 64 KiB (every string
/// field in the protocol has a smaller documented limit, checked on construction or decode).
pub(crate) fn put_str<B: BufMut>(out: &mut B, text: &str) {
    debug_assert!(text.len() <= usize::from(u16::MAX));
    out.put_u16(text.len() as u16);
    out.put_slice(text.as_bytes());
}

/// Reads a u16-length-prefixed UTF-8 string of at most `max` bytes.
pub(crate) fn get_str(
    buf: &mut Bytes,
    field: &'static str,
    max: usize,
) -> Result<String, DecodeError> {
    let raw = get_str_bytes(buf, field, max)?;
    String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { field })
}

/// Reads a u16-length-prefixed string of at most `max` bytes as raw bytes, without copying;
/// the caller checks UTF-8 (or, for addresses, ASCII).
pub(crate) fn get_str_bytes(
    buf: &mut Bytes,
    field: &'static str,
    max: usize,
) -> Result<Bytes, DecodeError> {
    let len = usize::from(u16::decode(buf)?);
    if len > max {
        return Err(DecodeError::FieldTooLong { field, len, max });
    }
    need(buf, len)?;
    Ok(buf.split_to(len))
}

/// Writes a byte string with a u32 length prefix.
pub(crate) fn put_bytes<B: BufMut>(out: &mut B, bytes: &[u8]) {
    debug_assert!(bytes.len() <= u32::MAX as usize);
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

/// Reads a u32-length-prefixed byte string without copying it.
pub(crate) fn get_bytes(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = u32::decode(buf)? as usize;
    need(buf, len)?;
    Ok(buf.split_to(len))
}

/// Writes a list as a u16 count followed by its items.
pub(crate) fn put_list<B: BufMut, T: Wire>(out: &mut B, items: &[T]) {
    debug_assert!(items.len() <= usize::from(u16::MAX));
    out.put_u16(items.len() as u16);
    for item in items {
        item.encode(out);
    }
}

/// Reads a u16-counted list whose items take at least `min_item_len` bytes each. The count is
/// checked against the bytes left before anything is allocated, so a lying count cannot make
/// the decoder reserve more than the frame it came in.
pub(crate) fn get_list<T: Wire>(
    buf: &mut Bytes,
    min_item_len: usize,
) -> Result<Vec<T>, DecodeError> {
    let count = usize::from(u16::decode(buf)?);
    need(buf, count.saturating_mul(min_item_len))?;
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        items.push(T::decode(buf)?);
    }
    Ok(items)
}
