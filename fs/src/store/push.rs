//! `rfs push`: an image of the store to a registry.
//!
//! An image that was pulled keeps its manifest digest (as `skopeo copy` keeps it): its notes
//! hold the exact manifest it was pulled with ([`super::PulledFrom`]), whose layers are the
//! registry's compressed blobs. If the destination repository has every one of them (`HEAD`),
//! or the registry mounts them from the repository they were pulled from (`POST
//! ?mount=&from=`, same registry only), that manifest is pushed byte for byte. Otherwise (another
//! registry, or the source repository is gone) the image is pushed as rfs would push an image
//! it made itself, and gets a new manifest digest there.
//!
//! Images rfs made (load, import, commit), or that fall back as above, have their layers
//! compressed with `--compression` (gzip by default, zstd, or none) into a temporary file
//! under `<root>/tmp` (so the digest is known before the upload, for `HEAD` and for the
//! manifest), skipped if the registry has that digest, else uploaded (`POST`, `PATCH`es of
//! 16 MiB that continue where the registry stands after a failure, `PUT ?digest=`; see
//! [`Client::upload_blob`]). The config follows, and the manifest (OCI) goes last, so a
//! registry never holds a manifest whose blobs are missing.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use super::blobs::HashingWriter;
use super::{Error, Store};
use crate::digest::Digest;
use crate::durable::TempFile;
use crate::image::model::{self, Descriptor, Manifest};
use crate::progress::{Progress, ProgressReader};
use crate::registry::client::Mounted;
use crate::registry::{Client, ImageRef};

/// How `rfs push` compresses the layers it compresses itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayerCompression {
    /// gzip.
    #[default]
    Gzip,
    /// zstd.
    Zstd,
    /// None: the stored tar as it is.
    None,
}

impl LayerCompression {
    fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            LayerCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            LayerCompression::None => model::MEDIA_LAYER_TAR,
        }
    }
}

/// How to push.
#[derive(Default)]
pub struct PushOptions<'a> {
    /// Compression of layers rfs compresses.
    pub compression: LayerCompression,
    /// Progress of compressing each layer, reported as `layer <n>/<count>`.
    pub progress: Option<&'a Progress<'a>>,
}

/// What a push did.
#[derive(Clone, Debug)]
pub struct PushResult {
    /// The manifest's digest in the registry.
    pub digest: Digest,
    /// Whether the manifest the image was pulled with was pushed unchanged.
    pub kept_manifest: bool,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry had already.
    pub skipped: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
}

impl Store {
    /// Pushes the image `image` (a name or ID of the store) to `target` (see the module docs).
    ///
    /// # Errors
    ///
    /// The image is not in the store, a blob cannot be read or compressed, or the registry
    /// refuses a request.
    pub fn push(
        &self,
        client: &Client,
        image: &str,
        target: &ImageRef,
        opts: &PushOptions<'_>,
    ) -> Result<PushResult, Error> {
        let _lock = self.lock_shared()?;
        let image = self.find(image)?;
        let reference = target.manifest_reference();
        let repo = &target.repository;
        let mut result = PushResult {
            digest: image.manifest,
            kept_manifest: false,
            uploaded: 0,
            skipped: 0,
            mounted: 0,
        };
        let mut pulled = self.meta(&image.id).pulled;
        // The destination itself first, then other repositories of the same registry.
        let target_path = target.repository_path();
        pulled.sort_by_key(|p| p.repository != target_path);
        for source in &pulled {
            let Ok(manifest) = serde_json::from_str::<Manifest>(&source.manifest) else {
                continue;
            };
            if manifest.config.digest().ok() != Some(image.id) {
                continue;
            }
            let from = source
                .repository
                .strip_prefix(&format!("{}/", client.registry()))
                .map(str::to_owned);
            if self.offer_blobs(client, repo, &manifest, from.as_deref(), &mut result)? {
                result.digest = client.put_manifest(
                    repo,
                    &reference,
                    source.manifest.as_bytes(),
                    &source.media_type,
                )?;
                result.kept_manifest = true;
                return Ok(result);
            }
        }

        let config_bytes = self.read_blob(&image.id, "config")?;
        let count = image.diff_ids.len();
        let mut layers = Vec::with_capacity(count);
        let tmp_dir = self.root.join("tmp");
        for (i, diff_id) in image.diff_ids.iter().enumerate() {
            let what = format!("layer {}/{count}", i + 1);
            let (tmp, digest, size) = self.compress_layer(diff_id, opts, &tmp_dir, &what)?;
            if client.blob_exists(repo, &digest)? {
                result.skipped += 1;
            } else {
                client.upload_blob(repo, &digest, tmp.path(), None)?;
                result.uploaded += 1;
            }
            layers.push(Descriptor::new(
                opts.compression.media_type(),
                &digest,
                size,
            ));
        }
        if client.blob_exists(repo, &image.id)? {
            result.skipped += 1;
        } else {
            client.upload_bytes(repo, &image.id, &config_bytes)?;
            result.uploaded += 1;
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(model::MEDIA_MANIFEST.to_owned()),
            config: Descriptor::new(model::MEDIA_CONFIG, &image.id, config_bytes.len() as u64),
            layers,
        };
        result.digest = client.put_manifest(
            repo,
            &reference,
            &manifest.to_bytes(),
            model::MEDIA_MANIFEST,
        )?;
        Ok(result)
    }

