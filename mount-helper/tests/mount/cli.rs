//! The command line itself: `--version`, `--help`, `rfs doctor`.

use std::ffi::OsStr;

use crate::common::{require_root, rfs};

#[test]
fn version_and_help_answer() {
    let out = rfs(&[OsStr::new("--version")]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rfs "));
    for cmd in ["mount", "umount", "doctor"] {
        let out = rfs(&[OsStr::new(cmd), OsStr::new("--help")]);
        assert!(out.status.success(), "{cmd} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: rfs"),
            "{cmd} --help"
        );
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
