//! Feeds arbitrary bytes to the decoder in pieces whose sizes come from the input itself, and
//! checks that every frame it yields encodes and decodes back to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::{Decoder, Frame};

const MAX_PAYLOAD: u32 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else { return };
    let piece = usize::from(piece).max(1);
    let mut decoder = Decoder::new(MAX_PAYLOAD);
    for chunk in rest.chunks(piece) {
        let mut src = chunk;
        while !src.is_empty() {
            match decoder.decode(&mut src) {
                Ok(Some(frame)) => check_round_trip(&frame),
                Ok(None) => {}
                Err(error) if error.is_fatal() => return,
                Err(_) => {}
            }
        }
    }
});

fn check_round_trip(frame: &Frame) {
    let bytes = frame.to_bytes(MAX_PAYLOAD).expect("a decoded frame re-encodes within the limit");
    let mut again = Decoder::new(MAX_PAYLOAD);
    let decoded = again.decode(&mut &bytes[..]).expect("re-encoded frame decodes");
    assert_eq!(decoded.as_ref(), Some(frame));
}
