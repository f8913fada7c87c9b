//! The checks behind every fuzz target, shared with the replay test.
//!
//! Each target function takes the raw fuzz input, drives one public API of `rfs-fs` with it,
//! panics if a property that API promises is broken, and returns whether the input was
//! [`Outcome::Accepted`]. The fuzz targets in `fuzz/fuzz_targets/` are one call each to these
//! functions; `fs/tests/fuzzed.rs` includes this very file with `#[path]` and replays the
//! checked-in inputs through them on the stable toolchain, so a crash found by libFuzzer
//! reproduces as an ordinary `cargo test` failure.
//!
//! Inputs that describe several files (the layers of `lower_merge`, the blobs of
//! `image_manifest`) are split at [`PART_SEPARATOR`]. Image metadata must name blobs by sha256,
//! which a mutation never gets right, so `image_manifest` substitutes placeholders with the
//! digests and sizes of earlier parts (see [`image_manifest`]).
//!
//! [`seeds`] makes the small valid inputs checked in under `fuzz/corpus-seeds/`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use rfs_fs::image::{self, Image, OpenOptions, Platform};
use rfs_fs::lower::{FileKind, LayerInput, LowerTree};
use rfs_fs::ovl::{self, Marker, Markers, NameRole, Namespace, OverrideStat};
use rfs_fs::tar_index::{self, EntryKind, Limits, PathError, TarIndex, codec};
use sha2::{Digest as _, Sha256};

/// What a target function made of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The API under test accepted the input (and every checked property held).
    Accepted,
    /// The API returned an error for the input.
    Rejected,
}

/// Small limits, so the fuzzer reaches every limit check with inputs of a few KiB.
pub const LIMITS: Limits = Limits {
    max_entries: 64,
    max_path_len: 256,
    max_xattr_bytes: 1024,
};

/// Separates the files (layer tars, blobs) that one fuzz input describes.
pub const PART_SEPARATOR: &[u8] = b"\n%%rfs-part%%\n";

/// Most layers `lower_merge` builds from one input.
const MAX_LAYERS: usize = 3;

/// Most parts (blobs plus the root document) `image_manifest` splits an input into.
const MAX_IMAGE_PARTS: usize = 6;

/// How much of a layer `image_manifest` loads to index it; larger ones are left out.
const MAX_LAYER_BYTES: u64 = 16 << 20;

/// How many bytes of a file's data the tree checks read back.
const READ_BACK: usize = 4096;

/// The platform images are opened for, fixed so results do not depend on the host.
const PLATFORM: &str = "linux/amd64";

/// Splits `data` at [`PART_SEPARATOR`] into at most `max` parts; the last part keeps any
/// further separators.
pub fn split_parts(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < max {
        let Some(at) = find(rest, PART_SEPARATOR) else {
            break;
        };
        parts.push(&rest[..at]);
        rest = &rest[at + PART_SEPARATOR.len()..];
    }
    parts.push(rest);
    parts
}

/// The first position of `needle` (not empty) in `haystack`.
///
/// Compares slices only where the first byte matches: libFuzzer intercepts every slice
/// comparison, and comparing at each position made splitting most of `lower_merge`'s time.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last_start = haystack.len().checked_sub(needle.len())?;
    (0..=last_start)
        .find(|&at| haystack[at] == first && haystack[at + 1..at + needle.len()] == *rest)
}

// ------------------------------------------------------------------------ tar_index_build

/// `tar_index::build` over `data` as is, then with its header checksums repaired (see
/// [`repair_tar_checksums`]): it must return, and an index it accepts must keep every promise
/// of `TarIndex` (see [`check_index`]), including that its data ranges lie inside the stream and
/// that it survives `codec::encode` → `codec::decode` unchanged.
pub fn tar_index_build(data: &[u8]) -> Outcome {
    let mut outcome = build_and_check(data);
    if repair_tar_checksums(data)
        .is_some_and(|repaired| build_and_check(&repaired) == Outcome::Accepted)
    {
        outcome = Outcome::Accepted;
    }
    outcome
}

/// Indexes `data` with [`LIMITS`] and checks an accepted index.
fn build_and_check(data: &[u8]) -> Outcome {
    match tar_index::build(Cursor::new(data), &LIMITS) {
        Ok(index) => {
            check_built_index(&index, data.len() as u64);
            Outcome::Accepted
        }
        Err(error) => {
            render(&error);
            Outcome::Rejected
        }
    }
}

/// The size of a tar block.
const BLOCK: usize = 512;

