//! Cron expressions: the classic five fields (minute, hour, day of month, month, day of
//! week) and the `@daily`-style shorthands, evaluated in a time zone.
//!
//! Pure: parsing never panics and never reads the clock; [`Cron::next_after`] turns an
//! instant into the next instant the expression names, in the expression's zone. The
//! rules for the two awkward hours of daylight saving time are stated once, here and in
//! docs/automatons.md:
//!
//! - a local time that happens twice (the hour repeated when clocks go back) fires once,
//!   at its first occurrence;
//! - a local time that does not happen (the hour skipped when clocks go forward) fires at
//!   the same distance after the gap's start as it would have had (jiff's `compatible`
//!   reading: 02:30 on a night that jumps from 02:00 to 03:00 fires at 03:30), so a daily
//!   job never loses a day; two times that land on the same instant fire once.
//!
//! Day of month and day of week combine as in Vixie cron: when both are restricted (neither
//! is `*`), a day matching either is a match.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// The longest expression accepted (anything longer is not a cron expression).
pub const MAX_LEN: usize = 256;

/// How far ahead [`Cron::next_after`] searches: long enough for any expression that fires
/// at all (a 29 February that is a Monday comes back within 28 years).
const SEARCH_DAYS: u32 = 366 * 30;

/// A parsed cron expression. Each field is a bit set of the values it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    /// Bit d for day d (1-31).
    days: u32,
    /// Bit m for month m (1-12).
    months: u16,
    /// Bit w for weekday w (0 = Sunday .. 6 = Saturday).
    weekdays: u8,
    /// Whether the day-of-month field was `*` (then only the weekday restricts days).
    any_day: bool,
    /// Whether the day-of-week field was `*`.
    any_weekday: bool,
}

/// Why an expression was refused; its Display is the one line a person reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    /// Parses `minute hour day-of-month month day-of-week` (names like `MON-FRI` and
    /// `JAN` allowed, `*`, lists, ranges and `/step`s) or one of `@yearly`, `@annually`,
    /// `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`.
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        if expr.len() > MAX_LEN {
            return Err(CronError(format!(
                "a cron expression is at most {MAX_LEN} characters"
            )));
        }
        let expr = expr.trim();
        let expanded = match expr.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_owned(),
            "@monthly" => "0 0 1 * *".to_owned(),
            "@weekly" => "0 0 * * 0".to_owned(),
            "@daily" | "@midnight" => "0 0 * * *".to_owned(),
            "@hourly" => "0 * * * *".to_owned(),
            other if other.starts_with('@') => {
                return Err(CronError(format!(
                    "`{expr}` is not a cron shorthand (@yearly, @monthly, @weekly, @daily, @hourly)"
                )));
            }
            _ => expr.to_owned(),
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError(format!(
                "`{expr}` has {} fields; a cron expression has 5: minute hour day-of-month month day-of-week",
                fields.len()
            )));
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let days = field(fields[2], "day of month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTHS)?;
        // 7 is Sunday too, as in most crons.
        let mut weekdays = field(fields[4], "day of week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        let weekdays = (weekdays & 0x7f) as u8;
        let cron = Cron {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays,
            any_day: fields[2] == "*" || fields[2].starts_with("*/"),
            any_weekday: fields[4] == "*" || fields[4].starts_with("*/"),
        };
        if !cron.any_day && cron.any_weekday && !cron.some_month_has_a_day() {
            return Err(CronError(format!(
                "`{expr}` names days that no month it allows has (30 February, say)"
            )));
        }
        Ok(cron)
    }

    /// Whether a day the expression allows exists in a month it allows (31 April does
    /// not), so that an expression that can never fire is refused when parsed.
    fn some_month_has_a_day(&self) -> bool {
        const LONGEST: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12u32).any(|m| {
            self.months & (1 << m) != 0
                && (1..=LONGEST[m as usize - 1]).any(|d| self.days & (1 << d) != 0)
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            // Vixie cron: both restricted, either one matching is enough.
            (false, false) => dom || dow,
        }
    }

    /// The first instant strictly after `after` that the expression names in `zone`, or
    /// `None` if there is none within the search horizon (30 years).
    pub fn next_after(&self, after: jiff::Timestamp, zone: &TimeZone) -> Option<jiff::Timestamp> {
        let local = after.to_zoned(zone.clone()).datetime();
        let mut date = local.date();
        // On the first day only the times after `after`'s local minute count; a local
        // minute may still map to an instant at or before `after` (a repeated hour), which
        // the comparison below skips.
        let mut first = Some((local.hour(), local.minute()));
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date) {
                for hour in 0..24i8 {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    if let Some((h, _)) = first
                        && hour < h
                    {
                        continue;
                    }
                    for minute in 0..60i8 {
                        if self.minutes & (1 << minute) == 0 {
                            continue;
                        }
                        if let Some((h, m)) = first
                            && hour == h
                            && minute <= m
                        {
                            continue;
                        }
                        let civil: DateTime = date.at(hour, minute, 0, 0);
                        // `compatible`: a time in a gap reads as after it, a time in a
                        // fold as its first occurrence (the module's rules).
                        let Ok(instant) = zone.to_ambiguous_timestamp(civil).compatible() else {
                            continue;
                        };
                        if instant > after {
                            return Some(instant);
                        }
                    }
                }
            }
            first = None;
            date = date.tomorrow().ok()?;
        }
        None
    }
}

