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
    if nix::unistd::geteuid().is_root() {
        match nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => return Ok(ExitCode::SUCCESS),
            Err(e) => bail!(
                "unmounting {}: {fuse_err}; umount -l: {e}",
                mountpoint.display()
            ),
        }
    }
    bail!("unmounting {}: {fuse_err}", mountpoint.display())
}
