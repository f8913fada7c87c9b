//! Reading an upper directory against the image below it: `rfs diff` (what changed, as
//! `docker diff` prints it), the layer tar of `rfs commit`, and the flat tar of the merged
//! tree that `rfs export` writes.
//!
//! The upper is in kernel overlayfs format (see `crate::upper`): whiteouts are char 0/0
//! devices or `.wh.<name>` files, opaque directories carry `*.overlay.opaque=y` or a
//! `.wh..wh..opq` file, and a directory renamed from the image carries `*.overlay.redirect`
//! with the absolute lower path it merges with. The merged view of a directory is its upper
//! entries over the children of the lower directory it merges with, its *source*: none if it
//! is opaque, the redirect target if it has one, else the same name in its parent's source
//! ([`crate::union`] resolves names the same way).
//!
//! # The layer of a commit
//!
//! Applied on top of the image's layers (OCI `layer.md`: a later entry replaces the path, a
//! `.wh.<name>` deletes it, `.wh..wh..opq` hides everything below the directory), the layer must
//! give exactly the merged view. The walk keeps, for each directory, two lower nodes: its
//! *source* (what the merged view shows below it) and its *base* (what the image, plus what the
//! layer emitted so far, has there). Where they are the same directory, only the upper's
//! entries and whiteouts are written. Where they differ (an opaque directory, a renamed
//! directory, anything inside one), the directory is written opaque (if the base has one
//! there) and then in full: its upper entries and a copy of every lower child of its source
//! that the upper does not hide. So a renamed directory becomes a full copy at its new path
//! plus a whiteout at its old one, which is what any OCI runtime can apply.
//!
//! # The merged tree of an export
//!
//! [`write_merged_tree`] is the same walk against an empty base: every directory is "in full",
//! so the tar holds the whole merged view (what `docker export` writes) and no whiteout or
//! opaque marker at all. One walk, so a commit and an export cannot disagree on what the
//! container sees.
//!
//! The tar is deterministic: entries in path order (names sorted bytewise, a directory before
//! its contents), ownership and mode from `user.containers.override_stat` when present, the
//! modification time (PAX `mtime` when it has nanoseconds), public xattrs as PAX
//! `SCHILY.xattr.*` records in name order, no user or group names, no access or change times.
//! Files that are hard links of one another are stored once and linked. rfs's private xattrs
//! (`*.overlay.*`, `*.rfs.origin`, `user.containers.override_stat`) never reach the layer.
//! Sockets cannot be stored in a tar and are skipped, as Docker does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Error;
use crate::lower::{FileKind, LowerTree};
use crate::ovl::{self, Markers, NameRole, OPAQUE_MARKER, WHITEOUT_PREFIX, is_private_xattr};
use crate::sys;

/// What happened to a path, as `docker diff` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// `A`: the path is new.
    Added,
    /// `C`: the path existed and was modified (or replaced).
    Changed,
    /// `D`: the path was deleted.
    Deleted,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Added => "A",
            ChangeKind::Changed => "C",
            ChangeKind::Deleted => "D",
        })
    }
}

/// One line of `rfs diff`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The absolute path in the container (`/etc/motd`), raw bytes.
    pub path: Vec<u8>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, String::from_utf8_lossy(&self.path))
    }
}

/// How to read the owner of an upper entry that has no `user.containers.override_stat`.
///
/// A rootless `rfs run` serves the union as root of a user namespace in which the user is
/// root, and the union records ownership only for owners other than itself: what the
/// container's root owns is simply the user's on the host. Read from the host, that upper
/// needs the user's ids taken as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpperOwners {
    /// The host uid and gid that are root in the container that wrote the upper; `None`
    /// when the upper's ids are the container's own (a container of root, `rfs mount`).
    pub root: Option<(u32, u32)>,
}

impl UpperOwners {
    /// The container's uid and gid of an entry the host sees owned by `uid`:`gid`.
    fn container_ids(self, uid: u32, gid: u32) -> (u32, u32) {
        match self.root {
            Some((root_uid, root_gid)) => (
                if uid == root_uid { 0 } else { uid },
                if gid == root_gid { 0 } else { gid },
            ),
            None => (uid, gid),
        }
    }
}

