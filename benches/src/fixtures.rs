//! Fixtures: built once under `SCRATCH/fixtures/{quick,full}`, reused by later runs.
//!
//! Each fixture lives in its own directory and is complete when its `.done` marker exists
//! (a JSON record of what was built); a directory without one is removed and rebuilt.
//!
//! - `tree`: a real tree (`/usr/include`, then `/usr/share`, sorted, cut at N files) split
//!   into 3 layers: `l0` has everything, `l1` and `l2` override some files, white out others
//!   (char 0/0), add files, `l1` whites out a whole directory and `l2` makes one directory
//!   opaque (`trusted.overlay.opaque=y`). `host` is the merged tree copied out of a kernel
//!   overlay mount; `rm-pristine` is a copy of the ~5k-entry directory `rm -rf` removes.
//! - `big`: a 1 GiB file of pseudo-random bytes in the bottom layer of 2.
//! - `tarball`: a tar of 10k small files under `xt/`.
//! - `git`: a real git checkout of ~8k files (`/usr/include` committed) in a lower layer.
//! - `cproj`: a small C project whose system headers (copies of `/usr/include` and gcc's own
//!   include dir) live in the mount; it is compiled with `-nostdinc`.
//! - `wide`: a 2-layer tree of ~100k empty files, walked for the daemons' RSS.
//! - `images`: a flat rootfs tar of about 1 GiB (the merged `tree` plus padding), next to
//!   the Debian `docker save` archive from `make-test-images.sh`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::env::{self, Rng};
use crate::systems::Stack;

/// Bumped whenever the fixtures' layout changes, so old fixtures are rebuilt; a fixture's
/// own version is added (see [`once`]).
const VERSION: u32 = 1;

/// How big the fixtures are.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Sizes {
    /// Files (and symlinks) in the 3-layer tree.
    pub(crate) tree_files: usize,
    /// Entries of the directory `rm -rf` removes.
    pub(crate) rm_entries: usize,
    /// Size of the big file.
    pub(crate) big_bytes: u64,
    /// Files in the tarball.
    pub(crate) tar_files: usize,
    /// Files in the git checkout.
    pub(crate) git_files: usize,
    /// `.c` files of the C project.
    pub(crate) c_files: usize,
    /// Directories × files of the wide tree.
    pub(crate) wide: (usize, usize),
    /// Size of the rootfs tar image.
    pub(crate) image_bytes: u64,
}

impl Sizes {
    /// The sizes the issue asks for.
    pub(crate) const FULL: Sizes = Sizes {
        tree_files: 35_000,
        rm_entries: 5_000,
        big_bytes: 1 << 30,
        tar_files: 10_000,
        git_files: 8_000,
        c_files: 8,
        wide: (100, 1_000),
        image_bytes: 1 << 30,
    };
    /// Small fixtures for developing the harness.
    pub(crate) const QUICK: Sizes = Sizes {
        tree_files: 3_000,
        rm_entries: 500,
        big_bytes: 64 << 20,
        tar_files: 1_000,
        git_files: 800,
        c_files: 3,
        wide: (10, 1_000),
        image_bytes: 128 << 20,
    };
}

/// Everything the workloads use.
#[derive(Debug)]
pub(crate) struct Fixtures {
    /// The 3-layer tree.
    pub(crate) tree: Stack,
    /// The directory `rm -rf` removes, relative to the tree root.
    pub(crate) rm_dir: PathBuf,
    /// A pristine copy of it, to restore the host tree.
    pub(crate) rm_pristine: PathBuf,
    /// The 2-layer stack with the big file.
    pub(crate) big: Stack,
    /// The big file's name at the stack root.
    pub(crate) big_name: &'static str,
    /// The big file's size.
    pub(crate) big_bytes: u64,
    /// The tar of small files (one top-level dir, `xt`).
    pub(crate) tarball: PathBuf,
    /// The stack whose `repo` is a git checkout.
    pub(crate) git: Stack,
    /// The stack whose `proj` is the C project.
    pub(crate) cproj: Stack,
    /// The wide tree.
    pub(crate) wide: Stack,
    /// The Debian `docker save` archive, when `make-test-images.sh` has run.
    pub(crate) debian_image: Option<PathBuf>,
    /// The rootfs tar of about 1 GiB.
    pub(crate) big_image: PathBuf,
    /// What was built, for the JSON report.
    pub(crate) summary: BTreeMap<String, serde_json::Value>,
}

