//! Malformed input gets a typed error, never a panic, and leaves the decoder in a known state.

mod common;

use bytes::{BufMut, BytesMut};
use common::*;
use switchboard_protocol::*;

fn raw(version: u8, ty: u8, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u8(version);
    out.put_u8(ty);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out
}

fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
    Decoder::new(DEFAULT_MAX_PAYLOAD).decode(&mut &bytes[..])
}

#[test]
fn unknown_version_is_fatal_and_poisons_the_decoder() {
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    let bytes = raw(2, 0x05, &[0; 8]);
    let err = decoder.decode(&mut &bytes[..]).unwrap_err();
    assert_eq!(err, DecodeError::UnsupportedVersion(2));
    assert!(err.is_fatal());
    assert_eq!(err.code(), ErrorCode::UNSUPPORTED_VERSION);
    let good = encode(&Ping { nonce: 1 }.into());
    assert_eq!(decoder.decode(&mut &good[..]), Err(DecodeError::Poisoned));
}

#[test]
fn unknown_frame_type_is_fatal() {
    let err = decode_one(&raw(1, 0x7f, &[])).unwrap_err();
    assert_eq!(err, DecodeError::UnknownFrameType(0x7f));
    assert!(err.is_fatal());
}

#[test]
fn oversized_frame_is_refused_from_its_header_alone() {
    let mut decoder = Decoder::new(1024);
    let mut header = BytesMut::new();
    header.put_u8(1);
    header.put_u8(0x10);
    header.put_u32(u32::MAX);
    let err = decoder.decode(&mut &header[..]).unwrap_err();
    assert_eq!(err, DecodeError::FrameTooLarge { len: u32::MAX, max: 1024 });
    assert_eq!(err.code(), ErrorCode::FRAME_TOO_LARGE);
}

#[test]
fn decoder_takes_only_the_bytes_of_the_current_frame() {
    let first = encode(&Ping { nonce: 1 }.into());
    let second = encode(&Pong { nonce: 2 }.into());
    let mut both = first.to_vec();
    both.extend_from_slice(&second);
    let mut src = &both[..];
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    assert_eq!(decoder.decode(&mut src).unwrap(), Some(Ping { nonce: 1 }.into()));
    assert_eq!(src.len(), second.len());
    assert_eq!(decoder.decode(&mut src).unwrap(), Some(Pong { nonce: 2 }.into()));
}

#[test]
fn short_payload_is_an_error_and_the_next_frame_still_decodes() {
    let mut bytes = raw(1, 0x05, &[0; 3]).to_vec(); // a ping needs 8 bytes
    bytes.extend_from_slice(&encode(&Ping { nonce: 9 }.into()));
    let mut src = &bytes[..];
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    let err = decoder.decode(&mut src).unwrap_err();
    assert_eq!(err, DecodeError::UnexpectedEnd);
    assert!(!err.is_fatal());
    assert_eq!(decoder.decode(&mut src).unwrap(), Some(Ping { nonce: 9 }.into()));
}

#[test]
fn trailing_bytes_in_a_payload_are_an_error() {
    assert_eq!(decode_one(&raw(1, 0x05, &[0; 9])), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn invalid_utf8_in_a_text_field_is_an_error() {
    let mut payload = vec![0, 13, 0, 2];
    payload.extend_from_slice(&[0xff, 0xfe]);
    assert_eq!(
        decode_one(&raw(1, 0x07, &payload)),
        Err(DecodeError::InvalidUtf8 { field: "text" })
    );
}

#[test]
fn overlong_text_field_is_refused_before_it_is_read() {
    let mut payload = vec![0, 13];
    payload.extend_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(
        decode_one(&raw(1, 0x07, &payload)),
        Err(DecodeError::FieldTooLong { field: "text", len: 65535, max: MAX_TEXT_LEN })
    );
}

#[test]
fn malformed_address_is_an_error_naming_the_field() {
    let mut payload = BytesMut::new();
    payload.put_u16(3);
    payload.put_slice(b"a@@");
    payload.put_u64(0);
    payload.put_u16(0);
    let err = decode_one(&raw(1, 0x14, &payload)).unwrap_err();
    assert!(matches!(err, DecodeError::InvalidAddress { field: "queue", .. }), "{err:?}");
}

#[test]
fn hello_from_an_account_instead_of_a_device_is_refused() {
    let hello: Frame = Hello {
        device: addr("alice@example.org/laptop"),
        public_key: [0; 32],
        enrolment_code: None,
        agent: String::new(),
    }
    .into();
    let bytes = encode(&hello);
    // Rewrite the device address "alice@example.org/laptop" (24 bytes) as an account address.
    let mut payload = BytesMut::new();
    payload.put_u16(17);
    payload.put_slice(b"alice@example.org");
    payload.put_slice(&bytes[HEADER_LEN + 2 + 24..]);
    assert_eq!(
        decode_one(&raw(1, 0x01, &payload)),
        Err(DecodeError::WrongAddressKind { field: "device", expected: AddressKind::Device })
    );
}

#[test]
fn undefined_receipt_kind_and_flag_bits_are_refused() {
    let receipt = encode(&sample_frames()[13]);
    let mut bytes = receipt.to_vec();
    bytes[HEADER_LEN + 16] = 9; // the kind byte follows the 16-byte id
    assert_eq!(
        decode_one(&bytes),
        Err(DecodeError::InvalidValue { field: "receipt_kind", value: 9 })
    );
}

#[test]
fn ack_with_selective_sequences_not_above_up_to_is_refused() {
    let mut payload = BytesMut::new();
    payload.put_u16(15);
    payload.put_slice(b"bob@example.org");
    payload.put_u64(10);
    payload.put_u16(2);
    payload.put_u64(12);
    payload.put_u64(11);
    assert_eq!(
        decode_one(&raw(1, 0x14, &payload)),
        Err(DecodeError::InvalidValue { field: "selective", value: 11 })
    );
}

#[test]
fn list_count_larger_than_the_payload_is_refused_without_allocating_it() {
    let mut payload = BytesMut::new();
    payload.put_u64(1);
    payload.put_u16(u16::MAX); // claims 65535 envelopes in a 10-byte payload
    assert_eq!(decode_one(&raw(1, 0x21, &payload)), Err(DecodeError::UnexpectedEnd));
}
