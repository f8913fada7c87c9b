//! `UnionFs`: overlay semantics as a plain Rust API, without any FUSE types.
//!
//! The merged view is the immutable [`LowerTree`] under a writable upper directory in kernel
//! overlayfs format (see `upper.rs`). Every method takes inode numbers and names, as FUSE
//! does, and returns [`Error`] values; the FUSE adapter only converts.
//!
//! Inode numbers are deterministic: a lower entry's number is its `st_ino` in its layer when
//! all layers are directories on one filesystem (as kernel overlayfs reports them), else its
//! lower-tree node number + 1 (see [`LowerTree::ino`]; the root is 1; a hard-link group
//! shares one number). An upper entry keeps the number of the lower entry it was copied up
//! from (`*.rfs.origin`, which names the lower node), else its upper `st_ino` with the top
//! bit set. So st_ino is the same across copy-up and across remounts.
//!
//! Memory: an inode the kernel has only looked up, still exactly its lower node in its lower
//! place, is a reference count in a dense per-node table (4 bytes); it becomes a full
//! `Inode` (about 150 bytes with its map slot) when an operation needs its state. Walking a
//! 100k-entry image so adds under 1 MiB to the daemon.
//!
//! Locking: lookups, reads, getattr, copy-up and writes share `namespace` (a read lock);
//! operations that change names (create, unlink, mkdir, rmdir, rename, link, symlink,
//! mknod) take it exclusively for the few syscalls they need, so paths never change under a
//! reader's feet. A long copy-up holds only its own inode's `copy_lock`, so readers of other
//! files proceed.
//!
//! The rooms, each an `impl UnionFs` block over the state defined here:
//!
//! - `inode`: the inode table (kernel references, names, which layers back an inode);
//! - `handle`: the open-file table and the I/O through handles;
//! - `resolve`: what a name is in the merged view, and `lookup`;
//! - `attr`: `getattr`, `readlink`, `setattr`;
//! - `listing`: merged directory listings;
//! - `copy_up`: copy-up and metadata-only copy-up;
//! - `namespace`: the operations that change names;
//! - `ownership`: how owners and modes are stored ([`Ownership`], chosen in [`UnionConfig`]);
//! - `xattr`: extended attributes.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::Error;
use crate::lower::{FileKind, LowerTree};
use crate::ovl::Namespace;
use crate::sys::{self, SetTime};
use crate::upper::{Upper, WhiteoutStyle};

mod attr;
mod copy_up;
#[cfg(test)]
mod fixture;
mod handle;
mod inode;
mod listing;
mod namespace;
mod ownership;
mod resolve;
mod xattr;

use handle::HandleTable;
use inode::{Inode, SHARDS};
use listing::LISTINGS_KEPT;
pub use ownership::Ownership;
use ownership::{Made, Owner, Target};

pub use crate::lower::ROOT_INO;

/// Attributes of a merged entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File type.
    pub kind: FileKind,
    /// Permission bits (with setuid/setgid/sticky).
    pub perm: u32,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Preferred I/O size.
    pub blksize: u32,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, u32),
    /// Modification time.
    pub mtime: (i64, u32),
    /// Status change time.
    pub ctime: (i64, u32),
    /// Device number of device nodes.
    pub rdev: u64,
}

/// Who asks: the ids new entries are created with, and what the set-id rule needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Filesystem uid of the calling process, as stored (through the mount's id mapping).
    pub uid: u32,
    /// Filesystem gid of the calling process, as stored.
    pub gid: u32,
    /// Whether the caller is root where the request comes from: uid 0 as the kernel reports
    /// it, before any id mapping.
    pub root: bool,
}

impl Caller {
    /// Root, with ids 0.
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        root: true,
    };

    /// Whether the caller may keep a file's set-id bits when it truncates the file
    /// (`CAP_FSETID`). FUSE does not pass a caller's capabilities, so root is taken to have
    /// it and everyone else not.
    fn may_keep_setid(self) -> bool {
        self.root
    }
}

