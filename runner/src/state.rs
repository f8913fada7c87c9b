//! Container records: one directory per container under `<root>/containers/<id>/`, holding
//! `state.json` (what `rfs ps` shows) beside whatever the caller keeps there (rfs: the upper,
//! work dir and mountpoint). Records are written to a temp file and renamed into place, so a
//! reader never sees half a record.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Set up, not started.
    Created,
    /// Started; see [`ContainerState::is_running`] for whether it still is.
    Running,
    /// The command has exited.
    Exited,
}

/// What is known of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// The id (32 hex digits).
    pub id: String,
    /// The name (unique among the containers of the store).
    pub name: String,
    /// The image SOURCE as given.
    pub image: String,
    /// The command, `argv`.
    pub command: Vec<String>,
    /// When it was created, seconds since the epoch.
    pub created: u64,
    /// When it exited, seconds since the epoch.
    pub finished: Option<u64>,
    /// The status as last recorded.
    pub status: Status,
    /// The exit code, once exited.
    pub exit_code: Option<i32>,
    /// The process holding the container (the sandbox: killing it ends the container).
    pub pid: Option<i32>,
    /// The start time of `pid` (field 22 of `/proc/<pid>/stat`), so a reused pid is not
    /// mistaken for the container.
    pub pid_start_time: Option<u64>,
    /// The store's id of the image (`sha256:…`), when it came from the store: `rfs prune`
    /// keeps what a container uses.
    #[serde(default)]
    pub image_id: Option<String>,
    /// The published ports, as `docker port` shows them (`127.0.0.1:8080->80/tcp`).
    #[serde(default)]
    pub ports: Vec<String>,
    /// The signal `rfs stop` sends first (`--stop-signal`), over the image's StopSignal.
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// Seconds since the epoch now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The start time of process `pid` in clock ticks since boot, if it exists.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after the last
    // ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl ContainerState {
    /// Whether the container's process is alive (the record says running and the pid is
    /// still the same process).
    pub fn is_running(&self) -> bool {
        match (self.status, self.pid, self.pid_start_time) {
            (Status::Running, Some(pid), Some(start)) => process_start_time(pid) == Some(start),
            _ => false,
        }
    }
}

/// The containers directory of a root.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    dir: PathBuf,
}

impl ContainerStore {
    /// The store under `root/containers` (created when a container is).
    pub fn new(root: &Path) -> ContainerStore {
        ContainerStore {
            dir: root.join("containers"),
        }
    }

    /// The directory of container `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Creates the directory of a new container and writes its first record.
    ///
    /// # Errors
    /// The directory exists or cannot be created, or the record cannot be written.
    pub fn create(&self, state: &ContainerState) -> Result<PathBuf> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::State { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(err(&self.dir))?;
        let dir = self.dir(&state.id);
        std::fs::create_dir(&dir).map_err(err(&dir))?;
        self.save(state)?;
        Ok(dir)
    }

    /// Writes `state` atomically.
    ///
    /// # Errors
    /// The record cannot be written.
    pub fn save(&self, state: &ContainerState) -> Result<()> {
        let dir = self.dir(&state.id);
        let path = dir.join("state.json");
        let tmp = dir.join(".state.json.tmp");
        let json = serde_json::to_vec_pretty(state).map_err(|e| Error::State {
            path: path.clone(),
            source: e.into(),
        })?;
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| Error::State { path, source })
    }

    /// Reads the record of container `id`.
    ///
    /// # Errors
    /// The record is missing or unreadable.
    pub fn load(&self, id: &str) -> Result<ContainerState> {
        let path = self.dir(id).join("state.json");
        let bytes = std::fs::read(&path).map_err(|source| Error::State {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::State {
            path,
            source: e.into(),
        })
    }

    /// Every container with a readable record, oldest first.
    ///
    /// # Errors
    /// The containers directory exists but cannot be read.
    pub fn list(&self) -> Result<Vec<ContainerState>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::State {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut all: Vec<ContainerState> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| self.load(&e.file_name().to_string_lossy()).ok())
            .collect();
        all.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(all)
    }

    /// The container called `key`: an exact name or id, or a unique id prefix.
    ///
    /// # Errors
    /// The store cannot be read. `Ok(None)` if nothing (or more than one id) matches.
    pub fn find(&self, key: &str) -> Result<Option<ContainerState>> {
        let all = self.list()?;
        if let Some(c) = all.iter().find(|c| c.name == key || c.id == key) {
            return Ok(Some(c.clone()));
        }
        let mut prefixed = all.into_iter().filter(|c| c.id.starts_with(key));
        match (prefixed.next(), prefixed.next()) {
            (Some(c), None) if !key.is_empty() => Ok(Some(c)),
            _ => Ok(None),
        }
    }

    /// A fresh random container id (32 hex digits from the kernel's random pool).
    ///
    /// # Errors
    /// `/dev/urandom` cannot be read.
    pub fn new_id() -> Result<String> {
        use std::io::Read;
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|source| Error::State {
                path: "/dev/urandom".into(),
                source,
            })?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, name: &str, created: u64) -> ContainerState {
        ContainerState {
            id: id.into(),
            name: name.into(),
            image: "img".into(),
            command: vec!["sh".into()],
            created,
            finished: None,
            status: Status::Created,
            exit_code: None,
            pid: None,
            pid_start_time: None,
            image_id: None,
            ports: Vec::new(),
            stop_signal: None,
        }
    }

    #[test]
    fn records_round_trip_and_are_found_by_name_or_prefix() {
        let t = tempfile::tempdir().unwrap();
        let store = ContainerStore::new(t.path());
        store.create(&state("abc123", "one", 2)).unwrap();
        store.create(&state("abd456", "two", 1)).unwrap();
        let all = store.list().unwrap();
        assert_eq!(
            all.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["two", "one"]
        );
        assert_eq!(store.find("one").unwrap().unwrap().id, "abc123");
        assert_eq!(store.find("abd").unwrap().unwrap().name, "two");
        assert!(store.find("ab").unwrap().is_none(), "ambiguous prefix");
        assert!(store.find("zzz").unwrap().is_none());
        assert!(store.create(&state("abc123", "again", 3)).is_err());
    }

    #[test]
    fn running_means_the_same_process() {
        let mut s = state("a", "a", 0);
        s.status = Status::Running;
        s.pid = Some(std::process::id() as i32);
        s.pid_start_time = process_start_time(std::process::id() as i32);
        assert!(s.is_running());
        s.pid_start_time = s.pid_start_time.map(|t| t + 1);
        assert!(!s.is_running());
    }
}
