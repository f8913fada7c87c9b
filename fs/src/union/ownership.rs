//! The ownership policy: how the owner and mode an entry shows reach the upper.
//!
//! A mount uses one [`Ownership`] mode, chosen once in its [`UnionConfig`](super::UnionConfig):
//!
//! - [`Ownership::Host`]: the daemon may `chown` (root), so an upper entry's owner and mode
//!   are its own on disk.
//! - [`Ownership::Override`]: the daemon cannot `chown` (rootless), so every upper entry
//!   stays the daemon's on disk, and an owner other than the daemon's (and any mode a
//!   `chmod` sets) is recorded in `user.containers.override_stat` (the containers/storage
//!   convention, which `getattr` shows). The mode on disk always keeps the owner's read and
//!   write bits (and search, for directories), so the daemon can still copy up, write to
//!   and list what it stores for others.
//!
//! Every decision that depends on the mode is made here, in the methods of [`Ownership`];
//! the operations only say what happened (an entry was made or copied up, a `chown` or a
//! `chmod` arrived).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::{Attr, bytes_err};
use crate::Error;
use crate::lower::FileKind;
use crate::sys;
use crate::upper::Upper;

/// How owners and modes are stored in the upper: chosen once per mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Owners and modes are the upper files' own: the daemon changes them for real (it runs
    /// as root, in whatever user namespace it serves from).
    Host,
    /// Rootless: upper files stay owned by the daemon's ids; other owners, and modes set by
    /// `chmod`, are recorded in `user.containers.override_stat`.
    Override {
        /// The uid the daemon's files have, as the daemon sees it (in the user namespace
        /// it serves from).
        own_uid: u32,
        /// The gid the daemon's files have, as the daemon sees it.
        own_gid: u32,
    },
}

impl Ownership {
    /// The mode this process would use: [`Ownership::Host`] for effective uid 0, else
    /// [`Ownership::Override`] with its effective ids. A daemon that serves from another
    /// user namespace than the one it is built in must say which ids it will have there.
    pub fn of_process() -> Ownership {
        let uid = sys::geteuid();
        if uid == 0 {
            Ownership::Host
        } else {
            Ownership::Override {
                own_uid: uid,
                own_gid: nix::unistd::getegid().as_raw(),
            }
        }
    }
}

impl Default for Ownership {
    /// [`Ownership::of_process`].
    fn default() -> Self {
        Ownership::of_process()
    }
}

/// The owner and mode an entry is to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Owner {
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// Permission bits, with set-id and sticky bits.
    pub(super) perm: u32,
}

/// How an entry came to be, for [`Ownership::give`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Made {
    /// Created by a caller (or the upper's root taking the lower root's owner).
    Created,
    /// Copied up from a lower entry. Rootless, a lower mode with set-id or sticky bits is
    /// recorded exactly even when the ids are the daemon's.
    CopiedUp,
}

/// An entry in the upper or the work dir whose owner or mode changes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Target<'a> {
    pub(super) dir: BorrowedFd<'a>,
    pub(super) name: &'a CStr,
    pub(super) kind: FileKind,
}

impl Target<'_> {
    /// An `O_PATH` fd of the entry, for its xattrs.
    fn open(&self) -> io::Result<std::os::fd::OwnedFd> {
        sys::openat(self.dir, self.name, libc::O_PATH, 0)
    }

    /// The mode on disk of an entry that shows `perm` to a rootless daemon: the daemon
    /// keeps read and write (and search on directories) for itself.
    fn own_mode(&self, perm: u32) -> u32 {
        let own = if self.kind == FileKind::Dir {
            0o700
        } else {
            0o600
        };
        (perm | own) & 0o7777
    }
}

impl Ownership {
    /// Gives a new or copied-up entry the owner and mode `want`. Symlinks have no mode of
    /// their own, and rootless no owner either (no `user.` xattrs on symlinks).
    pub(super) fn give(
        &self,
        up: &Upper,
        t: Target<'_>,
        want: Owner,
        made: Made,
    ) -> io::Result<()> {
        match *self {
            Ownership::Host => {
                sys::fchownat(t.dir, t.name, Some(want.uid), Some(want.gid))?;
                if t.kind != FileKind::Symlink {
                    sys::fchmodat(t.dir, t.name, want.perm & 0o7777)?;
                }
            }
            Ownership::Override { own_uid, own_gid } => {
                if t.kind == FileKind::Symlink {
                    return Ok(());
                }
                let special = made == Made::CopiedUp && want.perm & 0o7000 != 0;
                if want.uid != own_uid || want.gid != own_gid || special {
                    up.set_owner_override(t.open()?.as_fd(), want.uid, want.gid, want.perm)?;
                }
                sys::fchmodat(t.dir, t.name, t.own_mode(want.perm))?;
            }
        }
        Ok(())
    }

