//! `rfs load` and `rfs import`: images from archives and layouts, and one-layer images from
//! flat rootfs tars.
//!
//! Loading opens the SOURCE with [`crate::image::open`], which detects the format, picks the
//! platform, verifies every blob and decompresses compressed layers straight into
//! `blobs/sha256/<diff_id>`, and hands over what the store needs of the SOURCE's metadata, so
//! the SOURCE is read once. What it serves in place (uncompressed layers inside the SOURCE) is
//! copied into the store while being hashed again, so a blob appears only with its right
//! digest. The config is copied byte for byte (the image ID is its digest), and the store
//! writes its own manifest over the uncompressed layers. The names come from the SOURCE's
//! metadata ([`image::Image::names`]): `RepoTags` of a docker archive, `io.containerd.image.name`
//! or a full `org.opencontainers.image.ref.name` of an OCI layout. A bare tag (`latest`, as skopeo
//! writes `oci:DIR:latest`) names no repository; the layout's own name stands in for it,
//! in podman's form for local names: `localhost/<dir or archive name without .tar>:<tag>`.
//! (podman itself reads a bare tag as a repository name: it loads every such archive as
//! `localhost/latest:latest`, each load taking the name from the image loaded before.)

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::blobs::{self, HashingWriter};
use super::{Error, ImageMeta, Reference, Store, Timestamp, cached_index, index_layer, layer_size};
use crate::digest::Digest;
use crate::durable::{TempFile, write_atomic};
use crate::image::compress::{Compression, Decoder, MAGIC_LEN};
use crate::image::{self, OpenOptions, Platform, SourceKind, read_up_to};
use crate::progress::{Progress, ProgressReader};
use crate::tar_index::{Limits, codec};

/// How to load.
#[derive(Default)]
pub struct LoadOptions<'a> {
    /// The platform to pick from a multi-platform index (`os/arch[/variant]`; default: this
    /// machine's).
    pub platform: Option<&'a str>,
    /// Names to give the image besides those the SOURCE carries.
    pub tags: Vec<Reference>,
    /// Progress of hashing, decompressing and copying.
    pub progress: Option<&'a Progress<'a>>,
}

/// What a load or import added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The image ID.
    pub id: Digest,
    /// The names this load gave it: those the source carries and those asked for (as
    /// `docker load` reports them; names the image had before stay).
    pub tags: Vec<Reference>,
    /// Layers that were not in the store before.
    pub new_layers: usize,
}

/// How to import a rootfs tar.
#[derive(Default)]
pub struct ImportOptions<'a> {
    /// The name to give the image.
    pub reference: Option<Reference>,
    /// A commit message (the history comment; default `Imported from <SOURCE>`).
    pub message: Option<String>,
    /// Dockerfile instructions to apply to the config (`CMD ["/bin/sh"]`, `ENV A=b` …).
    pub changes: Vec<String>,
    /// The platform to record (default: this machine's).
    pub platform: Option<&'a str>,
    /// Progress of hashing and copying.
    pub progress: Option<&'a Progress<'a>>,
}

/// The name an OCI layout at `source` goes by when its index names only a tag: the
/// directory's name, or the archive's without `.tar`.
fn layout_name(source: &Path) -> Option<String> {
    // `.` or `dir/..` name no directory until resolved.
    let resolved = fs::canonicalize(source).ok()?;
    let name = resolved.file_name()?.to_string_lossy().into_owned();
    Some(match name.strip_suffix(".tar") {
        Some(stem) if !source.is_dir() => stem.to_owned(),
        _ => name,
    })
}

/// The references the names of `opened` (see [`image::Image::names`]) stand for, without
/// repeats. In an OCI layout at `source`, a bare tag names a repository called after the
/// layout (see [`Reference::for_layout_tag`]).
fn references(opened: &image::Image, source: &Path) -> Vec<Reference> {
    let layout = match opened.kind {
        SourceKind::OciLayoutDir | SourceKind::OciLayoutTar => layout_name(source),
        SourceKind::DockerArchive | SourceKind::RootfsTar => None,
    };
    let mut tags = Vec::new();
    for name in &opened.names {
        let reference = Reference::from_archive(name).or_else(|| {
            layout
                .as_deref()
                .and_then(|l| Reference::for_layout_tag(l, name))
        });
        if let Some(reference) = reference {
            if !tags.contains(&reference) {
                tags.push(reference);
            }
        }
    }
    tags
}

