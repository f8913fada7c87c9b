//! The image store: a content-addressed OCI image layout under rfs's root directory, plus the
//! caches that make a store image mount at once.
//!
//! ```text
//! <root>/
//!   oci-layout                 {"imageLayoutVersion":"1.0.0"}
//!   index.json                 one entry per tag (annotation org.opencontainers.image.ref.name
//!                              = "NAME:TAG"), one unnamed entry per untagged image
//!   blobs/sha256/<hex>         manifests, configs, and layers UNCOMPRESSED, named by diff_id
//!   indexes/sha256/<hex>       the tar index of layer <hex> (see crate::source)
//!   image-meta/<id hex>.json   rfs's notes on an image: parent, layer sizes, last tag time
//!   leases/<n>.json            blobs a running mount uses, locked while it runs
//!   partial/<hex>              compressed bytes of a layer a pull is (or was, when killed)
//!                              downloading, for the next pull to continue (see `pull`)
//!   store.lock, index.lock     flock(2) files
//!   containers/                writable layers of containers (not part of the layout)
//!   mounts/<id>/               writable layers of `rfs mount`, see `mounts`
//! ```
//!
//! Because the layout is a plain OCI layout, `skopeo inspect oci:<root>:NAME:TAG` and
//! `umoci ls --layout <root>` read it. Layers are kept uncompressed, with media type
//! `application/vnd.oci.image.layer.v1.tar` and digest = diff_id: that is exactly the file
//! [`crate::image`] decompresses a compressed layer into, so a layer is stored once whether it
//! came from a compressed OCI archive, a docker archive or a commit, and it is served in place
//! (`pread`) by a mount. An image's ID is the digest of its config, as in Docker.
//!
//! Integrity and crashes: every blob is hashed while it streams in and gets its name only if
//! the digest is right; every file is written to a temporary name, fsynced and renamed
//! (`blobs`). `index.json` is the only mutable document: it is rewritten whole, atomically,
//! under `index.lock`. A process killed at any point leaves the previous or the next
//! `index.json` and at most some unreferenced temporary files.
//!
//! Concurrency: writers of blobs (load, import, commit, and a mount taking its lease) hold
//! `store.lock` shared for their whole run; garbage collection (`prune`, `rmi`) holds it
//! exclusively, so it never deletes a blob that a running writer is about to reference. A
//! mount records the blobs it serves in a lease file that it keeps locked until it exits;
//! collection skips the blobs of every lease that is still locked, and of every container.
//!
//! Module map: [`mod@reference`] (`NAME:TAG`), `blobs` (hashed writes),  `load` (`rfs load`, `rfs import`), `changes` (walking an upper directory:
//! `rfs diff`, and the layer tar of `rfs commit`), `commit`, `history`, `save` (docker and OCI
//! archives), `gc` (`rfs rmi`, `rfs prune`), `mounts` (the fresh writable layers of
//! `rfs mount`: `rfs mounts`, `rfs prune --mounts`), [`time`] (RFC 3339).

mod blobs;
mod changes;
mod commit;
mod gc;
mod history;
mod load;
mod mounts;
mod pull;
mod push;
pub mod reference;
mod save;
pub mod time;

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::durable::{TempFile, write_atomic};
use crate::image::MAX_METADATA_BYTES;
use crate::image::model::{
    self, ANNOTATION_REF_NAME, Descriptor, INDEX_JSON, ImageConfig, Index, Manifest,
    OCI_LAYOUT_FILE,
};
use crate::lower::{LayerInput, LowerTree};
use crate::progress::{Progress, ProgressReader};
use crate::tar_index::{self, EntryKind, TarIndex};

