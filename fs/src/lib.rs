//! rfs-fs: the union filesystem library of rfs.
//!
//! # A tour, bottom to top
//!
//! Reading images:
//! - [`name`] and [`digest`]: one path component, normalised tar paths; `sha256:` digests
//!   and a reader that verifies while it streams.
//! - [`tar_index`] indexes one layer tar (paths, kinds, owners, data offsets, xattrs) in one
//!   pass, with limits, so member data is served with `pread`, never extracted; its on-disk
//!   codec is versioned and fuzzed.
//! - [`image`] turns a SOURCE (docker save archive, OCI layout, flat rootfs tar) into an
//!   ordered list of layer blobs, decompressing and verifying them as needed; [`source`]
//!   says what a SOURCE is. [`store`] is the content-addressed image store (an OCI layout):
//!   load, import, commit, save, history, garbage collection, the fresh writable layers of
//!   `rfs mount`; [`registry`] speaks the OCI distribution protocol for pull, push and
//!   login; [`init_layer`] writes a container's init layer (the mountpoints its
//!   runner needs, kept out of the container's changes).
//! - [`cp`] copies files between the host and a union (`rfs cp`), resolving paths inside it.
//! - [`build`] is the Dockerfile side of `rfs build`: syntax, BuildKit-style variable
//!   expansion, ARG/ENV scopes, stages, `.dockerignore`, config effects, and `COPY`/`ADD`
//!   into an upper directory (the step runner, which needs processes, is the CLI's).
//!
//! The union:
//! - [`ovl`] is the overlay's on-disk vocabulary: whiteouts, opaque directories, redirects,
//!   origins, metadata-only copies and rootless ownership, decoded and encoded in one place
//!   for the engine, directory lowers and `rfs diff`/`commit`.
//! - [`lower`] flattens the read-only layers (tar indexes and host directories) into one
//!   immutable merged tree, applying whiteouts and opaque markers once, at mount time.
//! - [`union`] is the overlay engine ([`union::UnionFs`]): the lower tree plus a writable upper
//!   in kernel overlayfs format, as a plain Rust API that returns [`Error`]. Its rooms:
//!   inode table, handles, resolve, attributes, listings, copy-up, namespace changes,
//!   ownership, xattrs. Tests, fuzzers and benches drive it without mounting.
//! - [`fuse`] is the thin `fuser` adapter: arguments in, [`union::UnionFs`] call, reply (or
//!   [`Error::errno`]) out. [`sys`] holds every `unsafe` call, each behind a safe wrapper.
//!
//! # Without a mount
//!
//! ```
//! use std::ffi::OsStr;
//! use rfs_fs::lower::{LayerInput, LowerTree, ROOT_INO};
//! use rfs_fs::union::{Caller, UnionFs, UpperDirs};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (base, upper, work) = (dir.path().join("base"), dir.path().join("up"), dir.path().join("work"));
//! for d in [&base, &upper, &work] {
//!     std::fs::create_dir(d)?;
//! }
//! std::fs::write(base.join("motd"), "from the image\n")?;
//!
//! let lower = LowerTree::build(vec![LayerInput::Dir(base.clone())])?;
//! let fs = UnionFs::new(lower, Some(UpperDirs { upper: upper.clone(), work }))?;
//! let motd = fs.lookup(ROOT_INO, OsStr::new("motd"))?;
//!
//! // Deleting a lower file leaves a whiteout in the upper; the lower layer is untouched.
//! fs.unlink(ROOT_INO, OsStr::new("motd"))?;
//! assert!(fs.lookup(ROOT_INO, OsStr::new("motd")).is_err());
//! assert!(base.join("motd").exists());
//!
//! // A new file goes to the upper only.
//! let (attr, fh) = fs.create(ROOT_INO, OsStr::new("new"), 0o644, libc::O_WRONLY, Caller::ROOT)?;
//! fs.release(fh);
//! assert_eq!(attr.size, 0);
//! assert!(upper.join("new").exists());
//! # let _ = motd;
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]

pub mod build;
pub mod cp;
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
pub mod registry;
pub mod source;
pub mod store;
pub mod sys;
pub mod tar_index;
pub mod union;
mod upper;

pub use error::Error;