/// `data` with the checksum of every header rewritten to match, or `None` if none changes.
///
/// Any mutation of a header breaks its checksum, so without this the fuzzer would rarely get
/// past the first check of a header. Headers are found as a tar reader finds them: the next
/// one follows the previous one's data, whose size is read from the header (octal or GNU
/// base-256); the walk stops at a zero block or an unreadable size.
pub fn repair_tar_checksums(data: &[u8]) -> Option<Vec<u8>> {
    let mut repaired = data.to_vec();
    let mut changed = false;
    let mut at = 0;
    while let Some(header) = repaired.get_mut(at..at + BLOCK) {
        if header.iter().all(|&b| b == 0) {
            break;
        }
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        if data[at + 148..at + 156] != *field.as_bytes() {
            changed = true;
        }
        header[148..156].copy_from_slice(field.as_bytes());
        let Some(size) = header_size(&header[124..136]) else {
            break;
        };
        let Some(next) = usize::try_from(size)
            .ok()
            .and_then(|size| size.checked_next_multiple_of(BLOCK))
            .and_then(|padded| padded.checked_add(at + BLOCK))
        else {
            break;
        };
        at = next;
    }
    changed.then_some(repaired)
}

/// A header's size field: GNU base-256 if the high bit of its first byte is set, else octal
/// digits between optional spaces and NULs.
fn header_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        return field[1..]
            .iter()
            .try_fold(u64::from(field[0] & 0x7f), |size, &b| {
                size.checked_mul(256).map(|size| size | u64::from(b))
            });
    }
    let digits = field
        .iter()
        .skip_while(|&&b| b == b' ' || b == 0)
        .take_while(|&&b| b.is_ascii_digit());
    let mut size = 0u64;
    for &digit in digits {
        size = size
            .checked_mul(8)?
            .checked_add(u64::from(digit.checked_sub(b'0').filter(|d| *d < 8)?))?;
    }
    Some(size)
}

/// What `build` promises beyond [`check_index`]: data inside the stream, no bare whiteout, and
/// an index the decoder accepts as is.
fn check_built_index(index: &TarIndex, stream_len: u64) {
    check_index(index);
    for entry in &index.entries {
        let end = entry.data_offset.checked_add(entry.size);
        assert!(
            end.is_some_and(|end| end <= stream_len),
            "data of {:?} ({} bytes at {}) lies outside the {stream_len}-byte stream",
            entry.path,
            entry.size,
            entry.data_offset,
        );
        assert_ne!(
            entry.path.rsplit('/').next(),
            Some(".wh."),
            "bare whiteout accepted"
        );
    }
    let encoded = codec::encode(index);
    match codec::decode(&encoded, &LIMITS) {
        Ok(decoded) => assert_eq!(&decoded, index, "encode → decode changed a built index"),
        Err(error) => panic!("decode rejects the encoding of a built index: {error}"),
    }
}

/// The properties every `TarIndex` has, whether built or decoded under [`LIMITS`].
fn check_index(index: &TarIndex) {
    assert!(
        index.entries.len() <= LIMITS.max_entries,
        "{} entries, over the limit",
        index.entries.len()
    );
    let mut seen: HashSet<&str> = HashSet::new();
    let mut non_links: HashSet<&str> = HashSet::new();
    for entry in &index.entries {
        let path = entry.path.as_str();
        assert!(path.len() <= LIMITS.max_path_len, "path {path:?} too long");
        assert!(
            path.is_empty()
                || path
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0')),
            "path {path:?} is not normalised"
        );
        assert!(seen.insert(path), "path {path:?} repeats");
        assert!(
            entry.link_target.len() <= LIMITS.max_path_len,
            "link target of {path:?} too long"
        );
        let xattr_bytes: usize = entry
            .xattrs
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        assert!(
            xattr_bytes <= LIMITS.max_xattr_bytes,
            "{path:?} has {xattr_bytes} bytes of xattrs"
        );
        if entry.kind != EntryKind::File {
            assert_eq!(entry.size, 0, "{path:?} is not a file but has data");
        }
        if entry.kind == EntryKind::HardLink {
            let target = std::str::from_utf8(&entry.link_target).unwrap_or("\u{fffd}");
            assert!(
                non_links.contains(target),
                "hard link {path:?} names {target:?}, not an earlier non-link member"
            );
        } else {
            non_links.insert(path);
        }
    }
}

// ------------------------------------------------------------------------ index_codec

/// `codec::decode` over `data` as is, then with its trailing checksum recomputed (so mutated
/// entries reach the entry decoder instead of stopping at the checksum), then `data` as a tar
/// (header checksums repaired) whose built index must round-trip. A decoded index must keep
/// the `TarIndex` promises and decode back to itself after `encode`.
pub fn index_codec(data: &[u8]) -> Outcome {
    let mut outcome = Outcome::Rejected;
    if decode_and_check(data) {
        outcome = Outcome::Accepted;
    }
    if with_valid_checksum(data).is_some_and(|repaired| decode_and_check(&repaired)) {
        outcome = Outcome::Accepted;
    }
    let repaired = repair_tar_checksums(data);
    let tar = repaired.as_deref().unwrap_or(data);
    if let Ok(index) = tar_index::build(Cursor::new(tar), &LIMITS) {
        check_built_index(&index, tar.len() as u64);
        outcome = Outcome::Accepted;
    }
    outcome
}