/// What the kernel says about the writer of a `write`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writer {
    /// The writer lacks `CAP_FSETID` and the file has set-id bits (FUSE's
    /// `WRITE_KILL_SUIDGID`): the bits go before the data is written.
    pub lacks_fsetid: bool,
}

/// An open file, from [`UnionFs::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The handle, for `read`, `write`, `release`...
    pub fh: u64,
    /// The data is a lower file's, which never changes (writing copies the file up and
    /// opens the copy): a cache of it stays valid across opens.
    pub immutable: bool,
}

/// Filesystem statistics, from [`UnionFs::statfs`] (`statvfs(3)`'s fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    /// Size of the blocks counted below, in bytes (`f_frsize`).
    pub frsize: u32,
    /// Preferred I/O block size (`f_bsize`).
    pub bsize: u32,
    /// Blocks in all.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users.
    pub bavail: u64,
    /// Inodes in all.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Longest name.
    pub namemax: u32,
}

/// Attribute changes of a `setattr`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
}

/// One entry of a merged directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Inode number (equal to the entry's `st_ino`).
    pub ino: u64,
    /// File type.
    pub kind: FileKind,
}

/// What a mount's caller chooses about its union.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnionConfig {
    /// How owners and modes are stored in the upper. The default is what this process
    /// would use ([`Ownership::of_process`]); a daemon that is built in one user namespace
    /// and serves from another says which ids it will have there.
    pub ownership: Ownership,
    /// The xattr namespace of the upper's markers (opaque, redirect, origin, metacopy).
    /// `None`, the default, probes it when the upper is opened: `trusted.*` where this
    /// process can set it (root in the initial user namespace), else `user.*`. A daemon
    /// that serves from inside a user namespace says `user`: there `trusted.*` can be
    /// neither set nor read, whatever the process that opened the upper could do.
    pub markers: Option<Namespace>,
    /// The ids the union's own files have on disk as this process sees them, where they
    /// differ from the own ids of [`Ownership::Override`]: a rootless container's union
    /// opened outside the container's user namespace (`rfs cp`), where its root's files are
    /// the user's. Upper entries with these ids and no `override_stat` show the own ids.
    /// `None`, the default: the ids on disk are shown as they are.
    pub own_ids_on_disk: Option<(u32, u32)>,
}

/// Where the upper and work dirs are.
#[derive(Clone, Debug)]
pub struct UpperDirs {
    /// The writable layer.
    pub upper: PathBuf,
    /// Its work dir (same filesystem).
    pub work: PathBuf,
}

/// The union filesystem.
#[derive(Debug)]
pub struct UnionFs {
    lower: LowerTree,
    upper: Option<Upper>,
    inodes: Vec<Mutex<HashMap<u64, Arc<Inode>>>>,
    /// Kernel references to lower entries still in their lower place, by lower node: an
    /// inode that is only looked up costs these 4 bytes, not an [`Inode`] (see
    /// [`UnionFs::remember`]). Guarded by the inode number's shard lock.
    lower_refs: Vec<AtomicU32>,
    handles: HandleTable,
    namespace: RwLock<()>,
    /// Directory listings being read without a handle, by inode (see `listing_at`).
    listings: Mutex<lru::LruCache<u64, Arc<Vec<DirEntry>>>>,
    /// Lower nodes of each hard-link group with more than one member, by group inode node.
    link_groups: HashMap<u32, Vec<u32>>,
    /// The renamed directories of the upper, found when a hard-link member is not at its
    /// lower path (see `lower_position`); dropped by every directory rename and rmdir.
    moved_dirs: Mutex<Option<Arc<Vec<resolve::Moved>>>>,
    /// How owners and modes are stored in the upper.
    ownership: Ownership,
    /// [`UnionConfig::own_ids_on_disk`].
    own_ids_on_disk: Option<(u32, u32)>,
}

/// Locks `m`, going on after a panic of another holder: every table stays consistent
/// between its own statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An [`Error::Io`] for `op` on a path given as bytes.
fn bytes_err(op: &'static str, path: &[u8], e: io::Error) -> Error {
    Error::io(op, String::from_utf8_lossy(path).into_owned(), e)
}

