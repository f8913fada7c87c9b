//! `rfs umount [--rm] MOUNTPOINT`, and the unmount that `rfs mount` itself does when it is
//! signalled: unmount, or when the mount is busy (a process has its working directory or a
//! file open inside) detach it lazily, as `umount -l` and `fusermount3 -u -z` do. A detached
//! mount leaves the namespace at once, so the mountpoint is free again; the kernel keeps the
//! filesystem for the processes still inside and ends it when the last one leaves, and the
//! daemon serves them until then.
//!
//! With `--rm`, the fresh writable layer that `rfs mount` made for the mount is deleted once
//! the mount ends: the daemon does it as it exits (see `rfs_fs::store::MountLayer`), and this
//! command does it itself for the layer of a dead mount, whose daemon is gone.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::errno::Errno;
use nix::mount::MntFlags;

use rfs_fs::store::{MountLayerInfo, Store};

use crate::cli::UmountArgs;
use crate::mountinfo::{self, MountEntry};

/// How an unmount went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unmounted {
    /// The mount is gone.
    Now,
    /// It was busy, and is detached: it goes when its last user leaves.
    Lazily,
}

/// What rfs says when it had to detach a busy mount.
pub(crate) fn detached_message(mountpoint: &Path) -> String {
    format!(
        "rfs: {} is busy; detached it lazily, it goes away when the last user leaves",
        mountpoint.display()
    )
}

/// Unmounts `mountpoint`, lazily if it is busy. Root unmounts directly; others (and root in
/// a user namespace, which may not) through the setuid `fusermount3`.
///
/// # Errors
///
/// Neither way worked; the message carries the tools' reasons.
pub(crate) fn unmount(mountpoint: &Path) -> Result<Unmounted> {
    if nix::unistd::geteuid().is_root() {
        match nix::mount::umount2(mountpoint, MntFlags::empty()) {
            Ok(()) => return Ok(Unmounted::Now),
            Err(Errno::EBUSY) => {
                nix::mount::umount2(mountpoint, MntFlags::MNT_DETACH)
                    .context("detaching the busy mount (umount -l)")?;
                return Ok(Unmounted::Lazily);
            }
            // Root of a user namespace that does not own the mount: fusermount3 may.
            Err(Errno::EPERM) => {}
            Err(e) => bail!("umount: {e}"),
        }
    }
    let fusermount = |lazy: bool| -> Result<(), String> {
        let mut cmd = Command::new("fusermount3");
        cmd.arg("-u");
        if lazy {
            cmd.arg("-z");
        }
        match cmd.arg("--").arg(mountpoint).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
            Err(e) => Err(format!("cannot run fusermount3: {e}")),
        }
    };
    match fusermount(false) {
        Ok(()) => Ok(Unmounted::Now),
        // fusermount3 words it "failed to unmount PATH: Device or resource busy".
        Err(why) if why.contains("busy") => {
            fusermount(true).map_err(|why| anyhow!("fusermount3 -u -z: {why}"))?;
            Ok(Unmounted::Lazily)
        }
        Err(why) => bail!("{why}"),
    }
}

