//! The open-file table and the I/O on it: `open` gives a handle (an fh) to a lower reader,
//! an upper file or a directory snapshot, and `read`, `write`, `fsync`, `fallocate` and
//! `lseek` go through it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Caller, DirEntry, Opened, UnionFs, Writer, bytes_err, lock};
use crate::Error;
use crate::lower::{FileKind, LowerFile};
use crate::sys;

/// An open file or directory.
#[derive(Debug)]
pub(super) enum Handle {
    /// A lower file: read-only, its data never changes.
    Lower(LowerFile),
    /// A file in the upper, of inode `ino`.
    Upper { file: File, ino: u64 },
    /// A directory: the merged listing when it was opened.
    Dir(Arc<Vec<DirEntry>>),
}

/// The open handles by number (fh). A number is never given out twice in a daemon's life,
/// so a stale fh is `BadHandle`, never another file; 0 is never given out (the kernel
/// sends it for a directory read without OPENDIR). The map's lock is held only to add,
/// find or remove an entry: I/O runs on the handle's `Arc` outside it.
#[derive(Debug)]
pub(super) struct HandleTable {
    map: Mutex<HashMap<u64, Arc<Handle>>>,
    next: AtomicU64,
}

impl HandleTable {
    /// An empty table.
    pub(super) fn new() -> HandleTable {
        HandleTable {
            map: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Adds `h` and returns its number.
    pub(super) fn add(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.map).insert(fh, Arc::new(h));
        fh
    }

    /// The handle `fh`, which stays usable until the caller drops it even if it is
    /// released meanwhile.
    pub(super) fn get(&self, fh: u64) -> Result<Arc<Handle>, Error> {
        lock(&self.map).get(&fh).cloned().ok_or(Error::BadHandle)
    }

    /// An open upper file of inode `ino`, if any handle has one. A scan of every handle:
    /// only asked when `ino` has lost its name (see [`UnionFs::getattr_open`]).
    pub(super) fn open_upper_file(&self, ino: u64) -> Option<Arc<Handle>> {
        lock(&self.map)
            .values()
            .find(|h| matches!(***h, Handle::Upper { ino: of, .. } if of == ino))
            .cloned()
    }

    /// Forgets `fh`; its file closes when the last user of it is done.
    pub(super) fn remove(&self, fh: u64) {
        lock(&self.map).remove(&fh);
    }

    /// How many handles are open.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

impl UnionFs {
    /// Closes a file or directory handle.
    pub fn release(&self, fh: u64) {
        self.handles.remove(fh);
    }

    /// Opens `ino` with open(2) `flags` for `caller`. Opening for writing (or with
    /// `O_TRUNC`) copies the file up first; read-only opens never do. An `O_TRUNC` open
    /// clears set-id bits as a truncate does (see [`UnionFs::setattr`]).
    ///
    /// # Errors
    /// `ReadOnly` for writes without an upper; host errors.
    pub fn open(&self, ino: u64, flags: i32, caller: Caller) -> Result<Opened, Error> {
        let opened = self.open_handle(ino, flags)?;
        if flags & libc::O_TRUNC != 0
            && !caller.may_keep_setid()
            && let Err(e) = self.clear_setid(ino)
        {
            self.release(opened.fh);
            return Err(e);
        }
        Ok(opened)
    }

    /// [`UnionFs::open`] without the set-id rule.
    fn open_handle(&self, ino: u64, flags: i32) -> Result<Opened, Error> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if write {
            self.prepare_copy_up(ino)?;
        }
        let _ns = self.read_ns();
        let inode = self.inode(ino)?;
        if write {
            self.copy_up(ino)?;
        }
        let (upper, lower, metacopy) = {
            let st = lock(&inode.state);
            (st.upper, st.lower, st.metacopy)
        };
        if !upper || (metacopy && !write && inode.kind == FileKind::File) {
            if let Some(l) = lower {
                let f = self.lower.open(l)?;
                return Ok(Opened {
                    fh: self.handles.add(Handle::Lower(f)),
                    immutable: true,
                });
            }
            if !upper {
                return Err(Error::NotFound);
            }
        }
        let path = self.path(ino)?;
        let file = self.open_upper(&path, flags)?;
        Ok(Opened {
            fh: self.handles.add(Handle::Upper { file, ino }),
            immutable: false,
        })
    }

    /// Runs `f` on the host file behind handle `fh` when that file holds exactly the data
    /// the handle reads (an upper file, or a file of a directory layer), with that file's
    /// `(st_dev, st_ino)` and size. `None` for tar-backed data, directories and unknown
    /// handles: those can only be served through `read`.
    pub fn with_backing_file<R>(
        &self,
        fh: u64,
        f: impl FnOnce(BorrowedFd<'_>, (u64, u64), u64) -> R,
    ) -> Option<R> {
        let h = self.handles.get(fh).ok()?;
        let fd = match &*h {
            Handle::Upper { file, .. } => file.as_fd(),
            Handle::Lower(LowerFile::Dir(file)) => file.as_fd(),
            Handle::Lower(LowerFile::Tar { .. }) | Handle::Dir(_) => return None,
        };
        let st = sys::fstatat(fd, c"").ok()?;
        Some(f(fd, (st.st_dev, st.st_ino), st.st_size as u64))
    }

    /// Opens the upper file at `path` with the access and sync flags of `flags`, never
    /// following a symlink and never leaving the upper.
    pub(super) fn open_upper(&self, path: &[u8], flags: i32) -> Result<File, Error> {
        let up = self.upper()?;
        let keep = libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC;
        let c = sys::rel_cstr(path).map_err(|e| bytes_err("path", path, e))?;
        let fd = sys::openat_beneath(up.root(), &c, (flags & keep) | libc::O_NOFOLLOW, 0)
            .map_err(|e| bytes_err("open upper", path, e))?;
        Ok(File::from(fd))
    }

    /// Reads up to `size` bytes at `offset` from handle `fh`.
    ///
    /// # Errors
    /// `BadHandle`; host errors.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
        let h = self.handles.get(fh)?;
        let mut buf = vec![0u8; size as usize];
        let n = match &*h {
            Handle::Lower(f) => f.read_at(&mut buf, offset),
            Handle::Upper { file: f, .. } => sys::pread_full(f.as_fd(), &mut buf, offset),
            Handle::Dir(_) => return Err(Error::IsDir),
        }
        .map_err(|e| Error::io("read", "", e))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Writes `data` at `offset` through handle `fh`. A `writer` without `CAP_FSETID`
    /// clears the file's set-id bits first, as the kernel does: the host write is the
    /// daemon's, which would keep them.
    ///
    /// # Errors
    /// `BadHandle` (also for a read-only lower handle); host errors such as `ENOSPC`.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8], writer: Writer) -> Result<usize, Error> {
        let h = self.handles.get(fh)?;
        let Handle::Upper { file: f, ino } = &*h else {
            return Err(Error::BadHandle);
        };
        if writer.lacks_fsetid {
            self.clear_setid(*ino)?;
        }
        let mut done = 0;
        while done < data.len() {
            match sys::pwrite(f.as_fd(), &data[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if done > 0 => {
                    log::debug!("short write: {e}");
                    break;
                }
                Err(e) => return Err(Error::io("write", "", e)),
            }
        }
        Ok(done)
    }

    /// `fsync`/`fdatasync` of handle `fh` (a no-op for immutable lower files).
    ///
    /// # Errors
    /// `BadHandle`; host errors.
    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<(), Error> {
        match &*self.handles.get(fh)? {
            Handle::Upper { file: f, .. } => {
                sys::fsync(f.as_fd(), datasync).map_err(|e| Error::io("fsync", "", e))
            }
            _ => Ok(()),
        }
    }

    /// `fallocate` on an upper handle.
    ///
    /// # Errors
    /// `BadHandle`; host errors.
    pub fn fallocate(&self, fh: u64, mode: i32, offset: u64, len: u64) -> Result<(), Error> {
        match &*self.handles.get(fh)? {
            Handle::Upper { file: f, .. } => sys::fallocate(f.as_fd(), mode, offset, len)
                .map_err(|e| Error::io("fallocate", "", e)),
            _ => Err(Error::BadHandle),
        }
    }

    /// `lseek` with `SEEK_DATA`/`SEEK_HOLE` on an upper handle; lower tar data has no holes.
    ///
    /// # Errors
    /// `ENXIO` past the end; host errors.
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64, Error> {
        match &*self.handles.get(fh)? {
            Handle::Upper { file: f, .. } => {
                sys::lseek(f.as_fd(), offset, whence).map_err(|e| Error::io("lseek", "", e))
            }
            Handle::Lower(LowerFile::Dir(fd)) => {
                sys::lseek(fd.as_fd(), offset, whence).map_err(|e| Error::io("lseek", "", e))
            }
            Handle::Lower(LowerFile::Tar { size, .. }) => {
                let size = *size as i64;
                if offset >= size || offset < 0 {
                    return Err(Error::io(
                        "lseek",
                        "",
                        io::Error::from_raw_os_error(libc::ENXIO),
                    ));
                }
                Ok(if whence == libc::SEEK_HOLE {
                    size
                } else {
                    offset
                })
            }
            Handle::Dir(_) => Err(Error::IsDir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::union::fixture::{Fixture, Node};

    #[test]
    fn handle_numbers_are_never_zero_nor_reused() {
        let t = HandleTable::new();
        let a = t.add(Handle::Dir(Arc::new(Vec::new())));
        let b = t.add(Handle::Dir(Arc::new(Vec::new())));
        assert!(a != 0 && b != 0 && a != b);
        let held = t.get(a).expect("open handle");
        t.remove(a);
        assert!(matches!(t.get(a), Err(Error::BadHandle)));
        assert!(
            matches!(&*held, Handle::Dir(_)),
            "a taken handle outlives release"
        );
        let c = t.add(Handle::Dir(Arc::new(Vec::new())));
        assert!(c != a && c != b);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn lower_handles_read_and_refuse_writes_upper_handles_write() {
        let f = Fixture::new(&[&[("f", Node::File(b"lower data")), ("d", Node::Dir)]]);
        let file = f.walk("f");
        let r =
            f.fs.open(file.ino, libc::O_RDONLY, Caller::ROOT)
                .expect("open");
        assert!(r.immutable, "a lower file");
        assert_eq!(f.fs.read(r.fh, 6, 100).unwrap(), b"data");
        let w = Writer::default();
        assert!(matches!(
            f.fs.write(r.fh, 0, b"x", w),
            Err(Error::BadHandle)
        ));
        assert!(!f.upper("f").exists(), "reading never copies up");

        let wr =
            f.fs.open(file.ino, libc::O_RDWR, Caller::ROOT)
                .expect("open rw");
        assert!(!wr.immutable, "the upper copy");
        assert_eq!(f.fs.write(wr.fh, 0, b"UPPER", w).unwrap(), 5);
        assert_eq!(f.fs.read(wr.fh, 0, 100).unwrap(), b"UPPER data");
        f.fs.fsync(wr.fh, true).expect("fsync");
        // The lower handle still reads the lower file, as an open file on the kernel's
        // overlayfs keeps its file.
        assert_eq!(f.fs.read(r.fh, 0, 100).unwrap(), b"lower data");
        assert_eq!(std::fs::read(f.upper("f")).unwrap(), b"UPPER data");

        let dir = f.fs.opendir(f.walk("d").ino).expect("opendir");
        assert!(matches!(f.fs.read(dir, 0, 1), Err(Error::IsDir)));
        assert!(matches!(f.fs.readdir(r.fh), Err(Error::BadHandle)));
        for fh in [r.fh, wr.fh, dir] {
            f.fs.release(fh);
            assert!(matches!(f.fs.read(fh, 0, 1), Err(Error::BadHandle)));
        }
        assert_eq!(f.fs.handles.len(), 0);
    }

    #[test]
    fn a_backing_file_is_offered_for_host_files_only() {
        let f = Fixture::new(&[&[("f", Node::File(b"1234")), ("d", Node::Dir)]]);
        let file = f.walk("f");
        let r =
            f.fs.open(file.ino, libc::O_RDONLY, Caller::ROOT)
                .expect("open");
        let size = f.fs.with_backing_file(r.fh, |_, _, size| size);
        assert_eq!(size, Some(4), "a directory layer's file is a host file");
        let dir = f.fs.opendir(f.walk("d").ino).expect("opendir");
        assert_eq!(f.fs.with_backing_file(dir, |_, _, size| size), None);
        assert_eq!(f.fs.with_backing_file(9999, |_, _, size| size), None);
    }
}
