//! `rfs logs [-f] [--tail N] [-t] CONTAINER`: what a detached container wrote, from its log
//! (`crate::container_log`): stdout records to stdout, stderr records to stderr, as docker
//! and podman print them. `-f` keeps printing until the container has ended.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rfs_runner::state::{ContainerStore, Status};

use crate::cli::LogsArgs;
use crate::container_log::{self, LOG_FILE, Record, Stream};

/// How long a container's process may be gone without its exit recorded before `-f` stops.
const GRACE: Duration = Duration::from_secs(2);

/// Prints one record; a part (`P`) is not followed by a newline.
fn print(record: &Record, timestamps: bool) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(record.text.len() + 40);
    if timestamps {
        line.extend_from_slice(record.time.as_bytes());
        line.push(b' ');
    }
    line.extend_from_slice(&record.text);
    if record.full {
        line.push(b'\n');
    }
    match record.stream {
        Stream::Stdout => std::io::stdout().lock().write_all(&line),
        Stream::Stderr => std::io::stderr().lock().write_all(&line),
    }
}

/// Runs `rfs logs`.
pub(crate) fn run(root: Option<PathBuf>, args: &LogsArgs) -> Result<ExitCode> {
    let store = ContainerStore::new(&super::root_dir(root)?);
    let c = store
        .find(&args.container)?
        .with_context(|| format!("no such container: {}", args.container))?;
    let dir = store.dir(&c.id);
    let log_path = dir.join(LOG_FILE);
    if !log_path.exists() {
        bail!(
            "container {} has no log: only containers started with `rfs run -d` keep one",
            c.name
        );
    }
    let records =
        container_log::read_all(&dir).with_context(|| format!("reading {}", log_path.display()))?;
    // The line count of --tail counts whole lines: a part belongs to the line it starts.
    let skip = match args.tail {
        Some(n) => {
            let mut lines = 0;
            let mut at = records.len();
            while at > 0 {
                if records[at - 1].full {
                    if lines == n {
                        break;
                    }
                    lines += 1;
                }
                at -= 1;
            }
            at
        }
        None => 0,
    };
    for r in &records[skip..] {
        if print(r, args.timestamps).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow the current file from where it ends now; a rotation starts a new one.
    let mut offset = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    let mut pending: Vec<u8> = Vec::new();
    let mut gone_since: Option<std::time::Instant> = None;
    loop {
        // Ended: the supervisor recorded the exit (after the last output reached the log), or
        // the container's process has been gone a while without a record (a killed
        // supervisor).
        let state = store.load(&c.id).ok();
        let ended = match &state {
            Some(s) if s.status == Status::Running && !s.is_running() => {
                gone_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed()
                    > GRACE
            }
            Some(s) => s.status != Status::Running,
            None => true,
        };
        let mut file = std::fs::File::open(&log_path)
            .with_context(|| format!("reading {}", log_path.display()))?;
        let len = file.metadata().map_or(0, |m| m.len());
        if len < offset {
            offset = 0;
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh)?;
        offset += fresh.len() as u64;
        pending.extend_from_slice(&fresh);
        let complete = pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        for line in pending[..complete].split(|&b| b == b'\n') {
            if let Some(r) = container_log::parse(line) {
                if print(&r, args.timestamps).is_err() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        pending.drain(..complete);
        // Read once more after the end: what the container wrote last is in the file then.
        if ended && fresh.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
