//! `COPY` and `ADD` of local files: which context paths a source names (globs, `..` and
//! symlinks that leave the context refused, `.dockerignore` applied), what lands where
//! (Docker's destination rules), and writing it straight into a fresh upper directory, with no
//! container: modes, symlinks and hard links kept, `--chown` (else root) and `--chmod`
//! applied, parent directories the image has copied up with their metadata and missing ones
//! made `0755`, as Docker's builder does. No xattr of a source is copied, from the context or
//! by `COPY --from`, as the Docker engine's layers show: its builder chowns every copied file
//! (which drops `security.capability`) and its copy carries no other xattr. (buildah 1.28
//! keeps `user.*` and `security.capability`; the Docker engine is the oracle here.) `COPY
//! --from` reads a [`LowerTree`] instead of the context. [`Plan::digest`] is the content digest of what is copied (names, kinds, modes,
//! link targets, contents; not owners of the source, not times), for `created_by` and the
//! build cache.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::ignore::{Ignore, glob_component};
use crate::image::compress::{Compression, Decoder, MAGIC_LEN};
use crate::lower::{FileKind, LowerTree};
use crate::ovl::OverrideStat;

/// Why a `COPY`/`ADD` cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source is outside the build context.
    #[error("{source_path}: outside the build context")]
    Outside {
        /// The source as written.
        source_path: String,
    },
    /// A source names nothing (or only what `.dockerignore` leaves out).
    #[error("{source_path}: no such file or directory in the build context")]
    NotFound {
        /// The source as written.
        source_path: String,
    },
    /// Several sources and a destination that is no directory.
    #[error(
        "when copying several sources, the destination {dest} must be a directory and end with a /"
    )]
    DestNotDir {
        /// The destination.
        dest: String,
    },
    /// A destination directory is a file or symlink in the image.
    #[error("{path}: not a directory in the image")]
    ParentNotDir {
        /// The path in the image.
        path: String,
    },
    /// A bad `--chmod` or `--chown`.
    #[error("{0}")]
    Flag(String),
    /// A host error.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Reading a file of the `--from` image failed.
    #[error("reading {path} of the source image: {message}")]
    Lower {
        /// The path in the image.
        path: String,
        /// The error.
        message: String,
    },
}

pub(super) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> CopyError + 'a {
    move |source| CopyError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Where the data of a file to copy comes from.
#[derive(Debug, Clone)]
enum Data {
    Host(PathBuf),
    Lower(u32),
}

/// What one entry to copy is.
#[derive(Debug, Clone)]
enum ItemKind {
    Dir,
    File(Data),
    Symlink(Vec<u8>),
    /// A hard link to the entry copied earlier to this image path.
    HardLink(PathBuf),
    /// `ADD` of a local archive: its members are extracted into the destination directory.
    Archive(PathBuf),
}

/// One entry to copy: its absolute path in the image and how to make it.
#[derive(Debug, Clone)]
struct Item {
    dest: PathBuf,
    kind: ItemKind,
    perm: u32,
    mtime: i64,
}

/// What a `COPY`/`ADD` copies, resolved and ready to write.
#[derive(Debug, Default)]
pub struct Plan {
    /// Directories the destination needs, outermost first (the destination directory too).
    dirs: Vec<PathBuf>,
    items: Vec<Item>,
    /// `file` (one file source), `dir` (one directory) or `multi` (several sources, after
    /// glob expansion), as buildah's and Docker's `created_by` say.
    pub kind_word: &'static str,
}

/// The build context: a host directory and its `.dockerignore`.
pub struct Context {
    root: PathBuf,
    ignore: Ignore,
}

/// The word `created_by` names the copied content with: `multi` for several sources (counted
/// after glob expansion, as buildah's content digester and Docker's builder count them),
/// else `dir` or `file`.
fn kind_word(sources: usize, is_dir: bool) -> &'static str {
    match (sources, is_dir) {
        (2.., _) => "multi",
        (_, true) => "dir",
        _ => "file",
    }
}

