//! The user namespace's id maps: which host ids the container's ids stand for, and writing
//! them for a process that has just called `unshare(CLONE_NEWUSER)`.
//!
//! - Real root maps every id to itself (`0 0 4294967295`), written directly.
//! - A user with a range in `/etc/subuid` and `/etc/subgid` gets `0 → own id` plus up to 65536
//!   ids from the range, written by the setuid helpers `newuidmap`/`newgidmap` (from the
//!   `uidmap` package), which check the range.
//! - Anyone else gets the single mapping `0 → own id`, which a process may write for its own
//!   child namespace after denying `setgroups` (user_namespaces(7), "Interaction with system
//!   calls that change process UIDs or GIDs").

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::Pid;

use crate::{Error, Result};

/// The most ids mapped from a subordinate range (enough for image users such as 65534).
const MAX_RANGE: u32 = 65536;

/// A range of subordinate ids from `/etc/subuid` or `/etc/subgid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first host id.
    pub start: u32,
    /// How many ids.
    pub count: u32,
}

/// How the container's ids map to the host's: the `uid_map`/`gid_map` of its user namespace
/// (not how a mount shows ids on disk, which is `rfs_fs::fuse::IdMapping`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsernsMapping {
    /// Real root: every id maps to itself.
    Identity,
    /// 0 → the caller's uid/gid, 1.. → a subordinate range, written by the setuid helpers.
    Ranges {
        /// The caller's uid.
        uid: u32,
        /// The caller's gid.
        gid: u32,
        /// The uid range for container ids 1...
        sub_uid: IdRange,
        /// The gid range for container ids 1...
        sub_gid: IdRange,
        /// The `newuidmap` binary.
        newuidmap: PathBuf,
        /// The `newgidmap` binary.
        newgidmap: PathBuf,
    },
    /// Only 0 → the caller's uid/gid; `setgroups` is denied.
    Single {
        /// The caller's uid.
        uid: u32,
        /// The caller's gid.
        gid: u32,
    },
}

impl UsernsMapping {
    /// The mapping for the calling user: see the module docs.
    ///
    /// # Errors
    /// [`Error::MissingIdMapTool`] if the user has subordinate ranges but the helpers are not
    /// installed.
    pub fn for_current_user() -> Result<UsernsMapping> {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        UsernsMapping::plan(
            (uid, gid, name.as_deref()),
            &read("/etc/subuid"),
            &read("/etc/subgid"),
            find_tool,
        )
    }

    /// The mapping for user `(uid, gid, name)` given the texts of `/etc/subuid` and
    /// `/etc/subgid`, finding the helpers with `find_tool`.
    fn plan(
        (uid, gid, name): (u32, u32, Option<&str>),
        subuid: &str,
        subgid: &str,
        find_tool: impl Fn(&str) -> Option<PathBuf>,
    ) -> Result<UsernsMapping> {
        if uid == 0 {
            return Ok(UsernsMapping::Identity);
        }
        let (Some(sub_uid), Some(sub_gid)) = (
            parse_ranges(subuid, name, uid),
            parse_ranges(subgid, name, uid),
        ) else {
            return Ok(UsernsMapping::Single { uid, gid });
        };
        let user = name.map_or_else(|| uid.to_string(), str::to_string);
        let newuidmap = find_tool("newuidmap").ok_or_else(|| Error::MissingIdMapTool {
            user: user.clone(),
            ranges_file: "/etc/subuid".into(),
            tool: "newuidmap",
        })?;
        let newgidmap = find_tool("newgidmap").ok_or_else(|| Error::MissingIdMapTool {
            user,
            ranges_file: "/etc/subgid".into(),
            tool: "newgidmap",
        })?;
        Ok(UsernsMapping::Ranges {
            uid,
            gid,
            sub_uid,
            sub_gid,
            newuidmap,
            newgidmap,
        })
    }

    /// Whether only root is mapped.
    pub fn is_single(&self) -> bool {
        matches!(self, UsernsMapping::Single { .. })
    }

    /// A one-line notice for the user when the mapping loses information.
    pub fn notice(&self) -> Option<String> {
        match self {
            UsernsMapping::Single { .. } => Some(
                "rfs: no /etc/subuid and /etc/subgid range for this user: only root is mapped, \
                 other owners show as nobody and processes run as root \
                 (add a range, e.g. `usermod --add-subuids 100000-165535 --add-subgids \
                 100000-165535 USER`)"
                    .to_string(),
            ),
            _ => None,
        }
    }

