//! `rfs prune`: deletes every blob and cache nothing refers to (never one an image, a
//! container or a running mount uses).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::format::human_size;

/// Runs `rfs prune`; prints the deleted blobs and the space reclaimed.
pub(crate) fn run(root: Option<PathBuf>) -> Result<ExitCode> {
    let store = super::open(root)?;
    let report = store.prune().context("pruning the image store")?;
    let mut text = String::new();
    if !report.blobs.is_empty() {
        text.push_str("Deleted blobs:\n");
        for (blob, _) in &report.blobs {
            text.push_str(&format!("deleted: {blob}\n"));
        }
        text.push('\n');
    }
    text.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(report.reclaimed)
    ));
    super::format::emit(&text)?;
    Ok(ExitCode::SUCCESS)
}
