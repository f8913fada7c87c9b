//! `rfs history IMAGE`: what `docker history` prints: IMAGE (`<missing>` for steps of images
//! the store does not hold), CREATED, CREATED BY, SIZE, COMMENT, newest first.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::format::{ago, ellipsis, emit, human_size, short_id, table};
use crate::cli::{HistoryArgs, OutputFormat};

/// Docker cuts CREATED BY to this many characters unless `--no-trunc`.
const CREATED_BY_WIDTH: usize = 45;

/// Runs `rfs history`.
pub(crate) fn run(root: Option<PathBuf>, args: &HistoryArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let image = store.find(&args.image)?;
    let rows = store
        .history(&image)
        .with_context(|| format!("reading the history of {}", args.image))?;
    let id = |row: &rfs_fs::store::HistoryRow| match &row.id {
        Some(d) if args.no_trunc => d.to_string(),
        Some(d) => short_id(d),
        None => "<missing>".to_owned(),
    };
    if args.quiet {
        let ids: String = rows.iter().map(|row| id(row) + "\n").collect();
        emit(&ids)?;
        return Ok(ExitCode::SUCCESS);
    }
    let created_by = |row: &rfs_fs::store::HistoryRow| {
        let text = row.created_by.replace('\t', " ");
        if args.no_trunc {
            text
        } else {
            ellipsis(&text, CREATED_BY_WIDTH)
        }
    };
    let created = |row: &rfs_fs::store::HistoryRow| {
        if args.human {
            ago(row.created)
        } else {
            row.created.map(|t| t.to_rfc3339()).unwrap_or_default()
        }
    };
    let size = |row: &rfs_fs::store::HistoryRow| {
        if args.human {
            human_size(row.size)
        } else {
            row.size.to_string()
        }
    };
    if args.format == OutputFormat::Json {
        let mut lines = String::new();
        for row in &rows {
            let line = serde_json::json!({
                "Comment": row.comment,
                "CreatedAt": row.created.map(|t| t.to_rfc3339()).unwrap_or_default(),
                "CreatedBy": created_by(row),
                "CreatedSince": ago(row.created),
                "ID": id(row),
                "Size": size(row),
            });
            lines.push_str(&format!("{line}\n"));
        }
        emit(&lines)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut lines = vec![
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for row in &rows {
        lines.push(vec![
            id(row),
            created(row),
            created_by(row),
            size(row),
            row.comment.clone(),
        ]);
    }
    emit(&table(&lines))?;
    Ok(ExitCode::SUCCESS)
}