/// `parent/name`, or `name` at the root (`parent` empty).
fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut p = parent.to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

/// `name` as a C string (names never hold NUL: `Error::Io` if one does).
fn cname(name: &[u8]) -> Result<CString, Error> {
    sys::cstr(name).map_err(|e| bytes_err("name", name, e))
}

impl UnionFs {
    /// Builds the union of `lower` and, unless read-only, the upper dirs, with the
    /// default [`UnionConfig`] (ownership as this process would store it).
    ///
    /// # Errors
    /// The upper or work dir cannot be opened, or they are on different filesystems.
    pub fn new(lower: LowerTree, upper: Option<UpperDirs>) -> Result<UnionFs, Error> {
        UnionFs::with_config(lower, upper, UnionConfig::default())
    }

    /// Builds the union of `lower` and, unless read-only, the upper dirs, as `config` says.
    ///
    /// # Errors
    /// As [`UnionFs::new`].
    pub fn with_config(
        lower: LowerTree,
        upper: Option<UpperDirs>,
        config: UnionConfig,
    ) -> Result<UnionFs, Error> {
        let upper = match upper {
            Some(d) => Some(Upper::open(&d.upper, &d.work, config.markers)?),
            None => None,
        };
        let mut link_groups: HashMap<u32, Vec<u32>> = HashMap::new();
        for i in 0..lower.len() as u32 {
            let n = lower.node(i);
            if n.kind != FileKind::Dir && n.nlink > 1 {
                link_groups.entry(n.ino_node).or_default().push(i);
            }
        }
        let lower_refs = (0..lower.len()).map(|_| AtomicU32::new(0)).collect();
        let fs = UnionFs {
            lower,
            upper,
            inodes: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            lower_refs,
            handles: HandleTable::new(),
            namespace: RwLock::new(()),
            listings: Mutex::new(lru::LruCache::new(LISTINGS_KEPT)),
            link_groups,
            moved_dirs: Mutex::new(None),
            ownership: config.ownership,
            own_ids_on_disk: config.own_ids_on_disk,
        };
        let root_lower = match &fs.upper {
            Some(up) => {
                if up.is_opaque(up.root()).unwrap_or(false) {
                    None
                } else {
                    Some(LowerTree::ROOT)
                }
            }
            None => Some(LowerTree::ROOT),
        };
        let root = Inode::new(FileKind::Dir, 1, root_lower, fs.upper.is_some());
        lock(fs.shard(ROOT_INO)).insert(ROOT_INO, root);
        Ok(fs)
    }

    /// The owner an upper entry with ids `(uid, gid)` on disk and no `override_stat` shows
    /// (see [`UnionConfig::own_ids_on_disk`]).
    fn shown_ids(&self, uid: u32, gid: u32) -> (u32, u32) {
        match (self.own_ids_on_disk, self.ownership) {
            (Some(disk), Ownership::Override { own_uid, own_gid }) => (
                if uid == disk.0 { own_uid } else { uid },
                if gid == disk.1 { own_gid } else { gid },
            ),
            _ => (uid, gid),
        }
    }

    /// Gives the root of an upper that rfs has just made the owner and mode of the lower
    /// root, as a copy-up of the root would. rfs made that directory, so it has the daemon's
    /// owner; without this a mount made without root would show its root directory as
    /// nobody's, and `rfs commit` would record the daemon's ids for it.
    ///
    /// # Errors
    /// The upper's root cannot be changed (chown, chmod, or its `override_stat`).
    pub fn adopt_lower_root_owner(&self) -> Result<(), Error> {
        let Some(up) = &self.upper else {
            return Ok(());
        };
        let meta = self.lower.node(LowerTree::ROOT).meta();
        let root = Target {
            dir: up.root(),
            name: c".",
            kind: FileKind::Dir,
        };
        let want = Owner {
            uid: meta.uid,
            gid: meta.gid,
            perm: meta.perm,
        };
        self.ownership
            .give(up, root, want, Made::Created)
            .map_err(|e| Error::io("set the owner of the upper's root", "/".to_string(), e))
    }

    /// The lower tree.
    pub fn lower(&self) -> &LowerTree {
        &self.lower
    }

