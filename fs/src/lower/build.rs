//! The builder: layers applied bottom to top into a mutable arena, then frozen into the
//! breadth-first [`LowerTree`] (children contiguous and sorted, hard-link groups resolved).

use std::collections::{BTreeMap, HashMap};

use super::node::{FileKind, LowerNode, Meta, Source, SourceTag, pack_range};
use super::{HostInos, Layer, LowerTree};
use crate::host_stat::{DEFAULT_BLKSIZE, HostExtra, HostStats, Implied};

#[derive(Clone)]
pub(super) struct BuildNode {
    pub(super) name: Vec<u8>,
    pub(super) kind: FileKind,
    pub(super) meta: Meta,
    pub(super) layer: u16,
    pub(super) source: Source,
    pub(super) link: Option<Box<[u8]>>,
    /// Hard-link group key: nodes with equal keys are one inode.
    pub(super) group: usize,
    /// `st_ino` in its directory layer (0 for tar members and implied directories).
    pub(super) host_ino: u64,
    /// The rest of its host stat, for an entry of a directory layer.
    pub(super) host: Option<HostExtra>,
    /// A directory that more than one layer supplies (not cut off by an opaque one): kernel
    /// overlayfs reports nlink 1 for it.
    pub(super) merged: bool,
    pub(super) children: BTreeMap<Vec<u8>, usize>,
    /// The node's path in its directory layer when that is not its path in the tree: it came
    /// into a renamed directory (`overlay.redirect`) from another place below.
    pub(super) layer_path: Option<Box<[u8]>>,
    /// A metadata-only copy's data: the file below it (`overlay.metacopy`).
    pub(super) data: Option<DataFrom>,
}

/// Where the data of a metadata-only copy in a directory layer lives (DESIGN rule 10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum DataFrom {
    /// Tar member data at this absolute offset of layer `layer`'s file.
    Tar {
        /// The tar layer.
        layer: u16,
        /// Absolute offset of the data.
        data: u64,
    },
    /// The file at `path` of directory layer `layer`.
    Dir {
        /// The directory layer.
        layer: u16,
        /// Its path there.
        path: Box<[u8]>,
    },
    /// No regular file below: reading it fails with `EIO`, as the kernel's lookup does
    /// ("metacopy with no lower data").
    Missing,
}

pub(super) struct Builder {
    pub(super) arena: Vec<BuildNode>,
    /// The device of every directory layer entry so far, while they are all on one
    /// filesystem and no tar layer was applied: the condition for [`HostInos`].
    pub(super) host_dev: Option<u64>,
    pub(super) host_inos_possible: bool,
    /// Whether a directory layer was applied (so [`HostStats`] are kept).
    pub(super) dir_layers: bool,
}

pub(super) fn implicit_dir_meta() -> Meta {
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

pub(super) fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

pub(super) fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

impl Builder {
    pub(super) fn new() -> Self {
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
            layer_path: None,
            data: None,
        };
        Builder {
            arena: vec![root],
            host_dev: None,
            host_inos_possible: true,
            dir_layers: false,
        }
    }

    pub(super) fn push(&mut self, mut node: BuildNode) -> usize {
        let id = self.arena.len();
        if node.group == usize::MAX {
            node.group = id;
        }
        self.arena.push(node);
        id
    }

    /// The node at `path`, if it exists now.
    pub(super) fn find(&self, path: &str) -> Option<usize> {
        self.find_bytes(path.as_bytes())
    }

    /// The node at the `/`-separated `path` (leading `/` optional), if it exists now.
    pub(super) fn find_bytes(&self, path: &[u8]) -> Option<usize> {
        let mut cur = 0;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            if self.arena[cur].kind != FileKind::Dir {
                return None;
            }
            cur = *self.arena[cur].children.get(c)?;
        }
        Some(cur)
    }

    /// The directory at `path`, created (as implicit dirs) where missing or not a directory.
    /// A symlink on the way is an error: a member must never be placed through a symlink
    /// (`a -> /` then `a/etc/passwd` would write outside the layer when extracted).
    pub(super) fn ensure_dir(
        &mut self,
        path: &str,
        layer: u16,
        member: &str,
    ) -> Result<usize, String> {
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
                        layer_path: None,
                        data: None,
                    });
                    self.arena[cur].children.insert(c.as_bytes().to_vec(), id);
                    id
                }
            };
        }
        Ok(cur)
    }

    /// Notes the device of a directory layer entry (see `host_dev`).
    pub(super) fn note_dev(&mut self, dev: u64) {
        match self.host_dev {
            None => self.host_dev = Some(dev),
            Some(d) if d != dev => self.host_inos_possible = false,
            Some(_) => {}
        }
    }

    /// Puts `node` at `name` in `dir`: a directory over a directory keeps the children and
    /// takes the new metadata; anything else replaces what was there.
    pub(super) fn place(&mut self, dir: usize, node: BuildNode) -> usize {
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
            o.layer_path = node.layer_path;
            o.data = node.data;
            o.merged = true;
            return old;
        }
        let name = node.name.clone();
        let id = self.push(node);
        self.arena[dir].children.insert(name, id);
        id
    }

    /// Numbers the reachable nodes breadth-first (children of a directory contiguous and
    /// sorted by name) and resolves hard-link groups.
    pub(super) fn freeze(self, layers: Vec<Layer>) -> LowerTree {
        let mut arena: Vec<Option<BuildNode>> = self.arena.into_iter().map(Some).collect();
        let mut nodes: Vec<LowerNode> = Vec::with_capacity(arena.len());
        let mut names: Vec<u8> = Vec::new();
        let mut queue: std::collections::VecDeque<(usize, u32)> = Default::default();
        let mut group_first: HashMap<usize, u32> = HashMap::new();
        let mut group_count: HashMap<usize, u32> = HashMap::new();
        let mut groups: Vec<usize> = Vec::new();
        let mut tar_xattrs = HashMap::new();
        let mut layer_paths = HashMap::new();
        let mut data_from = HashMap::new();
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
            if let Some(d) = b.data {
                data_from.insert(idx, d);
            }
            if let (Source::Dir, Some(p)) = (&b.source, b.layer_path) {
                layer_paths.insert(idx, p);
            }
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
        layer_paths.shrink_to_fit();
        data_from.shrink_to_fit();
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
            layer_paths,
            data_from,
            host_inos,
            host_stats,
            layers,
        }
    }
}

/// What a node's own fields imply about the stat fields [`HostStats`] keeps.
pub(super) fn implied(kind: FileKind, meta: &Meta, size: u64, blksize: u32) -> Implied {
    Implied {
        kind,
        mtime: (meta.mtime, meta.mtime_nsec),
        size,
        blksize,
    }
}
