//! `rfs ps [-a]`: the containers of the root directory as a table (CONTAINER ID, NAME, IMAGE,
//! COMMAND, STATUS, CREATED, PORTS), running ones only unless `-a`. A container whose process
//! died without its exit recorded (its supervisor was killed, which takes the container with
//! it) shows as `Exited (?)`: ended, with no status to tell.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use rfs_runner::state::{ContainerState, ContainerStore, Status, now};

use crate::cli::PsArgs;

/// Runs `rfs ps`.
pub(crate) fn run(root: Option<PathBuf>, args: &PsArgs) -> Result<ExitCode> {
    let root = super::root_dir(root)?;
    let containers = ContainerStore::new(&root).list()?;
    let mut rows = vec![[
        "CONTAINER ID".to_string(),
        "NAME".into(),
        "IMAGE".into(),
        "COMMAND".into(),
        "STATUS".into(),
        "CREATED".into(),
        "PORTS".into(),
    ]];
    let t = now();
    if args.format == crate::cli::OutputFormat::Json {
        // One object per line, with the same fields as the table (docker ps --format json).
        let mut out = std::io::stdout().lock();
        for c in containers.iter().rev() {
            let running = c.is_running();
            if !args.all && !running {
                continue;
            }
            let row = serde_json::json!({
                "ID": c.id,
                "Names": c.name,
                "Image": c.image,
                "Command": c.command.join(" "),
                "Status": status(c, running, t),
                "CreatedAt": c.created,
                "State": if running { "running" } else { "exited" },
                "Ports": c.ports.join(", "),
            });
            if writeln!(out, "{row}").is_err() {
                break;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    for c in containers.iter().rev() {
        let running = c.is_running();
        if !args.all && !running {
            continue;
        }
        rows.push([
            c.id.chars().take(12).collect(),
            c.name.clone(),
            c.image.clone(),
            shorten(&format!("\"{}\"", c.command.join(" ")), 30),
            status(c, running, t),
            format!("{} ago", human_duration(t.saturating_sub(c.created))),
            // Published ports count while the container runs (as docker shows them).
            if running {
                c.ports.join(", ")
            } else {
                String::new()
            },
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        // A closed pipe (`rfs ps | head`) is not an error.
        if writeln!(out, "{}", line.trim_end()).is_err() {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(c: &ContainerState, running: bool, t: u64) -> String {
    match (c.status, running) {
        (_, true) => format!("Up {}", human_duration(t.saturating_sub(c.created))),
        (Status::Created, _) => "Created".into(),
        (Status::Exited, _) => {
            let code = c.exit_code.map_or("?".into(), |c| c.to_string());
            let ago = c.finished.map_or(String::new(), |f| {
                format!(" {} ago", human_duration(t.saturating_sub(f)))
            });
            format!("Exited ({code}){ago}")
        }
        (Status::Running, false) => "Exited (?)".into(),
    }
}

/// `s` cut to `max` characters with an ellipsis.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// "5 seconds", "3 minutes", "2 hours", "4 days".
fn human_duration(secs: u64) -> String {
    let (n, unit) = match secs {
        0..60 => (secs, "second"),
        60..3600 => (secs / 60, "minute"),
        3600..86400 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_shortening() {
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(125), "2 minutes");
        assert_eq!(human_duration(7200), "2 hours");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
