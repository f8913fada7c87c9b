//! A named test for each semantic rule of DESIGN §2 that directory lowers can show, through a
//! real rfs mount, plus the identity and I/O guarantees of the "Semantics" list
//! (statfs, private xattrs, O_DIRECT, locks, shared mmap).
//!
//! Rules 5 and 6 are about layer tars and image blobs, which directory lowers do not have:
//! rule 5 is tested in `fs` (`lower.rs`: a tar whiteout hides only the layers below, an opaque
//! marker applies before the layer's own entries; `tar_index/build.rs`: leading `/`, bare
//! `.wh.`) and in `bad_input.rs` (`..`, duplicates, bare `.wh.`); rule 6 (blob and diff_id
//! digests) in `bad_input.rs` and `images.rs`.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::{AT_FDCWD, RenameFlags};
use nix::sys::stat::SFlag;

use crate::common::{self, MountGuard, Scratch};
use crate::differential::{self, Kind, build, xattr};

/// Lowers (top first), an upper, a work dir and a mountpoint in one scratch dir, and the rfs
/// mount over them (unmounted on drop, before the scratch dir is removed).
struct Fx {
    guard: Option<MountGuard>,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
    _scratch: Scratch,
}

impl Fx {
    /// `n` empty lowers; fill them with `self.lower(i)` (0 is the top), then `mount`.
    fn new(n: usize) -> Fx {
        let scratch = Scratch::new();
        Fx {
            guard: None,
            lowers: (0..n)
                .map(|i| scratch.mkdir(&format!("lower{i}")))
                .collect(),
            upper: scratch.mkdir("upper"),
            work: scratch.mkdir("work"),
            mnt: scratch.mkdir("mnt"),
            _scratch: scratch,
        }
    }

    fn lower(&self, i: usize) -> &Path {
        &self.lowers[i]
    }