impl Store {
    /// Loads the image in `source` (docker archive, OCI layout directory or archive).
    ///
    /// # Errors
    ///
    /// Any [`image::Error`] (format, digest, platform), [`Error::NotAnImage`] for a flat
    /// rootfs tar, or a store write failure. Nothing is named unless every blob is stored.
    pub fn load(&self, source: &Path, opts: &LoadOptions<'_>) -> Result<Loaded, Error> {
        let _lock = self.lock_shared()?;
        let platform = Platform::parse_or_host(opts.platform)?;
        let opened = image::open(
            source,
            &OpenOptions {
                root: self.root.clone(),
                platform,
                progress: opts.progress,
            },
        )?;
        let Some(config) = &opened.config else {
            return Err(Error::NotAnImage {
                path: source.to_owned(),
            });
        };
        let mut layers = Vec::with_capacity(opened.layers.len());
        let mut sizes = Vec::with_capacity(opened.layers.len());
        let mut new_layers = 0;
        let count = opened.layers.len();
        for (i, blob) in opened.layers.iter().enumerate() {
            let Some(diff_id) = blob.diff_id else {
                return Err(Error::NotAnImage {
                    path: source.to_owned(),
                });
            };
            let dest = self.blob_path(&diff_id);
            let existed = dest.is_file() && blob.file != dest;
            if !dest.is_file() {
                let mut file =
                    File::open(&blob.file).map_err(|e| Error::io("opening", &blob.file, e))?;
                file.seek(SeekFrom::Start(blob.offset))
                    .map_err(|e| Error::io("reading", &blob.file, e))?;
                let what = format!("copying layer {}/{count}", i + 1);
                blobs::ingest(
                    &self.blobs_dir(),
                    &mut file.take(blob.len),
                    Some(&diff_id),
                    &what,
                    blob.len,
                    opts.progress,
                )?;
            }
            if !existed {
                new_layers += 1;
            }
            let size = fs::metadata(&dest)
                .map_err(|e| Error::io("reading", &dest, e))?
                .len();
            let what = format!("indexing layer {}/{count}", i + 1);
            let index = cached_index(&self.root, &diff_id, &dest, &what, opts.progress)?;
            sizes.push(layer_size(&index));
            layers.push((diff_id, size));
        }
        let mut tags = references(&opened, source);
        for t in &opts.tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        let record = self.add_image(
            &config.bytes,
            &layers,
            &tags,
            ImageMeta {
                parent: opened.parent,
                layer_sizes: sizes,
                last_tag_time: None,
                pulled: Vec::new(),
            },
            opts.progress,
        )?;
        debug_assert_eq!(record.id, config.digest);
        Ok(Loaded {
            id: record.id,
            tags,
            new_layers,
        })
    }

    /// Makes a one-layer image of the flat rootfs tar `source` (`-` for stdin), uncompressed
    /// or gzip/zstd-compressed, as `docker import` does.
    ///
    /// # Errors
    ///
    /// The source cannot be read or decompressed, is not a valid tar, a change is invalid, or
    /// the store cannot be written.
    pub fn import(&self, source: &Path, opts: &ImportOptions<'_>) -> Result<Loaded, Error> {
        let _lock = self.lock_shared()?;
        let platform = Platform::parse_or_host(opts.platform)?;
        let (input, total): (Box<dyn Read>, u64) = if source == Path::new("-") {
            (Box::new(io::stdin().lock()), 0)
        } else {
            let file = File::open(source).map_err(|e| Error::io("opening", source, e))?;
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            (Box::new(file), len)
        };
        // Progress counts the bytes read from SOURCE, so a compressed tar's percentage is
        // right although more bytes come out of the decompressor than go in.
        let mut input = ProgressReader::new(input, "importing", total, opts.progress);
        let mut magic = [0u8; MAGIC_LEN];
        let got =
            read_up_to(&mut input, &mut magic).map_err(|e| Error::io("reading", source, e))?;
        let head = io::Cursor::new(magic[..got].to_vec());
        let stream = io::BufReader::new(head.chain(input));
        let compression = Compression::sniff(&magic[..got]);
        let mut reader: Box<dyn Read> = match compression {
            Compression::Gzip | Compression::Zstd => Box::new(
                Decoder::new(compression, stream)
                    .map_err(|e| Error::io("decompressing", source, e))?,
            ),
            // Read as a tar, which the indexer then checks (xz or bzip2 fail there).
            Compression::None | Compression::Unsupported(_) => Box::new(stream),
        };

        let mut tmp = TempFile::create(&self.blobs_dir(), 0o444)?;
        let tmp_path = tmp.path().to_owned();
        let mut writer = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, tmp.file()));
        io::copy(&mut reader, &mut writer).map_err(|e| Error::io("copying", source, e))?;
        let (inner, diff_id, _) = writer.finish();
        inner
            .into_inner()
            .map_err(|e| Error::io("writing", &tmp_path, e.into_error()))?;
        // Check it is a tar (and index it) before it gets a name.
        let index = index_layer(
            &tmp_path,
            &diff_id,
            &Limits::default(),
            "indexing",
            opts.progress,
        )?;
        let dest = self.blob_path(&diff_id);
        let new_layers = usize::from(!dest.is_file());
        if dest.is_file() {
            drop(tmp);
        } else {
            tmp.persist(&dest)?;
        }
        let cache = self.root.join(super::INDEXES_DIR).join(diff_id.hex());
        if let Err(e) = write_atomic(&cache, &codec::encode(&index), 0o644) {
            log::warn!("{e}: layer index not cached");
        }
        let blob_size = fs::metadata(&dest)
            .map_err(|e| Error::io("reading", &dest, e))?
            .len();

        let created = Timestamp::now_or_source_date_epoch().to_rfc3339_nano();
        let comment = opts.message.clone().unwrap_or_else(|| {
            let from = if source == Path::new("-") {
                "-".to_owned()
            } else {
                source.display().to_string()
            };
            format!("Imported from {from}")
        });
        let mut container_config = serde_json::json!({});
        super::apply_changes(&mut container_config, &opts.changes)?;
        let mut config = serde_json::json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "created": created,
            "comment": comment,
            "config": container_config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
            "history": [{"created": created, "comment": comment}],
        });
        if let Some(variant) = &platform.variant {
            config["variant"] = serde_json::Value::String(variant.clone());
        }
        let config_bytes = serde_json::to_vec(&config)
            .map_err(|e| Error::io("encoding", "image config", io::Error::other(e)))?;
        let tags: Vec<Reference> = opts.reference.iter().cloned().collect();
        let record = self.add_image(
            &config_bytes,
            &[(diff_id, blob_size)],
            &tags,
            ImageMeta {
                parent: None,
                layer_sizes: vec![layer_size(&index)],
                last_tag_time: None,
                pulled: Vec::new(),
            },
            opts.progress,
        )?;
        Ok(Loaded {
            id: record.id,
            tags,
            new_layers,
        })
    }
}
