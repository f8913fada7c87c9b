//! `rfs push IMAGE [REF]`: an image of the store to a registry.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use rfs_fs::registry::{Client, ImageRef};
use rfs_fs::store::{LayerCompression, PushOptions};

use crate::cli::{PushArgs, PushCompression};
use crate::progress::TransferDisplay;

/// Runs `rfs push`: progress on stderr, the manifest digest on stdout.
pub(crate) fn run(root: Option<PathBuf>, args: &PushArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let destination = args.destination.as_deref().unwrap_or(&args.image);
    let target = ImageRef::parse(destination)?;
    let opts = super::pull::client_options(&args.registry)?;
    let client = Client::connect(&target.registry, Some(&target.repository), &opts)
        .with_context(|| format!("pushing to {target}"))?;
    let display = TransferDisplay::new(args.quiet);
    let report = |what: &str, done: u64, total: u64| display.update(what, done, total);
    let compression = match args.compression {
        PushCompression::Gzip => LayerCompression::Gzip,
        PushCompression::Zstd => LayerCompression::Zstd,
        PushCompression::None => LayerCompression::None,
    };
    let result = store
        .push(
            &client,
            &args.image,
            &target,
            &PushOptions {
                compression,
                progress: Some(&report),
            },
        )
        .with_context(|| format!("pushing {} to {target}", args.image))?;
    if !args.quiet {
        eprintln!(
            "{} blobs uploaded, {} already there, {} mounted{}",
            result.uploaded,
            result.skipped,
            result.mounted,
            if result.kept_manifest {
                "; the pulled manifest was kept"
            } else {
                ""
            }
        );
    }
    super::format::emit(&format!("{}\n", result.digest))?;
    Ok(ExitCode::SUCCESS)
}
