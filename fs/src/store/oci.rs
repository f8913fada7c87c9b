//! The JSON documents of an OCI image layout (opencontainers/image-spec `image-layout.md`,
//! `image-index.md`, `manifest.md`, `descriptor.md`), as the store reads and writes them.
//!
//! Documents the store writes are serialised from these structs, so the same content always
//! gives the same bytes (and digest): that is what makes `rfs save` → `rfs load` return to the
//! same manifest digests. Unknown fields of documents written by other tools are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// `oci-layout`'s content.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Media type of an image index.
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an image manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an image config.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed layer: its digest is its diff_id, so the store keeps each
/// layer once, under the same name the image module decompresses into.
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// The annotation that names an index entry (the store writes `NAME:TAG`).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and Docker use for the full image name in an exported layout.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// A content descriptor: what a blob is, its digest and its size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The blob's media type.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>`; kept as text so an entry with another algorithm can be skipped rather
    /// than failing the whole document.
    pub digest: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// The target platform, on index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformJson>,
    /// Annotations (`org.opencontainers.image.ref.name` …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor of `digest` with no platform or annotations.
    pub fn new(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: digest.to_string(),
            size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The digest, if it is a well-formed sha256.
    pub fn digest(&self) -> Option<Digest> {
        Digest::parse(&self.digest).ok()
    }

    /// The `org.opencontainers.image.ref.name` annotation.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(ANNOTATION_REF_NAME)
            .map(String::as_str)
    }
}

/// The `platform` object of an index entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformJson {
    /// `architecture` (`amd64` …).
    pub architecture: String,
    /// `os` (`linux`).
    pub os: String,
    /// `variant` (`v8` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl PlatformJson {
    /// The platform an image config declares, if it has `os` and `architecture`.
    pub fn of_config(config: &serde_json::Value) -> Option<PlatformJson> {
        Some(PlatformJson {
            architecture: config.get("architecture")?.as_str()?.to_owned(),
            os: config.get("os")?.as_str()?.to_owned(),
            variant: config
                .get("variant")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// `index.json`, or any image index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// [`MEDIA_INDEX`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The entries.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            schema_version: 2,
            media_type: Some(MEDIA_INDEX.to_owned()),
            manifests: Vec::new(),
        }
    }
}

/// An image manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MEDIA_MANIFEST`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
}

impl Manifest {
    /// The manifest the store writes for a config and its uncompressed layers (digest = diff_id).
    pub fn for_layers(config: &Digest, config_size: u64, layers: &[(Digest, u64)]) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.to_owned()),
            config: Descriptor::new(MEDIA_CONFIG, config, config_size),
            layers: layers
                .iter()
                .map(|(digest, size)| Descriptor::new(MEDIA_LAYER_TAR, digest, *size))
                .collect(),
        }
    }

    /// The canonical bytes (compact JSON in struct order).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain structs of strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_canonical() {
        let config = Digest::of_bytes(b"{}");
        let layer = Digest::of_bytes(b"layer");
        let m = Manifest::for_layers(&config, 2, &[(layer, 5)]);
        let bytes = m.to_bytes();
        assert_eq!(
            bytes,
            Manifest::for_layers(&config, 2, &[(layer, 5)]).to_bytes()
        );
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(text.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"#));
        assert!(text.contains(MEDIA_LAYER_TAR));
        assert!(!text.contains("annotations"));
        let back: Manifest = serde_json::from_slice(&bytes).expect("parse");
        assert_eq!(back, m);
    }

    #[test]
    fn index_entries_keep_their_names() {
        let text = r#"{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"sha512:00","size":1,
            "annotations":{"org.opencontainers.image.ref.name":"latest"},"extra":1}]}"#;
        let index: Index = serde_json::from_str(text).expect("parse");
        assert_eq!(index.manifests[0].ref_name(), Some("latest"));
        assert_eq!(index.manifests[0].digest(), None);
    }
}
