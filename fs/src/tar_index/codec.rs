//! Versioned on-disk encoding of a [`TarIndex`], so a layer is indexed once and the index is
//! loaded from the store on later mounts.
//!
//! Layout (version 1), integers little-endian, `varint` = unsigned LEB128 (at most 10 bytes):
//!
//! ```text
//! magic    8 bytes  "rfsTIDX\n"
//! version  u32      1
//! count    varint   number of entries
//! entries  count ×  kind u8, mode u32, uid u32, gid u32, mtime i64, mtime_nsec u32,
//!                   size u64, data_offset u64, rdev_major u32, rdev_minor u32,
//!                   path (varint length + UTF-8), link_target (varint length + bytes),
//!                   xattr count varint, then per xattr name (varint length + UTF-8)
//!                   and value (varint length + bytes)
//! checksum 32 bytes sha256 of everything before it
//! ```
//!
//! The checksum catches corruption, not forgery, so [`decode`] treats its input as hostile
//! anyway: every length is checked against both the bytes left and the [`Limits`] before
//! anything is allocated, and the decoded index must satisfy the invariants [`super::build()`]
//! guarantees (normalised unique paths, hard links naming earlier members, ...), so code
//! downstream can rely on them whichever way the index was obtained.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;

use sha2::{Digest, Sha256};

use super::build::is_normalized;
use super::{EntryKind, Limits, TarEntry, TarIndex};

/// The first bytes of every encoded index.
const MAGIC: [u8; 8] = *b"rfsTIDX\n";

/// The format version [`encode`] writes and [`decode`] reads.
pub const VERSION: u32 = 1;

/// Length of the trailing sha256.
const CHECKSUM_LEN: usize = 32;

/// Magic plus version.
const PREAMBLE_LEN: usize = MAGIC.len() + 4;

/// Bytes of an entry's fixed-width fields.
const FIXED_ENTRY_LEN: usize = 1 + 4 + 4 + 4 + 8 + 4 + 8 + 8 + 4 + 4;

/// The smallest encoded entry: fixed fields plus three one-byte varints (empty path, empty
/// link target, no xattrs). Used to reject an entry count the input cannot hold before
/// reserving memory for it.
const MIN_ENTRY_LEN: usize = FIXED_ENTRY_LEN + 3;

/// Why bytes could not be decoded into a [`TarIndex`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input does not start with the index magic.
    #[error("not an rfs tar index (bad magic)")]
    BadMagic,
    /// The input is an index of a version this build cannot read.
    #[error("unsupported tar index version {0}")]
    UnsupportedVersion(u32),
    /// The input ends before the field at byte `at` is complete.
    #[error("tar index is truncated at byte {at}")]
    Truncated {
        /// Where the incomplete field starts.
        at: usize,
    },
    /// The trailing checksum does not match the contents.
    #[error("tar index checksum does not match its contents")]
    ChecksumMismatch,
    /// A count or length exceeds the [`Limits`], or memory for it could not be reserved.
    #[error("tar index {what} at byte {at} exceeds the configured limits")]
    TooLarge {
        /// Which count or length.
        what: &'static str,
        /// Where it is encoded.
        at: usize,
    },
    /// A path or xattr name is not UTF-8.
    #[error("tar index string at byte {at} is not valid UTF-8")]
    InvalidUtf8 {
        /// Where the string starts.
        at: usize,
    },
    /// A varint is longer than 10 bytes or does not fit in 64 bits.
    #[error("tar index varint at byte {at} is invalid")]
    InvalidVarint {
        /// Where the varint starts.
        at: usize,
    },
    /// An entry kind byte that names no [`EntryKind`].
    #[error("tar index entry kind {byte} at byte {at} is unknown")]
    InvalidKind {
        /// Where the kind byte is.
        at: usize,
        /// Its value.
        byte: u8,
    },
    /// An entry breaks an invariant of [`TarIndex`].
    #[error("tar index entry {index} is invalid: {reason}")]
    InvalidEntry {
        /// Position of the entry in the index.
        index: usize,
        /// Which invariant.
        reason: &'static str,
    },
    /// Bytes remain between the last entry and the checksum.
    #[error("tar index has unexpected bytes at byte {at}")]
    TrailingBytes {
        /// Where they start.
        at: usize,
    },
}

