//! Property tests of the codec: arbitrary frames survive any split of their bytes, and arbitrary
//! bytes never make the decoder panic or hold more than one frame's worth of memory.

mod common;

use common::*;
use proptest::prelude::*;
use switchboard_protocol::*;

/// `PROPTEST_CASES` raises the number of cases for a longer run.
fn cases_or(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_or(512)))]

    #[test]
    fn every_frame_decodes_to_itself_whatever_the_split(
        frames in prop::collection::vec(frame(), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut bytes = Vec::new();
        for frame in &frames {
            bytes.extend_from_slice(&encode(frame));
        }
        prop_assert_eq!(decode_in_pieces(&bytes, &cuts).unwrap(), frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        max in 0u32..4096,
        piece in 1usize..64,
    ) {
        let mut decoder = Decoder::new(max);
        for chunk in bytes.chunks(piece) {
            let mut src = chunk;
            while !src.is_empty() {
                match decoder.decode(&mut src) {
                    Ok(_) => {}
                    Err(error) if error.is_fatal() => return Ok(()),
                    Err(_) => {}
                }
            }
        }
    }

    #[test]
    fn arbitrary_payloads_of_every_type_never_panic(
        ty in prop::sample::select(FrameType::ALL),
        payload in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = Frame::decode_payload(ty, payload.into());
    }

    #[test]
    fn one_flipped_byte_in_a_valid_frame_never_panics(
        frame in frame(),
        at in any::<usize>(),
        value in any::<u8>(),
    ) {
        let mut bytes = encode(&frame).to_vec();
        let at = at % bytes.len();
        bytes[at] = value;
        let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
        let _ = decoder.decode(&mut &bytes[..]);
    }

    #[test]
    fn parsed_addresses_reparse_to_themselves(address in address()) {
        prop_assert_eq!(Address::parse(address.as_str()).unwrap(), address);
    }

    #[test]
    fn address_parse_never_panics_on_arbitrary_text(text in ".{0,80}") {
        let _ = Address::parse(&text);
    }
}
