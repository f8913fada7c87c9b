//! The command line itself: `--version`, `--help` with examples, completions, man pages,
//! `rfs doctor`.

use std::ffi::OsStr;

use crate::common::rfs;

#[test]
fn version_and_help_answer() {
    for flag in ["--version", "-V"] {
        let out = rfs(&[OsStr::new(flag)]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, format!("rfs {}\n", env!("CARGO_PKG_VERSION")));
        // `rfs X.Y.Z`, as `podman --version` prints `podman version X.Y.Z`.
        let version = text.trim_end().strip_prefix("rfs ").unwrap();
        let parts: Vec<&str> = version.split('.').collect();
        assert_eq!(parts.len(), 3, "{text}");
        assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()), "{text}");
    }
    let commands = [
        "mount",
        "umount",
        "mounts",
        "doctor",
        "info",
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

/// Issue 13: `rfs mount SRC` without a mountpoint exited 1, like a failed mount; bad usage
/// is status 2 with clap's message and the subcommand's usage, for every subcommand.
#[test]
fn usage_errors_exit_2_with_the_usage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str, &str)] = &[
        (&["mount", d], "rfs mount", "the MOUNTPOINT is missing"),
        (
            &["mount", "--lower", d],
            "rfs mount",
            "the MOUNTPOINT is missing",
        ),
        (
            &["mount", "--lower", d, d, d],
            "rfs mount",
            "with --lower, the only positional argument is the MOUNTPOINT",
        ),
        (&["mount"], "rfs mount", "<SOURCE>"),
        (&["commit"], "rfs commit", "the CONTAINER is missing"),
        (
            &["commit", "--upper", d, "--image", "x", "a", "b"],
            "rfs commit",
            "with --upper, the only positional argument is the NAME[:TAG]",
        ),
        (&["commit", "--upper", d], "rfs commit", "--image"),
        (&["tag", "a"], "rfs tag", "<TARGET[:TAG]>"),
        (
            &["no-such-command"],
            "rfs [OPTIONS] <COMMAND>",
            "no-such-command",
        ),
    ];
    let check = |args: &[&str], usage: &str, problem: &str| {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let out = rfs(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(problem), "{args:?}: {err}");
        assert!(err.contains(&format!("Usage: {usage}")), "{args:?}: {err}");
    };
    for (args, usage, problem) in cases {
        check(args, usage, problem);
    }
    // Every subcommand answers an unknown option the same way.
    let listed = String::from_utf8_lossy(&rfs(&[OsStr::new("--help")]).stdout).into_owned();
    let subcommands: Vec<&str> = listed
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(subcommands.len() >= 19, "{listed}");
    for sub in subcommands {
        check(
            &[sub, "--no-such-option"],
            &format!("rfs {sub}"),
            "unexpected argument '--no-such-option'",
        );
    }
    // A right command line that fails is status 1, not 2.
    let missing = dir.path().join("no-such-dir");
    let out = rfs(&[
        OsStr::new("mount"),
        OsStr::new("--lower"),
        dir.path().as_os_str(),
        missing.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("rfs: mountpoint "), "{err}");
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
        "private container network (pasta)",
        "container limits (cgroups)",
        "user xattrs",
        "idle vCPUs poll before halting",
    ] {
        assert!(text.contains(what), "doctor does not check {what}:\n{text}");
    }
    // The idle-polling line reports what this host has, and its advice only when it is off.
    let polling_off = std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
        .is_ok_and(|v| v.trim() == "0")
        && std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver")
            .is_ok_and(|d| d.trim() == "haltpoll");
    assert_eq!(
        text.contains("guest_halt_poll_ns (the kernel's default)"),
        polling_off,
        "idle-polling advice shown or missing wrongly:\n{text}"
    );
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

#[test]
fn overlay_invocation_maps_ids_as_fuse_overlayfs_documents() {
    use std::os::unix::fs::MetadataExt;
    let s = crate::common::Scratch::new();
    let (lower, upper, work, mnt) = (s.mkdir("l"), s.mkdir("u"), s.mkdir("w"), s.mkdir("m"));
    std::fs::write(lower.join("mine"), "1000 on disk").unwrap();
    std::fs::write(lower.join("sub"), "100005 on disk").unwrap();
    std::fs::write(lower.join("stray"), "7 on disk").unwrap();
    std::os::unix::fs::chown(lower.join("mine"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(lower.join("sub"), Some(100005), Some(100005)).unwrap();
    std::os::unix::fs::chown(lower.join("stray"), Some(7), Some(7)).unwrap();
    // As a rootless podman would map: container 0 = host 1000, 1.. = host 100000..
    let bin = crate::common::copy_of_rfs(&s.dir.path().join("rfs-overlay"));
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},uidmapping=0:1000:1:1:100000:65536,\
         gidmapping=0:1000:1:1:100000:65536",
        lower.display(),
        upper.display(),
        work.display()
    );
    let st = std::process::Command::new(&bin)
        .args(["-o", &opts])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let guard = crate::common::MountGuard::kernel_guard(&mnt);
    let ids = |p: &str| {
        let m = std::fs::symlink_metadata(mnt.join(p)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(ids("mine"), (0, 0), "host 1000 shows as 0");
    assert_eq!(ids("sub"), (6, 6), "host 100005 shows as 6");
    assert_eq!(
        ids("stray"),
        (65534, 65534),
        "unmapped ids show as the overflow id"
    );
    // chown inside stores the host id.
    std::os::unix::fs::chown(mnt.join("mine"), Some(6), Some(6)).unwrap();
    assert_eq!(ids("mine"), (6, 6));
    let on_disk = std::fs::metadata(upper.join("mine")).unwrap();
    assert_eq!((on_disk.uid(), on_disk.gid()), (100005, 100005));
    guard.unmount().unwrap();
}
