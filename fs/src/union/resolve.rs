//! Name resolution in the merged view: what a name in a merged directory is (an upper
//! entry, a whiteout, or the lower entry below), which lower directory an upper directory
//! merges with (opaque, redirect), and the inode numbers entries report.

use std::os::fd::{AsFd, BorrowedFd};

use std::sync::Arc;

use super::{Attr, UnionFs, bytes_err, cname, join, lock};
use crate::Error;
use crate::lower::{FileKind, ROOT_INO, UPPER_INO_BIT};
use crate::name::check_component;
use crate::sys;
use crate::upper::{LookupResult, UpperEntry, kind_of};

/// What a name resolves to in a merged directory.
#[derive(Debug)]
pub(super) struct Resolved {
    /// The inode number the entry reports.
    pub(super) ino: u64,
    pub(super) kind: FileKind,
    /// A directory: the lower directory it merges with. A non-directory: the lower file
    /// holding its data (not copied up, or a metadata-only copy).
    pub(super) lower: Option<u32>,
    /// The upper entry, if the name is in the upper.
    pub(super) upper: Option<Box<UpperEntry>>,
}

/// A renamed directory of the upper (one with a redirect).
#[derive(Debug)]
pub(super) struct Moved {
    /// The lower path it merges with (where it was).
    from: Vec<u8>,
    /// Its path in the merged view.
    to: Vec<u8>,
}

