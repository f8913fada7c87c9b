//! Garbage collection: `rfs rmi` (untag, then delete what no other image needs), `rfs prune`
//! (delete every unreferenced blob, cache and temporary file) and `rfs builder prune` (the
//! build cache's entries, then `rfs prune`: the entries are no root of collection, so the
//! layers only they named go with it).
//!
//! Both hold the store lock exclusively, so no load, import, commit or mount set-up runs
//! meanwhile, and compute what is *live*: the manifest, config and layers of every image in
//! `index.json`; the blobs of every lease whose file is still locked by a running mount; and
//! the image of every container under `<root>/containers/` (its record's `image_id`, `layers`,
//! or an `image` that names a store image). Nothing live is ever deleted.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::{Error, INDEXES_DIR, ImageRecord, LEASES_DIR, LeaseRecord, META_DIR, Reference, Store};
use crate::digest::Digest;
use crate::durable::TMP_PREFIX;
use crate::image::model::ImageConfig;

/// What `rfs rmi` did for one argument.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Tags removed.
    pub untagged: Vec<Reference>,
    /// The image deleted, if it lost its last name (or was named by ID).
    pub deleted: Option<Digest>,
    /// Blobs deleted, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
}

/// What `rfs prune` deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs deleted, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Other files deleted (caches, temporary files, stale leases).
    pub other_files: usize,
    /// Bytes freed in all.
    pub reclaimed: u64,
}

/// What `rfs builder prune` deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildCachePruneReport {
    /// The keys of the build cache entries deleted.
    pub entries: Vec<String>,
    /// Bytes of the entries themselves.
    pub entry_bytes: u64,
    /// What the store's prune that follows deleted: the layers only those entries named
    /// (and anything else nothing uses).
    pub store: PruneReport,
}

/// A container as far as collection is concerned.
struct ContainerRef {
    name: String,
    image_id: Option<Digest>,
    image: Option<String>,
    layers: Vec<Digest>,
}

