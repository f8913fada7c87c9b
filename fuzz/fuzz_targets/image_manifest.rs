//! Fuzz target: `rfs_fs::image::open` over fuzzed archives, layouts and their JSON documents.
//!
//! The checks are in `rfs_fuzz::image_manifest` (`src/harness.rs`), shared with the replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rfs_fuzz::image_manifest(data);
});
