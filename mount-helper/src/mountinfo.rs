//! `/proc/self/mountinfo` (proc(5)): what is mounted where in this mount namespace. Read, not
//! `stat`ed, because a dead FUSE mount fails every `stat` with ENOTCONN but is still listed.

use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// The filesystem's `major:minor` (what `stat` gives as `st_dev`).
    pub(crate) device: String,
    /// Where it is mounted.
    pub(crate) mountpoint: PathBuf,
    /// The filesystem type.
    pub(crate) fstype: String,
    /// The mount's source (an rfs mount's is `rfs:<what>`).
    pub(crate) source: String,
}

impl MountEntry {
    /// Whether rfs serves it: a FUSE mount (type `fuse` when root mounts it directly,
    /// `fuse.rfs` through fusermount3) whose source rfs named.
    pub(crate) fn is_rfs(&self) -> bool {
        matches!(self.fstype.as_str(), "fuse" | "fuse.rfs") && self.source.starts_with("rfs:")
    }
}

/// The mounts of this namespace, in mount order (a later one covers an earlier one at the
/// same place).
pub(crate) fn entries() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(parse_line)
        .collect()
}

/// The topmost mount at `path` (an absolute path without symlinks), if any.
pub(crate) fn top_at(path: &Path) -> Option<MountEntry> {
    entries().into_iter().rev().find(|e| e.mountpoint == path)
}

/// `36 35 0:51 / /mnt rw,relatime shared:1 - fuse.rfs rfs:img rw,...`: the fields before
/// `-` are fixed up to the optional ones; the type is the first field after it.
fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let device = fields.nth(2)?.to_owned();
    let mountpoint = PathBuf::from(unescape(fields.nth(1)?));
    let mut fields = fields.skip_while(|f| *f != "-").skip(1);
    let fstype = fields.next()?.to_owned();
    let source = unescape(fields.next()?);
    Some(MountEntry {
        device,
        mountpoint,
        fstype,
        source,
    })
}

/// Undoes mountinfo's octal escapes of space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Whether `e` says the FUSE daemon behind a path is gone: a dead mount answers ENOTCONN,
/// or ECONNABORTED for a request that was under way when the kernel aborted the connection.
pub(crate) fn is_dead_mount(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED))
}

/// `path` made absolute with its symlinks resolved, also when it is a dead FUSE mount (which
/// `canonicalize` cannot stat): then its parent is resolved and its name appended.
pub(crate) fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(e) if is_dead_mount(&e) => {
            let name = path.file_name().ok_or(e)?;
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            Ok(std::fs::canonicalize(parent)?.join(name))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_and_without_optional_fields() {
        let e = parse_line(
            "36 35 0:51 / /mnt/a\\040b rw,nosuid shared:1 master:2 - fuse.rfs rfs:img rw,user_id=0",
        )
        .unwrap();
        assert_eq!(e.device, "0:51");
        assert_eq!(e.mountpoint, Path::new("/mnt/a b"));
        assert_eq!(e.fstype, "fuse.rfs");
        assert!(e.is_rfs());
        let e = parse_line("22 1 8:1 / / rw - ext4 /dev/sda1 rw").unwrap();
        assert_eq!((e.device.as_str(), e.fstype.as_str()), ("8:1", "ext4"));
        assert!(!e.is_rfs());
        let e = parse_line("40 1 0:60 / /m rw - fuse rfs:lower\\040dirs rw").unwrap();
        assert_eq!(e.source, "rfs:lower dirs");
        assert!(e.is_rfs());
        let e = parse_line("41 1 0:61 / /s rw - fuse.sshfs host:/ rw").unwrap();
        assert!(!e.is_rfs());
        assert_eq!(parse_line("garbage"), None);
    }
}
