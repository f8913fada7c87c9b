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

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::lower::{FileKind, LowerFile, LowerTree};
use crate::sys::{self, SetTime};
use crate::upper::{LookupResult, Upper, WhiteoutStyle, is_private_xattr, kind_of};
use crate::{Error, name::check_component};

mod attr;
mod handle;
mod inode;
mod listing;
mod resolve;
mod xattr;

use handle::Handle;
use inode::{Inode, SHARDS};
use listing::LISTINGS_KEPT;
use resolve::{DirSnap, Resolved};

pub use crate::lower::ROOT_INO;
const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;
/// Lower files at least this big get a metadata-only copy-up for metadata changes; smaller
/// ones are cheaper to copy than to track.
const METACOPY_MIN_SIZE: u64 = 1 << 20;
const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;

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

/// Who asks: the ids new entries are created with.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// Filesystem uid of the calling process.
    pub uid: u32,
    /// Filesystem gid of the calling process.
    pub gid: u32,
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
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    namespace: RwLock<()>,
    /// Directory listings being read without a handle, by inode (see `listing_at`).
    listings: Mutex<lru::LruCache<u64, Arc<Vec<DirEntry>>>>,
    /// Lower nodes of each hard-link group with more than one member, by group inode node.
    link_groups: HashMap<u32, Vec<u32>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bytes_err(op: &'static str, path: &[u8], e: io::Error) -> Error {
    Error::io(op, String::from_utf8_lossy(path).into_owned(), e)
}

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

fn cname(name: &[u8]) -> Result<CString, Error> {
    sys::cstr(name).map_err(|e| bytes_err("name", name, e))
}

