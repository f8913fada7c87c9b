//! rfs as podman's `overlay.mount_program`, in place of fuse-overlayfs: the real podman from
//! Debian loads a test image, runs a container that creates, changes and deletes files, and
//! `podman diff` / `podman commit` must see exactly those changes — as root and as an
//! unprivileged user. Fully offline, with private storage under a scratch dir.
//!
//! crun refuses hybrid cgroup hierarchies that still have controllers in cgroup v2;
//! `scripts/test.sh` moves the stray `hugetlb` controller to v1 on such hosts.
//!
//! Every podman invocation runs with the test's own runtime dir (`XDG_RUNTIME_DIR`), so what
//! podman leaves running (rootless podman's pause process, which keeps its user namespace
//! alive) is found by that dir and stopped when the test ends ([`Leftovers`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::common::Scratch;

const RUN_FLAGS: &str = "--network none --cgroups=disabled --ulimit nofile=1024:1024 \
                         --ulimit nproc=1024:1024";

/// The container script: a create, a change of a lower file, a delete, a new dir, a lower
/// dir removed, a rename.
const SCRIPT: &str = "echo hi > /tmp/new; rm /etc/motd; echo x >> /opt/data/keep; \
                      mkdir -p /srv/x; rm -rf /opt/opq; mv /opt/data/todir /opt/data/todir2";

const EXPECTED_DIFF: &[&str] = &[
    "A /opt/data/todir2",
    "A /srv",
    "A /srv/x",
    "A /tmp/new",
    "C /etc",
    "C /opt",
    "C /opt/data",
    "C /opt/data/keep",
    "C /tmp",
    "D /etc/motd",
    "D /opt/data/todir",
    "D /opt/opq",
];

/// Runs a shell script as `user` (None: as root) and returns (success, output).
fn sh(user: Option<&str>, script: &str) -> (bool, String) {
    let mut cmd = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "sh", "-c", script]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            c
        }
    };
    let out = cmd.output().expect("running sh");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The processes the podman invocations of one test left running, found by the test's
/// runtime dir in their environment: so only processes this test caused are touched, whoever
/// else runs podman. Rootless podman's pause process is one (its pid is also in
/// `libpod/tmp/pause.pid` under the runtime dir, but that names only it). Stopped on drop,
/// also when the test fails.
struct Leftovers {
    /// `XDG_RUNTIME_DIR=<the test's runtime dir>`, as it stands in an environment.
    marker: Vec<u8>,
}

impl Leftovers {
    fn new(dir: &Path) -> Leftovers {
        let mut marker = b"XDG_RUNTIME_DIR=".to_vec();
        marker.extend_from_slice(runtime_dir(dir).as_os_str().as_encoded_bytes());
        Leftovers { marker }
    }

