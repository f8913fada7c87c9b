//! How file data moves: FUSE passthrough (as root the kernel reads host files itself) and
//! the set-id bits the daemon clears on write, truncate and chown (`HANDLE_KILLPRIV_V2`),
//! checked against kernel overlayfs.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::common::{MountGuard, Scratch};
use crate::rootless::{USER, as_user, user_ids};

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn mount_dirs(s: &Scratch, lower: &Path, extra: &[&str]) -> MountGuard {
    let (upper, work, mnt) = (s.mkdir("upper"), s.mkdir("work"), s.mkdir("mnt"));
    MountGuard::rfs_dirs_with(lower, &upper, &work, &mnt, extra)
}

#[test]
fn passthrough_serves_lower_and_upper_files_and_refuses_only_a_writer_beside_lower_readers() {
    let s = Scratch::new();
    let lower = s.mkdir("lower");
    fs::write(lower.join("a"), "lower-a").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(lower.join("big"), &big).unwrap();
    let m = mount_dirs(&s, &lower, &[]);
    let mnt = m.mountpoint.clone();

    assert_eq!(read(&mnt.join("a")), "lower-a");
    assert_eq!(fs::read(mnt.join("big")).unwrap(), big);
    let cmp = Command::new("cmp")
        .arg(mnt.join("big"))
        .arg(lower.join("big"))
        .status()
        .unwrap();
    assert!(
        cmp.success(),
        "cmp of a passthrough file against its lower file"
    );

    // A reader of a big lower file (passthrough from 128 KiB) holds the kernel on that
    // backing file: a writer, which needs a copy-up onto another file, is refused (the
    // documented limit) ...
    let mut reader = File::open(mnt.join("big")).unwrap();
    let err = OpenOptions::new()
        .append(true)
        .open(mnt.join("big"))
        .expect_err("a writer beside a passthrough reader of the lower file");
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    let mut data = Vec::new();
    reader.read_to_end(&mut data).unwrap();
    assert_eq!(data, big, "the reader is unaffected");
    drop(reader);
    // ... and allowed once the reader is gone; readers then see the copied-up file.
    let mut w = OpenOptions::new()
        .append(true)
        .open(mnt.join("big"))
        .unwrap();
    w.write_all(b"+up").unwrap();
    drop(w);
    let mut grown = big.clone();
    grown.extend_from_slice(b"+up");
    assert_eq!(fs::read(mnt.join("big")).unwrap(), grown);
    assert_eq!(fs::read(s.dir.path().join("upper/big")).unwrap(), grown);

    // Small files are read through the daemon: no such limit for them.
    let reader = File::open(mnt.join("a")).unwrap();
    let mut w = OpenOptions::new()
        .append(true)
        .open(mnt.join("a"))
        .expect("a writer beside a reader of a small lower file");
    w.write_all(b"+up").unwrap();
    drop((reader, w));
    assert_eq!(read(&mnt.join("a")), "lower-a+up");

    // Upper files: readers beside a writer (both served by the daemon while the writer is
    // open), then, once that is closed, a passthrough reader and a passthrough writer on
    // the same (big enough) upper file.
    let one = vec![b'1'; 200_000];
    let mut w = File::create(mnt.join("u")).unwrap();
    w.write_all(&one).unwrap();
    let r = File::open(mnt.join("u")).expect("reader beside an open writer");
    w.write_all(b"two").unwrap();
    let mut data = Vec::new();
    (&r).read_to_end(&mut data).unwrap();
    assert_eq!(data.len(), 200_003);
    assert!(data.ends_with(b"1two"));
    drop((w, r));
    let r = File::open(mnt.join("u")).unwrap();
    let mut w = OpenOptions::new().append(true).open(mnt.join("u")).unwrap();
    w.write_all(b"three").unwrap();
    drop(w);
    let mut data = Vec::new();
    (&r).read_to_end(&mut data).unwrap();
    assert!(
        data.ends_with(b"1twothree"),
        "the reader sees the writer's data"
    );
    assert_eq!(fs::metadata(mnt.join("u")).unwrap().len(), 200_008);
    drop(r);
    m.unmount().unwrap();

    // Without passthrough the same writer beside a reader of the big file is allowed.
    let s2 = Scratch::new();
    let m = mount_dirs(&s2, &lower, &["--no-passthrough"]);
    let reader = File::open(m.mountpoint.join("big")).unwrap();
    let mut w = OpenOptions::new()
        .append(true)
        .open(m.mountpoint.join("big"))
        .expect("--no-passthrough allows a writer beside a reader");
    w.write_all(b"!").unwrap();
    drop((reader, w));
    assert_eq!(
        fs::metadata(m.mountpoint.join("big")).unwrap().len(),
        3_000_001
    );
    m.unmount().unwrap();
}

