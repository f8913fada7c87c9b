//! The lower stack, flattened once into one immutable merged tree.
//!
//! Layers are read-only and never change while mounted, so whiteouts and opaque markers are
//! applied once, at mount time, exactly as extracting the layers bottom to top would (DESIGN
//! rules 1–5). The result is a [`LowerTree`]: a vector of nodes numbered breadth-first, so the
//! children of a directory are one contiguous, name-sorted range, a lookup is one binary
//! search, and node numbers (hence inode numbers) are the same at every mount of the same
//! layers.
//!
//! Two layer kinds feed it: a tar layer ([`TarIndex`] + the file holding the tar, served with
//! `pread` at member offsets) and a host directory (walked with `openat`/`O_NOFOLLOW`; data and
//! xattrs are read on demand through `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Error;
pub use crate::host_stat::StatExtra;
use crate::host_stat::{DEFAULT_BLKSIZE, HostExtra, HostStats, Implied};
use crate::ovl::{
    self, NameRole, OPAQUE_MARKER, is_opaque_xattr, is_whiteout_stat, is_xattr_whiteout,
};
use crate::sys;
use crate::tar_index::{EntryKind, TarIndex};

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
type TarXattrs = Box<[(Box<str>, Box<[u8]>)]>;

/// Where a node's data and xattrs come from (while building).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// Tar member data at this absolute offset of the layer file; xattrs from the tar.
    Tar { data: u64, xattrs: TarXattrs },
    /// A host directory layer: the node's tree path is its path in the layer.
    Dir,
    /// A directory implied by a deeper member, with no entry of its own.
    Implicit,
}

/// [`Source`] without its payload, as a frozen node keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SourceTag {
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
    name_at: u32,
    name_len: u32,
    /// The parent node (the root is its own parent).
    pub parent: u32,
    /// Node whose number is this node's inode number (itself, or the first of a hard-link
    /// group).
    pub ino_node: u32,
    /// A non-directory's hard-link count within the merged tree; a directory's `st_nlink`:
    /// from a directory layer, its host's, or 1 where it merges several layers (as kernel
    /// overlayfs reports it); else 2 + its subdirectories.
    pub nlink: u32,
    uid: u32,
    gid: u32,
    mtime_nsec: u32,
    /// Permission bits including setuid/setgid/sticky.
    perm: u16,
    /// The layer that supplies this node (index into the bottom-to-top layer list).
    pub layer: u16,
    /// File type.
    pub kind: FileKind,
    source: SourceTag,
    mtime: i64,
    size: u64,
    /// By kind: a directory's children (`start | len << 32`), a symlink's target in the
    /// name buffer (`at | len << 32`), a device's rdev, a tar file's data offset.
    extra: u64,
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
    fn extra_range(&self) -> (u32, u32) {
        (self.extra as u32, (self.extra >> 32) as u32)
    }
}

impl Layer {
    fn blksize(&self) -> u32 {
        match self {
            Layer::Tar { .. } => DEFAULT_BLKSIZE,
            Layer::Dir { blksize, .. } => *blksize,
        }
    }
}

fn pack_range(start: u32, len: u32) -> u64 {
    u64::from(start) | (u64::from(len) << 32)
}

/// One read-only layer.
#[derive(Debug)]
enum Layer {
    Tar {
        file: Arc<File>,
        name: Arc<str>,
    },
    /// `blksize` is the root's `st_blksize`, which its entries are assumed to share.
    Dir {
        root: OwnedFd,
        name: String,
        blksize: u32,
    },
}

/// A layer given to [`LowerTree::build`], bottom first.
#[derive(Clone, Debug)]
pub enum LayerInput {
    /// An uncompressed tar stored at `offset .. offset + len` of `file`, already indexed.
    Tar {
        /// The file holding the tar.
        file: PathBuf,
        /// Where the tar starts in it.
        offset: u64,
        /// The members.
        index: TarIndex,
    },
    /// A host directory (fuse-overlayfs `lowerdir=` style, kernel whiteout formats).
    Dir(PathBuf),
}

/// The flattened, immutable lower stack.
#[derive(Debug)]
pub struct LowerTree {
    nodes: Vec<LowerNode>,
    /// Every node's name and every symlink's target, back to back: one allocation instead
    /// of one per node, so the tree's memory is compact and the build's garbage can be
    /// returned to the kernel.
    names: Vec<u8>,
    /// The xattrs of tar members that have any, by node.
    tar_xattrs: HashMap<u32, TarXattrs>,
    /// The entries' own inode numbers, when the layers allow them (see [`HostInos`]).
    host_inos: Option<Box<HostInos>>,
    /// The host's times and block counts of directory-layer entries, when there are any.
    host_stats: Option<Box<HostStats>>,
    layers: Vec<Layer>,
}

/// Inode numbers taken from the host, as kernel overlayfs reports them when all its layers
/// are on one filesystem: a lower entry's `st_ino` is its `st_ino` in its layer. Tools that
/// cache inode numbers (git's index, backup and sync tools) then see the same files through
/// rfs as on the host. Used when every layer is a directory on one filesystem and the
/// numbers are usable: unique per inode, not the root's 1, below the upper-entry bit.
/// Otherwise nodes are numbered (node + 1). Costs 12 bytes per node.
#[derive(Debug)]
struct HostInos {
    /// The host `st_ino` of each node (the root's is not used: it is always 1).
    by_node: Vec<u64>,
    /// The inode-leader nodes (see [`LowerNode::ino_node`]) sorted by host `st_ino`.
    leaders_by_ino: Vec<u32>,
}

impl HostInos {
    fn new(nodes: &[LowerNode], mut by_node: Vec<u64>) -> Option<Box<HostInos>> {
        let mut leaders_by_ino: Vec<u32> = (1..nodes.len() as u32)
            .filter(|&i| nodes[i as usize].ino_node == i)
            .collect();
        leaders_by_ino.sort_unstable_by_key(|&i| by_node[i as usize]);
        let usable = leaders_by_ino
            .windows(2)
            .all(|w| by_node[w[0] as usize] != by_node[w[1] as usize])
            && leaders_by_ino.iter().all(|&i| {
                let ino = by_node[i as usize];
                ino > ROOT_INO && ino < UPPER_INO_BIT
            });
        if !usable {
            log::info!("lower inode numbers are not unique on the host: numbering them instead");
            return None;
        }
        by_node.shrink_to_fit();
        leaders_by_ino.shrink_to_fit();
        Some(Box::new(HostInos {
            by_node,
            leaders_by_ino,
        }))
    }
}

/// An open lower file for reading.
#[derive(Debug)]
pub enum LowerFile {
    /// Member data of a tar layer.
    Tar {
        /// The layer file.
        file: Arc<File>,
        /// Absolute offset of the data.
        start: u64,
        /// Data length.
        size: u64,
        /// The layer file's name, for messages.
        layer: Arc<str>,
    },
    /// A file of a directory layer.
    Dir(OwnedFd),
}

