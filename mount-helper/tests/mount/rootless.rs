//! Rootless mounts: a non-root user mounts through fusermount3 (with `/dev/fuse` mode 0666,
//! as distributions ship it) and the upper keeps what that user cannot represent in
//! `user.*` xattrs: ownership in `user.containers.override_stat`, opaque dirs in
//! `user.overlay.opaque`, whiteouts as char devices or `.wh.` files.
//!
//! The test runs as root and drops to the user `rfstest` (created by `scripts/test.sh`) with
//! `runuser`, because only the mounting user may use a FUSE mount without `allow_other`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Scratch, is_mounted};

pub(crate) const USER: &str = "rfstest";

pub(crate) fn user_ids() -> Option<(u32, u32)> {
    let out = Command::new("id").arg("-u").arg(USER).output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").arg("-g").arg(USER).output().ok()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

/// Runs `script` with `sh -c` as the test user; returns (success, stdout+stderr).
pub(crate) fn as_user(script: &str) -> (bool, String) {
    let out = Command::new("runuser")
        .args(["-u", USER, "--", "sh", "-c", script])
        .output()
        .expect("runuser");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The test user's ids and a scratch dir that user may enter.
pub(crate) fn user_and_scratch() -> (u32, u32, Scratch) {
    let Some((uid, gid)) = user_ids() else {
        panic!("user {USER} is missing: scripts/test.sh creates it (useradd -m {USER})");
    };
    let s = Scratch::new();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    (uid, gid, s)
}

/// Unmounts as the user on drop (the user's mount; root's fusermount3 would refuse).
pub(crate) struct UserMount(pub(crate) PathBuf);

impl Drop for UserMount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = as_user(&format!("fusermount3 -u '{}'", self.0.display()));
        }
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Mounts `lower` as the test user (uid, gid) with a fresh upper, work and root dir that the
/// user owns, through a copy of rfs the user can run. Returns the upper, the mountpoint and
/// the guard that unmounts it.
fn mount_as_user(s: &Scratch, lower: &Path, uid: u32, gid: u32) -> (PathBuf, PathBuf, UserMount) {
    let (upper, work, mnt, root) = (
        s.mkdir("upper"),
        s.mkdir("work"),
        s.mkdir("mnt"),
        s.mkdir("root"),
    );
    for p in [&upper, &work, &mnt, &root] {
        chown_tree(p, uid, gid);
    }
    let bin = crate::common::copy_of_rfs(&s.dir.path().join("rfs"));
    let guard = UserMount(mnt.clone());
    let (ok, out) = as_user(&format!(
        "'{}' mount --root '{}' --lower '{}' --upper '{}' --work '{}' '{}'",
        bin.display(),
        root.display(),
        lower.display(),
        upper.display(),
        work.display(),
        mnt.display()
    ));
    assert!(ok, "rootless rfs mount failed: {out}");
    (upper, mnt, guard)
}

pub(crate) fn chown_tree(p: &Path, uid: u32, gid: u32) {
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_non_root_user_mounts_and_its_upper_keeps_ownership_in_xattrs() {
    let (uid, gid, s) = user_and_scratch();
    let fuse_mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o777;
    assert_eq!(
        fuse_mode, 0o666,
        "/dev/fuse must be mode 0666 for rootless mounts (scripts/test.sh sets it)"
    );
    let lower = s.mkdir("lower");
    std::fs::create_dir_all(lower.join("d")).unwrap();
    std::fs::write(lower.join("d/owned-by-1000"), "app data\n").unwrap();
    std::fs::write(lower.join("d/gone"), "x").unwrap();
    std::fs::create_dir_all(lower.join("o/sub")).unwrap();
    std::fs::write(lower.join("o/sub/f"), "f").unwrap();
    // The directories belong to the user (so it may change them); one file belongs to an id
    // the user cannot chown to.
    chown_tree(&lower, uid, gid);
    std::os::unix::fs::chown(lower.join("d/owned-by-1000"), Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(
        lower.join("d/owned-by-1000"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let (upper, mnt, _guard) = mount_as_user(&s, &lower, uid, gid);
    assert!(is_mounted(&mnt));
    let m = mnt.display();
    // Read a lower file owned by 1000, create, delete lower entries, replace a lower
    // directory by a new empty one.
    let (ok, out) = as_user(&format!(
        "set -e; cat {m}/d/owned-by-1000; stat -c '%u:%g %a' {m}/d/owned-by-1000; \
         touch {m}/d/new-by-user; rm {m}/d/gone; test ! -e {m}/d/gone; \
         rm -r {m}/o; mkdir {m}/o; test -z \"$(ls -A {m}/o)\"; echo ok"
    ));
    assert!(ok, "{out}");
    assert!(
        out.contains("1000:1000 4755"),
        "merged view keeps lower ownership: {out}"
    );
    // The user owns its new file.
    let meta = std::fs::metadata(upper.join("d/new-by-user")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    // The deletion left a whiteout: a char 0/0 device if the kernel let the user make
    // one, else a `.wh.` file.
    let wh_dev = std::fs::symlink_metadata(upper.join("d/gone"))
        .map(|m| m.file_type())
        .ok();
    let wh_file = upper.join("d/.wh.gone").exists();
    assert!(
        wh_file || wh_dev.is_some_and(|t| std::os::unix::fs::FileTypeExt::is_char_device(&t)),
        "no whiteout for d/gone in the upper"
    );
    // The directory made over a whiteout is opaque, marked in the user namespace.
    let opaque = Command::new("getfattr")
        .args(["--only-values", "-n", "user.overlay.opaque"])
        .arg(upper.join("o"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&opaque.stdout), "y");
    let (ok, out) = as_user(&format!("fusermount3 -u {m}"));
    assert!(ok, "{out}");
}

#[test]
fn copy_up_of_a_foreign_owned_file_records_override_stat() {
    let (uid, gid, s) = user_and_scratch();
    let lower = s.mkdir("lower");
    // World-writable file owned by 1000: the test user may write it, which copies it up.
    std::fs::write(lower.join("shared"), "v1\n").unwrap();
    std::os::unix::fs::chown(lower.join("shared"), Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(lower.join("shared"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let (upper, mnt, _guard) = mount_as_user(&s, &lower, uid, gid);
    let m = mnt.display();
    let (ok, out) = as_user(&format!(
        "set -e; echo v2 >> {m}/shared; cat {m}/shared; stat -c '%u:%g %a' {m}/shared"
    ));
    assert!(ok, "{out}");
    assert!(out.contains("v1\nv2\n"), "{out}");
    assert!(
        out.contains("1000:1000 666"),
        "merged ownership after copy-up: {out}"
    );
    // On disk the copy belongs to the user; the image's ownership is in the xattr.
    let meta = std::fs::metadata(upper.join("shared")).unwrap();
    assert_eq!(meta.uid(), uid);
    let x = Command::new("getfattr")
        .args(["--only-values", "-n", "user.containers.override_stat"])
        .arg(upper.join("shared"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&x.stdout), "1000:1000:0666");
    let (ok, out) = as_user(&format!("fusermount3 -u {m}"));
    assert!(ok, "{out}");
}

#[test]
fn chmod_by_a_rootless_user_shows_the_new_mode_at_once() {
    let (uid, gid, s) = user_and_scratch();
    let lower = s.mkdir("lower");
    std::fs::write(lower.join("lower-file"), "l\n").unwrap();
    chown_tree(&lower, uid, gid);
    let (upper, mnt, _guard) = mount_as_user(&s, &lower, uid, gid);
    let m = mnt.display();
    // A rootless daemon keeps a mode it cannot give the file on disk (no owner read/write
    // bit) in `user.containers.override_stat`; each chmod rewrites it, and the mode the
    // mount shows must follow at once, also for a file whose attributes were read before.
    let (ok, out) = as_user(&format!(
        "set -e; touch {m}/mine; stat -c 'a %a' {m}/mine; chmod 0400 {m}/mine; \
         stat -c 'b %a' {m}/mine; chmod 0751 {m}/mine; stat -c 'c %a' {m}/mine; \
         stat -c 'd %a' {m}/lower-file; chmod 0444 {m}/lower-file; stat -c 'e %a' {m}/lower-file"
    ));
    assert!(ok, "{out}");
    for want in ["a 644", "b 400", "c 751", "d 644", "e 444"] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    let x = Command::new("getfattr")
        .args(["--only-values", "-n", "user.containers.override_stat"])
        .arg(upper.join("lower-file"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&x.stdout),
        format!("{uid}:{gid}:0444"),
        "the mode lives in the override"
    );
    let (ok, out) = as_user(&format!("fusermount3 -u {m}"));
    assert!(ok, "{out}");
}

/// Issue 13: an image mounted without root shows the image's root as the caller, so the caller
/// can change what the image's root could; the image's ownership is kept in the upper and
/// comes back unchanged in `rfs commit`. `--keep-ids` shows the raw ids, `--subids` maps the
/// user's subordinate range.
#[test]
fn a_rootless_image_mount_shows_the_image_root_as_the_caller() {
    let test = "a_rootless_image_mount_shows_the_image_root_as_the_caller";
    let (uid, gid, s) = user_and_scratch();
    let Some(images) = crate::common::images_dir(test) else {
        return;
    };
    let (mnt, root) = (s.mkdir("mnt"), s.mkdir("root"));
    let image = s.dir.path().join("busybox-oci.tar");
    std::fs::copy(images.join("busybox-oci.tar"), &image).unwrap();
    let bin = crate::common::copy_of_rfs(&s.dir.path().join("rfs"));
    for p in [&mnt, &root, &image] {
        chown_tree(p, uid, gid);
    }
    let _guard = UserMount(mnt.clone());
    let rfs = format!("'{}' --root '{}'", bin.display(), root.display());
    let (m, img) = (mnt.display(), image.display());
    let (ok, out) = as_user(&format!(
        "set -e; {rfs} mount {img} {m}; \
         stat -c 'motd %u:%g %a' {m}/etc/motd; stat -c 'root %u:%g %a' {m}; \
         stat -c 'app %u:%g' {m}/home/app; \
         echo edited > {m}/etc/motd; mkdir {m}/newdir; echo n > {m}/newdir/f; \
         if echo x 2>/dev/null > {m}/home/app/x; then echo wrote-app; fi; \
         {rfs} umount {m}"
    ));
    assert!(ok, "{out}");
    for want in [
        format!("motd {uid}:{gid} 644"),
        format!("root {uid}:{gid} 755"),
        "app 65534:65534".to_string(),
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    assert!(
        !out.contains("wrote-app"),
        "uid 1000's directory is not the caller's: {out}"
    );
    let upper = out
        .lines()
        .find_map(|l| l.strip_prefix("rfs: writable layer in "))
        .unwrap_or_else(|| panic!("no upper named in:\n{out}"));
    // The commit records the image root's ownership for everything the caller wrote.
    let (ok, out) = as_user(&format!(
        "set -e; {rfs} commit --upper '{upper}' --image {img} edited:1 >/dev/null; \
         {rfs} inspect edited:1"
    ));
    assert!(ok, "{out}");
    let info: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
    let top = info[0]["RootFS"]["Layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|d| d.as_str())
        .expect("layers")
        .trim_start_matches("sha256:")
        .to_owned();
    let listing = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(root.join("blobs/sha256").join(&top))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in ["etc/motd", "newdir", "newdir/f"] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} missing from the layer:\n{listing}"));
        assert!(line.contains(" 0/0 "), "{path} not root's: {line}");
    }
    // --keep-ids shows what the image records, so the caller may not write root's files.
    let (ok, out) = as_user(&format!(
        "set -e; {rfs} mount --keep-ids {img} {m} 2>/dev/null; \
         stat -c 'motd %u:%g' {m}/etc/motd; \
         if echo x 2>/dev/null > {m}/etc/motd; then echo wrote-motd; fi; {rfs} umount {m}"
    ));
    assert!(ok, "{out}");
    assert!(out.lines().any(|l| l == "motd 0:0"), "{out}");
    assert!(!out.contains("wrote-motd"), "{out}");
    // --subids: image ids 1.. are the user's subordinate range (scripts/test.sh gives
    // rfstest 100000:65536), so uid 1000 shows as 100999.
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let start: u32 = subuid
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{USER}:")))
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .expect("a subuid range for rfstest (scripts/test.sh adds it)");
    let (ok, out) = as_user(&format!(
        "set -e; {rfs} mount --subids {img} {m} 2>/dev/null; \
         stat -c 'app %u' {m}/home/app; stat -c 'motd %u' {m}/etc/motd; {rfs} umount {m}"
    ));
    assert!(ok, "{out}");
    assert!(
        out.lines().any(|l| l == format!("app {}", start + 999)),
        "{out}"
    );
    assert!(out.lines().any(|l| l == format!("motd {uid}")), "{out}");
}

/// Issue 13: `rfs doctor` called FUSE passthrough available to a user who cannot use it (a
/// backing file needs CAP_SYS_ADMIN in the initial user namespace); `rfs info` says the
/// same thing the same way. As root both report it available on this kernel (6.9+).
#[test]
fn passthrough_is_reported_unavailable_to_a_non_root_user() {
    let (uid, gid, s) = user_and_scratch();
    let root = s.mkdir("root");
    chown_tree(&root, uid, gid);
    let bin = crate::common::copy_of_rfs(&s.dir.path().join("rfs"));
    let rfs = format!("'{}' --root '{}'", bin.display(), root.display());
    let passthrough_line = |doctor: &str| -> String {
        doctor
            .lines()
            .find(|l| l.contains("FUSE passthrough"))
            .unwrap_or_else(|| panic!("no passthrough line in:\n{doctor}"))
            .to_owned()
    };
    // doctor fails or not on the user's other checks; only the passthrough line matters.
    let (_, doctor) = as_user(&format!("{rfs} doctor"));
    let line = passthrough_line(&doctor);
    assert!(line.starts_with("MISSING"), "{doctor}");
    assert!(
        line.contains(&format!("not for uid {uid}")) && line.contains("CAP_SYS_ADMIN"),
        "{doctor}"
    );
    let (ok, info) = as_user(&format!("{rfs} info --format json"));
    assert!(ok, "{info}");
    let info: serde_json::Value = serde_json::from_str(&info).expect("info JSON");
    assert_eq!(info["features"]["fusePassthrough"]["available"], false);
    assert!(
        info["features"]["fusePassthrough"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("CAP_SYS_ADMIN in the initial user namespace")),
        "{info}"
    );
    assert_eq!(info["host"]["rootless"], true);
    assert_eq!(info["host"]["uid"], uid);
    // Root in the initial namespace gets it on this kernel.
    let out = Command::new(&bin)
        .arg("--root")
        .arg(&root)
        .arg("doctor")
        .output()
        .unwrap();
    let doctor = String::from_utf8_lossy(&out.stdout);
    let line = passthrough_line(&doctor);
    assert!(line.starts_with("ok"), "{doctor}");
    assert!(
        line.contains("root in the initial user namespace"),
        "{doctor}"
    );
}

/// Issue 13: `rfs run` named `modprobe fuse` for a /dev/fuse that only its mode kept from the
/// user. Each cause gets its own hint: a device node without a driver and a missing device
/// need the module, a mode that shuts the user out needs a chmod. Each case is made in a
/// private mount namespace (a bind mount over /dev/fuse, or a tmpfs over /dev), so the
/// host's /dev/fuse is never touched.
#[test]
fn run_names_the_fix_for_each_dev_fuse_problem() {
    let test = "run_names_the_fix_for_each_dev_fuse_problem";
    let (uid, gid, s) = user_and_scratch();
    let Some(images) = crate::common::images_dir(test) else {
        return;
    };
    let root = s.mkdir("root");
    chown_tree(&root, uid, gid);
    let bin = crate::common::copy_of_rfs(&s.dir.path().join("rfs"));
    let dir = s.dir.path().display().to_string();
    // A misc device minor no driver has (the FUSE module has 229).
    let misc = std::fs::read_to_string("/proc/misc").unwrap();
    let taken: Vec<u32> = misc
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let free = (100..180)
        .find(|m| !taken.contains(m))
        .expect("a free misc minor");
    let run = format!(
        "runuser -u {USER} -- '{}' --root '{}' run --rm '{}' true",
        bin.display(),
        root.display(),
        images.join("busybox-oci").display()
    );
    let cases = [
        (
            "mode 0600",
            format!(
                "mknod -m 600 {dir}/fuse c 10 229 && mount --bind {dir}/fuse /dev/fuse && {run}"
            ),
            &["mode 600, owner 0:0", "chmod 0666 /dev/fuse"][..],
            "modprobe",
        ),
        (
            "no driver",
            format!(
                "mknod -m 666 {dir}/nodriver c 10 {free} && \
                 mount --bind {dir}/nodriver /dev/fuse && {run}"
            ),
            &["no FUSE driver", "modprobe fuse"][..],
            "chmod",
        ),
        (
            "missing",
            format!("mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && {run}"),
            &["does not exist", "modprobe fuse", "--device /dev/fuse"][..],
            "chmod",
        ),
    ];
    for (what, script, hints, not) in cases {
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .output()
            .expect("unshare");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{what}: {err}");
        assert!(err.contains("rfs: cannot use /dev/fuse: "), "{what}: {err}");
        for hint in hints {
            assert!(err.contains(hint), "{what}: no {hint:?} in {err}");
        }
        assert!(
            !err.contains(not),
            "{what}: {not:?} is the wrong hint: {err}"
        );
    }
    let host_mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o777;
    assert_eq!(host_mode, 0o666, "the host's /dev/fuse was left as it was");
}
