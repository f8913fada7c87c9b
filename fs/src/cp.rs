//! `rfs cp`: copying files between the host and a union, through the engine ([`UnionFs`]).
//!
//! Paths in the union are resolved as the container sees them ([`resolve`]): `..` stops at
//! its root, and a symlink, absolute or relative, resolves inside the union, never on the
//! host. What is copied in goes through the engine's own operations, so it gets copy-up,
//! whiteouts and ownership exactly as a write from inside the container would; new entries
//! are root's (as `docker cp` makes them) with the source's mode and modification time.
//!
//! What is copied out is created new on the host (`mkdir`, `O_CREAT|O_EXCL`): a name from the
//! container can never lead a write through a symlink on the host, and a symlink in the union
//! is copied as a symlink. Files the caller creates are the caller's; modes and modification
//! times are the union's. Hard links are copied as separate files, and device nodes and
//! sockets are skipped (with a warning), as a non-root `cp -a` would.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::lower::{FileKind, ROOT_INO};
use crate::sys::SetTime;
use crate::union::{Attr, Caller, SetAttr, UnionFs, Writer};

/// How many symlinks one resolution follows before it gives up (the kernel's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// The size of one read or write through the engine.
const CHUNK: u32 = 1 << 20;

/// Resolves `path` (absolute or not, always from the union's root) to its entry. Symlinks
/// in the middle of the path are followed inside the union; the last component is followed
/// only with `follow_last`.
///
/// # Errors
/// `NotFound`, `NotDir` for a file used as a directory, `Invalid` for a symlink loop; host
/// errors.
pub fn resolve(fs: &UnionFs, path: &[u8], follow_last: bool) -> Result<Attr, Error> {
    let mut todo: Vec<Vec<u8>> = components(path).into_iter().rev().collect();
    // The directories from the root down to where the walk is.
    let mut chain: Vec<u64> = vec![ROOT_INO];
    let mut attr = fs.getattr(ROOT_INO)?;
    let mut hops = 0;
    while let Some(name) = todo.pop() {
        if attr.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        if name == b".." {
            if chain.len() > 1 {
                chain.pop();
            }
            attr = fs.getattr(*chain.last().unwrap_or(&ROOT_INO))?;
            continue;
        }
        let parent = *chain.last().unwrap_or(&ROOT_INO);
        let found = fs.lookup(parent, OsStr::from_bytes(&name))?;
        if found.kind == FileKind::Symlink && (!todo.is_empty() || follow_last) {
            hops += 1;
            if hops > MAX_SYMLINKS {
                return Err(Error::Invalid("too many levels of symbolic links"));
            }
            let target = fs.readlink(found.ino)?;
            if target.first() == Some(&b'/') {
                chain.truncate(1);
                attr = fs.getattr(ROOT_INO)?;
            }
            todo.extend(components(&target).into_iter().rev());
            continue;
        }
        if found.kind == FileKind::Dir {
            chain.push(found.ino);
        }
        attr = found;
    }
    Ok(attr)
}

/// The parent directory of `path` in the union (resolved as [`resolve`] does, following
/// symlinks) and the last component. `None` for the root itself.
///
/// # Errors
/// As [`resolve`]; `NotDir` when the parent is not a directory.
pub fn resolve_parent(fs: &UnionFs, path: &[u8]) -> Result<Option<(Attr, Vec<u8>)>, Error> {
    let mut parts = components(path);
    // `a/b/..` names a directory by way of `..`: only the root may be named so.
    if parts.last().is_some_and(|p| p == b"..") {
        if resolve(fs, path, true)?.ino == ROOT_INO {
            return Ok(None);
        }
        return Err(Error::Invalid("a destination must not end in .."));
    }
    let Some(name) = parts.pop() else {
        return Ok(None);
    };
    let parent_path = parts.join(&b'/');
    let parent = resolve(fs, &parent_path, true)?;
    if parent.kind != FileKind::Dir {
        return Err(Error::NotDir);
    }
    Ok(Some((parent, name)))
}

fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

/// What a copy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Entries copied.
    pub entries: u64,
    /// Bytes of file data copied.
    pub bytes: u64,
    /// Entries skipped (device nodes, sockets).
    pub skipped: u64,
}

/// Copies the union entry `src` (and everything below it) to the new host path `dest`; an
/// existing directory at `dest` takes a directory's entries, an existing file is replaced
/// by a file.
///
/// # Errors
/// The union cannot be read; `dest` cannot be created (its parent is missing, or something
/// that is not a directory is in the way).
pub fn copy_out(fs: &UnionFs, src: &Attr, dest: &Path) -> Result<Copied, Error> {
    let mut copied = Copied::default();
    out_entry(fs, src, dest, &mut copied)?;
    Ok(copied)
}

