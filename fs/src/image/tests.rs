//! Tests of [`open`](super::open) on the real images made by
//! `../shared/scripts/make-test-images.sh` (busybox and Debian, written by buildah, skopeo,
//! podman, umoci and Docker 20.10), and on broken copies of them.
//!
//! The images live in `/tmp/rfs-images` (or `$RFS_TEST_IMAGES`). Without them every test here
//! fails and says how to make them, unless `RFS_SKIP_IMAGE_TESTS=1`, which turns each into a
//! printed skip.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Error, Image, OpenOptions, Platform, SourceKind, open};
use crate::digest::Digest;
use crate::progress::STEP;

/// The images directory, or `None` (after printing why) when the tests are to be skipped.
fn images() -> Option<PathBuf> {
    let dir = std::env::var_os("RFS_TEST_IMAGES")
        .map_or_else(|| PathBuf::from("/tmp/rfs-images"), PathBuf::from);
    if dir.join("SIZES.txt").is_file() {
        return Some(dir);
    }
    if std::env::var("RFS_SKIP_IMAGE_TESTS").as_deref() == Ok("1") {
        eprintln!(
            "skipped: no test images in {} (RFS_SKIP_IMAGE_TESTS=1)",
            dir.display()
        );
        return None;
    }
    panic!(
        "no test images in {}: run `bash ../shared/scripts/make-test-images.sh` as root \
         (or set RFS_SKIP_IMAGE_TESTS=1 to skip these tests)",
        dir.display()
    );
}

/// One image of the set; a missing one fails the test with the same advice.
fn image(images: &Path, name: &str) -> PathBuf {
    let path = images.join(name);
    assert!(
        path.exists(),
        "{}: missing; rerun `bash ../shared/scripts/make-test-images.sh` (with WITH_DOCKER=1)",
        path.display()
    );
    path
}

fn open_with(source: &Path, root: &Path, platform: &str) -> Result<Image, Error> {
    let opts = OpenOptions {
        platform: Platform::parse(platform).expect("platform"),
        ..OpenOptions::new(root)
    };
    open(source, &opts)
}

fn open_amd64(source: &Path, root: &Path) -> Image {
    open_with(source, root, "linux/amd64")
        .unwrap_or_else(|error| panic!("{}: {error:#?}", source.display()))
}

/// `config.rootfs.diff_ids`, read back from the config bytes the image hands over.
fn config_diff_ids(image: &Image) -> Vec<Digest> {
    let config = image.config.as_ref().expect("config");
    let json: serde_json::Value = serde_json::from_slice(&config.bytes).expect("config JSON");
    json["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids array")
        .iter()
        .map(|id| Digest::parse(id.as_str().expect("string")).expect("digest"))
        .collect()
}

fn diff_ids(image: &Image) -> Vec<Digest> {
    image
        .layers
        .iter()
        .map(|layer| layer.diff_id.expect("diff_id"))
        .collect()
}

/// Reads one layer's byte range.
fn layer_bytes(image: &Image, index: usize) -> Vec<u8> {
    let layer = &image.layers[index];
    let mut bytes = vec![0u8; usize::try_from(layer.len).expect("fits")];
    File::open(&layer.file)
        .expect("open layer file")
        .read_exact_at(&mut bytes, layer.offset)
        .expect("read layer");
    bytes
}

/// The members of a layer tar given as bytes.
fn tar_paths(tar_bytes: &[u8]) -> Vec<String> {
    tar::Archive::new(tar_bytes)
        .entries()
        .expect("entries")
        .map(|entry| {
            let entry = entry.expect("entry");
            String::from_utf8_lossy(&entry.path_bytes()).into_owned()
        })
        .collect()
}

/// Copies an OCI layout directory (files and the `blobs/sha256` level) to `to`.
fn copy_layout(from: &Path, to: &Path) {
    for relative in ["", "blobs", "blobs/sha256"] {
        fs::create_dir_all(to.join(relative)).expect("mkdir");
        for entry in fs::read_dir(from.join(relative)).expect("list") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("type").is_file() {
                fs::copy(entry.path(), to.join(relative).join(entry.file_name())).expect("copy");
            }
        }
    }
}

/// The descriptors of the one manifest in an OCI layout's `index.json`.
fn read_manifest(layout: &Path) -> (serde_json::Value, PathBuf) {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index")).expect("json");
    let digest =
        Digest::parse(index["manifests"][0]["digest"].as_str().expect("digest")).expect("digest");
    let path = layout.join("blobs/sha256").join(digest.hex());
    let manifest = serde_json::from_slice(&fs::read(&path).expect("manifest")).expect("json");
    (manifest, path)
}

