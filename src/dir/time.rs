#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
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

/// The [`SystemTime`] of a [`UnixTime`]. Past SystemTime's range (2^63
/// seconds, which no clock or document reaches) it is the epoch.
pub fn system(t: UnixTime) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(t))
        .unwrap_or(UNIX_EPOCH)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// days_from_civil, in unsigned arithmetic since we only need dates from
/// 1970 on). None before 1970, or on an overflow that the four-digit years
/// of [`parse_iso`] rule out.
fn days_from_civil(y: u64, m: u32, d: u32) -> Option<u64> {
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let (era, yoe) = (y / 400, y % 400);
    let mp = u64::from(m.checked_add(9)? % 12);
    let doy = (mp.checked_mul(153)?.checked_add(2)? / 5)
        .checked_add(u64::from(d))?
        .checked_sub(1)?;
    let doe = yoe
        .checked_mul(365)?
        .checked_add(yoe / 4)?
        .checked_sub(yoe / 100)?
        .checked_add(doy)?;
    era.checked_mul(146_097)?
        .checked_add(doe)?
        .checked_sub(719_468)
}

/// The date of a day count (Hinnant's civil_from_days, unsigned). `z` is
/// at most u64::MAX / 86400, under 2^48, so no step comes near u64::MAX and
/// the saturating operations never saturate.
fn civil_from_days(z: u64) -> (u64, u32, u32) {
    let z = z.saturating_add(719_468);
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = doe
        .saturating_sub(doe / 1460)
        .saturating_add(doe / 36524)
        .saturating_sub(doe / 146_096)
        / 365;
    let doy = doe.saturating_sub(
        yoe.saturating_mul(365)
            .saturating_add(yoe / 4)
            .saturating_sub(yoe / 100),
    );
    let mp = doy.saturating_mul(5).saturating_add(2) / 153;
    let d = doy
        .saturating_sub(mp.saturating_mul(153).saturating_add(2) / 5)
        .saturating_add(1) as u32;
    let m = if mp < 10 {
        mp.saturating_add(3)
    } else {
        mp.saturating_sub(9)
    } as u32;
    let y = yoe
        .saturating_add(era.saturating_mul(400))
        .saturating_add(u64::from(m <= 2));
    (y, m, d)
}

/// Format as `YYYY-MM-DD HH:MM:SS`.
pub fn format_iso(t: UnixTime) -> String {
    let secs = t % 86400;
    let (y, m, d) = civil_from_days(t / 86400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Parse `YYYY-MM-DD HH:MM:SS` strictly.
pub fn parse_iso(s: &str) -> Option<UnixTime> {
    // Digits where the template has 0, the template's own byte elsewhere.
    const SHAPE: &[u8] = b"0000-00-00 00:00:00";
    if s.len() != SHAPE.len()
        || !s.bytes().zip(SHAPE).all(|(c, &t)| match t {
            b'0' => c.is_ascii_digit(),
            _ => c == t,
        })
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> { s.get(r)?.parse().ok() };
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
    days_from_civil(u64::from(y), mo, d)?
        .checked_mul(86400)?
        .checked_add(u64::from(h).checked_mul(3600)?)?
        .checked_add(u64::from(mi).checked_mul(60)?)?
        .checked_add(u64::from(sec))
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