/// Lexically normalises `path` (relative to the root of whatever it names): `None` when
/// `..` climbs above the root.
fn normalise(path: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c.to_string()),
        }
    }
    Some(out)
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Context {
    /// The context `root` with the ignore rules `ignore`.
    pub fn new(root: &Path, ignore: Ignore) -> Context {
        Context {
            root: root.to_owned(),
            ignore,
        }
    }

    /// Follows symlinks in the context-relative path `parts` within the context; an
    /// absolute target, or one that climbs out, is refused.
    fn resolve(&self, parts: &[String], source: &str) -> Result<PathBuf, CopyError> {
        let outside = || CopyError::Outside {
            source_path: source.to_string(),
        };
        let mut todo: Vec<String> = parts.iter().rev().cloned().collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop().ok_or_else(outside)?;
                    continue;
                }
                _ => {}
            }
            let host = self.root.join(done.join("/")).join(&c);
            match fs::symlink_metadata(&host) {
                Ok(md) if md.file_type().is_symlink() => {
                    hops += 1;
                    if hops > 40 {
                        return Err(CopyError::Io {
                            what: "resolving",
                            path: host,
                            source: io::Error::from_raw_os_error(libc::ELOOP),
                        });
                    }
                    let target = fs::read_link(&host).map_err(io_err("reading", &host))?;
                    if target.is_absolute() {
                        return Err(outside());
                    }
                    let target = target.to_string_lossy().into_owned();
                    for t in target.split('/').rev() {
                        todo.push(t.to_string());
                    }
                }
                Ok(_) => done.push(c),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(CopyError::NotFound {
                        source_path: source.to_string(),
                    });
                }
                Err(e) => return Err(io_err("reading", &host)(e)),
            }
        }
        Ok(self.root.join(done.join("/")))
    }

    /// The context paths `source` names (glob expanded, sorted), each as (context-relative
    /// path, host path with symlinks resolved within the context).
    fn sources(&self, source: &str) -> Result<Vec<(String, PathBuf)>, CopyError> {
        let parts = normalise(source).ok_or_else(|| CopyError::Outside {
            source_path: source.to_string(),
        })?;
        let mut found: Vec<Vec<String>> = vec![Vec::new()];
        for part in &parts {
            let mut next = Vec::new();
            for prefix in found {
                if has_glob(part) {
                    let dir = self.resolve(&prefix, source)?;
                    let Ok(rd) = fs::read_dir(&dir) else { continue };
                    let mut names: Vec<String> = rd
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| glob_component(part, n))
                        .collect();
                    names.sort();
                    for n in names {
                        let mut p = prefix.clone();
                        p.push(n);
                        next.push(p);
                    }
                } else {
                    let mut p = prefix;
                    p.push(part.clone());
                    next.push(p);
                }
            }
            found = next;
        }
        let mut out = Vec::new();
        for p in found {
            let rel = p.join("/");
            if !rel.is_empty() && self.ignore.is_ignored(&rel) {
                continue;
            }
            out.push((rel, self.resolve(&p, source)?));
        }
        if out.is_empty() {
            return Err(CopyError::NotFound {
                source_path: source.to_string(),
            });
        }
        Ok(out)
    }
}

/// Where a source's entries go: `dest` itself, or `dest/<name>`.
fn file_dest(dest: &Path, dest_is_dir: bool, name: &str) -> PathBuf {
    if dest_is_dir {
        dest.join(name)
    } else {
        dest.to_owned()
    }
}

/// The absolute image path of a destination as written, relative to `workdir`.
pub fn dest_path(dest: &str, workdir: &str) -> PathBuf {
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    let mut out = PathBuf::from("/");
    for c in Path::new(&joined).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// `path` (absolute, in the image) with the symlinks of `below` it goes through resolved
/// within the image, as Docker resolves a destination: an absolute target from the image's
/// root, a relative one from the link's directory, never above the root. A component that is
/// missing ends the resolution (the rest is created as named).
pub fn resolve_in_image(below: &LowerTree, path: &Path) -> PathBuf {
    let mut todo: Vec<String> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    let mut exists = true;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        if c == "." || c.is_empty() {
            continue;
        }
        done.push(c);
        if !exists {
            continue;
        }
        let here = format!("/{}", done.join("/"));
        match below.lookup_path(here.as_bytes()) {
            Some(i) if below.node(i).kind == FileKind::Symlink && hops < 40 => {
                hops += 1;
                let target =
                    String::from_utf8_lossy(below.link(i).unwrap_or_default()).into_owned();
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                for t in target.split('/').rev() {
                    todo.push(t.to_string());
                }
            }
            Some(_) => {}
            None => exists = false,
        }
    }
    let mut out = PathBuf::from("/");
    out.extend(done);
    out
}

