//! `rfs import ROOTFS.tar [NAME[:TAG]]`: a one-layer image from a flat rootfs tar, as
//! `docker import` makes it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::ImportArgs;

/// Runs `rfs import`; prints the new image's ID.
pub(crate) fn run(root: Option<PathBuf>, args: &ImportArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let reference = args
        .reference
        .as_deref()
        .map(super::reference)
        .transpose()?;
    let loaded = super::with_progress(|report| {
        let opts = rfs_fs::store::ImportOptions {
            reference,
            message: args.message.clone(),
            changes: args.change.clone(),
            platform: args.platform.as_deref(),
            progress: Some(report),
        };
        store.import(&args.source, &opts)
    })
    .with_context(|| format!("importing {}", args.source.display()))?;
    super::format::emit(&format!("{}\n", loaded.id))?;
    Ok(ExitCode::SUCCESS)
}
