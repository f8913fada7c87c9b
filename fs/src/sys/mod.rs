//! Safe wrappers for the syscalls the overlay needs exactly: `openat2` confined beneath a root,
//! `*at` calls relative to a directory fd, `renameat2`, whiteout `mknodat`, xattrs on any file
//! type, `copy_file_range` and `pread`/`pwrite`.
//!
//! This is the only module of `rfs-fs` allowed to use `unsafe`. Every wrapper takes borrowed
//! fds and C strings, returns owned fds, and converts `-1` into `io::Error::last_os_error()`
//! through [`check`]. Paths given to these functions are relative to the fd they come with;
//! none of them follows a symlink on the host side.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

pub mod uring;

/// `stat` as the kernel fills it.
pub type Stat = libc::stat;

/// Turns a libc return value into a `Result`, reading `errno` on `-1`.
fn check<T: Copy + PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Converts bytes into a C string; a NUL inside is `EINVAL`.
pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The C string for a relative path; the empty path is `.`.
pub fn rel_cstr(path: &[u8]) -> io::Result<CString> {
    if path.is_empty() {
        Ok(c".".to_owned())
    } else {
        cstr(path)
    }
}

/// `struct open_how` of `openat2(2)` (libc's is non-exhaustive, so it cannot be built).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Safe wrapper for `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS`: opens `path` below `dir` without following any symlink, not even
/// in the middle of the path, and without ever leaving `dir`.
///
/// # Errors
/// `ELOOP` when a component is a symlink (unless `O_PATH | O_NOFOLLOW` asks for the link
/// itself), `EXDEV` when the path would leave `dir`, and every error of `openat(2)`.
pub fn openat_beneath(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    // A path the caller gave relative to a directory deep inside the mount can be longer from
    // the mount's root than PATH_MAX, which the kernel refuses in one call (ENAMETOOLONG)
    // although the caller's own call was fine: walk it in pieces instead, each resolved with
    // the same rules below the directory the previous piece reached.
    let bytes = path.to_bytes();
    if bytes.len() >= libc::PATH_MAX as usize {
        let (head, tail) = split_long_path(bytes)?;
        let head = CString::new(head).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let tail = CString::new(tail).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mid = openat2_beneath(dir, &head, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        return openat_beneath(mid.as_fd(), &tail, flags, mode);
    }
    openat2_beneath(dir, path, flags, mode)
}

/// Splits a relative path of PATH_MAX bytes or more at a `/` into a first part shorter than
/// PATH_MAX and the rest.
///
/// # Errors
/// `ENAMETOOLONG` if no `/` gives such a first part (a single component is at most 255
/// bytes, so only a malformed path has none).
fn split_long_path(path: &[u8]) -> io::Result<(&[u8], &[u8])> {
    let limit = libc::PATH_MAX as usize - 1;
    let cut = path[..limit]
        .iter()
        .rposition(|&b| b == b'/')
        .filter(|&i| i > 0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
    Ok((&path[..cut], &path[cut + 1..]))
}

/// One `openat2(2)` call of [`openat_beneath`].
fn openat2_beneath(dir: BorrowedFd<'_>, path: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
            u64::from(mode)
        } else {
            0
        },
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: `path` is a live NUL-terminated string, `how` is a properly initialised
        // `open_how` whose exact size we pass; the kernel only reads both.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        match check(ret) {
            // SAFETY: the kernel returned a new fd that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
            // openat2 returns EAGAIN when a concurrent rename raced the lookup.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Safe wrapper for `openat(2)` of a single component with `O_NOFOLLOW`.
///
/// # Errors
/// Every error of `openat(2)`; `ELOOP` if `name` is a symlink and `O_PATH` is not given.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a live C string and `dir` a borrowed open fd for the whole call.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: a fresh fd from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Safe wrapper for `fstatat(2)` with `AT_SYMLINK_NOFOLLOW` (and `AT_EMPTY_PATH` for `""`).
///
/// # Errors
/// Every error of `fstatat(2)`.
pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    let mut st = MaybeUninit::<Stat>::uninit();
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: `st` points to writable memory of the size of `struct stat`; `name` is live.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat returned 0, so it filled the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// `fstatat` that maps `ENOENT`/`ENOTDIR` to `Ok(None)`: the answer "not here" is not an error.
///
/// # Errors
/// Every other error of `fstatat(2)`.
pub fn fstatat_opt(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Stat>> {
    match fstatat(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Safe wrapper for `mkdirat(2)`.
///
/// # Errors
/// Every error of `mkdirat(2)`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: live C string and borrowed fd.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// Safe wrapper for `mknodat(2)`.
///
/// # Errors
/// Every error of `mknodat(2)`; `EPERM` for devices without `CAP_MKNOD`.
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: live C string and borrowed fd.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

/// Safe wrapper for `symlinkat(2)`.
///
/// # Errors
/// Every error of `symlinkat(2)`.
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: live C strings and borrowed fd.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// Safe wrapper for `linkat(2)` without following symlinks.
///
/// # Errors
/// Every error of `linkat(2)`.
pub fn linkat(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
) -> io::Result<()> {
    // SAFETY: live C strings and borrowed fds.
    check(unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            oldname.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// Safe wrapper for `unlinkat(2)`; `dir_flag` removes a directory (`AT_REMOVEDIR`).
///
/// # Errors
/// Every error of `unlinkat(2)`.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, remove_dir: bool) -> io::Result<()> {
    let flags = if remove_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: live C string and borrowed fd.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// Safe wrapper for `renameat2(2)`; `flags` is `RENAME_NOREPLACE`, `RENAME_EXCHANGE` or 0.
///
/// # Errors
/// Every error of `renameat2(2)`.
pub fn renameat2(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: live C strings and borrowed fds.
    check(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            oldname.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// Safe wrapper for `readlinkat(2)`.
///
/// # Errors
/// Every error of `readlinkat(2)`.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for `buf.len()` bytes; live C string and borrowed fd.
    let n = check(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n as usize);
    Ok(buf)
}

/// Safe wrapper for `fchownat(2)` with `AT_SYMLINK_NOFOLLOW` (`AT_EMPTY_PATH` for `""`).
/// `None` leaves an id unchanged.
///
/// # Errors
/// Every error of `fchownat(2)`.
pub fn fchownat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    uid: Option<u32>,
    gid: Option<u32>,
) -> io::Result<()> {
    let mut flags = libc::AT_SYMLINK_NOFOLLOW;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: live C string and borrowed fd; -1 (u32::MAX) means "unchanged".
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid.unwrap_or(u32::MAX),
            gid.unwrap_or(u32::MAX),
            flags,
        )
    })
    .map(drop)
}

/// Safe wrapper for `fchmodat(2)` of a non-symlink (Linux cannot chmod symlinks).
///
/// # Errors
/// Every error of `fchmodat(2)`.
pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: live C string and borrowed fd.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

/// A time to set with [`utimensat`].
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    /// Leave unchanged.
    Omit,
    /// The current time.
    Now,
    /// Seconds and nanoseconds since the epoch.
    At(i64, u32),
}

impl SetTime {
    fn timespec(self) -> libc::timespec {
        match self {
            SetTime::Omit => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            SetTime::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            SetTime::At(s, ns) => libc::timespec {
                tv_sec: s,
                tv_nsec: i64::from(ns),
            },
        }
    }
}

/// Safe wrapper for `utimensat(2)` with `AT_SYMLINK_NOFOLLOW`.
///
/// # Errors
/// Every error of `utimensat(2)`.
pub fn utimensat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: SetTime,
    mtime: SetTime,
) -> io::Result<()> {
    let times = [atime.timespec(), mtime.timespec()];
    let mut flags = libc::AT_SYMLINK_NOFOLLOW;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: `times` is an array of two initialised timespecs; live C string, borrowed fd.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), flags) })
        .map(drop)
}

