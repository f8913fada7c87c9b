//! POSIX behaviours that conformance suites (pjdfstest and the like) check, each run on rfs
//! and on kernel overlayfs over the same lower, which must agree.

use std::path::Path;
use std::process::Command;

use crate::common::{MountGuard, Scratch};

/// Runs `script` with `sh` in `dir` and returns its output (stdout and stderr).
fn sh_in(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

/// Mounts rfs and kernel overlayfs over `lower` with their own uppers, runs `script` in
/// `subdir` of each, and returns (rfs's output, the kernel's).
fn on_both(s: &Scratch, lower: &Path, subdir: &str, script: &str) -> (String, String) {
    let rmnt = s.mkdir("rfs-mnt");
    let rfs = MountGuard::rfs_dirs(lower, &s.mkdir("rfs-up"), &s.mkdir("rfs-work"), &rmnt);
    let got = sh_in(&rmnt.join(subdir), script);
    rfs.unmount().expect("unmounting rfs");
    let kmnt = s.mkdir("k-mnt");
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        s.mkdir("k-up").display(),
        s.mkdir("k-work").display()
    );
    let kernel = MountGuard::overlay(&options, &kmnt).expect("mounting kernel overlayfs");
    let want = sh_in(&kmnt.join(subdir), script);
    kernel.unmount().expect("unmounting kernel overlayfs");
    (got, want)
}

/// Issue 14: a path the caller gives relative to a directory inside the mount may be close to
/// PATH_MAX, so the same path from the mount's root is longer than PATH_MAX. The kernel
/// resolves it component by component; rfs must not turn it into one over-long host path
/// (truncate and rmdir failed with ENAMETOOLONG).
#[test]
fn operations_on_paths_near_path_max_below_a_subdirectory() {
    let s = Scratch::new();
    let lower = s.mkdir("lower");
    std::fs::create_dir_all(lower.join("top/sub")).unwrap();
    // 39 components of 99 bytes, then a last one that brings the relative path to 4094
    // bytes: inside PATH_MAX from `top`, over it from the mount's root.
    let component = "e".repeat(99);
    let mut deep = String::from(".");
    while deep.len() + 100 < 3990 {
        deep.push('/');
        deep.push_str(&component);
    }
    let last = "f".repeat(4094 - deep.len() - 1);
    let file = format!("{deep}/{last}");
    assert_eq!(file.len(), 4094);
    let script = format!(
        "mkdir -p {deep} && echo mkdir-p-ok; \
         for step in 'echo data > {file}' 'truncate -s 2 {file}' 'cat {file}' 'chmod 600 {file}' \
                     'stat -c %s:%a {file}' 'rm {file}' 'mkdir {file}' 'rmdir {file}' \
                     'mkdir {file}' 'mv {file} {deep}/moved' 'rmdir {deep}/moved'; do \
           if out=$(eval \"$step\" 2>&1); then echo \"ok $out\"; else echo \"failed: $out\"; fi; \
         done"
    );
    let (got, want) = on_both(&s, &lower, "top", &script);
    // Messages name the path: shorten it so a failure stays readable.
    let short = |text: &str| text.replace(&deep, "DEEP").replace(&last, "LAST");
    assert!(
        !want.contains("failed"),
        "the kernel's run: {}",
        short(&want)
    );
    assert_eq!(short(&got), short(&want));
}

/// Issue 14: `fstat` of a file that is open and has been unlinked succeeds with `st_nlink` 0
/// (the "unlink the temp file you hold open" pattern); rfs answered `ENOENT`. Checked for a
/// new file, a copied-up lower file and a file opened read-only, against kernel overlayfs.
#[test]
fn fstat_of_an_open_unlinked_file() {
    let s = Scratch::new();
    let lower = s.mkdir("lower");
    std::fs::write(lower.join("from-lower"), "lower data\n").unwrap();
    std::fs::write(lower.join("read-only"), "only read\n").unwrap();
    let script = r#"python3 - <<'PY'
import os
for name, flags in [("new", os.O_CREAT | os.O_RDWR), ("from-lower", os.O_RDWR),
                    ("read-only", os.O_RDONLY)]:
    fd = os.open(name, flags, 0o600)
    if flags & os.O_RDWR:
        os.write(fd, b"written")
    os.unlink(name)
    try:
        st = os.fstat(fd)
        print(name, "nlink", st.st_nlink, "size", st.st_size, "mode", oct(st.st_mode))
    except OSError as e:
        print(name, "fstat failed:", e.strerror)
    if flags & os.O_RDWR:
        os.write(fd, b"+more")
        os.fsync(fd)
        print(name, "after write size", os.fstat(fd).st_size)
    os.lseek(fd, 0, 0)
    print(name, "reads", os.read(fd, 100))
    os.close(fd)
PY"#;
    let (got, want) = on_both(&s, &lower, ".", script);
    assert!(!want.contains("failed"), "the kernel's run: {want}");
    assert_eq!(got, want);
}
