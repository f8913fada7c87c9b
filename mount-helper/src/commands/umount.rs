//! `rfs umount`: `fusermount3 -u`, and as root a lazy unmount if that fails.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Result, bail};

/// Unmounts `mountpoint`.
pub(crate) fn run(mountpoint: &Path) -> Result<ExitCode> {
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(mountpoint)
        .output();
    let fuse_err = match out {
        Ok(o) if o.status.success() => return Ok(ExitCode::SUCCESS),
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => format!("cannot run fusermount3: {e}"),
    };
    let detail = if nix::unistd::geteuid().is_root() {
        match nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => return Ok(ExitCode::SUCCESS),
            Err(e) => format!("{fuse_err}; umount -l: {e}"),
        }
    } else {
        fuse_err
    };
    // Both tools' messages are obscure for the common mistakes; name those plainly.
    if let Some(why) = plain_reason(mountpoint) {
        bail!("unmounting {}: {why}", mountpoint.display());
    }
    bail!("unmounting {}: {detail}", mountpoint.display())
}

/// "no such file or directory" or "not mounted", when that is why unmounting failed.
fn plain_reason(mountpoint: &Path) -> Option<&'static str> {
    let Ok(canon) = std::fs::canonicalize(mountpoint) else {
        // Not `exists()`: a dead FUSE mount fails lstat with ENOTCONN, and is mounted.
        return match std::fs::symlink_metadata(mountpoint) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no such file or directory"),
            _ => None,
        };
    };
    let canon = canon.to_string_lossy().into_owned();
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| unescape_mountinfo(p) == canon);
    (!mounted).then_some("not mounted")
}

/// Undoes mountinfo's octal escapes of space, tab, newline and backslash.
fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
