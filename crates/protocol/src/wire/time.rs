//! Timestamps on the wire (01-wire.md §2.8): Go's `time.RFC3339Nano` in UTC.
//!
//! The civil-date conversion is done here, without a date crate, because the format is the
//! contract: fraction digits with trailing zeros removed and no fraction at all for whole
//! seconds, which general-purpose formatters do not all do the Go way.

/// Formats an instant as Go's `time.RFC3339Nano` in UTC: `YYYY-MM-DDTHH:MM:SS[.fffffffff]Z`,
/// the fraction with up to 9 digits and trailing zeros removed, omitted when zero
/// (`2026-03-22T12:15:00.1234Z`, `2026-03-22T12:15:00Z`).
///
/// `unix_seconds` counts from 1970-01-01T00:00:00Z (negative before it); `nanos` is the
/// non-negative offset into that second (values ≥ 10⁹ carry into the seconds). Years are
/// written with at least four digits, negative years with a leading `-`, as Go does.
pub fn format_rfc3339_nano(unix_seconds: i64, nanos: u32) -> String {
    let unix_seconds = unix_seconds.saturating_add(i64::from(nanos / 1_000_000_000));
    let nanos = nanos % 1_000_000_000;
    let days = unix_seconds.div_euclid(86_400);
    let second_of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
    );
    let mut out = if year < 0 {
        format!("-{:04}", year.unsigned_abs())
    } else {
        format!("{year:04}")
    };
    out.push_str(&format!(
        "-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"
    ));
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Proleptic Gregorian (year, month 1–12, day 1–31) of the day `days` after 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in small ranges by construction.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::format_rfc3339_nano as f;

    const T: i64 = 1_774_181_700; // 2026-03-22T12:15:00Z

    #[test]
    fn fraction_has_trailing_zeros_removed_or_is_absent() {
        assert_eq!(f(T, 123_456_789), "2026-03-22T12:15:00.123456789Z");
        assert_eq!(f(T, 123_400_000), "2026-03-22T12:15:00.1234Z");
        assert_eq!(f(T, 123_456_000), "2026-03-22T12:15:00.123456Z");
        assert_eq!(f(T, 987_654_321), "2026-03-22T12:15:00.987654321Z");
        assert_eq!(f(T, 1), "2026-03-22T12:15:00.000000001Z");
        assert_eq!(f(T, 0), "2026-03-22T12:15:00Z");
    }

    #[test]
    fn civil_dates_cover_epoch_leap_years_and_negative_times() {
        assert_eq!(f(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(f(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(f(-1, 500_000_000), "1969-12-31T23:59:59.5Z");
        assert_eq!(f(1_709_164_800, 0), "2024-02-29T00:00:00Z");
        assert_eq!(f(951_868_799, 0), "2000-02-29T23:59:59Z");
        assert_eq!(f(-2_203_891_200, 0), "1900-03-01T00:00:00Z");
        assert_eq!(f(4_107_499_200, 0), "2100-02-28T12:00:00Z");
        assert_eq!(f(4_107_499_200 + 86_400, 0), "2100-03-01T12:00:00Z");
        assert_eq!(f(253_402_300_799, 0), "9999-12-31T23:59:59Z");
        assert_eq!(f(-62_135_596_800, 0), "0001-01-01T00:00:00Z");
        assert_eq!(f(-62_135_596_800 - 86_400, 0), "0000-12-31T00:00:00Z");
        assert_eq!(
            f(-62_135_596_800 - 367 * 86_400, 0),
            "-0001-12-31T00:00:00Z"
        );
    }

    #[test]
    fn nanos_beyond_one_second_carry() {
        assert_eq!(f(T - 1, 1_500_000_000), "2026-03-22T12:15:00.5Z");
    }

    #[test]
    fn every_day_of_four_centuries_is_consecutive() {
        // Walk 400 years day by day from 1970 and check the calendar advances by one day.
        let mut prev = super::civil_from_days(-1);
        for d in 0..146_097 {
            let cur = super::civil_from_days(d);
            let (y, m, day) = prev;
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            let expected = if day < len[(m - 1) as usize] {
                (y, m, day + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            assert_eq!(cur, expected);
            prev = cur;
        }
    }
}