impl Plan {
    /// Plans copying the context `sources` to `dest` (as written, relative to `workdir`).
    /// `below` is the image the copy lands on: a destination that is a directory there is one.
    ///
    /// # Errors
    /// A source is missing or outside the context, or several sources go to a file.
    pub fn from_context(
        ctx: &Context,
        sources: &[String],
        dest: &str,
        workdir: &str,
        below: &LowerTree,
        add: bool,
    ) -> Result<Plan, CopyError> {
        let mut resolved = Vec::new();
        for s in sources {
            resolved.extend(ctx.sources(s)?);
        }
        let (dest_abs, dest_is_dir) = destination(dest, workdir, below, resolved.len())?;
        let mut plan = Plan {
            kind_word: kind_word(resolved.len(), false),
            ..Plan::default()
        };
        let sources = resolved.len();
        let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
        for (rel, host) in resolved {
            let md = fs::metadata(&host).map_err(io_err("reading", &host))?;
            if md.is_dir() {
                plan.kind_word = kind_word(sources, true);
                plan.dirs.push(dest_abs.clone());
                walk_host(ctx, &rel, &host, &dest_abs, &mut plan, &mut links)?;
            } else if add && is_archive(&host) {
                plan.dirs.push(dest_abs.clone());
                plan.items.push(Item {
                    dest: dest_abs.clone(),
                    kind: ItemKind::Archive(host),
                    perm: 0o755,
                    mtime: 0,
                });
            } else {
                let name = Path::new(&rel)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let to = file_dest(&dest_abs, dest_is_dir, &name);
                if let Some(parent) = to.parent() {
                    plan.dirs.push(parent.to_owned());
                }
                plan.items.push(host_item(&host, &md, to, &mut links)?);
            }
        }
        Ok(plan)
    }

    /// Plans copying `sources` (paths in `from`, a stage's or image's merged tree) to `dest`.
    ///
    /// # Errors
    /// A source is missing, or several sources go to a file.
    pub fn from_tree(
        from: &LowerTree,
        sources: &[String],
        dest: &str,
        workdir: &str,
        below: &LowerTree,
    ) -> Result<Plan, CopyError> {
        let mut resolved = Vec::new();
        for s in sources {
            let parts = normalise(s).unwrap_or_default();
            let mut found: Vec<u32> = vec![LowerTree::ROOT];
            for part in &parts {
                let mut next = Vec::new();
                for dir in found {
                    if from.node(dir).kind != FileKind::Dir {
                        continue;
                    }
                    if has_glob(part) {
                        for c in from.children(dir) {
                            let name = String::from_utf8_lossy(from.name(c)).into_owned();
                            if glob_component(part, &name) {
                                next.push(c);
                            }
                        }
                    } else if let Some(c) = from.child(dir, part.as_bytes()) {
                        next.push(c);
                    }
                }
                found = next;
            }
            if found.is_empty() {
                return Err(CopyError::NotFound {
                    source_path: s.clone(),
                });
            }
            resolved.extend(found);
        }
        let (dest_abs, dest_is_dir) = destination(dest, workdir, below, resolved.len())?;
        let mut plan = Plan {
            kind_word: kind_word(resolved.len(), false),
            ..Plan::default()
        };
        let sources = resolved.len();
        for i in resolved {
            if from.node(i).kind == FileKind::Dir {
                plan.kind_word = kind_word(sources, true);
                plan.dirs.push(dest_abs.clone());
                walk_tree(from, i, &dest_abs, &mut plan);
            } else {
                let name = String::from_utf8_lossy(from.name(i)).into_owned();
                let to = file_dest(&dest_abs, dest_is_dir, &name);
                if let Some(parent) = to.parent() {
                    plan.dirs.push(parent.to_owned());
                }
                if let Some(item) = tree_item(from, i, to) {
                    plan.items.push(item);
                }
            }
        }
        Ok(plan)
    }

