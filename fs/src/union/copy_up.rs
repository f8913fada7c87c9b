//! Copy-up: bringing a lower entry into the upper before it changes (DESIGN rules 7-9).
//!
//! Data goes into a work-dir file first (for a big file, ahead of time and outside the
//! namespace lock: [`UnionFs::prepare_copy_up`]), then the metadata (owner, mode, xattrs,
//! origin, times), then one rename into place. A metadata change of a big file copies only
//! the metadata (`rfs.metacopy`, kernel `metacopy=on`); the data follows when the file is
//! first opened for writing.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::ownership::{Made, Owner, Target};
use super::{UnionFs, bytes_err, cname, lock, split_last};
use crate::Error;
use crate::lower::{FileKind, LowerFile, ROOT_INO};
use crate::ovl::{Marker, is_private_xattr};
use crate::sys::{self, SetTime};
use crate::upper::{LookupResult, WorkTemp, kind_of};

/// `renameat2` flag: fail with `EEXIST` rather than replace (a racing copy-up wins).
pub(super) const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;

/// Lower files at least this big get a metadata-only copy-up for metadata changes; smaller
/// ones are cheaper to copy than to track.
pub(super) const METACOPY_MIN_SIZE: u64 = 1 << 20;

impl UnionFs {
    /// Makes sure the directory at `path` exists in the upper, copying up every missing
    /// ancestor top down, and returns an `O_PATH` fd of it and the lower dir it merges with.
    fn ensure_upper_dir(&self, path: &[u8]) -> Result<(OwnedFd, Option<u32>), Error> {
        let up = self.upper()?;
        let mut fd = up.dir(b"")?;
        let mut cur_lower = {
            let root = self.inode(ROOT_INO)?;
            lock(&root.state).lower
        };
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let c = cname(comp)?;
            match up.lookup(fd.as_fd(), comp)? {
                LookupResult::Entry(e) => {
                    if kind_of(&e.st) != FileKind::Dir {
                        return Err(Error::NotDir);
                    }
                    cur_lower = self.merge_source(&e, cur_lower, comp);
                }
                LookupResult::Whiteout => return Err(Error::NotFound),
                LookupResult::Absent => {
                    let l = cur_lower
                        .and_then(|l| self.lower.child(l, comp))
                        .filter(|&l| self.lower.node(l).kind == FileKind::Dir)
                        .ok_or(Error::NotFound)?;
                    let ino = self.lower.ino(l);
                    self.copy_node_into(l, fd.as_fd(), comp, None)?;
                    if let Ok(inode) = self.inode(ino) {
                        lock(&inode.state).upper = true;
                    }
                    cur_lower = Some(l);
                }
            }
            fd = sys::openat(fd.as_fd(), &c, libc::O_PATH | libc::O_DIRECTORY, 0)
                .map_err(|e| bytes_err("open upper dir", path, e))?;
        }
        Ok((fd, cur_lower))
    }

    /// The upper directory of directory inode `ino` at `path`, copied up first if needed.
    /// The common case — already in the upper — costs one `openat2`.
    pub(super) fn upper_dir_of(&self, ino: u64, path: &[u8]) -> Result<OwnedFd, Error> {
        let known_upper = self.inode(ino).is_ok_and(|i| lock(&i.state).upper);
        if known_upper {
            return self.upper()?.dir(path);
        }
        self.copy_up(ino)?;
        Ok(self.ensure_upper_dir(path)?.0)
    }

    /// Copies `ino` up (DESIGN rules 7–9): ancestors first, then the entry itself, built in
    /// the work dir and renamed into place. A member of a lower hard-link group brings every
    /// member that is still visible along, as hard links of one upper file.
    pub(super) fn copy_up(&self, ino: u64) -> Result<(), Error> {
        let up = self.upper()?;
        let inode = self.inode(ino)?;
        {
            let st = lock(&inode.state);
            if st.upper && !st.metacopy {
                return Ok(());
            }
        }
        let mut prebuilt = lock(&inode.copy_lock);
        let (parent, name, lower) = {
            let st = lock(&inode.state);
            if st.upper && st.metacopy {
                let lower = st.lower;
                drop(st);
                return self.complete_metacopy(ino, lower, prebuilt.take().map(|t| *t));
            }
            if st.upper {
                return Ok(());
            }
            let (p, n) = self.first_alias(&st)?;
            (p, n, st.lower)
        };
        let ppath = self.path(parent)?;
        let (pfd, _) = self.ensure_upper_dir(&ppath)?;
        if let LookupResult::Entry(_) = up.lookup(pfd.as_fd(), &name)? {
            lock(&inode.state).upper = true;
            return Ok(());
        }
        let l = lower.ok_or(Error::NotFound)?;
        self.copy_node_into(l, pfd.as_fd(), &name, prebuilt.take().map(|t| *t))?;
        // Every other name of a lower hard-link group that still shows it becomes a hard
        // link of the copy (whichever name the kernel used to reach the inode).
        let group = self.link_groups.get(&self.lower.node(l).ino_node);
        for &member in group.into_iter().flatten() {
            if let Err(e) = self.link_group_member(member, pfd.as_fd(), &name) {
                log::debug!("hard link group member not linked: {e}");
            }
        }
        let mut st = lock(&inode.state);
        st.upper = true;
        if inode.kind != FileKind::Dir {
            st.lower = None;
        }
        Ok(())
    }

    /// Copies up only the metadata of a big lower regular file (chmod, chown, utimes,
    /// xattrs, rename): a sparse upper file of the same size, marked `rfs.metacopy`, whose
    /// reads still go to the lower data (kernel `metacopy=on`). Anything else, small files
    /// and hard-link group members get a full copy-up.
    pub(super) fn copy_up_meta(&self, ino: u64) -> Result<(), Error> {
        let up = self.upper()?;
        let inode = self.inode(ino)?;
        let (parent, name, lower) = {
            let st = lock(&inode.state);
            if st.upper {
                return Ok(());
            }
            let (p, n) = self.first_alias(&st)?;
            (p, n, st.lower)
        };
        let Some(l) = lower else {
            return self.copy_up(ino);
        };
        let node = self.lower.node(l);
        let meta = node.meta();
        if inode.kind != FileKind::File || meta.size < METACOPY_MIN_SIZE || node.nlink > 1 {
            return self.copy_up(ino);
        }
        let _guard = lock(&inode.copy_lock);
        if lock(&inode.state).upper {
            return Ok(());
        }
        let ppath = self.path(parent)?;
        let (pfd, _) = self.ensure_upper_dir(&ppath)?;
        let path = self.lower.display_path(l);
        let tmp = up.temp();
        let (work, t) = (tmp.work(), tmp.name());
        let built = (|| -> io::Result<()> {
            let out = sys::openat(
                work,
                t,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o600,
            )?;
            sys::ftruncate(out.as_fd(), meta.size)?;
            drop(out);
            let xattrs = self
                .lower
                .xattrs(l)
                .map_err(|e| io::Error::other(e.to_string()))?;
            self.apply_meta(work, t, l, &xattrs)?;
            let fd = sys::openat(work, t, libc::O_PATH, 0)?;
            up.set_marker(fd.as_fd(), Marker::Metacopy, b"")?;
            // The marker is an xattr change: restore the times apply_meta set.
            let (atime, mtime) = self.copy_up_times(l);
            sys::utimensat(work, t, atime, mtime)
        })();
        built.map_err(|e| Error::io("metacopy", path.clone(), e))?;
        let c = cname(&name)?;
        let times = sys::fstatat(pfd.as_fd(), c"").ok();
        tmp.commit(pfd.as_fd(), &c, RENAME_NOREPLACE)
            .map_err(|e| Error::io("metacopy rename", path, e))?;
        restore_dir_times(pfd.as_fd(), times.as_ref());
        let mut st = lock(&inode.state);
        st.upper = true;
        st.metacopy = true;
        Ok(())
    }

    /// Turns a metadata-only copy into a full one: the lower data (copied into `prebuilt`
    /// ahead of time, or now) gets the upper entry's current owner, mode, xattrs and times,
    /// and replaces it atomically.
    fn complete_metacopy(
        &self,
        ino: u64,
        lower: Option<u32>,
        prebuilt: Option<WorkTemp>,
    ) -> Result<(), Error> {
        let up = self.upper()?;
        let inode = self.inode(ino)?;
        let path = self.path(ino)?;
        let (ppath, name) = split_last(&path);
        let pfd = up.dir(ppath)?;
        let c = cname(name)?;
        let tmp = match (prebuilt, lower) {
            (Some(t), _) => t,
            (None, Some(l)) => self.copy_data_to_work(l)?,
            (None, None) => {
                // Lost origin: keep the (sparse) upper file as the data.
                let t = up.temp();
                drop(
                    sys::openat(
                        t.work(),
                        t.name(),
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                        0o600,
                    )
                    .map_err(|e| bytes_err("metacopy", &path, e))?,
                );
                t
            }
        };
        let (work, t) = (tmp.work(), tmp.name());
        let res = (|| -> io::Result<()> {
            let st = sys::fstatat(pfd.as_fd(), &c)?;
            let cur = sys::openat(pfd.as_fd(), &c, libc::O_PATH, 0)?;
            let dst = sys::openat(work, t, libc::O_PATH, 0)?;
            let to = Target {
                dir: work,
                name: t,
                kind: FileKind::File,
            };
            self.ownership.carry(&st, to)?;
            for x in sys::list_xattr(cur.as_fd())? {
                // A full copy holds its data: no metacopy marker, and no redirect to
                // where the data was (set when the metadata-only copy was renamed).
                if matches!(
                    &x[..],
                    b"trusted.rfs.metacopy"
                        | b"user.rfs.metacopy"
                        | b"trusted.overlay.redirect"
                        | b"user.overlay.redirect"
                ) {
                    continue;
                }
                let xc = sys::cstr(&x)?;
                if let Some(v) = sys::get_xattr(cur.as_fd(), &xc)? {
                    set_xattr_tolerant(dst.as_fd(), &x, &v)?;
                }
            }
            sys::utimensat(
                work,
                t,
                SetTime::At(st.st_atime, st.st_atime_nsec as u32),
                SetTime::At(st.st_mtime, st.st_mtime_nsec as u32),
            )
        })();
        res.and_then(|()| tmp.commit(pfd.as_fd(), &c, 0))
            .map_err(|e| bytes_err("completing metacopy", &path, e))?;
        let mut st = lock(&inode.state);
        st.metacopy = false;
        st.lower = None;
        Ok(())
    }

    /// Links the copied-up `src_dir/src_name` at the merged position of lower node `member`
    /// (under a renamed directory, if one above it moved), if it still shows somewhere.
    fn link_group_member(
        &self,
        member: u32,
        src_dir: BorrowedFd<'_>,
        src_name: &[u8],
    ) -> Result<(), Error> {
        let up = self.upper()?;
        let Some(mpath) = self.lower_position(member)? else {
            return Ok(());
        };
        let (mparent, mname) = split_last(&mpath);
        let (mfd, mlower) = self.ensure_upper_dir(mparent)?;
        if mlower.and_then(|l| self.lower.child(l, mname)) != Some(member) {
            return Ok(());
        }
        if !matches!(up.lookup(mfd.as_fd(), mname)?, LookupResult::Absent) {
            return Ok(());
        }
        let times = sys::fstatat(mfd.as_fd(), c"").ok();
        sys::linkat(src_dir, &cname(src_name)?, mfd.as_fd(), &cname(mname)?)
            .map_err(|e| bytes_err("link upper", &mpath, e))?;
        restore_dir_times(mfd.as_fd(), times.as_ref());
        Ok(())
    }

    /// Copies the data of lower file `l` into a new work-dir file, fsynced.
    fn copy_data_to_work(&self, l: u32) -> Result<WorkTemp, Error> {
        let tmp = self.upper()?.temp();
        let node = self.lower.node(l);
        let path = self.lower.display_path(l);
        let out = sys::openat(
            tmp.work(),
            tmp.name(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o600,
        )
        .map_err(|e| Error::io("copy-up create", path.clone(), e))?;
        let input = self.lower.open(l)?;
        copy_data(&input, out.as_fd(), node.meta().size)
            .map_err(|e| Error::io("copy-up data", path.clone(), e))?;
        sys::fsync(out.as_fd(), true).map_err(|e| Error::io("copy-up fsync", path, e))?;
        Ok(tmp)
    }

    /// Copies the data of a lower regular file into the work dir before the caller takes the
    /// namespace lock, so a long copy (a 1 GiB file) never blocks other lookups; the copy-up
    /// that follows under the lock only sets metadata and renames. A no-op for anything
    /// already in the upper, directories, and read-only mounts.
    pub(crate) fn prepare_copy_up(&self, ino: u64) -> Result<(), Error> {
        if self.upper.is_none() {
            return Ok(());
        }
        let Ok(inode) = self.inode(ino) else {
            return Ok(());
        };
        if inode.kind != FileKind::File {
            return Ok(());
        }
        let mut prebuilt = lock(&inode.copy_lock);
        let lower = {
            let st = lock(&inode.state);
            if (st.upper && !st.metacopy) || prebuilt.is_some() {
                return Ok(());
            }
            st.lower
        };
        let Some(l) = lower else { return Ok(()) };
        *prebuilt = Some(Box::new(self.copy_data_to_work(l)?));
        Ok(())
    }

    /// Builds a copy of lower node `l` in the work dir and renames it to `name` in `dir`
    /// (never replacing: if someone else copied it meanwhile, theirs wins).
    fn copy_node_into(
        &self,
        l: u32,
        dir: BorrowedFd<'_>,
        name: &[u8],
        prebuilt: Option<WorkTemp>,
    ) -> Result<(), Error> {
        let up = self.upper()?;
        let node = self.lower.node(l);
        let tmp = match (prebuilt, node.kind) {
            (Some(t), _) => t,
            (None, FileKind::File) => self.copy_data_to_work(l)?,
            (None, _) => up.temp(),
        };
        let (work, t) = (tmp.work(), tmp.name());
        let path = self.lower.display_path(l);
        let ctx = |op: &'static str| {
            let path = path.clone();
            move |e: io::Error| Error::io(op, path, e)
        };
        match node.kind {
            // The data is in the work dir already.
            FileKind::File => {}
            FileKind::Dir => sys::mkdirat(work, t, 0o700).map_err(ctx("copy-up mkdir"))?,
            FileKind::Symlink => {
                let target = sys::cstr(self.lower.link(l).unwrap_or_default())
                    .map_err(ctx("copy-up symlink"))?;
                sys::symlinkat(&target, work, t).map_err(ctx("copy-up symlink"))?;
            }
            kind => sys::mknodat(work, t, kind.mode_bits() | 0o600, node.meta().rdev)
                .map_err(ctx("copy-up mknod"))?,
        }
        let xattrs = self.lower.xattrs(l)?;
        self.apply_meta(work, t, l, &xattrs)
            .map_err(ctx("copy-up metadata"))?;
        let c = cname(name)?;
        // A copy-up is not a change of the directory: keep its times (as the kernel does).
        let times = sys::fstatat(dir, c"").ok();
        match tmp.commit(dir, &c, RENAME_NOREPLACE) {
            Ok(()) => {
                restore_dir_times(dir, times.as_ref());
                Ok(())
            }
            // Copied up meanwhile by someone else: theirs stays, ours is gone.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(Error::io("copy-up rename", path, e)),
        }
    }

    /// The atime and mtime a copy-up of lower node `l` gets: the lower entry's, as the
    /// kernel copies them.
    fn copy_up_times(&self, l: u32) -> (SetTime, SetTime) {
        let meta = self.lower.node(l).meta();
        let atime = self.lower.stat_extra(l).atime;
        (
            SetTime::At(atime.0, atime.1),
            SetTime::At(meta.mtime, meta.mtime_nsec),
        )
    }

    /// Sets lower node `l`'s owner, mode, `xattrs`, origin and times on a freshly built
    /// work-dir entry. Order matters: chown clears setuid bits and `security.capability`, so
    /// those come after it; times come last because the other steps may touch them.
    fn apply_meta(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        l: u32,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> io::Result<()> {
        let kind = self.lower.node(l).kind;
        let meta = self.lower.node(l).meta();
        let up = self
            .upper
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EROFS))?;
        let fd = sys::openat(dir, name, libc::O_PATH, 0)?;
        let want = Owner {
            uid: meta.uid,
            gid: meta.gid,
            perm: meta.perm,
        };
        self.ownership
            .give(up, Target { dir, name, kind }, want, Made::CopiedUp)?;
        let mut caps = None;
        for (k, v) in xattrs {
            if is_private_xattr(k) {
                continue;
            }
            if k == b"security.capability" {
                caps = Some(v);
                continue;
            }
            set_xattr_tolerant(fd.as_fd(), k, v)?;
        }
        if let Some(v) = caps {
            set_xattr_tolerant(fd.as_fd(), b"security.capability", v)?;
        }
        let origin = self.lower.origin(l);
        up.set_marker(fd.as_fd(), Marker::Origin, &Marker::origin_value(origin))?;
        let (atime, mtime) = self.copy_up_times(l);
        sys::utimensat(dir, name, atime, mtime)
    }
}

