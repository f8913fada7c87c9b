//! Progress display for the long steps of the store and of opening images (hashing,
//! decompressing, copying, indexing, writing a layer), on a terminal only: one line per
//! step on stderr, redrawn in place and ended when the step ends. Silent when stderr is not
//! a TTY (CI logs, pipes), so scripts see only the command's own output.
//! [`TransferDisplay`] draws the parallel layer transfers of `rfs pull` and `rfs push`.
//!
//! The library reports `(what, done, total)` in bytes, with a total of 0 for a step whose
//! size is not known in advance (a stream, a layer being written).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Steps of a known size below this finish too soon to be worth a line (configs,
/// manifests, small layers).
const SMALLEST_SHOWN: u64 = 1 << 20;

/// How often a line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);

/// A progress display; pass [`ProgressDisplay::update`] to library calls that report progress.
pub(crate) struct ProgressDisplay {
    enabled: bool,
    line: Mutex<Line>,
}

/// The step on screen.
#[derive(Default)]
struct Line {
    what: String,
    /// Drawn and not yet ended with a newline.
    open: bool,
    /// The step reported its end (later reports of it are repeats).
    ended: bool,
    drawn_at: Option<Instant>,
}

impl ProgressDisplay {
    /// A progress display that draws only if stderr is a terminal.
    pub(crate) fn new() -> Self {
        ProgressDisplay {
            enabled: std::io::stderr().is_terminal(),
            line: Mutex::new(Line::default()),
        }
    }

    /// Reports `done` of `total` bytes (0: unknown) of the step `what`.
    pub(crate) fn update(&self, what: &str, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let mut line = self
            .line
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut err = std::io::stderr().lock();
        if line.what != what {
            if line.open {
                let _ = writeln!(err);
            }
            *line = Line {
                what: what.to_owned(),
                ..Line::default()
            };
        }
        let ended = total > 0 && done >= total;
        if line.ended || (total > 0 && total < SMALLEST_SHOWN) {
            return;
        }
        let now = Instant::now();
        if !ended && line.drawn_at.is_some_and(|t| now - t < REDRAW) {
            return;
        }
        let pct = (done.min(total) * 100).checked_div(total);
        let text = if let Some(pct) = pct {
            format!("{what}: {pct:3}% ({} / {} MiB)", done >> 20, total >> 20)
        } else if done == 0 {
            format!("{what} ...")
        } else {
            format!("{what}: {} MiB", done >> 20)
        };
        let _ = write!(err, "\r\x1b[K{text}");
        if ended {
            let _ = writeln!(err);
        }
        line.drawn_at = Some(now);
        line.open = !ended;
        line.ended = ended;
    }
}

impl Drop for ProgressDisplay {
    /// Ends a line left open (a step of unknown size that reported no end, or an error),
    /// so what follows starts on a line of its own.
    fn drop(&mut self) {
        let line = self
            .line
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.enabled && line.open {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// Progress of transfers that run in parallel (`rfs pull`, `rfs push`): on a terminal, one
/// bar per layer, redrawn in place as a block; otherwise (or with `-q`), one line per layer
/// when it is done, so logs show what was transferred.
pub(crate) struct TransferDisplay {
    bars: bool,
    state: Mutex<Transfers>,
}

#[derive(Default)]
struct Transfers {
    /// (what, done, total, finished), in the order they started.
    rows: Vec<(String, u64, u64, bool)>,
    /// Rows on screen (the block to move up over).
    drawn: usize,
    drawn_at: Option<Instant>,
}

impl TransferDisplay {
    /// Bars on a terminal unless `lines` asks for one line per layer.
    pub(crate) fn new(lines: bool) -> Self {
        TransferDisplay {
            bars: !lines && std::io::stderr().is_terminal(),
            state: Mutex::new(Transfers::default()),
        }
    }

    /// Reports `done` of `total` bytes of the transfer `what`.
    pub(crate) fn update(&self, what: &str, done: u64, total: u64) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let finished = total > 0 && done >= total;
        let row = match state.rows.iter().position(|r| r.0 == what) {
            Some(i) => i,
            None => {
                state.rows.push((what.to_owned(), 0, total, false));
                state.rows.len() - 1
            }
        };
        let was_finished = state.rows[row].3;
        state.rows[row] = (what.to_owned(), done, total, finished || was_finished);
        let mut err = std::io::stderr().lock();
        if !self.bars {
            if finished && !was_finished {
                let _ = writeln!(err, "{what}: done ({})", human(total));
            }
            return;
        }
        let now = Instant::now();
        if !finished && state.drawn_at.is_some_and(|t| now - t < REDRAW) {
            return;
        }
        if state.drawn > 0 {
            let _ = write!(err, "\x1b[{}A", state.drawn);
        }
        for (what, done, total, finished) in &state.rows {
            let text = if *finished {
                format!("{what}: done ({})", human(*total))
            } else if *total > 0 {
                let width = 30;
                let filled = (done.min(total) * width / total) as usize;
                format!(
                    "{what}: [{}{}] {} / {}",
                    "=".repeat(filled),
                    " ".repeat(width as usize - filled),
                    human(*done),
                    human(*total)
                )
            } else {
                format!("{what}: {}", human(*done))
            };
            let _ = writeln!(err, "\r\x1b[K{text}");
        }
        state.drawn = state.rows.len();
        state.drawn_at = Some(now);
    }
}

/// Bytes for people: B, KiB, MiB, GiB with one decimal.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
