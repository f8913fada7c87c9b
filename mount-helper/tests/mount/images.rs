//! Real images built by `../shared/scripts/make-test-images.sh` (Docker engine, buildah,
//! skopeo, podman, umoci, debootstrap), mounted with `rfs mount` and compared with what the
//! real tools unpacked: `busybox-expected-tree.txt` (umoci unpack of the same image) and the
//! debootstrapped Debian rootfs.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::common::{MountGuard, Scratch, images_dir};

fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The listing `make-test-images.sh` writes with `find -printf '%y %#m %U:%G %s %p'`:
/// path → "type mode uid:gid size [-> target | sha256]".
pub(crate) fn tree_listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::from(".")];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = rel.join(e.file_name());
            let full = root.join(&path);
            let m = std::fs::symlink_metadata(&full).unwrap();
            let ft = m.file_type();
            let mode = format!("0{:o}", m.permissions().mode() & 0o7777);
            let owner = format!("{}:{}", m.uid(), m.gid());
            let p = path.to_string_lossy().into_owned();
            let line = if ft.is_dir() {
                stack.push(path.clone());
                format!("d {mode} {owner} -")
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&full).unwrap();
                format!("l {mode} {owner} {} -> {}", m.size(), t.display())
            } else if ft.is_file() {
                format!("f {mode} {owner} {} {}", m.size(), sha256_file(&full))
            } else {
                let t = if ft.is_fifo() {
                    'p'
                } else if ft.is_char_device() {
                    'c'
                } else if ft.is_block_device() {
                    'b'
                } else {
                    's'
                };
                format!("{t} {mode} {owner} {}", m.size())
            };
            out.insert(p, line);
        }
    }
    out
}

/// Parses `busybox-expected-tree.txt` into the same shape as [`tree_listing`].
fn expected_listing(file: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.splitn(5, ' ').collect();
        let (t, mode, owner, size, rest) = (f[0], f[1], f[2], f[3], f[4]);
        let (path, tail) = match rest.split_once(' ') {
            Some((p, tail)) => (p, Some(tail)),
            None => (rest, None),
        };
        let value = match tail {
            Some(tail) => format!("{t} {mode} {owner} {size} {tail}"),
            None => format!("{t} {mode} {owner} {size}"),
        };
        out.insert(path.to_string(), value);
    }
    out
}

