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
//! container's root; in the upper it is opened beneath the upper without following any
//! symlink, so a link the command made never leads the removal out of the upper.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::copy::{self, CopyError, io_err};
use crate::lower::{FileKind, LowerTree};
use crate::ovl::{Markers, is_private_xattr};
use crate::sys;

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
    let root = fs::File::open(upper).map_err(io_err("opening", upper))?;
    for path in resolved(paths, below) {
        let host = upper.join(path.strip_prefix("/").unwrap_or(&path));
        if let Some((parent, name)) =
            open_parent(root.as_fd(), &path).map_err(io_err("opening", &host))?
        {
            crate::upper::remove_tree(parent.as_fd(), &name).map_err(io_err("removing", &host))?;
        }
        for ancestor in path.ancestors().skip(1) {
            if ancestor == Path::new("/")
                || !drop_copied_up(root.as_fd(), upper, ancestor, below, as_root)?
            {
                break;
            }
        }
    }
    prepare(upper, paths, below, as_root)
}

/// Opens, beneath the upper `root`, the directory holding image path `path` (absolute, not
/// `/`), following no symlink; with the last component's name. `None` when a component is
/// missing, a symlink or not a directory: then nothing of `path` is in the upper.
fn open_parent(
    root: BorrowedFd<'_>,
    path: &Path,
) -> io::Result<Option<(OwnedFd, std::ffi::CString)>> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(None);
    };
    let parent = sys::rel_cstr(parent.as_os_str().as_bytes())?;
    match sys::openat_beneath(root, &parent, libc::O_PATH | libc::O_DIRECTORY, 0) {
        Ok(fd) => Ok(Some((fd, sys::cstr(name.as_bytes())?))),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Removes the upper's directory at image path `path` if it is only a copy-up: empty, a
/// directory in the image with the same mode and owner, and no xattr but rfs's bookkeeping
/// (an opaque marker or a redirect is a change). Returns whether it was removed.
fn drop_copied_up(
    root: BorrowedFd<'_>,
    upper: &Path,
    path: &Path,
    below: &LowerTree,
    as_root: bool,
) -> Result<bool, CopyError> {
    let host = upper.join(path.strip_prefix("/").unwrap_or(path));
    let Some(node) = below.lookup_path(path.as_os_str().as_bytes()) else {
        return Ok(false);
    };
    if below.node(node).kind != FileKind::Dir {
        return Ok(false);
    }
    let Some((parent, name)) = open_parent(root, path).map_err(io_err("opening", &host))? else {
        return Ok(false);
    };
    let dir = match sys::openat(parent.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
        Ok(fd) => fd,
        // Absent, or not a directory (a symlink, a whiteout): a change, or nothing to drop.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
            ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(io_err("opening", &host)(e)),
    };
    let read = |e| io_err("reading", &host)(e);
    let listing = sys::openat(dir.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
        .and_then(sys::read_dir)
        .map_err(read)?;
    if !listing.is_empty() {
        return Ok(false);
    }
    let xattrs = sys::list_xattr(dir.as_fd()).map_err(read)?;
    if xattrs.iter().any(|n| !is_private_xattr(n)) {
        return Ok(false);
    }
    let markers = Markers::read(dir.as_fd()).map_err(read)?;
    if markers.opaque || markers.redirect.is_some() {
        return Ok(false);
    }
    let st = sys::fstatat(dir.as_fd(), c"").map_err(read)?;
    // Without root, what the upper holds is the image root's unless an override says.
    let mut own = if as_root {
        (st.st_mode & 0o7777, st.st_uid, st.st_gid)
    } else {
        (st.st_mode & 0o7777, 0, 0)
    };
    if let Some(o) = markers.owner {
        own = (o.perm, o.uid, o.gid);
    }
    let meta = below.node(node).meta();
    if own != (meta.perm & 0o7777, meta.uid, meta.gid) {
        return Ok(false);
    }
    drop(dir);
    sys::unlinkat(parent.as_fd(), &name, true).map_err(io_err("removing", &host))?;
    Ok(true)
}