/// Decodes `bytes`; on success checks the index and the encode → decode round trip.
fn decode_and_check(bytes: &[u8]) -> bool {
    match codec::decode(bytes, &LIMITS) {
        Ok(index) => {
            check_index(&index);
            let encoded = codec::encode(&index);
            match codec::decode(&encoded, &LIMITS) {
                Ok(again) => assert_eq!(again, index, "encode → decode changed an index"),
                Err(error) => panic!("decode rejects the encoding of a decoded index: {error}"),
            }
            true
        }
        Err(error) => {
            render(&error);
            false
        }
    }
}

/// `data` with its last 32 bytes replaced by the sha256 of the rest, if that changes anything.
fn with_valid_checksum(data: &[u8]) -> Option<Vec<u8>> {
    let body_len = data.len().checked_sub(32)?;
    let body = &data[..body_len];
    let checksum = Sha256::digest(body);
    if data[body_len..] == checksum[..] {
        return None;
    }
    let mut repaired = body.to_vec();
    repaired.extend_from_slice(&checksum);
    Some(repaired)
}

// ------------------------------------------------------------------------ tar_normalize

/// `tar_index::normalize` over `data`: a result never starts with `/`, has no empty, `.` or
/// `..` component, normalises to itself, and agrees with a simple model of lexical
/// resolution; every error names the right cause.
pub fn tar_normalize(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).ok();
    let has_nul = data.contains(&0);
    match tar_index::normalize(data) {
        Ok(path) => {
            assert!(!has_nul, "a path with a NUL byte was accepted");
            let text = text.expect("a path that is not UTF-8 was accepted");
            assert!(!path.starts_with('/'), "{path:?} starts with '/'");
            assert!(
                path.is_empty()
                    || path
                        .split('/')
                        .all(|c| !c.is_empty() && c != "." && c != ".."),
                "{path:?} has an empty, '.' or '..' component"
            );
            assert_eq!(
                tar_index::normalize(path.as_bytes()).as_deref(),
                Ok(path.as_str()),
                "normalising {path:?} again changes it"
            );
            assert_eq!(
                resolve_model(text).as_deref(),
                Some(path.as_str()),
                "{text:?}"
            );
            Outcome::Accepted
        }
        Err(error) => {
            match error {
                PathError::ContainsNul => assert!(has_nul, "ContainsNul without a NUL byte"),
                PathError::NotUtf8 => assert!(
                    !has_nul && text.is_none(),
                    "NotUtf8 for a UTF-8 path or before the NUL check"
                ),
                PathError::EscapesRoot => {
                    let text = text.expect("EscapesRoot for a path that is not UTF-8");
                    assert!(!has_nul, "EscapesRoot for a path with a NUL byte");
                    assert_eq!(resolve_model(text), None, "{text:?} does not escape");
                }
            }
            render(&error);
            Outcome::Rejected
        }
    }
}

/// Lexical resolution the slow, obvious way: `None` if `..` climbs above the root.
fn resolve_model(text: &str) -> Option<String> {
    let mut kept: Vec<&str> = Vec::new();
    for component in text.split('/') {
        if component == ".." {
            kept.pop()?;
        } else if !component.is_empty() && component != "." {
            kept.push(component);
        }
    }
    Some(kept.join("/"))
}

// ------------------------------------------------------------------------ lower_merge

/// Target `ovl_markers`: the overlay format's decoders in `rfs_fs::ovl`.
///
/// The whole input is classified as a directory entry name and decoded as an
/// `override_stat` value; its lines, split at the first `=`, are decoded as an entry's xattrs
/// (name, value). Checked: a name's role and `whiteout_name` agree; a decoded override encodes
/// back to itself; [`Markers::decode`] sees only private names (what `Markers::read` lists
/// them by), takes opaque only from `y`, and every marker rfs writes decodes back. Accepted
/// when the xattrs carried any marker.
pub fn ovl_markers(data: &[u8]) -> Outcome {
    check_name_role(data);
    if let Some(owner) = OverrideStat::decode(data) {
        assert!(owner.perm <= 0o7777, "{owner:?} has file type bits");
        assert_eq!(
            OverrideStat::decode(&owner.encode()),
            Some(owner),
            "encoding {owner:?} does not decode back"
        );
        let text = std::str::from_utf8(data).expect("a non-UTF-8 override was accepted");
        let fields = text.split(':').count();
        assert!(fields == 3 || fields == 4, "{text:?} has {fields} fields");
    }
    let pairs: Vec<(&[u8], &[u8])> = data
        .split(|&b| b == b'\n')
        .map(|line| match line.iter().position(|&b| b == b'=') {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => (line, &[][..]),
        })
        .collect();
    let markers = Markers::decode(pairs.iter().copied());
    let private_only = Markers::decode(
        pairs
            .iter()
            .copied()
            .filter(|(name, _)| ovl::is_private_xattr(name)),
    );
    assert_eq!(
        markers, private_only,
        "a name that is not private changed the markers"
    );
    let opaque = pairs.iter().any(|&(name, value)| {
        matches!(name, b"trusted.overlay.opaque" | b"user.overlay.opaque")
            && value == Marker::OPAQUE_VALUE
    });
    assert_eq!(
        markers.opaque, opaque,
        "opaque without a `y` marker, or missed"
    );
    let last_owner = pairs
        .iter()
        .rev()
        .find(|(name, _)| *name == ovl::OVERRIDE_STAT.to_bytes())
        .and_then(|(_, value)| OverrideStat::decode(value));
    assert_eq!(
        markers.owner, last_owner,
        "override_stat decoded differently"
    );
    check_written_markers(data);
    if markers == Markers::default() {
        Outcome::Rejected
    } else {
        Outcome::Accepted
    }
}

