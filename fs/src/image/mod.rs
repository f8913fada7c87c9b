//! Image inputs: detects what a SOURCE is from its content and returns its layers, bottom to top.
//!
//! Supported: a `docker save` archive (manifest.json, layer tars that may be symlinks), an OCI
//! image layout as a directory or a tar (index.json, nested indexes, platform choice), and a flat
//! rootfs tar (`docker export`). Uncompressed layers inside a tar archive are served in place (a
//! byte range of the archive); compressed layers (gzip, zstd) are decompressed once into
//! `<root>/blobs/sha256/<diff_id hex>` and served from there.
//!
//! [`open`] is the entry point. It never trusts the file name: a directory holding `index.json`
//! is an OCI layout; a tar archive is scanned once, header by header (member data is skipped with
//! `seek`), and its members decide what it is — `manifest.json` makes a docker archive,
//! `index.json` plus `oci-layout` an OCI archive, anything else a flat rootfs.
//!
//! Integrity (DESIGN §2 rule 6): every blob is checked against the size and sha256 of the
//! descriptor that names it, and every uncompressed layer against `config.rootfs.diff_ids[i]`.
//! Hashing a large layer on every mount would cost real time, so successful checks are
//! remembered in `<root>/verified/` under a key made of the digest and the file's identity (path,
//! device, inode, size, mtime, ctime) and the byte range; any change to the file changes the key
//! and the next open hashes again.
//!
//! What `open` read on the way is handed over with the layers, so no caller reads the SOURCE's
//! metadata again: the config as its bytes and typed fields ([`model::ConfigBlob`]), the chosen
//! manifest's digest, and the names and parent the SOURCE gives the image.
//!
//! Module map: [`model`] (the typed JSON documents: index, manifest, descriptor, docker
//! `manifest.json`, image config), `platform` ([`Platform`], choosing an image in a
//! multi-platform index),
//! `tar_members` (the one-pass member table of an archive), `blob` (byte ranges, bounded metadata
//! reads, hashing and the verification cache), `compress` (compression sniffing and decompression
//! into the store), and one reader per format: `docker_archive`, `oci_layout`, `rootfs_tar`.

mod blob;
pub(crate) mod compress;
mod docker_archive;
pub mod model;
mod oci_layout;
mod platform;
mod rootfs_tar;
mod tar_members;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, DigestError};
use crate::progress::Progress;

pub use platform::Platform;

use blob::{Extent, RootDir};
use compress::Compression;
use model::ConfigBlob;
use tar_members::TarMembers;

/// The largest JSON document (index, manifest, config, manifest.json) rfs reads. Real ones are a
/// few KiB; the limit turns a hostile multi-GB "manifest" into an error instead of an OOM.
pub const MAX_METADATA_BYTES: u64 = 4 << 20;

/// What kind of input a SOURCE turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A `docker save` (or skopeo `docker-archive:`) tar: `manifest.json`, a config JSON and one
    /// tar per layer, the layer members possibly symlinks or hard links to others.
    DockerArchive,
    /// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`).
    OciLayoutDir,
    /// An OCI image layout packed in a tar archive (skopeo `oci-archive:`).
    OciLayoutTar,
    /// A flat root filesystem tar (`docker export`, `podman export`, `tar -C rootfs -c .`).
    RootfsTar,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::DockerArchive => "docker archive",
            SourceKind::OciLayoutDir => "OCI layout directory",
            SourceKind::OciLayoutTar => "OCI layout archive",
            SourceKind::RootfsTar => "rootfs tar",
        })
    }
}

/// One uncompressed layer tar, as a byte range of a file.
///
/// The range is either a member of the SOURCE archive (served in place), a blob file of an OCI
/// layout directory, or a decompressed copy in `<root>/blobs/sha256/<diff_id hex>`. In every case
/// its sha256 has been checked against `diff_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// The file holding the layer tar (an absolute path).
    pub file: PathBuf,
    /// Where the layer tar starts in `file`.
    pub offset: u64,
    /// The layer tar's length in bytes.
    pub len: u64,
    /// The sha256 of the uncompressed layer (`config.rootfs.diff_ids[i]`); `None` only for a
    /// flat rootfs tar, which has no config.
    pub diff_id: Option<Digest>,
}