/// Runs `rfs umount`.
pub(crate) fn run(root: Option<PathBuf>, args: &UmountArgs) -> Result<ExitCode> {
    let mountpoint = args.mountpoint.as_path();
    if args.rm {
        return unmount_and_remove(root, mountpoint);
    }
    // The daemon of a mount with a fresh layer is waited for, so that what runs next
    // (`rfs mounts`, `rfs prune --mounts`) sees the layer no longer mounted.
    let served = served_layer(root, mountpoint);
    match unmount(mountpoint) {
        Ok(Unmounted::Now) => {
            if let Some((store, layer)) = served {
                released(&store, &layer.id);
            }
        }
        Ok(Unmounted::Lazily) => eprintln!("{}", detached_message(mountpoint)),
        Err(e) => {
            // The tools' messages are obscure for the common mistakes; name those plainly.
            if let Some(why) = plain_reason(mountpoint) {
                bail!("unmounting {}: {why}", mountpoint.display());
            }
            return Err(e).with_context(|| format!("unmounting {}", mountpoint.display()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// "no such file or directory" or "not mounted", when that is why unmounting failed.
fn plain_reason(mountpoint: &Path) -> Option<&'static str> {
    let Ok(path) = mountinfo::absolute(mountpoint) else {
        return match std::fs::symlink_metadata(mountpoint) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no such file or directory"),
            _ => None,
        };
    };
    mountinfo::top_at(&path).is_none().then_some("not mounted")
}

/// The layers whose record names the mount `mount` at `path`: served by a running daemon,
/// or (for a `dead` mount) left by a daemon that was killed before it could note the end.
fn layers_of(
    layers: Vec<MountLayerInfo>,
    path: &Path,
    mount: &MountEntry,
    dead: bool,
) -> Vec<MountLayerInfo> {
    layers
        .into_iter()
        .filter(|l| {
            l.record.as_ref().is_some_and(|r| {
                r.mountpoint == path && r.device.as_deref() == Some(mount.device.as_str())
            }) && (l.in_use || dead)
        })
        .collect()
}

/// The running layer of the rfs mount at `mountpoint`, if rfs made one (best effort: no
/// root directory, no layer).
fn served_layer(root: Option<PathBuf>, mountpoint: &Path) -> Option<(Store, MountLayerInfo)> {
    let path = mountinfo::absolute(mountpoint).ok()?;
    let mount = mountinfo::top_at(&path).filter(MountEntry::is_rfs)?;
    let root = super::root_path(root).ok()?;
    if !root.join("mounts").is_dir() {
        return None;
    }
    let store = Store::open(&root).ok()?;
    let mut layers = layers_of(store.mount_layers().ok()?, &path, &mount, false);
    (layers.len() == 1).then(|| (store, layers.remove(0)))
}

/// Waits up to 10 s for the daemon serving layer `id` to let go of it; whether it did.
fn released(store: &Store, id: &str) -> bool {
    let start = Instant::now();
    loop {
        let in_use = store
            .mount_layers()
            .is_ok_and(|ls| ls.iter().any(|l| l.id == id && l.in_use));
        if !in_use {
            return true;
        }
        if start.elapsed() > Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `rfs umount --rm`: finds the fresh layer of the mount at `mountpoint`, asks for its
/// removal, unmounts, and waits until the layer is gone.
fn unmount_and_remove(root: Option<PathBuf>, mountpoint: &Path) -> Result<ExitCode> {
    let shown = mountpoint.display();
    let path = mountinfo::absolute(mountpoint).with_context(|| format!("{shown}"))?;
    let Some(mount) = mountinfo::top_at(&path) else {
        bail!(
            "{shown}: not mounted (`rfs mounts` lists the writable layers rfs keeps; \
             `rfs prune --mounts` deletes those no longer mounted)"
        );
    };
    if !mount.is_rfs() {
        bail!(
            "{shown}: not an rfs mount ({} {}); --rm deletes only a writable layer that rfs \
             made",
            mount.fstype,
            mount.source
        );
    }
    let store = super::store::open(root)?;
    let dead = std::fs::metadata(&path).is_err_and(|e| crate::mountinfo::is_dead_mount(&e));
    let candidates = layers_of(store.mount_layers()?, &path, &mount, dead);
    let layer = match candidates.as_slice() {
        [one] => one,
        [] if dead => bail!(
            "{shown}: a dead mount, with no writable layer of rfs recorded for it; \
             `rfs umount {shown}` clears it, `rfs mounts` lists the layers rfs keeps"
        ),
        [] => bail!(
            "{shown}: its writable layer was not made by rfs (it was mounted with --upper, or \
             read-only, or by an older rfs); rfs never deletes a layer it was given. \
             `rfs umount {shown}` unmounts it"
        ),
        _ => bail!(
            "{shown}: several writable layers of rfs claim this dead mount ({}); \
             `rfs umount {shown}` clears it, `rfs mounts` lists the layers",
            candidates
                .iter()
                .map(|l| l.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    store.request_mount_layer_removal(&layer.id, true)?;
    let how = match unmount(mountpoint) {
        Ok(how) => how,
        Err(e) => {
            // Nothing happened: the layer must not go at some later unmount either.
            let _ = store.request_mount_layer_removal(&layer.id, false);
            return Err(e).with_context(|| format!("unmounting {shown}"));
        }
    };
    if how == Unmounted::Lazily {
        eprintln!(
            "{}; its writable layer {} goes with it",
            detached_message(mountpoint),
            layer.dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // The daemon deletes the layer as it exits; a dead mount's layer is ours to delete.
    if !released(&store, &layer.id) {
        bail!(
            "{shown} is unmounted, but its rfs daemon{} has not exited yet; it deletes {} when \
             it does",
            layer
                .pid()
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default(),
            layer.dir.display()
        );
    }
    store
        .remove_mount_layer(&layer.id)
        .with_context(|| format!("deleting the writable layer of {shown}"))?;
    Ok(ExitCode::SUCCESS)
}