/// [`ovl::name_role`] and [`ovl::whiteout_name`] agree on `name`.
fn check_name_role(name: &[u8]) {
    match ovl::name_role(name) {
        NameRole::Entry => assert!(!name.starts_with(ovl::WHITEOUT_PREFIX)),
        NameRole::OpaqueMarker => assert_eq!(name, ovl::OPAQUE_MARKER),
        NameRole::Whiteout(hidden) => {
            assert!(!hidden.is_empty(), "a bare `.wh.` whiteout");
            assert!(
                !hidden.starts_with(ovl::WHITEOUT_PREFIX),
                "a meta name as a whiteout"
            );
            assert_eq!(ovl::whiteout_name(hidden), name);
            assert_eq!(ovl::name_role(hidden), NameRole::Entry);
        }
        NameRole::Meta => {
            assert!(name.starts_with(ovl::WHITEOUT_PREFIX) && name != ovl::OPAQUE_MARKER);
        }
    }
}

/// Every marker rfs writes, in either namespace, is private and decodes to what was written;
/// the redirect value and origin number come from the input.
fn check_written_markers(data: &[u8]) {
    let mut number = [0u8; 8];
    for (slot, byte) in number.iter_mut().zip(data) {
        *slot = *byte;
    }
    let ino = u64::from_le_bytes(number);
    for ns in [Namespace::Trusted, Namespace::User] {
        let decode_one = |marker: Marker, value: &[u8]| {
            let name = marker.xattr(ns).to_bytes();
            assert!(ovl::is_private_xattr(name), "{name:?} is not private");
            Markers::decode([(name, value)])
        };
        assert!(decode_one(Marker::Opaque, Marker::OPAQUE_VALUE).opaque);
        assert_eq!(
            decode_one(Marker::Redirect, data).redirect.as_deref(),
            Some(data)
        );
        assert_eq!(
            decode_one(Marker::Origin, &Marker::origin_value(ino)).origin,
            Some(ino)
        );
        assert!(decode_one(Marker::Metacopy, b"").metacopy);
    }
}

/// Up to [`MAX_LAYERS`] tars (split at [`PART_SEPARATOR`], bottom first; header checksums
/// repaired) are indexed, written to temp files and flattened with `LowerTree::build`; tars
/// the indexer rejects are left out. A tree must satisfy [`check_tree`].
pub fn lower_merge(data: &[u8]) -> Outcome {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let mut layers = Vec::new();
    for (number, part) in split_parts(data, MAX_LAYERS).into_iter().enumerate() {
        let repaired = repair_tar_checksums(part);
        let part = repaired.as_deref().unwrap_or(part);
        let Ok(index) = tar_index::build(Cursor::new(part), &LIMITS) else {
            continue;
        };
        let file = dir.path().join(format!("layer{number}.tar"));
        fs::write(&file, part).expect("writing a layer tar");
        layers.push(LayerInput::Tar {
            file,
            offset: 0,
            index,
        });
    }
    if layers.is_empty() {
        return Outcome::Rejected;
    }
    match LowerTree::build(layers) {
        Ok(tree) => {
            check_tree(&tree);
            Outcome::Accepted
        }
        Err(error) => {
            render(&error);
            Outcome::Rejected
        }
    }
}

