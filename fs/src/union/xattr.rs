//! Extended attributes of merged entries. The overlay's own xattrs (`*.overlay.*`,
//! `*.rfs.*`, `user.containers.override_stat`) are private: never listed, read or set here.

use std::os::fd::{AsFd, OwnedFd};

use super::{UnionFs, bytes_err, cname, lock};
use crate::ovl::is_private_xattr;
use crate::{Error, sys};

impl UnionFs {
    /// Reads the xattr `name` of `ino` (private overlay xattrs do not exist here).
    ///
    /// # Errors
    /// `NoAttr`; host errors.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>, Error> {
        if is_private_xattr(name) {
            return Err(Error::NoAttr);
        }
        let _ns = self.read_ns();
        let inode = self.inode(ino)?;
        let (upper, lower) = {
            let st = lock(&inode.state);
            (st.upper, st.lower)
        };
        if upper {
            // One getxattr, not a listing: the kernel asks for security.capability before
            // every write.
            let fd = self.upper_path_fd(ino)?;
            return sys::get_xattr(fd.as_fd(), &cname(name)?)
                .map_err(|e| bytes_err("getxattr", name, e))?
                .ok_or(Error::NoAttr);
        }
        self.lower
            .xattr(lower.ok_or(Error::NotFound)?, name)?
            .ok_or(Error::NoAttr)
    }

    /// The xattr names of `ino`, without private ones.
    ///
    /// # Errors
    /// Host errors.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>, Error> {
        Ok(self
            .all_xattrs(ino)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !is_private_xattr(k))
            .collect())
    }

    /// Every xattr of `ino` with its value, private ones included.
    fn all_xattrs(&self, ino: u64) -> Result<crate::lower::Xattrs, Error> {
        let _ns = self.read_ns();
        let inode = self.inode(ino)?;
        let (upper, lower) = {
            let st = lock(&inode.state);
            (st.upper, st.lower)
        };
        if !upper {
            return self.lower.xattrs(lower.ok_or(Error::NotFound)?);
        }
        let fd = self.upper_path_fd(ino)?;
        let path = || String::from("upper entry");
        let names = sys::list_xattr(fd.as_fd()).map_err(|e| Error::io("listxattr", path(), e))?;
        let mut out = Vec::new();
        for n in names {
            let c = cname(&n)?;
            if let Some(v) =
                sys::get_xattr(fd.as_fd(), &c).map_err(|e| Error::io("getxattr", path(), e))?
            {
                out.push((n, v));
            }
        }
        Ok(out)
    }

    /// An `O_PATH` fd of `ino`'s upper entry, beneath the upper root.
    fn upper_path_fd(&self, ino: u64) -> Result<OwnedFd, Error> {
        let path = self.path(ino)?;
        let c = sys::rel_cstr(&path).map_err(|e| bytes_err("path", &path, e))?;
        sys::openat_beneath(self.upper()?.root(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(|e| bytes_err("open upper", &path, e))
    }

    /// Sets an xattr (copies up first).
    ///
    /// # Errors
    /// `NotPermitted` for private names; host errors.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> Result<(), Error> {
        if is_private_xattr(name) {
            return Err(Error::NotPermitted);
        }
        let _ns = self.read_ns();
        self.copy_up_meta(ino)?;
        let fd = self.upper_path_fd(ino)?;
        sys::set_xattr(fd.as_fd(), &cname(name)?, value, flags)
            .map_err(|e| bytes_err("setxattr", name, e))
    }

    /// Removes an xattr (copies up first).
    ///
    /// # Errors
    /// `NoAttr`; host errors.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<(), Error> {
        if is_private_xattr(name) {
            return Err(Error::NoAttr);
        }
        let _ns = self.read_ns();
        self.copy_up_meta(ino)?;
        let fd = self.upper_path_fd(ino)?;
        sys::remove_xattr(fd.as_fd(), &cname(name)?).map_err(|e| bytes_err("removexattr", name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::union::fixture::{Fixture, Node};

    #[test]
    fn xattrs_copy_up_and_the_overlays_own_stay_private() {
        let f = Fixture::new(&[&[("f", Node::File(b"f"))]]);
        let ino = f.walk("f").ino;
        assert!(matches!(f.fs.getxattr(ino, b"user.x"), Err(Error::NoAttr)));
        f.fs.setxattr(ino, b"user.x", b"1", 0).expect("setxattr");
        assert!(f.upper("f").exists(), "setxattr copies up");
        assert_eq!(f.fs.getxattr(ino, b"user.x").unwrap(), b"1");
        // The copy-up recorded the origin (and, rootless, maybe an override_stat): private.
        assert!(f.marker("f", "rfs.origin").is_some());
        assert_eq!(f.fs.listxattr(ino).unwrap(), [b"user.x".to_vec()]);
        for private in [
            &b"user.rfs.origin"[..],
            b"trusted.overlay.opaque",
            b"user.containers.override_stat",
        ] {
            assert!(matches!(f.fs.getxattr(ino, private), Err(Error::NoAttr)));
            assert!(matches!(
                f.fs.setxattr(ino, private, b"v", 0),
                Err(Error::NotPermitted)
            ));
            assert!(matches!(f.fs.removexattr(ino, private), Err(Error::NoAttr)));
        }
        f.fs.removexattr(ino, b"user.x").expect("removexattr");
        assert!(f.fs.listxattr(ino).unwrap().is_empty());
    }
}
