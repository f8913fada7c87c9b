//! Compressed layers: recognising the format from magic bytes ([`Compression::sniff`]) and
//! decompressing a layer once into `<root>/blobs/sha256/<diff_id hex>` ([`RootDir::decompress`]).
//! `rfs import` streams a compressed rootfs tar through the same sniffing and [`Decoder`].
//!
//! The format is taken from the bytes, never from the media type alone: registries and tools do
//! mislabel blobs (an `application/vnd.oci.image.layer.v1.tar+gzip` that is plain tar happens),
//! and the bytes cannot lie about what the decoder will see.
//!
//! Decompression streams: the compressed bytes are hashed on their way into the decoder (the
//! descriptor digest) and the uncompressed bytes on their way out (the diff_id), so the blob is
//! read once. The output goes to a temporary file in the destination directory, which is fsynced
//! and then renamed over the final name only if both digests match; on any failure, including a
//! panic, the temporary file is removed. Two opens racing on the same layer each write their own
//! temporary file and the second rename replaces identical content.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};

use super::blob::{CHUNK, Extent, RootDir};
use super::{Error, LayerBlob};
use crate::digest::{Digest, HashingReader};
use crate::durable::TempFile;
use crate::progress::STEP;

/// How many leading bytes [`Compression::sniff`] looks at.
pub(crate) const MAGIC_LEN: usize = 6;

/// What a blob's first bytes say about its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Not a known compression magic: taken as an uncompressed tar (the tar reader checks it).
    None,
    /// gzip (RFC 1952), possibly several members, as `pigz` writes.
    Gzip,
    /// zstd (RFC 8878), possibly several frames.
    Zstd,
    /// A compression rfs recognises but does not decode.
    Unsupported(&'static str),
}

impl Compression {
    /// Classifies a blob by its first bytes (at least [`MAGIC_LEN`] of them when available).
    pub(crate) fn sniff(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Unsupported("xz")
        } else if magic.starts_with(b"BZh") {
            Compression::Unsupported("bzip2")
        } else {
            Compression::None
        }
    }

    /// The format's name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Unsupported(name) => name,
        }
    }
}

/// A streaming decoder over a buffered source, of whichever supported format.
pub(crate) enum Decoder<R: BufRead> {
    Gzip(flate2::bufread::MultiGzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Decoder<R> {
    /// A decoder for `compression`, which must be gzip or zstd.
    pub(crate) fn new(compression: Compression, source: R) -> io::Result<Decoder<R>> {
        match compression {
            Compression::Gzip => Ok(Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(source))),
            Compression::Zstd => Ok(Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(
                source,
            )?)),
            Compression::None | Compression::Unsupported(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no decoder for {}", compression.name()),
            )),
        }
    }

    /// The compressed source.
    fn get_ref(&self) -> &R {
        match self {
            Decoder::Gzip(decoder) => decoder.get_ref(),
            Decoder::Zstd(decoder) => decoder.get_ref(),
        }
    }

    /// Gives the compressed source back (bytes it buffered but did not decode are lost).
    pub(crate) fn into_inner(self) -> R {
        match self {
            Decoder::Gzip(decoder) => decoder.into_inner(),
            Decoder::Zstd(decoder) => decoder.finish(),
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Gzip(decoder) => decoder.read(buf),
            Decoder::Zstd(decoder) => decoder.read(buf),
        }
    }
}

/// The compressed side of the pipeline: the blob's bytes, hashed as the decoder pulls them.
type CompressedSource = BufReader<HashingReader<io::Take<File>>>;

