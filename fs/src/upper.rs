//! The writable upper directory and its work dir, in kernel overlayfs format.
//!
//! - Whiteouts are character devices 0/0; where `mknod` is refused (no `CAP_MKNOD`), an empty
//!   file `.wh.<name>` instead (the fuse-overlayfs fallback).
//! - Opaque directories carry `trusted.overlay.opaque=y` as root, `user.overlay.opaque=y`
//!   otherwise; both are read. Renamed lower directories carry `*.overlay.redirect` with the
//!   absolute lower path they merge with (kernel `redirect_dir=on`).
//! - `*.rfs.origin` records the inode number a copied-up entry had in the lower tree, so
//!   st_ino survives copy-up and remounts.
//! - `*.rfs.metacopy` marks a metadata-only copy-up (kernel `metacopy=on`): the upper file
//!   is sparse and its data is still read from the lower entry named by `*.rfs.origin`.
//!   Renamed, it also carries `*.overlay.redirect` with the absolute lower path of its data
//!   (as the kernel does), which is what leads to the data when the upper is stacked as a
//!   lower of another mount.
//! - Ownership a rootless daemon cannot `chown` lives in `user.containers.override_stat`
//!   (`uid:gid:mode`, the containers/storage convention).
//!
//! New entries are built in the work dir under a temporary name ([`WorkTemp`]) and renamed
//! into place, so a crash never leaves a partial entry visible; a failed build removes its
//! temporary entry at once, and what a crash leaves there is removed when mounting.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::lower::FileKind;
use crate::ovl::{
    self, Marker, Markers, Namespace, OPAQUE_MARKER, OVERRIDE_STAT, OverrideStat, is_opaque_xattr,
    is_whiteout_stat,
};
use crate::sys;

/// The prefix of temporary names in the work dir.
const TMP_PREFIX: &str = "#rfs-tmp-";

/// How whiteouts are written to this upper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WhiteoutStyle {
    /// Character device 0/0 (kernel format).
    CharDev,
    /// Empty `.wh.<name>` file (no `CAP_MKNOD`).
    WhFile,
}

/// What the upper knows about one of its entries, beyond `stat`.
#[derive(Debug)]
pub(crate) struct UpperEntry {
    pub(crate) st: sys::Stat,
    pub(crate) origin: Option<u64>,
    pub(crate) opaque: bool,
    pub(crate) redirect: Option<Vec<u8>>,
    pub(crate) owner_override: Option<OverrideStat>,
    /// Metadata-only copy: the data still lives in the lower file named by `origin`.
    pub(crate) metacopy: bool,
}

/// The writable layer.
#[derive(Debug)]
pub(crate) struct Upper {
    root: OwnedFd,
    /// Shared with every [`WorkTemp`], which may outlive a borrow of the `Upper`.
    work: Arc<OwnedFd>,
    /// Where our markers live: `trusted.*` for root in the initial user namespace, `user.*`
    /// otherwise (rootless, or root inside a user namespace).
    markers: Namespace,
    pub(crate) whiteouts: WhiteoutStyle,
    /// The host makes a char 0/0 whiteout in the same step as a rename (`RENAME_WHITEOUT`).
    rename_whiteout: bool,
    next_tmp: AtomicU64,
}

fn io_ctx(op: &'static str, path: &[u8], e: io::Error) -> crate::Error {
    crate::Error::io(op, String::from_utf8_lossy(path).into_owned(), e)
}