    /// The content digest of what the plan copies: image paths, kinds, modes, link targets
    /// and file contents, in plan order (`--from` data is read from `from`).
    ///
    /// # Errors
    /// A source cannot be read.
    pub fn digest(&self, from: Option<&LowerTree>) -> Result<String, CopyError> {
        let mut h = Sha256::new();
        for item in &self.items {
            h.update(item.dest.as_os_str().as_bytes());
            h.update([0]);
            h.update(format!("{:o}", item.perm));
            match &item.kind {
                ItemKind::Dir => h.update(b"d"),
                ItemKind::Symlink(t) => {
                    h.update(b"l");
                    h.update(t);
                }
                ItemKind::HardLink(p) => {
                    h.update(b"h");
                    h.update(p.as_os_str().as_bytes());
                }
                ItemKind::Archive(p) => {
                    h.update(b"a");
                    let mut w = DigestWriter(&mut h);
                    copy_data(&Data::Host(p.clone()), None, &mut w)?;
                }
                ItemKind::File(data) => {
                    h.update(b"f");
                    let mut w = DigestWriter(&mut h);
                    copy_data(data, from, &mut w)?;
                }
            }
            h.update([0]);
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Writes the plan into `upper` (a fresh upper directory over `below`). New entries and
    /// the directories the destination lacks are owned by `owner` (the image's ids; `--chown`
    /// or root); `chmod` replaces the modes of what is copied. `as_root`: this process may
    /// `chown` (else ownership goes to `user.containers.override_stat`).
    ///
    /// # Errors
    /// A destination directory is a non-directory in the image, or the upper cannot be written.
    pub fn write(
        &self,
        upper: &Path,
        below: &LowerTree,
        from: Option<&LowerTree>,
        owner: (u32, u32),
        chmod: Option<u32>,
        as_root: bool,
    ) -> Result<(), CopyError> {
        let w = Writer {
            upper,
            owner,
            as_root,
        };
        for d in &self.dirs {
            w.ensure_dir(d, below)?;
        }
        let mut dir_times = Vec::new();
        for item in &self.items {
            let host = w.host(&item.dest);
            if let Some(parent) = item.dest.parent() {
                w.ensure_dir(parent, below)?;
            }
            let perm = chmod.unwrap_or(item.perm);
            match &item.kind {
                ItemKind::Dir => {
                    match fs::symlink_metadata(&host) {
                        Ok(md) if md.is_dir() => {}
                        Ok(_) => fs::remove_file(&host).map_err(io_err("replacing", &host))?,
                        Err(_) => fs::create_dir(&host).map_err(io_err("creating", &host))?,
                    }
                    w.own(&host, perm, false)?;
                    dir_times.push((host, item.mtime));
                }
                ItemKind::File(data) => {
                    remove_any(&host)?;
                    let mut f = fs::File::create(&host).map_err(io_err("creating", &host))?;
                    copy_data(data, from, &mut f)?;
                    drop(f);
                    w.own(&host, perm, false)?;
                    set_mtime(&host, item.mtime)?;
                }
                ItemKind::Symlink(target) => {
                    remove_any(&host)?;
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &host)
                        .map_err(io_err("creating", &host))?;
                    w.own(&host, 0o777, true)?;
                }
                ItemKind::HardLink(first) => {
                    remove_any(&host)?;
                    let first = w.host(first);
                    fs::hard_link(&first, &host).map_err(io_err("linking", &host))?;
                }
                ItemKind::Archive(archive) => {
                    w.ensure_dir(&item.dest, below)?;
                    extract(&w, below, archive, &item.dest, &mut dir_times)?;
                }
            }
        }
        // Children change their directory's mtime; the copied ones keep their source's.
        for (host, mtime) in dir_times.iter().rev() {
            set_mtime(host, *mtime)?;
        }
        Ok(())
    }
}

/// Whether `ADD` extracts the local file `host`: a tar, plain or gzip- or zstd-compressed
/// (what the bytes say, not the name).
pub fn is_archive(host: &Path) -> bool {
    let Ok(f) = fs::File::open(host) else {
        return false;
    };
    let mut head = Vec::with_capacity(512);
    if f.take(512).read_to_end(&mut head).is_err() {
        return false;
    }
    match Compression::sniff(&head) {
        Compression::Gzip | Compression::Zstd => true,
        Compression::None => head.len() >= 262 && &head[257..262] == b"ustar",
        Compression::Unsupported(_) => false,
    }
}

/// Extracts the archive `archive` into `dest` (an image path) of the upper: members keep the
/// archive's owners, modes and times; a member that would land outside `dest` is refused;
/// nothing on the host is followed (a member over a symlink replaces the symlink).
fn extract(
    w: &Writer<'_>,
    below: &LowerTree,
    archive: &Path,
    dest: &Path,
    dir_times: &mut Vec<(PathBuf, i64)>,
) -> Result<(), CopyError> {
    let bad = |e: io::Error| CopyError::Io {
        what: "extracting",
        path: archive.to_owned(),
        source: e,
    };
    let mut f = fs::File::open(archive).map_err(bad)?;
    let mut magic = [0u8; MAGIC_LEN];
    let n = f.read(&mut magic).map_err(bad)?;
    let f = fs::File::open(archive).map_err(bad)?;
    let reader: Box<dyn Read> = match Compression::sniff(&magic[..n]) {
        Compression::None => Box::new(io::BufReader::new(f)),
        c => Box::new(Decoder::new(c, io::BufReader::new(f)).map_err(bad)?),
    };
    let mut ar = tar::Archive::new(reader);
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let Some(parts) = normalise(&name) else {
            return Err(CopyError::Outside {
                source_path: format!("{} member {name}", archive.display()),
            });
        };
        if parts.is_empty() {
            continue;
        }
        let to = dest.join(parts.join("/"));
        if let Some(parent) = to.parent() {
            w.ensure_dir(parent, below)?;
        }
        let host = w.host(&to);
        let h = entry.header();
        let ids = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
        let perm = h.mode().unwrap_or(0o644) & 0o7777;
        let mtime = h.mtime().unwrap_or(0) as i64;
        let kind = h.entry_type();
        if kind.is_dir() {
            match fs::symlink_metadata(&host) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => {
                    remove_any(&host)?;
                    fs::create_dir(&host).map_err(io_err("creating", &host))?;
                }
                Err(_) => fs::create_dir(&host).map_err(io_err("creating", &host))?,
            }
            w.own_as(&host, perm, ids, false)?;
            dir_times.push((host, mtime));
        } else if kind.is_file() {
            remove_any(&host)?;
            let mut out = fs::File::create(&host).map_err(io_err("creating", &host))?;
            io::copy(&mut entry, &mut out).map_err(bad)?;
            drop(out);
            w.own_as(&host, perm, ids, false)?;
            set_mtime(&host, mtime)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            remove_any(&host)?;
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &host)
                .map_err(io_err("creating", &host))?;
            w.own_as(&host, 0o777, ids, true)?;
        } else if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            let Some(tparts) = normalise(&target) else {
                return Err(CopyError::Outside {
                    source_path: format!("{} member {name} -> {target}", archive.display()),
                });
            };
            remove_any(&host)?;
            let first = w.host(&dest.join(tparts.join("/")));
            fs::hard_link(&first, &host).map_err(io_err("linking", &host))?;
        }
        // Devices, fifos and other members are left out, as a rootless build could not
        // make them.
    }
    Ok(())
}

