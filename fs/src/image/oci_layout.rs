//! An OCI image layout (opencontainers/image-spec `image-layout.md`), as a directory or packed in
//! a tar archive: `oci-layout`, `index.json`, and content-addressed `blobs/sha256/<hex>`.
//!
//! `index.json` is followed through nested image indexes (Docker manifest lists too) to one image
//! manifest, chosen by platform: the entry whose `platform` matches [`OpenOptions::platform`]
//! (best variant first); an index with a single entry and no `platform` is taken as it is; an
//! entry without `platform` among several is judged by its config's `os`/`architecture`. The
//! names of the `index.json` entries that lead to the chosen manifest are handed over with the
//! image ([`Image::names`](super::Image::names)); they do not choose it.
//!
//! Every blob read (nested index, manifest, config, layers) must have its descriptor's size and
//! sha256; each layer's uncompressed content must have `config.rootfs.diff_ids[i]`. Media types
//! must be OCI or Docker schema 2 types for their role; an unknown layer media type is an error
//! naming it (rfs would not know how to apply it), while the encoding itself is read from the
//! blob's magic bytes.
//!
//! [`OpenOptions::platform`]: super::OpenOptions::platform

use std::path::{Path, PathBuf};

use super::blob::{Extent, RootDir};
use super::model::{
    CONFIG_TYPES, Descriptor, INDEX_JSON, INDEX_TYPES, Index, LAYER_TYPES, MANIFEST_TYPES,
    Manifest, OCI_LAYOUT_FILE,
};
use super::tar_members::TarMembers;
use super::{Error, Image, LayerSource, Location, Platform, SourceKind, read_config};
use crate::digest::Digest;

/// How deep image indexes may nest (real layouts use one or two levels).
const MAX_INDEX_DEPTH: usize = 8;

/// What a blob named in an index turned out to be.
enum IndexEntry {
    Index(Index),
    Manifest(Manifest),
}

/// Where the layout's files are.
enum Layout<'a> {
    Dir(&'a Path),
    Tar(&'a TarMembers),
}

impl Layout<'_> {
    fn kind(&self) -> SourceKind {
        match self {
            Layout::Dir(_) => SourceKind::OciLayoutDir,
            Layout::Tar(_) => SourceKind::OciLayoutTar,
        }
    }

    /// A location naming the layout file `relative` (`index.json`, `blobs/sha256/<hex>`).
    fn location(&self, relative: &str) -> Location {
        match self {
            Layout::Dir(dir) => Location::file(dir.join(relative)),
            Layout::Tar(members) => members.location(relative),
        }
    }

    /// Where the layout file `relative` is, or `None` if it does not exist.
    fn find(&self, relative: &str, referrer: &Location) -> Result<Option<Extent>, Error> {
        match self {
            Layout::Dir(dir) => Extent::whole_file(&dir.join(relative)),
            Layout::Tar(members) if members.contains(relative) => {
                members.extent(relative, referrer).map(Some)
            }
            Layout::Tar(_) => Ok(None),
        }
    }

    /// Where the blob `digest`, named by a descriptor in `referrer`, is.
    fn blob(&self, digest: &Digest, referrer: &Location) -> Result<Extent, Error> {
        let relative = format!("blobs/sha256/{}", digest.hex());
        self.find(&relative, referrer)?
            .ok_or_else(|| Error::MissingBlob {
                location: referrer.clone(),
                digest: *digest,
                missing: PathBuf::from(relative),
            })
    }

    /// Reads a metadata blob (index, manifest, config), checking its size and digest.
    fn read_blob(
        &self,
        descriptor: &Descriptor,
        referrer: &Location,
        what: &str,
    ) -> Result<(Vec<u8>, Digest, Location), Error> {
        let digest = parse_digest(&descriptor.digest, referrer)?;
        let extent = self.blob(&digest, referrer)?;
        if extent.len != descriptor.size {
            return Err(Error::SizeMismatch {
                location: extent.location,
                what: what.to_owned(),
                expected: descriptor.size,
                actual: extent.len,
            });
        }
        let bytes = extent.read_metadata()?;
        let actual = Digest::of_bytes(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                location: extent.location,
                what: what.to_owned(),
                expected: digest,
                actual,
            });
        }
        Ok((bytes, digest, extent.location))
    }
}

