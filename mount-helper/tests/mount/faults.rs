//! Crash safety, faults and escapes: a daemon killed mid copy-up or mid rename, a full upper
//! filesystem, a layer truncated after it was indexed, an upper directory swapped for a
//! symlink to `/` while mounted. Nothing partial may become visible, nothing outside the
//! layers may be touched, and the daemon must not panic.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Daemon, MountGuard, Scratch};

fn fill(path: &Path, mib: u32, seed: u8) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i % 251) as u8 ^ seed | 1)
        .collect();
    for _ in 0..mib {
        f.write_all(&chunk).unwrap();
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn sigkill_during_copy_up_leaves_no_partial_file() {
    let s = Scratch::new();
    let lower = s.mkdir("lower");
    let (upper, work, mnt) = (s.mkdir("upper"), s.mkdir("work"), s.mkdir("mnt"));
    fill(&lower.join("big"), 512, 7);
    let lower_len = std::fs::metadata(lower.join("big")).unwrap().len();
    let mut daemon = Daemon::start(&lower, &upper, &work, &mnt);
    let big = mnt.join("big");
    // The append blocks in copy-up; it fails (or never returns cleanly) when the daemon dies.
    let writer = std::thread::spawn(move || {
        let r = std::fs::OpenOptions::new().append(true).open(big);
        if let Ok(mut f) = r {
            let _ = f.write_all(b"x");
        }
    });
    let start = Instant::now();
    while entries(&work).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "copy-up never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.kill();
    writer.join().unwrap();
    // Nothing partial in the upper: the file is either absent or complete.
    if let Ok(m) = std::fs::metadata(upper.join("big")) {
        assert!(
            m.len() >= lower_len,
            "partial copy-up visible: {} bytes",
            m.len()
        );
    }
    // Remount: the work dir is cleaned, the merged file is the lower one, intact.
    let daemon2 = Daemon::start(&lower, &upper, &work, &mnt);
    assert!(
        entries(&work).is_empty(),
        "work dir leftovers: {:?}",
        entries(&work)
    );
    let mut f = std::fs::File::open(mnt.join("big")).unwrap();
    let mut first = vec![0u8; 1 << 20];
    f.read_exact(&mut first).unwrap();
    let len = std::fs::metadata(mnt.join("big")).unwrap().len();
    assert!(
        len == lower_len || len == lower_len + 1,
        "merged size {len}"
    );
    assert_eq!(
        std::fs::metadata(lower.join("big")).unwrap().len(),
        lower_len,
        "lower touched"
    );
    drop(daemon2);
}

#[test]
fn sigkill_around_a_directory_rename_is_all_or_nothing() {
    // The kill lands at a different moment each round: before, during and after the rename's
    // steps in the daemon (at 0 µs the rename has usually not reached it yet).
    for round in 0..24u64 {
        let s = Scratch::new();
        let lower = s.mkdir("lower");
        let (upper, work, mnt) = (s.mkdir("upper"), s.mkdir("work"), s.mkdir("mnt"));
        std::fs::create_dir_all(lower.join("src/sub")).unwrap();
        for i in 0..20 {
            std::fs::write(lower.join(format!("src/f{i}")), format!("{i}")).unwrap();
        }
        std::fs::write(lower.join("src/sub/deep"), "deep").unwrap();
        let mut daemon = Daemon::start(&lower, &upper, &work, &mnt);
        // Some changes in the dir first, so it is merged (upper + lower).
        std::fs::write(mnt.join("src/new"), "new").unwrap();
        std::fs::remove_file(mnt.join("src/f0")).unwrap();
        let (from, to) = (mnt.join("src"), mnt.join("dst"));
        let renamer = std::thread::spawn(move || {
            let _ = std::fs::rename(from, to);
        });
        std::thread::sleep(Duration::from_micros(50 * round));
        daemon.kill();
        renamer.join().unwrap();
        let daemon2 = Daemon::start(&lower, &upper, &work, &mnt);
        let (a, b) = (mnt.join("src"), mnt.join("dst"));
        let here = match (a.exists(), b.exists()) {
            (true, false) => a,
            (false, true) => b,
            other => panic!("round {round}: src/dst exist = {other:?}"),
        };
        let mut want: Vec<String> = (1..20).map(|i| format!("f{i}")).collect();
        want.push("new".into());
        want.push("sub".into());
        want.sort();
        assert_eq!(entries(&here), want, "round {round}: children");
        assert_eq!(
            std::fs::read_to_string(here.join("sub/deep")).unwrap(),
            "deep"
        );
        assert!(
            entries(&work).is_empty(),
            "round {round}: work dir not cleaned"
        );
        drop(daemon2);
    }
}

#[test]
fn a_full_upper_gives_enospc_and_no_partial_copy_up() {
    let s = Scratch::new();
    let lower = s.mkdir("lower");
    fill(&lower.join("big"), 24, 3);
    std::fs::write(lower.join("small"), "small\n").unwrap();
    let small_fs = s.mkdir("tmpfs");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&small_fs)
        .status()
        .unwrap();
    assert!(st.success());
    let _tmpfs = MountGuard::kernel_guard(&small_fs);
    let (upper, work) = (small_fs.join("upper"), small_fs.join("work"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let mnt = s.mkdir("mnt");
    let guard = MountGuard::rfs_dirs(&lower, &upper, &work, &mnt);
    // Copy-up of 24 MiB into 8 MiB fails with ENOSPC ...
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("big"))
        .and_then(|mut f| f.write_all(b"more"))
        .unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(nix::errno::Errno::ENOSPC as i32),
        "{err}"
    );
    // ... leaving no partial file: the merged file is still the lower one, the work dir
    // is empty, the upper has no `big`.
    assert!(!upper.join("big").exists());
    assert!(entries(&work).is_empty(), "leftovers: {:?}", entries(&work));
    assert_eq!(std::fs::metadata(mnt.join("big")).unwrap().len(), 24 << 20);
    // A plain write that fills the disk fails with ENOSPC too.
    let mut f = std::fs::File::create(mnt.join("filler")).unwrap();
    let chunk = vec![1u8; 1 << 20];
    let mut wrote = 0;
    let e = loop {
        match f.write_all(&chunk) {
            Ok(()) => wrote += 1,
            Err(e) => break e,
        }
        assert!(wrote < 64, "8 MiB tmpfs accepted 64 MiB");
    };
    assert_eq!(
        e.raw_os_error(),
        Some(nix::errno::Errno::ENOSPC as i32),
        "{e}"
    );
    drop(f);
    // Once space is freed the mount keeps working, copy-ups included.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("small"))
        .unwrap()
        .write_all(b"more\n")
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(mnt.join("small")).unwrap(),
        "small\nmore\n"
    );
    guard.unmount().unwrap();
}

