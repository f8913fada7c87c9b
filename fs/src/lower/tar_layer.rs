//! A tar layer applied to the builder: OCI whiteouts and opaque markers first (DESIGN rule
//! 5), then the members, hard links sharing their target's inode.

use std::collections::{BTreeMap, HashMap};

use super::build::{BuildNode, Builder, split_parent};
use super::node::{FileKind, Meta, Source, TarXattrs};
use crate::ovl::{self, NameRole, OPAQUE_MARKER};
use crate::tar_index::{EntryKind, TarIndex};

impl Builder {
    pub(super) fn apply_tar(
        &mut self,
        layer: u16,
        base: u64,
        index: &TarIndex,
    ) -> Result<(), String> {
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
                        layer_path: None,
                        data: None,
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
                        layer_path: None,
                        data: None,
                    }
                }
            };
            let id = self.place(dir, node);
            by_path.insert(e.path.as_str(), id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

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
}
