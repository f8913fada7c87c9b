//! Fuzz target: `rfs_fs::tar_index::normalize` over arbitrary member paths.
//!
//! The checks are in `rfs_fuzz::tar_normalize` (`src/harness.rs`), shared with the replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rfs_fuzz::tar_normalize(data);
});