/// Replaces the manifest of a copied layout, updating `index.json` to name the new blob.
fn write_manifest(layout: &Path, manifest: &serde_json::Value) {
    let bytes = serde_json::to_vec(manifest).expect("json");
    let digest = Digest::of_bytes(&bytes);
    fs::write(layout.join("blobs/sha256").join(digest.hex()), &bytes).expect("write");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index")).expect("json");
    index["manifests"][0]["digest"] = serde_json::json!(digest);
    index["manifests"][0]["size"] = serde_json::json!(bytes.len());
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("write");
}

/// Flips one bit in the middle of `path`.
fn flip_middle_byte(path: &Path) {
    let mut bytes = fs::read(path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(path, bytes).expect("write");
}

#[test]
fn errors_stay_small() {
    // Returned by value from every step of `open`, and likely wrapped by callers' errors.
    assert!(
        std::mem::size_of::<Error>() <= 128,
        "{}",
        std::mem::size_of::<Error>()
    );
}

#[test]
fn every_image_opens_with_its_kind_and_layer_count() {
    let Some(images) = images() else { return };
    let root = tempfile::tempdir().expect("tempdir");
    // (file, kind, exact layer count when the config is not the reference)
    let cases: &[(&str, SourceKind, Option<usize>)] = &[
        ("busybox-oci", SourceKind::OciLayoutDir, None),
        ("busybox-oci.tar", SourceKind::OciLayoutTar, None),
        ("busybox-oci-zstd", SourceKind::OciLayoutDir, None),
        ("busybox-oci-uncompressed", SourceKind::OciLayoutDir, None),
        (
            "busybox-docker-archive.tar",
            SourceKind::DockerArchive,
            None,
        ),
        ("busybox-multiarch-oci", SourceKind::OciLayoutDir, None),
        (
            "docker/busybox-docker-save.tar",
            SourceKind::DockerArchive,
            None,
        ),
        ("busybox-podman-export.tar", SourceKind::RootfsTar, Some(1)),
        (
            "docker/busybox-docker-export.tar",
            SourceKind::RootfsTar,
            Some(1),
        ),
        ("debian-oci", SourceKind::OciLayoutDir, Some(1)),
        ("debian-oci.tar", SourceKind::OciLayoutTar, Some(1)),
        (
            "docker/debian-docker-save.tar",
            SourceKind::DockerArchive,
            Some(1),
        ),
        ("debian-rootfs.tar", SourceKind::RootfsTar, Some(1)),
    ];
    for (name, kind, layer_count) in cases {
        let source = image(&images, name);
        let opened = open_amd64(&source, root.path());
        assert_eq!(opened.kind, *kind, "{name}");
        match layer_count {
            Some(count) => assert_eq!(opened.layers.len(), *count, "{name}"),
            None => {
                assert_eq!(diff_ids(&opened), config_diff_ids(&opened), "{name}");
                assert!(
                    opened.layers.len() > 1,
                    "{name}: busybox has several layers"
                );
            }
        }
        if *kind == SourceKind::RootfsTar {
            assert_eq!(opened.layers[0].diff_id, None, "{name}");
            assert!(opened.config.is_none(), "{name}");
        } else {
            assert_eq!(diff_ids(&opened), config_diff_ids(&opened), "{name}");
            let config = opened.config.as_ref().expect("config");
            assert_eq!(config.digest, Digest::of_bytes(&config.bytes), "{name}");
        }
        assert_eq!(
            opened.manifest_digest.is_some(),
            matches!(kind, SourceKind::OciLayoutDir | SourceKind::OciLayoutTar),
            "{name}"
        );
        for (index, layer) in opened.layers.iter().enumerate() {
            assert!(layer.file.is_absolute(), "{name}");
            // Each layer range starts with a valid tar header.
            let mut header = tar::Header::new_old();
            File::open(&layer.file)
                .expect("open")
                .read_exact_at(header.as_mut_bytes(), layer.offset)
                .expect("read header");
            assert!(
                header.cksum().is_ok(),
                "{name} layer {index}: no tar header"
            );
        }
    }
}

#[test]
fn busybox_layer_ranges_hash_to_their_diff_ids() {
    let Some(images) = images() else { return };
    let root = tempfile::tempdir().expect("tempdir");
    for name in [
        "busybox-oci",
        "busybox-oci.tar",
        "busybox-oci-zstd",
        "busybox-docker-archive.tar",
        "docker/busybox-docker-save.tar",
    ] {
        let opened = open_amd64(&image(&images, name), root.path());
        for index in 0..opened.layers.len() {
            assert_eq!(
                Some(Digest::of_bytes(&layer_bytes(&opened, index))),
                opened.layers[index].diff_id,
                "{name} layer {index}"
            );
        }
    }
}

#[test]
fn every_busybox_encoding_yields_the_same_diff_ids() {
    let Some(images) = images() else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let reference = diff_ids(&open_amd64(&image(&images, "busybox-oci"), root.path()));
    for name in [
        "busybox-oci-zstd",
        "busybox-oci-uncompressed",
        "busybox-oci.tar",
        "busybox-docker-archive.tar",
    ] {
        // A fresh root each time: the zstd layers are really decompressed, not reused.
        let fresh = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            diff_ids(&open_amd64(&image(&images, name), fresh.path())),
            reference,
            "{name}"
        );
    }
}

