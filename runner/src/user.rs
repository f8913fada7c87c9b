//! `-u USER[:GROUP]` as docker reads it: names are looked up in the container's `/etc/passwd`
//! and `/etc/group` (never the host's), numbers are taken as they are (a uid missing from
//! passwd runs with gid 0), and the user's supplementary groups come from `/etc/group`.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The resolved identity of the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary groups (including the primary one, as docker does).
    pub groups: Vec<u32>,
    /// The home directory from passwd (`/` if unknown), for `HOME`.
    pub home: PathBuf,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd(file: &Path) -> Vec<PasswdEntry> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn groups(file: &Path) -> Vec<(String, u32, Vec<String>)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// The host paths of the container's `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone)]
pub struct IdFiles {
    /// `/etc/passwd` (missing: no names).
    pub passwd: PathBuf,
    /// `/etc/group` (missing: no names).
    pub group: PathBuf,
}

impl IdFiles {
    /// The files of the container whose root is `root`, resolved inside it (a symlink in the
    /// image never leads to the host's files).
    pub fn in_root(root: &Path) -> IdFiles {
        let find = |p: &str| {
            crate::mounts::resolve_in_root(root, Path::new(p), None)
                .unwrap_or_else(|_| root.join("nonexistent"))
        };
        IdFiles {
            passwd: find("/etc/passwd"),
            group: find("/etc/group"),
        }
    }
}

/// Resolves `spec` (`""`, `USER`, `UID`, `USER:GROUP`, `UID:GID`) against the container's
/// passwd and group files.
///
/// # Errors
/// [`Error::UnknownId`] for a name that is not there.
pub fn resolve(spec: &str, files: &IdFiles) -> Result<Identity> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let users = passwd(&files.passwd);
    let entry = users.iter().find(|e| e.name == user).or_else(|| {
        user.parse::<u32>()
            .ok()
            .and_then(|uid| users.iter().find(|e| e.uid == uid))
    });
    let (uid, mut gid, name, home) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name.clone()), e.home.clone()),
        (None, Ok(uid)) => (uid, 0, None, "/".to_string()),
        (None, Err(_)) => {
            return Err(Error::UnknownId {
                kind: "user",
                name: user.to_string(),
                file: "/etc/passwd",
            });
        }
    };
    let all_groups = groups(&files.group);
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        gid = match all_groups.iter().find(|(n, _, _)| n == g) {
            Some((_, id, _)) => *id,
            None => g.parse().map_err(|_| Error::UnknownId {
                kind: "group",
                name: g.to_string(),
                file: "/etc/group",
            })?,
        };
    }
    let mut supplementary = vec![gid];
    if group.is_none() {
        if let Some(name) = &name {
            for (_, id, members) in &all_groups {
                if members.iter().any(|m| m == name) && !supplementary.contains(id) {
                    supplementary.push(*id);
                }
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups: supplementary,
        home: PathBuf::from(if home.is_empty() { "/" } else { &home }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etc() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app,bob\n",
        )
        .unwrap();
        t
    }

    #[test]
    fn names_numbers_and_groups() {
        let dir = etc();
        let t = IdFiles {
            passwd: dir.path().join("passwd"),
            group: dir.path().join("group"),
        };
        let t = &t;
        let app = resolve("app", t).unwrap();
        assert_eq!(
            (app.uid, app.gid, app.groups.clone()),
            (1000, 1000, vec![1000, 10])
        );
        assert_eq!(app.home, Path::new("/home/app"));
        let root = resolve("", t).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let n = resolve("4242", t).unwrap();
        assert_eq!((n.uid, n.gid), (4242, 0));
        let ug = resolve("app:wheel", t).unwrap();
        assert_eq!((ug.uid, ug.gid, ug.groups), (1000, 10, vec![10]));
        let by_id = resolve("1000:5", t).unwrap();
        assert_eq!((by_id.uid, by_id.gid), (1000, 5));
        assert!(resolve("nobody-here", t).is_err());
        assert!(resolve("app:nogroup", t).is_err());
    }

    #[test]
    fn a_passwd_symlink_is_resolved_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        // On the host this would be the host's passwd, which has root but never "app".
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("etc/passwd")).unwrap();
        let files = IdFiles::in_root(t.path());
        assert!(files.passwd.starts_with(t.path()));
        assert!(
            resolve("root", &files).is_err(),
            "the host's passwd was read"
        );
    }
}
