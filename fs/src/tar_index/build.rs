//! One pass over a layer tar stream into a [`TarIndex`].
//!
//! [`build`] walks the tar headers with the `tar` crate and *seeks* over member data instead
//! of reading it, so indexing costs one header read per member whatever the layer's size. It
//! records where each regular file's data lies so the layer can later serve reads with `pread`.
//!
//! The indexer is the gate for hostile input: it normalises member paths (DESIGN §2 rule 5: a
//! leading `/` is relative to the layer root, a path climbing out with `..` is an error), rejects
//! a bare `.wh.` and duplicate paths, checks hard-link targets, enforces [`Limits`] and turns
//! every way a stream can be broken (truncated, corrupt, unreadable) into a typed [`Error`].
//! It does not interpret whiteouts: `.wh.<name>` members are kept as ordinary entries for the
//! lower-tree merge, which sees every layer.

use std::cell::Cell;
use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::rc::Rc;

use super::{EntryKind, TarEntry, TarIndex};

/// The size of a tar block: headers are one block, member data is padded to whole blocks.
const BLOCK_SIZE: u64 = 512;

/// How many bytes of an over-long path an error message quotes.
const PATH_PREFIX_LEN: usize = 64;

/// Bounds on what one layer tar may contain, so a hostile layer cannot exhaust memory.
///
/// The same limits bound the decoding of a cached index (see [`super::codec::decode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most members one layer may have (directories repeated in the tar count once).
    pub max_entries: usize,
    /// Longest normalised member path, symlink target or hard-link target, in bytes.
    pub max_path_len: usize,
    /// Most extended-attribute bytes (names plus values) one member may carry.
    pub max_xattr_bytes: usize,
}

impl Default for Limits {
    /// Ten million entries, 4096-byte paths (Linux `PATH_MAX`) and 1 MiB of xattrs per entry.
    fn default() -> Self {
        Self {
            max_entries: 10_000_000,
            max_path_len: 4096,
            max_xattr_bytes: 1 << 20,
        }
    }
}

/// Why a layer tar could not be indexed.
///
/// `offset` is always the byte offset, from the start of the stream, of the first header of the
/// member at fault (its PAX or GNU long-name header if it has one), so a message can point at it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying reader failed.
    #[error("reading the tar stream near offset {offset}")]
    Io {
        /// Where the member being read starts.
        offset: u64,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// The stream ends inside a header, inside extension records or inside member data.
    #[error("tar entry at offset {offset} is truncated")]
    Truncated {
        /// Where the truncated member starts.
        offset: u64,
    },
    /// The bytes are not a valid tar member: bad header checksum, unparsable numeric field,
    /// broken PAX record, a name that is not UTF-8, and the like.
    #[error("tar entry at offset {offset} is malformed: {reason}")]
    Malformed {
        /// Where the malformed member starts.
        offset: u64,
        /// What is wrong, for a person.
        reason: String,
    },
    /// A member path whose `..` components climb above the layer root.
    #[error("tar entry {path:?} at offset {offset} climbs above the layer root")]
    EscapingPath {
        /// Where the member starts.
        offset: u64,
        /// The member path as found in the tar (lossily decoded).
        path: String,
    },
    /// A member whose last path component is exactly `.wh.` (a whiteout of nothing).
    #[error("tar entry {path:?} at offset {offset} is a whiteout without a name")]
    BareWhiteout {
        /// Where the member starts.
        offset: u64,
        /// The normalised member path.
        path: String,
    },
    /// Two members with the same normalised path (other than two directories).
    #[error("tar entry {path:?} at offset {offset} duplicates an earlier entry")]
    Duplicate {
        /// Where the second member starts.
        offset: u64,
        /// The normalised path both members have.
        path: String,
    },
    /// A hard link whose target is not an earlier member of the same tar.
    #[error(
        "hard link {path:?} at offset {offset} points to {target:?}, which is not an earlier entry"
    )]
    HardLinkTargetMissing {
        /// Where the hard-link member starts.
        offset: u64,
        /// The normalised path of the hard link.
        path: String,
        /// The normalised path it points to.
        target: String,
    },
    /// The tar has more members than [`Limits::max_entries`].
    #[error("tar entry at offset {offset} exceeds the limit of {limit} entries")]
    TooManyEntries {
        /// Where the first member over the limit starts.
        offset: u64,
        /// The limit in force.
        limit: usize,
    },
    /// A member path or link target longer than [`Limits::max_path_len`].
    #[error(
        "tar entry at offset {offset} has a path or link target longer than {limit} bytes, starting {path_prefix:?}"
    )]
    PathTooLong {
        /// Where the member starts.
        offset: u64,
        /// The first bytes of the over-long path (lossily decoded).
        path_prefix: String,
        /// The limit in force.
        limit: usize,
    },
    /// A member carries more xattr bytes than [`Limits::max_xattr_bytes`].
    #[error("tar entry {path:?} at offset {offset} has more than {limit} bytes of xattrs")]
    XattrsTooLarge {
        /// Where the member starts.
        offset: u64,
        /// The normalised member path.
        path: String,
        /// The limit in force.
        limit: usize,
    },
    /// A member type a layer cannot hold (socket, GNU volume label, multi-volume part, ...).
    #[error("tar entry {path:?} at offset {offset} has unsupported type {}", TypeByte(*.type_byte))]
    UnsupportedType {
        /// Where the member starts.
        offset: u64,
        /// The member path as found in the tar (lossily decoded).
        path: String,
        /// The header's type flag.
        type_byte: u8,
    },
    /// A sparse file (GNU `S` type or PAX `GNU.sparse.*` records): its data is not one
    /// contiguous range, so it cannot be served by `pread` at one offset.
    #[error("tar entry {path:?} at offset {offset} is a sparse file, which is not supported")]
    Sparse {
        /// Where the member starts.
        offset: u64,
        /// The member path as found in the tar (lossily decoded).
        path: String,
    },
}

/// Shows a tar type flag as `'S'` when printable, else as hex.
struct TypeByte(u8);

impl fmt::Display for TypeByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "{:#04x}", self.0)
        }
    }
}

/// Why a raw tar path could not be normalised (see [`normalize`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `..` components climb above the root.
    #[error("path climbs above the layer root")]
    EscapesRoot,
    /// The name is not UTF-8.
    #[error("path is not valid UTF-8")]
    NotUtf8,
    /// The name contains a NUL byte (possible through PAX records).
    #[error("path contains a NUL byte")]
    ContainsNul,
}

/// Normalises a raw tar member path to the form stored in [`TarEntry::path`].
///
/// A leading `/` and `./` are dropped (DESIGN §2 rule 5: absolute names are relative to the
/// layer root, as docker and containerd read them), as are `.` and empty components (`a//b`);
/// `..` is resolved lexically and may not climb above the root. The root itself (`.`, `./`,
/// `/`) becomes `""`.
///
/// Names that are not UTF-8 are rejected rather than escaped: every layer produced by the
/// common tools is UTF-8, and rejecting keeps one spelling per name through the whole stack.
pub fn normalize(raw: &[u8]) -> Result<String, PathError> {
    if raw.contains(&0) {
        return Err(PathError::ContainsNul);
    }
    let text = std::str::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
    let mut components: Vec<&str> = Vec::new();
    for component in text.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if components.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            name => components.push(name),
        }
    }
    Ok(components.join("/"))
}

