//! Writing into the store: blobs that are hashed while they stream in and appear under their
//! digest only if it is the expected one, and small files replaced atomically.
//!
//! Every write goes to a uniquely named temporary file in the destination directory
//! (`.tmp-<pid>-<n>`), is fsynced, and is renamed over its final name; the directory is then
//! fsynced so the rename survives a crash. A writer that fails or is killed leaves at most a
//! temporary file, which `rfs prune` removes; readers never see a partial blob. Two writers of
//! the same blob each write their own temporary file, and the second rename replaces identical
//! content.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use super::Error;
use crate::digest::Digest;

/// The prefix of temporary files; anything so named is garbage once no writer runs.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// Copy buffer size: large enough that syscalls cost nothing next to sha256.
const CHUNK: usize = 1 << 20;

/// How often (in bytes) a long copy reports progress.
const PROGRESS_STEP: u64 = 8 << 20;

pub use crate::image::Progress;

/// A temporary file in the store that is removed on drop unless persisted.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    /// A new, empty temporary file in `dir` (created if missing), with mode `mode`.
    pub(crate) fn create(dir: &Path, mode: u32) -> Result<TempFile, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| Error::io("creating", &path, e))?;
        Ok(TempFile {
            path,
            file,
            persisted: false,
        })
    }

    /// Where the temporary file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file.
    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Gives the file the name `dest` atomically, without making it durable: for runtime
    /// state (leases) that is meaningless after a crash anyway.
    pub(crate) fn rename_into(mut self, dest: &Path) -> Result<(), Error> {
        fs::rename(&self.path, dest).map_err(|e| Error::io("renaming into place", dest, e))?;
        self.persisted = true;
        Ok(())
    }

    /// Makes the content durable and gives it the name `dest` atomically (replacing what is
    /// there), then makes the rename durable.
    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), Error> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("syncing", &self.path, e))?;
        fs::rename(&self.path, dest).map_err(|e| Error::io("renaming into place", dest, e))?;
        self.persisted = true;
        sync_dir(dest)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    log::warn!("{}: cannot remove: {e}", self.path.display());
                }
            }
        }
    }
}

/// Fsyncs the directory holding `path`, so a rename or unlink in it is durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), Error> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing", dir, e))
}

/// Replaces `path` with `bytes` atomically (temp file, fsync, rename, fsync of the directory).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = TempFile::create(dir, mode)?;
    tmp.file()
        .write_all(bytes)
        .map_err(|e| Error::io("writing", path, e))?;
    tmp.persist(path)
}

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
    Ok(reader.done)
}

/// A reader that reports how far it got as `what`: at the start, every few MiB, and at end
/// of file (then with `done` as the total, for a stream of unknown size). A seek moves
/// `done` to the new position, so a reader that skips data with seeks still reports the
/// part of the file it has passed.
pub(crate) struct ProgressReader<'a, R> {
    inner: R,
    done: u64,
    reported: u64,
    total: u64,
    what: &'a str,
    progress: Option<&'a Progress<'a>>,
}

impl<'a, R> ProgressReader<'a, R> {
    /// Wraps `inner`, which holds `total` bytes (0 if unknown), and reports its start.
    pub(crate) fn new(
        inner: R,
        what: &'a str,
        total: u64,
        progress: Option<&'a Progress<'a>>,
    ) -> Self {
        if let Some(p) = progress {
            p(what, 0, total);
        }
        ProgressReader {
            inner,
            done: 0,
            reported: 0,
            total,
            what,
            progress,
        }
    }

    fn advanced(&mut self, at_end: bool) {
        let Some(p) = self.progress else {
            return;
        };
        if at_end {
            p(self.what, self.done, self.total.max(self.done));
            self.reported = self.done;
        } else if self.done.abs_diff(self.reported) >= PROGRESS_STEP {
            // A stream that outgrows its announced size has no known total any more.
            let total = if self.done > self.total {
                0
            } else {
                self.total
            };
            p(self.what, self.done, total);
            self.reported = self.done;
        }
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        self.advanced(n == 0 && !buf.is_empty());
        Ok(n)
    }
}

