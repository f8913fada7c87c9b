//! The overlay's on-disk vocabulary, decoded and encoded in this one place.
//!
//! An upper directory (and a directory lower, which is often an old upper) spells the union's
//! state with names and extended attributes. Kernel overlayfs (`Documentation/filesystems/
//! overlayfs.rst`), the OCI layer format (`image-spec/layer.md`) and containers/storage each
//! contribute some:
//!
//! | what | spelling | read | written |
//! |---|---|---|---|
//! | whiteout | char device 0/0 | yes | as root (`CAP_MKNOD`) |
//! | whiteout | empty file with `{trusted,user}.overlay.whiteout` | yes | no |
//! | whiteout | `.wh.<name>` (OCI, fuse-overlayfs without `CAP_MKNOD`) | yes | rootless |
//! | opaque directory | `{trusted,user}.overlay.opaque` = `y` (`x` means "has xattr whiteouts") | yes | yes |
//! | opaque directory | a `.wh..wh..opq` entry (OCI) | yes | no |
//! | renamed directory | `{trusted,user}.overlay.redirect` = absolute lower path | yes | yes |
//! | renamed metadata-only copy | `{trusted,user}.overlay.redirect` = absolute path of its data | yes | yes |
//! | copied-up entry's inode | `{trusted,user}.rfs.origin` = lower inode number | yes | yes |
//! | metadata-only copy | `{trusted,user}.rfs.metacopy` (kernel: `overlay.metacopy`) | yes | yes |
//! | rootless ownership | `user.containers.override_stat` = `uid:gid:mode[:type]` | yes | rootless |
//!
//! `trusted.*` needs `CAP_SYS_ADMIN` in the initial user namespace; elsewhere the same names
//! live under `user.*` (kernel `userxattr`). Both are read; markers are written in the
//! namespace the upper supports. The engine (`crate::upper`, `crate::union`), directory lowers
//! (`crate::lower`) and `rfs diff`/`rfs commit` (`crate::store::changes`) all decode through
//! [`Markers`] and encode through [`Marker`] and [`OverrideStat`], so they cannot drift.

use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;

use crate::sys;

/// The OCI whiteout name prefix: `.wh.<name>` deletes `<name>` from the layers below.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The OCI opaque-directory marker: hides everything below its directory.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// `user.containers.override_stat`: ownership and mode a rootless upper cannot give a file.
pub const OVERRIDE_STAT: &CStr = c"user.containers.override_stat";

/// What a directory entry's name means in the OCI layer format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRole<'a> {
    /// An ordinary name.
    Entry,
    /// `.wh.<name>`: deletes `<name>`.
    Whiteout(&'a [u8]),
    /// `.wh..wh..opq`: makes its directory opaque.
    OpaqueMarker,
    /// Another `.wh..wh.` name (aufs meta names such as `.wh..wh.plnk`): never shown.
    Meta,
}

/// Classifies `name` (DESIGN rule 4). A bare `.wh.` is [`NameRole::Meta`]: it names nothing.
pub fn name_role(name: &[u8]) -> NameRole<'_> {
    if name == OPAQUE_MARKER {
        return NameRole::OpaqueMarker;
    }
    match name.strip_prefix(WHITEOUT_PREFIX) {
        None => NameRole::Entry,
        Some(rest) if rest.is_empty() || rest.starts_with(WHITEOUT_PREFIX) => NameRole::Meta,
        Some(hidden) => NameRole::Whiteout(hidden),
    }
}

/// `.wh.<name>`, the OCI whiteout of `name`.
pub fn whiteout_name(name: &[u8]) -> Vec<u8> {
    let mut wh = WHITEOUT_PREFIX.to_vec();
    wh.extend_from_slice(name);
    wh
}

/// Whether a stat is a kernel whiteout: a character device 0/0.
pub fn is_whiteout_stat(st: &sys::Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Whether a stat could be an xattr whiteout (an empty regular file); checking this first
/// saves a `getxattr` for every other entry.
pub fn may_be_xattr_whiteout(st: &sys::Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size == 0
}

/// The xattr namespace markers live in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// `trusted.*`: root in the initial user namespace (kernel overlayfs's default).
    Trusted,
    /// `user.*`: everywhere else (kernel `userxattr`).
    User,
}

