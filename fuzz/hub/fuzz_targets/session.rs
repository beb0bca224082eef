//! A device session driven by a script of frames, store answers, wake-ups and time: see
//! `switchboard_hub::session::fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_hub::session::fuzz::run(data));
