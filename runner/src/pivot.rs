//! Switching the root: `pivot_root` into the container's root and a detached unmount of the
//! old one, so no path and no mount leads back to the host's tree; `chroot` only where the
//! kernel cannot pivot (a root on an initramfs), with a notice.
//!
//! `pivot_root(".", ".")` stacks the old root on top of the new one at `/`; unmounting `/`
//! then takes the old root away (pivot_root(2), "NOTES"). It needs no directory for the old
//! root inside the container, so a read-only root works too.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::syscall::Syscall;
use crate::{Error, Result};

/// How the root was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootChange {
    /// `pivot_root`; the host's root is unmounted from the namespace.
    Pivoted,
    /// `chroot`; the host's root is still mounted, but out of reach of paths.
    Chrooted,
}

/// Makes `new_root` the root of this process's mount namespace and checks that `/` is it.
///
/// # Errors
/// A step failed, or `/` is not `new_root` afterwards.
pub fn pivot_into(new_root: &Path, sys: &dyn Syscall) -> Result<RootChange> {
    let expected = sys.stat_dev_ino(new_root).map_err(|source| Error::Stat {
        path: new_root.to_path_buf(),
        source,
    })?;
    sys.chdir(new_root).map_err(|source| Error::Chdir {
        path: new_root.to_path_buf(),
        source,
    })?;
    let dot = Path::new(".");
    let change = match sys.pivot_root(dot, dot) {
        Ok(()) => {
            // The old root now sits on top of `/`: make it a slave, so unmounting it does not
            // propagate to the host, then detach it.
            sys.mount(None, dot, None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)
                .map_err(|source| Error::Mount {
                    what: "make rslave".into(),
                    target: "/ (old root)".into(),
                    source,
                })?;
            sys.umount2(dot, MntFlags::MNT_DETACH)
                .map_err(|source| Error::Umount {
                    target: "/ (old root)".into(),
                    source,
                })?;
            RootChange::Pivoted
        }
        Err(Errno::EINVAL) => {
            sys.chroot(dot).map_err(|source| Error::Chroot {
                new_root: new_root.to_path_buf(),
                source,
            })?;
            RootChange::Chrooted
        }
        Err(source) => {
            return Err(Error::PivotRoot {
                new_root: new_root.to_path_buf(),
                source,
            });
        }
    };
    let slash = Path::new("/");
    sys.chdir(slash).map_err(|source| Error::Chdir {
        path: slash.to_path_buf(),
        source,
    })?;
    if sys.stat_dev_ino(slash).ok() != Some(expected) {
        return Err(Error::HostRootVisible {
            new_root: new_root.to_path_buf(),
        });
    }
    Ok(change)
}