/// Feeds a hasher as a writer.
struct DigestWriter<'a>(&'a mut Sha256);

impl Write for DigestWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn copy_data(data: &Data, from: Option<&LowerTree>, out: &mut dyn Write) -> Result<(), CopyError> {
    match data {
        Data::Host(p) => {
            let mut f = fs::File::open(p).map_err(io_err("reading", p))?;
            io::copy(&mut f, out).map_err(io_err("copying", p))?;
        }
        Data::Lower(i) => {
            let Some(tree) = from else {
                return Err(CopyError::Lower {
                    path: format!("node {i}"),
                    message: "no source image".into(),
                });
            };
            let lower_err = |e: &dyn std::fmt::Display| CopyError::Lower {
                path: tree.display_path(*i),
                message: e.to_string(),
            };
            let file = tree.open(*i).map_err(|e| lower_err(&e))?;
            let mut buf = vec![0u8; 1 << 16];
            let mut off = 0u64;
            loop {
                let n = file.read_at(&mut buf, off).map_err(|e| lower_err(&e))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).map_err(|e| lower_err(&e))?;
                off += n as u64;
            }
        }
    }
    Ok(())
}

fn remove_any(host: &Path) -> Result<(), CopyError> {
    match fs::symlink_metadata(host) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(host).map_err(io_err("replacing", host)),
        Ok(_) => fs::remove_file(host).map_err(io_err("replacing", host)),
        Err(_) => Ok(()),
    }
}

fn set_mtime(host: &Path, mtime: i64) -> Result<(), CopyError> {
    let t = if mtime >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime as u64)
    } else {
        std::time::UNIX_EPOCH
    };
    let f = fs::File::open(host).map_err(io_err("opening", host))?;
    f.set_modified(t)
        .map_err(io_err("setting the time of", host))
}

