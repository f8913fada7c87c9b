//! Attributes: what `getattr` reports for lower and upper entries, `readlink`, and
//! `setattr` (chmod, chown, truncate, utimes) with the set-id rule that goes with it.

use std::os::fd::AsFd;

use super::handle::Handle;
use super::ownership::Target;
use super::resolve::Resolved;
use super::{Attr, Caller, SetAttr, UnionFs, bytes_err, cname, lock, split_last};
use crate::Error;
use crate::lower::{FileKind, LowerTree, ROOT_INO};
use crate::sys::{self, SetTime};
use crate::upper::{UpperEntry, kind_of};

impl UnionFs {
    /// The attributes of a resolved entry.
    pub(super) fn attr_of(&self, r: &Resolved) -> Attr {
        match &r.upper {
            Some(e) => self.upper_attr(e, r.ino, r.lower),
            None => self.lower_attr(r.lower.unwrap_or(LowerTree::ROOT)),
        }
    }

    /// The attributes of lower node `i`, as the merged view shows it (link counts count
    /// only the names still visible).
    fn lower_attr(&self, i: u32) -> Attr {
        let n = self.lower.node(i);
        let nlink = if n.kind != FileKind::Dir && n.nlink > 1 {
            self.visible_links(i)
        } else {
            n.nlink
        };
        let meta = n.meta();
        let size = match n.kind {
            FileKind::Symlink => self.lower.link(i).map_or(0, |l| l.len() as u64),
            _ => meta.size,
        };
        let x = self.lower.stat_extra(i);
        Attr {
            ino: self.lower.ino(i),
            kind: n.kind,
            perm: meta.perm,
            nlink,
            uid: meta.uid,
            gid: meta.gid,
            size,
            blocks: x.blocks,
            blksize: x.blksize,
            atime: x.atime,
            mtime: (meta.mtime, meta.mtime_nsec),
            ctime: x.ctime,
            rdev: meta.rdev,
        }
    }

    /// How many names of lower node `i`'s hard-link group the merged view still shows,
    /// wherever a renamed directory shows them (the others were deleted or replaced).
    fn visible_links(&self, i: u32) -> u32 {
        let Some(group) = self.link_groups.get(&self.lower.node(i).ino_node) else {
            return self.lower.node(i).nlink;
        };
        let shown = group
            .iter()
            .filter(|&&m| matches!(self.lower_position(m), Ok(Some(_))))
            .count() as u32;
        shown.max(1)
    }

    /// The attributes of an upper entry: `override_stat` owner and mode where it has one; a
    /// merged directory reports one link, a metadata-only copy its data's blocks.
    fn upper_attr(&self, e: &UpperEntry, ino: u64, lower: Option<u32>) -> Attr {
        let st = &e.st;
        let kind = kind_of(st);
        let (uid, gid, perm) = match e.owner_override {
            Some(o) => (o.uid, o.gid, o.perm),
            None => {
                let (uid, gid) = self.shown_ids(st.st_uid, st.st_gid);
                (uid, gid, st.st_mode & 0o7777)
            }
        };
        let nlink = if kind == FileKind::Dir && lower.is_some() {
            1
        } else {
            st.st_nlink as u32
        };
        Attr {
            ino,
            kind,
            perm,
            nlink,
            uid,
            gid,
            size: st.st_size as u64,
            blocks: if e.metacopy {
                (st.st_size as u64).div_ceil(512)
            } else {
                st.st_blocks as u64
            },
            blksize: st.st_blksize as u32,
            atime: (st.st_atime, st.st_atime_nsec as u32),
            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
            ctime: (st.st_ctime, st.st_ctime_nsec as u32),
            rdev: st.st_rdev,
        }
    }

    /// [`UnionFs::getattr`] under a namespace lock the caller holds.
    fn getattr_locked(&self, ino: u64) -> Result<Attr, Error> {
        let inode = self.inode(ino)?;
        let (upper, lower) = {
            let st = lock(&inode.state);
            (st.upper, st.lower)
        };
        if !upper {
            let l = lower.ok_or(Error::NotFound)?;
            let mut a = self.lower_attr(l);
            a.ino = ino;
            return Ok(a);
        }
        let up = self.upper()?;
        if ino == ROOT_INO {
            let st = sys::fstatat(up.root(), c"").map_err(|e| Error::io("stat", "/", e))?;
            let e = up.entry_info(up.root(), c".", st)?;
            let mut a = self.upper_attr(&e, ROOT_INO, lower);
            a.ino = ROOT_INO;
            return Ok(a);
        }
        let path = self.path(ino)?;
        let (ppath, name) = split_last(&path);
        let pfd = up.dir(ppath)?;
        let c = cname(name)?;
        let st = sys::fstatat(pfd.as_fd(), &c).map_err(|e| bytes_err("stat upper", &path, e))?;
        let e = up.entry_info(pfd.as_fd(), &c, st)?;
        let mut a = self.upper_attr(&e, ino, lower);
        a.ino = ino;
        Ok(a)
    }

