//! The fuzz targets' committed corpora, replayed through the same harnesses the fuzzer runs
//! (`deploy/fuzz` fuzzes; this checks on every test run that nothing it once reached breaks),
//! and a few thousand seeded random scripts for the session.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng, rngs::StdRng};
use switchboard_hub::{admin::fuzz::Harness, session};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_session_corpus_input_runs_without_breaking_a_session_rule() {
    let files = corpus("session");
    assert!(files.len() >= 20, "the session corpus has {} inputs", files.len());
    for file in files {
        let data = std::fs::read(&file).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| session::fuzz::run(&data));
        assert!(outcome.is_ok(), "{} breaks a session rule", file.display());
    }
}

#[test]
fn seeded_random_session_scripts_break_no_session_rule() {
    let seed = std::env::var("SWITCHBOARD_FUZZ_SEED").ok().and_then(|s| s.parse().ok());
    let seed = seed.unwrap_or(0x5e55_1011);
    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..3_000 {
        let len = rng.random_range(0..200);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let outcome = std::panic::catch_unwind(|| session::fuzz::run(&data));
        assert!(outcome.is_ok(), "seed {seed}, case {case}: {data:?}");
    }
}

#[test]
fn every_admin_corpus_input_is_answered_without_a_server_error() {
    let files = corpus("admin");
    assert!(files.len() >= 20, "the admin corpus has {} inputs", files.len());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let harness = Harness::new(dir.path()).expect("a hub on a fresh store");
    let mut wrong = Vec::new();
    for file in files {
        let data = std::fs::read(&file).expect("a corpus file");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness.run(&data)));
        if outcome.is_err() {
            wrong.push(file.display().to_string());
        }
    }
    assert!(wrong.is_empty(), "wrong answers to {wrong:?}");
}