/// Modes after writes, truncates and chowns by root and by a user without `CAP_FSETID`.
fn setid_outcomes(mnt: &Path) -> Vec<(String, u32)> {
    let q = |n: &str| mnt.join(n).display().to_string();
    let steps: [(&str, bool, String); 6] = [
        (
            "user-write",
            false,
            format!("echo x >> '{}'", q("user-write")),
        ),
        (
            "root-write",
            true,
            format!("echo x >> '{}'", q("root-write")),
        ),
        (
            "user-trunc",
            false,
            format!("truncate -s 1 '{}'", q("user-trunc")),
        ),
        (
            "root-trunc",
            true,
            format!("truncate -s 1 '{}'", q("root-trunc")),
        ),
        (
            "root-chown",
            true,
            format!("chown {USER} '{}'", q("root-chown")),
        ),
        (
            "sgid-noexec",
            false,
            format!("echo x >> '{}'", q("sgid-noexec")),
        ),
    ];
    let mut out = Vec::new();
    for (name, as_root, script) in steps {
        let ok = if as_root {
            Command::new("sh")
                .args(["-c", &script])
                .status()
                .unwrap()
                .success()
        } else {
            as_user(&script).0
        };
        assert!(ok, "{script}");
        let mode = fs::metadata(mnt.join(name)).unwrap().mode() & 0o7777;
        out.push((name.to_string(), mode));
    }
    out
}

#[test]
fn set_id_bits_are_cleared_on_write_truncate_and_chown_as_kernel_overlayfs_does() {
    let Some((uid, gid)) = user_ids() else {
        panic!("user {USER} is missing: scripts/test.sh creates it (useradd -m {USER})");
    };
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let lower = s.mkdir("lower");
    for name in [
        "user-write",
        "root-write",
        "user-trunc",
        "root-trunc",
        "root-chown",
    ] {
        let p = lower.join(name);
        fs::write(&p, "data").unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o6775)).unwrap();
    }
    let p = lower.join("sgid-noexec");
    fs::write(&p, "data").unwrap();
    std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o2664)).unwrap();

    let m = mount_dirs(&s, &lower, &[]);
    let rfs_modes = setid_outcomes(&m.mountpoint);
    m.unmount().unwrap();

    let (ku, kw, kmnt) = (s.mkdir("kupper"), s.mkdir("kwork"), s.mkdir("kmnt"));
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        ku.display(),
        kw.display()
    );
    let k = MountGuard::overlay(&opts, &kmnt).unwrap_or_else(|e| panic!("overlay: {e}"));
    let kernel_modes = setid_outcomes(&kmnt);
    k.unmount().unwrap();

    assert_eq!(
        rfs_modes, kernel_modes,
        "set-id bits after each change (rfs vs kernel)"
    );
    // And the expectations themselves, so a kernel change cannot hide a regression.
    let find = |n: &str| rfs_modes.iter().find(|(m, _)| m == n).unwrap().1;
    assert_eq!(find("user-write") & 0o6000, 0);
    assert_eq!(find("root-write") & 0o6000, 0o6000);
    assert_eq!(find("user-trunc") & 0o6000, 0);
    assert_eq!(find("root-trunc") & 0o6000, 0o6000);
    assert_eq!(find("root-chown") & 0o6000, 0);
}