    /// The attributes of `ino`.
    ///
    /// # Errors
    /// A stale inode or a host error.
    pub fn getattr(&self, ino: u64) -> Result<Attr, Error> {
        let _ns = self.read_ns();
        self.getattr_locked(ino)
    }

    /// The attributes of `ino`, also when it has no name any more but is still open: an
    /// unlinked file that is open is a file with `st_nlink` 0 on any POSIX filesystem ("unlink
    /// the temp file you hold open"). `fh` is the caller's handle when the kernel sends it; an
    /// `fstat` does not (the kernel passes no file to `getattr`), so any open upper file of
    /// the inode answers then.
    ///
    /// # Errors
    /// A stale inode or a host error.
    pub fn getattr_open(&self, ino: u64, fh: Option<u64>) -> Result<Attr, Error> {
        let _ns = self.read_ns();
        match self.getattr_locked(ino) {
            // The name is gone (the inode has no alias, or its upper entry was unlinked).
            Err(e) if e.errno() == libc::ENOENT => {
                let open = fh
                    .and_then(|fh| self.handles.get(fh).ok())
                    .or_else(|| self.handles.open_upper_file(ino));
                match open {
                    Some(h) => self.open_file_attr(ino, &h).unwrap_or(Err(e)),
                    None => Err(e),
                }
            }
            r => r,
        }
    }

    /// The attributes of `ino` from its open handle `h`: the upper file it has open (which
    /// may have no name), or the lower file it reads.
    fn open_file_attr(&self, ino: u64, h: &Handle) -> Option<Result<Attr, Error>> {
        match h {
            Handle::Upper { file, ino: of } if *of == ino => {
                let up = self.upper().ok()?;
                Some((|| {
                    let st = sys::fstatat(file.as_fd(), c"")
                        .map_err(|e| Error::io("fstat", format!("inode {ino}"), e))?;
                    let e = up
                        .entry_of_fd(file.as_fd(), st)
                        .map_err(|e| Error::io("read the markers of", format!("inode {ino}"), e))?;
                    let lower = lock(&self.inode(ino)?.state).lower;
                    let mut a = self.upper_attr(&e, ino, lower);
                    a.ino = ino;
                    Ok(a)
                })())
            }
            _ => None,
        }
    }

