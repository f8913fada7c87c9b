//! One node of the merged lower tree, packed into 64 bytes, and the kinds and metadata it
//! carries.

/// The inode number of the root directory (FUSE's root node id).
pub const ROOT_INO: u64 = 1;

/// Set on inode numbers that come from the upper's `st_ino`; never set on a lower entry's.
pub const UPPER_INO_BIT: u64 = 1 << 63;

/// What kind of file a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

impl FileKind {
    /// The kind encoded in an `st_mode`.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFCHR => FileKind::CharDev,
            libc::S_IFBLK => FileKind::BlockDev,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::File => libc::S_IFREG,
            FileKind::Dir => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::CharDev => libc::S_IFCHR,
            FileKind::BlockDev => libc::S_IFBLK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
        }
    }
}

/// Metadata shared by lower and upper entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky.
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds).
    pub mtime: i64,
    /// Modification time (nanoseconds part).
    pub mtime_nsec: u32,
    /// Device number for device nodes.
    pub rdev: u64,
}

/// Extended attributes as (name, value) pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Extended attributes of a tar member, compactly stored.
pub(super) type TarXattrs = Box<[(Box<str>, Box<[u8]>)]>;

/// Where a node's data and xattrs come from (while building).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// Tar member data at this absolute offset of the layer file; xattrs from the tar.
    Tar { data: u64, xattrs: TarXattrs },
    /// A host directory layer: the node's tree path is its path in the layer.
    Dir,
    /// A directory implied by a deeper member, with no entry of its own.
    Implicit,
}

/// [`Source`] without its payload, as a frozen node keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SourceTag {
    Tar,
    Dir,
    Implicit,
}

/// One node of the merged lower tree: 64 bytes, so that an image of a million entries
/// costs 64 MB and not twice that. Variable-size parts live in [`LowerTree`]: the name and
/// a symlink's target in its name buffer, tar xattrs in a side table.
#[derive(Debug)]
pub struct LowerNode {
    /// Where the last path component (empty for the root) is in [`LowerTree`]'s name
    /// buffer; read it with [`LowerTree::name`].
    pub(super) name_at: u32,
    pub(super) name_len: u32,
    /// The parent node (the root is its own parent).
    pub parent: u32,
    /// Node whose number is this node's inode number (itself, or the first of a hard-link
    /// group).
    pub ino_node: u32,
    /// A non-directory's hard-link count within the merged tree; a directory's `st_nlink`:
    /// from a directory layer, its host's, or 1 where it merges several layers (as kernel
    /// overlayfs reports it); else 2 + its subdirectories.
    pub nlink: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime_nsec: u32,
    /// Permission bits including setuid/setgid/sticky.
    pub(super) perm: u16,
    /// The layer that supplies this node (index into the bottom-to-top layer list).
    pub layer: u16,
    /// File type.
    pub kind: FileKind,
    pub(super) source: SourceTag,
    pub(super) mtime: i64,
    pub(super) size: u64,
    /// By kind: a directory's children (`start | len << 32`), a symlink's target in the
    /// name buffer (`at | len << 32`), a device's rdev, a tar file's data offset.
    pub(super) extra: u64,
}

const _: () = assert!(std::mem::size_of::<LowerNode>() == 64);

impl LowerNode {
    /// Metadata from the topmost layer that has this entry.
    pub fn meta(&self) -> Meta {
        Meta {
            perm: u32::from(self.perm),
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            rdev: match self.kind {
                FileKind::CharDev | FileKind::BlockDev => self.extra,
                _ => 0,
            },
        }
    }

    /// The range packed in `extra` (directory children, symlink target).
    pub(super) fn extra_range(&self) -> (u32, u32) {
        (self.extra as u32, (self.extra >> 32) as u32)
    }
}

pub(super) fn pack_range(start: u32, len: u32) -> u64 {
    u64::from(start) | (u64::from(len) << 32)
}
