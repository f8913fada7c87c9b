//! Differential test of rfs against kernel overlayfs, the semantic oracle (DESIGN §2, §4).
//!
//! Three directory lowers (hard links, symlinks, user xattrs, nested dirs, a file hiding a dir,
//! and in the middle layer a char 0/0 whiteout and a `trusted.overlay.opaque=y` dir) are mounted
//! twice, with separate uppers: by kernel overlayfs (`redirect_dir=on,index=on`, so directory
//! renames and hard links have an oracle) and by rfs. A seeded random sequence of operations,
//! its targets picked from the kernel's merged tree, is applied to both mount points:
//!
//! - right after mounting, before anything is read, every stat field of every entry must be
//!   the kernel's: times to the nanosecond, nlink, blocks, st_ino... (exclusions at
//!   [`full_stat_errors`]);
//! - every operation must return the same result (success, or the same errno; for reads the
//!   same data);
//! - every 100 operations and at the end of the seed the merged trees must be identical: names,
//!   types, modes, owners, sizes (not of dirs), contents, link targets, rdev, `user.*` xattrs,
//!   nlink of non-directories, mtime (within a tolerance: the lowers' times are years old, so a
//!   lost or spurious update shows) and the partition of non-directories into hard-link groups
//!   by st_ino, and the st_ino itself of the non-directories rfs numbers from the lowers (both
//!   report the host's, the lowers being on one filesystem);
//! - within rfs, readdir's d_ino equals lstat's st_ino and st_dev is one for every entry;
//! - after unmounting, the uppers agree on whiteouts (char 0/0) and opaque markers
//!   (`trusted.overlay.opaque=y`), except inside renamed directories (see [`Renamed`]); opaque
//!   markers only where the lowers have a directory (the kernel also marks every directory it
//!   creates in a merged parent, an optimisation without effect elsewhere);
//! - rfs remounted on the same lowers and upper shows exactly the same tree, st_ino included;
//! - kernel overlayfs mounted on rfs's upper shows the same tree as rfs did;
//! - stacked: each system's upper becomes the top lower of a new mount with a fresh upper
//!   (rfs's under rfs; the kernel's, without its work dir, under the kernel with
//!   `redirect_dir=on,metacopy=on,index=on`), and both must show the tree rfs showed before
//!   (renamed directories keep their children through `overlay.redirect`, metadata-only
//!   copies take their data from below); then more operations run on both stacked mounts,
//!   compared as above, except the st_ino of entries from the two old uppers (different
//!   host files, see [`lower_ino_errors`]) and the mtime the kernel gives a file when it
//!   completes a metadata-only copy (its artefact, see [`Run::completes_metacopy`]).
//!
//! A divergence fails with the seed, the operation's index, both results and the last
//! operations. Seeds: `RFS_DIFF_SEEDS` is a count (`10`: seeds 1..=10) or a comma list (`7,42`),
//! default `1,2,3`; `RFS_DIFF_OPS` is the number of operations per seed (default 1000),
//! `RFS_DIFF_STACKED_OPS` the number on the stacked mounts (default half that).
//! `RFS_DIFF_MINIMIZE=1` shrinks a failing seed's operations (delta debugging, each trial on
//! fresh mounts) to a short sequence failing the same check; `RFS_DIFF_MINIMIZE=TEXT` also
//! requires TEXT (say a path) in the failure message. If the kernel refuses `index=on` or
//! `redirect_dir=on`, the test says so and mounts it without.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{
    DirBuilderExt, DirEntryExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::{AT_FDCWD, RenameFlags};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::common::{MountGuard, Scratch};

// ---------------------------------------------------------------------------------------------
// Raw xattr calls (no xattr crate among the dependencies; libc is a dependency of the package).