/// An opened image: its layers and the metadata that named them.
#[derive(Clone, Debug)]
pub struct Image {
    /// What the SOURCE was.
    pub kind: SourceKind,
    /// The layers, bottom (the base, OCI `layers[0]`) to top.
    pub layers: Vec<LayerBlob>,
    /// The image config, byte for byte (its digest is the image ID) and read (`Env`, `Cmd`,
    /// `rootfs.diff_ids` …); `None` for a flat rootfs tar.
    pub config: Option<ConfigBlob>,
    /// The digest of the chosen manifest; `None` unless the SOURCE is an OCI layout (a docker
    /// archive has no manifest blob).
    pub manifest_digest: Option<Digest>,
    /// The names the SOURCE gives the image, as written: `RepoTags` of a docker archive; for
    /// an OCI layout, the `io.containerd.image.name` (else `org.opencontainers.image.ref.name`,
    /// possibly a bare tag) of each `index.json` entry that leads to the chosen manifest (of
    /// the only entry, if there is one).
    pub names: Vec<String>,
    /// The image this one was built from, if a docker archive's `Parent` names one.
    pub parent: Option<Digest>,
}

/// How to open a SOURCE.
pub struct OpenOptions<'a> {
    /// The rfs root directory. Decompressed layers go to `root/blobs/sha256/<diff_id hex>`,
    /// remembered verifications to `root/verified/`. Created when first needed.
    pub root: PathBuf,
    /// The platform to choose from a multi-platform OCI index.
    pub platform: Platform,
    /// Called while hashing or decompressing with (what is happening, bytes done, bytes in
    /// total), at the start and end of each step and at most every few MiB in between.
    pub progress: Option<&'a Progress<'a>>,
}

impl<'a> OpenOptions<'a> {
    /// Options for this machine's platform, without progress reports.
    pub fn new(root: impl Into<PathBuf>) -> OpenOptions<'a> {
        OpenOptions {
            root: root.into(),
            platform: Platform::host(),
            progress: None,
        }
    }
}

impl fmt::Debug for OpenOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenOptions")
            .field("root", &self.root)
            .field("platform", &self.platform)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Where an input file or archive member is, for error messages.
///
/// Boxed fields keep [`Error`] small (it is returned by value on every path through `open`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file on the host: the SOURCE archive, or a file inside a layout directory.
    pub file: Box<Path>,
    /// The member path inside the archive `file`, if the input is a tar member.
    pub member: Option<Box<str>>,
}

impl Location {
    /// A plain file.
    pub fn file(file: impl Into<PathBuf>) -> Location {
        Location {
            file: file.into().into_boxed_path(),
            member: None,
        }
    }

