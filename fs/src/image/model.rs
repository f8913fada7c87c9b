//! The JSON documents of container images, typed, one struct per document: OCI image layouts
//! (`index.json`, image indexes and Docker manifest lists, image manifests, descriptors), the
//! `manifest.json` of a `docker save` archive, and image configs (OCI and Docker).
//!
//! Every reader and writer of these documents in rfs uses these types: [`super::open`] reading
//! a SOURCE, the store reading and writing its layout, `rfs save` writing archives, the CLI's
//! `inspect` and `run` reading configs.
//!
//! Digests name bytes, not meanings, so what is digested is never re-serialised from these
//! types: an image config is kept as the bytes it came as ([`ConfigBlob`]) and only read
//! through [`ImageConfig`]; a commit edits the JSON object of its base config and so keeps
//! every field rfs does not deliberately change, known here or not. Documents the store itself
//! writes (its manifests, `index.json`) are serialised from these structs, in field order, so
//! the same content always gives the same bytes, and `rfs save` → `rfs load` returns to the
//! same manifest digests.
//!
//! Why not the `oci-spec` crate: its descriptors require `mediaType` and a well-formed digest
//! (rfs reads descriptors without a media type, and skips index entries of another algorithm
//! rather than refusing the whole index), its annotations are a `HashMap` (so `index.json`
//! would not serialise to the same bytes twice), its config drops Docker's fields
//! (`container_config`, `docker_version`, `Healthcheck` …) that `rfs inspect` shows, and it
//! brings builder and getter macro crates for what is a few plain structs here. A registry
//! client speaking `oci-spec` converts at its edge, through the JSON bytes.
//!
//! Reading is as lenient as the formats allow: unknown fields are ignored, and an optional
//! field of an image config whose value has the wrong type reads as absent (rfs used to read
//! them one by one out of untyped JSON, and an image stays usable when a field rfs shows but
//! does not need is odd). What rfs needs to be right is strict: descriptors' digests and
//! sizes, a manifest's config and layers, a config's `rootfs.diff_ids`.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::Platform;
use crate::digest::{Digest, DigestError};

/// The OCI layout marker file.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// The content of `oci-layout`.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// An OCI layout's root document.
pub const INDEX_JSON: &str = "index.json";
/// A docker archive's root document.
pub const DOCKER_MANIFEST_JSON: &str = "manifest.json";