/// Where the Debian archive is expected.
const DEBIAN_IMAGE: &str = "/tmp/rfs-images/docker/debian-docker-save.tar";

/// Builds (or reuses) all fixtures under `dir`.
pub(crate) fn prepare(dir: &Path, sizes: Sizes) -> Result<Fixtures> {
    fs::create_dir_all(dir)?;
    let mut summary = BTreeMap::new();

    let t = dir.join("tree");
    let tree_rec: TreeRecord = once(&t, &mut summary, "tree", || build_tree(&t, sizes))?;
    let tree = Stack {
        lowers: vec![t.join("l2"), t.join("l1"), t.join("l0")],
        host: t.join("host"),
    };

    let b = dir.join("big");
    once(&b, &mut summary, "big", || build_big(&b, sizes.big_bytes))?;
    let big = Stack {
        lowers: vec![b.join("l1"), b.join("l0")],
        host: b.join("host"),
    };

    let tb = dir.join("tarball");
    once(&tb, &mut summary, "tarball", || {
        build_tarball(&tb, sizes.tar_files)
    })?;

    let g = dir.join("git");
    once(&g, &mut summary, "git", || build_git(&g, sizes.git_files))?;
    let git = Stack {
        lowers: vec![g.join("l0")],
        host: g.join("host"),
    };

    let c = dir.join("cproj");
    once(&c, &mut summary, "cproj@3", || {
        build_cproj(&c, sizes.c_files)
    })?;
    let cproj = Stack {
        lowers: vec![c.join("l0")],
        host: c.join("host"),
    };

    let w = dir.join("wide");
    once(&w, &mut summary, "wide", || build_wide(&w, sizes.wide))?;
    let wide = Stack {
        lowers: vec![w.join("l1"), w.join("l0")],
        host: w.join("l0"),
    };

    let im = dir.join("images");
    once(&im, &mut summary, "images", || {
        build_image(&im, &tree.host, sizes.image_bytes)
    })?;

    let debian_image = Some(PathBuf::from(DEBIAN_IMAGE)).filter(|p| p.is_file());
    if debian_image.is_none() {
        eprintln!(
            "warning: {DEBIAN_IMAGE} is missing (run ../shared/scripts/make-test-images.sh); \
             skipping the Debian image workloads"
        );
    }
    Ok(Fixtures {
        tree,
        rm_dir: PathBuf::from(&tree_rec.rm_dir),
        rm_pristine: t.join("rm-pristine").join(
            Path::new(&tree_rec.rm_dir)
                .file_name()
                .context("rm dir name")?,
        ),
        big,
        big_name: "big.bin",
        big_bytes: sizes.big_bytes,
        tarball: tb.join("small.tar"),
        git,
        cproj,
        wide,
        debian_image,
        big_image: im.join("rootfs.tar"),
        summary,
    })
}

/// Runs `build` unless `dir/.done` exists with the same version, and records the result in
/// `dir/.done`. `name` may end in `@N`, the fixture's own version.
fn once<T, F>(
    dir: &Path,
    summary: &mut BTreeMap<String, serde_json::Value>,
    name: &str,
    build: F,
) -> Result<T>
where
    T: Serialize + for<'de> Deserialize<'de>,
    F: FnOnce() -> Result<T>,
{
    let (name, own) = name.split_once('@').unwrap_or((name, "0"));
    let version = format!("{VERSION}.{own}");
    let marker = dir.join(".done");
    if let Ok(text) = fs::read_to_string(&marker) {
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let same = match &v["version"] {
            serde_json::Value::String(s) => *s == version,
            serde_json::Value::Number(n) => own == "0" && n.as_u64() == Some(u64::from(VERSION)),
            _ => false,
        };
        if same {
            let rec: T = serde_json::from_value(v["record"].clone())?;
            summary.insert(name.into(), v["record"].clone());
            return Ok(rec);
        }
    }
    env::check_interrupted()?;
    eprintln!("building fixture {name} in {}", dir.display());
    env::remove_tree(dir)?;
    fs::create_dir_all(dir)?;
    let t = std::time::Instant::now();
    let rec = build().with_context(|| format!("building fixture {name}"))?;
    let v = serde_json::json!({ "version": version, "record": rec });
    nix::unistd::sync();
    fs::write(&marker, serde_json::to_string_pretty(&v)?)?;
    eprintln!("fixture {name} built in {:.1} s", t.elapsed().as_secs_f64());
    summary.insert(name.into(), v["record"].clone());
    Ok(rec)
}

