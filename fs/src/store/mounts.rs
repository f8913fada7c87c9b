//! The writable layers of `rfs mount`: a mount without `--upper` gets a fresh layer under
//! `<root>/mounts/<id>/`, which stays after the unmount (nothing written is lost) until the
//! user asks for it to go (`rfs umount --rm`, `rfs mount --rm`, `rfs prune --mounts`).
//!
//! ```text
//! <root>/mounts/<id>/          id = <seconds>-<pid of the serving process>
//!   upper/ work/               the overlay upper and work dir
//!   lock                       flock(2)ed by the serving process while it runs
//!   mount.json                 source, mountpoint, created, pid, device (MountRecord)
//!   remove                     present: delete the layer when the mount ends
//! ```
//!
//! Which layers are in use is decided as for leases (`gc`): a layer is in use while its
//! `lock` is locked, i.e. while its daemon runs, whatever happens to pids. The lock is taken
//! before `mount.json` is written, so a layer whose lock is free but that has no readable
//! record is one being set up, or one of an older rfs (which wrote only `upper/` and
//! `work/`): those count as in use while the pid their id names lives. Deleting a layer
//! takes its lock first, so two deleters (or a deleter and a daemon finishing) never race.
//!
//! `device` is the mount's `major:minor` (as `/proc/self/mountinfo` shows it), written once
//! the mount is up and cleared when the daemon sees it end. A killed daemon leaves it set:
//! that is how `rfs umount --rm` finds the layer of a dead mount.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{Error, Store, Timestamp};
use crate::durable::write_atomic;

/// The directory of the layers, under the root.
const MOUNTS_DIR: &str = "mounts";
/// A layer's record.
const RECORD: &str = "mount.json";
/// Locked by the serving process.
const LOCK: &str = "lock";
/// Asks for the layer to be deleted when its mount ends.
const REMOVE: &str = "remove";

/// What `mount.json` records about a layer and its mount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// What was mounted: the image (path or store reference) or the `--lower` dirs.
    pub source: String,
    /// Where (an absolute path).
    pub mountpoint: PathBuf,
    /// When the layer was made (RFC 3339).
    pub created: String,
    /// The process serving the mount.
    pub pid: u32,
    /// The mount's `major:minor` while it may exist (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// A layer as `rfs mounts` lists it.
#[derive(Clone, Debug)]
pub struct MountLayerInfo {
    /// The directory name under `mounts/`.
    pub id: String,
    /// `<root>/mounts/<id>`.
    pub dir: PathBuf,
    /// The record; `None` for a layer of an older rfs (or one being set up).
    pub record: Option<MountRecord>,
    /// Whether a running process serves it (see the module docs).
    pub in_use: bool,
}

impl MountLayerInfo {
    /// The upper directory.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// The bytes of its upper and work dirs (apparent sizes, hard links counted once).
    pub fn size(&self) -> u64 {
        data_size(&self.dir)
    }

    /// When it was made: the record's time, else the seconds its id starts with.
    pub fn created(&self) -> Option<Timestamp> {
        self.record
            .as_ref()
            .and_then(|r| Timestamp::parse(&r.created))
            .or_else(|| {
                let (secs, _) = parse_id(&self.id)?;
                Some(Timestamp { secs, nanos: 0 })
            })
    }

    /// The serving process, from the record or the id.
    pub fn pid(&self) -> Option<u32> {
        self.record
            .as_ref()
            .map(|r| r.pid)
            .or_else(|| parse_id(&self.id).map(|(_, pid)| pid))
    }
}

/// A fresh layer, held by the process that serves its mount (it keeps the layer's lock).
///
/// Dropped before [`mounted`](Self::mounted), it deletes the layer: a mount that failed
/// leaves nothing behind. Afterwards it deletes the layer only if that was asked for.
#[derive(Debug)]
pub struct MountLayer {
    id: String,
    dir: PathBuf,
    record: MountRecord,
    lock: Option<Flock<File>>,
    mounted: bool,
}

/// What [`MountLayer::finish`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// The layer stays (it was not asked to go).
    Kept,
    /// The layer was deleted; it held this many bytes.
    Removed(u64),
}

