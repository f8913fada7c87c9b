//! `rfs export [-o FILE] CONTAINER`: the container's filesystem as one flat tar, as
//! `docker export` and `podman export` write it: the merged view of its image, its init layer
//! and its writable layer, read from the layers themselves (no mount, nothing started).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::ExportArgs;

/// Runs `rfs export`.
pub(crate) fn run(root: Option<PathBuf>, args: &ExportArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let c = super::Container::find(store.root(), &args.container)?
        .with_context(|| format!("no such container: {}", args.container))?;
    if c.state.is_running() {
        eprintln!(
            "rfs: warning: container {} is running; files it changes meanwhile may be \
             exported half-written",
            c.state.name
        );
    }
    let lower = c.lower_tree(&store)?;
    let upper = c.upper();
    let owners = c.upper_owners()?;
    super::output::write_archive(args.output.as_deref(), |out, _| {
        rfs_fs::store::write_merged_tree(&lower, &upper, owners, out)
            .with_context(|| format!("container {}: {}", c.state.name, upper.display()))?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