pub use changes::{Change, ChangeKind, UpperOwners, diff, write_layer, write_merged_tree};
pub use commit::{CommitOptions, Committed, apply_changes};
pub use gc::{BuildCachePruneReport, PruneReport, Removed};
pub use history::HistoryRow;
pub use load::{ImportOptions, LoadOptions, Loaded};
pub use mounts::{Finished, MountLayer, MountLayerInfo, MountRecord};
pub use pull::{PullOptions, PullResult, PulledFrom, index_platforms};
pub use push::{LayerCompression, PushOptions, PushResult};
pub use reference::{Reference, ReferenceError};
pub use save::ArchiveFormat;
pub use time::Timestamp;

/// Held shared by writers, exclusively by garbage collection.
const STORE_LOCK: &str = "store.lock";
/// Held exclusively while `index.json` is read, changed and rewritten.
const INDEX_LOCK: &str = "index.lock";
/// rfs's notes on images.
const META_DIR: &str = "image-meta";
/// Lease files of running mounts.
const LEASES_DIR: &str = "leases";
/// Layer index cache (shared with `crate::source`).
const INDEXES_DIR: &str = "indexes/sha256";
/// `rfs build`'s cache: one `<key>.json` per step, naming the step's layer and history entry.
/// Not a root of collection: a step whose layer is gone is a cache miss.
pub const BUILD_CACHE_DIR: &str = "build-cache";