/// Whether `path` is already in the form [`normalize`] produces.
pub(crate) fn is_normalized(path: &str) -> bool {
    path.is_empty()
        || path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// Indexes a layer tar in one pass.
///
/// `reader` is rewound to its start; every offset in the index, and in errors, is relative to
/// that start. Member data is seeked over, never read, so the cost is one small read per
/// member. The whole stream must be present: a member whose header, extension records or data
/// run past the end of the stream is [`Error::Truncated`]. A stream that ends cleanly between
/// two members without the two zero blocks that close a tar is accepted, as GNU tar and Go's
/// `archive/tar` accept it; an empty stream or one starting with a zero block is an empty
/// layer.
///
/// Repeated directory entries (some tools emit a directory twice) are merged into the first
/// one's position, with the later member's metadata winning; any other repeated path is
/// [`Error::Duplicate`]. Hard-link targets are resolved through earlier hard links, so
/// [`TarEntry::link_target`] of a hard link always names a member that is not itself a hard
/// link. PAX global headers (`g`) are skipped, as containerd does.
///
/// # Errors
///
/// One [`Error`] variant per way the stream can be unreadable, malformed or over `limits`.
pub fn build<R: Read + Seek>(mut reader: R, limits: &Limits) -> Result<TarIndex, Error> {
    let io_at_start = |source| Error::Io { offset: 0, source };
    let stream_len = reader.seek(SeekFrom::End(0)).map_err(io_at_start)?;
    reader.seek(SeekFrom::Start(0)).map_err(io_at_start)?;

    let probe = Rc::new(Cell::new(ReadProbe::default()));
    let member_read_budget = member_read_budget(limits);
    let mut archive = tar::Archive::new(ProbedReader::new(reader, stream_len, Rc::clone(&probe)));
    let mut members = archive
        .entries_with_seek()
        .map_err(|source| Error::Io { offset: 0, source })?;
    let mut indexer = Indexer::new(limits, stream_len);

    loop {
        probe.set(ReadProbe {
            read_budget: member_read_budget,
            ..ReadProbe::default()
        });
        let member_offset = indexer.next_member_offset;
        match members.next() {
            None => break,
            Some(Err(err)) => return Err(classify(err, member_offset, probe.get())),
            Some(Ok(mut member)) => indexer.add(&mut member)?,
        }
    }
    Ok(indexer.finish())
}

/// How many bytes the `tar` crate may *read* (not seek over) for one member: its headers and
/// extension records (PAX, GNU long names). Anything larger cannot fit within `limits` anyway,
/// and stopping early keeps a hostile multi-gigabyte PAX record from being loaded into memory.
fn member_read_budget(limits: &Limits) -> u64 {
    let path_bytes = u64::try_from(limits.max_path_len).unwrap_or(u64::MAX);
    let xattr_bytes = u64::try_from(limits.max_xattr_bytes).unwrap_or(u64::MAX);
    // Headers and other PAX records (times, ids, comments) need far less than this slack.
    let slack = 64 * 1024;
    path_bytes
        .saturating_mul(4)
        .saturating_add(xattr_bytes.saturating_mul(2))
        .saturating_add(slack)
}

/// Turns an error from the `tar` crate into ours, using what the reader saw to tell apart a
/// short stream, a failing reader and bad bytes (the crate reports all three as `io::Error`).
fn classify(err: io::Error, offset: u64, probe: ReadProbe) -> Error {
    if probe.inner_failed {
        Error::Io {
            offset,
            source: err,
        }
    } else if probe.over_budget {
        Error::Malformed {
            offset,
            reason: "extension headers are larger than the limits allow".to_owned(),
        }
    } else if probe.hit_eof {
        Error::Truncated { offset }
    } else {
        Error::Malformed {
            offset,
            reason: escape_controls(&err.to_string()),
        }
    }
}

/// What [`ProbedReader`] observed while the `tar` crate parsed one member.
#[derive(Clone, Copy, Debug, Default)]
struct ReadProbe {
    /// A read found the end of the stream.
    hit_eof: bool,
    /// The underlying reader returned an error (the crate passes it on unchanged).
    inner_failed: bool,
    /// Bytes the crate may still read for this member.
    read_budget: u64,
    /// The crate wanted more than `read_budget`.
    over_budget: bool,
}

/// Size of [`ProbedReader`]'s buffer. Members are small and dense in typical layers, so one
/// buffer fill usually covers many headers and small files' data that is seeked over.
const READ_BUFFER_LEN: usize = 64 * 1024;

/// The reader handed to the `tar` crate: buffers reads, turns short seeks into buffer moves,
/// and reports through a shared [`ReadProbe`] what happened, since the crate's errors do not
/// say whether the stream was short, broken or corrupt.
///
/// `std::io::BufReader` would not do: the crate skips data with `seek`, which makes
/// `BufReader` drop its buffer every time, so each member would cost two system calls.
struct ProbedReader<R> {
    inner: R,
    probe: Rc<Cell<ReadProbe>>,
    stream_len: u64,
    buffer: Box<[u8]>,
    /// Stream offset of `buffer[0]`; the inner reader is at `buffer_start + filled`.
    buffer_start: u64,
    filled: usize,
    cursor: usize,
}

impl<R: Read + Seek> ProbedReader<R> {
    fn new(inner: R, stream_len: u64, probe: Rc<Cell<ReadProbe>>) -> Self {
        Self {
            inner,
            probe,
            stream_len,
            buffer: vec![0; READ_BUFFER_LEN].into_boxed_slice(),
            buffer_start: 0,
            filled: 0,
            cursor: 0,
        }
    }

    fn update_probe(&self, change: impl FnOnce(&mut ReadProbe)) {
        let mut probe = self.probe.get();
        change(&mut probe);
        self.probe.set(probe);
    }

    fn position(&self) -> u64 {
        self.buffer_start + self.cursor as u64
    }

    /// Refills the buffer at the current position; `Ok(false)` at the end of the stream.
    fn refill(&mut self) -> io::Result<bool> {
        self.buffer_start = self.position();
        self.filled = 0;
        self.cursor = 0;
        loop {
            match self.inner.read(&mut self.buffer) {
                Ok(0) => {
                    self.update_probe(|p| p.hit_eof = true);
                    return Ok(false);
                }
                Ok(n) => {
                    self.filled = n;
                    return Ok(true);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    self.update_probe(|p| p.inner_failed = true);
                    return Err(err);
                }
            }
        }
    }
}

impl<R: Read + Seek> Read for ProbedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let budget = self.probe.get().read_budget;
        if budget == 0 {
            self.update_probe(|p| p.over_budget = true);
            return Err(io::Error::other("member read budget exhausted"));
        }
        if self.cursor == self.filled && !self.refill()? {
            return Ok(0);
        }
        let available = self.filled - self.cursor;
        let wanted = usize::try_from(budget).map_or(out.len(), |b| b.min(out.len()));
        let n = wanted.min(available);
        out[..n].copy_from_slice(&self.buffer[self.cursor..self.cursor + n]);
        self.cursor += n;
        self.update_probe(|p| p.read_budget -= n as u64);
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for ProbedReader<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::Current(delta) => self.position().checked_add_signed(delta),
            SeekFrom::End(delta) => self.stream_len.checked_add_signed(delta),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        let buffer_end = self.buffer_start + self.filled as u64;
        if (self.buffer_start..=buffer_end).contains(&target) {
            // Within the buffer: `target - buffer_start <= filled`, which is a `usize`.
            self.cursor = usize::try_from(target - self.buffer_start).unwrap_or(self.filled);
        } else {
            if let Err(err) = self.inner.seek(SeekFrom::Start(target)) {
                self.update_probe(|p| p.inner_failed = true);
                return Err(err);
            }
            self.buffer_start = target;
            self.filled = 0;
            self.cursor = 0;
        }
        Ok(target)
    }
}