fn host_item(
    host: &Path,
    md: &fs::Metadata,
    dest: PathBuf,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<Item, CopyError> {
    let kind = if md.file_type().is_symlink() {
        ItemKind::Symlink(
            fs::read_link(host)
                .map_err(io_err("reading", host))?
                .as_os_str()
                .as_bytes()
                .to_vec(),
        )
    } else if md.is_dir() {
        ItemKind::Dir
    } else if md.nlink() > 1 {
        match links.get(&(md.dev(), md.ino())) {
            Some(first) => ItemKind::HardLink(first.clone()),
            None => {
                links.insert((md.dev(), md.ino()), dest.clone());
                ItemKind::File(Data::Host(host.to_owned()))
            }
        }
    } else {
        ItemKind::File(Data::Host(host.to_owned()))
    };
    Ok(Item {
        dest,
        kind,
        perm: md.permissions().mode() & 0o7777,
        mtime: md.mtime(),
    })
}

/// Adds the contents of the context directory `rel` (host `host`) under `dest`, leaving out
/// what `.dockerignore` excludes. Returns whether anything was added.
fn walk_host(
    ctx: &Context,
    rel: &str,
    host: &Path,
    dest: &Path,
    plan: &mut Plan,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<bool, CopyError> {
    let mut names: Vec<_> = fs::read_dir(host)
        .map_err(io_err("reading", host))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err("reading", host))?;
    names.sort();
    let mut any = false;
    for name in names {
        let child_rel = if rel.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        let child = host.join(&name);
        let to = dest.join(&name);
        let md = fs::symlink_metadata(&child).map_err(io_err("reading", &child))?;
        let ignored = ctx.ignore.is_ignored(&child_rel);
        if md.is_dir() {
            let at = plan.items.len();
            plan.items.push(host_item(&child, &md, to.clone(), links)?);
            let inner = walk_host(ctx, &child_rel, &child, &to, plan, links)?;
            if ignored && !inner {
                plan.items.truncate(at);
            } else {
                any = true;
            }
        } else if !ignored && (md.is_file() || md.file_type().is_symlink()) {
            plan.items.push(host_item(&child, &md, to, links)?);
            any = true;
        }
    }
    Ok(any)
}

fn tree_item(from: &LowerTree, i: u32, dest: PathBuf) -> Option<Item> {
    let n = from.node(i);
    let meta = n.meta();
    let kind = match n.kind {
        FileKind::Dir => ItemKind::Dir,
        FileKind::File => ItemKind::File(Data::Lower(i)),
        FileKind::Symlink => ItemKind::Symlink(from.link(i)?.to_vec()),
        _ => return None,
    };
    Some(Item {
        dest,
        kind,
        perm: meta.perm & 0o7777,
        mtime: meta.mtime,
    })
}

fn walk_tree(from: &LowerTree, dir: u32, dest: &Path, plan: &mut Plan) {
    for c in from.children(dir) {
        let name = std::ffi::OsStr::from_bytes(from.name(c)).to_owned();
        let to = dest.join(&name);
        if let Some(item) = tree_item(from, c, to.clone()) {
            plan.items.push(item);
            if from.node(c).kind == FileKind::Dir {
                walk_tree(from, c, &to, plan);
            }
        }
    }
}

/// Writes entries into the upper.
struct Writer<'a> {
    upper: &'a Path,
    owner: (u32, u32),
    as_root: bool,
}

impl Writer<'_> {
    fn host(&self, image_path: &Path) -> PathBuf {
        self.upper
            .join(image_path.strip_prefix("/").unwrap_or(image_path))
    }

    /// Gives `host` the image ownership `self.owner` and `perm`.
    fn own(&self, host: &Path, perm: u32, symlink: bool) -> Result<(), CopyError> {
        self.own_as(host, perm, self.owner, symlink)
    }

    fn own_as(
        &self,
        host: &Path,
        perm: u32,
        (uid, gid): (u32, u32),
        symlink: bool,
    ) -> Result<(), CopyError> {
        if self.as_root {
            std::os::unix::fs::lchown(host, Some(uid), Some(gid))
                .map_err(io_err("changing the owner of", host))?;
        } else if (uid, gid) != (0, 0) && !symlink {
            // Rootless: what we create is the image root's; other owners are recorded.
            xattr_set(host, &OverrideStat { uid, gid, perm }.encode())?;
        }
        if !symlink {
            fs::set_permissions(host, fs::Permissions::from_mode(perm))
                .map_err(io_err("changing the mode of", host))?;
        }
        Ok(())
    }

    /// Makes directory `path` (and its parents) exist in the upper: a copy of the image's
    /// directory (its mode, owner and time) where the image has one, else a new `0755`
    /// directory of `self.owner`.
    fn ensure_dir(&self, path: &Path, below: &LowerTree) -> Result<(), CopyError> {
        let mut image = PathBuf::from("/");
        for c in path.components() {
            let Component::Normal(name) = c else { continue };
            image.push(name);
            let host = self.host(&image);
            match fs::symlink_metadata(&host) {
                Ok(md) if md.is_dir() => continue,
                Ok(_) => {
                    return Err(CopyError::ParentNotDir {
                        path: image.display().to_string(),
                    });
                }
                Err(_) => {}
            }
            match below.lookup_path(image.as_os_str().as_bytes()) {
                Some(i) if below.node(i).kind == FileKind::Dir => {
                    let meta = below.node(i).meta();
                    fs::create_dir(&host).map_err(io_err("creating", &host))?;
                    self.own_as(&host, meta.perm & 0o7777, (meta.uid, meta.gid), false)?;
                    set_mtime(&host, meta.mtime)?;
                }
                Some(_) => {
                    return Err(CopyError::ParentNotDir {
                        path: image.display().to_string(),
                    });
                }
                None => {
                    fs::create_dir(&host).map_err(io_err("creating", &host))?;
                    self.own(&host, 0o755, false)?;
                }
            }
        }
        Ok(())
    }
}

/// Makes directory `path` (an absolute image path) and its parents exist in `upper` over
/// `below`, as [`Plan::write`] does for a destination: `WORKDIR` of a missing directory.
///
/// # Errors
/// A component is a non-directory in the image, or the upper cannot be written.
pub fn make_dir(
    upper: &Path,
    path: &Path,
    below: &LowerTree,
    as_root: bool,
) -> Result<(), CopyError> {
    Writer {
        upper,
        owner: (0, 0),
        as_root,
    }
    .ensure_dir(path, below)
}

