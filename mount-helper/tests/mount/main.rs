//! Integration tests of `rfs mount` through real FUSE mounts, driving the built `rfs` binary
//! and real tools. One binary, a module per feature; `common` holds the mount guard.
//!
//! These tests need root (kernel overlayfs is the oracle, device nodes, trusted xattrs) and
//! `/dev/fuse`; `common::privileged` checks that once for the binary, from the fixtures every
//! test starts with. Without them a test fails with the reason, unless `RFS_SKIP_PRIVILEGED=1`
//! is set, in which case the binary prints that it skips and exits 0.

mod bad_input;
mod build;
mod cleanup;
mod cli;
mod common;
mod concurrency;
mod differential;
mod faults;
mod images;
mod io_paths;
mod malformed;
mod metacopy;
mod podman;
mod posix;
mod registry;
mod rootless;
mod run;
mod semantics;
mod soak;
mod stacked;
mod store;
