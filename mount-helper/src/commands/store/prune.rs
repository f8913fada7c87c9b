//! `rfs prune [--mounts] [--build-cache]`: deletes every blob and cache nothing refers to
//! (never one an image, a container or a running mount uses), with `--mounts` the writable
//! layers of `rfs mount` whose mount has ended, and with `--build-cache` (or as
//! `rfs builder prune`) `rfs build`'s cache first, so the layers only it named go too.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::format::human_size;
use crate::cli::PruneArgs;

/// Runs `rfs prune`; prints what it deleted and the space reclaimed.
pub(crate) fn run(root: Option<PathBuf>, args: &PruneArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let mut text = String::new();
    let mut reclaimed = 0;
    if args.mounts {
        let layers = store
            .prune_mounts()
            .context("deleting the writable layers no longer mounted")?;
        if !layers.is_empty() {
            text.push_str("Deleted writable layers:\n");
            for (layer, size) in &layers {
                let mountpoint = layer
                    .record
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |r| r.mountpoint.display().to_string());
                text.push_str(&format!(
                    "deleted: {} ({}, {})\n",
                    layer.id,
                    mountpoint,
                    human_size(*size)
                ));
                reclaimed += size;
            }
            text.push('\n');
        }
    }
    let report = if args.build_cache {
        let cache = store
            .prune_build_cache()
            .context("deleting the build cache")?;
        text.push_str(&cache_text(&cache));
        reclaimed += cache.entry_bytes;
        cache.store
    } else {
        store.prune().context("pruning the image store")?
    };
    if !report.blobs.is_empty() {
        text.push_str("Deleted blobs:\n");
        for (blob, _) in &report.blobs {
            text.push_str(&format!("deleted: {blob}\n"));
        }
        text.push('\n');
    }
    reclaimed += report.reclaimed;
    text.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(reclaimed)
    ));
    super::format::emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The build cache part of the report: the entries deleted, as `docker builder prune` lists
/// its cache objects.
fn cache_text(cache: &rfs_fs::store::BuildCachePruneReport) -> String {
    let mut text = String::new();
    if !cache.entries.is_empty() {
        text.push_str("Deleted build cache objects:\n");
        for key in &cache.entries {
            text.push_str(key);
            text.push('\n');
        }
        text.push('\n');
    }
    text
}

/// Runs `rfs builder prune`: the build cache, then the store's prune; prints the entries and
/// blobs deleted and the space reclaimed.
pub(crate) fn builder_prune(root: Option<PathBuf>) -> Result<ExitCode> {
    run(
        root,
        &PruneArgs {
            mounts: false,
            build_cache: true,
        },
    )
}