impl UnionFs {
    /// Builds the union of `lower` and, unless read-only, the upper dirs.
    ///
    /// # Errors
    /// The upper or work dir cannot be opened, or they are on different filesystems.
    pub fn new(lower: LowerTree, upper: Option<UpperDirs>) -> Result<UnionFs, Error> {
        let upper = match upper {
            Some(d) => Some(Upper::open(&d.upper, &d.work)?),
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
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            namespace: RwLock::new(()),
            listings: Mutex::new(lru::LruCache::new(LISTINGS_KEPT)),
            link_groups,
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
        self.set_new_owner(
            up.root(),
            c".",
            FileKind::Dir,
            meta.uid,
            meta.gid,
            meta.perm,
        )
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

    fn upper(&self) -> Result<&Upper, Error> {
        self.upper.as_ref().ok_or(Error::ReadOnly)
    }

    fn read_ns(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.namespace
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_ns(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.namespace
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // ------------------------------------------------------------ lookups

    // ------------------------------------------------------------ directories

    // ------------------------------------------------------------ handles

    // ------------------------------------------------------------ copy-up

    /// Makes sure the directory at `path` exists in the upper, copying up every missing
    /// ancestor top down, and returns an `O_PATH` fd of it and the lower dir it merges with.
    fn ensure_upper_dir(&self, path: &[u8]) -> Result<(OwnedFd, Option<u32>), Error> {
        let up = self.upper()?;
        let mut fd = up.dir(b"")?;
        let mut cur_lower = {
            let root = self.inode(ROOT_INO)?;
            lock(&root.state).lower
        };
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let c = cname(comp)?;
            match up.lookup(fd.as_fd(), comp)? {
                LookupResult::Entry(e) => {
                    if kind_of(&e.st) != FileKind::Dir {
                        return Err(Error::NotDir);
                    }
                    cur_lower = self.merge_source(&e, cur_lower, comp);
                }
                LookupResult::Whiteout => return Err(Error::NotFound),
                LookupResult::Absent => {
                    let l = cur_lower
                        .and_then(|l| self.lower.child(l, comp))
                        .filter(|&l| self.lower.node(l).kind == FileKind::Dir)
                        .ok_or(Error::NotFound)?;
                    let ino = self.lower.ino(l);
                    self.copy_node_into(l, fd.as_fd(), comp, None)?;
                    if let Ok(inode) = self.inode(ino) {
                        lock(&inode.state).upper = true;
                    }
                    cur_lower = Some(l);
                }
            }
            fd = sys::openat(fd.as_fd(), &c, libc::O_PATH | libc::O_DIRECTORY, 0)
                .map_err(|e| bytes_err("open upper dir", path, e))?;
        }
        Ok((fd, cur_lower))
    }

    /// The upper directory of directory inode `ino` at `path`, copied up first if needed.
    /// The common case — already in the upper — costs one `openat2`.
    fn upper_dir_of(&self, ino: u64, path: &[u8]) -> Result<OwnedFd, Error> {
        let known_upper = self.inode(ino).is_ok_and(|i| lock(&i.state).upper);
        if known_upper {
            return self.upper()?.dir(path);
        }
        self.copy_up(ino)?;
        Ok(self.ensure_upper_dir(path)?.0)
    }

    /// Copies `ino` up (DESIGN rules 7–9): ancestors first, then the entry itself, built in
    /// the work dir and renamed into place. A member of a lower hard-link group brings every
    /// member that is still visible along, as hard links of one upper file.
    fn copy_up(&self, ino: u64) -> Result<(), Error> {
        let up = self.upper()?;
        let inode = self.inode(ino)?;
        {
            let st = lock(&inode.state);
            if st.upper && !st.metacopy {
                return Ok(());
            }
        }
        let mut prebuilt = lock(&inode.copy_lock);
        let (parent, name, lower) = {
            let st = lock(&inode.state);
            if st.upper && st.metacopy {
                let lower = st.lower;
                drop(st);
                return self.complete_metacopy(ino, lower, prebuilt.take());
            }
            if st.upper {
                return Ok(());
            }
            let (p, n) = self.first_alias(&st)?;
            (p, n, st.lower)
        };
        let ppath = self.path(parent)?;
        let (pfd, _) = self.ensure_upper_dir(&ppath)?;
        if let LookupResult::Entry(_) = up.lookup(pfd.as_fd(), &name)? {
            lock(&inode.state).upper = true;
            return Ok(());
        }
        let l = lower.ok_or(Error::NotFound)?;
        self.copy_node_into(l, pfd.as_fd(), &name, prebuilt.take())?;
        // Every other name of a lower hard-link group that still shows it becomes a hard
        // link of the copy (whichever name the kernel used to reach the inode).
        let group = self.link_groups.get(&self.lower.node(l).ino_node);
        for &member in group.into_iter().flatten() {
            if let Err(e) = self.link_group_member(member, pfd.as_fd(), &name) {
                log::debug!("hard link group member not linked: {e}");
            }
        }
        let mut st = lock(&inode.state);
        st.upper = true;
        if inode.kind != FileKind::Dir {
            st.lower = None;
        }
        Ok(())
    }

    /// Copies up only the metadata of a big lower regular file (chmod, chown, utimes,
    /// xattrs, rename): a sparse upper file of the same size, marked `rfs.metacopy`, whose
    /// reads still go to the lower data (kernel `metacopy=on`). Anything else, small files
    /// and hard-link group members get a full copy-up.
    fn copy_up_meta(&self, ino: u64) -> Result<(), Error> {
        let up = self.upper()?;
        let inode = self.inode(ino)?;
        let (parent, name, lower) = {
            let st = lock(&inode.state);
            if st.upper {
                return Ok(());
            }
            let (p, n) = self.first_alias(&st)?;
            (p, n, st.lower)
        };
        let Some(l) = lower else {
            return self.copy_up(ino);
        };
        let node = self.lower.node(l);
        let meta = node.meta();
        if inode.kind != FileKind::File || meta.size < METACOPY_MIN_SIZE || node.nlink > 1 {
            return self.copy_up(ino);
        }
        let _guard = lock(&inode.copy_lock);
        if lock(&inode.state).upper {
            return Ok(());
        }
        let ppath = self.path(parent)?;
        let (pfd, _) = self.ensure_upper_dir(&ppath)?;
        let path = self.lower.display_path(l);
        let tmp = up.tmp_name();
        let work = up.work();
        let built = (|| -> io::Result<()> {
            let out = sys::openat(
                work,
                &tmp,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o600,
            )?;
            sys::ftruncate(out.as_fd(), meta.size)?;
            drop(out);
            let xattrs = self
                .lower
                .xattrs(l)
                .map_err(|e| io::Error::other(e.to_string()))?;
            self.apply_meta(work, &tmp, l, &xattrs)?;
            let fd = sys::openat(work, &tmp, libc::O_PATH, 0)?;
            up.set_marker(fd.as_fd(), "rfs.metacopy", b"")?;
            // The marker is an xattr change: restore the times apply_meta set.
            let (atime, mtime) = self.copy_up_times(l);
            sys::utimensat(work, &tmp, atime, mtime)
        })();
        if let Err(e) = built {
            let _ = sys::unlinkat(work, &tmp, false);
            return Err(Error::io("metacopy", path, e));
        }
        let times = sys::fstatat(pfd.as_fd(), c"").ok();
        if let Err(e) = sys::renameat2(work, &tmp, pfd.as_fd(), &cname(&name)?, RENAME_NOREPLACE) {
            let _ = sys::unlinkat(work, &tmp, false);
            return Err(Error::io("metacopy rename", path, e));
        }
        restore_dir_times(pfd.as_fd(), times.as_ref());
        let mut st = lock(&inode.state);
        st.upper = true;
        st.metacopy = true;
        Ok(())
    }

    /// Turns a metadata-only copy into a full one: the lower data (copied into `prebuilt`
    /// ahead of time, or now) gets the upper entry's current owner, mode, xattrs and times,
    /// and replaces it atomically.
    fn complete_metacopy(
        &self,
        ino: u64,
        lower: Option<u32>,
        prebuilt: Option<CString>,
    ) -> Result<(), Error> {
        let up = self.upper()?;
        let inode = self.inode(ino)?;
        let path = self.path(ino)?;
        let (ppath, name) = split_last(&path);
        let pfd = up.dir(ppath)?;
        let c = cname(name)?;
        let work = up.work();
        let tmp = match prebuilt {
            Some(t) => t,
            None => {
                let t = up.tmp_name();
                match lower {
                    Some(l) => self.copy_data_to_work(l, &t)?,
                    None => {
                        // Lost origin: keep the (sparse) upper file as the data.
                        drop(
                            sys::openat(
                                work,
                                &t,
                                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                                0o600,
                            )
                            .map_err(|e| bytes_err("metacopy", &path, e))?,
                        );
                    }
                }
                t
            }
        };
        let res = (|| -> io::Result<()> {
            let st = sys::fstatat(pfd.as_fd(), &c)?;
            let cur = sys::openat(pfd.as_fd(), &c, libc::O_PATH, 0)?;
            let dst = sys::openat(work, &tmp, libc::O_PATH, 0)?;
            if up.privileged {
                sys::fchownat(work, &tmp, Some(st.st_uid), Some(st.st_gid))?;
            }
            sys::fchmodat(work, &tmp, st.st_mode & 0o7777)?;
            for x in sys::list_xattr(cur.as_fd())? {
                if x == b"trusted.rfs.metacopy" || x == b"user.rfs.metacopy" {
                    continue;
                }
                let xc = sys::cstr(&x)?;
                if let Some(v) = sys::get_xattr(cur.as_fd(), &xc)? {
                    set_xattr_tolerant(dst.as_fd(), &x, &v)?;
                }
            }
            sys::utimensat(
                work,
                &tmp,
                SetTime::At(st.st_atime, st.st_atime_nsec as u32),
                SetTime::At(st.st_mtime, st.st_mtime_nsec as u32),
            )?;
            sys::renameat2(work, &tmp, pfd.as_fd(), &c, 0)
        })();
        if let Err(e) = res {
            let _ = sys::unlinkat(work, &tmp, false);
            return Err(bytes_err("completing metacopy", &path, e));
        }
        let mut st = lock(&inode.state);
        st.metacopy = false;
        st.lower = None;
        Ok(())
    }

    /// Links the copied-up `src_dir/src_name` at the merged position of lower node `member`,
    /// if that position still shows `member`.
    fn link_group_member(
        &self,
        member: u32,
        src_dir: BorrowedFd<'_>,
        src_name: &[u8],
    ) -> Result<(), Error> {
        let up = self.upper()?;
        let mpath = self.lower.path(member);
        let (mparent, mname) = split_last(&mpath);
        let (mfd, mlower) = self.ensure_upper_dir(mparent)?;
        if mlower.and_then(|l| self.lower.child(l, mname)) != Some(member) {
            return Ok(());
        }
        if !matches!(up.lookup(mfd.as_fd(), mname)?, LookupResult::Absent) {
            return Ok(());
        }
        let times = sys::fstatat(mfd.as_fd(), c"").ok();
        sys::linkat(src_dir, &cname(src_name)?, mfd.as_fd(), &cname(mname)?)
            .map_err(|e| bytes_err("link upper", &mpath, e))?;
        restore_dir_times(mfd.as_fd(), times.as_ref());
        Ok(())
    }

    /// Copies the data of lower file `l` into a new work-dir file `tmp`, fsynced.
    fn copy_data_to_work(&self, l: u32, tmp: &std::ffi::CStr) -> Result<(), Error> {
        let up = self.upper()?;
        let node = self.lower.node(l);
        let path = self.lower.display_path(l);
        let out = sys::openat(
            up.work(),
            tmp,
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o600,
        )
        .map_err(|e| Error::io("copy-up create", path.clone(), e))?;
        let input = self.lower.open(l)?;
        let res = copy_data(&input, out.as_fd(), node.meta().size)
            .map_err(|e| Error::io("copy-up data", path.clone(), e))
            .and_then(|()| {
                sys::fsync(out.as_fd(), true).map_err(|e| Error::io("copy-up fsync", path, e))
            });
        if res.is_err() {
            let _ = sys::unlinkat(up.work(), tmp, false);
        }
        res
    }

    /// Copies the data of a lower regular file into the work dir before the caller takes the
    /// namespace lock, so a long copy (a 1 GiB file) never blocks other lookups; the copy-up
    /// that follows under the lock only sets metadata and renames. A no-op for anything
    /// already in the upper, directories, and read-only mounts.
    pub(crate) fn prepare_copy_up(&self, ino: u64) -> Result<(), Error> {
        if self.upper.is_none() {
            return Ok(());
        }
        let Ok(inode) = self.inode(ino) else {
            return Ok(());
        };
        if inode.kind != FileKind::File {
            return Ok(());
        }
        let mut prebuilt = lock(&inode.copy_lock);
        let lower = {
            let st = lock(&inode.state);
            if (st.upper && !st.metacopy) || prebuilt.is_some() {
                return Ok(());
            }
            st.lower
        };
        let Some(l) = lower else { return Ok(()) };
        let tmp = self.upper()?.tmp_name();
        self.copy_data_to_work(l, &tmp)?;
        *prebuilt = Some(tmp);
        Ok(())
    }

    /// Builds a copy of lower node `l` in the work dir and renames it to `name` in `dir`
    /// (never replacing: if someone else copied it meanwhile, theirs wins).
    fn copy_node_into(
        &self,
        l: u32,
        dir: BorrowedFd<'_>,
        name: &[u8],
        prebuilt: Option<CString>,
    ) -> Result<(), Error> {
        let up = self.upper()?;
        let node = self.lower.node(l);
        let have_data = prebuilt.is_some();
        let tmp = prebuilt.unwrap_or_else(|| up.tmp_name());
        let work = up.work();
        let path = self.lower.display_path(l);
        let ctx = |op: &'static str| {
            let path = path.clone();
            move |e: io::Error| Error::io(op, path, e)
        };
        let built = (|| -> Result<(), Error> {
            match node.kind {
                FileKind::File if have_data => {}
                FileKind::File => self.copy_data_to_work(l, &tmp)?,
                FileKind::Dir => sys::mkdirat(work, &tmp, 0o700).map_err(ctx("copy-up mkdir"))?,
                FileKind::Symlink => {
                    let target = sys::cstr(self.lower.link(l).unwrap_or_default())
                        .map_err(ctx("copy-up symlink"))?;
                    sys::symlinkat(&target, work, &tmp).map_err(ctx("copy-up symlink"))?;
                }
                kind => sys::mknodat(work, &tmp, kind.mode_bits() | 0o600, node.meta().rdev)
                    .map_err(ctx("copy-up mknod"))?,
            }
            let xattrs = self.lower.xattrs(l)?;
            self.apply_meta(work, &tmp, l, &xattrs)
                .map_err(ctx("copy-up metadata"))
        })();
        if let Err(e) = built {
            let _ = crate::upper::remove_tree(work, &tmp);
            return Err(e);
        }
        let c = cname(name)?;
        // A copy-up is not a change of the directory: keep its times (as the kernel does).
        let times = sys::fstatat(dir, c"").ok();
        match sys::renameat2(work, &tmp, dir, &c, RENAME_NOREPLACE) {
            Ok(()) => {
                restore_dir_times(dir, times.as_ref());
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let _ = crate::upper::remove_tree(work, &tmp);
                Ok(())
            }
            Err(e) => {
                let _ = crate::upper::remove_tree(work, &tmp);
                Err(Error::io("copy-up rename", path, e))
            }
        }
    }

    /// The atime and mtime a copy-up of lower node `l` gets: the lower entry's, as the
    /// kernel copies them.
    fn copy_up_times(&self, l: u32) -> (SetTime, SetTime) {
        let meta = self.lower.node(l).meta();
        let atime = self.lower.stat_extra(l).atime;
        (
            SetTime::At(atime.0, atime.1),
            SetTime::At(meta.mtime, meta.mtime_nsec),
        )
    }

    /// Sets lower node `l`'s owner, mode, `xattrs`, origin and times on a freshly built
    /// work-dir entry. Order matters: chown clears setuid bits and `security.capability`, so
    /// those come after it; times come last because the other steps may touch them.
    fn apply_meta(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        l: u32,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> io::Result<()> {
        let kind = self.lower.node(l).kind;
        let meta = self.lower.node(l).meta();
        let up = self
            .upper
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EROFS))?;
        let fd = sys::openat(dir, name, libc::O_PATH, 0)?;
        if up.privileged {
            sys::fchownat(dir, name, Some(meta.uid), Some(meta.gid))?;
        } else if kind != FileKind::Symlink
            && (meta.uid != sys::geteuid() || meta.gid != getegid() || meta.perm & 0o7000 != 0)
        {
            up.set_owner_override(fd.as_fd(), meta.uid, meta.gid, meta.perm)?;
        }
        if kind != FileKind::Symlink {
            let real = if up.privileged {
                meta.perm
            } else if kind == FileKind::Dir {
                meta.perm | 0o700
            } else {
                meta.perm | 0o600
            };
            sys::fchmodat(dir, name, real & 0o7777)?;
        }
        let mut caps = None;
        for (k, v) in xattrs {
            if is_private_xattr(k) {
                continue;
            }
            if k == b"security.capability" {
                caps = Some(v);
                continue;
            }
            set_xattr_tolerant(fd.as_fd(), k, v)?;
        }
        if let Some(v) = caps {
            set_xattr_tolerant(fd.as_fd(), b"security.capability", v)?;
        }
        let origin = self.lower.origin(l);
        up.set_marker(fd.as_fd(), "rfs.origin", origin.to_string().as_bytes())?;
        let (atime, mtime) = self.copy_up_times(l);
        sys::utimensat(dir, name, atime, mtime)
    }

    // ------------------------------------------------------------ changes

    /// Creates a new entry `name` in `parent` with `build` (which makes it under a given name
    /// in a given dir), replacing a whiteout there atomically and marking a directory made
    /// over a whiteout opaque (rule 12). Returns the new entry's attributes and, for
    /// `create`, the fd `build` returned.
    fn make_entry(
        &self,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        owner: Option<(Caller, u32)>,
        build: &dyn Fn(BorrowedFd<'_>, &std::ffi::CStr) -> io::Result<Option<OwnedFd>>,
    ) -> Result<(Attr, Option<OwnedFd>), Error> {
        let up = self.upper()?;
        let dir = self.dir_snap(parent)?;
        if self.resolve(&dir, name)?.is_some() {
            return Err(Error::Exists);
        }
        let pfd = self.upper_dir_of(parent, &dir.path)?;
        let pfd = pfd.as_fd();
        let c = cname(name)?;
        let full = join(&dir.path, name);
        let err = |op| {
            let full = full.clone();
            move |e| bytes_err(op, &full, e)
        };
        // Ownership as the kernel gives it: the caller's ids, or the parent's group under a
        // setgid directory (which a directory then inherits).
        // A hard link (`owner` None) keeps its inode's ownership.
        let owner = match owner {
            Some((caller, perm)) => {
                let pst = sys::fstatat(pfd, c"").map_err(err("stat parent"))?;
                let setgid_parent = pst.st_mode & libc::S_ISGID != 0;
                let gid = if setgid_parent {
                    pst.st_gid
                } else {
                    caller.gid
                };
                let perm = if setgid_parent && kind == FileKind::Dir {
                    perm | libc::S_ISGID
                } else {
                    perm
                };
                Some((caller.uid, gid, perm))
            }
            None => None,
        };
        let set_owner = |d: BorrowedFd<'_>, n: &std::ffi::CStr| -> io::Result<()> {
            match owner {
                Some((uid, gid, perm)) => self.set_new_owner(d, n, kind, uid, gid, perm),
                None => Ok(()),
            }
        };
        let over_whiteout = up.whiteout_at(pfd, name).map_err(err("stat"))?;
        let fd;
        if over_whiteout {
            let tmp = up.tmp_name();
            let work = up.work();
            let made = (|| -> io::Result<Option<OwnedFd>> {
                let fd = build(work, &tmp)?;
                set_owner(work, &tmp)?;
                if kind == FileKind::Dir {
                    let d = sys::openat(work, &tmp, libc::O_PATH, 0)?;
                    up.set_marker(d.as_fd(), "overlay.opaque", b"y")?;
                }
                Ok(fd)
            })();
            match made {
                Ok(f) => fd = f,
                Err(e) => {
                    let _ = crate::upper::remove_tree(work, &tmp);
                    return Err(bytes_err("create", &full, e));
                }
            }
            // Replacing the char-dev whiteout by rename is atomic; a directory cannot
            // replace a non-directory, so it goes in by exchange.
            let res = if kind == FileKind::Dir {
                sys::renameat2(work, &tmp, pfd, &c, RENAME_EXCHANGE)
                    .and_then(|()| sys::unlinkat(work, &tmp, false))
            } else {
                sys::renameat2(work, &tmp, pfd, &c, 0)
            };
            if let Err(e) = res {
                let _ = crate::upper::remove_tree(work, &tmp);
                return Err(bytes_err("create", &full, e));
            }
        } else {
            let wh_file_present = up.whiteouts == WhiteoutStyle::WhFile && {
                let mut wh = b".wh.".to_vec();
                wh.extend_from_slice(name);
                sys::fstatat_opt(pfd, &cname(&wh)?).ok().flatten().is_some()
            };
            fd = build(pfd, &c).map_err(err("create"))?;
            set_owner(pfd, &c).map_err(err("chown"))?;
            if wh_file_present {
                if kind == FileKind::Dir {
                    let d = sys::openat(pfd, &c, libc::O_PATH, 0).map_err(err("open"))?;
                    up.set_marker(d.as_fd(), "overlay.opaque", b"y")
                        .map_err(err("opaque"))?;
                }
                up.remove_wh_file(pfd, name)
                    .map_err(err("remove whiteout"))?;
            }
        }
        let st = sys::fstatat(pfd, &c).map_err(err("stat"))?;
        let e = up.entry_info(pfd, &c, st)?;
        let lower = if kind == FileKind::Dir {
            self.merge_source(&e, dir.lower, name)
        } else {
            None
        };
        let r = Resolved {
            ino: self.upper_ino(&e, lower),
            kind,
            lower,
            upper: Some(Box::new(e)),
        };
        self.remember(parent, name, &r, true);
        Ok((self.attr_of(&r), fd))
    }

    fn set_new_owner(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        kind: FileKind,
        uid: u32,
        gid: u32,
        perm: u32,
    ) -> io::Result<()> {
        let up = self
            .upper
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EROFS))?;
        if up.privileged {
            sys::fchownat(dir, name, Some(uid), Some(gid))?;
            if kind != FileKind::Symlink {
                sys::fchmodat(dir, name, perm & 0o7777)?;
            }
        } else if kind != FileKind::Symlink {
            if uid != sys::geteuid() || gid != getegid() {
                let fd = sys::openat(dir, name, libc::O_PATH, 0)?;
                up.set_owner_override(fd.as_fd(), uid, gid, perm)?;
            }
            let real = perm | if kind == FileKind::Dir { 0o700 } else { 0o600 };
            sys::fchmodat(dir, name, real & 0o7777)?;
        }
        Ok(())
    }

    /// Creates and opens a regular file.
    ///
    /// # Errors
    /// `Exists`, `ReadOnly`; host errors.
    pub fn create(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> Result<(Attr, u64), Error> {
        let name = check_component(name)?;
        let _ns = self.write_ns();
        let keep = libc::O_ACCMODE | libc::O_APPEND | libc::O_SYNC | libc::O_DSYNC;
        let oflags = (flags & keep) | libc::O_CREAT | libc::O_EXCL;
        let (attr, fd) = self.make_entry(
            parent,
            name,
            FileKind::File,
            Some((caller, mode & 0o7777)),
            &|d, n| sys::openat(d, n, oflags, 0o600).map(Some),
        )?;
        let fd = fd.ok_or(Error::BadHandle)?;
        Ok((attr, self.add_handle(Handle::Upper(File::from(fd)))))
    }

    /// Creates a directory.
    ///
    /// # Errors
    /// `Exists`, `ReadOnly`; host errors.
    pub fn mkdir(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        caller: Caller,
    ) -> Result<Attr, Error> {
        let name = check_component(name)?;
        let _ns = self.write_ns();
        self.make_entry(
            parent,
            name,
            FileKind::Dir,
            Some((caller, mode & 0o7777)),
            &|d, n| sys::mkdirat(d, n, 0o700).map(|()| None),
        )
        .map(|(a, _)| a)
    }

    /// Creates a device node, fifo or socket (or a regular file).
    ///
    /// # Errors
    /// `Exists`, `ReadOnly`; `EPERM` for devices without `CAP_MKNOD`; host errors.
    pub fn mknod(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        rdev: u64,
        caller: Caller,
    ) -> Result<Attr, Error> {
        let name = check_component(name)?;
        let kind = FileKind::from_mode(mode).ok_or(Error::Invalid("bad file type"))?;
        let _ns = self.write_ns();
        self.make_entry(
            parent,
            name,
            kind,
            Some((caller, mode & 0o7777)),
            &|d, n| sys::mknodat(d, n, kind.mode_bits() | 0o600, rdev).map(|()| None),
        )
        .map(|(a, _)| a)
    }

    /// Creates a symlink.
    ///
    /// # Errors
    /// `Exists`, `ReadOnly`; host errors.
    pub fn symlink(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        target: &[u8],
        caller: Caller,
    ) -> Result<Attr, Error> {
        let name = check_component(name)?;
        let target = sys::cstr(target).map_err(|e| bytes_err("symlink", target, e))?;
        let _ns = self.write_ns();
        self.make_entry(
            parent,
            name,
            FileKind::Symlink,
            Some((caller, 0o777)),
            &|d, n| sys::symlinkat(&target, d, n).map(|()| None),
        )
        .map(|(a, _)| a)
    }

    /// Removes a non-directory: the upper entry goes, and a whiteout hides a lower one
    /// (rule 11).
    ///
    /// # Errors
    /// `NotFound`, `IsDir`, `ReadOnly`; host errors.
    pub fn unlink(&self, parent: u64, name: &std::ffi::OsStr) -> Result<(), Error> {
        let name = check_component(name)?;
        let _ns = self.write_ns();
        self.remove(parent, name, false)
    }

    /// Removes an empty (in the merged view) directory.
    ///
    /// # Errors
    /// `NotFound`, `NotDir`, `NotEmpty`, `ReadOnly`; host errors.
    pub fn rmdir(&self, parent: u64, name: &std::ffi::OsStr) -> Result<(), Error> {
        let name = check_component(name)?;
        let _ns = self.write_ns();
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &[u8], is_dir: bool) -> Result<(), Error> {
        let up = self.upper()?;
        let dir = self.dir_snap(parent)?;
        let existing_pfd = if dir.upper {
            Some(up.dir(&dir.path)?)
        } else {
            None
        };
        let r = self
            .resolve_in(existing_pfd.as_ref().map(AsFd::as_fd), dir.lower, name)?
            .ok_or(Error::NotFound)?;
        match (is_dir, r.kind == FileKind::Dir) {
            (true, false) => return Err(Error::NotDir),
            (false, true) => return Err(Error::IsDir),
            _ => {}
        }
        if is_dir {
            self.remember(parent, name, &r, false);
            if !self.list(r.ino, false)?.is_empty() {
                return Err(Error::NotEmpty);
            }
        }
        let lower_below = dir.lower.and_then(|l| self.lower.child(l, name)).is_some();
        let full = join(&dir.path, name);
        if r.upper.is_none() && !lower_below {
            return Err(Error::NotFound);
        }
        let pfd = match existing_pfd {
            Some(fd) => fd,
            None => self.upper_dir_of(parent, &dir.path)?,
        };
        let pfd = pfd.as_fd();
        let c = cname(name)?;
        if r.upper.is_some() && is_dir {
            // Empty in the merged view, but it may hold whiteouts: clear them first.
            let sub = sys::openat(pfd, &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(|e| bytes_err("open", &full, e))?;
            for (n, _, _) in sys::read_dir(sub).map_err(|e| bytes_err("readdir", &full, e))? {
                let d = sys::openat(pfd, &c, libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(|e| bytes_err("open", &full, e))?;
                crate::upper::remove_tree(d.as_fd(), &cname(&n)?)
                    .map_err(|e| bytes_err("rmdir", &full, e))?;
            }
        }
        if lower_below {
            if r.upper.is_some() && is_dir {
                if up.whiteouts == WhiteoutStyle::CharDev {
                    let tmp = up.tmp_name();
                    sys::mknodat(up.work(), &tmp, libc::S_IFCHR, 0)
                        .map_err(|e| bytes_err("whiteout", &full, e))?;
                    sys::renameat2(up.work(), &tmp, pfd, &c, RENAME_EXCHANGE)
                        .map_err(|e| bytes_err("whiteout", &full, e))?;
                    sys::unlinkat(up.work(), &tmp, true)
                        .map_err(|e| bytes_err("rmdir", &full, e))?;
                } else {
                    sys::unlinkat(pfd, &c, true).map_err(|e| bytes_err("rmdir", &full, e))?;
                    up.make_whiteout(pfd, name)
                        .map_err(|e| bytes_err("whiteout", &full, e))?;
                }
            } else {
                up.make_whiteout(pfd, name)
                    .map_err(|e| bytes_err("whiteout", &full, e))?;
            }
        } else {
            sys::unlinkat(pfd, &c, is_dir).map_err(|e| bytes_err("unlink", &full, e))?;
        }
        self.forget_alias(r.ino, parent, name);
        Ok(())
    }

    /// Makes a hard link: copies the source up (with its lower hard-link group) first.
    ///
    /// # Errors
    /// `Exists`, `ReadOnly`, `EPERM` for directories; host errors.
    pub fn link(&self, ino: u64, newparent: u64, newname: &std::ffi::OsStr) -> Result<Attr, Error> {
        let newname = check_component(newname)?;
        self.prepare_copy_up(ino)?;
        let _ns = self.write_ns();
        let inode = self.inode(ino)?;
        if inode.kind == FileKind::Dir {
            return Err(Error::NotPermitted);
        }
        self.copy_up(ino)?;
        let src_path = self.path(ino)?;
        let (sp, sn) = split_last(&src_path);
        let up = self.upper()?;
        let sfd = up.dir(sp)?;
        let sname = cname(sn)?;
        let (attr, _) = self.make_entry(newparent, newname, inode.kind, None, &|d, n| {
            sys::linkat(sfd.as_fd(), &sname, d, n)?;
            Ok(None)
        })?;
        Ok(attr)
    }

    /// Renames, with `RENAME_NOREPLACE` and `RENAME_EXCHANGE` support. Lower and merged
    /// directories are moved by copying up the directory itself and recording where its
    /// lower part lives (`overlay.redirect`), so every child stays (rule 13).
    ///
    /// # Errors
    /// `NotFound`, `Exists`, `NotEmpty`, `IsDir`, `NotDir`, `ReadOnly`; host errors.
    pub fn rename(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        newparent: u64,
        newname: &std::ffi::OsStr,
        flags: u32,
    ) -> Result<(), Error> {
        let name = check_component(name)?;
        let newname = check_component(newname)?;
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags & RENAME_NOREPLACE != 0 && flags & RENAME_EXCHANGE != 0
        {
            return Err(Error::Invalid("rename flags"));
        }
        let _ns = self.write_ns();
        let up = self.upper()?;
        let sdir = self.dir_snap(parent)?;
        let ddir = self.dir_snap(newparent)?;
        let src = self.resolve(&sdir, name)?.ok_or(Error::NotFound)?;
        let dst = self.resolve(&ddir, newname)?;
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(Error::NotFound)?;
            return self.exchange(parent, name, &sdir, &src, newparent, newname, &ddir, &dst);
        }
        if let Some(d) = &dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(Error::Exists);
            }
            if d.ino == src.ino {
                return Ok(());
            }
            if src.kind == FileKind::Dir {
                if d.kind != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                self.remember(newparent, newname, d, false);
                if !self.list(d.ino, false)?.is_empty() {
                    return Err(Error::NotEmpty);
                }
            } else if d.kind == FileKind::Dir {
                return Err(Error::IsDir);
            }
        }
        self.remember(parent, name, &src, false);
        self.copy_up_meta(src.ino)?;
        let sfd = self.upper_dir_of(parent, &sdir.path)?;
        let dfd = self.upper_dir_of(newparent, &ddir.path)?;
        let sc = cname(name)?;
        let dc = cname(newname)?;
        let full = join(&sdir.path, name);
        let err = |op| {
            let full = full.clone();
            move |e| bytes_err(op, &full, e)
        };
        if src.kind == FileKind::Dir {
            self.mark_moved_dir(sfd.as_fd(), &sc, &src, ddir.lower, newname)?;
        }
        // Clear what sits in the upper at the destination: whiteouts inside an (empty)
        // directory, or a whiteout a directory cannot replace by rename.
        match up.lookup(dfd.as_fd(), newname)? {
            LookupResult::Entry(e) if kind_of(&e.st) == FileKind::Dir => {
                let sub = sys::openat(dfd.as_fd(), &dc, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(err("open"))?;
                let inner = sys::openat(dfd.as_fd(), &dc, libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(err("open"))?;
                for (n, _, _) in sys::read_dir(sub).map_err(err("readdir"))? {
                    crate::upper::remove_tree(inner.as_fd(), &cname(&n)?).map_err(err("rename"))?;
                }
            }
            // A `.wh.` file style whiteout is not at `newname` itself; nothing to clear.
            LookupResult::Whiteout
                if src.kind == FileKind::Dir
                    && up.whiteout_at(dfd.as_fd(), newname).map_err(err("stat"))? =>
            {
                sys::unlinkat(dfd.as_fd(), &dc, false).map_err(err("rename"))?;
            }
            _ => {}
        }
        let lower_below = sdir.lower.and_then(|l| self.lower.child(l, name)).is_some();
        up.rename(sfd.as_fd(), name, dfd.as_fd(), newname, lower_below)
            .map_err(err("rename"))?;
        if let Some(d) = &dst {
            self.forget_alias(d.ino, newparent, newname);
        }
        self.move_alias(src.ino, (parent, name), (newparent, newname));
        Ok(())
    }

    /// Before a directory moves: a directory with a lower part records where that part is
    /// (redirect); a pure upper directory landing where a lower directory shows through is
    /// made opaque so nothing leaks into it.
    fn mark_moved_dir(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        src: &Resolved,
        dest_parent_lower: Option<u32>,
        dest_name: &[u8],
    ) -> Result<(), Error> {
        let up = self.upper()?;
        let fd = sys::openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| bytes_err("open", name.to_bytes(), e))?;
        let res = match src.lower {
            Some(l) => {
                let mut target = b"/".to_vec();
                target.extend_from_slice(&self.lower.path(l));
                up.set_marker(fd.as_fd(), "overlay.redirect", &target)
            }
            None => {
                if dest_parent_lower
                    .and_then(|l| self.lower.child(l, dest_name))
                    .is_some()
                {
                    up.set_marker(fd.as_fd(), "overlay.opaque", b"y")
                } else {
                    Ok(())
                }
            }
        };
        res.map_err(|e| bytes_err("set redirect", name.to_bytes(), e))
    }

    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &self,
        parent: u64,
        name: &[u8],
        sdir: &DirSnap,
        src: &Resolved,
        newparent: u64,
        newname: &[u8],
        ddir: &DirSnap,
        dst: &Resolved,
    ) -> Result<(), Error> {
        self.remember(parent, name, src, false);
        self.remember(newparent, newname, dst, false);
        self.copy_up(src.ino)?;
        self.copy_up(dst.ino)?;
        let sfd = self.upper_dir_of(parent, &sdir.path)?;
        let dfd = self.upper_dir_of(newparent, &ddir.path)?;
        let sc = cname(name)?;
        let dc = cname(newname)?;
        if src.kind == FileKind::Dir {
            self.mark_moved_dir(sfd.as_fd(), &sc, src, ddir.lower, newname)?;
        }
        if dst.kind == FileKind::Dir {
            self.mark_moved_dir(dfd.as_fd(), &dc, dst, sdir.lower, name)?;
        }
        sys::renameat2(sfd.as_fd(), &sc, dfd.as_fd(), &dc, RENAME_EXCHANGE)
            .map_err(|e| bytes_err("rename exchange", name, e))?;
        self.move_alias(src.ino, (parent, name), (newparent, newname));
        self.move_alias(dst.ino, (newparent, newname), (parent, name));
        Ok(())
    }

    // ------------------------------------------------------------ xattrs, statfs

    /// Filesystem statistics: those of the upper (or of a lower layer when read-only).
    ///
    /// # Errors
    /// Host errors.
    pub fn statfs(&self) -> Result<libc::statvfs, Error> {
        match &self.upper {
            Some(up) => sys::fstatvfs(up.root()).map_err(|e| Error::io("statfs", "upper", e)),
            None => {
                let f = File::open("/").map_err(|e| Error::io("statfs", "/", e))?;
                sys::fstatvfs(f.as_fd()).map_err(|e| Error::io("statfs", "/", e))
            }
        }
    }
}