/// Puts back a directory's atime and mtime as `before` had them.
fn restore_dir_times(dir: BorrowedFd<'_>, before: Option<&sys::Stat>) {
    if let Some(st) = before {
        let _ = sys::utimensat(
            dir,
            c"",
            SetTime::At(st.st_atime, st.st_atime_nsec as u32),
            SetTime::At(st.st_mtime, st.st_mtime_nsec as u32),
        );
    }
}

/// Sets an xattr on a copy; one the upper cannot hold (`EPERM`, `ENOTSUP`) is left out.
fn set_xattr_tolerant(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = sys::cstr(name)?;
    match sys::set_xattr(fd, &c, value, 0) {
        // trusted.* without CAP_SYS_ADMIN, or a filesystem without that namespace.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP)) => {
            log::debug!(
                "copy-up: xattr {} not kept: {e}",
                String::from_utf8_lossy(name)
            );
            Ok(())
        }
        r => r,
    }
}

/// Copies `size` bytes of a lower file into `out`, keeping holes: a directory-layer file is
/// copied extent by extent (`SEEK_DATA`/`SEEK_HOLE`), and all-zero chunks are skipped, so
/// a sparse file stays sparse. Data moves with `copy_file_range` where the kernel can (same
/// filesystem, reflinks), else with `pread`/`pwrite`.
fn copy_data(input: &LowerFile, out: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    match input {
        LowerFile::Tar { file, start, .. } => copy_range(file.as_fd(), *start, out, 0, size)?,
        LowerFile::Dir(fd) => {
            let fd = fd.as_fd();
            let mut pos = 0u64;
            while pos < size {
                let data = match sys::lseek(fd, pos as i64, libc::SEEK_DATA) {
                    Ok(d) => d as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
                    // No SEEK_DATA support: copy the rest as one range.
                    Err(_) => pos,
                };
                if data >= size {
                    break;
                }
                let hole = match sys::lseek(fd, data as i64, libc::SEEK_HOLE) {
                    Ok(h) => (h as u64).min(size),
                    Err(_) => size,
                };
                copy_range(fd, data, out, data, hole - data)?;
                pos = hole;
            }
        }
    }
    // Trailing holes (and all-hole files) still need the full length.
    sys::ftruncate(out, size)
}

