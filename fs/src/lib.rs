//! rfs-fs: the union filesystem library of rfs.
//!
//! A tour, bottom to top:
//!
//! - [`tar_index`] indexes one layer tar (paths, kinds, owners, data offsets, xattrs) in one pass
//!   so member data can be served with `pread`, never extracted.
//! - [`image`] turns a SOURCE (docker save archive, OCI layout, flat rootfs tar) into an ordered
//!   list of layer blobs, decompressing and verifying them as needed.
//! - [`lower`] flattens the read-only layers (tar indexes and host directories) into one
//!   immutable merged tree, applying whiteouts and opaque markers once, at mount time.
//! - [`union`] is the overlay: the lower tree plus a writable upper directory in kernel
//!   overlayfs format, with copy-up, whiteouts, opaque dirs and redirects. It is a plain Rust
//!   API returning [`Error`], used by tests without mounting.
//! - [`init_layer`] writes a container's init layer: the mountpoints its runner needs that the
//!   image lacks, stacked above the image so they never count as the container's changes.
//! - [`fuse`] is the thin `fuser` adapter: arguments in, [`union::UnionFs`] call, reply out.
#![deny(unsafe_code)]

pub mod digest;
mod durable;
pub mod error;
pub mod fuse;
mod host_stat;
pub mod image;
pub mod init_layer;
pub mod lower;
pub mod name;
pub mod ovl;
mod prefetch;
pub mod progress;
pub mod source;
pub mod store;
pub mod sys;
pub mod tar_index;
pub mod union;
mod upper;

pub use error::Error;