/// Ownership, permissions and time of one entry, as it appears in the merged view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntryMeta {
    perm: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
}

/// One entry of an upper directory (not a whiteout) met by the walk, with what a layer tar
/// needs of it (the live mount's record of an upper entry is `crate::upper::UpperEntry`).
struct WalkedEntry {
    host: PathBuf,
    md: fs::Metadata,
    kind: FileKind,
    meta: EntryMeta,
    opaque: bool,
    redirect: Option<Vec<u8>>,
    /// For a metadata-only copy-up (`*.rfs.metacopy`): the origin inode number, whose lower
    /// node (number - 1) still holds the data.
    metacopy_origin: Option<u64>,
    /// Public xattrs, sorted by name.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An upper directory's listing.
#[derive(Default)]
struct Listing {
    entries: BTreeMap<Vec<u8>, fs::Metadata>,
    /// Whiteouts by the name they hide, with the whiteout file's own metadata.
    whiteouts: BTreeMap<Vec<u8>, fs::Metadata>,
}

fn upper_error(path: &Path, e: io::Error) -> Error {
    Error::io("reading upper", path, e)
}

/// Lists `dir`, sorting whiteouts (`.wh.` files, char 0/0) from entries.
fn list_upper(dir: &Path) -> Result<Listing, Error> {
    let mut listing = Listing::default();
    for item in fs::read_dir(dir).map_err(|e| upper_error(dir, e))? {
        let item = item.map_err(|e| upper_error(dir, e))?;
        let name = item.file_name().as_bytes().to_vec();
        let md = fs::symlink_metadata(item.path()).map_err(|e| upper_error(&item.path(), e))?;
        match ovl::name_role(&name) {
            NameRole::OpaqueMarker | NameRole::Meta => continue,
            NameRole::Whiteout(hidden) => {
                listing.whiteouts.insert(hidden.to_vec(), md);
                continue;
            }
            NameRole::Entry => {}
        }
        if md.file_type().is_char_device() && md.rdev() == 0 {
            listing.whiteouts.insert(name, md);
            continue;
        }
        listing.entries.insert(name, md);
    }
    // A real entry wins over a stale whiteout of the same name.
    let Listing { entries, whiteouts } = &mut listing;
    whiteouts.retain(|name, _| !entries.contains_key(name));
    Ok(listing)
}

/// Reads an upper entry's overlay markers, ownership override and public xattrs.
fn upper_entry(host: PathBuf, md: fs::Metadata, owners: UpperOwners) -> Result<WalkedEntry, Error> {
    let kind = FileKind::from_mode(md.mode()).ok_or_else(|| Error::Upper {
        path: host.clone(),
        problem: format!("unknown file type (mode {:o})", md.mode()),
    })?;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(&host)
        .map_err(|e| upper_error(&host, e))?;
    // One listing: the private names decode into the overlay's markers (the same decoder the
    // mount uses, so a commit records what the mount showed), the others are the entry's own.
    let mut xattrs = Vec::new();
    let mut private = Vec::new();
    let names = sys::list_xattr(file.as_fd()).map_err(|e| upper_error(&host, e))?;
    for name in names {
        let c = sys::cstr(&name).map_err(|e| upper_error(&host, e))?;
        let Some(value) = sys::get_xattr(file.as_fd(), &c).map_err(|e| upper_error(&host, e))?
        else {
            continue;
        };
        if is_private_xattr(&name) {
            private.push((name, value));
        } else {
            xattrs.push((name, value));
        }
    }
    let markers = Markers::decode(private.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
    let mut opaque = markers.opaque;
    xattrs.sort();
    if kind == FileKind::Dir && !opaque {
        opaque =
            fs::symlink_metadata(host.join(std::ffi::OsStr::from_bytes(OPAQUE_MARKER))).is_ok();
    }
    let (uid, gid, perm) = match markers.owner {
        Some(o) => (o.uid, o.gid, o.perm),
        None => {
            let (uid, gid) = owners.container_ids(md.uid(), md.gid());
            (uid, gid, md.mode() & 0o7777)
        }
    };
    let meta = EntryMeta {
        perm,
        uid,
        gid,
        mtime: (md.mtime(), md.mtime_nsec() as u32),
    };
    Ok(WalkedEntry {
        host,
        md,
        kind,
        meta,
        opaque,
        redirect: markers.redirect,
        metacopy_origin: markers.origin.filter(|_| markers.metacopy),
        xattrs,
    })
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        let mut p = dir.to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

fn host_child(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(std::ffi::OsStr::from_bytes(name))
}

/// The lower directory an upper directory merges with (see the module docs), by the rule
/// the mount uses ([`LowerTree::merge_source`]).
fn merge_source(
    lower: &LowerTree,
    entry: &WalkedEntry,
    parent_source: Option<u32>,
    name: &[u8],
) -> Option<u32> {
    lower.merge_source(entry.opaque, entry.redirect.as_deref(), parent_source, name)
}

fn dir_child(lower: &LowerTree, dir: Option<u32>, name: &[u8]) -> Option<u32> {
    dir.and_then(|d| lower.child(d, name))
}

fn is_dir(lower: &LowerTree, node: Option<u32>) -> Option<u32> {
    node.filter(|&n| lower.node(n).kind == FileKind::Dir)
}

fn lower_meta(lower: &LowerTree, node: u32) -> EntryMeta {
    let n = lower.node(node);
    EntryMeta {
        perm: n.meta().perm & 0o7777,
        uid: n.meta().uid,
        gid: n.meta().gid,
        mtime: (n.meta().mtime, n.meta().mtime_nsec),
    }
}

/// Whether the upper root is opaque (then nothing of the image shows through).
fn root_is_opaque(upper: &Path) -> Result<bool, Error> {
    let md = fs::symlink_metadata(upper).map_err(|e| upper_error(upper, e))?;
    Ok(upper_entry(upper.to_owned(), md, UpperOwners::default())?.opaque)
}

// ------------------------------------------------------------------ diff

/// The changes of `upper` over the image `lower`, in path order, as `docker diff` lists them:
/// `A` for a path the image does not have, `D` for an image path the container does not have,
/// `C` for a path in both that the upper replaced, and for a directory whose own metadata
/// changed or in which something was added or deleted. `owners` says how to read ownership
/// the upper does not record.
///
/// # Errors
///
/// The upper directory cannot be read.
pub fn diff(lower: &LowerTree, upper: &Path, owners: UpperOwners) -> Result<Vec<Change>, Error> {
    let source = if root_is_opaque(upper)? {
        None
    } else {
        Some(LowerTree::ROOT)
    };
    let mut out = Vec::new();
    diff_dir(
        lower,
        owners,
        b"",
        Some(upper),
        source,
        Some(LowerTree::ROOT),
        &mut out,
    )?;
    Ok(out)
}

/// What the merged view has under a name.
enum Merged {
    Upper(Box<WalkedEntry>),
    Lower(u32),
}

/// Diffs one directory; returns whether something was added or deleted right in it.
#[allow(clippy::too_many_arguments)]
fn diff_dir(
    lower: &LowerTree,
    owners: UpperOwners,
    rel: &[u8],
    host: Option<&Path>,
    source: Option<u32>,
    image: Option<u32>,
    out: &mut Vec<Change>,
) -> Result<bool, Error> {
    let listing = match host {
        Some(h) => list_upper(h)?,
        None => Listing::default(),
    };
    let full = source != image;
    let mut names: BTreeSet<Vec<u8>> = listing.entries.keys().cloned().collect();
    names.extend(listing.whiteouts.keys().cloned());
    if full {
        for dir in [source, image].into_iter().flatten() {
            names.extend(lower.children(dir).map(|c| lower.name(c).to_vec()));
        }
    }
    let mut direct = false;
    for name in names {
        let path = join(rel, &name);
        let shown = |kind| Change {
            kind,
            path: [b"/".as_slice(), &path].concat(),
        };
        let in_image = dir_child(lower, image, &name);
        let merged = if let Some(md) = listing.entries.get(&name) {
            let h = host.map(|h| host_child(h, &name)).unwrap_or_default();
            Some(Merged::Upper(Box::new(upper_entry(h, md.clone(), owners)?)))
        } else if listing.whiteouts.contains_key(&name) {
            None
        } else if full {
            dir_child(lower, source, &name).map(Merged::Lower)
        } else {
            continue;
        };
        let (merged, in_image) = match (merged, in_image) {
            (None, None) => continue,
            (None, Some(_)) => {
                out.push(shown(ChangeKind::Deleted));
                direct = true;
                continue;
            }
            (Some(m), None) => {
                out.push(shown(ChangeKind::Added));
                direct = true;
                if let Some((child_host, child_source)) = subdir(lower, &m, source, &name) {
                    diff_dir(
                        lower,
                        owners,
                        &path,
                        child_host.as_deref(),
                        child_source,
                        None,
                        out,
                    )?;
                }
                continue;
            }
            (Some(Merged::Lower(l)), Some(i)) if l == i => continue,
            (Some(m), Some(i)) => (m, i),
        };
        let image_dir = lower.node(in_image).kind == FileKind::Dir;
        match subdir(lower, &merged, source, &name) {
            Some((child_host, child_source)) if image_dir => {
                let mut inner = Vec::new();
                let changed_inside = diff_dir(
                    lower,
                    owners,
                    &path,
                    child_host.as_deref(),
                    child_source,
                    Some(in_image),
                    &mut inner,
                )?;
                let own = match &merged {
                    Merged::Upper(e) => e.meta,
                    Merged::Lower(l) => lower_meta(lower, *l),
                };
                if changed_inside || own != lower_meta(lower, in_image) {
                    out.push(shown(ChangeKind::Changed));
                }
                out.extend(inner);
            }
            Some((child_host, child_source)) => {
                out.push(shown(ChangeKind::Changed));
                diff_dir(
                    lower,
                    owners,
                    &path,
                    child_host.as_deref(),
                    child_source,
                    None,
                    out,
                )?;
            }
            None => out.push(shown(ChangeKind::Changed)),
        }
    }
    Ok(direct)
}

/// For a merged directory: its upper directory (if any) and its lower source.
fn subdir(
    lower: &LowerTree,
    merged: &Merged,
    parent_source: Option<u32>,
    name: &[u8],
) -> Option<(Option<PathBuf>, Option<u32>)> {
    match merged {
        Merged::Upper(e) if e.kind == FileKind::Dir => Some((
            Some(e.host.clone()),
            merge_source(lower, e, parent_source, name),
        )),
        Merged::Lower(l) if lower.node(*l).kind == FileKind::Dir => Some((None, Some(*l))),
        _ => None,
    }
}

// ------------------------------------------------------------------ commit

/// Writes the layer tar that turns the image `lower` into the merged view of `upper` (see
/// the module docs) to `out`, and finishes the archive. `owners` says how to read ownership
/// the upper does not record.
///
/// # Errors
///
/// The upper cannot be read (or a file changes size while it is read), a lower file cannot
/// be read, or `out` fails.
pub fn write_layer<W: Write>(
    lower: &LowerTree,
    upper: &Path,
    owners: UpperOwners,
    out: W,
) -> Result<W, Error> {
    write_tar(lower, upper, owners, Some(LowerTree::ROOT), out)
}

/// Writes the merged view of `upper` over `lower` as one flat tar to `out` (see the module
/// docs): every entry the view shows, with no whiteouts or opaque markers, and finishes the
/// archive. What `rfs export` writes for a container.
///
/// # Errors
///
/// As [`write_layer`].
pub fn write_merged_tree<W: Write>(
    lower: &LowerTree,
    upper: &Path,
    owners: UpperOwners,
    out: W,
) -> Result<W, Error> {
    write_tar(lower, upper, owners, None, out)
}

/// The walk behind [`write_layer`] (`base` is the image's root) and [`write_merged_tree`]
/// (no base: everything is written in full).
fn write_tar<W: Write>(
    lower: &LowerTree,
    upper: &Path,
    owners: UpperOwners,
    base: Option<u32>,
    out: W,
) -> Result<W, Error> {
    let mut writer = LayerWriter {
        lower,
        owners,
        builder: tar::Builder::new(out),
        upper_links: HashMap::new(),
        lower_links: HashMap::new(),
    };
    let root_md = fs::symlink_metadata(upper).map_err(|e| upper_error(upper, e))?;
    let root = upper_entry(upper.to_owned(), root_md, owners)?;
    let source = if root.opaque {
        None
    } else {
        Some(LowerTree::ROOT)
    };
    writer.commit_dir(b"", Some(upper), &root.meta, source, base)?;
    writer
        .builder
        .into_inner()
        .map_err(|e| Error::io("writing layer", upper, e))
}

struct LayerWriter<'a, W: Write> {
    lower: &'a LowerTree,
    owners: UpperOwners,
    builder: tar::Builder<W>,
    /// Upper files with several links: (dev, ino) → the path written first.
    upper_links: HashMap<(u64, u64), Vec<u8>>,
    /// Lower hard-link groups: group node → the path written first.
    lower_links: HashMap<u32, Vec<u8>>,
}

impl<W: Write> LayerWriter<'_, W> {
    fn commit_dir(
        &mut self,
        rel: &[u8],
        host: Option<&Path>,
        dir_meta: &EntryMeta,
        source: Option<u32>,
        base: Option<u32>,
    ) -> Result<(), Error> {
        let listing = match host {
            Some(h) => list_upper(h)?,
            None => Listing::default(),
        };
        let mut base = base;
        if base.is_some() && source != base {
            self.marker(&join(rel, OPAQUE_MARKER), dir_meta)?;
            base = None;
        }
        let full = source.is_some() && base.is_none();
        let mut names: BTreeSet<Vec<u8>> = listing.entries.keys().cloned().collect();
        names.extend(listing.whiteouts.keys().cloned());
        if let (true, Some(s)) = (full, source) {
            names.extend(self.lower.children(s).map(|c| self.lower.name(c).to_vec()));
        }
        for name in names {
            let path = join(rel, &name);
            if let Some(md) = listing.entries.get(&name) {
                let h = host.map(|h| host_child(h, &name)).unwrap_or_default();
                let entry = upper_entry(h, md.clone(), self.owners)?;
                if entry.kind == FileKind::Dir {
                    self.header(&path, FileKind::Dir, &entry.meta, &entry.xattrs, 0, None)?;
                    let child_source = merge_source(self.lower, &entry, source, &name);
                    let child_base = is_dir(self.lower, dir_child(self.lower, base, &name));
                    self.commit_dir(
                        &path,
                        Some(&entry.host),
                        &entry.meta,
                        child_source,
                        child_base,
                    )?;
                } else {
                    self.upper_file(&path, &entry)?;
                }
            } else if let Some(md) = listing.whiteouts.get(&name) {
                if !full && dir_child(self.lower, base, &name).is_some() {
                    let (uid, gid) = self.owners.container_ids(md.uid(), md.gid());
                    let meta = EntryMeta {
                        perm: md.mode() & 0o7777,
                        uid,
                        gid,
                        mtime: (md.mtime(), md.mtime_nsec() as u32),
                    };
                    let wh = [WHITEOUT_PREFIX, &name].concat();
                    self.marker(&join(rel, &wh), &meta)?;
                }
            } else if let Some(l) = dir_child(self.lower, source, &name) {
                self.lower_subtree(&path, l)?;
            }
        }
        Ok(())
    }

    /// An empty regular file: a whiteout or an opaque marker.
    fn marker(&mut self, path: &[u8], meta: &EntryMeta) -> Result<(), Error> {
        self.header(path, FileKind::File, meta, &[], 0, Some(&mut io::empty()))
    }

    fn upper_file(&mut self, path: &[u8], e: &WalkedEntry) -> Result<(), Error> {
        if e.md.nlink() > 1 {
            let key = (e.md.dev(), e.md.ino());
            if let Some(first) = self.upper_links.get(&key).cloned() {
                return self.hard_link(path, &e.meta, &first);
            }
            self.upper_links.insert(key, path.to_vec());
        }
        match e.kind {
            FileKind::File if e.metacopy_origin.is_some() => {
                // A metadata-only copy: the data is still the lower file's.
                let node = e
                    .metacopy_origin
                    .and_then(|o| self.lower.node_of_origin(o))
                    .filter(|&n| self.lower.node(n).kind == FileKind::File)
                    .ok_or_else(|| Error::Upper {
                        path: e.host.clone(),
                        problem: "metadata-only copy whose lower data is not in this image".into(),
                    })?;
                let size = e.md.len();
                let mut data = LowerReader {
                    file: self.lower.open(node)?,
                    offset: 0,
                    size,
                };
                self.header(
                    path,
                    FileKind::File,
                    &e.meta,
                    &e.xattrs,
                    size,
                    Some(&mut data),
                )
            }
            FileKind::File => {
                let file = File::open(&e.host).map_err(|err| upper_error(&e.host, err))?;
                let mut data = Exact::new(file, e.md.len(), &e.host);
                self.header(
                    path,
                    FileKind::File,
                    &e.meta,
                    &e.xattrs,
                    e.md.len(),
                    Some(&mut data),
                )
            }
            FileKind::Symlink => {
                let target = fs::read_link(&e.host).map_err(|err| upper_error(&e.host, err))?;
                self.link(path, &e.meta, &e.xattrs, target.as_os_str().as_bytes())
            }
            FileKind::CharDev | FileKind::BlockDev => {
                self.device(path, e.kind, &e.meta, &e.xattrs, e.md.rdev())
            }
            FileKind::Fifo => self.header(path, FileKind::Fifo, &e.meta, &e.xattrs, 0, None),
            FileKind::Socket => {
                log::info!(
                    "{}: sockets cannot be stored in a layer; skipped",
                    e.host.display()
                );
                Ok(())
            }
            FileKind::Dir => Ok(()),
        }
    }

    fn lower_subtree(&mut self, path: &[u8], node: u32) -> Result<(), Error> {
        let lower = self.lower;
        let n = lower.node(node);
        let meta = lower_meta(lower, node);
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = lower
            .xattrs(node)?
            .into_iter()
            .filter(|(k, _)| !is_private_xattr(k))
            .collect();
        xattrs.sort();
        if n.kind != FileKind::Dir && n.nlink > 1 {
            if let Some(first) = self.lower_links.get(&n.ino_node).cloned() {
                return self.hard_link(path, &meta, &first);
            }
            self.lower_links.insert(n.ino_node, path.to_vec());
        }
        match n.kind {
            FileKind::Dir => {
                self.header(path, FileKind::Dir, &meta, &xattrs, 0, None)?;
                for child in lower.children(node) {
                    let child_path = join(path, lower.name(child));
                    self.lower_subtree(&child_path, child)?;
                }
                Ok(())
            }
            FileKind::File => {
                let file = lower.open(node)?;
                let size = n.meta().size;
                let mut data = LowerReader {
                    file,
                    offset: 0,
                    size,
                };
                self.header(path, FileKind::File, &meta, &xattrs, size, Some(&mut data))
            }
            FileKind::Symlink => {
                let target = lower.link(node).unwrap_or_default().to_vec();
                self.link(path, &meta, &xattrs, &target)
            }
            FileKind::CharDev | FileKind::BlockDev => {
                self.device(path, n.kind, &meta, &xattrs, n.meta().rdev)
            }
            FileKind::Fifo => self.header(path, FileKind::Fifo, &meta, &xattrs, 0, None),
            FileKind::Socket => Ok(()),
        }
    }

    fn base_header(kind: FileKind, meta: &EntryMeta, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(match kind {
            FileKind::File => tar::EntryType::Regular,
            FileKind::Dir => tar::EntryType::Directory,
            FileKind::Symlink => tar::EntryType::Symlink,
            FileKind::CharDev => tar::EntryType::Char,
            FileKind::BlockDev => tar::EntryType::Block,
            FileKind::Fifo | FileKind::Socket => tar::EntryType::Fifo,
        });
        h.set_mode(meta.perm);
        h.set_uid(u64::from(meta.uid));
        h.set_gid(u64::from(meta.gid));
        h.set_mtime(u64::try_from(meta.mtime.0).unwrap_or(0));
        h.set_size(size);
        h
    }

    /// PAX records for xattrs and a sub-second (or pre-1970) mtime.
    fn pax(
        &mut self,
        path: &[u8],
        meta: &EntryMeta,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), Error> {
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        if meta.mtime.1 != 0 || meta.mtime.0 < 0 {
            let text = if meta.mtime.1 != 0 {
                format!("{}.{:09}", meta.mtime.0, meta.mtime.1)
            } else {
                meta.mtime.0.to_string()
            };
            records.push(("mtime".to_owned(), text.into_bytes()));
        }
        for (name, value) in xattrs {
            let Ok(name) = std::str::from_utf8(name) else {
                log::warn!(
                    "/{}: xattr name {:?} is not UTF-8; not stored",
                    String::from_utf8_lossy(path),
                    String::from_utf8_lossy(name)
                );
                continue;
            };
            records.push((format!("SCHILY.xattr.{name}"), value.clone()));
        }
        if records.is_empty() {
            return Ok(());
        }
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(|e| self.write_error(path, e))
    }

    fn write_error(&self, path: &[u8], e: io::Error) -> Error {
        Error::io(
            "writing layer entry",
            PathBuf::from(std::ffi::OsStr::from_bytes(path)),
            e,
        )
    }

    fn header(
        &mut self,
        path: &[u8],
        kind: FileKind,
        meta: &EntryMeta,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        size: u64,
        data: Option<&mut dyn Read>,
    ) -> Result<(), Error> {
        self.pax(path, meta, xattrs)?;
        let mut h = Self::base_header(kind, meta, size);
        let name = Path::new(std::ffi::OsStr::from_bytes(path));
        let result = match data {
            Some(d) => self.builder.append_data(&mut h, name, d),
            None => self.builder.append_data(&mut h, name, io::empty()),
        };
        result.map_err(|e| self.write_error(path, e))
    }

    fn link(
        &mut self,
        path: &[u8],
        meta: &EntryMeta,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        target: &[u8],
    ) -> Result<(), Error> {
        self.pax(path, meta, xattrs)?;
        let mut h = Self::base_header(FileKind::Symlink, meta, 0);
        let name = Path::new(std::ffi::OsStr::from_bytes(path));
        let target = Path::new(std::ffi::OsStr::from_bytes(target));
        self.builder
            .append_link(&mut h, name, target)
            .map_err(|e| self.write_error(path, e))
    }

    fn hard_link(&mut self, path: &[u8], meta: &EntryMeta, first: &[u8]) -> Result<(), Error> {
        let mut h = Self::base_header(FileKind::File, meta, 0);
        h.set_entry_type(tar::EntryType::Link);
        let name = Path::new(std::ffi::OsStr::from_bytes(path));
        let target = Path::new(std::ffi::OsStr::from_bytes(first));
        self.builder
            .append_link(&mut h, name, target)
            .map_err(|e| self.write_error(path, e))
    }

    fn device(
        &mut self,
        path: &[u8],
        kind: FileKind,
        meta: &EntryMeta,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        rdev: u64,
    ) -> Result<(), Error> {
        self.pax(path, meta, xattrs)?;
        let mut h = Self::base_header(kind, meta, 0);
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        let too_big = |_| self.write_error(path, io::Error::from(io::ErrorKind::InvalidInput));
        h.set_device_major(u32::try_from(major).map_err(too_big)?)
            .map_err(|e| self.write_error(path, e))?;
        h.set_device_minor(u32::try_from(minor).map_err(too_big)?)
            .map_err(|e| self.write_error(path, e))?;
        let name = Path::new(std::ffi::OsStr::from_bytes(path));
        self.builder
            .append_data(&mut h, name, io::empty())
            .map_err(|e| self.write_error(path, e))
    }
}

/// Reads exactly `len` bytes of a file: a file that shrinks while it is stored is an error,
/// and bytes it grew by are not read (the header already gave its size).
struct Exact<'a> {
    file: io::Take<File>,
    left: u64,
    path: &'a Path,
}

impl<'a> Exact<'a> {
    fn new(file: File, len: u64, path: &'a Path) -> Exact<'a> {
        Exact {
            file: file.take(len),
            left: len,
            path,
        }
    }
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was read", self.path.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A lower file's data as a reader.
struct LowerReader {
    file: crate::lower::LowerFile,
    offset: u64,
    size: u64,
}

impl Read for LowerReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.offset >= self.size {
            return Ok(0);
        }
        let want = usize::try_from(self.size - self.offset).map_or(buf.len(), |l| l.min(buf.len()));
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.offset += n as u64;
        Ok(n)
    }
}