/// Opens the OCI layout directory `dir` (canonical path).
pub(super) fn open_dir(dir: &Path, root_dir: &RootDir<'_>) -> Result<Image, Error> {
    if !dir.join(OCI_LAYOUT_FILE).is_file() {
        log::warn!(
            "{}: no oci-layout file; reading it as an OCI layout anyway",
            dir.display()
        );
    }
    open(&Layout::Dir(dir), root_dir)
}

/// Opens the OCI layout archive whose members are `members`.
pub(super) fn open_tar(members: &TarMembers, root_dir: &RootDir<'_>) -> Result<Image, Error> {
    open(&Layout::Tar(members), root_dir)
}

fn open(layout: &Layout<'_>, root_dir: &RootDir<'_>) -> Result<Image, Error> {
    let index_location = layout.location(INDEX_JSON);
    let index_bytes = layout
        .find(INDEX_JSON, &index_location)?
        .ok_or_else(|| Error::Read {
            location: index_location.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        })?
        .read_metadata()?;
    let index: Index = parse_json(&index_bytes, &index_location, "image index")?;
    let wanted = &root_dir.options().platform;
    let named = named_entries(&index);
    let (manifest, manifest_digest, manifest_location) =
        choose_manifest(layout, index, index_location, wanted, 0)?;
    let names = named
        .into_iter()
        .filter(|(digest, _)| match digest {
            // The only entry names whatever it leads to.
            None => true,
            Some(digest) => *digest == manifest_digest,
        })
        .map(|(_, name)| name)
        .collect();

    if let Some(media_type) = &manifest.config.media_type {
        if !CONFIG_TYPES.contains(&media_type.as_str()) {
            return Err(Error::UnknownMediaType {
                location: manifest_location,
                role: "config",
                media_type: media_type.clone(),
            });
        }
    }
    let (config_bytes, _, config_location) =
        layout.read_blob(&manifest.config, &manifest_location, "config")?;
    let (config, diff_ids) = read_config(config_bytes, &config_location)?;
    if manifest.layers.len() != diff_ids.len() {
        return Err(Error::LayerCountMismatch {
            location: manifest_location,
            layers: manifest.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }

    // Check every descriptor before any (slow) layer work.
    let mut sources = Vec::with_capacity(manifest.layers.len());
    for (index, (descriptor, diff_id)) in manifest.layers.iter().zip(&diff_ids).enumerate() {
        let media_type = descriptor.media_type.as_deref().unwrap_or("(none)");
        if !LAYER_TYPES.contains(&media_type) {
            return Err(Error::UnknownMediaType {
                location: manifest_location,
                role: "layer",
                media_type: media_type.to_owned(),
            });
        }
        let digest = parse_digest(&descriptor.digest, &manifest_location)?;
        sources.push(LayerSource {
            extent: layout.blob(&digest, &manifest_location)?,
            descriptor: Some((digest, descriptor.size)),
            diff_id: *diff_id,
            index,
            count: manifest.layers.len(),
            root_dir,
        });
    }
    let layers = sources
        .into_iter()
        .map(LayerSource::prepare)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Image {
        kind: layout.kind(),
        layers,
        config: Some(config),
        manifest_digest: Some(manifest_digest),
        names,
        parent: None,
    })
}

/// The names `index.json` gives its entries ([`Descriptor::image_name`]), each with the
/// entry's digest; with `None` for the digest if the index has a single entry, which names
/// whatever it leads to.
fn named_entries(index: &Index) -> Vec<(Option<Digest>, String)> {
    let single = index.manifests.len() == 1;
    index
        .manifests
        .iter()
        .filter_map(|entry| {
            let name = entry.image_name()?.to_owned();
            if single {
                return Some((None, name));
            }
            Some((Some(entry.digest().ok()?), name))
        })
        .collect()
}

/// Follows `index` (found at `location`, `depth` levels below `index.json`) down to the image
/// manifest for `wanted`.
fn choose_manifest(
    layout: &Layout<'_>,
    index: Index,
    location: Location,
    wanted: &Platform,
    depth: usize,
) -> Result<(Manifest, Digest, Location), Error> {
    if depth > MAX_INDEX_DEPTH {
        return Err(Error::IndexTooDeep {
            location,
            limit: MAX_INDEX_DEPTH,
        });
    }
    let chosen = match index.manifests.as_slice() {
        [] => return Err(Error::NoImage { location }),
        [only] if only.platform.is_none() => only,
        entries => choose_by_platform(layout, entries, &location, wanted)?,
    };
    let (bytes, digest, blob_location) = layout.read_blob(chosen, &location, "manifest")?;
    match classify(chosen, &bytes, &blob_location)? {
        IndexEntry::Manifest(manifest) => Ok((manifest, digest, blob_location)),
        IndexEntry::Index(nested) => {
            choose_manifest(layout, nested, blob_location, wanted, depth + 1)
        }
    }
}

/// The entry of `entries` that best matches `wanted`.
fn choose_by_platform<'e>(
    layout: &Layout<'_>,
    entries: &'e [Descriptor],
    location: &Location,
    wanted: &Platform,
) -> Result<&'e Descriptor, Error> {
    let best = entries
        .iter()
        .filter_map(|entry| {
            let rank = wanted.rank(entry.platform.as_ref()?)?;
            Some((rank, entry))
        })
        .min_by_key(|(rank, _)| *rank);
    if let Some((_, entry)) = best {
        return Ok(entry);
    }
    // Entries without a platform: a manifest's config says what it is built for.
    for entry in entries.iter().filter(|entry| entry.platform.is_none()) {
        if config_platform(layout, entry, location)?.is_some_and(|offered| wanted.matches(&offered))
        {
            return Ok(entry);
        }
    }
    let available = entries
        .iter()
        .map(|entry| match &entry.platform {
            Some(platform) => platform.to_string(),
            None => "unspecified".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Err(Error::NoMatchingPlatform {
        location: location.clone(),
        wanted: Box::new(wanted.clone()),
        available,
    })
}

/// The platform in the config of the manifest `entry`, or `None` if `entry` is not a manifest.
fn config_platform(
    layout: &Layout<'_>,
    entry: &Descriptor,
    location: &Location,
) -> Result<Option<Platform>, Error> {
    let (bytes, _, manifest_location) = layout.read_blob(entry, location, "manifest")?;
    let IndexEntry::Manifest(manifest) = classify(entry, &bytes, &manifest_location)? else {
        return Ok(None);
    };
    let (config_bytes, _, config_location) =
        layout.read_blob(&manifest.config, &manifest_location, "config")?;
    // The config's top-level `os`, `architecture` and `variant` have the index's field names.
    let platform: Platform = parse_json(&config_bytes, &config_location, "image config")?;
    Ok(Some(platform))
}

/// Parses the blob `entry` names as an index or a manifest, by the descriptor's media type or,
/// when it has none, by the blob's own `mediaType` or shape.
fn classify(entry: &Descriptor, bytes: &[u8], location: &Location) -> Result<IndexEntry, Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    let media_type = match &entry.media_type {
        Some(media_type) => media_type.clone(),
        None => {
            let probe: Probe = parse_json(bytes, location, "manifest")?;
            match probe.media_type {
                Some(media_type) => media_type,
                None if probe.manifests.is_some() => INDEX_TYPES[0].to_owned(),
                None => MANIFEST_TYPES[0].to_owned(),
            }
        }
    };
    if INDEX_TYPES.contains(&media_type.as_str()) {
        Ok(IndexEntry::Index(parse_json(
            bytes,
            location,
            "image index",
        )?))
    } else if MANIFEST_TYPES.contains(&media_type.as_str()) {
        Ok(IndexEntry::Manifest(parse_json(
            bytes,
            location,
            "image manifest",
        )?))
    } else {
        Err(Error::UnknownMediaType {
            location: location.clone(),
            role: "manifest",
            media_type,
        })
    }
}