fn xattr_set(host: &Path, value: &[u8]) -> Result<(), CopyError> {
    let f = fs::File::open(host).map_err(io_err("opening", host))?;
    crate::sys::set_xattr(
        std::os::fd::AsFd::as_fd(&f),
        c"user.containers.override_stat",
        value,
        0,
    )
    .map_err(io_err("recording the owner of", host))
}

/// Parses `--chown=USER[:GROUP]` with numeric ids or names looked up in the image's
/// `/etc/passwd` and `/etc/group` (read from `below`).
///
/// # Errors
/// A name the image does not know.
pub fn parse_chown(spec: &str, below: &LowerTree) -> Result<(u32, u32), CopyError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str| -> Result<(u32, u32), CopyError> {
        if let Ok(n) = name.parse::<u32>() {
            return Ok((n, n));
        }
        let text = read_tree_file(below, file).unwrap_or_default();
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[0] == name {
                let id = f[2].parse().unwrap_or(0);
                let gid = f[3].parse().unwrap_or(id);
                return Ok((id, gid));
            }
        }
        Err(CopyError::Flag(format!(
            "--chown={spec}: no {name:?} in the image's {file}"
        )))
    };
    let (uid, primary) = lookup("/etc/passwd", user)?;
    let gid = match group {
        Some(g) => lookup("/etc/group", g)?.0,
        None if user.parse::<u32>().is_ok() => uid,
        None => primary,
    };
    Ok((uid, gid))
}

/// Parses `--chmod=OCTAL`.
///
/// # Errors
/// Not an octal mode.
pub fn parse_chmod(spec: &str) -> Result<u32, CopyError> {
    u32::from_str_radix(spec, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| CopyError::Flag(format!("--chmod={spec}: expected an octal mode")))
}