    fn lowerdir(&self) -> String {
        self.lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn mount(&mut self) {
        assert!(self.guard.is_none(), "already mounted");
        let lowerdir = self.lowerdir();
        let args: Vec<&OsStr> = vec![
            OsStr::new("mount"),
            OsStr::new("--lower"),
            OsStr::new(&lowerdir),
            OsStr::new("--upper"),
            self.upper.as_os_str(),
            OsStr::new("--work"),
            self.work.as_os_str(),
        ];
        self.guard =
            Some(MountGuard::rfs(&args, &self.mnt).unwrap_or_else(|e| panic!("rfs mount: {e}")));
    }

    fn unmount(&mut self) {
        if let Some(g) = self.guard.take() {
            g.unmount().expect("unmounting rfs");
        }
    }

    fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// A path in the mount.
    fn m(&self, rel: &str) -> PathBuf {
        build::at(&self.mnt, rel)
    }

    /// A path in the upper dir.
    fn u(&self, rel: &str) -> PathBuf {
        build::at(&self.upper, rel)
    }

    /// Everything in the upper dir (relative paths), the root excluded.
    fn upper_entries(&self) -> Vec<(String, Kind)> {
        differential::list(&self.upper)
            .into_iter()
            .filter(|(p, _)| !p.is_empty())
            .collect()
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

fn is_opaque(p: &Path) -> bool {
    xattr::get(p, "trusted.overlay.opaque")
        .ok()
        .flatten()
        .as_deref()
        == Some(b"y")
}

fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const ENOENT: i32 = 2;
const ENOTDIR: i32 = 20;
const EEXIST: i32 = 17;
const ENOTEMPTY: i32 = 39;
const ENODATA: i32 = 61;
const EAGAIN: i32 = 11;

// ---------------------------------------------------------------------------------------------
// Lookup and layering.

/// Rule 1: upper first, then the lowers top to bottom (overlayfs `lowerdir=` order).
#[test]
fn rule01_order_upper_then_lowers_top_down() {
    let mut fx = Fx::new(3);
    for (i, who) in ["top", "mid", "bottom"].iter().enumerate() {
        build::file(fx.lower(i), "e", who.as_bytes(), 0o644);
        build::file(fx.lower(i), "f", who.as_bytes(), 0o644);
        if i > 0 {
            build::file(fx.lower(i), "g", who.as_bytes(), 0o644);
        }
        if i > 1 {
            build::file(fx.lower(i), "h", who.as_bytes(), 0o644);
        }
    }
    build::file(&fx.upper, "e", b"upper", 0o644);
    fx.mount();
    assert_eq!(read(&fx.m("e")), "upper", "the upper wins over every lower");
    assert_eq!(read(&fx.m("f")), "top", "the leftmost lower is the top");
    assert_eq!(read(&fx.m("g")), "mid");
    assert_eq!(read(&fx.m("h")), "bottom");
    fs::write(fx.m("g"), "written").unwrap();
    assert_eq!(read(&fx.m("g")), "written");
    assert_eq!(read(&fx.u("g")), "written", "a write lands in the upper");
    assert_eq!(read(&fx.lower(1).join("g")), "mid", "lowers never change");
}

/// Rule 2: a non-directory hides everything below it; directories merge down to an opaque
/// dir, a non-directory or a whiteout; a merged dir's metadata and xattrs are its topmost
/// instance's.
#[test]
fn rule02_non_dir_hides_dirs_merge_topmost_metadata() {
    let mut fx = Fx::new(3);
    let (top, mid, bot) = (
        fx.lower(0).to_path_buf(),
        fx.lower(1).to_path_buf(),
        fx.lower(2).to_path_buf(),
    );
    // A file hides a dir below; a dir hides a file below (and does not merge with it).
    build::dir(&bot, "x", 0o755);
    build::file(&bot, "x/below", b"hidden", 0o644);
    build::file(&top, "x", b"file x", 0o644);
    build::file(&bot, "y", b"file y", 0o644);
    build::dir(&mid, "y", 0o755);
    build::file(&mid, "y/in", b"in", 0o644);
    // Three instances merge.
    for (l, n) in [(&top, "a"), (&mid, "b"), (&bot, "c")] {
        build::dir(l, "d", 0o755);
        build::file(l, &format!("d/{n}"), n.as_bytes(), 0o644);
    }
    build::file(&bot, "d/a", b"hidden by top's d/a", 0o644);
    // Merging stops at a non-directory in the middle.
    build::dir(&top, "s", 0o755);
    build::file(&top, "s/a", b"a", 0o644);
    build::file(&mid, "s", b"a file stops the merge", 0o644);
    build::dir(&bot, "s", 0o755);
    build::file(&bot, "s/c", b"c", 0o644);
    // The topmost instance's metadata and xattrs, not a union.
    build::dir(&top, "meta", 0o750);
    build::owner(&top, "meta", 1000, 1001);
    build::xattr(&top, "meta", "user.k", b"top");
    build::dir(&mid, "meta", 0o700);
    build::xattr(&mid, "meta", "user.k", b"mid");
    build::xattr(&mid, "meta", "user.only_mid", b"1");
    build::file(&mid, "meta/f", b"f", 0o644);
    build::time(&top, "meta", 1_000_000_000, 5);
    build::time(&mid, "meta", 1_100_000_000, 7);
    fx.mount();

    let x = lstat(&fx.m("x"));
    assert!(x.is_file(), "x is top's file");
    assert_eq!(read(&fx.m("x")), "file x");
    assert_eq!(errno(fs::symlink_metadata(fx.m("x/below"))), ENOTDIR);
    assert!(lstat(&fx.m("y")).is_dir());
    assert_eq!(names(&fx.m("y")), ["in"]);
    assert_eq!(names(&fx.m("d")), ["a", "b", "c"]);
    assert_eq!(read(&fx.m("d/a")), "a");
    assert_eq!(
        names(&fx.m("s")),
        ["a"],
        "the file in the middle stops the merge"
    );
    let meta = lstat(&fx.m("meta"));
    assert_eq!(meta.mode() & 0o7777, 0o750);
    assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_000_000_000, 5));
    let mut xs = xattr::list(&fx.m("meta")).unwrap();
    xs.retain(|n| n.starts_with("user."));
    assert_eq!(xs, ["user.k"], "xattrs of the topmost instance only");
    assert_eq!(
        xattr::get(&fx.m("meta"), "user.k").unwrap().unwrap(),
        b"top"
    );
    assert_eq!(names(&fx.m("meta")), ["f"]);
}

/// Rule 3: whiteouts hide the name below and are never visible themselves; opaque dirs hide
/// everything below but keep their own entries (and merge with layers above them).
#[test]
fn rule03_whiteouts_hide_opaque_dirs_cut() {
    let mut fx = Fx::new(3);
    let (top, mid, bot) = (
        fx.lower(0).to_path_buf(),
        fx.lower(1).to_path_buf(),
        fx.lower(2).to_path_buf(),
    );
    build::file(&bot, "w", b"whited out", 0o644);
    build::dir(&bot, "wd/sub", 0o755);
    build::file(&bot, "wd/sub/f", b"f", 0o644);
    build::whiteout(&mid, "w");
    build::whiteout(&mid, "wd");
    build::dir(&bot, "d", 0o755);
    build::file(&bot, "d/x", b"x", 0o644);
    build::file(&bot, "d/y", b"y", 0o644);
    build::dir(&mid, "d", 0o755);
    build::whiteout(&mid, "d/x");
    build::dir(&bot, "o", 0o755);
    build::file(&bot, "o/hidden", b"hidden", 0o644);
    build::dir(&bot, "o/hiddendir", 0o755);
    build::dir(&mid, "o", 0o755);
    build::xattr(&mid, "o", "trusted.overlay.opaque", b"y");
    build::file(&mid, "o/own", b"own", 0o644);
    build::dir(&top, "o", 0o755);
    build::file(&top, "o/top", b"top", 0o644);
    fx.mount();

    assert_eq!(errno(fs::symlink_metadata(fx.m("w"))), ENOENT);
    assert_eq!(errno(fs::symlink_metadata(fx.m("wd"))), ENOENT);
    assert_eq!(errno(fs::symlink_metadata(fx.m("wd/sub/f"))), ENOENT);
    assert_eq!(names(&fx.m("")), ["d", "o"]);
    assert_eq!(names(&fx.m("d")), ["y"]);
    assert_eq!(errno(fs::symlink_metadata(fx.m("d/x"))), ENOENT);
    assert_eq!(names(&fx.m("o")), ["own", "top"]);
    assert_eq!(errno(fs::symlink_metadata(fx.m("o/hidden"))), ENOENT);
    // `find` sees no device node: no whiteout is ever visible.
    let listing = run(Command::new("find")
        .arg(&fx.mnt)
        .args(["-printf", "%y %P\n"]));
    assert!(
        !listing.lines().any(|l| l.starts_with('c')),
        "a whiteout is visible:\n{listing}"
    );
    assert_eq!(listing.lines().count(), 6, "{listing}"); // ., d, d/y, o, o/own, o/top
}

/// Rule 4: xattr whiteouts (`{trusted,user}.overlay.whiteout`, in a dir marked
/// `overlay.opaque=x`), and `"x"` alone is not opaque.
#[test]
fn rule04_xattr_whiteouts_and_opaque_x() {
    let mut fx = Fx::new(2);
    let (mid, bot) = (fx.lower(0).to_path_buf(), fx.lower(1).to_path_buf());
    for d in ["t", "u"] {
        build::dir(&bot, d, 0o755);
        build::file(&bot, &format!("{d}/gone"), b"gone", 0o644);
        build::file(&bot, &format!("{d}/kept"), b"kept", 0o644);
        build::dir(&mid, d, 0o755);
        build::file(&mid, &format!("{d}/gone"), b"", 0o644);
    }
    build::xattr(&mid, "t", "trusted.overlay.opaque", b"x");
    build::xattr(&mid, "t/gone", "trusted.overlay.whiteout", b"");
    build::xattr(&mid, "u", "user.overlay.opaque", b"x");
    build::xattr(&mid, "u/gone", "user.overlay.whiteout", b"");
    fx.mount();
    for d in ["t", "u"] {
        assert_eq!(
            names(&fx.m(d)),
            ["kept"],
            "{d}: the xattr whiteout hides gone"
        );
        assert_eq!(
            errno(fs::symlink_metadata(fx.m(&format!("{d}/gone")))),
            ENOENT
        );
    }
}

/// Rule 4: OCI whiteout files `.wh.<name>` and `.wh..wh..opq` in a directory lower; the
/// markers themselves never appear.
#[test]
fn rule04_oci_whiteout_files_in_dir_lowers() {
    let mut fx = Fx::new(2);
    let (mid, bot) = (fx.lower(0).to_path_buf(), fx.lower(1).to_path_buf());
    build::file(&bot, "f", b"f", 0o644);
    build::file(&bot, "kept", b"kept", 0o644);
    build::dir(&bot, "dd/x", 0o755);
    build::file(&mid, ".wh.f", b"", 0o644);
    build::file(&mid, ".wh.dd", b"", 0o644);
    build::dir(&bot, "o", 0o755);
    build::file(&bot, "o/hidden", b"hidden", 0o644);
    build::dir(&mid, "o", 0o755);
    build::file(&mid, "o/.wh..wh..opq", b"", 0o644);
    build::file(&mid, "o/own", b"own", 0o644);
    fx.mount();
    assert_eq!(names(&fx.m("")), ["kept", "o"]);
    assert_eq!(errno(fs::symlink_metadata(fx.m("f"))), ENOENT);
    assert_eq!(errno(fs::symlink_metadata(fx.m(".wh.f"))), ENOENT);
    assert_eq!(names(&fx.m("o")), ["own"]);
}

/// Rule 4: opaque markers `trusted.overlay.opaque=y` and `user.overlay.opaque=y`; `"x"` is not
/// opaque.
#[test]
fn rule04_opaque_marker_formats() {
    let mut fx = Fx::new(2);
    let (mid, bot) = (fx.lower(0).to_path_buf(), fx.lower(1).to_path_buf());
    for (d, name, value) in [
        ("ty", "trusted.overlay.opaque", "y"),
        ("uy", "user.overlay.opaque", "y"),
        ("tx", "trusted.overlay.opaque", "x"),
        ("ux", "user.overlay.opaque", "x"),
    ] {
        build::dir(&bot, d, 0o755);
        build::file(&bot, &format!("{d}/below"), b"below", 0o644);
        build::dir(&mid, d, 0o755);
        build::file(&mid, &format!("{d}/own"), b"own", 0o644);
        build::xattr(&mid, d, name, value.as_bytes());
    }
    fx.mount();
    assert_eq!(names(&fx.m("ty")), ["own"]);
    assert_eq!(names(&fx.m("uy")), ["own"]);
    assert_eq!(names(&fx.m("tx")), ["below", "own"], "\"x\" is not opaque");
    assert_eq!(names(&fx.m("ux")), ["below", "own"], "\"x\" is not opaque");
}

/// Rule 4: aufs meta names (`.wh..wh.plnk`, `.wh..wh.aufs`, `.wh..wh.orph`) never appear.
#[test]
fn rule04_aufs_meta_names_never_appear() {
    let mut fx = Fx::new(1);
    let l = fx.lower(0).to_path_buf();
    build::dir(&l, ".wh..wh.plnk", 0o700);
    build::file(&l, ".wh..wh.plnk/1234.5", b"", 0o644);
    build::file(&l, ".wh..wh.aufs", b"", 0o644);
    build::dir(&l, ".wh..wh.orph", 0o700);
    build::dir(&l, "d/.wh..wh.plnk", 0o700);
    build::file(&l, "d/f", b"f", 0o644);
    fx.mount();
    assert_eq!(names(&fx.m("")), ["d"]);
    assert_eq!(names(&fx.m("d")), ["f"]);
    for n in [".wh..wh.plnk", ".wh..wh.aufs", ".wh..wh.orph"] {
        assert_eq!(errno(fs::symlink_metadata(fx.m(n))), ENOENT, "{n}");
    }
}

// Rule 5 (whiteouts and paths in layer tars) and rule 6 (blob and diff_id digests) concern
// tar layers and image blobs: see the module comment.

// ---------------------------------------------------------------------------------------------
// Copy-up.

/// A lower with a bit of everything, for the copy-up tests.
fn copy_up_lower(l: &Path) {
    build::dir(l, "a/b/c", 0o755);
    build::file(l, "a/b/c/f", b"deep file\n", 0o644);
    build::file(l, "plain", b"plain\n", 0o644);
    build::symlink(l, "link", "plain");
    build::file(l, "x", b"x with xattrs\n", 0o644);
    build::xattr(l, "x", "user.x", b"1");
    build::dir(l, "dir", 0o755);
    build::file(l, "dir/in", b"in\n", 0o644);
    for n in [
        "ro", "w", "rw", "trunc", "chmod", "chown", "utimes", "truncate", "setx", "rmx",
    ] {
        build::file(l, n, format!("{n} data\n").as_bytes(), 0o644);
    }
    build::xattr(l, "rmx", "user.gone", b"1");
    build::file(l, "linkme", b"linkme\n", 0o644);
    build::file(l, "moveme", b"moveme\n", 0o644);
}

/// Rule 7: reading never copies up: reads, `tar` of the whole tree, `find`, stat, readlink,
/// readdir, getxattr and read-only mmap leave the upper empty.
#[test]
fn rule07_read_only_access_never_copies_up() {
    let mut fx = Fx::new(1);
    copy_up_lower(fx.lower(0));
    fx.mount();
    run(Command::new("tar")
        .arg("-cf")
        .arg("/dev/null")
        .arg("-C")
        .arg(&fx.mnt)
        .arg("--xattrs")
        .arg("."));
    run(Command::new("find").arg(&fx.mnt).arg("-ls"));
    run(Command::new("getfattr")
        .args(["-R", "-d", "-m", "-"])
        .arg(&fx.mnt));
    for (p, _) in differential::list(&fx.mnt) {
        let md = lstat(&fx.m(&p));
        if md.is_file() {
            let mut f = OpenOptions::new().read(true).open(fx.m(&p)).unwrap();
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
        }
    }
    assert_eq!(fs::read_link(fx.m("link")).unwrap(), Path::new("plain"));
    // O_RDONLY with O_NOATIME and a read-only mapping.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(fx.m("ro"))
        .unwrap();
    mm::read_only_map_reads(&f, b"ro data\n");
    assert_eq!(
        fx.upper_entries(),
        [],
        "read-only access copied something up"
    );
}

/// Rule 7: opening for write (even without writing) or with O_TRUNC copies up.
#[test]
fn rule07_open_for_write_copies_up() {
    let mut fx = Fx::new(1);
    copy_up_lower(fx.lower(0));
    fx.mount();
    drop(OpenOptions::new().write(true).open(fx.m("w")).unwrap());
    drop(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(fx.m("rw"))
            .unwrap(),
    );
    drop(
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(fx.m("trunc"))
            .unwrap(),
    );
    assert_eq!(read(&fx.u("w")), "w data\n", "O_WRONLY copies up");
    assert_eq!(read(&fx.u("rw")), "rw data\n", "O_RDWR copies up");
    assert_eq!(read(&fx.u("trunc")), "", "O_TRUNC copies up and truncates");
    assert_eq!(read(&fx.m("trunc")), "");
    assert!(!fx.u("ro").exists(), "an untouched sibling stays below");
}

/// Rule 7: every metadata change (chmod, chown, utimes, truncate, setxattr, removexattr),
/// `link()` and `rename()` of a lower entry copy it up; siblings stay below.
#[test]
fn rule07_metadata_changes_link_rename_copy_up() {
    let mut fx = Fx::new(1);
    copy_up_lower(fx.lower(0));
    fx.mount();
    fs::set_permissions(fx.m("chmod"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(fx.m("chown"), Some(1000), Some(1000)).unwrap();
    build::time(&fx.mnt, "utimes", 1_000_000_000, 0);
    fs::OpenOptions::new()
        .write(true)
        .open(fx.m("truncate"))
        .unwrap()
        .set_len(3)
        .unwrap();
    xattr::set(&fx.m("setx"), "user.new", b"v").unwrap();
    xattr::remove(&fx.m("rmx"), "user.gone").unwrap();
    fs::hard_link(fx.m("linkme"), fx.m("linked")).unwrap();
    fs::rename(fx.m("moveme"), fx.m("moved")).unwrap();
    fs::rename(fx.m("dir"), fx.m("dir2")).unwrap();

    assert_eq!(lstat(&fx.u("chmod")).mode() & 0o7777, 0o600);
    assert_eq!(lstat(&fx.u("chown")).uid(), 1000);
    assert_eq!(lstat(&fx.u("utimes")).mtime(), 1_000_000_000);
    assert_eq!(read(&fx.u("truncate")), "tru");
    assert_eq!(
        xattr::get(&fx.u("setx"), "user.new").unwrap().unwrap(),
        b"v"
    );
    assert_eq!(read(&fx.u("rmx")), "rmx data\n");
    assert_eq!(xattr::get(&fx.u("rmx"), "user.gone").unwrap(), None);
    assert_eq!(lstat(&fx.u("linkme")).ino(), lstat(&fx.u("linked")).ino());
    assert_eq!(read(&fx.u("moved")), "moveme\n");
    assert!(
        is_whiteout(&fx.u("moveme")),
        "the renamed lower file's old name is whited out"
    );
    assert!(lstat(&fx.u("dir2")).is_dir());
    assert_eq!(read(&fx.m("dir2/in")), "in\n");
    for untouched in ["ro", "plain", "x", "a"] {
        assert!(
            fs::symlink_metadata(fx.u(untouched)).is_err(),
            "{untouched} was copied up"
        );
    }
}

/// Rule 8: ancestors are copied up first, each with owner, mode, times and xattrs; the entry
/// keeps owner, mode, times, xattrs (user., trusted., security.capability), symlink target
/// and rdev; the overlay's private xattrs are not copied.
#[test]
fn rule08_copy_up_preserves_metadata() {
    let mut fx = Fx::new(1);
    let l = fx.lower(0).to_path_buf();
    build::dir(&l, "a/b/c", 0o755);
    build::file(&l, "a/b/c/f", b"the data\n", 0o640);
    for (d, mode, uid) in [
        ("a", 0o751, 1000),
        ("a/b", 0o705, 1001),
        ("a/b/c", 0o2775, 1002),
    ] {
        fs::set_permissions(l.join(d), fs::Permissions::from_mode(mode)).unwrap();
        build::owner(&l, d, uid, uid + 10);
        build::xattr(&l, d, "user.dir", d.as_bytes());
        build::xattr(&l, d, "trusted.dir", d.as_bytes());
    }
    for (i, d) in ["a/b/c", "a/b", "a"].into_iter().enumerate() {
        build::time(&l, d, 1_000_000_000 + i as i64 * 1000, 111 + i as i64);
    }
    build::owner(&l, "a/b/c/f", 1234, 4321);
    build::xattr(&l, "a/b/c/f", "user.f", b"user value");
    build::xattr(&l, "a/b/c/f", "trusted.f", b"trusted value");
    build::xattr(&l, "a/b/c/f", "trusted.overlay.private", b"not copied");
    run(Command::new("setcap")
        .arg("cap_net_bind_service+ep")
        .arg(l.join("a/b/c/f")));
    build::time(&l, "a/b/c/f", 1_200_000_000, 999);
    build::symlink(&l, "sl", "a/b/c/f");
    build::owner(&l, "sl", 1000, 1000);
    build::time(&l, "sl", 1_300_000_000, 3);
    build::node(
        &l,
        "null",
        SFlag::S_IFCHR,
        0o620,
        nix::sys::stat::makedev(1, 3),
    );
    build::node(&l, "fifo", SFlag::S_IFIFO, 0o604, 0);
    fx.mount();
    let cap_before = xattr::get(&fx.m("a/b/c/f"), "security.capability").unwrap();
    assert!(
        cap_before.is_some(),
        "security.capability is visible through the mount"
    );

    // Copy-ups that change neither data nor times: setxattr, lchown to the same ids.
    xattr::set(&fx.m("a/b/c/f"), "user.trigger", b"1").unwrap();
    std::os::unix::fs::lchown(fx.m("sl"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::lchown(fx.m("null"), Some(0), Some(0)).unwrap();
    std::os::unix::fs::lchown(fx.m("fifo"), Some(0), Some(0)).unwrap();

    let mut mtime_errs = Vec::new();
    for rel in ["a", "a/b", "a/b/c", "a/b/c/f", "sl", "null", "fifo"] {
        let (lo, up) = (lstat(&l.join(rel)), lstat(&fx.u(rel)));
        assert_eq!(up.mode(), lo.mode(), "{rel}: mode");
        assert_eq!(up.rdev(), lo.rdev(), "{rel}: rdev");
        if !["sl", "null", "fifo"].contains(&rel) {
            assert_eq!((up.uid(), up.gid()), (lo.uid(), lo.gid()), "{rel}: owner");
        }
        let mt = |m: &fs::Metadata| (m.mtime(), m.mtime_nsec());
        let seen = lstat(&fx.m(rel));
        if mt(&up) != mt(&lo) || mt(&seen) != mt(&lo) {
            mtime_errs.push(format!(
                "{rel}: lower mtime {:?}, upper {:?}, through the mount {:?}",
                mt(&lo),
                mt(&up),
                mt(&seen)
            ));
        }
    }
    for d in ["a", "a/b", "a/b/c"] {
        assert_eq!(
            xattr::get(&fx.u(d), "user.dir").unwrap().unwrap(),
            d.as_bytes()
        );
        assert_eq!(
            xattr::get(&fx.u(d), "trusted.dir").unwrap().unwrap(),
            d.as_bytes()
        );
    }
    let f = fx.u("a/b/c/f");
    assert_eq!(read(&f), "the data\n");
    assert_eq!(xattr::get(&f, "user.f").unwrap().unwrap(), b"user value");
    assert_eq!(
        xattr::get(&f, "trusted.f").unwrap().unwrap(),
        b"trusted value"
    );
    assert_eq!(
        xattr::get(&f, "security.capability").unwrap(),
        cap_before,
        "security.capability survives copy-up (data before xattrs)"
    );
    assert_eq!(xattr::get(&f, "trusted.overlay.private").unwrap(), None);
    assert_eq!(fs::read_link(fx.u("sl")).unwrap(), Path::new("a/b/c/f"));
    let getcap = run(Command::new("getcap").arg(fx.m("a/b/c/f")));
    assert!(getcap.contains("cap_net_bind_service"), "getcap: {getcap}");
    // Times last, so a failure here says the rest was right.
    assert!(
        mtime_errs.is_empty(),
        "copy-up changed times (the kernel restores a copied-up parent's times):\n{}",
        mtime_errs.join("\n")
    );
}

/// Rule 8: POSIX ACLs are preserved by copy-up (and served through the mount).
#[test]
fn rule08_copy_up_preserves_acls() {
    let mut fx = Fx::new(1);
    let l = fx.lower(0).to_path_buf();
    build::file(&l, "f", b"acl\n", 0o640);
    build::dir(&l, "d", 0o750);
    // user::rw- user:1000:r-- group::r-- mask::r-- other::---
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    build::xattr(&l, "f", "system.posix_acl_access", &acl);
    build::xattr(&l, "d", "system.posix_acl_default", &acl);
    let want_f = xattr::get(&l.join("f"), "system.posix_acl_access").unwrap();
    let want_d = xattr::get(&l.join("d"), "system.posix_acl_default").unwrap();
    fx.mount();
    assert_eq!(
        xattr::get(&fx.m("f"), "system.posix_acl_access").unwrap(),
        want_f,
        "the ACL through the mount"
    );
    xattr::set(&fx.m("f"), "user.trigger", b"1").unwrap();
    xattr::set(&fx.m("d"), "user.trigger", b"1").unwrap();
    assert_eq!(
        xattr::get(&fx.u("f"), "system.posix_acl_access").unwrap(),
        want_f
    );
    assert_eq!(
        xattr::get(&fx.u("d"), "system.posix_acl_default").unwrap(),
        want_d
    );
}

/// Finds the pid of the rfs daemon serving `mnt` (a process this test started).
fn daemon_pid(mnt: &Path) -> Option<i32> {
    let want = mnt.as_os_str().as_encoded_bytes();
    for e in fs::read_dir("/proc").ok()? {
        let e = e.ok()?;
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_rfs = args
            .first()
            .is_some_and(|a| a.ends_with(common::rfs_bin().as_os_str().as_encoded_bytes()));
        if is_rfs && args.contains(&want) && args.contains(&b"mount".as_slice()) {
            return Some(pid);
        }
    }
    None
}

/// Rule 9: copy-up is atomic: killing the daemon in the middle of a large copy-up never
/// leaves a partial file visible, and the work dir is clean after the next mount (also of
/// leftovers planted there).
#[test]
fn rule09_copy_up_atomic_and_work_dir_cleaned() {
    let mut fx = Fx::new(1);
    let data: Vec<u8> = (0..96u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    build::file(fx.lower(0), "big", &data, 0o644);
    drop(data);
    let want = run(Command::new("sha256sum").arg(fx.lower(0).join("big")));
    let want = want.split(' ').next().unwrap().to_string();
    fx.mount();
    let pid = daemon_pid(&fx.mnt).expect("the rfs daemon's pid");
    let path = fx.m("big");
    let opener = std::thread::spawn(move || {
        OpenOptions::new()
            .append(true)
            .open(path)
            .map(|mut f| f.write_all(b"tail"))
    });
    std::thread::sleep(Duration::from_millis(30));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = opener.join();
    if let Some(g) = fx.guard.take() {
        let _ = g.unmount(); // The connection is gone; a lazy unmount is expected.
    }
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // A leftover such as a crash leaves (rfs's temporary-name prefix), planted in the work dir.
    fs::write(fx.work.join("#rfs-tmp-1-1"), b"partial").unwrap();
    fx.mount();
    let got = run(Command::new("sha256sum").arg(fx.m("big")));
    let got = got.split(' ').next().unwrap();
    let size = lstat(&fx.m("big")).size();
    assert!(
        (got == want && size == 96 << 20) || size == (96 << 20) + 4,
        "after a crash in copy-up: size {size}, sha256 {got} (lower {want})"
    );
    if let Ok(md) = fs::symlink_metadata(fx.u("big")) {
        assert!(
            md.size() >= 96 << 20,
            "a partial copy-up is visible in the upper"
        );
    }
    let leftovers: Vec<String> = differential::list(&fx.work)
        .into_iter()
        .filter(|(_, k)| *k != Kind::Dir)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        leftovers,
        Vec::<String>::new(),
        "the work dir is not clean after mounting"
    );
}

/// Rule 9: copy-up keeps holes.
#[test]
fn rule09_copy_up_keeps_holes() {
    let mut fx = Fx::new(1);
    let p = fx.lower(0).join("sparse");
    let f = fs::File::create(&p).unwrap();
    f.write_all_at(b"middle", 64 << 20).unwrap();
    f.write_all_at(b"end", (256 << 20) - 3).unwrap();
    drop(f);
    fx.mount();
    let f = OpenOptions::new().write(true).open(fx.m("sparse")).unwrap();
    f.write_all_at(b"S", 0).unwrap();
    drop(f);
    let up = lstat(&fx.u("sparse"));
    assert_eq!(up.size(), 256 << 20);
    assert!(
        up.blocks() * 512 < 4 << 20,
        "the copied-up sparse file uses {} bytes on disk",
        up.blocks() * 512
    );
    let mut f = fs::File::open(fx.m("sparse")).unwrap();
    let mut buf = [0u8; 6];
    f.read_exact_at(&mut buf[..1], 0).unwrap();
    assert_eq!(&buf[..1], b"S");
    f.read_exact_at(&mut buf, 64 << 20).unwrap();
    assert_eq!(&buf, b"middle");
    f.seek(SeekFrom::Start((256 << 20) - 3)).unwrap();
    let mut end = String::new();
    f.read_to_string(&mut end).unwrap();
    assert_eq!(end, "end");
}

/// Rule 10: a metadata-only change (chmod, chown, utimes) may skip the data, but what is read
/// is the lower data, also after a remount; an upper file whose data is not all there must be
/// marked (so the upper is never silently wrong). A `metacopy` xattr in a lower dir is trusted
/// only in the namespace of the mount's own markers, as kernel overlayfs with `metacopy=on`
/// trusts `trusted.overlay.metacopy` (or `user.` with `userxattr`): a stacked upper reads
/// back (README, "Stacking an upper as a lower"); as root a `user.` one means nothing.
#[test]
fn rule10_metadata_only_copy_up_reads_right() {
    let mut fx = Fx::new(2);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    build::file(fx.lower(1), "f", &data, 0o644);
    build::file(
        fx.lower(1),
        "g",
        b"bottom g, longer than the top one",
        0o644,
    );
    build::file(fx.lower(0), "g", b"top g", 0o644);
    build::xattr(fx.lower(0), "g", "trusted.overlay.metacopy", b"");
    build::file(
        fx.lower(1),
        "h",
        b"bottom h, longer than the top one",
        0o644,
    );
    build::file(fx.lower(0), "h", b"top h", 0o644);
    build::xattr(fx.lower(0), "h", "user.overlay.metacopy", b"");
    fx.mount();
    fs::set_permissions(fx.m("f"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(fx.m("f"), Some(1000), Some(1000)).unwrap();
    assert_eq!(fs::read(fx.m("f")).unwrap(), data);
    fx.remount();
    assert_eq!(fs::read(fx.m("f")).unwrap(), data);
    assert_eq!(lstat(&fx.m("f")).mode() & 0o7777, 0o600);
    let up = fs::read(fx.u("f")).unwrap();
    if up != data {
        let names = xattr::list(&fx.u("f")).unwrap();
        assert!(
            names.iter().any(|n| n.contains("metacopy")),
            "the upper file lacks the data but carries no metacopy mark: {names:?}"
        );
    }
    assert_eq!(
        read(&fx.m("g")),
        "bottom g, longer than the top one",
        "a trusted.overlay.metacopy in a lower is followed as root"
    );
    assert_eq!(
        read(&fx.m("h")),
        "top h",
        "a user.overlay.metacopy in a lower means nothing as root"
    );
}

// ---------------------------------------------------------------------------------------------
// Create, delete, rename.

/// Rule 11: deleting a name that exists below leaves a whiteout; a pure-upper entry is just
/// removed; rmdir needs the merged view to be empty.
#[test]
fn rule11_delete_leaves_whiteout_only_when_needed() {
    let mut fx = Fx::new(2);
    let (top, bot) = (fx.lower(0).to_path_buf(), fx.lower(1).to_path_buf());
    build::file(&bot, "f", b"f", 0o644);
    build::dir(&bot, "empty", 0o755);
    build::dir(&bot, "full", 0o755);
    build::file(&bot, "full/x", b"x", 0o644);
    build::dir(&top, "full", 0o755);
    build::file(&top, "full/y", b"y", 0o644);
    build::symlink(&bot, "sl", "f");
    fx.mount();
    fs::remove_file(fx.m("f")).unwrap();
    fs::remove_file(fx.m("sl")).unwrap();
    fs::remove_dir(fx.m("empty")).unwrap();
    assert_eq!(errno(fs::remove_dir(fx.m("full"))), ENOTEMPTY);
    fs::write(fx.m("new"), "n").unwrap();
    fs::remove_file(fx.m("new")).unwrap();
    fs::create_dir(fx.m("newdir")).unwrap();
    fs::write(fx.m("newdir/n"), "n").unwrap();
    fs::remove_file(fx.m("newdir/n")).unwrap();
    fs::remove_dir(fx.m("newdir")).unwrap();
    fs::remove_file(fx.m("full/x")).unwrap();
    assert_eq!(errno(fs::remove_dir(fx.m("full"))), ENOTEMPTY, "y is left");
    fs::remove_file(fx.m("full/y")).unwrap();
    fs::remove_dir(fx.m("full")).unwrap();

    assert_eq!(names(&fx.mnt), Vec::<String>::new());
    for w in ["f", "sl", "empty", "full"] {
        assert!(is_whiteout(&fx.u(w)), "{w}: no whiteout in the upper");
    }
    assert!(!fx.u("new").exists() && !is_whiteout(&fx.u("new")));
    assert!(fs::symlink_metadata(fx.u("newdir")).is_err());
    assert_eq!(fx.upper_entries().len(), 4, "{:?}", fx.upper_entries());
    fx.remount();
    assert_eq!(names(&fx.mnt), Vec::<String>::new(), "deletions persist");
}

/// Rule 12: a directory created over a whiteout is opaque; a file replaces a whiteout; no
/// whiteouts inside opaque dirs.
#[test]
fn rule12_dir_over_whiteout_is_opaque_no_whiteouts_inside() {
    let mut fx = Fx::new(1);
    let l = fx.lower(0).to_path_buf();
    build::dir(&l, "g/sub", 0o755);
    build::file(&l, "g/a", b"a", 0o644);
    build::file(&l, "g/sub/b", b"b", 0o644);
    build::file(&l, "f", b"lower f", 0o644);
    fx.mount();
    run(Command::new("rm").arg("-rf").arg(fx.m("g")));
    assert!(is_whiteout(&fx.u("g")));
    fs::create_dir(fx.m("g")).unwrap();
    assert_eq!(
        names(&fx.m("g")),
        Vec::<String>::new(),
        "the new dir shows nothing below"
    );
    assert!(lstat(&fx.u("g")).is_dir());
    assert!(
        is_opaque(&fx.u("g")),
        "a dir created over a whiteout is opaque"
    );
    fs::write(fx.m("g/a"), "new a").unwrap();
    fs::remove_file(fx.m("g/a")).unwrap();
    fs::create_dir(fx.m("g/sub")).unwrap();
    fs::remove_dir(fx.m("g/sub")).unwrap();
    assert_eq!(
        names(&fx.u("g")),
        Vec::<String>::new(),
        "no whiteouts inside an opaque dir"
    );

    fs::remove_file(fx.m("f")).unwrap();
    assert!(is_whiteout(&fx.u("f")));
    fs::write(fx.m("f"), "upper f").unwrap();
    assert!(
        lstat(&fx.u("f")).is_file(),
        "the file replaced the whiteout"
    );
    assert_eq!(read(&fx.m("f")), "upper f");
    fx.remount();
    assert_eq!(names(&fx.m("g")), Vec::<String>::new());
    assert_eq!(read(&fx.m("f")), "upper f");
}

/// Rule 13: renaming a lower or merged directory works (no EXDEV) and keeps every child,
/// leaves a whiteout at the source, and persists.
#[test]
fn rule13_rename_lower_and_merged_dirs_keeps_children() {
    let mut fx = Fx::new(2);
    let (top, bot) = (fx.lower(0).to_path_buf(), fx.lower(1).to_path_buf());
    build::dir(&bot, "src/deep/er", 0o755);
    build::file(&bot, "src/deep/er/f", b"deep", 0o644);
    build::file(&bot, "src/b", b"bottom b", 0o644);
    build::symlink(&bot, "src/l", "b");
    build::dir(&top, "src/deep", 0o755);
    build::file(&top, "src/t", b"top t", 0o644);
    build::file(&top, "src/deep/t2", b"top t2", 0o644);
    build::dir(&bot, "other", 0o755);
    build::dir(&bot, "lower_only/x", 0o755);
    build::file(&bot, "lower_only/x/y", b"y", 0o644);
    fx.mount();
    fs::write(fx.m("src/upper_new"), "u").unwrap();
    fs::write(fx.m("src/deep/er/f"), "changed").unwrap();
    // The children exactly (the renamed dir's own mtime is rule 8's: copying up its children
    // must not change it, see rule08_copy_up_preserves_metadata).
    let children = |root: &Path| {
        let mut t = differential::snapshot(root);
        let me = t.remove("").unwrap();
        (t, (me.mode, me.uid, me.gid, me.xattrs, me.ino))
    };
    let (before, me_before) = children(&fx.m("src"));

    fs::rename(fx.m("src"), fx.m("other/dst")).expect("renaming a merged dir (no EXDEV)");
    assert_eq!(errno(fs::symlink_metadata(fx.m("src"))), ENOENT);
    assert!(is_whiteout(&fx.u("src")), "a whiteout at the source");
    let (after, me_after) = children(&fx.m("other/dst"));
    let errs = differential::diff_exact(&before, &after);
    assert!(
        errs.is_empty(),
        "the renamed dir's children changed:\n{}",
        errs.join("\n")
    );
    assert_eq!(
        me_after, me_before,
        "the renamed dir's own mode, owner, xattrs, st_ino"
    );

    fs::rename(fx.m("lower_only"), fx.m("lo2")).expect("renaming a lower dir (no EXDEV)");
    assert_eq!(read(&fx.m("lo2/x/y")), "y");
    // A new dir where the old one was is empty (opaque over the whiteout).
    fs::create_dir(fx.m("src")).unwrap();
    assert_eq!(names(&fx.m("src")), Vec::<String>::new());
    // Children can still be changed and removed in the renamed dir.
    fs::remove_file(fx.m("other/dst/b")).unwrap();
    fs::write(fx.m("other/dst/deep/er/g"), "g").unwrap();
    let before = differential::snapshot(&fx.mnt);
    fx.remount();
    let after = differential::snapshot(&fx.mnt);
    let errs = differential::diff_exact(&before, &after);
    assert!(errs.is_empty(), "after remount:\n{}", errs.join("\n"));
    assert_eq!(names(&fx.m("other/dst")), ["deep", "l", "t", "upper_new"]);
}

fn renameat2(from: &Path, to: &Path, flags: RenameFlags) -> io::Result<()> {
    nix::fcntl::renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)
        .map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// Rule 13: RENAME_NOREPLACE treats a whiteout as absent; RENAME_EXCHANGE works on lower
/// files and dirs.
#[test]
fn rule13_rename_noreplace_and_exchange() {
    let mut fx = Fx::new(1);
    let l = fx.lower(0).to_path_buf();
    build::file(&l, "a", b"a", 0o644);
    build::file(&l, "b", b"b", 0o644);
    build::file(&l, "gone", b"gone", 0o644);
    build::dir(&l, "d", 0o755);
    build::file(&l, "d/in", b"in", 0o644);
    build::file(&l, "x", b"x", 0o644);
    fx.mount();
    assert_eq!(
        errno(renameat2(
            &fx.m("a"),
            &fx.m("b"),
            RenameFlags::RENAME_NOREPLACE
        )),
        EEXIST
    );
    fs::remove_file(fx.m("gone")).unwrap();
    renameat2(&fx.m("a"), &fx.m("gone"), RenameFlags::RENAME_NOREPLACE)
        .expect("RENAME_NOREPLACE onto a whiteout");
    assert_eq!(read(&fx.m("gone")), "a");
    assert_eq!(errno(fs::symlink_metadata(fx.m("a"))), ENOENT);

    renameat2(&fx.m("b"), &fx.m("gone"), RenameFlags::RENAME_EXCHANGE).expect("exchange files");
    assert_eq!(
        (read(&fx.m("b")), read(&fx.m("gone"))),
        ("a".into(), "b".into())
    );
    renameat2(&fx.m("x"), &fx.m("d"), RenameFlags::RENAME_EXCHANGE).expect("exchange file, dir");
    assert_eq!(read(&fx.m("d")), "x");
    assert_eq!(read(&fx.m("x/in")), "in");
    assert_eq!(
        errno(renameat2(
            &fx.m("b"),
            &fx.m("nothere"),
            RenameFlags::RENAME_EXCHANGE
        )),
        ENOENT
    );
    fx.remount();
    assert_eq!(read(&fx.m("b")), "a");
    assert_eq!(read(&fx.m("gone")), "b");
    assert_eq!(read(&fx.m("d")), "x");
    assert_eq!(read(&fx.m("x/in")), "in");
    assert_eq!(names(&fx.mnt), ["b", "d", "gone", "x"]);
}

// ---------------------------------------------------------------------------------------------
// Identity.

/// Rule 14: one st_dev for every entry of the mount, and readdir's d_ino == st_ino, before and
/// after changes.
#[test]
fn rule14_one_st_dev_and_d_ino_is_st_ino() {
    let mut fx = Fx::new(2);
    copy_up_lower(fx.lower(1));
    build::dir(fx.lower(0), "a/b", 0o755);
    build::file(fx.lower(0), "a/b/top", b"top", 0o644);
    fx.mount();
    let check = |fx: &Fx, when: &str| {
        let t = differential::snapshot(&fx.mnt);
        let errs = differential::identity_errors(&t);
        assert!(errs.is_empty(), "{when}:\n{}", errs.join("\n"));
    };
    check(&fx, "fresh mount");
    fs::write(fx.m("plain"), "changed").unwrap();
    fs::write(fx.m("a/b/new"), "new").unwrap();
    fs::rename(fx.m("dir"), fx.m("a/dir")).unwrap();
    check(&fx, "after changes");
    fx.remount();
    check(&fx, "after remount");
}

/// Rule 14: st_ino is unchanged by copy-up (file, dir, symlink), by rename, and across a
/// remount.
#[test]
fn rule14_st_ino_stable_across_copy_up_rename_remount() {
    let mut fx = Fx::new(1);
    copy_up_lower(fx.lower(0));
    fx.mount();
    let ino = |fx: &Fx, p: &str| lstat(&fx.m(p)).ino();
    let before: Vec<(&str, u64)> = ["plain", "dir", "link", "x", "a/b/c/f", "a/b", "moveme"]
        .into_iter()
        .map(|p| (p, ino(&fx, p)))
        .collect();
    let tree_before = differential::snapshot(&fx.mnt);
    fs::OpenOptions::new()
        .append(true)
        .open(fx.m("plain"))
        .unwrap()
        .write_all(b"more")
        .unwrap();
    fs::set_permissions(fx.m("dir"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::lchown(fx.m("link"), Some(1000), Some(1000)).unwrap();
    xattr::set(&fx.m("x"), "user.y", b"2").unwrap();
    fs::write(fx.m("a/b/c/f"), "copied up with its ancestors").unwrap();
    fs::rename(fx.m("moveme"), fx.m("a/moved")).unwrap();
    let now = |fx: &Fx, p: &str| ino(fx, if p == "moveme" { "a/moved" } else { p });
    for (p, i) in &before {
        assert_eq!(now(&fx, p), *i, "{p}: st_ino changed by copy-up/rename");
    }
    let tree_after = differential::snapshot(&fx.mnt);
    fx.remount();
    for (p, i) in &before {
        assert_eq!(now(&fx, p), *i, "{p}: st_ino changed by the remount");
    }
    let errs = differential::diff_exact(&tree_after, &differential::snapshot(&fx.mnt));
    assert!(errs.is_empty(), "after remount:\n{}", errs.join("\n"));
    // Untouched entries kept their numbers too.
    for (p, n) in &tree_before {
        if let Some(a) = tree_after.get(p) {
            assert_eq!(a.ino, n.ino, "/{p}: st_ino changed");
        }
    }
}

/// Rule 14: with every layer a directory on one filesystem, a lower entry's st_ino is its
/// st_ino in its layer, as kernel overlayfs reports it (so git's index, made on the host,
/// still matches), and it stays so through copy-up and a remount.
#[test]
fn rule14_dir_layers_on_one_filesystem_keep_host_inode_numbers() {
    let mut fx = Fx::new(2);
    let (top, base) = (fx.lower(0).to_path_buf(), fx.lower(1).to_path_buf());
    build::dir(&base, "d", 0o755);
    build::file(&base, "d/base-only", b"base\n", 0o644);
    build::file(&base, "d/both", b"base version\n", 0o644);
    build::file(&base, "h1", b"linked\n", 0o644);
    build::link(&base, "h1", "d/h2");
    build::symlink(&base, "sym", "h1");
    build::dir(&top, "d", 0o755);
    build::file(&top, "d/both", b"top version\n", 0o644);
    build::file(&top, "d/top-only", b"top\n", 0o644);
    let host = [
        ("d/base-only", base.join("d/base-only")),
        ("d/both", top.join("d/both")),
        ("d/top-only", top.join("d/top-only")),
        ("h1", base.join("h1")),
        ("d/h2", base.join("h1")),
        ("sym", base.join("sym")),
    ];
    fx.mount();
    let check = |fx: &Fx, when: &str| {
        for (rel, host_path) in &host {
            assert_eq!(
                lstat(&fx.m(rel)).ino(),
                lstat(host_path).ino(),
                "{when}: st_ino of /{rel} is not the host's"
            );
        }
    };
    check(&fx, "fresh mount");
    fs::set_permissions(fx.m("d/both"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(fx.m("h1"), "changed through one name\n").unwrap();
    check(&fx, "after copy-up");
    assert_eq!(read(&fx.m("d/h2")), "changed through one name\n");
    fx.remount();
    check(&fx, "after remount");
    let errs = differential::identity_errors(&differential::snapshot(&fx.mnt));
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    // An upper-only entry gets a number no lower entry can have.
    fs::write(fx.m("d/new"), "new").unwrap();
    assert!(lstat(&fx.m("d/new")).ino() >= 1 << 63);
}

/// Rule 14: hard links of a lower file share st_ino and a coherent nlink, also after one of
/// them is copied up: a write through one name is read through the others, before and after
/// a remount.
#[test]
fn rule14_lower_hard_links_stay_one_inode() {
    let mut fx = Fx::new(1);
    let l = fx.lower(0).to_path_buf();
    build::file(&l, "h1", b"shared\n", 0o644);
    build::link(&l, "h1", "h2");
    build::dir(&l, "d", 0o755);
    build::link(&l, "h1", "d/h3");
    fx.mount();
    let names = ["h1", "h2", "d/h3"];
    let check = |fx: &Fx, want: &str, nlink: u64, when: &str| {
        let inos: Vec<u64> = names.iter().map(|n| lstat(&fx.m(n)).ino()).collect();
        assert!(
            inos.iter().all(|i| *i == inos[0]),
            "{when}: st_ino {inos:?}"
        );
        for n in names {
            assert_eq!(read(&fx.m(n)), want, "{when}: {n}");
            assert_eq!(lstat(&fx.m(n)).nlink(), nlink, "{when}: nlink of {n}");
        }
    };
    check(&fx, "shared\n", 3, "fresh");
    OpenOptions::new()
        .append(true)
        .open(fx.m("h2"))
        .unwrap()
        .write_all(b"written through h2\n")
        .unwrap();
    check(
        &fx,
        "shared\nwritten through h2\n",
        3,
        "after a write through h2",
    );
    fs::set_permissions(fx.m("d/h3"), fs::Permissions::from_mode(0o600)).unwrap();
    for n in names {
        assert_eq!(
            lstat(&fx.m(n)).mode() & 0o777,
            0o600,
            "{n}: chmod through d/h3"
        );
    }
    fx.remount();
    check(&fx, "shared\nwritten through h2\n", 3, "after remount");
}

/// Three names of one lower file (`h1`, `h2`, `d/h3`), mounted, all looked up (as `ls -lR`
/// does, readdirplus included).
fn hard_link_fixture() -> Fx {
    let mut fx = Fx::new(1);
    let l = fx.lower(0).to_path_buf();
    build::file(&l, "h1", b"shared\n", 0o644);
    build::link(&l, "h1", "h2");
    build::dir(&l, "d", 0o755);
    build::link(&l, "h1", "d/h3");
    fx.mount();
    look_up_all(&fx);
    fx
}

fn look_up_all(fx: &Fx) {
    for n in ["h1", "h2", "d/h3"] {
        let _ = fs::symlink_metadata(fx.m(n));
    }
    run(Command::new("ls").arg("-lR").arg(&fx.mnt));
}

/// Rule 14 (hard links): renaming one name of a lower hard-link group works after the other
/// names were looked up, and the moved name still shares the inode.
#[test]
fn rule14_lower_hard_link_rename_after_lookups() {
    let mut fx = hard_link_fixture();
    fs::rename(fx.m("h1"), fx.m("moved")).expect("renaming a hard link after lookups");
    assert_eq!(read(&fx.m("moved")), "shared\n");
    assert_eq!(lstat(&fx.m("moved")).ino(), lstat(&fx.m("h2")).ino());
    let t = nix::fcntl::renameat2(
        AT_FDCWD,
        &fx.m("d/h3"),
        AT_FDCWD,
        &fx.m("moved"),
        RenameFlags::RENAME_EXCHANGE,
    );
    t.expect("exchanging two names of one hard-link group");
    fs::write(fx.m("h2"), "via h2\n").unwrap();
    fx.remount();
    for n in ["moved", "h2", "d/h3"] {
        assert_eq!(read(&fx.m(n)), "via h2\n", "{n} after remount");
    }
}

/// Rule 14 (hard links): a failed create (EEXIST) on one name of a lower hard-link group must
/// not detach that name: a later copy-up through it is seen through the others, also after a
/// remount.
#[test]
fn rule14_lower_hard_link_failed_create_keeps_the_name() {
    let mut fx = hard_link_fixture();
    assert_eq!(errno(fs::create_dir(fx.m("h1"))), EEXIST);
    assert_eq!(errno(std::os::unix::fs::symlink("x", fx.m("h2"))), EEXIST);
    xattr::set(&fx.m("h1"), "user.k", b"v").unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(fx.m("h2"))
        .unwrap()
        .write_all(b"appended via h2\n")
        .unwrap();
    let check = |fx: &Fx, when: &str| {
        for n in ["h1", "h2", "d/h3"] {
            assert_eq!(read(&fx.m(n)), "shared\nappended via h2\n", "{when}: {n}");
            assert_eq!(
                xattr::get(&fx.m(n), "user.k").unwrap().as_deref(),
                Some(&b"v"[..]),
                "{when}: {n}"
            );
            assert_eq!(lstat(&fx.m(n)).nlink(), 3, "{when}: nlink of {n}");
        }
    };
    check(&fx, "mounted");
    let mut upper: Vec<String> = fx.upper_entries().into_iter().map(|(p, _)| p).collect();
    upper.sort();
    assert_eq!(
        upper,
        ["d", "d/h3", "h1", "h2"],
        "the upper holds all three names"
    );
    fx.remount();
    check(&fx, "after remount");
}

/// Rule 14 (hard links): nlink stays coherent when a name of a lower hard-link group is
/// unlinked (before and after a copy-up) or added.
#[test]
fn rule14_lower_hard_link_nlink_is_coherent() {
    let mut fx = hard_link_fixture();
    fs::remove_file(fx.m("d/h3")).unwrap();
    assert_eq!(
        lstat(&fx.m("h1")).nlink(),
        2,
        "after unlinking one of three lower names"
    );
    fs::hard_link(fx.m("h1"), fx.m("h4")).unwrap();
    assert_eq!(lstat(&fx.m("h2")).nlink(), 3, "after a new link");
    fs::remove_file(fx.m("h1")).unwrap();
    assert_eq!(
        lstat(&fx.m("h4")).nlink(),
        2,
        "after unlinking a copied-up name"
    );
    fx.remount();
    for n in ["h2", "h4"] {
        assert_eq!(lstat(&fx.m(n)).nlink(), 2, "{n}: nlink after remount");
    }
}

// ---------------------------------------------------------------------------------------------
// Upper, xattrs and I/O guarantees (issue 2, "Semantics").

/// statfs reports the upper's filesystem.
#[test]
fn statfs_reports_the_upper() {
    let mut fx = Fx::new(1);
    build::file(fx.lower(0), "f", b"f", 0o644);
    fx.mount();
    let m = nix::sys::statvfs::statvfs(&fx.mnt).unwrap();
    let u = nix::sys::statvfs::statvfs(&fx.upper).unwrap();
    assert_eq!(m.block_size(), u.block_size());
    assert_eq!(m.blocks(), u.blocks());
    assert_eq!(m.files(), u.files());
    let (mf, uf) = (m.blocks_free() as i64, u.blocks_free() as i64);
    assert!(
        (mf - uf).abs() < 1 << 16,
        "free blocks: mount {mf}, upper {uf}"
    );
}

/// xattrs in the user., trusted. and security. namespaces work through the mount; the
/// overlay's private ones (trusted.overlay.*, trusted.rfs.*) are never listed, read or set.
#[test]
fn xattrs_work_and_private_ones_are_hidden() {
    let mut fx = Fx::new(1);
    let l = fx.lower(0).to_path_buf();
    build::dir(&l, "d/sub", 0o755);
    build::file(&l, "d/f", b"f", 0o644);
    build::file(&l, "f", b"f", 0o644);
    fx.mount();
    // Make the upper carry private xattrs: a copy-up, an opaque dir, a renamed dir.
    fs::write(fx.m("d/f"), "changed").unwrap();
    fs::remove_dir(fx.m("d/sub")).unwrap();
    fs::create_dir(fx.m("d/sub")).unwrap();
    fs::rename(fx.m("d"), fx.m("e")).unwrap();
    for ns in ["user.t", "trusted.t", "security.t"] {
        xattr::set(&fx.m("f"), ns, b"value").unwrap_or_else(|e| panic!("setxattr {ns}: {e}"));
        assert_eq!(
            xattr::get(&fx.m("f"), ns).unwrap().unwrap(),
            b"value",
            "{ns}"
        );
    }
    let listed = xattr::list(&fx.m("f")).unwrap();
    for ns in ["user.t", "trusted.t", "security.t"] {
        assert!(
            listed.iter().any(|n| n == ns),
            "{ns} not listed: {listed:?}"
        );
    }
    xattr::remove(&fx.m("f"), "user.t").unwrap();
    assert_eq!(xattr::get(&fx.m("f"), "user.t").unwrap(), None);
    assert_eq!(errno(xattr::remove(&fx.m("f"), "user.t")), ENODATA);
    for (p, _) in differential::list(&fx.mnt) {
        let names = xattr::list(&fx.m(&p)).unwrap();
        assert!(
            !names.iter().any(|n| n.starts_with("trusted.overlay.")
                || n.starts_with("trusted.rfs.")
                || n.starts_with("user.overlay.")
                || n.starts_with("user.rfs.")),
            "/{p} lists private xattrs: {names:?}"
        );
    }
    for (p, name) in [
        ("e/sub", "trusted.overlay.opaque"),
        ("e", "trusted.overlay.redirect"),
        ("e/f", "trusted.rfs.origin"),
    ] {
        assert_eq!(
            xattr::get(&fx.m(p), name).unwrap(),
            None,
            "{p}: {name} is readable"
        );
    }
    assert!(
        xattr::set(&fx.m("e/sub"), "trusted.overlay.opaque", b"y").is_err()
            || xattr::get(&fx.m("e/sub"), "trusted.overlay.opaque")
                .unwrap()
                .is_none(),
        "a private xattr could be set through the mount"
    );
    assert!(xattr::set(&fx.m("f"), "trusted.overlay.redirect", b"/x").is_err());
}

/// An aligned buffer for O_DIRECT.
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let v = vec![0u8; len + 4096];
    let off = (4096 - (v.as_ptr() as usize % 4096)) % 4096;
    (v, off)
}

/// O_DIRECT opens work, for reading a lower file and writing an upper one; fsync works.
#[test]
fn o_direct_and_fsync_work() {
    let mut fx = Fx::new(1);
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 199) as u8).collect();
    build::file(fx.lower(0), "f", &data, 0o644);
    fx.mount();
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(fx.m("f"))
        .expect("O_DIRECT open of a lower file");
    let (mut buf, off) = aligned(8192);
    f.read_exact_at(&mut buf[off..off + 8192], 0).unwrap();
    assert_eq!(&buf[off..off + 8192], &data[..]);
    let g = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(fx.m("g"))
        .expect("O_DIRECT open for writing");
    let (mut wbuf, woff) = aligned(4096);
    wbuf[woff..woff + 4096].fill(b'd');
    g.write_all_at(&wbuf[woff..woff + 4096], 0).unwrap();
    g.sync_all().unwrap();
    drop(g);
    assert_eq!(fs::read(fx.m("g")).unwrap(), vec![b'd'; 4096]);
    assert_eq!(fs::read(fx.u("g")).unwrap(), vec![b'd'; 4096]);
    fs::File::open(&fx.mnt)
        .unwrap()
        .sync_all()
        .expect("fsync of a directory");
}

/// flock and POSIX (open-file-description) locks work: a conflicting lock is refused, and
/// granted once released.
#[test]
fn flock_and_posix_locks_work() {
    let mut fx = Fx::new(1);
    build::file(fx.lower(0), "f", b"lock me", 0o644);
    fx.mount();
    use nix::fcntl::{Flock, FlockArg};
    let a = fs::File::open(fx.m("f")).unwrap();
    let b = fs::File::open(fx.m("f")).unwrap();
    let la = Flock::lock(a, FlockArg::LockExclusiveNonblock).expect("flock");
    let b = match Flock::lock(b, FlockArg::LockExclusiveNonblock) {
        Ok(_) => panic!("a second exclusive flock was granted"),
        Err((b, e)) => {
            assert_eq!(e as i32, EAGAIN);
            b
        }
    };
    drop(la.unlock().unwrap());
    let lb = Flock::lock(b, FlockArg::LockExclusiveNonblock).expect("flock after release");
    drop(lb);
    // The `flock` tool in another process sees the lock.
    let held = fs::File::open(fx.m("f")).unwrap();
    let held = Flock::lock(held, FlockArg::LockExclusiveNonblock).unwrap();
    let st = Command::new("flock")
        .args(["-n", "-x"])
        .arg(fx.m("f"))
        .arg("true")
        .status()
        .unwrap();
    assert!(!st.success(), "flock(1) got a lock another process holds");
    drop(held);

    // Open-file-description POSIX locks.
    let c = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.m("f"))
        .unwrap();
    let d = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.m("f"))
        .unwrap();
    let lock = |ty: i32| libc::flock {
        l_type: ty as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 4,
        l_pid: 0,
    };
    let wr = lock(libc::F_WRLCK);
    nix::fcntl::fcntl(&c, nix::fcntl::FcntlArg::F_OFD_SETLK(&wr)).expect("OFD write lock");
    let e = nix::fcntl::fcntl(&d, nix::fcntl::FcntlArg::F_OFD_SETLK(&wr)).unwrap_err();
    assert_eq!(e as i32, EAGAIN, "a conflicting OFD lock");
    let mut probe = lock(libc::F_WRLCK);
    nix::fcntl::fcntl(&d, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut probe)).unwrap();
    assert_eq!(
        probe.l_type,
        libc::F_WRLCK as i16,
        "F_OFD_GETLK reports the holder"
    );
    let un = lock(libc::F_UNLCK);
    nix::fcntl::fcntl(&c, nix::fcntl::FcntlArg::F_OFD_SETLK(&un)).unwrap();
    nix::fcntl::fcntl(&d, nix::fcntl::FcntlArg::F_OFD_SETLK(&wr)).expect("lock after release");
    // A classic POSIX lock held by this process blocks `flock`-free readers only by
    // convention; check that F_SETLK on a non-conflicting range is granted.
    let other = libc::flock {
        l_start: 100,
        ..lock(libc::F_WRLCK)
    };
    nix::fcntl::fcntl(&c, nix::fcntl::FcntlArg::F_SETLK(&other)).expect("F_SETLK");
    let _ = c.as_raw_fd();
}

/// Shared writable mmap: writes through the mapping are seen by read(), copied up, and kept.
#[test]
fn shared_mmap_writes_are_visible_to_read() {
    let mut fx = Fx::new(1);
    build::file(fx.lower(0), "f", &[b'.'; 8192], 0o644);
    fx.mount();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.m("f"))
        .unwrap();
    mm::write_shared(&f, 4096, b"through the map");
    drop(f);
    let data = fs::read(fx.m("f")).unwrap();
    assert_eq!(&data[4096..4096 + 15], b"through the map");
    assert_eq!(
        &fs::read(fx.u("f")).unwrap()[4096..4096 + 15],
        b"through the map"
    );
    fx.remount();
    assert_eq!(
        &fs::read(fx.m("f")).unwrap()[4096..4096 + 15],
        b"through the map"
    );
}

/// `mmap` (libc is a dependency of the package; nix's `mman` feature is not enabled).
#[allow(unsafe_code)]
mod mm {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    /// Maps `f` shared and writable, writes `data` at `off`, syncs and unmaps.
    pub(super) fn write_shared(f: &File, off: usize, data: &[u8]) {
        let len = f.metadata().unwrap().len() as usize;
        assert!(off + data.len() <= len);
        // SAFETY: a fresh mapping of `len` bytes of an open file; nothing else aliases it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `p` maps `len` writable bytes and `off + data.len() <= len`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), p.cast::<u8>().add(off), data.len());
        }
        // SAFETY: `p`/`len` are the mapping made above.
        let r = unsafe { libc::msync(p, len, libc::MS_SYNC) };
        assert_eq!(r, 0, "msync: {}", std::io::Error::last_os_error());
        // SAFETY: as above; the mapping is not used afterwards.
        unsafe { libc::munmap(p, len) };
    }

    /// Maps `f` read-only and checks its first bytes are `want`.
    pub(super) fn read_only_map_reads(f: &File, want: &[u8]) {
        let len = f.metadata().unwrap().len() as usize;
        assert!(want.len() <= len);
        // SAFETY: a fresh read-only mapping of `len` bytes of an open file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `p` maps `len >= want.len()` readable bytes.
        let got = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), want.len()) }.to_vec();
        // SAFETY: `p`/`len` are the mapping made above; `got` is a copy.
        unsafe { libc::munmap(p, len) };
        assert_eq!(got, want);
    }
}
