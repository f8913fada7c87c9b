//! `rfs cp` of a running container: its union is served by its own FUSE server, so the copy
//! goes through the container's mount, as `docker cp` does, by a child of this process that
//! joined the container (`rfs_runner::exec::join`: its namespaces and root, as its root user).
//! The two sides exchange one tar stream over a pipe: the reading side packs the source
//! ([`pack`]), the writing side unpacks it into a fresh directory beside the destination and
//! moves the result into place ([`place`]). Inside the container the child's root is the
//! container's, so no path of it reaches the host; on the host the unpacking refuses entries
//! that leave the fresh directory (`..`, absolute names, a path through a symlink).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The name of the one top entry of the tar stream.
const ITEM: &str = "item";

/// Packs `src` (its contents only when `contents_only`) as the tar entry [`ITEM`] to `out`;
/// symlinks are stored as links, the last component followed only with `follow`.
pub(crate) fn pack(src: &Path, follow: bool, contents_only: bool, out: impl Write) -> Result<()> {
    let md = if follow {
        std::fs::metadata(src)
    } else {
        std::fs::symlink_metadata(src)
    }
    .with_context(|| format!("{}", src.display()))?;
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    if md.is_dir() {
        if contents_only {
            tar.append_dir(ITEM, src)?;
            for entry in std::fs::read_dir(src).with_context(|| format!("{}", src.display()))? {
                let entry = entry?;
                let name = Path::new(ITEM).join(entry.file_name());
                if entry.file_type()?.is_dir() {
                    tar.append_dir_all(&name, entry.path())?;
                } else {
                    tar.append_path_with_name(entry.path(), &name)?;
                }
            }
        } else {
            tar.append_dir_all(ITEM, src)
                .with_context(|| format!("{}", src.display()))?;
        }
    } else if follow {
        let mut file = File::open(src).with_context(|| format!("{}", src.display()))?;
        tar.append_file(ITEM, &mut file)?;
    } else {
        tar.append_path_with_name(src, ITEM)
            .with_context(|| format!("{}", src.display()))?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// Unpacks the stream `input` (from [`pack`]) and puts its item where `docker cp` would for
/// the destination `dest`: into an existing directory under `name` (or, `contents_only`, its
/// entries into it), else as `dest` itself (whose parent must exist). An existing file there is
/// replaced; a directory where a file goes (or the reverse) is an error.
pub(crate) fn place(
    input: impl Read,
    dest: &Path,
    name: &OsStr,
    contents_only: bool,
) -> Result<()> {
    let dest_is_dir = std::fs::metadata(dest).is_ok_and(|m| m.is_dir());
    let (dir, target) = if dest_is_dir && !contents_only {
        (dest.to_path_buf(), dest.join(name))
    } else {
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (parent, dest.to_path_buf())
    };
    let fresh = Fresh::new(&dir)?;
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(false);
    archive
        .unpack(fresh.path())
        .context("unpacking what was copied")?;
    let item = fresh.path().join(ITEM);
    if contents_only && dest_is_dir {
        for entry in std::fs::read_dir(&item)? {
            let entry = entry?;
            put(&entry.path(), &dest.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        put(&item, &target)
    }
}

/// A fresh directory beside the destination, removed with whatever is left in it.
struct Fresh(PathBuf);

impl Fresh {
    fn new(dir: &Path) -> Result<Fresh> {
        let path = dir.join(format!(".rfs-cp-{}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("making {}", path.display()))?;
        Ok(Fresh(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Moves `from` to `to`, replacing a file there, merging into a directory there.
fn put(from: &Path, to: &Path) -> Result<()> {
    let from_dir = std::fs::symlink_metadata(from)?.is_dir();
    match std::fs::symlink_metadata(to) {
        Ok(md) if md.is_dir() && from_dir => {
            for entry in std::fs::read_dir(from)? {
                let entry = entry?;
                put(&entry.path(), &to.join(entry.file_name()))?;
            }
            Ok(())
        }
        Ok(md) if md.is_dir() => bail!("{}: a directory is in the way", to.display()),
        Ok(_) if from_dir => bail!("cannot copy a directory over the file {}", to.display()),
        _ => std::fs::rename(from, to).with_context(|| format!("moving into {}", to.display())),
    }
}

/// The exit of the child that worked in the container, as an error if it failed.
fn reap(pid: nix::unistd::Pid, what: &str) -> Result<()> {
    match nix::sys::wait::waitpid(pid, None).context("waiting for the copy")? {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        _ => bail!("{what} failed in the container (see above)"),
    }
}

/// In the child: joins the container of init `init`, runs `work`, and exits with its outcome.
fn in_container(init: i32, work: impl FnOnce() -> Result<()>) -> ! {
    let result = rfs_runner::exec::join(init)
        .context("joining the container")
        .and_then(|()| work());
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rfs: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

/// Copies the container path `src` out to the host path `dest`.
pub(crate) fn copy_out(init: i32, src: &str, follow: bool, dest: &Path) -> Result<()> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let src_path = PathBuf::from(if src.is_empty() { "/" } else { src });
    let contents_only = src == "." || src.ends_with("/.");
    let child = match rfs_runner::syscall::fork_single_threaded()? {
        rfs_runner::syscall::Forked::Child => {
            drop(read);
            in_container(init, || {
                pack(&src_path, follow, contents_only, File::from(write))
            })
        }
        rfs_runner::syscall::Forked::Parent(pid) => pid,
    };
    drop(write);
    let name = Path::new(src.trim_end_matches("/."))
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_else(|| "root".into());
    let placed = place(File::from(read), dest, &name, contents_only);
    reap(child, "reading").and(placed)
}

/// Copies the host path `src` into the container path `dest`.
pub(crate) fn copy_in(init: i32, src: &Path, dest: &str) -> Result<()> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let src_text = src.to_string_lossy();
    let contents_only = src_text == "." || src_text.ends_with("/.");
    let name = src
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_else(|| "copy".into());
    let child = match rfs_runner::syscall::fork_single_threaded()? {
        rfs_runner::syscall::Forked::Child => {
            drop(write);
            in_container(init, || {
                place(File::from(read), Path::new(dest), &name, contents_only)
            })
        }
        rfs_runner::syscall::Forked::Parent(pid) => pid,
    };
    drop(read);
    let packed = pack(src, false, contents_only, File::from(write));
    reap(child, "writing").and(packed)
}