    /// The live processes whose environment has the test's runtime dir (a zombie has exited:
    /// reaping it is its parent's business).
    fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            let zombie = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
                .unwrap_or(true);
            if !zombie && environ.split(|&b| b == 0).any(|v| v == self.marker) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Stops every such process (SIGTERM, then SIGKILL); returns those still alive after.
    fn stop(&self) -> Vec<i32> {
        for signal in [Signal::SIGTERM, Signal::SIGKILL] {
            for pid in self.pids() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
            }
            let start = Instant::now();
            while !self.pids().is_empty() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.pids()
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The runtime dir of the podman invocations of the test in `dir`.
fn runtime_dir(dir: &Path) -> PathBuf {
    dir.join("xdg")
}

/// The shell prefix that gives podman the test's runtime dir and home, and the podman command
/// with the test's storage.
fn podman_command(dir: &Path) -> (String, String) {
    let d = dir.display();
    let xdg = runtime_dir(dir);
    let x = xdg.display();
    let env = format!("export XDG_RUNTIME_DIR={x} HOME={d}/home; mkdir -p {x} {d}/home;");
    let podman = format!(
        "podman --root {d}/storage --runroot {d}/run --storage-driver overlay \
         --storage-opt overlay.mount_program={d}/rfs-overlay --cgroup-manager cgroupfs \
         --events-backend none"
    );
    (env, podman)
}

fn podman_roundtrip(user: Option<&str>, dir: &Path, archive: &Path) {
    let overlay = dir.join("rfs-overlay");
    crate::common::copy_of_rfs(&overlay);
    std::fs::copy(archive, dir.join("image.tar")).unwrap();
    std::fs::set_permissions(
        dir.join("image.tar"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let d = dir.display();
    let (env, podman) = podman_command(dir);
    let (ok, out) = sh(user, &format!("{env} {podman} load -q -i {d}/image.tar"));
    assert!(ok, "podman load: {out}");
    let (ok, out) = sh(
        user,
        &format!(
            "{env} {podman} run --name c1 -u 0 {RUN_FLAGS} --entrypoint /bin/sh \
             rfs/busybox:latest -c '{SCRIPT}; echo done-in-container'"
        ),
    );
    assert!(ok && out.contains("done-in-container"), "podman run: {out}");
    let (ok, out) = sh(user, &format!("{env} {podman} diff c1"));
    assert!(ok, "podman diff: {out}");
    let mut diff: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    diff.sort_unstable();
    assert_eq!(diff, EXPECTED_DIFF, "podman diff over rfs");
    let (ok, out) = sh(user, &format!("{env} {podman} commit -q c1 rfs/committed"));
    assert!(ok, "podman commit: {out}");
    let check = "test ! -e /etc/motd && cat /tmp/new && tail -c 2 /opt/data/keep && \
                 test -d /srv/x && test ! -e /opt/opq && cat /opt/data/todir2 && \
                 echo committed-ok";
    let (ok, out) = sh(
        user,
        &format!(
            "{env} {podman} run --rm -u 0 {RUN_FLAGS} --entrypoint /bin/sh rfs/committed \
             -c '{check}'"
        ),
    );
    assert!(ok && out.contains("committed-ok"), "committed image: {out}");
    assert!(
        out.contains("hi\nx\nnow-a-file\n"),
        "committed contents: {out}"
    );
    let _ = sh(
        user,
        &format!("{env} {podman} rm -f c1; {podman} rmi -a -f"),
    );
    // podman unmounts its layers itself; nothing of ours may stay mounted.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&d.to_string()),
        "podman left an rfs mount under {d}"
    );
}

#[test]
fn podman_as_root_uses_rfs_as_mount_program() {
    let Some(images) = crate::common::images_dir("podman") else {
        return;
    };
    let s = Scratch::new();
    let leftovers = Leftovers::new(s.dir.path());
    podman_roundtrip(
        None,
        s.dir.path(),
        &images.join("busybox-docker-archive.tar"),
    );
    let left = leftovers.stop();
    assert!(left.is_empty(), "podman left processes running: {left:?}");
}

#[test]
fn rootless_podman_uses_rfs_as_mount_program() {
    let Some(images) = crate::common::images_dir("podman") else {
        return;
    };
    let s = Scratch::new();
    let dir = s.dir.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let st = Command::new("chown")
        .arg("rfstest")
        .arg(dir)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "user rfstest missing: scripts/test.sh creates it"
    );
    let leftovers = Leftovers::new(dir);
    podman_roundtrip(
        Some("rfstest"),
        dir,
        &images.join("busybox-docker-archive.tar"),
    );
    // The pause process of rootless podman outlives every command; this test started it.
    assert!(
        !leftovers.pids().is_empty(),
        "no pause process found: is podman's runtime dir still {}?",
        runtime_dir(dir).display()
    );
    let left = leftovers.stop();
    assert!(left.is_empty(), "podman left processes running: {left:?}");
    // What podman stored belongs to ids of its user namespace, and to no mount of ours: root
    // removes it (no `podman unshare`, which would start a pause process again).
    for d in ["storage", "run"] {
        std::fs::remove_dir_all(dir.join(d)).unwrap_or_else(|e| panic!("removing {d}: {e}"));
    }
}