    /// The target of symlink `ino`.
    ///
    /// # Errors
    /// `Invalid` for a non-symlink; host errors.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, Error> {
        let _ns = self.read_ns();
        let inode = self.inode(ino)?;
        if inode.kind != FileKind::Symlink {
            return Err(Error::Invalid("not a symlink"));
        }
        let (upper, lower) = {
            let st = lock(&inode.state);
            (st.upper, st.lower)
        };
        if !upper {
            let l = lower.ok_or(Error::NotFound)?;
            return Ok(self.lower.link(l).unwrap_or_default().to_vec());
        }
        let path = self.path(ino)?;
        let (ppath, name) = split_last(&path);
        let pfd = self.upper()?.dir(ppath)?;
        sys::readlinkat(pfd.as_fd(), &cname(name)?).map_err(|e| bytes_err("readlink", &path, e))
    }

    /// Clears set-user-ID, and set-group-ID when group-executable, on `ino`, as the kernel
    /// does when a caller without `CAP_FSETID` writes to or truncates a file
    /// (`file_remove_privs`). A no-op for anything but a regular file with either bit.
    pub(super) fn clear_setid(&self, ino: u64) -> Result<(), Error> {
        let cur = self.getattr(ino)?;
        if cur.kind != FileKind::File {
            return Ok(());
        }
        let mut perm = cur.perm & !libc::S_ISUID;
        if perm & libc::S_IXGRP != 0 {
            perm &= !libc::S_ISGID;
        }
        if perm == cur.perm {
            return Ok(());
        }
        let set = SetAttr {
            mode: Some(perm),
            ..SetAttr::default()
        };
        self.set_attr(ino, set, None).map(|_| ())
    }

    /// Changes attributes (chmod, chown, truncate, utimes) as `caller` asks: copies up first
    /// (rule 7). A truncate by a caller who may not keep set-id bits clears them first.
    ///
    /// # Errors
    /// `ReadOnly`; host errors.
    pub fn setattr(
        &self,
        ino: u64,
        set: SetAttr,
        fh: Option<u64>,
        caller: Caller,
    ) -> Result<Attr, Error> {
        if set.size.is_some() && !caller.may_keep_setid() {
            self.clear_setid(ino)?;
        }
        self.set_attr(ino, set, fh)
    }

    /// [`UnionFs::setattr`] without the set-id rule.
    fn set_attr(&self, ino: u64, set: SetAttr, fh: Option<u64>) -> Result<Attr, Error> {
        if set.size.is_some() {
            self.prepare_copy_up(ino)?;
        }
        let _ns = self.read_ns();
        if set.size.is_some() {
            self.copy_up(ino)?;
        } else {
            self.copy_up_meta(ino)?;
        }
        let up = self.upper()?;
        let inode = self.inode(ino)?;
        let path = self.path(ino)?;
        let (ppath, name) = split_last(&path);
        let (pfd, c) = if ino == ROOT_INO {
            (up.dir(b"")?, c"".to_owned())
        } else {
            (up.dir(ppath)?, cname(name)?)
        };
        let pfd = pfd.as_fd();
        let err = |op| {
            let path = path.clone();
            move |e| bytes_err(op, &path, e)
        };
        if let Some(size) = set.size {
            if inode.kind == FileKind::Dir {
                return Err(Error::IsDir);
            }
            let via_handle = fh.and_then(|fh| self.handles.get(fh).ok());
            match via_handle.as_deref() {
                Some(Handle::Upper { file: f, .. }) => {
                    sys::ftruncate(f.as_fd(), size).map_err(err("truncate"))?
                }
                _ => {
                    let f = self.open_upper(&path, libc::O_WRONLY)?;
                    sys::ftruncate(f.as_fd(), size).map_err(err("truncate"))?;
                }
            }
        }
        let target = Target {
            dir: pfd,
            name: &c,
            kind: inode.kind,
        };
        let cur = || self.getattr_locked(ino);
        if set.uid.is_some() || set.gid.is_some() {
            let ids = (set.uid, set.gid);
            self.ownership
                .chown(up, target, ids, set.mode, &cur, &path)?;
        }
        if let Some(mode) = set.mode {
            self.ownership.chmod(up, target, mode, &cur, &path)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            sys::utimensat(
                pfd,
                &c,
                set.atime.unwrap_or(SetTime::Omit),
                set.mtime.unwrap_or(SetTime::Omit),
            )
            .map_err(err("utimes"))?;
        }
        self.getattr_locked(ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::union::Writer;
    use crate::union::fixture::{Fixture, Node, member, rootless};

    /// Files with set-id bits, owned by this process's ids (as the daemon's own files).
    fn setid_files() -> (Fixture, Caller) {
        let (uid, gid) = match rootless() {
            crate::union::Ownership::Override { own_uid, own_gid } => (own_uid, own_gid),
            crate::union::Ownership::Host => unreachable!(),
        };
        let ids = (u64::from(uid), u64::from(gid));
        let f = Fixture::tar(
            &[
                member("both", Node::File(b"data"), 0o6755, ids),
                member("nogx", Node::File(b"data"), 0o6745, ids),
                member("keep", Node::File(b"data"), 0o6755, ids),
                member("opened", Node::File(b"data"), 0o4755, ids),
                member("written", Node::File(b"data"), 0o6745, ids),
            ],
            rootless(),
        );
        let user = Caller {
            uid,
            gid,
            root: false,
        };
        (f, user)
    }

    fn truncate(f: &Fixture, ino: u64, caller: Caller) -> Attr {
        let set = SetAttr {
            size: Some(1),
            ..SetAttr::default()
        };
        f.fs.setattr(ino, set, None, caller).expect("truncate")
    }

    #[test]
    fn a_truncate_without_cap_fsetid_clears_setuid_and_group_exec_setgid() {
        let (f, user) = setid_files();
        let both = f.walk("both");
        assert_eq!(truncate(&f, both.ino, user).perm, 0o755);
        // Without group execute, setgid marks mandatory locking and stays (as in the kernel).
        let nogx = f.walk("nogx");
        assert_eq!(truncate(&f, nogx.ino, user).perm, 0o2745);
        // Root keeps both.
        let keep = f.walk("keep");
        let a = truncate(&f, keep.ino, Caller::ROOT);
        assert_eq!((a.perm, a.size), (0o6755, 1));
    }

    #[test]
    fn a_truncating_open_and_a_flagged_write_clear_setid_bits() {
        let (f, user) = setid_files();
        let opened = f.walk("opened");
        let o =
            f.fs.open(opened.ino, libc::O_WRONLY | libc::O_TRUNC, user)
                .expect("open");
        assert!(!o.immutable, "a copy-up, open on the upper");
        f.fs.release(o.fh);
        assert_eq!(f.fs.getattr(opened.ino).unwrap().perm, 0o755);

        let written = f.walk("written");
        let o = f.fs.open(written.ino, libc::O_WRONLY, user).expect("open");
        assert_eq!(
            f.fs.getattr(written.ino).unwrap().perm,
            0o6745,
            "no O_TRUNC"
        );
        let n = f.fs.write(o.fh, 0, b"x", Writer::default()).expect("write");
        assert_eq!(n, 1);
        assert_eq!(
            f.fs.getattr(written.ino).unwrap().perm,
            0o6745,
            "not flagged"
        );
        let flagged = Writer { lacks_fsetid: true };
        f.fs.write(o.fh, 1, b"y", flagged).expect("write");
        f.fs.release(o.fh);
        assert_eq!(f.fs.getattr(written.ino).unwrap().perm, 0o2745);
        assert_eq!(std::fs::read(f.upper("written")).unwrap(), b"xyta");
    }
}