fn host_err(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::io(op, path.display().to_string(), e)
}

fn out_entry(fs: &UnionFs, src: &Attr, dest: &Path, copied: &mut Copied) -> Result<(), Error> {
    match src.kind {
        FileKind::Dir => {
            match fs::create_dir(dest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let md = fs::symlink_metadata(dest).map_err(|e| host_err("stat", dest, e))?;
                    if !md.is_dir() {
                        return Err(host_err(
                            "mkdir",
                            dest,
                            std::io::Error::from_raw_os_error(libc::EEXIST),
                        ));
                    }
                }
                Err(e) => return Err(host_err("mkdir", dest, e)),
            }
            // Writable while it is filled; its own mode once full.
            fs::set_permissions(dest, fs::Permissions::from_mode(0o700))
                .map_err(|e| host_err("chmod", dest, e))?;
            let fh = fs.opendir(src.ino)?;
            let listing = fs.readdir(fh);
            fs.release(fh);
            for entry in listing?.iter() {
                if entry.name == b"." || entry.name == b".." {
                    continue;
                }
                let child = fs.lookup(src.ino, OsStr::from_bytes(&entry.name))?;
                out_entry(
                    fs,
                    &child,
                    &dest.join(OsStr::from_bytes(&entry.name)),
                    copied,
                )?;
            }
            fs::set_permissions(dest, fs::Permissions::from_mode(src.perm & 0o7777))
                .map_err(|e| host_err("chmod", dest, e))?;
            set_host_mtime(dest, src.mtime)?;
        }
        FileKind::File => {
            let mut out = create_host_file(dest)?;
            let opened = fs.open(src.ino, libc::O_RDONLY, Caller::ROOT)?;
            let result = (|| -> Result<(), Error> {
                let mut offset = 0u64;
                loop {
                    let data = fs.read(opened.fh, offset, CHUNK)?;
                    if data.is_empty() {
                        return Ok(());
                    }
                    out.write_all(&data)
                        .map_err(|e| host_err("write", dest, e))?;
                    offset += data.len() as u64;
                    copied.bytes += data.len() as u64;
                }
            })();
            fs.release(opened.fh);
            result?;
            out.set_permissions(fs::Permissions::from_mode(src.perm & 0o7777))
                .map_err(|e| host_err("chmod", dest, e))?;
            drop(out);
            set_host_mtime(dest, src.mtime)?;
        }
        FileKind::Symlink => {
            let target = fs.readlink(src.ino)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), dest)
                .map_err(|e| host_err("symlink", dest, e))?;
        }
        FileKind::Fifo | FileKind::CharDev | FileKind::BlockDev | FileKind::Socket => {
            log::warn!(
                "{}: a {:?} is not copied out of a container",
                dest.display(),
                src.kind
            );
            copied.skipped += 1;
            return Ok(());
        }
    }
    copied.entries += 1;
    Ok(())
}

/// A new host file at `path`, or an existing regular file emptied; never through a
/// symlink.
fn create_host_file(path: &Path) -> Result<fs::File, Error> {
    let new = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match new {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .and_then(|f| {
                if f.metadata()?.is_file() {
                    Ok(f)
                } else {
                    Err(std::io::Error::from_raw_os_error(libc::EEXIST))
                }
            })
            .map_err(|e| host_err("open", path, e)),
        other => other.map_err(|e| host_err("create", path, e)),
    }
}

fn set_host_mtime(path: &Path, mtime: (i64, u32)) -> Result<(), Error> {
    let Ok(secs) = u64::try_from(mtime.0) else {
        return Ok(());
    };
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs, mtime.1);
    fs::File::open(path)
        .and_then(|f| f.set_modified(t))
        .map_err(|e| host_err("utimes", path, e))
}

/// Copies the host path `src` (not following it if it is a symlink; everything below it if
/// it is a directory) to `name` in the union directory `parent`, made by `owner`. An existing directory there
/// takes a directory's entries; anything else there is replaced.
///
/// # Errors
/// The host file cannot be read; the union refuses a change (a directory where a file is to
/// go, no upper, `ENOSPC`...).
pub fn copy_in(
    fs: &UnionFs,
    src: &Path,
    parent: u64,
    name: &[u8],
    owner: Caller,
) -> Result<Copied, Error> {
    let mut copied = Copied::default();
    In { fs, owner }.entry(src, parent, name, &mut copied)?;
    Ok(copied)
}

/// A copy into a union, by one owner.
struct In<'a> {
    fs: &'a UnionFs,
    owner: Caller,
}

