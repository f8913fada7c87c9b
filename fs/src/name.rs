//! `Name`: one validated path component, as FUSE hands them to us.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::Error;

/// Checks that `name` is a single path component: non-empty, no `/`, no NUL, not `.` or `..`.
/// Names the overlay reserves for its own bookkeeping (`.wh.` prefixes) are refused too, as
/// kernel overlayfs refuses them on an upper that uses `.wh.` whiteouts.
pub fn check_component(name: &OsStr) -> Result<&[u8], Error> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." {
        return Err(Error::Invalid("name is empty, . or .."));
    }
    if bytes.contains(&b'/') || bytes.contains(&0) {
        return Err(Error::Invalid("name contains / or NUL"));
    }
    if bytes.len() > 255 {
        return Err(Error::io(
            "name",
            String::from_utf8_lossy(bytes),
            std::io::Error::from_raw_os_error(libc::ENAMETOOLONG),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_one_component() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(check_component(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        assert!(check_component(OsStr::new(&"x".repeat(256))).is_err());
        assert_eq!(check_component(OsStr::new("a.b")).unwrap(), b"a.b");
        assert_eq!(check_component(OsStr::new("...")).unwrap(), b"...");
    }
}