/// The `/proc/self/fd/N` path of `fd`. Used for xattrs of `O_PATH` fds (symlinks, devices):
/// the magic link reaches the inode itself, whatever its type.
fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    // A decimal fd never contains NUL.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Reads the xattr `name` of the inode `fd` refers to (any file type, `O_PATH` fds too).
/// `Ok(None)` when the attribute does not exist or the filesystem has no xattrs.
///
/// # Errors
/// Every other error of `getxattr(2)`.
pub fn get_xattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let path = proc_fd_path(fd);
    read_xattr(|buf| {
        // SAFETY: `buf` is writable for `buf.len()` bytes; both C strings are live.
        unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })
}

/// Calls a `getxattr(2)`-like `call` with a buffer grown until the value fits (at most
/// 16 MiB); `Ok(None)` for `ENODATA` and `ENOTSUP`.
fn read_xattr(call: impl Fn(&mut [u8]) -> libc::ssize_t) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match check(call(&mut buf)) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(Some(buf));
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::ENODATA | libc::ENOTSUP) => return Ok(None),
                Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 16, 0),
                _ => return Err(e),
            },
        }
    }
}

/// Reads the xattr `xattr` of the entry `name` of directory `dir` without following it if it
/// is a symlink (`lgetxattr` on `/proc/self/fd/<dir>/<name>`: one call, no fd opened).
/// `name` is one path component. `Ok(None)` when the attribute does not exist or the
/// filesystem has no xattrs.
///
/// # Errors
/// `EINVAL` for a `name` with a `/` or that is `.`/`..`; every other error of
/// `lgetxattr(2)`.
pub fn get_xattr_at(dir: BorrowedFd<'_>, name: &CStr, xattr: &CStr) -> io::Result<Option<Vec<u8>>> {
    let n = name.to_bytes();
    if n.is_empty() || n.contains(&b'/') || n == b"." || n == b".." {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut path = proc_fd_path(dir).into_bytes();
    path.push(b'/');
    path.extend_from_slice(n);
    let path = cstr(&path)?;
    read_xattr(|buf| {
        // SAFETY: `buf` is writable for `buf.len()` bytes; both C strings are live.
        unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                xattr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })
}

/// Sets the xattr `name` on the inode `fd` refers to; `flags` is `XATTR_CREATE`,
/// `XATTR_REPLACE` or 0.
///
/// # Errors
/// Every error of `setxattr(2)`.
pub fn set_xattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    let path = proc_fd_path(fd);
    // SAFETY: `value` is readable for its length; both C strings are live.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// Removes the xattr `name` from the inode `fd` refers to.
///
/// # Errors
/// Every error of `removexattr(2)` (`ENODATA` when absent).
pub fn remove_xattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let path = proc_fd_path(fd);
    // SAFETY: both C strings are live.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

/// Lists the xattr names of the inode `fd` refers to.
///
/// # Errors
/// Every error of `listxattr(2)` except `ENOTSUP` (an empty list).
pub fn list_xattr(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let path = proc_fd_path(fd);
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `buf` is writable for `buf.len()` bytes; the C string is live.
        let ret = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check(ret) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(buf
                    .split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOTSUP) => return Ok(Vec::new()),
                Some(libc::ERANGE) if buf.len() < 1 << 22 => buf.resize(buf.len() * 16, 0),
                _ => return Err(e),
            },
        }
    }
}