    /// Makes sure `repo` has every blob of `manifest` without uploading: present, or mounted
    /// from `from`. `false` if one can be neither.
    fn offer_blobs(
        &self,
        client: &Client,
        repo: &str,
        manifest: &Manifest,
        from: Option<&str>,
        result: &mut PushResult,
    ) -> Result<bool, Error> {
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let Ok(digest) = descriptor.digest() else {
                return Ok(false);
            };
            if client.blob_exists(repo, &digest)? {
                result.skipped += 1;
                continue;
            }
            let Some(from) = from.filter(|f| *f != repo) else {
                return Ok(false);
            };
            match client.mount_blob(repo, &digest, from)? {
                Mounted::Yes => result.mounted += 1,
                Mounted::Upload(_) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Compresses layer `diff_id` into a temporary file; returns it, its digest and size.
    fn compress_layer(
        &self,
        diff_id: &Digest,
        opts: &PushOptions<'_>,
        tmp_dir: &std::path::Path,
        what: &str,
    ) -> Result<(TempFile, Digest, u64), Error> {
        let (file, path) = self.open_blob(diff_id)?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading", &path, e))?
            .len();
        if opts.compression == LayerCompression::None {
            // The stored tar is the blob; a hard link gives the upload a stable file.
            let mut tmp = TempFile::create(tmp_dir, 0o600)?;
            let tmp_path = tmp.path().to_owned();
            let mut reader = ProgressReader::new(file, what, len, opts.progress);
            io::copy(&mut reader, tmp.file()).map_err(|e| Error::io("copying", &tmp_path, e))?;
            return Ok((tmp, *diff_id, len));
        }
        let mut tmp = TempFile::create(tmp_dir, 0o600)?;
        let tmp_path = tmp.path().to_owned();
        let target: &mut File = tmp.file();
        let hashing = HashingWriter::new(BufWriter::with_capacity(1 << 20, target));
        let mut reader = ProgressReader::new(file, what, len, opts.progress);
        let werr = |e: io::Error| Error::io("compressing into", &tmp_path, e);
        let hashing = match opts.compression {
            LayerCompression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(hashing, flate2::Compression::default());
                io::copy(&mut reader, &mut enc).map_err(werr)?;
                enc.finish().map_err(werr)?
            }
            LayerCompression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(hashing, 3).map_err(werr)?;
                io::copy(&mut reader, &mut enc).map_err(werr)?;
                enc.finish().map_err(werr)?
            }
            LayerCompression::None => unreachable!("handled above"),
        };
        let (mut writer, digest, size) = hashing.finish();
        writer.flush().map_err(werr)?;
        drop(writer);
        Ok((tmp, digest, size))
    }
}
