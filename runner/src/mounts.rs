//! The container's mounts, made before `pivot_root` from inside the new mount namespace:
//! `/` rslave (nothing propagates back to the host), the root bound onto itself (pivot_root
//! needs a mountpoint), `/proc`, a minimal `/dev`, `/sys` read-only where the kernel allows,
//! then the bind mounts of the spec, then optionally the root read-only.
//!
//! Mount targets are resolved inside the container's root: a symlink in the image or in the
//! upper (`/etc/hosts -> /etc/shadow`) is followed as the container would see it, never into
//! the host's tree.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::statvfs::FsFlags;

use crate::spec::{BindMount, RunSpec};
use crate::syscall::Syscall;
use crate::{Error, Result};

/// Device nodes bound from the host into the container's `/dev` tmpfs: a tmpfs mounted in a
/// user namespace cannot hold usable device nodes, but bind mounts of the host's can be.
const HOST_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The links every `/dev` has (what docker and the OCI runtime spec create).
const DEV_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// Parts of `/proc` that reach the host kernel: made read-only (the OCI runtime spec's
/// default `readonlyPaths`). With an identity id mapping the container's root is the host's
/// uid 0, which sysctl files and `sysrq-trigger` check instead of a capability.
const PROC_READ_ONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];

/// Parts of `/proc` hidden behind `/dev/null` or an empty read-only tmpfs (the default
/// `maskedPaths`).
const PROC_MASKED: [&str; 8] = [
    "acpi",
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "scsi",
];

/// What a mount target must be when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A directory.
    Dir,
    /// A regular file (for binding a file).
    File,
}

/// The filesystems the container gets at these paths of its root, before the bind mounts of
/// the spec.
const ROOT_MOUNTPOINTS: [&str; 3] = ["/proc", "/dev", "/sys"];

/// Every path of the container's root that [`prepare_rootfs`] mounts on, in order, with what
/// it must be: `/proc`, `/dev`, `/sys`, then each bind mount's target (a directory for a
/// directory, else a file). [`prepare_rootfs`] creates what is missing; a caller that wants
/// them outside the container's own changes creates them first, in a layer of its own.
pub fn mountpoints(spec: &RunSpec) -> Vec<(PathBuf, TargetKind)> {
    ROOT_MOUNTPOINTS
        .iter()
        .map(|p| (PathBuf::from(p), TargetKind::Dir))
        .chain(spec.binds.iter().map(|b| (b.target.clone(), bind_kind(b))))
        .collect()
}

/// What the target of `bind` must be.
fn bind_kind(bind: &BindMount) -> TargetKind {
    if bind.source.is_dir() {
        TargetKind::Dir
    } else {
        TargetKind::File
    }
}

/// Resolves the absolute container path `path` to a host path under `root`, following
/// symlinks as the container would (an absolute target restarts at `root`, `..` stops at
/// `root`), and creates what is missing as `create` says (parents as directories).
///
/// # Errors
/// A component cannot be read or created, a non-final component is not a directory, or
/// there are more than 40 symlinks.
pub fn resolve_in_root(root: &Path, path: &Path, create: Option<TargetKind>) -> Result<PathBuf> {
    let err = |op: &'static str, source: io::Error| Error::ContainerPath {
        op,
        path: path.to_path_buf(),
        source,
    };
    let mut todo: VecDeque<OsString> = components(path);
    let mut stack: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            stack.pop();
            continue;
        }
        let here: PathBuf = root.join(stack.iter().collect::<PathBuf>()).join(&name);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(err("resolving", io::Error::from_raw_os_error(libc::ELOOP)));
                }
                let target = std::fs::read_link(&here).map_err(|e| err("readlink", e))?;
                if target.is_absolute() {
                    stack.clear();
                }
                for c in components(&target).into_iter().rev() {
                    todo.push_front(c);
                }
            }
            Ok(m) => {
                if !todo.is_empty() && !m.is_dir() {
                    return Err(err(
                        "resolving",
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ));
                }
                stack.push(name);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(kind) = create else {
                    return Err(err("resolving", e));
                };
                if todo.is_empty() && kind == TargetKind::File {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&here)
                        .map_err(|e| err("creating", e))?;
                } else {
                    std::fs::create_dir(&here).map_err(|e| err("creating", e))?;
                }
                stack.push(name);
            }
            Err(e) => return Err(err("resolving", e)),
        }
    }
    Ok(root.join(stack.iter().collect::<PathBuf>()))
}

