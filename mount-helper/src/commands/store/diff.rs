//! `rfs diff CONTAINER|UPPERDIR`: the files a container's writable layer added (`A`), changed
//! (`C`) or deleted (`D`) compared with its image, one per line, as `docker diff` prints them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use rfs_fs::lower::LowerTree;
use rfs_fs::store::UpperOwners;

use crate::cli::DiffArgs;

/// Runs `rfs diff`.
pub(crate) fn run(root: Option<PathBuf>, args: &DiffArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let target = Path::new(&args.target);
    let (tree, upper, owners) = if target.is_dir() {
        let image = args.image.as_deref().with_context(|| {
            format!(
                "rfs diff {}: an upper directory needs --image IMAGE, the image it was written over",
                args.target
            )
        })?;
        (
            super::lower_tree(&store, image, args.platform.as_deref())?,
            target.to_path_buf(),
            UpperOwners::default(),
        )
    } else {
        let container = super::Container::find(store.root(), &args.target)?
            .with_context(|| format!("no such container or directory: {}", args.target))?;
        let mut layers = match &args.image {
            Some(image) => crate::commands::image_layers(
                store.root(),
                Path::new(image),
                args.platform.as_deref(),
            )?,
            None => store.layer_inputs(&container.image(&store)?)?,
        };
        // The mountpoints rfs made for the container are not its changes.
        layers.extend(container.init_layer()?);
        (
            LowerTree::build(layers)?,
            container.upper(),
            container.upper_owners()?,
        )
    };
    let changes = rfs_fs::store::diff(&tree, &upper, owners)
        .with_context(|| format!("comparing {} with its image", upper.display()))?;
    let mut out = String::new();
    for change in changes {
        out.push_str(&change.to_string());
        out.push('\n');
    }
    super::format::emit(&out)?;
    Ok(ExitCode::SUCCESS)
}
