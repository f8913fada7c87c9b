//! Operations that change names: create, mkdir, mknod, symlink, link, unlink, rmdir,
//! rename and exchange, with the whiteouts, opaque markers and redirects the overlay format
//! needs for them (DESIGN rules 11-13). Each runs under the exclusive namespace lock.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::copy_up::RENAME_NOREPLACE;
use super::handle::Handle;
use super::ownership::{Made, Owner, Target};
use super::resolve::{DirSnap, Resolved};
use super::{Attr, Caller, UnionFs, bytes_err, cname, join, lock, split_last};
use crate::Error;
use crate::lower::FileKind;
use crate::name::check_component;
use crate::ovl::Marker;
use crate::sys;
use crate::upper::{LookupResult, WhiteoutStyle, kind_of};

/// `renameat2` flag: swap the two names atomically.
const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;

impl UnionFs {
    /// Creates a new entry `name` in `parent` with `build` (which makes it under a given name
    /// in a given dir), replacing a whiteout there atomically and marking a directory made
    /// over a whiteout opaque (rule 12). Returns the new entry's attributes and, for
    /// `create`, the fd `build` returned.
    fn make_entry(
        &self,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        owner: Option<(Caller, u32)>,
        build: &dyn Fn(BorrowedFd<'_>, &std::ffi::CStr) -> io::Result<Option<OwnedFd>>,
    ) -> Result<(Attr, Option<OwnedFd>), Error> {
        let up = self.upper()?;
        let dir = self.dir_snap(parent)?;
        if self.resolve(&dir, name)?.is_some() {
            return Err(Error::Exists);
        }
        let pfd = self.upper_dir_of(parent, &dir.path)?;
        let pfd = pfd.as_fd();
        let c = cname(name)?;
        let full = join(&dir.path, name);
        let err = |op| {
            let full = full.clone();
            move |e| bytes_err(op, &full, e)
        };
        // Ownership as the kernel gives it: the caller's ids, or the parent's group under a
        // setgid directory (which a directory then inherits).
        // A hard link (`owner` None) keeps its inode's ownership.
        let owner = match owner {
            Some((caller, perm)) => {
                let pst = sys::fstatat(pfd, c"").map_err(err("stat parent"))?;
                let setgid_parent = pst.st_mode & libc::S_ISGID != 0;
                let gid = if setgid_parent {
                    self.shown_ids(pst.st_uid, pst.st_gid).1
                } else {
                    caller.gid
                };
                let perm = if setgid_parent && kind == FileKind::Dir {
                    perm | libc::S_ISGID
                } else {
                    perm
                };
                Some(Owner {
                    uid: caller.uid,
                    gid,
                    perm,
                })
            }
            None => None,
        };
        let set_owner = |dir: BorrowedFd<'_>, name: &std::ffi::CStr| -> io::Result<()> {
            match owner {
                Some(want) => {
                    let t = Target { dir, name, kind };
                    self.ownership.give(up, t, want, Made::Created)
                }
                None => Ok(()),
            }
        };
        let over_whiteout = up.whiteout_at(pfd, name).map_err(err("stat"))?;
        let fd;
        if over_whiteout {
            let tmp = up.temp();
            let (work, t) = (tmp.work(), tmp.name());
            let made = (|| -> io::Result<Option<OwnedFd>> {
                let fd = build(work, t)?;
                set_owner(work, t)?;
                if kind == FileKind::Dir {
                    let d = sys::openat(work, t, libc::O_PATH, 0)?;
                    up.set_marker(d.as_fd(), Marker::Opaque, Marker::OPAQUE_VALUE)?;
                }
                Ok(fd)
            })();
            fd = made.map_err(|e| bytes_err("create", &full, e))?;
            // Replacing the char-dev whiteout by rename is atomic; a directory cannot
            // replace a non-directory, so it goes in by exchange, and the whiteout leaves
            // with the temporary name.
            let res = if kind == FileKind::Dir {
                tmp.exchange(pfd, &c).and_then(|()| tmp.remove())
            } else {
                tmp.commit(pfd, &c, 0)
            };
            res.map_err(|e| bytes_err("create", &full, e))?;
        } else {
            let wh_file_present = up.whiteouts == WhiteoutStyle::WhFile && {
                let wh = crate::ovl::whiteout_name(name);
                sys::fstatat_opt(pfd, &cname(&wh)?).ok().flatten().is_some()
            };
            fd = build(pfd, &c).map_err(err("create"))?;
            set_owner(pfd, &c).map_err(err("chown"))?;
            if wh_file_present {
                if kind == FileKind::Dir {
                    let d = sys::openat(pfd, &c, libc::O_PATH, 0).map_err(err("open"))?;
                    up.set_marker(d.as_fd(), Marker::Opaque, Marker::OPAQUE_VALUE)
                        .map_err(err("opaque"))?;
                }
                up.remove_wh_file(pfd, name)
                    .map_err(err("remove whiteout"))?;
            }
        }
        let st = sys::fstatat(pfd, &c).map_err(err("stat"))?;
        let e = up.entry_info(pfd, &c, st)?;
        let lower = if kind == FileKind::Dir {
            self.merge_source(&e, dir.lower, name)
        } else {
            None
        };
        let r = Resolved {
            ino: self.upper_ino(&e, lower),
            kind,
            lower,
            upper: Some(Box::new(e)),
        };
        self.remember(parent, name, &r, true);
        Ok((self.attr_of(&r), fd))
    }