impl Upper {
    /// Opens `upper` and `work` (which must be on one filesystem), probes whether whiteouts
    /// can be device nodes, and removes what an earlier crash left in the work dir. Markers
    /// go to the xattr namespace `markers`; `None` probes it (`trusted` where this process
    /// can set it).
    pub(crate) fn open(
        upper: &Path,
        work: &Path,
        markers: Option<Namespace>,
    ) -> Result<Upper, crate::Error> {
        let open = |p: &Path| -> Result<OwnedFd, crate::Error> {
            std::fs::File::open(p)
                .map(OwnedFd::from)
                .map_err(|e| crate::Error::io("open", p.display().to_string(), e))
        };
        let root = open(upper)?;
        let work_fd = open(work)?;
        let st_u = sys::fstatat(root.as_fd(), c"")
            .map_err(|e| crate::Error::io("stat", upper.display().to_string(), e))?;
        let st_w = sys::fstatat(work_fd.as_fd(), c"")
            .map_err(|e| crate::Error::io("stat", work.display().to_string(), e))?;
        if st_u.st_dev != st_w.st_dev {
            return Err(crate::Error::io(
                "upper and work dir must be on one filesystem",
                work.display().to_string(),
                io::Error::from_raw_os_error(libc::EXDEV),
            ));
        }
        let mut up = Upper {
            root,
            work: Arc::new(work_fd),
            markers: Namespace::User,
            whiteouts: WhiteoutStyle::CharDev,
            rename_whiteout: false,
            next_tmp: AtomicU64::new(0),
        };
        up.clean_work()
            .map_err(|e| crate::Error::io("cleaning work dir", work.display().to_string(), e))?;
        up.markers = match markers {
            Some(ns) => ns,
            None if up.probe_trusted_xattrs() => Namespace::Trusted,
            None => Namespace::User,
        };
        let probe = up.temp();
        match sys::mknodat(up.work(), probe.name(), libc::S_IFCHR | 0o600, 0) {
            Ok(()) => {
                // Can a rename leave a whiteout behind in the same step? Then `probe` stays
                // (as that whiteout) next to `moved`. Both go when dropped.
                let moved = up.temp();
                let w = up.work();
                up.rename_whiteout =
                    sys::renameat2(w, probe.name(), w, moved.name(), libc::RENAME_WHITEOUT).is_ok();
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                up.whiteouts = WhiteoutStyle::WhFile;
            }
            Err(e) => {
                return Err(crate::Error::io(
                    "probing whiteouts in work dir",
                    work.display().to_string(),
                    e,
                ));
            }
        }
        Ok(up)
    }

    /// Whether a `trusted.*` xattr can be set in the work dir: root inside a user namespace
    /// has euid 0 but not `CAP_SYS_ADMIN` over the filesystem.
    fn probe_trusted_xattrs(&self) -> bool {
        let tmp = self.temp();
        let Ok(fd) = sys::openat(
            self.work(),
            tmp.name(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o600,
        ) else {
            return false;
        };
        sys::set_xattr(fd.as_fd(), c"trusted.rfs.probe", b"1", 0).is_ok()
    }

    /// A fresh name in the work dir to build an entry under; nothing exists there yet.
    pub(crate) fn temp(&self) -> WorkTemp {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        WorkTemp {
            work: Arc::clone(&self.work),
            name: CString::new(format!("{TMP_PREFIX}{}-{n}", std::process::id()))
                .unwrap_or_default(),
            armed: true,
        }
    }

    /// The work dir fd.
    pub(crate) fn work(&self) -> BorrowedFd<'_> {
        self.work.as_fd()
    }

