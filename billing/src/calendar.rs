//! Civil-calendar math in UTC.
//!
//! A GB-month is priced against the length of the month each hour falls in (672, 696, 720 or
//! 744 hours), so billing needs the month of a Unix time. This is written out (after Howard
//! Hinnant's `civil_from_days`) rather than borrowed, so that it is total over every `i64`
//! hour, cannot panic, and can be checked against the `time` crate independently in tests.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const SECONDS_PER_DAY: i64 = 86_400;

/// Whether `year` (proleptic Gregorian) has a February 29th.
pub fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1..=12) of `year`; 0 for a month number out of range.
pub fn days_in_month(year: i64, month: u8) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// The UTC calendar (year, month 1..=12) that a Unix time falls in.
pub fn year_month(unix_seconds: i64) -> (i64, u8) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of each 400-year era.
    let days = unix_seconds.div_euclid(SECONDS_PER_DAY) + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // `month` is 1..=12 by construction.
    (year, month as u8)
}

/// Hours in the UTC month that `unix_seconds` falls in: 672, 696, 720 or 744.
pub fn hours_in_month(unix_seconds: i64) -> u32 {
    let (year, month) = year_month(unix_seconds);
    days_in_month(year, month) * 24
}

/// RFC 3339 in UTC, for messages and API output; times outside `time`'s range (years beyond
/// ±9999) fall back to raw Unix seconds instead of failing.
pub fn rfc3339(unix_seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{unix_seconds}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn unix(t: OffsetDateTime) -> i64 {
        t.unix_timestamp()
    }

    #[test]
    fn month_lengths() {
        assert_eq!(hours_in_month(unix(datetime!(2023-02-14 05:00 UTC))), 672);
        assert_eq!(hours_in_month(unix(datetime!(2024-02-29 23:00 UTC))), 696);
        assert_eq!(hours_in_month(unix(datetime!(2024-04-30 23:00 UTC))), 720);
        assert_eq!(hours_in_month(unix(datetime!(2024-01-01 00:00 UTC))), 744);
        assert_eq!(hours_in_month(unix(datetime!(2024-12-31 23:00 UTC))), 744);
        assert_eq!(hours_in_month(unix(datetime!(1900-02-10 00:00 UTC))), 672);
        assert_eq!(hours_in_month(unix(datetime!(2000-02-10 00:00 UTC))), 696);
        assert_eq!(
            hours_in_month(unix(datetime!(1969-12-31 23:59:59 UTC))),
            744
        );
    }

    #[test]
    fn year_month_at_boundaries() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(-1), (1969, 12));
        assert_eq!(
            year_month(unix(datetime!(2024-03-01 00:00 UTC)) - 1),
            (2024, 2)
        );
        assert_eq!(year_month(unix(datetime!(2024-03-01 00:00 UTC))), (2024, 3));
        assert_eq!(
            year_month(unix(datetime!(2025-01-01 00:00 UTC)) - 1),
            (2024, 12)
        );
        assert_eq!(year_month(unix(datetime!(2025-01-01 00:00 UTC))), (2025, 1));
    }

    #[test]
    fn total_over_extreme_times() {
        // No panic, whatever the input.
        for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            let h = hours_in_month(t);
            assert!([672, 696, 720, 744].contains(&h), "{t} -> {h}");
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX), format!("@{}", i64::MAX));
    }

    #[test]
    fn leap_years() {
        assert!(is_leap_year(2024) && is_leap_year(2000) && is_leap_year(-4));
        assert!(!is_leap_year(2023) && !is_leap_year(1900) && !is_leap_year(2100));
        assert_eq!(days_in_month(2023, 13), 0);
    }
}
