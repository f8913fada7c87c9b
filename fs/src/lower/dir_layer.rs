//! A host-directory layer (fuse-overlayfs `lowerdir=` style) applied to the builder: walked
//! with `openat` and `O_NOFOLLOW`, reading every whiteout and opaque format (DESIGN rule 4).

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use super::build::{BuildNode, Builder, DataFrom};
use super::node::{FileKind, Meta, Source};
use crate::Error;
use crate::host_stat::HostExtra;
use crate::ovl::{
    self, NameRole, Namespace, OPAQUE_MARKER, is_opaque_xattr, is_whiteout_stat, is_xattr_whiteout,
};
use crate::sys;

/// One directory of a directory layer as read from the host, before it is applied. A layer
/// is read whole first so that what its renamed directories and metadata-only copies refer
/// to is looked up in the layers below it, before this layer changes the tree (the kernel
/// follows them only downwards).
struct ScanDir {
    /// The directory's atime after it was listed.
    atime: (i64, u32),
    opaque: bool,
    /// Names its whiteouts hide.
    hidden: Vec<Vec<u8>>,
    entries: Vec<ScanEntry>,
}

/// One entry of a [`ScanDir`].
struct ScanEntry {
    name: Vec<u8>,
    st: sys::Stat,
    link: Option<Box<[u8]>>,
    /// A directory's or a metadata-only copy's `overlay.redirect`.
    redirect: Option<Vec<u8>>,
    metacopy: bool,
    /// A directory's own entries.
    dir: Option<ScanDir>,
    below: Below,
}

/// What an entry refers to in the layers below, resolved before its layer is applied.
enum Below {
    /// Nothing to follow.
    Nothing,
    /// A renamed directory: a copy of the directory it was renamed from, or `None` when the
    /// layers below have none (it then merges with nothing, not with its own name).
    Renamed(Option<usize>),
    /// A metadata-only copy: its data and that data's size.
    Data(DataFrom, u64),
}

/// `dir/name` (`name` alone when `dir` is the root's `""`).
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// Where an entry at `below/name` of a directory layer looks in the layers below: its
/// redirect (absolute from the root, or a name in the same parent), else its own path.
fn target(below: &[u8], name: &[u8], redirect: Option<&[u8]>) -> Vec<u8> {
    match redirect {
        Some(r) if r.starts_with(b"/") => r[1..].to_vec(),
        Some(r) => join(below, r),
        None => join(below, name),
    }
}