/// What kind of entry a walk found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// Anything else.
    Other,
}

/// All entries under `root` (not `root` itself), depth-first, children sorted by name,
/// paths relative to `root`. Stops after `max_files` non-directories.
pub(crate) fn walk(root: &Path, max_files: usize) -> Result<Vec<(PathBuf, Kind)>> {
    let mut out = Vec::new();
    let mut files = 0;
    walk_into(root, Path::new(""), &mut out, &mut files, max_files)?;
    Ok(out)
}

fn walk_into(
    root: &Path,
    rel: &Path,
    out: &mut Vec<(PathBuf, Kind)>,
    files: &mut usize,
    max_files: usize,
) -> Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for e in entries {
        if *files >= max_files {
            return Ok(());
        }
        let ft = e.file_type()?;
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        let p = rel.join(e.file_name());
        out.push((p.clone(), kind));
        if kind == Kind::Dir {
            walk_into(root, &p, out, files, max_files)?;
        } else {
            *files += 1;
        }
    }
    Ok(())
}

/// Copies one entry (file, symlink or directory without its children), keeping the mode.
fn copy_entry(src: &Path, dst: &Path, kind: Kind) -> Result<()> {
    match kind {
        Kind::Dir => {
            fs::create_dir_all(dst)?;
            let mode = fs::metadata(src)?.permissions().mode();
            fs::set_permissions(dst, fs::Permissions::from_mode(mode & 0o7777 | 0o700))?;
        }
        Kind::File => {
            fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
        }
        Kind::Symlink => {
            std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
        }
        Kind::Other => {}
    }
    Ok(())
}

/// `cp -a SRC/. DST` (DST is created).
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst)?;
    let mut from = src.as_os_str().to_owned();
    from.push("/.");
    env::run(env::cmd("cp", &[OsStr::new("-a"), &from, dst.as_os_str()]))
}

/// A read-only kernel overlay mount of some lower dirs, unmounted on drop.
struct KernelMount(PathBuf);

impl KernelMount {
    fn new(lowers: &[PathBuf], at: &Path) -> Result<KernelMount> {
        fs::create_dir_all(at)?;
        crate::systems::mount_kernel_read_only(lowers, at)?;
        Ok(KernelMount(at.to_path_buf()))
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        if let Err(e) = env::umount_kernel(&self.0) {
            eprintln!("warning: unmounting {}: {e:#}", self.0.display());
        }
    }
}

/// Makes a kernel overlayfs whiteout (char device 0/0) at `path`.
fn whiteout(path: &Path) -> Result<()> {
    use nix::sys::stat::{Mode, SFlag, mknod};
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    mknod(path, SFlag::S_IFCHR, Mode::empty(), 0)
        .with_context(|| format!("mknod {}", path.display()))?;
    Ok(())
}

/// Writes a copy of `src` with a marker line appended to `dst`.
fn override_file(src: &Path, dst: &Path, marker: &str) -> Result<()> {
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p)?;
    }
    let mut data = fs::read(src)?;
    data.extend_from_slice(marker.as_bytes());
    fs::write(dst, data)?;
    Ok(())
}