/// Why a store operation failed. Every variant names the file, digest or reference at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the store (or an input file) could not be read or written.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done ("reading", "creating" …).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// A JSON document does not parse.
    #[error("{}: invalid {what}", path.display())]
    Json {
        /// The document.
        path: PathBuf,
        /// What it should be ("index", "image config" …).
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// An image source could not be opened.
    #[error(transparent)]
    Image(Box<crate::image::Error>),
    /// A registry request failed.
    #[error(transparent)]
    Registry(Box<crate::registry::Error>),
    /// A blob download failed (network, after retries, or a corrupt compressed stream).
    #[error("{registry}: downloading {what}: {source}")]
    Download {
        /// The registry.
        registry: String,
        /// The blob.
        what: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A layer could not be indexed or merged.
    #[error(transparent)]
    Fs(Box<crate::Error>),
    /// A reference is malformed.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// No image in the store has this name, tag or ID.
    #[error("no such image: {reference}")]
    NoSuchImage {
        /// What was asked for.
        reference: String,
    },
    /// An ID prefix matches more than one image.
    #[error("image ID prefix {prefix} is ambiguous ({matches} images match)")]
    AmbiguousId {
        /// The prefix.
        prefix: String,
        /// How many images match.
        matches: usize,
    },
    /// Content does not hash to the digest that names it.
    #[error("{what} has digest {actual}, expected {expected}")]
    Mismatch {
        /// What was hashed.
        what: String,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// A blob an image needs is not in the store.
    #[error("blob {digest} is missing from the store ({})", path.display())]
    MissingBlob {
        /// The blob.
        digest: Digest,
        /// Where it should be.
        path: PathBuf,
    },
    /// A document is larger than image metadata can be.
    #[error("{}: more than {limit} bytes, too large for image metadata", path.display())]
    TooLarge {
        /// The document.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// An image config or manifest lacks what the store needs.
    #[error("image {id}: {problem}")]
    BadImage {
        /// The image (config digest) or manifest.
        id: Digest,
        /// What is wrong.
        problem: String,
    },
    /// The SOURCE has no image config (a flat rootfs tar).
    #[error("{}: a flat rootfs tar has no image config; use `rfs import` to make an image of it", path.display())]
    NotAnImage {
        /// The SOURCE.
        path: PathBuf,
    },
    /// A layer tar cannot be indexed (it is not a valid tar).
    #[error("layer {layer}: not a valid layer tar")]
    BadLayer {
        /// The layer's diff_id.
        layer: Digest,
        /// What the indexer found.
        #[source]
        source: Box<tar_index::Error>,
    },
    /// The image is used by containers and `--force` was not given.
    #[error("image {image} is used by {users}")]
    InUse {
        /// The image.
        image: String,
        /// Who uses it.
        users: String,
    },
    /// An image has several tags and was named by ID without `--force`.
    #[error(
        "image {id} is referenced by several tags ({tags}); remove them one by one, or use --force"
    )]
    MultipleTags {
        /// The image.
        id: Digest,
        /// Its tags.
        tags: String,
    },
    /// A `--change` instruction cannot be applied.
    #[error("invalid change `{change}`: {problem}")]
    BadChange {
        /// The instruction.
        change: String,
        /// Why.
        problem: String,
    },
    /// A writable layer of `rfs mount` is still served by a running mount.
    #[error("{} is in use by a running mount{}", dir.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    LayerInUse {
        /// The layer's directory.
        dir: PathBuf,
        /// The process serving it, if known.
        pid: Option<u32>,
    },
    /// An upper directory holds something a layer tar cannot represent.
    #[error("{}: {problem}", path.display())]
    Upper {
        /// The entry.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl From<crate::image::Error> for Error {
    fn from(e: crate::image::Error) -> Error {
        Error::Image(Box::new(e))
    }
}

impl From<crate::durable::FileError> for Error {
    fn from(e: crate::durable::FileError) -> Error {
        Error::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

impl From<crate::Error> for Error {
    fn from(e: crate::Error) -> Error {
        Error::Fs(Box::new(e))
    }
}

impl Error {
    /// An I/O failure of `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// An image of the store, as `index.json` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    /// The image ID: the digest of its config.
    pub id: Digest,
    /// The digest of its manifest.
    pub manifest: Digest,
    /// The tags naming it, in `index.json` order.
    pub tags: Vec<Reference>,
}

/// rfs's notes on an image, beside the layout (`image-meta/<id hex>.json`). All of it can be
/// recomputed or is optional; a missing file is an empty record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    /// The image this one was committed from (Docker's `Parent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
    /// Each layer's size as Docker counts it (file data and symlink targets), base first.
    #[serde(default)]
    pub layer_sizes: Vec<u64>,
    /// When a tag was last set on it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tag_time: Option<String>,
    /// The registries it was pulled from, with the manifest each served (see `pull`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pulled: Vec<PulledFrom>,
}

/// An image with its config, ready to list, inspect or mount.
#[derive(Clone, Debug)]
pub struct StoredImage {
    /// The image ID (config digest).
    pub id: Digest,
    /// The manifest digest.
    pub manifest: Digest,
    /// Its tags.
    pub tags: Vec<Reference>,
    /// The config (its bytes are the blob `id`).
    pub config: ImageConfig,
    /// `config.rootfs.diff_ids`, base first.
    pub diff_ids: Vec<Digest>,
    /// rfs's notes, with `layer_sizes` filled in.
    pub meta: ImageMeta,
}

impl StoredImage {
    /// `config.created`, if present and valid.
    pub fn created(&self) -> Option<Timestamp> {
        self.config.created.as_deref().and_then(Timestamp::parse)
    }

    /// The image's size as Docker reports it: the sum of its layers' sizes.
    pub fn size(&self) -> u64 {
        self.meta.layer_sizes.iter().sum()
    }
}

/// A flock(2) held on a store lock file; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _lock: Flock<File>,
}

/// A running mount's claim on blobs: `rfs prune` keeps them while the lease file stays
/// locked, i.e. while the process holding this value (or a child that inherited the fd) runs.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// What a lease file records.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseRecord {
    pid: u32,
    what: String,
    blobs: Vec<Digest>,
}

