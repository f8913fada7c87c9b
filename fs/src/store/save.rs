//! `rfs save`: images of the store as a `docker save` archive or an OCI layout archive.
//!
//! Docker format (what `docker load`, `podman load` and skopeo's `docker-archive:` read):
//! `<layer hex>.tar` per layer, `<id hex>.json` for each config, and `manifest.json` listing
//! per image its `Config`, `RepoTags` and `Layers` (base first). OCI format (skopeo's
//! `oci-archive:`): `oci-layout`, `index.json` with one entry per name (`ref.name` and
//! `io.containerd.image.name` = `NAME:TAG`) and the blobs, exactly as the store has them, so
//! that `rfs load` of the archive gives back the same manifest digests. Shared blobs are
//! written once. The archive itself is deterministic: members in a fixed order, owned by 0:0,
//! dated 1970-01-01.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::{self, Write};

use super::{Error, Reference, Store, StoredImage};
use crate::digest::Digest;
use crate::image::model::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, DOCKER_MANIFEST_JSON, Descriptor,
    DockerManifestEntry, INDEX_JSON, Index, MEDIA_MANIFEST, OCI_LAYOUT, OCI_LAYOUT_FILE,
};
use crate::progress::{Progress, ProgressReader};

/// Which archive `rfs save` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`'s format.
    Docker,
    /// An OCI image layout in a tar (`oci-archive:`).
    Oci,
}

impl Store {
    /// Writes `images` (each with the names to give it) to `out` as an archive of `format`.
    ///
    /// # Errors
    ///
    /// A blob is missing or unreadable, or `out` fails.
    pub fn save<W: Write>(
        &self,
        images: &[(StoredImage, Vec<Reference>)],
        format: ArchiveFormat,
        out: W,
        progress: Option<&Progress<'_>>,
    ) -> Result<W, Error> {
        let _lock = self.lock_shared()?;
        let mut archive = Archive {
            builder: tar::Builder::new(out),
            written: BTreeSet::new(),
        };
        match format {
            ArchiveFormat::Docker => self.save_docker(&mut archive, images, progress)?,
            ArchiveFormat::Oci => self.save_oci(&mut archive, images, progress)?,
        }
        archive
            .builder
            .into_inner()
            .map_err(|e| Error::io("writing", "archive", e))
    }

    fn save_docker<W: Write>(
        &self,
        archive: &mut Archive<W>,
        images: &[(StoredImage, Vec<Reference>)],
        progress: Option<&Progress<'_>>,
    ) -> Result<(), Error> {
        let mut manifest = Vec::new();
        for (image, names) in images {
            let mut layers = Vec::new();
            for (i, d) in image.diff_ids.iter().enumerate() {
                let name = format!("{}.tar", d.hex());
                let what = format!("saving layer {}/{}", i + 1, image.diff_ids.len());
                archive.blob_as(self, d, &name, &what, progress)?;
                layers.push(name);
            }
            let config = format!("{}.json", image.id.hex());
            archive.blob_as(self, &image.id, &config, "saving config", progress)?;
            manifest.push(DockerManifestEntry {
                config,
                repo_tags: (!names.is_empty())
                    .then(|| names.iter().map(ToString::to_string).collect()),
                layers,
                parent: None,
            });
        }
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| Error::io("encoding", "manifest.json", io::Error::other(e)))?;
        archive.bytes(DOCKER_MANIFEST_JSON, &bytes)
    }

    fn save_oci<W: Write>(
        &self,
        archive: &mut Archive<W>,
        images: &[(StoredImage, Vec<Reference>)],
        progress: Option<&Progress<'_>>,
    ) -> Result<(), Error> {
        archive.bytes(OCI_LAYOUT_FILE, OCI_LAYOUT)?;
        let mut index = Index::default();
        let mut blobs: Vec<(Digest, String)> = Vec::new();
        for (image, names) in images {
            let manifest_size = std::fs::metadata(self.blob_path(&image.manifest))
                .map_err(|e| Error::io("reading", self.blob_path(&image.manifest), e))?
                .len();
            let mut descriptor = Descriptor::new(MEDIA_MANIFEST, &image.manifest, manifest_size);
            descriptor.platform = image.config.platform();
            if names.is_empty() {
                index.manifests.push(descriptor.clone());
            }
            for name in names {
                let mut entry = descriptor.clone();
                let annotations: BTreeMap<String, String> = [
                    (ANNOTATION_REF_NAME.to_owned(), name.to_string()),
                    (ANNOTATION_IMAGE_NAME.to_owned(), name.to_string()),
                ]
                .into();
                entry.annotations = annotations;
                index.manifests.push(entry);
            }
            blobs.push((image.manifest, "saving manifest".into()));
            blobs.push((image.id, "saving config".into()));
            let Some(manifest) = self.manifest(&image.manifest)? else {
                return Err(Error::BadImage {
                    id: image.manifest,
                    problem: "not an image manifest".into(),
                });
            };
            for (i, layer) in manifest.layers.iter().enumerate() {
                let digest = layer.digest().map_err(|_| Error::BadImage {
                    id: image.manifest,
                    problem: format!("bad layer digest {}", layer.digest),
                })?;
                blobs.push((
                    digest,
                    format!("saving layer {}/{}", i + 1, manifest.layers.len()),
                ));
            }
        }
        archive.dir("blobs/")?;
        archive.dir("blobs/sha256/")?;
        for (digest, what) in &blobs {
            let name = format!("blobs/sha256/{}", digest.hex());
            archive.blob_as(self, digest, &name, what, progress)?;
        }
        let bytes = serde_json::to_vec(&index)
            .map_err(|e| Error::io("encoding", "index.json", io::Error::other(e)))?;
        archive.bytes(INDEX_JSON, &bytes)
    }
}

/// An archive being written, remembering which members it has.
struct Archive<W: Write> {
    builder: tar::Builder<W>,
    written: BTreeSet<String>,
}

impl<W: Write> Archive<W> {
    fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    fn dir(&mut self, name: &str) -> Result<(), Error> {
        let mut h = Self::header(0, 0o755, tar::EntryType::Directory);
        self.builder
            .append_data(&mut h, name, io::empty())
            .map_err(|e| Error::io("writing archive member", name, e))
    }

    fn bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        let mut h = Self::header(bytes.len() as u64, 0o644, tar::EntryType::Regular);
        self.builder
            .append_data(&mut h, name, bytes)
            .map_err(|e| Error::io("writing archive member", name, e))
    }

    /// Writes the blob `digest` as the member `name`, once.
    fn blob_as(
        &mut self,
        store: &Store,
        digest: &Digest,
        name: &str,
        what: &str,
        progress: Option<&Progress<'_>>,
    ) -> Result<(), Error> {
        if !self.written.insert(name.to_owned()) {
            return Ok(());
        }
        let (file, path) = store.open_blob(digest)?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("reading", &path, e))?
            .len();
        let mut h = Self::header(size, 0o644, tar::EntryType::Regular);
        // The builder reads the member to its end, which reports the step's end.
        let mut reader = ProgressReader::new(file, what, size, progress);
        self.builder
            .append_data(&mut h, name, &mut reader)
            .map_err(|e| Error::io("writing archive member", name, e))?;
        Ok(())
    }
}
