//! Metadata-only copy-up (kernel `metacopy=on`): chmod, chown, utimes, xattrs and rename of
//! a big lower file copy no data; the upper file is sparse and marked, reads still come from
//! the lower layer, and the first write completes the copy with the metadata kept.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Instant;

use crate::common::{MountGuard, Scratch};

fn mount(s: &Scratch) -> (MountGuard, std::path::PathBuf) {
    let mnt = s.dir.path().join("mnt");
    let guard = MountGuard::rfs_dirs(
        &s.dir.path().join("lower"),
        &s.dir.path().join("upper"),
        &s.dir.path().join("work"),
        &mnt,
    );
    (guard, mnt)
}

fn xattr(path: &std::path::Path, name: &str) -> Option<String> {
    let out = Command::new("getfattr")
        .args(["--only-values", "-h", "-n", name])
        .arg(path)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn chmod_of_a_big_lower_file_copies_no_data_until_written() {
    let s = Scratch::new();
    let lower = s.mkdir("lower");
    s.mkdir("upper");
    s.mkdir("work");
    s.mkdir("mnt");
    let data: Vec<u8> = (0..(64u32 << 20)).map(|i| (i % 253) as u8 + 1).collect();
    std::fs::write(lower.join("big"), &data).unwrap();
    let (guard, mnt) = mount(&s);
    let big = mnt.join("big");
    let ino_before = std::fs::metadata(&big).unwrap().ino();
    let t = Instant::now();
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
    let chmod_time = t.elapsed();
    let upper_big = s.dir.path().join("upper/big");
    let um = std::fs::metadata(&upper_big).unwrap();
    assert_eq!(um.len(), data.len() as u64, "upper copy has the size");
    assert!(
        um.blocks() < 64,
        "upper copy holds no data: {} blocks",
        um.blocks()
    );
    assert_eq!(um.mode() & 0o7777, 0o600);
    assert!(
        xattr(&upper_big, "trusted.rfs.metacopy").is_some(),
        "marked metacopy"
    );
    let m = std::fs::metadata(&big).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.len(), m.ino()),
        (0o600, data.len() as u64, ino_before)
    );
    assert!(
        std::fs::read(&big).unwrap() == data,
        "reads come from the lower data"
    );
    // Private markers stay hidden.
    assert!(xattr(&big, "trusted.rfs.metacopy").is_none());
    eprintln!("chmod of a 64 MiB lower file took {chmod_time:?}");
    // Remount: still a metacopy, still the right data and inode.
    guard.unmount().unwrap();
    let (guard, mnt) = mount(&s);
    let big = mnt.join("big");
    assert_eq!(std::fs::metadata(&big).unwrap().ino(), ino_before);
    assert!(std::fs::read(&big).unwrap() == data);
    // The first write completes the copy and keeps the metadata.
    let mut f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    assert!(
        xattr(&upper_big, "trusted.rfs.metacopy").is_none(),
        "marker gone"
    );
    let um = std::fs::metadata(&upper_big).unwrap();
    assert!(
        um.blocks() >= (data.len() as u64) / 512,
        "data is in the upper now"
    );
    assert_eq!(um.mode() & 0o7777, 0o600);
    let got = std::fs::read(&big).unwrap();
    assert_eq!(got.len(), data.len() + 4);
    assert!(got[..data.len()] == data[..] && &got[data.len()..] == b"tail");
    assert_eq!(std::fs::metadata(&big).unwrap().ino(), ino_before);
    // The lower layer is untouched.
    assert_eq!(
        std::fs::metadata(lower.join("big")).unwrap().len(),
        data.len() as u64
    );
    guard.unmount().unwrap();
}

#[test]
fn rename_of_a_big_lower_file_is_metadata_only() {
    let s = Scratch::new();
    let lower = s.mkdir("lower");
    s.mkdir("upper");
    s.mkdir("work");
    s.mkdir("mnt");
    let data: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 241) as u8 + 1).collect();
    std::fs::write(lower.join("a"), &data).unwrap();
    std::fs::create_dir(lower.join("d")).unwrap();
    let (guard, mnt) = mount(&s);
    std::fs::rename(mnt.join("a"), mnt.join("d/b")).unwrap();
    assert!(!mnt.join("a").exists());
    assert!(std::fs::read(mnt.join("d/b")).unwrap() == data);
    let um = std::fs::metadata(s.dir.path().join("upper/d/b")).unwrap();
    assert!(
        um.blocks() < 64,
        "rename copied data: {} blocks",
        um.blocks()
    );
    guard.unmount().unwrap();
}

#[test]
fn commit_of_a_metadata_only_copy_carries_the_data() {
    let Some(images) = crate::common::images_dir("commit_of_a_metadata_only_copy_carries_the_data")
    else {
        return;
    };
    let image = images.join("busybox-oci");
    let s = Scratch::new();
    let (root, upper, work, mnt, mnt2) = (
        s.mkdir("root"),
        s.mkdir("upper"),
        s.mkdir("work"),
        s.mkdir("mnt"),
        s.mkdir("mnt2"),
    );
    let rfs = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(crate::common::rfs_bin())
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rfs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let guard = MountGuard::rfs(
        &[
            "--root".as_ref(),
            root.as_os_str(),
            "mount".as_ref(),
            "--upper".as_ref(),
            upper.as_os_str(),
            "--work".as_ref(),
            work.as_os_str(),
            image.as_os_str(),
        ],
        &mnt,
    )
    .unwrap();
    let bin = "opt/data/random-3MiB.bin";
    let want = std::fs::read(mnt.join(bin)).unwrap();
    std::fs::set_permissions(mnt.join(bin), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(
        xattr(&upper.join(bin), "trusted.rfs.metacopy").is_some(),
        "chmod made a metadata-only copy"
    );
    guard.unmount().unwrap();
    rfs(&[
        "commit".as_ref(),
        "--upper".as_ref(),
        upper.as_os_str(),
        "--image".as_ref(),
        image.as_os_str(),
        "rfs/metacopy:1".as_ref(),
    ]);
    let guard = MountGuard::rfs(
        &[
            "--root".as_ref(),
            root.as_os_str(),
            "mount".as_ref(),
            "--read-only".as_ref(),
            "rfs/metacopy:1".as_ref(),
        ],
        &mnt2,
    )
    .unwrap();
    let m = std::fs::metadata(mnt2.join(bin)).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert!(
        std::fs::read(mnt2.join(bin)).unwrap() == want,
        "committed data differs"
    );
    guard.unmount().unwrap();
}
