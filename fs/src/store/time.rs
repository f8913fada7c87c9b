//! RFC 3339 timestamps, as image configs write them (`2026-11-22T23:33:30.592857023Z`).
//!
//! Only what the store needs: parse a config's `created` into seconds and nanoseconds since the
//! epoch, and print a time the way Go's `time.RFC3339Nano` does (UTC, `Z`, trailing zeros of
//! the fraction dropped), which is how Docker and the OCI tools write `created`. The calendar
//! arithmetic is the proleptic Gregorian one, for any year from 0 to 9999.

/// A point in time: seconds since 1970-01-01T00:00:00Z and nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    /// Seconds since the epoch (negative before 1970).
    pub secs: i64,
    /// Nanoseconds, 0 to 999 999 999.
    pub nanos: u32,
}

impl Timestamp {
    /// Now, from the system clock.
    pub fn now() -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanos: since.subsec_nanos(),
        }
    }

    /// `SOURCE_DATE_EPOCH` (reproducible builds) when set to a number of seconds, else now.
    pub fn now_or_source_date_epoch() -> Timestamp {
        std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map_or_else(Timestamp::now, |secs| Timestamp { secs, nanos: 0 })
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `t` and `z` are accepted too.
    pub fn parse(text: &str) -> Option<Timestamp> {
        let b = text.as_bytes();
        if b.len() < 20 {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = text.get(range)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
            return None;
        }
        // A leap second (60) is folded into the next second, as Go does when parsing.
        if second > 60 {
            return None;
        }
        let mut rest = &text[19..];
        let mut nanos = 0u32;
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            for (i, c) in fraction.bytes().take(digits).enumerate() {
                if i < 9 {
                    nanos = nanos * 10 + u32::from(c - b'0');
                }
            }
            for _ in digits..9 {
                nanos *= 10;
            }
            rest = &fraction[digits..];
        }
        let offset = match rest {
            "Z" | "z" => 0,
            _ => {
                let ob = rest.as_bytes();
                if ob.len() != 6 || ob[3] != b':' || !matches!(ob[0], b'+' | b'-') {
                    return None;
                }
                let h: i64 = rest.get(1..3)?.parse().ok()?;
                let m: i64 = rest.get(4..6)?.parse().ok()?;
                let sign = if ob[0] == b'-' { -1 } else { 1 };
                sign * (h * 3600 + m * 60)
            }
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
        Some(Timestamp { secs, nanos })
    }

    /// Go's `RFC3339Nano` in UTC: `2026-11-22T23:33:30.592857023Z`, the fraction without
    /// trailing zeros and omitted when zero.
    pub fn to_rfc3339_nano(self) -> String {
        let mut out = self.to_rfc3339();
        if self.nanos != 0 {
            out.pop();
            let fraction = format!("{:09}", self.nanos);
            out.push('.');
            out.push_str(fraction.trim_end_matches('0'));
            out.push('Z');
        }
        out
    }

    /// RFC 3339 in UTC with whole seconds: `2026-11-22T23:33:30Z`.
    pub fn to_rfc3339(self) -> String {
        let days = self.secs.div_euclid(86_400);
        let in_day = self.secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            in_day / 3600,
            in_day % 3600 / 60,
            in_day % 60
        )
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the "days from civil" algorithm: count
/// in 400-year eras that start on March 1st, so the leap day is the last day of a year).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_created_times() {
        let t = Timestamp::parse("2026-11-22T23:33:30.592857023Z").expect("valid");
        assert_eq!(t.nanos, 592_857_023);
        assert_eq!(t.to_rfc3339_nano(), "2026-11-22T23:33:30.592857023Z");
        assert_eq!(t.to_rfc3339(), "2026-11-22T23:33:30Z");
        let epoch = Timestamp::parse("1970-01-01T00:00:00Z").expect("valid");
        assert_eq!(epoch, Timestamp::default());
        // `date -d 2024-02-29T12:00:00Z +%s`
        let leap = Timestamp::parse("2024-02-29T12:00:00Z").expect("valid");
        assert_eq!(leap.secs, 1_709_208_000);
        assert_eq!(leap.to_rfc3339_nano(), "2024-02-29T12:00:00Z");
    }

    #[test]
    fn offsets_and_short_fractions() {
        let a = Timestamp::parse("2024-01-01T01:30:00.5+01:30").expect("valid");
        assert_eq!(a.to_rfc3339_nano(), "2024-01-01T00:00:00.5Z");
        let b = Timestamp::parse("1969-12-31T23:59:59Z").expect("valid");
        assert_eq!(b.secs, -1);
        assert_eq!(b.to_rfc3339(), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0100",
            "20x4-01-01T00:00:00Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
