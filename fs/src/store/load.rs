//! `rfs load` and `rfs import`: images from archives and layouts, and one-layer images from
//! flat rootfs tars.
//!
//! Loading opens the SOURCE with [`crate::image::open`], which detects the format, picks the
//! platform, verifies every blob and decompresses compressed layers straight into
//! `blobs/sha256/<diff_id>`. What it serves in place (uncompressed layers inside the SOURCE) is
//! copied into the store while being hashed again, so a blob appears only with its right
//! digest. The config is copied byte for byte (the image ID is its digest), and the store
//! writes its own manifest over the uncompressed layers. The names come from the SOURCE's
//! metadata: `RepoTags` of a docker archive, `io.containerd.image.name` or a full
//! `org.opencontainers.image.ref.name` of an OCI layout. A bare tag (`latest`, as skopeo
//! writes `oci:DIR:latest`) names no repository; the layout's own name stands in for it,
//! in podman's form for local names: `localhost/<dir or archive name without .tar>:<tag>`.
//! (podman itself reads a bare tag as a repository name: it loads every such archive as
//! `localhost/latest:latest`, each load taking the name from the image loaded before.)

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::blobs::{self, HashingWriter};
use super::oci::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Index};
use super::{Error, ImageMeta, Reference, Store, Timestamp, cached_index, index_layer, layer_size};
use crate::digest::Digest;
use crate::durable::{TempFile, write_atomic};
use crate::image::{self, MAX_METADATA_BYTES, OpenOptions, Platform};
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

/// Names and raw config bytes of the image a SOURCE holds.
struct SourceMeta {
    config: Vec<u8>,
    tags: Vec<Reference>,
    parent: Option<Digest>,
}

/// One entry of a docker archive's `manifest.json`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    parent: Option<String>,
}

/// The small members of a tar archive, by normalised name, and a reader for them.
struct TarMeta {
    path: PathBuf,
    file: File,
    /// name → (data offset, size).
    members: HashMap<String, (u64, u64)>,
}

impl TarMeta {
    /// Scans `path`'s headers (member data is skipped with seeks).
    fn scan(path: &Path) -> Result<TarMeta, Error> {
        let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
        let mut archive = tar::Archive::new(
            file.try_clone()
                .map_err(|e| Error::io("opening", path, e))?,
        );
        let mut members = HashMap::new();
        let entries = archive
            .entries_with_seek()
            .map_err(|e| Error::io("reading", path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("reading", path, e))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = name
                .trim_start_matches("./")
                .trim_start_matches('/')
                .to_owned();
            members.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(TarMeta {
            path: path.to_owned(),
            file,
            members,
        })
    }

    /// The member `name`, if present and small enough to be metadata.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some(&(offset, size)) = self.members.get(name) else {
            return Ok(None);
        };
        if size > MAX_METADATA_BYTES {
            return Err(Error::TooLarge {
                path: self.path.join(name),
                limit: MAX_METADATA_BYTES,
            });
        }
        let mut buf = vec![0u8; size as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| Error::io("reading", self.path.join(name), e))?;
        Ok(Some(buf))
    }
}

