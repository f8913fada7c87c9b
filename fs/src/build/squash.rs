//! Layer tars applied to a union through the engine, for `rfs build --squash`: the layers a
//! build added are replayed, in order, over a fresh upper on the base's layers, so the upper
//! holds their combined change and the commit code makes the one layer that replaces them.
//! The OCI rules apply as the engine implements them: `.wh.NAME` deletes NAME (and what is
//! below it), `.wh..wh..opq` empties its directory, a later entry replaces a path. Paths are
//! taken literally, component by component, never through a symlink.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;

use crate::Error;
use crate::lower::{FileKind, ROOT_INO};
use crate::ovl::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::sys::SetTime;
use crate::union::{Attr, Caller, SetAttr, UnionFs, Writer};

fn bad(what: &str, path: &[u8]) -> Error {
    Error::io(
        "applying a layer",
        format!("{}: {what}", String::from_utf8_lossy(path)),
        std::io::Error::from_raw_os_error(libc::EINVAL),
    )
}

/// Applies the layer tar `layer` to `fs`.
///
/// # Errors
/// The tar cannot be read, names a path under a missing directory or through a symlink, or
/// the union refuses a change.
pub fn apply_layer(fs: &UnionFs, layer: impl Read) -> Result<(), Error> {
    let mut archive = tar::Archive::new(layer);
    let entries = archive
        .entries()
        .map_err(|e| Error::io("reading a layer", "", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::io("reading a layer", "", e))?;
        let raw = entry.path_bytes().into_owned();
        let parts: Vec<&[u8]> = raw
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        let Some((name, dirs)) = parts.split_last() else {
            continue;
        };
        if parts.iter().any(|c| *c == b"..") {
            return Err(bad("a `..` component", &raw));
        }
        let parent = walk(fs, dirs).map_err(|_| bad("its directory is missing", &raw))?;
        if *name == OPAQUE_MARKER {
            clear_dir(fs, parent)?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            remove(fs, parent, hidden)?;
            continue;
        }
        let header = entry.header().clone();
        let mode = header.mode().map_err(|_| bad("a bad mode", &raw))? & 0o7777;
        let uid = header
            .uid()
            .ok()
            .and_then(|u| u32::try_from(u).ok())
            .unwrap_or(0);
        let gid = header
            .gid()
            .ok()
            .and_then(|g| u32::try_from(g).ok())
            .unwrap_or(0);
        let caller = Caller {
            uid,
            gid,
            root: true,
        };
        let os_name = OsStr::from_bytes(name);
        let existing = fs.lookup(parent, os_name).ok();
        let kind = header.entry_type();
        // Anything but a directory over a directory replaces what is there.
        if let Some(a) = &existing {
            if !(kind.is_dir() && a.kind == FileKind::Dir) {
                remove(fs, parent, name)?;
            }
        }
        let attr = match kind {
            tar::EntryType::Directory => match existing.filter(|a| a.kind == FileKind::Dir) {
                Some(a) => a,
                None => fs.mkdir(parent, os_name, mode, caller)?,
            },
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let (attr, fh) = fs.create(parent, os_name, mode, libc::O_WRONLY, caller)?;
                let mut buf = vec![0u8; 1 << 20];
                let mut offset = 0u64;
                let copied = loop {
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break Ok(()),
                        Ok(n) => n,
                        Err(e) => break Err(Error::io("reading a layer", "", e)),
                    };
                    if let Err(e) = fs.write(fh, offset, &buf[..n], Writer::default()) {
                        break Err(e);
                    }
                    offset += n as u64;
                };
                fs.release(fh);
                copied?;
                attr
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad("a symlink without a target", &raw))?;
                fs.symlink(parent, os_name, &target, caller)?
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad("a hard link without a target", &raw))?;
                let target_parts: Vec<&[u8]> = target
                    .split(|&b| b == b'/')
                    .filter(|c| !c.is_empty() && *c != b".")
                    .collect();
                let (t_name, t_dirs) = target_parts
                    .split_last()
                    .ok_or_else(|| bad("a hard link to nothing", &raw))?;
                let t_parent = walk(fs, t_dirs).map_err(|_| bad("a missing link target", &raw))?;
                let t = fs.lookup(t_parent, OsStr::from_bytes(t_name))?;
                fs.link(t.ino, parent, os_name)?;
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let kind_bits = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let rdev = libc::makedev(major, minor);
                fs.mknod(parent, os_name, kind_bits | mode, rdev, caller)?
            }
            // PAX and GNU long-name records are read by the tar crate itself.
            _ => continue,
        };
        if let Ok(Some(extensions)) = entry.pax_extensions() {
            for ext in extensions.flatten() {
                if let Some(xattr) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    fs.setxattr(attr.ino, xattr, ext.value_bytes(), 0)?;
                }
            }
        }
        finish(fs, &attr, mode, (uid, gid), &header)?;
    }
    Ok(())
}