#[test]
fn gzip_layers_go_to_the_store_and_uncompressed_ones_stay_in_place() {
    let Some(images) = images() else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let blobs = root.path().join("blobs/sha256");

    let gzip = open_amd64(&image(&images, "busybox-oci"), root.path());
    for layer in &gzip.layers {
        let diff_id = layer.diff_id.expect("diff_id");
        assert_eq!(layer.file, blobs.join(diff_id.hex()));
        assert_eq!(layer.offset, 0);
    }

    let archive = fs::canonicalize(image(&images, "busybox-docker-archive.tar")).expect("path");
    let docker = open_amd64(&archive, root.path());
    // skopeo names each layer `<diff_id>.tar` and links `<id>/layer.tar` to it.
    let mut tar = tar::Archive::new(File::open(&archive).expect("open"));
    let offsets: Vec<(String, u64)> = tar
        .entries()
        .expect("entries")
        .map(|entry| {
            let entry = entry.expect("entry");
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            (path, entry.raw_file_position())
        })
        .collect();
    for layer in &docker.layers {
        assert_eq!(layer.file, archive, "served in place");
        let member = format!("{}.tar", layer.diff_id.expect("diff_id").hex());
        assert!(
            offsets.contains(&(member.clone(), layer.offset)),
            "{member} at {}",
            layer.offset
        );
    }

    let uncompressed = fs::canonicalize(image(&images, "busybox-oci-uncompressed")).expect("path");
    for layer in &open_amd64(&uncompressed, root.path()).layers {
        assert!(
            layer.file.starts_with(&uncompressed),
            "{}",
            layer.file.display()
        );
    }
    let temp_files: Vec<_> = fs::read_dir(&blobs)
        .expect("list")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(temp_files.is_empty(), "{temp_files:?}");
}

#[test]
fn multiarch_index_chooses_by_platform() {
    let Some(images) = images() else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let source = image(&images, "busybox-multiarch-oci");
    let busybox = diff_ids(&open_amd64(&image(&images, "busybox-oci"), root.path()));

    let amd64 = open_amd64(&source, root.path());
    assert_eq!(diff_ids(&amd64), busybox);
    if Platform::host().architecture == "amd64" {
        let default = open(&source, &OpenOptions::new(root.path())).expect("host platform");
        assert_eq!(
            diff_ids(&default),
            busybox,
            "the host platform is the default"
        );
    }

    let arm64 = open_with(&source, root.path(), "linux/arm64/v8").expect("arm64");
    assert_eq!(arm64.layers.len(), 1);
    assert_eq!(
        arm64
            .config
            .as_ref()
            .expect("config")
            .parsed
            .architecture
            .as_deref(),
        Some("arm64")
    );
    assert!(
        tar_paths(&layer_bytes(&arm64, 0))
            .iter()
            .any(|path| path.trim_start_matches("./") == "ARCH.txt"),
        "the arm64 layer holds ARCH.txt"
    );
    let plain_arm64 = open_with(&source, root.path(), "linux/arm64").expect("arm64");
    assert_eq!(diff_ids(&plain_arm64), diff_ids(&arm64));

    match open_with(&source, root.path(), "linux/s390x") {
        Err(error @ Error::NoMatchingPlatform { .. }) => {
            let message = error.to_string();
            assert!(message.contains("linux/arm64/v8"), "{message}");
            assert!(message.contains("linux/amd64"), "{message}");
        }
        other => panic!("expected NoMatchingPlatform, got {other:?}"),
    }
}