#[test]
fn a_layer_truncated_after_indexing_reads_as_eio() {
    let s = Scratch::new();
    let root = s.mkdir("rootfs");
    fill(&root.join("data.bin"), 4, 9);
    std::fs::write(root.join("hello"), "hello\n").unwrap();
    let tar = s.dir.path().join("layer.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .args(["hello", "data.bin"])
        .status()
        .unwrap();
    assert!(st.success());
    let mnt = s.mkdir("mnt");
    let rfs_root = s.mkdir("rfsroot");
    let guard = MountGuard::rfs(
        &[
            "mount".as_ref(),
            "--read-only".as_ref(),
            "--root".as_ref(),
            rfs_root.as_os_str(),
            tar.as_os_str(),
        ],
        &mnt,
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(mnt.join("hello")).unwrap(),
        "hello\n"
    );
    // Cut the tar in the middle of data.bin's data.
    let len = std::fs::metadata(&tar).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tar)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = std::fs::read(mnt.join("data.bin")).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(nix::errno::Errno::EIO as i32),
        "{err}"
    );
    // The daemon is alive and still serves what is intact.
    assert_eq!(
        std::fs::read_to_string(mnt.join("hello")).unwrap(),
        "hello\n"
    );
    guard.unmount().unwrap();
}

#[test]
fn an_upper_dir_swapped_for_a_symlink_is_not_followed() {
    let s = Scratch::new();
    let lower = s.mkdir("lower");
    std::fs::create_dir(lower.join("d")).unwrap();
    std::fs::write(lower.join("d/f"), "f").unwrap();
    let (upper, work, mnt) = (s.mkdir("upper"), s.mkdir("work"), s.mkdir("mnt"));
    let outside = s.mkdir("outside");
    std::fs::write(outside.join("secret"), "host secret").unwrap();
    let guard = MountGuard::rfs_dirs(&lower, &upper, &work, &mnt);
    std::fs::write(mnt.join("d/new"), "new").unwrap();
    // Hold the merged directory open: requests through this fd reach the daemon with the
    // directory's inode, whatever now sits at its path in the upper.
    let dir = std::fs::File::open(mnt.join("d")).unwrap();
    // Behind the daemon's back: the upper dir `d` becomes a symlink to a host directory.
    std::fs::remove_dir_all(upper.join("d")).unwrap();
    std::os::unix::fs::symlink(&outside, upper.join("d")).unwrap();
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    let read = openat(&dir, "secret", OFlag::O_RDONLY, Mode::empty());
    assert!(read.is_err(), "the daemon read through the symlink");
    let created = openat(
        &dir,
        "planted",
        OFlag::O_CREAT | OFlag::O_WRONLY,
        Mode::from_bits_truncate(0o644),
    );
    assert!(
        created.is_err(),
        "the daemon created a file through the symlink"
    );
    let made = nix::sys::stat::mkdirat(&dir, "planted-dir", Mode::from_bits_truncate(0o755));
    assert!(
        made.is_err(),
        "the daemon made a directory through the symlink"
    );
    assert!(
        !outside.join("planted").exists(),
        "a write went through the symlink"
    );
    assert!(
        !outside.join("planted-dir").exists(),
        "a mkdir went through the symlink"
    );
    drop(dir);
    assert_eq!(entries(&outside), ["secret"]);
    guard.unmount().unwrap();
}