/// Metadata carried by a member's PAX extended header that the indexer uses itself (the `tar`
/// crate already applies `path`, `linkpath` and `size`).
#[derive(Default)]
struct PaxFields {
    mtime: Option<(i64, u32)>,
    uid: Option<u32>,
    gid: Option<u32>,
    xattrs: Vec<(String, Vec<u8>)>,
    sparse: bool,
}

/// The state of one [`build`] pass.
struct Indexer<'l> {
    limits: &'l Limits,
    stream_len: u64,
    /// Where the next member's first header starts.
    next_member_offset: u64,
    entries: Vec<TarEntry>,
    /// Normalised path → position in `entries`.
    by_path: HashMap<String, usize>,
}

impl<'l> Indexer<'l> {
    fn new(limits: &'l Limits, stream_len: u64) -> Self {
        Self {
            limits,
            stream_len,
            next_member_offset: 0,
            entries: Vec::new(),
            by_path: HashMap::new(),
        }
    }

    fn finish(self) -> TarIndex {
        TarIndex {
            entries: self.entries,
        }
    }

    /// Checks one member and adds it to the index.
    fn add<R: Read>(&mut self, member: &mut tar::Entry<'_, R>) -> Result<(), Error> {
        let offset = self.next_member_offset;
        let type_byte = member.header().as_old().linkflag[0];
        let raw_path = member.path_bytes().into_owned();
        let lossy_path = || String::from_utf8_lossy(&raw_path).into_owned();
        if type_byte == b'S' {
            // Checked first: the crate reports a sparse member's expanded size, not what it
            // occupies in the stream.
            return Err(Error::Sparse {
                offset,
                path: lossy_path(),
            });
        }

        let data_offset = member.raw_file_position();
        let data_size = member.size();
        // The crate seeks over data without noticing that the stream ends inside it.
        let data_end = data_offset
            .checked_add(data_size)
            .filter(|end| *end <= self.stream_len)
            .ok_or(Error::Truncated { offset })?;
        self.next_member_offset = data_end
            .checked_next_multiple_of(BLOCK_SIZE)
            .ok_or(Error::Truncated { offset })?;

        if type_byte == b'g' {
            // A PAX global header; its records (comments, mostly) carry nothing we keep.
            log::debug!("skipping PAX global header at offset {offset}");
            return Ok(());
        }

        let path = normalize(&raw_path).map_err(|err| match err {
            PathError::EscapesRoot => Error::EscapingPath {
                offset,
                path: lossy_path(),
            },
            PathError::NotUtf8 | PathError::ContainsNul => Error::Malformed {
                offset,
                reason: format!("member path {:?}: {err}", lossy_path()),
            },
        })?;
        self.check_path_len(offset, path.as_bytes())?;
        if path.rsplit('/').next() == Some(".wh.") {
            return Err(Error::BareWhiteout { offset, path });
        }

        let names_dir = raw_path.ends_with(b"/");
        let kind = match type_byte {
            b'0' | b'7' => EntryKind::File,
            // Pre-POSIX tars mark directories only by the trailing slash.
            b'\0' if names_dir => EntryKind::Dir,
            b'\0' => EntryKind::File,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDev,
            b'4' => EntryKind::BlockDev,
            b'5' => EntryKind::Dir,
            b'6' => EntryKind::Fifo,
            _ => {
                return Err(Error::UnsupportedType {
                    offset,
                    path: lossy_path(),
                    type_byte,
                });
            }
        };
        if names_dir && kind != EntryKind::Dir {
            return Err(malformed(
                offset,
                &path,
                "a non-directory name ends with '/'",
            ));
        }
        if path.is_empty() && kind != EntryKind::Dir {
            return Err(malformed(
                offset,
                &path,
                "the layer root is not a directory",
            ));
        }

        let pax = self.read_pax(member, offset, &path)?;
        if pax.sparse {
            return Err(Error::Sparse { offset, path });
        }

        let header = member.header();
        let number = |raw: &[u8], parsed: io::Result<u64>, field: &str| {
            header_number(raw, parsed)
                .ok_or_else(|| malformed(offset, &path, &format!("invalid {field} field")))
        };
        let id = |raw: &[u8], parsed: io::Result<u64>, field: &str| {
            u32::try_from(number(raw, parsed, field)?)
                .map_err(|_| malformed(offset, &path, &format!("{field} does not fit 32 bits")))
        };
        let old_header = header.as_old();
        let mode = number(&old_header.mode, header.mode().map(u64::from), "mode")? & 0o7777;
        let uid = match pax.uid {
            Some(uid) => uid,
            None => id(&old_header.uid, header.uid(), "uid")?,
        };
        let gid = match pax.gid {
            Some(gid) => gid,
            None => id(&old_header.gid, header.gid(), "gid")?,
        };
        let (mtime, mtime_nsec) = match pax.mtime {
            Some(time) => time,
            None => {
                let seconds = number(&old_header.mtime, header.mtime(), "mtime")?;
                let seconds = i64::try_from(seconds)
                    .map_err(|_| malformed(offset, &path, "mtime out of range"))?;
                (seconds, 0)
            }
        };
        let (rdev_major, rdev_minor) = if matches!(kind, EntryKind::CharDev | EntryKind::BlockDev) {
            let (raw_major, raw_minor): (&[u8], &[u8]) = if let Some(ustar) = header.as_ustar() {
                (&ustar.dev_major, &ustar.dev_minor)
            } else if let Some(gnu) = header.as_gnu() {
                (&gnu.dev_major, &gnu.dev_minor)
            } else {
                (&[], &[])
            };
            let major = header.device_major().map(|m| u64::from(m.unwrap_or(0)));
            let minor = header.device_minor().map(|m| u64::from(m.unwrap_or(0)));
            (
                id(raw_major, major, "device major")?,
                id(raw_minor, minor, "device minor")?,
            )
        } else {
            (0, 0)
        };

        let raw_link = member.link_name_bytes();
        let link_target = match kind {
            EntryKind::Symlink => {
                let target = raw_link.map(|t| t.into_owned()).unwrap_or_default();
                if target.contains(&0) {
                    return Err(malformed(
                        offset,
                        &path,
                        "symlink target contains a NUL byte",
                    ));
                }
                self.check_path_len(offset, &target)?;
                target
            }
            EntryKind::HardLink => {
                let raw =
                    raw_link.ok_or_else(|| malformed(offset, &path, "hard link has no target"))?;
                self.resolve_hard_link(offset, &path, &raw)?.into_bytes()
            }
            _ => Vec::new(),
        };

        let is_file = kind == EntryKind::File;
        let entry = TarEntry {
            path,
            kind,
            // Masked to 0o7777 above, so it fits.
            mode: mode as u32,
            uid,
            gid,
            mtime,
            mtime_nsec,
            size: if is_file { data_size } else { 0 },
            data_offset: if is_file { data_offset } else { 0 },
            link_target,
            rdev_major,
            rdev_minor,
            xattrs: pax.xattrs,
        };
        self.insert(offset, entry)
    }

    fn check_path_len(&self, offset: u64, path: &[u8]) -> Result<(), Error> {
        if path.len() <= self.limits.max_path_len {
            return Ok(());
        }
        let prefix = &path[..PATH_PREFIX_LEN.min(path.len())];
        Err(Error::PathTooLong {
            offset,
            path_prefix: String::from_utf8_lossy(prefix).into_owned(),
            limit: self.limits.max_path_len,
        })
    }