/// Encodes `index` in the current [`VERSION`] of the format.
pub fn encode(index: &TarIndex) -> Vec<u8> {
    let estimated_len = PREAMBLE_LEN
        + 10
        + index
            .entries
            .iter()
            .map(|e| MIN_ENTRY_LEN + 8 + e.path.len() + e.link_target.len())
            .sum::<usize>()
        + CHECKSUM_LEN;
    let mut out = Vec::with_capacity(estimated_len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    put_varint(&mut out, index.entries.len() as u64);
    for entry in &index.entries {
        out.push(kind_to_byte(entry.kind));
        out.extend_from_slice(&entry.mode.to_le_bytes());
        out.extend_from_slice(&entry.uid.to_le_bytes());
        out.extend_from_slice(&entry.gid.to_le_bytes());
        out.extend_from_slice(&entry.mtime.to_le_bytes());
        out.extend_from_slice(&entry.mtime_nsec.to_le_bytes());
        out.extend_from_slice(&entry.size.to_le_bytes());
        out.extend_from_slice(&entry.data_offset.to_le_bytes());
        out.extend_from_slice(&entry.rdev_major.to_le_bytes());
        out.extend_from_slice(&entry.rdev_minor.to_le_bytes());
        put_bytes(&mut out, entry.path.as_bytes());
        put_bytes(&mut out, &entry.link_target);
        put_varint(&mut out, entry.xattrs.len() as u64);
        for (name, value) in &entry.xattrs {
            put_bytes(&mut out, name.as_bytes());
            put_bytes(&mut out, value);
        }
    }
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    out
}

/// Decodes an index written by [`encode`], rejecting anything over `limits`.
///
/// # Errors
///
/// [`DecodeError`] says which check failed: magic, version, checksum, a length over the bytes
/// left or over `limits`, invalid UTF-8, or an entry breaking an invariant of [`TarIndex`].
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<TarIndex, DecodeError> {
    match bytes.get(..MAGIC.len()) {
        Some(magic) if magic == MAGIC => {}
        Some(_) => return Err(DecodeError::BadMagic),
        None if MAGIC.starts_with(bytes) => return Err(DecodeError::Truncated { at: 0 }),
        None => return Err(DecodeError::BadMagic),
    }
    let mut preamble = Cursor::new(bytes, MAGIC.len());
    let version = preamble.u32()?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let body_end = bytes
        .len()
        .checked_sub(CHECKSUM_LEN)
        .filter(|end| *end >= PREAMBLE_LEN)
        .ok_or(DecodeError::Truncated { at: PREAMBLE_LEN })?;
    if Sha256::digest(&bytes[..body_end])[..] != bytes[body_end..] {
        return Err(DecodeError::ChecksumMismatch);
    }

    let mut body = Cursor::new(&bytes[..body_end], PREAMBLE_LEN);
    let count_at = body.pos;
    let count = body.varint()?;
    let count = usize::try_from(count)
        .ok()
        .filter(|count| *count <= limits.max_entries)
        .ok_or(DecodeError::TooLarge {
            what: "entry count",
            at: count_at,
        })?;
    if count > body.remaining() / MIN_ENTRY_LEN {
        return Err(DecodeError::Truncated { at: body_end });
    }
    let mut entries = Vec::new();
    entries
        .try_reserve_exact(count)
        .map_err(|_| DecodeError::TooLarge {
            what: "entry count",
            at: count_at,
        })?;
    for _ in 0..count {
        entries.push(body.entry(limits)?);
    }
    if body.remaining() != 0 {
        return Err(DecodeError::TrailingBytes { at: body.pos });
    }
    let index = TarIndex { entries };
    check_invariants(&index)?;
    Ok(index)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn kind_to_byte(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::File => 0,
        EntryKind::Dir => 1,
        EntryKind::Symlink => 2,
        EntryKind::HardLink => 3,
        EntryKind::CharDev => 4,
        EntryKind::BlockDev => 5,
        EntryKind::Fifo => 6,
    }
}

fn kind_from_byte(byte: u8) -> Option<EntryKind> {
    Some(match byte {
        0 => EntryKind::File,
        1 => EntryKind::Dir,
        2 => EntryKind::Symlink,
        3 => EntryKind::HardLink,
        4 => EntryKind::CharDev,
        5 => EntryKind::BlockDev,
        6 => EntryKind::Fifo,
        _ => return None,
    })
}

/// A bounds-checked reader over the encoded bytes; `pos` is an offset into the whole input, so
/// errors point at the right byte.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8], pos: usize) -> Self {
        Self { bytes, pos }
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let truncated = DecodeError::Truncated { at: self.pos };
        let end = self.pos.checked_add(len).ok_or(truncated.clone())?;
        let taken = self.bytes.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let at = self.pos;
        self.take(N)?
            .try_into()
            .map_err(|_| DecodeError::Truncated { at })
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_le_bytes)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let at = self.pos;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may only hold the top bit of a u64.
            if shift == 63 && bits > 1 {
                return Err(DecodeError::InvalidVarint { at });
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::InvalidVarint { at })
    }

    /// Reads a length prefix and checks it against `limit` and the bytes left, so no caller
    /// allocates for a length the input cannot back.
    fn length(&mut self, limit: usize, what: &'static str) -> Result<usize, DecodeError> {
        let at = self.pos;
        let len = self.varint()?;
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= limit)
            .ok_or(DecodeError::TooLarge { what, at })?;
        if len > self.remaining() {
            return Err(DecodeError::Truncated { at: self.pos });
        }
        Ok(len)
    }

    fn string(&mut self, limit: usize, what: &'static str) -> Result<String, DecodeError> {
        let len = self.length(limit, what)?;
        let at = self.pos;
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { at })
    }

    fn byte_vec(&mut self, limit: usize, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        let len = self.length(limit, what)?;
        self.take(len).map(<[u8]>::to_vec)
    }

    fn entry(&mut self, limits: &Limits) -> Result<TarEntry, DecodeError> {
        let kind_at = self.pos;
        let kind_byte = self.u8()?;
        let kind = kind_from_byte(kind_byte).ok_or(DecodeError::InvalidKind {
            at: kind_at,
            byte: kind_byte,
        })?;
        let mode = self.u32()?;
        let uid = self.u32()?;
        let gid = self.u32()?;
        let mtime = self.i64()?;
        let mtime_nsec = self.u32()?;
        let size = self.u64()?;
        let data_offset = self.u64()?;
        let rdev_major = self.u32()?;
        let rdev_minor = self.u32()?;
        let path = self.string(limits.max_path_len, "path length")?;
        let link_target = self.byte_vec(limits.max_path_len, "link target length")?;

        let xattr_count_at = self.pos;
        // Each xattr takes at least two bytes (two empty lengths), hence the second bound.
        let xattr_count = self.length(limits.max_xattr_bytes, "xattr count")?;
        if xattr_count > self.remaining() / 2 {
            return Err(DecodeError::Truncated { at: xattr_count_at });
        }
        let mut xattrs = Vec::new();
        xattrs
            .try_reserve_exact(xattr_count)
            .map_err(|_| DecodeError::TooLarge {
                what: "xattr count",
                at: xattr_count_at,
            })?;
        let mut xattr_budget = limits.max_xattr_bytes;
        for _ in 0..xattr_count {
            let name = self.string(xattr_budget, "xattr bytes")?;
            xattr_budget -= name.len();
            let value = self.byte_vec(xattr_budget, "xattr bytes")?;
            xattr_budget -= value.len();
            xattrs.push((name, value));
        }

        Ok(TarEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            size,
            data_offset,
            link_target,
            rdev_major,
            rdev_minor,
            xattrs,
        })
    }
}