/// Owner, mode and time as the header says (a directory that existed keeps its entries).
fn finish(
    fs: &UnionFs,
    attr: &Attr,
    mode: u32,
    (uid, gid): (u32, u32),
    header: &tar::Header,
) -> Result<(), Error> {
    if attr.kind == FileKind::Symlink {
        return Ok(());
    }
    let mtime = header
        .mtime()
        .ok()
        .and_then(|m| i64::try_from(m).ok())
        .map(|m| SetTime::At(m, 0));
    let set = SetAttr {
        mode: Some(mode),
        uid: (attr.uid != uid).then_some(uid),
        gid: (attr.gid != gid).then_some(gid),
        mtime,
        ..SetAttr::default()
    };
    fs.setattr(attr.ino, set, None, Caller::ROOT).map(|_| ())
}

/// The directory at `dirs` below the root, component by component, never through a symlink.
fn walk(fs: &UnionFs, dirs: &[&[u8]]) -> Result<u64, Error> {
    let mut ino = ROOT_INO;
    for d in dirs {
        let a = fs.lookup(ino, OsStr::from_bytes(d))?;
        if a.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        ino = a.ino;
    }
    Ok(ino)
}

/// Removes `name` from `parent`, with everything below it; nothing if it is not there.
fn remove(fs: &UnionFs, parent: u64, name: &[u8]) -> Result<(), Error> {
    let os_name = OsStr::from_bytes(name);
    let Ok(a) = fs.lookup(parent, os_name) else {
        return Ok(());
    };
    if a.kind == FileKind::Dir {
        clear_dir(fs, a.ino)?;
        fs.rmdir(parent, os_name)
    } else {
        fs.unlink(parent, os_name)
    }
}

/// Removes every entry of directory `ino`.
fn clear_dir(fs: &UnionFs, ino: u64) -> Result<(), Error> {
    let fh = fs.opendir(ino)?;
    let listing = fs.readdir(fh);
    fs.release(fh);
    for entry in listing?.iter() {
        if entry.name != b"." && entry.name != b".." {
            remove(fs, ino, &entry.name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::{LayerInput, LowerTree};
    use crate::union::UpperDirs;

    fn layer(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_000_000);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).expect("link");
            }
            b.append_data(&mut h, path, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    /// Two layers over a base, replayed: the result is what the layers' stack shows.
    #[test]
    fn layers_replay_to_their_merged_view() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("base");
        for d in ["etc", "data/sub", "gone"] {
            std::fs::create_dir_all(base.join(d)).expect("mkdir");
        }
        std::fs::write(base.join("etc/motd"), "old").expect("motd");
        std::fs::write(base.join("data/sub/f"), "f").expect("f");
        let (up, work) = (dir.path().join("up"), dir.path().join("work"));
        std::fs::create_dir(&up).expect("up");
        std::fs::create_dir(&work).expect("work");
        let lower = LowerTree::build(vec![LayerInput::Dir(base)]).expect("lower");
        let fs = UnionFs::new(lower, Some(UpperDirs { upper: up, work })).expect("union");
        use tar::EntryType as T;
        let one = layer(&[
            ("etc/motd", T::Regular, b"new", None),
            ("app", T::Directory, b"", None),
            ("app/a", T::Regular, b"aaa", None),
            ("app/b", T::Link, b"", Some("app/a")),
            ("app/l", T::Symlink, b"", Some("a")),
            (".wh.gone", T::Regular, b"", None),
        ]);
        let two = layer(&[
            ("data/.wh..wh..opq", T::Regular, b"", None),
            ("data/new", T::Regular, b"n", None),
            ("app/.wh.l", T::Regular, b"", None),
        ]);
        apply_layer(&fs, one.as_slice()).expect("one");
        apply_layer(&fs, two.as_slice()).expect("two");
        let read = |path: &[u8]| -> Vec<u8> {
            let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
            let (name, dirs) = parts.split_last().expect("path");
            let parent = walk(&fs, dirs).expect("walk");
            let a = fs.lookup(parent, OsStr::from_bytes(name)).expect("lookup");
            let o = fs.open(a.ino, libc::O_RDONLY, Caller::ROOT).expect("open");
            let data = fs.read(o.fh, 0, 100).expect("read");
            fs.release(o.fh);
            data
        };
        assert_eq!(read(b"etc/motd"), b"new");
        assert_eq!(read(b"app/b"), b"aaa");
        let a = fs
            .lookup(walk(&fs, &[b"app"]).expect("app"), OsStr::new("a"))
            .expect("a");
        assert_eq!(a.nlink, 2, "a hard link stays one file");
        assert!(
            fs.lookup(walk(&fs, &[b"app"]).expect("app"), OsStr::new("l"))
                .is_err()
        );
        assert!(
            fs.lookup(ROOT_INO, OsStr::new("gone")).is_err(),
            "whited out"
        );
        let data = walk(&fs, &[b"data"]).expect("data");
        assert!(fs.lookup(data, OsStr::new("sub")).is_err(), "opaque");
        assert_eq!(read(b"data/new"), b"n");
        let bad_layer = layer(&[("nope/x", T::Regular, b"x", None)]);
        assert!(apply_layer(&fs, bad_layer.as_slice()).is_err());
    }
}
