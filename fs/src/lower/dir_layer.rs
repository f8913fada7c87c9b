//! A host-directory layer (fuse-overlayfs `lowerdir=` style) applied to the builder: walked
//! with `openat` and `O_NOFOLLOW`, reading every whiteout and opaque format (DESIGN rule 4).

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use super::build::{BuildNode, Builder};
use super::node::{FileKind, Meta, Source};
use crate::Error;
use crate::host_stat::HostExtra;
use crate::ovl::{
    self, NameRole, OPAQUE_MARKER, is_opaque_xattr, is_whiteout_stat, is_xattr_whiteout,
};
use crate::sys;

impl Builder {
    /// Applies the directory layer `root`; returns its `st_blksize`.
    pub(super) fn apply_dir(&mut self, layer: u16, root: BorrowedFd<'_>) -> io::Result<u32> {
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
}
