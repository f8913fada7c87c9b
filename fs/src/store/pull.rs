//! `rfs pull`: an image from a registry into the store.
//!
//! The tag (or digest) is resolved to a manifest; an index or Docker manifest list is resolved
//! to the manifest of the wanted platform, chosen as `rfs mount` chooses in a layout
//! ([`Platform::rank`]). Docker schema 1 is refused. The config is fetched unless the store
//! has it; each layer the store lacks (by diff_id, whichever image brought it) is downloaded
//! by a small pool of threads, each layer in one pass: the compressed bytes are hashed against
//! the descriptor's digest as they arrive, decompressed (gzip or zstd, sniffed from the bytes),
//! and the output is hashed against the config's diff_id while it is written to a temporary
//! file in `blobs/sha256`, which gets its name only when both digests match. A mismatch, a
//! network failure, a full disk or a kill leaves no named blob: the store stays valid and the
//! next pull downloads only the layers still missing.
//!
//! Resuming: a dropped connection continues in the same pass with an HTTP `Range` request
//! ([`crate::registry::client`]), so a flaky network does not restart a big layer. Across
//! processes: a killed pull leaves its finished layers (named blobs, used by the next pull),
//! half-written temporary files, which the next pull removes when their writer is dead
//! ([`crate::durable::remove_dead_temporaries`]), and, for each layer it was downloading,
//! the compressed bytes received so far in `partial/<digest>` ([`Partial`]): a decompressor's
//! state cannot be saved, so the next pull feeds those bytes through hash and decompressor
//! again from disk and asks the registry only for the rest (`Range`). That file is the one
//! extra copy of compressed bytes the store ever holds, while a layer is in flight; it goes
//! when the layer is stored, when its bytes prove wrong (the layer is then fetched whole
//! once more), or with `rfs prune`.
//!
//! What is kept for `rfs push` (see [`super::push`]): the store keeps layers uncompressed, so
//! it cannot re-create the registry's compressed blobs byte for byte. It keeps instead the
//! exact bytes of the pulled manifest and where it came from ([`PulledFrom`] in the image's
//! notes). Its layers list each compressed digest next to the diff_id at the same position in
//! the config, which is the map push needs to offer the registry the original blobs (`HEAD`,
//! or a cross-repository mount) and so push the original manifest with its digest unchanged,
//! as containers/image does with its blob-info cache. That costs a few KiB per image instead
//! of a second, compressed copy of every layer; the price is that pushing to a registry that
//! holds neither the blobs nor a repository to mount them from recompresses the layers, and
//! the manifest digest changes there.

use std::cell::Cell;
use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{Flock, FlockArg};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::{Error, ImageMeta, Reference, Store, cached_index, layer_size};
use crate::digest::{Digest, HashingReader};
use crate::durable::TempFile;
use crate::image::compress::{Compression, Decoder, MAGIC_LEN};
use crate::image::model::{
    self, ConfigBlob, Descriptor, INDEX_TYPES, Index, LAYER_TYPES, MANIFEST_TYPES, Manifest,
};
use crate::image::{Platform, read_up_to};
use crate::progress::{Progress, ProgressReader};
use crate::registry::client::SCHEMA1_TYPES;
use crate::registry::{self, Client, ImageRef};

/// How many layers download at once.
pub(crate) const DEFAULT_JOBS: usize = 3;

/// Where the compressed bytes of layers being downloaded are kept (see the module docs).
pub(crate) const PARTIAL_DIR: &str = "partial";

/// Where an image was pulled from, kept in its notes for `rfs inspect` (`RepoDigests`) and
/// `rfs push` (the original manifest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledFrom {
    /// `registry/repository`.
    pub repository: String,
    /// What the tag resolved to: the index or the manifest (docker's `RepoDigests`).
    pub repo_digest: Digest,
    /// The image manifest's digest.
    pub manifest_digest: Digest,
    /// The image manifest, byte for byte (JSON is UTF-8).
    pub manifest: String,
    /// Its media type.
    pub media_type: String,
}