/// Whether `path` is strictly below directory `dir` (both relative, `dir` not the root).
fn is_below(path: &[u8], dir: &[u8]) -> bool {
    !dir.is_empty() && path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// A snapshot of a directory inode for one operation.
pub(super) struct DirSnap {
    /// Its path from the root (`""` for the root).
    pub(super) path: Vec<u8>,
    /// The lower directory it merges with.
    pub(super) lower: Option<u32>,
    /// Whether it exists in the upper.
    pub(super) upper: bool,
}

impl UnionFs {
    /// The directory `ino` as one operation sees it (`NotDir` for anything else).
    pub(super) fn dir_snap(&self, ino: u64) -> Result<DirSnap, Error> {
        let inode = self.inode(ino)?;
        if inode.kind != FileKind::Dir {
            return Err(Error::NotDir);
        }
        let (lower, upper) = {
            let st = lock(&inode.state);
            (st.lower, st.upper)
        };
        Ok(DirSnap {
            path: self.path(ino)?,
            lower,
            upper,
        })
    }

    /// The lower directory an upper directory entry merges with ([`LowerTree::merge_source`]).
    pub(super) fn merge_source(
        &self,
        e: &UpperEntry,
        parent_lower: Option<u32>,
        name: &[u8],
    ) -> Option<u32> {
        self.lower
            .merge_source(e.opaque, e.redirect.as_deref(), parent_lower, name)
    }

    /// The lower file holding the data of a metadata-only copy (`None` for a full copy).
    fn metacopy_source(&self, e: &UpperEntry) -> Option<u32> {
        if !e.metacopy {
            return None;
        }
        let found = e
            .origin
            .and_then(|o| self.lower.node_of_origin(o))
            .filter(|&n| self.lower.node(n).kind == FileKind::File);
        if found.is_none() {
            log::warn!(
                "metacopy entry without a valid origin ({:?}): data lost",
                e.origin
            );
        }
        found
    }

    /// The inode number of an upper entry (see the module docs of `union`).
    pub(super) fn upper_ino(&self, e: &UpperEntry, lower: Option<u32>) -> u64 {
        if let Some(o) = e.origin {
            match self.lower.node_of_origin(o) {
                Some(n) => return self.lower.ino(n),
                // The lower entry is gone (another lower stack): a number of its own.
                None if self.lower.uses_host_inos() => return e.st.st_ino | UPPER_INO_BIT,
                None => return o,
            }
        }
        if kind_of(&e.st) == FileKind::Dir
            && let Some(l) = lower
        {
            return self.lower.ino(l);
        }
        e.st.st_ino | UPPER_INO_BIT
    }

    /// Resolves `name` in a directory given its upper fd (if it has an upper) and lower node.
    pub(super) fn resolve_in(
        &self,
        upper_dir: Option<BorrowedFd<'_>>,
        parent_lower: Option<u32>,
        name: &[u8],
    ) -> Result<Option<Resolved>, Error> {
        if let (Some(fd), Some(up)) = (upper_dir, &self.upper) {
            match up.lookup(fd, name)? {
                LookupResult::Whiteout => return Ok(None),
                LookupResult::Entry(e) => {
                    let kind = kind_of(&e.st);
                    let lower = if kind == FileKind::Dir {
                        self.merge_source(&e, parent_lower, name)
                    } else {
                        self.metacopy_source(&e)
                    };
                    return Ok(Some(Resolved {
                        ino: self.upper_ino(&e, lower),
                        kind,
                        lower,
                        upper: Some(e),
                    }));
                }
                LookupResult::Absent => {}
            }
        }
        let Some(l) = parent_lower.and_then(|pl| self.lower.child(pl, name)) else {
            return Ok(None);
        };
        Ok(Some(Resolved {
            ino: self.lower.ino(l),
            kind: self.lower.node(l).kind,
            lower: Some(l),
            upper: None,
        }))
    }

    /// What `name` is in the directory `dir`.
    pub(super) fn resolve(&self, dir: &DirSnap, name: &[u8]) -> Result<Option<Resolved>, Error> {
        let fd = match (&self.upper, dir.upper) {
            (Some(up), true) => Some(up.dir(&dir.path)?),
            _ => None,
        };
        self.resolve_in(fd.as_ref().map(AsFd::as_fd), dir.lower, name)
    }

    /// Resolves a path from the root through the merged view, without remembering anything.
    pub(super) fn resolve_path(&self, path: &[u8]) -> Result<Option<Resolved>, Error> {
        let mut fd = match &self.upper {
            Some(up) => Some(up.dir(b"")?),
            None => None,
        };
        let mut lower = lock(&self.inode(ROOT_INO)?.state).lower;
        let mut comps = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .peekable();
        while let Some(c) = comps.next() {
            let Some(r) = self.resolve_in(fd.as_ref().map(AsFd::as_fd), lower, c)? else {
                return Ok(None);
            };
            if comps.peek().is_none() {
                return Ok(Some(r));
            }
            if r.kind != FileKind::Dir {
                return Ok(None);
            }
            fd = match (&fd, &r.upper) {
                (Some(parent), Some(_)) => Some(
                    sys::openat(
                        parent.as_fd(),
                        &cname(c)?,
                        libc::O_PATH | libc::O_DIRECTORY,
                        0,
                    )
                    .map_err(|e| bytes_err("open upper dir", path, e))?,
                ),
                _ => None,
            };
            lower = r.lower;
        }
        Ok(None)
    }

    /// Where lower node `m` shows, not copied up, in the merged view: at its lower path, or,
    /// when a directory above it was renamed (redirect), at its path under that directory's
    /// new name; `None` when it shows nowhere (deleted or replaced). Hard-link members are
    /// one inode wherever a rename shows them (DESIGN rule 14), as with the kernel's index.
    pub(super) fn lower_position(&self, m: u32) -> Result<Option<Vec<u8>>, Error> {
        let shows = |p: &[u8]| -> Result<bool, Error> {
            Ok(matches!(
                self.resolve_path(p)?,
                Some(Resolved { upper: None, lower: Some(l), .. }) if l == m
            ))
        };
        let path = self.lower.path(m);
        if shows(&path)? {
            return Ok(Some(path));
        }
        // Its lower directory still at its own place: the member is there or nowhere.
        let parent = self.lower.node(m).parent;
        let (ppath, _) = super::split_last(&path);
        let at_home = matches!(
            self.resolve_path(ppath)?,
            Some(Resolved { kind: FileKind::Dir, lower: Some(l), .. }) if l == parent
        ) || ppath.is_empty();
        if at_home || self.upper.is_none() {
            return Ok(None);
        }
        let moved = self.moved_dirs()?;
        let nearest = moved
            .iter()
            .filter(|d| is_below(&path, &d.from))
            .max_by_key(|d| d.from.len());
        if let Some(d) = nearest {
            let there = join(&d.to, &path[d.from.len() + 1..]);
            if shows(&there)? {
                return Ok(Some(there));
            }
        }
        Ok(None)
    }

    /// The renamed directories of the upper, by a walk of its directories (kept until a
    /// directory is renamed or removed).
    fn moved_dirs(&self) -> Result<Arc<Vec<Moved>>, Error> {
        if let Some(m) = lock(&self.moved_dirs).as_ref() {
            return Ok(Arc::clone(m));
        }
        let up = self.upper()?;
        let mut found = Vec::new();
        // (path in the merged view, the lower path it merges with)
        let mut todo: Vec<(Vec<u8>, Vec<u8>)> = vec![(Vec::new(), Vec::new())];
        while let Some((path, below)) = todo.pop() {
            let fd = up.dir(&path)?;
            // Listing a directory is no access the merged view saw: keep its atime.
            let flags = libc::O_RDONLY | libc::O_DIRECTORY;
            let names = sys::openat(fd.as_fd(), c".", flags | libc::O_NOATIME, 0)
                .or_else(|_| sys::openat(fd.as_fd(), c".", flags, 0))
                .and_then(sys::read_dir)
                .map_err(|e| bytes_err("read upper dir", &path, e))?;
            for (name, d_type, _) in names {
                if d_type != libc::DT_DIR && d_type != libc::DT_UNKNOWN {
                    continue;
                }
                let LookupResult::Entry(e) = up.lookup(fd.as_fd(), &name)? else {
                    continue;
                };
                if kind_of(&e.st) != FileKind::Dir {
                    continue;
                }
                let to = join(&path, &name);
                let from = match &e.redirect {
                    Some(r) if r.starts_with(b"/") => r[1..].to_vec(),
                    Some(r) => join(&below, r),
                    None => join(&below, &name),
                };
                if e.redirect.is_some() {
                    found.push(Moved {
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
                todo.push((to, from));
            }
        }
        let found = Arc::new(found);
        *lock(&self.moved_dirs) = Some(Arc::clone(&found));
        Ok(found)
    }

    /// Forgets the renamed directories found (a directory was renamed or removed).
    pub(super) fn dirs_moved(&self) {
        *lock(&self.moved_dirs) = None;
    }

    /// Looks `name` up in `parent`; counts one kernel reference on success.
    ///
    /// # Errors
    /// `NotFound` for a missing or whited-out name; host errors.
    pub fn lookup(&self, parent: u64, name: &std::ffi::OsStr) -> Result<Attr, Error> {
        let name = check_component(name)?;
        let _ns = self.read_ns();
        let dir = self.dir_snap(parent)?;
        let r = self.resolve(&dir, name)?.ok_or(Error::NotFound)?;
        self.remember(parent, name, &r, true);
        Ok(self.attr_of(&r))
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;
    use crate::union::fixture::{Fixture, Node};
    use crate::union::{Caller, Writer};

    #[test]
    fn names_resolve_to_the_upper_entry_over_the_lower_one() {
        let f = Fixture::new(&[&[("f", Node::File(b"lower")), ("d", Node::Dir)]]);
        let lower = f.walk("f");
        let o =
            f.fs.open(lower.ino, libc::O_WRONLY | libc::O_TRUNC, Caller::ROOT)
                .expect("open");
        f.fs.write(o.fh, 0, b"upper!", Writer::default())
            .expect("write");
        f.fs.release(o.fh);
        let up = f.walk("f");
        assert_eq!(up.ino, lower.ino, "a copy-up keeps the inode number");
        assert_eq!(up.size, 6, "the upper entry's attributes");
        assert_eq!(f.read(up.ino), b"upper!");
        let r = f.fs.resolve_path(b"f").expect("resolve").expect("found");
        assert!(
            r.upper.is_some() && r.lower.is_none(),
            "a full copy has no lower data"
        );
        assert_eq!(
            f.fs.resolve_path(b"missing")
                .expect("resolve")
                .map(|r| r.ino),
            None
        );
        assert_eq!(
            f.fs.resolve_path(b"f/x").expect("resolve").map(|r| r.ino),
            None
        );
    }

    #[test]
    fn new_upper_entries_get_numbers_of_their_own() {
        let f = Fixture::new(&[&[("d", Node::Dir)]]);
        let d = f.walk("d").ino;
        let made =
            f.fs.mkdir(d, OsStr::new("n"), 0o755, Caller::ROOT)
                .expect("mkdir");
        assert_ne!(
            made.ino & UPPER_INO_BIT,
            0,
            "no lower origin: the upper's number"
        );
        assert_eq!(f.walk("d/n").ino, made.ino);
        assert_eq!(d & UPPER_INO_BIT, 0, "a lower entry's number");
    }

    #[test]
    fn bad_names_and_non_directories_are_refused() {
        let f = Fixture::new(&[&[("f", Node::File(b"f"))]]);
        let file = f.walk("f").ino;
        for bad in [".", "..", "a/b", ""] {
            let r = f.fs.lookup(ROOT_INO, OsStr::new(bad));
            assert!(matches!(r, Err(Error::Invalid(_))), "{bad:?}: {r:?}");
        }
        assert!(matches!(
            f.fs.lookup(file, OsStr::new("x")),
            Err(Error::NotDir)
        ));
        assert!(matches!(
            f.fs.lookup(ROOT_INO, OsStr::new("nope")),
            Err(Error::NotFound)
        ));
    }
}