impl MountLayer {
    /// The id (directory name under `mounts/`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `<root>/mounts/<id>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The upper directory.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// The work directory.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The mount is up, as `device` (`major:minor`, if known): from now on the layer holds
    /// the user's data and outlives this value unless its removal was asked for.
    ///
    /// # Errors
    ///
    /// The record cannot be rewritten.
    pub fn mounted(&mut self, device: Option<String>) -> Result<(), Error> {
        self.mounted = true;
        self.record.device = device;
        self.write_record()
    }

    /// The mount has ended: deletes the layer if its removal was asked for, else records
    /// that it is no longer mounted.
    ///
    /// # Errors
    ///
    /// The layer cannot be deleted, or its record rewritten.
    pub fn finish(mut self) -> Result<Finished, Error> {
        if !self.mounted || self.dir.join(REMOVE).exists() {
            let size = data_size(&self.dir);
            self.remove()?;
            return Ok(Finished::Removed(size));
        }
        self.record.device = None;
        self.write_record()?;
        Ok(Finished::Kept)
    }

    fn write_record(&self) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(&self.record)
            .map_err(|e| Error::io("encoding", self.dir.join(RECORD), io::Error::other(e)))?;
        Ok(write_atomic(&self.dir.join(RECORD), &bytes, 0o644)?)
    }

    /// Deletes the layer, lock still held, and forgets it.
    fn remove(&mut self) -> Result<(), Error> {
        let r = remove_tree(&self.dir);
        self.lock = None;
        self.mounted = true;
        self.dir = PathBuf::new();
        r
    }
}

impl Drop for MountLayer {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if !self.mounted || self.dir.join(REMOVE).exists() {
            if let Err(e) = self.remove() {
                log::warn!("{e}");
            }
        }
    }
}

impl Store {
    /// Makes a fresh layer for a mount of `source` on `mountpoint`, locked by this process;
    /// with `remove_at_end` it is deleted when the mount ends (`rfs mount --rm`).
    ///
    /// # Errors
    ///
    /// The directories or the record cannot be created.
    pub fn create_mount_layer(
        &self,
        source: &str,
        mountpoint: &Path,
        remove_at_end: bool,
    ) -> Result<MountLayer, Error> {
        let base = self.root.join(MOUNTS_DIR);
        fs::create_dir_all(&base).map_err(|e| Error::io("creating", &base, e))?;
        let now = Timestamp::now();
        let pid = std::process::id();
        // `<secs>-<pid>` is unique unless a pid comes round within a second.
        let mut n = 0;
        let (id, dir) = loop {
            let id = match n {
                0 => format!("{}-{pid}", now.secs),
                n => format!("{}-{pid}-{n}", now.secs),
            };
            let dir = base.join(&id);
            match fs::create_dir(&dir) {
                Ok(()) => break (id, dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(Error::io("creating", dir, e)),
            }
        };
        // From here on, dropping `layer` deletes the directory.
        let mut layer = MountLayer {
            id,
            dir: dir.clone(),
            record: MountRecord {
                source: source.to_owned(),
                mountpoint: mountpoint.to_owned(),
                created: now.to_rfc3339_nano(),
                pid,
                device: None,
            },
            lock: None,
            mounted: false,
        };
        let lock_path = dir.join(LOCK);
        let file = File::create(&lock_path).map_err(|e| Error::io("creating", &lock_path, e))?;
        // Blocking: a lister may hold it for a moment to look.
        layer.lock = Some(
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| Error::io("locking", &lock_path, errno.into()))?,
        );
        if remove_at_end {
            request_removal(&dir, true)?;
        }
        layer.write_record()?;
        for d in [layer.upper(), layer.work()] {
            fs::create_dir(&d).map_err(|e| Error::io("creating", &d, e))?;
        }
        Ok(layer)
    }