/// Puts back a directory's atime and mtime as `before` had them.
fn restore_dir_times(dir: BorrowedFd<'_>, before: Option<&sys::Stat>) {
    if let Some(st) = before {
        let _ = sys::utimensat(
            dir,
            c"",
            SetTime::At(st.st_atime, st.st_atime_nsec as u32),
            SetTime::At(st.st_mtime, st.st_mtime_nsec as u32),
        );
    }
}

fn getegid() -> u32 {
    nix::unistd::getegid().as_raw()
}

fn set_xattr_tolerant(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = sys::cstr(name)?;
    match sys::set_xattr(fd, &c, value, 0) {
        // trusted.* without CAP_SYS_ADMIN, or a filesystem without that namespace.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP)) => {
            log::debug!(
                "copy-up: xattr {} not kept: {e}",
                String::from_utf8_lossy(name)
            );
            Ok(())
        }
        r => r,
    }
}

/// Copies `size` bytes of a lower file into `out`, keeping holes: a directory-layer file is
/// copied extent by extent (`SEEK_DATA`/`SEEK_HOLE`), and all-zero chunks are skipped, so
/// a sparse file stays sparse. Data moves with `copy_file_range` where the kernel can (same
/// filesystem, reflinks), else with `pread`/`pwrite`.
fn copy_data(input: &LowerFile, out: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    match input {
        LowerFile::Tar { file, start, .. } => copy_range(file.as_fd(), *start, out, 0, size)?,
        LowerFile::Dir(fd) => {
            let fd = fd.as_fd();
            let mut pos = 0u64;
            while pos < size {
                let data = match sys::lseek(fd, pos as i64, libc::SEEK_DATA) {
                    Ok(d) => d as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
                    // No SEEK_DATA support: copy the rest as one range.
                    Err(_) => pos,
                };
                if data >= size {
                    break;
                }
                let hole = match sys::lseek(fd, data as i64, libc::SEEK_HOLE) {
                    Ok(h) => (h as u64).min(size),
                    Err(_) => size,
                };
                copy_range(fd, data, out, data, hole - data)?;
                pos = hole;
            }
        }
    }
    // Trailing holes (and all-hole files) still need the full length.
    sys::ftruncate(out, size)
}