impl LowerFile {
    /// Reads up to `buf.len()` bytes at `offset`; short only at end of file.
    ///
    /// # Errors
    /// The kernel's error from `pread`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            LowerFile::Tar {
                file,
                start,
                size,
                layer,
            } => {
                if offset >= *size {
                    return Ok(0);
                }
                let want = buf.len().min((size - offset) as usize);
                let got = sys::pread_full(file.as_fd(), &mut buf[..want], start + offset)?;
                if got < want {
                    // The member's data was there when the layer was indexed: the layer file
                    // has been truncated or replaced since. Never serve a silently short file.
                    log::error!(
                        "layer {layer}: wanted {want} bytes at offset {}, got {got}: the \
                         layer file was truncated after it was indexed",
                        start + offset
                    );
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                Ok(got)
            }
            LowerFile::Dir(fd) => sys::pread_full(fd.as_fd(), buf, offset),
        }
    }
}

// ---------------------------------------------------------------- building

struct BuildNode {
    name: Vec<u8>,
    kind: FileKind,
    meta: Meta,
    layer: u16,
    source: Source,
    link: Option<Box<[u8]>>,
    /// Hard-link group key: nodes with equal keys are one inode.
    group: usize,
    /// `st_ino` in its directory layer (0 for tar members and implied directories).
    host_ino: u64,
    /// The rest of its host stat, for an entry of a directory layer.
    host: Option<HostExtra>,
    /// A directory that more than one layer supplies (not cut off by an opaque one): kernel
    /// overlayfs reports nlink 1 for it.
    merged: bool,
    children: BTreeMap<Vec<u8>, usize>,
}

struct Builder {
    arena: Vec<BuildNode>,
    /// The device of every directory layer entry so far, while they are all on one
    /// filesystem and no tar layer was applied: the condition for [`HostInos`].
    host_dev: Option<u64>,
    host_inos_possible: bool,
    /// Whether a directory layer was applied (so [`HostStats`] are kept).
    dir_layers: bool,
}