pub(crate) fn assert_same_tree(
    what: &str,
    got: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) {
    let mut diffs = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            Some(g) if g == w => {}
            Some(g) => diffs.push(format!("  {p}: got `{g}`, want `{w}`")),
            None => diffs.push(format!("  {p}: missing (want `{w}`)")),
        }
    }
    for (p, g) in got {
        if !want.contains_key(p) {
            diffs.push(format!("  {p}: unexpected `{g}`"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: merged view differs:\n{}",
        diffs.join("\n")
    );
}

/// `getfattr -R -h -d -m - -e hex .` output reduced to (file, attr=value) lines.
fn xattr_lines(root: &Path) -> Vec<String> {
    let out = Command::new("getfattr")
        .args(["-R", "-h", "-d", "-m", "-", "-e", "hex", "."])
        .current_dir(root)
        .output()
        .expect("getfattr (package attr)");
    parse_getfattr(&String::from_utf8_lossy(&out.stdout))
}

fn parse_getfattr(text: &str) -> Vec<String> {
    let mut file = String::new();
    let mut lines = Vec::new();
    for l in text.lines() {
        if let Some(f) = l.strip_prefix("# file: ") {
            file = f.trim_start_matches("./").to_string();
        } else if !l.is_empty() {
            lines.push(format!("{file}: {l}"));
        }
    }
    lines.sort();
    lines
}

fn mount_image(source: &Path, s: &Scratch, extra: &[&str]) -> (MountGuard, PathBuf) {
    let mnt = s.mkdir("mnt");
    let root = s.mkdir("root");
    let mut args: Vec<&OsStr> = vec![OsStr::new("mount"), OsStr::new("--root"), root.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    args.push(source.as_os_str());
    let guard = MountGuard::rfs(&args, &mnt)
        .unwrap_or_else(|e| panic!("rfs mount {}: {e}", source.display()));
    (guard, mnt)
}

const BUSYBOX_SOURCES: &[&str] = &[
    "busybox-oci",
    "busybox-oci.tar",
    "busybox-oci-zstd",
    "busybox-oci-uncompressed",
    "busybox-docker-archive.tar",
    "busybox-multiarch-oci",
];

#[test]
fn busybox_image_in_every_format_matches_umoci_unpack() {
    let Some(images) = images_dir("busybox_image_in_every_format_matches_umoci_unpack") else {
        return;
    };
    let want = expected_listing(&images.join("busybox-expected-tree.txt"));
    let want_xattrs = parse_getfattr(
        &std::fs::read_to_string(images.join("busybox-expected-xattrs.txt")).unwrap(),
    );
    for name in BUSYBOX_SOURCES {
        let s = Scratch::new();
        let (guard, mnt) = mount_image(&images.join(name), &s, &["--read-only"]);
        assert_same_tree(name, &tree_listing(&mnt), &want);
        assert_eq!(xattr_lines(&mnt), want_xattrs, "{name}: xattrs");
        guard.unmount().unwrap();
    }
}

#[test]
fn flat_podman_export_matches_the_image() {
    let Some(images) = images_dir("flat_podman_export_matches_the_image") else {
        return;
    };
    let want = expected_listing(&images.join("busybox-expected-tree.txt"));
    let s = Scratch::new();
    let (guard, mnt) = mount_image(&images.join("busybox-podman-export.tar"), &s, &[]);
    let got = tree_listing(&mnt);
    // `podman export` writes the container's filesystem, which has the same files as the
    // image; compare every regular file, symlink and directory the image has.
    assert_same_tree("busybox-podman-export.tar", &got, &want);
    guard.unmount().unwrap();
}

#[test]
fn multiarch_index_picks_the_requested_platform() {
    let Some(images) = images_dir("multiarch_index_picks_the_requested_platform") else {
        return;
    };
    let s = Scratch::new();
    let (guard, mnt) = mount_image(
        &images.join("busybox-multiarch-oci"),
        &s,
        &["--read-only", "--platform", "linux/arm64/v8"],
    );
    let text = std::fs::read_to_string(mnt.join("ARCH.txt")).unwrap();
    assert!(text.contains("arm64 placeholder"), "{text}");
    assert!(!mnt.join("bin/busybox").exists());
    guard.unmount().unwrap();
}

#[test]
fn docker_save_of_a_docker_built_and_committed_image() {
    let Some(images) = images_dir("docker_save_of_a_docker_built_and_committed_image") else {
        return;
    };
    let s = Scratch::new();
    let (guard, mnt) = mount_image(
        &images.join("docker/busybox-docker-save.tar"),
        &s,
        &["--read-only"],
    );
    // The Dockerfile removed /opt/data/keep and /opt/opq/c, created /srv/www as 1000:1000;
    // the committed container removed hello.txt and wrote committed.txt.
    assert!(!mnt.join("opt/data/keep").exists());
    assert!(!mnt.join("opt/opq/c").exists());
    assert!(mnt.join("opt/opq").is_dir());
    let m = std::fs::metadata(mnt.join("srv/www/index.html")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    assert_eq!(
        std::fs::read_to_string(mnt.join("srv/www/index.html")).unwrap(),
        "hi\n"
    );
    assert!(!mnt.join("home/app/hello.txt").exists());
    assert_eq!(
        std::fs::read_to_string(mnt.join("home/app/committed.txt")).unwrap(),
        "committed\n"
    );
    // `docker export` of the same container is the oracle for the whole tree.
    let export = s.mkdir("export");
    let st = Command::new("tar")
        .arg("-xpf")
        .arg(images.join("docker/busybox-docker-export.tar"))
        .arg("-C")
        .arg(&export)
        .arg("--numeric-owner")
        .status()
        .unwrap();
    assert!(st.success());
    let mut want = tree_listing(&export);
    let mut got = tree_listing(&mnt);
    // docker export adds the container's runtime files (/.dockerenv, /etc/mtab, /dev/*,
    // /etc/hosts content); leave those out, compare everything else.
    for p in [
        "./.dockerenv",
        "./etc/hosts",
        "./etc/hostname",
        "./etc/resolv.conf",
        "./etc/mtab",
        "./dev/console",
        "./dev/pts",
        "./dev/shm",
    ] {
        want.remove(p);
        got.remove(p);
    }
    assert_same_tree("busybox-docker-save.tar", &got, &want);
    guard.unmount().unwrap();
}

#[test]
fn debian_images_match_the_debootstrapped_rootfs() {
    let Some(images) = images_dir("debian_images_match_the_debootstrapped_rootfs") else {
        return;
    };
    let rootfs = images.join("work/debian-rootfs");
    assert!(
        rootfs.is_dir(),
        "{} missing: rebuild the test images",
        rootfs.display()
    );
    let want = tree_listing(&rootfs);
    for name in [
        "docker/debian-docker-save.tar",
        "debian-oci",
        "debian-rootfs.tar",
    ] {
        let s = Scratch::new();
        let (guard, mnt) = mount_image(&images.join(name), &s, &["--read-only"]);
        let mut got = tree_listing(&mnt);
        let mut want = want.clone();
        // umoci and docker import record the root directory's own metadata differently;
        // every entry below the root must match.
        got.remove(".");
        want.remove(".");
        assert_same_tree(name, &got, &want);
        guard.unmount().unwrap();
    }
}