    /// Writes the maps of the user namespace of process `pid` (which must have called
    /// `unshare(CLONE_NEWUSER)` and be waiting).
    ///
    /// # Errors
    /// A map file cannot be written, or a helper fails.
    pub fn apply(&self, pid: Pid) -> Result<()> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        match self {
            UsernsMapping::Identity => {
                write_map(&proc.join("uid_map"), "0 0 4294967295\n")?;
                write_map(&proc.join("gid_map"), "0 0 4294967295\n")
            }
            UsernsMapping::Single { uid, gid } => {
                write_map(&proc.join("setgroups"), "deny\n")?;
                write_map(&proc.join("uid_map"), &format!("0 {uid} 1\n"))?;
                write_map(&proc.join("gid_map"), &format!("0 {gid} 1\n"))
            }
            UsernsMapping::Ranges {
                uid,
                gid,
                sub_uid,
                sub_gid,
                newuidmap,
                newgidmap,
            } => {
                run_tool(newuidmap, pid, *uid, *sub_uid)?;
                run_tool(newgidmap, pid, *gid, *sub_gid)
            }
        }
    }
}

fn write_map(path: &Path, content: &str) -> Result<()> {
    std::fs::write(path, content).map_err(|source| Error::WriteIdMap {
        path: path.to_path_buf(),
        content: content.trim_end().to_string(),
        source,
    })
}

fn run_tool(tool: &Path, pid: Pid, own: u32, range: IdRange) -> Result<()> {
    let count = range.count.min(MAX_RANGE);
    let args = [
        pid.to_string(),
        "0".into(),
        own.to_string(),
        "1".into(),
        "1".into(),
        range.start.to_string(),
        count.to_string(),
    ];
    let shown = args.join(" ");
    let out = Command::new(tool)
        .args(&args)
        .output()
        .map_err(|e| Error::IdMapTool {
            tool: tool.display().to_string(),
            args: shown.clone(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::IdMapTool {
            tool: tool.display().to_string(),
            args: shown,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The first range for `name` (or the numeric `uid`) in the text of a subordinate-id file
/// (`name:start:count` per line; see subuid(5)).
fn parse_ranges(text: &str, name: Option<&str>, uid: u32) -> Option<IdRange> {
    let uid_s = uid.to_string();
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let who = f.next()?;
        if who != uid_s && Some(who) != name {
            return None;
        }
        let start = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        (count > 0).then_some(IdRange { start, count })
    })
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into(), "/usr/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Checks the sysctls that turn user namespaces off, so the failure is one clear message
/// instead of an `EPERM` from `unshare`.
///
/// # Errors
/// [`Error::UserNamespacesUnavailable`] naming the setting and how to change it.
pub fn check_user_namespaces() -> Result<()> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Err(Error::UserNamespacesUnavailable {
            reason: "user.max_user_namespaces is 0 (set it with \
                     `sysctl -w user.max_user_namespaces=15000`)"
                .into(),
        });
    }
    let root = nix::unistd::geteuid().is_root();
    if !root && read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Err(Error::UserNamespacesUnavailable {
            reason: "kernel.unprivileged_userns_clone is 0 (set it with \
                     `sysctl -w kernel.unprivileged_userns_clone=1`)"
                .into(),
        });
    }
    if !root
        && read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        return Err(Error::UserNamespacesUnavailable {
            reason: "AppArmor restricts unprivileged user namespaces (set \
                     `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or add an \
                     AppArmor profile for rfs that allows `userns`)"
                .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_name_or_uid_and_skip_empty() {
        let text = "alice:100000:65536\nbob:0:0\n1002:200000:1000\n";
        assert_eq!(
            parse_ranges(text, Some("alice"), 1001),
            Some(IdRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(parse_ranges(text, Some("bob"), 1003), None);
        assert_eq!(
            parse_ranges(text, Some("carol"), 1002),
            Some(IdRange {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(parse_ranges(text, None, 5), None);
    }

    #[test]
    fn the_mapping_follows_the_user_and_the_installed_tools() {
        let ranges = "alice:100000:65536\n";
        let tools = |t: &str| Some(PathBuf::from("/usr/bin").join(t));
        let none = |_: &str| None;
        assert_eq!(
            UsernsMapping::plan((0, 0, Some("root")), ranges, ranges, none).unwrap(),
            UsernsMapping::Identity
        );
        assert_eq!(
            UsernsMapping::plan((1002, 1002, Some("bob")), ranges, ranges, tools).unwrap(),
            UsernsMapping::Single {
                uid: 1002,
                gid: 1002
            }
        );
        let alice =
            UsernsMapping::plan((1001, 1001, Some("alice")), ranges, ranges, tools).unwrap();
        assert!(matches!(
            alice,
            UsernsMapping::Ranges {
                sub_uid: IdRange { start: 100000, .. },
                ..
            }
        ));
        let e = UsernsMapping::plan((1001, 1001, Some("alice")), ranges, ranges, none).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("newuidmap") && msg.contains("uidmap"), "{msg}");
    }
}
