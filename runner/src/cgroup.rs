//! Resource limits of a container (`--memory`, `--cpus`, `--pids-limit`) through a control
//! group of its own: made before the container starts, the sandbox moved into it while it
//! waits (so init and the command are born inside), removed when the container has ended.
//!
//! cgroup v2 is used where it has the controllers (`/sys/fs/cgroup`, or the `unified`
//! hierarchy of a hybrid layout): `memory.max` (and `memory.swap.max` 0, so a process over the
//! limit is killed, not swapped), `pids.max`, `cpu.max`. Where the controllers are v1
//! hierarchies (`/sys/fs/cgroup/memory`, …), their v1 files: `memory.limit_in_bytes` (and
//! `memory.memsw.limit_in_bytes`), `pids.max`, `cpu.cfs_quota_us`. A caller that may not write
//! there (rootless without a delegated subtree; v1 is never delegated) gets an error that says
//! so and what would allow it.

use std::path::{Path, PathBuf};

use nix::unistd::Pid;

/// The limits asked for; `None` leaves one unset.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Memory, bytes.
    pub memory: Option<u64>,
    /// CPU time, in CPUs (1.5 = one and a half CPUs' worth per period).
    pub cpus: Option<f64>,
    /// Processes and threads.
    pub pids: Option<u64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.cpus.is_some() || self.pids.is_some()
    }
}

/// Why limits cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No hierarchy has the controller.
    #[error("no cgroup hierarchy here has the {controller} controller")]
    NoController {
        /// `memory`, `cpu` or `pids`.
        controller: &'static str,
    },
    /// The caller may not make a cgroup.
    #[error(
        "cannot make a cgroup in {parent} ({source}); limits need root, or a cgroup v2 subtree \
         delegated to this user (systemd: Delegate=yes)"
    )]
    NotPermitted {
        /// Where the cgroup would go.
        parent: PathBuf,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// Writing a limit or moving a process failed.
    #[error("writing {value:?} to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The period of a CPU quota, microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// A container's control groups (one per v1 hierarchy, or one v2 group); removed on drop once
/// their processes are gone.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

/// Where the v2 hierarchy with controllers is, if any: (its root, its controllers).
fn v2_root(base: &Path) -> Option<(PathBuf, Vec<String>)> {
    for root in [base.to_path_buf(), base.join("unified")] {
        if let Ok(text) = std::fs::read_to_string(root.join("cgroup.controllers")) {
            let controllers: Vec<String> = text.split_whitespace().map(str::to_string).collect();
            if !controllers.is_empty() {
                return Some((root, controllers));
            }
        }
    }
    None
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn make_dir(parent: &Path, name: &str) -> Result<PathBuf, CgroupError> {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).map_err(|source| CgroupError::NotPermitted {
        parent: parent.to_path_buf(),
        source,
    })?;
    Ok(dir)
}

impl Cgroup {
    /// Makes the control groups for `limits` under the cgroup mount `base`
    /// (`/sys/fs/cgroup`), named `rfs-<name>`.
    ///
    /// # Errors
    /// See [`CgroupError`]; what was made is removed again.
    pub fn create(base: &Path, name: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let leaf = format!("rfs-{name}");
        let mut group = Cgroup { dirs: Vec::new() };
        let wanted: Vec<&'static str> = [
            limits.memory.map(|_| "memory"),
            limits.cpus.map(|_| "cpu"),
            limits.pids.map(|_| "pids"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match v2_root(base) {
            Some((root, controllers))
                if wanted.iter().all(|c| controllers.iter().any(|h| h == c)) =>
            {
                let enable: Vec<String> = wanted.iter().map(|c| format!("+{c}")).collect();
                write(&root.join("cgroup.subtree_control"), &enable.join(" "))?;
                let dir = make_dir(&root, &leaf)?;
                group.dirs.push(dir.clone());
                if let Some(bytes) = limits.memory {
                    write(&dir.join("memory.max"), &bytes.to_string())?;
                    if dir.join("memory.swap.max").exists() {
                        write(&dir.join("memory.swap.max"), "0")?;
                    }
                }
                if let Some(cpus) = limits.cpus {
                    let quota = ((cpus * CPU_PERIOD_US as f64) as u64).max(1000);
                    write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                }
                if let Some(n) = limits.pids {
                    write(&dir.join("pids.max"), &n.to_string())?;
                }
            }
            _ => {
                for controller in wanted {
                    let hierarchy = base.join(controller);
                    if !hierarchy.join("cgroup.procs").exists() {
                        return Err(CgroupError::NoController { controller });
                    }
                    let dir = make_dir(&hierarchy, &leaf)?;
                    group.dirs.push(dir.clone());
                    match controller {
                        "memory" => {
                            let bytes = limits.memory.unwrap_or_default().to_string();
                            write(&dir.join("memory.limit_in_bytes"), &bytes)?;
                            let memsw = dir.join("memory.memsw.limit_in_bytes");
                            if memsw.exists() {
                                write(&memsw, &bytes)?;
                            }
                        }
                        "cpu" => {
                            let cpus = limits.cpus.unwrap_or(1.0);
                            let quota = ((cpus * CPU_PERIOD_US as f64) as u64).max(1000);
                            write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                        }
                        _ => write(&dir.join("pids.max"), &limits.pids.unwrap_or(0).to_string())?,
                    }
                }
            }
        }
        Ok(group)
    }

    /// Moves process `pid` into the group (its children are born there).
    ///
    /// # Errors
    /// [`CgroupError::Write`].
    pub fn add(&self, pid: Pid) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.as_raw().to_string())?;
        }
        Ok(())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The last processes may take a moment to leave after the container ended.
        for dir in self.dirs.iter().rev() {
            for _ in 0..100 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(e) => {
                        log::debug!("removing {}: {e}", dir.display());
                        break;
                    }
                    Ok(()) => break,
                }
            }
        }
    }
}