/// How to pull.
#[derive(Default)]
pub struct PullOptions<'a> {
    /// The platform to pick from an index (default: this machine's).
    pub platform: Option<&'a str>,
    /// Parallel layer downloads (0: [`DEFAULT_JOBS`]).
    pub jobs: usize,
    /// Progress of each layer's download, reported as `layer <digest>`.
    pub progress: Option<&'a Progress<'a>>,
    /// The name the image gets in the store, when it differs from where it is pulled from
    /// (a mirror of registries.conf); default: the reference pulled.
    pub name: Option<&'a ImageRef>,
    /// Give the image no name (the other platforms of `rfs pull --all-platforms`).
    pub untagged: bool,
}

/// What a pull did.
#[derive(Clone, Debug)]
pub struct PullResult {
    /// The image ID.
    pub id: Digest,
    /// The name it got in the store, if the reference had a tag.
    pub tag: Option<Reference>,
    /// The digest the reference resolved to (docker's "Digest:" line).
    pub repo_digest: Digest,
    /// Layers downloaded.
    pub downloaded: usize,
    /// Layers the store had.
    pub present: usize,
}

impl From<registry::Error> for Error {
    fn from(e: registry::Error) -> Error {
        Error::Registry(Box::new(e))
    }
}

/// A manifest document's kind, from its media type or its body.
enum Kind {
    Index(Index),
    Manifest(Manifest),
}

fn classify(
    registry: &str,
    what: &str,
    bytes: &[u8],
    content_type: &str,
) -> Result<Kind, registry::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        schema_version: Option<u64>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let bad = |problem: String| registry::Error::BadDocument {
        registry: registry.to_owned(),
        what: what.to_owned(),
        problem,
    };
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a manifest: {e}")))?;
    let media = probe
        .media_type
        .clone()
        .unwrap_or_else(|| content_type.to_owned());
    if probe.schema_version == Some(1) || SCHEMA1_TYPES.contains(&media.as_str()) {
        return Err(registry::Error::Schema1 {
            registry: registry.to_owned(),
            reference: what.to_owned(),
        });
    }
    let is_index = INDEX_TYPES.contains(&media.as_str())
        || (!MANIFEST_TYPES.contains(&media.as_str()) && probe.manifests.is_some());
    if is_index {
        serde_json::from_slice(bytes)
            .map(Kind::Index)
            .map_err(|e| bad(format!("not an image index: {e}")))
    } else if MANIFEST_TYPES.contains(&media.as_str()) || media.is_empty() {
        serde_json::from_slice(bytes)
            .map(Kind::Manifest)
            .map_err(|e| bad(format!("not an image manifest: {e}")))
    } else {
        Err(bad(format!("unsupported manifest media type `{media}`")))
    }
}

/// The platforms of the image index `reference` names, in the index's order (entries for no
/// platform, such as build attestations with `unknown/unknown`, left out); `None` if it names
/// a single image manifest.
///
/// # Errors
///
/// As fetching the manifest in [`Store::pull`]: not found, unauthorized, schema 1, ...
pub fn index_platforms(
    client: &Client,
    reference: &ImageRef,
) -> Result<Option<Vec<Platform>>, registry::Error> {
    let (bytes, content_type, _) =
        client.manifest(&reference.repository, &reference.manifest_reference())?;
    let what = reference.to_string();
    Ok(
        match classify(client.registry(), &what, &bytes, &content_type)? {
            Kind::Manifest(_) => None,
            Kind::Index(index) => Some(
                index
                    .manifests
                    .into_iter()
                    .filter(|e| {
                        e.media_type
                            .as_deref()
                            .is_none_or(|m| MANIFEST_TYPES.contains(&m))
                    })
                    .filter_map(|e| e.platform)
                    .filter(|p| p.os != "unknown" && p.architecture != "unknown")
                    .collect(),
            ),
        },
    )
}