    /// Creates and opens a regular file.
    ///
    /// # Errors
    /// `Exists`, `ReadOnly`; host errors.
    pub fn create(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> Result<(Attr, u64), Error> {
        let name = check_component(name)?;
        let _ns = self.write_ns();
        let keep = libc::O_ACCMODE | libc::O_APPEND | libc::O_SYNC | libc::O_DSYNC;
        let oflags = (flags & keep) | libc::O_CREAT | libc::O_EXCL;
        let (attr, fd) = self.make_entry(
            parent,
            name,
            FileKind::File,
            Some((caller, mode & 0o7777)),
            &|d, n| sys::openat(d, n, oflags, 0o600).map(Some),
        )?;
        let fd = fd.ok_or(Error::BadHandle)?;
        let file = File::from(fd);
        let ino = attr.ino;
        Ok((attr, self.handles.add(Handle::Upper { file, ino })))
    }

    /// Creates a directory.
    ///
    /// # Errors
    /// `Exists`, `ReadOnly`; host errors.
    pub fn mkdir(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        caller: Caller,
    ) -> Result<Attr, Error> {
        let name = check_component(name)?;
        let _ns = self.write_ns();
        self.make_entry(
            parent,
            name,
            FileKind::Dir,
            Some((caller, mode & 0o7777)),
            &|d, n| sys::mkdirat(d, n, 0o700).map(|()| None),
        )
        .map(|(a, _)| a)
    }

    /// Creates a device node, fifo or socket (or a regular file).
    ///
    /// # Errors
    /// `Exists`, `ReadOnly`; `EPERM` for devices without `CAP_MKNOD`; host errors.
    pub fn mknod(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        rdev: u64,
        caller: Caller,
    ) -> Result<Attr, Error> {
        let name = check_component(name)?;
        let kind = FileKind::from_mode(mode).ok_or(Error::Invalid("bad file type"))?;
        let _ns = self.write_ns();
        self.make_entry(
            parent,
            name,
            kind,
            Some((caller, mode & 0o7777)),
            &|d, n| sys::mknodat(d, n, kind.mode_bits() | 0o600, rdev).map(|()| None),
        )
        .map(|(a, _)| a)
    }

    /// Creates a symlink.
    ///
    /// # Errors
    /// `Exists`, `ReadOnly`; host errors.
    pub fn symlink(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        target: &[u8],
        caller: Caller,
    ) -> Result<Attr, Error> {
        let name = check_component(name)?;
        let target = sys::cstr(target).map_err(|e| bytes_err("symlink", target, e))?;
        let _ns = self.write_ns();
        self.make_entry(
            parent,
            name,
            FileKind::Symlink,
            Some((caller, 0o777)),
            &|d, n| sys::symlinkat(&target, d, n).map(|()| None),
        )
        .map(|(a, _)| a)
    }

    /// Removes a non-directory: the upper entry goes, and a whiteout hides a lower one
    /// (rule 11).
    ///
    /// # Errors
    /// `NotFound`, `IsDir`, `ReadOnly`; host errors.
    pub fn unlink(&self, parent: u64, name: &std::ffi::OsStr) -> Result<(), Error> {
        let name = check_component(name)?;
        let _ns = self.write_ns();
        self.remove(parent, name, false)
    }

    /// Removes an empty (in the merged view) directory.
    ///
    /// # Errors
    /// `NotFound`, `NotDir`, `NotEmpty`, `ReadOnly`; host errors.
    pub fn rmdir(&self, parent: u64, name: &std::ffi::OsStr) -> Result<(), Error> {
        let name = check_component(name)?;
        let _ns = self.write_ns();
        self.remove(parent, name, true)
    }

    /// [`UnionFs::unlink`] (`is_dir` false) or [`UnionFs::rmdir`] (true) under the exclusive
    /// namespace lock.
    fn remove(&self, parent: u64, name: &[u8], is_dir: bool) -> Result<(), Error> {
        let up = self.upper()?;
        let dir = self.dir_snap(parent)?;
        let existing_pfd = if dir.upper {
            Some(up.dir(&dir.path)?)
        } else {
            None
        };
        let r = self
            .resolve_in(existing_pfd.as_ref().map(AsFd::as_fd), dir.lower, name)?
            .ok_or(Error::NotFound)?;
        match (is_dir, r.kind == FileKind::Dir) {
            (true, false) => return Err(Error::NotDir),
            (false, true) => return Err(Error::IsDir),
            _ => {}
        }
        if is_dir {
            self.remember(parent, name, &r, false);
            if !self.list(r.ino, false)?.is_empty() {
                return Err(Error::NotEmpty);
            }
            self.dirs_moved();
        }
        let lower_below = dir.lower.and_then(|l| self.lower.child(l, name)).is_some();
        let full = join(&dir.path, name);
        if r.upper.is_none() && !lower_below {
            return Err(Error::NotFound);
        }
        let pfd = match existing_pfd {
            Some(fd) => fd,
            None => self.upper_dir_of(parent, &dir.path)?,
        };
        let pfd = pfd.as_fd();
        let c = cname(name)?;
        if r.upper.is_some() && is_dir {
            // Empty in the merged view, but it may hold whiteouts: clear them first.
            let sub = sys::openat(pfd, &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(|e| bytes_err("open", &full, e))?;
            for (n, _, _) in sys::read_dir(sub).map_err(|e| bytes_err("readdir", &full, e))? {
                let d = sys::openat(pfd, &c, libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(|e| bytes_err("open", &full, e))?;
                crate::upper::remove_tree(d.as_fd(), &cname(&n)?)
                    .map_err(|e| bytes_err("rmdir", &full, e))?;
            }
        }
        if lower_below {
            if r.upper.is_some() && is_dir {
                if up.whiteouts == WhiteoutStyle::CharDev {
                    // The whiteout takes the directory's place in one step; the emptied
                    // directory leaves with the temporary name.
                    let wh = up.temp();
                    sys::mknodat(wh.work(), wh.name(), libc::S_IFCHR, 0)
                        .and_then(|()| wh.exchange(pfd, &c))
                        .map_err(|e| bytes_err("whiteout", &full, e))?;
                    wh.remove().map_err(|e| bytes_err("rmdir", &full, e))?;
                } else {
                    sys::unlinkat(pfd, &c, true).map_err(|e| bytes_err("rmdir", &full, e))?;
                    up.make_whiteout(pfd, name)
                        .map_err(|e| bytes_err("whiteout", &full, e))?;
                }
            } else {
                up.make_whiteout(pfd, name)
                    .map_err(|e| bytes_err("whiteout", &full, e))?;
            }
        } else {
            sys::unlinkat(pfd, &c, is_dir).map_err(|e| bytes_err("unlink", &full, e))?;
        }
        self.forget_alias(r.ino, parent, name);
        if is_dir {
            self.dirs_moved();
        }
        Ok(())
    }

    /// Makes a hard link: copies the source up (with its lower hard-link group) first.
    ///
    /// # Errors
    /// `Exists`, `ReadOnly`, `EPERM` for directories; host errors.
    pub fn link(&self, ino: u64, newparent: u64, newname: &std::ffi::OsStr) -> Result<Attr, Error> {
        let newname = check_component(newname)?;
        self.prepare_copy_up(ino)?;
        let _ns = self.write_ns();
        let inode = self.inode(ino)?;
        if inode.kind == FileKind::Dir {
            return Err(Error::NotPermitted);
        }
        self.copy_up(ino)?;
        let src_path = self.path(ino)?;
        let (sp, sn) = split_last(&src_path);
        let up = self.upper()?;
        let sfd = up.dir(sp)?;
        let sname = cname(sn)?;
        let (attr, _) = self.make_entry(newparent, newname, inode.kind, None, &|d, n| {
            sys::linkat(sfd.as_fd(), &sname, d, n)?;
            Ok(None)
        })?;
        Ok(attr)
    }

    /// Renames, with `RENAME_NOREPLACE` and `RENAME_EXCHANGE` support. Lower and merged
    /// directories are moved by copying up the directory itself and recording where its
    /// lower part lives (`overlay.redirect`), so every child stays (rule 13).
    ///
    /// # Errors
    /// `NotFound`, `Exists`, `NotEmpty`, `IsDir`, `NotDir`, `ReadOnly`; host errors.
    pub fn rename(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        newparent: u64,
        newname: &std::ffi::OsStr,
        flags: u32,
    ) -> Result<(), Error> {
        let name = check_component(name)?;
        let newname = check_component(newname)?;
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags & RENAME_NOREPLACE != 0 && flags & RENAME_EXCHANGE != 0
        {
            return Err(Error::Invalid("rename flags"));
        }
        let _ns = self.write_ns();
        let up = self.upper()?;
        let sdir = self.dir_snap(parent)?;
        let ddir = self.dir_snap(newparent)?;
        let src = self.resolve(&sdir, name)?.ok_or(Error::NotFound)?;
        let dst = self.resolve(&ddir, newname)?;
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(Error::NotFound)?;
            return self.exchange(parent, name, &sdir, &src, newparent, newname, &ddir, &dst);
        }
        if let Some(d) = &dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(Error::Exists);
            }
            if d.ino == src.ino {
                return Ok(());
            }
            if src.kind == FileKind::Dir {
                if d.kind != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                self.remember(newparent, newname, d, false);
                if !self.list(d.ino, false)?.is_empty() {
                    return Err(Error::NotEmpty);
                }
            } else if d.kind == FileKind::Dir {
                return Err(Error::IsDir);
            }
        }
        self.remember(parent, name, &src, false);
        if src.kind == FileKind::Dir {
            self.dirs_moved();
        }
        self.copy_up_meta(src.ino)?;
        let sfd = self.upper_dir_of(parent, &sdir.path)?;
        let dfd = self.upper_dir_of(newparent, &ddir.path)?;
        let sc = cname(name)?;
        let dc = cname(newname)?;
        let full = join(&sdir.path, name);
        let err = |op| {
            let full = full.clone();
            move |e| bytes_err(op, &full, e)
        };
        if src.kind == FileKind::Dir {
            self.mark_moved_dir(sfd.as_fd(), &sc, &src, ddir.lower, newname)?;
        } else {
            self.mark_moved_metacopy(sfd.as_fd(), &sc, src.ino)?;
        }
        // Clear what sits in the upper at the destination: whiteouts inside an (empty)
        // directory, or a whiteout a directory cannot replace by rename.
        match up.lookup(dfd.as_fd(), newname)? {
            LookupResult::Entry(e) if kind_of(&e.st) == FileKind::Dir => {
                let sub = sys::openat(dfd.as_fd(), &dc, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(err("open"))?;
                let inner = sys::openat(dfd.as_fd(), &dc, libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(err("open"))?;
                for (n, _, _) in sys::read_dir(sub).map_err(err("readdir"))? {
                    crate::upper::remove_tree(inner.as_fd(), &cname(&n)?).map_err(err("rename"))?;
                }
            }
            // A `.wh.` file style whiteout is not at `newname` itself; nothing to clear.
            LookupResult::Whiteout
                if src.kind == FileKind::Dir
                    && up.whiteout_at(dfd.as_fd(), newname).map_err(err("stat"))? =>
            {
                sys::unlinkat(dfd.as_fd(), &dc, false).map_err(err("rename"))?;
            }
            _ => {}
        }
        let lower_below = sdir.lower.and_then(|l| self.lower.child(l, name)).is_some();
        up.rename(sfd.as_fd(), name, dfd.as_fd(), newname, lower_below)
            .map_err(err("rename"))?;
        if let Some(d) = &dst {
            self.forget_alias(d.ino, newparent, newname);
        }
        self.move_alias(src.ino, (parent, name), (newparent, newname));
        if src.kind == FileKind::Dir {
            self.dirs_moved();
        }
        Ok(())
    }

    /// Before a directory moves: a directory with a lower part records where that part is
    /// (redirect); a pure upper directory landing where a lower directory shows through is
    /// made opaque so nothing leaks into it.
    fn mark_moved_dir(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        src: &Resolved,
        dest_parent_lower: Option<u32>,
        dest_name: &[u8],
    ) -> Result<(), Error> {
        let up = self.upper()?;
        let fd = sys::openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| bytes_err("open", name.to_bytes(), e))?;
        let res = match src.lower {
            Some(l) => {
                let mut target = b"/".to_vec();
                target.extend_from_slice(&self.lower.path(l));
                up.set_marker(fd.as_fd(), Marker::Redirect, &target)
            }
            None => {
                if dest_parent_lower
                    .and_then(|l| self.lower.child(l, dest_name))
                    .is_some()
                {
                    up.set_marker(fd.as_fd(), Marker::Opaque, Marker::OPAQUE_VALUE)
                } else {
                    Ok(())
                }
            }
        };
        res.map_err(|e| bytes_err("set redirect", name.to_bytes(), e))
    }

    /// Before a metadata-only copy moves: it records where its data lives below, as an
    /// absolute `overlay.redirect` (kernel `metacopy=on` does the same), so the upper still
    /// reads back when it is stacked as a lower of another mount, where only paths lead
    /// to the data. rfs itself finds the data by the entry's origin.
    fn mark_moved_metacopy(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        ino: u64,
    ) -> Result<(), Error> {
        let inode = self.inode(ino)?;
        let lower = {
            let st = lock(&inode.state);
            if !st.metacopy {
                return Ok(());
            }
            st.lower
        };
        let Some(l) = lower else {
            return Ok(());
        };
        let up = self.upper()?;
        let mut target = b"/".to_vec();
        target.extend_from_slice(&self.lower.path(l));
        let res = sys::openat(dir, name, libc::O_PATH, 0)
            .and_then(|fd| up.set_marker(fd.as_fd(), Marker::Redirect, &target));
        res.map_err(|e| bytes_err("set redirect", name.to_bytes(), e))
    }

    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &self,
        parent: u64,
        name: &[u8],
        sdir: &DirSnap,
        src: &Resolved,
        newparent: u64,
        newname: &[u8],
        ddir: &DirSnap,
        dst: &Resolved,
    ) -> Result<(), Error> {
        self.remember(parent, name, src, false);
        self.remember(newparent, newname, dst, false);
        self.copy_up(src.ino)?;
        self.copy_up(dst.ino)?;
        let sfd = self.upper_dir_of(parent, &sdir.path)?;
        let dfd = self.upper_dir_of(newparent, &ddir.path)?;
        let sc = cname(name)?;
        let dc = cname(newname)?;
        if src.kind == FileKind::Dir {
            self.mark_moved_dir(sfd.as_fd(), &sc, src, ddir.lower, newname)?;
        }
        if dst.kind == FileKind::Dir {
            self.mark_moved_dir(dfd.as_fd(), &dc, dst, sdir.lower, name)?;
        }
        sys::renameat2(sfd.as_fd(), &sc, dfd.as_fd(), &dc, RENAME_EXCHANGE)
            .map_err(|e| bytes_err("rename exchange", name, e))?;
        if src.kind == FileKind::Dir || dst.kind == FileKind::Dir {
            self.dirs_moved();
        }
        self.move_alias(src.ino, (parent, name), (newparent, newname));
        self.move_alias(dst.ino, (newparent, newname), (parent, name));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;
    use crate::lower::ROOT_INO;
    use crate::union::fixture::{Fixture, Node};
    use crate::union::{Caller, SetAttr};

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn unlinking_a_lower_file_leaves_a_whiteout() {
        let f = Fixture::new(&[&[
            ("d", Node::Dir),
            ("d/f", Node::File(b"f")),
            ("d/g", Node::File(b"g")),
        ]]);
        let d = f.walk("d").ino;
        f.fs.unlink(d, os("f")).expect("unlink");
        assert!(f.is_whiteout("d/f"));
        assert!(matches!(f.fs.lookup(d, os("f")), Err(Error::NotFound)));
        assert_eq!(f.names(d), ["g"]);
        assert!(
            f.dir.path().join("lower0/d/f").exists(),
            "the lower layer is untouched"
        );
        assert!(
            matches!(f.fs.unlink(d, os("f")), Err(Error::NotFound)),
            "gone already"
        );
        assert!(f.work_entries().is_empty(), "{:?}", f.work_entries());
    }

    #[test]
    fn removing_merged_directories_leaves_whiteouts_and_no_temp() {
        let f = Fixture::new(&[&[
            ("lower", Node::Dir),
            ("merged", Node::Dir),
            ("full", Node::Dir),
            ("full/x", Node::File(b"x")),
            ("file", Node::File(b"f")),
        ]]);
        // `merged` is in the upper too (a chmod copied it up): its removal swaps a whiteout
        // in from the work dir.
        let merged = f.walk("merged").ino;
        let set = SetAttr {
            mode: Some(0o700),
            ..SetAttr::default()
        };
        f.fs.setattr(merged, set, None, Caller::ROOT)
            .expect("chmod");
        assert!(f.upper("merged").is_dir());
        for name in ["lower", "merged"] {
            f.walk(name);
            f.fs.rmdir(ROOT_INO, os(name)).expect("rmdir");
            assert!(f.is_whiteout(name), "{name}");
        }
        assert!(matches!(
            f.fs.rmdir(ROOT_INO, os("full")),
            Err(Error::NotEmpty)
        ));
        assert!(matches!(
            f.fs.rmdir(ROOT_INO, os("file")),
            Err(Error::NotDir)
        ));
        assert!(matches!(
            f.fs.unlink(ROOT_INO, os("full")),
            Err(Error::IsDir)
        ));
        assert_eq!(f.names(ROOT_INO), ["file", "full"]);
        assert!(f.work_entries().is_empty(), "{:?}", f.work_entries());
    }

    #[test]
    fn a_directory_made_over_a_whiteout_is_opaque() {
        let f = Fixture::new(&[&[
            ("d", Node::Dir),
            ("d/x", Node::File(b"x")),
            ("f", Node::File(b"old")),
        ]]);
        let d = f.walk("d").ino;
        f.fs.unlink(d, os("x")).expect("unlink");
        f.fs.rmdir(ROOT_INO, os("d")).expect("rmdir");
        assert!(f.is_whiteout("d"));
        let d =
            f.fs.mkdir(ROOT_INO, os("d"), 0o755, Caller::ROOT)
                .expect("mkdir");
        assert_eq!(f.marker("d", "overlay.opaque").as_deref(), Some(&b"y"[..]));
        assert!(
            f.names(d.ino).is_empty(),
            "nothing of the lower d shows through"
        );
        assert!(matches!(f.fs.lookup(d.ino, os("x")), Err(Error::NotFound)));
        // A file made over a whiteout simply replaces it.
        f.fs.unlink(ROOT_INO, os("f")).expect("unlink");
        let (a, fh) =
            f.fs.create(ROOT_INO, os("f"), 0o644, libc::O_WRONLY, Caller::ROOT)
                .expect("create");
        f.fs.write(fh, 0, b"new", crate::union::Writer::default())
            .expect("write");
        f.fs.release(fh);
        assert_eq!(f.read(a.ino), b"new");
        assert!(!f.is_whiteout("f"));
        assert!(f.work_entries().is_empty(), "{:?}", f.work_entries());
    }

    #[test]
    fn a_renamed_lower_directory_keeps_its_children() {
        let f = Fixture::new(&[&[
            ("a", Node::Dir),
            ("a/b", Node::Dir),
            ("a/b/c", Node::File(b"data")),
            ("a/l", Node::Symlink("b/c")),
        ]]);
        let a = f.walk("a").ino;
        f.fs.rename(ROOT_INO, os("a"), ROOT_INO, os("z"), 0)
            .expect("rename");
        assert_eq!(
            f.marker("z", "overlay.redirect").as_deref(),
            Some(&b"/a"[..])
        );
        assert!(f.is_whiteout("a"), "the old name shows nothing");
        assert!(matches!(
            f.fs.lookup(ROOT_INO, os("a")),
            Err(Error::NotFound)
        ));
        assert_eq!(f.walk("z").ino, a, "the same directory");
        assert_eq!(f.names(a), ["b", "l"]);
        assert_eq!(f.read(f.walk("z/b/c").ino), b"data");
        assert_eq!(f.fs.readlink(f.walk("z/l").ino).unwrap(), b"b/c");
        assert!(f.work_entries().is_empty(), "{:?}", f.work_entries());
    }

    #[test]
    fn a_renamed_metadata_only_copy_records_where_its_data_is() {
        use crate::lower::{LayerInput, LowerTree};
        use crate::ovl::Namespace;
        use crate::union::UnionConfig;
        let data: Vec<u8> = (0..super::super::copy_up::METACOPY_MIN_SIZE as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let config = UnionConfig {
            ownership: crate::union::fixture::rootless(),
            markers: Some(Namespace::User),
            ..UnionConfig::default()
        };
        let f = Fixture::with_config(
            &[&[
                ("d", Node::Dir),
                ("d/big", Node::File(&data)),
                ("e", Node::Dir),
            ]],
            config,
        );
        let e = f.walk("e").ino;
        let big = f.walk("d/big").ino;
        f.fs.rename(f.walk("d").ino, os("big"), e, os("moved"), 0)
            .expect("rename");
        if f.marker("e/moved", "rfs.metacopy").is_none() {
            eprintln!("skipped: no user xattrs on {}", f.dir.path().display());
            return;
        }
        assert_eq!(
            f.upper_xattr("e/moved", "user.overlay.redirect").as_deref(),
            Some(&b"/d/big"[..])
        );
        assert_eq!(f.read(big), data, "rfs finds the data by origin");
        // Stacked as a lower above the layer it was made over, the upper shows the data
        // at the new path, found through the redirect.
        let stacked = LowerTree::build_with_markers(
            vec![
                LayerInput::Dir(f.dir.path().join("lower0")),
                LayerInput::Dir(f.upper("")),
            ],
            Namespace::User,
        )
        .expect("stacked tree");
        let moved = stacked.lookup_path(b"e/moved").expect("e/moved");
        assert_eq!(stacked.node(moved).meta().size, data.len() as u64);
        let mut buf = vec![0u8; data.len()];
        let n = stacked.open(moved).unwrap().read_at(&mut buf, 0).unwrap();
        assert_eq!((n, buf == data), (data.len(), true));
        assert!(stacked.lookup_path(b"d/big").is_none(), "whited out");
        // A full copy drops the marker with the redirect.
        f.open_for_write(big);
        assert!(f.marker("e/moved", "rfs.metacopy").is_none());
        assert!(f.marker("e/moved", "overlay.redirect").is_none());
        assert_eq!(f.read(big), data);
        assert!(f.work_entries().is_empty(), "{:?}", f.work_entries());
    }

    #[test]
    fn hard_links_in_a_renamed_directory_stay_one_inode_with_their_nlink() {
        let f = Fixture::new(&[&[
            ("d", Node::Dir),
            ("d/h", Node::File(b"x")),
            ("h2", Node::HardLink("d/h")),
            ("d/s", Node::Symlink("t")),
            ("s2", Node::HardLink("d/s")),
            ("d/gone", Node::File(b"g")),
            ("g2", Node::HardLink("d/gone")),
        ]]);
        f.fs.rename(ROOT_INO, os("d"), ROOT_INO, os("e"), 0)
            .expect("rename");
        // As kernel overlayfs (index=on) counts them: the names under the new name count.
        let (h, h2) = (f.walk("e/h"), f.walk("h2"));
        assert_eq!((h.ino, h.nlink, h2.nlink), (h2.ino, 2, 2));
        assert_eq!(f.walk("e/s").nlink, 2);
        f.fs.unlink(f.walk("e").ino, os("gone")).expect("unlink");
        assert_eq!(f.walk("g2").nlink, 1, "a deleted name does not count");
        // Changing one name copies the group up linked, under the renamed directory too.
        let set = SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        };
        f.fs.setattr(h2.ino, set, None, Caller::ROOT)
            .expect("chmod");
        let fh =
            f.fs.open(h2.ino, libc::O_WRONLY | libc::O_APPEND, Caller::ROOT)
                .expect("open")
                .fh;
        f.fs.write(fh, 1, b"y", crate::union::Writer::default())
            .expect("write");
        f.fs.release(fh);
        let h = f.walk("e/h");
        assert_eq!((h.perm, h.nlink), (0o600, 2));
        assert_eq!(f.read(h.ino), b"xy");
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (
            std::fs::metadata(f.upper("e/h")).unwrap(),
            std::fs::metadata(f.upper("h2")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "one upper inode");
        assert!(f.work_entries().is_empty(), "{:?}", f.work_entries());
    }

    #[test]
    fn rename_flags_noreplace_and_exchange() {
        let f = Fixture::new(&[&[("p", Node::File(b"p")), ("q", Node::File(b"q"))]]);
        let (p, q) = (f.walk("p").ino, f.walk("q").ino);
        let e =
            f.fs.rename(ROOT_INO, os("p"), ROOT_INO, os("q"), RENAME_NOREPLACE);
        assert!(matches!(e, Err(Error::Exists)));
        let both = RENAME_NOREPLACE | RENAME_EXCHANGE;
        let e = f.fs.rename(ROOT_INO, os("p"), ROOT_INO, os("q"), both);
        assert!(matches!(e, Err(Error::Invalid(_))));
        f.fs.rename(ROOT_INO, os("p"), ROOT_INO, os("q"), RENAME_EXCHANGE)
            .expect("exchange");
        assert_eq!(f.walk("q").ino, p, "p's inode is now named q");
        assert_eq!(f.read(f.walk("q").ino), b"p");
        assert_eq!(f.read(f.walk("p").ino), b"q");
        assert_eq!(f.walk("p").ino, q);
        assert!(f.work_entries().is_empty(), "{:?}", f.work_entries());
    }
}
