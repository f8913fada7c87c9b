//! Fuzz target: `rfs_fs::tar_index::codec::decode` over arbitrary bytes, and the encode/decode round trip.
//!
//! The checks are in `rfs_fuzz::index_codec` (`src/harness.rs`), shared with the replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rfs_fuzz::index_codec(data);
});
