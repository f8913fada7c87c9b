//! A `docker save` archive (also skopeo's `docker-archive:` and `podman save --format
//! docker-archive`): `manifest.json` lists, per image, a `Config` member and the `Layers`
//! members, bottom to top.
//!
//! ```json
//! [{"Config": "<hex>.json", "RepoTags": ["busybox:latest"], "Layers": ["<id>/layer.tar", …]}]
//! ```
//!
//! Layer members are usually uncompressed tars and are served in place; skopeo writes them as
//! `<diff_id>.tar` with `<id>/layer.tar` symlinks, Docker 25+ as `blobs/sha256/<hex>`, and a
//! hand-made archive may hold compressed ones, which are decompressed into the store. There are
//! no descriptors, so integrity rests on the config: each layer must hash to
//! `config.rootfs.diff_ids[i]`, and a config named by its digest (`<hex>.json`,
//! `blobs/sha256/<hex>`) must hash to that name. Only the first image of a multi-image archive
//! is opened; its `RepoTags` and `Parent` are handed over with it.

use super::blob::RootDir;
use super::model::{DOCKER_MANIFEST_JSON, DockerManifestEntry};
use super::tar_members::TarMembers;
use super::{Error, Image, LayerSource, SourceKind, read_config};
use crate::digest::Digest;

