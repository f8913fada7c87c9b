//! Fuzz target: `rfs_fs::lower::LowerTree::build` over one to three fuzzed layer tars.
//!
//! The checks are in `rfs_fuzz::lower_merge` (`src/harness.rs`), shared with the replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rfs_fuzz::lower_merge(data);
});
