//! How Docker prints sizes, ages, IDs and tables, so `rfs images` and `rfs history` read the
//! same: sizes in decimal units with three significant digits (`7.11MB`, `38B`, `0B`), ages
//! rounded down to the largest unit (`2 hours ago`, `56 years ago`), IDs cut to 12 hex digits,
//! columns separated by at least three spaces and at least ten wide.

/// Writes `text` to stdout; a closed pipe (`rfs images | head -1`) is not an error.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `7.11MB`: three significant digits, decimal units (as Docker's `HumanSizeWithPrecision`).
pub(crate) fn human_size(size: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{}{}", three_significant(value), UNITS[unit])
}

/// A number with three significant digits, printed like C's (and Go's) `%.3g`: trailing
/// zeros dropped, and the exponent form once the exponent reaches 3 (`999.9` → `1e+03`).
fn three_significant(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    // `{:.2e}` rounds the exact value to three significant digits, as `%g` does.
    let scientific = format!("{value:.2e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return scientific;
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if !(-4..3).contains(&exponent) {
        let mantissa = trim_fraction(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    let text = if exponent >= 0 {
        let point = exponent as usize + 1;
        format!("{}.{}", &digits[..point], &digits[point..])
    } else {
        format!("0.{}{digits}", "0".repeat((-exponent - 1) as usize))
    };
    trim_fraction(&text).to_owned()
}

fn trim_fraction(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// How long ago, as Docker's `HumanDuration` words it (without the trailing "ago").
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < 1 {
        return "Less than a second".into();
    }
    if seconds == 1 {
        return "1 second".into();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (seconds + 1800) / 3600;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", seconds / 3600 / 24 / 365)
}

/// `2 hours ago`, from a creation time; `N/A` when unknown.
pub(crate) fn ago(created: Option<rfs_fs::store::Timestamp>) -> String {
    match created {
        Some(t) => {
            let now = rfs_fs::store::Timestamp::now().secs;
            format!("{} ago", human_duration(now - t.secs))
        }
        None => "N/A".into(),
    }
}

/// The first 12 hex digits of a digest, as Docker shows IDs.
pub(crate) fn short_id(digest: &rfs_fs::digest::Digest) -> String {
    digest.hex()[..12].to_owned()
}

/// `text` cut to `max` characters, the last one replaced by `…` when cut.
pub(crate) fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Lays out rows as Docker's tables: each column but the last padded to its widest cell plus
/// three spaces, and at least ten characters.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count() + 3).max(10);
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_prints_them() {
        for (size, want) in [
            (0, "0B"),
            (3, "3B"),
            (38, "38B"),
            (999, "999B"),
            (1000, "1kB"),
            (1234, "1.23kB"),
            (7_110_729, "7.11MB"),
            (120_000_761, "120MB"),
            (999_999, "1e+03kB"),
            (12_345_678_901, "12.3GB"),
            (5_000_000, "5MB"),
        ] {
            assert_eq!(human_size(size), want, "{size}");
        }
    }

    #[test]
    fn durations_as_docker_words_them() {
        for (secs, want) in [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (150, "2 minutes"),
            (3599, "59 minutes"),
            (3600, "About an hour"),
            (5400, "2 hours"),
            (47 * 3600, "47 hours"),
            (3 * 86400, "3 days"),
            (20 * 86400, "2 weeks"),
            (90 * 86400, "3 months"),
            (56 * 365 * 86400 + 86400 * 14, "56 years"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn tables_pad_columns() {
        let rows = vec![
            vec!["A".to_owned(), "LONG HEADER".to_owned(), "X".to_owned()],
            vec!["value".to_owned(), "b".to_owned(), "last".to_owned()],
        ];
        assert_eq!(
            table(&rows),
            "A         LONG HEADER   X\nvalue     b             last\n"
        );
        assert_eq!(ellipsis("abcdef", 4), "abc…");
        assert_eq!(ellipsis("abc", 4), "abc");
    }
}
