//! A container's *init layer*: the mountpoints a runner binds over (`/etc/hosts`, the targets
//! of volumes, `/proc`, ...) that the image lacks, as a small tar layer stacked above the
//! image's layers and below the container's writable layer. The container finds them where
//! its mounts need them, yet they are not in its upper, so they are never among its changes
//! (`rfs diff`, the layer of `rfs commit`). Docker keeps the same files in an `<id>-init`
//! layer for the same reason.
//!
//! A mountpoint is resolved in the image as the container will resolve it: symlinks are
//! followed inside the image's root (an absolute target starts again at the root, `..` stops
//! there), so `/etc/resolv.conf -> ../run/resolv.conf` gets `run/resolv.conf`. Only what is
//! missing is written: each missing directory (mode 0755, owned by root, as docker makes
//! them) and, for a file target, an empty file (0644, root). Directories the image has are not
//! in the layer, so they keep the image's owner, mode, times and xattrs (a tar layer merges a
//! member's parents without changing them).

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::Error;
use crate::lower::{FileKind, LayerInput, LowerTree};
use crate::tar_index::{self, Limits};

/// How many symlinks one path may pass through (the kernel's limit, `ELOOP` beyond).
const MAX_LINKS: u32 = 40;

/// Writes to `out` the init layer that `image` needs for `mountpoints` (absolute container
/// paths; `FileKind::Dir` for a directory, any other kind for a file). Writes nothing and
/// returns `false` when the image has them all.
///
/// # Errors
///
/// A mountpoint lies below a file of the image or passes more than 40 symlinks
/// ([`Error::Io`] with `ENOTDIR` or `ELOOP`, naming the mountpoint), or `out` cannot be
/// written.
pub fn write(
    image: &LowerTree,
    mountpoints: &[(PathBuf, FileKind)],
    out: &Path,
) -> Result<bool, Error> {
    let mut missing = BTreeMap::new();
    for (path, kind) in mountpoints {
        resolve(image, path, *kind, &mut missing)?;
    }
    if missing.is_empty() {
        return Ok(false);
    }
    let err = |e| Error::io("writing init layer", out.display().to_string(), e);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut tar = tar::Builder::new(File::create(out).map_err(err)?);
    // In path order, so every directory comes before what it holds.
    for (path, kind) in &missing {
        let mut h = tar::Header::new_gnu();
        let (entry_type, mode) = match kind {
            FileKind::Dir => (tar::EntryType::Directory, 0o755),
            _ => (tar::EntryType::Regular, 0o644),
        };
        h.set_entry_type(entry_type);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(0);
        let name = Path::new(std::ffi::OsStr::from_bytes(path));
        tar.append_data(&mut h, name, io::empty()).map_err(err)?;
    }
    tar.into_inner().and_then(|f| f.sync_all()).map_err(err)?;
    Ok(true)
}

/// The init layer at `path`, indexed, ready to stack above the image's layers.
///
/// # Errors
///
/// The file cannot be read or is not a valid tar.
pub fn open(path: &Path) -> Result<LayerInput, Error> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| Error::io("opening init layer", name.clone(), e))?;
    let index = tar_index::build(file, &Limits::default()).map_err(|source| Error::TarIndex {
        layer: name,
        source,
    })?;
    Ok(LayerInput::Tar {
        file: path.to_path_buf(),
        offset: 0,
        index,
    })
}

/// What a resolved path is: in the image (its node), or already among the missing entries.
#[derive(Clone, Copy)]
enum Found {
    Image(u32),
    Missing(FileKind),
}

/// Resolves `path` in `image` plus the entries found missing so far, adding to `missing`
/// (layer paths, no leading `/`) what it lacks.
fn resolve(
    image: &LowerTree,
    path: &Path,
    kind: FileKind,
    missing: &mut BTreeMap<Vec<u8>, FileKind>,
) -> Result<(), Error> {
    let fail = |errno| {
        Error::io(
            "resolving mountpoint",
            path.display().to_string(),
            io::Error::from_raw_os_error(errno),
        )
    };
    let mut todo: VecDeque<Vec<u8>> = components(path.as_os_str().as_bytes());
    let mut here: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == b".." {
            here.pop();
            continue;
        }
        here.push(name);
        let joined = here.join(&b'/');
        let found = match missing.get(&joined) {
            Some(k) => Some(Found::Missing(*k)),
            None => image.lookup_path(&joined).map(Found::Image),
        };
        let last = todo.is_empty();
        match found {
            Some(Found::Image(node)) if image.node(node).kind == FileKind::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(fail(libc::ELOOP));
                }
                here.pop();
                let target = image.link(node).unwrap_or_default();
                if target.first() == Some(&b'/') {
                    here.clear();
                }
                for c in components(target).into_iter().rev() {
                    todo.push_front(c);
                }
            }
            Some(Found::Image(node)) if !last && image.node(node).kind != FileKind::Dir => {
                return Err(fail(libc::ENOTDIR));
            }
            Some(Found::Missing(k)) if !last && k != FileKind::Dir => {
                return Err(fail(libc::ENOTDIR));
            }
            Some(_) => {}
            None => {
                let k = if last && kind != FileKind::Dir {
                    FileKind::File
                } else {
                    FileKind::Dir
                };
                missing.insert(joined, k);
            }
        }
    }
    Ok(())
}