    /// The upper root fd.
    pub(crate) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Removes everything in the work dir (leftovers of an interrupted copy-up).
    fn clean_work(&self) -> io::Result<()> {
        let fd = sys::openat(
            self.work.as_fd(),
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        for (name, _, _) in sys::read_dir(fd)? {
            let c = sys::cstr(&name)?;
            remove_tree(self.work.as_fd(), &c)?;
        }
        Ok(())
    }

    /// An `O_PATH` fd of the upper directory at `path` (relative; `""` is the root).
    pub(crate) fn dir(&self, path: &[u8]) -> Result<OwnedFd, crate::Error> {
        let c = sys::rel_cstr(path).map_err(|e| io_ctx("path", path, e))?;
        sys::openat_beneath(self.root.as_fd(), &c, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| io_ctx("open upper dir", path, e))
    }

    /// Looks `name` up in the upper dir `dir`: `Ok(None)` if absent, `Some(None)`-like
    /// whiteouts are reported through [`LookupResult::Whiteout`].
    pub(crate) fn lookup(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
    ) -> Result<LookupResult, crate::Error> {
        let c = sys::cstr(name).map_err(|e| io_ctx("name", name, e))?;
        match sys::fstatat_opt(dir, &c).map_err(|e| io_ctx("stat upper", name, e))? {
            Some(st) if is_whiteout_stat(&st) => Ok(LookupResult::Whiteout),
            Some(st) => Ok(LookupResult::Entry(Box::new(self.entry_info(dir, &c, st)?))),
            None => {
                if self.whiteouts == WhiteoutStyle::WhFile {
                    let wh = ovl::whiteout_name(name);
                    let c = sys::cstr(&wh).map_err(|e| io_ctx("name", name, e))?;
                    if sys::fstatat_opt(dir, &c)
                        .map_err(|e| io_ctx("stat upper", &wh, e))?
                        .is_some()
                    {
                        return Ok(LookupResult::Whiteout);
                    }
                }
                Ok(LookupResult::Absent)
            }
        }
    }

    /// Reads the overlay markers of the entry `name` in `dir`, whose stat is `st`.
    pub(crate) fn entry_info(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        st: sys::Stat,
    ) -> Result<UpperEntry, crate::Error> {
        let fd = sys::openat(dir, name, libc::O_PATH, 0)
            .map_err(|err| io_ctx("open upper", name.to_bytes(), err))?;
        self.entry_of_fd(fd.as_fd(), st)
            .map_err(|err| io_ctx("read the markers of", name.to_bytes(), err))
    }

    /// Reads the overlay markers of the upper entry open as `fd` (an `O_PATH` fd, or a file
    /// that may no longer have a name), whose stat is `st`.
    pub(crate) fn entry_of_fd(&self, fd: BorrowedFd<'_>, st: sys::Stat) -> io::Result<UpperEntry> {
        let m = Markers::read(fd)?;
        let mut opaque = m.opaque;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR && !opaque {
            // A `.wh..wh..opq` marker inside also makes it opaque (OCI-style upper).
            let marker = sys::cstr(OPAQUE_MARKER)?;
            opaque = sys::fstatat_opt(fd, &marker).ok().flatten().is_some();
        }
        Ok(UpperEntry {
            st,
            origin: m.origin,
            opaque,
            redirect: m.redirect,
            owner_override: m.owner,
            metacopy: m.metacopy,
        })
    }

    /// Sets `marker` to `value` on `fd`. Symlinks of a rootless upper cannot carry `user.`
    /// xattrs: that failure is ignored for [`Marker::Origin`] (the entry then gets a new inode
    /// number at the next mount).
    pub(crate) fn set_marker(
        &self,
        fd: BorrowedFd<'_>,
        marker: Marker,
        value: &[u8],
    ) -> io::Result<()> {
        match sys::set_xattr(fd, marker.xattr(self.markers), value, 0) {
            Err(e)
                if marker == Marker::Origin
                    && matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP)) =>
            {
                Ok(())
            }
            r => r,
        }
    }

    /// Records ownership a rootless daemon could not set (`user.containers.override_stat`).
    pub(crate) fn set_owner_override(
        &self,
        fd: BorrowedFd<'_>,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> io::Result<()> {
        let v = OverrideStat {
            uid,
            gid,
            perm: mode,
        }
        .encode();
        match sys::set_xattr(fd, OVERRIDE_STAT, &v, 0) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP)) => Ok(()),
            r => r,
        }
    }

    /// Makes `name` in `dir` a whiteout, atomically replacing a non-directory there.
    pub(crate) fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
        let c = sys::cstr(name)?;
        match self.whiteouts {
            WhiteoutStyle::CharDev => {
                // Nothing of that name in the upper (the usual case: a lower entry is
                // deleted): make the whiteout in place, which is atomic by itself.
                match sys::mknodat(dir, &c, libc::S_IFCHR, 0) {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    r => return r,
                }
                let tmp = self.temp();
                sys::mknodat(self.work(), tmp.name(), libc::S_IFCHR, 0)?;
                tmp.commit(dir, &c, 0)
            }
            WhiteoutStyle::WhFile => {
                let wh = ovl::whiteout_name(name);
                let whc = sys::cstr(&wh)?;
                drop(sys::openat(
                    dir,
                    &whc,
                    libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                    0o600,
                )?);
                match sys::unlinkat(dir, &c, false) {
                    Ok(()) => Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Renames `src_name` in `src` to `dst_name` in `dst`; with `whiteout`, leaves a whiteout
    /// at the source (a lower entry shows through there). Where the host can, that happens in
    /// the same step (`RENAME_WHITEOUT`, as kernel overlayfs does), so a daemon killed
    /// midway never shows both names; with `.wh.` files it follows the rename, which also
    /// clears a `.wh.` file for the destination.
    pub(crate) fn rename(
        &self,
        src: BorrowedFd<'_>,
        src_name: &[u8],
        dst: BorrowedFd<'_>,
        dst_name: &[u8],
        whiteout: bool,
    ) -> io::Result<()> {
        let (sc, dc) = (sys::cstr(src_name)?, sys::cstr(dst_name)?);
        if whiteout && self.rename_whiteout {
            return sys::renameat2(src, &sc, dst, &dc, libc::RENAME_WHITEOUT);
        }
        sys::renameat2(src, &sc, dst, &dc, 0)?;
        if self.whiteouts == WhiteoutStyle::WhFile {
            self.remove_wh_file(dst, dst_name)?;
        }
        if whiteout {
            self.make_whiteout(src, src_name)?;
        }
        Ok(())
    }

    /// Whether `name` in `dir` is a whiteout, and removes a `.wh.` file for it if that is the
    /// style (the char-dev style is replaced by a rename instead).
    pub(crate) fn whiteout_at(&self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
        let c = sys::cstr(name)?;
        if let Some(st) = sys::fstatat_opt(dir, &c)? {
            return Ok(is_whiteout_stat(&st));
        }
        Ok(false)
    }

    /// Removes a `.wh.<name>` file in `dir`, if any.
    pub(crate) fn remove_wh_file(&self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
        let wh = ovl::whiteout_name(name);
        let c = sys::cstr(&wh)?;
        match sys::unlinkat(dir, &c, false) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether the upper directory fd is opaque.
    pub(crate) fn is_opaque(&self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        is_opaque_xattr(fd)
    }
}

/// An entry being built in the work dir under a temporary name. Dropping the guard removes
/// whatever is under that name (a file, or a directory and all it holds) unless
/// [`WorkTemp::commit`] renamed it into place first, so no error path between making an entry
/// and renaming it leaves a leftover behind. It holds its own reference to the work dir, so a
/// data copy made ahead of a copy-up can wait in its inode.
///
/// The name is unique to this daemon (pid and a counter), and only the guard's owner uses
/// it; dropping takes no lock.
#[derive(Debug)]
pub(crate) struct WorkTemp {
    work: Arc<OwnedFd>,
    name: CString,
    /// Whether dropping removes the entry: false once renamed into place or removed.
    armed: bool,
}

impl WorkTemp {
    /// The temporary name, relative to [`WorkTemp::work`].
    pub(crate) fn name(&self) -> &CStr {
        &self.name
    }

    /// The work dir the name is in.
    pub(crate) fn work(&self) -> BorrowedFd<'_> {
        self.work.as_fd()
    }

    /// Renames the entry to `to` in `dir` (`renameat2` with `flags`), which makes it
    /// permanent. On failure the entry is removed before this returns.
    pub(crate) fn commit(mut self, dir: BorrowedFd<'_>, to: &CStr, flags: u32) -> io::Result<()> {
        sys::renameat2(self.work.as_fd(), &self.name, dir, to, flags)?;
        self.armed = false;
        Ok(())
    }

    /// Swaps the entry with `to` in `dir` (`RENAME_EXCHANGE`): the built entry takes `to`'s
    /// place, and what was there is now under the temporary name, removed with the guard.
    pub(crate) fn exchange(&self, dir: BorrowedFd<'_>, to: &CStr) -> io::Result<()> {
        sys::renameat2(
            self.work.as_fd(),
            &self.name,
            dir,
            to,
            libc::RENAME_EXCHANGE,
        )
    }

    /// Removes the entry now, reporting a failure that dropping would only log.
    pub(crate) fn remove(mut self) -> io::Result<()> {
        self.armed = false;
        remove_tree(self.work.as_fd(), &self.name)
    }
}

impl Drop for WorkTemp {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = remove_tree(self.work.as_fd(), &self.name)
        {
            log::warn!(
                "work dir: {} not removed (it goes at the next mount): {e}",
                self.name.to_string_lossy()
            );
        }
    }
}

/// What the upper has under a name.
#[derive(Debug)]
pub(crate) enum LookupResult {
    /// Nothing.
    Absent,
    /// A whiteout: the name is deleted.
    Whiteout,
    /// A real entry.
    Entry(Box<UpperEntry>),
}

/// Removes `name` in `dir` and everything below it, without following symlinks. A directory
/// its owner cannot read or search (`chmod 000` by a container's command) is opened up first:
/// without root, only the mode bars the owner.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<()> {
    match sys::unlinkat(dir, name, false) {
        Ok(()) => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM)) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    }
    let st = sys::fstatat(dir, name)?;
    if kind_of(&st) == FileKind::Dir && st.st_mode & 0o700 != 0o700 {
        // A directory (fstatat did not follow the name), so no symlink is chmodded through.
        sys::fchmodat(dir, name, 0o700)?;
    }
    let sub = sys::openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let list_fd = sys::openat(sub.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for (child, _, _) in sys::read_dir(list_fd)? {
        let c = sys::cstr(&child)?;
        remove_tree(sub.as_fd(), &c)?;
    }
    sys::unlinkat(dir, name, true)
}

