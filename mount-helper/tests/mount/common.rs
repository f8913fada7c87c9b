//! Shared helpers: the `rfs` binary, a `MountGuard` that always unmounts, preconditions.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The built `rfs` binary.
pub fn rfs_bin() -> PathBuf {
    privileged();
    PathBuf::from(env!("CARGO_BIN_EXE_rfs"))
}

/// Runs `rfs` with `args`, returning its output.
pub fn rfs(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(rfs_bin())
        .args(args)
        .output()
        .expect("running the rfs binary")
}

/// The precondition of this whole binary: root and `/dev/fuse` (kernel overlayfs is the
/// oracle, and tests mount, chown and use trusted xattrs). Every fixture that starts `rfs` or
/// makes a scratch dir checks it first, so no test carries its own check. Without the
/// privileges a test fails with the reason; with `RFS_SKIP_PRIVILEGED=1` the binary prints that
/// it skips and exits 0 before any test has started a mount.
pub fn privileged() {
    static MISSING: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    let missing = *MISSING.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            Some("not running as root")
        } else if !Path::new("/dev/fuse").exists() {
            Some("/dev/fuse is missing")
        } else {
            None
        }
    });
    let Some(why) = missing else { return };
    if std::env::var_os("RFS_SKIP_PRIVILEGED").is_some_and(|v| v == "1") {
        // Straight to fd 2: the harness captures `eprintln!` of a test thread.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED every mount test: {why} (RFS_SKIP_PRIVILEGED=1)"
        );
        std::process::exit(0);
    }
    panic!("{why}: the mount tests need root and /dev/fuse (RFS_SKIP_PRIVILEGED=1 skips them)");
}

