//! Test fixtures for the rooms' unit tests: a [`UnionFs`] over layers built in a temp dir
//! (host directories, or a tar with owners of its own), with an empty upper and work dir,
//! driven without a mount. The union stores ownership rootless ([`Ownership::Override`]
//! with this process's ids) unless a test asks for another mode, so the tests need no root.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Attr, Caller, Ownership, ROOT_INO, UnionConfig, UnionFs, UpperDirs};
use crate::lower::{LayerInput, LowerTree};

/// One entry of a test layer.
pub(super) enum Node<'a> {
    Dir,
    File(&'a [u8]),
    /// A sparse file of this many bytes.
    Sparse(u64),
    Symlink(&'a str),
    /// A kernel-format whiteout (char 0/0; a `.wh.` file where mknod is refused).
    Whiteout,
    /// A hard link to the entry at this path of the same layer (listed before it).
    HardLink(&'a str),
}

/// A member of a tar layer: path, kind, mode, uid, gid.
pub(super) struct TarMember<'a> {
    pub(super) path: &'a str,
    pub(super) node: Node<'a>,
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
}

/// The rootless mode with this process's ids.
pub(super) fn rootless() -> Ownership {
    Ownership::Override {
        own_uid: nix::unistd::geteuid().as_raw(),
        own_gid: nix::unistd::getegid().as_raw(),
    }
}

/// Whether a test that needs root may run: fails without root unless
/// `RFS_SKIP_PRIVILEGED=1`, which skips it with a note (as the mount tests do).
pub(super) fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("RFS_SKIP_PRIVILEGED").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: not running as root (RFS_SKIP_PRIVILEGED=1)");
        return false;
    }
    panic!("{test}: not running as root; run as root, or set RFS_SKIP_PRIVILEGED=1 to skip");
}

/// A tar member owned by `uid:gid`.
pub(super) fn member<'a>(
    path: &'a str,
    node: Node<'a>,
    mode: u32,
    (uid, gid): (u64, u64),
) -> TarMember<'a> {
    TarMember {
        path,
        node,
        mode,
        uid,
        gid,
    }
}

/// A union over test layers; the temp dir goes with it.
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
            Node::Symlink(target) => std::os::unix::fs::symlink(target, &p).expect("symlink"),
            Node::HardLink(to) => std::fs::hard_link(root.join(to), &p).expect("hard link"),
            Node::Whiteout => {
                let made = nix::sys::stat::mknod(
                    &p,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    0,
                );
                if made.is_err() {
                    let name = p.file_name().expect("name").to_string_lossy().into_owned();
                    std::fs::write(p.with_file_name(format!(".wh.{name}")), "").expect("wh");
                }
            }
        }
    }
}

/// A tar layer file at `path` with `members`, indexed.
fn tar_layer(path: &Path, members: &[TarMember<'_>]) -> LayerInput {
    let mut b = tar::Builder::new(std::fs::File::create(path).expect("tar file"));
    for m in members {
        let mut h = tar::Header::new_gnu();
        h.set_mode(m.mode);
        h.set_uid(m.uid);
        h.set_gid(m.gid);
        h.set_mtime(1_600_000_000);
        match m.node {
            Node::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, m.path, std::io::empty())
                    .expect("dir");
            }
            Node::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, m.path, data).expect("file");
            }
            Node::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, m.path, target).expect("symlink");
            }
            Node::Sparse(_) | Node::Whiteout | Node::HardLink(_) => {
                unimplemented!("not needed in tar layers")
            }
        }
    }
    b.into_inner().expect("tar");
    let index = crate::tar_index::build(
        std::fs::File::open(path).expect("open tar"),
        &Default::default(),
    )
    .expect("index");
    LayerInput::Tar {
        file: path.to_path_buf(),
        offset: 0,
        index,
    }
}

