//! The member table of a tar archive, made in one pass over its headers.
//!
//! [`TarMembers::scan`] reads each header and seeks over the data (`entries_with_seek`), so
//! scanning a 128 MB docker archive reads a few KiB. It records where each member's data lies,
//! which is all an image archive needs: manifest and config members are read from there, and
//! uncompressed layer members are served in place as byte ranges of the archive.
//!
//! Member names are normalised as layer paths are, by [`crate::tar_index::normalize`] (no `./`
//! prefix, no `.` or empty components, `..` applied), so `./manifest.json` and `manifest.json`
//! are one name. [`TarMembers::extent`] follows symlink members (skopeo's docker-archive writes
//! `<id>/layer.tar -> ../<diff_id>.tar`) and hard-link members to the member that holds the
//! data.
//!
//! Truncation: seeking past the end of a file succeeds and the next header read then looks like
//! a clean end of archive, so the scan itself checks that each member's data fits in the file and
//! that the last member is followed by an end-of-archive zero block, as GNU tar does.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::blob::Extent;
use super::model::{DOCKER_MANIFEST_JSON, INDEX_JSON, OCI_LAYOUT_FILE};
use super::{Error, Location};
use crate::tar_index;

/// More members than this in an archive holding image metadata is an error; a flat rootfs tar
/// may have any number (only this many are recorded). Image archives have a handful per layer.
pub(super) const MAX_MEMBERS: usize = 1 << 16;

/// How many symlink or hard-link hops [`TarMembers::extent`] follows (Linux's `MAXSYMLINKS`).
const MAX_LINK_HOPS: usize = 40;

/// The tar block size.
const BLOCK: u64 = 512;

/// What a member is, as far as finding data goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum MemberKind {
    /// Holds data.
    File,
    /// A symbolic link; the target is relative to the member's directory.
    Symlink(String),
    /// A hard link; the target is an archive path.
    HardLink(String),
    /// Anything else (directory, device, fifo, sparse file), described for messages.
    Other(&'static str),
}

/// One recorded member.
#[derive(Clone, Debug)]
struct Member {
    kind: MemberKind,
    /// Where the data starts in the archive.
    offset: u64,
    /// The data's length.
    size: u64,
}

/// The members of one tar archive, by normalised name.
#[derive(Debug)]
pub(super) struct TarMembers {
    archive: PathBuf,
    members: HashMap<String, Member>,
    /// More than [`MAX_MEMBERS`] members were seen; later ones were not recorded.
    overflowed: bool,
}

