//! Files that appear whole or not at all, for everything rfs writes under its root directory:
//! store blobs, decompressed layers, layer index caches, `index.json`, leases.
//!
//! Every write goes to a uniquely named temporary file in the destination directory
//! (`.tmp-<pid>-<n>`), is fsynced, and is renamed over its final name; the directory is then
//! fsynced so the rename survives a crash. A writer that fails or is killed leaves at most a
//! temporary file, which `rfs prune` removes by its [`TMP_PREFIX`]; readers never see a
//! partial file. Two writers of the same content each write their own temporary file, and the
//! second rename replaces identical content.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The prefix of temporary files; anything so named is garbage once no writer runs.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// A step of a durable write failed. The callers' error types take it in (`store::Error::Io`,
/// `image::Error::Store`), so it names the file and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub(crate) struct FileError {
    /// What was being done ("creating", "syncing", "renaming into place" …).
    pub(crate) op: &'static str,
    /// The file or directory.
    pub(crate) path: PathBuf,
    /// The underlying failure.
    #[source]
    pub(crate) source: io::Error,
}

impl FileError {
    fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> FileError {
        FileError {
            op,
            path: path.into(),
            source,
        }
    }
}

/// A temporary file that is removed on drop unless persisted or renamed into place.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    /// A new, empty temporary file in `dir` (created if missing), with mode `mode`.
    pub(crate) fn create(dir: &Path, mode: u32) -> Result<TempFile, FileError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(dir).map_err(|e| FileError::new("creating", dir, e))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| FileError::new("creating", &path, e))?;
        Ok(TempFile {
            path,
            file,
            persisted: false,
        })
    }

    /// Where the temporary file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file.
    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Gives the file the name `dest` atomically, without making it durable: for runtime
    /// state (leases) that is meaningless after a crash anyway.
    pub(crate) fn rename_into(mut self, dest: &Path) -> Result<(), FileError> {
        fs::rename(&self.path, dest).map_err(|e| FileError::new("renaming into place", dest, e))?;
        self.persisted = true;
        Ok(())
    }

    /// Makes the content durable and gives it the name `dest` atomically (replacing what is
    /// there), then makes the rename durable.
    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), FileError> {
        self.file
            .sync_all()
            .map_err(|e| FileError::new("syncing", &self.path, e))?;
        fs::rename(&self.path, dest).map_err(|e| FileError::new("renaming into place", dest, e))?;
        self.persisted = true;
        sync_dir(dest)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    log::warn!("{}: cannot remove: {e}", self.path.display());
                }
            }
        }
    }
}

/// Fsyncs the directory holding `path`, so a rename or unlink in it is durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), FileError> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileError::new("syncing", dir, e))
}

/// Replaces `path` with `bytes` atomically (temp file, fsync, rename, fsync of the directory),
/// creating its directory if needed.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = TempFile::create(dir, mode)?;
    tmp.file()
        .write_all(bytes)
        .map_err(|e| FileError::new("writing", path, e))?;
    tmp.persist(path)
}

/// Removes the temporary files in `dir` whose writer is dead (the pid in the name is no
/// live process), as a killed `rfs pull` leaves; returns how many. Cheap enough to run before
/// writing into `dir` without the store's exclusive lock that `rfs prune` takes: a live
/// writer's files are never touched. (A writer in another pid namespace sharing the
/// directory would look dead; its rename then fails, and it reports the error.)
pub(crate) fn remove_dead_temporaries(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TMP_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        let dead = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if dead && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_writers_temporaries_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = TempFile::create(dir.path(), 0o444).expect("create");
        // A pid above the kernel's maximum (2^22) is never alive.
        let dead = dir.path().join(format!("{TMP_PREFIX}4194999-0"));
        fs::write(&dead, b"partial").expect("write");
        let blob = dir.path().join("ab".repeat(32));
        fs::write(&blob, b"blob").expect("write");
        assert_eq!(remove_dead_temporaries(dir.path()), 1);
        assert!(!dead.exists());
        assert!(live.path().exists() && blob.exists());
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/index.json");
        write_atomic(&p, b"one", 0o644).expect("write");
        write_atomic(&p, b"two", 0o644).expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        assert_eq!(fs::read_dir(p.parent().unwrap()).expect("list").count(), 1);
    }

    #[test]
    fn a_dropped_temporary_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut tmp = TempFile::create(dir.path(), 0o444).expect("create");
        tmp.file().write_all(b"partial").expect("write");
        assert!(
            tmp.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(TMP_PREFIX)
        );
        drop(tmp);
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
