//! Where an archive that a command writes goes: `-o FILE`, written beside FILE and renamed into
//! place once complete and synced (so FILE is never half written), or stdout when it is not a
//! terminal. `rfs save` and `rfs export` write through here.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Calls `write` with the destination of the archive: `output`, or stdout without one. The
/// second argument of `write` says whether the destination is a file (where progress on the
/// terminal does not mix with the archive).
///
/// # Errors
/// stdout is a terminal, FILE cannot be created, synced or renamed, or `write` fails (then
/// FILE is left as it was).
pub(crate) fn write_archive(
    output: Option<&Path>,
    write: impl FnOnce(&mut dyn Write, bool) -> Result<()>,
) -> Result<()> {
    let Some(path) = output else {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            bail!("refusing to write an archive to a terminal; use -o FILE or a redirect");
        }
        let mut out = stdout.lock();
        write(&mut out, false)?;
        return out.flush().context("writing the archive to stdout");
    };
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
    let mut out = BufWriter::new(file);
    write(&mut out, true).with_context(|| format!("writing {}", path.display()))?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp.0, path))
        .with_context(|| format!("writing {}", path.display()))?;
    std::mem::forget(tmp);
    Ok(())
}

/// A temporary file removed on drop (unless forgotten once renamed into place).
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