fn implicit_dir_meta() -> Meta {
    Meta {
        perm: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 0,
        mtime_nsec: 0,
        rdev: 0,
    }
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

impl Builder {
    fn new() -> Self {
        let root = BuildNode {
            name: Vec::new(),
            kind: FileKind::Dir,
            meta: implicit_dir_meta(),
            layer: 0,
            source: Source::Implicit,
            link: None,
            group: 0,
            host_ino: 0,
            host: None,
            merged: false,
            children: BTreeMap::new(),
        };
        Builder {
            arena: vec![root],
            host_dev: None,
            host_inos_possible: true,
            dir_layers: false,
        }
    }

    fn push(&mut self, mut node: BuildNode) -> usize {
        let id = self.arena.len();
        if node.group == usize::MAX {
            node.group = id;
        }
        self.arena.push(node);
        id
    }

    /// The node at `path`, if it exists now.
    fn find(&self, path: &str) -> Option<usize> {
        let mut cur = 0;
        for c in components(path) {
            if self.arena[cur].kind != FileKind::Dir {
                return None;
            }
            cur = *self.arena[cur].children.get(c.as_bytes())?;
        }
        Some(cur)
    }

    /// The directory at `path`, created (as implicit dirs) where missing or not a directory.
    /// A symlink on the way is an error: a member must never be placed through a symlink
    /// (`a -> /` then `a/etc/passwd` would write outside the layer when extracted).
    fn ensure_dir(&mut self, path: &str, layer: u16, member: &str) -> Result<usize, String> {
        let mut cur = 0;
        let mut walked = String::new();
        for c in components(path) {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(c);
            let existing = self.arena[cur].children.get(c.as_bytes()).copied();
            cur = match existing {
                Some(id) if self.arena[id].kind == FileKind::Dir => {
                    // Extracted, this layer has the directory too.
                    self.arena[id].merged = true;
                    id
                }
                Some(id) if self.arena[id].kind == FileKind::Symlink => {
                    return Err(format!(
                        "member {member:?} lies beyond the symlink {walked:?}"
                    ));
                }
                _ => {
                    let id = self.push(BuildNode {
                        name: c.as_bytes().to_vec(),
                        kind: FileKind::Dir,
                        meta: implicit_dir_meta(),
                        layer,
                        source: Source::Implicit,
                        link: None,
                        group: usize::MAX,
                        host_ino: 0,
                        host: None,
                        merged: false,
                        children: BTreeMap::new(),
                    });
                    self.arena[cur].children.insert(c.as_bytes().to_vec(), id);
                    id
                }
            };
        }
        Ok(cur)
    }

    /// Notes the device of a directory layer entry (see `host_dev`).
    fn note_dev(&mut self, dev: u64) {
        match self.host_dev {
            None => self.host_dev = Some(dev),
            Some(d) if d != dev => self.host_inos_possible = false,
            Some(_) => {}
        }
    }

    /// Puts `node` at `name` in `dir`: a directory over a directory keeps the children and
    /// takes the new metadata; anything else replaces what was there.
    fn place(&mut self, dir: usize, node: BuildNode) -> usize {
        if let Some(&old) = self.arena[dir].children.get(&node.name)
            && self.arena[old].kind == FileKind::Dir
            && node.kind == FileKind::Dir
        {
            let o = &mut self.arena[old];
            o.meta = node.meta;
            o.layer = node.layer;
            o.source = node.source;
            o.host_ino = node.host_ino;
            o.host = node.host;
            o.merged = true;
            return old;
        }
        let name = node.name.clone();
        let id = self.push(node);
        self.arena[dir].children.insert(name, id);
        id
    }

    fn apply_tar(&mut self, layer: u16, base: u64, index: &TarIndex) -> Result<(), String> {
        self.host_inos_possible = false;
        // Rule 5: an opaque marker applies before the layer's own entries, wherever it stands;
        // whiteouts apply only to the layers below, so both go first.
        for e in &index.entries {
            let (parent, last) = split_parent(&e.path);
            if last.as_bytes() == OPAQUE_MARKER
                && let Some(d) = self.find(parent)
                && self.arena[d].kind == FileKind::Dir
            {
                self.arena[d].children.clear();
            }
        }
        for e in &index.entries {
            let (parent, last) = split_parent(&e.path);
            let hidden = match ovl::name_role(last.as_bytes()) {
                NameRole::Whiteout(hidden) => hidden,
                NameRole::Meta if last.len() == ovl::WHITEOUT_PREFIX.len() => {
                    return Err(format!("bare whiteout {:?}", e.path));
                }
                // The opaque marker (above) and aufs meta names.
                _ => continue,
            };
            if let Some(d) = self.find(parent)
                && self.arena[d].kind == FileKind::Dir
            {
                self.arena[d].children.remove(hidden);
            }
        }
        // Nodes made from this layer's members, for hard links.
        let mut by_path: HashMap<&str, usize> = HashMap::new();
        for e in &index.entries {
            let (parent, last) = split_parent(&e.path);
            if ovl::name_role(last.as_bytes()) != NameRole::Entry {
                continue;
            }
            let meta = Meta {
                perm: e.mode & 0o7777,
                uid: e.uid,
                gid: e.gid,
                size: if e.kind == EntryKind::File { e.size } else { 0 },
                mtime: e.mtime,
                mtime_nsec: e.mtime_nsec,
                rdev: libc::makedev(e.rdev_major, e.rdev_minor),
            };
            let xattrs: TarXattrs = e
                .xattrs
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_slice().into()))
                .collect();
            if e.path.is_empty() {
                let root = &mut self.arena[0];
                root.meta = meta;
                root.layer = layer;
                root.source = Source::Tar { data: 0, xattrs };
                root.host = None;
                root.merged = layer > 0;
                continue;
            }
            let dir = self.ensure_dir(parent, layer, &e.path)?;
            let node = match e.kind {
                EntryKind::HardLink => {
                    let target = std::str::from_utf8(&e.link_target).unwrap_or("");
                    let Some(&t) = by_path.get(target) else {
                        return Err(format!(
                            "hard link {:?} to {target:?}, which is not an earlier member",
                            e.path
                        ));
                    };
                    let t = &self.arena[t];
                    if t.kind == FileKind::Dir {
                        return Err(format!("hard link {:?} to a directory", e.path));
                    }
                    BuildNode {
                        name: last.as_bytes().to_vec(),
                        kind: t.kind,
                        meta: t.meta,
                        layer,
                        source: t.source.clone(),
                        link: t.link.clone(),
                        group: t.group,
                        host_ino: 0,
                        host: None,
                        merged: false,
                        children: BTreeMap::new(),
                    }
                }
                kind => {
                    let kind = match kind {
                        EntryKind::File => FileKind::File,
                        EntryKind::Dir => FileKind::Dir,
                        EntryKind::Symlink => FileKind::Symlink,
                        EntryKind::CharDev => FileKind::CharDev,
                        EntryKind::BlockDev => FileKind::BlockDev,
                        EntryKind::Fifo => FileKind::Fifo,
                        EntryKind::HardLink => unreachable!("handled above"),
                    };
                    BuildNode {
                        name: last.as_bytes().to_vec(),
                        kind,
                        meta,
                        layer,
                        source: Source::Tar {
                            data: base + e.data_offset,
                            xattrs,
                        },
                        link: (kind == FileKind::Symlink)
                            .then(|| e.link_target.clone().into_boxed_slice()),
                        group: usize::MAX,
                        host_ino: 0,
                        host: None,
                        merged: false,
                        children: BTreeMap::new(),
                    }
                }
            };
            let id = self.place(dir, node);
            by_path.insert(e.path.as_str(), id);
        }
        Ok(())
    }

    /// Applies the directory layer `root`; returns its `st_blksize`.
    fn apply_dir(&mut self, layer: u16, root: BorrowedFd<'_>) -> io::Result<u32> {
        let mut groups: HashMap<(u64, u64), usize> = HashMap::new();
        let st = sys::fstatat(root, c"")?;
        self.note_dev(st.st_dev);
        self.dir_layers = true;
        let node = &mut self.arena[0];
        node.meta = meta_from_stat(&st);
        node.layer = layer;
        node.source = Source::Dir;
        node.host = Some(HostExtra::from_stat(&st));
        // Every layer has a root directory.
        node.merged = layer > 0;
        let fd = sys::openat_beneath(root, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        self.apply_dir_at(layer, fd, 0, &mut groups)?;
        Ok(st.st_blksize as u32)
    }

    fn apply_dir_at(
        &mut self,
        layer: u16,
        dirfd: OwnedFd,
        node: usize,
        groups: &mut HashMap<(u64, u64), usize>,
    ) -> io::Result<()> {
        let listing_fd = sys::openat(dirfd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let entries = sys::read_dir(listing_fd)?;
        // Listing the directory moved its atime on the host (relatime: once, then it stays
        // until the directory changes or a day passes): report the one the kernel will show.
        let listed = sys::fstatat(dirfd.as_fd(), c"")?;
        if let Some(h) = &mut self.arena[node].host {
            h.atime = (listed.st_atime, listed.st_atime_nsec as u32);
        }
        let opaque =
            entries.iter().any(|(n, _, _)| n == OPAQUE_MARKER) || is_opaque_xattr(dirfd.as_fd())?;
        if opaque {
            self.arena[node].children.clear();
            self.arena[node].merged = false;
        }
        let mut stats = Vec::with_capacity(entries.len());
        for (name, d_type, _) in entries {
            match ovl::name_role(&name) {
                NameRole::OpaqueMarker | NameRole::Meta => continue,
                NameRole::Whiteout(hidden) => {
                    self.arena[node].children.remove(hidden);
                    continue;
                }
                NameRole::Entry => {}
            }
            let c = sys::cstr(&name)?;
            let st = match sys::fstatat_opt(dirfd.as_fd(), &c)? {
                Some(st) => st,
                None => continue,
            };
            let _ = d_type;
            if is_whiteout_stat(&st)
                || (ovl::may_be_xattr_whiteout(&st) && {
                    let f = sys::openat(dirfd.as_fd(), &c, libc::O_PATH, 0)?;
                    is_xattr_whiteout(f.as_fd())?
                })
            {
                self.arena[node].children.remove(name.as_slice());
                continue;
            }
            self.note_dev(st.st_dev);
            stats.push((name, c, st));
        }
        for (name, c, mut st) in stats {
            let kind = FileKind::from_mode(st.st_mode).unwrap_or(FileKind::File);
            let link = if kind == FileKind::Symlink {
                let target = sys::readlinkat(dirfd.as_fd(), &c)?.into_boxed_slice();
                // Reading the link moved its atime, as listing a directory does (above).
                if let Some(again) = sys::fstatat_opt(dirfd.as_fd(), &c)? {
                    st.st_atime = again.st_atime;
                    st.st_atime_nsec = again.st_atime_nsec;
                }
                Some(target)
            } else {
                None
            };
            let group = if kind != FileKind::Dir && st.st_nlink > 1 {
                let next = self.arena.len();
                *groups.entry((st.st_dev, st.st_ino)).or_insert(next)
            } else {
                usize::MAX
            };
            let id = self.place(
                node,
                BuildNode {
                    name,
                    kind,
                    meta: meta_from_stat(&st),
                    layer,
                    source: Source::Dir,
                    link,
                    group,
                    host_ino: st.st_ino,
                    host: Some(HostExtra::from_stat(&st)),
                    merged: false,
                    children: BTreeMap::new(),
                },
            );
            if kind == FileKind::Dir {
                let sub = sys::openat(dirfd.as_fd(), &c, libc::O_PATH | libc::O_DIRECTORY, 0)?;
                self.apply_dir_at(layer, sub, id, groups)?;
            }
        }
        Ok(())
    }

    /// Numbers the reachable nodes breadth-first (children of a directory contiguous and
    /// sorted by name) and resolves hard-link groups.
    fn freeze(self, layers: Vec<Layer>) -> LowerTree {
        let mut arena: Vec<Option<BuildNode>> = self.arena.into_iter().map(Some).collect();
        let mut nodes: Vec<LowerNode> = Vec::with_capacity(arena.len());
        let mut names: Vec<u8> = Vec::new();
        let mut queue: std::collections::VecDeque<(usize, u32)> = Default::default();
        let mut group_first: HashMap<usize, u32> = HashMap::new();
        let mut group_count: HashMap<usize, u32> = HashMap::new();
        let mut groups: Vec<usize> = Vec::new();
        let mut tar_xattrs = HashMap::new();
        let mut host_ino: Vec<u64> = Vec::with_capacity(if self.host_inos_possible {
            arena.len()
        } else {
            0
        });
        let mut host_stats = self.dir_layers.then(Box::<HostStats>::default);
        let blksizes: Vec<u32> = layers.iter().map(Layer::blksize).collect();
        queue.push_back((0, 0));
        while let Some((aid, parent)) = queue.pop_front() {
            let Some(b) = arena[aid].take() else { continue };
            let idx = nodes.len() as u32;
            let ino_node = *group_first.entry(b.group).or_insert(idx);
            *group_count.entry(b.group).or_insert(0) += 1;
            groups.push(b.group);
            let name_at = u32::try_from(names.len()).unwrap_or(u32::MAX);
            names.extend_from_slice(&b.name);
            if self.host_inos_possible {
                host_ino.push(b.host_ino);
            }
            if let Some(h) = &mut host_stats {
                let host = match b.source {
                    Source::Dir => b.host.as_ref(),
                    _ => None,
                };
                let size = b.link.as_ref().map_or(b.meta.size, |l| l.len() as u64);
                let blksize = blksizes
                    .get(usize::from(b.layer))
                    .copied()
                    .unwrap_or(DEFAULT_BLKSIZE);
                h.push(host, &implied(b.kind, &b.meta, size, blksize));
            }
            let nlink = match (b.kind, &b.source, &b.host) {
                (FileKind::Dir, Source::Dir, _) if b.merged => 1,
                (FileKind::Dir, Source::Dir, Some(h)) => h.nlink,
                // Counted below, for directories (2 + subdirectories); set below for
                // hard links.
                _ => 1,
            };
            let (source, data) = match b.source {
                Source::Tar { data, xattrs } => {
                    if !xattrs.is_empty() {
                        tar_xattrs.insert(idx, xattrs);
                    }
                    (SourceTag::Tar, data)
                }
                Source::Dir => (SourceTag::Dir, 0),
                Source::Implicit => (SourceTag::Implicit, 0),
            };
            let extra = match b.kind {
                FileKind::Dir => pack_range(0, b.children.len() as u32),
                FileKind::Symlink => {
                    let link = b.link.as_deref().unwrap_or_default();
                    let at = u32::try_from(names.len()).unwrap_or(u32::MAX);
                    names.extend_from_slice(link);
                    pack_range(at, link.len() as u32)
                }
                FileKind::CharDev | FileKind::BlockDev => b.meta.rdev,
                FileKind::File => data,
                FileKind::Fifo | FileKind::Socket => 0,
            };
            nodes.push(LowerNode {
                name_at,
                name_len: b.name.len() as u32,
                parent,
                ino_node,
                nlink,
                uid: b.meta.uid,
                gid: b.meta.gid,
                mtime_nsec: b.meta.mtime_nsec,
                perm: (b.meta.perm & 0o7777) as u16,
                layer: b.layer,
                kind: b.kind,
                source,
                mtime: b.meta.mtime,
                size: b.meta.size,
                extra,
            });
            for (_, child) in b.children {
                queue.push_back((child, idx));
            }
        }
        // In BFS order the children of node i are enqueued together, right after those of
        // node i-1, so their numbers form one contiguous range.
        let mut next = 1u32;
        for n in &mut nodes {
            if n.kind == FileKind::Dir {
                let len = n.extra_range().1;
                n.extra = pack_range(next, len);
                next += len;
            }
        }
        let subdirs: Vec<u32> = nodes
            .iter()
            .map(|n| match (n.kind, n.source) {
                (FileKind::Dir, SourceTag::Tar | SourceTag::Implicit) => {
                    let (start, len) = n.extra_range();
                    nodes[start as usize..][..len as usize]
                        .iter()
                        .filter(|c| c.kind == FileKind::Dir)
                        .count() as u32
                }
                _ => 0,
            })
            .collect();
        for ((n, g), sub) in nodes.iter_mut().zip(groups).zip(subdirs) {
            match (n.kind, n.source) {
                (FileKind::Dir, SourceTag::Dir) => {}
                (FileKind::Dir, _) => n.nlink = 2 + sub,
                _ => n.nlink = group_count[&g],
            }
        }
        nodes.shrink_to_fit();
        names.shrink_to_fit();
        tar_xattrs.shrink_to_fit();
        if let Some(h) = &mut host_stats {
            h.shrink_to_fit();
            let (a, c, b) = h.counts();
            log::debug!(
                "host stats of {} nodes: {a} atimes and {c} ctimes other than the mtime, {b} \
                 odd block counts",
                nodes.len()
            );
        }
        let host_inos = if self.host_inos_possible {
            HostInos::new(&nodes, host_ino)
        } else {
            None
        };
        LowerTree {
            nodes,
            names,
            tar_xattrs,
            host_inos,
            host_stats,
            layers,
        }
    }
}

/// What a node's own fields imply about the stat fields [`HostStats`] keeps.
fn implied(kind: FileKind, meta: &Meta, size: u64, blksize: u32) -> Implied {
    Implied {
        kind,
        mtime: (meta.mtime, meta.mtime_nsec),
        size,
        blksize,
    }
}

fn meta_from_stat(st: &sys::Stat) -> Meta {
    Meta {
        perm: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        // A directory's size is its host's too, as kernel overlayfs reports it.
        size: match st.st_mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFDIR => st.st_size as u64,
            _ => 0,
        },
        mtime: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec as u32,
        rdev: st.st_rdev,
    }
}