/// The structural promises of a `LowerTree`: numbered children ranges that are name-sorted,
/// unique and point back to their parent; `lookup_path(path(i)) == Some(i)`; hard-link groups
/// led by their first node; and file data readable where the tree says it is.
fn check_tree(tree: &LowerTree) {
    let len = u32::try_from(tree.len()).expect("node count fits u32");
    assert!(len >= 1, "no root node");
    let root = tree.node(LowerTree::ROOT);
    assert_eq!(root.kind, FileKind::Dir, "the root is not a directory");
    assert_eq!(root.parent, LowerTree::ROOT, "the root's parent");
    for i in 0..len {
        let node = tree.node(i);
        let children = tree.children(i);
        assert!(
            children.start <= children.end && children.end <= len,
            "children of {i} out of range: {children:?}"
        );
        if node.kind != FileKind::Dir {
            assert!(children.is_empty(), "non-directory {i} has children");
        }
        let mut previous: Option<&[u8]> = None;
        for child in children {
            let child_node = tree.node(child);
            let name = tree.name(child);
            assert_eq!(
                child_node.parent, i,
                "child {child} of {i} names another parent"
            );
            assert!(
                !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/'),
                "invalid name {:?}",
                String::from_utf8_lossy(name)
            );
            if let Some(previous) = previous {
                assert!(previous < name, "children of {i} are not sorted and unique");
            }
            previous = Some(name);
        }
        if i != LowerTree::ROOT {
            assert_ne!(node.parent, i, "node {i} is its own parent");
        }
        let path = tree.path(i);
        assert_eq!(
            tree.lookup_path(&path),
            Some(i),
            "lookup of {:?}",
            String::from_utf8_lossy(&path)
        );
        assert!(node.ino_node <= i, "inode leader of {i} comes after it");
        assert_eq!(
            tree.node(node.ino_node).ino_node,
            node.ino_node,
            "inode leader of {i} leads another group"
        );
        assert!(node.nlink >= 1, "node {i} has no links");
        if node.kind == FileKind::Symlink {
            assert!(tree.link(i).is_some(), "symlink {i} has no target");
        }
        if node.kind == FileKind::File {
            let file = tree.open(i).expect("opening a lower file");
            let mut buf = vec![0; READ_BACK];
            let read = file.read_at(&mut buf, 0).expect("reading a lower file");
            let expected =
                usize::try_from(node.meta().size).map_or(READ_BACK, |s| s.min(READ_BACK));
            assert_eq!(read, expected, "short read of {}", tree.display_path(i));
        }
        tree.xattrs(i).expect("xattrs of a tar node");
    }
}

// ------------------------------------------------------------------------ image_manifest

/// Opens an image described by `data` with `image::open` under a fresh temp root, checks the
/// result, and then indexes and flattens its layers as a mount would.
///
/// The first byte picks the form (modulo 4): 0 writes the rest as the SOURCE file itself (a
/// rootfs tar, or any bytes); 1 packs the parts as a `docker save` archive (the last part is
/// `manifest.json`, the others members `blobs/sha256/<hex>`); 2 writes an OCI layout directory
/// and 3 packs one in a tar (the last part is `index.json`, the others blobs under
/// `blobs/sha256/<hex>`).
///
/// In each part, `{dN}`, `{hN}` and `{sN}` become the `sha256:<hex>` digest, the bare hex and
/// the decimal size of the earlier part N, and `{uN}` the digest of part N after gzip or zstd
/// decompression (of its first MiB), as `config.rootfs.diff_ids` need.
///
/// An opened image must list layers whose bytes hash to their diff_ids.
pub fn image_manifest(data: &[u8]) -> Outcome {
    let Some((&form, rest)) = data.split_first() else {
        return Outcome::Rejected;
    };
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let root = dir.path().join("root");
    let source = dir.path().join("source");
    match form % 4 {
        0 => fs::write(&source, rest).expect("writing the source"),
        1 => {
            let parts = resolve_parts(&split_parts(rest, MAX_IMAGE_PARTS));
            let (manifest, blobs) = parts.split_last().expect("at least one part");
            let mut members = blob_members(blobs);
            members.push(("manifest.json".to_owned(), manifest.as_slice()));
            fs::write(&source, archive(&members)).expect("writing the source");
        }
        2 => {
            let parts = resolve_parts(&split_parts(rest, MAX_IMAGE_PARTS));
            let (index, blobs) = parts.split_last().expect("at least one part");
            fs::create_dir_all(source.join("blobs/sha256")).expect("creating the layout");
            fs::write(source.join("oci-layout"), OCI_LAYOUT).expect("writing oci-layout");
            fs::write(source.join("index.json"), index).expect("writing index.json");
            for (name, blob) in blob_members(blobs) {
                fs::write(source.join(name), blob).expect("writing a blob");
            }
        }
        _ => {
            let parts = resolve_parts(&split_parts(rest, MAX_IMAGE_PARTS));
            let (index, blobs) = parts.split_last().expect("at least one part");
            let mut members = vec![
                ("oci-layout".to_owned(), OCI_LAYOUT),
                ("index.json".to_owned(), index.as_slice()),
            ];
            members.extend(blob_members(blobs));
            fs::write(&source, archive(&members)).expect("writing the source");
        }
    }
    let opts = OpenOptions {
        platform: Platform::parse(PLATFORM).expect("a valid platform"),
        ..OpenOptions::new(&root)
    };
    match image::open(&source, &opts) {
        Ok(image) => {
            check_image(&image);
            merge_image_layers(&image);
            Outcome::Accepted
        }
        Err(error) => {
            render(&error);
            Outcome::Rejected
        }
    }
}