/// Media type of an OCI image index.
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed OCI layer. The store keeps every layer so, with its digest
/// equal to its diff_id, under the same name the image module decompresses into.
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Image index media types (OCI, Docker manifest list).
pub const INDEX_TYPES: &[&str] = &[
    MEDIA_INDEX,
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Image manifest media types (OCI, Docker schema 2).
pub const MANIFEST_TYPES: &[&str] = &[
    MEDIA_MANIFEST,
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Image config media types (OCI, Docker).
pub const CONFIG_TYPES: &[&str] = &[
    MEDIA_CONFIG,
    "application/vnd.docker.container.image.v1+json",
];

/// Layer media types rfs applies as tar layers. The compression suffix is informative only:
/// the encoding is read from the blob's magic bytes.
pub const LAYER_TYPES: &[&str] = &[
    MEDIA_LAYER_TAR,
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// The annotation that names an index entry (the store writes `NAME:TAG`; skopeo's `oci:DIR:TAG`
/// writes a bare tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and Docker use for the full image name in an exported layout.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

fn schema_version_2() -> u32 {
    2
}

/// A content descriptor: what a blob is, its digest and its size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The blob's media type; required by the OCI spec, missing in some older layouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// `sha256:<hex>`; kept as text so an index entry with another algorithm can be skipped
    /// rather than failing the whole document ([`Descriptor::digest`] parses it).
    pub digest: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// The target platform, on index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations (`org.opencontainers.image.ref.name` …), sorted so they serialise the same
    /// way every time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor of `digest` with no platform or annotations.
    pub fn new(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: Some(media_type.to_owned()),
            digest: digest.to_string(),
            size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The digest, parsed.
    ///
    /// # Errors
    ///
    /// It is malformed or not sha256.
    pub fn digest(&self) -> Result<Digest, DigestError> {
        Digest::parse(&self.digest)
    }

    /// The `org.opencontainers.image.ref.name` annotation.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(ANNOTATION_REF_NAME)
            .map(String::as_str)
    }

    /// The name an exported layout gives this entry: `io.containerd.image.name`, else
    /// `org.opencontainers.image.ref.name` (which may be a bare tag).
    pub fn image_name(&self) -> Option<&str> {
        self.annotations
            .get(ANNOTATION_IMAGE_NAME)
            .or_else(|| self.annotations.get(ANNOTATION_REF_NAME))
            .map(String::as_str)
    }
}

/// An image index: `index.json`, a nested index, or a Docker manifest list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    #[serde(default = "schema_version_2")]
    pub schema_version: u32,
    /// [`MEDIA_INDEX`] (optional in `index.json`).
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

/// An image manifest (OCI, or Docker schema 2, which has the same shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    #[serde(default = "schema_version_2")]
    pub schema_version: u32,
    /// [`MEDIA_MANIFEST`] or the Docker one.
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

/// One image in a docker archive's `manifest.json` (a JSON array of these). `LayerSources` is
/// ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerManifestEntry {
    /// The config member (`<hex>.json`, or `blobs/sha256/<hex>` since Docker 25).
    pub config: String,
    /// The image's names; written as `null` for an untagged image, as `docker save` does.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// The layer members, base first.
    pub layers: Vec<String>,
    /// The image it was built from, if the archive records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// An image config as it was read: its bytes, kept as they are because their digest is the
/// image ID, and the fields read from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigBlob {
    /// The config JSON, byte for byte.
    pub bytes: Vec<u8>,
    /// The sha256 of `bytes`: the image ID.
    pub digest: Digest,
    /// The fields.
    pub parsed: ImageConfig,
}

impl ConfigBlob {
    /// Reads the config `bytes`.
    ///
    /// # Errors
    ///
    /// They are not a JSON object with `rootfs.diff_ids` (see [`ImageConfig`]).
    pub fn parse(bytes: Vec<u8>) -> Result<ConfigBlob, serde_json::Error> {
        let parsed = serde_json::from_slice(&bytes)?;
        Ok(ConfigBlob {
            digest: Digest::of_bytes(&bytes),
            bytes,
            parsed,
        })
    }
}

/// An image config (OCI `config.md`, Docker's image JSON): the fields rfs reads.
///
/// Only `rootfs.diff_ids` is required; every other field of the wrong type reads as absent
/// (see the module docs). Docker-only fields are here too, for `rfs inspect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ImageConfig {
    /// When the image was made (RFC 3339).
    #[serde(default, deserialize_with = "lenient")]
    pub created: Option<String>,
    /// Who made it.
    #[serde(default, deserialize_with = "lenient")]
    pub author: Option<String>,
    /// `GOARCH` of its binaries.
    #[serde(default, deserialize_with = "lenient")]
    pub architecture: Option<String>,
    /// `GOOS` of its binaries.
    #[serde(default, deserialize_with = "lenient")]
    pub os: Option<String>,
    /// The CPU variant (`v8` …).
    #[serde(default, deserialize_with = "lenient")]
    pub variant: Option<String>,
    /// The defaults of a container run from it.
    #[serde(default, deserialize_with = "lenient")]
    pub config: Option<ContainerConfig>,
    /// Docker: the config of the container the last layer was committed from.
    #[serde(default, deserialize_with = "lenient")]
    pub container_config: Option<ContainerConfig>,
    /// Docker: the ID of that container.
    #[serde(default, deserialize_with = "lenient")]
    pub container: Option<String>,
    /// Docker: the version of the docker that made the image.
    #[serde(default, deserialize_with = "lenient")]
    pub docker_version: Option<String>,
    /// Docker: the commit message of the last layer.
    #[serde(default, deserialize_with = "lenient")]
    pub comment: Option<String>,
    /// The layers' uncompressed digests.
    pub rootfs: RootFs,
    /// How each layer (and each step that made none) came to be, oldest first.
    #[serde(default, deserialize_with = "lenient_list")]
    pub history: Vec<HistoryEntry>,
}