/// The entry of `index` for `wanted`, as `rfs mount` picks it.
fn choose<'i>(
    registry: &str,
    what: &str,
    index: &'i Index,
    wanted: &Platform,
) -> Result<&'i Descriptor, registry::Error> {
    let entries: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|e| {
            e.media_type
                .as_deref()
                .is_none_or(|m| MANIFEST_TYPES.contains(&m))
        })
        .collect();
    if let [only] = entries.as_slice() {
        if only.platform.is_none() {
            return Ok(only);
        }
    }
    entries
        .iter()
        .filter_map(|e| Some((wanted.rank(e.platform.as_ref()?)?, *e)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, e)| e)
        .ok_or_else(|| {
            let offered: Vec<String> = entries
                .iter()
                .filter_map(|e| e.platform.as_ref().map(ToString::to_string))
                .collect();
            registry::Error::BadDocument {
                registry: registry.to_owned(),
                what: what.to_owned(),
                problem: format!(
                    "no image for platform {wanted} (offered: {}); choose one with --platform",
                    offered.join(", ")
                ),
            }
        })
}

impl Store {
    /// Pulls `reference` from `client`'s registry (see the module docs).
    ///
    /// # Errors
    ///
    /// Registry errors (not found, unauthorized, schema 1, digest mismatch, network after
    /// retries), a config the store cannot use, or the store cannot be written.
    pub fn pull(
        &self,
        client: &Client,
        reference: &ImageRef,
        opts: &PullOptions<'_>,
    ) -> Result<PullResult, Error> {
        let _lock = self.lock_shared()?;
        let registry = client.registry().to_owned();
        let repo = &reference.repository;
        let wanted = Platform::parse_or_host(opts.platform)?;
        let (mut bytes, content_type, repo_digest) =
            client.manifest(repo, &reference.manifest_reference())?;
        let mut what = reference.to_string();
        let mut manifest_digest = repo_digest;
        let mut media_type = content_type.clone();
        let manifest = match classify(&registry, &what, &bytes, &content_type)? {
            Kind::Manifest(m) => m,
            Kind::Index(index) => {
                let entry = choose(&registry, &what, &index, &wanted)?;
                let digest = entry.digest().map_err(|e| registry::Error::BadDocument {
                    registry: registry.clone(),
                    what: what.clone(),
                    problem: e.to_string(),
                })?;
                let (b, ct, d) = client.manifest(repo, &digest.to_string())?;
                what = format!("{}@{digest}", reference.repository_path());
                bytes = b;
                manifest_digest = d;
                media_type = ct.clone();
                match classify(&registry, &what, &bytes, &ct)? {
                    Kind::Manifest(m) => m,
                    Kind::Index(_) => {
                        return Err(registry::Error::BadDocument {
                            registry,
                            what,
                            problem: "an index inside an index is not supported".into(),
                        }
                        .into());
                    }
                }
            }
        };
        if let Some(m) = &manifest.media_type {
            media_type = m.clone();
        }
        let config_digest = manifest
            .config
            .digest()
            .map_err(|e| registry::Error::BadDocument {
                registry: registry.clone(),
                what: what.clone(),
                problem: format!("config: {e}"),
            })?;
        let config_bytes = match self.read_blob(&config_digest, "config") {
            Ok(b) => b,
            Err(_) => client.blob_bytes(
                repo,
                &config_digest,
                manifest.config.size,
                &format!("config {config_digest}"),
            )?,
        };
        let config = ConfigBlob::parse(config_bytes).map_err(|e| Error::BadImage {
            id: config_digest,
            problem: format!("invalid image config: {e}"),
        })?;
        let diff_ids = config.parsed.diff_ids().map_err(|e| Error::BadImage {
            id: config_digest,
            problem: format!("bad diff_id in rootfs.diff_ids: {e}"),
        })?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::BadImage {
                id: config_digest,
                problem: format!(
                    "the manifest has {} layers but the config {} diff_ids",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let mut jobs = Vec::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            let media = layer
                .media_type
                .as_deref()
                .unwrap_or(model::MEDIA_LAYER_TAR);
            if !LAYER_TYPES.contains(&media) {
                return Err(registry::Error::BadDocument {
                    registry: registry.clone(),
                    what: what.clone(),
                    problem: format!(
                        "layer {} has unsupported media type `{media}`",
                        layer.digest
                    ),
                }
                .into());
            }
            let digest = layer.digest().map_err(|e| registry::Error::BadDocument {
                registry: registry.clone(),
                what: what.clone(),
                problem: format!("layer: {e}"),
            })?;
            if !self.blob_path(diff_id).is_file() && !jobs.iter().any(|(_, _, d)| d == diff_id) {
                jobs.push((digest, layer.size, *diff_id));
            }
        }
        let present = diff_ids.len() - jobs.len();
        if !jobs.is_empty() {
            // What a killed pull left half-written.
            let removed = crate::durable::remove_dead_temporaries(&self.blobs_dir());
            if removed > 0 {
                log::info!("removed {removed} temporary files of interrupted writes");
            }
        }
        self.download_layers(client, repo, &jobs, opts)?;

        let count = diff_ids.len();
        let mut layers = Vec::with_capacity(count);
        let mut sizes = Vec::with_capacity(count);
        for (i, diff_id) in diff_ids.iter().enumerate() {
            let dest = self.blob_path(diff_id);
            let size = fs::metadata(&dest)
                .map_err(|e| Error::io("reading", &dest, e))?
                .len();
            let step = format!("indexing layer {}/{count}", i + 1);
            let index = cached_index(&self.root, diff_id, &dest, &step, None)?;
            sizes.push(layer_size(&index));
            layers.push((*diff_id, size));
        }
        let tag = if opts.untagged {
            None
        } else {
            opts.name.unwrap_or(reference).store_reference()
        };
        let pulled = match String::from_utf8(bytes) {
            Ok(manifest) => vec![PulledFrom {
                repository: reference.repository_path(),
                repo_digest,
                manifest_digest,
                manifest,
                media_type,
            }],
            Err(_) => Vec::new(),
        };
        let record = self.add_image(
            &config.bytes,
            &layers,
            tag.as_slice(),
            ImageMeta {
                parent: None,
                layer_sizes: sizes,
                last_tag_time: None,
                pulled,
            },
            None,
        )?;
        Ok(PullResult {
            id: record.id,
            tag,
            repo_digest,
            downloaded: jobs.len(),
            present,
        })
    }

    /// Downloads `jobs` (compressed digest, size, diff_id) with a small pool of threads;
    /// the first failure stops the pool from starting more and is returned.
    fn download_layers(
        &self,
        client: &Client,
        repo: &str,
        jobs: &[(Digest, u64, Digest)],
        opts: &PullOptions<'_>,
    ) -> Result<(), Error> {
        let workers = match opts.jobs {
            0 => DEFAULT_JOBS,
            n => n,
        }
        .min(jobs.len());
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((digest, size, diff_id)) = jobs.get(i) else {
                            break;
                        };
                        if let Err(e) =
                            self.fetch_layer(client, repo, digest, *size, diff_id, opts.progress)
                        {
                            failed.store(true, Ordering::Relaxed);
                            let mut slot = first_error
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            slot.get_or_insert(e);
                            break;
                        }
                    }
                });
            }
        });
        match first_error
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Downloads one layer into `blobs/sha256/<diff_id>` in one pass, continuing what an
    /// interrupted pull kept of it (see the module docs).
    fn fetch_layer(
        &self,
        client: &Client,
        repo: &str,
        digest: &Digest,
        size: u64,
        diff_id: &Digest,
        progress: Option<&Progress<'_>>,
    ) -> Result<(), Error> {
        let partial = Partial::open(&self.root.join(PARTIAL_DIR), digest, size);
        let kept = partial.as_ref().map_or(0, |p| p.kept);
        let network_failed = Cell::new(false);
        let result = self.fetch_layer_from(
            client,
            repo,
            (digest, size, diff_id),
            partial.as_ref(),
            &network_failed,
            progress,
        );
        match (result, partial) {
            (Ok(()), Some(p)) => {
                p.remove();
                Ok(())
            }
            // Kept for the next pull: the registry stopped answering.
            (Err(e), Some(_)) if network_failed.get() => Err(e),
            (Err(e), Some(p)) => {
                p.remove();
                if kept == 0 {
                    return Err(e);
                }
                // The kept bytes may be what was wrong: once more, from the start.
                log::info!("layer {digest}: {e}; downloading it again from the start");
                self.fetch_layer(client, repo, digest, size, diff_id, progress)
            }
            (result, None) => result,
        }
    }

    /// [`Store::fetch_layer`]'s pass: the kept bytes of `partial`, then the registry's from
    /// there on, copied into `partial` as they arrive; `network_failed` tells a dropped
    /// registry from bad data.
    fn fetch_layer_from(
        &self,
        client: &Client,
        repo: &str,
        (digest, size, diff_id): (&Digest, u64, &Digest),
        partial: Option<&Partial>,
        network_failed: &Cell<bool>,
        progress: Option<&Progress<'_>>,
    ) -> Result<(), Error> {
        let registry = client.registry();
        let what = format!("layer {digest}");
        let label = format!("layer {}", &digest.hex()[..12]);
        let download = |source: io::Error| Error::Download {
            registry: registry.to_owned(),
            what: what.clone(),
            source,
        };
        let (kept, prefix): (u64, Box<dyn Read>) = match partial {
            Some(p) => (
                p.kept,
                Box::new(
                    fs::File::open(&p.path)
                        .map_err(|e| Error::io("reading", &p.path, e))?
                        .take(p.kept),
                ),
            ),
            None => (0, Box::new(io::empty())),
        };
        let blob = Tee {
            inner: client.blob_from(repo, digest, size, kept, &what),
            out: partial.map(|p| (&*p.file, p.path.as_path())),
            failed: network_failed,
        };
        let mut compressed = HashingReader::new(ProgressReader::new(
            prefix.chain(blob),
            &label,
            size,
            progress,
        ));
        let mut magic = [0u8; MAGIC_LEN];
        let got = read_up_to(&mut compressed, &mut magic).map_err(download)?;
        let compression = Compression::sniff(&magic[..got]);
        let source = BufReader::with_capacity(
            1 << 16,
            io::Cursor::new(magic[..got].to_vec()).chain(compressed),
        );
        let mut stage = match compression {
            Compression::None => Stage::Plain(source),
            Compression::Gzip | Compression::Zstd => {
                Stage::Decode(Decoder::new(compression, source).map_err(download)?)
            }
            Compression::Unsupported(name) => {
                return Err(registry::Error::BadDocument {
                    registry: registry.to_owned(),
                    what,
                    problem: format!("{name} compression is not supported"),
                }
                .into());
            }
        };
        let mut tmp = TempFile::create(&self.blobs_dir(), 0o444)?;
        let tmp_path = tmp.path().to_owned();
        let mut out = HashingWriterTo::new(BufWriter::with_capacity(1 << 20, tmp.file()));
        let mut buf = vec![0u8; 1 << 20];
        let decode_error = |e: io::Error| -> Error {
            // A read error of the network says so; anything else is the decoder's.
            Error::Download {
                registry: registry.to_owned(),
                what: format!("{what} ({})", compression.name()),
                source: e,
            }
        };
        loop {
            let n = match stage.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(decode_error(e)),
            };
            out.write_all(&buf[..n])
                .map_err(|e| Error::io("writing", &tmp_path, e))?;
        }
        let (writer, uncompressed, _) = out.finish();
        writer
            .into_inner()
            .map_err(|e| Error::io("writing", &tmp_path, e.into_error()))?;
        // The rest of the compressed stream (a gzip trailer's padding) counts for its digest.
        let mut source = stage.into_inner();
        io::copy(&mut source, &mut io::sink()).map_err(download)?;
        let (_, compressed) = source.into_inner().into_inner();
        let (compressed_digest, _) = compressed.finish();
        if compressed_digest != *digest {
            return Err(registry::Error::Mismatch {
                registry: registry.to_owned(),
                what: format!("layer {digest}"),
                expected: *digest,
                actual: compressed_digest,
            }
            .into());
        }
        if uncompressed != *diff_id {
            return Err(registry::Error::Mismatch {
                registry: registry.to_owned(),
                what: format!("layer {digest} uncompressed (diff_id)"),
                expected: *diff_id,
                actual: uncompressed,
            }
            .into());
        }
        tmp.persist(&self.blob_path(diff_id))?;
        Ok(())
    }
}