/// One of the markers rfs writes as an xattr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// `overlay.opaque` = `y`.
    Opaque,
    /// `overlay.redirect` = the absolute path of the lower directory (or, for a metadata-only
    /// copy, file) an entry merges with.
    Redirect,
    /// `rfs.origin` = the lower inode number a copied-up entry had.
    Origin,
    /// `rfs.metacopy`: the data still lives in the lower entry.
    Metacopy,
}

impl Marker {
    /// The xattr name of this marker in `ns`.
    pub fn xattr(self, ns: Namespace) -> &'static CStr {
        use Marker::*;
        use Namespace::*;
        match (self, ns) {
            (Opaque, Trusted) => c"trusted.overlay.opaque",
            (Opaque, User) => c"user.overlay.opaque",
            (Redirect, Trusted) => c"trusted.overlay.redirect",
            (Redirect, User) => c"user.overlay.redirect",
            (Origin, Trusted) => c"trusted.rfs.origin",
            (Origin, User) => c"user.rfs.origin",
            (Metacopy, Trusted) => c"trusted.rfs.metacopy",
            (Metacopy, User) => c"user.rfs.metacopy",
        }
    }

    /// The value of an opaque marker.
    pub const OPAQUE_VALUE: &'static [u8] = b"y";

    /// The value that records lower inode number `ino` as an origin.
    pub fn origin_value(ino: u64) -> Vec<u8> {
        ino.to_string().into_bytes()
    }
}

/// Whether an xattr is the overlay's or rfs's bookkeeping: never shown in the mount, never
/// settable through it, never part of a committed layer.
pub fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || matches!(
            name,
            b"trusted.rfs.origin"
                | b"user.rfs.origin"
                | b"trusted.rfs.metacopy"
                | b"user.rfs.metacopy"
                | b"user.containers.override_stat"
        )
}

/// Ownership and permission bits kept in `user.containers.override_stat`
/// (`uid:gid:mode[:type]`, mode in octal, as containers/storage and fuse-overlayfs write it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverrideStat {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits (setuid, setgid, sticky and rwx; no file type).
    pub perm: u32,
}

impl OverrideStat {
    /// Decodes a value. Anything but `uid:gid:octal-mode` with an optional fourth field is
    /// `None`: a malformed override is ignored as a whole (the entry then shows its host
    /// ownership), never half applied.
    pub fn decode(value: &[u8]) -> Option<OverrideStat> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split(':');
        let uid = parts.next()?.parse().ok()?;
        let gid = parts.next()?.parse().ok()?;
        let mode = parts.next()?;
        if mode.is_empty() || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return None;
        }
        let mode = u32::from_str_radix(mode, 8).ok()?;
        // The optional type field (`file`, `dir`, `char-1-3`, ...) restates what the host
        // entry is; nothing more may follow it.
        let _kind = parts.next();
        if parts.next().is_some() {
            return None;
        }
        Some(OverrideStat {
            uid,
            gid,
            perm: mode & 0o7777,
        })
    }

    /// The value to store.
    pub fn encode(&self) -> Vec<u8> {
        format!("{}:{}:0{:o}", self.uid, self.gid, self.perm & 0o7777).into_bytes()
    }
}

/// Everything the overlay records about one entry in xattrs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Markers {
    /// `overlay.opaque` = `y`.
    pub opaque: bool,
    /// `overlay.redirect`, raw.
    pub redirect: Option<Vec<u8>>,
    /// `rfs.origin`, when it is a number.
    pub origin: Option<u64>,
    /// `rfs.metacopy` or the kernel's `overlay.metacopy`.
    pub metacopy: bool,
    /// `overlay.whiteout` on an empty file: the entry is a whiteout.
    pub xattr_whiteout: bool,
    /// `user.containers.override_stat`, when well formed.
    pub owner: Option<OverrideStat>,
}

