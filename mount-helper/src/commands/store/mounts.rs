//! `rfs mounts`: the writable layers that `rfs mount` made under the root directory (one per
//! mount without `--upper`), newest first, as a table in the style of `docker ps` (ID, SOURCE,
//! MOUNTPOINT, STATUS, SIZE, CREATED) or one JSON object per line. A layer of an older rfs,
//! which kept no record, shows `-` for what it does not know.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use rfs_fs::store::MountLayerInfo;

use super::format::{ago, emit, human_size, table};
use crate::cli::{MountsArgs, OutputFormat};

/// Runs `rfs mounts`.
pub(crate) fn run(root: Option<PathBuf>, args: &MountsArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let layers = store.mount_layers()?;
    let mut text = String::new();
    if args.format == OutputFormat::Json {
        for layer in &layers {
            let line = serde_json::json!({
                "ID": layer.id,
                "Source": source(layer),
                "Mountpoint": mountpoint(layer),
                "Status": status(layer),
                "Size": human_size(layer.size()),
                "CreatedAt": layer.created().map(|t| t.to_rfc3339()).unwrap_or_default(),
                "CreatedSince": ago(layer.created()),
                "Upper": layer.upper(),
                "Pid": layer.pid(),
            });
            text.push_str(&format!("{line}\n"));
        }
        emit(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        ["ID", "SOURCE", "MOUNTPOINT", "STATUS", "SIZE", "CREATED"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for layer in &layers {
        rows.push(vec![
            layer.id.clone(),
            source(layer),
            mountpoint(layer),
            status(layer).to_owned(),
            human_size(layer.size()),
            ago(layer.created()),
        ]);
    }
    emit(&table(&rows))?;
    Ok(ExitCode::SUCCESS)
}

fn source(layer: &MountLayerInfo) -> String {
    layer
        .record
        .as_ref()
        .map_or_else(|| "-".to_owned(), |r| r.source.clone())
}

fn mountpoint(layer: &MountLayerInfo) -> String {
    layer
        .record
        .as_ref()
        .map_or_else(|| "-".to_owned(), |r| r.mountpoint.display().to_string())
}

/// `mounted` while a running rfs serves the layer, else `not mounted`.
fn status(layer: &MountLayerInfo) -> &'static str {
    if layer.in_use {
        "mounted"
    } else {
        "not mounted"
    }
}
