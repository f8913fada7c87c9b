//! `rfs doctor`: checks what rfs needs on this host and says what each missing piece costs
//! and how to get it. Exit status 0 when everything rfs needs for rootless use is there, 1
//! otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::host;

/// One check's outcome.
struct Check {
    what: &'static str,
    /// Without it rfs is only slower or less testable: a miss does not fail `doctor`.
    optional: bool,
    ok: bool,
    detail: String,
    /// What is lost without it, and what to do.
    otherwise: String,
}

fn dev_fuse() -> Check {
    let device = host::FuseDevice::probe();
    Check {
        what: host::FUSE_DEVICE,
        optional: false,
        ok: device.is_usable(),
        detail: device.detail(),
        otherwise: format!("no mounts at all: {}", device.remedy().unwrap_or_default()),
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
        otherwise: "non-root users cannot mount: apt-get install fuse3".into(),
    }
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn user_namespaces() -> Check {
    let userns = host::user_namespaces();
    Check {
        what: "user namespaces",
        optional: false,
        ok: userns.available,
        detail: userns.detail,
        otherwise:
            "rootless `rfs run` cannot start containers: sysctl user.max_user_namespaces=15000"
                .into(),
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
                    apt-get install uidmap and add `USER:100000:65536` to /etc/subuid and /etc/subgid"
            .into(),
    }
}

fn kernel_overlay() -> Check {
    let overlay = host::kernel_overlay();
    Check {
        what: "kernel overlayfs",
        optional: true,
        ok: overlay.available,
        detail: overlay.detail,
        otherwise: "only the differential tests need it (modprobe overlay); rfs itself does not"
            .into(),
    }
}

fn passthrough() -> Check {
    let passthrough = host::passthrough();
    Check {
        what: "FUSE passthrough",
        optional: true,
        ok: passthrough.available,
        detail: passthrough.detail,
        otherwise: "every read and write goes through the daemon; with it (root, kernel 6.9 \
                    or later) the kernel reads and writes host files of 128 KiB or more itself"
            .into(),
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
                    /sys/module/haltpoll/parameters/guest_halt_poll_ns (the kernel's default)"
            .into(),
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
                    (needs setfattr from the attr package for this check)"
            .into(),
    }
}

fn private_network() -> Check {
    let pasta = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(crate::network::PASTA).is_file()))
        .unwrap_or(false);
    let tun = nix::unistd::access(
        "/dev/net/tun",
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .is_ok();
    let as_root = nix::unistd::geteuid().is_root();
    Check {
        what: "private container network (pasta)",
        optional: false,
        ok: pasta && (tun || as_root),
        detail: format!(
            "{} {}, /dev/net/tun {}",
            crate::network::PASTA,
            if pasta { "found" } else { "not found" },
            if tun {
                "usable"
            } else {
                "not usable by this user"
            }
        ),
        otherwise: "rfs run's default --net private fails (--net host works): apt-get install \
                    passt, and make /dev/net/tun mode 0666 as distributions ship it"
            .into(),
    }
}

fn container_limits() -> Check {
    let probe = rfs_runner::cgroup::probe(Path::new("/sys/fs/cgroup"));
    Check {
        what: "container limits (cgroups)",
        optional: true,
        ok: probe.is_ok(),
        detail: match &probe {
            Ok(place) => place.clone(),
            Err(e) => e.to_string(),
        },
        otherwise: "--memory, --cpus and --pids-limit are refused: run as root, or have a cgroup \
                    v2 subtree delegated to this user"
            .into(),
    }
}

/// Runs the checks and prints one line per check./// Runs the checks and prints one line per check.
pub(crate) fn run(root: &Path) -> Result<ExitCode> {
    let checks = [
        dev_fuse(),
        fusermount(),
        user_namespaces(),
        subids(),
        private_network(),
        container_limits(),
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