/// Whether `a` is `b` or lies below it, or the reverse.
fn related(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// What the tree fixture recorded.
#[derive(Debug, Serialize, Deserialize)]
struct TreeRecord {
    /// Entries of the bottom layer.
    l0_entries: usize,
    /// Entries of the merged tree.
    merged_entries: usize,
    /// The directory `rm -rf` removes, and its entry count.
    rm_dir: String,
    rm_entries: usize,
    /// The directory `l1` whites out and the one `l2` makes opaque.
    whiteout_dir: String,
    opaque_dir: String,
    l1_overrides: usize,
    l1_whiteouts: usize,
    l2_overrides: usize,
    l2_whiteouts: usize,
}

fn build_tree(dir: &Path, sizes: Sizes) -> Result<TreeRecord> {
    let l0 = dir.join("l0");
    let l1 = dir.join("l1");
    let l2 = dir.join("l2");
    for d in [&l0, &l1, &l2] {
        fs::create_dir_all(d)?;
    }
    // The bottom layer: /usr/include, then /usr/share, cut at tree_files.
    let mut entries = Vec::new();
    let mut left = sizes.tree_files;
    for (name, src) in [("include", "/usr/include"), ("share", "/usr/share")] {
        if left == 0 {
            break;
        }
        let part = walk(Path::new(src), left)?;
        left -= part.iter().filter(|(_, k)| *k != Kind::Dir).count();
        copy_entry(Path::new(src), &l0.join(name), Kind::Dir)?;
        entries.push((PathBuf::from(name), Kind::Dir));
        for (rel, kind) in part {
            env::check_interrupted()?;
            if kind == Kind::Other {
                continue;
            }
            copy_entry(&Path::new(src).join(&rel), &l0.join(name).join(&rel), kind)?;
            entries.push((Path::new(name).join(rel), kind));
        }
    }
    // Entries below each directory.
    let mut below: BTreeMap<&Path, usize> = BTreeMap::new();
    for (p, _) in &entries {
        for a in p.ancestors().skip(1) {
            if a.as_os_str().is_empty() {
                break;
            }
            *below.entry(a).or_default() += 1;
        }
    }
    let dirs: Vec<&Path> = entries
        .iter()
        .filter(|(_, k)| *k == Kind::Dir)
        .map(|(p, _)| p.as_path())
        .filter(|p| p.components().count() >= 2)
        .collect();
    let count = |p: &Path| below.get(p).copied().unwrap_or(0);
    let rm_dir = *dirs
        .iter()
        .min_by_key(|p| count(p).abs_diff(sizes.rm_entries))
        .context("no directory to remove")?;
    let pick = |lo: usize, hi: usize, avoid: &[&Path]| {
        dirs.iter()
            .copied()
            .find(|p| (lo..=hi).contains(&count(p)) && avoid.iter().all(|a| !related(p, a)))
            .with_context(|| format!("no directory with {lo}..={hi} entries"))
    };
    let opaque_dir = pick(30, 400, &[rm_dir])?;
    let whiteout_dir = pick(10, 200, &[rm_dir, opaque_dir])?;

    let mut rec = TreeRecord {
        l0_entries: entries.len(),
        merged_entries: 0,
        rm_dir: rm_dir.to_string_lossy().into_owned(),
        rm_entries: count(rm_dir),
        whiteout_dir: whiteout_dir.to_string_lossy().into_owned(),
        opaque_dir: opaque_dir.to_string_lossy().into_owned(),
        l1_overrides: 0,
        l1_whiteouts: 0,
        l2_overrides: 0,
        l2_whiteouts: 0,
    };
    // The upper layers.
    let mut nfile = 0usize;
    let mut ndir = 0usize;
    for (rel, kind) in &entries {
        env::check_interrupted()?;
        if rel.starts_with(whiteout_dir) {
            continue;
        }
        let in_opaque = rel.starts_with(opaque_dir);
        if *kind == Kind::Dir {
            ndir += 1;
            if ndir % 25 == 0 {
                fs::create_dir_all(l1.join(rel))?;
                fs::write(l1.join(rel).join("added-by-l1.txt"), b"l1\n")?;
            }
            if ndir % 40 == 0 && !in_opaque {
                fs::create_dir_all(l2.join(rel))?;
                fs::write(l2.join(rel).join("added-by-l2.txt"), b"l2\n")?;
            }
            continue;
        }
        nfile += 1;
        let src = l0.join(rel);
        if nfile % 10 == 3 && *kind == Kind::File {
            override_file(&src, &l1.join(rel), "\n/* l1 */\n")?;
            rec.l1_overrides += 1;
        } else if nfile % 37 == 5 {
            whiteout(&l1.join(rel))?;
            rec.l1_whiteouts += 1;
        }
        if in_opaque {
            continue;
        }
        if nfile % 13 == 7 && *kind == Kind::File {
            override_file(&src, &l2.join(rel), "\n/* l2 */\n")?;
            rec.l2_overrides += 1;
        } else if nfile % 53 == 11 {
            let dst = l2.join(rel);
            if dst.symlink_metadata().is_err() {
                whiteout(&dst)?;
                rec.l2_whiteouts += 1;
            }
        }
    }
    whiteout(&l1.join(whiteout_dir))?;
    let od = l2.join(opaque_dir);
    fs::create_dir_all(&od)?;
    env::run(env::cmd(
        "setfattr",
        &[
            OsStr::new("-n"),
            OsStr::new("trusted.overlay.opaque"),
            OsStr::new("-v"),
            OsStr::new("y"),
            od.as_os_str(),
        ],
    ))?;
    for i in 0..3 {
        fs::write(od.join(format!("opaque-new-{i}.txt")), format!("{i}\n"))?;
    }
    // The merged tree, as the kernel sees it.
    let host = dir.join("host");
    {
        let m = KernelMount::new(&[l2, l1, l0], &dir.join(".mnt"))?;
        copy_tree(&m.0, &host)?;
    }
    fs::remove_dir(dir.join(".mnt"))?;
    rec.merged_entries = walk(&host, usize::MAX)?.len();
    let pristine = dir.join("rm-pristine");
    fs::create_dir_all(&pristine)?;
    env::run(env::cmd(
        "cp",
        &[
            OsStr::new("-a"),
            host.join(rm_dir).as_os_str(),
            pristine.as_os_str(),
        ],
    ))?;
    Ok(rec)
}

/// Writes `len` pseudo-random bytes to `path`.
fn random_file(path: &Path, len: u64, seed: u64) -> Result<()> {
    let mut f = File::create(path)?;
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        env::check_interrupted()?;
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct BigRecord {
    bytes: u64,
}

fn build_big(dir: &Path, bytes: u64) -> Result<BigRecord> {
    let (l0, l1, host) = (dir.join("l0"), dir.join("l1"), dir.join("host"));
    for d in [&l0, &l1, &host] {
        fs::create_dir_all(d)?;
    }
    random_file(&l0.join("big.bin"), bytes, 1)?;
    fs::write(l1.join("hello.txt"), b"hello\n")?;
    fs::write(host.join("hello.txt"), b"hello\n")?;
    fs::copy(l0.join("big.bin"), host.join("big.bin"))?;
    Ok(BigRecord { bytes })
}

#[derive(Debug, Serialize, Deserialize)]
struct TarRecord {
    files: usize,
    bytes: u64,
}

fn build_tarball(dir: &Path, files: usize) -> Result<TarRecord> {
    let src = dir.join("src");
    let mut rng = Rng::new(2);
    let mut bytes = 0u64;
    for i in 0..files {
        let d = src.join("xt").join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&d)?;
        }
        let len = 100 + (rng.next_u64() % 4000) as usize;
        let text: Vec<u8> = (0..len)
            .map(|j| {
                if j % 64 == 63 {
                    b'\n'
                } else {
                    b'a' + (rng.next_u64() % 26) as u8
                }
            })
            .collect();
        fs::write(d.join(format!("f{i:05}.txt")), &text)?;
        bytes += len as u64;
    }
    env::run(env::cmd(
        "tar",
        &[
            OsStr::new("-cf"),
            dir.join("small.tar").as_os_str(),
            OsStr::new("-C"),
            src.as_os_str(),
            OsStr::new("xt"),
        ],
    ))?;
    env::remove_tree(&src)?;
    Ok(TarRecord { files, bytes })
}

