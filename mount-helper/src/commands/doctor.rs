//! `rfs doctor`: checks what rfs needs on this host and says what each missing piece costs
//! and how to get it. Exit status 0 when everything rfs needs for rootless use is there, 1
//! otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

/// One check's outcome.
struct Check {
    what: &'static str,
    /// Without it rfs is only slower or less testable: a miss does not fail `doctor`.
    optional: bool,
    ok: bool,
    detail: String,
    /// What is lost without it, and what to do.
    otherwise: &'static str,
}

fn dev_fuse() -> Check {
    let meta = std::fs::metadata("/dev/fuse");
    let open = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse");
    let (ok, detail) = match (&meta, &open) {
        (Err(e), _) => (false, format!("missing: {e}")),
        (Ok(m), Ok(_)) => (
            true,
            format!("usable, mode {:o}", m.permissions().mode() & 0o777),
        ),
        (Ok(m), Err(e)) => (
            false,
            format!(
                "mode {:o}, not usable by uid {}: {e}",
                m.permissions().mode() & 0o777,
                nix::unistd::geteuid()
            ),
        ),
    };
    Check {
        what: "/dev/fuse",
        optional: false,
        ok,
        detail,
        otherwise: "no mounts at all: install fuse3 and run `chmod 0666 /dev/fuse` (distributions ship it 0666)",
    }
}

fn fusermount() -> Check {
    let path = ["/usr/bin/fusermount3", "/bin/fusermount3"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let (ok, detail) = match path {
        Some(p) => {
            let mode = std::fs::metadata(p)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o4000 != 0 {
                (true, format!("{p} (setuid)"))
            } else {
                (false, format!("{p} is not setuid"))
            }
        }
        None => (false, "not found".into()),
    };
    Check {
        what: "fusermount3",
        optional: false,
        ok,
        detail,
        otherwise: "non-root users cannot mount: apt-get install fuse3",
    }
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn user_namespaces() -> Check {
    let max = read_trim("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    let clone = read_trim("/proc/sys/kernel/unprivileged_userns_clone");
    let ok = max.parse::<u64>().unwrap_or(0) > 0 && clone.as_deref() != Some("0");
    Check {
        what: "user namespaces",
        optional: false,
        ok,
        detail: format!(
            "max_user_namespaces={max}{}",
            clone
                .map(|c| format!(", unprivileged_userns_clone={c}"))
                .unwrap_or_default()
        ),
        otherwise: "rootless `rfs run` cannot start containers: sysctl user.max_user_namespaces=15000",
    }
}

fn subids() -> Check {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let has = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(':').next() == Some(user.as_str()))
    };
    let maps = Path::new("/usr/bin/newuidmap").exists() && Path::new("/usr/bin/newgidmap").exists();
    let ranges = has("/etc/subuid") && has("/etc/subgid");
    Check {
        what: "subordinate ids",
        optional: false,
        ok: nix::unistd::geteuid().is_root() || (maps && ranges),
        detail: format!(
            "newuidmap/newgidmap {}, /etc/subuid and /etc/subgid ranges for {user:?} {}",
            if maps { "present" } else { "missing" },
            if ranges { "present" } else { "missing" }
        ),
        otherwise: "rootless containers see only one id (image users such as uid 1000 are squashed to 0): \
                    apt-get install uidmap and add `USER:100000:65536` to /etc/subuid and /etc/subgid",
    }
}

fn kernel_overlay() -> Check {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let ok = fs.lines().any(|l| l.trim_end().ends_with("overlay"));
    Check {
        what: "kernel overlayfs",
        optional: true,
        ok,
        detail: if ok {
            "available".into()
        } else {
            "not loaded".into()
        },
        otherwise: "only the differential tests need it (modprobe overlay); rfs itself does not",
    }
}

fn passthrough() -> Check {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut it = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    let ok = (major, minor) >= (6, 9);
    Check {
        what: "FUSE passthrough (kernel >= 6.9)",
        optional: true,
        ok,
        detail: format!("kernel {release}"),
        otherwise: "every read goes through the daemon; with it, and as root, the kernel reads \
                    host files of 128 KiB or more itself",
    }
}

/// The guest `haltpoll` idle driver with `guest_halt_poll_ns` 0 halts an idle virtual CPU at
/// once, so both wakeups of every FUSE round trip go through the hypervisor.
fn idle_polling() -> Check {
    let driver = read_trim("/sys/devices/system/cpu/cpuidle/current_driver").unwrap_or_default();
    let poll_ns = read_trim("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
    let (ok, detail) = match (driver.as_str(), poll_ns) {
        ("haltpoll", Some(ns)) => (ns != "0", format!("haltpoll, guest_halt_poll_ns {ns}")),
        ("", _) => (true, "no cpuidle driver".into()),
        (d, _) => (true, format!("{d} (not a haltpoll guest)")),
    };
    Check {
        what: "idle vCPUs poll before halting",
        optional: true,
        ok,
        detail,
        otherwise: "each FUSE request wakes a halted virtual CPU through the hypervisor (on the \
                    benchmark VM 23 µs a request instead of 11): as root, echo 200000 > \
                    /sys/module/haltpoll/parameters/guest_halt_poll_ns (the kernel's default)",
    }
}

fn user_xattrs(root: &Path) -> Check {
    let probe = root.join(".rfs-doctor-xattr");
    let ok = std::fs::write(&probe, b"").is_ok()
        && std::process::Command::new("setfattr")
            .args(["-n", "user.rfs.doctor", "-v", "1"])
            .arg(&probe)
            .output()
            .is_ok_and(|o| o.status.success());
    let _ = std::fs::remove_file(&probe);
    Check {
        what: "user xattrs under the root directory",
        optional: false,
        ok,
        detail: root.display().to_string(),
        otherwise: "rootless uppers cannot record opaque dirs or ownership: put RFS_ROOT on ext4/xfs/btrfs \
                    (needs setfattr from the attr package for this check)",
    }
}

/// Runs the checks and prints one line per check.
pub(crate) fn run(root: &Path) -> Result<ExitCode> {
    let checks = [
        dev_fuse(),
        fusermount(),
        user_namespaces(),
        subids(),
        user_xattrs(root),
        kernel_overlay(),
        passthrough(),
        idle_polling(),
    ];
    let mut all_ok = true;
    for c in &checks {
        let mark = if c.ok { "ok  " } else { "MISSING" };
        println!("{mark:8} {:36} {}", c.what, c.detail);
        if !c.ok {
            println!("         -> {}", c.otherwise);
        }
        if !c.ok && !c.optional {
            all_ok = false;
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