impl Markers {
    /// Decodes the private xattrs among `xattrs` (name, value); other names are skipped.
    pub fn decode<'a>(xattrs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Markers {
        let mut m = Markers::default();
        for (name, value) in xattrs {
            let suffix = name
                .strip_prefix(b"trusted.")
                .or_else(|| name.strip_prefix(b"user."));
            match suffix {
                Some(b"overlay.opaque") => m.opaque |= value == Marker::OPAQUE_VALUE,
                Some(b"overlay.redirect") => m.redirect = Some(value.to_vec()),
                Some(b"overlay.metacopy" | b"rfs.metacopy") => m.metacopy = true,
                Some(b"overlay.whiteout") => m.xattr_whiteout = true,
                Some(b"rfs.origin") => {
                    m.origin = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                }
                Some(b"containers.override_stat") if name.starts_with(b"user.") => {
                    m.owner = OverrideStat::decode(value);
                }
                _ => {}
            }
        }
        m
    }

    /// Reads the markers of the entry `fd` (an `O_PATH` fd will do): one `listxattr`, and a
    /// `getxattr` only for the private names it lists.
    ///
    /// # Errors
    /// The host's `listxattr`/`getxattr` errors.
    pub fn read(fd: BorrowedFd<'_>) -> io::Result<Markers> {
        let mut found = Vec::new();
        for name in sys::list_xattr(fd)? {
            if !is_private_xattr(&name) {
                continue;
            }
            let c = sys::cstr(&name)?;
            if let Some(value) = sys::get_xattr(fd, &c)? {
                found.push((name, value));
            }
        }
        Ok(Markers::decode(
            found.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
        ))
    }
}

/// Whether the directory `fd` carries an opaque xattr with the value `y` (a cheaper check
/// than [`Markers::read`] for the lower walk, which needs nothing else of a directory).
///
/// # Errors
/// The host's `getxattr` errors.
pub fn is_opaque_xattr(fd: BorrowedFd<'_>) -> io::Result<bool> {
    for ns in [Namespace::Trusted, Namespace::User] {
        if sys::get_xattr(fd, Marker::Opaque.xattr(ns))?.as_deref() == Some(Marker::OPAQUE_VALUE) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The `overlay.redirect` in namespace `ns` of the entry `name` of directory `dir`, checked
/// as the kernel checks it (`ovl_get_redirect_xattr`): an absolute path of non-empty
/// components, or one name in the same parent; never `.` or `..`, never empty.
///
/// # Errors
/// The host's `getxattr` errors; `InvalidData` for a malformed value.
pub fn redirect_at(dir: BorrowedFd<'_>, name: &CStr, ns: Namespace) -> io::Result<Option<Vec<u8>>> {
    let Some(value) = sys::get_xattr_at(dir, name, Marker::Redirect.xattr(ns))? else {
        return Ok(None);
    };
    let valid = match value.strip_prefix(b"/") {
        Some(absolute) => absolute
            .split(|&b| b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b".." && !c.contains(&0)),
        None => {
            !value.is_empty()
                && !value.contains(&b'/')
                && !value.contains(&0)
                && value != b"."
                && value != b".."
        }
    };
    if !valid {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{:?}: invalid {} {:?}",
                String::from_utf8_lossy(name.to_bytes()),
                Marker::Redirect.xattr(ns).to_string_lossy(),
                String::from_utf8_lossy(&value)
            ),
        ));
    }
    Ok(Some(value))
}

