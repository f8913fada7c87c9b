//! The fuzz harness of `rfs-fs`: one function per cargo-fuzz target (see `harness.rs`).
//!
//! The functions live in `harness.rs` rather than here so that `fs/tests/fuzzed.rs` can include
//! the same file and replay crash inputs on the stable toolchain without depending on this
//! crate (which needs libFuzzer and nightly compiler flags).

mod harness;
mod union_ops;

pub use harness::*;
pub use union_ops::union_ops;