#[test]
fn a_daemon_with_256_descriptors_serves_10k_files_over_time() {
    let s = Scratch::new();
    let lower = s.mkdir("lower");
    for d in 0..10 {
        let dir = lower.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..1000 {
            std::fs::write(dir.join(format!("f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    let (upper, work, mnt) = (s.mkdir("upper"), s.mkdir("work"), s.mkdir("mnt"));
    // The daemon gets RLIMIT_NOFILE 256; `exec` keeps the pid, so the guard can kill it.
    let script = format!(
        "ulimit -n 256 && exec '{}' mount -f --lower '{}' --upper '{}' --work '{}' '{}'",
        crate::common::rfs_bin().display(),
        lower.display(),
        upper.display(),
        work.display(),
        mnt.display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon {
        child,
        mnt: mnt.clone(),
    };
    let start = std::time::Instant::now();
    while !crate::common::is_mounted(&mnt) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "never mounted"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Open every file, keeping up to 100 open at once, reading each; write to every tenth
    // (a copy-up). Leaked descriptors would hit the limit long before 10k files.
    let mut window = std::collections::VecDeque::new();
    for d in 0..10 {
        for f in 0..1000 {
            let path = mnt.join(format!("d{d}/f{f}"));
            let mut file = if f % 10 == 0 {
                std::fs::OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&path)
            } else {
                std::fs::File::open(&path)
            }
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            let mut text = String::new();
            file.read_to_string(&mut text).unwrap();
            assert_eq!(text, format!("{d}/{f}"));
            if f % 10 == 0 {
                file.write_all(b"!").unwrap();
            }
            window.push_back(file);
            if window.len() > 100 {
                window.pop_front();
            }
        }
    }
    drop(window);
    assert_eq!(
        std::fs::read_to_string(mnt.join("d9/f990")).unwrap(),
        "9/990!"
    );
    let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id()))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert!(
        fds < 64,
        "the daemon holds {fds} descriptors with no file open"
    );
    drop(daemon);
}
