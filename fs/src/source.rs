//! From an image SOURCE to lower layers ready to merge: opens the image ([`crate::image`]),
//! indexes each layer tar once, and caches the index under the root directory so a remount
//! reads a small file instead of walking the tar.
//!
//! Cache layout: `<root>/indexes/sha256/<diff_id hex>` for layers with a diff_id, and
//! `<root>/indexes/file/<key>` (device, inode, size, mtime and offset of the tar) for a flat
//! rootfs tar. Entries are written to a temp file and renamed into place; a corrupt entry is
//! rebuilt, never trusted.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::durable::write_atomic;
use crate::image::{self, Image, LayerBlob, OpenOptions, Platform};
use crate::lower::LayerInput;
use crate::progress::Progress;
use crate::tar_index::{self, Limits, TarIndex, codec};

/// How to open a source.
#[derive(Clone, Copy)]
pub struct SourceOptions<'a> {
    /// rfs's root directory (decompressed layers, verification marks, index cache).
    pub root: &'a Path,
    /// The platform to choose from a multi-platform index (default: this machine's).
    pub platform: Option<&'a str>,
    /// Progress callback: (what, done, total).
    pub progress: Option<&'a Progress<'a>>,
}

impl std::fmt::Debug for SourceOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceOptions")
            .field("root", &self.root)
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

/// Opens `source` and returns the image and its layers, bottom first, indexed.
///
/// # Errors
/// Any image error (format, digest, missing layer), or a layer tar that cannot be indexed.
pub fn open_layers(
    source: &Path,
    opts: &SourceOptions<'_>,
) -> Result<(Image, Vec<LayerInput>), Error> {
    let platform = Platform::parse_or_host(opts.platform)?;
    let image = image::open(
        source,
        &OpenOptions {
            root: opts.root.to_path_buf(),
            platform,
            progress: opts.progress,
        },
    )?;
    let mut layers = Vec::with_capacity(image.layers.len());
    for blob in &image.layers {
        let index = cached_index(opts.root, blob)?;
        layers.push(LayerInput::Tar {
            file: blob.file.clone(),
            offset: blob.offset,
            index,
        });
    }
    Ok((image, layers))
}

fn layer_name(blob: &LayerBlob) -> String {
    match (&blob.diff_id, blob.offset) {
        (Some(d), _) => format!("{d} in {}", blob.file.display()),
        (None, 0) => blob.file.display().to_string(),
        (None, o) => format!("{} at offset {o}", blob.file.display()),
    }
}

/// Where the index of the layer named `diff_id` is cached (shared with the store).
pub(crate) fn diff_id_cache_path(root: &Path, diff_id: &crate::digest::Digest) -> PathBuf {
    root.join("indexes/sha256").join(diff_id.hex())
}

fn cache_path(root: &Path, blob: &LayerBlob) -> Option<PathBuf> {
    match &blob.diff_id {
        Some(d) => Some(diff_id_cache_path(root, d)),
        None => {
            let m = std::fs::metadata(&blob.file).ok()?;
            let key = format!(
                "{:x}-{:x}-{}-{}.{}-{}.{}-{}",
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                blob.offset
            );
            Some(root.join("indexes/file").join(key))
        }
    }
}

/// The index of one layer: from the cache when present and valid, else built and cached.
fn cached_index(root: &Path, blob: &LayerBlob) -> Result<TarIndex, Error> {
    cached_or_build(cache_path(root, blob).as_deref(), |limits| {
        build_index(blob, limits)
    })
}

/// The index cached at `cache` if it decodes, else `build`'s, which is then cached. A
/// corrupt cache entry is rebuilt, never trusted; a cache that cannot be written only costs
/// the next mount the indexing again.
pub(crate) fn cached_or_build<E>(
    cache: Option<&Path>,
    build: impl FnOnce(&Limits) -> Result<TarIndex, E>,
) -> Result<TarIndex, E> {
    let limits = Limits::default();
    if let Some(path) = cache
        && let Ok(bytes) = std::fs::read(path)
    {
        match codec::decode(&bytes, &limits) {
            Ok(index) => return Ok(index),
            Err(e) => log::warn!("{}: rebuilding cached index: {e}", path.display()),
        }
    }
    let index = build(&limits)?;
    if let Some(path) = cache
        && let Err(e) = write_atomic(path, &codec::encode(&index), 0o644)
    {
        log::warn!("{e}: could not cache layer index: {}", e.source);
    }
    Ok(index)
}

fn build_index(blob: &LayerBlob, limits: &Limits) -> Result<TarIndex, Error> {
    let name = layer_name(blob);
    let file = File::open(&blob.file).map_err(|e| Error::io("open layer", name.clone(), e))?;
    let window = Window {
        file,
        start: blob.offset,
        len: blob.len,
        pos: 0,
    };
    tar_index::build(window, limits).map_err(|source| Error::TarIndex {
        layer: name,
        source,
    })
}

/// A byte range of a file, readable and seekable on its own (`pread`, no shared offset).
struct Window {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        let new = new.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        self.pos = new;
        Ok(new)
    }
}