/// Opens `source` in `root`, returning the time taken and the progress reports.
fn timed_open(source: &Path, root: &Path) -> (Duration, Vec<(String, u64, u64)>) {
    let reports = Mutex::new(Vec::new());
    let record = |what: &str, done: u64, total: u64| {
        reports
            .lock()
            .expect("lock")
            .push((what.to_owned(), done, total));
    };
    let opts = OpenOptions {
        platform: Platform::parse("linux/amd64").expect("platform"),
        progress: Some(&record),
        ..OpenOptions::new(root)
    };
    let start = Instant::now();
    open(source, &opts).unwrap_or_else(|error| panic!("{}: {error:#?}", source.display()));
    let elapsed = start.elapsed();
    (elapsed, reports.into_inner().expect("lock"))
}

#[test]
fn a_second_open_of_an_unchanged_image_hashes_nothing() {
    let Some(images) = images() else { return };
    for name in ["docker/debian-docker-save.tar", "debian-oci"] {
        let root = tempfile::tempdir().expect("tempdir");
        let source = image(&images, name);
        let (first, first_reports) = timed_open(&source, root.path());
        let (second, second_reports) = timed_open(&source, root.path());
        eprintln!("{name}: first open {first:?}, second open {second:?}");
        assert!(!first_reports.is_empty(), "{name}: the first open hashes");
        assert!(
            second_reports.is_empty(),
            "{name}: the second open should hash nothing: {second_reports:?}"
        );
        assert!(second < first, "{name}: {second:?} vs {first:?}");

        // Reports come at most every STEP bytes, plus the first and the last.
        for window in first_reports.windows(2) {
            let ((what, done, total), (next_what, next_done, _)) = (&window[0], &window[1]);
            if what == next_what && next_done < total {
                assert!(next_done - done >= STEP, "{window:?}");
            }
        }
    }
}

#[test]
fn a_touched_archive_is_hashed_again() {
    let Some(images) = images() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("busybox.tar");
    fs::copy(image(&images, "busybox-docker-archive.tar"), &copy).expect("copy");
    let root = dir.path().join("root");
    let (_, first) = timed_open(&copy, &root);
    assert!(!first.is_empty());
    let file = File::options().write(true).open(&copy).expect("open");
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .expect("touch");
    drop(file);
    let (_, again) = timed_open(&copy, &root);
    assert!(!again.is_empty(), "a changed mtime must defeat the cache");
}

#[test]
fn a_docker_archive_naming_a_missing_layer_is_refused() {
    let Some(images) = images() else { return };
    let source = image(&images, "busybox-docker-archive.tar");
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("missing-layer.tar");
    // Copy every member except the bottom layer's data (its symlink stays, now dangling).
    let opened = open_amd64(&source, &dir.path().join("root"));
    let missing = format!("{}.tar", opened.layers[0].diff_id.expect("diff_id").hex());
    let mut builder = tar::Builder::new(File::create(&broken).expect("create"));
    let mut input = tar::Archive::new(File::open(&source).expect("open"));
    for entry in input.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path_bytes().as_ref() == missing.as_bytes() {
            continue;
        }
        let mut header = entry.header().clone();
        let path = entry.path().expect("path").into_owned();
        if header.entry_type().is_symlink() {
            let target = entry
                .link_name()
                .expect("link")
                .expect("target")
                .into_owned();
            builder
                .append_link(&mut header, &path, &target)
                .expect("append");
        } else {
            builder
                .append_data(&mut header, &path, &mut entry)
                .expect("append");
        }
    }
    builder
        .into_inner()
        .expect("finish")
        .flush()
        .expect("flush");

    match open_amd64_result(&broken, dir.path()) {
        Err(error @ Error::MissingMember { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&missing), "{message}");
            assert!(message.contains("missing-layer.tar"), "{message}");
        }
        other => panic!("expected MissingMember, got {other:?}"),
    }
}

fn open_amd64_result(source: &Path, root: &Path) -> Result<Image, Error> {
    open_with(source, &root.join("root"), "linux/amd64")
}