    /// Reads the PAX records of `member` that the `tar` crate leaves to its caller.
    fn read_pax<R: Read>(
        &self,
        member: &mut tar::Entry<'_, R>,
        offset: u64,
        path: &str,
    ) -> Result<PaxFields, Error> {
        let mut fields = PaxFields::default();
        let records = match member.pax_extensions() {
            Ok(Some(records)) => records,
            Ok(None) => return Ok(fields),
            Err(err) => return Err(malformed(offset, path, &format!("PAX header: {err}"))),
        };
        let mut xattr_positions: HashMap<&[u8], usize> = HashMap::new();
        let mut xattr_bytes = 0usize;
        for record in records {
            let record =
                record.map_err(|err| malformed(offset, path, &format!("PAX record: {err}")))?;
            let key = record.key_bytes();
            let value = record.value_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                // Counted per record, so a repeated name counts twice; keeps the check O(1).
                xattr_bytes = xattr_bytes.saturating_add(name.len() + value.len());
                if xattr_bytes > self.limits.max_xattr_bytes {
                    return Err(Error::XattrsTooLarge {
                        offset,
                        path: path.to_owned(),
                        limit: self.limits.max_xattr_bytes,
                    });
                }
                // A later record for the same name overrides an earlier one (POSIX pax).
                match xattr_positions.entry(name) {
                    MapEntry::Occupied(slot) => fields.xattrs[*slot.get()].1 = value.to_vec(),
                    MapEntry::Vacant(slot) => {
                        let name = xattr_name(name)
                            .ok_or_else(|| malformed(offset, path, "invalid xattr name"))?;
                        slot.insert(fields.xattrs.len());
                        fields.xattrs.push((name, value.to_vec()));
                    }
                }
                continue;
            }
            // An empty value deletes the keyword: the header field applies again.
            let present = !value.is_empty();
            match key {
                b"mtime" => {
                    fields.mtime = present
                        .then(|| parse_pax_time(value))
                        .map(|t| t.ok_or_else(|| malformed(offset, path, "invalid PAX mtime")))
                        .transpose()?;
                }
                b"uid" => {
                    fields.uid = present
                        .then(|| parse_pax_id(value))
                        .map(|id| id.ok_or_else(|| malformed(offset, path, "invalid PAX uid")))
                        .transpose()?;
                }
                b"gid" => {
                    fields.gid = present
                        .then(|| parse_pax_id(value))
                        .map(|id| id.ok_or_else(|| malformed(offset, path, "invalid PAX gid")))
                        .transpose()?;
                }
                _ if key.starts_with(b"GNU.sparse.") => fields.sparse = true,
                _ => {}
            }
        }
        Ok(fields)
    }

    /// Finds the member a hard link points to and returns the path to record as its target.
    fn resolve_hard_link(
        &self,
        offset: u64,
        path: &str,
        raw_target: &[u8],
    ) -> Result<String, Error> {
        let target = normalize(raw_target).map_err(|err| {
            malformed(
                offset,
                path,
                &format!(
                    "hard link target {:?}: {err}",
                    String::from_utf8_lossy(raw_target)
                ),
            )
        })?;
        self.check_path_len(offset, target.as_bytes())?;
        let Some(&position) = self.by_path.get(&target) else {
            return Err(Error::HardLinkTargetMissing {
                offset,
                path: path.to_owned(),
                target,
            });
        };
        let target_entry = &self.entries[position];
        match target_entry.kind {
            EntryKind::Dir => Err(malformed(offset, path, "hard link to a directory")),
            // Already resolved when it was added, so one step reaches a non-link.
            EntryKind::HardLink => {
                Ok(String::from_utf8_lossy(&target_entry.link_target).into_owned())
            }
            _ => Ok(target),
        }
    }

    fn insert(&mut self, offset: u64, entry: TarEntry) -> Result<(), Error> {
        match self.by_path.entry(entry.path.clone()) {
            MapEntry::Occupied(slot) => {
                let existing = &mut self.entries[*slot.get()];
                if existing.kind == EntryKind::Dir && entry.kind == EntryKind::Dir {
                    log::debug!(
                        "directory {:?} repeated at offset {offset}; later metadata wins",
                        entry.path
                    );
                    *existing = entry;
                    Ok(())
                } else {
                    Err(Error::Duplicate {
                        offset,
                        path: entry.path,
                    })
                }
            }
            MapEntry::Vacant(slot) => {
                if self.entries.len() >= self.limits.max_entries {
                    return Err(Error::TooManyEntries {
                        offset,
                        limit: self.limits.max_entries,
                    });
                }
                slot.insert(self.entries.len());
                self.entries.push(entry);
                Ok(())
            }
        }
    }
}

/// A [`Error::Malformed`] about the member at `path`.
fn malformed(offset: u64, path: &str, what: &str) -> Error {
    Error::Malformed {
        offset,
        reason: format!("{path:?}: {}", escape_controls(what)),
    }
}

/// Escapes control characters, so text that quotes a hostile tar (the `tar` crate's messages
/// include raw member names) cannot drive the terminal that prints the error.
fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Reads a numeric header field. A field of only NULs and spaces reads as 0, as Go's
/// `archive/tar` (and so docker and containerd) reads it; the `tar` crate would reject it.
fn header_number(raw: &[u8], parsed: io::Result<u64>) -> Option<u64> {
    if raw.iter().all(|&b| b == 0 || b == b' ') {
        Some(0)
    } else {
        parsed.ok()
    }
}

/// An xattr name as stored: UTF-8, non-empty, no NUL.
fn xattr_name(raw: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(raw).ok()?;
    (!name.is_empty() && !name.contains('\0')).then(|| name.to_owned())
}