impl LowerTree {
    /// Flattens `layers` (bottom first) into one tree.
    ///
    /// # Errors
    /// A layer file or directory that cannot be opened or read, or a tar layer whose members
    /// cannot be merged (a hard link to a missing member, a bare `.wh.`).
    pub fn build(layers: Vec<LayerInput>) -> Result<LowerTree, Error> {
        if layers.len() > usize::from(u16::MAX) {
            return Err(Error::Invalid("too many layers"));
        }
        // Directory layers are read entry by entry: warm the host's caches ahead of that.
        let dir_roots: Vec<OwnedFd> = layers
            .iter()
            .filter_map(|l| match l {
                LayerInput::Dir(p) => open_dir_root(p).ok(),
                LayerInput::Tar { .. } => None,
            })
            .collect();
        let prefetch = (!dir_roots.is_empty()).then(|| crate::prefetch::Prefetch::start(dir_roots));
        let mut builder = Builder::new();
        let mut opened = Vec::with_capacity(layers.len());
        for (i, input) in layers.into_iter().enumerate() {
            let layer = i as u16;
            match input {
                LayerInput::Tar {
                    file,
                    offset,
                    index,
                } => {
                    let name = file.display().to_string();
                    let f = File::open(&file).map_err(|e| Error::io("open layer", &name, e))?;
                    builder
                        .apply_tar(layer, offset, &index)
                        .map_err(|reason| Error::BadLayer {
                            layer: name.clone(),
                            reason,
                        })?;
                    opened.push(Layer::Tar {
                        file: Arc::new(f),
                        name: name.into(),
                    });
                }
                LayerInput::Dir(path) => {
                    let name = path.display().to_string();
                    let root = open_dir_root(&path)?;
                    let blksize = builder
                        .apply_dir(layer, root.as_fd())
                        .map_err(|e| Error::io("reading lower dir", &name, e))?;
                    opened.push(Layer::Dir {
                        root,
                        name,
                        blksize,
                    });
                }
            }
        }
        if let Some(p) = prefetch {
            p.finish();
        }
        Ok(builder.freeze(opened))
    }

