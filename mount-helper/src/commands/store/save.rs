//! `rfs save -o FILE [--format docker|oci] IMAGE...`: images of the store as an archive that
//! `docker load`, `podman load`, skopeo and `rfs load` read.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use rfs_fs::store::{ArchiveFormat, Reference};

use crate::cli::{SaveArgs, SaveFormat};

/// Runs `rfs save`: to FILE (never half written) or to stdout (not a terminal).
pub(crate) fn run(root: Option<PathBuf>, args: &SaveArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let mut images = Vec::new();
    for text in &args.images {
        let image = store.find(text)?;
        // Saved by name: that name only (as docker save); by ID: all its names.
        let names: Vec<Reference> = match Reference::parse(text) {
            Ok(r) if image.tags.contains(&r) => vec![r],
            _ => image.tags.clone(),
        };
        images.push((image, names));
    }
    let format = match args.format {
        SaveFormat::Docker => ArchiveFormat::Docker,
        SaveFormat::Oci => ArchiveFormat::Oci,
    };
    super::output::write_archive(args.output.as_deref(), |out, to_file| {
        if to_file {
            super::with_progress(|report| store.save(&images, format, out, Some(report)))?;
        } else {
            store.save(&images, format, out, None)?;
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
