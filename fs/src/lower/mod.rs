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
//!
//! The rooms: this file holds the tree's API ([`LowerTree`], [`LayerInput`], [`LowerFile`]);
//! `node` the packed node and its kinds; `build` the builder that flattens layers and freezes
//! the result; `tar_layer` and `dir_layer` apply one tar or host-directory layer to it.

mod build;
mod dir_layer;
mod node;
mod tar_layer;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use crate::Error;
pub use crate::host_stat::StatExtra;
use crate::host_stat::{DEFAULT_BLKSIZE, HostStats};
use crate::ovl::Namespace;
use crate::sys;
use crate::tar_index::TarIndex;

use build::{Builder, DataFrom, implied};
use dir_layer::open_dir_root;
pub use node::{FileKind, LowerNode, Meta, ROOT_INO, UPPER_INO_BIT, Xattrs};
use node::{SourceTag, TarXattrs};

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

impl Layer {
    fn blksize(&self) -> u32 {
        match self {
            Layer::Tar { .. } => DEFAULT_BLKSIZE,
            Layer::Dir { blksize, .. } => *blksize,
        }
    }
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
    /// The path in its directory layer of a node that a renamed directory (`overlay.redirect`)
    /// brought to another place in the tree.
    layer_paths: HashMap<u32, Box<[u8]>>,
    /// Where the data of a metadata-only copy (`overlay.metacopy`) in a directory layer is.
    data_from: HashMap<u32, DataFrom>,
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

impl LowerTree {
    /// Flattens `layers` (bottom first) into one tree.
    ///
    /// # Errors
    /// A layer file or directory that cannot be opened or read, or a tar layer whose members
    /// cannot be merged (a hard link to a missing member, a bare `.wh.`).
    pub fn build(layers: Vec<LayerInput>) -> Result<LowerTree, Error> {
        let markers = if sys::is_initial_root() {
            Namespace::Trusted
        } else {
            Namespace::User
        };
        Self::build_with_markers(layers, markers)
    }

    /// [`LowerTree::build`], following the overlay markers (`overlay.redirect`,
    /// `overlay.metacopy`, `rfs.metacopy`) of directory layers in namespace `markers` only,
    /// as the kernel follows `trusted.*` or, with `userxattr`, `user.*` (DESIGN rule 10).
    ///
    /// # Errors
    /// As [`LowerTree::build`]; also a malformed `overlay.redirect`.
    pub fn build_with_markers(
        layers: Vec<LayerInput>,
        markers: Namespace,
    ) -> Result<LowerTree, Error> {
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
                        .apply_dir(layer, root.as_fd(), markers)
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
        match self.layer_paths.get(&i) {
            Some(path) => self.open_in_layer(n.layer, path, flags),
            None => self.open_in_layer(n.layer, &self.path(i), flags),
        }
    }

    /// Opens `path` of directory layer `layer` beneath its root, following no symlink.
    fn open_in_layer(&self, layer: u16, path: &[u8], flags: i32) -> Result<OwnedFd, Error> {
        match &self.layers[usize::from(layer)] {
            Layer::Dir { root, name, .. } => {
                let c = sys::rel_cstr(path).map_err(|e| Error::io("open", name.clone(), e))?;
                sys::openat_beneath(root.as_fd(), &c, flags, 0).map_err(|e| {
                    Error::io(
                        "open lower",
                        format!("{name}/{}", String::from_utf8_lossy(path)),
                        e,
                    )
                })
            }
            Layer::Tar { .. } => Err(Error::Unsupported),
        }
    }

    /// Opens the regular file `i` for reading: a metadata-only copy's data is the file below
    /// it that the tree recorded when it was built.
    ///
    /// # Errors
    /// The host error opening a directory-layer file; `EIO` for a metadata-only copy with no
    /// file below (as the kernel's lookup fails).
    pub fn open(&self, i: u32) -> Result<LowerFile, Error> {
        let n = self.node(i);
        if n.kind != FileKind::File {
            return Err(Error::Invalid("not a regular file"));
        }
        if let Some(from) = self.data_from.get(&i) {
            return match from {
                DataFrom::Tar { layer, data } => match &self.layers[usize::from(*layer)] {
                    Layer::Tar { file, name } => Ok(LowerFile::Tar {
                        file: Arc::clone(file),
                        start: *data,
                        size: n.size,
                        layer: Arc::clone(name),
                    }),
                    Layer::Dir { .. } => Err(Error::Invalid("not a regular file")),
                },
                DataFrom::Dir { layer, path } => self
                    .open_in_layer(*layer, path, libc::O_RDONLY | libc::O_NOFOLLOW)
                    .map(LowerFile::Dir),
                DataFrom::Missing => Err(Error::io(
                    "metadata-only copy without data below",
                    self.display_path(i),
                    io::Error::from_raw_os_error(libc::EIO),
                )),
            };
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

#[cfg(test)]
pub(super) mod test_support {
    //! Tree builders shared by the unit tests of the lower rooms.
    use super::*;
    use crate::tar_index::{EntryKind, TarEntry};

    pub(super) fn entry(path: &str, kind: EntryKind) -> TarEntry {
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

    pub(super) fn tree(layers: Vec<Vec<TarEntry>>) -> LowerTree {
        let mut b = Builder::new();
        for (i, entries) in layers.into_iter().enumerate() {
            b.apply_tar(i as u16, 0, &TarIndex { entries }).unwrap();
        }
        b.freeze(Vec::new())
    }

    pub(super) fn names(t: &LowerTree, dir: &str) -> Vec<String> {
        let d = t.lookup_path(dir.as_bytes()).unwrap();
        t.children(d)
            .map(|c| String::from_utf8_lossy(t.name(c)).into_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::tar_index::EntryKind;

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