    /// Whether the mount has an upper layer.
    pub fn is_writable(&self) -> bool {
        self.upper.is_some()
    }

    /// Whether whiteouts are written as `.wh.` files (no `CAP_MKNOD`).
    pub fn uses_wh_files(&self) -> bool {
        self.upper
            .as_ref()
            .is_some_and(|u| u.whiteouts == WhiteoutStyle::WhFile)
    }

    /// The upper, or `ReadOnly`.
    fn upper(&self) -> Result<&Upper, Error> {
        self.upper.as_ref().ok_or(Error::ReadOnly)
    }

    /// The namespace lock, shared (see the module docs).
    fn read_ns(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.namespace
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The namespace lock, exclusive (see the module docs).
    fn write_ns(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.namespace
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Filesystem statistics: those of the upper (or of a lower layer when read-only).
    ///
    /// # Errors
    /// Host errors.
    pub fn statfs(&self) -> Result<StatFs, Error> {
        let s = match &self.upper {
            Some(up) => sys::fstatvfs(up.root()).map_err(|e| Error::io("statfs", "upper", e))?,
            None => {
                let f = File::open("/").map_err(|e| Error::io("statfs", "/", e))?;
                sys::fstatvfs(f.as_fd()).map_err(|e| Error::io("statfs", "/", e))?
            }
        };
        Ok(StatFs {
            frsize: s.f_frsize as u32,
            bsize: s.f_bsize as u32,
            blocks: s.f_blocks,
            bfree: s.f_bfree,
            bavail: s.f_bavail,
            files: s.f_files,
            ffree: s.f_ffree,
            namemax: s.f_namemax as u32,
        })
    }
}

/// Splits `a/b/c` into (`a/b`, `c`) and `c` into (``, `c`).
fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fixture::{Fixture, Node};

    #[test]
    fn statfs_reports_the_upper_filesystem() {
        let f = Fixture::new(&[&[("a", Node::File(b"a"))]]);
        let s = f.fs.statfs().expect("statfs");
        let host = nix::sys::statvfs::statvfs(&f.upper("")).expect("host statvfs");
        assert_eq!(u64::from(s.frsize), host.fragment_size());
        assert_eq!(s.blocks, host.blocks());
        assert_eq!(u64::from(s.namemax), host.name_max());
        assert!(s.bavail <= s.bfree && s.bfree <= s.blocks, "{s:?}");
        assert!(s.ffree <= s.files, "{s:?}");
    }

    /// Makes `d` anew over the lower `d` (an opaque directory) and says in which
    /// namespaces the upper's `d` carries the opaque marker: (trusted, user).
    fn opaque_marker_namespaces(markers: Option<Namespace>) -> (bool, bool) {
        let f = Fixture::with_config(
            &[&[("d", Node::Dir)]],
            UnionConfig {
                ownership: Ownership::Host,
                markers,
                own_ids_on_disk: None,
            },
        );
        let name = std::ffi::OsStr::new("d");
        f.walk("d");
        f.fs.rmdir(ROOT_INO, name).expect("rmdir");
        f.fs.mkdir(ROOT_INO, name, 0o755, Caller::ROOT)
            .expect("mkdir");
        (
            f.upper_xattr("d", "trusted.overlay.opaque").is_some(),
            f.upper_xattr("d", "user.overlay.opaque").is_some(),
        )
    }

    /// Root in the initial user namespace can write `trusted.*`: a probed upper uses it, and
    /// a config that names `user` (a daemon serving from a user namespace) is obeyed.
    #[test]
    fn markers_go_to_the_namespace_the_config_names_else_the_probed_one() {
        if !fixture::require_root("markers_go_to_the_namespace_the_config_names") {
            return;
        }
        assert_eq!(opaque_marker_namespaces(None), (true, false), "probed");
        assert_eq!(
            opaque_marker_namespaces(Some(Namespace::User)),
            (false, true),
            "named user"
        );
        assert_eq!(
            opaque_marker_namespaces(Some(Namespace::Trusted)),
            (true, false),
            "named trusted"
        );
    }
}
