//! What this host offers rfs: the FUSE device, FUSE passthrough, FUSE over io_uring, user
//! namespaces and kernel overlayfs, each probed for the user running rfs. `rfs doctor`
//! judges these facts, `rfs info` reports them, and `rfs run` refuses early with the hint
//! that fits the cause.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// What opening `/dev/fuse` read-write, as this user, says.
pub(crate) enum FuseDevice {
    /// It opens.
    Usable { mode: u32 },
    /// There is no `/dev/fuse`.
    Missing,
    /// The node exists but no driver answers it (ENODEV, ENXIO): the module is not loaded.
    NoDriver { error: io::Error },
    /// The node's mode or owner keeps this user out (EACCES).
    NoPermission {
        mode: u32,
        owner: u32,
        group: u32,
        error: io::Error,
    },
    /// Something other than the mode refuses it (EPERM: a device cgroup, a security
    /// module), or another error.
    Refused { error: io::Error },
}

/// Where the FUSE device is; one place, so every message names the same path.
pub(crate) const FUSE_DEVICE: &str = "/dev/fuse";

impl FuseDevice {
    /// Opens `/dev/fuse` read-write (and closes it again).
    pub(crate) fn probe() -> FuseDevice {
        let open = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(FUSE_DEVICE);
        let meta = std::fs::metadata(FUSE_DEVICE);
        match (open, meta) {
            (Ok(_), Ok(m)) => FuseDevice::Usable {
                mode: m.permissions().mode() & 0o7777,
            },
            (Ok(_), Err(error)) => FuseDevice::Refused { error },
            (Err(e), _) if e.kind() == io::ErrorKind::NotFound => FuseDevice::Missing,
            (Err(error), _) if matches!(error.raw_os_error(), Some(libc::ENODEV | libc::ENXIO)) => {
                FuseDevice::NoDriver { error }
            }
            (Err(error), Ok(m))
                if error.raw_os_error() == Some(libc::EACCES) && !mode_lets_me_in(&m) =>
            {
                FuseDevice::NoPermission {
                    mode: m.permissions().mode() & 0o7777,
                    owner: m.uid(),
                    group: m.gid(),
                    error,
                }
            }
            (Err(error), _) => FuseDevice::Refused { error },
        }
    }

    /// Whether FUSE mounts can be made.
    pub(crate) fn is_usable(&self) -> bool {
        matches!(self, FuseDevice::Usable { .. })
    }

    /// What was found, in a few words.
    pub(crate) fn detail(&self) -> String {
        let uid = nix::unistd::geteuid();
        match self {
            FuseDevice::Usable { mode } => format!("usable, mode {mode:o}"),
            FuseDevice::Missing => "it does not exist".into(),
            FuseDevice::NoDriver { error } => format!("no FUSE driver behind it: {error}"),
            FuseDevice::NoPermission {
                mode,
                owner,
                group,
                error,
            } => {
                format!("mode {mode:o}, owner {owner}:{group}: uid {uid} may not open it ({error})")
            }
            FuseDevice::Refused { error } => format!("uid {uid} may not open it: {error}"),
        }
    }

    /// What to do about it, for the cause found; `None` when it is usable.
    pub(crate) fn remedy(&self) -> Option<&'static str> {
        Some(match self {
            FuseDevice::Usable { .. } => return None,
            FuseDevice::Missing => {
                "load the FUSE module as root (`modprobe fuse`; apt-get install fuse3 for the \
                 tools), or, inside a container, pass the device in (`--device /dev/fuse`)"
            }
            FuseDevice::NoDriver { .. } => "load the FUSE module as root: `modprobe fuse`",
            FuseDevice::NoPermission { .. } => {
                "make it usable by every user as root: `chmod 0666 /dev/fuse`, the mode \
                 distributions ship (each user's FUSE mounts stay private to that user); \
                 a udev rule keeps it across reboots"
            }
            FuseDevice::Refused { .. } => {
                "its mode allows it, so a device cgroup or a security module (AppArmor, \
                 SELinux) refuses it: inside a container, allow the device (`--device \
                 /dev/fuse`); otherwise check the audit log"
            }
        })
    }
}

