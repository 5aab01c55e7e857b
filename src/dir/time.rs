//! `YYYY-MM-DD HH:MM:SS` in UTC, the only time format of directory
//! documents (C: format_iso_time, parse_iso_time with its strict rules:
//! exactly that shape, year ≥ 1970, nothing after).
//!
//! Times are whole seconds since the Unix epoch ([`UnixTime`]): documents
//! have no finer resolution, and the schedule code compares them with the
//! wall clock the caller passes in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since 1970-01-01 00:00:00 UTC.
pub type UnixTime = u64;

/// The wall clock as a [`UnixTime`] (0 before 1970).
pub fn unix(t: SystemTime) -> UnixTime {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The [`SystemTime`] of a [`UnixTime`].
pub fn system(t: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// days_from_civil).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Format as `YYYY-MM-DD HH:MM:SS`.
pub fn format_iso(t: UnixTime) -> String {
    let days = i64::try_from(t / 86400).unwrap_or(i64::MAX);
    let secs = t % 86400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Parse `YYYY-MM-DD HH:MM:SS` strictly.
pub fn parse_iso(s: &str) -> Option<UnixTime> {
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // C allows a leap second (60) and rejects the rest out of range.
    if y < 1970
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    let t = days * 86400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(sec);
    u64::try_from(t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(format_iso(0), "1970-01-01 00:00:00");
        assert_eq!(parse_iso("1970-01-01 00:00:00"), Some(0));
        // 2038-01-01, the dummy publication time of microdesc consensuses.
        assert_eq!(parse_iso("2038-01-01 00:00:00"), Some(2_145_916_800));
        assert_eq!(parse_iso("2000-02-29 12:34:56"), Some(951_827_696));
        for t in [
            0u64,
            951_827_696,
            1_700_000_000,
            2_145_916_800,
            4_102_444_799,
        ] {
            assert_eq!(parse_iso(&format_iso(t)), Some(t), "{t}");
        }
        for bad in [
            "1969-12-31 23:59:59",
            "2020-13-01 00:00:00",
            "2020-01-01 24:00:00",
            "2020-01-01T00:00:00",
            "2020-01-01 00:00:00 ",
            "2020-1-01 00:00:00",
            "+020-01-01 00:00:00",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }
}