/// How much a copy-up copies before it starts writing that part back.
const COPY_CHUNK: u64 = 8 << 20;

/// Copies `len` bytes from `input` at `in_off` to `out` at `out_off`.
fn copy_range(
    input: BorrowedFd<'_>,
    in_off: u64,
    out: BorrowedFd<'_>,
    out_off: u64,
    len: u64,
) -> io::Result<()> {
    let mut done = 0u64;
    let mut use_cfr = true;
    let mut buf = Vec::new();
    while done < len {
        if use_cfr {
            let chunk = (len - done).min(COPY_CHUNK) as usize;
            match sys::copy_file_range(input, in_off + done, out, out_off + done, chunk) {
                Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
                Ok(n) => {
                    // Write the chunk back while the next one is copied, so the fsync that
                    // ends the copy-up has little left to wait for. Only a hint.
                    let _ = sys::start_writeback(out, out_off + done, n as u64);
                    done += n as u64;
                    continue;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
                    ) =>
                {
                    use_cfr = false;
                }
                Err(e) => return Err(e),
            }
        }
        if buf.is_empty() {
            buf = vec![0u8; 1 << 20];
        }
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = sys::pread_full(input, &mut buf[..want], in_off + done)?;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if !buf[..n].iter().all(|&b| b == 0) {
            let mut w = 0;
            while w < n {
                w += sys::pwrite(out, &buf[w..n], out_off + done + w as u64)?;
            }
        }
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::union::fixture::{Fixture, Node};
    use crate::union::{Caller, SetAttr};

    fn chmod(f: &Fixture, ino: u64, mode: u32) -> Result<crate::union::Attr, Error> {
        let set = SetAttr {
            mode: Some(mode),
            ..SetAttr::default()
        };
        f.fs.setattr(ino, set, None, Caller::ROOT)
    }

    #[test]
    fn a_failed_rename_into_place_leaves_no_temp_file() {
        let f = Fixture::new(&[&[("d", Node::Dir), ("d/big", Node::Sparse(METACOPY_MIN_SIZE))]]);
        let big = f.walk("d/big");
        // The name appears in the upper behind the engine's back, which still sees the
        // lower file: the metadata-only copy-up is built, then cannot be renamed into place.
        std::fs::create_dir(f.upper("d")).expect("upper dir");
        std::fs::write(f.upper("d/big"), "theirs").expect("upper file");
        let e = chmod(&f, big.ino, 0o600).expect_err("the rename must fail");
        assert_eq!(e.errno(), libc::EEXIST, "{e}");
        assert!(f.work_entries().is_empty(), "{:?}", f.work_entries());
        assert_eq!(std::fs::read(f.upper("d/big")).unwrap(), b"theirs");
    }

    #[test]
    fn a_data_copy_made_ahead_goes_with_its_inode() {
        let f = Fixture::new(&[&[("f", Node::File(b"data"))]]);
        let file = f.walk("f");
        f.fs.prepare_copy_up(file.ino).expect("copy ahead");
        assert_eq!(f.work_entries().len(), 1, "the data waits in the work dir");
        // The kernel forgets the file before anything copies it up.
        f.fs.forget(file.ino, 1);
        assert!(f.work_entries().is_empty(), "{:?}", f.work_entries());
        // Used, it becomes the upper file.
        let file = f.walk("f");
        f.fs.prepare_copy_up(file.ino).expect("copy ahead");
        let o =
            f.fs.open(file.ino, libc::O_RDWR, Caller::ROOT)
                .expect("open for write");
        f.fs.release(o.fh);
        assert_eq!(std::fs::read(f.upper("f")).unwrap(), b"data");
        assert!(f.work_entries().is_empty(), "{:?}", f.work_entries());
    }

    #[test]
    fn copy_up_and_metacopy_leave_the_work_dir_empty() {
        let f = Fixture::new(&[&[
            ("small", Node::File(b"data")),
            ("big", Node::Sparse(METACOPY_MIN_SIZE)),
            ("d", Node::Dir),
        ]]);
        for name in ["small", "big", "d"] {
            let a = f.walk(name);
            chmod(&f, a.ino, 0o700).expect("chmod copies up");
            assert_eq!(f.fs.getattr(a.ino).unwrap().perm, 0o700, "{name}");
        }
        // The metadata-only copy of `big` becomes a full copy when opened for writing.
        let big = f.walk("big");
        f.open_for_write(big.ino);
        assert!(f.marker("big", "rfs.metacopy").is_none());
        assert!(f.work_entries().is_empty(), "{:?}", f.work_entries());
    }
}