/// How much a copy-up copies before it starts writing that part back.
const COPY_CHUNK: u64 = 8 << 20;

/// Copies `len` bytes from `input` at `in_off` to `out` at `out_off`.
fn copy_range(
    input: BorrowedFd<'_>,
    in_off: u64,
    out: BorrowedFd<'_>,
    out_off: u64,
    len: u64,
) -> io::Result<()> {
    let mut done = 0u64;
    let mut use_cfr = true;
    let mut buf = Vec::new();
    while done < len {
        if use_cfr {
            let chunk = (len - done).min(COPY_CHUNK) as usize;
            match sys::copy_file_range(input, in_off + done, out, out_off + done, chunk) {
                Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
                Ok(n) => {
                    // Write the chunk back while the next one is copied, so the fsync that
                    // ends the copy-up has little left to wait for. Only a hint.
                    let _ = sys::start_writeback(out, out_off + done, n as u64);
                    done += n as u64;
                    continue;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
                    ) =>
                {
                    use_cfr = false;
                }
                Err(e) => return Err(e),
            }
        }
        if buf.is_empty() {
            buf = vec![0u8; 1 << 20];
        }
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = sys::pread_full(input, &mut buf[..want], in_off + done)?;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if !buf[..n].iter().all(|&b| b == 0) {
            let mut w = 0;
            while w < n {
                w += sys::pwrite(out, &buf[w..n], out_off + done + w as u64)?;
            }
        }
        done += n as u64;
    }
    Ok(())
}

/// Splits `a/b/c` into (`a/b`, `c`) and `c` into (``, `c`).
fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    }
}
