//! Dates in headers (`Date:`, `Received:`, bounces), written as Postfix writes them.
//!
//! The local time comes from the C library alone (`localtime_r`), which also names the
//! zone: one reading of the zone database per process. chrono's `Local` reads
//! `/etc/localtime` itself, so a submission that asked chrono for the time and the C
//! library for the zone's name read the file twice.

use chrono::{DateTime, Local, TimeZone};

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Tue, 24 Nov 2026 22:55:38 +0000 (UTC)`, as Postfix writes dates.
pub fn rfc2822_date(when: &DateTime<Local>) -> String {
    rfc2822_date_at(when.timestamp())
}

/// [`rfc2822_date`] of `secs` seconds since the epoch, in the local time zone.
pub fn rfc2822_date_at(secs: i64) -> String {
    match local_time(secs) {
        Some(tm) => format_tm(&tm),
        None => chrono_date(secs),
    }
}

/// The broken-down local time of `secs`, with the zone's offset and abbreviation.
struct LocalTime {
    weekday: usize,
    day: i32,
    month: usize,
    year: i64,
    hour: i32,
    minute: i32,
    second: i32,
    /// Seconds east of UTC.
    offset: i64,
    /// `UTC`, `CET`...; `None` when the C library gives none.
    zone: Option<String>,
}

fn local_time(secs: i64) -> Option<LocalTime> {
    let t = libc::time_t::try_from(secs).ok()?;
    // SAFETY: localtime_r fills the zeroed struct we own; tm_zone then points into static
    // storage of the C library, which we copy out at once.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        let zone = match tm.tm_zone.is_null() {
            true => None,
            false => Some(
                std::ffi::CStr::from_ptr(tm.tm_zone)
                    .to_string_lossy()
                    .into_owned(),
            ),
        };
        Some(LocalTime {
            weekday: usize::try_from(tm.tm_wday).ok().filter(|d| *d < 7)?,
            day: tm.tm_mday,
            month: usize::try_from(tm.tm_mon).ok().filter(|m| *m < 12)?,
            year: i64::from(tm.tm_year) + 1900,
            hour: tm.tm_hour,
            minute: tm.tm_min,
            second: tm.tm_sec,
            offset: tm.tm_gmtoff,
            zone: zone.filter(|z| !z.is_empty()),
        })
    }
}

/// RFC 5322's date-time with the day unpadded, the offset in whole minutes (rounded to
/// the nearest, as chrono's `%z`, which wrote these dates before, rounds an offset with
/// seconds) and the zone's name as a comment.
fn format_tm(tm: &LocalTime) -> String {
    let sign = if tm.offset < 0 { '-' } else { '+' };
    let minutes = (tm.offset.unsigned_abs() + 30) / 60;
    let mut text = format!(
        "{}, {} {} {} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        DAYS[tm.weekday],
        tm.day,
        MONTHS[tm.month],
        tm.year,
        tm.hour,
        tm.minute,
        tm.second,
        minutes / 60,
        minutes % 60
    );
    if let Some(zone) = &tm.zone {
        text.push_str(&format!(" ({zone})"));
    }
    text
}

/// The date without the zone's name, from chrono, for a time the C library cannot
/// convert.
fn chrono_date(secs: i64) -> String {
    let Some(when) = Local.timestamp_opt(secs, 0).earliest() else {
        return String::new();
    };
    // RFC 5322 wants the day without padding.
    when.format("%a, %e %b %Y %H:%M:%S %z")
        .to_string()
        .replacen(",  ", ", ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_look_like_postfix() {
        let when = DateTime::parse_from_rfc3339("2026-11-04T09:05:01Z")
            .unwrap()
            .with_timezone(&Local);
        let text = rfc2822_date(&when);
        // Day not padded, numeric zone, abbreviation in parentheses.
        assert!(
            text.contains(", 4 Nov 2026 ")
                || text.contains(", 3 Nov 2026 ")
                || text.contains(", 5 Nov 2026 "),
            "{text}"
        );
        assert!(text.contains(" +") || text.contains(" -"), "{text}");
    }

    /// Written as chrono's `%a, %e %b %Y %H:%M:%S %z` wrote these dates before, for the
    /// offset the C library gives, across a few years of seconds in whatever zone the
    /// tests run (two changes of daylight saving time each year, if it has them).
    #[test]
    fn formats_as_chrono_did() {
        let start = 1_700_000_000_i64;
        for step in 0..2000 {
            let secs = start + step * 86_413;
            let tm = local_time(secs).unwrap();
            let offset = chrono::FixedOffset::east_opt(tm.offset as i32).unwrap();
            let when = offset.timestamp_opt(secs, 0).unwrap();
            let mut expected = when
                .format("%a, %e %b %Y %H:%M:%S %z")
                .to_string()
                .replacen(",  ", ", ", 1);
            if let Some(zone) = &tm.zone {
                expected.push_str(&format!(" ({zone})"));
            }
            assert_eq!(rfc2822_date_at(secs), expected, "{secs}");
        }
    }

    #[test]
    fn offsets_are_rounded_to_whole_minutes() {
        let tm = |offset, zone: Option<&str>| LocalTime {
            weekday: 2,
            day: 4,
            month: 10,
            year: 2026,
            hour: 9,
            minute: 5,
            second: 1,
            offset,
            zone: zone.map(str::to_string),
        };
        assert_eq!(
            format_tm(&tm(0, Some("UTC"))),
            "Tue, 4 Nov 2026 09:05:01 +0000 (UTC)"
        );
        assert_eq!(
            format_tm(&tm(19_800, Some("IST"))),
            "Tue, 4 Nov 2026 09:05:01 +0530 (IST)"
        );
        // Local mean times: Paris +0:09:21, New York -4:56:02, Amsterdam +0:19:32.
        assert_eq!(format_tm(&tm(561, None)), "Tue, 4 Nov 2026 09:05:01 +0009");
        assert_eq!(
            format_tm(&tm(-17_762, Some("LMT"))),
            "Tue, 4 Nov 2026 09:05:01 -0456 (LMT)"
        );
        assert_eq!(
            format_tm(&tm(1172, Some("AMT"))),
            "Tue, 4 Nov 2026 09:05:01 +0020 (AMT)"
        );
    }
}