    /// Gives `to`, the full copy that replaces a metadata-only copy, the owner and mode
    /// `from` has on disk. Rootless, `from`'s `override_stat` travels with its other
    /// xattrs.
    pub(super) fn carry(&self, from: &sys::Stat, to: Target<'_>) -> io::Result<()> {
        if *self == Ownership::Host {
            sys::fchownat(to.dir, to.name, Some(from.st_uid), Some(from.st_gid))?;
        }
        sys::fchmodat(to.dir, to.name, from.st_mode & 0o7777)
    }

    /// A `chown` of `t` to `uid`/`gid` (either may stay), with `mode` if the same
    /// `setattr` sets one. `cur` gives what the entry shows now; it is asked only when
    /// needed. `path` names the entry in errors.
    pub(super) fn chown(
        &self,
        up: &Upper,
        t: Target<'_>,
        (uid, gid): (Option<u32>, Option<u32>),
        mode: Option<u32>,
        cur: &dyn Fn() -> Result<Attr, Error>,
        path: &[u8],
    ) -> Result<(), Error> {
        match *self {
            Ownership::Host => {
                sys::fchownat(t.dir, t.name, uid, gid).map_err(|e| bytes_err("chown", path, e))
            }
            Ownership::Override { .. } => {
                let cur = cur()?;
                let fd = t.open().map_err(|e| bytes_err("open", path, e))?;
                let mut perm = mode.unwrap_or(cur.perm);
                if t.kind != FileKind::Dir {
                    perm &= !0o6000; // chown clears setuid/setgid, as the kernel does
                }
                let (uid, gid) = (uid.unwrap_or(cur.uid), gid.unwrap_or(cur.gid));
                up.set_owner_override(fd.as_fd(), uid, gid, perm)
                    .map_err(|e| bytes_err("chown", path, e))
            }
        }
    }

