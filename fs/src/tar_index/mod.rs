//! `TarIndex`: one layer tar's members by path, built in one pass so member data can be served
//! later with `pread` at recorded offsets, without extracting anything.
//!
//! The index is pure data: [`build()`] makes one from a tar stream and [`codec`] stores and loads
//! it. Interpreting whiteouts (`.wh.` names) is left to the lower-tree merge, which sees every
//! layer; the indexer only rejects names that can never be valid (escaping `..`, a bare `.wh.`,
//! duplicates).

mod build;
pub mod codec;

pub use build::{Error, Limits, PathError, build, normalize};

/// The kind of a tar member, after hard links have been recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file whose data lies at `data_offset .. data_offset + size`.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; the target is in `link_target`.
    Symlink,
    /// A hard link to an earlier member; `link_target` holds that member's normalised path.
    HardLink,
    /// A character device (`rdev_major`, `rdev_minor`).
    CharDev,
    /// A block device (`rdev_major`, `rdev_minor`).
    BlockDev,
    /// A named pipe.
    Fifo,
}

/// One member of a layer tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    /// Normalised path relative to the layer root: components joined by `/`, no leading `/`,
    /// no `.` or `..` components, no trailing `/`. The root directory itself (`./`) is `""`.
    pub path: String,
    /// What the member is.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    /// Owner uid (numeric; PAX `uid` wins over the header).
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Modification time, seconds since the epoch (PAX `mtime` fractional part in `mtime_nsec`).
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: u32,
    /// Data size for regular files, 0 otherwise.
    pub size: u64,
    /// Offset of the member data from the start of the layer tar.
    pub data_offset: u64,
    /// Symlink target (raw bytes) or, for hard links, the normalised path of the target member.
    pub link_target: Vec<u8>,
    /// Device major number for char/block devices.
    pub rdev_major: u32,
    /// Device minor number for char/block devices.
    pub rdev_minor: u32,
    /// Extended attributes from PAX `SCHILY.xattr.*` records (name, value), in tar order.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// All members of one layer tar, in tar order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TarIndex {
    /// The members, in the order they appear in the tar.
    pub entries: Vec<TarEntry>,
}
