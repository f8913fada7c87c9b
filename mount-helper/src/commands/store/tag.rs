//! `rfs tag SOURCE TARGET`: another name for an image of the store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::TagArgs;

/// Runs `rfs tag`.
pub(crate) fn run(root: Option<PathBuf>, args: &TagArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let target = super::reference(&args.target)?;
    let image = store.resolve(&args.source)?;
    store
        .tag(&image, &target)
        .with_context(|| format!("tagging {} as {target}", args.source))?;
    Ok(ExitCode::SUCCESS)
}
