//! Test fixtures for the rooms' unit tests: a [`UnionFs`] over layers built in a temp dir
//! (host directories), with an empty upper and work dir, driven without a mount.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Attr, ROOT_INO, UnionFs, UpperDirs};
use crate::lower::{LayerInput, LowerTree};

/// One entry of a test layer.
pub(super) enum Node<'a> {
    Dir,
    File(&'a [u8]),
    /// A sparse file of this many bytes.
    Sparse(u64),
}

pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
    pub(super) fs: UnionFs,
}

/// Writes `entries` under `root` (parents first, as listed).
fn write_layer(root: &Path, entries: &[(&str, Node<'_>)]) {
    std::fs::create_dir_all(root).expect("layer dir");
    for (path, node) in entries {
        let p = root.join(path);
        match node {
            Node::Dir => std::fs::create_dir_all(&p).expect("dir"),
            Node::File(data) => std::fs::write(&p, data).expect("file"),
            Node::Sparse(size) => std::fs::File::create(&p)
                .and_then(|f| f.set_len(*size))
                .expect("sparse file"),
        }
    }
}

impl Fixture {
    /// Directory layers (bottom first) under an empty upper.
    pub(super) fn new(layers: &[&[(&str, Node<'_>)]]) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let inputs = layers
            .iter()
            .enumerate()
            .map(|(i, entries)| {
                let root = dir.path().join(format!("lower{i}"));
                write_layer(&root, entries);
                LayerInput::Dir(root)
            })
            .collect();
        Fixture::over(dir, inputs)
    }

    fn over(dir: tempfile::TempDir, inputs: Vec<LayerInput>) -> Fixture {
        let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
        for d in [&upper, &work] {
            std::fs::create_dir(d).expect("upper dirs");
            // As a fresh upper is made: the test's own umask must not matter.
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let tree = LowerTree::build(inputs).expect("lower tree");
        let fs = UnionFs::new(tree, Some(UpperDirs { upper, work })).expect("union");
        Fixture { dir, fs }
    }

    /// The host path of `rel` in the upper.
    pub(super) fn upper(&self, rel: &str) -> PathBuf {
        self.dir.path().join("upper").join(rel)
    }

    /// Looks every component of `path` up from the root (one kernel reference each).
    pub(super) fn walk(&self, path: &str) -> Attr {
        let mut attr = self.fs.getattr(ROOT_INO).expect("root");
        for c in path.split('/').filter(|c| !c.is_empty()) {
            attr = self
                .fs
                .lookup(attr.ino, OsStr::new(c))
                .unwrap_or_else(|e| panic!("lookup {c} in {path}: {e}"));
        }
        attr
    }

    /// What the work dir holds (it should be empty between operations).
    pub(super) fn work_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("work"))
            .expect("read work dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The value of xattr `name` of `rel` in the upper, if set.
    pub(super) fn upper_xattr(&self, rel: &str, name: &str) -> Option<Vec<u8>> {
        let f = std::fs::File::open(self.upper(rel)).expect("open upper entry");
        let name = crate::sys::cstr(name.as_bytes()).expect("xattr name");
        crate::sys::get_xattr(f.as_fd(), &name).expect("getxattr")
    }
}