/// The `oci-layout` file of a layout.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// `(blobs/sha256/<hex>, bytes)` for each blob.
fn blob_members(blobs: &[Vec<u8>]) -> Vec<(String, &[u8])> {
    blobs
        .iter()
        .map(|blob| {
            (
                format!("blobs/sha256/{}", sha256_hex(blob)),
                blob.as_slice(),
            )
        })
        .collect()
}

/// Substitutes the `{dN}`, `{hN}`, `{sN}` and `{uN}` placeholders of each part with facts
/// about the earlier (already substituted) parts.
fn resolve_parts(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut resolved: Vec<Vec<u8>> = Vec::with_capacity(parts.len());
    for part in parts {
        let mut text = part.to_vec();
        for (n, earlier) in resolved.iter().enumerate() {
            if !text.contains(&b'{') {
                break;
            }
            let hex = sha256_hex(earlier);
            text = replace(&text, &format!("{{d{n}}}"), &format!("sha256:{hex}"));
            text = replace(&text, &format!("{{h{n}}}"), &hex);
            text = replace(&text, &format!("{{s{n}}}"), &earlier.len().to_string());
            let uncompressed = format!("{{u{n}}}");
            if find(&text, uncompressed.as_bytes()).is_some() {
                let digest = format!("sha256:{}", sha256_hex(&decompress_prefix(earlier)));
                text = replace(&text, &uncompressed, &digest);
            }
        }
        resolved.push(text);
    }
    resolved
}

/// `text` with every `from` replaced by `to`.
fn replace(text: &[u8], from: &str, to: &str) -> Vec<u8> {
    let from = from.as_bytes();
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = find(rest, from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to.as_bytes());
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// The first MiB of `blob` decompressed if it is gzip or zstd, else `blob` itself.
fn decompress_prefix(blob: &[u8]) -> Vec<u8> {
    const LIMIT: u64 = 1 << 20;
    let mut out = Vec::new();
    let result = if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(blob)
            .take(LIMIT)
            .read_to_end(&mut out)
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(blob)
            .and_then(|decoder| decoder.take(LIMIT).read_to_end(&mut out))
    } else {
        return blob.to_vec();
    };
    match result {
        Ok(_) => out,
        Err(_) => blob.to_vec(),
    }
}

