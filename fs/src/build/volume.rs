//! `RUN` under a `VOLUME`: what Docker's legacy builder (and buildah 1.28) leave in the layer.
//!
//! Docker runs each `RUN` with an anonymous volume mounted at every path the image's config
//! declares (`VOLUME` of this build or of the base), so what the command writes, deletes or
//! chmods at or under such a path lands in the volume and never in the step's layer; a
//! `COPY`/`ADD` into the path writes the image itself and is kept. The volume's mountpoint
//! exists before the command starts: a directory the image lacks is made (`0755`, root's,
//! parents too) and that directory is part of the layer.
//!
//! rfs does the same with the step's upper directory: [`prepare`] makes the missing
//! mountpoints in the upper before the command runs (so `echo x > /vol/f` finds `/vol`), and
//! [`discard`] afterwards removes everything the upper holds at or under each volume path —
//! files, copied-up directories, whiteouts and opaque markers alike, which are all changes —
//! and makes the missing mountpoints again, fresh. The image directories above a volume that
//! the command's writes copied up, and that are left empty and as the image has them, go
//! too: Docker's layer has no entry for them, since the command never wrote them. A path is
//! resolved through the image's symlinks first, as Docker resolves a mountpoint inside the
//! container's root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::os::unix::fs::MetadataExt;

use super::copy::{self, CopyError};
use crate::lower::{FileKind, LowerTree};
use crate::ovl::{OverrideStat, is_private_xattr};

/// The volume paths of a config, resolved in the image `below`, outermost first.
fn resolved(paths: &[String], below: &LowerTree) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = paths
        .iter()
        .map(|p| copy::resolve_in_image(below, Path::new(&format!("/{p}"))))
        .filter(|p| p != Path::new("/"))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Makes, in `upper` over `below`, each volume directory the image lacks (and its missing
/// parents: `0755`, root's), as Docker makes a volume's mountpoint before a `RUN`.
///
/// # Errors
/// A component of a path is a non-directory in the image, or the upper cannot be written.
pub fn prepare(
    upper: &Path,
    paths: &[String],
    below: &LowerTree,
    as_root: bool,
) -> Result<(), CopyError> {
    for path in resolved(paths, below) {
        if below
            .lookup_path(path.as_os_str().as_encoded_bytes())
            .is_none()
        {
            copy::make_dir(upper, &path, below, as_root)?;
        }
    }
    Ok(())
}

/// Drops from `upper` (a finished `RUN`'s changes over `below`) everything at or under each
/// volume path, then makes the mountpoints the image lacks again ([`prepare`]).
///
/// # Errors
/// The upper cannot be read or written.
pub fn discard(
    upper: &Path,
    paths: &[String],
    below: &LowerTree,
    as_root: bool,
) -> Result<(), CopyError> {
    for path in resolved(paths, below) {
        let host = upper.join(path.strip_prefix("/").unwrap_or(&path));
        remove_tree(&host)?;
        for ancestor in path.ancestors().skip(1) {
            if ancestor == Path::new("/") || !drop_copied_up(upper, ancestor, below, as_root)? {
                break;
            }
        }
    }
    prepare(upper, paths, below, as_root)
}

/// Removes the upper's directory at image path `path` if it is only a copy-up: empty, a
/// directory in the image with the same mode and owner, and no xattr but rfs's bookkeeping
/// (an opaque marker or a redirect is a change). Returns whether it was removed.
fn drop_copied_up(
    upper: &Path,
    path: &Path,
    below: &LowerTree,
    as_root: bool,
) -> Result<bool, CopyError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| CopyError::Io { what, path, source }
    };
    let host = upper.join(path.strip_prefix("/").unwrap_or(path));
    let Ok(md) = fs::symlink_metadata(&host) else {
        return Ok(false);
    };
    let Some(node) = below.lookup_path(path.as_os_str().as_encoded_bytes()) else {
        return Ok(false);
    };
    if !md.is_dir() || below.node(node).kind != FileKind::Dir {
        return Ok(false);
    }
    if fs::read_dir(&host)
        .map_err(io("reading", &host))?
        .next()
        .is_some()
    {
        return Ok(false);
    }
    let dir = fs::File::open(&host).map_err(io("opening", &host))?;
    let fd = std::os::fd::AsFd::as_fd(&dir);
    let mut own = (md.mode() & 0o7777, md.uid(), md.gid());
    if !as_root {
        // Without root, what the upper holds is the image root's unless an override says.
        own = (md.mode() & 0o7777, 0, 0);
    }
    for name in crate::sys::list_xattr(fd).map_err(io("listing the xattrs of", &host))? {
        if name == b"user.containers.override_stat" {
            let c = crate::sys::cstr(&name).map_err(io("reading the xattrs of", &host))?;
            let value = crate::sys::get_xattr(fd, &c)
                .map_err(io("reading the xattrs of", &host))?
                .unwrap_or_default();
            if let Some(o) = OverrideStat::decode(&value) {
                own = (o.perm, o.uid, o.gid);
            }
        } else if !is_private_xattr(&name)
            || name.ends_with(b".overlay.opaque")
            || name.ends_with(b".overlay.redirect")
        {
            return Ok(false);
        }
    }
    let meta = below.node(node).meta();
    if own != (meta.perm & 0o7777, meta.uid, meta.gid) {
        return Ok(false);
    }
    drop(dir);
    fs::remove_dir(&host).map_err(io("removing", &host))?;
    Ok(true)
}

/// Removes `host` and what is under it, whatever it is; nothing if it does not exist. A
/// directory the command left unreadable or unwritable to its owner (`chmod 000`) is opened
/// up first: without root, the upper's files are this user's, and only the mode bars them.
fn remove_tree(host: &Path) -> Result<(), CopyError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| CopyError::Io { what, path, source }
    };
    let md = match fs::symlink_metadata(host) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("reading", host)(e)),
    };
    if !md.is_dir() {
        return fs::remove_file(host).map_err(io("removing", host));
    }
    if md.permissions().mode() & 0o700 != 0o700 {
        fs::set_permissions(host, fs::Permissions::from_mode(0o700))
            .map_err(io("opening up", host))?;
    }
    for entry in fs::read_dir(host).map_err(io("reading", host))? {
        let entry = entry.map_err(io("reading", host))?;
        remove_tree(&entry.path())?;
    }
    fs::remove_dir(host).map_err(io("removing", host))
}