/// Parses a PAX decimal id.
fn parse_pax_id(value: &[u8]) -> Option<u32> {
    if !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Parses a PAX time, `[-]seconds[.fraction]`, into seconds and nanoseconds with the
/// nanoseconds always non-negative (`-1.25` is `(-2, 750_000_000)`). Digits past nanoseconds
/// are ignored.
fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let (negative, unsigned) = match value.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, value),
    };
    let (whole, fraction) = match unsigned.iter().position(|&b| b == b'.') {
        Some(dot) => (&unsigned[..dot], &unsigned[dot + 1..]),
        None => (unsigned, &[][..]),
    };
    if whole.is_empty()
        || !whole.iter().all(u8::is_ascii_digit)
        || !fraction.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let seconds: i64 = std::str::from_utf8(whole).ok()?.parse().ok()?;
    let nanos = (0..9).fold(0u32, |acc, i| {
        acc * 10 + fraction.get(i).map_or(0, |digit| u32::from(digit - b'0'))
    });
    if !negative {
        Some((seconds, nanos))
    } else if nanos == 0 {
        Some((-seconds, 0))
    } else {
        Some((-seconds - 1, 1_000_000_000 - nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Cursor;
    use std::path::Path;
    use std::process::Command;

    fn try_index(bytes: &[u8]) -> Result<TarIndex, Error> {
        build(Cursor::new(bytes), &Limits::default())
    }

    fn index_ok(bytes: &[u8]) -> TarIndex {
        try_index(bytes).unwrap_or_else(|err| panic!("indexing failed: {err}"))
    }

    fn entry<'a>(index: &'a TarIndex, path: &str) -> &'a TarEntry {
        index
            .entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no entry {path:?} in {:?}", paths(index)))
    }

    fn paths(index: &TarIndex) -> Vec<&str> {
        index.entries.iter().map(|e| e.path.as_str()).collect()
    }

    /// The data of a regular-file entry, read back from the tar at the recorded offset.
    fn data<'t>(tar: &'t [u8], entry: &TarEntry) -> &'t [u8] {
        assert_eq!(entry.kind, EntryKind::File, "{}", entry.path);
        let start = usize::try_from(entry.data_offset).unwrap();
        &tar[start..start + usize::try_from(entry.size).unwrap()]
    }

    /// Runs GNU tar over the contents of `dir` and returns the archive.
    fn gnu_tar(dir: &Path, options: &[&str]) -> Vec<u8> {
        let output = Command::new("tar")
            .args(options)
            .arg("-cf")
            .arg("-")
            .arg("-C")
            .arg(dir)
            .arg(".")
            .output()
            .expect("running GNU tar");
        assert!(
            output.status.success(),
            "tar {options:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    fn run(program: &str, args: &[&str]) -> bool {
        Command::new(program)
            .args(args)
            .status()
            .is_ok_and(|status| status.success())
    }

    /// One member description for [`raw_tar`].
    struct Raw<'a> {
        name: &'a [u8],
        type_byte: u8,
        data: &'a [u8],
        link: &'a [u8],
        pax: &'a [(&'a str, &'a [u8])],
    }

    impl<'a> Raw<'a> {
        fn new(name: &'a [u8], type_byte: u8) -> Self {
            Self {
                name,
                type_byte,
                data: b"",
                link: b"",
                pax: &[],
            }
        }
        fn file(name: &'a [u8], data: &'a [u8]) -> Self {
            Self {
                data,
                ..Self::new(name, b'0')
            }
        }
        fn link(name: &'a [u8], type_byte: u8, link: &'a [u8]) -> Self {
            Self {
                link,
                ..Self::new(name, type_byte)
            }
        }
    }

    /// Builds a tar whose names are written byte for byte, bypassing the `tar` crate's path
    /// checks, so hostile names (`../x`, `/x`, non-UTF-8) can be produced.
    fn raw_tar(members: &[Raw<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for member in members {
            if !member.pax.is_empty() {
                builder
                    .append_pax_extensions(member.pax.iter().copied())
                    .unwrap();
            }
            let mut header = tar::Header::new_ustar();
            header.as_old_mut().name[..member.name.len()].copy_from_slice(member.name);
            header.as_old_mut().linkname[..member.link.len()].copy_from_slice(member.link);
            // Verbatim: `EntryType` would turn a NUL type into '0'.
            header.as_old_mut().linkflag[0] = member.type_byte;
            header.set_mode(0o644);
            header.set_uid(1000);
            header.set_gid(1000);
            header.set_mtime(1_600_000_000);
            header.set_size(member.data.len() as u64);
            header.set_cksum();
            builder.append(&header, member.data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn normalize_cases() {
        let ok = [
            ("a", "a"),
            ("./a", "a"),
            ("/a", "a"),
            ("//a//b/", "a/b"),
            ("./a/./b/.", "a/b"),
            ("a/../b", "b"),
            ("a/b/..", "a"),
            (".", ""),
            ("./", ""),
            ("/", ""),
            ("", ""),
            ("a/..", ""),
            (".wh.x", ".wh.x"),
            ("...", "..."),
        ];
        for (raw, expected) in ok {
            assert_eq!(normalize(raw.as_bytes()).as_deref(), Ok(expected), "{raw}");
            assert!(is_normalized(expected), "{expected}");
        }
        for raw in ["..", "../x", "a/../../x", "/../x", "./../x", "a/b/../../.."] {
            assert_eq!(
                normalize(raw.as_bytes()),
                Err(PathError::EscapesRoot),
                "{raw}"
            );
        }
        assert_eq!(normalize(b"a\xffb"), Err(PathError::NotUtf8));
        assert_eq!(normalize(b"a\0b"), Err(PathError::ContainsNul));
        for bad in ["/a", "a/", "a//b", "./a", "a/./b", "a/../b", ".."] {
            assert!(!is_normalized(bad), "{bad}");
        }
    }

    #[test]
    fn builder_files_have_their_data_at_the_recorded_offsets() {
        let sizes = [0usize, 1, 511, 512, 513, 100_000];
        let contents: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len).map(|j| (i * 31 + j * 7) as u8).collect())
            .collect();
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o1755);
        dir.set_uid(7);
        dir.set_gid(8);
        dir.set_mtime(1_234);
        dir.set_size(0);
        builder.append_data(&mut dir, "dir/", &[][..]).unwrap();
        for (i, content) in contents.iter().enumerate() {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o4755);
            header.set_uid(1000 + i as u64);
            header.set_gid(2000);
            header.set_mtime(1_700_000_000);
            header.set_size(content.len() as u64);
            builder
                .append_data(&mut header, format!("dir/f{i}"), content.as_slice())
                .unwrap();
        }
        let tar = builder.into_inner().unwrap();

        let index = index_ok(&tar);
        assert_eq!(index.entries.len(), 1 + sizes.len());
        let dir = entry(&index, "dir");
        assert_eq!(
            (dir.kind, dir.mode, dir.uid, dir.gid, dir.mtime, dir.size),
            (EntryKind::Dir, 0o1755, 7, 8, 1_234, 0)
        );
        for (i, content) in contents.iter().enumerate() {
            let file = entry(&index, &format!("dir/f{i}"));
            assert_eq!(file.mode, 0o4755);
            assert_eq!((file.uid, file.gid), (1000 + i as u32, 2000));
            assert_eq!((file.mtime, file.mtime_nsec), (1_700_000_000, 0));
            assert_eq!(file.size, content.len() as u64);
            assert_eq!(data(&tar, file), content.as_slice());
        }
    }

    #[test]
    fn gnu_tar_files_dirs_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc/conf.d")).unwrap();
        fs::write(root.join("etc/hostname"), b"box\n").unwrap();
        fs::write(root.join("etc/conf.d/big"), vec![b'z'; 70_000]).unwrap();
        std::os::unix::fs::symlink("../etc/hostname", root.join("etc/conf.d/link")).unwrap();

        for format in ["--format=gnu", "--format=pax", "--format=ustar"] {
            let tar = gnu_tar(root, &[format]);
            let index = index_ok(&tar);
            assert_eq!(entry(&index, "").kind, EntryKind::Dir, "{format}");
            assert_eq!(entry(&index, "etc/conf.d").kind, EntryKind::Dir);
            assert_eq!(data(&tar, entry(&index, "etc/hostname")), b"box\n");
            assert_eq!(
                data(&tar, entry(&index, "etc/conf.d/big")),
                &[b'z'; 70_000][..]
            );
            let link = entry(&index, "etc/conf.d/link");
            assert_eq!(link.kind, EntryKind::Symlink);
            assert_eq!(link.link_target, b"../etc/hostname");
            assert_eq!((link.size, link.data_offset), (0, 0));
        }
    }

    #[test]
    fn gnu_tar_long_names_and_links_in_gnu_and_pax_formats() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let deep = format!("{}/{}", "d".repeat(90), "e".repeat(90));
        let long_file = format!("{deep}/{}", "f".repeat(150));
        fs::create_dir_all(root.join(&deep)).unwrap();
        fs::write(root.join(&long_file), b"long").unwrap();
        let long_target = format!("../../{}", "t".repeat(180));
        std::os::unix::fs::symlink(&long_target, root.join(&deep).join("sym")).unwrap();
        fs::hard_link(root.join(&long_file), root.join("hard")).unwrap();

        for format in ["--format=gnu", "--format=pax"] {
            let tar = gnu_tar(root, &[format]);
            let index = index_ok(&tar);
            assert!(long_file.len() > 300);
            let sym = entry(&index, &format!("{deep}/sym"));
            assert_eq!(sym.link_target, long_target.as_bytes(), "{format}");
            // GNU tar stores the first name it meets and links the other one to it.
            let (file, link) = match entry(&index, "hard").kind {
                EntryKind::HardLink => (entry(&index, &long_file), entry(&index, "hard")),
                _ => (entry(&index, "hard"), entry(&index, &long_file)),
            };
            assert_eq!(data(&tar, file), b"long", "{format}");
            assert_eq!(link.kind, EntryKind::HardLink);
            assert_eq!(link.link_target, file.path.as_bytes());
            assert_eq!((link.size, link.data_offset), (0, 0));
        }
    }

    #[test]
    fn gnu_tar_fifo_and_devices() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let fifo = root.join("fifo");
        assert!(run("mkfifo", &[fifo.to_str().unwrap()]), "mkfifo failed");
        let chr = root.join("null");
        let blk = root.join("loop");
        let devices = run("mknod", &[chr.to_str().unwrap(), "c", "1", "3"])
            && run("mknod", &[blk.to_str().unwrap(), "b", "7", "200"]);
        if !devices {
            eprintln!("note: mknod failed (not root or no CAP_MKNOD); device entries not tested");
        }

        let tar = gnu_tar(root, &["--format=gnu"]);
        let index = index_ok(&tar);
        assert_eq!(entry(&index, "fifo").kind, EntryKind::Fifo);
        if devices {
            let chr = entry(&index, "null");
            assert_eq!(
                (chr.kind, chr.rdev_major, chr.rdev_minor),
                (EntryKind::CharDev, 1, 3)
            );
            let blk = entry(&index, "loop");
            assert_eq!(
                (blk.kind, blk.rdev_major, blk.rdev_minor),
                (EntryKind::BlockDev, 7, 200)
            );
        }
    }

    #[test]
    fn gnu_tar_pax_xattrs_and_nanosecond_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let file = root.join("f");
        fs::write(&file, b"x").unwrap();
        let file = file.to_str().unwrap();
        assert!(run("touch", &["-d", "2020-01-01 00:00:00.123456789", file]));
        if !run("setfattr", &["-n", "user.x", "-v", "1", file]) {
            eprintln!("note: setfattr failed (no user xattrs on this file system); skipped");
            return;
        }
        // A v2 capability: CAP_NET_BIND_SERVICE permitted.
        let capability = "0x0100000200040000000000000000000000000000";
        let with_capability = run(
            "setfattr",
            &["-n", "security.capability", "-v", capability, file],
        );
        if !with_capability {
            eprintln!("note: cannot set security.capability (not root); only user.x tested");
        }

        let tar = gnu_tar(root, &["--xattrs", "--xattrs-include=*", "--format=pax"]);
        let index = index_ok(&tar);
        let f = entry(&index, "f");
        assert_eq!((f.mtime, f.mtime_nsec), (1_577_836_800, 123_456_789));
        assert_eq!(data(&tar, f), b"x");
        let xattr = |name: &str| {
            f.xattrs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
        };
        assert_eq!(xattr("user.x"), Some(&b"1"[..]));
        if with_capability {
            let expected = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            assert_eq!(xattr("security.capability"), Some(&expected[..]));
        }
    }

    #[test]
    fn pax_records_override_the_header() {
        let capability: &[u8] = &[1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0, 0];
        let tar = raw_tar(&[
            Raw {
                pax: &[
                    ("mtime", b"1234.5"),
                    ("uid", b"100000"),
                    ("gid", b"200000"),
                    ("SCHILY.xattr.security.capability", capability),
                    ("SCHILY.xattr.user.a", b"first"),
                    ("SCHILY.xattr.user.empty", b""),
                    ("SCHILY.xattr.user.a", b"second"),
                    ("atime", b"1.0"),
                ],
                ..Raw::file(b"f", b"data")
            },
            Raw {
                pax: &[("mtime", b"-1.25")],
                ..Raw::new(b"g", b'0')
            },
            Raw {
                pax: &[("mtime", b"")],
                ..Raw::new(b"h", b'0')
            },
        ]);
        let index = index_ok(&tar);
        let f = entry(&index, "f");
        assert_eq!((f.mtime, f.mtime_nsec), (1234, 500_000_000));
        assert_eq!((f.uid, f.gid), (100_000, 200_000));
        let expected: Vec<(String, Vec<u8>)> = vec![
            ("security.capability".into(), capability.to_vec()),
            ("user.a".into(), b"second".to_vec()),
            ("user.empty".into(), Vec::new()),
        ];
        assert_eq!(f.xattrs, expected);
        assert_eq!(data(&tar, f), b"data");
        let g = entry(&index, "g");
        assert_eq!((g.mtime, g.mtime_nsec), (-2, 750_000_000));
        let h = entry(&index, "h");
        assert_eq!((h.mtime, h.mtime_nsec), (1_600_000_000, 0));

        for bad in [&b"12x"[..], b"1.2.3", b"-", b".5", b"99999999999999999999"] {
            let tar = raw_tar(&[Raw {
                pax: &[("mtime", bad)],
                ..Raw::new(b"f", b'0')
            }]);
            assert!(
                matches!(try_index(&tar), Err(Error::Malformed { .. })),
                "{bad:?}"
            );
        }
        let tar = raw_tar(&[Raw {
            pax: &[("uid", b"4294967296")],
            ..Raw::new(b"f", b'0')
        }]);
        assert!(matches!(try_index(&tar), Err(Error::Malformed { .. })));
    }

    #[test]
    fn leading_slash_and_dot_components_are_relative_to_the_root() {
        let tar = raw_tar(&[
            Raw::new(b"/", b'5'),
            Raw::new(b"/abs/", b'5'),
            Raw::file(b"/abs/file", b"1"),
            Raw::file(b"./rel//./file", b"2"),
            Raw::file(b"abs/../up", b"3"),
        ]);
        let index = index_ok(&tar);
        assert_eq!(paths(&index), ["", "abs", "abs/file", "rel/file", "up"]);
        assert_eq!(data(&tar, entry(&index, "up")), b"3");
    }

    #[test]
    fn paths_climbing_out_of_the_root_are_rejected() {
        for name in [
            &b"../x"[..],
            b"a/../../x",
            b"/../x",
            b"..",
            b"./a/../../../etc/passwd",
        ] {
            let tar = raw_tar(&[Raw::file(name, b"evil")]);
            match try_index(&tar) {
                Err(Error::EscapingPath { offset: 0, path }) => {
                    assert_eq!(path.as_bytes(), name);
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(name)),
            }
        }
        // A hard link pointing out of the root is malformed, not missing.
        let tar = raw_tar(&[Raw::link(b"x", b'1', b"../etc/shadow")]);
        assert!(matches!(try_index(&tar), Err(Error::Malformed { .. })));
    }

    #[test]
    fn whiteouts_are_kept_but_a_bare_whiteout_is_rejected() {
        let tar = raw_tar(&[
            Raw::new(b"dir/", b'5'),
            Raw::new(b"dir/.wh..wh..opq", b'0'),
            Raw::new(b".wh.gone", b'0'),
            Raw::new(b"dir/.wh.x", b'0'),
        ]);
        let index = index_ok(&tar);
        assert_eq!(
            paths(&index),
            ["dir", "dir/.wh..wh..opq", ".wh.gone", "dir/.wh.x"]
        );

        for name in [&b".wh."[..], b"dir/.wh.", b"./.wh./"] {
            let type_byte = if name.ends_with(b"/") { b'5' } else { b'0' };
            let tar = raw_tar(&[Raw::new(b"ok", b'0'), Raw::new(name, type_byte)]);
            assert!(
                matches!(
                    try_index(&tar),
                    Err(Error::BareWhiteout { offset: 512, .. })
                ),
                "{:?}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn duplicates_are_rejected_but_repeated_directories_merge() {
        let tar = raw_tar(&[Raw::file(b"a", b"1"), Raw::file(b"./a", b"2")]);
        match try_index(&tar) {
            Err(Error::Duplicate { offset, path }) => {
                assert_eq!((offset, path.as_str()), (1024, "a"))
            }
            other => panic!("{other:?}"),
        }
        let tar = raw_tar(&[Raw::new(b"d/", b'5'), Raw::file(b"d", b"")]);
        assert!(matches!(try_index(&tar), Err(Error::Duplicate { .. })));

        let mut builder = tar::Builder::new(Vec::new());
        for (mode, name) in [(0o700, "d/"), (0o644, "d/f"), (0o755, "./d")] {
            let mut header = tar::Header::new_gnu();
            let is_dir = name != "d/f";
            header.set_entry_type(if is_dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            header.set_mode(mode);
            // uid, gid and mtime stay blank: they read as 0, as in Go's archive/tar.
            header.set_size(0);
            builder.append_data(&mut header, name, &[][..]).unwrap();
        }
        let index = index_ok(&builder.into_inner().unwrap());
        assert_eq!(paths(&index), ["d", "d/f"]);
        let dir = entry(&index, "d");
        assert_eq!((dir.mode, dir.uid, dir.gid, dir.mtime), (0o755, 0, 0, 0));
    }

    #[test]
    fn hard_links_must_point_to_earlier_members() {
        let tar = raw_tar(&[
            Raw::file(b"file", b"shared"),
            Raw::link(b"link1", b'1', b"./file"),
            Raw::link(b"link2", b'1', b"/link1"),
        ]);
        let index = index_ok(&tar);
        assert_eq!(entry(&index, "link1").link_target, b"file");
        assert_eq!(entry(&index, "link2").link_target, b"file");

        let tar = raw_tar(&[Raw::link(b"link", b'1', b"later"), Raw::file(b"later", b"")]);
        match try_index(&tar) {
            Err(Error::HardLinkTargetMissing {
                offset,
                path,
                target,
            }) => assert_eq!(
                (offset, path.as_str(), target.as_str()),
                (0, "link", "later")
            ),
            other => panic!("{other:?}"),
        }
        let tar = raw_tar(&[Raw::link(b"self", b'1', b"self")]);
        assert!(matches!(
            try_index(&tar),
            Err(Error::HardLinkTargetMissing { .. })
        ));
        let tar = raw_tar(&[Raw::new(b"d/", b'5'), Raw::link(b"l", b'1', b"d")]);
        assert!(matches!(try_index(&tar), Err(Error::Malformed { .. })));
        let tar = raw_tar(&[Raw::new(b"l", b'1')]);
        assert!(matches!(try_index(&tar), Err(Error::Malformed { .. })));
    }

    /// A tar of two files: `a` (1000 bytes, header at 0, data at 512) and `b` (600 bytes,
    /// header at 1536, data at 2048), then the end-of-archive blocks.
    fn two_files() -> Vec<u8> {
        raw_tar(&[
            Raw::file(b"a", &[b'a'; 1000]),
            Raw::file(b"b", &[b'b'; 600]),
        ])
    }

    #[test]
    fn truncated_streams_are_errors() {
        let tar = two_files();
        let cases = [
            (700, 0),           // inside a's data
            (1535, 0),          // inside a's padding, after its data: a is whole, b's header cut
            (1536 + 200, 1536), // inside b's header
            (2048 + 100, 1536), // inside b's data
        ];
        for (cut, offset) in cases {
            let result = try_index(&tar[..cut]);
            if cut == 1535 {
                // Only padding is missing and nothing follows: a is complete.
                assert_eq!(result.map(|i| i.entries.len()).ok(), Some(1));
                continue;
            }
            match result {
                Err(err @ Error::Truncated { .. }) => {
                    assert_eq!(
                        err.to_string(),
                        format!("tar entry at offset {offset} is truncated")
                    );
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }

        // Cut inside PAX records and right after a PAX header with no member following.
        let tar = raw_tar(&[Raw {
            pax: &[("path", "p".repeat(300).as_bytes())],
            ..Raw::file(b"x", b"data")
        }]);
        for cut in [700, 1024] {
            assert!(
                matches!(try_index(&tar[..cut]), Err(Error::Truncated { offset: 0 })),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_stream_ending_between_members_is_accepted() {
        let tar = two_files();
        // Without the two zero blocks that close the archive.
        let index = index_ok(&tar[..2048 + 1024]);
        assert_eq!(paths(&index), ["a", "b"]);
    }

    #[test]
    fn empty_and_zero_streams_are_empty_layers() {
        assert_eq!(index_ok(b""), TarIndex::default());
        assert_eq!(index_ok(&[0; 10_240]), TarIndex::default());
        // A lone zero block followed by garbage: the zero block ends the archive.
        let mut tail = vec![0; 512];
        tail.extend_from_slice(&[0xab; 512]);
        assert_eq!(index_ok(&tail), TarIndex::default());
    }

    #[test]
    fn messages_escape_control_characters_from_the_tar() {
        let mut tar = raw_tar(&[Raw::new(b"\x1b]0;owned\x07", b'0')]);
        // Corrupt the size field; the `tar` crate's message quotes the raw name.
        patch_first_header(&mut tar, 124, b"zzzzzzzzzzz\0");
        let message = try_index(&tar).unwrap_err().to_string();
        assert!(
            message.starts_with("tar entry at offset 0 is malformed"),
            "{message}"
        );
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }

    #[test]
    fn random_bytes_are_malformed() {
        let mut rng = Rng(0x5eed);
        for _ in 0..64 {
            let bytes = rng.bytes(4096);
            match try_index(&bytes) {
                Err(Error::Malformed { offset: 0, .. }) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn mutated_tars_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/file"), b"hello").unwrap();
        std::os::unix::fs::symlink("file", dir.path().join("d/sym")).unwrap();
        fs::hard_link(dir.path().join("d/file"), dir.path().join("hard")).unwrap();
        let original = gnu_tar(dir.path(), &["--format=pax"]);
        index_ok(&original);
        let mut rng = Rng(42);
        for _ in 0..3000 {
            let mut tar = original.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() % tar.len() as u64) as usize;
                tar[at] = rng.next() as u8;
            }
            if rng.next().is_multiple_of(4) {
                tar.truncate((rng.next() % tar.len() as u64) as usize);
            }
            let _ = try_index(&tar);
        }
    }

    #[test]
    fn unsupported_member_types_are_rejected() {
        for type_byte in [b'D', b'V', b'M', b'N', b'x' + 1] {
            let tar = raw_tar(&[Raw::new(b"odd", type_byte)]);
            match try_index(&tar) {
                Err(err @ Error::UnsupportedType { .. }) => {
                    assert!(err.to_string().contains("\"odd\""), "{err}");
                }
                other => panic!("{type_byte}: {other:?}"),
            }
        }
        let err = try_index(&raw_tar(&[Raw::new(b"odd", 0x80)])).unwrap_err();
        assert!(err.to_string().ends_with("unsupported type 0x80"), "{err}");
    }

    #[test]
    fn sparse_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = dir.path().join("sparse");
        let file = fs::File::create(&sparse).unwrap();
        file.set_len(1 << 20).unwrap();
        drop(file);
        fs::OpenOptions::new()
            .append(true)
            .open(&sparse)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"end"))
            .unwrap();
        for format in ["--format=gnu", "--format=pax"] {
            let tar = gnu_tar(dir.path(), &["--sparse", format]);
            assert!(
                matches!(try_index(&tar), Err(Error::Sparse { .. })),
                "{format}: {:?}",
                try_index(&tar)
            );
        }
    }

    /// Overwrites bytes of the first header of `tar` and fixes its checksum.
    fn patch_first_header(tar: &mut [u8], at: usize, bytes: &[u8]) {
        tar[at..at + bytes.len()].copy_from_slice(bytes);
        let mut header = tar::Header::from_byte_slice(&tar[..512]).clone();
        header.set_cksum();
        tar[..512].copy_from_slice(header.as_bytes());
    }

    #[test]
    fn odd_names_and_fields() {
        // Pre-POSIX directories: type NUL and a trailing slash.
        let index = index_ok(&raw_tar(&[Raw::new(b"old/", 0), Raw::file(b"old/f", b"x")]));
        assert_eq!(entry(&index, "old").kind, EntryKind::Dir);
        assert_eq!(entry(&index, "old/f").kind, EntryKind::File);
        // An empty symlink target is odd but representable; only NULs are rejected.
        let index = index_ok(&raw_tar(&[Raw::link(b"s", b'2', b"")]));
        assert_eq!(entry(&index, "s").link_target, b"");

        let mut corrupt_mode = raw_tar(&[Raw::new(b"f", b'0')]);
        patch_first_header(&mut corrupt_mode, 100, b"zzzzzzz\0");
        let malformed = [
            raw_tar(&[Raw::new(b"bad\xff", b'0')]),
            raw_tar(&[Raw::new(b"file/", b'0')]),
            raw_tar(&[Raw::new(b"./", b'0')]),
            raw_tar(&[Raw {
                pax: &[("path", b"a\0b")],
                ..Raw::new(b"x", b'0')
            }]),
            raw_tar(&[Raw {
                pax: &[("linkpath", b"a\0b")],
                ..Raw::link(b"s", b'2', b"t")
            }]),
            raw_tar(&[Raw {
                pax: &[("SCHILY.xattr.", b"v")],
                ..Raw::new(b"x", b'0')
            }]),
            corrupt_mode,
        ];
        for (case, tar) in malformed.iter().enumerate() {
            let result = try_index(tar);
            assert!(
                matches!(result, Err(Error::Malformed { offset: 0, .. })),
                "case {case}: {result:?}"
            );
        }
    }

    #[test]
    fn global_pax_headers_are_skipped() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut global = tar::Header::new_ustar();
        let records = b"22 comment=git 12345\n";
        global.set_entry_type(tar::EntryType::XGlobalHeader);
        global.set_size(records.len() as u64);
        global.set_path("pax_global_header").unwrap();
        global.set_cksum();
        builder.append(&global, &records[..]).unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_size(2);
        builder.append_data(&mut header, "f", &b"hi"[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        let index = index_ok(&tar);
        assert_eq!(paths(&index), ["f"]);
        assert_eq!(data(&tar, entry(&index, "f")), b"hi");
    }

    #[test]
    fn limits_are_enforced() {
        let tar = raw_tar(&[
            Raw::new(b"a", b'0'),
            Raw::new(b"b", b'0'),
            Raw::new(b"c", b'0'),
        ]);
        let limits = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        assert!(matches!(
            build(Cursor::new(&tar), &limits),
            Err(Error::TooManyEntries {
                offset: 1024,
                limit: 2
            })
        ));
        let limits = Limits {
            max_entries: 3,
            ..Limits::default()
        };
        assert!(build(Cursor::new(&tar), &limits).is_ok());

        let long = "x".repeat(200);
        let tar = raw_tar(&[Raw {
            pax: &[("path", long.as_bytes())],
            ..Raw::new(b"short", b'0')
        }]);
        let limits = Limits {
            max_path_len: 100,
            ..Limits::default()
        };
        match build(Cursor::new(&tar), &limits) {
            Err(Error::PathTooLong {
                path_prefix, limit, ..
            }) => assert_eq!((path_prefix.len(), limit), (PATH_PREFIX_LEN, 100)),
            other => panic!("{other:?}"),
        }
        let tar = raw_tar(&[Raw::link(b"s", b'2', &long.as_bytes()[..99])]);
        let limits = Limits {
            max_path_len: 50,
            ..Limits::default()
        };
        assert!(matches!(
            build(Cursor::new(&tar), &limits),
            Err(Error::PathTooLong { .. })
        ));

        let value = vec![7u8; 600];
        let tar = raw_tar(&[Raw {
            pax: &[("SCHILY.xattr.user.big", &value)],
            ..Raw::new(b"f", b'0')
        }]);
        let limits = Limits {
            max_xattr_bytes: 512,
            ..Limits::default()
        };
        assert!(matches!(
            build(Cursor::new(&tar), &limits),
            Err(Error::XattrsTooLarge { .. })
        ));
        let limits = Limits {
            max_xattr_bytes: 608,
            ..Limits::default()
        };
        assert!(build(Cursor::new(&tar), &limits).is_ok());

        // Extension records far past every limit are refused before being read in full.
        let huge = vec![b'c'; 300_000];
        let tar = raw_tar(&[Raw {
            pax: &[("comment", &huge)],
            ..Raw::new(b"f", b'0')
        }]);
        let limits = Limits {
            max_path_len: 100,
            max_xattr_bytes: 100,
            max_entries: 10,
        };
        assert!(matches!(
            build(Cursor::new(&tar), &limits),
            Err(Error::Malformed { offset: 0, .. })
        ));
        assert!(build(Cursor::new(&tar), &Limits::default()).is_ok());
    }

    /// Counts the bytes read through it, to show member data is seeked over.
    struct CountingReader {
        inner: Cursor<Vec<u8>>,
        bytes_read: Rc<Cell<u64>>,
    }

    impl Read for CountingReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.bytes_read.set(self.bytes_read.get() + n as u64);
            Ok(n)
        }
    }

    impl Seek for CountingReader {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }

    #[test]
    fn member_data_is_seeked_over_not_read() {
        let big = vec![1u8; 4 << 20];
        let mut builder = tar::Builder::new(Vec::new());
        for i in 0..8 {
            let mut header = tar::Header::new_gnu();
            header.set_size(big.len() as u64);
            builder
                .append_data(&mut header, format!("f{i}"), big.as_slice())
                .unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let total = tar.len() as u64;
        let bytes_read = Rc::new(Cell::new(0));
        let reader = CountingReader {
            inner: Cursor::new(tar),
            bytes_read: Rc::clone(&bytes_read),
        };
        let index = build(reader, &Limits::default()).unwrap();
        assert_eq!(index.entries.len(), 8);
        assert!(
            bytes_read.get() < total / 32,
            "read {} of {total} bytes",
            bytes_read.get()
        );
    }

    #[test]
    fn reader_errors_are_io_errors() {
        struct Failing(Cursor<Vec<u8>>);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.position() >= 1024 {
                    return Err(io::Error::other("disk on fire"));
                }
                let len = buf.len().min(512);
                self.0.read(&mut buf[..len])
            }
        }
        impl Seek for Failing {
            fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
                self.0.seek(to)
            }
        }
        let tar = two_files();
        match build(Failing(Cursor::new(tar)), &Limits::default()) {
            Err(err @ Error::Io { offset: 1536, .. }) => {
                assert_eq!(err.to_string(), "reading the tar stream near offset 1536");
            }
            other => panic!("{other:?}"),
        }
    }
}