/// The normal and `..` components of `path` (the root and `.` dropped).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Makes every mount of the container described by `spec`. Call it in the container's mount
/// namespace, before [`crate::pivot::pivot_into`].
///
/// Returns notices for the user (a fallback was taken).
///
/// # Errors
/// A required mount failed (the root bind, `/dev`, a bind mount of the spec).
pub fn prepare_rootfs(spec: &RunSpec, sys: &dyn Syscall) -> Result<Vec<String>> {
    let root = spec.rootfs.as_path();
    let mut notices = Vec::new();
    // Mount events must not propagate back to the host's namespace.
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    )
    .map_err(mount_error("make rslave", Path::new("/")))?;
    // pivot_root wants the new root to be a mountpoint; binding it onto itself makes it one.
    sys.mount(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(mount_error("bind the root", root))?;

    let [proc_path, dev_path, sys_path] = ROOT_MOUNTPOINTS.map(Path::new);
    let proc = resolve_in_root(root, proc_path, Some(TargetKind::Dir))?;
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let Err(e) = sys.mount(
        Some(Path::new("proc")),
        &proc,
        Some("proc"),
        proc_flags,
        None,
    ) {
        // The kernel refuses a new proc in a user namespace when the host's /proc has parts
        // hidden by overmounts (mount_too_revealing); the host's /proc is the fallback.
        notices.push(format!(
            "rfs: cannot mount a new /proc ({e}); the container sees the host's /proc"
        ));
        sys.mount(
            Some(Path::new("/proc")),
            &proc,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(mount_error("bind /proc", &proc))?;
    }

    restrict_proc(&proc, sys)?;
    make_dev(root, dev_path, spec, sys)?;

    let sys_dir = resolve_in_root(root, sys_path, Some(TargetKind::Dir))?;
    let ro = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY;
    // sysfs may be mounted only by the owner of the network namespace; otherwise bind the
    // host's read-only. Neither is essential, so failure only leaves /sys empty.
    let sysfs = if spec.network.is_own() {
        sys.mount(Some(Path::new("sysfs")), &sys_dir, Some("sysfs"), ro, None)
    } else {
        Err(nix::Error::EPERM)
    };
    if sysfs.is_err() {
        let bound = sys
            .mount(
                Some(Path::new("/sys")),
                &sys_dir,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .and_then(|()| remount_read_only(&sys_dir, sys));
        if let Err(e) = bound {
            log::debug!("no /sys in the container: {e}");
        }
    }

    for bind in &spec.binds {
        let target = resolve_in_root(root, &bind.target, Some(bind_kind(bind)))?;
        sys.mount(
            Some(&bind.source),
            &target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(mount_error(
            &format!("bind {}", bind.source.display()),
            &target,
        ))?;
        if bind.read_only {
            remount_read_only(&target, sys)
                .map_err(mount_error("remount read-only", &bind.target))?;
        }
    }
    if spec.read_only_rootfs {
        remount_read_only(root, sys).map_err(mount_error("remount read-only", root))?;
    }
    Ok(notices)
}

/// The error of a failed mount on `target`, for `map_err`.
fn mount_error(what: &str, target: &Path) -> impl FnOnce(nix::Error) -> Error {
    let what = what.to_string();
    let target = target.to_path_buf();
    move |source| Error::Mount {
        what,
        target,
        source,
    }
}

/// Read-only and masked parts of the container's `/proc` (see [`PROC_READ_ONLY`] and
/// [`PROC_MASKED`]); entries this kernel lacks are skipped.
fn restrict_proc(proc: &Path, sys: &dyn Syscall) -> Result<()> {
    for name in PROC_READ_ONLY {
        let path = proc.join(name);
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        sys.mount(
            Some(&path),
            &path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(mount_error("bind", &path))?;
        remount_read_only(&path, sys).map_err(mount_error("remount read-only", &path))?;
    }
    for name in PROC_MASKED {
        let path = proc.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            sys.mount(
                Some(Path::new("tmpfs")),
                &path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0"),
            )
            .map_err(mount_error("mask with tmpfs", &path))?;
        } else {
            sys.mount(
                Some(Path::new("/dev/null")),
                &path,
                None,
                MsFlags::MS_BIND,
                None,
            )
            .map_err(mount_error("mask with /dev/null", &path))?;
        }
    }
    Ok(())
}

/// Remounts the bind mount at `target` read-only, keeping the flags a user namespace may not
/// clear (nosuid, nodev, noexec of the original mount are locked).
fn remount_read_only(target: &Path, sys: &dyn Syscall) -> nix::Result<()> {
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    if let Ok(st) = nix::sys::statvfs::statvfs(target) {
        let f = st.flags();
        for (has, set) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(has) {
                flags |= set;
            }
        }
    }
    sys.mount(None, target, None, flags, None)
}

/// `/dev`: a small tmpfs with the host's harmless devices bound in, a private devpts
/// instance, `/dev/shm` and the usual links.
fn make_dev(root: &Path, dev: &Path, spec: &RunSpec, sys: &dyn Syscall) -> Result<()> {
    let dev = resolve_in_root(root, dev, Some(TargetKind::Dir))?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(mount_error("tmpfs", &dev))?;
    let io_err = |op: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| Error::ContainerPath { op, path, source }
    };
    for name in HOST_DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        std::fs::File::create(&target).map_err(io_err("creating", &target))?;
        sys.mount(Some(&host), &target, None, MsFlags::MS_BIND, None)
            .map_err(mount_error(&format!("bind {}", host.display()), &target))?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(io_err("creating", &pts))?;
    sys.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(mount_error("devpts", &pts))?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(io_err("creating", &shm))?;
    sys.mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(mount_error("tmpfs", &shm))?;
    for (name, target) in DEV_LINKS {
        let link = dev.join(name);
        std::os::unix::fs::symlink(target, &link).map_err(io_err("creating", &link))?;
    }
    if spec.tty {
        // The terminal on stdin becomes /dev/console, as in docker -t.
        let console = dev.join("console");
        std::fs::File::create(&console).map_err(io_err("creating", &console))?;
        let stdin_tty = std::fs::read_link("/proc/self/fd/0").ok();
        if let Some(tty) = stdin_tty.filter(|p| p.starts_with("/dev/pts")) {
            sys.mount(Some(&tty), &console, None, MsFlags::MS_BIND, None)
                .map_err(mount_error("bind the terminal", &console))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", root.join("etc/hosts")).unwrap();
        std::os::unix::fs::symlink("../../../../../..", root.join("up")).unwrap();
        let hosts = resolve_in_root(root, Path::new("/etc/hosts"), Some(TargetKind::File)).unwrap();
        assert_eq!(hosts, root.join("etc/shadow"));
        assert!(root.join("etc/shadow").is_file());
        let up = resolve_in_root(root, Path::new("/up/tmp/x"), Some(TargetKind::Dir)).unwrap();
        assert_eq!(up, root.join("tmp/x"));
        assert!(root.join("tmp/x").is_dir());
    }

    /// Every path of `root` but what `/dev`'s tmpfs would hold.
    fn tree(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() && p != root.join("dev") {
                    todo.push(p.clone());
                }
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
        out.sort();
        out
    }

    /// [`mountpoints`] names every path [`prepare_rootfs`] would create: where they exist
    /// already (as in an init layer), the container's root gains nothing.
    #[test]
    fn prepare_rootfs_creates_only_the_mountpoints() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        let host = t.path().join("host");
        std::fs::create_dir_all(host.join("vol")).unwrap();
        std::fs::write(host.join("hosts"), "").unwrap();
        let spec = RunSpec {
            rootfs: root.clone(),
            argv: vec!["/bin/true".into()],
            env: vec![],
            cwd: PathBuf::from("/"),
            user: String::new(),
            hostname: "box".into(),
            binds: vec![
                BindMount {
                    source: host.join("hosts"),
                    target: PathBuf::from("/etc/hosts"),
                    read_only: false,
                },
                BindMount {
                    source: host.join("vol"),
                    target: PathBuf::from("/data/vol"),
                    read_only: true,
                },
            ],
            network: crate::spec::Network::Host,
            read_only_rootfs: false,
            tty: false,
            single_id: false,
        };
        let points = mountpoints(&spec);
        assert_eq!(
            points,
            [
                (PathBuf::from("/proc"), TargetKind::Dir),
                (PathBuf::from("/dev"), TargetKind::Dir),
                (PathBuf::from("/sys"), TargetKind::Dir),
                (PathBuf::from("/etc/hosts"), TargetKind::File),
                (PathBuf::from("/data/vol"), TargetKind::Dir),
            ]
        );
        std::fs::create_dir_all(&root).unwrap();
        for (path, kind) in &points {
            resolve_in_root(&root, path, Some(*kind)).unwrap();
        }
        let before = tree(&root);
        prepare_rootfs(&spec, &crate::syscall::Recording::new()).unwrap();
        assert_eq!(tree(&root), before);
    }

    #[test]
    fn symlink_loops_are_refused() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/a", t.path().join("a")).unwrap();
        let e = resolve_in_root(t.path(), Path::new("/a/b"), None).unwrap_err();
        assert!(e.to_string().contains("/a/b"), "{e}");
    }
}