/// Safe wrapper for `pread(2)`, retried until `buf` is full or end of file.
///
/// # Errors
/// Every error of `pread(2)` except `EINTR`.
pub fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], mut offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is writable for `rest.len()` bytes; the fd is borrowed for the call.
        let ret = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                rest.as_mut_ptr().cast(),
                rest.len(),
                offset as libc::off_t,
            )
        };
        match check(ret) {
            Ok(0) => break,
            Ok(n) => {
                done += n as usize;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Safe wrapper for `pwrite(2)` (one call; the caller handles short writes).
///
/// # Errors
/// Every error of `pwrite(2)`.
pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<usize> {
    // SAFETY: `buf` is readable for its length; the fd is borrowed for the call.
    let ret = unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    };
    check(ret).map(|n| n as usize)
}

/// Safe wrapper for `copy_file_range(2)` with explicit offsets. Returns the bytes copied
/// (0 at end of input).
///
/// # Errors
/// Every error of `copy_file_range(2)`; `EXDEV`/`EOPNOTSUPP`/`EINVAL` mean "copy by hand".
pub fn copy_file_range(
    input: BorrowedFd<'_>,
    in_off: u64,
    output: BorrowedFd<'_>,
    out_off: u64,
    len: usize,
) -> io::Result<usize> {
    let mut in_off = in_off as libc::loff_t;
    let mut out_off = out_off as libc::loff_t;
    // SAFETY: the offsets are live locals the kernel updates; the fds are borrowed.
    let ret = unsafe {
        libc::copy_file_range(
            input.as_raw_fd(),
            &mut in_off,
            output.as_raw_fd(),
            &mut out_off,
            len,
            0,
        )
    };
    check(ret).map(|n| n as usize)
}

/// Safe wrapper for `fstatvfs(2)`.
///
/// # Errors
/// Every error of `fstatvfs(2)`.
pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `st` is writable memory of the right size; the fd is borrowed.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs returned 0 and filled the struct.
    Ok(unsafe { st.assume_init() })
}