/// Whether `meta`'s owner, group and mode give this process read and write access (as the
/// kernel checks them: the owner's bits for the owner, else the group's for a member, else
/// the others').
fn mode_lets_me_in(meta: &std::fs::Metadata) -> bool {
    let mode = meta.permissions().mode();
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        return true;
    }
    let in_group = nix::unistd::getegid().as_raw() == meta.gid()
        || nix::unistd::getgroups()
            .is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == meta.gid()));
    let bits = if uid == meta.uid() {
        mode >> 6
    } else if in_group {
        mode >> 3
    } else {
        mode
    };
    bits & 0o6 == 0o6
}

/// A kernel feature rfs can use, and whether it can for this user.
pub(crate) struct Feature {
    /// rfs uses it (or could, for the `io_uring` transport) as this user on this kernel.
    pub(crate) available: bool,
    /// What was found, and why it is not available if it is not.
    pub(crate) detail: String,
}

/// The running kernel's release string (`6.18.0-1-amd64`).
pub(crate) fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = kernel_release();
    let mut it = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

/// FUSE passthrough: the kernel reads and writes host-backed files itself (kernel 6.9 and
/// later). Registering a backing file needs `CAP_SYS_ADMIN` in the initial user namespace,
/// so `rfs mount` uses it only as root there (`rfs_fs::sys::is_initial_root`); for anyone
/// else every read and write goes through the daemon.
pub(crate) fn passthrough() -> Feature {
    let release = kernel_release();
    if !kernel_at_least(6, 9) {
        return Feature {
            available: false,
            detail: format!("kernel {release} is older than 6.9"),
        };
    }
    if !rfs_fs::sys::is_initial_root() {
        return Feature {
            available: false,
            detail: format!(
                "not for uid {}: it needs CAP_SYS_ADMIN in the initial user namespace, which \
                 only root has (kernel {release} has it)",
                nix::unistd::geteuid()
            ),
        };
    }
    Feature {
        available: true,
        detail: format!("kernel {release}, root in the initial user namespace"),
    }
}

/// Where the kernel's switch for FUSE over io_uring is (kernel 6.14 and later, with
/// `CONFIG_FUSE_IO_URING`).
const FUSE_URING_SWITCH: &str = "/sys/module/fuse/parameters/enable_uring";

/// FUSE over io_uring: whether this kernel has it and whether it is switched on. rfs itself
/// serves requests through `/dev/fuse` (fuser 0.18 does not speak the rings), so this says
/// what the kernel offers, not what rfs uses.
pub(crate) fn fuse_io_uring() -> Feature {
    match std::fs::read_to_string(FUSE_URING_SWITCH) {
        Ok(v) if v.trim() == "Y" => Feature {
            available: true,
            detail: format!("switched on ({FUSE_URING_SWITCH} = Y); rfs serves /dev/fuse"),
        },
        Ok(v) => Feature {
            available: false,
            detail: format!(
                "in the kernel, switched off ({FUSE_URING_SWITCH} = {}); rfs serves /dev/fuse",
                v.trim()
            ),
        },
        Err(_) => Feature {
            available: false,
            detail: format!(
                "not in this kernel ({} has no {FUSE_URING_SWITCH}); rfs serves /dev/fuse",
                kernel_release()
            ),
        },
    }
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether unprivileged users may create user namespaces (rootless `rfs run`).
pub(crate) fn user_namespaces() -> Feature {
    let max = read_trim("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    let clone = read_trim("/proc/sys/kernel/unprivileged_userns_clone");
    Feature {
        available: max.parse::<u64>().unwrap_or(0) > 0 && clone.as_deref() != Some("0"),
        detail: format!(
            "max_user_namespaces={max}{}",
            clone
                .map(|c| format!(", unprivileged_userns_clone={c}"))
                .unwrap_or_default()
        ),
    }
}

/// Whether the kernel has overlayfs loaded (the differential tests' oracle).
pub(crate) fn kernel_overlay() -> Feature {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let available = fs.lines().any(|l| l.trim_end().ends_with("overlay"));
    Feature {
        available,
        detail: if available {
            "available".into()
        } else {
            "not loaded".into()
        },
    }
}
