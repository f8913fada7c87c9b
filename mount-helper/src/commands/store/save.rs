//! `rfs save -o FILE [--format docker|oci] IMAGE...`: images of the store as an archive that
//! `docker load`, `podman load`, skopeo and `rfs load` read.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use rfs_fs::store::{ArchiveFormat, Reference};

use crate::cli::{SaveArgs, SaveFormat};

/// Runs `rfs save`. The archive is written to a temporary file beside FILE and renamed into
/// place, so FILE is never half written; without `-o` it goes to stdout (not a terminal).
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
    match &args.output {
        Some(path) => {
            let tmp = TempPath(path.with_file_name(format!(
                ".{}.tmp-{}",
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                std::process::id()
            )));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp.0)
                .with_context(|| format!("creating {}", tmp.0.display()))?;
            let writer = super::with_progress(|report| {
                store.save(&images, format, std::io::BufWriter::new(file), Some(report))
            })
            .with_context(|| format!("writing {}", path.display()))?;
            writer
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .and_then(|()| std::fs::rename(&tmp.0, path))
                .with_context(|| format!("writing {}", path.display()))?;
            std::mem::forget(tmp);
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write an archive to a terminal; use -o FILE or a redirect");
            }
            let mut out = store
                .save(&images, format, stdout.lock(), None)
                .context("writing the archive to stdout")?;
            out.flush().context("writing the archive to stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A temporary file removed on drop (unless forgotten once renamed into place).
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
