//! Fuzz target: `rfs_fs::tar_index::build` over arbitrary bytes, with small limits.
//!
//! The checks are in `rfs_fuzz::tar_index_build` (`src/harness.rs`), shared with the replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rfs_fuzz::tar_index_build(data);
});