/// Parses a JSON document.
fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    location: &Location,
    what: &'static str,
) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        location: location.clone(),
        what,
        source,
    })
}

/// Parses a descriptor's digest.
fn parse_digest(text: &str, location: &Location) -> Result<Digest, Error> {
    Digest::parse(text).map_err(|source| Error::BadDigest {
        location: location.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::image::{OpenOptions, open as open_image};

    /// A small OCI layout directory builder.
    struct LayoutDir {
        dir: PathBuf,
    }

    impl LayoutDir {
        fn new(dir: &Path) -> LayoutDir {
            fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
            fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
            LayoutDir {
                dir: dir.to_owned(),
            }
        }

        /// Stores a blob and returns its descriptor JSON.
        fn blob(&self, media_type: &str, bytes: &[u8]) -> serde_json::Value {
            let digest = Digest::of_bytes(bytes);
            fs::write(self.dir.join("blobs/sha256").join(digest.hex()), bytes).expect("write");
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
        }

        /// Stores a one-layer image for `platform` and returns its manifest descriptor.
        fn image(&self, layer_media_type: &str, layer: &[u8], arch: &str) -> serde_json::Value {
            let config = serde_json::json!({
                "os": "linux", "architecture": arch,
                "rootfs": {"type": "layers", "diff_ids": [Digest::of_bytes(layer)]},
            });
            let config = self.blob(CONFIG_TYPES[0], config.to_string().as_bytes());
            let layer = self.blob(layer_media_type, layer);
            let manifest = serde_json::json!({
                "schemaVersion": 2, "mediaType": MANIFEST_TYPES[0],
                "config": config, "layers": [layer],
            });
            self.blob(MANIFEST_TYPES[0], manifest.to_string().as_bytes())
        }

        fn index(&self, manifests: &[serde_json::Value]) {
            let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
            fs::write(self.dir.join(INDEX_JSON), index.to_string()).expect("write");
        }
    }

    fn layer_tar(content: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "ARCH.txt", content)
            .expect("append");
        builder.into_inner().expect("finish")
    }

    fn with_platform(mut descriptor: serde_json::Value, arch: &str) -> serde_json::Value {
        descriptor["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        descriptor
    }

    fn options(root: &Path, platform: &str) -> OpenOptions<'static> {
        OpenOptions {
            platform: Platform::parse(platform).expect("platform"),
            ..OpenOptions::new(root)
        }
    }

    #[test]
    fn an_uncompressed_single_image_layout_is_served_from_its_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = LayoutDir::new(&dir.path().join("oci"));
        let layer = layer_tar(b"amd64");
        let manifest = layout.image(LAYER_TYPES[0], &layer, "amd64");
        layout.index(&[manifest]);
        let image = open_image(
            &layout.dir,
            &options(&dir.path().join("root"), "linux/amd64"),
        )
        .expect("open");
        assert_eq!(image.kind, SourceKind::OciLayoutDir);
        let only = &image.layers[0];
        assert_eq!(only.diff_id, Some(Digest::of_bytes(&layer)));
        assert!(
            only.file
                .ends_with(format!("blobs/sha256/{}", Digest::of_bytes(&layer).hex()))
        );
        assert!(image.manifest_digest.is_some());
    }

    #[test]
    fn the_platform_chooses_among_entries_with_and_without_a_platform_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = LayoutDir::new(&dir.path().join("oci"));
        let amd = layout.image(LAYER_TYPES[0], &layer_tar(b"amd64"), "amd64");
        let arm = layout.image(LAYER_TYPES[0], &layer_tar(b"arm64"), "arm64");
        let s390x = layout.image(LAYER_TYPES[0], &layer_tar(b"s390x"), "s390x");
        layout.index(&[
            with_platform(amd, "amd64"),
            with_platform(arm, "arm64"),
            s390x,
        ]);
        let root = dir.path().join("root");
        for arch in ["amd64", "arm64", "s390x"] {
            let image =
                open_image(&layout.dir, &options(&root, &format!("linux/{arch}"))).expect(arch);
            assert_eq!(
                image.layers[0].diff_id,
                Some(Digest::of_bytes(&layer_tar(arch.as_bytes())))
            );
        }
        match open_image(&layout.dir, &options(&root, "linux/riscv64")) {
            Err(error @ Error::NoMatchingPlatform { .. }) => {
                let message = error.to_string();
                assert!(message.contains("linux/arm64"), "{message}");
                assert!(message.contains("unspecified"), "{message}");
            }
            other => panic!("expected NoMatchingPlatform, got {other:?}"),
        }
    }

    #[test]
    fn the_names_of_the_entries_leading_to_the_chosen_manifest_are_handed_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = LayoutDir::new(&dir.path().join("oci"));
        let named = |mut descriptor: serde_json::Value, annotations: serde_json::Value| {
            descriptor["annotations"] = annotations;
            descriptor
        };
        let amd = layout.image(LAYER_TYPES[0], &layer_tar(b"amd64"), "amd64");
        let arm = layout.image(LAYER_TYPES[0], &layer_tar(b"arm64"), "arm64");
        layout.index(&[
            named(
                with_platform(amd.clone(), "amd64"),
                serde_json::json!({"org.opencontainers.image.ref.name": "1.0"}),
            ),
            named(
                with_platform(amd, "amd64"),
                serde_json::json!({
                    "org.opencontainers.image.ref.name": "latest",
                    "io.containerd.image.name": "docker.io/library/x:latest",
                }),
            ),
            named(
                with_platform(arm, "arm64"),
                serde_json::json!({"org.opencontainers.image.ref.name": "arm"}),
            ),
        ]);
        let root = dir.path().join("root");
        let image = open_image(&layout.dir, &options(&root, "linux/amd64")).expect("open");
        assert_eq!(image.names, ["1.0", "docker.io/library/x:latest"]);
        // A single entry names whatever it leads to, even through a nested index.
        let only = layout.image(LAYER_TYPES[0], &layer_tar(b"only"), "amd64");
        let nested = serde_json::json!({"schemaVersion": 2, "manifests": [only]});
        let nested = layout.blob(INDEX_TYPES[0], nested.to_string().as_bytes());
        layout.index(&[named(
            nested,
            serde_json::json!({"org.opencontainers.image.ref.name": "solo"}),
        )]);
        let image = open_image(&layout.dir, &options(&root, "linux/amd64")).expect("open");
        assert_eq!(image.names, ["solo"]);
    }

    #[test]
    fn unknown_layer_media_types_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = LayoutDir::new(&dir.path().join("oci"));
        let manifest = layout.image("application/vnd.example.weird", &layer_tar(b"x"), "amd64");
        layout.index(&[manifest]);
        match open_image(
            &layout.dir,
            &options(&dir.path().join("root"), "linux/amd64"),
        ) {
            Err(Error::UnknownMediaType {
                media_type, role, ..
            }) => {
                assert_eq!(media_type, "application/vnd.example.weird");
                assert_eq!(role, "layer");
            }
            other => panic!("expected UnknownMediaType, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_blob_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = LayoutDir::new(&dir.path().join("oci"));
        let layer = layer_tar(b"x");
        let manifest = layout.image(LAYER_TYPES[0], &layer, "amd64");
        layout.index(&[manifest]);
        let missing = Digest::of_bytes(&layer);
        fs::remove_file(layout.dir.join("blobs/sha256").join(missing.hex())).expect("rm");
        match open_image(
            &layout.dir,
            &options(&dir.path().join("root"), "linux/amd64"),
        ) {
            Err(Error::MissingBlob { digest, .. }) => assert_eq!(digest, missing),
            other => panic!("expected MissingBlob, got {other:?}"),
        }
    }

    #[test]
    fn indexes_nested_too_deep_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = LayoutDir::new(&dir.path().join("oci"));
        let mut entry = layout.image(LAYER_TYPES[0], &layer_tar(b"x"), "amd64");
        for _ in 0..=MAX_INDEX_DEPTH + 1 {
            let index = serde_json::json!({"schemaVersion": 2, "manifests": [entry]});
            entry = layout.blob(INDEX_TYPES[0], index.to_string().as_bytes());
        }
        layout.index(&[entry]);
        assert!(matches!(
            open_image(
                &layout.dir,
                &options(&dir.path().join("root"), "linux/amd64")
            ),
            Err(Error::IndexTooDeep { .. })
        ));
    }

    #[test]
    fn descriptor_sizes_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = LayoutDir::new(&dir.path().join("oci"));
        let mut manifest = layout.image(LAYER_TYPES[0], &layer_tar(b"x"), "amd64");
        manifest["size"] = serde_json::json!(1);
        layout.index(&[manifest]);
        assert!(matches!(
            open_image(
                &layout.dir,
                &options(&dir.path().join("root"), "linux/amd64")
            ),
            Err(Error::SizeMismatch { expected: 1, .. })
        ));
    }
}