impl RootDir<'_> {
    /// Decompresses the layer at `extent` into `blobs/sha256/<diff_id hex>` and returns it.
    ///
    /// The compressed bytes must hash to `blob_digest` (when the format has descriptors) and the
    /// decompressed ones to `diff_id`; otherwise nothing is left behind.
    ///
    /// # Errors
    ///
    /// [`Error::DigestMismatch`] for either digest (a corrupt stream whose compressed digest is
    /// also wrong reports the digest, the root cause), [`Error::Decompress`] for a corrupt stream
    /// with the right digest (or no descriptor), read errors, and [`Error::Store`] when the root
    /// cannot be written.
    pub(super) fn decompress(
        &self,
        extent: &Extent,
        compression: Compression,
        blob_digest: Option<&Digest>,
        diff_id: &Digest,
        what: &str,
    ) -> Result<LayerBlob, Error> {
        let dir = self.blobs_dir();
        fs::create_dir_all(&dir).map_err(|source| Error::Store {
            path: dir.clone(),
            source,
        })?;
        let destination = dir.join(diff_id.hex());
        let blob_key = blob_digest.and_then(|digest| self.cache_key(extent, digest));
        // Mode 0444: layers are immutable; nothing should open the stored copy for writing.
        let mut temp = TempFile::create(&dir, 0o444)?;

        let source: CompressedSource =
            BufReader::with_capacity(CHUNK, HashingReader::new(extent.reader()?));
        let decoder = Decoder::new(compression, source).map_err(|source| Error::Decompress {
            location: extent.location.clone(),
            what: what.to_owned(),
            source,
        })?;
        let mut output = HashingReader::new(decoder);
        if let Err(failure) = self.copy_decompressed(&mut output, &mut temp, extent.len, what) {
            return Err(match failure {
                CopyFailure::Write(error) => error,
                CopyFailure::Decode(source) => {
                    // A corrupt stream: if the blob does not match its descriptor either, that
                    // is the root cause and the more useful message.
                    let (decoder, _, _) = output.into_parts();
                    let (compressed_digest, _) = finish_source(decoder, extent)?;
                    check_blob_digest(extent, blob_digest, compressed_digest, what)?;
                    Error::Decompress {
                        location: extent.location.clone(),
                        what: what.to_owned(),
                        source,
                    }
                }
            });
        }
        let (decoder, uncompressed_digest, uncompressed_len) = output.into_parts();
        let (compressed_digest, _) = finish_source(decoder, extent)?;
        check_blob_digest(extent, blob_digest, compressed_digest, what)?;
        if *diff_id != uncompressed_digest {
            return Err(Error::DigestMismatch {
                location: extent.location.clone(),
                what: format!("{what} (uncompressed)"),
                expected: *diff_id,
                actual: uncompressed_digest,
            });
        }
        temp.persist(&destination)?;
        log::debug!(
            "{}: {what} decompressed to {}",
            extent.location,
            destination.display()
        );

        // Remember both checks: the stored copy (its identity is known only now, after the
        // rename) and the source blob, so the next open hashes neither.
        let stored = Extent {
            location: super::Location::file(&destination),
            offset: 0,
            len: uncompressed_len,
        };
        if let Some(key) = self.cache_key(&stored, diff_id) {
            self.remember(&key);
        }
        if let Some(key) = blob_key {
            self.remember(&key);
        }
        Ok(LayerBlob {
            file: destination,
            offset: 0,
            len: uncompressed_len,
            diff_id: Some(*diff_id),
        })
    }

    /// Copies everything `output` decodes into `temp`, reporting progress in compressed bytes.
    fn copy_decompressed(
        &self,
        output: &mut HashingReader<Decoder<CompressedSource>>,
        temp: &mut TempFile,
        compressed_len: u64,
        what: &str,
    ) -> Result<(), CopyFailure> {
        let label = format!("decompressing {what}");
        let mut buffer = vec![0u8; CHUNK];
        let mut reported = 0u64;
        let limit = decompressed_limit(compressed_len);
        let mut written = 0u64;
        self.progress(&label, 0, compressed_len);
        loop {
            let count = match output.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(CopyFailure::Decode(error)),
            };
            written += count as u64;
            if written > limit {
                // A decompression bomb would fill the disk long before the diff_id check at
                // the end could reject it.
                return Err(CopyFailure::Decode(io::Error::other(format!(
                    "decompresses to more than {limit} bytes from {compressed_len} \
                     (set RFS_MAX_LAYER_BYTES to allow more)"
                ))));
            }
            temp.file().write_all(&buffer[..count]).map_err(|source| {
                CopyFailure::Write(Error::Store {
                    path: temp.path().to_owned(),
                    source,
                })
            })?;
            let done = output.get_ref().get_ref().get_ref().bytes_read();
            if done - reported >= STEP {
                self.progress(&label, done, compressed_len);
                reported = done;
            }
        }
        self.progress(&label, compressed_len, compressed_len);
        Ok(())
    }
}