/// Lowercase hex sha256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// A ustar archive of regular files.
fn archive(members: &[(String, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        builder
            .append_data(&mut header, name, *data)
            .expect("appending to a Vec");
    }
    builder.into_inner().expect("finishing a Vec")
}

/// What `image::open` promises of an image: each layer is a byte range of an existing file
/// whose sha256 is the layer's diff_id, and an image with a config has one layer per diff_id.
fn check_image(image: &Image) {
    match &image.config {
        Some(config) => {
            assert_eq!(
                format!("sha256:{}", sha256_hex(&config.bytes)),
                config.digest.to_string(),
                "a config whose digest is not that of its bytes"
            );
            assert_eq!(
                config.parsed.rootfs.diff_ids.len(),
                image.layers.len(),
                "layers and diff_ids differ"
            );
        }
        None => assert_eq!(image.layers.len(), 1, "a rootfs tar is one layer"),
    }
    for layer in &image.layers {
        assert!(layer.file.is_absolute(), "layer file {:?}", layer.file);
        let bytes = read_range(&layer.file, layer.offset, layer.len);
        if let Some(diff_id) = &layer.diff_id {
            assert_eq!(
                format!("sha256:{}", sha256_hex(&bytes)),
                diff_id.to_string(),
                "a layer does not hash to its diff_id"
            );
        }
    }
}

/// Indexes each layer of `image` in place and flattens the ones the indexer accepts.
fn merge_image_layers(image: &Image) {
    let mut layers = Vec::new();
    for layer in &image.layers {
        if layer.len > MAX_LAYER_BYTES {
            continue;
        }
        let bytes = read_range(&layer.file, layer.offset, layer.len);
        if let Ok(index) = tar_index::build(Cursor::new(&bytes), &LIMITS) {
            check_built_index(&index, layer.len);
            layers.push(LayerInput::Tar {
                file: layer.file.clone(),
                offset: layer.offset,
                index,
            });
        }
    }
    if let Ok(tree) = LowerTree::build(layers) {
        check_tree(&tree);
    }
}

/// `len` bytes of `file` at `offset`; panics if the file is shorter.
fn read_range(file: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let mut handle = fs::File::open(file).expect("opening a layer file");
    handle
        .seek(SeekFrom::Start(offset))
        .expect("seeking in a layer file");
    let mut bytes = Vec::new();
    handle
        .take(len)
        .read_to_end(&mut bytes)
        .expect("reading a layer");
    assert_eq!(bytes.len() as u64, len, "layer range runs past its file");
    bytes
}

/// Formats an error and its sources, so `Display` implementations run too.
fn render(error: &dyn std::error::Error) {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    std::hint::black_box(text);
}

// ------------------------------------------------------------------------ seeds

/// One seed input: which target's directory it goes in, its file name, its bytes.
#[derive(Debug)]
pub struct Seed {
    /// The fuzz target (a directory under `fuzz/corpus-seeds/`).
    pub target: &'static str,
    /// The file name; `ok-` says the target must accept it.
    pub name: &'static str,
    /// The input.
    pub bytes: Vec<u8>,
}

/// The seed inputs checked in under `fuzz/corpus-seeds/<target>/`: small valid inputs that
/// start the fuzzer past the format checks. Deterministic, so the replay test can tell when the
/// checked-in copies are stale.
pub fn seeds() -> Vec<Seed> {
    let base = base_layer();
    let upper = upper_layer();
    let index = tar_index::build(Cursor::new(&base), &LIMITS).expect("the base seed indexes");
    let seed = |target, name, bytes| Seed {
        target,
        name,
        bytes,
    };
    vec![
        seed("tar_index_build", "ok-base.tar", base.clone()),
        seed("tar_index_build", "ok-upper.tar", upper.clone()),
        seed("index_codec", "ok-base.index", codec::encode(&index)),
        seed("index_codec", "ok-base.tar", base.clone()),
        seed("tar_normalize", "ok-plain", b"usr/lib/os-release".to_vec()),
        seed(
            "tar_normalize",
            "ok-messy",
            b"/./usr//lib/../bin/./sh/".to_vec(),
        ),
        seed(
            "tar_normalize",
            "err-escape",
            b"a/../../etc/passwd".to_vec(),
        ),
        seed(
            "ovl_markers",
            "ok-upper-dir",
            b"trusted.overlay.opaque=y\nuser.overlay.redirect=/a/b\nuser.rfs.origin=42\n\
              user.containers.override_stat=0:0:0755:dir\nuser.mime=text"
                .to_vec(),
        ),
        seed(
            "ovl_markers",
            "err-not-markers",
            b"user.overlay.opaque=x\nsecurity.capability=\nuser.containers.override_stat=1:2"
                .to_vec(),
        ),
        seed("ovl_markers", "err-whiteout-name", b".wh.etc".to_vec()),
        seed("lower_merge", "ok-one-layer", base.clone()),
        seed("lower_merge", "ok-two-layers", join_parts(&[&base, &upper])),
        seed(
            "lower_merge",
            "ok-three-layers",
            join_parts(&[&base, &upper, &base]),
        ),
        seed("image_manifest", "ok-rootfs", [&[0][..], &base].concat()),
        seed("image_manifest", "ok-docker", docker_seed(&base)),
        seed("image_manifest", "ok-oci-dir", oci_seed(2, &base, false)),
        seed(
            "image_manifest",
            "ok-oci-tar-gzip",
            oci_seed(3, &upper, true),
        ),
        // Inputs that must be rejected, so the replay test checks errors as well as panics.
        seed("tar_index_build", "err-escape.tar", escaping_layer()),
        seed("tar_index_build", "err-truncated.tar", base[..700].to_vec()),
        seed(
            "tar_index_build",
            "err-bare-whiteout.tar",
            bare_whiteout_layer(),
        ),
        seed("index_codec", "err-bad-kind.index", bad_kind_index(&index)),
        seed(
            "lower_merge",
            "err-through-symlink",
            join_parts(&[&symlink_layer(), &through_symlink_layer()]),
        ),
        seed(
            "image_manifest",
            "err-docker-wrong-diff-id",
            docker_seed_with(&base, &format!("sha256:{}", "0".repeat(64))),
        ),
    ]
}

/// A GNU-format layer with a directory, a file, a symlink, a hard link, a FIFO, a PAX xattr and
/// a long name.
fn base_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    add(&mut builder, "etc/", tar::EntryType::Directory, b"", 0o755);
    pax_xattr(&mut builder, "user.note", b"seed");
    add(
        &mut builder,
        "etc/hostname",
        tar::EntryType::Regular,
        b"rfs\n",
        0o644,
    );
    link(
        &mut builder,
        "etc/motd",
        tar::EntryType::Symlink,
        "hostname",
    );
    link(
        &mut builder,
        "etc/name",
        tar::EntryType::Link,
        "etc/hostname",
    );
    add(&mut builder, "run/fifo", tar::EntryType::Fifo, b"", 0o600);
    let long = format!("opt/{}/file", "long-directory-name".repeat(6));
    add(&mut builder, &long, tar::EntryType::Regular, b"x", 0o644);
    builder.into_inner().expect("finishing a Vec")
}

/// A layer for above [`base_layer`]: an opaque `etc`, a whiteout of `run` and a new file.
fn upper_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    add(&mut builder, "etc/", tar::EntryType::Directory, b"", 0o700);
    add(
        &mut builder,
        "etc/.wh..wh..opq",
        tar::EntryType::Regular,
        b"",
        0o644,
    );
    add(
        &mut builder,
        "etc/hostname",
        tar::EntryType::Regular,
        b"upper\n",
        0o644,
    );
    add(&mut builder, ".wh.run", tar::EntryType::Regular, b"", 0o644);
    builder.into_inner().expect("finishing a Vec")
}