/// `l*xattr(2)` wrappers: they never follow a final symlink.
#[allow(unsafe_code)]
pub(crate) mod xattr {
    use std::ffi::CString;
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    fn cpath(p: &Path) -> io::Result<CString> {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(22))
    }

    fn cname(n: &str) -> io::Result<CString> {
        CString::new(n).map_err(|_| io::Error::from_raw_os_error(22))
    }

    /// The names of `p`'s xattrs.
    pub(crate) fn list(p: &Path) -> io::Result<Vec<String>> {
        let c = cpath(p)?;
        let mut buf = vec![0u8; 1024];
        loop {
            // SAFETY: `c` is NUL-terminated; `buf` is writable for `buf.len()` bytes.
            let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ERANGE) || buf.len() > 1 << 20 {
                return Err(e);
            }
            buf.resize(buf.len() * 8, 0);
        }
    }

    /// The value of `p`'s xattr `name`, `None` if it has none.
    pub(crate) fn get(p: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
        let (c, n) = (cpath(p)?, cname(name)?);
        let mut buf = vec![0u8; 1024];
        loop {
            // SAFETY: `c` and `n` are NUL-terminated; `buf` is writable for `buf.len()` bytes.
            let r = unsafe {
                libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            if r >= 0 {
                buf.truncate(r as usize);
                return Ok(Some(buf));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENODATA) => return Ok(None),
                Some(libc::ERANGE) if buf.len() <= 1 << 20 => buf.resize(buf.len() * 8, 0),
                _ => return Err(e),
            }
        }
    }

    /// Sets `p`'s xattr `name` to `value`.
    pub(crate) fn set(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
        let (c, n) = (cpath(p)?, cname(name)?);
        // SAFETY: `c` and `n` are NUL-terminated; `value` is readable for its length.
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Removes `p`'s xattr `name`.
    pub(crate) fn remove(p: &Path, name: &str) -> io::Result<()> {
        let (c, n) = (cpath(p)?, cname(name)?);
        // SAFETY: `c` and `n` are NUL-terminated.
        let r = unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building lowers.

/// Small helpers to build layer trees on the host (panic on failure: test set-up).
pub(crate) mod build {
    use super::*;

    /// Joins a relative path (`""` is `root` itself).
    pub(crate) fn at(root: &Path, rel: &str) -> PathBuf {
        if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        }
    }

    /// A regular file with `data` and `mode`.
    pub(crate) fn file(root: &Path, rel: &str, data: &[u8], mode: u32) {
        let p = at(root, rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, data).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A directory (and its parents) with `mode`.
    pub(crate) fn dir(root: &Path, rel: &str, mode: u32) {
        let p = at(root, rel);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A symlink `rel -> target`.
    pub(crate) fn symlink(root: &Path, rel: &str, target: &str) {
        std::os::unix::fs::symlink(target, at(root, rel)).unwrap();
    }

    /// A hard link `rel` to `existing`.
    pub(crate) fn link(root: &Path, existing: &str, rel: &str) {
        fs::hard_link(at(root, existing), at(root, rel)).unwrap();
    }

    /// A char 0/0 whiteout.
    pub(crate) fn whiteout(root: &Path, rel: &str) {
        nix::sys::stat::mknod(&at(root, rel), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    }

    /// A device node or fifo.
    pub(crate) fn node(root: &Path, rel: &str, kind: SFlag, mode: u32, rdev: u64) {
        nix::sys::stat::mknod(&at(root, rel), kind, Mode::from_bits_truncate(mode), rdev).unwrap();
    }

    /// `lchown`.
    pub(crate) fn owner(root: &Path, rel: &str, uid: u32, gid: u32) {
        nix::unistd::fchownat(
            AT_FDCWD,
            &at(root, rel),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    /// Sets an xattr.
    pub(crate) fn xattr(root: &Path, rel: &str, name: &str, value: &[u8]) {
        super::xattr::set(&at(root, rel), name, value)
            .unwrap_or_else(|e| panic!("setxattr {name} on {rel}: {e}"));
    }

    /// `lutimes` to `sec.nsec` (atime and mtime).
    pub(crate) fn time(root: &Path, rel: &str, sec: i64, nsec: i64) {
        let t = TimeSpec::new(sec, nsec);
        nix::sys::stat::utimensat(
            AT_FDCWD,
            &at(root, rel),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    /// Gives every entry under `root` (root included) a distinct old mtime and a later atime
    /// (so a system that reports one for the other shows), deepest first so a directory's
    /// times are not disturbed by its children.
    pub(crate) fn old_times(root: &Path, base: i64) {
        let mut all = super::list(root);
        all.sort_by(|a, b| b.0.cmp(&a.0));
        for (i, (rel, _)) in all.iter().enumerate() {
            let mtime = TimeSpec::new(base + 3600 * i as i64, 123_456_789 + i as i64);
            let atime = TimeSpec::new(base + 3600 * i as i64 + 1800, 987_654_321 - i as i64);
            nix::sys::stat::utimensat(
                AT_FDCWD,
                &at(root, rel),
                &atime,
                &mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
    }
}

/// Builds the three lowers under `base`; returns them top first (overlayfs `lowerdir=` order).
pub(crate) fn build_lowers(base: &Path) -> Vec<PathBuf> {
    use build::*;
    let top = base.join("top");
    let mid = base.join("mid");
    let bot = base.join("bottom");
    for d in [&top, &mid, &bot] {
        fs::create_dir_all(d).unwrap();
    }
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();

    // Bottom layer.
    file(&bot, "a", b"bottom a\n", 0o644);
    file(&bot, "b", b"bottom b\n", 0o600);
    file(&bot, "big", &big, 0o644);
    file(&bot, "mode700", b"private\n", 0o700);
    owner(&bot, "mode700", 1000, 1000);
    file(&bot, "setuid", b"#!/bin/sh\n", 0o4755);
    file(&bot, "xa", b"xattrs\n", 0o644);
    xattr(&bot, "xa", "user.foo", b"bar");
    xattr(&bot, "xa", "user.empty", b"");
    dir(&bot, "d1", 0o755);
    xattr(&bot, "d1", "user.dx", b"bottom");
    file(&bot, "d1/f1", b"bottom f1\n", 0o644);
    file(&bot, "d1/f2", b"bottom f2\n", 0o644);
    dir(&bot, "d1/sub/deep", 0o755);
    file(&bot, "d1/sub/deep/x", b"deep x\n", 0o644);
    file(&bot, "d1/sub/y", b"sub y\n", 0o640);
    owner(&bot, "d1/sub/y", 1234, 1234);
    symlink(&bot, "d1/symdir", "sub");
    file(&bot, "hl1", b"hard link group bottom\n", 0o644);
    link(&bot, "hl1", "d1/hl2");
    symlink(&bot, "sym", "a");
    symlink(&bot, "dangling", "nowhere");
    dir(&bot, "gone", 0o755);
    file(&bot, "gone/g1", b"hidden by a whiteout\n", 0o644);
    dir(&bot, "op", 0o755);
    file(&bot, "op/hidden1", b"hidden by opaque\n", 0o644);
    dir(&bot, "op/hiddendir", 0o755);
    dir(&bot, "x", 0o755);
    file(&bot, "x/under", b"hidden by the file x\n", 0o644);
    dir(&bot, "empty", 0o755);
    file(&bot, "filewillbedir", b"file below a dir\n", 0o644);
    dir(&bot, "m1/deep", 0o711);
    file(&bot, "m1/deep/bottom", b"m1 bottom\n", 0o644);
    node(&bot, "fifo", SFlag::S_IFIFO, 0o644, 0);
    node(
        &bot,
        "null",
        SFlag::S_IFCHR,
        0o666,
        nix::sys::stat::makedev(1, 3),
    );
    old_times(&bot, 978_307_200); // 2001

    // Middle layer: a whiteout, an opaque dir, a dir over a file, more hard links.
    whiteout(&mid, "gone");
    dir(&mid, "op", 0o750);
    xattr(&mid, "op", "trusted.overlay.opaque", b"y");
    file(&mid, "op/visible", b"in the opaque dir\n", 0o644);
    dir(&mid, "d1", 0o775);
    xattr(&mid, "d1", "user.dx", b"middle");
    file(&mid, "d1/f1", b"middle f1 overrides\n", 0o600);
    whiteout(&mid, "d1/f2");
    file(&mid, "d1/f3", b"middle f3\n", 0o644);
    dir(&mid, "d1/sub", 0o755);
    file(&mid, "d1/sub/z", b"middle z\n", 0o644);
    dir(&mid, "filewillbedir", 0o755);
    file(&mid, "filewillbedir/inner", b"inner\n", 0o644);
    file(&mid, "hl3", b"hard link group middle\n", 0o644);
    link(&mid, "hl3", "hl4");
    dir(&mid, "m1", 0o755);
    file(&mid, "m1/mid", b"m1 mid\n", 0o644);
    file(&mid, "mid_only", b"mid only\n", 0o644);
    owner(&mid, "mid_only", 1000, 1234);
    old_times(&mid, 1_104_537_600); // 2005

    // Top layer: a file hiding a dir, a merged dir's own metadata.
    file(&top, "x", b"top file hides dir x\n", 0o644);
    dir(&top, "d1", 0o750);
    owner(&top, "d1", 1000, 1000);
    file(&top, "d1/top", b"top in d1\n", 0o644);
    file(&top, "top_only", b"top only\n", 0o644);
    dir(&top, "tdir", 0o755);
    file(&top, "tdir/t", b"t\n", 0o644);
    dir(&top, "m1", 0o755);
    file(&top, "m1/m1top", b"m1 top\n", 0o644);
    symlink(&top, "toplink", "d1/top");
    old_times(&top, 1_262_304_000); // 2010

    vec![top, mid, bot]
}

// ---------------------------------------------------------------------------------------------
// Tree snapshots.

/// The type of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

fn kind_of(ft: fs::FileType) -> Kind {
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    }
}

/// What a tree snapshot records of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    /// Permission bits with setuid/setgid/sticky.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) rdev: u64,
    pub(crate) sha256: Option<String>,
    pub(crate) target: Option<String>,
    /// `user.*` xattrs only.
    pub(crate) xattrs: BTreeMap<String, Vec<u8>>,
    pub(crate) mtime: (i64, i64),
    pub(crate) ino: u64,
    pub(crate) dev: u64,
    pub(crate) nlink: u64,
    /// The inode number readdir reported for the entry (`None` for the root).
    pub(crate) d_ino: Option<u64>,
}

/// A merged tree: relative path (`""` for the root) to entry.
pub(crate) type Tree = BTreeMap<String, Node>;

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Relative paths and kinds of everything under `root` (root included as `""`), sorted.
pub(crate) fn list(root: &Path) -> Vec<(String, Kind)> {
    let mut out = vec![(String::new(), Kind::Dir)];
    let mut i = 0;
    while i < out.len() {
        if out[i].1 == Kind::Dir {
            let rel = out[i].0.clone();
            let rd = fs::read_dir(build::at(root, &rel))
                .unwrap_or_else(|e| panic!("readdir {}/{rel}: {e}", root.display()));
            for e in rd {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                out.push((join(&rel, &name), kind_of(e.file_type().unwrap())));
            }
        }
        i += 1;
    }
    out.sort();
    out
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Opens never follow a final symlink and never block on a fifo.
const NOFOLLOW_NONBLOCK: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK;

fn read_nofollow(p: &Path) -> io::Result<Vec<u8>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(NOFOLLOW_NONBLOCK)
        .open(p)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(data)
}

fn node_of(p: &Path, d_ino: Option<u64>) -> Node {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let kind = kind_of(md.file_type());
    let sha256 = (kind == Kind::File).then(|| {
        sha256_hex(&read_nofollow(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
    });
    let target = (kind == Kind::Symlink).then(|| {
        fs::read_link(p)
            .unwrap_or_else(|e| panic!("readlink {}: {e}", p.display()))
            .to_string_lossy()
            .into_owned()
    });
    let mut xattrs = BTreeMap::new();
    for name in xattr::list(p).unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display())) {
        if name.starts_with("user.") {
            let v = xattr::get(p, &name)
                .unwrap_or_else(|e| panic!("getxattr {name} {}: {e}", p.display()))
                .unwrap_or_default();
            xattrs.insert(name, v);
        }
    }
    Node {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: md.size(),
        rdev: md.rdev(),
        sha256,
        target,
        xattrs,
        mtime: (md.mtime(), md.mtime_nsec()),
        ino: md.ino(),
        dev: md.dev(),
        nlink: md.nlink(),
        d_ino,
    }
}

/// Everything under `root`, with contents hashed and `user.*` xattrs read.
pub(crate) fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::new();
    tree.insert(String::new(), node_of(root, None));
    let mut dirs = vec![String::new()];
    while let Some(rel) = dirs.pop() {
        let rd = fs::read_dir(build::at(root, &rel))
            .unwrap_or_else(|e| panic!("readdir {}/{rel}: {e}", root.display()));
        for e in rd {
            let e = e.unwrap();
            let path = join(&rel, &e.file_name().to_string_lossy());
            let node = node_of(&e.path(), Some(e.ino()));
            if node.kind == Kind::Dir {
                dirs.push(path.clone());
            }
            tree.insert(path, node);
        }
    }
    tree
}

/// Seconds two mtimes may differ between the systems (both update "now" within milliseconds
/// of each other; the lowers' times are years apart).
const MTIME_SLACK: i64 = 30;

fn describe(n: &Node) -> String {
    format!(
        "{:?} mode {:o} {}:{} size {} rdev {} nlink {} mtime {}.{:09} sha {} target {:?} xattrs {:?}",
        n.kind,
        n.mode,
        n.uid,
        n.gid,
        n.size,
        n.rdev,
        n.nlink,
        n.mtime.0,
        n.mtime.1,
        n.sha256.as_deref().map_or("-", |s| &s[..12]),
        n.target,
        n.xattrs
            .iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
            .collect::<Vec<_>>(),
    )
}

/// The lowers are directories on one filesystem, so both systems number a lower entry by its
/// host `st_ino`, and keep that number through copy-up: every non-directory that rfs numbers
/// from the lowers (no upper bit) and that is not a hard link must have the kernel's st_ino.
/// On the stacked mounts the top lowers are the two systems' own old uppers, different host
/// files: an entry whose numbers are both from those (`stacked_tops`: the host inode numbers
/// of the kernel's and of rfs's) is exempt; an entry from the shared lowers is not.
pub(crate) fn lower_ino_errors(
    kernel: &Tree,
    rfs: &Tree,
    stacked_tops: Option<&(BTreeSet<u64>, BTreeSet<u64>)>,
) -> Vec<String> {
    let exempt =
        |k: u64, r: u64| stacked_tops.is_some_and(|(kt, rt)| kt.contains(&k) && rt.contains(&r));
    rfs.iter()
        .filter(|(_, r)| r.kind != Kind::Dir && r.nlink == 1 && r.ino < 1 << 63)
        .filter_map(|(p, r)| {
            let k = kernel.get(p)?;
            (k.nlink == 1 && k.ino != r.ino && !exempt(k.ino, r.ino)).then(|| {
                format!(
                    "/{p}: st_ino {} on rfs, {} on kernel overlayfs",
                    r.ino, k.ino
                )
            })
        })
        .collect()
}

/// Differences between two systems' trees (`want` is the oracle): everything but inode
/// numbers, which are compared as a partition into hard-link groups.
pub(crate) fn diff_trees(want: &Tree, got: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (path, w) in want {
        let Some(g) = got.get(path) else {
            out.push(format!("/{path}: missing (want {})", describe(w)));
            continue;
        };
        let mut same = w.kind == g.kind
            && w.mode == g.mode
            && w.uid == g.uid
            && w.gid == g.gid
            && w.rdev == g.rdev
            && w.sha256 == g.sha256
            && w.target == g.target
            && w.xattrs == g.xattrs
            && (w.mtime.0 - g.mtime.0).abs() <= MTIME_SLACK;
        if w.kind != Kind::Dir {
            same &= w.size == g.size && w.nlink == g.nlink;
        }
        if !same {
            out.push(format!(
                "/{path}:\n      want {}\n      got  {}",
                describe(w),
                describe(g)
            ));
        }
    }
    for (path, g) in got {
        if !want.contains_key(path) {
            out.push(format!("/{path}: unexpected ({})", describe(g)));
        }
    }
    let (wg, gg) = (link_groups(want), link_groups(got));
    for group in wg.difference(&gg) {
        out.push(format!("hard-link group {group:?} only in the oracle"));
    }
    for group in gg.difference(&wg) {
        out.push(format!("hard-link group {group:?} only in rfs"));
    }
    out
}

/// Non-directories grouped by st_ino, groups of two or more.
pub(crate) fn link_groups(t: &Tree) -> BTreeSet<Vec<String>> {
    let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (p, n) in t {
        if n.kind != Kind::Dir {
            by_ino.entry(n.ino).or_default().push(p.clone());
        }
    }
    by_ino.into_values().filter(|g| g.len() > 1).collect()
}

/// rfs's own identity rules on a snapshot: d_ino == st_ino, one st_dev (DESIGN rule 14).
pub(crate) fn identity_errors(t: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    let dev = t.get("").map(|n| n.dev);
    for (p, n) in t {
        if let Some(d) = n.d_ino
            && d != n.ino
        {
            out.push(format!("/{p}: readdir d_ino {d} != st_ino {}", n.ino));
        }
        if Some(n.dev) != dev {
            out.push(format!("/{p}: st_dev {} != root's {dev:?}", n.dev));
        }
    }
    out
}

/// Exact differences between two snapshots of one system (remount): every field.
pub(crate) fn diff_exact(before: &Tree, after: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => out.push(format!("/{p}: gone after remount")),
            Some(a) => {
                // st_dev may change across mounts; nothing else may.
                let a = Node {
                    dev: b.dev,
                    ..a.clone()
                };
                let b_cmp = Node {
                    size: if b.kind == Kind::Dir { 0 } else { b.size },
                    nlink: if b.kind == Kind::Dir { 0 } else { b.nlink },
                    ..b.clone()
                };
                let a_cmp = Node {
                    size: if a.kind == Kind::Dir { 0 } else { a.size },
                    nlink: if a.kind == Kind::Dir { 0 } else { a.nlink },
                    ..a.clone()
                };
                if a_cmp != b_cmp {
                    out.push(format!(
                        "/{p}:\n      before {} ino {} d_ino {:?}\n      after  {} ino {} d_ino {:?}",
                        describe(b),
                        b.ino,
                        b.d_ino,
                        describe(&a),
                        a.ino,
                        a.d_ino
                    ));
                }
            }
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            out.push(format!("/{p}: appeared after remount"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Every stat field.

/// Everything `lstat` reports of one entry but `st_dev` (each mount has its own device by
/// construction; rfs's one device is [`identity_errors`]' concern). Taken without opening
/// anything: a read moves the lower file's atime on the host, which kernel overlayfs reports
/// live and rfs as it was at mount (DESIGN: the atime of lower reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FullStat {
    /// `st_mode`, type bits included.
    pub(crate) mode: u32,
    pub(crate) ino: u64,
    pub(crate) nlink: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) rdev: u64,
    pub(crate) size: u64,
    pub(crate) blksize: u64,
    pub(crate) blocks: u64,
    pub(crate) atime: (i64, i64),
    pub(crate) mtime: (i64, i64),
    pub(crate) ctime: (i64, i64),
}

impl FullStat {
    pub(crate) fn of(p: &Path) -> FullStat {
        let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        FullStat {
            mode: md.mode(),
            ino: md.ino(),
            nlink: md.nlink(),
            uid: md.uid(),
            gid: md.gid(),
            rdev: md.rdev(),
            size: md.size(),
            blksize: md.blksize(),
            blocks: md.blocks(),
            atime: (md.atime(), md.atime_nsec()),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }

    /// The fields by name, printed, for messages that name only what differs.
    fn fields(&self) -> [(&'static str, String); 12] {
        let t = |(s, ns): (i64, i64)| format!("{s}.{ns:09}");
        [
            ("mode", format!("{:o}", self.mode)),
            ("ino", self.ino.to_string()),
            ("nlink", self.nlink.to_string()),
            ("uid", self.uid.to_string()),
            ("gid", self.gid.to_string()),
            ("rdev", self.rdev.to_string()),
            ("size", self.size.to_string()),
            ("blksize", self.blksize.to_string()),
            ("blocks", self.blocks.to_string()),
            ("atime", t(self.atime)),
            ("mtime", t(self.mtime)),
            ("ctime", t(self.ctime)),
        ]
    }

    /// `want: got` for each field that differs.
    pub(crate) fn diff(want: &FullStat, got: &FullStat) -> Vec<String> {
        want.fields()
            .into_iter()
            .zip(got.fields())
            .filter(|(w, g)| w.1 != g.1)
            .map(|((name, w), (_, g))| format!("{name} {w} != {g}"))
            .collect()
    }
}

/// [`FullStat`] of everything under `root` (root included as `""`). Listing the directories
/// moves no atime that either system reports: rfs lists every lower directory when it mounts,
/// which leaves the host's atime past the directory's mtime and ctime, where relatime keeps it.
pub(crate) fn full_stats(root: &Path) -> BTreeMap<String, FullStat> {
    list(root)
        .into_iter()
        .map(|(rel, _)| {
            let st = FullStat::of(&build::at(root, &rel));
            (rel, st)
        })
        .collect()
}

/// Differences in every stat field between the kernel's merged tree (`want`) and rfs's,
/// both right after mounting, when every entry below the root is an untouched entry of the
/// directory lowers: mode, ino (the lowers are on one filesystem: both report the host's),
/// nlink (a directory that merges several layers reports 1 in both, another its own), owner,
/// rdev, size (directories' too), blksize, blocks, and atime, mtime and ctime to the
/// nanosecond.
///
/// Excluded: `st_dev` everywhere (see [`FullStat`]); for the root, which is the upper directory
/// in both systems (one per mount, made by the test), its ino (FUSE's root is always 1), size,
/// blocks and times, which are those of two different directories.
pub(crate) fn full_stat_errors(
    want: &BTreeMap<String, FullStat>,
    got: &BTreeMap<String, FullStat>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, w) in want {
        let Some(g) = got.get(p) else {
            out.push(format!("/{p}: missing"));
            continue;
        };
        let differ = if p.is_empty() {
            let blank = |s: &FullStat| FullStat {
                ino: 0,
                size: 0,
                blocks: 0,
                atime: (0, 0),
                mtime: (0, 0),
                ctime: (0, 0),
                ..s.clone()
            };
            FullStat::diff(&blank(w), &blank(g))
        } else {
            FullStat::diff(w, g)
        };
        if !differ.is_empty() {
            out.push(format!("/{p}: {} (kernel != rfs)", differ.join(", ")));
        }
    }
    for p in got.keys().filter(|p| !want.contains_key(*p)) {
        out.push(format!("/{p}: unexpected"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Operations.

/// How `rename` is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    Plain,
    NoReplace,
    Exchange,
}

/// One operation, on paths relative to the mount point.
#[derive(Clone, Debug)]
enum Op {
    /// `open(O_CREAT|O_WRONLY|O_NOFOLLOW [|O_EXCL] [|O_TRUNC], mode)`, then write `len` bytes.
    Create {
        path: String,
        mode: u32,
        excl: bool,
        trunc: bool,
        len: usize,
        fill: u8,
    },
    Write {
        path: String,
        off: u64,
        len: usize,
        fill: u8,
    },
    Append {
        path: String,
        len: usize,
        fill: u8,
    },
    Truncate {
        path: String,
        len: u64,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    Chown {
        path: String,
        uid: u32,
        gid: u32,
    },
    Utimes {
        path: String,
        sec: i64,
        nsec: i64,
    },
    SetXattr {
        path: String,
        name: String,
        value: String,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    Unlink {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rename {
        from: String,
        to: String,
        how: How,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        target: String,
        path: String,
    },
    Read {
        path: String,
    },
    ReadDir {
        path: String,
    },
    Stat {
        path: String,
    },
}

/// An operation's result: success with what it returned, or the errno.
type Outcome = Result<String, i32>;

fn data(len: usize, fill: u8) -> Vec<u8> {
    (0..len)
        .map(|i| fill.wrapping_add((i % 253) as u8))
        .collect()
}

fn ioe(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn apply(root: &Path, op: &Op) -> Outcome {
    let p = |rel: &str| build::at(root, rel);
    let ok = |r: io::Result<()>| r.map(|()| String::new()).map_err(ioe);
    let nixok = |r: nix::Result<()>| r.map(|()| String::new()).map_err(|e| e as i32);
    match op {
        Op::Create {
            path,
            mode,
            excl,
            trunc,
            len,
            fill,
        } => ok((|| {
            let mut o = OpenOptions::new();
            o.write(true)
                .mode(*mode)
                .custom_flags(NOFOLLOW_NONBLOCK | if *trunc { libc::O_TRUNC } else { 0 });
            if *excl {
                o.create_new(true);
            } else {
                o.create(true);
            }
            let mut f = o.open(p(path))?;
            f.write_all(&data(*len, *fill))
        })()),
        Op::Write {
            path,
            off,
            len,
            fill,
        } => ok((|| {
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(NOFOLLOW_NONBLOCK)
                .open(p(path))?;
            f.write_all_at(&data(*len, *fill), *off)
        })()),
        Op::Append { path, len, fill } => ok((|| {
            let mut f = OpenOptions::new()
                .append(true)
                .custom_flags(NOFOLLOW_NONBLOCK)
                .open(p(path))?;
            f.write_all(&data(*len, *fill))
        })()),
        Op::Truncate { path, len } => ok((|| {
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(NOFOLLOW_NONBLOCK)
                .open(p(path))?;
            f.set_len(*len)
        })()),
        Op::Chmod { path, mode } => nixok(nix::sys::stat::fchmodat(
            AT_FDCWD,
            &p(path),
            Mode::from_bits_truncate(*mode),
            FchmodatFlags::NoFollowSymlink,
        )),
        Op::Chown { path, uid, gid } => nixok(nix::unistd::fchownat(
            AT_FDCWD,
            &p(path),
            Some(Uid::from_raw(*uid)),
            Some(Gid::from_raw(*gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )),
        Op::Utimes { path, sec, nsec } => {
            let t = TimeSpec::new(*sec, *nsec);
            nixok(nix::sys::stat::utimensat(
                AT_FDCWD,
                &p(path),
                &t,
                &t,
                UtimensatFlags::NoFollowSymlink,
            ))
        }
        Op::SetXattr { path, name, value } => ok(xattr::set(&p(path), name, value.as_bytes())),
        Op::RemoveXattr { path, name } => ok(xattr::remove(&p(path), name)),
        Op::Unlink { path } => ok(fs::remove_file(p(path))),
        Op::Rmdir { path } => ok(fs::remove_dir(p(path))),
        Op::Mkdir { path, mode } => ok(fs::DirBuilder::new().mode(*mode).create(p(path))),
        Op::Rename { from, to, how } => {
            let flags = match how {
                How::Plain => RenameFlags::empty(),
                How::NoReplace => RenameFlags::RENAME_NOREPLACE,
                How::Exchange => RenameFlags::RENAME_EXCHANGE,
            };
            nixok(nix::fcntl::renameat2(
                AT_FDCWD,
                &p(from),
                AT_FDCWD,
                &p(to),
                flags,
            ))
        }
        Op::Link { from, to } => ok(fs::hard_link(p(from), p(to))),
        Op::Symlink { target, path } => ok(std::os::unix::fs::symlink(target, p(path))),
        Op::Read { path } => read_nofollow(&p(path))
            .map(|d| format!("{} bytes sha256 {}", d.len(), &sha256_hex(&d)[..16]))
            .map_err(ioe),
        Op::ReadDir { path } => {
            let flags = nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW;
            match nix::dir::Dir::open(&p(path), flags, Mode::empty()) {
                Err(e) => Err(e as i32),
                Ok(mut d) => {
                    let mut names = Vec::new();
                    for e in d.iter() {
                        match e {
                            Ok(e) => names.push(e.file_name().to_string_lossy().into_owned()),
                            Err(e) => return Err(e as i32),
                        }
                    }
                    names.sort();
                    Ok(names.join(","))
                }
            }
        }
        Op::Stat { path } => fs::symlink_metadata(p(path))
            .map(|md| {
                let kind = kind_of(md.file_type());
                if kind == Kind::Dir {
                    format!("{kind:?} {:o} {}:{}", md.mode(), md.uid(), md.gid())
                } else {
                    format!(
                        "{kind:?} {:o} {}:{} size {} nlink {}",
                        md.mode(),
                        md.uid(),
                        md.gid(),
                        md.size(),
                        md.nlink()
                    )
                }
            })
            .map_err(ioe),
    }
}

/// Names new entries get: fresh ones, and names that exist (or existed) in the lowers, so
/// creations land on whiteouts, over lower entries and into opaque dirs.
const NAMES: &[&str] = &[
    "n0", "n1", "n2", "n3", "n4", "a", "b", "f1", "f2", "sub", "gone", "g1", "op", "hidden1", "x",
    "hl1", "top", "d1", "e", "m1", "deep", "new dir",
];
const FILE_MODES: &[u32] = &[
    0o644, 0o600, 0o755, 0o700, 0o444, 0o640, 0o4755, 0o2755, 0o1644, 0o000,
];
const DIR_MODES: &[u32] = &[0o755, 0o700, 0o1777, 0o2775, 0o555, 0o750];
const IDS: &[u32] = &[0, 1000, 1234, 65534];
const XATTRS: &[&str] = &["user.a", "user.b", "user.foo", "user.dx"];

/// Picks operations from the kernel's current tree.
struct Gen<'a> {
    rng: &'a mut SmallRng,
    all: Vec<&'a str>,
    nonroot: Vec<&'a str>,
    dirs: Vec<&'a str>,
    files: Vec<&'a str>,
}

impl<'a> Gen<'a> {
    fn new(rng: &'a mut SmallRng, listing: &'a [(String, Kind)]) -> Gen<'a> {
        let all: Vec<&str> = listing.iter().map(|(p, _)| p.as_str()).collect();
        let nonroot = all.iter().copied().filter(|p| !p.is_empty()).collect();
        let dirs = listing
            .iter()
            .filter(|(_, k)| *k == Kind::Dir)
            .map(|(p, _)| p.as_str())
            .collect();
        let files = listing
            .iter()
            .filter(|(_, k)| *k == Kind::File)
            .map(|(p, _)| p.as_str())
            .collect();
        Gen {
            rng,
            all,
            nonroot,
            dirs,
            files,
        }
    }

    fn pick(&mut self, from: &[&str]) -> String {
        from.choose(self.rng)
            .map_or(String::new(), |s| s.to_string())
    }

    /// Mostly an existing file, sometimes anything (errors are compared too).
    fn file(&mut self) -> String {
        if self.rng.random_bool(0.85) && !self.files.is_empty() {
            let f = self.files.clone();
            self.pick(&f)
        } else {
            let a = self.all.clone();
            self.pick(&a)
        }
    }

    fn dir(&mut self) -> String {
        let d = self.dirs.clone();
        self.pick(&d)
    }

    fn existing(&mut self) -> String {
        let n = self.nonroot.clone();
        self.pick(&n)
    }

    fn new_path(&mut self) -> String {
        let d = self.dir();
        let name = NAMES.choose(self.rng).unwrap();
        join(&d, name)
    }

    fn existing_or_new(&mut self, p_existing: f64) -> String {
        if self.rng.random_bool(p_existing) {
            self.existing()
        } else {
            self.new_path()
        }
    }

    fn mode(&mut self, modes: &[u32]) -> u32 {
        *modes.choose(self.rng).unwrap()
    }

    fn len(&mut self) -> usize {
        match self.rng.random_range(0..10) {
            0 => 0,
            1 => self.rng.random_range(50_000..150_000),
            _ => self.rng.random_range(1..5000),
        }
    }

    fn op(&mut self) -> Op {
        let fill = self.rng.random();
        match self.rng.random_range(0..100) {
            0..8 => {
                let path = if self.rng.random_bool(0.3) {
                    self.file()
                } else {
                    self.new_path()
                };
                Op::Create {
                    path,
                    mode: self.mode(FILE_MODES),
                    excl: self.rng.random_bool(0.3),
                    trunc: self.rng.random_bool(0.3),
                    len: self.len(),
                    fill,
                }
            }
            8..18 => Op::Write {
                path: self.file(),
                off: match self.rng.random_range(0..4) {
                    0 => 0,
                    1 => self.rng.random_range(0..300_000),
                    _ => self.rng.random_range(0..20_000),
                },
                len: self.len(),
                fill,
            },
            18..23 => Op::Append {
                path: self.file(),
                len: self.len(),
                fill,
            },
            23..28 => Op::Truncate {
                path: self.file(),
                len: *[0u64, 1, 100, 4096, 5000, 333_333]
                    .choose(self.rng)
                    .unwrap(),
            },
            28..34 => {
                let path = self.existing_or_new(0.95);
                let dir = self.dirs.contains(&path.as_str());
                Op::Chmod {
                    path,
                    mode: self.mode(if dir { DIR_MODES } else { FILE_MODES }),
                }
            }
            34..39 => Op::Chown {
                path: self.existing_or_new(0.95),
                uid: *IDS.choose(self.rng).unwrap(),
                gid: *IDS.choose(self.rng).unwrap(),
            },
            39..44 => Op::Utimes {
                path: self.existing_or_new(0.95),
                sec: self.rng.random_range(946_684_800..1_262_304_000),
                nsec: self.rng.random_range(0..1_000_000_000),
            },
            44..50 => Op::SetXattr {
                path: self.existing_or_new(0.95),
                name: XATTRS.choose(self.rng).unwrap().to_string(),
                value: format!("v{}", self.rng.random_range(0..1000)),
            },
            50..52 => Op::RemoveXattr {
                path: self.existing(),
                name: XATTRS.choose(self.rng).unwrap().to_string(),
            },
            52..60 => Op::Unlink {
                path: if self.rng.random_bool(0.8) {
                    self.file()
                } else {
                    self.existing()
                },
            },
            60..65 => Op::Rmdir {
                path: if self.rng.random_bool(0.85) {
                    self.dir()
                } else {
                    self.existing_or_new(0.5)
                },
            },
            65..72 => Op::Mkdir {
                path: self.existing_or_new(0.1),
                mode: self.mode(DIR_MODES),
            },
            72..86 => {
                let from = if self.rng.random_bool(0.5) {
                    self.dir()
                } else {
                    self.existing()
                };
                let to = match self.rng.random_range(0..10) {
                    0..5 => self.new_path(),
                    5..8 => {
                        if self.dirs.contains(&from.as_str()) {
                            self.dir()
                        } else {
                            self.file()
                        }
                    }
                    _ => self.existing(),
                };
                let how = match self.rng.random_range(0..10) {
                    0 => How::NoReplace,
                    1 => How::Exchange,
                    _ => How::Plain,
                };
                Op::Rename { from, to, how }
            }
            86..91 => Op::Link {
                from: if self.rng.random_bool(0.8) {
                    self.file()
                } else {
                    self.existing()
                },
                to: self.existing_or_new(0.1),
            },
            91..94 => {
                let target = match self.rng.random_range(0..3) {
                    0 => self.existing(),
                    1 => NAMES.choose(self.rng).unwrap().to_string(),
                    _ => "no/such/target".to_string(),
                };
                Op::Symlink {
                    target,
                    path: self.existing_or_new(0.1),
                }
            }
            94..97 => Op::Read { path: self.file() },
            97..99 => Op::ReadDir { path: self.dir() },
            _ => Op::Stat {
                path: self.existing_or_new(0.9),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Renamed directories, for the upper comparison.

/// Where directories that were renamed (or exchanged) now are.
///
/// Kernel and rfs record a renamed lower/merged directory differently (the kernel writes a
/// relative or absolute `redirect` depending on the parent, marks a moved pure-upper dir opaque
/// when its new parent is merged, keeps hard links in `work/index`), so inside a renamed
/// directory (and its subtree) whiteouts and opaque markers are not compared: the merged trees
/// are, and they must be equal there too.
#[derive(Default, Debug)]
struct Renamed(BTreeSet<String>);

fn under(p: &str, dir: &str) -> bool {
    p == dir || (p.starts_with(dir) && p.as_bytes().get(dir.len()) == Some(&b'/'))
}

impl Renamed {
    fn moved(&mut self, from: &str, to: &str) -> BTreeSet<String> {
        let mut rest = BTreeSet::new();
        let mut moved = BTreeSet::new();
        for p in std::mem::take(&mut self.0) {
            if under(&p, from) {
                moved.insert(format!("{to}{}", &p[from.len()..]));
            } else {
                rest.insert(p);
            }
        }
        self.0 = rest;
        moved
    }

    /// Updates for a successful `op`; `kind` gives kinds before the op.
    fn track(&mut self, op: &Op, kind: impl Fn(&str) -> Option<Kind>) {
        match op {
            Op::Rename { from, to, how } => {
                let from_dir = kind(from) == Some(Kind::Dir);
                let to_dir = kind(to) == Some(Kind::Dir);
                if *how == How::Exchange {
                    let a = self.moved(from, to);
                    let b = self.moved(to, from);
                    self.0.extend(a);
                    self.0.extend(b);
                    if from_dir {
                        self.0.insert(to.clone());
                    }
                    if to_dir {
                        self.0.insert(from.clone());
                    }
                } else if from_dir {
                    let _ = self.moved(to, to);
                    let a = self.moved(from, to);
                    self.0.extend(a);
                    self.0.insert(to.clone());
                }
            }
            Op::Rmdir { path } => {
                self.0.remove(path);
            }
            _ => {}
        }
    }

    fn covers(&self, p: &str) -> bool {
        self.0.iter().any(|d| under(p, d))
    }
}

/// Whiteouts and opaque markers of an upper dir.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    pub(crate) whiteouts: BTreeSet<String>,
    pub(crate) opaques: BTreeSet<String>,
}

/// Reads the whiteouts (char 0/0) and opaque dirs (`trusted.overlay.opaque=y`) of an upper.
pub(crate) fn upper_marks(upper: &Path) -> Marks {
    let mut m = Marks::default();
    for (rel, kind) in list(upper) {
        let p = build::at(upper, &rel);
        if kind == Kind::Char && fs::symlink_metadata(&p).unwrap().rdev() == 0 {
            m.whiteouts.insert(rel);
        } else if kind == Kind::Dir
            && xattr::get(&p, "trusted.overlay.opaque").unwrap().as_deref() == Some(b"y")
        {
            m.opaques.insert(rel);
        }
    }
    m
}

// ---------------------------------------------------------------------------------------------
// The test.

/// Mounts kernel overlayfs, trying `redirect_dir=on,index=on` first.
fn mount_kernel(lowerdir: &str, upper: &Path, work: &Path, mnt: &Path) -> MountGuard {
    let mut errors = Vec::new();
    for extra in ["redirect_dir=on,index=on", "redirect_dir=on", ""] {
        let mut opts = format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        if !extra.is_empty() {
            opts = format!("{opts},{extra}");
        }
        match MountGuard::overlay(&opts, mnt) {
            Ok(g) => {
                if extra != "redirect_dir=on,index=on" {
                    eprintln!(
                        "NOTE: kernel overlayfs refused index/redirect_dir; mounted with {opts:?}: {errors:?}"
                    );
                }
                return g;
            }
            Err(e) => {
                errors.push(format!("{extra}: {e}"));
                // A failed attempt may have left the work dir in use; start over clean.
                let _ = fs::remove_dir_all(work);
                fs::create_dir_all(work).unwrap();
            }
        }
    }
    panic!("kernel overlayfs mount failed: {errors:?}");
}

fn mount_rfs(lowerdir: &str, upper: &Path, work: &Path, mnt: &Path) -> MountGuard {
    try_mount_rfs(lowerdir, upper, work, mnt).unwrap_or_else(|e| panic!("rfs mount failed: {e}"))
}

fn try_mount_rfs(
    lowerdir: &str,
    upper: &Path,
    work: &Path,
    mnt: &Path,
) -> Result<MountGuard, String> {
    let args: Vec<&OsStr> = vec![
        OsStr::new("mount"),
        OsStr::new("--lower"),
        OsStr::new(lowerdir),
        OsStr::new("--upper"),
        upper.as_os_str(),
        OsStr::new("--work"),
        work.as_os_str(),
    ];
    MountGuard::rfs(&args, mnt)
}

/// Where a run went wrong: which check, and the message.
type Failure = (&'static str, String);

/// The state of one run, for failure messages.
struct Run {
    log: VecDeque<String>,
    /// On the stacked mounts: the host inode numbers of the kernel's and rfs's old uppers,
    /// their top lowers (see [`lower_ino_errors`]).
    stacked_tops: Option<(BTreeSet<u64>, BTreeSet<u64>)>,
    /// On the stacked mounts: the kernel's upper, whose metadata-only copies are watched
    /// (see [`Run::completes_metacopy`]).
    k_upper: Option<PathBuf>,
    /// The kernel's st_ino of files whose metadata-only copy the kernel completed when they
    /// were opened for writing: their kernel mtime is no oracle.
    metacopy_completed: BTreeSet<u64>,
}

/// The host inode numbers of every entry under `root` (not following symlinks).
fn host_inos(root: &Path) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            out.insert(md.ino());
            if md.is_dir() {
                todo.push(e.path());
            }
        }
    }
    out
}

impl Run {
    fn fail(&self, check: &'static str, what: String) -> Failure {
        let log: Vec<&str> = self.log.iter().map(String::as_str).collect();
        (
            check,
            format!(
                "{what}\n  last operations (index: op => kernel result):\n    {}",
                log.join("\n    ")
            ),
        )
    }

    /// Before `op` runs on the stacked mounts: if it opens a file for writing that the
    /// kernel's upper holds as a metadata-only copy (`metacopy=on`), notes the file. Kernel
    /// overlayfs (6.18) completes such a copy by writing the data into the upper file and does
    /// not restore its mtime, which becomes the time of the open even when nothing is written
    /// (a full copy-up keeps the lower mtime, as DESIGN rule 8 says and rfs does). Checked
    /// by hand: chmod of a lower file, then `pwrite(fd, "", 0)` - mtime now on the kernel.
    fn completes_metacopy(&mut self, kmnt: &Path, op: &Op) {
        let Some(ku) = &self.k_upper else { return };
        let path = match op {
            Op::Write { path, .. } | Op::Append { path, .. } | Op::Create { path, .. } => path,
            _ => return,
        };
        let marked = xattr::get(&ku.join(path), "trusted.overlay.metacopy")
            .ok()
            .flatten()
            .is_some();
        if let (true, Ok(md)) = (marked, fs::symlink_metadata(kmnt.join(path))) {
            self.metacopy_completed.insert(md.ino());
        }
    }

    fn compare(&self, at: &str, kmnt: &Path, rmnt: &Path) -> Result<Tree, Failure> {
        let mut k = snapshot(kmnt);
        let r = snapshot(rmnt);
        // The mtime the kernel gave a file when it completed its metadata-only copy is not
        // compared (see `completes_metacopy`); everything else about the file is.
        for (p, n) in k.iter_mut() {
            if self.metacopy_completed.contains(&n.ino)
                && let Some(rn) = r.get(p)
            {
                n.mtime = rn.mtime;
            }
        }
        let mut errs = diff_trees(&k, &r);
        errs.extend(lower_ino_errors(&k, &r, self.stacked_tops.as_ref()));
        errs.extend(
            identity_errors(&r)
                .into_iter()
                .map(|e| format!("rfs identity: {e}")),
        );
        if errs.is_empty() {
            return Ok(r);
        }
        errs.truncate(30);
        Err(self.fail(
            "trees",
            format!(
                "merged trees differ {at} (kernel = want, rfs = got):\n    {}",
                errs.join("\n    ")
            ),
        ))
    }
}

/// Runs operations from `next(index, kernel's tree)` until it returns `None`, on a fresh kernel
/// overlayfs and a fresh rfs over `lowerdir`, then checks the uppers, an rfs remount and the
/// kernel on rfs's upper. Every operation run is appended to `done`.
fn execute(
    base: &Path,
    lowerdir: &str,
    mut next: impl FnMut(usize, &[(String, Kind)]) -> Option<Op>,
    done: &mut Vec<Op>,
) -> Result<String, Failure> {
    let dir = |n: &str| {
        let p = base.join(n);
        fs::create_dir_all(&p).unwrap();
        p
    };
    let (ku, kw, km) = (dir("k-upper"), dir("k-work"), dir("k-mnt"));
    let (ru, rw, rm) = (dir("r-upper"), dir("r-work"), dir("r-mnt"));
    let kernel = mount_kernel(lowerdir, &ku, &kw, &km);
    let rfs = mount_rfs(lowerdir, &ru, &rw, &rm);

    let mut run = Run {
        log: VecDeque::new(),
        stacked_tops: None,
        k_upper: None,
        metacopy_completed: BTreeSet::new(),
    };
    // Every stat field, before anything reads a file (see `full_stats`).
    let mut errs = full_stat_errors(&full_stats(&km), &full_stats(&rm));
    if !errs.is_empty() {
        errs.truncate(40);
        return Err(run.fail(
            "stat",
            format!(
                "stat fields differ right after mounting:\n    {}",
                errs.join("\n    ")
            ),
        ));
    }
    let initial = run.compare("right after mounting", &km, &rm)?;
    let mut renamed = Renamed::default();
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut i = 0;
    operate(
        &mut run,
        (&km, &rm),
        &mut i,
        &mut next,
        done,
        &mut counts,
        Some(&mut renamed),
    )?;
    let before = run.compare("at the end", &km, &rm)?;
    kernel.unmount().expect("unmounting kernel overlayfs");
    rfs.unmount().expect("unmounting rfs");

    // The uppers: same whiteouts and opaque markers outside renamed dirs.
    let (k_marks, r_marks) = (upper_marks(&ku), upper_marks(&ru));
    let mut errs = Vec::new();
    // An opaque marker only means something where the lowers have a directory: the kernel
    // also marks every directory it creates in a merged parent opaque (an optimisation in
    // `ovl_create_upper`), rfs need not.
    let lower_dir = |p: &str| initial.get(p).is_some_and(|n| n.kind == Kind::Dir);
    for (what, k, r, all) in [
        ("whiteout", &k_marks.whiteouts, &r_marks.whiteouts, true),
        ("opaque dir", &k_marks.opaques, &r_marks.opaques, false),
    ] {
        let compared = |p: &&String| !renamed.covers(p) && (all || lower_dir(p));
        for p in k.difference(r).filter(compared) {
            errs.push(format!("{what} /{p} in the kernel's upper, not in rfs's"));
        }
        for p in r.difference(k).filter(compared) {
            errs.push(format!("{what} /{p} in rfs's upper, not in the kernel's"));
        }
    }
    if !errs.is_empty() {
        return Err(run.fail(
            "uppers",
            format!(
                "uppers differ (renamed dirs, not compared: {:?}):\n    {}",
                renamed.0,
                errs.join("\n    ")
            ),
        ));
    }

    // Persistence and inode stability: remount rfs on the same upper.
    let rfs = match try_mount_rfs(lowerdir, &ru, &rw, &rm) {
        Ok(g) => g,
        Err(e) => {
            return Err(run.fail(
                "remount",
                format!("rfs could not be mounted again on its upper: {e}"),
            ));
        }
    };
    let after = snapshot(&rm);
    let mut errs = diff_exact(&before, &after);
    errs.extend(identity_errors(&after));
    rfs.unmount().expect("unmounting rfs after the remount");
    if !errs.is_empty() {
        errs.truncate(30);
        return Err(run.fail(
            "remount",
            format!(
                "rfs remounted on its upper differs from before the unmount:\n    {}",
                errs.join("\n    ")
            ),
        ));
    }

    // rfs's upper is in kernel format: the kernel reads it as rfs did. Hard-link sharing of
    // lower files not yet copied up needs the kernel's own index, so it is not compared.
    let kw2 = dir("k-work2");
    let opts = format!(
        "lowerdir={lowerdir},upperdir={},workdir={},redirect_dir=on,index=off",
        ru.display(),
        kw2.display()
    );
    let kernel = MountGuard::overlay(&opts, &km).expect("kernel overlayfs on rfs's upper");
    let seen = snapshot(&km);
    kernel.unmount().expect("unmounting kernel overlayfs");
    let mut errs: Vec<String> = diff_trees(&before, &seen)
        .into_iter()
        .filter(|e| !e.starts_with("hard-link group"))
        .collect();
    if !errs.is_empty() {
        errs.truncate(30);
        return Err(run.fail(
            "kernel-on-rfs-upper",
            format!(
                "kernel overlayfs on rfs's upper shows another tree (rfs = want, kernel = got):\n    {}",
                errs.join("\n    ")
            ),
        ));
    }

    // Stacked: each system's upper becomes the top lower of a new mount with a fresh upper
    // (the kernel's own upper under the kernel with `redirect_dir=on,metacopy=on`, rfs's
    // under rfs), which must show the tree the upper showed; then more operations. The
    // kernel keeps `index=on` as on the first mount: without it, a copy-up breaks a lower
    // hard link (writing one name leaves the others' data and nlink as they were), which
    // rfs never does (DESIGN rule 14), so the kernel would be no oracle for hard links.
    // The kernel's first mount ran with `index=on`: every lower file it copied up is also
    // hard-linked from `work/index`, so its upper file's host nlink counts that link. The
    // work dir is not part of a layer (a layer made from this upper would not carry it), so
    // it goes before the upper is stacked; the upper's nlinks then count its own links only.
    fs::remove_dir_all(&kw).expect("removing the kernel's first work dir");
    let (ku, ru) = (
        move_into_layer(&ku, &base.join("k-layer")),
        move_into_layer(&ru, &base.join("r-layer")),
    );
    let (ku2, kw3) = (dir("k-upper-stacked"), dir("k-work-stacked"));
    let (ru2, rw2) = (dir("r-upper-stacked"), dir("r-work-stacked"));
    let k_lowerdir = format!("{}:{lowerdir}", ku.display());
    let r_lowerdir = format!("{}:{lowerdir}", ru.display());
    let opts = format!(
        "lowerdir={k_lowerdir},upperdir={},workdir={},redirect_dir=on,metacopy=on,index=on",
        ku2.display(),
        kw3.display()
    );
    let kernel = MountGuard::overlay(&opts, &km).expect("kernel overlayfs on its stacked upper");
    let rfs = match try_mount_rfs(&r_lowerdir, &ru2, &rw2, &rm) {
        Ok(g) => g,
        Err(e) => {
            return Err(run.fail(
                "stacked",
                format!("rfs could not be mounted with its upper as a lower: {e}"),
            ));
        }
    };
    // Both show the tree they showed before the upper was stacked. Hard-link groups of
    // lower files copied up in part were the first kernel mount's index (gone with its work
    // dir) on one side and rfs's upper links on the other, so they are compared between the
    // stacked mounts only.
    let stacked = snapshot(&rm);
    let mut errs: Vec<String> = diff_trees(&before, &stacked)
        .into_iter()
        .filter(|e| !e.starts_with("hard-link group"))
        .map(|e| format!("rfs stacked: {e}"))
        .collect();
    errs.extend(
        diff_trees(&before, &snapshot(&km))
            .into_iter()
            .filter(|e| !e.starts_with("hard-link group"))
            .map(|e| format!("kernel stacked (want rfs's unstacked tree): {e}")),
    );
    if !errs.is_empty() {
        errs.truncate(30);
        return Err(run.fail(
            "stacked",
            format!(
                "an upper stacked as a lower shows another tree (want = before stacking):\n    {}",
                errs.join("\n    ")
            ),
        ));
    }
    run.log.clear();
    run.stacked_tops = Some((host_inos(&ku), host_inos(&ru)));
    run.k_upper = Some(ku2.clone());
    i += 1;
    let stacked_ops = operate(
        &mut run,
        (&km, &rm),
        &mut i,
        &mut next,
        done,
        &mut counts,
        None,
    )?;
    let end = run.compare("stacked, at the end", &km, &rm)?;
    rfs.unmount().expect("unmounting stacked rfs");
    kernel
        .unmount()
        .expect("unmounting stacked kernel overlayfs");
    Ok(format!(
        "{i} ops ({stacked_ops} of them stacked), {} entries before stacking, {} at the end; \
         ops (tried, succeeded): {counts:?}",
        before.len(),
        end.len()
    ))
}

/// Moves the entries of `upper` into the new directory `to` on the same filesystem, as a
/// layer made of that upper, and returns `to`. The entries keep their inodes, times, xattrs
/// and hard links; only the root is new. That matters to the kernel: with `index=on` it
/// refuses (EBUSY) a lower that is still the upper of a live overlay, and the first mount
/// lives on, in use, for as long as another process's mount namespace made meanwhile (a
/// container of a concurrent test) holds a copy of it.
fn move_into_layer(upper: &Path, to: &Path) -> PathBuf {
    fs::create_dir(to).unwrap();
    for e in fs::read_dir(upper).unwrap() {
        let e = e.unwrap();
        fs::rename(e.path(), to.join(e.file_name())).unwrap();
    }
    to.to_path_buf()
}

/// Applies operations from `next(index, kernel's tree)` to both mount points (kernel, rfs)
/// from index `*i` until it returns `None`, comparing the results and, every 100, the trees;
/// notes renamed directories in `renamed`. Returns how many ran.
#[allow(clippy::too_many_arguments)]
fn operate(
    run: &mut Run,
    (km, rm): (&Path, &Path),
    i: &mut usize,
    next: &mut impl FnMut(usize, &[(String, Kind)]) -> Option<Op>,
    done: &mut Vec<Op>,
    counts: &mut BTreeMap<String, (usize, usize)>,
    mut renamed: Option<&mut Renamed>,
) -> Result<usize, Failure> {
    let first = *i;
    loop {
        let listing = list(km);
        let Some(op) = next(*i, &listing) else {
            return Ok(*i - first);
        };
        done.push(op.clone());
        run.completes_metacopy(km, &op);
        let rk = apply(km, &op);
        let rr = apply(rm, &op);
        if run.log.len() == 20 {
            run.log.pop_front();
        }
        run.log.push_back(format!("{i}: {op:?} => {rk:?}"));
        let name = format!("{op:?}");
        let name = name.split([' ', '{']).next().unwrap_or("").to_string();
        let c = counts.entry(name).or_default();
        c.0 += 1;
        c.1 += usize::from(rk.is_ok());
        if rk != rr {
            return Err(run.fail(
                "op",
                format!(
                    "op {i} diverged: {op:?}\n  kernel: {}\n  rfs:    {}",
                    fmt_outcome(&rk),
                    fmt_outcome(&rr)
                ),
            ));
        }
        if rk.is_ok()
            && let Some(renamed) = renamed.as_deref_mut()
        {
            let kinds: BTreeMap<&str, Kind> =
                listing.iter().map(|(p, k)| (p.as_str(), *k)).collect();
            renamed.track(&op, |p| kinds.get(p).copied());
        }
        if (*i + 1) % 100 == 0 {
            run.compare(&format!("after op {i}"), km, rm)?;
        }
        *i += 1;
    }
}

/// Shrinks `ops` (delta debugging) to a short sequence that still fails the same check.
/// Each operation is tagged with its phase (`true`: on the stacked mounts), so a failure
/// that needs operations before and after stacking shrinks too.
/// With `must_contain`, the failure message must also contain that text.
fn minimize(
    scratch: &Scratch,
    lowerdir: &str,
    check: &str,
    must_contain: &str,
    mut ops: Vec<(bool, Op)>,
) -> Vec<(bool, Op)> {
    let mut trial = 0;
    let mut fails = |cand: &[(bool, Op)]| {
        trial += 1;
        let base = scratch.mkdir(&format!("minimize{trial}"));
        let first = cand.iter().take_while(|(stacked, _)| !stacked).count();
        let r = execute(
            &base,
            lowerdir,
            // As the generator: index `first` ends the first mount's operations.
            |i, _| match i.cmp(&first) {
                std::cmp::Ordering::Less => Some(cand[i].1.clone()),
                std::cmp::Ordering::Equal => None,
                std::cmp::Ordering::Greater => cand.get(i - 1).map(|(_, op)| op.clone()),
            },
            &mut Vec::new(),
        );
        let _ = fs::remove_dir_all(&base);
        matches!(r, Err((c, m)) if c == check && m.contains(must_contain))
    };
    let mut n = 2;
    while ops.len() >= 2 {
        let chunk = ops.len().div_ceil(n);
        let mut reduced = false;
        let mut start = 0;
        while start < ops.len() {
            let mut cand = ops[..start].to_vec();
            cand.extend_from_slice(&ops[(start + chunk).min(ops.len())..]);
            if fails(&cand) {
                ops = cand;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
            start += chunk;
        }
        if !reduced {
            if n >= ops.len() {
                break;
            }
            n = (n * 2).min(ops.len());
        }
    }
    ops
}

fn seeds() -> Vec<u64> {
    match std::env::var("RFS_DIFF_SEEDS") {
        Ok(s) if s.contains(',') => s
            .split(',')
            .filter(|x| !x.trim().is_empty())
            .map(|x| {
                x.trim()
                    .parse()
                    .expect("RFS_DIFF_SEEDS: a count or a comma list")
            })
            .collect(),
        Ok(s) if !s.trim().is_empty() => (1..=s.trim().parse::<u64>().unwrap()).collect(),
        _ => vec![1, 2, 3],
    }
}

fn fmt_outcome(o: &Outcome) -> String {
    match o {
        Ok(s) if s.is_empty() => "ok".into(),
        Ok(s) => format!("ok: {s}"),
        Err(e) => format!("{} ({e})", io::Error::from_raw_os_error(*e)),
    }
}

/// The differential test. On a failure, `RFS_DIFF_MINIMIZE=1` shrinks the failing seed's
/// operations to a short sequence that fails the same check, and prints it;
/// `RFS_DIFF_MINIMIZE=TEXT` also requires TEXT in the failure message (e.g. a path).
#[test]
fn differential_against_kernel_overlay() {
    let n_ops = std::env::var("RFS_DIFF_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let stacked_ops = std::env::var("RFS_DIFF_STACKED_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(n_ops / 2);
    let scratch = Scratch::new();
    let lowers = build_lowers(&scratch.mkdir("lowers"));
    let lowerdir = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut failures = Vec::new();
    for seed in seeds() {
        let start = Instant::now();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut done = Vec::new();
        let base = scratch.mkdir(&format!("seed{seed}"));
        let r = execute(
            &base,
            &lowerdir,
            // Index `n_ops` ends the first mount's operations; the stacked mount's follow.
            |i, listing| {
                (i < n_ops || (i > n_ops && i <= n_ops + stacked_ops))
                    .then(|| Gen::new(&mut rng, listing).op())
            },
            &mut done,
        );
        match r {
            Ok(stats) => eprintln!("seed {seed}: {stats}, {:.1?}", start.elapsed()),
            Err((check, msg)) => {
                let mut minimized = String::new();
                if let Ok(text) = std::env::var("RFS_DIFF_MINIMIZE") {
                    let text = if text == "1" { "" } else { text.as_str() };
                    let tagged = done
                        .into_iter()
                        .enumerate()
                        .map(|(i, op)| (i >= n_ops, op))
                        .collect();
                    let ops = minimize(&scratch, &lowerdir, check, text, tagged);
                    minimized = format!(
                        "\n  minimized to {} operations failing the same check ({check}):\n    {}",
                        ops.len(),
                        ops.iter()
                            .map(|(stacked, o)| {
                                format!("{}{o:?}", if *stacked { "stacked: " } else { "" })
                            })
                            .collect::<Vec<_>>()
                            .join("\n    ")
                    );
                }
                let msg = format!(
                    "seed {seed} (re-run with RFS_DIFF_SEEDS={seed},; \
                     RFS_DIFF_MINIMIZE=1 to shrink): {msg}{minimized}"
                );
                eprintln!("{msg}\n");
                failures.push(msg);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds diverged from kernel overlayfs:\n\n{}",
        failures.len(),
        seeds().len(),
        failures.join("\n\n")
    );
}

/// A copied-up entry is its upper file (DESIGN rule 8): both systems report that file's own
/// stat, its ctime the copy-up's (not the lower's), and both give it the lower's atime and
/// mtime. Files, a symlink, a fifo, a hard-link group, and directories copied up as the
/// ancestors of a changed entry, everything looked up (so cached by the kernel) beforehand.
#[test]
fn copied_up_entries_report_their_upper_stat() {
    let scratch = Scratch::new();
    let lowerdir = build_lowers(&scratch.mkdir("lowers"))
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let (ku, kw, km) = (
        scratch.mkdir("k-upper"),
        scratch.mkdir("k-work"),
        scratch.mkdir("k-mnt"),
    );
    let (ru, rw, rm) = (
        scratch.mkdir("r-upper"),
        scratch.mkdir("r-work"),
        scratch.mkdir("r-mnt"),
    );
    let kernel = mount_kernel(&lowerdir, &ku, &kw, &km);
    let rfs = mount_rfs(&lowerdir, &ru, &rw, &rm);
    let errs = full_stat_errors(&full_stats(&km), &full_stats(&rm));
    assert!(errs.is_empty(), "before the copy-ups: {errs:#?}");

    let s = |p: &str| p.to_string();
    let ops = [
        Op::Chmod {
            path: s("a"),
            mode: 0o640,
        },
        Op::Chown {
            path: s("sym"),
            uid: 1000,
            gid: 1000,
        },
        Op::SetXattr {
            path: s("d1/sub/y"),
            name: s("user.t"),
            value: s("1"),
        },
        Op::Append {
            path: s("b"),
            len: 10,
            fill: b'b',
        },
        Op::Chmod {
            path: s("fifo"),
            mode: 0o600,
        },
        Op::Chmod {
            path: s("hl1"),
            mode: 0o600,
        },
        Op::Chmod {
            path: s("m1/deep"),
            mode: 0o700,
        },
    ];
    for op in &ops {
        // The kernel first: it stats the lower before it reads it, rfs took its stat when
        // mounting, so both copy the same atime.
        let (k, r) = (apply(&km, op), apply(&rm, op));
        assert_eq!(k, r, "{op:?}");
        assert!(k.is_ok(), "{op:?}: {k:?}");
    }

    // The directories copied up only as ancestors of a changed entry: their upper's ctime
    // moves after rfs has answered for them (an entry renamed into them, their times put
    // back), and rfs sends the kernel no invalidation yet, so it keeps the ctime it cached
    // (kernel overlayfs reads the upper's each time). Everything else of them is compared.
    let ancestors = ["d1", "d1/sub", "m1"];
    let copied = [
        "a", "sym", "d1", "d1/sub", "d1/sub/y", "b", "fifo", "hl1", "d1/hl2", "m1", "m1/deep",
    ];
    let mut errs = Vec::new();
    for p in copied {
        let mut merged = Vec::new();
        for (system, mnt, upper) in [("kernel", &km, &ku), ("rfs", &rm, &ru)] {
            let m = FullStat::of(&mnt.join(p));
            // The kernel links the other names of a hard-link group into its upper only
            // when they change; its index holds the one inode meanwhile.
            let u = FullStat::of(&upper.join(if p == "d1/hl2" { "hl1" } else { p }));
            // The inode number stays the lower's through a copy-up; a directory merged with
            // a lower one reports nlink 1.
            let blank = |s: &FullStat| FullStat {
                ino: 0,
                nlink: if s.mode & libc::S_IFMT == libc::S_IFDIR {
                    0
                } else {
                    s.nlink
                },
                ctime: if ancestors.contains(&p) {
                    (0, 0)
                } else {
                    s.ctime
                },
                ..s.clone()
            };
            let d = FullStat::diff(&blank(&u), &blank(&m));
            if !d.is_empty() {
                errs.push(format!("{system} /{p}: {} (upper != merged)", d.join(", ")));
            }
            merged.push(m);
        }
        let (k, r) = (&merged[0], &merged[1]);
        if k.atime != r.atime {
            errs.push(format!(
                "/{p}: atime {:?} != {:?} (kernel != rfs)",
                k.atime, r.atime
            ));
        }
        if p != "b" && k.mtime != r.mtime {
            errs.push(format!(
                "/{p}: mtime {:?} != {:?} (kernel != rfs)",
                k.mtime, r.mtime
            ));
        }
    }
    rfs.unmount().expect("unmounting rfs");
    kernel.unmount().expect("unmounting kernel overlayfs");
    assert!(
        errs.is_empty(),
        "copied-up entries:\n  {}",
        errs.join("\n  ")
    );
}