#[derive(Debug, Serialize, Deserialize)]
struct GitRecord {
    files: usize,
}

/// `git` with a fixed identity and no user or system config.
fn git(repo: &Path) -> std::process::Command {
    let mut c = env::cmd(
        "git",
        &[
            OsStr::new("-C"),
            repo.as_os_str(),
            OsStr::new("-c"),
            OsStr::new("user.name=rfs-bench"),
            OsStr::new("-c"),
            OsStr::new("user.email=rfs-bench@example.invalid"),
        ],
    );
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    c
}

fn build_git(dir: &Path, files: usize) -> Result<GitRecord> {
    let repo = dir.join("l0").join("repo");
    fs::create_dir_all(&repo)?;
    let src = Path::new("/usr/include");
    let entries = walk(src, files)?;
    for (rel, kind) in &entries {
        env::check_interrupted()?;
        copy_entry(&src.join(rel), &repo.join(rel), *kind)?;
    }
    env::run(git(&repo).args(["init", "-q"]))?;
    env::run(git(&repo).args(["config", "gc.auto", "0"]))?;
    env::run(git(&repo).args(["add", "-A"]))?;
    env::run(git(&repo).args(["commit", "-q", "-m", "fixture"]))?;
    // A clean status on the lower itself, so its index matches its own stat data.
    env::run(git(&repo).arg("status"))?;
    let host = dir.join("host").join("repo");
    copy_tree(&repo, &host)?;
    // The copy has new inode numbers: refresh its index once.
    env::run(git(&host).arg("status"))?;
    Ok(GitRecord {
        files: entries.iter().filter(|(_, k)| *k != Kind::Dir).count(),
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct CprojRecord {
    c_files: usize,
    headers_per_file: usize,
}

/// Headers each `.c` file includes, when they exist under `/usr/include`.
const HEADERS: &[&str] = &[
    "assert.h",
    "ctype.h",
    "errno.h",
    "fcntl.h",
    "float.h",
    "inttypes.h",
    "limits.h",
    "locale.h",
    "math.h",
    "setjmp.h",
    "signal.h",
    "stdarg.h",
    "stdbool.h",
    "stddef.h",
    "stdint.h",
    "stdio.h",
    "stdlib.h",
    "string.h",
    "time.h",
    "wchar.h",
    "wctype.h",
    "complex.h",
    "dirent.h",
    "dlfcn.h",
    "elf.h",
    "fnmatch.h",
    "glob.h",
    "grp.h",
    "iconv.h",
    "langinfo.h",
    "link.h",
    "netdb.h",
    "poll.h",
    "pthread.h",
    "pwd.h",
    "regex.h",
    "sched.h",
    "search.h",
    "semaphore.h",
    "spawn.h",
    "syslog.h",
    "termios.h",
    "unistd.h",
    "arpa/inet.h",
    "net/if.h",
    "netinet/in.h",
    "netinet/tcp.h",
    "sys/epoll.h",
    "sys/inotify.h",
    "sys/ioctl.h",
    "sys/mman.h",
    "sys/resource.h",
    "sys/socket.h",
    "sys/stat.h",
    "sys/time.h",
    "sys/types.h",
    "sys/uio.h",
    "sys/un.h",
    "sys/wait.h",
    "sys/xattr.h",
    "linux/fs.h",
    "linux/perf_event.h",
    "linux/bpf.h",
    "zlib.h",
    "expat.h",
    "curses.h",
    "lzma.h",
    "bzlib.h",
    "gcrypt.h",
    "gnutls/gnutls.h",
    "libxml/parser.h",
    "libxml/tree.h",
    "libxml/xpath.h",
];

const MAKEFILE: &str = "\
SYS := ../sys
CFLAGS := -O2 -nostdinc -isystem $(SYS)/gcc/include -isystem $(SYS)/usr/include/MULTIARCH \\
  -isystem $(SYS)/usr/include -isystem $(SYS)/usr/include/libxml2
SRCS := $(sort $(wildcard src/*.c))
OBJS := $(patsubst src/%.c,build/%.o,$(SRCS))

build/app: $(OBJS)
\t$(CC) -o $@ $(OBJS) -lm

build/%.o: src/%.c | build
\t$(CC) $(CFLAGS) -c $< -o $@

build:
\tmkdir -p build
";

fn c_source(i: usize, n: usize, headers: &[&str]) -> String {
    let mut s = String::from("#define _GNU_SOURCE\n");
    for h in headers {
        s.push_str(&format!("#include <{h}>\n"));
    }
    s.push_str(&format!(
        r#"
struct item{i} {{ char key[32]; unsigned long value; struct item{i} *next; }};

static int cmp{i}(const void *a, const void *b) {{
    const struct item{i} *x = a, *y = b;
    return strcmp(x->key, y->key);
}}

unsigned long work{i}(unsigned long n) {{
    struct item{i} *items = calloc(n, sizeof *items);
    unsigned long h = {i};
    for (unsigned long k = 0; k < n; k++) {{
        snprintf(items[k].key, sizeof items[k].key, "k%lu-%lu", (k * 2654435761UL) % n, h);
        items[k].value = k ^ h;
        h = h * 31 + (unsigned long)strlen(items[k].key);
    }}
    qsort(items, n, sizeof *items, cmp{i});
    for (unsigned long k = 0; k < n; k++) h += items[k].value * (k + 1) + (unsigned long)sqrt((double)k);
    free(items);
    return h;
}}
"#
    ));
    if i == 0 {
        for j in 1..n {
            s.push_str(&format!("unsigned long work{j}(unsigned long n);\n"));
        }
        s.push_str("int main(void) {\n    unsigned long h = work0(1000);\n");
        for j in 1..n {
            s.push_str(&format!("    h += work{j}(1000);\n"));
        }
        s.push_str("    printf(\"%lu\\n\", h);\n    return 0;\n}\n");
    }
    s
}

fn build_cproj(dir: &Path, c_files: usize) -> Result<CprojRecord> {
    let l0 = dir.join("l0");
    let gcc_include = env::output(env::cmd("gcc", &["-print-file-name=include"]))?;
    let multiarch = env::output(env::cmd("gcc", &["-print-multiarch"]))?;
    copy_tree(Path::new("/usr/include"), &l0.join("sys/usr/include"))?;
    copy_tree(Path::new(gcc_include.trim()), &l0.join("sys/gcc/include"))?;
    let headers: Vec<&str> = HEADERS
        .iter()
        .copied()
        .filter(|h| {
            [
                PathBuf::from("/usr/include"),
                Path::new("/usr/include").join(multiarch.trim()),
                PathBuf::from("/usr/include/libxml2"),
                PathBuf::from(gcc_include.trim()),
            ]
            .iter()
            .any(|d| d.join(h).exists())
        })
        .collect();
    let proj = l0.join("proj");
    fs::create_dir_all(proj.join("src"))?;
    fs::write(
        proj.join("Makefile"),
        MAKEFILE.replace("MULTIARCH", multiarch.trim()),
    )?;
    for i in 0..c_files {
        fs::write(
            proj.join(format!("src/m{i}.c")),
            c_source(i, c_files, &headers),
        )?;
    }
    let host = dir.join("host");
    copy_tree(&l0, &host)?;
    // Check that it builds, then clean.
    env::run(env::cmd(
        "make",
        &[
            OsStr::new("-s"),
            OsStr::new("-C"),
            host.join("proj").as_os_str(),
        ],
    ))
    .context("the C project does not build")?;
    env::remove_tree(&host.join("proj/build"))?;
    Ok(CprojRecord {
        c_files,
        headers_per_file: headers.len(),
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct WideRecord {
    entries: usize,
}

fn build_wide(dir: &Path, (dirs, files): (usize, usize)) -> Result<WideRecord> {
    let (l0, l1) = (dir.join("l0"), dir.join("l1"));
    let mut entries = 0;
    for d in 0..dirs {
        env::check_interrupted()?;
        let p = l0.join(format!("d{d:03}"));
        fs::create_dir_all(&p)?;
        entries += 1;
        for f in 0..files {
            File::create(p.join(format!("file-with-a-longish-name-{f:05}")))?;
            entries += 1;
        }
        let q = l1.join(format!("d{d:03}"));
        fs::create_dir_all(&q)?;
        for f in (0..files).step_by(100) {
            fs::write(q.join(format!("file-with-a-longish-name-{f:05}")), b"x\n")?;
        }
    }
    Ok(WideRecord { entries })
}

#[derive(Debug, Serialize, Deserialize)]
struct ImageRecord {
    bytes: u64,
    entries: usize,
}

fn build_image(dir: &Path, tree: &Path, bytes: u64) -> Result<ImageRecord> {
    let content = walk(tree, usize::MAX)?;
    let mut size = 0u64;
    for (rel, kind) in &content {
        if *kind == Kind::File {
            size += fs::symlink_metadata(tree.join(rel))?.len();
        }
    }
    let pad = dir.join("pad");
    fs::create_dir_all(&pad)?;
    random_file(&pad.join("pad.bin"), bytes.saturating_sub(size), 3)?;
    let tar = dir.join("rootfs.tar");
    env::run(env::cmd(
        "tar",
        &[
            OsStr::new("-cf"),
            tar.as_os_str(),
            OsStr::new("-C"),
            tree.as_os_str(),
            OsStr::new("."),
            OsStr::new("-C"),
            pad.as_os_str(),
            OsStr::new("pad.bin"),
        ],
    ))?;
    env::remove_tree(&pad)?;
    let mut f = File::open(&tar)?;
    let mut head = [0u8; 512];
    f.read_exact(&mut head)?;
    if head.iter().all(|&b| b == 0) {
        bail!("empty tar {}", tar.display());
    }
    Ok(ImageRecord {
        bytes: fs::metadata(&tar)?.len(),
        entries: content.len() + 1,
    })
}