/// Reads a small file of a layout directory.
fn read_small(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match File::open(path) {
        Ok(f) => {
            let mut bytes = Vec::new();
            f.take(MAX_METADATA_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io("reading", path, e))?;
            if bytes.len() as u64 > MAX_METADATA_BYTES {
                return Err(Error::TooLarge {
                    path: path.to_owned(),
                    limit: MAX_METADATA_BYTES,
                });
            }
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
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

/// The names an OCI index gives the image whose manifest is `manifest` (an index with one
/// entry names whatever that entry leads to). A bare tag names a repository called after
/// `layout` (see [`Reference::for_layout_tag`]).
fn oci_tags(
    index_bytes: &[u8],
    manifest: Option<&Digest>,
    path: &Path,
    layout: Option<&str>,
) -> Result<Vec<Reference>, Error> {
    let index: Index = serde_json::from_slice(index_bytes).map_err(|source| Error::Json {
        path: path.to_owned(),
        what: "image index",
        source,
    })?;
    let single = index.manifests.len() == 1;
    let mut tags = Vec::new();
    for entry in &index.manifests {
        if !single && entry.digest().as_ref() != manifest {
            continue;
        }
        let name = entry
            .annotations
            .get(ANNOTATION_IMAGE_NAME)
            .or_else(|| entry.annotations.get(ANNOTATION_REF_NAME));
        let reference = name.and_then(|n| {
            Reference::from_archive(n)
                .or_else(|| layout.and_then(|l| Reference::for_layout_tag(l, n)))
        });
        if let Some(reference) = reference {
            if !tags.contains(&reference) {
                tags.push(reference);
            }
        }
    }
    Ok(tags)
}

/// Reads the config bytes and names of the image `image::open` chose from `source`.
fn source_meta(source: &Path, opened: &image::Image, config: &Digest) -> Result<SourceMeta, Error> {
    let blob_name = format!("blobs/sha256/{}", config.hex());
    let checked = |bytes: Option<Vec<u8>>, at: PathBuf| -> Result<Vec<u8>, Error> {
        let bytes = bytes.ok_or_else(|| Error::MissingBlob {
            digest: *config,
            path: at.clone(),
        })?;
        let actual = Digest::of_bytes(&bytes);
        if actual != *config {
            return Err(Error::Mismatch {
                what: format!("config {}", at.display()),
                expected: *config,
                actual,
            });
        }
        Ok(bytes)
    };
    if source.is_dir() {
        let bytes = read_small(&source.join(&blob_name))?;
        let config = checked(bytes, source.join(&blob_name))?;
        let index_path = source.join("index.json");
        let tags = match read_small(&index_path)? {
            Some(b) => oci_tags(
                &b,
                opened.manifest_digest.as_ref(),
                &index_path,
                layout_name(source).as_deref(),
            )?,
            None => Vec::new(),
        };
        return Ok(SourceMeta {
            config,
            tags,
            parent: None,
        });
    }
    let tar = TarMeta::scan(source)?;
    if let Some(manifest) = tar.read("manifest.json")? {
        let at = source.join("manifest.json");
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(&manifest).map_err(|source| Error::Json {
                path: at.clone(),
                what: "docker manifest.json",
                source,
            })?;
        // `image::open` opens the first image of a docker archive.
        let Some(entry) = entries.into_iter().next() else {
            return Err(Error::BadImage {
                id: *config,
                problem: "manifest.json lists no image".into(),
            });
        };
        let name = entry.config.trim_start_matches("./").to_owned();
        let bytes = tar.read(&name)?;
        let config = checked(bytes, source.join(&name))?;
        let tags = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| Reference::from_archive(t))
            .collect();
        let parent = entry.parent.as_deref().and_then(|p| Digest::parse(p).ok());
        return Ok(SourceMeta {
            config,
            tags,
            parent,
        });
    }
    let bytes = tar.read(&blob_name)?;
    let config = checked(bytes, source.join(&blob_name))?;
    let tags = match tar.read("index.json")? {
        Some(b) => oci_tags(
            &b,
            opened.manifest_digest.as_ref(),
            &source.join("index.json"),
            layout_name(source).as_deref(),
        )?,
        None => Vec::new(),
    };
    Ok(SourceMeta {
        config,
        tags,
        parent: None,
    })
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
        let platform = match opts.platform {
            Some(p) => Platform::parse(p)?,
            None => Platform::host(),
        };
        let opened = image::open(
            source,
            &OpenOptions {
                root: self.root.clone(),
                platform,
                progress: opts.progress,
            },
        )?;
        let Some(config_digest) = opened.config_digest else {
            return Err(Error::NotAnImage {
                path: source.to_owned(),
            });
        };
        let meta = source_meta(source, &opened, &config_digest)?;
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
        let mut tags = meta.tags;
        for t in &opts.tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        let record = self.add_image(
            &meta.config,
            &layers,
            &tags,
            ImageMeta {
                parent: meta.parent,
                layer_sizes: sizes,
                last_tag_time: None,
            },
            opts.progress,
        )?;
        debug_assert_eq!(record.id, config_digest);
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
        let platform = match opts.platform {
            Some(p) => Platform::parse(p)?,
            None => Platform::host(),
        };
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
        let mut magic = [0u8; 4];
        let mut got = 0;
        while got < magic.len() {
            match input.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading", source, e)),
            }
        }
        let head = io::Cursor::new(magic[..got].to_vec());
        let stream = head.chain(input);
        let mut reader: Box<dyn Read> = if magic[..got].starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(stream))
        } else if magic[..got].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(
                zstd::stream::read::Decoder::new(stream)
                    .map_err(|e| Error::io("decompressing", source, e))?,
            )
        } else {
            Box::new(stream)
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