    /// The root node.
    pub const ROOT: u32 = 0;

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree has only its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// The node `i`.
    pub fn node(&self, i: u32) -> &LowerNode {
        &self.nodes[i as usize]
    }

    /// The inode number of node `i`: [`ROOT_INO`] for the root, the host's `st_ino` of the
    /// node's inode leader when the tree uses [`HostInos`], else that leader's number + 1.
    /// Hard links share it.
    pub fn ino(&self, i: u32) -> u64 {
        let leader = self.node(i).ino_node;
        if leader == Self::ROOT {
            return ROOT_INO;
        }
        match &self.host_inos {
            Some(h) => h.by_node[leader as usize],
            None => u64::from(leader) + 1,
        }
    }

    /// The inode-leader node whose inode number is `ino`, if a lower entry has it.
    pub fn node_of_ino(&self, ino: u64) -> Option<u32> {
        if ino == ROOT_INO {
            return Some(Self::ROOT);
        }
        match &self.host_inos {
            Some(h) => h
                .leaders_by_ino
                .binary_search_by_key(&ino, |&i| h.by_node[i as usize])
                .ok()
                .map(|k| h.leaders_by_ino[k]),
            None => {
                let i = u32::try_from(ino.checked_sub(1)?).ok()?;
                ((i as usize) < self.nodes.len() && self.node(i).ino_node == i).then_some(i)
            }
        }
    }

    /// The `rfs.origin` value that names node `i` in an upper entry copied up from it: its
    /// inode leader's node number + 1, whatever the inode numbering, so uppers stay valid
    /// when it changes.
    pub fn origin(&self, i: u32) -> u64 {
        u64::from(self.node(i).ino_node) + 1
    }

    /// The node an `rfs.origin` value names, if this tree has it.
    pub fn node_of_origin(&self, origin: u64) -> Option<u32> {
        let i = u32::try_from(origin.checked_sub(1)?).ok()?;
        ((i as usize) < self.nodes.len()).then_some(i)
    }

    /// Whether inode numbers are the host's (see [`HostInos`]).
    pub fn uses_host_inos(&self) -> bool {
        self.host_inos.is_some()
    }

    /// The stat fields of node `i` besides [`LowerNode::meta`] and its nlink: for an entry of
    /// a directory layer, its host's (atime and ctime to the nanosecond, st_blocks,
    /// st_blksize), as kernel overlayfs reports them; a tar member, which has only an mtime,
    /// reports it as all three times, its size in 512-byte blocks and 4096.
    pub fn stat_extra(&self, i: u32) -> StatExtra {
        let n = self.node(i);
        let size = self.link(i).map_or(n.size, |l| l.len() as u64);
        let blksize = self
            .layers
            .get(usize::from(n.layer))
            .map_or(DEFAULT_BLKSIZE, Layer::blksize);
        let imp = implied(n.kind, &n.meta(), size, blksize);
        match &self.host_stats {
            Some(h) if n.source == SourceTag::Dir => h.get(i, &imp),
            _ => StatExtra {
                atime: imp.mtime,
                ctime: imp.mtime,
                blocks: size.div_ceil(512),
                blksize: DEFAULT_BLKSIZE,
            },
        }
    }

    /// The name (last path component) of node `i`; empty for the root.
    pub fn name(&self, i: u32) -> &[u8] {
        self.name_of(self.node(i))
    }

    fn name_of(&self, n: &LowerNode) -> &[u8] {
        &self.names[n.name_at as usize..][..n.name_len as usize]
    }

    /// The children of directory `dir`, sorted by name.
    pub fn children(&self, dir: u32) -> std::ops::Range<u32> {
        let n = self.node(dir);
        if n.kind != FileKind::Dir {
            return 0..0;
        }
        let (start, len) = n.extra_range();
        start..start + len
    }

    /// The target of symlink node `i` (`None` for other kinds).
    pub fn link(&self, i: u32) -> Option<&[u8]> {
        let n = self.node(i);
        (n.kind == FileKind::Symlink).then(|| {
            let (at, len) = n.extra_range();
            &self.names[at as usize..][..len as usize]
        })
    }

    /// The child `name` of directory `dir`.
    pub fn child(&self, dir: u32, name: &[u8]) -> Option<u32> {
        let r = self.children(dir);
        let slice = &self.nodes[r.start as usize..r.end as usize];
        slice
            .binary_search_by(|n| self.name_of(n).cmp(name))
            .ok()
            .map(|i| r.start + i as u32)
    }