/// A layer whose one member climbs out of the layer root (`../evil`); the `tar` crate refuses
/// to write such a name, so it goes into the header by hand.
fn escaping_layer() -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..7].copy_from_slice(b"../evil");
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(0);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append(&header, &[][..])
        .expect("appending to a Vec");
    builder.into_inner().expect("finishing a Vec")
}

/// A layer with a whiteout of nothing: `etc/.wh.`.
fn bare_whiteout_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    add(
        &mut builder,
        "etc/.wh.",
        tar::EntryType::Regular,
        b"",
        0o644,
    );
    builder.into_inner().expect("finishing a Vec")
}

/// `index` encoded, with the first entry's kind byte made unknown (the checksum is left
/// stale; the target repairs it, and decoding must still fail on the kind).
fn bad_kind_index(index: &TarIndex) -> Vec<u8> {
    let mut bytes = codec::encode(index);
    // Magic (8), version (4), a one-byte entry count, then the first entry's kind.
    bytes[13] = 0xff;
    bytes
}

/// A layer whose `a` is a symlink to `/etc`.
fn symlink_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    link(&mut builder, "a", tar::EntryType::Symlink, "/etc");
    builder.into_inner().expect("finishing a Vec")
}

/// A layer for above [`symlink_layer`] that puts `a/passwd` through the symlink.
fn through_symlink_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    add(
        &mut builder,
        "a/passwd",
        tar::EntryType::Regular,
        b"x",
        0o644,
    );
    builder.into_inner().expect("finishing a Vec")
}

/// Appends a member with fixed owner and time, so seeds are byte-for-byte reproducible.
fn add(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    data: &[u8],
    mode: u32,
) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(1_700_000_000);
    builder
        .append_data(&mut header, path, data)
        .expect("appending to a Vec");
}

/// Appends a symlink or hard link.
fn link(builder: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, target: &str) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(0);
    header.set_mode(0o777);
    header.set_mtime(1_700_000_000);
    builder
        .append_link(&mut header, path, target)
        .expect("appending to a Vec");
}

/// Appends a PAX extended header carrying one `SCHILY.xattr.` record for the next member.
fn pax_xattr(builder: &mut tar::Builder<Vec<u8>>, name: &str, value: &[u8]) {
    let key = format!("SCHILY.xattr.{name}");
    // A record is "<length> <key>=<value>\n", the length counting its own digits.
    let base = key.len() + value.len() + 3;
    let mut length = base + 1;
    while length != base + length.to_string().len() {
        length = base + length.to_string().len();
    }
    let mut record = format!("{length} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_size(record.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    builder
        .append_data(&mut header, "PaxHeaders/next", record.as_slice())
        .expect("appending to a Vec");
}

/// Joins parts with [`PART_SEPARATOR`].
fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(PART_SEPARATOR)
}

/// A docker archive: layer, config, manifest.json (placeholders resolved by the harness).
fn docker_seed(layer: &[u8]) -> Vec<u8> {
    docker_seed_with(layer, "{d0}")
}

/// A docker archive whose config gives the layer the diff_id `diff_id`.
fn docker_seed_with(layer: &[u8], diff_id: &str) -> Vec<u8> {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let config = config.as_bytes();
    let manifest =
        br#"[{"Config":"blobs/sha256/{h1}","RepoTags":["seed:latest"],"Layers":["blobs/sha256/{h0}"]}]"#;
    [&[1][..], &join_parts(&[layer, config, manifest])].concat()
}

/// An OCI layout (`form` 2: directory, 3: tar) with one layer, gzip-compressed if `gzip`.
fn oci_seed(form: u8, layer: &[u8], gzip: bool) -> Vec<u8> {
    let (blob, diff_id, media_type) = if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut encoder, layer).expect("compressing into a Vec");
        let blob = encoder.finish().expect("compressing into a Vec");
        (blob, "{u0}", "application/vnd.oci.image.layer.v1.tar+gzip")
    } else {
        (
            layer.to_vec(),
            "{d0}",
            "application/vnd.oci.image.layer.v1.tar",
        )
    };
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{{d1}}","size":{{s1}}}},"layers":[{{"mediaType":"{media_type}","digest":"{{d0}}","size":{{s0}}}}]}}"#
    );
    let index = r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d2}","size":{s2},"platform":{"os":"linux","architecture":"amd64"}}]}"#;
    [
        &[form][..],
        &join_parts(&[
            &blob,
            config.as_bytes(),
            manifest.as_bytes(),
            index.as_bytes(),
        ]),
    ]
    .concat()
}

/// Where the seeds of `target` are checked in, given the `fuzz/` directory.
pub fn seed_dir(fuzz_dir: &Path, target: &str) -> PathBuf {
    fuzz_dir.join("corpus-seeds").join(target)
}