/// Whether the entry `name` of directory `dir` is a metadata-only copy in namespace `ns`
/// (the kernel's `overlay.metacopy` or rfs's `rfs.metacopy`): its data is the file below.
///
/// # Errors
/// The host's `getxattr` errors.
pub fn is_metacopy_at(dir: BorrowedFd<'_>, name: &CStr, ns: Namespace) -> io::Result<bool> {
    let kernel = match ns {
        Namespace::Trusted => c"trusted.overlay.metacopy",
        Namespace::User => c"user.overlay.metacopy",
    };
    for x in [kernel, Marker::Metacopy.xattr(ns)] {
        if sys::get_xattr_at(dir, name, x)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether the empty file `fd` is an xattr whiteout (`{trusted,user}.overlay.whiteout`).
///
/// # Errors
/// The host's `getxattr` errors.
pub fn is_xattr_whiteout(fd: BorrowedFd<'_>) -> io::Result<bool> {
    for name in [c"trusted.overlay.whiteout", c"user.overlay.whiteout"] {
        if sys::get_xattr(fd, name)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_as_the_oci_format_says() {
        assert_eq!(name_role(b"etc"), NameRole::Entry);
        assert_eq!(name_role(b".wh.etc"), NameRole::Whiteout(b"etc"));
        assert_eq!(name_role(b".wh..wh..opq"), NameRole::OpaqueMarker);
        assert_eq!(name_role(b".wh..wh.plnk"), NameRole::Meta);
        assert_eq!(name_role(b".wh."), NameRole::Meta);
        assert_eq!(name_role(b".whx"), NameRole::Entry);
        assert_eq!(whiteout_name(b"a"), b".wh.a");
    }

    #[test]
    fn override_stat_round_trips_and_refuses_malformed_values() {
        let o = OverrideStat {
            uid: 1000,
            gid: 100,
            perm: 0o4755,
        };
        assert_eq!(o.encode(), b"1000:100:04755");
        assert_eq!(OverrideStat::decode(&o.encode()), Some(o));
        // containers/storage adds the type; fuse-overlayfs writes the mode without a 0.
        assert_eq!(
            OverrideStat::decode(b"0:0:0644:file").map(|o| o.perm),
            Some(0o644)
        );
        assert_eq!(
            OverrideStat::decode(b"0:0:755").map(|o| o.perm),
            Some(0o755)
        );
        // Type bits in the mode are dropped, never taken as permissions.
        assert_eq!(
            OverrideStat::decode(b"0:0:0100644").map(|o| o.perm),
            Some(0o644)
        );
        for bad in [
            &b""[..],
            b"0:0",
            b"0:0:",
            b"0:0:0x1ff",
            b"0:0:0999",
            b"-1:0:0644",
            b"a:0:0644",
            b"0:0:0644:file:more",
            b"\xff:0:0644",
        ] {
            assert_eq!(OverrideStat::decode(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn markers_decode_both_namespaces_and_skip_public_xattrs() {
        let xattrs: &[(&[u8], &[u8])] = &[
            (b"user.overlay.opaque", b"y"),
            (b"trusted.overlay.redirect", b"/a/b"),
            (b"user.rfs.origin", b"42"),
            (b"trusted.overlay.metacopy", b""),
            (b"user.containers.override_stat", b"1:2:0600"),
            (b"user.mine", b"kept elsewhere"),
        ];
        let m = Markers::decode(xattrs.iter().copied());
        assert!(m.opaque && m.metacopy && !m.xattr_whiteout);
        assert_eq!(m.redirect.as_deref(), Some(&b"/a/b"[..]));
        assert_eq!(m.origin, Some(42));
        assert_eq!(
            m.owner,
            Some(OverrideStat {
                uid: 1,
                gid: 2,
                perm: 0o600
            })
        );
        // "x" marks a directory with xattr whiteouts, not an opaque one (DESIGN rule 4);
        // trusted.containers.* is not the containers/storage name.
        let m = Markers::decode([
            (&b"trusted.overlay.opaque"[..], &b"x"[..]),
            (b"trusted.containers.override_stat", b"1:2:0600"),
            (b"user.rfs.origin", b"not a number"),
        ]);
        assert_eq!(m, Markers::default());
    }

    #[test]
    fn private_xattrs_are_exactly_the_bookkeeping_names() {
        for private in [
            &b"trusted.overlay.opaque"[..],
            b"user.overlay.anything",
            b"user.rfs.origin",
            b"trusted.rfs.metacopy",
            b"user.containers.override_stat",
        ] {
            assert!(is_private_xattr(private));
        }
        for public in [&b"user.mine"[..], b"security.capability", b"user.rfs.other"] {
            assert!(!is_private_xattr(public));
        }
        for m in [
            Marker::Opaque,
            Marker::Redirect,
            Marker::Origin,
            Marker::Metacopy,
        ] {
            for ns in [Namespace::Trusted, Namespace::User] {
                assert!(is_private_xattr(m.xattr(ns).to_bytes()));
            }
        }
    }

    #[test]
    fn markers_are_read_from_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsFd;
        let fd = f.as_fd();
        sys::set_xattr(fd, Marker::Origin.xattr(Namespace::User), b"7", 0).unwrap();
        sys::set_xattr(fd, OVERRIDE_STAT, b"0:0:0644", 0).unwrap();
        sys::set_xattr(fd, c"user.public", b"v", 0).unwrap();
        let m = Markers::read(fd).unwrap();
        assert_eq!(m.origin, Some(7));
        assert_eq!(m.owner.map(|o| o.perm), Some(0o644));
        assert!(!m.opaque && !m.metacopy);
    }
}
