//! The crate's error type, and the one place that decides which errno a failure becomes.

use std::io;

use crate::{image, tar_index};

/// Every failure of `rfs-fs`. Semantic outcomes of filesystem operations (`NotFound`,
/// `NotEmpty`, ...) are variants of their own; syscall failures keep the kernel's errno in
/// [`Error::Io`] so it reaches the FUSE reply intact.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A syscall on a host path failed.
    #[error("{op} {path}")]
    Io {
        /// The operation, e.g. `"openat upper"`.
        op: &'static str,
        /// The path involved, relative to the layer or upper root.
        path: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// No such entry in the merged view.
    #[error("no such file or directory")]
    NotFound,
    /// The name exists already.
    #[error("file exists")]
    Exists,
    /// A directory was expected.
    #[error("not a directory")]
    NotDir,
    /// A non-directory was expected.
    #[error("is a directory")]
    IsDir,
    /// rmdir or rename onto a directory that is not empty in the merged view.
    #[error("directory not empty")]
    NotEmpty,
    /// The mount has no upper layer.
    #[error("read-only file system")]
    ReadOnly,
    /// An argument the filesystem cannot accept (bad name, bad flags).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// The attribute does not exist.
    #[error("no such attribute")]
    NoAttr,
    /// The caller's buffer is too small.
    #[error("result too large for the buffer")]
    Range,
    /// Not permitted (e.g. writing a private overlay xattr).
    #[error("operation not permitted")]
    NotPermitted,
    /// The operation is not supported here.
    #[error("operation not supported")]
    Unsupported,
    /// A stale file or directory handle.
    #[error("bad file handle")]
    BadHandle,
    /// A layer tar could not be indexed.
    #[error("indexing layer {layer}")]
    TarIndex {
        /// The layer file (and offset inside it, if any).
        layer: String,
        /// What went wrong.
        #[source]
        source: tar_index::Error,
    },
    /// A lower layer is malformed in a way only visible when merging (e.g. a whiteout on `/`).
    #[error("layer {layer}: {reason}")]
    BadLayer {
        /// The layer.
        layer: String,
        /// The problem.
        reason: String,
    },
    /// An image source could not be opened.
    #[error(transparent)]
    Image(#[from] image::Error),
}

impl Error {
    /// Wraps a syscall failure with the operation and path it concerns.
    pub fn io(op: &'static str, path: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The errno a FUSE reply carries for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::NotFound => libc::ENOENT,
            Error::Exists => libc::EEXIST,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::ReadOnly => libc::EROFS,
            Error::Invalid(_) => libc::EINVAL,
            Error::NoAttr => libc::ENODATA,
            Error::Range => libc::ERANGE,
            Error::NotPermitted => libc::EPERM,
            Error::Unsupported => libc::EOPNOTSUPP,
            Error::BadHandle => libc::EBADF,
            Error::TarIndex { .. } | Error::BadLayer { .. } | Error::Image(_) => libc::EIO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_the_kernel_errno() {
        let e = Error::io("open", "a/b", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.errno(), libc::ENOSPC);
        let e = Error::io("open", "a/b", io::Error::other("no errno"));
        assert_eq!(e.errno(), libc::EIO);
    }

    #[test]
    fn semantic_errors_map_to_their_errno() {
        let cases = [
            (Error::NotFound, libc::ENOENT),
            (Error::Exists, libc::EEXIST),
            (Error::NotDir, libc::ENOTDIR),
            (Error::IsDir, libc::EISDIR),
            (Error::NotEmpty, libc::ENOTEMPTY),
            (Error::ReadOnly, libc::EROFS),
            (Error::Invalid("x"), libc::EINVAL),
            (Error::NoAttr, libc::ENODATA),
            (Error::Range, libc::ERANGE),
            (Error::NotPermitted, libc::EPERM),
            (Error::Unsupported, libc::EOPNOTSUPP),
            (Error::BadHandle, libc::EBADF),
        ];
        for (e, errno) in cases {
            assert_eq!(e.errno(), errno, "{e}");
        }
    }
}
