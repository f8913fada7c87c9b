//! `rfs images [REPOSITORY[:TAG]]`: the images of the store, newest first, one row per name
//! (`<none>` for an untagged image), with Docker's columns.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::format::{ago, emit, human_size, short_id, table};
use crate::cli::{ImagesArgs, OutputFormat};

/// Runs `rfs images`.
pub(crate) fn run(root: Option<PathBuf>, args: &ImagesArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let mut images = Vec::new();
    for record in store.images()? {
        match store.image(&record) {
            Ok(image) => images.push(image),
            Err(e) => eprintln!(
                "rfs: skipping image {}: {:#}",
                record.id,
                anyhow::Error::from(e)
            ),
        }
    }
    images.sort_by(|a, b| b.created().cmp(&a.created()).then(a.id.cmp(&b.id)));
    // (repository, tag, image) rows, filtered by the optional REPOSITORY[:TAG].
    let filter = args.reference.as_deref().map(|r| {
        let has_tag = r.rsplit('/').next().is_some_and(|last| last.contains(':'));
        (super::reference(r), has_tag)
    });
    let mut rows = Vec::new();
    for image in &images {
        let names: Vec<(String, String)> = if image.tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            image
                .tags
                .iter()
                .map(|t| (t.name.clone(), t.tag.clone()))
                .collect()
        };
        for (repo, tag) in names {
            if let Some((wanted, has_tag)) = &filter {
                let Ok(wanted) = wanted else { continue };
                if wanted.name != repo || (*has_tag && wanted.tag != tag) {
                    continue;
                }
            }
            rows.push((repo, tag, image));
        }
    }
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        let mut ids = String::new();
        for (_, _, image) in &rows {
            if seen.insert(image.id) {
                ids.push_str(&id_text(&image.id, args.no_trunc));
                ids.push('\n');
            }
        }
        emit(&ids)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.format == OutputFormat::Json {
        let mut lines = String::new();
        for (repo, tag, image) in &rows {
            let created_at = image.created().map(|t| {
                let iso = t.to_rfc3339();
                format!("{} {} +0000 UTC", &iso[..10], &iso[11..19])
            });
            let line = serde_json::json!({
                "Containers": "N/A",
                "CreatedAt": created_at.unwrap_or_default(),
                "CreatedSince": ago(image.created()),
                "Digest": "<none>",
                "ID": id_text(&image.id, args.no_trunc),
                "Repository": repo,
                "SharedSize": "N/A",
                "Size": human_size(image.size()),
                "Tag": tag,
                "UniqueSize": "N/A",
                "VirtualSize": human_size(image.size()),
            });
            lines.push_str(&format!("{line}\n"));
        }
        emit(&lines)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut lines = vec![
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for (repo, tag, image) in &rows {
        lines.push(vec![
            repo.clone(),
            tag.clone(),
            id_text(&image.id, args.no_trunc),
            ago(image.created()),
            human_size(image.size()),
        ]);
    }
    emit(&table(&lines))?;
    Ok(ExitCode::SUCCESS)
}

fn id_text(id: &rfs_fs::digest::Digest, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        short_id(id)
    }
}