/// The store under one root directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store under `root`, creating the directory, `oci-layout` and an empty
    /// `index.json` if they are missing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the root cannot be created or written.
    pub fn open(root: &Path) -> Result<Store, Error> {
        fs::create_dir_all(root.join("blobs/sha256"))
            .map_err(|e| Error::io("creating", root.join("blobs/sha256"), e))?;
        let store = Store {
            root: root.to_owned(),
        };
        let layout = root.join(OCI_LAYOUT_FILE);
        if !layout.is_file() {
            write_atomic(&layout, model::OCI_LAYOUT, 0o644)?;
        }
        if !root.join(INDEX_JSON).is_file() {
            store.update_index(|_| Ok(()))?;
        }
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `blobs/sha256`.
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    /// Where the blob `digest` is (or would be).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Opens the blob `digest` for reading, with its path; `MissingBlob` when it is absent.
    pub(crate) fn open_blob(&self, digest: &Digest) -> Result<(File, PathBuf), Error> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(f) => Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::MissingBlob {
                digest: *digest,
                path,
            }),
            Err(e) => Err(Error::io("opening", path, e)),
        }
    }

    /// Reads a metadata blob (manifest, config), bounded and checked against its digest.
    fn read_blob(&self, digest: &Digest, what: &str) -> Result<Vec<u8>, Error> {
        let (file, path) = self.open_blob(digest)?;
        let mut bytes = Vec::new();
        file.take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("reading", &path, e))?;
        if bytes.len() as u64 > MAX_METADATA_BYTES {
            return Err(Error::TooLarge {
                path,
                limit: MAX_METADATA_BYTES,
            });
        }
        let actual = Digest::of_bytes(&bytes);
        if actual != *digest {
            return Err(Error::Mismatch {
                what: format!("{what} {}", path.display()),
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    fn flock(&self, name: &str, arg: FlockArg) -> Result<StoreLock, Error> {
        let path = self.root.join(name);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening lock file", &path, e))?;
        let lock = Flock::lock(file, arg)
            .map_err(|(_, errno)| Error::io("locking", &path, errno.into()))?;
        Ok(StoreLock { _lock: lock })
    }

    /// Holds the store lock shared: blobs written meanwhile are safe from collection.
    ///
    /// # Errors
    ///
    /// The lock file cannot be opened or locked.
    pub fn lock_shared(&self) -> Result<StoreLock, Error> {
        self.flock(STORE_LOCK, FlockArg::LockShared)
    }

    /// Holds the store lock exclusively (garbage collection).
    fn lock_exclusive(&self) -> Result<StoreLock, Error> {
        self.flock(STORE_LOCK, FlockArg::LockExclusive)
    }

    /// Reads `index.json` (an empty index if it is missing).
    ///
    /// # Errors
    ///
    /// It cannot be read or does not parse.
    pub fn read_index(&self) -> Result<Index, Error> {
        let path = self.root.join(INDEX_JSON);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(Error::io("reading", path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path,
            what: "image index",
            source,
        })
    }

    /// Reads, changes and rewrites `index.json` under `index.lock`; rewrites only if `change`
    /// changed something.
    fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Index) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _lock = self.flock(INDEX_LOCK, FlockArg::LockExclusive)?;
        let path = self.root.join(INDEX_JSON);
        let exists = path.is_file();
        let mut index = self.read_index()?;
        let before = index.clone();
        let out = change(&mut index)?;
        if index != before || !exists {
            let bytes = serde_json::to_vec_pretty(&index).map_err(|source| Error::Json {
                path: path.clone(),
                what: "image index",
                source,
            })?;
            write_atomic(&path, &bytes, 0o644)?;
        }
        Ok(out)
    }

    /// The manifest `digest`, parsed; `None` if it is an index or another document.
    fn manifest(&self, digest: &Digest) -> Result<Option<Manifest>, Error> {
        let bytes = self.read_blob(digest, "manifest")?;
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) => Ok(Some(m)),
            Err(_) => Ok(None),
        }
    }

    /// Every image in `index.json`, in its order, with its tags.
    ///
    /// Entries that are not image manifests (a multi-platform index copied in by another
    /// tool), or whose manifest is missing, are skipped with a warning.
    ///
    /// # Errors
    ///
    /// `index.json` cannot be read.
    pub fn images(&self) -> Result<Vec<ImageRecord>, Error> {
        let index = self.read_index()?;
        let mut out: Vec<ImageRecord> = Vec::new();
        for entry in &index.manifests {
            let Ok(manifest_digest) = entry.digest() else {
                log::warn!("index.json: skipping entry with digest {}", entry.digest);
                continue;
            };
            let tag = entry.ref_name().and_then(|r| Reference::parse(r).ok());
            if let Some(existing) = out.iter_mut().find(|r| r.manifest == manifest_digest) {
                existing.tags.extend(tag);
                continue;
            }
            let manifest = match self.manifest(&manifest_digest) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    log::warn!("index.json: {manifest_digest} is not an image manifest; skipped");
                    continue;
                }
                Err(e) => {
                    log::warn!("index.json: {manifest_digest}: {e}; skipped");
                    continue;
                }
            };
            let Ok(id) = manifest.config.digest() else {
                log::warn!("manifest {manifest_digest}: bad config digest; skipped");
                continue;
            };
            out.push(ImageRecord {
                id,
                manifest: manifest_digest,
                tags: tag.into_iter().collect(),
            });
        }
        Ok(out)
    }

    /// Finds an image by `NAME[:TAG]`, `REGISTRY/NAME@sha256:<hex>` (an image pulled by that
    /// digest, or whose tag resolved to it: its `RepoDigests`), full ID (`sha256:<hex>`) or a
    /// unique ID prefix.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchImage`], [`Error::AmbiguousId`], or `index.json` cannot be read.
    pub fn resolve(&self, text: &str) -> Result<ImageRecord, Error> {
        let images = self.images()?;
        if let Ok(reference) = Reference::parse(text) {
            if let Some(found) = images.iter().find(|i| i.tags.contains(&reference)) {
                return Ok(found.clone());
            }
        }
        if text.contains('@') {
            if let Ok(pinned) = crate::registry::ImageRef::parse(text) {
                if let Some(digest) = pinned.digest {
                    let repository = pinned.repository_path();
                    let found = images.iter().find(|i| {
                        self.meta(&i.id).pulled.iter().any(|p| {
                            p.repository == repository
                                && (p.repo_digest == digest || p.manifest_digest == digest)
                        })
                    });
                    if let Some(found) = found {
                        return Ok(found.clone());
                    }
                }
            }
        }
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if !hex.is_empty()
            && hex.len() <= 64
            && hex
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            let mut matches: Vec<&ImageRecord> = images
                .iter()
                .filter(|i| i.id.hex().starts_with(hex))
                .collect();
            matches.dedup_by_key(|i| i.id);
            match matches.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                many => {
                    return Err(Error::AmbiguousId {
                        prefix: text.to_owned(),
                        matches: many.len(),
                    });
                }
            }
        }
        Err(Error::NoSuchImage {
            reference: text.to_owned(),
        })
    }

    /// The image `record` with its config and layer sizes.
    ///
    /// # Errors
    ///
    /// The config blob is missing or invalid, or a layer cannot be indexed to size it.
    pub fn image(&self, record: &ImageRecord) -> Result<StoredImage, Error> {
        let bytes = self.read_blob(&record.id, "config")?;
        let config: ImageConfig = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: self.blob_path(&record.id),
            what: "image config",
            source,
        })?;
        let diff_ids = config.diff_ids().map_err(|e| Error::BadImage {
            id: record.id,
            problem: format!("bad diff_id in rootfs.diff_ids: {e}"),
        })?;
        let mut meta = self.meta(&record.id);
        if meta.layer_sizes.len() != diff_ids.len() {
            meta.layer_sizes = diff_ids
                .iter()
                .map(|d| Ok(layer_size(&self.layer_index(d)?)))
                .collect::<Result<_, Error>>()?;
            self.write_meta(&record.id, &meta);
        }
        Ok(StoredImage {
            id: record.id,
            manifest: record.manifest,
            tags: record.tags.clone(),
            config,
            diff_ids,
            meta,
        })
    }

    /// Resolves `text` and loads the image.
    ///
    /// # Errors
    ///
    /// As [`resolve`](Self::resolve) and [`image`](Self::image).
    pub fn find(&self, text: &str) -> Result<StoredImage, Error> {
        let record = self.resolve(text)?;
        self.image(&record)
    }

    /// rfs's notes on image `id` (empty if there are none or they are unreadable).
    fn meta(&self, id: &Digest) -> ImageMeta {
        let path = self.meta_path(id);
        fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn meta_path(&self, id: &Digest) -> PathBuf {
        self.root.join(META_DIR).join(format!("{}.json", id.hex()))
    }

    /// Saves rfs's notes; failing to is only worth a warning (they can be recomputed).
    fn write_meta(&self, id: &Digest, meta: &ImageMeta) {
        let path = self.meta_path(id);
        let result = serde_json::to_vec(meta)
            .map_err(|e| Error::io("encoding", &path, io::Error::other(e)))
            .and_then(|bytes| Ok(write_atomic(&path, &bytes, 0o644)?));
        if let Err(e) = result {
            log::warn!("{e}");
        }
    }

    /// The index of layer `diff_id` (its blob must be in the store): from the cache, else
    /// built from the blob and cached.
    ///
    /// # Errors
    ///
    /// [`Error::MissingBlob`], or the blob is not a valid tar.
    pub fn layer_index(&self, diff_id: &Digest) -> Result<TarIndex, Error> {
        let blob = self.blob_path(diff_id);
        if !blob.is_file() {
            return Err(Error::MissingBlob {
                digest: *diff_id,
                path: blob,
            });
        }
        cached_index(&self.root, diff_id, &blob, "indexing layer", None)
    }

    /// The layers of `image`, base first, indexed, ready for [`LowerTree::build`].
    ///
    /// # Errors
    ///
    /// A layer blob is missing or cannot be indexed.
    pub fn layer_inputs(&self, image: &StoredImage) -> Result<Vec<LayerInput>, Error> {
        image
            .diff_ids
            .iter()
            .map(|d| {
                Ok(LayerInput::Tar {
                    file: self.blob_path(d),
                    offset: 0,
                    index: self.layer_index(d)?,
                })
            })
            .collect()
    }

    /// The merged lower tree of `image`.
    ///
    /// # Errors
    ///
    /// As [`layer_inputs`](Self::layer_inputs), or the layers cannot be merged.
    pub fn lower_tree(&self, image: &StoredImage) -> Result<LowerTree, Error> {
        Ok(LowerTree::build(self.layer_inputs(image)?)?)
    }

    /// Every blob `image` needs: manifest, config, layers.
    pub fn blobs_of(image: &StoredImage) -> Vec<Digest> {
        let mut out = vec![image.manifest, image.id];
        out.extend(image.diff_ids.iter().copied());
        out
    }

    /// Takes a lease on `blobs` for the life of this process (see [`Lease`]). Take it while
    /// holding [`lock_shared`](Self::lock_shared), after resolving what the blobs are.
    ///
    /// # Errors
    ///
    /// The lease file cannot be written or locked.
    pub fn lease(&self, what: &str, blobs: &[Digest]) -> Result<Lease, Error> {
        use std::io::Write;
        let dir = self.root.join(LEASES_DIR);
        // Leases of mounts that have ended would otherwise pile up until the next prune.
        self.sweep_leases(None);
        let mut tmp = TempFile::create(&dir, 0o644)?;
        let record = LeaseRecord {
            pid: std::process::id(),
            what: what.to_owned(),
            blobs: blobs.to_vec(),
        };
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| Error::io("encoding", tmp.path(), io::Error::other(e)))?;
        tmp.file()
            .write_all(&bytes)
            .map_err(|e| Error::io("writing", tmp.path(), e))?;
        // The lock belongs to the open file description, which the clone shares; it is taken
        // before the file gets its final name, so collection never sees it unlocked.
        let clone = tmp
            .file()
            .try_clone()
            .map_err(|e| Error::io("opening", tmp.path(), e))?;
        let lock = Flock::lock(clone, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| Error::io("locking", tmp.path(), errno.into()))?;
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(
            "{}-{}-{n}.json",
            std::process::id(),
            Timestamp::now().secs
        ));
        tmp.rename_into(&path)?;
        Ok(Lease { path, _lock: lock })
    }

    /// Resolves `text` and returns the image, its layers and a lease on its blobs, all under
    /// the shared store lock so that no collection runs in between.
    ///
    /// # Errors
    ///
    /// As [`find`](Self::find), [`layer_inputs`](Self::layer_inputs) and
    /// [`lease`](Self::lease).
    pub fn open_for_mount(
        &self,
        text: &str,
    ) -> Result<(StoredImage, Vec<LayerInput>, Lease), Error> {
        let _lock = self.lock_shared()?;
        let image = self.find(text)?;
        let layers = self.layer_inputs(&image)?;
        let lease = self.lease(&format!("mount {text}"), &Store::blobs_of(&image))?;
        Ok((image, layers, lease))
    }

    /// Adds (or re-tags) an image whose config and layers are already stored, with its
    /// manifest; moves each of `tags` to it. Returns its record.
    fn add_image(
        &self,
        config_bytes: &[u8],
        layers: &[(Digest, u64)],
        tags: &[Reference],
        mut meta: ImageMeta,
        progress: Option<&Progress<'_>>,
    ) -> Result<ImageRecord, Error> {
        let config: ImageConfig =
            serde_json::from_slice(config_bytes).map_err(|source| Error::Json {
                path: PathBuf::from("(new image config)"),
                what: "image config",
                source,
            })?;
        let (id, config_size) = blobs::ingest(
            &self.blobs_dir(),
            &mut &config_bytes[..],
            None,
            "config",
            config_bytes.len() as u64,
            progress,
        )?;
        let manifest = Manifest::for_layers(&id, config_size, layers);
        let manifest_bytes = manifest.to_bytes();
        let (manifest_digest, manifest_size) = blobs::ingest(
            &self.blobs_dir(),
            &mut &manifest_bytes[..],
            None,
            "manifest",
            manifest_bytes.len() as u64,
            progress,
        )?;
        if !tags.is_empty() {
            meta.last_tag_time = Some(Timestamp::now().to_rfc3339_nano());
        } else if let Some(old) = self.meta(&id).last_tag_time {
            meta.last_tag_time = Some(old);
        }
        if meta.parent.is_none() {
            meta.parent = self.meta(&id).parent;
        }
        // Where else it was pulled from stays known; a new pull of a repository replaces it.
        let mut pulled = self.meta(&id).pulled;
        for p in std::mem::take(&mut meta.pulled) {
            pulled.retain(|old| old.repository != p.repository);
            pulled.push(p);
        }
        meta.pulled = pulled;
        self.write_meta(&id, &meta);
        let mut descriptor =
            Descriptor::new(model::MEDIA_MANIFEST, &manifest_digest, manifest_size);
        descriptor.platform = config.platform();
        self.update_index(|index| {
            place(index, &descriptor, tags);
            Ok(())
        })?;
        Ok(ImageRecord {
            id,
            manifest: manifest_digest,
            tags: tags.to_vec(),
        })
    }

    /// Tags image `image` as `reference` (moving the tag from another image, which keeps its
    /// other tags or stays as an untagged image).
    ///
    /// # Errors
    ///
    /// `index.json` cannot be rewritten.
    pub fn tag(&self, image: &ImageRecord, reference: &Reference) -> Result<(), Error> {
        let _lock = self.lock_shared()?;
        let index = self.read_index()?;
        let Some(entry) = index
            .manifests
            .iter()
            .find(|e| e.digest().ok() == Some(image.manifest))
            .cloned()
        else {
            return Err(Error::NoSuchImage {
                reference: image.id.to_string(),
            });
        };
        let mut descriptor = entry;
        descriptor.annotations.remove(ANNOTATION_REF_NAME);
        self.update_index(|index| {
            place(index, &descriptor, std::slice::from_ref(reference));
            Ok(())
        })?;
        let mut meta = self.meta(&image.id);
        meta.last_tag_time = Some(Timestamp::now().to_rfc3339_nano());
        self.write_meta(&image.id, &meta);
        Ok(())
    }
}