impl TarMembers {
    /// Scans the headers of `archive` (`len` bytes long).
    ///
    /// # Errors
    ///
    /// [`Error::NotAnImage`] if the first header is not a tar header, [`Error::TarHeader`] for a
    /// later corrupt header, [`Error::TruncatedMember`] / [`Error::TruncatedEnd`] for a cut
    /// archive, [`Error::TooManyMembers`] for an image archive with more than [`MAX_MEMBERS`].
    pub(super) fn scan(archive: &Path, len: u64) -> Result<TarMembers, Error> {
        let read_error = |source| Error::Read {
            location: Location::file(archive),
            source,
        };
        let file = File::open(archive).map_err(read_error)?;
        let mut tar = tar::Archive::new(&file);
        let entries = tar.entries_with_seek().map_err(read_error)?;
        let mut table = TarMembers {
            archive: archive.to_owned(),
            members: HashMap::new(),
            overflowed: false,
        };
        // Where the next header (or the end-of-archive block) should start.
        let mut next_header = 0u64;
        for (number, entry) in entries.enumerate() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(_) if number == 0 => {
                    return Err(Error::NotAnImage {
                        path: archive.to_owned(),
                    });
                }
                Err(source) => {
                    return Err(Error::TarHeader {
                        archive: archive.to_owned(),
                        offset: next_header,
                        source,
                    });
                }
            };
            let raw_name = entry.path_bytes();
            let name = String::from_utf8_lossy(&raw_name).into_owned();
            let offset = entry.raw_file_position();
            let size = entry.size();
            let end = offset.checked_add(size).filter(|end| *end <= len);
            let Some(end) = end else {
                return Err(Error::TruncatedMember {
                    archive: archive.to_owned(),
                    member: name,
                    end: offset.saturating_add(size),
                    len,
                });
            };
            next_header = end.div_ceil(BLOCK) * BLOCK;
            let kind = member_kind(&entry);
            table.record(&raw_name, Member { kind, offset, size });
        }
        table.check_end_marker(&file, next_header)?;
        if table.overflowed && (table.has_docker_manifest() || table.has_oci_layout()) {
            return Err(Error::TooManyMembers {
                archive: archive.to_owned(),
                limit: MAX_MEMBERS,
            });
        }
        Ok(table)
    }

    /// Records one member (a later member of the same name replaces an earlier one, as when
    /// extracting).
    fn record(&mut self, name: &[u8], member: Member) {
        let Some(name) = normalize(name) else {
            return; // no image metadata can name it (see `normalize`)
        };
        if self.members.len() >= MAX_MEMBERS && !self.members.contains_key(&name) {
            // Markers are still recorded, so a huge image archive is recognised (and refused).
            if ![DOCKER_MANIFEST_JSON, INDEX_JSON, OCI_LAYOUT_FILE].contains(&name.as_str()) {
                self.overflowed = true;
                return;
            }
        }
        self.members.insert(name, member);
    }

    /// Checks for the zero block that ends a complete archive.
    fn check_end_marker(&self, file: &File, offset: u64) -> Result<(), Error> {
        let mut block = [0u8; BLOCK as usize];
        let mut filled = 0;
        while filled < block.len() {
            match file.read_at(&mut block[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(count) => filled += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Read {
                        location: Location::file(&self.archive),
                        source,
                    });
                }
            }
        }
        if filled < block.len() || block.iter().any(|byte| *byte != 0) {
            return Err(Error::TruncatedEnd {
                archive: self.archive.clone(),
                offset,
            });
        }
        Ok(())
    }

    /// Whether the archive has a top-level `manifest.json` (a docker archive).
    pub(super) fn has_docker_manifest(&self) -> bool {
        self.members.contains_key(DOCKER_MANIFEST_JSON)
    }

    /// Whether the archive has a top-level `index.json` and `oci-layout` (an OCI layout).
    pub(super) fn has_oci_layout(&self) -> bool {
        self.members.contains_key(INDEX_JSON) && self.members.contains_key(OCI_LAYOUT_FILE)
    }

    /// Whether a member of this name exists (links are not followed).
    pub(super) fn contains(&self, name: &str) -> bool {
        normalize(name.as_bytes()).is_some_and(|name| self.members.contains_key(&name))
    }

    /// A location naming the member `name` of this archive.
    pub(super) fn location(&self, name: &str) -> Location {
        Location::member(&self.archive, name)
    }

    /// The data of the member `name`, following symlinks and hard links. `referrer` is the
    /// metadata that names it, for the error if it is missing.
    ///
    /// # Errors
    ///
    /// [`Error::MissingMember`] if there is no such member, [`Error::NotAFile`] if it is not a
    /// file or its links dangle, loop, or leave the archive.
    pub(super) fn extent(&self, name: &str, referrer: &Location) -> Result<Extent, Error> {
        let missing = || Error::MissingMember {
            location: referrer.clone(),
            member: name.to_owned(),
        };
        let not_a_file = |problem: String| Error::NotAFile {
            location: self.location(name),
            problem,
        };
        let requested = normalize(name.as_bytes()).ok_or_else(missing)?;
        let mut current = requested.clone();
        for _ in 0..MAX_LINK_HOPS {
            let Some(member) = self.members.get(&current) else {
                if current == requested {
                    return Err(missing());
                }
                return Err(not_a_file(format!("links to {current}, which is missing")));
            };
            let target = match &member.kind {
                MemberKind::File => {
                    // Messages show where the bytes really are when a link led there.
                    let shown = if current == requested {
                        name.to_owned()
                    } else {
                        format!("{name} (-> {current})")
                    };
                    return Ok(Extent {
                        location: self.location(&shown),
                        offset: member.offset,
                        len: member.size,
                    });
                }
                MemberKind::Symlink(target) if target.starts_with('/') => target.clone(),
                MemberKind::Symlink(target) => match current.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{target}"),
                    None => target.clone(),
                },
                MemberKind::HardLink(target) => target.clone(),
                MemberKind::Other(kind) => {
                    return Err(not_a_file(format!("is a {kind}, not a file")));
                }
            };
            current = normalize(target.as_bytes())
                .ok_or_else(|| not_a_file(format!("links to {target}, outside the archive")))?;
        }
        Err(not_a_file("too many levels of links".to_owned()))
    }
}

/// Classifies an entry and takes its link target.
fn member_kind<R: io::Read>(entry: &tar::Entry<'_, R>) -> MemberKind {
    let link = || {
        entry
            .link_name_bytes()
            .map(|target| String::from_utf8_lossy(&target).into_owned())
            .unwrap_or_default()
    };
    match entry.header().entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => MemberKind::File,
        tar::EntryType::Symlink => MemberKind::Symlink(link()),
        tar::EntryType::Link => MemberKind::HardLink(link()),
        tar::EntryType::Directory => MemberKind::Other("directory"),
        tar::EntryType::Char => MemberKind::Other("character device"),
        tar::EntryType::Block => MemberKind::Other("block device"),
        tar::EntryType::Fifo => MemberKind::Other("fifo"),
        tar::EntryType::GNUSparse => MemberKind::Other("sparse file"),
        _ => MemberKind::Other("special member"),
    }
}