    /// The node at a `/`-separated path (leading `/` optional).
    pub fn lookup_path(&self, path: &[u8]) -> Option<u32> {
        let mut cur = Self::ROOT;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            if self.node(cur).kind != FileKind::Dir {
                return None;
            }
            cur = self.child(cur, c)?;
        }
        Some(cur)
    }

    /// The lower directory that an upper directory `name` merges with, in a directory whose
    /// lower source is `parent` (DESIGN rules 2 and 13): none if it is opaque; else the
    /// directory its `overlay.redirect` names (an absolute path from the root, or a name in
    /// the same parent, as the kernel writes a rename within one directory); else the same
    /// name in `parent`. Only a directory merges.
    pub fn merge_source(
        &self,
        opaque: bool,
        redirect: Option<&[u8]>,
        parent: Option<u32>,
        name: &[u8],
    ) -> Option<u32> {
        if opaque {
            return None;
        }
        let found = match redirect {
            Some(absolute) if absolute.starts_with(b"/") => self.lookup_path(absolute),
            Some(relative) => parent.and_then(|p| self.child(p, relative)),
            None => parent.and_then(|p| self.child(p, name)),
        };
        found.filter(|&n| self.node(n).kind == FileKind::Dir)
    }

    /// The path of node `i` from the root, without a leading `/` (`""` for the root).
    pub fn path(&self, mut i: u32) -> Vec<u8> {
        let mut parts = Vec::new();
        while i != Self::ROOT {
            let n = self.node(i);
            parts.push(self.name_of(n));
            i = n.parent;
        }
        parts.reverse();
        parts.join(&b'/')
    }

    fn dir_layer_open(&self, i: u32, flags: i32) -> Result<OwnedFd, Error> {
        let n = self.node(i);
        let path = self.path(i);
        match &self.layers[usize::from(n.layer)] {
            Layer::Dir { root, name, .. } => {
                let c = sys::rel_cstr(&path).map_err(|e| Error::io("open", name.clone(), e))?;
                sys::openat_beneath(root.as_fd(), &c, flags, 0).map_err(|e| {
                    Error::io(
                        "open lower",
                        format!("{name}/{}", String::from_utf8_lossy(&path)),
                        e,
                    )
                })
            }
            Layer::Tar { .. } => Err(Error::Unsupported),
        }
    }

    /// Opens the regular file `i` for reading.
    ///
    /// # Errors
    /// The host error opening a directory-layer file.
    pub fn open(&self, i: u32) -> Result<LowerFile, Error> {
        let n = self.node(i);
        if n.kind != FileKind::File {
            return Err(Error::Invalid("not a regular file"));
        }
        match (n.source, &self.layers[usize::from(n.layer)]) {
            (SourceTag::Tar, Layer::Tar { file, name }) => Ok(LowerFile::Tar {
                file: Arc::clone(file),
                start: n.extra,
                size: n.size,
                layer: Arc::clone(name),
            }),
            (SourceTag::Dir, Layer::Dir { .. }) => self
                .dir_layer_open(i, libc::O_RDONLY | libc::O_NOFOLLOW)
                .map(LowerFile::Dir),
            _ => Err(Error::Invalid("not a regular file")),
        }
    }

    /// The extended attributes of node `i` (all of them; the caller filters private ones).
    ///
    /// # Errors
    /// The host error reading a directory-layer file's xattrs.
    pub fn xattrs(&self, i: u32) -> Result<Xattrs, Error> {
        let n = self.node(i);
        match n.source {
            SourceTag::Tar => Ok(self.tar_xattrs.get(&i).map_or_else(Vec::new, |x| {
                x.iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                    .collect()
            })),
            SourceTag::Implicit => Ok(Vec::new()),
            SourceTag::Dir => {
                let fd = self.dir_layer_open(i, libc::O_PATH | libc::O_NOFOLLOW)?;
                let names = sys::list_xattr(fd.as_fd())
                    .map_err(|e| Error::io("listxattr lower", self.display_path(i), e))?;
                let mut out = Vec::with_capacity(names.len());
                for name in names {
                    let c = sys::cstr(&name).map_err(|e| Error::io("xattr", "", e))?;
                    if let Some(v) = sys::get_xattr(fd.as_fd(), &c)
                        .map_err(|e| Error::io("getxattr lower", self.display_path(i), e))?
                    {
                        out.push((name, v));
                    }
                }
                Ok(out)
            }
        }
    }

    /// The value of extended attribute `name` of node `i`, `None` when it has none: one
    /// `getxattr`, where [`LowerTree::xattrs`] lists and reads them all.
    ///
    /// # Errors
    /// The host error reading a directory-layer entry.
    pub fn xattr(&self, i: u32, name: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let n = self.node(i);
        match n.source {
            SourceTag::Tar => Ok(self
                .tar_xattrs
                .get(&i)
                .and_then(|x| x.iter().find(|(k, _)| k.as_bytes() == name))
                .map(|(_, v)| v.to_vec())),
            SourceTag::Implicit => Ok(None),
            SourceTag::Dir => {
                let fd = self.dir_layer_open(i, libc::O_PATH | libc::O_NOFOLLOW)?;
                let c = sys::cstr(name).map_err(|e| Error::io("xattr", "", e))?;
                sys::get_xattr(fd.as_fd(), &c)
                    .map_err(|e| Error::io("getxattr lower", self.display_path(i), e))
            }
        }
    }

    /// A printable path for messages.
    pub fn display_path(&self, i: u32) -> String {
        format!("/{}", String::from_utf8_lossy(&self.path(i)))
    }

    /// The layer names, bottom first (for messages and `statfs`).
    pub fn layer_names(&self) -> Vec<&str> {
        self.layers
            .iter()
            .map(|l| match l {
                Layer::Tar { name, .. } => name,
                Layer::Dir { name, .. } => name.as_str(),
            })
            .collect()
    }
}

