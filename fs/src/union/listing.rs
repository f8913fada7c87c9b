//! Merged directory listings: the upper's entries over the lower's, without whiteouts and
//! what they hide, as snapshots so readdir offsets stay stable while a listing is read.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::handle::Handle;
use super::{Attr, DirEntry, UnionFs, bytes_err, cname, lock};
use crate::Error;
use crate::lower::{FileKind, ROOT_INO};
use crate::ovl::NameRole;
use crate::sys;
use crate::upper::kind_of;

/// Directory snapshots kept for readers that stopped before the end of a listing.
pub(super) const LISTINGS_KEPT: std::num::NonZeroUsize = std::num::NonZeroUsize::new(64).unwrap();

impl UnionFs {
    /// Lists the merged directory `ino`; with `with_ino`, each entry's inode number equals what
    /// `lookup` returns for it (it costs reading each upper entry's xattrs).
    pub(super) fn list(&self, ino: u64, with_ino: bool) -> Result<Vec<DirEntry>, Error> {
        let dir = self.dir_snap(ino)?;
        let mut out = Vec::new();
        let mut hidden: HashSet<Vec<u8>> = HashSet::new();
        if let (Some(up), true) = (&self.upper, dir.upper) {
            let pfd = up.dir(&dir.path)?;
            let lfd = sys::openat(pfd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(|e| bytes_err("open upper dir", &dir.path, e))?;
            let entries =
                sys::read_dir(lfd).map_err(|e| bytes_err("readdir upper", &dir.path, e))?;
            for (name, _, _) in entries {
                match crate::ovl::name_role(&name) {
                    NameRole::OpaqueMarker | NameRole::Meta => continue,
                    NameRole::Whiteout(h) => {
                        hidden.insert(h.to_vec());
                        continue;
                    }
                    NameRole::Entry => {}
                }
                let c = cname(&name)?;
                let Some(st) = sys::fstatat_opt(pfd.as_fd(), &c)
                    .map_err(|e| bytes_err("stat upper", &name, e))?
                else {
                    continue;
                };
                if crate::ovl::is_whiteout_stat(&st) {
                    hidden.insert(name);
                    continue;
                }
                let kind = kind_of(&st);
                let entry_ino = if with_ino {
                    let e = up.entry_info(pfd.as_fd(), &c, st)?;
                    let lower = if kind == FileKind::Dir {
                        self.merge_source(&e, dir.lower, &name)
                    } else {
                        None
                    };
                    self.upper_ino(&e, lower)
                } else {
                    0
                };
                hidden.insert(name.clone());
                out.push(DirEntry {
                    name,
                    ino: entry_ino,
                    kind,
                });
            }
        }
        if let Some(l) = dir.lower {
            for c in self.lower.children(l) {
                let n = self.lower.node(c);
                let name = self.lower.name(c);
                if hidden.contains(name) {
                    continue;
                }
                out.push(DirEntry {
                    name: name.to_vec(),
                    ino: self.lower.ino(c),
                    kind: n.kind,
                });
            }
        }
        Ok(out)
    }

    /// Opens directory `ino`: snapshots its merged listing (with `.` and `..`) so offsets
    /// stay stable while it is read.
    ///
    /// # Errors
    /// `NotDir`, a stale inode, or a host error.
    pub fn opendir(&self, ino: u64) -> Result<u64, Error> {
        Ok(self.handles.add(Handle::Dir(self.snapshot_dir(ino)?)))
    }

    /// The merged listing of directory `ino` with `.` and `..` first.
    fn snapshot_dir(&self, ino: u64) -> Result<Arc<Vec<DirEntry>>, Error> {
        let _ns = self.read_ns();
        let mut entries = self.list(ino, true)?;
        let parent = if ino == ROOT_INO {
            ROOT_INO
        } else {
            let inode = self.inode(ino)?;
            let st = lock(&inode.state);
            st.aliases.first().map_or(ROOT_INO, |(p, _)| *p)
        };
        entries.insert(
            0,
            DirEntry {
                name: b"..".to_vec(),
                ino: parent,
                kind: FileKind::Dir,
            },
        );
        entries.insert(
            0,
            DirEntry {
                name: b".".to_vec(),
                ino,
                kind: FileKind::Dir,
            },
        );
        Ok(Arc::new(entries))
    }

    /// The listing of directory `ino` for a read at `offset` without an open handle (the
    /// kernel skips OPENDIR when the filesystem does not implement it, and caches what it
    /// reads). A read at offset 0 takes a fresh snapshot; later offsets continue in it, so
    /// the requests that fill the kernel's cache see one consistent listing.
    /// [`UnionFs::done_reading_dir`] drops the snapshot once it has been read to the end.
    ///
    /// # Errors
    /// `NotDir`, a stale inode, or a host error.
    pub fn listing_at(&self, ino: u64, offset: u64) -> Result<Arc<Vec<DirEntry>>, Error> {
        if offset > 0
            && let Some(l) = lock(&self.listings).get(&ino)
        {
            return Ok(Arc::clone(l));
        }
        let l = self.snapshot_dir(ino)?;
        lock(&self.listings).put(ino, Arc::clone(&l));
        Ok(l)
    }

    /// Drops the snapshot [`UnionFs::listing_at`] keeps for `ino`.
    pub fn done_reading_dir(&self, ino: u64) {
        lock(&self.listings).pop(&ino);
    }

    /// The snapshot taken by [`UnionFs::opendir`].
    ///
    /// # Errors
    /// `BadHandle` for an unknown handle.
    pub fn readdir(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>, Error> {
        match &*self.handles.get(fh)? {
            Handle::Dir(entries) => Ok(Arc::clone(entries)),
            _ => Err(Error::BadHandle),
        }
    }

    /// Counts a kernel reference for an entry returned by `readdirplus`, and returns its
    /// attributes.
    ///
    /// # Errors
    /// As [`UnionFs::lookup`].
    pub fn lookup_for_readdirplus(&self, parent: u64, name: &[u8]) -> Result<Attr, Error> {
        self.lookup(parent, sys::os(name))
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;
    use crate::union::Caller;
    use crate::union::fixture::{Fixture, Node};

    /// Two layers: the top one deletes `d/gone` and makes `o` opaque.
    fn layered() -> Fixture {
        Fixture::new(&[
            &[
                ("d", Node::Dir),
                ("d/gone", Node::File(b"1")),
                ("d/kept", Node::File(b"1")),
                ("o", Node::Dir),
                ("o/hidden", Node::File(b"1")),
            ],
            &[
                ("d", Node::Dir),
                ("d/gone", Node::Whiteout),
                ("d/top", Node::File(b"2")),
                ("o", Node::Dir),
                ("o/.wh..wh..opq", Node::File(b"")),
                ("o/own", Node::File(b"2")),
            ],
        ])
    }

    #[test]
    fn listings_merge_layers_and_the_upper_under_the_whiteout_rules() {
        let f = layered();
        let d = f.walk("d").ino;
        assert_eq!(f.names(d), ["kept", "top"]);
        assert_eq!(f.names(f.walk("o").ino), ["own"]);
        // The upper adds a file and hides a lower one.
        let (_, fh) =
            f.fs.create(d, OsStr::new("new"), 0o644, libc::O_WRONLY, Caller::ROOT)
                .expect("create");
        f.fs.release(fh);
        f.fs.unlink(d, OsStr::new("kept")).expect("unlink");
        assert_eq!(f.names(d), ["new", "top"]);
        // Each entry's number is what a lookup of it returns; `.` and `..` come first.
        let fh = f.fs.opendir(d).expect("opendir");
        let entries = f.fs.readdir(fh).expect("readdir");
        assert_eq!((entries[0].name.as_slice(), entries[0].ino), (&b"."[..], d));
        assert_eq!(
            (entries[1].name.as_slice(), entries[1].ino),
            (&b".."[..], ROOT_INO)
        );
        for e in &entries[2..] {
            let name = String::from_utf8_lossy(&e.name).into_owned();
            assert_eq!(e.ino, f.walk(&format!("d/{name}")).ino, "{name}");
        }
        f.fs.release(fh);
    }

    #[test]
    fn an_open_listing_stays_as_it_was_opened() {
        let f = layered();
        let d = f.walk("d").ino;
        let fh = f.fs.opendir(d).expect("opendir");
        let before = f.fs.readdir(fh).expect("readdir");
        f.fs.unlink(d, OsStr::new("top")).expect("unlink");
        assert_eq!(f.fs.readdir(fh).expect("readdir"), before);
        f.fs.release(fh);
        assert_eq!(f.names(d), ["kept"]);
        // Without a handle: offset 0 takes a fresh listing, later offsets continue it.
        let first = f.fs.listing_at(d, 0).expect("listing");
        f.fs.unlink(d, OsStr::new("kept")).expect("unlink");
        assert_eq!(f.fs.listing_at(d, 2).expect("listing"), first);
        f.fs.done_reading_dir(d);
        assert_eq!(f.fs.listing_at(d, 2).expect("listing").len(), 2, ". and ..");
    }
}