/// The member path `path` in the one form tar paths have in rfs ([`tar_index::normalize`]:
/// no `./` or `/` prefix, no `.` or empty components, `..` applied); `None` if it climbs
/// above the archive root or is not UTF-8, which no name in image metadata can match.
fn normalize(path: &[u8]) -> Option<String> {
    tar_index::normalize(path).ok()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// What to put in a test archive.
    enum Item<'a> {
        File(&'a str, &'a [u8]),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
        Dir(&'a str),
    }

    /// Writes a tar archive of `items` with the `tar` crate's builder.
    fn build(path: &Path, items: &[Item<'_>]) -> u64 {
        let mut builder = tar::Builder::new(File::create(path).expect("create"));
        for item in items {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            match item {
                Item::File(name, data) => {
                    header.set_size(data.len() as u64);
                    header.set_entry_type(tar::EntryType::Regular);
                    builder
                        .append_data(&mut header, name, *data)
                        .expect("append");
                }
                Item::Symlink(name, target) | Item::HardLink(name, target) => {
                    let kind = if matches!(item, Item::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    };
                    header.set_size(0);
                    header.set_entry_type(kind);
                    builder
                        .append_link(&mut header, name, target)
                        .expect("append");
                }
                Item::Dir(name) => {
                    header.set_size(0);
                    header.set_entry_type(tar::EntryType::Directory);
                    builder
                        .append_data(&mut header, name, &[][..])
                        .expect("append");
                }
            }
        }
        builder
            .into_inner()
            .expect("finish")
            .sync_all()
            .expect("sync");
        fs::metadata(path).expect("stat").len()
    }

    fn read(extent: &Extent) -> Vec<u8> {
        let mut data = vec![0u8; usize::try_from(extent.len).expect("small")];
        File::open(&extent.location.file)
            .expect("open")
            .read_exact_at(&mut data, extent.offset)
            .expect("read");
        data
    }

    #[test]
    fn links_resolve_to_the_data_of_their_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.tar");
        let len = build(
            &path,
            &[
                Item::File("abc.tar", b"layer data"),
                Item::Dir("id/"),
                Item::Symlink("id/layer.tar", "../abc.tar"),
                Item::HardLink("hard.tar", "abc.tar"),
                Item::Symlink("chain", "id/layer.tar"),
                Item::Symlink("dangling", "nowhere"),
                Item::Symlink("escape", "../../x"),
                Item::Symlink("loop", "loop"),
                Item::File("./manifest.json", b"[]"),
            ],
        );
        let members = TarMembers::scan(&path, len).expect("scan");
        assert!(members.has_docker_manifest());
        assert!(!members.has_oci_layout());
        let referrer = members.location("manifest.json");
        for name in [
            "abc.tar",
            "id/layer.tar",
            "hard.tar",
            "chain",
            "./id//layer.tar",
        ] {
            let extent = members.extent(name, &referrer).expect(name);
            assert_eq!(read(&extent), b"layer data", "{name}");
        }
        assert!(matches!(
            members.extent("absent.tar", &referrer),
            Err(Error::MissingMember { .. })
        ));
        for name in ["dangling", "escape", "loop", "id"] {
            assert!(
                matches!(members.extent(name, &referrer), Err(Error::NotAFile { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn random_bytes_are_not_an_archive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("random");
        let bytes: Vec<u8> = (0u32..4096)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            TarMembers::scan(&path, bytes.len() as u64),
            Err(Error::NotAnImage { .. })
        ));
    }

    #[test]
    fn truncation_is_detected_inside_data_and_at_a_header_boundary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("whole.tar");
        let big = vec![7u8; 4096];
        build(&path, &[Item::File("one", &big), Item::File("two", b"x")]);
        let whole = fs::read(&path).expect("read");

        let cut_data = dir.path().join("cut-data.tar");
        fs::write(&cut_data, &whole[..2048]).expect("write");
        assert!(matches!(
            TarMembers::scan(&cut_data, 2048),
            Err(Error::TruncatedMember { ref member, .. }) if member == "one"
        ));

        // Header + data of "one": a clean cut before "two", with no end marker.
        let boundary = 512 + 4096;
        let cut_boundary = dir.path().join("cut-boundary.tar");
        fs::write(&cut_boundary, &whole[..boundary]).expect("write");
        assert!(matches!(
            TarMembers::scan(&cut_boundary, boundary as u64),
            Err(Error::TruncatedEnd { offset, .. }) if offset == boundary as u64
        ));
    }
}