impl ImageConfig {
    /// `rootfs.diff_ids`, parsed, base first.
    ///
    /// # Errors
    ///
    /// One of them is malformed or not sha256.
    pub fn diff_ids(&self) -> Result<Vec<Digest>, DigestError> {
        self.rootfs
            .diff_ids
            .iter()
            .map(|text| Digest::parse(text))
            .collect()
    }

    /// The platform the config declares, if it has an `os` and an `architecture`.
    pub fn platform(&self) -> Option<Platform> {
        Some(Platform {
            architecture: self.architecture.clone()?,
            os: self.os.clone()?,
            variant: self.variant.clone(),
        })
    }
}

/// `rootfs` of an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RootFs {
    /// The uncompressed layer digests, base first, as written (see [`ImageConfig::diff_ids`]).
    pub diff_ids: Vec<String>,
}

/// One entry of an image config's `history`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct HistoryEntry {
    /// When the step ran (RFC 3339).
    #[serde(default, deserialize_with = "lenient")]
    pub created: Option<String>,
    /// Who ran it.
    #[serde(default, deserialize_with = "lenient")]
    pub author: Option<String>,
    /// The command of the step.
    #[serde(default, deserialize_with = "lenient")]
    pub created_by: Option<String>,
    /// A comment.
    #[serde(default, deserialize_with = "lenient")]
    pub comment: Option<String>,
    /// The step made no layer.
    #[serde(default, deserialize_with = "lenient")]
    pub empty_layer: Option<bool>,
}

impl HistoryEntry {
    /// Whether the step made no layer.
    pub fn is_empty_layer(&self) -> bool {
        self.empty_layer.unwrap_or(false)
    }
}

/// The `config` (and Docker's `container_config`) section of an image config: Docker's
/// `container.Config`, of which OCI's is a subset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // Docker's field names say it; see its API reference.
pub struct ContainerConfig {
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub hostname: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub domainname: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub user: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub attach_stdin: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub attach_stdout: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub attach_stderr: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub tty: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub open_stdin: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub stdin_once: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub env: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<Healthcheck>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub args_escaped: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub image: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub volumes: Option<BTreeMap<String, Empty>>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub on_build: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_timeout: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub shell: Option<Vec<String>>,
}