fn open_dir_root(path: &Path) -> Result<OwnedFd, Error> {
    let c = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| Error::Invalid("path contains NUL"))?;
    let f = std::fs::File::open(sys::os(c.as_bytes()))
        .map_err(|e| Error::io("open lower dir", path.display().to_string(), e))?;
    let fd: OwnedFd = f.into();
    let st = sys::fstatat(fd.as_fd(), c"")
        .map_err(|e| Error::io("stat lower dir", path.display().to_string(), e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Error::io(
            "lower dir",
            path.display().to_string(),
            io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar_index::TarEntry;

    fn entry(path: &str, kind: EntryKind) -> TarEntry {
        TarEntry {
            path: path.into(),
            kind,
            mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: 0,
            data_offset: 512,
            link_target: Vec::new(),
            rdev_major: 0,
            rdev_minor: 0,
            xattrs: Vec::new(),
        }
    }

    fn tree(layers: Vec<Vec<TarEntry>>) -> LowerTree {
        let mut b = Builder::new();
        for (i, entries) in layers.into_iter().enumerate() {
            b.apply_tar(i as u16, 0, &TarIndex { entries }).unwrap();
        }
        b.freeze(Vec::new())
    }

    fn names(t: &LowerTree, dir: &str) -> Vec<String> {
        let d = t.lookup_path(dir.as_bytes()).unwrap();
        t.children(d)
            .map(|c| String::from_utf8_lossy(t.name(c)).into_owned())
            .collect()
    }

    #[test]
    fn an_upper_dir_merges_with_its_redirect_or_its_own_name() {
        use EntryKind::*;
        let t = tree(vec![vec![
            entry("d", Dir),
            entry("d/a", Dir),
            entry("d/b", Dir),
            entry("d/f", File),
        ]]);
        let d = t.lookup_path(b"d");
        let a = t.lookup_path(b"d/a");
        assert_eq!(t.merge_source(false, None, d, b"b"), t.lookup_path(b"d/b"));
        // Absolute from the root (rfs, and the kernel across directories) ...
        assert_eq!(t.merge_source(false, Some(b"/d/a"), None, b"new"), a);
        // ... or a name in the same parent (the kernel, within one directory).
        assert_eq!(t.merge_source(false, Some(b"a"), d, b"new"), a);
        assert_eq!(t.merge_source(true, Some(b"a"), d, b"a"), None, "opaque");
        assert_eq!(
            t.merge_source(false, Some(b"f"), d, b"x"),
            None,
            "not a dir"
        );
        assert_eq!(t.merge_source(false, Some(b"/nowhere"), d, b"a"), None);
    }

    #[test]
    fn whiteout_hides_lower_only_and_opaque_clears_before_own_entries() {
        use EntryKind::*;
        let t = tree(vec![
            vec![
                entry("a", Dir),
                entry("a/x", File),
                entry("a/y", File),
                entry("b", File),
            ],
            vec![
                // The opaque marker comes after an own entry: it must not hide it.
                entry("a/z", File),
                entry("a/.wh..wh..opq", File),
                entry(".wh.b", File),
                entry("b", File),
            ],
        ]);
        assert_eq!(names(&t, "a"), ["z"]);
        // A whiteout in the same layer as `b` does not hide that layer's own `b`.
        assert!(t.lookup_path(b"b").is_some());
        assert_eq!(t.node(t.lookup_path(b"b").unwrap()).layer, 1);
    }

    #[test]
    fn children_are_contiguous_and_sorted() {
        use EntryKind::*;
        let t = tree(vec![vec![
            entry("d", Dir),
            entry("d/c", File),
            entry("d/a", File),
            entry("e", Dir),
            entry("e/b", File),
            entry("d/b", Dir),
        ]]);
        assert_eq!(names(&t, "d"), ["a", "b", "c"]);
        assert_eq!(names(&t, ""), ["d", "e"]);
        assert_eq!(t.path(t.lookup_path(b"d/b").unwrap()), b"d/b");
        assert_eq!(t.lookup_path(b"/e/b"), t.lookup_path(b"e/b"));
    }

    #[test]
    fn hard_links_share_an_inode_node_and_count() {
        use EntryKind::*;
        let mut l = entry("h2", HardLink);
        l.link_target = b"h1".to_vec();
        let t = tree(vec![vec![entry("h1", File), l, entry("x", File)]]);
        let a = t.node(t.lookup_path(b"h1").unwrap());
        let b = t.node(t.lookup_path(b"h2").unwrap());
        assert_eq!(a.ino_node, b.ino_node);
        assert_eq!((a.nlink, b.nlink), (2, 2));
        assert_eq!(t.node(t.lookup_path(b"x").unwrap()).nlink, 1);
    }

    #[test]
    fn a_member_beyond_a_symlink_is_an_error() {
        use EntryKind::*;
        let mut link = entry("a", Symlink);
        link.link_target = b"/".to_vec();
        let mut b = Builder::new();
        let err = b
            .apply_tar(
                0,
                0,
                &TarIndex {
                    entries: vec![link, entry("a/etc/passwd", File)],
                },
            )
            .unwrap_err();
        assert!(err.contains("symlink"), "{err}");
    }

    #[test]
    fn file_replaces_dir_and_implicit_parents_appear() {
        use EntryKind::*;
        let t = tree(vec![
            vec![entry("a", Dir), entry("a/x", File)],
            vec![entry("a", File), entry("p/q/r", File)],
        ]);
        assert_eq!(t.node(t.lookup_path(b"a").unwrap()).kind, FileKind::File);
        assert_eq!(t.node(t.lookup_path(b"p/q").unwrap()).kind, FileKind::Dir);
        assert!(t.lookup_path(b"a/x").is_none());
    }

    #[test]
    fn dir_layers_on_one_filesystem_use_host_inode_numbers() {
        let base = tempfile::tempdir().unwrap();
        let top = tempfile::tempdir().unwrap();
        std::fs::create_dir(base.path().join("d")).unwrap();
        std::fs::write(base.path().join("d/f"), "f").unwrap();
        std::fs::hard_link(base.path().join("d/f"), base.path().join("g")).unwrap();
        std::fs::write(top.path().join("t"), "t").unwrap();
        let host_ino =
            |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::symlink_metadata(p).unwrap());
        let t = LowerTree::build(vec![
            LayerInput::Dir(base.path().into()),
            LayerInput::Dir(top.path().into()),
        ])
        .unwrap();
        assert!(t.uses_host_inos());
        assert_eq!(t.ino(LowerTree::ROOT), ROOT_INO);
        for (path, host) in [
            ("d/f", base.path().join("d/f")),
            ("g", base.path().join("d/f")),
            ("d", base.path().join("d")),
            ("t", top.path().join("t")),
        ] {
            let node = t.lookup_path(path.as_bytes()).unwrap();
            assert_eq!(t.ino(node), host_ino(&host), "{path}");
            assert_eq!(
                t.node_of_ino(t.ino(node)),
                Some(t.node(node).ino_node),
                "{path}"
            );
        }
        assert_eq!(t.node_of_ino(12_345_678_901), None);
    }

    #[test]
    fn node_numbers_when_host_inode_numbers_would_clash_or_are_missing() {
        // The same host inode in two layers (a hard link across layers) is two inodes of
        // the merged tree: host numbers would clash.
        let base = tempfile::tempdir().unwrap();
        let top = tempfile::tempdir_in(base.path()).unwrap();
        let layer = base.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        std::fs::write(layer.join("f"), "f").unwrap();
        std::fs::hard_link(layer.join("f"), top.path().join("f2")).unwrap();
        let t = LowerTree::build(vec![
            LayerInput::Dir(layer.clone()),
            LayerInput::Dir(top.path().into()),
        ])
        .unwrap();
        assert!(!t.uses_host_inos());
        for i in 0..t.len() as u32 {
            assert_eq!(t.ino(i), u64::from(t.node(i).ino_node) + 1);
            assert_eq!(t.node_of_ino(t.ino(i)), Some(t.node(i).ino_node));
        }
        // Tar layers have no host inode numbers.
        assert!(!tree(vec![vec![entry("a", EntryKind::File)]]).uses_host_inos());
        // Layers on two filesystems (when this machine has a tmpfs to try it with).
        if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
            std::fs::write(shm.path().join("s"), "s").unwrap();
            let t = LowerTree::build(vec![
                LayerInput::Dir(layer),
                LayerInput::Dir(shm.path().into()),
            ])
            .unwrap();
            let same_fs =
                std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(base.path()).unwrap())
                    == std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(shm.path()).unwrap());
            assert_eq!(t.uses_host_inos(), same_fs);
        }
    }

    #[test]
    fn dir_layer_entries_report_their_host_stat() {
        use std::os::unix::fs::MetadataExt;
        let base = tempfile::tempdir().unwrap();
        let top = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("d/s")).unwrap();
        std::fs::create_dir_all(base.path().join("o/gone")).unwrap();
        std::fs::create_dir_all(top.path().join("d")).unwrap();
        std::fs::create_dir_all(top.path().join("o/kept")).unwrap();
        std::fs::write(top.path().join("o/.wh..wh..opq"), "").unwrap();
        std::fs::write(base.path().join("f"), vec![7u8; 5000]).unwrap();
        std::os::unix::fs::symlink("f", base.path().join("l")).unwrap();
        // As extracted from an archive: an old mtime and atime, so the ctime differs.
        let old = std::time::UNIX_EPOCH + std::time::Duration::new(1_669_064_730, 123);
        std::fs::File::options()
            .write(true)
            .open(base.path().join("f"))
            .unwrap()
            .set_times(
                std::fs::FileTimes::new()
                    .set_accessed(old + std::time::Duration::from_secs(60))
                    .set_modified(old),
            )
            .unwrap();
        let t = LowerTree::build(vec![
            LayerInput::Dir(base.path().into()),
            LayerInput::Dir(top.path().into()),
        ])
        .unwrap();
        // Read the host after building: listing a directory and reading a link move atimes.
        for (path, host, nlink) in [
            ("", top.path().to_path_buf(), Some(1)),
            ("d", top.path().join("d"), Some(1)),
            ("d/s", base.path().join("d/s"), None),
            ("o", top.path().join("o"), None),
            ("o/kept", top.path().join("o/kept"), None),
            ("f", base.path().join("f"), None),
            ("l", base.path().join("l"), None),
        ] {
            let i = t.lookup_path(path.as_bytes()).unwrap();
            let md = std::fs::symlink_metadata(&host).unwrap();
            let x = t.stat_extra(i);
            assert_eq!(x.atime, (md.atime(), md.atime_nsec() as u32), "{path}");
            assert_eq!(x.ctime, (md.ctime(), md.ctime_nsec() as u32), "{path}");
            assert_eq!(x.blocks, md.blocks(), "{path}");
            assert_eq!(u64::from(x.blksize), md.blksize(), "{path}");
            let n = t.node(i);
            // Merged directories report 1, as kernel overlayfs does; others their own.
            assert_eq!(
                u64::from(n.nlink),
                nlink.unwrap_or(md.nlink()),
                "{path}: nlink"
            );
            if n.kind == FileKind::Dir {
                assert_eq!(n.meta().size, md.size(), "{path}: size");
            }
        }
        assert_ne!(
            t.stat_extra(t.lookup_path(b"f").unwrap()).ctime,
            (1_669_064_730, 123)
        );

        // A tar member has only its mtime; a tar directory counts its subdirectories.
        let tt = tree(vec![vec![
            entry("a", EntryKind::Dir),
            entry("a/b", EntryKind::Dir),
            entry("a/f", EntryKind::File),
        ]]);
        let a = tt.lookup_path(b"a").unwrap();
        let x = tt.stat_extra(a);
        assert_eq!((x.atime, x.ctime, x.blocks), ((0, 0), (0, 0), 0));
        assert_eq!(tt.node(a).nlink, 3);
        assert_eq!(tt.node(tt.lookup_path(b"a/b").unwrap()).nlink, 2);
    }

    #[test]
    fn dir_layers_read_kernel_whiteouts_and_opaque_markers() {
        let base = tempfile::tempdir().unwrap();
        let top = tempfile::tempdir().unwrap();
        for d in ["a", "o"] {
            std::fs::create_dir(base.path().join(d)).unwrap();
        }
        for f in ["a/1", "a/2", "o/gone", "w"] {
            std::fs::write(base.path().join(f), f).unwrap();
        }
        std::fs::create_dir(top.path().join("o")).unwrap();
        std::fs::write(top.path().join("o/.wh..wh..opq"), "").unwrap();
        std::fs::write(top.path().join("o/new"), "n").unwrap();
        std::fs::create_dir(top.path().join("a")).unwrap();
        std::fs::write(top.path().join("a/.wh.1"), "").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", top.path().join("w")).unwrap();
        let t = LowerTree::build(vec![
            LayerInput::Dir(base.path().into()),
            LayerInput::Dir(top.path().into()),
        ])
        .unwrap();
        assert_eq!(names(&t, "a"), ["2"]);
        assert_eq!(names(&t, "o"), ["new"]);
        let w = t.node(t.lookup_path(b"w").unwrap());
        assert_eq!(w.kind, FileKind::Symlink);
        assert_eq!(
            t.link(t.lookup_path(b"w").unwrap()),
            Some(&b"/etc/passwd"[..])
        );
        let two = t.lookup_path(b"a/2").unwrap();
        let mut buf = [0u8; 16];
        let n = t.open(two).unwrap().read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"a/2");
    }

    #[test]
    fn one_xattr_is_read_as_the_listing_has_it() {
        // A tar layer under a directory layer; both carry xattrs.
        let mut with_x = entry("t", EntryKind::File);
        with_x.xattrs = vec![("user.tar".into(), b"from tar".to_vec())];
        let mut b = Builder::new();
        b.apply_tar(
            0,
            0,
            &TarIndex {
                entries: vec![with_x],
            },
        )
        .unwrap();
        let mut t = b.freeze(Vec::new());
        let tar_node = t.lookup_path(b"t").unwrap();
        assert_eq!(
            t.xattr(tar_node, b"user.tar").unwrap().as_deref(),
            Some(&b"from tar"[..])
        );
        assert_eq!(t.xattr(tar_node, b"user.other").unwrap(), None);

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "f").unwrap();
        let file = std::fs::File::open(&f).unwrap();
        let set = sys::set_xattr(file.as_fd(), c"user.dir", b"from dir", 0);
        if set.is_err() {
            eprintln!(
                "skipped the directory part: no user xattrs on {}",
                dir.path().display()
            );
            return;
        }
        t = LowerTree::build(vec![LayerInput::Dir(dir.path().into())]).unwrap();
        let dir_node = t.lookup_path(b"f").unwrap();
        let listed = t.xattrs(dir_node).unwrap();
        assert!(
            listed
                .iter()
                .any(|(k, v)| k == b"user.dir" && v == b"from dir")
        );
        assert_eq!(
            t.xattr(dir_node, b"user.dir").unwrap().as_deref(),
            Some(&b"from dir"[..])
        );
        assert_eq!(t.xattr(dir_node, b"user.other").unwrap(), None);
    }
}