/// Puts `descriptor` (without a name) into `index` under each of `tags`, moving a tag that
/// names another image; an image left without any entry stays as an untagged entry. Without
/// tags, the image gets an untagged entry unless it has an entry already.
fn place(index: &mut Index, descriptor: &Descriptor, tags: &[Reference]) {
    let same = |e: &Descriptor| e.digest == descriptor.digest;
    for tag in tags {
        let name = tag.to_string();
        let mut displaced = Vec::new();
        index.manifests.retain(|e| {
            let named = e.ref_name().and_then(|r| Reference::parse(r).ok()).as_ref() == Some(tag);
            if named && !same(e) {
                displaced.push(e.clone());
                false
            } else {
                true
            }
        });
        for mut old in displaced {
            if !index.manifests.iter().any(|e| e.digest == old.digest) {
                old.annotations.remove(ANNOTATION_REF_NAME);
                index.manifests.push(old);
            }
        }
        let present = index
            .manifests
            .iter()
            .any(|e| same(e) && e.ref_name() == Some(name.as_str()));
        if !present {
            let mut entry = descriptor.clone();
            entry
                .annotations
                .insert(ANNOTATION_REF_NAME.to_owned(), name);
            index.manifests.push(entry);
        }
    }
    let tagged = index
        .manifests
        .iter()
        .any(|e| same(e) && e.ref_name().is_some());
    if tagged {
        index
            .manifests
            .retain(|e| !(same(e) && e.ref_name().is_none()));
    } else if !index.manifests.iter().any(same) {
        index.manifests.push(descriptor.clone());
    }
}