/// Docker's `HealthConfig` (durations in nanoseconds), in its field order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)] // Docker's field names say it.
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// The empty object that is every value of `ExposedPorts` and `Volumes` (a set, in Go).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Reads an optional field, taking a value of the wrong type (or `null`) as absent.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// Reads a list field as [`lenient`] does, a wrong type giving an empty list.
fn lenient_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(lenient(deserializer)?.unwrap_or_default())
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
        assert_eq!(
            text,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{MEDIA_MANIFEST}","config":{{"mediaType":"{MEDIA_CONFIG}","digest":"{config}","size":2}},"layers":[{{"mediaType":"{MEDIA_LAYER_TAR}","digest":"{layer}","size":5}}]}}"#
            )
        );
        let back: Manifest = serde_json::from_slice(&bytes).expect("parse");
        assert_eq!(back, m);
    }

    #[test]
    fn index_entries_keep_their_names_and_platforms_in_a_fixed_order() {
        let text = r#"{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"sha512:00","size":1,
            "annotations":{"org.opencontainers.image.ref.name":"latest"},"extra":1}]}"#;
        let index: Index = serde_json::from_str(text).expect("parse");
        assert_eq!(index.manifests[0].ref_name(), Some("latest"));
        assert_eq!(index.manifests[0].image_name(), Some("latest"));
        assert!(index.manifests[0].digest().is_err());

        let mut entry = Descriptor::new(MEDIA_MANIFEST, &Digest::of_bytes(b"m"), 7);
        entry.platform = Some(Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        });
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.into(), "a:b".into());
        entry
            .annotations
            .insert(ANNOTATION_IMAGE_NAME.into(), "a:b".into());
        let text = serde_json::to_string(&entry).expect("json");
        let tail = r#""size":7,"platform":{"architecture":"arm64","os":"linux","variant":"v8"},"annotations":{"io.containerd.image.name":"a:b","org.opencontainers.image.ref.name":"a:b"}}"#;
        assert!(text.ends_with(tail), "{text}");
        assert_eq!(entry.image_name(), Some("a:b"));
    }

    #[test]
    fn a_docker_manifest_entry_round_trips_as_docker_writes_it() {
        let text = r#"[{"Config":"c.json","RepoTags":null,"Layers":["a/layer.tar"]}]"#;
        let entries: Vec<DockerManifestEntry> = serde_json::from_str(text).expect("parse");
        assert_eq!(entries[0].repo_tags, None);
        assert_eq!(serde_json::to_string(&entries).expect("json"), text);
        let tagged: DockerManifestEntry = serde_json::from_str(
            r#"{"Config":"c.json","RepoTags":["x:1"],"Layers":[],"Parent":"sha256:ab"}"#,
        )
        .expect("parse");
        assert_eq!(tagged.parent.as_deref(), Some("sha256:ab"));
    }

    #[test]
    fn configs_keep_their_bytes_and_read_docker_fields() {
        let layer = Digest::of_bytes(b"layer");
        let bytes = format!(
            r#"{{"architecture":"amd64","os":"linux","docker_version":"20.10",
              "config":{{"Env":["A=1"],"Cmd":null,"Healthcheck":{{"Test":["CMD","true"],"Retries":3}},
                         "ExposedPorts":{{"80/tcp":{{}}}}}},
              "container_config":{{"Cmd":["sh"]}},
              "rootfs":{{"type":"layers","diff_ids":["{layer}"]}},
              "history":[{{"created_by":"x","empty_layer":true}},{{"created":"2020-01-01T00:00:00Z"}}]}}"#
        )
        .into_bytes();
        let blob = ConfigBlob::parse(bytes.clone()).expect("parse");
        assert_eq!(blob.bytes, bytes);
        assert_eq!(blob.digest, Digest::of_bytes(&bytes));
        let config = &blob.parsed;
        assert_eq!(config.diff_ids().expect("diff_ids"), [layer]);
        assert_eq!(config.docker_version.as_deref(), Some("20.10"));
        let section = config.config.as_ref().expect("config");
        assert_eq!(section.env.as_deref(), Some(&["A=1".to_owned()][..]));
        assert_eq!(section.cmd, None);
        assert_eq!(
            section.healthcheck.as_ref().and_then(|h| h.retries),
            Some(3)
        );
        assert!(
            section
                .exposed_ports
                .as_ref()
                .expect("ports")
                .contains_key("80/tcp")
        );
        assert_eq!(
            config.container_config.as_ref().and_then(|c| c.cmd.clone()),
            Some(vec!["sh".to_owned()])
        );
        assert!(config.history[0].is_empty_layer());
        assert!(!config.history[1].is_empty_layer());
        assert_eq!(
            config.platform(),
            Some(Platform {
                architecture: "amd64".into(),
                os: "linux".into(),
                variant: None
            })
        );
    }

    #[test]
    fn odd_optional_fields_read_as_absent_but_diff_ids_are_required() {
        let config: ImageConfig = serde_json::from_str(
            r#"{"created":5,"config":{"Env":"A=1","User":"app"},"history":{},
                "rootfs":{"diff_ids":[]}}"#,
        )
        .expect("parse");
        assert_eq!(config.created, None);
        assert_eq!(config.history, []);
        let section = config.config.expect("config");
        assert_eq!(section.env, None);
        assert_eq!(section.user.as_deref(), Some("app"));
        assert!(serde_json::from_str::<ImageConfig>(r#"{"os":"linux"}"#).is_err());
        assert!(serde_json::from_str::<ImageConfig>(r#"{"rootfs":{"diff_ids":"x"}}"#).is_err());
        let bad = ImageConfig {
            rootfs: RootFs {
                diff_ids: vec!["sha256:nothex".into()],
            },
            ..ImageConfig::default()
        };
        assert!(bad.diff_ids().is_err());
    }
}