/// Where this process could put limits under the cgroup mount `base`, without making
/// anything: `Ok` names the hierarchy (`cgroup v2 at …`, `cgroup v1 …`), `Err` says why not.
///
/// # Errors
/// No hierarchy has the controllers, or this process may not write there.
pub fn probe(base: &Path) -> Result<String, CgroupError> {
    let writable = |dir: &Path| {
        nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(|e| {
            CgroupError::NotPermitted {
                parent: dir.to_path_buf(),
                source: e.into(),
            }
        })
    };
    let wanted = ["memory", "cpu", "pids"];
    if let Some((root, controllers)) = v2_root(base) {
        if wanted.iter().all(|c| controllers.iter().any(|h| h == c)) {
            writable(&root)?;
            return Ok(format!("cgroup v2 at {}", root.display()));
        }
    }
    for controller in wanted {
        let hierarchy = base.join(controller);
        if !hierarchy.join("cgroup.procs").exists() {
            return Err(CgroupError::NoController { controller });
        }
        writable(&hierarchy)?;
    }
    Ok(format!(
        "cgroup v1 memory, cpu and pids under {}",
        base.display()
    ))
}

/// Parses a memory size as docker takes it: bytes, or a number with `b`, `k`, `m`, `g`
/// (powers of 1024, any case).
///
/// # Errors
/// Not such a size, or zero.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t.as_str(), ""),
    };
    let unit = unit.trim_end_matches('b');
    let factor: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("{text:?} is not a size (e.g. 512m, 2g)")),
    };
    match digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
    {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?} is not a size (e.g. 512m, 2g)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_as_docker_takes_them() {
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("2G"), Ok(2 << 30));
        assert_eq!(parse_memory("64mb"), Ok(64 << 20));
        assert_eq!(parse_memory("4096"), Ok(4096));
        for bad in ["", "m", "0", "12x", "-1m", "1.5g"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    /// Against a fake cgroup tree: v1 hierarchies get their files, v2 its own, and the groups
    /// go on drop.
    #[test]
    fn limits_are_written_where_the_controllers_are() {
        let base = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "pids"] {
            std::fs::create_dir_all(base.path().join(c)).unwrap();
            std::fs::write(base.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        let limits = Limits {
            memory: Some(64 << 20),
            cpus: Some(0.5),
            pids: Some(20),
        };
        let g = Cgroup::create(base.path(), "x", &limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(base.path().join(p)).unwrap();
        assert_eq!(read("memory/rfs-x/memory.limit_in_bytes"), "67108864");
        assert_eq!(read("cpu/rfs-x/cpu.cfs_quota_us"), "50000");
        assert_eq!(read("pids/rfs-x/pids.max"), "20");
        drop(g);

        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let g = Cgroup::create(v2.path(), "y", &limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(v2.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+memory +cpu +pids");
        assert_eq!(read("rfs-y/memory.max"), "67108864");
        assert_eq!(read("rfs-y/cpu.max"), "50000 100000");
        assert_eq!(read("rfs-y/pids.max"), "20");
        drop(g);

        let none = tempfile::tempdir().unwrap();
        assert!(matches!(
            Cgroup::create(none.path(), "z", &limits),
            Err(CgroupError::NoController { .. })
        ));
    }
}