/// Sets the process umask; the daemon runs with 0 so the modes the kernel sends are exact.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail and touches no memory.
    unsafe { libc::umask(mask) }
}

/// Safe wrapper for `ftruncate(2)`.
///
/// # Errors
/// Every error of `ftruncate(2)`.
pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    // SAFETY: the fd is borrowed for the call.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) }).map(drop)
}

/// Starts writeback of `len` bytes at `offset` of `fd` without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`).
///
/// # Errors
/// The kernel's error.
pub fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: sync_file_range only reads its integer arguments.
    let r = unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Safe wrapper for `fsync(2)` / `fdatasync(2)`.
///
/// # Errors
/// Every error of `fsync(2)`.
pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    // SAFETY: the fd is borrowed for the call.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

/// Safe wrapper for `fallocate(2)`.
///
/// # Errors
/// Every error of `fallocate(2)`.
pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: the fd is borrowed for the call.
    check(unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
    .map(drop)
}

/// Safe wrapper for `lseek(2)` (used for `SEEK_DATA`/`SEEK_HOLE`).
///
/// # Errors
/// Every error of `lseek(2)`; `ENXIO` past the last data.
pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: the fd is borrowed for the call.
    check(unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) })
}

/// Reads all entries of the directory `fd` (opened with `O_RDONLY | O_DIRECTORY`), without
/// `.` and `..`: (name, d_type, d_ino).
///
/// # Errors
/// Every error of `getdents64(2)`.
pub fn read_dir(fd: OwnedFd) -> io::Result<Vec<(Vec<u8>, u8, u64)>> {
    let raw = fd.as_raw_fd();
    // SAFETY: `raw` is a valid directory fd we own; fdopendir takes over its ownership, so it
    // is released with closedir below and must not be closed by `fd`'s Drop.
    let dir = unsafe { libc::fdopendir(raw) };
    if dir.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(fd);
    let mut out = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; clearing it tells end-of-stream from failure.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dir` is a live DIR* owned by this function.
        let ent = unsafe { libc::readdir64(dir) };
        if ent.is_null() {
            let err = io::Error::last_os_error();
            break if err.raw_os_error() == Some(0) {
                Ok(())
            } else {
                Err(err)
            };
        }
        // SAFETY: readdir64 returned a valid entry whose d_name is NUL-terminated and stays
        // valid until the next readdir64 call on `dir`.
        let (name, d_type, d_ino) = unsafe {
            let e = &*ent;
            (
                CStr::from_ptr(e.d_name.as_ptr()).to_bytes().to_vec(),
                e.d_type,
                e.d_ino,
            )
        };
        if name == b"." || name == b".." {
            continue;
        }
        out.push((name, d_type, d_ino));
    };
    // SAFETY: `dir` is live and closed exactly once.
    unsafe { libc::closedir(dir) };
    result.map(|()| out)
}

/// The effective uid of this process.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Trims the heap: glibc keeps freed memory mapped, and building a lower tree leaves tens
/// of megabytes of it behind, which a long-lived daemon would carry as RSS.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own heap; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Tunes glibc malloc for a long-lived daemon; call before spawning threads.
///
/// - At most `arenas` arenas: each thread otherwise gets its own, and memory freed in one is
///   never reused by another.
/// - A fixed 1 MiB mmap threshold. glibc raises it dynamically after big blocks are freed
///   (building a lower tree frees several), and then serves the FUSE threads' 16 MiB
///   request buffers from recycled heap, which `calloc` must zero: 16 MiB of RSS each for
///   buffers that mostly hold a few hundred bytes. Mapped fresh they stay untouched.
pub fn tune_malloc(arenas: i32) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets glibc tunables.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = arenas;
}

/// Whether this process is root in the initial user namespace (what FUSE passthrough's
/// backing files need: `CAP_SYS_ADMIN` there).
pub fn is_initial_root() -> bool {
    geteuid() == 0
        && std::fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

/// Makes an `OsStr` from bytes (for error messages and paths).
pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn openat_beneath_walks_paths_longer_than_path_max() {
        let dir = tempfile::tempdir().unwrap();
        let component = "d".repeat(200);
        let mut rel = std::path::PathBuf::new();
        while rel.as_os_str().len() < 4500 {
            rel.push(&component);
        }
        // The host's path calls have the same limit: make it one level at a time.
        let mut at = std::fs::File::open(dir.path()).unwrap();
        for c in rel.components() {
            let name = CString::new(c.as_os_str().as_encoded_bytes()).unwrap();
            mkdirat(at.as_fd(), &name, 0o755).unwrap();
            at = std::fs::File::from(openat(at.as_fd(), &name, libc::O_RDONLY, 0).unwrap());
        }
        let root = std::fs::File::open(dir.path()).unwrap();
        let c = CString::new(rel.as_os_str().as_encoded_bytes()).unwrap();
        assert!(c.to_bytes().len() > libc::PATH_MAX as usize);
        let fd = openat_beneath(root.as_fd(), &c, libc::O_PATH | libc::O_DIRECTORY, 0).unwrap();
        assert!(fstatat(fd.as_fd(), c"").unwrap().st_mode & libc::S_IFMT == libc::S_IFDIR);
        // The pieces keep the rules: a long path through a symlink is still refused.
        let mut linked = rel.clone();
        linked.pop();
        std::os::unix::fs::symlink("/", dir.path().join("s")).ok();
        let mut through = std::path::PathBuf::from("s");
        through.push(&linked);
        let c = CString::new(through.as_os_str().as_encoded_bytes()).unwrap();
        let e = openat_beneath(root.as_fd(), &c, libc::O_PATH, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn openat_beneath_refuses_symlinks_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("d/up")).unwrap();
        let root = std::fs::File::open(dir.path()).unwrap();
        let fd = root.as_fd();
        assert!(openat_beneath(fd, c"d", libc::O_PATH, 0).is_ok());
        let e = openat_beneath(fd, c"d/up/etc", libc::O_PATH, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let e = openat_beneath(fd, c"../x", libc::O_PATH, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
    }

    #[test]
    fn xattrs_round_trip_through_o_path_fds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let root = std::fs::File::open(dir.path()).unwrap();
        let f = openat_beneath(root.as_fd(), c"f", libc::O_PATH, 0).unwrap();
        set_xattr(f.as_fd(), c"user.t", b"v", 0).unwrap();
        assert_eq!(get_xattr(f.as_fd(), c"user.t").unwrap().unwrap(), b"v");
        assert!(list_xattr(f.as_fd()).unwrap().contains(&b"user.t".to_vec()));
        remove_xattr(f.as_fd(), c"user.t").unwrap();
        assert_eq!(get_xattr(f.as_fd(), c"user.t").unwrap(), None);
    }
}