/// One field: a comma-separated list of `*`, `N`, `A-B`, each optionally `/STEP`, as a
/// bit set over `lo..=hi`. `names` (lowercase, from `lo`) may stand for numbers.
fn field(text: &str, what: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, CronError> {
    let bad = |why: &str| CronError(format!("the {what} field `{text}` {why}"));
    if text.is_empty() {
        return Err(bad("is empty"));
    }
    let value = |s: &str| -> Result<u32, CronError> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            // Month names start at 1, weekday names at 0: `lo` is where each list starts.
            return Ok(lo + i as u32);
        }
        let n: u32 = s
            .parse()
            .map_err(|_| bad(&format!("has `{s}`, which is not a number")))?;
        if n < lo || n > hi {
            return Err(bad(&format!("has {n}, outside {lo}-{hi}")));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| bad(&format!("has the step `{s}`, which is not a number")))?;
                if step == 0 || step > hi - lo + 1 {
                    return Err(bad(&format!(
                        "has the step {step}, outside 1-{}",
                        hi - lo + 1
                    )));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(bad(&format!("has the range {a}-{b}, which runs backwards")));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `N/STEP` means from N to the end, as in Vixie cron.
            (a, if step > 1 { hi } else { a })
        };
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    /// The next `n` instants after `from`, as RFC 3339 UTC strings.
    fn check(expr: &str, zone: &str, from: &str, expect: &[&str]) {
        let cron = Cron::parse(expr).unwrap();
        let zone = TimeZone::get(zone).unwrap();
        let mut t = at(from);
        let mut got = Vec::new();
        for _ in 0..expect.len() {
            t = cron.next_after(t, &zone).unwrap();
            got.push(t.to_string());
        }
        assert_eq!(got, expect, "{expr} in {zone:?} after {from}");
    }

    #[test]
    fn weekday_mornings_in_paris() {
        // Friday 5 December 2025, 10:00 in Paris (UTC+1): next Monday 09:00, then Tuesday.
        check(
            "0 9 * * MON-FRI",
            "Europe/Paris",
            "2025-12-05T09:00:00Z",
            &["2025-12-08T08:00:00Z", "2025-12-09T08:00:00Z"],
        );
    }

    #[test]
    fn a_daily_time_in_the_skipped_hour_fires_after_the_gap() {
        // Paris skips 02:00-03:00 on 29 March 2026: 02:30 that night reads as 03:30 CEST.
        check(
            "30 2 * * *",
            "Europe/Paris",
            "2026-03-27T12:00:00Z",
            &[
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:30:00Z", // 03:30 CEST, the gap's reading
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ],
        );
    }

    #[test]
    fn a_daily_time_in_the_repeated_hour_fires_once() {
        // Paris repeats 02:00-03:00 on 25 October 2026: 02:30 fires at its first occurrence.
        check(
            "30 2 * * *",
            "Europe/Paris",
            "2026-10-24T12:00:00Z",
            &[
                "2026-10-25T00:30:00Z", // 02:30 CEST
                "2026-10-26T01:30:00Z", // 02:30 CET, next day
            ],
        );
    }

    #[test]
    fn an_hourly_job_across_both_changes_keeps_one_firing_per_local_hour() {
        // New York, 8 March 2026: 02:00 does not exist (reads as 03:00), and 03:00 is the
        // same instant, which fires once.
        check(
            "0 * * * *",
            "America/New_York",
            "2026-03-08T06:30:00Z", // 01:30 EST
            &["2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"],
        );
        // 1 November 2026: 01:00 happens twice; the hour fires at the first only.
        check(
            "0 * * * *",
            "America/New_York",
            "2026-11-01T04:30:00Z", // 00:30 EDT
            &["2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z"],
        );
    }

    #[test]
    fn steps_lists_names_and_shorthands() {
        check(
            "*/20 8-9 * * *",
            "UTC",
            "2026-01-01T00:00:00Z",
            &[
                "2026-01-01T08:00:00Z",
                "2026-01-01T08:20:00Z",
                "2026-01-01T08:40:00Z",
                "2026-01-01T09:00:00Z",
            ],
        );
        check(
            "0 0 1 jan,JUL *",
            "UTC",
            "2026-01-02T00:00:00Z",
            &["2026-07-01T00:00:00Z"],
        );
        check(
            "@weekly",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2026-01-04T00:00:00Z"],
        );
        check(
            "0 12 * * 7",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2026-01-04T12:00:00Z"],
        );
        // Both day fields restricted: the 13th or a Friday.
        check(
            "0 0 13 * FRI",
            "UTC",
            "2026-02-01T00:00:00Z",
            &[
                "2026-02-06T00:00:00Z",
                "2026-02-13T00:00:00Z",
                "2026-02-20T00:00:00Z",
            ],
        );
        check(
            "0 0 29 2 *",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2028-02-29T00:00:00Z"],
        );
    }

    proptest::proptest! {
        /// Any text at all is parsed or refused, never a panic.
        #[test]
        fn parsing_any_text_never_panics(text in ".{0,300}") {
            let _ = Cron::parse(&text);
        }

        /// Expressions made of typical field values: those that parse give instants
        /// strictly later than asked, in every zone (Lord Howe's clocks move by half an
        /// hour), and asking again from that instant moves on.
        #[test]
        fn instants_always_move_forward(
            fields in proptest::collection::vec(
                proptest::sample::select(vec![
                    "*", "*/5", "*/7", "0", "2", "30", "1-5", "1,15", "29", "MON-FRI", "SUN",
                    "JAN,JUL", "10-20/3",
                ]),
                5,
            ),
            secs in 0i64..4_000_000_000,
            zone in proptest::sample::select(vec![
                "UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
            ]),
        ) {
            if let Ok(cron) = Cron::parse(&fields.join(" ")) {
                let tz = TimeZone::get(zone).unwrap();
                let after = jiff::Timestamp::from_second(secs).unwrap();
                if let Some(next) = cron.next_after(after, &tz) {
                    proptest::prop_assert!(next > after);
                    if let Some(again) = cron.next_after(next, &tz) {
                        proptest::prop_assert!(again > next);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        for (expr, says) in [
            ("", "has 0 fields"),
            ("* * * *", "has 4 fields"),
            ("60 * * * *", "outside 0-59"),
            ("* 24 * * *", "outside 0-23"),
            ("* * 0 * *", "outside 1-31"),
            ("* * * 13 *", "outside 1-12"),
            ("* * * * 8", "outside 0-7"),
            ("*/0 * * * *", "the step 0"),
            ("5-1 * * * *", "runs backwards"),
            ("x * * * *", "not a number"),
            ("0 0 30 2 *", "no month it allows"),
            ("@fortnightly", "not a cron shorthand"),
            ("1,,2 * * * *", "not a number"),
        ] {
            let err = Cron::parse(expr).unwrap_err().to_string();
            assert!(err.contains(says), "{expr:?}: {err}");
        }
        assert!(Cron::parse(&"1,".repeat(200)).is_err());
    }
}