impl Fixture {
    /// Directory layers (bottom first) under an empty upper, rootless.
    pub(super) fn new(layers: &[&[(&str, Node<'_>)]]) -> Fixture {
        Fixture::with_config(
            layers,
            UnionConfig {
                ownership: rootless(),
                ..UnionConfig::default()
            },
        )
    }

    /// Directory layers (bottom first) under an empty upper, as `config` says.
    pub(super) fn with_config(layers: &[&[(&str, Node<'_>)]], config: UnionConfig) -> Fixture {
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
        Fixture::over(dir, inputs, config)
    }

    /// One tar layer of `members` under an empty upper, storing ownership as `ownership`.
    pub(super) fn tar(members: &[TarMember<'_>], ownership: Ownership) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = tar_layer(&dir.path().join("layer.tar"), members);
        let config = UnionConfig {
            ownership,
            ..UnionConfig::default()
        };
        Fixture::over(dir, vec![layer], config)
    }

    /// The union of `inputs` under a fresh upper in `dir`.
    fn over(dir: tempfile::TempDir, inputs: Vec<LayerInput>, config: UnionConfig) -> Fixture {
        let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
        for d in [&upper, &work] {
            std::fs::create_dir(d).expect("upper dirs");
            // As a fresh upper is made: the test's own umask must not matter.
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let tree = LowerTree::build(inputs).expect("lower tree");
        let fs =
            UnionFs::with_config(tree, Some(UpperDirs { upper, work }), config).expect("union");
        Fixture { dir, fs }
    }

    /// The host path of `rel` in the upper.
    pub(super) fn upper(&self, rel: &str) -> PathBuf {
        self.dir.path().join("upper").join(rel)
    }

    /// Opens `ino` for writing and closes it again: the copy-up (or completion of a
    /// metadata-only copy) a writer's open makes.
    pub(super) fn open_for_write(&self, ino: u64) {
        let fh = self
            .fs
            .open(ino, libc::O_WRONLY, Caller::ROOT)
            .expect("open for writing")
            .fh;
        self.fs.release(fh);
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

    /// The data of `ino` (up to 4 MiB), through a read-only handle.
    pub(super) fn read(&self, ino: u64) -> Vec<u8> {
        let o = self
            .fs
            .open(ino, libc::O_RDONLY, Caller::ROOT)
            .expect("open");
        let data = self.fs.read(o.fh, 0, 4 << 20).expect("read");
        self.fs.release(o.fh);
        data
    }

    /// Whether `rel` in the upper is a whiteout (char 0/0, or a `.wh.` file beside it).
    pub(super) fn is_whiteout(&self, rel: &str) -> bool {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let p = self.upper(rel);
        let dev = std::fs::symlink_metadata(&p)
            .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0);
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        dev || p.with_file_name(format!(".wh.{name}")).exists()
    }

    /// The names `readdir` shows in directory `ino`, without `.` and `..`, sorted.
    pub(super) fn names(&self, ino: u64) -> Vec<String> {
        let fh = self.fs.opendir(ino).expect("opendir");
        let mut names: Vec<String> = self
            .fs
            .readdir(fh)
            .expect("readdir")
            .iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .filter(|n| n != "." && n != "..")
            .collect();
        self.fs.release(fh);
        names.sort();
        names
    }

    /// What the work dir holds (it should be empty between operations).
    pub(super) fn work_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("work"))
            .expect("read work dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The value of the overlay marker `suffix` (`overlay.opaque`, `rfs.metacopy`...) of
    /// `rel` in the upper, in whichever namespace the upper keeps markers.
    pub(super) fn marker(&self, rel: &str, suffix: &str) -> Option<Vec<u8>> {
        self.upper_xattr(rel, &format!("trusted.{suffix}"))
            .or_else(|| self.upper_xattr(rel, &format!("user.{suffix}")))
    }

    /// The value of xattr `name` of `rel` in the upper, if set.
    pub(super) fn upper_xattr(&self, rel: &str, name: &str) -> Option<Vec<u8>> {
        let f = std::fs::File::open(self.upper(rel)).expect("open upper entry");
        let name = crate::sys::cstr(name.as_bytes()).expect("xattr name");
        crate::sys::get_xattr(f.as_fd(), &name).expect("getxattr")
    }
}