    /// The layers under `mounts/`, newest first.
    ///
    /// # Errors
    ///
    /// `mounts/` exists but cannot be listed.
    pub fn mount_layers(&self) -> Result<Vec<MountLayerInfo>, Error> {
        let base = self.root.join(MOUNTS_DIR);
        let entries = match fs::read_dir(&base) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing", base, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &base, e))?;
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let id = entry.file_name().to_string_lossy().into_owned();
            out.push(layer_info(id, entry.path()));
        }
        out.sort_by(|a, b| b.created().cmp(&a.created()).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    /// Asks for layer `id` to be deleted when its mount ends (or, with `yes == false`,
    /// withdraws the request).
    ///
    /// # Errors
    ///
    /// The marker cannot be written or removed.
    pub fn request_mount_layer_removal(&self, id: &str, yes: bool) -> Result<(), Error> {
        request_removal(&self.root.join(MOUNTS_DIR).join(id), yes)
    }

    /// Deletes layer `id` if no running mount uses it; returns the bytes it held (0 if it
    /// was gone already).
    ///
    /// # Errors
    ///
    /// [`Error::LayerInUse`] while a mount serves it; it cannot be deleted.
    pub fn remove_mount_layer(&self, id: &str) -> Result<u64, Error> {
        let dir = self.root.join(MOUNTS_DIR).join(id);
        let in_use = |info: &MountLayerInfo| Error::LayerInUse {
            dir: dir.clone(),
            pid: info.pid(),
        };
        let lock = match File::open(dir.join(LOCK)) {
            Ok(file) => match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => Some(lock),
                Err(_) => return Err(in_use(&layer_info(id.to_owned(), dir.clone()))),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !dir.exists() {
                    return Ok(0);
                }
                None
            }
            Err(e) => return Err(Error::io("opening", dir.join(LOCK), e)),
        };
        // With the lock ours (or no lock file), the layer is in use only if it is being
        // set up or belongs to a running older rfs.
        let record = read_record(&dir);
        if unrecorded_and_alive(id, record.as_ref()) {
            return Err(in_use(&layer_info(id.to_owned(), dir.clone())));
        }
        let size = data_size(&dir);
        remove_tree(&dir)?;
        drop(lock);
        Ok(size)
    }

