//! One admin API request per input against a hub on a real store: see
//! `switchboard_hub::admin::fuzz`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchboard_hub::admin::fuzz::Harness;

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("switchboard-fuzz-admin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Harness::new(&dir).expect("a hub on a fresh store")
    })
}

fuzz_target!(|data: &[u8]| harness().run(data));