    /// A `chmod` of `t` to `mode` (a no-op for symlinks). `cur` and `path` as for
    /// [`Ownership::chown`].
    pub(super) fn chmod(
        &self,
        up: &Upper,
        t: Target<'_>,
        mode: u32,
        cur: &dyn Fn() -> Result<Attr, Error>,
        path: &[u8],
    ) -> Result<(), Error> {
        if t.kind == FileKind::Symlink {
            return Ok(());
        }
        let err = |e| bytes_err("chmod", path, e);
        match *self {
            Ownership::Host => sys::fchmodat(t.dir, t.name, mode & 0o7777).map_err(err),
            Ownership::Override { .. } => {
                let cur = cur()?;
                let fd = t.open().map_err(|e| bytes_err("open", path, e))?;
                up.set_owner_override(fd.as_fd(), cur.uid, cur.gid, mode)
                    .map_err(err)?;
                sys::fchmodat(t.dir, t.name, t.own_mode(mode)).map_err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::union::fixture::{Fixture, Node, member, require_root, rootless};
    use crate::union::{Caller, SetAttr};

    const OVERRIDE: &str = "user.containers.override_stat";

    /// An image of a directory and files owned by 1234:5678.
    fn image(ownership: Ownership) -> Fixture {
        Fixture::tar(
            &[
                member("d", Node::Dir, 0o750, (1234, 5678)),
                member("d/f", Node::File(b"hello"), 0o640, (1234, 5678)),
                member("d/suid", Node::File(b"x"), 0o4755, (1234, 5678)),
                member("big", Node::File(&[7u8; 1 << 20]), 0o755, (1234, 5678)),
                member("l", Node::Symlink("d/f"), 0o777, (1234, 5678)),
            ],
            ownership,
        )
    }

    fn own_ids() -> (u32, u32) {
        match rootless() {
            Ownership::Override { own_uid, own_gid } => (own_uid, own_gid),
            Ownership::Host => unreachable!(),
        }
    }

    fn disk(f: &Fixture, rel: &str) -> (u32, u32, u32) {
        let m = std::fs::symlink_metadata(f.upper(rel)).expect("upper entry");
        (m.uid(), m.gid(), m.mode() & 0o7777)
    }

    fn setattr(f: &Fixture, ino: u64, set: SetAttr) -> Attr {
        f.fs.setattr(ino, set, None, Caller::ROOT).expect("setattr")
    }

    #[test]
    fn rootless_copy_up_keeps_data_mode_and_owner_in_override_stat() {
        let f = image(rootless());
        let (uid, gid) = own_ids();
        let file = f.walk("d/f");
        f.open_for_write(file.ino);
        assert_eq!(std::fs::read(f.upper("d/f")).unwrap(), b"hello");
        // On disk: the daemon's, with its own read and write bits added.
        assert_eq!(disk(&f, "d/f"), (uid, gid, 0o640));
        assert_eq!(disk(&f, "d"), (uid, gid, 0o750));
        assert_eq!(f.upper_xattr("d/f", OVERRIDE).unwrap(), b"1234:5678:0640");
        assert_eq!(f.upper_xattr("d", OVERRIDE).unwrap(), b"1234:5678:0750");
        let a = f.fs.getattr(file.ino).unwrap();
        assert_eq!((a.uid, a.gid, a.perm), (1234, 5678, 0o640));
        let d = f.fs.getattr(f.walk("d").ino).unwrap();
        assert_eq!((d.uid, d.gid, d.perm), (1234, 5678, 0o750));
        // A symlink cannot carry a user.* xattr: it is copied up without one.
        let l = f.walk("l");
        let set = SetAttr {
            atime: Some(sys::SetTime::Now),
            ..SetAttr::default()
        };
        setattr(&f, l.ino, set);
        assert!(f.upper("l").symlink_metadata().unwrap().is_symlink());
        assert!(f.work_entries().is_empty());
    }

    #[test]
    fn rootless_setid_modes_are_recorded_on_copy_up_and_cleared_by_chown() {
        let f = image(rootless());
        let suid = f.walk("d/suid");
        let set = SetAttr {
            atime: Some(sys::SetTime::Now),
            ..SetAttr::default()
        };
        setattr(&f, suid.ino, set);
        assert_eq!(
            f.upper_xattr("d/suid", OVERRIDE).unwrap(),
            b"1234:5678:04755"
        );
        let set = SetAttr {
            uid: Some(42),
            ..SetAttr::default()
        };
        let a = setattr(&f, suid.ino, set);
        assert_eq!(
            (a.uid, a.gid, a.perm),
            (42, 5678, 0o755),
            "chown clears setuid"
        );
        assert_eq!(f.upper_xattr("d/suid", OVERRIDE).unwrap(), b"42:5678:0755");
    }

    /// A rootless container's union opened outside its user namespace (`rfs cp`): the
    /// files its root owns are this process's on disk and show as the own ids, new entries
    /// by the container's root carry no record, and a chmod records the own ids, not the
    /// ids on disk.
    #[test]
    fn own_ids_on_disk_show_as_the_own_ids() {
        let disk_ids = own_ids();
        let (own_uid, own_gid) = (4242, 4243);
        let f = Fixture::with_config(
            &[&[("d", Node::Dir)]],
            crate::union::UnionConfig {
                ownership: Ownership::Override { own_uid, own_gid },
                own_ids_on_disk: Some(disk_ids),
                ..crate::union::UnionConfig::default()
            },
        );
        let root = Caller {
            uid: own_uid,
            gid: own_gid,
            root: true,
        };
        let (a, fh) =
            f.fs.create(
                crate::lower::ROOT_INO,
                OsStr::new("new"),
                0o644,
                libc::O_WRONLY,
                root,
            )
            .expect("create");
        f.fs.release(fh);
        assert_eq!((a.uid, a.gid), (own_uid, own_gid));
        assert_eq!(disk(&f, "new"), (disk_ids.0, disk_ids.1, 0o644));
        assert!(f.upper_xattr("new", OVERRIDE).is_none(), "no record");
        let set = SetAttr {
            mode: Some(0o400),
            ..SetAttr::default()
        };
        let a = f.fs.setattr(a.ino, set, None, root).expect("chmod");
        assert_eq!((a.uid, a.gid, a.perm), (own_uid, own_gid, 0o400));
        assert_eq!(
            f.upper_xattr("new", OVERRIDE).unwrap(),
            b"4242:4243:0400",
            "the container's ids, not the ones on disk"
        );
    }

    #[test]
    fn rootless_chmod_and_chown_change_override_stat_only() {
        let f = image(rootless());
        let (uid, gid) = own_ids();
        let file = f.walk("d/f");
        let set = SetAttr {
            mode: Some(0o444),
            ..SetAttr::default()
        };
        let a = setattr(&f, file.ino, set);
        assert_eq!(a.perm, 0o444);
        assert_eq!(f.upper_xattr("d/f", OVERRIDE).unwrap(), b"1234:5678:0444");
        assert_eq!(disk(&f, "d/f"), (uid, gid, 0o644), "the daemon keeps rw");
        let set = SetAttr {
            uid: Some(7),
            gid: Some(8),
            mode: Some(0o600),
            ..SetAttr::default()
        };
        let a = setattr(&f, file.ino, set);
        assert_eq!((a.uid, a.gid, a.perm), (7, 8, 0o600));
        assert_eq!(disk(&f, "d/f"), (uid, gid, 0o600));
    }

    #[test]
    fn rootless_new_entries_record_only_owners_other_than_the_daemons() {
        let f = image(rootless());
        let (uid, gid) = own_ids();
        let d = f.walk("d");
        let own = Caller {
            uid,
            gid,
            root: false,
        };
        let (a, fh) =
            f.fs.create(d.ino, OsStr::new("mine"), 0o640, libc::O_WRONLY, own)
                .expect("create");
        f.fs.release(fh);
        assert_eq!((a.uid, a.gid), (uid, gid));
        assert_eq!(f.upper_xattr("d/mine", OVERRIDE), None);
        let other = Caller {
            uid: 99,
            gid: 98,
            root: false,
        };
        let a =
            f.fs.mkdir(d.ino, OsStr::new("theirs"), 0o500, other)
                .expect("mkdir");
        assert_eq!((a.uid, a.gid, a.perm), (99, 98, 0o500));
        assert_eq!(f.upper_xattr("d/theirs", OVERRIDE).unwrap(), b"99:98:0500");
        assert_eq!(
            disk(&f, "d/theirs"),
            (uid, gid, 0o700),
            "the daemon keeps rwx"
        );
    }

    #[test]
    fn rootless_metacopy_completed_keeps_the_recorded_owner() {
        let f = image(rootless());
        let big = f.walk("big");
        let set = SetAttr {
            mode: Some(0o700),
            ..SetAttr::default()
        };
        setattr(&f, big.ino, set);
        assert!(f.marker("big", "rfs.metacopy").is_some(), "metadata only");
        // No data in the upper yet (a block may hold the xattrs).
        assert!(
            std::fs::metadata(f.upper("big")).unwrap().blocks() < 64,
            "sparse"
        );
        let fh =
            f.fs.open(big.ino, libc::O_RDWR, Caller::ROOT)
                .expect("open for write")
                .fh;
        f.fs.release(fh);
        assert!(f.marker("big", "rfs.metacopy").is_none(), "full copy");
        assert_eq!(f.upper_xattr("big", OVERRIDE).unwrap(), b"1234:5678:0700");
        assert_eq!(std::fs::read(f.upper("big")).unwrap(), vec![7u8; 1 << 20]);
        let a = f.fs.getattr(big.ino).unwrap();
        assert_eq!((a.uid, a.gid, a.perm), (1234, 5678, 0o700));
    }

    #[test]
    fn host_ownership_chowns_for_real() {
        if !require_root("host_ownership_chowns_for_real") {
            return;
        }
        let f = image(Ownership::Host);
        let file = f.walk("d/f");
        f.open_for_write(file.ino);
        assert_eq!(disk(&f, "d/f"), (1234, 5678, 0o640));
        assert_eq!(disk(&f, "d"), (1234, 5678, 0o750));
        assert_eq!(f.upper_xattr("d/f", OVERRIDE), None);
        let set = SetAttr {
            uid: Some(42),
            mode: Some(0o604),
            ..SetAttr::default()
        };
        let a = setattr(&f, file.ino, set);
        assert_eq!((a.uid, a.gid, a.perm), (42, 5678, 0o604));
        assert_eq!(disk(&f, "d/f"), (42, 5678, 0o604));
        assert_eq!(f.upper_xattr("d/f", OVERRIDE), None);
    }

    #[test]
    fn the_default_is_the_process_mode() {
        let expected = if nix::unistd::geteuid().is_root() {
            Ownership::Host
        } else {
            rootless()
        };
        assert_eq!(Ownership::default(), expected);
        assert_eq!(crate::union::UnionConfig::default().ownership, expected);
    }
}