/// The most bytes a layer of `compressed_len` compressed bytes may decompress to:
/// `RFS_MAX_LAYER_BYTES` if set, else 2048 times the compressed size, at least 64 MiB.
/// gzip cannot exceed about 1032:1 even on zeros, so only crafted zstd streams (which can
/// reach far higher ratios) ever meet this limit.
fn decompressed_limit(compressed_len: u64) -> u64 {
    std::env::var("RFS_MAX_LAYER_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| compressed_len.saturating_mul(2048).max(64 << 20))
}

/// Why copying decoded bytes stopped.
enum CopyFailure {
    /// The decoder failed: corrupt or truncated stream, or a read error below it.
    Decode(io::Error),
    /// Writing the store failed.
    Write(Error),
}

/// Checks the compressed blob's digest against its descriptor's, if it has one.
fn check_blob_digest(
    extent: &Extent,
    expected: Option<&Digest>,
    actual: Digest,
    what: &str,
) -> Result<(), Error> {
    match expected {
        Some(expected) if *expected != actual => Err(Error::DigestMismatch {
            location: extent.location.clone(),
            what: format!("{what} (compressed)"),
            expected: *expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// Reads the rest of the compressed blob (so its digest covers every byte, including any the
/// decoder did not need) and returns its digest and length.
fn finish_source(
    decoder: Decoder<CompressedSource>,
    extent: &Extent,
) -> Result<(Digest, u64), Error> {
    // Bytes buffered by the BufReader were already hashed below it; dropping them is fine.
    let mut hashing = decoder.into_inner().into_inner();
    io::copy(&mut hashing, &mut io::sink()).map_err(|source| extent.read_error(source))?;
    let (digest, len) = hashing.finish();
    if len < extent.len {
        return Err(extent.read_error(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok((digest, len))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::image::{Location, OpenOptions};

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("compress");
        encoder.finish().expect("finish")
    }

    fn blob(dir: &Path, name: &str, bytes: &[u8]) -> Extent {
        let path = dir.join(name);
        fs::write(&path, bytes).expect("write");
        Extent {
            location: Location::file(&path),
            offset: 0,
            len: bytes.len() as u64,
        }
    }

    /// Files in the store directory other than the final blobs: must stay empty.
    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with(".tmp-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_decompression_bomb_is_stopped_at_the_limit() {
        assert_eq!(decompressed_limit(1), 64 << 20, "the floor");
        // 512 MiB of zeros compress to a few KiB with zstd: far over 2048:1, so the stream
        // must be refused after the 64 MiB floor, not after 512 MiB.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bomb");
        {
            let file = fs::File::create(&path).expect("create");
            let mut enc = zstd::stream::write::Encoder::new(file, 19).expect("encoder");
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..512 {
                enc.write_all(&zeros).expect("write");
            }
            enc.finish().expect("finish");
        }
        let len = fs::metadata(&path).expect("stat").len();
        assert!(
            len.saturating_mul(2048) < 64 << 20,
            "input must be a bomb: {len} bytes"
        );
        let extent = Extent {
            location: Location::file(&path),
            offset: 0,
            len,
        };
        let opts = OpenOptions::new(dir.path().join("root"));
        let root_dir = RootDir::new(&opts);
        let any = Digest::of_bytes(b"whatever");
        match root_dir.decompress(&extent, Compression::Zstd, None, &any, "layer 1/1") {
            Err(Error::Decompress { source, .. }) => {
                assert!(
                    source.to_string().contains("decompresses to more than"),
                    "{source}"
                );
            }
            other => panic!("expected the bomb to be refused, got {other:?}"),
        }
        assert_eq!(fs::read_dir(root_dir.blobs_dir()).expect("list").count(), 0);
    }

    #[test]
    fn sniff_recognises_magic_bytes() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(
            Compression::sniff(b"\xfd7zXZ\x00"),
            Compression::Unsupported("xz")
        );
        assert_eq!(
            Compression::sniff(b"BZh91"),
            Compression::Unsupported("bzip2")
        );
        assert_eq!(Compression::sniff(b"etc/\0\0"), Compression::None);
        assert_eq!(Compression::sniff(&[]), Compression::None);
    }

    #[test]
    fn gzip_and_zstd_decompress_to_the_same_stored_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = b"pretend this is a layer tar".repeat(1000);
        let diff_id = Digest::of_bytes(&data);
        let zstd_bytes = zstd::encode_all(&data[..], 3).expect("zstd");
        for (name, bytes, compression) in [
            ("g", gzip(&data), Compression::Gzip),
            ("z", zstd_bytes, Compression::Zstd),
        ] {
            let root = dir.path().join(format!("root-{name}"));
            let opts = OpenOptions::new(&root);
            let root_dir = RootDir::new(&opts);
            let extent = blob(dir.path(), name, &bytes);
            let digest = Digest::of_bytes(&bytes);
            let layer = root_dir
                .decompress(&extent, compression, Some(&digest), &diff_id, "layer 1/1")
                .expect("decompress");
            assert_eq!(layer.file, root_dir.blobs_dir().join(diff_id.hex()));
            assert_eq!(fs::read(&layer.file).expect("read"), data);
            assert_eq!(layer.len, data.len() as u64);
            assert!(leftovers(&root_dir.blobs_dir()).is_empty());
        }
    }

    #[test]
    fn wrong_diff_id_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = OpenOptions::new(dir.path().join("root"));
        let root_dir = RootDir::new(&opts);
        let extent = blob(dir.path(), "g", &gzip(b"content"));
        let wrong = Digest::of_bytes(b"other content");
        match root_dir.decompress(&extent, Compression::Gzip, None, &wrong, "layer 1/1") {
            Err(Error::DigestMismatch {
                expected,
                actual,
                what,
                ..
            }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, Digest::of_bytes(b"content"));
                assert!(what.contains("uncompressed"), "{what}");
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        let blobs = root_dir.blobs_dir();
        assert_eq!(
            fs::read_dir(&blobs).expect("list").count(),
            0,
            "store must be empty"
        );
    }

    #[test]
    fn a_corrupt_stream_reports_the_blob_digest_when_it_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = OpenOptions::new(dir.path().join("root"));
        let root_dir = RootDir::new(&opts);
        let good = gzip(&b"0123456789abcdef".repeat(4096));
        let mut bad = good.clone();
        let middle = bad.len() / 2;
        bad[middle] ^= 0x55;
        let extent = blob(dir.path(), "bad", &bad);
        let diff_id = Digest::of_bytes(&b"0123456789abcdef".repeat(4096));

        let with_descriptor = root_dir.decompress(
            &extent,
            Compression::Gzip,
            Some(&Digest::of_bytes(&good)),
            &diff_id,
            "layer 1/1",
        );
        assert!(
            matches!(with_descriptor, Err(Error::DigestMismatch { .. })),
            "{with_descriptor:?}"
        );
        let without = root_dir.decompress(&extent, Compression::Gzip, None, &diff_id, "layer 1/1");
        assert!(
            matches!(
                without,
                Err(Error::Decompress { .. } | Error::DigestMismatch { .. })
            ),
            "{without:?}"
        );
        assert!(leftovers(&root_dir.blobs_dir()).is_empty());
    }
}
