//! `rfs diff CONTAINER|UPPERDIR`: the files a container's writable layer added (`A`), changed
//! (`C`) or deleted (`D`) compared with its image, one per line, as `docker diff` prints them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::DiffArgs;

/// Runs `rfs diff`.
pub(crate) fn run(root: Option<PathBuf>, args: &DiffArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let target = Path::new(&args.target);
    let (tree, upper) = if target.is_dir() {
        let image = args.image.as_deref().with_context(|| {
            format!(
                "rfs diff {}: an upper directory needs --image IMAGE, the image it was written over",
                args.target
            )
        })?;
        (
            super::lower_tree(&store, image, args.platform.as_deref())?,
            target.to_path_buf(),
        )
    } else {
        let container = super::Container::find(store.root(), &args.target)?
            .with_context(|| format!("no such container or directory: {}", args.target))?;
        let tree = match &args.image {
            Some(image) => super::lower_tree(&store, image, args.platform.as_deref())?,
            None => {
                let image = container.image(&store)?;
                store.lower_tree(&image)?
            }
        };
        (tree, container.upper())
    };
    let changes = rfs_fs::store::diff(&tree, &upper)
        .with_context(|| format!("comparing {} with its image", upper.display()))?;
    let mut out = String::new();
    for change in changes {
        out.push_str(&change.to_string());
        out.push('\n');
    }
    super::format::emit(&out)?;
    Ok(ExitCode::SUCCESS)
}