impl Builder {
    /// Applies the directory layer `root`, following the overlay markers in namespace
    /// `markers`; returns the layer's `st_blksize`.
    pub(super) fn apply_dir(
        &mut self,
        layer: u16,
        root: BorrowedFd<'_>,
        markers: Namespace,
    ) -> io::Result<u32> {
        let mut groups: HashMap<(u64, u64), usize> = HashMap::new();
        let st = sys::fstatat(root, c"")?;
        self.note_dev(st.st_dev);
        self.dir_layers = true;
        let fd = sys::openat_beneath(root, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let mut scan = self.scan_dir(fd, b"", markers)?;
        let mut budget = 2 * self.arena.len() + 65_536;
        self.resolve(&mut scan, b"", &mut budget)?;
        let node = &mut self.arena[0];
        node.meta = meta_from_stat(&st);
        node.layer = layer;
        node.source = Source::Dir;
        node.host = Some(HostExtra::from_stat(&st));
        // Every layer has a root directory.
        node.merged = layer > 0;
        self.apply_scan(layer, scan, 0, &mut groups);
        Ok(st.st_blksize as u32)
    }

    /// Reads the directory `dirfd` (at `path` in its layer) and everything below it.
    fn scan_dir(&mut self, dirfd: OwnedFd, path: &[u8], markers: Namespace) -> io::Result<ScanDir> {
        let listing_fd = sys::openat(dirfd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let names = sys::read_dir(listing_fd)?;
        // Listing the directory moved its atime on the host (relatime: once, then it stays
        // until the directory changes or a day passes): report the one the kernel will show.
        let listed = sys::fstatat(dirfd.as_fd(), c"")?;
        let opaque =
            names.iter().any(|(n, _, _)| n == OPAQUE_MARKER) || is_opaque_xattr(dirfd.as_fd())?;
        let mut dir = ScanDir {
            atime: (listed.st_atime, listed.st_atime_nsec as u32),
            opaque,
            hidden: Vec::new(),
            entries: Vec::with_capacity(names.len()),
        };
        for (name, _d_type, _) in names {
            match ovl::name_role(&name) {
                NameRole::OpaqueMarker | NameRole::Meta => continue,
                NameRole::Whiteout(hidden) => {
                    dir.hidden.push(hidden.to_vec());
                    continue;
                }
                NameRole::Entry => {}
            }
            let c = sys::cstr(&name)?;
            let Some(mut st) = sys::fstatat_opt(dirfd.as_fd(), &c)? else {
                continue;
            };
            if is_whiteout_stat(&st)
                || (ovl::may_be_xattr_whiteout(&st) && {
                    let f = sys::openat(dirfd.as_fd(), &c, libc::O_PATH, 0)?;
                    is_xattr_whiteout(f.as_fd())?
                })
            {
                dir.hidden.push(name);
                continue;
            }
            self.note_dev(st.st_dev);
            let kind = FileKind::from_mode(st.st_mode).unwrap_or(FileKind::File);
            let bad_marker = |e: io::Error| match e.kind() {
                io::ErrorKind::InvalidData => {
                    io::Error::new(e.kind(), format!("/{}: {e}", String::from_utf8_lossy(path)))
                }
                _ => e,
            };
            let mut entry = ScanEntry {
                name,
                st,
                link: None,
                redirect: None,
                metacopy: false,
                dir: None,
                below: Below::Nothing,
            };
            match kind {
                FileKind::Symlink => {
                    entry.link = Some(sys::readlinkat(dirfd.as_fd(), &c)?.into_boxed_slice());
                    // Reading the link moved its atime, as listing a directory does (above).
                    if let Some(again) = sys::fstatat_opt(dirfd.as_fd(), &c)? {
                        st.st_atime = again.st_atime;
                        st.st_atime_nsec = again.st_atime_nsec;
                        entry.st = st;
                    }
                }
                FileKind::Dir => {
                    entry.redirect =
                        ovl::redirect_at(dirfd.as_fd(), &c, markers).map_err(bad_marker)?;
                    let sub = sys::openat(dirfd.as_fd(), &c, libc::O_PATH | libc::O_DIRECTORY, 0)?;
                    let sub_path = join(path, &entry.name);
                    entry.dir = Some(self.scan_dir(sub, &sub_path, markers)?);
                }
                FileKind::File => {
                    entry.metacopy = ovl::is_metacopy_at(dirfd.as_fd(), &c, markers)?;
                    if entry.metacopy {
                        entry.redirect =
                            ovl::redirect_at(dirfd.as_fd(), &c, markers).map_err(bad_marker)?;
                    }
                }
                _ => {}
            }
            dir.entries.push(entry);
        }
        Ok(dir)
    }

    /// Looks up, in the tree of the layers below, what the renamed directories and
    /// metadata-only copies of `dir` refer to; `below` is the path `dir` merges with there.
    /// A renamed directory's source is copied (at most `budget` nodes in all), since the
    /// layer may hide or replace the original.
    fn resolve(&mut self, dir: &mut ScanDir, below: &[u8], budget: &mut usize) -> io::Result<()> {
        for e in &mut dir.entries {
            let at = target(below, &e.name, e.redirect.as_deref());
            if let Some(sub) = &mut e.dir {
                if e.redirect.is_some() {
                    let source = self
                        .find_bytes(&at)
                        .filter(|&s| self.arena[s].kind == FileKind::Dir);
                    let copy = match source {
                        Some(s) => Some(self.copy_subtree(s, &at, budget)?),
                        None => None,
                    };
                    e.below = Below::Renamed(copy);
                }
                self.resolve(sub, &at, budget)?;
            } else if e.metacopy {
                e.below = match self.find_bytes(&at) {
                    Some(s) if self.arena[s].kind == FileKind::File => {
                        let b = &self.arena[s];
                        let from = match (&b.data, &b.source) {
                            (Some(d), _) => d.clone(),
                            (None, Source::Tar { data, .. }) => DataFrom::Tar {
                                layer: b.layer,
                                data: *data,
                            },
                            (None, Source::Dir) => DataFrom::Dir {
                                layer: b.layer,
                                path: b.layer_path.clone().unwrap_or_else(|| at.clone().into()),
                            },
                            (None, Source::Implicit) => DataFrom::Missing,
                        };
                        Below::Data(from, b.meta.size)
                    }
                    _ => {
                        log::warn!(
                            "/{}: metadata-only copy without a file below: reads fail",
                            String::from_utf8_lossy(&at)
                        );
                        Below::Data(DataFrom::Missing, e.st.st_size as u64)
                    }
                };
            }
        }
        Ok(())
    }

    /// A copy of the subtree `src` (at `path` in the tree), whose directory-layer entries
    /// remember their path in their layer. Hard-linked files stay in their group: they are
    /// the same inode wherever a rename shows them.
    fn copy_subtree(&mut self, src: usize, path: &[u8], budget: &mut usize) -> io::Result<usize> {
        if *budget == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "/{}: renamed directories (overlay.redirect) copy more entries than the \
                     layers below hold",
                    String::from_utf8_lossy(path)
                ),
            ));
        }
        *budget -= 1;
        let mut node = self.arena[src].clone();
        let children = std::mem::take(&mut node.children);
        if node.source == Source::Dir && node.layer_path.is_none() {
            node.layer_path = Some(path.into());
        }
        if node.kind == FileKind::Dir {
            node.group = usize::MAX;
        }
        let id = self.push(node);
        for (name, child) in children {
            let c = self.copy_subtree(child, &join(path, &name), budget)?;
            self.arena[id].children.insert(name, c);
        }
        Ok(id)
    }

    /// Applies a read and resolved directory to the tree node `node`.
    fn apply_scan(
        &mut self,
        layer: u16,
        scan: ScanDir,
        node: usize,
        groups: &mut HashMap<(u64, u64), usize>,
    ) {
        if let Some(h) = &mut self.arena[node].host {
            h.atime = scan.atime;
        }
        if scan.opaque {
            self.arena[node].children.clear();
            self.arena[node].merged = false;
        }
        for hidden in &scan.hidden {
            self.arena[node].children.remove(hidden.as_slice());
        }
        for e in scan.entries {
            let st = &e.st;
            let kind = FileKind::from_mode(st.st_mode).unwrap_or(FileKind::File);
            let group = if kind != FileKind::Dir && st.st_nlink > 1 {
                let next = self.arena.len();
                *groups.entry((st.st_dev, st.st_ino)).or_insert(next)
            } else {
                usize::MAX
            };
            let mut meta = meta_from_stat(st);
            let mut data = None;
            if let Below::Data(from, size) = &e.below {
                meta.size = *size;
                data = Some(from.clone());
            }
            let mut built = BuildNode {
                name: e.name,
                kind,
                meta,
                layer,
                source: Source::Dir,
                link: e.link,
                group,
                host_ino: st.st_ino,
                host: Some(HostExtra::from_stat(st)),
                merged: false,
                children: BTreeMap::new(),
                layer_path: None,
                data,
            };
            let id = match e.below {
                Below::Renamed(copy) => {
                    // A renamed directory merges with its source only, not its own name.
                    self.arena[node].children.remove(&built.name);
                    match copy {
                        Some(c) => {
                            built.children = std::mem::take(&mut self.arena[c].children);
                            built.merged = true;
                            built.group = c;
                            let name = built.name.clone();
                            self.arena[c] = built;
                            self.arena[node].children.insert(name, c);
                            c
                        }
                        None => self.place(node, built),
                    }
                }
                _ => self.place(node, built),
            };
            if let Some(sub) = e.dir {
                self.apply_scan(layer, sub, id, groups);
            }
        }
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

pub(super) fn open_dir_root(path: &Path) -> Result<OwnedFd, Error> {
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
    use super::super::test_support::*;
    use super::super::{LayerInput, LowerTree, ROOT_INO};
    use super::*;
    use crate::tar_index::EntryKind;

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
    fn dir_layers_follow_redirects_and_metacopy_in_their_namespace() {
        let base = tempfile::tempdir().unwrap();
        let top = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("d")).unwrap();
        std::fs::write(base.path().join("d/a"), "a").unwrap();
        std::fs::write(base.path().join("f"), "lower data").unwrap();
        // `d` renamed to `e` (absolute redirect) with an own entry; `d` whited out.
        std::fs::create_dir(top.path().join("e")).unwrap();
        std::fs::write(top.path().join("e/b"), "b").unwrap();
        std::fs::write(top.path().join(".wh.d"), "").unwrap();
        // `f` copied up metadata-only: a sparse file of the same size.
        let f = std::fs::File::create(top.path().join("f")).unwrap();
        f.set_len(10).unwrap();
        let dir = std::fs::File::open(top.path().join("e")).unwrap();
        let set = |fd: BorrowedFd<'_>, n: &std::ffi::CStr, v: &[u8]| sys::set_xattr(fd, n, v, 0);
        if set(dir.as_fd(), c"user.overlay.redirect", b"/d").is_err()
            || set(f.as_fd(), c"user.rfs.metacopy", b"").is_err()
        {
            eprintln!("skipped: no user xattrs on {}", top.path().display());
            return;
        }
        let inputs = || {
            vec![
                LayerInput::Dir(base.path().into()),
                LayerInput::Dir(top.path().into()),
            ]
        };
        let t = LowerTree::build_with_markers(inputs(), Namespace::User).unwrap();
        assert_eq!(names(&t, "e"), ["a", "b"]);
        assert!(t.lookup_path(b"d").is_none());
        let mut buf = [0u8; 32];
        let a = t.lookup_path(b"e/a").unwrap();
        let n = t.open(a).unwrap().read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"a");
        let fi = t.lookup_path(b"f").unwrap();
        let n = t.open(fi).unwrap().read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"lower data");
        // In the other namespace the markers mean nothing.
        let t = LowerTree::build_with_markers(inputs(), Namespace::Trusted).unwrap();
        assert_eq!(names(&t, "e"), ["b"]);
        let fi = t.lookup_path(b"f").unwrap();
        let n = t.open(fi).unwrap().read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..n], &[0u8; 10]);
    }

    /// Layers written from `(path, what)` lists, bottom first: `"dir/"` a directory, `"@x"`
    /// after a path its `user.overlay.redirect` value, `"M"` a metadata-only copy marker,
    /// `".wh.name"` a whiteout file; anything else a file with that content. `None` when
    /// this filesystem refuses user xattrs (the test then says so and passes).
    fn layers(spec: &[&[(&str, &str)]]) -> Option<(tempfile::TempDir, Vec<LayerInput>)> {
        let base = tempfile::tempdir().unwrap();
        let mut inputs = Vec::new();
        for (i, entries) in spec.iter().enumerate() {
            let root = base.path().join(format!("l{i}"));
            std::fs::create_dir(&root).unwrap();
            for (path, what) in *entries {
                let p = root.join(path.trim_end_matches('/'));
                let set = |n: &std::ffi::CStr, v: &[u8]| {
                    let f = std::fs::File::open(&p).unwrap();
                    sys::set_xattr(f.as_fd(), n, v, 0)
                };
                let done = if path.ends_with('/') {
                    std::fs::create_dir_all(&p).unwrap();
                    match what.strip_prefix('@') {
                        Some(r) => set(c"user.overlay.redirect", r.as_bytes()),
                        None => Ok(()),
                    }
                } else if let Some(rest) = what.strip_prefix('M') {
                    // A metadata-only copy: sparse, of the size it claims.
                    let (size, redirect) = rest.split_once('@').unwrap_or((rest, ""));
                    std::fs::File::create(&p)
                        .unwrap()
                        .set_len(size.parse().unwrap())
                        .unwrap();
                    set(c"user.overlay.metacopy", b"").and_then(|()| {
                        if redirect.is_empty() {
                            Ok(())
                        } else {
                            set(c"user.overlay.redirect", redirect.as_bytes())
                        }
                    })
                } else {
                    std::fs::write(&p, what).unwrap();
                    Ok(())
                };
                if done.is_err() {
                    eprintln!("skipped: no user xattrs on {}", base.path().display());
                    return None;
                }
            }
            inputs.push(LayerInput::Dir(root));
        }
        Some((base, inputs))
    }

    fn read(t: &LowerTree, path: &str) -> io::Result<Vec<u8>> {
        let i = t.lookup_path(path.as_bytes()).unwrap();
        let mut buf = vec![0u8; 64];
        let n = t
            .open(i)
            .map_err(|e| io::Error::other(e.to_string()))?
            .read_at(&mut buf, 0)?;
        buf.truncate(n);
        Ok(buf)
    }

    #[test]
    fn a_relative_redirect_names_a_sibling_and_whiteouts_below_it_count() {
        let Some((_d, inputs)) = layers(&[
            &[
                ("p/", ""),
                ("p/d/", ""),
                ("p/d/a", "a"),
                ("q/", ""),
                ("q/d/", ""),
            ],
            // The middle layer deletes q/d: a redirect to it finds nothing.
            &[("q/", ""), ("q/.wh.d", "")],
            &[
                ("p/", ""),
                ("p/e/", "@d"),
                ("p/e/own", "o"),
                ("p/.wh.d", ""),
                ("q/", ""),
                ("q/e/", "@/q/d"),
                ("q/e/own", "o"),
            ],
        ]) else {
            return;
        };
        let t = LowerTree::build_with_markers(inputs, Namespace::User).unwrap();
        assert_eq!(names(&t, "p"), ["e"]);
        assert_eq!(names(&t, "p/e"), ["a", "own"]);
        assert_eq!(read(&t, "p/e/a").unwrap(), b"a");
        assert_eq!(names(&t, "q/e"), ["own"]);
    }

    #[test]
    fn a_redirect_sees_the_layers_below_as_merged_opaque_dirs_included() {
        // `o` is opaque in the middle layer: the base's o/d/gone does not show through it,
        // so the directory renamed from o/d takes only what the middle layer has.
        let Some((_d, inputs)) = layers(&[
            &[("o/", ""), ("o/d/", ""), ("o/d/gone", "g")],
            &[
                ("o/", ""),
                ("o/.wh..wh..opq", ""),
                ("o/d/", ""),
                ("o/d/b", "b"),
            ],
            &[("e/", "@/o/d"), ("o/", ""), ("o/.wh.d", "")],
        ]) else {
            return;
        };
        let t = LowerTree::build_with_markers(inputs, Namespace::User).unwrap();
        assert_eq!(names(&t, "e"), ["b"]);
        assert!(names(&t, "o").is_empty());
    }

    #[test]
    fn redirects_chain_across_layers_and_an_exchange_swaps_children() {
        // d renamed to e in one layer, e to f in the next; a and b exchanged in the top.
        let Some((_d, inputs)) = layers(&[
            &[
                ("d/", ""),
                ("d/x", "x"),
                ("a/", ""),
                ("a/1", "1"),
                ("b/", ""),
                ("b/2", "2"),
            ],
            &[("e/", "@/d"), (".wh.d", "")],
            &[("f/", "@/e"), (".wh.e", ""), ("a/", "@/b"), ("b/", "@/a")],
        ]) else {
            return;
        };
        let t = LowerTree::build_with_markers(inputs, Namespace::User).unwrap();
        assert_eq!(names(&t, ""), ["a", "b", "f"]);
        assert_eq!(names(&t, "f"), ["x"]);
        assert_eq!(read(&t, "f/x").unwrap(), b"x");
        assert_eq!(
            (names(&t, "a"), names(&t, "b")),
            (vec!["2".into()], vec!["1".into()])
        );
    }

    #[test]
    fn a_metadata_only_copy_takes_data_and_size_from_below() {
        let Some((_d, inputs)) = layers(&[
            &[("f", "lower data"), ("g", "other")],
            // `f` renamed to `h` after a chmod (redirect), `g` changed in place, `n` has
            // nothing below: its reads fail, nothing panics.
            &[("h", "M10@/f"), (".wh.f", ""), ("g", "M5"), ("n", "M3")],
        ]) else {
            return;
        };
        let t = LowerTree::build_with_markers(inputs, Namespace::User).unwrap();
        assert_eq!(names(&t, ""), ["g", "h", "n"]);
        assert_eq!(read(&t, "h").unwrap(), b"lower data");
        assert_eq!(read(&t, "g").unwrap(), b"other");
        let g = t.lookup_path(b"g").unwrap();
        assert_eq!(t.node(g).meta().size, 5);
        assert!(read(&t, "n").is_err(), "no data below");
    }

    #[test]
    fn malformed_redirects_are_errors_naming_the_entry() {
        for bad in ["../x", "a/b", "/a//b", "/..", "."] {
            let Some((_d, inputs)) = layers(&[&[("d/", "")], &[("sub/", ""), ("sub/e/", "@x")]])
            else {
                return;
            };
            // Rewrite the value (the helper writes what it is given).
            if let LayerInput::Dir(top) = &inputs[1] {
                let f = std::fs::File::open(top.join("sub/e")).unwrap();
                let v = bad.as_bytes();
                sys::set_xattr(f.as_fd(), c"user.overlay.redirect", v, 0).unwrap();
            }
            let err = LowerTree::build_with_markers(inputs, Namespace::User)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            // The whole chain, as the CLI prints it.
            let mut e = err.to_string();
            let mut cause = std::error::Error::source(&err);
            while let Some(c) = cause {
                e = format!("{e}: {c}");
                cause = c.source();
            }
            assert!(
                e.contains("/sub") && e.contains("\"e\"") && e.contains("user.overlay.redirect"),
                "{bad:?}: {e}"
            );
        }
    }
}