/// The compressed bytes of a layer download so far, in `<root>/partial/<digest hex>`, locked
/// (`flock`) while a pull uses it: a second pull of the same layer at the same time downloads
/// without one.
struct Partial {
    path: std::path::PathBuf,
    file: Flock<fs::File>,
    /// Bytes kept from an earlier pull.
    kept: u64,
}

impl Partial {
    /// Opens (or creates) the partial file of `digest`; `None` if another pull holds it or it
    /// cannot be used (the layer is then downloaded without one).
    fn open(dir: &std::path::Path, digest: &Digest, size: u64) -> Option<Partial> {
        let path = dir.join(digest.hex());
        let opened = fs::create_dir_all(dir).and_then(|()| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
        });
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                log::debug!("{}: {e}; downloading without it", path.display());
                return None;
            }
        };
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
        let mut kept = file.metadata().map(|m| m.len()).unwrap_or(0);
        if kept > size {
            kept = 0;
        }
        file.set_len(kept).ok()?;
        let mut handle: &fs::File = &file;
        io::Seek::seek(&mut handle, io::SeekFrom::Start(kept)).ok()?;
        Some(Partial { path, file, kept })
    }

    /// Deletes the file (while still holding its lock).
    fn remove(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The registry's bytes of a layer, copied to the partial file as they pass; a read error
/// (the registry, after the client's own retries) is noted in `failed`.
struct Tee<'a, R> {
    inner: R,
    out: Option<(&'a fs::File, &'a std::path::Path)>,
    failed: &'a Cell<bool>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .inner
            .read(buf)
            .inspect_err(|_| self.failed.set(true))?;
        if let Some((mut file, path)) = self.out {
            file.write_all(&buf[..n]).map_err(|e| {
                io::Error::new(e.kind(), format!("writing {}: {e}", path.display()))
            })?;
        }
        Ok(n)
    }
}

