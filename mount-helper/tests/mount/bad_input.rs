//! Bad input to `rfs mount` and `rfs umount`: each is refused with exit status ≠ 0 and ONE line
//! on stderr (`rfs: ...`) that names the offending file (and member or layer) and the problem;
//! afterwards nothing is mounted, no rfs daemon is left running, and nothing was written
//! outside the root directory (the scratch dir holds only `root/`, an empty `mnt/` and the
//! untouched fixture; `HOME`, `XDG_DATA_HOME` and `TMPDIR` point at a dir that stays empty).
//!
//! Each fixture is built here: small tars with hand-written ustar headers, a flat rootfs tar
//! made by the real `tar` and cut short, and edited copies of the busybox test images. The
//! `*_fixtures_are_valid_when_not_broken` tests mount the same fixtures without the fault,
//! so a refusal can only come from the fault itself.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::common::{MountGuard, Scratch, images_dir, is_mounted, rfs_bin};

// ------------------------------------------------------------------------------------------
// Test images

// ------------------------------------------------------------------------------------------
// The case: scratch layout, running rfs, and the checks after a refusal

/// One bad-input case: `scratch/{root,mnt,<fixture>}` and a separate, empty "elsewhere" dir
/// that rfs sees as `HOME`, `XDG_DATA_HOME` and `TMPDIR`.
struct Case {
    test: &'static str,
    scratch: Scratch,
    elsewhere: Scratch,
    root: PathBuf,
    mnt: PathBuf,
}

impl Case {
    fn new(test: &'static str) -> Case {
        let scratch = Scratch::new();
        let mnt = scratch.mkdir("mnt");
        let root = scratch.dir.path().join("root");
        Case {
            test,
            scratch,
            elsewhere: Scratch::new(),
            root,
            mnt,
        }
    }

    /// `scratch/name` (not created).
    fn path(&self, name: &str) -> PathBuf {
        self.scratch.dir.path().join(name)
    }

    /// Runs `rfs ARGS` with a clean environment: no `RFS_*`, home and temp dirs elsewhere.
    fn run(&self, args: &[&OsStr]) -> Output {
        let e = self.elsewhere.dir.path();
        Command::new(rfs_bin())
            .args(args)
            .env_remove("RFS_ROOT")
            .env_remove("RFS_LOG")
            .env_remove("RUST_BACKTRACE")
            .env("HOME", e)
            .env("XDG_DATA_HOME", e)
            .env("TMPDIR", e)
            .output()
            .expect("running the rfs binary")
    }

