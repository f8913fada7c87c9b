//! `rfs rmi [-f] IMAGE...`: removes names and images, and the blobs no other image, container
//! or mount needs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::RmiArgs;

/// Runs `rfs rmi`; prints `Untagged: NAME:TAG` and `Deleted: sha256:…` lines as Docker does,
/// and fails if any argument could not be removed.
pub(crate) fn run(root: Option<PathBuf>, args: &RmiArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let mut failed = false;
    for image in &args.images {
        match store.remove(image, args.force) {
            Ok(removed) => {
                let mut text = String::new();
                for tag in &removed.untagged {
                    text.push_str(&format!("Untagged: {tag}\n"));
                }
                if let Some(id) = removed.deleted {
                    text.push_str(&format!("Deleted: {id}\n"));
                }
                for (blob, _) in &removed.blobs {
                    if Some(*blob) != removed.deleted {
                        text.push_str(&format!("Deleted: {blob}\n"));
                    }
                }
                super::format::emit(&text)?;
            }
            Err(e) => {
                eprintln!("rfs: removing {image}: {:#}", anyhow::Error::from(e));
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