    /// A member of the tar archive `archive`.
    pub fn member(archive: impl Into<PathBuf>, member: impl Into<String>) -> Location {
        Location {
            file: archive.into().into_boxed_path(),
            member: Some(member.into().into_boxed_str()),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.member {
            Some(member) => write!(f, "{}, member {member}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// Why a SOURCE could not be opened. Every variant names the file (and archive member) at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SOURCE path cannot be resolved or inspected.
    #[error("{}: cannot open", path.display())]
    Open {
        /// The SOURCE as given.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The SOURCE is neither a tar archive nor an OCI layout directory.
    #[error("{}: not a tar archive or image layout", path.display())]
    NotAnImage {
        /// The SOURCE.
        path: PathBuf,
    },
    /// The SOURCE is a compressed file; only uncompressed archives are read in place.
    #[error(
        "{}: {format}-compressed file; decompress it first (rfs reads uncompressed tar archives and image layouts)",
        path.display()
    )]
    CompressedSource {
        /// The SOURCE.
        path: PathBuf,
        /// The compression format its first bytes announce.
        format: &'static str,
    },
    /// A tar header after the first one is corrupt.
    #[error("{}: invalid tar header at offset {offset}", archive.display())]
    TarHeader {
        /// The archive.
        archive: PathBuf,
        /// Where the header starts.
        offset: u64,
        /// What the tar reader reported.
        #[source]
        source: io::Error,
    },
    /// A member's data runs past the end of the archive file.
    #[error(
        "{}: truncated: member {member} ends at byte {end}, the file has {len} bytes",
        archive.display()
    )]
    TruncatedMember {
        /// The archive.
        archive: PathBuf,
        /// The member whose data is cut.
        member: String,
        /// Where the member's data should end.
        end: u64,
        /// The archive's actual length.
        len: u64,
    },
    /// The archive stops after a member without the end-of-archive zero block (as GNU tar, rfs
    /// reads that as truncation: whole members may be missing).
    #[error("{}: truncated: no end-of-archive marker at byte {offset}", archive.display())]
    TruncatedEnd {
        /// The archive.
        archive: PathBuf,
        /// Where the next header or the end marker should be.
        offset: u64,
    },
    /// An archive with image metadata has implausibly many members.
    #[error("{}: more than {limit} members, too many for an image archive", archive.display())]
    TooManyMembers {
        /// The archive.
        archive: PathBuf,
        /// The member limit.
        limit: usize,
    },
    /// Reading a file or member failed.
    #[error("{location}: cannot read")]
    Read {
        /// What was being read.
        location: Location,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// Metadata names an archive member that does not exist (a missing layer or config).
    #[error("{location}: names {member}, which is not in the archive")]
    MissingMember {
        /// The metadata file that names the member.
        location: Location,
        /// The missing member path.
        member: String,
    },
    /// A member that should hold data is a directory, device, dangling or looping link, or a
    /// sparse file.
    #[error("{location}: {problem}")]
    NotAFile {
        /// The member as named.
        location: Location,
        /// What is wrong with it.
        problem: String,
    },
    /// A JSON document is larger than [`MAX_METADATA_BYTES`].
    #[error("{location}: {len} bytes, more than the {limit}-byte limit for image metadata")]
    MetadataTooLarge {
        /// The document.
        location: Location,
        /// Its length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A JSON document does not parse, or lacks a required field.
    #[error("{location}: invalid {what}")]
    Json {
        /// The document.
        location: Location,
        /// What it should have been ("index", "image manifest", "image config" …).
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A digest string in metadata is malformed or uses another algorithm than sha256.
    #[error("{location}: bad digest")]
    BadDigest {
        /// The document holding it.
        location: Location,
        /// Why it was rejected.
        #[source]
        source: DigestError,
    },
    /// A docker archive's manifest.json or an OCI index lists no image.
    #[error("{location}: lists no image")]
    NoImage {
        /// The manifest or index.
        location: Location,
    },
    /// The manifest's layer count differs from the config's `rootfs.diff_ids` count.
    #[error("{location}: {layers} layers, but the config lists {diff_ids} diff_ids")]
    LayerCountMismatch {
        /// The manifest.
        location: Location,
        /// Layers in the manifest.
        layers: usize,
        /// Entries in `config.rootfs.diff_ids`.
        diff_ids: usize,
    },
    /// A descriptor's media type is not one rfs knows for its role.
    #[error("{location}: unknown {role} media type `{media_type}`")]
    UnknownMediaType {
        /// The document holding the descriptor.
        location: Location,
        /// "layer", "config" or "manifest".
        role: &'static str,
        /// The media type found.
        media_type: String,
    },
    /// No manifest in the index matches the wanted platform.
    #[error("{location}: no image for platform {wanted} (available: {available})")]
    NoMatchingPlatform {
        /// The index.
        location: Location,
        /// The platform asked for.
        wanted: Box<Platform>,
        /// The platforms the index offers, comma-separated.
        available: String,
    },
    /// Image indexes nest deeper than rfs follows.
    #[error("{location}: image indexes nested more than {limit} deep")]
    IndexTooDeep {
        /// The innermost index reached.
        location: Location,
        /// The nesting limit.
        limit: usize,
    },
    /// A descriptor names a blob that is not in the layout.
    #[error("{location}: names blob {digest}, which is missing ({})", missing.display())]
    MissingBlob {
        /// The document holding the descriptor.
        location: Location,
        /// The blob's digest.
        digest: Digest,
        /// The path where the blob should be (inside the layout or archive).
        missing: PathBuf,
    },
    /// A blob's size differs from its descriptor's.
    #[error("{location}: {what} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        location: Location,
        /// What the blob is ("layer 2", "config" …).
        what: String,
        /// The size the descriptor gives.
        expected: u64,
        /// The blob's real size.
        actual: u64,
    },
    /// Content does not hash to the digest that names it.
    #[error("{location}: {what} has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// The file or member hashed.
        location: Location,
        /// What it is ("layer 2 (uncompressed)", "config" …).
        what: String,
        /// The digest the descriptor or `rootfs.diff_ids` gives.
        expected: Digest,
        /// The digest of the content.
        actual: Digest,
    },
    /// A layer uses a compression rfs cannot decode.
    #[error("{location}: {what} is {format}-compressed, which rfs does not support")]
    UnsupportedCompression {
        /// The blob.
        location: Location,
        /// Which layer.
        what: String,
        /// The format its magic bytes announce.
        format: &'static str,
    },
    /// A compressed layer's stream is corrupt.
    #[error("{location}: cannot decompress {what}")]
    Decompress {
        /// The blob.
        location: Location,
        /// Which layer.
        what: String,
        /// The decoder's complaint.
        #[source]
        source: io::Error,
    },
    /// Writing into the rfs root directory failed.
    #[error("{}: cannot write", path.display())]
    Store {
        /// The file or directory being written.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// A `--platform` string is malformed.
    #[error("invalid platform `{spec}`: {problem}")]
    Platform {
        /// The string given.
        spec: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl From<crate::durable::FileError> for Error {
    fn from(e: crate::durable::FileError) -> Error {
        Error::Store {
            path: e.path,
            source: e.source,
        }
    }
}

/// Opens SOURCE, detecting its kind from its content, and returns its verified layers.
///
/// Compressed layers are decompressed into `opts.root` (once; later opens reuse the copy).
///
/// # Errors
///
/// One [`Error`] variant per failing step, naming the file (and archive member): the SOURCE is
/// not an image ([`Error::NotAnImage`]), is truncated, names a missing layer, has a blob whose
/// digest or size does not match, uses an unknown media type, offers no image for the platform,
/// or the root directory cannot be written.
///
/// # Example
///
/// ```no_run
/// use std::path::Path;
///
/// use rfs_fs::image::{OpenOptions, Platform, open};
///
/// let opts = OpenOptions {
///     platform: Platform::parse("linux/arm64/v8")?,
///     ..OpenOptions::new("/var/lib/rfs")
/// };
/// let image = open(Path::new("busybox-oci.tar"), &opts)?;
/// for layer in &image.layers {
///     println!("{} bytes at offset {} of {}", layer.len, layer.offset, layer.file.display());
/// }
/// # Ok::<(), rfs_fs::image::Error>(())
/// ```
pub fn open(source: &Path, opts: &OpenOptions<'_>) -> Result<Image, Error> {
    let path = fs::canonicalize(source).map_err(|source_error| Error::Open {
        path: source.to_owned(),
        source: source_error,
    })?;
    let metadata = fs::metadata(&path).map_err(|source_error| Error::Open {
        path: path.clone(),
        source: source_error,
    })?;
    let root_dir = RootDir::new(opts);
    if metadata.is_dir() {
        if path.join(model::INDEX_JSON).is_file() {
            return oci_layout::open_dir(&path, &root_dir);
        }
        return Err(Error::NotAnImage { path });
    }
    if !metadata.is_file() || metadata.len() == 0 {
        return Err(Error::NotAnImage { path });
    }
    if let Some(format) = compressed_file_format(&path)? {
        return Err(Error::CompressedSource { path, format });
    }
    let members = TarMembers::scan(&path, metadata.len())?;
    if members.has_docker_manifest() {
        docker_archive::open(&members, &root_dir)
    } else if members.has_oci_layout() {
        oci_layout::open_tar(&members, &root_dir)
    } else {
        Ok(rootfs_tar::open(&path, metadata.len()))
    }
}

/// The compression format of a whole SOURCE file, if its first bytes announce one.
fn compressed_file_format(path: &Path) -> Result<Option<&'static str>, Error> {
    let mut magic = [0u8; compress::MAGIC_LEN];
    let read = File::open(path)
        .and_then(|file| read_up_to(file, &mut magic))
        .map_err(|source| Error::Read {
            location: Location::file(path),
            source,
        })?;
    Ok(match Compression::sniff(&magic[..read]) {
        Compression::None => None,
        other => Some(other.name()),
    })
}

/// Fills as much of `buf` as `reader` has; returns how many bytes were read.
pub(crate) fn read_up_to(mut reader: impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Reads config bytes found at `location`: the blob and its diff_ids, bottom to top.
fn read_config(bytes: Vec<u8>, location: &Location) -> Result<(ConfigBlob, Vec<Digest>), Error> {
    let config = ConfigBlob::parse(bytes).map_err(|source| Error::Json {
        location: location.clone(),
        what: "image config",
        source,
    })?;
    let diff_ids = config
        .parsed
        .diff_ids()
        .map_err(|source| Error::BadDigest {
            location: location.clone(),
            source,
        })?;
    Ok((config, diff_ids))
}

/// One layer as the image metadata names it, before it is checked and made servable.
struct LayerSource<'a> {
    /// Where the layer blob's bytes are.
    extent: Extent,
    /// The descriptor's digest and size, when the format has descriptors (OCI).
    descriptor: Option<(Digest, u64)>,
    /// `config.rootfs.diff_ids[index]`.
    diff_id: Digest,
    /// Position bottom to top, from 0.
    index: usize,
    /// How many layers the image has.
    count: usize,
    /// The store to decompress into.
    root_dir: &'a RootDir<'a>,
}

impl LayerSource<'_> {
    /// "layer 2/5", for messages and progress.
    fn name(&self) -> String {
        format!("layer {}/{}", self.index + 1, self.count)
    }

    /// Checks the layer and returns it as an uncompressed byte range: the blob itself when it is
    /// an uncompressed tar, else its decompressed copy in the store.
    fn prepare(self) -> Result<LayerBlob, Error> {
        let name = self.name();
        // No let-chains: the workspace's rust-version is 1.85.
        if let Some((_, size)) = self.descriptor {
            if size != self.extent.len {
                return Err(Error::SizeMismatch {
                    location: self.extent.location.clone(),
                    what: name,
                    expected: size,
                    actual: self.extent.len,
                });
            }
        }
        match Compression::sniff(&self.extent.magic()?) {
            Compression::None => self.prepare_uncompressed(&name),
            Compression::Unsupported(format) => Err(Error::UnsupportedCompression {
                location: self.extent.location.clone(),
                what: name,
                format,
            }),
            compression => self.prepare_compressed(compression, &name),
        }
    }

    /// An uncompressed blob is served where it is, once its sha256 equals the diff_id (and,
    /// for OCI, the descriptor digest: for an uncompressed layer the two must agree).
    fn prepare_uncompressed(self, name: &str) -> Result<LayerBlob, Error> {
        let descriptor_digest = self.descriptor.map(|(digest, _)| digest);
        if let Some(digest) = descriptor_digest.filter(|digest| *digest != self.diff_id) {
            // Hash once to report which of the two is wrong.
            let actual = self.root_dir.hash(&self.extent, name)?;
            let expected = if actual == self.diff_id {
                digest
            } else {
                self.diff_id
            };
            return Err(Error::DigestMismatch {
                location: self.extent.location.clone(),
                what: format!("{name} (uncompressed)"),
                expected,
                actual,
            });
        }
        self.root_dir.verify(
            &self.extent,
            &self.diff_id,
            &format!("{name} (uncompressed)"),
        )?;
        Ok(LayerBlob {
            file: self.extent.location.file.to_path_buf(),
            offset: self.extent.offset,
            len: self.extent.len,
            diff_id: Some(self.diff_id),
        })
    }

    /// A compressed blob is decompressed once into the store; later opens reuse that copy.
    fn prepare_compressed(self, compression: Compression, name: &str) -> Result<LayerBlob, Error> {
        if let Some(layer) = self.root_dir.cached_layer(&self.diff_id, name)? {
            // The copy is trusted through the diff_id; the source blob still has to match its
            // descriptor (usually a cache hit too, so no hashing).
            if let Some((digest, _)) = &self.descriptor {
                self.root_dir
                    .verify(&self.extent, digest, &format!("{name} (compressed)"))?;
            }
            return Ok(layer);
        }
        self.root_dir.decompress(
            &self.extent,
            compression,
            self.descriptor.as_ref().map(|(digest, _)| digest),
            &self.diff_id,
            name,
        )
    }
}