impl Store {
    /// The containers recorded under `<root>/containers/*/state.json` (unreadable records
    /// are skipped).
    fn containers(&self) -> Vec<ContainerRef> {
        let dir = self.root.join("containers");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Ok(bytes) = fs::read(entry.path().join("state.json")) else {
                continue;
            };
            let Ok(state) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let text = |k: &str| state.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            out.push(ContainerRef {
                name: text("name")
                    .or_else(|| text("id"))
                    .unwrap_or_else(|| entry.file_name().to_string_lossy().into_owned()),
                image_id: text("image_id").and_then(|t| Digest::parse(&t).ok()),
                image: text("image"),
                layers: state
                    .get("layers")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|d| d.as_str().and_then(|s| Digest::parse(s).ok()))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        out
    }

    /// The image a container was created from, if it is a store image.
    fn container_image(&self, c: &ContainerRef, images: &[ImageRecord]) -> Option<Digest> {
        if let Some(id) = c.image_id {
            return Some(id);
        }
        let image = c.image.as_deref()?;
        if Path::new(image).exists() {
            return None;
        }
        if let Ok(r) = Reference::parse(image) {
            if let Some(found) = images.iter().find(|i| i.tags.contains(&r)) {
                return Some(found.id);
            }
        }
        let hex = image.strip_prefix("sha256:").unwrap_or(image);
        let mut matching = images
            .iter()
            .filter(|i| !hex.is_empty() && i.id.hex().starts_with(hex));
        match (matching.next(), matching.next()) {
            (Some(one), None) => Some(one.id),
            _ => None,
        }
    }

    /// The names of the containers using image `id`.
    pub fn image_users(&self, id: &Digest) -> Result<Vec<String>, Error> {
        let images = self.images()?;
        Ok(self
            .containers()
            .into_iter()
            .filter(|c| self.container_image(c, &images) == Some(*id))
            .map(|c| c.name)
            .collect())
    }

    /// The blobs of config `id` (itself and its layers), if the config is readable.
    fn config_blobs(&self, id: &Digest, live: &mut BTreeSet<Digest>) {
        live.insert(*id);
        if let Ok(bytes) = self.read_blob(id, "config") {
            if let Ok(config) = serde_json::from_slice::<ImageConfig>(&bytes) {
                if let Ok(layers) = config.diff_ids() {
                    live.extend(layers);
                }
            }
        }
    }

    /// Everything that must stay; removes stale lease files (counted in `removed`).
    fn live(&self, removed: &mut usize) -> Result<BTreeSet<Digest>, Error> {
        let mut live = BTreeSet::new();
        let images = self.images()?;
        for record in &images {
            live.insert(record.manifest);
            self.config_blobs(&record.id, &mut live);
        }
        // Manifests named by index.json that this version cannot read are kept too.
        for entry in self.read_index()?.manifests {
            if let Ok(d) = entry.digest() {
                live.insert(d);
            }
        }
        for c in self.containers() {
            live.extend(c.layers.iter().copied());
            if let Some(id) = self.container_image(&c, &images) {
                self.config_blobs(&id, &mut live);
                if let Some(r) = images.iter().find(|i| i.id == id) {
                    live.insert(r.manifest);
                }
            }
        }
        *removed += self.sweep_leases(Some(&mut live));
        Ok(live)
    }

    /// Removes the lease files whose lock is free (their process has exited); adds the blobs
    /// of the others to `live`. Returns how many files it removed.
    pub(super) fn sweep_leases(&self, mut live: Option<&mut BTreeSet<Digest>>) -> usize {
        let mut removed = 0;
        let Ok(entries) = fs::read_dir(self.root.join(LEASES_DIR)) else {
            return 0;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                // Being written (it is locked only just before it gets its name): left for
                // `prune`, which runs when no lease is being taken.
                if live.is_some() && fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(_stale) => {
                    if fs::remove_file(&path).is_ok() {
                        removed += 1;
                    }
                }
                Err(_) => {
                    let record = fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<LeaseRecord>(&b).ok());
                    if let (Some(live), Some(r)) = (live.as_deref_mut(), record) {
                        live.extend(r.blobs);
                    }
                }
            }
        }
        removed
    }

    /// Deletes the files of `dir` named by a digest not in `live` (only those in `only`, if
    /// given) and temporary files; returns the deleted digests with their sizes.
    fn sweep(
        dir: &Path,
        live: &BTreeSet<Digest>,
        only: Option<&BTreeSet<Digest>>,
        temporaries: &mut usize,
    ) -> Result<Vec<(Digest, u64)>, Error> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing", dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if name.starts_with(TMP_PREFIX) {
                if only.is_none() {
                    remove(&path)?;
                    *temporaries += 1;
                }
                continue;
            }
            let Ok(digest) = Digest::from_hex(&name) else {
                continue;
            };
            if live.contains(&digest) || only.is_some_and(|o| !o.contains(&digest)) {
                continue;
            }
            remove(&path)?;
            out.push((digest, size));
        }
        Ok(out)
    }

    /// Removes the tag or image `text` (a name, or an ID which removes all its tags).
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchImage`]; [`Error::MultipleTags`] for an ID with several tags and
    /// [`Error::InUse`] for an image a container uses, unless `force`.
    pub fn remove(&self, text: &str, force: bool) -> Result<Removed, Error> {
        let _lock = self.lock_exclusive()?;
        let record = self.resolve(text)?;
        let by_tag = Reference::parse(text)
            .ok()
            .filter(|r| record.tags.contains(r));
        let mut removed = Removed::default();
        let delete_image = match &by_tag {
            Some(_) => record.tags.len() <= 1,
            None => {
                if record.tags.len() > 1 && !force {
                    return Err(Error::MultipleTags {
                        id: record.id,
                        tags: record
                            .tags
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
                true
            }
        };
        if delete_image && !force {
            let users = self.image_users(&record.id)?;
            if !users.is_empty() {
                return Err(Error::InUse {
                    image: text.to_owned(),
                    users: format!("container(s) {}", users.join(", ")),
                });
            }
        }
        let manifest = record.manifest.to_string();
        self.update_index(|index| {
            if delete_image {
                index.manifests.retain(|e| e.digest != manifest);
            } else if let Some(tag) = &by_tag {
                index.manifests.retain(|e| {
                    let named = e.ref_name().and_then(|r| Reference::parse(r).ok());
                    !(e.digest == manifest && named.as_ref() == Some(tag))
                });
            }
            Ok(())
        })?;
        removed.untagged = match (&by_tag, delete_image) {
            (Some(t), _) => vec![t.clone()],
            (None, _) => record.tags.clone(),
        };
        if !delete_image {
            return Ok(removed);
        }
        removed.deleted = Some(record.id);
        // Delete what this image alone needed.
        let mut candidates = BTreeSet::from([record.manifest]);
        self.config_blobs(&record.id, &mut candidates);
        let mut stale = 0;
        let live = self.live(&mut stale)?;
        removed.blobs = Self::sweep(&self.blobs_dir(), &live, Some(&candidates), &mut stale)?;
        Self::sweep(
            &self.root.join(INDEXES_DIR),
            &live,
            Some(&candidates),
            &mut stale,
        )?;
        if !live.contains(&record.id) {
            let _ = fs::remove_file(self.meta_path(&record.id));
        }
        Ok(removed)
    }

    /// Deletes every blob nothing live refers to, the layer indexes of deleted layers, the
    /// caches of archives mounted directly (`indexes/file/`, `verified/`), the partial
    /// downloads of interrupted pulls (`partial/`), notes on deleted images, stale leases and
    /// temporary files.
    ///
    /// # Errors
    ///
    /// A file cannot be listed or deleted.
    pub fn prune(&self) -> Result<PruneReport, Error> {
        let _lock = self.lock_exclusive()?;
        let mut report = PruneReport::default();
        let live = self.live(&mut report.other_files)?;
        report.blobs = Self::sweep(&self.blobs_dir(), &live, None, &mut report.other_files)?;
        report.reclaimed = report.blobs.iter().map(|(_, s)| s).sum();
        let indexes = Self::sweep(
            &self.root.join(INDEXES_DIR),
            &live,
            None,
            &mut report.other_files,
        )?;
        report.other_files += indexes.len();
        report.reclaimed += indexes.iter().map(|(_, s)| s).sum::<u64>();
        // Pulls hold the shared lock, so no download is using a partial file now.
        for cache in ["indexes/file", "verified", super::pull::PARTIAL_DIR] {
            let dir = self.root.join(cache);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                report.reclaimed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                remove(&entry.path())?;
                report.other_files += 1;
            }
        }
        let ids: BTreeSet<String> = self
            .images()?
            .iter()
            .map(|i| format!("{}.json", i.id.hex()))
            .collect();
        if let Ok(entries) = fs::read_dir(self.root.join(META_DIR)) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let in_use = ids.contains(&name)
                    || name
                        .strip_suffix(".json")
                        .and_then(|h| Digest::from_hex(h).ok())
                        .is_some_and(|d| live.contains(&d));
                if !in_use {
                    remove(&entry.path())?;
                    report.other_files += 1;
                }
            }
        }
        Ok(report)
    }
}

impl Store {
    /// Deletes every entry of `rfs build`'s cache ([`super::BUILD_CACHE_DIR`]), then prunes the
    /// store ([`Store::prune`]), which deletes the layers of the steps that no image uses. A
    /// build running meanwhile keeps its layers (they are leased) and rewrites its own
    /// entries.
    ///
    /// # Errors
    ///
    /// A file cannot be listed or deleted.
    pub fn prune_build_cache(&self) -> Result<BuildCachePruneReport, Error> {
        let mut report = BuildCachePruneReport::default();
        {
            let _lock = self.lock_exclusive()?;
            let dir = self.root.join(super::BUILD_CACHE_DIR);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => Some(e),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("listing", &dir, e)),
            };
            for entry in entries.into_iter().flatten() {
                let entry = entry.map_err(|e| Error::io("listing", &dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                report.entry_bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                remove(&entry.path())?;
                if let Some(key) = name.strip_suffix(".json").filter(|k| !k.starts_with('.')) {
                    report.entries.push(key.to_string());
                }
            }
            report.entries.sort();
        }
        report.store = self.prune()?;
        Ok(report)
    }
}

fn remove(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("deleting", path, e)),
    }
}
