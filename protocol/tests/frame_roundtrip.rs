//! Every frame of protocol v1 encodes and decodes to itself.

mod common;

use common::*;
use switchboard_protocol::*;

#[test]
fn samples_cover_every_frame_type_once() {
    let types: Vec<FrameType> = sample_frames().iter().map(Frame::frame_type).collect();
    assert_eq!(types, FrameType::ALL);
}

#[test]
fn every_frame_type_round_trips() {
    for frame in sample_frames() {
        let bytes = encode(&frame);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(bytes[1], frame.frame_type() as u8);
        let len = u32::from_be_bytes(bytes[2..6].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - HEADER_LEN, "{}", frame.frame_type().name());
        let decoded = decode_in_pieces(&bytes, &[]).unwrap();
        assert_eq!(decoded, vec![frame]);
    }
}

#[test]
fn all_frames_in_one_buffer_decode_in_order() {
    let frames = sample_frames();
    let mut bytes = Vec::new();
    for frame in &frames {
        bytes.extend_from_slice(&encode(frame));
    }
    assert_eq!(decode_in_pieces(&bytes, &[]).unwrap(), frames);
}

#[test]
fn a_frame_fed_one_byte_at_a_time_decodes_once_at_its_last_byte() {
    let frame = sample_frames().remove(8);
    let bytes = encode(&frame);
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    for (i, byte) in bytes.iter().enumerate() {
        let got = decoder.decode(&mut &[*byte][..]).unwrap();
        assert_eq!(got.is_some(), i == bytes.len() - 1, "byte {i}");
        if let Some(got) = got {
            assert_eq!(got, frame);
        }
    }
}

#[test]
fn encode_refuses_payload_over_the_limit_and_leaves_buffer_untouched() {
    let frame: Frame = Send { envelope: envelope(&[0u8; 200]) }.into();
    let mut out = bytes::BytesMut::from(&b"xyz"[..]);
    let err = frame.encode(100, &mut out).unwrap_err();
    assert!(matches!(err, EncodeError::FrameTooLarge { max: 100, .. }), "{err:?}");
    assert_eq!(&out[..], b"xyz");
}

#[test]
fn encode_refuses_overlong_text_fields() {
    let frame: Frame =
        ErrorFrame { code: ErrorCode::INTERNAL, text: "x".repeat(MAX_TEXT_LEN + 1) }.into();
    assert_eq!(
        frame.to_bytes(DEFAULT_MAX_PAYLOAD),
        Err(EncodeError::FieldTooLong { field: "text", len: MAX_TEXT_LEN + 1, max: MAX_TEXT_LEN })
    );
}

#[test]
fn proof_message_binds_nonce_and_device() {
    let device = common::addr("alice@example.org/laptop");
    let other = common::addr("alice@example.org/phone");
    assert_ne!(proof_message(&[1; 32], &device), proof_message(&[2; 32], &device));
    assert_ne!(proof_message(&[1; 32], &device), proof_message(&[1; 32], &other));
}

#[test]
fn codes_have_stable_names_and_unknown_codes_survive() {
    assert_eq!(ErrorCode::FLOW_CONTROL.to_string(), "flow-control");
    assert_eq!(RejectReason::RECIPIENT_BACKLOG_FULL.to_string(), "recipient-backlog-full");
    assert_eq!(ErrorCode(999).name(), None);
    let frame: Frame = ErrorFrame { code: ErrorCode(999), text: String::new() }.into();
    assert_eq!(decode_in_pieces(&encode(&frame), &[]).unwrap(), vec![frame]);
}
