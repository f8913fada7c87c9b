//! Writing blobs into the store: they are hashed while they stream in and appear under their
//! digest only if it is the expected one. The write itself is [`crate::durable`]'s: a
//! temporary file, fsynced and renamed into place.

use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::Error;
use crate::digest::Digest;
use crate::durable::TempFile;
use crate::progress::{Progress, ProgressReader};

/// Copy buffer size: large enough that syscalls cost nothing next to sha256.
const CHUNK: usize = 1 << 20;

/// A writer that hashes what passes through it and counts the bytes.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Hashes what is written to `inner`.
    pub(crate) fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The digest and length of everything written, and the inner writer.
    pub(crate) fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest::from_bytes(self.hasher.finalize().into()),
            self.written,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies `reader` to `writer` in large chunks, reporting progress as `what` against `total`
/// (0 if unknown).
pub(crate) fn copy_with_progress(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    what: &str,
    total: u64,
    progress: Option<&Progress<'_>>,
) -> io::Result<u64> {
    let mut reader = ProgressReader::new(reader, what, total, progress);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
    }
    Ok(reader.done())
}

/// Streams `reader` into `dir/<hex>` as a read-only blob, hashing on the way.
///
/// The blob gets its name only if its sha256 equals `expected` (when given); otherwise the
/// temporary copy is removed and [`Error::Mismatch`] names both digests. An existing blob of
/// the same digest is left as it is. Returns the digest and size.
pub(crate) fn ingest(
    dir: &Path,
    reader: &mut dyn Read,
    expected: Option<&Digest>,
    what: &str,
    total: u64,
    progress: Option<&Progress<'_>>,
) -> Result<(Digest, u64), Error> {
    let mut tmp = TempFile::create(dir, 0o444)?;
    let tmp_path = tmp.path().to_owned();
    let mut writer = HashingWriter::new(io::BufWriter::with_capacity(CHUNK, tmp.file()));
    copy_with_progress(reader, &mut writer, what, total, progress)
        .map_err(|e| Error::io("copying", &tmp_path, e))?;
    let (inner, digest, size) = writer.finish();
    inner
        .into_inner()
        .map_err(|e| Error::io("writing", &tmp_path, e.into_error()))?;
    if let Some(expected) = expected {
        if *expected != digest {
            return Err(Error::Mismatch {
                what: what.to_owned(),
                expected: *expected,
                actual: digest,
            });
        }
    }
    let dest = dir.join(digest.hex());
    if dest.is_file() {
        return Ok((digest, size));
    }
    tmp.persist(&dest)?;
    Ok((digest, size))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn ingest_names_the_blob_by_its_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (digest, size) =
            ingest(dir.path(), &mut &b"hello"[..], None, "blob", 5, None).expect("ingest");
        assert_eq!((digest, size), (Digest::of_bytes(b"hello"), 5));
        assert_eq!(
            fs::read(dir.path().join(digest.hex())).expect("read"),
            b"hello"
        );
        // Again, with the expected digest: nothing changes, no temp file is left.
        ingest(
            dir.path(),
            &mut &b"hello"[..],
            Some(&digest),
            "blob",
            5,
            None,
        )
        .expect("again");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn a_mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wrong = Digest::of_bytes(b"other");
        match ingest(
            dir.path(),
            &mut &b"hello"[..],
            Some(&wrong),
            "blob",
            5,
            None,
        ) {
            Err(Error::Mismatch {
                expected, actual, ..
            }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, Digest::of_bytes(b"hello"));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