/// Opens the docker archive whose members are `members`.
pub(super) fn open(members: &TarMembers, root_dir: &RootDir<'_>) -> Result<Image, Error> {
    let manifest_location = members.location(DOCKER_MANIFEST_JSON);
    let manifest_bytes = members
        .extent(DOCKER_MANIFEST_JSON, &manifest_location)?
        .read_metadata()?;
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(&manifest_bytes).map_err(|source| Error::Json {
            location: manifest_location.clone(),
            what: "docker manifest.json",
            source,
        })?;
    let count = entries.len();
    let Some(entry) = entries.into_iter().next() else {
        return Err(Error::NoImage {
            location: manifest_location,
        });
    };
    if count > 1 {
        log::info!("{manifest_location}: {count} images; opening the first");
    }

    let config_extent = members.extent(&entry.config, &manifest_location)?;
    let config_bytes = config_extent.read_metadata()?;
    let (config, diff_ids) = read_config(config_bytes, &config_extent.location)?;
    if let Some(named) = digest_in_name(&entry.config) {
        if named != config.digest {
            return Err(Error::DigestMismatch {
                location: config_extent.location,
                what: "config".to_owned(),
                expected: named,
                actual: config.digest,
            });
        }
    }
    if entry.layers.len() != diff_ids.len() {
        return Err(Error::LayerCountMismatch {
            location: manifest_location,
            layers: entry.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }

    let mut layers = Vec::with_capacity(entry.layers.len());
    for (index, (member, diff_id)) in entry.layers.iter().zip(&diff_ids).enumerate() {
        let layer = LayerSource {
            extent: members.extent(member, &manifest_location)?,
            descriptor: None,
            diff_id: *diff_id,
            index,
            count: entry.layers.len(),
            root_dir,
        };
        layers.push(layer.prepare()?);
    }
    Ok(Image {
        kind: SourceKind::DockerArchive,
        layers,
        config: Some(config),
        manifest_digest: None,
        names: entry.repo_tags.unwrap_or_default(),
        // A Parent that is not a sha256 digest names nothing the store could hold.
        parent: entry.parent.as_deref().and_then(|p| Digest::parse(p).ok()),
    })
}

/// The digest a member is named after: `<64 hex>.json` (docker save) or `blobs/sha256/<64 hex>`
/// (Docker 25+).
fn digest_in_name(member: &str) -> Option<Digest> {
    let file_name = member.rsplit('/').next()?;
    let hex = file_name.strip_suffix(".json").unwrap_or(file_name);
    Digest::from_hex(hex).ok()
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::path::Path;

    use super::*;
    use crate::image::{OpenOptions, open};

    /// Appends a regular member.
    fn add(builder: &mut tar::Builder<File>, name: &str, data: &[u8]) {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, data)
            .expect("append");
    }

    /// A one-file layer tar.
    fn layer_tar(file_name: &str, content: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, file_name, content)
            .expect("append");
        builder.into_inner().expect("finish")
    }

    /// Writes a docker archive with `layers` (name, bytes) and a config listing `diff_ids`;
    /// the manifest names `manifest_layers`.
    fn write_archive(
        path: &Path,
        layers: &[(&str, &[u8])],
        diff_ids: &[Digest],
        manifest_layers: &[&str],
    ) {
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_bytes = serde_json::to_vec(&config).expect("json");
        let config_name = format!("{}.json", Digest::of_bytes(&config_bytes).hex());
        let manifest = serde_json::json!([
            {"Config": config_name, "RepoTags": ["test:latest"], "Layers": manifest_layers}
        ]);
        let mut builder = tar::Builder::new(File::create(path).expect("create"));
        for (name, bytes) in layers {
            add(&mut builder, name, bytes);
        }
        add(&mut builder, &config_name, &config_bytes);
        add(
            &mut builder,
            "manifest.json",
            &serde_json::to_vec(&manifest).expect("json"),
        );
        builder.into_inner().expect("finish");
    }

    #[test]
    fn uncompressed_layers_are_served_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("image.tar");
        let base = layer_tar("etc/os-release", b"base");
        let top = layer_tar("etc/motd", b"top");
        let ids = [Digest::of_bytes(&base), Digest::of_bytes(&top)];
        write_archive(
            &path,
            &[("a/layer.tar", &base), ("b/layer.tar", &top)],
            &ids,
            &["a/layer.tar", "b/layer.tar"],
        );
        let root = dir.path().join("root");
        let image = open(&path, &OpenOptions::new(&root)).expect("open");
        assert_eq!(image.kind, SourceKind::DockerArchive);
        assert_eq!(image.layers.len(), 2);
        for (layer, (bytes, id)) in image.layers.iter().zip([(&base, ids[0]), (&top, ids[1])]) {
            assert_eq!(layer.diff_id, Some(id));
            assert_eq!(layer.len, bytes.len() as u64);
            assert_eq!(layer.file, std::fs::canonicalize(&path).expect("canonical"));
        }
        assert!(!root.join("blobs").exists(), "nothing decompressed");
        assert!(image.manifest_digest.is_none());
        assert_eq!(image.names, ["test:latest"], "RepoTags are handed over");
        assert_eq!(image.parent, None);
    }

    #[test]
    fn a_missing_layer_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("image.tar");
        let base = layer_tar("etc/os-release", b"base");
        write_archive(
            &path,
            &[("a/layer.tar", &base)],
            &[Digest::of_bytes(&base)],
            &["gone/layer.tar"],
        );
        match open(&path, &OpenOptions::new(dir.path().join("root"))) {
            Err(error @ Error::MissingMember { .. }) => {
                let message = error.to_string();
                assert!(message.contains("gone/layer.tar"), "{message}");
                assert!(message.contains("manifest.json"), "{message}");
            }
            other => panic!("expected MissingMember, got {other:?}"),
        }
    }

    #[test]
    fn a_wrong_diff_id_is_a_mismatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("image.tar");
        let base = layer_tar("etc/os-release", b"base");
        let wrong = Digest::of_bytes(b"not the layer");
        write_archive(&path, &[("a/layer.tar", &base)], &[wrong], &["a/layer.tar"]);
        match open(&path, &OpenOptions::new(dir.path().join("root"))) {
            Err(Error::DigestMismatch {
                expected, actual, ..
            }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, Digest::of_bytes(&base));
            }
            other => panic!("expected DigestMismatch, got {other:?}"),
        }
    }

    #[test]
    fn layer_count_must_match_diff_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("image.tar");
        let base = layer_tar("etc/os-release", b"base");
        write_archive(&path, &[("a/layer.tar", &base)], &[], &["a/layer.tar"]);
        assert!(matches!(
            open(&path, &OpenOptions::new(dir.path().join("root"))),
            Err(Error::LayerCountMismatch {
                layers: 1,
                diff_ids: 0,
                ..
            })
        ));
    }

    #[test]
    fn config_names_are_checked_against_their_digest() {
        assert_eq!(digest_in_name("abc.json"), None);
        let digest = Digest::of_bytes(b"x");
        assert_eq!(
            digest_in_name(&format!("{}.json", digest.hex())),
            Some(digest)
        );
        assert_eq!(
            digest_in_name(&format!("blobs/sha256/{}", digest.hex())),
            Some(digest)
        );
    }
}