    /// Deletes every layer no running mount uses (`rfs prune --mounts`); returns them with
    /// the bytes each held.
    ///
    /// # Errors
    ///
    /// `mounts/` cannot be listed, or a layer cannot be deleted.
    pub fn prune_mounts(&self) -> Result<Vec<(MountLayerInfo, u64)>, Error> {
        let mut out = Vec::new();
        for layer in self.mount_layers()? {
            if layer.in_use {
                continue;
            }
            match self.remove_mount_layer(&layer.id) {
                Ok(size) => out.push((layer, size)),
                // Its daemon started between the listing and now (a pid reused).
                Err(Error::LayerInUse { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Reads what is known of layer `id` in `dir`.
fn layer_info(id: String, dir: PathBuf) -> MountLayerInfo {
    let record = read_record(&dir);
    let in_use = lock_held(&dir.join(LOCK)) || unrecorded_and_alive(&id, record.as_ref());
    MountLayerInfo {
        id,
        dir,
        record,
        in_use,
    }
}

fn read_record(dir: &Path) -> Option<MountRecord> {
    fs::read(dir.join(RECORD))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// A layer whose lock is free is still in use if it has no record while the process its id
/// names lives: it is being set up, or it is an older rfs's.
fn unrecorded_and_alive(id: &str, record: Option<&MountRecord>) -> bool {
    record.is_none() && parse_id(id).is_some_and(|(_, pid)| process_alive(pid))
}

/// Whether someone holds the lock file at `path`. A missing file is not held; one that
/// cannot be opened counts as held, so that a layer is never taken for unused by mistake.
fn lock_held(path: &Path) -> bool {
    match File::open(path) {
        Ok(file) => Flock::lock(file, FlockArg::LockSharedNonblock).is_err(),
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

fn request_removal(dir: &Path, yes: bool) -> Result<(), Error> {
    let path = dir.join(REMOVE);
    if yes {
        return File::create(&path)
            .map(drop)
            .map_err(|e| Error::io("creating", path, e));
    }
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("deleting", path, e)),
        _ => Ok(()),
    }
}

/// `<secs>-<pid>[-n]` → (secs, pid).
fn parse_id(id: &str) -> Option<(i64, u32)> {
    let mut parts = id.split('-');
    let secs = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    Some((secs, pid))
}

/// Whether process `pid` exists (EPERM: it does, as someone else's).
fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None),
        Ok(()) | Err(nix::errno::Errno::EPERM)
    )
}

/// The bytes a layer holds for the user: its upper and work dirs, not rfs's own records.
fn data_size(dir: &Path) -> u64 {
    tree_size(&dir.join("upper")) + tree_size(&dir.join("work"))
}

/// The bytes of the files under `path` (apparent sizes, hard links counted once), as Docker
/// counts a writable layer's size. Unreadable entries count as empty.
fn tree_size(path: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let Ok(entries) = fs::read_dir(dir) else {
            return 0;
        };
        let mut total = 0;
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                total += walk(&entry.path(), seen);
            } else if meta.nlink() < 2 || seen.insert((meta.dev(), meta.ino())) {
                total += meta.len();
            }
        }
        total
    }
    walk(path, &mut HashSet::new())
}

/// Deletes a directory tree; one already gone (a concurrent deleter) is no error. A rootless
/// upper keeps modes it cannot set on its owner in `user.containers.override_stat`, so its
/// directories stay writable to the owner, who can delete them.
fn remove_tree(dir: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("deleting", dir, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn a_layer_that_never_mounted_is_deleted() {
        let (_d, store) = store();
        let layer = store
            .create_mount_layer("img.tar", Path::new("/mnt"), false)
            .unwrap();
        let dir = layer.dir().to_owned();
        assert!(layer.upper().is_dir() && layer.work().is_dir());
        drop(layer);
        assert!(!dir.exists());
        assert!(store.mount_layers().unwrap().is_empty());
    }

    #[test]
    fn a_mounted_layer_is_in_use_then_kept_then_pruned() {
        let (_d, store) = store();
        let mut layer = store
            .create_mount_layer("img.tar", Path::new("/mnt"), false)
            .unwrap();
        layer.mounted(Some("0:99".into())).unwrap();
        fs::write(layer.upper().join("f"), b"12345").unwrap();
        let listed = store.mount_layers().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].in_use);
        assert_eq!(
            listed[0].record.as_ref().unwrap().device.as_deref(),
            Some("0:99")
        );
        assert!(matches!(
            store.remove_mount_layer(layer.id()),
            Err(Error::LayerInUse { .. })
        ));
        assert!(store.prune_mounts().unwrap().is_empty());
        let id = layer.id().to_owned();
        assert_eq!(layer.finish().unwrap(), Finished::Kept);
        let listed = store.mount_layers().unwrap();
        assert!(!listed[0].in_use);
        assert_eq!(listed[0].record.as_ref().unwrap().device, None);
        let pruned = store.prune_mounts().unwrap();
        assert_eq!(pruned.len(), 1);
        assert_eq!((pruned[0].0.id.as_str(), pruned[0].1), (id.as_str(), 5));
        assert!(store.mount_layers().unwrap().is_empty());
    }

    #[test]
    fn removal_asked_for_happens_at_the_end() {
        let (_d, store) = store();
        let mut layer = store
            .create_mount_layer("img.tar", Path::new("/mnt"), false)
            .unwrap();
        layer.mounted(None).unwrap();
        store.request_mount_layer_removal(layer.id(), true).unwrap();
        let dir = layer.dir().to_owned();
        assert!(matches!(layer.finish().unwrap(), Finished::Removed(_)));
        assert!(!dir.exists());

        let mut layer = store
            .create_mount_layer("img.tar", Path::new("/mnt"), true)
            .unwrap();
        layer.mounted(None).unwrap();
        let dir = layer.dir().to_owned();
        drop(layer);
        assert!(!dir.exists(), "--rm: dropped after the mount, deleted");
    }

    #[test]
    fn an_older_layer_without_record_is_listed_and_pruned_once_its_process_is_gone() {
        let (_d, store) = store();
        let base = store.root().join(MOUNTS_DIR);
        // pid 0x7fffffff does not exist; our own pid does.
        let dead = base.join("1700000000-2147483647");
        let live = base.join(format!("1700000001-{}", std::process::id()));
        for d in [&dead, &live] {
            fs::create_dir_all(d.join("upper")).unwrap();
            fs::create_dir_all(d.join("work")).unwrap();
        }
        let listed = store.mount_layers().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].created().unwrap().secs, 1_700_000_000);
        assert!(listed.iter().all(|l| l.record.is_none()));
        let pruned = store.prune_mounts().unwrap();
        assert_eq!(pruned.len(), 1);
        assert!(!dead.exists() && live.exists());
    }
}