impl<R: Seek> Seek for ProgressReader<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let at = self.inner.seek(pos)?;
        self.done = at;
        self.advanced(false);
        Ok(at)
    }
}

/// A writer that reports the bytes written so far as `what`, a step of unknown size, every
/// few MiB; [`ProgressWriter::finish`] reports its end.
pub(crate) struct ProgressWriter<'a, W> {
    inner: W,
    done: u64,
    reported: u64,
    what: &'a str,
    progress: Option<&'a Progress<'a>>,
}

impl<'a, W> ProgressWriter<'a, W> {
    /// Wraps `inner` and reports the start.
    pub(crate) fn new(inner: W, what: &'a str, progress: Option<&'a Progress<'a>>) -> Self {
        if let Some(p) = progress {
            p(what, 0, 0);
        }
        ProgressWriter {
            inner,
            done: 0,
            reported: 0,
            what,
            progress,
        }
    }

    /// Reports the end (all `done` bytes of `done`) and returns the inner writer.
    pub(crate) fn finish(self) -> W {
        if let Some(p) = self.progress {
            p(self.what, self.done, self.done);
        }
        self.inner
    }
}

impl<W: Write> Write for ProgressWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= PROGRESS_STEP {
            if let Some(p) = self.progress {
                p(self.what, self.done, 0);
            }
            self.reported = self.done;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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

    #[test]
    fn a_progress_reader_reports_start_steps_seeks_and_end() {
        let log = std::sync::Mutex::new(Vec::<(String, u64, u64)>::new());
        let report = |w: &str, d: u64, t: u64| log.lock().expect("log").push((w.to_owned(), d, t));
        let data = vec![0u8; 20 << 20];
        // Known size: start, every 8 MiB, end.
        let mut reader =
            ProgressReader::new(io::Cursor::new(&data), "copy", 20 << 20, Some(&report));
        io::copy(&mut reader, &mut io::sink()).expect("copy");
        let got = log.lock().expect("log").clone();
        assert_eq!(got.first(), Some(&("copy".into(), 0, 20 << 20)));
        assert_eq!(got.last(), Some(&("copy".into(), 20 << 20, 20 << 20)));
        assert!(got.contains(&("copy".into(), 8 << 20, 20 << 20)), "{got:?}");
        // A seek past data counts as passed; a stream of unknown size ends at its length.
        log.lock().expect("log").clear();
        let mut reader = ProgressReader::new(io::Cursor::new(&data), "skim", 0, Some(&report));
        reader.seek(SeekFrom::Start(16 << 20)).expect("seek");
        io::copy(&mut reader, &mut io::sink()).expect("copy");
        let got = log.lock().expect("log").clone();
        assert_eq!(
            got,
            [
                ("skim".into(), 0, 0),
                ("skim".into(), 16 << 20, 0),
                ("skim".into(), 20 << 20, 20 << 20)
            ]
        );
    }

    #[test]
    fn a_progress_writer_reports_an_unknown_size_until_it_finishes() {
        let log = std::sync::Mutex::new(Vec::<(String, u64, u64)>::new());
        let report = |w: &str, d: u64, t: u64| log.lock().expect("log").push((w.to_owned(), d, t));
        let mut writer = ProgressWriter::new(Vec::new(), "layer", Some(&report));
        writer.write_all(&vec![1u8; 9 << 20]).expect("write");
        assert_eq!(writer.finish().len(), 9 << 20);
        let got = log.lock().expect("log").clone();
        assert_eq!(
            got,
            [
                ("layer".into(), 0, 0),
                ("layer".into(), 9 << 20, 0),
                ("layer".into(), 9 << 20, 9 << 20)
            ]
        );
    }

    #[test]
    fn write_atomic_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("index.json");
        write_atomic(&p, b"one", 0o644).expect("write");
        write_atomic(&p, b"two", 0o644).expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }
}
