//! Fuzz target: operation sequences on the union engine in-process, against a model of
//! overlay semantics. The checks are in `rfs_fuzz::union_ops` (`src/union_ops.rs`), shared
//! with the replay test `fs/tests/union_ops.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rfs_fuzz::union_ops(data);
});
