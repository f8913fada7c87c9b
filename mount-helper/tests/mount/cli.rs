//! The command line itself: `--version`, `--help` with examples, completions, man pages,
//! `rfs doctor`.

use std::ffi::OsStr;

use crate::common::{require_root, rfs};

#[test]
fn version_and_help_answer() {
    let out = rfs(&[OsStr::new("--version")]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rfs "));
    let commands = [
        "mount",
        "umount",
        "doctor",
        "run",
        "ps",
        "rm",
        "load",
        "import",
        "tag",
        "images",
        "rmi",
        "prune",
        "history",
        "inspect",
        "diff",
        "commit",
        "save",
        "completions",
        "man",
    ];
    for cmd in commands {
        let out = rfs(&[OsStr::new(cmd), OsStr::new("--help")]);
        assert!(out.status.success(), "{cmd} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: rfs"), "{cmd} --help");
        assert!(
            text.contains("Examples:\n  rfs "),
            "{cmd} --help has no example"
        );
    }
}

#[test]
fn completions_and_man_pages_are_generated() {
    let out = rfs(&[OsStr::new("completions"), OsStr::new("bash")]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("complete -F"));
    let dir = tempfile::tempdir().unwrap();
    let out = rfs(&[OsStr::new("man"), dir.path().as_os_str()]);
    assert!(out.status.success());
    for page in ["rfs.1", "rfs-mount.1", "rfs-run.1", "rfs-commit.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
}

#[test]
fn doctor_reports_every_check() {
    if !require_root("doctor_reports_every_check") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let out = rfs(&[
        OsStr::new("doctor"),
        OsStr::new("--root"),
        root.path().as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    for what in [
        "/dev/fuse",
        "fusermount3",
        "user namespaces",
        "subordinate ids",
        "user xattrs",
    ] {
        assert!(text.contains(what), "doctor does not check {what}:\n{text}");
    }
    // As root on the test machine (scripts/test.sh opens /dev/fuse) everything needed is there.
    assert!(
        out.status.success(),
        "doctor found something missing:\n{text}"
    );
}

/// Removes the `/sbin/mount.fuse.rfs` link the test made, also on failure.
struct HelperLink(&'static str);

impl Drop for HelperLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

#[test]
fn mount_dash_t_fuse_rfs_works() {
    if !require_root("mount_dash_t_fuse_rfs_works") {
        return;
    }
    let helper = "/sbin/mount.fuse.rfs";
    if std::path::Path::new(helper).exists() {
        eprintln!("{helper} exists already (an installed rfs); testing that one");
    } else {
        std::os::unix::fs::symlink(crate::common::rfs_bin(), helper).unwrap();
    }
    let _link = HelperLink(helper);
    let s = crate::common::Scratch::new();
    let (lower, upper, work, mnt) = (s.mkdir("l"), s.mkdir("u"), s.mkdir("w"), s.mkdir("m"));
    std::fs::write(lower.join("a"), "from the lower\n").unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    // mount(8) runs the helper with an empty environment: no HOME, no RFS_ROOT.
    let st = std::process::Command::new("mount")
        .args(["-t", "fuse.rfs", "-o", &opts, "rfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount -t fuse.rfs failed");
    let guard = crate::common::MountGuard::kernel_guard(&mnt);
    assert_eq!(
        std::fs::read_to_string(mnt.join("a")).unwrap(),
        "from the lower\n"
    );
    std::fs::write(mnt.join("b"), "new\n").unwrap();
    assert!(upper.join("b").exists());
    guard.unmount().unwrap();
}
