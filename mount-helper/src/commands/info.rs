//! `rfs info`: what this rfs is and what it works with, as `podman info` reports it: the
//! host, the kernel features rfs uses (and, if not, why), the store's root and what it
//! holds (images, layers, containers, mounts, with counts and sizes), and rfs's version.
//!
//! The report is one JSON value; `--format json` prints it as it is, the default text
//! prints the same keys as an indented list, with sizes in Docker's units.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::store::format::{emit, human_size};
use crate::cli::{InfoArgs, InfoFormat};
use crate::host;

/// Runs `rfs info`.
pub(crate) fn run(root: Option<std::path::PathBuf>, args: &InfoArgs) -> Result<ExitCode> {
    let root = super::root_dir(root)?;
    let report = json!({
        "host": host_section(),
        "features": features(),
        "store": store_section(&root)?,
        "version": {"version": env!("CARGO_PKG_VERSION")},
    });
    let text = match args.format {
        InfoFormat::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
        InfoFormat::Text => {
            let mut text = String::new();
            render(&report, 0, &mut text);
            text
        }
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn host_section() -> Value {
    let uid = nix::unistd::geteuid();
    json!({
        "arch": std::env::consts::ARCH,
        "os": std::env::consts::OS,
        "kernel": host::kernel_release(),
        "uid": uid.as_raw(),
        "rootless": !rfs_fs::sys::is_initial_root(),
    })
}

fn features() -> Value {
    let feature = |f: host::Feature| json!({"available": f.available, "detail": f.detail});
    let device = host::FuseDevice::probe();
    json!({
        "fuseDevice": {"available": device.is_usable(), "detail": device.detail()},
        "fusePassthrough": feature(host::passthrough()),
        "fuseIoUring": feature(host::fuse_io_uring()),
        "userNamespaces": feature(host::user_namespaces()),
        "kernelOverlay": feature(host::kernel_overlay()),
    })
}

/// Counts and sizes of what the store under `root` holds. Sizes are apparent file sizes,
/// each file counted once however many names it has; images share layers, so their size is
/// that of the blobs they use together, not the sum of `rfs images`' column.
fn store_section(root: &Path) -> Result<Value> {
    let store = rfs_fs::store::Store::open(root)
        .with_context(|| format!("opening the image store in {}", root.display()))?;
    let blob_size =
        |d: &rfs_fs::digest::Digest| std::fs::metadata(store.blob_path(d)).map_or(0, |m| m.len());
    let mut image_blobs = HashSet::new();
    let mut layers = HashSet::new();
    let records = store.images().context("reading the store's images")?;
    for record in &records {
        // An image whose config cannot be read still counts, with what its record names.
        image_blobs.insert(record.id);
        image_blobs.insert(record.manifest);
        if let Ok(image) = store.image(record) {
            layers.extend(image.diff_ids.iter().copied());
            image_blobs.extend(rfs_fs::store::Store::blobs_of(&image));
        }
    }
    let containers = rfs_runner::state::ContainerStore::new(root)
        .list()
        .context("reading the containers")?;
    let running = containers.iter().filter(|c| c.is_running()).count();
    let (blobs, blobs_size) = usage(&store.blobs_dir());
    let (_, containers_size) = usage(&root.join("containers"));
    let writable_layers = std::fs::read_dir(root.join("mounts")).map_or(0, Iterator::count);
    let (_, mounts_size) = usage(&root.join("mounts"));
    let (_, total) = usage(root);
    Ok(json!({
        "root": root.display().to_string(),
        "images": {
            "number": records.len(),
            "size": image_blobs.iter().map(blob_size).sum::<u64>(),
        },
        "layers": {
            "number": layers.len(),
            "size": layers.iter().map(blob_size).sum::<u64>(),
        },
        "blobs": {"number": blobs, "size": blobs_size},
        "containers": {
            "number": containers.len(),
            "running": running,
            "size": containers_size,
        },
        "mounts": {
            "active": active_mounts(),
            "writableLayers": writable_layers,
            "size": mounts_size,
        },
        "size": total,
    }))
}

/// rfs's FUSE mounts in this mount namespace, whatever root they came from: type `fuse`
/// with a source `rfs:…` (what `rfs mount` and `rfs run` name theirs), or type `fuse.rfs`
/// (`mount -t fuse.rfs`).
fn active_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let Some((_, rest)) = l.split_once(" - ") else {
                return false;
            };
            let mut fields = rest.split(' ');
            match (fields.next(), fields.next()) {
                (Some("fuse.rfs"), _) => true,
                (Some("fuse"), Some(source)) => source.starts_with("rfs:"),
                _ => false,
            }
        })
        .count()
}

/// The number of files under `dir` and their total apparent size, each inode once. What
/// cannot be read (another user's container, a directory removed meanwhile) is left out.
fn usage(dir: &Path) -> (u64, u64) {
    let mut seen = HashSet::new();
    let mut files = 0;
    let mut bytes = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if seen.insert((meta.dev(), meta.ino())) {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
}

/// Writes `value` as an indented `key: value` list (podman's YAML-like layout). Sizes
/// (keys `size`) are shown in Docker's units.
fn render(value: &Value, depth: usize, out: &mut String) {
    let Value::Object(map) = value else {
        return;
    };
    let indent = "  ".repeat(depth);
    for (key, v) in map {
        match v {
            Value::Object(_) => {
                out.push_str(&format!("{indent}{key}:\n"));
                render(v, depth + 1, out);
            }
            Value::Number(n) if key == "size" => {
                let bytes = n.as_u64().unwrap_or(0);
                out.push_str(&format!("{indent}{key}: {}\n", human_size(bytes)));
            }
            Value::String(s) => out.push_str(&format!("{indent}{key}: {s}\n")),
            other => out.push_str(&format!("{indent}{key}: {other}\n")),
        }
    }
}
