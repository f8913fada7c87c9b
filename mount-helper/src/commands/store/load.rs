//! `rfs load -i FILE|DIR`: an image from a docker archive or an OCI layout into the store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::LoadArgs;

/// Runs `rfs load`; prints `Loaded image: NAME:TAG` per name (`Loaded image ID: …` if none).
pub(crate) fn run(root: Option<PathBuf>, args: &LoadArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let tags = args
        .tag
        .iter()
        .map(|t| super::reference(t))
        .collect::<Result<Vec<_>>>()?;
    // Library errors name the archive (and member) at fault already: no context added.
    let loaded = super::with_progress(|report| {
        let opts = rfs_fs::store::LoadOptions {
            platform: args.platform.as_deref(),
            tags,
            progress: Some(report),
        };
        store.load(&args.input, &opts)
    })?;
    if args.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = String::new();
    if loaded.tags.is_empty() {
        text = format!("Loaded image ID: {}\n", loaded.id);
    }
    for tag in &loaded.tags {
        text.push_str(&format!("Loaded image: {tag}\n"));
    }
    super::format::emit(&text)?;
    Ok(ExitCode::SUCCESS)
}