/// The source of a layer: plain, or through a decoder.
enum Stage<R: io::BufRead> {
    Plain(R),
    Decode(Decoder<R>),
}

impl<R: io::BufRead> Stage<R> {
    fn into_inner(self) -> R {
        match self {
            Stage::Plain(r) => r,
            Stage::Decode(d) => d.into_inner(),
        }
    }
}

impl<R: io::BufRead> Read for Stage<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stage::Plain(r) => r.read(buf),
            Stage::Decode(d) => d.read(buf),
        }
    }
}

/// The store's hashing writer, under a name that says where it writes.
type HashingWriterTo<W> = super::blobs::HashingWriter<W>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema1_is_refused_by_name() {
        let body = br#"{"schemaVersion":1,"name":"x","tag":"latest","fsLayers":[]}"#;
        match classify("r", "r/x:latest", body, "application/json") {
            Err(registry::Error::Schema1 { .. }) => {}
            Err(e) => panic!("expected schema 1, got {e}"),
            Ok(_) => panic!("expected schema 1"),
        }
    }

    #[test]
    fn indexes_and_manifests_are_told_apart() {
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            classify("r", "w", index, model::MEDIA_INDEX),
            Ok(Kind::Index(_))
        ));
        let m = Manifest::for_layers(&Digest::of_bytes(b"c"), 1, &[]).to_bytes();
        assert!(matches!(classify("r", "w", &m, ""), Ok(Kind::Manifest(_))));
        assert!(classify("r", "w", b"[]", "").is_err());
    }

    #[test]
    fn the_platform_is_chosen_as_mount_chooses_it() {
        let entry = |arch: &str| {
            let mut d =
                Descriptor::new(model::MEDIA_MANIFEST, &Digest::of_bytes(arch.as_bytes()), 1);
            d.platform = Some(Platform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: None,
            });
            d
        };
        let index = Index {
            manifests: vec![entry("amd64"), entry("arm64")],
            ..Index::default()
        };
        let arm = Platform::parse("linux/arm64").expect("platform");
        assert_eq!(
            choose("r", "w", &index, &arm).expect("choose").digest,
            Digest::of_bytes(b"arm64").to_string()
        );
        let err = choose(
            "r",
            "w",
            &index,
            &Platform::parse("linux/s390x").expect("p"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("linux/amd64, linux/arm64"),
            "{err}"
        );
    }
}