/// The `FileKind` of a stat.
pub(crate) fn kind_of(st: &sys::Stat) -> FileKind {
    FileKind::from_mode(st.st_mode).unwrap_or(FileKind::File)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upper and work dir in a fresh temp dir, opened.
    fn upper() -> (tempfile::TempDir, Upper) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (u, w) = (dir.path().join("upper"), dir.path().join("work"));
        std::fs::create_dir(&u).expect("upper");
        std::fs::create_dir(&w).expect("work");
        let up = Upper::open(&u, &w, None).expect("open upper");
        (dir, up)
    }

    fn work_entries(dir: &tempfile::TempDir) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("work"))
            .expect("read work")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn make_file(t: &WorkTemp) {
        drop(
            sys::openat(t.work(), t.name(), libc::O_CREAT | libc::O_WRONLY, 0o600)
                .expect("create temp"),
        );
    }

    #[test]
    fn opening_leaves_the_work_dir_empty() {
        let (dir, _up) = upper();
        assert!(work_entries(&dir).is_empty(), "{:?}", work_entries(&dir));
    }

    #[test]
    fn a_dropped_temp_is_removed_file_or_tree() {
        let (dir, up) = upper();
        let file = up.temp();
        make_file(&file);
        let tree = up.temp();
        sys::mkdirat(tree.work(), tree.name(), 0o700).expect("mkdir");
        std::fs::write(
            dir.path()
                .join("work")
                .join(tree.name().to_str().unwrap())
                .join("x"),
            "x",
        )
        .expect("file in temp dir");
        assert_eq!(work_entries(&dir).len(), 2);
        drop(file);
        drop(tree);
        assert!(work_entries(&dir).is_empty(), "{:?}", work_entries(&dir));
        // A temp that was never made is dropped quietly.
        drop(up.temp());
    }

    #[test]
    fn a_committed_temp_stays_where_it_was_renamed_to() {
        let (dir, up) = upper();
        let t = up.temp();
        make_file(&t);
        t.commit(up.root(), c"placed", 0).expect("commit");
        assert!(work_entries(&dir).is_empty());
        assert!(dir.path().join("upper/placed").is_file());
    }

    #[test]
    fn a_failed_commit_or_exchange_leaves_nothing_in_the_work_dir() {
        let (dir, up) = upper();
        let t = up.temp();
        make_file(&t);
        std::fs::write(dir.path().join("upper/taken"), "theirs").expect("existing");
        let e = t
            .commit(up.root(), c"taken", libc::RENAME_NOREPLACE)
            .expect_err("the name is taken");
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert!(work_entries(&dir).is_empty(), "{:?}", work_entries(&dir));
        assert_eq!(
            std::fs::read(dir.path().join("upper/taken")).unwrap(),
            b"theirs"
        );
        // The rmdir path: a whiteout made in the work dir, exchanged with a name that is
        // not there.
        let wh = up.temp();
        sys::mknodat(wh.work(), wh.name(), libc::S_IFCHR, 0)
            .or_else(|_| sys::openat(wh.work(), wh.name(), libc::O_CREAT, 0o600).map(drop))
            .expect("whiteout");
        wh.exchange(up.root(), c"missing")
            .expect_err("nothing to exchange with");
        drop(wh);
        assert!(work_entries(&dir).is_empty(), "{:?}", work_entries(&dir));
    }

    #[test]
    fn an_exchanged_temp_takes_away_what_it_replaced() {
        let (dir, up) = upper();
        std::fs::write(dir.path().join("upper/x"), "old").expect("old");
        let t = up.temp();
        sys::mkdirat(t.work(), t.name(), 0o700).expect("mkdir");
        t.exchange(up.root(), c"x").expect("exchange");
        assert!(dir.path().join("upper/x").is_dir());
        assert_eq!(
            work_entries(&dir).len(),
            1,
            "the old file, under the temp name"
        );
        t.remove().expect("remove");
        assert!(work_entries(&dir).is_empty());
    }

    #[test]
    fn whiteouts_replace_and_leave_no_temp() {
        let (dir, up) = upper();
        std::fs::write(dir.path().join("upper/f"), "f").expect("file");
        up.make_whiteout(up.root(), b"f")
            .expect("whiteout over a file");
        up.make_whiteout(up.root(), b"g")
            .expect("whiteout of a free name");
        for n in [&b"f"[..], b"g"] {
            assert!(
                matches!(up.lookup(up.root(), n).unwrap(), LookupResult::Whiteout),
                "{}",
                String::from_utf8_lossy(n)
            );
        }
        assert!(work_entries(&dir).is_empty(), "{:?}", work_entries(&dir));
    }
}