/// The normal and `..` components of a path (the root and `.` dropped).
fn components(path: &[u8]) -> VecDeque<Vec<u8>> {
    Path::new(std::ffi::OsStr::from_bytes(path))
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes().to_vec()),
            Component::ParentDir => Some(b"..".to_vec()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image with `/etc` (holding `hosts`), `/etc/resolv.conf -> ../run/resolv.conf`,
    /// `/data -> /srv/data`, `/bin/sh` and `/loop -> /loop`.
    fn image(dir: &Path) -> LowerTree {
        let root = dir.join("image");
        for d in ["etc", "bin", "srv"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/hosts"), "image's\n").unwrap();
        std::fs::write(root.join("bin/sh"), "").unwrap();
        std::os::unix::fs::symlink("../run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        std::os::unix::fs::symlink("/srv/data", root.join("data")).unwrap();
        std::os::unix::fs::symlink("/loop", root.join("loop")).unwrap();
        LowerTree::build(vec![LayerInput::Dir(root)]).unwrap()
    }

    fn members(layer: &LayerInput) -> Vec<(String, tar_index::EntryKind, u32)> {
        let LayerInput::Tar { index, .. } = layer else {
            panic!("a tar layer")
        };
        index
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.kind, e.mode))
            .collect()
    }

    #[test]
    fn only_what_the_image_lacks_is_written_where_symlinks_lead() {
        let t = tempfile::tempdir().unwrap();
        let tree = image(t.path());
        let out = t.path().join("init.tar");
        let mountpoints = [
            (PathBuf::from("/etc/hosts"), FileKind::File),
            (PathBuf::from("/etc/hostname"), FileKind::File),
            (PathBuf::from("/etc/resolv.conf"), FileKind::File),
            (PathBuf::from("/proc"), FileKind::Dir),
            (PathBuf::from("/data/vol"), FileKind::Dir),
            (PathBuf::from("/srv/data/other/../two"), FileKind::Dir),
        ];
        assert!(write(&tree, &mountpoints, &out).unwrap());
        let layer = open(&out).unwrap();
        use tar_index::EntryKind::{Dir, File};
        assert_eq!(
            members(&layer),
            [
                ("etc/hostname".to_owned(), File, 0o644),
                ("proc".to_owned(), Dir, 0o755),
                ("run".to_owned(), Dir, 0o755),
                ("run/resolv.conf".to_owned(), File, 0o644),
                ("srv/data".to_owned(), Dir, 0o755),
                ("srv/data/other".to_owned(), Dir, 0o755),
                ("srv/data/two".to_owned(), Dir, 0o755),
                ("srv/data/vol".to_owned(), Dir, 0o755),
            ]
        );
        // Stacked on the image, it adds the entries and keeps the image's own.
        let stacked = LowerTree::build(vec![
            LayerInput::Dir(t.path().join("image")),
            open(&out).unwrap(),
        ])
        .unwrap();
        let hosts = stacked.lookup_path(b"etc/hosts").unwrap();
        assert_eq!(stacked.node(hosts).meta().size, 8, "the image's hosts");
        assert!(stacked.lookup_path(b"run/resolv.conf").is_some());
        assert!(stacked.lookup_path(b"srv/data/vol").is_some());
    }

    #[test]
    fn nothing_is_written_when_the_image_has_every_mountpoint() {
        let t = tempfile::tempdir().unwrap();
        let tree = image(t.path());
        let out = t.path().join("init.tar");
        let mountpoints = [
            (PathBuf::from("/etc/hosts"), FileKind::File),
            (PathBuf::from("/etc"), FileKind::Dir),
        ];
        assert!(!write(&tree, &mountpoints, &out).unwrap());
        assert!(!out.exists());
    }

    #[test]
    fn a_mountpoint_below_a_file_or_in_a_loop_is_refused_by_name() {
        let t = tempfile::tempdir().unwrap();
        let tree = image(t.path());
        let out = t.path().join("init.tar");
        for (path, errno) in [("/bin/sh/x", libc::ENOTDIR), ("/loop/x", libc::ELOOP)] {
            let e = write(&tree, &[(PathBuf::from(path), FileKind::Dir)], &out).unwrap_err();
            assert!(e.to_string().contains(path), "{e}");
            assert_eq!(e.errno(), errno, "{path}");
        }
        assert!(!out.exists());
    }
}
