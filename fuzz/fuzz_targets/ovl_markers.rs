//! Fuzz target: the overlay format's decoders (`rfs_fs::ovl`): entry names, xattr markers and
//! `override_stat` values.
//!
//! The checks are in `rfs_fuzz::ovl_markers` (`src/harness.rs`), shared with the replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rfs_fuzz::ovl_markers(data);
});
