//! The image store commands (`rfs load`, `import`, `tag`, `images`, `rmi`, `prune`, `pull`,
//! `push`, `login`, `logout`,
//! `history`, `inspect`, `diff`, `commit`, `save`, `mounts`) and what they share: opening the store,
//! progress on a terminal, finding the image a SOURCE or a container names.
//!
//! The work is done by [`rfs_fs::store`]; these modules turn arguments into its calls and its
//! results into Docker's output formats (`format`).

mod commit;
mod cp;
mod cp_live;
mod diff;
mod export;
pub(crate) mod format;
mod history;
mod images;
mod import;
mod inspect;
mod load;
mod login;
mod mounts;
mod output;
mod prune;
pub(crate) mod pull;
mod push;
mod rmi;
mod save;
mod tag;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

use rfs_fs::digest::Digest;
use rfs_fs::image::model::ImageConfig;
use rfs_fs::lower::{LayerInput, LowerTree};
use rfs_fs::store::{Lease, Store, StoredImage, UpperOwners};

pub(crate) use commit::run as commit;
pub(crate) use cp::run as cp;
pub(crate) use diff::run as diff;
pub(crate) use export::run as export;
pub(crate) use history::run as history;
pub(crate) use images::run as images;
pub(crate) use import::run as import;
pub(crate) use inspect::run as inspect;
pub(crate) use load::run as load;
pub(crate) use login::{login, logout};
pub(crate) use mounts::run as mounts;
pub(crate) use prune::{builder_prune, run as prune};
pub(crate) use pull::run as pull;
pub(crate) use push::run as push;
pub(crate) use rmi::run as rmi;
pub(crate) use save::run as save;
pub(crate) use tag::run as tag;

/// Opens the store under rfs's root directory.
pub(crate) fn open(root: Option<PathBuf>) -> Result<Store> {
    let root = super::root_dir(root)?;
    Store::open(&root).with_context(|| format!("opening the image store in {}", root.display()))
}