    /// `rfs mount --root ROOT SOURCE MNT`.
    fn mount(&self, source: &Path) -> Output {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("mount"),
            OsStr::new("--root"),
            self.root.as_os_str(),
        ];
        args.push(source.as_os_str());
        args.push(self.mnt.as_os_str());
        self.run(&args)
    }

    /// Mounts `source` (which is fine) and checks that it is mounted, then unmounts.
    fn mount_ok(&self, source: &Path) {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("mount"),
            OsStr::new("--root"),
            self.root.as_os_str(),
            OsStr::new("--read-only"),
        ];
        args.push(source.as_os_str());
        let guard = MountGuard::rfs(&args, &self.mnt).unwrap_or_else(|e| {
            panic!(
                "{}: control fixture {} should mount: {e}",
                self.test,
                source.display()
            )
        });
        let n = std::fs::read_dir(&self.mnt).unwrap().count();
        assert!(n > 0, "{}: {} mounted empty", self.test, source.display());
        // The daemon check of `expect_refused` finds a live daemon.
        assert!(
            !processes_naming(&self.mnt).is_empty(),
            "{}: no rfs daemon found for {}",
            self.test,
            self.mnt.display()
        );
        guard.unmount().unwrap();
        self.assert_no_daemon(&format!("{}: after unmounting", self.test));
    }

    /// Runs `rfs mount` of `source` and checks everything a refusal must satisfy: the message
    /// names `source` and has a word of each set in `problem` (case-insensitive).
    fn expect_refused(&self, source: &Path, problem: &[&[&str]]) {
        self.expect_refused_naming(&[&source.display().to_string()], source, problem);
    }

    /// As [`Case::expect_refused`], but the message must name each of `names` instead.
    fn expect_refused_naming(&self, names: &[&str], source: &Path, problem: &[&[&str]]) {
        let before = self.snapshot();
        let mounts_before = mount_count(&self.mnt);
        let mnt_existed = self.mnt.exists();
        let out = self.mount(source);
        let what = format!(
            "{}: rfs mount --root {} {} {}",
            self.test,
            self.root.display(),
            source.display(),
            self.mnt.display()
        );
        let line = assert_one_line_error(&what, &out);
        eprintln!("{what}\n  -> {line}");
        for name in names {
            assert_names(&what, &line, name);
        }
        assert_words(&what, &line, problem);
        self.assert_no_daemon(&what);
        assert_eq!(
            mount_count(&self.mnt),
            mounts_before,
            "{what}: the mounts at {} changed (stderr: {line})",
            self.mnt.display()
        );
        if mounts_before == 0 {
            assert!(!is_mounted(&self.mnt), "{what}: something is mounted");
        }
        assert!(
            !fuse_mounted_under(self.scratch.dir.path()),
            "{what}: a FUSE mount was left under the scratch dir"
        );
        assert_eq!(
            self.mnt.exists(),
            mnt_existed,
            "{what}: the mountpoint was created or removed"
        );
        let after = self.snapshot();
        let mut diffs = Vec::new();
        for (p, b) in &before {
            match after.get(p) {
                Some(a) if a == b => {}
                Some(a) => diffs.push(format!("  {p}: was {b}, now {a}")),
                None => diffs.push(format!("  {p}: removed")),
            }
        }
        for (p, a) in &after {
            if !before.contains_key(p) {
                diffs.push(format!("  {p}: created ({a})"));
            }
        }
        assert!(
            diffs.is_empty(),
            "{what}: written outside the root dir:\n{}",
            diffs.join("\n")
        );
        let stray: Vec<_> = std::fs::read_dir(self.elsewhere.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            stray.is_empty(),
            "{what}: wrote into HOME/XDG_DATA_HOME/TMPDIR: {stray:?}"
        );
    }

    /// Everything under the scratch dir except `root/`: path → kind, mode, size, mtime.
    /// The top level may hold only `root`, `mnt` and the fixture.
    fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let base = self.scratch.dir.path();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = base.join(&rel);
            // A mounted tmpfs (busy case) is listed like any dir: its content must not change.
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let p = rel.join(e.file_name());
                if p == Path::new("root") {
                    continue;
                }
                let m = std::fs::symlink_metadata(base.join(&p)).unwrap();
                if m.is_dir() {
                    stack.push(p.clone());
                }
                let kind = if m.is_dir() {
                    "dir"
                } else if m.file_type().is_symlink() {
                    "symlink"
                } else {
                    "file"
                };
                out.insert(
                    p.to_string_lossy().into_owned(),
                    format!(
                        "{kind} {:o} {} bytes mtime {}.{:09}",
                        m.mode(),
                        m.size(),
                        m.mtime(),
                        m.mtime_nsec()
                    ),
                );
            }
        }
        let top: Vec<_> = out.keys().filter(|k| !k.contains('/')).cloned().collect();
        assert!(
            top.len() <= 2,
            "{}: the scratch dir should hold only root/, mnt/ and the fixture, has {top:?}",
            self.test
        );
        out
    }

    /// No process is running with our mountpoint on its command line (the forked daemon has
    /// the parent's argv); it gets a few seconds to finish exiting.
    fn assert_no_daemon(&self, what: &str) {
        let start = Instant::now();
        loop {
            let pids = processes_naming(&self.mnt);
            if pids.is_empty() {
                return;
            }
            if start.elapsed() > Duration::from_secs(5) {
                panic!("{what}: rfs processes still running: {pids:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The pids (and command lines) of live processes with `arg` as one of their arguments.
fn processes_naming(arg: &Path) -> Vec<String> {
    let want = arg.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        // Zombies have an empty cmdline; they are gone for our purpose.
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).any(|a| a == want) {
            found.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// Mountinfo lines: (mountpoint, fstype).
fn mounts() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some((f.get(4)?.to_string(), f.get(sep + 1)?.to_string()))
        })
        .collect()
}

/// How many mounts are stacked on `path`.
fn mount_count(path: &Path) -> usize {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let want = canon.to_string_lossy().replace(' ', "\\040");
    mounts().iter().filter(|(m, _)| *m == want).count()
}

/// Whether any FUSE filesystem is mounted at or below `dir`.
fn fuse_mounted_under(dir: &Path) -> bool {
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let base = canon.to_string_lossy().replace(' ', "\\040");
    mounts()
        .iter()
        .any(|(m, t)| t.starts_with("fuse") && (*m == base || m.starts_with(&format!("{base}/"))))
}

/// Exit status ≠ 0 (and not a signal), nothing on stdout, and stderr exactly one
/// `\n`-terminated line starting with `rfs: `. Returns that line.
fn assert_one_line_error(what: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "{what}: should fail, exited with {:?}; stderr: {stderr:?}",
        out.status
    );
    assert!(stdout.is_empty(), "{what}: printed on stdout: {stdout:?}");
    assert!(
        stderr.ends_with('\n') && stderr.matches('\n').count() == 1,
        "{what}: stderr should be one line, is {stderr:?}"
    );
    assert!(
        stderr.starts_with("rfs: "),
        "{what}: stderr should start with `rfs: `, is {stderr:?}"
    );
    stderr.trim_end().to_string()
}

fn assert_names(what: &str, line: &str, name: &str) {
    assert!(
        line.contains(name),
        "{what}: the message should name {name}: {line}"
    );
}

/// Each element of `words` is a set of alternatives; one of each must be in `line`
/// (case-insensitive).
fn assert_words(what: &str, line: &str, words: &[&[&str]]) {
    let lower = line.to_lowercase();
    for alts in words {
        assert!(
            alts.iter().any(|w| lower.contains(&w.to_lowercase())),
            "{what}: the message should contain one of {alts:?}: {line}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Hand-written tars

/// One tar member for [`write_tar`].
#[derive(Clone, Copy)]
enum Member<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

/// A ustar header (all names here fit in the 100-byte name field).
fn ustar_header(name: &str, mode: u32, size: u64, typeflag: u8, link: &str) -> [u8; 512] {
    fn put(h: &mut [u8], at: usize, len: usize, s: &[u8]) {
        assert!(
            s.len() <= len,
            "tar field too long: {:?}",
            String::from_utf8_lossy(s)
        );
        h[at..at + s.len()].copy_from_slice(s);
    }
    fn octal(h: &mut [u8], at: usize, len: usize, v: u64) {
        let s = format!("{v:0w$o}\0", w = len - 1);
        put(h, at, len, s.as_bytes());
    }
    let mut h = [0u8; 512];
    put(&mut h, 0, 100, name.as_bytes());
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, 0); // uid
    octal(&mut h, 116, 8, 0); // gid
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 0); // mtime
    h[148..156].fill(b' ');
    h[156] = typeflag;
    put(&mut h, 157, 100, link.as_bytes());
    put(&mut h, 257, 6, b"ustar\0");
    put(&mut h, 263, 2, b"00");
    put(&mut h, 265, 32, b"root");
    put(&mut h, 297, 32, b"root");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
    h
}

/// Writes a tar of `members` (and the two zero blocks that end it) to `path`.
fn write_tar(path: &Path, members: &[Member<'_>]) {
    let mut out = Vec::new();
    for m in members {
        let (h, data): ([u8; 512], &[u8]) = match m {
            Member::Dir(n) => (ustar_header(n, 0o755, 0, b'5', ""), &[]),
            Member::File(n, d) => (ustar_header(n, 0o644, d.len() as u64, b'0', ""), d),
            Member::Symlink(n, t) => (ustar_header(n, 0o777, 0, b'2', t), &[]),
            Member::HardLink(n, t) => (ustar_header(n, 0o644, 0, b'1', t), &[]),
        };
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    std::fs::write(path, out).unwrap();
}

/// A flat rootfs tar whose only fault is `bad` (appended after a few good members).
fn flat_tar_with(path: &Path, bad: &[Member<'_>]) {
    let mut members = vec![
        Member::Dir("etc/"),
        Member::File("etc/hostname", b"rfs-test\n"),
        Member::File("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
    ];
    members.extend_from_slice(bad);
    write_tar(path, &members);
}

// ------------------------------------------------------------------------------------------
// Fixtures made with real tools

fn run_tool(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A flat rootfs tar made by GNU tar from a small tree; returns the byte offset and size of
/// the data of `./bin/big` in it.
fn real_rootfs_tar(path: &Path) -> (u64, u64) {
    let staging = Scratch::new();
    let tree = staging.mkdir("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::write(tree.join("etc/hostname"), "rfs-test\n").unwrap();
    let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(tree.join("bin/big"), &big).unwrap();
    std::fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    run_tool(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&tree)
            .arg("-cf")
            .arg(path)
            .arg("."),
    );
    // Walk the headers to find the member's data.
    let bytes = std::fs::read(path).unwrap();
    let mut at = 0usize;
    while at + 512 <= bytes.len() {
        let h = &bytes[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let size_field = String::from_utf8_lossy(&h[124..136]);
        let size = u64::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
            .unwrap();
        if name == "./bin/big" {
            return (at as u64 + 512, size);
        }
        at += 512 + (size as usize).next_multiple_of(512);
    }
    panic!("./bin/big not found in {}", path.display());
}

/// Copies a file or directory tree with `cp -a`.
fn copy(from: &Path, to: &Path) {
    run_tool(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// `busybox-docker-archive.tar` with its manifest.json edited by `edit`, repacked by tar
/// (layer symlinks and all) into `out`.
fn docker_archive_with(images: &Path, out: &Path, edit: impl FnOnce(&str) -> String) {
    let staging = Scratch::new();
    let dir = staging.mkdir("x");
    run_tool(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-xf")
            .arg(images.join("busybox-docker-archive.tar")),
    );
    let manifest = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let edited = edit(&text);
    // The members are read-only (0444) in the archive.
    std::fs::remove_file(&manifest).unwrap();
    std::fs::write(&manifest, edited).unwrap();
    let mut names: Vec<OsString> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    run_tool(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(out)
            .args(&names),
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of the first `"key":"value"` string at or after `from` in `json`, with its
/// byte range.
fn json_string_after(json: &str, key: &str, from: usize) -> (String, std::ops::Range<usize>) {
    let pat = format!("\"{key}\":\"");
    let start = json[from..]
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key:?} after byte {from} in {json}"))
        + from
        + pat.len();
    let end = start + json[start..].find('"').unwrap();
    (json[start..end].to_string(), start..end)
}

/// The only image manifest of an OCI layout dir: (digest hex, text).
fn oci_manifest(layout: &Path) -> (String, String) {
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    let (digest, _) = json_string_after(&index, "digest", 0);
    let hex = digest.strip_prefix("sha256:").unwrap().to_string();
    let text = std::fs::read_to_string(layout.join("blobs/sha256").join(&hex)).unwrap();
    (hex, text)
}

/// The digests (hex) of the layers of the only manifest of `layout`, in order.
fn oci_layer_digests(layout: &Path) -> Vec<String> {
    let (_, manifest) = oci_manifest(layout);
    let layers_at = manifest.find("\"layers\"").expect("manifest has layers");
    let mut out = Vec::new();
    let mut at = layers_at;
    while let Some(i) = manifest[at..].find("\"digest\":\"sha256:") {
        let (d, r) = json_string_after(&manifest, "digest", at + i);
        out.push(d.strip_prefix("sha256:").unwrap().to_string());
        at = r.end;
    }
    out
}

/// A copy of `busybox-oci` at `out` whose first layer has media type `media_type`, with the
/// manifest re-serialised (a trailing newline, so its digest always changes) and re-digested,
/// and index.json pointing at the new manifest blob: only the media type can be wrong.
fn oci_with_layer_media_type(images: &Path, out: &Path, media_type: Option<&str>) {
    copy(&images.join("busybox-oci"), out);
    let (old_hex, manifest) = oci_manifest(out);
    let layers_at = manifest.find("\"layers\"").expect("manifest has layers");
    let (_, range) = json_string_after(&manifest, "mediaType", layers_at);
    let mut edited = manifest.clone();
    if let Some(mt) = media_type {
        edited.replace_range(range, mt);
    }
    edited.push('\n');
    let new_hex = sha256_hex(edited.as_bytes());
    let blobs = out.join("blobs/sha256");
    std::fs::remove_file(blobs.join(&old_hex)).unwrap();
    std::fs::write(blobs.join(&new_hex), &edited).unwrap();
    let index = std::fs::read_to_string(out.join("index.json")).unwrap();
    let old_size = format!("\"size\":{}", manifest.len());
    assert!(index.contains(&old_size), "index.json: {index}");
    let index = index.replace(&old_hex, &new_hex).replacen(
        &old_size,
        &format!("\"size\":{}", edited.len()),
        1,
    );
    std::fs::write(out.join("index.json"), index).unwrap();
}

// ------------------------------------------------------------------------------------------
// Tar members

#[test]
fn bad_input_truncated_tar() {
    let test = "bad_input_truncated_tar";
    let c = Case::new(test);
    let src = c.path("rootfs.tar");
    let (data, size) = real_rootfs_tar(&src);
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.set_len(data + size / 2).unwrap();
    drop(f);
    c.expect_refused(&src, &[&["bin/big"], &["truncated"]]);
}

#[test]
fn bad_input_random_bytes() {
    let test = "bad_input_random_bytes";
    let c = Case::new(test);
    let src = c.path("random.bin");
    let mut bytes = vec![0u8; 4096];
    rand::rngs::SmallRng::seed_from_u64(0x5eed_0fba).fill_bytes(&mut bytes);
    std::fs::write(&src, &bytes).unwrap();
    c.expect_refused(
        &src,
        &[&[
            "not a tar",
            "not an image",
            "unrecogni",
            "unknown format",
            "malformed",
            "invalid",
        ]],
    );
}

#[test]
fn bad_input_member_climbing_out_with_dotdot() {
    let test = "bad_input_member_climbing_out_with_dotdot";
    let c = Case::new(test);
    let src = c.path("dotdot.tar");
    flat_tar_with(&src, &[Member::File("../x", b"escaped\n")]);
    c.expect_refused(&src, &[&["../x"], &["escap", "climb", "outside", "above"]]);
}

#[test]
fn bad_input_member_beyond_a_symlink_to_root() {
    let test = "bad_input_member_beyond_a_symlink_to_root";
    let c = Case::new(test);
    let src = c.path("symlink.tar");
    flat_tar_with(
        &src,
        &[
            Member::Symlink("a", "/"),
            Member::File("a/etc/passwd", b"evil::0:0::/:/bin/sh\n"),
        ],
    );
    c.expect_refused(&src, &[&["a/etc/passwd"], &["symlink"]]);
}

#[test]
fn bad_input_hard_link_to_a_missing_target() {
    let test = "bad_input_hard_link_to_a_missing_target";
    let c = Case::new(test);
    let src = c.path("hardlink.tar");
    flat_tar_with(&src, &[Member::HardLink("etc/link", "etc/missing")]);
    c.expect_refused(
        &src,
        &[&["etc/link"], &["etc/missing"], &["hard link", "hardlink"]],
    );
}

#[test]
fn bad_input_duplicate_member() {
    let test = "bad_input_duplicate_member";
    let c = Case::new(test);
    let src = c.path("duplicate.tar");
    flat_tar_with(&src, &[Member::File("etc/hostname", b"again\n")]);
    c.expect_refused(&src, &[&["etc/hostname"], &["duplicate"]]);
}

#[test]
fn bad_input_bare_whiteout_member() {
    let test = "bad_input_bare_whiteout_member";
    let c = Case::new(test);
    let src = c.path("whiteout.tar");
    flat_tar_with(&src, &[Member::File(".wh.", b"")]);
    c.expect_refused(&src, &[&[".wh."], &["whiteout"]]);
}

#[test]
fn bad_input_tar_fixtures_are_valid_when_not_broken() {
    let test = "bad_input_tar_fixtures_are_valid_when_not_broken";
    let c = Case::new(test);
    let src = c.path("good.tar");
    flat_tar_with(
        &src,
        &[
            Member::Symlink("a", "/"),
            Member::HardLink("etc/link", "etc/hostname"),
            Member::File("x", b"inside\n"),
        ],
    );
    c.mount_ok(&src);
    let real = c.path("real.tar");
    real_rootfs_tar(&real);
    c.mount_ok(&real);
}

// ------------------------------------------------------------------------------------------
// Images

#[test]
fn bad_input_docker_manifest_naming_a_missing_layer() {
    let test = "bad_input_docker_manifest_naming_a_missing_layer";
    let Some(images) = images_dir(test) else {
        return;
    };
    let c = Case::new(test);
    let src = c.path("busybox-missing-layer.tar");
    let missing = format!("{}.tar", "0".repeat(64));
    docker_archive_with(&images, &src, |m| {
        // The second name in `"Layers":["first","second",...]`.
        let key = "\"Layers\":[";
        let at = m.find(key).expect("manifest.json has Layers") + key.len();
        let quotes: Vec<usize> = m[at..]
            .match_indices('"')
            .map(|(i, _)| at + i)
            .take(4)
            .collect();
        assert_eq!(quotes.len(), 4, "{m}");
        let mut m = m.to_string();
        m.replace_range(quotes[2] + 1..quotes[3], &missing);
        m
    });
    c.expect_refused(
        &src,
        &[
            &["manifest.json"],
            &[&missing],
            &["missing", "not in the archive", "not found", "no such"],
        ],
    );
}

#[test]
fn bad_input_oci_layer_digest_mismatch() {
    let test = "bad_input_oci_layer_digest_mismatch";
    let Some(images) = images_dir(test) else {
        return;
    };
    let c = Case::new(test);
    let src = c.path("busybox-oci");
    copy(&images.join("busybox-oci"), &src);
    let layer = oci_layer_digests(&src).into_iter().next().expect("a layer");
    let blob = src.join("blobs/sha256").join(&layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&blob, &bytes).unwrap();
    c.expect_refused(&src, &[&[&layer], &["digest", "sha256"]]);
}

#[test]
fn bad_input_oci_unknown_layer_media_type() {
    let test = "bad_input_oci_unknown_layer_media_type";
    let Some(images) = images_dir(test) else {
        return;
    };
    let c = Case::new(test);
    let src = c.path("busybox-oci");
    let odd = "application/vnd.example.rfs-test.unknown";
    oci_with_layer_media_type(&images, &src, Some(odd));
    c.expect_refused(&src, &[&[odd], &["media type", "mediatype"]]);
}

#[test]
fn bad_input_image_fixtures_are_valid_when_not_broken() {
    let test = "bad_input_image_fixtures_are_valid_when_not_broken";
    let Some(images) = images_dir(test) else {
        return;
    };
    let c = Case::new(test);
    // Unpacked and repacked, manifest unchanged.
    let docker = c.path("busybox-repacked.tar");
    docker_archive_with(&images, &docker, str::to_string);
    c.mount_ok(&docker);
    std::fs::remove_file(&docker).unwrap();
    // Manifest re-serialised and re-digested, media type unchanged.
    let oci = c.path("busybox-oci");
    oci_with_layer_media_type(&images, &oci, None);
    c.mount_ok(&oci);
}

// ------------------------------------------------------------------------------------------
// Mountpoints and umount

#[test]
fn bad_input_missing_mountpoint() {
    let test = "bad_input_missing_mountpoint";
    let c = Case::new(test);
    let src = c.path("rootfs.tar");
    flat_tar_with(&src, &[]);
    std::fs::remove_dir(&c.mnt).unwrap();
    // The offending file is the mountpoint.
    let mnt = c.mnt.display().to_string();
    c.expect_refused_naming(
        &[&mnt],
        &src,
        &[&["no such file", "does not exist", "missing", "not found"]],
    );
}

/// A tmpfs mounted for the test, unmounted on drop.
struct TmpfsGuard(PathBuf);

impl TmpfsGuard {
    fn mount(at: &Path) -> TmpfsGuard {
        run_tool(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1m", "rfs-test-busy"])
                .arg(at),
        );
        TmpfsGuard(at.to_path_buf())
    }
}

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            eprintln!("TmpfsGuard: {}: needed umount -l", self.0.display());
        }
    }
}

#[test]
fn bad_input_busy_mountpoint() {
    let test = "bad_input_busy_mountpoint";
    let c = Case::new(test);
    let src = c.path("rootfs.tar");
    flat_tar_with(&src, &[]);
    let tmpfs = TmpfsGuard::mount(&c.mnt);
    let mnt = c.mnt.display().to_string();
    c.expect_refused_naming(&[&mnt], &src, &[&["busy", "already mounted", "in use"]]);
    let top = mounts()
        .into_iter()
        .rfind(|(m, _)| *m == mnt.replace(' ', "\\040"))
        .map(|(_, t)| t);
    assert_eq!(
        top.as_deref(),
        Some("tmpfs"),
        "{test}: the tmpfs is no longer on top"
    );
    drop(tmpfs);
    // Unbroken, the same source mounts: the refusal was the mountpoint's doing.
    c.mount_ok(&src);
}

#[test]
fn bad_input_umount_of_something_not_mounted() {
    let test = "bad_input_umount_of_something_not_mounted";
    let c = Case::new(test);
    let cases: [(PathBuf, &[&str]); 2] = [
        (c.mnt.clone(), &["not mounted", "not a mountpoint"]),
        (
            c.path("does-not-exist"),
            &["no such file", "does not exist"],
        ),
    ];
    for (target, problem) in cases {
        let what = format!("{test}: rfs umount {}", target.display());
        let out = c.run(&[OsStr::new("umount"), target.as_os_str()]);
        let line = assert_one_line_error(&what, &out);
        eprintln!("{what}\n  -> {line}");
        assert_names(&what, &line, &target.display().to_string());
        assert_words(&what, &line, &[problem]);
        assert!(
            processes_naming(&target).is_empty(),
            "{what}: left a process"
        );
    }
    assert!(!c.path("does-not-exist").exists());
    assert!(!c.root.exists(), "{test}: umount created the root dir");
}
