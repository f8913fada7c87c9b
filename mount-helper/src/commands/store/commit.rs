//! `rfs commit CONTAINER [NAME[:TAG]]` (or `--upper DIR --image IMAGE [NAME[:TAG]]`): a new
//! image made of the image plus the writable layer, as one more layer.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use rfs_fs::store::CommitOptions;

use crate::cli::CommitArgs;

/// Runs `rfs commit`; prints the new image's ID.
pub(crate) fn run(root: Option<PathBuf>, args: &CommitArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    // The positionals were checked against --upper when the command line was parsed.
    let (key, reference) = args.positionals().map_err(anyhow::Error::msg)?;
    // What a container adds to a bare upper: its command, its ID, its init layer and who its
    // root is.
    let (base, upper, opts) = match (&args.upper, key) {
        (Some(upper), _) => {
            let Some(image) = &args.image else {
                bail!("rfs commit --upper DIR needs --image IMAGE, the image it was written over");
            };
            let base = super::image_in_store(&store, image, args.platform.as_deref())?;
            (base, upper.clone(), CommitOptions::default())
        }
        (None, None) => bail!("the CONTAINER is missing"),
        (None, Some(key)) => {
            let c = super::Container::find(store.root(), key)?
                .with_context(|| format!("no such container: {key}"))?;
            if c.state.is_running() {
                eprintln!(
                    "rfs: warning: container {} is running; files it changes meanwhile may be \
                     committed half-written",
                    c.state.name
                );
            }
            let base = match &args.image {
                Some(image) => super::image_in_store(&store, image, args.platform.as_deref())?,
                None => c.image(&store)?,
            };
            let opts = CommitOptions {
                created_by: Some(c.state.command.join(" ")),
                container: Some(c.state.id.clone()),
                // The mountpoints rfs made for the container are not part of its layer.
                init_layer: c.init_layer()?,
                upper_owners: c.upper_owners()?,
                ..CommitOptions::default()
            };
            (base, c.upper(), opts)
        }
    };
    let reference = reference.map(super::reference).transpose()?;
    let committed = super::with_progress(|report| {
        let opts = CommitOptions {
            reference,
            message: args.message.clone(),
            author: args.author.clone(),
            changes: args.change.clone(),
            progress: Some(report),
            ..opts
        };
        store.commit(&base, &upper, &opts)
    })
    .with_context(|| format!("committing {}", upper.display()))?;
    super::format::emit(&format!("{}\n", committed.id))?;
    Ok(ExitCode::SUCCESS)
}