/// Calls `f` with a progress callback that draws on a terminal only.
pub(crate) fn with_progress<T>(f: impl FnOnce(&rfs_fs::progress::Progress<'_>) -> T) -> T {
    let progress = crate::progress::ProgressDisplay::new();
    let report = |what: &str, done: u64, total: u64| progress.update(what, done, total);
    f(&report)
}

/// Leases this process holds until it exits (a mount or container serving store blobs).
static LEASES: Mutex<Vec<Lease>> = Mutex::new(Vec::new());

fn keep(lease: Lease) {
    LEASES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(lease);
}

/// An image opened for mounting or running.
// `config` and `image_id` are for `rfs run`, which is to open images through `open_image`.
#[allow(dead_code)]
pub(crate) struct OpenedImage {
    /// The image config (`None` for a flat rootfs tar).
    pub(crate) config: Option<ImageConfig>,
    /// The layers, base first, indexed.
    pub(crate) layers: Vec<LayerInput>,
    /// The store image ID, when the image came from the store.
    pub(crate) image_id: Option<Digest>,
}

/// Opens SOURCE: an image file or layout if the path exists, else an image of the store
/// (`NAME[:TAG]` or an ID prefix). Blobs of the store that the layers use stay leased for
/// the life of this process, so `rfs prune` leaves them alone.
pub(crate) fn open_image(
    root: &Path,
    source: &Path,
    platform: Option<&str>,
) -> Result<OpenedImage> {
    let store = Store::open(root)
        .with_context(|| format!("opening the image store in {}", root.display()))?;
    if !source.exists() {
        let Some(text) = source.to_str() else {
            bail!("{}: no such file", source.display());
        };
        let (image, layers, lease) = match store.open_for_mount(text) {
            Ok(x) => x,
            Err(rfs_fs::store::Error::NoSuchImage { .. } | rfs_fs::store::Error::Reference(_)) => {
                bail!(
                    "{text}: no such file, and no image of that name or ID in the store (`rfs pull {text}` fetches it from a registry)"
                )
            }
            Err(e) => return Err(e).with_context(|| format!("opening image {text} of the store")),
        };
        keep(lease);
        return Ok(OpenedImage {
            config: Some(image.config),
            layers,
            image_id: Some(image.id),
        });
    }
    let _lock = store.lock_shared()?;
    let (image, layers) = with_progress(|report| {
        let opts = rfs_fs::source::SourceOptions {
            root,
            platform,
            progress: Some(report),
        };
        rfs_fs::source::open_layers(source, &opts)
    })
    // Library errors name the archive, member and layer already.
    ?;
    // Layers decompressed into the store are blobs too: keep them while mounted.
    let leased: Vec<Digest> = image
        .layers
        .iter()
        .filter(|l| l.file.starts_with(store.blobs_dir()))
        .filter_map(|l| l.diff_id)
        .collect();
    if !leased.is_empty() {
        keep(store.lease(&format!("mount {}", source.display()), &leased)?);
    }
    Ok(OpenedImage {
        config: image.config.map(|c| c.parsed),
        layers,
        image_id: None,
    })
}

/// A container's record, directory and raw `state.json`.
pub(crate) struct Container {
    pub(crate) state: rfs_runner::state::ContainerState,
    pub(crate) dir: PathBuf,
    pub(crate) raw: serde_json::Value,
}

impl Container {
    /// The container called `key` (name, ID or ID prefix), if any.
    pub(crate) fn find(root: &Path, key: &str) -> Result<Option<Container>> {
        let containers = rfs_runner::state::ContainerStore::new(root);
        let Some(state) = containers.find(key)? else {
            return Ok(None);
        };
        let dir = containers.dir(&state.id);
        let raw = std::fs::read(dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        Ok(Some(Container { state, dir, raw }))
    }

    /// The writable layer.
    pub(crate) fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// Where the container in `dir` keeps its init layer (`rfs_fs::init_layer`): the
    /// mountpoints its image lacked, between the image and the upper. A container whose image
    /// had them all has none.
    pub(crate) fn init_layer_path(dir: &Path) -> PathBuf {
        dir.join("init.tar")
    }

    /// How to read ownership the container's upper does not record: `rfs run` makes the
    /// container's directory as the user who is root in the container (root itself, or the
    /// user of a rootless container, whose files its root owns without a record).
    pub(crate) fn upper_owners(&self) -> Result<UpperOwners> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&self.dir)
            .with_context(|| format!("container {}: {}", self.state.name, self.dir.display()))?;
        Ok(UpperOwners {
            root: Some((md.uid(), md.gid())),
        })
    }

    /// The container's init layer, if it has one: part of what its upper was written over, so
    /// `rfs diff` and `rfs commit` stack it on the image too.
    pub(crate) fn init_layer(&self) -> Result<Option<LayerInput>> {
        let path = Self::init_layer_path(&self.dir);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            _ => {}
        }
        let layer = rfs_fs::init_layer::open(&path)
            .with_context(|| format!("container {}: its init layer", self.state.name))?;
        Ok(Some(layer))
    }

    /// What the container's upper was written over: its image's layers and its init layer,
    /// merged.
    pub(crate) fn lower_tree(&self, store: &Store) -> Result<rfs_fs::lower::LowerTree> {
        let image = self.image(store)?;
        let mut layers = store.layer_inputs(&image)?;
        layers.extend(self.init_layer()?);
        rfs_fs::lower::LowerTree::build(layers)
            .with_context(|| format!("container {}: reading its image", self.state.name))
    }

    /// The container's union, opened in this process (to read and change it while it is
    /// not running) as its server opens it, where `Caller::ROOT` is the container's root. The
    /// server runs in the container's user namespace, where a rootless container's root's
    /// files are uid 0; here they are this user's, which the union is told.
    pub(crate) fn union(&self, store: &Store) -> Result<rfs_fs::union::UnionFs> {
        use rfs_fs::union::{Ownership, UnionConfig, UpperDirs};
        if self.state.is_running() {
            anyhow::bail!(
                "container {} is running: its union is its server's to change",
                self.state.name
            );
        }
        let lower = self.lower_tree(store)?;
        let (ownership, own_ids_on_disk) = match Ownership::of_process() {
            Ownership::Host => (Ownership::Host, None),
            Ownership::Override { own_uid, own_gid } => (
                Ownership::Override {
                    own_uid: 0,
                    own_gid: 0,
                },
                Some((own_uid, own_gid)),
            ),
        };
        let dirs = UpperDirs {
            upper: self.upper(),
            work: self.dir.join("work"),
        };
        let config = UnionConfig {
            ownership,
            markers: Some(rfs_fs::ovl::Namespace::User),
            own_ids_on_disk,
        };
        let union =
            rfs_fs::union::UnionFs::with_config(lower, Some(dirs), config).with_context(|| {
                format!("container {}: opening its writable layer", self.state.name)
            })?;
        Ok(union)
    }

    /// The store image the container was created from, without loading anything: `None`
    /// if it was created from an image file the store does not hold.
    pub(crate) fn stored_image(&self, store: &Store) -> Option<StoredImage> {
        if let Some(id) = self.raw.get("image_id").and_then(|v| v.as_str()) {
            return store.find(id).ok();
        }
        if Path::new(&self.state.image).exists() {
            return None;
        }
        store.find(&self.state.image).ok()
    }

    /// The image the container was created from, as the store has it; an image file or
    /// layout is loaded into the store first.
    pub(crate) fn image(&self, store: &Store) -> Result<StoredImage> {
        if let Some(id) = self.raw.get("image_id").and_then(|v| v.as_str()) {
            return store
                .find(id)
                .with_context(|| format!("container {}: image {id}", self.state.name));
        }
        image_in_store(store, &self.state.image, None)
            .with_context(|| format!("container {}: image {}", self.state.name, self.state.image))
    }
}

/// The store image named `text`, loading it first if `text` is an image file or layout.
pub(crate) fn image_in_store(
    store: &Store,
    text: &str,
    platform: Option<&str>,
) -> Result<StoredImage> {
    let path = Path::new(text);
    if path.exists() {
        let loaded = with_progress(|report| {
            let opts = rfs_fs::store::LoadOptions {
                platform,
                tags: Vec::new(),
                progress: Some(report),
            };
            store.load(path, &opts)
        })
        .with_context(|| format!("loading {text} into the store"))?;
        return Ok(store.find(&loaded.id.to_string())?);
    }
    Ok(store.find(text)?)
}

/// The merged lower tree of the image `text` (a store image, or an image file or layout,
/// which is not loaded).
pub(crate) fn lower_tree(store: &Store, text: &str, platform: Option<&str>) -> Result<LowerTree> {
    let path = Path::new(text);
    if path.exists() {
        let (_, layers) = with_progress(|report| {
            let opts = rfs_fs::source::SourceOptions {
                root: store.root(),
                platform,
                progress: Some(report),
            };
            rfs_fs::source::open_layers(path, &opts)
        })
        .with_context(|| format!("reading image {text}"))?;
        return Ok(LowerTree::build(layers)?);
    }
    let image = store.find(text)?;
    Ok(store.lower_tree(&image)?)
}

/// Parses `NAME[:TAG]`.
pub(crate) fn reference(text: &str) -> Result<rfs_fs::store::Reference> {
    Ok(rfs_fs::store::Reference::parse(text)?)
}