/// Whether `path` is a mountpoint now.
pub fn is_mounted(path: &Path) -> bool {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let want = canon.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// A mounted filesystem that is unmounted on drop, also when the test panics:
/// `fusermount3 -u` (or `umount` for kernel mounts), then `umount -l`.
pub struct MountGuard {
    pub mountpoint: PathBuf,
    kernel: bool,
}

impl MountGuard {
    /// Mounts with `rfs mount ARGS... MOUNTPOINT` (daemon mode) and waits until it is ready.
    pub fn rfs(args: &[&std::ffi::OsStr], mountpoint: &Path) -> Result<MountGuard, String> {
        let mut all: Vec<&std::ffi::OsStr> = args.to_vec();
        all.push(mountpoint.as_os_str());
        let out = rfs(&all);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let guard = MountGuard {
            mountpoint: mountpoint.to_path_buf(),
            kernel: false,
        };
        let start = Instant::now();
        while !is_mounted(mountpoint) {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("rfs mount returned but nothing is mounted".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(guard)
    }

    /// `rfs mount --lower LOWER --upper UPPER --work WORK MOUNTPOINT`, ready when it returns.
    ///
    /// # Panics
    /// If the mount fails (with rfs's message).
    pub fn rfs_dirs(lower: &Path, upper: &Path, work: &Path, mountpoint: &Path) -> MountGuard {
        MountGuard::rfs_dirs_with(lower, upper, work, mountpoint, &[])
    }

    /// [`MountGuard::rfs_dirs`] with more options (`--no-passthrough`, ...).
    ///
    /// # Panics
    /// If the mount fails (with rfs's message).
    pub fn rfs_dirs_with(
        lower: &Path,
        upper: &Path,
        work: &Path,
        mountpoint: &Path,
        extra: &[&str],
    ) -> MountGuard {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "mount".as_ref(),
            "--lower".as_ref(),
            lower.as_os_str(),
            "--upper".as_ref(),
            upper.as_os_str(),
            "--work".as_ref(),
            work.as_os_str(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        MountGuard::rfs(&args, mountpoint).unwrap_or_else(|e| panic!("rfs mount: {e}"))
    }

    /// Mounts kernel overlayfs with `options` (`lowerdir=...,upperdir=...,workdir=...`).
    pub fn overlay(options: &str, mountpoint: &Path) -> Result<MountGuard, String> {
        privileged();
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", options])
            .arg(mountpoint)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(MountGuard {
            mountpoint: mountpoint.to_path_buf(),
            kernel: true,
        })
    }

    /// Takes charge of an rfs (FUSE) mount made elsewhere: unmounted on drop.
    pub fn fuse_guard(mountpoint: &Path) -> MountGuard {
        MountGuard {
            mountpoint: mountpoint.to_path_buf(),
            kernel: false,
        }
    }

    /// Takes charge of a kernel mount made elsewhere (tmpfs, ...): unmounted on drop.
    pub fn kernel_guard(mountpoint: &Path) -> MountGuard {
        MountGuard {
            mountpoint: mountpoint.to_path_buf(),
            kernel: true,
        }
    }

    /// Unmounts now, reporting failure (Drop only tries).
    pub fn unmount(mut self) -> Result<(), String> {
        let r = self.do_unmount();
        self.mountpoint = PathBuf::new();
        r
    }

    fn do_unmount(&mut self) -> Result<(), String> {
        if self.mountpoint.as_os_str().is_empty() {
            return Ok(());
        }
        // A mount is briefly busy while a concurrent test's mount namespace (a container of
        // the runner tests) still holds a propagated copy: retry a few times.
        let mut first_ok = false;
        for attempt in 0..10u64 {
            let st = if self.kernel {
                Command::new("umount")
                    .arg(&self.mountpoint)
                    .stderr(Stdio::null())
                    .status()
            } else {
                Command::new("fusermount3")
                    .arg("-u")
                    .arg(&self.mountpoint)
                    .stderr(Stdio::null())
                    .status()
            };
            if st.is_ok_and(|s| s.success()) {
                first_ok = true;
                break;
            }
            if !is_mounted(&self.mountpoint) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50 * (attempt + 1)));
        }
        if first_ok {
            // Wait for the daemon to notice, so its upper is quiet.
            let start = Instant::now();
            while is_mounted(&self.mountpoint) && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
            return Ok(());
        }
        let lazy = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        match lazy {
            Ok(s) if s.success() => Err(format!("{}: needed umount -l", self.mountpoint.display())),
            _ => Err(format!("{}: could not unmount", self.mountpoint.display())),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = self.do_unmount() {
            eprintln!("MountGuard: {e}");
        }
    }
}

/// A temporary directory tree for one test: lower dirs, upper, work, mountpoint.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh scratch dir under `$RFS_TEST_TMP` or the system temp dir.
    pub fn new() -> Scratch {
        privileged();
        let base = std::env::var_os("RFS_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).unwrap();
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("rfs-test-")
                .tempdir_in(base)
                .unwrap(),
        }
    }

    /// `self/name`, created as a directory.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

/// A foreground `rfs mount -f` whose pid we know, so the test can SIGKILL it. On drop the
/// daemon is killed (if alive) and the mount removed.
pub struct Daemon {
    pub child: Child,
    pub mnt: PathBuf,
}

impl Daemon {
    pub fn start(lower: &Path, upper: &Path, work: &Path, mnt: &Path) -> Daemon {
        let mut cmd = Command::new(rfs_bin());
        cmd.arg("mount")
            .arg("-f")
            .arg("--lower")
            .arg(lower)
            .arg("--upper")
            .arg(upper)
            .arg("--work")
            .arg(work)
            .arg(mnt)
            .stderr(Stdio::null());
        Daemon::spawn(cmd, mnt)
    }

    /// Starts `cmd` (an `rfs ... mount -f ... MNT`, stderr set up by the caller) and waits
    /// until `mnt` is mounted.
    pub fn spawn(mut cmd: Command, mnt: &Path) -> Daemon {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            mnt: mnt.to_path_buf(),
        };
        let start = Instant::now();
        while !is_mounted(mnt) {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("rfs mount -f exited with {status} before mounting");
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "rfs mount -f never mounted"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// SIGKILL, then clear the dead mount (the kernel keeps it until unmounted).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status();
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the test images of `../shared/scripts/make-test-images.sh` are (`$RFS_IMAGES`, else
/// `/tmp/rfs-images`). Missing images fail the test with a hint, unless
/// `RFS_SKIP_IMAGE_TESTS=1`, when the test prints that it skipped and this returns `None`.
pub fn images_dir(test: &str) -> Option<PathBuf> {
    privileged();
    let dir = std::env::var_os("RFS_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/rfs-images"));
    if dir.join("SIZES.txt").exists() {
        return Some(dir);
    }
    if std::env::var_os("RFS_SKIP_IMAGE_TESTS").is_some_and(|v| v == "1") {
        eprintln!(
            "SKIPPED {test}: no test images in {} (RFS_SKIP_IMAGE_TESTS=1)",
            dir.display()
        );
        return None;
    }
    panic!(
        "{test}: no test images in {}; build them with `bash ../shared/scripts/make-test-images.sh` \
         (or set RFS_SKIP_IMAGE_TESTS=1)",
        dir.display()
    );
}

/// A copy of the rfs binary at `dest` (an unprivileged user or podman runs it from there),
/// written by `cp`, not by this process: a file this multi-threaded test process has open
/// for writing is inherited by every child another test forks meanwhile, and exec of it
/// then fails with ETXTBSY until that child execs.
pub fn copy_of_rfs(dest: &Path) -> PathBuf {
    let st = Command::new("cp")
        .arg(rfs_bin())
        .arg(dest)
        .status()
        .expect("cp");
    assert!(
        st.success(),
        "cp {} {}",
        rfs_bin().display(),
        dest.display()
    );
    dest.to_path_buf()
}

/// The rows of a table rfs prints (`rfs images`, `rfs mounts`, ...): columns are separated
/// by runs of three or more spaces.
pub fn table_rows(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect()
}

/// Unpacks the busybox image's flat export (`busybox-podman-export.tar` of the test images)
/// into `dest`, keeping owners and modes.
pub fn unpack_busybox_export(images: &Path, dest: &Path) {
    let st = Command::new("tar")
        .arg("-xpf")
        .arg(images.join("busybox-podman-export.tar"))
        .arg("-C")
        .arg(dest)
        .status()
        .expect("tar");
    assert!(
        st.success(),
        "unpacking the busybox export into {}",
        dest.display()
    );
}