/// Checks what [`super::build()`] guarantees of every index it returns.
fn check_invariants(index: &TarIndex) -> Result<(), DecodeError> {
    let mut kinds: HashMap<&str, EntryKind> = HashMap::with_capacity(index.entries.len());
    for (position, entry) in index.entries.iter().enumerate() {
        let invalid = |reason| DecodeError::InvalidEntry {
            index: position,
            reason,
        };
        if !is_normalized(&entry.path) {
            return Err(invalid("path is not normalised"));
        }
        if entry.path.is_empty() && entry.kind != EntryKind::Dir {
            return Err(invalid("the root is not a directory"));
        }
        if entry.mode & !0o7777 != 0 {
            return Err(invalid("mode has bits outside 0o7777"));
        }
        if entry.mtime_nsec >= 1_000_000_000 {
            return Err(invalid("mtime nanoseconds out of range"));
        }
        if entry.kind == EntryKind::File {
            if entry.data_offset.checked_add(entry.size).is_none() {
                return Err(invalid("data range overflows"));
            }
        } else if entry.size != 0 || entry.data_offset != 0 {
            return Err(invalid("only regular files have data"));
        }
        if !matches!(entry.kind, EntryKind::CharDev | EntryKind::BlockDev)
            && (entry.rdev_major != 0 || entry.rdev_minor != 0)
        {
            return Err(invalid("only devices have device numbers"));
        }
        match entry.kind {
            EntryKind::Symlink => {
                if entry.link_target.contains(&0) {
                    return Err(invalid("symlink target contains a NUL byte"));
                }
            }
            EntryKind::HardLink => {
                let target = std::str::from_utf8(&entry.link_target)
                    .map_err(|_| invalid("hard link target is not UTF-8"))?;
                match kinds.get(target) {
                    None => return Err(invalid("hard link target is not an earlier entry")),
                    Some(EntryKind::Dir | EntryKind::HardLink) => {
                        return Err(invalid("hard link target is a directory or a hard link"));
                    }
                    Some(_) => {}
                }
            }
            _ => {
                if !entry.link_target.is_empty() {
                    return Err(invalid("only links have a link target"));
                }
            }
        }
        if entry
            .xattrs
            .iter()
            .any(|(name, _)| name.is_empty() || name.contains('\0'))
        {
            return Err(invalid("xattr name is empty or contains a NUL byte"));
        }
        if entry.xattrs.len() > 1 {
            let mut names: Vec<&str> = entry.xattrs.iter().map(|(name, _)| name.as_str()).collect();
            names.sort_unstable();
            if names.windows(2).any(|pair| pair[0] == pair[1]) {
                return Err(invalid("xattr name repeats"));
            }
        }
        match kinds.entry(&entry.path) {
            MapEntry::Occupied(_) => return Err(invalid("path repeats an earlier entry")),
            MapEntry::Vacant(slot) => {
                slot.insert(entry.kind);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn entry(path: &str, kind: EntryKind) -> TarEntry {
        TarEntry {
            path: path.to_owned(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            mtime_nsec: 0,
            size: 0,
            data_offset: 0,
            link_target: Vec::new(),
            rdev_major: 0,
            rdev_minor: 0,
            xattrs: Vec::new(),
        }
    }

    /// An index with every kind and every field away from its default somewhere.
    fn sample() -> TarIndex {
        let mut root = entry("", EntryKind::Dir);
        root.mtime = -5;
        root.mtime_nsec = 999_999_999;
        let mut etc = entry("etc", EntryKind::Dir);
        etc.xattrs = vec![("trusted.overlay.opaque".into(), b"y".to_vec())];
        let mut file = entry("etc/passwd", EntryKind::File);
        file.mode = 0o4755;
        file.uid = u32::MAX;
        file.gid = 65_534;
        file.size = 1 << 40;
        file.data_offset = 1536;
        file.xattrs = vec![
            (
                "security.capability".into(),
                vec![1, 0, 0, 2, 0, 0x20, 0, 0, 0xff],
            ),
            ("user.empty".into(), Vec::new()),
        ];
        let mut symlink = entry("etc/link", EntryKind::Symlink);
        symlink.link_target = b"\xff../not/utf8".to_vec();
        let mut hard_link = entry("etc/hard", EntryKind::HardLink);
        hard_link.link_target = b"etc/passwd".to_vec();
        let mut chr = entry("null", EntryKind::CharDev);
        (chr.rdev_major, chr.rdev_minor) = (1, 3);
        let mut blk = entry("loop0", EntryKind::BlockDev);
        (blk.rdev_major, blk.rdev_minor) = (7, u32::MAX);
        let mut unicode = entry("ünïcode/名前", EntryKind::File);
        unicode.size = 3;
        unicode.data_offset = 4096;
        TarIndex {
            entries: vec![
                root,
                etc,
                file,
                symlink,
                hard_link,
                chr,
                blk,
                entry("fifo", EntryKind::Fifo),
                entry("etc/.wh.gone", EntryKind::File),
                unicode,
            ],
        }
    }

    fn decode_default(bytes: &[u8]) -> Result<TarIndex, DecodeError> {
        decode(bytes, &Limits::default())
    }

    /// Replaces the checksum of `bytes` with a correct one for its (edited) body.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        bytes.truncate(bytes.len() - CHECKSUM_LEN);
        let checksum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&checksum);
        bytes
    }

    /// A sealed input whose body after the preamble is `body`.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(&[0; CHECKSUM_LEN]);
        reseal(bytes)
    }

    #[test]
    fn round_trip_preserves_every_field() {
        let index = sample();
        let bytes = encode(&index);
        assert_eq!(decode_default(&bytes), Ok(index));
        let empty = TarIndex::default();
        assert_eq!(decode_default(&encode(&empty)), Ok(empty));
    }

    #[test]
    fn round_trip_of_a_built_index() {
        let mut builder = tar::Builder::new(Vec::new());
        for i in 0..50 {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(i);
            header.set_mtime(i);
            builder
                .append_data(
                    &mut header,
                    format!("dir{}/file{i}", i % 5),
                    &vec![1; i as usize][..],
                )
                .unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let index = super::super::build(std::io::Cursor::new(tar), &Limits::default()).unwrap();
        assert_eq!(decode_default(&encode(&index)), Ok(index));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode(&sample());
        for at in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut corrupt = bytes.clone();
                corrupt[at] ^= bit;
                assert!(
                    decode_default(&corrupt).is_err(),
                    "flipping {bit:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            assert!(decode_default(&bytes[..len]).is_err(), "cut at {len}");
        }
        assert_eq!(decode_default(b""), Err(DecodeError::Truncated { at: 0 }));
        assert_eq!(
            decode_default(&bytes[..PREAMBLE_LEN + 5]),
            Err(DecodeError::Truncated { at: PREAMBLE_LEN })
        );
    }

    #[test]
    fn magic_and_version_are_checked() {
        let mut bytes = encode(&sample());
        bytes[0] = b'R';
        assert_eq!(decode_default(&bytes), Err(DecodeError::BadMagic));
        assert_eq!(decode_default(b"ustar\0"), Err(DecodeError::BadMagic));

        let mut bytes = encode(&sample());
        bytes[MAGIC.len()..PREAMBLE_LEN].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(
            decode_default(&reseal(bytes)),
            Err(DecodeError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        let limits = Limits::default();
        // An entry count that the limits forbid.
        let mut body = Vec::new();
        put_varint(&mut body, u64::MAX);
        assert!(matches!(
            decode(&sealed(&body), &limits),
            Err(DecodeError::TooLarge {
                what: "entry count",
                ..
            })
        ));
        // An entry count within the limits that the bytes cannot hold.
        let mut body = Vec::new();
        put_varint(&mut body, 1_000_000);
        assert!(matches!(
            decode(&sealed(&body), &limits),
            Err(DecodeError::Truncated { .. })
        ));
        // A varint that never ends, and one that overflows 64 bits.
        assert!(matches!(
            decode(&sealed(&[0x80; 11]), &limits),
            Err(DecodeError::InvalidVarint { .. })
        ));
        let mut overflow = vec![0xff; 9];
        overflow.push(0x02);
        assert!(matches!(
            decode(&sealed(&overflow), &limits),
            Err(DecodeError::InvalidVarint { .. })
        ));

        // A path longer than the limits, and a path length past the end of the input.
        let long = TarIndex {
            entries: vec![entry(&"p".repeat(200), EntryKind::File)],
        };
        let small = Limits {
            max_path_len: 100,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&encode(&long), &small),
            Err(DecodeError::TooLarge {
                what: "path length",
                ..
            })
        ));
        let mut body = Vec::new();
        put_varint(&mut body, 1);
        body.extend_from_slice(&[0; FIXED_ENTRY_LEN]);
        put_varint(&mut body, 4000);
        body.extend_from_slice(&[0; 10]);
        assert!(matches!(
            decode(&sealed(&body), &limits),
            Err(DecodeError::Truncated { .. })
        ));

        // Xattrs over the per-entry budget.
        let mut heavy = entry("f", EntryKind::File);
        heavy.xattrs = vec![
            ("user.a".into(), vec![0; 60]),
            ("user.b".into(), vec![0; 60]),
        ];
        let tight = Limits {
            max_xattr_bytes: 100,
            ..Limits::default()
        };
        let bytes = encode(&TarIndex {
            entries: vec![heavy],
        });
        assert!(matches!(
            decode(&bytes, &tight),
            Err(DecodeError::TooLarge {
                what: "xattr bytes",
                ..
            })
        ));
        assert!(decode_default(&bytes).is_ok());

        let too_many = Limits {
            max_entries: 9,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&encode(&sample()), &too_many),
            Err(DecodeError::TooLarge {
                what: "entry count",
                ..
            })
        ));
    }

    #[test]
    fn invalid_contents_with_a_valid_checksum_are_rejected() {
        // `encode` writes whatever it is given, so these carry a valid checksum.
        let reject = |index: TarIndex| decode_default(&encode(&index));
        let single = |e: TarEntry| TarIndex { entries: vec![e] };

        let mut bytes = encode(&single(entry("abc", EntryKind::File)));
        let path_at = PREAMBLE_LEN + 1 + FIXED_ENTRY_LEN + 1;
        bytes[path_at] = 0xff;
        assert_eq!(
            decode_default(&reseal(bytes)),
            Err(DecodeError::InvalidUtf8 { at: path_at })
        );

        let mut bytes = encode(&single(entry("abc", EntryKind::File)));
        bytes[PREAMBLE_LEN + 1] = 7;
        assert_eq!(
            decode_default(&reseal(bytes)),
            Err(DecodeError::InvalidKind {
                at: PREAMBLE_LEN + 1,
                byte: 7
            })
        );

        let mut bytes = encode(&TarIndex::default());
        bytes.insert(bytes.len() - CHECKSUM_LEN, 0);
        assert!(matches!(
            decode_default(&reseal(bytes)),
            Err(DecodeError::TrailingBytes { .. })
        ));

        for path in ["../x", "/abs", "a//b", "a/./b", "trailing/", "nul\0"] {
            assert!(
                matches!(
                    reject(single(entry(path, EntryKind::File))),
                    Err(DecodeError::InvalidEntry { index: 0, .. })
                ),
                "{path:?}"
            );
        }
        let invalid_entries = [
            TarIndex {
                entries: vec![entry("a", EntryKind::File), entry("a", EntryKind::File)],
            },
            single(entry("", EntryKind::File)),
            single(TarEntry {
                link_target: b"missing".to_vec(),
                ..entry("h", EntryKind::HardLink)
            }),
            TarIndex {
                entries: vec![
                    entry("d", EntryKind::Dir),
                    TarEntry {
                        link_target: b"d".to_vec(),
                        ..entry("h", EntryKind::HardLink)
                    },
                ],
            },
            single(TarEntry {
                size: 1,
                ..entry("d", EntryKind::Dir)
            }),
            single(TarEntry {
                size: u64::MAX,
                data_offset: 1,
                ..entry("f", EntryKind::File)
            }),
            single(TarEntry {
                mtime_nsec: 1_000_000_000,
                ..entry("f", EntryKind::File)
            }),
            single(TarEntry {
                mode: 0o10644,
                ..entry("f", EntryKind::File)
            }),
            single(TarEntry {
                rdev_major: 1,
                ..entry("f", EntryKind::File)
            }),
            single(TarEntry {
                link_target: b"x".to_vec(),
                ..entry("f", EntryKind::File)
            }),
            single(TarEntry {
                link_target: b"a\0b".to_vec(),
                ..entry("s", EntryKind::Symlink)
            }),
            single(TarEntry {
                xattrs: vec![("user.a".into(), vec![]), ("user.a".into(), vec![1])],
                ..entry("f", EntryKind::File)
            }),
            single(TarEntry {
                xattrs: vec![(String::new(), vec![])],
                ..entry("f", EntryKind::File)
            }),
        ];
        for (case, index) in invalid_entries.into_iter().enumerate() {
            assert!(
                matches!(reject(index), Err(DecodeError::InvalidEntry { .. })),
                "case {case}"
            );
        }
    }

    #[test]
    fn a_hundred_thousand_entries_decode_quickly() {
        let mut entries = vec![entry("", EntryKind::Dir)];
        for dir in 0..100 {
            entries.push(entry(&format!("usr/lib{dir}"), EntryKind::Dir));
            for file in 0..999 {
                let mut e = entry(
                    &format!("usr/lib{dir}/libexample-{file}.so.1"),
                    EntryKind::File,
                );
                e.size = file;
                e.data_offset = 512 * (dir * 1000 + file + 1);
                entries.push(e);
            }
        }
        let index = TarIndex { entries };
        let bytes = encode(&index);
        let started = Instant::now();
        let decoded = decode_default(&bytes).unwrap();
        eprintln!(
            "decoded {} entries ({} bytes) in {:?}",
            decoded.entries.len(),
            bytes.len(),
            started.elapsed()
        );
        assert_eq!(decoded, index);
    }

    #[test]
    fn error_messages_name_the_position() {
        assert_eq!(
            DecodeError::Truncated { at: 42 }.to_string(),
            "tar index is truncated at byte 42"
        );
        assert_eq!(
            DecodeError::UnsupportedVersion(9).to_string(),
            "unsupported tar index version 9"
        );
    }
}