/// The contents of a small text file of a tree (`/etc/passwd`), if it is there.
pub fn read_tree_file(tree: &LowerTree, path: &str) -> Option<String> {
    let i = tree.lookup_path(path.as_bytes())?;
    let file = tree.open(i).ok()?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut off = 0;
    loop {
        let n = file.read_at(&mut buf, off).ok()?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        off += n as u64;
        if out.len() > 1 << 22 {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads a whole host file (the Dockerfile, `.dockerignore`); unused bytes stay unread.
pub fn read_small(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    fs::File::open(path)?.take(limit).read_to_end(&mut out)?;
    Ok(out)
}

/// Where `COPY`/`ADD` of `count` sources to `dest` (relative to `workdir`) lands in the image
/// `below` (its symlinks followed), and whether that is a directory: `dest` ends in `/` or
/// `/.`, is `.`, or is a directory there. Several sources need a directory.
fn destination(
    dest: &str,
    workdir: &str,
    below: &LowerTree,
    count: usize,
) -> Result<(PathBuf, bool), CopyError> {
    let dest_abs = resolve_in_image(below, &dest_path(dest, workdir));
    let dest_is_dir = dest.ends_with('/')
        || dest.ends_with("/.")
        || dest == "."
        || below
            .lookup_path(dest_abs.as_os_str().as_bytes())
            .is_some_and(|i| below.node(i).kind == FileKind::Dir);
    if count > 1 && !dest_is_dir {
        return Err(CopyError::DestNotDir {
            dest: dest.to_string(),
        });
    }
    Ok((dest_abs, dest_is_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_words_count_sources_after_globbing() {
        assert_eq!(kind_word(1, false), "file");
        assert_eq!(kind_word(1, true), "dir");
        assert_eq!(kind_word(2, false), "multi");
        assert_eq!(kind_word(3, true), "multi");
    }

    #[test]
    fn destinations_are_absolute_and_normalised() {
        assert_eq!(dest_path("x/y", "/app"), PathBuf::from("/app/x/y"));
        assert_eq!(dest_path("/opt/", "/app"), PathBuf::from("/opt"));
        assert_eq!(dest_path("../..", "/app/sub"), PathBuf::from("/"));
        assert_eq!(dest_path(".", "/"), PathBuf::from("/"));
    }

    #[test]
    fn destinations_follow_the_images_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        fs::create_dir_all(layer.join("usr/bin")).unwrap();
        fs::create_dir_all(layer.join("etc")).unwrap();
        std::os::unix::fs::symlink("usr/bin", layer.join("bin")).unwrap();
        std::os::unix::fs::symlink("/etc", layer.join("usr/conf")).unwrap();
        let tree = LowerTree::build(vec![crate::lower::LayerInput::Dir(layer)]).unwrap();
        let r = |p: &str| resolve_in_image(&tree, Path::new(p));
        assert_eq!(r("/bin/tool"), PathBuf::from("/usr/bin/tool"));
        assert_eq!(r("/usr/conf/x/y"), PathBuf::from("/etc/x/y"));
        assert_eq!(r("/new/dir"), PathBuf::from("/new/dir"));
        assert_eq!(r("/bin/../x"), PathBuf::from("/usr/x"));
    }

    /// Where a copy lands is decided in one place for context and `--from` sources: `dir/.`,
    /// `dir/`, `.` and an existing directory take the sources in; several sources need one.
    #[test]
    fn destinations_that_are_directories() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        fs::create_dir_all(layer.join("srv")).unwrap();
        fs::write(layer.join("file"), "f").unwrap();
        let tree = LowerTree::build(vec![crate::lower::LayerInput::Dir(layer)]).unwrap();
        let is_dir = |d: &str| destination(d, "/", &tree, 1).unwrap().1;
        assert!(is_dir("/new/.") && is_dir("/new/") && is_dir(".") && is_dir("/srv"));
        assert!(!is_dir("/new") && !is_dir("/file"));
        assert!(destination("/new", "/", &tree, 2).is_err());
        assert!(destination("/new/.", "/", &tree, 2).is_ok());
    }

    /// A member of [`raw_tar`]: its name and, for a symlink, its target.
    type Member<'a> = (&'a str, Option<&'a str>);

    /// A tar of `members` (files of 4 bytes, or symlinks), names written raw.
    fn raw_tar(members: &[Member<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, link) in members {
            let mut h = tar::Header::new_ustar();
            let field = &mut h.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            h.set_mode(0o644);
            match link {
                Some(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                    h.set_cksum();
                    b.append(&h, &b""[..]).unwrap();
                }
                None => {
                    h.set_size(4);
                    h.set_cksum();
                    b.append(&h, &b"evil"[..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn add_of_an_archive_never_writes_outside_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        fs::create_dir_all(base.join("etc")).unwrap();
        let below = LowerTree::build(vec![crate::lower::LayerInput::Dir(base)]).unwrap();
        let ctx_dir = dir.path().join("ctx");
        fs::create_dir(&ctx_dir).unwrap();
        let cases: [(&str, Vec<Member<'_>>); 2] = [
            ("dotdot.tar", vec![("ok", None), ("../../escaped", None)]),
            (
                "through-link.tar",
                vec![("link", Some("/etc")), ("link/passwd", None)],
            ),
        ];
        for (name, members) in cases {
            fs::write(ctx_dir.join(name), raw_tar(&members)).unwrap();
            assert!(is_archive(&ctx_dir.join(name)), "{name} is a tar");
            let ctx = Context::new(&ctx_dir, Ignore::default());
            let plan =
                Plan::from_context(&ctx, &[name.to_string()], "/dst/", "/", &below, true).unwrap();
            let upper = dir.path().join(format!("upper-{name}"));
            fs::create_dir(&upper).unwrap();
            let err = plan
                .write(&upper, &below, None, (0, 0), None, false)
                .expect_err(name);
            assert!(
                matches!(
                    err,
                    CopyError::Outside { .. } | CopyError::ParentNotDir { .. }
                ),
                "{name}: {err}"
            );
            assert!(!dir.path().join("escaped").exists() && !upper.join("escaped").exists());
            assert!(
                !upper.join("etc/passwd").exists(),
                "{name}: followed the link"
            );
        }
    }

    #[test]
    fn sources_outside_the_context_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ctx_dir = dir.path().join("ctx");
        fs::create_dir(&ctx_dir).unwrap();
        fs::write(dir.path().join("secret"), "s").unwrap();
        fs::write(ctx_dir.join("a.txt"), "a").unwrap();
        fs::write(ctx_dir.join("b.txt"), "b").unwrap();
        fs::write(ctx_dir.join("skip.log"), "l").unwrap();
        std::os::unix::fs::symlink("../secret", ctx_dir.join("out")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ctx_dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("a.txt", ctx_dir.join("in")).unwrap();
        let ctx = Context::new(&ctx_dir, Ignore::parse("*.log\n"));
        for bad in ["../secret", "sub/../../secret", "out", "abs"] {
            assert!(
                matches!(ctx.sources(bad), Err(CopyError::Outside { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            ctx.sources("skip.log"),
            Err(CopyError::NotFound { .. })
        ));
        let globbed: Vec<String> = ctx
            .sources("*.txt")
            .unwrap()
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(globbed, vec!["a.txt", "b.txt"]);
        let (_, host) = ctx.sources("in").unwrap().remove(0);
        assert_eq!(host, ctx_dir.join("a.txt"));
    }
}
