//! Byte ranges of input files ([`Extent`]), bounded reads of image metadata, and [`RootDir`]:
//! the part of the rfs root that `open` writes (decompressed layers in `blobs/sha256/`, remembered
//! verifications in `verified/`) together with hashing and progress reports.
//!
//! The verification cache: hashing a 128 MB layer costs about 100 ms, on every mount. After a
//! successful check, [`RootDir::verify`] creates an empty file `verified/<key>`, where the key is
//! the sha256 of the expected digest, the file's path, device, inode, size, mtime and ctime, and
//! the byte range. A later check with the same key skips hashing. Editing, replacing or touching
//! the file changes its mtime or ctime (ctime cannot be set from user space), so the key changes
//! and the content is hashed again. The cache is an optimisation only: failing to write it is
//! logged, never an error.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::compress::MAGIC_LEN;
use super::{Error, LayerBlob, Location, MAX_METADATA_BYTES, OpenOptions, read_up_to};
use crate::digest::Digest;
use crate::progress::STEP;

/// Read size while hashing: large enough that syscalls cost nothing next to sha256.
pub(super) const CHUNK: usize = 1 << 20;

/// A byte range of a file on the host: a whole blob file, or one member's data in a tar archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Extent {
    /// The file (`location.file`) and, for archive members, the member name, for messages.
    pub(super) location: Location,
    /// Where the range starts in the file.
    pub(super) offset: u64,
    /// The range's length.
    pub(super) len: u64,
}