/// A layer's size as Docker reports it (`docker history`, `docker images`): the bytes its
/// files would take once unpacked: regular file data and symlink targets, a hard-linked file
/// once, and nothing for directories, devices and whiteouts.
pub fn layer_size(index: &TarIndex) -> u64 {
    index
        .entries
        .iter()
        .map(|e| match e.kind {
            EntryKind::File => e.size,
            EntryKind::Symlink => e.link_target.len() as u64,
            _ => 0,
        })
        .sum()
}

/// The index of the layer tar `blob` (named `diff_id`), cached where [`crate::source`]
/// caches it, by the same code. Building it reads the whole layer, reported as `what`.
fn cached_index(
    root: &Path,
    diff_id: &Digest,
    blob: &Path,
    what: &str,
    progress: Option<&Progress<'_>>,
) -> Result<TarIndex, Error> {
    let cache = crate::source::diff_id_cache_path(root, diff_id);
    crate::source::cached_or_build(Some(&cache), |limits| {
        index_layer(blob, diff_id, limits, what, progress)
    })
}

/// Indexes the layer tar `blob` (named `diff_id`) in one pass, reported as `what`.
fn index_layer(
    blob: &Path,
    diff_id: &Digest,
    limits: &tar_index::Limits,
    what: &str,
    progress: Option<&Progress<'_>>,
) -> Result<TarIndex, Error> {
    let file = File::open(blob).map_err(|e| Error::io("opening", blob, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading", blob, e))?
        .len();
    let reader = ProgressReader::new(file, what, len, progress);
    let index =
        tar_index::build(BufReader::with_capacity(1 << 16, reader), limits).map_err(|source| {
            Error::BadLayer {
                layer: *diff_id,
                source: Box::new(source),
            }
        })?;
    // The index ends at the tar's end marker, which may come before the file's end.
    if let Some(p) = progress {
        p(what, len, len);
    }
    Ok(index)
}

#[cfg(test)]
mod tests;