#[test]
fn a_flipped_byte_in_a_blob_is_a_digest_mismatch() {
    let Some(images) = images() else { return };
    for name in [
        "busybox-oci",
        "busybox-oci-uncompressed",
        "busybox-oci-zstd",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = dir.path().join("oci");
        copy_layout(&image(&images, name), &layout);
        let (manifest, _) = read_manifest(&layout);
        let layer = Digest::parse(manifest["layers"][0]["digest"].as_str().expect("digest"))
            .expect("digest");
        let blob = layout.join("blobs/sha256").join(layer.hex());
        flip_middle_byte(&blob);
        let root = dir.path().join("root");
        match open_with(&layout, &root, "linux/amd64") {
            Err(error @ Error::DigestMismatch { .. }) => {
                let message = error.to_string();
                assert!(message.contains(&layer.hex()), "{name}: {message}");
                assert!(message.contains("layer 1/"), "{name}: {message}");
            }
            other => panic!("{name}: expected DigestMismatch, got {other:?}"),
        }
        let blobs = root.join("blobs/sha256");
        let left: Vec<_> = fs::read_dir(&blobs)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .map(|e| e.file_name())
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "{name}: nothing half-written: {left:?}");
    }
}

#[test]
fn a_flipped_byte_in_an_archived_layer_is_a_digest_mismatch() {
    let Some(images) = images() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("busybox.tar");
    fs::copy(image(&images, "busybox-docker-archive.tar"), &archive).expect("copy");
    // The bottom layer is the first and largest member: its data covers the middle.
    flip_middle_byte(&archive);
    assert!(matches!(
        open_amd64_result(&archive, dir.path()),
        Err(Error::DigestMismatch { .. })
    ));
}

#[test]
fn an_unknown_layer_media_type_is_named() {
    let Some(images) = images() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("oci");
    copy_layout(&image(&images, "busybox-oci"), &layout);
    let (mut manifest, _) = read_manifest(&layout);
    manifest["layers"][1]["mediaType"] = serde_json::json!("application/vnd.example.unknown");
    write_manifest(&layout, &manifest);
    match open_amd64_result(&layout, dir.path()) {
        Err(error @ Error::UnknownMediaType { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("application/vnd.example.unknown"),
                "{message}"
            );
        }
        other => panic!("expected UnknownMediaType, got {other:?}"),
    }
}

#[test]
fn an_edited_manifest_without_a_new_digest_is_a_mismatch() {
    let Some(images) = images() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("oci");
    copy_layout(&image(&images, "busybox-oci"), &layout);
    let (_, manifest_path) = read_manifest(&layout);
    let edited = fs::read_to_string(&manifest_path)
        .expect("read")
        .replace("schemaVersion\":2", "schemaVersion\":3");
    fs::write(&manifest_path, edited).expect("write");
    match open_amd64_result(&layout, dir.path()) {
        Err(Error::DigestMismatch { what, .. }) => assert_eq!(what, "manifest"),
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
}

#[test]
fn random_bytes_are_not_an_image() {
    let Some(_) = images() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("random.bin");
    // A xorshift stream: deterministic, with no tar structure.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..65_536)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    fs::write(&path, bytes).expect("write");
    match open_amd64_result(&path, dir.path()) {
        Err(error @ Error::NotAnImage { .. }) => {
            let message = error.to_string();
            assert!(
                message.ends_with("random.bin: not a tar archive or image layout"),
                "{message}"
            );
        }
        other => panic!("expected NotAnImage, got {other:?}"),
    }
    match open_amd64_result(dir.path(), dir.path()) {
        Err(Error::NotAnImage { .. }) => {}
        other => panic!("a directory without index.json: expected NotAnImage, got {other:?}"),
    }
}

#[test]
fn a_truncated_archive_is_refused() {
    let Some(images) = images() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    for name in [
        "busybox-docker-archive.tar",
        "debian-oci.tar",
        "docker/busybox-docker-save.tar",
    ] {
        let whole = fs::read(image(&images, name)).expect("read");
        let cut = dir.path().join("cut.tar");
        fs::write(&cut, &whole[..whole.len() / 2]).expect("write");
        match open_amd64_result(&cut, dir.path()) {
            Err(error @ (Error::TruncatedMember { .. } | Error::TruncatedEnd { .. })) => {
                assert!(error.to_string().contains("cut.tar: truncated"), "{error}");
            }
            other => panic!("{name}: expected a truncation error, got {other:?}"),
        }
    }
}

#[test]
fn a_compressed_archive_is_refused_with_advice() {
    let Some(images) = images() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let gz = dir.path().join("busybox.tar.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        File::create(&gz).expect("create"),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(&fs::read(image(&images, "busybox-docker-archive.tar")).expect("read"))
        .expect("compress");
    encoder.finish().expect("finish");
    match open_amd64_result(&gz, dir.path()) {
        Err(Error::CompressedSource { format, .. }) => assert_eq!(format, "gzip"),
        other => panic!("expected CompressedSource, got {other:?}"),
    }
}