impl Extent {
    /// The whole of the regular file `path`.
    ///
    /// Returns `Ok(None)` if nothing is at `path`.
    pub(super) fn whole_file(path: &Path) -> Result<Option<Extent>, Error> {
        let location = Location::file(path);
        let metadata = match fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Read { location, source }),
        };
        if !metadata.is_file() {
            return Err(Error::NotAFile {
                location,
                problem: "is not a regular file".to_owned(),
            });
        }
        Ok(Some(Extent {
            location,
            offset: 0,
            len: metadata.len(),
        }))
    }

    /// A reader over exactly this range.
    pub(super) fn reader(&self) -> Result<io::Take<File>, Error> {
        let mut file = File::open(&self.location.file).map_err(|source| self.read_error(source))?;
        file.seek(SeekFrom::Start(self.offset))
            .map_err(|source| self.read_error(source))?;
        Ok(file.take(self.len))
    }

    /// The first bytes of the range (fewer if it is shorter), to sniff compression.
    pub(super) fn magic(&self) -> Result<Vec<u8>, Error> {
        let mut magic = vec![0u8; MAGIC_LEN];
        let read =
            read_up_to(self.reader()?, &mut magic).map_err(|source| self.read_error(source))?;
        magic.truncate(read);
        Ok(magic)
    }

    /// The whole range, which must be image metadata: at most [`MAX_METADATA_BYTES`].
    pub(super) fn read_metadata(&self) -> Result<Vec<u8>, Error> {
        if self.len > MAX_METADATA_BYTES {
            return Err(Error::MetadataTooLarge {
                location: self.location.clone(),
                len: self.len,
                limit: MAX_METADATA_BYTES,
            });
        }
        let mut bytes = Vec::new();
        self.reader()?
            .read_to_end(&mut bytes)
            .map_err(|source| self.read_error(source))?;
        if (bytes.len() as u64) < self.len {
            return Err(self.read_error(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(bytes)
    }

    /// A read failure of this range.
    pub(super) fn read_error(&self, source: io::Error) -> Error {
        Error::Read {
            location: self.location.clone(),
            source,
        }
    }
}

/// The name of a remembered verification: see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CacheKey(String);

/// Where `open` writes inside the rfs root, and how it reports progress.
pub(super) struct RootDir<'a> {
    opts: &'a OpenOptions<'a>,
}

impl<'a> RootDir<'a> {
    /// The store for one `open` call.
    pub(super) fn new(opts: &'a OpenOptions<'a>) -> RootDir<'a> {
        RootDir { opts }
    }

    /// The options `open` was called with.
    pub(super) fn options(&self) -> &OpenOptions<'a> {
        self.opts
    }

    /// `root/blobs/sha256`: decompressed layers, named by diff_id.
    pub(super) fn blobs_dir(&self) -> PathBuf {
        self.opts.root.join("blobs").join("sha256")
    }

    /// `root/verified`: one empty file per remembered verification.
    fn verified_dir(&self) -> PathBuf {
        self.opts.root.join("verified")
    }

    /// Reports progress, if the caller asked for it.
    pub(super) fn progress(&self, what: &str, done: u64, total: u64) {
        if let Some(report) = self.opts.progress {
            report(what, done, total);
        }
    }

    /// The cache key for "`extent` has digest `digest`", from the file's current identity;
    /// `None` if the file cannot be inspected (then nothing is cached).
    pub(super) fn cache_key(&self, extent: &Extent, digest: &Digest) -> Option<CacheKey> {
        let metadata = fs::metadata(&extent.location.file).ok()?;
        let mut hasher = Sha256::new();
        hasher.update(b"rfs-verified-v1\0");
        hasher.update(digest.as_bytes());
        hasher.update(extent.location.file.as_os_str().as_bytes());
        hasher.update(b"\0");
        for number in [
            metadata.dev(),
            metadata.ino(),
            metadata.size(),
            metadata.mtime() as u64,
            metadata.mtime_nsec() as u64,
            metadata.ctime() as u64,
            metadata.ctime_nsec() as u64,
            extent.offset,
            extent.len,
        ] {
            hasher.update(number.to_le_bytes());
        }
        Some(CacheKey(Digest::from_bytes(hasher.finalize().into()).hex()))
    }

    /// Whether a verification under `key` was remembered.
    fn is_verified(&self, key: &CacheKey) -> bool {
        self.verified_dir().join(&key.0).is_file()
    }

    /// Remembers a successful verification. Failing to is not an error: the next open hashes.
    pub(super) fn remember(&self, key: &CacheKey) {
        let dir = self.verified_dir();
        let result = fs::create_dir_all(&dir).and_then(|()| File::create(dir.join(&key.0)));
        if let Err(error) = result {
            log::warn!("{}: cannot remember a verification: {error}", dir.display());
        }
    }

    /// The sha256 of `extent`, read in large chunks with progress reports.
    pub(super) fn hash(&self, extent: &Extent, what: &str) -> Result<Digest, Error> {
        let file = File::open(&extent.location.file).map_err(|source| extent.read_error(source))?;
        let label = format!("verifying {what}");
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; CHUNK];
        let mut done = 0u64;
        let mut reported = 0u64;
        self.progress(&label, 0, extent.len);
        while done < extent.len {
            let want = usize::try_from(extent.len - done).map_or(CHUNK, |left| left.min(CHUNK));
            let count = match file.read_at(&mut buffer[..want], extent.offset + done) {
                Ok(0) => {
                    return Err(extent.read_error(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(extent.read_error(source)),
            };
            hasher.update(&buffer[..count]);
            done += count as u64;
            if done - reported >= STEP {
                self.progress(&label, done, extent.len);
                reported = done;
            }
        }
        self.progress(&label, done, extent.len);
        Ok(Digest::from_bytes(hasher.finalize().into()))
    }

    /// Checks that `extent` hashes to `expected`, unless that was already checked for this
    /// unchanged file; remembers a success.
    ///
    /// # Errors
    ///
    /// [`Error::DigestMismatch`] naming `what` and both digests, or a read error.
    pub(super) fn verify(
        &self,
        extent: &Extent,
        expected: &Digest,
        what: &str,
    ) -> Result<(), Error> {
        // Take the key before hashing: a change while hashing then invalidates it.
        let key = self.cache_key(extent, expected);
        if key.as_ref().is_some_and(|key| self.is_verified(key)) {
            log::debug!("{}: {what}: verified earlier", extent.location);
            return Ok(());
        }
        let actual = self.hash(extent, what)?;
        if actual != *expected {
            return Err(Error::DigestMismatch {
                location: extent.location.clone(),
                what: what.to_owned(),
                expected: *expected,
                actual,
            });
        }
        if let Some(key) = key {
            self.remember(&key);
        }
        Ok(())
    }

    /// The decompressed copy of the layer `diff_id`, if an earlier open made one and it is
    /// intact. A copy that no longer hashes to its name is removed (and `None` returned), so the
    /// caller decompresses again.
    pub(super) fn cached_layer(
        &self,
        diff_id: &Digest,
        what: &str,
    ) -> Result<Option<LayerBlob>, Error> {
        let path = self.blobs_dir().join(diff_id.hex());
        let Some(extent) = Extent::whole_file(&path)? else {
            return Ok(None);
        };
        match self.verify(&extent, diff_id, &format!("{what} (stored copy)")) {
            Ok(()) => Ok(Some(LayerBlob {
                file: path,
                offset: 0,
                len: extent.len,
                diff_id: Some(*diff_id),
            })),
            Err(Error::DigestMismatch { actual, .. }) => {
                log::warn!(
                    "{}: stored layer has digest {actual}; removing it and decompressing again",
                    path.display()
                );
                fs::remove_file(&path).map_err(|source| Error::Store { path, source })?;
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    fn extent_of(path: &Path) -> Extent {
        Extent::whole_file(path)
            .expect("stat")
            .expect("file exists")
    }

    #[test]
    fn whole_file_reports_absence_and_rejects_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Extent::whole_file(&dir.path().join("absent")).expect("stat"),
            None
        );
        assert!(matches!(
            Extent::whole_file(dir.path()),
            Err(Error::NotAFile { .. })
        ));
    }

    #[test]
    fn read_metadata_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.json");
        let file = File::create(&path).expect("create");
        file.set_len(MAX_METADATA_BYTES + 1).expect("grow");
        match extent_of(&path).read_metadata() {
            Err(Error::MetadataTooLarge { len, .. }) => assert_eq!(len, MAX_METADATA_BYTES + 1),
            other => panic!("expected MetadataTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn read_metadata_of_a_range_past_the_end_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("short");
        fs::write(&path, b"{}").expect("write");
        let extent = Extent {
            len: 10,
            ..extent_of(&path)
        };
        assert!(matches!(extent.read_metadata(), Err(Error::Read { .. })));
    }

    #[test]
    fn verification_is_remembered_until_the_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        fs::write(&path, b"layer bytes").expect("write");
        let calls = Mutex::new(0u32);
        let count = |_: &str, _: u64, _: u64| *calls.lock().expect("lock") += 1;
        let opts = OpenOptions {
            progress: Some(&count),
            ..OpenOptions::new(dir.path().join("root"))
        };
        let root_dir = RootDir::new(&opts);
        let digest = Digest::of_bytes(b"layer bytes");

        root_dir
            .verify(&extent_of(&path), &digest, "blob")
            .expect("first check hashes");
        let after_first = *calls.lock().expect("lock");
        assert!(after_first > 0, "hashing reports progress");
        root_dir
            .verify(&extent_of(&path), &digest, "blob")
            .expect("second check is cached");
        assert_eq!(
            *calls.lock().expect("lock"),
            after_first,
            "no hashing the second time"
        );

        // Same length, different content: the mtime/ctime change defeats the cache.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.write_all(b"LAYER").expect("write");
        drop(file);
        match root_dir.verify(&extent_of(&path), &digest, "blob") {
            Err(Error::DigestMismatch { expected, .. }) => assert_eq!(expected, digest),
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn a_corrupt_stored_copy_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = OpenOptions::new(dir.path());
        let root_dir = RootDir::new(&opts);
        let diff_id = Digest::of_bytes(b"good");
        fs::create_dir_all(root_dir.blobs_dir()).expect("mkdir");
        let path = root_dir.blobs_dir().join(diff_id.hex());
        fs::write(&path, b"evil").expect("write");
        assert_eq!(
            root_dir
                .cached_layer(&diff_id, "layer 1/1")
                .expect("checked"),
            None
        );
        assert!(!path.exists());

        fs::write(&path, b"good").expect("write");
        let layer = root_dir
            .cached_layer(&diff_id, "layer 1/1")
            .expect("checked")
            .expect("kept");
        assert_eq!(
            (layer.offset, layer.len, layer.diff_id),
            (0, 4, Some(diff_id))
        );
    }

    #[test]
    fn hash_reports_progress_for_a_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data");
        fs::write(&path, b"0123456789").expect("write");
        let seen = Mutex::new(Vec::new());
        let record = |what: &str, done: u64, total: u64| {
            seen.lock()
                .expect("lock")
                .push((what.to_owned(), done, total));
        };
        let opts = OpenOptions {
            progress: Some(&record),
            ..OpenOptions::new(dir.path())
        };
        let extent = Extent {
            offset: 2,
            len: 3,
            ..extent_of(&path)
        };
        let digest = RootDir::new(&opts).hash(&extent, "part").expect("hash");
        assert_eq!(digest, Digest::of_bytes(b"234"));
        let seen = seen.into_inner().expect("lock");
        assert_eq!(seen.last(), Some(&("verifying part".to_owned(), 3, 3)));
    }
}