impl In<'_> {
    fn entry(
        &self,
        src: &Path,
        parent: u64,
        name: &[u8],
        copied: &mut Copied,
    ) -> Result<(), Error> {
        let fs = self.fs;
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let md = fs::symlink_metadata(src).map_err(|e| host_err("stat", src, e))?;
        let os_name = OsStr::from_bytes(name);
        let existing = match fs.lookup(parent, os_name) {
            Ok(a) => Some(a),
            Err(Error::NotFound) => None,
            Err(e) => return Err(e),
        };
        let ft = md.file_type();
        let mtime = SetTime::At(md.mtime(), u32::try_from(md.mtime_nsec()).unwrap_or(0));
        let perm = md.mode() & 0o7777;
        if ft.is_dir() {
            let dir = match existing {
                Some(a) if a.kind == FileKind::Dir => a,
                Some(_) => {
                    fs.unlink(parent, os_name)?;
                    fs.mkdir(parent, os_name, 0o700, self.owner)?
                }
                None => fs.mkdir(parent, os_name, 0o700, self.owner)?,
            };
            let mut children: Vec<PathBuf> = fs::read_dir(src)
                .map_err(|e| host_err("opendir", src, e))?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
                .map_err(|e| host_err("readdir", src, e))?;
            children.sort();
            for child in children {
                let child_name = child.file_name().map(OsStrExt::as_bytes).unwrap_or(b"");
                self.entry(&child, dir.ino, child_name, copied)?;
            }
            self.set_attrs(dir.ino, Some(perm), mtime)?;
        } else if ft.is_file() {
            let mut file = fs::File::open(src).map_err(|e| host_err("open", src, e))?;
            if existing.is_some_and(|a| a.kind == FileKind::Dir) {
                return Err(Error::IsDir);
            }
            if existing.is_some() {
                fs.unlink(parent, os_name)?;
            }
            let (attr, fh) = fs.create(parent, os_name, perm, libc::O_WRONLY, self.owner)?;
            let result = (|| -> Result<(), Error> {
                let mut offset = 0u64;
                let mut buf = vec![0u8; CHUNK as usize];
                loop {
                    let n = file.read(&mut buf).map_err(|e| host_err("read", src, e))?;
                    if n == 0 {
                        return Ok(());
                    }
                    let mut done = 0;
                    while done < n {
                        let w = fs.write(fh, offset, &buf[done..n], Writer::default())?;
                        if w == 0 {
                            return Err(Error::io(
                                "write",
                                String::from_utf8_lossy(name).into_owned(),
                                std::io::Error::from_raw_os_error(libc::EIO),
                            ));
                        }
                        done += w;
                        offset += w as u64;
                    }
                    copied.bytes += n as u64;
                }
            })();
            fs.release(fh);
            result?;
            self.set_attrs(attr.ino, Some(perm), mtime)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(|e| host_err("readlink", src, e))?;
            if existing.is_some_and(|a| a.kind == FileKind::Dir) {
                return Err(Error::IsDir);
            }
            if existing.is_some() {
                fs.unlink(parent, os_name)?;
            }
            fs.symlink(parent, os_name, target.as_os_str().as_bytes(), self.owner)?;
        } else if ft.is_fifo() {
            if existing.is_some_and(|a| a.kind == FileKind::Dir) {
                return Err(Error::IsDir);
            }
            if existing.is_some() {
                fs.unlink(parent, os_name)?;
            }
            let attr = fs.mknod(parent, os_name, libc::S_IFIFO | perm, 0, self.owner)?;
            self.set_attrs(attr.ino, None, mtime)?;
        } else {
            log::warn!("{}: device nodes and sockets are not copied", src.display());
            copied.skipped += 1;
            return Ok(());
        }
        copied.entries += 1;
        Ok(())
    }

    fn set_attrs(&self, ino: u64, perm: Option<u32>, mtime: SetTime) -> Result<(), Error> {
        self.fs
            .setattr(
                ino,
                SetAttr {
                    mode: perm,
                    mtime: Some(mtime),
                    ..SetAttr::default()
                },
                None,
                self.owner,
            )
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::{LayerInput, LowerTree};
    use crate::union::UpperDirs;

    struct Fx {
        _dir: tempfile::TempDir,
        root: PathBuf,
        fs: UnionFs,
    }

    /// A union of one directory layer (`base`, with `etc/passwd`, a relative and an
    /// absolute symlink, and a dir) and an empty upper.
    fn fixture() -> Fx {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let base = root.join("base");
        for d in ["etc", "data/sub", "up", "work", "host"] {
            let p = if ["up", "work", "host"].contains(&d) {
                root.join(d)
            } else {
                base.join(d)
            };
            fs::create_dir_all(p).expect("mkdir");
        }
        fs::write(base.join("etc/passwd"), "root:x:0:0:container\n").expect("passwd");
        fs::write(base.join("data/sub/f"), "f").expect("f");
        std::os::unix::fs::symlink("/etc", base.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../etc", base.join("data/rel")).expect("symlink");
        std::os::unix::fs::symlink("loop2", base.join("loop1")).expect("symlink");
        std::os::unix::fs::symlink("loop1", base.join("loop2")).expect("symlink");
        let lower = LowerTree::build(vec![LayerInput::Dir(base)]).expect("lower");
        let fs = UnionFs::new(
            lower,
            Some(UpperDirs {
                upper: root.join("up"),
                work: root.join("work"),
            }),
        )
        .expect("union");
        Fx {
            _dir: dir,
            root,
            fs,
        }
    }

    #[test]
    fn symlinks_and_dotdot_resolve_inside_the_union() {
        let fx = fixture();
        let want = resolve(&fx.fs, b"/etc/passwd", false).expect("passwd").ino;
        for path in [
            "abs/passwd",
            "/data/rel/passwd",
            "data/sub/../../../../etc/passwd",
            "/../etc/./passwd",
        ] {
            let got = resolve(&fx.fs, path.as_bytes(), false).expect(path);
            assert_eq!(got.ino, want, "{path}");
        }
        // The last component is followed only when asked.
        let link = resolve(&fx.fs, b"abs", false).expect("abs");
        assert_eq!(link.kind, FileKind::Symlink);
        let dir = resolve(&fx.fs, b"abs", true).expect("abs");
        assert_eq!(dir.kind, FileKind::Dir);
        assert!(matches!(
            resolve(&fx.fs, b"loop1/x", false),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            resolve(&fx.fs, b"etc/passwd/x", false),
            Err(Error::NotDir)
        ));
        assert!(matches!(
            resolve(&fx.fs, b"nope", false),
            Err(Error::NotFound)
        ));
    }

    #[test]
    fn a_copy_in_goes_through_the_engine_and_a_copy_out_back_to_the_host() {
        let fx = fixture();
        let host = fx.root.join("host");
        fs::create_dir_all(host.join("tree/inner")).expect("mkdir");
        fs::write(host.join("tree/inner/data"), "payload").expect("data");
        fs::set_permissions(
            host.join("tree/inner/data"),
            fs::Permissions::from_mode(0o640),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("/etc/passwd", host.join("tree/pw")).expect("symlink");
        // Into /abs/ (a symlink to /etc in the union): lands in the union's /etc.
        let (etc, name) = resolve_parent(&fx.fs, b"/abs/tree")
            .expect("parent")
            .expect("some");
        let copied =
            copy_in(&fx.fs, &host.join("tree"), etc.ino, &name, Caller::ROOT).expect("copy in");
        assert_eq!((copied.entries, copied.bytes), (4, 7));
        assert_eq!(
            fs::read_to_string(fx.root.join("up/etc/tree/inner/data")).expect("upper"),
            "payload"
        );
        // Replacing a lower file copies nothing up but leaves the new file.
        let (etc, name) = resolve_parent(&fx.fs, b"etc/passwd")
            .expect("p")
            .expect("s");
        fs::write(host.join("passwd"), "new\n").expect("w");
        copy_in(&fx.fs, &host.join("passwd"), etc.ino, &name, Caller::ROOT).expect("replace");

        let out = fx.root.join("out");
        let src = resolve(&fx.fs, b"/data/rel", true).expect("etc");
        copy_out(&fx.fs, &src, &out).expect("copy out");
        assert_eq!(fs::read_to_string(out.join("passwd")).expect("p"), "new\n");
        assert_eq!(
            fs::read_to_string(out.join("tree/inner/data")).expect("d"),
            "payload"
        );
        let md = fs::metadata(out.join("tree/inner/data")).expect("md");
        assert_eq!(md.permissions().mode() & 0o7777, 0o640);
        assert_eq!(
            fs::read_link(out.join("tree/pw")).expect("link"),
            Path::new("/etc/passwd"),
            "a symlink is copied as a symlink"
        );
        // Copying out over an existing directory's entries, never through a host symlink.
        std::os::unix::fs::symlink(fx.root.join("victim"), out.join("tree/inner/data2"))
            .expect("trap");
        fs::write(host.join("data2"), "x").expect("x");
        let (inner, name) = resolve_parent(&fx.fs, b"etc/tree/inner/data2")
            .expect("p")
            .expect("s");
        copy_in(&fx.fs, &host.join("data2"), inner.ino, &name, Caller::ROOT).expect("in");
        let src = resolve(&fx.fs, b"etc/tree", false).expect("tree");
        assert!(copy_out(&fx.fs, &src, &out.join("tree")).is_err());
        assert!(
            !fx.root.join("victim").exists(),
            "no write through a symlink"
        );
    }
}
