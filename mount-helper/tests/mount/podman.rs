//! rfs as podman's `overlay.mount_program`, in place of fuse-overlayfs: the real podman from
//! Debian loads a test image, runs a container that creates, changes and deletes files, and
//! `podman diff` / `podman commit` must see exactly those changes — as root and as an
//! unprivileged user. Fully offline, with private storage under a scratch dir.
//!
//! crun refuses hybrid cgroup hierarchies that still have controllers in cgroup v2;
//! `scripts/test.sh` moves the stray `hugetlb` controller to v1 on such hosts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::{Scratch, require_root};

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
    let podman = format!(
        "podman --root {d}/storage --runroot {d}/run --storage-driver overlay \
         --storage-opt overlay.mount_program={d}/rfs-overlay --cgroup-manager cgroupfs \
         --events-backend none"
    );
    let env = format!("export XDG_RUNTIME_DIR={d}/xdg HOME={d}/home; mkdir -p {d}/xdg {d}/home;");
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
    if !require_root("podman_as_root_uses_rfs_as_mount_program") {
        return;
    }
    let Some(images) = crate::common::images_dir("podman") else {
        return;
    };
    let s = Scratch::new();
    podman_roundtrip(
        None,
        s.dir.path(),
        &images.join("busybox-docker-archive.tar"),
    );
}

#[test]
fn rootless_podman_uses_rfs_as_mount_program() {
    if !require_root("rootless_podman_uses_rfs_as_mount_program") {
        return;
    }
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
    podman_roundtrip(
        Some("rfstest"),
        dir,
        &images.join("busybox-docker-archive.tar"),
    );
    // Rootless podman keeps files it cannot own in its user namespace; remove them from
    // inside it so the scratch dir can be deleted.
    let _ = sh(
        Some("rfstest"),
        &format!("cd {}; podman unshare rm -rf storage run", dir.display()),
    );
}
