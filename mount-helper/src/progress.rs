//! Progress display for hashing and decompressing, on a terminal only: one line on stderr,
//! redrawn in place. Silent when stderr is not a TTY (CI logs, pipes).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A progress line; pass [`Progress::callback`] to library calls that report progress.
pub(crate) struct Progress {
    enabled: bool,
    last: Mutex<Option<Instant>>,
}

impl Progress {
    /// A progress display that draws only if stderr is a terminal.
    pub(crate) fn new() -> Self {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            last: Mutex::new(None),
        }
    }

    /// Reports `done` of `total` bytes of `what` (redrawn at most 10 times a second).
    pub(crate) fn update(&self, what: &str, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if done < total && last.is_some_and(|t| now - t < Duration::from_millis(100)) {
            return;
        }
        *last = Some(now);
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K{what}: {pct:3}% ({} / {} MiB)",
            done >> 20,
            total >> 20
        );
        if done >= total {
            let _ = writeln!(err);
        }
    }
}
